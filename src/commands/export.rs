//! `mailkeep export`: a user's mail out of the backup again, as one mboxrd file (to hand a
//! departing user their mail, for Gmail-style importers, for `replay` into another root) or
//! as a fresh Maildir with Maildir++ folders (for another IMAP server, `mbsync`, a mail
//! client).
//!
//! Read-only on the backup: every directory is opened without following a symlink, every
//! message with `fsutil::open_regular` (a FIFO or a symlink planted in new/ is skipped with
//! a note, never waited on). Messages go out folder by folder (INBOX, Sent, Chats), each in
//! INTERNALDATE order (the file's mtime, then its name), streamed in 64 KiB pieces: memory
//! holds one list entry per message, never a message. A file an IMAP server renamed
//! meanwhile (new/ to cur/, a flag change) is found again in cur/; one expunged is skipped
//! with a note. An mbox named with --out is written into a temp file beside it and renamed
//! into place once whole and fsynced: no half export ever has the final name.

use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::io::{self, BufWriter, IsTerminal, Read, Write};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::{AT_FDCWD, AtFlags, OFlag, openat};
use nix::sys::stat::{FileStat, Mode, SFlag, fstat, fstatat, futimens};
use nix::sys::time::TimeSpec;
use nix::unistd::linkat;

use crate::cli::{ExportArgs, ExportFolder, ExportFormat, UsageError};
use crate::commands::Error;
use crate::envelope::{Sender, User};
use crate::exit::{Classify, Exit};
use crate::fsutil::{self, OpenError};
use crate::maildir::{self, FolderKind, Sub};
use crate::mbox::MboxrdWriter;
use crate::message::{ExportLabel, HeaderInfo, Stamp, header_part, holds_header_part};
use crate::time::{Timestamp, parse_day};

const PIECE: usize = 64 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    #[error("{}: no backup of user {user} there (no directory {})", root.display(), root.join(user).display())]
    NoUser { root: PathBuf, user: String },
    #[error("refusing {}: {why}", path.display())]
    Refused { path: PathBuf, why: &'static str },
    #[error("{} exists; give --force to replace it (or add to a Maildir)", .0.display())]
    OutExists(PathBuf),
    #[error("cannot read {}: {err}", path.display())]
    Read { path: PathBuf, err: io::Error },
    #[error("cannot write {}: {err}", path.display())]
    Write { path: PathBuf, err: io::Error },
}

impl Classify for ExportError {
    fn exit(&self) -> Exit {
        match self {
            ExportError::NoUser { .. } => Exit::NoUser,
            ExportError::Refused { .. } => Exit::CantCreate,
            ExportError::OutExists(_) => Exit::Usage,
            // A directory for --out that is not there, or not ours: the admin's to fix.
            ExportError::Write { err, .. }
                if matches!(err.kind(), io::ErrorKind::NotFound | io::ErrorKind::PermissionDenied) =>
            {
                Exit::CantCreate
            }
            ExportError::Read { .. } | ExportError::Write { .. } => Exit::TempFail,
        }
    }
}

/// One message file to export, as listed.
struct Entry {
    sub: Sub,
    name: OsString,
    mtime: Timestamp,
    mtime_ns: i64,
}

/// An open folder of the backup: its path and its new/ and cur/ (None when missing).
struct SourceFolder {
    kind: FolderKind,
    path: PathBuf,
    new: Option<OwnedFd>,
    cur: Option<OwnedFd>,
}

impl SourceFolder {
    fn dir(&self, sub: Sub) -> Option<BorrowedFd<'_>> {
        match sub {
            Sub::New => self.new.as_ref().map(|f| f.as_fd()),
            Sub::Cur => self.cur.as_ref().map(|f| f.as_fd()),
        }
    }
}

/// What the run did, for the summary line and the exit status.
#[derive(Default)]
struct Counts {
    messages: u64,
    bytes: u64,
    per_folder: [u64; 3],
    /// Not regular files (a FIFO, a symlink) or unreadable: problems, exit 1.
    skipped: u64,
    /// Gone between listing and reading and not found again in cur/ (expunged).
    vanished: u64,
    /// Already in the Maildir given with --force (a resumed export).
    present: u64,
}

