//! One archive's retrieval, outside the engine's bookkeeping: what it becomes (its files in
//! DEST, or its objects in S3), the job request, and the transfer of the job's output: into
//! the temporary file beside the first file followed by the placing of every file, or
//! streamed into the first object followed by server-side copies for the others. Also the
//! rules for adopting a job someone else started: only a whole-archive retrieval that has not
//! failed, preferring one already done.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio::task::JoinError;

use super::dest::{self, DestError, Journal};
use super::s3::stream::{self as s3_stream, Ctx, Expect, Source, StreamError};
use super::s3::MAX_COPY;
use crate::codec::treehash::Digest;
use crate::config::{NoCapacity, Tiers};
use crate::engine::transfer::download::memory::JobRef as OutputRef;
use crate::engine::transfer::download::{self, DownloadError, DownloadSpec};
use crate::glacier::{
    parse_range, ErrorKind, GlacierClient, GlacierError, JobAction, JobDesc, JobFilter, JobRequest,
    JobStatus, Tier,
};

/// Each ranged GetJobOutput covers one tree-aligned chunk of at most this, so a restart
/// fetches at most this much again per chunk in flight.
const CHUNK: u64 = 4 << 20;
const PARALLEL_CHUNKS: usize = 4;
/// What an export's jobs say they are, in `.jobs` and ListJobs.
const JOB_DESCRIPTION: &str = "glacierfs export";

