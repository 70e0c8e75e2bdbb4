//! `check --seals`: whether the chain of seals holds and every sealed message is still
//! there, unchanged, unless audit.log records its removal. "Removed on purpose" and
//! "lost" are told apart here.
//!
//! 1. The chain: seals numbered 1..N without a gap; each one's `previous` is the digest of
//!    the one before (an edited or replaced seal breaks the link after it); each one's
//!    audit span starts where the one before ended and its digest is audit.log's prefix;
//!    with a key, each one's signature; with a kept head, that digest is in the chain.
//! 2. The seals just verified, and the audit entries after the last one, go into a private
//!    temporary index (never seals/index.sqlite, which anyone who can write there could
//!    edit); then folder by folder each sealed name is looked for in new/ and cur/ under
//!    any flags, its size compared and, with `--verify-content`, its SHA-256.
//!
//! Memory: the seal being verified, and the names of one folder at a time.

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
use crate::seal::index::Index;
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
    let mut v = Verifier { report, seals_path, summary: SealSummary::default() };
    let state = crate::root::open_state_dir(root_fd).ok().flatten();
    let seals = state.as_ref().map(|s| fsutil::open_dir(s.as_fd(), seal::SEALS_DIR));
    let (Some(state), Some(Ok(seals))) = (state, seals) else {
        v.chain("no seals: run 'mailkeep seal' first".into());
        v.report.seals = Some(v.summary);
        return Ok(());
    };
    let mut index = Index::temporary()?;
    let log = match audit::read_bytes(state.as_fd()) {
        Ok(log) => log,
        Err(e) => {
            v.chain(format!("{e}"));
            Vec::new()
        }
    };
    let sealed_to = v.chain_of(seals.as_fd(), &log, opts, &mut index)?;
    // Removals after the last seal are honoured too: the log is fsynced before a file goes.
    let tail = &log[(sealed_to as usize).min(log.len())..];
    match audit::parse(tail) {
        Ok(entries) => index.add_unsealed_removals(&entries)?,
        Err(e) => v.chain(format!("{e} (after the last seal)")),
    }
    v.messages(root, root_fd, &index, opts)?;
    v.report.seals = Some(v.summary);
    Ok(())
}

struct Verifier<'r> {
    report: &'r mut Report,
    seals_path: PathBuf,
    summary: SealSummary,
}

impl Verifier<'_> {
    fn chain(&mut self, why: String) {
        let path = self.seals_path.clone();
        self.report.problems.push(Problem { path, user: None, fault: Fault::SealChain(why), repair: None });
    }

    fn found(&mut self, path: PathBuf, user: &str, fault: Fault) {
        self.report.problems.push(Problem { path, user: Some(user.into()), fault, repair: None });
    }

    /// Step 1; takes each readable seal into `index`. Returns where in audit.log the
    /// last seal ended.
    fn chain_of(
        &mut self,
        seals: BorrowedFd<'_>,
        log: &[u8],
        opts: &Options<'_>,
        index: &mut Index,
    ) -> Result<u64, SealError> {
        let seqs = match seal::list(seals) {
            Ok(seqs) => seqs,
            Err(e) => {
                self.chain(e.to_string());
                return Ok(0);
            }
        };
        let Some(&last) = seqs.last() else {
            self.chain("no seals: run 'mailkeep seal' first".into());
            return Ok(0);
        };
        let mut audit_hash = AuditPrefix::new(log);
        // The previous seal's digest and where its audit span ended, when it was read.
        let mut previous: Option<(String, u64)> = Some((seal::NO_PREVIOUS.into(), 0));
        let mut kept_head_seen = false;
        for seq in 1..=last {
            let name = seal::seal_name(seq);
            if !seqs.contains(&seq) {
                self.chain(format!("{name} is missing: a seal was removed from the chain"));
                previous = None;
                continue;
            }
            let bytes = match seal::read(seals, seq) {
                Ok(b) => b,
                Err(e) => {
                    self.chain(e.to_string());
                    previous = None;
                    continue;
                }
            };
            let digest = seal::sha256_hex(&bytes);
            kept_head_seen |= opts.head.is_some_and(|h| h.eq_ignore_ascii_case(&digest));
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
            if let Some(why) = audit_hash.check(&header.audit) {
                self.chain(format!("{name}: {why}"));
            }
            index.add(seq, &digest, &lines)?;
            self.summary.seals += 1;
            self.summary.sealed_messages += header.messages;
            (self.summary.head, self.summary.head_digest) = (name, digest.clone());
            previous = Some((digest, header.audit.to));
        }
        if let Some(head) = opts.head.filter(|_| !kept_head_seen) {
            self.chain(format!(
                "the kept head {head} is no seal in the chain: seals were removed from its end or replaced"
            ));
        }
        Ok(previous.map_or(audit_hash.fed as u64, |(_, to)| to))
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

    /// Step 2, folder by folder.
    fn messages(
        &mut self,
        root: &Path,
        root_fd: BorrowedFd<'_>,
        index: &Index,
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
            index.each_sealed(&user, &folder, |sealed, removed| {
                if removed {
                    self.summary.removed += 1;
                } else if let Some((path, fault)) = folder_check.verify(&sealed, opts.verify_content) {
                    self.found(path, &user, fault);
                }
            })?;
        }
        Ok(())
    }
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
