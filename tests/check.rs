//! `mailkeep check` on backups the real binary wrote: clean ones pass, and each fault an
//! IMAP server would trip on is found (exit 1), and `--repair` fixes the safe ones.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::time::Duration;

use crate::util::*;

const MSG: &[u8] = b"From: a@outside.example\nSubject: t\nMessage-ID: <c.1@outside.example>\n\nbody \xc3\xa4\n";

/// A backup with alice (INBOX and Sent) and bob (INBOX), written by `mailkeep deliver`.
fn backup() -> Env {
    let env = Env::new();
    for (user, dir) in [("alice", "in"), ("alice", "out"), ("bob", "in"), ("alice", "in")] {
        let args = ["--user", user, "--direction", dir, "--rcpt", "x@example.com", "--sender", "s@example.org"];
        assert_exit(&env.deliver(args, &[], MSG), 0);
    }
    env
}

fn check(env: &Env, extra: &[&str]) -> (i32, String) {
    let root = env.root();
    let mut args = vec!["check", "--root", root.to_str().unwrap()];
    args.extend_from_slice(extra);
    let out = env.run(&args, &[], b"");
    (code(&out), String::from_utf8_lossy(&out.stdout).into_owned() + &stderr(&out))
}

fn json(env: &Env) -> serde_json::Value {
    let out = env.run(["check", "--json", "--root", env.root().to_str().unwrap()], &[], b"");
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stdout)))
}

fn first_message(env: &Env, folder: &str) -> PathBuf {
    env.new_files(folder).into_iter().next().expect("a stored message")
}

/// Plants one fault, then asserts `check` reports it (exit 1, a line naming `needle`) and
/// that `--repair` leaves the backup clean exactly when the fault is a safe one to fix.
#[track_caller]
fn assert_found(env: &Env, needle: &str, repairable: bool) {
    let (rc, text) = check(env, &[]);
    assert_eq!(rc, 1, "check should find {needle:?}:\n{text}");
    let line = text.lines().find(|l| l.starts_with("problem: ") && l.contains(needle));
    assert!(line.is_some(), "no problem line with {needle:?}:\n{text}");
    let (rc, text) = check(env, &["--repair"]);
    if repairable {
        assert_eq!(rc, 0, "--repair should fix {needle:?}:\n{text}");
        assert!(text.lines().any(|l| l.starts_with("repaired: ") && l.contains(needle)), "{text}");
        let (rc, text) = check(env, &[]);
        assert_eq!(rc, 0, "clean after --repair:\n{text}");
    } else {
        assert_eq!(rc, 1, "--repair must leave {needle:?} alone:\n{text}");
    }
}

#[test]
fn clean_backup_exits_0_with_counts_per_user_and_folder() {
    let env = backup();
    let (rc, text) = check(&env, &[]);
    assert_eq!(rc, 0, "{text}");
    for line in ["alice/INBOX: 2 messages", "alice/Sent: 1 messages", "bob/INBOX: 1 messages"] {
        assert!(text.contains(line), "missing {line:?} in:\n{text}");
    }
    assert!(text.trim_end().ends_with("clean"), "{text}");
}

#[test]
fn json_report_parses_and_carries_sizes_and_dates() {
    let env = backup();
    let v = json(&env);
    assert_eq!(v["users"], 2);
    assert_eq!(v["unrepaired"], 0);
    let folders = v["folders"].as_array().unwrap();
    let inbox = folders.iter().find(|f| f["user"] == "alice" && f["folder"] == "INBOX").unwrap();
    let size: u64 = env.new_files("alice").iter().map(|p| fs::metadata(p).unwrap().len()).sum();
    assert_eq!(inbox["bytes"], size);
    assert!(inbox["oldest"].as_str().unwrap().ends_with('Z'));
}

