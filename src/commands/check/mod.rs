//! `mailkeep check`: proves the backup is whole and servable by Dovecot and Courier before
//! anybody needs it, and with `--repair` fixes what is safe to fix.
//!
//! One pass over the tree. Per message: one open, one fstat and one read of at most
//! `HEAD_SCAN` bytes, never more of a message, so a million files cost a few million system
//! calls and no body reads. The trade-offs:
//! - `,S=` is compared with the size from fstat (Dovecot trusts it; Courier ignores it).
//! - CRLF is looked for in the first 4 KiB only. mailkeep itself never stores CRLF; a file
//!   another tool wrote with CRLF has it on its first header line already. A file that turns
//!   to CRLF only after 4 KiB is not reported. `,W=` is not checked (it needs the whole file,
//!   and Dovecot renames a wrong one away by itself).
//! - "Unreadable" means: the check cannot open it, or its mode bits do not let the uid owning
//!   the user's Maildir (the uid IMAP serves as) read it (directories: rwx). The check is often
//!   run as root, who can open anything. Supplementary groups of that uid are not looked up;
//!   the group of the user's Maildir stands in for the shared group.
//! - A tmp/ file is old when its inode changed (ctime) more than 36 h ago, the same rule as
//!   the writer's own sweep: mtime would not do, replay stages files with old mtimes on purpose.
//! - Subscriptions are required for the folders mailkeep writes, `.Sent` and `.Chats`.
//! - Only what mailkeep would have made is checked and repaired: user directories named as
//!   `deliver` names them (what `User::parse` accepts and returns unchanged), the folders
//!   it creates, and folders an IMAP server marked with a regular `maildirfolder` file.
//!   Anything else is listed as not mailkeep's and never touched.
//! - Nothing is followed through a symlink and no FIFO is opened for reading: a symlink or
//!   FIFO where mailkeep keeps a directory or a small file (the dedup store included) is a
//!   problem, as `deliver` refuses it too.

use std::ffi::{CStr, OsStr};
use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::{AtFlags, OFlag, openat};
use nix::sys::stat::{FileStat, Mode, SFlag, fchmod, fstat, fstatat, mkdirat};
use nix::unistd::{Gid, Uid, UnlinkatFlags, fchown, unlinkat};

use crate::cli::{CheckArgs, UsageError};
use crate::commands::Error;
use crate::envelope::User;
use crate::exit::{Classify, Exit};
use crate::fsutil::{self, OpenError, file_type};
use crate::maildir::FolderKind;
use crate::time::format_time;

/// How much of each message is read to look for CRLF.
pub const HEAD_SCAN: usize = 4096;
/// The Maildir subdirectories, in the order a repair creates them (new/ last, as deliver does).
const FOLDER_DIRS: [&str; 3] = ["cur", "tmp", "new"];
/// Subscription lists are read up to this size.
const SMALL_FILE_MAX: u64 = 1 << 20;

#[derive(Debug, thiserror::Error)]
pub enum CheckError {
    #[error("cannot read backup root {}: {err}", path.display())]
    Root { path: PathBuf, err: io::Error },
    #[error("cannot write the report: {0}")]
    Output(io::Error),
}

impl Classify for CheckError {
    fn exit(&self) -> Exit {
        match self {
            // A root that is not there is the admin's to fix; anything else may pass.
            CheckError::Root { err, .. }
                if matches!(err.kind(), io::ErrorKind::NotFound | io::ErrorKind::NotADirectory) =>
            {
                Exit::Config
            }
            CheckError::Root { .. } | CheckError::Output(_) => Exit::TempFail,
        }
    }
}

