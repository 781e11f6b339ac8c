//! Nodes: the directory tree of the catalog (root, vaults, directories, files, symlinks and
//! special files), and the queries on it. Readers take a `&Connection`, writers a `&Transaction`, so the same functions serve
//! the FUSE threads' read pool and the writer thread.

use rusqlite::{params, Connection, OptionalExtension, Row};

use super::{CatalogError, ROOT_INO};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Root,
    Vault,
    Dir,
    File,
    /// A symbolic link: its target is the node's `target`, its size the target's length.
    Symlink,
    /// A fifo, socket, or character or block device: which one is the `S_IFMT` bits of its
    /// `mode`, stored whole for these nodes; a device's number is `rdev`.
    Special,
}

impl Kind {
    fn code(self) -> i64 {
        match self {
            Kind::Root => 0,
            Kind::Vault => 1,
            Kind::Dir => 2,
            Kind::File => 3,
            Kind::Symlink => 4,
            Kind::Special => 5,
        }
    }

    fn from_code(c: i64) -> Kind {
        match c {
            0 => Kind::Root,
            1 => Kind::Vault,
            2 => Kind::Dir,
            4 => Kind::Symlink,
            5 => Kind::Special,
            _ => Kind::File,
        }
    }

    pub fn is_dir(self) -> bool {
        matches!(self, Kind::Root | Kind::Vault | Kind::Dir)
    }
}

/// Kinds are stored as their code, so SQL binds `Kind::File` rather than a bare `3`.
impl rusqlite::ToSql for Kind {
    fn to_sql(&self) -> rusqlite::Result<rusqlite::types::ToSqlOutput<'_>> {
        Ok(self.code().into())
    }
}

impl rusqlite::types::FromSql for Kind {
    fn column_result(v: rusqlite::types::ValueRef<'_>) -> rusqlite::types::FromSqlResult<Self> {
        v.as_i64().map(Kind::from_code)
    }
}

/// One catalog entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Node {
    pub ino: u64,
    pub parent: u64,
    pub name: String,
    pub kind: Kind,
    /// Ino of the vault directory the node lives in; 0 for the root and for vaults themselves.
    pub vault: u64,
    pub size: u64,
    pub mtime_ns: i64,
    pub ctime_ns: i64,
    pub mode: Option<u32>,
    pub uid: Option<u32>,
    pub gid: Option<u32>,
    pub archive_id: Option<String>,
    pub tree_hash: Option<String>,
    pub description: Option<String>,
    pub created_s: Option<i64>,
    /// `<cache>/data/<ino>` holds the whole current content.
    pub local: bool,
    /// Generation of staged content not yet in Glacier; 0 when the archive is current.
    pub dirty: i64,
    pub closed_ns: Option<i64>,
    /// A symlink's target, as the raw bytes it was given.
    pub target: Option<Vec<u8>>,
    /// A device node's number.
    pub rdev: Option<u64>,
    /// The access time; None while it equals the mtime (nothing set it apart yet).
    pub atime_ns: Option<i64>,
    /// How many directories (or, for the root, vaults) are directly inside: a directory's
    /// link count is 2 plus this. Kept by triggers (migration 4), so reading it is O(1).
    pub subdirs: u64,
}

impl Node {
    /// The vault a node belongs to (a vault belongs to itself).
    pub fn vault_ino(&self) -> u64 {
        if self.kind == Kind::Vault {
            self.ino
        } else {
            self.vault
        }
    }
}

/// The 64-bit FNV-1a hash of an archive id, the key of the `nodes_by_archive` index. Queries
/// match on the key and then on the id itself, so a collision costs nothing but a comparison.
pub fn archive_key(archive_id: &str) -> i64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in archive_id.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h as i64
}

/// Whether some node of `vault` refers to `archive_id`.
pub fn archive_in_use(
    conn: &Connection,
    vault: u64,
    archive_id: &str,
) -> Result<bool, CatalogError> {
    let mut stmt = conn.prepare_cached(
        "SELECT 1 FROM nodes WHERE archive_key = ?1 AND archive_id = ?2 AND vault = ?3 LIMIT 1",
    )?;
    Ok(stmt.exists(params![archive_key(archive_id), archive_id, vault as i64])?)
}

