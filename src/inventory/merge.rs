//! Taking an inventory into the catalog: the parsed archives go into a side table, then are
//! reconciled with the tree in chunks, so a million-archive import never holds the writer for
//! long and never stalls `create` or `rename`.
//!
//! Reconciling follows DESIGN.md §1–2:
//! - archives the catalog already has keep their node, name and inode (names are stable);
//! - archives gone upstream are dropped, but only when they are older than the inventory, so
//!   this mount's newer uploads survive an inventory that predates them;
//! - archives deleted locally (tombstones) do not come back;
//! - new archives get names in a fixed order (path, newest first, archive id), so the same
//!   inventory always gives the same tree: the newest takes the free name, the others get a
//!   `~date` (then `~id`) suffix, directories win over files, and `.jobs`/`.lock` are reserved.

use std::collections::{BTreeSet, HashMap};
use std::io::BufRead;

use rusqlite::{params, Connection};

use super::parse::{self, InventoryArchive};
use super::InventoryError;
use crate::catalog::{self, nodes, vaults, Catalog, CatalogError, Kind};
use crate::{names, timefmt};

/// Rows handed to the writer per transaction while staging.
const STAGE_BATCH: usize = 50_000;
/// New archives placed per transaction while merging. Each commit rewrites every index page it
/// touched, so larger chunks cost less in all (25,000 took a million-archive merge from 11 s to
/// 6 s); a chunk still holds the writer for only about 150 ms, short enough not to stall a
/// `create` or `rename` noticeably.
const MERGE_CHUNK: usize = 25_000;

/// What an import did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ImportReport {
    pub archives: u64,
    pub added: u64,
    pub removed: u64,
    pub inventory_date: Option<String>,
}

struct Staged {
    archive_id: String,
    description: String,
    created_s: i64,
    size: u64,
    tree_hash: String,
    path: String,
    mtime_s: i64,
}

fn stage_row(a: InventoryArchive) -> Staged {
    let (segments, mtime) = names::archive_path(&a.description, &a.archive_id);
    let created_s = timefmt::parse_iso8601(&a.creation_date)
        .map(|(s, _)| s)
        .unwrap_or(0);
    Staged {
        path: segments.join("/"),
        mtime_s: mtime.unwrap_or(created_s),
        archive_id: a.archive_id,
        description: a.description,
        created_s,
        size: a.size,
        tree_hash: a.tree_hash,
    }
}

/// One import at a time per process: they share the side table.
static IMPORTS: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// Parses an inventory (JSON or CSV, detected) and merges it into `vault`.
/// `fallback_date` stands in for the inventory's date when the file does not carry one (CSV).
pub fn import(
    catalog: &Catalog,
    vault: u64,
    reader: impl BufRead,
    fallback_date: Option<String>,
) -> Result<ImportReport, InventoryError> {
    let _one_at_a_time = IMPORTS.lock().unwrap_or_else(|e| e.into_inner());
    catalog.write(clear_side_table)?;
    let mut batch = Vec::with_capacity(STAGE_BATCH);
    let mut archives = 0u64;
    let mut flush_error = None;
    let on_archive = |a: InventoryArchive| -> Result<(), String> {
        batch.push(stage_row(a));
        archives += 1;
        if batch.len() >= STAGE_BATCH {
            let rows = std::mem::replace(&mut batch, Vec::with_capacity(STAGE_BATCH));
            if let Err(e) = stage(catalog, vault, rows) {
                let msg = e.to_string();
                flush_error = Some(e);
                return Err(msg);
            }
        }
        Ok(())
    };
    let started = std::time::Instant::now();
    let parsed = parse::parse_auto(reader, on_archive);
    if let Some(e) = flush_error {
        return Err(e.into());
    }
    let (_, header) = parsed?;
    stage(catalog, vault, batch)?;
    log::debug!("staged {archives} archives in {:?}", started.elapsed());
    let inventory_date = header.inventory_date.or(fallback_date);
    let mut report = merge(catalog, vault, inventory_date.as_deref())?;
    report.archives = archives;
    report.inventory_date = inventory_date;
    Ok(report)
}

