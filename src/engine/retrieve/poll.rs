//! The poller: follows running jobs (DescribeJob while few run, one listing of completed jobs
//! per vault when many do), forgets jobs Glacier no longer has, and starts the downloads of
//! finished ones.

use std::collections::HashSet;
use std::sync::Arc;

use super::Retriever;
use crate::catalog::jobs::JobState;
use crate::catalog::retrievals::{self, PendingJob};
use crate::catalog::CatalogError;
use crate::codec::timefmt;
use crate::glacier::{ErrorKind, JobDesc, JobFilter};

/// Jobs polled one by one up to this many; beyond it, one ListJobs per vault.
const DESCRIBE_LIMIT: usize = 10;
/// A job older than any job runs (12 h) plus its output's life (24 h) can only be gone; a
/// listing of completed jobs would never show it, so it is asked about on its own.
const STALE_S: i64 = 36 * 3600;

impl Retriever {
    /// One round: refresh running jobs, and start the downloads of finished ones.
    pub(super) async fn poll_once(self: &Arc<Self>) -> Result<(), CatalogError> {
        let jobs = self.catalog.read_async(retrievals::pending).await?;
        let running: Vec<&PendingJob> = jobs
            .iter()
            .filter(|j| j.state == JobState::InProgress)
            .collect();
        let stale = self.now_s() - STALE_S;
        let old: Vec<&PendingJob> = running
            .iter()
            .copied()
            .filter(|j| j.created_s < stale)
            .collect();
        if running.len() <= DESCRIBE_LIMIT {
            self.describe_each(&running).await?;
        } else if !old.is_empty() {
            self.describe_each(&old).await?;
        } else {
            self.list_completed(&running).await?;
        }
        let ready = self.catalog.read_async(retrievals::pending).await?;
        for j in ready.into_iter().filter(|j| j.state == JobState::Succeeded) {
            self.start_download(j);
        }
        Ok(())
    }

    /// DescribeJob for each of `jobs`.
    async fn describe_each(&self, jobs: &[&PendingJob]) -> Result<(), CatalogError> {
        for j in jobs {
            match self.client.describe_job(&j.vault_name, &j.job_id).await {
                Ok(d) => self.update_status(j, &d).await?,
                Err(e) if e.kind == ErrorKind::NotFound => self.forget_job(&j.job_id).await?,
                Err(e) => log::debug!("describing job {} in vault {}: {e}", j.job_id, j.vault_name),
            }
        }
        Ok(())
    }

    /// Many jobs: one listing per vault, of completed jobs only, paged to the end.
    async fn list_completed(&self, running: &[&PendingJob]) -> Result<(), CatalogError> {
        let vault_names: HashSet<&str> = running.iter().map(|j| j.vault_name.as_str()).collect();
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
        Ok(())
    }

    async fn update_status(&self, j: &PendingJob, d: &JobDesc) -> Result<(), CatalogError> {
        let state = JobState::from(d.status);
        if state == j.state {
            return Ok(());
        }
        log::info!("retrieval job {} is {}", j.job_id, state.as_str());
        let (id, msg, done) = (
            j.job_id.clone(),
            d.status_message.clone(),
            timefmt::iso_secs(d.completion_date.as_deref()),
        );
        self.catalog
            .write_async(move |tx| retrievals::set_state(tx, &id, state, msg.as_deref(), done))
            .await
    }

    pub(super) async fn forget_job(&self, job_id: &str) -> Result<(), CatalogError> {
        log::info!("retrieval job {job_id} is gone (expired); a later open starts a new one");
        let id = job_id.to_owned();
        self.catalog
            .write_async(move |tx| retrievals::forget(tx, &id))
            .await
    }
}
