//! The catalog's writer thread: it owns the only write connection and runs queued operations
//! in short, batched transactions. Each operation runs in a savepoint of its own, so one failure
//! does not undo its neighbours, and hears of its result only after the commit, so "done" means
//! committed. Nothing here runs on a tokio worker: async callers use [`Catalog::write_async`].

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::thread;

use rusqlite::{Connection, Transaction};

use super::changes::{self, Feed};
use super::reserve;
use super::{Catalog, CatalogError};

/// What an operation leaves to do once its transaction has committed (or failed to).
type Reply = Box<dyn FnOnce(Option<&rusqlite::Error>) + Send>;
type TxOp = Box<dyn FnOnce(&Transaction<'_>) -> Reply + Send>;

/// What the writer thread is asked to run.
pub(super) enum WriteOp {
    /// An operation in a batched transaction (almost all of them).
    Tx(TxOp),
    /// An operation on the connection itself, between transactions (see
    /// [`Catalog::with_connection`]).
    Connection(Box<dyn FnOnce(&mut Connection) + Send>),
}

/// Operations run per transaction at most; bounds how long one commit holds the writer.
const MAX_BATCH: usize = 256;

/// Starts the writer thread on `conn`. `reserve` is the file it gives up when the disk is full;
/// once `abandoned` is set it commits nothing more (see [`Catalog::abandon`]).
pub(super) fn spawn(
    conn: Connection,
    reserve: PathBuf,
    abandoned: Arc<AtomicBool>,
    feed: Arc<Feed>,
) -> std::io::Result<(mpsc::Sender<WriteOp>, thread::JoinHandle<()>)> {
    let (tx, rx) = mpsc::channel::<WriteOp>();
    let handle = thread::Builder::new()
        .name("catalog-writer".into())
        .spawn(move || writer_loop(conn, rx, &reserve, &abandoned, &feed))?;
    Ok((tx, handle))
}

impl Catalog {
    pub(super) fn submit<T, F, R>(&self, f: F, reply: R) -> Result<(), CatalogError>
    where
        T: Send + 'static,
        F: FnOnce(&Transaction<'_>) -> Result<T, CatalogError> + Send + 'static,
        R: FnOnce(Result<T, CatalogError>) + Send + 'static,
    {
        let op: TxOp = Box::new(move |tx: &Transaction<'_>| {
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
        self.send(WriteOp::Tx(op))
    }

    fn send(&self, op: WriteOp) -> Result<(), CatalogError> {
        let guard = crate::locks::lock(&self.inner.writer);
        guard
            .as_ref()
            .ok_or(CatalogError::WriterGone)?
            .send(op)
            .map_err(|_| CatalogError::WriterGone)
    }

    /// Runs `f` on the write connection itself, outside any transaction, after the operations
    /// queued before it have committed, and waits for its result. For what a transaction
    /// forbids, such as changing the journal mode for a bulk import; `f` must leave no
    /// transaction open.
    pub(super) fn with_connection<T, F>(&self, f: F) -> Result<T, CatalogError>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection) -> Result<T, CatalogError> + Send + 'static,
    {
        let (reply_tx, reply_rx) = mpsc::sync_channel(1);
        self.send(WriteOp::Connection(Box::new(move |conn| {
            let _ = reply_tx.send(f(conn));
        })))?;
        reply_rx.recv().map_err(|_| CatalogError::WriterGone)?
    }
}

fn run_in_savepoint<T>(
    tx: &Transaction<'_>,
    f: impl FnOnce(&Transaction<'_>) -> Result<T, CatalogError>,
) -> Result<T, CatalogError> {
    // Cached statements: each operation pays for two of them, and parsing them anew was a
    // tenth of the writer's time when thousands of small files were copied in.
    tx.prepare_cached("SAVEPOINT op")?.execute([])?;
    match f(tx) {
        Ok(v) => {
            tx.prepare_cached("RELEASE op")?.execute([])?;
            Ok(v)
        }
        Err(e) => {
            tx.execute_batch("ROLLBACK TO op; RELEASE op")?;
            Err(e)
        }
    }
}

fn writer_loop(
    mut conn: Connection,
    rx: mpsc::Receiver<WriteOp>,
    reserve: &Path,
    abandoned: &AtomicBool,
    feed: &Feed,
) {
    // An operation on the connection that ended the last batch, to run before the next one.
    let mut next = None;
    while let Some(first) = next.take().or_else(|| rx.recv().ok()) {
        if abandoned.load(Ordering::SeqCst) {
            // Dropped uncommitted, replies and all, as a killed process drops them.
            return;
        }
        let first = match first {
            WriteOp::Tx(op) => op,
            WriteOp::Connection(op) => {
                op(&mut conn);
                // It may have committed changes to listings of its own.
                changes::send_changed_listings(&conn, feed);
                continue;
            }
        };
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(WriteOp::Tx(op)) => batch.push(op),
                Ok(op) => {
                    next = Some(op);
                    break;
                }
                Err(_) => break,
            }
        }
        match conn.transaction() {
            Ok(mut tx) => {
                // COMMIT by hand, so a failure leaves the transaction to be rolled back here.
                tx.set_drop_behavior(rusqlite::DropBehavior::Ignore);
                let replies: Vec<Reply> = batch.into_iter().map(|op| op(&tx)).collect();
                if abandoned.load(Ordering::SeqCst) {
                    let _ = tx.execute_batch("ROLLBACK");
                    return;
                }
                let committed = tx.execute_batch("COMMIT");
                if let Err(e) = &committed {
                    log::error!("catalog commit failed: {e}");
                    let _ = tx.execute_batch("ROLLBACK");
                    if is_disk_full(e) {
                        reserve::release(reserve);
                    }
                }
                if committed.is_ok() {
                    changes::send_changed_listings(&tx, feed);
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

fn is_disk_full(e: &rusqlite::Error) -> bool {
    matches!(e, rusqlite::Error::SqliteFailure(f, _) if f.code == rusqlite::ErrorCode::DiskFull)
}

#[cfg(test)]
mod tests {
    use super::*;

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
    fn an_abandoned_catalog_takes_no_more_writes_and_keeps_what_was_committed() {
        let dir = tempfile::tempdir().unwrap();
        let cat = Catalog::open(dir.path()).unwrap();
        cat.write(|tx| {
            tx.execute("INSERT INTO meta VALUES ('kept', '1')", [])?;
            Ok(())
        })
        .unwrap();
        cat.abandon();
        let late = cat.write(|tx| {
            tx.execute("INSERT INTO meta VALUES ('late', '1')", [])?;
            Ok(())
        });
        assert!(matches!(late, Err(CatalogError::WriterGone)), "{late:?}");
        drop(cat);
        let again = Catalog::open(dir.path()).unwrap();
        let keys: Vec<String> = again
            .read(|c| {
                let mut s = c.prepare("SELECT key FROM meta WHERE key IN ('kept', 'late')")?;
                let rows = s.query_map([], |r| r.get(0))?;
                Ok(rows.collect::<Result<_, _>>()?)
            })
            .unwrap();
        assert_eq!(keys, vec!["kept".to_string()]);
    }
}