/// Whether any node below `dir` (a vault or a directory) refers to an archive. Walks the
/// subtree by the `nodes_by_parent` index and stops at the first archive, so it is quick both
/// for an empty vault in a large catalog (nothing to walk) and for a populated one (an archive
/// among the first entries); only a large tree of local-only entries is walked in full.
pub fn has_archives_below(conn: &Connection, dir: u64) -> Result<bool, CatalogError> {
    let mut stmt = conn.prepare_cached(
        "WITH RECURSIVE sub(ino, kind, archived) AS ( \
             SELECT ino, kind, archive_id IS NOT NULL FROM nodes WHERE parent = ?1 AND ino != ?1 \
             UNION ALL \
             SELECT n.ino, n.kind, n.archive_id IS NOT NULL FROM nodes n JOIN sub \
             ON n.parent = sub.ino WHERE sub.kind != ?2) \
         SELECT 1 FROM sub WHERE archived LIMIT 1",
    )?;
    Ok(stmt.exists(params![dir as i64, Kind::File])?)
}

const COLUMNS: &str = "ino, parent, name, kind, vault, size, mtime_ns, ctime_ns, mode, uid, gid, \
                       archive_id, tree_hash, description, created_s, local, dirty, closed_ns, \
                       target, rdev, atime_ns, subdirs";

fn from_row(r: &Row<'_>) -> rusqlite::Result<Node> {
    Ok(Node {
        ino: r.get::<_, i64>(0)? as u64,
        parent: r.get::<_, i64>(1)? as u64,
        name: r.get(2)?,
        kind: r.get(3)?,
        vault: r.get::<_, i64>(4)? as u64,
        size: r.get::<_, i64>(5)? as u64,
        mtime_ns: r.get(6)?,
        ctime_ns: r.get(7)?,
        mode: r.get(8)?,
        uid: r.get(9)?,
        gid: r.get(10)?,
        archive_id: r.get(11)?,
        tree_hash: r.get(12)?,
        description: r.get(13)?,
        created_s: r.get(14)?,
        local: r.get::<_, i64>(15)? != 0,
        dirty: r.get(16)?,
        closed_ns: r.get(17)?,
        target: r.get(18)?,
        rdev: r.get::<_, Option<i64>>(19)?.map(|d| d as u64),
        atime_ns: r.get(20)?,
        subdirs: r.get::<_, i64>(21)?.max(0) as u64,
    })
}

pub fn get(conn: &Connection, ino: u64) -> Result<Option<Node>, CatalogError> {
    let mut stmt = conn.prepare_cached(&format!("SELECT {COLUMNS} FROM nodes WHERE ino = ?1"))?;
    Ok(stmt.query_row([ino as i64], from_row).optional()?)
}

pub fn lookup(conn: &Connection, parent: u64, name: &str) -> Result<Option<Node>, CatalogError> {
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT {COLUMNS} FROM nodes WHERE parent = ?1 AND name = ?2 AND ino != ?1"
    ))?;
    Ok(stmt
        .query_row(params![parent as i64, name], from_row)
        .optional()?)
}

/// Up to `limit` children of `parent` with ino greater than `after`, in ino order: a keyset page.
pub fn children(
    conn: &Connection,
    parent: u64,
    after: u64,
    limit: usize,
) -> Result<Vec<Node>, CatalogError> {
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT {COLUMNS} FROM nodes WHERE parent = ?1 AND ino > ?2 AND ino != ?1 \
         ORDER BY ino LIMIT ?3"
    ))?;
    let rows = stmt.query_map(params![parent as i64, after as i64, limit as i64], from_row)?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// A child as a listing without attributes shows it: its name and kind, and a special file's
/// mode (its type bits tell which kind of special file).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChildName {
    pub ino: u64,
    pub name: String,
    pub kind: Kind,
    pub mode: Option<u32>,
}

/// The page [`children`] reads, with only the columns a listing without attributes needs:
/// `find` over a large directory reads every child, and whole nodes (archive id, tree hash,
/// description) cost several times as much to read.
pub fn child_names(
    conn: &Connection,
    parent: u64,
    after: u64,
    limit: usize,
) -> Result<Vec<ChildName>, CatalogError> {
    let mut stmt = conn.prepare_cached(
        "SELECT ino, name, kind, mode FROM nodes WHERE parent = ?1 AND ino > ?2 AND ino != ?1 \
         ORDER BY ino LIMIT ?3",
    )?;
    let rows = stmt.query_map(params![parent as i64, after as i64, limit as i64], |r| {
        Ok(ChildName {
            ino: r.get::<_, i64>(0)? as u64,
            name: r.get(1)?,
            kind: r.get(2)?,
            mode: r.get(3)?,
        })
    })?;
    Ok(rows.collect::<Result<_, _>>()?)
}

