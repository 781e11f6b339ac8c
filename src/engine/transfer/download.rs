//! The download engine: fills a local data file with the output of one completed whole-archive
//! retrieval job, and vouches for every byte before it says it is done.
//!
//! It owns how the output is fetched and checked, not when or why: the caller decides which job
//! to download, keeps the journal durable, and retries later what fails transiently. Here:
//! - **Tree-aligned chunks, in parallel.** The output is cut into chunks of at most
//!   `chunk_size` (a power-of-two MiB), each exactly one node of the archive's tree, so Glacier
//!   sends `x-amz-sha256-tree-hash` for each ranged GetJobOutput (GLACIER-API.md §3, the node
//!   rule). Up to `parallel` chunks are fetched at once, each as a tokio task.
//! - **One pass.** A chunk's body is streamed into the file at its offset, one 1 MiB leaf at a
//!   time, and each leaf is hashed on its way to the disk; `pwrite` and the hashing run on the
//!   blocking pool, never on a runtime worker, while the next leaf is read off the network.
//! - **Checked as it arrives** (DESIGN.md §5, "Verification"). A chunk must have exactly its
//!   length, and the root of its leaves must equal the header when there is one; otherwise it is
//!   fetched again, up to [`ATTEMPTS`] times. The archive's own tree hash, combined from all the
//!   leaves, is checked at the end, so a chunk that came without a header (an endpoint that
//!   sends none, such as moto) is still covered before anything is reported done.
//! - **Resumable.** The journal records each time the contiguous prefix of good chunks grows,
//!   with the leaf hashes of that prefix, so a restart fetches only what lies beyond it and the
//!   final check needs no second pass over the file. Data is flushed to the disk before the
//!   journal vouches for it.
//! - **Endpoints that ignore `Range`.** One that answers a ranged request with the whole output
//!   (200, no `Content-Range`: moto) is detected on the first request; the engine then streams
//!   that one body sequentially into the file, still hashing every leaf and journalling.
//!
//! Retrying single requests is the client's job ([`crate::glacier::retry::Retrying`]); a body
//! cut off mid-stream, truncated or corrupted is this engine's, since only it can tell.

use std::collections::{BTreeMap, VecDeque};
use std::fmt;
use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use sha2::{Digest as _, Sha256};
use tokio::io::AsyncReadExt;
use tokio::runtime::{Handle, RuntimeFlavor};
use tokio::sync::Semaphore;
use tokio::task::{JoinError, JoinHandle, JoinSet};

use crate::codec::treehash::{from_hex, is_tree_aligned, root_of_leaves, to_hex, Digest, MIB};
use crate::glacier::{BodyReader, ErrorKind, GlacierClient, GlacierError, JobOutput};

/// Fetches of one chunk (or, with an endpoint that ignores `Range`, consecutive fetches of the
/// whole output that make no progress) before the download fails.
pub const ATTEMPTS: u32 = 3;

/// The leaf size, as a `usize` for buffers.
const LEAF: usize = MIB as usize;

/// More than the leaf jobs that can ever be in flight (one per chunk task): taking them all
/// waits for every job handed to the blocking pool to end.
const LEAF_JOB_PERMITS: u32 = 1 << 20;

/// What to download.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DownloadSpec {
    pub vault: String,
    pub job_id: String,
    /// The archive's size: the job retrieves the whole archive.
    pub size: u64,
    /// The archive's tree hash, from the catalog.
    pub tree_hash: Digest,
    /// The data file to fill, created 0600 if missing. Only [`download`] returning `Ok` (and the
    /// journal's record of the whole size) says its bytes are good.
    pub dest: PathBuf,
    /// A power-of-two MiB, e.g. 16 MiB (anything else is rounded down to one, at least 1 MiB);
    /// each request covers one tree-aligned chunk of at most this size.
    pub chunk_size: u64,
}

