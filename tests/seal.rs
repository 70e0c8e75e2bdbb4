//! `mailkeep seal` and `check --seals` (issue 21): the chain of seals proves every message
//! is still there unchanged, or was removed on purpose (audit.log); a lost, altered,
//! edited or unsigned thing is reported by user, folder and name, exit 1.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use mailkeep::audit;

use crate::util::*;

/// What `openssl genpkey -algorithm ed25519` and `openssl pkey -pubout` wrote.
const KEY: &str = "-----BEGIN PRIVATE KEY-----\nMC4CAQAwBQYDK2VwBCIEIP6fkTcRBixV2ujYEh2PCUN3iSpnt/MKPC8gcgWgS5Av\n-----END PRIVATE KEY-----\n";
const PUB: &str = "-----BEGIN PUBLIC KEY-----\nMCowBQYDK2VwAyEArPwYQtPZBBzECKxLbg5VEVV2c2z5O0a4yGciv/LYJZc=\n-----END PUBLIC KEY-----\n";
/// Another key pair's public key.
const OTHER_PUB: &str = "-----BEGIN PUBLIC KEY-----\nMCowBQYDK2VwAyEAfj46T3tmrNCwWycnx50Om4SwMQy3DgYHKQhXvSVG1ys=\n-----END PUBLIC KEY-----\n";

fn seals_dir(env: &Env) -> PathBuf {
    env.root().join(".mailkeep/seals")
}

/// Delivers `n` distinct messages into `user`'s INBOX; returns their paths in new/.
fn deliver(env: &Env, user: &str, n: usize) -> Vec<PathBuf> {
    let before = env.new_files(user);
    for i in 0..n {
        let msg = format!(
            "From: a@outside.example\nSubject: m{i}\nMessage-ID: <{user}.{i}.{}@x>\n\nbody {i}\n",
            before.len()
        );
        assert_exit(
            &env.deliver(["--user", user, "--direction", "in", "--rcpt", "x@example.com"], &[], msg.as_bytes()),
            0,
        );
    }
    env.new_files(user).into_iter().filter(|p| !before.contains(p)).collect()
}

/// `mailkeep seal --root ROOT <extra>`: exit status, stdout, stderr.
fn seal(env: &Env, extra: &[&str]) -> (i32, String, String) {
    seal_env(env, extra, &[])
}

/// `seal`, as root with `--allow-root`, with `vars` in its environment.
fn seal_env(env: &Env, extra: &[&str], vars: &[(&str, &str)]) -> (i32, String, String) {
    let root = env.root();
    let mut args = vec!["seal", "--root", root.to_str().unwrap()];
    if is_root() {
        args.push("--allow-root");
    }
    args.extend_from_slice(extra);
    let out = env.run(&args, vars, b"");
    (code(&out), String::from_utf8_lossy(&out.stdout).into_owned(), stderr(&out))
}

#[track_caller]
fn seal_ok(env: &Env, extra: &[&str]) -> String {
    let (rc, out, err) = seal(env, extra);
    assert_eq!(rc, 0, "seal: expected exit 0, got {rc}\nstdout:\n{out}\nstderr:\n{err}");
    out
}

/// `check --seals --json <extra>`: exit status and the report.
fn check_seals(env: &Env, extra: &[&str]) -> (i32, serde_json::Value) {
    let root = env.root();
    let mut args = vec!["check", "--json", "--seals", "--root", root.to_str().unwrap()];
    args.extend_from_slice(extra);
    let out = env.run(&args, &[], b"");
    let report = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}{}", String::from_utf8_lossy(&out.stdout), stderr(&out)));
    (code(&out), report)
}

/// The seal problems of a report: (kind, message), sorted.
fn seal_problems(report: &serde_json::Value) -> Vec<(String, String)> {
    let mut got: Vec<(String, String)> = report["problems"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["kind"].as_str().unwrap().starts_with("seal"))
        .map(|p| (p["kind"].as_str().unwrap().into(), p["message"].as_str().unwrap().into()))
        .collect();
    got.sort();
    got
}

/// The test key pair in `env`'s directory: the private key (0600, as seal requires) and the
/// public one, by path.
fn key_pair(env: &Env) -> (PathBuf, PathBuf) {
    let (key, public) = (env.dir.path().join("key.pem"), env.dir.path().join("pub.pem"));
    fs::write(&key, KEY).unwrap();
    fs::set_permissions(&key, fs::Permissions::from_mode(0o600)).unwrap();
    fs::write(&public, PUB).unwrap();
    (key, public)
}

fn base(path: &Path) -> String {
    path.file_name().unwrap().to_str().unwrap().split(":2,").next().unwrap().to_string()
}

/// The message lines of seal `seq`.
fn sealed_names(env: &Env, seq: u32) -> Vec<String> {
    let text = fs::read_to_string(seals_dir(env).join(format!("{seq:06}.seal"))).unwrap();
    text.lines()
        .skip(1)
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["name"].as_str().map(String::from))
        .collect()
}

fn writable(path: &Path) {
    fs::set_permissions(path, fs::Permissions::from_mode(0o600)).unwrap();
}

