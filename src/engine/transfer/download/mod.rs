//! The download engine: fills a local data file with the output of one completed whole-archive
//! retrieval job, and vouches for every byte before it says it is done.
//!
//! It owns how the output is fetched and checked, not when or why: the caller decides which job
//! to download, keeps the journal durable, and retries later what fails transiently. Here:
//! - **Tree-aligned chunks, in parallel.** The output is cut into chunks of at most
//!   `chunk_size` (a power-of-two MiB), each exactly one node of the archive's tree, so Glacier
//!   sends `x-amz-sha256-tree-hash` for each ranged GetJobOutput (it sends one only for a range
//!   that is a whole node: see [`crate::codec::treehash::is_tree_aligned`]). Up to `parallel` chunks are fetched at once, each as a tokio task.
//! - **One pass.** A chunk's body is streamed into the file at its offset, one 1 MiB leaf at a
//!   time, and each leaf is hashed on its way to the disk; `pwrite` and the hashing run on the
//!   blocking pool, never on a runtime worker, while the next leaf is read off the network.
//! - **Checked as it arrives.** A chunk must have exactly its
//!   length, and the root of its leaves must equal the header when there is one; otherwise it is
//!   fetched again, up to [`ATTEMPTS`] times. The archive's own tree hash, combined from all the
//!   leaves, is checked at the end, so a chunk that came without a header (an endpoint that
//!   sends none, such as moto) is still covered before anything is reported done.
//! - **Resumable.** The journal records each time the contiguous prefix of good chunks grows,
//!   with the leaf hashes of that prefix, so a restart fetches only what lies beyond it and the
//!   final check needs no second pass over the file. Data is flushed to the disk before the
//!   journal vouches for it.
//! - **Endpoints that ignore `Range`.** One that answers a ranged request with the whole output
//!   (200, no `Content-Range`: moto) is detected on the first request; the engine then streams
//!   that one body sequentially into the file, still hashing every leaf and journalling.
//!
//! Retrying single requests is the client's job ([`crate::glacier::retry::Retrying`]); a body
//! cut off mid-stream, truncated or corrupted is this engine's, since only it can tell.
//!
//! Split along its jobs: this file holds the interface, the entry point and what every chunk
//! task shares; [`chunks`] plans the ranges and reads what a response holds; [`fetch`] runs
//! the fetches and keeps the verified prefix; [`stream`] moves bytes from a body to the file.

mod chunks;
mod fetch;
pub mod memory;
mod stream;

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::OpenOptionsExt;
use std::path::PathBuf;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;

use tokio::runtime::{Handle, RuntimeFlavor};
use tokio::sync::Semaphore;
use tokio::task::JoinError;

use crate::catalog::CatalogError;
use crate::codec::treehash::{Digest, MIB};
use crate::glacier::{ErrorKind, GlacierClient, GlacierError, JobOutput};
use chunks::{pow2_mib_at_most, Chunk};
use fetch::{fetch_all, Prefix};

/// Fetches of one chunk (or, with an endpoint that ignores `Range`, consecutive fetches of the
/// whole output that make no progress) before the download fails.
pub const ATTEMPTS: u32 = 3;

/// The leaf size, as a `usize` for buffers.
const LEAF: usize = MIB as usize;

/// More than the leaf jobs that can ever be in flight (one per chunk task): taking them all
/// waits for every job handed to the blocking pool to end.
const LEAF_JOB_PERMITS: u32 = 1 << 20;

/// What to download.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DownloadSpec {
    pub vault: String,
    pub job_id: String,
    /// The archive's size: the job retrieves the whole archive.
    pub size: u64,
    /// The archive's tree hash, from the catalog.
    pub tree_hash: Digest,
    /// The data file to fill, created 0600 if missing. Only [`download`] returning `Ok` (and the
    /// journal's record of the whole size) says its bytes are good.
    pub dest: PathBuf,
    /// A power-of-two MiB, e.g. 16 MiB (anything else is rounded down to one, at least 1 MiB);
    /// each request covers one tree-aligned chunk of at most this size.
    pub chunk_size: u64,
}