/// Progress that survives a restart: bytes `[0, upto)` of the file are known good, and `leaves`
/// are their 1 MiB leaf hashes, so the final check needs no second pass over them.
///
/// A chunk is known good when it had its exact length and matched the tree-hash header Glacier
/// sent for it; a chunk that came without a header is vouched for by the whole-archive check at
/// the end. So a record never reaches the archive's size before that check has passed, and a
/// failed check records `upto = 0`: everything must be fetched again.
///
/// `leaves` is always the whole prefix's (append-only storage keeps `leaves[old_upto / MiB..]`).
/// The data is flushed to the disk before each record. Records are made from async code; on a
/// multi-threaded runtime the engine wraps them in `block_in_place`, so a short synchronous wait
/// (e.g. for the catalog's writer thread) is fine. An error stops the download.
pub trait DownloadJournal: Send + Sync {
    fn verified(&self, upto: u64, leaves: &[Digest]) -> Result<(), String>;
}

/// Where an interrupted download stands, as the journal last recorded it. The default,
/// `Resume { verified: 0, leaves: vec![] }`, downloads everything from scratch: use it after a
/// [`DownloadError::Corrupt`], or for a new job.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Resume {
    pub verified: u64,
    pub leaves: Vec<Digest>,
}

/// Why a download failed. Whatever the failure, the journal describes only good data.
#[derive(Debug, thiserror::Error)]
pub enum DownloadError {
    #[error(transparent)]
    Glacier(#[from] GlacierError),
    #[error("writing the data file: {0}")]
    Io(#[from] io::Error),
    /// The data did not match its tree hash even after fetching it again; nothing of it is
    /// served. Fetching again from scratch (`Resume::default()`) may help once.
    #[error("retrieved data is corrupt: {what}")]
    Corrupt { what: String },
    /// The job's output is gone (404): a new retrieval job is needed.
    #[error("the retrieval job's output has expired")]
    Expired,
    #[error("journal: {0}")]
    Journal(String),
    /// The runtime is shutting down under the download.
    #[error("download cancelled: the runtime is shutting down")]
    Cancelled,
}

impl DownloadError {
    /// Whether trying the same job again later (resuming through the journal) may succeed. A
    /// journal that cannot write now may well write later. Corrupt data has been fetched
    /// [`ATTEMPTS`] times already; an expired job needs a new job.
    pub fn is_transient(&self) -> bool {
        match self {
            DownloadError::Glacier(e) => e.is_transient(),
            DownloadError::Journal(_) | DownloadError::Cancelled => true,
            DownloadError::Io(_) | DownloadError::Corrupt { .. } | DownloadError::Expired => false,
        }
    }
}

/// Downloads the output of `spec.job_id` into `spec.dest` and checks it against
/// `spec.tree_hash`; `Ok` only once every byte is checked and flushed to the disk.
///
/// `resume` is the journal's last record (a record that does not fit this download is ignored:
/// it starts over); only bytes beyond it are requested. `progress` grows by each chunk's length
/// as it is verified (the resumed prefix is not added: seed it with `resume.verified` if you
/// want a running total). Dropping the future stops the download at once; a leaf already handed
/// to the blocking pool may still be written, beyond the journaled prefix, where nothing is
/// trusted.
pub async fn download(
    client: &Arc<dyn GlacierClient>,
    spec: &DownloadSpec,
    resume: Resume,
    journal: &dyn DownloadJournal,
    progress: &AtomicU64,
    parallel: usize,
) -> Result<(), DownloadError> {
    let file = {
        let (path, size) = (spec.dest.clone(), spec.size);
        blocking(move || open_dest(&path, size)).await??
    };
    let sh = Arc::new(Shared {
        client: client.clone(),
        vault: spec.vault.clone(),
        job_id: spec.job_id.clone(),
        size: spec.size,
        file: Arc::new(file),
        leaf_jobs: Arc::new(Semaphore::new(LEAF_JOB_PERMITS as usize)),
    });
    let resume = usable(resume, &sh);
    let mut prefix = Prefix {
        verified: resume.verified,
        leaves: resume.leaves,
        waiting: BTreeMap::new(),
        unchecked: 0,
        journal,
    };
    let chunk = pow2_mib_at_most(spec.chunk_size);
    let fetched = fetch_all(&sh, &mut prefix, chunk, parallel.max(1), progress).await;
    // A failed download must not leave writes landing behind the caller's back (a retry would
    // race them), so wait for every leaf job to end.
    sh.settle().await;
    fetched?;
    prefix.finish(&sh, &spec.tree_hash).await
}

fn open_dest(path: &std::path::Path, size: u64) -> io::Result<File> {
    let file = OpenOptions::new()
        .write(true)
        .create(true)
        // Never truncated: a resumed download keeps its verified prefix.
        .truncate(false)
        .mode(0o600)
        .open(path)?;
    // Setting the size drops anything a stale, longer file had beyond the archive.
    file.set_len(size)?;
    Ok(file)
}

/// The journal's record, or a fresh start when it cannot describe a prefix of this archive.
fn usable(resume: Resume, sh: &Shared) -> Resume {
    let v = resume.verified;
    let fits = v <= sh.size
        && (v % MIB == 0 || v == sh.size)
        && resume.leaves.len() as u64 == v.div_ceil(MIB);
    if fits {
        resume
    } else {
        log::warn!(
            "job {}: the recorded progress ({v} bytes, {} leaves) does not fit an archive of {} \
             bytes; downloading from scratch",
            sh.job_id,
            resume.leaves.len(),
            sh.size
        );
        Resume::default()
    }
}

/// The largest power-of-two MiB not above `n`, and at least 1 MiB.
fn pow2_mib_at_most(n: u64) -> u64 {
    match n / MIB {
        0 => MIB,
        m => MIB << m.ilog2(),
    }
}

/// A byte range of the output, `[start, end)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Chunk {
    start: u64,
    end: u64,
}

impl Chunk {
    fn len(self) -> u64 {
        self.end - self.start
    }
}

impl fmt::Display for Chunk {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "bytes {}-{}", self.start, self.end.saturating_sub(1))
    }
}