#[test]
fn check_seals_reports_exactly_the_deleted_and_the_altered_message_not_the_one_dovecot_moved() {
    let env = Env::new();
    let files = deliver(&env, "alice", 4);
    let out = seal_ok(&env, &[]);
    assert!(out.contains("sealed 4 messages"), "{out}");
    let (rc, report) = check_seals(&env, &["--verify-content"]);
    assert_eq!((rc, seal_problems(&report)), (0, vec![]), "clean right after the seal: {report:#}");

    let sealed_sha = sha256_of(&files[1]);
    fs::remove_file(&files[0]).unwrap();
    let mut bytes = fs::read(&files[1]).unwrap();
    let last = bytes.len() - 2;
    bytes[last] ^= 0x01; // one byte, same size
    fs::write(&files[1], bytes).unwrap();
    let cur = env.root().join("alice/cur").join(format!("{}:2,S", base(&files[2])));
    fs::rename(&files[2], &cur).unwrap();

    let (rc, report) = check_seals(&env, &["--verify-content"]);
    let want = vec![
        (
            "sealed_altered".to_string(),
            format!(
                "sealed message altered: user alice, folder INBOX, name {}: SHA-256 {}, sealed with {}",
                base(&files[1]),
                sha256_of(&files[1]),
                sealed_sha
            ),
        ),
        (
            "sealed_missing".to_string(),
            format!(
                "sealed message missing: user alice, folder INBOX, name {} (no audit entry removed it)",
                base(&files[0])
            ),
        ),
    ];
    assert_eq!((rc, seal_problems(&report)), (1, want), "{report:#}");
    let users: Vec<&str> = report["problems"].as_array().unwrap().iter().map(|p| p["user"].as_str().unwrap()).collect();
    assert_eq!(users, ["alice", "alice"]);
    // Without --verify-content only what a stat shows: the missing one (the altered one kept its size).
    let (rc, report) = check_seals(&env, &[]);
    let kinds: Vec<String> = seal_problems(&report).into_iter().map(|p| p.0).collect();
    assert_eq!((rc, kinds), (1, vec!["sealed_missing".to_string()]));
    // A new seal does not re-seal the moved one: its base name is sealed already.
    assert!(seal_ok(&env, &[]).contains("nothing new to seal"));
}

fn sha256_of(path: &Path) -> String {
    let out = Command::new("sha256sum").arg(path).output().unwrap();
    String::from_utf8_lossy(&out.stdout).split(' ').next().unwrap().to_string()
}

#[test]
fn a_removal_in_audit_log_is_not_reported_sealed_or_not_yet() {
    let env = Env::new();
    let files = deliver(&env, "bob", 3);
    seal_ok(&env, &[]);
    // What `erase` does: the entry first (fsynced), then the unlink.
    let state = mailkeep::fsutil::open_dir_path(&env.root().join(".mailkeep")).unwrap();
    let removed = audit::Removed {
        folder: "INBOX".into(),
        name: base(&files[1]),
        size: fs::metadata(&files[1]).unwrap().len(),
        sha256: sha256_of(&files[1]),
    };
    let entry = audit::Entry::now("erase", "bob", Some("GDPR request 17"), None, vec![removed]);
    audit::append(std::os::fd::AsFd::as_fd(&state), &entry, 0o600).unwrap();
    fs::remove_file(&files[1]).unwrap();
    let (rc, report) = check_seals(&env, &["--verify-content"]);
    assert_eq!((rc, seal_problems(&report)), (0, vec![]), "not sealed yet, still honoured: {report:#}");
    assert_eq!(report["seals"]["removed"], 1);
    // The next seal takes the entry in as a tombstone, and writes a seal for it alone.
    let out = seal_ok(&env, &[]);
    assert!(out.contains("sealed 0 messages") && out.contains("1 audit entries in seal 000002.seal"), "{out}");
    let tomb = fs::read_to_string(seals_dir(&env).join("000002.seal")).unwrap();
    assert!(tomb.lines().nth(1).unwrap().starts_with("{\"audit\":{\"time\":"), "{tomb}");
    let (rc, report) = check_seals(&env, &["--verify-content"]);
    assert_eq!((rc, seal_problems(&report)), (0, vec![]), "{report:#}");
    // Another file gone without an entry is lost.
    fs::remove_file(&files[2]).unwrap();
    let (rc, report) = check_seals(&env, &[]);
    assert_eq!(rc, 1);
    assert_eq!(seal_problems(&report).len(), 1, "{report:#}");
}

#[test]
fn a_seal_edited_by_hand_or_removed_from_the_middle_is_reported() {
    let env = Env::new();
    for _ in 0..3 {
        deliver(&env, "carol", 1);
        seal_ok(&env, &[]);
    }
    let dir = seals_dir(&env);
    // An edit that keeps the JSON valid: one digit of a digest.
    let first = dir.join("000001.seal");
    let text = fs::read_to_string(&first).unwrap();
    let at = text.rfind("\"sha256\":\"").unwrap() + 10;
    let flipped = if &text[at..at + 1] == "0" { "1" } else { "0" };
    writable(&first);
    fs::write(&first, format!("{}{flipped}{}", &text[..at], &text[at + 1..])).unwrap();
    let (rc, report) = check_seals(&env, &[]);
    let problems = seal_problems(&report);
    assert_eq!(rc, 1);
    assert_eq!(problems.len(), 1, "{problems:?}");
    assert!(
        problems[0].1.contains("000002.seal chains to") && problems[0].1.contains("000001.seal was edited"),
        "{problems:?}"
    );
    fs::write(&first, text).unwrap();
    assert_eq!(check_seals(&env, &[]).0, 0, "restored, the chain holds again");

    fs::remove_file(dir.join("000002.seal")).unwrap();
    let (rc, report) = check_seals(&env, &[]);
    let problems = seal_problems(&report);
    assert_eq!(rc, 1);
    assert!(problems.iter().any(|p| p.1.contains("000002.seal is missing")), "{problems:?}");
    // seal 2's message is no longer sealed by anything, nothing reports it missing: the
    // chain problem is the finding.
    assert_eq!(problems.len(), 1, "{problems:?}");
}

