//! `mailkeep status` (issue 20): each verdict reached on a real root, the output read the
//! way its consumers read it: the Monitoring Plugins conventions by a small parser here,
//! the Prometheus textfile by the real parser (Python's prometheus_client), JSON by serde.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, SystemTime};

use crate::util::{Env, assert_exit, is_root, stderr};

const HOUR: u64 = 3600;
const DAY: u64 = 86400;

/// Writes the marker `mailkeep init` writes, with a creation time the test chooses.
fn init(root: &Path) {
    std::fs::create_dir_all(root.join(".mailkeep")).unwrap();
    std::fs::write(
        root.join(".mailkeep/root.json"),
        r#"{"id":"0123456789abcdef0123456789abcdef","created":1700000000}"#,
    )
    .unwrap();
}

/// Makes USER's INBOX (or Sent folder) with a copy stored `ago` ago (the mtime of `new/`).
fn copy(root: &Path, user: &str, sent: bool, ago: Duration) {
    let dir = if sent { root.join(user).join(".Sent") } else { root.join(user) };
    for sub in ["new", "cur", "tmp"] {
        std::fs::create_dir_all(dir.join(sub)).unwrap();
    }
    std::fs::write(dir.join("new/1.M1P1.host,S=1"), "x").unwrap();
    let new = std::fs::File::open(dir.join("new")).unwrap();
    new.set_modified(SystemTime::now() - ago).unwrap();
}

