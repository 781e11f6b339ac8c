//! Streaming tree hashes: [`TreeHasher`] for data that arrives in pieces, and the hash of a
//! file, a byte range of a file, or any reader.
//!
//! Both keep memory bounded however long the input: completed leaves are reduced at once into
//! at most one subtree root per bit of the leaf count ([`SubtreeStack`]), and readers go through
//! two fixed read blocks in turn, one filling while the other is hashed.

use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};
use std::path::Path;

use super::parallel::{hash_leaves_with, leaf_hashes, parallelism};
use super::{hash_pair, leaf_count, sha256, Digest, LEAF};

/// Bytes read from a file or reader per step, per hashing thread. Measured on 2 cores
/// reading from the page cache: 8–16 MiB blocks beat 32–64 MiB ones (about 3.1 vs
/// 2.8 GB/s), presumably because the block being hashed stays in cache.
const READ_BLOCK_PER_THREAD: usize = 8 * LEAF;

/// Bounds on the block size: at least a few leaves per thread on small machines, and at
/// most 64 MiB on large ones, so the two blocks in flight never take over 128 MiB.
const READ_BLOCK_MIN: usize = 16 * LEAF;
const READ_BLOCK_MAX: usize = 64 * LEAF;

/// The read block for `threads` threads: a whole number of leaves.
fn read_block(threads: usize) -> usize {
    READ_BLOCK_PER_THREAD
        .saturating_mul(threads)
        .clamp(READ_BLOCK_MIN, READ_BLOCK_MAX)
}

/// Completed subtree roots of a growing leaf sequence, reduced eagerly.
///
/// It works like a binary counter: entry levels strictly decrease from bottom to top, and
/// pushing a leaf merges equal-level neighbours. So it holds at most one root per bit of
/// the leaf count, O(log n) digests, and the left-to-right order of the roots is the
/// order of the data.
#[derive(Clone, Default)]
struct SubtreeStack {
    /// (level, root): a complete subtree of 2^level leaves.
    nodes: Vec<(u32, Digest)>,
}

impl SubtreeStack {
    fn push_leaf(&mut self, leaf: Digest) {
        let (mut level, mut root) = (0, leaf);
        while let Some(&(top_level, top)) = self.nodes.last() {
            if top_level != level {
                break;
            }
            self.nodes.pop();
            root = hash_pair(&top, &root);
            level += 1;
        }
        self.nodes.push((level, root));
    }

    fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    /// Folds the roots right to left: each root is the left sibling of everything after
    /// it, because it is the largest power-of-two prefix of the leaves it starts (the
    /// promotion rule in another form).
    fn root(self) -> Digest {
        let mut rev = self.nodes.into_iter().rev().map(|(_, d)| d);
        let Some(last) = rev.next() else {
            return sha256(&[]);
        };
        rev.fold(last, |acc, left| hash_pair(&left, &acc))
    }
}

/// Streaming hasher: feed any slices; keeps only one partial MiB buffer plus the completed
/// leaf digests (reduced eagerly, so memory is O(log n) digests, not O(n)).
///
/// Large `update`s hash their whole leaves in parallel.
#[derive(Clone, Default)]
pub struct TreeHasher {
    /// Bytes of the current leaf; always shorter than a leaf between calls.
    partial: Vec<u8>,
    done: SubtreeStack,
    bytes: u64,
}

impl std::fmt::Debug for TreeHasher {
    // The partial buffer can hold a MiB; show the shape, not the bytes.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TreeHasher")
            .field("bytes", &self.bytes)
            .field("partial_len", &self.partial.len())
            .field("subtrees", &self.done.nodes.len())
            .finish()
    }
}

impl TreeHasher {
    /// An empty hasher; allocates nothing until data arrives.
    pub fn new() -> Self {
        Self::default()
    }

    /// Feeds the next bytes; any split of the input gives the same hash.
    pub fn update(&mut self, data: &[u8]) {
        self.bytes += data.len() as u64;
        let data = self.fill_partial(data);
        let whole = data.len() - data.len() % LEAF;
        let (leaves, rest) = data.split_at(whole);
        self.absorb_leaves(leaves);
        if !rest.is_empty() {
            // Reserve the whole leaf once rather than growing the buffer in steps.
            self.partial.reserve_exact(LEAF - self.partial.len());
            self.partial.extend_from_slice(rest);
        }
    }

