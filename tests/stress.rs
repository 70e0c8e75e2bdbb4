//! Load (issue 8): 4 concurrent writers deliver to 50 users in both directions with `--dedup`,
//! 10% of the messages arriving twice at the same moment (the provider's extra copies). Every
//! folder must end with exactly one file per message, no tmp/ leftovers, and no delivery may
//! fail: a busy store makes a delivery wait or exit 75, which is retried as Exim would.
//!
//! CI delivers 800 messages; `MAILKEEP_LONG=1` the 20 000. Throughput and the p50/p99
//! delivery times go to target/tmp/mailkeep-reliability/stress.txt (and stderr).

use std::collections::{BTreeMap, HashSet};
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use crate::faults::{Delivery, Rng, names_in, report, scaled};
use crate::util::*;

const WRITERS: usize = 4;
const USERS: usize = 50;

/// One delivery to make: the message number, its user and direction.
#[derive(Clone, Copy)]
struct Job {
    msg: usize,
    user: usize,
    out: bool,
    size: usize,
}

/// What happened to one delivery.
struct Done {
    job: Job,
    started: Duration,
    took: Duration,
    retries: usize,
}

fn message(job: &Job) -> Vec<u8> {
    let mut m = format!(
        "From: u{:02}@ourdomain.example\nTo: someone@outside.example\nSubject: stress {}\nMessage-ID: <s{}@stress.example>\n\n",
        job.user, job.msg, job.msg
    )
    .into_bytes();
    while m.len() < job.size {
        m.extend_from_slice(b"Lorem ipsum dolor sit amet, consectetur adipiscing elit.\n");
    }
    m
}

#[test]
fn four_writers_with_dedup_and_concurrent_duplicates_store_each_message_exactly_once() {
    let messages = scaled(800, 20_000);
    let mut rng = Rng::new("stress");
    let env = Env::new();
    let root = env.root();
    // Every tenth message is followed at once by its duplicate, so two writers take the two
    // copies at the same moment.
    let mut jobs = Vec::with_capacity(messages + messages / 10);
    for msg in 0..messages {
        let job = Job {
            msg,
            user: rng.below(USERS as u64) as usize,
            out: rng.below(2) == 1,
            size: 300 + rng.below(6000) as usize,
        };
        jobs.push(job);
        if msg % 10 == 0 {
            jobs.push(job);
        }
    }
    let next = AtomicUsize::new(0);
    let done: Mutex<Vec<Done>> = Mutex::new(Vec::with_capacity(jobs.len()));
    let failures: Mutex<Vec<String>> = Mutex::new(Vec::new());
    let t0 = Instant::now();
    std::thread::scope(|s| {
        for _ in 0..WRITERS {
            s.spawn(|| {
                loop {
                    let i = next.fetch_add(1, Ordering::SeqCst);
                    let Some(&job) = jobs.get(i) else { break };
                    let d = Delivery::new(&format!("u{:02}", job.user), job.out, message(&job)).dedup();
                    let started = t0.elapsed();
                    let mut retries = 0;
                    loop {
                        let (code, err) = d.run(&root);
                        match code {
                            0 => break,
                            // Exim defers and retries; here after a short pause.
                            75 | 73 if retries < 20 => {
                                retries += 1;
                                eprintln!("stress: message {} deferred ({code}), retrying: {}", job.msg, err.trim());
                                std::thread::sleep(Duration::from_millis(50));
                            }
                            _ => {
                                failures.lock().unwrap().push(format!(
                                    "message {}: exit {code}: {}",
                                    job.msg,
                                    err.trim()
                                ));
                                break;
                            }
                        }
                    }
                    let took = t0.elapsed() - started;
                    done.lock().unwrap().push(Done { job, started, took, retries });
                }
            });
        }
    });
    let elapsed = t0.elapsed();
    let failures = failures.into_inner().unwrap();
    assert!(failures.is_empty(), "{} deliveries failed:\n{}", failures.len(), failures.join("\n"));
    let done = done.into_inner().unwrap();

    // Exactly one file per message in its folder, each the message it should be.
    let mut want: BTreeMap<String, HashSet<usize>> = BTreeMap::new();
    for j in &jobs {
        let folder = if j.out { format!("u{:02}/.Sent", j.user) } else { format!("u{:02}", j.user) };
        want.entry(folder).or_default().insert(j.msg);
    }
    let mut wrong = Vec::new();
    for (folder, msgs) in &want {
        let names = names_in(&root.join(folder).join("new"));
        let mut seen = HashSet::new();
        for n in &names {
            let bytes = std::fs::read(root.join(folder).join("new").join(n)).unwrap();
            let text = String::from_utf8_lossy(&bytes);
            let id: usize =
                text.split("Message-ID: <s").nth(1).and_then(|r| r.split('@').next()?.parse().ok()).unwrap();
            if !msgs.contains(&id) || !seen.insert(id) {
                wrong.push(format!("{folder}: message {id} stored twice or in the wrong folder"));
            }
            let expected_size = size_in_name(&root.join(folder).join("new").join(n));
            if expected_size != bytes.len() as u64 {
                wrong.push(format!("{folder}/{n}: ,S={expected_size} but {} bytes", bytes.len()));
            }
        }
        if names.len() != msgs.len() {
            wrong.push(format!("{folder}: expected {} messages, got {}", msgs.len(), names.len()));
        }
        let tmp = names_in(&root.join(folder).join("tmp"));
        if !tmp.is_empty() {
            wrong.push(format!("{folder}: tmp/ leftovers {tmp:?}"));
        }
    }
    assert!(wrong.is_empty(), "{} problems:\n{}", wrong.len(), wrong.join("\n"));

    // Figures.
    let mut times: Vec<Duration> = done.iter().map(|d| d.took).collect();
    times.sort();
    let pct = |p: f64| times[((times.len() - 1) as f64 * p).round() as usize];
    let retried: usize = done.iter().map(|d| d.retries).sum();
    // Duplicate pairs whose two deliveries overlapped in time.
    let mut by_msg: BTreeMap<usize, Vec<(Duration, Duration)>> = BTreeMap::new();
    for d in &done {
        by_msg.entry(d.job.msg).or_default().push((d.started, d.started + d.took));
    }
    let pairs: Vec<_> = by_msg.values().filter(|v| v.len() == 2).collect();
    let overlapping = pairs.iter().filter(|v| v[0].0 < v[1].1 && v[1].0 < v[0].1).count();
    let folders = want.len();
    let fs = std::process::Command::new("stat")
        .args(["-f", "-c", "%T"])
        .arg(&root)
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default();
    let text = format!(
        "writers={WRITERS} users={USERS} folders={folders} messages={messages} deliveries={} (duplicate copies={}, \
         of which overlapping in time={overlapping}) filesystem={fs}\n\
         seconds={:.1} throughput={:.0} deliveries/s p50={:.1}ms p99={:.1}ms max={:.1}ms\n\
         exit 75 retried={retried} failed=0 wrong counts=0 tmp leftovers=0\n",
        done.len(),
        pairs.len(),
        elapsed.as_secs_f64(),
        done.len() as f64 / elapsed.as_secs_f64(),
        pct(0.5).as_secs_f64() * 1e3,
        pct(0.99).as_secs_f64() * 1e3,
        times.last().unwrap().as_secs_f64() * 1e3,
    );
    report("stress", &text);
}

