//! Property tests over the real binary (issue 8): any user name, sender or recipient is
//! refused or stays inside `ROOT/<user>/` and reaches a header line only cleaned; any message
//! is stored as the documented transformation; any messages Python's `mailbox.mbox` writes
//! are replayed message for message. And the fuzzers' regression inputs (fuzz/regressions/).
//!
//! Each case spawns the binary (about 2 ms on tmpfs), so CI runs a few hundred cases per
//! property; `MAILKEEP_LONG=1` or `PROPTEST_CASES=N` run more. The pure functions behind these
//! (user check, cleaning, header lines, CRLF stream, mbox reader) have in-process property
//! tests with many more cases inside the crate (`src/proptests.rs`).

use std::ffi::{OsStr, OsString};
use std::io::{BufRead, BufReader, Write};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

use proptest::prelude::*;
use proptest::test_runner::FileFailurePersistence;

use crate::faults::{finish, long, shm};
use crate::util::*;

const FUZZ_REGRESSIONS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/fuzz/regressions");
const MBOX_WRITER: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/faults/mbox_writer.py");

/// `ci` cases normally, `long_n` with `MAILKEEP_LONG=1`; `PROPTEST_CASES` overrides both.
fn config(ci: u32, long_n: u32) -> ProptestConfig {
    let cases = std::env::var("PROPTEST_CASES").ok().and_then(|v| v.parse().ok());
    ProptestConfig {
        cases: cases.unwrap_or(if long() { long_n } else { ci }),
        failure_persistence: Some(Box::new(FileFailurePersistence::Direct("tests/faults/props.proptest-regressions"))),
        ..ProptestConfig::default()
    }
}

static CASES: [AtomicUsize; 4] = [AtomicUsize::new(0), AtomicUsize::new(0), AtomicUsize::new(0), AtomicUsize::new(0)];

/// Counts a passed case; the count goes to target/tmp/mailkeep-reliability/props-<name>.txt.
fn count(i: usize, name: &str) {
    let n = CASES[i].fetch_add(1, Ordering::Relaxed) + 1;
    if n.is_multiple_of(100) {
        let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("mailkeep-reliability");
        let _ = std::fs::create_dir_all(&dir);
        let _ = std::fs::write(dir.join(format!("props-{name}.txt")), format!("{name}: {n} cases passed\n"));
    }
    if n.is_multiple_of(5000) {
        eprintln!("{name}: {n} cases passed");
    }
}

/// A fresh backup root on tmpfs.
fn scratch() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::Builder::new().prefix("mailkeep-props").tempdir_in(shm()).unwrap();
    let root = dir.path().join("root");
    crate::util::init_root(&root);
    (dir, root)
}

/// `mailkeep deliver` with `args` (after `--root ROOT --log none`), `env` and `stdin`.
fn deliver(root: &Path, args: &[OsString], env: &[(&str, &OsStr)], stdin: &[u8]) -> (i32, String) {
    let mut cmd = Command::new(BIN);
    cmd.args(["deliver", "--log", "none", "--root"]).arg(root).args(args);
    if is_root() {
        cmd.arg("--allow-root");
    }
    cmd.env_clear().env("PATH", "/usr/bin:/bin");
    for (k, v) in env {
        cmd.env(k, v);
    }
    finish(run_with_stdin(cmd, stdin))
}

fn os(b: &[u8]) -> OsString {
    OsStr::from_bytes(b).to_os_string()
}

// ---------------------------------------------------------------------------------------------
// The model: what the README promises, written independently of src/
// ---------------------------------------------------------------------------------------------

/// A user name mailkeep accepts: 1 to 64 of [a-zA-Z0-9.-_+=], not starting with '.', no "..".
fn valid_user(b: &[u8]) -> bool {
    (1..=64).contains(&b.len())
        && b.iter().all(|&c| c.is_ascii_alphanumeric() || b".-_+=".contains(&c))
        && b[0] != b'.'
        && !b.windows(2).any(|w| w == b"..")
}

/// An argument made safe for a header line: control bytes and DEL become '_'.
fn clean(v: &[u8]) -> Vec<u8> {
    v.iter().map(|&b| if b < 0x20 || b == 0x7f { b'_' } else { b }).collect()
}