#[test]
fn wrong_size_in_name_is_found_and_left_alone() {
    let env = backup();
    let f = first_message(&env, "alice");
    let size = fs::metadata(&f).unwrap().len();
    let name = f.file_name().unwrap().to_str().unwrap().replace(&format!(",S={size}"), &format!(",S={}", size + 1));
    fs::rename(&f, f.with_file_name(&name)).unwrap();
    assert_found(&env, &name, false);
    let v = json(&env);
    assert_eq!(v["problems"][0]["kind"], "size_mismatch");
}

#[test]
fn crlf_file_is_found() {
    let env = backup();
    let data = b"From: a@b\r\nSubject: crlf\r\n\r\nbody\r\n";
    let name = format!("1.M1P1Q1.elsewhere,S={}", data.len());
    fs::write(env.root().join("bob/new").join(&name), data).unwrap();
    assert_found(&env, &name, false);
}

#[test]
#[cfg_attr(not(feature = "fault-injection"), ignore = "needs the test hooks: cargo test --features fault-injection")]
fn old_tmp_file_is_found_and_swept() {
    let env = backup();
    let tmp = env.root().join("alice/tmp/1.M1P1Q1.crashed");
    fs::write(&tmp, "half a message").unwrap();
    // tmp/ files age by ctime, which no test can set: the first file is 4 s older than the
    // second, and check runs with its clock 2 s short of 36 h ahead, so only it is old.
    std::thread::sleep(Duration::from_secs(4));
    fs::write(env.root().join("alice/tmp/2.M1P1Q1.running"), "fresh").unwrap();
    let root = env.root();
    let in_36h = |extra: &[&str]| {
        let mut cmd = std::process::Command::new(BIN);
        cmd.args(["check", "--root", root.to_str().unwrap()]).args(extra);
        cmd.env_clear().env("PATH", "/usr/bin:/bin").env("MAILKEEP_FAULT", "clock+129598");
        let out = cmd.output().expect("run mailkeep check");
        (code(&out), String::from_utf8_lossy(&out.stdout).into_owned() + &stderr(&out))
    };
    let (rc, text) = in_36h(&[]);
    assert_eq!(rc, 1, "{text}");
    assert!(text.lines().any(|l| l.starts_with("problem: ") && l.contains("1.M1P1Q1.crashed")), "{text}");
    assert!(!text.contains("2.M1P1Q1.running"), "a younger tmp file is not old:\n{text}");
    let (_, text) = in_36h(&["--repair"]);
    assert!(text.lines().any(|l| l.starts_with("repaired: ") && l.contains("1.M1P1Q1.crashed")), "{text}");
    assert!(!tmp.exists() && env.root().join("alice/tmp/2.M1P1Q1.running").exists());
}

#[test]
fn unreadable_directory_is_found() {
    let env = backup();
    let cur = env.root().join("bob/cur");
    fs::set_permissions(&cur, fs::Permissions::from_mode(0o000)).unwrap();
    assert_found(&env, "bob/cur", false);
    fs::set_permissions(&cur, fs::Permissions::from_mode(0o700)).unwrap();
}

#[test]
fn missing_cur_is_found_and_recreated_like_its_siblings() {
    let env = backup();
    let cur = env.root().join("alice/.Sent/cur");
    fs::remove_dir(&cur).unwrap();
    assert_found(&env, ".Sent/cur", true);
    let (made, sibling) = (fs::metadata(&cur).unwrap(), fs::metadata(env.root().join("alice/.Sent")).unwrap());
    use std::os::unix::fs::MetadataExt;
    assert_eq!((made.uid(), made.gid(), made.mode()), (sibling.uid(), sibling.gid(), sibling.mode()));
}

