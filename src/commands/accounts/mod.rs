//! `mailkeep accounts sync`: rewrites the accounts file (Exim lsearch, one local part a line)
//! from Google Workspace's Directory API, because Exim copies mail only for the local parts
//! listed there and a new employee missing from it means their mail is not backed up.
//!
//! Exit status (the admin family, `exit.rs`): 0 written (or nothing to change, or
//! `--dry-run`); 1 refused, the result would remove more than `--max-shrink` of the entries,
//! or be that much smaller than the file was at any time in the last 30 days (so that a list
//! shrinking a little each run is caught too); 2 bad usage, or the key file is unusable or
//! readable by others; 75 the directory could not be read whole, or had more than
//! `--max-pages` pages (the file is left as it was).

mod directory;
mod file;
mod jwt;

use std::collections::BTreeSet;
use std::ffi::OsStr;
use std::path::PathBuf;
use std::time::Duration;

use crate::cli::AccountsSyncArgs;
use crate::envelope::User;
use crate::exit::{Classify, Exit};
use crate::log::stderr_line;
use directory::{Account, Directory, Endpoints};
use file::Sizes;

/// Overrides the 30 s limit on each HTTP request.
const TIMEOUT_ENV: &str = "MAILKEEP_HTTP_TIMEOUT_SECS";

#[derive(Debug, thiserror::Error)]
pub enum AccountsError {
    #[error("usage: {0}")]
    Usage(String),
    #[error("service account key {}: {reason}", path.display())]
    Key { path: PathBuf, reason: String },
    #[error("service account key {} is readable by others (mode {mode:04o}): chmod 600 it", path.display())]
    KeyExposed { path: PathBuf, mode: u32 },
    #[error("{what}: {reason}; accounts file left as it was")]
    Api { what: String, reason: String },
    #[error(
        "{what}: the server still had more after {pages} pages (--max-pages); accounts file left as it was \
         (if the directory really is that large, raise --max-pages)"
    )]
    TooManyPages { what: String, pages: u32 },
    #[error("cannot read accounts file {}: {err}", path.display())]
    Read { path: PathBuf, err: std::io::Error },
    #[error("cannot write accounts file {}: {err}; old file left as it was", path.display())]
    Write { path: PathBuf, err: std::io::Error },
}

impl Classify for AccountsError {
    fn exit(&self) -> Exit {
        match self {
            AccountsError::Usage(_) => Exit::Usage,
            AccountsError::Key { .. } | AccountsError::KeyExposed { .. } => Exit::Config,
            AccountsError::Api { .. }
            | AccountsError::TooManyPages { .. }
            | AccountsError::Read { .. }
            | AccountsError::Write { .. } => Exit::TempFail,
        }
    }
}

/// Runs the sync; `main` turns a failure into its one line and exit status.
pub fn sync(args: &AccountsSyncArgs) -> Result<Exit, crate::commands::Error> {
    Ok(run(args)?)
}

