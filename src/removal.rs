//! The one remover: `expire` and `erase` take messages out of a user's folder through here,
//! while Exim delivers into it and an IMAP server renames its files, and each removal is
//! written into the audit log (`audit.rs`) before the first file goes.
//!
//! The algorithm, for one folder (the commands run it per user and folder):
//! 1. list new/, then cur/, and look at every name: two files may share a base name (a copy
//!    in both, a file planted under another's name), and each is a message of its own;
//! 2. keep the regular files the selection matches (date from `fstatat`; a Message-ID from
//!    the header read through `fsutil::open_regular`, which takes no symlink and waits on no
//!    FIFO), and hash each one whole: size and SHA-256 of what was read, with its device and
//!    inode; a file an IMAP server moved between the two listings (seen twice, or gone from
//!    new/ when looked at) is kept once, by its inode (a file with two links, each name);
//! 3. (the command) append one audit entry naming them, fsynced, and forget their dedup keys;
//! 4. unlink each; before an unlink the name is checked to still be the file hashed (same
//!    device and inode); a file no longer at its name because the IMAP server renamed it
//!    (new/ -> cur/, flags changed) is looked for by base name in cur/, and only the same
//!    inode is unlinked; a file gone for good (expunged meanwhile) is fine;
//! 5. fsync new/ and cur/, so that the removals survive a crash;
//! 6. (the command) list again, and report whatever still matches.
//!
//! A crash between 3 and the last unlink leaves the entry and some of its files: a rerun
//! finds them again and completes. tmp/ is never touched (the writer sweeps it), nor is any
//! file that is not a regular file, nor a name that is not UTF-8 (no mailkeep or IMAP name).

use std::collections::HashSet;
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::AtFlags;
use nix::sys::stat::{FileStat, SFlag, fstatat};
use nix::unistd::{UnlinkatFlags, unlinkat};

use crate::audit::Removed;
use crate::exit::{Classify, Exit};
use crate::fsutil::{self, OpenError};
pub use crate::maildir::Sub;
use crate::maildir::{self, FolderKind};
use crate::message::{self, HeaderInfo};
use crate::time::Timestamp;

/// How often one file's unlink follows it to a new name before giving up on it.
const RENAMES_FOLLOWED: usize = 8;

#[derive(Debug, thiserror::Error)]
pub enum RemovalError {
    #[error("refusing to follow symlink {}", .0.display())]
    Symlink(PathBuf),
    #[error("{} exists but is not a directory", .0.display())]
    NotADirectory(PathBuf),
    #[error("cannot {op} {}: {}", path.display(), errno.desc())]
    Io { op: &'static str, path: PathBuf, errno: Errno },
}

impl Classify for RemovalError {
    fn exit(&self) -> Exit {
        match self {
            // The admin's to look at (check reports it too), not fixed by waiting.
            RemovalError::Symlink(_) | RemovalError::NotADirectory(_) => Exit::Usage,
            RemovalError::Io { .. } => Exit::TempFail,
        }
    }
}

type Result<T> = std::result::Result<T, RemovalError>;

/// `maildir::base_name` of a name known to be UTF-8 (it cuts before an ASCII `:`, so the
/// part is UTF-8 too).
pub fn base_name(name: &str) -> &str {
    &name[..maildir::base_name(name.as_bytes()).len()]
}

/// Which messages go: all of them, or those older than a time, or with a Message-ID.
#[derive(Debug, Default, Clone)]
pub struct Selection {
    /// Only messages whose INTERNALDATE (the file's mtime) is before this.
    pub before: Option<Timestamp>,
    /// Only messages with this Message-ID (`message::normalise_message_id`'d).
    pub message_id: Option<String>,
}

/// A message found to remove.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Found {
    pub folder: FolderKind,
    pub sub: Sub,
    /// The file's name when it was listed.
    pub name: String,
    pub size: u64,
    pub sha256: String,
    pub mtime: Timestamp,
    /// The file hashed, as `fstat` saw it: only this file is unlinked, under whatever name
    /// an IMAP server gave it meanwhile.
    pub dev: u64,
    pub ino: u64,
    /// Its link count: more than one, and each name is a name to unlink.
    pub links: u64,
}

impl Found {
    pub fn base(&self) -> &str {
        base_name(&self.name)
    }

    /// Whether `st` is this file: its device and inode, and its size (an inode freed by an
    /// expunge and taken by a new file is not it).
    fn is(&self, st: &FileStat) -> bool {
        (st.st_dev, st.st_ino) == (self.dev, self.ino) && u64::try_from(st.st_size) == Ok(self.size)
    }

