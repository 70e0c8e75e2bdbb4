//! `mailkeep replay`: stores every message of mbox files (Google Takeout first) into the
//! same maildirs `deliver` writes, through the same writer and header rules, fast and
//! idempotently.
//!
//! Speed without giving up durability: messages are staged in tmp/ in batches, one
//! syncfs makes a batch durable, then it is linked into new/ with one fsync of new/. No
//! message appears in new/ before its bytes are on disk. Idempotence: before storing, the
//! target folder is indexed by Message-ID and body digest (by a digest of the whole
//! message for messages without an ID), under a lock that a second replay into the same
//! folder waits for, so a second run, one resumed after a kill, or two at once add nothing
//! already there; and a message that only reuses a stored one's Message-ID is stored.
//!
//! Three threads, so that parsing, file creation and waiting for the disk overlap: the
//! reader (`read.rs`) parses the mbox; this thread stages messages; a helper makes each
//! full batch durable and publishes it while the next batch is staged.

mod read;

use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::io::{self, IsTerminal, Read, Write};
use std::panic::AssertUnwindSafe;
use std::path::Path;
use std::sync::Arc;
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::time::{Duration, Instant};

use crate::cli::{ReplayArgs, ReplayDirection, UsageError};
use crate::config::StoreConfig;
use crate::exit::Exit;
use crate::log::{Logger, Outcome, Record};
use crate::maildir::{Durability, Folder, FolderKind, MaildirError, Namer, Staged};
use crate::message::{BodyDigest, Digest, HeaderInfo, header_part, holds_header_part, sha256};
use read::{DateSource, Head, Piece};

/// A batch is made durable when it holds this many messages or bytes.
const BATCH_MESSAGES: usize = 2048;
const BATCH_BYTES: u64 = 64 * 1024 * 1024;
const PROGRESS_EVERY: u64 = 10_000;

#[derive(Default)]
struct Counts {
    messages: u64,
    stored: u64,
    present: u64,
    /// Stored although a message with its Message-ID (and another body) is there.
    id_reused: u64,
    failed: u64,
    bytes: u64,
    split_without_blank: u64,
    dates: HashMap<&'static str, u64>,
}

/// What a folder holds, by content: the (Message-ID, body digest) pairs of its messages,
/// their Message-IDs alone (to tell a reused ID), and the digests of whole messages
/// without an ID. IDs are kept as their SHA-256 digests: 32 bytes a message whatever the
/// ID's length.
#[derive(Default)]
struct Index {
    keys: HashSet<Digest>,
    ids: HashSet<Digest>,
    wholes: HashSet<Digest>,
}

/// How a message is known to an `Index`.
enum Identity {
    /// Its Message-ID and the digest of its body.
    Id { id: String, body: Digest },
    /// No Message-ID: the digest of the whole message (after our header lines).
    Whole(Digest),
}

impl Index {
    fn key(id: &str, body: &Digest) -> Digest {
        let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
        ctx.update(id.as_bytes());
        ctx.update(&[0]);
        ctx.update(body);
        ctx.finish().as_ref().try_into().expect("SHA-256 is 32 bytes")
    }

    fn contains(&self, who: &Identity) -> bool {
        match who {
            Identity::Id { id, body } => self.keys.contains(&Index::key(id, body)),
            Identity::Whole(d) => self.wholes.contains(d),
        }
    }

    /// Adds a message; true when its Message-ID was there with another body.
    fn insert(&mut self, who: &Identity) -> bool {
        match who {
            Identity::Id { id, body } => {
                let fresh = self.keys.insert(Index::key(id, body));
                !self.ids.insert(sha256(id.as_bytes())) && fresh
            }
            Identity::Whole(d) => {
                self.wholes.insert(*d);
                false
            }
        }
    }
}

/// What a folder already holds, and the batch waiting to be published into it.
struct Target {
    folder: Arc<Folder>,
    index: Index,
    batch: Batch,
    /// The folder's replay lock, held until the run ends (`Folder::lock_for_replay`).
    _lock: File,
}

