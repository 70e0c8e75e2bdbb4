//! What we read from and add to a message: the From_ line, the header block (Message-ID,
//! Date), the header lines we prepend (and how to take them off again), and the CRLF-to-LF
//! stream transform.
//!
//! Everything here works on bytes: a message's content (8-bit, NUL, broken headers) must
//! never make a delivery fail or change.

use crate::envelope::{Sender, clean};
use crate::time::{self, Timestamp};

/// How much of a message we keep in memory to find the end of its header block.
pub const HEAD_LIMIT: usize = 256 * 1024;

/// A parsed mbox/Exim From_ line: `From <addr> <date>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FromLine {
    pub sender: Sender,
    pub date: Option<Timestamp>,
}

impl FromLine {
    /// Parses `line` (without its line end) if it starts with `From `.
    pub fn parse(line: &[u8]) -> Option<FromLine> {
        let (addr, date) = FromLine::split(line)?;
        Some(FromLine { sender: Sender::from_bytes(addr), date: time::parse_from_line_date(date) })
    }

    /// The address and the date text of a line that starts with `From `. A line with
    /// nothing but a date after `From ` has an empty address (the null sender): mblaze's
    /// `mexport` writes `From  Tue Jan  2 10:00:00 2024` so, and its weekday is no address.
    fn split(line: &[u8]) -> Option<(&[u8], &[u8])> {
        let rest = line.strip_prefix(b"From ")?.trim_ascii_start();
        let first = rest.split(|b| b.is_ascii_whitespace()).next().unwrap_or_default();
        // Only a date that starts as one does (`Tue Jan  2 ...`): `From ROOT Wed Jan ...` has
        // the address ROOT, which the date's words would also take for a zone name.
        if time::is_weekday_or_month(first) && time::parse_exact_from_line_date(rest).is_some() {
            return Some((&[], rest));
        }
        let end = rest.iter().position(|&b| b == b' ' || b == b'\t').unwrap_or(rest.len());
        Some(rest.split_at(end))
    }

    /// True for a whole From_ line: `From `, an address (or `MAILER-DAEMON`, or none for
    /// the null sender), then a date we read and nothing else. An mbox reader may split on
    /// it even with no blank line before it, as mblaze's `mexport` writes them; a body line
    /// "From here on" or "From 10:30 on, we meet" is none.
    pub fn is_complete(line: &[u8]) -> bool {
        FromLine::split(line).is_some_and(|(_, date)| time::parse_exact_from_line_date(date).is_some())
    }

    /// True for a line an mbox reader may split on: `From `, an address, and a date: one
    /// we can read, or at least a time of day (`hh:mm`), so that an odd date form still
    /// separates while a body line "From here on..." does not.
    pub fn looks_like_separator(line: &[u8]) -> bool {
        let Some(f) = FromLine::parse(line) else { return false };
        if f.date.is_some() {
            return true;
        }
        let rest = line[5..].trim_ascii_start();
        let after_addr = rest.iter().position(|&b| b == b' ').map_or(&[][..], |i| &rest[i..]);
        after_addr.windows(5).any(|w| {
            w[0].is_ascii_digit()
                && w[1].is_ascii_digit()
                && w[2] == b':'
                && w[3].is_ascii_digit()
                && w[4].is_ascii_digit()
        })
    }
}

/// What the header block tells us. All optional: a message without headers is still stored.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct HeaderInfo {
    pub message_id: Option<String>,
    pub date: Option<Timestamp>,
    pub gmail_labels: Option<String>,
    /// The message's own Return-Path header, if it has one.
    pub return_path: Option<String>,
}

impl HeaderInfo {
    /// Reads the headers at the start of `head` (which may hold more than the header block).
    pub fn parse(head: &[u8]) -> HeaderInfo {
        let block = &head[..header_block_len(head).unwrap_or(head.len())];
        HeaderInfo::from_fields(&wanted_fields(block))
    }

    /// Reads the header fields `fields` (a header block) with mail-parser.
    pub fn from_fields(fields: &[u8]) -> HeaderInfo {
        let Some(msg) = mail_parser::MessageParser::new().parse_headers(fields) else {
            return HeaderInfo::default();
        };
        let message_id = msg.message_id().map(normalise_message_id).filter(|id| !id.is_empty());
        let date = msg.date().map(|d| d.to_timestamp()).filter(|&t| t > 0);
        let gmail_labels = msg.header_raw("X-Gmail-Labels").map(|v| v.trim().to_string());
        let return_path = msg.header_raw("Return-Path").map(|v| v.trim().to_string());
        HeaderInfo { message_id, date, gmail_labels, return_path }
    }
}

