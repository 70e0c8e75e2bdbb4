//! `deliver --dedup`: the provider's extra copies of one message fold into one file per
//! user and folder, and no real copy is ever dropped (issue 4).

use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};

use crate::util::*;

fn msg(id: &str) -> Vec<u8> {
    format!("From: alice@ourdomain.example\nTo: x@outside.example\nMessage-ID: <{id}>\nSubject: d\n\nbody\n")
        .into_bytes()
}

fn args<'a>(user: &'a str, dir: &'a str) -> Vec<&'a str> {
    vec!["--user", user, "--direction", dir, "--rcpt", "x@outside.example", "--dedup"]
}

/// Starts `n` deliveries of the same message, feeds them all at once, returns exit codes.
fn deliver_at_once(env: &Env, n: usize, message: &[u8]) -> Vec<i32> {
    let root = env.root();
    let children: Vec<_> = (0..n)
        .map(|_| {
            let mut c = Command::new(BIN);
            c.args(["deliver", "--root", root.to_str().unwrap(), "--log", "none"]).args(args("alice", "out"));
            if is_root() {
                c.arg("--allow-root");
            }
            c.env_clear().env("PATH", "/usr/bin:/bin").env("SENDER", "alice@ourdomain.example");
            c.stdin(Stdio::piped()).stdout(Stdio::null()).stderr(Stdio::piped()).spawn().unwrap()
        })
        .collect();
    children
        .into_iter()
        .map(|mut c| {
            c.stdin.take().unwrap().write_all(message).unwrap();
            let out = c.wait_with_output().unwrap();
            if !out.status.success() {
                eprintln!("{}", String::from_utf8_lossy(&out.stderr));
            }
            out.status.code().unwrap_or(-1)
        })
        .collect()
}

#[test]
fn sixteen_simultaneous_copies_leave_one_file() {
    let env = Env::new();
    for round in 0..5 {
        let codes = deliver_at_once(&env, 16, &msg(&format!("race{round}@x")));
        assert!(codes.iter().all(|&c| c == 0), "round {round}: exit codes {codes:?}");
        assert_eq!(env.new_files("alice/.Sent").len(), round + 1, "round {round}");
    }
}

#[test]
fn duplicate_is_logged_with_the_file_it_duplicates() {
    let env = Env::new();
    let mut a = args("alice", "out");
    a.extend(["--log", "stderr"]);
    let first = env.deliver(&a, &[], &msg("log@x"));
    assert_exit(&first, 0);
    let second = env.deliver(&a, &[], &msg("log@x"));
    assert_exit(&second, 0);
    let name = env.new_files("alice/.Sent")[0].file_name().unwrap().to_str().unwrap().to_string();
    assert!(stderr(&second).contains(&format!("result=duplicate of={name}")), "{}", stderr(&second));
    assert_eq!(env.new_files("alice/.Sent").len(), 1);
}

#[test]
fn same_message_id_is_kept_per_user_and_per_folder() {
    let env = Env::new();
    for (user, dir) in [("alice", "out"), ("alice", "in"), ("bob", "out"), ("bob", "in")] {
        assert_exit(&env.deliver(args(user, dir), &[], &msg("shared@x")), 0);
    }
    for folder in ["alice", "alice/.Sent", "bob", "bob/.Sent"] {
        assert_eq!(env.new_files(folder).len(), 1, "{folder}");
    }
}

#[test]
fn messages_without_message_id_are_all_stored() {
    let env = Env::new();
    let mut a = args("alice", "in");
    a.extend(["--log", "stderr"]);
    for body in
        [&b"Subject: no id\n\nbody\n"[..], b"Subject: no id\n\nbody\n", b"Message-ID: <>\n\nx\n", b"no headers\n"]
    {
        let out = env.deliver(&a, &[], body);
        assert_exit(&out, 0);
        assert!(stderr(&out).contains("result=stored dedup=no-id"), "{}", stderr(&out));
    }
    assert_eq!(env.new_files("alice").len(), 4);
}

#[test]
fn without_dedup_every_copy_is_stored() {
    let env = Env::new();
    for _ in 0..3 {
        assert_exit(&env.deliver(["--user", "alice", "--direction", "out"], &[], &msg("plain@x")), 0);
    }
    assert_eq!(env.new_files("alice/.Sent").len(), 3);
}

