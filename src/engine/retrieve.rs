//! Retrievals: getting archived data back. An open of a cold file starts (or reuses) an
//! archive-retrieval job and fails with EAGAIN; a poller follows the jobs; when one succeeds,
//! its output is downloaded, verified against the archive's tree hash, and becomes the file's
//! cached data. Explicit requests (xattr, `.jobs`, `glacierfs retrieve`) go through the same
//! path without counting against the automatic-retrieval budget.
//!
//! Job ids are kept in the catalog across mounts, since a job's output stays valid for at least
//! 24 hours and costs money to ask for again.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rusqlite::{params, Connection, OptionalExtension};

use crate::catalog::now_s;
use crate::catalog::{self, nodes, vaults, Catalog, CatalogError, Node};
use crate::codec::treehash::{self, Digest};
use crate::engine::transfer::download::{
    self, DownloadError, DownloadJournal, DownloadSpec, Resume,
};
use crate::glacier::{
    ErrorKind, GlacierClient, GlacierError, JobAction, JobDesc, JobFilter, JobRequest, JobStatus,
    Tier,
};
use crate::store::cache::DataStore;
use crate::store::handles::OpenFiles;

/// Settings of retrieval.
#[derive(Debug, Clone)]
pub struct RetrieveOptions {
    pub tier: Tier,
    /// Opening a cold file starts a job (false: EAGAIN without one).
    pub auto: bool,
    /// Bytes automatic retrievals may ask for per 24 h.
    pub budget: u64,
    pub poll_interval: Duration,
    /// Bound on cached retrieved data (LRU).
    pub cache_size: u64,
}

/// Jobs polled one by one up to this many; beyond it, one ListJobs per vault.
const DESCRIBE_LIMIT: usize = 10;
/// Bytes per ranged request of a download: small enough to resume finely, large enough to be
/// cheap in requests.
const CHUNK: u64 = 4 << 20;
const PARALLEL_CHUNKS: usize = 4;
const PARALLEL_DOWNLOADS: usize = 2;
/// A download that fails verification this many times marks its job Failed: the open gets EIO.
const MAX_CORRUPT: i64 = 2;
/// How long a permanent refusal to start a job (PolicyEnforced, access denied, a bad request)
/// answers opens with EIO before an open may ask Glacier again. Without it every open would
/// ask again and get EAGAIN, so a user would wait for a job that never started. An explicit
/// `retrieve` asks again at once.
const REFUSAL_HOLD_S: i64 = 15 * 60;
/// The `jobs.message` prefix of a refused start; the row's id is made up (`refused-…`).
const REFUSED: &str = "Glacier refused the retrieval: ";

/// Why a read of a cold file cannot be served now. The file-system layer turns each into its
/// errno (EAGAIN, EDQUOT, EIO), so this engine need not know about errnos.
#[derive(Debug, thiserror::Error)]
pub enum RetrieveError {
    /// A retrieval is on its way (or automatic retrieval is off): ask again later.
    #[error("data not yet retrieved: {0}")]
    NotYetAvailable(String),
    /// Starting a retrieval would pass the retrieval budget.
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
    wake: tokio::sync::Notify,
    downloads: tokio::sync::Semaphore,
    open_files: Arc<OpenFiles>,
}

#[derive(Default)]
struct RState {
    /// Archives whose job is being started now.
    starting: HashSet<String>,
    /// Files being downloaded, with bytes verified so far.
    downloading: HashMap<u64, Arc<AtomicU64>>,
    /// Last read of cached files since the last flush to the catalog (for the LRU).
    reads: HashMap<u64, i64>,
    /// Bytes of automatic retrievals being started, not yet recorded as jobs: a burst of cold
    /// opens must not all pass the budget check before the first job is recorded.
    reserved: u64,
}

fn lock(m: &Mutex<RState>) -> std::sync::MutexGuard<'_, RState> {
    crate::locks::lock(m)
}

/// A retrieval job as the catalog knows it.
#[derive(Debug, Clone)]
pub struct JobRow {
    pub job_id: String,
    pub vault: u64,
    pub archive_id: Option<String>,
    pub status: String,
    pub message: Option<String>,
    pub ino: Option<u64>,
    /// Whether its output has been downloaded (a later eviction does not start a new job:
    /// the output is fetched again while Glacier keeps it).
    pub downloaded: bool,
    pub created_s: i64,
}

