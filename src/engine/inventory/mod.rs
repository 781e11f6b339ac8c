//! Keeping each vault's catalog in step with Glacier's inventory: deciding when an inventory
//! job is needed, starting or reusing one, waiting for it, downloading its output, parsing it
//! ([`parse`]) and handing it to the catalog's import ([`merge`]). Also the background refresh
//! of the vault list (ListVaults).
//!
//! An inventory job takes hours and costs a request, so one is started only when the catalog
//! has no inventory of the vault, or its inventory is older than `--inventory-max-age` and
//! DescribeVault shows a newer one; a running or recent job that ListJobs shows is reused.

pub mod merge;
pub mod parse;

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::catalog::changes::Change;
use crate::catalog::inventory::{job, ImportError};
use crate::catalog::now_s;
use crate::catalog::{vaults, Catalog, CatalogError, VaultRow};
use crate::codec::timefmt;
use crate::glacier::{
    GlacierClient, GlacierError, JobAction, JobDesc, JobFilter, JobRequest, JobStatus,
};

#[derive(Debug, thiserror::Error)]
pub enum InventoryError {
    #[error(transparent)]
    Catalog(#[from] CatalogError),
    #[error(transparent)]
    Glacier(#[from] GlacierError),
    #[error("inventory is not valid: {0}")]
    Parse(#[from] parse::ParseError),
    #[error("inventory I/O: {0}")]
    Io(#[from] std::io::Error),
    /// The import failed other than in the catalog (a scratch file, a thread).
    #[error(transparent)]
    Import(ImportError),
    #[error("inventory job {job_id} failed: {message}")]
    JobFailed { job_id: String, message: String },
}

impl From<ImportError> for InventoryError {
    /// A catalog error stays one, whichever stage of the import met it.
    fn from(e: ImportError) -> Self {
        match e {
            ImportError::Catalog(e) => InventoryError::Catalog(e),
            e => InventoryError::Import(e),
        }
    }
}

/// Whole refreshes tried before giving up until the next access; each call inside is retried
/// on its own too, so these cover what call retries cannot (a body cut off mid-download).
const REFRESH_ATTEMPTS: u32 = 6;

impl InventoryError {
    /// Worth another try: the network, the service, or a download that came out wrong. An
    /// expired job is worth one too: the next attempt starts a new one.
    pub fn is_transient(&self) -> bool {
        match self {
            InventoryError::Glacier(e) => {
                e.is_transient() || e.kind == crate::glacier::ErrorKind::NotFound
            }
            InventoryError::Io(_) | InventoryError::Parse(_) => true,
            InventoryError::Import(e) => e.is_transient(),
            InventoryError::Catalog(_) | InventoryError::JobFailed { .. } => false,
        }
    }
}

/// What the worker needs.
#[derive(Clone)]
pub struct InventoryConfig {
    pub catalog: Catalog,
    pub client: Arc<dyn GlacierClient>,
    pub cache_dir: PathBuf,
    pub max_age: Duration,
    pub poll_interval: Duration,
    pub runtime: tokio::runtime::Handle,
}

/// Asks the inventory worker to look at a vault. Cheap enough to call on every lookup.
#[derive(Clone)]
pub struct InventoryHandle {
    inner: Option<Arc<HandleInner>>,
}

struct HandleInner {
    config: InventoryConfig,
    /// Vaults being looked at now, or already looked at by this mount.
    seen: Mutex<HashSet<u64>>,
    /// One refresh of a vault at a time: two at once (the first access's and a forced one)
    /// download into the same file, and one could take in the other's half-written output.
    running: Mutex<HashMap<u64, Arc<tokio::sync::Mutex<()>>>>,
}

impl InventoryHandle {
    pub fn new(config: InventoryConfig) -> Self {
        InventoryHandle {
            inner: Some(Arc::new(HandleInner {
                config,
                seen: Mutex::new(HashSet::new()),
                running: Mutex::new(HashMap::new()),
            })),
        }
    }

    /// A handle that never does anything, for offline use and tests.
    pub fn disabled() -> Self {
        InventoryHandle { inner: None }
    }

    /// Makes sure the vault's inventory is being looked after. Without `force`, a vault is
    /// checked once per mount on first access; later checks come from the periodic refresh.
    pub fn request(&self, vault: u64, force: bool) {
        let Some(inner) = &self.inner else { return };
        {
            let mut seen = crate::locks::lock(&inner.seen);
            if !seen.insert(vault) && !force {
                return;
            }
        }
        let config = inner.config.clone();
        let runtime = inner.config.runtime.clone();
        let inner = Arc::clone(inner);
        runtime.spawn(async move {
            let gate = Arc::clone(crate::locks::lock(&inner.running).entry(vault).or_default());
            let _alone = gate.lock().await;
            let mut delay = Duration::from_secs(1);
            for attempt in 1..=REFRESH_ATTEMPTS {
                match refresh_vault(&config, vault, force).await {
                    Ok(()) => return,
                    Err(e) if e.is_transient() && attempt < REFRESH_ATTEMPTS => {
                        log::warn!(
                            "inventory of vault #{vault}: {e}; trying again in {}",
                            crate::codec::timefmt::format_span(delay)
                        );
                        tokio::time::sleep(delay).await;
                        delay = (delay * 2).min(Duration::from_secs(300));
                    }
                    Err(e) => {
                        log::warn!("inventory of vault #{vault}: {e}");
                        // Let the next access try again.
                        crate::locks::lock(&inner.seen).remove(&vault);
                        return;
                    }
                }
            }
        });
    }
}

/// Brings one vault's catalog up to date with Glacier's latest inventory, if it needs it.
pub async fn refresh_vault(
    config: &InventoryConfig,
    vault: u64,
    force: bool,
) -> Result<(), InventoryError> {
    let Some(row) = config
        .catalog
        .read_async(move |c| vaults::by_ino(c, vault))
        .await?
    else {
        return Ok(());
    };
    if row.state != "present" {
        return Ok(());
    }
    let desc = config.client.describe_vault(&row.name).await?;
    let row = config
        .catalog
        .write_async(move |tx| {
            // Deleted while DescribeVault was out: its answer must not bring the vault back.
            if vaults::by_ino(tx, vault)?.is_none_or(|v| v.state != "present") {
                return Ok(None);
            }
            let r = vaults::record_remote(tx, &desc)?;
            vaults::set_checked(tx, r.ino, now_s())?;
            Ok(Some(r))
        })
        .await?;
    let Some(row) = row else {
        return Ok(());
    };
    if !force && !needs_inventory(&row, config.max_age) {
        return Ok(());
    }
    log::info!("vault {}: fetching its inventory", row.name);
    let job = find_or_start_job(config, &row).await?;
    let job = wait_for_job(config, &row, job).await?;
    let file = download(config, &row, &job.job_id).await?;
    let catalog = config.catalog.clone();
    let fallback = row.last_inventory_date.clone();
    let report = tokio::task::spawn_blocking(move || -> Result<_, InventoryError> {
        let reader = std::io::BufReader::with_capacity(1 << 18, std::fs::File::open(&file)?);
        let report = merge::import_shared(&catalog, vault, reader, fallback)?;
        let _ = std::fs::remove_file(&file);
        Ok(report)
    })
    .await
    .map_err(|e| std::io::Error::other(e.to_string()))??;
    log::info!(
        "vault {}: inventory of {} taken in ({} archives, {} new, {} gone)",
        row.name,
        report.inventory_date.as_deref().unwrap_or("unknown date"),
        report.archives,
        report.added,
        report.removed
    );
    Ok(())
}

/// A job only when the catalog has no inventory, or one older than `max_age` that Glacier has
/// replaced since: a job takes hours and costs a request. A vault Glacier never inventoried needs none: the catalog is its whole view.
fn needs_inventory(row: &VaultRow, max_age: Duration) -> bool {
    let Some(remote) = timefmt::iso_secs(row.last_inventory_date.as_deref()) else {
        return false;
    };
    match timefmt::iso_secs(row.inventory_date.as_deref()) {
        None => true,
        Some(local) => remote > local && now_s() - local > max_age.as_secs() as i64,
    }
}

async fn find_or_start_job(
    config: &InventoryConfig,
    row: &VaultRow,
) -> Result<JobDesc, InventoryError> {
    let inventory_s = timefmt::iso_secs(row.last_inventory_date.as_deref()).unwrap_or(0);
    let jobs = config
        .client
        .list_jobs(&row.name, JobFilter::default())
        .await?;
    // A job started after the latest inventory returns that inventory; prefer the newest.
    let reusable = jobs
        .into_iter()
        .filter(|j| j.action == JobAction::InventoryRetrieval && j.status != JobStatus::Failed)
        .filter(|j| timefmt::iso_secs(j.creation_date.as_deref()).unwrap_or(0) >= inventory_s)
        .max_by_key(|j| timefmt::iso_secs(j.creation_date.as_deref()).unwrap_or(0));
    if let Some(job) = reusable {
        log::info!("vault {}: reusing inventory job {}", row.name, job.job_id);
        record_job(config, row.ino, &job).await?;
        return Ok(job);
    }
    let vault = row.ino;
    let intent = config
        .catalog
        .write_async(move |tx| job::intend(tx, vault))
        .await?;
    let request = JobRequest::Inventory {
        format: "JSON".into(),
        marker: None,
        limit: None,
        description: Some("glacierfs inventory".into()),
    };
    let job_id = config.client.initiate_job(&row.name, &request).await?;
    let job = config.client.describe_job(&row.name, &job_id).await?;
    record_job(config, row.ino, &job).await?;
    config
        .catalog
        .write_async(move |tx| job::started(tx, intent, &job_id))
        .await?;
    log::info!("vault {}: started inventory job {}", row.name, job.job_id);
    Ok(job)
}

async fn record_job(
    config: &InventoryConfig,
    vault: u64,
    job: &JobDesc,
) -> Result<(), CatalogError> {
    let desc = job.clone();
    config
        .catalog
        .write_async(move |tx| job::record(tx, vault, &desc))
        .await
}

async fn wait_for_job(
    config: &InventoryConfig,
    row: &VaultRow,
    mut job: JobDesc,
) -> Result<JobDesc, InventoryError> {
    loop {
        match job.status {
            JobStatus::Succeeded => return Ok(job),
            JobStatus::Failed => {
                return Err(InventoryError::JobFailed {
                    job_id: job.job_id.clone(),
                    message: job.status_message.clone().unwrap_or_default(),
                })
            }
            JobStatus::InProgress => {
                tokio::time::sleep(config.poll_interval).await;
                job = config.client.describe_job(&row.name, &job.job_id).await?;
                record_job(config, row.ino, &job).await?;
            }
        }
    }
}

/// How often a download's progress is written to the catalog, in bytes.
const PROGRESS_STEP: u64 = 1 << 20;

async fn record_progress(
    config: &InventoryConfig,
    job_id: &str,
    bytes: u64,
) -> Result<(), CatalogError> {
    let job_id = job_id.to_owned();
    config
        .catalog
        .write_async(move |tx| crate::catalog::jobs::set_bytes_done(tx, &job_id, bytes))
        .await
}

/// Downloads the job's output into the cache directory and returns the file.
async fn download(
    config: &InventoryConfig,
    row: &VaultRow,
    job_id: &str,
) -> Result<PathBuf, InventoryError> {
    let dir = config.cache_dir.join("inventory");
    tokio::fs::create_dir_all(&dir).await?;
    let path = dir.join(format!("{}.inventory", row.ino));
    let mut output = config
        .client
        .get_job_output(&row.name, job_id, None)
        .await?;
    let mut file = tokio::fs::File::create(&path).await?;
    // Copied in steps, each recorded as the job's BytesDone, so `.jobs` shows a large
    // inventory's download advancing rather than at 0 until it is over.
    let mut copied = 0u64;
    let mut recorded = 0u64;
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = output.body.read(&mut buf).await?;
        if n == 0 {
            break;
        }
        file.write_all(&buf[..n]).await?;
        copied += n as u64;
        if copied - recorded >= PROGRESS_STEP {
            recorded = copied;
            record_progress(config, job_id, copied).await?;
        }
    }
    file.flush().await?;
    record_progress(config, job_id, copied).await?;
    if let Some(expected) = output.content_length {
        if copied != expected {
            return Err(InventoryError::Io(std::io::Error::other(format!(
                "inventory output cut short: {copied} of {expected} bytes"
            ))));
        }
    }
    Ok(path)
}

/// Records the vaults ListVaults shows, and forgets settled vaults it no longer shows.
pub async fn refresh_vault_list(
    catalog: &Catalog,
    client: &dyn GlacierClient,
) -> Result<usize, InventoryError> {
    let asked_ns = crate::catalog::now_ns();
    let list = client.list_vaults().await?;
    let count = list.len();
    let gone = catalog
        .write_async(move |tx| vaults::apply_listing(tx, &list, asked_ns))
        .await?
        .into_iter()
        .map(|(parent, name)| Change::Entry { parent, name });
    catalog.changed(gone);
    Ok(count)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(remote: Option<&str>, local: Option<&str>) -> VaultRow {
        VaultRow {
            ino: 2,
            name: "v".into(),
            arn: None,
            last_inventory_date: remote.map(Into::into),
            remote_count: None,
            remote_size: None,
            inventory_date: local.map(Into::into),
            inventory_checked_s: None,
            state: "present".into(),
            lock_id: None,
            lock_message: None,
        }
    }

    #[test]
    fn inventory_jobs_only_when_needed() {
        let day = Duration::from_secs(86400);
        assert!(!needs_inventory(&row(None, None), day), "never inventoried");
        assert!(needs_inventory(
            &row(Some("2020-01-01T00:00:00Z"), None),
            day
        ));
        assert!(!needs_inventory(
            &row(Some("2020-01-01T00:00:00Z"), Some("2020-01-01T00:00:00Z")),
            day
        ));
        assert!(needs_inventory(
            &row(Some("2020-01-03T00:00:00Z"), Some("2020-01-01T00:00:00Z")),
            day
        ));
    }
}
