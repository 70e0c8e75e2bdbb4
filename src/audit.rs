//! The audit log: every deliberate removal (and hold) is written down, durably, before a file goes.
//!
//! ROOT/.mailkeep/audit.log holds one JSON object per line, appended and fsynced. `expire`
//! and `erase` append an entry that names every message they are about to remove (user,
//! folder, unique base name, size, SHA-256) and only then unlink; `hold` and `hold
//! --release` append one with no names. The next `seal` takes the lines appended since the
//! previous seal into the chain as tombstones, so `check --seals` can tell "removed on
//! purpose" from "lost". A crash between the append and the last unlink leaves an entry
//! and some files still present; a rerun appends a second entry for what is left.
//!
//! The log is append-only: nothing here rewrites or truncates it. Appends are serialised
//! with an exclusive `flock` on the log, and each entry is one `write` of one line.

use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::{AsFd, BorrowedFd};

use nix::errno::Errno;
use nix::fcntl::{OFlag, openat};
use nix::sys::stat::{Mode, SFlag, fstat};
use serde::{Deserialize, Serialize};

use crate::fsutil;

/// ROOT/.mailkeep/audit.log.
pub const AUDIT_LOG: &str = "audit.log";

/// One message an entry removes.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct Removed {
    /// "INBOX", "Sent", "Chats": `maildir::FolderKind::name`.
    pub folder: String,
    /// The file's unique base name: the part before `:2,` (flags do not change it).
    pub name: String,
    pub size: u64,
    /// Lower-case hex SHA-256 of the file's content.
    pub sha256: String,
}

/// One line of the log.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// RFC 3339, UTC, seconds: "2026-12-04T23:10:00Z".
    pub time: String,
    /// "expire", "erase", "hold" or "release"; "expire-done" or "erase-done" (no names) when
    /// a run has removed all that its and earlier entries of that user and folder named.
    pub command: String,
    /// The operator's real uid.
    pub uid: u32,
    /// `SUDO_USER` when the command ran under sudo.
    pub sudo_user: Option<String>,
    pub reason: Option<String>,
    /// The backup user (the Maildir's name below the root).
    pub user: String,
    /// The folder when the command was limited to one.
    pub folder: Option<String>,
    /// `removed.len()`, for readers that only count.
    pub count: usize,
    pub removed: Vec<Removed>,
}

/// Why the log cannot be read.
#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    #[error("{AUDIT_LOG}: cannot {op}: {errno}")]
    Io { op: &'static str, errno: Errno },
    #[error("{AUDIT_LOG}: not a regular file")]
    NotAFile,
    #[error("{AUDIT_LOG}: line {line} is not an audit entry: {msg}")]
    Corrupt { line: usize, msg: String },
}

impl Entry {
    /// An entry stamped now, by this process's operator.
    pub fn now(command: &str, user: &str, reason: Option<&str>, folder: Option<&str>, removed: Vec<Removed>) -> Entry {
        Entry {
            time: crate::time::format_time(crate::time::now()),
            command: command.to_string(),
            uid: nix::unistd::getuid().as_raw(),
            sudo_user: std::env::var("SUDO_USER").ok().filter(|s| !s.is_empty()),
            reason: reason.map(str::to_string),
            user: user.to_string(),
            folder: folder.map(str::to_string),
            count: removed.len(),
            removed,
        }
    }
}

/// Appends `entry` to the log in `state_dir` (ROOT/.mailkeep) and makes it durable:
/// 1. open (creating, mode `mode`) with `O_APPEND|O_NOFOLLOW|O_NONBLOCK`: a symlink or FIFO
///    planted as the log is refused, never followed or waited on;
/// 2. take an exclusive lock, so two appends never interleave;
/// 3. end a line an earlier, crashed append left without its newline, write the line in
///    one `write`, then `fsync` the file;
/// 4. `fsync` the directory, so a log created now survives a crash.
pub fn append(state_dir: BorrowedFd<'_>, entry: &Entry, mode: u32) -> Result<(), AuditError> {
    let io = |op| move |errno: Errno| AuditError::Io { op, errno };
    // 1. Read-write, because step 3 reads the last byte back.
    let flags =
        OFlag::O_RDWR | OFlag::O_APPEND | OFlag::O_CREAT | OFlag::O_NOFOLLOW | OFlag::O_NONBLOCK | OFlag::O_CLOEXEC;
    let fd = openat(state_dir, AUDIT_LOG, flags, Mode::from_bits_truncate(mode)).map_err(|e| match e {
        Errno::ELOOP => AuditError::NotAFile,
        e => AuditError::Io { op: "open", errno: e },
    })?;
    let st = fstat(fd.as_fd()).map_err(io("stat"))?;
    if fsutil::file_type(&st) != SFlag::S_IFREG {
        return Err(AuditError::NotAFile);
    }
    let mut file = File::from(fd);
    // 2.
    file.lock().map_err(|e| AuditError::Io { op: "lock", errno: fsutil::errno_of(e) })?;
    // 3. A crash in an earlier append may have left a line without its newline; that
    //    fragment stays (the log is append-only) but is ended, so this entry starts a line.
    let mut line = Vec::new();
    if !ends_with_newline(&file)? {
        line.push(b'\n');
    }
    serde_json::to_writer(&mut line, entry).expect("an audit entry always serialises");
    line.push(b'\n');
    file.write_all(&line).map_err(|e| AuditError::Io { op: "write", errno: fsutil::errno_of(e) })?;
    file.sync_all().map_err(|e| AuditError::Io { op: "fsync", errno: fsutil::errno_of(e) })?;
    // 4.
    nix::unistd::fsync(state_dir).map_err(io("fsync the directory of"))?;
    Ok(())
}

