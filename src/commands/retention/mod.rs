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

use std::collections::HashSet;
use std::fs::File;
use std::io::Write;
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};

use nix::fcntl::OFlag;
use nix::sys::stat::Mode;

use crate::audit::{self, AuditError, Entry};
use crate::commands::Error;
use crate::config::ConfigError;
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

/// The messages earlier entries of the audit log name, as (user, folder, name, SHA-256):
/// a run interrupted after its entry left some of them, which a rerun removes without
/// naming them a second time.
pub type Recorded = HashSet<(String, String, String, String)>;

fn recorded_key(user: &str, f: &Found) -> (String, String, String, String) {
    (user.to_string(), f.folder.name().to_string(), f.base().to_string(), f.sha256.clone())
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

    /// The audit log's entries as `Recorded`.
    pub fn recorded(&self) -> Result<Recorded, Error> {
        let entries = audit::parse(&audit::read_bytes(self.state.as_fd())?)?;
        let mut set = Recorded::new();
        for e in entries.iter().filter(|e| e.command == "expire" || e.command == "erase") {
            for r in &e.removed {
                set.insert((e.user.clone(), r.folder.clone(), r.name.clone(), r.sha256.clone()));
            }
        }
        Ok(set)
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
    /// 2. append one audit entry naming those no earlier entry names (a rerun after a crash
    ///    completes an earlier entry without repeating it), fsynced;
    /// 3. unlink them and fsync the directories (`removal::Folder::remove`).
    pub fn folder(&self, job: &Job<'_>, user: &str, user_dir: &OwnedFd, kind: FolderKind) -> Result<Done, Error> {
        let user_path = self.root.join(user);
        let Some(folder) = Folder::open(user_dir.as_fd(), &user_path, kind)? else { return Ok(Done::default()) };
        // 1.
        let found = folder.find(job.selection)?;
        if found.is_empty() {
            return Ok(Done::default());
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
            return Ok(Done { found: found.len(), ..Done::default() });
        }
        // 2.
        let unrecorded: Vec<_> =
            found.iter().filter(|f| !job.recorded.contains(&recorded_key(user, f))).map(Found::removed).collect();
        let earlier = found.len() - unrecorded.len();
        if !unrecorded.is_empty() {
            self.record(&Entry::now(job.command, user, job.reason, Some(kind.name()), unrecorded))?;
        }
        crate::fault::point("remove-after-audit");
        // 3.
        let removal = folder.remove(&found)?;
        for (name, errno) in &removal.failed {
            let path = folder.path.join(name);
            crate::log::stderr_line(&format!("cannot remove {}: {}", path.display(), errno.desc()));
        }
        let mut line = format!(
            "{} {} messages of user={} folder={}",
            job.done_word,
            removal.removed + removal.gone,
            escape(user),
            kind.name()
        );
        if earlier > 0 {
            line += &format!(" ({earlier} of them named by an earlier, interrupted run's audit entry)");
        }
        if !removal.failed.is_empty() {
            line += &format!("; {} could not be removed", removal.failed.len());
        }
        print(&(line + "\n"))?;
        Ok(Done { found: found.len(), failed: removal.failed.len(), removed: found })
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
    pub recorded: &'a Recorded,
}

/// What a folder's removal came to.
#[derive(Default)]
pub struct Done {
    pub found: usize,
    pub failed: usize,
    /// What was to be removed (empty on a dry run).
    pub removed: Vec<Found>,
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
