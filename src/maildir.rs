//! The one Maildir writer every command stores through: unique names, tmp/ -> new/ with
//! fsyncs, Maildir++ folders, and nothing ever replaced or followed through a symlink.
//!
//! All paths below the root are opened relative to directory descriptors with O_NOFOLLOW,
//! so a symlink planted as a user's directory or as `new/` is refused, not followed.

use std::ffi::OsStr;
use std::fs::File;
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, UNIX_EPOCH};

use nix::errno::Errno;
use nix::fcntl::{AtFlags, OFlag, openat};
use nix::sys::stat::{Mode, SFlag, fstatat, futimens};
use nix::sys::time::TimeSpec;
use nix::unistd::{UnlinkatFlags, fsync, linkat, unlinkat};

use crate::envelope::User;
use crate::exit::{Classify, Exit};
use crate::fsutil::{self, OpenError};
use crate::root::{self, RootError};
use crate::time::Timestamp;

/// The lock file a replay holds in each folder it stores into (`Folder::lock_for_replay`).
pub const REPLAY_LOCK: &str = "mailkeep-replay.lock";

/// Leftovers in tmp/ older than this are swept, as the Maildir convention says.
pub const TMP_MAX_AGE: Duration = Duration::from_secs(36 * 3600);
/// Subscription lists are read up to this size; a real one is a line per folder.
const SMALL_FILE_MAX: u64 = 1 << 20;

#[derive(Debug, thiserror::Error)]
pub enum MaildirError {
    #[error(transparent)]
    Root(#[from] RootError),
    #[error("refusing to follow symlink {}", .0.display())]
    Symlink(PathBuf),
    #[error("{} exists but is not a directory", .0.display())]
    NotADirectory(PathBuf),
    /// A FIFO or device where a small file belongs: reading or writing it could block.
    #[error("{} exists but is not a regular file", .0.display())]
    NotAFile(PathBuf),
    #[error("cannot {op} {}: {err}", path.display())]
    Io { op: &'static str, path: PathBuf, err: io::Error },
    #[error("{} is still locked by another replay after {secs} s; run again when it is done", path.display())]
    Locked { path: PathBuf, secs: u64 },
}

impl Classify for MaildirError {
    fn exit(&self) -> Exit {
        match self {
            MaildirError::Root(e) => e.exit(),
            MaildirError::Symlink(_) | MaildirError::NotADirectory(_) => Exit::CantCreate,
            // Something planted (a FIFO, a device) where a small file belongs: every MTA
            // retries 75 (Postfix bounces 73); the admin removes it and the retry stores.
            MaildirError::NotAFile(_) | MaildirError::Io { .. } | MaildirError::Locked { .. } => Exit::TempFail,
        }
    }
}

type Result<T> = std::result::Result<T, MaildirError>;

fn io_err<'a>(op: &'static str, path: &'a Path) -> impl FnOnce(Errno) -> MaildirError + 'a {
    move |e| MaildirError::Io { op, path: path.to_path_buf(), err: e.into() }
}

/// `path` could not be opened as a directory (`dir`) or a small file.
fn refused(path: &Path, dir: bool) -> impl FnOnce(OpenError) -> MaildirError + '_ {
    move |e| match e {
        OpenError::Symlink => MaildirError::Symlink(path.to_path_buf()),
        OpenError::WrongType if dir => MaildirError::NotADirectory(path.to_path_buf()),
        OpenError::WrongType => MaildirError::NotAFile(path.to_path_buf()),
        OpenError::Missing => io_err("open", path)(Errno::ENOENT),
        OpenError::Io { op, errno } => io_err(op, path)(errno),
    }
}

/// A mailbox of a user: the INBOX is the Maildir itself, others are Maildir++ folders.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FolderKind {
    Inbox,
    Sent,
    Chats,
}

impl FolderKind {
    /// The name for log lines and IMAP (Dovecot's view).
    pub fn name(self) -> &'static str {
        match self {
            FolderKind::Inbox => "INBOX",
            FolderKind::Sent => "Sent",
            FolderKind::Chats => "Chats",
        }
    }

    /// The Maildir++ folders mailkeep creates (the INBOX is the user's Maildir itself).
    pub const FOLDERS: [FolderKind; 2] = [FolderKind::Sent, FolderKind::Chats];

    /// The Maildir++ directory below the user's Maildir, or None for the INBOX.
    pub fn dir(self) -> Option<&'static str> {
        match self {
            FolderKind::Inbox => None,
            FolderKind::Sent => Some(".Sent"),
            FolderKind::Chats => Some(".Chats"),
        }
    }
}

