//! The index of sealed names: what `seal` looks a file up in instead of re-hashing it, and
//! what `check --seals` walks folder by folder. Derived data: made from the seal files
//! alone, rebuilt whenever it does not end with the digest of the seal it says it ends
//! with (or is missing), so a stale, lost or edited index costs time, never correctness.
//!
//! SQLite, rows without rowid keyed by (user, folder, name): a million sealed names are a
//! B-tree on disk, looked up one at a time, never a map in memory. `seal` keeps it at
//! ROOT/.mailkeep/seals/index.sqlite; `check --seals` builds a private temporary one from
//! the seals it has just verified, so a hand-edited index cannot hide a loss from it.

use std::path::Path;

use rusqlite::{Connection, OptionalExtension, params};

use super::{Line, SealError, Sealed};
use crate::audit;

/// ROOT/.mailkeep/seals/index.sqlite.
pub const INDEX_FILE: &str = "index.sqlite";

const SCHEMA: &str = "
    CREATE TABLE IF NOT EXISTS seals(seq INTEGER PRIMARY KEY, digest TEXT NOT NULL);
    CREATE TABLE IF NOT EXISTS sealed(user TEXT NOT NULL, folder TEXT NOT NULL, name TEXT NOT NULL,
        size INTEGER NOT NULL, sha256 TEXT NOT NULL, seq INTEGER NOT NULL,
        PRIMARY KEY(user, folder, name)) WITHOUT ROWID;
    CREATE TABLE IF NOT EXISTS removed(user TEXT NOT NULL, folder TEXT NOT NULL, name TEXT NOT NULL,
        PRIMARY KEY(user, folder, name)) WITHOUT ROWID;
";

pub struct Index {
    conn: Connection,
    /// For messages.
    path: String,
}

impl Index {
    /// Opens (creating) the index at `path`.
    pub fn open(path: &Path) -> Result<Index, SealError> {
        let shown = path.display().to_string();
        let conn = Connection::open(path).map_err(|err| SealError::Index { path: shown.clone(), err })?;
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
        self.conn.execute_batch("DELETE FROM seals; DELETE FROM sealed; DELETE FROM removed;").map_err(|e| self.err(e))
    }

    /// Takes in seal `seq` (digest `digest`) with its `lines`, in one transaction.
    pub fn add(&mut self, seq: u64, digest: &str, lines: &[Line]) -> Result<(), SealError> {
        let path = self.path.clone();
        let err = |err| SealError::Index { path: path.clone(), err };
        let tx = self.conn.transaction().map_err(err)?;
        {
            let mut sealed =
                tx.prepare_cached("INSERT OR IGNORE INTO sealed VALUES (?1, ?2, ?3, ?4, ?5, ?6)").map_err(err)?;
            for line in lines {
                match line {
                    Line::Message(m) => {
                        sealed
                            .execute(params![m.user, m.folder, m.name, m.size as i64, m.sha256, seq as i64])
                            .map_err(err)?;
                    }
                    Line::Audit(a) => add_removals(&tx, &a.audit).map_err(err)?,
                }
            }
            tx.execute("INSERT OR REPLACE INTO seals VALUES (?1, ?2)", params![seq as i64, digest]).map_err(err)?;
        }
        tx.commit().map_err(err)
    }

    /// Takes in the removals of audit entries not sealed yet (`check --seals`).
    pub fn add_unsealed_removals(&mut self, entries: &[audit::Entry]) -> Result<(), SealError> {
        let path = self.path.clone();
        let err = |err| SealError::Index { path: path.clone(), err };
        let tx = self.conn.transaction().map_err(err)?;
        for e in entries {
            add_removals(&tx, e).map_err(err)?;
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

    /// Calls `visit` with each message sealed in `user`'s `folder` (by name) and whether
    /// the audit log records its removal.
    pub fn each_sealed(&self, user: &str, folder: &str, mut visit: impl FnMut(Sealed, bool)) -> Result<(), SealError> {
        let sql = "SELECT s.name, s.size, s.sha256, r.name IS NOT NULL FROM sealed s
            LEFT JOIN removed r ON r.user = s.user AND r.folder = s.folder AND r.name = s.name
            WHERE s.user = ?1 AND s.folder = ?2 ORDER BY s.name";
        let mut stmt = self.conn.prepare(sql).map_err(|e| self.err(e))?;
        let mut rows = stmt.query(params![user, folder]).map_err(|e| self.err(e))?;
        while let Some(r) = rows.next().map_err(|e| self.err(e))? {
            let get = |r: &rusqlite::Row<'_>| -> rusqlite::Result<(Sealed, bool)> {
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
}

/// Records the messages `entry` removed.
fn add_removals(tx: &rusqlite::Transaction<'_>, entry: &audit::Entry) -> rusqlite::Result<()> {
    let mut stmt = tx.prepare_cached("INSERT OR IGNORE INTO removed VALUES (?1, ?2, ?3)")?;
    for r in &entry.removed {
        stmt.execute(params![entry.user, r.folder, r.name])?;
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
        let erase = audit::Entry::now("erase", "a", Some("r"), None, vec![removed]);
        index.add(2, "d2", &[Line::Audit(super::super::AuditLine { audit: erase })]).unwrap();
        assert_eq!(index.head().unwrap(), Some((2, "d2".into())));
        assert!(index.is_sealed("a", "INBOX", "1.x").unwrap());
        assert!(!index.is_sealed("a", "Sent", "1.x").unwrap());
        let mut seen = Vec::new();
        index.each_sealed("a", "INBOX", |s, removed| seen.push((s.name, removed))).unwrap();
        assert_eq!(seen, [("1.x".to_string(), false), ("2.x".to_string(), true)]);
        assert_eq!(index.folders().unwrap(), [("a".to_string(), "INBOX".to_string())]);
        index.clear().unwrap();
        assert_eq!(index.head().unwrap(), None);
    }
}
