//! `check --seals`: whether the chain of seals holds and every sealed message is still
//! there, unchanged, unless audit.log records its removal. "Removed on purpose" and
//! "lost" are told apart here.
//!
//! 1. The chain: seals numbered 1..N without a gap; each one's `previous` is the digest of
//!    the one before (an edited or replaced seal breaks the link after it); each one's
//!    audit span starts where the one before ended and its digest is audit.log's prefix;
//!    with a key, each one's signature; with a kept head, that digest is in the chain.
//!    Each seal's audit lines must be the entries of audit.log's bytes it pinned. A gap in
//!    the numbers is one finding, however many seals it spans.
//! 2. The seals just verified, and the audit entries after the last one, go into a private
//!    temporary index (never seals/index.sqlite, which anyone who can write there could
//!    edit); then folder by folder each sealed name is looked for in new/ and cur/ under
//!    any flags, its size compared and, with `--verify-content`, its SHA-256.
//! 3. A sealed message that is gone is accounted for only by an expire or erase entry that
//!    names it with its sealed size and SHA-256; before one is called lost, audit.log is
//!    read again (an expire may have run meanwhile). A removal entry that names a sealed
//!    message otherwise, or that no expire or erase wrote, is itself reported. Removals no
//!    seal vouches for yet (audit.log's unsealed tail; with `--seal-head`, also those sealed
//!    after the kept head) are listed with who, when and why: anyone who can append to
//!    audit.log could have written them. Without `--seal-head` the list is for the admin to
//!    read (exit 0: expire runs daily); with it, each is a problem (exit 1).
//! 4. A message file present since before the last seal's run began but in no seal is
//!    reported (an edited seals/index.sqlite keeps a message out of new seals, not out of this).
//!
//! Memory: the seal being verified, the names of one folder at a time, and the findings.

use std::collections::HashMap;
use std::ffi::{CString, OsStr};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use nix::fcntl::AtFlags;
use nix::sys::stat::fstatat;

use super::report::{Fault, Problem, Report, SealSummary};
use crate::audit;
use crate::envelope::User;
use crate::fsutil;
use crate::seal::index::{Index, Removal};
use crate::seal::key::VerifyKey;
use crate::seal::{self, Hash, SealError, Sealed, Sub};

/// What `--seals` was asked to verify.
pub struct Options<'a> {
    pub verify_content: bool,
    pub key: Option<VerifyKey>,
    pub head: Option<&'a str>,
    pub only: Option<&'a User>,
}

/// Verifies the seals below `root`, adding each problem to `report`. Fails only when the
/// temporary index cannot be made.
pub fn verify(root: &Path, root_fd: BorrowedFd<'_>, opts: &Options<'_>, report: &mut Report) -> Result<(), SealError> {
    let seals_path = root.join(crate::root::STATE_DIR).join(seal::SEALS_DIR);
    let mut v = Verifier { report, seals_path, summary: SealSummary::default(), vouched: 0, log_read: 0 };
    let state = crate::root::open_state_dir(root_fd).ok().flatten();
    let seals = state.as_ref().map(|s| fsutil::open_dir(s.as_fd(), seal::SEALS_DIR));
    let (Some(state), Some(Ok(seals))) = (state, seals) else {
        v.chain("no seals: run 'mailkeep seal' first".into());
        v.report.seals = Some(v.summary);
        return Ok(());
    };
    let mut index = Index::temporary()?;
    v.log_owner(state.as_fd());
    let log = match audit::read_bytes(state.as_fd()) {
        Ok(log) => log,
        Err(e) => {
            v.chain(format!("{e}"));
            Vec::new()
        }
    };
    let end = v.chain_of(seals.as_fd(), &log, opts, &mut index)?;
    crate::fault::point("check-seals-log-read");
    // Removals after the last seal count too (the log is fsynced before a file goes), but
    // are listed: no seal vouches for them yet.
    let tail_from = (end.sealed_to as usize).min(log.len());
    v.log_read = seal::complete_prefix(&log).max(tail_from);
    match audit::parse(&log[tail_from..v.log_read]) {
        Ok(entries) => index.add_unsealed_removals(&entries)?,
        Err(e) => v.chain(format!("{e} (after the last seal)")),
    }
    v.messages(root, root_fd, state.as_fd(), &mut index, opts)?;
    v.mismatches(&index, opts)?;
    if let Some(head_time) = end.head_time {
        v.unsealed(root, root_fd, &index, opts, head_time)?;
    }
    v.report.seals = Some(v.summary);
    Ok(())
}