pub fn run(args: &ExportArgs) -> Result<Exit, Error> {
    let user = User::parse(&args.user)?;
    let since = args.since.as_deref().map(|d| date_arg("--since", d)).transpose()?;
    let until = args.until.as_deref().map(|d| date_arg("--until", d)).transpose()?;
    let to_stdout = args.out == Path::new("-");
    if to_stdout && args.format == ExportFormat::Maildir {
        return Err(UsageError("--format maildir needs a directory for --out, not -".into()).into());
    }
    if args.link && args.format != ExportFormat::Maildir {
        return Err(UsageError("--link is for --format maildir only".into()).into());
    }
    if since.zip(until).is_some_and(|(s, u)| s > u) {
        let (s, u) = (args.since.as_deref().unwrap_or_default(), args.until.as_deref().unwrap_or_default());
        return Err(UsageError(format!("--since {s} is later than --until {u}: nothing could match")).into());
    }
    crate::root::require(&args.root)?;
    if !to_stdout {
        refuse_out_inside_root(&args.root, &args.out)?;
    }
    let folders = open_source(&args.root, &user, args.folder)?;
    let mut lists = Vec::new();
    let mut counts = Counts::default();
    let mut total_bytes = 0;
    for folder in folders {
        let (entries, bytes) = list_folder(&folder, since, until, &mut counts)?;
        total_bytes += bytes;
        lists.push((folder, entries));
    }
    let progress = Progress::new(total_bytes);
    let labels = args.folder == ExportFolder::All;
    match args.format {
        ExportFormat::Mboxrd if to_stdout => {
            let stdout = io::stdout().lock();
            let mut w = MboxrdWriter::new(BufWriter::with_capacity(1 << 20, stdout));
            write_mbox(&lists, &mut w, labels, &mut counts, &progress).map_err(stdout_error)?;
            w.get_mut().flush().map_err(Error::Stdout)?;
        }
        ExportFormat::Mboxrd => write_mbox_file(&args.out, args.force, &lists, labels, &mut counts, &progress)?,
        ExportFormat::Maildir => write_maildir(&args.out, args.force, args.link, &lists, &mut counts, &progress)?,
    }
    progress.finish();
    summary(&user, &args.out, &counts);
    Ok(if counts.skipped > 0 { Exit::Problems } else { Exit::Ok })
}

fn date_arg(option: &str, text: &str) -> Result<Timestamp, UsageError> {
    parse_day(text).ok_or_else(|| UsageError(format!("{option} '{text}': expected YYYY-MM-DD or YYYY-MM-DDThh:mm:ssZ")))
}

/// Refuses an `out` that lies inside the backup root (an mbox in a user's new/, a Maildir
/// as another user, a file over .mailkeep/audit.log): export writes outside the backup only.
/// Compared by device and inode, from the deepest directory of `out` that exists up to `/`
/// through `..`, so neither a symlink nor `..` in `out` hides the root.
fn refuse_out_inside_root(root: &Path, out: &Path) -> Result<(), ExportError> {
    let id = |st: &FileStat| (st.st_dev, st.st_ino);
    let read_err = |path: &Path| {
        let path = path.to_path_buf();
        move |e: Errno| ExportError::Read { path, err: e.into() }
    };
    let root_id = id(&nix::sys::stat::stat(root).map_err(read_err(root))?);
    let mut start = out;
    while start != Path::new(".") && !std::fs::metadata(start).is_ok_and(|m| m.is_dir()) {
        start = match start.parent() {
            Some(p) if !p.as_os_str().is_empty() => p,
            _ => Path::new("."),
        };
    }
    let flags = OFlag::O_DIRECTORY | OFlag::O_RDONLY | OFlag::O_CLOEXEC;
    let mut dir = nix::fcntl::open(start, flags, Mode::empty()).map_err(read_err(start))?;
    loop {
        let here = id(&fstat(dir.as_fd()).map_err(read_err(start))?);
        if here == root_id {
            return Err(ExportError::Refused { path: out.to_path_buf(), why: "it lies inside the backup root" });
        }
        let up = openat(dir.as_fd(), "..", flags, Mode::empty()).map_err(read_err(start))?;
        if id(&fstat(up.as_fd()).map_err(read_err(start))?) == here {
            return Ok(()); // `/`
        }
        dir = up;
    }
}

/// A write failure to stdout is `Error::Stdout`; a read failure stays what it is.
fn stdout_error(e: ExportError) -> Error {
    match e {
        ExportError::Write { err, .. } => Error::Stdout(err),
        other => other.into(),
    }
}

