//! One message stored for one mailbox owner: our header lines, then the message as the
//! stored form (LF line ends), through the one Maildir writer, with or without the dedup
//! store. `deliver` (Exim's pipe transport, one process per message) and `lmtp` (Exim's
//! and Postfix's LMTP clients, one long-lived server) both store through here, so a copy
//! is the same bytes whichever way it came.

use std::fs::File;
use std::io::{self, Read, Write};
use std::path::Path;

use crate::dedup::{self, Claim, DedupError};
use crate::envelope::{Sender, User};
use crate::exit::{Classify, Exit};
use crate::fault;
use crate::log::{Logger, Outcome, Record};
use crate::maildir::{Durability, Folder, FolderKind, MaildirError, Namer, Perms, Staged};
use crate::message::{BodyDigest, FromLine, HeaderInfo, LfStream, Stamp, holds_header_part};

/// The read size. Small on purpose: every page a delivery touches costs a page fault, and
/// at one process per message those faults weigh more than the extra reads of a large message.
const CHUNK: usize = 16 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum DeliverError {
    #[error("empty message on stdin: nothing to store")]
    EmptyInput,
    #[error("cannot read the message from stdin: {0}")]
    ReadInput(io::Error),
    #[error(transparent)]
    Maildir(#[from] MaildirError),
    #[error(transparent)]
    Dedup(#[from] DedupError),
    #[error(transparent)]
    Root(#[from] crate::root::RootError),
}

impl Classify for DeliverError {
    fn exit(&self) -> Exit {
        match self {
            DeliverError::EmptyInput => Exit::DataErr,
            DeliverError::ReadInput(_) => Exit::TempFail,
            DeliverError::Maildir(e) => e.exit(),
            DeliverError::Dedup(e) => e.exit(),
            DeliverError::Root(e) => e.exit(),
        }
    }
}

/// Who a copy is for and where it goes: one owner's one folder.
pub struct Delivery<'a> {
    pub root: &'a Path,
    pub user: &'a User,
    pub perms: Perms,
    pub folder: FolderKind,
    /// `None`: not given; the From_ line's address, else the null sender.
    pub sender: Option<&'a Sender>,
    /// The envelope recipients (Delivered-To picks the owner's; a Sent copy lists them all).
    pub rcpts: &'a [Vec<u8>],
    /// `Some(window in days)` with `--dedup`.
    pub dedup_window: Option<u32>,
    /// Where the dedup store is, and the root's id it must serve: used when the caller
    /// keeps no store open (`deliver`; `lmtp` always passes its own).
    pub dedup_store: &'a dedup::Location,
    pub root_id: &'a str,
}

/// The start of a message: enough to know its header block, with a From_ line removed.
pub struct Head {
    pub bytes: Vec<u8>,
    pub from_line: Option<FromLine>,
    pub info: HeaderInfo,
    /// The whole input is in `bytes`: nothing is left to read.
    pub at_end: bool,
}

impl Head {
    /// A message already in memory (LMTP's DATA), or its start when `more` follows: its
    /// head, and the rest to read as the input. Nothing of it is taken for a From_ line,
    /// which only Exim's pipe transport adds.
    pub fn in_memory(message: &[u8], more: bool) -> (Head, &[u8]) {
        let mut len = CHUNK.min(message.len());
        while len < message.len() && !holds_header_part(&message[..len]) {
            len = (len + CHUNK).min(message.len());
        }
        let bytes = message[..len].to_vec();
        let at_end = len == message.len() && !more;
        let head = Head { info: HeaderInfo::parse(&bytes), bytes, from_line: None, at_end };
        (head, &message[len..])
    }

    /// Reads up to the end of the header block (at most `HEAD_LIMIT`) from `input`, and
    /// takes off a leading From_ line.
    pub fn read(input: &mut impl Read) -> io::Result<Head> {
        let mut bytes = Vec::new();
        let mut at_end = false;
        while !at_end && !holds_header_part(&bytes) {
            at_end = read_chunk(input, &mut bytes)? < CHUNK;
        }
        let mut from_line = None;
        let newline = bytes.iter().position(|&b| b == b'\n');
        // A first line that does not end within HEAD_LIMIT is no From_ line Exim writes (its
        // address is an SMTP path): it stays, as part of the message.
        if bytes.starts_with(b"From ") && (newline.is_some() || at_end) {
            let end = newline.map_or(bytes.len(), |i| i + 1);
            // Only the line end goes: "From " with nothing after it is still the From_ line
            // that was removed (null sender), so the suffix's newline goes with it.
            let line = bytes[..end].strip_suffix(b"\n").unwrap_or(&bytes[..end]);
            let line = line.strip_suffix(b"\r").unwrap_or(line);
            from_line = FromLine::parse(line);
            bytes.drain(..end);
        }
        let info = HeaderInfo::parse(&bytes);
        Ok(Head { bytes, from_line, info, at_end })
    }
}

/// Appends up to `CHUNK` bytes of `input` to `buf` and returns how many; fewer means the
/// input has ended. The bytes go straight into `buf`'s spare room: no zeroed buffer to
/// copy from, and no page touched that the message does not fill.
fn read_chunk(input: &mut impl Read, buf: &mut Vec<u8>) -> io::Result<usize> {
    buf.reserve(CHUNK);
    input.take(CHUNK as u64).read_to_end(buf)
}

/// What is written before the rest of the input: our header lines and the message's start.
struct Writing {
    prefix: Vec<u8>,
    head: Vec<u8>,
    at_end: bool,
    /// Exim's default suffix is there: its one final newline goes.
    drop_final_lf: bool,
}

/// Writes `prefix`, then `head` and the rest of `input` (none if `at_end`) as the stored
/// form (CRLF to LF, and without the default suffix's newline when `drop_final_lf`), into
/// `out`, and into `digest` what follows the prefix. Returns the number of bytes written.
/// Memory stays at one chunk whatever the message size.
fn write_message(
    out: &mut File,
    w: &Writing,
    input: &mut impl Read,
    chunk: &mut Vec<u8>,
    mut digest: Option<&mut BodyDigest>,
) -> io::Result<u64> {
    let Writing { prefix, head, at_end, drop_final_lf } = w;
    let (at_end, mut lf) = (*at_end, LfStream::new(*drop_final_lf));
    let mut buf = Vec::with_capacity(prefix.len() + head.len() + 16);
    buf.extend_from_slice(prefix);
    lf.push(head, &mut buf);
    let mut size = 0u64;
    let mut ours = prefix.len();
    loop {
        chunk.clear();
        let ended = at_end || read_chunk(input, chunk)? < CHUNK;
        lf.push(chunk, &mut buf);
        if ended {
            lf.finish(&mut buf);
        }
        out.write_all(&buf)?;
        if let Some(d) = digest.as_deref_mut() {
            d.update(&buf[std::mem::take(&mut ours)..]);
        }
        size += buf.len() as u64;
        buf.clear();
        if ended {
            return Ok(size);
        }
    }
}

/// The Delivered-To address: for a received copy the recipient that is this user, for a
/// Sent copy the sender.
fn owner_address(cfg: &Delivery, sender: &Sender) -> Vec<u8> {
    let user = cfg.user.as_str().as_bytes();
    match cfg.folder {
        FolderKind::Inbox => {
            let local = |r: &Vec<u8>| r.split(|&b| b == b'@').next().unwrap_or_default().eq_ignore_ascii_case(user);
            cfg.rcpts.iter().find(|r| local(r)).or(cfg.rcpts.first()).cloned().unwrap_or_else(|| user.to_vec())
        }
        _ => sender.address().map_or_else(|| user.to_vec(), <[u8]>::to_vec),
    }
}

/// How a delivery ended well.
pub enum Done {
    Stored { file: String, size: u64, note: String },
    Duplicate { of: String },
}

/// Stores the message (`head`, then the rest of `input`) for `cfg` and logs its one line.
/// `dedup` is a store kept open by the caller (`lmtp`); without one, `--dedup` opens it.
pub fn deliver_logged(
    cfg: &Delivery,
    head: Head,
    input: &mut impl Read,
    dedup: Option<&dedup::Store>,
    logger: &Logger,
) -> Result<Done, DeliverError> {
    let msgid = head.info.message_id.clone();
    let result = deliver(cfg, head, input, dedup);
    log(cfg, msgid.as_deref(), &result, logger);
    result
}

/// The one log line of a delivery that ended with `result`.
pub fn log(cfg: &Delivery, msgid: Option<&str>, result: &Result<Done, DeliverError>, logger: &Logger) {
    let (outcome, extra) = match result {
        Ok(Done::Stored { file, size, note }) => (Outcome::Stored { file, size: *size }, note.as_str()),
        Ok(Done::Duplicate { of }) => (Outcome::Duplicate { of }, ""),
        Err(e) => (Outcome::Failed { reason: &e.to_string() }, ""),
    };
    logger.record(&Record { user: cfg.user.as_str(), folder: cfg.folder.name(), msgid, outcome, extra });
}

/// With `--dedup`: write the message into tmp/ (durable, not yet visible), claim its key
/// (Message-ID and body digest), publish it into new/, commit the key. A copy already
/// stored (same ID, same body) is removed from tmp/, never shown. Without a Message-ID
/// nothing can be folded: the message is stored.
fn deliver(
    cfg: &Delivery,
    head: Head,
    input: &mut impl Read,
    kept: Option<&dedup::Store>,
) -> Result<Done, DeliverError> {
    let (Some(window), Some(msgid)) = (cfg.dedup_window, head.info.message_id.clone()) else {
        let note = if cfg.dedup_window.is_some() { "dedup=no-id" } else { "" };
        let (file, size) = store(cfg, head, input)?;
        return Ok(Done::Stored { file, size, note: note.into() });
    };
    let opened;
    let dedup = match kept {
        Some(store) => store,
        None => {
            opened = dedup::Store::open(cfg.dedup_store, window, cfg.root_id)?;
            &opened
        }
    };
    let mut digest = BodyDigest::default();
    let (folder, staged) = stage(cfg, head, input, &mut digest)?;
    let body = digest.finish();
    let key = dedup::Key { user: cfg.user.as_str(), folder: cfg.folder.name(), msgid: &msgid, body: &body };
    let claim = match dedup.claim(&key, |file| folder.holds(file)) {
        Ok(claim) => claim,
        Err(e) => {
            folder.discard(staged);
            return Err(e.into());
        }
    };
    let mut note = match claim {
        Claim::Duplicate { file } => {
            folder.discard(staged);
            return Ok(Done::Duplicate { of: file });
        }
        Claim::OwnedIdReused => "dedup=id-reused",
        Claim::Owned => "",
    }
    .to_string();
    let mut unwinding = Unwinding { store: dedup, key: &key, file: None };
    let size = staged.size();
    let file = match publish(&folder, staged) {
        Ok(file) => file,
        Err(e) => {
            dedup.release(&key);
            return Err(e);
        }
    };
    unwinding.file = Some(file.clone());
    fault::point("after-store");
    // The message is durable now; a key that fails to commit only costs a duplicate later.
    if dedup.commit(&key, &file).is_err() {
        note = [note.as_str(), "dedup=commit-failed"].join(" ").trim().to_string();
    }
    Ok(Done::Stored { file, size, note })
}

/// A claim that a panic (caught by `lmtp`, which goes on serving) must not leave pending:
/// its owner is the process, still alive, so every retry would wait for it and get 451
/// until the claim is an hour old. On unwinding, a published copy commits the key (the
/// retry folds into it, no second copy), an unpublished one releases it.
struct Unwinding<'a> {
    store: &'a dedup::Store,
    key: &'a dedup::Key<'a>,
    file: Option<String>,
}

impl Drop for Unwinding<'_> {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            return;
        }
        match &self.file {
            Some(file) => {
                let _ = self.store.commit(self.key, file);
            }
            None => self.store.release(self.key),
        }
    }
}

