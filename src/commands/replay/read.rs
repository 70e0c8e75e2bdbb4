//! The reading half of `replay`, on a thread of its own: mbox parsing is a third of
//! replay's CPU, and on a second core it runs while the staging thread creates files.
//!
//! The reader turns mbox files into a stream of [`Piece`]s (a message's start with its
//! parsed head, its further bytes, its end) and hands them over in bounded batches, so
//! memory stays small however large the mbox or a message is. It touches no maildir: the
//! staging thread (`replay.rs`) keeps the index of what is there, the batches and the log.

use std::fs::File;
use std::io::{self, BufRead, BufReader, Read};
use std::path::Path;
use std::sync::mpsc::SyncSender;
use std::time::UNIX_EPOCH;

use crate::cli::{ReplayArgs, ReplayDirection};
use crate::envelope::{Sender, User};
use crate::maildir::FolderKind;
use crate::mbox::{Format, MboxError, MboxReader, MessageStart};
use crate::message::{ExportLabel, HeaderInfo, Stamp, header_part, holds_header_part};
use crate::time::{Timestamp, now};

/// Pieces are handed over in batches of about this many bytes (fewer wake-ups), and at
/// most `QUEUE` batches wait: the reader stays at most about 4 MB ahead.
const BATCH_BYTES: usize = 256 * 1024;
pub const QUEUE: usize = 16;

/// Where a received date came from, best first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DateSource {
    FromLine,
    DateHeader,
    FileMtime,
}

/// What the reader hands the staging thread, in mbox order. A `Start` is followed by any
/// number of `Data` and then one of `End`, `Broken` or `Fatal`. The last piece is `Done` or
/// `Fatal`; a stream that stops without either means the reader died (a bug).
pub enum Piece {
    /// A line for the operator (the format chosen for a file).
    Note(String),
    Start(Box<Head>),
    Data(Vec<u8>),
    End,
    /// A broken message, skipped (`--continue-on-error`); if one was started, drop it.
    Broken(MboxError),
    /// Reading stops here; nothing follows.
    Fatal(MboxError),
    /// Every file was read.
    Done,
}

/// What the reader needs of the command line, owned: the reader thread is never joined,
/// so that a read blocked on a silent stdin cannot hold the exit.
pub struct Options {
    pub files: Vec<std::path::PathBuf>,
    pub format: Format,
    pub direction: ReplayDirection,
    pub domain: Option<String>,
    pub continue_on_error: bool,
    pub user: User,
}

impl Options {
    pub fn new(args: &ReplayArgs, user: &User) -> Options {
        Options {
            files: args.files.clone(),
            format: args.format,
            direction: args.direction,
            domain: args.domain.clone(),
            continue_on_error: args.continue_on_error,
            user: user.clone(),
        }
    }
}

/// A message's start: where it goes, what it is, and its first bytes.
pub struct Head {
    pub kind: FolderKind,
    pub date: Timestamp,
    pub source: DateSource,
    pub message_id: Option<String>,
    /// The header lines we prepend, then the message's first bytes (its header block at
    /// least, unless the message is shorter or the block longer than `HEAD_LIMIT`).
    pub bytes: Vec<u8>,
    /// Where the message's own bytes begin in `bytes`.
    pub prefix_len: usize,
    /// Its From_ line had no blank line before it (`MessageStart::without_blank`).
    pub without_blank: bool,
}

/// Why reading stopped early.
enum Stop {
    /// The staging thread is gone (it failed); nothing more is wanted.
    Stager,
    Fatal(MboxError),
}

impl From<MboxError> for Stop {
    fn from(e: MboxError) -> Stop {
        Stop::Fatal(e)
    }
}

/// The sending end, batching pieces.
struct Out {
    tx: SyncSender<Vec<Piece>>,
    batch: Vec<Piece>,
    bytes: usize,
}

impl Out {
    fn push(&mut self, piece: Piece, bytes: usize) -> Result<(), Stop> {
        self.batch.push(piece);
        self.bytes += bytes;
        if self.bytes >= BATCH_BYTES { self.send() } else { Ok(()) }
    }

    fn send(&mut self) -> Result<(), Stop> {
        self.bytes = 0;
        if self.batch.is_empty() {
            return Ok(());
        }
        self.tx.send(std::mem::take(&mut self.batch)).map_err(|_| Stop::Stager)
    }
}