/// Why fetching an archive failed.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    #[error(transparent)]
    Download(#[from] DownloadError),
    #[error(transparent)]
    Place(#[from] DestError),
    #[error(transparent)]
    S3(#[from] StreamError),
    /// The task downloading or placing the archive panicked or was cancelled.
    #[error("the download task failed: {0}")]
    Task(JoinError),
}

impl FetchError {
    /// A stream's failure to read the job's output is the same as a download's, for the
    /// engine's recovery (a new job on expiry or corruption).
    pub fn into_download(self) -> FetchError {
        match self {
            FetchError::S3(StreamError::Glacier(e)) => FetchError::Download(e),
            other => other,
        }
    }

    /// Whether trying the same job again later may succeed.
    pub fn is_transient(&self) -> bool {
        match self {
            FetchError::Download(e) => e.is_transient(),
            FetchError::S3(e) => e.is_transient(),
            FetchError::Place(_) | FetchError::Task(_) => false,
        }
    }
}

/// One file an archive is exported to.
#[derive(Debug, Clone)]
pub struct Target {
    /// Relative to PATH (and to DEST).
    pub rel: PathBuf,
    pub final_path: PathBuf,
    pub temp: PathBuf,
    pub mtime: SystemTime,
    pub mode: u32,
}

/// An archive to retrieve, and what it becomes.
#[derive(Debug)]
pub struct Work {
    pub archive_id: String,
    pub size: u64,
    pub tree_hash: Digest,
    /// The job a previous run recorded for it.
    pub recorded_job: Option<String>,
    pub sink: Sink,
}

/// Where an archive goes. In both, the first target receives the data and the others are
/// copies of it.
#[derive(Debug)]
pub enum Sink {
    /// Files in a local directory, downloaded through a temporary file.
    Dir {
        targets: Vec<Target>,
        journal: Journal,
    },
    /// Objects in a bucket, streamed.
    S3 {
        targets: Vec<s3_stream::Target>,
        ctx: Arc<Ctx>,
    },
}

impl Work {
    /// The files the archive becomes, relative to PATH, first the one that gets the data.
    pub fn rels(&self) -> Vec<&Path> {
        match &self.sink {
            Sink::Dir { targets, .. } => targets.iter().map(|t| t.rel.as_path()).collect(),
            Sink::S3 { targets, .. } => targets.iter().map(|t| t.rel.as_path()).collect(),
        }
    }

    pub fn first_rel(&self) -> &Path {
        let first = match &self.sink {
            Sink::Dir { targets, .. } => targets.first().map(|t| t.rel.as_path()),
            Sink::S3 { targets, .. } => targets.first().map(|t| t.rel.as_path()),
        };
        first.unwrap_or(Path::new(""))
    }

    /// Bytes a previous run verified already, where they are counted before the transfer.
    pub fn resumed(&self) -> u64 {
        match &self.sink {
            Sink::Dir { journal, .. } => journal.resume().verified,
            Sink::S3 { .. } => 0,
        }
    }

    /// Records the job the archive is being retrieved with, for the next run.
    pub fn record_job(&self, job_id: &str) {
        let recorded = match &self.sink {
            Sink::Dir { journal, .. } => journal.set_job(job_id).map_err(|e| e.to_string()),
            Sink::S3 { ctx, .. } => ctx
                .journal
                .set_job(&self.archive_id, job_id)
                .map_err(|e| e.to_string()),
        };
        if let Err(e) = recorded {
            log::warn!("recording job {job_id}: {e}");
        }
    }

    /// Drops what a failed transfer left that cannot be trusted. (A stream into S3 aborts
    /// its own upload when its data does not verify.)
    pub fn discard(&self) {
        if let Sink::Dir { targets, journal } = &self.sink {
            let _ = std::fs::remove_file(&targets[0].temp);
            journal.remove();
        }
    }
}

/// Places a verified download: the first target is renamed into place, the others are
/// verified copies of it. The record goes last, so a crash in between is settled by the next
/// run finding the first file in place.
pub fn place_all(targets: &[Target], journal: &Journal, work: &Work) -> Result<(), DestError> {
    let first = &targets[0];
    dest::place(&first.temp, &first.final_path, first.mtime, first.mode)?;
    for t in &targets[1..] {
        dest::copy_verified(&first.final_path, &t.temp, work.size, Some(&work.tree_hash))?;
        dest::place(&t.temp, &t.final_path, t.mtime, t.mode)?;
    }
    journal.remove();
    Ok(())
}

/// Whether a listed job retrieves the whole archive (the only kind an export can use).
pub fn whole_archive(j: &JobDesc, size: u64) -> bool {
    match j.retrieval_byte_range.as_deref() {
        None => true,
        Some(r) => parse_range(r) == Some((0, size.saturating_sub(1))),
    }
}

/// Whether `c` is a better job to adopt for an archive than `best`: a finished one (the
/// latest, which has the most time left) over a running one (the oldest, which should finish
/// first). Glacier's dates share one format, so they compare as text.
pub fn better(c: &JobDesc, best: Option<&JobDesc>) -> bool {
    let Some(best) = best else {
        return true;
    };
    let done = |j: &JobDesc| j.status == JobStatus::Succeeded;
    match (done(c), done(best)) {
        (true, false) => true,
        (false, true) => false,
        (true, true) => c.completion_date > best.completion_date,
        (false, false) => c.creation_date < best.creation_date,
    }
}

/// Why InitiateJob for an archive failed.
#[derive(Debug, thiserror::Error)]
pub enum InitiateError {
    #[error(transparent)]
    Glacier(#[from] GlacierError),
    /// Expedited capacity was short and `--tier` names no fallback.
    #[error(transparent)]
    NoCapacity(#[from] NoCapacity),
}

impl InitiateError {
    /// Whether asking again later may succeed.
    pub fn is_transient(&self) -> bool {
        matches!(self, InitiateError::Glacier(e) if e.is_transient())
    }
}

/// InitiateJob for a whole archive (`what` names it in the log). Expedited capacity that is
/// not available falls back to the next tier only when `tiers` names one, as `--tier
/// expedited,standard` does.
pub async fn initiate(
    client: &dyn GlacierClient,
    vault: &str,
    archive_id: &str,
    tiers: Tiers,
    what: &str,
) -> Result<(String, Tier), InitiateError> {
    let request = |tier| JobRequest::Archive {
        archive_id: archive_id.to_owned(),
        tier,
        range: None,
        description: Some(JOB_DESCRIPTION.into()),
    };
    let mut tier = tiers.first();
    let result = loop {
        match client.initiate_job(vault, &request(tier)).await {
            Err(e) if e.kind == ErrorKind::InsufficientCapacity => {
                tier = tiers.on_shortage(tier, e, what)?;
            }
            r => break r.map(|id| (id, tier)),
        }
    };
    match result {
        // A failure after the service may have acted (a 5xx, a reset): the job may exist, and
        // asking again would pay for a second one. Look first.
        Err(e) if e.is_transient() && !e.is_refusal() => {
            let listed = client.list_jobs(vault, JobFilter::default()).await?;
            let found = listed.into_iter().find(|j| {
                j.action == JobAction::ArchiveRetrieval
                    && j.archive_id.as_deref() == Some(archive_id)
                    && j.status != JobStatus::Failed
            });
            match found {
                Some(j) => {
                    log::info!("{archive_id}: the job asked for exists after all ({e})");
                    let t = j.tier.as_deref().and_then(Tier::parse).unwrap_or(tier);
                    Ok((j.job_id, t))
                }
                None => Err(e.into()),
            }
        }
        other => other.map_err(InitiateError::from),
    }
}

/// Transfers one finished output to where the archive goes. Returns the bytes fetched.
pub async fn fetch(
    client: Arc<dyn GlacierClient>,
    vault: String,
    job_id: String,
    work: Arc<Work>,
    progress: Arc<AtomicU64>,
) -> Result<u64, FetchError> {
    match &work.sink {
        Sink::Dir { .. } => fetch_into_dir(client, vault, job_id, work, progress).await,
        Sink::S3 { targets, ctx } => {
            let job = OutputRef {
                client,
                vault,
                job_id,
                size: work.size,
            };
            Ok(stream_to_s3(ctx, job, targets, &work, &progress).await?)
        }
    }
}

/// Streams the output into the first object, then makes the others server-side copies of it
/// (or, over CopyObject's 5 GiB, streams them too: the output can be read again while the
/// job lasts).
async fn stream_to_s3(
    ctx: &Arc<Ctx>,
    job: OutputRef,
    targets: &[s3_stream::Target],
    work: &Work,
    progress: &AtomicU64,
) -> Result<u64, StreamError> {
    let want = Expect {
        size: work.size,
        tree: &work.tree_hash,
        archive: Some(&work.archive_id),
    };
    let source = Source::Job(job);
    progress.store(0, Ordering::Relaxed);
    // A retry of the archive (after a transient failure) leaves alone what this run wrote.
    let mut fetched = 0;
    let first = &targets[0];
    if !first.written.load(Ordering::Relaxed) {
        fetched += s3_stream::send(ctx, &source, first, want, progress).await?;
    } else {
        progress.fetch_add(work.size, Ordering::Relaxed);
    }
    for t in &targets[1..] {
        if t.written.load(Ordering::Relaxed) {
            progress.fetch_add(work.size, Ordering::Relaxed);
        } else if work.size <= MAX_COPY {
            ctx.bucket.copy(&first.key, &t.key, &t.meta).await?;
            t.written.store(true, Ordering::Relaxed);
            progress.fetch_add(work.size, Ordering::Relaxed);
        } else {
            fetched += s3_stream::send(ctx, &source, t, want, progress).await?;
        }
    }
    Ok(fetched)
}

/// Downloads one finished output into the temporary file beside its first target, resuming
/// from the recorded prefix, then places every target. Returns the bytes fetched.
async fn fetch_into_dir(
    client: Arc<dyn GlacierClient>,
    vault: String,
    job_id: String,
    work: Arc<Work>,
    progress: Arc<AtomicU64>,
) -> Result<u64, FetchError> {
    let Sink::Dir { targets, journal } = &work.sink else {
        return Ok(0);
    };
    let resume = journal.resume();
    let resumed = resume.verified;
    progress.store(resume.verified, Ordering::Relaxed);
    let spec = DownloadSpec {
        vault,
        job_id,
        size: work.size,
        tree_hash: work.tree_hash,
        dest: targets[0].temp.clone(),
        chunk_size: CHUNK,
    };
    download::download(&client, &spec, resume, journal, &progress, PARALLEL_CHUNKS).await?;
    let w = work.clone();
    let placed = tokio::task::spawn_blocking(move || match &w.sink {
        Sink::Dir { targets, journal } => place_all(targets, journal, &w),
        Sink::S3 { .. } => Ok(()),
    });
    match placed.await {
        Ok(placed) => Ok(placed.map(|()| work.size - resumed)?),
        Err(e) => Err(FetchError::Task(e)),
    }
}

pub fn unix_secs(iso: &str) -> Option<i64> {
    crate::codec::timefmt::iso_secs(Some(iso))
}

pub fn system_time(iso: &str) -> Option<SystemTime> {
    let secs = u64::try_from(unix_secs(iso)?).ok()?;
    Some(SystemTime::UNIX_EPOCH + Duration::from_secs(secs))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::glacier::JobAction;

    fn job(status: JobStatus, created: &str, completed: Option<&str>) -> JobDesc {
        JobDesc {
            job_id: format!("{created}-{completed:?}"),
            action: JobAction::ArchiveRetrieval,
            status,
            status_message: None,
            archive_id: Some("A".into()),
            archive_size: Some(10),
            archive_tree_hash: None,
            tree_hash: None,
            retrieval_byte_range: Some("0-9".into()),
            tier: Some("Bulk".into()),
            creation_date: Some(created.into()),
            completion_date: completed.map(str::to_owned),
            inventory_size: None,
            inventory_marker: None,
            description: None,
        }
    }

    #[test]
    fn finished_jobs_with_most_time_left_are_preferred() {
        let running_old = job(JobStatus::InProgress, "2026-01-01T00:00:00.000Z", None);
        let running_new = job(JobStatus::InProgress, "2026-01-02T00:00:00.000Z", None);
        let done_old = job(
            JobStatus::Succeeded,
            "2026-01-01T00:00:00.000Z",
            Some("2026-01-01T04:00:00.000Z"),
        );
        let done_new = job(
            JobStatus::Succeeded,
            "2026-01-01T00:00:00.000Z",
            Some("2026-01-01T09:00:00.000Z"),
        );
        assert!(better(&running_new, None));
        assert!(better(&running_old, Some(&running_new)));
        assert!(!better(&running_new, Some(&running_old)));
        assert!(better(&done_old, Some(&running_old)));
        assert!(!better(&running_old, Some(&done_old)));
        assert!(better(&done_new, Some(&done_old)));
        assert!(!better(&done_old, Some(&done_new)));
    }

    #[test]
    fn only_whole_archive_jobs_are_adopted() {
        let mut j = job(JobStatus::Succeeded, "x", None);
        assert!(whole_archive(&j, 10));
        assert!(!whole_archive(&j, 11));
        j.retrieval_byte_range = Some("0-4".into());
        assert!(!whole_archive(&j, 10));
        j.retrieval_byte_range = None;
        assert!(whole_archive(&j, 10));
    }

    #[test]
    fn glacier_dates_read_as_unix_seconds() {
        assert_eq!(unix_secs("2026-01-01T00:00:00.000Z"), Some(1_767_225_600));
        assert_eq!(unix_secs("yesterday"), None);
        assert_eq!(
            system_time("1970-01-01T00:00:10.000Z"),
            Some(SystemTime::UNIX_EPOCH + Duration::from_secs(10))
        );
    }
}
