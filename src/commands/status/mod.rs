//! `mailkeep status`: whether the backup is working, in the terms a monitoring system reads
//! (Monitoring Plugins output and exit status, a Prometheus textfile, or JSON).
//!
//! A backup that stops silently is the failure to catch: an unmounted volume (the mount
//! point stays, empty and without the marker), copies that stopped arriving (the newest
//! `new/` mtime per direction is the heartbeat), a user no copy reaches (a routing rule that
//! misses someone), a filling disk, copies piling up deferred in Exim's queue. It is cheap
//! enough for every minute on 10 000 users: a few `fstatat`s per user, no folder listed
//! (`scan`). Nothing is written below the root.
//!
//! The verdict is the worst finding, in the order OK < WARNING < UNKNOWN < CRITICAL: a
//! fact status cannot learn does not hide one it knows is critical.

mod exim;
mod render;
mod scan;

use std::os::fd::AsFd;
use std::path::{Path, PathBuf};

use crate::cli::{StatusArgs, StatusFormat};
use crate::commands::Error;
use crate::envelope::{ACCOUNTS_MAX, User, lsearch_keys};
use crate::exit::{Classify, Exit};
use crate::root::{self, RootState};
use crate::time::{format_age, rough_age};

pub use exim::Queue;
pub use scan::{Copies, Space};

/// Less than this share of the space or inodes free is a WARNING.
pub const MIN_FREE: f64 = 0.10;

/// The Monitoring Plugins states, in the order findings combine.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    Ok,
    Warning,
    Unknown,
    Critical,
}

impl Level {
    pub fn name(self) -> &'static str {
        match self {
            Level::Ok => "OK",
            Level::Warning => "WARNING",
            Level::Unknown => "UNKNOWN",
            Level::Critical => "CRITICAL",
        }
    }

    /// The plugin exit status (also `mailkeep_status`).
    pub fn code(self) -> u8 {
        match self {
            Level::Ok => 0,
            Level::Warning => 1,
            Level::Critical => 2,
            Level::Unknown => 3,
        }
    }

    fn exit(self) -> Exit {
        match self {
            Level::Ok => Exit::Ok,
            Level::Warning => Exit::Problems,
            Level::Critical => Exit::Critical,
            Level::Unknown => Exit::TempFail,
        }
    }
}

/// One thing found, with what it means.
#[derive(Debug, Clone)]
pub struct Finding {
    pub level: Level,
    pub text: String,
}

/// Everything a run learnt; every output format is made from it.
#[derive(Debug)]
pub struct Report {
    pub root: PathBuf,
    pub now: i64,
    pub thresholds: Thresholds,
    /// The marker's creation time, when the root is initialised.
    pub created: Option<i64>,
    pub space: Option<Space>,
    /// The user directories and their newest copies (empty when the root could not be read).
    pub users: std::collections::BTreeMap<String, Copies>,
    pub newest: Copies,
    /// The users --accounts lists that had no copy for --user-warn, with their newest copy.
    pub silent_users: Option<Vec<(String, Option<i64>)>>,
    pub queue: Option<Queue>,
    pub findings: Vec<Finding>,
}

#[derive(Debug, Clone, Copy)]
pub struct Thresholds {
    pub warn: u64,
    pub crit: u64,
    pub user_warn: u64,
    pub queue_warn: u64,
}

impl Report {
    pub fn level(&self) -> Level {
        self.findings.iter().map(|f| f.level).max().unwrap_or(Level::Ok)
    }

    fn say(&mut self, level: Level, text: String) {
        self.findings.push(Finding { level, text });
    }

    /// How long ago `t` was (0 for a time ahead of the clock).
    pub fn age(&self, t: i64) -> u64 {
        u64::try_from(self.now.saturating_sub(t)).unwrap_or(0)
    }
}

/// Why a run could not hand its report over.
#[derive(Debug, thiserror::Error)]
pub enum StatusError {
    #[error("cannot write the status to {path}: {err}")]
    Out { path: PathBuf, err: std::io::Error },
}

impl Classify for StatusError {
    fn exit(&self) -> Exit {
        match self {
            // UNKNOWN to the monitoring system (`exit.rs`).
            StatusError::Out { .. } => Exit::TempFail,
        }
    }
}