/// Progress that survives a restart: bytes `[0, upto)` of the file are known good, and `leaves`
/// are their 1 MiB leaf hashes, so the final check needs no second pass over them.
///
/// A chunk is known good when it had its exact length and matched the tree-hash header Glacier
/// sent for it; a chunk that came without a header is vouched for by the whole-archive check at
/// the end. So a record never reaches the archive's size before that check has passed, and a
/// failed check records `upto = 0`: everything must be fetched again.
///
/// `leaves` is always the whole prefix's (append-only storage keeps `leaves[old_upto / MiB..]`).
/// The data is flushed to the disk before each record. Records are made from async code; on a
/// multi-threaded runtime the engine wraps them in `block_in_place`, so a short synchronous wait
/// (e.g. for the catalog's writer thread) is fine. An error stops the download.
pub trait DownloadJournal: Send + Sync {
    fn verified(&self, upto: u64, leaves: &[Digest]) -> Result<(), JournalError>;
}

/// Why a journal could not make a record: its store failed. The download stops; trying again
/// later resumes from the last record that was made.
#[derive(Debug, thiserror::Error)]
pub enum JournalError {
    /// A journal kept in the catalog.
    #[error(transparent)]
    Catalog(#[from] CatalogError),
    /// A journal kept in a file of its own.
    #[error(transparent)]
    Io(#[from] io::Error),
}

/// Where an interrupted download stands, as the journal last recorded it. The default,
/// `Resume { verified: 0, leaves: vec![] }`, downloads everything from scratch: use it after a
/// [`DownloadError::Corrupt`], or for a new job.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Resume {
    pub verified: u64,
    pub leaves: Vec<Digest>,
}

/// Why a download failed. Whatever the failure, the journal describes only good data.
#[derive(Debug, thiserror::Error)]
pub enum DownloadError {
    #[error(transparent)]
    Glacier(#[from] GlacierError),
    #[error("writing the data file: {0}")]
    Io(#[from] io::Error),
    /// The data did not match its tree hash even after fetching it again; nothing of it is
    /// served. Fetching again from scratch (`Resume::default()`) may help once.
    #[error("retrieved data is corrupt: {what}")]
    Corrupt { what: String },
    /// The job's output is gone (404): a new retrieval job is needed.
    #[error("the retrieval job's output has expired")]
    Expired,
    #[error("journal: {0}")]
    Journal(#[from] JournalError),
    /// The runtime is shutting down under the download.
    #[error("download cancelled: the runtime is shutting down")]
    Cancelled,
}

impl DownloadError {
    /// Whether trying the same job again later (resuming through the journal) may succeed. A
    /// journal that cannot write now may well write later. Corrupt data has been fetched
    /// [`ATTEMPTS`] times already; an expired job needs a new job.
    pub fn is_transient(&self) -> bool {
        match self {
            DownloadError::Glacier(e) => e.is_transient(),
            DownloadError::Journal(_) | DownloadError::Cancelled => true,
            DownloadError::Io(_) | DownloadError::Corrupt { .. } | DownloadError::Expired => false,
        }
    }
}

/// Downloads the output of `spec.job_id` into `spec.dest` and checks it against
/// `spec.tree_hash`; `Ok` only once every byte is checked and flushed to the disk.
///
/// `resume` is the journal's last record (a record that does not fit this download is ignored:
/// it starts over); only bytes beyond it are requested. `progress` grows by each chunk's length
/// as it is verified (the resumed prefix is not added: seed it with `resume.verified` if you
/// want a running total). Dropping the future stops the download at once; a leaf already handed
/// to the blocking pool may still be written, beyond the journaled prefix, where nothing is
/// trusted.
pub async fn download(
    client: &Arc<dyn GlacierClient>,
    spec: &DownloadSpec,
    resume: Resume,
    journal: &dyn DownloadJournal,
    progress: &AtomicU64,
    parallel: usize,
) -> Result<(), DownloadError> {
    let file = {
        let (path, size) = (spec.dest.clone(), spec.size);
        blocking(move || open_dest(&path, size)).await??
    };
    let sh = Arc::new(Shared {
        client: client.clone(),
        vault: spec.vault.clone(),
        job_id: spec.job_id.clone(),
        size: spec.size,
        file: Arc::new(file),
        leaf_jobs: Arc::new(Semaphore::new(LEAF_JOB_PERMITS as usize)),
    });
    let resume = usable(resume, &sh);
    let mut prefix = Prefix {
        verified: resume.verified,
        leaves: resume.leaves,
        waiting: BTreeMap::new(),
        unchecked: 0,
        journal,
    };
    let chunk = pow2_mib_at_most(spec.chunk_size);
    let fetched = fetch_all(&sh, &mut prefix, chunk, parallel.max(1), progress).await;
    // A failed download must not leave writes landing behind the caller's back (a retry would
    // race them), so wait for every leaf job to end.
    sh.settle().await;
    fetched?;
    prefix.finish(&sh, &spec.tree_hash).await
}

fn open_dest(path: &std::path::Path, size: u64) -> io::Result<File> {
    let file = OpenOptions::new()
        .write(true)
        .create(true)
        // Never truncated: a resumed download keeps its verified prefix.
        .truncate(false)
        .mode(0o600)
        .open(path)?;
    // Setting the size drops anything a stale, longer file had beyond the archive.
    file.set_len(size)?;
    Ok(file)
}

/// The journal's record, or a fresh start when it cannot describe a prefix of this archive.
fn usable(resume: Resume, sh: &Shared) -> Resume {
    let v = resume.verified;
    let fits = v <= sh.size
        && (v.is_multiple_of(MIB) || v == sh.size)
        && resume.leaves.len() as u64 == v.div_ceil(MIB);
    if fits {
        resume
    } else {
        log::warn!(
            "job {}: the recorded progress ({v} bytes, {} leaves) does not fit an archive of {} \
             bytes; downloading from scratch",
            sh.job_id,
            resume.leaves.len(),
            sh.size
        );
        Resume::default()
    }
}

/// What every chunk task needs.
struct Shared {
    client: Arc<dyn GlacierClient>,
    vault: String,
    job_id: String,
    size: u64,
    file: Arc<File>,
    /// One permit per leaf job on the blocking pool; see [`Shared::settle`].
    leaf_jobs: Arc<Semaphore>,
}

impl Shared {
    /// GetJobOutput of `chunk`, or of everything. A 404 means the output is gone.
    async fn request(&self, chunk: Option<Chunk>) -> Result<JobOutput, DownloadError> {
        let range = chunk.map(|c| (c.start, c.end - 1));
        match self
            .client
            .get_job_output(&self.vault, &self.job_id, range)
            .await
        {
            Ok(out) => Ok(out),
            Err(e) if e.kind == ErrorKind::NotFound => {
                log::info!("job {}: {e}", self.job_id);
                Err(DownloadError::Expired)
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Waits until no leaf job is left on the blocking pool (they cannot be aborted).
    async fn settle(&self) {
        // The semaphore is never closed, so this only waits.
        let _all = self.leaf_jobs.acquire_many(LEAF_JOB_PERMITS).await;
    }
}

/// Runs file I/O on the blocking pool, never on a runtime worker.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<T, DownloadError> {
    joined(tokio::task::spawn_blocking(f).await)
}

/// A finished task's result; a panic inside it is re-raised here, where it belongs.
fn joined<T>(r: Result<T, JoinError>) -> Result<T, DownloadError> {
    match r {
        Ok(v) => Ok(v),
        Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
        Err(_) => Err(DownloadError::Cancelled),
    }
}

/// Makes a journal record. The journal is synchronous (it returns once the record is durable),
/// so on a multi-threaded runtime the wait is moved off the worker's task queue.
fn record(entry: impl FnOnce() -> Result<(), JournalError>) -> Result<(), DownloadError> {
    let multi_thread = Handle::try_current()
        .map(|h| h.runtime_flavor() == RuntimeFlavor::MultiThread)
        .unwrap_or(false);
    let result = if multi_thread {
        tokio::task::block_in_place(entry)
    } else {
        entry()
    };
    Ok(result?)
}
