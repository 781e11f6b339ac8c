//! The manifest of one vault: every file below it with its archive, under the path the mount
//! shows (the names stored on the nodes, which already carry the decoding and collision rules
//! applied when the archive was placed), for `glacierfs inventory export`.
//!
//! Everything is read in one snapshot (a read transaction), so the counts of what is left out
//! agree with the rows even while a mount writes to the same catalog. Rows are streamed in
//! path order (SQLite's BINARY collation compares UTF-8 bytes, which is the byte order the
//! command promises), so a vault of millions of archives is never held in memory.

use rusqlite::{params, Connection, Row};

use super::nodes::Kind;
use super::{vaults, CatalogError};

/// One file of the manifest: a file whose archive holds its current content.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ManifestFile {
    /// Relative to the vault, `/`-separated.
    pub path: String,
    pub archive_id: String,
    pub size: u64,
    /// Hex, as Glacier reports it.
    pub tree_hash: Option<String>,
    /// The archive's CreationDate, Unix seconds.
    pub created_s: Option<i64>,
    /// The archive's description, as Glacier keeps it.
    pub description: Option<String>,
}

/// Which rows to read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rows {
    /// Every file with an archive.
    EveryFile,
    /// One row per archive: of the files that share one, the first path in byte order.
    OnePerArchive,
}

/// The files of a vault a manifest leaves out, because no archive holds their content.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Unlisted {
    /// Staged and never uploaded: no archive yet.
    pub staged: u64,
    /// Archived once, but changed since and not uploaded again: the archive is an older
    /// version, and its size is not the file's.
    pub changed: u64,
    /// Empty files, which live in the catalog only (an archive holds at least one byte).
    pub empty: u64,
}

/// What [`read_vault`] went through.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Summary {
    /// Rows handed to the caller.
    pub rows: u64,
    pub unlisted: Unlisted,
}

/// The files below the vault, each with its path: a recursive walk down `nodes_by_parent`.
/// `?1` is the vault's ino, `?2` the file kind.
const SUBTREE: &str = "WITH RECURSIVE sub(ino, path, kind) AS ( \
         SELECT ino, name, kind FROM nodes WHERE parent = ?1 AND ino != ?1 \
         UNION ALL \
         SELECT n.ino, sub.path || '/' || n.name, n.kind \
         FROM nodes n JOIN sub ON n.parent = sub.ino WHERE sub.kind != ?2) ";

/// A file is listed when an archive holds its current content: it has one and nothing is
/// staged since.
const LISTED: &str = "sub.kind = ?2 AND n.archive_id IS NOT NULL AND n.dirty = 0";

fn from_row(r: &Row<'_>) -> rusqlite::Result<ManifestFile> {
    Ok(ManifestFile {
        path: r.get(0)?,
        archive_id: r.get(1)?,
        size: r.get::<_, i64>(2)? as u64,
        tree_hash: r.get(3)?,
        created_s: r.get(4)?,
        description: r.get(5)?,
    })
}