/// `[from, size)` in tree-aligned chunks of at most `chunk` bytes (a power-of-two MiB). `from`
/// is a MiB multiple; when it is not a multiple of `chunk` (a journal written with another
/// chunk size), the first chunks are the largest nodes that start there, until the steps line
/// up again.
fn plan(from: u64, size: u64, chunk: u64) -> VecDeque<Chunk> {
    let mut out = VecDeque::new();
    let mut at = from;
    while at < size {
        let step = match at {
            0 => chunk,
            _ => chunk.min(1 << at.trailing_zeros()),
        };
        let end = size.min(at.saturating_add(step));
        debug_assert!(is_tree_aligned(at, end, size), "{at}..{end} of {size}");
        out.push_back(Chunk { start: at, end });
        at = end;
    }
    out
}

/// What every chunk task needs.
struct Shared {
    client: Arc<dyn GlacierClient>,
    vault: String,
    job_id: String,
    size: u64,
    file: Arc<File>,
    /// One permit per leaf job on the blocking pool; see [`Shared::settle`].
    leaf_jobs: Arc<Semaphore>,
}

impl Shared {
    /// GetJobOutput of `chunk`, or of everything. A 404 means the output is gone.
    async fn request(&self, chunk: Option<Chunk>) -> Result<JobOutput, DownloadError> {
        let range = chunk.map(|c| (c.start, c.end - 1));
        match self
            .client
            .get_job_output(&self.vault, &self.job_id, range)
            .await
        {
            Ok(out) => Ok(out),
            Err(e) if e.kind == ErrorKind::NotFound => {
                log::info!("job {}: {e}", self.job_id);
                Err(DownloadError::Expired)
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Waits until no leaf job is left on the blocking pool (they cannot be aborted).
    async fn settle(&self) {
        // The semaphore is never closed, so this only waits.
        let _all = self.leaf_jobs.acquire_many(LEAF_JOB_PERMITS).await;
    }
}

/// Why one fetch failed, in a way fetching again may cure.
enum Bad {
    /// The body broke off (reset, timeout, or a connection closed before Content-Length).
    Cut(io::Error),
    /// The body ended early: `got` of the chunk's bytes.
    Short { got: u64 },
    /// The body is longer than the range asked for.
    Long,
    /// The chunk's bytes do not hash to the header.
    Hash { ours: Digest, theirs: String },
    /// The response is not for the range asked for.
    Range(String),
}

impl fmt::Display for Bad {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Bad::Cut(e) => write!(f, "the body broke off: {e}"),
            Bad::Short { got } => write!(f, "the body ended after {got} bytes"),
            Bad::Long => write!(f, "the body is longer than the range"),
            Bad::Hash { ours, theirs } => write!(
                f,
                "the data hashes to {}, Glacier's tree hash is {theirs}",
                to_hex(ours)
            ),
            Bad::Range(why) => f.write_str(why),
        }
    }
}

/// How a step failed: worth another fetch, or not.
enum Fail {
    Retry(Bad),
    Stop(DownloadError),
}

impl From<Bad> for Fail {
    fn from(bad: Bad) -> Self {
        Fail::Retry(bad)
    }
}

impl From<DownloadError> for Fail {
    fn from(e: DownloadError) -> Self {
        Fail::Stop(e)
    }
}

/// The error after the last of [`ATTEMPTS`] fetches of `chunk`: a body that kept breaking off is
/// the network's fault (try later); anything else is data that cannot be trusted.
fn give_up(sh: &Shared, chunk: Chunk, bad: Bad) -> DownloadError {
    let what = format!("job {}, {chunk}: {bad} ({ATTEMPTS} attempts)", sh.job_id);
    match bad {
        Bad::Cut(_) => GlacierError::new("GetJobOutput", ErrorKind::Transient, what).into(),
        _ => DownloadError::Corrupt { what },
    }
}

/// A chunk whose bytes are in the file and checked as far as the response allowed.
struct Done {
    chunk: Chunk,
    leaves: Vec<Digest>,
    /// Whether a tree-hash header vouched for it.
    checked: bool,
}

/// The contiguous verified prefix, and the chunks done beyond it.
struct Prefix<'a> {
    verified: u64,
    leaves: Vec<Digest>,
    /// Chunks done out of order, by start, until the prefix reaches them.
    waiting: BTreeMap<u64, Done>,
    /// Chunks that came without a header (only the final check vouches for them).
    unchecked: u64,
    journal: &'a dyn DownloadJournal,
}

