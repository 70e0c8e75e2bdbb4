//! `mailkeep expire`, `erase` and `hold`: retention periods, erasure requests and legal
//! holds, each removal written into the audit log before the first file goes.
//!
//! The three share what is here: the root and its state directory opened without following
//! a symlink, the retention lock (`holds::lock`, held for the whole run), the audit entries
//! already written, and one folder's removal (`removal.rs` lists, hashes and unlinks; this
//! decides what the audit entry names and prints what happened).

pub mod erase;
pub mod expire;
pub mod hold;

use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::io::Write;
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};

use nix::fcntl::OFlag;
use nix::sys::stat::Mode;

use crate::audit::{self, AuditError, Entry};
use crate::commands::Error;
use crate::config::ConfigError;
use crate::dedup::Store;
use crate::exit::{Classify, Exit};
use crate::fsutil::{self, OpenError};
use crate::holds::{self, HoldsError, StateFiles};
use crate::log::escape;
use crate::maildir::FolderKind;
use crate::removal::{Folder, Found, RemovalError, Selection};
use crate::root::{self, RootError};

#[derive(Debug, thiserror::Error)]
pub enum RetentionError {
    #[error(
        "erase refused: user {user} is on legal hold since {since} ({reason}); nothing was removed \
         (release the hold first: mailkeep hold --release --user {user} --reason TEXT)"
    )]
    Held { user: String, since: String, reason: String },
    #[error("no Maildir for user {user} below {}", root.display())]
    NoSuchUser { user: String, root: PathBuf },
    #[error("usage: {0}")]
    Usage(String),
    #[error(transparent)]
    Audit(#[from] AuditError),
    #[error(transparent)]
    Holds(#[from] HoldsError),
    #[error(transparent)]
    Removal(#[from] RemovalError),
}

impl Classify for RetentionError {
    fn exit(&self) -> Exit {
        match self {
            RetentionError::Held { .. } => Exit::Problems,
            RetentionError::NoSuchUser { .. } | RetentionError::Usage(_) => Exit::Usage,
            // A log or holds file that is not a regular file, or does not parse: the
            // admin's to look at; nothing is removed without its record.
            RetentionError::Audit(AuditError::NotAFile | AuditError::Corrupt { .. }) => Exit::Usage,
            RetentionError::Audit(AuditError::Io { .. }) => Exit::TempFail,
            RetentionError::Holds(HoldsError::NotAFile(_) | HoldsError::Corrupt(_)) => Exit::Usage,
            RetentionError::Holds(HoldsError::Io { .. }) => Exit::TempFail,
            RetentionError::Removal(e) => e.exit(),
        }
    }
}

impl From<AuditError> for Error {
    fn from(e: AuditError) -> Error {
        RetentionError::from(e).into()
    }
}

impl From<HoldsError> for Error {
    fn from(e: HoldsError) -> Error {
        RetentionError::from(e).into()
    }
}

impl From<RemovalError> for Error {
    fn from(e: RemovalError) -> Error {
        RetentionError::from(e).into()
    }
}

/// The messages named by entries no run completed, by (command, user, folder), as (name,
/// SHA-256): a run interrupted after its entry left some of them, which a rerun removes
/// without naming them a second time. A run that removed all it named appends a completion
/// entry (`done_command`: "expire-done", "erase-done", no names) for its user and folder,
/// which completes every earlier entry of the three; a message named by a completed entry
/// and later restored is named again when it goes again.
pub type Incomplete = HashMap<(String, String, String), HashSet<(String, String)>>;

/// The command of the entry that completes the entries of `command` for a user and folder.
pub fn done_command(command: &str) -> String {
    format!("{command}-done")
}

/// The entries of the audit log that no completion entry follows.
fn incomplete(entries: &[Entry]) -> Incomplete {
    let mut open = Incomplete::new();
    for e in entries {
        let folder = e.folder.clone().unwrap_or_default();
        if let Some(command) = e.command.strip_suffix("-done") {
            open.remove(&(command.to_string(), e.user.clone(), folder));
        } else if e.command == "expire" || e.command == "erase" {
            let names = open.entry((e.command.clone(), e.user.clone(), folder)).or_default();
            names.extend(e.removed.iter().map(|r| (r.name.clone(), r.sha256.clone())));
        }
    }
    open
}

/// A root opened for a retention command, with the retention lock held.
pub struct Session {
    pub root: PathBuf,
    pub root_fd: OwnedFd,
    pub state: OwnedFd,
    pub files: StateFiles,
    _lock: Option<File>,
}

impl Session {
    /// Opens `root` (initialised, or exit 2/75 as the other admin commands) and, unless for
    /// a dry run (which creates nothing, not even the lock file), takes the retention lock.
    /// As root only with `allow_root`.
    pub fn open(root: &Path, allow_root: bool, dry_run: bool) -> Result<Session, Error> {
        if nix::unistd::geteuid().is_root() && !allow_root {
            return Err(ConfigError::RunningAsRoot.into());
        }
        let (root_fd, state) = open_state(root)?;
        let files = StateFiles::of(state.as_fd())?;
        let waiting = || crate::log::stderr_line("waiting for another expire, erase or hold on this root to finish");
        let lock = if dry_run { None } else { Some(holds::lock(state.as_fd(), files, waiting)?) };
        Ok(Session { root: root.to_path_buf(), root_fd, state, files, _lock: lock })
    }

    /// The holds now recorded.
    pub fn holds(&self) -> Result<holds::Holds, Error> {
        Ok(holds::read(self.state.as_fd())?)
    }

    /// The audit log's entries that no run completed.
    pub fn incomplete(&self) -> Result<Incomplete, Error> {
        Ok(incomplete(&audit::parse(&audit::read_bytes(self.state.as_fd())?)?))
    }

    /// The dedup store whose keys a removal forgets (deliver's, or `--dedup-store`);
    /// `None` when there is none yet.
    pub fn dedup_store(&self, file: Option<&Path>) -> Result<Option<Store>, Error> {
        let at = crate::dedup::Location::new(&self.root, file)?;
        let root_id = crate::root::require_existing(&self.root)?.id;
        Ok(Store::open_existing(&at, 30, &root_id)?)
    }

    /// Appends `entry` to the audit log, durably; a log created now belongs to the root's
    /// owner even when we run as root.
    pub fn record(&self, entry: &Entry) -> Result<(), Error> {
        if self.files.owner.is_some() {
            holds::ensure_file(self.state.as_fd(), audit::AUDIT_LOG, self.files)?;
        }
        Ok(audit::append(self.state.as_fd(), entry, self.files.mode)?)
    }

    /// The Maildir of `user`, never through a symlink; `None` when there is none.
    pub fn user_dir(&self, user: &str) -> Result<Option<OwnedFd>, Error> {
        let path = self.root.join(user);
        match fsutil::open_dir(self.root_fd.as_fd(), user) {
            Ok(fd) => Ok(Some(fd)),
            Err(OpenError::Missing) => Ok(None),
            Err(OpenError::Symlink) => Err(RemovalError::Symlink(path).into()),
            Err(OpenError::WrongType) => Err(RemovalError::NotADirectory(path).into()),
            Err(e) => Err(RemovalError::Io { op: "open", path, errno: e.errno() }.into()),
        }
    }

    /// Removes what `job` selects from the folder `kind` of `user` (Maildir open as
    /// `user_dir`), or with a dry run lists it:
    /// 1. find and hash the messages (`removal::Folder::find`);
    /// 2. append one audit entry naming those no incomplete entry names (a rerun after a
    ///    crash completes an earlier entry without repeating it), fsynced;
    /// 3. forget the dedup keys of every name of the entry and the incomplete ones, before
    ///    a file goes: a crash after an unlink must not leave the key of a removed message,
    ///    which would drop the message's next copy as a duplicate;
    /// 4. unlink them and fsync the directories (`removal::Folder::remove`);
    /// 5. list again: whatever still matches is reported (a failure, exit 1);
    /// 6. when nothing was left, append the completion entry.
    pub fn folder(&self, job: &Job<'_>, user: &str, user_dir: &OwnedFd, kind: FolderKind) -> Result<Done, Error> {
        let user_path = self.root.join(user);
        let Some(folder) = Folder::open(user_dir.as_fd(), &user_path, kind)? else { return Ok(Done::default()) };
        // 1.
        let listing = folder.find(job.selection)?;
        let (found, future) = (listing.found, listing.future);
        let no_names = HashSet::new();
        let key = (job.command.to_string(), user.to_string(), kind.name().to_string());
        let earlier = job.incomplete.get(&key).unwrap_or(&no_names);
        if found.is_empty() && (earlier.is_empty() || job.dry_run) {
            return Ok(Done { future, ..Done::default() });
        }
        if job.dry_run {
            let mut text = String::new();
            for f in &found {
                text += &format!(
                    "would remove user={} folder={} name={} size={} date={}\n",
                    escape(user),
                    kind.name(),
                    escape(f.base()),
                    f.size,
                    crate::time::format_time(f.mtime)
                );
            }
            print(&text)?;
            return Ok(Done { found: found.len(), future, ..Done::default() });
        }
        // 2.
        let named_earlier = |f: &&Found| earlier.contains(&(f.base().to_string(), f.sha256.clone()));
        let unrecorded: Vec<_> = found.iter().filter(|f| !named_earlier(f)).map(Found::removed).collect();
        let named_before = found.len() - unrecorded.len();
        if !unrecorded.is_empty() {
            self.record(&Entry::now(job.command, user, job.reason, Some(kind.name()), unrecorded.clone()))?;
        }
        crate::fault::point("remove-after-audit");
        // 3.
        let names = unrecorded.iter().map(|r| r.name.as_str()).chain(earlier.iter().map(|(name, _)| name.as_str()));
        let keys = job.forget(user, kind, names.collect())?;
        // 4.
        let removal = folder.remove(&found)?;
        for (name, why) in &removal.failed {
            let path = folder.path.join(name);
            crate::log::stderr_line(&format!("cannot remove {}: {why}", path.display()));
        }
        // 5.
        let failed: HashSet<&str> = removal.failed.iter().map(|(name, _)| name.as_str()).collect();
        let mut left = 0;
        for f in folder.find(job.selection)?.found.iter().filter(|f| !failed.contains(f.name.as_str())) {
            let path = folder.path.join(f.sub.dir()).join(&f.name);
            crate::log::stderr_line(&format!(
                "still there after the {}: {} (it matches; delivered or renamed meanwhile? run it again)",
                job.command,
                path.display()
            ));
            left += 1;
        }
        // 6.
        let problems = removal.failed.len() + left;
        if problems == 0 {
            self.record(&Entry::now(&done_command(job.command), user, job.reason, Some(kind.name()), Vec::new()))?;
        }
        let mut line = format!(
            "{} {} messages of user={} folder={}",
            job.done_word,
            removal.removed + removal.gone,
            escape(user),
            kind.name()
        );
        if named_before > 0 {
            line += &format!(" ({named_before} of them named by an earlier, interrupted run's audit entry)");
        }
        if found.is_empty() {
            line += " (completing an earlier, interrupted run's audit entry)";
        }
        if problems > 0 {
            line += &format!("; {problems} could not be removed");
        }
        print(&(line + "\n"))?;
        Ok(Done { found: found.len(), failed: problems, future, keys })
    }
}

/// What one run asks of each folder.
pub struct Job<'a> {
    /// "expire" or "erase", as the audit entry says.
    pub command: &'static str,
    /// "expired" or "erased", as the summary line says.
    pub done_word: &'static str,
    pub reason: Option<&'a str>,
    pub selection: &'a Selection,
    pub dry_run: bool,
    pub incomplete: &'a Incomplete,
    /// The dedup store, when there is one (not opened for a dry run).
    pub dedup: Option<&'a Store>,
    /// Forget every key of the user (an erase of all its messages), not only the removed
    /// messages' keys.
    pub forget_user: bool,
}

impl Job<'_> {
    /// Forgets the dedup keys of `user`'s messages `names` in folder `kind`, and, as the job
    /// says, all of the user's or those of the selected Message-ID. Returns how many.
    pub fn forget(&self, user: &str, kind: FolderKind, names: Vec<&str>) -> Result<usize, Error> {
        let Some(store) = self.dedup else { return Ok(0) };
        if self.forget_user {
            return Ok(store.forget_user(user)?);
        }
        let mut n = store.forget_files(user, kind.name(), &names)?;
        if let Some(id) = &self.selection.message_id {
            n += store.forget_message_id(user, id)?;
        }
        Ok(n)
    }
}

