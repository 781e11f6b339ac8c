//! Opening the catalog's database: creating it private, checking it is whole (its length, and
//! SQLite's own check after an unclean stop), migrating its schema, starting the writer, and
//! the read-only connections; closing it leaves the marker of a clean stop.

use std::path::Path;
use std::sync::{Arc, Mutex};

use rusqlite::{Connection, OpenFlags, OptionalExtension};

use super::changes::Feed;
use super::reserve::{ensure_reserve, RESERVE_FILE};
use super::{schema, writer, Catalog, CatalogError, Inner};

/// The database's file name in the cache directory.
pub(super) const DB_FILE: &str = "catalog.db";

impl Catalog {
    /// Opens (creating and migrating as needed) the catalog in `dir`.
    pub fn open(dir: &Path) -> Result<Catalog, CatalogError> {
        let path = dir.join(DB_FILE);
        let fresh = !path.exists();
        if fresh {
            // Create it 0600 ourselves: SQLite gives the -wal and -shm files the same mode.
            create_private_file(&path)?;
        }
        check_length(&path)?;
        let mut conn = open_write_connection(&path).map_err(|e| damaged(&path, e))?;
        schema::migrate(&mut conn).map_err(|e| damaged(&path, e))?;
        // Cleared here, set again by a clean close: finding it unset means the last run died.
        let clean = conn
            .query_row("SELECT value FROM meta WHERE key = 'clean_stop'", [], |r| {
                r.get::<_, String>(0)
            })
            .optional()
            .map_err(|e| damaged(&path, e.into()))?
            .is_some();
        if !clean && !fresh {
            // After a crash, SQLite's own check runs before anything is served: WAL and the
            // crash model say it finds nothing, but a disk that lied about a flush, or a
            // file cut short, must stop the mount rather than serve a wrong tree. It costs a
            // read of the catalog, and only after an unclean stop.
            let verdict: String = conn
                .query_row("PRAGMA quick_check", [], |r| r.get(0))
                .map_err(|e| damaged(&path, e.into()))?;
            if verdict != "ok" {
                return Err(CatalogError::Damaged {
                    path,
                    detail: verdict,
                });
            }
            log::info!("catalog checked after an unclean stop: ok");
        }
        conn.execute("DELETE FROM meta WHERE key = 'clean_stop'", [])?;
        ensure_reserve(dir);
        let reserve = dir.join(RESERVE_FILE);
        let abandoned = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let changes = Arc::new(Feed::default());
        let (tx, handle) = writer::spawn(conn, reserve, abandoned.clone(), Arc::clone(&changes))?;
        let catalog = Catalog {
            inner: Arc::new(Inner {
                path,
                writer: Mutex::new(Some(tx)),
                writer_thread: Mutex::new(Some(handle)),
                abandoned,
                readers: Mutex::new(Vec::new()),
                changes,
            }),
        };
        Ok(catalog)
    }

    /// Opens an existing catalog for reading only (`glacierfs status`, beside a running mount):
    /// no writer, no migration, no lock.
    pub fn open_read_only(dir: &Path) -> Result<Catalog, CatalogError> {
        let path = dir.join(DB_FILE);
        let conn = open_read_connection(&path)?;
        let version: u32 = conn.query_row("PRAGMA user_version", [], |r| r.get(0))?;
        if version > schema::current_version() {
            return Err(CatalogError::TooNew {
                found: version,
                supported: schema::current_version(),
            });
        }
        Ok(Catalog {
            inner: Arc::new(Inner {
                path,
                writer: Mutex::new(None),
                writer_thread: Mutex::new(None),
                abandoned: Arc::new(std::sync::atomic::AtomicBool::new(false)),
                readers: Mutex::new(vec![conn]),
                changes: Arc::default(),
            }),
        })
    }

