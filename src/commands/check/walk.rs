//! Going through the backup: the root, each user's Maildir, its folders and their
//! messages, and the dedup store, recording a finding for everything wrong
//! (`report::Fault`) and handing the safe fixes to `repair`.

use std::ffi::OsStr;

use std::io::Read;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::AtFlags;
use nix::sys::stat::{FileStat, SFlag, fstat, fstatat};

use super::repair;
use super::report::{Fault, FolderStats, Foreign, Problem, Report};
use crate::envelope::User;
use crate::fsutil::{self, OpenError, file_type};
use crate::maildir::FolderKind;

/// How much of each message is read to look for CRLF.
pub const HEAD_SCAN: usize = 4096;
/// The Maildir subdirectories, in the order a repair creates them (new/ last, as deliver does).
pub(super) const FOLDER_DIRS: [&str; 3] = ["cur", "tmp", "new"];
/// Subscription lists are read up to this size.
const SMALL_FILE_MAX: u64 = 1 << 20;

/// The dedup store's directory below the root, and its files.
const STORE_DIR: &str = ".mailkeep";
const STORE_FILES: [&str; 4] = ["dedup.sqlite3", "dedup.sqlite3-wal", "dedup.sqlite3-shm", "dedup.sqlite3-journal"];

/// True when `deliver --user NAME` would use exactly `name` as the user's directory.
fn is_user_name(name: &[u8]) -> bool {
    User::parse(OsStr::from_bytes(name)).is_ok_and(|u| u.as_str().as_bytes() == name)
}

/// The problem a name is when it could not be opened as a `wanted`.
fn refused(e: OpenError, wanted: &'static str) -> Fault {
    match e {
        OpenError::Symlink => Fault::Symlink,
        OpenError::WrongType => Fault::NotA(wanted),
        OpenError::Missing | OpenError::Io { .. } => Fault::Unreadable(e.to_string()),
    }
}

/// The uid and gid owning a user's Maildir: the ones the IMAP server runs as.
#[derive(Clone, Copy)]
struct Owner {
    uid: u32,
    gid: u32,
    /// The mode of the user's Maildir, which a repair's new subscription list follows.
    mode: u32,
}

impl Owner {
    /// True when the mode bits let this owner have all of `want` (4 read, 2 write, 1 search).
    fn can(&self, st: &FileStat, want: u32) -> bool {
        let shift = if st.st_uid == self.uid {
            6
        } else if st.st_gid == self.gid {
            3
        } else {
            0
        };
        (st.st_mode >> shift) & want == want
    }

    fn denied(&self, st: &FileStat, what: &str) -> Fault {
        Fault::Unreadable(format!(
            "mode {:04o}, owner {}:{}: uid {} (owner of the user's Maildir) cannot {what} it",
            st.st_mode & 0o7777,
            st.st_uid,
            st.st_gid,
            self.uid
        ))
    }
}

/// One pass over the backup: what it found so far, and whether it repairs.
pub struct Checker {
    pub(super) repair: bool,
    cutoff: i64,
    now: i64,
    pub(super) report: Report,
}

impl Checker {
    pub fn new(root: &Path, repair: bool, now: i64) -> Checker {
        Checker {
            repair,
            cutoff: now - crate::maildir::TMP_MAX_AGE.as_secs() as i64,
            now,
            report: Report {
                root: root.to_path_buf(),
                users: 0,
                folders: Vec::new(),
                problems: Vec::new(),
                foreign: Vec::new(),
                seals: None,
            },
        }
    }

    pub fn into_report(self) -> Report {
        self.report
    }

    /// Every user directory below the root (the dedup store's directory and lost+found
    /// aside), or only `only`'s, walked by up to `threads` threads, one user at a time each;
    /// the findings come out in name order whatever the number of threads. Fails only when
    /// the root cannot be listed.
    pub fn root(&mut self, root_fd: BorrowedFd<'_>, only: Option<&User>, threads: usize) -> nix::Result<()> {
        let mut names = match only {
            Some(u) => vec![u.as_str().as_bytes().to_vec()],
            None => names(root_fd)?.into_iter().filter(|n| n != STORE_DIR.as_bytes() && n != b"lost+found").collect(),
        };
        names.sort();
        let parts = crate::parallel::map(&names, threads, |name| {
            let mut part = self.part();
            part.root_entry(root_fd, name, only.is_some());
            part.report
        });
        for part in parts {
            self.report.users += part.users;
            self.report.folders.extend(part.folders);
            self.report.problems.extend(part.problems);
            self.report.foreign.extend(part.foreign);
        }
        Ok(())
    }

