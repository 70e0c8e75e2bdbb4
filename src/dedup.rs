//! The Message-ID store behind `--dedup`: folds the provider's extra copies of one message
//! into one folder, and never drops a real one.
//!
//! A key is (user, folder, Message-ID, body digest): a copy is a duplicate only when its
//! body is the same too, since scanners, broken mailers and edited re-sends reuse
//! Message-IDs, and anyone can plant a message under a chosen ID first (issue 18). A
//! delivery writes the message into tmp/ (durable, not yet visible), *claims* the key (a
//! pending row, one `INSERT ... ON CONFLICT DO NOTHING`), links the message into new/,
//! then *commits* the key with the stored file's name. A failed delivery releases its claim; a crashed
//! one leaves a pending claim whose owner is gone, which the next copy takes over. So a
//! key is committed only after its message is on disk: a crash may cost a duplicate on
//! Exim's retry, never a message.
//!
//! The store lives in `ROOT/.mailkeep/` or, with `--dedup-store`, at a file of its own
//! (`Location`): on local disk when the root is shared by relays over NFS or CephFS, where
//! SQLite's locks and its WAL's shared memory do not hold. A store on such a filesystem is
//! refused (`network_fs`). A `--dedup-store` serves one root, whose id (root.json's) it
//! records on first use: a store shared by two roots, or kept when a root is made again,
//! would fold a copy into a file the root does not have. And a key folds a copy only while
//! its file is still in the folder (`claim`'s `held`).

use std::ffi::{CStr, OsStr, OsString, c_char, c_int};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use nix::fcntl::OFlag;
use nix::sys::stat::Mode;
use rusqlite::{Connection, OpenFlags, OptionalExtension, ffi, params};

use crate::exit::{Classify, Exit};
use crate::fsutil::{self, OpenError};
use crate::message::Digest;
use crate::root::RootError;
use crate::time::now;

/// How long a delivery waits for another one that holds the same key, or for SQLite's lock.
pub const WAIT: Duration = Duration::from_secs(30);
/// A pending claim older than this is abandoned even if its pid looks alive (pid reuse);
/// longer than any sane pipe transport timeout.
const STALE_CLAIM_SECS: i64 = 3600;
/// One delivery in this many prunes expired keys (by pid, so deliveries take turns).
/// Pruning is a statement to compile and run; at one process per message it cost a sixth of
/// a delivery's SQLite work when every delivery did it.
pub const PRUNE_EVERY: u32 = 64;
/// Expired keys removed by a pruning delivery: bounded work, and the store stays small
/// (16 keys a delivery on average, as many as a busy relay adds).
const PRUNE_BATCH: i64 = 16 * PRUNE_EVERY as i64;
/// `PRAGMA user_version` of a store whose tables exist: opening such a store skips the
/// `CREATE ... IF NOT EXISTS` statements, which SQLite compiles in full even when there is
/// nothing to create.
/// Version 2 added the body digest to the key; a version 1 store's keys are dropped on
/// upgrade (they lack it), which can cost one duplicate per key still in its window.
/// Version 3 added `meta`, where a `--dedup-store` records the root it serves.
const SCHEMA_VERSION: i64 = 3;
/// The longest store file name: SQLite opens `<name>-journal` beside it (NAME_MAX 255).
const STORE_NAME_MAX: usize = 255 - "-journal".len();

#[derive(Debug, thiserror::Error)]
pub enum DedupError {
    #[error("dedup store {}: {err}", path.display())]
    Sqlite { path: PathBuf, err: rusqlite::Error },
    #[error("cannot create {}: {err}", path.display())]
    Dir { path: PathBuf, err: std::io::Error },
    #[error("refusing to follow symlink {}", .0.display())]
    Symlink(PathBuf),
    #[error("{} exists but is not a regular file", .0.display())]
    NotAFile(PathBuf),
    #[error("dedup store {}: another delivery of Message-ID <{msgid}> is still running after {}s", path.display(), WAIT.as_secs())]
    Busy { path: PathBuf, msgid: String },
    /// The store is opened through /proc/self/fd (see `connect`).
    #[error("cannot open the dedup store: /proc is not mounted (mailkeep opens the store through /proc/self/fd)")]
    NoProc,
    #[error(transparent)]
    Root(#[from] RootError),
    /// For the admin commands: there is nothing to show or prune.
    #[error("no dedup store at {} (no delivery with --dedup yet)", .0.display())]
    NoStore(PathBuf),
    /// SQLite's locks and WAL index do not hold on a network filesystem: two relays (or a
    /// client cache) would corrupt the store or fold a message that was never stored.
    #[error(
        "dedup store {}: refusing a store on {fs}, a network filesystem (SQLite's locking does not hold there): give --dedup-store a file on local disk",
        path.display()
    )]
    NetworkFs { path: PathBuf, fs: &'static str },
    /// The store recorded another root's id: its keys name files of that root.
    #[error(
        "dedup store {} serves another backup root (id {theirs}, this root's is {ours}): give each root a --dedup-store of its own",
        path.display()
    )]
    OtherRoot { path: PathBuf, theirs: String, ours: String },
    /// A `--dedup-store` value that is no absolute path to a file of its own.
    #[error(
        "--dedup-store {}: {why} (give the store's file by its absolute path, e.g. /var/lib/mailkeep-dedup/dedup.sqlite3)",
        path.display()
    )]
    BadPath { path: PathBuf, why: &'static str },
}

impl Classify for DedupError {
    /// Never a silent store-or-drop: any store trouble makes Exim retry.
    fn exit(&self) -> Exit {
        match self {
            DedupError::Symlink(_) => Exit::CantCreate,
            // The MTA keeps the copy (75, which Postfix retries too) until the admin moves or
            // names the store; the admin commands say 2.
            DedupError::NetworkFs { .. } | DedupError::OtherRoot { .. } | DedupError::BadPath { .. } => {
                Exit::CantCreate
            }
            DedupError::NoStore(_) => Exit::Config,
            DedupError::Root(e) => e.exit(),
            DedupError::Sqlite { .. }
            | DedupError::Dir { .. }
            | DedupError::NotAFile(_)
            | DedupError::Busy { .. }
            | DedupError::NoProc => Exit::TempFail,
        }
    }
}