#[test]
#[cfg_attr(not(feature = "fault-injection"), ignore = "needs the test hooks: cargo test --features fault-injection")]
fn crash_between_store_and_commit_keeps_the_message_and_retry_adds_at_most_one() {
    let env = Env::new();
    let crashed = env.deliver(args("alice", "out"), &[("MAILKEEP_FAULT", "after-store")], &msg("crash@x"));
    assert_ne!(code(&crashed), 0, "the fault point must stop the process");
    assert_eq!(env.new_files("alice/.Sent").len(), 1, "the stored copy survives the crash");
    assert_exit(&env.deliver(args("alice", "out"), &[], &msg("crash@x")), 0);
    let after_retry = env.new_files("alice/.Sent").len();
    assert!(after_retry <= 2, "retry stored more than one extra copy: {after_retry}");
    assert_exit(&env.deliver(args("alice", "out"), &[], &msg("crash@x")), 0);
    assert_eq!(env.new_files("alice/.Sent").len(), after_retry, "once committed, copies fold");
}

#[test]
fn corrupt_store_exits_75_and_stores_nothing() {
    let env = Env::new();
    std::fs::write(env.root().join(".mailkeep/dedup.sqlite3"), vec![0x5a; 8192]).unwrap();
    let out = env.deliver(args("alice", "out"), &[], &msg("corrupt@x"));
    assert_exit(&out, 75);
    assert!(stderr(&out).contains("dedup.sqlite3"), "{}", stderr(&out));
    assert!(env.new_files("alice/.Sent").is_empty());
}

#[test]
fn store_that_cannot_be_opened_exits_75() {
    let env = Env::new();
    std::fs::remove_dir_all(env.root().join(".mailkeep")).unwrap();
    std::fs::write(env.root().join(".mailkeep"), b"a file where the store's directory should be").unwrap();
    let out = env.deliver(args("alice", "out"), &[], &msg("noopen@x"));
    assert_exit(&out, 75);
    assert!(env.new_files("alice/.Sent").is_empty());
}

#[test]
fn dedup_admin_commands_report_and_prune() {
    let env = Env::new();
    for i in 0..3 {
        assert_exit(&env.deliver(args("alice", "out"), &[], &msg(&format!("s{i}@x"))), 0);
    }
    let root = env.root();
    let out = env.run(["dedup", "stats", "--root", root.to_str().unwrap()], &[], b"");
    assert_exit(&out, 0);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("user=alice folder=Sent keys=3"), "{text}");
    let out = env.run(["dedup", "prune", "--root", root.to_str().unwrap(), "--dedup-window", "0"], &[], b"");
    assert_exit(&out, 0);
    assert!(String::from_utf8_lossy(&out.stdout).contains("pruned"), "{}", String::from_utf8_lossy(&out.stdout));
}

/// Issue 18: a Message-ID alone is no proof of "already stored". A message planted first
/// under the ID of one to come must not make the real one vanish with exit 0.
#[test]
fn a_reused_message_id_with_another_body_is_stored_and_logged() {
    let env = Env::new();
    let mut a = args("bob", "in");
    a.extend(["--log", "stderr"]);
    let planted = b"From: mallory@example.net\nMessage-ID: <c@example.org>\n\nplanted\n";
    let real = b"From: carol@example.org\nMessage-ID: <c@example.org>\n\nsigned contract\n";
    assert_exit(&env.deliver(&a, &[], planted), 0);
    let out = env.deliver(&a, &[], real);
    assert_exit(&out, 0);
    assert!(stderr(&out).contains("result=stored dedup=id-reused"), "expected a stored line, got: {}", stderr(&out));
    let bodies: Vec<String> =
        env.new_files("bob").iter().map(|f| String::from_utf8_lossy(&std::fs::read(f).unwrap()).into_owned()).collect();
    assert!(bodies.iter().any(|b| b.ends_with("\nsigned contract\n")), "the real message is stored: {bodies:?}");
    assert_eq!(bodies.len(), 2);
}

