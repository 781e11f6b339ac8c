//! Instrumentation of archive retrievals, for tests that bound what a client holds at Glacier:
//! every archive-retrieval job ever initiated (kept after the job expires, so served bytes can
//! still be traced to their archive), which bytes of its output have been served in full, and
//! the most bytes that were ever "in flight": retrieved by a job that is still available and not
//! failed, and not yet downloaded in full.
//!
//! Bytes count as downloaded once a response carrying them was written to the socket in full;
//! a body cut short counts for nothing. Glacier has no such call: tests read these numbers
//! directly, the client under test never sees them.

use super::state::{Outcome, State};

/// One archive-retrieval job, as initiated.
#[derive(Clone, Debug)]
pub(crate) struct Retrieval {
    pub job_id: String,
    pub vault: String,
    pub archive_id: String,
    /// Inclusive range of the archive retrieved.
    pub first: u64,
    pub last: u64,
    pub created_ms: i64,
    /// Inclusive ranges of the job's output served in full, sorted and merged.
    served: Vec<(u64, u64)>,
}

impl Retrieval {
    pub fn new(
        job_id: &str,
        vault: &str,
        archive_id: &str,
        (first, last): (u64, u64),
        created_ms: i64,
    ) -> Retrieval {
        Retrieval {
            job_id: job_id.to_string(),
            vault: vault.to_string(),
            archive_id: archive_id.to_string(),
            first,
            last,
            created_ms,
            served: Vec::new(),
        }
    }

    /// Bytes the job retrieves.
    pub fn len(&self) -> u64 {
        self.last - self.first + 1
    }

    /// Whether every byte of the output has been served at least once.
    pub fn downloaded(&self) -> bool {
        matches!(self.served.as_slice(), [(0, last)] if *last + 1 >= self.len())
    }

    /// Records `[first, last]` of the output as served, merging it into the covered ranges.
    fn cover(&mut self, first: u64, last: u64) {
        self.served.push((first, last));
        self.served.sort_unstable();
        let mut merged: Vec<(u64, u64)> = Vec::with_capacity(self.served.len());
        for &(s, e) in &self.served {
            match merged.last_mut() {
                Some((_, end)) if s <= end.saturating_add(1) => *end = (*end).max(e),
                _ => merged.push((s, e)),
            }
        }
        self.served = merged;
    }
}

/// Every retrieval initiated, and the high-water mark of bytes in flight.
#[derive(Default)]
pub(crate) struct Retrievals {
    pub log: Vec<Retrieval>,
    pub max_in_flight: u64,
}

impl State {
    /// Records a new archive-retrieval job and raises the high-water mark if it now holds more.
    pub(crate) fn note_retrieval(&mut self, r: Retrieval) {
        self.retrievals.log.push(r);
        let now = self.retrievals_in_flight();
        self.retrievals.max_in_flight = self.retrievals.max_in_flight.max(now);
    }

    /// Marks output bytes of `job_id` as served in full.
    pub(crate) fn note_served(&mut self, job_id: &str, first: u64, last: u64) {
        if let Some(r) = self.retrievals.log.iter_mut().find(|r| r.job_id == job_id) {
            r.cover(first, last);
        }
    }

    /// Bytes of retrievals whose job is still available, has not failed, and whose output has
    /// not been served in full yet.
    pub(crate) fn retrievals_in_flight(&self) -> u64 {
        self.retrievals
            .log
            .iter()
            .filter(|r| !r.downloaded())
            .filter(|r| {
                let job = self
                    .vaults
                    .get(&r.vault)
                    .and_then(|v| v.jobs.get(&r.job_id));
                job.is_some_and(|j| !matches!(j.outcome, Some(Outcome::Failed(_))))
            })
            .map(Retrieval::len)
            .sum()
    }
}
