//! `mailkeep replay`: mbox files into the backup, read back by Python's `mailbox`, with
//! the right folders and dates, idempotent and resumable (issue 5).

use std::path::{Path, PathBuf};

use crate::util::*;

const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/replay");
const CHECK: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/replay_check.py");

fn fixture(name: &str) -> PathBuf {
    Path::new(FIXTURES).join(name)
}

fn replay(env: &Env, extra: &[&str], files: &[&Path]) -> std::process::Output {
    let root = env.root();
    let mut args: Vec<String> =
        ["replay", "--root", root.to_str().unwrap(), "--user", "alice", "--domain", "example.com"]
            .map(String::from)
            .to_vec();
    if !extra.contains(&"--log") {
        args.extend(["--log".into(), "none".into()]);
    }
    if is_root() {
        args.push("--allow-root".into());
    }
    args.extend(extra.iter().map(|s| s.to_string()));
    args.extend(files.iter().map(|f| f.to_str().unwrap().to_string()));
    env.run(&args, &[], b"")
}

/// Python's `mailbox.Maildir` finds exactly the expected messages (folder, mtime, bytes).
#[track_caller]
fn assert_python_reads(env: &Env, expected: &Path) {
    let out = std::process::Command::new("python3")
        .args([CHECK, env.root().to_str().unwrap(), "alice", expected.to_str().unwrap()])
        .output()
        .expect("python3");
    assert!(
        out.status.success(),
        "Python's mailbox disagrees with {}:\n{}{}",
        expected.display(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn every_fixture_is_read_back_by_python_mailbox() {
    let names: Vec<String> = std::fs::read_dir(FIXTURES)
        .unwrap()
        .filter_map(|e| e.unwrap().file_name().to_str()?.strip_suffix(".mbox").map(String::from))
        .collect();
    assert!(names.len() >= 7, "fixtures: {names:?}");
    for name in names {
        let env = Env::new();
        let out = replay(&env, &[], &[&fixture(&format!("{name}.mbox"))]);
        assert_exit(&out, 0);
        assert_python_reads(&env, &fixture(&format!("{name}.expected.json")));
        assert!(stderr(&out).contains("already-present=0 failed=0"), "{name}: {}", stderr(&out));
    }
}

#[test]
fn auto_format_says_which_it_chose() {
    let env = Env::new();
    let out = replay(&env, &[], &[&fixture("mboxrd-nested.mbox")]);
    assert!(stderr(&out).contains("format mboxrd (auto:"), "{}", stderr(&out));
    let out = replay(&env, &[], &[&fixture("mboxcl2.mbox")]);
    assert!(stderr(&out).contains("format mboxcl2 (auto:"), "{}", stderr(&out));
}

#[test]
fn second_run_adds_nothing() {
    let env = Env::new();
    let file = fixture("takeout.mbox");
    assert_exit(&replay(&env, &[], &[&file]), 0);
    let before = env.files();
    let out = replay(&env, &[], &[&file]);
    assert_exit(&out, 0);
    assert!(stderr(&out).contains("stored=0 already-present=5"), "{}", stderr(&out));
    assert_eq!(env.files(), before);
}

#[test]
fn messages_live_delivery_stored_already_are_folded() {
    let env = Env::new();
    let msg = b"Subject: nb\nMessage-ID: <nb1@x>\n\nfirst\n";
    assert_exit(&env.deliver(["--user", "alice", "--direction", "in"], &[], msg), 0);
    let mbox = env.dir.path().join("live.mbox");
    // The same message with other headers (as the provider's copy has), then a new one.
    let text = "From a@x Wed Jan  1 00:00:00 2020\nReceived: by mx\nSubject: nb\nMessage-ID: <nb1@x>\n\nfirst\n\n\
                From b@x Thu Jan  2 00:00:00 2020\nSubject: two\nMessage-ID: <nb2@x>\n\nsecond\n";
    std::fs::write(&mbox, text).unwrap();
    let out = replay(&env, &[], &[&mbox]);
    assert_exit(&out, 0);
    assert!(stderr(&out).contains("stored=1 already-present=1"), "{}", stderr(&out));
}

/// Issue 18: "already present" needs the same Message-ID *and* the same body. A message
/// planted under the ID of a real one, stored first, must not hide the real one.
#[test]
fn a_reused_message_id_with_another_body_is_stored_not_counted_present() {
    let env = Env::new();
    let planted = b"From: mallory@example.net\nMessage-ID: <c@example.org>\n\nplanted\n";
    assert_exit(&env.deliver(["--user", "alice", "--direction", "in"], &[], planted), 0);
    let mbox = env.dir.path().join("real.mbox");
    let real = "From carol@example.org Wed Jan  1 00:00:00 2020\nFrom: carol@example.org\n\
                Message-ID: <c@example.org>\n\nsigned contract\n";
    std::fs::write(&mbox, real).unwrap();
    let out = replay(&env, &["--log", "stderr"], &[&mbox]);
    assert_exit(&out, 0);
    let err = stderr(&out);
    assert!(
        err.contains("stored=1 already-present=0 failed=0") && err.contains(" id-reused=1 "),
        "expected the real one stored, got: {err}"
    );
    assert!(err.contains("result=stored dedup=id-reused"), "{err}");
    let second = replay(&env, &[], &[&mbox]);
    assert!(stderr(&second).contains("stored=0 already-present=1"), "a rerun finds it: {}", stderr(&second));
    let contract =
        env.new_files("alice").into_iter().filter(|f| std::fs::read(f).unwrap().ends_with(b"\nsigned contract\n"));
    assert_eq!(contract.count(), 1);
}

#[test]
fn messages_without_message_id_fold_by_digest() {
    let env = Env::new();
    let mbox = write_mbox(
        &env,
        "noid.mbox",
        "From a@x Wed Jan  1 00:00:00 2020\nSubject: no id\n\nsame\n\nFrom a@x Wed Jan  1 00:00:00 2020\nSubject: no id\n\nother\n\n",
    );
    assert_exit(&replay(&env, &[], &[&mbox]), 0);
    let out = replay(&env, &[], &[&mbox]);
    assert!(stderr(&out).contains("stored=0 already-present=2"), "{}", stderr(&out));
    assert_eq!(env.new_files("alice").len(), 2);
}

/// A second run must find what the first stored, also when the Message-ID comes after
/// 64 KiB of headers (a long To: list), and for a message without one whose first header
/// is its own Envelope-To (the INBOX copy keeps it; only Sent copies get ours).
#[test]
fn a_second_run_finds_messages_with_long_header_blocks_and_their_own_envelope_to() {
    let env = Env::new();
    let to: Vec<String> = (0..3500).map(|i| format!("person{i}@example.org")).collect();
    let path = env.dir.path().join("long-heads.mbox");
    let data = format!(
        "From a@x.org Wed Jan  1 00:00:00 2020\nSubject: many\nTo: {}\nMessage-ID: <bighdr@x>\n\nbody\n\n\
         From b@x.org Thu Jan  2 00:00:00 2020\nEnvelope-To: alice@example.com\nSubject: no id\n\nbody 2\n",
        to.join(",\n ")
    );
    std::fs::write(&path, data).unwrap();
    for (run, want) in [(1, "stored=2 already-present=0"), (2, "stored=0 already-present=2")] {
        let out = replay(&env, &["--log", "stderr"], &[&path]);
        assert_exit(&out, 0);
        assert!(stderr(&out).contains(want), "run {run}: expected {want}, got: {}", stderr(&out));
    }
    assert_eq!(env.new_files("alice").len(), 2);
}

/// A typo in a file name is for the operator to fix, not a temporary failure (75) that a
/// wrapper would retry; and nothing is stored from the files named before it.
#[test]
fn a_missing_or_unreadable_input_exits_66_before_storing_anything() {
    let env = Env::new();
    let good = write_mbox(&env, "good.mbox", "From a@x Thu Jan  2 00:00:00 2020\nMessage-ID: <g@x>\n\nab\n");
    for bad in [env.dir.path().join("no-such.mbox"), env.dir.path().to_path_buf()] {
        let out = replay(&env, &[], &[&good, &bad]);
        assert_exit(&out, 66);
        let err = stderr(&out);
        assert!(err.contains(&format!("cannot read {}", bad.display())), "names the file: {err}");
        assert_eq!(err.trim_end().lines().count(), 1, "one line: {err}");
        assert!(env.new_files("alice").is_empty(), "nothing stored before the check");
    }
}

#[test]
fn dry_run_stores_nothing() {
    let env = Env::new();
    let out = replay(&env, &["--dry-run"], &[&fixture("takeout.mbox")]);
    assert_exit(&out, 0);
    assert!(stderr(&out).contains("would store=5"), "{}", stderr(&out));
    assert!(env.files().is_empty(), "{:?}", env.files());
}

#[test]
fn stdin_is_read_for_dash() {
    let env = Env::new();
    let root = env.root();
    let mut args =
        vec!["replay", "--root", root.to_str().unwrap(), "--user", "alice", "--domain", "example.com", "--log", "none"];
    if is_root() {
        args.push("--allow-root");
    }
    args.push("-");
    let data = std::fs::read(fixture("no-final-newline.mbox")).unwrap();
    assert_exit(&env.run(&args, &[], &data), 0);
    assert_python_reads(&env, &fixture("no-final-newline.expected.json"));
}

#[test]
fn a_file_that_is_no_mbox_exits_65_naming_it() {
    let env = Env::new();
    let eml = write_mbox(&env, "message.eml", "Subject: hi\n\nbody\n");
    let out = replay(&env, &[], &[&eml]);
    assert_exit(&out, 65);
    assert!(stderr(&out).contains("message.eml: not an mbox file"), "{}", stderr(&out));
}

/// An mboxcl2 file whose second message has a Content-Length that overshoots.
fn broken_mbox(env: &Env) -> PathBuf {
    let path = env.dir.path().join("broken.mbox");
    let data = "From a@x Wed Jan  1 00:00:00 2020\nMessage-ID: <b1@x>\nContent-Length: 4\n\nabc\n\n\
                From a@x Thu Jan  2 00:00:00 2020\nMessage-ID: <b2@x>\nContent-Length: 2\n\nabcdef\n\n\
                From a@x Fri Jan  3 00:00:00 2020\nMessage-ID: <b3@x>\nContent-Length: 4\n\nxyz\n";
    std::fs::write(&path, data).unwrap();
    path
}

#[test]
fn broken_message_stops_with_65_keeping_what_came_before() {
    let env = Env::new();
    let out = replay(&env, &["--format", "mboxcl2"], &[&broken_mbox(&env)]);
    assert_exit(&out, 65);
    assert!(stderr(&out).contains("broken message at byte"), "{}", stderr(&out));
    assert_eq!(env.new_files("alice").len(), 1, "the message before the broken one is stored");
}

#[test]
fn continue_on_error_skips_the_broken_message() {
    let env = Env::new();
    let out = replay(&env, &["--format", "mboxcl2", "--continue-on-error", "--log", "stderr"], &[&broken_mbox(&env)]);
    assert_exit(&out, 0);
    assert!(stderr(&out).contains("failed=1"), "{}", stderr(&out));
    assert!(stderr(&out).contains("line 11"), "names the line: {}", stderr(&out));
    assert_eq!(env.new_files("alice").len(), 2);
}

/// An empty message (a From_ line, a blank line, the next From_ line) is skipped alone: the
/// message after it is stored, not skipped with it.
#[test]
fn an_empty_message_skipped_on_error_does_not_take_the_next_one_with_it() {
    let env = Env::new();
    let path = env.dir.path().join("empty.mbox");
    let data = "From a@x.org Wed Jan  1 00:00:00 2020\n\n\
                From b@x.org Thu Jan  2 00:00:00 2020\nMessage-ID: <b@x>\nSubject: B\n\nbody b\n\n\
                From c@x.org Fri Jan  3 00:00:00 2020\nMessage-ID: <c@x>\nSubject: C\n\nbody c\n";
    std::fs::write(&path, data).unwrap();
    let out = replay(&env, &["--continue-on-error", "--log", "stderr"], &[&path]);
    assert_exit(&out, 0);
    let want = "stored=2 already-present=0 failed=1";
    assert!(stderr(&out).contains(want), "expected {want} in the summary, got: {}", stderr(&out));
    let mut subjects: Vec<String> = env
        .new_files("alice")
        .iter()
        .map(|f| {
            let text = std::fs::read_to_string(f).unwrap();
            text.lines().find(|l| l.starts_with("Subject: ")).unwrap_or("none").to_string()
        })
        .collect();
    subjects.sort();
    assert_eq!(subjects, ["Subject: B", "Subject: C"]);
}

/// A message found broken only after its first chunk was handed over (its Content-Length
/// ends 80 000 bytes into a 100 000-byte body), whose Message-ID is already stored: with
/// `--continue-on-error` it counts as failed, not also as already present.
#[test]
fn a_broken_message_already_stored_counts_as_failed_only() {
    let env = Env::new();
    let good = write_mbox(&env, "good.mbox", "From a@x Thu Jan  2 00:00:00 2020\nMessage-ID: <b2@x>\n\nab\n");
    assert_exit(&replay(&env, &[], &[&good]), 0);
    let body = format!("{}\n", "x".repeat(99)).repeat(1000);
    let broken = env.dir.path().join("late-broken.mbox");
    let data = format!(
        "From a@x Wed Jan  1 00:00:00 2020\nMessage-ID: <b1@x>\nContent-Length: 4\n\nabc\n\n\
         From a@x Thu Jan  2 00:00:00 2020\nMessage-ID: <b2@x>\nContent-Length: 80000\n\n{body}\n\
         From a@x Fri Jan  3 00:00:00 2020\nMessage-ID: <b3@x>\nContent-Length: 4\n\nxyz\n"
    );
    std::fs::write(&broken, data).unwrap();
    let out = replay(&env, &["--format", "mboxcl2", "--continue-on-error"], &[&broken]);
    assert_exit(&out, 0);
    let want = "stored=2 already-present=0 failed=1";
    assert!(stderr(&out).contains(want), "expected {want} in the summary, got: {}", stderr(&out));
}

/// A panic on the staging thread, while the publishing thread waits for a batch, must still
/// end the run with 75 (a bug; run it again), not leave it hanging on that thread.
#[test]
#[cfg_attr(not(feature = "fault-injection"), ignore = "needs the test hooks: cargo test --features fault-injection")]
fn a_panic_in_replay_exits_75_instead_of_hanging() {
    let env = Env::new();
    let mbox = write_mbox(
        &env,
        "two.mbox",
        "From a@x Wed Jan  1 00:00:00 2020\nMessage-ID: <p1@x>\n\none\n\n\
                           From a@x Thu Jan  2 00:00:00 2020\nMessage-ID: <p2@x>\n\ntwo\n",
    );
    let mut child = spawn_replay(&env, &mbox, &[("MAILKEEP_FAULT", "panic-replay-flush")]);
    let (status, err) = exit_within_a_minute(&mut child);
    assert_eq!(status.code(), Some(75), "expected exit 75, got {status}: {err}");
    assert!(err.contains("internal error"), "expected the panic reported, got: {err}");
    assert!(env.new_files("alice").is_empty(), "nothing was published before the panic");
}

/// Starts `mailkeep replay --root ROOT --user alice --log none FILE` with a clean
/// environment plus `env_vars`, stdin piped, stderr captured.
fn spawn_replay(env: &Env, file: &Path, env_vars: &[(&str, &str)]) -> std::process::Child {
    let mut cmd = std::process::Command::new(BIN);
    cmd.args(["replay", "--root"]).arg(env.root()).args([
        "--user",
        "alice",
        "--domain",
        "example.com",
        "--log",
        "none",
    ]);
    if is_root() {
        cmd.arg("--allow-root");
    }
    cmd.arg(file).env_clear().env("PATH", "/usr/bin:/bin").envs(env_vars.iter().copied());
    cmd.stdin(std::process::Stdio::piped()).stdout(std::process::Stdio::null()).stderr(std::process::Stdio::piped());
    cmd.spawn().unwrap()
}

/// Waits up to a minute for `child` to exit (a replay still running then is a hang) and
/// returns its status and stderr.
fn exit_within_a_minute(child: &mut std::process::Child) -> (std::process::ExitStatus, String) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            panic!("expected replay to exit, got it still running after 60 s");
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    };
    let mut err = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut err).unwrap();
    (status, err)
}