/// The provider's extra copies differ in their headers only (another Received line, the
/// headers of the SMTP transaction): they still fold. CRLF and LF copies store alike.
#[test]
fn copies_that_differ_only_in_headers_fold_into_one() {
    let env = Env::new();
    let mut a = args("alice", "out");
    a.extend(["--log", "stderr"]);
    let first = b"Received: from a\nMessage-ID: <split@x>\nSubject: s\n\nthe body\n".to_vec();
    let second =
        b"Received: from b\r\nReceived: from a\r\nMessage-ID: <split@x>\r\nSubject: s\r\n\r\nthe body\r\n".to_vec();
    assert_exit(&env.deliver(&a, &[], &first), 0);
    let out = env.deliver(&a, &[], &second);
    assert_exit(&out, 0);
    assert!(stderr(&out).contains("result=duplicate"), "{}", stderr(&out));
    assert_eq!(env.new_files("alice/.Sent").len(), 1);
    assert!(files_below(&env.root().join("alice/.Sent/tmp")).is_empty(), "the duplicate's tmp file is removed");
}

/// Delivers message `i` of a run with `--dedup` into alice's Sent and returns the exit code.
fn deliver_numbered(env: &Env, i: usize) -> i32 {
    let out = env.deliver(args("alice", "out"), &[], &msg(&format!("n{i}@x")));
    if code(&out) != 0 {
        eprintln!("delivery {i}: {}", stderr(&out).trim_end());
    }
    code(&out)
}

#[test]
fn symlinked_store_directory_is_refused_with_75_and_nothing_is_made_outside_issue_18_23() {
    let env = Env::new();
    let outside = env.dir.path().join("outside");
    std::fs::create_dir(&outside).unwrap();
    std::fs::remove_dir_all(env.root().join(".mailkeep")).unwrap();
    std::os::unix::fs::symlink(&outside, env.root().join(".mailkeep")).unwrap();
    let out = env.deliver(args("alice", "out"), &[], &msg("link@x"));
    assert_exit(&out, 75); // Postfix bounces 73 (issue 23)
    assert_eq!(stderr(&out).lines().count(), 1, "one line on stderr: {}", stderr(&out));
    let root = env.root();
    let stats = env.run(["dedup", "stats", "--root", root.to_str().unwrap()], &[], b"");
    assert_exit(&stats, 2); // an admin command: the admin removes the link, then runs it again
    assert_eq!(files_below(&outside), Vec::<std::path::PathBuf>::new(), "nothing may be made in the symlink's target");
    assert!(env.new_files("alice/.Sent").is_empty());
}

#[test]
fn symlinked_store_file_is_refused_with_75_issue_18_23() {
    let env = Env::new();
    let outside = env.dir.path().join("outside");
    std::fs::create_dir(&outside).unwrap();
    std::os::unix::fs::symlink(outside.join("dedup.sqlite3"), env.root().join(".mailkeep/dedup.sqlite3")).unwrap();
    let out = env.deliver(args("alice", "out"), &[], &msg("filelink@x"));
    assert_exit(&out, 75);
    assert_eq!(files_below(&outside), Vec::<std::path::PathBuf>::new());
}

/// Swaps `ROOT/.mailkeep` (a real directory, holding the store) with a symlink to a
/// directory outside the root, over and over, while deliveries with `--dedup` run: each
/// must either use the real store or refuse (75), and nothing may ever appear outside.
#[test]
fn store_directory_swapped_for_a_symlink_mid_delivery_never_leads_outside_issue_18() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};
    let env = Env::new();
    let root = env.root();
    let outside = env.dir.path().join("outside");
    std::fs::create_dir(&outside).unwrap();
    assert_eq!(deliver_numbered(&env, 0), 0, "the first delivery makes the real store");
    std::os::unix::fs::symlink(&outside, root.join(".swap")).unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let swapper = {
        let (stop, root) = (stop.clone(), root.clone());
        std::thread::spawn(move || {
            let dir = std::fs::File::open(&root).unwrap();
            let mut swaps = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let exchange = nix::fcntl::RenameFlags::RENAME_EXCHANGE;
                nix::fcntl::renameat2(&dir, ".mailkeep", &dir, ".swap", exchange).unwrap();
                swaps += 1;
            }
            swaps
        })
    };
    let codes: Vec<i32> = (1..=100).map(|i| deliver_numbered(&env, i)).collect();
    stop.store(true, Ordering::Relaxed);
    let swaps = swapper.join().unwrap();
    let stored = codes.iter().filter(|&&c| c == 0).count();
    let outside_files = files_below(&outside);
    assert!(
        outside_files.is_empty(),
        "expected nothing outside the root, got {outside_files:?} ({swaps} swaps, exit codes {codes:?})"
    );
    assert!(codes.iter().all(|&c| c == 0 || c == 75), "expected only 0 or 75, got {codes:?}");
    assert_eq!(env.new_files("alice/.Sent").len(), stored + 1, "every delivery that exited 0 stored its message");
}

