//! Starting a job: in the background, one start per archive at a time, reusing a job Glacier
//! already has for the archive before initiating one (falling back from Expedited to the next
//! tier when there is no capacity, only if the tier list names one, and looking for the job
//! after a lost reply before asking again).

use std::sync::Arc;
use std::time::Duration;

use super::{Reservation, Retriever};
use crate::catalog::retrievals::{self, NewRetrieval};
use crate::catalog::{vaults, CatalogError, Node};
use crate::codec::timefmt;
use crate::config::{NoCapacity, Tiers};
use crate::glacier::{
    ErrorKind, GlacierError, JobAction, JobDesc, JobFilter, JobRequest, JobStatus, Tier,
};
use crate::locks::lock;

/// Attempts of InitiateJob after transient failures, with a look for the job between them.
const INITIATE_RETRIES: u32 = 5;

/// Why a job could not be started or recorded.
#[derive(Debug, thiserror::Error)]
pub(super) enum StartError {
    #[error(transparent)]
    Glacier(#[from] GlacierError),
    /// Expedited capacity was short and the tiers name no fallback: a refusal like any other.
    #[error(transparent)]
    NoCapacity(#[from] NoCapacity),
    #[error("vault {vault} is not in the catalog")]
    NoVault { vault: u64 },
    #[error("recording job {job_id}: {source}")]
    Record {
        job_id: String,
        source: CatalogError,
    },
    #[error(transparent)]
    Catalog(#[from] CatalogError),
}

impl StartError {
    /// Glacier refused the job in a way asking again at once would not change: why, in one line.
    fn refusal(&self) -> Option<String> {
        match self {
            StartError::Glacier(e) if !e.is_transient() && e.kind != ErrorKind::Other => {
                Some(e.to_string())
            }
            StartError::NoCapacity(e) => Some(e.to_string()),
            _ => None,
        }
    }
}

impl Retriever {
    /// Starts (or reuses) a job in the background; false if one is being started already.
    pub(super) fn start(self: &Arc<Self>, n: Node, tiers: Tiers, auto: bool) -> bool {
        let Some(archive_id) = n.archive_id.clone() else {
            return false;
        };
        {
            let mut st = lock(&self.state);
            if !st.starting.insert(archive_id.clone()) {
                return false;
            }
            if auto {
                let r = Reservation {
                    size: n.size,
                    job_id: None,
                };
                st.reserving.insert(archive_id.clone(), r);
            }
        }
        let me = Arc::clone(self);
        self.runtime.spawn(async move {
            if let Err(e) = me.start_job(&n, &archive_id, tiers, auto).await {
                log::warn!(
                    "retrieving {} (inode {}, vault {}): {e}",
                    n.name,
                    n.ino,
                    n.vault
                );
                if let Some(refused) = e.refusal() {
                    me.record_refusal(&n, &archive_id, &refused).await;
                }
            }
            let mut st = lock(&me.state);
            st.starting.remove(&archive_id);
            st.reserving.remove(&archive_id);
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
        tiers: Tiers,
        auto: bool,
    ) -> Result<(), StartError> {
        let vault_name = self.vault_name(n.vault)?;
        let listed = self
            .client
            .list_jobs(&vault_name, JobFilter::default())
            .await?;
        let whole = format!("0-{}", n.size.saturating_sub(1));
        let reusable = listed.into_iter().find(|j| {
            retrieves(j, archive_id) && j.retrieval_byte_range.as_deref().is_none_or(|r| r == whole)
        });
        if let Some(j) = reusable {
            log::info!(
                "{}: reusing retrieval job {} in vault {vault_name}",
                n.name,
                j.job_id
            );
            return self.record_job(n, &j, false).await;
        }
        let job = self.initiate(&vault_name, n, archive_id, tiers).await?;
        self.record_job(n, &job, auto).await?;
        log::info!(
            "{}: started a {} retrieval job {} in vault {vault_name}",
            n.name,
            job.tier.as_deref().unwrap_or("?"),
            job.job_id
        );
        Ok(())
    }

    async fn initiate(
        &self,
        vault_name: &str,
        n: &Node,
        archive_id: &str,
        tiers: Tiers,
    ) -> Result<JobDesc, StartError> {
        let request = |tier| JobRequest::Archive {
            archive_id: archive_id.to_owned(),
            tier,
            range: None,
            description: Some("glacierfs retrieval".into()),
        };
        let mut tier = tiers.first();
        let mut attempt = 0u32;
        let job_id = loop {
            match self.client.initiate_job(vault_name, &request(tier)).await {
                Ok(id) => break id,
                Err(e) if e.kind == ErrorKind::InsufficientCapacity => {
                    tier = tiers.on_shortage(tier, e, &n.name)?;
                }
                Err(e) if e.is_transient() && attempt < INITIATE_RETRIES => {
                    // The job may exist though its reply was lost: look before asking again.
                    attempt += 1;
                    tokio::time::sleep(Duration::from_millis(200 << attempt)).await;
                    let listed = self
                        .client
                        .list_jobs(vault_name, JobFilter::default())
                        .await?;
                    if let Some(j) = listed.into_iter().find(|j| retrieves(j, archive_id)) {
                        log::info!("{}: the job asked for exists after all ({e})", n.name);
                        break j.job_id;
                    }
                }
                Err(e) => return Err(e.into()),
            }
        };
        match self.client.describe_job(vault_name, &job_id).await {
            Ok(j) => Ok(j),
            Err(_) => Ok(assumed_job(job_id, n, archive_id, tier)),
        }
    }

    async fn record_job(&self, n: &Node, j: &JobDesc, auto: bool) -> Result<(), StartError> {
        // From here the reservation is known by its job: a budget check that finds the row
        // counts the row alone.
        if let Some(a) = n.archive_id.as_deref() {
            if let Some(r) = lock(&self.state).reserving.get_mut(a) {
                r.job_id = Some(j.job_id.clone());
            }
        }
        let (j, ino, vault, size) = (j.clone(), n.ino, n.vault, n.size);
        let now = self.now_s();
        let job_id = j.job_id.clone();
        self.catalog
            .write_async(move |tx| {
                retrievals::record(
                    tx,
                    &NewRetrieval {
                        job_id: &j.job_id,
                        vault,
                        archive_id: j.archive_id.as_deref(),
                        tier: j.tier.as_deref(),
                        state: j.status.into(),
                        message: j.status_message.as_deref(),
                        created_s: timefmt::iso_secs(j.creation_date.as_deref()).unwrap_or(now),
                        completed_s: timefmt::iso_secs(j.completion_date.as_deref()),
                        size,
                        auto,
                        ino,
                    },
                )
            })
            .await
            .map_err(|source| StartError::Record { job_id, source })
    }

    fn vault_name(&self, vault: u64) -> Result<String, StartError> {
        self.catalog
            .read(move |c| vaults::by_ino(c, vault))?
            .map(|v| v.name)
            .ok_or(StartError::NoVault { vault })
    }
}

/// Whether `j` is a retrieval of `archive_id` that has not failed.
fn retrieves(j: &JobDesc, archive_id: &str) -> bool {
    j.action == JobAction::ArchiveRetrieval
        && j.archive_id.as_deref() == Some(archive_id)
        && j.status != JobStatus::Failed
}

/// A job just initiated whose description could not be read: what is known of it.
fn assumed_job(job_id: String, n: &Node, archive_id: &str, tier: Tier) -> JobDesc {
    JobDesc {
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
    }
}
