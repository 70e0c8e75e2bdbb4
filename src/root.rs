//! Whether a backup root is initialised, and so mounted: the marker `mailkeep init` writes.
//!
//! A backup volume that is not mounted usually leaves its mount point behind as an empty
//! directory, and a delivery into it would fill the system's disk with copies nobody sees.
//! So every command that writes below the root first finds ROOT/.mailkeep/root.json, which
//! only `init` creates; without it the root is "not initialised or not mounted" and a
//! delivery exits 75, which Exim retries. This module is also the one place that creates
//! ROOT/.mailkeep (the dedup store lives there too, and only opens it).

use std::ffi::OsStr;
use std::io::{self, Read};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::OFlag;
use nix::sys::stat::Mode;

use crate::exit::{Classify, Exit};
use crate::fsutil::{self, OpenError};
use crate::maildir::Perms;

/// ROOT/.mailkeep/: the marker and the dedup store.
pub const STATE_DIR: &str = ".mailkeep";
/// ROOT/.mailkeep/root.json.
pub const MARKER: &str = "root.json";
/// A marker is a line of JSON; anything larger is not ours.
const MARKER_MAX: u64 = 64 * 1024;
/// What an empty new file system holds and an "empty" root may hold.
const EMPTY_ALLOWED: &[&[u8]] = &[b"lost+found"];

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Marker {
    /// 32 hex characters from the system's random source: tells two roots apart.
    pub id: String,
    /// When `init` wrote it, in Unix seconds.
    pub created: i64,
}

#[derive(Debug)]
pub enum RootState {
    /// ROOT/.mailkeep/root.json is a regular file that parses.
    Initialised(Marker),
    /// ROOT itself does not exist (or is not a directory).
    Missing,
    /// ROOT exists but has no marker (an empty mount point: the volume is not mounted; or a
    /// root filled by an earlier mailkeep that was never `init --adopt`ed).
    NotInitialised,
}

#[derive(Debug, thiserror::Error)]
pub enum RootError {
    /// Missing or without a marker: for a delivery the volume may just not be mounted yet,
    /// so this is temporary (Exim keeps the copy and retries).
    #[error(
        "backup root {} is not initialised or not mounted ({why}): mount the backup volume, or run 'mailkeep init --root {}' once",
        root.display(), root.display()
    )]
    NotInitialised { root: PathBuf, why: &'static str },
    #[error("cannot read the marker of backup root {}: {err}", path.display())]
    Marker { path: PathBuf, err: io::Error },
    #[error("refusing to follow symlink {}", .0.display())]
    Symlink(PathBuf),
    /// For the admin commands and `init`: a wrong path, more likely than an unmounted volume
    /// (whose mount point stays).
    #[error("backup root {} does not exist or is no directory", .0.display())]
    Absent(PathBuf),
    #[error(
        "{} is not empty and has no marker: if it holds an earlier mailkeep backup, run 'mailkeep init --adopt --root {}'",
        .0.display(), .0.display()
    )]
    NotEmpty(PathBuf),
    #[error("{} is a mount point in /etc/fstab but nothing is mounted on it: mount the backup volume first", .0.display())]
    NotMounted(PathBuf),
    #[error("cannot initialise {}: cannot {op}: {err}", path.display())]
    Init { op: &'static str, path: PathBuf, err: io::Error },
}

impl Classify for RootError {
    fn exit(&self) -> Exit {
        match self {
            // Never a bounce: an unmounted volume or a marker being written is fixed by waiting.
            RootError::NotInitialised { .. } | RootError::Marker { .. } => Exit::TempFail,
            RootError::Symlink(_) => Exit::CantCreate,
            RootError::Absent(_) => Exit::Config,
            RootError::NotEmpty(_) | RootError::NotMounted(_) => Exit::Usage,
            RootError::Init { .. } => Exit::TempFail,
        }
    }
}