/// What is wrong with one path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fault {
    SizeMismatch { named: u64, actual: u64 },
    Crlf,
    OldTmp { hours: i64 },
    Unreadable(String),
    Symlink,
    NotA(&'static str),
    MissingDir(&'static str),
    MissingMarker,
    Unsubscribed { file: &'static str, line: String },
    NoSuchUser,
    Dedup(String),
}

impl Fault {
    pub fn kind(&self) -> &'static str {
        match self {
            Fault::SizeMismatch { .. } => "size_mismatch",
            Fault::Crlf => "crlf",
            Fault::OldTmp { .. } => "old_tmp",
            Fault::Unreadable(_) => "unreadable",
            Fault::Symlink => "symlink",
            Fault::NotA(_) => "wrong_type",
            Fault::MissingDir(_) => "missing_dir",
            Fault::MissingMarker => "missing_maildirfolder",
            Fault::Unsubscribed { .. } => "unsubscribed",
            Fault::NoSuchUser => "no_such_user",
            Fault::Dedup(_) => "dedup_corrupt",
        }
    }
}

impl std::fmt::Display for Fault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Fault::SizeMismatch { named, actual } => {
                write!(f, "name says ,S={named} but the file has {actual} bytes: Dovecot fails to fetch it")
            }
            Fault::Crlf => f.write_str("CRLF line ends: Courier serves them as CR CR LF"),
            Fault::OldTmp { hours } => write!(f, "unfinished delivery left in tmp/ {hours} h ago"),
            Fault::Unreadable(why) => write!(f, "unreadable: {why}"),
            Fault::Symlink => f.write_str("is a symlink: mailkeep refuses to follow symlinks below the root"),
            Fault::NotA(what) => write!(f, "is not a {what}"),
            Fault::MissingDir(d) => write!(f, "missing {d}/: IMAP servers cannot open the folder"),
            Fault::MissingMarker => f.write_str("missing maildirfolder (Courier expects it)"),
            Fault::Unsubscribed { file, line } => {
                write!(f, "no line {line:?} in {file}: LSUB does not show the folder")
            }
            Fault::NoSuchUser => f.write_str("no such user directory"),
            Fault::Dedup(why) => write!(f, "dedup store fails SQLite's integrity check: {why}"),
        }
    }
}

/// Something below the root that mailkeep did not make, left alone by check and repair.
#[derive(Debug)]
pub struct Foreign {
    pub path: PathBuf,
    pub user: Option<String>,
    pub why: String,
}

/// One finding, and what `--repair` did about it.
#[derive(Debug)]
pub struct Problem {
    pub path: PathBuf,
    pub user: Option<String>,
    pub fault: Fault,
    /// `Ok(what was done)` or `Err(why the repair failed)`; `None` when not attempted.
    pub repair: Option<Result<String, String>>,
}

/// Counts for one folder of one user; dates are mtimes (IMAP's INTERNALDATE).
#[derive(Debug, Default)]
pub struct FolderStats {
    pub user: String,
    pub folder: String,
    pub path: PathBuf,
    pub messages: u64,
    pub bytes: u64,
    pub oldest: Option<i64>,
    pub newest: Option<i64>,
}

#[derive(Debug)]
pub struct Report {
    pub root: PathBuf,
    pub users: usize,
    pub folders: Vec<FolderStats>,
    pub problems: Vec<Problem>,
    /// What is not mailkeep's: listed, never checked or changed, no problem.
    pub foreign: Vec<Foreign>,
}

impl Report {
    /// Problems left after repairs; 0 means the backup is clean.
    pub fn unrepaired(&self) -> usize {
        let fixed = |p: &&Problem| matches!(p.repair, Some(Ok(_)));
        self.problems.len() - self.problems.iter().filter(fixed).count()
    }
}

pub fn run(args: &CheckArgs) -> Result<Exit, Error> {
    let only = match &args.user {
        Some(u) => Some(User::parse(u).map_err(|e| UsageError(e.to_string()))?),
        None => None,
    };
    let report = check(&args.root, only.as_ref(), args.repair, crate::time::now())?;
    let mut out = io::stdout().lock();
    let written = if args.json { write_json(&report, &mut out) } else { write_text(&report, &mut out) };
    written.and_then(|()| out.flush()).map_err(CheckError::Output)?;
    Ok(if report.unrepaired() == 0 { Exit::Ok } else { Exit::Problems })
}