type Result<T> = std::result::Result<T, DedupError>;

/// What a claim found.
#[derive(Debug, PartialEq, Eq)]
pub enum Claim {
    /// This delivery owns the key: store, then `commit` (or `release` on failure).
    Owned,
    /// A copy is stored already, as `file`.
    Duplicate { file: String },
    /// This delivery owns the key, and another body was stored under the same Message-ID.
    OwnedIdReused,
}

pub struct Store {
    conn: Connection,
    /// `ROOT/.mailkeep`, which SQLite reaches through this descriptor (see `connect`); it
    /// stays open while `conn` lives, which opens the -wal and -shm files later.
    dir: OwnedFd,
    /// The store's file name in `dir`.
    name: OsString,
    path: PathBuf,
    window_secs: i64,
    /// Whether this delivery's commit prunes (see `PRUNE_EVERY`).
    prunes: bool,
}

/// One line of `mailkeep dedup stats`: a folder's keys and their oldest and newest time.
pub struct FolderKeys {
    pub user: String,
    pub folder: String,
    pub keys: i64,
    pub oldest: i64,
    pub newest: i64,
}

pub struct Key<'a> {
    pub user: &'a str,
    pub folder: &'a str,
    pub msgid: &'a str,
    /// The SHA-256 of the message body as stored (`message::BodyDigest`).
    pub body: &'a Digest,
}

/// Where the store is: `ROOT/.mailkeep/dedup.sqlite3`, or the file `--dedup-store` names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Location {
    /// In the root's state directory, which `mailkeep init` made.
    InRoot(PathBuf),
    /// A file of its own (`--dedup-store`), in a directory the admin made.
    File(PathBuf),
}

impl Location {
    /// `store` if given, else the root's own. An empty `store` is none (an empty
    /// MAILKEEP_DEDUP_STORE); any other must be an absolute path ending in a file name
    /// short enough for SQLite's `-journal` beside it: a relative one would depend on the
    /// MTA's working directory.
    pub fn new(root: &Path, store: Option<&Path>) -> Result<Location> {
        let file = match store {
            Some(file) if !file.as_os_str().is_empty() => file,
            _ => return Ok(Location::InRoot(root.to_path_buf())),
        };
        let bad = |why| Err(DedupError::BadPath { path: file.to_path_buf(), why });
        let bytes = file.as_os_str().as_encoded_bytes();
        let last = bytes.rsplit(|&b| b == b'/').next().unwrap_or_default();
        if !file.is_absolute() {
            return bad("not an absolute path");
        }
        if matches!(last, b"" | b"." | b"..") {
            return bad("names no file");
        }
        if last.len() > STORE_NAME_MAX {
            return bad("file name too long (at most 247 bytes, for SQLite's -journal beside it)");
        }
        Ok(Location::File(file.to_path_buf()))
    }

    /// The store's file, as messages name it.
    pub fn path(&self) -> PathBuf {
        self.dir_path().join(self.name())
    }

    fn dir_path(&self) -> PathBuf {
        match self {
            Location::InRoot(root) => root.join(STORE_DIR),
            Location::File(file) => match file.parent() {
                Some(dir) if !dir.as_os_str().is_empty() => dir.to_path_buf(),
                _ => PathBuf::from("."),
            },
        }
    }

    /// The file's name in its directory (`--dedup-store` takes only paths that have one).
    fn name(&self) -> &OsStr {
        match self {
            Location::InRoot(_) => OsStr::new(STORE_FILE),
            Location::File(file) => file.file_name().unwrap_or(OsStr::new(STORE_FILE)),
        }
    }

    /// Opens the store's directory; `None` when it is missing. The root's `.mailkeep` is
    /// opened without following a symlink; the directory of a `--dedup-store` file is the
    /// admin's, named on the command line, and followed as the root is.
    fn open_dir(&self) -> Result<Option<OwnedFd>> {
        if let Location::InRoot(root) = self {
            return open_store_dir(root);
        }
        let flags = OFlag::O_DIRECTORY | OFlag::O_RDONLY | OFlag::O_CLOEXEC;
        match nix::fcntl::open(&self.dir_path(), flags, Mode::empty()) {
            Ok(fd) => Ok(Some(fd)),
            Err(nix::errno::Errno::ENOENT) => Ok(None),
            Err(e) => Err(DedupError::Dir { path: self.dir_path(), err: e.into() }),
        }
    }
}

impl Store {
    pub fn path(root: &Path) -> PathBuf {
        Location::InRoot(root.to_path_buf()).path()
    }

    /// Opens (creating if needed) the store at `at`. Its directory (`ROOT/.mailkeep`, which
    /// `mailkeep init` made, or the one of `--dedup-store`) must be writable by every
    /// delivering user: SQLite keeps its -wal and -shm files beside it. A directory on a
    /// network filesystem is refused before anything is opened in it. A `--dedup-store`
    /// file serves the root whose id is `root_id`: recorded on first use, refused if another.
    pub fn open(at: &Location, window_days: u32, root_id: &str) -> Result<Store> {
        Store::open_for(at, window_days, root_id, true)
    }