impl Prefix<'_> {
    /// Takes a done chunk; returns whether the prefix grew.
    fn add(&mut self, done: Done) -> bool {
        self.unchecked += u64::from(!done.checked);
        self.waiting.insert(done.chunk.start, done);
        let before = self.verified;
        while let Some(next) = self.waiting.remove(&self.verified) {
            self.leaves.extend(next.leaves);
            self.verified = next.chunk.end;
        }
        self.verified > before
    }

    /// Records the prefix: flushed to the disk first, so a power loss cannot leave the journal
    /// vouching for bytes the disk never got. The whole archive is recorded only by
    /// [`Prefix::finish`], after its check.
    async fn commit(&self, sh: &Shared) -> Result<(), DownloadError> {
        if self.verified >= sh.size {
            return Ok(());
        }
        let file = sh.file.clone();
        blocking(move || file.sync_data()).await??;
        record(|| self.journal.verified(self.verified, &self.leaves))
    }

    /// The whole-archive check, then the flush, then the record that says "done".
    async fn finish(&self, sh: &Shared, want: &Digest) -> Result<(), DownloadError> {
        let ours = root_of_leaves(&self.leaves);
        let whole = self.verified == sh.size && self.leaves.len() as u64 == sh.size.div_ceil(MIB);
        if !whole || ours != *want {
            let what = format!(
                "job {}: the data's tree hash is {}, the archive's is {}",
                sh.job_id,
                to_hex(&ours),
                to_hex(want)
            );
            log::warn!("{what}; {} chunks came without a tree hash", self.unchecked);
            // Whichever chunk is wrong is inside the recorded prefix: none of it can be reused.
            if let Err(e) = record(|| self.journal.verified(0, &[])) {
                log::warn!("job {}: could not reset the download: {e}", sh.job_id);
            }
            return Err(DownloadError::Corrupt { what });
        }
        let file = sh.file.clone();
        blocking(move || file.sync_all()).await??;
        record(|| self.journal.verified(sh.size, &self.leaves))?;
        log::info!(
            "job {}: {} bytes downloaded and verified ({} chunks without a tree-hash header)",
            sh.job_id,
            sh.size,
            self.unchecked
        );
        Ok(())
    }
}