    /// What the audit log says of it.
    pub fn removed(&self) -> Removed {
        Removed {
            folder: self.folder.name().to_string(),
            name: self.base().to_string(),
            size: self.size,
            sha256: self.sha256.clone(),
        }
    }
}

/// What a folder's listing found.
#[derive(Debug, Default)]
pub struct Listing {
    /// The messages to remove, sorted by base name, then name.
    pub found: Vec<Found>,
    /// Regular files dated in the future, which no age selects (a clock set wrong, a
    /// restore that kept a bad date): `expire` says how many it left.
    pub future: usize,
}

/// What the unlinks of a folder came to.
#[derive(Debug, Default)]
pub struct Removal {
    pub removed: usize,
    /// Found, then gone before its unlink (an IMAP client expunged it): nothing to do.
    pub gone: usize,
    /// Each file that was not unlinked (its name when listed), and why.
    pub failed: Vec<(String, String)>,
}

/// What one look at a listed name found.
enum Look {
    Found(Found),
    /// No file by that name now: an IMAP server may have moved it to cur/.
    Missing,
    /// A regular file dated after now, not selected.
    Future,
    /// Anything else: not selected, not a regular file.
    Other,
}

/// What became of one unlink.
enum Unlinked {
    Removed,
    Gone,
    Failed(String),
}

/// One folder of one user, open for listing and unlinking: its new/ and cur/.
pub struct Folder {
    pub kind: FolderKind,
    pub path: PathBuf,
    new: Option<OwnedFd>,
    cur: Option<OwnedFd>,
}

fn refused(path: &Path) -> impl FnOnce(OpenError) -> RemovalError + '_ {
    move |e| match e {
        OpenError::Symlink => RemovalError::Symlink(path.to_path_buf()),
        OpenError::WrongType => RemovalError::NotADirectory(path.to_path_buf()),
        e => RemovalError::Io { op: "open", path: path.to_path_buf(), errno: e.errno() },
    }
}

/// Opens `name` below `parent` as a directory without following; `None` when missing.
fn open_dir_if_there(parent: BorrowedFd<'_>, name: &str, path: &Path) -> Result<Option<OwnedFd>> {
    match fsutil::open_dir(parent, name) {
        Ok(fd) => Ok(Some(fd)),
        Err(OpenError::Missing) => Ok(None),
        Err(e) => Err(refused(path)(e)),
    }
}

impl Folder {
    /// The folder `kind` of the user whose Maildir is open as `user_dir` (`user_path`);
    /// `None` when the user has no such folder.
    pub fn open(user_dir: BorrowedFd<'_>, user_path: &Path, kind: FolderKind) -> Result<Option<Folder>> {
        let (path, sub_fd);
        let dir = match kind.dir() {
            None => {
                path = user_path.to_path_buf();
                user_dir
            }
            Some(sub) => {
                path = user_path.join(sub);
                match open_dir_if_there(user_dir, sub, &path)? {
                    Some(fd) => {
                        sub_fd = fd;
                        sub_fd.as_fd()
                    }
                    None => return Ok(None),
                }
            }
        };
        let new = open_dir_if_there(dir, "new", &path.join("new"))?;
        let cur = open_dir_if_there(dir, "cur", &path.join("cur"))?;
        Ok(Some(Folder { kind, path, new, cur }))
    }