    /// `open`; a store that has no root recorded yet is given `root_id` only if `record`.
    fn open_for(at: &Location, window_days: u32, root_id: &str, record: bool) -> Result<Store> {
        let dir = match (at.open_dir()?, at) {
            (Some(dir), _) => dir,
            (None, Location::InRoot(root)) => {
                let why = "no .mailkeep in it";
                return Err(RootError::NotInitialised { root: root.to_path_buf(), why }.into());
            }
            (None, Location::File(_)) => {
                let err = std::io::Error::from(nix::errno::Errno::ENOENT);
                return Err(DedupError::Dir { path: at.dir_path(), err });
            }
        };
        let path = at.path();
        if let Some(fs) = network_fs(dir.as_fd()) {
            return Err(DedupError::NetworkFs { path, fs });
        }
        let sql = |err| DedupError::Sqlite { path: path.clone(), err };
        let flags = OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_CREATE | OpenFlags::SQLITE_OPEN_NO_MUTEX;
        let conn = connect_named(dir.as_fd(), &at.dir_path(), at.name(), flags)?;
        conn.busy_timeout(WAIT).map_err(sql)?;
        let init = || -> rusqlite::Result<()> {
            // NORMAL sync in WAL mode: a key lost to a power cut only costs a duplicate copy
            // later, never a message.
            conn.pragma_update(None, "synchronous", "NORMAL")?;
            // Each delivery is a short-lived process and usually the last connection to close:
            // by default SQLite would then checkpoint and delete the WAL every time (four
            // fsyncs and two files created and removed per message). Keep the WAL; commits
            // checkpoint it when it passes 64 pages, so it stays small to read at the next open.
            conn.set_db_config(rusqlite::config::DbConfig::SQLITE_DBCONFIG_NO_CKPT_ON_CLOSE, true)?;
            conn.pragma_update(None, "wal_autocheckpoint", 64)?;
            let version: i64 = conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
            if version >= SCHEMA_VERSION {
                return Ok(());
            }
            // A new store, or an older one. WAL, which the file remembers, lets deliveries
            // read while one writes.
            conn.pragma_update(None, "journal_mode", "WAL")?;
            create_schema(&conn)
        };
        // Deliveries that create the store at the same moment meet in SQLite's initial
        // rollback mode, where some lock conflicts are reported at once ("database is
        // locked") instead of waited for: wait for them here as the busy timeout does later.
        let deadline = Instant::now() + WAIT;
        loop {
            match init() {
                Err(rusqlite::Error::SqliteFailure(e, _))
                    if e.code == rusqlite::ErrorCode::DatabaseBusy && Instant::now() < deadline =>
                {
                    std::thread::sleep(Duration::from_millis(5));
                }
                other => break other.map_err(sql)?,
            }
        }
        let prunes = std::process::id().is_multiple_of(PRUNE_EVERY);
        let name = at.name().to_os_string();
        let store = Store { conn, dir, name, path, window_secs: i64::from(window_days) * 86400, prunes };
        if let Location::File(_) = at {
            store.serve(root_id, record)?;
        }
        Ok(store)
    }

    /// Refuses a store that records another root than `root_id`; records `root_id` in one
    /// that records none yet, if `record`. Of two roots that use a new store at once, one
    /// records itself and the other is refused.
    fn serve(&self, root_id: &str, record: bool) -> Result<()> {
        let recorded = || -> rusqlite::Result<Option<String>> {
            self.conn
                .prepare_cached("SELECT value FROM meta WHERE key = 'root'")?
                .query_row([], |r| r.get(0))
                .optional()
        };
        let mut theirs = recorded().map_err(self.sql())?;
        if theirs.is_none() && record {
            self.conn
                .execute("INSERT INTO meta (key, value) VALUES ('root', ?1) ON CONFLICT DO NOTHING", [root_id])
                .map_err(self.sql())?;
            theirs = recorded().map_err(self.sql())?;
        }
        match theirs {
            Some(theirs) if theirs != root_id => {
                Err(DedupError::OtherRoot { path: self.path.clone(), theirs, ours: root_id.to_string() })
            }
            _ => Ok(()),
        }
    }

