//! Seals: the hash chain that lets `check --seals` prove, years later, that every message
//! the backup ever held is still there unchanged, or was removed on purpose.
//!
//! A seal is a file ROOT/.mailkeep/seals/NNNNNN.seal of JSON lines, written once (atomically,
//! fsynced, mode 0440) and never changed:
//! - a header `{"format":"mailkeep-seal/1","seq":N,"previous":HEX,"time":...,"audit":
//!   {"from":F,"to":T,"sha256":HEX},"messages":M,"audit_entries":A}`: `previous` is the
//!   SHA-256 of seal N-1's bytes (64 zeros for the first), so the seals form a chain whose
//!   newest digest, the head, vouches for all of them; `audit` pins audit.log: `sha256` is
//!   the digest of its bytes 0..T, and the lines in F..T are the ones this seal takes in;
//! - a line per message sealed: `{"user","folder","name","size","sha256"}`, `name` the
//!   file's unique base name (before `:2,`, so an IMAP server moving it to cur/ and setting
//!   flags changes nothing), sorted by user, folder and name;
//! - a line `{"audit":ENTRY}` per audit.log entry in F..T, copied as it is: the tombstones.
//!   They are copied rather than only pinned so that each seal proves its removals on its
//!   own (a verifier needs the seals, not the log); the digest still pins the log, so an
//!   edited or truncated audit.log is found too.
//!
//! A run writes at most `BATCH` messages into one seal and goes on with the next, so no
//! seal grows with the backup; a run's memory grows only with the unsealed names of the one
//! folder it is at (a folder's first seal: about 150 bytes a message). With a key, NNNNNN.sig beside a seal
//! is the Ed25519 signature of its bytes, in base64 (`key`).
//!
//! The sealed names are also kept in an index (`index`, SQLite), derived from the seals:
//! a run looks a name up there instead of re-hashing a sealed file.

pub mod index;
pub mod key;

use std::ffi::CStr;
use std::io::Read;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

use nix::errno::Errno;
use nix::sys::stat::{SFlag, fstat};
use serde::{Deserialize, Serialize};

use crate::audit;
use crate::fsutil::{self, OpenError, file_type};
use crate::maildir::FolderKind;
pub use crate::maildir::{Sub, base_name, users};

/// ROOT/.mailkeep/seals/.
pub const SEALS_DIR: &str = "seals";
/// The first line's `format`.
pub const FORMAT: &str = "mailkeep-seal/1";
/// The `previous` of the first seal.
pub const NO_PREVIOUS: &str = "0000000000000000000000000000000000000000000000000000000000000000";
/// Messages per seal file at most.
pub const BATCH: usize = 100_000;
/// Read size for hashing: large enough for disk speed, small enough to stay in cache.
const READ_SIZE: usize = 256 * 1024;
/// The mode of a seal and its signature: read-only, the group may read (a shared backup).
pub const SEAL_MODE: u32 = 0o440;

/// audit.log's part a seal takes in.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct AuditSpan {
    pub from: u64,
    pub to: u64,
    /// Lower-case hex SHA-256 of audit.log's bytes 0..to.
    pub sha256: String,
}

/// A seal's first line.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Header {
    pub format: String,
    pub seq: u64,
    pub previous: String,
    /// RFC 3339, UTC: when the run that wrote it began (a message file older than that was
    /// there to be sealed by it).
    pub time: String,
    pub audit: AuditSpan,
    pub messages: u64,
    pub audit_entries: u64,
}

/// One sealed message.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Sealed {
    pub user: String,
    /// "INBOX", "Sent", "Chats", or the name of a folder an IMAP server made.
    pub folder: String,
    pub name: String,
    pub size: u64,
    pub sha256: String,
}

/// A tombstone line: an audit.log entry taken into the chain.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct AuditLine {
    pub audit: audit::Entry,
}

/// A line after the header.
#[derive(Deserialize, Debug, Clone, PartialEq, Eq)]
#[serde(untagged)]
pub enum Line {
    Message(Sealed),
    Audit(AuditLine),
}

