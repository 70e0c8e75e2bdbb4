//! `mailkeep seal`: records every message file not sealed yet, and the audit entries
//! appended since the last seal, in new seals at the end of the chain (`seal.rs` has the
//! format), and prints the head digest for the admin to keep off the machine.
//!
//! The run, under an exclusive lock on seals/lock (a second run waits for the first):
//! 1. bring the index up to the seal files (`seal::sync_index`);
//! 2. read audit.log: its prefix must still be what the last seal pinned, else the run
//!    refuses (exit 1: something rewrote the append-only log);
//! 3. per user and folder, list new/ and cur/, keep the base names the index does not
//!    hold, and hash those (a file gone since the listing is left for the next run; a
//!    sealed file is never opened again);
//! 4. every `BATCH` messages, and at the end, sign a seal, write it (atomically, fsynced,
//!    mode 0440, never replacing one) and take it into the index. A run that found
//!    nothing new writes no seal unless audit.log grew or there is no seal at all yet.

use std::collections::BTreeMap;
use std::ffi::{CStr, CString, OsStr};
use std::fs::File;
use std::io::{IsTerminal, Write};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::{OFlag, openat};
use nix::sys::stat::{Mode, SFlag, fstat};
use nix::unistd::{Gid, Uid};

use crate::audit;
use crate::cli::SealArgs;
use crate::commands::Error;
use crate::exit::{Classify, Exit};
use crate::fsutil::{self, OpenError};
use crate::root::{self, RootError};
use crate::seal::index::{INDEX_FILE, Index};
use crate::seal::key::SigningKey;
use crate::seal::{self, AuditSpan, Hash, Header, Line, SealError, Sealed, Sub};

/// seals/lock: one seal at a time.
const LOCK_FILE: &str = "lock";

impl Classify for SealError {
    fn exit(&self) -> Exit {
        match self {
            SealError::Io { .. } | SealError::Index { .. } => Exit::TempFail,
            SealError::Refused { .. } | SealError::Key { .. } => Exit::Config,
            SealError::Corrupt { .. } | SealError::AuditChanged(_) => Exit::Problems,
            SealError::Audit(audit::AuditError::Io { .. }) => Exit::TempFail,
            SealError::Audit(audit::AuditError::NotAFile) => Exit::Config,
            SealError::Audit(audit::AuditError::Corrupt { .. }) => Exit::Problems,
        }
    }
}

pub fn run(args: &SealArgs) -> Result<Exit, Error> {
    // As expire, erase and hold: what a seal run as root creates is given to the root's
    // owner, but a root seal is the admin's deliberate choice.
    if nix::unistd::geteuid().is_root() && !args.allow_root {
        return Err(crate::config::ConfigError::RunningAsRoot.into());
    }
    root::require_existing(&args.root)?;
    let root_fd = fsutil::open_dir_path(&args.root)
        .map_err(|_| RootError::NotInitialised { root: args.root.clone(), why: "it cannot be opened" })?;
    let Some(state) = root::open_state_dir(root_fd.as_fd()).map_err(|_| RootError::Symlink(state_path(args)))? else {
        return Err(RootError::NotInitialised { root: args.root.clone(), why: "no .mailkeep in it" }.into());
    };
    let key = args.sign_key.as_deref().map(SigningKey::load).transpose()?;
    let owner = owner_for(state.as_fd())?;
    let seals = seals_dir(state.as_fd(), owner)?;
    let _lock = lock(seals.as_fd(), owner)?;
    let seals_path = state_path(args).join(seal::SEALS_DIR);
    let index_path = seals_path.join(INDEX_FILE);
    let mut chain_changed = false;
    let index =
        match open_index(&seals_path, (state.as_fd(), seals.as_fd()), owner, args.rebuild_index, &mut chain_changed) {
            Err(SealError::Index { err, .. }) => {
                // Derived data: a damaged index is made again from the seals.
                crate::log::stderr_line(&format!(
                    "seal: the index {} is unusable ({err}); rebuilding it",
                    index_path.display()
                ));
                for name in [INDEX_FILE.to_string(), format!("{INDEX_FILE}-journal")] {
                    let _ =
                        nix::unistd::unlinkat(seals.as_fd(), name.as_str(), nix::unistd::UnlinkatFlags::NoRemoveDir);
                }
                open_index(&seals_path, (state.as_fd(), seals.as_fd()), owner, true, &mut chain_changed)
                    .map_err(damaged(&seals_path))?
            }
            other => other.map_err(damaged(&seals_path))?,
        };
    // The seals this run writes carry its start: a message file older than that is in them.
    let started = crate::time::format_time(crate::time::now());
    let mut chain =
        Chain::load(seals.as_fd(), state.as_fd(), owner, key, index, started).map_err(damaged(&seals_path))?;
    if chain.unsigned_head {
        // Signing it now would sign whatever someone who can write seals/ put there.
        crate::log::stderr_line(&format!(
            "seal: problem: the head {} is not signed (written without --sign-key, or not by mailkeep); \
             left unsigned; run 'mailkeep check --seals --verify-key PUBKEY'",
            seal::seal_name(chain.head_seq)
        ));
        chain_changed = true;
    }
    let mut run = Run::new(&args.root, !args.quiet);
    run.walk(root_fd.as_fd(), &mut chain)?;
    let first_seal = chain.head_seq == 0;
    if !chain.batch.is_empty() || chain.audit_pending() || first_seal {
        chain.write()?;
    }
    run.finish(&chain, args.quiet).map_err(Error::Stdout)?;
    Ok(if run.problems == 0 && !chain_changed { Exit::Ok } else { Exit::Problems })
}