    fn sql(&self) -> impl FnOnce(rusqlite::Error) -> DedupError + '_ {
        |err| DedupError::Sqlite { path: self.path.clone(), err }
    }

    /// Claims `key` for this process, waiting while another live delivery holds it. A
    /// committed key folds the copy only if `held` says its file is still in the folder
    /// (not removed by hand, not another root's): otherwise the key is taken over, and
    /// will name the copy about to be stored.
    pub fn claim(&self, key: &Key<'_>, held: impl Fn(&str) -> bool) -> Result<Claim> {
        let pid = i64::from(std::process::id());
        let deadline = Instant::now() + WAIT;
        let mut pause = Duration::from_millis(2);
        loop {
            let t = now();
            let inserted = self
                .conn
                .prepare_cached(
                    "INSERT INTO seen (user, folder, msgid, body, committed, file, owner_pid, at)
                     VALUES (?1, ?2, ?3, ?4, 0, NULL, ?5, ?6) ON CONFLICT DO NOTHING",
                )
                .and_then(|mut s| s.execute(params![key.user, key.folder, key.msgid, key.body, pid, t]))
                .map_err(self.sql())?;
            if inserted == 1 {
                return self.owned(key);
            }
            let row: Option<(bool, Option<String>, i64, i64)> = self
                .conn
                .query_row(
                    "SELECT committed, file, owner_pid, at FROM seen
                     WHERE user = ?1 AND folder = ?2 AND msgid = ?3 AND body = ?4",
                    params![key.user, key.folder, key.msgid, key.body],
                    |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
                )
                .optional()
                .map_err(self.sql())?;
            let Some((committed, file, owner, at)) = row else { continue };
            let expired = at < t - self.window_secs;
            let file = file.unwrap_or_default();
            if committed && !expired && held(&file) {
                return Ok(Claim::Duplicate { file });
            }
            let gone = committed && !expired;
            let abandoned = !committed && (at < t - STALE_CLAIM_SECS || !process_alive(owner));
            if expired || abandoned || gone {
                // Take the key over only if nobody else did since we looked.
                let taken = self
                    .conn
                    .execute(
                        "UPDATE seen SET committed = 0, file = NULL, owner_pid = ?5, at = ?6
                         WHERE user = ?1 AND folder = ?2 AND msgid = ?3 AND body = ?4
                           AND owner_pid = ?7 AND at = ?8 AND committed = ?9",
                        params![key.user, key.folder, key.msgid, key.body, pid, t, owner, at, committed],
                    )
                    .map_err(self.sql())?;
                if taken == 1 {
                    return self.owned(key);
                }
                continue;
            }
            // Another delivery of the same message is storing it right now: wait for its
            // commit (then we are a duplicate) or its release (then we try again).
            if Instant::now() >= deadline {
                return Err(DedupError::Busy { path: self.path.clone(), msgid: key.msgid.to_string() });
            }
            std::thread::sleep(pause);
            pause = (pause * 2).min(Duration::from_millis(50));
        }
    }

    /// A claim just taken: says whether another body is known under the same Message-ID
    /// (a reused ID; logged, and the message stored all the same).
    fn owned(&self, key: &Key<'_>) -> Result<Claim> {
        let reused = self
            .conn
            .prepare_cached(
                "SELECT EXISTS (SELECT 1 FROM seen WHERE user = ?1 AND folder = ?2 AND msgid = ?3 AND body <> ?4)",
            )
            .and_then(|mut s| s.query_row(params![key.user, key.folder, key.msgid, key.body], |r| r.get(0)))
            .map_err(self.sql())?;
        Ok(if reused { Claim::OwnedIdReused } else { Claim::Owned })
    }

    /// Records that `key`'s message is stored as `file`; on this delivery's turn, also
    /// prunes a batch of expired keys. The key keeps its claim's time (`at`), seconds
    /// earlier: leaving `at` alone leaves the `seen_at` index page alone, so a commit writes
    /// one page to the WAL instead of two, and every later open has less WAL to read.
    pub fn commit(&self, key: &Key<'_>, file: &str) -> Result<()> {
        let pid = i64::from(std::process::id());
        let tx = self.conn.unchecked_transaction().map_err(self.sql())?;
        tx.execute(
            "UPDATE seen SET committed = 1, file = ?5
             WHERE user = ?1 AND folder = ?2 AND msgid = ?3 AND body = ?4 AND owner_pid = ?6",
            params![key.user, key.folder, key.msgid, key.body, file, pid],
        )
        .map_err(self.sql())?;
        if self.prunes {
            prune_some(&tx, now() - self.window_secs, PRUNE_BATCH).map_err(self.sql())?;
        }
        tx.commit().map_err(self.sql())
    }

    /// Gives up a claim after a failed delivery, so the retry can store the message.
    pub fn release(&self, key: &Key<'_>) {
        let pid = i64::from(std::process::id());
        let _ = self.conn.execute(
            "DELETE FROM seen WHERE user = ?1 AND folder = ?2 AND msgid = ?3 AND body = ?4
               AND committed = 0 AND owner_pid = ?5",
            params![key.user, key.folder, key.msgid, key.body, pid],
        );
    }

    /// This store kept open by a long-lived process (`lmtp`): its commits never prune, as
    /// the turn by process id would make every one of them prune or none; the caller
    /// calls `prune_batch` on a count of copies instead.
    pub fn kept(mut self) -> Store {
        self.prunes = false;
        self
    }

    /// Removes a batch of expired keys, what a delivery on its pruning turn removes: one
    /// call in `PRUNE_EVERY` copies keeps the store as small as deliveries' turns do.
    pub fn prune_batch(&self) -> Result<usize> {
        prune_some(&self.conn, now() - self.window_secs, PRUNE_BATCH).map_err(self.sql())
    }

    /// Removes every expired key (admin command). Returns how many.
    pub fn prune_all(&self) -> Result<usize> {
        prune_some(&self.conn, now() - self.window_secs, i64::MAX).map_err(self.sql())
    }

    /// Keys per user and folder with the oldest and newest time.
    pub fn stats(&self) -> Result<Vec<FolderKeys>> {
        let mut stmt = self
            .conn
            .prepare(
                "SELECT user, folder, count(*), min(at), max(at) FROM seen GROUP BY user, folder ORDER BY user, folder",
            )
            .map_err(self.sql())?;
        let rows = stmt
            .query_map([], |r| {
                Ok(FolderKeys {
                    user: r.get(0)?,
                    folder: r.get(1)?,
                    keys: r.get(2)?,
                    oldest: r.get(3)?,
                    newest: r.get(4)?,
                })
            })
            .map_err(self.sql())?;
        rows.collect::<std::result::Result<_, _>>().map_err(self.sql())
    }
}

impl Store {
    /// Opens the store for the admin commands, if there is one: looked for without
    /// following a symlink and without creating anything. `None` when there is none. A
    /// store that serves another root than `root_id` is refused (none recorded: no check).
    pub fn open_existing(at: &Location, window_days: u32, root_id: &str) -> Result<Option<Store>> {
        let path = at.path();
        let exists = match at.open_dir()? {
            Some(dir) => fsutil::regular_or_missing(dir.as_fd(), at.name()).map_err(refused(&path, false))?,
            None => false,
        };
        if !exists {
            return Ok(None);
        }
        Store::open_for(at, window_days, root_id, false).map(Some)
    }
}

impl Store {
    /// Forgets every key of `user`, pending or committed (`erase` of a whole user): a later
    /// copy of one of its messages is stored again. Returns how many.
    pub fn forget_user(&self, user: &str) -> Result<usize> {
        self.conn.execute("DELETE FROM seen WHERE user = ?1", params![user]).map_err(self.sql())
    }

    /// Forgets the key of `user`'s message stored as `file` in `folder` (`erase` of some
    /// messages). Returns how many.
    pub fn forget(&self, user: &str, folder: &str, file: &str) -> Result<usize> {
        self.conn
            .prepare_cached("DELETE FROM seen WHERE user = ?1 AND folder = ?2 AND file = ?3")
            .and_then(|mut s| s.execute(params![user, folder, file]))
            .map_err(self.sql())
    }

    /// Forgets the keys of `user`'s messages stored as `files` in `folder`, in one
    /// transaction (`expire` of many messages). Returns how many.
    pub fn forget_files(&self, user: &str, folder: &str, files: &[&str]) -> Result<usize> {
        // Immediate: the write lock is waited for (busy_timeout) at BEGIN, not refused later.
        let tx = rusqlite::Transaction::new_unchecked(&self.conn, rusqlite::TransactionBehavior::Immediate)
            .map_err(self.sql())?;
        let mut n = 0;
        for file in files {
            n += self.forget(user, folder, file)?;
        }
        tx.commit().map_err(self.sql())?;
        Ok(n)
    }