/// Opens the user's directory and the folders asked for, never through a symlink.
fn open_source(root: &Path, user: &User, which: ExportFolder) -> Result<Vec<SourceFolder>, ExportError> {
    // The root itself may be a symlink (as `status` follows one); below it nothing is followed.
    let flags = OFlag::O_DIRECTORY | OFlag::O_RDONLY | OFlag::O_CLOEXEC;
    let root_fd = nix::fcntl::open(root, flags, Mode::empty())
        .map_err(|e| ExportError::Read { path: root.to_path_buf(), err: e.into() })?;
    let user_path = root.join(user.as_str());
    let user_fd = match fsutil::open_dir(root_fd.as_fd(), user.as_str()) {
        Ok(fd) => fd,
        Err(OpenError::Missing) => {
            return Err(ExportError::NoUser { root: root.to_path_buf(), user: user.to_string() });
        }
        Err(e) => return Err(refused(&user_path, e)),
    };
    let kinds: &[FolderKind] = match which {
        ExportFolder::Inbox => &[FolderKind::Inbox],
        ExportFolder::Sent => &[FolderKind::Sent],
        ExportFolder::Chats => &[FolderKind::Chats],
        ExportFolder::All => &[FolderKind::Inbox, FolderKind::Sent, FolderKind::Chats],
    };
    let mut out = Vec::new();
    for &kind in kinds {
        let (path, dir) = match kind.dir() {
            None => {
                let fd = user_fd.try_clone().map_err(|err| ExportError::Read { path: user_path.clone(), err })?;
                (user_path.clone(), Some(fd))
            }
            Some(sub) => {
                let path = user_path.join(sub);
                match fsutil::open_dir(user_fd.as_fd(), sub) {
                    Ok(fd) => (path, Some(fd)),
                    Err(OpenError::Missing) => (path, None),
                    Err(e) => return Err(refused(&path, e)),
                }
            }
        };
        let sub_dir = |name: &str| -> Result<Option<OwnedFd>, ExportError> {
            let Some(dir) = &dir else { return Ok(None) };
            match fsutil::open_dir(dir.as_fd(), name) {
                Ok(fd) => Ok(Some(fd)),
                Err(OpenError::Missing) => Ok(None),
                Err(e) => Err(refused(&path.join(name), e)),
            }
        };
        let (new, cur) = (sub_dir("new")?, sub_dir("cur")?);
        out.push(SourceFolder { kind, path, new, cur });
    }
    Ok(out)
}

fn refused(path: &Path, e: OpenError) -> ExportError {
    match e {
        OpenError::Symlink => ExportError::Refused { path: path.to_path_buf(), why: "a symlink (never followed)" },
        OpenError::WrongType => ExportError::Refused { path: path.to_path_buf(), why: "not a directory" },
        other => ExportError::Read { path: path.to_path_buf(), err: io::Error::from(other.errno()) },
    }
}

/// The folder's message files with an mtime in [since, until), in INTERNALDATE order, and
/// their total size. What is no regular file is counted skipped and named.
fn list_folder(
    folder: &SourceFolder,
    since: Option<Timestamp>,
    until: Option<Timestamp>,
    counts: &mut Counts,
) -> Result<(Vec<Entry>, u64), ExportError> {
    let mut entries = Vec::new();
    let mut bytes = 0;
    for sub in Sub::ALL {
        let Some(dir) = folder.dir(sub) else { continue };
        let path = folder.path.join(sub.dir());
        let read_err = |e: Errno| ExportError::Read { path: path.clone(), err: e.into() };
        for entry in fsutil::list_dir(dir).map_err(read_err)? {
            let name = OsStr::from_bytes(entry.map_err(read_err)?.file_name().to_bytes()).to_os_string();
            if name.as_bytes().starts_with(b".") {
                continue;
            }
            let st = match fstatat(dir, name.as_os_str(), AtFlags::AT_SYMLINK_NOFOLLOW) {
                Ok(st) => st,
                Err(Errno::ENOENT) => continue,
                Err(e) => return Err(read_err(e)),
            };
            if fsutil::file_type(&st) != SFlag::S_IFREG {
                skip(counts, &path.join(&name), "not a regular file");
                continue;
            }
            if since.is_some_and(|s| st.st_mtime < s) || until.is_some_and(|u| st.st_mtime >= u) {
                continue;
            }
            bytes += st.st_size as u64;
            entries.push(Entry { sub, name, mtime: st.st_mtime, mtime_ns: st.st_mtime_nsec });
        }
    }
    entries.sort_by(|a, b| (a.mtime, a.mtime_ns, &a.name).cmp(&(b.mtime, b.mtime_ns, &b.name)));
    Ok((entries, bytes))
}

