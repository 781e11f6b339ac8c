//! Downloading a finished job's output into `<cache>/data/<ino>.part` with the download engine,
//! resumed from the catalog's journal, and making it the file's data once verified. Output that
//! fails verification is fetched again from scratch; after [`MAX_CORRUPT`] such failures the
//! job is failed for good and opens get EIO.

use std::sync::atomic::AtomicU64;
use std::sync::Arc;

use super::Retriever;
use crate::catalog::changes::Change;
use crate::catalog::retrievals::{self, PendingJob};
use crate::catalog::{nodes, Catalog, CatalogError, Node};
use crate::codec::treehash::{self, Digest};
use crate::engine::transfer::download::{
    self, DownloadError, DownloadJournal, DownloadSpec, JournalError, Resume,
};
use crate::locks::lock;

/// Bytes per ranged request of a download: small enough to resume finely, large enough that a
/// request's round trip is small beside its data. Behind 50 ms and 20 MB/s a connection, an
/// 8 MiB chunk spends about 0.42 s moving data for each 0.05 s waiting (4 MiB: 0.21 s, and
/// the download fell under 0.8 of its connections' rate).
const CHUNK: u64 = 8 << 20;
const PARALLEL_CHUNKS: usize = 4;
/// A download that fails verification this many times marks its job Failed: the open gets EIO.
const MAX_CORRUPT: u32 = 2;

/// The start of a verification failure's message, as `.jobs` shows it and the open's EIO
/// reports it; the job's cause, [`crate::catalog::jobs::FailureCause::Corrupt`], is what the engine reads back.
const CORRUPT: &str = "retrieved data does not match the archive's tree hash";