/// The header fields `HeaderInfo` reads. Only these, with their continuation lines, go to
/// mail-parser: it would otherwise tokenize every `Received:` line of every message, the
/// largest user-space cost of a delivery and of a replay.
const WANTED: [&[u8]; 4] = [b"message-id", b"date", b"x-gmail-labels", b"return-path"];

/// The first field of `block` of each name in `WANTED`, in their order, ended by a blank
/// line. The first, not the last: with several Message-ID fields Python's `mailbox`,
/// Dovecot and mblaze key on the first; of several Return-Path fields the topmost is the
/// one the final delivery added (RFC 5321 4.4). mail-parser alone would return the last.
fn wanted_fields(block: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(256);
    let mut keep = false;
    let mut seen = [false; WANTED.len()];
    for line in block.split_inclusive(|&b| b == b'\n') {
        if !matches!(line.first(), Some(b' ' | b'\t')) {
            let wanted = line.iter().position(|&b| b == b':').and_then(|colon| {
                let name = line[..colon].trim_ascii_end();
                WANTED.iter().position(|w| name.eq_ignore_ascii_case(w))
            });
            keep = wanted.is_some_and(|i| !std::mem::replace(&mut seen[i], true));
        }
        if keep {
            out.extend_from_slice(line);
            if !line.ends_with(b"\n") {
                out.push(b'\n');
            }
        }
    }
    out.push(b'\n');
    out
}

/// A Message-ID as a dedup key: no angle brackets, no white space.
pub fn normalise_message_id(id: &str) -> String {
    id.chars().filter(|c| !c.is_whitespace() && *c != '<' && *c != '>').collect()
}

/// The part of a message's start that replay reads its headers from (Message-ID, date,
/// labels): the header block, or the block's first `HEAD_LIMIT` bytes when it is longer.
/// One rule for a message coming in and for a file already stored, so that a second run
/// finds a message under the Message-ID the first run saw in it.
pub fn header_part(message: &[u8]) -> &[u8] {
    match header_block_len(message) {
        Some(n) if n <= HEAD_LIMIT => &message[..n],
        _ => &message[..message.len().min(HEAD_LIMIT)],
    }
}

/// Whether a message's first bytes are enough to read its headers from: the whole header
/// block, or `HEAD_LIMIT` bytes of it (else, read on until the message ends).
pub fn holds_header_part(start: &[u8]) -> bool {
    start.len() >= HEAD_LIMIT || header_block_len(start).is_some()
}

/// The length of the header block including the blank line that ends it, if `head` holds it.
pub fn header_block_len(head: &[u8]) -> Option<usize> {
    let mut line = 0;
    loop {
        let rest = &head[line..];
        if rest.starts_with(b"\n") {
            return Some(line + 1);
        }
        if rest.starts_with(b"\r\n") {
            return Some(line + 2);
        }
        line += rest.iter().position(|&b| b == b'\n')? + 1;
    }
}

/// A SHA-256 digest: what "the same message" is compared on (`BodyDigest`, replay's index
/// of ID-less messages). A cryptographic digest, stable across Rust releases and runs, so
/// that nobody can make a different message look like a stored one.
pub type Digest = [u8; 32];

/// The digest of a message's *body* as stored (LF line ends, after our header lines):
/// everything after its header block. Two copies of one message differ only in headers
/// (the provider's extra SMTP transactions, another Received line), so a copy counts as
/// already stored only when its Message-ID and this digest both match (issue 18).
///
/// A body says nothing when it is empty or blank (a one-time code in the Subject): then,
/// and when no blank line ends the header block within `HEAD_LIMIT` bytes, the whole
/// message is digested instead, headers included. The two kinds are kept apart by a tag
/// fed first, so a whole message never digests like another message's body. Fed in pieces
/// of any size, the result is the same: `deliver` digests what it writes as it streams,
/// replay digests a stored file.
pub struct BodyDigest {
    body: ring::digest::Context,
    /// The whole message so far, while it may still be needed: until the header block has
    /// ended and the body has shown a byte that is not white space.
    whole: Option<ring::digest::Context>,
    /// Bytes seen, whether the last one ended a line, and whether the header block ended.
    seen: usize,
    line_start: bool,
    in_body: bool,
}

