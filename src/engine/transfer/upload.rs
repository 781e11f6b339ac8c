//! The upload engine: puts one frozen snapshot file into a vault as exactly one archive.
//!
//! It owns how an upload is cut up and sent, not when or why: the caller's queue decides what
//! to upload, keeps the journal durable, and retries later what fails transiently. Here:
//! - **One call or many.** A snapshot of at most one part goes up in one UploadArchive; a larger
//!   one as a multipart upload whose part size is raised, if need be, to stay within 10,000
//!   parts (GLACIER-API.md §4).
//! - **Intents before calls.** Every creating call (UploadArchive, Initiate, Complete) is
//!   preceded by a journal entry and followed by one for its result, so a crash at any instant
//!   leaves a record the caller can settle (DESIGN.md §2). Parts need no intents: ListParts
//!   finds them, and re-sending one overwrites it.
//! - **Bounded memory, real parallelism.** The SDK holds each body in memory, so every body
//!   read takes permits from [`UploadLimits`], shared by all uploads of a mount; parts run as
//!   tokio tasks, so the client's hashing of each body (on the blocking pool) spreads over the
//!   cores, and files are read with `pread` on the blocking pool, never on a worker.
//! - **No second hashing pass** (DESIGN.md §2). The client hashes every body it sends, once
//!   (the tree hash for its header and the linear SHA-256 it signs with, in one pass; the SDK
//!   hashes nothing, see [`crate::glacier::aws`]), and Glacier checks the body against that
//!   tree hash, so the engine hashes nothing it sends. A part's
//!   hash is the one Glacier echoes for it, the archive's is combined from those, and Complete,
//!   which Glacier checks against the parts it holds, confirms the lot; an UploadArchive's is
//!   its echo. The snapshot is hashed here only where nothing else can vouch for it: parts an
//!   earlier attempt left are checked against it on resume; a body whose echo is missing or
//!   malformed is hashed after the fact; and when Complete refuses the combined hash (an echo
//!   that lied or was corrupted), every part is checked, once, as on resume, and the upload
//!   completed with the hashes verified here.
//! - **Resumable.** A recorded multipart upload is resumed from ListParts: parts Glacier has
//!   are checked against the snapshot, the rest are sent. An upload Glacier no longer knows
//!   (404) is started again from scratch.
//!
//! Retrying single calls is the client's job ([`crate::glacier::retry::Retrying`]); what
//! survives its retries comes back as an [`UploadError`] whose [`UploadError::is_transient`]
//! tells the caller whether trying the whole upload again later (resuming) can help.

use std::collections::HashMap;
use std::fs::File;
use std::future::Future;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use tokio::runtime::{Handle, RuntimeFlavor};
use tokio::sync::{AcquireError, OwnedSemaphorePermit, Semaphore};
use tokio::task::{JoinError, JoinSet};

use crate::codec::treehash::{self, combine_parts, from_hex, to_hex, Digest, MIB};
use crate::glacier::{ArchiveCreated, ErrorKind, GlacierClient, GlacierError, PartsListing};

/// Glacier's cap on the parts of one multipart upload.
pub const MAX_PARTS: u64 = 10_000;
/// The largest part size, and the largest UploadArchive body.
pub const MAX_PART_SIZE: u64 = 4096 * MIB;
/// The largest archive: 10,000 parts of 4 GiB.
pub const MAX_ARCHIVE_SIZE: u64 = MAX_PARTS * MAX_PART_SIZE;

/// What to upload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UploadSpec {
    pub vault: String,
    pub description: String,
    /// A frozen snapshot: nothing may modify it while an upload of it runs or can be resumed.
    pub file: PathBuf,
    /// The snapshot's size in bytes; more than zero.
    pub size: u64,
    /// The configured part size (a power-of-two MiB). Files of at most this size go up in one
    /// UploadArchive; larger ones in parts of [`effective_part_size`].
    pub part_size: u64,
}

/// Shared by all uploads of a mount: bounds the bodies held in memory, and so the requests in
/// flight. One permit stands for one body of up to `unit` bytes.
#[derive(Debug, Clone)]
pub struct UploadLimits {
    permits: Arc<Semaphore>,
    total: u32,
    unit: u64,
}

impl UploadLimits {
    /// `max(1, min(concurrency, memory_budget / part_size))` permits of `part_size` bytes each:
    /// the concurrency is lowered, never the part size, to keep part size × in flight within
    /// the budget (DESIGN.md §2, "Bounded memory").
    pub fn new(concurrency: usize, memory_budget: u64, part_size: u64) -> Self {
        let unit = part_size.max(1);
        let by_memory = usize::try_from(memory_budget / unit).unwrap_or(usize::MAX);
        let total = concurrency.min(by_memory).clamp(1, u32::MAX as usize);
        let total = u32::try_from(total).unwrap_or(u32::MAX);
        UploadLimits {
            permits: Arc::new(Semaphore::new(total as usize)),
            total,
            unit,
        }
    }

    /// How many bodies of `part_size` may be in memory (and in flight) at once.
    pub fn permits(&self) -> usize {
        self.total as usize
    }

    /// Permits a body of `len` bytes needs: one per started `unit`. A part size raised for a
    /// huge file takes several, so the memory bound holds; one larger than the whole budget
    /// takes them all (the SDK cannot send a body it does not hold).
    fn permits_for(&self, len: u64) -> u32 {
        let units = len.div_ceil(self.unit).max(1);
        u32::try_from(units).unwrap_or(u32::MAX).min(self.total)
    }