    /// Forgets every key of `user` under the Message-ID `msgid`, in any folder (`erase
    /// --message-id`, which also takes keys whose copy was folded or stored elsewhere).
    pub fn forget_message_id(&self, user: &str, msgid: &str) -> Result<usize> {
        self.conn.execute("DELETE FROM seen WHERE user = ?1 AND msgid = ?2", params![user, msgid]).map_err(self.sql())
    }
}

/// Deletes up to `limit` keys older than `cutoff`: committed ones past the window, and
/// pending ones that old (their delivery is long dead).
fn prune_some(conn: &Connection, cutoff: i64, limit: i64) -> rusqlite::Result<usize> {
    conn.prepare_cached(
        "DELETE FROM seen WHERE (user, folder, msgid, body) IN
           (SELECT user, folder, msgid, body FROM seen WHERE at < ?1 ORDER BY at LIMIT ?2)",
    )?
    .execute(params![cutoff, limit])
}

/// Creates the tables of `SCHEMA_VERSION`, dropping a version 1 table (keyed without the
/// body digest), in one write transaction: of deliveries that open an old store at once,
/// one upgrades it and the others find it done.
fn create_schema(conn: &Connection) -> rusqlite::Result<()> {
    conn.execute_batch("BEGIN IMMEDIATE")?;
    let upgrade = || -> rusqlite::Result<()> {
        let version: i64 = conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
        if version >= SCHEMA_VERSION {
            return Ok(());
        }
        let has_body: bool =
            conn.query_row("SELECT count(*) FROM pragma_table_info('seen') WHERE name = 'body'", [], |r| {
                r.get::<_, i64>(0).map(|n| n > 0)
            })?;
        if !has_body {
            conn.execute_batch("DROP TABLE IF EXISTS seen")?;
        }
        conn.execute_batch(&format!(
            "CREATE TABLE IF NOT EXISTS seen (
                user TEXT NOT NULL, folder TEXT NOT NULL, msgid TEXT NOT NULL, body BLOB NOT NULL,
                committed INTEGER NOT NULL, file TEXT, owner_pid INTEGER NOT NULL,
                at INTEGER NOT NULL,
                PRIMARY KEY (user, folder, msgid, body)) WITHOUT ROWID;
             CREATE INDEX IF NOT EXISTS seen_at ON seen(at);
             CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL) WITHOUT ROWID;
             PRAGMA user_version = {SCHEMA_VERSION};"
        ))
    };
    match upgrade() {
        Ok(()) => conn.execute_batch("COMMIT"),
        Err(e) => {
            let _ = conn.execute_batch("ROLLBACK");
            Err(e)
        }
    }
}

/// True unless the pid certainly is gone (a pid owned by another user still counts).
fn process_alive(pid: i64) -> bool {
    let Ok(pid) = i32::try_from(pid) else { return false };
    !matches!(nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None), Err(nix::errno::Errno::ESRCH))
}

/// The store's directory below the root, and the store's file in it.
const STORE_DIR: &str = crate::root::STATE_DIR;
const STORE_FILE: &str = "dedup.sqlite3";

/// `path` could not be opened as a directory (`dir`) or as the store's files.
fn refused(path: &Path, dir: bool) -> impl FnOnce(OpenError) -> DedupError + '_ {
    move |e| {
        let io = |errno: nix::errno::Errno| DedupError::Dir { path: path.to_path_buf(), err: errno.into() };
        match e {
            OpenError::Symlink => DedupError::Symlink(path.to_path_buf()),
            OpenError::WrongType if dir => io(nix::errno::Errno::ENOTDIR),
            OpenError::WrongType => DedupError::NotAFile(path.to_path_buf()),
            OpenError::Missing => io(nix::errno::Errno::ENOENT),
            OpenError::Io { errno, .. } => io(errno),
        }
    }
}

/// Opens `ROOT/.mailkeep` without following a symlink planted there; `None` when it is
/// missing. Only `mailkeep init` creates it (`root::init`), so a store is never made below
/// an uninitialised root.
fn open_store_dir(root: &Path) -> Result<Option<OwnedFd>> {
    let flags = OFlag::O_DIRECTORY | OFlag::O_RDONLY | OFlag::O_CLOEXEC;
    // The root is the admin's, named on the command line: the one path we open by name.
    let root_fd = nix::fcntl::open(root, flags, Mode::empty())
        .map_err(|e| DedupError::Dir { path: root.to_path_buf(), err: e.into() })?;
    crate::root::open_state_dir(root_fd.as_fd()).map_err(refused(&root.join(STORE_DIR), true))
}

/// Opens the store in `dir` (`ROOT/.mailkeep`, already opened without following) so that
/// SQLite can never be sent elsewhere by a symlink swapped in meanwhile.
///
/// SQLite opens its files by name, the database's and, beside it, the `-wal` and `-shm`
/// ones. It is given `/proc/self/fd/N/dedup.sqlite3`, N being `dir`: the kernel resolves
/// `/proc/self/fd/N` to the very directory we opened, whatever is renamed or swapped in
/// the root, and SQLite opens each file with O_NOFOLLOW. SQLite's own "unix" VFS would first
/// turn that name into a path by reading every symlink in it (so `/proc/self/fd/N` becomes
/// the directory's path again, open to the swap); the `mailkeep-fd` VFS is "unix" with that
/// step left out. What is in the directory is looked at first: the three files must each
/// be a regular file or missing (a symlink or a FIFO is refused with 75).
pub fn connect(dir: BorrowedFd<'_>, root: &Path, flags: OpenFlags) -> Result<Connection> {
    connect_named(dir, &root.join(STORE_DIR), OsStr::new(STORE_FILE), flags)
}

