//! Two relays, one backup root (issue 24): two "hosts" deliver into one root at once, as
//! two MX hosts would over NFS or CephFS, each with its dedup store on its own local disk.
//!
//! Each delivery runs in UTS and PID namespaces of its own (`unshare`, as root): its host
//! name is its relay's, and its pid is 1, as independent pid counters on two machines can
//! coincide. So the file names differ only by time and host name, which must keep them
//! apart; and the same message through both relays is stored twice (each relay's store
//! folds its own copies only).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::util::*;

const RELAYS: [&str; 2] = ["relay-a", "relay-b"];
/// Messages both relays receive (each twice: the provider's split copies) and each one's own.
const SHARED: usize = 12;
const OWN: usize = 6;

fn message(id: &str, user: &str) -> Vec<u8> {
    format!("From: x@outside.example\nTo: {user}@ourdomain.example\nMessage-ID: <{id}@outside.example>\nSubject: {id}\n\nbody of {id}\n")
        .into_bytes()
}

/// `mailkeep deliver` as host `relay`, pid 1 in a PID namespace of its own.
fn deliver_as(relay: &str, root: &Path, store: &Path, user: &str, direction: &str, msg: &[u8]) -> std::process::Output {
    let mut cmd = Command::new("unshare");
    cmd.args([
        "--uts",
        "--pid",
        "--fork",
        "--",
        "/bin/sh",
        "-c",
        r#"hostname "$1" && shift && exec "$@""#,
        "sh",
        relay,
        BIN,
    ]);
    cmd.args(["deliver", "--root"]).arg(root).args(["--user", user, "--direction", direction, "--dedup"]);
    cmd.arg("--dedup-store").arg(store).args(["--rcpt", "x@outside.example", "--log", "none", "--allow-root"]);
    cmd.env_clear().env("PATH", "/usr/bin:/bin:/usr/sbin:/sbin").env("SENDER", "x@outside.example");
    run_with_stdin(cmd, msg)
}

/// What relay `relay` receives: every shared message twice, its own once, for alice's
/// INBOX and bob's Sent folder, in an order of its own.
fn work(relay: usize) -> Vec<(String, &'static str, &'static str)> {
    let mut ids: Vec<String> = (0..SHARED).flat_map(|i| [format!("shared{i}"), format!("shared{i}")]).collect();
    ids.extend((0..OWN).map(|i| format!("{}-own{i}", RELAYS[relay])));
    if relay == 1 {
        ids.reverse();
    }
    ids.into_iter().flat_map(|id| [(id.clone(), "alice", "in"), (id, "bob", "out")]).collect()
}

/// The Message-ID of a stored file (the line our fixture wrote).
fn message_id(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap();
    let line = text
        .lines()
        .find(|l| l.starts_with("Message-ID: <"))
        .unwrap_or_else(|| panic!("{}: no Message-ID", path.display()));
    line.trim_start_matches("Message-ID: <").trim_end_matches("@outside.example>").to_string()
}

/// The host part of a Maildir name `<secs>.M<usec>P<pid>Q<n>.<host>,S=<size>`.
fn host_and_pid(name: &str) -> (String, String) {
    let (stem, _) = name.split_once(",S=").unwrap_or((name, ""));
    let mut parts = stem.splitn(3, '.');
    let (_, unique, host) = (parts.next(), parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    let pid = unique.split_once('P').map(|(_, r)| r.split('Q').next().unwrap_or("")).unwrap_or("");
    (host.to_string(), pid.to_string())
}

/// As root (CI is) this test must run: no `unshare`, or namespaces refused, fails it
/// loudly instead of passing as skipped.
fn require_namespaces() {
    let probe = Command::new("unshare").args(["--uts", "--pid", "--fork", "--", "true"]).output();
    match probe {
        Ok(out) if out.status.success() => {}
        Ok(out) => panic!(
            "run as root, this test needs UTS and PID namespaces: unshare --uts --pid failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ),
        Err(e) => panic!("run as root, this test needs unshare (util-linux) in PATH: {e}"),
    }
}

#[test]
fn two_relays_with_their_own_host_names_write_one_root_at_once_and_lose_nothing() {
    if !is_root() {
        eprintln!("skipped: needs root (UTS and PID namespaces)");
        return;
    }
    require_namespaces();
    let env = Env::new();
    let root = env.root();
    let stores: Vec<PathBuf> = RELAYS.iter().map(|r| env.dir.path().join(r).join("dedup.sqlite3")).collect();
    for store in &stores {
        std::fs::create_dir(store.parent().unwrap()).unwrap();
    }
    // Both relays at once, two workers each.
    let failures: Vec<String> = std::thread::scope(|s| {
        let workers: Vec<_> = (0..RELAYS.len())
            .flat_map(|r| (0..2).map(move |w| (r, w)))
            .map(|(r, w)| {
                let (root, store) = (&root, &stores[r]);
                s.spawn(move || {
                    let mut failed = Vec::new();
                    for (id, user, dir) in work(r).into_iter().skip(w).step_by(2) {
                        let out = deliver_as(RELAYS[r], root, store, user, dir, &message(&id, user));
                        if !out.status.success() {
                            failed.push(format!(
                                "{} {id} {user}: exit {:?}: {}",
                                RELAYS[r],
                                out.status.code(),
                                stderr(&out)
                            ));
                        }
                    }
                    failed
                })
            })
            .collect();
        workers.into_iter().flat_map(|w| w.join().unwrap()).collect()
    });
    assert!(failures.is_empty(), "every delivery must exit 0, got:\n{}", failures.join("\n"));

    for folder in ["alice", "bob/.Sent"] {
        let files = env.new_files(folder);
        let mut by_id: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for f in &files {
            let name = f.file_name().unwrap().to_str().unwrap().to_string();
            let (host, pid) = host_and_pid(&name);
            assert!(RELAYS.contains(&host.as_str()), "{folder}: {name} carries no relay's host name");
            assert_eq!(pid, "1", "{folder}: {name}: every delivery is pid 1 in its namespace");
            by_id.entry(message_id(f)).or_default().push(host);
        }
        let mut expected: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for i in 0..SHARED {
            expected.insert(format!("shared{i}"), RELAYS.iter().map(|r| r.to_string()).collect());
        }
        for r in RELAYS {
            for i in 0..OWN {
                expected.insert(format!("{r}-own{i}"), vec![r.to_string()]);
            }
        }
        for hosts in by_id.values_mut() {
            hosts.sort();
        }
        assert_eq!(
            by_id, expected,
            "{folder}: expected each shared message once per relay (twice in all) and each relay's own once; got (left) vs expected (right)"
        );
        let tmp = files_below(&root.join(folder).join("tmp"));
        assert!(tmp.is_empty(), "{folder}: nothing may be left in tmp/, got {tmp:?}");
    }
    let check = env.run(["check", "--root", root.to_str().unwrap()], &[], b"");
    assert_exit(&check, 0);
    // Each relay's store knows its own copies only: the shared and its own messages.
    for store in &stores {
        let out = env.run(
            ["dedup", "stats", "--root", root.to_str().unwrap(), "--dedup-store", store.to_str().unwrap()],
            &[],
            b"",
        );
        assert_exit(&out, 0);
        let text = String::from_utf8_lossy(&out.stdout);
        let keys = SHARED + OWN;
        for want in [format!("user=alice folder=INBOX keys={keys} "), format!("user=bob folder=Sent keys={keys} ")] {
            assert!(text.contains(&want), "{}: expected {want:?} in:\n{text}", store.display());
        }
    }
}
