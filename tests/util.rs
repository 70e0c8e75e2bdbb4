//! Test environment: a temp backup root, the real binary, a cleaned environment with the
//! Exim variables set on purpose, and comparisons that print expected vs got.

#![allow(dead_code)]

use std::ffi::OsStr;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

pub const BIN: &str = env!("CARGO_BIN_EXE_mailkeep");
/// The marker `mailkeep init` writes, relative to the root.
pub const MARKER: &str = ".mailkeep/root.json";

pub fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// A fresh backup root and a way to run mailkeep against it.
pub struct Env {
    pub dir: tempfile::TempDir,
}

impl Env {
    /// A root that `mailkeep init` initialised, as every real one is.
    pub fn new() -> Env {
        let env = Env::uninitialised();
        env.init(&env.root());
        env
    }

    /// An empty root directory without the marker: what an unmounted volume leaves.
    pub fn uninitialised() -> Env {
        let dir = tempfile::Builder::new().prefix("mailkeep-test").tempdir().unwrap();
        std::fs::create_dir(dir.path().join("root")).unwrap();
        Env { dir }
    }

    /// `mailkeep init --root DIR [--allow-root]`, which must succeed.
    pub fn init(&self, dir: &Path) {
        let mut args: Vec<&OsStr> = vec!["init".as_ref(), "--root".as_ref(), dir.as_os_str()];
        if is_root() {
            args.push("--allow-root".as_ref());
        }
        assert_exit(&self.run(args, &[], b""), 0);
    }

    pub fn root(&self) -> PathBuf {
        self.dir.path().join("root")
    }

    /// `mailkeep <args>` with only PATH and `env` in its environment, `stdin` on stdin.
    pub fn run<I, S>(&self, args: I, env: &[(&str, &str)], stdin: &[u8]) -> Output
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        run_with_stdin(self.command(args, env), stdin)
    }

    /// Like `run`, but kills mailkeep after `limit`: a hang fails the test instead of
    /// stalling the suite.
    pub fn run_within<I, S>(&self, limit: Duration, args: I, env: &[(&str, &str)], stdin: &[u8]) -> Output
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        run_with_stdin_within(self.command(args, env), stdin, limit)
    }

    /// `mailkeep <args>` with only PATH and `env` in its environment, in the test's directory.
    fn command<I, S>(&self, args: I, env: &[(&str, &str)]) -> Command
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let mut cmd = Command::new(BIN);
        cmd.args(args).env_clear().env("PATH", "/usr/bin:/bin").current_dir(self.dir.path());
        for (k, v) in env {
            cmd.env(k, v);
        }
        cmd
    }

    /// `mailkeep deliver --root ROOT [--log none unless args say] [--allow-root when root] <args>`.
    pub fn deliver<I, S>(&self, args: I, env: &[(&str, &str)], stdin: &[u8]) -> Output
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        self.run(self.deliver_args(args), env, stdin)
    }

    /// `deliver`, killed after `limit` (see `run_within`).
    pub fn deliver_within<I, S>(&self, limit: Duration, args: I, env: &[(&str, &str)], stdin: &[u8]) -> Output
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        self.run_within(limit, self.deliver_args(args), env, stdin)
    }

    fn deliver_args<I, S>(&self, args: I) -> Vec<std::ffi::OsString>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let args: Vec<std::ffi::OsString> = args.into_iter().map(|a| a.as_ref().to_os_string()).collect();
        let mut all: Vec<std::ffi::OsString> = vec!["deliver".into(), "--root".into(), self.root().into()];
        if !args.iter().any(|a| a == "--log") {
            all.extend(["--log".into(), "none".into()]);
        }
        if is_root() {
            all.push("--allow-root".into());
        }
        all.extend(args);
        all
    }

    /// Every regular file below the root, relative, sorted; the marker `init` wrote aside.
    pub fn files(&self) -> Vec<PathBuf> {
        let mut files = files_below(&self.root());
        files.retain(|f| f != Path::new(MARKER));
        files
    }

    /// The message files in `ROOT/<rel>/new`.
    pub fn new_files(&self, rel: &str) -> Vec<PathBuf> {
        let dir = self.root().join(rel).join("new");
        let mut v: Vec<PathBuf> = match std::fs::read_dir(&dir) {
            Ok(rd) => rd.map(|e| e.unwrap().path()).collect(),
            Err(_) => vec![],
        };
        v.sort();
        v
    }
}