    /// Waits for the permits of a body of `len` bytes. Owned, so the wait can be held across
    /// loop turns (keeping its place in the semaphore's fair queue) and the permit can travel
    /// with the body into another task.
    fn acquire(&self, len: u64) -> Acquire {
        Box::pin(
            self.permits
                .clone()
                .acquire_many_owned(self.permits_for(len)),
        )
    }
}

type Acquire = Pin<Box<dyn Future<Output = Result<OwnedSemaphorePermit, AcquireError>> + Send>>;

/// Where an interrupted upload stands, as the journal recorded it.
///
/// An UploadArchive cut off before its reply was recorded is not resumable: it is settled by
/// the next inventory (DESIGN.md §2), not here. Nor is an Initiate cut off before
/// [`UploadJournal::initiated`]: the caller matches ListMultipartUploads against its intents.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Resume {
    /// Nothing was sent, or nothing that can be continued.
    Fresh,
    /// A multipart upload was initiated (and maybe partly sent, maybe even completed).
    Multipart { upload_id: String, part_size: u64 },
}

/// Intents: [`upload`] calls these before and after each creating call, so a crash at any
/// instant can be settled (DESIGN.md §2, "Intents before calls"). Each must return only once
/// what it records is durable; an error stops the upload before the call it announces.
///
/// They are called from async code; on a multi-threaded runtime the engine wraps them in
/// `block_in_place`, so a short synchronous wait (e.g. for the catalog's writer thread) is fine.
pub trait UploadJournal: Send + Sync {
    /// About to send UploadArchive.
    fn before_single(&self) -> Result<(), String>;
    /// About to send InitiateMultipartUpload with this part size.
    fn before_initiate(&self, part_size: u64) -> Result<(), String>;
    /// Glacier initiated the upload: from now on it can be resumed.
    fn initiated(&self, upload_id: &str, part_size: u64) -> Result<(), String>;
    /// About to send CompleteMultipartUpload (idempotent, so a restart repeats it).
    fn before_complete(&self, upload_id: &str, size: u64, tree_hash: &Digest)
        -> Result<(), String>;
    /// The archive exists.
    fn created(&self, archive_id: &str, tree_hash: &Digest) -> Result<(), String>;
    /// The recorded multipart upload is gone (404) or not ours to continue: starting over.
    fn restarted(&self) -> Result<(), String>;
}

/// The archive an upload created.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Uploaded {
    pub archive_id: String,
    pub tree_hash: Digest,
}

