//! Faults (issue 8): `mailkeep deliver` and `replay` killed at random moments and at every
//! system call, every system call made to fail, full, read-only and size-limited filesystems,
//! broken permissions and symlinks planted below the root. After each: a message is complete
//! in new/ or absent from new/ and cur/, exit 0 means a complete copy, every failure is 75,
//! nothing is written outside the root, and the retry Exim would make stores the message.
//!
//! The fast part runs with `cargo test`; `MAILKEEP_LONG=1` runs the long counts (see
//! docs/RELIABILITY.md). Each scenario writes its figures to `target/tmp/mailkeep-reliability/`.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::fs::File;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::Pid;

use crate::util::*;

// ---------------------------------------------------------------------------------------------
// Shared helpers (also used by props.rs and stress.rs)
// ---------------------------------------------------------------------------------------------

/// True when the long runs are asked for (`MAILKEEP_LONG=1`).
pub fn long() -> bool {
    std::env::var_os("MAILKEEP_LONG").is_some_and(|v| !v.is_empty() && v != "0")
}

/// `ci` normally, `long_n` with `MAILKEEP_LONG=1`; `MAILKEEP_TRIALS=N` overrides both.
pub fn scaled(ci: usize, long_n: usize) -> usize {
    if let Some(n) = std::env::var("MAILKEEP_TRIALS").ok().and_then(|v| v.parse().ok()) {
        return n;
    }
    if long() { long_n } else { ci }
}

/// A small reproducible PRNG (xorshift64*). The seed comes from `MAILKEEP_SEED` or the clock
/// and is printed, so a failing run can be repeated.
pub struct Rng(u64);

impl Rng {
    pub fn new(what: &str) -> Rng {
        let seed = std::env::var("MAILKEEP_SEED").ok().and_then(|v| v.parse().ok()).unwrap_or_else(|| {
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos() as u64
        });
        eprintln!("{what}: MAILKEEP_SEED={seed}");
        Rng(seed | 1)
    }

    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }

    pub fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// Writes a scenario's figures to `target/tmp/mailkeep-reliability/<name>.txt` and stderr.
pub fn report(name: &str, text: &str) {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("mailkeep-reliability");
    let _ = std::fs::create_dir_all(&dir);
    let _ = std::fs::write(dir.join(format!("{name}.txt")), text);
    eprintln!("== {name}\n{text}");
}

/// The names in a directory that do not start with a dot, sorted; none if it is missing.
pub fn names_in(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = match std::fs::read_dir(dir) {
        Ok(rd) => rd.filter_map(|e| e.ok()?.file_name().into_string().ok()).filter(|n| !n.starts_with('.')).collect(),
        Err(_) => vec![],
    };
    v.sort();
    v
}

/// Every path below `dir` with its bytes (None for a directory, the target for a symlink).
pub fn snapshot(dir: &Path) -> BTreeMap<PathBuf, Option<Vec<u8>>> {
    let mut out = BTreeMap::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        let Ok(rd) = std::fs::read_dir(&d) else { continue };
        for e in rd.flatten() {
            let p = e.path();
            let m = std::fs::symlink_metadata(&p).unwrap();
            let rel = p.strip_prefix(dir).unwrap().to_path_buf();
            if m.is_dir() {
                todo.push(p);
                out.insert(rel, None);
            } else if m.file_type().is_symlink() {
                out.insert(rel, Some(std::fs::read_link(&p).unwrap().into_os_string().into_encoded_bytes()));
            } else {
                out.insert(rel, Some(std::fs::read(&p).unwrap_or_default()));
            }
        }
    }
    out
}

/// A directory on tmpfs for tests where fsync latency only costs time (else the temp dir).
pub fn shm() -> PathBuf {
    let p = Path::new("/dev/shm");
    if p.is_dir() { p.to_path_buf() } else { std::env::temp_dir() }
}

/// One delivery as Exim's pipe transport would run it.
#[derive(Clone, Debug)]
pub struct Delivery {
    pub user: String,
    pub out: bool,
    pub dedup: bool,
    pub rcpts: Vec<String>,
    pub sender: String,
    pub message: Vec<u8>,
}

impl Delivery {
    pub fn new(user: &str, out: bool, message: impl Into<Vec<u8>>) -> Delivery {
        let rcpts = if out {
            vec!["x1@outside.example".into(), "x2@outside.example".into(), "x3@outside.example".into()]
        } else {
            vec!["box@ourdomain.example".into()]
        };
        let sender = if out { "owner@ourdomain.example" } else { "someone@outside.example" };
        Delivery { user: user.into(), out, dedup: false, rcpts, sender: sender.into(), message: message.into() }
    }

    pub fn dedup(mut self) -> Delivery {
        self.dedup = true;
        self
    }

    /// The folder below the root: `user` or `user/.Sent`.
    pub fn folder(&self) -> String {
        if self.out { format!("{}/.Sent", self.user) } else { self.user.clone() }
    }

    pub fn args(&self, root: &Path) -> Vec<OsString> {
        let mut a: Vec<OsString> = vec!["deliver".into(), "--root".into(), root.into(), "--log".into(), "none".into()];
        a.extend(["--user".into(), self.user.clone().into(), "--direction".into()]);
        a.push(if self.out { "out" } else { "in" }.into());
        for r in &self.rcpts {
            a.extend(["--rcpt".into(), r.into()]);
        }
        a.push(format!("--sender={}", self.sender).into());
        if self.dedup {
            a.push("--dedup".into());
        }
        if is_root() {
            a.push("--allow-root".into());
        }
        a
    }

    /// The command, with a cleaned environment; stdin is the caller's to set.
    pub fn command(&self, root: &Path) -> Command {
        let mut c = Command::new(BIN);
        c.args(self.args(root)).env_clear().env("PATH", "/usr/bin:/bin");
        c
    }

    /// Runs it to the end with the message on stdin: (exit status or -signal, stderr).
    pub fn run(&self, root: &Path) -> (i32, String) {
        finish(run_with_stdin(self.command(root), &self.message))
    }
}

/// (exit status, or minus the signal that ended it; stderr).
pub fn finish(out: std::process::Output) -> (i32, String) {
    use std::os::unix::process::ExitStatusExt;
    let code = out.status.code().unwrap_or_else(|| -out.status.signal().unwrap_or(0));
    (code, String::from_utf8_lossy(&out.stderr).into_owned())
}

/// A message carrying `token` (same length for every token) and `body_len` body bytes.
pub fn message_with(token: &str, body_len: usize) -> Vec<u8> {
    let mut m = format!(
        "From: Someone <someone@outside.example>\nTo: box@ourdomain.example\nSubject: fault {token}\n\
         Message-ID: <{token}@faults.example>\nDate: Wed, 01 Jan 2020 00:00:00 +0000\n\n"
    )
    .into_bytes();
    let line = b"The quick brown fox jumps over the lazy dog, 0123456789 times.\n";
    while m.len() < body_len {
        m.extend_from_slice(line);
    }
    m
}

/// The files in `ROOT/<folder>/new` whose first 2 KiB (where the Subject is) contain `token`.
fn copies_with(root: &Path, folder: &str, token: &str) -> Vec<PathBuf> {
    let dir = root.join(folder).join("new");
    let has_token = |p: &Path| {
        use std::io::Read;
        let mut head = Vec::with_capacity(2048);
        File::open(p).and_then(|f| f.take(2048).read_to_end(&mut head)).is_ok()
            && head.windows(token.len()).any(|w| w == token.as_bytes())
    };
    names_in(&dir).into_iter().map(|n| dir.join(n)).filter(|p| has_token(p)).collect()
}

/// Checks that every copy of `token` in new/ is complete (exactly `want`, right `,S=`), that
/// cur/ holds no copy, and returns how many copies there are.
#[track_caller]
fn complete_copies(root: &Path, folder: &str, token: &str, want: &[u8], ctx: &str) -> usize {
    let copies = copies_with(root, folder, token);
    for c in &copies {
        let got = std::fs::read(c).unwrap();
        assert_bytes_eq(&format!("{ctx}: copy {}", c.display()), want, &got);
        assert_eq!(size_in_name(c), got.len() as u64, "{ctx}: ,S= of {}", c.display());
    }
    let cur = names_in(&root.join(folder).join("cur"));
    assert!(cur.is_empty(), "{ctx}: nothing is ever stored in cur/, found {cur:?}");
    copies.len()
}

/// The contents of the files in `ROOT/<folder>/tmp` that are not in `before`.
fn tmp_since(root: &Path, folder: &str, before: &[String]) -> Vec<Vec<u8>> {
    let dir = root.join(folder).join("tmp");
    names_in(&dir).into_iter().filter(|n| !before.contains(n)).filter_map(|n| std::fs::read(dir.join(n)).ok()).collect()
}

