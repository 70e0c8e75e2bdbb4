//! `mailkeep export` (issue 22): a user's backup out as mboxrd or a Maildir, read back by
//! `replay` (byte for byte, same INTERNALDATEs and folders) and by Python's `mailbox`.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::util::*;

const TAKEOUT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/replay/takeout.mbox");

/// `mailkeep export --root ROOT --user alice <args>`.
fn export(env: &Env, args: &[&str]) -> std::process::Output {
    let root = env.root();
    let mut all = vec!["export", "--root", root.to_str().unwrap(), "--user", "alice"];
    all.extend(args);
    env.run_within(Duration::from_secs(30), &all, &[], b"")
}

fn replay(env: &Env, file: &Path) -> std::process::Output {
    let root = env.root();
    let mut args = vec!["replay", "--root", root.to_str().unwrap(), "--user", "alice", "--domain", "example.com"];
    args.extend(["--log", "none"]);
    if is_root() {
        args.push("--allow-root");
    }
    args.push(file.to_str().unwrap());
    env.run(&args, &[], b"")
}

fn deliver(env: &Env, direction: &str, sender: &str, rcpts: &[&str], message: &[u8]) {
    let mut args = vec!["--user", "alice", "--direction", direction, "--sender", sender, "--rcpt"];
    args.extend(rcpts);
    assert_exit(&env.deliver(&args, &[], message), 0);
}

/// A backup of alice with mail in all three folders: deliveries (a Sent copy with an
/// Envelope-To, a body with From_ lines at several quoting levels, one without a
/// Message-ID) and a Google Takeout replay (Sent and Chat labels), with old mtimes.
fn backup() -> Env {
    let env = Env::new();
    assert_exit(&replay(&env, Path::new(TAKEOUT)), 0);
    deliver(
        &env,
        "in",
        "bob@example.org",
        &["alice@example.com"],
        b"Message-ID: <q@x>\nSubject: quoting\n\nFrom here on\n>From there\n>>From a@b Sat Nov 28 20:31:22 2026\nFrom a@b Sat Nov 28 20:31:22 2026\n",
    );
    deliver(&env, "in", "", &["alice@example.com"], b"Subject: no id, null sender\n\nbounce\n");
    deliver(&env, "out", "alice@example.com", &["x@y.org", "z@w.org"], b"Message-ID: <s@x>\nSubject: sent\n\nhi\n");
    for (i, f) in messages(&env.root()).iter().enumerate() {
        let t = filetime(1_600_000_000 + 86_400 * i as i64);
        nix::sys::stat::utimensat(nix::fcntl::AT_FDCWD, f, &t, &t, nix::sys::stat::UtimensatFlags::NoFollowSymlink)
            .unwrap();
    }
    env
}

fn filetime(secs: i64) -> nix::sys::time::TimeSpec {
    nix::sys::time::TimeSpec::new(secs, 0)
}

/// Every message file of alice's, sorted by path.
fn messages(root: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = files_below(&root.join("alice"))
        .into_iter()
        .filter(|p| p.parent().is_some_and(|d| d.ends_with("new") || d.ends_with("cur")))
        .map(|p| root.join("alice").join(p))
        .collect();
    v.sort();
    v
}

/// (folder, mtime, bytes) of every message of alice's, sorted: what must survive a round trip.
fn contents(root: &Path) -> Vec<(String, i64, Vec<u8>)> {
    let mut v: Vec<(String, i64, Vec<u8>)> = messages(root)
        .iter()
        .map(|p| {
            let folder = p.parent().unwrap().parent().unwrap().file_name().unwrap().to_string_lossy().into_owned();
            (folder, std::fs::metadata(p).unwrap().mtime(), std::fs::read(p).unwrap())
        })
        .collect();
    v.sort();
    v
}

#[test]
fn export_replayed_into_an_empty_root_gives_the_same_files_dates_and_folders_and_exports_identically() {
    let env = backup();
    let mbox = env.dir.path().join("alice.mbox");
    let out = export(&env, &["--out", mbox.to_str().unwrap()]);
    assert_exit(&out, 0);
    let original = contents(&env.root());
    assert!(original.len() >= 8, "the backup has {} messages", original.len());
    let folders: std::collections::BTreeSet<&str> = original.iter().map(|(f, ..)| f.as_str()).collect();
    assert_eq!(folders.len(), 3, "{folders:?}");

    let copy = Env::new();
    let out = replay(&copy, &mbox);
    assert_exit(&out, 0);
    let got = contents(&copy.root());
    assert_eq!(got.len(), original.len(), "{}", stderr(&out));
    for (want, got) in original.iter().zip(&got) {
        assert_eq!((&want.0, want.1), (&got.0, got.1), "folder and mtime");
        assert_bytes_eq("a message after the round trip", &want.2, &got.2);
    }

    let again = copy.dir.path().join("again.mbox");
    let copy_root = copy.root();
    let args = ["export", "--root", copy_root.to_str().unwrap(), "--user", "alice", "--out", again.to_str().unwrap()];
    assert_exit(&copy.run(args, &[], b""), 0);
    assert_bytes_eq("the second export", &std::fs::read(&mbox).unwrap(), &std::fs::read(&again).unwrap());
}

