//! Namespace snapshots in the catalog: reading a vault's tree as snapshot entries (the one
//! place that does), the `snapshots` table (the archives that carry each vault's tree, the
//! upload journal of those this catalog takes, a restore's retrieval), and applying a
//! retrieved snapshot to the tree in one transaction.
//!
//! The rules of an apply (SEMANTICS.md, "Snapshots and restore"): archives are matched by id,
//! so a renamed archive gets its name back wherever its description put it; an entry whose
//! archive the vault no longer has is dropped; a node changed here after the snapshot was taken
//! (its ctime is newer) keeps its state; and applying the same snapshot twice changes nothing,
//! since the entries' own ctimes are written back with them.

use std::collections::{HashMap, HashSet};

use rusqlite::{params, Connection, OptionalExtension, Row};
use sha2::{Digest, Sha256};

use super::{deletes, nodes, CatalogError, Kind};
use crate::codec::snapshot::{Entry, EntryKind, Snapshot};

/// Snapshots younger than this are never deleted: Glacier charges for deleting an archive
/// before it is 90 days old.
pub const KEEP_S: i64 = 90 * 86_400;

/// One row of the `snapshots` table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapshotRow {
    pub id: i64,
    pub vault: u64,
    pub description: String,
    pub taken_s: i64,
    /// `taken` by this catalog, or `listed` in an inventory.
    pub origin: String,
    /// `uploading`, `confirmed`, `deleting` or `gone`.
    pub state: String,
    /// While uploading: `single`, `initiating`, `parts` or `completing`.
    pub step: Option<String>,
    pub content: Option<String>,
    pub file: Option<String>,
    pub size: u64,
    pub tree_hash: Option<String>,
    pub archive_id: Option<String>,
    pub upload_id: Option<String>,
    pub part_size: Option<u64>,
    pub message: Option<String>,
    /// `requested`, `retrieving`, `retrieved` (downloaded before a rebuild, to apply once the
    /// inventory is in), `applied` or `failed`.
    pub restore: Option<String>,
    pub tier: Option<String>,
    pub job_id: Option<String>,
    pub verified: u64,
    pub leaves: Vec<u8>,
    pub applied_s: Option<i64>,
}

const COLUMNS: &str = "id, vault, description, taken_s, origin, state, step, content, file, \
                       size, tree_hash, archive_id, upload_id, part_size, message, restore, \
                       tier, job_id, verified, leaves, applied_s";

fn from_row(r: &Row<'_>) -> rusqlite::Result<SnapshotRow> {
    Ok(SnapshotRow {
        id: r.get(0)?,
        vault: r.get::<_, i64>(1)? as u64,
        description: r.get(2)?,
        taken_s: r.get(3)?,
        origin: r.get(4)?,
        state: r.get(5)?,
        step: r.get(6)?,
        content: r.get(7)?,
        file: r.get(8)?,
        size: r.get::<_, i64>(9)? as u64,
        tree_hash: r.get(10)?,
        archive_id: r.get(11)?,
        upload_id: r.get(12)?,
        part_size: r.get::<_, Option<i64>>(13)?.map(|p| p as u64),
        message: r.get(14)?,
        restore: r.get(15)?,
        tier: r.get(16)?,
        job_id: r.get(17)?,
        verified: r.get::<_, i64>(18)? as u64,
        leaves: r.get(19)?,
        applied_s: r.get(20)?,
    })
}

fn select(
    conn: &Connection,
    filter: &str,
    args: impl rusqlite::Params,
) -> Result<Vec<SnapshotRow>, CatalogError> {
    let mut stmt = conn.prepare_cached(&format!("SELECT {COLUMNS} FROM snapshots {filter}"))?;
    let rows = stmt.query_map(args, from_row)?;
    Ok(rows.collect::<Result<_, _>>()?)
}

// ---------------------------------------------------------------------------------------------
// Reading the tree

/// The rows of a vault's entries, in inode order, as [`vault_entries`] and [`tree_digest`] read
/// them.
const ENTRY_ROWS: &str = "SELECT ino, parent, name, kind, mode, uid, gid, mtime_ns, ctime_ns, \
    size, archive_id, tree_hash, target, rdev, atime_ns FROM nodes \
    WHERE vault = ?1 AND ino != ?1 ORDER BY ino";

