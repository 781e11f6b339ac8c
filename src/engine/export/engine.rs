//! The retrieval engine of an export: starts (or adopts) one whole-archive retrieval job per
//! archive, paced by the bytes in flight; watches the jobs; downloads finished outputs straight
//! into DEST, soonest-to-expire first; and places each file once it is verified.
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

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use tokio::sync::{watch, Semaphore};
use tokio::task::{JoinError, JoinSet};

use super::archive::{
    better, fetch, initiate, system_time, unix_secs, whole_archive, FetchError, Work,
};
use super::pace::{self, Budget};
use super::report::{Live, Reporter, Tally};
use crate::engine::transfer::download::DownloadError;
use crate::glacier::{
    ErrorKind, GlacierClient, GlacierError, JobAction, JobDesc, JobFilter, JobStatus, Tier,
};

/// Files downloaded at once.
const PARALLEL_FILES: usize = 4;
/// InitiateJob calls in flight at once: a large vault needs many, each a round trip.
const PARALLEL_INITIATES: usize = 8;
/// Up to this many running jobs are polled one DescribeJob each; more take one ListJobs.
const DESCRIBE_AT_MOST: usize = 8;
/// Transient failures of one archive's job start or download before it fails.
const TRANSIENT_ATTEMPTS: u32 = 5;
/// Jobs of one archive whose output may be corrupt before it fails.
const CORRUPT_JOBS: u32 = 2;
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
    pub tier: Tier,
    pub max_in_flight: u64,
    pub poll_every: Duration,
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
        let entries: Vec<Entry> = works
            .into_iter()
            .map(|w| Entry {
                progress: Arc::new(AtomicU64::new(w.journal.resume().verified)),
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

    /// Takes over jobs already running or finished for these archives (a previous run's, the
    /// mount's, anyone's): they cost nothing more, and starting another would.
    async fn adopt(&mut self) -> Result<(), EngineError> {
        let jobs = self
            .client
            .list_jobs(&self.set.vault, JobFilter::default())
            .await
            .map_err(EngineError::ListJobs)?;
        let listed: HashSet<&str> = jobs.iter().map(|j| j.job_id.as_str()).collect();
        let sizes: HashMap<String, u64> = self
            .entries
            .iter()
            .map(|e| (e.work.archive_id.clone(), e.work.size))
            .collect();
        let mut best: HashMap<&str, &JobDesc> = HashMap::new();
        for j in &jobs {
            let Some((archive, &size)) =
                j.archive_id.as_deref().and_then(|a| sizes.get_key_value(a))
            else {
                continue;
            };
            let usable = j.action == JobAction::ArchiveRetrieval
                && j.status != JobStatus::Failed
                && whole_archive(j, size);
            if usable && better(j, best.get(archive.as_str()).copied()) {
                best.insert(archive, j);
            }
        }
        for i in 0..self.entries.len() {
            let work = self.entries[i].work.clone();
            let Some(job) = best.get(work.archive_id.as_str()).copied() else {
                let expired = work
                    .recorded_job
                    .as_deref()
                    .is_some_and(|id| !listed.contains(id));
                if expired {
                    self.entries[i].replaces = Some(Replaces::Expired);
                }
                continue;
            };
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
            if let Err(e) = work.journal.set_job(&jr.id) {
                log::warn!("recording job {}: {e}", jr.id);
            }
            self.report.job(
                &work.archive_id,
                &jr.id,
                &jr.tier,
                true,
                &work.targets[0].rel,
            );
            match job.status {
                JobStatus::Succeeded => self.mark_ready(i, jr),
                _ => self.wait_for_job(i, jr),
            }
        }
        Ok(())
    }

    /// Starts jobs: first those whose bytes are already counted, then new ones in listing
    /// order while the budget admits them.
    async fn start_jobs(&mut self) {
        let now = Instant::now();
        let mut batch: Vec<usize> = self
            .again
            .iter()
            .copied()
            .filter(|&i| self.entries[i].not_before.map_or(true, |t| t <= now))
            .collect();
        while let Some(&i) = self.pending.first() {
            let size = self.entries[i].work.size;
            if !self.budget.admits(size) {
                break;
            }
            self.pending.remove(&i);
            self.budget.take(size);
            self.entries[i].charged = true;
            self.again.insert(i);
            batch.push(i);
        }
        if batch.is_empty() {
            return;
        }
        let limit = Arc::new(Semaphore::new(PARALLEL_INITIATES));
        let mut calls = JoinSet::new();
        for i in batch {
            let (client, vault, tier) =
                (self.client.clone(), self.set.vault.clone(), self.set.tier);
            let archive_id = self.entries[i].work.archive_id.clone();
            let limit = limit.clone();
            calls.spawn(async move {
                let _permit = limit.acquire_owned().await;
                (
                    i,
                    initiate(client.as_ref(), &vault, &archive_id, tier).await,
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

    fn started(&mut self, i: usize, result: Result<(String, Tier), GlacierError>) {
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
                if let Err(err) = work.journal.set_job(&id) {
                    log::warn!("recording job {id}: {err}");
                }
                self.report.job(
                    &work.archive_id,
                    &id,
                    tier.as_str(),
                    false,
                    &work.targets[0].rel,
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

    /// Asks Glacier how the running jobs are doing.
    async fn poll(&mut self) {
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
        let rel = self.entries[i].work.targets[0].rel.display().to_string();
        self.report.notice(&format!(
            "job {id} for {rel} is gone (its output expired before it was read); requesting it \
             again"
        ));
        self.need_job(i, Replaces::Expired);
    }

    fn need_job(&mut self, i: usize, why: Replaces) {
        let e = &mut self.entries[i];
        e.phase = Phase::Pending;
        e.replaces = Some(why);
        e.not_before = None;
        self.again.insert(i);
    }

    fn wait_for_job(&mut self, i: usize, job: JobRef) {
        self.entries[i].phase = Phase::Waiting(job);
        self.waiting.insert(i);
    }

    fn mark_ready(&mut self, i: usize, job: JobRef) {
        self.ready.insert(pace::download_order(job.completed, i));
        self.entries[i].phase = Phase::Ready(job);
    }

    /// Starts downloads of finished outputs, soonest to expire first.
    fn launch(&mut self) {
        let now = Instant::now();
        let (due, later): (Vec<_>, Vec<_>) = self.delayed.drain(..).partition(|(t, _)| *t <= now);
        self.delayed = later;
        for (_, i) in due {
            if let Phase::Ready(job) = &self.entries[i].phase {
                self.ready.insert(pace::download_order(job.completed, i));
            }
        }
        while self.downloads.len() < PARALLEL_FILES {
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

    fn fetched(&mut self, ended: Result<(tokio::task::Id, Result<u64, FetchError>), JoinError>) {
        let (id, result) = match ended {
            Ok((id, r)) => (id, r),
            Err(e) => (e.id(), Err(FetchError::Task(e.to_string()))),
        };
        let Some(i) = self.tasks.remove(&id) else {
            return;
        };
        let Phase::Downloading(job) = std::mem::replace(&mut self.entries[i].phase, Phase::Pending)
        else {
            return;
        };
        let rel = self.entries[i].work.targets[0].rel.display().to_string();
        match result {
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
            Err(FetchError::Download(err))
                if err.is_transient() && self.entries[i].transient < TRANSIENT_ATTEMPTS =>
            {
                let e = &mut self.entries[i];
                let at = Instant::now() + pace::retry_delay(e.transient);
                e.transient += 1;
                log::warn!("downloading {rel}: {err}; will retry");
                e.phase = Phase::Ready(job);
                self.delayed.push((at, i));
            }
            Err(err) => self.fail(i, &err.to_string(), false),
        }
    }

    fn done(&mut self, i: usize, fetched: u64) {
        self.open -= 1;
        let e = &mut self.entries[i];
        e.phase = Phase::Done;
        if std::mem::take(&mut e.charged) {
            self.budget.release(e.work.size);
        }
        let work = e.work.clone();
        let t = &mut *self.tally;
        t.downloaded += 1;
        t.bytes_downloaded += fetched;
        for (k, target) in work.targets.iter().enumerate() {
            t.files_done += 1;
            t.bytes_done += work.size;
            let status = if k == 0 { "exported" } else { "copied" };
            if k > 0 {
                t.copied += 1;
            }
            self.report.file(&target.rel, work.size, status, None);
        }
    }

    /// Gives up on an archive. `discard` drops its temporary data (it cannot be trusted);
    /// otherwise it stays for the next run to resume.
    fn fail(&mut self, i: usize, why: &str, discard: bool) {
        self.open -= 1;
        let e = &mut self.entries[i];
        e.phase = Phase::Failed;
        if std::mem::take(&mut e.charged) {
            self.budget.release(e.work.size);
        }
        let work = e.work.clone();
        if discard {
            let _ = std::fs::remove_file(&work.targets[0].temp);
            work.journal.remove();
        }
        for target in &work.targets {
            let path = target.rel.display().to_string();
            self.tally.failures.push((path, why.to_owned()));
            self.report
                .file(&target.rel, work.size, "failed", Some(why));
        }
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