/// Why a seal cannot be read or written.
#[derive(Debug, thiserror::Error)]
pub enum SealError {
    #[error("seal {name}: cannot {op}: {errno}")]
    Io { name: String, op: &'static str, errno: Errno },
    #[error("seal {name}: {what}")]
    Refused { name: String, what: String },
    #[error("seal {name}, line {line}: {what}")]
    Corrupt { name: String, line: usize, what: String },
    #[error("seal index {path}: {err}")]
    Index { path: String, err: rusqlite::Error },
    #[error(transparent)]
    Audit(#[from] audit::AuditError),
    /// audit.log is not the one the last seal pinned.
    #[error("{0}")]
    AuditChanged(String),
    #[error("key {path}: {what}")]
    Key { path: String, what: String },
}

/// The file name of seal `seq`.
pub fn seal_name(seq: u64) -> String {
    format!("{seq:06}.seal")
}

/// The file name of seal `seq`'s signature.
pub fn sig_name(seq: u64) -> String {
    format!("{seq:06}.sig")
}

pub use crate::message::hex;

/// SHA-256 of `bytes`, in hex.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex(&crate::message::sha256(bytes))
}

/// The seal's bytes: the header, the message lines, the tombstones, each a JSON line.
pub fn render(header: &Header, messages: &[Sealed], entries: &[audit::Entry]) -> Vec<u8> {
    let mut out = Vec::with_capacity(200 * (messages.len() + 1));
    push_line(&mut out, header);
    for m in messages {
        push_line(&mut out, m);
    }
    for e in entries {
        push_line(&mut out, &AuditLine { audit: e.clone() });
    }
    out
}

fn push_line(out: &mut Vec<u8>, value: &impl Serialize) {
    serde_json::to_writer(&mut *out, value).expect("a seal line always serialises");
    out.push(b'\n');
}

/// A seal's bytes parsed: its header and its lines. `name` is for messages.
pub fn parse(name: &str, bytes: &[u8]) -> Result<(Header, Vec<Line>), SealError> {
    let corrupt = |line: usize, what: String| SealError::Corrupt { name: name.to_string(), line, what };
    if !bytes.ends_with(b"\n") {
        return Err(corrupt(0, "does not end with a newline (cut short?)".into()));
    }
    let mut lines = bytes[..bytes.len() - 1].split(|&b| b == b'\n');
    let first = lines.next().unwrap_or_default();
    let header: Header = serde_json::from_slice(first).map_err(|e| corrupt(1, format!("not a seal header: {e}")))?;
    if header.format != FORMAT {
        return Err(corrupt(1, format!("format {:?}, not {FORMAT:?}", header.format)));
    }
    let body: Vec<Line> = lines
        .enumerate()
        .map(|(i, l)| serde_json::from_slice(l).map_err(|e| corrupt(i + 2, format!("not a seal line: {e}"))))
        .collect::<Result<_, _>>()?;
    let messages = body.iter().filter(|l| matches!(l, Line::Message(_))).count() as u64;
    let entries = body.len() as u64 - messages;
    if (messages, entries) != (header.messages, header.audit_entries) {
        let what = format!(
            "holds {messages} messages and {entries} audit entries, its header says {} and {}",
            header.messages, header.audit_entries
        );
        return Err(corrupt(1, what));
    }
    Ok((header, body))
}

/// The seal numbers present in the seals directory, sorted; other names are ignored.
pub fn list(seals: BorrowedFd<'_>) -> Result<Vec<u64>, SealError> {
    let io = |errno| SealError::Io { name: SEALS_DIR.into(), op: "list", errno };
    let mut seqs = Vec::new();
    for entry in fsutil::list_dir(seals).map_err(io)? {
        let entry = entry.map_err(io)?;
        let name = entry.file_name().to_bytes();
        if let Some(digits) = name.strip_suffix(b".seal")
            && digits.len() == 6
            && digits.iter().all(u8::is_ascii_digit)
        {
            let seq: u64 = std::str::from_utf8(digits).expect("digits").parse().expect("six digits");
            if seq > 0 {
                seqs.push(seq);
            }
        }
    }
    seqs.sort_unstable();
    Ok(seqs)
}

/// Seal `seq`'s bytes (a regular file, never followed or waited on).
pub fn read(seals: BorrowedFd<'_>, seq: u64) -> Result<Vec<u8>, SealError> {
    read_file(seals, &seal_name(seq))
}

/// Seal `seq`'s first line, read alone (a header is far shorter than `HEADER_MAX`).
pub fn read_header(seals: BorrowedFd<'_>, seq: u64) -> Result<Header, SealError> {
    const HEADER_MAX: u64 = 64 * 1024;
    let name = seal_name(seq);
    let (file, _) = fsutil::open_regular(seals, name.as_str()).map_err(|e| match e {
        OpenError::Io { op, errno } => SealError::Io { name: name.clone(), op, errno },
        e => SealError::Refused { name: name.clone(), what: e.to_string() },
    })?;
    let mut head = Vec::new();
    file.take(HEADER_MAX).read_to_end(&mut head).map_err(|e| SealError::Io {
        name: name.clone(),
        op: "read",
        errno: fsutil::errno_of(e),
    })?;
    let corrupt = |what: String| SealError::Corrupt { name: name.clone(), line: 1, what };
    let end = head.iter().position(|&b| b == b'\n').ok_or_else(|| corrupt("no header line".into()))?;
    let header: Header =
        serde_json::from_slice(&head[..end]).map_err(|e| corrupt(format!("not a seal header: {e}")))?;
    Ok(header)
}

/// The bytes of the regular file `name` in the seals directory; `Missing` as an error.
pub fn read_file(seals: BorrowedFd<'_>, name: &str) -> Result<Vec<u8>, SealError> {
    let (mut file, st) = fsutil::open_regular(seals, name).map_err(|e| match e {
        OpenError::Io { op, errno } => SealError::Io { name: name.into(), op, errno },
        e => SealError::Refused { name: name.into(), what: e.to_string() },
    })?;
    let mut bytes = Vec::with_capacity(st.st_size.max(0) as usize);
    file.read_to_end(&mut bytes).map_err(|e| SealError::Io {
        name: name.into(),
        op: "read",
        errno: fsutil::errno_of(e),
    })?;
    Ok(bytes)
}

/// Brings `index` up to the seal files in `seals`: the seals after the newest one it holds
/// are taken in; an index whose newest seal is gone or has another digest now, or whose
/// names are not the ones its seals added (rows inserted or deleted by hand), is rebuilt
/// from all of them. Returns what was wrong, for the run to report: a seal that went or
/// changed since it was indexed, or an edited index. Each seal taken in must hold, as its
/// audit lines, the entries of `log` (audit.log as it is now) that it pinned. Whether the
/// chain holds is `check --seals`'s to say, not this.
pub fn sync_index(index: &mut index::Index, seals: BorrowedFd<'_>, log: &[u8]) -> Result<Option<String>, SealError> {
    let seqs = list(seals)?;
    let mut changed = None;
    let trusted = match index.head()? {
        None => 0,
        Some((seq, digest)) if seqs.contains(&seq) && sha256_hex(&read(seals, seq)?) == digest => seq,
        Some((seq, digest)) => {
            let now = if seqs.contains(&seq) { "has another digest now" } else { "is gone" };
            changed = Some(format!(
                "{} (digest {digest} when it was indexed) {now}: the chain was cut or rewritten",
                seal_name(seq)
            ));
            index.clear()?;
            0
        }
    };
    take_in(index, seals, log, seqs.iter().filter(|&&s| s > trusted))?;
    let mut in_seals = 0;
    for &seq in &seqs {
        in_seals += read_header(seals, seq)?.messages;
    }
    if !index.consistent(in_seals)? {
        let what = "the index holds other names than its seals added (edited by hand?): rebuilt from the seals";
        changed = Some(changed.map_or(what.to_string(), |c| format!("{c}; {what}")));
        index.clear()?;
        take_in(index, seals, log, seqs.iter())?;
    }
    Ok(changed)
}

fn take_in<'a>(
    index: &mut index::Index,
    seals: BorrowedFd<'_>,
    log: &[u8],
    seqs: impl Iterator<Item = &'a u64>,
) -> Result<(), SealError> {
    for &seq in seqs {
        let bytes = read(seals, seq)?;
        let (header, lines) = parse(&seal_name(seq), &bytes)?;
        // A span beyond the log is the log's fault (truncated, replaced), which the run's
        // prefix check reports; here only the copies are compared.
        if header.audit.to as usize <= log.len()
            && let Some(why) = tombstones_differ(&lines, log, &header.audit)
        {
            return Err(SealError::AuditChanged(format!("{}: {why}; run 'mailkeep check --seals'", seal_name(seq))));
        }
        index.add(seq, &sha256_hex(&bytes), &lines)?;
    }
    Ok(())
}

