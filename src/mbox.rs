//! A streaming mbox reader (mboxo, mboxrd, mboxcl2) that hands out each message in
//! chunks, so a many-gigabyte file is read in one pass with bounded memory.
//!
//! A message starts at a From_ line that begins the file or follows a blank line and looks
//! like one (`From <addr> <date>`); the blank line before it belongs to the separator. In
//! mboxo and mboxrd a complete From_ line (`FromLine::is_complete`) starts one with no blank
//! line before it too: mblaze's `mexport` and other tools write mbox files so, and Python's
//! mailbox and mutt split them there.
//! Lines are given LF line ends; mboxrd unescapes every `>+From ` by one level, mboxo
//! only `>From `, mboxcl2 takes the body length from Content-Length and unescapes nothing.
//!
//! The writer (`MboxrdWriter`, for `export`) is mboxrd, the one dialect every reader can
//! undo exactly: each `>*From ` line gets one more `>`, decided byte by byte, so a line of
//! any length streams through in constant memory.

use std::io::{self, BufRead, Write};
use std::path::{Path, PathBuf};

use crate::exit::{Classify, Exit};
use crate::message::{FromLine, LfStream, header_block_len};
use crate::time::{Timestamp, format_asctime};

/// How far auto-detection looks into a file.
pub const SNIFF: usize = 1024 * 1024;
/// A chunk handed out is about this big.
const CHUNK: usize = 64 * 1024;
/// A line longer than this is read in pieces of this size, so that memory stays bounded
/// for a file with a line of any length (a corrupt file, unwrapped binary data).
const LINE_PIECE: usize = 64 * 1024;
/// mboxcl2: how much of a header block is kept to find its Content-Length.
const CL_HEADERS: usize = 1024 * 1024;

/// An mbox dialect, as `replay --format` names it. `Auto` is a choice, not a dialect: a
/// reader decides it from the file at once, and its `format()` is never `Auto`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// Decide from the file (and say which).
    Auto,
    /// `>From ` escaping, one level only.
    Mboxo,
    /// `>+From ` escaping, every level reversible.
    Mboxrd,
    /// Content-Length headers mark message ends.
    Mboxcl2,
}

