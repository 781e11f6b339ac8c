//! The upload engine: puts one frozen snapshot file into a vault as exactly one archive.
//!
//! It owns how an upload is cut up and sent, not when or why: the caller's queue decides what
//! to upload, keeps the journal durable, and retries later what fails transiently. Here:
//! - **One call or many.** A snapshot of at most one part goes up in one UploadArchive; a larger
//!   one as a multipart upload whose part size is raised, if need be, to stay within the 10,000
//!   parts Glacier allows one upload.
//! - **Intents before calls.** Every creating call (UploadArchive, Initiate, Complete) is
//!   preceded by a journal entry and followed by one for its result, so a crash at any instant
//!   leaves a record the caller can settle on the next start. Parts need no intents: ListParts
//!   finds them, and re-sending one overwrites it.
//! - **Bounded memory, real parallelism.** The SDK holds each body in memory, so every body
//!   read takes body permits from [`UploadLimits`], shared by all uploads of a mount, and every
//!   request a connection permit; parts run as tokio tasks, so hashing (on the blocking pool)
//!   spreads over the cores, and files are read with `pread` on the blocking pool, never on a
//!   worker. There are up to twice as many bodies as connections: a part is read and hashed
//!   while the parts before it are sent, and takes a connection only once it is ready.
//! - **No second hashing pass.** Each part is hashed once, here, in the pass that reads it
//!   (the tree hash for its header and the linear SHA-256 it is signed with), and handed to the
//!   client with both, so the client hashes nothing (and the SDK nothing, see
//!   [`crate::glacier::aws`]); an UploadArchive body is hashed the same way by the client.
//!   Glacier checks each body against that tree hash. A part's hash is the one Glacier echoes
//!   for it, the archive's is combined from those, and Complete, which Glacier checks against
//!   the parts it holds, confirms the lot; an UploadArchive's is its echo. The snapshot is
//!   hashed again only where nothing else can vouch for it: parts an earlier attempt left are
//!   checked against it on resume; an UploadArchive whose echo is missing or malformed is
//!   hashed after the fact; and when Complete refuses the combined hash (an echo that lied or
//!   was corrupted), every part is checked, once, as on resume, and the upload completed with
//!   the hashes verified here.
//! - **Resumable.** A recorded multipart upload is resumed from ListParts: parts Glacier has
//!   are checked against the snapshot, the rest are sent. An upload Glacier no longer knows
//!   (404) is started again from scratch.
//!
//! Retrying single calls is the client's job ([`crate::glacier::retry::Retrying`]); what
//! survives its retries comes back as an [`UploadError`] whose [`UploadError::is_transient`]
//! tells the caller whether trying the whole upload again later (resuming) can help.
//!
//! Layout: this file holds the contract (spec, journal, errors, [`upload`]) and the helpers
//! every path shares; [`UploadLimits`] lives in `limits`, the open snapshot in `snapshot`, the
//! one-call path in `single`, the multipart protocol (initiate, resume, complete) in
//! `multipart`, and the parallel sending of parts in `parts`.

mod limits;
mod multipart;
mod parts;
mod single;
mod snapshot;

use std::io;
use std::path::PathBuf;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;

use bytes::Bytes;
use tokio::runtime::{Handle, RuntimeFlavor};
use tokio::task::JoinError;

use crate::codec::treehash::{self, combine_parts, from_hex, to_hex, Digest, MIB};
use crate::glacier::{GlacierClient, GlacierError};
use crate::store::cache::Frozen;

pub use limits::UploadLimits;
use snapshot::Snapshot;

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

/// Where an interrupted upload stands, as the journal recorded it.
///
/// An UploadArchive cut off before its reply was recorded is not resumable: it is settled by
/// the next inventory (which finds the archive, if any, by description), not here. Nor is an Initiate cut off before
/// [`UploadJournal::initiated`]: the caller matches ListMultipartUploads against its intents.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Resume {
    /// Nothing was sent, or nothing that can be continued.
    Fresh,
    /// A multipart upload was initiated (and maybe partly sent, maybe even completed).
    Multipart { upload_id: String, part_size: u64 },
}

/// Intents: [`upload`] calls these before and after each creating call, so a crash at any
/// instant can be settled (intents before calls). Each must return only once
/// what it records is durable; an error stops the upload before the call it announces.
///
/// They are called from async code; on a multi-threaded runtime the engine wraps them in
/// `block_in_place`, so a short synchronous wait (e.g. for the catalog's writer thread) is fine.
pub trait UploadJournal: Send + Sync {
    /// About to send UploadArchive.
    fn before_single(&self) -> Result<(), JournalError>;
    /// About to send InitiateMultipartUpload with this part size.
    fn before_initiate(&self, part_size: u64) -> Result<(), JournalError>;
    /// Glacier initiated the upload: from now on it can be resumed.
    fn initiated(&self, upload_id: &str, part_size: u64) -> Result<(), JournalError>;
    /// About to send CompleteMultipartUpload (idempotent, so a restart repeats it).
    fn before_complete(
        &self,
        upload_id: &str,
        size: u64,
        tree_hash: &Digest,
    ) -> Result<(), JournalError>;
    /// The archive exists.
    fn created(&self, archive_id: &str, tree_hash: &Digest) -> Result<(), JournalError>;
    /// The recorded multipart upload is gone (404) or not ours to continue: starting over.
    fn restarted(&self) -> Result<(), JournalError>;
}

