//! What `status` looks at below the root, cheaply: per user three `fstatat`s, never a
//! listing of a folder. The time of the last copy stored into a folder is the mtime of its
//! `new/`: every delivery links a file there (an IMAP server moving a message to `cur/`
//! touches it too, which can only make the backup look more recent than it is, by minutes).
//! The users are stat'ed by several threads (`crate::parallel`): with a cold cache each
//! `fstatat` waits for the disk.

use std::collections::BTreeMap;
use std::os::fd::BorrowedFd;
use std::os::unix::ffi::OsStrExt;

use nix::errno::Errno;
use nix::fcntl::AtFlags;
use nix::sys::stat::{SFlag, fstatat};
use nix::sys::statvfs::{FsFlags, fstatvfs};

use crate::envelope::User;
use crate::fsutil;

/// The newest copy of one user, per direction (Unix seconds; None: no such folder).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Copies {
    pub inbox: Option<i64>,
    pub sent: Option<i64>,
}

impl Copies {
    pub fn newest(self) -> Option<i64> {
        self.inbox.max(self.sent)
    }
}

/// What one pass over the root's users found.
#[derive(Debug, Default)]
pub struct Users {
    /// Every user directory, by name (what `deliver` names them).
    pub copies: BTreeMap<String, Copies>,
    /// The newest copy over all users, per direction: the backup's heartbeat.
    pub newest: Copies,
    /// User directories that could not be looked into (name, why).
    pub unreadable: Vec<(String, Errno)>,
}

/// The root's filesystem.
#[derive(Debug, Clone, Copy)]
pub struct Space {
    pub free_bytes: u64,
    pub size_bytes: u64,
    pub free_inodes: u64,
    pub inodes: u64,
    pub read_only: bool,
}

impl Space {
    pub fn free_ratio(&self) -> f64 {
        ratio(self.free_bytes, self.size_bytes)
    }

    /// None on a filesystem without an inode count (btrfs says 0).
    pub fn free_inodes_ratio(&self) -> Option<f64> {
        (self.inodes > 0).then(|| ratio(self.free_inodes, self.inodes))
    }
}

fn ratio(part: u64, whole: u64) -> f64 {
    if whole == 0 { 1.0 } else { part as f64 / whole as f64 }
}

/// Free space and inodes as an unprivileged user sees them (`f_bavail`, `f_favail`): what
/// `deliver`, which never runs as root, can still use.
pub fn space(root: BorrowedFd<'_>) -> nix::Result<Space> {
    let st = fstatvfs(root)?;
    let frag = st.fragment_size() as u64;
    Ok(Space {
        free_bytes: (st.blocks_available() as u64).saturating_mul(frag),
        size_bytes: (st.blocks() as u64).saturating_mul(frag),
        free_inodes: st.files_available() as u64,
        inodes: st.files() as u64,
        read_only: st.flags().contains(FsFlags::ST_RDONLY),
    })
}

/// Goes through the user directories below `root` (names `deliver` would make, no dot
/// names, no symlinks) and notes the mtime of each one's `new/` and `.Sent/new/`, with
/// `crate::parallel::threads()` threads.
pub fn users(root: BorrowedFd<'_>) -> nix::Result<Users> {
    users_with(root, crate::parallel::threads())
}