#[test]
fn replaying_the_export_into_the_original_root_adds_nothing() {
    let env = backup();
    let mbox = env.dir.path().join("alice.mbox");
    assert_exit(&export(&env, &["--out", mbox.to_str().unwrap()]), 0);
    let before = env.files();
    let out = replay(&env, &mbox);
    assert_exit(&out, 0);
    assert!(stderr(&out).contains(" stored=0 "), "{}", stderr(&out));
    let mut after = env.files();
    after.retain(|f| !f.ends_with("mailkeep-replay.lock"));
    let mut before = before;
    before.retain(|f| !f.ends_with("mailkeep-replay.lock"));
    assert_eq!(after, before);
}

/// mboxrd's quoting undone: one `>` off every `>+From ` line.
fn unquote(bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    for line in bytes.split_inclusive(|&b| b == b'\n') {
        let quotes = line.iter().take_while(|&&b| b == b'>').count();
        out.extend_from_slice(if quotes > 0 && line[quotes..].starts_with(b"From ") { &line[1..] } else { line });
    }
    out
}

#[test]
fn python_mailbox_reads_the_export_with_the_same_count_and_bodies() {
    let env = backup();
    let mbox = env.dir.path().join("inbox.mbox");
    assert_exit(&export(&env, &["--folder", "INBOX", "--out", mbox.to_str().unwrap()]), 0);
    let script = "import mailbox, sys, json\n\
                  print(json.dumps([m.as_bytes().hex() for m in mailbox.mbox(sys.argv[1], create=False)]))";
    let out = std::process::Command::new("python3").args(["-c", script]).arg(&mbox).output().expect("python3");
    assert!(out.status.success(), "python3: {}", String::from_utf8_lossy(&out.stderr));
    let read: Vec<String> = serde_json::from_slice(&out.stdout).unwrap();
    let mut want: Vec<(i64, Vec<u8>)> = messages(&env.root())
        .iter()
        .filter(|p| !p.to_string_lossy().contains("/.Sent/") && !p.to_string_lossy().contains("/.Chats/"))
        .map(|p| (std::fs::metadata(p).unwrap().mtime(), std::fs::read(p).unwrap()))
        .collect();
    want.sort();
    assert_eq!(read.len(), want.len(), "Python's mailbox.mbox message count");
    for (hex, (_, want)) in read.iter().zip(&want) {
        let bytes: Vec<u8> =
            (0..hex.len()).step_by(2).map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap()).collect();
        // Python's mbox keeps the `>` quoting and the separating blank line in the message.
        let got = unquote(&bytes);
        let got = if got.ends_with(b"\n\n") && !want.ends_with(b"\n\n") { &got[..got.len() - 1] } else { &got[..] };
        assert_bytes_eq("a message as Python's mailbox reads it", want, got);
    }
}

#[test]
fn from_lines_in_a_body_are_quoted_one_level_and_come_back() {
    let env = backup();
    let out = export(&env, &["--folder", "INBOX", "--out", "-"]);
    assert_exit(&out, 0);
    let text = String::from_utf8_lossy(&out.stdout);
    for line in ["\n>From here on\n", "\n>>From there\n", "\n>>>From a@b Sat Nov 28", "\n>From a@b Sat Nov 28"] {
        assert!(text.contains(line), "{line:?} not in\n{text}");
    }
    assert!(text.starts_with("From "), "{text}");
    assert!(text.contains("\nFrom MAILER-DAEMON "), "the null sender's From_ line:\n{text}");
    assert!(!text.contains("X-Gmail-Labels: Inbox\n"), "labels only with --folder all");
}

#[test]
fn stdout_gets_what_a_file_gets() {
    let env = backup();
    let file = env.dir.path().join("a.mbox");
    assert_exit(&export(&env, &["--out", file.to_str().unwrap()]), 0);
    let out = export(&env, &["--out", "-"]);
    assert_exit(&out, 0);
    assert_bytes_eq("stdout vs file", &std::fs::read(&file).unwrap(), &out.stdout);
}