/// Who may read what we write: the delivering user alone, or also its group.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Perms {
    pub shared_group: bool,
}

impl Perms {
    pub fn dir_mode(self) -> Mode {
        Mode::from_bits_truncate(if self.shared_group { 0o2770 } else { 0o700 })
    }

    pub fn file_mode(self) -> Mode {
        Mode::from_bits_truncate(if self.shared_group { 0o660 } else { 0o600 })
    }

    /// The process umask that lets `file_mode` through unchanged (Exim starts us with 022).
    pub fn apply_umask(self) {
        nix::sys::stat::umask(Mode::from_bits_truncate(if self.shared_group { 0o007 } else { 0o077 }));
    }
}

/// Makes unique file names: `<secs>.M<usec>P<pid>Q<n>.<host>`, and `,S=<size>` in new/.
pub struct Namer {
    pid: u32,
    host: String,
}

/// The `Q` counter, one for the whole process: every thread's names differ (replay names
/// files on two).
static Q: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

impl Namer {
    pub fn new() -> Namer {
        let host =
            nix::unistd::gethostname().map(|h| h.to_string_lossy().into_owned()).unwrap_or_else(|_| "localhost".into());
        Namer { pid: std::process::id(), host: escape_host(&host) }
    }

    /// A fresh base name. `secs` overrides the leading seconds (a replayed message's
    /// received date); the microseconds, pid and counter keep it unique. A date before
    /// 1970 leads with 0: a name starting with `-` is taken for an option by shell tools
    /// (the true date stays the file's mtime).
    pub fn next(&mut self, secs: Option<Timestamp>) -> String {
        let q = Q.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
        let now = crate::time::system_now().duration_since(UNIX_EPOCH).unwrap_or_default();
        let secs = secs.unwrap_or(now.as_secs() as i64).max(0);
        format!("{secs}.M{}P{}Q{}.{}", now.subsec_micros(), self.pid, q, self.host)
    }
}

impl Default for Namer {
    fn default() -> Self {
        Namer::new()
    }
}

/// Maildir's escaping of a host name: `/` and `:` would break the name's syntax.
pub fn escape_host(host: &str) -> String {
    host.replace('/', "\\057").replace(':', "\\072")
}

/// The name a message gets in new/: the exact stored size, which Dovecot trusts.
pub fn final_name(base: &str, size: u64) -> String {
    format!("{base},S={size}")
}

/// The unique base name of a message file: the part before `:2,` (the flags an IMAP server
/// sets when it moves the file to cur/ or changes its flags). Seals, removals and exports
/// find a message again by it.
pub fn base_name(name: &[u8]) -> &[u8] {
    match name.windows(3).position(|w| w == b":2,") {
        Some(at) => &name[..at],
        None => name,
    }
}

/// The user directories below the root: names `deliver` would use as they are (not
/// `lost+found`, which a new file system has), sorted.
pub fn users(root: BorrowedFd<'_>) -> nix::Result<Vec<String>> {
    let mut users = Vec::new();
    for entry in fsutil::list_dir(root)? {
        let entry = entry?;
        let name = entry.file_name().to_bytes();
        let is_user = User::parse(OsStr::from_bytes(name)).is_ok_and(|u| u.as_str().as_bytes() == name);
        if is_user && name != b"lost+found" {
            users.push(String::from_utf8_lossy(name).into_owned());
        }
    }
    users.sort();
    Ok(users)
}

/// Where a message file lies in its folder: new/ (as delivered) or cur/ (seen by an IMAP
/// server, perhaps with flags).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Sub {
    New,
    Cur,
}

impl Sub {
    /// new/ first: where a message is before an IMAP server moves it.
    pub const ALL: [Sub; 2] = [Sub::New, Sub::Cur];

    /// The directory's name.
    pub fn dir(self) -> &'static str {
        match self {
            Sub::New => "new",
            Sub::Cur => "cur",
        }
    }
}

/// A message written into tmp/, not yet visible to an IMAP server.
pub struct Staged {
    base: String,
    size: u64,
}

/// When a staged file's bytes become durable: fsynced before it is closed (one message),
/// or later, with the whole batch, by `sync_filesystem` (replay; no descriptor stays open).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Durability {
    Fsync,
    Later,
}

