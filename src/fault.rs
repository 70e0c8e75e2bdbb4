//! Named failure points for the crash tests: with `MAILKEEP_FAULT=<name>` in the
//! environment the process aborts there, as a SIGKILL or power cut would stop it; with
//! `MAILKEEP_FAULT=clock+<seconds>` its clock runs that far ahead (a clock that jumped).
//! Exim clears the environment of pipe commands, so production runs never see it.

use std::sync::OnceLock;
use std::time::Duration;

/// Aborts the process if the test asked for a crash at `name`, or panics if it asked for
/// `panic-<name>` (to prove a panic still ends as "try again later").
pub fn point(name: &str) {
    let Some(asked) = std::env::var_os("MAILKEEP_FAULT") else { return };
    if asked == name {
        std::process::abort();
    }
    if asked.as_encoded_bytes().strip_prefix(b"panic-") == Some(name.as_bytes()) {
        panic!("fault injected at {name}");
    }
}

/// How far `MAILKEEP_FAULT=clock+<seconds>` puts the clock ahead (zero without it). The tests
/// age tmp/ files this way: they age by ctime, which no test can set, and the shipped binary
/// is static, so faketime's LD_PRELOAD cannot reach it.
pub fn clock_skew() -> Duration {
    static SKEW: OnceLock<Duration> = OnceLock::new();
    *SKEW.get_or_init(|| {
        let asked = std::env::var("MAILKEEP_FAULT").ok();
        asked.and_then(|v| v.strip_prefix("clock+")?.parse().ok()).map_or(Duration::ZERO, Duration::from_secs)
    })
}
