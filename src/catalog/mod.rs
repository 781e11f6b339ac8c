//! The catalog: a SQLite database (WAL, `synchronous=NORMAL`) that caches each vault's
//! inventory as a tree of nodes, so that browsing never waits on the network.
//!
//! Concurrency follows DESIGN.md §2: one writer thread owns the only write connection and runs
//! queued operations in short, batched transactions (each operation in its own savepoint, so one
//! failure does not undo its neighbours); FUSE threads read through a pool of read-only
//! connections. Nothing here runs on a tokio worker: async callers use [`Catalog::write_async`].

pub mod changes;
pub mod copy;
pub mod deletes;
pub mod jobs;
pub mod meta;
pub mod nodes;
pub mod schema;
pub mod vaults;

use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread;

use rusqlite::{Connection, OpenFlags, OptionalExtension, Transaction};

pub use nodes::{Kind, Node};
pub use schema::ROOT_INO;
pub use vaults::VaultRow;

#[derive(Debug, thiserror::Error)]
pub enum CatalogError {
    #[error("catalog database error: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("catalog I/O error: {0}")]
    Io(#[from] std::io::Error),
    #[error("the catalog was written by a newer glacierfs (schema {found}, this build reads up to {supported})")]
    TooNew { found: u32, supported: u32 },
    #[error("this catalog belongs to {recorded}, not {requested}; use another --cache-dir for it")]
    WrongIdentity { recorded: String, requested: String },
    #[error("the catalog {} is damaged ({detail}); run `glacierfs catalog rebuild` (with the \
             same --cache-dir) to restore its latest copy, then mount again: each vault's \
             inventory is read again, and files staged but not uploaded yet are recovered from \
             their sidecars", path.display())]
    Damaged { path: PathBuf, detail: String },
    #[error("catalog commit failed: {0}")]
    CommitFailed(String),
    #[error("the catalog writer has stopped")]
    WriterGone,
    #[error("no such entry")]
    NotFound,
    #[error("an entry with that name exists")]
    Exists,
    #[error("directory not empty")]
    NotEmpty,
}

/// Seconds since the epoch, now.
pub fn now_s() -> i64 {
    now_ns() / 1_000_000_000
}

/// Nanoseconds since the epoch, now.
pub fn now_ns() -> i64 {
    let d = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    i64::try_from(d.as_nanos()).unwrap_or(i64::MAX)
}

/// Which Glacier a catalog mirrors. A catalog is bound to one identity for life.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// The endpoint URL, or empty for AWS's own endpoint.
    pub endpoint: String,
    pub region: String,
    pub account: String,
}

impl std::fmt::Display for Identity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let endpoint = if self.endpoint.is_empty() {
            "the AWS endpoint"
        } else {
            &self.endpoint
        };
        write!(
            f,
            "{endpoint} (region {}, account {})",
            self.region, self.account
        )
    }
}

