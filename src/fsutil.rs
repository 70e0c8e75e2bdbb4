//! What lies below the backup root, and the small files mailkeep writes elsewhere (a config,
//! a password file, the accounts list), are opened here relative to directory descriptors:
//! never through a symlink, never blocking on a FIFO, never taking a FIFO or device for a
//! file; a small file is replaced in one atomic step (`replace_file`), a directory listed by
//! one function (`list_dir`).
//!
//! Anyone who can write below the root (an IMAP server's uid, the shared group), or into a
//! directory mailkeep writes a config into, can plant a symlink or a FIFO where mailkeep
//! expects a directory or a small file. So a directory is opened with
//! `O_NOFOLLOW|O_DIRECTORY`, and a small file is looked at with `fstatat` or opened with
//! `O_NOFOLLOW|O_NONBLOCK` and `fstat`ed before a byte is read. Callers turn an `OpenError`
//! into their own error (with the path) or into a finding.

use std::ffi::OsStr;
use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path};

use nix::NixPath;
use nix::errno::Errno;
use nix::fcntl::{AtFlags, OFlag, openat};
use nix::sys::stat::{FileStat, Mode, SFlag, fchmod, fstat, fstatat, mkdirat};
use nix::unistd::{Gid, Uid, UnlinkatFlags, fchown, fsync, unlinkat};

/// Why a name below a directory descriptor was not opened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpenError {
    /// Nothing has that name.
    Missing,
    /// A symlink: never followed below the root.
    Symlink,
    /// Something other than what belongs there: a file where a directory should be, a FIFO
    /// or a device where a regular file should be.
    WrongType,
    /// The system call `op` failed.
    Io { op: &'static str, errno: Errno },
}

impl OpenError {
    fn io(op: &'static str) -> impl FnOnce(Errno) -> OpenError {
        move |errno| OpenError::Io { op, errno }
    }
}

impl OpenError {
    /// The errno a plain `openat` would have reported, for callers that speak errno.
    pub fn errno(self) -> Errno {
        match self {
            OpenError::Missing => Errno::ENOENT,
            OpenError::Symlink => Errno::ELOOP,
            OpenError::WrongType => Errno::EINVAL,
            OpenError::Io { errno, .. } => errno,
        }
    }
}

impl std::fmt::Display for OpenError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            OpenError::Missing => f.write_str("missing"),
            OpenError::Symlink => f.write_str("is a symlink"),
            OpenError::WrongType => f.write_str("is of the wrong file type"),
            OpenError::Io { op, errno } => write!(f, "cannot {op}: {}", errno.desc()),
        }
    }
}

/// The type bits of a stat.
pub fn file_type(st: &FileStat) -> SFlag {
    SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT
}

/// Opens the directory `name` below `parent` without following a symlink.
pub fn open_dir<P: ?Sized + NixPath>(parent: BorrowedFd<'_>, name: &P) -> Result<OwnedFd, OpenError> {
    let flags = OFlag::O_DIRECTORY | OFlag::O_RDONLY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
    // O_NOFOLLOW|O_DIRECTORY on a symlink says ENOTDIR (or ELOOP): a look at the name tells
    // a symlink from a file. If the look finds a directory, the name was swapped meanwhile:
    // open again (a few times) rather than call a directory a file.
    for _ in 0..3 {
        match openat(parent, name, flags, Mode::empty()) {
            Ok(fd) => return Ok(fd),
            Err(Errno::ENOENT) => return Err(OpenError::Missing),
            Err(Errno::ELOOP) => return Err(OpenError::Symlink),
            Err(Errno::ENOTDIR) => match fstatat(parent, name, AtFlags::AT_SYMLINK_NOFOLLOW) {
                Ok(st) if file_type(&st) == SFlag::S_IFLNK => return Err(OpenError::Symlink),
                Ok(st) if file_type(&st) == SFlag::S_IFDIR => continue,
                _ => return Err(OpenError::WrongType),
            },
            Err(e) => return Err(OpenError::Io { op: "open", errno: e }),
        }
    }
    Err(OpenError::Symlink)
}

