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

mod index;
mod progress;
mod publish;
mod read;

use std::collections::HashMap;
use std::fs::File;
use std::io::{self, Write};
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::sync::mpsc::{Receiver, sync_channel};
use std::time::{Duration, Instant};

use crate::cli::{ReplayArgs, ReplayDirection, UsageError};
use crate::commands::Error;
use crate::config::StoreConfig;
use crate::exit::Exit;
use crate::log::{Logger, Outcome, Record};
use crate::maildir::{Durability, Folder, FolderKind, Namer, Staged};
use index::{Identity, Index, MessageDigest};
use progress::Progress;
use publish::{Batch, Meta, Pending, Publisher, discard, publish_all};
use read::{DateSource, Head, Piece};

/// A batch is made durable when it holds this many messages or bytes.
const BATCH_MESSAGES: usize = 2048;
const BATCH_BYTES: u64 = 64 * 1024 * 1024;

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

/// A folder being replayed into: what it already holds, and the batch waiting to be
/// published into it.
struct Target {
    folder: Arc<Folder>,
    index: Index,
    batch: Batch,
}

impl Target {
    fn open(cfg: &StoreConfig, kind: FolderKind) -> Result<Target, Error> {
        let folder = Folder::open(&cfg.root, &cfg.user, kind, cfg.perms)?;
        folder.sweep_tmp();
        let index = Index::new(kind, folder.message_paths()?);
        Ok(Target { folder: Arc::new(folder), index, batch: Vec::new() })
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

pub fn run(args: &ReplayArgs) -> Result<Exit, Error> {
    // Received mail's From_ line names the outside sender: its domain would make the
    // Delivered-To address `alice@outside.example` (issue 18).
    if args.domain.is_none() && args.direction != ReplayDirection::Out {
        let why = "--domain DOMAIN is required with --direction in or auto (the Delivered-To address \
                   is user@DOMAIN; a received message's From_ line names the outside sender)";
        return Err(UsageError(why.into()).into());
    }
    let cfg = StoreConfig::resolve(&args.store)?;
    read::check_inputs(&args.files)?;
    // One replay per user at a time: two would each index a folder before the other
    // stores into it, and store every message twice. One lock for all of a user's folders,
    // so that two replays that store into several never wait for each other crosswise.
    let _lock = match args.dry_run {
        true => None,
        false => Some(lock_user(&cfg, Duration::from_secs(args.lock_timeout))?),
    };
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
        (Err(stop), Err(e)) => Err(e.context(format!("{stop}; and what was read before it is not stored"))),
        (result, flushed) => result.and(flushed).map(|()| Exit::Ok),
    }
}

impl Replay<'_> {
    /// Stores the reader's messages until it is done or a fatal error.
    fn write(&mut self, mut pieces: Pieces) -> Result<(), Error> {
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
                Piece::Data(_) | Piece::End => return Err(Error::Bug("replay: message data without a start")),
            }
            self.progress.tick(self.counts.messages, self.counts.bytes);
        }
        Err(Error::Bug("replay: the mbox reader stopped before the end"))
    }

    fn skipped(&mut self, broken: crate::mbox::MboxError) {
        self.counts.failed += 1;
        self.logger.line(&format!("skipped: {broken}"));
    }

    /// Stages one message into its folder, unless the folder already holds it; takes the
    /// pieces up to the message's end.
    fn message(&mut self, head: Head, pieces: &mut Pieces) -> Result<Ending, Error> {
        self.counts.messages += 1;
        self.counts.split_without_blank += u64::from(head.without_blank);
        *self.counts.dates.entry(date_name(head.source)).or_default() += 1;
        if self.args.dry_run {
            return skip_rest(pieces);
        }
        if !self.targets.contains_key(&head.kind) {
            self.targets.insert(head.kind, Target::open(&self.cfg, head.kind)?);
        }
        let target = self.targets.get_mut(&head.kind).expect("just inserted");
        // Whether the folder holds the message is known only at its end (its body's
        // digest). One whose Message-ID the folder has (or that has none) is held in
        // memory up to `HOLD_BYTES` first, so that a rerun writes nothing for what is there;
        // what is longer, or new, is staged in tmp/ and removed again if it is there.
        let mut digest = MessageDigest::new(head.message_id.clone());
        digest.update(&head.bytes[head.prefix_len..]);
        let mut held = Vec::new();
        if head.message_id.as_deref().is_none_or(|id| target.index.may_hold(id)) {
            match hold(pieces, &mut digest, &mut held)? {
                Held::Part => {}
                Held::Whole => return self.decide_held(head, held, digest.finish()),
                Held::Broken(ending) => return Ok(ending),
            }
        }
        let mut ending = None;
        let staged = target.folder.stage(&mut self.namer, Some(head.date), Durability::Later, |file| {
            let mut size = write_held(file, &head.bytes, &held)?;
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
        self.add(head, staged, &who)
    }

    /// A message held whole in memory: counted present, or staged.
    fn decide_held(&mut self, head: Head, held: Vec<Vec<u8>>, who: Identity) -> Result<Ending, Error> {
        let target = self.targets.get_mut(&head.kind).expect("opened by `message`");
        if target.index.contains(&who) {
            self.counts.present += 1;
            return Ok(Ending::Whole);
        }
        let write = |file: &mut File| write_held(file, &head.bytes, &held);
        let staged = target.folder.stage(&mut self.namer, Some(head.date), Durability::Later, write)?;
        self.add(head, staged, &who)
    }

    /// Adds a staged message to its folder's batch (and index), flushing a full batch.
    fn add(&mut self, head: Head, staged: Staged, who: &Identity) -> Result<Ending, Error> {
        let target = self.targets.get_mut(&head.kind).expect("opened by `message`");
        let id_reused = target.index.insert(who);
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
    fn flush(&mut self) -> Result<(), Error> {
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
            publisher.jobs.send(jobs).map_err(|_| Error::Bug("replay: the publishing thread stopped"))?;
            publisher.busy = true;
        }
        previous
    }

    /// Waits for the batch being published, then logs a line per message stored.
    fn wait_published(&mut self) -> Result<(), Error> {
        let Some(publisher) = self.publisher.as_mut().filter(|p| p.busy) else { return Ok(()) };
        publisher.busy = false;
        let Ok(done) = publisher.done.recv() else {
            return Err(Error::Bug("replay: the publishing thread stopped"));
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

/// Takes the user's replay lock (`Folder::lock_for_replay` of the INBOX, which every user
/// of mailkeep's has), saying so when it must wait.
fn lock_user(cfg: &StoreConfig, wait: Duration) -> Result<File, Error> {
    let inbox = Folder::open(&cfg.root, &cfg.user, FolderKind::Inbox, cfg.perms)?;
    let lock = inbox.lock_for_replay(wait, |path| {
        crate::log::stderr_line(&format!(
            "replay: waiting up to {} s for another replay for {} to finish (lock {})",
            wait.as_secs(),
            cfg.user,
            path.display()
        ))
    })?;
    Ok(lock)
}

/// Messages whose Message-ID the folder has are held in memory up to this size before
/// they are staged (a rerun then writes nothing for what is there).
const HOLD_BYTES: usize = 4 * 1024 * 1024;

/// How far `hold` got.
enum Held {
    /// The whole message is held.
    Whole,
    /// Its first `HOLD_BYTES` are: the rest is still to be read.
    Part,
    /// It ended broken (or reading stopped): nothing was staged.
    Broken(Ending),
}

/// Reads a message's pieces into `held`, digesting them, until its end or `HOLD_BYTES`.
fn hold(pieces: &mut Pieces, digest: &mut MessageDigest, held: &mut Vec<Vec<u8>>) -> Result<Held, Error> {
    let mut bytes_held = 0;
    while bytes_held < HOLD_BYTES {
        match pieces.next() {
            Some(Piece::Data(bytes)) => {
                digest.update(&bytes);
                bytes_held += bytes.len();
                held.push(bytes);
            }
            Some(Piece::End) => return Ok(Held::Whole),
            other => return end_of_message(other).map(Held::Broken),
        }
    }
    Ok(Held::Part)
}

/// Writes a message's head (our header lines and its first bytes) and the pieces held.
fn write_held(file: &mut File, head: &[u8], held: &[Vec<u8>]) -> io::Result<u64> {
    file.write_all(head)?;
    for piece in held {
        file.write_all(piece)?;
    }
    Ok((head.len() + held.iter().map(Vec::len).sum::<usize>()) as u64)
}

/// Takes the pieces of a message not stored, up to its end.
fn skip_rest(pieces: &mut Pieces) -> Result<Ending, Error> {
    loop {
        match pieces.next() {
            Some(Piece::Data(_)) => {}
            other => return end_of_message(other),
        }
    }
}

/// What the piece after a message's data means: its end, a broken message, a fatal error,
/// or (anything else, or no piece) a reader that stopped inside it.
fn end_of_message(piece: Option<Piece>) -> Result<Ending, Error> {
    match piece {
        Some(Piece::End) => Ok(Ending::Whole),
        Some(Piece::Broken(e)) => Ok(Ending::Broken(e)),
        Some(Piece::Fatal(e)) => Err(e.into()),
        _ => Err(Error::Bug("replay: the mbox reader stopped inside a message")),
    }
}

fn date_name(source: DateSource) -> &'static str {
    match source {
        DateSource::FromLine => "from-line",
        DateSource::DateHeader => "date-header",
        DateSource::FileMtime => "file-mtime",
    }
}