/// Why an upload failed. Whatever the failure, the journal already says where things stand.
#[derive(Debug, thiserror::Error)]
pub enum UploadError {
    #[error(transparent)]
    Glacier(#[from] GlacierError),
    #[error("reading the snapshot: {0}")]
    Io(#[from] io::Error),
    #[error("journal: {0}")]
    Journal(String),
    /// Glacier and the snapshot disagree on a tree hash, and trying again did not settle it: a
    /// part echoed wrong twice, or a completed archive whose reported hash is not the
    /// snapshot's.
    #[error("{what}: Glacier reports tree hash {theirs}, ours is {ours}")]
    ChecksumMismatch {
        what: String,
        ours: String,
        theirs: String,
    },
    /// The snapshot does not have the size the upload is for: it is not frozen after all.
    #[error("snapshot {path} changed: {actual} bytes, the upload is for {expected}")]
    Changed {
        path: PathBuf,
        expected: u64,
        actual: u64,
    },
    #[error("{size} bytes is more than one archive can hold ({MAX_ARCHIVE_SIZE})")]
    TooLarge { size: u64 },
    #[error("invalid upload: {0}")]
    Invalid(String),
    /// The runtime is shutting down under the upload.
    #[error("upload cancelled: the runtime is shutting down")]
    Cancelled,
}

impl UploadError {
    /// Whether trying the whole upload again later (resuming through the journal) may succeed.
    /// A journal that cannot write now may well write later, and nothing was sent after the
    /// failed entry. A changed snapshot needs a new snapshot, not a retry.
    pub fn is_transient(&self) -> bool {
        match self {
            UploadError::Glacier(e) => e.is_transient(),
            UploadError::Journal(_) | UploadError::Cancelled => true,
            UploadError::Io(_)
            | UploadError::ChecksumMismatch { .. }
            | UploadError::Changed { .. }
            | UploadError::TooLarge { .. }
            | UploadError::Invalid(_) => false,
        }
    }
}

/// The part size actually used for `size` bytes: `configured` rounded up to a power-of-two MiB
/// (at least 1 MiB), then doubled until 10,000 parts hold the file, up to 4 GiB.
pub fn effective_part_size(size: u64, configured: u64) -> u64 {
    let mut part = configured
        .clamp(MIB, MAX_PART_SIZE)
        .checked_next_power_of_two()
        .unwrap_or(MAX_PART_SIZE)
        .min(MAX_PART_SIZE);
    while part < MAX_PART_SIZE && size.div_ceil(part) > MAX_PARTS {
        part *= 2;
    }
    part
}

/// Uploads `spec.file` as one archive and returns it.
///
/// `resume` is what the journal recorded of an earlier attempt. `progress` grows by each part's
/// length as Glacier confirms it (parts found already there on resume included; the whole size
/// at the end of a single upload); the caller zeroes it before each call if it wants one
/// attempt's count. Dropping the returned future stops the upload at once (in-flight parts are
/// aborted) and leaves nothing the journal does not describe.
///
/// The client is an `Arc` because parts run as tasks of their own.
pub async fn upload(
    client: &Arc<dyn GlacierClient>,
    spec: &UploadSpec,
    resume: Resume,
    limits: &UploadLimits,
    journal: &dyn UploadJournal,
    progress: &AtomicU64,
) -> Result<Uploaded, UploadError> {
    if spec.size == 0 {
        return Err(UploadError::Invalid(
            "an archive holds at least one byte".into(),
        ));
    }
    if spec.size > MAX_ARCHIVE_SIZE {
        return Err(UploadError::TooLarge { size: spec.size });
    }
    let snapshot = {
        let (path, size) = (spec.file.clone(), spec.size);
        Arc::new(blocking(move || Snapshot::open(path, size)).await?)
    };
    let up = Upload {
        client,
        spec,
        snapshot,
        limits,
        journal,
        progress,
    };
    match resume {
        Resume::Fresh if spec.size <= spec.part_size.min(MAX_PART_SIZE) => up.single().await,
        Resume::Fresh => up.multipart(None).await,
        Resume::Multipart {
            upload_id,
            part_size,
        } => up.multipart(Some((upload_id, part_size))).await,
    }
}

/// The open snapshot, shared by the tasks that read its parts.
struct Snapshot {
    file: File,
    path: PathBuf,
    size: u64,
}

impl Snapshot {
    fn open(path: PathBuf, size: u64) -> Result<Snapshot, UploadError> {
        let file = File::open(&path)?;
        let snapshot = Snapshot { file, path, size };
        snapshot.check_size()?;
        Ok(snapshot)
    }

    /// The cheap check that the snapshot is still what the upload is for. It asks the open
    /// file, which is what the bytes were read from.
    fn check_size(&self) -> Result<(), UploadError> {
        let actual = self.file.metadata()?.len();
        if actual == self.size {
            Ok(())
        } else {
            Err(self.changed(actual))
        }
    }

    fn changed(&self, actual: u64) -> UploadError {
        UploadError::Changed {
            path: self.path.clone(),
            expected: self.size,
            actual,
        }
    }

    /// Bytes `[start, start + len)`, with `pread`: tasks share the file without a cursor.
    /// `reuse` is a buffer an earlier body is done with: refilling it spares the page faults
    /// (and zeroing) of a fresh allocation, a good part of what reading costs.
    fn read(&self, start: u64, len: u64, reuse: Option<BytesMut>) -> Result<BytesMut, UploadError> {
        let len = usize::try_from(len)
            .map_err(|_| UploadError::Invalid(format!("a body of {len} bytes")))?;
        let mut buf = match reuse {
            Some(mut buf) if buf.len() >= len => {
                buf.truncate(len);
                buf
            }
            Some(mut buf) => {
                buf.resize(len, 0);
                buf
            }
            None => BytesMut::zeroed(len),
        };
        match self.file.read_exact_at(&mut buf, start) {
            Ok(()) => Ok(buf),
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => {
                let actual = self.file.metadata()?.len();
                Err(self.changed(actual))
            }
            Err(e) => Err(e.into()),
        }
    }
}

/// Runs file I/O and hashing on the blocking pool, never on a runtime worker.
async fn blocking<T, F>(f: F) -> Result<T, UploadError>
where
    T: Send + 'static,
    F: FnOnce() -> Result<T, UploadError> + Send + 'static,
{
    joined(tokio::task::spawn_blocking(f).await)?
}

/// A finished task's result; a panic inside it is re-raised here, where it belongs.
fn joined<T>(r: Result<T, JoinError>) -> Result<T, UploadError> {
    match r {
        Ok(v) => Ok(v),
        Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
        Err(_) => Err(UploadError::Cancelled),
    }
}

/// Makes a journal entry. The journal is synchronous (it returns once the entry is durable), so
/// on a multi-threaded runtime the wait is moved off the worker's task queue.
fn record(what: &str, entry: impl FnOnce() -> Result<(), String>) -> Result<(), UploadError> {
    let multi_thread = Handle::try_current()
        .map(|h| h.runtime_flavor() == RuntimeFlavor::MultiThread)
        .unwrap_or(false);
    let result = if multi_thread {
        tokio::task::block_in_place(entry)
    } else {
        entry()
    };
    result.map_err(|e| UploadError::Journal(format!("{what}: {e}")))
}

/// Checks Glacier's echo of a tree hash against ours; no echo is no contradiction.
fn echo_matches(echoed: Option<&str>, ours: &Digest) -> bool {
    echoed.map_or(true, |h| from_hex(h) == Some(*ours))
}

fn mismatch(what: String, ours: &Digest, theirs: Option<&str>) -> UploadError {
    UploadError::ChecksumMismatch {
        what,
        ours: to_hex(ours),
        theirs: theirs.unwrap_or_default().to_owned(),
    }
}

/// The archive hash of parts of `part_size`.
fn combined(part_size: u64, hashes: &[Digest]) -> Result<Digest, UploadError> {
    combine_parts(part_size, hashes).ok_or_else(|| {
        UploadError::Invalid(format!("part size {part_size} is not a power-of-two MiB"))
    })
}

/// The tree hash Glacier echoed for `body`, which it checked against the body; when the echo
/// is missing or malformed, the body's own, computed here.
async fn echoed_or_hashed(
    echoed: Option<&str>,
    body: Bytes,
    what: impl FnOnce() -> String,
) -> Result<Digest, UploadError> {
    if let Some(digest) = echoed.and_then(from_hex) {
        return Ok(digest);
    }
    log::debug!(
        "{}: no usable tree hash echoed ({echoed:?}); hashing the body here",
        what()
    );
    blocking(move || Ok(treehash::tree_hash(&body))).await
}

/// One call of [`upload`], its arguments gathered.
struct Upload<'a> {
    client: &'a Arc<dyn GlacierClient>,
    spec: &'a UploadSpec,
    snapshot: Arc<Snapshot>,
    limits: &'a UploadLimits,
    journal: &'a dyn UploadJournal,
    progress: &'a AtomicU64,
}

/// Why a multipart attempt stopped: failed for good, or its upload is gone (or not one this
/// snapshot can finish) and a fresh one may succeed; the error says why.
enum Stop {
    Fail(UploadError),
    Gone(UploadError),
}

/// A recorded upload this snapshot cannot finish.
fn unfit(why: String) -> Stop {
    Stop::Gone(UploadError::Invalid(why))
}

impl From<UploadError> for Stop {
    fn from(e: UploadError) -> Self {
        Stop::Fail(e)
    }
}

impl From<GlacierError> for Stop {
    fn from(e: GlacierError) -> Self {
        Stop::Fail(e.into())
    }
}

impl Upload<'_> {
    async fn single(&self) -> Result<Uploaded, UploadError> {
        let (spec, size) = (self.spec, self.snapshot.size);
        let permit = self
            .limits
            .acquire(size)
            .await
            .map_err(|_| UploadError::Cancelled)?;
        let snapshot = self.snapshot.clone();
        let body = blocking(move || {
            let data = snapshot.read(0, snapshot.size, None)?;
            snapshot.check_size()?;
            Ok(data.freeze())
        })
        .await?;
        record("before UploadArchive", || self.journal.before_single())?;
        let created = self
            .client
            .upload_archive(&spec.vault, &spec.description, body.clone(), None)
            .await?;
        // Glacier checked the body against the tree hash the client computed from it. The archive
        // exists either way; left unrecorded, the open intent is settled against the next
        // inventory.
        let what = || format!("archive {}", created.archive_id);
        let digest = echoed_or_hashed(created.tree_hash.as_deref(), body, what).await?;
        // The SDK has let go of the body, and so have we.
        drop(permit);
        record("archive created", || {
            self.journal.created(&created.archive_id, &digest)
        })?;
        self.progress.fetch_add(size, Ordering::Relaxed);
        log::info!(
            "uploaded {} ({size} bytes) to {} as archive {}",
            self.snapshot.path.display(),
            spec.vault,
            created.archive_id
        );
        Ok(Uploaded {
            archive_id: created.archive_id,
            tree_hash: digest,
        })
    }