impl Format {
    pub fn name(self) -> &'static str {
        match self {
            Format::Auto => "auto",
            Format::Mboxo => "mboxo",
            Format::Mboxrd => "mboxrd",
            Format::Mboxcl2 => "mboxcl2",
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum MboxError {
    #[error("{}: not an mbox file: expected a 'From <address> <date>' line at the start, found '{found}'", path.display())]
    NotMbox { path: PathBuf, found: String },
    #[error("{}: broken message at byte {offset}, line {line}: {what}", path.display())]
    Broken { path: PathBuf, offset: u64, line: u64, what: String },
    #[error("cannot read {}: {err}", path.display())]
    Io { path: PathBuf, err: io::Error },
    #[error("cannot read {}: {err}", path.display())]
    NoInput { path: PathBuf, err: io::Error },
}

impl Classify for MboxError {
    fn exit(&self) -> Exit {
        match self {
            MboxError::NotMbox { .. } | MboxError::Broken { .. } => Exit::DataErr,
            MboxError::Io { .. } => Exit::TempFail,
            MboxError::NoInput { .. } => Exit::NoInput,
        }
    }
}

type Result<T> = std::result::Result<T, MboxError>;

/// Where a message starts, and its From_ line.
#[derive(Debug)]
pub struct MessageStart {
    pub from: FromLine,
    pub offset: u64,
    pub line: u64,
    /// The From_ line came right after a line of the message before, not after a blank
    /// line: in mboxo a body line of that form would start a message too (`Note`).
    pub without_blank: bool,
}

/// A separator line read ahead, with where it was.
struct Separator {
    text: Vec<u8>,
    offset: u64,
    line: u64,
    without_blank: bool,
}

pub struct MboxReader<R> {
    input: R,
    path: PathBuf,
    format: Format,
    /// Bytes consumed so far, and where the current line started.
    consumed: u64,
    line_start: u64,
    line_no: u64,
    /// The current line, or a piece of a long one (`LINE_PIECE`).
    line: Vec<u8>,
    /// `line` goes on a line begun in an earlier piece: it is no separator, no blank line
    /// and no quoted From_ line, only more of that line.
    continued: bool,
    /// `line` ends its line (with a newline, or at the end of the input).
    line_ends: bool,
    /// A CR ended a piece cut at `LINE_PIECE`: it is a CRLF's if the next piece starts
    /// with LF, else a byte of the line.
    pending_cr: bool,
    next: Option<Separator>,
    in_message: bool,
    /// The current message has a line after its From_ line.
    has_lines: bool,
    /// A blank line not yet given out: it may be the one before the next separator.
    pending_blank: bool,
    /// mboxcl2: still in the header block of the current message, and its text so far.
    in_headers: bool,
    headers: Vec<u8>,
    /// mboxcl2: body bytes left to give out, once the header block is through.
    body_left: Option<u64>,
    lf: LfStream,
    /// The format was auto-detected. An mboxo guess (no `>>From ` lines in the first MiB)
    /// turns mboxrd at the first such line later; up to it both read every line alike.
    auto: bool,
    /// Where the format turned out to be mboxrd, to be said once (`take_note`).
    note: Option<String>,
}

/// Chooses the format of a file from its first bytes, and says why.
pub fn detect(head: &[u8]) -> (Format, &'static str) {
    if content_length_fits(head) {
        return (Format::Mboxcl2, "Content-Length of the first message ends at a From_ line");
    }
    if head.windows(8).any(|w| w == b"\n>>From ") {
        return (Format::Mboxrd, "'>>From ' lines seen");
    }
    (Format::Mboxo, "no '>>From ' lines and no Content-Length in the first MiB; mboxrd from the first '>>From ' line")
}

fn content_length_fits(head: &[u8]) -> bool {
    let Some(first_nl) = head.iter().position(|&b| b == b'\n') else { return false };
    let msg = &head[first_nl + 1..];
    let Some(hlen) = header_block_len(msg) else { return false };
    let Some(n) = content_length(&msg[..hlen]).and_then(|n| usize::try_from(n).ok()) else { return false };
    // A Content-Length near usize::MAX must not wrap around to a small offset.
    match hlen.checked_add(n).and_then(|end| msg.get(end..)) {
        Some(rest) => rest.is_empty() || rest.starts_with(b"\nFrom ") || rest.starts_with(b"\r\nFrom "),
        None => false,
    }
}

/// The value of a Content-Length header in a header block.
fn content_length(headers: &[u8]) -> Option<u64> {
    headers.split(|&b| b == b'\n').find_map(|l| {
        let colon = l.iter().position(|&b| b == b':')?;
        let (name, value) = l.split_at(colon);
        if !name.eq_ignore_ascii_case(b"Content-Length") {
            return None;
        }
        std::str::from_utf8(&value[1..]).ok()?.trim().parse().ok()
    })
}

/// `>From ` (mboxo) or `>+From ` (mboxrd) lose one `>`.
fn unescape(format: Format, line: &[u8]) -> &[u8] {
    match format {
        Format::Mboxo if line.starts_with(b">From ") => &line[1..],
        Format::Mboxrd => {
            let quotes = line.iter().take_while(|&&b| b == b'>').count();
            if quotes > 0 && line[quotes..].starts_with(b"From ") { &line[1..] } else { line }
        }
        _ => line,
    }
}

impl<R: BufRead> MboxReader<R> {
    /// Starts reading `input`; `choice` Auto sniffs the first MiB. Returns the reader and
    /// a text saying which format and why.
    pub fn new(mut input: R, path: &Path, choice: Format) -> Result<(MboxReader<R>, String)> {
        let head = input.fill_buf().map_err(|err| MboxError::Io { path: path.to_path_buf(), err })?;
        let head = &head[..head.len().min(SNIFF)];
        let (format, why) = match choice {
            Format::Auto => {
                let (f, why) = detect(head);
                (f, format!("auto: {why}"))
            }
            given => (given, "given".into()),
        };
        let mut reader = MboxReader {
            input,
            path: path.to_path_buf(),
            format,
            consumed: 0,
            line_start: 0,
            line_no: 0,
            line: Vec::with_capacity(1024),
            continued: false,
            line_ends: true,
            pending_cr: false,
            next: None,
            in_message: false,
            has_lines: false,
            pending_blank: false,
            in_headers: false,
            headers: Vec::new(),
            body_left: None,
            lf: LfStream::new(false),
            auto: choice == Format::Auto,
            note: None,
        };
        // The first line that is not blank must be a From_ line (an empty file has none).
        while reader.read_line()? {
            if reader.is_blank() {
                continue;
            }
            if !reader.line_is_separator() {
                let text = reader.line.trim_ascii_end();
                let found = String::from_utf8_lossy(&text[..text.len().min(60)]).into_owned();
                return Err(MboxError::NotMbox { path: path.to_path_buf(), found });
            }
            reader.keep_separator(false);
            break;
        }
        Ok((reader, format!("{} ({why})", format.name())))
    }

    /// Reads one line into `self.line`, CRLF made LF, or the next piece of a line longer
    /// than `LINE_PIECE` (`continued`, `line_ends`); false at the end of input.
    fn read_line(&mut self) -> Result<bool> {
        self.line.clear();
        self.continued = !self.line_ends;
        if !self.continued {
            self.line_start = self.consumed;
        }
        let n = io::Read::take(&mut self.input, LINE_PIECE as u64)
            .read_until(b'\n', &mut self.line)
            .map_err(|err| MboxError::Io { path: self.path.clone(), err })?;
        self.consumed += n as u64;
        if std::mem::take(&mut self.pending_cr) && !self.line.starts_with(b"\n") {
            self.line.insert(0, b'\r');
        }
        if self.line.is_empty() {
            return Ok(false);
        }
        self.line_ends = self.line.ends_with(b"\n") || n < LINE_PIECE;
        if self.line_ends {
            self.line_no += 1;
        }
        if self.line.ends_with(b"\r\n") {
            self.line.truncate(self.line.len() - 2);
            self.line.push(b'\n');
        } else if !self.line_ends && self.line.ends_with(b"\r") {
            self.line.pop();
            self.pending_cr = true;
        }
        Ok(true)
    }

    /// A blank line (not the end of a long one).
    fn is_blank(&self) -> bool {
        !self.continued && self.line == b"\n"
    }

    /// A `>>+From ` line in a file read as mboxo by auto-detection: it is mboxrd.
    fn prove_rd(&mut self) {
        let quotes = self.line.iter().take_while(|&&b| b == b'>').count();
        if self.line[quotes..].starts_with(b"From ") {
            self.format = Format::Mboxrd;
            self.note = Some(format!(
                "{}: format mboxrd from line {} on (auto: the first '>>From ' line)",
                self.path.display(),
                self.line_no
            ));
        }
    }

    /// A line for the operator about the format, once.
    pub fn take_note(&mut self) -> Option<String> {
        self.note.take()
    }

    /// The format read now (an mboxo guess may have turned mboxrd).
    pub fn format(&self) -> Format {
        self.format
    }

    /// A From_ line at the start of the file or after a blank line.
    fn line_is_separator(&self) -> bool {
        self.starts_message(true)
    }

    /// Whether the line read starts a message: after a blank line one that looks like a
    /// From_ line; right after another line of the message only a complete one, and not in
    /// mboxcl2, where Content-Length says where a message ends. A From_ line right after the
    /// message's own is its first line (a tool that added a From_ line to a message that had
    /// one), not the start of another message that would leave this one empty.
    fn starts_message(&self, after_blank: bool) -> bool {
        if self.continued || !self.line_ends {
            return false;
        }
        let line = self.line.trim_ascii_end();
        if after_blank {
            FromLine::looks_like_separator(line)
        } else {
            self.has_lines && self.format != Format::Mboxcl2 && FromLine::is_complete(line)
        }
    }

    fn keep_separator(&mut self, without_blank: bool) {
        let text = self.line.trim_ascii_end().to_vec();
        self.next = Some(Separator { text, offset: self.line_start, line: self.line_no, without_blank });
        self.in_message = false;
        self.pending_blank = false;
    }

    fn broken(&self, what: String) -> MboxError {
        MboxError::Broken { path: self.path.clone(), offset: self.line_start, line: self.line_no, what }
    }

    /// Moves to the next message, skipping what is left of the current one. `None` at the
    /// end of the file.
    pub fn next_message(&mut self) -> Result<Option<MessageStart>> {
        let mut sink = Vec::new();
        while self.in_message {
            sink.clear();
            self.read_chunk(&mut sink)?;
        }
        let Some(sep) = self.next.take() else { return Ok(None) };
        let from = FromLine::parse(&sep.text).expect("a separator is a From_ line");
        self.in_message = true;
        self.has_lines = false;
        self.in_headers = self.format == Format::Mboxcl2;
        self.headers.clear();
        self.body_left = None;
        self.lf = LfStream::new(false);
        Ok(Some(MessageStart { from, offset: sep.offset, line: sep.line, without_blank: sep.without_blank }))
    }

    /// After a broken message: skip to the next line that can start a message. When the
    /// message ended already (an empty one ends at the next From_ line, which is then held
    /// as the next message's start), there is nothing to skip.
    pub fn resync(&mut self) -> Result<()> {
        self.body_left = None;
        self.in_headers = false;
        if !self.in_message {
            return Ok(());
        }
        let mut after_blank = self.is_blank();
        while self.read_line()? {
            if self.starts_message(after_blank) {
                self.keep_separator(!after_blank);
                return Ok(());
            }
            after_blank = self.is_blank();
        }
        self.in_message = false;
        Ok(())
    }

    /// Appends about a chunk of the current message to `out`; false once the message has
    /// been given out whole.
    pub fn read_chunk(&mut self, out: &mut Vec<u8>) -> Result<bool> {
        let start = out.len();
        while self.in_message && out.len() - start < CHUNK {
            if let Some(left) = self.body_left {
                self.read_body(left, out)?;
                continue;
            }
            if !self.read_line()? {
                self.in_message = false;
                break;
            }
            if self.starts_message(self.pending_blank) {
                self.keep_separator(!self.pending_blank);
                break;
            }
            self.has_lines = true;
            if self.in_headers {
                self.header_line(out);
                continue;
            }
            if std::mem::take(&mut self.pending_blank) {
                out.push(b'\n');
            }
            if self.continued {
                out.extend_from_slice(&self.line);
            } else if self.is_blank() {
                self.pending_blank = true;
            } else {
                if self.auto && self.format == Format::Mboxo && self.line.starts_with(b">>") {
                    self.prove_rd();
                }
                out.extend_from_slice(unescape(self.format, &self.line));
            }
        }
        Ok(self.in_message)
    }

    /// mboxcl2: a header line; the blank line ending the block starts the counted body.
    fn header_line(&mut self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.line);
        if self.is_blank() {
            self.in_headers = false;
            self.body_left = content_length(&self.headers);
        } else if self.headers.len() < CL_HEADERS {
            self.headers.extend_from_slice(&self.line);
        }
    }

    /// mboxcl2: gives out up to a chunk of the counted body; at its end checks that a
    /// separator (or the end of the file) follows, as Content-Length promised.
    fn read_body(&mut self, left: u64, out: &mut Vec<u8>) -> Result<()> {
        if left > 0 {
            let path = &self.path;
            let avail = self.input.fill_buf().map_err(|err| MboxError::Io { path: path.clone(), err })?;
            let n = avail.len().min(CHUNK).min(usize::try_from(left).unwrap_or(usize::MAX));
            self.lf.push(&avail[..n], out);
            self.line_no += avail[..n].iter().filter(|&&b| b == b'\n').count() as u64;
            self.input.consume(n);
            self.consumed += n as u64;
            if n == 0 {
                return Err(self.broken(format!("Content-Length promises {left} more bytes than the file has")));
            }
            self.body_left = Some(left - n as u64);
            return Ok(());
        }
        self.lf.finish(out);
        self.body_left = None;
        if !self.read_line()? {
            self.in_message = false;
            return Ok(());
        }
        if self.is_blank() && !self.read_line()? {
            self.in_message = false;
            return Ok(());
        }
        if self.line_is_separator() {
            self.keep_separator(false);
            return Ok(());
        }
        Err(self.broken("Content-Length does not end at a From_ line".into()))
    }
}

/// Writes messages as mboxrd: a From_ line, the message with every `>*From ` line quoted
/// by one more `>`, a final newline if it had none, and a blank line.
pub struct MboxrdWriter<W: Write> {
    out: W,
    /// Where the current line stands: its leading `>`s and how much of `From ` followed
    /// them are held back until the line shows whether it needs quoting.
    quotes: u64,
    matched: usize,
    /// Still in the line's prefix (nothing of the line written yet, or only held back).
    in_prefix: bool,
    /// The last byte of the message written was a newline (or nothing was written yet).
    at_line_start: bool,
}

const FROM_: &[u8] = b"From ";

impl<W: Write> MboxrdWriter<W> {
    pub fn new(out: W) -> MboxrdWriter<W> {
        MboxrdWriter { out, quotes: 0, matched: 0, in_prefix: true, at_line_start: true }
    }