const BODY_TAG: &[u8] = b"mailkeep body\0";
const WHOLE_TAG: &[u8] = b"mailkeep whole message\0";

impl Default for BodyDigest {
    fn default() -> BodyDigest {
        let tagged = |tag| {
            let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
            ctx.update(tag);
            ctx
        };
        BodyDigest { body: tagged(BODY_TAG), whole: Some(tagged(WHOLE_TAG)), seen: 0, line_start: true, in_body: false }
    }
}

impl BodyDigest {
    pub fn update(&mut self, mut bytes: &[u8]) {
        if !self.in_body && self.whole.is_some() {
            // The blank line ends the header block: a LF at a line's start.
            let room = HEAD_LIMIT.saturating_sub(self.seen);
            let scan = &bytes[..bytes.len().min(room)];
            let after_lf = |i: usize| if i == 0 { self.line_start } else { scan[i - 1] == b'\n' };
            let end = (0..scan.len()).find(|&i| scan[i] == b'\n' && after_lf(i));
            let head = end.map_or(scan.len(), |i| i + 1);
            if head > 0 {
                self.line_start = bytes[head - 1] == b'\n';
            }
            self.seen += head;
            if let Some(whole) = self.whole.as_mut() {
                whole.update(&bytes[..head]);
            }
            bytes = &bytes[head..];
            match end {
                Some(_) => self.in_body = true,
                None if self.seen < HEAD_LIMIT => return,
                // No header block within HEAD_LIMIT: the whole message is what counts.
                None => self.body = self.whole.take().expect("checked above"),
            }
        }
        if let Some(whole) = self.whole.as_mut() {
            whole.update(bytes);
            // Once the body shows a byte that is not white space, the body alone counts.
            if self.in_body && bytes.iter().any(|b| !b.is_ascii_whitespace()) {
                self.whole = None;
            }
        }
        self.body.update(bytes);
    }

    pub fn finish(self) -> Digest {
        let ctx = self.whole.unwrap_or(self.body);
        digest_of(ctx)
    }
}

/// The digest a SHA-256 context ends with.
pub fn digest_of(ctx: ring::digest::Context) -> Digest {
    ctx.finish().as_ref().try_into().expect("SHA-256 is 32 bytes")
}

/// The size and SHA-256 of everything `input` holds, read in `buf`-sized pieces, each shown
/// to `keep_going` after it is hashed; `None` as soon as `keep_going` says false. The one
/// whole-file digest: a seal's and an audit entry's of the same file must be equal.
pub fn sha256_read(
    input: &mut impl std::io::Read,
    buf: &mut [u8],
    mut keep_going: impl FnMut(&[u8]) -> bool,
) -> std::io::Result<Option<(u64, Digest)>> {
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
    let mut size = 0u64;
    loop {
        let n = match input.read(buf) {
            Ok(0) => return Ok(Some((size, digest_of(ctx)))),
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        ctx.update(&buf[..n]);
        size += n as u64;
        if !keep_going(&buf[..n]) {
            return Ok(None);
        }
    }
}

/// Lower-case hex, as digests and ids are written in files (seals, the audit log, root.json).
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The SHA-256 of `bytes`.
pub fn sha256(bytes: &[u8]) -> Digest {
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
    ctx.update(bytes);
    digest_of(ctx)
}

/// Who the copy is for, as the header lines we prepend record it.
pub struct Stamp<'a> {
    pub sender: &'a Sender,
    /// The mailbox owner's address (Delivered-To).
    pub owner: &'a [u8],
    /// For a Sent copy: every envelope recipient, so Bcc recipients are recorded.
    pub envelope_to: Option<&'a [Vec<u8>]>,
}

