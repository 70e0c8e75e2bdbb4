//! `mailkeep deliver` as Exim runs it: fixtures with expected stored files, exit codes,
//! hostile users, and Python's `mailbox` reading what we wrote.

use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use crate::util::*;

const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/deliver");

const MSG: &[u8] = b"From: a@outside.example\nSubject: t\nMessage-ID: <t.1@outside.example>\n\nbody\n";

fn in_args(user: &str) -> Vec<String> {
    ["--user", user, "--direction", "in", "--rcpt", "x@ourdomain.example"].map(String::from).to_vec()
}

#[test]
fn every_fixture_is_stored_exactly_as_expected() {
    let mut names: Vec<String> = std::fs::read_dir(FIXTURES)
        .unwrap()
        .filter_map(|e| e.unwrap().file_name().to_str()?.strip_suffix(".json").map(String::from))
        .collect();
    names.sort();
    assert!(names.len() >= 15, "expected the fixture set, found {names:?}");
    let mut failed = Vec::new();
    for name in &names {
        let base = Path::new(FIXTURES).join(name);
        let spec: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(base.with_extension("json")).unwrap()).unwrap();
        let args: Vec<&str> = spec["args"].as_array().unwrap().iter().map(|a| a.as_str().unwrap()).collect();
        let envs: Vec<(&str, &str)> =
            spec["env"].as_object().unwrap().iter().map(|(k, v)| (k.as_str(), v.as_str().unwrap())).collect();
        let input = std::fs::read(base.with_extension("in")).unwrap();
        let expected = std::fs::read(base.with_extension("expected")).unwrap();
        let env = Env::new();
        let out = env.deliver(&args, &envs, &input);
        let folder = if args.contains(&"out") { "alice/.Sent" } else { "alice" };
        let files = env.new_files(folder);
        if code(&out) != 0 || files.len() != 1 {
            failed.push(format!("{name}: exit {}, {} files; stderr: {}", code(&out), files.len(), stderr(&out)));
            continue;
        }
        let got = std::fs::read(&files[0]).unwrap();
        if got != expected {
            std::fs::write(base.with_extension("failed"), &got).unwrap();
            let at = expected.iter().zip(&got).position(|(a, b)| a != b).unwrap_or(expected.len().min(got.len()));
            failed.push(format!(
                "{name}: stored file differs from .expected at byte {at} (got written to {name}.failed)"
            ));
        } else if size_in_name(&files[0]) != got.len() as u64 {
            failed.push(format!("{name}: ,S={} but the file has {} bytes", size_in_name(&files[0]), got.len()));
        }
    }
    assert!(failed.is_empty(), "{} of {} fixtures failed:\n{}", failed.len(), names.len(), failed.join("\n"));
}

#[test]
fn stored_file_is_private_and_tmp_is_left_empty() {
    use std::os::unix::fs::PermissionsExt;
    let env = Env::new();
    let out = env.deliver(in_args("alice"), &[("SENDER", "a@outside.example")], MSG);
    assert_exit(&out, 0);
    let f = &env.new_files("alice")[0];
    assert_eq!(std::fs::metadata(f).unwrap().permissions().mode() & 0o7777, 0o600);
    assert_eq!(std::fs::metadata(env.root().join("alice")).unwrap().permissions().mode() & 0o7777, 0o700);
    assert_eq!(std::fs::read_dir(env.root().join("alice/tmp")).unwrap().count(), 0);
    assert!(env.root().join("alice/cur").is_dir());
}

#[test]
fn shared_group_makes_setgid_dirs_and_group_files() {
    use std::os::unix::fs::PermissionsExt;
    let env = Env::new();
    let mut args = in_args("alice");
    args.push("--shared-group".into());
    assert_exit(&env.deliver(&args, &[], MSG), 0);
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o7777;
    assert_eq!(mode(&env.root().join("alice")), 0o2770);
    assert_eq!(mode(&env.root().join("alice/new")), 0o2770);
    assert_eq!(mode(&env.new_files("alice")[0]), 0o660);
}

#[test]
fn sent_copy_gets_a_maildir_plus_plus_folder_with_subscriptions() {
    let env = Env::new();
    for _ in 0..3 {
        let out = env.deliver(
            ["--user", "bob", "--direction", "out", "--rcpt", "x@y"],
            &[("SENDER", "bob@ourdomain.example")],
            MSG,
        );
        assert_exit(&out, 0);
    }
    let u = env.root().join("bob");
    assert_eq!(env.new_files("bob/.Sent").len(), 3);
    assert!(u.join(".Sent/maildirfolder").is_file());
    assert_eq!(std::fs::read_to_string(u.join("subscriptions")).unwrap(), "Sent\n");
    assert_eq!(std::fs::read_to_string(u.join("courierimapsubscribed")).unwrap(), "INBOX.Sent\n");
    assert!(env.new_files("bob").is_empty(), "nothing goes to the INBOX");
}

