//! Files' local state in the catalog: what open, write, close, truncate, unlink, recovery and
//! eviction record about a file's data file. A file is `local` when `<cache>/data/<ino>` holds
//! its whole content, and `dirty` is the generation of staged content not yet in Glacier (0
//! when the archive is current); `closed_ns` is unset while a writer has it open, so the
//! write-back queue leaves it alone and a restart after a crash finds it.
//!
//! The file-system layer and the store decide when; the statements live here.

use rusqlite::{params, Connection};

use super::deletes::queue_delete;
use super::nodes::{self, Kind, NewNode, Node};
use super::{now_ns, vaults, CatalogError};
use crate::codec::names;

/// A staged file's node, its vault's name and its path in the vault: what its sidecar says.
#[derive(Debug, Clone)]
pub struct Staged {
    pub node: Node,
    pub vault: String,
    pub path: String,
}

/// What the sidecar of `ino` should say, if it is staged. Called inside the write that changed
/// the file, on the writer's connection, so a sidecar costs no read transaction of its own.
pub fn staged(conn: &Connection, ino: u64) -> Result<Option<Staged>, CatalogError> {
    let Some(node) = nodes::get(conn, ino)?.filter(|n| n.dirty > 0) else {
        return Ok(None);
    };
    let vault = vaults::by_ino(conn, node.vault_ino())?
        .ok_or(CatalogError::NotFound)?
        .name;
    let path = nodes::vault_relative_path(conn, ino)?;
    Ok(Some(Staged { node, vault, path }))
}

/// A file just created: local, staged as generation `gen`, and open (no close recorded).
pub fn stage_created(conn: &Connection, ino: u64, gen: i64) -> Result<(), CatalogError> {
    conn.execute(
        "UPDATE nodes SET local = 1, dirty = ?2, closed_ns = NULL WHERE ino = ?1",
        params![ino as i64, gen],
    )?;
    Ok(())
}

/// A file opened for writing counts as staged and open from then on. `emptied` (a truncating
/// open, or one of a file with no local data) also sets its size to 0 and starts generation
/// `gen`; otherwise a clean file gets `gen` and a staged one keeps its own.
pub fn open_for_write(
    conn: &Connection,
    ino: u64,
    gen: i64,
    emptied: bool,
) -> Result<(), CatalogError> {
    conn.execute(
        "UPDATE nodes SET local = 1, closed_ns = NULL, \
         size = CASE WHEN ?3 THEN 0 ELSE size END, \
         dirty = CASE WHEN ?3 OR dirty = 0 THEN ?2 ELSE dirty END WHERE ino = ?1",
        params![ino as i64, gen, emptied],
    )?;
    Ok(())
}

/// A writer closed without writing: the generation its open gave (`marked`, 0 for none) is
/// undone, so the file is clean again if it was, and it is due as before.
pub fn close_unwritten(
    conn: &Connection,
    ino: u64,
    marked: i64,
    now_ns: i64,
) -> Result<(), CatalogError> {
    conn.execute(
        "UPDATE nodes SET dirty = CASE WHEN dirty = ?2 THEN 0 ELSE dirty END, \
         closed_ns = COALESCE(closed_ns, ?3) WHERE ino = ?1",
        params![ino as i64, marked, now_ns],
    )?;
    Ok(())
}

/// What a writer left in a file's data file, as close or fsync records it.
#[derive(Debug, Clone, Copy)]
pub struct Written {
    pub size: u64,
    /// The mtime of the last write, or None to keep the recorded one (set explicitly since).
    pub mtime_ns: Option<i64>,
    /// Now: the ctime and the new staged generation.
    pub now_ns: i64,
    /// A close (rather than an fsync with the file still open) also records `closed_ns`.
    pub closing: bool,
}

/// Records what a writer left: size, times, and a new staged generation. Writes do not
/// access the file in the atime sense: an atime that followed the mtime keeps the old one.
pub fn record_written(conn: &Connection, ino: u64, w: &Written) -> Result<(), CatalogError> {
    conn.execute(
        "UPDATE nodes SET size = ?2, mtime_ns = COALESCE(?3, mtime_ns), ctime_ns = ?4, \
         atime_ns = COALESCE(atime_ns, mtime_ns), \
         local = 1, dirty = ?4, closed_ns = CASE WHEN ?5 THEN ?4 ELSE closed_ns END \
         WHERE ino = ?1",
        params![ino as i64, w.size as i64, w.mtime_ns, w.now_ns, w.closing],
    )?;
    Ok(())
}