pub fn has_children(conn: &Connection, parent: u64) -> Result<bool, CatalogError> {
    let mut stmt =
        conn.prepare_cached("SELECT 1 FROM nodes WHERE parent = ?1 AND ino != ?1 LIMIT 1")?;
    Ok(stmt.exists([parent as i64])?)
}

/// The staged files at or below `n` (a file, a directory, a vault or the root).
pub fn staged_at_or_below(conn: &Connection, n: &Node) -> Result<Vec<u64>, CatalogError> {
    if n.kind == Kind::File {
        return Ok(if n.dirty > 0 { vec![n.ino] } else { Vec::new() });
    }
    let mut stmt = conn.prepare_cached(
        "WITH RECURSIVE sub(ino, kind, dirty) AS ( \
             SELECT ino, kind, dirty FROM nodes WHERE parent = ?1 AND ino != ?1 \
             UNION ALL \
             SELECT n.ino, n.kind, n.dirty FROM nodes n JOIN sub ON n.parent = sub.ino \
             WHERE sub.kind != ?2) \
         SELECT ino FROM sub WHERE kind = ?2 AND dirty > 0",
    )?;
    let rows = stmt.query_map(params![n.ino as i64, Kind::File], |r| r.get::<_, i64>(0))?;
    Ok(rows
        .map(|r| r.map(|i| i as u64))
        .collect::<Result<_, _>>()?)
}