/// Fetches everything beyond the prefix, in parallel chunks, or sequentially when the endpoint
/// ignores `Range`. On error, every chunk task has ended when this returns.
async fn fetch_all(
    sh: &Arc<Shared>,
    prefix: &mut Prefix<'_>,
    chunk: u64,
    parallel: usize,
    progress: &AtomicU64,
) -> Result<(), DownloadError> {
    let mut todo = plan(prefix.verified, sh.size, chunk);
    let Some(first) = todo.pop_front() else {
        return Ok(());
    };
    // The first response tells whether the endpoint honours Range; only then are more
    // requests worth making. The wait is for its headers, not its body.
    let out = sh.request(Some(first)).await?;
    if let Ok(Holds::Whole) = holds(&out, first, sh.size) {
        log::info!(
            "job {}: the endpoint ignores Range; downloading the whole output in one stream",
            sh.job_id
        );
        return sequential(sh, prefix, chunk, out, progress).await;
    }
    let mut tasks = JoinSet::new();
    tasks.spawn(fetch_chunk(sh.clone(), first, Some(out)));
    loop {
        while tasks.len() < parallel {
            let Some(next) = todo.pop_front() else { break };
            tasks.spawn(fetch_chunk(sh.clone(), next, None));
        }
        let Some(ended) = tasks.join_next().await else {
            return Ok(());
        };
        let step = match joined(ended) {
            Ok(Ok(done)) => {
                progress.fetch_add(done.chunk.len(), Ordering::Relaxed);
                match prefix.add(done) {
                    true => prefix.commit(sh).await,
                    false => Ok(()),
                }
            }
            Ok(Err(e)) | Err(e) => Err(e),
        };
        if let Err(e) = step {
            // Stop the other chunks now rather than let them run on unobserved.
            tasks.shutdown().await;
            return Err(e);
        }
    }
}

/// Fetches one chunk, again on a failure the network may have caused, up to [`ATTEMPTS`] times.
/// `first` is a response already requested for it.
async fn fetch_chunk(
    sh: Arc<Shared>,
    chunk: Chunk,
    mut first: Option<JobOutput>,
) -> Result<Done, DownloadError> {
    let mut attempt = 1;
    loop {
        let out = match first.take() {
            Some(out) => out,
            None => sh.request(Some(chunk)).await?,
        };
        match receive_chunk(&sh, chunk, out).await {
            Ok(done) => return Ok(done),
            Err(Fail::Stop(e)) => return Err(e),
            Err(Fail::Retry(bad)) if attempt >= ATTEMPTS => return Err(give_up(&sh, chunk, bad)),
            Err(Fail::Retry(bad)) => {
                log::warn!(
                    "job {}, {chunk}: {bad}; fetching it again (attempt {} of {ATTEMPTS})",
                    sh.job_id,
                    attempt + 1
                );
                attempt += 1;
            }
        }
    }
}

/// What a response to a ranged request carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Holds {
    /// The range asked for.
    Chunk,
    /// The whole output: the endpoint ignored the range.
    Whole,
}

/// Reads the status and headers of a response to a request for `chunk`.
fn holds(out: &JobOutput, chunk: Chunk, size: u64) -> Result<Holds, Fail> {
    if chunk.start == 0 && chunk.end == size {
        return Ok(Holds::Chunk);
    }
    let Some(raw) = out.content_range.as_deref() else {
        // 200 without Content-Range: the whole output, unless its length says otherwise.
        return Ok(match (out.status, out.content_length) {
            (206, _) => Holds::Chunk,
            (_, Some(n)) if n == chunk.len() => Holds::Chunk,
            _ => Holds::Whole,
        });
    };
    let Some((first, last, total)) = parse_content_range(raw) else {
        return Err(Bad::Range(format!("unreadable Content-Range {raw:?}")).into());
    };
    if total.is_some_and(|t| t != size) {
        // Not a retrieval of this archive: fetching again cannot help.
        return Err(Fail::Stop(DownloadError::Corrupt {
            what: format!("the job's output is {raw}, the archive has {size} bytes"),
        }));
    }
    if (first, last) == (chunk.start, chunk.end - 1) {
        Ok(Holds::Chunk)
    } else if (first, last) == (0, size - 1) {
        Ok(Holds::Whole)
    } else {
        Err(Bad::Range(format!("asked for {chunk}, got Content-Range {raw:?}")).into())
    }
}