/// What step 1 found out about the chain's end.
struct ChainEnd {
    /// Where in audit.log the last seal ended.
    sealed_to: u64,
    /// When the last seal's run began (a message older than that is in the seals).
    head_time: Option<i64>,
}

struct Verifier<'r> {
    report: &'r mut Report,
    seals_path: PathBuf,
    summary: SealSummary,
    /// Removals sealed in seals up to this one are vouched for: the last seal, or the kept head.
    vouched: u64,
    /// audit.log's bytes taken in so far.
    log_read: usize,
}

impl Verifier<'_> {
    fn chain(&mut self, why: String) {
        let path = self.seals_path.clone();
        self.report.problems.push(Problem { path, user: None, fault: Fault::SealChain(why), repair: None });
    }

    /// audit.log must belong to the owner of ROOT/.mailkeep, as every command that appends
    /// to it leaves it: with `init --shared-group` the group may write the directory, and a
    /// member could put a log of their own in its place.
    fn log_owner(&mut self, state: BorrowedFd<'_>) {
        let (Ok(dir), Ok(log)) =
            (nix::sys::stat::fstat(state), fstatat(state, audit::AUDIT_LOG, AtFlags::AT_SYMLINK_NOFOLLOW))
        else {
            return;
        };
        if log.st_uid != dir.st_uid {
            self.chain(format!(
                "{} belongs to uid {}, not to uid {} who owns {}: replaced by another user?",
                audit::AUDIT_LOG,
                log.st_uid,
                dir.st_uid,
                crate::root::STATE_DIR
            ));
        }
    }

    fn found(&mut self, path: PathBuf, user: &str, fault: Fault) {
        self.report.problems.push(Problem { path, user: Some(user.into()), fault, repair: None });
    }

    /// Step 1; takes each readable seal into `index`.
    fn chain_of(
        &mut self,
        seals: BorrowedFd<'_>,
        log: &[u8],
        opts: &Options<'_>,
        index: &mut Index,
    ) -> Result<ChainEnd, SealError> {
        let none = ChainEnd { sealed_to: 0, head_time: None };
        let seqs = match seal::list(seals) {
            Ok(seqs) => seqs,
            Err(e) => {
                self.chain(e.to_string());
                return Ok(none);
            }
        };
        if seqs.is_empty() {
            self.chain("no seals: run 'mailkeep seal' first".into());
            return Ok(none);
        }
        let mut audit_hash = AuditPrefix::new(log);
        // The previous seal's digest and where its audit span ended, when it was read.
        let mut previous: Option<(String, u64)> = Some((seal::NO_PREVIOUS.into(), 0));
        let mut kept_head = None;
        let mut head_time = None;
        let mut next = 1;
        for &seq in &seqs {
            let name = seal::seal_name(seq);
            if seq > next {
                let gap = if seq - next == 1 {
                    format!("{} is missing", seal::seal_name(next))
                } else {
                    format!(
                        "{}..{} are missing ({} seals)",
                        seal::seal_name(next),
                        seal::seal_name(seq - 1),
                        seq - next
                    )
                };
                self.chain(format!("{gap}: seals were removed from the chain, or {name} was planted"));
                previous = None;
            }
            next = seq + 1;
            let bytes = match seal::read(seals, seq) {
                Ok(b) => b,
                Err(e) => {
                    self.chain(e.to_string());
                    previous = None;
                    continue;
                }
            };
            let digest = seal::sha256_hex(&bytes);
            if opts.head.is_some_and(|h| h.eq_ignore_ascii_case(&digest)) {
                kept_head = Some(seq);
            }
            if let Some(key) = &opts.key {
                self.signature(seals, seq, &bytes, key);
            }
            let (header, lines) = match seal::parse(&name, &bytes) {
                Ok(parsed) => parsed,
                Err(e) => {
                    self.chain(format!("{e}: edited by hand?"));
                    previous = Some((digest, 0));
                    continue;
                }
            };
            if header.seq != seq {
                self.chain(format!("{name} says it is seal {}: renamed or copied", header.seq));
            }
            if let Some((prev_digest, prev_to)) = &previous {
                if &header.previous != prev_digest {
                    let before = if seq == 1 { "no seal (64 zeros)".into() } else { seal::seal_name(seq - 1) };
                    self.chain(format!(
                        "{name} chains to {} but {before} has digest {prev_digest}: {before} was edited or replaced after it was sealed",
                        header.previous
                    ));
                }
                if header.audit.from != *prev_to {
                    self.chain(format!(
                        "{name} takes in audit.log from byte {}, the seal before ended at {prev_to}",
                        header.audit.from
                    ));
                }
            }
            match audit_hash.check(&header.audit) {
                Some(why) => self.chain(format!("{name}: {why}")),
                None => {
                    if let Some(why) = seal::tombstones_differ(&lines, log, &header.audit) {
                        self.chain(format!("{name}: {why}"));
                    }
                }
            }
            head_time = crate::time::parse_date(&header.time).ok();
            index.add(seq, &digest, &lines)?;
            self.summary.seals += 1;
            self.summary.sealed_messages += header.messages;
            (self.summary.head, self.summary.head_digest) = (name, digest.clone());
            previous = Some((digest, header.audit.to));
        }
        if let Some(head) = opts.head.filter(|_| kept_head.is_none()) {
            self.chain(format!(
                "the kept head {head} is not found in the chain: mistyped, or seals were removed from its end or replaced"
            ));
        }
        self.vouched = if opts.head.is_some() { kept_head.unwrap_or(0) } else { seqs.last().copied().unwrap_or(0) };
        let sealed_to = previous.map_or(audit_hash.fed as u64, |(_, to)| to);
        Ok(ChainEnd { sealed_to, head_time })
    }

    fn signature(&mut self, seals: BorrowedFd<'_>, seq: u64, bytes: &[u8], key: &VerifyKey) {
        let sig_name = seal::sig_name(seq);
        match seal::read_file(seals, &sig_name) {
            Ok(sig) if key.verify(bytes, &sig) => {}
            Ok(_) => self.chain(format!("{}: the signature does not verify with the key", seal::seal_name(seq))),
            Err(SealError::Refused { .. }) if fsutil::regular_or_missing(seals, sig_name.as_str()) == Ok(false) => {
                self.chain(format!("{} is not signed (no {sig_name})", seal::seal_name(seq)))
            }
            Err(e) => self.chain(e.to_string()),
        }
    }

    /// Steps 2 and 3, folder by folder.
    fn messages(
        &mut self,
        root: &Path,
        root_fd: BorrowedFd<'_>,
        state: BorrowedFd<'_>,
        index: &mut Index,
        opts: &Options<'_>,
    ) -> Result<(), SealError> {
        for (user, folder) in index.folders()? {
            if opts.only.is_some_and(|u| u.as_str() != user) {
                continue;
            }
            let place =
                User::parse(OsStr::new(&user)).ok().filter(|u| u.as_str() == user).and(seal::folder_dir(&folder));
            let Some(dir) = place else {
                self.chain(format!("a seal names user {user:?}, folder {folder:?}: no such place below a root"));
                continue;
            };
            let path = if dir.is_empty() { root.join(&user) } else { root.join(&user).join(&dir) };
            let fd = fsutil::open_dir(root_fd, user.as_str())
                .and_then(|u| if dir.is_empty() { Ok(u) } else { fsutil::open_dir(u.as_fd(), dir.as_str()) })
                .ok();
            let mut folder_check = FolderCheck::new(fd, &path);
            let (mut removed, mut missing) = (Vec::new(), Vec::new());
            index.each_sealed(&user, &folder, |sealed, removal| {
                match (folder_check.verify(&sealed, opts.verify_content), removal) {
                    (None, _) => {}
                    (Some((_, Fault::SealedMissing { .. })), Some(rowid)) => removed.push(rowid),
                    (Some((path, Fault::SealedMissing { .. })), None) => missing.push((path, sealed)),
                    // Present but altered: a removal entry excuses an absence, nothing else.
                    (Some((path, fault)), _) => self.found(path, &user, fault),
                }
            })?;
            if !missing.is_empty() {
                self.read_log_again(state, index);
            }
            for (path, sealed) in missing {
                match index.valid_removal(&sealed)? {
                    Some(rowid) => removed.push(rowid),
                    None => {
                        let Sealed { user, folder, name, .. } = sealed;
                        self.found(path, &user.clone(), Fault::SealedMissing { user, folder, name });
                    }
                }
            }
            for rowid in removed {
                self.removed(index.removal(rowid)?, opts);
            }
        }
        Ok(())
    }

    /// Takes in the audit entries appended since the log was read (an expire or erase
    /// that ran while this check did), before a message is called lost.
    fn read_log_again(&mut self, state: BorrowedFd<'_>, index: &mut Index) {
        let Ok(log) = audit::read_bytes(state) else { return };
        let to = seal::complete_prefix(&log);
        if to > self.log_read
            && let Ok(entries) = audit::parse(&log[self.log_read..to])
            && index.add_unsealed_removals(&entries).is_ok()
        {
            self.log_read = to;
        }
    }

    /// A sealed message gone, accounted for by `removal`: counted, and listed when no seal
    /// up to the vouched one holds the entry.
    fn removed(&mut self, removal: Removal, opts: &Options<'_>) {
        self.summary.removed += 1;
        if removal.seq.is_some_and(|seq| seq <= self.vouched) {
            return;
        }
        if opts.head.is_some() {
            let path = self.seals_path.clone();
            let user = removal.user.clone();
            self.report.problems.push(Problem {
                path,
                user: Some(user),
                fault: Fault::SealRemovalUnvouched(describe(&removal)),
                repair: None,
            });
        }
        self.summary.removed_not_sealed.push(removal);
    }

    /// Removal entries that excuse nothing: each one reported.
    fn mismatches(&mut self, index: &Index, opts: &Options<'_>) -> Result<(), SealError> {
        for m in index.mismatches()? {
            if opts.only.is_some_and(|u| u.as_str() != m.removal.user) {
                continue;
            }
            let why = match &m.sealed {
                _ if !matches!(m.removal.command.as_str(), "expire" | "erase") => {
                    format!("names a message, but only expire and erase remove (entry: {})", describe(&m.removal))
                }
                Some((size, sha)) => format!(
                    "names a sealed message with size {} and SHA-256 {}, sealed with {size} and {sha} (entry: {})",
                    m.removal.size,
                    m.removal.sha256,
                    describe(&m.removal)
                ),
                None => continue,
            };
            let path = self.seals_path.clone();
            let user = m.removal.user.clone();
            self.report.problems.push(Problem {
                path,
                user: Some(user),
                fault: Fault::SealRemovalMismatch(why),
                repair: None,
            });
        }
        Ok(())
    }

    /// Step 4: message files present since before the last seal's run began (their ctime;
    /// renaming or editing a file sets it to now) whose base name no seal holds.
    fn unsealed(
        &mut self,
        root: &Path,
        root_fd: BorrowedFd<'_>,
        index: &Index,
        opts: &Options<'_>,
        head_time: i64,
    ) -> Result<(), SealError> {
        let Ok(users) = seal::users(root_fd) else { return Ok(()) };
        for user in users.into_iter().filter(|u| opts.only.is_none_or(|o| o.as_str() == u)) {
            let Ok(user_fd) = fsutil::open_dir(root_fd, user.as_str()) else { continue };
            let Ok(folders) = seal::folders(user_fd.as_fd()) else { continue };
            for (folder, fd) in folders {
                let mut candidates = Vec::new();
                let mut failed = None;
                let _ = seal::each_message(fd.as_fd(), |sub, name| {
                    let base = String::from_utf8_lossy(seal::base_name(name.to_bytes())).into_owned();
                    match index.is_sealed(&user, &folder, &base) {
                        Ok(false) => candidates.push((sub, name.to_owned(), base)),
                        Ok(true) => {}
                        Err(e) => failed = Some(e),
                    }
                });
                if let Some(e) = failed {
                    return Err(e);
                }
                let dir = seal::folder_dir(&folder).expect("a folder the walk found");
                for (sub, name, base) in candidates {
                    let Ok(sub_fd) = fsutil::open_dir(fd.as_fd(), sub.dir()) else { continue };
                    let Ok(st) = fstatat(sub_fd.as_fd(), name.as_c_str(), AtFlags::AT_SYMLINK_NOFOLLOW) else {
                        continue;
                    };
                    if fsutil::file_type(&st) != nix::sys::stat::SFlag::S_IFREG || st.st_ctime >= head_time {
                        continue;
                    }
                    let path = root.join(&user).join(&dir).join(sub.dir()).join(OsStr::from_bytes(name.to_bytes()));
                    let what = format!(
                        "there since {} or before, the last seal's run began {}: seal skipped it (an edited \
                         seals/index.sqlite?) or could not read it",
                        crate::time::format_time(st.st_ctime),
                        crate::time::format_time(head_time)
                    );
                    let fault = Fault::SealUnsealed { user: user.clone(), folder: folder.clone(), name: base, what };
                    self.found(path, &user, fault);
                }
            }
        }
        Ok(())
    }
}