/// A failure must end the run even while more of stdin is awaited: the reading thread,
/// blocked on a pipe that stays open, is not waited for.
#[test]
fn a_failure_ends_a_replay_of_stdin_that_stays_open() {
    let env = Env::new();
    let outside = env.dir.path().join("outside");
    std::fs::create_dir(&outside).unwrap();
    std::fs::create_dir_all(env.root()).unwrap();
    std::os::unix::fs::symlink(&outside, env.root().join("alice")).unwrap();
    let mut child = spawn_replay(&env, Path::new("-"), &[]);
    // More than the reader's hand-over batch (256 KB), so the first message reaches the
    // staging thread, which then fails on the symlinked user directory.
    let mut stdin = child.stdin.take().unwrap();
    for i in 0..40 {
        let message = format!("From a@x Wed Jan  1 00:00:00 2020\nMessage-ID: <s{i}@x>\n\n{}\n\n", "x".repeat(10_000));
        if std::io::Write::write_all(&mut stdin, message.as_bytes()).is_err() {
            break; // it has failed and exited already
        }
    }
    let (status, err) = exit_within_a_minute(&mut child);
    drop(stdin);
    assert_eq!(status.code(), Some(75), "expected exit 75 (symlink refused, retried), got {status}: {err}");
    assert_eq!(std::fs::read_dir(&outside).unwrap().count(), 0, "nothing written through the symlink");
}

