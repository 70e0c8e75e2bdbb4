//! What `check` found: the faults, the things it left alone, the counts per folder, and
//! their two forms, lines of text for a person and one JSON document for a program
//! (`--json`; its field names are an interface, tests/check.rs and tests/imap/e2e.py read
//! them).

use std::borrow::Cow;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use serde::{Serialize, Serializer};

use crate::time::format_time;

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
    // `--seals`: a sealed message gone without an audit entry removing it, or there with
    // another size or content; the chain not holding (a seal missing, edited, unsigned).
    SealedMissing { user: String, folder: String, name: String },
    SealedAltered { user: String, folder: String, name: String, what: String },
    SealChain(String),
    // An audit entry's removal that names a sealed message otherwise than it was sealed, or
    // that no expire or erase wrote; with `--seal-head`, a removal accounting for a sealed
    // message that the kept head does not vouch for; a message file older than the last
    // seal's run that no seal holds.
    SealRemovalMismatch(String),
    SealRemovalUnvouched(String),
    SealUnsealed { user: String, folder: String, name: String, what: String },
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
            Fault::SealedMissing { .. } => "sealed_missing",
            Fault::SealedAltered { .. } => "sealed_altered",
            Fault::SealChain(_) => "seal_chain",
            Fault::SealRemovalMismatch(_) => "seal_removal_mismatch",
            Fault::SealRemovalUnvouched(_) => "seal_removal_after_kept_head",
            Fault::SealUnsealed { .. } => "seal_skipped",
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
            Fault::Dedup(why) => write!(f, "dedup store is not usable (SQLite's integrity check): {why}"),
            Fault::SealedMissing { user, folder, name } => {
                write!(
                    f,
                    "sealed message missing: user {user}, folder {folder}, name {name} (no audit entry removed it)"
                )
            }
            Fault::SealedAltered { user, folder, name, what } => {
                write!(f, "sealed message altered: user {user}, folder {folder}, name {name}: {what}")
            }
            Fault::SealChain(why) => write!(f, "seal chain broken: {why}"),
            Fault::SealRemovalMismatch(why) => write!(f, "audit entry removes nothing sealed: {why}"),
            Fault::SealRemovalUnvouched(what) => write!(
                f,
                "removed after the kept head (no seal up to it records this removal; compare with your records): {what}"
            ),
            Fault::SealUnsealed { user, folder, name, what } => {
                write!(f, "message in no seal: user {user}, folder {folder}, name {name}: {what}")
            }
        }
    }
}

/// Something below the root that mailkeep did not make, left alone by check and repair.
#[derive(Debug, Serialize)]
pub struct Foreign {
    #[serde(serialize_with = "lossy")]
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
#[derive(Debug, Default, Serialize)]
pub struct FolderStats {
    pub user: String,
    pub folder: String,
    #[serde(serialize_with = "lossy")]
    pub path: PathBuf,
    pub messages: u64,
    pub bytes: u64,
    #[serde(serialize_with = "rfc3339")]
    pub oldest: Option<i64>,
    #[serde(serialize_with = "rfc3339")]
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
    /// With `--seals`: the chain's end and what it holds.
    pub seals: Option<SealSummary>,
}

/// What `check --seals` found in the chain.
#[derive(Debug, Default, Serialize)]
pub struct SealSummary {
    pub seals: u64,
    /// The newest seal's file name and digest: compare with the one kept off the machine.
    pub head: String,
    pub head_digest: String,
    pub sealed_messages: u64,
    /// Sealed messages whose removal audit.log records (expire, erase).
    pub removed: u64,
    /// Of those, the ones whose removal no seal (up to the kept head, with `--seal-head`)
    /// vouches for yet: who removed them, when and why, for the admin to read.
    pub removed_not_sealed: Vec<crate::seal::index::Removal>,
}

impl Report {
    /// Problems left after repairs; 0 means the backup is clean.
    pub fn unrepaired(&self) -> usize {
        let fixed = |p: &&Problem| matches!(p.repair, Some(Ok(_)));
        self.problems.len() - self.problems.iter().filter(fixed).count()
    }

    /// Messages and bytes in all folders.
    fn totals(&self) -> (u64, u64) {
        self.folders.iter().fold((0, 0), |(m, b), f| (m + f.messages, b + f.bytes))
    }

