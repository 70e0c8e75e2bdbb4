//! Every exit status of every command, each with an input that produces it (issue 19), and
//! the README's tables against `exit.rs`'s, from which `--help` and the man pages are made.
//! deliver and replay speak sysexits for Exim; the admin commands 0, 1, 2 and 75.

use std::ffi::OsString;
use std::fs::File;
use std::path::Path;
use std::process::{Command, Output, Stdio};

use mailkeep::exit::Family;
use serde_json::json;

use crate::util::*;

const MSG: &[u8] = b"From: a@outside.example\nSubject: t\nMessage-ID: <x.1@outside.example>\n\nbody\n";
const MBOX: &[u8] = b"From a@outside.example Thu Jan  1 00:00:00 2015\nSubject: t\nMessage-ID: <m.1@x>\n\nbody\n";

/// Collects what each input gave, and fails once, listing every case that differs.
#[derive(Default)]
struct Codes(Vec<String>);

impl Codes {
    fn expect(&mut self, want: i32, input: &str, out: &Output) {
        if code(out) != want {
            self.0.push(format!("{input}: expected exit {want}, got {}; stderr: {}", code(out), stderr(out)));
        }
    }

    /// `expect`, and a failure is one line on stderr (what Exim logs).
    fn expect_one_line(&mut self, want: i32, input: &str, out: &Output) {
        self.expect(want, input, out);
        if want != 0 && stderr(out).lines().count() != 1 {
            self.0.push(format!("{input}: expected one line on stderr, got: {}", stderr(out)));
        }
    }

    /// Records `what` unless `ok`.
    fn require(&mut self, ok: bool, what: String) {
        if !ok {
            self.0.push(what);
        }
    }

    #[track_caller]
    fn check(self) {
        assert!(self.0.is_empty(), "\n{}", self.0.join("\n"));
    }
}

fn args(list: &[&dyn AsRef<std::ffi::OsStr>]) -> Vec<OsString> {
    list.iter().map(|a| a.as_ref().to_os_string()).collect()
}

/// `--allow-root` when the tests run as root, for the commands that refuse root without it.
fn allow_root() -> Vec<OsString> {
    if is_root() { vec!["--allow-root".into()] } else { vec![] }
}

/// mailkeep `args` in `env`'s directory, with a cleaned environment and, when `full`,
/// stdout on /dev/full (a report that cannot be written), or, when `no_room`, a file-size
/// limit of 0 (every write of data fails with EFBIG, as on a full disk).
fn run(env: &Env, args: &[OsString], stdin: &[u8], full: bool, no_room: bool) -> Output {
    let mut cmd = if no_room {
        let mut sh = Command::new("/bin/sh");
        sh.args(["-c", "ulimit -f 0 && exec \"$0\" \"$@\"", BIN]);
        sh
    } else {
        Command::new(BIN)
    };
    cmd.args(args).env_clear().env("PATH", "/usr/bin:/bin").current_dir(env.dir.path());
    if full {
        cmd.stdout(File::create("/dev/full").unwrap()).stderr(Stdio::piped()).stdin(Stdio::null());
        return cmd.output().unwrap();
    }
    run_with_stdin(cmd, stdin)
}

/// A directory outside the root, and `ROOT/<name>` a symlink to it.
fn planted_link(env: &Env, name: &str) {
    let outside = env.dir.path().join(format!("outside-{name}"));
    std::fs::create_dir(&outside).unwrap();
    std::os::unix::fs::symlink(&outside, env.root().join(name)).unwrap();
}