/// The archived files at or below directory `n` with no local data.
pub fn cold_at_or_below(conn: &Connection, n: &Node) -> Result<Vec<Node>, CatalogError> {
    let cols = COLUMNS
        .split(", ")
        .map(|c| format!("n.{}", c.trim()))
        .collect::<Vec<_>>()
        .join(", ");
    let mut stmt = conn.prepare_cached(&format!(
        "WITH RECURSIVE sub(ino, kind) AS ( \
             SELECT ino, kind FROM nodes WHERE parent = ?1 AND ino != ?1 \
             UNION ALL \
             SELECT c.ino, c.kind FROM nodes c JOIN sub ON c.parent = sub.ino \
             WHERE sub.kind != ?2) \
         SELECT {cols} FROM sub JOIN nodes n ON n.ino = sub.ino \
         WHERE n.kind = ?2 AND n.local = 0 AND n.archive_id IS NOT NULL AND n.size > 0"
    ))?;
    let rows = stmt.query_map(params![n.ino as i64, Kind::File], from_row)?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// Number of files in a vault, and their total size.
pub fn vault_usage(conn: &Connection, vault: u64) -> Result<(u64, u64), CatalogError> {
    let mut stmt = conn.prepare_cached(
        "SELECT COUNT(*), COALESCE(SUM(size), 0) FROM nodes WHERE vault = ?1 AND kind = ?2",
    )?;
    Ok(stmt.query_row(params![vault as i64, Kind::File], |r| {
        Ok((r.get::<_, i64>(0)? as u64, r.get::<_, i64>(1)? as u64))
    })?)
}

/// Total bytes of all files in the catalog.
pub fn total_bytes(conn: &Connection) -> Result<u64, CatalogError> {
    let mut stmt =
        conn.prepare_cached("SELECT COALESCE(SUM(size), 0) FROM nodes WHERE kind = ?1")?;
    Ok(stmt.query_row([Kind::File], |r| r.get::<_, i64>(0))? as u64)
}

/// The '/'-joined path of a node relative to its vault (empty for a vault itself).
pub fn vault_relative_path(conn: &Connection, ino: u64) -> Result<String, CatalogError> {
    let mut parts = Vec::new();
    let mut cur = get(conn, ino)?.ok_or(CatalogError::NotFound)?;
    while cur.kind != Kind::Vault && cur.kind != Kind::Root {
        parts.push(cur.name.clone());
        cur = get(conn, cur.parent)?.ok_or(CatalogError::NotFound)?;
    }
    parts.reverse();
    Ok(parts.join("/"))
}

/// The paths, relative to `dir`, of every file below it (staged or archived): what a move of
/// `dir` must check against the description limit.
pub fn files_below(conn: &Connection, dir: u64) -> Result<Vec<String>, CatalogError> {
    let mut stmt = conn.prepare_cached(
        "WITH RECURSIVE sub(ino, path, kind) AS ( \
             SELECT ino, name, kind FROM nodes WHERE parent = ?1 AND ino != ?1 \
             UNION ALL \
             SELECT n.ino, sub.path || '/' || n.name, n.kind \
             FROM nodes n JOIN sub ON n.parent = sub.ino WHERE sub.kind != ?2) \
         SELECT path FROM sub WHERE kind = ?2",
    )?;
    let rows = stmt.query_map(params![dir as i64, Kind::File], |r| r.get(0))?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// What a new node holds; the catalog assigns its ino.
#[derive(Debug, Clone, Default)]
pub struct NewNode<'a> {
    pub parent: u64,
    pub name: &'a str,
    pub vault: u64,
    pub size: u64,
    pub mtime_ns: i64,
    pub mode: Option<u32>,
    pub uid: Option<u32>,
    pub gid: Option<u32>,
    pub archive_id: Option<&'a str>,
    pub tree_hash: Option<&'a str>,
    pub description: Option<&'a str>,
    pub created_s: Option<i64>,
    /// A symlink's target.
    pub target: Option<&'a [u8]>,
    /// A device node's number.
    pub rdev: Option<u64>,
}

/// The statement [`insert`] runs.
///
/// `OR FAIL` rather than the default `ABORT`: with the link-count triggers on `nodes`, an
/// `ABORT` insert is a multi-write statement, so SQLite journals every page it touches into a
/// statement journal first, in case a later write of the same statement fails. That doubled
/// the cost of an insert (half the writer's time in a million-archive import). The statement
/// has nothing to undo: the name check fails before the row is written, and the trigger's
/// update cannot break a constraint; an I/O error rolls back the writer's savepoint anyway.
const INSERT: &str = "INSERT OR FAIL INTO nodes (parent, name, kind, vault, size, mtime_ns, \
    ctime_ns, mode, uid, gid, archive_id, tree_hash, description, created_s, archive_key, target, \
    rdev) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16)";

/// Inserts a node, failing with [`CatalogError::Exists`] if the name is taken.
pub fn insert(conn: &Connection, kind: Kind, n: &NewNode<'_>) -> Result<u64, CatalogError> {
    let mut stmt = conn.prepare_cached(INSERT)?;
    let result = stmt.execute(params![
        n.parent as i64,
        n.name,
        kind,
        n.vault as i64,
        n.size as i64,
        n.mtime_ns,
        n.mode,
        n.uid,
        n.gid,
        n.archive_id,
        n.tree_hash,
        n.description,
        n.created_s,
        n.archive_id.map(archive_key),
        n.target,
        n.rdev.map(|d| d as i64),
    ]);
    match result {
        Ok(_) => Ok(conn.last_insert_rowid() as u64),
        Err(rusqlite::Error::SqliteFailure(e, _))
            if e.code == rusqlite::ErrorCode::ConstraintViolation =>
        {
            Err(CatalogError::Exists)
        }
        Err(e) => Err(e.into()),
    }
}

/// Removes a node that has no children.
pub fn remove(conn: &Connection, ino: u64) -> Result<(), CatalogError> {
    if ino == ROOT_INO {
        return Err(CatalogError::NotFound);
    }
    if has_children(conn, ino)? {
        return Err(CatalogError::NotEmpty);
    }
    let n = conn.execute("DELETE FROM nodes WHERE ino = ?1", [ino as i64])?;
    if n == 0 {
        return Err(CatalogError::NotFound);
    }
    Ok(())
}

/// Attribute changes kept in the catalog (setattr).
#[derive(Debug, Clone, Copy, Default)]
pub struct AttrChange {
    pub mode: Option<u32>,
    pub uid: Option<u32>,
    pub gid: Option<u32>,
    pub mtime_ns: Option<i64>,
    pub atime_ns: Option<i64>,
    /// Takes set-user-ID away, and set-group-ID too when the group may execute or the file's
    /// group is not the writer's (when `writer` is given), from the mode and group as they are
    /// when the write runs (a chmod or chgrp queued just before is not undone). Ignored when
    /// `mode` is given.
    pub clear_set_id: bool,
    pub writer: Option<WriterGroup>,
}

/// The group of whoever writes a file, to tell whether they are in the file's group.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WriterGroup {
    pub gid: u32,
    /// The group a node without one of its own shows (the mount's).
    pub unset_shows: u32,
}