/// Why a seal's tombstones are not the entries of audit.log's bytes `span.from..span.to`
/// (the log `log` as it is now), if they are not: the prefix digest pins the log's bytes,
/// this pins the copies in the seal to them.
pub fn tombstones_differ(lines: &[Line], log: &[u8], span: &AuditSpan) -> Option<String> {
    let (from, to) = (usize::try_from(span.from).ok()?, usize::try_from(span.to).ok()?);
    if from > to || to > log.len() {
        return Some(format!("its audit span {from}..{to} is not in audit.log ({} bytes)", log.len()));
    }
    let logged = match audit::parse(&log[from..to]) {
        Ok(entries) => entries,
        Err(e) => return Some(format!("audit.log bytes {from}..{to}: {e}")),
    };
    let sealed: Vec<&audit::Entry> = lines
        .iter()
        .filter_map(|l| match l {
            Line::Audit(a) => Some(&a.audit),
            Line::Message(_) => None,
        })
        .collect();
    let same = sealed.len() == logged.len() && sealed.iter().zip(&logged).all(|(a, b)| *a == b);
    (!same).then(|| {
        format!(
            "its {} audit lines are not the {} entries of audit.log bytes {from}..{to}: the seal was edited",
            sealed.len(),
            logged.len()
        )
    })
}

