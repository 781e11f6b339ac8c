//! The general way of taking an inventory in: the parsed archives are staged in a side table
//! (`inventory_import`), then reconciled with the vault's tree: uploads of unknown outcome are
//! settled, archives gone upstream dropped, and new ones placed (see [`super::place`]).

use std::collections::BTreeSet;
use std::sync::mpsc::Receiver;
use std::time::Instant;

use rusqlite::{params, Connection, Transaction};

use super::place::{self, Dedup, Place, PlaceRow};
use super::sort::Staged;
use super::{ImportError, Settings};
use crate::catalog::changes::Change;
use crate::catalog::{self, nodes, vaults, Catalog, CatalogError, Kind};
use crate::codec::timefmt;

/// Rows handed to the writer per transaction while staging.
pub(super) const STAGE_BATCH: usize = 50_000;

/// Stages the rows in the side table, a batch per transaction. Returns how many archives there
/// were.
pub(super) fn stage_all(
    catalog: &Catalog,
    vault: u64,
    batches: Receiver<Vec<Staged>>,
) -> Result<u64, ImportError> {
    let mut archives = 0u64;
    let mut rows = Vec::with_capacity(STAGE_BATCH);
    for batch in batches {
        for row in batch {
            rows.push(row);
            archives += 1;
            if rows.len() >= STAGE_BATCH {
                stage(catalog, vault, std::mem::take(&mut rows))?;
            }
        }
    }
    stage(catalog, vault, rows)?;
    Ok(archives)
}

/// Whether the general reconciliation would find nothing to reconcile in `vault`: no archive
/// in its tree, no tombstone, no upload of unknown outcome. Then every archive of the inventory
/// is new, and it can be placed in naming order straight from a sort, with no side table.
/// Local-only entries (directories, empty or staged files) do not matter: placing checks every
/// name anyway. An upload whose archive may exist unrecorded does: its archive must not be
/// placed as a new file (see [`not_awaited`]).
pub(super) fn is_fresh(c: &Connection, vault: u64) -> Result<bool, CatalogError> {
    if nodes::has_archives_below(c, vault)? {
        return Ok(false);
    }
    let mut pending = c.prepare_cached(&format!(
        "SELECT EXISTS (SELECT 1 FROM tombstones WHERE vault = ?1) \
             OR EXISTS (SELECT 1 FROM unconfirmed WHERE vault = ?1) \
             OR EXISTS (SELECT 1 FROM uploads u WHERE u.vault = ?1 AND {})",
        archive_may_exist()
    ))?;
    Ok(!pending.query_row([vault as i64], |r| r.get::<_, bool>(0))?)
}

pub(super) fn stage(catalog: &Catalog, vault: u64, rows: Vec<Staged>) -> Result<(), CatalogError> {
    if rows.is_empty() {
        return Ok(());
    }
    catalog.write(move |tx| {
        let mut stmt = tx.prepare_cached(
            "INSERT INTO inventory_import \
             (vault, archive_id, archive_key, description, created_s, size, tree_hash, path, mtime_s) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
        )?;
        for r in &rows {
            stmt.execute(params![
                vault as i64,
                r.archive_id,
                nodes::archive_key(&r.archive_id),
                r.description,
                r.created_s,
                r.size as i64,
                r.tree_hash,
                r.path,
                r.mtime_s
            ])?;
        }
        Ok(())
    })
}

/// Reconciles the staged inventory of `vault` with its tree, then clears the side table.
/// Returns the files added and removed.
pub(super) fn merge(
    catalog: &Catalog,
    vault: u64,
    inventory_date: Option<&str>,
    settings: &Settings,
) -> Result<(u64, u64), ImportError> {
    let inventory_s = inventory_date
        .and_then(timefmt::parse_iso8601)
        .map(|(s, _)| s);
    let settled = catalog.write(move |tx| settle_unconfirmed(tx, vault, inventory_s))?;
    if settled > 0 {
        log::info!("settled {settled} archive(s) of uploads whose outcome was unknown");
    }
    let removed = remove_gone(catalog, vault, inventory_s)?;
    // Directories first, so that a file and a directory with the same path leave the name to
    // the directory wherever they fall in the order.
    let started = Instant::now();
    let dir_paths = catalog.read(move |c| new_directories(c, vault))?;
    log::debug!(
        "removed {removed}, found {} directories in {:?}",
        dir_paths.len(),
        started.elapsed()
    );
    let dirs = place::make_dirs(catalog, vault, dir_paths.into_iter().collect())?;
    // Then the files, streamed in naming order from a read connection.
    let place = Place {
        dirs,
        dedup: Dedup::Catalog,
        bulk: false,
    };
    let added = place::place_stream(catalog, vault, place, settings, |out| {
        if let Err(e) = catalog.read(|c| read_new_rows(c, vault, out)) {
            out(Err(e));
        }
    })?;
    let date = inventory_date.map(str::to_owned);
    catalog.write(move |tx| {
        clear_side_table(tx)?;
        if let Some(d) = &date {
            vaults::set_inventory_date(tx, vault, d)?;
        }
        Ok(())
    })?;
    Ok((added, removed))
}

