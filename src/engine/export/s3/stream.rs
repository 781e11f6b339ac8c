//! One file into one object: the bytes come from a finished retrieval job (or, for a file the
//! mount has only staged, from the mount), pass through memory one part at a time, and go to
//! S3 with their SHA-256. Nothing is written to the local disk.
//!
//! - **Small objects** (no larger than one part) are read whole, checked against the
//!   archive's tree hash, and sent with one PutObject.
//! - **Multipart.** Parts are fetched as ranged reads, each a whole node of the archive's
//!   tree checked against the tree hash Glacier sends for it, a few at a time under the memory
//!   budget; each is journalled, then sent with UploadPart. The two legs overlap: up to
//!   [`PART_TASKS`] parts are fetched and up to [`PART_TASKS`] sent at once, so the next part
//!   comes from Glacier while the last goes to S3, and no more than [`HELD_PARTS`] parts of an
//!   object are in memory. When every part is in S3, their tree hashes are combined and
//!   compared with the archive's; only then is the upload completed. An upload whose data does
//!   not verify is aborted, never completed.
//! - **Resuming.** A multipart upload a previous attempt opened is continued: ListParts says
//!   which parts S3 holds, the journal says what each was; a part whose SHA-256 matches its
//!   journal line is trusted and not fetched again.
//! - **Endpoints that ignore `Range`** answer the first ranged read with the whole output;
//!   the parts are then read from that one body in order, and the final tree-hash check is
//!   what vouches for them.

use std::collections::BTreeMap;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use base64::Engine as _;
use bytes::Bytes;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinSet;

use super::bucket::{Bucket, ObjectMeta, PartInfo, S3Error, S3ErrorKind};
use super::journal::{Journal, JournalError, UploadRec};
use super::parts::{part_count, part_range, part_size, Memory};
use crate::codec::treehash::{body_hashes, combine_parts, from_hex, to_hex, Digest};
use crate::engine::transfer::download::memory::{
    fetch_range, read_whole_part, whole_ends, Checked, Got, JobRef,
};
use crate::engine::transfer::download::{DownloadError, ATTEMPTS};

/// Parts of one object fetched at once, and parts sent at once: each of these part tasks has
/// one part on its way to S3 and fetches the next meanwhile, so its two connections, one to
/// Glacier and one to S3, both carry data.
const PART_TASKS: usize = 4;
/// Parts of one object in memory at once (within the memory budget too): one being sent and
/// one fetched per part task.
pub const HELD_PARTS: usize = 2 * PART_TASKS;