    fn dir(&self, sub: Sub) -> Option<BorrowedFd<'_>> {
        match sub {
            Sub::New => self.new.as_ref().map(AsFd::as_fd),
            Sub::Cur => self.cur.as_ref().map(AsFd::as_fd),
        }
    }

    fn sub_path(&self, sub: Sub) -> PathBuf {
        self.path.join(sub.dir())
    }

    /// The message names in `sub` (UTF-8, not hidden), as they are now.
    fn list(&self, sub: Sub) -> Result<Vec<String>> {
        let Some(dir) = self.dir(sub) else { return Ok(Vec::new()) };
        let io = |errno| RemovalError::Io { op: "list", path: self.sub_path(sub), errno };
        let mut names = Vec::new();
        for entry in fsutil::list_dir(dir).map_err(io)? {
            let entry = entry.map_err(io)?;
            let name = entry.file_name().to_bytes();
            if let (false, Ok(name)) = (name.starts_with(b"."), std::str::from_utf8(name)) {
                names.push(name.to_string());
            }
        }
        Ok(names)
    }

    /// The names now in cur/ with the base name `base`.
    fn in_cur(&self, base: &str) -> Result<Vec<String>> {
        Ok(self.list(Sub::Cur)?.into_iter().filter(|name| base_name(name) == base).collect())
    }

    /// Steps 1 and 2: the messages `selection` matches, hashed, sorted by base name and name.
    pub fn find(&self, selection: &Selection) -> Result<Listing> {
        // 1. Every name, new/ first. A name gone when looked at is followed to each name of
        //    its base in cur/ not looked at yet (each once, so this ends).
        let mut todo = Vec::new();
        for sub in Sub::ALL {
            todo.extend(self.list(sub)?.into_iter().map(|name| (sub, name)));
        }
        let mut listed: HashSet<(Sub, String)> = todo.iter().cloned().collect();
        let (mut listing, mut inodes, now) = (Listing::default(), HashSet::new(), crate::time::now());
        let mut i = 0;
        while let Some((sub, name)) = todo.get(i).cloned() {
            i += 1;
            // 2.
            match self.look_at(sub, &name, selection, now)? {
                Look::Found(f) => {
                    // One file seen under its new/ and its cur/ name (renamed between the
                    // listings) is one message; a file linked under both names is two names.
                    if f.links > 1 || inodes.insert((f.base().to_string(), f.dev, f.ino)) {
                        listing.found.push(f);
                    }
                }
                Look::Missing => {
                    for moved in self.in_cur(base_name(&name))? {
                        if listed.insert((Sub::Cur, moved.clone())) {
                            todo.push((Sub::Cur, moved));
                        }
                    }
                }
                Look::Future => listing.future += 1,
                Look::Other => {}
            }
        }
        listing.found.sort_by(|a, b| (a.base(), a.sub, &a.name).cmp(&(b.base(), b.sub, &b.name)));
        Ok(listing)
    }

    /// Step 2 for one name: the regular file there, hashed, when `selection` matches it.
    fn look_at(&self, sub: Sub, name: &str, selection: &Selection, now: Timestamp) -> Result<Look> {
        let dir = self.dir(sub).expect("listed, so open");
        let path = || self.sub_path(sub).join(name);
        let st = match fstatat(dir, name, AtFlags::AT_SYMLINK_NOFOLLOW) {
            Ok(st) => st,
            Err(Errno::ENOENT) => return Ok(Look::Missing),
            Err(errno) => return Err(RemovalError::Io { op: "stat", path: path(), errno }),
        };
        if fsutil::file_type(&st) != SFlag::S_IFREG {
            return Ok(Look::Other);
        }
        let unselected = |mtime: Timestamp| selection.before.is_some_and(|t| mtime >= t);
        if unselected(st.st_mtime) {
            return Ok(if st.st_mtime > now { Look::Future } else { Look::Other });
        }
        let (mut file, st) = match fsutil::open_regular(dir, name) {
            Ok(opened) => opened,
            Err(OpenError::Missing) => return Ok(Look::Missing),
            // Swapped for a symlink or a FIFO since the look: not a message.
            Err(OpenError::Symlink | OpenError::WrongType) => return Ok(Look::Other),
            Err(e) => return Err(RemovalError::Io { op: "open", path: path(), errno: e.errno() }),
        };
        // What was opened decides, should the name have changed hands since the look.
        if unselected(st.st_mtime) {
            return Ok(Look::Other);
        }
        let digest = digest(&mut file, selection.message_id.as_deref()).map_err(|e| RemovalError::Io {
            op: "read",
            path: path(),
            errno: fsutil::errno_of(e),
        })?;
        Ok(digest.map_or(Look::Other, |(size, sha256)| {
            Look::Found(Found {
                folder: self.kind,
                sub,
                name: name.to_string(),
                size,
                sha256,
                mtime: st.st_mtime,
                dev: st.st_dev,
                ino: st.st_ino,
                links: st.st_nlink,
            })
        }))
    }

    /// Steps 4 and 5: unlinks each of `found`, following renames; then fsyncs the
    /// directories. Failed unlinks are listed, not fatal: the others still go.
    pub fn remove(&self, found: &[Found]) -> Result<Removal> {
        let mut removal = Removal::default();
        let inodes: HashSet<(u64, u64)> = found.iter().map(|f| (f.dev, f.ino)).collect();
        for (i, f) in found.iter().enumerate() {
            match self.unlink(f, &inodes)? {
                Unlinked::Removed => removal.removed += 1,
                Unlinked::Gone => removal.gone += 1,
                Unlinked::Failed(why) => removal.failed.push((f.name.clone(), why)),
            }
            if i == 0 {
                crate::fault::point("remove-after-first-unlink");
            }
        }
        for sub in Sub::ALL {
            if let Some(dir) = self.dir(sub) {
                nix::unistd::fsync(dir).map_err(|errno| RemovalError::Io {
                    op: "fsync",
                    path: self.sub_path(sub),
                    errno,
                })?;
            }
        }
        Ok(removal)
    }

    /// Unlinks the file `f` hashed, under its name or the one an IMAP server renamed it to,
    /// and never another file: each name is checked to be `f`'s device and inode first.
    /// `inodes`: every file this run removes (another of them under `f`'s base name is no
    /// stranger).
    fn unlink(&self, f: &Found, inodes: &HashSet<(u64, u64)>) -> Result<Unlinked> {
        let (mut sub, mut name) = (f.sub, f.name.clone());
        for _ in 0..RENAMES_FOLLOWED {
            let dir = self.dir(sub).expect("listed, so open");
            match fstatat(dir, name.as_str(), AtFlags::AT_SYMLINK_NOFOLLOW) {
                Ok(st) if f.is(&st) => match unlinkat(dir, name.as_str(), UnlinkatFlags::NoRemoveDir) {
                    Ok(()) => return Ok(Unlinked::Removed),
                    Err(Errno::ENOENT) => {}
                    Err(e) => return Ok(Unlinked::Failed(e.desc().to_string())),
                },
                // Another file under the name now: `f` was renamed or expunged.
                Ok(_) | Err(Errno::ENOENT) => {}
                Err(e) => return Ok(Unlinked::Failed(format!("cannot stat {name}: {}", e.desc()))),
            }
            // Where is `f` now? In cur/ under its base name, the same inode.
            let cur = self.dir(Sub::Cur);
            let mut strangers = Vec::new();
            let mut moved = None;
            for candidate in self.in_cur(f.base())? {
                let Some(st) = cur.and_then(|cur| fstatat(cur, candidate.as_str(), AtFlags::AT_SYMLINK_NOFOLLOW).ok())
                else {
                    continue;
                };
                if f.is(&st) {
                    moved = Some(candidate);
                } else if !inodes.contains(&(st.st_dev, st.st_ino)) {
                    strangers.push(candidate);
                }
            }
            match moved {
                Some(moved) => (sub, name) = (Sub::Cur, moved),
                None if strangers.is_empty() => return Ok(Unlinked::Gone),
                None => {
                    let strangers = strangers.join(", ");
                    return Ok(Unlinked::Failed(format!(
                        "gone from its name, and cur/{strangers} under its base name is another file, never hashed: left alone"
                    )));
                }
            }
        }
        // Renamed faster than we can follow: say so rather than loop.
        Ok(Unlinked::Failed("renamed faster than it could be followed".into()))
    }
}

