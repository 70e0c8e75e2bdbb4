//! `mailkeep replay`: stores every message of mbox files (Google Takeout first) into the
//! same maildirs `deliver` writes, through the same writer and header rules, fast and
//! idempotently.
//!
//! Speed without giving up durability: messages are staged in tmp/ in batches, one
//! syncfs makes a batch durable, then it is linked into new/ with one fsync of new/. No
//! message appears in new/ before its bytes are on disk. Idempotence: before storing, the
//! target folder is indexed by Message-ID (and by a digest for messages without one), so
//! a second run, or one resumed after a kill, adds nothing already there.

use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::hash::{DefaultHasher, Hasher};
use std::io::{self, BufRead, BufReader, IsTerminal, Read, Write};
use std::path::Path;
use std::time::{Instant, UNIX_EPOCH};

use crate::cli::{ReplayArgs, ReplayDirection};
use crate::config::StoreConfig;
use crate::envelope::{Sender, User};
use crate::exit::Exit;
use crate::log::{Logger, Outcome, Record};
use crate::maildir::{Durability, Folder, FolderKind, Namer, Staged};
use crate::mbox::{MboxError, MboxReader, MessageStart};
use crate::message::{HEAD_LIMIT, HeaderInfo, Stamp, header_block_len};
use crate::time::{Timestamp, now};

/// A batch is made durable when it holds this many messages or bytes.
const BATCH_MESSAGES: usize = 2048;
const BATCH_BYTES: u64 = 64 * 1024 * 1024;
const PROGRESS_EVERY: u64 = 10_000;

/// Where a received date came from, best first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum DateSource {
    FromLine,
    DateHeader,
    FileMtime,
}

#[derive(Default)]
struct Counts {
    messages: u64,
    stored: u64,
    present: u64,
    failed: u64,
    bytes: u64,
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
    folder: Folder,
    ids: HashSet<String>,
    digests: HashSet<u128>,
    batch: Vec<(Staged, Option<String>, DateSource)>,
}

impl Target {
    fn open(cfg: &StoreConfig, kind: FolderKind) -> anyhow::Result<Target> {
        let folder = Folder::open(&cfg.root, &cfg.user, kind, cfg.perms)?;
        folder.sweep_tmp();
        let (mut ids, mut digests) = (HashSet::new(), HashSet::new());
        for path in folder.message_paths()? {
            let Ok(bytes) = read_head_or_all(&path) else { continue };
            match HeaderInfo::parse(&bytes.0).message_id {
                Some(id) => {
                    ids.insert(id);
                }
                None => {
                    let mut d = Digest::new();
                    d.update(strip_our_header_lines(&bytes.1));
                    digests.insert(d.value());
                }
            }
        }
        Ok(Target { folder, ids, digests, batch: Vec::new() })
    }
}

/// The head of a stored file, and (only when it has no Message-ID) its whole content.
fn read_head_or_all(path: &Path) -> io::Result<(Vec<u8>, Vec<u8>)> {
    let mut file = File::open(path)?;
    let mut head = vec![0u8; 64 * 1024];
    let n = file.read(&mut head)?;
    head.truncate(n);
    if HeaderInfo::parse(&head).message_id.is_some() {
        return Ok((head, Vec::new()));
    }
    let mut all = head.clone();
    file.read_to_end(&mut all)?;
    Ok((head, all))
}

/// A stored file without the lines mailkeep prepended (Return-Path, Delivered-To and a
/// folded Envelope-To), so its digest matches the incoming message's.
fn strip_our_header_lines(stored: &[u8]) -> &[u8] {
    let mut rest = stored;
    for name in [&b"Return-Path: <"[..], b"Delivered-To: "] {
        if rest.starts_with(name) {
            rest = rest.iter().position(|&b| b == b'\n').map_or(&[][..], |i| &rest[i + 1..]);
        }
    }
    if rest.starts_with(b"Envelope-To:") {
        loop {
            rest = rest.iter().position(|&b| b == b'\n').map_or(&[][..], |i| &rest[i + 1..]);
            if !rest.starts_with(b" ") {
                break;
            }
        }
    }
    rest
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

struct Replay<'a> {
    cfg: StoreConfig,
    args: &'a ReplayArgs,
    logger: Logger,
    namer: Namer,
    targets: HashMap<FolderKind, Target>,
    staged_bytes: u64,
    counts: Counts,
    progress: Progress,
}