/// Looks at the backup, writes the report, and ends with its verdict.
pub fn run(args: &StatusArgs) -> Result<Exit, Error> {
    let thresholds = Thresholds {
        warn: args.warn.as_secs(),
        crit: args.crit.as_secs(),
        user_warn: args.user_warn.as_secs(),
        queue_warn: args.queue_warn.as_secs(),
    };
    let report = look(args, thresholds);
    let text = match args.format {
        StatusFormat::Nagios => render::nagios(&report),
        StatusFormat::Json => render::json(&report, args.per_user),
        StatusFormat::Prometheus => render::prometheus(&report, args.per_user),
    };
    match &args.out {
        Some(path) => write_out(path, text.as_bytes()).map_err(|err| StatusError::Out { path: path.clone(), err })?,
        None => {
            use std::io::Write;
            let mut stdout = std::io::stdout().lock();
            stdout.write_all(text.as_bytes()).and_then(|()| stdout.flush()).map_err(Error::Stdout)?;
        }
    }
    Ok(report.level().exit())
}

/// Replaces `path` atomically (mode 0644: a metrics collector must read it).
fn write_out(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let name = path.file_name().ok_or_else(|| std::io::Error::from_raw_os_error(libc::EISDIR))?;
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let dir = crate::fsutil::open_dir_path(dir)?;
    crate::fsutil::replace_file(dir.as_fd(), name, bytes, 0o644, None)
}

/// Gathers every fact and judges each.
fn look(args: &StatusArgs, thresholds: Thresholds) -> Report {
    let mut report = Report {
        root: args.root.clone(),
        now: crate::time::now(),
        thresholds,
        created: None,
        space: None,
        users: Default::default(),
        newest: Copies::default(),
        silent_users: None,
        queue: None,
        findings: Vec::new(),
    };
    if look_at_root(&mut report) {
        judge_heartbeat(&mut report);
        if let Some(accounts) = &args.accounts {
            judge_coverage(&mut report, accounts);
        }
    }
    if args.exim_queue {
        judge_queue(&mut report, args.exim.as_deref());
    }
    if report.findings.is_empty() {
        report.say(Level::Ok, "copies arrive".into());
    }
    report
}

/// The marker, the root's mode and filesystem, and the users' newest copies; false when
/// there is nothing further to look at.
fn look_at_root(report: &mut Report) -> bool {
    let shown = report.root.display().to_string();
    match root::state(&report.root) {
        Ok(RootState::Initialised(marker)) => report.created = Some(marker.created),
        Ok(RootState::Missing) => {
            report.say(Level::Critical, format!("root {shown} is missing"));
            return false;
        }
        Ok(RootState::NotInitialised) => {
            let text =
                format!("root {shown} is not initialised or not mounted (no {}/{})", root::STATE_DIR, root::MARKER);
            report.say(Level::Critical, text);
            return false;
        }
        Err(e) if e.kind() == std::io::ErrorKind::InvalidData => {
            report.say(Level::Critical, format!("root {shown}: broken marker: {e}"));
            return false;
        }
        Err(e) => {
            report.say(Level::Unknown, format!("cannot read root {shown}: {e}"));
            return false;
        }
    }
    // The root is the admin's path: a symlink to it is followed, as every command does.
    let fd = match nix::fcntl::open(
        &report.root,
        nix::fcntl::OFlag::O_DIRECTORY | nix::fcntl::OFlag::O_RDONLY | nix::fcntl::OFlag::O_CLOEXEC,
        nix::sys::stat::Mode::empty(),
    ) {
        Ok(fd) => fd,
        Err(e) => {
            report.say(Level::Unknown, format!("cannot open root {shown}: {e}"));
            return false;
        }
    };
    match scan::mode(fd.as_fd()) {
        Ok(mode) if mode & 0o200 == 0 => {
            report.say(Level::Critical, format!("root {shown} is not writable by its owner (mode {mode:04o})"))
        }
        Ok(_) => {}
        Err(e) => report.say(Level::Unknown, format!("cannot stat root {shown}: {}", e.desc())),
    }
    judge_space(report, fd.as_fd());
    match scan::users(fd.as_fd()) {
        Ok(users) => {
            for (name, errno) in &users.unreadable {
                report.say(Level::Unknown, format!("cannot look into {shown}/{name}: {}", errno.desc()));
            }
            report.users = users.copies;
            report.newest = users.newest;
            true
        }
        Err(e) => {
            report.say(Level::Unknown, format!("cannot list root {shown}: {}", e.desc()));
            false
        }
    }
}