impl JobRow {
    /// Running, or finished with output still to fetch.
    fn in_flight(&self) -> bool {
        self.status == "InProgress" || (self.status == "Succeeded" && !self.downloaded)
    }
}

fn job_for_archive(
    c: &Connection,
    vault: u64,
    archive_id: &str,
) -> Result<Option<JobRow>, CatalogError> {
    let mut stmt = c.prepare_cached(
        "SELECT job_id, vault, archive_id, status, message, ino, \
         bytes_done >= COALESCE(size, 0) AND status = 'Succeeded', created_s FROM jobs \
         WHERE action = 'ArchiveRetrieval' AND vault = ?1 AND archive_id = ?2 \
         ORDER BY CASE status WHEN 'Failed' THEN 1 ELSE 0 END, created_s DESC LIMIT 1",
    )?;
    Ok(stmt
        .query_row(params![vault as i64, archive_id], |r| {
            Ok(JobRow {
                job_id: r.get(0)?,
                vault: r.get::<_, i64>(1)? as u64,
                archive_id: r.get(2)?,
                status: r.get(3)?,
                message: r.get(4)?,
                ino: r.get::<_, Option<i64>>(5)?.map(|i| i as u64),
                downloaded: r.get(6)?,
                created_s: r.get(7)?,
            })
        })
        .optional()?)
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
            wake: tokio::sync::Notify::new(),
            downloads: tokio::sync::Semaphore::new(PARALLEL_DOWNLOADS),
            open_files,
        })
    }

    /// The error a data open of cold file `n` gets, after starting or reusing its retrieval.
    pub fn cold_open(self: &Arc<Self>, n: &Node) -> RetrieveError {
        let Some(archive_id) = n.archive_id.clone() else {
            return RetrieveError::NotYetAvailable(n.name.clone());
        };
        let vault = n.vault;
        let job = {
            let a = archive_id.clone();
            self.catalog.read(move |c| job_for_archive(c, vault, &a))
        };
        match job {
            Ok(Some(j))
                if j.status == "Failed"
                    && j.message.as_deref().is_some_and(|m| {
                        m.contains(CORRUPT)
                            || (m.starts_with(REFUSED) && now_s() - j.created_s < REFUSAL_HOLD_S)
                    }) =>
            {
                return RetrieveError::Failed(format!(
                    "{}: {}",
                    n.name,
                    j.message.unwrap_or_default()
                ));
            }
            Ok(Some(j)) if j.status != "Failed" => {
                if j.downloaded {
                    self.fetch_again(&j, n.ino);
                }
                self.wake.notify_one();
                return RetrieveError::NotYetAvailable(format!(
                    "{} is being retrieved (job {})",
                    n.name, j.job_id
                ));
            }
            Ok(_) => {}
            Err(e) => return e.into(),
        }
        if !self.options.auto {
            return RetrieveError::NotYetAvailable(format!(
                "{} is in Glacier; automatic retrieval is off",
                n.name
            ));
        }
        let reserved = lock(&self.state).reserved;
        match self.budget_left().map(|l| l.saturating_sub(reserved)) {
            Ok(left) if left < n.size => {
                log::warn!(
                    "not retrieving {}: {} bytes would pass the retrieval budget ({} left for \
                     the next 24 h)",
                    n.name,
                    n.size,
                    left
                );
                return RetrieveError::BudgetSpent(format!(
                    "{} needs {} bytes, {left} left",
                    n.name, n.size
                ));
            }
            Ok(_) => {}
            Err(e) => return e.into(),
        }
        self.start(n.clone(), self.options.tier, true);
        RetrieveError::NotYetAvailable(format!("{} is being retrieved", n.name))
    }

    /// An explicit request: starts or reuses a job for a cold file; no budget applies.
    pub fn request(self: &Arc<Self>, n: &Node, tier: Option<Tier>) -> Result<bool, RetrieveError> {
        if n.local || n.archive_id.is_none() || n.size == 0 {
            return Ok(false);
        }
        let (vault, a) = (n.vault, n.archive_id.clone().unwrap_or_default());
        let job = self.catalog.read(move |c| job_for_archive(c, vault, &a))?;
        if let Some(j) = job.filter(|j| j.status != "Failed") {
            if j.downloaded {
                self.fetch_again(&j, n.ino);
            }
            self.wake.notify_one();
            return Ok(true);
        }
        self.start(n.clone(), tier.unwrap_or(self.options.tier), false);
        Ok(true)
    }

    /// Data evicted since its job finished is fetched again from the same job's output (it
    /// stays for at least 24 h); if that has expired, the download says so and a new job
    /// follows at the next open.
    fn fetch_again(&self, j: &JobRow, ino: u64) {
        let id = j.job_id.clone();
        let r = self.catalog.write(move |tx| {
            tx.execute(
                "UPDATE jobs SET bytes_done = 0, ino = ?2 WHERE job_id = ?1",
                params![id, ino as i64],
            )?;
            Ok(())
        });
        if let Err(e) = r {
            log::warn!("asking for job {} again: {e}", j.job_id);
        }
    }

    /// Bytes automatic retrievals may still ask for in the current 24 h window.
    fn budget_left(&self) -> Result<u64, CatalogError> {
        let since = now_s() - 86_400;
        let used: i64 = self.catalog.read(move |c| {
            Ok(c.prepare_cached(
                "SELECT COALESCE(SUM(size), 0) FROM jobs WHERE auto = 1 AND created_s > ?1",
            )?
            .query_row([since], |r| r.get(0))?)
        })?;
        Ok(self.options.budget.saturating_sub(used.max(0) as u64))
    }

    /// The job id while `n` is being retrieved.
    pub fn job_id(&self, n: &Node) -> Option<String> {
        if n.local {
            return None;
        }
        let (vault, a) = (n.vault, n.archive_id.clone()?);
        self.catalog
            .read(move |c| job_for_archive(c, vault, &a))
            .ok()
            .flatten()
            .filter(JobRow::in_flight)
            .map(|j| j.job_id)
    }

    /// Bytes downloaded and verified so far for `ino`, while its download runs.
    pub fn progress(&self, ino: u64) -> Option<u64> {
        lock(&self.state)
            .downloading
            .get(&ino)
            .map(|p| p.load(std::sync::atomic::Ordering::Relaxed))
    }

    /// Notes a read of cached data, for the LRU.
    pub fn touch(&self, ino: u64) {
        lock(&self.state).reads.insert(ino, catalog::now_ns());
    }

    /// Starts (or reuses) a job in the background; false if one is being started already.
    fn start(self: &Arc<Self>, n: Node, tier: Tier, auto: bool) -> bool {
        let Some(archive_id) = n.archive_id.clone() else {
            return false;
        };
        {
            let mut st = lock(&self.state);
            if !st.starting.insert(archive_id.clone()) {
                return false;
            }
            if auto {
                st.reserved += n.size;
            }
        }
        let me = Arc::clone(self);
        self.runtime.spawn(async move {
            if let Err(e) = me.start_job(&n, &archive_id, tier, auto).await {
                log::warn!("retrieving {}: {e}", n.name);
                if !e.is_transient() && e.kind != ErrorKind::Other {
                    me.record_refusal(&n, &archive_id, &e).await;
                }
            }
            let mut st = lock(&me.state);
            st.starting.remove(&archive_id);
            if auto {
                st.reserved = st.reserved.saturating_sub(n.size);
            }
            drop(st);
            me.wake.notify_one();
        });
        true
    }

    /// Reuses a running or finished job Glacier has for the archive, or starts one.
    async fn start_job(
        &self,
        n: &Node,
        archive_id: &str,
        tier: Tier,
        auto: bool,
    ) -> Result<(), GlacierError> {
        let vault_name = self
            .vault_name(n.vault)
            .map_err(|e| GlacierError::new("retrieve", ErrorKind::Other, e.to_string()))?;
        let listed = self
            .client
            .list_jobs(&vault_name, JobFilter::default())
            .await?;
        let whole = format!("0-{}", n.size.saturating_sub(1));
        let reusable = listed.into_iter().find(|j| {
            j.action == JobAction::ArchiveRetrieval
                && j.archive_id.as_deref() == Some(archive_id)
                && j.status != JobStatus::Failed
                && j.retrieval_byte_range
                    .as_deref()
                    .map_or(true, |r| r == whole)
        });
        let job = match reusable {
            Some(j) => {
                log::info!("{}: reusing retrieval job {}", n.name, j.job_id);
                self.record_job(n, &j, false).await?;
                return Ok(());
            }
            None => self.initiate(&vault_name, n, archive_id, tier).await?,
        };
        self.record_job(n, &job, auto).await?;
        log::info!(
            "{}: started a {} retrieval job {}",
            n.name,
            job.tier.as_deref().unwrap_or(tier.as_str()),
            job.job_id
        );
        Ok(())
    }

    async fn initiate(
        &self,
        vault_name: &str,
        n: &Node,
        archive_id: &str,
        tier: Tier,
    ) -> Result<JobDesc, GlacierError> {
        let request = |tier| JobRequest::Archive {
            archive_id: archive_id.to_owned(),
            tier,
            range: None,
            description: Some("glacierfs retrieval".into()),
        };
        let mut tier = tier;
        let mut attempt = 0u32;
        let job_id = loop {
            match self.client.initiate_job(vault_name, &request(tier)).await {
                Ok(id) => break id,
                Err(e) if e.kind == ErrorKind::InsufficientCapacity && tier == Tier::Expedited => {
                    log::warn!(
                        "{}: no Expedited capacity ({e}); falling back to Standard",
                        n.name
                    );
                    tier = Tier::Standard;
                }
                Err(e) if e.is_transient() && attempt < 5 => {
                    // The job may exist though its reply was lost: look before asking again.
                    attempt += 1;
                    tokio::time::sleep(Duration::from_millis(200 << attempt)).await;
                    let listed = self
                        .client
                        .list_jobs(vault_name, JobFilter::default())
                        .await?;
                    if let Some(j) = listed.into_iter().find(|j| {
                        j.action == JobAction::ArchiveRetrieval
                            && j.archive_id.as_deref() == Some(archive_id)
                            && j.status != JobStatus::Failed
                    }) {
                        log::info!("{}: the job asked for exists after all ({e})", n.name);
                        break j.job_id;
                    }
                }
                Err(e) => return Err(e),
            }
        };
        match self.client.describe_job(vault_name, &job_id).await {
            Ok(j) => Ok(j),
            Err(_) => Ok(JobDesc {
                job_id,
                action: JobAction::ArchiveRetrieval,
                status: JobStatus::InProgress,
                status_message: None,
                archive_id: Some(archive_id.to_owned()),
                archive_size: Some(n.size),
                archive_tree_hash: n.tree_hash.clone(),
                tree_hash: None,
                retrieval_byte_range: None,
                tier: Some(tier.as_str().into()),
                creation_date: None,
                completion_date: None,
                inventory_size: None,
                inventory_marker: None,
                description: None,
            }),
        }
    }

    async fn record_job(&self, n: &Node, j: &JobDesc, auto: bool) -> Result<(), GlacierError> {
        let (j, ino, vault, size) = (j.clone(), n.ino, n.vault, n.size);
        self.catalog
            .write_async(move |tx| {
                tx.execute(
                    "INSERT INTO jobs (job_id, vault, action, archive_id, tier, status, message, \
                     created_s, completed_s, size, auto, ino) \
                     VALUES (?1, ?2, 'ArchiveRetrieval', ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11) \
                     ON CONFLICT(job_id) DO UPDATE SET status = excluded.status, \
                     message = excluded.message, completed_s = excluded.completed_s, \
                     ino = COALESCE(jobs.ino, excluded.ino)",
                    params![
                        j.job_id,
                        vault as i64,
                        j.archive_id,
                        j.tier,
                        j.status.as_str(),
                        j.status_message,
                        crate::codec::timefmt::iso_secs(j.creation_date.as_deref())
                            .unwrap_or_else(now_s),
                        crate::codec::timefmt::iso_secs(j.completion_date.as_deref()),
                        size as i64,
                        auto,
                        ino as i64
                    ],
                )?;
                Ok(())
            })
            .await
            .map_err(|e| GlacierError::new("record job", ErrorKind::Other, e.to_string()))
    }

    /// Keeps a permanent refusal as a Failed row, so `.jobs` shows Glacier's message and opens
    /// get EIO for [`REFUSAL_HOLD_S`] instead of waiting on a job that does not exist.
    async fn record_refusal(&self, n: &Node, archive_id: &str, e: &GlacierError) {
        let now = now_s();
        let id = format!("refused-{}-{now}", n.ino);
        let message = format!("{REFUSED}{e}");
        let (vault, ino, size, archive_id) = (n.vault, n.ino, n.size, archive_id.to_owned());
        let r = self
            .catalog
            .write_async(move |tx| {
                tx.execute(
                    "INSERT OR REPLACE INTO jobs (job_id, vault, action, archive_id, status, \
                     message, created_s, completed_s, size, auto, ino) \
                     VALUES (?1, ?2, 'ArchiveRetrieval', ?3, 'Failed', ?4, ?5, ?5, ?6, 0, ?7)",
                    params![
                        id,
                        vault as i64,
                        archive_id,
                        message,
                        now,
                        size as i64,
                        ino as i64
                    ],
                )?;
                Ok(())
            })
            .await;
        if let Err(e) = r {
            log::warn!("recording a refused retrieval of {}: {e}", n.name);
        }
    }

    fn vault_name(&self, vault: u64) -> Result<String, CatalogError> {
        self.catalog
            .read(move |c| vaults::by_ino(c, vault))?
            .map(|v| v.name)
            .ok_or(CatalogError::NotFound)
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

    /// One round: refresh running jobs, and start the downloads of finished ones.
    async fn poll_once(self: &Arc<Self>) -> Result<(), CatalogError> {
        let jobs = self.catalog.read_async(pending_jobs).await?;
        let running: Vec<&PendingJob> = jobs.iter().filter(|j| j.status == "InProgress").collect();
        // A job older than any job runs (12 h) plus its output's life (24 h) can only be gone;
        // a listing of completed jobs would never show it, so it is asked about on its own.
        let stale = now_s() - 36 * 3600;
        let old: Vec<&PendingJob> = running
            .iter()
            .copied()
            .filter(|j| j.created_s < stale)
            .collect();
        if running.len() <= DESCRIBE_LIMIT || !old.is_empty() {
            let ask = if running.len() <= DESCRIBE_LIMIT {
                &running
            } else {
                &old
            };
            for j in ask {
                match self.client.describe_job(&j.vault_name, &j.job_id).await {
                    Ok(d) => self.update_status(j, &d).await?,
                    Err(e) if e.kind == ErrorKind::NotFound => self.forget_job(&j.job_id).await?,
                    Err(e) => log::debug!("describing job {}: {e}", j.job_id),
                }
            }
        } else {
            // Many jobs: one listing per vault, of completed jobs only, paged to the end.
            let vault_names: HashSet<&str> =
                running.iter().map(|j| j.vault_name.as_str()).collect();
            for v in vault_names {
                let filter = JobFilter {
                    completed: Some(true),
                    status: None,
                };
                match self.client.list_jobs(v, filter).await {
                    Ok(done) => {
                        for d in done {
                            if let Some(j) = running.iter().find(|j| j.job_id == d.job_id) {
                                self.update_status(j, &d).await?;
                            }
                        }
                    }
                    Err(e) => log::debug!("listing jobs of {v}: {e}"),
                }
            }
        }
        let ready = self.catalog.read_async(pending_jobs).await?;
        for j in ready.into_iter().filter(|j| j.status == "Succeeded") {
            self.start_download(j);
        }
        Ok(())
    }

    async fn update_status(&self, j: &PendingJob, d: &JobDesc) -> Result<(), CatalogError> {
        if d.status.as_str() == j.status {
            return Ok(());
        }
        log::info!("retrieval job {} is {}", j.job_id, d.status.as_str());
        let (id, status, msg, done) = (
            j.job_id.clone(),
            d.status.as_str().to_owned(),
            d.status_message.clone(),
            crate::codec::timefmt::iso_secs(d.completion_date.as_deref()),
        );
        self.catalog
            .write_async(move |tx| {
                tx.execute(
                    "UPDATE jobs SET status = ?2, message = ?3, completed_s = ?4 WHERE job_id = ?1",
                    params![id, status, msg, done],
                )?;
                Ok(())
            })
            .await
    }

    async fn forget_job(&self, job_id: &str) -> Result<(), CatalogError> {
        log::info!("retrieval job {job_id} is gone (expired); a later open starts a new one");
        let id = job_id.to_owned();
        self.catalog
            .write_async(move |tx| {
                tx.execute("DELETE FROM jobs WHERE job_id = ?1", [&id])?;
                tx.execute("DELETE FROM downloads WHERE job_id = ?1", [&id])?;
                Ok(())
            })
            .await
    }

    fn start_download(self: &Arc<Self>, j: PendingJob) {
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
                log::warn!("downloading job {}: {e}", j.job_id);
            }
        });
    }

    /// Downloads a finished job's output for `ino`, resuming from what is verified.
    async fn download(self: &Arc<Self>, j: &PendingJob, ino: u64) -> Result<(), DownloadError> {
        let node = self
            .catalog
            .read(move |c| nodes::get(c, ino))
            .map_err(cat)?;
        let Some(node) = node.filter(|n| !n.local && n.archive_id == j.archive_id) else {
            // Already cached, replaced or gone: nothing to fetch.
            return Ok(());
        };
        let Some(hash) = node.tree_hash.as_deref().and_then(treehash::from_hex) else {
            return Err(DownloadError::Corrupt {
                what: format!(
                    "{}: the catalog has no tree hash to verify it against",
                    node.name
                ),
            });
        };
        let (resume, attempts) = {
            let (me, id, n) = (Arc::clone(self), j.job_id.clone(), node.clone());
            tokio::task::spawn_blocking(move || me.resume_of(ino, &id, &n))
                .await
                .map_err(|e| DownloadError::Journal(e.to_string()))??
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
                tokio::task::spawn_blocking(move || me.finish(&n, &id))
                    .await
                    .map_err(|e| DownloadError::Journal(e.to_string()))?
                    .map_err(cat)
            }
            Err(DownloadError::Expired) => {
                let _ = std::fs::remove_file(&dest);
                self.forget_job(&j.job_id).await.map_err(cat)?;
                Err(DownloadError::Expired)
            }
            Err(DownloadError::Corrupt { what }) => {
                let _ = std::fs::remove_file(&dest);
                let failed = attempts + 1 >= MAX_CORRUPT;
                let (id, message) = (j.job_id.clone(), format!("{CORRUPT}: {what}"));
                self.catalog
                    .write_async(move |tx| {
                        tx.execute(
                            "UPDATE downloads SET attempts = attempts + 1, verified = 0, leaves = x'', \
                             message = ?2 WHERE ino = ?1",
                            params![ino as i64, message],
                        )?;
                        if failed {
                            tx.execute(
                                "UPDATE jobs SET status = 'Failed', message = ?2 WHERE job_id = ?1",
                                params![id, message],
                            )?;
                        }
                        Ok(())
                    })
                    .await
                    .map_err(cat)?;
                if !failed {
                    self.wake.notify_one();
                }
                Err(DownloadError::Corrupt { what })
            }
            Err(e) => Err(e),
        }
    }

    /// Where a download of `ino` stands: resumed from the catalog, or fresh.
    fn resume_of(
        &self,
        ino: u64,
        job_id: &str,
        node: &Node,
    ) -> Result<(Resume, i64), DownloadError> {
        let (id, archive, vault, size) = (
            job_id.to_owned(),
            node.archive_id.clone().unwrap_or_default(),
            node.vault,
            node.size,
        );
        let row = self
            .catalog
            .write(move |tx| {
                let existing: Option<(String, i64, Vec<u8>, i64)> = tx
                    .query_row(
                        "SELECT job_id, verified, leaves, attempts FROM downloads WHERE ino = ?1",
                        [ino as i64],
                        |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
                    )
                    .optional()?;
                match existing {
                    // The same job's output is byte for byte the same: resume it.
                    Some((j, verified, leaves, attempts)) if j == id => Ok((verified, leaves, attempts)),
                    _ => {
                        tx.execute(
                            "INSERT OR REPLACE INTO downloads (ino, job_id, archive_id, vault, size) \
                             VALUES (?1, ?2, ?3, ?4, ?5)",
                            params![ino as i64, id, archive, vault as i64, size as i64],
                        )?;
                        Ok((0, Vec::new(), 0))
                    }
                }
            })
            .map_err(cat)?;
        let (verified, blob, attempts) = row;
        let leaves: Vec<Digest> = blob
            .chunks_exact(32)
            .map(|c| {
                let mut d = [0u8; 32];
                d.copy_from_slice(c);
                d
            })
            .collect();
        let resume = if self.data.partial_path(ino).exists() && verified > 0 {
            Resume {
                verified: verified as u64,
                leaves,
            }
        } else {
            Resume {
                verified: 0,
                leaves: Vec::new(),
            }
        };
        Ok((resume, attempts))
    }

    /// The verified download becomes the file's data: cached, and unread until someone reads it.
    /// Only if the file is still cold: a writer that truncated it meanwhile owns its data now.
    fn finish(&self, node: &Node, job_id: &str) -> Result<(), CatalogError> {
        let ino = node.ino;
        let (id, archive) = (job_id.to_owned(), node.archive_id.clone());
        let size = node.size as i64;
        let taken = self.catalog.write(move |tx| {
            tx.execute(
                "UPDATE jobs SET bytes_done = ?2 WHERE job_id = ?1",
                params![id, size],
            )?;
            tx.execute("DELETE FROM downloads WHERE ino = ?1", [ino as i64])?;
            Ok(tx.execute(
                "UPDATE nodes SET local = 1, read_ns = NULL \
                 WHERE ino = ?1 AND local = 0 AND dirty = 0 AND archive_id IS ?2",
                params![ino as i64, archive],
            )? == 1)
        })?;
        if !taken {
            let _ = std::fs::remove_file(self.data.partial_path(ino));
            log::info!(
                "{}: changed while it was retrieved; the retrieved copy is dropped",
                node.name
            );
            return Ok(());
        }
        std::fs::rename(self.data.partial_path(ino), self.data.data_path(ino))?;
        log::info!("{} is retrieved, verified and cached", node.name);
        Ok(())
    }

    /// Writes the reads noted since the last round, then evicts the least recently read
    /// cached data above `--cache-size`. Staged data, open files and data retrieved but not
    /// read yet are never evicted.
    fn flush_reads_and_evict(&self) -> Result<(), CatalogError> {
        let reads: Vec<(u64, i64)> = lock(&self.state).reads.drain().collect();
        if !reads.is_empty() {
            self.catalog.write(move |tx| {
                let mut stmt = tx.prepare_cached("UPDATE nodes SET read_ns = ?2 WHERE ino = ?1")?;
                for (ino, at) in &reads {
                    stmt.execute(params![*ino as i64, at])?;
                }
                Ok(())
            })?;
        }
        crate::store::cache::evict(&self.catalog, &self.data, self.options.cache_size, &|ino| {
            self.open_elsewhere(ino)
        })
    }

    fn open_elsewhere(&self, ino: u64) -> bool {
        lock(&self.state).downloading.contains_key(&ino) || self.open_files.is_open(ino)
    }
}