    /// Starts a message: `From <sender or MAILER-DAEMON> <asctime of date, UTC>`. White space
    /// in the address becomes `_`: a reader takes the first word for the address and the
    /// rest for the date.
    pub fn start(&mut self, sender: Option<&[u8]>, date: Timestamp) -> io::Result<()> {
        let addr: Vec<u8> = match sender.filter(|s| !s.is_empty()) {
            Some(s) => s.iter().map(|&b| if b.is_ascii_whitespace() || b < 0x20 { b'_' } else { b }).collect(),
            None => b"MAILER-DAEMON".to_vec(),
        };
        self.out.write_all(b"From ")?;
        self.out.write_all(&addr)?;
        writeln!(self.out, " {}", format_asctime(date))?;
        (self.quotes, self.matched, self.in_prefix, self.at_line_start) = (0, 0, true, true);
        Ok(())
    }

    /// Writes more of the message's bytes, quoting as it goes.
    pub fn write(&mut self, mut bytes: &[u8]) -> io::Result<()> {
        while !bytes.is_empty() {
            if self.in_prefix {
                let b = bytes[0];
                bytes = &bytes[1..];
                if self.matched == 0 && b == b'>' {
                    self.quotes += 1;
                } else if b == FROM_[self.matched] {
                    self.matched += 1;
                    if self.matched == FROM_.len() {
                        self.quotes += 1; // the quote mboxrd adds
                        self.flush_prefix()?;
                    }
                } else {
                    self.flush_prefix()?;
                    self.out.write_all(&[b])?;
                    self.at_line_start = b == b'\n';
                    self.in_prefix = self.at_line_start;
                }
                continue;
            }
            let end = bytes.iter().position(|&b| b == b'\n').map_or(bytes.len(), |i| i + 1);
            self.out.write_all(&bytes[..end])?;
            self.at_line_start = bytes[end - 1] == b'\n';
            self.in_prefix = self.at_line_start;
            bytes = &bytes[end..];
        }
        Ok(())
    }