#[test]
fn a_kept_head_finds_seals_removed_from_the_end() {
    let env = Env::new();
    deliver(&env, "dan", 1);
    seal_ok(&env, &[]);
    deliver(&env, "dan", 1);
    let out = seal_ok(&env, &["--quiet"]);
    let head = out.trim().strip_prefix("head 000002.seal ").expect("one head line").to_string();
    assert_eq!(check_seals(&env, &["--seal-head", &head]).0, 0);
    fs::remove_file(seals_dir(&env).join("000002.seal")).unwrap();
    let (rc, report) = check_seals(&env, &["--seal-head", &head]);
    assert_eq!(rc, 1);
    assert!(
        seal_problems(&report)[0].1.contains(&format!("the kept head {head} is not found in the chain")),
        "{report:#}"
    ); // The next seal goes on, and says that the seal its index ended with is gone.
    let (rc, out, err) = seal(&env, &[]);
    assert_eq!(rc, 1, "{out}{err}");
    assert!(err.contains(&format!("seal: problem: 000002.seal (digest {head} when it was indexed) is gone")), "{err}");
    assert!(out.contains("in seal 000002.seal"), "the message of the removed seal is sealed again: {out}");
}

#[test]
fn signatures_verify_with_the_right_key_only() {
    let env = Env::new();
    let (key, public) = key_pair(&env);
    let other = env.dir.path().join("other.pem");
    fs::write(&other, OTHER_PUB).unwrap();
    deliver(&env, "erin", 2);
    seal_ok(&env, &["--sign-key", key.to_str().unwrap()]);
    assert!(seals_dir(&env).join("000001.sig").exists());
    let (rc, report) = check_seals(&env, &["--verify-key", public.to_str().unwrap()]);
    assert_eq!((rc, seal_problems(&report)), (0, vec![]), "{report:#}");
    let (rc, report) = check_seals(&env, &["--verify-key", other.to_str().unwrap()]);
    assert_eq!(rc, 1);
    assert!(seal_problems(&report)[0].1.contains("000001.seal: the signature does not verify"), "{report:#}");
    // An edited signature.
    let sig = seals_dir(&env).join("000001.sig");
    let mut text = fs::read(&sig).unwrap();
    text[5] = if text[5] == b'A' { b'B' } else { b'A' };
    writable(&sig);
    fs::write(&sig, &text).unwrap();
    let (rc, report) = check_seals(&env, &["--verify-key", public.to_str().unwrap()]);
    assert_eq!(rc, 1, "{report:#}");
    // An unsigned seal, when a key is asked for.
    deliver(&env, "erin", 1);
    seal_ok(&env, &[]);
    fs::remove_file(&sig).unwrap();
    let (rc, report) = check_seals(&env, &["--verify-key", public.to_str().unwrap()]);
    let problems: Vec<String> = seal_problems(&report).into_iter().map(|p| p.1).collect();
    assert_eq!(rc, 1);
    assert!(problems.iter().any(|p| p.contains("000001.seal is not signed")), "{problems:?}");
    assert!(problems.iter().any(|p| p.contains("000002.seal is not signed")), "{problems:?}");
}