impl Staged {
    pub fn size(&self) -> u64 {
        self.size
    }
}

/// One open mailbox folder. Holds descriptors of the folder, its tmp/ and its new/.
pub struct Folder {
    kind: FolderKind,
    path: PathBuf,
    /// The folder itself (the user's directory for the INBOX).
    dir: OwnedFd,
    tmp: OwnedFd,
    new: OwnedFd,
    perms: Perms,
}

impl Folder {
    /// Opens `ROOT/<user>/` (or its Maildir++ folder), creating what is missing on first
    /// delivery. The root must be initialised (`root.rs`): nothing is created below an
    /// empty mount point, even one the volume left after the command's `root::require`.
    pub fn open(root: &Path, user: &User, kind: FolderKind, perms: Perms) -> Result<Folder> {
        let not_initialised = |why| RootError::NotInitialised { root: root.to_path_buf(), why };
        let root_fd =
            match nix::fcntl::open(root, OFlag::O_DIRECTORY | OFlag::O_RDONLY | OFlag::O_CLOEXEC, Mode::empty()) {
                Ok(fd) => fd,
                Err(Errno::ENOENT | Errno::ENOTDIR) => return Err(not_initialised("it does not exist").into()),
                Err(e) => return Err(io_err("open backup root", root)(e)),
            };
        root::check_at(root_fd.as_fd(), root)?;
        let user_path = root.join(user.as_str());
        let user_fd = open_or_create_dir(root_fd.as_fd(), &user_path, perms)?;
        let (path, dir) = match kind.dir() {
            None => {
                let fd =
                    user_fd.try_clone().map_err(|err| MaildirError::Io { op: "dup", path: user_path.clone(), err })?;
                (user_path, fd)
            }
            Some(sub) => {
                let p = user_path.join(sub);
                let fd = open_or_create_dir(user_fd.as_fd(), &p, perms)?;
                (p, fd)
            }
        };
        // Fast path: new/ is created last, so if it is there the folder is complete.
        if let (Ok(tmp), Ok(new)) = (open_dir(dir.as_fd(), &path.join("tmp")), open_dir(dir.as_fd(), &path.join("new")))
        {
            return Ok(Folder { kind, path, dir, tmp, new, perms });
        }
        // Setup, in an order that a crash at any point leaves redoable: cur, tmp, the
        // Maildir++ marker and subscriptions, and new/ last.
        open_or_create_dir(dir.as_fd(), &path.join("cur"), perms)?;
        let tmp = open_or_create_dir(dir.as_fd(), &path.join("tmp"), perms)?;
        if let Some(sub) = kind.dir() {
            // A user with only sent mail still needs an INBOX an IMAP server can open
            // (Courier refuses SELECT INBOX without its cur/new/tmp).
            let user_path = root.join(user.as_str());
            for d in ["cur", "tmp", "new"] {
                open_or_create_dir(user_fd.as_fd(), &user_path.join(d), perms)?;
            }
            let marker = path.join("maildirfolder");
            // A FIFO planted as the marker would block an open for writing until Exim's
            // timeout: what is there is only looked at, never opened.
            fsutil::ensure_file(dir.as_fd(), "maildirfolder", perms.file_mode()).map_err(refused(&marker, false))?;
            sync_dir(dir.as_fd(), &path)?;
            let name = &sub[1..];
            ensure_line(user_fd.as_fd(), &root.join(user.as_str()), "subscriptions", name, perms)?;
            ensure_line(
                user_fd.as_fd(),
                &root.join(user.as_str()),
                "courierimapsubscribed",
                &format!("INBOX.{name}"),
                perms,
            )?;
        }
        let new = open_or_create_dir(dir.as_fd(), &path.join("new"), perms)?;
        Ok(Folder { kind, path, dir, tmp, new, perms })
    }

    pub fn kind(&self) -> FolderKind {
        self.kind
    }

    /// The message files now in new/ and cur/ (what an IMAP server would show). Neither is
    /// followed if it is a symlink.
    pub fn message_paths(&self) -> Result<Vec<PathBuf>> {
        let cur = open_dir(self.dir.as_fd(), &self.path.join("cur"))?;
        let mut out = Vec::new();
        for (sub, fd) in [("new", self.new.as_fd()), ("cur", cur.as_fd())] {
            let dir = self.path.join(sub);
            for entry in fsutil::list_dir(fd).map_err(io_err("read", &dir))? {
                let name = entry.map_err(io_err("read", &dir))?.file_name().to_bytes().to_vec();
                if !name.starts_with(b".") {
                    out.push(dir.join(OsStr::from_bytes(&name)));
                }
            }
        }
        Ok(out)
    }

