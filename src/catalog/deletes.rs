//! The queue of archive deletes: an archive no entry uses any more is remembered as a tombstone
//! (so an inventory that still lists it does not bring it back) and queued for DeleteArchive,
//! after a delay during which the delete can still be cancelled.

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
