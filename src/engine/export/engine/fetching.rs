//! Downloading finished outputs, soonest to expire first and a few at a time, and reading how
//! each download ended: placed, expired (a new job), corrupt (one new job, then a failure),
//! transient (a retry after a backoff), or failed.

use std::time::Instant;

use tokio::task::{Id, JoinError};

use super::{Engine, Phase, Replaces, TRANSIENT_ATTEMPTS};
use crate::engine::export::archive::{fetch, FetchError};
use crate::engine::export::pace;
use crate::engine::transfer::download::DownloadError;

/// Jobs of one archive whose output may be corrupt before it fails.
const CORRUPT_JOBS: u32 = 2;

impl Engine<'_> {
    /// Starts downloads of finished outputs, soonest to expire first.
    pub(super) fn launch(&mut self) {
        let now = Instant::now();
        let (due, later): (Vec<_>, Vec<_>) = self.delayed.drain(..).partition(|(t, _)| *t <= now);
        self.delayed = later;
        for (_, i) in due {
            if let Phase::Ready(job) = &self.entries[i].phase {
                self.ready.insert(pace::download_order(job.completed, i));
            }
        }
        while self.downloads.len() < self.set.parallel_files {
            // `ready` is kept in pace::download_order: soonest to expire first.
            let Some((_, i)) = self.ready.pop_first() else {
                break;
            };
            let job = match std::mem::replace(&mut self.entries[i].phase, Phase::Pending) {
                Phase::Ready(job) => job,
                other => {
                    self.entries[i].phase = other;
                    continue;
                }
            };
            let e = &mut self.entries[i];
            let task = fetch(
                self.client.clone(),
                self.set.vault.clone(),
                job.id.clone(),
                e.work.clone(),
                e.progress.clone(),
            );
            e.phase = Phase::Downloading(job);
            let handle = self.downloads.spawn(task);
            self.tasks.insert(handle.id(), i);
        }
    }

    /// How one download ended.
    pub(super) fn fetched(&mut self, ended: Result<(Id, Result<u64, FetchError>), JoinError>) {
        let (id, result) = match ended {
            Ok((id, r)) => (id, r),
            Err(e) => (e.id(), Err(FetchError::Task(e))),
        };
        let Some(i) = self.tasks.remove(&id) else {
            return;
        };
        let Phase::Downloading(job) = std::mem::replace(&mut self.entries[i].phase, Phase::Pending)
        else {
            return;
        };
        let rel = self.entries[i].work.first_rel().display().to_string();
        match result.map_err(FetchError::into_download) {
            Ok(fetched) => self.done(i, fetched),
            Err(FetchError::Download(DownloadError::Expired)) => {
                self.report.notice(&format!(
                    "the output of job {} for {rel} expired before it was read; requesting it \
                     again",
                    job.id
                ));
                self.need_job(i, Replaces::Expired);
            }
            Err(FetchError::Download(DownloadError::Corrupt { what })) => {
                self.corrupt(i, &rel, &what);
            }
            Err(err) if err.is_transient() && self.entries[i].transient < TRANSIENT_ATTEMPTS => {
                let e = &mut self.entries[i];
                let at = Instant::now() + pace::retry_delay(e.transient);
                e.transient += 1;
                log::warn!("transferring {rel}: {err}; will retry");
                e.phase = Phase::Ready(job);
                self.delayed.push((at, i));
            }
            Err(err) => self.fail(i, &err.to_string(), false),
        }
    }

    /// Data that does not match the archive's tree hash: one new job, then the file fails and
    /// its temporary data goes, since it cannot be trusted.
    fn corrupt(&mut self, i: usize, rel: &str, what: &str) {
        self.entries[i].corrupt_jobs += 1;
        if self.entries[i].corrupt_jobs < CORRUPT_JOBS {
            self.report.notice(&format!(
                "{rel}: the retrieved data does not match the archive's tree hash \
                 ({what}); requesting it again with a new job"
            ));
            self.need_job(i, Replaces::Corrupt);
        } else {
            self.fail(i, &format!("retrieved data is corrupt: {what}"), true);
        }
    }
}