/// Checks, before anything is stored, that every file named is there and can be read: a
/// missing or unreadable file (or a directory) is the operator's to fix (66), not a
/// temporary failure to retry (75).
pub fn check_inputs(files: &[std::path::PathBuf]) -> Result<(), MboxError> {
    for path in files.iter().filter(|p| p.as_path() != Path::new("-")) {
        let err = |err: io::Error| match err.kind() {
            io::ErrorKind::NotFound | io::ErrorKind::PermissionDenied | io::ErrorKind::IsADirectory => {
                MboxError::NoInput { path: path.clone(), err }
            }
            _ => MboxError::Io { path: path.clone(), err },
        };
        let meta = File::open(path).and_then(|f| f.metadata()).map_err(err)?;
        if meta.is_dir() {
            return Err(err(io::ErrorKind::IsADirectory.into()));
        }
    }
    Ok(())
}

/// Reads every file in order into `tx`, ending with `Done`, or with the first fatal error.
pub fn read_all(opts: Options, tx: SyncSender<Vec<Piece>>) {
    let mut out = Out { tx, batch: Vec::new(), bytes: 0 };
    let mut last = Piece::Done;
    for path in &opts.files {
        match read_file(&opts, path, &mut out) {
            Ok(()) => {}
            Err(Stop::Stager) => return,
            Err(Stop::Fatal(e)) => {
                last = Piece::Fatal(e);
                break;
            }
        }
    }
    let _ = out.push(last, 0).and_then(|()| out.send());
}

fn read_file(opts: &Options, path: &Path, out: &mut Out) -> Result<(), Stop> {
    let stdin = path == Path::new("-");
    let input: Box<dyn Read> = if stdin {
        Box::new(io::stdin().lock())
    } else {
        Box::new(File::open(path).map_err(|err| MboxError::Io { path: path.to_path_buf(), err })?)
    };
    let file_mtime = if stdin { None } else { std::fs::metadata(path).ok().and_then(|m| m.modified().ok()) };
    let file_mtime = file_mtime.and_then(|t| t.duration_since(UNIX_EPOCH).ok()).map(|d| d.as_secs() as i64);
    let (mut mbox, format) = MboxReader::new(BufReader::with_capacity(1024 * 1024, input), path, opts.format)?;
    out.push(Piece::Note(format!("replay: {}: format {format}", path.display())), 0)?;
    let mut without_blank = 0u64;
    while let Some(start) = mbox.next_message()? {
        without_blank += u64::from(start.without_blank);
        let result = message(opts, &mut mbox, path, &start, file_mtime, out);
        if let Some(note) = mbox.take_note() {
            out.push(Piece::Note(format!("replay: {note}")), 0)?;
        }
        match result {
            Ok(()) => {}
            Err(Stop::Fatal(broken @ MboxError::Broken { .. })) if opts.continue_on_error => {
                out.push(Piece::Broken(broken), 0)?;
                mbox.resync()?;
            }
            Err(stop) => return Err(stop),
        }
    }
    if without_blank > 0 {
        out.push(Piece::Note(without_blank_note(path, without_blank, mbox.format())), 0)?;
    }
    Ok(())
}

/// Says how many messages of a file began at a From_ line with no blank line before it;
/// in mboxo a body line of that form, which mboxo leaves unescaped, would be one of them.
fn without_blank_note(path: &Path, n: u64, format: Format) -> String {
    let caveat = match format {
        Format::Mboxo => " (mboxo: a body line that is a whole From_ line would also start one)",
        _ => "",
    };
    format!("replay: {}: {n} messages began at a From_ line with no blank line before it{caveat}", path.display())
}

/// Reads one message: its head first (parsed for the folder, date and Message-ID), then
/// the rest in chunks.
fn message<R: BufRead>(
    opts: &Options,
    mbox: &mut MboxReader<R>,
    path: &Path,
    start: &MessageStart,
    file_mtime: Option<Timestamp>,
    out: &mut Out,
) -> Result<(), Stop> {
    let mut head = Vec::new();
    let mut more = true;
    while more && !holds_header_part(&head) {
        more = mbox.read_chunk(&mut head)?;
    }
    if head.is_empty() {
        let what = "empty message".into();
        return Err(MboxError::Broken { path: path.to_path_buf(), offset: start.offset, line: start.line, what }.into());
    }
    let (bytes, prefix_len, info, labels) = stamped(opts, &start.from.sender, head);
    let (date, source) = match (start.from.date, info.date, file_mtime) {
        (Some(d), _, _) => (d, DateSource::FromLine),
        (None, Some(d), _) => (d, DateSource::DateHeader),
        (None, None, m) => (m.unwrap_or_else(now), DateSource::FileMtime),
    };
    let size = bytes.len();
    let kind = folder_for(opts.direction, labels.as_deref());
    let message_id = info.message_id;
    let without_blank = start.without_blank;
    out.push(Piece::Start(Box::new(Head { kind, date, source, message_id, bytes, prefix_len, without_blank })), size)?;
    while more {
        let mut chunk = Vec::new();
        more = mbox.read_chunk(&mut chunk)?;
        let size = chunk.len();
        out.push(Piece::Data(chunk), size)?;
    }
    out.push(Piece::End, 0)
}