/// The envelope sender as Exim passes it: None is the null sender.
fn sender(raw: &[u8]) -> Option<Vec<u8>> {
    let raw = raw.trim_ascii();
    let raw = raw.strip_prefix(b"<").and_then(|r| r.strip_suffix(b">")).unwrap_or(raw);
    (!raw.is_empty() && !raw.eq_ignore_ascii_case(b"MAILER-DAEMON")).then(|| clean(raw))
}

/// `Envelope-To:` with the recipients, folded before column 78.
fn envelope_to(rcpts: &[Vec<u8>]) -> Vec<u8> {
    let mut out = b"Envelope-To:".to_vec();
    let mut col = out.len();
    for (i, r) in rcpts.iter().enumerate() {
        let last = i + 1 == rcpts.len();
        let need = 1 + r.len() + usize::from(!last);
        if i > 0 && col + need > 78 {
            out.push(b'\n');
            col = 0;
        }
        out.push(b' ');
        out.extend_from_slice(r);
        if !last {
            out.push(b',');
        }
        col += need;
    }
    out.push(b'\n');
    out
}

/// The header lines mailkeep prepends.
fn prefix(user: &str, out: bool, sender: Option<&[u8]>, rcpts: &[Vec<u8>]) -> Vec<u8> {
    let owner: Vec<u8> = if out {
        sender.map_or_else(|| user.as_bytes().to_vec(), <[u8]>::to_vec)
    } else {
        let local =
            |r: &&Vec<u8>| r.split(|&b| b == b'@').next().unwrap_or_default().eq_ignore_ascii_case(user.as_bytes());
        rcpts.iter().find(local).or(rcpts.first()).cloned().unwrap_or_else(|| user.as_bytes().to_vec())
    };
    let mut p = b"Return-Path: <".to_vec();
    p.extend_from_slice(&clean(sender.unwrap_or_default()));
    p.extend_from_slice(b">\nDelivered-To: ");
    p.extend_from_slice(&clean(&owner));
    p.push(b'\n');
    if out && !rcpts.is_empty() {
        p.extend_from_slice(&envelope_to(&rcpts.iter().map(|r| clean(r)).collect::<Vec<_>>()));
    }
    p
}

/// Every CRLF becomes LF; a lone CR stays.
fn crlf_to_lf(b: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\r' && b.get(i + 1) == Some(&b'\n') {
            out.push(b'\n');
            i += 2;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    out
}

/// The sender a leading From_ line gives: None without one, Some(None) when it names none.
type FromSender = Option<Option<Vec<u8>>>;

/// What `deliver` stores of `input` after its header lines, and the From_ line's sender;
/// None when the message is empty (exit 65). A leading From_ line goes, and with it one
/// final newline (Exim's default message_suffix).
fn stored_body(input: &[u8]) -> Option<(Vec<u8>, FromSender)> {
    let (from, rest) = if input.starts_with(b"From ") {
        let end = input.iter().position(|&b| b == b'\n').map_or(input.len(), |i| i + 1);
        let line = input[..end].trim_ascii_end();
        let addr = line.get(5..).unwrap_or_default().trim_ascii_start();
        let addr = &addr[..addr.iter().position(|&b| b == b' ' || b == b'\t').unwrap_or(addr.len())];
        (Some(sender(addr)), &input[end..])
    } else {
        (None, input)
    };
    if rest.is_empty() || (from.is_some() && (rest == b"\n" || rest == b"\r\n")) {
        return None;
    }
    let mut body = crlf_to_lf(rest);
    if from.is_some() && body.ends_with(b"\n") {
        body.pop();
    }
    Some((body, from))
}

// ---------------------------------------------------------------------------------------------
// Strategies
// ---------------------------------------------------------------------------------------------

/// Bytes an argument can carry (no NUL), biased to what breaks paths and headers.
fn hostile_arg(max: usize) -> impl Strategy<Value = Vec<u8>> {
    let piece = prop_oneof![
        4 => prop::collection::vec(1u8..=255, 1..4),
        3 => prop::sample::select(vec![
            &b"a"[..], b"Z", b"0", b".", b"..", b"/", b"-", b"+", b"=", b"_", b" ", b"\n", b"\r", b"\r\n", b"\t",
            b"\x7f", b"\xc3\xa9", b"@", b"<", b">", b"~", b"\\", b"*", b"%2e", b"\r\nBcc: evil@x",
            b"\nX-Injected: yes", b"MAILER-DAEMON", b"alice", b"new", b"tmp", b".Sent", b"../../etc",
        ])
        .prop_map(<[u8]>::to_vec),
    ];
    prop::collection::vec(piece, 0..max).prop_map(|v| v.concat())
}