#[test]
fn deliver_exit_codes() {
    let env = Env::new();
    let root = env.root();
    let missing = env.dir.path().join("missing");
    let deliver = |root: &Path, user: &str, extra: &[&str]| {
        let mut a = args(&[&"deliver", &"--root", &root, &"--user", &user, &"--direction", &"in", &"--log", &"none"]);
        a.extend(allow_root());
        a.extend(extra.iter().map(OsString::from));
        a
    };
    planted_link(&env, "linked");
    let mut c = Codes::default();
    c.expect_one_line(0, "a message", &run(&env, &deliver(&root, "alice", &[]), MSG, false, false));
    let no_root = run(&env, &args(&[&"deliver", &"--user", &"alice", &"--direction", &"in"]), MSG, false, false);
    c.expect_one_line(64, "no --root", &no_root);
    c.require(stderr(&no_root).contains("--root <DIR>"), format!("no --root: not named in: {}", stderr(&no_root)));
    c.expect_one_line(
        64,
        "-h among the arguments",
        &run(&env, &deliver(&root, "bob", &["--rcpt", "x", "-h"]), MSG, false, false),
    );
    c.expect_one_line(64, "--version", &run(&env, &deliver(&root, "bob", &["--version"]), MSG, false, false));
    c.expect_one_line(64, "deliver --help alone", &run(&env, &args(&[&"deliver", &"--help"]), MSG, false, false));
    c.expect_one_line(65, "an empty message", &run(&env, &deliver(&root, "bob", &[]), b"", false, false));
    c.expect_one_line(67, "an unsafe user", &run(&env, &deliver(&root, "../bob", &[]), MSG, false, false));
    c.expect_one_line(
        75,
        "a symlink as the user's directory (Postfix bounces 73, issue 23)",
        &run(&env, &deliver(&root, "linked", &[]), MSG, false, false),
    );
    c.expect_one_line(75, "no room to write", &run(&env, &deliver(&root, "carol", &[]), MSG, false, true));
    c.expect_one_line(75, "a missing root", &run(&env, &deliver(&missing, "alice", &[]), MSG, false, false));
    let bare = env.dir.path().join("bare");
    std::fs::create_dir(&bare).unwrap();
    c.expect_one_line(75, "a root without marker", &run(&env, &deliver(&bare, "alice", &[]), MSG, false, false));
    c.require(files_below(&bare).is_empty(), format!("an uninitialised root got {:?}", files_below(&bare)));
    c.require(env.new_files("bob").is_empty(), format!("a usage error stored {:?}", env.new_files("bob")));
    c.check();
}

#[test]
fn replay_exit_codes() {
    let env = Env::new();
    let root = env.root();
    let missing = env.dir.path().join("missing");
    let mbox = env.dir.path().join("in.mbox");
    std::fs::write(&mbox, MBOX).unwrap();
    let not_mbox = env.dir.path().join("notes.txt");
    std::fs::write(&not_mbox, "just some text\n").unwrap();
    let replay = |root: &Path, user: &str, file: &Path, domain: bool| {
        let mut a = args(&[&"replay", &"--root", &root, &"--user", &user, &"--log", &"none"]);
        if domain {
            a.extend(args(&[&"--domain", &"example.com"]));
        }
        a.extend(allow_root());
        a.push(file.into());
        a
    };
    planted_link(&env, "linked");
    let mut c = Codes::default();
    c.expect(0, "an mbox", &run(&env, &replay(&root, "alice", &mbox, true), b"", false, false));
    c.expect(
        64,
        "no --domain with --direction auto",
        &run(&env, &replay(&root, "alice", &mbox, false), b"", false, false),
    );
    c.expect(64, "an unknown option", &run(&env, &args(&[&"replay", &"--bogus"]), b"", false, false));
    c.expect(65, "a file that is not an mbox", &run(&env, &replay(&root, "bob", &not_mbox, true), b"", false, false));
    let absent = env.dir.path().join("absent.mbox");
    c.expect(66, "a missing file", &run(&env, &replay(&root, "bob", &absent, true), b"", false, false));
    c.expect(67, "an unsafe user", &run(&env, &replay(&root, "../bob", &mbox, true), b"", false, false));
    c.expect(
        75,
        "a symlink as the user's directory (Postfix bounces 73, issue 23)",
        &run(&env, &replay(&root, "linked", &mbox, true), b"", false, false),
    );
    c.expect(75, "no room to write", &run(&env, &replay(&root, "carol", &mbox, true), b"", false, true));
    c.expect(75, "a missing root", &run(&env, &replay(&missing, "alice", &mbox, true), b"", false, false));
    let bare = env.dir.path().join("bare");
    std::fs::create_dir(&bare).unwrap();
    c.expect(75, "a root without marker", &run(&env, &replay(&bare, "alice", &mbox, true), b"", false, false));
    c.require(files_below(&bare).is_empty(), format!("an uninitialised root got {:?}", files_below(&bare)));
    c.check();
}

