//! What runs when: each tick starts the uploads that are due (closed for the write-back delay,
//! or forced by `sync`, and not waiting out a backoff), and the deletes whose time has come.
//! A failed upload waits before its next attempt ([`backoff`]); an unlinked file's upload is
//! stopped ([`WriteBack::cancel`]) and whatever it made is cleaned up.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use super::{WriteBack, WriteBackError};
use crate::catalog::uploads::{self, UploadState};
use crate::catalog::{self, CatalogError};
use crate::codec::{timefmt, treehash};
use crate::locks::lock;

/// The queue's memory: what runs, what waits, and why the last attempt failed.
#[derive(Default)]
pub(super) struct QueueState {
    pub(super) in_flight: HashSet<u64>,
    /// The running upload tasks, so an unlink can stop its file's upload.
    pub(super) tasks: HashMap<u64, tokio::task::JoinHandle<()>>,
    /// Files `sync` asked for: uploaded without waiting for the delay.
    pub(super) forced: HashSet<u64>,
    /// Earliest next attempt after a failure (ns since the epoch).
    pub(super) retry_at: HashMap<u64, i64>,
    pub(super) failures: HashMap<u64, u32>,
    /// The last failure of each file's upload, for `.jobs`: also those that happen before the
    /// upload has a journal row to carry its message.
    pub(super) last_error: HashMap<u64, String>,
    pub(super) progress: HashMap<u64, Arc<AtomicU64>>,
    pub(super) deletes_in_flight: HashSet<i64>,
    /// Deletes that ended (done, or failed and rescheduled) since the last look at the queue:
    /// a look that began before their outcome was committed still lists them as due.
    pub(super) deletes_settled: HashSet<i64>,
}

/// How long a file waits after its `failures`-th failed attempt in a row. Transient trouble
/// retries soon; anything else waits longer, but is never dropped: the file stays staged and
/// shows its error until it goes up. Both double with each failure, up to ten minutes.
pub(super) fn backoff(transient: bool, failures: u32) -> Duration {
    let base = if transient { 1u64 } else { 60 };
    Duration::from_secs((base << failures.min(8)).min(600))
}

impl WriteBack {
    /// Writes the bytes sent by running uploads, for `glacierfs status` (which reads only the
    /// catalog).
    async fn record_progress(&self) -> Result<(), CatalogError> {
        let progress: Vec<(u64, u64)> = lock(&self.state)
            .progress
            .iter()
            .map(|(ino, p)| (*ino, p.load(Ordering::Relaxed)))
            .collect();
        if progress.is_empty() {
            return Ok(());
        }
        self.catalog
            .write_async(move |tx| uploads::set_progress(tx, &progress))
            .await
    }

    /// Starts the uploads and deletes that are due.
    pub(super) async fn tick(self: &Arc<Self>) -> Result<(), CatalogError> {
        catalog::ensure_reserve(self.data.cache_dir());
        self.record_progress().await?;
        let cutoff = catalog::now_ns() - self.options.delay.as_nanos() as i64;
        let forced: Vec<u64> = lock(&self.state).forced.iter().copied().collect();
        let due = self
            .catalog
            .read(move |c| uploads::due(c, cutoff, &forced))?;
        let now = catalog::now_ns();
        for d in due {
            if self.open_files.writers(d.ino) > 0 {
                continue;
            }
            {
                let mut st = lock(&self.state);
                if st.in_flight.contains(&d.ino)
                    || st.retry_at.get(&d.ino).is_some_and(|t| *t > now)
                {
                    continue;
                }
                st.in_flight.insert(d.ino);
                st.forced.remove(&d.ino);
            }
            let me = Arc::clone(self);
            let ino = d.ino;
            let task = tokio::spawn(async move {
                let outcome = me.upload_file(d).await;
                me.after_upload(ino, outcome);
            });
            lock(&self.state).tasks.insert(ino, task);
        }
        self.run_deletes().await
    }

