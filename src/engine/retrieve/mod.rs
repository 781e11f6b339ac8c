//! Retrievals: getting archived data back. An open of a cold file starts (or reuses) an
//! archive-retrieval job and fails with EAGAIN; a poller follows the jobs; when one succeeds,
//! its output is downloaded, verified against the archive's tree hash, and becomes the file's
//! cached data. Explicit requests (xattr, `.jobs`, `glacierfs retrieve`) go through the same
//! path without counting against the automatic-retrieval budget, which bounds both the bytes
//! and the number of jobs opens may start per 24 h.
//!
//! Job ids are kept in the catalog across mounts, since a job's output stays valid for at least
//! 24 hours and costs money to ask for again.
//!
//! This file holds the engine's state and its public face; the rest is split along its jobs:
//! [`gate`] decides what an open gets (the budget, the refusal hold, reuse of a known job),
//! [`start`] starts or finds a job at Glacier, [`poll`] follows running jobs, [`fetch`]
//! downloads finished ones, and [`lru`] keeps the cache within its bound.

mod fetch;
mod gate;
mod lru;
mod poll;
mod start;

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::catalog::{self, retrievals, Catalog, CatalogError, Node};
use crate::config::Tiers;
use crate::glacier::GlacierClient;
use crate::locks::lock;
use crate::store::cache::DataStore;
use crate::store::handles::OpenFiles;

/// Settings of retrieval.
#[derive(Debug, Clone)]
pub struct RetrieveOptions {
    /// The tier of jobs opens start, and of requests that name none; with a fallback when
    /// Expedited capacity is short, if the list names one.
    pub tier: Tiers,
    /// Opening a cold file starts a job (false: EAGAIN without one).
    pub auto: bool,
    /// Bytes automatic retrievals may ask for per 24 h.
    pub budget: u64,
    /// Jobs automatic retrievals may start per 24 h: each job is billed as a request whatever
    /// its size, so many small files cost money the byte budget does not see.
    pub job_budget: u64,
    pub poll_interval: Duration,
    /// Bound on cached retrieved data (LRU).
    pub cache_size: u64,
}

/// Downloads run at once; each fetches several chunks in parallel (see [`fetch`]).
const PARALLEL_DOWNLOADS: usize = 2;

/// Why a read of a cold file cannot be served now. The file-system layer turns each into its
/// errno (EAGAIN, EDQUOT, EIO), so this engine need not know about errnos. Each message names
/// the file.
#[derive(Debug, thiserror::Error)]
pub enum RetrieveError {
    /// A retrieval is on its way (or automatic retrieval is off): ask again later.
    #[error("data not yet retrieved: {0}")]
    NotYetAvailable(String),
    /// Starting a retrieval would pass the retrieval budget (its bytes or its jobs).
    #[error("retrieval budget spent: {0}")]
    BudgetSpent(String),
    /// The file's retrieval failed in a way asking again at once would not fix.
    #[error("retrieval failed: {0}")]
    Failed(String),
    #[error(transparent)]
    Catalog(#[from] CatalogError),
}

pub struct Retriever {
    catalog: Catalog,
    client: Arc<dyn GlacierClient>,
    data: DataStore,
    options: RetrieveOptions,
    runtime: tokio::runtime::Handle,
    state: Mutex<RState>,
    /// Held while an automatic retrieval is checked against the budget and reserved, so
    /// concurrent cold opens cannot all pass the check before any of them reserves.
    gate: Mutex<()>,
    wake: tokio::sync::Notify,
    downloads: tokio::sync::Semaphore,
    open_files: Arc<OpenFiles>,
    /// Seconds added to the wall clock wherever the engine reads it (the budget window, the
    /// refusal hold, job ages): zero in a mount; tests move it to see hours pass.
    clock_offset_s: AtomicI64,
}

#[derive(Default)]
struct RState {
    /// Archives whose job is being started now.
    starting: HashSet<String>,
    /// Files being downloaded, with bytes verified so far.
    downloading: HashMap<u64, Arc<AtomicU64>>,
    /// Last read of cached files since the last flush to the catalog (for the LRU).
    reads: HashMap<u64, i64>,
    /// Automatic retrievals being started, by archive: a burst of cold opens must not all pass
    /// the budget check before the first job is recorded. Each counts against the budget until
    /// the catalog shows the row of its job (known by id once Glacier has answered), so that
    /// neither a check before the row nor one after it counts the job twice.
    reserving: HashMap<String, Reservation>,
}

/// An automatic retrieval being started.
#[derive(Debug, Clone)]
struct Reservation {
    size: u64,
    /// The job's id, set just before its row is written.
    job_id: Option<String>,
}

impl Retriever {
    pub fn new(
        catalog: Catalog,
        client: Arc<dyn GlacierClient>,
        data: DataStore,
        options: RetrieveOptions,
        runtime: tokio::runtime::Handle,
        open_files: Arc<OpenFiles>,
    ) -> Arc<Retriever> {
        Arc::new(Retriever {
            catalog,
            client,
            data,
            options,
            runtime,
            state: Mutex::new(RState::default()),
            gate: Mutex::new(()),
            wake: tokio::sync::Notify::new(),
            downloads: tokio::sync::Semaphore::new(PARALLEL_DOWNLOADS),
            open_files,
            clock_offset_s: AtomicI64::new(0),
        })
    }

    /// The job id while `n` is being retrieved.
    pub fn job_id(&self, n: &Node) -> Option<String> {
        if n.local {
            return None;
        }
        let (vault, a) = (n.vault, n.archive_id.clone()?);
        self.catalog
            .read(move |c| retrievals::for_archive(c, vault, &a))
            .ok()
            .flatten()
            .filter(retrievals::RetrievalJob::in_flight)
            .map(|j| j.job_id)
    }

    /// Bytes downloaded and verified so far for `ino`, while its download runs.
    pub fn progress(&self, ino: u64) -> Option<u64> {
        lock(&self.state)
            .downloading
            .get(&ino)
            .map(|p| p.load(Ordering::Relaxed))
    }

    /// Notes a read of cached data, for the LRU.
    pub fn touch(&self, ino: u64) {
        lock(&self.state).reads.insert(ino, catalog::now_ns());
    }

    /// Moves the engine's clock forward by `by`, as if that much time had passed: a test hook
    /// (a refusal's hold and the budget's 24 h window are otherwise minutes and hours long).
    #[doc(hidden)]
    pub fn advance_clock(&self, by: Duration) {
        let secs = i64::try_from(by.as_secs()).unwrap_or(i64::MAX);
        self.clock_offset_s.fetch_add(secs, Ordering::Relaxed);
    }

    /// Seconds since the epoch, as the engine sees them (see [`Retriever::advance_clock`]).
    fn now_s(&self) -> i64 {
        catalog::now_s().saturating_add(self.clock_offset_s.load(Ordering::Relaxed))
    }

    /// Runs the poller, the downloads and the LRU until the runtime stops.
    pub fn spawn(self: &Arc<Self>) {
        let me = Arc::clone(self);
        self.runtime.spawn(async move {
            loop {
                if let Err(e) = me.poll_once().await {
                    log::warn!("polling retrieval jobs: {e}");
                }
                let lru = Arc::clone(&me);
                let evicted =
                    tokio::task::spawn_blocking(move || lru.flush_reads_and_evict()).await;
                if let Ok(Err(e)) = evicted {
                    log::warn!("cache eviction: {e}");
                }
                tokio::select! {
                    _ = me.wake.notified() => {},
                    _ = tokio::time::sleep(me.options.poll_interval) => {},
                }
            }
        });
    }
}