/// The end of the last complete line of audit.log's `bytes`: what a seal may take in
/// (a line without its newline is an append still being written, or cut by a crash).
pub fn complete_prefix(bytes: &[u8]) -> usize {
    bytes.iter().rposition(|&b| b == b'\n').map_or(0, |at| at + 1)
}

// --- what is below the root -------------------------------------------------------------

/// The directory below a user's Maildir that holds `folder` ("" for the INBOX).
pub fn folder_dir(folder: &str) -> Option<String> {
    let ok = |f: &str| !f.is_empty() && !f.starts_with('.') && !f.contains('/') && f != "INBOX";
    match folder {
        "INBOX" => Some(String::new()),
        f if ok(f) => Some(format!(".{f}")),
        _ => None,
    }
}

/// A user's folders, sorted by name, each open: the INBOX (the Maildir itself), .Sent and
/// .Chats, and the folders an IMAP server marked with a regular `maildirfolder` file.
pub fn folders(user: BorrowedFd<'_>) -> nix::Result<Vec<(String, OwnedFd)>> {
    let mut out = vec![("INBOX".to_string(), nix::unistd::dup(user)?)];
    for entry in fsutil::list_dir(user)? {
        let entry = entry?;
        let name = entry.file_name().to_bytes();
        let Some(folder) = name.strip_prefix(b".").filter(|f| !f.is_empty() && *f != b"." && !f.contains(&b'/')) else {
            continue;
        };
        let Ok(fd) = fsutil::open_dir(user, name) else { continue };
        let ours = FolderKind::FOLDERS.iter().any(|k| k.dir().map(str::as_bytes) == Some(name));
        if ours || fsutil::regular_or_missing(fd.as_fd(), "maildirfolder") == Ok(true) {
            out.push((String::from_utf8_lossy(folder).into_owned(), fd));
        }
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(out)
}

/// Calls `visit` with every message file name in the folder's new/, then its cur/ (a
/// missing one is empty); dot files are skipped.
pub fn each_message(folder: BorrowedFd<'_>, mut visit: impl FnMut(Sub, &CStr)) -> Result<(), OpenError> {
    for sub in Sub::ALL {
        let dir = match fsutil::open_dir(folder, sub.dir()) {
            Ok(fd) => fd,
            Err(OpenError::Missing) => continue,
            Err(e) => return Err(e),
        };
        let entries = fsutil::list_dir(dir.as_fd()).map_err(|errno| OpenError::Io { op: "list", errno })?;
        for entry in entries {
            let entry = entry.map_err(|errno| OpenError::Io { op: "list", errno })?;
            if !entry.file_name().to_bytes().starts_with(b".") {
                visit(sub, entry.file_name());
            }
        }
    }
    Ok(())
}

/// A message file's size and content digest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hashed {
    pub size: u64,
    pub sha256: String,
}