    /// Whether the message stored as `name` (its name in new/) is still in this folder: in
    /// new/, or in cur/ as `name:2,<flags>` where an IMAP server moved it. For `--dedup`,
    /// which folds a copy only into a file that is there. new/ is one `fstatat`; cur/ is
    /// read only when the file has left new/. Anything that cannot be told is "not there":
    /// at worst a duplicate is stored, never a copy dropped.
    pub fn holds(&self, name: &str) -> bool {
        if name.is_empty() || name.contains('/') {
            return false;
        }
        let flags = nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW;
        if nix::sys::stat::fstatat(self.new.as_fd(), name, flags).is_ok() {
            return true;
        }
        let Ok(cur) = open_dir(self.dir.as_fd(), &self.path.join("cur")) else { return false };
        let Ok(entries) = fsutil::list_dir(cur.as_fd()) else { return false };
        let (name, moved) = (name.as_bytes(), format!("{name}:"));
        entries.flatten().any(|e| {
            let found = e.file_name().to_bytes();
            found == name || found.starts_with(moved.as_bytes())
        })
    }

    /// Steps 1 to 3 of a delivery: create `tmp/<unique>` exclusively (mode 0600, or 0660
    /// shared), never through a symlink, fill it with `write`, which returns the size
    /// written, and with `Durability::Fsync` fsync it. `mtime` becomes the file's
    /// modification time (IMAP's INTERNALDATE); its seconds also lead the name. The file is
    /// closed on return; on any failure it is removed.
    pub fn stage(
        &self,
        namer: &mut Namer,
        mtime: Option<Timestamp>,
        durability: Durability,
        write: impl FnOnce(&mut File) -> io::Result<u64>,
    ) -> Result<Staged> {
        let (base, mut file) = loop {
            let base = namer.next(mtime);
            let flags = OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_WRONLY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
            match openat(self.tmp.as_fd(), base.as_str(), flags, self.perms.file_mode()) {
                Ok(fd) => break (base, File::from(fd)),
                Err(Errno::EEXIST) => continue,
                Err(e) => return Err(io_err("create", &self.path.join("tmp").join(&base))(e)),
            }
        };
        let mut op = "write";
        let written = write(&mut file).and_then(|size| {
            if let Some(t) = mtime {
                let ts = TimeSpec::new(t, 0);
                futimens(file.as_fd(), &ts, &ts)?;
            }
            if durability == Durability::Fsync {
                op = "fsync";
                file.sync_all()?;
            }
            Ok(size)
        });
        match written {
            Ok(size) => Ok(Staged { base, size }),
            Err(err) => {
                let path = self.path.join("tmp").join(&base);
                self.remove_tmp(&base);
                Err(MaildirError::Io { op, path, err })
            }
        }
    }

    /// Step 3 for a batch: one syncfs makes every staged file durable at once.
    pub fn sync_filesystem(&self) -> Result<()> {
        nix::unistd::syncfs(self.tmp.as_fd()).map_err(io_err("syncfs", &self.path))
    }

    /// Steps 4 to 6 for files already durable: hard-link each into new/ under its final
    /// name (a name taken means a new name, never a replacement), fsync new/ once, then
    /// unlink the tmp files. Returns the final names. On failure nothing of the batch stays
    /// in new/ and the tmp files are removed.
    pub fn publish(&self, namer: &mut Namer, batch: Vec<Staged>) -> Result<Vec<String>> {
        let mut linked: Vec<String> = Vec::with_capacity(batch.len());
        let mut failure = None;
        for staged in &batch {
            match self.link_into_new(namer, staged) {
                Ok(name) => linked.push(name),
                Err(e) => {
                    failure = Some(e);
                    break;
                }
            }
        }
        if failure.is_none() {
            failure = sync_dir(self.new.as_fd(), &self.path.join("new")).err();
        }
        if let Some(e) = failure {
            for name in &linked {
                let _ = unlinkat(self.new.as_fd(), name.as_str(), UnlinkatFlags::NoRemoveDir);
            }
            for staged in &batch {
                self.remove_tmp(&staged.base);
            }
            return Err(e);
        }
        for staged in &batch {
            self.remove_tmp(&staged.base);
        }
        Ok(linked)
    }