/// A sealed file is never opened again: replaced by a FIFO, the next seal does not notice
/// it, while a FIFO that is not sealed is reported (exit 1) by the same run.
#[test]
fn an_incremental_seal_does_not_touch_sealed_files() {
    let env = Env::new();
    let files = deliver(&env, "fred", 3);
    seal_ok(&env, &[]);
    fs::remove_file(&files[0]).unwrap();
    nix::unistd::mkfifo(&files[0], nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
    let new = deliver(&env, "fred", 1);
    let (rc, out, err) = seal(&env, &[]);
    assert_eq!((rc, err.as_str()), (0, ""), "{out}");
    assert_eq!(sealed_names(&env, 2), [base(&new[0])]);
    // The same kind of file, not sealed yet, is opened and refused.
    let fifo = env.root().join("fred/new/9.M1P1Q1.planted,S=1");
    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
    let (rc, _, err) = seal(&env, &[]);
    assert_eq!(rc, 1);
    assert!(err.contains(&format!("seal: not sealed: {}: not a regular file", fifo.display())), "{err}");
}

/// Dovecot moves messages from new/ to cur/ (with flags) while a seal runs: each is sealed
/// once, from wherever it was, and whatever the run missed the next one seals.
#[test]
fn files_moved_to_cur_while_sealing_are_sealed_once_and_check_is_clean() {
    let env = Env::new();
    let dir = env.root().join("gina");
    deliver(&env, "gina", 1);
    for i in 0..3000 {
        fs::write(dir.join(format!("new/{i}.M1P1Q{i}.test,S=6")), format!("m{i:04}\n")).unwrap();
    }
    let mover = {
        let dir = dir.clone();
        std::thread::spawn(move || {
            for i in (0..3000).rev() {
                let from = dir.join(format!("new/{i}.M1P1Q{i}.test,S=6"));
                let _ = fs::rename(from, dir.join(format!("cur/{i}.M1P1Q{i}.test,S=6:2,S")));
            }
        })
    };
    let (rc, out, err) = seal(&env, &[]);
    mover.join().unwrap();
    assert_eq!((rc, err.as_str()), (0, ""), "{out}");
    seal_ok(&env, &[]);
    let seals = fs::read_dir(seals_dir(&env))
        .unwrap()
        .filter(|e| e.as_ref().unwrap().path().extension() == Some("seal".as_ref()));
    let mut all: Vec<String> = (1..=seals.count() as u32).flat_map(|s| sealed_names(&env, s)).collect();
    let n = all.len();
    all.sort();
    all.dedup();
    assert_eq!((n, all.len()), (3001, 3001), "every message sealed exactly once");
    let (rc, report) = check_seals(&env, &["--verify-content"]);
    assert_eq!((rc, seal_problems(&report)), (0, vec![]), "{report:#}");
}

#[test]
fn an_audit_log_rewritten_after_a_seal_stops_the_next_seal_and_check_reports_it() {
    let env = Env::new();
    deliver(&env, "hal", 1);
    let state = mailkeep::fsutil::open_dir_path(&env.root().join(".mailkeep")).unwrap();
    let entry = audit::Entry::now("hold", "hal", Some("litigation"), None, vec![]);
    audit::append(std::os::fd::AsFd::as_fd(&state), &entry, 0o600).unwrap();
    seal_ok(&env, &[]);
    fs::write(env.root().join(".mailkeep/audit.log"), "").unwrap();
    let (rc, _, err) = seal(&env, &[]);
    assert_eq!(rc, 1, "{err}");
    assert!(err.contains("audit.log is shorter than seal 000001.seal pinned"), "{err}");
    let (rc, report) = check_seals(&env, &[]);
    assert_eq!(rc, 1);
    assert!(seal_problems(&report)[0].1.contains("it was truncated or replaced"), "{report:#}");
}

/// An independent reader: Python's json parses every line of every seal, and hashlib
/// finds each seal's `previous` to be the digest of the one before.
#[test]
fn python_reads_every_seal_line_and_follows_the_chain() {
    let env = Env::new();
    deliver(&env, "ivy", 2);
    seal_ok(&env, &[]);
    let state = mailkeep::fsutil::open_dir_path(&env.root().join(".mailkeep")).unwrap();
    let entry = audit::Entry::now("hold", "ivy", Some("a \"quoted\" reason\nwith a newline"), None, vec![]);
    audit::append(std::os::fd::AsFd::as_fd(&state), &entry, 0o600).unwrap();
    deliver(&env, "ivy", 1);
    let head = seal_ok(&env, &[]);
    let script = r#"
import hashlib, json, os, sys
d = sys.argv[1]
prev = "0" * 64
names = sorted(n for n in os.listdir(d) if n.endswith(".seal"))
lines = 0
for n in names:
    data = open(os.path.join(d, n), "rb").read()
    rows = [json.loads(l) for l in data.decode("utf-8").splitlines()]
    assert rows[0]["format"] == "mailkeep-seal/1" and rows[0]["previous"] == prev, n
    assert rows[0]["messages"] + rows[0]["audit_entries"] == len(rows) - 1, n
    lines += len(rows)
    prev = hashlib.sha256(data).hexdigest()
print(len(names), lines, prev)
"#;
    let out = Command::new("python3").arg("-c").arg(script).arg(seals_dir(&env)).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let got = String::from_utf8_lossy(&out.stdout).trim().to_string();
    let digest = head.lines().last().unwrap().rsplit(' ').next().unwrap();
    assert_eq!(got, format!("2 6 {digest}"), "python: seals, lines, head digest");
}

/// Every status of `seal` (the admin family), each with an input that produces it.
#[test]
fn seal_exit_codes() {
    let env = Env::new();
    deliver(&env, "kim", 1);
    let root = env.root();
    let root = root.to_str().unwrap();
    let run = |args: &[&str]| {
        let mut args = args.to_vec();
        if is_root() {
            args.push("--allow-root");
        }
        code(&env.run(args, &[], b""))
    };
    assert_eq!(run(&["seal", "--root", root]), 0, "a backup");
    let missing = env.dir.path().join("missing");
    assert_eq!(run(&["seal", "--root", missing.to_str().unwrap()]), 2, "a missing root");
    assert_eq!(run(&["seal", "--root", root, "--bogus"]), 2, "an unknown option");
    let key = env.dir.path().join("key.pem");
    fs::write(&key, KEY).unwrap();
    fs::set_permissions(&key, fs::Permissions::from_mode(0o644)).unwrap();
    let (rc, _, err) = seal(&env, &["--sign-key", key.to_str().unwrap()]);
    assert_eq!(rc, 2, "{err}");
    assert!(err.contains("others may read it (mode 0644)"), "{err}");
    let bare = env.dir.path().join("bare");
    fs::create_dir(&bare).unwrap();
    assert_eq!(run(&["seal", "--root", bare.to_str().unwrap()]), 75, "a root without its marker (not mounted?)");
    assert!(!bare.join(".mailkeep").exists(), "nothing is created in it");
    let full = Command::new(BIN)
        .args(["seal", "--root", root, "--allow-root"])
        .env_clear()
        .stdout(fs::File::options().write(true).open("/dev/full").unwrap())
        .output()
        .unwrap();
    assert_eq!(code(&full), 75, "the head cannot be printed: {}", stderr(&full));
}

/// One seal at a time: a second run waits for the lock, says so, and then seals.
#[test]
fn a_second_seal_waits_for_the_first() {
    let env = Env::new();
    deliver(&env, "lee", 1);
    seal_ok(&env, &[]);
    deliver(&env, "lee", 1);
    let lock = fs::File::open(seals_dir(&env).join("lock")).unwrap();
    lock.lock().unwrap();
    let mut child = Command::new(BIN)
        .args(["seal", "--root", env.root().to_str().unwrap(), "--allow-root"])
        .env_clear()
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(700));
    assert!(child.try_wait().unwrap().is_none(), "seal did not wait for the lock");
    lock.unlock().unwrap();
    let out = child.wait_with_output().unwrap();
    assert_exit(&out, 0);
    assert!(stderr(&out).contains("another seal is running; waiting for it to finish"), "{}", stderr(&out));
    assert!(String::from_utf8_lossy(&out.stdout).contains("sealed 1 messages"));
}