/// `bytes S-E/T` (T may be `*`).
fn parse_content_range(raw: &str) -> Option<(u64, u64, Option<u64>)> {
    let spec = raw.trim().strip_prefix("bytes")?.trim_start();
    let (range, total) = spec.split_once('/')?;
    let (first, last) = crate::glacier::parse_range(range)?;
    let total = match total.trim() {
        "*" => None,
        t => Some(t.parse().ok()?),
    };
    Some((first, last, total))
}

/// One response for `chunk`, into the file and checked.
async fn receive_chunk(sh: &Shared, chunk: Chunk, out: JobOutput) -> Result<Done, Fail> {
    let holds = holds(&out, chunk, sh.size)?;
    let header = out.tree_hash;
    let mut body = out.body;
    if holds == Holds::Whole {
        // Another request of this download ignored Range even though the first did not.
        skip(&mut body, chunk.start).await?;
    }
    let leaves = stream_into(sh, &mut body, chunk).await?;
    if holds == Holds::Whole {
        // The header, if any, is the whole output's; the final check covers this chunk.
        return Ok(Done {
            chunk,
            leaves,
            checked: false,
        });
    }
    at_end(&mut body).await?;
    if let Some(theirs) = &header {
        let ours = root_of_leaves(&leaves);
        if from_hex(theirs) != Some(ours) {
            return Err(Bad::Hash {
                ours,
                theirs: theirs.clone(),
            }
            .into());
        }
    }
    Ok(Done {
        chunk,
        leaves,
        checked: header.is_some(),
    })
}

/// With an endpoint that ignores `Range`: the whole output in one stream, skipping the verified
/// prefix, journalling chunk by chunk as the parallel path does. A stream that breaks off is
/// requested again, up to [`ATTEMPTS`] times in a row without progress.
async fn sequential(
    sh: &Shared,
    prefix: &mut Prefix<'_>,
    chunk: u64,
    first: JobOutput,
    progress: &AtomicU64,
) -> Result<(), DownloadError> {
    let mut next = Some(first);
    let mut fruitless = 0;
    loop {
        let out = match next.take() {
            Some(out) => out,
            None => sh.request(None).await?,
        };
        let before = prefix.verified;
        match stream_whole(sh, prefix, chunk, out, progress).await {
            Ok(()) => return Ok(()),
            Err(Fail::Stop(e)) => return Err(e),
            Err(Fail::Retry(bad)) => {
                fruitless = if prefix.verified > before {
                    1
                } else {
                    fruitless + 1
                };
                let rest = Chunk {
                    start: prefix.verified,
                    end: sh.size,
                };
                if fruitless >= ATTEMPTS {
                    return Err(give_up(sh, rest, bad));
                }
                log::warn!("job {}, {rest}: {bad}; requesting it again", sh.job_id);
            }
        }
    }
}

async fn stream_whole(
    sh: &Shared,
    prefix: &mut Prefix<'_>,
    chunk: u64,
    out: JobOutput,
    progress: &AtomicU64,
) -> Result<(), Fail> {
    let mut body = out.body;
    skip(&mut body, prefix.verified).await?;
    for c in plan(prefix.verified, sh.size, chunk) {
        let leaves = stream_into(sh, &mut body, c).await?;
        progress.fetch_add(c.len(), Ordering::Relaxed);
        prefix.add(Done {
            chunk: c,
            leaves,
            checked: false,
        });
        prefix.commit(sh).await?;
    }
    match at_end(&mut body).await {
        // More than the archive: not the output of this archive's job.
        Err(Bad::Long) => Err(Fail::Stop(DownloadError::Corrupt {
            what: format!(
                "job {}: the output is longer than the archive's {} bytes",
                sh.job_id, sh.size
            ),
        })),
        // Every byte arrived; the final check vouches for them.
        Ok(()) | Err(_) => Ok(()),
    }
}

