//! The index of sealed names: what `seal` looks a file up in instead of re-hashing it, and
//! what `check --seals` walks folder by folder. Derived data: made from the seal files
//! alone, rebuilt whenever it does not end with the digest of the seal it says it ends
//! with (or is missing), so a stale, lost or edited index costs time, never correctness.
//!
//! SQLite, rows without rowid keyed by (user, folder, name): a million sealed names are a
//! B-tree on disk, looked up one at a time, never a map in memory. `seal` keeps it at
//! ROOT/.mailkeep/seals/index.sqlite; `check --seals` builds a private temporary one from
//! the seals it has just verified, so a hand-edited index cannot hide a loss from it.

use std::ffi::OsStr;
use std::os::fd::BorrowedFd;
use std::path::Path;

use rusqlite::{Connection, OpenFlags, OptionalExtension, params};

use super::{Line, SealError, Sealed};
use crate::audit;

/// ROOT/.mailkeep/seals/index.sqlite.
pub const INDEX_FILE: &str = "index.sqlite";

const SCHEMA: &str = "
    CREATE TABLE IF NOT EXISTS seals(seq INTEGER PRIMARY KEY, digest TEXT NOT NULL, messages INTEGER NOT NULL);
    CREATE TABLE IF NOT EXISTS sealed(user TEXT NOT NULL, folder TEXT NOT NULL, name TEXT NOT NULL,
        size INTEGER NOT NULL, sha256 TEXT NOT NULL, seq INTEGER NOT NULL,
        PRIMARY KEY(user, folder, name)) WITHOUT ROWID;
    DROP TABLE IF EXISTS removed;
    CREATE TABLE IF NOT EXISTS removals(user TEXT NOT NULL, folder TEXT NOT NULL, name TEXT NOT NULL,
        size INTEGER NOT NULL, sha256 TEXT NOT NULL, command TEXT NOT NULL, seq INTEGER,
        time TEXT NOT NULL, uid INTEGER NOT NULL, sudo_user TEXT, reason TEXT);
    CREATE INDEX IF NOT EXISTS removals_by_name ON removals(user, folder, name);
";

/// The audit commands whose removals count: a removal entry of any other command (a forged
/// "hold" naming a message) excuses nothing.
const REMOVING: &str = "('expire', 'erase')";

/// One message an audit entry removed, as `check --seals` lists a removal that no seal (or no
/// seal up to the kept head) vouches for yet.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Removal {
    pub user: String,
    pub folder: String,
    pub name: String,
    pub size: u64,
    pub sha256: String,
    pub command: String,
    /// The seal that took the entry in; `None`: not sealed yet (audit.log's tail).
    pub seq: Option<u64>,
    pub time: String,
    pub uid: u32,
    pub sudo_user: Option<String>,
    pub reason: Option<String>,
}

/// An audit entry's removal that names a sealed message but does not match it, or that no
/// expire or erase wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mismatch {
    pub removal: Removal,
    /// The sealed message's size and SHA-256, when it names one.
    pub sealed: Option<(u64, String)>,
}

pub struct Index {
    conn: Connection,
    /// For messages.
    path: String,
}

impl Index {
    /// Opens (creating) the index `INDEX_FILE` in the seals directory `seals` (`dir` names
    /// that directory in messages) as the dedup store is opened (`dedup::connect_file`): through
    /// /proc/self/fd, each of its files (the database, `-journal`, `-wal`) a regular file or
    /// missing, never a symlink followed out of the root nor a FIFO waited on.
    pub fn open(seals: BorrowedFd<'_>, dir: &Path) -> Result<Index, SealError> {
        let shown = dir.join(INDEX_FILE).display().to_string();
        let flags = OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_CREATE | OpenFlags::SQLITE_OPEN_NO_MUTEX;
        let conn = crate::dedup::connect_file(seals, dir, OsStr::new(INDEX_FILE), flags).map_err(|e| match e {
            crate::dedup::DedupError::Sqlite { err, .. } => SealError::Index { path: shown.clone(), err },
            e => SealError::Refused { name: INDEX_FILE.into(), what: e.to_string() },
        })?;
        Index::with(conn, shown)
    }

