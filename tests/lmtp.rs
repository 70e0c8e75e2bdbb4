//! `mailkeep lmtp`: raw LMTP sessions over its Unix socket (std UnixStream) against the
//! real binary; the stored copies compared with what `deliver` stores for the same message
//! and envelope.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::util::{BIN, Env, assert_bytes_eq, assert_exit, files_below, is_root};

/// A running `mailkeep lmtp` on a socket in the test's directory; stopped with SIGTERM on drop.
struct Server {
    child: Option<Child>,
    inbox: PathBuf,
    sent: PathBuf,
}

impl Server {
    fn start(env: &Env, extra: &[&str], vars: &[(&str, &str)]) -> Server {
        let (inbox, sent) = (env.dir.path().join("lmtp.sock"), env.dir.path().join("lmtp-sent.sock"));
        let mut cmd = Command::new(BIN);
        cmd.arg("lmtp").arg("--root").arg(env.root()).arg("--listen").arg(&inbox).arg("--listen-sent").arg(&sent);
        cmd.args(["--log", "none"]).args(extra);
        if is_root() {
            cmd.arg("--allow-root");
        }
        cmd.env_clear().env("PATH", "/usr/bin:/bin").current_dir(env.dir.path());
        for (k, v) in vars {
            cmd.env(k, v);
        }
        let child = cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
        let start = Instant::now();
        while !(inbox.exists() && sent.exists()) {
            assert!(start.elapsed() < Duration::from_secs(10), "mailkeep lmtp made no socket in 10 s");
            std::thread::sleep(Duration::from_millis(10));
        }
        Server { child: Some(child), inbox, sent }
    }