/// Issue 18 review: a message with an empty body (a one-time code in its Subject) says
/// nothing in its body; two of them under one Message-ID are two messages.
#[test]
fn messages_with_a_blank_body_and_one_message_id_are_told_apart_by_their_headers() {
    let env = Env::new();
    let a = args("alice", "in");
    for code in ["111111", "999999"] {
        let msg = format!("From: noreply@bank.example\nMessage-ID: <otp@bank.example>\nSubject: code {code}\n\n\n");
        assert_exit(&env.deliver(&a, &[], msg.as_bytes()), 0);
    }
    assert_eq!(env.new_files("alice").len(), 2);
}

/// Issue 18 review: a message without a blank line (digested whole) must not count as a
/// stored message whose *body* is that message.
#[test]
fn a_message_digested_whole_is_no_duplicate_of_one_whose_body_it_is() {
    let env = Env::new();
    let a = args("alice", "in");
    let inner = b"Message-ID: <w@x>\nSubject: no blank line after me\n";
    let outer = [&b"Message-ID: <w@x>\nSubject: attacker\n\n"[..], inner].concat();
    assert_exit(&env.deliver(&a, &[], &outer), 0);
    assert_exit(&env.deliver(&a, &[], inner), 0);
    assert_eq!(env.new_files("alice").len(), 2);
}

/// Issue 18 review: SQLite looks for a `-journal` beside the store even in WAL mode and
/// opens it read-only, which blocks for good on a FIFO. Every store file SQLite opens is
/// opened without blocking, and a FIFO among them is refused: deliver exits 75 at once,
/// check reports it, dedup stats fails; none hangs.
#[test]
fn a_fifo_as_any_file_of_the_store_hangs_nothing() {
    let limit = std::time::Duration::from_secs(10);
    for name in ["dedup.sqlite3-journal", "dedup.sqlite3-wal", "dedup.sqlite3-shm"] {
        let env = Env::new();
        assert_exit(&env.deliver(args("alice", "in"), &[], &msg("first@x")), 0);
        let fifo = env.root().join(".mailkeep").join(name);
        let _ = std::fs::remove_file(&fifo);
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
        let out = env.deliver_within(limit, args("alice", "in"), &[], &msg("second@x"));
        assert_exit(&out, 75);
        assert!(stderr(&out).contains(name), "{name}: the line names it: {}", stderr(&out));
        let root = env.root();
        let check = env.run_within(limit, ["check", "--root", root.to_str().unwrap()], &[], b"");
        assert_exit(&check, 1);
        let stats = env.run_within(limit, ["dedup", "stats", "--root", root.to_str().unwrap()], &[], b"");
        assert_ne!(code(&stats), 0, "{name}");
    }
}

/// Issue 24: `--dedup-store FILE` keeps the store outside the root (on local disk, for a
/// root on NFS), folds as the root's own store does, and `dedup stats` reads it there.
#[test]
fn a_store_given_by_dedup_store_folds_copies_and_leaves_none_in_the_root() {
    let env = Env::new();
    let local = env.dir.path().join("local");
    std::fs::create_dir(&local).unwrap();
    let store = local.join("relay-a.sqlite3");
    let mut a = args("alice", "out");
    a.extend(["--dedup-store", store.to_str().unwrap()]);
    for _ in 0..3 {
        assert_exit(&env.deliver(&a, &[], &msg("elsewhere@x")), 0);
    }
    assert_eq!(env.new_files("alice/.Sent").len(), 1, "three copies, one stored");
    assert!(store.is_file(), "expected the store at {}", store.display());
    let in_root = env.root().join(".mailkeep/dedup.sqlite3");
    assert!(!in_root.exists(), "expected no store in the root, got {}", in_root.display());
    let root = env.root();
    let stats = env.run(
        ["dedup", "stats", "--root", root.to_str().unwrap(), "--dedup-store", store.to_str().unwrap()],
        &[],
        b"",
    );
    assert_exit(&stats, 0);
    let text = String::from_utf8_lossy(&stats.stdout);
    assert!(text.contains("user=alice folder=Sent keys=1"), "expected alice's one key, got:\n{text}");
    // The environment variable says the same, as MAILKEEP_ROOT does for --root.
    let by_env = env.run(
        ["dedup", "stats", "--root", root.to_str().unwrap()],
        &[("MAILKEEP_DEDUP_STORE", store.to_str().unwrap())],
        b"",
    );
    assert_exit(&by_env, 0);
    assert_eq!(String::from_utf8_lossy(&by_env.stdout), text);
}