pub fn run(args: &ReplayArgs) -> anyhow::Result<Exit> {
    let cfg = StoreConfig::resolve(&args.store)?;
    let logger = Logger::new(cfg.log);
    let mut replay = Replay {
        cfg,
        args,
        logger,
        namer: Namer::new(),
        targets: HashMap::new(),
        staged_bytes: 0,
        counts: Counts::default(),
        progress: Progress::new(args.files.iter().map(|f| std::fs::metadata(f).map_or(0, |m| m.len())).sum()),
    };
    let started = Instant::now();
    let mut result = Ok(());
    for path in &args.files {
        result = replay.file(path);
        if result.is_err() {
            break;
        }
    }
    // Whatever happened, what was read so far is made durable and published.
    let flushed = replay.flush();
    replay.progress.finish();
    replay.summary(started);
    result.and(flushed).map(|()| Exit::Ok)
}

impl Replay<'_> {
    fn file(&mut self, path: &Path) -> anyhow::Result<()> {
        let stdin = path == Path::new("-");
        let input: Box<dyn Read> = if stdin {
            Box::new(io::stdin().lock())
        } else {
            Box::new(File::open(path).map_err(|err| MboxError::Io { path: path.to_path_buf(), err })?)
        };
        let file_mtime = if stdin { None } else { std::fs::metadata(path).ok().and_then(|m| m.modified().ok()) };
        let file_mtime = file_mtime.and_then(|t| t.duration_since(UNIX_EPOCH).ok()).map(|d| d.as_secs() as i64);
        let (mut mbox, format) = MboxReader::new(BufReader::with_capacity(1024 * 1024, input), path, self.args.format)?;
        self.progress.note(&format!("replay: {}: format {format}", path.display()));
        loop {
            let start = match mbox.next_message() {
                Ok(Some(start)) => start,
                Ok(None) => return Ok(()),
                Err(e) => return Err(e.into()),
            };
            match self.message(&mut mbox, path, &start, file_mtime) {
                Ok(()) => {}
                Err(e) => match e.downcast::<MboxError>() {
                    Ok(broken @ MboxError::Broken { .. }) if self.args.continue_on_error => {
                        self.counts.failed += 1;
                        self.logger.line(&format!("skipped: {broken}"));
                        mbox.resync()?;
                    }
                    Ok(other) => return Err(other.into()),
                    Err(other) => return Err(other),
                },
            }
            self.progress.tick(self.counts.messages, self.counts.bytes);
        }
    }

    /// Reads one message from `mbox` and stages it into its folder, unless the folder
    /// already holds it.
    fn message<R: BufRead>(
        &mut self,
        mbox: &mut MboxReader<R>,
        path: &Path,
        start: &MessageStart,
        file_mtime: Option<Timestamp>,
    ) -> anyhow::Result<()> {
        let mut head = Vec::new();
        let mut more = true;
        while more && head.len() < HEAD_LIMIT && header_block_len(&head).is_none() {
            more = mbox.read_chunk(&mut head)?;
        }
        if head.is_empty() {
            return Err(MboxError::Broken {
                path: path.to_path_buf(),
                offset: start.offset,
                line: start.line,
                what: "empty message".into(),
            }
            .into());
        }
        self.counts.messages += 1;
        let info = HeaderInfo::parse(&head);
        let kind = folder_for(self.args.direction, info.gmail_labels.as_deref());
        let (date, source) = match (start.from.date, info.date, file_mtime) {
            (Some(d), _, _) => (d, DateSource::FromLine),
            (None, Some(d), _) => (d, DateSource::DateHeader),
            (None, None, m) => (m.unwrap_or_else(now), DateSource::FileMtime),
        };
        *self.counts.dates.entry(date_name(source)).or_default() += 1;
        if self.args.dry_run {
            while more {
                more = mbox.read_chunk(&mut Vec::new())?;
            }
            return Ok(());
        }
        let prefix = self.header_lines(&start.from.sender, &info);
        if !self.targets.contains_key(&kind) {
            self.targets.insert(kind, Target::open(&self.cfg, kind)?);
        }
        let target = self.targets.get_mut(&kind).expect("just inserted");
        if info.message_id.as_ref().is_some_and(|id| target.ids.contains(id)) {
            self.counts.present += 1;
            return Ok(()); // next_message skips the rest
        }
        let mut digest = info.message_id.is_none().then(Digest::new);
        let mut failure = None;
        let staged = target.folder.stage(&mut self.namer, Some(date), Durability::Later, |file| {
            let mut buf = Vec::with_capacity(prefix.len() + head.len());
            buf.extend_from_slice(&prefix);
            buf.extend_from_slice(&head);
            if let Some(d) = digest.as_mut() {
                d.update(&head);
            }
            let mut size = 0u64;
            loop {
                file.write_all(&buf)?;
                size += buf.len() as u64;
                if !more {
                    return Ok(size);
                }
                buf.clear();
                more = match mbox.read_chunk(&mut buf) {
                    Ok(more) => more,
                    Err(e) => {
                        failure = Some(e);
                        return Err(io::Error::other("the mbox could not be read"));
                    }
                };
                if let Some(d) = digest.as_mut() {
                    d.update(&buf);
                }
            }
        });
        if let Some(e) = failure {
            return Err(e.into());
        }
        let staged = staged?;
        if let Some(d) = digest {
            if !target.digests.insert(d.value()) {
                target.folder.discard(staged);
                self.counts.present += 1;
                return Ok(());
            }
        }
        if let Some(id) = &info.message_id {
            target.ids.insert(id.clone());
        }
        self.counts.bytes += staged.size();
        self.staged_bytes += staged.size();
        target.batch.push((staged, info.message_id, source));
        let staged_count: usize = self.targets.values().map(|t| t.batch.len()).sum();
        if staged_count >= BATCH_MESSAGES || self.staged_bytes >= BATCH_BYTES {
            self.flush()?;
        }
        Ok(())
    }

    /// The header lines `deliver` would prepend: Return-Path from the From_ line,
    /// Delivered-To the user's address. Google Takeout's From_ lines carry no address but a
    /// message number at `xxx`: then the message's own Return-Path (else `<>`) is the sender,
    /// and the domain must come from `--domain`.
    fn header_lines(&self, from_line: &Sender, info: &HeaderInfo) -> Vec<u8> {
        let takeout = from_line.address().is_some_and(|a| a.ends_with(b"@xxx"));
        let own = || info.return_path.as_deref().map_or_else(Sender::null, |r| Sender::from_bytes(r.as_bytes()));
        let sender = if takeout { own() } else { from_line.clone() };
        let domain = self.args.domain.clone().or_else(|| {
            let addr = from_line.address().filter(|_| !takeout)?;
            let at = addr.iter().rposition(|&b| b == b'@')?;
            Some(String::from_utf8_lossy(&addr[at + 1..]).into_owned())
        });
        let owner = user_address(&self.cfg.user, domain.as_deref());
        Stamp { sender: &sender, owner: owner.as_bytes(), envelope_to: None }.header_lines()
    }

    /// Makes every staged message durable with one syncfs per folder, then publishes each
    /// folder's batch (link into new/, one fsync of new/) and logs a line per message.
    fn flush(&mut self) -> anyhow::Result<()> {
        self.staged_bytes = 0;
        for target in self.targets.values_mut().filter(|t| !t.batch.is_empty()) {
            target.folder.sync_filesystem()?;
            let batch = std::mem::take(&mut target.batch);
            let meta: Vec<(Option<String>, DateSource, u64)> =
                batch.iter().map(|(s, id, src)| (id.clone(), *src, s.size())).collect();
            let names = target.folder.publish(&mut self.namer, batch.into_iter().map(|(s, _, _)| s).collect())?;
            for (name, (id, source, size)) in names.iter().zip(meta) {
                self.counts.stored += 1;
                let extra = match source {
                    DateSource::FromLine => String::new(),
                    other => format!("date={}", date_name(other)),
                };
                let record = Record {
                    user: self.cfg.user.as_str(),
                    folder: target.folder.kind().name(),
                    msgid: id.as_deref(),
                    outcome: Outcome::Stored { file: name, size },
                    extra: &extra,
                };
                self.logger.record(&record);
            }
        }
        Ok(())
    }

    fn summary(&self, started: Instant) {
        let c = &self.counts;
        let secs = started.elapsed().as_secs_f64();
        let mut dates: Vec<String> = c.dates.iter().map(|(k, v)| format!("{k}={v}")).collect();
        dates.sort();
        let what = if self.args.dry_run { "would store" } else { "stored" };
        eprintln!(
            "replay: user={} messages={} {what}={} already-present={} failed={} bytes={} dates:{} seconds={secs:.2} rate={:.0}/s",
            self.cfg.user,
            c.messages,
            if self.args.dry_run { c.messages } else { c.stored },
            c.present,
            c.failed,
            c.bytes,
            dates.join(","),
            c.messages as f64 / secs.max(1e-9),
        );
    }
}

fn date_name(source: DateSource) -> &'static str {
    match source {
        DateSource::FromLine => "from-line",
        DateSource::DateHeader => "date-header",
        DateSource::FileMtime => "file-mtime",
    }
}

fn user_address(user: &User, domain: Option<&str>) -> String {
    match domain {
        Some(d) if !d.is_empty() => format!("{user}@{d}"),
        _ => user.to_string(),
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

    #[test]
    fn our_header_lines_are_stripped_for_the_digest() {
        let stored = b"Return-Path: <a@b>\nDelivered-To: c@d\nEnvelope-To: x@y,\n z@w\nSubject: s\n\nbody\n";
        assert_eq!(strip_our_header_lines(stored), b"Subject: s\n\nbody\n");
        assert_eq!(strip_our_header_lines(b"Subject: s\n"), b"Subject: s\n");
    }
}
