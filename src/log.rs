//! One line per message, to syslog (facility mail, ident mailkeep) through the local Unix
//! socket, or to stderr when no socket answers. Connected only when a line is written, so
//! start-up costs nothing. Every line mailkeep prints goes through [`escape`] first, so a
//! control byte or a bidi override from a Message-ID, an address or a path cannot rewrite a
//! terminal or forge a log line.

use std::borrow::Cow;
use std::cell::RefCell;
use std::fmt;
use std::io::Write;

/// Where the one line per message goes (`--log`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogTarget {
    /// syslog, facility mail, ident mailkeep (falls back to stderr when no socket answers).
    Syslog,
    /// Standard error (Exim logs it with log_defer_output).
    Stderr,
    /// No per-message line; failures still print one line on stderr.
    None,
}

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
            Outcome::Failed { reason } => write!(f, " result=failed reason={reason}")?,
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
        let text = &escape(text);
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
        let text = escape(&record.to_string()).into_owned();
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

/// Prints `mailkeep: TEXT` on stderr, escaped: for the lines that are not about one message
/// (the one error line of `main`, warnings).
pub fn stderr_line(text: &str) {
    stderr(&escape(text));
}

/// Writes a line already escaped.
fn stderr(text: &str) {
    let _ = writeln!(std::io::stderr().lock(), "mailkeep: {text}");
}

/// `text` fit to be printed as (part of) one line: every control character (C0, DEL, C1,
/// so also CR and LF) becomes `\xNN` (`\u{NN}` above ASCII), every character that reorders
/// or hides text (bidi marks, embeddings, overrides and isolates, the line and paragraph
/// separators) becomes `\u{NNNN}`, and a backslash becomes `\\`, so that the escaped form
/// reads back unambiguously. Everything else, UTF-8 included, stays as it is.
pub fn escape(text: &str) -> Cow<'_, str> {
    if !text.chars().any(needs_escape) {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 16);
    for c in text.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            c if c.is_ascii_control() => out.push_str(&format!("\\x{:02x}", u32::from(c))),
            c if RAW_BYTES.contains(&c) => out.push_str(&format!("\\x{:02x}", u32::from(c) - 0xf700)),
            c if needs_escape(c) => out.push_str(&format!("\\u{{{:x}}}", u32::from(c))),
            c => out.push(c),
        }
    }
    Cow::Owned(out)
}

/// JSON text fit to be printed: the characters `escape` would escape and JSON leaves raw
/// (DEL, C1 controls, the bidi and line-separator marks) become `\uXXXX` escapes, which every
/// JSON reader reads back as the same characters. Only for text serde_json wrote: outside
/// strings JSON has no such characters, so each one found is inside a string.
pub fn escape_json(json: String) -> String {
    // JSON escapes C0 controls, `"` and `\\` itself; the rest it leaves raw.
    let left_raw = |c: char| c >= ' ' && c != '\\' && needs_escape(c);
    if !json.chars().any(left_raw) {
        return json;
    }
    let mut out = String::with_capacity(json.len() + 16);
    for c in json.chars() {
        if left_raw(c) {
            out.push_str(&format!("\\u{:04x}", u32::from(c)));
        } else {
            out.push(c);
        }
    }
    out
}

/// Where `raw_bytes_as_text` puts the bytes of a byte string that are not UTF-8 (a range of
/// the Private Use Area), so that `escape` prints each as the byte it was, `\xNN`.
const RAW_BYTES: std::ops::RangeInclusive<char> = '\u{f780}'..='\u{f7ff}';

/// A byte string as text for a message that `escape` prints: UTF-8 as it is, and each byte
/// that is not UTF-8 (only 0x80 to 0xff can be) as itself, `\xNN`, once printed.
pub fn raw_bytes_as_text(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len());
    for chunk in bytes.utf8_chunks() {
        out.push_str(chunk.valid());
        out.extend(chunk.invalid().iter().map(|&b| char::from_u32(0xf700 + u32::from(b)).unwrap_or('\u{fffd}')));
    }
    out
}

fn needs_escape(c: char) -> bool {
    c == '\\'
        || RAW_BYTES.contains(&c)
        || c.is_control()
        || matches!(c, '\u{061c}' | '\u{200e}' | '\u{200f}' | '\u{2028}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
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
    fn bytes_that_are_not_utf8_print_as_themselves() {
        let text = raw_bytes_as_text(b"\xffa\xe2\x80\xae\x1b\\");
        assert_eq!(escape(&text), "\\xffa\\u{202e}\\x1b\\\\");
    }

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
        assert_eq!(escape(&r.to_string()), "user=a folder=Sent msgid=<> result=failed reason=x\\x0ay");
    }

    #[test]
    fn escape_leaves_no_control_or_bidi_character_and_reads_back_unambiguously() {
        let raw = "a\x1b[31m\0b\x08\x7f\u{85}\u{202e}c\u{2028}\u{200f}\u{2066}\\x1b é\t";
        let want = "a\\x1b[31m\\x00b\\x08\\x7f\\u{85}\\u{202e}c\\u{2028}\\u{200f}\\u{2066}\\\\x1b é\\x09";
        assert_eq!(escape(raw), want);
        assert!(matches!(escape("plain <a@b> é"), Cow::Borrowed(_)));
    }
}