/// Message bytes: lines of mail-ish and hostile text, or plain random bytes, sometimes behind
/// an Exim From_ line and with Exim's extra final newline.
fn message() -> impl Strategy<Value = Vec<u8>> {
    let line = prop_oneof![
        3 => prop::sample::select(vec![
            &b"Subject: hello\n"[..], b"Message-ID: <p@x>\n", b"\n", b"\r\n", b"body line\n", b"crlf line\r\n",
            b"lone\rcr\n", b"\r", b"From someone in the body\n", b"From a@b Wed Jan  1 00:00:00 2020\n",
            b">From quoted\n", b"\x00nul\x00\n", b"caf\xc3\xa9 \xff\xfe\n", b" folded\n", b"no newline",
            b"\r\r\n", b".\n", b"..\n",
        ])
        .prop_map(<[u8]>::to_vec),
        1 => prop::collection::vec(any::<u8>(), 0..40),
    ];
    let lines = prop::collection::vec(line, 0..30).prop_map(|v| v.concat());
    let body = prop_oneof![3 => lines, 1 => prop::collection::vec(any::<u8>(), 0..3000)];
    let from_line = prop::option::of(prop::sample::select(vec![
        &b"From alice@x.example Wed Jan  1 00:00:00 2020\n"[..],
        b"From MAILER-DAEMON Wed Jan  1 00:00:00 2020\n",
        b"From <odd\x01addr> Wed Jan  1 00:00:00 2020\r\n",
        b"From \n",
        b"From x",
    ]));
    (from_line, body, any::<bool>()).prop_map(|(f, b, suffix)| {
        let mut m = f.map(<[u8]>::to_vec).unwrap_or_default();
        m.extend_from_slice(&b);
        if suffix && !m.is_empty() {
            m.push(b'\n');
        }
        m
    })
}

// ---------------------------------------------------------------------------------------------
// Properties
// ---------------------------------------------------------------------------------------------

