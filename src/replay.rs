//! `mailkeep replay`: stores every message of mbox files (Google Takeout first) into the
//! same maildirs `deliver` writes, through the same writer and header rules, fast and
//! idempotently.
//!
//! Speed without giving up durability: messages are staged in tmp/ in batches, one
//! syncfs makes a batch durable, then it is linked into new/ with one fsync of new/. No
//! message appears in new/ before its bytes are on disk. Idempotence: before storing, the
//! target folder is indexed by Message-ID (and by a digest for messages without one), so
//! a second run, or one resumed after a kill, adds nothing already there.
//!
//! Three threads, so that parsing, file creation and waiting for the disk overlap: the
//! reader (`read.rs`) parses the mbox; this thread stages messages; a helper makes each
//! full batch durable and publishes it while the next batch is staged.

mod read;

use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::hash::{DefaultHasher, Hasher};
use std::io::{self, IsTerminal, Read, Write};
use std::panic::AssertUnwindSafe;
use std::path::Path;
use std::sync::Arc;
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::time::Instant;

use crate::cli::ReplayArgs;
use crate::config::StoreConfig;
use crate::exit::Exit;
use crate::log::{Logger, Outcome, Record};
use crate::maildir::{Durability, Folder, FolderKind, MaildirError, Namer, Staged};
use crate::message::{HeaderInfo, header_part, holds_header_part};
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
    failed: u64,
    bytes: u64,
    split_without_blank: u64,
    dates: HashMap<&'static str, u64>,
}

/// A message's content digest, for messages without a Message-ID (128 bits: two SipHash
/// streams with different seeds; only compared within one run).
#[derive(Clone)]
struct Digest(DefaultHasher, DefaultHasher);

impl Digest {
    fn new() -> Digest {
        let (mut a, mut b) = (DefaultHasher::new(), DefaultHasher::new());
        a.write_u8(1);
        b.write_u8(2);
        Digest(a, b)
    }
    fn update(&mut self, bytes: &[u8]) {
        self.0.write(bytes);
        self.1.write(bytes);
    }
    fn value(&self) -> u128 {
        (u128::from(self.0.finish()) << 64) | u128::from(self.1.finish())
    }
}

/// What a folder already holds, and the batch waiting to be published into it.
struct Target {
    folder: Arc<Folder>,
    ids: HashSet<String>,
    digests: HashSet<u128>,
    batch: Batch,
}

impl Target {
    fn open(cfg: &StoreConfig, kind: FolderKind) -> anyhow::Result<Target> {
        let folder = Folder::open(&cfg.root, &cfg.user, kind, cfg.perms)?;
        folder.sweep_tmp();
        let (mut ids, mut digests) = (HashSet::new(), HashSet::new());
        for path in folder.message_paths()? {
            let Ok((id, all)) = read_id_or_all(&path, kind) else { continue };
            match id {
                Some(id) => {
                    ids.insert(id);
                }
                None => {
                    let mut d = Digest::new();
                    d.update(strip_our_header_lines(&all, kind));
                    digests.insert(d.value());
                }
            }
        }
        Ok(Target { folder: Arc::new(folder), ids, digests, batch: Vec::new() })
    }
}

/// A stored file's Message-ID, read from the same part of the message as an incoming one's
/// (`header_part`, after our header lines); and, only when it has none, the whole file.
fn read_id_or_all(path: &Path, kind: FolderKind) -> io::Result<(Option<String>, Vec<u8>)> {
    let mut file = File::open(path)?;
    let mut bytes = Vec::new();
    loop {
        let n = (&mut file).take(64 * 1024).read_to_end(&mut bytes)?;
        if n == 0 || holds_header_part(strip_our_header_lines(&bytes, kind)) {
            break;
        }
    }
    let id = HeaderInfo::parse(header_part(strip_our_header_lines(&bytes, kind))).message_id;
    if id.is_none() {
        file.read_to_end(&mut bytes)?;
    }
    Ok((id, bytes))
}