/// Opens the directory `name` below `parent`, creating it with `mode` if it is missing. A
/// created directory gets `mode` exactly (mkdir drops the setgid bit, which the group must
/// be inherited by), and its creation is made durable with an fsync of `parent`.
pub fn open_or_create_dir<P: ?Sized + NixPath>(
    parent: BorrowedFd<'_>,
    name: &P,
    mode: Mode,
) -> Result<OwnedFd, OpenError> {
    match open_dir(parent, name) {
        Err(OpenError::Missing) => {}
        other => return other,
    }
    make_dir(parent, name, mode, None, true)
}

/// Creates the directory `name` below `parent`, which must not exist yet, with exactly
/// `mode` and, when given, `owner`; the creation is made durable with an fsync of `parent`.
pub fn create_dir<P: ?Sized + NixPath>(
    parent: BorrowedFd<'_>,
    name: &P,
    mode: Mode,
    owner: Owner,
) -> Result<OwnedFd, OpenError> {
    make_dir(parent, name, mode, owner, false)
}

/// 1. `mkdirat` (an existing name is an error unless `exist_ok`);
/// 2. open it without following;
/// 3. `fchown` to `owner` and `fchmod` to `mode` on the descriptor (the umask and mkdir's
///    dropping of the setgid bit undone);
/// 4. fsync `parent`, so the entry and the inode's owner and mode are durable together.
fn make_dir<P: ?Sized + NixPath>(
    parent: BorrowedFd<'_>,
    name: &P,
    mode: Mode,
    owner: Owner,
    exist_ok: bool,
) -> Result<OwnedFd, OpenError> {
    match mkdirat(parent, name, mode) {
        Ok(()) => {}
        Err(Errno::EEXIST) if exist_ok => {}
        Err(e) => return Err(OpenError::Io { op: "create directory", errno: e }),
    }
    let fd = open_dir(parent, name)?;
    if let Some((uid, gid)) = owner {
        fchown(fd.as_fd(), Some(Uid::from_raw(uid)), Some(Gid::from_raw(gid))).map_err(OpenError::io("chown"))?;
    }
    if owner.is_some() || mode.contains(Mode::S_ISGID) {
        fchmod(fd.as_fd(), mode).map_err(OpenError::io("chmod"))?;
    }
    fsync(parent).map_err(OpenError::io("fsync directory"))?;
    Ok(fd)
}

/// The entries of the directory `dir`, without `.` and `..`: each a name and, when the file
/// system tells (d_type), a type. The directory is read through a descriptor of its own
/// (`openat(dir, ".")`, not a `dup`, which would share and use up `dir`'s read position),
/// so `dir` stays usable for `openat` and can be listed again. An entry that cannot be read
/// is an `Err` item; the caller decides whether that ends the listing.
pub fn list_dir(dir: BorrowedFd<'_>) -> nix::Result<impl Iterator<Item = nix::Result<nix::dir::Entry>> + use<>> {
    let flags = OFlag::O_DIRECTORY | OFlag::O_RDONLY | OFlag::O_CLOEXEC;
    let own = openat(dir, ".", flags, Mode::empty())?;
    let listing = nix::dir::Dir::from_fd(own)?;
    let dots =
        |e: &nix::Result<nix::dir::Entry>| matches!(e, Ok(e) if matches!(e.file_name().to_bytes(), b"." | b".."));
    Ok(listing.into_iter().filter(move |e| !dots(e)))
}