proptest! {
    #![proptest_config(config(400, 20_000))]

    /// Any bytes as `--user`: refused with 67 (or 64) writing nothing, or accepted exactly when
    /// valid and writing only below `ROOT/<lower-cased user>/`.
    #[test]
    fn any_user_name_is_refused_or_writes_only_inside_its_own_directory(user in hostile_arg(12), out in any::<bool>()) {
        let (_dir, root) = scratch();
        let mut args = vec![os(b"--user="), os(b"--direction"), os(if out { b"out" } else { b"in" })];
        args[0].push(OsStr::from_bytes(&user));
        let (code, err) = deliver(&root, &args, &[], b"Subject: u\n\nbody\n");
        let mut files = files_below(&root);
        prop_assert!(files.contains(&PathBuf::from(MARKER)), "the marker is gone");
        files.retain(|f| f != Path::new(MARKER));
        if valid_user(&user) {
            prop_assert_eq!(code, 0, "valid user {:?} refused: {}", String::from_utf8_lossy(&user), err);
            let home = String::from_utf8(user.to_ascii_lowercase()).unwrap();
            for f in &files {
                prop_assert!(f.starts_with(&home), "{} written outside {home}/", f.display());
            }
            prop_assert_eq!(files.iter().filter(|f| f.to_string_lossy().contains("/new/")).count(), 1);
        } else {
            prop_assert!(code == 67 || code == 64, "invalid user {:?}: exit {code}: {err}", String::from_utf8_lossy(&user));
            prop_assert!(files.is_empty(), "invalid user wrote {files:?}");
            let names: Vec<_> = std::fs::read_dir(&root).unwrap().map(|e| e.unwrap().file_name()).collect();
            prop_assert!(names == [".mailkeep"], "invalid user made a directory: {names:?}");
        }
        count(0, "user-names");
    }

    /// Any bytes as sender and recipients (arguments or Exim's SENDER/RECIPIENT): stored with
    /// exactly the modelled header lines, no CR and no stray LF from an argument among them.
    #[test]
    fn any_sender_or_recipient_reaches_the_header_lines_only_cleaned(
        snd in prop::option::of(hostile_arg(10)),
        rcpts in prop::collection::vec(hostile_arg(8), 0..5),
        via_env in any::<bool>(),
        out in any::<bool>(),
    ) {
        let (_dir, root) = scratch();
        let mut args = vec![os(b"--user"), os(b"bob"), os(b"--direction"), os(if out { b"out" } else { b"in" })];
        let mut env: Vec<(&str, &OsStr)> = Vec::new();
        let rcpt0 = rcpts.first().cloned().unwrap_or_default();
        if via_env {
            if let Some(s) = &snd {
                env.push(("SENDER", OsStr::from_bytes(s)));
            }
            env.push(("RECIPIENT", OsStr::from_bytes(&rcpt0)));
        } else {
            if let Some(s) = &snd {
                let mut a = os(b"--sender=");
                a.push(OsStr::from_bytes(s));
                args.push(a);
            }
            for r in &rcpts {
                let mut a = os(b"--rcpt=");
                a.push(OsStr::from_bytes(r));
                args.push(a);
            }
        }
        let msg = b"Subject: s\n\nbody\n";
        let (code, err) = deliver(&root, &args, &env, msg);
        prop_assert_eq!(code, 0, "{}", err);
        let eff_rcpts: Vec<Vec<u8>> = if via_env {
            if rcpt0.is_empty() || rcpt0 == b"@" { vec![] } else { vec![rcpt0.clone()] }
        } else {
            rcpts.clone()
        };
        let s = snd.as_deref().and_then(sender);
        let folder = if out { "bob/.Sent/new" } else { "bob/new" };
        let files: Vec<_> = std::fs::read_dir(root.join(folder)).unwrap().map(|e| e.unwrap().path()).collect();
        prop_assert_eq!(files.len(), 1);
        let got = std::fs::read(&files[0]).unwrap();
        let mut want = prefix("bob", out, s.as_deref(), &eff_rcpts);
        want.extend_from_slice(msg);
        prop_assert!(got == want, "stored file differs:\n--- expected\n{}\n--- got\n{}", want.escape_ascii(), got.escape_ascii());
        let head = &got[..got.len() - msg.len()];
        prop_assert!(!head.contains(&b'\r') && !head.iter().any(|&b| b < 0x20 && b != b'\n'), "control byte in {}", head.escape_ascii());
        for line in head.split(|&b| b == b'\n').filter(|l| !l.is_empty()) {
            let ours = line.starts_with(b"Return-Path: <") || line.starts_with(b"Delivered-To: ")
                || line.starts_with(b"Envelope-To:") || line.starts_with(b" ");
            prop_assert!(ours, "a header line mailkeep did not mean to write: {}", line.escape_ascii());
        }
        count(1, "envelope");
    }

    /// Any message bytes: exit 65 for an empty message, else the stored file is exactly the
    /// header lines, then the message with CRLF made LF, a leading From_ line removed and with
    /// it one final newline.
    #[test]
    fn any_message_is_stored_as_the_documented_transformation(input in message(), with_sender in any::<bool>()) {
        let (_dir, root) = scratch();
        let mut args = vec![os(b"--user"), os(b"carol"), os(b"--direction"), os(b"in"), os(b"--rcpt"), os(b"carol@ourdomain.example")];
        if with_sender {
            args.push(os(b"--sender=s@outside.example"));
        }
        let (code, err) = deliver(&root, &args, &[], &input);
        let files: Vec<_> = match std::fs::read_dir(root.join("carol/new")) {
            Ok(rd) => rd.map(|e| e.unwrap().path()).collect(),
            Err(_) => vec![],
        };
        match stored_body(&input) {
            None => {
                prop_assert_eq!(code, 65, "empty message: {}", err);
                prop_assert!(files.is_empty());
            }
            Some((body, from_sender)) => {
                prop_assert_eq!(code, 0, "{}", err);
                prop_assert_eq!(files.len(), 1);
                let s = if with_sender { Some(b"s@outside.example".to_vec()) } else { from_sender.flatten() };
                let mut want = prefix("carol", false, s.as_deref(), &[b"carol@ourdomain.example".to_vec()]);
                want.extend_from_slice(&body);
                let got = std::fs::read(&files[0]).unwrap();
                prop_assert!(got == want, "input {}\n--- expected\n{}\n--- got\n{}", input.escape_ascii(), want.escape_ascii(), got.escape_ascii());
                prop_assert_eq!(size_in_name(&files[0]), got.len() as u64);
            }
        }
        count(2, "messages");
    }
}

// ---------------------------------------------------------------------------------------------
// Python's mailbox.mbox writes, replay reads
// ---------------------------------------------------------------------------------------------