fn skip(counts: &mut Counts, path: &Path, why: &str) {
    counts.skipped += 1;
    crate::log::stderr_line(&format!("export: skipped {}: {why}", path.display()));
}

/// A message file opened for reading, with where it was found.
struct Opened {
    file: File,
    st: FileStat,
    sub: Sub,
    name: OsString,
}

/// Opens a listed message; one gone meanwhile is looked for in cur/ under its base name (an
/// IMAP server moves new/ files to cur/ and renames files when flags change). `None` when
/// it is skipped (counted and said).
fn open_message(folder: &SourceFolder, entry: &Entry, counts: &mut Counts) -> Result<Option<Opened>, ExportError> {
    let dir = folder.dir(entry.sub).expect("listed from it");
    let path = folder.path.join(entry.sub.dir()).join(&entry.name);
    match fsutil::open_regular(dir, entry.name.as_os_str()) {
        Ok((file, st)) => return Ok(Some(Opened { file, st, sub: entry.sub, name: entry.name.clone() })),
        Err(OpenError::Missing) => {}
        Err(OpenError::Io { errno, .. }) if errno != Errno::EACCES => {
            return Err(ExportError::Read { path, err: errno.into() });
        }
        Err(e) => {
            skip(counts, &path, &e.to_string());
            return Ok(None);
        }
    }
    let base = maildir::base_name(entry.name.as_bytes());
    if let Some(cur) = folder.cur.as_ref() {
        let cur_path = folder.path.join("cur");
        let read_err = |e: Errno| ExportError::Read { path: cur_path.clone(), err: e.into() };
        for found in fsutil::list_dir(cur.as_fd()).map_err(read_err)? {
            let found = found.map_err(read_err)?;
            let name = found.file_name().to_bytes();
            if maildir::base_name(name) == base {
                let name = OsStr::from_bytes(name).to_os_string();
                if let Ok((file, st)) = fsutil::open_regular(cur.as_fd(), name.as_os_str()) {
                    return Ok(Some(Opened { file, st, sub: Sub::Cur, name }));
                }
            }
        }
    }
    counts.vanished += 1;
    crate::log::stderr_line(&format!("export: {} is gone (expunged meanwhile?); not exported", path.display()));
    Ok(None)
}

/// Reads a message's start: at least the header part after our header lines.
fn read_head(file: &mut File, path: &Path) -> Result<Vec<u8>, ExportError> {
    let mut head = Vec::new();
    loop {
        let n = (&mut *file)
            .take(PIECE as u64)
            .read_to_end(&mut head)
            .map_err(|err| ExportError::Read { path: path.to_path_buf(), err })?;
        if n == 0 || holds_header_part(Stamp::strip(&head, false)) {
            return Ok(head);
        }
    }
}

/// Feeds the rest of `file` to `take` in pieces.
fn copy_rest(
    file: &mut File,
    path: &Path,
    mut take: impl FnMut(&[u8]) -> Result<(), ExportError>,
) -> Result<u64, ExportError> {
    let mut buf = vec![0u8; PIECE];
    let mut total = 0;
    loop {
        match file.read(&mut buf) {
            Ok(0) => return Ok(total),
            Ok(n) => {
                take(&buf[..n])?;
                total += n as u64;
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(err) => return Err(ExportError::Read { path: path.to_path_buf(), err }),
        }
    }
}

fn label_of(kind: FolderKind) -> &'static str {
    match kind {
        FolderKind::Inbox => "Inbox",
        FolderKind::Sent => "Sent",
        FolderKind::Chats => "Chat",
    }
}

fn folder_index(kind: FolderKind) -> usize {
    match kind {
        FolderKind::Inbox => 0,
        FolderKind::Sent => 1,
        FolderKind::Chats => 2,
    }
}

