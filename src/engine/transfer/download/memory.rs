//! One tree-aligned range of a job's output read into memory and checked, for a caller that
//! passes the bytes on (an export to S3) instead of keeping them in a file.
//!
//! The checks are the file download's: the exact length, and the tree hash Glacier sends
//! with a ranged read when there is one; a range that fails them is fetched again, up to
//! [`ATTEMPTS`] times. An endpoint that ignores `Range` answers with the whole output, which
//! is handed back as it is ([`Got::Whole`]) for the caller to read in order with
//! [`read_whole_part`]; those bytes come with no header to check, so the caller checks the whole
//! archive's tree hash before it trusts them.

use std::sync::Arc;

use bytes::Bytes;

use super::chunks::{holds, Bad, Chunk, Fail, Holds};
use super::stream::{at_end, read_full};
use super::{DownloadError, ATTEMPTS};
use crate::codec::treehash::{body_hashes, to_hex, Digest};
use crate::glacier::{BodyReader, ErrorKind, GlacierClient, GlacierError, JobOutput};

/// Bytes with their two hashes: the tree hash Glacier checks and the SHA-256 S3 checks.
#[derive(Debug, Clone)]
pub struct Checked {
    pub data: Bytes,
    pub tree: Digest,
    pub sha256: Digest,
}

/// What a ranged read brought.
#[derive(Debug)]
pub enum Got {
    /// The range, checked.
    Range(Checked),
    /// The whole output: the endpoint ignored the range.
    Whole(JobOutput),
}

/// The job whose output is read.
#[derive(Clone)]
pub struct JobRef {
    pub client: Arc<dyn GlacierClient>,
    pub vault: String,
    pub job_id: String,
    /// The archive's size: the job retrieves all of it.
    pub size: u64,
}

impl std::fmt::Debug for JobRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JobRef")
            .field("vault", &self.vault)
            .field("job_id", &self.job_id)
            .field("size", &self.size)
            .finish_non_exhaustive()
    }
}

/// GetJobOutput of `[start, end)` (a whole node of the archive's tree), checked.
pub async fn fetch_range(job: &JobRef, start: u64, end: u64) -> Result<Got, DownloadError> {
    let chunk = Chunk { start, end };
    let mut last = None;
    for _ in 0..ATTEMPTS {
        let mut out = match job
            .client
            .get_job_output(&job.vault, &job.job_id, Some((start, end - 1)))
            .await
        {
            Ok(out) => out,
            Err(e) if e.kind == ErrorKind::NotFound => return Err(DownloadError::Expired),
            Err(e) => return Err(e.into()),
        };
        match holds(&out, chunk, job.size) {
            Ok(Holds::Chunk) => {}
            Ok(Holds::Whole) => return Ok(Got::Whole(out)),
            Err(Fail::Stop(e)) => return Err(e),
            Err(Fail::Retry(bad)) => {
                last = Some(bad);
                continue;
            }
        }
        let checked = match read_next(&mut out.body, chunk.len()).await {
            Ok(c) => c,
            Err(Fail::Retry(bad)) => {
                last = Some(bad);
                continue;
            }
            Err(Fail::Stop(e)) => return Err(e),
        };
        if let Err(bad) = at_end(&mut out.body).await {
            last = Some(bad);
            continue;
        }
        match out.tree_hash.as_deref() {
            Some(theirs) if !theirs.eq_ignore_ascii_case(&to_hex(&checked.tree)) => {
                last = Some(Bad::Hash {
                    ours: checked.tree,
                    theirs: theirs.to_owned(),
                });
            }
            _ => return Ok(Got::Range(checked)),
        }
    }
    let what = match &last {
        Some(bad) => format!("job {}, {chunk}: {bad} ({ATTEMPTS} attempts)", job.job_id),
        None => format!("job {}, {chunk}: no attempt made", job.job_id),
    };
    Err(match last {
        Some(Bad::Cut(_)) => GlacierError::new("GetJobOutput", ErrorKind::Transient, what).into(),
        _ => DownloadError::Corrupt { what },
    })
}

/// Reads the next `len` bytes of `body` and hashes them (on the blocking pool).
async fn read_next(body: &mut BodyReader, len: u64) -> Result<Checked, Fail> {
    let want = usize::try_from(len).map_err(|_| Bad::Long)?;
    let mut buf = vec![0u8; want];
    match read_full(body, &mut buf).await {
        Err(e) => return Err(Bad::Cut(e).into()),
        Ok(n) if n < want => return Err(Bad::Short { got: n as u64 }.into()),
        Ok(_) => {}
    }
    let data = Bytes::from(buf);
    let hashed = data.clone();
    let h = tokio::task::spawn_blocking(move || body_hashes(&hashed))
        .await
        .map_err(|_| DownloadError::Cancelled)?;
    Ok(Checked {
        data,
        tree: h.tree,
        sha256: h.linear,
    })
}

/// The next `len` bytes of a whole output, hashed: a body that breaks off or ends early is a
/// transient failure of the job's output (the whole output is asked for again later).
pub async fn read_whole_part(
    body: &mut BodyReader,
    job_id: &str,
    len: u64,
) -> Result<Checked, DownloadError> {
    read_next(body, len).await.map_err(|f| match f {
        Fail::Stop(e) => e,
        Fail::Retry(bad) => GlacierError::new(
            "GetJobOutput",
            ErrorKind::Transient,
            format!("job {job_id}: {bad}"),
        )
        .into(),
    })
}

/// Checks that a whole output read to its end has nothing more.
pub async fn whole_ends(body: &mut BodyReader, job_id: &str) -> Result<(), DownloadError> {
    at_end(body).await.map_err(|bad| DownloadError::Corrupt {
        what: format!("job {job_id}: {bad}"),
    })
}