/// Every entry below `vault` (directories, files and, once joined, symlinks and special
/// files), parents before children, with paths relative to the vault; and the vault's change
/// mark, the newest ctime among them. The one function that reads nodes for a snapshot.
pub fn vault_entries(conn: &Connection, vault: u64) -> Result<(Vec<Entry>, i64), CatalogError> {
    let mut stmt = conn.prepare_cached(ENTRY_ROWS)?;
    struct Raw {
        ino: u64,
        parent: u64,
        name: String,
        entry: Entry,
    }
    let rows = stmt.query_map([vault as i64], |r| {
        let kind: Kind = r.get(3)?;
        let kind = match kind {
            Kind::File => EntryKind::File,
            Kind::Symlink => EntryKind::Symlink,
            Kind::Special => EntryKind::Special,
            Kind::Root | Kind::Vault | Kind::Dir => EntryKind::Dir,
        };
        Ok(Raw {
            ino: r.get::<_, i64>(0)? as u64,
            parent: r.get::<_, i64>(1)? as u64,
            name: r.get(2)?,
            entry: Entry {
                path: String::new(),
                kind,
                mode: r.get(4)?,
                uid: r.get(5)?,
                gid: r.get(6)?,
                mtime_ns: r.get(7)?,
                ctime_ns: r.get(8)?,
                atime_ns: r.get(14)?,
                size: r.get::<_, i64>(9)? as u64,
                archive_id: r.get(10)?,
                tree_hash: r.get(11)?,
                target: r.get(12)?,
                rdev: r.get::<_, Option<i64>>(13)?.map(|d| d as u64),
            },
        })
    })?;
    let raws: Vec<Raw> = rows.collect::<Result<_, _>>()?;
    let names: HashMap<u64, (u64, &str)> = raws
        .iter()
        .map(|r| (r.ino, (r.parent, r.name.as_str())))
        .collect();
    let mut out = Vec::with_capacity(raws.len());
    let mut change = 0;
    for raw in &raws {
        let mut parts = vec![raw.name.as_str()];
        let mut at = raw.parent;
        // The vault is not among the rows, so the walk stops there; the bound guards against
        // a damaged catalog with a loop.
        while let Some((parent, name)) = names.get(&at) {
            parts.push(name);
            at = *parent;
            if parts.len() > names.len() {
                break;
            }
        }
        parts.reverse();
        change = change.max(raw.entry.ctime_ns);
        out.push(Entry {
            path: parts.join("/"),
            ..raw.entry.clone()
        });
    }
    // Parents before children: a parent's path is a prefix, so fewer segments sort first.
    out.sort_by(|a, b| {
        let depth = |e: &Entry| e.path.matches('/').count();
        depth(a).cmp(&depth(b)).then_with(|| a.path.cmp(&b.path))
    });
    Ok((out, change))
}

/// Whether `vault` holds any entry (a snapshot of nothing is never due).
pub fn holds_entries(conn: &Connection, vault: u64) -> Result<bool, CatalogError> {
    let mut stmt =
        conn.prepare_cached("SELECT EXISTS (SELECT 1 FROM nodes WHERE vault = ?1 AND ino != ?1)")?;
    Ok(stmt.query_row([vault as i64], |r| r.get(0))?)
}

/// A digest of `vault`'s tree, to tell whether it changed since the last snapshot: every row
/// a snapshot carries, in inode order, hashed as it is read, so a vault of millions of entries
/// costs one pass and no memory (the entries with their paths would take hundreds of MiB). The
/// rows carry each entry's parent and name rather than its path: a rename changes the row of
/// what moved, which is enough to tell a change. The ctimes are left out: they move on a no-op
/// touch, and the fields they guard are in it.
pub fn tree_digest(conn: &Connection, vault: u64) -> Result<String, CatalogError> {
    let mut stmt = conn.prepare_cached(ENTRY_ROWS)?;
    let mut rows = stmt.query([vault as i64])?;
    let mut h = Sha256::new();
    let opt = |v: Option<i64>| {
        v.map_or([0xff; 9], |v| {
            let mut b = [1; 9];
            b[1..].copy_from_slice(&v.to_le_bytes());
            b
        })
    };
    while let Some(r) = rows.next()? {
        for i in [0, 1] {
            h.update(r.get::<_, i64>(i)?.to_le_bytes());
        }
        h.update(
            r.get_ref(2)?
                .as_str()
                .map_err(rusqlite::Error::from)?
                .as_bytes(),
        );
        h.update([0]);
        // Kind, mode, owner, mtime, atime and size; the ctime (8) and the tree hash (11,
        // which goes with the archive id) are left out.
        for i in [3, 4, 5, 6, 7, 14, 9] {
            h.update(opt(r.get(i)?));
        }
        h.update(
            r.get::<_, Option<String>>(10)?
                .as_deref()
                .unwrap_or("-")
                .as_bytes(),
        );
        h.update([0]);
        h.update(r.get::<_, Option<Vec<u8>>>(12)?.as_deref().unwrap_or(b"-"));
        h.update([0]);
        h.update(opt(r.get(13)?));
    }
    Ok(hex::encode(h.finalize()))
}

// ---------------------------------------------------------------------------------------------
// Taking snapshots: the upload journal

/// Records a snapshot about to be uploaded; returns its row id.
pub fn begin(
    tx: &Connection,
    vault: u64,
    description: &str,
    taken_s: i64,
    content: &str,
    file: &str,
    size: u64,
) -> Result<i64, CatalogError> {
    tx.execute(
        "INSERT INTO snapshots (vault, description, taken_s, origin, state, content, file, size) \
         VALUES (?1, ?2, ?3, 'taken', 'uploading', ?4, ?5, ?6)",
        params![
            vault as i64,
            description,
            taken_s,
            content,
            file,
            size as i64
        ],
    )?;
    Ok(tx.last_insert_rowid())
}

/// Where an upload stands: the step about to be taken, and what it knows.
pub fn set_step(
    tx: &Connection,
    id: i64,
    step: &str,
    upload_id: Option<&str>,
    part_size: Option<u64>,
) -> Result<(), CatalogError> {
    tx.execute(
        "UPDATE snapshots SET step = ?2, upload_id = COALESCE(?3, upload_id), \
         part_size = COALESCE(?4, part_size) WHERE id = ?1",
        params![id, step, upload_id, part_size.map(|p| p as i64)],
    )?;
    Ok(())
}

/// A multipart upload Glacier no longer has: the next attempt starts from scratch.
pub fn restart(tx: &Connection, id: i64) -> Result<(), CatalogError> {
    tx.execute(
        "UPDATE snapshots SET step = NULL, upload_id = NULL, part_size = NULL WHERE id = ?1",
        [id],
    )?;
    Ok(())
}

