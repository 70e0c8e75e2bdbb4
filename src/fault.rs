//! Named failure points for the crash tests: with `MAILKEEP_FAULT=<name>` in the
//! environment the process aborts there, as a SIGKILL or power cut would stop it.
//! Exim clears the environment of pipe commands, so production runs never see it.

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
