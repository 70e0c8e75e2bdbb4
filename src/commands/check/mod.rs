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

//!
//! The parts: `walk` goes through the root, the users and their folders and records what
//! it finds; `repair` holds what `--repair` does about a finding; `report` is the findings
//! and their text and JSON forms; `seals` is `--seals`, the chain and the sealed messages.

mod repair;
mod report;
mod seals;
mod walk;

use std::io::{self, Write};
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::OFlag;
use nix::sys::stat::Mode;

use crate::cli::{CheckArgs, UsageError};
use crate::commands::Error;
use crate::envelope::User;
use crate::exit::{Classify, Exit};
use crate::root::RootError;

pub use report::{Fault, FolderStats, Foreign, Problem, Report, SealSummary};
pub use walk::{HEAD_SCAN, size_in_name};

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

pub fn run(args: &CheckArgs) -> Result<Exit, Error> {
    let only = match &args.user {
        Some(u) => Some(User::parse(u).map_err(|e| UsageError(e.to_string()))?),
        None => None,
    };
    // An unmounted volume would check clean, with no users: the weekly check must say so.
    // A marker that cannot be read, or a symlink as .mailkeep, makes every delivery refuse
    // the root: it is reported (the walk reports the symlink), and --repair changes nothing
    // below such a root.
    let (refused, broken_marker) = match crate::root::require_existing(&args.root) {
        Ok(_) => (false, None),
        Err(RootError::Marker { path, err }) => (true, Some((path, err))),
        Err(RootError::Symlink(_)) => (true, None),
        Err(e) => return Err(e.into()),
    };
    let mut report = check(&args.root, only.as_ref(), args.repair && !refused, crate::time::now())?;
    if let Some((path, err)) = broken_marker {
        let why = format!("the root's marker: {err}; deliveries refuse this root (--repair changes nothing below it)");
        report.problems.push(Problem { path, user: None, fault: Fault::Unreadable(why), repair: None });
    }
    if args.seals {
        verify_seals(args, only.as_ref(), &mut report)?;
    }
    let mut out = io::stdout().lock();
    let written = if args.json { report.write_json(&mut out) } else { report.write_text(&mut out) };
    written.and_then(|()| out.flush()).map_err(CheckError::Output)?;
    Ok(if report.unrepaired() == 0 { Exit::Ok } else { Exit::Problems })
}

/// `--seals`: the chain and the sealed messages (`seals`), into `report`.
fn verify_seals(args: &CheckArgs, only: Option<&User>, report: &mut Report) -> Result<(), Error> {
    let key = args.verify_key.as_deref().map(crate::seal::key::VerifyKey::load).transpose()?;
    let opts = seals::Options { verify_content: args.verify_content, key, head: args.seal_head.as_deref(), only };
    let root_fd =
        crate::fsutil::open_dir_path(&args.root).map_err(|err| CheckError::Root { path: args.root.clone(), err })?;
    seals::verify(&args.root, root_fd.as_fd(), &opts, report)?;
    Ok(())
}

/// Checks (and with `repair` fixes) the backup below `root`, or only user `only`'s part of
/// it; `now` decides tmp/ ages. Users are walked in parallel (`threads`).
pub fn check(root: &Path, only: Option<&User>, repair: bool, now: i64) -> Result<Report, CheckError> {
    check_with(root, only, repair, now, crate::parallel::threads())
}

/// `check` with `threads` threads walking the users (1: no thread is started).
pub fn check_with(
    root: &Path,
    only: Option<&User>,
    repair: bool,
    now: i64,
    threads: usize,
) -> Result<Report, CheckError> {
    let root_err = |e: Errno| CheckError::Root { path: root.to_path_buf(), err: e.into() };
    let flags = OFlag::O_DIRECTORY | OFlag::O_RDONLY | OFlag::O_CLOEXEC;
    let root_fd = nix::fcntl::open(root, flags, Mode::empty()).map_err(root_err)?;
    let mut checker = walk::Checker::new(root, repair, now);
    checker.root(root_fd.as_fd(), only, threads).map_err(root_err)?;
    checker.dedup(root_fd.as_fd());
    Ok(checker.into_report())
}