/// The whole Maildir write (`Folder::store`'s numbered steps) of the message with our
/// header lines.
fn store(cfg: &Delivery, head: Head, input: &mut impl Read) -> Result<(String, u64), DeliverError> {
    let (folder, writing) = prepare(cfg, head, input)?;
    let mut scratch = Vec::new();
    let stored =
        folder.store(&mut Namer::new(), None, |file| write_message(file, &writing, input, &mut scratch, None))?;
    folder.sweep_tmp();
    Ok(stored)
}

/// Steps 1 to 3 of `Folder::store` alone, for `--dedup`: the message with our header lines
/// in tmp/, fsynced, and the digest of its body (steps 4 to 6 follow in `publish`).
fn stage(
    cfg: &Delivery,
    head: Head,
    input: &mut impl Read,
    digest: &mut BodyDigest,
) -> Result<(Folder, Staged), DeliverError> {
    let (folder, writing) = prepare(cfg, head, input)?;
    let mut scratch = Vec::new();
    let write = |file: &mut File| write_message(file, &writing, input, &mut scratch, Some(digest));
    let staged = folder.stage(&mut Namer::new(), None, Durability::Fsync, write)?;
    Ok((folder, staged))
}

/// The header lines, the folder and what to write, before anything is written.
fn prepare(cfg: &Delivery, mut head: Head, input: &mut impl Read) -> Result<(Folder, Writing), DeliverError> {
    // Nothing after the From_ line but (with Exim's default suffix) one newline: look
    // for one more byte before calling the message empty.
    let suffix_only = head.from_line.is_some() && matches!(&head.bytes[..], b"\n" | b"\r\n");
    if head.bytes.is_empty() || suffix_only {
        let mut probe = [0u8; 1];
        match input.read(&mut probe).map_err(DeliverError::ReadInput)? {
            0 => return Err(DeliverError::EmptyInput),
            _ => head.bytes.push(probe[0]),
        }
    }
    let from_sender = head.from_line.as_ref().map(|f| f.sender.clone());
    let sender = cfg.sender.cloned().or(from_sender).unwrap_or_else(Sender::null);
    let owner = owner_address(cfg, &sender);
    let stamp =
        Stamp { sender: &sender, owner: &owner, envelope_to: (cfg.folder != FolderKind::Inbox).then_some(cfg.rcpts) };
    let prefix = stamp.header_lines();
    fault::point("before-store");
    let folder = Folder::open(cfg.root, cfg.user, cfg.folder, cfg.perms)?;
    let drop_final_lf = head.from_line.is_some();
    Ok((folder, Writing { prefix, head: head.bytes, at_end: head.at_end, drop_final_lf }))
}

/// Steps 4 to 6 (`Folder::store`): link into new/, fsync new/, unlink from tmp/; then
/// sweep tmp/ of crashed deliveries' leftovers.
fn publish(folder: &Folder, staged: Staged) -> Result<String, DeliverError> {
    let mut names = folder.publish(&mut Namer::new(), vec![staged])?;
    folder.sweep_tmp();
    Ok(names.pop().expect("one staged file gives one name"))
}
