//! The upload journal (the `uploads` table) and what the write-back queue asks of the tree:
//! which staged files are due, which were left open by a crash, and how an uploaded archive
//! (or an empty file) is recorded on its node.
//!
//! Each upload's row is written before and after each creating call, so a crash at any
//! instant leaves a row that says what to do next; [`UploadState`] names those points. The
//! queue calls these functions inside `Catalog::read`/`write` closures: no SQL lives in the
//! engine.

use rusqlite::types::{FromSql, FromSqlError, FromSqlResult, ToSql, ToSqlOutput, ValueRef};
use rusqlite::{params, Connection, OptionalExtension, Row};

use super::deletes::{queue_delete, unqueue_archive};
use super::nodes::{self, Kind, Node};
use super::{now_ns, now_s, CatalogError};
use crate::codec::names;

/// Where an upload stands: the last journal entry its row holds. Stored as the same TEXT
/// values the table has always held, so no migration is needed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UploadState {
    /// Frozen and journaled; nothing sent (or a restart is under way).
    Queued,
    /// UploadArchive was about to be sent: the archive may exist, unrecorded.
    Single,
    /// InitiateMultipartUpload was about to be sent: an upload nobody recorded may exist.
    Initiating,
    /// A multipart upload is recorded (`upload_id`): it can be resumed.
    Parts,
    /// CompleteMultipartUpload was about to be sent (`tree_hash` set): repeat it.
    Completing,
    /// The archive exists (`archive_id` set); only recording it on the node is left.
    Created,
}

impl UploadState {
    pub fn as_str(self) -> &'static str {
        match self {
            UploadState::Queued => "queued",
            UploadState::Single => "single",
            UploadState::Initiating => "initiating",
            UploadState::Parts => "parts",
            UploadState::Completing => "completing",
            UploadState::Created => "created",
        }
    }

    fn parse(s: &str) -> Option<UploadState> {
        Some(match s {
            "queued" => UploadState::Queued,
            "single" => UploadState::Single,
            "initiating" => UploadState::Initiating,
            "parts" => UploadState::Parts,
            "completing" => UploadState::Completing,
            "created" => UploadState::Created,
            _ => return None,
        })
    }
}

impl std::fmt::Display for UploadState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A state this build does not know, found in the journal.
#[derive(Debug, thiserror::Error)]
#[error("the uploads journal holds an unknown state {0:?}")]
pub struct UnknownState(String);

impl ToSql for UploadState {
    fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
        Ok(self.as_str().into())
    }
}

impl FromSql for UploadState {
    fn column_result(v: ValueRef<'_>) -> FromSqlResult<Self> {
        let s = v.as_str()?;
        UploadState::parse(s).ok_or_else(|| FromSqlError::Other(Box::new(UnknownState(s.into()))))
    }
}

/// One uploads row, as the journal left it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UploadRow {
    pub ino: u64,
    /// The dirty generation being uploaded.
    pub gen: i64,
    pub vault: u64,
    /// The frozen copy, relative to the cache directory.
    pub snapshot: String,
    pub size: u64,
    pub description: String,
    pub part_size: Option<u64>,
    pub upload_id: Option<String>,
    /// Hex; set once Complete is announced (or the archive exists).
    pub tree_hash: Option<String>,
    pub archive_id: Option<String>,
    pub state: UploadState,
}

const SELECT: &str = "SELECT ino, gen, vault, snapshot, size, description, part_size, \
                      upload_id, tree_hash, archive_id, state FROM uploads";

fn from_row(r: &Row<'_>) -> rusqlite::Result<UploadRow> {
    Ok(UploadRow {
        ino: r.get::<_, i64>(0)? as u64,
        gen: r.get(1)?,
        vault: r.get::<_, i64>(2)? as u64,
        snapshot: r.get(3)?,
        size: r.get::<_, i64>(4)? as u64,
        description: r.get(5)?,
        part_size: r.get::<_, Option<i64>>(6)?.map(|v| v as u64),
        upload_id: r.get(7)?,
        tree_hash: r.get(8)?,
        archive_id: r.get(9)?,
        state: r.get(10)?,
    })
}

