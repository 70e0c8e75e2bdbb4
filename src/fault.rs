//! Named failure points for the crash tests: with `MAILKEEP_FAULT=<name>` in the
//! environment the process aborts there, as a SIGKILL or power cut would stop it; with
//! `MAILKEEP_FAULT=clock+<seconds>` its clock runs that far ahead (a clock that jumped); with
//! `MAILKEEP_FAULT=fs-type=<hex>` the dedup store's directory seems to be on that filesystem.
//!
//! Test hooks only: they exist with the cargo feature `fault-injection` (which
//! tests/run-all.sh turns on), and without it, as in the package's binary, `point` and
//! `clock_skew` are empty and the variable is never read: no environment can crash or age
//! the binary Exim runs.

use std::time::Duration;

/// Aborts the process if the test asked for a crash at `name`, or panics if it asked for
/// `panic-<name>` (to prove a panic still ends as "try again later").
#[cfg(feature = "fault-injection")]
pub fn point(name: &str) {
    let Some(asked) = std::env::var_os("MAILKEEP_FAULT") else { return };
    if asked == name {
        std::process::abort();
    }
    if asked.as_encoded_bytes().strip_prefix(b"panic-") == Some(name.as_bytes()) {
        panic!("fault injected at {name}");
    }
    pause(name, asked.as_encoded_bytes());
}

/// `MAILKEEP_FAULT=pause-<name>:<file>`: at `name` the process creates `<file>.paused` and
/// waits (30 s at most) until `<file>` exists, so a test can act exactly there (an expire
/// while a check runs).
#[cfg(feature = "fault-injection")]
fn pause(name: &str, asked: &[u8]) {
    let Some(rest) = asked.strip_prefix(b"pause-") else { return };
    let Some(colon) = rest.iter().position(|&b| b == b':') else { return };
    let (at, file) = (&rest[..colon], &rest[colon + 1..]);
    if at != name.as_bytes() {
        return;
    }
    use std::os::unix::ffi::OsStrExt;
    let file = std::path::Path::new(std::ffi::OsStr::from_bytes(file));
    let mut paused = file.as_os_str().to_os_string();
    paused.push(".paused");
    let _ = std::fs::write(paused, b"");
    for _ in 0..3000 {
        if file.exists() {
            return;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Without the test hooks a failure point is nothing at all.
#[cfg(not(feature = "fault-injection"))]
#[inline(always)]
pub fn point(_name: &str) {}

/// How far `MAILKEEP_FAULT=clock+<seconds>` puts the clock ahead (zero without it). The tests
/// age tmp/ files this way: they age by ctime, which no test can set, and the shipped binary
/// is static, so faketime's LD_PRELOAD cannot reach it.
#[cfg(feature = "fault-injection")]
pub fn clock_skew() -> Duration {
    use std::sync::OnceLock;
    static SKEW: OnceLock<Duration> = OnceLock::new();
    *SKEW.get_or_init(|| {
        let asked = std::env::var("MAILKEEP_FAULT").ok();
        asked.and_then(|v| v.strip_prefix("clock+")?.parse().ok()).map_or(Duration::ZERO, Duration::from_secs)
    })
}

/// Without the test hooks the clock is the clock.
#[cfg(not(feature = "fault-injection"))]
#[inline(always)]
pub const fn clock_skew() -> Duration {
    Duration::ZERO
}

/// The filesystem type (statfs f_type) the dedup store's directory reports: with
/// `MAILKEEP_FAULT=fs-type=<hex>` that number instead of `real`, to test the refusal of a
/// store on NFS or CephFS, which no test machine mounts.
#[cfg(feature = "fault-injection")]
pub fn fs_type(real: u32) -> u32 {
    let asked = std::env::var("MAILKEEP_FAULT").ok();
    asked
        .and_then(|v| u32::from_str_radix(v.strip_prefix("fs-type=")?.trim_start_matches("0x"), 16).ok())
        .unwrap_or(real)
}

/// Without the test hooks the filesystem is what fstatfs says.
#[cfg(not(feature = "fault-injection"))]
#[inline(always)]
pub const fn fs_type(real: u32) -> u32 {
    real
}