/// The index of sealed names, brought up to the seal files (emptied first to `rebuild`).
fn open_index(
    seals_path: &Path,
    (state, seals): (BorrowedFd<'_>, BorrowedFd<'_>),
    owner: fsutil::Owner,
    rebuild: bool,
    changed: &mut bool,
) -> Result<Index, SealError> {
    let mut index = Index::open(seals, seals_path)?;
    chown_at(seals, INDEX_FILE, owner);
    if rebuild {
        index.clear()?;
    }
    if let Some(what) = seal::sync_index(&mut index, seals, &audit::read_bytes(state)?)? {
        // A seal removed or replaced since the last run, or an edited index: sealing goes
        // on (new mail must be sealed), but the run says so and ends with 1.
        crate::log::stderr_line(&format!("seal: problem: {what}; run 'mailkeep check --seals'"));
        *changed = true;
    }
    Ok(index)
}

/// A seal that does not parse stops the run: it says how to go on (README, "Seals").
fn damaged(seals_path: &Path) -> impl Fn(SealError) -> SealError + '_ {
    move |e| match e {
        SealError::Corrupt { name, line, what } => SealError::Corrupt {
            what: format!(
                "{what}; the seal is damaged: move it out of {} (keep it for the record) and run \
                 'mailkeep seal --rebuild-index'",
                seals_path.display()
            ),
            name,
            line,
        },
        e => e,
    }
}

fn state_path(args: &SealArgs) -> PathBuf {
    args.root.join(root::STATE_DIR)
}

fn io(name: &str, op: &'static str) -> impl FnOnce(Errno) -> SealError {
    let name = name.to_string();
    move |errno| SealError::Io { name, op, errno }
}

/// Run as root, what a seal creates belongs to the owner of ROOT/.mailkeep (the backup's
/// user), so the timer's next run, as that user, can go on.
fn owner_for(state: BorrowedFd<'_>) -> Result<fsutil::Owner, SealError> {
    let st = fstat(state).map_err(io(root::STATE_DIR, "stat"))?;
    Ok(nix::unistd::geteuid().is_root().then_some((st.st_uid, st.st_gid)))
}

fn chown_at(dir: BorrowedFd<'_>, name: &str, owner: fsutil::Owner) {
    if let Some((uid, gid)) = owner {
        let how = nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW;
        let _ = nix::unistd::fchownat(dir, name, Some(Uid::from_raw(uid)), Some(Gid::from_raw(gid)), how);
    }
}

/// ROOT/.mailkeep/seals, made like ROOT/.mailkeep (its mode, its owner) when missing.
fn seals_dir(state: BorrowedFd<'_>, owner: fsutil::Owner) -> Result<OwnedFd, SealError> {
    let refused = |e: OpenError| match e {
        OpenError::Io { op, errno } => SealError::Io { name: seal::SEALS_DIR.into(), op, errno },
        e => SealError::Refused { name: seal::SEALS_DIR.into(), what: e.to_string() },
    };
    match fsutil::open_dir(state, seal::SEALS_DIR) {
        Err(OpenError::Missing) => {}
        other => return other.map_err(refused),
    }
    let mode = fstat(state).map_err(io(root::STATE_DIR, "stat"))?.st_mode & 0o2770;
    match fsutil::create_dir(state, seal::SEALS_DIR, Mode::from_bits_truncate(mode), owner) {
        Err(OpenError::Io { errno: Errno::EEXIST, .. }) => fsutil::open_dir(state, seal::SEALS_DIR).map_err(refused),
        other => other.map_err(refused),
    }
}