/// Looks at ROOT without creating anything and without following a symlink below it
/// (ROOT/.mailkeep and root.json opened with O_NOFOLLOW, root.json with O_NONBLOCK and
/// fstat'ed regular, read at most 64 KiB). A marker that is there but unreadable or does
/// not parse is an error (io::ErrorKind::InvalidData), not NotInitialised.
pub fn state(root: &Path) -> io::Result<RootState> {
    let flags = OFlag::O_DIRECTORY | OFlag::O_RDONLY | OFlag::O_CLOEXEC;
    // The root is the admin's, named on the command line: followed, as deliveries follow it.
    let root_fd = match nix::fcntl::open(root, flags, Mode::empty()) {
        Ok(fd) => fd,
        Err(Errno::ENOENT | Errno::ENOTDIR) => return Ok(RootState::Missing),
        Err(e) => return Err(e.into()),
    };
    state_at(root_fd.as_fd())
}

/// `state` of the root open as `root_fd` (never `Missing`).
pub fn state_at(root_fd: BorrowedFd<'_>) -> io::Result<RootState> {
    let dir = match fsutil::open_dir(root_fd, STATE_DIR) {
        Ok(fd) => fd,
        Err(OpenError::Missing) => return Ok(RootState::NotInitialised),
        Err(OpenError::Symlink) => return Err(symlink(STATE_DIR)),
        Err(e) => return Err(invalid(format!("{STATE_DIR} {e}"))),
    };
    match read_marker(dir.as_fd())? {
        Some(marker) => Ok(RootState::Initialised(marker)),
        None => Ok(RootState::NotInitialised),
    }
}

/// The marker in the state directory `dir`, `None` if there is none. One openat, one fstat
/// and, for a marker of a few dozen bytes, one read: it is on every delivery's path.
fn read_marker(dir: BorrowedFd<'_>) -> io::Result<Option<Marker>> {
    let (mut file, st) = match fsutil::open_regular(dir, MARKER) {
        Ok(opened) => opened,
        Err(OpenError::Missing) => return Ok(None),
        Err(OpenError::Symlink) => return Err(symlink(MARKER)),
        Err(OpenError::WrongType) => return Err(invalid(format!("{MARKER} is not a regular file"))),
        Err(e) => return Err(e.errno().into()),
    };
    let size = u64::try_from(st.st_size).unwrap_or(0);
    if size > MARKER_MAX {
        return Err(invalid(format!("{MARKER} is larger than {MARKER_MAX} bytes")));
    }
    // Read as many bytes as fstat said: no second read to find the end.
    let mut bytes = vec![0u8; size as usize];
    file.read_exact(&mut bytes)?;
    serde_json::from_slice(&bytes).map(Some).map_err(|e| invalid(format!("{MARKER} does not parse: {e}")))
}

fn invalid(what: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, what)
}