#[test]
fn replay_refuses_root_without_allow_root() {
    if !is_root() {
        return;
    }
    let env = Env::new();
    let root = env.root();
    let out = env.run(
        ["replay", "--root", root.to_str().unwrap(), "--user", "alice", "--domain", "x.example", FIXTURES],
        &[],
        b"",
    );
    assert_exit(&out, 78);
}

#[test]
fn killed_replay_resumes_to_the_same_result() {
    let big = Env::new();
    let mbox = big.dir.path().join("big.mbox");
    let mut data = String::new();
    for i in 0..3000 {
        data.push_str(&format!(
            "From s{i}@x Wed Jan  1 00:00:00 2020\nMessage-ID: <k{i}@x>\nSubject: {i}\n\n{}\n\n",
            "y".repeat(i % 700)
        ));
    }
    std::fs::write(&mbox, data).unwrap();
    let reference = Env::new();
    assert_exit(&replay(&reference, &[], &[&mbox]), 0);
    let want = contents(&reference, "alice");
    for delay_ms in [5u64, 20, 60] {
        let env = Env::new();
        let root = env.root();
        let mut cmd = std::process::Command::new(BIN);
        cmd.args([
            "replay",
            "--root",
            root.to_str().unwrap(),
            "--user",
            "alice",
            "--domain",
            "example.com",
            "--log",
            "none",
        ]);
        if is_root() {
            cmd.arg("--allow-root");
        }
        let mut child = cmd.arg(&mbox).env_clear().stderr(std::process::Stdio::null()).spawn().unwrap();
        std::thread::sleep(std::time::Duration::from_millis(delay_ms));
        let _ = child.kill();
        let _ = child.wait();
        for f in env.files() {
            let s = f.to_str().unwrap();
            assert!(
                s.contains("/tmp/")
                    || s.contains("/new/")
                    || !s.contains('/')
                    || s.ends_with("subscriptions")
                    || s.ends_with("/mailkeep-replay.lock"),
                "{s}"
            );
        }
        for f in env.new_files("alice") {
            let bytes = std::fs::read(&f).unwrap();
            assert_eq!(bytes.len() as u64, size_in_name(&f), "a file in new/ is complete: {}", f.display());
        }
        assert_exit(&replay(&env, &[], &[&mbox]), 0);
        assert_eq!(contents(&env, "alice"), want, "killed after {delay_ms} ms, then resumed");
    }
}