/// A truncate without an open handle: new size and times, a new staged generation, and a
/// close when no writer has the file open (`closed`).
pub fn truncated(
    conn: &Connection,
    ino: u64,
    size: u64,
    now_ns: i64,
    closed: bool,
) -> Result<(), CatalogError> {
    conn.execute(
        "UPDATE nodes SET size = ?2, local = 1, dirty = ?3, mtime_ns = ?3, \
         atime_ns = COALESCE(atime_ns, mtime_ns), \
         ctime_ns = ?3, closed_ns = CASE WHEN ?4 THEN ?3 ELSE closed_ns END \
         WHERE ino = ?1",
        params![ino as i64, size as i64, now_ns, closed],
    )?;
    Ok(())
}

/// A file put back from its sidecar after the catalog was lost: staged and closed at `now_ns`,
/// so it is due for upload at once.
pub fn stage_recovered(conn: &Connection, ino: u64, now_ns: i64) -> Result<(), CatalogError> {
    conn.execute(
        "UPDATE nodes SET local = 1, dirty = ?2, closed_ns = ?2 WHERE ino = ?1",
        params![ino as i64, now_ns],
    )?;
    Ok(())
}

/// A staged file found with no node, as its sidecar describes it.
#[derive(Debug, Clone, Copy)]
pub struct Recovered<'a> {
    pub vault: &'a str,
    /// '/'-separated, relative to the vault.
    pub path: &'a str,
    pub size: u64,
    pub mtime_ns: i64,
    pub mode: Option<u32>,
    pub uid: Option<u32>,
    pub gid: Option<u32>,
}

/// A node for a recovered file at its recorded path (a free variant of the name if the path
/// is taken, and the vault and directories made as needed), staged and due for upload.
pub fn place_recovered(conn: &Connection, f: &Recovered<'_>) -> Result<u64, CatalogError> {
    let vault = vaults::ensure(conn, f.vault, "present")?.ino;
    let segments = names::sanitize(f.path).unwrap_or_else(|| vec!["recovered".into()]);
    let (file, dirs) = segments.split_last().ok_or(CatalogError::NotFound)?;
    let mut parent = vault;
    for d in dirs {
        parent = match nodes::lookup(conn, parent, d)? {
            Some(n) if n.kind.is_dir() => n.ino,
            _ => nodes::insert(
                conn,
                Kind::Dir,
                &NewNode {
                    parent,
                    name: d,
                    vault,
                    mtime_ns: now_ns(),
                    ..Default::default()
                },
            )?,
        };
    }
    let mut name = file.clone();
    let mut n = 1;
    while nodes::lookup(conn, parent, &name)?.is_some()
        || (parent == vault && names::is_reserved(&name))
    {
        name = format!(
            "{file}~recovered{}",
            if n > 1 {
                format!("-{n}")
            } else {
                String::new()
            }
        );
        n += 1;
    }
    let ino = nodes::insert(
        conn,
        Kind::File,
        &NewNode {
            parent,
            name: &name,
            vault,
            size: f.size,
            mtime_ns: f.mtime_ns,
            mode: f.mode,
            uid: f.uid,
            gid: f.gid,
            ..Default::default()
        },
    )?;
    stage_recovered(conn, ino, now_ns())?;
    Ok(ino)
}

/// Removes a file node; its archive (if it has one) is tombstoned and queued for deletion no
/// earlier than `not_before_ns`. `path` is the file's vault-relative path, for `.jobs`.
pub fn remove(
    conn: &Connection,
    n: &Node,
    path: &str,
    not_before_ns: i64,
) -> Result<(), CatalogError> {
    // The archive id as it is now: an upload may have finished since `n` was read.
    let current = nodes::get(conn, n.ino)?.and_then(|c| c.archive_id);
    nodes::remove(conn, n.ino)?;
    if let Some(id) = current {
        queue_delete(conn, n.vault, &id, path, not_before_ns, None)?;
    }
    Ok(())
}

/// Moves `src` to `new_parent`/`new_name`, removing `replaced` there first (an entry the caller
/// has checked may be replaced, with its vault-relative path). A replaced file's archive is
/// queued for deletion no earlier than `not_before_ns`, and, when `src` is staged, only once
/// `src`'s content is safe in Glacier.
pub fn rename_replacing(
    conn: &Connection,
    src: &Node,
    replaced: Option<(&Node, &str)>,
    new_parent: u64,
    new_name: &str,
    not_before_ns: i64,
) -> Result<(), CatalogError> {
    if let Some((e, path)) = replaced {
        // The archive id as it is now: an upload may have finished since `e` was read.
        let current = match e.kind {
            Kind::File => nodes::get(conn, e.ino)?.and_then(|c| c.archive_id),
            _ => None,
        };
        nodes::remove(conn, e.ino)?;
        if let Some(id) = &current {
            let after = (src.dirty > 0).then_some(src.ino);
            queue_delete(conn, e.vault, id, path, not_before_ns, after)?;
        }
    }
    nodes::rename(conn, src.ino, new_parent, new_name)
}