/// What hashing a listed name found.
#[derive(Debug)]
pub enum Hash {
    Done(Hashed),
    /// Gone since it was listed: moved to cur/ by an IMAP server, or removed.
    Vanished,
    /// Not a regular file (a FIFO, a symlink, a directory): never read.
    NotAFile,
}

/// Hashes the message `name` in `dir` (new/ or cur/) at disk speed: opened without
/// following a symlink, without blocking on a FIFO and without touching its atime; read in
/// `READ_SIZE` pieces into `buf`.
pub fn hash_message(dir: BorrowedFd<'_>, name: &CStr, buf: &mut Vec<u8>) -> nix::Result<Hash> {
    let mut file = match fsutil::open_for_reading(dir, name) {
        Ok(f) => f,
        Err(Errno::ENOENT) => return Ok(Hash::Vanished),
        Err(Errno::ELOOP) => return Ok(Hash::NotAFile),
        Err(e) => return Err(e),
    };
    if file_type(&fstat(file.as_fd())?) != SFlag::S_IFREG {
        return Ok(Hash::NotAFile);
    }
    buf.resize(READ_SIZE, 0);
    let (size, digest) = crate::message::sha256_read(&mut file, buf, |_| true)
        .map_err(fsutil::errno_of)?
        .expect("read to the end: nothing stops it");
    Ok(Hash::Done(Hashed { size, sha256: hex(&digest) }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(messages: u64, entries: u64) -> Header {
        Header {
            format: FORMAT.into(),
            seq: 1,
            previous: NO_PREVIOUS.into(),
            time: "2026-12-04T23:10:00Z".into(),
            audit: AuditSpan { from: 0, to: 0, sha256: sha256_hex(b"") },
            messages,
            audit_entries: entries,
        }
    }

    fn message(name: &str) -> Sealed {
        Sealed { user: "alice".into(), folder: "INBOX".into(), name: name.into(), size: 3, sha256: sha256_hex(b"abc") }
    }

    #[test]
    fn a_rendered_seal_parses_back_line_for_line() {
        let entry = audit::Entry::now("erase", "alice", Some("GDPR"), None, vec![]);
        let bytes = render(&header(2, 1), &[message("1.a"), message("2.b")], std::slice::from_ref(&entry));
        let (h, lines) = parse("000001.seal", &bytes).unwrap();
        assert_eq!(h, header(2, 1));
        assert_eq!(
            lines,
            [Line::Message(message("1.a")), Line::Message(message("2.b")), Line::Audit(AuditLine { audit: entry })]
        );
    }

    #[test]
    fn a_seal_whose_counts_disagree_with_its_lines_is_corrupt() {
        let bytes = render(&header(3, 0), &[message("1.a")], &[]);
        assert!(matches!(parse("x", &bytes), Err(SealError::Corrupt { line: 1, .. })));
        let mut cut = render(&header(1, 0), &[message("1.a")], &[]);
        cut.pop();
        assert!(matches!(parse("x", &cut), Err(SealError::Corrupt { .. })));
    }

    #[test]
    fn a_file_is_hashed_whole_and_a_vanished_or_odd_one_is_told_apart() {
        let dir = tempfile::tempdir().unwrap();
        let big: Vec<u8> = (0..READ_SIZE * 2 + 17).map(|i| i as u8).collect();
        std::fs::write(dir.path().join("m"), &big).unwrap();
        nix::unistd::mkfifo(&dir.path().join("p"), nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
        let fd = fsutil::open_dir_path(dir.path()).unwrap();
        let mut buf = Vec::new();
        match hash_message(fd.as_fd(), c"m", &mut buf).unwrap() {
            Hash::Done(h) => assert_eq!(h, Hashed { size: big.len() as u64, sha256: sha256_hex(&big) }),
            other => panic!("{other:?}"),
        }
        assert!(matches!(hash_message(fd.as_fd(), c"gone", &mut buf).unwrap(), Hash::Vanished));
        assert!(matches!(hash_message(fd.as_fd(), c"p", &mut buf).unwrap(), Hash::NotAFile));
    }

    #[test]
    fn folder_names_map_to_directories_and_nothing_else() {
        assert_eq!(folder_dir("INBOX").as_deref(), Some(""));
        assert_eq!(folder_dir("Sent").as_deref(), Some(".Sent"));
        for bad in ["", ".x", "a/b", "../x"] {
            assert_eq!(folder_dir(bad), None, "{bad}");
        }
    }
}