/// Sets what `c` names, and the ctime to now (every attribute change is a status change). An
/// atime that followed the mtime (NULL) keeps the old mtime when only the mtime changes, as
/// `touch -m` leaves the access time alone.
pub fn set_attrs(conn: &Connection, ino: u64, c: AttrChange) -> Result<(), CatalogError> {
    let n = conn.execute(
        // 2048 is set-user-ID, 1024 set-group-ID, 8 group execute.
        "UPDATE nodes SET mode = CASE WHEN ?2 IS NOT NULL THEN ?2 \
             WHEN ?8 THEN mode & ~(2048 | CASE WHEN COALESCE(gid, ?10) != ?9 OR mode & 8 \
                 THEN 1024 ELSE 0 END) \
             ELSE mode END, \
         uid = COALESCE(?3, uid), \
         gid = COALESCE(?4, gid), mtime_ns = COALESCE(?5, mtime_ns), ctime_ns = ?6, \
         atime_ns = COALESCE(?7, atime_ns, CASE WHEN ?5 IS NOT NULL THEN mtime_ns END) \
         WHERE ino = ?1",
        params![
            ino as i64,
            c.mode,
            c.uid,
            c.gid,
            c.mtime_ns,
            super::now_ns(),
            c.atime_ns,
            c.clear_set_id,
            c.writer.map(|w| w.gid),
            c.writer.map(|w| w.unset_shows),
        ],
    )?;
    if n == 0 {
        return Err(CatalogError::NotFound);
    }
    Ok(())
}

/// An entry was added to or removed from directory `dir`: its mtime and ctime become `now_ns`
/// (its atime, if it followed the mtime, stays where it was). The root's times are left alone:
/// its entries are vaults, which come and go with Glacier's vault list.
pub fn entries_changed(conn: &Connection, dir: u64, now_ns: i64) -> Result<(), CatalogError> {
    conn.prepare_cached(
        "UPDATE nodes SET atime_ns = COALESCE(atime_ns, mtime_ns), mtime_ns = ?2, ctime_ns = ?2 \
         WHERE ino = ?1 AND kind IN (?3, ?4)",
    )?
    .execute(params![dir as i64, now_ns, Kind::Vault, Kind::Dir])?;
    Ok(())
}

