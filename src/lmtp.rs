//! The LMTP protocol (RFC 2033) as `mailkeep lmtp` speaks it, apart from what it does with
//! a message: commands parsed from lines, replies formatted, and DATA read with its dots
//! unstuffed, against a client that may be slow, silent, too big or gone mid-message.
//!
//! Deliberate departures: a line may end in a bare LF as well as CRLF (the line ends of
//! DATA pass through unchanged; the store turns CRLF into LF); HELO and EHLO are refused,
//! as RFC 2033 section 4.1 says.

use std::fs::File;
use std::io::{self, BufRead, BufWriter, Seek, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// The longest command line read (RFC 5321 allows 512 octets; parameters may make more).
pub const COMMAND_MAX: usize = 4096;
/// DATA is read in pieces of at most this size: a line without end costs no more memory.
const PIECE: usize = 64 * 1024;
/// A message's bytes beyond this many go to an unnamed file: a connection's memory stays
/// bounded whatever `--max-size` is.
pub const SPILL_AT: usize = 1024 * 1024;

/// One client command.
#[derive(Debug, PartialEq, Eq)]
pub enum Command {
    Lhlo,
    /// `MAIL FROM:<path>`; an empty path is the null sender. `size` is the SIZE parameter.
    Mail {
        path: Vec<u8>,
        size: Option<u64>,
    },
    Rcpt {
        path: Vec<u8>,
    },
    Data,
    Rset,
    Noop,
    Quit,
    /// HELO or EHLO: not LMTP.
    Smtp,
    Vrfy,
}

/// What is wrong with a command line.
#[derive(Debug, PartialEq, Eq)]
pub enum Syntax {
    Unknown,
    BadPath,
}

/// Parses one command line (its line end already off or still on).
pub fn parse(line: &[u8]) -> Result<Command, Syntax> {
    let line = line.strip_suffix(b"\n").unwrap_or(line);
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    let (verb, arg) = match line.iter().position(|&b| b == b' ') {
        Some(i) => (&line[..i], &line[i + 1..]),
        None => (line, &b""[..]),
    };
    let verb = verb.to_ascii_uppercase();
    match &verb[..] {
        b"LHLO" => Ok(Command::Lhlo),
        b"HELO" | b"EHLO" => Ok(Command::Smtp),
        b"MAIL" => {
            let (path, params) = path_after(arg, b"FROM:")?;
            Ok(Command::Mail { path, size: size_param(params) })
        }
        b"RCPT" => Ok(Command::Rcpt { path: path_after(arg, b"TO:")?.0 }),
        b"DATA" => Ok(Command::Data),
        b"RSET" => Ok(Command::Rset),
        b"NOOP" => Ok(Command::Noop),
        b"QUIT" => Ok(Command::Quit),
        b"VRFY" => Ok(Command::Vrfy),
        _ => Err(Syntax::Unknown),
    }
}

/// The `<path>` after `keyword` (case-insensitive, spaces allowed around it), without its
/// angle brackets and any source route, and the parameters after it.
fn path_after<'a>(arg: &'a [u8], keyword: &[u8]) -> Result<(Vec<u8>, &'a [u8]), Syntax> {
    if arg.len() < keyword.len() || !arg[..keyword.len()].eq_ignore_ascii_case(keyword) {
        return Err(Syntax::BadPath);
    }
    let rest = arg[keyword.len()..].trim_ascii_start();
    let inner = rest.strip_prefix(b"<").ok_or(Syntax::BadPath)?;
    let end = inner.iter().position(|&b| b == b'>').ok_or(Syntax::BadPath)?;
    let path = &inner[..end];
    // A source route (`@a,@b:user@host`) is to be ignored (RFC 5321 section 4.1.1.3).
    let path = match (path.first(), path.iter().position(|&b| b == b':')) {
        (Some(b'@'), Some(colon)) => &path[colon + 1..],
        _ => path,
    };
    if path.iter().any(|&b| b < 0x20 || b == 0x7f) {
        return Err(Syntax::BadPath);
    }
    Ok((path.to_vec(), &inner[end + 1..]))
}