/// The stored bytes of `d` with its token `from` changed to `to` (tokens have equal length).
fn retoken(reference: &[u8], from: &str, to: &str) -> Vec<u8> {
    assert_eq!(from.len(), to.len());
    let mut out = reference.to_vec();
    let mut i = 0;
    while i + from.len() <= out.len() {
        if &out[i..i + from.len()] == from.as_bytes() {
            out[i..i + from.len()].copy_from_slice(to.as_bytes());
            i += from.len();
        } else {
            i += 1;
        }
    }
    out
}

/// Stores `d` once in a scratch root and returns the stored bytes and how long it took.
fn reference(d: &Delivery) -> (Vec<u8>, Duration) {
    let env = Env::new();
    let t = Instant::now();
    let (code, err) = d.run(&env.root());
    let took = t.elapsed();
    assert_eq!(code, 0, "reference delivery failed: {err}");
    let files = env.new_files(&d.folder());
    assert_eq!(files.len(), 1);
    (std::fs::read(&files[0]).unwrap(), took)
}

// ---------------------------------------------------------------------------------------------
// Crashes: SIGKILL at random moments
// ---------------------------------------------------------------------------------------------

/// Where a delivery was when it was stopped, as the files show it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Moment {
    /// No tmp file yet: starting, reading, opening the folder or the dedup store.
    BeforeTmpFile,
    /// The tmp file is shorter than the message.
    DuringWrite,
    /// The tmp file is whole but not linked: the fsync, or just before the link.
    WrittenNotLinked,
    /// Linked into new/ and the tmp name still there: the fsync of new/, or just before unlink.
    LinkedTmpPresent,
    /// Published, tmp file gone: the sweep, the dedup commit, exiting.
    Published,
    /// The process had already exited.
    Exited,
}

struct KillConfig {
    name: &'static str,
    out: bool,
    dedup: bool,
    body: usize,
    /// A new user (maildir created in the window) or a new root (dedup store created too).
    fresh_user: bool,
    fresh_root: bool,
}

const KILL_CONFIGS: &[KillConfig] = &[
    KillConfig { name: "in, new maildir", out: false, dedup: false, body: 300, fresh_user: true, fresh_root: false },
    KillConfig { name: "in, existing", out: false, dedup: false, body: 2000, fresh_user: false, fresh_root: false },
    KillConfig { name: "out+dedup, existing", out: true, dedup: true, body: 300, fresh_user: false, fresh_root: false },
    KillConfig {
        name: "in, 1 MiB (16 writes)",
        out: false,
        dedup: false,
        body: 1 << 20,
        fresh_user: false,
        fresh_root: false,
    },
    KillConfig { name: "in+dedup, new root", out: false, dedup: true, body: 300, fresh_user: true, fresh_root: true },
];

/// Starts `cmd`; with `feed`, writes it to the child's stdin in 16 KiB pieces with short pauses,
/// as Exim feeds a pipe (so "during the write" lasts a while).
fn spawn_fed(mut cmd: Command, feed: Option<Vec<u8>>) -> (std::process::Child, Option<std::thread::JoinHandle<()>>) {
    if feed.is_some() {
        cmd.stdin(Stdio::piped());
    }
    let mut child = cmd.spawn().expect("spawn mailkeep");
    let writer = feed.map(|data| {
        let mut pipe = child.stdin.take().unwrap();
        std::thread::spawn(move || {
            use std::io::Write;
            for piece in data.chunks(16 * 1024) {
                if pipe.write_all(piece).is_err() {
                    return;
                }
                std::thread::sleep(Duration::from_micros(150));
            }
        })
    });
    (child, writer)
}

/// Starts `cmd`, stops it with SIGSTOP after `delay`, looks at the files, then SIGKILLs it.
/// Returns the moment seen, or the exit status if it had finished.
fn stop_look_kill(
    cmd: Command,
    feed: Option<Vec<u8>>,
    delay: Duration,
    look: impl FnOnce() -> Moment,
) -> (Moment, Option<i32>) {
    let (child, writer) = spawn_fed(cmd, feed);
    let pid = Pid::from_raw(child.id() as i32);
    let t0 = Instant::now();
    if delay > Duration::from_millis(3) {
        std::thread::sleep(delay - Duration::from_millis(2));
    }
    while t0.elapsed() < delay {
        std::hint::spin_loop();
    }
    let _ = kill(pid, Signal::SIGSTOP);
    let result = match waitpid(pid, Some(WaitPidFlag::WUNTRACED)).unwrap() {
        WaitStatus::Stopped(..) => {
            let moment = look();
            kill(pid, Signal::SIGKILL).unwrap();
            let st = waitpid(pid, None).unwrap();
            assert!(matches!(st, WaitStatus::Signaled(_, Signal::SIGKILL, _)), "{st:?}");
            (moment, None)
        }
        WaitStatus::Exited(_, code) => (Moment::Exited, Some(code)),
        other => panic!("unexpected wait status {other:?}"),
    };
    drop(child);
    if let Some(w) = writer {
        w.join().unwrap();
    }
    result
}