/// `connect_named` for another database of ours (the seal index, `seal::index`).
pub fn connect_file(dir: BorrowedFd<'_>, dir_path: &Path, name: &OsStr, flags: OpenFlags) -> Result<Connection> {
    connect_named(dir, dir_path, name, flags)
}

/// `connect` for the store file `name` in `dir` (`--dedup-store`); `dir_path` only names
/// it in messages.
fn connect_named(dir: BorrowedFd<'_>, dir_path: &Path, name: &OsStr, flags: OpenFlags) -> Result<Connection> {
    for suffix in ["", "-wal", "-shm", "-journal"] {
        let mut file = name.to_os_string();
        file.push(suffix);
        fsutil::regular_or_missing(dir, file.as_os_str()).map_err(refused(&dir_path.join(&file), false))?;
    }
    let path = dir_path.join(name);
    let sql = |err| DedupError::Sqlite { path: path.clone(), err };
    let fd_dir = PathBuf::from(format!("/proc/self/fd/{}", dir.as_raw_fd()));
    if !fd_dir.is_dir() {
        return Err(DedupError::NoProc);
    }
    Connection::open_with_flags_and_vfs(fd_dir.join(name), flags, fd_vfs().map_err(sql)?).map_err(sql)
}

/// Filesystems on which SQLite's POSIX locks or its WAL's shared-memory index cannot be
/// trusted (SQLite: "WAL does not work over a network filesystem"; NFS and SMB locks are
/// per client or emulated). FUSE stands for sshfs, GlusterFS and ceph-fuse; a local FUSE
/// filesystem is refused too, which only costs choosing a path elsewhere. The numbers are
/// statfs(2)'s f_type (linux/magic.h).
const NETWORK_FS: &[(u32, &str)] = &[
    (0x6969, "NFS"),
    (0x00c3_6400, "CephFS"),
    (0xfe53_4d42, "SMB2"),
    (0xff53_4d42, "CIFS"),
    (0x517b, "SMB"),
    (0x6573_5546, "FUSE"),
    (0x5346_414f, "AFS"),
    (0x6b41_4653, "kAFS"),
    (0x0102_1997, "9P"),
    (0x0bd0_0bd0, "Lustre"),
    (0x7375_7245, "Coda"),
];

/// The network filesystem `dir` is on, if any (an fstatfs that fails tells nothing).
fn network_fs(dir: BorrowedFd<'_>) -> Option<&'static str> {
    // f_type is a C long holding a 32-bit magic number.
    let kind = nix::sys::statfs::fstatfs(dir).ok()?.filesystem_type().0 as u32;
    network_fs_named(crate::fault::fs_type(kind))
}

fn network_fs_named(kind: u32) -> Option<&'static str> {
    NETWORK_FS.iter().find(|&&(magic, _)| magic == kind).map(|&(_, name)| name)
}

impl Store {
    /// The size of the store's file (not its -wal), for `dedup stats`.
    pub fn file_size(&self) -> u64 {
        let st =
            nix::sys::stat::fstatat(self.dir.as_fd(), self.name.as_os_str(), nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW);
        st.map_or(0, |st| st.st_size as u64)
    }
}

/// The name of the `mailkeep-fd` VFS, registered on first use (see `connect`).
fn fd_vfs() -> rusqlite::Result<&'static CStr> {
    const NAME: &CStr = c"mailkeep-fd";
    static REGISTERED: OnceLock<c_int> = OnceLock::new();
    // SAFETY: sqlite3_vfs_find initializes SQLite and returns the "unix" VFS, which lives as
    // long as the process; a copy of it with another name and xFullPathname, leaked so it
    // lives as long too, is registered once.
    let rc = *REGISTERED.get_or_init(|| unsafe {
        let unix = ffi::sqlite3_vfs_find(c"unix".as_ptr());
        if unix.is_null() {
            return ffi::SQLITE_ERROR;
        }
        let mut vfs = *unix;
        vfs.zName = NAME.as_ptr();
        vfs.pNext = std::ptr::null_mut();
        vfs.xFullPathname = Some(full_pathname_as_given);
        let vfs = Box::leak(Box::new(vfs));
        // The unix VFS's system calls are one table for the process (mailkeep's other
        // databases, the seal index and check's temporary one, are its own too): its `open`
        // becomes `open_file_or_dir`.
        let Some(set_syscall) = vfs.xSetSystemCall else { return ffi::SQLITE_ERROR };
        // SAFETY: SQLite calls the "open" entry as `int (*)(const char *, int, int)`, the
        // signature of `open_file_or_dir`; the generic pointer type only carries it.
        let open: unsafe extern "C" fn() =
            std::mem::transmute(open_file_or_dir as unsafe extern "C" fn(*const c_char, c_int, c_int) -> c_int);
        let rc = set_syscall(vfs, c"open".as_ptr(), Some(open));
        if rc != ffi::SQLITE_OK {
            return rc;
        }
        ffi::sqlite3_vfs_register(vfs, 0)
    });
    match rc {
        ffi::SQLITE_OK => Ok(NAME),
        rc => {
            Err(rusqlite::Error::SqliteFailure(ffi::Error::new(rc), Some("cannot register the mailkeep-fd VFS".into())))
        }
    }
}