/// The value of a `SIZE=` parameter (RFC 1870), if there is a valid one.
fn size_param(params: &[u8]) -> Option<u64> {
    params.split(|&b| b == b' ').find_map(|p| {
        p.get(..5).filter(|key| key.eq_ignore_ascii_case(b"SIZE="))?;
        std::str::from_utf8(&p[5..]).ok()?.parse().ok()
    })
}

/// The local part of an address: before its last `@` (a local part may be quoted and
/// hold one), or all of it.
pub fn local_part(address: &[u8]) -> &[u8] {
    let local = address.iter().rposition(|&b| b == b'@').map_or(address, |i| &address[..i]);
    local.strip_prefix(b"\"").and_then(|l| l.strip_suffix(b"\"")).unwrap_or(local)
}

/// One reply line (or the last of several): `250 2.0.0 text`.
pub fn reply(code: u16, status: &str, text: &str) -> String {
    // A reply is one line: nothing from an error message may break it.
    let text: String = text.chars().map(|c| if c.is_control() { '_' } else { c }).collect();
    format!("{code} {status} {text}\r\n")
}

/// The LHLO reply: our name and the extensions we speak.
pub fn lhlo_reply(name: &str, max_size: u64) -> String {
    format!("250-{name}\r\n250-PIPELINING\r\n250-ENHANCEDSTATUSCODES\r\n250-8BITMIME\r\n250 SIZE {max_size}\r\n")
}

/// Why no (more) input came.
#[derive(Debug)]
pub enum ReadError {
    /// The client closed the connection (at a line's start or in the middle of one).
    Closed,
    /// Nothing came for the idle limit.
    Idle,
    /// The server is stopping and no command was under way.
    Stopping,
    /// A command line longer than `COMMAND_MAX`.
    TooLong,
    /// DATA took longer than its time limit.
    TooSlow,
    Io(io::Error),
}

/// How DATA ended when it did not give a message.
#[derive(Debug)]
pub enum DataError {
    /// Over the size limit: the rest was read and dropped, up to the final dot.
    TooBig,
    /// The unnamed file for the message's rest could not be written (a full disk): the rest
    /// was read and dropped, up to the final dot.
    Spill(io::Error),
    Read(ReadError),
}

/// A message read after DATA: its first `SPILL_AT` bytes in memory, the rest in an unnamed
/// file (O_TMPFILE, gone with it) in a directory of the server's; in memory if that file
/// cannot be made (no directory given, a filesystem without O_TMPFILE).
pub struct Message {
    pub front: Vec<u8>,
    spill: Option<BufWriter<File>>,
    dir: Option<PathBuf>,
}

impl Message {
    pub fn new(spill_dir: Option<&Path>) -> Message {
        Message { front: Vec::new(), spill: None, dir: spill_dir.map(Path::to_path_buf) }
    }

    /// Whether some of the message is in the file, after `front`.
    pub fn spilled(&self) -> bool {
        self.spill.is_some()
    }

    /// The message's rest after `front`, read from its start; None if all is in `front`.
    pub fn rest(&self) -> io::Result<Option<&File>> {
        let Some(spill) = &self.spill else { return Ok(None) };
        let mut file = spill.get_ref();
        file.rewind()?;
        Ok(Some(file))
    }

    fn push(&mut self, bytes: &[u8]) -> io::Result<()> {
        if self.spill.is_none() && self.front.len() + bytes.len() > SPILL_AT {
            self.spill = self.dir.as_deref().and_then(|d| unnamed_file(d).ok()).map(BufWriter::new);
        }
        match &mut self.spill {
            Some(file) => {
                let room = SPILL_AT.saturating_sub(self.front.len()).min(bytes.len());
                self.front.extend_from_slice(&bytes[..room]);
                file.write_all(&bytes[room..])
            }
            None => {
                self.front.extend_from_slice(bytes);
                Ok(())
            }
        }
    }

    fn finish(&mut self) -> io::Result<()> {
        self.spill.as_mut().map_or(Ok(()), Write::flush)
    }
}

/// A file with no name in `dir` (mode 0600), removed by the kernel when closed.
fn unnamed_file(dir: &Path) -> io::Result<File> {
    File::options().read(true).write(true).mode(0o600).custom_flags(libc::O_TMPFILE | libc::O_NOFOLLOW).open(dir)
}

/// Reads lines from a client whose socket has a short read time-out (a tick): each tick
/// without input checks the idle limit and, between commands, the stop flag.
pub struct Reader<R> {
    inner: R,
    idle: Duration,
}