/// Issue 24: SQLite's locks do not hold on NFS or CephFS. A store there, the root's own on
/// a root on NFS or one given by --dedup-store, is refused with one line naming it and the
/// way out; a delivery defers (75, which Postfix retries too: it bounces 73; the MTA keeps
/// the copy until the admin moves the store) and stores nothing, `dedup stats` exits 2. (No test machine mounts NFS: the test hook
/// makes fstatfs report NFS's and CephFS's magic numbers.)
#[test]
#[cfg_attr(not(feature = "fault-injection"), ignore = "needs the test hooks: cargo test --features fault-injection")]
fn a_store_on_a_network_filesystem_is_refused_and_nothing_is_stored() {
    for (fs, magic) in [("NFS", "fs-type=6969"), ("CephFS", "fs-type=0x00c36400")] {
        let env = Env::new();
        let local = env.dir.path().join("local");
        std::fs::create_dir(&local).unwrap();
        let store = local.join("dedup.sqlite3");
        let root = env.root();
        for given in [None, Some(store.to_str().unwrap())] {
            let mut a = args("alice", "out");
            a.extend(given.map(|s| ["--dedup-store", s]).into_iter().flatten());
            let out = env.deliver(&a, &[("MAILKEEP_FAULT", magic)], &msg("nfs@x"));
            assert_exit(&out, 75);
            let err = stderr(&out);
            assert_eq!(err.lines().count(), 1, "{fs} {given:?}: expected one line, got:\n{err}");
            assert!(
                err.contains(fs) && err.contains("--dedup-store"),
                "{fs} {given:?}: expected a line naming {fs} and --dedup-store, got: {err}"
            );
            assert!(env.new_files("alice/.Sent").is_empty(), "{fs} {given:?}: nothing may be stored");
            let mut stats = vec!["dedup", "stats", "--root", root.to_str().unwrap()];
            stats.extend(given.map(|s| ["--dedup-store", s]).into_iter().flatten());
            assert_exit(&env.run(&stats, &[("MAILKEEP_FAULT", magic)], b""), 2);
        }
        assert!(!store.exists() && !root.join(".mailkeep/dedup.sqlite3").exists(), "{fs}: no store may be created");
        // On local disk the same delivery goes through.
        assert_exit(&env.deliver(args("alice", "out"), &[], &msg("nfs@x")), 0);
    }
}

/// Issue 24: a --dedup-store file is refused as the root's own store is: a symlink with
/// 73 (nothing made at its target), a FIFO with 75 at once (no hang), a missing directory
/// with 75 (deliver; Exim retries) and 2 (dedup stats).
#[test]
fn a_dedup_store_that_is_a_symlink_fifo_or_missing_directory_is_refused() {
    let limit = std::time::Duration::from_secs(10);
    let env = Env::new();
    let local = env.dir.path().join("local");
    let outside = env.dir.path().join("outside");
    std::fs::create_dir(&local).unwrap();
    std::fs::create_dir(&outside).unwrap();
    let link = local.join("link.sqlite3");
    std::os::unix::fs::symlink(outside.join("x.sqlite3"), &link).unwrap();
    let fifo = local.join("fifo.sqlite3");
    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
    let missing = env.dir.path().join("no-such-dir/dedup.sqlite3");
    let root = env.root();
    for (store, want, admin) in [(&link, 75, 2), (&fifo, 75, 75), (&missing, 75, 2)] {
        let mut a = args("alice", "out");
        a.extend(["--dedup-store", store.to_str().unwrap()]);
        let out = env.deliver_within(limit, &a, &[], &msg("refused@x"));
        assert_exit(&out, want);
        assert_eq!(stderr(&out).lines().count(), 1, "{}: one line: {}", store.display(), stderr(&out));
        let stats = ["dedup", "stats", "--root", root.to_str().unwrap(), "--dedup-store", store.to_str().unwrap()];
        assert_exit(&env.run_within(limit, stats, &[], b""), admin);
    }
    assert_eq!(files_below(&outside), Vec::<std::path::PathBuf>::new(), "nothing may be made at the symlink's target");
    assert!(env.new_files("alice/.Sent").is_empty());
}