/// The sorted (mtime, bytes) of every message in a folder's new/.
fn contents(env: &Env, folder: &str) -> Vec<(std::time::SystemTime, Vec<u8>)> {
    let mut v: Vec<_> = env
        .new_files(folder)
        .iter()
        .map(|f| (std::fs::metadata(f).unwrap().modified().unwrap(), std::fs::read(f).unwrap()))
        .collect();
    v.sort();
    v
}

#[test]
#[cfg_attr(not(feature = "fault-injection"), ignore = "needs the test hooks: cargo test --features fault-injection")]
fn later_delivery_sweeps_tmp_leftovers_older_than_36_hours() {
    let env = Env::new();
    assert_exit(&env.deliver(["--user", "alice", "--direction", "in"], &[], b"Subject: a\n\nb\n"), 0);
    let leftover = env.root().join("alice/tmp/1.M1P1Q1.crashed");
    std::fs::write(&leftover, b"partial").unwrap();
    assert_exit(&env.deliver(["--user", "alice", "--direction", "in"], &[], b"Subject: b\n\nb\n"), 0);
    assert!(leftover.exists(), "a fresh tmp file is left alone");
    let root = env.root();
    let mut cmd = std::process::Command::new(BIN);
    cmd.args(["deliver", "--root", root.to_str().unwrap(), "--log", "none", "--user", "alice", "--direction", "in"]);
    if is_root() {
        cmd.arg("--allow-root");
    }
    // 37 hours later (a static binary cannot be run under faketime).
    cmd.env_clear().env("PATH", "/usr/bin:/bin").env("MAILKEEP_FAULT", "clock+133200");
    assert_exit(&run_with_stdin(cmd, b"Subject: c\n\nb\n"), 0);
    assert!(!leftover.exists(), "a tmp file older than 36 hours is swept");
}

#[test]
fn a_batch_larger_than_the_open_files_limit_is_replayed_whole() {
    // Regression: staged files stayed open until their batch was published, so a replay
    // under Debian's default limit of 1024 descriptors failed with EMFILE after 1017.
    let env = Env::new();
    let mbox = env.dir.path().join("many.mbox");
    let data: String = (0..1500)
        .map(|i| format!("From s@x Wed Jan  1 00:00:00 2020\nMessage-ID: <fd{i}@x>\n\nbody {i}\n\n"))
        .collect();
    std::fs::write(&mbox, data).unwrap();
    let root = env.root();
    let mut cmd = std::process::Command::new("prlimit");
    cmd.args([
        "--nofile=256",
        "--",
        BIN,
        "replay",
        "--root",
        root.to_str().unwrap(),
        "--user",
        "alice",
        "--domain",
        "example.com",
        "--log",
        "none",
    ]);
    if is_root() {
        cmd.arg("--allow-root");
    }
    cmd.arg(&mbox).env_clear().env("PATH", "/usr/bin:/bin");
    let out = run_with_stdin(cmd, b"");
    assert_exit(&out, 0);
    assert_eq!(env.new_files("alice").len(), 1500);
}

/// `mailkeep replay --root ROOT --user alice [args] FILE`, without the defaults `replay` adds.
fn replay_bare(env: &Env, args: &[&str], file: &Path) -> std::process::Output {
    let mut all = vec!["replay", "--root", env.root().to_str().unwrap().to_owned().leak(), "--user", "alice"];
    all.extend(args);
    if is_root() {
        all.push("--allow-root");
    }
    all.push(file.to_str().unwrap().to_owned().leak());
    env.run(&all, &[], b"")
}

/// Issue 18: of several Return-Path fields the topmost is the one the final delivery
/// added (RFC 5321 4.4): a Takeout From_ line has no sender, so the header's is taken.
#[test]
fn a_takeout_message_takes_its_topmost_return_path() {
    let env = Env::new();
    let mbox = env.dir.path().join("takeout-rp.mbox");
    let text = "From 1234567890123@xxx Wed Jan 01 00:00:00 +0000 2020\nReturn-Path: <final@ext.example>\n\
                Received: by relay\nReturn-Path: <earlier@ext.example>\nSubject: rp\n\nbody\n";
    std::fs::write(&mbox, text).unwrap();
    assert_exit(&replay(&env, &[], &[&mbox]), 0);
    let stored = std::fs::read_to_string(&env.new_files("alice")[0]).unwrap();
    assert!(stored.starts_with("Return-Path: <final@ext.example>\n"), "got: {stored}");
}