/// Whether `name` below `dir` is a regular file (true) or missing (false); anything else is
/// refused, and nothing is opened.
pub fn regular_or_missing<P: ?Sized + NixPath>(dir: BorrowedFd<'_>, name: &P) -> Result<bool, OpenError> {
    match fstatat(dir, name, AtFlags::AT_SYMLINK_NOFOLLOW) {
        Ok(st) if file_type(&st) == SFlag::S_IFREG => Ok(true),
        Ok(st) if file_type(&st) == SFlag::S_IFLNK => Err(OpenError::Symlink),
        Ok(_) => Err(OpenError::WrongType),
        Err(Errno::ENOENT) => Ok(false),
        Err(e) => Err(OpenError::Io { op: "stat", errno: e }),
    }
}

/// Makes sure `name` below `dir` is a regular file, creating it empty with `mode` when it
/// is missing; returns whether it was created. What is there is never opened, so a FIFO
/// cannot block us.
pub fn ensure_file<P: ?Sized + NixPath>(dir: BorrowedFd<'_>, name: &P, mode: Mode) -> Result<bool, OpenError> {
    let flags = OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_WRONLY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
    // Twice at most: a file that appears between the look and the create is looked at again.
    for _ in 0..2 {
        if regular_or_missing(dir, name)? {
            return Ok(false);
        }
        match openat(dir, name, flags, mode) {
            Ok(_) => return Ok(true),
            Err(Errno::EEXIST) => continue,
            Err(e) => return Err(OpenError::Io { op: "create", errno: e }),
        }
    }
    Err(OpenError::Io { op: "create", errno: Errno::EEXIST })
}

/// Reads the admin's file `path` (the accounts list: a symlink to it is followed, as Exim
/// follows it), at most `limit` bytes; only a regular file, opened without blocking, so that
/// a FIFO put in its place fails at once instead of hanging a delivery or a sync.
pub fn read_config_file(path: &Path, limit: u64) -> io::Result<Vec<u8>> {
    use std::os::unix::fs::OpenOptionsExt;
    let file = File::options().read(true).custom_flags(libc::O_NONBLOCK).open(path)?;
    if !file.metadata()?.is_file() {
        return Err(io::Error::new(io::ErrorKind::InvalidInput, "not a regular file"));
    }
    let mut bytes = Vec::new();
    file.take(limit.saturating_add(1)).read_to_end(&mut bytes)?;
    // Never a part of it: a name past the part would read as missing.
    if bytes.len() as u64 > limit {
        return Err(io::Error::new(io::ErrorKind::FileTooLarge, format!("larger than {limit} bytes")));
    }
    Ok(bytes)
}

/// The `io::Error` of a read or write as an `Errno`, for the callers that speak `Errno`.
pub fn errno_of(e: io::Error) -> Errno {
    Errno::from_raw(e.raw_os_error().unwrap_or(libc::EIO))
}

/// Opens `name` below `dir` for reading: never through a symlink (ELOOP), never blocking on
/// a FIFO, and without updating its access time where that is allowed. What it is (fstat)
/// is the caller's to check; `open_regular` takes only a regular file.
pub fn open_for_reading<P: ?Sized + NixPath>(dir: BorrowedFd<'_>, name: &P) -> nix::Result<File> {
    let flags = OFlag::O_RDONLY | OFlag::O_NOFOLLOW | OFlag::O_NONBLOCK | OFlag::O_NOCTTY | OFlag::O_CLOEXEC;
    match openat(dir, name, flags | OFlag::O_NOATIME, Mode::empty()) {
        // O_NOATIME is for the file's owner (or root) only.
        Err(Errno::EPERM) => openat(dir, name, flags, Mode::empty()),
        other => other,
    }
    .map(File::from)
}

/// `open_for_reading`, and only a regular file: a message, a small file mailkeep wrote;
/// with its `fstat` (its size, for a caller that reads it whole). A relative `name` with
/// `dir` = `nix::fcntl::AT_FDCWD` opens a path.
pub fn open_regular<P: ?Sized + NixPath>(dir: BorrowedFd<'_>, name: &P) -> Result<(File, FileStat), OpenError> {
    let file = match open_for_reading(dir, name) {
        Ok(file) => file,
        Err(Errno::ENOENT) => return Err(OpenError::Missing),
        Err(Errno::ELOOP) => return Err(OpenError::Symlink),
        Err(e) => return Err(OpenError::Io { op: "open", errno: e }),
    };
    let st = fstat(file.as_fd()).map_err(OpenError::io("stat"))?;
    if file_type(&st) != SFlag::S_IFREG {
        return Err(OpenError::WrongType);
    }
    Ok((file, st))
}