/// Reads vault `vault`'s manifest, handing each row to `each` in path byte order, in one
/// snapshot. None when the catalog has no such vault, or only one being deleted (which the
/// mount no longer shows).
pub fn read_vault<E: From<CatalogError>>(
    conn: &Connection,
    vault: &str,
    rows: Rows,
    mut each: impl FnMut(ManifestFile) -> Result<(), E>,
) -> Result<Option<Summary>, E> {
    // Read-only: dropped unfinished (a rollback) or finished, nothing changes either way. The
    // transaction is only there to read the counts and the rows from one snapshot.
    let snapshot = conn.unchecked_transaction().map_err(CatalogError::from)?;
    let Some(v) = vaults::by_name(&snapshot, vault)? else {
        return Ok(None);
    };
    if v.state == "deleting" {
        return Ok(None);
    }
    let unlisted = count_unlisted(&snapshot, v.ino)?;
    let sql = match rows {
        Rows::EveryFile => format!(
            "{SUBTREE}SELECT sub.path, n.archive_id, n.size, n.tree_hash, n.created_s, \
             n.description FROM sub JOIN nodes n ON n.ino = sub.ino WHERE {LISTED} \
             ORDER BY sub.path"
        ),
        // SQLite takes the bare columns of a MIN() query from the row that has the minimum,
        // so each archive's row is its first path's.
        Rows::OnePerArchive => format!(
            "{SUBTREE}SELECT MIN(sub.path), n.archive_id, n.size, n.tree_hash, n.created_s, \
             n.description FROM sub JOIN nodes n ON n.ino = sub.ino WHERE {LISTED} \
             GROUP BY n.archive_id ORDER BY 1"
        ),
    };
    let mut stmt = snapshot.prepare(&sql).map_err(CatalogError::from)?;
    let mut found = stmt
        .query(params![v.ino as i64, Kind::File])
        .map_err(CatalogError::from)?;
    let mut n = 0u64;
    while let Some(row) = found.next().map_err(CatalogError::from)? {
        each(from_row(row).map_err(CatalogError::from)?)?;
        n += 1;
    }
    Ok(Some(Summary { rows: n, unlisted }))
}