/// What an operation leaves to do once its transaction has committed (or failed to).
type Reply = Box<dyn FnOnce(Option<&rusqlite::Error>) + Send>;
type WriteOp = Box<dyn FnOnce(&Transaction<'_>) -> Reply + Send>;

/// Handle to the catalog; cheap to clone.
#[derive(Clone)]
pub struct Catalog {
    inner: Arc<Inner>,
}

struct Inner {
    path: PathBuf,
    writer: Mutex<Option<mpsc::Sender<WriteOp>>>,
    writer_thread: Mutex<Option<thread::JoinHandle<()>>>,
    readers: Mutex<Vec<Connection>>,
    changes: Mutex<Option<mpsc::Sender<changes::Change>>>,
}

const DB_FILE: &str = "catalog.db";
/// Operations run per transaction at most; bounds how long one commit holds the writer.
const MAX_BATCH: usize = 256;

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
        let (tx, rx) = mpsc::channel::<WriteOp>();
        let handle = thread::Builder::new()
            .name("catalog-writer".into())
            .spawn(move || writer_loop(conn, rx, reserve))?;
        let catalog = Catalog {
            inner: Arc::new(Inner {
                path,
                writer: Mutex::new(Some(tx)),
                writer_thread: Mutex::new(Some(handle)),
                readers: Mutex::new(Vec::new()),
                changes: Mutex::new(None),
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
                readers: Mutex::new(vec![conn]),
                changes: Mutex::new(None),
            }),
        })
    }

    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    /// Runs `f` in the writer thread, in a transaction shared with other queued operations but
    /// in a savepoint of its own, and waits for its result.
    pub fn write<T, F>(&self, f: F) -> Result<T, CatalogError>
    where
        T: Send + 'static,
        F: FnOnce(&Transaction<'_>) -> Result<T, CatalogError> + Send + 'static,
    {
        let (reply_tx, reply_rx) = mpsc::sync_channel(1);
        self.submit(f, move |r| {
            let _ = reply_tx.send(r);
        })?;
        reply_rx.recv().map_err(|_| CatalogError::WriterGone)?
    }

    /// [`Catalog::write`] for async callers: the tokio worker awaits instead of blocking.
    pub async fn write_async<T, F>(&self, f: F) -> Result<T, CatalogError>
    where
        T: Send + 'static,
        F: FnOnce(&Transaction<'_>) -> Result<T, CatalogError> + Send + 'static,
    {
        let (reply_tx, reply_rx) = tokio::sync::oneshot::channel();
        self.submit(f, move |r| {
            let _ = reply_tx.send(r);
        })?;
        reply_rx.await.map_err(|_| CatalogError::WriterGone)?
    }

    fn submit<T, F, R>(&self, f: F, reply: R) -> Result<(), CatalogError>
    where
        T: Send + 'static,
        F: FnOnce(&Transaction<'_>) -> Result<T, CatalogError> + Send + 'static,
        R: FnOnce(Result<T, CatalogError>) + Send + 'static,
    {
        let op: WriteOp = Box::new(move |tx: &Transaction<'_>| {
            // SQLITE_FULL or an I/O error can roll the whole transaction back; what follows
            // must not run (and commit statement by statement) outside it.
            let result = if tx.is_autocommit() {
                Err(CatalogError::CommitFailed(
                    "the transaction was rolled back".into(),
                ))
            } else {
                run_in_savepoint(tx, f)
            };
            // The caller hears of its result only after the commit, so "done" means committed.
            Box::new(
                move |commit_error: Option<&rusqlite::Error>| match commit_error {
                    None => reply(result),
                    Some(e) => reply(Err(CatalogError::CommitFailed(e.to_string()))),
                },
            ) as Reply
        });
        let guard = crate::locks::lock(&self.inner.writer);
        guard
            .as_ref()
            .ok_or(CatalogError::WriterGone)?
            .send(op)
            .map_err(|_| CatalogError::WriterGone)
    }

    /// Runs `f` with a read-only connection from the pool.
    pub fn read<T>(
        &self,
        f: impl FnOnce(&Connection) -> Result<T, CatalogError>,
    ) -> Result<T, CatalogError> {
        let conn = {
            let mut pool = crate::locks::lock(&self.inner.readers);
            pool.pop()
        };
        let conn = match conn {
            Some(c) => c,
            None => open_read_connection(&self.inner.path)?,
        };
        let result = f(&conn);
        crate::locks::lock(&self.inner.readers).push(conn);
        result
    }

    /// [`Catalog::read`] for async callers: the query runs on the blocking pool, never on a
    /// tokio worker.
    pub async fn read_async<T, F>(&self, f: F) -> Result<T, CatalogError>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T, CatalogError> + Send + 'static,
    {
        let me = self.clone();
        tokio::task::spawn_blocking(move || me.read(f))
            .await
            .map_err(|_| CatalogError::WriterGone)?
    }

    /// Records the identity on first use, and refuses another one afterwards.
    pub fn bind_identity(&self, id: &Identity) -> Result<(), CatalogError> {
        let id = id.clone();
        self.write(move |tx| {
            let get = |k: &str| -> Result<Option<String>, CatalogError> {
                Ok(tx
                    .query_row("SELECT value FROM meta WHERE key = ?1", [k], |r| r.get(0))
                    .optional()?)
            };
            match (get("endpoint")?, get("region")?, get("account")?) {
                (Some(endpoint), Some(region), Some(account)) => {
                    let recorded = Identity {
                        endpoint,
                        region,
                        account,
                    };
                    if recorded != id {
                        return Err(CatalogError::WrongIdentity {
                            recorded: recorded.to_string(),
                            requested: id.to_string(),
                        });
                    }
                }
                _ => {
                    for (k, v) in [
                        ("endpoint", &id.endpoint),
                        ("region", &id.region),
                        ("account", &id.account),
                    ] {
                        tx.execute(
                            "INSERT OR REPLACE INTO meta (key, value) VALUES (?1, ?2)",
                            [k, v.as_str()],
                        )?;
                    }
                }
            }
            Ok(())
        })
    }

    /// The recorded identity, if any.
    pub fn identity(&self) -> Result<Option<Identity>, CatalogError> {
        self.read(|conn| {
            let mut stmt = conn.prepare_cached("SELECT value FROM meta WHERE key = ?1")?;
            let mut get = |k: &str| -> Result<Option<String>, CatalogError> {
                Ok(stmt.query_row([k], |r| r.get(0)).optional()?)
            };
            Ok(match (get("endpoint")?, get("region")?, get("account")?) {
                (Some(endpoint), Some(region), Some(account)) => Some(Identity {
                    endpoint,
                    region,
                    account,
                }),
                _ => None,
            })
        })
    }

    /// Like [`Catalog::write`], but tried once more if the first attempt fails to commit (a
    /// full disk: the failure released the catalog's reserve, so the second one fits). For
    /// updates that must not be lost, such as a writer's close.
    pub fn write_twice<T, F>(&self, f: impl Fn() -> F) -> Result<T, CatalogError>
    where
        T: Send + 'static,
        F: FnOnce(&Transaction<'_>) -> Result<T, CatalogError> + Send + 'static,
    {
        match self.write(f()) {
            Err(CatalogError::CommitFailed(_)) => self.write(f()),
            other => other,
        }
    }

    /// Makes everything committed so far durable: `synchronous=NORMAL` leaves the WAL unsynced
    /// at commit, which is right for the hot path but not for fsync(2).
    pub fn sync(&self) -> Result<(), CatalogError> {
        self.write(|_| Ok(()))?;
        let mut wal = self.inner.path.clone().into_os_string();
        wal.push("-wal");
        match std::fs::File::open(&wal) {
            Ok(f) => f.sync_all()?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e.into()),
        }
        Ok(())
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
}

fn run_in_savepoint<T>(
    tx: &Transaction<'_>,
    f: impl FnOnce(&Transaction<'_>) -> Result<T, CatalogError>,
) -> Result<T, CatalogError> {
    tx.execute_batch("SAVEPOINT op")?;
    match f(tx) {
        Ok(v) => {
            tx.execute_batch("RELEASE op")?;
            Ok(v)
        }
        Err(e) => {
            tx.execute_batch("ROLLBACK TO op; RELEASE op")?;
            Err(e)
        }
    }
}

fn writer_loop(mut conn: Connection, rx: mpsc::Receiver<WriteOp>, reserve: PathBuf) {
    while let Ok(first) = rx.recv() {
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(op) => batch.push(op),
                Err(_) => break,
            }
        }
        match conn.transaction() {
            Ok(mut tx) => {
                // COMMIT by hand, so a failure leaves the transaction to be rolled back here.
                tx.set_drop_behavior(rusqlite::DropBehavior::Ignore);
                let replies: Vec<Reply> = batch.into_iter().map(|op| op(&tx)).collect();
                let committed = tx.execute_batch("COMMIT");
                if let Err(e) = &committed {
                    log::error!("catalog commit failed: {e}");
                    let _ = tx.execute_batch("ROLLBACK");
                    if is_disk_full(e) {
                        release_reserve(&reserve);
                    }
                }
                for reply in replies {
                    reply(committed.as_ref().err());
                }
            }
            Err(e) => log::error!("catalog transaction could not start: {e}"),
        }
    }
    if let Err(e) = conn.execute_batch("PRAGMA wal_checkpoint(TRUNCATE)") {
        log::warn!("catalog checkpoint at close failed: {e}");
    }
}

/// A catalog file shorter than its own header says was cut short (a full disk, a bad copy):
/// SQLite would only notice when a query reaches the missing pages. Only meaningful with no
/// write-ahead log to replay: a checkpoint cut off by a crash can leave the file short of its
/// header, and the WAL completes it on open (the crash suite found this).
fn check_length(path: &Path) -> Result<(), CatalogError> {
    use std::io::Read;
    let mut wal = path.as_os_str().to_owned();
    wal.push("-wal");
    if std::fs::metadata(&wal).is_ok_and(|m| m.len() > 0) {
        return Ok(());
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
    // version-valid-for number (the SQLite file format, §1.3.7).
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

fn is_disk_full(e: &rusqlite::Error) -> bool {
    matches!(e, rusqlite::Error::SqliteFailure(f, _) if f.code == rusqlite::ErrorCode::DiskFull)
}

/// Space held back for the catalog: when the cache disk fills up, the writer deletes this file
/// so the catalog can still record deletes and closes that free space again.
const RESERVE_FILE: &str = "catalog.reserve";
const RESERVE_BYTES: i64 = 2 << 20;

fn release_reserve(path: &Path) {
    if std::fs::remove_file(path).is_ok() {
        log::warn!("the cache disk is full: released the catalog's reserve space");
    }
}

/// (Re)creates the reserve when there is room for it.
pub fn ensure_reserve(dir: &Path) {
    use std::os::fd::AsRawFd;
    use std::os::unix::fs::OpenOptionsExt;
    let path = dir.join(RESERVE_FILE);
    if path.exists() {
        return;
    }
    let Ok(f) = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&path)
    else {
        return;
    };
    // SAFETY: fallocate on a descriptor we own; blocks are really allocated (not sparse).
    if unsafe { libc::fallocate(f.as_raw_fd(), 0, 0, RESERVE_BYTES) } != 0 {
        drop(f);
        let _ = std::fs::remove_file(&path);
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
    Ok(conn)
}

fn open_read_connection(path: &Path) -> Result<Connection, CatalogError> {
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )?;
    conn.busy_timeout(std::time::Duration::from_secs(30))?;
    conn.execute_batch("PRAGMA cache_size = -16384;")?;
    Ok(conn)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(endpoint: &str) -> Identity {
        Identity {
            endpoint: endpoint.into(),
            region: "us-east-1".into(),
            account: "-".into(),
        }
    }

    #[test]
    fn identity_is_recorded_once_and_enforced() {
        let dir = tempfile::tempdir().unwrap();
        let cat = Catalog::open(dir.path()).unwrap();
        cat.bind_identity(&id("http://127.0.0.1:1")).unwrap();
        cat.bind_identity(&id("http://127.0.0.1:1")).unwrap();
        let err = cat.bind_identity(&id("http://127.0.0.1:2")).unwrap_err();
        assert!(matches!(err, CatalogError::WrongIdentity { .. }), "{err}");
        assert_eq!(cat.identity().unwrap(), Some(id("http://127.0.0.1:1")));
    }

    #[test]
    fn database_files_are_private() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let cat = Catalog::open(dir.path()).unwrap();
        cat.bind_identity(&id("")).unwrap();
        let mode = std::fs::metadata(cat.path()).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    #[test]
    fn a_failed_operation_does_not_undo_its_batch_neighbours() {
        let dir = tempfile::tempdir().unwrap();
        let cat = Catalog::open(dir.path()).unwrap();
        let ok = cat.write(|tx| {
            tx.execute("INSERT INTO meta VALUES ('a', '1')", [])?;
            Ok(())
        });
        let bad: Result<(), _> = cat.write(|tx| {
            tx.execute("INSERT INTO meta VALUES ('b', '1')", [])?;
            Err(CatalogError::Exists)
        });
        assert!(ok.is_ok() && bad.is_err());
        let keys: Vec<String> = cat
            .read(|c| {
                let mut s = c.prepare("SELECT key FROM meta ORDER BY key")?;
                let rows = s.query_map([], |r| r.get(0))?;
                Ok(rows.collect::<Result<_, _>>()?)
            })
            .unwrap();
        assert_eq!(keys, vec!["a".to_string()]);
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