    /// A multipart upload, fresh (`None`) or resumed. A resumed upload Glacier has forgotten
    /// (reclaimed after 24 h idle, never initiated, or already completed: ListParts of a
    /// completed upload is a 404 too) is started again from scratch, once. That last case makes
    /// a second archive; the caller settles it against the inventory, where the journal's
    /// `before_complete` shows the first may exist.
    async fn multipart(&self, resume: Option<(String, u64)>) -> Result<Uploaded, UploadError> {
        let mut resume = resume;
        loop {
            let resumed = resume.is_some();
            let attempt = match resume.take() {
                Some((upload_id, part_size)) => self.resumed(upload_id, part_size).await,
                None => self.initiate().await,
            };
            let mut added = 0;
            let result = match attempt {
                Ok((upload_id, part_size, listed)) => {
                    self.send_and_complete(&upload_id, part_size, listed, &mut added)
                        .await
                }
                Err(stop) => Err(stop),
            };
            match result {
                Ok(done) => return Ok(done),
                Err(Stop::Fail(e)) => return Err(e),
                // A 404 on an upload initiated by this very call is not a forgotten upload
                // (the vault may be gone): no second restart.
                Err(Stop::Gone(e)) if !resumed => return Err(e),
                Err(Stop::Gone(why)) => {
                    log::warn!(
                        "upload of {} to {}: {why}; starting over",
                        self.snapshot.path.display(),
                        self.spec.vault
                    );
                    // Those parts went to an upload that no longer counts.
                    self.progress.fetch_sub(added, Ordering::Relaxed);
                    record("restart", || self.journal.restarted())?;
                }
            }
        }
    }

    async fn initiate(&self) -> Result<(String, u64, HashMap<u64, Digest>), Stop> {
        let spec = self.spec;
        let part_size = effective_part_size(self.snapshot.size, spec.part_size);
        record("before InitiateMultipartUpload", || {
            self.journal.before_initiate(part_size)
        })?;
        let upload_id = self
            .client
            .initiate_multipart(&spec.vault, &spec.description, part_size)
            .await?;
        // If this entry fails, the open intent is matched against ListMultipartUploads.
        record("multipart upload initiated", || {
            self.journal.initiated(&upload_id, part_size)
        })?;
        log::debug!(
            "initiated upload {upload_id} of {} to {} in parts of {part_size}",
            self.snapshot.path.display(),
            spec.vault
        );
        Ok((upload_id, part_size, HashMap::new()))
    }