/// Every listed message as mboxrd into `w`. With `labels`, each gets the export's marker and
/// its folder's `X-Gmail-Labels` line right after our header lines (`ExportLabel`), where
/// replay finds them and takes them out again.
fn write_mbox<W: Write>(
    lists: &[(SourceFolder, Vec<Entry>)],
    w: &mut MboxrdWriter<W>,
    labels: bool,
    counts: &mut Counts,
    progress: &Progress,
) -> Result<(), ExportError> {
    let out_err = |err| ExportError::Write { path: PathBuf::from("the export"), err };
    for (folder, entries) in lists {
        for entry in entries {
            let Some(mut m) = open_message(folder, entry, counts)? else { continue };
            let path = folder.path.join(m.sub.dir()).join(&m.name);
            let head = read_head(&mut m.file, &path)?;
            let return_path = HeaderInfo::parse(header_part(&head)).return_path;
            let sender = return_path.as_deref().map_or_else(Sender::null, |r| Sender::from_bytes(r.as_bytes()));
            w.start(sender.address(), m.st.st_mtime).map_err(out_err)?;
            if labels {
                let at = Stamp::lines_len(&head, folder.kind == FolderKind::Sent);
                w.write(&head[..at]).map_err(out_err)?;
                w.write(&ExportLabel::lines(label_of(folder.kind))).map_err(out_err)?;
                w.write(&head[at..]).map_err(out_err)?;
            } else {
                w.write(&head).map_err(out_err)?;
            }
            let rest = copy_rest(&mut m.file, &path, |piece| w.write(piece).map_err(out_err))?;
            w.end().map_err(out_err)?;
            counted(counts, folder.kind, head.len() as u64 + rest, progress);
        }
    }
    Ok(())
}

fn counted(counts: &mut Counts, kind: FolderKind, size: u64, progress: &Progress) {
    counts.messages += 1;
    counts.bytes += size;
    counts.per_folder[folder_index(kind)] += 1;
    progress.tick(counts.messages, counts.bytes);
}

/// The mbox into `out`: written into a temp file beside it, fsynced, then put in place;
/// without `force` an existing `out` is never replaced (checked first and at the end).
fn write_mbox_file(
    out: &Path,
    force: bool,
    lists: &[(SourceFolder, Vec<Entry>)],
    labels: bool,
    counts: &mut Counts,
    progress: &Progress,
) -> Result<(), ExportError> {
    if !force && std::fs::symlink_metadata(out).is_ok() {
        return Err(ExportError::OutExists(out.to_path_buf()));
    }
    if std::fs::symlink_metadata(out).is_ok_and(|m| m.is_dir()) {
        return Err(ExportError::Refused { path: out.to_path_buf(), why: "a directory (--out names the mbox file)" });
    }
    let dir = match out.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let file_name = out.file_name().ok_or_else(|| ExportError::Write {
        path: out.to_path_buf(),
        err: io::Error::new(io::ErrorKind::InvalidInput, "not a file name"),
    })?;
    let tmp = dir.join(format!(".{}.mailkeep-export.{}", file_name.to_string_lossy(), std::process::id()));
    let write_err = |err| ExportError::Write { path: tmp.clone(), err };
    let file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(&tmp)
        .map_err(write_err)?;
    let result = (|| {
        let mut w = MboxrdWriter::new(BufWriter::with_capacity(1 << 20, file));
        write_mbox(lists, &mut w, labels, counts, progress).map_err(|e| match e {
            ExportError::Write { err, .. } => write_err(err),
            other => other,
        })?;
        let file = w.into_inner().into_inner().map_err(|e| write_err(e.into_error()))?;
        file.sync_all().map_err(write_err)?;
        put_in_place(&tmp, out, force)?;
        let dir_fd = fsutil::open_dir_path(&dir).map_err(|err| ExportError::Write { path: dir.clone(), err })?;
        nix::unistd::fsync(dir_fd.as_fd()).map_err(|e| ExportError::Write { path: dir.clone(), err: e.into() })
    })();
    let _ = std::fs::remove_file(&tmp);
    result
}

/// `tmp` becomes `out`: renamed over it with `force`, else hard-linked, which fails when
/// `out` appeared meanwhile (the temp file is removed by the caller).
fn put_in_place(tmp: &Path, out: &Path, force: bool) -> Result<(), ExportError> {
    let err = |err| ExportError::Write { path: out.to_path_buf(), err };
    if force {
        return std::fs::rename(tmp, out).map_err(err);
    }
    match std::fs::hard_link(tmp, out) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Err(ExportError::OutExists(out.to_path_buf())),
        Err(e) => Err(err(e)),
    }
}