    /// Stops the writer after the queued operations, and checkpoints the WAL.
    pub fn close(&self) {
        // The marker of a clean stop goes last, behind everything still queued.
        let _ = self.write(|tx| {
            tx.execute(
                "INSERT OR REPLACE INTO meta (key, value) VALUES ('clean_stop', '1')",
                [],
            )?;
            Ok(())
        });
        crate::locks::lock(&self.inner.writer).take();
        if let Some(h) = crate::locks::lock(&self.inner.writer_thread).take() {
            let _ = h.join();
        }
    }

    /// Stops the writer as a killed process would: what is queued and not yet committed is
    /// dropped, a batch being run is rolled back, and no write is taken after this returns.
    /// The in-process tests crash a stack with it, so that nothing of the old stack commits
    /// behind the back of the one started after it (which a killed daemon could never do).
    pub fn abandon(&self) {
        self.inner
            .abandoned
            .store(true, std::sync::atomic::Ordering::SeqCst);
        crate::locks::lock(&self.inner.writer).take();
        if let Some(h) = crate::locks::lock(&self.inner.writer_thread).take() {
            let _ = h.join();
        }
    }
}

/// A catalog file shorter than its own header says was cut short (a full disk, a bad copy):
/// SQLite would only notice when a query reaches the missing pages. Only meaningful with no
/// write-ahead log to replay: a checkpoint cut off by a crash can leave the file short of its
/// header, and the WAL completes it on open (the crash suite found this). Nor with a rollback
/// journal left by a bulk import that died: the database rolls back from it on open.
fn check_length(path: &Path) -> Result<(), CatalogError> {
    use std::io::Read;
    for suffix in ["-wal", "-journal"] {
        let mut log = path.as_os_str().to_owned();
        log.push(suffix);
        if std::fs::metadata(&log).is_ok_and(|m| m.len() > 0) {
            return Ok(());
        }
    }
    let mut header = [0u8; 100];
    let len = std::fs::metadata(path)?.len();
    if len == 0 {
        return Ok(());
    }
    let short = || CatalogError::Damaged {
        path: path.to_owned(),
        detail: format!("the file is cut short at {len} bytes"),
    };
    if len < 100 {
        return Err(short());
    }
    std::fs::File::open(path)?.read_exact(&mut header)?;
    if &header[..16] != b"SQLite format 3\0" {
        return Err(CatalogError::Damaged {
            path: path.to_owned(),
            detail: "not a SQLite database".into(),
        });
    }
    let be32 = |at: usize| {
        u32::from_be_bytes([header[at], header[at + 1], header[at + 2], header[at + 3]])
    };
    let page_size = match u16::from_be_bytes([header[16], header[17]]) {
        1 => 65_536,
        n => u64::from(n),
    };
    // The page count in the header is only valid when the change counter matches the
    // version-valid-for number (the SQLite file format, section 1.3.7).
    if be32(24) == be32(92) && u64::from(be32(28)) * page_size > len {
        return Err(short());
    }
    Ok(())
}

/// A catalog SQLite cannot read says so in words a user can act on.
fn damaged(path: &Path, e: CatalogError) -> CatalogError {
    match e {
        CatalogError::Sqlite(rusqlite::Error::SqliteFailure(f, msg))
            if matches!(
                f.code,
                rusqlite::ErrorCode::DatabaseCorrupt | rusqlite::ErrorCode::NotADatabase
            ) =>
        {
            CatalogError::Damaged {
                path: path.to_owned(),
                detail: msg.unwrap_or_else(|| f.to_string()),
            }
        }
        other => other,
    }
}

fn create_private_file(path: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .open(path)
        .map(drop)
}

fn open_write_connection(path: &Path) -> Result<Connection, CatalogError> {
    let conn = Connection::open(path)?;
    conn.execute_batch(
        "PRAGMA journal_mode = WAL;
         PRAGMA synchronous = NORMAL;
         PRAGMA wal_autocheckpoint = 8192;
         PRAGMA foreign_keys = OFF;
         PRAGMA cache_size = -32768;",
    )?;
    conn.busy_timeout(std::time::Duration::from_secs(30))?;
    conn.set_prepared_statement_cache_capacity(STATEMENT_CACHE);
    Ok(conn)
}

