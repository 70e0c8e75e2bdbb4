//! Named failure points for the crash tests: with `MAILKEEP_FAULT=<name>` in the
//! environment the process aborts there, as a SIGKILL or power cut would stop it.
//! Exim clears the environment of pipe commands, so production runs never see it.

/// Aborts the process if the test asked for a crash at `name`.
pub fn point(name: &str) {
    if std::env::var_os("MAILKEEP_FAULT").is_some_and(|v| v == name) {
        std::process::abort();
    }
}