    fn link_into_new(&self, namer: &mut Namer, staged: &Staged) -> Result<String> {
        let mut name = final_name(&staged.base, staged.size);
        loop {
            match linkat(self.tmp.as_fd(), staged.base.as_str(), self.new.as_fd(), name.as_str(), AtFlags::empty()) {
                Ok(()) => return Ok(name),
                // Keep the name's leading seconds (the received date) on the retry.
                Err(Errno::EEXIST) => {
                    let secs = staged.base.split('.').next().and_then(|s| s.parse().ok());
                    name = final_name(&namer.next(secs), staged.size);
                }
                Err(e) => return Err(io_err("link into", &self.path.join("new").join(&name))(e)),
            }
        }
    }

    /// Takes the replay lock in this folder, `mailkeep-replay.lock` (a name no IMAP server
    /// takes for a folder or a message), waiting up to `wait` for a replay that holds it;
    /// `waiting` is called once if it must wait. The lock is `flock`, held while the
    /// returned file is open, released by the kernel if the process dies. The file is
    /// opened read-write: on NFS the kernel emulates `flock` with a byte-range lock, which
    /// an exclusive lock takes only on a file open for writing (EBADF otherwise). It is
    /// opened without following a symlink and without blocking on a FIFO, and must be a
    /// regular file. A lock file root made before this was so (0644, root's) is opened
    /// read-only by the backup's user, which serves on a local filesystem.
    pub fn lock_for_replay(&self, wait: Duration, waiting: impl FnOnce(&Path)) -> Result<File> {
        let path = self.path.join(REPLAY_LOCK);
        // Made with O_EXCL, so that only a file made here is made readable by all and, made
        // by root, given to the folder's owner (a lock file of root's must still serve the
        // backup's user); one that is there is opened as it is, never chmodded or chowned
        // (it could be a hard link to someone else's file).
        let flags = OFlag::O_NOFOLLOW | OFlag::O_NONBLOCK | OFlag::O_CLOEXEC;
        let opened = match openat(
            self.dir.as_fd(),
            REPLAY_LOCK,
            flags | OFlag::O_RDWR | OFlag::O_CREAT | OFlag::O_EXCL,
            Mode::from_bits_truncate(0o644),
        ) {
            Ok(fd) => {
                let _ = nix::sys::stat::fchmod(fd.as_fd(), Mode::from_bits_truncate(0o644));
                self.give_to_owner(fd.as_fd());
                Ok(fd)
            }
            Err(Errno::EEXIST) => match openat(self.dir.as_fd(), REPLAY_LOCK, flags | OFlag::O_RDWR, Mode::empty()) {
                Err(Errno::EACCES) => openat(self.dir.as_fd(), REPLAY_LOCK, flags | OFlag::O_RDONLY, Mode::empty()),
                other => other,
            },
            Err(e) => Err(e),
        };
        let file = match opened {
            Ok(fd) => File::from(fd),
            Err(Errno::ELOOP) => return Err(MaildirError::Symlink(path)),
            Err(e) => return Err(io_err("open", &path)(e)),
        };
        let meta = file.metadata().map_err(|err| MaildirError::Io { op: "stat", path: path.clone(), err })?;
        if !meta.is_file() {
            return Err(MaildirError::NotAFile(path));
        }
        // No deadline past what an Instant can hold: wait as long as it takes.
        let deadline = std::time::Instant::now().checked_add(wait);
        let mut waiting = Some(waiting);
        loop {
            match file.try_lock() {
                Ok(()) => return Ok(file),
                Err(std::fs::TryLockError::WouldBlock) if deadline.is_none_or(|d| std::time::Instant::now() < d) => {
                    if let Some(say) = waiting.take() {
                        say(&path);
                    }
                    std::thread::sleep(Duration::from_millis(50));
                }
                Err(std::fs::TryLockError::WouldBlock) => {
                    return Err(MaildirError::Locked { path, secs: wait.as_secs() });
                }
                Err(std::fs::TryLockError::Error(err)) => return Err(MaildirError::Io { op: "lock", path, err }),
            }
        }
    }