/// Issue 18: two replays of one mbox into one user at the same time stored every message
/// twice (each indexed the folder at its start). A lock per folder makes one wait.
#[test]
fn two_replays_of_one_mbox_at_once_store_each_message_once() {
    let env = Env::new();
    let mbox = env.dir.path().join("twice.mbox");
    let text: String = (0..300)
        .map(|i| format!("From a@x Wed Jan  1 00:00:00 2020\nMessage-ID: <m{i}@x>\nSubject: {i}\n\nbody {i}\n\n"))
        .collect();
    std::fs::write(&mbox, text).unwrap();
    let root = env.root();
    let children: Vec<_> = (0..2)
        .map(|_| {
            let mut cmd = std::process::Command::new(BIN);
            cmd.args(["replay", "--root"]).arg(&root);
            cmd.args(["--user", "alice", "--domain", "example.com", "--log", "none"]);
            if is_root() {
                cmd.arg("--allow-root");
            }
            cmd.arg(&mbox).env_clear().env("PATH", "/usr/bin:/bin").stderr(std::process::Stdio::piped());
            cmd.spawn().unwrap()
        })
        .collect();
    let outs: Vec<_> = children.into_iter().map(|c| c.wait_with_output().unwrap()).collect();
    for out in &outs {
        assert_exit(out, 0);
    }
    assert_eq!(env.new_files("alice").len(), 300, "stderr: {} / {}", stderr(&outs[0]), stderr(&outs[1]));
}

/// A replay that cannot get its folder's lock in time exits 75 (run it again later) and
/// says why; it stores nothing.
#[test]
fn a_replay_that_waits_too_long_for_the_folder_lock_exits_75() {
    let env = Env::new();
    let mbox = write_mbox(&env, "one.mbox", "From a@x Wed Jan  1 00:00:00 2020\nSubject: s\n\nbody\n");
    let first = replay(&env, &[], &[&mbox]);
    assert_exit(&first, 0);
    let lock = std::fs::File::open(env.root().join("alice/mailkeep-replay.lock")).unwrap();
    lock.lock().unwrap();
    std::fs::write(&mbox, "From a@x Wed Jan  1 00:00:00 2020\nSubject: s\n\nanother body\n").unwrap();
    let out = replay(&env, &["--lock-timeout", "1"], &[&mbox]);
    assert_exit(&out, 75);
    let err = stderr(&out);
    assert!(err.contains("waiting up to 1 s for another replay for alice to finish"), "{err}");
    assert!(err.contains("still locked by another replay"), "{err}");
    assert_eq!(env.new_files("alice").len(), 1);
    drop(lock);
    assert_exit(&replay(&env, &[], &[&mbox]), 0);
    assert_eq!(env.new_files("alice").len(), 2);
}

/// Issue 18: a Sent message without a Message-ID that starts with its own Envelope-To line
/// was stored again by every rerun (the index took that line for `deliver`'s).
#[test]
fn an_id_less_sent_message_with_its_own_envelope_to_is_found_on_a_rerun() {
    let env = Env::new();
    let mbox = write_mbox(
        &env,
        "sent.mbox",
        "From alice@example.com Wed Jan  1 00:00:00 2020\nEnvelope-To: bob@x\nSubject: s\n\nbody\n",
    );
    for run in 0..3 {
        let out = replay_bare(&env, &["--direction", "out", "--log", "none"], &mbox);
        assert_exit(&out, 0);
        assert_eq!(env.new_files("alice/.Sent").len(), 1, "run {run}: {}", stderr(&out));
    }
}

/// Issue 18: without `--domain`, received mail would be stamped with the outside sender's
/// domain (`Delivered-To: alice@ext.example`). In and auto require it; out takes the
/// From_ line's, which is the user's own.
#[test]
fn replay_without_domain_exits_64_for_received_mail_and_takes_the_senders_for_sent_mail() {
    let env = Env::new();
    let mbox = write_mbox(&env, "d.mbox", "From alice@example.com Wed Jan  1 00:00:00 2020\nSubject: s\n\nbody\n");
    for direction in ["in", "auto"] {
        let out = replay_bare(&env, &["--direction", direction], &mbox);
        assert_exit(&out, 64);
        assert!(stderr(&out).contains("--domain DOMAIN is required"), "{}", stderr(&out));
        assert_eq!(stderr(&out).lines().count(), 1, "one line: {}", stderr(&out));
    }
    assert!(env.files().is_empty());
    assert_exit(&replay_bare(&env, &["--direction", "out", "--log", "none"], &mbox), 0);
    let stored = std::fs::read_to_string(&env.new_files("alice/.Sent")[0]).unwrap();
    assert!(stored.contains("\nDelivered-To: alice@example.com\n"), "got: {stored}");
}

/// The messages Python's `mailbox.mbox` reads from `mbox`, in order, as it gives them
/// (without their From_ lines, nothing unescaped).
fn python_mbox_messages(mbox: &Path) -> Vec<Vec<u8>> {
    let script = "import json, mailbox, sys\n\
                  box = mailbox.mbox(sys.argv[1], create=False)\n\
                  print(json.dumps([box.get_bytes(k).decode('latin-1') for k in box.keys()]))";
    let out = std::process::Command::new("python3").args(["-c", script]).arg(mbox).output().expect("python3");
    assert!(out.status.success(), "python3 failed: {}", String::from_utf8_lossy(&out.stderr));
    let texts: Vec<String> = serde_json::from_slice(&out.stdout).unwrap();
    texts.iter().map(|t| t.chars().map(|c| c as u8).collect()).collect()
}