#[cfg(test)]
mod tests {
    use super::walk::FOLDER_DIRS;
    use super::*;
    use std::ffi::OsStr;
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
    fn json_report_keeps_its_field_names_and_escapes_what_it_must() {
        let root = tempfile::tempdir().unwrap();
        maildir(root.path(), "dan");
        fs::create_dir(root.path().join("Odd\"name\n")).unwrap();
        fs::remove_dir(root.path().join("dan/.Sent/tmp")).unwrap();
        let r = check(root.path(), None, true, crate::time::now()).unwrap();
        let mut out = Vec::new();
        r.write_json(&mut out).unwrap();
        let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
        let keys = |v: &serde_json::Value| v.as_object().unwrap().keys().cloned().collect::<Vec<_>>().join(" ");
        assert_eq!(keys(&v), "bytes folders foreign messages problems root unrepaired users");
        assert_eq!(keys(&v["folders"][0]), "bytes folder messages newest oldest path user");
        assert_eq!(keys(&v["problems"][0]), "kind message path repair_failed repaired user");
        assert_eq!(keys(&v["foreign"][0]), "path user why");
        assert_eq!(v["foreign"][0]["path"], root.path().join("Odd\"name\n").to_str().unwrap());
        assert_eq!(v["foreign"][0]["user"], serde_json::Value::Null);
        assert_eq!(v["problems"][0]["kind"], "missing_dir");
        assert_eq!(v["problems"][0]["repaired"], "created tmp/");
        assert_eq!(v["problems"][0]["repair_failed"], serde_json::Value::Null);
        assert!(v["folders"][0]["oldest"].as_str().unwrap().ends_with('Z'));
        assert_eq!(
            (v["users"].as_u64(), v["messages"].as_u64(), v["unrepaired"].as_u64()),
            (Some(1), Some(2), Some(0))
        );
    }

    /// A tree of many users, each with its own mix of faults, some names not mailkeep's.
    fn many_users(root: &Path) {
        fs::create_dir(root.join(".mailkeep")).unwrap();
        for i in 0..40 {
            let u = maildir(root, &format!("user{i:02}"));
            for m in 0..i % 7 {
                fs::write(u.join(format!("cur/{i}{m}.M1P1Q1.h,S=2:2,S")), "x\n").unwrap();
            }
            match i % 5 {
                1 => fs::write(u.join("new/9.M1P1Q1.h,S=99"), "short\n").unwrap(),
                2 => fs::write(u.join("new/9.M1P1Q1.h,S=8"), "a: b\r\n\r\n").unwrap(),
                3 => fs::remove_file(u.join("subscriptions")).unwrap(),
                4 => fs::remove_dir(u.join(".Sent/tmp")).unwrap(),
                _ => {}
            }
        }
        fs::create_dir(root.join("Odd")).unwrap();
        std::os::unix::fs::symlink("user01", root.join("user99")).unwrap();
    }

    fn outputs(r: &Report) -> (String, String) {
        let (mut text, mut json) = (Vec::new(), Vec::new());
        r.write_text(&mut text).unwrap();
        r.write_json(&mut json).unwrap();
        (String::from_utf8(text).unwrap(), String::from_utf8(json).unwrap())
    }

    #[test]
    fn parallel_walk_reports_exactly_what_the_serial_walk_reports() {
        let root = tempfile::tempdir().unwrap();
        many_users(root.path());
        let now = crate::time::now();
        let serial = check_with(root.path(), None, false, now, 1).unwrap();
        assert_eq!(serial.users, 40);
        assert!(serial.problems.len() >= 30 && serial.foreign.len() == 1, "{:?}", serial.problems);
        for threads in [2, 3, 8, 64] {
            let parallel = check_with(root.path(), None, false, now, threads).unwrap();
            assert_eq!(outputs(&parallel), outputs(&serial), "{threads} threads against 1");
        }
    }

    #[test]
    fn parallel_repair_fixes_what_the_serial_repair_fixes() {
        let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        many_users(a.path());
        many_users(b.path());
        let now = crate::time::now();
        let serial = check_with(a.path(), None, true, now, 1).unwrap();
        let parallel = check_with(b.path(), None, true, now, 4).unwrap();
        // The findings and the totals (the folder lines carry the two trees' own mtimes).
        let rel = |r: &Report, root: &Path| {
            let text = outputs(r).0.replace(root.to_str().unwrap(), "ROOT");
            text.lines().filter(|l| !l.contains(" messages, ") || l.contains(" users, ")).collect::<Vec<_>>().join("\n")
        };
        assert_eq!(rel(&parallel, b.path()), rel(&serial, a.path()));
        let again = check_with(b.path(), None, false, now, 4).unwrap();
        assert_eq!(again.unrepaired(), serial.unrepaired(), "{:?}", again.problems);
    }
}
