//! What an open of a cold file, or an explicit request, gets: a job already known is reused
//! (its output fetched again if it was evicted since), a failure that asking again would not
//! fix is answered at once, and a new automatic job must fit the retrieval budget: bytes and
//! jobs per 24 h, both counted from the catalog's job rows, so they hold across mounts.

use std::sync::Arc;

use super::{Reservation, RetrieveError, Retriever};
use crate::catalog::jobs::{FailureCause, JobState};
use crate::catalog::retrievals::{self, Refusal, RetrievalJob};
use crate::catalog::Node;
use crate::config::Tiers;
use crate::locks::lock;

/// How long a permanent refusal to start a job (PolicyEnforced, access denied, a bad request)
/// answers opens with EIO before an open may ask Glacier again. Without it every open would
/// ask again and get EAGAIN, so a user would wait for a job that never started. An explicit
/// `retrieve` asks again at once.
pub(super) const REFUSAL_HOLD_S: i64 = 15 * 60;
/// The start of a refused job's message; its cause column says it was refused.
const REFUSED: &str = "Glacier refused the retrieval: ";
/// The budget's window: automatic retrievals may ask for `budget` bytes and start `job_budget`
/// jobs per this many seconds.
const BUDGET_WINDOW_S: i64 = 86_400;

impl Retriever {
    /// The error a data open of cold file `n` gets, after starting or reusing its retrieval.
    pub fn cold_open(self: &Arc<Self>, n: &Node) -> RetrieveError {
        let Some(archive_id) = n.archive_id.clone() else {
            return RetrieveError::NotYetAvailable(n.name.clone());
        };
        let vault = n.vault;
        let job = self
            .catalog
            .read(move |c| retrievals::for_archive(c, vault, &archive_id));
        match job {
            Ok(Some(j)) if self.holds_failure(&j) => {
                return RetrieveError::Failed(format!(
                    "{}: {}",
                    n.name,
                    j.message.unwrap_or_default()
                ));
            }
            Ok(Some(j)) if j.state != JobState::Failed => {
                self.reuse(&j, n.ino);
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
        // One decision at a time: the check and the reservation `start` makes are one step,
        // so a burst of opens on several FUSE threads cannot pass the budget together.
        let _gate = lock(&self.gate);
        let starting = n
            .archive_id
            .as_ref()
            .is_some_and(|a| lock(&self.state).starting.contains(a));
        if !starting {
            if let Err(e) = self.within_budget(n) {
                return e;
            }
            self.start(n.clone(), self.options.tier, true);
        }
        RetrieveError::NotYetAvailable(format!("{} is being retrieved", n.name))
    }

    /// An explicit request: starts or reuses a job for a cold file; no budget applies.
    pub fn request(
        self: &Arc<Self>,
        n: &Node,
        tiers: Option<Tiers>,
    ) -> Result<bool, RetrieveError> {
        let Some(archive_id) = n.archive_id.clone().filter(|_| !n.local && n.size > 0) else {
            return Ok(false);
        };
        let vault = n.vault;
        let job = self
            .catalog
            .read(move |c| retrievals::for_archive(c, vault, &archive_id))?;
        if let Some(j) = job.filter(|j| j.state != JobState::Failed) {
            self.reuse(&j, n.ino);
            return Ok(true);
        }
        self.start(n.clone(), tiers.unwrap_or(self.options.tier), false);
        Ok(true)
    }

    /// Whether failed job `j` still answers opens: corrupt output always does (asking again
    /// would fetch the same bytes), a refusal for [`REFUSAL_HOLD_S`].
    fn holds_failure(&self, j: &RetrievalJob) -> bool {
        j.state == JobState::Failed
            && match j.cause {
                Some(FailureCause::Corrupt) => true,
                Some(FailureCause::Refused) => self.now_s() - j.created_s < REFUSAL_HOLD_S,
                None => false,
            }
    }

    /// Waits on a job that is running or done; data evicted since its job finished is fetched
    /// again from the same job's output (it stays for at least 24 h); if that has expired, the
    /// download says so and a new job follows at the next open.
    fn reuse(&self, j: &RetrievalJob, ino: u64) {
        if j.downloaded {
            let id = j.job_id.clone();
            if let Err(e) = self
                .catalog
                .write(move |tx| retrievals::fetch_again(tx, &id, ino))
            {
                log::warn!("asking for job {} again (inode {ino}): {e}", j.job_id);
            }
        }
        self.wake.notify_one();
    }

    /// Checks that an automatic retrieval of `n` fits what is left of the budget, its bytes
    /// and its jobs, counting those being started.
    fn within_budget(&self, n: &Node) -> Result<(), RetrieveError> {
        // The reservations first, then the catalog: a job whose row is committed in between
        // is found in the catalog and not counted again (see `RState::reserving`).
        let pending: Vec<Reservation> = lock(&self.state).reserving.values().cloned().collect();
        let since = self.now_s() - BUDGET_WINDOW_S;
        let (used, recorded) = self.catalog.read(move |c| {
            Ok((
                retrievals::auto_use_since(c, since)?,
                retrievals::auto_jobs_since(c, since)?,
            ))
        })?;
        let unrecorded: Vec<&Reservation> = pending
            .iter()
            .filter(|r| !r.job_id.as_ref().is_some_and(|id| recorded.contains(id)))
            .collect();
        let reserved: u64 = unrecorded.iter().map(|r| r.size).sum();
        let jobs = used.jobs.saturating_add(unrecorded.len() as u64);
        if jobs >= self.options.job_budget {
            log::warn!(
                "not retrieving {} (inode {}): opens started {jobs} retrieval jobs in the last \
                 24 h, as many as --retrieval-job-budget allows",
                n.name,
                n.ino
            );
            return Err(RetrieveError::BudgetSpent(format!(
                "{}: opens started {jobs} retrieval jobs in the last 24 h, the most allowed",
                n.name
            )));
        }
        let left = self
            .options
            .budget
            .saturating_sub(used.bytes)
            .saturating_sub(reserved);
        if left >= n.size {
            return Ok(());
        }
        log::warn!(
            "not retrieving {} (inode {}): {} bytes would pass the retrieval budget ({} left \
             for the next 24 h)",
            n.name,
            n.ino,
            n.size,
            left
        );
        Err(RetrieveError::BudgetSpent(format!(
            "{} needs {} bytes, {left} left",
            n.name, n.size
        )))
    }

    /// Keeps a permanent refusal as a Failed row, so `.jobs` shows Glacier's message (`why`)
    /// and opens get EIO for [`REFUSAL_HOLD_S`] instead of waiting on a job that does not exist.
    pub(super) async fn record_refusal(&self, n: &Node, archive_id: &str, why: &str) {
        let message = format!("{REFUSED}{why}");
        let (vault, ino, size, at_s) = (n.vault, n.ino, n.size, self.now_s());
        let archive_id = archive_id.to_owned();
        let r = self
            .catalog
            .write_async(move |tx| {
                retrievals::record_refusal(
                    tx,
                    &Refusal {
                        vault,
                        ino,
                        archive_id: &archive_id,
                        size,
                        message: &message,
                        at_s,
                    },
                )
            })
            .await;
        if let Err(e) = r {
            log::warn!(
                "recording a refused retrieval of {} (inode {}): {e}",
                n.name,
                n.ino
            );
        }
    }
}