    /// Writes what a line's prefix held back (`>`s, part or all of `From `).
    fn flush_prefix(&mut self) -> io::Result<()> {
        let quotes = [b'>'; 64];
        while self.quotes > 0 {
            let n = self.quotes.min(64) as usize;
            self.out.write_all(&quotes[..n])?;
            self.quotes -= n as u64;
            self.at_line_start = false;
        }
        if self.matched > 0 {
            self.out.write_all(&FROM_[..self.matched])?;
            self.at_line_start = false;
        }
        self.matched = 0;
        self.in_prefix = false;
        Ok(())
    }

    /// Ends the message: what its last line held back, a newline if it had none, and the
    /// blank line that separates it from the next From_ line.
    pub fn end(&mut self) -> io::Result<()> {
        self.flush_prefix()?;
        if !self.at_line_start {
            self.out.write_all(b"\n")?;
        }
        self.out.write_all(b"\n")?;
        self.in_prefix = true;
        self.at_line_start = true;
        Ok(())
    }

    pub fn get_mut(&mut self) -> &mut W {
        &mut self.out
    }

    pub fn into_inner(self) -> W {
        self.out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write_rd(messages: &[&[&[u8]]]) -> Vec<u8> {
        let mut w = MboxrdWriter::new(Vec::new());
        for pieces in messages {
            w.start(Some(b"a@b"), 1577836800).unwrap();
            pieces.iter().for_each(|p| w.write(p).unwrap());
            w.end().unwrap();
        }
        w.into_inner()
    }

    #[test]
    fn the_writer_quotes_every_from_line_one_level_however_the_bytes_are_cut() {
        let msg: &[u8] = b"S: x\n\nFrom a\n>From b\n>>From c\nFrom\n>From\nFromage\n> From d\nx From e\n";
        let want = b"From a@b Wed Jan  1 00:00:00 2020\nS: x\n\n>From a\n>>From b\n>>>From c\nFrom\n>From\nFromage\n> From d\nx From e\n\n";
        assert_bytes_eq(&write_rd(&[&[msg]]), want);
        let bytewise: Vec<&[u8]> = msg.chunks(1).collect();
        assert_bytes_eq(&write_rd(&[&bytewise]), want);
        for format in [Format::Mboxrd, Format::Auto] {
            let (msgs, _) = read_all(want, format);
            assert_eq!(msgs, [("a@b".to_string(), msg.to_vec())], "{format:?}");
        }
    }

    #[test]
    fn the_writer_ends_each_message_with_a_newline_and_a_blank_line() {
        let out = write_rd(&[&[b"A: 1\n\nno newline"], &[b"A: 2\n\nends blank\n\n"], &[b"A: 3\n\n>From"]]);
        let (msgs, _) = read_all(&out, Format::Auto);
        let bodies: Vec<&[u8]> = msgs.iter().map(|(_, b)| b.as_slice()).collect();
        assert_eq!(bodies, [&b"A: 1\n\nno newline\n"[..], b"A: 2\n\nends blank\n\n", b"A: 3\n\n>From\n"]);
        let mut w = MboxrdWriter::new(Vec::new());
        w.start(None, 0).unwrap();
        w.start(Some(b"a b@c"), 0).unwrap();
        assert_eq!(
            w.into_inner(),
            b"From MAILER-DAEMON Thu Jan  1 00:00:00 1970\nFrom a_b@c Thu Jan  1 00:00:00 1970\n"
        );
    }

    fn assert_bytes_eq(got: &[u8], want: &[u8]) {
        assert_eq!(String::from_utf8_lossy(got), String::from_utf8_lossy(want));
    }

    fn read_all(data: &[u8], choice: Format) -> (Vec<(String, Vec<u8>)>, Format) {
        let (mut r, _) = MboxReader::new(data, Path::new("t.mbox"), choice).unwrap();
        let msgs = read_rest(&mut r);
        (msgs, r.format)
    }

    /// Every message from the reader's place on: its From_ line's address and its bytes.
    fn read_rest(r: &mut MboxReader<&[u8]>) -> Vec<(String, Vec<u8>)> {
        let mut msgs = Vec::new();
        while let Some(start) = r.next_message().unwrap() {
            let mut body = Vec::new();
            while r.read_chunk(&mut body).unwrap() {}
            let who = String::from_utf8_lossy(start.from.sender.address().unwrap_or_default()).into_owned();
            msgs.push((who, body));
        }
        msgs
    }

    const F1: &str = "From a@x Wed Jan  1 00:00:00 2020\n";
    const F2: &str = "From b@x Thu Jan  2 00:00:00 2020\n";

    /// A From_ line that only looks like one (an odd date form, a trailing word).
    const LOOSE: &str = "From c@x Fri Jan  3 00:00:00 2020 remote from uucp\n";

    /// Every message's From_ address, body and whether it began without a blank line.
    fn read_starts(data: &[u8], choice: Format) -> Vec<(String, Vec<u8>, bool)> {
        let (mut r, _) = MboxReader::new(data, Path::new("t.mbox"), choice).unwrap();
        let mut msgs = Vec::new();
        while let Some(start) = r.next_message().unwrap() {
            let mut body = Vec::new();
            while r.read_chunk(&mut body).unwrap() {}
            let who = String::from_utf8_lossy(start.from.sender.address().unwrap_or_default()).into_owned();
            msgs.push((who, body, start.without_blank));
        }
        msgs
    }

    #[test]
    fn a_complete_from_line_starts_a_message_with_or_without_a_blank_line_before_it() {
        let data = format!(
            "{F1}Subject: 1\n\nbody\nFrom here on\nFrom 10:30 on, we meet\n{LOOSE}{F2}Subject: 2\n\nb2\n\n{LOOSE}S: 3\n\nb3\n"
        );
        for format in [Format::Mboxo, Format::Mboxrd, Format::Auto] {
            let msgs = read_starts(data.as_bytes(), format);
            let want = [
                ("a@x".into(), format!("Subject: 1\n\nbody\nFrom here on\nFrom 10:30 on, we meet\n{LOOSE}"), false),
                ("b@x".into(), "Subject: 2\n\nb2\n".into(), true),
                ("c@x".into(), "S: 3\n\nb3\n".into(), false),
            ]
            .map(|(who, body, without): (String, String, bool)| (who, body.into_bytes(), without));
            assert_eq!(msgs, want, "{format:?}");
        }
    }

    /// Issue 18 review: a tool that adds its own From_ line to a message that already has
    /// one writes two in a row; the second is the message's first line, as before.
    #[test]
    fn a_from_line_right_after_the_message_s_own_is_its_first_line() {
        let data = format!("{F1}{F1}Subject: 1\n\nbody\n\n{F2}S: 2\n\nb2\n");
        for format in [Format::Mboxo, Format::Mboxrd] {
            let msgs = read_starts(data.as_bytes(), format);
            let bodies: Vec<&[u8]> = msgs.iter().map(|m| &m.1[..]).collect();
            let first = format!("{F1}Subject: 1\n\nbody\n");
            assert_eq!(bodies, [first.as_bytes(), b"S: 2\n\nb2\n"], "{format:?}");
        }
    }

    #[test]
    fn mboxcl2_splits_only_after_a_blank_line_or_where_content_length_ends() {
        let data = format!("{F1}S: 1\n\nno Content-Length\n{F2}\n{F2}Content-Length: 2\n\nab{F1}S: 3\n\nc\n");
        let msgs = read_starts(data.as_bytes(), Format::Mboxcl2);
        let bodies: Vec<&[u8]> = msgs.iter().map(|m| &m.1[..]).collect();
        let first = format!("S: 1\n\nno Content-Length\n{F2}");
        assert_eq!(bodies, [first.as_bytes(), b"Content-Length: 2\n\nab", b"S: 3\n\nc\n"]);
        assert!(msgs.iter().all(|m| !m.2), "mboxcl2 never splits by the no-blank-line rule");
    }

    #[test]
    fn mboxrd_unescapes_every_level_by_one_and_mboxo_only_the_first() {
        let data = format!("{F1}S: x\n\n>From a\n>>From b\n>>>From c\n>Fromage\n\n");
        let (rd, _) = read_all(data.as_bytes(), Format::Mboxrd);
        assert_eq!(rd[0].1, b"S: x\n\nFrom a\n>From b\n>>From c\n>Fromage\n");
        let (o, _) = read_all(data.as_bytes(), Format::Mboxo);
        assert_eq!(o[0].1, b"S: x\n\nFrom a\n>>From b\n>>>From c\n>Fromage\n");
    }

    #[test]
    fn crlf_files_become_lf_and_last_message_without_newline_is_whole() {
        let data =
            format!("{F1}S: 1\r\n\r\nb1\r\n\r\n{F2}S: 2\r\n\r\nlast line").replace(F1, &F1.replace('\n', "\r\n"));
        let (msgs, _) = read_all(data.as_bytes(), Format::Auto);
        assert_eq!(msgs[0].1, b"S: 1\n\nb1\n");
        assert_eq!(msgs[1].1, b"S: 2\n\nlast line");
    }

    #[test]
    fn mboxcl2_honours_content_length() {
        let body = "From inside the body\n\nFrom x Wed Jan  1 00:00:00 2020\n";
        let data = format!("{F1}Content-Length: {}\n\n{body}\n{F2}Content-Length: 3\n\nabc\n", body.len());
        let (msgs, format) = read_all(data.as_bytes(), Format::Auto);
        assert_eq!(format, Format::Mboxcl2);
        assert_eq!(msgs.len(), 2);
        assert_eq!(msgs[0].1, format!("Content-Length: {}\n\n{body}", body.len()).as_bytes());
        assert_eq!(msgs[1].1, b"Content-Length: 3\n\nabc");
    }

    #[test]
    fn bad_content_length_is_a_broken_message_with_its_place() {
        let data = format!("{F1}Content-Length: 2\n\nabc\n\n{F2}S: 2\n\nok\n");
        let (mut r, _) = MboxReader::new(data.as_bytes(), Path::new("t"), Format::Mboxcl2).unwrap();
        r.next_message().unwrap();
        let mut out = Vec::new();
        let err = loop {
            match r.read_chunk(&mut out) {
                Ok(true) => continue,
                Ok(false) => panic!("no error"),
                Err(e) => break e,
            }
        };
        assert!(matches!(err, MboxError::Broken { line: 4, .. }), "{err}");
        r.resync().unwrap();
        let next = r.next_message().unwrap().unwrap();
        assert_eq!(next.line, 6);
    }

    #[test]
    fn resync_after_an_empty_message_keeps_the_next_one() {
        // The empty message ends at the next From_ line after a blank line: the reader holds
        // it already. (Right after its own, a From_ line is the message's first line.)
        for gap in ["\n"] {
            let data = format!("{F1}{gap}{F2}S: 2\n\nb2\n\n{F1}S: 3\n\nb3\n");
            let (mut r, _) = MboxReader::new(data.as_bytes(), Path::new("t"), Format::Mboxo).unwrap();
            r.next_message().unwrap();
            let mut empty = Vec::new();
            while r.read_chunk(&mut empty).unwrap() {}
            assert!(empty.is_empty());
            r.resync().unwrap();
            let bodies: Vec<Vec<u8>> = read_rest(&mut r).into_iter().map(|(_, body)| body).collect();
            assert_eq!(bodies, [&b"S: 2\n\nb2\n"[..], b"S: 3\n\nb3\n"], "gap {gap:?}");
        }
    }

    #[test]
    fn auto_reads_mboxrd_from_the_first_double_quoted_from_line_even_past_the_first_mib() {
        let filler = format!("{}\n", "x".repeat(99)).repeat(11_000); // 1.1 MB
        let data = format!("{F1}S: 1\n\n{filler}\n{F2}S: 2\n\n>From y\n>>From x\n");
        let (msgs, format) = read_all(data.as_bytes(), Format::Auto);
        assert_eq!(format, Format::Mboxrd);
        assert_eq!(msgs[1].1, b"S: 2\n\nFrom y\n>From x\n");
        let (msgs, _) = read_all(data.as_bytes(), Format::Mboxo);
        assert_eq!(msgs[1].1, b"S: 2\n\nFrom y\n>>From x\n", "a format given is kept");
    }

    /// A line of any length is read in pieces: memory stays bounded, and the pieces are
    /// joined back exactly (a CRLF split between two pieces is still one LF; a lone CR
    /// stays; the end of a long line is no blank line, so a From_ line after it stays).
    #[test]
    fn long_lines_are_read_in_bounded_pieces_and_stored_whole() {
        let x = "x".repeat(LINE_PIECE - 1);
        let huge = "y".repeat(10 * LINE_PIECE + 7);
        let full = "z".repeat(LINE_PIECE);
        let data = format!("{F1}S: 1\r\n\r\n{x}\r\n{x}\ry\r\n{huge}\n{full}\n{LOOSE}\n{F2}S: 2\n\nb\n");
        let (mut r, _) = MboxReader::new(data.as_bytes(), Path::new("t"), Format::Mboxo).unwrap();
        let mut bodies = Vec::new();
        while r.next_message().unwrap().is_some() {
            let mut body = Vec::new();
            while r.read_chunk(&mut body).unwrap() {
                assert!(r.line.capacity() <= 2 * LINE_PIECE, "a line is read in pieces");
            }
            bodies.push(body);
        }
        assert_eq!(bodies.len(), 2);
        let want = format!("S: 1\n\n{x}\n{x}\ry\n{huge}\n{full}\n{LOOSE}");
        assert!(bodies[0] == want.as_bytes(), "the first message, joined back");
        assert_eq!(bodies[1], b"S: 2\n\nb\n");
    }

    #[test]
    fn auto_detection_says_why() {
        assert_eq!(detect(format!("{F1}S: x\n\n>>From y\n").as_bytes()).0, Format::Mboxrd);
        assert_eq!(detect(format!("{F1}S: x\n\n>From y\n").as_bytes()).0, Format::Mboxo);
    }

    #[test]
    fn a_content_length_too_large_to_add_is_no_mboxcl2() {
        // header length + u64::MAX would wrap to the blank line, right before a "From " line.
        let head = format!("{F1}Content-Length: {}\n\nFrom here on, body\n", u64::MAX);
        assert_eq!(detect(head.as_bytes()).0, Format::Mboxo);
    }

    #[test]
    fn a_file_that_is_no_mbox_is_refused() {
        let err = MboxReader::new(&b"Subject: hi\n\nbody\n"[..], Path::new("x.eml"), Format::Auto).err().unwrap();
        assert!(err.to_string().contains("x.eml: not an mbox file"), "{err}");
        assert_eq!(err.exit(), Exit::DataErr);
    }

    #[test]
    fn offsets_and_line_numbers_point_at_the_from_line() {
        let data = format!("{F1}S: 1\r\n\r\nb\r\n\r\n{F2}S: 2\n");
        let (mut r, _) = MboxReader::new(data.as_bytes(), Path::new("t"), Format::Auto).unwrap();
        r.next_message().unwrap();
        let second = r.next_message().unwrap().unwrap();
        assert_eq!(second.line, 6);
        assert_eq!(second.offset as usize, data.find("From b@x").unwrap());
    }
}