/// Reads the small regular file `name` below `dir`, at most `limit` bytes; `None` when it is
/// missing. A FIFO or device is refused without waiting for a writer.
pub fn read_small<P: ?Sized + NixPath>(
    dir: BorrowedFd<'_>,
    name: &P,
    limit: u64,
) -> Result<Option<Vec<u8>>, OpenError> {
    let file = match open_regular(dir, name) {
        Ok((file, _)) => file,
        Err(OpenError::Missing) => return Ok(None),
        Err(e) => return Err(e),
    };
    let mut bytes = Vec::new();
    file.take(limit).read_to_end(&mut bytes).map_err(|e| OpenError::Io { op: "read", errno: errno_of(e) })?;
    Ok(Some(bytes))
}

/// Who a replaced file belongs to; `None` keeps the creator's (our) uid and gid.
pub type Owner = Option<(u32, u32)>;

/// Opens the directory `path` itself, never a symlink in its place (`ENOTDIR`); the
/// directories above it are followed, as their owners set them up.
pub fn open_dir_path(path: &Path) -> io::Result<OwnedFd> {
    let flags = OFlag::O_DIRECTORY | OFlag::O_RDONLY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
    Ok(nix::fcntl::open(path, flags, Mode::empty())?)
}

/// Opens the directory `path`, creating it and any missing parents with `mode`. A directory
/// it creates is opened only through its parent's descriptor with `O_NOFOLLOW`, so a symlink
/// slipped in between `mkdir` and `open` is refused (`ENOTDIR`), as is a symlink at `path`.
pub fn create_dir_all(path: &Path, mode: u32) -> io::Result<OwnedFd> {
    match open_dir_path(path) {
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
    write_file(dir, name, bytes, mode, owner, nix::fcntl::RenameFlags::empty())
}

/// `replace_file` for a file that must not be there yet (a root's marker): step 4 fails
/// with `AlreadyExists` instead of replacing one that another process wrote meanwhile.
pub fn create_file(dir: BorrowedFd<'_>, name: &OsStr, bytes: &[u8], mode: u32, owner: Owner) -> io::Result<()> {
    write_file(dir, name, bytes, mode, owner, nix::fcntl::RenameFlags::RENAME_NOREPLACE)
}

/// The steps of `replace_file`, step 4 with `how`.
fn write_file(
    dir: BorrowedFd<'_>,
    name: &OsStr,
    bytes: &[u8],
    mode: u32,
    owner: Owner,
    how: nix::fcntl::RenameFlags,
) -> io::Result<()> {
    let tmp = temp_name(name)?;
    // 1.
    let flags = OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_WRONLY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
    let file = openat(dir, tmp.as_os_str(), flags, Mode::from_bits_truncate(mode & 0o700))?;
    let written =
        fill(file, bytes, mode, owner).and_then(|()| Ok(nix::fcntl::renameat2(dir, tmp.as_os_str(), dir, name, how)?)); // 4.
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
    use std::os::unix::fs::{MetadataExt, PermissionsExt, symlink};

    fn dir_fd(path: &std::path::Path) -> OwnedFd {
        nix::fcntl::open(path, OFlag::O_DIRECTORY | OFlag::O_RDONLY, Mode::empty()).unwrap()
    }

    #[test]
    fn symlinks_and_fifos_are_refused_without_blocking() {
        let t = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        std::fs::write(outside.path().join("f"), "x").unwrap();
        symlink(outside.path(), t.path().join("d")).unwrap();
        symlink(outside.path().join("f"), t.path().join("f")).unwrap();
        nix::unistd::mkfifo(&t.path().join("p"), Mode::from_bits_truncate(0o600)).unwrap();
        let fd = dir_fd(t.path());
        let d = fd.as_fd();
        assert_eq!(open_dir(d, "d").err(), Some(OpenError::Symlink));
        assert_eq!(open_or_create_dir(d, "d", Mode::from_bits_truncate(0o700)).err(), Some(OpenError::Symlink));
        assert_eq!(open_dir(d, "p").err(), Some(OpenError::WrongType));
        assert_eq!(read_small(d, "f", 10), Err(OpenError::Symlink));
        assert_eq!(read_small(d, "p", 10), Err(OpenError::WrongType));
        assert_eq!(ensure_file(d, "p", Mode::from_bits_truncate(0o600)), Err(OpenError::WrongType));
        assert_eq!(ensure_file(d, "f", Mode::from_bits_truncate(0o600)), Err(OpenError::Symlink));
        assert_eq!(std::fs::read_dir(outside.path()).unwrap().count(), 1, "nothing made outside");
    }

    #[test]
    fn missing_things_are_created_once() {
        let t = tempfile::tempdir().unwrap();
        let fd = dir_fd(t.path());
        let d = fd.as_fd();
        assert_eq!(read_small(d, "s", 10), Ok(None));
        assert_eq!(ensure_file(d, "s", Mode::from_bits_truncate(0o600)), Ok(true));
        assert_eq!(ensure_file(d, "s", Mode::from_bits_truncate(0o600)), Ok(false));
        assert_eq!(read_small(d, "s", 10), Ok(Some(Vec::new())));
        open_or_create_dir(d, "sub", Mode::from_bits_truncate(0o700)).unwrap();
        assert!(t.path().join("sub").is_dir());
    }

    #[test]
    fn a_directory_is_listed_whole_however_often_without_dots() {
        let t = tempfile::tempdir().unwrap();
        std::fs::write(t.path().join("f"), "").unwrap();
        std::fs::create_dir(t.path().join(".d")).unwrap();
        let fd = dir_fd(t.path());
        for _ in 0..2 {
            let mut got: Vec<(Vec<u8>, Option<nix::dir::Type>)> = list_dir(fd.as_fd())
                .unwrap()
                .map(|e| e.map(|e| (e.file_name().to_bytes().to_vec(), e.file_type())).unwrap())
                .collect();
            got.sort_by(|a, b| a.0.cmp(&b.0));
            assert_eq!(
                got,
                [(b".d".to_vec(), Some(nix::dir::Type::Directory)), (b"f".to_vec(), Some(nix::dir::Type::File))]
            );
        }
        assert!(open_dir(fd.as_fd(), ".d").is_ok(), "the directory's own descriptor still works");
    }

    #[test]
    fn create_dir_gives_the_mode_exactly_and_refuses_an_existing_name() {
        let t = tempfile::tempdir().unwrap();
        let fd = dir_fd(t.path());
        let me = Some((nix::unistd::geteuid().as_raw(), nix::unistd::getegid().as_raw()));
        create_dir(fd.as_fd(), "d", Mode::from_bits_truncate(0o2775), me).unwrap();
        assert_eq!(std::fs::metadata(t.path().join("d")).unwrap().permissions().mode() & 0o7777, 0o2775);
        let again = create_dir(fd.as_fd(), "d", Mode::from_bits_truncate(0o700), None);
        assert_eq!(again.err(), Some(OpenError::Io { op: "create directory", errno: Errno::EEXIST }));
    }

    #[test]
    fn replace_file_writes_the_mode_and_leaves_no_temp_file() {
        let dir = tempfile::tempdir().unwrap();
        let fd = open_dir_path(dir.path()).unwrap();
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
        let fd = open_dir_path(dir.path()).unwrap();
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