/// Why a journal entry could not be made durable. The engine does not know where a journal
/// keeps its entries, so the implementor's own error travels inside, boxed; the engine adds
/// the step it was recording.
#[derive(Debug)]
pub struct JournalError {
    step: Option<&'static str>,
    source: Box<dyn std::error::Error + Send + Sync + 'static>,
}

impl JournalError {
    /// Wraps a journal's own error (anything that converts into a boxed error, a message too).
    pub fn new(source: impl Into<Box<dyn std::error::Error + Send + Sync + 'static>>) -> Self {
        JournalError {
            step: None,
            source: source.into(),
        }
    }

    /// The entry that failed, e.g. "before UploadArchive"; set by the engine.
    pub fn step(&self) -> Option<&'static str> {
        self.step
    }

    fn at(mut self, step: &'static str) -> Self {
        self.step = Some(step);
        self
    }
}

impl std::fmt::Display for JournalError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.step {
            Some(step) => write!(f, "{step}: {}", self.source),
            None => write!(f, "{}", self.source),
        }
    }
}

impl std::error::Error for JournalError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&*self.source)
    }
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
    Journal(JournalError),
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

/// Uploads `spec.file` as one archive and returns it: [`upload_frozen`] on the file opened
/// here.
pub async fn upload(
    client: &Arc<dyn GlacierClient>,
    spec: &UploadSpec,
    resume: Resume,
    limits: &UploadLimits,
    journal: &dyn UploadJournal,
    progress: &AtomicU64,
) -> Result<Uploaded, UploadError> {
    fits(spec)?;
    let path = spec.file.clone();
    let file = blocking(move || Ok(Frozen::open(path)?)).await?;
    upload_frozen(
        client,
        spec,
        Arc::new(file),
        resume,
        limits,
        journal,
        progress,
    )
    .await
}

/// Uploads `file`, the snapshot `spec.file` names as its caller opened it, as one archive and
/// returns it. The write-back queue opens it through the data store, which can switch it to
/// an identical copy while the upload runs.
///
/// `resume` is what the journal recorded of an earlier attempt. `progress` grows by each part's
/// length as Glacier confirms it (parts found already there on resume included; the whole size
/// at the end of a single upload); the caller zeroes it before each call if it wants one
/// attempt's count. Dropping the returned future stops the upload at once (in-flight parts are
/// aborted) and leaves nothing the journal does not describe.
///
/// The client is an `Arc` because parts run as tasks of their own.
pub async fn upload_frozen(
    client: &Arc<dyn GlacierClient>,
    spec: &UploadSpec,
    file: Arc<Frozen>,
    resume: Resume,
    limits: &UploadLimits,
    journal: &dyn UploadJournal,
    progress: &AtomicU64,
) -> Result<Uploaded, UploadError> {
    fits(spec)?;
    let snapshot = {
        let size = spec.size;
        Arc::new(blocking(move || Snapshot::open(file, size)).await?)
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

/// Whether `spec`'s size can be one archive, asked before anything is opened.
fn fits(spec: &UploadSpec) -> Result<(), UploadError> {
    if spec.size == 0 {
        return Err(UploadError::Invalid(
            "an archive holds at least one byte".into(),
        ));
    }
    if spec.size > MAX_ARCHIVE_SIZE {
        return Err(UploadError::TooLarge { size: spec.size });
    }
    Ok(())
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
fn record(
    what: &'static str,
    entry: impl FnOnce() -> Result<(), JournalError>,
) -> Result<(), UploadError> {
    let multi_thread = Handle::try_current()
        .map(|h| h.runtime_flavor() == RuntimeFlavor::MultiThread)
        .unwrap_or(false);
    let result = if multi_thread {
        tokio::task::block_in_place(entry)
    } else {
        entry()
    };
    result.map_err(|e| UploadError::Journal(e.at(what)))
}

/// Checks Glacier's echo of a tree hash against ours; no echo is no contradiction.
fn echo_matches(echoed: Option<&str>, ours: &Digest) -> bool {
    echoed.is_none_or(|h| from_hex(h) == Some(*ours))
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::glacier::ErrorKind;

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
    fn bodies_are_two_per_connection_within_the_budget() {
        let counts = |l: UploadLimits| (l.permits(), l.bodies());
        assert_eq!(counts(UploadLimits::new(4, 512 * MIB, 16 * MIB)), (4, 8));
        assert_eq!(counts(UploadLimits::new(4, 96 * MIB, 16 * MIB)), (4, 6));
        assert_eq!(counts(UploadLimits::new(8, 64 * MIB, 16 * MIB)), (4, 4));
        assert_eq!(counts(UploadLimits::new(8, 20 * MIB, 16 * MIB)), (1, 1));
        assert_eq!(counts(UploadLimits::new(8, 0, 16 * MIB)), (1, 1));
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
        assert!(UploadError::Journal(JournalError::new("database is locked")).is_transient());
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