#[derive(Debug, thiserror::Error)]
pub enum StreamError {
    /// Reading the job's output: expired, corrupt, or a transient failure.
    #[error(transparent)]
    Glacier(#[from] DownloadError),
    #[error(transparent)]
    S3(#[from] S3Error),
    #[error("export journal: {0}")]
    Journal(#[from] JournalError),
    #[error("reading {}: {source}", path.display())]
    Local { path: PathBuf, source: io::Error },
    /// A staged file's bytes no longer match what the export surveyed.
    #[error("the file changed while it was exported; run the export again")]
    Changed,
    #[error("the export task failed: {0}")]
    Task(String),
}

impl StreamError {
    /// Whether trying the same object again later may succeed.
    pub fn is_transient(&self) -> bool {
        match self {
            StreamError::Glacier(e) => e.is_transient(),
            StreamError::S3(e) => e.is_transient(),
            StreamError::Journal(_) | StreamError::Task(_) => true,
            StreamError::Local { .. } | StreamError::Changed => false,
        }
    }
}

/// What every stream of one export shares.
#[derive(Debug)]
pub struct Ctx {
    pub bucket: Bucket,
    pub journal: Journal,
    pub memory: Memory,
}

/// One object to write.
#[derive(Debug)]
pub struct Target {
    /// Relative to PATH, for reports.
    pub rel: PathBuf,
    pub key: String,
    pub meta: ObjectMeta,
    /// The multipart upload being continued, once there is one.
    pub upload: Mutex<Option<String>>,
    /// Written by this run: a retry of its archive leaves it alone.
    pub written: AtomicBool,
}

/// Where an object's bytes come from.
#[derive(Debug, Clone)]
pub enum Source {
    Job(JobRef),
    /// A file of the mount that only the mount has (staged): read through it.
    File(PathBuf),
}

/// What the object must hold.
#[derive(Debug, Clone, Copy)]
pub struct Expect<'a> {
    pub size: u64,
    pub tree: &'a Digest,
    pub archive: Option<&'a str>,
}

/// A part S3 holds, and its tree hash.
#[derive(Debug, Clone)]
struct Held {
    info: PartInfo,
    tree: Digest,
}

/// Writes `t` from `src`; returns the bytes read from the source. `progress` grows by each
/// part's length once S3 holds it (parts found there already included).
pub async fn send(
    ctx: &Arc<Ctx>,
    src: &Source,
    t: &Target,
    want: Expect<'_>,
    progress: &AtomicU64,
) -> Result<u64, StreamError> {
    let part = part_size(want.size);
    let resuming = crate::locks::lock(&t.upload).is_some();
    let fetched = if want.size <= part && !resuming {
        put_whole(ctx, src, t, want, progress).await?
    } else {
        multipart(ctx, src, t, want, progress).await?
    };
    t.written.store(true, Ordering::Relaxed);
    Ok(fetched)
}

/// PutObject of an object no larger than one part.
async fn put_whole(
    ctx: &Arc<Ctx>,
    src: &Source,
    t: &Target,
    want: Expect<'_>,
    progress: &AtomicU64,
) -> Result<u64, StreamError> {
    let _room = ctx.memory.reserve(want.size).await;
    let mut fetched = 0;
    let mut attempt = 0;
    let checked = loop {
        attempt += 1;
        let c = read_range(src, 0, want.size, want.size).await?;
        fetched += want.size;
        if c.tree == *want.tree {
            break c;
        }
        // No header covered this read (an endpoint that sends none): read it again.
        if attempt >= ATTEMPTS {
            return Err(mismatch(src, &c.tree, want.tree));
        }
    };
    let sha = b64(&checked.sha256);
    ctx.bucket.put(&t.key, checked.data, &sha, &t.meta).await?;
    progress.fetch_add(want.size, Ordering::Relaxed);
    Ok(fetched)
}

/// Reads `[start, end)` of the source whole, checked where the source can be.
async fn read_range(src: &Source, start: u64, end: u64, size: u64) -> Result<Checked, StreamError> {
    match src {
        Source::Job(job) => match fetch_range(job, start, end).await? {
            Got::Range(c) => Ok(c),
            Got::Whole(mut out) => {
                if start != 0 {
                    return Err(DownloadError::Corrupt {
                        what: format!("job {}: asked for a range, got everything", job.job_id),
                    }
                    .into());
                }
                let c = read_whole_part(&mut out.body, &job.job_id, size).await?;
                whole_ends(&mut out.body, &job.job_id).await?;
                Ok(c)
            }
        },
        Source::File(path) => read_file(path.clone(), start, end).await,
    }
}

async fn read_file(path: PathBuf, start: u64, end: u64) -> Result<Checked, StreamError> {
    let len = usize::try_from(end - start).map_err(|_| StreamError::Changed)?;
    let joined = tokio::task::spawn_blocking(move || {
        let read = std::fs::File::open(&path).and_then(|f| {
            let mut buf = vec![0u8; len];
            f.read_exact_at(&mut buf, start)?;
            Ok(buf)
        });
        match read {
            Ok(buf) => {
                let h = body_hashes(&buf);
                Ok(Checked {
                    data: Bytes::from(buf),
                    tree: h.tree,
                    sha256: h.linear,
                })
            }
            Err(source) => Err(StreamError::Local { path, source }),
        }
    })
    .await;
    joined.map_err(|e| StreamError::Task(e.to_string()))?
}

/// Data that does not hash to what it must: corrupt from Glacier, or a staged file that
/// changed since the survey.
fn mismatch(src: &Source, ours: &Digest, theirs: &Digest) -> StreamError {
    match src {
        Source::Job(job) => DownloadError::Corrupt {
            what: format!(
                "job {}: the data hashes to {}, the archive's tree hash is {}",
                job.job_id,
                to_hex(ours),
                to_hex(theirs)
            ),
        }
        .into(),
        Source::File(_) => StreamError::Changed,
    }
}

/// A part task's semaphore closed under it; never closed, so only if the export is torn down.
fn closed(_: tokio::sync::AcquireError) -> StreamError {
    StreamError::Task("the export is stopping".into())
}

fn b64(d: &Digest) -> String {
    base64::engine::general_purpose::STANDARD.encode(d)
}

async fn multipart(
    ctx: &Arc<Ctx>,
    src: &Source,
    t: &Target,
    want: Expect<'_>,
    progress: &AtomicU64,
) -> Result<u64, StreamError> {
    let part = part_size(want.size);
    let (upload_id, mut held) = open_or_resume(ctx, t, want, part).await?;
    progress.fetch_add(held.values().map(|h| h.info.size).sum(), Ordering::Relaxed);
    let sent = send_parts(ctx, src, t, &upload_id, want.size, &mut held, progress).await;
    let fetched = match sent {
        Ok(f) => f,
        Err(e) => {
            // Data that cannot be trusted must not stay in S3 to be resumed later.
            if matches!(
                e,
                StreamError::Changed | StreamError::Glacier(DownloadError::Corrupt { .. })
            ) {
                abandon(ctx, t, &upload_id).await;
            }
            return Err(e);
        }
    };
    let count = part_count(want.size, part);
    let roots: Vec<Digest> = (1..=count)
        .filter_map(|n| held.get(&n).map(|h| h.tree))
        .collect();
    if roots.len() != count as usize || combine_parts(part, &roots) != Some(*want.tree) {
        abandon(ctx, t, &upload_id).await;
        let ours = combine_parts(part, &roots).unwrap_or_default();
        return Err(mismatch(src, &ours, want.tree));
    }
    let parts: Vec<PartInfo> = held.into_values().map(|h| h.info).collect();
    ctx.bucket.complete(&t.key, &upload_id, &parts).await?;
    ctx.journal.upload_ended(&upload_id)?;
    *crate::locks::lock(&t.upload) = None;
    Ok(fetched)
}

/// Aborts an upload whose data cannot be trusted, so that no part of it is resumed.
async fn abandon(ctx: &Ctx, t: &Target, upload_id: &str) {
    if let Err(e) = ctx.bucket.abort(&t.key, upload_id).await {
        log::warn!("{}: aborting upload {upload_id}: {e}", t.key);
    }
    if let Err(e) = ctx.journal.upload_ended(upload_id) {
        log::warn!("{e}");
    }
    *crate::locks::lock(&t.upload) = None;
}

/// The upload to send parts to, and the parts S3 already holds that can be trusted.
async fn open_or_resume(
    ctx: &Ctx,
    t: &Target,
    want: Expect<'_>,
    part: u64,
) -> Result<(String, BTreeMap<u32, Held>), StreamError> {
    let existing = crate::locks::lock(&t.upload).clone();
    if let Some(id) = existing {
        match trusted_parts(ctx, t, &id, want, part).await {
            Ok(Some(held)) => return Ok((id, held)),
            Ok(None) => abandon(ctx, t, &id).await,
            Err(e) if e.kind == S3ErrorKind::NoSuchUpload => {
                ctx.journal.upload_ended(&id)?;
            }
            Err(e) => return Err(e.into()),
        }
    }
    ctx.journal.opening(&t.key)?;
    let id = ctx.bucket.create_upload(&t.key, &t.meta).await?;
    let rec = UploadRec {
        key: t.key.clone(),
        archive: want.archive.map(str::to_owned),
        tree: to_hex(want.tree),
        part_size: part,
        parts: BTreeMap::new(),
    };
    ctx.journal.upload_opened(&id, &rec)?;
    *crate::locks::lock(&t.upload) = Some(id.clone());
    Ok((id, BTreeMap::new()))
}

/// The parts of upload `id` that S3 holds and the journal vouches for; `None` when the
/// journal's record is for something else (then nothing of it can be used).
async fn trusted_parts(
    ctx: &Ctx,
    t: &Target,
    id: &str,
    want: Expect<'_>,
    part: u64,
) -> Result<Option<BTreeMap<u32, Held>>, S3Error> {
    let Some(rec) = ctx.journal.upload(id) else {
        return Ok(None);
    };
    let same = rec.key == t.key
        && rec.part_size == part
        && rec.tree == to_hex(want.tree)
        && rec.archive.as_deref() == want.archive;
    if !same {
        return Ok(None);
    }
    let mut held = BTreeMap::new();
    for p in ctx.bucket.list_parts(&t.key, id).await? {
        let Some((tree, sha)) = rec.parts.get(&p.number) else {
            continue;
        };
        let (start, end) = part_range(p.number, part, want.size);
        let good = p.number >= 1
            && p.number <= part_count(want.size, part)
            && p.size == end - start
            && p.sha256.as_deref() == Some(sha.as_str());
        if let (true, Some(tree)) = (good, from_hex(tree)) {
            held.insert(p.number, Held { info: p, tree });
        }
    }
    Ok(Some(held))
}

/// Fetches and sends every part not held yet; returns the bytes read from the source.
async fn send_parts(
    ctx: &Arc<Ctx>,
    src: &Source,
    t: &Target,
    upload_id: &str,
    size: u64,
    held: &mut BTreeMap<u32, Held>,
    progress: &AtomicU64,
) -> Result<u64, StreamError> {
    let part = part_size(size);
    let missing: Vec<u32> = (1..=part_count(size, part))
        .filter(|n| !held.contains_key(n))
        .collect();
    let Some(&first) = missing.first() else {
        return Ok(0);
    };
    let mut sending = Sending {
        ctx: ctx.clone(),
        key: t.key.clone(),
        upload_id: upload_id.to_owned(),
        tasks: JoinSet::new(),
        fetched: 0,
        sends: Arc::new(Semaphore::new(PART_TASKS)),
    };
    // The first part alone: its answer says whether the endpoint honours ranges.
    let (start, end) = part_range(first, part, size);
    let room = ctx.memory.reserve(end - start).await;
    match src {
        Source::Job(job) => match fetch_range(job, start, end).await? {
            Got::Whole(out) => {
                drop(room);
                return sequential(&mut sending, job, out, size, held, progress).await;
            }
            Got::Range(c) => {
                sending.fetched += end - start;
                sending.send(first, c, room);
            }
        },
        Source::File(path) => {
            let c = read_file(path.clone(), start, end).await?;
            sending.fetched += end - start;
            sending.send(first, c, room);
        }
    }
    // One task per part, at most HELD_PARTS of them: each waits for room in the budget, then
    // for one of PART_TASKS fetches, then (its fetch slot free for the next part) for one of
    // PART_TASKS sends.
    let fetches = Arc::new(Semaphore::new(PART_TASKS));
    for &n in &missing[1..] {
        while sending.tasks.len() >= HELD_PARTS {
            sending.settle_one(held, progress).await?;
        }
        let (start, end) = part_range(n, part, size);
        let src = src.clone();
        let memory = ctx.memory.clone();
        let ctx2 = ctx.clone();
        let (key, id) = (t.key.clone(), upload_id.to_owned());
        let (fetches, sends) = (fetches.clone(), sending.sends.clone());
        sending.tasks.spawn(async move {
            let room = memory.reserve(end - start).await;
            let c = {
                let _fetch = fetches.acquire().await.map_err(closed)?;
                read_range(&src, start, end, size).await?
            };
            let held = send_part(&ctx2, &sends, &key, &id, n, c, room).await?;
            Ok((held, end - start))
        });
    }
    while !sending.tasks.is_empty() {
        sending.settle_one(held, progress).await?;
    }
    Ok(sending.fetched)
}

/// Parts on their way to S3.
struct Sending {
    ctx: Arc<Ctx>,
    key: String,
    upload_id: String,
    /// Each ends with the part it sent and the bytes it read.
    tasks: JoinSet<Result<(Held, u64), StreamError>>,
    fetched: u64,
    /// One permit per UploadPart in flight.
    sends: Arc<Semaphore>,
}

impl Sending {
    /// Sends a part already read.
    fn send(&mut self, n: u32, c: Checked, room: Option<OwnedSemaphorePermit>) {
        let (ctx, key, id) = (self.ctx.clone(), self.key.clone(), self.upload_id.clone());
        let sends = self.sends.clone();
        self.tasks.spawn(async move {
            let held = send_part(&ctx, &sends, &key, &id, n, c, room).await?;
            Ok((held, 0))
        });
    }

    /// Waits for one part to be sent; the first failure stops the rest.
    async fn settle_one(
        &mut self,
        held: &mut BTreeMap<u32, Held>,
        progress: &AtomicU64,
    ) -> Result<(), StreamError> {
        let Some(ended) = self.tasks.join_next().await else {
            return Ok(());
        };
        let (h, read) = ended.map_err(|e| StreamError::Task(e.to_string()))??;
        self.fetched += read;
        progress.fetch_add(h.info.size, Ordering::Relaxed);
        held.insert(h.info.number, h);
        Ok(())
    }
}

/// Journals a verified part, then sends it once one of `sends` is free; its memory is free
/// once S3 has it.
async fn send_part(
    ctx: &Ctx,
    sends: &Semaphore,
    key: &str,
    upload_id: &str,
    n: u32,
    c: Checked,
    room: Option<OwnedSemaphorePermit>,
) -> Result<Held, StreamError> {
    let sha = b64(&c.sha256);
    let size = c.data.len() as u64;
    ctx.journal
        .part_sending(upload_id, n, &to_hex(&c.tree), &sha)?;
    let send = sends.acquire().await.map_err(closed)?;
    let etag = ctx
        .bucket
        .upload_part(key, upload_id, n, c.data, &sha)
        .await?;
    drop(send);
    drop(room);
    Ok(Held {
        info: PartInfo {
            number: n,
            etag,
            size,
            sha256: Some(sha),
        },
        tree: c.tree,
    })
}

/// Reads every part from one body holding the whole output, in order; parts S3 holds
/// already are read past, their bytes checked against what the journal says was sent.
async fn sequential(
    sending: &mut Sending,
    job: &JobRef,
    mut out: crate::glacier::JobOutput,
    size: u64,
    held: &mut BTreeMap<u32, Held>,
    progress: &AtomicU64,
) -> Result<u64, StreamError> {
    let part = part_size(size);
    for n in 1..=part_count(size, part) {
        let (start, end) = part_range(n, part, size);
        let room = sending.ctx.memory.reserve(end - start).await;
        let c = read_whole_part(&mut out.body, &job.job_id, end - start).await?;
        sending.fetched += end - start;
        match held.get(&n) {
            Some(h) if h.tree == c.tree => continue,
            Some(_) => {
                // S3 holds other bytes than the output has here: send these instead.
                if let Some(h) = held.remove(&n) {
                    progress.fetch_sub(h.info.size, Ordering::Relaxed);
                }
            }
            None => {}
        }
        while sending.tasks.len() >= PART_TASKS {
            sending.settle_one(held, progress).await?;
        }
        sending.send(n, c, room);
    }
    whole_ends(&mut out.body, &job.job_id).await?;
    while !sending.tasks.is_empty() {
        sending.settle_one(held, progress).await?;
    }
    Ok(sending.fetched)
}