/// The size and lower-case hex SHA-256 of the whole file, or `None` when `message_id` is
/// given and the message's header (`message::header_part`, as dedup reads it) has another.
fn digest(file: &mut std::fs::File, message_id: Option<&str>) -> io::Result<Option<(u64, String)>> {
    // The header is collected only while a Message-ID is to be matched, and only until
    // its end: a message with another ID is not read further.
    let mut head: Option<Vec<u8>> = message_id.map(|_| Vec::new());
    let mut other_id = false;
    let mut buf = vec![0u8; 64 * 1024];
    let read = message::sha256_read(file, &mut buf, |piece| {
        if let Some(h) = head.as_mut() {
            h.extend_from_slice(piece);
            if message::holds_header_part(h) {
                other_id = !has_message_id(h, message_id);
                head = None;
            }
        }
        !other_id
    })?;
    let Some((size, digest)) = read else { return Ok(None) };
    if head.is_some_and(|h| !has_message_id(&h, message_id)) {
        return Ok(None);
    }
    Ok(Some((size, message::hex(&digest))))
}

fn has_message_id(head: &[u8], want: Option<&str>) -> bool {
    HeaderInfo::parse(message::header_part(head)).message_id.as_deref() == want
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    fn maildir(root: &Path) -> PathBuf {
        let u = root.join("alice");
        for d in ["new", "cur", "tmp"] {
            fs::create_dir_all(u.join(d)).unwrap();
        }
        u
    }

    fn open(u: &Path) -> Folder {
        let fd = fsutil::open_dir_path(u).unwrap();
        Folder::open(fd.as_fd(), u, FolderKind::Inbox).unwrap().unwrap()
    }

    #[test]
    fn base_name_drops_the_flags() {
        assert_eq!(base_name("1.M1P1Q1.h,S=6:2,FS"), "1.M1P1Q1.h,S=6");
        assert_eq!(base_name("1.M1P1Q1.h,S=6"), "1.M1P1Q1.h,S=6");
    }

    #[test]
    fn found_messages_are_hashed_whole_and_filtered_by_id() {
        let t = tempfile::tempdir().unwrap();
        let u = maildir(t.path());
        fs::write(u.join("new/1.a,S=30"), "Message-ID: <a@x>\n\nhello\n").unwrap();
        fs::write(u.join("cur/2.b,S=30:2,S"), "Message-ID: < b@x >\n\nhello\n").unwrap();
        fs::write(u.join("tmp/3.c"), "Message-ID: <a@x>\n\n").unwrap();
        nix::unistd::mkfifo(&u.join("new/4.fifo"), nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
        let f = open(&u);
        let all = f.find(&Selection::default()).unwrap().found;
        let names: Vec<&str> = all.iter().map(|f| f.name.as_str()).collect();
        assert_eq!(names, ["1.a,S=30", "2.b,S=30:2,S"], "tmp/ and the FIFO are left alone");
        let sha =
            message::sha256(b"Message-ID: <a@x>\n\nhello\n").iter().map(|b| format!("{b:02x}")).collect::<String>();
        assert_eq!((all[0].size, all[0].sha256.as_str()), (25, sha.as_str()));
        let by_id = f.find(&Selection { message_id: Some("b@x".into()), ..Selection::default() }).unwrap().found;
        assert_eq!(by_id.len(), 1);
        assert_eq!(by_id[0].removed().name, "2.b,S=30");
    }

    #[test]
    fn a_file_renamed_after_listing_is_still_removed() {
        let t = tempfile::tempdir().unwrap();
        let u = maildir(t.path());
        fs::write(u.join("new/1.a,S=2"), "x\n").unwrap();
        let f = open(&u);
        let found = f.find(&Selection::default()).unwrap().found;
        // As an IMAP server does between our listing and our unlink.
        fs::rename(u.join("new/1.a,S=2"), u.join("cur/1.a,S=2:2,S")).unwrap();
        let r = f.remove(&found).unwrap();
        assert_eq!((r.removed, r.gone, r.failed.len()), (1, 0, 0));
        assert_eq!(fs::read_dir(u.join("cur")).unwrap().count(), 0);
        // Gone for good: fine.
        assert_eq!(f.remove(&found).unwrap().gone, 1);
    }

    #[test]
    fn a_file_renamed_away_is_not_confused_with_another_file_under_its_base_name() {
        let t = tempfile::tempdir().unwrap();
        let u = maildir(t.path());
        fs::write(u.join("new/1.a,S=2"), "x\n").unwrap();
        let f = open(&u);
        let found = f.find(&Selection::default()).unwrap().found;
        // Gone from its name (kept elsewhere, so that its inode is not reused), and another
        // file (never listed nor hashed) now has its base name.
        fs::rename(u.join("new/1.a,S=2"), t.path().join("elsewhere")).unwrap();
        fs::write(u.join("cur/1.a,S=2:2,S"), "never hashed\n").unwrap();
        let r = f.remove(&found).unwrap();
        assert_eq!((r.removed, r.gone, r.failed.len()), (0, 0, 1), "reported, not removed: {r:?}");
        assert!(u.join("cur/1.a,S=2:2,S").exists(), "the file never hashed stays");
    }

    #[test]
    fn every_file_under_one_base_name_is_found_and_removed() {
        let t = tempfile::tempdir().unwrap();
        let u = maildir(t.path());
        fs::write(u.join("new/1.a,S=2"), "x\n").unwrap();
        fs::write(u.join("cur/1.a,S=2:2,S"), "y\n").unwrap();
        let f = open(&u);
        let found = f.find(&Selection::default()).unwrap().found;
        let names: Vec<&str> = found.iter().map(|f| f.name.as_str()).collect();
        assert_eq!(names, ["1.a,S=2", "1.a,S=2:2,S"]);
        let r = f.remove(&found).unwrap();
        assert_eq!((r.removed, r.gone, r.failed.len()), (2, 0, 0), "{r:?}");
        assert!(f.find(&Selection::default()).unwrap().found.is_empty());
    }
}