    /// Tops up a started leaf from `data` and returns what is left of `data`.
    fn fill_partial<'a>(&mut self, data: &'a [u8]) -> &'a [u8] {
        if self.partial.is_empty() {
            return data;
        }
        let take = data.len().min(LEAF - self.partial.len());
        let (head, rest) = data.split_at(take);
        self.partial.extend_from_slice(head);
        if self.partial.len() == LEAF {
            self.done.push_leaf(sha256(&self.partial));
            self.partial.clear();
        }
        rest
    }

    /// Hashes whole leaves straight from the caller's slice, without copying.
    fn absorb_leaves(&mut self, leaves: &[u8]) {
        if leaves.is_empty() {
            return;
        }
        for d in leaf_hashes(leaves) {
            self.done.push_leaf(d);
        }
    }

    /// Bytes fed so far.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// The tree hash of everything fed (`SHA256("")` if nothing was).
    pub fn finish(mut self) -> Digest {
        // The short last leaf; or the single empty leaf when nothing was fed.
        if !self.partial.is_empty() || self.done.is_empty() {
            self.done.push_leaf(sha256(&self.partial));
        }
        self.done.root()
    }
}

impl io::Write for TreeHasher {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.update(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// A file, read in large blocks, leaves hashed in parallel across cores; bounded memory
/// (two read blocks, at most 128 MiB). [`tree_hash_file_range`] hashes part of a file.
pub fn tree_hash_file(path: &Path) -> io::Result<Digest> {
    tree_hash_reader(File::open(path)?)
}

/// The tree hash of bytes `[start, end_exclusive)` of a file, e.g. a downloaded chunk to
/// check against its `x-amz-sha256-tree-hash`. A file too short for the range is an
/// `UnexpectedEof` error rather than the hash of fewer bytes.
pub fn tree_hash_file_range(path: &Path, start: u64, end_exclusive: u64) -> io::Result<Digest> {
    let Some(len) = end_exclusive.checked_sub(start) else {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("range end {end_exclusive} is before start {start}"),
        ));
    };
    let mut file = File::open(path)?;
    file.seek(SeekFrom::Start(start))?;
    let (digest, read) = hash_stream(file.take(len), parallelism())?;
    if read != len {
        return Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            format!("range {start}..{end_exclusive} ends past end of file"),
        ));
    }
    Ok(digest)
}

/// Like [`tree_hash_file`], from any reader.
pub fn tree_hash_reader(r: impl Read) -> io::Result<Digest> {
    hash_stream(r, parallelism()).map(|(digest, _)| digest)
}

/// Hashes a reader to its end; returns the hash and the number of bytes read.
fn hash_stream(r: impl Read, threads: usize) -> io::Result<(Digest, u64)> {
    hash_stream_in_blocks(r, read_block(threads), threads)
}

/// Reads `block`-byte blocks (a whole number of leaves) into two buffers in turn: while
/// the helpers hash one, the calling thread reads the next.
fn hash_stream_in_blocks(
    mut r: impl Read,
    block: usize,
    threads: usize,
) -> io::Result<(Digest, u64)> {
    debug_assert!(block > 0 && block.is_multiple_of(LEAF));
    // vec![0; n] comes from calloc: untouched pages cost nothing for short inputs.
    let mut current = vec![0u8; block];
    let mut next = vec![0u8; block];
    let mut digests = vec![[0u8; 32]; block / LEAF];
    let mut done = SubtreeStack::default();
    let mut total = 0u64;
    let mut filled = read_full(&mut r, &mut current)?;
    while filled > 0 {
        // A short block means end of input. Stop there even if the reader would yield more
        // (a tty, a growing file): a short leaf anywhere but last would give a wrong hash.
        let at_end = filled < block;
        let leaves = &mut digests[..leaf_count(filled)];
        let next_filled = hash_leaves_with(&current[..filled], leaves, threads, || {
            if at_end {
                Ok(0)
            } else {
                read_full(&mut r, &mut next)
            }
        })?;
        for d in leaves.iter() {
            done.push_leaf(*d);
        }
        total += filled as u64;
        std::mem::swap(&mut current, &mut next);
        filled = next_filled;
    }
    Ok((done.root(), total))
}

/// Fills `buf` unless the input ends first; returns the bytes read.
fn read_full(r: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match r.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(filled)
}

#[cfg(test)]
mod tests {
    use std::io::Write as _;

    use super::*;
    use crate::codec::treehash::test_support::{pseudo_random, reference};

    #[test]
    fn stream_matches_for_any_block_and_thread_count() {
        let data = pseudo_random(11 * LEAF + 5, 11);
        let expected = reference(&data);
        for block in [LEAF, 2 * LEAF, 4 * LEAF, 16 * LEAF] {
            for threads in [1, 2, 3] {
                let (d, n) = hash_stream_in_blocks(data.as_slice(), block, threads).unwrap();
                assert_eq!((d, n), (expected, data.len() as u64), "{block} {threads}");
            }
        }
    }