    /// A private index in a temporary file SQLite deletes on close (an empty file name).
    pub fn temporary() -> Result<Index, SealError> {
        let conn = Connection::open("").map_err(|err| SealError::Index { path: "(temporary)".into(), err })?;
        Index::with(conn, "(temporary)".into())
    }

    fn with(conn: Connection, path: String) -> Result<Index, SealError> {
        let index = Index { conn, path };
        index.conn.busy_timeout(std::time::Duration::from_secs(60)).map_err(|e| index.err(e))?;
        index.conn.execute_batch(SCHEMA).map_err(|e| index.err(e))?;
        Ok(index)
    }

    fn err(&self, err: rusqlite::Error) -> SealError {
        SealError::Index { path: self.path.clone(), err }
    }

    /// The newest seal indexed: its number and digest.
    pub fn head(&self) -> Result<Option<(u64, String)>, SealError> {
        let sql = "SELECT seq, digest FROM seals ORDER BY seq DESC LIMIT 1";
        self.conn
            .query_row(sql, [], |r| Ok((r.get::<_, i64>(0)? as u64, r.get(1)?)))
            .optional()
            .map_err(|e| self.err(e))
    }

    /// Forgets everything, for a rebuild.
    pub fn clear(&mut self) -> Result<(), SealError> {
        self.conn.execute_batch("DELETE FROM seals; DELETE FROM sealed; DELETE FROM removals;").map_err(|e| self.err(e))
    }

    /// Takes in seal `seq` (digest `digest`) with its `lines`, in one transaction.
    pub fn add(&mut self, seq: u64, digest: &str, lines: &[Line]) -> Result<(), SealError> {
        let path = self.path.clone();
        let err = |err| SealError::Index { path: path.clone(), err };
        let tx = self.conn.transaction().map_err(err)?;
        {
            let mut sealed =
                tx.prepare_cached("INSERT OR IGNORE INTO sealed VALUES (?1, ?2, ?3, ?4, ?5, ?6)").map_err(err)?;
            let mut added = 0i64;
            for line in lines {
                match line {
                    Line::Message(m) => {
                        added += sealed
                            .execute(params![m.user, m.folder, m.name, m.size as i64, m.sha256, seq as i64])
                            .map_err(err)? as i64;
                    }
                    Line::Audit(a) => add_removals(&tx, &a.audit, Some(seq)).map_err(err)?,
                }
            }
            // The names this seal added: `consistent` compares their sum with the rows.
            tx.execute("INSERT OR REPLACE INTO seals VALUES (?1, ?2, ?3)", params![seq as i64, digest, added])
                .map_err(err)?;
        }
        tx.commit().map_err(err)
    }

    /// Takes in the removals of audit entries not sealed yet (`check --seals`).
    pub fn add_unsealed_removals(&mut self, entries: &[audit::Entry]) -> Result<(), SealError> {
        let path = self.path.clone();
        let err = |err| SealError::Index { path: path.clone(), err };
        let tx = self.conn.transaction().map_err(err)?;
        for e in entries {
            add_removals(&tx, e, None).map_err(err)?;
        }
        tx.commit().map_err(err)
    }

    /// Whether `name` in `user`'s `folder` is sealed.
    pub fn is_sealed(&self, user: &str, folder: &str, name: &str) -> Result<bool, SealError> {
        let mut stmt = self
            .conn
            .prepare_cached("SELECT 1 FROM sealed WHERE user = ?1 AND folder = ?2 AND name = ?3")
            .map_err(|e| self.err(e))?;
        stmt.exists(params![user, folder, name]).map_err(|e| self.err(e))
    }

