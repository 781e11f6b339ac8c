//! Copies of the catalog, and the rebuild of a damaged one (SEMANTICS.md, "When the catalog is damaged").
//!
//! A mount saves a consistent copy (`VACUUM INTO`, which reads through a snapshot and needs no
//! writer) when it stops cleanly and once a day while it runs. `glacierfs catalog rebuild`
//! puts the damaged catalog aside and starts again from the latest sound copy, or from nothing
//! when there is none; either way the next mount re-reads each vault's inventory, and files
//! staged but not uploaded yet come back from their sidecars (`recovery`).

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use rusqlite::{Connection, OpenFlags};

use super::{Catalog, CatalogError, Kind, DB_FILE};

/// The latest copy, beside the catalog.
pub const COPY_FILE: &str = "catalog.copy.db";

impl Catalog {
    /// Where [`Catalog::save_copy`] puts the copy: beside the catalog.
    pub fn copy_path(&self) -> PathBuf {
        self.path().with_file_name(COPY_FILE)
    }

    /// Saves a copy of everything committed so far as [`COPY_FILE`], atomically: a crash while
    /// saving leaves the previous copy.
    pub fn save_copy(&self) -> Result<(), CatalogError> {
        let copy = self.copy_path();
        let tmp = copy.with_extension("db.tmp");
        let _ = std::fs::remove_file(&tmp);
        let target = tmp.clone();
        self.read(move |c| {
            c.execute("VACUUM INTO ?1", [target.to_string_lossy().as_ref()])?;
            Ok(())
        })?;
        std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o600))?;
        std::fs::File::open(&tmp)?.sync_all()?;
        std::fs::rename(&tmp, &copy)?;
        if let Some(dir) = copy.parent() {
            std::fs::File::open(dir)?.sync_all()?;
        }
        Ok(())
    }
}

/// What a rebuild did.
#[derive(Debug)]
pub struct Rebuilt {
    /// Where the damaged catalog now is, if there was one.
    pub kept_as: Option<PathBuf>,
    /// When the copy restored was saved (Unix seconds), if one was.
    pub copy_saved_s: Option<i64>,
    /// Entries in the restored catalog.
    pub entries: u64,
    /// Staged entries of the copy whose data is gone (uploaded and evicted since the copy was
    /// saved): dropped, since the inventory brings their archives back.
    pub dropped: usize,
}

/// Puts the catalog in `dir` aside and restores the latest sound copy (or nothing). The caller
/// holds the cache directory's lock, so no mount is using either.
pub fn rebuild(dir: &Path) -> Result<Rebuilt, CatalogError> {
    let db = dir.join(DB_FILE);
    let stamp = super::now_s();
    let mut kept_as = None;
    if db.exists() {
        let aside = dir.join(format!("catalog.damaged-{stamp}.db"));
        for suffix in ["", "-wal", "-shm"] {
            let from = PathBuf::from(format!("{}{suffix}", db.display()));
            if from.exists() {
                std::fs::rename(&from, format!("{}{suffix}", aside.display()))?;
            }
        }
        kept_as = Some(aside);
    }
    let copy = dir.join(COPY_FILE);
    let mut rebuilt = Rebuilt {
        kept_as,
        copy_saved_s: None,
        entries: 0,
        dropped: 0,
    };
    match sound_copy(&copy) {
        Ok(saved_s) => {
            let tmp = dir.join(format!("{DB_FILE}.restoring"));
            std::fs::copy(&copy, &tmp)?;
            std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o600))?;
            std::fs::File::open(&tmp)?.sync_all()?;
            std::fs::rename(&tmp, &db)?;
            rebuilt.copy_saved_s = Some(saved_s);
        }
        Err(reason) => log::warn!("no sound catalog copy to restore ({reason}); starting empty"),
    }
    let catalog = Catalog::open(dir)?;
    let data = dir.join("data");
    let (entries, dropped) = catalog.write(move |tx| {
        // Staged in the copy but without data now: uploaded since, then evicted.
        let missing: Vec<i64> = {
            let mut stmt = tx.prepare("SELECT ino FROM nodes WHERE kind = ?1 AND dirty > 0")?;
            let inos = stmt.query_map([Kind::File], |r| r.get::<_, i64>(0))?;
            inos.collect::<Result<Vec<_>, _>>()?
                .into_iter()
                .filter(|ino| !data.join(ino.to_string()).exists())
                .collect()
        };
        for ino in &missing {
            tx.execute("DELETE FROM uploads WHERE ino = ?1", [ino])?;
            tx.execute("DELETE FROM nodes WHERE ino = ?1", [ino])?;
        }
        // The copy's inventories are older than the vaults: the next mount fetches new ones.
        tx.execute("UPDATE vaults SET inventory_date = NULL", [])?;
        let entries: i64 = tx.query_row("SELECT COUNT(*) FROM nodes", [], |r| r.get(0))?;
        Ok((entries.max(0) as u64, missing.len()))
    })?;
    catalog.close();
    rebuilt.entries = entries;
    rebuilt.dropped = dropped;
    Ok(rebuilt)
}

