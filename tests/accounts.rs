//! `mailkeep accounts sync` (issue 9) against a fake Google on loopback
//! (`tests/accounts/fake_google.py`): the real binary signs a JWT that the fake verifies with
//! the test key's public half, pages through users and groups, and writes the accounts file
//! only when every page was read whole and the result does not shrink the file too much.

use std::io::{BufRead, BufReader};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::util::*;

const FAKE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/accounts/fake_google.py");
const ADMIN: &str = "admin@example.com";

/// A Python 3 that has the `cryptography` module (tests/accounts/setup.sh installs Debian's).
fn python() -> &'static str {
    static FOUND: OnceLock<String> = OnceLock::new();
    FOUND.get_or_init(|| {
        let candidates =
            std::env::var("MAILKEEP_TEST_PYTHON").into_iter().chain(["python3".into(), "/usr/bin/python3".into()]);
        for py in candidates {
            let ok = Command::new(&py).args(["-c", "import cryptography"]).stderr(Stdio::null()).status();
            if ok.is_ok_and(|s| s.success()) {
                return py;
            }
        }
        panic!("no python3 with the cryptography module: run tests/accounts/setup.sh (python3-cryptography)")
    })
}

/// Writes a fresh test-only service account key (mode 0600) to `path`.
fn keygen(path: &Path) {
    let out = Command::new(python()).arg(FAKE).arg("keygen").arg(path).output().unwrap();
    assert!(out.status.success(), "keygen: {}", String::from_utf8_lossy(&out.stderr));
}

/// One key for every test (making one takes a second), written with mode 0600 to `path`.
fn write_test_key(path: &Path) {
    static KEY: OnceLock<Vec<u8>> = OnceLock::new();
    let key = KEY.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        keygen(&dir.path().join("key.json"));
        std::fs::read(dir.path().join("key.json")).unwrap()
    });
    std::fs::write(path, key).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).unwrap();
}

/// The fake Google server, killed when dropped.
struct Fake {
    child: Child,
    port: u16,
}

impl Drop for Fake {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A temp dir with a key the fake trusts, the fake serving `scenario`, and an accounts file path.
pub(crate) struct World {
    env: Env,
    fake: Fake,
    pub(crate) key: PathBuf,
    pub(crate) out: PathBuf,
}

impl World {
    pub(crate) fn new(scenario: Value) -> World {
        let env = Env::new();
        let dir = env.dir.path();
        let key = dir.join("key.json");
        write_test_key(&key);
        std::fs::write(dir.join("scenario.json"), scenario.to_string()).unwrap();
        std::fs::create_dir(dir.join("etc")).unwrap();
        let stderr = std::fs::File::create(dir.join("fake.stderr")).unwrap();
        let mut child = Command::new(python())
            .arg(FAKE)
            .args(["serve", "--key"])
            .arg(&key)
            .arg("--scenario")
            .arg(dir.join("scenario.json"))
            .arg("--log")
            .arg(dir.join("requests.jsonl"))
            .stdout(Stdio::piped())
            .stderr(stderr)
            .spawn()
            .unwrap();
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
        let port = line.trim().parse().unwrap_or_else(|_| {
            panic!("fake_google.py did not start: {}", std::fs::read_to_string(dir.join("fake.stderr")).unwrap())
        });
        let out = dir.join("etc/mailkeep_accounts");
        World { env, fake: Fake { child, port }, key, out }
    }

    pub(crate) fn sync(&self, extra: &[&str]) -> Output {
        self.sync_env(extra, &[("MAILKEEP_HTTP_TIMEOUT_SECS", "10")])
    }

    fn sync_env(&self, extra: &[&str], vars: &[(&str, &str)]) -> Output {
        let base = format!("http://127.0.0.1:{}", self.fake.port);
        let (key, out) = (self.key.to_str().unwrap(), self.out.to_str().unwrap());
        let mut args = vec!["accounts", "sync", "--google-key", key, "--admin", ADMIN, "--domain", "example.com"];
        args.extend(["--out", out, "--api-base", &base]);
        args.extend_from_slice(extra);
        self.env.run(&args, vars, b"")
    }

