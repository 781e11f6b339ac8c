//! Starting jobs under the byte budget: adopting the jobs that already exist for the exported
//! archives (they cost nothing more), then starting new ones, first for archives whose bytes
//! are already counted and then in listing order while the budget admits them.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use tokio::sync::Semaphore;
use tokio::task::JoinSet;

use super::{Engine, EngineError, JobRef, Replaces, TRANSIENT_ATTEMPTS};
use crate::engine::export::archive::{
    better, initiate, system_time, unix_secs, whole_archive, InitiateError,
};
use crate::engine::export::pace;
use crate::glacier::{JobAction, JobDesc, JobFilter, JobStatus, Tier};

/// InitiateJob calls in flight at once: a large vault needs many, each a round trip.
const PARALLEL_INITIATES: usize = 8;

impl Engine<'_> {
    /// Takes over jobs already running or finished for these archives (a previous run's, the
    /// mount's, anyone's): they cost nothing more, and starting another would.
    pub(super) async fn adopt(&mut self) -> Result<(), EngineError> {
        let jobs = self
            .client
            .list_jobs(&self.set.vault, JobFilter::default())
            .await
            .map_err(EngineError::ListJobs)?;
        let listed: HashSet<&str> = jobs.iter().map(|j| j.job_id.as_str()).collect();
        let best = self.best_jobs(&jobs);
        for i in 0..self.entries.len() {
            let work = self.entries[i].work.clone();
            if let Some(job) = best.get(work.archive_id.as_str()).copied() {
                self.take_over(i, job);
                continue;
            }
            // The job a previous run recorded is no longer listed: its output expired unseen.
            let expired = work
                .recorded_job
                .as_deref()
                .is_some_and(|id| !listed.contains(id));
            if expired {
                self.entries[i].replaces = Some(Replaces::Expired);
            }
        }
        Ok(())
    }

    /// The job to adopt for each exported archive that has a usable one: a whole-archive
    /// retrieval that has not failed, the [`better`] one where there are several.
    fn best_jobs<'j>(&self, jobs: &'j [JobDesc]) -> HashMap<&'j str, &'j JobDesc> {
        let sizes: HashMap<&str, u64> = self
            .entries
            .iter()
            .map(|e| (e.work.archive_id.as_str(), e.work.size))
            .collect();
        let mut best: HashMap<&'j str, &'j JobDesc> = HashMap::new();
        for j in jobs {
            let Some(archive) = j.archive_id.as_deref() else {
                continue;
            };
            let Some(&size) = sizes.get(archive) else {
                continue;
            };
            let usable = j.action == JobAction::ArchiveRetrieval
                && j.status != JobStatus::Failed
                && whole_archive(j, size);
            if usable && better(j, best.get(archive).copied()) {
                best.insert(archive, j);
            }
        }
        best
    }

    /// Adopts `job` for archive `i`: its bytes count in the budget from now on.
    fn take_over(&mut self, i: usize, job: &JobDesc) {
        let work = self.entries[i].work.clone();
        let jr = JobRef {
            id: job.job_id.clone(),
            tier: job.tier.clone().unwrap_or_else(|| "Standard".into()),
            created: job
                .creation_date
                .as_deref()
                .and_then(system_time)
                .unwrap_or_else(SystemTime::now),
            completed: job.completion_date.as_deref().and_then(unix_secs),
        };
        self.pending.remove(&i);
        self.budget.take(work.size);
        self.entries[i].charged = true;
        self.tally.jobs_reused += 1;
        work.record_job(&jr.id);
        self.report
            .job(&work.archive_id, &jr.id, &jr.tier, true, work.first_rel());
        match job.status {
            JobStatus::Succeeded => self.mark_ready(i, jr),
            _ => self.wait_for_job(i, jr),
        }
    }

    /// Starts jobs: first those whose bytes are already counted, then new ones in listing
    /// order while the budget admits them.
    pub(super) async fn start_jobs(&mut self) {
        let batch = self.due_for_a_job();
        if batch.is_empty() {
            return;
        }
        let limit = Arc::new(Semaphore::new(PARALLEL_INITIATES));
        let mut calls = JoinSet::new();
        for i in batch {
            let (client, vault, tier) =
                (self.client.clone(), self.set.vault.clone(), self.set.tier);
            let work = &self.entries[i].work;
            let (archive_id, what) = (
                work.archive_id.clone(),
                work.first_rel().display().to_string(),
            );
            let limit = limit.clone();
            calls.spawn(async move {
                let _permit = limit.acquire_owned().await;
                (
                    i,
                    initiate(client.as_ref(), &vault, &archive_id, tier, &what).await,
                )
            });
        }
        while let Some(ended) = calls.join_next().await {
            match ended {
                Ok((i, result)) => self.started(i, result),
                Err(e) => log::warn!("starting a retrieval job: {e}"),
            }
        }
    }

    /// The archives to start a job for now: those needing one again whose backoff is over,
    /// then pending ones in listing order, each charged to the budget as it is admitted.
    fn due_for_a_job(&mut self) -> Vec<usize> {
        let now = Instant::now();
        let mut batch: Vec<usize> = Vec::new();
        let due: Vec<usize> = self
            .again
            .iter()
            .copied()
            .filter(|&i| self.entries[i].not_before.is_none_or(|t| t <= now))
            .collect();
        for i in due {
            if !self.policy_admits(self.entries[i].work.size, now) {
                return batch;
            }
            batch.push(i);
        }
        while let Some(&i) = self.pending.first() {
            let size = self.entries[i].work.size;
            if !self.budget.admits(size) || !self.policy_admits(size, now) {
                break;
            }
            self.pending.remove(&i);
            self.budget.take(size);
            self.entries[i].charged = true;
            self.again.insert(i);
            batch.push(i);
        }
        batch
    }

    /// Whether the data-retrieval policy's hour has room for `size` more bytes now; if so,
    /// they are counted in it (a refused start still counts at Glacier's side, so counting
    /// before the answer keeps to the rate either way).
    fn policy_admits(&mut self, size: u64, now: Instant) -> bool {
        let Some(w) = &mut self.window else {
            return true;
        };
        let admitted = w.admits(size, now);
        if admitted {
            w.take(size, now);
        }
        admitted
    }

    /// How an InitiateJob for archive `i` ended: a job to wait for, a retry after a backoff,
    /// or a failed file.
    fn started(&mut self, i: usize, result: Result<(String, Tier), InitiateError>) {
        let work = self.entries[i].work.clone();
        match result {
            Ok((id, tier)) => {
                self.again.remove(&i);
                let e = &mut self.entries[i];
                e.transient = 0;
                e.not_before = None;
                self.tally.jobs_started += 1;
                match e.replaces.take() {
                    Some(Replaces::Expired) => self.tally.rerequests += 1,
                    Some(Replaces::Corrupt) => self.tally.refetches += 1,
                    None => {}
                }
                work.record_job(&id);
                self.report.job(
                    &work.archive_id,
                    &id,
                    tier.as_str(),
                    false,
                    work.first_rel(),
                );
                let jr = JobRef {
                    id,
                    tier: tier.as_str().into(),
                    created: SystemTime::now(),
                    completed: None,
                };
                self.wait_for_job(i, jr);
            }
            Err(err) if err.is_transient() && self.entries[i].transient < TRANSIENT_ATTEMPTS => {
                let e = &mut self.entries[i];
                e.not_before = Some(Instant::now() + pace::retry_delay(e.transient));
                e.transient += 1;
                log::warn!("starting a job for {}: {err}; will retry", work.archive_id);
            }
            Err(err) => {
                self.again.remove(&i);
                self.fail(i, &format!("starting a retrieval job: {err}"), false);
            }
        }
    }
}