/// The index is derived data: missing or damaged, it is made again from the seals, and
/// nothing sealed is sealed twice.
#[test]
fn a_missing_or_damaged_index_is_rebuilt_from_the_seals() {
    let env = Env::new();
    deliver(&env, "max", 3);
    seal_ok(&env, &[]);
    let index = seals_dir(&env).join("index.sqlite");
    fs::remove_file(&index).unwrap();
    assert!(seal_ok(&env, &[]).contains("nothing new to seal"));
    fs::write(&index, vec![0xAB; 8192]).unwrap();
    let (rc, out, err) = seal(&env, &[]);
    assert_eq!(rc, 0, "{err}");
    assert!(out.contains("nothing new to seal") && err.contains("is unusable"), "{out}{err}");
    deliver(&env, "max", 1);
    assert!(seal_ok(&env, &["--rebuild-index"]).contains("sealed 1 messages"));
}

/// Appends `entry` to the root's audit.log as expire and erase do.
fn append_audit(env: &Env, entry: &audit::Entry) {
    let state = mailkeep::fsutil::open_dir_path(&env.root().join(".mailkeep")).unwrap();
    audit::append(std::os::fd::AsFd::as_fd(&state), entry, 0o600).unwrap();
}

/// What `erase` would write for `file` of `user`'s INBOX (its size and SHA-256 now).
fn removed(file: &Path) -> audit::Removed {
    audit::Removed {
        folder: "INBOX".into(),
        name: base(file),
        size: fs::metadata(file).unwrap().len(),
        sha256: sha256_of(file),
    }
}

/// A line appended to audit.log by anyone who can write it hides nothing: a removal counts
/// only from expire or erase with the sealed size and SHA-256, a forged one is itself
/// reported, and a removal entry does not excuse a message that is there but altered.
#[test]
fn a_forged_audit_line_hides_no_deleted_or_altered_message() {
    let env = Env::new();
    let files = deliver(&env, "nina", 4);
    seal_ok(&env, &[]);
    // A "hold" naming the first with its true digest; an erase naming the second with
    // another digest; a true erase entry for the third, which is then altered, not removed.
    append_audit(&env, &audit::Entry::now("hold", "nina", Some("x"), None, vec![removed(&files[0])]));
    let wrong = audit::Removed { sha256: "00".repeat(32), ..removed(&files[1]) };
    append_audit(&env, &audit::Entry::now("erase", "nina", Some("y"), None, vec![wrong]));
    append_audit(&env, &audit::Entry::now("erase", "nina", Some("z"), None, vec![removed(&files[2])]));
    fs::remove_file(&files[0]).unwrap();
    fs::remove_file(&files[1]).unwrap();
    let mut bytes = fs::read(&files[2]).unwrap();
    let last = bytes.len() - 2;
    bytes[last] ^= 1;
    fs::write(&files[2], bytes).unwrap();
    let (rc, report) = check_seals(&env, &["--verify-content"]);
    let kinds: Vec<(String, bool)> = seal_problems(&report)
        .into_iter()
        .map(|(kind, msg)| {
            let names = [0, 1, 2].iter().filter(|&&i| msg.contains(&base(&files[i]))).count() == 1;
            (kind, names)
        })
        .collect();
    let want: Vec<(String, bool)> =
        ["seal_removal_mismatch", "seal_removal_mismatch", "sealed_altered", "sealed_missing", "sealed_missing"]
            .iter()
            .map(|k| (k.to_string(), true))
            .collect();
    assert_eq!((rc, kinds), (1, want), "{report:#}");
    assert_eq!(report["seals"]["removed"], 0, "{report:#}");
}