/// A message's first bytes as they are stored, where its own bytes begin in them, what
/// its headers say and its labels. A message `export --folder all` wrote (its marker line
/// right after our header lines, then the label) keeps the header lines it was stored with,
/// and the marker and label lines, the export's own, are taken out: so the
/// round trip gives the stored file back byte for byte. Any other message gets ours.
fn stamped(opts: &Options, from_line: &Sender, head: Vec<u8>) -> (Vec<u8>, usize, HeaderInfo, Option<String>) {
    if let Some(label) = ExportLabel::find(&head) {
        let mut bytes = head;
        bytes.drain(label.stamp_len..label.stamp_len + label.line_len);
        let info = HeaderInfo::parse(header_part(&bytes[label.stamp_len..]));
        return (bytes, label.stamp_len, info, Some(label.label.to_string()));
    }
    let info = HeaderInfo::parse(header_part(&head));
    let mut bytes = header_lines(opts, from_line, &info);
    let prefix_len = bytes.len();
    bytes.extend_from_slice(&head);
    let labels = info.gmail_labels.clone();
    (bytes, prefix_len, info, labels)
}

/// The header lines `deliver` would prepend: Return-Path from the From_ line,
/// Delivered-To the user's address. Google Takeout's From_ lines carry no address but a
/// message number at `xxx`: then the message's own (topmost) Return-Path, else `<>`, is the
/// sender. The domain is `--domain`'s; only `--direction out` may go without it (`run`
/// checks), and then the From_ line's sender is the user, whose domain it takes.
fn header_lines(opts: &Options, from_line: &Sender, info: &HeaderInfo) -> Vec<u8> {
    let takeout = from_line.address().is_some_and(|a| a.ends_with(b"@xxx"));
    let own = || info.return_path.as_deref().map_or_else(Sender::null, |r| Sender::from_bytes(r.as_bytes()));
    let sender = if takeout { own() } else { from_line.clone() };
    let domain = opts.domain.clone().or_else(|| {
        let addr = from_line.address().filter(|_| !takeout)?;
        let at = addr.iter().rposition(|&b| b == b'@')?;
        Some(String::from_utf8_lossy(&addr[at + 1..]).into_owned())
    });
    let owner = user_address(&opts.user, domain.as_deref());
    Stamp { sender: &sender, owner: owner.as_bytes(), envelope_to: None }.header_lines()
}

fn user_address(user: &User, domain: Option<&str>) -> String {
    match domain {
        Some(d) if !d.is_empty() => format!("{user}@{d}"),
        _ => user.to_string(),
    }
}

fn folder_for(direction: ReplayDirection, labels: Option<&str>) -> FolderKind {
    let has = |label: &str| labels.is_some_and(|l| l.split(',').any(|x| x.trim().eq_ignore_ascii_case(label)));
    match direction {
        ReplayDirection::In => FolderKind::Inbox,
        ReplayDirection::Out => FolderKind::Sent,
        ReplayDirection::Auto if has("Sent") => FolderKind::Sent,
        ReplayDirection::Auto if has("Chat") => FolderKind::Chats,
        ReplayDirection::Auto => FolderKind::Inbox,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gmail_labels_choose_the_folder() {
        use ReplayDirection::*;
        assert_eq!(folder_for(Auto, Some("Sent,Opened")), FolderKind::Sent);
        assert_eq!(folder_for(Auto, Some("Inbox,Important,Category Personal")), FolderKind::Inbox);
        assert_eq!(folder_for(Auto, Some("Chat")), FolderKind::Chats);
        assert_eq!(folder_for(Auto, Some("Sentinel")), FolderKind::Inbox);
        assert_eq!(folder_for(Auto, None), FolderKind::Inbox);
        assert_eq!(folder_for(Out, Some("Inbox")), FolderKind::Sent);
        assert_eq!(folder_for(In, Some("Sent")), FolderKind::Inbox);
    }
}