    /// Every (user, folder) with a sealed message, sorted.
    pub fn folders(&self) -> Result<Vec<(String, String)>, SealError> {
        let mut stmt =
            self.conn.prepare("SELECT DISTINCT user, folder FROM sealed ORDER BY 1, 2").map_err(|e| self.err(e))?;
        let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?))).map_err(|e| self.err(e))?;
        rows.collect::<Result<_, _>>().map_err(|e| self.err(e))
    }

    /// Whether the rows of `sealed` are the names the indexed seals added, and no more than
    /// `in_seals` (the sum of the seal files' message counts; fewer when a name is in two
    /// seals): a row inserted or deleted by hand makes them differ, and so does a count
    /// raised by hand to match.
    pub fn consistent(&self, in_seals: u64) -> Result<bool, SealError> {
        let sql = "SELECT (SELECT count(*) FROM sealed), (SELECT coalesce(sum(messages), 0) FROM seals)";
        let (rows, added): (i64, i64) =
            self.conn.query_row(sql, [], |r| Ok((r.get(0)?, r.get(1)?))).map_err(|e| self.err(e))?;
        Ok(rows == added && added as u64 <= in_seals)
    }

    /// Calls `visit` with each message sealed in `user`'s `folder` (by name) and the rowid of
    /// a removal that accounts for it (`removal`): an expire or erase entry naming it with
    /// its sealed size and SHA-256, a sealed one first.
    pub fn each_sealed(
        &self,
        user: &str,
        folder: &str,
        mut visit: impl FnMut(Sealed, Option<i64>),
    ) -> Result<(), SealError> {
        let sql = format!(
            "SELECT s.name, s.size, s.sha256, (SELECT r.rowid FROM removals r
                WHERE r.user = s.user AND r.folder = s.folder AND r.name = s.name AND r.size = s.size
                AND r.sha256 = s.sha256 AND r.command IN {REMOVING} ORDER BY r.seq IS NULL, r.seq LIMIT 1)
            FROM sealed s WHERE s.user = ?1 AND s.folder = ?2 ORDER BY s.name"
        );
        let mut stmt = self.conn.prepare(&sql).map_err(|e| self.err(e))?;
        let mut rows = stmt.query(params![user, folder]).map_err(|e| self.err(e))?;
        while let Some(r) = rows.next().map_err(|e| self.err(e))? {
            let get = |r: &rusqlite::Row<'_>| -> rusqlite::Result<(Sealed, Option<i64>)> {
                let sealed = Sealed {
                    user: user.into(),
                    folder: folder.into(),
                    name: r.get(0)?,
                    size: r.get::<_, i64>(1)? as u64,
                    sha256: r.get(2)?,
                };
                Ok((sealed, r.get(3)?))
            };
            let (sealed, removed) = get(r).map_err(|e| self.err(e))?;
            visit(sealed, removed);
        }
        Ok(())
    }

    /// The removal `each_sealed` or `valid_removal` gave the rowid of.
    pub fn removal(&self, rowid: i64) -> Result<Removal, SealError> {
        let sql = format!("SELECT {REMOVAL_COLUMNS} FROM removals r WHERE r.rowid = ?1");
        self.conn.query_row(&sql, [rowid], removal_of).map_err(|e| self.err(e))
    }

    /// The rowid of a removal that accounts for `sealed` (as `each_sealed` finds one).
    pub fn valid_removal(&self, sealed: &Sealed) -> Result<Option<i64>, SealError> {
        let sql = format!(
            "SELECT rowid FROM removals WHERE user = ?1 AND folder = ?2 AND name = ?3 AND size = ?4
                AND sha256 = ?5 AND command IN {REMOVING} ORDER BY seq IS NULL, seq LIMIT 1"
        );
        let p = params![sealed.user, sealed.folder, sealed.name, sealed.size as i64, sealed.sha256];
        self.conn.query_row(&sql, p, |r| r.get(0)).optional().map_err(|e| self.err(e))
    }

    /// Removals that excuse nothing: one naming a sealed message with another size or
    /// SHA-256, and one written by a command other than expire or erase.
    pub fn mismatches(&self) -> Result<Vec<Mismatch>, SealError> {
        let sql = format!(
            "SELECT {REMOVAL_COLUMNS}, s.size, s.sha256 FROM removals r LEFT JOIN sealed s
                ON s.user = r.user AND s.folder = r.folder AND s.name = r.name
            WHERE r.command NOT IN {REMOVING} OR (s.name IS NOT NULL AND (r.size != s.size OR r.sha256 != s.sha256))
            ORDER BY r.user, r.folder, r.name, r.rowid"
        );
        let mut stmt = self.conn.prepare(&sql).map_err(|e| self.err(e))?;
        let rows = stmt
            .query_map([], |r| {
                let size: Option<i64> = r.get(11)?;
                let sealed = match size {
                    Some(size) => Some((size as u64, r.get(12)?)),
                    None => None,
                };
                Ok(Mismatch { removal: removal_of(r)?, sealed })
            })
            .map_err(|e| self.err(e))?;
        rows.collect::<Result<_, _>>().map_err(|e| self.err(e))
    }
}