/// Total bytes of retrieved data kept locally (archived, clean, local): what the cache size
/// bounds.
pub fn cached_bytes(conn: &Connection) -> Result<u64, CatalogError> {
    let total: i64 = conn
        .prepare_cached(
            "SELECT COALESCE(SUM(size), 0) FROM nodes \
             WHERE local = 1 AND dirty = 0 AND kind = ?1 AND archive_id IS NOT NULL",
        )?
        .query_row([Kind::File], |r| r.get(0))?;
    Ok(total.max(0) as u64)
}

/// The cached files that have been read, least recently read first, with their sizes: the
/// order eviction takes them in. Data retrieved but not read yet is never among them.
pub fn eviction_order(conn: &Connection) -> Result<Vec<(u64, u64)>, CatalogError> {
    let mut stmt = conn.prepare_cached(
        "SELECT ino, size FROM nodes WHERE local = 1 AND dirty = 0 AND kind = ?1 \
         AND archive_id IS NOT NULL AND read_ns IS NOT NULL ORDER BY read_ns",
    )?;
    let rows = stmt.query_map([Kind::File], |r| {
        Ok((
            r.get::<_, i64>(0)? as u64,
            r.get::<_, i64>(1)?.max(0) as u64,
        ))
    })?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// Marks a cached file cold again; false if it is no longer clean and local (a writer took it
/// since it was chosen), and then it stays.
pub fn evict(conn: &Connection, ino: u64) -> Result<bool, CatalogError> {
    let mut stmt = conn
        .prepare_cached("UPDATE nodes SET local = 0 WHERE ino = ?1 AND dirty = 0 AND local = 1")?;
    Ok(stmt.execute([ino as i64])? == 1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::{Catalog, ROOT_INO};

    fn file(cat: &Catalog) -> u64 {
        cat.write(|tx| {
            let v = nodes::insert(
                tx,
                Kind::Vault,
                &NewNode {
                    parent: ROOT_INO,
                    name: "v",
                    ..Default::default()
                },
            )?;
            nodes::insert(
                tx,
                Kind::File,
                &NewNode {
                    parent: v,
                    name: "f",
                    vault: v,
                    size: 9,
                    ..Default::default()
                },
            )
        })
        .unwrap()
    }

    fn node(cat: &Catalog, ino: u64) -> Node {
        cat.read(move |c| nodes::get(c, ino)).unwrap().unwrap()
    }

    #[test]
    fn a_write_open_closed_unwritten_leaves_a_clean_file_clean() {
        let tmp = tempfile::tempdir().unwrap();
        let cat = Catalog::open(tmp.path()).unwrap();
        let ino = file(&cat);
        cat.write(move |tx| open_for_write(tx, ino, 7, false))
            .unwrap();
        let n = node(&cat, ino);
        assert!(n.local && n.dirty == 7 && n.closed_ns.is_none() && n.size == 9);
        cat.write(move |tx| close_unwritten(tx, ino, 7, 8)).unwrap();
        let n = node(&cat, ino);
        assert_eq!((n.dirty, n.closed_ns), (0, Some(8)));
    }

    #[test]
    fn a_close_records_size_generation_and_keeps_an_explicit_mtime() {
        let tmp = tempfile::tempdir().unwrap();
        let cat = Catalog::open(tmp.path()).unwrap();
        let ino = file(&cat);
        cat.write(move |tx| stage_created(tx, ino, 3)).unwrap();
        let w = Written {
            size: 4,
            mtime_ns: None,
            now_ns: 11,
            closing: true,
        };
        cat.write(move |tx| record_written(tx, ino, &w)).unwrap();
        let n = node(&cat, ino);
        assert_eq!(
            (n.size, n.dirty, n.closed_ns, n.mtime_ns),
            (4, 11, Some(11), 0)
        );
        cat.write(move |tx| truncated(tx, ino, 0, 12, false))
            .unwrap();
        let n = node(&cat, ino);
        assert_eq!(
            (n.size, n.dirty, n.closed_ns, n.mtime_ns),
            (0, 12, Some(11), 12)
        );
    }

    #[test]
    fn only_clean_local_files_are_evicted() {
        let tmp = tempfile::tempdir().unwrap();
        let cat = Catalog::open(tmp.path()).unwrap();
        let ino = file(&cat);
        // Staged: not evictable.
        cat.write(move |tx| stage_recovered(tx, ino, 5)).unwrap();
        assert!(!cat.write(move |tx| evict(tx, ino)).unwrap());
        assert_eq!(cat.read(cached_bytes).unwrap(), 0);
        assert!(cat.read(eviction_order).unwrap().is_empty());
    }
}