/// `users` with `threads` threads stat'ing the users' folders (with a cold cache each
/// `fstatat` waits for the disk: 10 000 users took 3.2 s one at a time).
pub fn users_with(root: BorrowedFd<'_>, threads: usize) -> nix::Result<Users> {
    let mut names = Vec::new();
    for entry in fsutil::list_dir(root)? {
        let entry = entry?;
        let raw = entry.file_name().to_bytes();
        let Ok(user) = User::parse(std::ffi::OsStr::from_bytes(raw)) else { continue };
        if user.as_str().as_bytes() != raw {
            continue; // Alice/ is not mailkeep's: deliver would write alice/.
        }
        let is_dir = match entry.file_type() {
            Some(nix::dir::Type::Directory) => true,
            Some(_) => false,
            None => matches!(kind(root, raw), Ok(Some(SFlag::S_IFDIR))),
        };
        if is_dir {
            names.push(user.as_str().to_owned());
        }
    }
    let copies = crate::parallel::map(&names, threads, |user| user_copies(root, user));
    let mut found = Users::default();
    for (user, copies) in names.into_iter().zip(copies) {
        match copies {
            Ok(copies) => {
                found.newest =
                    Copies { inbox: found.newest.inbox.max(copies.inbox), sent: found.newest.sent.max(copies.sent) };
                found.copies.insert(user, copies);
            }
            Err(errno) => found.unreadable.push((user, errno)),
        }
    }
    Ok(found)
}

/// The mtimes of `NAME/new` and `NAME/.Sent/new`. Paths with a slash are stat'ed below the
/// root descriptor: the last component is never followed, and the user directory was a
/// directory when listed; a symlink swapped in meanwhile could only lend us a foreign
/// mtime, never make us write or read a file.
fn user_copies(root: BorrowedFd<'_>, user: &str) -> Result<Copies, Errno> {
    let inbox = dir_mtime(root, &format!("{user}/new"))?;
    let sent = match kind(root, format!("{user}/.Sent").as_bytes())? {
        Some(SFlag::S_IFDIR) => dir_mtime(root, &format!("{user}/.Sent/new"))?,
        _ => None,
    };
    Ok(Copies { inbox, sent })
}

/// The mtime of the directory `path` below `dir`; None when it is missing or no directory.
fn dir_mtime(dir: BorrowedFd<'_>, path: &str) -> Result<Option<i64>, Errno> {
    match fstatat(dir, path, AtFlags::AT_SYMLINK_NOFOLLOW) {
        Ok(st) if fsutil::file_type(&st) == SFlag::S_IFDIR => Ok(Some(st.st_mtime)),
        Ok(_) | Err(Errno::ENOENT) | Err(Errno::ENOTDIR) => Ok(None),
        Err(e) => Err(e),
    }
}

/// The file type of `name` below `dir`, not following a symlink; None when missing.
fn kind(dir: BorrowedFd<'_>, name: &[u8]) -> Result<Option<SFlag>, Errno> {
    match fstatat(dir, name, AtFlags::AT_SYMLINK_NOFOLLOW) {
        Ok(st) => Ok(Some(fsutil::file_type(&st))),
        Err(Errno::ENOENT) | Err(Errno::ENOTDIR) => Ok(None),
        Err(e) => Err(e),
    }
}

/// The mode bits of the root directory `root`.
pub fn mode(root: BorrowedFd<'_>) -> nix::Result<u32> {
    Ok(nix::sys::stat::fstat(root)?.st_mode & 0o7777)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsFd;

    #[test]
    fn parallel_scan_finds_what_the_serial_scan_finds() {
        let root = tempfile::tempdir().unwrap();
        for i in 0..60 {
            let u = root.path().join(format!("user{i:02}"));
            std::fs::create_dir_all(u.join("new")).unwrap();
            if i % 3 == 0 {
                std::fs::create_dir_all(u.join(".Sent/new")).unwrap();
            }
        }
        std::fs::create_dir(root.path().join("Upper")).unwrap();
        std::fs::create_dir(root.path().join("user98")).unwrap(); // no new/: no copy yet
        std::os::unix::fs::symlink("user01", root.path().join("user99")).unwrap();
        let fd = std::fs::File::open(root.path()).unwrap();
        let serial = users_with(fd.as_fd(), 1).unwrap();
        assert_eq!(serial.copies.len(), 61);
        for threads in [2, 16, 100] {
            let parallel = users_with(fd.as_fd(), threads).unwrap();
            assert_eq!(parallel.copies, serial.copies, "{threads} threads");
            assert_eq!(parallel.newest, serial.newest);
            assert_eq!(parallel.unreadable, serial.unreadable);
        }
    }
}