impl Target {
    /// Opens the folder, takes its lock (a second replay into it waits here, so that both
    /// do not index it before either stores), then indexes what it holds.
    fn open(cfg: &StoreConfig, kind: FolderKind, wait: Duration, progress: &Progress) -> anyhow::Result<Target> {
        let folder = Folder::open(&cfg.root, &cfg.user, kind, cfg.perms)?;
        let lock = folder.lock_for_replay(wait, |path| {
            progress.note(&format!(
                "replay: waiting up to {} s for another replay into {}/{} to finish (lock {})",
                wait.as_secs(),
                cfg.user,
                kind.name(),
                path.display()
            ))
        })?;
        folder.sweep_tmp();
        let mut index = Index::default();
        for path in folder.message_paths()? {
            // A file that cannot be read (gone meanwhile, not a regular file) holds nothing
            // to match: at worst a message is stored twice, never dropped.
            let Ok(identities) = identify_stored(&path, kind) else { continue };
            for who in &identities {
                index.insert(who);
            }
        }
        Ok(Target { folder: Arc::new(folder), index, batch: Vec::new(), _lock: lock })
    }
}

/// How a stored file is known: its Message-ID (read from the same part of the message as
/// an incoming one's, `header_part`, after our header lines) and its body digest; or,
/// without an ID, the digest of the whole message after our header lines. Opened without
/// following a symlink or blocking on a FIFO, and read in pieces: memory stays small.
fn identify_stored(path: &Path, kind: FolderKind) -> io::Result<Vec<Identity>> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = File::options().read(true).custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK).open(path)?;
    if !file.metadata()?.is_file() {
        return Err(io::ErrorKind::InvalidInput.into());
    }
    let mut bytes = Vec::new();
    loop {
        let n = (&mut file).take(64 * 1024).read_to_end(&mut bytes)?;
        if n == 0 || holds_header_part(&bytes[our_header_lines_len(&bytes)..]) {
            break;
        }
    }
    let message = &bytes[our_header_lines_len(&bytes)..];
    let mut rest = [0u8; 64 * 1024];
    if let Some(id) = HeaderInfo::parse(header_part(message)).message_id {
        let mut body = BodyDigest::default();
        body.update(message);
        read_into(&mut file, &mut rest, |piece| body.update(piece))?;
        return Ok(vec![Identity::Id { id, body: body.finish() }]);
    }
    // Without an ID the whole message is compared, and `deliver` prepends an Envelope-To
    // to a Sent copy: digest the message with and without such a line, so that the same
    // message replayed (which gets no Envelope-To from us) is found either way, and a
    // message that has its own Envelope-To line is found as itself.
    let sha256 = || ring::digest::Context::new(&ring::digest::SHA256);
    let (mut whole, mut without) = (sha256(), sha256());
    whole.update(message);
    let envelope_to = envelope_to_len(message, kind);
    without.update(&message[envelope_to..]);
    read_into(&mut file, &mut rest, |piece| {
        whole.update(piece);
        without.update(piece);
    })?;
    let digest = |ctx: ring::digest::Context| Identity::Whole(ctx.finish().as_ref().try_into().expect("32 bytes"));
    Ok(if envelope_to > 0 { vec![digest(whole), digest(without)] } else { vec![digest(whole)] })
}