/// Reads exactly `chunk.len()` bytes of `body` into the file at `chunk.start` and returns their
/// leaf hashes. Each leaf is written and hashed on the blocking pool while the next is read.
async fn stream_into(
    sh: &Shared,
    body: &mut BodyReader,
    chunk: Chunk,
) -> Result<Vec<Digest>, Fail> {
    let len = chunk.len();
    let mut leaves = Vec::with_capacity(usize::try_from(len.div_ceil(MIB)).unwrap_or(0));
    let mut buf = Vec::new();
    let mut in_flight: Option<LeafJob> = None;
    let mut at = 0;
    while at < len {
        let want = usize::try_from((len - at).min(MIB)).unwrap_or(LEAF);
        buf.resize(want, 0);
        let got = read_full(body, &mut buf).await;
        // The previous leaf's job ends before anything else happens, so no write of this
        // attempt is left running when it gives up (the next attempt would race it).
        let spare = match in_flight.take() {
            Some(job) => {
                let (spare, leaf) = joined(job.await)?.map_err(DownloadError::Io)?;
                leaves.push(leaf);
                spare
            }
            None => Vec::new(),
        };
        match got {
            Err(e) => return Err(Bad::Cut(e).into()),
            Ok(n) if n < want => return Err(Bad::Short { got: at + n as u64 }.into()),
            Ok(_) => {}
        }
        let full = std::mem::replace(&mut buf, spare);
        in_flight = Some(spawn_leaf(sh, full, chunk.start + at)?);
        at += want as u64;
    }
    if let Some(job) = in_flight {
        let (_, leaf) = joined(job.await)?.map_err(DownloadError::Io)?;
        leaves.push(leaf);
    }
    Ok(leaves)
}

/// A leaf being written and hashed: gives back its buffer and its hash.
type LeafJob = JoinHandle<io::Result<(Vec<u8>, Digest)>>;

/// Writes one leaf at `pos` and hashes it, on the blocking pool; hands the buffer back.
fn spawn_leaf(sh: &Shared, leaf: Vec<u8>, pos: u64) -> Result<LeafJob, Fail> {
    // No permit: the download is settling after a failure, and this task is being stopped.
    let permit = sh
        .leaf_jobs
        .clone()
        .try_acquire_owned()
        .map_err(|_| DownloadError::Cancelled)?;
    let file = sh.file.clone();
    Ok(tokio::task::spawn_blocking(move || {
        let _permit = permit;
        file.write_all_at(&leaf, pos)?;
        let digest: Digest = Sha256::digest(&leaf).into();
        Ok((leaf, digest))
    }))
}

/// Fills `buf` unless the body ends first; returns the bytes read.
async fn read_full(body: &mut BodyReader, buf: &mut [u8]) -> io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match body.read(&mut buf[filled..]).await? {
            0 => break,
            n => filled += n,
        }
    }
    Ok(filled)
}

/// Reads and drops the first `n` bytes of `body`.
async fn skip(body: &mut BodyReader, n: u64) -> Result<(), Bad> {
    let mut scratch = vec![0u8; LEAF.min(usize::try_from(n).unwrap_or(LEAF))];
    let mut done = 0;
    while done < n {
        let want = usize::try_from(n - done).unwrap_or(LEAF).min(scratch.len());
        match body.read(&mut scratch[..want]).await {
            Ok(0) => return Err(Bad::Short { got: done }),
            Ok(k) => done += k as u64,
            Err(e) => return Err(Bad::Cut(e)),
        }
    }
    Ok(())
}

/// The body must end here.
async fn at_end(body: &mut BodyReader) -> Result<(), Bad> {
    match body.read(&mut [0u8; 1]).await {
        Ok(0) => Ok(()),
        Ok(_) => Err(Bad::Long),
        Err(e) => Err(Bad::Cut(e)),
    }
}

/// Runs file I/O on the blocking pool, never on a runtime worker.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<T, DownloadError> {
    joined(tokio::task::spawn_blocking(f).await)
}

/// A finished task's result; a panic inside it is re-raised here, where it belongs.
fn joined<T>(r: Result<T, JoinError>) -> Result<T, DownloadError> {
    match r {
        Ok(v) => Ok(v),
        Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
        Err(_) => Err(DownloadError::Cancelled),
    }
}

