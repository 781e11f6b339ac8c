//! The queue of archive deletes: an archive no entry uses any more is remembered as a tombstone
//! (so an inventory that still lists it does not bring it back) and queued for DeleteArchive,
//! after a delay during which the delete can still be cancelled. The write-back queue's
//! delete worker takes due rows from here and records each outcome.

use rusqlite::{params, Connection};

use super::{nodes, CatalogError};

/// Queues the deletion of an archive no node uses any more. With `after_ino`, the delete waits
/// until that node's new content is in Glacier: the replaced version goes only once the
/// replacement is safe.
pub fn queue_delete(
    tx: &Connection,
    vault: u64,
    archive_id: &str,
    path: &str,
    not_before_ns: i64,
    after_ino: Option<u64>,
) -> Result<(), CatalogError> {
    if nodes::archive_in_use(tx, vault, archive_id)? {
        // Another entry (a catalog-only copy, or an endpoint that reuses ids) still needs it.
        return Ok(());
    }
    tx.prepare_cached(
        "INSERT OR IGNORE INTO tombstones (vault, archive_id, archive_key, deleted_s) \
         VALUES (?1, ?2, ?3, ?4)",
    )?
    .execute(params![
        vault as i64,
        archive_id,
        nodes::archive_key(archive_id),
        super::now_s()
    ])?;
    tx.prepare_cached(
        "INSERT INTO deletes (vault, archive_id, path, not_before_ns, after_ino, created_s) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
    )?
    .execute(params![
        vault as i64,
        archive_id,
        path,
        not_before_ns,
        after_ino.map(|i| i as i64),
        super::now_s()
    ])?;
    Ok(())
}

/// An archive id that is in use again (an endpoint that names archives by content handed it
/// back for a new upload): its queued delete and tombstone go.
pub fn unqueue_archive(tx: &Connection, vault: u64, archive_id: &str) -> Result<(), CatalogError> {
    tx.execute(
        "DELETE FROM deletes WHERE vault = ?1 AND archive_id = ?2",
        params![vault as i64, archive_id],
    )?;
    tx.execute(
        "DELETE FROM tombstones WHERE vault = ?1 AND archive_id = ?2",
        params![vault as i64, archive_id],
    )?;
    Ok(())
}

/// One queued delete whose time has come.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DueDelete {
    pub id: i64,
    pub vault_name: String,
    /// The archive to delete; `None` for an abandoned multipart upload (`upload_id`).
    pub archive_id: Option<String>,
    pub upload_id: Option<String>,
    /// The path the archive served, for the log; empty or `None` when none is known.
    pub path: Option<String>,
    /// Failed attempts so far (the backoff grows with them).
    pub attempts: i64,
}

/// Deletes whose delay has passed and whose replacement (if any) is safely uploaded, and whose
/// archive no node has taken up again.
pub fn due(c: &Connection, now_ns: i64) -> Result<Vec<DueDelete>, CatalogError> {
    let mut stmt = c.prepare_cached(
        "SELECT d.id, v.name, d.archive_id, d.upload_id, d.path, d.attempts FROM deletes d \
         JOIN vaults v ON v.ino = d.vault \
         WHERE d.not_before_ns <= ?1 AND (d.after_ino IS NULL OR NOT EXISTS \
             (SELECT 1 FROM nodes n WHERE n.ino = d.after_ino AND n.dirty > 0)) \
         AND (d.archive_id IS NULL OR NOT EXISTS (SELECT 1 FROM nodes n \
             WHERE n.archive_id = d.archive_id AND n.vault = d.vault))",
    )?;
    let rows = stmt.query_map([now_ns], |r| {
        Ok(DueDelete {
            id: r.get(0)?,
            vault_name: r.get(1)?,
            archive_id: r.get(2)?,
            upload_id: r.get(3)?,
            path: r.get(4)?,
            attempts: r.get(5)?,
        })
    })?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// The delete went through (or found nothing left to delete): its row goes.
pub fn done(tx: &Connection, id: i64) -> Result<(), CatalogError> {
    tx.execute("DELETE FROM deletes WHERE id = ?1", [id])?;
    Ok(())
}

/// The delete failed: counted, its message kept for `.jobs`, tried again from `not_before_ns`.
pub fn failed(
    tx: &Connection,
    id: i64,
    message: &str,
    not_before_ns: i64,
) -> Result<(), CatalogError> {
    tx.execute(
        "UPDATE deletes SET attempts = attempts + 1, message = ?2, not_before_ns = ?3 \
         WHERE id = ?1",
        params![id, message, not_before_ns],
    )?;
    Ok(())
}
