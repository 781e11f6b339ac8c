//! Sending the parts of a multipart upload in parallel: one task per part, started in order
//! as the memory budget frees body permits, each reading its bytes with `pread` on the blocking
//! pool and hashing them there (the tree hash and the SHA-256 in one pass), then taking a
//! connection and sending them unless Glacier already holds exactly those bytes.
//!
//! Reading and hashing come before the connection, and [`super::UploadLimits`] gives twice as
//! many bodies as connections: while the parts before it are sent, the next one is read and
//! hashed, so a connection goes from one part to the next without waiting for either.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use tokio::sync::{AcquireError, OwnedSemaphorePermit};
use tokio::task::JoinSet;

use super::limits::UploadLimits;
use super::limits::{permit_now, permit_of, Acquire};
use super::snapshot::Snapshot;
use super::{echo_matches, joined, mismatch, Stop, Upload, UploadError};
use crate::codec::treehash::{self, to_hex, BodyHashes, Digest};
use crate::glacier::{ErrorKind, GlacierClient};

impl Upload<'_> {
    /// Runs one task per part, started in order as body permits come free, and returns the
    /// part hashes in order. The first failure returns at once; dropping the set aborts the rest.
    ///
    /// `listed` holds the hashes Glacier lists for parts it has: those parts are checked
    /// against the snapshot. The others are sent and take Glacier's echo as their hash
    /// ([`Pass::Send`]), or are hashed here first ([`Pass::Verify`]).
    pub(super) async fn send_parts(
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
            limits: self.limits.clone(),
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
                let job = PartJob {
                    index: next,
                    start,
                    len,
                    check: Check::of(&mut listed, start, pass),
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

/// What every part task of one upload shares.
struct PartCtx {
    client: Arc<dyn GlacierClient>,
    vault: String,
    upload_id: String,
    snapshot: Arc<Snapshot>,
    /// For a connection per request.
    limits: UploadLimits,
}

struct PartJob {
    index: usize,
    start: u64,
    len: u64,
    check: Check,
}

/// How [`Upload::send_parts`] treats the parts Glacier does not list.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Pass {
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
    /// The part is sent with the hashes computed as it was read, and Glacier's echo is its
    /// hash (Glacier checked the body against ours; an echo that says otherwise shows when
    /// Complete refuses the combined hash).
    Echo,
    /// The part is hashed here and sent with that hash, which Glacier must echo.
    Missing,
}

impl Check {
    /// How the part at `start` is checked: against Glacier's listing when Glacier has it.
    fn of(listed: &mut HashMap<u64, Digest>, start: u64, pass: Pass) -> Check {
        match (listed.remove(&start), pass) {
            (Some(theirs), _) => Check::Listed(theirs),
            (None, Pass::Send) => Check::Echo,
            (None, Pass::Verify) => Check::Missing,
        }
    }
}

struct PartDone {
    index: usize,
    digest: Digest,
    len: u64,
}

/// Reads one part (into `buffer`, when a finished part left one) and hashes it, then sends it
/// unless Glacier already has exactly these bytes. Every body is hashed here, once, in the
/// pass that reads it, before it takes a connection; the client hashes nothing again.
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
    let read = tokio::task::spawn_blocking(move || {
        let body = snapshot.read(start, len, buffer).map(|data| {
            let hashes = treehash::body_hashes(&data);
            (data.freeze(), hashes)
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
    log::trace!(
        "upload {}: the part at {start} is read and hashed",
        ctx.upload_id
    );
    let ready = ctx.limits.ready();
    let outcome = async {
        let digest = match job.check {
            Check::Listed(theirs) if theirs == ours.tree => ours.tree,
            Check::Listed(theirs) => {
                log::warn!(
                    "upload {}: the part at {start} differs from the snapshot ({} there, {} \
                     here); sending it again",
                    ctx.upload_id,
                    to_hex(&theirs),
                    to_hex(&ours.tree)
                );
                send_checked(&ctx, start, &body, ours).await?;
                ours.tree
            }
            Check::Missing => {
                send_checked(&ctx, start, &body, ours).await?;
                ours.tree
            }
            Check::Echo => send_trusting_echo(&ctx, start, &body, ours).await?,
        };
        Ok(PartDone {
            index: job.index,
            digest,
            len,
        })
    }
    .await;
    drop(ready);
    // The client has dropped its copies of the body by now; if it kept one, no reuse.
    (outcome, Some(permit), body.try_into_mut().ok())
}

/// What a part task hands back: its outcome, its permit, and its buffer for the next part.
type PartOutcome = (
    Result<PartDone, Stop>,
    Option<OwnedSemaphorePermit>,
    Option<BytesMut>,
);

/// One UploadPart with the body's hashes, over a connection taken for it alone. Returns the
/// echo.
async fn send_part(
    ctx: &PartCtx,
    start: u64,
    body: Bytes,
    hashes: BodyHashes,
) -> Result<Option<String>, Stop> {
    let _connection = ctx
        .limits
        .connection()
        .await
        .map_err(|_| UploadError::Cancelled)?;
    log::trace!("upload {}: sending the part at {start}", ctx.upload_id);
    match ctx
        .client
        .upload_part_hashed(&ctx.vault, &ctx.upload_id, start, body, hashes)
        .await
    {
        Ok(echoed) => Ok(echoed),
        Err(e) if e.kind == ErrorKind::NotFound => Err(Stop::Gone(e.into())),
        Err(e) => Err(e.into()),
    }
}

/// Sends one part and returns the hash Glacier echoes (checked by Glacier against the body),
/// or ours when the echo is missing or malformed. A wrong echo shows later, when Complete
/// refuses the combined hash.
async fn send_trusting_echo(
    ctx: &PartCtx,
    start: u64,
    body: &Bytes,
    ours: BodyHashes,
) -> Result<Digest, Stop> {
    let echoed = send_part(ctx, start, body.clone(), ours).await?;
    match echoed.as_deref().and_then(treehash::from_hex) {
        Some(digest) => Ok(digest),
        None => {
            log::debug!(
                "upload {}, part at {start}: no usable tree hash echoed ({echoed:?}); using ours",
                ctx.upload_id
            );
            Ok(ours.tree)
        }
    }
}

/// Sends one part with our hashes of it, and once more if Glacier echoes another tree hash
/// (re-sending a range overwrites it).
async fn send_checked(
    ctx: &PartCtx,
    start: u64,
    body: &Bytes,
    ours: BodyHashes,
) -> Result<(), Stop> {
    let digest = &ours.tree;
    let mut first_echo = None;
    for _ in 0..2 {
        let echoed = send_part(ctx, start, body.clone(), ours).await?;
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