/// A symlink where the state directory or the marker belongs: InvalidData, and told apart
/// by `is_symlink` (refused with 75 as every symlink below the root).
#[derive(Debug, thiserror::Error)]
#[error("{0} is a symlink")]
struct Symlink(&'static str);

fn symlink(name: &'static str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, Symlink(name))
}

fn is_symlink(e: &io::Error) -> bool {
    e.get_ref().is_some_and(|inner| inner.is::<Symlink>())
}

/// `state`'s error as a `RootError`: a symlink, or a marker that cannot be read.
fn marker_error(root: &Path, err: io::Error) -> RootError {
    if is_symlink(&err) {
        return RootError::Symlink(root.join(STATE_DIR));
    }
    RootError::Marker { path: root.join(STATE_DIR).join(MARKER), err }
}

/// The marker of `root`, or why there is none: what `deliver` and `replay` ask first. A
/// missing root is "not initialised or not mounted" too: temporary, never a bounce.
pub fn require(root: &Path) -> Result<Marker, RootError> {
    match state(root).map_err(|e| marker_error(root, e))? {
        RootState::Initialised(marker) => Ok(marker),
        RootState::Missing => Err(RootError::NotInitialised { root: root.to_path_buf(), why: "it does not exist" }),
        RootState::NotInitialised => {
            Err(RootError::NotInitialised { root: root.to_path_buf(), why: "no .mailkeep/root.json in it" })
        }
    }
}

/// `require` for the admin commands, whose caller is a person: a root that does not exist
/// at all is a wrong path (`Absent`, exit 2); an empty one is still "not mounted" (75).
pub fn require_existing(root: &Path) -> Result<Marker, RootError> {
    match state(root) {
        Ok(RootState::Missing) => Err(RootError::Absent(root.to_path_buf())),
        _ => require(root),
    }
}

/// Whether the root `root` open as `root_fd` still has its marker: an `openat` of
/// ROOT/.mailkeep without following and an `fstatat` of the marker in it, for the writer to
/// ask on the descriptor it creates through, after `require` read the marker by path (the
/// volume may have gone in between).
pub fn check_at(root_fd: BorrowedFd<'_>, root: &Path) -> Result<(), RootError> {
    let not_initialised =
        || RootError::NotInitialised { root: root.to_path_buf(), why: "no .mailkeep/root.json in it" };
    let dir = match fsutil::open_dir(root_fd, STATE_DIR) {
        Ok(fd) => fd,
        Err(OpenError::Symlink) => return Err(RootError::Symlink(root.join(STATE_DIR))),
        Err(_) => return Err(not_initialised()),
    };
    match fsutil::regular_or_missing(dir.as_fd(), MARKER) {
        Ok(true) => Ok(()),
        Err(OpenError::Symlink) => Err(RootError::Symlink(root.join(STATE_DIR).join(MARKER))),
        Ok(false) | Err(_) => Err(not_initialised()),
    }
}

/// Opens ROOT/.mailkeep below `root_fd` without following a symlink; `None` when missing.
pub fn open_state_dir(root_fd: BorrowedFd<'_>) -> Result<Option<OwnedFd>, OpenError> {
    match fsutil::open_dir(root_fd, STATE_DIR) {
        Ok(fd) => Ok(Some(fd)),
        Err(OpenError::Missing) => Ok(None),
        Err(e) => Err(e),
    }
}

/// What `init` did.
#[derive(Debug, PartialEq, Eq)]
pub enum Init {
    Created(Marker),
    /// The root had its marker already; nothing was changed.
    Already(Marker),
}

/// Initialises `root`, which must exist:
/// 1. a root with its marker is left as it is (`Init::Already`);
/// 2. a mount point of fstab's that is not mounted is refused, empty or not (a marker there
///    would let every delivery land beside the volume); a root that holds anything but
///    `lost+found` is refused unless `adopt` (an empty mount point is what an unmounted
///    volume looks like; a full one without a marker is either an earlier mailkeep's backup
///    or a wrong path);
/// 3. ROOT/.mailkeep is created (0700, 2770 with a shared group; kept if there), durably;
/// 4. root.json is written into it atomically (`fsutil::replace_file`), mode as the files.
pub fn init(root: &Path, perms: Perms, adopt: bool, now: i64) -> Result<Init, RootError> {
    let err = |op: &'static str, path: &Path| {
        let path = path.to_path_buf();
        move |e: Errno| RootError::Init { op, path, err: e.into() }
    };
    let flags = OFlag::O_DIRECTORY | OFlag::O_RDONLY | OFlag::O_CLOEXEC;
    let root_fd = match nix::fcntl::open(root, flags, Mode::empty()) {
        Err(Errno::ENOENT | Errno::ENOTDIR) => return Err(RootError::Absent(root.to_path_buf())),
        opened => opened.map_err(err("open", root))?,
    };
    let marker_path = root.join(STATE_DIR).join(MARKER);
    // 1.
    match state_at(root_fd.as_fd()).map_err(|e| marker_error(root, e))? {
        RootState::Initialised(marker) => return Ok(Init::Already(marker)),
        RootState::NotInitialised | RootState::Missing => {}
    }
    // 2.
    if awaits_its_volume(root, Path::new(FSTAB)) {
        return Err(RootError::NotMounted(root.to_path_buf()));
    }
    if !adopt && !is_empty(root_fd.as_fd()).map_err(err("list", root))? {
        return Err(RootError::NotEmpty(root.to_path_buf()));
    }
    // 3.
    let state_path = root.join(STATE_DIR);
    let dir = fsutil::open_or_create_dir(root_fd.as_fd(), STATE_DIR, perms.dir_mode())
        .map_err(|e| RootError::Init { op: "create", path: state_path, err: e.errno().into() })?;
    // 4.
    let marker = Marker {
        id: random_id().map_err(|e| RootError::Init { op: "draw an id", path: marker_path.clone(), err: e })?,
        created: now,
    };
    let mut json = serde_json::to_vec(&marker).expect("a marker serialises");
    json.push(b'\n');
    let mode = perms.file_mode().bits();
    match fsutil::create_file(dir.as_fd(), OsStr::new(MARKER), &json, mode, None) {
        Ok(()) => Ok(Init::Created(marker)),
        // Another init was quicker: its marker stands, and is the one to report.
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => match state_at(root_fd.as_fd()) {
            Ok(RootState::Initialised(theirs)) => Ok(Init::Already(theirs)),
            Ok(_) => Err(RootError::Init { op: "write", path: marker_path, err: e }),
            Err(e) => Err(marker_error(root, e)),
        },
        Err(e) => Err(RootError::Init { op: "write", path: marker_path, err: e }),
    }
}