/// The journal row of `ino`'s upload, if one is open.
pub fn get(c: &Connection, ino: u64) -> Result<Option<UploadRow>, CatalogError> {
    let mut stmt = c.prepare_cached(&format!("{SELECT} WHERE ino = ?1"))?;
    Ok(stmt.query_row([ino as i64], from_row).optional()?)
}

/// Every open journal row.
pub fn all(c: &Connection) -> Result<Vec<UploadRow>, CatalogError> {
    let mut stmt = c.prepare(SELECT)?;
    let rows = stmt.query_map([], from_row)?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// Opens (or replaces) the journal row of a freshly frozen file, in state `queued`: the row's
/// own state, ids and hash are ignored.
pub fn begin(tx: &Connection, row: &UploadRow, mtime_ns: i64) -> Result<(), CatalogError> {
    tx.execute(
        "INSERT OR REPLACE INTO uploads (ino, gen, vault, snapshot, size, description, \
         mtime_ns, state, started_s) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
        params![
            row.ino as i64,
            row.gen,
            row.vault as i64,
            row.snapshot,
            row.size as i64,
            row.description,
            mtime_ns,
            UploadState::Queued,
            now_s()
        ],
    )?;
    Ok(())
}

/// Closes `ino`'s journal row.
pub fn remove(tx: &Connection, ino: u64) -> Result<(), CatalogError> {
    tx.execute("DELETE FROM uploads WHERE ino = ?1", [ino as i64])?;
    Ok(())
}

/// Bytes sent so far, per inode, for `glacierfs status`.
pub fn set_progress(tx: &Connection, progress: &[(u64, u64)]) -> Result<(), CatalogError> {
    let mut stmt = tx.prepare_cached("UPDATE uploads SET bytes_done = ?2 WHERE ino = ?1")?;
    for (ino, done) in progress {
        stmt.execute(params![*ino as i64, *done as i64])?;
    }
    Ok(())
}

/// Why the last attempt failed, for `.jobs`; counts the attempt.
pub fn record_failure(tx: &Connection, ino: u64, message: &str) -> Result<(), CatalogError> {
    tx.execute(
        "UPDATE uploads SET message = ?2, attempts = attempts + 1 WHERE ino = ?1",
        params![ino as i64, message],
    )?;
    Ok(())
}

/// Journal: about to send UploadArchive.
pub fn before_single(tx: &Connection, ino: u64) -> Result<(), CatalogError> {
    tx.execute(
        "UPDATE uploads SET state = ?2 WHERE ino = ?1",
        params![ino as i64, UploadState::Single],
    )?;
    Ok(())
}

/// Journal: about to send InitiateMultipartUpload with this part size.
pub fn before_initiate(tx: &Connection, ino: u64, part_size: u64) -> Result<(), CatalogError> {
    tx.execute(
        "UPDATE uploads SET state = ?2, part_size = ?3 WHERE ino = ?1",
        params![ino as i64, UploadState::Initiating, part_size as i64],
    )?;
    Ok(())
}

/// Journal: Glacier initiated the multipart upload; from now on it can be resumed.
pub fn initiated(
    tx: &Connection,
    ino: u64,
    upload_id: &str,
    part_size: u64,
) -> Result<(), CatalogError> {
    tx.execute(
        "UPDATE uploads SET state = ?2, upload_id = ?3, part_size = ?4 WHERE ino = ?1",
        params![ino as i64, UploadState::Parts, upload_id, part_size as i64],
    )?;
    Ok(())
}

/// Journal: about to send CompleteMultipartUpload with this (hex) tree hash.
pub fn before_complete(
    tx: &Connection,
    ino: u64,
    upload_id: &str,
    tree_hash: &str,
) -> Result<(), CatalogError> {
    tx.execute(
        "UPDATE uploads SET state = ?2, upload_id = ?3, tree_hash = ?4 WHERE ino = ?1",
        params![ino as i64, UploadState::Completing, upload_id, tree_hash],
    )?;
    Ok(())
}

/// Journal: the archive exists.
pub fn created(
    tx: &Connection,
    ino: u64,
    archive_id: &str,
    tree_hash: &str,
) -> Result<(), CatalogError> {
    tx.execute(
        "UPDATE uploads SET state = ?2, archive_id = ?3, tree_hash = ?4 WHERE ino = ?1",
        params![ino as i64, UploadState::Created, archive_id, tree_hash],
    )?;
    Ok(())
}

/// Journal: the recorded multipart upload is gone or unusable; starting over.
pub fn restarted(tx: &Connection, ino: u64) -> Result<(), CatalogError> {
    tx.execute(
        "UPDATE uploads SET state = ?2, upload_id = NULL WHERE ino = ?1",
        params![ino as i64, UploadState::Queued],
    )?;
    Ok(())
}

/// An upload whose outcome is unknown (an UploadArchive whose reply was lost, a Complete too
/// late to repeat) may have made an archive: the next inventory settles it by description,
/// size and hash. The upload itself starts over.
pub fn mark_unconfirmed(
    tx: &Connection,
    row: &UploadRow,
    hash_hex: &str,
) -> Result<(), CatalogError> {
    insert_unconfirmed(tx, row, hash_hex)?;
    restarted(tx, row.ino)
}

fn insert_unconfirmed(
    tx: &Connection,
    row: &UploadRow,
    hash_hex: &str,
) -> Result<(), CatalogError> {
    tx.execute(
        "INSERT INTO unconfirmed (vault, ino, description, size, tree_hash, created_s) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        params![
            row.vault as i64,
            row.ino as i64,
            row.description,
            row.size as i64,
            hash_hex,
            now_s()
        ],
    )?;
    Ok(())
}