/// The archive exists: the snapshot is confirmed.
pub fn created(
    tx: &Connection,
    id: i64,
    archive_id: &str,
    tree_hash: &str,
) -> Result<(), CatalogError> {
    tx.execute(
        "UPDATE snapshots SET state = 'confirmed', step = NULL, archive_id = ?2, tree_hash = ?3, \
         message = NULL WHERE id = ?1",
        params![id, archive_id, tree_hash],
    )?;
    Ok(())
}

/// Why the last attempt of an upload failed, for `.jobs`.
pub fn set_message(tx: &Connection, id: i64, message: &str) -> Result<(), CatalogError> {
    tx.execute(
        "UPDATE snapshots SET message = ?2 WHERE id = ?1",
        params![id, message],
    )?;
    Ok(())
}

/// An upload given up for good (its vault is gone, the file cannot be read): forgotten.
pub fn abandon(tx: &Connection, id: i64) -> Result<(), CatalogError> {
    tx.execute(
        "UPDATE snapshots SET state = 'gone', step = NULL WHERE id = ?1",
        [id],
    )?;
    Ok(())
}

/// The snapshots being uploaded, oldest first: what a restart resumes.
pub fn uploading(conn: &Connection) -> Result<Vec<SnapshotRow>, CatalogError> {
    select(conn, "WHERE state = 'uploading' ORDER BY id", [])
}

/// The newest snapshot this catalog took of `vault` that is not gone: what tells whether the
/// tree changed since, and when the next one is due.
pub fn last_taken(conn: &Connection, vault: u64) -> Result<Option<SnapshotRow>, CatalogError> {
    Ok(select(
        conn,
        "WHERE vault = ?1 AND origin = 'taken' AND state IN ('uploading', 'confirmed') \
         ORDER BY taken_s DESC, id DESC LIMIT 1",
        [vault as i64],
    )?
    .pop())
}

/// The newest confirmed snapshot of `vault`, taken here or listed by an inventory.
pub fn newest(conn: &Connection, vault: u64) -> Result<Option<SnapshotRow>, CatalogError> {
    Ok(select(
        conn,
        "WHERE vault = ?1 AND state = 'confirmed' AND archive_id IS NOT NULL \
         ORDER BY taken_s DESC, id DESC LIMIT 1",
        [vault as i64],
    )?
    .pop())
}

/// Every snapshot row, newest first (for `.jobs` and `status`).
pub fn all(conn: &Connection) -> Result<Vec<SnapshotRow>, CatalogError> {
    select(conn, "ORDER BY taken_s DESC, id DESC", [])
}

/// Whether `vault` holds a snapshot this catalog has no history for: the inventory listed one,
/// and this catalog neither took one nor applied one. The mount says so, with the command that
/// restores the tree.
pub fn has_no_history(conn: &Connection, vault: u64) -> Result<bool, CatalogError> {
    let mut stmt = conn.prepare_cached(
        "SELECT EXISTS (SELECT 1 FROM snapshots WHERE vault = ?1 AND origin = 'listed' \
             AND state = 'confirmed') \
         AND NOT EXISTS (SELECT 1 FROM snapshots WHERE vault = ?1 \
             AND (origin = 'taken' OR restore IS NOT NULL))",
    )?;
    Ok(stmt.query_row([vault as i64], |r| r.get::<_, bool>(0))?)
}

/// Queues the deletion of `vault`'s snapshots older than [`KEEP_S`] at `now_s`, except the
/// newest confirmed one, which is always kept. Returns how many were queued.
pub fn expire(tx: &Connection, vault: u64, now_s: i64) -> Result<usize, CatalogError> {
    let keep = newest(tx, vault)?.map(|r| r.id);
    let old = select(
        tx,
        "WHERE vault = ?1 AND state = 'confirmed' AND archive_id IS NOT NULL AND taken_s < ?2",
        params![vault as i64, now_s - KEEP_S],
    )?;
    let mut queued = 0;
    for row in old.into_iter().filter(|r| Some(r.id) != keep) {
        if let Some(archive_id) = &row.archive_id {
            deletes::queue_delete(tx, vault, archive_id, &row.description, 0, None)?;
            tx.execute(
                "UPDATE snapshots SET state = 'deleting' WHERE id = ?1",
                [row.id],
            )?;
            queued += 1;
        }
    }
    Ok(queued)
}

// ---------------------------------------------------------------------------------------------
// What inventories say

/// A snapshot archive an inventory lists.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListedSnapshot {
    pub archive_id: String,
    pub description: String,
    pub size: u64,
    pub tree_hash: String,
    pub taken_s: i64,
}

