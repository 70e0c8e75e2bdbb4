//! What `check --repair` does about a finding, and only where it is safe: a missing Maildir
//! subdirectory or `maildirfolder` marker is created, a missing subscription line added, an
//! old tmp/ leftover removed. What a repair creates gets the owner and permission bits of
//! the folder it is in, so a repair run as root leaves nothing the IMAP server cannot
//! change; files are written by the one small-file writer (`fsutil::replace_file`),
//! directories made by `fsutil::create_dir`.

use std::ffi::{CStr, OsStr};

use std::os::fd::BorrowedFd;
use std::path::PathBuf;

use nix::errno::Errno;
use nix::fcntl::AtFlags;
use nix::sys::stat::{FileStat, Mode, fstat, fstatat};
use nix::unistd::{UnlinkatFlags, unlinkat};

use super::report::Fault;
use super::walk::Checker;
use crate::fsutil::{self, OpenError};

impl Checker {
    /// Records a problem that `--repair` may fix with `fix`, which says what it did.
    pub(super) fn fixable(
        &mut self,
        path: PathBuf,
        user: &str,
        fault: Fault,
        fix: impl FnOnce() -> Result<String, Errno>,
    ) {
        self.found(path, user, fault);
        if self.repair {
            let done = fix().map_err(|e| e.desc().to_owned());
            self.report.problems.last_mut().expect("just pushed").repair = Some(done);
        }
    }
}

/// The owner a repair gives what it makes beside `like`.
fn owner_of(like: Option<&FileStat>) -> fsutil::Owner {
    like.map(|st| (st.st_uid, st.st_gid))
}

/// Creates the directory `name` (a folder's cur/, new/ or tmp/), owned like `like` with its
/// permission bits.
pub fn make_dir(parent: BorrowedFd<'_>, name: &str, like: Option<&FileStat>) -> nix::Result<String> {
    let mode = like.map_or(0o700, |st| st.st_mode & 0o7777);
    fsutil::create_dir(parent, name, Mode::from_bits_truncate(mode), owner_of(like)).map_err(OpenError::errno)?;
    Ok(format!("created {name}/"))
}

/// Writes `data` as `name` in one atomic replace, owned like `like` with its read and write
/// bits.
pub fn make_file(dir: BorrowedFd<'_>, name: &str, data: &[u8], like: Option<&FileStat>) -> nix::Result<String> {
    let mode = like.map_or(0o600, |st| st.st_mode & 0o666);
    fsutil::replace_file(dir, OsStr::new(name), data, mode, owner_of(like)).map_err(fsutil::errno_of)?;
    Ok(format!("wrote {name}"))
}

/// Adds `line` to the subscription list `name`, whose content is `current`. A list that is
/// not there yet is made like the user's Maildir (`maildir_mode`'s read and write bits).
pub fn add_line(
    dir: BorrowedFd<'_>,
    name: &str,
    mut current: Vec<u8>,
    line: &str,
    maildir_mode: u32,
) -> nix::Result<String> {
    if !current.is_empty() && !current.ends_with(b"\n") {
        current.push(b'\n');
    }
    current.extend_from_slice(line.as_bytes());
    current.push(b'\n');
    let like = match fstatat(dir, name, AtFlags::AT_SYMLINK_NOFOLLOW) {
        Ok(st) => st,
        Err(_) => {
            let mut st = fstat(dir)?;
            st.st_mode = maildir_mode & 0o660;
            st
        }
    };
    make_file(dir, name, &current, Some(&like)).map(|_| format!("added {line:?} to {name}"))
}

/// Removes an unfinished delivery's leftover from tmp/.
pub fn remove(tmp: BorrowedFd<'_>, name: &CStr) -> nix::Result<String> {
    unlinkat(tmp, name, UnlinkatFlags::NoRemoveDir).map(|()| "removed".into())
}