/// Removals no seal vouches for yet are listed with who, when and why (exit 0: expire runs
/// daily); against a kept head, a removal sealed after it or not sealed at all is a problem.
#[test]
fn a_removal_no_seal_vouches_for_is_listed_and_against_a_kept_head_reported() {
    let env = Env::new();
    let files = deliver(&env, "olga", 2);
    let out = seal_ok(&env, &["--quiet"]);
    let kept = out.trim().rsplit(' ').next().unwrap().to_string();
    append_audit(&env, &audit::Entry::now("erase", "olga", Some("GDPR request 17"), None, vec![removed(&files[0])]));
    fs::remove_file(&files[0]).unwrap();
    let (rc, report) = check_seals(&env, &[]);
    assert_eq!((rc, seal_problems(&report)), (0, vec![]), "{report:#}");
    let listed = &report["seals"]["removed_not_sealed"];
    assert_eq!(listed.as_array().map(Vec::len), Some(1), "{report:#}");
    assert_eq!(
        (listed[0]["name"].as_str(), listed[0]["reason"].as_str()),
        (Some(&*base(&files[0])), Some("GDPR request 17"))
    );
    let root = env.root();
    let text = env.run(["check", "--seals", "--root", root.to_str().unwrap()], &[], b"");
    let want = format!("removed, not yet sealed: user olga, folder INBOX, name {}: erase at ", base(&files[0]));
    assert!(String::from_utf8_lossy(&text.stdout).contains(&want), "{}", String::from_utf8_lossy(&text.stdout));
    let (rc, report) = check_seals(&env, &["--seal-head", &kept]);
    let kinds: Vec<String> = seal_problems(&report).into_iter().map(|p| p.0).collect();
    assert_eq!((rc, kinds), (1, vec!["seal_removal_after_kept_head".to_string()]), "{report:#}");
    // Sealed: vouched for by the chain, but still not by the older kept head.
    let newer = seal_ok(&env, &["--quiet"]).trim().rsplit(' ').next().unwrap().to_string();
    let (rc, report) = check_seals(&env, &[]);
    assert_eq!((rc, report["seals"]["removed_not_sealed"].as_array().map(Vec::len)), (0, Some(0)), "{report:#}");
    assert_eq!(check_seals(&env, &["--seal-head", &kept]).0, 1);
    let text = env.run(["check", "--seals", "--root", root.to_str().unwrap(), "--seal-head", &kept], &[], b"");
    let want =
        format!("removed after the kept head (in 000002.seal): user olga, folder INBOX, name {}", base(&files[0]));
    assert!(String::from_utf8_lossy(&text.stdout).contains(&want), "{}", String::from_utf8_lossy(&text.stdout));
    let (rc, report) = check_seals(&env, &["--seal-head", &newer]);
    assert_eq!((rc, seal_problems(&report)), (0, vec![]), "{report:#}");
}

/// `seal --sign-key` never signs a seal it did not write: an unsigned head (written without
/// the key, or planted by someone who can write seals/ but not read the key) is reported.
#[test]
fn an_unsigned_head_is_reported_never_signed_after_the_fact() {
    let env = Env::new();
    let (key, public) = key_pair(&env);
    deliver(&env, "pia", 1);
    seal_ok(&env, &["--sign-key", key.to_str().unwrap()]);
    deliver(&env, "pia", 1);
    seal_ok(&env, &[]);
    deliver(&env, "pia", 1);
    let (rc, out, err) = seal(&env, &["--sign-key", key.to_str().unwrap()]);
    assert_eq!(rc, 1, "{out}{err}");
    assert!(err.contains("the head 000002.seal is not signed"), "{err}");
    assert!(!seals_dir(&env).join("000002.sig").exists(), "the unsigned head was signed");
    assert!(seals_dir(&env).join("000003.sig").exists(), "the new seal is signed");
    let (rc, report) = check_seals(&env, &["--verify-key", public.to_str().unwrap()]);
    let problems: Vec<String> = seal_problems(&report).into_iter().map(|p| p.1).collect();
    assert_eq!(rc, 1);
    assert!(problems.len() == 1 && problems[0].contains("000002.seal is not signed"), "{problems:?}");
}

/// The signature is written before the seal: a crash between them leaves an orphan .sig
/// that the next run replaces, never an unsigned seal.
#[test]
fn a_crash_between_signature_and_seal_leaves_no_unsigned_seal() {
    let env = Env::new();
    let (key, public) = key_pair(&env);
    deliver(&env, "quinn", 1);
    let (rc, _, _) = seal_env(&env, &["--sign-key", key.to_str().unwrap()], &[("MAILKEEP_FAULT", "seal-signed")]);
    assert_ne!(rc, 0);
    assert!(!seals_dir(&env).join("000001.seal").exists() && seals_dir(&env).join("000001.sig").exists());
    seal_ok(&env, &["--sign-key", key.to_str().unwrap()]);
    let (rc, report) = check_seals(&env, &["--verify-key", public.to_str().unwrap()]);
    assert_eq!((rc, seal_problems(&report)), (0, vec![]), "{report:#}");
}

