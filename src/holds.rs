//! Legal holds: the users whose mail `expire` and `erase` must leave alone, kept in
//! ROOT/.mailkeep/holds.json, and the one lock that `expire`, `erase` and `hold` take so
//! that a hold placed now is seen by every removal that starts after it.
//!
//! The file is small JSON, replaced atomically (`fsutil::replace_file`); each hold and
//! release is also an audit entry (`audit.rs`). The lock is an exclusive `flock` on
//! ROOT/.mailkeep/retention.lock, held for a whole run: a removal that read no hold cannot
//! still be unlinking when a hold on its user is recorded, and two removals never record
//! and unlink the same messages at once.

use std::ffi::OsStr;
use std::fs::File;
use std::os::fd::{AsFd, BorrowedFd};

use nix::errno::Errno;
use nix::fcntl::{OFlag, openat};
use nix::sys::stat::{Mode, SFlag, fchmod, fstat};
use nix::unistd::{Gid, Uid, fchown};
use serde::{Deserialize, Serialize};

use crate::fsutil::{self, OpenError, Owner};

/// ROOT/.mailkeep/holds.json.
pub const HOLDS: &str = "holds.json";
/// ROOT/.mailkeep/retention.lock.
pub const LOCK: &str = "retention.lock";
/// A hold is a line or two; a file larger than this is not ours.
const HOLDS_MAX: u64 = 16 << 20;

/// One user on hold.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct Hold {
    pub user: String,
    /// RFC 3339, UTC, when the hold was placed.
    pub since: String,
    /// Who placed it: the real uid and `SUDO_USER`.
    pub uid: u32,
    pub sudo_user: Option<String>,
    pub reason: String,
}

/// The whole file.
#[derive(Serialize, Deserialize, Debug, Default, Clone, PartialEq, Eq)]
pub struct Holds {
    pub holds: Vec<Hold>,
}