fn count_unlisted(conn: &Connection, vault: u64) -> Result<Unlisted, CatalogError> {
    let mut stmt = conn.prepare(&format!(
        "{SUBTREE}SELECT \
         COALESCE(SUM(n.archive_id IS NULL AND n.dirty != 0), 0), \
         COALESCE(SUM(n.archive_id IS NOT NULL AND n.dirty != 0), 0), \
         COALESCE(SUM(n.archive_id IS NULL AND n.dirty = 0), 0) \
         FROM sub JOIN nodes n ON n.ino = sub.ino WHERE sub.kind = ?2"
    ))?;
    Ok(stmt.query_row(params![vault as i64, Kind::File], |r| {
        Ok(Unlisted {
            staged: r.get::<_, i64>(0)? as u64,
            changed: r.get::<_, i64>(1)? as u64,
            empty: r.get::<_, i64>(2)? as u64,
        })
    })?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::nodes::{self, NewNode};
    use crate::catalog::{files, Catalog};

    fn archived<'a>(parent: u64, name: &'a str, vault: u64, id: &'a str) -> NewNode<'a> {
        NewNode {
            parent,
            name,
            vault,
            size: 7,
            mtime_ns: 1,
            archive_id: Some(id),
            tree_hash: Some("ab"),
            description: Some("desc"),
            created_s: Some(1_600_000_000),
            ..Default::default()
        }
    }

    fn plain(parent: u64, name: &str, vault: u64) -> NewNode<'_> {
        NewNode {
            parent,
            name,
            vault,
            mtime_ns: 1,
            ..Default::default()
        }
    }

    /// A vault with nested directories, names whose byte order differs from a walk's order,
    /// one archive shared by two files, and each kind of file a manifest leaves out.
    fn populated() -> (tempfile::TempDir, Catalog) {
        let tmp = tempfile::tempdir().unwrap();
        let cat = Catalog::open(tmp.path()).unwrap();
        cat.write(|tx| {
            let v = vaults::ensure(tx, "v", "present")?.ino;
            let other = vaults::ensure(tx, "other", "present")?.ino;
            nodes::insert(tx, Kind::File, &archived(other, "elsewhere", other, "id-x"))?;
            let d = nodes::insert(tx, Kind::Dir, &plain(v, "d", v))?;
            let deep = nodes::insert(tx, Kind::Dir, &plain(d, "日本", v))?;
            nodes::insert(tx, Kind::File, &archived(deep, "é, \"q\".txt", v, "id-a"))?;
            nodes::insert(tx, Kind::File, &archived(v, "d b", v, "id-b"))?;
            nodes::insert(tx, Kind::File, &archived(v, "twin-2", v, "id-t"))?;
            nodes::insert(tx, Kind::File, &archived(d, "twin-1", v, "id-t"))?;
            nodes::insert(tx, Kind::Dir, &plain(v, "empty-dir", v))?;
            let staged = nodes::insert(tx, Kind::File, &plain(v, "staged", v))?;
            files::stage_created(tx, staged, 5)?;
            let changed = nodes::insert(tx, Kind::File, &archived(v, "changed", v, "id-c"))?;
            files::open_for_write(tx, changed, 6, false)?;
            nodes::insert(tx, Kind::File, &plain(v, "empty", v))?;
            Ok(())
        })
        .unwrap();
        (tmp, cat)
    }

    fn read(cat: &Catalog, vault: &str, rows: Rows) -> Option<(Vec<ManifestFile>, Summary)> {
        let vault = vault.to_owned();
        cat.read(move |c| {
            let mut out = Vec::new();
            let summary = read_vault::<CatalogError>(c, &vault, rows, |f| {
                out.push(f);
                Ok(())
            })?;
            Ok(summary.map(|s| (out, s)))
        })
        .unwrap()
    }

    #[test]
    fn every_archived_file_in_path_byte_order() {
        let (_tmp, cat) = populated();
        let (files, summary) = read(&cat, "v", Rows::EveryFile).unwrap();
        let paths: Vec<&str> = files.iter().map(|f| f.path.as_str()).collect();
        // ' ' (0x20) sorts before '/' (0x2f): "d b" comes before "d/...".
        assert_eq!(paths, ["d b", "d/twin-1", "d/日本/é, \"q\".txt", "twin-2"]);
        let mut sorted = paths.clone();
        sorted.sort_by(|a, b| a.as_bytes().cmp(b.as_bytes()));
        assert_eq!(paths, sorted);
        let a = &files[2];
        assert_eq!(
            (a.archive_id.as_str(), a.size, a.tree_hash.as_deref()),
            ("id-a", 7, Some("ab"))
        );
        assert_eq!(
            (a.created_s, a.description.as_deref()),
            (Some(1_600_000_000), Some("desc"))
        );
        assert_eq!(summary.rows, 4);
        assert_eq!(
            summary.unlisted,
            Unlisted {
                staged: 1,
                changed: 1,
                empty: 1
            }
        );
    }

    #[test]
    fn a_shared_archive_is_one_row_under_its_first_path() {
        let (_tmp, cat) = populated();
        let (files, summary) = read(&cat, "v", Rows::OnePerArchive).unwrap();
        let rows: Vec<(&str, &str)> = files
            .iter()
            .map(|f| (f.archive_id.as_str(), f.path.as_str()))
            .collect();
        assert_eq!(
            rows,
            [
                ("id-b", "d b"),
                ("id-t", "d/twin-1"),
                ("id-a", "d/日本/é, \"q\".txt")
            ]
        );
        assert_eq!(summary.rows, 3);
    }

    #[test]
    fn unknown_and_deleting_vaults_have_no_manifest() {
        let (_tmp, cat) = populated();
        assert!(read(&cat, "nope", Rows::EveryFile).is_none());
        let (other, _) = read(&cat, "other", Rows::EveryFile).unwrap();
        assert_eq!(other.len(), 1, "each vault lists only its own files");
        let ino = cat
            .read(|c| Ok(vaults::by_name(c, "other")?.unwrap().ino))
            .unwrap();
        cat.write(move |tx| vaults::set_state(tx, ino, "deleting"))
            .unwrap();
        assert!(read(&cat, "other", Rows::EveryFile).is_none());
    }

    #[test]
    fn the_callers_error_stops_the_walk() {
        let (_tmp, cat) = populated();
        #[derive(Debug)]
        enum E {
            Catalog,
            Stop,
        }
        impl From<CatalogError> for E {
            fn from(_: CatalogError) -> E {
                E::Catalog
            }
        }
        let mut seen = 0;
        let result = cat
            .read(|c| {
                Ok(read_vault(c, "v", Rows::EveryFile, |_| {
                    seen += 1;
                    Err(E::Stop)
                }))
            })
            .unwrap();
        assert!(matches!(result, Err(E::Stop)), "{result:?}");
        assert_eq!(seen, 1);
    }
}