impl Stamp<'_> {
    /// `Return-Path:`, `Delivered-To:` and, for a Sent copy with known recipients,
    /// `Envelope-To:` folded at 78 columns. Every value is cleaned: no CR, LF or NUL from an argument gets through.
    pub fn header_lines(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(128);
        out.extend_from_slice(b"Return-Path: <");
        out.extend_from_slice(&clean(self.sender.address().unwrap_or_default()));
        out.extend_from_slice(b">\nDelivered-To: ");
        out.extend_from_slice(&clean(self.owner));
        out.push(b'\n');
        if let Some(rcpts) = self.envelope_to.filter(|r| !r.is_empty()) {
            let cleaned: Vec<Vec<u8>> = rcpts.iter().map(|r| clean(r)).collect();
            out.extend_from_slice(&fold_list(b"Envelope-To:", &cleaned, 78));
        }
        out
    }

    /// The length of the lines `header_lines` wrote at the start of `stored`: Return-Path
    /// and Delivered-To, and with `envelope_to` (a Sent copy `deliver` stored) an
    /// Envelope-To field. Each value is cleaned, so each line ends at its first LF; the
    /// field is folded only where `fold_list` folds, after an item's comma and before a
    /// space. (Only a last recipient that itself ends in a comma, before a message that
    /// starts with a space, reads as folded when it was not.)
    pub fn lines_len(stored: &[u8], envelope_to: bool) -> usize {
        let line_end = |at: usize| find_byte(b'\n', &stored[at..]).map_or(stored.len(), |i| at + i + 1);
        let mut len = 0;
        for name in [&b"Return-Path: <"[..], b"Delivered-To: "] {
            if stored[len..].starts_with(name) {
                len = line_end(len);
            }
        }
        if envelope_to && stored[len..].starts_with(b"Envelope-To:") {
            loop {
                let end = line_end(len);
                let folded = stored[len..end].ends_with(b",\n") && stored[end..].starts_with(b" ");
                len = end;
                if !folded {
                    break;
                }
            }
        }
        len
    }

    /// `stored` without the lines `header_lines` wrote (`lines_len`): the message as it came.
    pub fn strip(stored: &[u8], envelope_to: bool) -> &[u8] {
        &stored[Stamp::lines_len(stored, envelope_to)..]
    }
}

/// The label `export --folder all` gives each message, by folder, as an `X-Gmail-Labels`
/// line among our header lines: Gmail-style importers and `replay --direction auto` put the
/// message back into its folder by it.
pub const EXPORT_LABELS: [&str; 3] = ["Inbox", "Sent", "Chat"];

/// The line `export --folder all` puts right after our header lines, before the label: what
/// tells replay the label line is the export's own. Our Return-Path and Delivered-To lines
/// followed by an `X-Gmail-Labels` line alone are no proof: dovecot-lda writes its mbox so,
/// and such a message's label line is its own, to be stored.
pub const EXPORT_MARKER: &[u8] = b"X-Mailkeep-Export: 1\n";

/// Where `export --folder all` put its marker and label lines in a message: right after our
/// header lines (`Stamp::lines_len`, with an Envelope-To field for a Sent copy).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExportLabel {
    /// The length of our header lines before it.
    pub stamp_len: usize,
    /// The length of the marker and label lines.
    pub line_len: usize,
    pub label: &'static str,
}

impl ExportLabel {
    /// The lines an export puts after our header lines: the marker, then
    /// `X-Gmail-Labels: Inbox`.
    pub fn lines(label: &str) -> Vec<u8> {
        let mut lines = EXPORT_MARKER.to_vec();
        lines.extend_from_slice(format!("X-Gmail-Labels: {label}\n").as_bytes());
        lines
    }

    /// The lines an export placed at the start of `message` (a From_ line's message as an
    /// mbox gives it): our Return-Path and Delivered-To lines, an Envelope-To field or not,
    /// then exactly `EXPORT_MARKER` and `X-Gmail-Labels: <one of EXPORT_LABELS>`. Without
    /// the marker right there (dovecot-lda's mbox, Takeout, any other) there is none: the
    /// message is stored whole.
    pub fn find(message: &[u8]) -> Option<ExportLabel> {
        if !message.starts_with(b"Return-Path: <") {
            return None;
        }
        let without = Stamp::lines_len(message, false);
        if !message[..without].windows(14).any(|w| w == b"\nDelivered-To:") {
            return None;
        }
        [without, Stamp::lines_len(message, true)].into_iter().find_map(|stamp_len| {
            let rest = &message[stamp_len..];
            EXPORT_LABELS.iter().find_map(|&label| {
                let line = ExportLabel::lines(label);
                rest.starts_with(&line).then_some(ExportLabel { stamp_len, line_len: line.len(), label })
            })
        })
    }
}