/// Moves `ino` to `new_parent`/`new_name`. The caller has checked kinds and replacement rules.
pub fn rename(
    conn: &Connection,
    ino: u64,
    new_parent: u64,
    new_name: &str,
) -> Result<(), CatalogError> {
    conn.execute(
        "UPDATE nodes SET parent = ?2, name = ?3, ctime_ns = ?4 WHERE ino = ?1",
        params![ino as i64, new_parent as i64, new_name, super::now_ns()],
    )?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::Catalog;

    fn dir(parent: u64, name: &str, vault: u64) -> NewNode<'_> {
        NewNode {
            parent,
            name,
            vault,
            mtime_ns: 1,
            ..Default::default()
        }
    }

    #[test]
    fn tree_operations() {
        let tmp = tempfile::tempdir().unwrap();
        let cat = Catalog::open(tmp.path()).unwrap();
        let (v, a, f) = cat
            .write(|tx| {
                let v = insert(tx, Kind::Vault, &dir(ROOT_INO, "v", 0))?;
                let a = insert(tx, Kind::Dir, &dir(v, "a", v))?;
                let f = insert(
                    tx,
                    Kind::File,
                    &NewNode {
                        size: 10,
                        ..dir(a, "f", v)
                    },
                )?;
                Ok((v, a, f))
            })
            .unwrap();
        cat.read(|c| {
            assert_eq!(lookup(c, v, "a")?.map(|n| n.ino), Some(a));
            assert_eq!(vault_relative_path(c, f)?, "a/f");
            assert_eq!(vault_usage(c, v)?, (1, 10));
            assert_eq!(
                children(c, ROOT_INO, 0, 10)?.len(),
                1,
                "root lists only the vault"
            );
            assert!(
                lookup(c, ROOT_INO, "")?.is_none(),
                "root is not its own child"
            );
            Ok(())
        })
        .unwrap();
        let dup = cat.write(move |tx| insert(tx, Kind::File, &dir(a, "f", v)));
        assert!(matches!(dup, Err(CatalogError::Exists)));
        let busy = cat.write(move |tx| remove(tx, a));
        assert!(matches!(busy, Err(CatalogError::NotEmpty)));
    }

    #[test]
    fn clearing_set_id_works_from_the_stored_mode() {
        let tmp = tempfile::tempdir().unwrap();
        let cat = Catalog::open(tmp.path()).unwrap();
        // The file has no group of its own and shows group 0; the writer is of group 0, or 7.
        let cases = [
            // (stored, the writer outside the file's group, expected)
            (0o4755, false, 0o0755),
            (0o6775, false, 0o0775),
            (0o2745, false, 0o2745),
            (0o2745, true, 0o0745),
            (0o1777, true, 0o1777),
        ];
        for (i, (stored, gid, expected)) in cases.into_iter().enumerate() {
            let got = cat
                .write(move |tx| {
                    let v = match lookup(tx, ROOT_INO, "v")? {
                        Some(v) => v.ino,
                        None => insert(tx, Kind::Vault, &dir(ROOT_INO, "v", 0))?,
                    };
                    let name = format!("f{i}");
                    let f = insert(tx, Kind::File, &dir(v, &name, v))?;
                    let set = |c| set_attrs(tx, f, c);
                    set(AttrChange {
                        mode: Some(stored),
                        ..Default::default()
                    })?;
                    set(AttrChange {
                        clear_set_id: true,
                        writer: Some(WriterGroup {
                            gid: if gid { 7 } else { 0 },
                            unset_shows: 0,
                        }),
                        ..Default::default()
                    })?;
                    Ok(get(tx, f)?.and_then(|n| n.mode))
                })
                .unwrap();
            assert_eq!(got, Some(expected), "{stored:o}");
        }
    }

    #[test]
    fn an_insert_never_aborts_so_needs_no_statement_journal() {
        // SQLite keeps a statement journal only for a statement that may ABORT; the program
        // of an insert shows each constraint check's action in P2 of its Halt/HaltIfNull
        // (OE_Abort is 2, OE_Fail 3), including those of the link-count triggers it runs.
        let tmp = tempfile::tempdir().unwrap();
        let cat = Catalog::open(tmp.path()).unwrap();
        let (checks, aborts) = cat
            .read(|c| {
                let mut stmt = c.prepare(&format!("EXPLAIN {INSERT}"))?;
                // Explaining binds nothing: the parameters stay unbound.
                let mut rows = stmt.raw_query();
                let mut ops = Vec::new();
                while let Some(r) = rows.next()? {
                    ops.push((r.get::<_, String>(1)?, r.get::<_, i64>(3)?));
                }
                let checks: Vec<_> = ops
                    .iter()
                    .filter(|(op, _)| op.starts_with("Halt"))
                    .collect();
                let aborts = checks.iter().filter(|(_, p2)| *p2 == 2).count();
                Ok((checks.len(), aborts))
            })
            .unwrap();
        assert!(checks > 0, "the insert checks its constraints");
        assert_eq!(aborts, 0, "no constraint check of an insert may ABORT");
    }

    #[test]
    fn keyset_pages_cover_every_child_once() {
        let tmp = tempfile::tempdir().unwrap();
        let cat = Catalog::open(tmp.path()).unwrap();
        let v = cat
            .write(|tx| {
                let v = insert(tx, Kind::Vault, &dir(ROOT_INO, "v", 0))?;
                for i in 0..250 {
                    insert(tx, Kind::Dir, &dir(v, &format!("d{i}"), v))?;
                }
                Ok(v)
            })
            .unwrap();
        let mut seen = Vec::new();
        let mut after = 0;
        loop {
            let page = cat.read(|c| children(c, v, after, 64)).unwrap();
            let Some(last) = page.last() else { break };
            after = last.ino;
            seen.extend(page.into_iter().map(|n| n.name));
        }
        seen.sort();
        seen.dedup();
        assert_eq!(seen.len(), 250);
    }
}