    /// The parts Glacier already has of a recorded upload, by start offset, or `Gone` when the
    /// upload cannot be continued.
    async fn resumed(
        &self,
        upload_id: String,
        part_size: u64,
    ) -> Result<(String, u64, HashMap<u64, Digest>), Stop> {
        let size = self.snapshot.size;
        if !(MIB..=MAX_PART_SIZE).contains(&part_size)
            || !part_size.is_power_of_two()
            || size.div_ceil(part_size) > MAX_PARTS
        {
            return Err(unfit(format!(
                "recorded part size {part_size} cannot carry {size} bytes"
            )));
        }
        let listing = match self.client.list_parts(&self.spec.vault, &upload_id).await {
            Ok(listing) => listing,
            Err(e) if e.kind == ErrorKind::NotFound => return Err(Stop::Gone(e.into())),
            Err(e) => return Err(e.into()),
        };
        let listed = self.usable_parts(&upload_id, part_size, &listing)?;
        log::debug!(
            "resuming upload {upload_id}: Glacier has {} of {} parts",
            listed.len(),
            size.div_ceil(part_size)
        );
        Ok((upload_id, part_size, listed))
    }

    /// Sorts what ListParts reports. An upload whose description, part size or layout does not
    /// fit this snapshot is not one this upload can continue (Complete would fail or make the
    /// wrong archive), so it is left alone and a fresh one started; the caller's settlement
    /// aborts uploads it no longer refers to. A part of the wrong length is sent again.
    fn usable_parts(
        &self,
        upload_id: &str,
        part_size: u64,
        listing: &PartsListing,
    ) -> Result<HashMap<u64, Digest>, Stop> {
        let size = self.snapshot.size;
        if listing.part_size != part_size {
            return Err(unfit(format!(
                "upload {upload_id} has parts of {}, the journal says {part_size}",
                listing.part_size
            )));
        }
        if let Some(d) = listing.description.as_deref() {
            if d != self.spec.description {
                return Err(unfit(format!(
                    "upload {upload_id} is for {d:?}, not {:?}",
                    self.spec.description
                )));
            }
        }
        let mut listed = HashMap::new();
        for part in &listing.parts {
            if part.start % part_size != 0 || part.start >= size {
                return Err(unfit(format!(
                    "upload {upload_id} has a part at {} that does not fit {size} bytes",
                    part.start
                )));
            }
            let expected_end = (part.start + part_size).min(size) - 1;
            match from_hex(&part.tree_hash) {
                Some(digest) if part.end_inclusive == expected_end => {
                    listed.insert(part.start, digest);
                }
                _ => {}
            }
        }
        Ok(listed)
    }

    /// Sends every part Glacier lacks (checking those it has), then completes the upload with
    /// the archive hash combined from the part hashes. If Glacier refuses that hash, one of
    /// the echoes it was combined from was wrong: every part is then checked against the
    /// snapshot, once, and the upload completed with hashes of our own.
    async fn send_and_complete(
        &self,
        upload_id: &str,
        part_size: u64,
        listed: HashMap<u64, Digest>,
        added: &mut u64,
    ) -> Result<Uploaded, Stop> {
        let hashes = self
            .send_parts(upload_id, part_size, listed, Pass::Send, added)
            .await?;
        let digest = combined(part_size, &hashes)?;
        match self.complete(upload_id, digest).await {
            Ok(created) => {
                self.finish(upload_id, part_size, created, digest, false)
                    .await
            }
            Err(Stop::Fail(UploadError::Glacier(e))) if e.kind == ErrorKind::InvalidParameter => {
                log::warn!("upload {upload_id}: {e}; checking every part against the snapshot");
                self.verify_and_complete(upload_id, part_size, added).await
            }
            Err(stop) => Err(stop),
        }
    }

    /// The recovery of a refused Complete: what Glacier lists is checked against the snapshot
    /// as on resume, parts that differ (or are missing) are sent again with our hash, and the
    /// upload is completed with the hashes verified here. A second refusal is final.
    async fn verify_and_complete(
        &self,
        upload_id: &str,
        part_size: u64,
        added: &mut u64,
    ) -> Result<Uploaded, Stop> {
        let listing = match self.client.list_parts(&self.spec.vault, upload_id).await {
            Ok(listing) => listing,
            Err(e) if e.kind == ErrorKind::NotFound => return Err(Stop::Gone(e.into())),
            Err(e) => return Err(e.into()),
        };
        let listed = self.usable_parts(upload_id, part_size, &listing)?;
        let hashes = self
            .send_parts(upload_id, part_size, listed, Pass::Verify, added)
            .await?;
        let digest = combined(part_size, &hashes)?;
        let created = self.complete(upload_id, digest).await?;
        self.finish(upload_id, part_size, created, digest, true)
            .await
    }

    /// CompleteMultipartUpload with `digest`, its intent recorded first.
    async fn complete(&self, upload_id: &str, digest: Digest) -> Result<ArchiveCreated, Stop> {
        let size = self.snapshot.size;
        // The last moment a change can still keep a wrong archive from being made.
        self.snapshot.check_size()?;
        record("before CompleteMultipartUpload", || {
            self.journal.before_complete(upload_id, size, &digest)
        })?;
        match self
            .client
            .complete_multipart(&self.spec.vault, upload_id, size, digest)
            .await
        {
            Ok(created) => Ok(created),
            Err(e) if e.kind == ErrorKind::NotFound => Err(Stop::Gone(e.into())),
            Err(e) => Err(e.into()),
        }
    }