/// mboxrd's unescaping: every `>+From ` line loses one `>`.
fn mboxrd_unescape(message: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(message.len());
    for line in message.split_inclusive(|&b| b == b'\n') {
        let quotes = line.iter().take_while(|&&b| b == b'>').count();
        out.extend_from_slice(if quotes > 0 && line[quotes..].starts_with(b"From ") { &line[1..] } else { line });
    }
    out
}

/// The stored messages of alice's INBOX without the two header lines replay prepends
/// (Return-Path, Delivered-To), sorted.
fn stored_messages(env: &Env) -> Vec<Vec<u8>> {
    let mut v: Vec<Vec<u8>> = env
        .new_files("alice")
        .iter()
        .map(|f| {
            let bytes = std::fs::read(f).unwrap();
            let mut lines = bytes.splitn(3, |&b| b == b'\n');
            let (rp, dt) = (lines.next().unwrap(), lines.next().unwrap());
            assert!(rp.starts_with(b"Return-Path: ") && dt.starts_with(b"Delivered-To: "), "{}", f.display());
            lines.next().unwrap_or_default().to_vec()
        })
        .collect();
    v.sort();
    v
}

/// Issue 18: mbox files written with no blank line before a From_ line (mblaze's
/// `mexport`, other tools) were read as one message; Python's mailbox reads each.
#[test]
fn a_complete_from_line_starts_a_message_without_a_blank_line_before_it() {
    let env = Env::new();
    let mbox = write_mbox(
        &env,
        "two.mbox",
        "From a@example.org Mon Jan  1 00:00:00 2024\nSubject: one\n\nbody one\n\
         From b@example.org Tue Jan  2 00:00:00 2024\nSubject: two\n\nbody two\n",
    );
    let out = replay(&env, &[], &[&mbox]);
    assert_exit(&out, 0);
    let err = stderr(&out);
    assert!(err.contains("messages=2 stored=2 already-present=0 failed=0 split-without-blank=1"), "got: {err}");
    assert!(
        err.contains("two.mbox: 1 messages began at a From_ line with no blank line before it (mboxo:"),
        "a note names the file and the count, got: {err}"
    );
    let python = python_mbox_messages(&mbox);
    assert_eq!(python.len(), 2, "Python's mailbox reads two");
    let mut python: Vec<Vec<u8>> = python.into_iter().map(|m| mboxrd_unescape(&m)).collect();
    python.sort();
    assert_eq!(stored_messages(&env), python, "the messages as Python reads them");
}

/// A maildir exported by mblaze's `mexport` (mboxrd, no blank line between messages, body
/// lines starting "From " escaped) is replayed message for message: the originals come
/// back, and Python's mailbox reads the same ones.
#[test]
fn an_mbox_written_by_mblaze_mexport_is_replayed_message_for_message() {
    let env = Env::new();
    let md = env.dir.path().join("md");
    for d in ["cur", "new", "tmp"] {
        std::fs::create_dir_all(md.join(d)).unwrap();
    }
    let originals: Vec<String> = vec![
        "Return-Path: <a@example.org>\nFrom: a@example.org\nDate: Mon, 1 Jan 2024 10:00:00 +0000\n\
         Message-ID: <mx1@example.org>\nSubject: quoting\n\nbody one\nFrom here on\nFrom 10:30 on, we meet\n\
         From someone@example.org Mon Jan  1 00:00:00 2024\n>From quoted\n>>From twice\nlast line\n"
            .into(),
        "From: b@example.org\nMessage-ID: <mx2@example.org>\nSubject: no date\n\nno Date header\n".into(),
        "Return-Path: <>\nDate: Tue, 2 Jan 2024 11:00:00 +0100\nSubject: bounce\n\nno Message-ID\n\nsecond paragraph\n"
            .into(),
        format!(
            "Return-Path: <c@example.org>\nDate: Wed, 3 Jan 2024 12:00:00 +0000\nMessage-ID: <mx4@example.org>\n\n{}",
            "a longer body line, and another one\n".repeat(200)
        ),
        "Return-Path: <d@example.org>\nDate: Thu, 4 Jan 2024 13:00:00 +0000\nMessage-ID: <mx5@example.org>\n\nFrom\n"
            .into(),
    ];
    let mut paths = Vec::new();
    for (i, m) in originals.iter().enumerate() {
        let p = md.join("cur").join(format!("{}.M{i}P1.host:2,S", 1700000000 + i));
        std::fs::write(&p, m).unwrap();
        paths.push(p);
    }
    let exported = std::process::Command::new("mexport")
        .args(&paths)
        .env_clear()
        .env("PATH", "/usr/bin:/bin")
        .env("TZ", "UTC")
        .output()
        .expect("mexport (Debian package mblaze, installed by tests/install-deps.sh) must be installed");
    assert!(exported.status.success(), "mexport failed: {}", String::from_utf8_lossy(&exported.stderr));
    let mbox = write_mbox(&env, "exported.mbox", &exported.stdout);
    let text = String::from_utf8_lossy(&exported.stdout);
    assert_eq!(text.matches("\nFrom ").count(), originals.len() - 1, "mexport's file:\n{text}");
    assert!(!text.contains("\n\nFrom "), "mexport writes no blank line before a From_ line:\n{text}");

    let out = replay(&env, &[], &[&mbox]);
    assert_exit(&out, 0);
    let n = originals.len();
    let want = format!("messages={n} stored={n} already-present=0 failed=0 split-without-blank={}", n - 1);
    assert!(stderr(&out).contains(&want), "expected {want}, got: {}", stderr(&out));
    let mut sorted: Vec<Vec<u8>> = originals.iter().map(|m| m.clone().into_bytes()).collect();
    sorted.sort();
    let show = |v: &[Vec<u8>]| v.iter().map(|m| m.escape_ascii().to_string()).collect::<Vec<_>>().join("\n");
    let bounce = env
        .new_files("alice")
        .into_iter()
        .map(|f| std::fs::read_to_string(f).unwrap())
        .find(|m| m.contains("Subject: bounce"));
    assert!(
        bounce.as_deref().unwrap_or_default().starts_with("Return-Path: <>\n"),
        "mexport's `From  <date>` is the null sender: {bounce:?}"
    );
    let stored = stored_messages(&env);
    assert!(stored == sorted, "expected the originals:\n{}\ngot:\n{}", show(&sorted), show(&stored));
    let python: Vec<Vec<u8>> = python_mbox_messages(&mbox).iter().map(|m| mboxrd_unescape(m)).collect();
    let originals: Vec<Vec<u8>> = originals.into_iter().map(String::into_bytes).collect();
    assert!(python == originals, "Python's mailbox reads:\n{}\nnot the originals", show(&python));
}