/// The marker of a verification failure, as `.jobs` shows it and the open's EIO reports it.
pub const CORRUPT: &str = "retrieved data does not match the archive's tree hash";

fn cat(e: CatalogError) -> DownloadError {
    DownloadError::Journal(e.to_string())
}

/// A retrieval job that is running, or finished and maybe not downloaded yet.
#[derive(Debug, Clone)]
struct PendingJob {
    job_id: String,
    vault_name: String,
    archive_id: Option<String>,
    status: String,
    ino: Option<u64>,
    created_s: i64,
}

fn pending_jobs(c: &Connection) -> Result<Vec<PendingJob>, CatalogError> {
    let mut stmt = c.prepare_cached(
        "SELECT j.job_id, v.name, j.archive_id, j.status, j.ino, j.created_s FROM jobs j \
         JOIN vaults v ON v.ino = j.vault \
         LEFT JOIN nodes n ON n.ino = j.ino \
         WHERE j.action = 'ArchiveRetrieval' AND (j.status = 'InProgress' \
             OR (j.status = 'Succeeded' AND n.ino IS NOT NULL AND n.local = 0 \
                 AND j.bytes_done < COALESCE(j.size, 0)))",
    )?;
    let rows = stmt.query_map([], |r| {
        Ok(PendingJob {
            job_id: r.get(0)?,
            vault_name: r.get(1)?,
            archive_id: r.get(2)?,
            status: r.get(3)?,
            ino: r.get::<_, Option<i64>>(4)?.map(|i| i as u64),
            created_s: r.get(5)?,
        })
    })?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// Download progress, kept in the catalog so a restart resumes from the verified prefix.
struct Journal {
    catalog: Catalog,
    ino: u64,
}

impl DownloadJournal for Journal {
    fn verified(&self, upto: u64, leaves: &[Digest]) -> Result<(), String> {
        let blob: Vec<u8> = leaves.iter().flatten().copied().collect();
        let ino = self.ino;
        self.catalog
            .write(move |tx| {
                tx.execute(
                    "UPDATE downloads SET verified = ?2, leaves = ?3 WHERE ino = ?1",
                    params![ino as i64, upto as i64, blob],
                )?;
                Ok(())
            })
            .map_err(|e| e.to_string())
    }
}