/// What a folder's removal came to.
#[derive(Default)]
pub struct Done {
    pub found: usize,
    /// Not removed: failed unlinks, and matching messages still there after.
    pub failed: usize,
    /// Files dated in the future (see `removal::Listing`).
    pub future: usize,
    /// Dedup keys forgotten.
    pub keys: usize,
}

/// The root (followed: the admin's path, as the other commands take it) and its state
/// directory (never followed), after the marker is checked.
fn open_state(root: &Path) -> Result<(OwnedFd, OwnedFd), Error> {
    root::require_existing(root)?;
    let flags = OFlag::O_DIRECTORY | OFlag::O_RDONLY | OFlag::O_CLOEXEC;
    let root_fd = nix::fcntl::open(root, flags, Mode::empty()).map_err(|errno| RemovalError::Io {
        op: "open",
        path: root.to_path_buf(),
        errno,
    })?;
    let state = match root::open_state_dir(root_fd.as_fd()) {
        Ok(Some(fd)) => fd,
        Ok(None) => {
            return Err(RootError::NotInitialised { root: root.to_path_buf(), why: "no .mailkeep in it" }.into());
        }
        Err(OpenError::Symlink) => return Err(RootError::Symlink(root.join(root::STATE_DIR)).into()),
        Err(e) => {
            let path = root.join(root::STATE_DIR);
            return Err(RemovalError::Io { op: "open", path, errno: e.errno() }.into());
        }
    };
    Ok((root_fd, state))
}

/// The folders a run goes through: `only`, or all that mailkeep writes.
pub fn folders(only: Option<crate::cli::RetentionFolder>) -> Vec<FolderKind> {
    use crate::cli::RetentionFolder as F;
    match only {
        None => vec![FolderKind::Inbox, FolderKind::Sent, FolderKind::Chats],
        Some(F::Inbox) => vec![FolderKind::Inbox],
        Some(F::Sent) => vec![FolderKind::Sent],
        Some(F::Chats) => vec![FolderKind::Chats],
    }
}

/// Writes `text` to stdout now (a long run shows its progress).
pub fn print(text: &str) -> Result<(), Error> {
    let mut out = std::io::stdout().lock();
    out.write_all(text.as_bytes()).and_then(|()| out.flush()).map_err(Error::Stdout)
}