    /// Records the archive Complete made. Glacier accepted `digest`, so an echo that differs
    /// is a contradiction only the snapshot can settle: unless `digest` was verified here
    /// already, the snapshot is hashed, and the archive is taken if either hash is its own.
    async fn finish(
        &self,
        upload_id: &str,
        part_size: u64,
        created: ArchiveCreated,
        digest: Digest,
        verified: bool,
    ) -> Result<Uploaded, Stop> {
        let (spec, size) = (self.spec, self.snapshot.size);
        let echoed = created.tree_hash.as_deref();
        let digest = if echo_matches(echoed, &digest) {
            digest
        } else {
            let theirs = echoed.unwrap_or_default();
            log::warn!(
                "upload {upload_id}: Glacier accepted tree hash {} for archive {} but reports \
                 {theirs}; hashing the snapshot",
                to_hex(&digest),
                created.archive_id
            );
            let local = if verified {
                digest
            } else {
                self.hash_snapshot(part_size).await?
            };
            if local != digest && from_hex(theirs) != Some(local) {
                let what = format!("archive {} (upload {upload_id})", created.archive_id);
                return Err(mismatch(what, &local, echoed).into());
            }
            local
        };
        record("archive created", || {
            self.journal.created(&created.archive_id, &digest)
        })?;
        log::info!(
            "uploaded {} ({size} bytes, {} parts) to {} as archive {}",
            self.snapshot.path.display(),
            size.div_ceil(part_size),
            spec.vault,
            created.archive_id
        );
        Ok(Uploaded {
            archive_id: created.archive_id,
            tree_hash: digest,
        })
    }

    /// The snapshot's tree hash, part by part within the memory budget.
    async fn hash_snapshot(&self, part_size: u64) -> Result<Digest, UploadError> {
        let size = self.snapshot.size;
        let mut hashes = Vec::new();
        for start in (0..size).step_by(usize::try_from(part_size).unwrap_or(usize::MAX)) {
            let len = part_size.min(size - start);
            let permit = self
                .limits
                .acquire(len)
                .await
                .map_err(|_| UploadError::Cancelled)?;
            let snapshot = self.snapshot.clone();
            let digest = blocking(move || {
                let data = snapshot.read(start, len, None)?;
                Ok(treehash::tree_hash(&data))
            })
            .await?;
            drop(permit);
            hashes.push(digest);
        }
        combined(part_size, &hashes)
    }

    /// Runs one task per part, started in order as permits come free, and returns the part
    /// hashes in order. The first failure returns at once; dropping the set aborts the rest.
    ///
    /// `listed` holds the hashes Glacier lists for parts it has: those parts are checked
    /// against the snapshot. The others are sent and take Glacier's echo as their hash
    /// ([`Pass::Send`]), or are hashed here first ([`Pass::Verify`]).
    async fn send_parts(
        &self,
        upload_id: &str,
        part_size: u64,
        mut listed: HashMap<u64, Digest>,
        pass: Pass,
        added: &mut u64,
    ) -> Result<Vec<Digest>, Stop> {
        let size = self.snapshot.size;
        let count = usize::try_from(size.div_ceil(part_size))
            .map_err(|_| UploadError::TooLarge { size })?;
        let ctx = Arc::new(PartCtx {
            client: self.client.clone(),
            vault: self.spec.vault.clone(),
            upload_id: upload_id.to_owned(),
            snapshot: self.snapshot.clone(),
        });
        let part = |index: usize| {
            let start = index as u64 * part_size;
            (start, part_size.min(size - start))
        };
        let mut hashes: Vec<Option<Digest>> = vec![None; count];
        let mut tasks = JoinSet::new();
        let mut next = 0;
        let mut waiting: Option<Acquire> = None;
        // The permit for the next part, and maybe a finished part's buffer to read it into.
        let mut granted: Option<(Result<OwnedSemaphorePermit, AcquireError>, Option<BytesMut>)> =
            None;
        loop {
            if let Some((permit, buffer)) = granted.take() {
                let permit = permit.map_err(|_| UploadError::Cancelled)?;
                let (start, len) = part(next);
                let check = match (listed.remove(&start), pass) {
                    (Some(theirs), _) => Check::Listed(theirs),
                    (None, Pass::Send) => Check::Echo,
                    (None, Pass::Verify) => Check::Missing,
                };
                let job = PartJob {
                    index: next,
                    start,
                    len,
                    check,
                };
                tasks.spawn(run_part(ctx.clone(), job, permit, buffer));
                next += 1;
            }
            if waiting.is_none() && next < count {
                waiting = Some(self.limits.acquire(part(next).1));
            }
            tokio::select! {
                // Results first: a failure should stop the upload before more parts start.
                biased;
                Some(finished) = tasks.join_next() => {
                    let (outcome, permit, buffer) = joined(finished)?;
                    let done: PartDone = outcome?;
                    hashes[done.index] = Some(done.digest);
                    // A verifying pass goes over parts this call has counted already.
                    if pass == Pass::Send {
                        self.progress.fetch_add(done.len, Ordering::Relaxed);
                        *added += done.len;
                    }
                    drop(permit);
                    // The buffer is kept only for a part that can start at once (the permit
                    // just freed may have gone to it): a buffer kept while waiting for a
                    // permit would hold memory the budget gives to whoever has the permit.
                    if buffer.is_some() {
                        if let Some(permit) = permit_now(&mut waiting).await {
                            granted = Some((permit, buffer));
                        }
                    }
                }
                permit = permit_of(&mut waiting), if waiting.is_some() => {
                    waiting = None;
                    granted = Some((permit, None));
                }
                else => break,
            }
        }
        hashes
            .into_iter()
            .collect::<Option<Vec<_>>>()
            .ok_or_else(|| UploadError::Invalid("a part was never sent".into()).into())
    }
}