const REMOVAL_COLUMNS: &str =
    "r.user, r.folder, r.name, r.size, r.sha256, r.command, r.seq, r.time, r.uid, r.sudo_user, r.reason";

fn removal_of(r: &rusqlite::Row<'_>) -> rusqlite::Result<Removal> {
    Ok(Removal {
        user: r.get(0)?,
        folder: r.get(1)?,
        name: r.get(2)?,
        size: r.get::<_, i64>(3)? as u64,
        sha256: r.get(4)?,
        command: r.get(5)?,
        seq: r.get::<_, Option<i64>>(6)?.map(|s| s as u64),
        time: r.get(7)?,
        uid: r.get(8)?,
        sudo_user: r.get(9)?,
        reason: r.get(10)?,
    })
}

/// Records the messages `entry` removed, with the seal `seq` that took it in (`None`: not
/// sealed yet).
fn add_removals(tx: &rusqlite::Transaction<'_>, entry: &audit::Entry, seq: Option<u64>) -> rusqlite::Result<()> {
    let mut stmt = tx.prepare_cached("INSERT INTO removals VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)")?;
    for r in &entry.removed {
        stmt.execute(params![
            entry.user,
            r.folder,
            r.name,
            r.size as i64,
            r.sha256,
            entry.command,
            seq.map(|s| s as i64),
            entry.time,
            entry.uid,
            entry.sudo_user,
            entry.reason
        ])?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sealed(name: &str) -> Line {
        Line::Message(Sealed {
            user: "a".into(),
            folder: "INBOX".into(),
            name: name.into(),
            size: 1,
            sha256: "x".into(),
        })
    }

    #[test]
    fn sealed_names_are_found_and_removals_marked() {
        let mut index = Index::temporary().unwrap();
        assert_eq!(index.head().unwrap(), None);
        index.add(1, "d1", &[sealed("1.x"), sealed("2.x")]).unwrap();
        let removed = audit::Removed { folder: "INBOX".into(), name: "2.x".into(), size: 1, sha256: "x".into() };
        let erase = audit::Entry::now("erase", "a", Some("r"), None, vec![removed.clone()]);
        index.add(2, "d2", &[Line::Audit(super::super::AuditLine { audit: erase })]).unwrap();
        assert!(index.consistent(2).unwrap());
        assert!(!index.consistent(1).unwrap(), "more names than the seals hold");
        // A forged "hold" naming 1.x, and an erase naming it with another digest, excuse nothing.
        let other = audit::Removed { name: "1.x".into(), sha256: "y".into(), ..removed.clone() };
        let forged = [
            audit::Entry::now("hold", "a", None, None, vec![audit::Removed { name: "1.x".into(), ..removed }]),
            audit::Entry::now("erase", "a", None, None, vec![other]),
        ];
        index.add_unsealed_removals(&forged).unwrap();
        assert_eq!(index.head().unwrap(), Some((2, "d2".into())));
        assert!(index.is_sealed("a", "INBOX", "1.x").unwrap());
        assert!(!index.is_sealed("a", "Sent", "1.x").unwrap());
        let mut seen = Vec::new();
        index.each_sealed("a", "INBOX", |s, removed| seen.push((s.name, removed))).unwrap();
        let seen: Vec<(String, bool)> = seen.into_iter().map(|(n, r)| (n, r.is_some())).collect();
        assert_eq!(seen, [("1.x".to_string(), false), ("2.x".to_string(), true)]);
        let mismatched: Vec<(String, Option<u64>)> =
            index.mismatches().unwrap().into_iter().map(|m| (m.removal.command, m.removal.seq)).collect();
        assert_eq!(mismatched, [("hold".to_string(), None), ("erase".to_string(), None)]);
        assert_eq!(index.folders().unwrap(), [("a".to_string(), "INBOX".to_string())]);
        index.clear().unwrap();
        assert_eq!(index.head().unwrap(), None);
    }
}