/// A removal as the admin reads it: what, who, when, why, and which seal holds it.
fn describe(r: &Removal) -> String {
    let sealed = r.seq.map_or("not sealed yet".into(), |s| format!("in {}", seal::seal_name(s)));
    format!("{}, {sealed}", who_when_why(r))
}

/// What was removed, by which command, when, by whom and why: one line's body, shared
/// with the report's list of removals no seal vouches for yet.
pub(super) fn who_when_why(r: &Removal) -> String {
    let sudo = r.sudo_user.as_deref().map(|s| format!(" (sudo {s})")).unwrap_or_default();
    format!(
        "user {}, folder {}, name {}: {} at {} by uid {}{sudo}, reason {:?}",
        r.user,
        r.folder,
        r.name,
        r.command,
        r.time,
        r.uid,
        r.reason.as_deref().unwrap_or("")
    )
}

/// audit.log's prefixes, hashed once from the start however many seals pin one.
struct AuditPrefix<'a> {
    log: &'a [u8],
    ctx: ring::digest::Context,
    fed: usize,
}

impl<'a> AuditPrefix<'a> {
    fn new(log: &'a [u8]) -> AuditPrefix<'a> {
        AuditPrefix { log, ctx: ring::digest::Context::new(&ring::digest::SHA256), fed: 0 }
    }

    /// Why audit.log does not hold what `span` pinned, if it does not.
    fn check(&mut self, span: &seal::AuditSpan) -> Option<String> {
        let to = usize::try_from(span.to).unwrap_or(usize::MAX);
        if to > self.log.len() {
            return Some(format!(
                "audit.log has {} bytes, the seal pinned {to}: it was truncated or replaced",
                self.log.len()
            ));
        }
        if to < self.fed {
            return Some(format!("its audit span ends at byte {to}, before the seal before it ended"));
        }
        self.ctx.update(&self.log[self.fed..to]);
        self.fed = to;
        let got = seal::hex(self.ctx.clone().finish().as_ref());
        (got != span.sha256)
            .then(|| format!("audit.log bytes 0..{to} are not what the seal pinned: the log was edited"))
    }
}

/// One folder's present messages by base name, and the checks of a sealed one against them.
struct FolderCheck {
    fd: Option<OwnedFd>,
    path: PathBuf,
    present: HashMap<Vec<u8>, (Sub, CString)>,
    buf: Vec<u8>,
}

impl FolderCheck {
    fn new(fd: Option<OwnedFd>, path: &Path) -> FolderCheck {
        let mut check = FolderCheck { fd, path: path.to_path_buf(), present: HashMap::new(), buf: Vec::new() };
        check.list();
        check
    }