/// Many first deliveries creating the dedup store at the same moment: none may defer. (SQLite
/// reports some lock conflicts in its initial rollback mode at once, "database is locked",
/// instead of waiting; mailkeep must wait for them as for any busy store.)
#[test]
fn first_deliveries_creating_the_dedup_store_at_once_all_succeed() {
    let rounds = scaled(60, 500);
    let mut deferred = Vec::new();
    for round in 0..rounds {
        let env = Env::new();
        let root = env.root();
        let children: Vec<_> = (0..12)
            .map(|i| {
                let d =
                    Delivery::new(&format!("u{i}"), false, format!("Message-ID: <c{round}.{i}@x>\n\nbody\n")).dedup();
                let mut cmd = d.command(&root);
                cmd.stdin(std::process::Stdio::piped()).stdout(std::process::Stdio::null());
                cmd.stderr(std::process::Stdio::piped());
                let mut child = cmd.spawn().unwrap();
                use std::io::Write;
                child.stdin.take().unwrap().write_all(&d.message).unwrap();
                child
            })
            .collect();
        for c in children {
            let out = c.wait_with_output().unwrap();
            if !out.status.success() {
                deferred.push(format!(
                    "round {round}: {:?}: {}",
                    out.status.code(),
                    String::from_utf8_lossy(&out.stderr).trim()
                ));
            }
        }
    }
    report(
        "store-creation-race",
        &format!("rounds={rounds} x 12 first deliveries at once, deferred={}\n", deferred.len()),
    );
    assert!(deferred.is_empty(), "{} of {} deliveries deferred:\n{}", deferred.len(), rounds * 12, deferred.join("\n"));
}