/// Feeds the rest of `file` to `take`, a buffer at a time.
fn read_into(file: &mut File, buf: &mut [u8], mut take: impl FnMut(&[u8])) -> io::Result<()> {
    loop {
        match file.read(buf) {
            Ok(0) => return Ok(()),
            Ok(n) => take(&buf[..n]),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
}

/// The length of the lines mailkeep prepends to every stored file, Return-Path and
/// Delivered-To (`Stamp::header_lines`), at the start of `stored`.
fn our_header_lines_len(stored: &[u8]) -> usize {
    let mut len = 0;
    for name in [&b"Return-Path: <"[..], b"Delivered-To: "] {
        if stored[len..].starts_with(name) {
            len += stored[len..].iter().position(|&b| b == b'\n').map_or(stored.len() - len, |i| i + 1);
        }
    }
    len
}

/// The length of a folded Envelope-To field at the start of `message`, in a folder other
/// than the INBOX (where `deliver` adds one to Sent copies); 0 if there is none.
fn envelope_to_len(message: &[u8], kind: FolderKind) -> usize {
    if kind == FolderKind::Inbox || !message.starts_with(b"Envelope-To:") {
        return 0;
    }
    let mut len = 0;
    loop {
        len += message[len..].iter().position(|&b| b == b'\n').map_or(message.len() - len, |i| i + 1);
        if !message[len..].starts_with(b" ") {
            return len;
        }
    }
}

/// The digest an incoming message is known by (`Identity`), taken as it is staged.
enum MessageDigest {
    Body(String, Box<BodyDigest>),
    Whole(ring::digest::Context),
}

impl MessageDigest {
    fn new(id: Option<String>) -> MessageDigest {
        match id {
            Some(id) => MessageDigest::Body(id, Box::default()),
            None => MessageDigest::Whole(ring::digest::Context::new(&ring::digest::SHA256)),
        }
    }

    fn update(&mut self, bytes: &[u8]) {
        match self {
            MessageDigest::Body(_, d) => d.update(bytes),
            MessageDigest::Whole(d) => d.update(bytes),
        }
    }

    fn finish(self) -> Identity {
        match self {
            MessageDigest::Body(id, d) => Identity::Id { id, body: d.finish() },
            MessageDigest::Whole(d) => Identity::Whole(d.finish().as_ref().try_into().expect("SHA-256 is 32 bytes")),
        }
    }
}

struct Replay<'a> {
    cfg: StoreConfig,
    args: &'a ReplayArgs,
    logger: Logger,
    namer: Namer,
    targets: HashMap<FolderKind, Target>,
    staged_bytes: u64,
    counts: Counts,
    progress: Progress,
    /// The publishing thread's ends; None once it has been told to stop.
    publisher: Option<Publisher>,
    /// A batch failed to publish: nothing staged after it is published (its syncfs may have
    /// taken the error report that concerned a later file; see `flush`).
    publish_failed: bool,
}

/// The staging thread's side of the publishing thread: batches go in, one at a time.
struct Publisher {
    jobs: SyncSender<Vec<(Arc<Folder>, Batch)>>,
    done: Receiver<Done>,
    /// A batch was handed over and its `Done` not yet taken.
    busy: bool,
}

/// The reader's pieces, one at a time. `None` once the reader is done.
struct Pieces {
    rx: Receiver<Vec<Piece>>,
    batch: std::vec::IntoIter<Piece>,
}

impl Pieces {
    fn next(&mut self) -> Option<Piece> {
        loop {
            if let Some(piece) = self.batch.next() {
                return Some(piece);
            }
            self.batch = self.rx.recv().ok()?.into_iter();
        }
    }
}

/// How a started message ended, as far as the staging thread cares.
enum Ending {
    Whole,
    Broken(crate::mbox::MboxError),
}

pub fn run(args: &ReplayArgs) -> anyhow::Result<Exit> {
    // Received mail's From_ line names the outside sender: its domain would make the
    // Delivered-To address `alice@outside.example` (issue 18).
    if args.domain.is_none() && args.direction != ReplayDirection::Out {
        let why = "--domain DOMAIN is required with --direction in or auto (the Delivered-To address \
                   is user@DOMAIN; a received message's From_ line names the outside sender)";
        return Err(UsageError(why.into()).into());
    }
    let cfg = StoreConfig::resolve(&args.store)?;
    read::check_inputs(&args.files)?;
    let logger = Logger::new(cfg.log);
    let user = cfg.user.clone();
    let mut replay = Replay {
        cfg,
        args,
        logger,
        namer: Namer::new(),
        targets: HashMap::new(),
        staged_bytes: 0,
        counts: Counts::default(),
        progress: Progress::new(args.files.iter().map(|f| std::fs::metadata(f).map_or(0, |m| m.len())).sum()),
        publisher: None,
        publish_failed: false,
    };
    let started = Instant::now();
    let (pieces_tx, pieces_rx) = sync_channel(read::QUEUE);
    let (jobs_tx, jobs_rx) = sync_channel(0);
    let (done_tx, done_rx) = sync_channel(1);
    replay.publisher = Some(Publisher { jobs: jobs_tx, done: done_rx, busy: false });
    // Not a scoped thread, and never joined: after a failure here it must not be waited for
    // (it may be blocked reading a stdin that sends nothing). A reader that dies ends its
    // stream without `Done`, which `write` reports as an error.
    let opts = read::Options::new(args, &user);
    std::thread::spawn(move || read::read_all(opts, pieces_tx));
    let (result, flushed) = std::thread::scope(|scope| {
        scope.spawn(|| publish_all(jobs_rx, done_tx));
        let staged = std::panic::catch_unwind(AssertUnwindSafe(|| {
            // The receiver is dropped when this returns, so a reader still going stops too.
            let result = replay.write(Pieces { rx: pieces_rx, batch: Vec::new().into_iter() });
            // Whatever happened, what was read so far is made durable and published.
            let flushed = replay.flush().and(replay.wait_published());
            (result, flushed)
        }));
        // The publishing thread ends, even after a panic here (the scope would wait for it).
        replay.publisher = None;
        staged.unwrap_or_else(|panic| std::panic::resume_unwind(panic))
    });
    replay.progress.finish();
    replay.summary(started);
    match (result, flushed) {
        // Not storing what was read outranks why reading stopped (a broken message, 65):
        // the status must say 75, or the operator would take everything before it as stored.
        (Err(stop), Err(e)) => Err(e.context(format!("{stop:#}; and what was read before it is not stored"))),
        (result, flushed) => result.and(flushed).map(|()| Exit::Ok),
    }
}

impl Replay<'_> {
    /// Stores the reader's messages until it is done or a fatal error.
    fn write(&mut self, mut pieces: Pieces) -> anyhow::Result<()> {
        while let Some(piece) = pieces.next() {
            match piece {
                Piece::Done => return Ok(()),
                Piece::Note(text) => self.progress.note(&text),
                Piece::Start(head) => match self.message(*head, &mut pieces)? {
                    Ending::Whole => {}
                    Ending::Broken(e) => self.skipped(e),
                },
                Piece::Broken(e) => self.skipped(e),
                Piece::Fatal(e) => return Err(e.into()),
                Piece::Data(_) | Piece::End => anyhow::bail!("replay: message data without a start (a bug)"),
            }
            self.progress.tick(self.counts.messages, self.counts.bytes);
        }
        anyhow::bail!("replay: the mbox reader stopped before the end (a bug)")
    }

    fn skipped(&mut self, broken: crate::mbox::MboxError) {
        self.counts.failed += 1;
        self.logger.line(&format!("skipped: {broken}"));
    }

    /// Stages one message into its folder, unless the folder already holds it; takes the
    /// pieces up to the message's end.
    fn message(&mut self, head: Head, pieces: &mut Pieces) -> anyhow::Result<Ending> {
        self.counts.messages += 1;
        self.counts.split_without_blank += u64::from(head.without_blank);
        *self.counts.dates.entry(date_name(head.source)).or_default() += 1;
        if self.args.dry_run {
            return skip_rest(pieces);
        }
        if !self.targets.contains_key(&head.kind) {
            let wait = Duration::from_secs(self.args.lock_timeout);
            let target = Target::open(&self.cfg, head.kind, wait, &self.progress)?;
            self.targets.insert(head.kind, target);
        }
        let target = self.targets.get_mut(&head.kind).expect("just inserted");
        // Whether the folder holds the message is known only at its end (its body's
        // digest): it is staged meanwhile, and removed from tmp/ if it is there.
        let mut digest = MessageDigest::new(head.message_id.clone());
        digest.update(&head.bytes[head.prefix_len..]);
        let mut ending = None;
        let staged = target.folder.stage(&mut self.namer, Some(head.date), Durability::Later, |file| {
            file.write_all(&head.bytes)?;
            let mut size = head.bytes.len() as u64;
            loop {
                match pieces.next() {
                    Some(Piece::Data(bytes)) => {
                        file.write_all(&bytes)?;
                        size += bytes.len() as u64;
                        digest.update(&bytes);
                    }
                    Some(Piece::End) => return Ok(size),
                    other => {
                        ending = Some(other);
                        return Err(io::Error::other("the message ended early"));
                    }
                }
            }
        });
        if let Some(piece) = ending {
            return end_of_message(piece); // the stage was removed
        }
        let staged = staged?;
        let who = digest.finish();
        if target.index.contains(&who) {
            target.folder.discard(staged);
            self.counts.present += 1;
            return Ok(Ending::Whole);
        }
        let id_reused = target.index.insert(&who);
        self.counts.id_reused += u64::from(id_reused);
        self.counts.bytes += staged.size();
        self.staged_bytes += staged.size();
        let meta = Meta { id: head.message_id, source: head.source, id_reused };
        target.batch.push(Pending { staged, meta });
        let staged_count: usize = self.targets.values().map(|t| t.batch.len()).sum();
        if staged_count >= BATCH_MESSAGES || self.staged_bytes >= BATCH_BYTES {
            self.flush()?;
        }
        Ok(Ending::Whole)
    }

    /// Hands the staged batches to a helper thread that makes them durable and publishes
    /// them (`publish_batches`) while the next batch is staged; first waits for the batch
    /// handed over before, and logs it.
    ///
    /// After a failed batch nothing more is published, the staged files are removed (the
    /// run ends with 75; run it again). A failed syncfs may have taken the report of a write
    /// error that concerned a file of the next batch, written meanwhile: syncfs reports an
    /// error once per open directory, and the next one would return 0.
    fn flush(&mut self) -> anyhow::Result<()> {
        let previous = self.wait_published();
        self.publish_failed |= previous.is_err();
        self.staged_bytes = 0;
        let jobs: Vec<_> = self
            .targets
            .values_mut()
            .filter(|t| !t.batch.is_empty())
            .map(|t| (Arc::clone(&t.folder), std::mem::take(&mut t.batch)))
            .collect();
        crate::fault::point("replay-flush");
        if self.publish_failed {
            jobs.into_iter().for_each(|(folder, batch)| discard(&folder, batch));
            return previous;
        }
        if !jobs.is_empty() {
            let publisher = self.publisher.as_mut().expect("the publishing thread runs until the end");
            publisher.jobs.send(jobs).map_err(|_| anyhow::anyhow!("replay: the publishing thread stopped (a bug)"))?;
            publisher.busy = true;
        }
        previous
    }

    /// Waits for the batch being published, then logs a line per message stored.
    fn wait_published(&mut self) -> anyhow::Result<()> {
        let Some(publisher) = self.publisher.as_mut().filter(|p| p.busy) else { return Ok(()) };
        publisher.busy = false;
        let Ok(done) = publisher.done.recv() else {
            anyhow::bail!("replay: the publishing thread stopped (a bug)");
        };
        for p in &done.published {
            self.counts.stored += 1;
            let mut extra = match p.meta.source {
                DateSource::FromLine => String::new(),
                other => format!("date={}", date_name(other)),
            };
            if p.meta.id_reused {
                extra = [extra.as_str(), "dedup=id-reused"].join(" ").trim_start().to_string();
            }
            let record = Record {
                user: self.cfg.user.as_str(),
                folder: p.folder.name(),
                msgid: p.meta.id.as_deref(),
                outcome: Outcome::Stored { file: &p.name, size: p.size },
                extra: &extra,
            };
            self.logger.record(&record);
        }
        done.failure.map_or(Ok(()), |e| Err(e.into()))
    }

    fn summary(&self, started: Instant) {
        let c = &self.counts;
        let secs = started.elapsed().as_secs_f64();
        let mut dates: Vec<String> = c.dates.iter().map(|(k, v)| format!("{k}={v}")).collect();
        dates.sort();
        let what = if self.args.dry_run { "would store" } else { "stored" };
        eprintln!(
            "replay: user={} messages={} {what}={} already-present={} failed={} split-without-blank={} id-reused={} bytes={} dates:{} seconds={secs:.2} rate={:.0}/s",
            self.cfg.user,
            c.messages,
            if self.args.dry_run { c.messages } else { c.stored },
            c.present,
            c.failed,
            c.split_without_blank,
            c.id_reused,
            c.bytes,
            dates.join(","),
            c.messages as f64 / secs.max(1e-9),
        );
    }
}

