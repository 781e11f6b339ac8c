//! The write-back queue: uploads staged files after the last close plus the write-back delay
//! (or at once when `sync` asks), deletes archives nobody needs any more, and after a restart
//! settles every upload and delete the previous run left open.
//!
//! Each upload reads a frozen snapshot of its file, and its progress is journaled in the
//! `uploads` table before and after each creating call, so a crash at any instant leaves a row
//! that says exactly what to do next: start over, resume a multipart upload, repeat Complete,
//! or (for an UploadArchive whose reply was lost) upload again and let the next inventory
//! settle the duplicate.
//!
//! Layout: `queue` decides what runs when (what is due, backoff after a failure, cancel on
//! unlink); `upload` runs one file's upload (freeze, journal, send, record); `journal` is the
//! upload engine's journal over the catalog; `deletes` is the delete worker; `recover` settles
//! what a previous run left. All SQL is in [`crate::catalog::uploads`] and
//! [`crate::catalog::deletes`].

mod deletes;
mod journal;
mod queue;
mod recover;
mod upload;

use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use crate::catalog::{Catalog, CatalogError};
use crate::engine::transfer::upload::{UploadError, UploadLimits};
use crate::glacier::{GlacierClient, GlacierError};
use crate::locks::lock;
use crate::store::cache::DataStore;
use crate::store::handles::OpenFiles;

use queue::QueueState;

/// How often the queue looks for due files when nothing wakes it.
const TICK: Duration = Duration::from_millis(500);

/// Settings of the queue.
#[derive(Debug, Clone)]
pub struct WriteBackOptions {
    pub delay: Duration,
    pub part_size: u64,
    pub concurrency: usize,
    pub memory_budget: u64,
    pub delete_delay: Duration,
}

/// The queue; one per mount.
pub struct WriteBack {
    catalog: Catalog,
    client: Arc<dyn GlacierClient>,
    data: DataStore,
    open_files: Arc<OpenFiles>,
    options: WriteBackOptions,
    limits: UploadLimits,
    state: Mutex<QueueState>,
    runtime: OnceLock<tokio::runtime::Handle>,
}