/// The `open` SQLite's unix VFS calls for every file of the store (the database, its
/// `-wal`, `-shm` and `-journal`, which SQLite looks for even in WAL mode, and the
/// directory it fsyncs). Anyone who can write into `ROOT/.mailkeep` could plant a FIFO under
/// one of those names, on which a plain open would block for good: each is opened with
/// O_NONBLOCK, and whatever is neither a regular file nor a directory is refused (ENXIO;
/// SQLite then reports it cannot open the store, and a delivery exits 75). Checking before
/// SQLite opens would leave a gap to swap the FIFO in; this is the open itself.
unsafe extern "C" fn open_file_or_dir(path: *const c_char, flags: c_int, mode: c_int) -> c_int {
    // SAFETY: `path` is SQLite's NUL-terminated file name; `st` is written by fstat before
    // it is read; every descriptor opened here is returned or closed.
    unsafe {
        let fd = libc::open(path, flags | libc::O_NONBLOCK | libc::O_CLOEXEC, mode as libc::c_uint);
        if fd < 0 {
            return fd;
        }
        let mut st = std::mem::MaybeUninit::<libc::stat>::uninit();
        let kind = match libc::fstat(fd, st.as_mut_ptr()) {
            0 => st.assume_init().st_mode & libc::S_IFMT,
            _ => 0,
        };
        if kind != libc::S_IFREG && kind != libc::S_IFDIR {
            libc::close(fd);
            *libc::__errno_location() = libc::ENXIO;
            return -1;
        }
        if flags & libc::O_NONBLOCK == 0 {
            let fl = libc::fcntl(fd, libc::F_GETFL);
            libc::fcntl(fd, libc::F_SETFL, fl & !libc::O_NONBLOCK);
        }
        fd
    }
}