#[test]
fn killed_delivery_leaves_a_complete_copy_or_none_and_the_retry_stores_it() {
    let trials = scaled(1000, 10_000);
    let mut rng = Rng::new("kill trials");
    // On the disk (the temp dir), so that the fsyncs take their real time and get killed in.
    let env = Env::new();
    let on = "disk";
    let mut stats: BTreeMap<(&str, Moment), usize> = BTreeMap::new();
    let mut linked_then_duplicated = 0;
    let started = Instant::now();
    for (ci, cfg) in KILL_CONFIGS.iter().enumerate() {
        let token0 = format!("K{ci}T000000");
        let proto = Delivery::new("alice", cfg.out, message_with(&token0, cfg.body));
        let proto = if cfg.dedup { proto.dedup() } else { proto };
        let (want0, _) = reference(&proto);
        let n = trials / KILL_CONFIGS.len();
        let shared_root = env.dir.path().join(format!("shared{ci}"));
        crate::util::init_root(&shared_root);
        let msg_file = env.dir.path().join(format!("msg{ci}"));
        // A trial's delivery and root, made the same way for the timing runs (`C`) and the
        // trials (`T`): a new user, a new root, or the shared root.
        let setup = |kind: char, t: usize| {
            let token = format!("K{ci}{kind}{t:06}");
            let mut d = proto.clone();
            d.message = retoken(&proto.message, &token0, &token);
            if cfg.fresh_user {
                d.user = format!("u{}{t}", kind.to_ascii_lowercase());
            }
            let root = if cfg.fresh_root {
                let r = env.dir.path().join(format!("root{ci}-{kind}{t}"));
                crate::util::init_root(&r);
                r
            } else {
                shared_root.clone()
            };
            std::fs::write(&msg_file, &d.message).unwrap();
            let mut cmd = d.command(&root);
            cmd.stdin(File::open(&msg_file).unwrap()).stdout(Stdio::null()).stderr(Stdio::null());
            // A big message comes through a pipe, fed as Exim would.
            let feed = (cfg.body >= 1 << 20).then(|| d.message.clone());
            (token, d, root, cmd, feed)
        };
        // The window to kill in: the median of five whole runs after a first one.
        let mut times: Vec<Duration> = (0..6)
            .map(|i| {
                let (_, _, _, cmd, feed) = setup('C', i);
                let t = Instant::now();
                let (mut child, writer) = spawn_fed(cmd, feed);
                assert!(child.wait().unwrap().success(), "{}: timing run failed", cfg.name);
                let took = t.elapsed();
                if let Some(w) = writer {
                    w.join().unwrap();
                }
                took
            })
            .skip(1)
            .collect();
        times.sort();
        let window = times[times.len() / 2];
        // The earliest delay at which a trial found the tmp file (or had finished).
        let mut busy_from: Option<Duration> = None;
        for t in 0..n {
            let (token, d, root, cmd, feed) = setup('T', t);
            let want = retoken(&want0, &token0, &token);
            let folder = d.folder();
            // Stratified: the first fifth of the trials each get their own slice of the whole
            // run; the rest their own slice of the stretch from the first moment a tmp file was
            // seen to the end, where the write, the fsyncs and the link are.
            let first = n / 5;
            let delay = if t < first {
                window.mul_f64((t as f64 + rng.unit()) / first as f64)
            } else {
                let from = busy_from.unwrap_or(window.mul_f64(0.5)).mul_f64(0.95);
                let span = window.mul_f64(1.1).saturating_sub(from);
                from + span.mul_f64(((t - first) as f64 + rng.unit()) / (n - first) as f64)
            };
            let ctx = format!("{} trial {t} (killed at {delay:?})", cfg.name);
            let tmp_before = names_in(&root.join(&folder).join("tmp"));
            let (moment, code) = stop_look_kill(cmd, feed, delay, || {
                let tmp = tmp_since(&root, &folder, &tmp_before);
                match (copies_with(&root, &folder, &token).len(), tmp.first()) {
                    (0, None) => Moment::BeforeTmpFile,
                    (0, Some(b)) if b.len() < want.len() => Moment::DuringWrite,
                    (0, Some(_)) => Moment::WrittenNotLinked,
                    (_, Some(_)) => Moment::LinkedTmpPresent,
                    (_, None) => Moment::Published,
                }
            });
            *stats.entry((cfg.name, moment)).or_default() += 1;
            if moment != Moment::BeforeTmpFile {
                busy_from = Some(busy_from.map_or(delay, |b| b.min(delay)));
            }
            let copies = complete_copies(&root, &folder, &token, &want, &ctx);
            assert!(copies <= 1, "{ctx}: {copies} copies after one delivery");
            if let Some(code) = code {
                assert_eq!(code, 0, "{ctx}: exited on its own with {code}");
                assert_eq!(copies, 1, "{ctx}: exit 0 without a complete copy in new/");
                assert!(tmp_since(&root, &folder, &tmp_before).is_empty(), "{ctx}: exit 0 left a tmp file");
                continue;
            }
            let linked = matches!(moment, Moment::LinkedTmpPresent | Moment::Published);
            assert_eq!(copies, usize::from(linked), "{ctx}: seen {moment:?} while stopped, {copies} copies after");
            for partial in tmp_since(&root, &folder, &tmp_before) {
                assert!(want.starts_with(&partial), "{ctx}: tmp/ holds something that is no prefix of the message");
            }
            // Exim retries: the message must end up stored, once more at most.
            let (code, err) = d.run(&root);
            assert_eq!(code, 0, "{ctx}: the retry failed: {err}");
            let after = complete_copies(&root, &folder, &token, &want, &ctx);
            if cfg.dedup {
                assert!(after == 1 || (linked && after == 2), "{ctx}: {after} copies after the retry ({moment:?})");
            } else {
                assert_eq!(after, 1 + usize::from(linked), "{ctx}: copies after the retry ({moment:?})");
            }
            linked_then_duplicated += usize::from(after == 2);
        }
    }
    let mut text = format!(
        "trials={} on {on} (each killed at a different moment; stratified over the run), failures=0, seconds={:.1}\n",
        stats.values().sum::<usize>(),
        started.elapsed().as_secs_f64()
    );
    for ((cfg, moment), n) in &stats {
        text.push_str(&format!("  {cfg:<24} {moment:?}: {n}\n"));
    }
    text.push_str(&format!("retries that stored a second copy (killed after the link): {linked_then_duplicated}\n"));
    report("kill-random", &text);
    // Enough trials must have hit each stretch of a delivery (the strace test hits every call).
    if trials >= 500 {
        let hit = |ms: &[Moment]| stats.keys().any(|(_, m)| ms.contains(m));
        for ms in [
            &[Moment::BeforeTmpFile][..],
            &[Moment::DuringWrite],
            &[Moment::WrittenNotLinked, Moment::LinkedTmpPresent, Moment::Published],
            &[Moment::Exited],
        ] {
            assert!(hit(ms), "no trial was killed at {ms:?}:\n{text}");
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Crashes and errors at every system call (strace fault injection)
// ---------------------------------------------------------------------------------------------

fn need_strace() {
    let ok = Command::new("strace").arg("-V").output().is_ok_and(|o| o.status.success());
    assert!(ok, "strace is needed for the fault-injection tests (apt-get install strace)");
}

/// One system call of a trace: its name and the whole line.
#[derive(Debug, Clone)]
struct Call {
    name: String,
    line: String,
}

/// The calls of an `strace -f -o` file, in order.
fn parse_trace(text: &str) -> Vec<Call> {
    text.lines()
        .filter_map(|l| {
            let rest = l.split_once(' ').map_or(l, |(_, r)| r).trim_start();
            let paren = rest.find('(')?;
            let name = &rest[..paren];
            if name.is_empty() || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
                return None;
            }
            Some(Call { name: name.to_string(), line: rest.to_string() })
        })
        .collect()
}

/// True when the trace shows a link into new/ that completed.
fn trace_linked(calls: &[Call]) -> bool {
    calls.iter().any(|c| c.name == "linkat" && c.line.contains(",S=") && c.line.trim_end().ends_with("= 0"))
}

/// Runs `d` under strace with `inject` (e.g. `fsync:error=EIO:when=2`), returning the exit
/// status (or -signal), stderr and the calls it made.
fn run_traced(
    d: &Delivery,
    root: &Path,
    msg_file: &Path,
    trace: &Path,
    inject: Option<&str>,
) -> (i32, String, Vec<Call>) {
    let mut cmd = Command::new("strace");
    cmd.args(["-f", "-y", "-s", "80", "-o"]).arg(trace);
    if let Some(spec) = inject {
        cmd.args(["-e", &format!("inject={spec}")]);
    }
    cmd.arg(BIN).args(d.args(root)).env_clear().env("PATH", "/usr/bin:/bin");
    cmd.stdin(File::open(msg_file).unwrap()).stdout(Stdio::null()).stderr(Stdio::piped());
    let (code, err) = finish(cmd.output().unwrap());
    // strace prints its own lines about the injected signal; keep mailkeep's.
    let err: String = err.lines().filter(|l| l.starts_with("mailkeep")).map(|l| format!("{l}\n")).collect();
    let calls = parse_trace(&std::fs::read_to_string(trace).unwrap());
    (code, err, calls)
}

/// System calls not made to fail: memory, signals, exit and time (a failing mmap makes Rust
/// abort, see docs/RELIABILITY.md), and SQLite's fcntl locks, which do not fail on a local
/// filesystem and, made to, only make SQLite wait out its 10 to 30 s busy timeout before the
/// same outcomes (they are still killed at).
const NOT_FAILED: &[&str] = &["fcntl"];

/// System calls not injected at all (see NOT_FAILED).
const NOT_INJECTED: &[&str] = &[
    "mmap",
    "munmap",
    "mremap",
    "brk",
    "mprotect",
    "madvise",
    "exit_group",
    "exit",
    "rt_sigaction",
    "rt_sigprocmask",
    "rt_sigreturn",
    "sigaltstack",
    "futex",
    "getpid",
    "gettid",
    "geteuid",
    "getuid",
    "umask",
    "sched_getaffinity",
    "sched_yield",
    "clock_gettime",
    "clock_nanosleep",
    "nanosleep",
    // The kernel's getrandom does not fail once its pool is ready; Rust's std panics if it
    // does (HashMap seeds), which mailkeep turns into 75 as it does every panic.
    "getrandom",
];

/// The errno injected into a call: what a full disk, a quota, a dying disk or a permission
/// change would give there.
fn errno_for(name: &str, nth: usize) -> &'static str {
    match name {
        "write" | "pwrite64" | "writev" | "pwritev" | "pwritev2" => ["ENOSPC", "EDQUOT", "EIO", "EFBIG"][nth % 4],
        "fsync" | "fdatasync" | "syncfs" => ["EIO", "ENOSPC"][nth % 2],
        "openat" | "open" | "mkdirat" | "mkdir" | "linkat" | "renameat" | "renameat2" => {
            ["EACCES", "ENOSPC", "EDQUOT", "EIO", "EROFS"][nth % 5]
        }
        "fchown" | "fchmod" | "utimensat" => "EPERM",
        _ => "EIO",
    }
}

/// True when a failure of this call may be shrugged off (exit 0 with the message stored):
/// the dedup store after the message is durable (a lost key costs a duplicate later, never a
/// message), closing files, the tmp/ sweep and clean-up, and a first attempt to open a folder
/// that the slow path retries. A failure of anything that makes the message durable (stdin,
/// the tmp file's creation, write and fsync, the link, the fsync of new/, the folder's
/// creation) must never end in exit 0.
fn may_ignore_failure(line: &str) -> bool {
    let name = line.split('(').next().unwrap_or("");
    line.contains("/.mailkeep")
        || line.contains("/dev/urandom")
        || line.contains("/proc/")
        || matches!(name, "close" | "getdents64" | "lseek" | "fcntl" | "newfstatat" | "uname")
        || (name == "unlinkat" && line.contains("/tmp>"))
        || (name == "openat" && line.contains("O_DIRECTORY") && !line.contains("O_CREAT"))
}

struct TraceConfig {
    name: &'static str,
    out: bool,
    dedup: bool,
    body: usize,
    /// Deliver one other message first, so the maildir (and store) exist.
    existing: bool,
}

const TRACE_CONFIGS: &[TraceConfig] = &[
    TraceConfig { name: "in, new maildir", out: false, dedup: false, body: 300, existing: false },
    TraceConfig { name: "out+dedup, new root", out: true, dedup: true, body: 300, existing: false },
    TraceConfig { name: "in+dedup, existing, 200 KiB", out: false, dedup: true, body: 200 << 10, existing: true },
];

/// Every system call of a delivery from its first read of stdin on, each in turn: killed at
/// its entry (SIGKILL), and made to fail (an errno). Killed: a complete copy exists exactly
/// when the trace shows the link into new/ done. Failed: exit 75 with nothing in new/ or tmp/
/// (or exit 0 with the complete copy, where the failure is one mailkeep may ignore), and the
/// retry stores the message once.
#[test]
fn every_system_call_killed_or_failed_leaves_a_complete_copy_or_none() {
    need_strace();
    // On tmpfs: which call is hit matters here, not how long an fsync takes.
    let env = Env { dir: tempfile::Builder::new().prefix("mailkeep-faults").tempdir_in(shm()).unwrap() };
    std::fs::create_dir(env.root()).unwrap();
    let mut text = String::new();
    let (mut kills, mut errors, mut ignored_errors) = (0, 0, Vec::new());
    let started = Instant::now();
    for (ci, cfg) in TRACE_CONFIGS.iter().enumerate() {
        let token0 = format!("S{ci}T000000");
        let proto = Delivery::new("alice", cfg.out, message_with(&token0, cfg.body));
        let proto = if cfg.dedup { proto.dedup() } else { proto };
        let (want0, _) = reference(&proto);
        let msg_file = env.dir.path().join(format!("msg{ci}"));
        let trace = env.dir.path().join("trace");
        // A fresh root (and user) per run, prepared the same way each time.
        let mut run_no = 0;
        let mut prepare = |token: &str| -> (PathBuf, Delivery) {
            run_no += 1;
            let root = env.dir.path().join(format!("t{ci}-{run_no}"));
            crate::util::init_root(&root);
            let mut d = proto.clone();
            d.message = retoken(&proto.message, &token0, token);
            if cfg.existing {
                let mut pre = proto.clone();
                pre.message = message_with(&format!("S{ci}PRE{run_no:05}"), 100);
                assert_eq!(pre.run(&root).0, 0);
            }
            std::fs::write(&msg_file, &d.message).unwrap();
            (root, d)
        };
        let (root, d) = prepare(&token0);
        let (code, err, calls) = run_traced(&d, &root, &msg_file, &trace, None);
        assert_eq!(code, 0, "{}: traced run failed: {err}", cfg.name);
        let start = calls
            .iter()
            .position(|c| c.name == "read" && (c.line.starts_with("read(0,") || c.line.starts_with("read(0<")))
            .unwrap();
        let points: Vec<(String, usize)> = calls
            .iter()
            .enumerate()
            .skip(start)
            .filter(|(_, c)| !NOT_INJECTED.contains(&c.name.as_str()))
            .map(|(i, c)| (c.name.clone(), calls[..=i].iter().filter(|x| x.name == c.name).count()))
            .collect();
        text.push_str(&format!("{}: {} calls in all, {} injection points\n", cfg.name, calls.len(), points.len()));
        for (k, (name, nth)) in points.iter().enumerate() {
            let token = format!("S{ci}T{k:06}");
            let want = retoken(&want0, &token0, &token);
            let folder = d.folder();
            // 1. SIGKILL on entry to the call.
            let (root, d) = prepare(&token);
            let spec = format!("{name}:signal=SIGKILL:when={nth}");
            let (code, err, calls) = run_traced(&d, &root, &msg_file, &trace, Some(&spec));
            let ctx = format!("{}: killed at {name} #{nth}", cfg.name);
            let copies = complete_copies(&root, &folder, &token, &want, &ctx);
            let reached = calls.last().map(|c| c.line.trim_end().ends_with("= ?") && c.name == *name);
            if code == 0 {
                // The run took another path and never made that call: fine, if it stored.
                assert_eq!(copies, 1, "{ctx}: exit 0 without a complete copy: {err}");
            } else {
                assert_eq!(code, -9, "{ctx}: not killed: exit {code}, {err}");
                assert_eq!(copies, usize::from(trace_linked(&calls)), "{ctx}: copies vs. the link in the trace");
                assert!(reached != Some(false), "{ctx}: killed elsewhere: {:?}", calls.last());
                kills += 1;
            }
            for partial in tmp_since(&root, &folder, &[]) {
                assert!(want.starts_with(&partial), "{ctx}: tmp/ holds no prefix of the message");
            }
            if NOT_FAILED.contains(&name.as_str()) {
                continue;
            }
            // 2. The call fails with an errno.
            let token = format!("S{ci}E{k:06}");
            let want = retoken(&want0, &token0, &token);
            let (root, d) = prepare(&token);
            let errno = errno_for(name, *nth);
            let spec = format!("{name}:error={errno}:when={nth}");
            let (code, err, calls) = run_traced(&d, &root, &msg_file, &trace, Some(&spec));
            let ctx = format!("{}: {name} #{nth} failing with {errno}", cfg.name);
            let injected_call = calls.iter().find(|c| c.line.contains("(INJECTED)"));
            let injected = injected_call.is_some();
            let copies = complete_copies(&root, &folder, &token, &want, &ctx);
            let leftovers = tmp_since(&root, &folder, &[]);
            assert!(!err.contains("internal error"), "{ctx}: a panic: {err}");
            match code {
                0 => {
                    assert_eq!(copies, 1, "{ctx}: exit 0 without a complete copy");
                    if let Some(c) = injected_call {
                        assert!(may_ignore_failure(&c.line), "{ctx}: exit 0 although this failed: {}", c.line);
                        ignored_errors.push(format!("{name}({errno})"));
                    }
                    // Only a failed unlink of the tmp name may leave it behind (swept after 36 h).
                    if !leftovers.is_empty() {
                        assert_eq!(name, "unlinkat", "{ctx}: exit 0 left a tmp file");
                    }
                }
                75 => {
                    assert!(injected, "{ctx}: 75 without an injected error: {err}");
                    assert_eq!(copies, 0, "{ctx}: exit 75 but a copy is in new/");
                    assert!(leftovers.is_empty(), "{ctx}: exit 75 left {} tmp file(s)", leftovers.len());
                    assert_eq!(err.lines().count(), 1, "{ctx}: one line on stderr: {err}");
                    let (code, err) = d.run(&root);
                    assert_eq!(code, 0, "{ctx}: the retry failed: {err}");
                    assert_eq!(complete_copies(&root, &folder, &token, &want, &ctx), 1, "{ctx}: after the retry");
                    errors += 1;
                }
                other => panic!("{ctx}: exit {other} (only 0 or 75 may come of an I/O error): {err}"),
            }
            std::fs::remove_dir_all(&root).unwrap();
        }
    }
    ignored_errors.sort();
    ignored_errors.dedup();
    text.push_str(&format!(
        "killed runs={kills}, failed calls giving 75={errors}, failures=0, seconds={:.1}\n\
         calls whose failure mailkeep ignores (exit 0, message stored): {}\n",
        started.elapsed().as_secs_f64(),
        ignored_errors.join(" ")
    ));
    report("kill-and-fail-every-syscall", &text);
}

// ---------------------------------------------------------------------------------------------
// replay killed mid-batch
// ---------------------------------------------------------------------------------------------

/// An mbox of `n` messages; every 7th has no Message-ID (folded by digest on a re-run).
fn big_mbox(path: &Path, n: usize) {
    let mut data = String::new();
    for i in 0..n {
        let id = if i % 7 == 3 { String::new() } else { format!("Message-ID: <r{i}@x>\n") };
        data.push_str(&format!(
            "From s{i}@x Wed Jan  1 00:{:02}:00 2020\n{id}Subject: {i}\n\n{}\nFrom the body, no separator\n\n",
            i % 60,
            "y".repeat(i % 500)
        ));
    }
    std::fs::write(path, data).unwrap();
}

fn replay_cmd(root: &Path, mbox: &Path) -> Command {
    let mut cmd = Command::new(BIN);
    cmd.args(["replay", "--root"]).arg(root);
    cmd.args(["--user", "alice", "--domain", "example.com", "--direction", "in", "--log", "none"]);
    if is_root() {
        cmd.arg("--allow-root");
    }
    cmd.arg(mbox).env_clear().env("PATH", "/usr/bin:/bin").stdout(Stdio::null()).stderr(Stdio::piped());
    cmd
}

/// The sorted (mtime, bytes) of every message in alice's new/ and cur/.
fn folder_contents(root: &Path) -> Vec<(std::time::SystemTime, Vec<u8>)> {
    let mut v = Vec::new();
    for sub in ["new", "cur"] {
        let dir = root.join("alice").join(sub);
        for n in names_in(&dir) {
            let p = dir.join(n);
            let bytes = std::fs::read(&p).unwrap();
            assert_eq!(bytes.len() as u64, size_in_name(&p), "a file in {sub}/ is complete: {}", p.display());
            v.push((std::fs::metadata(&p).unwrap().modified().unwrap(), bytes));
        }
    }
    v.sort();
    v
}

#[test]
fn replay_killed_mid_batch_then_rerun_equals_an_uninterrupted_run() {
    need_strace();
    // syncfs of the whole disk is slow on a busy machine: tmpfs for CI, the disk in the long run.
    let env = if long() {
        Env::new()
    } else {
        Env { dir: tempfile::Builder::new().prefix("mailkeep-replay").tempdir_in(shm()).unwrap() }
    };
    let mbox = env.dir.path().join("big.mbox");
    // More than one batch (2048 messages), so kills land in the first, the second and between.
    big_mbox(&mbox, 2600);
    let reference_root = env.dir.path().join("reference");
    crate::util::init_root(&reference_root);
    let out = replay_cmd(&reference_root, &mbox).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let want = folder_contents(&reference_root);
    let all: std::collections::HashSet<&Vec<u8>> = want.iter().map(|(_, b)| b).collect();
    let started = Instant::now();
    let mut rng = Rng::new("replay kills");
    let mut scenarios: Vec<(String, Option<String>, Duration)> = Vec::new();
    // Deterministic: killed on entry to the k-th link, sync or write.
    for spec in [
        "linkat:signal=SIGKILL:when=1",
        "linkat:signal=SIGKILL:when=1000",
        "linkat:signal=SIGKILL:when=2048",
        "linkat:signal=SIGKILL:when=2049",
        "linkat:signal=SIGKILL:when=2300",
        "syncfs:signal=SIGKILL:when=1",
        "syncfs:signal=SIGKILL:when=2",
        "fsync:signal=SIGKILL:when=1",
        "fsync:signal=SIGKILL:when=2",
        "unlinkat:signal=SIGKILL:when=1500",
        "write:signal=SIGKILL:when=1200",
        "write:signal=SIGKILL:when=2500",
        "openat:signal=SIGKILL:when=2100",
    ] {
        scenarios.push((spec.to_string(), Some(spec.to_string()), Duration::ZERO));
    }
    // Random: killed after a random delay, without strace.
    let whole = {
        let root = env.dir.path().join("timing");
        crate::util::init_root(&root);
        let t = Instant::now();
        assert!(replay_cmd(&root, &mbox).output().unwrap().status.success());
        t.elapsed()
    };
    let random = scaled(12, 300);
    for i in 0..random {
        let delay = whole.mul_f64((i as f64 + rng.unit()) / random as f64);
        scenarios.push((format!("SIGKILL after {delay:?}"), None, delay));
    }
    let mut killed = 0;
    for (i, (what, spec, delay)) in scenarios.iter().enumerate() {
        let root = env.dir.path().join(format!("k{i}"));
        crate::util::init_root(&root);
        let mut linked_in_trace = None;
        let was_killed = match spec {
            Some(spec) => {
                let trace = env.dir.path().join("replay.trace");
                let mut cmd = Command::new("strace");
                cmd.args(["-f", "-s", "0", "-e", "trace=linkat", "-o"]).arg(&trace);
                cmd.args(["-e", &format!("inject={spec}")]).arg(BIN);
                let inner = replay_cmd(&root, &mbox);
                cmd.args(inner.get_args()).env_clear().env("PATH", "/usr/bin:/bin");
                cmd.stdout(Stdio::null()).stderr(Stdio::null());
                let (code, _) = finish(cmd.output().unwrap());
                let calls = parse_trace(&std::fs::read_to_string(&trace).unwrap());
                linked_in_trace = Some(calls.iter().filter(|c| c.line.trim_end().ends_with("= 0")).count());
                code == -9
            }
            None => {
                let mut child = replay_cmd(&root, &mbox).stderr(Stdio::null()).spawn().unwrap();
                std::thread::sleep(*delay);
                let _ = child.kill();
                !child.wait().unwrap().success()
            }
        };
        killed += usize::from(was_killed);
        // What the kill left: only complete messages, each one of the reference's.
        let left = folder_contents(&root);
        for (_, bytes) in &left {
            assert!(all.contains(bytes), "{what}: a file in new/ that an uninterrupted run does not write");
        }
        if let Some(n) = linked_in_trace {
            assert_eq!(left.len(), n, "{what}: files in new/ vs. links done in the trace");
        }
        let out = replay_cmd(&root, &mbox).output().unwrap();
        assert!(out.status.success(), "{what}: re-run failed: {}", String::from_utf8_lossy(&out.stderr));
        let got = folder_contents(&root);
        if got != want {
            panic!(
                "{what}: after the re-run: expected {} messages equal to the uninterrupted run's, got {} ({} left by the kill)",
                want.len(),
                got.len(),
                left.len()
            );
        }
        std::fs::remove_dir_all(&root).unwrap();
    }
    report(
        "replay-kill",
        &format!(
            "mbox of 2600 messages (2 batches); scenarios={} (13 at a chosen call, {random} at random times), \
             killed before the end={killed}, re-runs equal to the uninterrupted run={}, failures=0, seconds={:.1}\n",
            scenarios.len(),
            scenarios.len(),
            started.elapsed().as_secs_f64()
        ),
    );
}

/// A scratch directory on tmpfs with a 2600-message mbox (two batches) and an empty root.
fn two_batch_replay() -> (Env, PathBuf, PathBuf) {
    need_strace();
    let env = Env { dir: tempfile::Builder::new().prefix("mailkeep-replay").tempdir_in(shm()).unwrap() };
    let mbox = env.dir.path().join("big.mbox");
    big_mbox(&mbox, 2600);
    let root = env.dir.path().join("root");
    crate::util::init_root(&root);
    (env, mbox, root)
}

/// Replays 2600 messages (two batches) with `inject` (strace) and returns the exit code,
/// stderr's lines other than replay's own reports, and what is in new/ and tmp/.
fn replay_injected(mbox: &Path, root: &Path, trace: &str, inject: &str) -> (i32, Vec<String>, usize, usize) {
    let mut cmd = Command::new("strace");
    cmd.args(["-f", "-qq", "-o", "/dev/null", "-e", trace, "-e", inject]).arg(BIN);
    cmd.args(replay_cmd(root, mbox).get_args()).env_clear().env("PATH", "/usr/bin:/bin");
    let (code, err) = finish(cmd.stdout(Stdio::null()).output().unwrap());
    let lines = err.lines().filter(|l| !l.starts_with("replay: ")).map(String::from).collect();
    (code, lines, folder_contents(root).len(), names_in(&root.join("alice/tmp")).len())
}

/// A re-run after a failed one stores exactly what an uninterrupted run stores.
fn rerun_completes(env: &Env, mbox: &Path, root: &Path) {
    let out = replay_cmd(root, mbox).output().unwrap();
    assert!(out.status.success(), "re-run: {}", String::from_utf8_lossy(&out.stderr));
    let reference = env.dir.path().join("reference");
    crate::util::init_root(&reference);
    assert!(replay_cmd(&reference, mbox).output().unwrap().status.success());
    assert_eq!(
        folder_contents(root),
        folder_contents(&reference),
        "after the re-run: the uninterrupted run's messages"
    );
}

/// The second batch is published on the publishing thread; a link failing there (a full
/// disk) must still end the run with 75, the first batch in new/ and nothing of the second,
/// and a re-run must complete it.
#[test]
fn replay_whose_second_batch_cannot_be_linked_exits_75_keeping_the_first() {
    let (env, mbox, root) = two_batch_replay();
    let (code, lines, in_new, in_tmp) =
        replay_injected(&mbox, &root, "trace=linkat", "inject=linkat:error=ENOSPC:when=2049");
    assert_eq!(code, 75, "expected exit 75, got {code}: {lines:?}");
    assert!(
        lines.len() == 1 && lines[0].contains("link into") && lines[0].contains("/alice/new/"),
        "expected one line naming the link into new/, got: {lines:?}"
    );
    assert_eq!(in_new, 2048, "expected the first batch (2048) in new/, got {in_new}");
    assert_eq!(in_tmp, 0, "expected tmp/ left empty, got {in_tmp} files");
    rerun_completes(&env, &mbox, &root);
}

/// A broken message stops the run (65); if what was read before it then cannot be made
/// durable, the status must be 75, not 65, which would say that all of it was stored.
#[test]
fn a_failed_flush_after_a_broken_message_exits_75_not_65() {
    need_strace();
    let env = Env { dir: tempfile::Builder::new().prefix("mailkeep-replay").tempdir_in(shm()).unwrap() };
    let mbox = env.dir.path().join("broken.mbox");
    let data = "From a@x Wed Jan  1 00:00:00 2020\nMessage-ID: <b1@x>\nContent-Length: 4\n\nabc\n\n\
                From a@x Thu Jan  2 00:00:00 2020\nMessage-ID: <b2@x>\nContent-Length: 2\n\nabcdef\n\n";
    std::fs::write(&mbox, data).unwrap();
    let root = env.dir.path().join("root");
    crate::util::init_root(&root);
    let (code, lines, in_new, _) = replay_injected(&mbox, &root, "trace=syncfs", "inject=syncfs:error=EIO:when=1");
    assert_eq!(code, 75, "expected exit 75, got {code}: {lines:?}");
    assert!(
        lines.len() == 1 && lines[0].contains("broken message") && lines[0].contains("syncfs"),
        "expected one line naming the broken message and the syncfs, got: {lines:?}"
    );
    assert_eq!(in_new, 0, "expected nothing in new/, got {in_new}");
}

/// The first batch's syncfs fails while the second batch is being written. That syncfs
/// may have taken the error report meant for a file of the second batch (syncfs reports an
/// error once per open descriptor), so nothing staged after it may be published: exit 75,
/// new/ and tmp/ empty, and a re-run completes.
#[test]
fn replay_stops_publishing_after_a_failed_syncfs() {
    let (env, mbox, root) = two_batch_replay();
    let (code, lines, in_new, in_tmp) = replay_injected(&mbox, &root, "trace=syncfs", "inject=syncfs:error=EIO:when=1");
    assert_eq!(code, 75, "expected exit 75, got {code}: {lines:?}");
    assert!(lines.len() == 1 && lines[0].contains("syncfs"), "expected one line naming the syncfs, got: {lines:?}");
    assert_eq!(in_new, 0, "expected nothing in new/ after the first batch's syncfs failed, got {in_new}");
    assert_eq!(in_tmp, 0, "expected tmp/ left empty, got {in_tmp} files");
    rerun_completes(&env, &mbox, &root);
}

// ---------------------------------------------------------------------------------------------
// Full disk, read-only, permissions, file-size limit
// ---------------------------------------------------------------------------------------------

/// A small filesystem mounted for the test (root only), unmounted on drop.
struct SmallFs {
    mnt: PathBuf,
    _env: Env,
}

impl SmallFs {
    /// `kind` "tmpfs" or "ext4" (a loop-mounted image), `kib` big.
    fn mount(kind: &str, kib: u64) -> SmallFs {
        let env = Env::new();
        let mnt = env.dir.path().join("mnt");
        std::fs::create_dir(&mnt).unwrap();
        let ok = match kind {
            "tmpfs" => Command::new("mount")
                .args(["-t", "tmpfs", "-o", &format!("size={kib}k,nr_inodes=4096,mode=0755"), "tmpfs"])
                .arg(&mnt)
                .status()
                .unwrap()
                .success(),
            _ => {
                let img = env.dir.path().join("fs.img");
                let f = File::create(&img).unwrap();
                f.set_len(kib * 1024).unwrap();
                let mut mk = Command::new("mkfs.ext4");
                mk.args(["-q", "-F", "-m", "0", "-b", "1024", "-N", "2048"]).arg(&img);
                assert!(mk.status().unwrap().success(), "mkfs.ext4");
                Command::new("mount").args(["-o", "loop"]).arg(&img).arg(&mnt).status().unwrap().success()
            }
        };
        assert!(ok, "mounting a {kind} of {kib} KiB failed");
        SmallFs { mnt, _env: env }
    }
}

impl Drop for SmallFs {
    fn drop(&mut self) {
        let ok = Command::new("umount").arg(&self.mnt).status().is_ok_and(|s| s.success());
        if !ok {
            let _ = Command::new("umount").arg("-l").arg(&self.mnt).status();
        }
    }
}

fn root_only(what: &str) -> bool {
    if !is_root() {
        eprintln!("skipped {what}: needs root to mount (CI runs as root)");
    }
    is_root()
}

/// Delivers distinct messages until the disk is full. Every failure must be 75 with nothing
/// in new/ or tmp/; after the filler is removed the same deliveries must succeed.
fn fill_then_free(kind: &str, dedup: bool) -> String {
    let fs = SmallFs::mount(kind, if kind == "tmpfs" { 2048 } else { 8192 });
    let root = fs.mnt.join("root");
    crate::util::init_root(&root);
    // A filler takes all but about 600 KiB; removing it is "space freed".
    let st = nix::sys::statvfs::statvfs(&fs.mnt).unwrap();
    let free = st.blocks_available() as u64 * st.fragment_size() as u64;
    let filler = fs.mnt.join("filler");
    std::fs::write(&filler, vec![b'f'; free.saturating_sub(600 * 1024) as usize]).unwrap();
    let mut failed: Vec<(Delivery, String)> = Vec::new();
    let mut stored = 0usize;
    let mut i = 0;
    while failed.len() < 8 && i < 400 {
        let token = format!("F{i:06}");
        let user = ["alice", "bob", "carol"][i % 3];
        let mut d = Delivery::new(user, i % 2 == 1, message_with(&token, 9000 + (i * 977) % 20_000));
        d.dedup = dedup;
        i += 1;
        let folder = d.folder();
        let before = names_in(&root.join(&folder).join("new")).len();
        let (code, err) = d.run(&root);
        match code {
            0 => stored += 1,
            75 => {
                assert!(
                    err.contains("No space left") || err.contains("full") || err.contains("disk"),
                    "{kind}: the message says why: {err}"
                );
                assert_eq!(err.lines().count(), 1, "one line: {err}");
                assert_eq!(names_in(&root.join(&folder).join("new")).len(), before, "{kind}: 75 but new/ changed");
                assert!(names_in(&root.join(&folder).join("tmp")).is_empty(), "{kind}: 75 left a tmp file");
                failed.push((d, err));
            }
            other => panic!("{kind}: delivery {i} on a full disk exited {other}: {err}"),
        }
    }
    assert!(!failed.is_empty(), "{kind}: the disk never filled");
    let first_error = failed[0].1.trim().to_string();
    std::fs::remove_file(&filler).unwrap();
    for (d, _) in &failed {
        let (code, err) = d.run(&root);
        assert_eq!(code, 0, "{kind}: after space was freed the retry failed: {err}");
    }
    let total: usize = ["alice", "bob", "carol"]
        .iter()
        .flat_map(|u| [u.to_string(), format!("{u}/.Sent")])
        .map(|f| names_in(&root.join(&f).join("new")).len())
        .sum();
    assert_eq!(total, stored + failed.len(), "{kind}: every message stored exactly once in the end");
    for u in ["alice", "bob", "carol"] {
        for f in [u.to_string(), format!("{u}/.Sent")] {
            assert!(names_in(&root.join(&f).join("tmp")).is_empty(), "{kind}: tmp/ leftovers in {f}");
        }
    }
    format!(
        "{kind}{}: stored {stored}, then {} deliveries exited 75 (e.g. \"{first_error}\"); after freeing space all {} retries stored\n",
        if dedup { " +dedup" } else { "" },
        failed.len(),
        failed.len()
    )
}

#[test]
fn full_disk_defers_with_75_leaves_nothing_and_the_retry_stores() {
    if !root_only("full disk") {
        return;
    }
    let mut text = String::new();
    for (kind, dedup) in [("tmpfs", false), ("tmpfs", true), ("ext4", false), ("ext4", true)] {
        text.push_str(&fill_then_free(kind, dedup));
    }
    report("full-disk", &text);
}

#[test]
fn no_free_inodes_defers_with_75() {
    if !root_only("inodes") {
        return;
    }
    let env = Env::new();
    let mnt = env.dir.path().join("mnt");
    std::fs::create_dir(&mnt).unwrap();
    assert!(
        Command::new("mount")
            .args(["-t", "tmpfs", "-o", "size=4m,nr_inodes=12", "tmpfs"])
            .arg(&mnt)
            .status()
            .unwrap()
            .success()
    );
    let _guard = scopeguard(&mnt);
    let root = mnt.join("root");
    crate::util::init_root(&root);
    let mut codes = Vec::new();
    for i in 0..12 {
        let d = Delivery::new("alice", false, message_with(&format!("I{i:06}"), 200));
        let (code, err) = d.run(&root);
        assert!(code == 0 || code == 75, "exit {code}: {err}");
        if code == 75 {
            assert!(names_in(&root.join("alice/tmp")).is_empty(), "75 left a tmp file");
        }
        codes.push(code);
    }
    assert!(codes.contains(&75), "the inodes never ran out: {codes:?}");
    let stored = names_in(&root.join("alice/new")).len();
    assert_eq!(stored, codes.iter().filter(|&&c| c == 0).count(), "{codes:?}");
}

/// Unmounts `mnt` when dropped.
struct Unmount(PathBuf);
impl Drop for Unmount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}
fn scopeguard(mnt: &Path) -> Unmount {
    Unmount(mnt.to_path_buf())
}

