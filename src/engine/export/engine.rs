//! The retrieval engine of an export: starts (or adopts) one whole-archive retrieval job per
//! archive, paced by the bytes in flight; watches the jobs; downloads finished outputs straight
//! into DEST, soonest-to-expire first; and places each file once it is verified.
//!
//! This file owns the engine's state and its loop; the jobs it does live beside it:
//! [`start`] adopts and starts jobs under the byte budget, [`poll`] asks Glacier how running
//! jobs are doing, [`fetching`] downloads finished outputs in expiry order and reads how each
//! download ended, and [`phase`] moves an archive between phases and settles it (placed or
//! failed) with its budget and tally.
//!
//! Each archive moves through `Pending → Waiting (job running at Glacier) → Ready (output
//! available) → Downloading → Done`, or ends `Failed`. The recovery paths:
//! - an output that expired before it was read (404) gets a new job, counted as a re-request;
//!   its verified prefix is kept, since any whole-archive job returns the same bytes;
//! - data that does not match its tree hash, even after the download engine fetched it again,
//!   gets one new job; if that is corrupt too, the file fails and its temporary file is removed;
//! - transient failures are retried with backoff, a few times, then the file fails (its
//!   verified prefix is kept for the next run).
//!
//! Jobs are polled with DescribeJob while few are running and with one ListJobs (completed jobs
//! only) per poll when many are, as the daemon does. Stopping (Ctrl-C) drops the
//! downloads where they are: their data stays under temporary names, their records in the
//! state directory, and a new run resumes them.

mod fetching;
mod phase;
mod poll;
mod start;

use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use tokio::sync::watch;
use tokio::task::JoinSet;

use super::archive::{FetchError, Work};
use super::pace::{self, Budget};
use super::report::{Live, Reporter, Tally};
use crate::config::Tiers;
use crate::glacier::{GlacierClient, GlacierError};

/// Transient failures of one archive's job start or download before it fails.
const TRANSIENT_ATTEMPTS: u32 = 5;
/// The longest the loop sleeps, so progress keeps moving on the screen.
const TICK: Duration = Duration::from_secs(1);

#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error("listing the vault's jobs: {0}")]
    ListJobs(GlacierError),
}

/// What the engine is told.
#[derive(Debug, Clone)]
pub struct Settings {
    pub vault: String,
    /// The tier of new jobs, with its fallback when Expedited capacity is short.
    pub tier: Tiers,
    pub max_in_flight: u64,
    pub poll_every: Duration,
    /// Archives transferred at once.
    pub parallel_files: usize,
    /// The `BytesPerHour` data-retrieval policy's rate and hour, when the account has one: jobs
    /// start only while the trailing hour has room for them.
    pub policy_rate: Option<(u64, Duration)>,
}

#[derive(Debug, Clone)]
struct JobRef {
    id: String,
    tier: String,
    created: SystemTime,
    /// Unix seconds, once Glacier says the job is done.
    completed: Option<i64>,
}

#[derive(Debug)]
enum Phase {
    Pending,
    Waiting(JobRef),
    Ready(JobRef),
    Downloading(JobRef),
    Done,
    Failed,
}

/// Why an archive needs another job.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Replaces {
    Expired,
    Corrupt,
}

struct Entry {
    work: Arc<Work>,
    phase: Phase,
    /// Counted in the budget (a job is running, or one is needed again for bytes counted).
    charged: bool,
    /// No retry before this.
    not_before: Option<Instant>,
    replaces: Option<Replaces>,
    corrupt_jobs: u32,
    transient: u32,
    progress: Arc<AtomicU64>,
}

pub struct Engine<'a> {
    client: Arc<dyn GlacierClient>,
    set: Settings,
    entries: Vec<Entry>,
    budget: Budget,
    /// Archives waiting for a first job, in listing order.
    pending: BTreeSet<usize>,
    /// Archives whose bytes are counted and that need a job (again).
    again: BTreeSet<usize>,
    /// Bytes started in the trailing hour, under a `BytesPerHour` policy.
    window: Option<pace::HourWindow>,
    waiting: BTreeSet<usize>,
    /// Finished outputs by completion date, then listing order.
    ready: BTreeSet<(i64, usize)>,
    /// Downloads to retry after a backoff.
    delayed: Vec<(Instant, usize)>,
    /// Each download ends with the bytes it fetched (beyond a resumed prefix).
    downloads: JoinSet<Result<u64, FetchError>>,
    tasks: HashMap<tokio::task::Id, usize>,
    /// Archives neither placed nor failed yet.
    open: usize,
    tally: &'a mut Tally,
    report: &'a mut Reporter,
    cancel: watch::Receiver<bool>,
}

