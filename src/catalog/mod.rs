//! The catalog: a SQLite database (WAL, `synchronous=NORMAL`) that caches each vault's
//! inventory as a tree of nodes, so that browsing never waits on the network. This module owns
//! the `Catalog` handle and its read and write entry points; `open` opens and checks the
//! database, `writer` runs the writer thread, `identity` binds it to one Glacier, `reserve`
//! holds back disk space for it, and the other modules own the statements of one table each.
//!
//! Concurrency (ARCHITECTURE.md, "Threads"): one writer thread owns the only write connection and
//! runs queued operations in short, batched transactions (each operation in its own savepoint, so
//! one failure does not undo its neighbours); FUSE threads read through a pool of read-only
//! connections. Nothing here runs on a tokio worker: async callers use [`Catalog::write_async`].

pub mod changes;
pub mod copy;
pub mod deletes;
pub mod files;
mod identity;
pub mod inventory;
pub mod jobs;
pub mod manifest;
pub mod meta;
pub mod nodes;
mod open;
mod reserve;
pub mod retrievals;
pub mod schema;
pub mod snapshots;
pub mod uploads;
pub mod vaults;
mod writer;

use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread;

use rusqlite::{Connection, Transaction};

pub use identity::Identity;
pub use nodes::{Kind, Node};
use open::DB_FILE;
pub use reserve::ensure_reserve;
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

/// Handle to the catalog; cheap to clone.
#[derive(Clone)]
pub struct Catalog {
    inner: Arc<Inner>,
}

struct Inner {
    path: PathBuf,
    writer: Mutex<Option<mpsc::Sender<writer::WriteOp>>>,
    writer_thread: Mutex<Option<thread::JoinHandle<()>>>,
    /// Set by [`Catalog::abandon`]: the writer commits nothing more.
    abandoned: Arc<std::sync::atomic::AtomicBool>,
    readers: Mutex<Vec<Connection>>,
    /// The feed [`Catalog::watch`] starts; the writer sends the listings each commit changed.
    changes: Arc<changes::Feed>,
}

impl Catalog {
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
            None => open::open_read_connection(&self.inner.path)?,
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
}