    /// (Re)lists new/ and cur/.
    fn list(&mut self) {
        self.present.clear();
        if let Some(fd) = &self.fd {
            let present = &mut self.present;
            let _ = seal::each_message(fd.as_fd(), |sub, name| {
                present.insert(seal::base_name(name.to_bytes()).to_vec(), (sub, name.to_owned()));
            });
        }
    }

    /// The problem with `sealed`, if any. A file that moved (new/ to cur/, its flags)
    /// between the listing and the look is looked for once more.
    fn verify(&mut self, sealed: &Sealed, content: bool) -> Option<(PathBuf, Fault)> {
        for attempt in 0..2 {
            if attempt == 1 {
                self.list();
            }
            let Some((sub, name)) = self.present.get(sealed.name.as_bytes()).cloned() else { continue };
            let fd = self.fd.as_ref().expect("listed, so open");
            let Ok(dir) = fsutil::open_dir(fd.as_fd(), sub.dir()) else { continue };
            let path = self.path.join(sub.dir()).join(OsStr::from_bytes(name.to_bytes()));
            let altered = |what: String| {
                Some((
                    path.clone(),
                    Fault::SealedAltered {
                        user: sealed.user.clone(),
                        folder: sealed.folder.clone(),
                        name: sealed.name.clone(),
                        what,
                    },
                ))
            };
            let Ok(st) = fstatat(dir.as_fd(), name.as_c_str(), AtFlags::AT_SYMLINK_NOFOLLOW) else { continue };
            if st.st_size as u64 != sealed.size {
                return altered(format!("{} bytes, sealed with {}", st.st_size, sealed.size));
            }
            if !content {
                return None;
            }
            return match seal::hash_message(dir.as_fd(), &name, &mut self.buf) {
                Ok(Hash::Done(h)) if h.sha256 == sealed.sha256 => None,
                Ok(Hash::Done(h)) => altered(format!("SHA-256 {}, sealed with {}", h.sha256, sealed.sha256)),
                Ok(Hash::Vanished) => continue,
                Ok(Hash::NotAFile) => altered("no longer a regular file".into()),
                Err(e) => altered(format!("cannot be read: {}", e.desc())),
            };
        }
        let missing = Fault::SealedMissing {
            user: sealed.user.clone(),
            folder: sealed.folder.clone(),
            name: sealed.name.clone(),
        };
        Some((self.path.clone(), missing))
    }
}