/// Why a download of a job's output for a file did not complete. Logged with the job and inode.
#[derive(Debug, thiserror::Error)]
enum FetchError {
    #[error(transparent)]
    Download(#[from] DownloadError),
    #[error("{name}: the catalog has no tree hash to verify it against")]
    NoTreeHash { name: String },
    #[error(transparent)]
    Catalog(#[from] CatalogError),
    #[error("the runtime is shutting down")]
    Cancelled,
}

impl Retriever {
    pub(super) fn start_download(self: &Arc<Self>, j: PendingJob) {
        let Some(ino) = j.ino else { return };
        {
            let mut st = lock(&self.state);
            if st.downloading.contains_key(&ino) {
                return;
            }
            st.downloading.insert(ino, Arc::new(AtomicU64::new(0)));
        }
        let me = Arc::clone(self);
        self.runtime.spawn(async move {
            let _permit = me.downloads.acquire().await;
            let outcome = me.download(&j, ino).await;
            lock(&me.state).downloading.remove(&ino);
            if let Err(e) = outcome {
                log::warn!(
                    "downloading job {} (vault {}) for inode {ino}: {e}",
                    j.job_id,
                    j.vault_name
                );
            }
        });
    }

    /// Downloads a finished job's output for `ino`, resuming from what is verified.
    async fn download(self: &Arc<Self>, j: &PendingJob, ino: u64) -> Result<(), FetchError> {
        let node = self.catalog.read(move |c| nodes::get(c, ino))?;
        let Some(node) = node.filter(|n| !n.local && n.archive_id == j.archive_id) else {
            // Already cached, replaced or gone: nothing to fetch.
            return Ok(());
        };
        let Some(hash) = node.tree_hash.as_deref().and_then(treehash::from_hex) else {
            return Err(FetchError::NoTreeHash { name: node.name });
        };
        let (resume, attempts) = {
            let (me, id, n) = (Arc::clone(self), j.job_id.clone(), node.clone());
            tokio::task::spawn_blocking(move || me.resume_of(ino, &id, &n))
                .await
                .map_err(|_| FetchError::Cancelled)??
        };
        let progress = lock(&self.state)
            .downloading
            .get(&ino)
            .cloned()
            .unwrap_or_default();
        let dest = self.data.partial_path(ino);
        let spec = DownloadSpec {
            vault: j.vault_name.clone(),
            job_id: j.job_id.clone(),
            size: node.size,
            tree_hash: hash,
            dest: dest.clone(),
            chunk_size: CHUNK,
        };
        let journal = Journal {
            catalog: self.catalog.clone(),
            ino,
        };
        let result = download::download(
            &self.client,
            &spec,
            resume,
            &journal,
            &progress,
            PARALLEL_CHUNKS,
        )
        .await;
        match result {
            Ok(()) => {
                let (me, n, id) = (Arc::clone(self), node.clone(), j.job_id.clone());
                Ok(tokio::task::spawn_blocking(move || me.finish(&n, &id))
                    .await
                    .map_err(|_| FetchError::Cancelled)??)
            }
            Err(DownloadError::Expired) => {
                let _ = std::fs::remove_file(&dest);
                self.forget_job(&j.job_id).await?;
                Err(DownloadError::Expired.into())
            }
            Err(DownloadError::Corrupt { what }) => {
                let _ = std::fs::remove_file(&dest);
                self.record_corrupt(ino, &j.job_id, &what, attempts).await?;
                Err(DownloadError::Corrupt { what }.into())
            }
            Err(e) => Err(e.into()),
        }
    }

    /// A verification failure: the download starts over, or after [`MAX_CORRUPT`] of them the
    /// job is failed for good.
    async fn record_corrupt(
        &self,
        ino: u64,
        job_id: &str,
        what: &str,
        attempts: u32,
    ) -> Result<(), CatalogError> {
        let give_up = attempts + 1 >= MAX_CORRUPT;
        let (id, message) = (job_id.to_owned(), format!("{CORRUPT}: {what}"));
        self.catalog
            .write_async(move |tx| retrievals::record_corrupt(tx, ino, &id, &message, give_up))
            .await?;
        if !give_up {
            self.wake.notify_one();
        }
        Ok(())
    }

    /// Where a download of `ino` stands: resumed from the catalog, or fresh; and how many
    /// downloads of this job's output failed verification so far.
    fn resume_of(
        &self,
        ino: u64,
        job_id: &str,
        node: &Node,
    ) -> Result<(Resume, u32), CatalogError> {
        let (id, archive, vault, size) = (
            job_id.to_owned(),
            node.archive_id.clone().unwrap_or_default(),
            node.vault,
            node.size,
        );
        let rec = self
            .catalog
            .write(move |tx| retrievals::begin_download(tx, ino, &id, &archive, vault, size))?;
        let resume = if self.data.partial_path(ino).exists() && rec.verified > 0 {
            Resume {
                verified: rec.verified,
                leaves: rec.leaves,
            }
        } else {
            Resume::default()
        };
        Ok((resume, rec.attempts))
    }

    /// The verified download becomes the file's data: cached, and unread until someone reads it.
    /// Only if the file is still cold: a writer that truncated it meanwhile owns its data now.
    fn finish(&self, node: &Node, job_id: &str) -> Result<(), CatalogError> {
        let ino = node.ino;
        // The rename is a swap of the data file: under its lock, so no open registers a
        // passthrough backing on a file about to be replaced.
        let _data = self.open_files.lock_data(ino);
        let (id, archive, size) = (job_id.to_owned(), node.archive_id.clone(), node.size);
        let taken = self
            .catalog
            .write(move |tx| retrievals::finish_download(tx, ino, &id, archive.as_deref(), size))?;
        if !taken {
            let _ = std::fs::remove_file(self.data.partial_path(ino));
            log::info!(
                "{}: changed while it was retrieved; the retrieved copy is dropped",
                node.name
            );
            return Ok(());
        }
        std::fs::rename(self.data.partial_path(ino), self.data.data_path(ino))?;
        // Its blocks (`st_blocks` counts data on this machine) are no longer 0: the kernel
        // must ask again rather than keep the cold file's attributes for their TTL.
        self.catalog.changed([Change::Node(ino)]);
        log::info!("{} is retrieved, verified and cached", node.name);
        Ok(())
    }
}

/// Download progress, kept in the catalog so a restart resumes from the verified prefix.
struct Journal {
    catalog: Catalog,
    ino: u64,
}

impl DownloadJournal for Journal {
    fn verified(&self, upto: u64, leaves: &[Digest]) -> Result<(), JournalError> {
        let leaves = leaves.to_vec();
        let ino = self.ino;
        self.catalog
            .write(move |tx| retrievals::record_verified(tx, ino, upto, &leaves))?;
        Ok(())
    }
}