/// Makes a journal record. The journal is synchronous (it returns once the record is durable),
/// so on a multi-threaded runtime the wait is moved off the worker's task queue.
fn record(entry: impl FnOnce() -> Result<(), String>) -> Result<(), DownloadError> {
    let multi_thread = Handle::try_current()
        .map(|h| h.runtime_flavor() == RuntimeFlavor::MultiThread)
        .unwrap_or(false);
    let result = if multi_thread {
        tokio::task::block_in_place(entry)
    } else {
        entry()
    };
    result.map_err(DownloadError::Journal)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chunks(from: u64, size: u64, chunk: u64) -> Vec<(u64, u64)> {
        plan(from, size, chunk)
            .into_iter()
            .map(|c| (c.start, c.end))
            .collect()
    }

    #[test]
    fn plans_are_tree_aligned_from_any_mib_start() {
        let size = 9 * MIB + 1;
        assert_eq!(
            chunks(0, size, 4 * MIB),
            vec![(0, 4 * MIB), (4 * MIB, 8 * MIB), (8 * MIB, size)]
        );
        // Resumed at 3 MiB with 4 MiB chunks: 1 MiB to reach 4, then full steps.
        assert_eq!(
            chunks(3 * MIB, size, 4 * MIB),
            vec![(3 * MIB, 4 * MIB), (4 * MIB, 8 * MIB), (8 * MIB, size)]
        );
        assert_eq!(
            chunks(2 * MIB, size, 8 * MIB),
            vec![(2 * MIB, 4 * MIB), (4 * MIB, 8 * MIB), (8 * MIB, size)]
        );
        assert_eq!(chunks(size, size, MIB), vec![]);
        assert_eq!(chunks(0, 1, 16 * MIB), vec![(0, 1)]);
        for from in 0..=9 {
            for c in chunks(from * MIB, size, 4 * MIB) {
                assert!(is_tree_aligned(c.0, c.1, size), "{c:?}");
            }
        }
    }

    #[test]
    fn chunk_sizes_round_down_to_a_power_of_two_mib() {
        assert_eq!(pow2_mib_at_most(0), MIB);
        assert_eq!(pow2_mib_at_most(3 * MIB), 2 * MIB);
        assert_eq!(pow2_mib_at_most(16 * MIB), 16 * MIB);
    }

    #[test]
    fn content_ranges_parse() {
        assert_eq!(
            parse_content_range("bytes 0-1048575/8388608"),
            Some((0, 1_048_575, Some(8_388_608)))
        );
        assert_eq!(parse_content_range("bytes 5-9/*"), Some((5, 9, None)));
        assert_eq!(parse_content_range("bytes 9-5/10"), None);
        assert_eq!(parse_content_range("5-9/10"), None);
    }

    fn output(status: u16, content_range: Option<&str>, content_length: Option<u64>) -> JobOutput {
        JobOutput {
            status,
            tree_hash: None,
            content_range: content_range.map(str::to_owned),
            content_length,
            body: Box::pin(tokio::io::empty()),
        }
    }

    #[test]
    fn responses_that_ignore_range_are_told_apart() {
        let size = 3 * MIB;
        let c = Chunk {
            start: MIB,
            end: 2 * MIB,
        };
        let is = |out: JobOutput, want: Holds| {
            assert!(
                matches!(holds(&out, c, size), Ok(h) if h == want),
                "{out:?}"
            );
        };
        is(
            output(206, Some("bytes 1048576-2097151/3145728"), None),
            Holds::Chunk,
        );
        is(output(200, None, None), Holds::Whole); // moto
        is(output(200, None, Some(size)), Holds::Whole);
        is(output(200, None, Some(MIB)), Holds::Chunk);
        is(
            output(206, Some("bytes 0-3145727/3145728"), None),
            Holds::Whole,
        );
        let wrong = output(206, Some("bytes 0-1048575/3145728"), None);
        assert!(matches!(
            holds(&wrong, c, size),
            Err(Fail::Retry(Bad::Range(_)))
        ));
        let other = output(206, Some("bytes 1048576-2097151/9"), None);
        assert!(matches!(holds(&other, c, size), Err(Fail::Stop(_))));
        // A request for everything is answered with everything, whatever the status.
        let all = Chunk {
            start: 0,
            end: size,
        };
        assert!(matches!(
            holds(&output(200, None, None), all, size),
            Ok(Holds::Chunk)
        ));
    }
}
