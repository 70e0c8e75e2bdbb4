//! Control characters and bidi overrides from a message or an argument never reach a printed
//! line raw (issue 18, item 12): `log::escape` turns them into `\x1b`, `\u{202e}`, and a
//! backslash into `\\`, in syslog/stderr lines of deliver and replay and in the error line;
//! the stored message keeps them, byte for byte.

use crate::util::*;

/// A Message-ID with ESC (a terminal colour sequence), NUL, BS, DEL, U+202E (right-to-left
/// override), U+2066 (left-to-right isolate) and a backslash. (U+2028 is white space, which
/// the Message-ID loses before it is logged; `log::escape`'s unit test covers it.)
const EVIL_ID: &[u8] = b"<ev\x1b[31mil\x00\x08\x7f\xe2\x80\xaeid\xe2\x81\xa6\\x@outside.example>";
/// How the record line shows it (the brackets are the line's own).
const EVIL_ID_SHOWN: &str = r"msgid=<ev\x1b[31mil\x00\x08\x7f\u{202e}id\u{2066}\\x@outside.example>";

fn message_with_evil_id() -> Vec<u8> {
    let mut m = b"From: a@outside.example\nSubject: t\nMessage-ID: ".to_vec();
    m.extend_from_slice(EVIL_ID);
    m.extend_from_slice(b"\n\nbody\n");
    m
}

/// No control character (but the line ends) nor bidi/separator character in printed text.
#[track_caller]
fn assert_no_raw_control(what: &str, text: &[u8]) {
    let text = String::from_utf8_lossy(text);
    let bad = |c: char| {
        (c.is_control() && c != '\n')
            || matches!(c, '\u{200e}' | '\u{200f}' | '\u{2028}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
    };
    assert!(!text.chars().any(bad), "{what}: raw control or bidi character printed: {text:?}");
}

#[test]
fn deliver_log_line_escapes_control_bytes_of_the_message_id_and_stores_them_as_they_came_issue_18() {
    let env = Env::new();
    let input = message_with_evil_id();
    let args = ["--user", "alice", "--direction", "in", "--rcpt", "alice@example.com", "--log", "stderr"];
    let out = env.deliver(args, &[], &input);
    assert_exit(&out, 0);
    let err = stderr(&out);
    assert!(err.contains(EVIL_ID_SHOWN), "stderr\n--- expected to contain\n{EVIL_ID_SHOWN}\n--- got\n{err}");
    assert_no_raw_control("stderr", &out.stderr);
    let files = env.new_files("alice");
    assert_eq!(files.len(), 1);
    let stored = std::fs::read(&files[0]).unwrap();
    assert!(stored.ends_with(&input), "the stored message is the input, control bytes and all");
}

#[test]
fn deliver_with_a_hostile_sender_prints_no_control_byte_issue_18() {
    let env = Env::new();
    let msg = b"From: a@outside.example\nSubject: t\nMessage-ID: <s.1@outside.example>\n\nbody\n";
    let sender = "ev\u{1b}]0;pwned\u{7}\u{202e}il@outside.example";
    for (args, vars) in [(vec!["--sender", sender], vec![]), (vec![], vec![("SENDER", sender)])] {
        let mut all = vec!["--user", "alice", "--direction", "out", "--rcpt", "b@x.example", "--log", "stderr"];
        all.extend(args);
        let out = env.deliver(&all, &vars, msg);
        assert_exit(&out, 0);
        assert_no_raw_control("stderr", &out.stderr);
    }
    // An address that cannot be a user is refused in one line, escaped.
    let out = env.deliver(["--user", "al\u{1b}[2J\u{202e}ice", "--direction", "in"], &[], msg);
    assert_exit(&out, 67);
    let err = stderr(&out);
    assert!(err.contains(r"unsafe user name 'al\x1b[2J\u{202e}ice'"), "{err}");
    assert_no_raw_control("stderr", &out.stderr);
}

#[test]
fn replay_log_line_escapes_control_bytes_of_the_message_id_issue_18() {
    let env = Env::new();
    let mut mbox = b"From a@outside.example Wed Jan  1 00:00:00 2020\n".to_vec();
    mbox.extend_from_slice(&message_with_evil_id());
    let path = env.dir.path().join("evil.mbox");
    std::fs::write(&path, &mbox).unwrap();
    let root = env.root();
    let mut args = vec!["replay", "--root", root.to_str().unwrap(), "--user", "alice", "--domain", "example.com"];
    args.extend(["--log", "stderr", path.to_str().unwrap()]);
    if is_root() {
        args.push("--allow-root");
    }
    let out = env.run(&args, &[], b"");
    assert_exit(&out, 0);
    let err = stderr(&out);
    assert!(err.contains(EVIL_ID_SHOWN), "stderr\n--- expected to contain\n{EVIL_ID_SHOWN}\n--- got\n{err}");
    assert_no_raw_control("stderr", &out.stderr);
}
