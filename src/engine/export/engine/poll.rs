//! Watching running jobs: one DescribeJob each while few are running, one ListJobs of the
//! completed jobs when many are; a finished job's output becomes ready to download, a failed
//! job fails its files, and a job Glacier no longer knows is requested again.

use std::collections::HashMap;

use super::{Engine, Phase, Replaces};
use crate::engine::export::archive::unix_secs;
use crate::glacier::{ErrorKind, JobDesc, JobFilter, JobStatus};

/// Up to this many running jobs are polled one DescribeJob each; more take one ListJobs.
const DESCRIBE_AT_MOST: usize = 8;

impl Engine<'_> {
    /// Asks Glacier how the running jobs are doing.
    pub(super) async fn poll(&mut self) {
        let running: Vec<(usize, String)> = self
            .waiting
            .iter()
            .filter_map(|&i| match &self.entries[i].phase {
                Phase::Waiting(j) => Some((i, j.id.clone())),
                _ => None,
            })
            .collect();
        let vault = self.set.vault.clone();
        if running.len() <= DESCRIBE_AT_MOST {
            for (i, id) in running {
                match self.client.describe_job(&vault, &id).await {
                    Ok(d) => self.observe(i, &d),
                    Err(e) if e.kind == ErrorKind::NotFound => self.lost(i, &id),
                    Err(e) => log::warn!("checking job {id}: {e}"),
                }
            }
            return;
        }
        let filter = JobFilter {
            completed: Some(true),
            status: None,
        };
        match self.client.list_jobs(&vault, filter).await {
            Ok(done) => {
                let by_id: HashMap<&str, &JobDesc> =
                    done.iter().map(|d| (d.job_id.as_str(), d)).collect();
                for (i, id) in running {
                    if let Some(d) = by_id.get(id.as_str()) {
                        self.observe(i, d);
                    }
                }
            }
            Err(e) => log::warn!("listing finished jobs: {e}"),
        }
    }

    fn observe(&mut self, i: usize, d: &JobDesc) {
        let Phase::Waiting(job) = &self.entries[i].phase else {
            return;
        };
        let mut job = job.clone();
        match d.status {
            JobStatus::InProgress => {}
            JobStatus::Succeeded => {
                job.completed = d.completion_date.as_deref().and_then(unix_secs);
                self.waiting.remove(&i);
                self.mark_ready(i, job);
            }
            JobStatus::Failed => {
                self.waiting.remove(&i);
                let why = d.status_message.as_deref().unwrap_or("no reason given");
                self.fail(i, &format!("retrieval job {} failed: {why}", job.id), false);
            }
        }
    }

    /// A job Glacier no longer knows: its output expired unseen.
    fn lost(&mut self, i: usize, id: &str) {
        self.waiting.remove(&i);
        let rel = self.entries[i].work.first_rel().display().to_string();
        self.report.notice(&format!(
            "job {id} for {rel} is gone (its output expired before it was read); requesting it \
             again"
        ));
        self.need_job(i, Replaces::Expired);
    }
}