/// A directory that is no initialised root: an empty mount point.
fn bare(env: &Env) -> PathBuf {
    let dir = env.dir.path().join("bare");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// An initialised root where alice received and sent a copy `ago` ago.
fn root_with_copies(env: &Env, ago: Duration) -> PathBuf {
    let root = env.root();
    init(&root);
    copy(&root, "alice", false, ago);
    copy(&root, "alice", true, ago);
    root
}

fn status(env: &Env, root: &Path, extra: &[&str]) -> Output {
    let mut args: Vec<String> = vec!["status".into(), "--root".into(), root.display().to_string()];
    args.extend(extra.iter().map(|s| s.to_string()));
    env.run(&args, &[], b"")
}

/// A plugin's output as the Monitoring Plugins guidelines define it.
#[derive(Debug)]
struct Plugin {
    state: String,
    text: String,
    /// label, value, unit, warn, crit, min, max
    perf: Vec<(String, f64, String, String, String, String, String)>,
    details: Vec<String>,
}

/// Parses `MAILKEEP <STATE> - text | 'label'=value[UOM];warn;crit;min;max ...` and the
/// detail lines, refusing anything the conventions do not allow.
#[track_caller]
fn parse_plugin(out: &Output) -> Plugin {
    let stdout = String::from_utf8(out.stdout.clone()).expect("UTF-8 output");
    let mut lines = stdout.lines();
    let first = lines.next().expect("a first line");
    let (head, perf) = match first.split_once(" | ") {
        Some((h, p)) => (h, p),
        None => (first, ""),
    };
    let rest = head.strip_prefix("MAILKEEP ").unwrap_or_else(|| panic!("no service prefix: {first}"));
    let (state, text) = rest.split_once(" - ").unwrap_or_else(|| panic!("no ' - ': {first}"));
    assert!(["OK", "WARNING", "CRITICAL", "UNKNOWN"].contains(&state), "state {state}");
    assert!(!text.contains('|'), "a second | in {first}");
    let want = ["OK", "WARNING", "CRITICAL", "UNKNOWN"].iter().position(|s| *s == state).unwrap() as i32;
    assert_exit(out, want);
    let mut parsed = Vec::new();
    for item in perf.split(' ').filter(|s| !s.is_empty()) {
        let (label, data) = item.rsplit_once('=').unwrap_or_else(|| panic!("no '=' in {item}"));
        let label = label.strip_prefix('\'').and_then(|l| l.strip_suffix('\'')).expect("a quoted label");
        assert!(!label.contains('\'') && !label.contains('='), "label {label}");
        let fields: Vec<&str> = data.split(';').collect();
        assert!((1..=5).contains(&fields.len()), "{item}");
        let number_end =
            fields[0].find(|c: char| !(c.is_ascii_digit() || c == '.' || c == '-')).unwrap_or(fields[0].len());
        let (value, unit) = fields[0].split_at(number_end);
        let value: f64 = value.parse().unwrap_or_else(|_| panic!("value of {item}"));
        assert!(["", "s", "ms", "us", "%", "B", "KB", "MB", "TB", "c"].contains(&unit), "unit {unit} in {item}");
        let range_ok = |r: &str| {
            r.is_empty()
                || r.trim_start_matches('@').split(':').all(|n| n.is_empty() || n == "~" || n.parse::<f64>().is_ok())
        };
        let get = |i: usize| fields.get(i).copied().unwrap_or("").to_string();
        assert!(range_ok(&get(1)) && range_ok(&get(2)), "thresholds of {item}");
        for i in [3, 4] {
            assert!(get(i).is_empty() || get(i).parse::<f64>().is_ok(), "min/max of {item}");
        }
        parsed.push((label.to_string(), value, unit.to_string(), get(1), get(2), get(3), get(4)));
    }
    Plugin { state: state.into(), text: text.into(), perf: parsed, details: lines.map(String::from).collect() }
}

impl Plugin {
    fn perf(&self, label: &str) -> f64 {
        self.perf.iter().find(|p| p.0 == label).unwrap_or_else(|| panic!("no {label} in {:?}", self.perf)).1
    }
}

#[test]
fn status_is_ok_when_copies_arrive_in_both_directions() {
    let env = Env::new();
    // 30 min 10 s: shown as "30m" for the next 49 s, so a slow run cannot change the text
    // (at 60 s it read "61s" when the machine was busy).
    let root = root_with_copies(&env, Duration::from_secs(1810));
    copy(&root, "bob", false, Duration::from_secs(2 * HOUR));
    let p = parse_plugin(&status(&env, &root, &[]));
    assert_eq!(p.state, "OK", "{p:?}");
    assert!(p.text.contains("newest copy into INBOX 30m ago, into Sent 30m ago"), "{}", p.text);
    assert!((1810.0..1820.0).contains(&p.perf("inbox_age")), "{p:?}");
    assert_eq!(p.perf("users"), 2.0);
    assert!(p.perf.iter().any(|x| x.0 == "free_space" && x.2 == "%" && x.3 == "10:"), "{p:?}");
    assert!(p.details.iter().any(|l| l.starts_with("newest copy into Sent: ")), "{:?}", p.details);
}

#[test]
fn status_warns_when_the_newest_copy_is_older_than_warn() {
    let env = Env::new();
    let root = root_with_copies(&env, Duration::from_secs(7 * HOUR));
    let p = parse_plugin(&status(&env, &root, &[]));
    assert_eq!(p.state, "WARNING", "{p:?}");
    assert!(p.text.contains("newest copy into INBOX 7h ago (warning after 6h)"), "{}", p.text);
    // Only one direction stale is enough.
    copy(&root, "alice", false, Duration::ZERO);
    let p = parse_plugin(&status(&env, &root, &[]));
    assert_eq!(p.state, "WARNING", "{p:?}");
    assert!(p.text.contains("into Sent 7h ago") && !p.text.contains("INBOX"), "{}", p.text);
    // The thresholds are options.
    let p = parse_plugin(&status(&env, &root, &["--warn", "8h"]));
    assert_eq!(p.state, "OK", "{p:?}");
}

#[test]
fn status_is_critical_when_the_newest_copy_is_older_than_crit() {
    let env = Env::new();
    let root = root_with_copies(&env, Duration::from_secs(25 * HOUR));
    let p = parse_plugin(&status(&env, &root, &[]));
    assert_eq!(p.state, "CRITICAL", "{p:?}");
    assert!(p.text.contains("(critical after 1d)"), "{}", p.text);
    let p = parse_plugin(&status(&env, &root, &["--crit", "2d", "--warn", "90m"]));
    assert_eq!(p.state, "WARNING", "{p:?}");
}

#[test]
fn status_is_critical_when_the_root_is_not_initialised_or_missing() {
    let env = Env::new();
    // An empty mount point: the volume is not mounted.
    let p = parse_plugin(&status(&env, &bare(&env), &[]));
    assert_eq!(p.state, "CRITICAL", "{p:?}");
    assert!(p.text.contains("not initialised or not mounted"), "{}", p.text);
    assert_eq!(std::fs::read_dir(bare(&env)).unwrap().count(), 0, "status wrote below the root");
    let p = parse_plugin(&status(&env, &env.dir.path().join("gone"), &[]));
    assert_eq!(p.state, "CRITICAL", "{p:?}");
    assert!(p.text.ends_with("gone is missing"), "{}", p.text);
    // A marker that does not parse: deliveries refuse the root, so it is critical too.
    init(&bare(&env));
    std::fs::write(bare(&env).join(".mailkeep/root.json"), "{").unwrap();
    assert_eq!(parse_plugin(&status(&env, &bare(&env), &[])).state, "CRITICAL");
}

#[test]
fn a_fresh_root_is_ok_until_warn_then_says_no_copy_arrived() {
    let env = Env::new();
    let root = env.root();
    std::fs::create_dir_all(root.join(".mailkeep")).unwrap();
    let now = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).unwrap().as_secs();
    let marker = |created: u64| format!(r#"{{"id":"00","created":{created}}}"#);
    std::fs::write(root.join(".mailkeep/root.json"), marker(now - 60)).unwrap();
    assert_eq!(parse_plugin(&status(&env, &root, &[])).state, "OK");
    std::fs::write(root.join(".mailkeep/root.json"), marker(now - 7 * HOUR)).unwrap();
    let p = parse_plugin(&status(&env, &root, &[]));
    assert_eq!(p.state, "WARNING", "{p:?}");
    assert!(p.text.contains("no copy into INBOX since the root was initialised 7h ago"), "{}", p.text);
}

#[test]
fn status_is_critical_when_the_root_is_not_writable_by_its_owner() {
    use std::os::unix::fs::PermissionsExt;
    let env = Env::new();
    let root = root_with_copies(&env, Duration::ZERO);
    std::fs::set_permissions(&root, std::fs::Permissions::from_mode(0o555)).unwrap();
    let p = parse_plugin(&status(&env, &root, &[]));
    std::fs::set_permissions(&root, std::fs::Permissions::from_mode(0o755)).unwrap();
    assert_eq!(p.state, "CRITICAL", "{p:?}");
    assert!(p.text.contains("not writable by its owner (mode 0555)"), "{}", p.text);
}

#[test]
fn status_names_listed_users_without_copies() {
    let env = Env::new();
    let root = root_with_copies(&env, Duration::from_secs(60));
    copy(&root, "bob", false, Duration::from_secs(15 * DAY));
    copy(&root, "dave", true, Duration::from_secs(DAY)); // only sent mail: still a copy
    let accounts = env.dir.path().join("accounts");
    std::fs::write(&accounts, "# users\nAlice: x\nbob\ncarol\ndave\n").unwrap();
    let p = parse_plugin(&status(&env, &root, &["--accounts", accounts.to_str().unwrap()]));
    assert_eq!(p.state, "WARNING", "{p:?}");
    assert!(p.text.contains("2 listed users without a copy for 14d: bob, carol"), "{}", p.text);
    assert_eq!(p.perf("users_without_copies"), 2.0);
    assert!(p.details.iter().any(|l| l == "no copy for carol since ever"), "{:?}", p.details);
    let p = parse_plugin(&status(&env, &root, &["--accounts", accounts.to_str().unwrap(), "--user-warn", "16d"]));
    assert!(p.text.contains("1 listed users without a copy for 16d: carol"), "{}", p.text);
}

#[test]
fn status_is_unknown_when_it_cannot_tell() {
    let env = Env::new();
    let root = root_with_copies(&env, Duration::ZERO);
    let missing = env.dir.path().join("no-accounts");
    let p = parse_plugin(&status(&env, &root, &["--accounts", missing.to_str().unwrap()]));
    assert_eq!(p.state, "UNKNOWN", "{p:?}");
    assert!(p.text.starts_with("cannot read accounts file"), "{}", p.text);
    // Bad usage is UNKNOWN too (Monitoring Plugins), one line on stderr.
    for bad in [&["--warn", "6x"][..], &["--format", "xml"], &["--bogus"]] {
        let out = status(&env, &root, bad);
        assert_exit(&out, 3);
        assert_eq!(stderr(&out).lines().count(), 1, "{}", stderr(&out));
        // And the plugin's line on stdout, which is what a monitoring system shows.
        assert_eq!(parse_plugin(&out).state, "UNKNOWN", "{bad:?}");
    }
    // Critical outranks unknown: what status knows is not hidden by what it cannot learn.
    std::fs::remove_dir_all(root.join(".mailkeep")).unwrap();
    let p = parse_plugin(&status(&env, &root, &["--accounts", missing.to_str().unwrap()]));
    assert_eq!(p.state, "CRITICAL", "{p:?}");
}

#[test]
fn status_is_unknown_when_the_root_is_unreadable() {
    if !is_root() {
        return;
    }
    let env = Env::new();
    let root = root_with_copies(&env, Duration::ZERO);
    // nobody cannot enter the root (0700 root's): status cannot tell.
    std::fs::set_permissions(env.dir.path(), std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    std::fs::set_permissions(&root, std::os::unix::fs::PermissionsExt::from_mode(0o700)).unwrap();
    let out = Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups", crate::util::BIN, "status", "--root"])
        .arg(&root)
        .env_clear()
        .output()
        .unwrap();
    let p = parse_plugin(&out);
    assert_eq!(p.state, "UNKNOWN", "{p:?}");
    assert!(p.text.contains("cannot read root") && p.text.contains("Permission denied"), "{}", p.text);
}

/// A tmpfs of 1 MiB filled past 90%, the root on it.
#[test]
fn status_warns_when_the_filesystem_is_nearly_full() {
    if !is_root() {
        return;
    }
    let env = Env::new();
    let mnt = env.dir.path().join("small");
    std::fs::create_dir(&mnt).unwrap();
    let mount = Command::new("mount").args(["-t", "tmpfs", "-o", "size=1m,nr_inodes=1000", "tmpfs"]).arg(&mnt).output();
    if !mount.as_ref().is_ok_and(|o| o.status.success()) {
        eprintln!("skipped: cannot mount a tmpfs: {mount:?}");
        return;
    }
    let root = mnt.join("root");
    init(&root);
    copy(&root, "alice", false, Duration::ZERO);
    copy(&root, "alice", true, Duration::ZERO);
    assert_eq!(parse_plugin(&status(&env, &root, &[])).state, "OK");
    std::fs::write(mnt.join("filler"), vec![0u8; 960 * 1024]).unwrap();
    let p = parse_plugin(&status(&env, &root, &[]));
    let _ = Command::new("umount").arg(&mnt).status();
    assert_eq!(p.state, "WARNING", "{p:?}");
    assert!(p.text.contains("% space free on the root's filesystem (warn below 10%)"), "{}", p.text);
    assert!(p.perf("free_space") < 10.0, "{p:?}");
}

#[test]
fn prometheus_file_is_replaced_atomically_and_parses_with_prometheus_client() {
    let env = Env::new();
    let root = root_with_copies(&env, Duration::from_secs(7 * HOUR));
    copy(&root, "bob", false, Duration::from_secs(60));
    let dir = env.dir.path().join("textfile");
    std::fs::create_dir(&dir).unwrap();
    let prom = dir.join("mailkeep.prom");
    std::fs::write(&prom, "old").unwrap();
    let out = status(&env, &root, &["--format", "prometheus", "--out", prom.to_str().unwrap(), "--per-user"]);
    assert_exit(&out, 1); // Sent is 7h old: WARNING
    assert!(out.stdout.is_empty(), "nothing on stdout with --out");
    let names: Vec<_> = std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert_eq!(names, ["mailkeep.prom"], "no temp file left");
    // The real parser: every sample as `name{labels} value`, one per line.
    let script = "import sys\nfrom prometheus_client.parser import text_string_to_metric_families as parse\n\
        for f in parse(open(sys.argv[1]).read()):\n    assert f.documentation, f.name\n    assert f.type == 'gauge', f\n\
        \x20   for s in f.samples:\n        print(s.name, ','.join(k+'='+v for k, v in sorted(s.labels.items())), s.value)\n";
    let parsed = Command::new("/usr/bin/python3").arg("-c").arg(script).arg(&prom).output().unwrap();
    assert!(parsed.status.success(), "prometheus_client refused the file:\n{}", stderr(&parsed));
    let text = String::from_utf8(parsed.stdout).unwrap();
    let value = |name: &str, labels: &str| -> f64 {
        let line = text
            .lines()
            .find(|l| l.starts_with(&format!("{name} {labels} ")))
            .unwrap_or_else(|| panic!("no {name} {labels} in\n{text}"));
        line.rsplit(' ').next().unwrap().parse().unwrap()
    };
    let now = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).unwrap().as_secs_f64();
    assert!((now - value("mailkeep_last_stored_timestamp_seconds", "folder=INBOX")).abs() < 70.0, "{text}");
    let sent = value("mailkeep_last_stored_timestamp_seconds", "folder=Sent");
    assert!((now - 7.0 * HOUR as f64 - sent).abs() < 10.0, "{text}");
    assert!(value("mailkeep_user_last_stored_timestamp_seconds", "folder=INBOX,user=bob") > sent);
    assert_eq!(value("mailkeep_status", ""), 1.0, "Sent is 7h old: WARNING");
    assert!((now - value("mailkeep_status_run_timestamp_seconds", "")).abs() < 10.0);
    assert!(value("mailkeep_root_free_bytes", "") > 0.0);
    let ratio = value("mailkeep_root_free_ratio", "");
    assert!((0.0..=1.0).contains(&ratio), "{ratio}");
    assert!(text.contains("mailkeep_root_free_inodes "), "{text}");
    assert_eq!(value("mailkeep_users", ""), 2.0);
    // Without --per-user, no per-user series; and the verdict is the exit status (1: WARNING).
    let out = status(&env, &root, &["--format", "prometheus"]);
    assert_exit(&out, 1);
    assert!(!String::from_utf8_lossy(&out.stdout).contains("user="), "per-user series without --per-user");
}

#[test]
fn prometheus_says_critical_for_an_unmounted_root() {
    let env = Env::new();
    let out = status(&env, &bare(&env), &["--format", "prometheus"]);
    assert_exit(&out, 2);
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains("\nmailkeep_status 2\n") && text.contains("\nmailkeep_root_initialised 0\n"), "{text}");
}