fn run(args: &AccountsSyncArgs) -> Result<Exit, AccountsError> {
    let domain = checked_domain(&args.domain)?;
    if !args.admin.contains('@') || args.admin.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(AccountsError::Usage(format!("--admin \"{}\": want the address of a Workspace admin", args.admin)));
    }
    let max_shrink = parse_percent(&args.max_shrink)?;
    let timeout = timeout_from_env()?;
    let key = jwt::ServiceKey::load(&args.google_key)?;
    let endpoints = Endpoints::new(&key, args.api_base.as_deref())?;
    let (old_bytes, old) = file::read_current(&args.out)?;

    let dir = Directory::connect(&key, &args.admin, &endpoints, timeout)?;
    let users = dir.users(&domain, args.max_pages)?;
    let groups = if args.include_groups { dir.groups(&domain, args.max_pages)? } else { Vec::new() };
    let found = collect(&users, &groups, &domain, args.include_aliases);

    let added: Vec<&String> = found.names.difference(&old).collect();
    let removed: Vec<&String> = old.difference(&found.names).collect();
    let today = crate::time::now().div_euclid(86400);
    let sizes = old_bytes.as_deref().map(Sizes::parse).unwrap_or_default();
    let shrink = Shrink::judge(&old, &found.names, &sizes, today, max_shrink);
    // A forced list is the new reference: the earlier sizes are forgotten.
    let sizes = if args.force { Sizes::default() } else { sizes.after(today, old.len(), found.names.len()) };
    let content = file::render(&found.names, &sizes);
    let outcome = if shrink.is_some() && !args.force {
        Outcome::Refused
    } else if args.dry_run {
        Outcome::DryRun
    } else if old_bytes.as_deref() == Some(&content[..]) {
        Outcome::Unchanged
    } else {
        file::replace(&args.out, &content)?;
        Outcome::Written
    };
    println!(
        "mailkeep accounts sync: added {}, removed {}, total {} ({} suspended kept, {} addresses of other domains \
         skipped): {}",
        added.len(),
        removed.len(),
        found.names.len(),
        found.suspended,
        found.foreign,
        outcome.as_str(),
    );
    // Names of the old file were typed by hand and may hold anything: escaped like every line.
    added.iter().for_each(|n| println!("+ {}", crate::log::escape(n)));
    removed.iter().for_each(|n| println!("- {}", crate::log::escape(n)));
    for addr in &found.unusable {
        stderr_line(&format!("warning: {addr} left out: mailkeep deliver accepts only [a-z0-9.-_+=] local parts"));
    }
    match shrink {
        Some(why) if outcome == Outcome::Refused => {
            stderr_line(&format!(
                "refused: {} {why}, more than --max-shrink {}; if the directory is right (check the delegated \
                 scopes, --admin and --domain), rerun with --force",
                args.out.display(),
                args.max_shrink,
            ));
            Ok(Exit::Problems)
        }
        _ => Ok(Exit::Ok),
    }
}

/// Why a new list shrinks too much: against the current file, or against the largest size
/// of the last 30 days.
#[derive(Debug, Clone, PartialEq)]
enum Shrink {
    Removes { removed: usize, of: usize },
    BelowLargest { now: usize, largest: usize, day: i64 },
}

impl Shrink {
    fn judge(old: &BTreeSet<String>, new: &BTreeSet<String>, sizes: &Sizes, today: i64, max: f64) -> Option<Shrink> {
        let too_much = |lost: usize, of: usize| lost as f64 * 100.0 > max * of as f64;
        let removed = old.difference(new).count();
        if too_much(removed, old.len()) {
            return Some(Shrink::Removes { removed, of: old.len() });
        }
        let (day, largest) = sizes.largest_since(today)?;
        let now = new.len();
        (largest > now && too_much(largest - now, largest)).then_some(Shrink::BelowLargest { now, largest, day })
    }
}

impl std::fmt::Display for Shrink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let pct = |lost: usize, of: usize| lost as f64 * 100.0 / of as f64;
        match *self {
            Shrink::Removes { removed, of } => {
                write!(f, "would lose {removed} of its {of} entries ({:.1}%)", pct(removed, of))
            }
            Shrink::BelowLargest { now, largest, day } => write!(
                f,
                "would have {now} entries, {:.1}% fewer than the {largest} it had until {} (the largest of the \
                 last {} days)",
                pct(largest - now, largest),
                file::day_name(day),
                file::SIZES_DAYS,
            ),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    Refused,
    DryRun,
    Unchanged,
    Written,
}

impl Outcome {
    fn as_str(self) -> &'static str {
        match self {
            Outcome::Refused => "refused, nothing written",
            Outcome::DryRun => "dry run, nothing written",
            Outcome::Unchanged => "unchanged",
            Outcome::Written => "written",
        }
    }
}

/// What the directory's lists give for one domain.
#[derive(Debug, Default)]
struct Found {
    names: BTreeSet<String>,
    suspended: usize,
    foreign: usize,
    /// Addresses of the domain whose local part `deliver` would refuse.
    unusable: Vec<String>,
}