fn judge_space(report: &mut Report, root: std::os::fd::BorrowedFd<'_>) {
    let space = match scan::space(root) {
        Ok(space) => space,
        Err(e) => return report.say(Level::Unknown, format!("cannot statvfs the root: {}", e.desc())),
    };
    if space.read_only {
        report.say(Level::Critical, "the root's filesystem is mounted read-only".into());
    }
    if space.free_ratio() < MIN_FREE {
        let text = format!("{:.1}% space free on the root's filesystem (warn below 10%)", space.free_ratio() * 100.0);
        report.say(Level::Warning, text);
    }
    if let Some(ratio) = space.free_inodes_ratio().filter(|r| *r < MIN_FREE) {
        report.say(
            Level::Warning,
            format!("{:.1}% inodes free on the root's filesystem (warn below 10%)", ratio * 100.0),
        );
    }
    report.space = Some(space);
}

/// How far ahead of the clock a copy's time may be (clocks of relay and backup host differ
/// a little) before the heartbeat no longer believes it.
const FUTURE_MARGIN: i64 = 3600;

/// The heartbeat: the newest copy per direction, against --warn and --crit. A direction
/// without any copy yet is measured from the root's initialisation.
fn judge_heartbeat(report: &mut Report) {
    let t = report.thresholds;
    for (folder, newest) in [("INBOX", report.newest.inbox), ("Sent", report.newest.sent)] {
        let (age, what) = match (newest, report.created) {
            // A copy dated ahead of the clock (a clock that ran ahead, since set back) says
            // nothing about copies arriving now: past a margin it counts as no copy at all.
            (Some(at), _) if at > report.now + FUTURE_MARGIN => {
                let ahead = rough_age(u64::try_from(at - report.now).unwrap_or(0));
                (u64::MAX, format!("newest copy into {folder} is dated {ahead} ahead of the clock"))
            }
            (Some(at), _) => (report.age(at), format!("newest copy into {folder} {} ago", rough_age(report.age(at)))),
            (None, Some(created)) => {
                let age = report.age(created);
                (age, format!("no copy into {folder} since the root was initialised {} ago", rough_age(age)))
            }
            (None, None) => (u64::MAX, format!("no copy into {folder}")),
        };
        if age > t.crit {
            report.say(Level::Critical, format!("{what} (critical after {})", format_age(t.crit)));
        } else if age > t.warn {
            report.say(Level::Warning, format!("{what} (warning after {})", format_age(t.warn)));
        }
    }
}

/// The users `accounts` lists who had no copy, in either direction, for --user-warn.
fn judge_coverage(report: &mut Report, accounts: &Path) {
    let text = match crate::fsutil::read_config_file(accounts, ACCOUNTS_MAX) {
        Ok(text) => text,
        Err(e) => return report.say(Level::Unknown, format!("cannot read accounts file {}: {e}", accounts.display())),
    };
    let mut listed: Vec<String> = lsearch_keys(&text)
        .filter_map(|k| User::parse(std::ffi::OsStr::new(&*String::from_utf8_lossy(k))).ok())
        .map(|u| u.as_str().to_owned())
        .collect();
    listed.sort();
    listed.dedup();
    let limit = report.thresholds.user_warn;
    let silent: Vec<(String, Option<i64>)> = listed
        .into_iter()
        .map(|name| {
            let newest = report.users.get(&name).and_then(|c| c.newest());
            (name, newest)
        })
        // A user with no copy yet is measured from the root's initialisation, as the
        // heartbeat is: a fresh root names nobody until --user-warn has passed.
        .filter(|(_, newest)| match newest.or(report.created) {
            Some(t) => report.age(t) > limit,
            None => true,
        })
        .collect();
    if !silent.is_empty() {
        let names: Vec<&str> = silent.iter().map(|(n, _)| n.as_str()).collect();
        let shown = if names.len() > 5 { format!("{}, ...", names[..5].join(", ")) } else { names.join(", ") };
        let text = format!("{} listed users without a copy for {}: {shown}", silent.len(), format_age(limit));
        report.say(Level::Warning, text);
    }
    report.silent_users = Some(silent);
}

fn judge_queue(report: &mut Report, exim: Option<&Path>) {
    let Some(exim) = exim::binary(exim) else {
        return report.say(Level::Unknown, "--exim-queue: no Exim binary found (give --exim PATH)".into());
    };
    match exim::read(&exim) {
        Ok(queue) => {
            if let Some(oldest) = queue.oldest.filter(|age| *age >= report.thresholds.queue_warn) {
                let text = format!(
                    "{} queued messages wait for a mailkeep transport, the oldest for {} (warning after {})",
                    queue.waiting,
                    rough_age(oldest),
                    format_age(report.thresholds.queue_warn)
                );
                report.say(Level::Warning, text);
            }
            report.queue = Some(queue);
        }
        Err(e) => report.say(Level::Unknown, format!("cannot read Exim's queue: {e}")),
    }
}