#[test]
fn json_gives_the_same_facts() {
    let env = Env::new();
    let root = root_with_copies(&env, Duration::from_secs(25 * HOUR));
    let out = status(&env, &root, &["--format", "json", "--per-user"]);
    assert_exit(&out, 2);
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    assert_eq!(doc["status"], "CRITICAL");
    assert_eq!(doc["code"], 2);
    assert_eq!(doc["users"], 1);
    assert!(doc["last_stored"]["INBOX"].as_i64().unwrap() > 1_700_000_000);
    assert_eq!(doc["per_user"]["alice"]["Sent"], doc["last_stored"]["Sent"]);
    assert!(doc["space"]["free_ratio"].as_f64().is_some());
    assert_eq!(doc["findings"][0]["level"], "CRITICAL");
}

#[test]
fn status_ignores_what_is_not_a_mailkeep_user() {
    let env = Env::new();
    let root = root_with_copies(&env, Duration::from_secs(25 * HOUR));
    // Fresh copies in what deliver never writes must not pass for a heartbeat.
    copy(&root, "Alice", false, Duration::ZERO);
    let outside = env.dir.path().join("outside");
    copy(&outside, "x", false, Duration::ZERO);
    std::os::unix::fs::symlink(outside.join("x"), root.join("mallory")).unwrap();
    let p = parse_plugin(&status(&env, &root, &[]));
    assert_eq!(p.state, "CRITICAL", "{p:?}");
    assert_eq!(p.perf("users"), 1.0);
}