/// Puts the uploaded archive on its node and closes the journal row; the archive it replaces
/// is queued for deletion (`delete_at`). Returns whether the node is now clean.
pub fn record_archive(
    tx: &Connection,
    row: &UploadRow,
    archive_id: &str,
    hash_hex: &str,
    delete_at: i64,
) -> Result<bool, CatalogError> {
    remove(tx, row.ino)?;
    if row.part_size.is_none() {
        // UploadArchive is not idempotent: an attempt whose reply was lost (and retried) may
        // have left a twin. The next inventory finds it by description, size and hash.
        insert_unconfirmed(tx, row, hash_hex)?;
    }
    // An endpoint that names archives by content may hand back an id already queued for
    // deletion (another file's old version): it is in use again.
    unqueue_archive(tx, row.vault, archive_id)?;
    let Some(node) = nodes::get(tx, row.ino)? else {
        // Unlinked while it was uploading: the new archive has no one left to serve.
        queue_delete(tx, row.vault, archive_id, "", delete_at, None)?;
        return Ok(true);
    };
    let old = node.archive_id.clone();
    // Renamed while it was going up: the description names the old path, so the file goes up
    // once more under its new name, and this archive is replaced like any older version.
    let path_now = nodes::vault_relative_path(tx, row.ino)?;
    let renamed = names::decode(&row.description).path != path_now;
    let dirty_after = if renamed {
        now_ns()
    } else if node.dirty == row.gen {
        0
    } else {
        node.dirty
    };
    tx.execute(
        "UPDATE nodes SET archive_id = ?2, archive_key = ?3, tree_hash = ?4, description = ?5, \
         created_s = ?6, local = 1, dirty = ?7, read_ns = ?6 * 1000000000, \
         size = CASE WHEN dirty = ?9 THEN ?10 ELSE size END, \
         closed_ns = CASE WHEN ?8 THEN ?6 * 1000000000 ELSE closed_ns END WHERE ino = ?1",
        params![
            row.ino as i64,
            archive_id,
            nodes::archive_key(archive_id),
            hash_hex,
            row.description,
            now_s(),
            dirty_after,
            renamed,
            row.gen,
            row.size as i64
        ],
    )?;
    if let Some(old) = old.filter(|o| o != archive_id) {
        queue_delete(tx, row.vault, &old, &path_now, delete_at, None)?;
    }
    Ok(dirty_after == 0)
}