impl<R: BufRead> Reader<R> {
    pub fn new(inner: R, idle: Duration) -> Reader<R> {
        Reader { inner, idle }
    }

    /// The next command line, with its line end. Between commands a raised `stop` ends the
    /// wait with `Stopping`.
    pub fn command(&mut self, stop: &AtomicBool) -> Result<Vec<u8>, ReadError> {
        let mut line = Vec::new();
        match self.piece(&mut line, COMMAND_MAX, Some(stop), None)? {
            true => Ok(line),
            false => Err(ReadError::TooLong),
        }
    }

    /// The message after DATA, up to the line that is a single dot: each line's leading dot
    /// of stuffing removed, line ends as sent. Over `max_size` bytes as stored (unstuffed,
    /// CRLF counted as LF: the limit is on the copy, not on the wire), the rest is read and
    /// dropped (so the session stays in step) and the answer is `TooBig`.
    /// DATA lasting past `deadline` ends with `TooSlow`. Bytes past `SPILL_AT` go to an
    /// unnamed file in `spill_dir`.
    pub fn data(&mut self, max_size: u64, deadline: Instant, spill_dir: Option<&Path>) -> Result<Message, DataError> {
        let (mut message, mut line) = (Message::new(spill_dir), Vec::new());
        let (mut at_line_start, mut too_big, mut size) = (true, false, 0u64);
        let mut failed = None;
        loop {
            line.clear();
            let whole = self.piece(&mut line, PIECE, None, Some(deadline)).map_err(DataError::Read)?;
            if Instant::now() >= deadline {
                return Err(DataError::Read(ReadError::TooSlow));
            }
            if at_line_start && (line == b".\r\n" || line == b".\n") {
                if too_big {
                    return Err(DataError::TooBig);
                }
                return match failed.map_or_else(|| message.finish(), Err) {
                    Ok(()) => Ok(message),
                    Err(e) => Err(DataError::Spill(e)),
                };
            }
            let piece = match line.strip_prefix(b".") {
                Some(rest) if at_line_start => rest,
                _ => &line[..],
            };
            at_line_start = whole;
            size += (piece.len() - usize::from(piece.ends_with(b"\r\n"))) as u64;
            too_big = too_big || size > max_size;
            if too_big {
                message = Message::new(None);
            } else if failed.is_none()
                && let Err(e) = message.push(piece)
            {
                failed = Some(e);
                message = Message::new(None);
            }
        }
    }