impl Holds {
    /// The hold on `user`, if there is one.
    pub fn of(&self, user: &str) -> Option<&Hold> {
        self.holds.iter().find(|h| h.user == user)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum HoldsError {
    #[error("{name}: cannot {op}: {}", errno.desc())]
    Io { name: &'static str, op: &'static str, errno: Errno },
    /// A symlink, FIFO or device where the file belongs.
    #[error("{0}: not a regular file (never followed or opened)")]
    NotAFile(&'static str),
    #[error("{HOLDS}: does not parse: {0}")]
    Corrupt(String),
}

fn io(name: &'static str, op: &'static str) -> impl FnOnce(Errno) -> HoldsError {
    move |errno| HoldsError::Io { name, op, errno }
}

fn refused(name: &'static str) -> impl FnOnce(OpenError) -> HoldsError {
    move |e| match e {
        OpenError::Symlink | OpenError::WrongType => HoldsError::NotAFile(name),
        e => HoldsError::Io { name, op: "open", errno: e.errno() },
    }
}

/// The holds now recorded in `state_dir` (ROOT/.mailkeep); none when there is no file.
pub fn read(state_dir: BorrowedFd<'_>) -> Result<Holds, HoldsError> {
    match fsutil::read_small(state_dir, HOLDS, HOLDS_MAX).map_err(refused(HOLDS))? {
        None => Ok(Holds::default()),
        Some(bytes) => serde_json::from_slice(&bytes).map_err(|e| HoldsError::Corrupt(e.to_string())),
    }
}

/// Replaces the file with `holds`, atomically and durably.
pub fn write(state_dir: BorrowedFd<'_>, holds: &Holds, files: StateFiles) -> Result<(), HoldsError> {
    let mut bytes = serde_json::to_vec_pretty(holds).expect("holds always serialise");
    bytes.push(b'\n');
    fsutil::replace_file(state_dir, OsStr::new(HOLDS), &bytes, files.mode, files.owner).map_err(|e| HoldsError::Io {
        name: HOLDS,
        op: "write",
        errno: fsutil::errno_of(e),
    })
}

/// How a file mailkeep creates in ROOT/.mailkeep is made: 0660 where the directory is
/// shared with a group (2770), else 0600; and, when we run as root, owned by the
/// directory's owner, so that the backup's user (the daily `expire`) can still append to
/// an audit log or take a lock that an admin's `sudo mailkeep erase --allow-root` created.
#[derive(Debug, Clone, Copy)]
pub struct StateFiles {
    pub mode: u32,
    pub owner: Owner,
}

impl StateFiles {
    pub fn of(state_dir: BorrowedFd<'_>) -> Result<StateFiles, HoldsError> {
        let st = fstat(state_dir).map_err(io(".mailkeep", "stat"))?;
        let mode = if st.st_mode & 0o070 != 0 { 0o660 } else { 0o600 };
        let owner = nix::unistd::geteuid().is_root().then_some((st.st_uid, st.st_gid)).filter(|&(uid, _)| uid != 0);
        Ok(StateFiles { mode, owner })
    }
}

/// Makes sure the regular file `name` exists in `state_dir`; one created here gets
/// `files`' mode and owner. What is there is never followed or waited on.
pub fn ensure_file(state_dir: BorrowedFd<'_>, name: &'static str, files: StateFiles) -> Result<(), HoldsError> {
    open_or_create(state_dir, name, files).map(drop)
}

/// Opens `name` (read-only: enough for a lock), creating it as `ensure_file` does.
fn open_or_create(state_dir: BorrowedFd<'_>, name: &'static str, files: StateFiles) -> Result<File, HoldsError> {
    let flags = OFlag::O_RDONLY | OFlag::O_NOFOLLOW | OFlag::O_NONBLOCK | OFlag::O_CLOEXEC;
    let mode = Mode::from_bits_truncate(files.mode);
    let fd = match openat(state_dir, name, flags | OFlag::O_CREAT | OFlag::O_EXCL, mode) {
        Ok(fd) => {
            if let Some((uid, gid)) = files.owner {
                fchown(fd.as_fd(), Some(Uid::from_raw(uid)), Some(Gid::from_raw(gid))).map_err(io(name, "chown"))?;
            }
            fchmod(fd.as_fd(), mode).map_err(io(name, "chmod"))?;
            nix::unistd::fsync(state_dir).map_err(io(name, "fsync the directory of"))?;
            fd
        }
        Err(Errno::EEXIST) => match openat(state_dir, name, flags, Mode::empty()) {
            Ok(fd) => fd,
            Err(Errno::ELOOP) => return Err(HoldsError::NotAFile(name)),
            Err(e) => return Err(HoldsError::Io { name, op: "open", errno: e }),
        },
        Err(e) => return Err(HoldsError::Io { name, op: "create", errno: e }),
    };
    let st = fstat(fd.as_fd()).map_err(io(name, "stat"))?;
    if fsutil::file_type(&st) != SFlag::S_IFREG {
        return Err(HoldsError::NotAFile(name));
    }
    Ok(File::from(fd))
}

/// Takes the retention lock, waiting for another `expire`, `erase` or `hold` to finish
/// (`waiting` is told once, when it has to wait). Held until the returned file is dropped.
pub fn lock(state_dir: BorrowedFd<'_>, files: StateFiles, waiting: impl FnOnce()) -> Result<File, HoldsError> {
    let file = open_or_create(state_dir, LOCK, files)?;
    match file.try_lock() {
        Ok(()) => return Ok(file),
        Err(std::fs::TryLockError::WouldBlock) => waiting(),
        Err(std::fs::TryLockError::Error(e)) => return Err(io(LOCK, "lock")(fsutil::errno_of(e))),
    }
    file.lock().map_err(|e| io(LOCK, "lock")(fsutil::errno_of(e)))?;
    Ok(file)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hold(user: &str) -> Hold {
        Hold {
            user: user.into(),
            since: "2026-12-04T23:10:00Z".into(),
            uid: 0,
            sudo_user: None,
            reason: "case 7".into(),
        }
    }

    #[test]
    fn holds_written_are_read_back_and_none_is_empty() {
        let dir = tempfile::tempdir().unwrap();
        let fd = fsutil::open_dir_path(dir.path()).unwrap();
        assert_eq!(read(fd.as_fd()).unwrap(), Holds::default());
        let files = StateFiles::of(fd.as_fd()).unwrap();
        let holds = Holds { holds: vec![hold("alice"), hold("bob")] };
        write(fd.as_fd(), &holds, files).unwrap();
        let got = read(fd.as_fd()).unwrap();
        assert_eq!(got, holds);
        assert_eq!(got.of("bob").map(|h| h.user.as_str()), Some("bob"));
        assert!(got.of("carol").is_none());
    }

    #[test]
    fn a_fifo_planted_as_the_lock_or_the_holds_is_refused_without_waiting() {
        let dir = tempfile::tempdir().unwrap();
        for name in [LOCK, HOLDS] {
            nix::unistd::mkfifo(&dir.path().join(name), Mode::from_bits_truncate(0o600)).unwrap();
        }
        let fd = fsutil::open_dir_path(dir.path()).unwrap();
        let files = StateFiles::of(fd.as_fd()).unwrap();
        assert!(matches!(lock(fd.as_fd(), files, || ()), Err(HoldsError::NotAFile(LOCK))));
        assert!(matches!(read(fd.as_fd()), Err(HoldsError::NotAFile(HOLDS))));
    }
}
