//! One line per message, to syslog (facility mail, ident mailkeep) through the local Unix
//! socket, or to stderr when no socket answers. Connected only when a line is written, so
//! start-up costs nothing.

use std::cell::RefCell;
use std::fmt;
use std::io::Write;

use crate::cli::LogTarget;

type Syslog = syslog::Logger<syslog::LoggerBackend, syslog::Formatter3164>;

pub struct Logger {
    target: LogTarget,
    /// Connected on the first line; `Some(None)` once a connection failed (then stderr).
    syslog: RefCell<Option<Option<Syslog>>>,
}

/// What happened to one message.
pub enum Outcome<'a> {
    Stored { file: &'a str, size: u64 },
    Duplicate { of: &'a str },
    Failed { reason: &'a str },
}

/// The fields of a log line.
pub struct Record<'a> {
    pub user: &'a str,
    pub folder: &'a str,
    pub msgid: Option<&'a str>,
    pub outcome: Outcome<'a>,
    /// Extra `key=value` pairs (e.g. `dedup=no-id`).
    pub extra: &'a str,
}

impl fmt::Display for Record<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "user={} folder={} msgid=<{}>", self.user, self.folder, self.msgid.unwrap_or(""))?;
        match &self.outcome {
            Outcome::Stored { file, size } => write!(f, " size={size} file={file} result=stored")?,
            Outcome::Duplicate { of } => write!(f, " result=duplicate of={of}")?,
            Outcome::Failed { reason } => write!(f, " result=failed reason={}", reason.replace('\n', " "))?,
        }
        if !self.extra.is_empty() {
            write!(f, " {}", self.extra)?;
        }
        Ok(())
    }
}

impl Logger {
    pub fn new(target: LogTarget) -> Logger {
        Logger { target, syslog: RefCell::new(None) }
    }

    /// A line that is not about one message (e.g. a skipped broken one).
    pub fn line(&self, text: &str) {
        match self.target {
            LogTarget::None => {}
            LogTarget::Stderr => stderr(text),
            LogTarget::Syslog => {
                if !self.to_syslog(text, true) {
                    stderr(text);
                }
            }
        }
    }

    /// Writes the record's line; never fails a delivery because logging failed. A failure
    /// is not repeated on stderr: `main` prints its one error line there for Exim.
    pub fn record(&self, record: &Record<'_>) {
        let failed = matches!(record.outcome, Outcome::Failed { .. });
        let text = record.to_string();
        match self.target {
            LogTarget::None => {}
            LogTarget::Stderr if failed => {}
            LogTarget::Stderr => stderr(&text),
            LogTarget::Syslog => {
                if !self.to_syslog(&text, failed) && !failed {
                    stderr(&text);
                }
            }
        }
    }
}

fn stderr(text: &str) {
    let _ = writeln!(std::io::stderr().lock(), "mailkeep: {text}");
}

impl Logger {
    fn to_syslog(&self, text: &str, is_error: bool) -> bool {
        let mut slot = self.syslog.borrow_mut();
        let conn = slot.get_or_insert_with(|| {
            let formatter = syslog::Formatter3164 {
                facility: syslog::Facility::LOG_MAIL,
                hostname: None,
                process: "mailkeep".into(),
                pid: std::process::id(),
            };
            syslog::unix(formatter).ok()
        });
        match conn {
            Some(logger) => if is_error { logger.err(text) } else { logger.info(text) }.is_ok(),
            None => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stored_line_has_the_documented_fields() {
        let r = Record {
            user: "alice",
            folder: "INBOX",
            msgid: Some("a@b"),
            outcome: Outcome::Stored { file: "1.M2P3Q1.h,S=10", size: 10 },
            extra: "",
        };
        assert_eq!(r.to_string(), "user=alice folder=INBOX msgid=<a@b> size=10 file=1.M2P3Q1.h,S=10 result=stored");
    }

    #[test]
    fn failure_reason_stays_on_one_line() {
        let r =
            Record { user: "a", folder: "Sent", msgid: None, outcome: Outcome::Failed { reason: "x\ny" }, extra: "" };
        assert_eq!(r.to_string(), "user=a folder=Sent msgid=<> result=failed reason=x y");
    }
}