#[test]
fn hostile_user_names_exit_67_and_write_nothing() {
    let long = "a".repeat(65);
    for user in ["../x", "a/b", "/", ".Sent", "..", "a\x01b", "a\nb", long.as_str(), ""] {
        let env = Env::new();
        let out = env.deliver(in_args(user), &[], MSG);
        assert_exit(&out, 67);
        assert!(env.files().is_empty(), "user {user:?} wrote {:?}", env.files());
        let stray: Vec<_> = std::fs::read_dir(env.dir.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(stray, vec![std::ffi::OsString::from("root")], "user {user:?} wrote beside the root");
        assert_eq!(stderr(&out).lines().count(), 1, "one line on stderr: {}", stderr(&out));
    }
}

#[test]
fn non_utf8_user_name_is_refused() {
    let env = Env::new();
    let bad = std::ffi::OsStr::from_bytes(b"al\xffice");
    let os = std::ffi::OsStr::new;
    let args = [os("--user"), bad, os("--direction"), os("in"), os("--rcpt"), os("x@y")];
    assert_exit(&env.deliver(args, &[], MSG), 67);
    assert!(env.files().is_empty());
}

#[test]
fn user_missing_from_accounts_file_exits_67() {
    let env = Env::new();
    let accounts = env.dir.path().join("accounts");
    std::fs::write(&accounts, "# listed users\nalice\nbob: Bob B.\n").unwrap();
    let acc = accounts.to_str().unwrap();
    assert_exit(&env.deliver(["--user", "carol", "--direction", "in", "--accounts", acc], &[], MSG), 67);
    assert_exit(&env.deliver(["--user", "Bob", "--direction", "in", "--accounts", acc], &[], MSG), 0);
    assert_eq!(env.new_files("bob").len(), 1);
}

/// Issue 20: a missing root may be a volume not mounted yet: Exim keeps the copy (75), it
/// does not bounce it to the admin (78 before).
#[test]
fn missing_root_exits_75_not_initialised_or_not_mounted() {
    let env = Env::new();
    let mut args = vec![
        "deliver".to_string(),
        "--root".into(),
        "/nonexistent/mailkeep-root".into(),
        "--log".into(),
        "none".into(),
    ];
    if is_root() {
        args.push("--allow-root".into());
    }
    args.extend(in_args("alice"));
    let out = env.run(&args, &[], MSG);
    assert_exit(&out, 75);
    let err = stderr(&out);
    assert!(err.contains("/nonexistent/mailkeep-root") && err.contains("not initialised or not mounted"), "{err}");
    assert_eq!(err.lines().count(), 1, "one line: {err}");
}

#[test]
fn root_from_mailkeep_root_environment_variable() {
    let env = Env::new();
    let root = env.root();
    let mut args = vec!["deliver".to_string(), "--log".into(), "none".into()];
    if is_root() {
        args.push("--allow-root".into());
    }
    args.extend(in_args("alice"));
    assert_exit(&env.run(&args, &[("MAILKEEP_ROOT", root.to_str().unwrap())], MSG), 0);
    assert_eq!(env.new_files("alice").len(), 1);
}

#[test]
fn running_as_root_without_allow_root_exits_78() {
    if !is_root() {
        eprintln!("skipped: needs root (CI runs as root)");
        return;
    }
    let env = Env::new();
    let mut args = vec![
        "deliver".to_string(),
        "--root".into(),
        env.root().to_str().unwrap().into(),
        "--log".into(),
        "none".into(),
    ];
    args.extend(in_args("alice"));
    let out = env.run(&args, &[], MSG);
    assert_exit(&out, 78);
    assert!(env.files().is_empty());
}

#[test]
fn empty_input_exits_65_and_creates_nothing() {
    let env = Env::new();
    assert_exit(&env.deliver(in_args("alice"), &[], b""), 65);
    assert_exit(&env.deliver(in_args("alice"), &[], b"From a@b Sat Nov 28 20:31:22 2026\n\n"), 65);
    assert!(env.files().is_empty(), "{:?}", env.files());
}

#[test]
fn bad_usage_exits_64_with_one_line() {
    let env = Env::new();
    // An unknown command is no delivery: the admin family's usage status (2); Exim bounces
    // it all the same (to errors_to).
    for (args, want) in
        [(vec!["deliver", "--direction", "sideways"], 64), (vec!["deliver"], 64), (vec!["frobnicate"], 2)]
    {
        let out = env.run(&args, &[], b"");
        assert_exit(&out, want);
        assert_eq!(stderr(&out).trim_end().lines().count(), 1, "{}", stderr(&out));
    }
}

#[test]
fn read_only_root_exits_75_and_leaves_nothing() {
    let env = Env::new();
    let root = env.root();
    let mut cmd = if is_root() {
        // Root ignores permissions: run as nobody against a root-owned 0755 root.
        let mut c = std::process::Command::new("setpriv");
        c.args(["--reuid=nobody", "--regid=nogroup", "--clear-groups", BIN]);
        c
    } else {
        std::fs::set_permissions(&root, std::os::unix::fs::PermissionsExt::from_mode(0o555)).unwrap();
        std::process::Command::new(BIN)
    };
    cmd.args(["deliver", "--root", root.to_str().unwrap(), "--log", "none"]).args(in_args("alice"));
    cmd.env_clear().env("PATH", "/usr/bin:/bin");
    let out = run_with_stdin(cmd, MSG);
    assert_exit(&out, 75);
    assert!(stderr(&out).contains(root.to_str().unwrap()), "names the path: {}", stderr(&out));
    assert!(env.files().is_empty());
}

#[test]
fn symlinked_user_directory_is_never_followed_and_defers_with_75_issue_23() {
    let env = Env::new();
    let outside = env.dir.path().join("outside");
    std::fs::create_dir(&outside).unwrap();
    std::os::unix::fs::symlink(&outside, env.root().join("alice")).unwrap();
    let out = env.deliver(in_args("alice"), &[], MSG);
    assert_exit(&out, 75); // retried by Exim and Postfix alike: Postfix bounces 73
    assert!(stderr(&out).contains("symlink"), "{}", stderr(&out));
    assert!(files_below(&outside).is_empty());
}

#[test]
fn concurrent_deliveries_get_distinct_files() {
    let env = std::sync::Arc::new(Env::new());
    let handles: Vec<_> = (0..8)
        .map(|i| {
            let env = env.clone();
            std::thread::spawn(move || {
                let msg = format!("Subject: {i}\n\nbody {i}\n");
                code(&env.deliver(in_args("alice"), &[], msg.as_bytes()))
            })
        })
        .collect();
    for h in handles {
        assert_eq!(h.join().unwrap(), 0);
    }
    assert_eq!(env.new_files("alice").len(), 8);
}

#[test]
fn python_mailbox_reads_every_message_we_wrote() {
    let env = Env::new();
    let mut expected = Vec::new();
    for (i, dir) in ["in", "out", "in", "out", "in"].iter().enumerate() {
        let msg = format!("Subject: m{i}\r\nMessage-ID: <m{i}@x>\r\n\r\nline one\r\nFrom line\r\n");
        let out = env.deliver(
            ["--user", "alice", "--direction", dir, "--rcpt", "alice@ourdomain.example"],
            &[("SENDER", "s@x")],
            msg.as_bytes(),
        );
        assert_exit(&out, 0);
        let owner = if *dir == "in" { "alice@ourdomain.example" } else { "s@x" };
        let envelope_to = if *dir == "out" { "Envelope-To: alice@ourdomain.example\n" } else { "" };
        let stored = format!("Return-Path: <s@x>\nDelivered-To: {owner}\n{envelope_to}{}", msg.replace("\r\n", "\n"));
        expected.push((if *dir == "in" { "INBOX" } else { "Sent" }, stored));
    }
    let script = r#"
import mailbox, sys, json
root = sys.argv[1]
md = mailbox.Maildir(root + "/alice", factory=None, create=False)
out = {"INBOX": sorted(m.as_bytes().decode() for m in md), "Sent": sorted(m.as_bytes().decode() for m in md.get_folder("Sent"))}
print(json.dumps(out))
"#;
    let out = std::process::Command::new("python3")
        .args(["-c", script, env.root().to_str().unwrap()])
        .output()
        .expect("python3");
    assert!(out.status.success(), "python3 failed: {}", String::from_utf8_lossy(&out.stderr));
    let got = String::from_utf8(out.stdout).unwrap();
    for folder in ["INBOX", "Sent"] {
        let mut want: Vec<&str> = expected.iter().filter(|(f, _)| *f == folder).map(|(_, m)| m.as_str()).collect();
        want.sort();
        let want_json = format!("\"{folder}\": [{}]", want.iter().map(|m| json_str(m)).collect::<Vec<_>>().join(", "));
        assert!(got.contains(&want_json), "{folder}\n--- expected\n{want_json}\n--- got\n{got}");
    }
}

fn json_str(s: &str) -> String {
    let mut o = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => o.push_str("\\\""),
            '\\' => o.push_str("\\\\"),
            '\n' => o.push_str("\\n"),
            c => o.push(c),
        }
    }
    o.push('"');
    o
}