/// Creates `dir` and has `mailkeep init` make it a backup root, as `Env::new` does.
pub fn init_root(dir: &Path) {
    std::fs::create_dir(dir).unwrap();
    let mut cmd = Command::new(BIN);
    cmd.args(["init", "--root"]).arg(dir).env_clear().env("PATH", "/usr/bin:/bin");
    if is_root() {
        cmd.arg("--allow-root");
    }
    assert_exit(&run_with_stdin(cmd, b""), 0);
}

/// Starts `cmd` with its output captured and `stdin` fed to it by a thread of its own (a
/// child that does not read must not block the test).
fn spawn_with_stdin(cmd: &mut Command, stdin: &[u8]) -> (std::process::Child, std::thread::JoinHandle<()>) {
    cmd.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("spawn mailkeep");
    let mut pipe = child.stdin.take().unwrap();
    let data = stdin.to_vec();
    let writer = std::thread::spawn(move || {
        let _ = pipe.write_all(&data);
    });
    (child, writer)
}

pub fn run_with_stdin(mut cmd: Command, stdin: &[u8]) -> Output {
    let (child, writer) = spawn_with_stdin(&mut cmd, stdin);
    let out = child.wait_with_output().unwrap();
    writer.join().unwrap();
    out
}

/// `run_with_stdin` that kills the child after `limit` and fails the test, saying it hung.
pub fn run_with_stdin_within(mut cmd: Command, stdin: &[u8], limit: Duration) -> Output {
    let (mut child, writer) = spawn_with_stdin(&mut cmd, stdin);
    let start = Instant::now();
    while child.try_wait().unwrap().is_none() {
        if start.elapsed() > limit {
            let _ = child.kill();
            let out = child.wait_with_output().unwrap();
            panic!("mailkeep {cmd:?} hung: killed after {limit:?}; stderr:\n{}", stderr(&out));
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let out = child.wait_with_output().unwrap();
    writer.join().unwrap();
    out
}

pub fn files_below(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        let Ok(rd) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in rd {
            let p = e.unwrap().path();
            let m = std::fs::symlink_metadata(&p).unwrap();
            if m.is_dir() {
                todo.push(p);
            } else {
                out.push(p.strip_prefix(dir).unwrap().to_path_buf());
            }
        }
    }
    out.sort();
    out
}

pub fn code(out: &Output) -> i32 {
    out.status.code().unwrap_or(-1)
}

pub fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Asserts the exit status, printing stderr when it differs.
#[track_caller]
pub fn assert_exit(out: &Output, want: i32) {
    assert_eq!(code(out), want, "exit status: expected {want}, got {}; stderr:\n{}", code(out), stderr(out));
}

/// Asserts that two byte strings are equal, showing both (escaped) when they are not.
#[track_caller]
pub fn assert_bytes_eq(what: &str, expected: &[u8], got: &[u8]) {
    if expected != got {
        let show = |b: &[u8]| {
            let s = String::from_utf8_lossy(b).escape_debug().to_string();
            if s.len() > 2000 { format!("{}...({} bytes)", &s[..2000], b.len()) } else { s }
        };
        let at = expected.iter().zip(got).position(|(a, b)| a != b).unwrap_or(expected.len().min(got.len()));
        panic!("{what}: differs at byte {at}\n--- expected\n{}\n--- got\n{}", show(expected), show(got));
    }
}

/// The `,S=` value of a stored file name.
pub fn size_in_name(path: &Path) -> u64 {
    let name = path.file_name().unwrap().to_str().unwrap();
    name.rsplit_once(",S=").expect("name has ,S=").1.parse().unwrap()
}

/// The date `days` ago as `YYYY-MM-DD` (UTC), as `erase --before` reads it.
pub fn date_days_ago(days: u64) -> String {
    let out = Command::new("date").args(["-u", "-d", &format!("{days} days ago"), "+%Y-%m-%d"]).output().unwrap();
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}