#[test]
fn check_exit_codes() {
    let env = Env::new();
    assert_exit(&env.deliver(["--user", "alice", "--direction", "in"], &[], MSG), 0);
    let root = env.root();
    let check = |extra: &[&str]| {
        let mut a = args(&[&"check", &"--root", &root]);
        a.extend(extra.iter().map(OsString::from));
        a
    };
    let mut c = Codes::default();
    c.expect(0, "a clean backup", &run(&env, &check(&[]), b"", false, false));
    c.expect(75, "a report that cannot be written", &run(&env, &check(&[]), b"", true, false));
    c.expect(2, "an unsafe --user", &run(&env, &check(&["--user", "../etc"]), b"", false, false));
    c.expect(2, "an unknown option", &run(&env, &check(&["--bogus"]), b"", false, false));
    let missing = env.dir.path().join("missing");
    c.expect(2, "a missing root", &run(&env, &args(&[&"check", &"--root", &missing]), b"", false, false));
    let bare = env.dir.path().join("bare");
    std::fs::create_dir(&bare).unwrap();
    c.expect(75, "a root without marker", &run(&env, &args(&[&"check", &"--root", &bare]), b"", false, false));
    c.expect(
        75,
        "--repair, no marker",
        &run(&env, &args(&[&"check", &"--root", &bare, &"--repair"]), b"", false, false),
    );
    c.require(files_below(&bare).is_empty(), format!("an uninitialised root got {:?}", files_below(&bare)));
    std::fs::remove_dir(root.join("alice/tmp")).unwrap();
    c.expect(1, "a folder without tmp/", &run(&env, &check(&[]), b"", false, false));
    c.check();
}

#[test]
fn dedup_stats_and_prune_exit_codes() {
    let env = Env::new();
    let root = env.root();
    let admin = |what: &str, root: &Path| args(&[&"dedup", &what, &"--root", &root]);
    let mut c = Codes::default();
    for what in ["stats", "prune"] {
        c.expect(2, &format!("{what}: no store yet"), &run(&env, &admin(what, &root), b"", false, false));
        let missing = env.dir.path().join("missing");
        c.expect(2, &format!("{what}: a missing root"), &run(&env, &admin(what, &missing), b"", false, false));
        c.expect(2, &format!("{what}: no --root"), &run(&env, &args(&[&"dedup", &what]), b"", false, false));
        let bare = env.dir.path().join("bare");
        let _ = std::fs::create_dir(&bare);
        c.expect(75, &format!("{what}: a root without marker"), &run(&env, &admin(what, &bare), b"", false, false));
    }
    assert_exit(&env.deliver(["--user", "alice", "--direction", "in", "--dedup"], &[], MSG), 0);
    for what in ["stats", "prune"] {
        c.expect(0, &format!("{what}: a store"), &run(&env, &admin(what, &root), b"", false, false));
        c.expect(75, &format!("{what}: stdout cannot be written"), &run(&env, &admin(what, &root), b"", true, false));
    }
    let store = root.join(".mailkeep/dedup.sqlite3");
    let _ = std::fs::remove_file(root.join(".mailkeep/dedup.sqlite3-wal"));
    let _ = std::fs::remove_file(root.join(".mailkeep/dedup.sqlite3-shm"));
    std::fs::write(&store, vec![b'x'; 4096]).unwrap();
    c.expect(75, "stats: a store SQLite cannot read", &run(&env, &admin("stats", &root), b"", false, false));
    std::fs::remove_dir_all(root.join(".mailkeep")).unwrap();
    planted_link(&env, ".mailkeep");
    c.expect(2, "stats: the store's directory is a symlink", &run(&env, &admin("stats", &root), b"", false, false));
    c.check();
}

#[test]
fn init_exit_codes() {
    let env = Env::uninitialised();
    let root = env.root();
    let init = |dir: &Path, extra: &[&str]| {
        let mut a = args(&[&"init", &"--root", &dir]);
        a.extend(allow_root());
        a.extend(extra.iter().map(OsString::from));
        a
    };
    let mut c = Codes::default();
    c.expect(0, "an empty directory", &run(&env, &init(&root, &[]), b"", false, false));
    c.expect(0, "a second time", &run(&env, &init(&root, &[]), b"", false, false));
    let missing = env.dir.path().join("missing");
    c.expect_one_line(2, "a missing directory", &run(&env, &init(&missing, &[]), b"", false, false));
    let full = env.dir.path().join("full");
    std::fs::create_dir_all(full.join("alice/new")).unwrap();
    c.expect_one_line(2, "a full directory without marker", &run(&env, &init(&full, &[]), b"", false, false));
    c.expect(0, "a full directory with --adopt", &run(&env, &init(&full, &["--adopt"]), b"", false, false));
    c.expect(2, "an unknown option", &run(&env, &init(&root, &["--bogus"]), b"", false, false));
    if is_root() {
        let as_root = args(&[&"init", &"--root", &root]);
        c.expect_one_line(2, "as root without --allow-root", &run(&env, &as_root, b"", false, false));
    }
    c.check();
}