/// A seal's audit lines are pinned to audit.log's bytes: a tombstone edited in the head seal
/// (whose digest nothing after it pins) is reported by check and stops seal.
#[test]
fn a_seal_whose_audit_lines_differ_from_audit_log_is_reported() {
    let env = Env::new();
    let files = deliver(&env, "rita", 2);
    seal_ok(&env, &[]);
    append_audit(&env, &audit::Entry::now("erase", "rita", Some("ticket 1"), None, vec![removed(&files[0])]));
    fs::remove_file(&files[0]).unwrap();
    seal_ok(&env, &[]);
    let head = seals_dir(&env).join("000002.seal");
    let text = fs::read_to_string(&head).unwrap();
    writable(&head);
    fs::write(&head, text.replace("ticket 1", "ticket 2")).unwrap();
    let (rc, report) = check_seals(&env, &[]);
    let problems = seal_problems(&report);
    assert_eq!(rc, 1, "{report:#}");
    assert!(
        problems.iter().any(|p| p.1.contains("000002.seal: its 1 audit lines are not the 1 entries")),
        "{problems:?}"
    );
    let (rc, _, err) = seal(&env, &[]);
    assert_eq!(rc, 1, "{err}");
    assert!(err.contains("000002.seal: its 1 audit lines are not the 1 entries"), "{err}");
    // No longer the head: a seal taken into the index (here by a rebuild) is compared too.
    fs::write(&head, &text).unwrap();
    deliver(&env, "rita", 1);
    seal_ok(&env, &["--rebuild-index"]);
    fs::write(&head, text.replace("ticket 1", "ticket 2")).unwrap();
    let (rc, _, err) = seal(&env, &["--rebuild-index"]);
    assert_eq!(rc, 1, "{err}");
    assert!(err.contains("000002.seal: its 1 audit lines are not the 1 entries"), "{err}");
}

/// Rows inserted into seals/index.sqlite: the next seal finds the index does not match its
/// seals and rebuilds it; an edit it cannot see keeps the message out of the seals but not out
/// of `check --seals`, which reports a file older than the last seal's run that no seal holds.
#[test]
fn an_edited_index_keeps_no_message_out_of_the_seals_or_out_of_check() {
    let env = Env::new();
    deliver(&env, "sam", 1);
    seal_ok(&env, &[]);
    let hidden = deliver(&env, "sam", 1);
    let index = rusqlite::Connection::open(seals_dir(&env).join("index.sqlite")).unwrap();
    let insert = "INSERT INTO sealed VALUES ('sam', 'INBOX', ?1, 1, 'x', 1)";
    index.execute(insert, [base(&hidden[0])]).unwrap();
    // The run starts later than the file's ctime (the test clock is 5 s ahead).
    let later = [("MAILKEEP_FAULT", "clock+5")];
    let (rc, out, err) = seal_env(&env, &[], &later);
    assert_eq!(rc, 1, "{out}{err}");
    assert!(err.contains("the index holds other names than its seals added"), "{err}");
    assert!(out.contains("sealed 1 messages"), "{out}");
    // Cleverer: a sealed name swapped for the hidden one, so the counts still agree. The
    // next seal seals the message whose row went again, skips the hidden one.
    let hidden = deliver(&env, "sam", 1);
    let index = rusqlite::Connection::open(seals_dir(&env).join("index.sqlite")).unwrap();
    let swapped: String =
        index.query_row("SELECT name FROM sealed WHERE user = 'sam' LIMIT 1", [], |r| r.get(0)).unwrap();
    index.execute("DELETE FROM sealed WHERE user = 'sam' AND name = ?1", [&swapped]).unwrap();
    index.execute(insert, [base(&hidden[0])]).unwrap();
    let (rc, out, err) = seal_env(&env, &[], &later);
    assert_eq!((rc, out.contains("sealed 1 messages")), (0, true), "{out}{err}");
    let (rc, report) = check_seals(&env, &[]);
    let problems = seal_problems(&report);
    assert_eq!(rc, 1, "{report:#}");
    assert_eq!(problems.len(), 1, "{problems:?}");
    assert_eq!(problems[0].0, "seal_skipped");
    assert!(problems[0].1.contains(&format!("user sam, folder INBOX, name {}", base(&hidden[0]))), "{problems:?}");
}

/// As root, seal refuses without --allow-root (exit 2, as expire, erase and hold), and never
/// follows a symlink planted as its index (or the index's journal) out of the root.
#[test]
fn seal_as_root_needs_allow_root_and_follows_no_symlinked_index() {
    if !is_root() {
        return;
    }
    let env = Env::new();
    deliver(&env, "tom", 1);
    let root = env.root();
    let out = env.run(["seal", "--root", root.to_str().unwrap()], &[], b"");
    assert_exit(&out, 2);
    assert!(stderr(&out).contains("refusing to run as root"), "{}", stderr(&out));
    seal_ok(&env, &[]);
    let outside = env.dir.path().join("outside.sqlite");
    for planted in ["index.sqlite", "index.sqlite-journal"] {
        let index = seals_dir(&env).join("index.sqlite");
        let _ = fs::remove_file(&index);
        std::os::unix::fs::symlink(&outside, seals_dir(&env).join(planted)).unwrap();
        let (rc, out, err) = seal(&env, &[]);
        assert_eq!(rc, 2, "{planted}: {out}{err}");
        assert!(
            err.contains(&format!("refusing to follow symlink {}", seals_dir(&env).join(planted).display())),
            "{err}"
        );
        assert!(!outside.exists(), "{planted}: seal wrote outside the root");
        fs::remove_file(seals_dir(&env).join(planted)).unwrap();
    }
    assert!(seal_ok(&env, &[]).contains("nothing new to seal"));
}