/// Takes in the snapshot archives of one inventory of `vault` (never files). A known archive
/// is confirmed; an upload whose reply was lost is adopted; a second archive with the
/// description of one already confirmed (a single upload sent again after a crash) is a twin
/// and deleted; any other is recorded as `listed`. Confirmed snapshots the inventory no longer
/// lists, older than it, are gone.
pub fn take_listed(
    tx: &Connection,
    vault: u64,
    listed: &[ListedSnapshot],
    inventory_s: Option<i64>,
) -> Result<(), CatalogError> {
    let before = select(tx, "WHERE vault = ?1", [vault as i64])?;
    let tombstoned = |id: &str| -> Result<bool, CatalogError> {
        let mut s = tx.prepare_cached(
            "SELECT 1 FROM tombstones WHERE vault = ?1 AND archive_key = ?2 AND archive_id = ?3",
        )?;
        Ok(s.exists(params![vault as i64, nodes::archive_key(id), id])?)
    };
    for l in listed {
        // Read afresh: an archive adopted a moment ago makes the next with its description a
        // twin.
        let rows = select(tx, "WHERE vault = ?1", [vault as i64])?;
        if rows
            .iter()
            .any(|r| r.archive_id.as_deref() == Some(&l.archive_id))
            || tombstoned(&l.archive_id)?
        {
            continue;
        }
        let same = rows.iter().find(|r| r.description == l.description);
        match same {
            Some(r) if r.archive_id.is_none() && r.state == "uploading" => {
                created(tx, r.id, &l.archive_id, &l.tree_hash)?;
            }
            Some(r) if r.archive_id.is_some() => {
                deletes::queue_delete(tx, vault, &l.archive_id, &l.description, 0, None)?;
            }
            _ => {
                tx.execute(
                    "INSERT INTO snapshots (vault, description, taken_s, origin, state, size, \
                     tree_hash, archive_id) VALUES (?1, ?2, ?3, 'listed', 'confirmed', ?4, ?5, ?6)",
                    params![
                        vault as i64,
                        l.description,
                        l.taken_s,
                        l.size as i64,
                        l.tree_hash,
                        l.archive_id
                    ],
                )?;
            }
        }
    }
    if let Some(inventory_s) = inventory_s {
        let present: HashSet<&str> = listed.iter().map(|l| l.archive_id.as_str()).collect();
        for r in before.iter().filter(|r| r.state == "confirmed") {
            if let Some(id) = &r.archive_id {
                if !present.contains(id.as_str()) && r.taken_s < inventory_s {
                    tx.execute("UPDATE snapshots SET state = 'gone' WHERE id = ?1", [r.id])?;
                }
            }
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Restoring

/// Asks for `vault`'s newest snapshot to be retrieved and applied; returns its row, or None
/// when the vault has no confirmed snapshot. Asking again while one runs changes nothing.
pub fn request_restore(
    tx: &Connection,
    vault: u64,
    tier: &str,
) -> Result<Option<SnapshotRow>, CatalogError> {
    let Some(row) = newest(tx, vault)? else {
        return Ok(None);
    };
    if !matches!(row.restore.as_deref(), Some("requested" | "retrieving")) {
        tx.execute(
            "UPDATE snapshots SET restore = 'requested', tier = ?2, message = NULL WHERE id = ?1",
            params![row.id, tier],
        )?;
    }
    Ok(select(tx, "WHERE id = ?1", [row.id])?.pop())
}

/// The restores asked for and not finished: what the engine works on, and resumes.
pub fn restores_pending(conn: &Connection) -> Result<Vec<SnapshotRow>, CatalogError> {
    select(
        conn,
        "WHERE restore IN ('requested', 'retrieving', 'retrieved') ORDER BY id",
        [],
    )
}

/// The row of a snapshot.
pub fn get(conn: &Connection, id: i64) -> Result<Option<SnapshotRow>, CatalogError> {
    Ok(select(conn, "WHERE id = ?1", [id])?.pop())
}

/// A restore's retrieval job, and where its output goes.
pub fn set_restore_job(
    tx: &Connection,
    id: i64,
    job_id: &str,
    file: &str,
) -> Result<(), CatalogError> {
    tx.execute(
        "UPDATE snapshots SET restore = 'retrieving', job_id = ?2, file = ?3, verified = 0, \
         leaves = x'' WHERE id = ?1",
        params![id, job_id, file],
    )?;
    Ok(())
}

/// How much of a restore's download is verified (the download engine's journal).
pub fn set_verified(
    tx: &Connection,
    id: i64,
    verified: u64,
    leaves: &[u8],
) -> Result<(), CatalogError> {
    tx.execute(
        "UPDATE snapshots SET verified = ?2, leaves = ?3 WHERE id = ?1",
        params![id, verified as i64, leaves],
    )?;
    Ok(())
}

/// A restore that cannot go on (its message says why); asking again starts over.
pub fn restore_failed(tx: &Connection, id: i64, message: &str) -> Result<(), CatalogError> {
    tx.execute(
        "UPDATE snapshots SET restore = 'failed', message = ?2, job_id = NULL WHERE id = ?1",
        params![id, message],
    )?;
    Ok(())
}

/// What applying a snapshot did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Applied {
    /// Entries whose node was moved, created or given the snapshot's attributes.
    pub changed: u64,
    /// Entries whose archive the vault no longer has.
    pub dropped: u64,
    /// Entries left as they are because the node changed here after the snapshot.
    pub kept: u64,
    /// The directories and nodes whose listing or attributes changed (for the kernel).
    pub touched: Vec<u64>,
    /// Names that went or came (for the kernel's cached lookups, negative ones included).
    pub names: Vec<(u64, String)>,
}

/// Applies `snap` to `vault`'s tree, in the caller's transaction, and marks row `id` applied.
/// See the module note for the rules.
pub fn apply(
    tx: &Connection,
    id: i64,
    vault: u64,
    snap: &Snapshot,
) -> Result<Applied, CatalogError> {
    let taken_ns = snap.taken_s.saturating_mul(1_000_000_000);
    let mut out = Applied::default();
    // Directories by path, the vault itself as "".
    let mut dirs: HashMap<String, u64> = HashMap::new();
    dirs.insert(String::new(), vault);
    // Nodes whose old parent may be left empty by a move.
    let mut emptied: Vec<u64> = Vec::new();
    // First pass: move every matched archive out of the way, so two renames that swapped
    // names cannot block each other.
    let mut matched: Vec<(usize, nodes::Node)> = Vec::new();
    for (i, e) in snap.entries.iter().enumerate() {
        if e.kind != EntryKind::File {
            continue;
        }
        let Some(archive_id) = &e.archive_id else {
            continue;
        };
        match node_by_archive(tx, vault, archive_id)? {
            None => out.dropped += 1,
            Some(n) if n.ctime_ns > taken_ns => out.kept += 1,
            Some(n) => {
                let (parent, name) = split(&e.path);
                let in_place =
                    vault_path_of(tx, n.parent)?.as_deref() == Some(parent) && n.name == name;
                if !in_place {
                    tx.execute(
                        "UPDATE nodes SET parent = ?2, name = ?3 WHERE ino = ?1",
                        params![
                            n.ino as i64,
                            vault as i64,
                            format!(".glacierfs-restore-{}", n.ino)
                        ],
                    )?;
                    emptied.push(n.parent);
                    out.touched.push(n.parent);
                    out.names.push((n.parent, n.name.clone()));
                }
                matched.push((i, n));
            }
        }
    }
    let matched: HashMap<usize, nodes::Node> = matched.into_iter().collect();
    for (i, e) in snap.entries.iter().enumerate() {
        let (parent_path, name) = split(&e.path);
        let Some(parent) = ensure_dir(tx, vault, parent_path, &mut dirs, &mut out)? else {
            continue;
        };
        match e.kind {
            EntryKind::Dir => {
                let ino = match nodes::lookup(tx, parent, name)? {
                    Some(n) if n.kind == Kind::Dir => {
                        if locally_changed(&n, taken_ns) {
                            out.kept += 1;
                        } else if set_attrs(tx, &n, e)? {
                            out.changed += 1;
                            out.touched.push(n.ino);
                        }
                        n.ino
                    }
                    Some(_) => continue,
                    None => {
                        let ino = insert(tx, Kind::Dir, parent, name, vault, e)?;
                        out.changed += 1;
                        out.touched.push(parent);
                        out.names.push((parent, name.to_owned()));
                        ino
                    }
                };
                dirs.insert(e.path.clone(), ino);
            }
            EntryKind::File => {
                if let Some(n) = matched.get(&i) {
                    let moved = n.parent != parent || n.name != name;
                    if moved {
                        if nodes::lookup(tx, parent, name)?.is_some() {
                            // The name is taken (by an archive uploaded after the snapshot,
                            // or a local change): the archive keeps its description's name.
                            put_back(tx, n)?;
                            out.kept += 1;
                            continue;
                        }
                        tx.execute(
                            "UPDATE nodes SET parent = ?2, name = ?3 WHERE ino = ?1",
                            params![n.ino as i64, parent as i64, name],
                        )?;
                        out.touched.push(parent);
                        out.names.push((parent, name.to_owned()));
                    }
                    if set_attrs(tx, n, e)? || moved {
                        out.changed += 1;
                        out.touched.push(n.ino);
                    }
                } else if e.archive_id.is_none() && e.size == 0 {
                    match nodes::lookup(tx, parent, name)? {
                        Some(n) if n.kind == Kind::File && n.archive_id.is_none() => {
                            if n.ctime_ns > taken_ns {
                                out.kept += 1;
                            } else if set_attrs(tx, &n, e)? {
                                out.changed += 1;
                                out.touched.push(n.ino);
                            }
                        }
                        Some(_) => out.kept += 1,
                        None => {
                            insert(tx, Kind::File, parent, name, vault, e)?;
                            out.changed += 1;
                            out.touched.push(parent);
                            out.names.push((parent, name.to_owned()));
                        }
                    }
                }
                // A file with content but no archive was staged when the snapshot was taken:
                // its data never reached the vault, so there is nothing to restore.
            }
            EntryKind::Symlink | EntryKind::Special => {
                // Local metadata only, like an empty file: created when missing, given the
                // snapshot's attributes when it is there and not changed since.
                let kind = if e.kind == EntryKind::Symlink {
                    Kind::Symlink
                } else {
                    Kind::Special
                };
                match nodes::lookup(tx, parent, name)? {
                    Some(n) if n.kind == kind && n.target == e.target && n.rdev == e.rdev => {
                        if n.ctime_ns > taken_ns {
                            out.kept += 1;
                        } else if set_attrs(tx, &n, e)? {
                            out.changed += 1;
                            out.touched.push(n.ino);
                        }
                    }
                    Some(_) => out.kept += 1,
                    None => {
                        insert(tx, kind, parent, name, vault, e)?;
                        out.changed += 1;
                        out.touched.push(parent);
                        out.names.push((parent, name.to_owned()));
                    }
                }
            }
        }
    }
    // Directories that only held moved archives and that the snapshot does not have (the
    // names descriptions gave) go, bottom up; a directory someone gave attributes stays.
    let wanted: HashSet<u64> = dirs.values().copied().collect();
    let mut seen = HashSet::new();
    while let Some(d) = emptied.pop() {
        if d == vault || wanted.contains(&d) || !seen.insert(d) {
            continue;
        }
        let Some(n) = nodes::get(tx, d)? else {
            continue;
        };
        if n.kind == Kind::Dir
            && n.mode.is_none()
            && n.uid.is_none()
            && !nodes::has_children(tx, d)?
        {
            nodes::remove(tx, d)?;
            out.touched.push(n.parent);
            out.names.push((n.parent, n.name.clone()));
            emptied.push(n.parent);
        }
    }
    tx.execute(
        "UPDATE snapshots SET restore = 'applied', applied_s = ?2, message = NULL WHERE id = ?1",
        params![id, super::now_s()],
    )?;
    out.touched.sort_unstable();
    out.touched.dedup();
    Ok(out)
}

/// Records a snapshot a restore retrieved before the catalog was rebuilt (`catalog rebuild`):
/// the mount applies it once it has taken the vault's inventory in, so its archives are there
/// to match. `file` is relative to the cache directory.
pub fn record_retrieved(
    tx: &Connection,
    vault: u64,
    description: &str,
    taken_s: i64,
    file: &str,
) -> Result<(), CatalogError> {
    tx.execute(
        "INSERT INTO snapshots (vault, description, taken_s, origin, state, restore, file) \
         VALUES (?1, ?2, ?3, 'listed', 'gone', 'retrieved', ?4)",
        params![vault as i64, description, taken_s, file],
    )?;
    Ok(())
}

/// A directory the inventory made (no attributes of its own) is the description's, not a
/// local change, whatever its ctime says.
fn locally_changed(n: &nodes::Node, taken_ns: i64) -> bool {
    n.ctime_ns > taken_ns && (n.mode.is_some() || n.uid.is_some() || n.gid.is_some())
}

fn split(path: &str) -> (&str, &str) {
    path.rsplit_once('/').unwrap_or(("", path))
}

fn node_by_archive(
    tx: &Connection,
    vault: u64,
    archive_id: &str,
) -> Result<Option<nodes::Node>, CatalogError> {
    let ino: Option<i64> = tx
        .prepare_cached(
            "SELECT ino FROM nodes WHERE archive_key = ?1 AND archive_id = ?2 AND vault = ?3 \
             ORDER BY ino LIMIT 1",
        )?
        .query_row(
            params![nodes::archive_key(archive_id), archive_id, vault as i64],
            |r| r.get(0),
        )
        .optional()?;
    match ino {
        Some(i) => nodes::get(tx, i as u64),
        None => Ok(None),
    }
}

/// The vault-relative path of a directory, None for one outside any vault.
fn vault_path_of(tx: &Connection, dir: u64) -> Result<Option<String>, CatalogError> {
    match nodes::get(tx, dir)? {
        Some(n) if n.kind == Kind::Vault => Ok(Some(String::new())),
        Some(n) if n.kind == Kind::Dir => Ok(Some(nodes::vault_relative_path(tx, dir)?)),
        _ => Ok(None),
    }
}

/// Puts a node moved aside by the first pass back where it was.
fn put_back(tx: &Connection, n: &nodes::Node) -> Result<(), CatalogError> {
    tx.execute(
        "UPDATE nodes SET parent = ?2, name = ?3 WHERE ino = ?1",
        params![n.ino as i64, n.parent as i64, n.name],
    )?;
    Ok(())
}

/// The directory at `path` in the vault, created (with default attributes) if missing; None
/// when a file holds one of its names.
fn ensure_dir(
    tx: &Connection,
    vault: u64,
    path: &str,
    dirs: &mut HashMap<String, u64>,
    out: &mut Applied,
) -> Result<Option<u64>, CatalogError> {
    if let Some(&ino) = dirs.get(path) {
        return Ok(Some(ino));
    }
    let (parent_path, name) = split(path);
    let Some(parent) = ensure_dir(tx, vault, parent_path, dirs, out)? else {
        return Ok(None);
    };
    let ino = match nodes::lookup(tx, parent, name)? {
        Some(n) if n.kind == Kind::Dir => n.ino,
        Some(_) => return Ok(None),
        None => {
            out.touched.push(parent);
            out.names.push((parent, name.to_owned()));
            nodes::insert(
                tx,
                Kind::Dir,
                &nodes::NewNode {
                    parent,
                    name,
                    vault,
                    mtime_ns: super::now_ns(),
                    ..Default::default()
                },
            )?
        }
    };
    dirs.insert(path.to_owned(), ino);
    Ok(Some(ino))
}

fn insert(
    tx: &Connection,
    kind: Kind,
    parent: u64,
    name: &str,
    vault: u64,
    e: &Entry,
) -> Result<u64, CatalogError> {
    let ino = nodes::insert(
        tx,
        kind,
        &nodes::NewNode {
            parent,
            name,
            vault,
            mtime_ns: e.mtime_ns,
            mode: e.mode,
            uid: e.uid,
            gid: e.gid,
            size: e.size,
            target: e.target.as_deref(),
            rdev: e.rdev,
            ..Default::default()
        },
    )?;
    tx.execute(
        "UPDATE nodes SET ctime_ns = ?2, atime_ns = ?3 WHERE ino = ?1",
        params![ino as i64, e.ctime_ns, e.atime_ns],
    )?;
    Ok(ino)
}

/// Gives a node the entry's attributes and ctime; false when it had them already.
fn set_attrs(tx: &Connection, n: &nodes::Node, e: &Entry) -> Result<bool, CatalogError> {
    if n.mode == e.mode
        && n.uid == e.uid
        && n.gid == e.gid
        && n.mtime_ns == e.mtime_ns
        && n.ctime_ns == e.ctime_ns
        && n.atime_ns == e.atime_ns
    {
        return Ok(false);
    }
    tx.execute(
        "UPDATE nodes SET mode = ?2, uid = ?3, gid = ?4, mtime_ns = ?5, ctime_ns = ?6, \
         atime_ns = ?7 WHERE ino = ?1",
        params![
            n.ino as i64,
            e.mode,
            e.uid,
            e.gid,
            e.mtime_ns,
            e.ctime_ns,
            e.atime_ns
        ],
    )?;
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::nodes::NewNode;
    use crate::catalog::Catalog;

    const T: i64 = 1_700_000_000;
    const NS: i64 = 1_000_000_000;

    fn file<'a>(parent: u64, name: &'a str, vault: u64, archive: &'a str) -> NewNode<'a> {
        NewNode {
            parent,
            name,
            vault,
            size: 5,
            mtime_ns: (T - 100) * NS,
            archive_id: Some(archive),
            tree_hash: Some("00"),
            ..Default::default()
        }
    }

    fn entry(path: &str, kind: EntryKind, archive: Option<&str>) -> Entry {
        Entry {
            path: path.into(),
            kind,
            mode: Some(0o600),
            uid: Some(7),
            gid: Some(8),
            mtime_ns: 123 * NS,
            ctime_ns: (T - 10) * NS,
            atime_ns: None,
            size: if archive.is_some() { 5 } else { 0 },
            archive_id: archive.map(str::to_owned),
            tree_hash: archive.map(|_| "00".to_owned()),
            target: None,
            rdev: None,
        }
    }

    /// A vault as a fresh inventory leaves it: `a`, `b`, `gone-too`'s archive missing, and a
    /// directory `old` holding `c`.
    fn setup() -> (tempfile::TempDir, Catalog, u64, i64) {
        let tmp = tempfile::tempdir().unwrap();
        let cat = Catalog::open(tmp.path()).unwrap();
        let (v, id) = cat
            .write(|tx| {
                let v = crate::catalog::vaults::ensure(tx, "v", "present")?.ino;
                nodes::insert(tx, Kind::File, &file(v, "a", v, "A"))?;
                nodes::insert(tx, Kind::File, &file(v, "b", v, "B"))?;
                let old = nodes::insert(
                    tx,
                    Kind::Dir,
                    &NewNode {
                        parent: v,
                        name: "old",
                        vault: v,
                        mtime_ns: T * NS + 5,
                        ..Default::default()
                    },
                )?;
                nodes::insert(tx, Kind::File, &file(old, "c", v, "C"))?;
                let id = begin(tx, v, "d", T, "x", "f", 1)?;
                Ok((v, id))
            })
            .unwrap();
        (tmp, cat, v, id)
    }

    fn snapshot() -> Snapshot {
        Snapshot {
            vault: "v".into(),
            taken_s: T,
            change: 0,
            entries: vec![
                entry("b", EntryKind::File, Some("A")),
                entry("a", EntryKind::File, Some("B")),
                entry("new", EntryKind::Dir, None),
                entry("new/c2", EntryKind::File, Some("C")),
                entry("new/empty", EntryKind::File, None),
                entry("gone-too", EntryKind::File, Some("GONE")),
            ],
        }
    }

    fn paths(cat: &Catalog, v: u64) -> Vec<(String, Option<String>, Option<u32>)> {
        let (entries, _) = cat.read(|c| vault_entries(c, v)).unwrap();
        entries
            .into_iter()
            .map(|e| (e.path, e.archive_id, e.mode))
            .collect()
    }

    #[test]
    fn apply_restores_names_by_archive_drops_the_gone_and_is_idempotent() {
        let (_tmp, cat, v, id) = setup();
        let snap = snapshot();
        let s2 = snap.clone();
        let applied = cat.write(move |tx| apply(tx, id, v, &s2)).unwrap();
        assert_eq!(applied.dropped, 1, "{applied:?}");
        let got = paths(&cat, v);
        let want = vec![
            ("a".to_owned(), Some("B".to_owned()), Some(0o600)),
            ("b".to_owned(), Some("A".to_owned()), Some(0o600)),
            ("new".to_owned(), None, Some(0o600)),
            ("new/c2".to_owned(), Some("C".to_owned()), Some(0o600)),
            ("new/empty".to_owned(), None, Some(0o600)),
        ];
        assert_eq!(
            got, want,
            "swapped names, moved file, and `old` emptied away"
        );
        let again = cat.write(move |tx| apply(tx, id, v, &snap)).unwrap();
        assert_eq!((again.changed, again.touched.len()), (0, 0), "{again:?}");
        assert_eq!(paths(&cat, v), want);
        assert_eq!(
            cat.read(|c| get(c, id))
                .unwrap()
                .unwrap()
                .restore
                .as_deref(),
            Some("applied")
        );
    }

    #[test]
    fn a_node_changed_after_the_snapshot_keeps_its_state() {
        let (_tmp, cat, v, id) = setup();
        cat.write(move |tx| {
            let a = nodes::lookup(tx, v, "a")?.ok_or(CatalogError::NotFound)?;
            nodes::set_attrs(
                tx,
                a.ino,
                nodes::AttrChange {
                    mode: Some(0o644),
                    ..Default::default()
                },
            )
        })
        .unwrap();
        let snap = snapshot();
        let applied = cat.write(move |tx| apply(tx, id, v, &snap)).unwrap();
        // `a` keeps its state; so `b`, whose name in the snapshot `a` still holds, stays too.
        assert_eq!(applied.kept, 2, "{applied:?}");
        let got = paths(&cat, v);
        assert!(
            got.contains(&("a".to_owned(), Some("A".to_owned()), Some(0o644))),
            "{got:?}"
        );
        assert!(
            got.contains(&("b".to_owned(), Some("B".to_owned()), None)),
            "{got:?}"
        );
    }

    #[test]
    fn the_newest_snapshot_is_kept_and_older_ones_go_after_90_days() {
        let (_tmp, cat, v, _) = setup();
        let now = T + 200 * 86_400;
        cat.write(move |tx| {
            for (i, age_days) in [(1, 150), (2, 100), (3, 120)] {
                let id = begin(
                    tx,
                    v,
                    &format!("s{i}"),
                    now - age_days * 86_400,
                    "x",
                    "f",
                    1,
                )?;
                created(tx, id, &format!("S{i}"), "00")?;
            }
            Ok(())
        })
        .unwrap();
        assert_eq!(cat.write(move |tx| expire(tx, v, now)).unwrap(), 2);
        let states: Vec<(String, String)> = cat
            .read(all)
            .unwrap()
            .into_iter()
            .filter_map(|r| r.archive_id.map(|a| (a, r.state)))
            .collect();
        assert!(
            states.contains(&("S2".into(), "confirmed".into())),
            "{states:?}"
        );
        assert!(
            states.contains(&("S1".into(), "deleting".into())),
            "{states:?}"
        );
        assert!(
            states.contains(&("S3".into(), "deleting".into())),
            "{states:?}"
        );
        // Younger than 90 days, even the old newest's successor stays.
        assert_eq!(cat.write(move |tx| expire(tx, v, now)).unwrap(), 0);
        let queued = cat.read(|c| deletes::due(c, i64::MAX)).unwrap();
        assert_eq!(queued.len(), 2);
    }

    #[test]
    fn inventories_adopt_lost_replies_delete_twins_and_note_no_history() {
        let (_tmp, cat, v, id) = setup();
        let listed = |archive: &str, desc: &str| ListedSnapshot {
            archive_id: archive.into(),
            description: desc.into(),
            size: 1,
            tree_hash: "00".into(),
            taken_s: T,
        };
        // The upload row `d` never heard back: its archive is adopted, and a twin deleted.
        let l = vec![listed("D1", "d"), listed("D2", "d")];
        cat.write(move |tx| take_listed(tx, v, &l, None)).unwrap();
        let row = cat.read(|c| get(c, id)).unwrap().unwrap();
        assert_eq!(
            (row.state.as_str(), row.archive_id.as_deref()),
            ("confirmed", Some("D1"))
        );
        let queued = cat.read(|c| deletes::due(c, i64::MAX)).unwrap();
        assert_eq!(queued.len(), 1);
        assert_eq!(queued[0].archive_id.as_deref(), Some("D2"));
        assert!(
            !cat.read(|c| has_no_history(c, v)).unwrap(),
            "this catalog took one"
        );

        // A vault whose only snapshot came from an inventory has no history here.
        let v2 = cat
            .write(|tx| crate::catalog::vaults::ensure(tx, "w", "present"))
            .unwrap()
            .ino;
        assert!(
            !cat.read(|c| has_no_history(c, v2)).unwrap(),
            "no snapshot at all"
        );
        let l = vec![listed("E", "glacierfs-snapshot v1 w 20270115T080000Z")];
        cat.write(move |tx| take_listed(tx, v2, &l, None)).unwrap();
        assert!(cat.read(|c| has_no_history(c, v2)).unwrap());
        cat.write(move |tx| request_restore(tx, v2, "Bulk"))
            .unwrap();
        assert!(
            !cat.read(|c| has_no_history(c, v2)).unwrap(),
            "a restore is history"
        );
    }

    #[test]
    fn the_tree_digest_moves_with_what_a_snapshot_carries_and_not_with_ctime() {
        let (_tmp, cat, v, _) = setup();
        let digest = |cat: &Catalog| cat.read(|c| tree_digest(c, v)).unwrap();
        let a = cat.read(|c| nodes::lookup(c, v, "a")).unwrap().unwrap().ino;
        let first = digest(&cat);
        assert_eq!(digest(&cat), first, "a digest of the same tree differs");
        // A status change alone (ctime) is no change of the tree.
        cat.write(move |tx| nodes::set_attrs(tx, a, nodes::AttrChange::default()))
            .unwrap();
        assert_eq!(digest(&cat), first, "a ctime moved the digest");
        let mut seen = vec![first];
        let mut changed = |what: &str, cat: &Catalog| {
            let d = digest(cat);
            assert!(!seen.contains(&d), "{what} did not change the digest");
            seen.push(d);
        };
        cat.write(move |tx| {
            nodes::set_attrs(
                tx,
                a,
                nodes::AttrChange {
                    mode: Some(0o640),
                    ..Default::default()
                },
            )
        })
        .unwrap();
        changed("chmod", &cat);
        cat.write(move |tx| nodes::rename(tx, a, v, "a2")).unwrap();
        changed("a rename", &cat);
        cat.write(move |tx| {
            nodes::set_attrs(
                tx,
                a,
                nodes::AttrChange {
                    atime_ns: Some(42),
                    ..Default::default()
                },
            )
        })
        .unwrap();
        changed("an atime", &cat);
        cat.write(move |tx| nodes::insert(tx, Kind::File, &file(v, "new", v, "N")).map(drop))
            .unwrap();
        changed("a new file", &cat);
    }
}