    /// One line a folder, a foreign thing and a problem, then the totals and the verdict.
    pub fn write_text(&self, out: &mut impl Write) -> io::Result<()> {
        // Names below the root are anybody's: each line is escaped (`log::escape`).
        for f in &self.folders {
            let mut line = format!("{}/{}: {} messages, {} bytes", f.user, f.folder, f.messages, f.bytes);
            if let (Some(a), Some(b)) = (f.oldest, f.newest) {
                line.push_str(&format!(", {} .. {}", format_time(a), format_time(b)));
            }
            writeln!(out, "{}", crate::log::escape(&line))?;
        }
        for f in &self.foreign {
            let line = format!("not mailkeep's: {}: {}; left alone", f.path.display(), f.why);
            writeln!(out, "{}", crate::log::escape(&line))?;
        }
        for p in &self.problems {
            let path = p.path.display();
            let line = match &p.repair {
                Some(Ok(done)) => format!("repaired: {path}: {}; {done}", p.fault),
                Some(Err(why)) => format!("problem: {path}: {} (repair failed: {why})", p.fault),
                None => format!("problem: {path}: {}", p.fault),
            };
            writeln!(out, "{}", crate::log::escape(&line))?;
        }
        if let Some(s) = &self.seals {
            for r in &s.removed_not_sealed {
                let what = match r.seq {
                    None => "removed, not yet sealed".to_string(),
                    Some(seq) => format!("removed after the kept head (in {})", crate::seal::seal_name(seq)),
                };
                let line = format!("{what}: {}", super::seals::who_when_why(r));
                writeln!(out, "{}", crate::log::escape(&line))?;
            }
            let line = if s.seals == 0 {
                "seals: none".to_string()
            } else {
                format!(
                    "seals: {} seals, head {} {}; {} sealed messages, {} of them removed on purpose",
                    s.seals, s.head, s.head_digest, s.sealed_messages, s.removed
                )
            };
            writeln!(out, "{line}")?;
        }
        let (messages, bytes) = self.totals();
        let left = self.unrepaired();
        let fixed = self.problems.len() - left;
        write!(out, "{} users, {} folders, {messages} messages, {bytes} bytes: ", self.users, self.folders.len())?;
        match (left, fixed) {
            (0, 0) => writeln!(out, "clean"),
            (_, 0) => writeln!(out, "{left} problems"),
            _ => writeln!(out, "{left} problems, {fixed} repaired"),
        }
    }

    /// The report as one JSON document (paths that are not UTF-8 are shown lossily, times
    /// in RFC 3339).
    pub fn write_json(&self, out: &mut impl Write) -> io::Result<()> {
        let (messages, bytes) = self.totals();
        let doc = JsonReport {
            root: self.root.to_string_lossy(),
            folders: &self.folders,
            problems: &self.problems,
            foreign: &self.foreign,
            users: self.users,
            messages,
            bytes,
            unrepaired: self.unrepaired(),
            seals: self.seals.as_ref(),
        };
        let json = serde_json::to_string_pretty(&doc).map_err(io::Error::other)?;
        writeln!(out, "{}", crate::log::escape_json(json))
    }
}

/// The JSON document's top level, in its field order.
#[derive(Serialize)]
struct JsonReport<'a> {
    root: Cow<'a, str>,
    folders: &'a [FolderStats],
    problems: &'a [Problem],
    foreign: &'a [Foreign],
    users: usize,
    messages: u64,
    bytes: u64,
    unrepaired: usize,
    #[serde(skip_serializing_if = "Option::is_none")]
    seals: Option<&'a SealSummary>,
}

/// A problem in JSON: its kind and message from the fault, and the repair's outcome as two
/// fields, `repaired` (what was done) and `repair_failed` (why not), each null when absent.
#[derive(Serialize)]
struct JsonProblem<'a> {
    #[serde(serialize_with = "lossy")]
    path: &'a Path,
    user: Option<&'a str>,
    kind: &'static str,
    message: String,
    repaired: Option<&'a str>,
    repair_failed: Option<&'a str>,
}

impl Serialize for Problem {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let (repaired, repair_failed) = match &self.repair {
            Some(Ok(done)) => (Some(done.as_str()), None),
            Some(Err(why)) => (None, Some(why.as_str())),
            None => (None, None),
        };
        JsonProblem {
            path: &self.path,
            user: self.user.as_deref(),
            kind: self.fault.kind(),
            message: self.fault.to_string(),
            repaired,
            repair_failed,
        }
        .serialize(s)
    }
}

fn lossy<S: Serializer>(path: impl AsRef<Path>, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&path.as_ref().to_string_lossy())
}

fn rfc3339<S: Serializer>(t: &Option<i64>, s: S) -> Result<S::Ok, S::Error> {
    match t {
        Some(t) => s.serialize_str(&format_time(*t)),
        None => s.serialize_none(),
    }
}
