//! What a folder already holds, so that a replay stores nothing twice and drops nothing
//! that only looks stored: a message is "already present" when its Message-ID and its body
//! digest (`message::BodyDigest`) both match a stored one's; a message without an ID when
//! the digest of the whole of it does.
//!
//! Indexing reads only the header part of each stored file (its Message-ID). A stored
//! file's body is read and digested only when an incoming message carries its Message-ID:
//! a replay into a folder of many gigabytes reads what it must compare, not the folder.
//! Stored files without a Message-ID (rare) are digested whole while indexing.

use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::io::{self, Read};
use std::path::{Path, PathBuf};

use crate::maildir::FolderKind;
use crate::message::{BodyDigest, Digest, HeaderInfo, Stamp, digest_of, header_part, holds_header_part, sha256};

/// How a message is known to an `Index`.
pub enum Identity {
    /// Its Message-ID and the digest of its body.
    Id { id: String, body: Digest },
    /// No Message-ID: the digest of the whole message (after our header lines).
    Whole(Digest),
}

/// The digest an incoming message is known by (`Identity`), taken as it is read.
pub enum MessageDigest {
    Body(String, Box<BodyDigest>),
    Whole(ring::digest::Context),
}

impl MessageDigest {
    pub fn new(id: Option<String>) -> MessageDigest {
        match id {
            Some(id) => MessageDigest::Body(id, Box::default()),
            None => MessageDigest::Whole(ring::digest::Context::new(&ring::digest::SHA256)),
        }
    }

    pub fn update(&mut self, bytes: &[u8]) {
        match self {
            MessageDigest::Body(_, d) => d.update(bytes),
            MessageDigest::Whole(d) => d.update(bytes),
        }
    }

    pub fn finish(self) -> Identity {
        match self {
            MessageDigest::Body(id, d) => Identity::Id { id, body: d.finish() },
            MessageDigest::Whole(d) => Identity::Whole(digest_of(d)),
        }
    }
}

/// The (Message-ID, body digest) pairs a folder holds, its Message-IDs, and the digests of
/// its messages without an ID. IDs are kept as their SHA-256 digests: 32 bytes a message
/// whatever the ID's length.
pub struct Index {
    /// Stored files by the digest of their Message-ID, whose bodies are not read yet.
    unread: HashMap<Digest, Vec<PathBuf>>,
    ids: HashSet<Digest>,
    keys: HashSet<Digest>,
    wholes: HashSet<Digest>,
}

impl Index {
    /// Indexes the message files `paths` of a folder of kind `kind`. A file that cannot be
    /// read (gone meanwhile, not a regular file) holds nothing to match: at worst a message
    /// is stored twice, never dropped.
    pub fn new(kind: FolderKind, paths: Vec<PathBuf>) -> Index {
        let mut index =
            Index { unread: HashMap::new(), ids: HashSet::new(), keys: HashSet::new(), wholes: HashSet::new() };
        for path in paths {
            match stored_message_id(&path) {
                Ok(Some(id)) => {
                    let id = sha256(id.as_bytes());
                    index.ids.insert(id);
                    index.unread.entry(id).or_default().push(path);
                }
                Ok(None) => {
                    if let Ok(digests) = stored_whole_digests(&path, kind) {
                        index.wholes.extend(digests);
                    }
                }
                Err(_) => {}
            }
        }
        index
    }

    /// Whether a message with Message-ID `id` may be here (its body decides).
    pub fn may_hold(&self, id: &str) -> bool {
        self.ids.contains(&sha256(id.as_bytes()))
    }

    pub fn contains(&mut self, who: &Identity) -> bool {
        match who {
            Identity::Id { id, body } => {
                self.read_bodies(id);
                self.keys.contains(&key(id, body))
            }
            Identity::Whole(d) => self.wholes.contains(d),
        }
    }

    /// Adds a message; true when its Message-ID was here with another body.
    pub fn insert(&mut self, who: &Identity) -> bool {
        match who {
            Identity::Id { id, body } => {
                self.read_bodies(id);
                let fresh = self.keys.insert(key(id, body));
                !self.ids.insert(sha256(id.as_bytes())) && fresh
            }
            Identity::Whole(d) => {
                self.wholes.insert(*d);
                false
            }
        }
    }

    /// Digests the bodies of the stored files with Message-ID `id`, once.
    fn read_bodies(&mut self, id: &str) {
        for path in self.unread.remove(&sha256(id.as_bytes())).unwrap_or_default() {
            if let Ok(body) = stored_body_digest(&path) {
                self.keys.insert(key(id, &body));
            }
        }
    }
}