/// A Maildir being written: the directory of each folder's new/, cur/ and tmp/.
struct Target {
    path: PathBuf,
    dirs: Vec<(FolderKind, [OwnedFd; 3])>,
}

/// The messages into a fresh Maildir `out` (INBOX at its top, `.Sent` and `.Chats` as
/// Maildir++ folders), same file names in the same new/ or cur/, same mtimes: an fsynced
/// copy, or with `link` a hard link to the backup's file where the file system allows (a
/// link IS the backup's file: whoever may write or chown the copy changes the backup, so
/// only for a copy the admin keeps). With `force` an existing Maildir is added to, and what
/// it already has by name is left alone.
///
/// `out` may lie in a directory others can write into (a hand-over area): it is opened
/// once, never through a symlink, and everything below it is made and filled relative to
/// directory descriptors, without following a symlink; a symlink anywhere below it is
/// refused (exit 2) before a message is written through it.
fn write_maildir(
    out: &Path,
    force: bool,
    link: bool,
    lists: &[(SourceFolder, Vec<Entry>)],
    counts: &mut Counts,
    progress: &Progress,
) -> Result<(), ExportError> {
    let not_empty = std::fs::read_dir(out).is_ok_and(|mut d| d.next().is_some());
    if !force && (not_empty || std::fs::symlink_metadata(out).is_ok_and(|m| !m.is_dir())) {
        return Err(ExportError::OutExists(out.to_path_buf()));
    }
    let target = make_target(out, lists.iter().map(|(f, _)| f.kind))?;
    for (folder, entries) in lists {
        let dirs = &target.dirs.iter().find(|(k, _)| *k == folder.kind).expect("made for every folder").1;
        for entry in entries {
            let Some(mut m) = open_message(folder, entry, counts)? else { continue };
            let dst = &dirs[if m.sub == Sub::New { 0 } else { 1 }];
            let dst_path = folder_path(&target.path, folder.kind).join(m.sub.dir()).join(&m.name);
            let src_path = folder.path.join(m.sub.dir()).join(&m.name);
            match place(&mut m, link, dst.as_fd(), dirs[2].as_fd(), &src_path, &dst_path)? {
                true => counted(counts, folder.kind, m.st.st_size as u64, progress),
                false => counts.present += 1,
            }
        }
    }
    for (kind, dirs) in &target.dirs {
        for (fd, sub) in dirs.iter().zip(["new", "cur", "tmp"]) {
            let path = folder_path(&target.path, *kind).join(sub);
            nix::unistd::fsync(fd.as_fd()).map_err(|e| ExportError::Write { path, err: e.into() })?;
        }
    }
    Ok(())
}

fn folder_path(top: &Path, kind: FolderKind) -> PathBuf {
    kind.dir().map_or_else(|| top.to_path_buf(), |d| top.join(d))
}

/// Why something below --out was not used: a symlink or the wrong file type is refused
/// (exit 2: the admin removes it), anything else is a write failure.
fn refused_below(path: &Path, e: OpenError) -> ExportError {
    match e {
        OpenError::Symlink => ExportError::Refused { path: path.to_path_buf(), why: "a symlink (never followed)" },
        OpenError::WrongType => ExportError::Refused { path: path.to_path_buf(), why: "not what a Maildir has there" },
        other => ExportError::Write { path: path.to_path_buf(), err: io::Error::from(other.errno()) },
    }
}

/// Opens --out, creating it (and missing parents, the admin's path) when missing; never a
/// symlink in its place.
fn open_out(out: &Path) -> Result<OwnedFd, ExportError> {
    fsutil::create_dir_all(out, 0o700).map_err(|err| match err.raw_os_error() {
        Some(libc::ENOTDIR | libc::ELOOP) if std::fs::symlink_metadata(out).is_ok_and(|m| m.is_symlink()) => {
            ExportError::Refused { path: out.to_path_buf(), why: "a symlink (never followed)" }
        }
        Some(libc::ENOTDIR) => ExportError::Refused { path: out.to_path_buf(), why: "not a directory" },
        _ => ExportError::Write { path: out.to_path_buf(), err },
    })
}