    /// Gives `fd`, a file just made here, to the folder's owner when root made it (a replay
    /// with --allow-root), so that the backup's user can open it for writing later. Best
    /// effort: a file left root's is still opened read-only.
    fn give_to_owner(&self, fd: BorrowedFd<'_>) {
        if !nix::unistd::geteuid().is_root() {
            return;
        }
        if let Ok(st) = nix::sys::stat::fstat(self.dir.as_fd()) {
            let (uid, gid) = (nix::unistd::Uid::from_raw(st.st_uid), nix::unistd::Gid::from_raw(st.st_gid));
            let _ = nix::unistd::fchown(fd, Some(uid), Some(gid));
        }
    }

    /// Removes a staged file that will not be published.
    pub fn discard(&self, staged: Staged) {
        self.remove_tmp(&staged.base);
    }

    fn remove_tmp(&self, base: &str) {
        let _ = unlinkat(self.tmp.as_fd(), base, UnlinkatFlags::NoRemoveDir);
    }

    /// The whole durable write of one message, as numbered steps:
    /// 1. create tmp/<unique> with O_EXCL|O_NOFOLLOW, mode 0600 (0660 shared);
    /// 2. write the message through `write`;
    /// 3. fsync the file;
    /// 4. hard-link it into new/<unique>,S=<size> (EEXIST: a new name, never a replacement);
    /// 5. fsync new/;
    /// 6. unlink the tmp file.
    ///
    /// Any failure removes the tmp file and leaves nothing in new/.
    pub fn store(
        &self,
        namer: &mut Namer,
        mtime: Option<Timestamp>,
        write: impl FnOnce(&mut File) -> io::Result<u64>,
    ) -> Result<(String, u64)> {
        let staged = self.stage(namer, mtime, Durability::Fsync, write)?;
        let size = staged.size;
        let mut names = self.publish(namer, vec![staged])?;
        Ok((names.pop().expect("one staged file gives one name"), size))
    }

    /// Removes tmp/ files whose inode changed more than `TMP_MAX_AGE` ago: crashed
    /// deliveries. (ctime, not mtime: replay sets mtime to old dates on purpose.)
    pub fn sweep_tmp(&self) -> usize {
        let cutoff = crate::time::system_now().checked_sub(TMP_MAX_AGE).and_then(|t| t.duration_since(UNIX_EPOCH).ok());
        let Some(cutoff) = cutoff else { return 0 };
        let Ok(entries) = fsutil::list_dir(self.tmp.as_fd()) else {
            return 0;
        };
        let mut old = Vec::new();
        for entry in entries.flatten() {
            let name = entry.file_name();
            if name.to_bytes().starts_with(b".") {
                continue;
            }
            let Ok(st) = fstatat(self.tmp.as_fd(), name, AtFlags::AT_SYMLINK_NOFOLLOW) else { continue };
            if fsutil::file_type(&st) == SFlag::S_IFREG && (st.st_ctime as u64) < cutoff.as_secs() {
                old.push(name.to_owned());
            }
        }
        old.iter().filter(|n| unlinkat(self.tmp.as_fd(), n.as_c_str(), UnlinkatFlags::NoRemoveDir).is_ok()).count()
    }
}

/// Opens a directory below `parent` without following a symlink.
fn open_dir(parent: BorrowedFd<'_>, path: &Path) -> Result<OwnedFd> {
    let name = path.file_name().expect("paths we build end in a name");
    fsutil::open_dir(parent, name).map_err(refused(path, true))
}

/// Opens a directory below `parent`, creating it (mode 0700 or 2770) and making the
/// creation durable with an fsync of `parent` if it was missing.
fn open_or_create_dir(parent: BorrowedFd<'_>, path: &Path, perms: Perms) -> Result<OwnedFd> {
    let name = path.file_name().expect("paths we build end in a name");
    fsutil::open_or_create_dir(parent, name, perms.dir_mode()).map_err(refused(path, true))
}

fn sync_dir(dir: BorrowedFd<'_>, path: &Path) -> Result<()> {
    fsync(dir).map_err(io_err("fsync directory", path))
}