/// The Python writer, started once and fed one request per case.
static WRITER: Mutex<Option<(std::process::Child, BufReader<std::process::ChildStdout>)>> = Mutex::new(None);

/// Has Python's mailbox.mbox write `messages` to `path`; returns what Python reads back.
fn python_writes(path: &Path, messages: &[Vec<u8>]) -> Vec<Vec<u8>> {
    let mut guard = WRITER.lock().unwrap_or_else(|e| e.into_inner());
    if guard.is_none() {
        let mut child = Command::new("python3")
            .arg(MBOX_WRITER)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("python3 is needed (tests/install-deps.sh)");
        let out = BufReader::new(child.stdout.take().unwrap());
        *guard = Some((child, out));
    }
    let (child, out) = guard.as_mut().unwrap();
    let hex = |b: &[u8]| b.iter().map(|x| format!("{x:02x}")).collect::<String>();
    let req = serde_json::json!({
        "path": path.to_str().unwrap(),
        "messages": messages.iter().map(|m| hex(m)).collect::<Vec<_>>(),
    });
    writeln!(child.stdin.as_mut().unwrap(), "{req}").unwrap();
    let mut line = String::new();
    out.read_line(&mut line).unwrap();
    let answer: serde_json::Value = serde_json::from_str(&line).expect("the Python writer answered");
    answer["read_back"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| {
            let h = h.as_str().unwrap();
            (0..h.len()).step_by(2).map(|i| u8::from_str_radix(&h[i..i + 2], 16).unwrap()).collect()
        })
        .collect()
}

/// How mailkeep reads an mboxo message: CRLF line ends become LF, and `>From ` loses one `>`
/// (mboxo cannot tell a quoted `>From ` the writer added from one that was in the message).
fn mboxo_read(b: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    for line in b.split_inclusive(|&c| c == b'\n') {
        let line = match line.strip_suffix(b"\r\n") {
            Some(l) => [l, b"\n"].concat(),
            None => line.to_vec(),
        };
        out.extend_from_slice(line.strip_prefix(b">").filter(|l| l.starts_with(b"From ")).unwrap_or(&line));
    }
    out
}

fn mbox_message(i: usize) -> impl Strategy<Value = Vec<u8>> {
    let line = prop_oneof![
        4 => prop::sample::select(vec![
            &b"Subject: hello\n"[..], b"\n", b"\r\n", b"body line\n", b"crlf line\r\n", b"lone\rcr\n",
            b"From someone in the body\n", b"From a@b Wed Jan  1 00:00:00 2020\n", b">From quoted\n",
            b">>From twice\n", b"\x00nul\n", b"caf\xc3\xa9 \xff\n", b" folded\n", b"Content-Length: 3\n",
            b"X-Gmail-Labels: Sent\n", b"\r\r\n", b"From \n",
        ])
        .prop_map(<[u8]>::to_vec),
        1 => prop::collection::vec(1u8..=255, 1..30).prop_map(|mut v| { v.push(b'\n'); v }),
    ];
    (prop::collection::vec(line, 0..12), any::<bool>()).prop_map(move |(lines, chop)| {
        // A Message-ID first: every message is distinct, and none starts with "From ".
        let mut m = format!("Message-ID: <m{i}.{}@prop>\n", std::process::id()).into_bytes();
        m.extend(lines.concat());
        if chop && m.ends_with(b"\n") {
            m.pop();
        }
        m
    })
}

fn mbox_messages() -> impl Strategy<Value = Vec<Vec<u8>>> {
    (1usize..7).prop_flat_map(|n| (0..n).map(mbox_message).collect::<Vec<_>>())
}