/// Why a copy cannot be restored; logged as the reason a rebuild starts empty.
#[derive(Debug, thiserror::Error)]
enum UnsoundCopy {
    /// Missing or unreadable.
    #[error(transparent)]
    Io(#[from] std::io::Error),
    /// Not a database SQLite can open or check.
    #[error(transparent)]
    Sqlite(#[from] rusqlite::Error),
    /// SQLite's own check found damage; its verdict says what.
    #[error("{verdict}")]
    Damaged { verdict: String },
}

/// Whether `copy` passes SQLite's own check; returns when it was saved.
fn sound_copy(copy: &Path) -> Result<i64, UnsoundCopy> {
    let meta = std::fs::metadata(copy)?;
    let conn = Connection::open_with_flags(copy, OpenFlags::SQLITE_OPEN_READ_ONLY)?;
    let verdict: String = conn.query_row("PRAGMA quick_check", [], |r| r.get(0))?;
    if verdict != "ok" {
        return Err(UnsoundCopy::Damaged { verdict });
    }
    let saved = meta
        .modified()
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_secs() as i64);
    Ok(saved)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn add_files(catalog: &Catalog, names: &[&str], dirty: bool) {
        let names: Vec<String> = names.iter().map(|s| s.to_string()).collect();
        catalog
            .write(move |tx| {
                for n in &names {
                    tx.execute(
                        "INSERT INTO nodes (parent, name, kind, vault, mtime_ns, ctime_ns, dirty) \
                         VALUES (1, ?1, ?3, 0, 0, 0, ?2)",
                        rusqlite::params![n, dirty as i64, Kind::File],
                    )?;
                }
                Ok(())
            })
            .unwrap();
    }

    fn names(dir: &Path) -> Vec<String> {
        let c = Connection::open(dir.join(DB_FILE)).unwrap();
        let mut stmt = c
            .prepare("SELECT name FROM nodes WHERE kind = ?1 ORDER BY name")
            .unwrap();
        let rows = stmt.query_map([Kind::File], |r| r.get(0)).unwrap();
        rows.collect::<Result<_, _>>().unwrap()
    }

    #[test]
    fn a_rebuild_restores_the_latest_copy_and_keeps_the_damaged_catalog() {
        let dir = tempfile::tempdir().unwrap();
        let catalog = Catalog::open(dir.path()).unwrap();
        add_files(&catalog, &["in-copy"], false);
        catalog.save_copy().unwrap();
        add_files(&catalog, &["after-copy"], false);
        catalog.close();
        drop(catalog);
        let copy = dir.path().join(COPY_FILE);
        assert_eq!(
            std::fs::metadata(&copy).unwrap().permissions().mode() & 0o777,
            0o600
        );
        std::fs::write(dir.path().join(DB_FILE), vec![0x5a; 8192]).unwrap();
        assert!(Catalog::open(dir.path()).is_err());

        let rebuilt = rebuild(dir.path()).unwrap();
        assert!(rebuilt.copy_saved_s.is_some());
        let kept = rebuilt.kept_as.expect("the damaged catalog is kept");
        assert_eq!(std::fs::read(&kept).unwrap(), vec![0x5a; 8192]);
        assert_eq!(names(dir.path()), ["in-copy"]);
        Catalog::open(dir.path())
            .expect("the rebuilt catalog opens")
            .close();
    }

    #[test]
    fn staged_entries_whose_data_is_gone_are_dropped_and_the_rest_kept() {
        let dir = tempfile::tempdir().unwrap();
        let catalog = Catalog::open(dir.path()).unwrap();
        add_files(&catalog, &["gone", "still-here"], true);
        let kept_ino: i64 = catalog
            .read(|c| {
                Ok(
                    c.query_row("SELECT ino FROM nodes WHERE name = 'still-here'", [], |r| {
                        r.get(0)
                    })?,
                )
            })
            .unwrap();
        catalog.save_copy().unwrap();
        catalog.close();
        drop(catalog);
        std::fs::create_dir_all(dir.path().join("data")).unwrap();
        std::fs::write(dir.path().join("data").join(kept_ino.to_string()), b"x").unwrap();
        let rebuilt = rebuild(dir.path()).unwrap();
        assert_eq!(rebuilt.dropped, 1);
        assert_eq!(names(dir.path()), ["still-here"]);
    }

    #[test]
    fn without_a_copy_the_rebuild_starts_empty() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join(DB_FILE),
            b"not a database at all, not at all",
        )
        .unwrap();
        let rebuilt = rebuild(dir.path()).unwrap();
        assert!(rebuilt.copy_saved_s.is_none());
        assert!(rebuilt.kept_as.is_some());
        assert_eq!(names(dir.path()), Vec::<String>::new());
    }
}