/// Takes seals/lock, waiting (and saying so) while another seal holds it.
fn lock(seals: BorrowedFd<'_>, owner: fsutil::Owner) -> Result<File, SealError> {
    let flags = OFlag::O_RDWR | OFlag::O_CREAT | OFlag::O_NOFOLLOW | OFlag::O_NONBLOCK | OFlag::O_CLOEXEC;
    let fd = openat(seals, LOCK_FILE, flags, Mode::from_bits_truncate(0o600)).map_err(|e| match e {
        Errno::ELOOP => SealError::Refused { name: LOCK_FILE.into(), what: "is a symlink".into() },
        e => SealError::Io { name: LOCK_FILE.into(), op: "open", errno: e },
    })?;
    if fsutil::file_type(&fstat(fd.as_fd()).map_err(io(LOCK_FILE, "stat"))?) != SFlag::S_IFREG {
        return Err(SealError::Refused { name: LOCK_FILE.into(), what: "is not a regular file".into() });
    }
    chown_at(seals, LOCK_FILE, owner);
    let file = File::from(fd);
    if file.try_lock().is_err() {
        crate::log::stderr_line("seal: another seal is running; waiting for it to finish");
        file.lock().map_err(|e| SealError::Io { name: LOCK_FILE.into(), op: "lock", errno: fsutil::errno_of(e) })?;
    }
    Ok(file)
}

/// The end of the chain and what goes into its next seals.
struct Chain {
    seals: OwnedFd,
    owner: fsutil::Owner,
    key: Option<SigningKey>,
    index: Index,
    head_seq: u64,
    head_digest: String,
    /// audit.log as the next seal pins it, and the entries it takes in.
    audit: AuditSpan,
    entries: Vec<audit::Entry>,
    batch: Vec<Sealed>,
    /// What this run wrote: seals, messages, bytes, audit entries.
    written: Vec<u64>,
    messages: u64,
    bytes: u64,
    audit_entries: u64,
    /// The run's start, each new seal's `time`.
    started: String,
    /// A key was given and the head seal has no signature: reported, never signed now.
    unsigned_head: bool,
}

impl Chain {
    /// The chain's end as the seal files have it, and audit.log's new entries. The head
    /// seal's audit lines must be audit.log's entries it pinned. A head seal without a
    /// signature while a key is given is noted (`unsigned_head`), never signed after the
    /// fact: `write` signs before a seal exists, so a crash cannot leave one unsigned.
    fn load(
        seals: BorrowedFd<'_>,
        state: BorrowedFd<'_>,
        owner: fsutil::Owner,
        key: Option<SigningKey>,
        index: Index,
        started: String,
    ) -> Result<Chain, SealError> {
        let log = audit::read_bytes(state)?;
        let mut unsigned_head = false;
        let (head_seq, head_digest, pinned, head_lines) = match seal::list(seals)?.last() {
            None => (0, seal::NO_PREVIOUS.to_string(), None, Vec::new()),
            Some(&seq) => {
                let bytes = seal::read(seals, seq)?;
                let (header, lines) = seal::parse(&seal::seal_name(seq), &bytes)?;
                unsigned_head =
                    key.is_some() && fsutil::regular_or_missing(seals, seal::sig_name(seq).as_str()) == Ok(false);
                (seq, seal::sha256_hex(&bytes), Some(header.audit), lines)
            }
        };
        let from = pinned.as_ref().map_or(0, |a| a.to);
        let to = seal::complete_prefix(&log) as u64;
        let shrank = to < from;
        if shrank || pinned.as_ref().is_some_and(|a| seal::sha256_hex(&log[..a.to as usize]) != a.sha256) {
            let what = if shrank { "shorter than" } else { "not what" };
            return Err(SealError::AuditChanged(format!(
                "{} is {what} seal {} pinned (bytes 0..{from}): it was rewritten or truncated; run 'mailkeep check --seals'",
                audit::AUDIT_LOG,
                seal::seal_name(head_seq)
            )));
        }
        if let Some(why) = pinned.as_ref().and_then(|span| seal::tombstones_differ(&head_lines, &log, span)) {
            return Err(SealError::AuditChanged(format!(
                "{}: {why}; run 'mailkeep check --seals'",
                seal::seal_name(head_seq)
            )));
        }
        let entries = audit::parse(&log[from as usize..to as usize])?;
        let audit = AuditSpan { from, to, sha256: seal::sha256_hex(&log[..to as usize]) };
        Ok(Chain {
            seals: nix::unistd::dup(seals).map_err(io(seal::SEALS_DIR, "dup"))?,
            owner,
            key,
            index,
            head_seq,
            head_digest,
            audit,
            entries,
            batch: Vec::new(),
            written: Vec::new(),
            messages: 0,
            bytes: 0,
            audit_entries: 0,
            started,
            unsigned_head,
        })
    }