/// The real Exim (Debian's exim4, as tests/exim uses it): a message whose two mailkeep copies
/// the transport defers (exit 75) is counted; once bob's is stored, alice's still waits.
#[test]
fn exim_queue_counts_messages_whose_mailkeep_copy_is_deferred() {
    if !is_root() || !Path::new("/usr/sbin/exim4").exists() {
        eprintln!("skipped: needs root and exim4");
        return;
    }
    let env = Env::new();
    let root = root_with_copies(&env, Duration::ZERO);
    let d = env.dir.path();
    std::fs::set_permissions(d, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    for sub in ["spool", "log"] {
        std::fs::create_dir(d.join(sub)).unwrap();
        Command::new("chown").arg("Debian-exim").arg(d.join(sub)).status().unwrap();
    }
    let conf = d.join("exim.conf");
    let transport = |exit: &str| {
        format!(
            "primary_hostname = relay.example.com\nspool_directory = {0}/spool\nlog_file_path = {0}/log/%slog\n\
             keep_environment =\nnever_users = root\n\
             begin routers\nmailkeep_inbox:\n  driver = accept\n  transport = mailkeep_inbox\n\
             begin transports\nmailkeep_inbox:\n  driver = pipe\n  command = /bin/sh -c \"exit {exit}\"\n  user = nobody\n  temp_errors = 75:73\n\
             begin retry\n*  *  F,2h,15m; F,4d,6h\n",
            d.display()
        )
    };
    std::fs::write(&conf, transport("75")).unwrap();
    let wrapper = d.join("exim");
    std::fs::write(&wrapper, format!("#!/bin/sh\nexec /usr/sbin/exim4 -C {} \"$@\"\n", conf.display())).unwrap();
    std::fs::set_permissions(&wrapper, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let _trusted = Trusted::add(&conf);
    let exim = |args: &[&str], stdin: &[u8]| {
        let mut cmd = Command::new(&wrapper);
        cmd.args(args).env_clear().env("PATH", "/usr/bin:/bin");
        crate::util::run_with_stdin(cmd, stdin)
    };
    let queue = |env: &Env| {
        let args = ["--exim-queue", "--exim", wrapper.to_str().unwrap(), "--queue-warn", "0s"];
        parse_plugin(&status(env, &root, &args))
    };
    let p = queue(&env);
    assert_eq!((p.state.as_str(), p.perf("exim_queue_waiting")), ("OK", 0.0), "{p:?}");
    let sent =
        exim(&["-odi", "-f", "sender@example.org", "alice@example.com", "bob@example.com"], b"Subject: t\n\nhi\n");
    assert!(sent.status.success(), "exim: {}", stderr(&sent));
    let p = queue(&env);
    assert_eq!(p.state, "WARNING", "{p:?}");
    assert!(p.text.starts_with("1 queued messages wait for a mailkeep transport"), "{}", p.text);
    assert_eq!(p.perf("exim_queue_waiting"), 1.0);
    // bob's copy is stored, alice's deferred again: the message still waits.
    std::fs::write(&conf, transport("${if eq{$local_part}{bob}{0}{75}}")).unwrap();
    assert!(exim(&["-qff"], b"").status.success());
    let listing = String::from_utf8(exim(&["-bp"], b"").stdout).unwrap();
    assert!(listing.contains("D bob@example.com"), "{listing}");
    assert_eq!(queue(&env).perf("exim_queue_waiting"), 1.0);
    // Both stored: nothing waits.
    std::fs::write(&conf, transport("0")).unwrap();
    assert!(exim(&["-qff"], b"").status.success());
    let p = queue(&env);
    assert_eq!((p.state.as_str(), p.perf("exim_queue_waiting")), ("OK", 0.0), "{p:?}");
}

/// A line in /etc/exim4/trusted_configs for the test's config (Debian's Exim keeps root for
/// deliveries from a -C config only when it is listed), removed again on drop.
struct Trusted(String);

const TRUSTED: &str = "/etc/exim4/trusted_configs";

impl Trusted {
    fn add(conf: &Path) -> Trusted {
        let line = conf.display().to_string();
        let mut text = std::fs::read_to_string(TRUSTED).unwrap_or_default();
        text.push_str(&format!("{line}\n"));
        std::fs::write(TRUSTED, text).unwrap();
        Trusted(line)
    }
}

impl Drop for Trusted {
    fn drop(&mut self) {
        let text = std::fs::read_to_string(TRUSTED).unwrap_or_default();
        let kept: String = text.lines().filter(|l| *l != self.0).map(|l| format!("{l}\n")).collect();
        let _ = std::fs::write(TRUSTED, kept);
    }
}

/// Issue 20 review: a copy dated ahead of the clock (a clock that ran ahead, then was set
/// back) hid a backup that had stopped: its age counted as 0. Past an hour ahead it counts
/// as no copy at all.
#[test]
fn a_copy_dated_far_ahead_of_the_clock_is_no_heartbeat() {
    let env = Env::new();
    let root = env.root();
    init(&root);
    for sent in [false, true] {
        copy(&root, "alice", sent, Duration::ZERO);
        let dir = if sent { root.join("alice/.Sent/new") } else { root.join("alice/new") };
        std::fs::File::open(dir).unwrap().set_modified(SystemTime::now() + Duration::from_secs(365 * DAY)).unwrap();
    }
    let p = parse_plugin(&status(&env, &root, &[]));
    assert_eq!(p.state, "CRITICAL", "{p:?}");
    assert!(p.text.contains("ahead of the clock"), "{}", p.text);
}

/// Issue 20 review: a root given as a symlink (/var/lib/mailkeep -> /srv/backup) is
/// followed, as deliver follows it, instead of being UNKNOWN for good.
#[test]
fn a_root_given_as_a_symlink_is_followed() {
    let env = Env::new();
    let root = root_with_copies(&env, Duration::from_secs(60));
    let link = env.dir.path().join("link");
    std::os::unix::fs::symlink(&root, &link).unwrap();
    assert_eq!(parse_plugin(&status(&env, &link, &[])).state, "OK");
}

/// Issue 20 review: when not one queued message's log can be read (no right to, or Exim's
/// `message_logs = false`), "0 waiting" was a guess reported as OK; it is UNKNOWN.
#[test]
fn exim_queue_is_unknown_when_no_message_log_can_be_read() {
    use std::os::unix::fs::PermissionsExt;
    let env = Env::new();
    let root = root_with_copies(&env, Duration::from_secs(60));
    let exim = env.dir.path().join("exim-no-logs");
    std::fs::write(
        &exim,
        "#!/bin/sh\ncase \"$1\" in\n-bp) printf '25h  2.9K 1tB5yJ-000Abc-Xy <a@x.example>\\n            bob@y.example\\n\\n' ;;\n\
         -Mvl) echo 'exim: permission denied' >&2; exit 1 ;;\nesac\n",
    )
    .unwrap();
    std::fs::set_permissions(&exim, std::fs::Permissions::from_mode(0o755)).unwrap();
    let p = parse_plugin(&status(&env, &root, &["--exim-queue", "--exim", exim.to_str().unwrap()]));
    assert_eq!(p.state, "UNKNOWN", "{p:?}");
}

/// Issue 20 review: on a fresh root every listed user was named at once; a user without a
/// copy yet is measured from the root's initialisation, as the heartbeat is.
#[test]
fn a_fresh_root_names_no_listed_user_before_user_warn_has_passed() {
    let env = Env::new(); // initialised just now by `mailkeep init`
    let root = env.root();
    copy(&root, "alice", false, Duration::from_secs(60));
    copy(&root, "alice", true, Duration::from_secs(60));
    let accounts = env.dir.path().join("accounts");
    std::fs::write(&accounts, "alice\nbob\n").unwrap();
    let p = parse_plugin(&status(&env, &root, &["--accounts", accounts.to_str().unwrap()]));
    assert_eq!(p.state, "OK", "{p:?}");
}