#[test]
fn sent_without_subscriptions_is_found_and_subscribed() {
    let env = backup();
    let user = env.root().join("alice");
    fs::remove_file(user.join("subscriptions")).unwrap();
    fs::write(user.join("courierimapsubscribed"), "INBOX.Other").unwrap();
    let (rc, text) = check(&env, &[]);
    assert_eq!(rc, 1);
    assert_eq!(text.lines().filter(|l| l.starts_with("problem: ")).count(), 2, "{text}");
    assert_found(&env, "subscriptions", true);
    assert_eq!(fs::read_to_string(user.join("subscriptions")).unwrap(), "Sent\n");
    assert_eq!(fs::read_to_string(user.join("courierimapsubscribed")).unwrap(), "INBOX.Other\nINBOX.Sent\n");
}

#[test]
fn corrupt_dedup_store_is_found() {
    let env = backup();
    let dir = env.root().join(".mailkeep");
    fs::create_dir_all(&dir).unwrap();
    let db = dir.join("dedup.sqlite3");
    rusqlite::Connection::open(&db)
        .unwrap()
        .execute_batch("CREATE TABLE k(id TEXT); INSERT INTO k VALUES ('x');")
        .unwrap();
    assert_eq!(check(&env, &[]).0, 0, "a sound store is no problem");
    let mut bytes = fs::read(&db).unwrap();
    bytes[100..1000].fill(0x5a);
    fs::write(&db, bytes).unwrap();
    assert_found(&env, "dedup.sqlite3", false);
}

#[test]
fn user_option_limits_the_check_and_names_a_missing_user() {
    let env = backup();
    fs::remove_dir(env.root().join("bob/cur")).unwrap();
    assert_eq!(check(&env, &["--user", "alice"]).0, 0);
    let (rc, text) = check(&env, &["--user", "carol"]);
    assert_eq!(rc, 1);
    assert!(text.contains("no such user"), "{text}");
    assert_eq!(check(&env, &["--user", "../etc"]).0, 2);
}

#[test]
fn missing_root_exits_2_not_75_issue_19() {
    let env = Env::new();
    let missing = env.root().join("nope");
    let out = env.run(["check", "--root", missing.to_str().unwrap()], &[], b"");
    assert_exit(&out, 2);
    assert!(stderr(&out).contains(&*missing.to_string_lossy()), "{}", stderr(&out));
}

#[test]
fn check_reads_a_large_backup_quickly() {
    let env = backup();
    let new = env.root().join("bob/new");
    let body = vec![b'x'; 2000];
    for i in 0..5000 {
        fs::write(new.join(format!("{i}.M1P1Q1.h,S=2000")), &body).unwrap();
    }
    let t = std::time::Instant::now();
    let (rc, text) = check(&env, &[]);
    assert_eq!(rc, 0, "{text}");
    assert!(text.contains("bob/INBOX: 5001 messages"), "{text}");
    assert!(t.elapsed() < Duration::from_secs(5), "took {:?}", t.elapsed());
}

/// `check` (with `extra` arguments and `env`), killed after 10 s so a hang fails the test.
fn check_within(env: &Env, extra: &[&str], vars: &[(&str, &str)]) -> (i32, String) {
    let root = env.root();
    let mut args = vec!["check", "--root", root.to_str().unwrap()];
    args.extend_from_slice(extra);
    let out = env.run_within(Duration::from_secs(10), &args, vars, b"");
    (code(&out), String::from_utf8_lossy(&out.stdout).into_owned() + &stderr(&out))
}

/// A WAL dedup store, closed (so without -wal and -shm), in `dir`.
fn wal_store(dir: &std::path::Path) {
    fs::create_dir_all(dir).unwrap();
    let conn = rusqlite::Connection::open(dir.join("dedup.sqlite3")).unwrap();
    conn.pragma_update(None, "journal_mode", "WAL").unwrap();
    conn.execute_batch("CREATE TABLE k(id TEXT); INSERT INTO k VALUES ('x');").unwrap();
}