    /// An empty checker with this one's settings, for one user's part of the walk.
    fn part(&self) -> Checker {
        let report = Report {
            root: self.report.root.clone(),
            users: 0,
            folders: Vec::new(),
            problems: Vec::new(),
            foreign: Vec::new(),
            seals: None,
        };
        Checker { repair: self.repair, cutoff: self.cutoff, now: self.now, report }
    }

    /// One name below the root: a user's Maildir, or a finding.
    fn root_entry(&mut self, root_fd: BorrowedFd<'_>, name: &[u8], only: bool) {
        let path = self.report.root.join(OsStr::from_bytes(name));
        let user = String::from_utf8_lossy(name).into_owned();
        if !is_user_name(name) {
            return self.foreign(
                path,
                "",
                "not a user name mailkeep deliver accepts as it is (1 to 64 of a-z 0-9 . - _ + =)",
            );
        }
        match fstatat(root_fd, name, AtFlags::AT_SYMLINK_NOFOLLOW) {
            Ok(st) if file_type(&st) == SFlag::S_IFDIR => {
                self.report.users += 1;
                self.user(root_fd, name, &path, &user, &st);
            }
            Ok(st) if file_type(&st) == SFlag::S_IFLNK => self.found(path, &user, Fault::Symlink),
            // deliver refuses to store for this user (75, retried) until it is a directory
            Ok(_) => self.found(path, &user, Fault::NotA("directory")),
            Err(Errno::ENOENT) if only => self.found(path, &user, Fault::NoSuchUser),
            Err(e) => self.found(path, &user, Fault::Unreadable(e.desc().into())),
        }
    }

    fn foreign(&mut self, path: PathBuf, user: &str, why: impl Into<String>) {
        let user = (!user.is_empty()).then(|| user.to_owned());
        self.report.foreign.push(Foreign { path, user, why: why.into() });
    }

    pub(super) fn found(&mut self, path: PathBuf, user: &str, fault: Fault) {
        self.report.problems.push(Problem {
            path,
            user: (!user.is_empty()).then(|| user.to_owned()),
            fault,
            repair: None,
        });
    }

    fn user(&mut self, root: BorrowedFd<'_>, name: &[u8], path: &Path, user: &str, st: &FileStat) {
        let owner = Owner { uid: st.st_uid, gid: st.st_gid, mode: st.st_mode };
        let denied = !owner.can(st, 7);
        if denied {
            self.found(path.into(), user, owner.denied(st, "list and write"));
        }
        let Some(fd) = self.open(root, name, path, user, denied) else { return };
        let mut subdirs: Vec<Vec<u8>> = match names(fd.as_fd()) {
            Ok(v) => v.into_iter().filter(|n| n.starts_with(b".")).collect(),
            Err(e) => return self.found(path.into(), user, Fault::Unreadable(e.desc().into())),
        };
        subdirs.sort();
        self.folder(fd.as_fd(), path, user, "INBOX", owner, true);
        let mut present = Vec::new();
        for sub in subdirs {
            let fpath = path.join(OsStr::from_bytes(&sub));
            let fname = String::from_utf8_lossy(&sub[1..]).into_owned();
            let kind = FolderKind::FOLDERS.into_iter().find(|k| k.dir().map(str::as_bytes) == Some(&sub[..]));
            let st = match fstatat(fd.as_fd(), &sub[..], AtFlags::AT_SYMLINK_NOFOLLOW) {
                Ok(st) if file_type(&st) == SFlag::S_IFDIR => st,
                Ok(st) if file_type(&st) == SFlag::S_IFLNK && kind.is_some() => {
                    self.found(fpath, user, Fault::Symlink);
                    continue;
                }
                Ok(st) if file_type(&st) == SFlag::S_IFLNK => {
                    self.foreign(fpath, user, "a symlink, not a folder");
                    continue;
                }
                _ => continue, // a dot-file is no folder
            };
            let ffd = match kind {
                Some(_) => {
                    let denied = !owner.can(&st, 7);
                    if denied {
                        self.found(fpath.clone(), user, owner.denied(&st, "list and write"));
                    }
                    let Some(ffd) = self.open(fd.as_fd(), &sub, &fpath, user, denied) else { continue };
                    ffd
                }
                None => match self.marked_folder(fd.as_fd(), &sub, &fpath, user, owner, &st) {
                    Some(ffd) => ffd,
                    None => continue,
                },
            };
            self.folder(ffd.as_fd(), &fpath, user, &fname, owner, false);
            present.extend(kind);
        }
        for kind in present {
            let name = &kind.dir().expect("a Maildir++ folder")[1..];
            self.subscribed(fd.as_fd(), path, user, owner, "subscriptions", name);
            let courier = format!("INBOX.{name}");
            self.subscribed(fd.as_fd(), path, user, owner, "courierimapsubscribed", &courier);
        }
    }