#[test]
#[cfg_attr(not(feature = "fault-injection"), ignore = "needs the test hooks: cargo test --features fault-injection")]
fn a_panic_exits_75_with_one_line_on_stderr() {
    let env = Env::new();
    let out = env.deliver(in_args("alice"), &[("MAILKEEP_FAULT", "panic-before-store")], MSG);
    assert_exit(&out, 75);
    let err = stderr(&out);
    assert!(err.contains("internal error") && err.contains("fault injected at before-store"), "{err}");
    assert_eq!(err.trim_end().lines().count(), 1, "one line on stderr, got: {err}");
    assert!(env.new_files("alice").is_empty());
}

/// Only part of such a line would fit in the head read: taking that part as the From_ line
/// stored the rest of the line as the message's first line.
#[test]
fn a_first_line_longer_than_a_from_line_can_be_is_kept_whole() {
    let env = Env::new();
    let input = format!("From {} Wed Jan  1 00:00:00 2020\nSubject: x\n\nbody\n", "a".repeat(300_000));
    let out = env.deliver(in_args("alice"), &[], input.as_bytes());
    assert_exit(&out, 0);
    let files = env.new_files("alice");
    let stored = std::fs::read(&files[0]).unwrap();
    assert!(stored.ends_with(input.as_bytes()), "expected the input whole after our header lines");
    assert!(stored.starts_with(b"Return-Path: <>\n"), "no sender taken from a cut line");
}