#[track_caller]
fn assert_problem(text: &str, rc: i32, path_end: &str, what: &str) {
    assert_eq!(rc, 1, "expected exit 1 (problems):\n{text}");
    let line = text.lines().find(|l| l.starts_with("problem: ") && l.contains(path_end) && l.contains(what));
    assert!(line.is_some(), "expected a problem line naming {path_end:?} with {what:?}, got:\n{text}");
}

#[test]
fn symlinked_store_directory_is_a_problem_and_nothing_is_made_through_it_issue_18() {
    let env = backup();
    let outside = env.dir.path().join("outside");
    wal_store(&outside);
    let before = files_below(&outside);
    fs::remove_dir_all(env.root().join(".mailkeep")).unwrap();
    std::os::unix::fs::symlink(&outside, env.root().join(".mailkeep")).unwrap();
    for extra in [&[][..], &["--repair"]] {
        let (rc, text) = check_within(&env, extra, &[]);
        assert_problem(&text, rc, "/.mailkeep", "symlink");
        assert_eq!(files_below(&outside), before, "nothing may be made through the symlink:\n{text}");
    }
}

#[test]
fn symlinked_store_file_is_a_problem_and_nothing_is_made_beside_its_target_issue_18() {
    let env = backup();
    let outside = env.dir.path().join("outside");
    wal_store(&outside);
    let before = files_below(&outside);
    std::os::unix::fs::symlink(outside.join("dedup.sqlite3"), env.root().join(".mailkeep/dedup.sqlite3")).unwrap();
    let (rc, text) = check_within(&env, &[], &[]);
    assert_problem(&text, rc, "/.mailkeep/dedup.sqlite3", "symlink");
    assert_eq!(files_below(&outside), before, "nothing may be made beside the symlink's target:\n{text}");
}

/// Directories mailkeep would never have made (names `deliver` refuses or would spell
/// otherwise, dot-directories without `maildirfolder`) are listed, never swept or filled
/// in; a folder an IMAP server marked with `maildirfolder` is checked and repaired.
#[test]
#[cfg_attr(not(feature = "fault-injection"), ignore = "needs the test hooks: cargo test --features fault-injection")]
fn repair_touches_only_what_mailkeep_makes_and_lists_the_rest_issue_18() {
    let env = backup();
    let root = env.root();
    let foreign = [root.join("Shared Docs"), root.join("Alice"), root.join("alice/.cache")];
    for dir in &foreign {
        fs::create_dir_all(dir.join("tmp")).unwrap();
        fs::write(dir.join("tmp/old-file"), "not mail").unwrap();
    }
    let drafts = root.join("alice/.Drafts");
    for d in ["tmp", "new"] {
        fs::create_dir_all(drafts.join(d)).unwrap();
    }
    fs::write(drafts.join("maildirfolder"), "").unwrap();
    // Two and a half days ahead: every tmp/ file is past the 36 h sweep.
    let later = [("MAILKEEP_FAULT", "clock+216000")];
    let (rc, text) = check_within(&env, &["--repair"], &later);
    assert_eq!(rc, 0, "{text}");
    for dir in &foreign {
        let shown = dir.display().to_string();
        assert!(
            text.lines().any(|l| l.starts_with("not mailkeep's: ") && l.contains(&format!("{shown}: "))),
            "expected {shown} listed as not mailkeep's in:\n{text}"
        );
        assert!(dir.join("tmp/old-file").exists(), "{shown}/tmp/old-file was swept:\n{text}");
        for made in ["cur", "new", "maildirfolder"] {
            assert!(!dir.join(made).exists(), "--repair made {shown}/{made}:\n{text}");
        }
    }
    assert!(drafts.join("cur").is_dir(), "the marked folder .Drafts is repaired:\n{text}");
    assert!(text.contains("alice/Drafts: 0 messages"), "{text}");
    let v = json(&env);
    let listed: Vec<&str> = v["foreign"].as_array().unwrap().iter().map(|f| f["path"].as_str().unwrap()).collect();
    let expected: Vec<String> = foreign.iter().map(|d| d.display().to_string()).collect();
    assert_eq!(listed.len(), 3, "expected {expected:?} in JSON \"foreign\", got {listed:?}");
    assert!(expected.iter().all(|e| listed.contains(&e.as_str())), "expected {expected:?}, got {listed:?}");
    assert_eq!(v["users"], 2, "only alice and bob are users");
}