async fn permit_of(waiting: &mut Option<Acquire>) -> Result<OwnedSemaphorePermit, AcquireError> {
    match waiting {
        Some(acquire) => acquire.await,
        None => std::future::pending().await,
    }
}

/// The permit `waiting` has been granted already, if it has, without waiting for it.
async fn permit_now(
    waiting: &mut Option<Acquire>,
) -> Option<Result<OwnedSemaphorePermit, AcquireError>> {
    waiting.as_ref()?;
    let now = tokio::select! {
        biased;
        permit = permit_of(waiting) => Some(permit),
        () = std::future::ready(()) => None,
    };
    if now.is_some() {
        *waiting = None;
    }
    now
}

/// What every part task of one upload shares.
struct PartCtx {
    client: Arc<dyn GlacierClient>,
    vault: String,
    upload_id: String,
    snapshot: Arc<Snapshot>,
}

struct PartJob {
    index: usize,
    start: u64,
    len: u64,
    check: Check,
}

/// How [`Upload::send_parts`] treats the parts Glacier does not list.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Pass {
    /// Sent as they are, with Glacier's echo as their hash: the normal path.
    Send,
    /// Hashed here, then sent with that hash: recovering from a refused Complete.
    Verify,
}

/// Where a part's hash comes from.
enum Check {
    /// Glacier lists the part with this hash: it is checked against the snapshot, and sent
    /// again (with our hash) if they differ.
    Listed(Digest),
    /// The part is sent without a hash (the client computes one) and Glacier's echo is its hash.
    Echo,
    /// The part is hashed here and sent with that hash, which Glacier must echo.
    Missing,
}

struct PartDone {
    index: usize,
    digest: Digest,
    len: u64,
}

/// Reads one part (into `buffer`, when a finished part left one), then sends it unless
/// Glacier already has exactly these bytes. A part is hashed here only when it must be checked
/// against what Glacier lists or has said; the normal path leaves hashing to the client and
/// takes Glacier's echo.
///
/// The permit travels with the body: into the blocking read (so an aborted task still counts
/// the buffer being filled), and back out with the outcome, so it is released only once
/// [`Upload::send_parts`] has seen that outcome: a failure stops the upload before the freed
/// permit can start another part. So does the body's buffer, once the client is done with it.
async fn run_part(
    ctx: Arc<PartCtx>,
    job: PartJob,
    permit: OwnedSemaphorePermit,
    buffer: Option<BytesMut>,
) -> PartOutcome {
    let snapshot = ctx.snapshot.clone();
    let (start, len) = (job.start, job.len);
    let hash_here = !matches!(job.check, Check::Echo);
    let read = tokio::task::spawn_blocking(move || {
        let body = snapshot.read(start, len, buffer).map(|data| {
            let digest = hash_here.then(|| treehash::tree_hash(&data));
            (data.freeze(), digest)
        });
        (body, permit)
    })
    .await;
    let (read, permit) = match joined(read) {
        Ok(read) => read,
        Err(e) => return (Err(e.into()), None, None),
    };
    let (body, ours) = match read {
        Ok(read) => read,
        Err(e) => return (Err(e.into()), Some(permit), None),
    };
    let outcome = async {
        let digest = match (job.check, ours) {
            (Check::Listed(theirs), Some(ours)) if theirs == ours => ours,
            (Check::Listed(theirs), Some(ours)) => {
                log::warn!(
                    "upload {}: the part at {start} differs from the snapshot ({} there, {} \
                     here); sending it again",
                    ctx.upload_id,
                    to_hex(&theirs),
                    to_hex(&ours)
                );
                send_checked(&ctx, start, &body, &ours).await?;
                ours
            }
            (Check::Missing, Some(ours)) => {
                send_checked(&ctx, start, &body, &ours).await?;
                ours
            }
            // (Nothing hashed here only for `Check::Echo`.)
            (Check::Echo, _) | (_, None) => send_trusting_echo(&ctx, start, &body).await?,
        };
        Ok(PartDone {
            index: job.index,
            digest,
            len,
        })
    }
    .await;
    // The client has dropped its copies of the body by now; if it kept one, no reuse.
    (outcome, Some(permit), body.try_into_mut().ok())
}

/// What a part task hands back: its outcome, its permit, and its buffer for the next part.
type PartOutcome = (
    Result<PartDone, Stop>,
    Option<OwnedSemaphorePermit>,
    Option<BytesMut>,
);

/// One UploadPart; `digest` `None` lets the client compute the tree-hash header. Returns the
/// echo.
async fn send_part(
    ctx: &PartCtx,
    start: u64,
    body: Bytes,
    digest: Option<Digest>,
) -> Result<Option<String>, Stop> {
    match ctx
        .client
        .upload_part(&ctx.vault, &ctx.upload_id, start, body, digest)
        .await
    {
        Ok(echoed) => Ok(echoed),
        Err(e) if e.kind == ErrorKind::NotFound => Err(Stop::Gone(e.into())),
        Err(e) => Err(e.into()),
    }
}

/// Sends one part without hashing it, and returns the hash Glacier echoes (checked by Glacier
/// against the body). A wrong echo shows later, when Complete refuses the combined hash.
async fn send_trusting_echo(ctx: &PartCtx, start: u64, body: &Bytes) -> Result<Digest, Stop> {
    let echoed = send_part(ctx, start, body.clone(), None).await?;
    let what = || format!("upload {}, part at {start}", ctx.upload_id);
    Ok(echoed_or_hashed(echoed.as_deref(), body.clone(), what).await?)
}