/// The key of a (Message-ID, body digest) pair.
fn key(id: &str, body: &Digest) -> Digest {
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
    ctx.update(id.as_bytes());
    ctx.update(&[0]);
    ctx.update(body);
    digest_of(ctx)
}

/// Opens a stored file without following a symlink or blocking on a FIFO; only a regular
/// file is read (`fsutil::open_regular`).
fn open_stored(path: &Path) -> io::Result<File> {
    crate::fsutil::open_regular(nix::fcntl::AT_FDCWD, path)
        .map(|(file, _)| file)
        .map_err(|e| io::Error::from(e.errno()))
}

/// A stored file's first bytes: at least the header part of the message after our header
/// lines (`header_part`, the part an incoming message's Message-ID is read from too).
fn read_head(file: &mut File) -> io::Result<Vec<u8>> {
    let mut bytes = Vec::new();
    loop {
        let n = (&mut *file).take(64 * 1024).read_to_end(&mut bytes)?;
        if n == 0 || holds_header_part(Stamp::strip(&bytes, false)) {
            return Ok(bytes);
        }
    }
}

fn stored_message_id(path: &Path) -> io::Result<Option<String>> {
    let head = read_head(&mut open_stored(path)?)?;
    Ok(HeaderInfo::parse(header_part(Stamp::strip(&head, false))).message_id)
}

/// The body digest of a stored message, as `deliver` and replay digest an incoming one.
fn stored_body_digest(path: &Path) -> io::Result<Digest> {
    let mut file = open_stored(path)?;
    let head = read_head(&mut file)?;
    let mut body = BodyDigest::default();
    body.update(Stamp::strip(&head, false));
    read_rest(&mut file, |piece| body.update(piece))?;
    Ok(body.finish())
}

/// The digests of a stored message without a Message-ID. `deliver` prepends an Envelope-To
/// to a Sent copy and replay does not: the message is digested with and without such a
/// line, so that the same message replayed is found either way, and a message that has its
/// own Envelope-To line is found as itself (the digests are taken on the bytes an incoming
/// message's are).
fn stored_whole_digests(path: &Path, kind: FolderKind) -> io::Result<Vec<Digest>> {
    let mut file = open_stored(path)?;
    let head = read_head(&mut file)?;
    // `deliver` adds Envelope-To to Sent copies only: in the INBOX such a line is the message's own.
    let message = Stamp::strip(&head, false);
    let without_envelope_to = if kind == FolderKind::Inbox { message } else { Stamp::strip(&head, true) };
    let sha256 = || ring::digest::Context::new(&ring::digest::SHA256);
    let (mut whole, mut without) = (sha256(), sha256());
    whole.update(message);
    without.update(without_envelope_to);
    read_rest(&mut file, |piece| {
        whole.update(piece);
        without.update(piece);
    })?;
    let had_one = without_envelope_to.len() < message.len();
    Ok(if had_one { vec![digest_of(whole), digest_of(without)] } else { vec![digest_of(whole)] })
}

/// Feeds the rest of `file` to `take`, a buffer at a time.
fn read_rest(file: &mut File, mut take: impl FnMut(&[u8])) -> io::Result<()> {
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        match file.read(&mut buf) {
            Ok(0) => return Ok(()),
            Ok(n) => take(&buf[..n]),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_index_tells_a_reused_message_id_from_the_same_message() {
        let mut index = Index::new(FolderKind::Inbox, Vec::new());
        let a = Identity::Id { id: "c@x".into(), body: sha256(b"planted\n") };
        let b = Identity::Id { id: "c@x".into(), body: sha256(b"signed contract\n") };
        assert!(!index.may_hold("c@x"));
        assert!(!index.insert(&a));
        assert!(index.may_hold("c@x"));
        assert!(index.contains(&a) && !index.contains(&b));
        assert!(index.insert(&b), "the same ID with another body is a reused ID");
        assert!(!index.contains(&Identity::Whole(sha256(b"planted\n"))));
    }

    #[test]
    fn a_stored_body_is_read_only_when_its_message_id_comes_in() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m");
        std::fs::write(&path, "Return-Path: <a@b>\nDelivered-To: c@d\nMessage-ID: <m@x>\n\nthe body\n").unwrap();
        let mut index = Index::new(FolderKind::Inbox, vec![path.clone()]);
        assert!(index.may_hold("m@x") && index.unread.len() == 1, "only the header part was read");
        let mut same = MessageDigest::new(Some("m@x".into()));
        same.update(b"Received: elsewhere\nMessage-ID: <m@x>\n\nthe body\n");
        assert!(index.contains(&same.finish()));
        assert!(index.unread.is_empty(), "read once");
    }
}