/// The local parts of `domain` among the users' (and groups') addresses. Suspended users are
/// kept: a suspension is often temporary, the relay still sees their mail (Google bounces it
/// only after our copy), and a batch of suspensions must not trip the shrink check.
fn collect(users: &[Account], groups: &[Account], domain: &str, aliases: bool) -> Found {
    let mut found = Found::default();
    for account in users.iter().chain(groups) {
        found.suspended += usize::from(account.suspended);
        let others = account.aliases.iter().chain(&account.non_editable_aliases);
        for addr in std::iter::once(&account.email).chain(others.filter(|_| aliases)) {
            let local = addr.rsplit_once('@').filter(|(_, d)| d.eq_ignore_ascii_case(domain)).map(|(l, _)| l);
            match local.map(|l| User::parse(OsStr::new(l))) {
                None => found.foreign += 1,
                Some(Ok(user)) => drop(found.names.insert(user.as_str().to_string())),
                Some(Err(_)) => found.unusable.push(addr.clone()),
            }
        }
    }
    found
}

fn checked_domain(raw: &str) -> Result<String, AccountsError> {
    let domain = raw.to_ascii_lowercase();
    let ok = !domain.is_empty()
        && domain.contains('.')
        && domain.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-');
    if ok {
        Ok(domain)
    } else {
        Err(AccountsError::Usage(format!("--domain \"{raw}\": want a domain like example.com")))
    }
}

/// `10%` or `10`: a share from 0 to 100 percent.
fn parse_percent(raw: &str) -> Result<f64, AccountsError> {
    let value = raw.trim().strip_suffix('%').unwrap_or(raw.trim()).parse::<f64>();
    match value {
        Ok(v) if (0.0..=100.0).contains(&v) => Ok(v),
        _ => Err(AccountsError::Usage(format!("--max-shrink \"{raw}\": want a percentage from 0% to 100%"))),
    }
}

fn timeout_from_env() -> Result<Duration, AccountsError> {
    let Some(raw) = std::env::var_os(TIMEOUT_ENV) else {
        return Ok(Duration::from_secs(30));
    };
    match raw.to_str().and_then(|s| s.parse::<u64>().ok()) {
        Some(secs) if secs > 0 => Ok(Duration::from_secs(secs)),
        _ => Err(AccountsError::Usage(format!(
            "{TIMEOUT_ENV}=\"{}\": want whole seconds, 1 or more",
            raw.to_string_lossy()
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn account(email: &str, aliases: &[&str], suspended: bool) -> Account {
        let aliases = aliases.iter().map(|a| a.to_string()).collect();
        Account { email: email.into(), aliases, non_editable_aliases: vec![], suspended }
    }

    #[test]
    fn keeps_local_parts_of_the_domain_only_lower_cased() {
        let users = [
            account("Alice@Example.COM", &["ali@example.com", "a@other.example"], false),
            account("bob@other.example", &[], false),
            account("o'brien@example.com", &[], false),
            account("sus@example.com", &[], true),
        ];
        let groups = [account("Sales@example.com", &["vertrieb@example.com"], false)];
        let found = collect(&users, &groups, "example.com", false);
        assert_eq!(found.names.iter().collect::<Vec<_>>(), ["alice", "sales", "sus"]);
        assert_eq!((found.suspended, found.foreign), (1, 1));
        assert_eq!(found.unusable, ["o'brien@example.com"]);
        let found = collect(&users, &groups, "example.com", true);
        assert_eq!(found.names.iter().collect::<Vec<_>>(), ["ali", "alice", "sales", "sus", "vertrieb"]);
        assert_eq!(found.foreign, 2);
    }

    #[test]
    fn max_shrink_is_a_percentage() {
        assert_eq!(parse_percent("10%").unwrap(), 10.0);
        assert_eq!(parse_percent("2.5").unwrap(), 2.5);
        for bad in ["", "%", "-1%", "101%", "ten"] {
            assert!(parse_percent(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn domain_must_look_like_one() {
        assert_eq!(checked_domain("Example.COM").unwrap(), "example.com");
        for bad in ["", "localhost", "a b.com", "x@y.com"] {
            assert!(checked_domain(bad).is_err(), "{bad}");
        }
    }
}
