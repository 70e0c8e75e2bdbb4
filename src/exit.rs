//! The exit-status contract with Exim: which failures defer (75/73) and which bounce.
//!
//! Exim's pipe transport treats 75 and 73 (`temp_errors`) as "try again later" and every
//! other non-zero status as a permanent failure that bounces to the original sender, an
//! outside party. So anything not certainly permanent must end as `TempFail`.

use std::process::ExitCode;

/// sysexits(3) codes mailkeep uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    Ok = 0,
    /// Findings were reported (used by `check`): not a delivery status.
    Problems = 1,
    Usage = 64,
    DataErr = 65,
    /// An input file named on the command line is missing or unreadable (`replay`).
    NoInput = 66,
    NoUser = 67,
    CantCreate = 73,
    TempFail = 75,
    Config = 78,
}

impl Exit {
    pub fn code(self) -> u8 {
        self as u8
    }

    /// True when Exim keeps the message queued and retries on this status.
    pub fn defers(self) -> bool {
        matches!(self, Exit::TempFail | Exit::CantCreate)
    }
}

impl From<Exit> for ExitCode {
    fn from(e: Exit) -> ExitCode {
        ExitCode::from(e.code())
    }
}

/// Errors that know which exit status they deserve. Everything else maps to `TempFail`
/// (`classify` in main.rs, which knows every error type).
pub trait Classify {
    fn exit(&self) -> Exit;
}

/// The status for an error chain: the first error in it that classifies itself wins;
/// an error nobody classified is unknown, and unknown means temporary.
pub fn classify(err: &anyhow::Error) -> Exit {
    macro_rules! first_of {
        ($cause:ident: $($t:ty),+) => { $(if let Some(e) = $cause.downcast_ref::<$t>() { return e.exit(); })+ };
    }
    for cause in err.chain() {
        first_of!(cause:
            crate::envelope::EnvelopeError,
            crate::maildir::MaildirError,
            crate::commands::deliver::DeliverError,
            crate::cli::UsageError,
            crate::dedup::DedupError,
            crate::mbox::MboxError,
            crate::commands::serve_config::ServeError,
            crate::commands::accounts::AccountsError,
            crate::config::ConfigError
        );
    }
    Exit::TempFail
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sysexits_values_are_the_ones_exim_expects() {
        assert_eq!(Exit::Usage.code(), 64);
        assert_eq!(Exit::DataErr.code(), 65);
        assert_eq!(Exit::NoInput.code(), 66);
        assert_eq!(Exit::NoUser.code(), 67);
        assert_eq!(Exit::CantCreate.code(), 73);
        assert_eq!(Exit::TempFail.code(), 75);
        assert_eq!(Exit::Config.code(), 78);
    }

    #[test]
    fn unknown_errors_are_temporary() {
        let e = anyhow::anyhow!("something nobody classified");
        assert_eq!(classify(&e), Exit::TempFail);
    }

    #[test]
    fn only_73_and_75_defer() {
        for e in [Exit::Ok, Exit::Usage, Exit::DataErr, Exit::NoInput, Exit::NoUser, Exit::Config] {
            assert!(!e.defers(), "{e:?}");
        }
        assert!(Exit::TempFail.defers() && Exit::CantCreate.defers());
    }
}