/// An empty staged file is no archive: it lives in the catalog only. Its staged generation is
/// settled (if still `node.dirty`) and the archive it had, if any, queued for deletion.
pub fn record_empty(tx: &Connection, node: &Node, delete_at: i64) -> Result<(), CatalogError> {
    let path = nodes::vault_relative_path(tx, node.ino)?;
    tx.execute(
        "UPDATE nodes SET archive_id = NULL, archive_key = NULL, tree_hash = NULL, \
         description = NULL, dirty = 0, size = 0 WHERE ino = ?1 AND dirty = ?2",
        params![node.ino as i64, node.dirty],
    )?;
    if let Some(old) = &node.archive_id {
        queue_delete(tx, node.vault, old, &path, delete_at, None)?;
    }
    Ok(())
}

/// A staged file due for upload: its inode and the generation staged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Due {
    pub ino: u64,
    pub gen: i64,
}

/// The staged files closed by ?1, read by their close time: the queue asks at every close, so
/// only the files that are due may be read, however many are staged.
const DUE: &str = "SELECT ino, dirty FROM nodes INDEXED BY nodes_due WHERE dirty > 0 \
                   AND kind = ?2 AND closed_ns IS NOT NULL AND closed_ns <= ?1";

/// Staged files closed at or before `cutoff_ns`, plus those of `forced` that are staged at all
/// (closed or not: the caller skips files still open for writing).
pub fn due(c: &Connection, cutoff_ns: i64, forced: &[u64]) -> Result<Vec<Due>, CatalogError> {
    let mut out = Vec::new();
    let mut stmt = c.prepare_cached(DUE)?;
    let rows = stmt.query_map(params![cutoff_ns, Kind::File], |r| {
        Ok(Due {
            ino: r.get::<_, i64>(0)? as u64,
            gen: r.get(1)?,
        })
    })?;
    for r in rows {
        out.push(r?);
    }
    let seen: std::collections::HashSet<u64> = out.iter().map(|d| d.ino).collect();
    let mut one =
        c.prepare_cached("SELECT dirty FROM nodes WHERE ino = ?1 AND dirty > 0 AND kind = ?2")?;
    for ino in forced.iter().filter(|i| !seen.contains(i)) {
        let gen = one
            .query_row(params![*ino as i64, Kind::File], |r| r.get(0))
            .optional()?;
        if let Some(gen) = gen {
            out.push(Due { ino: *ino, gen });
        }
    }
    Ok(out)
}

/// Staged files whose close was never recorded: open for writing when the last run stopped
/// (or still open now; the caller tells them apart).
pub fn unclosed(c: &Connection) -> Result<Vec<u64>, CatalogError> {
    let mut s =
        c.prepare("SELECT ino FROM nodes WHERE dirty > 0 AND kind = ?1 AND closed_ns IS NULL")?;
    let rows = s.query_map([Kind::File], |r| r.get::<_, i64>(0))?;
    Ok(rows
        .map(|r| r.map(|i| i as u64))
        .collect::<Result<_, _>>()?)
}

/// Takes files as closed now with the given sizes (from their data files), unless a close was
/// recorded meanwhile.
pub fn close_unclosed(tx: &Connection, sizes: &[(u64, u64)]) -> Result<(), CatalogError> {
    let mut stmt = tx.prepare(
        "UPDATE nodes SET size = ?2, closed_ns = ?3, local = 1 WHERE ino = ?1 AND closed_ns IS NULL",
    )?;
    for (ino, len) in sizes {
        stmt.execute(params![*ino as i64, *len as i64, now_ns()])?;
    }
    Ok(())
}