/// Checks (and with `repair` fixes) the backup below `root`; `now` decides tmp/ ages.
pub fn check(root: &Path, only: Option<&User>, repair: bool, now: i64) -> Result<Report, CheckError> {
    let root_err = |e: Errno| CheckError::Root { path: root.to_path_buf(), err: e.into() };
    let flags = OFlag::O_DIRECTORY | OFlag::O_RDONLY | OFlag::O_CLOEXEC;
    let root_fd = nix::fcntl::open(root, flags, Mode::empty()).map_err(root_err)?;
    let mut names = match only {
        Some(u) => vec![u.as_str().as_bytes().to_vec()],
        None => list(root_fd.as_fd())
            .map_err(root_err)?
            .into_iter()
            .filter(|n| n != STORE_DIR.as_bytes() && n != b"lost+found")
            .collect(),
    };
    names.sort();
    let mut c = Checker {
        repair,
        cutoff: now - crate::maildir::TMP_MAX_AGE.as_secs() as i64,
        now,
        report: Report {
            root: root.to_path_buf(),
            users: 0,
            folders: Vec::new(),
            problems: Vec::new(),
            foreign: Vec::new(),
        },
    };
    for name in names {
        let path = root.join(OsStr::from_bytes(&name));
        let user = String::from_utf8_lossy(&name).into_owned();
        if !is_user_name(&name) {
            c.foreign(path, "", "not a user name mailkeep deliver accepts as it is (1 to 64 of a-z 0-9 . - _ + =)");
            continue;
        }
        match fstatat(root_fd.as_fd(), &name[..], AtFlags::AT_SYMLINK_NOFOLLOW) {
            Ok(st) if file_type(&st) == SFlag::S_IFDIR => {
                c.report.users += 1;
                c.user(root_fd.as_fd(), &name, &path, &user, &st);
            }
            Ok(st) if file_type(&st) == SFlag::S_IFLNK => c.found(path, &user, Fault::Symlink),
            // deliver refuses to store for this user (73) until it is a directory
            Ok(_) => c.found(path, &user, Fault::NotA("directory")),
            Err(Errno::ENOENT) if only.is_some() => c.found(path, &user, Fault::NoSuchUser),
            Err(e) => c.found(path, &user, Fault::Unreadable(e.desc().into())),
        }
    }
    c.dedup(root_fd.as_fd(), root);
    Ok(c.report)
}

/// The dedup store's directory below the root, and its files.
const STORE_DIR: &str = ".mailkeep";
const STORE_FILES: [&str; 3] = ["dedup.sqlite3", "dedup.sqlite3-wal", "dedup.sqlite3-shm"];

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

struct Checker {
    repair: bool,
    cutoff: i64,
    now: i64,
    report: Report,
}

impl Checker {
    fn foreign(&mut self, path: PathBuf, user: &str, why: impl Into<String>) {
        let user = (!user.is_empty()).then(|| user.to_owned());
        self.report.foreign.push(Foreign { path, user, why: why.into() });
    }

    fn found(&mut self, path: PathBuf, user: &str, fault: Fault) {
        self.report.problems.push(Problem {
            path,
            user: (!user.is_empty()).then(|| user.to_owned()),
            fault,
            repair: None,
        });
    }

    /// Records a problem that `--repair` may fix with `fix`, which says what it did.
    fn fixable(&mut self, path: PathBuf, user: &str, fault: Fault, fix: impl FnOnce() -> Result<String, Errno>) {
        self.found(path, user, fault);
        if self.repair {
            let done = fix().map_err(|e| e.desc().to_owned());
            self.report.problems.last_mut().expect("just pushed").repair = Some(done);
        }
    }