    fn audit_pending(&self) -> bool {
        self.audit.to > self.audit.from
    }

    /// Adds a message; a full batch becomes a seal.
    fn push(&mut self, sealed: Sealed) -> Result<(), SealError> {
        self.batch.push(sealed);
        if self.batch.len() >= seal::BATCH { self.write() } else { Ok(()) }
    }

    /// Writes the batch and the pending audit entries as the next seal, signs it and takes
    /// it into the index.
    fn write(&mut self) -> Result<(), SealError> {
        let seq = self.head_seq + 1;
        let name = seal::seal_name(seq);
        let header = Header {
            format: seal::FORMAT.into(),
            seq,
            previous: self.head_digest.clone(),
            time: self.started.clone(),
            audit: self.audit.clone(),
            messages: self.batch.len() as u64,
            audit_entries: self.entries.len() as u64,
        };
        let bytes = seal::render(&header, &self.batch, &self.entries);
        // The signature first: a crash between the two leaves an orphan .sig (replaced by
        // the next run's), never a seal without its signature.
        if let Some(key) = &self.key {
            sign(self.seals.as_fd(), seq, &bytes, key, self.owner)?;
        }
        crate::fault::point("seal-signed");
        fsutil::create_file(self.seals.as_fd(), OsStr::new(&name), &bytes, seal::SEAL_MODE, self.owner)
            .map_err(|e| io(&name, "create")(fsutil::errno_of(e)))?;
        crate::fault::point("seal-written");
        let digest = seal::sha256_hex(&bytes);
        self.messages += self.batch.len() as u64;
        self.bytes += self.batch.iter().map(|m| m.size).sum::<u64>();
        self.audit_entries += self.entries.len() as u64;
        let lines: Vec<Line> = std::mem::take(&mut self.batch)
            .into_iter()
            .map(Line::Message)
            .chain(std::mem::take(&mut self.entries).into_iter().map(|audit| Line::Audit(seal::AuditLine { audit })))
            .collect();
        self.index.add(seq, &digest, &lines)?;
        // The next seal in this run takes in no more of the log.
        self.audit.from = self.audit.to;
        self.head_seq = seq;
        self.head_digest = digest;
        self.written.push(seq);
        Ok(())
    }
}

/// Writes seal `seq`'s signature (before the seal: it replaces only an orphan one).
fn sign(
    seals: BorrowedFd<'_>,
    seq: u64,
    bytes: &[u8],
    key: &SigningKey,
    owner: fsutil::Owner,
) -> Result<(), SealError> {
    let name = seal::sig_name(seq);
    fsutil::replace_file(seals, OsStr::new(&name), &key.sign(bytes), seal::SEAL_MODE, owner)
        .map_err(|e| io(&name, "write")(fsutil::errno_of(e)))
}

/// One run's walk: what it hashed, what it could not seal, its progress display.
struct Run {
    root: PathBuf,
    bar: Option<indicatif::ProgressBar>,
    problems: u64,
    vanished: u64,
    buf: Vec<u8>,
}

impl Run {
    fn new(root: &Path, show: bool) -> Run {
        let bar = (show && std::io::stderr().is_terminal()).then(|| {
            let bar = indicatif::ProgressBar::new_spinner();
            let style = indicatif::ProgressStyle::with_template("{spinner} sealing: {msg} {bytes} {bytes_per_sec}")
                .expect("a valid template");
            bar.set_style(style);
            bar
        });
        Run { root: root.to_path_buf(), bar, problems: 0, vanished: 0, buf: Vec::new() }
    }

    /// A file or directory that cannot be sealed: one line, and exit 1 at the end.
    fn problem(&mut self, path: &Path, why: &str) {
        self.problems += 1;
        let line = format!("seal: not sealed: {}: {why}", path.display());
        match &self.bar {
            Some(bar) => bar.println(crate::log::escape(&line)),
            None => crate::log::stderr_line(&line),
        }
    }