/// Drops what the inventory dated `inventory_s` shows gone upstream, and tells the kernel.
/// Returns how many files went.
fn remove_gone(
    catalog: &Catalog,
    vault: u64,
    inventory_s: Option<i64>,
) -> Result<u64, CatalogError> {
    let gone = match inventory_s {
        Some(s) => catalog.write(move |tx| {
            if !nodes::has_archives_below(tx, vault)? {
                return Ok(Vec::new());
            }
            // Built after staging, in one sorted pass, rather than kept up row by row.
            tx.execute_batch(
                "CREATE INDEX IF NOT EXISTS inventory_import_by_archive \
                 ON inventory_import(archive_key)",
            )?;
            drop_gone_upstream(tx, vault, s)
        })?,
        // Without a date there is no telling old from new: drop nothing.
        None => Vec::new(),
    };
    let removed = gone.len() as u64;
    // The kernel may hold these names; new ones need no notice (listings are not cached, and
    // a failed lookup is not remembered).
    catalog.changed(
        gone.into_iter()
            .map(|(parent, name)| Change::Entry { parent, name }),
    );
    Ok(removed)
}

/// Hands the staged rows of archives new to `vault` to `out` in naming order, until `out`
/// says to stop.
fn read_new_rows(
    c: &Connection,
    vault: u64,
    out: &mut dyn FnMut(Result<PlaceRow, CatalogError>) -> bool,
) -> Result<(), CatalogError> {
    let mut stmt = c.prepare(&format!(
        "SELECT archive_id, description, created_s, size, tree_hash, path, mtime_s \
         FROM inventory_import i WHERE {NEW_ROW} AND {} \
         ORDER BY path, created_s DESC, archive_id",
        not_awaited()
    ))?;
    let mut rows = stmt.query([vault as i64])?;
    while let Some(r) = rows.next()? {
        let row = Staged {
            archive_id: r.get(0)?,
            description: r.get(1)?,
            created_s: r.get(2)?,
            size: r.get::<_, i64>(3)? as u64,
            tree_hash: r.get(4)?,
            path: r.get(5)?,
            mtime_s: r.get(6)?,
        };
        // The archive may be listed twice, and its first listing placed already.
        if !out(Ok((row, true))) {
            break;
        }
    }
    Ok(())
}

/// Empties the side table. Imports never overlap (see [`super::IMPORTS`]), so the whole table goes:
/// an unqualified DELETE lets SQLite drop the pages instead of visiting every row.
pub(super) fn clear_side_table(tx: &Transaction<'_>) -> Result<(), CatalogError> {
    tx.execute_batch(
        "DELETE FROM inventory_import; DROP INDEX IF EXISTS inventory_import_by_archive;",
    )?;
    Ok(())
}

/// The condition for a staged row whose archive the catalog has never seen (nor deleted).
const NEW_ROW: &str = "vault = ?1 \
    AND NOT EXISTS (SELECT 1 FROM nodes n WHERE n.archive_key = i.archive_key \
                    AND n.archive_id = i.archive_id AND n.vault = ?1) \
    AND NOT EXISTS (SELECT 1 FROM tombstones t WHERE t.vault = ?1 AND t.archive_id = i.archive_id)";

/// The uploads whose archive may exist unrecorded: UploadArchive or Complete sent, or the
/// archive created but not yet on its node.
fn archive_may_exist() -> String {
    use crate::catalog::uploads::UploadState::{Completing, Created, Single};
    format!("u.state IN ('{Single}', '{Completing}', '{Created}')")
}

/// The condition for a staged row that is not the archive of one of this mount's own uploads
/// still being settled. Such an archive is placed by nobody now: the upload records it on its
/// file, or the next inventory settles it as a twin (adopted or deleted, see
/// [`settle_unconfirmed`]). Without this, an inventory taken while an UploadArchive was out (or
/// between its reply and its recording) placed its archive, or the twin a lost reply left, as
/// a new file beside the one that made it: a duplicate nobody would ever delete.
///
/// An upload's archive may exist from the moment its creating call is sent (`single`,
/// `completing`), and is known by id once `created`. Its hash is not known before the reply,
/// so an upload in flight is matched by description and size: a foreign archive that shares
/// both with it only waits for the next inventory. An unconfirmed record committed after this
/// inventory's settling (a reply that came in meanwhile) is matched as settling would.
fn not_awaited() -> String {
    format!(
        "NOT EXISTS (SELECT 1 FROM uploads u WHERE u.vault = ?1 \
             AND (u.archive_id = i.archive_id \
                  OR (u.description = i.description AND u.size = i.size \
                      AND {}))) \
         AND NOT EXISTS (SELECT 1 FROM unconfirmed c WHERE c.vault = ?1 \
             AND c.description = i.description AND c.size = i.size \
             AND c.tree_hash = i.tree_hash)",
        archive_may_exist()
    )
}

