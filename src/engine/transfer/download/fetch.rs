//! The fetches: every chunk beyond the verified prefix, in parallel tasks (or in one stream
//! from an endpoint that ignores `Range`), each fetched again on a failure the network may have
//! caused; and the prefix itself, which grows as chunks land in order, is journalled as it
//! grows, and is checked against the archive's tree hash at the end.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use tokio::task::JoinSet;

use super::chunks::{give_up, holds, plan, Bad, Chunk, Fail, Holds};
use super::stream::{at_end, skip, stream_into};
use super::{blocking, joined, record, DownloadError, DownloadJournal, Shared, ATTEMPTS};
use crate::codec::treehash::{from_hex, root_of_leaves, to_hex, Digest, MIB};
use crate::glacier::JobOutput;

/// A chunk whose bytes are in the file and checked as far as the response allowed.
pub(super) struct Done {
    pub(super) chunk: Chunk,
    pub(super) leaves: Vec<Digest>,
    /// Whether a tree-hash header vouched for it.
    pub(super) checked: bool,
}

/// The contiguous verified prefix, and the chunks done beyond it.
pub(super) struct Prefix<'a> {
    pub(super) verified: u64,
    pub(super) leaves: Vec<Digest>,
    /// Chunks done out of order, by start, until the prefix reaches them.
    pub(super) waiting: BTreeMap<u64, Done>,
    /// Chunks that came without a header (only the final check vouches for them).
    pub(super) unchecked: u64,
    pub(super) journal: &'a dyn DownloadJournal,
}

impl Prefix<'_> {
    /// Takes a done chunk; returns whether the prefix grew.
    pub(super) fn add(&mut self, done: Done) -> bool {
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
    pub(super) async fn commit(&self, sh: &Shared) -> Result<(), DownloadError> {
        if self.verified >= sh.size {
            return Ok(());
        }
        let file = sh.file.clone();
        blocking(move || file.sync_data()).await??;
        record(|| self.journal.verified(self.verified, &self.leaves))
    }

    /// The whole-archive check, then the flush, then the record that says "done".
    pub(super) async fn finish(&self, sh: &Shared, want: &Digest) -> Result<(), DownloadError> {
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
pub(super) async fn fetch_all(
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