/// `name item, item, ...` folded so that no line passes `width` columns unless one item
/// alone is longer; continuation lines start with a space.
pub fn fold_list(name: &[u8], items: &[Vec<u8>], width: usize) -> Vec<u8> {
    let mut out = name.to_vec();
    let mut col = name.len();
    for (i, item) in items.iter().enumerate() {
        let last = i + 1 == items.len();
        let need = 1 + item.len() + usize::from(!last);
        if i > 0 && col + need > width {
            out.extend_from_slice(b"\n");
            col = 0;
        }
        out.push(b' ');
        out.extend_from_slice(item);
        if !last {
            out.push(b',');
        }
        col += need;
    }
    out.push(b'\n');
    out
}

/// The index of the first `byte` in `hay`, by glibc's memchr. A byte-at-a-time search was a
/// fifth of a delivery's own instructions; glibc's is vectorised and picked for this CPU at
/// start-up anyway, where the memchr crate queries the CPU again on first use (std's feature
/// detection: several cpuid, each a trap to the hypervisor on a VM, 3.6 us here). Measured
/// for issue 19 (`bench/ab.py -n 300`, static release builds, 14 runs on a shared 2-core VM,
/// so noisy): with the crate, deliver took 2.0-3.5% more CPU in every run, 0.02-0.05 ms a
/// message of 0.9-1.7 ms. Hence libc, and the one `unsafe` below.
fn find_byte(byte: u8, hay: &[u8]) -> Option<usize> {
    // SAFETY: memchr reads at most hay.len() bytes from the start of hay, a valid slice.
    let found = unsafe { libc::memchr(hay.as_ptr().cast(), byte.into(), hay.len()) };
    (!found.is_null()).then(|| found as usize - hay.as_ptr() as usize)
}

/// The stored form of a message body as the README states it, written the plain way: CRLF
/// becomes LF (a lone CR stays), and with `drop_final` one final LF goes. The reference
/// `LfStream` is checked against, by the property tests and the fuzz targets.
#[doc(hidden)]
pub fn model_lf(input: &[u8], drop_final: bool) -> Vec<u8> {
    let mut out = Vec::with_capacity(input.len());
    let mut i = 0;
    while i < input.len() {
        if input[i] == b'\r' && input.get(i + 1) == Some(&b'\n') {
            out.push(b'\n');
            i += 2;
        } else {
            out.push(input[i]);
            i += 1;
        }
    }
    if drop_final && out.last() == Some(&b'\n') {
        out.pop();
    }
    out
}

/// Streams a message body into its stored form: CRLF becomes LF (a lone CR stays), and,
/// when Exim's default `message_suffix` is known to be there, the one extra final LF goes.
#[derive(Debug, Default)]
pub struct LfStream {
    pending_cr: bool,
    drop_final_lf: bool,
    held_lf: bool,
}

impl LfStream {
    pub fn new(drop_final_lf: bool) -> LfStream {
        LfStream { drop_final_lf, ..LfStream::default() }
    }

    /// Appends the transformed `input` to `out`, holding back what the next chunk decides.
    pub fn push(&mut self, input: &[u8], out: &mut Vec<u8>) {
        if input.is_empty() {
            return;
        }
        if self.held_lf {
            out.push(b'\n');
            self.held_lf = false;
        }
        let mut rest = input;
        if self.pending_cr {
            self.pending_cr = false;
            if rest[0] != b'\n' {
                out.push(b'\r');
            }
        }
        while let Some(i) = find_byte(b'\r', rest) {
            out.extend_from_slice(&rest[..i]);
            match rest.get(i + 1) {
                Some(b'\n') => {}
                Some(_) => out.push(b'\r'),
                None => self.pending_cr = true,
            }
            rest = &rest[i + 1..];
        }
        out.extend_from_slice(rest);
        if self.drop_final_lf && !self.pending_cr && out.last() == Some(&b'\n') {
            out.pop();
            self.held_lf = true;
        }
    }