    fn walk(&mut self, root: BorrowedFd<'_>, chain: &mut Chain) -> Result<(), SealError> {
        let users = seal::users(root).map_err(io("the backup root", "list"))?;
        for user in users {
            let path = self.root.join(&user);
            let folders = match fsutil::open_dir(root, user.as_str()) {
                Ok(fd) => seal::folders(fd.as_fd()).map_err(|e| OpenError::Io { op: "list", errno: e }),
                Err(e) => Err(e),
            };
            match folders {
                Ok(folders) => {
                    for (folder, fd) in folders {
                        self.folder(&user, &folder, fd.as_fd(), chain)?;
                    }
                }
                Err(e) => self.problem(&path, &e.to_string()),
            }
        }
        Ok(())
    }

    /// Seals the messages of one folder that the index does not hold, in name order.
    fn folder(&mut self, user: &str, folder: &str, fd: BorrowedFd<'_>, chain: &mut Chain) -> Result<(), SealError> {
        let dir = seal::folder_dir(folder).expect("a folder the walk found");
        let path = self.root.join(user).join(&dir);
        let mut todo: BTreeMap<Vec<u8>, (Sub, CString)> = BTreeMap::new();
        let mut lookup: Result<(), SealError> = Ok(());
        let mut not_utf8 = Vec::new();
        let listed = seal::each_message(fd, |sub, name| {
            let base = seal::base_name(name.to_bytes());
            let Ok(base_str) = std::str::from_utf8(base) else {
                not_utf8.push(sub.dir().to_string() + "/" + &crate::log::raw_bytes_as_text(name.to_bytes()));
                return;
            };
            match chain.index.is_sealed(user, folder, base_str) {
                Ok(true) => {}
                Ok(false) => {
                    todo.insert(base.to_vec(), (sub, name.to_owned()));
                }
                Err(e) if lookup.is_ok() => lookup = Err(e),
                Err(_) => {}
            }
        });
        lookup?;
        if let Err(e) = listed {
            self.problem(&path, &e.to_string());
        }
        for name in not_utf8 {
            self.problem(&path.join(name), "the name is not UTF-8");
        }
        let new = fsutil::open_dir(fd, "new").ok();
        let cur = fsutil::open_dir(fd, "cur").ok();
        for (base, (sub, name)) in todo {
            let dir = match sub {
                Sub::New => new.as_ref(),
                Sub::Cur => cur.as_ref(),
            };
            let Some(dir) = dir else { continue };
            self.message(user, folder, &path, (dir.as_fd(), sub), (&base, &name), chain)?;
        }
        Ok(())
    }

    fn message(
        &mut self,
        user: &str,
        folder: &str,
        path: &Path,
        (dir, sub): (BorrowedFd<'_>, Sub),
        (base, name): (&[u8], &CStr),
        chain: &mut Chain,
    ) -> Result<(), SealError> {
        let file_path = || path.join(sub.dir()).join(OsStr::from_bytes(name.to_bytes()));
        match seal::hash_message(dir, name, &mut self.buf) {
            Ok(Hash::Done(h)) => {
                let name = String::from_utf8(base.to_vec()).expect("checked UTF-8");
                let sealed = Sealed { user: user.into(), folder: folder.into(), name, size: h.size, sha256: h.sha256 };
                chain.push(sealed)?;
                if let Some(bar) = &self.bar {
                    bar.inc(h.size);
                    bar.set_message(format!("{} messages", chain.messages + chain.batch.len() as u64));
                }
            }
            // Moved to cur/ by an IMAP server (or removed) since the listing: the next run
            // finds it where it is now.
            Ok(Hash::Vanished) => self.vanished += 1,
            Ok(Hash::NotAFile) => self.problem(&file_path(), "not a regular file"),
            Err(e) => self.problem(&file_path(), e.desc()),
        }
        Ok(())
    }

    /// The summary and the head line (only the head line when quiet).
    fn finish(&self, chain: &Chain, quiet: bool) -> std::io::Result<()> {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
        let mut out = std::io::stdout().lock();
        if !quiet {
            match (chain.written.first(), chain.written.last()) {
                (Some(first), Some(last)) => {
                    let seals = if first == last {
                        format!("seal {}", seal::seal_name(*first))
                    } else {
                        format!("seals {}..{}", seal::seal_name(*first), seal::seal_name(*last))
                    };
                    writeln!(
                        out,
                        "sealed {} messages ({} bytes) and {} audit entries in {seals}",
                        chain.messages, chain.bytes, chain.audit_entries
                    )?;
                }
                _ => writeln!(out, "nothing new to seal")?,
            }
            if self.vanished > 0 {
                writeln!(out, "{} messages moved or removed while sealing: the next run seals them", self.vanished)?;
            }
        }
        writeln!(out, "head {} {}", seal::seal_name(chain.head_seq), chain.head_digest)?;
        out.flush()
    }
}