/// A message made durable and linked into new/.
struct Published {
    folder: FolderKind,
    name: String,
    meta: Meta,
    size: u64,
}

/// What the log line of a stored message says besides its file.
struct Meta {
    id: Option<String>,
    source: DateSource,
    id_reused: bool,
}

/// A message staged in tmp/, waiting for its batch to be made durable.
struct Pending {
    staged: Staged,
    meta: Meta,
}

type Batch = Vec<Pending>;

/// What the publishing thread hands back for a batch: what it published, and the failure
/// that stopped it.
struct Done {
    published: Vec<Published>,
    failure: Option<MaildirError>,
}

/// The publishing thread: one for the whole run (its system calls are counted as one
/// thread's by the fault-injection tests), publishing batches until the sender is gone.
fn publish_all(jobs: Receiver<Vec<(Arc<Folder>, Batch)>>, done: SyncSender<Done>) {
    let mut namer = Namer::new(); // for the names of links retried after EEXIST
    for batch in jobs {
        if done.send(publish_batches(&mut namer, batch)).is_err() {
            return;
        }
    }
}

/// Makes each folder's batch durable with one syncfs, then publishes it (link into new/,
/// one fsync of new/, unlink from tmp/). After the first failure the batches not yet
/// published are removed from tmp/; what was published before it stays.
fn publish_batches(namer: &mut Namer, jobs: Vec<(Arc<Folder>, Batch)>) -> Done {
    let mut done = Done { published: Vec::new(), failure: None };
    for (folder, batch) in jobs {
        if done.failure.is_some() {
            discard(&folder, batch);
            continue;
        }
        if let Err(e) = folder.sync_filesystem() {
            discard(&folder, batch);
            done.failure = Some(e);
            continue;
        }
        let (staged, meta): (Vec<Staged>, Vec<Meta>) = batch.into_iter().map(|p| (p.staged, p.meta)).unzip();
        let sizes: Vec<u64> = staged.iter().map(Staged::size).collect();
        // On failure `publish` itself leaves nothing of the batch in new/ or tmp/.
        match folder.publish(namer, staged) {
            Ok(names) => {
                for ((name, meta), size) in names.into_iter().zip(meta).zip(sizes) {
                    done.published.push(Published { folder: folder.kind(), name, meta, size });
                }
            }
            Err(e) => done.failure = Some(e),
        }
    }
    done
}