/// Review of issue 24: a --dedup-store value that is no absolute path to a file of its
/// own (relative: it would depend on the MTA's working directory; `.`, `..` or a trailing
/// `/`: a directory; a name with no room for SQLite's `-journal` beside it) is refused
/// with one line naming the option: a delivery defers (75: a setting the admin fixes while
/// the MTA keeps the copy, never a bounce), the admin commands exit 2, nothing is created.
#[test]
fn a_dedup_store_that_is_not_an_absolute_file_path_is_refused_and_nothing_is_made() {
    let env = Env::new();
    let local = env.dir.path().join("local");
    std::fs::create_dir(&local).unwrap();
    let local_s = local.to_str().unwrap().to_string();
    let longest = format!("{local_s}/{}", "a".repeat(247));
    let root = env.root();
    for (value, why) in [
        ("local/relative.sqlite3".to_string(), "absolute"),
        (format!("{local_s}/."), "names no file"),
        (format!("{local_s}/.."), "names no file"),
        (format!("{local_s}/"), "names no file"),
        (format!("{local_s}/{}", "a".repeat(248)), "too long"),
    ] {
        let mut a = args("alice", "out");
        a.extend(["--dedup-store", value.as_str()]);
        let out = env.deliver(&a, &[], &msg("path@x"));
        let err = stderr(&out);
        assert_eq!(code(&out), 75, "{value}: expected exit 75, got {}: {err}", code(&out));
        assert_eq!(err.lines().count(), 1, "{value}: expected one line, got:\n{err}");
        assert!(
            err.contains("--dedup-store") && err.contains(why),
            "{value}: expected a line naming --dedup-store and '{why}', got: {err}"
        );
        let stats = ["dedup", "stats", "--root", root.to_str().unwrap(), "--dedup-store", value.as_str()];
        assert_exit(&env.run(stats, &[], b""), 2);
    }
    assert!(env.new_files("alice/.Sent").is_empty(), "nothing may be stored");
    assert_eq!(files_below(&local), Vec::<std::path::PathBuf>::new(), "no store may be created");
    assert!(
        !env.dir.path().join("relative.sqlite3").exists() && !env.dir.path().join("local/relative.sqlite3").exists()
    );
    // The longest name that leaves room for "-journal" is taken.
    let mut a = args("alice", "out");
    a.extend(["--dedup-store", longest.as_str()]);
    assert_exit(&env.deliver(&a, &[], &msg("path@x")), 0);
    assert!(Path::new(&longest).is_file(), "expected the store at {longest}");
}

/// Review of issue 24: MAILKEEP_DEDUP_STORE set but empty (an unset variable in a unit
/// file or a wrapper) means no --dedup-store: the root's own store, not a usage error.
#[test]
fn an_empty_mailkeep_dedup_store_is_as_if_unset() {
    let env = Env::new();
    let empty = [("MAILKEEP_DEDUP_STORE", "")];
    for _ in 0..2 {
        let out = env.deliver(args("alice", "out"), &empty, &msg("empty-env@x"));
        assert_eq!(code(&out), 0, "expected exit 0, got {}: {}", code(&out), stderr(&out));
    }
    assert_eq!(env.new_files("alice/.Sent").len(), 1, "two copies, one stored");
    assert!(env.root().join(".mailkeep/dedup.sqlite3").is_file(), "the root's own store is used");
    let root = env.root();
    let stats = env.run(["dedup", "stats", "--root", root.to_str().unwrap()], &empty, b"");
    assert_exit(&stats, 0);
    assert!(String::from_utf8_lossy(&stats.stdout).contains("user=alice folder=Sent keys=1"));
}