/// xFullPathname of `mailkeep-fd`: the name as given, which `connect` makes absolute, with
/// no symlink resolved.
unsafe extern "C" fn full_pathname_as_given(
    _vfs: *mut ffi::sqlite3_vfs,
    name: *const c_char,
    out_len: c_int,
    out: *mut c_char,
) -> c_int {
    // SAFETY: SQLite passes a NUL-terminated name and an output buffer of out_len bytes.
    unsafe {
        let name = CStr::from_ptr(name).to_bytes_with_nul();
        if name.first() != Some(&b'/') || name.len() > usize::try_from(out_len).unwrap_or(0) {
            return ffi::SQLITE_CANTOPEN;
        }
        std::ptr::copy_nonoverlapping(name.as_ptr().cast::<c_char>(), out, name.len());
    }
    ffi::SQLITE_OK
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A root with its state directory, as `mailkeep init` leaves it.
    fn root_with_state_dir() -> tempfile::TempDir {
        let root = tempfile::tempdir().unwrap();
        std::fs::create_dir(root.path().join(".mailkeep")).unwrap();
        root
    }

    const BODY: Digest = [7; 32];

    fn open_in(root: &Path, window_days: u32) -> Result<Store> {
        Store::open(&Location::InRoot(root.to_path_buf()), window_days, ROOT_ID)
    }

    const ROOT_ID: &str = "0123456789abcdef0123456789abcdef";

    impl Store {
        /// `claim` with every stored file still there.
        fn claim_held(&self, key: &Key<'_>) -> Result<Claim> {
            self.claim(key, |_| true)
        }
    }

    fn key(msgid: &str) -> Key<'_> {
        Key { user: "alice", folder: "Sent", msgid, body: &BODY }
    }

    #[test]
    fn network_filesystems_are_known_by_their_magic_numbers_and_local_ones_are_not() {
        for (magic, name) in [(0x6969, "NFS"), (0x00c3_6400, "CephFS"), (0xfe53_4d42, "SMB2"), (0xff53_4d42, "CIFS")] {
            assert_eq!(network_fs_named(magic), Some(name), "{magic:#x}");
        }
        // ext4, XFS, btrfs, tmpfs, overlayfs
        for local in [0xef53, 0x5846_5342, 0x9123_683e, 0x0102_1994, 0x794c_7630] {
            assert_eq!(network_fs_named(local), None, "{local:#x}");
        }
    }

    #[test]
    fn second_claim_after_commit_is_a_duplicate() {
        let root = root_with_state_dir();
        let s = open_in(root.path(), 30).unwrap();
        assert_eq!(s.claim_held(&key("a@b")).unwrap(), Claim::Owned);
        s.commit(&key("a@b"), "f1").unwrap();
        assert_eq!(s.claim_held(&key("a@b")).unwrap(), Claim::Duplicate { file: "f1".into() });
    }

    #[test]
    fn keys_differ_by_user_and_folder() {
        let root = root_with_state_dir();
        let s = open_in(root.path(), 30).unwrap();
        for (user, folder) in [("alice", "Sent"), ("alice", "INBOX"), ("bob", "Sent")] {
            let k = Key { user, folder, msgid: "same@id", body: &BODY };
            assert_eq!(s.claim_held(&k).unwrap(), Claim::Owned, "{user}/{folder}");
            s.commit(&k, "f").unwrap();
        }
    }

    #[test]
    fn released_claim_can_be_taken_again() {
        let root = root_with_state_dir();
        let s = open_in(root.path(), 30).unwrap();
        assert_eq!(s.claim_held(&key("x")).unwrap(), Claim::Owned);
        s.release(&key("x"));
        assert_eq!(s.claim_held(&key("x")).unwrap(), Claim::Owned);
    }

    #[test]
    fn a_key_expires_a_window_after_its_claim_not_its_commit() {
        let root = root_with_state_dir();
        let s = open_in(root.path(), 1).unwrap();
        assert_eq!(s.claim_held(&key("slow")).unwrap(), Claim::Owned);
        // As if the claim had been made 600 s ago and the message took that long to store.
        let claimed = now() - 600;
        s.conn.execute("UPDATE seen SET at = ?1 WHERE msgid = 'slow'", [claimed]).unwrap();
        s.commit(&key("slow"), "f").unwrap();
        let (at, committed): (i64, bool) = s
            .conn
            .query_row("SELECT at, committed FROM seen WHERE msgid = 'slow'", [], |r| Ok((r.get(0)?, r.get(1)?)))
            .unwrap();
        assert_eq!((at, committed), (claimed, true));
    }

    #[test]
    fn claim_of_a_dead_process_is_taken_over() {
        let root = root_with_state_dir();
        let s = open_in(root.path(), 30).unwrap();
        s.conn.execute("INSERT INTO seen VALUES ('alice', 'Sent', 'dead', X'0707070707070707070707070707070707070707070707070707070707070707', 0, NULL, 2147483646, ?1)", [now()]).unwrap();
        assert_eq!(s.claim_held(&key("dead")).unwrap(), Claim::Owned);
    }

    #[test]
    fn expired_keys_no_longer_fold_and_are_pruned() {
        let root = root_with_state_dir();
        let s = open_in(root.path(), 1).unwrap();
        s.conn.execute("INSERT INTO seen VALUES ('alice', 'Sent', 'old', X'0707070707070707070707070707070707070707070707070707070707070707', 1, 'f', 1, ?1)", [now() - 2 * 86400]).unwrap();
        assert_eq!(s.claim_held(&key("old")).unwrap(), Claim::Owned);
        s.conn.execute("INSERT INTO seen VALUES ('bob', 'Sent', 'old2', X'0707070707070707070707070707070707070707070707070707070707070707', 1, 'f', 1, 5)", []).unwrap();
        assert_eq!(s.prune_all().unwrap(), 1);
    }

    fn keys(s: &Store) -> i64 {
        s.conn.query_row("SELECT count(*) FROM seen", [], |r| r.get(0)).unwrap()
    }

    #[test]
    fn only_a_delivery_on_its_pruning_turn_prunes() {
        let root = root_with_state_dir();
        let mut s = open_in(root.path(), 1).unwrap();
        s.conn.execute("INSERT INTO seen VALUES ('bob', 'Sent', 'old', X'0707070707070707070707070707070707070707070707070707070707070707', 1, 'f', 1, 5)", []).unwrap();
        for (turn, left) in [(false, 2), (true, 2)] {
            s.prunes = turn;
            let k = format!("new-{turn}");
            assert_eq!(s.claim_held(&key(&k)).unwrap(), Claim::Owned);
            s.commit(&key(&k), "f").unwrap();
            assert_eq!(keys(&s), left, "pruning turn: {turn}");
        }
    }

    #[test]
    fn a_kept_store_prunes_only_when_asked_and_a_batch_at_a_time() {
        let root = root_with_state_dir();
        let mut s = open_in(root.path(), 1).unwrap();
        s.prunes = true;
        let s = s.kept();
        let old = "INSERT INTO seen VALUES ('bob', 'Sent', ?1, X'0707070707070707070707070707070707070707070707070707070707070707', 1, 'f', 1, 5)";
        for i in 0..PRUNE_BATCH + 5 {
            s.conn.execute(old, [format!("old-{i}")]).unwrap();
        }
        assert_eq!(s.claim_held(&key("new")).unwrap(), Claim::Owned);
        s.commit(&key("new"), "f").unwrap();
        assert_eq!(keys(&s), PRUNE_BATCH + 6, "a kept store's commit pruned");
        assert_eq!(s.prune_batch().unwrap() as i64, PRUNE_BATCH);
        assert_eq!(keys(&s), 6);
    }

    #[test]
    fn a_version_1_store_is_upgraded_to_keys_with_the_body_and_reopens() {
        let root = root_with_state_dir();
        let old = Connection::open(Store::path(root.path())).unwrap();
        old.execute_batch(
            "CREATE TABLE seen (user TEXT NOT NULL, folder TEXT NOT NULL, msgid TEXT NOT NULL,
                committed INTEGER NOT NULL, file TEXT, owner_pid INTEGER NOT NULL, at INTEGER NOT NULL,
                PRIMARY KEY (user, folder, msgid)) WITHOUT ROWID;
             INSERT INTO seen VALUES ('alice', 'Sent', 'kept', 1, 'f', 1, 5);
             PRAGMA user_version = 1;",
        )
        .unwrap();
        drop(old);
        let s = open_in(root.path(), 30).unwrap();
        assert_eq!(s.claim_held(&key("kept")).unwrap(), Claim::Owned, "an old key (no body) folds nothing");
        s.commit(&key("kept"), "f").unwrap();
        drop(s);
        for _ in 0..2 {
            let s = open_in(root.path(), 30).unwrap();
            let v: i64 = s.conn.pragma_query_value(None, "user_version", |r| r.get(0)).unwrap();
            let mode: String = s.conn.pragma_query_value(None, "journal_mode", |r| r.get(0)).unwrap();
            assert_eq!((v, mode.as_str()), (SCHEMA_VERSION, "wal"));
            assert_eq!(s.claim_held(&key("kept")).unwrap(), Claim::Duplicate { file: "f".into() });
        }
    }

    #[test]
    fn forgotten_keys_fold_nothing_and_other_users_keep_theirs() {
        let root = root_with_state_dir();
        let s = open_in(root.path(), 30).unwrap();
        for (user, id) in [("alice", "a@x"), ("alice", "b@x"), ("alice", "c@x"), ("bob", "a@x")] {
            let k = Key { user, folder: "Sent", msgid: id, body: &BODY };
            assert_eq!(s.claim_held(&k).unwrap(), Claim::Owned);
            s.commit(&k, &format!("f-{id}")).unwrap();
        }
        assert_eq!(s.forget("alice", "Sent", "f-a@x").unwrap(), 1);
        assert_eq!(s.forget("alice", "INBOX", "f-b@x").unwrap(), 0, "another folder's file");
        assert_eq!(s.forget_message_id("alice", "b@x").unwrap(), 1, "by Message-ID in any folder");
        assert_eq!(s.claim_held(&key("a@x")).unwrap(), Claim::Owned);
        assert_eq!(s.forget_user("alice").unwrap(), 2, "c@x and the new claim");
        assert_eq!(keys(&s), 1, "bob's key stays");
    }

    #[test]
    fn the_same_message_id_with_another_body_is_no_duplicate() {
        let root = root_with_state_dir();
        let s = open_in(root.path(), 30).unwrap();
        assert_eq!(s.claim_held(&key("c@x")).unwrap(), Claim::Owned);
        s.commit(&key("c@x"), "planted").unwrap();
        let other = Key { body: &[8; 32], ..key("c@x") };
        assert_eq!(s.claim_held(&other).unwrap(), Claim::OwnedIdReused);
        s.commit(&other, "contract").unwrap();
        assert_eq!(s.claim_held(&other).unwrap(), Claim::Duplicate { file: "contract".into() });
    }
}