    #[test]
    fn read_block_is_whole_leaves_within_bounds() {
        for threads in [1, 2, 3, 8, 64, usize::MAX] {
            let block = read_block(threads);
            assert_eq!(block % LEAF, 0);
            assert!(
                (READ_BLOCK_MIN..=READ_BLOCK_MAX).contains(&block),
                "{threads}"
            );
        }
        assert_eq!(read_block(2), 16 * LEAF);
    }

    /// Ends, then has more to say, like a terminal after ^D.
    struct EndsTwice<'a>(Vec<&'a [u8]>);

    impl Read for EndsTwice<'_> {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            let Some(part) = self.0.first_mut() else {
                return Ok(0);
            };
            if part.is_empty() {
                self.0.remove(0);
                return Ok(0);
            }
            let n = buf.len().min(part.len());
            buf[..n].copy_from_slice(&part[..n]);
            *part = &part[n..];
            Ok(n)
        }
    }

    #[test]
    fn reader_stops_at_first_end_of_input() {
        let data = pseudo_random(3 * LEAF + 10, 4);
        let r = EndsTwice(vec![&data, b"more after the end"]);
        let (d, n) = hash_stream_in_blocks(r, 2 * LEAF, 2).unwrap();
        assert_eq!((d, n), (reference(&data), data.len() as u64));
    }

    /// Yields a few bytes at a time and is interrupted now and then, as pipes can be.
    struct Trickle<'a> {
        data: &'a [u8],
        calls: usize,
    }

    impl Read for Trickle<'_> {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            self.calls += 1;
            if self.calls.is_multiple_of(3) {
                return Err(io::ErrorKind::Interrupted.into());
            }
            let n = buf.len().min(self.data.len()).min(100_003);
            buf[..n].copy_from_slice(&self.data[..n]);
            self.data = &self.data[n..];
            Ok(n)
        }
    }

    #[test]
    fn reader_handles_short_and_interrupted_reads() {
        let data = pseudo_random(5 * LEAF + 77, 3);
        let r = Trickle {
            data: &data,
            calls: 0,
        };
        assert_eq!(tree_hash_reader(r).unwrap(), reference(&data));
    }

    struct Failing;

    impl Read for Failing {
        fn read(&mut self, _: &mut [u8]) -> io::Result<usize> {
            Err(io::Error::other("disk on fire"))
        }
    }

    #[test]
    fn reader_errors_propagate() {
        let err = tree_hash_reader(Failing).unwrap_err();
        assert_eq!(err.to_string(), "disk on fire");
        // An error while the previous block is being hashed must surface too.
        let late = (&[0u8; 40 << 20][..]).chain(Failing);
        assert!(tree_hash_reader(late).is_err());
    }

    #[test]
    fn write_impl_and_io_copy() {
        let data = pseudo_random(3 * LEAF + 9, 5);
        let mut h = TreeHasher::new();
        io::copy(&mut data.as_slice(), &mut h).unwrap();
        h.flush().unwrap();
        assert_eq!(h.bytes(), data.len() as u64);
        assert_eq!(h.finish(), reference(&data));
    }

    #[test]
    fn hasher_keeps_one_root_per_set_bit_of_leaf_count() {
        let leaf = vec![0u8; LEAF];
        let mut h = TreeHasher::new();
        for n in 1u32..=40 {
            h.update(&leaf);
            assert_eq!(
                h.done.nodes.len(),
                n.count_ones() as usize,
                "after {n} leaves"
            );
            assert!(h.partial.is_empty());
        }
    }

    #[test]
    fn file_and_file_range() {
        let data = pseudo_random(6 * LEAF + 1000, 9);
        let mut file = tempfile::NamedTempFile::new().unwrap();
        file.write_all(&data).unwrap();
        let path = file.path();
        assert_eq!(tree_hash_file(path).unwrap(), reference(&data));
        for (s, e) in [
            (0, 0),
            (0, data.len()),
            (2 * LEAF, 4 * LEAF),
            (4 * LEAF, data.len()),
        ] {
            let got = tree_hash_file_range(path, s as u64, e as u64).unwrap();
            assert_eq!(got, reference(&data[s..e]), "{s}..{e}");
        }
        let past = tree_hash_file_range(path, 0, data.len() as u64 + 1).unwrap_err();
        assert_eq!(past.kind(), io::ErrorKind::UnexpectedEof);
        let backwards = tree_hash_file_range(path, 5, 4).unwrap_err();
        assert_eq!(backwards.kind(), io::ErrorKind::InvalidInput);
        assert!(tree_hash_file(&path.with_extension("missing")).is_err());
    }
}