/// A message an expire removes while `check --seals` runs (after it read audit.log) is not
/// called lost: the log is read again first.
#[test]
fn a_message_expired_while_check_runs_is_not_reported_lost() {
    let env = Env::new();
    let files = deliver(&env, "uma", 2);
    seal_ok(&env, &[]);
    let go = env.dir.path().join("go");
    let fault = format!("pause-check-seals-log-read:{}", go.display());
    let root = env.root();
    let child = Command::new(BIN)
        .args(["check", "--json", "--seals", "--root", root.to_str().unwrap()])
        .env_clear()
        .env("MAILKEEP_FAULT", &fault)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let paused = env.dir.path().join("go.paused");
    for _ in 0..3000 {
        if paused.exists() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    assert!(paused.exists(), "check never reached the point after reading audit.log");
    append_audit(&env, &audit::Entry::now("expire", "uma", None, None, vec![removed(&files[0])]));
    fs::remove_file(&files[0]).unwrap();
    fs::write(&go, "").unwrap();
    let out = child.wait_with_output().unwrap();
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!((code(&out), seal_problems(&report)), (0, vec![]), "{report:#}{}", stderr(&out));
    assert_eq!(report["seals"]["removed"], 1);
}

/// A planted 999999.seal is one gap finding, not a line per missing number; seal stops on a
/// damaged head and says how to go on, and the README's procedure (move it aside, rebuild the
/// index) gets sealing going again.
#[test]
fn a_damaged_or_planted_head_is_one_finding_and_the_documented_recovery_works() {
    let env = Env::new();
    deliver(&env, "vic", 1);
    seal_ok(&env, &[]);
    let planted = seals_dir(&env).join("999999.seal");
    fs::write(&planted, "{}\n").unwrap();
    let (rc, report) = check_seals(&env, &[]);
    let problems = seal_problems(&report);
    assert_eq!(rc, 1);
    assert_eq!(problems.len(), 2, "{problems:?}");
    assert!(
        problems.iter().any(|p| p.1.contains("000002.seal..999998.seal are missing (999997 seals)")),
        "{problems:?}"
    );
    deliver(&env, "vic", 1);
    let (rc, _, err) = seal(&env, &[]);
    assert_eq!(rc, 1, "{err}");
    assert!(
        err.contains("999999.seal") && err.contains("move it out of") && err.contains("seal --rebuild-index"),
        "{err}"
    );
    fs::rename(&planted, env.dir.path().join("999999.seal.damaged")).unwrap();
    let out = seal_ok(&env, &["--rebuild-index"]);
    assert!(out.contains("sealed 1 messages in seal 000002.seal") || out.contains("in seal 000002.seal"), "{out}");
    let (rc, report) = check_seals(&env, &["--verify-content"]);
    assert_eq!((rc, seal_problems(&report)), (0, vec![]), "{report:#}");
}

/// Small things: a public key given to --sign-key is "not a private key"; a mistyped kept head
/// is "not found in the chain"; a root without seals says "seals: none".
#[test]
fn seal_messages_say_what_is_wrong() {
    let env = Env::new();
    deliver(&env, "wes", 1);
    let public = env.dir.path().join("pub.pem");
    fs::write(&public, PUB).unwrap();
    fs::set_permissions(&public, fs::Permissions::from_mode(0o644)).unwrap();
    let (rc, _, err) = seal(&env, &["--sign-key", public.to_str().unwrap()]);
    assert_eq!(rc, 2);
    assert!(err.contains("not a private key"), "{err}");
    let root = env.root();
    let out = env.run(["check", "--seals", "--root", root.to_str().unwrap()], &[], b"");
    assert!(String::from_utf8_lossy(&out.stdout).contains("seals: none\n"), "{}", String::from_utf8_lossy(&out.stdout));
    seal_ok(&env, &[]);
    let (rc, report) = check_seals(&env, &["--seal-head", "5f0c9d"]);
    assert_eq!(rc, 1);
    assert!(seal_problems(&report)[0].1.contains("the kept head 5f0c9d is not found in the chain"), "{report:#}");
}

/// With `init --shared-group` the group may write ROOT/.mailkeep: an audit.log that does not
/// belong to the directory's owner was put there by someone else.
#[test]
fn an_audit_log_of_another_owner_is_reported() {
    if !is_root() {
        return;
    }
    let env = Env::new();
    deliver(&env, "xia", 1);
    append_audit(&env, &audit::Entry::now("hold", "xia", Some("case 1"), None, vec![]));
    seal_ok(&env, &[]);
    assert_eq!(check_seals(&env, &[]).0, 0);
    let log = env.root().join(".mailkeep/audit.log");
    std::os::unix::fs::chown(&log, Some(65534), None).unwrap();
    let (rc, report) = check_seals(&env, &[]);
    assert_eq!(rc, 1);
    assert!(seal_problems(&report)[0].1.contains("audit.log belongs to uid 65534"), "{report:#}");
}