#[test]
fn serve_config_exit_codes() {
    let env = Env::new();
    let root = env.root();
    std::fs::create_dir(root.join("alice")).unwrap();
    if is_root() {
        for p in [root.clone(), root.join("alice")] {
            std::os::unix::fs::chown(&p, Some(65534), Some(65534)).unwrap();
        }
    }
    let out = env.dir.path().join("imap");
    let serve = |root: &Path, out: &Path, extra: &[&str]| {
        let mut a = args(&[&"serve-config", &"dovecot", &"--root", &root, &"--out", &out]);
        a.extend(extra.iter().map(OsString::from));
        a
    };
    let mut c = Codes::default();
    c.expect(0, "a backup", &run(&env, &serve(&root, &out, &[]), b"", false, false));
    c.expect(75, "the passwords cannot be printed", &run(&env, &serve(&root, &out, &[]), b"", true, false));
    c.expect(
        2,
        "--listen that is no address",
        &run(&env, &serve(&root, &out, &["--listen", "here"]), b"", false, false),
    );
    c.expect(2, "no --out", &run(&env, &args(&[&"serve-config", &"dovecot", &"--root", &root]), b"", false, false));
    let missing = env.dir.path().join("missing");
    c.expect(2, "a missing root", &run(&env, &serve(&missing, &out, &[]), b"", false, false));
    let link = env.dir.path().join("imap-link");
    std::os::unix::fs::symlink(&out, &link).unwrap();
    c.expect(2, "--out a symlink", &run(&env, &serve(&root, &link, &[]), b"", false, false));
    c.check();
}

#[test]
fn accounts_sync_exit_codes() {
    use crate::accounts::{World, company};
    use std::os::unix::fs::PermissionsExt;
    let mut c = Codes::default();
    let w = World::new(company(json!({})));
    c.expect(0, "a directory read whole", &w.sync(&[]));
    std::fs::write(&w.out, "alice\nbob\ncarol\nerin\nfrank\ngone1\ngone2\n").unwrap();
    c.expect(1, "a result that removes 2 of 7", &w.sync(&[]));
    c.expect(2, "--max-shrink that is no percentage", &w.sync(&["--max-shrink", "ten"]));
    c.expect(2, "no --out", &w.sync(&["--out"]));
    std::fs::set_permissions(&w.key, std::fs::Permissions::from_mode(0o644)).unwrap();
    c.expect(2, "a key others can read", &w.sync(&[]));
    let failing = World::new(company(json!({"fault": {"list": "users", "page": 2, "kind": "500"}})));
    c.expect(75, "HTTP 500 on page 2", &failing.sync(&[]));
    c.check();
}

#[test]
fn generate_exit_codes() {
    let env = Env::new();
    let dir = env.dir.path().join("man");
    let generate = |what: &str, dir: &Path| args(&[&"generate", &what, &dir]);
    let mut c = Codes::default();
    c.expect(0, "man pages", &run(&env, &generate("man", &dir), b"", false, false));
    c.expect(0, "completions", &run(&env, &generate("completions", &dir), b"", false, false));
    c.expect(2, "an unknown kind", &run(&env, &generate("pdf", &dir), b"", false, false));
    let file = env.dir.path().join("a-file");
    std::fs::write(&file, "").unwrap();
    c.expect(2, "a directory below a file", &run(&env, &generate("man", &file.join("man")), b"", false, false));
    c.expect(75, "no room to write", &run(&env, &generate("man", &env.dir.path().join("man2")), b"", false, true));
    c.check();
}

#[test]
fn help_and_version_exit_0_outside_deliver() {
    let env = Env::new();
    let mut c = Codes::default();
    for a in [&["--help"][..], &["--version"], &["help", "deliver"], &["check", "--help"], &["replay", "--help"]] {
        c.expect(0, &a.join(" "), &env.run(a, &[], b""));
    }
    c.expect(2, "no command", &env.run::<_, &str>([], &[], b""));
    c.check();
}

/// The README's exit status tables are the ones `exit.rs` renders (and `--help` and the
/// man pages are made from).
#[test]
fn readme_tables_are_the_ones_exit_rs_renders() {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    for family in Family::ALL {
        let table = family.markdown();
        assert!(readme.contains(&table), "README.md lacks the {family:?} table; expected:\n{table}");
    }
}