    /// SIGTERM, and the exit status and stderr once it has ended (within 10 s).
    fn stop(&mut self) -> (i32, String) {
        let mut child = self.child.take().expect("running");
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(child.id() as i32), nix::sys::signal::Signal::SIGTERM)
            .unwrap();
        let start = Instant::now();
        while child.try_wait().unwrap().is_none() {
            if start.elapsed() > Duration::from_secs(10) {
                let _ = child.kill();
                panic!("mailkeep lmtp did not stop within 10 s of SIGTERM");
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let out = child.wait_with_output().unwrap();
        (out.status.code().unwrap_or(-1), String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// One LMTP client connection.
struct Client {
    out: UnixStream,
    input: BufReader<UnixStream>,
}

impl Client {
    /// Connects and reads the greeting.
    fn connect(socket: &Path) -> Client {
        let out = UnixStream::connect(socket).unwrap();
        out.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        let mut c = Client { input: BufReader::new(out.try_clone().unwrap()), out };
        let greeting = c.reply();
        assert!(greeting.starts_with("220 "), "greeting: expected 220, got {greeting:?}");
        c
    }

    /// Connects, says LHLO, and starts a transaction from `sender` to `rcpts` (each must
    /// get 250).
    fn transaction(socket: &Path, sender: &str, rcpts: &[&str]) -> Client {
        let mut c = Client::connect(socket);
        c.expect("LHLO test", "250 ");
        c.expect(&format!("MAIL FROM:<{sender}>"), "250 ");
        for r in rcpts {
            c.expect(&format!("RCPT TO:<{r}>"), "250 ");
        }
        c
    }

    fn send(&mut self, bytes: &[u8]) {
        self.out.write_all(bytes).unwrap();
    }

    /// One reply (the last line of a multi-line one), without its CRLF.
    fn reply(&mut self) -> String {
        loop {
            let mut line = String::new();
            self.input.read_line(&mut line).unwrap();
            assert!(!line.is_empty(), "the server closed the connection");
            if line.as_bytes().get(3) != Some(&b'-') {
                return line.trim_end().to_string();
            }
        }
    }

    /// Sends `line` and asserts its reply starts with `want`.
    #[track_caller]
    fn expect(&mut self, line: &str, want: &str) -> String {
        self.send(format!("{line}\r\n").as_bytes());
        let got = self.reply();
        assert!(got.starts_with(want), "{line}: expected a reply starting {want:?}, got {got:?}");
        got
    }

    /// DATA, then `stuffed` (already dot-stuffed, with its final dot line), and one reply
    /// per recipient.
    fn data(&mut self, stuffed: &[u8], rcpts: usize) -> Vec<String> {
        self.expect("DATA", "354 ");
        self.send(stuffed);
        (0..rcpts).map(|_| self.reply()).collect()
    }
}

/// `message` dot-stuffed with `eol` line ends and the final dot line, as an LMTP client sends it.
fn stuffed(message: &[u8], eol: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    for line in message.split_inclusive(|&b| b == b'\n') {
        let line = line.strip_suffix(b"\n").unwrap_or(line);
        if line.starts_with(b".") {
            out.push(b'.');
        }
        out.extend_from_slice(line);
        out.extend_from_slice(eol);
    }
    out.extend_from_slice(b".");
    out.extend_from_slice(eol);
    out
}

const MESSAGE: &[u8] = b"From: Sender <x@example.net>\nTo: alice@example.org, bob@example.org\n\
Subject: dots\nMessage-ID: <lmtp-1@example.net>\n\n.leading dot\n..two dots\n.\nFrom here on\nlast line\n";

/// The one file in `ROOT/<rel>/new`, read.
#[track_caller]
fn only_file(env: &Env, rel: &str) -> Vec<u8> {
    let files = env.new_files(rel);
    assert_eq!(files.len(), 1, "{rel}/new: expected 1 file, got {files:?}");
    std::fs::read(&files[0]).unwrap()
}

#[track_caller]
fn assert_nothing_stored(env: &Env) {
    let stored: Vec<PathBuf> = files_below(&env.root())
        .into_iter()
        .filter(|f| f.components().any(|c| ["new", "cur", "tmp"].contains(&c.as_os_str().to_str().unwrap_or(""))))
        .collect();
    assert!(stored.is_empty(), "expected no message file below the root, got {stored:?}");
}

#[test]
fn two_recipients_one_unknown_get_250_and_550_after_data() {
    let env = Env::new();
    std::fs::write(env.dir.path().join("accounts"), "alice\n").unwrap();
    let accounts = env.dir.path().join("accounts");
    let server = Server::start(&env, &["--accounts", accounts.to_str().unwrap()], &[]);
    let mut c = Client::transaction(&server.inbox, "x@example.net", &["alice@example.org", "mallory@example.org"]);
    let replies = c.data(&stuffed(MESSAGE, b"\r\n"), 2);
    assert!(replies[0].starts_with("250 2.0.0"), "alice: expected 250, got {:?}", replies[0]);
    assert!(replies[1].starts_with("550 5.1.1"), "mallory: expected 550, got {:?}", replies[1]);
    c.expect("QUIT", "221 ");
    assert_eq!(env.new_files("alice").len(), 1);
    assert!(!env.root().join("mallory").exists(), "an unknown user got a directory");
}

/// INBOX and Sent copies, CRLF and bare LF, dots stuffed: every stored file is byte for byte
/// what `deliver` stores for the same message and envelope (the names apart).
#[test]
fn stored_bytes_equal_what_deliver_stores_for_the_same_message_and_envelope() {
    let crlf: Vec<u8> = MESSAGE.iter().flat_map(|&b| if b == b'\n' { vec![b'\r', b'\n'] } else { vec![b] }).collect();
    // (what deliver reads, what the LMTP client sends): CRLF on the wire, bare LF on the
    // wire, and a CRLF message piped to deliver.
    let cases = [
        (MESSAGE, stuffed(MESSAGE, b"\r\n")),
        (MESSAGE, stuffed(MESSAGE, b"\n")),
        (&crlf[..], stuffed(MESSAGE, b"\r\n")),
    ];
    for (input, wire) in &cases {
        let (input, wire) = (*input, &wire[..]);
        let (lmtp, piped) = (Env::new(), Env::new());
        let mut server = Server::start(&lmtp, &[], &[]);
        let mut c = Client::transaction(&server.inbox, "x@example.net", &["alice@example.org", "bob@example.org"]);
        let replies = c.data(wire, 2);
        assert!(replies.iter().all(|r| r.starts_with("250 ")), "INBOX replies: {replies:?}");
        let mut c = Client::transaction(&server.sent, "alice@example.org", &["b@example.net", "c@example.com"]);
        let replies = c.data(wire, 2);
        assert!(replies.iter().all(|r| r.starts_with("250 ")), "Sent replies: {replies:?}");
        let (code, err) = server.stop();
        assert_eq!(code, 0, "lmtp exit after SIGTERM; stderr: {err}");

        for user in ["alice", "bob"] {
            let rcpt = format!("{user}@example.org");
            let args = ["--user", user, "--direction", "in", "--sender", "x@example.net", "--rcpt", &rcpt];
            assert_exit(&piped.deliver(args, &[], input), 0);
            assert_bytes_eq(&format!("{user}'s INBOX copy"), &only_file(&piped, user), &only_file(&lmtp, user));
        }
        let args = ["--user", "alice", "--direction", "out", "--sender", "alice@example.org", "--rcpt"];
        let args: Vec<&str> = args.iter().copied().chain(["b@example.net", "c@example.com"]).collect();
        assert_exit(&piped.deliver(args, &[], input), 0);
        assert_bytes_eq("alice's Sent copy", &only_file(&piped, "alice/.Sent"), &only_file(&lmtp, "alice/.Sent"));
    }
}

#[test]
fn dot_stuffing_is_undone_and_crlf_becomes_lf() {
    let env = Env::new();
    let _server = Server::start(&env, &[], &[]);
    let server_sock = env.dir.path().join("lmtp.sock");
    let mut c = Client::transaction(&server_sock, "", &["alice@example.org"]);
    let replies = c.data(b"Subject: s\r\n\r\n..\r\n...x\r\nbare lf\n.y\r\n.\r\n", 1);
    assert!(replies[0].starts_with("250 "), "{replies:?}");
    let want = b"Return-Path: <>\nDelivered-To: alice@example.org\nSubject: s\n\n.\n..x\nbare lf\ny\n";
    assert_bytes_eq("stored copy", want, &only_file(&env, "alice"));
}

#[test]
fn a_root_without_its_marker_gets_451_and_nothing_is_stored() {
    let env = Env::new();
    let server = Server::start(&env, &[], &[]);
    std::fs::rename(env.root().join(".mailkeep"), env.dir.path().join("moved")).unwrap();
    let mut c = Client::transaction(&server.inbox, "x@example.net", &["alice@example.org"]);
    let replies = c.data(&stuffed(MESSAGE, b"\r\n"), 1);
    assert!(replies[0].starts_with("451 4.3.0"), "expected 451, got {replies:?}");
    assert_nothing_stored(&env);
    // The volume is back: the client's retry stores.
    std::fs::rename(env.dir.path().join("moved"), env.root().join(".mailkeep")).unwrap();
    let mut c = Client::transaction(&server.inbox, "x@example.net", &["alice@example.org"]);
    assert!(c.data(&stuffed(MESSAGE, b"\r\n"), 1)[0].starts_with("250 "));
}

#[test]
fn a_read_only_root_gets_451_and_leaves_nothing_in_new() {
    if !is_root() {
        eprintln!("skipped: needs root to remount a tmpfs read-only");
        return;
    }
    let env = Env::uninitialised();
    let mnt = env.root();
    let mount = |opts: &str| {
        let mut cmd = Command::new("mount");
        if opts == "remount,ro" || opts == "remount,rw" {
            cmd.args(["-o", opts]).arg(&mnt);
        } else {
            cmd.args(["-t", "tmpfs", "-o", opts, "tmpfs"]).arg(&mnt);
        }
        assert!(cmd.status().unwrap().success(), "mount {opts}");
    };
    mount("size=4m,mode=0755");
    struct Unmount(PathBuf);
    impl Drop for Unmount {
        fn drop(&mut self) {
            let _ = Command::new("umount").arg("-l").arg(&self.0).status();
        }
    }
    let _unmount = Unmount(mnt.clone());
    env.init(&mnt);
    let server = Server::start(&env, &[], &[]);
    let mut c = Client::transaction(&server.inbox, "x@example.net", &["alice@example.org"]);
    assert!(c.data(&stuffed(MESSAGE, b"\r\n"), 1)[0].starts_with("250 "));
    mount("remount,ro");
    let mut c = Client::transaction(&server.inbox, "x@example.net", &["alice@example.org", "bob@example.org"]);
    let replies = c.data(&stuffed(MESSAGE, b"\r\n"), 2);
    assert!(replies.iter().all(|r| r.starts_with("451 ")), "expected 451 for each, got {replies:?}");
    mount("remount,rw");
    assert_eq!(env.new_files("alice").len(), 1, "alice/new: only the copy stored before");
    assert!(files_below(&mnt.join("alice/tmp")).is_empty(), "alice/tmp not empty");
    assert!(!mnt.join("bob").exists(), "bob's directory was made on a read-only root?");
}

#[test]
fn dedup_stores_a_repeated_message_once_with_the_store_kept_open() {
    let env = Env::new();
    let server = Server::start(&env, &["--dedup"], &[]);
    for round in 0..3 {
        let mut c = Client::transaction(&server.inbox, "x@example.net", &["alice@example.org"]);
        let reply = c.data(&stuffed(MESSAGE, b"\r\n"), 1).remove(0);
        let want = if round == 0 { "stored as" } else { "already stored as" };
        assert!(reply.starts_with("250 ") && reply.contains(want), "round {round}: expected 250 {want}, got {reply:?}");
    }
    assert_eq!(env.new_files("alice").len(), 1);
}

#[test]
fn a_client_that_disconnects_mid_data_leaves_nothing_in_new() {
    let env = Env::new();
    let server = Server::start(&env, &[], &[]);
    let mut c = Client::transaction(&server.inbox, "x@example.net", &["alice@example.org"]);
    c.expect("DATA", "354 ");
    c.send(b"Subject: cut\r\n\r\nhalf of the bo");
    drop(c);
    // A second session after it: the server has handled the first one's end by then.
    let mut c = Client::transaction(&server.inbox, "x@example.net", &["bob@example.org"]);
    assert!(c.data(&stuffed(MESSAGE, b"\r\n"), 1)[0].starts_with("250 "));
    assert!(env.new_files("alice").is_empty() && !env.root().join("alice").exists(), "a cut message left a trace");
}

#[test]
fn a_message_over_max_size_gets_552_for_each_recipient_and_the_session_goes_on() {
    let env = Env::new();
    let server = Server::start(&env, &["--max-size", "200"], &[]);
    let mut c = Client::transaction(&server.inbox, "x@example.net", &["alice@example.org", "bob@example.org"]);
    let big = format!("Subject: big\n\n{}\n", "x".repeat(300));
    let replies = c.data(&stuffed(big.as_bytes(), b"\r\n"), 2);
    assert!(replies.iter().all(|r| r.starts_with("552 5.3.4")), "expected 552 twice, got {replies:?}");
    c.expect("MAIL FROM:<x@example.net> SIZE=1000", "552 5.3.4");
    c.expect("MAIL FROM:<x@example.net> SIZE=100", "250 ");
    c.expect("RCPT TO:<alice@example.org>", "250 ");
    assert!(c.data(b"Subject: small\r\n\r\nok\r\n.\r\n", 1)[0].starts_with("250 "));
    assert_eq!(env.new_files("alice").len(), 1);
    assert!(!env.root().join("bob").exists());
}

/// The limit is on the message as stored (LF, unstuffed), as the MTA's own limit is: a
/// message the MTA took near its limit must not be refused for its CRLFs on the wire.
#[test]
fn max_size_counts_the_stored_message_not_its_crlf_on_the_wire() {
    let env = Env::new();
    let server = Server::start(&env, &["--max-size", "250"], &[]);
    let message = format!("Subject: s\n\n{}", "ab\n".repeat(66));
    let wire = stuffed(message.as_bytes(), b"\r\n");
    assert!(message.len() <= 250 && wire.len() > 250, "the case: {} stored, {} on the wire", message.len(), wire.len());
    let mut c = Client::transaction(&server.inbox, "x@example.net", &["alice@example.org"]);
    let reply = c.data(&wire, 1).remove(0);
    assert!(reply.starts_with("250 "), "{} bytes stored, max 250: expected 250, got {reply:?}", message.len());
    assert_eq!(env.new_files("alice").len(), 1);
}

#[test]
fn a_panic_while_storing_is_451_and_the_server_goes_on() {
    let env = Env::new();
    let mut server = Server::start(&env, &[], &[("MAILKEEP_FAULT", "panic-before-store")]);
    let mut c = Client::transaction(&server.inbox, "x@example.net", &["alice@example.org"]);
    let replies = c.data(&stuffed(MESSAGE, b"\r\n"), 1);
    assert!(replies[0].starts_with("451 4.3.0"), "expected 451, got {replies:?}");
    let mut c = Client::transaction(&server.inbox, "x@example.net", &["alice@example.org"]);
    assert!(c.data(&stuffed(MESSAGE, b"\r\n"), 1)[0].starts_with("451 "), "the server is not still answering");
    assert!(env.new_files("alice").is_empty());
    let (code, _) = server.stop();
    assert_eq!(code, 0);
}

/// A message larger than what a connection keeps in memory (1 MiB; the rest waits in an
/// unnamed file): stored byte for byte as deliver stores it, for each recipient, and the
/// server's peak memory stays far below the message's size.
#[test]
fn a_large_message_is_stored_as_deliver_stores_it_without_holding_it_in_memory() {
    let (lmtp, piped) = (Env::new(), Env::new());
    let server = Server::start(&lmtp, &[], &[]);
    let pid = server.child.as_ref().unwrap().id();
    let mut message = b"From: x@example.net\nSubject: large\nMessage-ID: <large@example.net>\n\n".to_vec();
    let mut i = 0u64;
    while message.len() < 24 << 20 {
        message.extend_from_slice(format!("{i:020} .line of a large message\n").as_bytes());
        i += 1;
    }
    let mut c = Client::transaction(&server.inbox, "x@example.net", &["alice@example.org", "bob@example.org"]);
    let replies = c.data(&stuffed(&message, b"\r\n"), 2);
    assert!(replies.iter().all(|r| r.starts_with("250 ")), "replies: {replies:?}");
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let hwm_kb: u64 =
        status.lines().find_map(|l| l.strip_prefix("VmHWM:")).unwrap().trim().trim_end_matches(" kB").parse().unwrap();
    assert!(hwm_kb < 20 << 10, "server peak memory: expected under 20 MiB for a 24 MiB message, got {hwm_kb} kB");
    for user in ["alice", "bob"] {
        let rcpt = format!("{user}@example.org");
        let args = ["--user", user, "--direction", "in", "--sender", "x@example.net", "--rcpt", &rcpt];
        assert_exit(&piped.deliver(args, &[], &message), 0);
        assert_bytes_eq(&format!("{user}'s copy"), &only_file(&piped, user), &only_file(&lmtp, user));
    }
}

/// A panic caught after the copy was published (its client told 451) must leave the dedup
/// key usable: the retry neither waits for a claim the live server seems to hold nor stores
/// a second copy.
#[test]
fn with_dedup_a_retry_after_a_caught_panic_is_answered_at_once_and_stores_no_second_copy() {
    let env = Env::new();
    let server = Server::start(&env, &["--dedup"], &[("MAILKEEP_FAULT", "panic-after-store")]);
    let mut c = Client::transaction(&server.inbox, "x@example.net", &["alice@example.org"]);
    let replies = c.data(&stuffed(MESSAGE, b"\r\n"), 1);
    assert!(replies[0].starts_with("451 4.3.0"), "expected 451 for the panic, got {replies:?}");
    let start = Instant::now();
    let mut c = Client::transaction(&server.inbox, "x@example.net", &["alice@example.org"]);
    let reply = c.data(&stuffed(MESSAGE, b"\r\n"), 1).remove(0);
    let took = start.elapsed();
    assert!(
        reply.starts_with("250 ") && reply.contains("already stored"),
        "retry: expected 250 already stored, got {reply:?}"
    );
    assert!(took < Duration::from_secs(5), "retry: expected an answer at once, took {took:?}");
    assert_eq!(env.new_files("alice").len(), 1, "alice/new: expected the one copy");
}

#[test]
fn sigterm_finishes_the_transaction_under_way_then_says_421() {
    let env = Env::new();
    let mut server = Server::start(&env, &[], &[]);
    let mut idle = Client::transaction(&server.inbox, "x@example.net", &[]);
    let mut c = Client::transaction(&server.inbox, "x@example.net", &["alice@example.org"]);
    c.expect("DATA", "354 ");
    c.send(b"Subject: during the stop\r\n\r\nfirst half\r\n");
    let pid = nix::unistd::Pid::from_raw(server.child.as_ref().unwrap().id() as i32);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).unwrap();
    std::thread::sleep(Duration::from_millis(600));
    c.send(b"second half\r\n.\r\n");
    let reply = c.reply();
    assert!(reply.starts_with("250 "), "the transaction under way: expected 250, got {reply:?}");
    assert!(c.reply().starts_with("421 "), "after it: expected 421");
    assert!(idle.reply().starts_with("421 "), "an idle client: expected 421");
    let (code, err) = server.stop();
    assert_eq!(code, 0, "exit after SIGTERM; stderr: {err}");
    assert_eq!(env.new_files("alice").len(), 1);
}

#[test]
fn an_idle_client_is_told_421_and_closed() {
    let env = Env::new();
    let server = Server::start(&env, &["--idle-timeout", "1"], &[]);
    let mut c = Client::connect(&server.inbox);
    let start = Instant::now();
    let reply = c.reply();
    assert!(reply.starts_with("421 4.4.2"), "expected 421 after 1 s idle, got {reply:?}");
    assert!(start.elapsed() < Duration::from_secs(5), "took {:?}", start.elapsed());
}

/// A client that trickles its message (never idle) is cut off at --data-timeout: 421,
/// nothing stored, the slot free again.
#[test]
fn a_message_trickled_past_data_timeout_gets_421_and_nothing_is_stored() {
    let env = Env::new();
    let server = Server::start(&env, &["--data-timeout", "2", "--idle-timeout", "60"], &[]);
    let mut c = Client::transaction(&server.inbox, "x@example.net", &["alice@example.org"]);
    c.expect("DATA", "354 ");
    let start = Instant::now();
    c.send(b"Subject: slow\r\n\r\n");
    let mut cut = false;
    while start.elapsed() < Duration::from_secs(8) {
        if c.out.write_all(b"a line\r\n").is_err() {
            cut = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(300));
        let _ = c.out.set_nonblocking(true);
        let mut line = String::new();
        let got = c.input.read_line(&mut line);
        let _ = c.out.set_nonblocking(false);
        if got.is_ok() && !line.is_empty() {
            assert!(line.starts_with("421 4.4.2"), "expected 421 after the DATA time limit, got {line:?}");
            cut = true;
            break;
        }
    }
    assert!(cut, "a message trickled for 8 s was not cut off at a 2 s DATA limit");
    assert!(start.elapsed() < Duration::from_secs(5), "cut off after {:?}, limit 2 s", start.elapsed());
    assert_nothing_stored(&env);
}

/// Over --max-connections a client waits in the listen queue (Exim's own limit is higher:
/// a 421 would defer a copy), and is greeted as soon as a slot is free.
#[test]
fn a_connection_over_max_connections_waits_for_a_slot_and_is_then_served() {
    let env = Env::new();
    let server = Server::start(&env, &["--max-connections", "1"], &[]);
    let mut first = Client::transaction(&server.inbox, "x@example.net", &["alice@example.org"]);
    let second = UnixStream::connect(&server.inbox).unwrap();
    second.set_read_timeout(Some(Duration::from_millis(700))).unwrap();
    let mut second = BufReader::new(second);
    let mut line = String::new();
    let early = second.read_line(&mut line);
    assert!(early.is_err(), "the second connection while the first is served: expected to wait, got {line:?}");
    assert!(first.data(&stuffed(MESSAGE, b"\r\n"), 1)[0].starts_with("250 "), "the first is still served");
    first.expect("QUIT", "221 ");
    second.get_ref().set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    line.clear();
    second.read_line(&mut line).unwrap();
    assert!(line.starts_with("220 "), "the second connection once the first ended: expected 220, got {line:?}");
}

/// `--listen` on the socket of a server that is running refuses (exit 2) instead of
/// taking the path over; the running one goes on serving.
#[test]
fn listen_on_a_live_servers_socket_is_refused_and_the_server_goes_on() {
    let env = Env::new();
    let server = Server::start(&env, &[], &[]);
    let mut cmd = Command::new(BIN);
    cmd.arg("lmtp").arg("--root").arg(env.root()).arg("--listen").arg(&server.inbox).args(["--log", "none"]);
    if is_root() {
        cmd.arg("--allow-root");
    }
    let mut second =
        cmd.env_clear().env("PATH", "/usr/bin:/bin").stdout(Stdio::null()).stderr(Stdio::piped()).spawn().unwrap();
    let start = Instant::now();
    while second.try_wait().unwrap().is_none() {
        if start.elapsed() > Duration::from_secs(5) {
            let _ = second.kill();
            let _ = second.wait();
            panic!("a second server on the same --listen path is still running after 5 s (took the socket over)");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = second.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "exit: expected 2, got {:?}; stderr: {err}", out.status.code());
    assert_eq!(err.lines().count(), 1, "expected one line on stderr, got {err:?}");
    let mut c = Client::transaction(&server.inbox, "x@example.net", &["alice@example.org"]);
    assert!(c.data(&stuffed(MESSAGE, b"\r\n"), 1)[0].starts_with("250 "), "the first server no longer answers");
}

/// The socket is 0660 (the MTA's user is in its group), whatever the umask.
#[test]
fn the_listen_socket_is_mode_0660() {
    use std::os::unix::fs::PermissionsExt;
    let env = Env::new();
    let server = Server::start(&env, &[], &[]);
    let mode = std::fs::metadata(&server.inbox).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o660, "socket mode: expected 0660, got {mode:o}");
}

/// `mailkeep lmtp` under `tool` (systemd-socket-activate) listening on `sockets` with the
/// file descriptor names `names` (`--fdname=A:B`), in a cleaned environment.
fn socket_activated(tool: &Path, env: &Env, sockets: [&PathBuf; 2], names: &str, stderr: Stdio) -> Child {
    let mut cmd = Command::new(tool);
    cmd.arg("-l").arg(sockets[0]).arg("-l").arg(sockets[1]).arg(format!("--fdname={names}")).arg(BIN);
    cmd.arg("lmtp").arg("--root").arg(env.root()).args(["--log", "none"]);
    if is_root() {
        cmd.arg("--allow-root");
    }
    cmd.env_clear().env("PATH", "/usr/bin:/bin").stdout(Stdio::null()).stderr(stderr);
    cmd.spawn().unwrap()
}

/// Socket activation as systemd does it (LISTEN_PID, LISTEN_FDS, LISTEN_FDNAMES), played by
/// systemd-socket-activate: the socket named `sent` takes Sent copies, the other INBOX ones.
#[test]
fn systemd_sockets_are_served_by_their_names() {
    let Ok(tool) = which("systemd-socket-activate") else {
        eprintln!("skipped: no systemd-socket-activate");
        return;
    };
    let env = Env::new();
    let (inbox, sent) = (env.dir.path().join("in.sock"), env.dir.path().join("sent.sock"));
    let child = socket_activated(&tool, &env, [&inbox, &sent], "inbox:sent", Stdio::null());
    let mut server = Server { child: Some(child), inbox: inbox.clone(), sent: sent.clone() };
    let start = Instant::now();
    while !(inbox.exists() && sent.exists()) {
        assert!(start.elapsed() < Duration::from_secs(10), "no sockets in 10 s");
        std::thread::sleep(Duration::from_millis(10));
    }
    let mut c = Client::transaction(&server.sent, "alice@example.org", &["b@example.net"]);
    assert!(c.data(&stuffed(MESSAGE, b"\r\n"), 1)[0].starts_with("250 "));
    let mut c = Client::transaction(&server.inbox, "x@example.net", &["carol@example.org"]);
    assert!(c.data(&stuffed(MESSAGE, b"\r\n"), 1)[0].starts_with("250 "));
    assert_eq!(env.new_files("alice/.Sent").len(), 1);
    assert_eq!(env.new_files("carol").len(), 1);
    assert_eq!(server.stop().0, 0);
}

/// A socket unit without FileDescriptorName=inbox/sent is named after its unit: taken for an
/// INBOX socket, a Sent socket would store sent mail into its recipients' INBOXes. Refused.
#[test]
fn systemd_sockets_named_neither_inbox_nor_sent_are_refused_with_one_line() {
    let Ok(tool) = which("systemd-socket-activate") else {
        eprintln!("skipped: no systemd-socket-activate");
        return;
    };
    let env = Env::new();
    let (inbox, sent) = (env.dir.path().join("in.sock"), env.dir.path().join("sent.sock"));
    let names = "mailkeep-lmtp.socket:mailkeep-lmtp-sent.socket";
    let mut child = socket_activated(&tool, &env, [&inbox, &sent], names, Stdio::piped());
    let start = Instant::now();
    while !sent.exists() {
        assert!(start.elapsed() < Duration::from_secs(10), "no sockets in 10 s");
        std::thread::sleep(Duration::from_millis(10));
    }
    // systemd-socket-activate starts the program at the first connection.
    let conn = UnixStream::connect(&sent).unwrap();
    let start = Instant::now();
    while child.try_wait().unwrap().is_none() {
        if start.elapsed() > Duration::from_secs(10) {
            let _ = child.kill();
            panic!("mailkeep lmtp served sockets named after their units (still running after 10 s)");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    drop(conn);
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    let ours: Vec<&str> = err
        .lines()
        .filter(|l| !l.starts_with("Listening on") && !l.starts_with("Communication") && !l.starts_with("Execing"))
        .collect();
    assert_eq!(out.status.code(), Some(2), "exit: expected 2, got {:?}; stderr: {err}", out.status.code());
    assert_eq!(ours.len(), 1, "expected one line on stderr, got {ours:?}");
    assert!(ours[0].contains("mailkeep-lmtp.socket"), "the line names the bad name: {:?}", ours[0]);
    assert_nothing_stored(&env);
}

fn which(name: &str) -> Result<PathBuf, ()> {
    ["/usr/bin", "/bin", "/usr/local/bin"].iter().map(|d| Path::new(d).join(name)).find(|p| p.exists()).ok_or(())
}