    /// Every request the fake answered, in order.
    fn requests(&self) -> Vec<Value> {
        let text = std::fs::read_to_string(self.env.dir.path().join("requests.jsonl")).unwrap_or_default();
        text.lines().map(|l| serde_json::from_str(l).unwrap()).collect()
    }

    fn accounts(&self) -> String {
        std::fs::read_to_string(&self.out).unwrap()
    }

    /// Names in the accounts file's directory: the file and nothing left behind.
    fn etc(&self) -> Vec<String> {
        let rd = std::fs::read_dir(self.out.parent().unwrap()).unwrap();
        let mut v: Vec<String> = rd.map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
        v.sort();
        v
    }
}

fn user(email: &str, aliases: &[&str], suspended: bool) -> Value {
    json!({"kind": "admin#directory#user", "primaryEmail": email, "aliases": aliases, "suspended": suspended,
           "nonEditableAliases": [email.replace("example.com", "example.com.test-google-a.com")]})
}

fn group(email: &str, aliases: &[&str]) -> Value {
    json!({"kind": "admin#directory#group", "email": email, "aliases": aliases})
}

/// Three pages of users (one suspended, one of another domain, aliases in and out of the
/// domain, mixed case) and two pages of groups; `fault` is merged in.
pub(crate) fn company(fault: Value) -> Value {
    let mut s = json!({
        "admin": ADMIN,
        "domain": "example.com",
        "users": [
            [user("Alice@Example.com", &["ali@example.com", "alice@example.net"], false), user("bob@example.com", &[], false)],
            [user("carol@example.com", &[], true), user("dave@other.example", &[], false),
             user("Erin@example.com", &["erin.x@example.com"], false)],
            [user("frank@example.com", &[], false)],
        ],
        "groups": [
            [group("sales@example.com", &["vertrieb@example.com"])],
            [group("all@example.com", &[]), group("ext@partner.example", &[])],
        ],
        "sleep": 4,
    });
    s.as_object_mut().unwrap().extend(fault.as_object().unwrap().clone());
    s
}

const USERS: &str = "alice\nbob\ncarol\nerin\nfrank\n";

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// What the fake was asked: "POST /token" or "GET users <pageToken>".
fn asked(w: &World) -> Vec<String> {
    let show = |r: &Value| match r["method"].as_str().unwrap() {
        "POST" => format!("POST {} {}", r["path"].as_str().unwrap(), r["jwt"].as_str().unwrap_or("?")),
        _ => format!("GET {} {}", r["path"].as_str().unwrap().rsplit('/').next().unwrap(), r["query"]["pageToken"]),
    };
    w.requests().iter().map(show).collect()
}

#[test]
fn writes_every_users_page_sorted_lower_cased_with_a_verified_jwt() {
    let w = World::new(company(json!({})));
    let out = w.sync(&[]);
    assert_exit(&out, 0);
    assert_bytes_eq("accounts file", USERS.as_bytes(), w.accounts().as_bytes());
    let want = ["POST /token verified", "GET users null", "GET users \"users-p-2\"", "GET users \"users-p-3\""];
    assert_eq!(asked(&w), want, "no groups asked for without --include-groups");
    let text = stdout(&out);
    assert!(text.starts_with("mailkeep accounts sync: added 5, removed 0, total 5 (1 suspended kept"), "{text}");
    assert!(text.contains("\n+ alice\n") && text.contains("\n+ frank\n"), "{text}");
    assert_eq!(std::fs::metadata(&w.out).unwrap().permissions().mode() & 0o777, 0o644, "Exim must read it");
    assert_eq!(w.etc(), ["mailkeep_accounts"]);
}

#[test]
fn other_domains_are_skipped_and_suspended_users_kept() {
    let w = World::new(company(json!({})));
    assert_exit(&w.sync(&["--include-aliases", "--include-groups"]), 0);
    let entries = w.accounts();
    assert!(entries.lines().any(|l| l == "carol"), "suspended carol is kept:\n{entries}");
    for foreign in ["dave", "ext"] {
        assert!(!entries.lines().any(|l| l == foreign), "{foreign} is of another domain:\n{entries}");
    }
}

#[test]
fn aliases_are_listed_only_with_include_aliases() {
    let w = World::new(company(json!({})));
    assert_exit(&w.sync(&["--include-aliases"]), 0);
    assert_bytes_eq("with aliases", b"ali\nalice\nbob\ncarol\nerin\nerin.x\nfrank\n", w.accounts().as_bytes());
    let out = w.sync(&[]);
    assert_exit(&out, 1); // 2 of 7 removed: more than 10%
    let out = w.sync(&["--force"]);
    assert_exit(&out, 0);
    assert_bytes_eq("without aliases", USERS.as_bytes(), w.accounts().as_bytes());
    assert!(stdout(&out).contains("\n- ali\n- erin.x\n"), "{}", stdout(&out));
}

#[test]
fn groups_are_listed_only_with_include_groups_their_aliases_with_include_aliases() {
    let w = World::new(company(json!({})));
    assert_exit(&w.sync(&["--include-groups"]), 0);
    assert_bytes_eq("groups", b"alice\nall\nbob\ncarol\nerin\nfrank\nsales\n", w.accounts().as_bytes());
    let groups: Vec<String> = asked(&w).into_iter().filter(|a| a.starts_with("GET groups")).collect();
    assert_eq!(groups, ["GET groups null", "GET groups \"groups-p-2\""]);
    assert_exit(&w.sync(&["--include-groups", "--include-aliases"]), 0);
    let entries = w.accounts();
    assert!(entries.lines().any(|l| l == "vertrieb") && entries.lines().any(|l| l == "ali"), "{entries}");
}

/// A sync that fails at `fault` exits 75 naming `reason`, and leaves the old file and its
/// directory exactly as they were.
#[track_caller]
fn assert_fails_untouched(fault: Value, extra: &[&str], vars: &[(&str, &str)], reason: &str) -> World {
    let w = World::new(company(json!({ "fault": fault })));
    std::fs::write(&w.out, "old\nlist\n").unwrap();
    let out = w.sync_env(extra, vars);
    assert_exit(&out, 75);
    assert!(stderr(&out).contains(reason), "stderr should name {reason:?}:\n{}", stderr(&out));
    assert!(stderr(&out).contains("left as it was"), "{}", stderr(&out));
    assert_bytes_eq("old accounts file", b"old\nlist\n", w.accounts().as_bytes());
    assert_eq!(w.etc(), ["mailkeep_accounts"], "no temp file left");
    w
}

const T10: &[(&str, &str)] = &[("MAILKEEP_HTTP_TIMEOUT_SECS", "10")];

#[test]
fn http_500_mid_paging_exits_75_and_keeps_the_old_file() {
    assert_fails_untouched(json!({"list": "users", "page": 2, "kind": "500"}), &[], T10, "users page 2");
    assert_fails_untouched(json!({"list": "users", "page": 3, "kind": "500"}), &[], T10, "HTTP 500");
}

#[test]
fn failure_in_groups_paging_exits_75_and_keeps_the_old_file() {
    let f = json!({"list": "groups", "page": 2, "kind": "500"});
    assert_fails_untouched(f, &["--include-groups"], T10, "groups page 2");
}

#[test]
fn error_bodies_exit_75_with_the_message() {
    let f = json!({"list": "users", "page": 2, "kind": "error_body"});
    assert_fails_untouched(f, &[], T10, "error body: 503 The service is currently unavailable.");
    let f = json!({"list": "users", "page": 1, "kind": "403"});
    assert_fails_untouched(f, &[], T10, "HTTP 403 Forbidden: 403 Not Authorized to access this resource/api");
}

#[test]
fn a_missing_page_or_a_body_that_is_no_page_exits_75() {
    assert_fails_untouched(json!({"list": "users", "page": 3, "kind": "gone"}), &[], T10, "HTTP 404");
    assert_fails_untouched(
        json!({"list": "users", "page": 2, "kind": "not_a_page"}),
        &[],
        T10,
        "not a users list page",
    );
}

#[test]
fn timeout_mid_paging_exits_75_and_keeps_the_old_file() {
    let started = Instant::now();
    let fault = json!({"list": "users", "page": 2, "kind": "sleep"});
    assert_fails_untouched(fault, &[], &[("MAILKEEP_HTTP_TIMEOUT_SECS", "1")], "no answer within 1 s");
    assert!(started.elapsed() < Duration::from_secs(4), "the client gave up before the server answered");
}

#[test]
fn a_jwt_with_a_bad_signature_is_refused_by_the_token_endpoint_and_exits_75() {
    let w = World::new(company(json!({})));
    std::fs::write(&w.out, "old\n").unwrap();
    // Same service account and key id, another private key: only the signature is wrong.
    let other = w.env.dir.path().join("other.json");
    keygen(&other);
    let mut key: Value = serde_json::from_str(&std::fs::read_to_string(&w.key).unwrap()).unwrap();
    let other: Value = serde_json::from_str(&std::fs::read_to_string(&other).unwrap()).unwrap();
    key["private_key"] = other["private_key"].clone();
    std::fs::write(&w.key, key.to_string()).unwrap();
    let out = w.sync(&[]);
    assert_exit(&out, 75);
    assert!(stderr(&out).contains("HTTP 400") && stderr(&out).contains("invalid_grant"), "{}", stderr(&out));
    assert_eq!(asked(&w), ["POST /token Invalid JWT Signature. (InvalidSignature)"]);
    assert_eq!(w.accounts(), "old\n");
}

#[test]
fn the_jwt_acts_for_the_admin_given() {
    let mut scenario = company(json!({}));
    scenario["admin"] = json!("other-admin@example.com");
    let w = World::new(scenario);
    let out = w.sync(&[]);
    assert_exit(&out, 75);
    assert!(stderr(&out).contains("bad claim sub"), "{}", stderr(&out));
}

#[test]
fn shrinking_beyond_max_shrink_is_refused_unless_forced() {
    let w = World::new(company(json!({})));
    let old = format!("{USERS}gone1\ngone2\n");
    std::fs::write(&w.out, &old).unwrap();
    let out = w.sync(&[]);
    assert_exit(&out, 1);
    assert!(
        stdout(&out).contains("removed 2, total 5") && stdout(&out).contains("\n- gone1\n- gone2\n"),
        "{}",
        stdout(&out)
    );
    assert!(
        stderr(&out).contains("would lose 2 of its 7 entries (28.6%), more than --max-shrink 10%"),
        "{}",
        stderr(&out)
    );
    assert_eq!(w.accounts(), old, "refused: untouched");
    assert_exit(&w.sync(&["--max-shrink", "30%"]), 0);
    assert_eq!(w.accounts(), format!("{SIZES} {}=7\n{USERS}", day_ago(0)), "the earlier size is kept");

    std::fs::write(&w.out, &old).unwrap();
    let out = w.sync(&["--force"]);
    assert_exit(&out, 0);
    assert_eq!(w.accounts(), USERS, "--force writes");
}

#[test]
fn dry_run_prints_the_changes_and_writes_nothing() {
    let w = World::new(company(json!({})));
    let out = w.sync(&["--dry-run"]);
    assert_exit(&out, 0);
    assert!(stdout(&out).contains("added 5") && stdout(&out).contains("dry run, nothing written"), "{}", stdout(&out));
    assert_eq!(w.etc(), Vec::<String>::new());
    std::fs::write(&w.out, "zed\n").unwrap();
    let out = w.sync(&["--dry-run", "--force"]);
    assert_exit(&out, 0);
    assert!(stdout(&out).contains("\n- zed\n"), "{}", stdout(&out));
    assert_eq!(w.accounts(), "zed\n");
}

#[test]
fn world_readable_key_exits_2_before_any_request() {
    let w = World::new(company(json!({})));
    std::fs::set_permissions(&w.key, std::fs::Permissions::from_mode(0o644)).unwrap();
    let out = w.sync(&[]);
    assert_exit(&out, 2);
    assert!(stderr(&out).contains("readable by others (mode 0644)"), "{}", stderr(&out));
    assert!(w.requests().is_empty(), "no request with an exposed key");
    assert_eq!(w.etc(), Vec::<String>::new());
}

#[test]
fn no_secret_reaches_the_output() {
    let w = World::new(company(json!({"fault": {"list": "users", "page": 2, "kind": "500"}})));
    let out = w.sync(&[]);
    assert_exit(&out, 75);
    let key: Value = serde_json::from_str(&std::fs::read_to_string(&w.key).unwrap()).unwrap();
    let pem = key["private_key"].as_str().unwrap();
    let token = w.requests()[0]["token"].as_str().unwrap().to_string();
    let printed = stdout(&out) + &stderr(&out);
    let secrets = pem.lines().filter(|l| !l.starts_with("-----")).chain([token.as_str()]);
    for secret in secrets {
        assert!(!printed.contains(secret), "secret {secret:?} printed:\n{printed}");
    }
}

#[test]
fn unchanged_directory_leaves_the_file_alone() {
    let w = World::new(company(json!({})));
    std::fs::write(&w.out, USERS).unwrap();
    let before = std::fs::metadata(&w.out).unwrap();
    let out = w.sync(&[]);
    assert_exit(&out, 0);
    assert!(stdout(&out).contains("added 0, removed 0, total 5") && stdout(&out).contains(": unchanged"));
    use std::os::unix::fs::MetadataExt;
    assert_eq!(std::fs::metadata(&w.out).unwrap().ino(), before.ino(), "not rewritten");
}

#[test]
fn bad_settings_exit_2_without_a_request() {
    let w = World::new(company(json!({})));
    assert_exit(&w.sync(&["--max-shrink", "ten"]), 2);
    assert_exit(&w.sync_env(&[], &[("MAILKEEP_HTTP_TIMEOUT_SECS", "0")]), 2);
    let (key, out) = (w.key.to_str().unwrap(), w.out.to_str().unwrap());
    let args = ["accounts", "sync", "--google-key", key, "--admin", ADMIN, "--domain", "example.com", "--out", out];
    let plain = w.env.run(args.iter().chain(&["--api-base", "http://directory.example.com"]), &[], b"");
    assert_exit(&plain, 2);
    assert!(stderr(&plain).contains("only allowed to 127.0.0.1"), "{}", stderr(&plain));
    assert!(w.requests().is_empty());
}

/// The accounts file's comment line with its earlier sizes (Exim's lsearch skips it).
const SIZES: &str = "# mailkeep accounts sync, sizes before (for --max-shrink):";

/// `YYYY-MM-DD` (UTC) of `days` days ago.
fn day_ago(days: u32) -> String {
    let out = Command::new("date").args(["-u", "-d", &format!("{days} days ago"), "+%F"]).output().unwrap();
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

/// A directory of `n` users, u000 to u(n-1), on one page.
fn staff(n: usize) -> Value {
    let users: Vec<Value> = (0..n).map(|i| user(&format!("u{i:03}@example.com"), &[], false)).collect();
    json!({"admin": ADMIN, "domain": "example.com", "users": [users]})
}

/// The entries of the accounts file, without comment lines.
fn entries(w: &World) -> usize {
    w.accounts().lines().filter(|l| !l.starts_with('#')).count()
}

#[test]
fn endless_page_tokens_stop_at_max_pages_with_exit_75_issue_18() {
    let mut scenario = company(json!({}));
    scenario["endless"] = json!("users");
    let w = World::new(scenario);
    std::fs::write(&w.out, "old\n").unwrap();
    let out = w.sync(&["--max-pages", "5"]);
    assert_exit(&out, 75);
    let err = stderr(&out);
    assert!(err.contains("users: the server still had more after 5 pages (--max-pages)"), "{err}");
    assert_eq!(err.lines().count(), 1, "one line: {err}");
    let pages = asked(&w).iter().filter(|a| a.starts_with("GET users")).count();
    assert_eq!(pages, 5, "pages asked for: expected 5, got {pages}");
    assert_eq!(w.accounts(), "old\n");
    // The default stops too (20 pages of 500: 10 000 users).
    let out = w.sync(&[]);
    assert_exit(&out, 75);
    assert!(stderr(&out).contains("after 20 pages"), "{}", stderr(&out));
}

#[test]
fn shrinking_9_percent_a_run_is_refused_once_10_percent_below_the_30_day_largest_issue_18() {
    let w = World::new(staff(100));
    let scenario = w.env.dir.path().join("scenario.json");
    assert_exit(&w.sync(&[]), 0);
    std::fs::write(&scenario, staff(91).to_string()).unwrap();
    assert_exit(&w.sync(&[]), 0); // 9 of 100: within 10%
    assert_eq!(entries(&w), 91);
    std::fs::write(&scenario, staff(83).to_string()).unwrap();
    let out = w.sync(&[]); // 8 of 91, but 17 of the 100 of today
    assert_exit(&out, 1);
    let err = stderr(&out);
    let want = format!("would have 83 entries, 17.0% fewer than the 100 it had until {}", day_ago(0));
    assert!(err.contains(&want), "stderr\n--- expected to contain\n{want}\n--- got\n{err}");
    assert_eq!(entries(&w), 91, "refused: untouched");
    // --force writes, and makes 83 the reference.
    assert_exit(&w.sync(&["--force"]), 0);
    assert_bytes_eq("forced", staff_file(83).as_bytes(), w.accounts().as_bytes());
    std::fs::write(&scenario, staff(80).to_string()).unwrap();
    assert_exit(&w.sync(&[]), 0);
}

fn staff_file(n: usize) -> String {
    (0..n).map(|i| format!("u{i:03}\n")).collect()
}

#[test]
fn a_size_31_days_old_no_longer_counts_issue_18() {
    let w = World::new(staff(83));
    // The file has 83 entries now; 100 thirty days ago still counts, 31 days ago no more.
    std::fs::write(&w.out, format!("{SIZES} {}=100\n{}", day_ago(30), staff_file(83))).unwrap();
    assert_exit(&w.sync(&["--dry-run"]), 1);
    std::fs::write(&w.out, format!("{SIZES} {}=100\n{}", day_ago(31), staff_file(83))).unwrap();
    let out = w.sync(&[]);
    assert_exit(&out, 0);
    assert_bytes_eq("old size dropped", staff_file(83).as_bytes(), w.accounts().as_bytes());
}

#[test]
fn control_characters_in_a_left_out_address_are_escaped_in_the_warning_issue_18() {
    let mut scenario = company(json!({}));
    let evil = "ev\u{1b}[2J\u{8}\u{7f}\u{202e}il\\@example.com";
    scenario["users"][0].as_array_mut().unwrap().push(user(evil, &[], false));
    let w = World::new(scenario);
    let out = w.sync(&[]);
    assert_exit(&out, 0);
    let err = stderr(&out);
    let want = r"warning: ev\x1b[2J\x08\x7f\u{202e}il\\@example.com left out";
    assert!(err.contains(want), "stderr\n--- expected to contain\n{want}\n--- got\n{err:?}");
    assert_no_raw_control(&err);
}

/// No control character nor bidi override in printed text, but the line ends.
#[track_caller]
pub fn assert_no_raw_control(text: &str) {
    let bad = |c: char| {
        (c.is_control() && c != '\n')
            || matches!(c, '\u{200e}' | '\u{200f}' | '\u{2028}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
    };
    assert!(!text.chars().any(bad), "raw control or bidi character printed: {text:?}");
}