    fn after_upload(&self, ino: u64, outcome: Result<(), WriteBackError>) {
        let mut st = lock(&self.state);
        st.in_flight.remove(&ino);
        st.tasks.remove(&ino);
        st.progress.remove(&ino);
        match outcome {
            Ok(()) => {
                st.failures.remove(&ino);
                st.retry_at.remove(&ino);
                st.last_error.remove(&ino);
            }
            Err(e) => {
                let n = {
                    let n = st.failures.entry(ino).or_insert(0);
                    *n += 1;
                    *n
                };
                let wait = backoff(e.is_transient(), n);
                st.retry_at
                    .insert(ino, catalog::now_ns() + wait.as_nanos() as i64);
                // The next try's time of day too: `.jobs` and `sync` show this line after
                // the "in" has gone stale.
                let line = format!(
                    "{e}; retrying in {} ({} UTC)",
                    timefmt::format_span(wait),
                    timefmt::format_clock(catalog::now_s() + wait.as_secs() as i64)
                );
                log::warn!("upload of inode {ino} failed (attempt {n}): {line}");
                st.last_error.insert(ino, line);
            }
        }
        drop(st);
        self.open_files.wake.notify_one();
    }

    /// Stops the upload of a file that was just unlinked: its multipart upload is aborted, and
    /// an archive it may already have made is deleted (or left for the next inventory to settle,
    /// when the reply that would have named it was cut off).
    pub fn cancel(self: &Arc<Self>, ino: u64) {
        let task = {
            let mut st = lock(&self.state);
            st.in_flight.remove(&ino);
            st.progress.remove(&ino);
            st.forced.remove(&ino);
            st.retry_at.remove(&ino);
            st.tasks.remove(&ino)
        };
        if let Some(t) = &task {
            t.abort();
        }
        let Some(runtime) = self.runtime.get() else {
            return;
        };
        let me = Arc::clone(self);
        runtime.spawn(async move {
            // The abort lands at the task's next await: wait for it, so the row read below
            // says where the upload really stopped.
            if let Some(t) = task {
                let _ = t.await;
            }
            if let Err(e) = me.clean_up_cancelled(ino).await {
                log::warn!("cleaning up the cancelled upload of inode {ino}: {e}");
            }
        });
    }

    async fn clean_up_cancelled(&self, ino: u64) -> Result<(), WriteBackError> {
        let Some(row) = self
            .catalog
            .read_async(move |c| uploads::get(c, ino))
            .await?
        else {
            return Ok(());
        };
        if let (Some(id), Some(hash)) = (
            row.archive_id.clone(),
            row.tree_hash.as_deref().and_then(treehash::from_hex),
        ) {
            // Made before the cancel took: record it, which queues its delete (no node).
            return self.finish(&row, &id, &hash).await;
        }
        let vault_name = self.vault_name(row.vault)?;
        match (row.state, &row.upload_id) {
            // Complete may have gone through: ask again, so a made archive is known and deleted.
            (UploadState::Completing, Some(upload_id)) => {
                if let Some((id, hash)) = self.repeat_complete(&vault_name, &row, upload_id).await?
                {
                    return self.finish(&row, &id, &hash).await;
                }
            }
            (UploadState::Initiating, None) => self.abort_unrecorded_uploads(row.vault).await,
            (UploadState::Single, _) => {
                let path = self.data.resolve(&row.snapshot);
                if let Ok(Ok(hash)) =
                    tokio::task::spawn_blocking(move || treehash::tree_hash_file(&path)).await
                {
                    self.mark_unconfirmed(&row, hash).await?;
                }
            }
            _ => {}
        }
        log::info!(
            "upload of {} cancelled: the file was deleted",
            row.description
        );
        self.discard(&row, &vault_name).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transient_failures_retry_soon_and_back_off_to_ten_minutes() {
        assert_eq!(backoff(true, 1), Duration::from_secs(2));
        assert_eq!(backoff(true, 2), Duration::from_secs(4));
        assert_eq!(backoff(true, 5), Duration::from_secs(32));
        assert_eq!(backoff(true, 9), Duration::from_secs(256));
        assert_eq!(backoff(true, 40), Duration::from_secs(256));
    }

    #[test]
    fn other_failures_wait_minutes_but_never_more_than_ten() {
        assert_eq!(backoff(false, 1), Duration::from_secs(120));
        assert_eq!(backoff(false, 2), Duration::from_secs(240));
        assert_eq!(backoff(false, 3), Duration::from_secs(480));
        assert_eq!(backoff(false, 4), Duration::from_secs(600));
        assert_eq!(backoff(false, u32::MAX), Duration::from_secs(600));
    }
}