    /// Appends the rest of a line, up to and with its LF, but at most `max` bytes, to `buf`.
    /// True if the line ended. Waits out read time-outs up to the idle limit (and `deadline`).
    fn piece(
        &mut self,
        buf: &mut Vec<u8>,
        max: usize,
        stop: Option<&AtomicBool>,
        deadline: Option<Instant>,
    ) -> Result<bool, ReadError> {
        let start = buf.len();
        let mut last_input = Instant::now();
        loop {
            let room = (max - (buf.len() - start)) as u64;
            let before = buf.len();
            match <&mut R as io::Read>::take(&mut self.inner, room).read_until(b'\n', buf) {
                Ok(_) if buf.ends_with(b"\n") => return Ok(true),
                Ok(_) if buf.len() - start == max => return Ok(false),
                Ok(_) => return Err(ReadError::Closed),
                Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut) => {
                    if buf.len() > before {
                        last_input = Instant::now();
                    }
                    if stop.is_some_and(|s| s.load(Ordering::Relaxed)) && buf.len() == start {
                        return Err(ReadError::Stopping);
                    }
                    if last_input.elapsed() >= self.idle {
                        return Err(ReadError::Idle);
                    }
                    if deadline.is_some_and(|d| Instant::now() >= d) {
                        return Err(ReadError::TooSlow);
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(ReadError::Io(e)),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Cursor;

    fn far() -> Instant {
        Instant::now() + Duration::from_secs(60)
    }

    fn data(input: &[u8], max: u64) -> Result<Vec<u8>, DataError> {
        let message = Reader::new(Cursor::new(input.to_vec()), Duration::from_secs(1)).data(max, far(), None)?;
        Ok(message.front)
    }

    #[test]
    fn commands_parse_case_insensitively_with_paths_and_size() {
        assert_eq!(parse(b"lhlo relay\r\n"), Ok(Command::Lhlo));
        assert_eq!(
            parse(b"MAIL FROM:<a@b> SIZE=1234 BODY=8BITMIME\r\n"),
            Ok(Command::Mail { path: b"a@b".to_vec(), size: Some(1234) })
        );
        assert_eq!(parse(b"mail from: <>\r\n"), Ok(Command::Mail { path: vec![], size: None }));
        assert_eq!(
            parse(b"RCPT TO:<@x,@y:alice@example.org>\n"),
            Ok(Command::Rcpt { path: b"alice@example.org".to_vec() })
        );
        assert_eq!(parse(b"EHLO x\r\n"), Ok(Command::Smtp));
        assert_eq!(parse(b"RCPT TO:alice\r\n"), Err(Syntax::BadPath));
        assert_eq!(parse(b"RCPT TO:<a\x01b>\r\n"), Err(Syntax::BadPath));
        assert_eq!(parse(b"XYZZY\r\n"), Err(Syntax::Unknown));
    }

    #[test]
    fn data_unstuffs_dots_and_keeps_line_ends() {
        let got = data(b"A: b\r\n\r\n..x\r\n.\r\nbare\n..\n.\r\nafter", 1000).unwrap();
        assert_eq!(got, b"A: b\r\n\r\n.x\r\n".to_vec());
        let got = data(b"A: b\n\nbody\n...\n.\n", 1000).unwrap();
        assert_eq!(got, b"A: b\n\nbody\n..\n".to_vec());
    }

    #[test]
    fn data_over_the_limit_is_read_to_its_end_and_refused() {
        let mut r = Reader::new(Cursor::new(b"0123456789\r\nabc\r\n.\r\nQUIT\r\n".to_vec()), Duration::from_secs(1));
        assert!(matches!(r.data(5, far(), None), Err(DataError::TooBig)));
        assert_eq!(r.command(&AtomicBool::new(false)).unwrap(), b"QUIT\r\n".to_vec());
    }

    #[test]
    fn the_size_limit_counts_the_stored_form_not_the_wire() {
        // Stored `a\nb\n.\n`: 6 bytes; on the wire, stuffed and with CRLF, 11.
        assert_eq!(data(b"a\r\nb\r\n..\r\n.\r\n", 6).unwrap(), b"a\r\nb\r\n.\r\n".to_vec());
        assert!(matches!(data(b"a\r\nb\r\n..\r\n.\r\n", 5), Err(DataError::TooBig)));
    }

    #[test]
    fn a_message_past_spill_at_keeps_its_start_in_memory_and_the_rest_in_a_file() {
        use std::io::Read;
        let dir = std::env::temp_dir();
        let body: Vec<u8> =
            (0..SPILL_AT / 10 + 100).flat_map(|i| format!("{:09}\n", i % 1_000_000_000).into_bytes()).collect();
        let mut wire = b"Subject: big\r\n\r\n".to_vec();
        wire.extend_from_slice(&body);
        wire.extend_from_slice(b".\r\n");
        let mut r = Reader::new(Cursor::new(wire.clone()), Duration::from_secs(1));
        let message = r.data(u64::MAX, far(), Some(&dir)).unwrap();
        assert!(message.spilled() && message.front.len() == SPILL_AT);
        let mut all = message.front.clone();
        message.rest().unwrap().unwrap().read_to_end(&mut all).unwrap();
        assert_eq!(all, wire[..wire.len() - 3].to_vec());
        // Read twice (one copy per recipient): the same bytes.
        let mut again = Vec::new();
        message.rest().unwrap().unwrap().read_to_end(&mut again).unwrap();
        assert_eq!(again.len(), all.len() - SPILL_AT);
    }

    #[test]
    fn data_cut_off_is_no_message() {
        assert!(matches!(data(b"A: b\r\n\r\nhalf a mess", 1000), Err(DataError::Read(ReadError::Closed))));
    }

    #[test]
    fn local_part_is_before_the_last_at() {
        assert_eq!(local_part(b"Alice@example.org"), b"Alice");
        assert_eq!(local_part(b"\"a@b\"@example.org"), b"a@b");
        assert_eq!(local_part(b"bob"), b"bob");
    }
}