/// Why an upload attempt (or settling one) failed. [`WriteBackError::is_transient`] picks the
/// backoff; whatever the failure, the file stays staged and is tried again.
#[derive(Debug, thiserror::Error)]
pub enum WriteBackError {
    #[error(transparent)]
    Catalog(#[from] CatalogError),
    #[error(transparent)]
    Upload(#[from] UploadError),
    #[error(transparent)]
    Glacier(#[from] GlacierError),
    #[error("{vault}/{path}: its description would pass 1024 characters")]
    DescriptionTooLong { vault: String, path: String },
    #[error("snapshot of inode {ino}: {source}")]
    Snapshot { ino: u64, source: std::io::Error },
    #[error("{description}: changed while it was going up; starting again")]
    Changed { description: String },
    #[error("vault #{vault} is gone")]
    VaultGone { vault: u64 },
    #[error("hashing the snapshot of inode {ino}: {source}")]
    Hashing {
        ino: u64,
        source: tokio::task::JoinError,
    },
    /// Settling one journal row after a restart failed.
    #[error("inode {ino}: {source}")]
    Settling {
        ino: u64,
        source: Box<WriteBackError>,
    },
}

impl WriteBackError {
    /// Whether the trouble may pass by itself (retried soon) or needs a change first (retried
    /// much later, or when `sync` asks).
    pub fn is_transient(&self) -> bool {
        match self {
            WriteBackError::Catalog(_)
            | WriteBackError::Snapshot { .. }
            | WriteBackError::Changed { .. }
            | WriteBackError::Hashing { .. } => true,
            WriteBackError::Upload(e) => e.is_transient(),
            WriteBackError::Glacier(e) => e.is_transient(),
            WriteBackError::DescriptionTooLong { .. } | WriteBackError::VaultGone { .. } => false,
            WriteBackError::Settling { source, .. } => source.is_transient(),
        }
    }
}

impl WriteBack {
    pub fn new(
        catalog: Catalog,
        client: Arc<dyn GlacierClient>,
        data: DataStore,
        open_files: Arc<OpenFiles>,
        options: WriteBackOptions,
    ) -> Arc<WriteBack> {
        let limits = UploadLimits::new(
            options.concurrency,
            options.memory_budget,
            options.part_size,
        );
        Arc::new(WriteBack {
            catalog,
            client,
            data,
            open_files,
            options,
            limits,
            state: Mutex::new(QueueState::default()),
            runtime: OnceLock::new(),
        })
    }

    /// Asks for the staged files among `inos` to be uploaded now.
    /// A file waiting out the backoff after a failure is tried again at once: the user asked.
    pub fn force(&self, inos: impl IntoIterator<Item = u64>) {
        let mut st = lock(&self.state);
        for ino in inos {
            st.retry_at.remove(&ino);
            st.forced.insert(ino);
        }
        drop(st);
        self.open_files.wake.notify_one();
    }

    /// A writer's last close of `ino` (or a truncate with no writer) was recorded. The queue is
    /// woken only when that can make something due before its next tick: the file is forced
    /// by `sync`, or the write-back delay is shorter than a tick. Otherwise the file cannot be
    /// due before the delay has passed, and waking the queue at every close of a copy of many
    /// small files cost a catalog read per file for nothing.
    pub fn closed(&self, ino: u64) {
        if self.options.delay < TICK || lock(&self.state).forced.contains(&ino) {
            self.open_files.wake.notify_one();
        }
    }

    /// Why the last attempt to upload `ino` failed, while it has not succeeded since.
    pub fn last_error(&self, ino: u64) -> Option<String> {
        lock(&self.state).last_error.get(&ino).cloned()
    }

    /// How long `ino` still waits out its backoff after a failed attempt; `None` when it does
    /// not wait (never failed, succeeded since, or forced by `sync`).
    pub fn next_attempt_in(&self, ino: u64) -> Option<Duration> {
        let at = *lock(&self.state).retry_at.get(&ino)?;
        let left = at.saturating_sub(crate::catalog::now_ns()).max(0);
        Some(Duration::from_nanos(left as u64))
    }

    /// Bytes sent so far for the upload of `ino`, while it runs.
    pub fn progress(&self, ino: u64) -> Option<u64> {
        lock(&self.state)
            .progress
            .get(&ino)
            .map(|p| p.load(Ordering::Relaxed))
    }

    pub fn is_uploading(&self, ino: u64) -> bool {
        lock(&self.state).in_flight.contains(&ino)
    }

    /// Settles what the previous run left, then runs the queue until the runtime stops.
    pub fn spawn(self: &Arc<Self>, runtime: &tokio::runtime::Handle) {
        let _ = self.runtime.set(runtime.clone());
        let me = Arc::clone(self);
        runtime.spawn(async move {
            match me.recover().await {
                Ok(failed) if !failed.is_empty() => log::warn!(
                    "{} upload(s) of the previous run could not be settled yet",
                    failed.len()
                ),
                Ok(_) => {}
                Err(e) => log::error!("settling the previous run's uploads: {e}"),
            }
            loop {
                if let Err(e) = me.tick().await {
                    log::error!("write-back: {e}");
                }
                tokio::select! {
                    _ = me.open_files.wake.notified() => {},
                    _ = tokio::time::sleep(TICK) => {},
                }
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::glacier::aws::AwsGlacier;

    /// A queue over a fresh catalog with write-back delay `delay`; nothing reaches Glacier.
    fn queue(dir: &std::path::Path, delay: Duration) -> Arc<WriteBack> {
        let conf = aws_sdk_glacier::Config::builder()
            .behavior_version(aws_sdk_glacier::config::BehaviorVersion::latest())
            .region(aws_sdk_glacier::config::Region::new("us-east-1"))
            .endpoint_url("http://127.0.0.1:1")
            .build();
        WriteBack::new(
            Catalog::open(dir).unwrap(),
            Arc::new(AwsGlacier::from_conf(conf, "-")),
            DataStore::open(dir).unwrap(),
            Arc::new(OpenFiles::default()),
            WriteBackOptions {
                delay,
                part_size: 1 << 20,
                concurrency: 1,
                memory_budget: 1 << 24,
                delete_delay: Duration::ZERO,
            },
        )
    }

    /// Whether the queue has a wake waiting for it (taking it).
    fn woken(wb: &WriteBack, rt: &tokio::runtime::Runtime) -> bool {
        rt.block_on(async {
            tokio::time::timeout(Duration::ZERO, wb.open_files.wake.notified()).await
        })
        .is_ok()
    }

    #[test]
    fn a_close_wakes_the_queue_only_when_it_can_make_a_file_due_before_the_next_tick() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let dirs = [tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap()];
        let slow = queue(dirs[0].path(), Duration::from_secs(3600));
        slow.closed(7);
        assert!(
            !woken(&slow, &rt),
            "a close an hour before it is due woke the queue"
        );
        // A file `sync` asked for is uploaded at its close, whatever the delay.
        slow.force([7]);
        assert!(woken(&slow, &rt));
        slow.closed(7);
        assert!(
            woken(&slow, &rt),
            "the close of a forced file did not wake the queue"
        );
        slow.closed(8);
        assert!(!woken(&slow, &rt));

        let prompt = queue(dirs[1].path(), Duration::ZERO);
        prompt.closed(7);
        assert!(
            woken(&prompt, &rt),
            "with no delay, a close did not wake the queue"
        );
    }
}