#[test]
fn read_only_filesystem_defers_with_75_and_changes_nothing() {
    if !root_only("read-only") {
        return;
    }
    let fs = SmallFs::mount("tmpfs", 4096);
    let root = fs.mnt.join("root");
    crate::util::init_root(&root);
    for d in [
        Delivery::new("alice", false, message_with("R000001", 100)),
        Delivery::new("alice", true, message_with("R000002", 100)).dedup(),
    ] {
        assert_eq!(d.run(&root).0, 0);
    }
    let remount = |mode: &str| {
        let ok = Command::new("mount").args(["-o", &format!("remount,{mode}")]).arg(&fs.mnt).status().unwrap();
        assert!(ok.success(), "remount {mode}");
    };
    remount("ro");
    let before = snapshot(&root);
    let cases = [
        ("existing INBOX", Delivery::new("alice", false, message_with("R000003", 100))),
        ("existing Sent, dedup", Delivery::new("alice", true, message_with("R000004", 100)).dedup()),
        ("new user", Delivery::new("bob", false, message_with("R000005", 100))),
        ("new Sent folder", Delivery::new("carol", true, message_with("R000006", 100))),
    ];
    for (what, d) in &cases {
        let (code, err) = d.run(&root);
        assert_eq!(code, 75, "{what} on a read-only root: {err}");
        // SQLite says only "unable to open database file"; mailkeep's own errors name the errno.
        let why = err.contains("Read-only file system") || (d.dedup && err.contains("dedup store"));
        assert!(why && err.contains(root.to_str().unwrap()), "{what}: names the path and why: {err}");
        assert_eq!(err.lines().count(), 1, "{what}: one line: {err}");
    }
    assert!(snapshot(&root) == before, "something changed on the read-only filesystem");
    remount("rw");
    for (what, d) in &cases {
        assert_eq!(d.run(&root).0, 0, "{what}: retry after remounting rw");
    }
}