fn stage(catalog: &Catalog, vault: u64, rows: Vec<Staged>) -> Result<(), CatalogError> {
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
fn merge(
    catalog: &Catalog,
    vault: u64,
    inventory_date: Option<&str>,
) -> Result<ImportReport, InventoryError> {
    let inventory_s = inventory_date
        .and_then(timefmt::parse_iso8601)
        .map(|(s, _)| s);
    let settled = catalog.write(move |tx| settle_unconfirmed(tx, vault, inventory_s))?;
    if settled > 0 {
        log::info!("settled {settled} archive(s) of uploads whose outcome was unknown");
    }
    let removed = match inventory_s {
        Some(s) => catalog.write(move |tx| {
            let archived = tx
                .prepare_cached(
                    "SELECT 1 FROM nodes WHERE vault = ?1 AND archive_id IS NOT NULL LIMIT 1",
                )?
                .exists([vault as i64])?;
            if !archived {
                return Ok(0);
            }
            // Built after staging, in one sorted pass, rather than kept up row by row.
            tx.execute_batch(
                "CREATE INDEX IF NOT EXISTS inventory_import_by_archive \
                 ON inventory_import(archive_key)",
            )?;
            drop_gone_upstream(tx, vault, s)
        })?,
        // Without a date there is no telling old from new: drop nothing.
        None => 0,
    };
    // Directories first, so that a file and a directory with the same path leave the name to
    // the directory wherever they fall in the order.
    let started = std::time::Instant::now();
    let dir_paths = catalog.read(move |c| new_directories(c, vault))?;
    log::debug!(
        "removed {removed}, found {} directories in {:?}",
        dir_paths.len(),
        started.elapsed()
    );
    let mut dirs: HashMap<String, u64> = HashMap::new();
    let dir_paths: Vec<String> = dir_paths.into_iter().collect();
    for chunk in dir_paths.chunks(MERGE_CHUNK) {
        let chunk = chunk.to_vec();
        dirs = catalog.write(move |tx| {
            for path in &chunk {
                ensure_dirs(tx, vault, path, &mut dirs)?;
            }
            Ok(dirs)
        })?;
    }
    log::debug!("directories made by {:?}", started.elapsed());
    // Then the files, streamed in naming order and placed a chunk per transaction.
    let added = catalog.read(move |c| {
        let mut stmt = c.prepare(&format!(
            "SELECT archive_id, description, created_s, size, tree_hash, path, mtime_s \
             FROM inventory_import i WHERE {NEW_ROW} ORDER BY path, created_s DESC, archive_id"
        ))?;
        let mut rows = stmt.query([vault as i64])?;
        let mut added = 0u64;
        let mut chunk = Vec::with_capacity(MERGE_CHUNK);
        while let Some(r) = rows.next()? {
            chunk.push(Staged {
                archive_id: r.get(0)?,
                description: r.get(1)?,
                created_s: r.get(2)?,
                size: r.get::<_, i64>(3)? as u64,
                tree_hash: r.get(4)?,
                path: r.get(5)?,
                mtime_s: r.get(6)?,
            });
            if chunk.len() == MERGE_CHUNK {
                let rows = std::mem::replace(&mut chunk, Vec::with_capacity(MERGE_CHUNK));
                let (d, n) = place_chunk(catalog, vault, rows, dirs)?;
                dirs = d;
                added += n;
            }
        }
        let (_, n) = place_chunk(catalog, vault, chunk, dirs)?;
        Ok(added + n)
    })?;
    log::debug!("{added} files placed by {:?}", started.elapsed());
    let date = inventory_date.map(str::to_owned);
    catalog.write(move |tx| {
        clear_side_table(tx)?;
        if let Some(d) = &date {
            vaults::set_inventory_date(tx, vault, d)?;
        }
        Ok(())
    })?;
    Ok(ImportReport {
        archives: 0,
        added,
        removed,
        inventory_date: None,
    })
}

/// Empties the side table. Imports never overlap (see [`IMPORTS`]), so the whole table goes:
/// an unqualified DELETE lets SQLite drop the pages instead of visiting every row.
fn clear_side_table(tx: &rusqlite::Transaction<'_>) -> Result<(), CatalogError> {
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

fn place_chunk(
    catalog: &Catalog,
    vault: u64,
    rows: Vec<Staged>,
    mut dirs: HashMap<String, u64>,
) -> Result<(HashMap<String, u64>, u64), CatalogError> {
    catalog.write(move |tx| {
        let mut n = 0u64;
        for row in &rows {
            if place_file(tx, vault, row, &dirs)? {
                n += 1;
            }
        }
        // The map only ever holds directories of this import; keep it for the next chunk.
        dirs.shrink_to_fit();
        Ok((dirs, n))
    })
}

/// The parent directories (relative paths) that new archives need.
fn new_directories(c: &Connection, vault: u64) -> Result<BTreeSet<String>, CatalogError> {
    let mut stmt = c.prepare(&format!(
        "SELECT path FROM inventory_import i WHERE {NEW_ROW}"
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
    tx: &rusqlite::Transaction<'_>,
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
                    crate::fs::files::queue_delete(
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
/// tombstones the inventory confirms.
fn drop_gone_upstream(tx: &Connection, vault: u64, inventory_s: i64) -> Result<u64, CatalogError> {
    let removed = tx.execute(
        "DELETE FROM nodes WHERE vault = ?1 AND kind = 3 AND archive_id IS NOT NULL \
         AND dirty = 0 AND COALESCE(created_s, 0) < ?2 \
         AND NOT EXISTS (SELECT 1 FROM inventory_import i \
                         WHERE i.archive_key = nodes.archive_key \
                         AND i.archive_id = nodes.archive_id AND i.vault = ?1)",
        params![vault as i64, inventory_s],
    )?;
    tx.execute(
        "DELETE FROM tombstones WHERE vault = ?1 AND deleted_s < ?2 \
         AND NOT EXISTS (SELECT 1 FROM inventory_import i \
                         WHERE i.archive_key = tombstones.archive_key \
                         AND i.archive_id = tombstones.archive_id AND i.vault = ?1)",
        params![vault as i64, inventory_s],
    )?;
    Ok(removed as u64)
}

/// The ino of directory `path` (relative to the vault), creating the missing ones.
fn ensure_dirs(
    tx: &Connection,
    vault: u64,
    path: &str,
    dirs: &mut HashMap<String, u64>,
) -> Result<u64, CatalogError> {
    if let Some(&ino) = dirs.get(path) {
        return Ok(ino);
    }
    let (parent, name) = match path.rsplit_once('/') {
        Some((p, n)) => (ensure_dirs(tx, vault, p, dirs)?, n),
        None => (vault, path),
    };
    let ino = match nodes::lookup(tx, parent, name)? {
        Some(n) if n.kind == Kind::Dir => n.ino,
        // A name already shown as a file (or reserved) keeps it; the directory is set apart.
        existing => {
            let name = if existing.is_some() || (parent == vault && names::is_reserved(name)) {
                format!("{name}~dir")
            } else {
                name.to_owned()
            };
            match nodes::lookup(tx, parent, &name)? {
                Some(n) if n.kind == Kind::Dir => n.ino,
                _ => nodes::insert(
                    tx,
                    Kind::Dir,
                    &nodes::NewNode {
                        parent,
                        name: &name,
                        vault,
                        mtime_ns: catalog::now_ns(),
                        ..Default::default()
                    },
                )?,
            }
        }
    };
    dirs.insert(path.to_owned(), ino);
    Ok(ino)
}

/// Places one staged archive as a file; false if it was already there.
fn place_file(
    tx: &Connection,
    vault: u64,
    row: &Staged,
    dirs: &HashMap<String, u64>,
) -> Result<bool, CatalogError> {
    // An inventory may list one archive twice; the first placement wins.
    if nodes::archive_in_use(tx, vault, &row.archive_id)? {
        return Ok(false);
    }
    let (parent, name) = match row.path.rsplit_once('/') {
        Some((p, n)) => (*dirs.get(p).ok_or(CatalogError::NotFound)?, n),
        None => (vault, row.path.as_str()),
    };
    let node = |name| nodes::NewNode {
        parent,
        name,
        vault,
        size: row.size,
        mtime_ns: row.mtime_s.saturating_mul(1_000_000_000),
        archive_id: Some(&row.archive_id),
        tree_hash: Some(&row.tree_hash),
        description: Some(&row.description),
        created_s: Some(row.created_s),
        ..Default::default()
    };
    // Most names are free: try the insert first and let the unique index say otherwise,
    // rather than looking every name up before inserting it.
    if !(parent == vault && names::is_reserved(name)) {
        match nodes::insert(tx, Kind::File, &node(name)) {
            Ok(_) => return Ok(true),
            Err(CatalogError::Exists) => {}
            Err(e) => return Err(e),
        }
    }
    let name = free_name(
        tx,
        parent,
        parent == vault,
        name,
        row.created_s,
        &row.archive_id,
    )?;
    nodes::insert(tx, Kind::File, &node(&name))?;
    Ok(true)
}

/// The name a new archive takes: its own if free, else the collision suffixes in turn.
fn free_name(
    tx: &Connection,
    parent: u64,
    at_vault_root: bool,
    name: &str,
    created_s: i64,
    archive_id: &str,
) -> Result<String, CatalogError> {
    let free =
        |n: &str| -> Result<bool, CatalogError> { Ok(nodes::lookup(tx, parent, n)?.is_none()) };
    if !(at_vault_root && names::is_reserved(name)) && free(name)? {
        return Ok(name.to_owned());
    }
    let by_date = names::suffixed(name, created_s);
    if free(&by_date)? {
        return Ok(by_date);
    }
    let by_id = names::suffixed_with_id(name, created_s, archive_id);
    let mut candidate = by_id.clone();
    let mut n = 2;
    while !free(&candidate)? {
        candidate = format!("{by_id}~{n}");
        n += 1;
    }
    Ok(candidate)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::{vaults, ROOT_INO};

    fn inventory(archives: &[(&str, &str, &str)]) -> String {
        let list: Vec<_> = archives
            .iter()
            .map(|(id, desc, date)| {
                serde_json::json!({"ArchiveId": id, "ArchiveDescription": desc,
                    "CreationDate": date, "Size": 5, "SHA256TreeHash": "00"})
            })
            .collect();
        serde_json::json!({"VaultARN": "arn", "InventoryDate": "2026-01-02T00:00:00Z",
            "ArchiveList": list})
        .to_string()
    }

    fn tree(cat: &Catalog, ino: u64, prefix: &str, out: &mut Vec<String>) {
        let kids = cat.read(|c| nodes::children(c, ino, 0, 10_000)).unwrap();
        for k in kids {
            let p = format!("{prefix}{}", k.name);
            if k.kind.is_dir() {
                out.push(format!("{p}/"));
                tree(cat, k.ino, &format!("{p}/"), out);
            } else {
                out.push(p);
            }
        }
    }

    fn setup() -> (tempfile::TempDir, Catalog, u64) {
        let dir = tempfile::tempdir().unwrap();
        let cat = Catalog::open(dir.path()).unwrap();
        let v = cat
            .write(|tx| vaults::ensure(tx, "v", "present"))
            .unwrap()
            .ino;
        (dir, cat, v)
    }

    fn sorted_tree(cat: &Catalog, v: u64) -> Vec<String> {
        let mut t = Vec::new();
        tree(cat, v, "", &mut t);
        t.sort();
        t
    }

    #[test]
    fn collisions_follow_the_rules() {
        let (_d, cat, v) = setup();
        let inv = inventory(&[
            ("id-old", "a/x", "2020-01-01T00:00:00Z"),
            ("id-new", "a/x", "2021-01-01T00:00:00Z"),
            ("id-file", "a", "2020-01-01T00:00:00Z"),
            ("id-jobs", ".jobs", "2020-01-01T00:00:00Z"),
            ("id-empty", "", "2020-01-01T00:00:00Z"),
        ]);
        let r = import(&cat, v, inv.as_bytes(), None).unwrap();
        assert_eq!((r.archives, r.added), (5, 5));
        assert_eq!(
            sorted_tree(&cat, v),
            vec![
                ".jobs~20200101T000000Z",
                "00undefined/",
                "00undefined/id-empty",
                "a/",
                "a/x",
                "a/x~20200101T000000Z",
                "a~20200101T000000Z",
            ]
        );
        let x = cat.read(|c| nodes::lookup(c, v, "a")).unwrap().unwrap();
        let newest = cat.read(|c| nodes::lookup(c, x.ino, "x")).unwrap().unwrap();
        assert_eq!(newest.archive_id.as_deref(), Some("id-new"));
    }

    #[test]
    fn same_inventory_same_tree_and_refresh_renames_nothing() {
        let archives = [
            ("i1", "dup", "2020-01-01T00:00:00Z"),
            ("i2", "dup", "2020-01-01T00:00:00Z"),
            ("i3", "dup", "2019-01-01T00:00:00Z"),
            ("i4", "d/f", "2020-01-01T00:00:00Z"),
        ];
        let inv = inventory(&archives);
        let (_d1, c1, v1) = setup();
        let (_d2, c2, v2) = setup();
        import(&c1, v1, inv.as_bytes(), None).unwrap();
        import(&c2, v2, inv.as_bytes(), None).unwrap();
        assert_eq!(sorted_tree(&c1, v1), sorted_tree(&c2, v2));

        let before = sorted_tree(&c1, v1);
        let mut more = archives.to_vec();
        more.push(("i5", "dup", "2025-01-01T00:00:00Z"));
        let r = import(&c1, v1, inventory(&more).as_bytes(), None).unwrap();
        assert_eq!(r.added, 1);
        let after = sorted_tree(&c1, v1);
        for name in &before {
            assert!(after.contains(name), "{name} was renamed");
        }
    }

    #[test]
    fn archives_gone_upstream_are_dropped_unless_newer() {
        let (_d, cat, v) = setup();
        import(
            &cat,
            v,
            inventory(&[("old", "f", "2020-01-01T00:00:00Z")]).as_bytes(),
            None,
        )
        .unwrap();
        // An upload of this mount, newer than the next inventory.
        cat.write(move |tx| {
            nodes::insert(
                tx,
                Kind::File,
                &nodes::NewNode {
                    parent: v,
                    name: "mine",
                    vault: v,
                    archive_id: Some("mine-id"),
                    created_s: Some(2_000_000_000),
                    ..Default::default()
                },
            )
        })
        .unwrap();
        let r = import(&cat, v, inventory(&[]).as_bytes(), None).unwrap();
        assert_eq!(r.removed, 1);
        assert_eq!(sorted_tree(&cat, v), vec!["mine"]);
        assert!(cat
            .read(|c| nodes::lookup(c, ROOT_INO, "v"))
            .unwrap()
            .is_some());
    }
}