/// The file systems the admin mounts at boot.
const FSTAB: &str = "/etc/fstab";

/// Whether `root` is a mount point listed in `fstab` that nothing is mounted on now: a
/// mount point is a directory on another device than its parent.
fn awaits_its_volume(root: &Path, fstab: &Path) -> bool {
    let Ok(root) = std::fs::canonicalize(root) else { return false };
    let Ok(text) = std::fs::read_to_string(fstab) else { return false };
    // fstab writes a space in a path as \040 (and a tab as \011).
    let unescape = |field: &str| field.replace("\\040", " ").replace("\\011", "\t");
    let listed = text
        .lines()
        .filter(|l| !l.trim_start().starts_with('#'))
        .filter_map(|l| l.split_whitespace().nth(1))
        .any(|mount_point| Path::new(&unescape(mount_point)) == root);
    if !listed || root.parent().is_none() {
        return false;
    }
    use std::os::unix::fs::MetadataExt;
    let dev = |p: &Path| std::fs::metadata(p).map(|m| m.dev());
    matches!((dev(&root), dev(&root.join(".."))), (Ok(a), Ok(b)) if a == b)
}

/// Whether the directory holds nothing but what a fresh file system brings, and perhaps a
/// `.mailkeep` without a marker (an `init` that died before writing it, called again).
fn is_empty(dir: BorrowedFd<'_>) -> nix::Result<bool> {
    for entry in fsutil::list_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name().to_bytes();
        if !EMPTY_ALLOWED.contains(&name) && name != STATE_DIR.as_bytes() {
            return Ok(false);
        }
    }
    Ok(true)
}