/// Creates the Maildir and its folders (mode 0700), with a `maildirfolder` file in each
/// Maildir++ folder and a `subscriptions` file listing them, as Dovecot reads them: all
/// relative to --out's descriptor, none through a symlink.
fn make_target(out: &Path, kinds: impl Iterator<Item = FolderKind>) -> Result<Target, ExportError> {
    let out_fd = open_out(out)?;
    let mode = Mode::from_bits_truncate(0o700);
    let mut dirs = Vec::new();
    let mut subscribed = Vec::new();
    let kinds: Vec<FolderKind> = std::iter::once(FolderKind::Inbox).chain(kinds).collect();
    for kind in kinds {
        if dirs.iter().any(|(k, _)| *k == kind) {
            continue;
        }
        let path = folder_path(out, kind);
        let folder = match kind.dir() {
            None => out_fd.try_clone().map_err(|err| ExportError::Write { path: path.clone(), err })?,
            Some(d) => fsutil::open_or_create_dir(out_fd.as_fd(), d, mode).map_err(|e| refused_below(&path, e))?,
        };
        let mut fds = Vec::new();
        for sub in ["new", "cur", "tmp"] {
            let fd =
                fsutil::open_or_create_dir(folder.as_fd(), sub, mode).map_err(|e| refused_below(&path.join(sub), e))?;
            fds.push(fd);
        }
        if let Some(d) = kind.dir() {
            let marker = Mode::from_bits_truncate(0o600);
            fsutil::ensure_file(folder.as_fd(), "maildirfolder", marker)
                .map_err(|e| refused_below(&path.join("maildirfolder"), e))?;
            subscribed.push(format!("{}\n", &d[1..]));
        }
        let fds: [OwnedFd; 3] = fds.try_into().unwrap_or_else(|_| unreachable!("three made"));
        dirs.push((kind, fds));
    }
    if !subscribed.is_empty() {
        let subs = out.join("subscriptions");
        // Replaced by a rename, never written through what is there; a symlink is refused.
        fsutil::regular_or_missing(out_fd.as_fd(), "subscriptions").map_err(|e| refused_below(&subs, e))?;
        fsutil::replace_file(out_fd.as_fd(), OsStr::new("subscriptions"), subscribed.concat().as_bytes(), 0o600, None)
            .map_err(|err| ExportError::Write { path: subs, err })?;
    }
    Ok(Target { path: out.to_path_buf(), dirs })
}

/// Puts one message into the target as `dst/<name>`: a copy written in tmp/ with the same
/// mtime, fsynced and linked in; with `link` first a hard link to the very file opened
/// (through /proc/self/fd, so a file swapped meanwhile is not taken), a copy when that
/// fails (another file system). False when the name is there already; a symlink or other
/// non-file at the name is refused.
fn place(
    m: &mut Opened,
    link: bool,
    dst: BorrowedFd<'_>,
    tmp: BorrowedFd<'_>,
    src: &Path,
    to: &Path,
) -> Result<bool, ExportError> {
    let name = m.name.as_os_str();
    if fsutil::regular_or_missing(dst, name).map_err(|e| refused_below(to, e))? {
        return Ok(false);
    }
    if link {
        let proc = format!("/proc/self/fd/{}", m.file.as_raw_fd());
        match linkat(AT_FDCWD, proc.as_str(), dst, name, AtFlags::AT_SYMLINK_FOLLOW) {
            Ok(()) => return Ok(true),
            Err(Errno::EEXIST) => return Ok(false),
            Err(_) => {} // another file system, or links not allowed: copy
        }
    }
    let write_err = |err| ExportError::Write { path: to.to_path_buf(), err };
    // A leftover of an export killed while copying this very message: ours, in our tmp/.
    let _ = nix::unistd::unlinkat(tmp, name, nix::unistd::UnlinkatFlags::NoRemoveDir);
    let flags = OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_WRONLY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
    let fd = openat(tmp, name, flags, Mode::from_bits_truncate(0o600)).map_err(|e| write_err(e.into()))?;
    let mut copy = File::from(fd);
    let result = (|| {
        copy_rest(&mut m.file, src, |piece| copy.write_all(piece).map_err(write_err))?;
        let ts = TimeSpec::new(m.st.st_mtime, m.st.st_mtime_nsec);
        futimens(copy.as_fd(), &ts, &ts).map_err(|e| write_err(e.into()))?;
        copy.sync_all().map_err(write_err)?;
        match linkat(tmp, name, dst, name, AtFlags::empty()) {
            Ok(()) => Ok(true),
            Err(Errno::EEXIST) => Ok(false),
            Err(e) => Err(write_err(e.into())),
        }
    })();
    let _ = nix::unistd::unlinkat(tmp, name, nix::unistd::UnlinkatFlags::NoRemoveDir);
    result
}

