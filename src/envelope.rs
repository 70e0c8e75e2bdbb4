//! Who and where: the mailbox owner, the envelope sender and recipients, and the checks
//! that keep a hostile argument from naming a path outside the root or forging a header.

use std::ffi::OsStr;
use std::fmt;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use crate::exit::{Classify, Exit};

/// An accounts file is read up to this size (a million accounts of 60 bytes).
pub const ACCOUNTS_MAX: u64 = 64 * 1024 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum EnvelopeError {
    #[error("unsafe user name '{0}': want 1 to 64 of [a-z0-9.-_+=], not starting with '.'")]
    UnsafeUser(String),
    #[error("unknown user {user:?}: not listed in {}", file.display())]
    UnknownUser { user: String, file: PathBuf },
    #[error("cannot read accounts file {}: {err}", path.display())]
    Accounts { path: PathBuf, err: std::io::Error },
}

impl Classify for EnvelopeError {
    fn exit(&self) -> Exit {
        match self {
            EnvelopeError::UnsafeUser(_) | EnvelopeError::UnknownUser { .. } => Exit::NoUser,
            // A missing list is most likely a cron job mid-way or a typo: retry, never bounce.
            EnvelopeError::Accounts { .. } => Exit::TempFail,
        }
    }
}

/// A validated mailbox owner: safe as one path component below the root.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User(String);

impl User {
    /// Lower-cases `raw` and accepts it only if it is a safe single path component.
    pub fn parse(raw: &OsStr) -> Result<User, EnvelopeError> {
        let bytes = raw.as_bytes();
        let shown = || show_bytes(bytes);
        let ok_byte = |b: u8| b.is_ascii_alphanumeric() || b".-_+=".contains(&b);
        let valid = (1..=64).contains(&bytes.len())
            && bytes.iter().all(|&b| ok_byte(b))
            && bytes[0] != b'.'
            && !bytes.windows(2).any(|w| w == b"..");
        if !valid {
            return Err(EnvelopeError::UnsafeUser(shown()));
        }
        // Only ASCII got through, so this cannot fail or change the length.
        Ok(User(String::from_utf8_lossy(bytes).to_ascii_lowercase()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Refuses the user unless `accounts` (Exim lsearch format) lists it.
    pub fn check_listed(&self, accounts: &Path) -> Result<(), EnvelopeError> {
        let text = crate::fsutil::read_config_file(accounts, ACCOUNTS_MAX)
            .map_err(|err| EnvelopeError::Accounts { path: accounts.to_path_buf(), err })?;
        if lsearch_keys(&text).any(|k| k.eq_ignore_ascii_case(self.0.as_bytes())) {
            Ok(())
        } else {
            Err(EnvelopeError::UnknownUser { user: self.0.clone(), file: accounts.to_path_buf() })
        }
    }
}

impl fmt::Display for User {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A byte string for an error message. Control bytes and bytes that are not UTF-8 stay as
/// they are: whatever prints the message escapes them (`log::escape`), once, each byte that
/// is not UTF-8 as `\xNN`.
pub fn show_bytes(bytes: &[u8]) -> String {
    crate::log::raw_bytes_as_text(bytes)
}

/// The keys of an Exim lsearch file: the text before the first colon or white space of each
/// line that is not blank, not a comment and not a continuation (leading white space).
/// A key may be quoted with double quotes.
pub fn lsearch_keys(text: &[u8]) -> impl Iterator<Item = &[u8]> {
    text.split(|&b| b == b'\n').filter_map(|line| {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        match line.first() {
            None | Some(b'#') | Some(b' ') | Some(b'\t') => None,
            Some(b'"') => {
                let rest = &line[1..];
                rest.iter().position(|&b| b == b'"').map(|end| &rest[..end])
            }
            Some(_) => {
                let end = line.iter().position(|&b| b == b':' || b.is_ascii_whitespace());
                Some(&line[..end.unwrap_or(line.len())])
            }
        }
    })
}

/// Makes an argument safe to become part of a header line: CR, LF, NUL and every other
/// control byte become `_`, as qmail-local does with a newline.
pub fn clean(value: &[u8]) -> Vec<u8> {
    value.iter().map(|&b| if b < 0x20 || b == 0x7f { b'_' } else { b }).collect()
}

/// The envelope sender: `None` is the null sender `<>` (bounces).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sender(Option<Vec<u8>>);

impl Sender {
    pub fn null() -> Sender {
        Sender(None)
    }

    /// From an Exim value: empty, `<>` and Exim's `MAILER-DAEMON` stand-in are the null sender.
    pub fn from_bytes(raw: &[u8]) -> Sender {
        let raw = raw.trim_ascii();
        let raw = raw.strip_prefix(b"<").and_then(|r| r.strip_suffix(b">")).unwrap_or(raw);
        if raw.is_empty() || raw.eq_ignore_ascii_case(b"MAILER-DAEMON") {
            Sender(None)
        } else {
            Sender(Some(clean(raw)))
        }
    }

    pub fn address(&self) -> Option<&[u8]> {
        self.0.as_deref()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user(s: &[u8]) -> Result<User, EnvelopeError> {
        User::parse(OsStr::from_bytes(s))
    }

    #[test]
    fn accepts_ordinary_names_and_lowercases_them() {
        assert_eq!(user(b"Alice").unwrap().as_str(), "alice");
        assert_eq!(user(b"j.doe+tag=x_y-z").unwrap().as_str(), "j.doe+tag=x_y-z");
        assert!(user(&[b'a'; 64]).is_ok());
    }

    #[test]
    fn refuses_names_that_could_leave_the_root() {
        for bad in [
            &b"../x"[..],
            b"a/b",
            b"/",
            b".Sent",
            b".",
            b"..",
            b"a..b",
            b"",
            b"a\0b",
            b"a\nb",
            b"a\rb",
            b"a b",
            b"\x7f",
            b"\xc3\xa9",
            &[b'a'; 65],
        ] {
            assert!(user(bad).is_err(), "{:?} was accepted", String::from_utf8_lossy(bad));
        }
    }

    #[test]
    fn lsearch_keys_follow_exim_rules() {
        let text = b"# accounts\nalice\nbob: data\n\ncarol  anything\n  continued\n\"dave x\": q\r\nerin\r\n";
        let keys: Vec<&[u8]> = lsearch_keys(text).collect();
        assert_eq!(keys, vec![&b"alice"[..], b"bob", b"carol", b"dave x", b"erin"]);
    }

    #[test]
    fn clean_turns_control_bytes_into_underscores() {
        assert_eq!(clean(b"a\r\nB: x\0y\tz"), b"a__B: x_y_z");
        assert_eq!(clean("é".as_bytes()), "é".as_bytes());
    }

    #[test]
    fn null_sender_forms_are_recognised() {
        for null in [&b""[..], b"<>", b"MAILER-DAEMON", b"  "] {
            assert_eq!(Sender::from_bytes(null), Sender::null());
        }
        assert_eq!(Sender::from_bytes(b"<a@b>").address(), Some(&b"a@b"[..]));
        assert_eq!(Sender::from_bytes(b"a@b\nX: y").address(), Some(&b"a@b_X: y"[..]));
    }
}