/// A stored file without the lines mailkeep prepended (Return-Path, Delivered-To and, in a
/// folder other than the INBOX, where `deliver` adds it, a folded Envelope-To), so its
/// digest matches the incoming message's. In the INBOX an Envelope-To is the message's own.
fn strip_our_header_lines(stored: &[u8], kind: FolderKind) -> &[u8] {
    let mut rest = stored;
    for name in [&b"Return-Path: <"[..], b"Delivered-To: "] {
        if rest.starts_with(name) {
            rest = rest.iter().position(|&b| b == b'\n').map_or(&[][..], |i| &rest[i + 1..]);
        }
    }
    if kind != FolderKind::Inbox && rest.starts_with(b"Envelope-To:") {
        loop {
            rest = rest.iter().position(|&b| b == b'\n').map_or(&[][..], |i| &rest[i + 1..]);
            if !rest.starts_with(b" ") {
                break;
            }
        }
    }
    rest
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
            self.targets.insert(head.kind, Target::open(&self.cfg, head.kind)?);
        }
        let target = self.targets.get_mut(&head.kind).expect("just inserted");
        if head.message_id.as_ref().is_some_and(|id| target.ids.contains(id)) {
            let ending = skip_rest(pieces)?;
            if matches!(ending, Ending::Whole) {
                self.counts.present += 1;
            }
            return Ok(ending);
        }
        let mut digest = head.message_id.is_none().then(Digest::new);
        if let Some(d) = digest.as_mut() {
            d.update(&head.bytes[head.prefix_len..]);
        }
        let mut ending = None;
        let staged = target.folder.stage(&mut self.namer, Some(head.date), Durability::Later, |file| {
            file.write_all(&head.bytes)?;
            let mut size = head.bytes.len() as u64;
            loop {
                match pieces.next() {
                    Some(Piece::Data(bytes)) => {
                        file.write_all(&bytes)?;
                        size += bytes.len() as u64;
                        if let Some(d) = digest.as_mut() {
                            d.update(&bytes);
                        }
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
        if let Some(d) = digest
            && !target.digests.insert(d.value())
        {
            target.folder.discard(staged);
            self.counts.present += 1;
            return Ok(Ending::Whole);
        }
        if let Some(id) = &head.message_id {
            target.ids.insert(id.clone());
        }
        self.counts.bytes += staged.size();
        self.staged_bytes += staged.size();
        target.batch.push((staged, head.message_id, head.source));
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
            let extra = match p.source {
                DateSource::FromLine => String::new(),
                other => format!("date={}", date_name(other)),
            };
            let record = Record {
                user: self.cfg.user.as_str(),
                folder: p.folder.name(),
                msgid: p.id.as_deref(),
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
            "replay: user={} messages={} {what}={} already-present={} failed={} split-without-blank={} bytes={} dates:{} seconds={secs:.2} rate={:.0}/s",
            self.cfg.user,
            c.messages,
            if self.args.dry_run { c.messages } else { c.stored },
            c.present,
            c.failed,
            c.split_without_blank,
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
    id: Option<String>,
    source: DateSource,
    size: u64,
}

type Batch = Vec<(Staged, Option<String>, DateSource)>;

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
        let (staged, meta): (Vec<Staged>, Vec<(Option<String>, DateSource)>) =
            batch.into_iter().map(|(s, id, src)| (s, (id, src))).unzip();
        let sizes: Vec<u64> = staged.iter().map(Staged::size).collect();
        // On failure `publish` itself leaves nothing of the batch in new/ or tmp/.
        match folder.publish(namer, staged) {
            Ok(names) => {
                for ((name, (id, source)), size) in names.into_iter().zip(meta).zip(sizes) {
                    done.published.push(Published { folder: folder.kind(), name, id, source, size });
                }
            }
            Err(e) => done.failure = Some(e),
        }
    }
    done
}

/// Removes a batch's files from tmp/: they will not be published.
fn discard(folder: &Folder, batch: Batch) {
    for (staged, _, _) in batch {
        folder.discard(staged);
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

    fn note(&self, text: &str) {
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
    fn our_header_lines_are_stripped_for_the_digest() {
        let stored = b"Return-Path: <a@b>\nDelivered-To: c@d\nEnvelope-To: x@y,\n z@w\nSubject: s\n\nbody\n";
        assert_eq!(strip_our_header_lines(stored, FolderKind::Sent), b"Subject: s\n\nbody\n");
        assert_eq!(strip_our_header_lines(b"Subject: s\n", FolderKind::Sent), b"Subject: s\n");
        // `deliver` adds Envelope-To to Sent copies only: in the INBOX it is the message's own.
        assert_eq!(strip_our_header_lines(stored, FolderKind::Inbox), &stored[37..]);
    }
}