#[test]
fn expire_erase_and_hold_exit_codes() {
    let env = Env::new();
    assert_exit(&env.deliver(["--user", "alice", "--direction", "in"], &[], MSG), 0);
    let root = env.root();
    let with = |list: &[&str], root: &Path| {
        let mut a: Vec<OsString> = list.iter().map(OsString::from).collect();
        a.extend([OsString::from("--root"), root.as_os_str().to_os_string()]);
        a.extend(allow_root());
        a
    };
    let mut c = Codes::default();
    let expire = ["expire", "--older-than", "30d"];
    let erase = ["erase", "--user", "alice", "--reason", "r", "--dry-run"];
    let hold = ["hold", "--user", "alice", "--reason", "case 1"];
    c.expect(0, "expire: nothing old", &run(&env, &with(&expire, &root), b"", false, false));
    c.expect(0, "erase --dry-run", &run(&env, &with(&erase, &root), b"", false, false));
    c.expect(75, "erase --dry-run, stdout cannot be written", &run(&env, &with(&erase, &root), b"", true, false));
    c.expect_one_line(
        2,
        "expire: no unit",
        &run(&env, &with(&["expire", "--older-than", "7"], &root), b"", false, false),
    );
    c.expect_one_line(
        2,
        "erase: no --reason",
        &run(&env, &with(&["erase", "--user", "alice"], &root), b"", false, false),
    );
    let nobody = ["erase", "--user", "nobody", "--reason", "r"];
    c.expect_one_line(2, "erase: no such user", &run(&env, &with(&nobody, &root), b"", false, false));
    let missing = env.dir.path().join("missing");
    c.expect_one_line(2, "expire: a missing root", &run(&env, &with(&expire, &missing), b"", false, false));
    let bare = env.dir.path().join("bare");
    std::fs::create_dir(&bare).unwrap();
    c.expect_one_line(75, "erase: a root without marker", &run(&env, &with(&erase, &bare), b"", false, false));
    c.require(files_below(&bare).is_empty(), format!("an uninitialised root got {:?}", files_below(&bare)));
    c.expect(0, "hold", &run(&env, &with(&hold, &root), b"", false, false));
    let real_erase = ["erase", "--user", "alice", "--reason", "r"];
    c.expect_one_line(1, "erase of a held user", &run(&env, &with(&real_erase, &root), b"", false, false));
    c.expect(0, "hold --list", &run(&env, &with(&["hold", "--list"], &root), b"", false, false));
    std::fs::write(root.join(".mailkeep/holds.json"), "not json").unwrap();
    c.expect_one_line(2, "holds.json does not parse", &run(&env, &with(&real_erase, &root), b"", false, false));
    if is_root() {
        let mut as_root = with(&expire, &root);
        as_root.retain(|a| a != "--allow-root");
        c.expect_one_line(2, "expire as root without --allow-root", &run(&env, &as_root, b"", false, false));
    }
    c.check();
}

#[test]
fn export_exit_codes() {
    let env = Env::new();
    let root = env.root();
    let mut deliver =
        args(&[&"deliver", &"--root", &root, &"--user", &"alice", &"--direction", &"in", &"--log", &"none"]);
    deliver.extend(allow_root());
    assert_exit(&run(&env, &deliver, MSG, false, false), 0);
    let export = |user: &str, out: &dyn AsRef<std::ffi::OsStr>| {
        args(&[&"export", &"--root", &root, &"--user", &user, &"--out", out])
    };
    let mut c = Codes::default();
    c.expect(0, "an mbox to stdout", &run(&env, &export("alice", &"-"), b"", false, false));
    c.expect(0, "an mbox file", &run(&env, &export("alice", &"a.mbox"), b"", false, false));
    c.expect_one_line(2, "an mbox file that exists", &run(&env, &export("alice", &"a.mbox"), b"", false, false));
    c.expect_one_line(2, "a user without a backup", &run(&env, &export("bob", &"-"), b"", false, false));
    c.expect_one_line(2, "an unsafe user name", &run(&env, &export("../alice", &"-"), b"", false, false));
    planted_link(&env, "mallory");
    c.expect_one_line(2, "a symlinked user directory", &run(&env, &export("mallory", &"-"), b"", false, false));
    c.expect_one_line(
        2,
        "--out in a missing directory",
        &run(&env, &export("alice", &"no/such/a.mbox"), b"", false, false),
    );
    c.expect_one_line(75, "stdout that cannot be written", &run(&env, &export("alice", &"-"), b"", true, false));
    nix::unistd::mkfifo(&root.join("alice/new/fifo"), nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
    c.expect(1, "a FIFO among the messages", &run(&env, &export("alice", &"-"), b"", false, false));
    let bare = Env::uninitialised();
    let unmarked = args(&[&"export", &"--root", &bare.root(), &"--user", &"alice", &"--out", &"-"]);
    c.expect_one_line(75, "a root without its marker", &run(&bare, &unmarked, b"", false, false));
    c.check();
}