/// Issue 18: a From_ date before 1970 named the file `-1.M...`, which shell tools take for
/// an option. The name leads with 0; the mtime stays the true date.
#[test]
fn a_from_line_date_before_1970_is_the_mtime_and_the_name_leads_with_0() {
    let env = Env::new();
    let mbox = env.dir.path().join("old.mbox");
    let moon = "Message-ID: <moon@x>\nSubject: moon\n\none small step\n";
    let old = "Message-ID: <old@x>\nSubject: 1901\n\nold\n";
    std::fs::write(
        &mbox,
        format!("From a@x.org Sun Jul 20 20:17:40 1969\n{moon}\nFrom b@x.org Sat Dec 14 00:00:00 1901\n{old}"),
    )
    .unwrap();
    let out = replay(&env, &[], &[&mbox]);
    assert_exit(&out, 0);
    let (moon_t, old_t) = (-14182940i64, -2147472000i64);
    let mut got: Vec<(i64, String)> = env
        .new_files("alice")
        .iter()
        .map(|f| {
            let name = f.file_name().unwrap().to_str().unwrap().to_string();
            (std::os::unix::fs::MetadataExt::mtime(&std::fs::metadata(f).unwrap()), name)
        })
        .collect();
    got.sort();
    let mtimes: Vec<i64> = got.iter().map(|g| g.0).collect();
    assert_eq!(mtimes, [old_t, moon_t], "the true dates as mtimes; files: {got:?}");
    for (_, name) in &got {
        assert!(name.starts_with("0.M"), "expected a name starting with '0.M', got {name}");
    }
    let expected = env.dir.path().join("old.expected.json");
    let entry = |t: i64, from: &str, m: &str| {
        let content = format!("Return-Path: <{from}>\nDelivered-To: alice@example.com\n{m}");
        serde_json::json!({ "folder": "INBOX", "mtime": t, "content": content })
    };
    let json = serde_json::json!([entry(moon_t, "a@x.org", moon), entry(old_t, "b@x.org", old)]);
    std::fs::write(&expected, json.to_string()).unwrap();
    assert_python_reads(&env, &expected);
}

/// Issue 19: `Sat Feb 31 ... 2024` was read as 2 March. A day the month does not have is
/// no date: the message falls back to its Date header, as for any unreadable From_ date,
/// and the line still separates (a blank line before it, a time of day in it).
#[test]
fn a_from_line_dated_31_february_takes_the_date_header_issue_19() {
    let env = Env::new();
    let mbox = env.dir.path().join("feb31.mbox");
    let first = "Message-ID: <first@x>\nSubject: first\n\none\n";
    let odd = "Message-ID: <feb31@x>\nDate: Fri, 1 Mar 2024 10:00:00 +0000\nSubject: odd\n\ntwo\n";
    std::fs::write(
        &mbox,
        format!("From a@x Thu Feb 29 12:00:00 2024\n{first}\nFrom a@x Sat Feb 31 00:00:00 2024\n{odd}"),
    )
    .unwrap();
    let out = replay(&env, &[], &[&mbox]);
    assert_exit(&out, 0);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("stored=2 "), "expected both messages stored, got: {stderr}");
    assert!(
        stderr.contains("date-header=1") && stderr.contains("from-line=1"),
        "expected one date of each, got: {stderr}"
    );
    let mut mtimes: Vec<i64> = env
        .new_files("alice")
        .iter()
        .map(|f| std::os::unix::fs::MetadataExt::mtime(&std::fs::metadata(f).unwrap()))
        .collect();
    mtimes.sort();
    // 2024-02-29T12:00:00Z from the first From_ line, 2024-03-01T10:00:00Z from the Date
    // header (not 2024-03-02T00:00:00Z, 1709337600, from "Feb 31").
    assert_eq!(mtimes, [1709208000, 1709287200], "expected (mtimes) vs got");
}

/// Issue 18 review: two `--direction auto` replays for one user, each first into one
/// folder and then into the other, waited for each other crosswise until both gave up (75).
/// One lock per user: the second waits for the first, then finds everything there.
#[test]
fn two_auto_replays_into_crossed_folders_do_not_wait_for_each_other_crosswise() {
    let env = Env::new();
    let message = |label: &str, i: usize| {
        format!("From a@x Wed Jan  1 00:00:00 2020\nX-Gmail-Labels: {label}\nMessage-ID: <{label}{i}@x>\n\nb {i}\n\n")
    };
    let a: String = (0..300).map(|i| message("Inbox", i)).chain([message("Sent", 999)]).collect();
    let b: String = (0..300).map(|i| message("Sent", i)).chain([message("Inbox", 999)]).collect();
    let (pa, pb) = (env.dir.path().join("a.mbox"), env.dir.path().join("b.mbox"));
    std::fs::write(&pa, a).unwrap();
    std::fs::write(&pb, b).unwrap();
    let spawn = |mbox: &Path| {
        let mut cmd = std::process::Command::new(BIN);
        cmd.args(["replay", "--root"]).arg(env.root());
        cmd.args(["--user", "alice", "--domain", "example.com", "--log", "none", "--lock-timeout", "60"]);
        if is_root() {
            cmd.arg("--allow-root");
        }
        cmd.arg(mbox).env_clear().env("PATH", "/usr/bin:/bin").stderr(std::process::Stdio::piped()).spawn().unwrap()
    };
    let (ca, cb) = (spawn(&pa), spawn(&pb));
    for out in [ca.wait_with_output().unwrap(), cb.wait_with_output().unwrap()] {
        assert_exit(&out, 0);
    }
    assert_eq!((env.new_files("alice").len(), env.new_files("alice/.Sent").len()), (301, 301));
}