/// Removes a batch's files from tmp/: they will not be published.
fn discard(folder: &Folder, batch: Batch) {
    for pending in batch {
        folder.discard(pending.staged);
    }
}

/// Takes the pieces of a message not stored, up to its end.
fn skip_rest(pieces: &mut Pieces) -> anyhow::Result<Ending> {
    loop {
        match pieces.next() {
            Some(Piece::Data(_)) => {}
            other => return end_of_message(other),
        }
    }
}

/// What the piece after a message's data means: its end, a broken message, a fatal error,
/// or (anything else, or no piece) a reader that stopped inside it.
fn end_of_message(piece: Option<Piece>) -> anyhow::Result<Ending> {
    match piece {
        Some(Piece::End) => Ok(Ending::Whole),
        Some(Piece::Broken(e)) => Ok(Ending::Broken(e)),
        Some(Piece::Fatal(e)) => Err(e.into()),
        _ => anyhow::bail!("replay: the mbox reader stopped inside a message (a bug)"),
    }
}

fn date_name(source: DateSource) -> &'static str {
    match source {
        DateSource::FromLine => "from-line",
        DateSource::DateHeader => "date-header",
        DateSource::FileMtime => "file-mtime",
    }
}

/// A progress bar on a terminal, a line per 10 000 messages elsewhere.
struct Progress {
    bar: Option<indicatif::ProgressBar>,
    last_line: u64,
}