/// The multipart uploads the journal knows in `vault`: (upload id if recorded, description).
pub fn known_in_vault(
    c: &Connection,
    vault: u64,
) -> Result<Vec<(Option<String>, String)>, CatalogError> {
    let mut s = c.prepare("SELECT upload_id, description FROM uploads WHERE vault = ?1")?;
    let rows = s.query_map([vault as i64], |r| Ok((r.get(0)?, r.get(1)?)))?;
    Ok(rows.collect::<Result<_, _>>()?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::{vaults, Catalog};

    #[test]
    fn states_are_stored_as_their_old_text() {
        let dir = tempfile::tempdir().unwrap();
        let cat = Catalog::open(dir.path()).unwrap();
        let row = UploadRow {
            ino: 42,
            gen: 7,
            vault: 2,
            snapshot: "snapshots/42-7".into(),
            size: 10,
            description: "d".into(),
            part_size: None,
            upload_id: None,
            tree_hash: None,
            archive_id: None,
            state: UploadState::Queued,
        };
        let r = row.clone();
        cat.write(move |tx| {
            begin(tx, &r, 1)?;
            before_initiate(tx, 42, 1 << 20)?;
            initiated(tx, 42, "up-1", 1 << 20)?;
            before_complete(tx, 42, "up-1", "abcd")
        })
        .unwrap();
        let text: String = cat
            .read(|c| Ok(c.query_row("SELECT state FROM uploads", [], |r| r.get(0))?))
            .unwrap();
        assert_eq!(text, "completing");
        let got = cat.read(|c| get(c, 42)).unwrap().unwrap();
        assert_eq!(got.state, UploadState::Completing);
        assert_eq!(got.upload_id.as_deref(), Some("up-1"));
        assert_eq!(got.part_size, Some(1 << 20));
        cat.write(|tx| restarted(tx, 42)).unwrap();
        let got = cat.read(|c| get(c, 42)).unwrap().unwrap();
        assert_eq!((got.state, got.upload_id), (UploadState::Queued, None));
        // A state no build wrote is an error, not a silent guess.
        cat.write(|tx| {
            tx.execute("UPDATE uploads SET state = 'bogus'", [])?;
            Ok(())
        })
        .unwrap();
        assert!(cat.read(|c| get(c, 42)).is_err());
    }

    #[test]
    fn only_closed_staged_files_are_due_unless_forced() {
        let dir = tempfile::tempdir().unwrap();
        let cat = Catalog::open(dir.path()).unwrap();
        let (closed, open) = cat
            .write(|tx| {
                let v = vaults::ensure(tx, "v", "present")?.ino;
                let file = |name: &str| {
                    nodes::insert(
                        tx,
                        Kind::File,
                        &nodes::NewNode {
                            parent: v,
                            name,
                            vault: v,
                            mtime_ns: 1,
                            ..Default::default()
                        },
                    )
                };
                let (a, b) = (file("a")?, file("b")?);
                tx.execute(
                    "UPDATE nodes SET dirty = 5, closed_ns = 10 WHERE ino = ?1",
                    [a as i64],
                )?;
                tx.execute("UPDATE nodes SET dirty = 6 WHERE ino = ?1", [b as i64])?;
                Ok((a, b))
            })
            .unwrap();
        let due_now = cat.read(|c| due(c, 10, &[])).unwrap();
        assert_eq!(
            due_now,
            vec![Due {
                ino: closed,
                gen: 5
            }]
        );
        assert_eq!(cat.read(|c| due(c, 9, &[])).unwrap(), vec![]);
        let forced = cat.read(move |c| due(c, 9, &[open])).unwrap();
        assert_eq!(forced, vec![Due { ino: open, gen: 6 }]);
        assert_eq!(cat.read(unclosed).unwrap(), vec![open]);
        cat.write(move |tx| close_unclosed(tx, &[(open, 3)]))
            .unwrap();
        assert_eq!(cat.read(unclosed).unwrap(), Vec::<u64>::new());
    }

    #[test]
    fn the_due_query_reads_only_files_closed_by_the_cutoff() {
        let dir = tempfile::tempdir().unwrap();
        let cat = Catalog::open(dir.path()).unwrap();
        let plan: Vec<String> = cat
            .read(|c| {
                let mut s = c.prepare(&format!("EXPLAIN QUERY PLAN {DUE}"))?;
                let rows = s.query_map(params![0i64, Kind::File], |r| r.get::<_, String>(3))?;
                Ok(rows.collect::<Result<_, _>>()?)
            })
            .unwrap();
        assert!(
            plan.iter()
                .any(|p| p.contains("nodes_due") && p.contains("closed_ns<?")),
            "{plan:?}"
        );
    }
}