/// Prepared statements kept per connection. rusqlite keeps 16, fewer than the statements one
/// file's create, close, chmod, touch and rename use, so each was parsed anew every time.
const STATEMENT_CACHE: usize = 128;

pub(super) fn open_read_connection(path: &Path) -> Result<Connection, CatalogError> {
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )?;
    conn.busy_timeout(std::time::Duration::from_secs(30))?;
    // No memory map (mmap_size): it took a quarter off the daemon's CPU for an uncached
    // listing, but every page a scan touched (the snapshot engine's digest reads them all)
    // then counted in the daemon's resident memory: 464 MiB idle over a million entries,
    // where the kernel's page cache holds the same pages unseen. Listings are kept by the
    // kernel now, so the daemon reads a directory once, not at every `ls`.
    conn.execute_batch("PRAGMA cache_size = -16384;")?;
    conn.set_prepared_statement_cache_capacity(STATEMENT_CACHE);
    Ok(conn)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::Identity;

    #[test]
    fn database_files_are_private() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let cat = Catalog::open(dir.path()).unwrap();
        cat.bind_identity(&Identity {
            endpoint: String::new(),
            region: "us-east-1".into(),
            account: "-".into(),
        })
        .unwrap();
        let mode = std::fs::metadata(cat.path()).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    #[test]
    fn a_damaged_catalog_is_refused_with_advice() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(DB_FILE), vec![0x5a; 64 * 1024]).unwrap();
        let err = Catalog::open(dir.path()).err().expect("refused");
        assert!(matches!(err, CatalogError::Damaged { .. }), "{err}");
        assert!(
            err.to_string().contains("glacierfs catalog rebuild"),
            "{err}"
        );
    }

    #[test]
    fn a_catalog_cut_short_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let catalog = Catalog::open(dir.path()).unwrap();
        catalog
            .write(|tx| {
                tx.execute_batch("CREATE TABLE filler (x BLOB)")?;
                for _ in 0..64 {
                    tx.execute("INSERT INTO filler VALUES (zeroblob(4096))", [])?;
                }
                Ok(())
            })
            .unwrap();
        catalog.close();
        drop(catalog);
        let path = dir.path().join(DB_FILE);
        let len = std::fs::metadata(&path).unwrap().len();
        let f = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
        f.set_len(len / 2).unwrap();
        let err = Catalog::open(dir.path()).err().expect("refused");
        assert!(matches!(err, CatalogError::Damaged { .. }), "{err}");
        assert!(err.to_string().contains("cut short"), "{err}");
    }

    #[test]
    fn a_clean_close_is_remembered_until_the_next_open() {
        let dir = tempfile::tempdir().unwrap();
        let marker = |dir: &Path| {
            let c = Connection::open(dir.join(DB_FILE)).unwrap();
            c.query_row(
                "SELECT COUNT(*) FROM meta WHERE key = 'clean_stop'",
                [],
                |r| r.get::<_, i64>(0),
            )
            .unwrap()
        };
        let cat = Catalog::open(dir.path()).unwrap();
        cat.close();
        assert_eq!(marker(dir.path()), 1);
        let again = Catalog::open(dir.path()).unwrap();
        // Open again: a run is under way, so a crash now would be seen as unclean.
        assert_eq!(
            again
                .read(|c| Ok(c.query_row(
                    "SELECT COUNT(*) FROM meta WHERE key = 'clean_stop'",
                    [],
                    |r| r.get::<_, i64>(0)
                )?))
                .unwrap(),
            0
        );
        again.close();
    }

    #[test]
    fn schema_from_the_future_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        drop(Catalog::open(dir.path()).unwrap());
        let conn = Connection::open(dir.path().join(DB_FILE)).unwrap();
        conn.pragma_update(None, "user_version", 99).unwrap();
        drop(conn);
        let err = Catalog::open(dir.path()).err().expect("refused");
        assert!(matches!(err, CatalogError::TooNew { found: 99, .. }));
    }
}