/// Issue 18 review: a tool that adds its own From_ line to a message that has one writes
/// two From_ lines in a row; the run stored nothing and exited 65. The second is the
/// message's first line, as before.
#[test]
fn a_from_line_right_after_another_is_part_of_the_message() {
    let env = Env::new();
    let mbox = write_mbox(
        &env,
        "dup.mbox",
        "From a@x Wed Jan  1 00:00:00 2020\nFrom a@x Wed Jan  1 00:00:00 2020\nMessage-ID: <dd@x>\nSubject: s\n\n\
         body\n\nFrom b@x Wed Jan  1 00:00:00 2020\nMessage-ID: <dd2@x>\n\nb2\n",
    );
    let out = replay(&env, &[], &[&mbox]);
    assert_exit(&out, 0);
    assert_eq!(env.new_files("alice").len(), 2, "{}", stderr(&out));
}

/// Issue 18 review: a `--lock-timeout` past what a clock can hold waits as long as it
/// takes, without a panic.
#[test]
fn a_huge_lock_timeout_is_no_panic() {
    let env = Env::new();
    let mbox = write_mbox(&env, "one.mbox", "From a@x Wed Jan  1 00:00:00 2020\nSubject: s\n\nbody\n");
    let out = replay(&env, &["--lock-timeout", "18446744073709551615"], &[&mbox]);
    assert_exit(&out, 0);
}

/// Issue 18 review: a lock file created by a replay as root must still serve the backup's
/// user later: it is readable by all, and opened read-only.
#[test]
fn the_replay_lock_file_is_readable_by_the_next_replay_whoever_made_it() {
    use std::os::unix::fs::PermissionsExt;
    let env = Env::new();
    let mbox = write_mbox(&env, "one.mbox", "From a@x Wed Jan  1 00:00:00 2020\nSubject: s\n\nbody\n");
    assert_exit(&replay(&env, &[], &[&mbox]), 0);
    let mode = std::fs::metadata(env.root().join("alice/mailkeep-replay.lock")).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o644);
}

/// Issue 18 review: a lock file that is there (say, a hard link planted to someone else's
/// file) is used as it is, never chmodded: only a lock file a replay makes is made
/// readable by all.
#[test]
fn a_lock_file_that_is_there_is_never_chmodded() {
    use std::os::unix::fs::PermissionsExt;
    let env = Env::new();
    let mbox = write_mbox(&env, "one.mbox", "From a@x Wed Jan  1 00:00:00 2020\nSubject: s\n\nbody\n");
    std::fs::create_dir(env.root().join("alice")).unwrap();
    let victim = env.root().join("alice/secret");
    std::fs::write(&victim, "secret").unwrap();
    std::fs::set_permissions(&victim, std::fs::Permissions::from_mode(0o600)).unwrap();
    std::fs::hard_link(&victim, env.root().join("alice/mailkeep-replay.lock")).unwrap();
    assert_exit(&replay(&env, &[], &[&mbox]), 0);
    assert_eq!(std::fs::metadata(&victim).unwrap().permissions().mode() & 0o777, 0o600);
}

/// Writes `text` as the file `name` in the test's directory and returns its path.
fn write_mbox(env: &Env, name: &str, text: impl AsRef<[u8]>) -> PathBuf {
    let path = env.dir.path().join(name);
    std::fs::write(&path, text).unwrap();
    path
}

/// Review of issue 24: on NFS the kernel emulates `flock` with a byte-range lock, which an
/// exclusive lock can only take on a file open for writing (EBADF otherwise, and every
/// replay would exit 75). The replay lock is held on a descriptor opened read-write.
#[test]
fn the_replay_lock_is_held_on_a_file_open_for_writing_as_nfs_needs() {
    let env = Env::new();
    let mut child = spawn_replay(&env, Path::new("-"), &[]);
    let lock = env.root().join("alice/mailkeep-replay.lock");
    let fd_dir = PathBuf::from(format!("/proc/{}/fd", child.id()));
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    // The replay takes its lock before it reads stdin, which stays open meanwhile.
    let flags = loop {
        let found = std::fs::read_dir(&fd_dir)
            .into_iter()
            .flatten()
            .flatten()
            .find(|e| std::fs::read_link(e.path()).is_ok_and(|target| target == lock));
        if let Some(entry) = found {
            let info =
                std::fs::read_to_string(format!("/proc/{}/fdinfo/{}", child.id(), entry.file_name().to_str().unwrap()))
                    .unwrap();
            let flags = info.lines().find_map(|l| l.strip_prefix("flags:")).unwrap().trim().to_string();
            break i32::from_str_radix(&flags, 8).unwrap();
        }
        assert!(std::time::Instant::now() < deadline, "the replay never opened {}", lock.display());
        std::thread::sleep(std::time::Duration::from_millis(20));
    };
    drop(child.stdin.take());
    exit_within_a_minute(&mut child);
    assert_eq!(flags & libc::O_ACCMODE, libc::O_RDWR, "expected the lock file open O_RDWR, got flags {flags:o}");
}

/// Review of issue 24: a lock file a replay makes as root (--allow-root) belongs to the
/// folder's owner, who can then open it for writing (as NFS needs, above).
#[test]
fn a_replay_lock_file_made_by_root_belongs_to_the_folders_owner() {
    use std::os::unix::fs::MetadataExt;
    if !is_root() {
        eprintln!("skipped: needs root to make a file for another user");
        return;
    }
    let env = Env::new();
    let mbox = write_mbox(&env, "one.mbox", "From a@x Wed Jan  1 00:00:00 2020\nSubject: s\n\nbody\n");
    std::fs::create_dir(env.root().join("alice")).unwrap();
    std::os::unix::fs::chown(env.root().join("alice"), Some(65534), Some(65534)).unwrap();
    assert_exit(&replay(&env, &[], &[&mbox]), 0);
    let meta = std::fs::metadata(env.root().join("alice/mailkeep-replay.lock")).unwrap();
    assert_eq!((meta.uid(), meta.gid()), (65534, 65534), "expected the lock file to be the folder owner's");
}