#[test]
fn an_existing_file_is_replaced_only_with_force_and_no_temp_file_stays() {
    let env = backup();
    let file = env.dir.path().join("a.mbox");
    std::fs::write(&file, "keep me").unwrap();
    let out = export(&env, &["--out", file.to_str().unwrap()]);
    assert_exit(&out, 2);
    assert!(stderr(&out).contains("--force"), "{}", stderr(&out));
    assert_eq!(std::fs::read(&file).unwrap(), b"keep me");
    assert_exit(&export(&env, &["--out", file.to_str().unwrap(), "--force"]), 0);
    assert!(std::fs::read(&file).unwrap().starts_with(b"From "));
    let leftovers: Vec<_> = std::fs::read_dir(env.dir.path())
        .unwrap()
        .filter(|e| e.as_ref().unwrap().file_name().to_string_lossy().starts_with(".a.mbox"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

#[test]
fn since_and_until_select_by_internaldate() {
    let env = backup();
    let all = messages(&env.root());
    let mtimes: Vec<i64> = all.iter().map(|p| std::fs::metadata(p).unwrap().mtime()).collect();
    // 2020-09-14 is 1 600 041 600; the mtimes are 1 600 000 000 + n days.
    let (since, until) = (1_600_041_600 + 2 * 86_400, 1_600_041_600 + 5 * 86_400);
    let want = mtimes.iter().filter(|&&t| t >= since && t < until).count();
    let out = export(&env, &["--since", "2020-09-16", "--until", "2020-09-19", "--out", "-"]);
    assert_exit(&out, 0);
    let got = out.stdout.split(|&b| b == b'\n').filter(|l| l.starts_with(b"From ")).count();
    assert_eq!(got, want, "{}", stderr(&out));
    assert!(want > 0 && want < all.len());
    let out = export(&env, &["--since", "16.09.2020", "--out", "-"]);
    assert_exit(&out, 2);
    assert!(stderr(&out).contains("--since '16.09.2020'"), "{}", stderr(&out));
}

#[test]
fn a_hostile_user_name_or_a_symlinked_user_dir_is_refused_and_nothing_written() {
    let env = backup();
    let outside = env.dir.path().join("outside");
    std::fs::create_dir_all(outside.join("new")).unwrap();
    std::fs::write(outside.join("new/1.x"), "Subject: secret\n\nsecret\n").unwrap();
    let file = env.dir.path().join("x.mbox");
    for user in ["../outside", "../../etc"] {
        let root = env.root();
        let args = ["export", "--root", root.to_str().unwrap(), "--user", user, "--out", file.to_str().unwrap()];
        let out = env.run_within(Duration::from_secs(30), args, &[], b"");
        assert_exit(&out, 2);
        assert!(!file.exists());
    }
    std::os::unix::fs::symlink(&outside, env.root().join("mallory")).unwrap();
    let root = env.root();
    let args = ["export", "--root", root.to_str().unwrap(), "--user", "mallory", "--out", file.to_str().unwrap()];
    let out = env.run_within(Duration::from_secs(30), args, &[], b"");
    assert_exit(&out, 2);
    assert!(stderr(&out).contains("symlink"), "{}", stderr(&out));
    assert!(!file.exists());
}

#[test]
fn a_fifo_or_symlink_in_new_is_skipped_said_and_exit_1_without_hanging() {
    let env = backup();
    nix::unistd::mkfifo(&env.root().join("alice/new/planted"), nix::sys::stat::Mode::from_bits_truncate(0o600))
        .unwrap();
    std::os::unix::fs::symlink("/etc/passwd", env.root().join("alice/new/link")).unwrap();
    let out = export(&env, &["--folder", "INBOX", "--out", "-"]);
    assert_exit(&out, 1);
    let err = stderr(&out);
    assert!(err.contains("skipped") && err.contains("planted") && err.contains("link"), "{err}");
    assert!(err.contains("skipped=2"), "{err}");
    assert!(!String::from_utf8_lossy(&out.stdout).contains("root:"), "the symlink was followed");
}

#[test]
fn maildir_format_copies_keeping_names_folders_and_mtimes_and_resumes() {
    let env = backup();
    let dir = env.dir.path().join("handover");
    let out = export(&env, &["--format", "maildir", "--out", dir.to_str().unwrap()]);
    assert_exit(&out, 0);
    let src = env.root().join("alice");
    let mut n = 0;
    for path in messages(&env.root()) {
        let rel = path.strip_prefix(&src).unwrap();
        let copy = dir.join(rel);
        let (a, b) = (std::fs::metadata(&path).unwrap(), std::fs::metadata(&copy).unwrap());
        assert_eq!((a.mtime(), a.mtime_nsec()), (b.mtime(), b.mtime_nsec()), "{}", rel.display());
        // A hand-over shares no inode with the backup: editing or chown -R of it leaves the backup alone.
        assert_ne!(a.ino(), b.ino(), "{}: a copy, not a hard link, unless --link", rel.display());
        assert_bytes_eq("a copied message", &std::fs::read(&path).unwrap(), &std::fs::read(&copy).unwrap());
        n += 1;
    }
    assert_eq!(
        n,
        files_below(&dir)
            .iter()
            .filter(|p| p.to_string_lossy().contains("new/") || p.to_string_lossy().contains("cur/"))
            .count()
    );
    assert!(dir.join(".Sent/maildirfolder").exists() && dir.join(".Chats/tmp").is_dir());
    // Not into a directory that has something, unless --force; then nothing is added twice.
    assert_exit(&export(&env, &["--format", "maildir", "--out", dir.to_str().unwrap()]), 2);
    let out = export(&env, &["--format", "maildir", "--out", dir.to_str().unwrap(), "--force"]);
    assert_exit(&out, 0);
    assert!(stderr(&out).contains(&format!("already-there={n}")), "{}", stderr(&out));
    let out = export(&env, &["--format", "maildir", "--out", "-"]);
    assert_exit(&out, 2);
}

/// Where hard links cannot be made (another file system): fsynced copies, same names, bytes
/// and mtimes to the nanosecond. Needs a second file system (/dev/shm) to mean anything.
#[test]
fn maildir_format_copies_across_file_systems_with_the_same_bytes_and_mtimes() {
    use std::os::unix::fs::MetadataExt;
    let shm = Path::new("/dev/shm");
    let env = backup();
    let dev = |p: &Path| std::fs::metadata(p).map(|m| m.dev()).ok();
    if dev(shm).is_none() || dev(shm) == dev(env.dir.path()) {
        eprintln!("skipped: /dev/shm is not another file system here");
        return;
    }
    let dir = tempfile::tempdir_in(shm).unwrap();
    let out_dir = dir.path().join("alice");
    assert_exit(&export(&env, &["--format", "maildir", "--out", out_dir.to_str().unwrap()]), 0);
    let src = env.root().join("alice");
    let all = messages(&env.root());
    assert!(!all.is_empty());
    for path in all {
        let copy = out_dir.join(path.strip_prefix(&src).unwrap());
        let (a, b) = (std::fs::metadata(&path).unwrap(), std::fs::metadata(&copy).unwrap());
        assert_eq!((a.mtime(), a.mtime_nsec()), (b.mtime(), b.mtime_nsec()), "{}", copy.display());
        assert_bytes_eq("a copied message", &std::fs::read(&path).unwrap(), &std::fs::read(&copy).unwrap());
    }
    assert!(files_below(&out_dir.join("tmp")).is_empty(), "tmp/ is empty after the copies");
}

#[test]
fn maildir_format_hard_links_only_with_link() {
    let env = backup();
    let dir = env.dir.path().join("kept");
    assert_exit(&export(&env, &["--format", "maildir", "--link", "--out", dir.to_str().unwrap()]), 0);
    let src = env.root().join("alice");
    for path in messages(&env.root()) {
        let copy = dir.join(path.strip_prefix(&src).unwrap());
        let (a, b) = (std::fs::metadata(&path).unwrap(), std::fs::metadata(&copy).unwrap());
        assert_eq!(a.ino(), b.ino(), "{}: --link on the same file system", copy.display());
    }
    let out = export(&env, &["--link", "--out", "-"]);
    assert_exit(&out, 2);
    assert!(stderr(&out).contains("--link"), "{}", stderr(&out));
}

/// The target of `--format maildir` may be a directory its user controls (export run as
/// root into a hand-over area): nothing planted there is followed.
#[test]
fn a_maildir_export_refuses_symlinks_planted_in_the_target_and_writes_nothing_through_them() {
    let env = backup();
    let base = env.dir.path();
    let victim = base.join("victim");
    let elsewhere = base.join("elsewhere");
    std::fs::create_dir(&elsewhere).unwrap();
    type Plant<'a> = (&'a str, &'a dyn Fn(&Path));
    let plants: [Plant; 4] = [
        ("subscriptions", &|out| std::os::unix::fs::symlink(&victim, out.join("subscriptions")).unwrap()),
        ("maildirfolder", &|out| {
            std::fs::create_dir(out.join(".Chats")).unwrap();
            std::os::unix::fs::symlink(base.join("created"), out.join(".Chats/maildirfolder")).unwrap();
        }),
        (".Sent", &|out| std::os::unix::fs::symlink(&elsewhere, out.join(".Sent")).unwrap()),
        ("new", &|out| std::os::unix::fs::symlink(&elsewhere, out.join("new")).unwrap()),
    ];
    for (i, (what, plant)) in plants.iter().enumerate() {
        std::fs::write(&victim, "keep").unwrap();
        let out_dir = base.join(format!("out{i}"));
        std::fs::create_dir(&out_dir).unwrap();
        plant(&out_dir);
        let out = export(&env, &["--format", "maildir", "--force", "--out", out_dir.to_str().unwrap()]);
        assert_exit(&out, 2);
        let err = stderr(&out);
        assert!(err.contains("symlink") && err.contains(what) && err.lines().count() == 1, "{what}: {err}");
        assert_eq!(std::fs::read(&victim).unwrap(), b"keep", "{what}: the victim is untouched");
        assert!(!base.join("created").exists(), "{what}: nothing created through the symlink");
        assert!(files_below(&elsewhere).is_empty(), "{what}: nothing made in elsewhere: {:?}", files_below(&elsewhere));
    }
    // --out itself a symlink.
    let link = base.join("outlink");
    std::os::unix::fs::symlink(&elsewhere, &link).unwrap();
    let out = export(&env, &["--format", "maildir", "--force", "--out", link.to_str().unwrap()]);
    assert_exit(&out, 2);
    assert!(files_below(&elsewhere).is_empty(), "{:?}", files_below(&elsewhere));
}

#[test]
fn an_out_inside_the_backup_root_is_refused_and_nothing_written_there() {
    let env = backup();
    let root = env.root();
    let before = env.files();
    let audit = root.join(".mailkeep/audit.log");
    let audit_before = std::fs::read(&audit).ok();
    let cases: [(&[&str], PathBuf); 4] = [
        (&[], root.join("alice/new/x.mbox")),
        (&["--format", "maildir"], root.join("bob")),
        (&["--force"], audit.clone()),
        // Through `..` and a symlink from outside.
        (&["--format", "maildir"], env.dir.path().join("into-root/carol")),
    ];
    std::os::unix::fs::symlink(&root, env.dir.path().join("into-root")).unwrap();
    for (args, out_path) in cases {
        let mut all = args.to_vec();
        all.extend(["--out", out_path.to_str().unwrap()]);
        let out = export(&env, &all);
        assert_exit(&out, 2);
        assert!(stderr(&out).contains("inside the backup root"), "{}: {}", out_path.display(), stderr(&out));
    }
    assert_eq!(env.files(), before, "nothing written below the root");
    assert_eq!(std::fs::read(&audit).ok(), audit_before);
}

#[test]
fn usage_mistakes_exit_2_with_one_line() {
    let env = backup();
    let dir = env.dir.path().join("a-dir");
    std::fs::create_dir(&dir).unwrap();
    let cases: [&[&str]; 2] = [
        &["--force", "--out", dir.to_str().unwrap()],
        &["--since", "2026-02-01", "--until", "2026-01-01", "--out", "-"],
    ];
    for args in cases {
        let out = export(&env, args);
        assert_exit(&out, 2);
        assert_eq!(stderr(&out).lines().count(), 1, "{args:?}: {}", stderr(&out));
        assert!(out.stdout.is_empty(), "{args:?}");
    }
}

/// dovecot-lda writes an mbox whose messages start `Return-Path:`, `Delivered-To:`, and a
/// foreign message may then have `X-Gmail-Labels`: that line is the message's own, and the
/// message is stored as any other: our header lines on top, every line of it kept.
#[test]
fn a_foreign_mbox_laid_out_as_dovecot_lda_writes_is_stored_whole_with_our_lines() {
    let env = Env::new();
    let message = "Return-Path: <bob@example.org>\nDelivered-To: alice@example.com\nX-Gmail-Labels: Inbox\n\
                   Message-ID: <lda@x>\nSubject: lda\n\nbody\n";
    let mbox = env.dir.path().join("lda.mbox");
    std::fs::write(&mbox, format!("From bob@example.org Thu Jan  1 00:00:00 2026\n{message}\n")).unwrap();
    assert_exit(&replay(&env, &mbox), 0);
    let stored = messages(&env.root());
    assert_eq!(stored.len(), 1, "{stored:?}");
    let want = format!("Return-Path: <bob@example.org>\nDelivered-To: alice@example.com\n{message}");
    assert_bytes_eq("the stored message", want.as_bytes(), &std::fs::read(&stored[0]).unwrap());
}