fn summary(user: &User, out: &Path, c: &Counts) {
    let [inbox, sent, chats] = c.per_folder;
    let mut line = format!(
        "export: {user}: {} messages (INBOX {inbox}, Sent {sent}, Chats {chats}), {} bytes to {}; skipped={} vanished={}",
        c.messages,
        c.bytes,
        if out == Path::new("-") { "stdout".into() } else { out.display().to_string() },
        c.skipped,
        c.vanished,
    );
    if c.present > 0 {
        line.push_str(&format!(" already-there={}", c.present));
    }
    crate::log::stderr_line(&line);
}

/// A progress bar on a terminal; nothing elsewhere (the summary line says what was done).
struct Progress(Option<indicatif::ProgressBar>);

impl Progress {
    fn new(total_bytes: u64) -> Progress {
        Progress(io::stderr().is_terminal().then(|| {
            let bar = indicatif::ProgressBar::new(total_bytes);
            let style = indicatif::ProgressStyle::with_template("{msg} [{bar:30}] {bytes}/{total_bytes} eta {eta}")
                .expect("a valid template");
            bar.set_style(style);
            bar
        }))
    }

    fn tick(&self, messages: u64, bytes: u64) {
        if let Some(bar) = &self.0 {
            bar.set_position(bytes);
            bar.set_message(format!("{messages} messages"));
        }
    }

    fn finish(&self) {
        if let Some(bar) = &self.0 {
            bar.finish_and_clear();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A folder below `dir` as `open_source` opens it, with one message `name` in `sub`.
    fn folder_with(dir: &Path, sub: Sub, name: &str) -> (SourceFolder, Entry) {
        for d in ["new", "cur"] {
            std::fs::create_dir_all(dir.join(d)).unwrap();
        }
        std::fs::write(dir.join(sub.dir()).join(name), "Subject: s\n\nbody\n").unwrap();
        let open = |d: &str| Some(fsutil::open_dir_path(&dir.join(d)).unwrap());
        let folder =
            SourceFolder { kind: FolderKind::Inbox, path: dir.to_path_buf(), new: open("new"), cur: open("cur") };
        let entry = Entry { sub, name: name.into(), mtime: 0, mtime_ns: 0 };
        (folder, entry)
    }

    #[test]
    fn a_message_an_imap_server_moved_to_cur_is_found_there() {
        let dir = tempfile::tempdir().unwrap();
        let (folder, entry) = folder_with(dir.path(), Sub::New, "1.M1P1Q1.host,S=18");
        std::fs::rename(dir.path().join("new/1.M1P1Q1.host,S=18"), dir.path().join("cur/1.M1P1Q1.host,S=18:2,S"))
            .unwrap();
        std::fs::write(dir.path().join("cur/1.M1P1Q10.host,S=18:2,"), "another\n").unwrap();
        let mut counts = Counts::default();
        let found = open_message(&folder, &entry, &mut counts).unwrap().expect("found again");
        assert_eq!((found.sub, found.name.to_str().unwrap()), (Sub::Cur, "1.M1P1Q1.host,S=18:2,S"));
        // A flag changed: cur/NAME:2,S became cur/NAME:2,RS.
        let (folder, entry) = folder_with(dir.path(), Sub::Cur, "2.M1P1Q1.host,S=18:2,S");
        std::fs::rename(dir.path().join("cur/2.M1P1Q1.host,S=18:2,S"), dir.path().join("cur/2.M1P1Q1.host,S=18:2,RS"))
            .unwrap();
        let found = open_message(&folder, &entry, &mut counts).unwrap().expect("found again");
        assert_eq!(found.name.to_str().unwrap(), "2.M1P1Q1.host,S=18:2,RS");
        assert_eq!((counts.vanished, counts.skipped), (0, 0));
    }

    #[test]
    fn a_message_expunged_meanwhile_is_counted_gone_not_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let (folder, entry) = folder_with(dir.path(), Sub::New, "1.M1P1Q1.host,S=18");
        std::fs::remove_file(dir.path().join("new/1.M1P1Q1.host,S=18")).unwrap();
        let mut counts = Counts::default();
        assert!(open_message(&folder, &entry, &mut counts).unwrap().is_none());
        assert_eq!((counts.vanished, counts.skipped), (1, 0));
    }
}
