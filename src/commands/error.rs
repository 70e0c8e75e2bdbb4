//! Every error a command can end with, in one enum whose `exit` is one exhaustive `match`:
//! an error type without a variant here does not convert (`?` fails to compile), so no
//! failure can reach `main` unclassified and silently become "try again" (or a bounce).

use std::io;

use crate::cli::UsageError;
use crate::commands::accounts::AccountsError;
use crate::commands::check::CheckError;
use crate::commands::deliver::DeliverError;
use crate::commands::export::ExportError;
use crate::commands::generate::GenerateError;
use crate::commands::lmtp::LmtpError;
use crate::commands::retention::RetentionError;
use crate::commands::serve_config::ServeError;
use crate::commands::status::StatusError;
use crate::config::ConfigError;
use crate::dedup::DedupError;
use crate::envelope::EnvelopeError;
use crate::exit::{Classify, Exit};
use crate::maildir::MaildirError;
use crate::mbox::MboxError;
use crate::root::RootError;
use crate::seal::SealError;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Usage(#[from] UsageError),
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Envelope(#[from] EnvelopeError),
    #[error(transparent)]
    Root(#[from] RootError),
    #[error(transparent)]
    Maildir(#[from] MaildirError),
    #[error(transparent)]
    Mbox(#[from] MboxError),
    #[error(transparent)]
    Dedup(#[from] DedupError),
    #[error(transparent)]
    Deliver(#[from] DeliverError),
    #[error(transparent)]
    Check(#[from] CheckError),
    #[error(transparent)]
    Serve(#[from] ServeError),
    #[error(transparent)]
    Status(#[from] StatusError),
    #[error(transparent)]
    Accounts(#[from] AccountsError),
    #[error(transparent)]
    Generate(#[from] GenerateError),
    #[error(transparent)]
    Export(#[from] ExportError),
    #[error(transparent)]
    Seal(#[from] SealError),
    #[error(transparent)]
    Lmtp(#[from] LmtpError),
    /// Writing a command's report to stdout failed (a closed pipe, a full disk).
    #[error("cannot write to standard output: {0}")]
    Stdout(io::Error),
    /// A state the code should never reach: temporary, so a message is never bounced for it.
    #[error("{0} (a bug)")]
    Bug(&'static str),
    /// `source`, with what it means for the run said first; classified as `source`.
    #[error("{context}: {source}")]
    Context { context: String, source: Box<Error> },
    #[error(transparent)]
    Retention(#[from] RetentionError),
}

impl Error {
    /// This error, with `context` said before it; its exit status stays `self`'s.
    pub fn context(self, context: String) -> Error {
        Error::Context { context, source: Box::new(self) }
    }
}

impl Classify for Error {
    fn exit(&self) -> Exit {
        match self {
            Error::Usage(e) => e.exit(),
            Error::Config(e) => e.exit(),
            Error::Envelope(e) => e.exit(),
            Error::Root(e) => e.exit(),
            Error::Maildir(e) => e.exit(),
            Error::Mbox(e) => e.exit(),
            Error::Dedup(e) => e.exit(),
            Error::Deliver(e) => e.exit(),
            Error::Check(e) => e.exit(),
            Error::Serve(e) => e.exit(),
            Error::Status(e) => e.exit(),
            Error::Accounts(e) => e.exit(),
            Error::Generate(e) => e.exit(),
            Error::Export(e) => e.exit(),
            Error::Seal(e) => e.exit(),
            Error::Lmtp(e) => e.exit(),
            Error::Stdout(_) | Error::Bug(_) => Exit::TempFail,
            Error::Context { source, .. } => source.exit(),
            Error::Retention(e) => e.exit(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    #[test]
    fn a_bug_is_temporary_never_a_bounce() {
        assert_eq!(Error::Bug("the reader stopped").exit(), Exit::TempFail);
    }

    #[test]
    fn context_keeps_the_class_of_what_it_explains() {
        let broken = MboxError::Broken { path: PathBuf::from("a.mbox"), offset: 0, line: 1, what: "x".into() };
        let e = Error::from(broken).context("replay stopped".into());
        assert_eq!(e.exit(), Exit::DataErr);
        assert!(e.to_string().starts_with("replay stopped: a.mbox: broken message"), "{e}");
    }
}