    /// Ends the stream: a CR at the very end is kept; a held final LF is the suffix, dropped.
    pub fn finish(&mut self, out: &mut Vec<u8>) {
        if self.pending_cr {
            out.push(b'\r');
            self.pending_cr = false;
        }
        self.held_lf = false;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lf(chunks: &[&[u8]], drop_final: bool) -> Vec<u8> {
        let mut s = LfStream::new(drop_final);
        let mut out = Vec::new();
        for c in chunks {
            s.push(c, &mut out);
        }
        s.finish(&mut out);
        out
    }

    #[test]
    fn crlf_becomes_lf_even_across_chunk_boundaries() {
        assert_eq!(lf(&[b"a\r\nb\r", b"\nc\r\n"], false), b"a\nb\nc\n");
        assert_eq!(lf(&[b"a\r", b"b\r"], false), b"a\rb\r");
        assert_eq!(lf(&[b"a\r\r\n"], false), b"a\r\n");
    }

    #[test]
    fn default_suffix_newline_is_dropped_once() {
        assert_eq!(lf(&[b"body\n", b"\n"], true), b"body\n");
        assert_eq!(lf(&[b"body\n\n"], true), b"body\n");
        assert_eq!(lf(&[b"body\r\n\r\n"], true), b"body\n");
        assert_eq!(lf(&[b"body\n\n", b""], true), b"body\n");
        assert_eq!(lf(&[b"body\n", b"more\n"], true), b"body\nmore");
        assert_eq!(lf(&[b"no final newline"], true), b"no final newline");
    }

    #[test]
    fn from_line_in_asctime_and_takeout_forms() {
        let f = FromLine::parse(b"From alice@example.org Wed Jan  1 00:00:00 2020").unwrap();
        assert_eq!(f.sender.address(), Some(&b"alice@example.org"[..]));
        assert_eq!(f.date, Some(1577836800));
        let t = FromLine::parse(b"From 1234567890123@xxx Wed Jan 01 00:00:00 +0100 2020").unwrap();
        assert_eq!(t.date, Some(1577836800 - 3600));
        let null = FromLine::parse(b"From MAILER-DAEMON Wed Jan  1 00:00:00 2020").unwrap();
        assert_eq!(null.sender, Sender::null());
        // mexport's for a null sender: no address, and the weekday is none.
        let none = FromLine::parse(b"From  Tue Jan  2 10:00:00 2024").unwrap();
        assert_eq!((none.sender, none.date), (Sender::null(), Some(1704189600)));
        // An upper-case address is an address, not a zone name (issue 18 review).
        let root = FromLine::parse(b"From ROOT Wed Jan  1 00:00:00 2020").unwrap();
        assert_eq!(root.sender.address(), Some(&b"ROOT"[..]));
    }

    #[test]
    fn body_text_starting_with_from_is_no_separator() {
        assert!(FromLine::looks_like_separator(b"From a@b Sat Nov 28 20:31:22 2026"));
        assert!(!FromLine::looks_like_separator(b"From here on, we agree."));
        assert!(!FromLine::looks_like_separator(b">From a@b Sat Nov 28 20:31:22 2026"));
        assert!(FromLine::looks_like_separator(b"From a@b 2020-03-03T03:03:03Z"));
        assert!(!FromLine::looks_like_separator(b"From 10:30 on, we meet"));
    }

    #[test]
    fn a_complete_from_line_has_an_address_and_only_a_date_after_it() {
        for whole in [
            &b"From a@b Sat Nov 28 20:31:22 2026"[..],
            b"From MAILER-DAEMON Wed Jan  1 00:00:00 2020",
            b"From nobody Wed Dec 31 23:59:59 1969",
            b"From  Tue Jan  2 10:00:00 2024",
            b"From 1234567890123@xxx Wed Jan 01 00:00:00 +0000 2020",
        ] {
            assert!(FromLine::is_complete(whole), "{}", String::from_utf8_lossy(whole));
        }
        for not in [
            &b"From here on, we agree."[..],
            b"From 10:30 on, we meet",
            b"From John on Jan 5 at 10:30 2024 we met",
            b"From a@b 2020-03-03T03:03:03Z",
            b"From a@b Wed Jan  1 00:00:00 2020 remote from uucp",
            b">From a@b Sat Nov 28 20:31:22 2026",
            b"From ",
        ] {
            assert!(!FromLine::is_complete(not), "{}", String::from_utf8_lossy(not));
        }
    }

    #[test]
    fn header_info_finds_message_id_date_and_labels() {
        let h = HeaderInfo::parse(
            b"Message-ID: < abc@x >\r\nDate: Wed, 01 Jan 2020 00:00:00 +0000\r\nX-Gmail-Labels: Sent,Opened\r\n\r\nbody Message-ID: <no@x>\n",
        );
        assert_eq!(h.message_id.as_deref(), Some("abc@x"));
        assert_eq!(h.date, Some(1577836800));
        assert_eq!(h.gmail_labels.as_deref(), Some("Sent,Opened"));
        assert_eq!(h.return_path, None);
        assert_eq!(HeaderInfo::parse(b"no headers at all"), HeaderInfo::default());
        assert_eq!(HeaderInfo::parse(b"Message-ID: <>\n\n").message_id, None);
    }

    #[test]
    fn stamp_writes_clean_header_lines() {
        let sender = Sender::from_bytes(b"a@x");
        let rcpts = vec![b"b@y".to_vec(), b"c@z\r\nBcc: evil".to_vec()];
        let s = Stamp { sender: &sender, owner: b"a@x", envelope_to: Some(&rcpts) };
        assert_eq!(s.header_lines(), b"Return-Path: <a@x>\nDelivered-To: a@x\nEnvelope-To: b@y, c@z__Bcc: evil\n");
        let null = Sender::null();
        let s = Stamp { sender: &null, owner: b"b@y", envelope_to: None };
        assert_eq!(s.header_lines(), b"Return-Path: <>\nDelivered-To: b@y\n");
    }

    #[test]
    fn our_lines_and_a_folded_envelope_to_are_measured_exactly() {
        let stored = b"Return-Path: <a@b>\nDelivered-To: c@d\nEnvelope-To: x@y,\n z@w\nSubject: s\n\nbody\n";
        assert_eq!(Stamp::strip(stored, false), b"Envelope-To: x@y,\n z@w\nSubject: s\n\nbody\n");
        assert_eq!(Stamp::strip(stored, true), b"Subject: s\n\nbody\n");
        assert_eq!(Stamp::lines_len(b"Subject: s\n", true), 0);
        // A message whose first line starts with a space is no fold of an unfolded field.
        let stored = b"Return-Path: <a@b>\nDelivered-To: c@d\nEnvelope-To: x@y\n odd first line\n\nbody\n";
        assert_eq!(Stamp::strip(stored, true), b" odd first line\n\nbody\n");
    }

    #[test]
    fn an_export_label_is_found_only_right_after_our_lines() {
        let inbox =
            b"Return-Path: <a@b>\nDelivered-To: c@d\nX-Mailkeep-Export: 1\nX-Gmail-Labels: Inbox\nSubject: s\n\nb\n";
        let found = ExportLabel::find(inbox).unwrap();
        assert_eq!((found.stamp_len, found.line_len, found.label), (37, 43, "Inbox"));
        let sent = b"Return-Path: <a@b>\nDelivered-To: a@b\nEnvelope-To: x@y,\n z@w\nX-Mailkeep-Export: 1\nX-Gmail-Labels: Sent\n\nb\n";
        assert_eq!(ExportLabel::find(sent).map(|l| l.label), Some("Sent"));
        for not in [
            &b"X-Gmail-Labels: Inbox\n\nbody\n"[..],
            // dovecot-lda's mbox layout: the label line is the message's own.
            b"Return-Path: <a@b>\nDelivered-To: c@d\nX-Gmail-Labels: Inbox\nSubject: s\n\nbody\n",
            b"Return-Path: <a@b>\nDelivered-To: c@d\nX-Gmail-Labels: Inbox\nX-Mailkeep-Export: 1\n\n",
            b"Return-Path: <a@b>\nDelivered-To: c@d\nX-Mailkeep-Export: 1\nSubject: s\n\n",
            b"Return-Path: <a@b>\nX-Gmail-Labels: Inbox\n\n",
            b"Return-Path: <a@b>\nDelivered-To: c@d\nX-Original-To: c@d\nX-Gmail-Labels: Inbox\n\n",
            b"Return-Path: <a@b>\nDelivered-To: c@d\nX-Gmail-Labels: Inbox,Important\n\n",
        ] {
            assert_eq!(ExportLabel::find(not), None, "{}", String::from_utf8_lossy(not));
        }
    }

    #[test]
    fn envelope_to_folds_at_78_columns() {
        let rcpts: Vec<Vec<u8>> = (0..40).map(|i| format!("user{i:02}@example.org").into_bytes()).collect();
        let folded = fold_list(b"Envelope-To:", &rcpts, 78);
        for line in folded.split(|&b| b == b'\n').filter(|l| !l.is_empty()) {
            assert!(line.len() <= 78, "{}", String::from_utf8_lossy(line));
        }
        let joined = String::from_utf8(folded).unwrap().replace("\n ", " ");
        assert_eq!(joined.matches('@').count(), 40);
    }

    fn body_digest(pieces: &[&[u8]]) -> Digest {
        let mut d = BodyDigest::default();
        pieces.iter().for_each(|p| d.update(p));
        d.finish()
    }

    fn tagged(tag: &[u8], bytes: &[u8]) -> Digest {
        sha256(&[tag, bytes].concat())
    }

    #[test]
    fn the_body_digest_ignores_headers_and_how_the_message_was_cut() {
        let a = body_digest(&[b"Received: x\nSubject: s\n\nbody\n"]);
        assert_eq!(a, body_digest(&[b"Subject: s\n", b"\n", b"body\n"]), "pieces of any size");
        assert_eq!(a, body_digest(&[b"Sub", b"ject: other\n\nbo", b"dy\n"]), "other headers, same body");
        assert_eq!(a, body_digest(&[b"Subject: s\n\n", b"", b"body\n"]), "an empty piece");
        assert_eq!(a, tagged(BODY_TAG, b"body\n"));
        assert_ne!(a, body_digest(&[b"Subject: s\n\nbody!\n"]));
        assert_eq!(body_digest(&[b"\nall body\n"]), tagged(BODY_TAG, b"all body\n"), "an empty header block");
    }

    /// Issue 18 review: an empty or blank body tells nothing apart, and a whole message must
    /// never digest like another message's body.
    #[test]
    fn a_blank_body_or_a_missing_header_end_digests_the_whole_message_tagged_apart() {
        let one = b"Subject: code 111111\n\n\n";
        assert_eq!(body_digest(&[one]), tagged(WHOLE_TAG, one));
        assert_ne!(body_digest(&[one]), body_digest(&[b"Subject: code 999999\n\n\n"]));
        assert_ne!(body_digest(&[b"S: a\n\n"]), body_digest(&[b"S: b\n\n"]), "an empty body");
        let spaced: &[&[u8]] = &[b"S: a\n\n \n", b"\n\t\n", b"text\n"];
        assert_eq!(body_digest(spaced), tagged(BODY_TAG, b" \n\n\t\ntext\n"), "white space, then text");
        assert_eq!(body_digest(&[b"A: b\n"]), tagged(WHOLE_TAG, b"A: b\n"), "no blank line");
        let inner = b"A: b\n";
        let outer = [&b"S: x\n\n"[..], inner].concat();
        assert_ne!(body_digest(&[inner]), body_digest(&[&outer]), "a message as another one's body");
    }

    #[test]
    fn a_header_block_longer_than_head_limit_makes_the_whole_message_the_body() {
        let long = format!("X: {}\n\nbody\n", "y".repeat(HEAD_LIMIT));
        let (first, rest) = long.as_bytes().split_at(1000);
        assert_eq!(body_digest(&[first, rest]), tagged(WHOLE_TAG, long.as_bytes()));
        let fits = format!("X: {}\n\nbody\n", "y".repeat(HEAD_LIMIT - 10));
        assert_eq!(body_digest(&[fits.as_bytes()]), tagged(BODY_TAG, b"body\n"));
        let byte_by_byte: Vec<&[u8]> = fits.as_bytes().chunks(1).collect();
        assert_eq!(body_digest(&byte_by_byte), tagged(BODY_TAG, b"body\n"), "cut anywhere");
    }

    #[test]
    fn the_first_message_id_and_the_topmost_return_path_count() {
        let h = HeaderInfo::parse(
            b"Return-Path: <final@x>\nMessage-ID: <first@x>\nReturn-Path: <earlier@x>\nMessage-ID: <second@x>\n\n",
        );
        assert_eq!(h.message_id.as_deref(), Some("first@x"));
        assert_eq!(h.return_path.as_deref(), Some("<final@x>"));
    }

    #[test]
    fn header_block_ends_at_first_blank_line() {
        assert_eq!(header_block_len(b"A: b\n\nbody"), Some(6));
        assert_eq!(header_block_len(b"A: b\r\n\r\nbody"), Some(8));
        assert_eq!(header_block_len(b"\nbody"), Some(1));
        assert_eq!(header_block_len(b"A: b\n"), None);
    }
}
