//! Bytes from a response body to the file: one 1 MiB leaf at a time, each written and hashed
//! on the blocking pool while the next is read off the network.

use std::io;
use std::os::unix::fs::FileExt;

use sha2::{Digest as _, Sha256};
use tokio::io::AsyncReadExt;
use tokio::task::JoinHandle;

use super::chunks::{Bad, Chunk, Fail};
use super::{joined, DownloadError, Shared, LEAF};
use crate::codec::treehash::{Digest, MIB};
use crate::glacier::BodyReader;

/// Reads exactly `chunk.len()` bytes of `body` into the file at `chunk.start` and returns their
/// leaf hashes. Each leaf is written and hashed on the blocking pool while the next is read.
pub(super) async fn stream_into(
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
pub(super) async fn read_full(body: &mut BodyReader, buf: &mut [u8]) -> io::Result<usize> {
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
pub(super) async fn skip(body: &mut BodyReader, n: u64) -> Result<(), Bad> {
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
pub(super) async fn at_end(body: &mut BodyReader) -> Result<(), Bad> {
    match body.read(&mut [0u8; 1]).await {
        Ok(0) => Ok(()),
        Ok(_) => Err(Bad::Long),
        Err(e) => Err(Bad::Cut(e)),
    }
}