/// Sends one part with our hash of it, and once more if Glacier echoes another (re-sending a
/// range overwrites it).
async fn send_checked(
    ctx: &PartCtx,
    start: u64,
    body: &Bytes,
    digest: &Digest,
) -> Result<(), Stop> {
    let mut first_echo = None;
    for _ in 0..2 {
        let echoed = send_part(ctx, start, body.clone(), Some(*digest)).await?;
        if echo_matches(echoed.as_deref(), digest) {
            return Ok(());
        }
        log::warn!(
            "upload {}: Glacier echoed {} for the part at {start}, ours is {}",
            ctx.upload_id,
            echoed.as_deref().unwrap_or_default(),
            to_hex(digest)
        );
        first_echo = echoed;
    }
    let what = format!("part at {start} of upload {}", ctx.upload_id);
    Err(mismatch(what, digest, first_echo.as_deref()).into())
}

#[cfg(test)]
mod tests {
    use super::*;

    const GIB: u64 = 1024 * MIB;

    #[test]
    fn part_size_is_raised_to_fit_ten_thousand_parts() {
        assert_eq!(effective_part_size(1, MIB), MIB);
        assert_eq!(effective_part_size(10_000 * MIB, MIB), MIB);
        assert_eq!(effective_part_size(10_000 * MIB + 1, MIB), 2 * MIB);
        assert_eq!(effective_part_size(20_000 * MIB + 1, MIB), 4 * MIB);
        assert_eq!(effective_part_size(160_000 * MIB, 16 * MIB), 16 * MIB);
        assert_eq!(effective_part_size(160_000 * MIB + 1, 16 * MIB), 32 * MIB);
        // Never below the configured size, whatever the file.
        assert_eq!(effective_part_size(1, 64 * MIB), 64 * MIB);
    }

    #[test]
    fn part_size_is_capped_at_four_gib() {
        assert_eq!(effective_part_size(MAX_ARCHIVE_SIZE, MIB), 4 * GIB);
        assert_eq!(effective_part_size(MAX_ARCHIVE_SIZE - 1, MIB), 4 * GIB);
        assert_eq!(effective_part_size(u64::MAX, MIB), 4 * GIB);
        assert_eq!(effective_part_size(1, 8 * GIB), 4 * GIB);
        assert_eq!(effective_part_size(1, u64::MAX), 4 * GIB);
        // 10,000 × 2 GiB is exactly the limit of 2 GiB parts.
        assert_eq!(effective_part_size(10_000 * 2 * GIB, MIB), 2 * GIB);
        assert_eq!(effective_part_size(10_000 * 2 * GIB + 1, MIB), 4 * GIB);
    }

    #[test]
    fn odd_configured_sizes_become_powers_of_two_mib() {
        assert_eq!(effective_part_size(1, 0), MIB);
        assert_eq!(effective_part_size(1, 1), MIB);
        assert_eq!(effective_part_size(1, 3 * MIB), 4 * MIB);
        assert_eq!(effective_part_size(1, 5 * MIB + 1), 8 * MIB);
    }

    #[test]
    fn limits_follow_the_memory_budget() {
        assert_eq!(UploadLimits::new(4, 512 * MIB, 16 * MIB).permits(), 4);
        assert_eq!(UploadLimits::new(8, 64 * MIB, 16 * MIB).permits(), 4);
        assert_eq!(UploadLimits::new(8, 20 * MIB, 16 * MIB).permits(), 1);
        assert_eq!(UploadLimits::new(8, 0, 16 * MIB).permits(), 1);
        assert_eq!(UploadLimits::new(0, 512 * MIB, 16 * MIB).permits(), 1);
        assert_eq!(UploadLimits::new(4, 512 * MIB, 0).permits(), 4);
    }

    #[test]
    fn a_body_takes_a_permit_per_started_unit() {
        let limits = UploadLimits::new(8, 128 * MIB, 16 * MIB);
        assert_eq!(limits.permits_for(1), 1);
        assert_eq!(limits.permits_for(16 * MIB), 1);
        assert_eq!(limits.permits_for(16 * MIB + 1), 2);
        assert_eq!(limits.permits_for(64 * MIB), 4);
        // More than the whole budget: all of it, never a wait that cannot end.
        assert_eq!(limits.permits_for(4 * GIB), 8);
    }

    #[test]
    fn errors_say_whether_to_try_again() {
        let transient = GlacierError::new("UploadMultipartPart", ErrorKind::Transient, "slow down");
        assert!(UploadError::Glacier(transient).is_transient());
        let gone = GlacierError::new("ListParts", ErrorKind::NotFound, "no such upload");
        assert!(!UploadError::Glacier(gone).is_transient());
        assert!(UploadError::Journal("database is locked".into()).is_transient());
        let changed = UploadError::Changed {
            path: "/x".into(),
            expected: 1,
            actual: 2,
        };
        assert!(!changed.is_transient());
    }

    #[test]
    fn echoes_are_compared_as_digests() {
        let d = treehash::tree_hash(b"hello world");
        assert!(echo_matches(None, &d));
        assert!(echo_matches(Some(&to_hex(&d)), &d));
        assert!(echo_matches(Some(&to_hex(&d).to_uppercase()), &d));
        assert!(!echo_matches(Some("00"), &d));
        assert!(!echo_matches(Some(&to_hex(&treehash::tree_hash(b"x"))), &d));
    }
}