    fn user(&mut self, root: BorrowedFd<'_>, name: &[u8], path: &Path, user: &str, st: &FileStat) {
        let owner = Owner { uid: st.st_uid, gid: st.st_gid, mode: st.st_mode };
        let denied = !owner.can(st, 7);
        if denied {
            self.found(path.into(), user, owner.denied(st, "list and write"));
        }
        let Some(fd) = self.open(root, name, path, user, denied) else { return };
        let mut subdirs: Vec<Vec<u8>> = match list(fd.as_fd()) {
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
                    let fix = || make_dir(fd, dir, folder_st.as_ref());
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
                    let fix = || make_file(fd, "maildirfolder", b"", folder_st.as_ref());
                    self.fixable(marker, user, Fault::MissingMarker, fix);
                }
                Err(e) => self.found(marker, user, refused(e, "regular file")),
            }
        }
        self.report.folders.push(stats);
    }

    /// new/ or cur/: counts every message and checks its size, readability and line ends.
    fn messages(&mut self, dir: BorrowedFd<'_>, path: &Path, user: &str, owner: Owner, stats: &mut FolderStats) {
        let Some(mut entries) = self.entries(dir, path, user) else {
            return;
        };
        let mut head = vec![0u8; HEAD_SCAN];
        for entry in entries.iter().flatten() {
            let name = entry.file_name();
            if name.to_bytes().starts_with(b".") {
                continue;
            }
            let fpath = path.join(OsStr::from_bytes(name.to_bytes()));
            let (st, file) = match open_file(dir, name) {
                Ok(file) => match fstat(file.as_fd()) {
                    Ok(st) => (st, Some(file)),
                    Err(e) => {
                        self.found(fpath, user, Fault::Unreadable(e.desc().into()));
                        continue;
                    }
                },
                Err(Errno::ENOENT) => continue, // moved to cur/ by a running server meanwhile
                Err(Errno::ELOOP) => {
                    self.found(fpath, user, Fault::Symlink);
                    continue;
                }
                Err(e) => match fstatat(dir, name, AtFlags::AT_SYMLINK_NOFOLLOW) {
                    Ok(st) => {
                        self.found(fpath.clone(), user, Fault::Unreadable(e.desc().into()));
                        (st, None)
                    }
                    Err(_) => {
                        self.found(fpath, user, Fault::Unreadable(e.desc().into()));
                        continue;
                    }
                },
            };
            if file_type(&st) != SFlag::S_IFREG {
                self.found(fpath, user, Fault::NotA("regular file"));
                continue;
            }
            let actual = st.st_size as u64;
            stats.messages += 1;
            stats.bytes += actual;
            stats.oldest = Some(stats.oldest.map_or(st.st_mtime, |t| t.min(st.st_mtime)));
            stats.newest = Some(stats.newest.map_or(st.st_mtime, |t| t.max(st.st_mtime)));
            if let Some(named) = size_in_name(name.to_bytes()).filter(|&n| n != actual) {
                self.found(fpath.clone(), user, Fault::SizeMismatch { named, actual });
            }
            if file.is_some() && !owner.can(&st, 4) {
                self.found(fpath.clone(), user, owner.denied(&st, "read"));
            }
            match file.map(|f| read_head(f, &mut head)) {
                Some(Ok(n)) if head[..n].windows(2).any(|w| w == b"\r\n") => self.found(fpath, user, Fault::Crlf),
                Some(Err(e)) => self.found(fpath, user, Fault::Unreadable(e.to_string())),
                _ => {}
            }
        }
    }

    /// tmp/: files whose ctime is older than 36 hours are leftovers of failed deliveries.
    fn tmp(&mut self, dir: BorrowedFd<'_>, path: &Path, user: &str) {
        let Some(mut entries) = self.entries(dir, path, user) else {
            return;
        };
        for entry in entries.iter().flatten() {
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
                let fix = || unlinkat(dir, name, UnlinkatFlags::NoRemoveDir).map(|()| "removed".into());
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

    /// Iterates a directory through its own descriptor, so `dir` stays usable for openat.
    fn entries(&mut self, dir: BorrowedFd<'_>, path: &Path, user: &str) -> Option<nix::dir::Dir> {
        let listed = dir.try_clone_to_owned().map_err(errno).and_then(nix::dir::Dir::from_fd);
        match listed {
            Ok(d) => Some(d),
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
            let fix = || add_line(dir, file, current, line, owner);
            self.fixable(fpath, user, fault, fix);
        }
    }

    /// ROOT/.mailkeep/dedup.sqlite3, if there, must pass `PRAGMA integrity_check`. The
    /// store is reached as `deliver` reaches it: its directory opened without following,
    /// its files regular (a symlink or FIFO is a problem, and nothing is opened through it).
    fn dedup(&mut self, root_fd: BorrowedFd<'_>, root: &Path) {
        let dir_path = root.join(STORE_DIR);
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
        if let Err(why) = integrity(dir.as_fd(), root) {
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
        crate::dedup::DedupError::Sqlite { err, .. } => err.to_string(),
        other => other.to_string(),
    })?;
    let mut stmt = conn.prepare("PRAGMA integrity_check").map_err(|e| e.to_string())?;
    let rows: Vec<String> =
        stmt.query_map([], |r| r.get(0)).and_then(|rows| rows.collect()).map_err(|e| e.to_string())?;
    if rows == ["ok"] { Ok(()) } else { Err(rows.join("; ")) }
}

/// Opens a message without following a symlink, without blocking on a FIFO and, when
/// allowed, without touching its atime.
fn open_file(dir: BorrowedFd<'_>, name: &CStr) -> nix::Result<File> {
    let flags = OFlag::O_RDONLY | OFlag::O_NOFOLLOW | OFlag::O_NONBLOCK | OFlag::O_CLOEXEC;
    match openat(dir, name, flags | OFlag::O_NOATIME, Mode::empty()) {
        Err(Errno::EPERM) => openat(dir, name, flags, Mode::empty()),
        other => other,
    }
    .map(File::from)
}

fn read_head(mut file: File, buf: &mut [u8]) -> io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match file.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

/// The names in a directory, without `.` and `..`.
fn list(dir: BorrowedFd<'_>) -> nix::Result<Vec<Vec<u8>>> {
    let fd = dir.try_clone_to_owned().map_err(errno)?;
    let mut d = nix::dir::Dir::from_fd(fd)?;
    let mut names = Vec::new();
    for entry in d.iter() {
        let name = entry?.file_name().to_bytes().to_vec();
        if name != b"." && name != b".." {
            names.push(name);
        }
    }
    Ok(names)
}

fn errno(e: io::Error) -> Errno {
    Errno::from_raw(e.raw_os_error().unwrap_or(libc::EIO))
}

/// Gives what a repair creates the owner (and permission bits) of the folder it is in, so
/// a repair run as root does not leave files the IMAP server cannot change.
fn adopt(fd: BorrowedFd<'_>, like: Option<&FileStat>, mode: u32) -> nix::Result<()> {
    let Some(st) = like else { return Ok(()) };
    let mine = fstat(fd)?;
    if mine.st_uid != st.st_uid || mine.st_gid != st.st_gid {
        let (uid, gid) = (Uid::from_raw(st.st_uid), Gid::from_raw(st.st_gid));
        fchown(fd, Some(uid), Some(gid))?;
    }
    fchmod(fd, Mode::from_bits_truncate(mode))
}

fn make_dir(parent: BorrowedFd<'_>, name: &str, like: Option<&FileStat>) -> nix::Result<String> {
    let mode = like.map_or(0o700, |st| st.st_mode & 0o7777);
    mkdirat(parent, name, Mode::from_bits_truncate(mode))?;
    let fd = fsutil::open_dir(parent, name).map_err(OpenError::errno)?;
    adopt(fd.as_fd(), like, mode)?;
    nix::unistd::fsync(parent)?;
    Ok(format!("created {name}/"))
}

/// Writes `data` as `name` atomically (temp file, fsync, rename, fsync the directory),
/// owned like `like` with its read and write bits.
fn make_file(dir: BorrowedFd<'_>, name: &str, data: &[u8], like: Option<&FileStat>) -> nix::Result<String> {
    let mode = like.map_or(0o600, |st| st.st_mode & 0o666);
    let tmp = format!(".{name}.check.{}", std::process::id());
    let flags = OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_WRONLY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
    let create = || openat(dir, tmp.as_str(), flags, Mode::from_bits_truncate(mode));
    let fd = match create() {
        // a leftover of a repair that died with the same pid: never ours to write through
        Err(Errno::EEXIST) => unlinkat(dir, tmp.as_str(), UnlinkatFlags::NoRemoveDir).and_then(|()| create())?,
        other => other?,
    };
    let mut file = File::from(fd);
    let written = adopt(file.as_fd(), like, mode).and_then(|()| {
        let io = file.write_all(data).and_then(|()| file.sync_all());
        io.map_err(errno)
    });
    let renamed = written.and_then(|()| nix::fcntl::renameat(dir, tmp.as_str(), dir, name));
    if let Err(e) = renamed {
        let _ = unlinkat(dir, tmp.as_str(), UnlinkatFlags::NoRemoveDir);
        return Err(e);
    }
    nix::unistd::fsync(dir)?;
    Ok(format!("wrote {name}"))
}

fn add_line(dir: BorrowedFd<'_>, name: &str, mut current: Vec<u8>, line: &str, owner: Owner) -> nix::Result<String> {
    if !current.is_empty() && !current.ends_with(b"\n") {
        current.push(b'\n');
    }
    current.extend_from_slice(line.as_bytes());
    current.push(b'\n');
    let like = match fstatat(dir, name, AtFlags::AT_SYMLINK_NOFOLLOW) {
        Ok(st) => st,
        Err(_) => {
            let mut st = fstat(dir)?;
            st.st_mode = owner.mode & 0o660;
            st
        }
    };
    make_file(dir, name, &current, Some(&like)).map(|_| format!("added {line:?} to {name}"))
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

fn write_text(r: &Report, out: &mut impl Write) -> io::Result<()> {
    // Names below the root are anybody's: each line is escaped (`log::escape`).
    for f in &r.folders {
        let mut line = format!("{}/{}: {} messages, {} bytes", f.user, f.folder, f.messages, f.bytes);
        if let (Some(a), Some(b)) = (f.oldest, f.newest) {
            line.push_str(&format!(", {} .. {}", format_time(a), format_time(b)));
        }
        writeln!(out, "{}", crate::log::escape(&line))?;
    }
    for f in &r.foreign {
        writeln!(out, "not mailkeep's: {}: {}; left alone", f.path.display(), f.why)?;
    }
    for p in &r.problems {
        let path = p.path.display();
        let line = match &p.repair {
            Some(Ok(done)) => format!("repaired: {path}: {}; {done}", p.fault),
            Some(Err(why)) => format!("problem: {path}: {} (repair failed: {why})", p.fault),
            None => format!("problem: {path}: {}", p.fault),
        };
        writeln!(out, "{}", crate::log::escape(&line))?;
    }
    let (messages, bytes) = totals(r);
    let left = r.unrepaired();
    let fixed = r.problems.len() - left;
    write!(out, "{} users, {} folders, {messages} messages, {bytes} bytes: ", r.users, r.folders.len())?;
    match (left, fixed) {
        (0, 0) => writeln!(out, "clean"),
        (_, 0) => writeln!(out, "{left} problems"),
        _ => writeln!(out, "{left} problems, {fixed} repaired"),
    }
}

fn totals(r: &Report) -> (u64, u64) {
    r.folders.iter().fold((0, 0), |(m, b), f| (m + f.messages, b + f.bytes))
}

/// A JSON string literal (paths that are not UTF-8 are shown lossily).
fn js(s: &str) -> String {
    let mut o = String::with_capacity(s.len() + 2);
    o.push('"');
    for c in s.chars() {
        match c {
            '"' => o.push_str("\\\""),
            '\\' => o.push_str("\\\\"),
            c if (c as u32) < 0x20 => o.push_str(&format!("\\u{:04x}", c as u32)),
            c => o.push(c),
        }
    }
    o.push('"');
    o
}

fn jp(p: &Path) -> String {
    js(&p.to_string_lossy())
}

fn jopt(t: Option<i64>) -> String {
    t.map_or("null".into(), |t| js(&format_time(t)))
}

fn write_json(r: &Report, out: &mut impl Write) -> io::Result<()> {
    writeln!(out, "{{\"root\": {},\n \"folders\": [", jp(&r.root))?;
    for (i, f) in r.folders.iter().enumerate() {
        let sep = if i + 1 < r.folders.len() { "," } else { "" };
        writeln!(
            out,
            "  {{\"user\": {}, \"folder\": {}, \"path\": {}, \"messages\": {}, \"bytes\": {}, \
             \"oldest\": {}, \"newest\": {}}}{sep}",
            js(&f.user),
            js(&f.folder),
            jp(&f.path),
            f.messages,
            f.bytes,
            jopt(f.oldest),
            jopt(f.newest)
        )?;
    }
    writeln!(out, " ],\n \"problems\": [")?;
    for (i, p) in r.problems.iter().enumerate() {
        let sep = if i + 1 < r.problems.len() { "," } else { "" };
        let (repaired, failed) = match &p.repair {
            Some(Ok(d)) => (js(d), "null".into()),
            Some(Err(e)) => ("null".into(), js(e)),
            None => ("null".into(), "null".into()),
        };
        writeln!(
            out,
            "  {{\"path\": {}, \"user\": {}, \"kind\": {}, \"message\": {}, \"repaired\": {repaired}, \
             \"repair_failed\": {failed}}}{sep}",
            jp(&p.path),
            p.user.as_deref().map_or("null".into(), js),
            js(p.fault.kind()),
            js(&p.fault.to_string()),
        )?;
    }
    writeln!(out, " ],\n \"foreign\": [")?;
    for (i, f) in r.foreign.iter().enumerate() {
        let sep = if i + 1 < r.foreign.len() { "," } else { "" };
        let user = f.user.as_deref().map_or("null".into(), js);
        writeln!(out, "  {{\"path\": {}, \"user\": {user}, \"why\": {}}}{sep}", jp(&f.path), js(&f.why))?;
    }
    let (messages, bytes) = totals(r);
    writeln!(
        out,
        " ],\n \"users\": {}, \"messages\": {messages}, \"bytes\": {bytes}, \"unrepaired\": {}}}",
        r.users,
        r.unrepaired()
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    fn maildir(root: &Path, user: &str) -> PathBuf {
        let u = root.join(user);
        for d in ["", ".Sent"] {
            for s in FOLDER_DIRS {
                fs::create_dir_all(u.join(d).join(s)).unwrap();
            }
        }
        fs::write(u.join(".Sent/maildirfolder"), "").unwrap();
        fs::write(u.join("subscriptions"), "Sent\n").unwrap();
        fs::write(u.join("courierimapsubscribed"), "INBOX.Sent\n").unwrap();
        fs::write(u.join("new/1.M1P1Q1.h,S=6"), "hello\n").unwrap();
        fs::write(u.join(".Sent/cur/2.M1P1Q1.h,S=3:2,S"), "a\nb").unwrap();
        u
    }

    fn kinds(r: &Report) -> Vec<&'static str> {
        r.problems.iter().map(|p| p.fault.kind()).collect()
    }

    #[test]
    fn size_in_name_reads_like_dovecot() {
        assert_eq!(size_in_name(b"1.M2P3Q4.host,S=123"), Some(123));
        assert_eq!(size_in_name(b"1.M2P3.host,S=5,W=7:2,S"), Some(5));
        assert_eq!(size_in_name(b"1.M2P3.host,S=5:2,FS"), Some(5));
        assert_eq!(size_in_name(b"1.M2P3.host"), None);
        assert_eq!(size_in_name(b"1.host,S=12x"), None);
        assert_eq!(size_in_name(b"1.host,S="), None);
    }

    #[test]
    fn clean_maildir_has_no_problems_and_counts_messages() {
        let root = tempfile::tempdir().unwrap();
        maildir(root.path(), "alice");
        fs::create_dir(root.path().join(".mailkeep")).unwrap();
        let r = check(root.path(), None, false, crate::time::now()).unwrap();
        assert!(r.problems.is_empty(), "{:?}", r.problems);
        assert_eq!(r.users, 1);
        let counts: Vec<_> = r.folders.iter().map(|f| (&f.folder[..], f.messages, f.bytes)).collect();
        assert_eq!(counts, [("INBOX", 1, 6), ("Sent", 1, 3)]);
    }

    #[test]
    fn finds_each_fault_and_repairs_the_safe_ones() {
        let root = tempfile::tempdir().unwrap();
        let u = maildir(root.path(), "bob");
        fs::write(u.join("new/3.M1P1Q1.h,S=99"), "short\n").unwrap();
        fs::write(u.join("cur/4.M1P1Q1.h,S=8:2,"), "a: b\r\n\r\n").unwrap();
        let old = u.join("tmp/5.M1P1Q1.h");
        fs::write(&old, "x").unwrap();
        let old_ctime = std::os::unix::fs::MetadataExt::ctime(&fs::metadata(&old).unwrap());
        std::thread::sleep(std::time::Duration::from_millis(2100));
        fs::write(u.join("tmp/6.M1P1Q1.h"), "fresh").unwrap(); // 2 s younger
        // "now" is just over 36 h after the first file's ctime, before the second's.
        let just_past_36h = old_ctime + 36 * 3600 + 1;
        fs::remove_dir_all(u.join(".Sent/cur")).unwrap();
        fs::remove_file(u.join("courierimapsubscribed")).unwrap();
        fs::remove_file(u.join(".Sent/maildirfolder")).unwrap();
        let r = check(root.path(), None, false, just_past_36h).unwrap();
        let mut k = kinds(&r);
        k.sort();
        assert_eq!(k, ["crlf", "missing_dir", "missing_maildirfolder", "old_tmp", "size_mismatch", "unsubscribed"]);
        assert_eq!(r.unrepaired(), 6);
        let fixed = check(root.path(), None, true, just_past_36h).unwrap();
        assert_eq!(fixed.unrepaired(), 2, "{:?}", fixed.problems);
        assert!(u.join(".Sent/cur").is_dir() && !old.exists());
        assert_eq!(fs::read_to_string(u.join("courierimapsubscribed")).unwrap(), "INBOX.Sent\n");
        let again = check(root.path(), None, false, just_past_36h).unwrap();
        let mut k = kinds(&again);
        k.sort();
        assert_eq!(k, ["crlf", "size_mismatch"]);
    }

    #[test]
    fn corrupt_dedup_store_is_reported() {
        let root = tempfile::tempdir().unwrap();
        fs::create_dir(root.path().join(".mailkeep")).unwrap();
        let db = root.path().join(".mailkeep/dedup.sqlite3");
        rusqlite::Connection::open(&db).unwrap().execute_batch("CREATE TABLE t(a); INSERT INTO t VALUES (1);").unwrap();
        assert!(check(root.path(), None, false, crate::time::now()).unwrap().problems.is_empty());
        let mut bytes = fs::read(&db).unwrap();
        bytes[100..600].fill(0xAB);
        fs::write(&db, bytes).unwrap();
        let r = check(root.path(), None, false, crate::time::now()).unwrap();
        assert_eq!(kinds(&r), ["dedup_corrupt"]);
    }

    #[test]
    fn missing_user_and_missing_root_are_told_apart() {
        let root = tempfile::tempdir().unwrap();
        let nobody = User::parse(OsStr::new("nobody")).unwrap();
        let r = check(root.path(), Some(&nobody), false, crate::time::now()).unwrap();
        assert_eq!(kinds(&r), ["no_such_user"]);
        let gone = root.path().join("gone");
        assert!(matches!(check(&gone, None, false, crate::time::now()), Err(CheckError::Root { .. })));
    }

    #[test]
    fn mode_bits_are_judged_for_the_maildir_owner() {
        let root = tempfile::tempdir().unwrap();
        let u = maildir(root.path(), "carol");
        let f = u.join("new/1.M1P1Q1.h,S=6");
        use std::os::unix::fs::PermissionsExt;
        fs::set_permissions(&f, fs::Permissions::from_mode(0o000)).unwrap();
        let r = check(root.path(), None, false, crate::time::now()).unwrap();
        assert_eq!(kinds(&r), ["unreadable"], "{:?}", r.problems);
    }

    #[test]
    fn json_escapes_strings() {
        assert_eq!(js("a\"b\\c\nd"), "\"a\\\"b\\\\c\\u000ad\"");
    }
}