/// Whether the log is empty or ends with a newline (its last byte read with `pread`).
fn ends_with_newline(file: &File) -> Result<bool, AuditError> {
    use std::os::unix::fs::FileExt;
    let len = file.metadata().map_err(|e| AuditError::Io { op: "stat", errno: fsutil::errno_of(e) })?.len();
    if len == 0 {
        return Ok(true);
    }
    let mut last = [0u8];
    file.read_exact_at(&mut last, len - 1).map_err(|e| AuditError::Io { op: "read", errno: fsutil::errno_of(e) })?;
    Ok(last[0] == b'\n')
}

/// The log's bytes as they are now (empty when there is none), read without following a
/// symlink or waiting on a FIFO. `seal` hashes them; `parse` turns them into entries.
pub fn read_bytes(state_dir: BorrowedFd<'_>) -> Result<Vec<u8>, AuditError> {
    let mut file = match fsutil::open_regular(state_dir, AUDIT_LOG) {
        Ok((file, _)) => file,
        Err(fsutil::OpenError::Missing) => return Ok(Vec::new()),
        Err(fsutil::OpenError::Symlink | fsutil::OpenError::WrongType) => return Err(AuditError::NotAFile),
        Err(e) => return Err(AuditError::Io { op: "open", errno: e.errno() }),
    };
    let mut bytes = Vec::new();
    file.read_to_end(&mut bytes).map_err(|e| AuditError::Io { op: "read", errno: fsutil::errno_of(e) })?;
    Ok(bytes)
}

/// The entries of complete lines in `bytes`. A line that is not an entry but was followed
/// by one is a fragment of an append cut short by a crash (`append` ends it with a newline
/// before the next entry) only if it is a prefix of a JSON object that does not parse; it
/// removed nothing (the removals come after the fsync) and is skipped. A last line without
/// its newline is the same. Any other line that does not parse is corruption.
pub fn parse(bytes: &[u8]) -> Result<Vec<Entry>, AuditError> {
    let complete = match bytes.iter().rposition(|&b| b == b'\n') {
        Some(end) => &bytes[..=end],
        None => return Ok(Vec::new()),
    };
    complete
        .split(|&b| b == b'\n')
        .enumerate()
        .filter(|(_, line)| !line.is_empty())
        .filter_map(|(i, line)| match serde_json::from_slice(line) {
            Ok(entry) => Some(Ok(entry)),
            Err(e) if e.is_eof() => None,
            Err(e) => Some(Err(AuditError::Corrupt { line: i + 1, msg: e.to_string() })),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry() -> Entry {
        Entry {
            time: "2026-12-04T23:10:00Z".into(),
            command: "erase".into(),
            uid: 0,
            sudo_user: Some("admin".into()),
            reason: Some("GDPR request 17".into()),
            user: "alice".into(),
            folder: None,
            count: 1,
            removed: vec![Removed {
                folder: "INBOX".into(),
                name: "1.M1P1.host".into(),
                size: 12,
                sha256: "ab".into(),
            }],
        }
    }

    #[test]
    fn an_appended_entry_is_read_back_as_it_was_written() {
        let dir = tempfile::tempdir().unwrap();
        let fd = fsutil::open_dir_path(dir.path()).unwrap();
        append(fd.as_fd(), &entry(), 0o600).unwrap();
        append(fd.as_fd(), &entry(), 0o600).unwrap();
        let got = parse(&read_bytes(fd.as_fd()).unwrap()).unwrap();
        assert_eq!(got, vec![entry(), entry()]);
    }

    #[test]
    fn a_last_line_cut_short_by_a_crash_is_not_an_entry() {
        let mut bytes = serde_json::to_vec(&entry()).unwrap();
        bytes.push(b'\n');
        bytes.extend_from_slice(b"{\"time\":\"2026");
        assert_eq!(parse(&bytes).unwrap(), vec![entry()]);
    }

    #[test]
    fn an_entry_appended_after_a_torn_append_starts_its_own_line_and_both_logs_parse() {
        let dir = tempfile::tempdir().unwrap();
        let fd = fsutil::open_dir_path(dir.path()).unwrap();
        append(fd.as_fd(), &entry(), 0o600).unwrap();
        let mut log = std::fs::OpenOptions::new().append(true).open(dir.path().join(AUDIT_LOG)).unwrap();
        log.write_all(b"{\"time\":\"2026-12").unwrap();
        append(fd.as_fd(), &entry(), 0o600).unwrap();
        assert_eq!(parse(&read_bytes(fd.as_fd()).unwrap()).unwrap(), vec![entry(), entry()]);
    }

    #[test]
    fn a_line_that_is_not_json_is_corruption() {
        let mut bytes = b"{\"time\": 12, \"x\": garbage}\n".to_vec();
        bytes.extend_from_slice(&serde_json::to_vec(&entry()).unwrap());
        bytes.push(b'\n');
        assert!(matches!(parse(&bytes), Err(AuditError::Corrupt { line: 1, .. })));
    }

    #[test]
    fn a_symlink_planted_as_the_log_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        std::os::unix::fs::symlink("/etc/passwd", dir.path().join(AUDIT_LOG)).unwrap();
        let fd = fsutil::open_dir_path(dir.path()).unwrap();
        assert!(matches!(append(fd.as_fd(), &entry(), 0o600), Err(AuditError::NotAFile)));
        assert!(matches!(read_bytes(fd.as_fd()), Err(AuditError::NotAFile)));
    }
}