/// The parent directories (relative paths) that new archives need.
fn new_directories(c: &Connection, vault: u64) -> Result<BTreeSet<String>, CatalogError> {
    let mut stmt = c.prepare(&format!(
        "SELECT path FROM inventory_import i WHERE {NEW_ROW} AND {}",
        not_awaited()
    ))?;
    let mut rows = stmt.query([vault as i64])?;
    let mut out = BTreeSet::new();
    while let Some(r) = rows.next()? {
        let path: String = r.get(0)?;
        if let Some((parent, _)) = path.rsplit_once('/') {
            if !out.contains(parent) {
                out.insert(parent.to_owned());
            }
        }
    }
    Ok(out)
}

/// Archives of uploads whose outcome was unknown: each match (description, size, tree hash)
/// is adopted by its file if the file has no archive yet, and deleted as a duplicate otherwise.
/// Records older than the inventory are settled either way and go.
fn settle_unconfirmed(
    tx: &Transaction<'_>,
    vault: u64,
    inventory_s: Option<i64>,
) -> Result<u64, CatalogError> {
    let records: Vec<(i64, Option<i64>, String, i64, String)> = {
        let mut s = tx.prepare(
            "SELECT id, ino, description, size, tree_hash FROM unconfirmed WHERE vault = ?1",
        )?;
        let rows = s.query_map([vault as i64], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?))
        })?;
        rows.collect::<Result<_, _>>()?
    };
    let mut settled = 0;
    for (_, ino, description, size, tree_hash) in &records {
        let matches: Vec<(i64, String)> = {
            let mut s = tx.prepare(&format!(
                "SELECT seq, archive_id FROM inventory_import i WHERE {NEW_ROW} \
                 AND description = ?2 AND size = ?3 AND tree_hash = ?4"
            ))?;
            let rows = s.query_map(params![vault as i64, description, size, tree_hash], |r| {
                Ok((r.get(0)?, r.get(1)?))
            })?;
            rows.collect::<Result<_, _>>()?
        };
        for (seq, archive_id) in matches {
            let node = match ino {
                Some(i) => nodes::get(tx, *i as u64)?,
                None => None,
            };
            match node {
                Some(n) if n.archive_id.is_none() => {
                    tx.execute(
                        "UPDATE nodes SET archive_id = ?2, archive_key = ?3, tree_hash = ?4, \
                         description = ?5 WHERE ino = ?1",
                        params![
                            n.ino as i64,
                            archive_id,
                            nodes::archive_key(&archive_id),
                            tree_hash,
                            description
                        ],
                    )?;
                }
                _ => {
                    crate::catalog::deletes::queue_delete(
                        tx,
                        vault,
                        &archive_id,
                        "",
                        catalog::now_ns(),
                        None,
                    )?;
                }
            }
            tx.execute("DELETE FROM inventory_import WHERE seq = ?1", [seq])?;
            settled += 1;
        }
    }
    if let Some(s) = inventory_s {
        tx.execute(
            "DELETE FROM unconfirmed WHERE vault = ?1 AND created_s < ?2",
            params![vault as i64, s],
        )?;
    }
    Ok(settled)
}

/// Removes archived files the inventory no longer lists, if they are older than it, and the
/// tombstones the inventory confirms. Returns the (parent, name) of each file removed.
fn drop_gone_upstream(
    tx: &Connection,
    vault: u64,
    inventory_s: i64,
) -> Result<Vec<(u64, String)>, CatalogError> {
    let removed = {
        let mut stmt = tx.prepare(
            "DELETE FROM nodes WHERE vault = ?1 AND kind = ?3 AND archive_id IS NOT NULL \
             AND dirty = 0 AND COALESCE(created_s, 0) < ?2 \
             AND NOT EXISTS (SELECT 1 FROM inventory_import i \
                             WHERE i.archive_key = nodes.archive_key \
                             AND i.archive_id = nodes.archive_id AND i.vault = ?1) \
             RETURNING parent, name",
        )?;
        let rows = stmt.query_map(params![vault as i64, inventory_s, Kind::File], |r| {
            Ok((r.get::<_, i64>(0)? as u64, r.get::<_, String>(1)?))
        })?;
        rows.collect::<Result<Vec<_>, _>>()?
    };
    tx.execute(
        "DELETE FROM tombstones WHERE vault = ?1 AND deleted_s < ?2 \
         AND NOT EXISTS (SELECT 1 FROM inventory_import i \
                         WHERE i.archive_key = tombstones.archive_key \
                         AND i.archive_id = tombstones.archive_id AND i.vault = ?1)",
        params![vault as i64, inventory_s],
    )?;
    Ok(removed)
}