/// A FIFO where mailkeep keeps a small file is a problem `check` reports at once, and
/// `--repair` leaves it alone.
#[track_caller]
fn assert_fifo_found(rel: &str) {
    let env = backup();
    let path = env.root().join(rel);
    fs::remove_file(&path).unwrap();
    nix::unistd::mkfifo(&path, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
    let (rc, text) = check_within(&env, &[], &[]);
    assert_problem(&text, rc, rel, "not a regular file");
    let (rc, text) = check_within(&env, &["--repair"], &[]);
    assert_problem(&text, rc, rel, "not a regular file");
    let st = fs::symlink_metadata(&path).unwrap();
    assert!(std::os::unix::fs::FileTypeExt::is_fifo(&st.file_type()), "--repair replaced the FIFO {rel}");
}

#[test]
fn fifo_as_subscriptions_is_found_without_hanging_issue_18() {
    assert_fifo_found("alice/subscriptions");
}

#[test]
fn fifo_as_courierimapsubscribed_is_found_without_hanging_issue_18() {
    assert_fifo_found("alice/courierimapsubscribed");
}

#[test]
fn fifo_as_maildirfolder_is_found_without_hanging_issue_18() {
    assert_fifo_found("alice/.Sent/maildirfolder");
}

/// A repair run as root gives what it makes the owner and permission bits of the folder it
/// is in (issue 19: repairs now write through fsutil's one small-file writer).
#[test]
fn repair_as_root_gives_what_it_makes_the_maildir_owner() {
    if !is_root() {
        return;
    }
    use std::os::unix::fs::{MetadataExt, chown};
    let env = backup();
    let user = env.root().join("alice");
    let mut todo = vec![user.clone()];
    while let Some(path) = todo.pop() {
        chown(&path, Some(65534), Some(65534)).unwrap();
        let mode = if path.is_dir() { 0o2770 } else { 0o660 };
        fs::set_permissions(&path, fs::Permissions::from_mode(mode)).unwrap();
        if path.is_dir() {
            todo.extend(fs::read_dir(&path).unwrap().map(|e| e.unwrap().path()));
        }
    }
    fs::remove_dir(user.join(".Sent/cur")).unwrap();
    fs::remove_file(user.join(".Sent/maildirfolder")).unwrap();
    fs::remove_file(user.join("courierimapsubscribed")).unwrap();
    let (rc, text) = check(&env, &["--repair"]);
    assert_eq!(rc, 0, "{text}");
    for (made, mode) in [(".Sent/cur", 0o42770), (".Sent/maildirfolder", 0o100660), ("courierimapsubscribed", 0o100660)]
    {
        let m = fs::symlink_metadata(user.join(made)).unwrap();
        let want = (65534, 65534, mode);
        assert_eq!(
            (m.uid(), m.gid(), m.mode()),
            want,
            "{made}: expected {want:?}, got {:?}",
            (m.uid(), m.gid(), m.mode())
        );
    }
    let hidden: Vec<_> = fs::read_dir(&user).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert!(!hidden.iter().any(|n| n.to_string_lossy().contains("mailkeep-")), "a temp file is left: {hidden:?}");
}

/// A name below the root that is not mailkeep's is printed escaped, as every other line
/// (issue 19: the "not mailkeep's" line printed a control byte as it was).
#[test]
fn a_foreign_name_with_a_control_byte_is_printed_escaped() {
    let env = backup();
    fs::create_dir(env.root().join("Odd\x1b[2Jname")).unwrap();
    let (rc, text) = check(&env, &[]);
    assert_eq!(rc, 0, "{text}");
    let line = text.lines().find(|l| l.starts_with("not mailkeep's: ")).expect("a not-mailkeep's line");
    assert!(!line.contains('\x1b'), "expected the ESC escaped, got {line:?}");
    assert!(line.contains("Odd\\x1b[2Jname"), "expected the name escaped, got {line:?}");
}

/// Issue 18 review: JSON escapes only C0 controls; DEL, C1 controls and bidi overrides in a
/// name reached the JSON report raw. They are `\uXXXX` escapes now, read back as the name.
#[test]
fn check_json_has_no_raw_control_or_bidi_characters() {
    let env = backup();
    let name = "ev\x1b[31mil\x7f\u{9b}\u{202e}x";
    fs::create_dir(env.root().join(name)).unwrap();
    let out = env.run(["check", "--root", env.root().to_str().unwrap(), "--json"], &[], b"");
    let text = String::from_utf8(out.stdout).unwrap();
    let raw: Vec<char> = text.chars().filter(|&c| (c.is_control() && c != '\n') || c == '\u{202e}').collect();
    assert!(raw.is_empty(), "raw characters {raw:?} in: {text}");
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    let paths: Vec<&str> = v["foreign"].as_array().unwrap().iter().map(|f| f["path"].as_str().unwrap()).collect();
    assert!(paths.iter().any(|p| p.ends_with(name)), "the name reads back whole: {paths:?}");
}

/// Issue 20 review: a marker that does not parse makes every delivery refuse the root, yet
/// check said "clean" and --repair wrote below it. Now check reports it and --repair
/// writes nothing (75, like a delivery).
#[test]
fn a_broken_root_marker_is_a_problem_and_repair_writes_nothing() {
    let env = backup();
    fs::remove_dir(env.root().join("bob/tmp")).unwrap(); // what --repair would make
    fs::write(env.root().join(".mailkeep/root.json"), "garbage").unwrap();
    let (rc, text) = check(&env, &[]);
    assert_eq!(rc, 1, "{text}");
    assert!(text.contains("root.json") && text.contains("deliveries refuse this root"), "{text}");
    let before = files_below(&env.root());
    let (rc, text) = check(&env, &["--repair"]);
    assert_eq!(rc, 1, "{text}");
    assert!(text.contains("--repair changes nothing below it"), "{text}");
    assert_eq!(files_below(&env.root()), before, "--repair wrote below a root deliveries refuse");
}

#[test]
fn check_still_walks_everything_when_no_thread_can_be_started_issue_24() {
    // The walk over the users starts threads (issue 24); a process limit that refuses them
    // (systemd's TasksMax, ulimit -u) must cost only speed, never the check. RLIMIT_NPROC
    // does not bind root: the check runs as nobody, allowed the one process it is.
    if !is_root() {
        eprintln!("skipped: needs root, to run the check as nobody");
        return;
    }
    let env = backup();
    let root = env.root();
    fs::set_permissions(env.dir.path(), fs::Permissions::from_mode(0o755)).unwrap();
    let chown = std::process::Command::new("chown").args(["-R", "nobody:nogroup"]).arg(&root).status().unwrap();
    assert!(chown.success());
    let (want_code, want) = check(&env, &[]);
    let mut cmd = std::process::Command::new("setpriv");
    cmd.args(["--reuid=nobody", "--regid=nogroup", "--clear-groups", "prlimit", "--nproc=1", "--", BIN, "check"]);
    cmd.arg("--root").arg(&root).env_clear().env("PATH", "/usr/bin:/bin");
    let out = run_with_stdin(cmd, b"");
    let got = String::from_utf8_lossy(&out.stdout).into_owned() + &stderr(&out);
    assert_eq!((code(&out), &got), (want_code, &want), "expected the report of an unlimited check, got another");
    assert!(want.contains("2 users") && want_code == 0, "{want}");
}