#[test]
fn a_200_mb_message_is_streamed_in_bounded_memory() {
    // Under a 64 MiB address-space limit a buffered 200 MB message could not be held.
    let env = Env::new();
    let root = env.root();
    let mut cmd = std::process::Command::new("prlimit");
    cmd.args(["--as=67108864", "--", BIN, "deliver", "--root", root.to_str().unwrap(), "--log", "none"]);
    if is_root() {
        cmd.arg("--allow-root");
    }
    cmd.args(in_args("alice")).env_clear().env("PATH", "/usr/bin:/bin");
    let line =
        b"0123456789abcdefghijklmnopqrstuvwxyz0123456789abcdefghijklmnopqrstuvwxyz0123456789abcdefghijklmnopqrstu\r\n";
    let mut msg = b"Subject: big\r\nMessage-ID: <big@x>\r\n\r\n".to_vec();
    while msg.len() < 200_000_000 {
        msg.extend_from_slice(line);
    }
    let out = run_with_stdin(cmd, &msg);
    assert_exit(&out, 0);
    let f = &env.new_files("alice")[0];
    let crlf_lines = msg.windows(2).filter(|w| w == b"\r\n").count() as u64;
    let prefix = "Return-Path: <>\nDelivered-To: x@ourdomain.example\n".len() as u64;
    assert_eq!(std::fs::metadata(f).unwrap().len(), msg.len() as u64 - crlf_lines + prefix);
    assert_eq!(size_in_name(f), std::fs::metadata(f).unwrap().len());
}

/// A FIFO planted where deliver expects a small file (`rel` below the root) makes the first
/// Sent delivery exit 75 at once, with one line naming it, instead of blocking until Exim's
/// timeout; nothing is stored, and the retry after the FIFO is gone stores the message.
#[track_caller]
fn assert_fifo_refused(rel: &str) {
    let env = Env::new();
    assert_exit(&env.deliver(in_args("alice"), &[], MSG), 0);
    let fifo = env.root().join(rel);
    std::fs::create_dir_all(fifo.parent().unwrap()).unwrap();
    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
    let out_args = ["--user", "alice", "--direction", "out", "--rcpt", "x@outside.example"];
    let started = std::time::Instant::now();
    let out = env.deliver_within(std::time::Duration::from_secs(10), out_args, &[], MSG);
    assert_exit(&out, 75);
    assert!(started.elapsed() < std::time::Duration::from_secs(5), "took {:?}", started.elapsed());
    let err = stderr(&out);
    assert_eq!(err.lines().count(), 1, "expected one line on stderr, got:\n{err}");
    assert!(err.contains(rel) && err.contains("not a regular file"), "expected {rel} named in:\n{err}");
    assert!(env.new_files("alice/.Sent").is_empty());
    std::fs::remove_file(&fifo).unwrap();
    assert_exit(&env.deliver(out_args, &[], MSG), 0);
    assert_eq!(env.new_files("alice/.Sent").len(), 1);
}

#[test]
fn fifo_as_subscriptions_exits_75_without_hanging_issue_18() {
    assert_fifo_refused("alice/subscriptions");
}

#[test]
fn fifo_as_courierimapsubscribed_exits_75_without_hanging_issue_18() {
    assert_fifo_refused("alice/courierimapsubscribed");
}

#[test]
fn fifo_as_maildirfolder_exits_75_without_hanging_issue_18() {
    assert_fifo_refused("alice/.Sent/maildirfolder");
}