/// Resolves once `cancel` turns true (never, if its sender is gone).
async fn cancelled(mut cancel: watch::Receiver<bool>) {
    if cancel.wait_for(|c| *c).await.is_err() {
        std::future::pending::<()>().await;
    }
}

impl<'a> Engine<'a> {
    pub fn new(
        client: Arc<dyn GlacierClient>,
        set: Settings,
        works: Vec<Work>,
        tally: &'a mut Tally,
        report: &'a mut Reporter,
        cancel: watch::Receiver<bool>,
    ) -> Engine<'a> {
        let policy_window = set
            .policy_rate
            .map(|(rate, hour)| pace::HourWindow::new(rate, hour));
        let entries: Vec<Entry> = works
            .into_iter()
            .map(|w| Entry {
                progress: Arc::new(AtomicU64::new(w.resumed())),
                work: Arc::new(w),
                phase: Phase::Pending,
                charged: false,
                not_before: None,
                replaces: None,
                corrupt_jobs: 0,
                transient: 0,
            })
            .collect();
        let open = entries.len();
        Engine {
            client,
            budget: Budget::new(set.max_in_flight),
            set,
            pending: (0..entries.len()).collect(),
            entries,
            again: BTreeSet::new(),
            window: policy_window,
            waiting: BTreeSet::new(),
            ready: BTreeSet::new(),
            delayed: Vec::new(),
            downloads: JoinSet::new(),
            tasks: HashMap::new(),
            open,
            tally,
            report,
            cancel,
        }
    }

    /// Runs until every archive is placed or has failed; true if it was stopped first.
    pub async fn run(mut self) -> Result<bool, EngineError> {
        if self.entries.is_empty() {
            return Ok(false);
        }
        let cancel = self.cancel.clone();
        tokio::select! {
            biased;
            _ = cancelled(cancel.clone()) => return Ok(true),
            adopted = self.adopt() => adopted?,
        }
        let mut next_poll = Instant::now() + self.set.poll_every;
        let interrupted = loop {
            tokio::select! {
                biased;
                _ = cancelled(cancel.clone()) => break true,
                _ = self.start_jobs() => {}
            }
            self.launch();
            if self.settled() {
                break false;
            }
            let wake = self.wake_at(next_poll);
            tokio::select! {
                biased;
                _ = cancelled(cancel.clone()) => break true,
                Some(ended) = self.downloads.join_next_with_id(), if !self.downloads.is_empty() => {
                    self.fetched(ended);
                }
                _ = tokio::time::sleep_until(wake.into()) => {}
            }
            if !self.waiting.is_empty() && Instant::now() >= next_poll {
                tokio::select! {
                    biased;
                    _ = cancelled(cancel.clone()) => break true,
                    _ = self.poll() => {}
                }
                next_poll = Instant::now() + self.set.poll_every;
            }
            if self.report.due() {
                let live = self.live();
                self.report.progress(self.tally, &live);
            }
        };
        if interrupted {
            // Dropping a download leaves its data under the temporary name, where nothing
            // trusts it beyond the recorded prefix.
            self.downloads.shutdown().await;
        }
        let live = self.live();
        self.report.progress(self.tally, &live);
        Ok(interrupted)
    }

    fn settled(&self) -> bool {
        self.open == 0 && self.downloads.is_empty()
    }

    /// When the loop must look again: the next poll, a backoff ending, or the progress tick.
    fn wake_at(&self, next_poll: Instant) -> Instant {
        let mut at = Instant::now() + TICK;
        if !self.waiting.is_empty() {
            at = at.min(next_poll);
        }
        let backoffs = self.delayed.iter().map(|(t, _)| *t).chain(
            self.again
                .iter()
                .filter_map(|&i| self.entries[i].not_before),
        );
        backoffs.fold(at, Instant::min)
    }

    fn live(&self) -> Live {
        let now = SystemTime::now();
        let mut tiers: Vec<(String, u64, Duration)> = Vec::new();
        for &i in &self.waiting {
            let Phase::Waiting(job) = &self.entries[i].phase else {
                continue;
            };
            let left = pace::likely_left(&job.tier, job.created, now);
            match tiers.iter_mut().find(|(t, _, _)| *t == job.tier) {
                Some((_, n, l)) => {
                    *n += 1;
                    *l = (*l).max(left);
                }
                None => tiers.push((job.tier.clone(), 1, left)),
            }
        }
        let partial = self
            .tasks
            .values()
            .map(|&i| self.entries[i].progress.load(Ordering::Relaxed))
            .sum();
        Live {
            bytes_partial: partial,
            downloading: self.downloads.len() as u64,
            ready: (self.ready.len() + self.delayed.len()) as u64,
            bytes_in_flight: self.budget.used(),
            waiting: tiers,
        }
    }
}