    /// A folder mailkeep did not create is checked only when an IMAP server made it a
    /// Maildir++ folder, with a regular `maildirfolder` file (Dovecot's and Courier's
    /// mark); otherwise it is listed as not mailkeep's. Returns its descriptor to check.
    fn marked_folder(
        &mut self,
        parent: BorrowedFd<'_>,
        name: &[u8],
        path: &Path,
        user: &str,
        owner: Owner,
        st: &FileStat,
    ) -> Option<OwnedFd> {
        let fd = match fsutil::open_dir(parent, name) {
            Ok(fd) => fd,
            Err(e) => {
                self.foreign(path.into(), user, format!("a folder mailkeep did not make ({e})"));
                return None;
            }
        };
        match fsutil::regular_or_missing(fd.as_fd(), "maildirfolder") {
            Ok(true) => {}
            Ok(false) => {
                self.foreign(path.into(), user, "no maildirfolder file: not a Maildir++ folder");
                return None;
            }
            Err(e) => {
                self.foreign(path.into(), user, format!("its maildirfolder {e}: not a Maildir++ folder"));
                return None;
            }
        }
        if !owner.can(st, 7) {
            self.found(path.into(), user, owner.denied(st, "list and write"));
        }
        Some(fd)
    }

    fn folder(&mut self, fd: BorrowedFd<'_>, path: &Path, user: &str, name: &str, owner: Owner, inbox: bool) {
        let mut stats =
            FolderStats { user: user.into(), folder: name.into(), path: path.into(), ..FolderStats::default() };
        let folder_st = fstat(fd).ok();
        for dir in FOLDER_DIRS {
            let dpath = path.join(dir);
            let denied = match fstatat(fd, dir, AtFlags::AT_SYMLINK_NOFOLLOW) {
                Err(Errno::ENOENT) => {
                    let fix = || repair::make_dir(fd, dir, folder_st.as_ref());
                    self.fixable(dpath, user, Fault::MissingDir(dir), fix);
                    continue;
                }
                Err(e) => {
                    self.found(dpath, user, Fault::Unreadable(e.desc().into()));
                    continue;
                }
                Ok(st) if file_type(&st) == SFlag::S_IFLNK => {
                    self.found(dpath, user, Fault::Symlink);
                    continue;
                }
                Ok(st) if file_type(&st) != SFlag::S_IFDIR => {
                    self.found(dpath, user, Fault::NotA("directory"));
                    continue;
                }
                Ok(st) => {
                    let denied = !owner.can(&st, 7);
                    if denied {
                        self.found(dpath.clone(), user, owner.denied(&st, "list and write"));
                    }
                    denied
                }
            };
            let Some(dfd) = self.open(fd, dir.as_bytes(), &dpath, user, denied) else { continue };
            if dir == "tmp" {
                self.tmp(dfd.as_fd(), &dpath, user);
            } else {
                self.messages(dfd.as_fd(), &dpath, user, owner, &mut stats);
            }
        }
        if !inbox {
            let marker = path.join("maildirfolder");
            match fsutil::regular_or_missing(fd, "maildirfolder") {
                Ok(true) => {}
                Ok(false) => {
                    let fix = || repair::make_file(fd, "maildirfolder", b"", folder_st.as_ref());
                    self.fixable(marker, user, Fault::MissingMarker, fix);
                }
                Err(e) => self.found(marker, user, refused(e, "regular file")),
            }
        }
        self.report.folders.push(stats);
    }