/// Adds `line` to the small text file `name` in `dir` unless it is there already, in one
/// atomic replace (`fsutil::replace_file`: a temp file created with O_EXCL|O_NOFOLLOW,
/// written, fsynced, renamed over `name`, the directory fsynced).
fn ensure_line(dir: BorrowedFd<'_>, dir_path: &Path, name: &str, line: &str, perms: Perms) -> Result<()> {
    let path = dir_path.join(name);
    // A FIFO planted here is refused at once instead of blocking the delivery.
    let mut current = fsutil::read_small(dir, name, SMALL_FILE_MAX).map_err(refused(&path, false))?.unwrap_or_default();
    if current.split(|&b| b == b'\n').any(|l| l == line.as_bytes()) {
        return Ok(());
    }
    if !current.is_empty() && !current.ends_with(b"\n") {
        current.push(b'\n');
    }
    current.extend_from_slice(line.as_bytes());
    current.push(b'\n');
    fsutil::replace_file(dir, OsStr::new(name), &current, perms.file_mode().bits(), None)
        .map_err(|err| MaildirError::Io { op: "write", path, err })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn user(name: &str) -> User {
        User::parse(std::ffi::OsStr::new(name)).unwrap()
    }

    const PRIVATE: Perms = Perms { shared_group: false };

    /// A root `mailkeep init` made.
    fn initialised() -> tempfile::TempDir {
        let root = tempfile::tempdir().unwrap();
        crate::root::init(root.path(), PRIVATE, false, 0).unwrap();
        root
    }

    #[test]
    fn the_base_name_drops_only_the_flags() {
        assert_eq!(base_name(b"1.M1P2Q3.h,S=5:2,FS"), b"1.M1P2Q3.h,S=5");
        assert_eq!(base_name(b"1.M1P2Q3.h,S=5"), b"1.M1P2Q3.h,S=5");
        assert_eq!(base_name(b"1.M1P2Q3.h:2,"), b"1.M1P2Q3.h");
    }

    #[test]
    fn names_carry_size_and_escaped_host() {
        assert_eq!(escape_host("a/b:c"), "a\\057b\\072c");
        assert_eq!(final_name("1.M2P3Q1.h", 42), "1.M2P3Q1.h,S=42");
        let mut n = Namer::new();
        let (a, b) = (n.next(Some(1577836800)), n.next(Some(1577836800)));
        assert!(a.starts_with("1577836800.M") && a != b, "{a} {b}");
        assert!(n.next(Some(-1)).starts_with("0.M"), "a date before 1970 gives no name starting with '-'");
    }

    #[test]
    fn store_puts_exact_bytes_in_new_and_leaves_tmp_empty() {
        let root = initialised();
        let f = Folder::open(root.path(), &user("alice"), FolderKind::Inbox, PRIVATE).unwrap();
        let (name, size) = f.store(&mut Namer::new(), None, |w| w.write_all(b"hello\n").map(|_| 6)).unwrap();
        assert!(name.ends_with(",S=6") && size == 6);
        assert_eq!(std::fs::read(root.path().join("alice/new").join(&name)).unwrap(), b"hello\n");
        assert_eq!(std::fs::read_dir(root.path().join("alice/tmp")).unwrap().count(), 0);
        assert!(root.path().join("alice/cur").is_dir());
    }

    #[test]
    fn sent_folder_gets_marker_and_subscriptions_once() {
        let root = initialised();
        for _ in 0..2 {
            let f = Folder::open(root.path(), &user("bob"), FolderKind::Sent, PRIVATE).unwrap();
            f.store(&mut Namer::new(), None, |w| w.write_all(b"x").map(|_| 1)).unwrap();
        }
        let u = root.path().join("bob");
        assert!(u.join(".Sent/maildirfolder").is_file());
        assert!(["cur", "new", "tmp"].iter().all(|d| u.join(d).is_dir()), "the INBOX exists too");
        assert_eq!(std::fs::read_to_string(u.join("subscriptions")).unwrap(), "Sent\n");
        assert_eq!(std::fs::read_to_string(u.join("courierimapsubscribed")).unwrap(), "INBOX.Sent\n");
        assert_eq!(std::fs::read_dir(u.join(".Sent/new")).unwrap().count(), 2);
        let mut names: Vec<_> = std::fs::read_dir(&u).unwrap().map(|e| e.unwrap().file_name()).collect();
        names.sort();
        let want = [".Sent", "courierimapsubscribed", "cur", "new", "subscriptions", "tmp"];
        assert_eq!(names, want, "no temp file is left beside the subscriptions");
        let mode =
            std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(u.join("subscriptions")).unwrap().permissions());
        assert_eq!(mode & 0o777, 0o600);
    }

    #[test]
    fn message_paths_lists_new_and_cur_each_time() {
        let root = initialised();
        let f = Folder::open(root.path(), &user("fay"), FolderKind::Inbox, PRIVATE).unwrap();
        f.store(&mut Namer::new(), None, |w| w.write_all(b"x").map(|_| 1)).unwrap();
        std::fs::write(root.path().join("fay/cur/1.M1P1Q1.h:2,S"), "y").unwrap();
        std::fs::write(root.path().join("fay/cur/.hidden"), "z").unwrap();
        for _ in 0..2 {
            assert_eq!(f.message_paths().unwrap().len(), 2);
        }
    }

    #[test]
    fn failed_write_leaves_nothing_behind() {
        let root = initialised();
        let f = Folder::open(root.path(), &user("carol"), FolderKind::Inbox, PRIVATE).unwrap();
        let err = f.store(&mut Namer::new(), None, |_| Err(io::Error::other("disk on fire"))).unwrap_err();
        assert_eq!(err.exit(), Exit::TempFail);
        for d in ["tmp", "new", "cur"] {
            assert_eq!(std::fs::read_dir(root.path().join("carol").join(d)).unwrap().count(), 0, "{d}");
        }
    }

    #[test]
    fn symlinked_user_dir_is_refused_as_cant_create_which_exits_75() {
        let root = initialised();
        let outside = tempfile::tempdir().unwrap();
        std::os::unix::fs::symlink(outside.path(), root.path().join("dave")).unwrap();
        let err = Folder::open(root.path(), &user("dave"), FolderKind::Inbox, PRIVATE).err().unwrap();
        assert!(matches!(err, MaildirError::Symlink(_)), "{err}");
        assert_eq!(err.exit(), Exit::CantCreate);
        // Once 73, which Postfix bounces: a planted path is retried like any other (issue 23).
        assert_eq!(err.exit().code(crate::exit::Family::Delivery), 75);
        assert_eq!(std::fs::read_dir(outside.path()).unwrap().count(), 0);
    }

    #[test]
    fn missing_root_is_temporary() {
        let err =
            Folder::open(Path::new("/nonexistent/mailkeep"), &user("a"), FolderKind::Inbox, PRIVATE).err().unwrap();
        assert_eq!(err.exit(), Exit::TempFail);
    }

    /// Issue 20: an unmounted volume leaves an empty mount point; nothing is stored there.
    #[test]
    fn a_root_without_marker_gets_nothing_created() {
        let root = tempfile::tempdir().unwrap();
        let err = Folder::open(root.path(), &user("a"), FolderKind::Sent, PRIVATE).err().unwrap();
        assert!(err.to_string().contains("not initialised or not mounted"), "{err}");
        assert_eq!(err.exit(), Exit::TempFail);
        assert_eq!(std::fs::read_dir(root.path()).unwrap().count(), 0);
    }

    #[test]
    fn a_date_before_1970_is_the_mtime_and_the_name_leads_with_0() {
        let root = initialised();
        let f = Folder::open(root.path(), &user("erin"), FolderKind::Inbox, PRIVATE).unwrap();
        let moon_landing = -14182940;
        let (name, _) = f.store(&mut Namer::new(), Some(moon_landing), |w| w.write_all(b"old\n").map(|_| 4)).unwrap();
        assert!(name.starts_with("0.M"), "{name}");
        let meta = std::fs::metadata(root.path().join("erin/new").join(&name)).unwrap();
        assert_eq!(std::os::unix::fs::MetadataExt::mtime(&meta), moon_landing);
    }

    #[test]
    fn staged_mtime_is_kept_after_publishing() {
        let root = initialised();
        let f = Folder::open(root.path(), &user("erin"), FolderKind::Inbox, PRIVATE).unwrap();
        let mut namer = Namer::new();
        let s = f.stage(&mut namer, Some(1577836800), Durability::Later, |w| w.write_all(b"old\n").map(|_| 4)).unwrap();
        f.sync_filesystem().unwrap();
        let names = f.publish(&mut namer, vec![s]).unwrap();
        assert!(names[0].starts_with("1577836800."));
        let meta = std::fs::metadata(root.path().join("erin/new").join(&names[0])).unwrap();
        assert_eq!(meta.modified().unwrap(), UNIX_EPOCH + Duration::from_secs(1577836800));
    }
}