/// 32 hex characters from the system's random source.
fn random_id() -> io::Result<String> {
    let mut random = [0u8; 16];
    ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut random)
        .map_err(|_| io::Error::other("no random bytes from the system"))?;
    Ok(crate::message::hex(&random))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_listed_mount_point_with_nothing_mounted_awaits_its_volume() {
        let dir = tempfile::tempdir().unwrap();
        let point = dir.path().join("backup vol");
        std::fs::create_dir(&point).unwrap();
        let fstab = dir.path().join("fstab");
        let listed = point.canonicalize().unwrap().display().to_string().replace(' ', "\\040");
        std::fs::write(&fstab, format!("# <file system> <mount point>\nUUID=x {listed} ext4 defaults 0 2\n")).unwrap();
        assert!(awaits_its_volume(&point, &fstab), "listed, same device as its parent");
        std::fs::write(&fstab, "UUID=x /elsewhere ext4 defaults 0 2\n").unwrap();
        assert!(!awaits_its_volume(&point, &fstab), "not listed");
        assert!(!awaits_its_volume(Path::new("/proc"), Path::new("/proc/self/mounts")), "mounted");
    }
    use std::os::unix::fs::PermissionsExt;

    const P: Perms = Perms { shared_group: false };

    #[test]
    fn init_writes_a_marker_that_state_reads_back_and_a_second_init_keeps() {
        let root = tempfile::tempdir().unwrap();
        assert!(matches!(state(root.path()).unwrap(), RootState::NotInitialised));
        let Init::Created(marker) = init(root.path(), P, false, 1700000000).unwrap() else { panic!("not created") };
        assert_eq!(marker.id.len(), 32);
        assert!(marker.id.bytes().all(|b| b.is_ascii_hexdigit()));
        assert_eq!(init(root.path(), P, false, 1800000000).unwrap(), Init::Already(marker.clone()));
        let RootState::Initialised(read) = state(root.path()).unwrap() else { panic!("not initialised") };
        assert_eq!(read, marker);
        let mode = std::fs::metadata(root.path().join(STATE_DIR)).unwrap().permissions().mode();
        assert_eq!(mode & 0o7777, 0o700);
    }

    #[test]
    fn a_shared_root_gets_a_setgid_state_dir() {
        let root = tempfile::tempdir().unwrap();
        init(root.path(), Perms { shared_group: true }, false, 0).unwrap();
        let mode = std::fs::metadata(root.path().join(STATE_DIR)).unwrap().permissions().mode();
        assert_eq!(mode & 0o7777, 0o2770);
    }

    #[test]
    fn a_full_root_without_marker_is_refused_unless_adopted() {
        let root = tempfile::tempdir().unwrap();
        std::fs::create_dir(root.path().join("alice")).unwrap();
        let err = init(root.path(), P, false, 0).unwrap_err();
        assert!(matches!(err, RootError::NotEmpty(_)), "{err}");
        assert!(!root.path().join(STATE_DIR).exists(), "nothing created");
        assert!(matches!(init(root.path(), P, true, 0).unwrap(), Init::Created(_)));
        let fresh = tempfile::tempdir().unwrap();
        std::fs::create_dir(fresh.path().join("lost+found")).unwrap();
        assert!(matches!(init(fresh.path(), P, false, 0).unwrap(), Init::Created(_)), "a new file system is empty");
    }

    #[test]
    fn missing_root_and_bad_markers_are_told_apart() {
        assert!(matches!(state(Path::new("/nonexistent/mailkeep")).unwrap(), RootState::Missing));
        let root = tempfile::tempdir().unwrap();
        std::fs::create_dir(root.path().join(STATE_DIR)).unwrap();
        assert!(matches!(state(root.path()).unwrap(), RootState::NotInitialised), "a state dir alone");
        std::fs::write(root.path().join(".mailkeep/root.json"), "{").unwrap();
        assert_eq!(state(root.path()).unwrap_err().kind(), io::ErrorKind::InvalidData);
        std::fs::remove_file(root.path().join(".mailkeep/root.json")).unwrap();
        nix::unistd::mkfifo(&root.path().join(".mailkeep/root.json"), Mode::from_bits_truncate(0o600)).unwrap();
        assert_eq!(state(root.path()).unwrap_err().kind(), io::ErrorKind::InvalidData, "a FIFO, without blocking");
        let other = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        init(outside.path(), P, false, 0).unwrap();
        std::os::unix::fs::symlink(outside.path().join(STATE_DIR), other.path().join(STATE_DIR)).unwrap();
        assert_eq!(state(other.path()).unwrap_err().kind(), io::ErrorKind::InvalidData, "a symlinked state dir");
        let fd = fsutil::open_dir_path(other.path()).unwrap();
        assert!(matches!(check_at(fd.as_fd(), other.path()), Err(RootError::Symlink(_))));
        let fd = fsutil::open_dir_path(outside.path()).unwrap();
        assert!(check_at(fd.as_fd(), outside.path()).is_ok());
    }

    #[test]
    fn require_says_not_initialised_or_not_mounted_and_defers() {
        let root = tempfile::tempdir().unwrap();
        let err = require(root.path()).unwrap_err();
        assert!(err.to_string().contains("not initialised or not mounted"), "{err}");
        assert_eq!(err.exit(), Exit::TempFail);
        let err = require(Path::new("/nonexistent/mailkeep")).unwrap_err();
        assert_eq!(err.exit(), Exit::TempFail);
        assert!(!Path::new("/nonexistent/mailkeep").exists());
    }
}