proptest! {
    #![proptest_config(config(150, 5_000))]

    /// Any messages written by Python's mailbox.mbox are replayed one file each, each file
    /// holding (after mailkeep's two header lines) what Python reads back of that message, as
    /// an mboxo reader gives it.
    #[test]
    fn any_mbox_written_by_python_mailbox_is_replayed_message_for_message(messages in mbox_messages()) {
        let (dir, root) = scratch();
        let mbox = dir.path().join("python.mbox");
        let back = python_writes(&mbox, &messages);
        prop_assert_eq!(back.len(), messages.len(), "Python reads back as many messages as it wrote");
        let mut cmd = Command::new(BIN);
        cmd.args(["replay", "--root"]).arg(&root);
        cmd.args(["--user", "alice", "--domain", "example.com", "--direction", "in", "--format", "mboxo", "--log", "none"]);
        if is_root() {
            cmd.arg("--allow-root");
        }
        cmd.arg(&mbox).env_clear().env("PATH", "/usr/bin:/bin");
        let (code, err) = finish(cmd.output().unwrap());
        prop_assert_eq!(code, 0, "{}", err);
        let mut want: Vec<Vec<u8>> = back
            .iter()
            .map(|b| [&b"Return-Path: <>\nDelivered-To: alice@example.com\n"[..], &mboxo_read(b)].concat())
            .collect();
        want.sort();
        let mut got: Vec<Vec<u8>> = std::fs::read_dir(root.join("alice/new"))
            .unwrap()
            .map(|e| std::fs::read(e.unwrap().path()).unwrap())
            .collect();
        got.sort();
        if got != want {
            let show = |v: &[Vec<u8>]| v.iter().map(|m| m.escape_ascii().to_string()).collect::<Vec<_>>().join("\n  ");
            let written = std::fs::read(&mbox).unwrap();
            prop_assert!(false, "mbox as Python wrote it:\n  {}\n--- expected\n  {}\n--- got\n  {}", written.escape_ascii(), show(&want), show(&got));
        }
        count(3, "python-mbox");
    }
}

// ---------------------------------------------------------------------------------------------
// Fuzzer findings kept as regression inputs
// ---------------------------------------------------------------------------------------------

fn regression_inputs(target: &str) -> Vec<PathBuf> {
    let dir = Path::new(FUZZ_REGRESSIONS).join(target);
    let mut v: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_none_or(|x| x != "md"))
        .collect();
    v.sort();
    v
}

/// Every input in fuzz/regressions/deliver/ is stored as the model says (or refused with 65),
/// never a crash.
#[test]
fn fuzz_regression_inputs_are_delivered_as_the_model_says() {
    let inputs = regression_inputs("deliver");
    assert!(!inputs.is_empty(), "no inputs in fuzz/regressions/deliver");
    for path in &inputs {
        let input = std::fs::read(path).unwrap();
        let (_dir, root) = scratch();
        let args = [os(b"--user"), os(b"carol"), os(b"--direction"), os(b"in"), os(b"--sender=s@x")];
        let (code, err) = deliver(&root, &args, &[], &input);
        match stored_body(&input) {
            None => assert_eq!(code, 65, "{}: {err}", path.display()),
            Some((body, _)) => {
                assert_eq!(code, 0, "{}: {err}", path.display());
                let f = std::fs::read_dir(root.join("carol/new")).unwrap().next().unwrap().unwrap().path();
                let mut want = prefix("carol", false, Some(b"s@x"), &[]);
                want.extend_from_slice(&body);
                assert_bytes_eq(&path.display().to_string(), &want, &std::fs::read(f).unwrap());
            }
        }
    }
}

/// Every input in fuzz/regressions/mbox/ is replayed (or refused as no mbox / a broken
/// message, 65) in every format, never a crash or a panic.
#[test]
fn fuzz_regression_inputs_are_replayed_without_a_crash() {
    let inputs = regression_inputs("mbox");
    assert!(!inputs.is_empty(), "no inputs in fuzz/regressions/mbox");
    for path in &inputs {
        for format in ["auto", "mboxo", "mboxrd", "mboxcl2"] {
            let (_dir, root) = scratch();
            let mut cmd = Command::new(BIN);
            cmd.args(["replay", "--root"]).arg(&root);
            cmd.args([
                "--user",
                "alice",
                "--domain",
                "example.com",
                "--direction",
                "in",
                "--log",
                "none",
                "--format",
                format,
            ]);
            if is_root() {
                cmd.arg("--allow-root");
            }
            cmd.arg(path).env_clear().env("PATH", "/usr/bin:/bin");
            let (code, err) = finish(cmd.output().unwrap());
            assert!(code == 0 || code == 65, "{} ({format}): exit {code}: {err}", path.display());
            assert!(!err.contains("internal error"), "{} ({format}): {err}", path.display());
            for f in files_below(&root) {
                let s = f.to_string_lossy().into_owned();
                if s.contains("/new/") {
                    assert_eq!(std::fs::read(root.join(&f)).unwrap().len() as u64, size_in_name(&f), "{s}");
                }
            }
        }
    }
}