/// Review of issue 24: a --dedup-store belongs to the root it first served. Two roots
/// sharing one store (or a root made again at the same path) would otherwise fold a copy
/// into a file of the other root and store nothing, with exit 0. The second root's
/// delivery defers with one line (75), stores nothing; `dedup stats` with that pairing
/// exits 2; the first root goes on as before.
#[test]
fn a_dedup_store_of_another_root_is_refused_and_the_copy_kept_queued() {
    let env = Env::new();
    let local = env.dir.path().join("local");
    std::fs::create_dir(&local).unwrap();
    let store = local.join("dedup.sqlite3");
    let other = env.dir.path().join("other");
    init_root(&other);
    let deliver_into = |root: &Path| {
        let mut cmd = Command::new(BIN);
        cmd.args(["deliver", "--root"]).arg(root).args(args("alice", "in"));
        cmd.args(["--log", "stderr", "--dedup-store", store.to_str().unwrap()]);
        if is_root() {
            cmd.arg("--allow-root");
        }
        cmd.env_clear().env("PATH", "/usr/bin:/bin").env("SENDER", "x@outside.example");
        run_with_stdin(cmd, &msg("same@x"))
    };
    assert_exit(&deliver_into(&env.root()), 0);
    let out = deliver_into(&other);
    let err = stderr(&out);
    assert_eq!(code(&out), 75, "the other root's copy must defer, got {}: {err}", code(&out));
    assert_eq!(err.lines().count(), 1, "expected one line, got:\n{err}");
    assert!(err.contains("another backup root"), "expected a line saying the store is another root's, got: {err}");
    assert_eq!(files_below(&other.join("alice")), Vec::<std::path::PathBuf>::new(), "nothing stored in the other root");
    let stats = ["dedup", "stats", "--root", other.to_str().unwrap(), "--dedup-store", store.to_str().unwrap()];
    assert_exit(&env.run(stats, &[], b""), 2);
    // The first root still folds its copies.
    assert_exit(&deliver_into(&env.root()), 0);
    assert_eq!(env.new_files("alice").len(), 1);
    // The first root made again at the same path is another root.
    std::fs::remove_dir_all(env.root()).unwrap();
    init_root(&env.root());
    let out = deliver_into(&env.root());
    assert_eq!(
        code(&out),
        75,
        "a root made again must not use the old root's keys, got {}: {}",
        code(&out),
        stderr(&out)
    );
    assert!(env.new_files("alice").is_empty());
}

/// Review of issue 24: a copy is folded only into a file that is still in this folder
/// (new/, or cur/ where an IMAP server moved it). A stored copy removed by hand (or a key
/// that names a file of another root) no longer folds: the copy is stored, the key then
/// names it, and the next copy folds into it.
#[test]
fn a_copy_whose_stored_file_is_gone_is_stored_again() {
    let env = Env::new();
    let mut a = args("alice", "out");
    a.extend(["--log", "stderr"]);
    assert_exit(&env.deliver(&a, &[], &msg("gone@x")), 0);
    let first = env.new_files("alice/.Sent");
    assert_eq!(first.len(), 1);
    // Moved to cur/ and flagged by an IMAP server: still there, the copy folds.
    let cur =
        env.root().join("alice/.Sent/cur").join(format!("{}:2,S", first[0].file_name().unwrap().to_str().unwrap()));
    std::fs::rename(&first[0], &cur).unwrap();
    let out = env.deliver(&a, &[], &msg("gone@x"));
    assert_exit(&out, 0);
    assert!(stderr(&out).contains("result=duplicate"), "a copy of a file in cur/ folds: {}", stderr(&out));
    assert!(env.new_files("alice/.Sent").is_empty());
    // Removed by hand: the next copy is stored.
    std::fs::remove_file(&cur).unwrap();
    let out = env.deliver(&a, &[], &msg("gone@x"));
    assert_exit(&out, 0);
    assert!(stderr(&out).contains("result=stored"), "expected the copy stored, got: {}", stderr(&out));
    let stored = env.new_files("alice/.Sent");
    assert_eq!(stored.len(), 1, "the copy is stored");
    let out = env.deliver(&a, &[], &msg("gone@x"));
    let name = stored[0].file_name().unwrap().to_str().unwrap();
    assert!(
        stderr(&out).contains(&format!("result=duplicate of={name}")),
        "the key names the new file: {}",
        stderr(&out)
    );
    assert_eq!(env.new_files("alice/.Sent").len(), 1);
}