impl Progress {
    fn new(total_bytes: u64) -> Progress {
        let bar = io::stderr().is_terminal().then(|| {
            let bar = indicatif::ProgressBar::new(total_bytes);
            let style = indicatif::ProgressStyle::with_template(
                "{msg} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
            )
            .expect("a valid template");
            bar.set_style(style);
            bar
        });
        Progress { bar, last_line: 0 }
    }

    fn tick(&mut self, messages: u64, bytes: u64) {
        match &self.bar {
            Some(bar) => {
                bar.set_position(bytes);
                bar.set_message(format!("{messages} messages"));
            }
            None if messages >= self.last_line + PROGRESS_EVERY => {
                self.last_line = messages - messages % PROGRESS_EVERY;
                eprintln!("replay: {messages} messages, {bytes} bytes");
            }
            None => {}
        }
    }

    /// A line for the operator; it may name a file, so it is escaped as every line is.
    fn note(&self, text: &str) {
        let text = crate::log::escape(text);
        match &self.bar {
            Some(bar) => bar.println(text),
            None => eprintln!("{text}"),
        }
    }

    fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn our_header_lines_and_deliver_s_envelope_to_are_measured_exactly() {
        let stored = b"Return-Path: <a@b>\nDelivered-To: c@d\nEnvelope-To: x@y,\n z@w\nSubject: s\n\nbody\n";
        let ours = our_header_lines_len(stored);
        assert_eq!(&stored[ours..ours + 12], b"Envelope-To:");
        assert_eq!(&stored[ours + envelope_to_len(&stored[ours..], FolderKind::Sent)..], b"Subject: s\n\nbody\n");
        // `deliver` adds Envelope-To to Sent copies only: in the INBOX it is the message's own.
        assert_eq!(envelope_to_len(&stored[ours..], FolderKind::Inbox), 0);
        assert_eq!(our_header_lines_len(b"Subject: s\n"), 0);
    }

    #[test]
    fn an_index_tells_a_reused_message_id_from_the_same_message() {
        let mut index = Index::default();
        let a = Identity::Id { id: "c@x".into(), body: sha256(b"planted\n") };
        let b = Identity::Id { id: "c@x".into(), body: sha256(b"signed contract\n") };
        assert!(!index.insert(&a));
        assert!(index.contains(&a) && !index.contains(&b));
        assert!(index.insert(&b), "the same ID with another body is a reused ID");
        assert!(!index.contains(&Identity::Whole(sha256(b"planted\n"))));
    }
}
