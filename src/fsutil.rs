//! The one atomic replace of a small file (a config, a password file, the accounts list), done
//! through a directory descriptor so that a symlink or a file planted by whoever can write
//! into that directory never makes mailkeep (often root) write, chmod or chown anything else.

use std::ffi::OsStr;
use std::io::{self, Write};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path};

use nix::errno::Errno;
use nix::fcntl::{OFlag, openat, renameat};
use nix::sys::stat::{Mode, fchmod, mkdirat};
use nix::unistd::{Gid, Uid, UnlinkatFlags, fchown, unlinkat};

/// Who a replaced file belongs to; `None` keeps the creator's (our) uid and gid.
pub type Owner = Option<(u32, u32)>;

/// Opens the directory `path` itself, never a symlink in its place (`ENOTDIR`); the
/// directories above it are followed, as their owners set them up.
pub fn open_dir(path: &Path) -> io::Result<OwnedFd> {
    let flags = OFlag::O_DIRECTORY | OFlag::O_RDONLY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
    Ok(nix::fcntl::open(path, flags, Mode::empty())?)
}

/// Opens the directory `path`, creating it and any missing parents with `mode`. A directory
/// it creates is opened only through its parent's descriptor with `O_NOFOLLOW`, so a symlink
/// slipped in between `mkdir` and `open` is refused (`ENOTDIR`), as is a symlink at `path`.
pub fn create_dir_all(path: &Path, mode: u32) -> io::Result<OwnedFd> {
    match open_dir(path) {
        Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {}
        done => return done,
    }
    let name = match path.components().next_back() {
        Some(Component::Normal(name)) => name,
        _ => return Err(io::Error::from_raw_os_error(libc::ENOENT)),
    };
    let parent = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let parent = match nix::fcntl::open(parent, OFlag::O_DIRECTORY | OFlag::O_RDONLY | OFlag::O_CLOEXEC, Mode::empty())
    {
        Err(Errno::ENOENT) => create_dir_all(parent, mode)?,
        opened => opened?,
    };
    match mkdirat(parent.as_fd(), name, Mode::from_bits_truncate(mode)) {
        Ok(()) | Err(Errno::EEXIST) => {}
        Err(e) => return Err(e.into()),
    }
    let flags = OFlag::O_DIRECTORY | OFlag::O_RDONLY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
    Ok(openat(parent.as_fd(), name, flags, Mode::empty())?)
}

/// Replaces `name` in `dir` with `bytes`, so that a reader sees the old file or the new one,
/// whole, and nobody but `owner` (and `mode`'s group and others) ever sees the new bytes:
/// 1. create `.NAME.mailkeep-PID-RANDOM` with `O_CREAT|O_EXCL|O_NOFOLLOW`, mode `mode`
///    without its group and other bits (a name planted there, symlink or not, is never opened);
/// 2. `fchown` it to `owner`, then `fchmod` it to `mode` (on the descriptor, never by path);
/// 3. write and fsync it;
/// 4. rename it over `name` (a symlink at `name` is replaced, not followed);
/// 5. fsync the directory, so that the rename survives a crash.
///
/// Before step 4 every failure removes the temp file and leaves `name` as it was.
pub fn replace_file(dir: BorrowedFd<'_>, name: &OsStr, bytes: &[u8], mode: u32, owner: Owner) -> io::Result<()> {
    let tmp = temp_name(name)?;
    // 1.
    let flags = OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_WRONLY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
    let file = openat(dir, tmp.as_os_str(), flags, Mode::from_bits_truncate(mode & 0o700))?;
    let written = fill(file, bytes, mode, owner).and_then(|()| Ok(renameat(dir, tmp.as_os_str(), dir, name)?)); // 4.
    if let Err(e) = written {
        let _ = unlinkat(dir, tmp.as_os_str(), UnlinkatFlags::NoRemoveDir);
        return Err(e);
    }
    // 5.
    Ok(nix::unistd::fsync(dir)?)
}

/// Steps 2 and 3 on the new file's descriptor.
fn fill(file: OwnedFd, bytes: &[u8], mode: u32, owner: Owner) -> io::Result<()> {
    if let Some((uid, gid)) = owner {
        fchown(file.as_fd(), Some(Uid::from_raw(uid)), Some(Gid::from_raw(gid)))?;
    }
    fchmod(file.as_fd(), Mode::from_bits_truncate(mode))?;
    let mut file = std::fs::File::from(file);
    file.write_all(bytes)?;
    file.sync_all()
}

/// A hidden name beside `name` that nobody can guess ahead: our pid and 64 random bits.
fn temp_name(name: &OsStr) -> io::Result<std::ffi::OsString> {
    let mut random = [0u8; 8];
    ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut random)
        .map_err(|_| io::Error::other("no random bytes from the system"))?;
    let mut tmp = std::ffi::OsString::from(".");
    tmp.push(name);
    tmp.push(format!(".mailkeep-{}-{:016x}", std::process::id(), u64::from_ne_bytes(random)));
    if tmp.as_bytes().len() > 255 {
        return Err(io::Error::from_raw_os_error(libc::ENAMETOOLONG));
    }
    Ok(tmp)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::{MetadataExt, PermissionsExt};

    #[test]
    fn replace_file_writes_the_mode_and_leaves_no_temp_file() {
        let dir = tempfile::tempdir().unwrap();
        let fd = open_dir(dir.path()).unwrap();
        std::fs::write(dir.path().join("f"), "old").unwrap();
        replace_file(fd.as_fd(), OsStr::new("f"), b"new", 0o640, None).unwrap();
        assert_eq!(std::fs::read(dir.path().join("f")).unwrap(), b"new");
        assert_eq!(std::fs::metadata(dir.path().join("f")).unwrap().permissions().mode() & 0o7777, 0o640);
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn replace_file_replaces_a_symlink_without_following_it() {
        let dir = tempfile::tempdir().unwrap();
        let victim = dir.path().join("victim");
        std::fs::write(&victim, "keep").unwrap();
        std::os::unix::fs::symlink(&victim, dir.path().join("f")).unwrap();
        let fd = open_dir(dir.path()).unwrap();
        replace_file(fd.as_fd(), OsStr::new("f"), b"new", 0o600, None).unwrap();
        assert_eq!(std::fs::read(&victim).unwrap(), b"keep");
        let meta = std::fs::symlink_metadata(dir.path().join("f")).unwrap();
        assert!(meta.is_file() && meta.mode() & 0o7777 == 0o600);
    }

    #[test]
    fn create_dir_all_refuses_a_symlink_and_makes_missing_parents() {
        let dir = tempfile::tempdir().unwrap();
        std::os::unix::fs::symlink(dir.path(), dir.path().join("link")).unwrap();
        let err = create_dir_all(&dir.path().join("link"), 0o755).unwrap_err();
        assert!(matches!(err.raw_os_error(), Some(libc::ENOTDIR | libc::ELOOP)), "{err}");
        create_dir_all(&dir.path().join("a/b/c"), 0o755).unwrap();
        assert!(dir.path().join("a/b/c").is_dir());
        create_dir_all(&dir.path().join("a/b/c"), 0o755).unwrap();
    }
}
