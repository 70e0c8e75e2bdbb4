//! The publishing half of `replay`, on a thread of its own: each batch staged in tmp/ is
//! made durable with one syncfs, then linked into new/ with one fsync of new/, while the
//! staging thread fills the next batch. No message appears in new/ before it is durable.

use std::sync::Arc;
use std::sync::mpsc::{Receiver, SyncSender};

use super::read::DateSource;
use crate::maildir::{Folder, FolderKind, MaildirError, Namer, Staged};

/// The staging thread's side of the publishing thread: batches go in, one at a time.
pub struct Publisher {
    pub jobs: SyncSender<Vec<(Arc<Folder>, Batch)>>,
    pub done: Receiver<Done>,
    /// A batch was handed over and its `Done` not yet taken.
    pub busy: bool,
}

/// A message made durable and linked into new/.
pub struct Published {
    pub folder: FolderKind,
    pub name: String,
    pub meta: Meta,
    pub size: u64,
}

/// What the log line of a stored message says besides its file.
pub struct Meta {
    pub id: Option<String>,
    pub source: DateSource,
    pub id_reused: bool,
}

/// A message staged in tmp/, waiting for its batch to be made durable.
pub struct Pending {
    pub staged: Staged,
    pub meta: Meta,
}

pub type Batch = Vec<Pending>;

/// What the publishing thread hands back for a batch: what it published, and the failure
/// that stopped it.
pub struct Done {
    pub published: Vec<Published>,
    pub failure: Option<MaildirError>,
}

/// The publishing thread: one for the whole run (its system calls are counted as one
/// thread's by the fault-injection tests), publishing batches until the sender is gone.
pub fn publish_all(jobs: Receiver<Vec<(Arc<Folder>, Batch)>>, done: SyncSender<Done>) {
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
pub fn discard(folder: &Folder, batch: Batch) {
    for pending in batch {
        folder.discard(pending.staged);
    }
}