/// `setpriv` to run as nobody (root ignores permissions).
fn as_nobody(d: &Delivery, root: &Path) -> (i32, String) {
    let mut cmd = Command::new("setpriv");
    cmd.args(["--reuid=nobody", "--regid=nogroup", "--clear-groups", BIN]).args(d.args(root));
    cmd.env_clear().env("PATH", "/usr/bin:/bin");
    finish(run_with_stdin(cmd, &d.message))
}

#[test]
fn directories_owned_by_someone_else_defer_with_75_naming_the_path() {
    if !root_only("permissions") {
        return;
    }
    use std::os::unix::fs::{PermissionsExt, chown};
    let env = Env::new();
    std::fs::set_permissions(env.dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let root = env.root();
    let nobody = nix::unistd::User::from_name("nobody").unwrap().unwrap();
    chown(&root, Some(nobody.uid.as_raw()), Some(nobody.gid.as_raw())).unwrap();
    // The marker stays root's (init ran as root), readable by nobody.
    std::fs::set_permissions(root.join(".mailkeep"), std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::set_permissions(root.join(MARKER), std::fs::Permissions::from_mode(0o644)).unwrap();
    // alice: the user's directory belongs to root. bob: new/ belongs to root. carol: tmp/.
    // dave: .Sent belongs to root. erin: the dedup store's directory belongs to root.
    for (user, owned_by_root) in [("alice", ""), ("bob", "new"), ("carol", "tmp"), ("dave", ".Sent")] {
        // dave's first copy is received mail: his .Sent is made by root before the Sent copy.
        let d = Delivery::new(user, false, message_with("P000000", 100));
        if user != "alice" {
            assert_eq!(as_nobody(&d, &root).0, 0, "{user}: first delivery as nobody");
        }
        let dir = root.join(user).join(owned_by_root);
        std::fs::create_dir_all(&dir).unwrap();
        chown(&dir, Some(0), Some(0)).unwrap();
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
        let d = Delivery::new(user, user == "dave", message_with("P000001", 100));
        let before = snapshot(&root);
        let (code, err) = as_nobody(&d, &root);
        assert_eq!(code, 75, "{user} with {owned_by_root:?} owned by root: {err}");
        assert!(
            err.contains("Permission denied") && err.contains(&format!("{}", dir.display())),
            "names {}: {err}",
            dir.display()
        );
        assert!(snapshot(&root) == before, "{user}: something changed");
    }
    // The store's directory, made by init as root 0755 above, is not writable by nobody.
    let d = Delivery::new("erin", false, message_with("P000002", 100)).dedup();
    let (code, err) = as_nobody(&d, &root);
    assert_eq!(code, 75, "dedup store not writable: {err}");
    assert!(err.contains("dedup.sqlite3"), "{err}");
    assert!(names_in(&root.join("erin/new")).is_empty());
}

#[test]
fn path_that_is_a_file_where_a_directory_belongs_defers_with_75_issue_23() {
    let env = Env::new();
    let root = env.root();
    for user in ["bob", "dave"] {
        assert_eq!(Delivery::new(user, false, message_with("N000000", 100)).run(&root).0, 0);
    }
    std::fs::write(root.join("alice"), b"a file").unwrap();
    std::fs::remove_dir_all(root.join("bob/new")).unwrap();
    std::fs::write(root.join("bob/new"), b"a file").unwrap();
    std::fs::remove_dir_all(root.join("dave/tmp")).unwrap();
    std::fs::write(root.join("dave/tmp"), b"a file").unwrap();
    std::fs::create_dir(root.join("carol")).unwrap();
    std::fs::write(root.join("carol/.Sent"), b"a file").unwrap();
    for (user, out, bad) in [
        ("alice", false, "alice"),
        ("bob", false, "bob/new"),
        ("dave", false, "dave/tmp"),
        ("carol", true, "carol/.Sent"),
    ] {
        let before = snapshot(&root);
        let (code, err) = Delivery::new(user, out, message_with("N000001", 100)).run(&root);
        assert_eq!(code, 75, "{bad} is a file: {err}");
        assert!(err.contains(&root.join(bad).display().to_string()) && err.contains("not a directory"), "{err}");
        let after = snapshot(&root);
        let added: Vec<_> = after.keys().filter(|k| !before.contains_key(*k)).collect();
        assert!(added.iter().all(|p| after[*p].is_none()), "{bad}: files were written: {added:?}");
    }
}

#[test]
fn file_size_limit_defers_with_75_and_leaves_no_tmp_file() {
    let env = Env::new();
    let root = env.root();
    let with_limit = |d: &Delivery, bytes: u64| {
        let mut cmd = d.command(&root);
        // SAFETY: setrlimit is async-signal-safe; nothing else runs between fork and exec.
        unsafe {
            cmd.pre_exec(move || {
                let lim = libc::rlimit { rlim_cur: bytes, rlim_max: bytes };
                if libc::setrlimit(libc::RLIMIT_FSIZE, &lim) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        finish(run_with_stdin(cmd, &d.message))
    };
    let small = Delivery::new("alice", false, message_with("L000000", 1000));
    assert_eq!(with_limit(&small, 64 * 1024).0, 0, "a message under the limit is stored");
    for (what, token, d, limit) in [
        (
            "200 KiB message, 64 KiB limit",
            "L000001",
            Delivery::new("alice", false, message_with("L000001", 200 << 10)),
            64 << 10,
        ),
        (
            "limit just under the stored size",
            "L000002",
            Delivery::new("alice", true, message_with("L000002", 5000)),
            5000,
        ),
        ("dedup store cannot grow", "L000003", Delivery::new("bob", false, message_with("L000003", 100)).dedup(), 1024),
    ] {
        let (code, err) = with_limit(&d, limit);
        assert_eq!(code, 75, "{what}: {err}");
        assert!(err.contains("too large") || err.contains("dedup store"), "{what}: says why: {err}");
        assert_eq!(err.lines().count(), 1, "{what}: one line: {err}");
        assert!(names_in(&root.join(d.folder()).join("tmp")).is_empty(), "{what}: left a tmp file");
        assert!(copies_with(&root, &d.folder(), token).is_empty(), "{what}: a copy in new/");
        assert_eq!(d.run(&root).0, 0, "{what}: stored without the limit");
        assert_eq!(copies_with(&root, &d.folder(), token).len(), 1, "{what}: stored once");
    }
}

// ---------------------------------------------------------------------------------------------
// Symlinks and how files are created
// ---------------------------------------------------------------------------------------------

/// How the maildir looks before the link is planted.
#[derive(Clone, Copy, PartialEq)]
enum Prep {
    /// A first delivery of the same kind made everything.
    Same,
    /// Only the INBOX exists (so the Sent folder's setup runs).
    InboxOnly,
    /// .Sent exists but without new/ (so its setup runs again).
    SentWithoutNew,
}

#[test]
fn symlink_planted_below_the_root_is_never_followed_for_writing() {
    // (link below the root, what it points to, Sent copy, with dedup, how the maildir looks)
    let cases: &[(&str, &str, bool, bool, Prep)] = &[
        ("alice", "dir", false, false, Prep::Same),
        ("alice", "dir", true, false, Prep::Same),
        ("alice/new", "dir", false, false, Prep::Same),
        ("alice/new", "missing", false, false, Prep::Same),
        ("alice/tmp", "dir", false, false, Prep::Same),
        ("alice/cur", "dir", false, false, Prep::Same),
        ("alice/.Sent", "dir", true, false, Prep::Same),
        ("alice/.Sent", "dir", true, false, Prep::InboxOnly),
        ("alice/.Sent/new", "dir", true, false, Prep::Same),
        ("alice/.Sent/tmp", "dir", true, false, Prep::Same),
        ("alice/subscriptions", "file", true, false, Prep::InboxOnly),
        ("alice/courierimapsubscribed", "file", true, false, Prep::InboxOnly),
        ("alice/.Sent/maildirfolder", "file", true, false, Prep::SentWithoutNew),
        (".mailkeep", "dir", false, true, Prep::InboxOnly),
        (".mailkeep/dedup.sqlite3", "file", false, true, Prep::Same),
        (".mailkeep/dedup.sqlite3-wal", "file", false, true, Prep::Same),
    ];
    let must_name_link = ["alice", "alice/new", "alice/tmp", "alice/.Sent", "alice/.Sent/new", "alice/.Sent/tmp"];
    let mut problems = Vec::new();
    let mut lines = String::new();
    for &(link, kind, out, dedup, prep) in cases {
        let env = Env::new();
        let root = env.root();
        let outside = env.dir.path().join("outside");
        std::fs::create_dir(&outside).unwrap();
        let target = match kind {
            "dir" => {
                std::fs::create_dir(outside.join("d")).unwrap();
                outside.join("d")
            }
            "file" => {
                // Empty: a file SQLite would take for a new database and write.
                std::fs::write(outside.join("f"), b"").unwrap();
                outside.join("f")
            }
            _ => outside.join("missing"),
        };
        let d = Delivery::new("alice", out, message_with("Y000001", 100));
        let d = if dedup { d.dedup() } else { d };
        let first = match prep {
            Prep::Same => Delivery { message: message_with("Y000000", 100), ..d.clone() },
            _ => Delivery::new("alice", prep == Prep::SentWithoutNew, message_with("Y000000", 100)),
        };
        assert_eq!(first.run(&root).0, 0, "{link}: first delivery");
        if prep == Prep::SentWithoutNew {
            std::fs::remove_dir_all(root.join("alice/.Sent/new")).unwrap();
        }
        let link_path = root.join(link);
        match std::fs::symlink_metadata(&link_path) {
            Ok(m) if m.is_dir() => std::fs::remove_dir_all(&link_path).unwrap(),
            Ok(_) => std::fs::remove_file(&link_path).unwrap(),
            Err(_) => {}
        }
        std::fs::create_dir_all(link_path.parent().unwrap()).unwrap();
        std::os::unix::fs::symlink(&target, &link_path).unwrap();
        let before = snapshot(&outside);
        let (code, err) = d.run(&root);
        let wrote_outside = snapshot(&outside) != before;
        let still_link = std::fs::symlink_metadata(&link_path).is_ok_and(|m| m.file_type().is_symlink());
        let names_link = err.contains(&link_path.display().to_string());
        let line = format!("{link} -> {kind} ({}): exit {code}; {}", if out { "out" } else { "in" }, err.trim());
        lines.push_str(&line);
        lines.push('\n');
        if wrote_outside || !still_link {
            problems.push(format!("{line}  <- wrote outside the root or replaced the link"));
        } else if code == 0 {
            // A link the delivery does not use (cur/): fine if the message is inside the root.
            let new = std::fs::canonicalize(root.join(d.folder()).join("new")).unwrap();
            if !new.starts_with(std::fs::canonicalize(&root).unwrap())
                || copies_with(&root, &d.folder(), "Y000001").len() != 1
            {
                problems.push(format!("{line}  <- stored outside the root"));
            }
        } else if code != 75 {
            problems.push(format!("{line}  <- must be 75 (Postfix bounces 73, issue 23)"));
        } else if must_name_link.contains(&link) && !names_link {
            problems.push(format!("{line}  <- want 75 naming the link"));
        }
    }
    report("symlinks", &lines);
    assert!(problems.is_empty(), "symlinks followed or badly reported:\n{}", problems.join("\n"));
}

/// What strace shows of every file a delivery creates: the flags of each `openat(O_CREAT)`.
#[test]
fn every_file_is_created_with_o_excl_and_o_nofollow() {
    need_strace();
    let env = Env::new();
    let root = env.root();
    let msg_file = env.dir.path().join("msg");
    let trace = env.dir.path().join("trace");
    let mut creates = Vec::new();
    for (i, d) in [
        Delivery::new("alice", false, message_with("O000001", 100)),
        Delivery::new("alice", true, message_with("O000002", 100)),
        Delivery::new("alice", true, message_with("O000003", 100)).dedup(),
        Delivery::new("bob", true, message_with("O000004", 100)).dedup(),
    ]
    .iter()
    .enumerate()
    {
        std::fs::write(&msg_file, &d.message).unwrap();
        let (code, err, calls) = run_traced(d, &root, &msg_file, &trace, None);
        assert_eq!(code, 0, "run {i}: {err}");
        creates.extend(
            calls.into_iter().filter(|c| (c.name == "openat" || c.name == "open") && c.line.contains("O_CREAT")),
        );
    }
    // SQLite's own files are opened, not created exclusively, by design (it reopens them);
    // it still refuses a symlink (O_NOFOLLOW). The maildirfolder marker is never written to.
    let shared = |l: &str| l.contains("dedup.sqlite3") || l.contains("\"maildirfolder\"");
    let mut bad = Vec::new();
    for c in &creates {
        let nofollow = c.line.contains("O_NOFOLLOW");
        let excl = c.line.contains("O_EXCL");
        if !nofollow || (!excl && !shared(&c.line)) {
            bad.push(c.line.clone());
        }
    }
    assert!(!creates.is_empty());
    assert!(bad.is_empty(), "files created without O_EXCL|O_NOFOLLOW:\n{}", bad.join("\n"));
}

/// The order docs/DURABILITY.md promises, as strace shows it: the tmp file created with
/// O_EXCL|O_NOFOLLOW, written, fsynced, linked into new/, new/ fsynced, the tmp name removed,
/// and only then the exit. For replay: a batch is made durable (syncfs) before any of it is
/// linked, and new/ is fsynced before any tmp name goes.
#[test]
fn durable_write_issues_its_system_calls_in_the_documented_order() {
    need_strace();
    let env = Env::new();
    let root = env.root();
    let msg_file = env.dir.path().join("msg");
    let trace = env.dir.path().join("trace");
    let d = Delivery::new("alice", false, message_with("D000001", 200 << 10));
    assert_eq!(Delivery::new("alice", false, message_with("D000000", 10)).run(&root).0, 0);
    std::fs::write(&msg_file, &d.message).unwrap();
    let (code, err, calls) = run_traced(&d, &root, &msg_file, &trace, None);
    assert_eq!(code, 0, "{err}");
    let pos = |what: &str, f: &dyn Fn(&Call) -> bool| {
        calls.iter().position(f).unwrap_or_else(|| panic!("no {what} in the trace"))
    };
    let create =
        pos("tmp file creation", &|c| c.name == "openat" && c.line.contains("/tmp>") && c.line.contains("O_CREAT"));
    assert!(
        calls[create].line.contains("O_EXCL") && calls[create].line.contains("O_NOFOLLOW"),
        "{}",
        calls[create].line
    );
    let fd = calls[create].line.rsplit("= ").next().unwrap().split('<').next().unwrap().trim().to_string();
    let on_fd = |c: &Call| c.line.starts_with(&format!("{}({fd}<", c.name));
    let writes: Vec<usize> = (0..calls.len()).filter(|&i| calls[i].name == "write" && on_fd(&calls[i])).collect();
    let fsync_file = pos("fsync of the file", &|c| c.name == "fsync" && on_fd(c));
    let link = pos("link into new/", &|c| c.name == "linkat" && c.line.contains(",S="));
    let fsync_new = pos("fsync of new/", &|c| c.name == "fsync" && c.line.contains("/new>"));
    let unlink = pos("unlink of the tmp name", &|c| c.name == "unlinkat" && c.line.contains("/tmp>"));
    let exit = pos("exit", &|c| c.name == "exit_group");
    assert!(writes.len() >= 3, "a 200 KiB message is written in several writes: {writes:?}");
    let order = [create, *writes.first().unwrap(), *writes.last().unwrap(), fsync_file, link, fsync_new, unlink, exit];
    assert!(order.windows(2).all(|w| w[0] < w[1]), "order in the trace: {order:?}");

    // replay: syncfs before the first link; fsync of new/ after the last link, before unlinks.
    let mbox = env.dir.path().join("small.mbox");
    big_mbox(&mbox, 50);
    let mut cmd = Command::new("strace");
    cmd.args(["-f", "-y", "-o"]).arg(&trace).arg(BIN);
    cmd.args(replay_cmd(&root, &mbox).get_args()).env_clear().env("PATH", "/usr/bin:/bin");
    cmd.stdout(Stdio::null()).stderr(Stdio::null());
    assert!(cmd.status().unwrap().success());
    let calls = parse_trace(&std::fs::read_to_string(&trace).unwrap());
    let syncfs = calls.iter().position(|c| c.name == "syncfs").expect("syncfs");
    let links: Vec<usize> = (0..calls.len()).filter(|&i| calls[i].name == "linkat").collect();
    let fsync_new = calls.iter().rposition(|c| c.name == "fsync" && c.line.contains("/new>")).expect("fsync new/");
    let first_unlink = calls.iter().position(|c| c.name == "unlinkat" && c.line.contains("/tmp>")).expect("unlink");
    assert_eq!(links.len(), 50, "one link per message");
    assert!(syncfs < links[0] && *links.last().unwrap() < fsync_new && fsync_new < first_unlink);
}
