//! Any envelope values and message bytes: the header lines mailkeep writes hold no control
//! byte but their line ends and only lines it means to write; the CRLF stream gives the same
//! result however the input is cut into chunks, and that result is the documented
//! transformation; a user name is accepted only if it is a safe path component; and the
//! header parsers never panic.
#![no_main]

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;

use libfuzzer_sys::fuzz_target;
use mailkeep_fuzz::envelope::{Sender, User};
use mailkeep_fuzz::message::{FromLine, HeaderInfo, LfStream, Stamp, header_block_len, model_lf};

fuzz_target!(|data: &[u8]| {
    // Fields separated by 0xFE: sender, owner, recipients..., and the message last.
    let mut fields: Vec<&[u8]> = data.split(|&b| b == 0xfe).collect();
    let message = fields.pop().unwrap_or_default();
    let (sender, owner, rcpts) = match fields.as_slice() {
        [] => (&b""[..], &b""[..], &[][..]),
        [s] => (*s, &b""[..], &[][..]),
        [s, o, r @ ..] => (*s, *o, r),
    };
    let rcpts: Vec<Vec<u8>> = rcpts.iter().map(|r| r.to_vec()).collect();
    let sender = Sender::from_bytes(sender);
    let lines = Stamp { sender: &sender, owner, envelope_to: Some(&rcpts) }.header_lines();
    assert!(lines.ends_with(b"\n"));
    for line in lines[..lines.len() - 1].split(|&b| b == b'\n') {
        assert!(!line.iter().any(|&b| b < 0x20 || b == 0x7f), "control byte in {}", line.escape_ascii());
        let ours = line.starts_with(b"Return-Path: <")
            || line.starts_with(b"Delivered-To: ")
            || line.starts_with(b"Envelope-To:")
            || line.starts_with(b" ");
        assert!(ours, "a line mailkeep does not mean to write: {}", line.escape_ascii());
    }

    if let Ok(user) = User::parse(OsStr::from_bytes(owner)) {
        let u = user.as_str().as_bytes();
        assert!(!u.is_empty() && u.len() <= 64 && u[0] != b'.' && !u.contains(&b'/'));
        assert!(!u.windows(2).any(|w| w == b".."));
        assert!(u.iter().all(|&b| b.is_ascii_lowercase() || b.is_ascii_digit() || b".-_+=".contains(&b)));
    }

    for drop in [false, true] {
        let whole = {
            let mut s = LfStream::new(drop);
            let mut out = Vec::new();
            s.push(message, &mut out);
            s.finish(&mut out);
            out
        };
        assert_eq!(whole, model_lf(message, drop), "one chunk vs. the model");
        // Cut where the sender's bytes say.
        let mut s = LfStream::new(drop);
        let mut out = Vec::new();
        let mut rest = message;
        for &cut in sender.address().unwrap_or(b"\x01").iter().cycle().take(64) {
            if rest.is_empty() {
                break;
            }
            let n = usize::from(cut % 7).min(rest.len());
            s.push(&rest[..n], &mut out);
            rest = &rest[n..];
        }
        s.push(rest, &mut out);
        s.finish(&mut out);
        assert_eq!(out, whole, "chunked vs. whole");
    }

    if let Some(n) = header_block_len(message) {
        assert!(n <= message.len());
        let block = &message[..n];
        assert!(block == b"\n" || block == b"\r\n" || block.ends_with(b"\n\n") || block.ends_with(b"\n\r\n"));
    }
    let _ = HeaderInfo::parse(message);
    let first = message.split(|&b| b == b'\n').next().unwrap_or_default();
    let _ = FromLine::parse(first);
    let _ = FromLine::looks_like_separator(first);
});