    /// new/ or cur/: counts every message and checks its size, readability and line ends.
    /// A message's path is made only for a finding: a million messages are a million
    /// allocations fewer.
    fn messages(&mut self, dir: BorrowedFd<'_>, path: &Path, user: &str, owner: Owner, stats: &mut FolderStats) {
        let Some(entries) = self.entries(dir, path, user) else {
            return;
        };
        let mut head = Vec::with_capacity(HEAD_SCAN);
        for entry in entries.flatten() {
            let name = entry.file_name();
            if name.to_bytes().starts_with(b".") {
                continue;
            }
            let fpath = || path.join(OsStr::from_bytes(name.to_bytes()));
            let (st, file) = match fsutil::open_for_reading(dir, name) {
                Ok(file) => match fstat(file.as_fd()) {
                    Ok(st) => (st, Some(file)),
                    Err(e) => {
                        self.found(fpath(), user, Fault::Unreadable(e.desc().into()));
                        continue;
                    }
                },
                Err(Errno::ENOENT) => continue, // moved to cur/ by a running server meanwhile
                Err(Errno::ELOOP) => {
                    self.found(fpath(), user, Fault::Symlink);
                    continue;
                }
                Err(e) => match fstatat(dir, name, AtFlags::AT_SYMLINK_NOFOLLOW) {
                    Ok(st) => {
                        self.found(fpath(), user, Fault::Unreadable(e.desc().into()));
                        (st, None)
                    }
                    Err(_) => {
                        self.found(fpath(), user, Fault::Unreadable(e.desc().into()));
                        continue;
                    }
                },
            };
            if file_type(&st) != SFlag::S_IFREG {
                self.found(fpath(), user, Fault::NotA("regular file"));
                continue;
            }
            let actual = st.st_size as u64;
            stats.messages += 1;
            stats.bytes += actual;
            stats.oldest = Some(stats.oldest.map_or(st.st_mtime, |t| t.min(st.st_mtime)));
            stats.newest = Some(stats.newest.map_or(st.st_mtime, |t| t.max(st.st_mtime)));
            if let Some(named) = size_in_name(name.to_bytes()).filter(|&n| n != actual) {
                self.found(fpath(), user, Fault::SizeMismatch { named, actual });
            }
            if file.is_some() && !owner.can(&st, 4) {
                self.found(fpath(), user, owner.denied(&st, "read"));
            }
            match file.map(|f| read_head(f, actual, &mut head)) {
                Some(Ok(())) if head.windows(2).any(|w| w == b"\r\n") => self.found(fpath(), user, Fault::Crlf),
                Some(Err(e)) => self.found(fpath(), user, Fault::Unreadable(e.to_string())),
                _ => {}
            }
        }
    }

    /// tmp/: files whose ctime is older than 36 hours are leftovers of failed deliveries.
    fn tmp(&mut self, dir: BorrowedFd<'_>, path: &Path, user: &str) {
        let Some(entries) = self.entries(dir, path, user) else {
            return;
        };
        for entry in entries.flatten() {
            let name = entry.file_name();
            if name.to_bytes().starts_with(b".") {
                continue;
            }
            let Ok(st) = fstatat(dir, name, AtFlags::AT_SYMLINK_NOFOLLOW) else {
                continue;
            };
            if file_type(&st) == SFlag::S_IFREG && st.st_ctime < self.cutoff {
                let hours = (self.now - st.st_ctime) / 3600;
                let fpath = path.join(OsStr::from_bytes(name.to_bytes()));
                let fix = || repair::remove(dir, name);
                self.fixable(fpath, user, Fault::OldTmp { hours }, fix);
            }
        }
    }

    /// Opens a directory below `parent`; a failure is a problem unless the mode bits were
    /// reported as one already.
    fn open(&mut self, parent: BorrowedFd<'_>, name: &[u8], path: &Path, user: &str, denied: bool) -> Option<OwnedFd> {
        match fsutil::open_dir(parent, name) {
            Ok(fd) => Some(fd),
            Err(e) => {
                if !denied {
                    self.found(path.into(), user, refused(e, "directory"));
                }
                None
            }
        }
    }

    /// The entries of a directory (`fsutil::list_dir`); a directory that cannot be listed
    /// is a problem.
    fn entries(
        &mut self,
        dir: BorrowedFd<'_>,
        path: &Path,
        user: &str,
    ) -> Option<impl Iterator<Item = nix::Result<nix::dir::Entry>> + use<>> {
        match fsutil::list_dir(dir) {
            Ok(entries) => Some(entries),
            Err(e) => {
                self.found(path.into(), user, Fault::Unreadable(e.desc().into()));
                None
            }
        }
    }

    /// `line` must be in the user's `file` (Dovecot's or Courier's subscription list).
    fn subscribed(
        &mut self,
        dir: BorrowedFd<'_>,
        path: &Path,
        user: &str,
        owner: Owner,
        file: &'static str,
        line: &str,
    ) {
        let fpath = path.join(file);
        // A FIFO here would block a plain open until something writes to it.
        let current = match fsutil::read_small(dir, file, SMALL_FILE_MAX) {
            Ok(c) => c.unwrap_or_default(),
            Err(e) => return self.found(fpath, user, refused(e, "regular file")),
        };
        let has = |c: &[u8]| c.split(|&b| b == b'\n').any(|l| l.strip_suffix(b"\r").unwrap_or(l) == line.as_bytes());
        if !has(&current) {
            let fault = Fault::Unsubscribed { file, line: line.to_owned() };
            let fix = || repair::add_line(dir, file, current, line, owner.mode);
            self.fixable(fpath, user, fault, fix);
        }
    }

    /// ROOT/.mailkeep/dedup.sqlite3, if there, must pass `PRAGMA integrity_check`. The
    /// store is reached as `deliver` reaches it: its directory opened without following,
    /// its files regular (a symlink or FIFO is a problem, and nothing is opened through it).
    pub fn dedup(&mut self, root_fd: BorrowedFd<'_>) {
        let dir_path = self.report.root.join(STORE_DIR);
        let dir = match fsutil::open_dir(root_fd, STORE_DIR) {
            Ok(fd) => fd,
            Err(OpenError::Missing) => return,
            Err(e) => return self.found(dir_path, "", refused(e, "directory")),
        };
        let mut store_there = false;
        for name in STORE_FILES {
            match fsutil::regular_or_missing(dir.as_fd(), name) {
                Ok(found) => store_there |= found && name == STORE_FILES[0],
                Err(e) => return self.found(dir_path.join(name), "", refused(e, "regular file")),
            }
        }
        if !store_there {
            return;
        }
        if let Err(why) = integrity(dir.as_fd(), &self.report.root) {
            self.found(dir_path.join(STORE_FILES[0]), "", Fault::Dedup(why));
        }
    }
}

/// Opens the store read-only through its directory's descriptor and runs the check. (On a
/// WAL database SQLite may leave empty -wal/-shm files in that directory, which it gives
/// the database file's owner even when run as root.)
fn integrity(dir: BorrowedFd<'_>, root: &Path) -> Result<(), String> {
    use rusqlite::OpenFlags;
    let flags = OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let conn = crate::dedup::connect(dir, root, flags).map_err(|e| match e {
        crate::dedup::DedupError::Sqlite { err, .. } => format!("cannot be opened: {err}"),
        other => other.to_string(),
    })?;
    let mut stmt = conn.prepare("PRAGMA integrity_check").map_err(|e| e.to_string())?;
    let rows: Vec<String> =
        stmt.query_map([], |r| r.get(0)).and_then(|rows| rows.collect()).map_err(|e| e.to_string())?;
    if rows == ["ok"] { Ok(()) } else { Err(rows.join("; ")) }
}

/// The first `HEAD_SCAN` bytes of a message of `size` bytes (by fstat) into `head`. The
/// reads stop once that much is in (or at the end of the file): one read system call for a
/// message that does not change meanwhile, where reading to the end of a short file took two.
fn read_head(file: std::fs::File, size: u64, head: &mut Vec<u8>) -> std::io::Result<()> {
    head.clear();
    let want = size.min(HEAD_SCAN as u64) as usize;
    let mut limited = file.take(HEAD_SCAN as u64);
    while head.len() < want.max(1) {
        let had = head.len();
        head.resize(HEAD_SCAN, 0);
        match limited.read(&mut head[had..]) {
            Ok(0) => {
                head.truncate(had);
                break;
            }
            Ok(n) => head.truncate(had + n),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => head.truncate(had),
            Err(e) => {
                head.truncate(had);
                return Err(e);
            }
        }
    }
    Ok(())
}

/// The names in a directory (`fsutil::list_dir`).
fn names(dir: BorrowedFd<'_>) -> nix::Result<Vec<Vec<u8>>> {
    fsutil::list_dir(dir)?.map(|e| e.map(|e| e.file_name().to_bytes().to_vec())).collect()
}

/// The `,S=<size>` of a Maildir file name, read as Dovecot does: the first `,S=` whose
/// digits end at `:`, `,` or the end of the name.
pub fn size_in_name(name: &[u8]) -> Option<u64> {
    let at = name.windows(3).position(|w| w == b",S=")? + 3;
    let rest = &name[at..];
    let end = rest.iter().position(|b| !b.is_ascii_digit()).unwrap_or(rest.len());
    if end == 0 || end > 19 || !matches!(rest.get(end), None | Some(b':') | Some(b',')) {
        return None;
    }
    std::str::from_utf8(&rest[..end]).ok()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn size_in_name_reads_like_dovecot() {
        assert_eq!(size_in_name(b"1.M2P3Q4.host,S=123"), Some(123));
        assert_eq!(size_in_name(b"1.M2P3.host,S=5,W=7:2,S"), Some(5));
        assert_eq!(size_in_name(b"1.M2P3.host,S=5:2,FS"), Some(5));
        assert_eq!(size_in_name(b"1.M2P3.host"), None);
        assert_eq!(size_in_name(b"1.host,S=12x"), None);
        assert_eq!(size_in_name(b"1.host,S="), None);
    }
}
