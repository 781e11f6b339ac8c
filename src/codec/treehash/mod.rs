//! SHA-256 tree hash, as Glacier defines it (API digest §3 and §5).
//!
//! This module owns the tree hash and everything built on it:
//! - hashing: one-shot ([`tree_hash`]), streaming ([`TreeHasher`]) and from files or readers
//!   ([`tree_hash_file`], [`tree_hash_reader`]); leaves are hashed in parallel across cores,
//!   and two at a time on each core where the CPU has the SHA extensions (module `shani`);
//! - the two hashes of an upload body, tree and linear, in one pass ([`body_hashes`]), so
//!   that neither the SDK nor anyone else has to go over the body twice;
//! - combining: the hashes of multipart-upload parts into the archive hash ([`combine_parts`]);
//! - range alignment: which retrieval ranges Glacier accepts ([`is_mib_aligned`]), which
//!   ranges it sends a tree hash for ([`is_tree_aligned`]), and how to cut a download into
//!   chunks that can each be verified ([`aligned_chunks`]).
//!
//! The algorithm: SHA-256 each 1 MiB leaf (the last may be shorter), then repeatedly replace
//! the list with `SHA256(h0‖h1), SHA256(h2‖h3), …`, promoting an odd last element unchanged.
//! Input of 1 MiB or less therefore hashes to its plain SHA-256, and empty input to
//! `SHA256("")`, as in the Rust SDK and botocore.
//!
//! The pairwise-with-promotion tree is the same tree as "left child = the largest
//! power-of-two prefix of the leaves, right child = the rest". So every power-of-two-MiB
//! run that starts on a multiple of its own length is a complete subtree; the streaming
//! hasher, [`combine_parts`] and the alignment rules all rest on that fact.

use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};
use std::num::NonZeroUsize;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::OnceLock;
use std::thread;

use sha2::{Digest as _, Sha256};

/// One mebibyte: the leaf size of the tree hash and the unit of range alignment.
pub const MIB: u64 = 1 << 20;

/// A raw SHA-256 digest (a leaf, an inner node or a root).
pub type Digest = [u8; 32];

/// The leaf size as a `usize`, for slicing.
const LEAF: usize = MIB as usize;

/// Below this many leaves, spawning threads costs more than it saves
/// (one leaf takes roughly half a millisecond with SHA-NI).
const PAR_MIN_LEAVES: usize = 4;

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

/// Lowercase hex, the form Glacier uses in `x-amz-sha256-tree-hash` and inventories.
pub fn to_hex(d: &Digest) -> String {
    hex::encode(d)
}

/// Parses exactly 64 hex digits (either case); anything else is `None`.
pub fn from_hex(s: &str) -> Option<Digest> {
    let mut out = [0u8; 32];
    hex::decode_to_slice(s, &mut out).ok()?;
    Some(out)
}

fn sha256(data: &[u8]) -> Digest {
    Sha256::digest(data).into()
}

/// An inner node: the hash of its children's raw digests, concatenated.
fn hash_pair(left: &Digest, right: &Digest) -> Digest {
    let mut h = Sha256::new();
    h.update(left);
    h.update(right);
    h.finalize().into()
}

/// Number of leaves of `len` bytes of data (zero for empty data).
fn leaf_count(len: usize) -> usize {
    len.div_ceil(LEAF)
}

/// Threads worth using; looked up once because `available_parallelism` reads cgroup files.
fn parallelism() -> usize {
    static THREADS: OnceLock<usize> = OnceLock::new();
    *THREADS.get_or_init(|| thread::available_parallelism().map_or(1, NonZeroUsize::get))
}

// ---------------------------------------------------------------------------------------
// Leaf hashing, sequential and parallel
// ---------------------------------------------------------------------------------------

/// The hashes of two leaves: at once when both are whole leaves and the CPU can interleave
/// them (see [`shani`]), else one after the other.
fn sha256_two(a: &[u8], b: &[u8]) -> (Digest, Digest) {
    #[cfg(target_arch = "x86_64")]
    if a.len() == LEAF && b.len() == LEAF && shani::available() {
        return shani::digest_two(a, b);
    }
    (sha256(a), sha256(b))
}

fn hash_leaves_seq(data: &[u8], out: &mut [Digest]) {
    let mut leaves = data.chunks(LEAF);
    for slots in out.chunks_mut(2) {
        match (slots, leaves.next(), leaves.next()) {
            ([first, second], Some(a), Some(b)) => (*first, *second) = sha256_two(a, b),
            ([first, ..], Some(a), _) => *first = sha256(a),
            _ => return,
        }
    }
}

/// Hashes leaves claimed from a shared counter until none are left. Claiming a pair of
/// leaves at a time balances the load even when a thread starts late (see
/// [`hash_leaves_with`]) and keeps both lanes of [`sha256_two`] busy.
fn claim_leaves(data: &[u8], next: &AtomicUsize) -> Vec<(usize, Digest)> {
    let mut done = Vec::new();
    loop {
        let i = next.fetch_add(2, Ordering::Relaxed);
        let mut pair = data.chunks(LEAF).skip(i);
        match (pair.next(), pair.next()) {
            (Some(a), Some(b)) => {
                let (da, db) = sha256_two(a, b);
                done.extend([(i, da), (i + 1, db)]);
            }
            (Some(a), None) => done.push((i, sha256(a))),
            _ => return done,
        }
    }
}

/// Hashes every leaf of `data` into `out` (one slot per leaf) on up to `threads` threads.
///
/// `side` runs on the calling thread while `threads - 1` helpers start hashing; the caller
/// then joins in. Readers use it to fetch the next block while this one is hashed, so the
/// CPU never sits idle waiting for I/O and no more than `threads` threads are busy.
fn hash_leaves_with<R>(
    data: &[u8],
    out: &mut [Digest],
    threads: usize,
    side: impl FnOnce() -> R,
) -> R {
    debug_assert_eq!(out.len(), leaf_count(data.len()));
    let helpers = threads.min(out.len()).saturating_sub(1);
    if helpers == 0 || out.len() < PAR_MIN_LEAVES {
        let r = side();
        hash_leaves_seq(data, out);
        return r;
    }
    let next = AtomicUsize::new(0);
    thread::scope(|s| {
        let handles: Vec<_> = (0..helpers)
            .map(|_| s.spawn(|| claim_leaves(data, &next)))
            .collect();
        let r = side();
        place(out, claim_leaves(data, &next));
        for h in handles {
            // sha2 does not panic; if a helper somehow did, re-raise its panic here.
            let done = h.join().unwrap_or_else(|e| std::panic::resume_unwind(e));
            place(out, done);
        }
        r
    })
}

fn place(out: &mut [Digest], done: Vec<(usize, Digest)>) {
    for (i, d) in done {
        out[i] = d;
    }
}

/// Leaf hashes (one per MiB, the last possibly shorter) of a buffer, in parallel.
///
/// Empty input has one leaf, `SHA256("")`, so that `root_of_leaves(&leaf_hashes(x))`
/// equals `tree_hash(x)` for every `x` (botocore treats empty input the same way).
pub fn leaf_hashes(data: &[u8]) -> Vec<Digest> {
    leaf_hashes_on(data, parallelism())
}

fn leaf_hashes_on(data: &[u8], threads: usize) -> Vec<Digest> {
    if data.is_empty() {
        return vec![sha256(data)];
    }
    let mut out = vec![[0u8; 32]; leaf_count(data.len())];
    hash_leaves_with(data, &mut out, threads, || ());
    out
}

// ---------------------------------------------------------------------------------------
// Two leaves at once with the x86-64 SHA extensions
// ---------------------------------------------------------------------------------------

/// SHA-256 of two inputs at once with the x86-64 SHA extensions.
///
/// Each SHA256RNDS2 depends on the one before, and its latency is several times its issue
/// rate, so a single hash leaves the unit idle most of the time; two independent hashes
/// interleaved fill those gaps. sha2 (and ring, in the SDK) hash one input at a time with
/// the same instructions; on the 2-core EPYC of DESIGN.md §4 this takes about a fifth less
/// CPU per leaf than sha2. Checked against sha2 by the tests below, and by every tree-hash
/// test, since leaves go through here.
#[cfg(target_arch = "x86_64")]
mod shani {
    use std::arch::x86_64::{
        __m128i, _mm_add_epi32, _mm_alignr_epi8, _mm_blend_epi16, _mm_loadu_si128, _mm_set_epi64x,
        _mm_sha256msg1_epu32, _mm_sha256msg2_epu32, _mm_sha256rnds2_epu32, _mm_shuffle_epi32,
        _mm_shuffle_epi8, _mm_storeu_si128,
    };
    use std::sync::OnceLock;

    use super::{Digest, LEAF};

    /// The round constants of FIPS 180-4, §4.2.2.
    const K: [u32; 64] = [
        0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4,
        0xab1c5ed5, 0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe,
        0x9bdc06a7, 0xc19bf174, 0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f,
        0x4a7484aa, 0x5cb0a9dc, 0x76f988da, 0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7,
        0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967, 0x27b70a85, 0x2e1b2138, 0x4d2c6dfc,
        0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85, 0xa2bfe8a1, 0xa81a664b,
        0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070, 0x19a4c116,
        0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
        0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7,
        0xc67178f2,
    ];

    /// The initial hash value of FIPS 180-4, §5.3.3.
    const H0: [u32; 8] = [
        0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a, 0x510e527f, 0x9b05688c, 0x1f83d9ab,
        0x5be0cd19,
    ];

    /// Whether this CPU has what [`digest_two`] uses; looked up once.
    pub(super) fn available() -> bool {
        static HAS: OnceLock<bool> = OnceLock::new();
        *HAS.get_or_init(|| {
            is_x86_feature_detected!("sha")
                && is_x86_feature_detected!("sse2")
                && is_x86_feature_detected!("ssse3")
                && is_x86_feature_detected!("sse4.1")
        })
    }

    /// The SHA-256 of `a` and of `b`, which must be of equal length.
    ///
    /// # Panics
    /// If the lengths differ or the CPU lacks the extensions ([`available`]).
    pub(super) fn digest_two(a: &[u8], b: &[u8]) -> (Digest, Digest) {
        assert_eq!(a.len(), b.len(), "digest_two takes inputs of equal length");
        assert!(available(), "digest_two needs the SHA extensions");
        // SAFETY: the CPU has every feature the function is compiled for (checked above).
        unsafe { digest_two_unchecked(a, b) }
    }

    /// The state as the SHA instructions hold it: words ABEF in one register, CDGH in the
    /// other.
    #[derive(Clone, Copy)]
    struct State(__m128i, __m128i);

    #[target_feature(enable = "sha,sse2,ssse3,sse4.1")]
    unsafe fn digest_two_unchecked(a: &[u8], b: &[u8]) -> (Digest, Digest) {
        let whole = a.len() - a.len() % 64;
        let (mut sa, mut sb) = (pack(&H0), pack(&H0));
        blocks_two(&mut sa, &mut sb, &a[..whole], &b[..whole]);
        (
            finish(sa, &a[whole..], a.len()),
            finish(sb, &b[whole..], b.len()),
        )
    }

    #[target_feature(enable = "sha,sse2,ssse3,sse4.1")]
    unsafe fn pack(h: &[u32; 8]) -> State {
        let abcd = _mm_shuffle_epi32(_mm_loadu_si128(h.as_ptr().cast()), 0xB1); // CDAB
        let efgh = _mm_shuffle_epi32(_mm_loadu_si128(h.as_ptr().add(4).cast()), 0x1B); // HGFE
        State(
            _mm_alignr_epi8(abcd, efgh, 8),    // ABEF
            _mm_blend_epi16(efgh, abcd, 0xF0), // CDGH
        )
    }

    #[target_feature(enable = "sha,sse2,ssse3,sse4.1")]
    unsafe fn unpack(s: State) -> Digest {
        let feba = _mm_shuffle_epi32(s.0, 0x1B);
        let dchg = _mm_shuffle_epi32(s.1, 0xB1);
        let mut words = [0u32; 8];
        _mm_storeu_si128(words.as_mut_ptr().cast(), _mm_blend_epi16(feba, dchg, 0xF0));
        _mm_storeu_si128(
            words.as_mut_ptr().add(4).cast(),
            _mm_alignr_epi8(dchg, feba, 8),
        );
        let mut out = [0u8; 32];
        for (bytes, word) in out.chunks_exact_mut(4).zip(words) {
            bytes.copy_from_slice(&word.to_be_bytes());
        }
        out
    }

    /// The sixteen message words of a 64-byte block, big-endian, in four registers.
    #[target_feature(enable = "sha,sse2,ssse3,sse4.1")]
    unsafe fn load(block: &[u8]) -> [__m128i; 4] {
        debug_assert_eq!(block.len(), 64);
        let swap = _mm_set_epi64x(0x0c0d0e0f08090a0b, 0x0405060700010203);
        let p = block.as_ptr();
        [
            _mm_shuffle_epi8(_mm_loadu_si128(p.cast()), swap),
            _mm_shuffle_epi8(_mm_loadu_si128(p.add(16).cast()), swap),
            _mm_shuffle_epi8(_mm_loadu_si128(p.add(32).cast()), swap),
            _mm_shuffle_epi8(_mm_loadu_si128(p.add(48).cast()), swap),
        ]
    }

    /// Message words 4g..4g+3 (g ≥ 4) into `w[g % 4]`, from the four groups before it.
    #[target_feature(enable = "sha,sse2,ssse3,sse4.1")]
    unsafe fn schedule(w: &mut [__m128i; 4], g: usize) {
        let t = _mm_sha256msg1_epu32(w[g % 4], w[(g + 1) % 4]);
        let t = _mm_add_epi32(t, _mm_alignr_epi8(w[(g + 3) % 4], w[(g + 2) % 4], 4));
        w[g % 4] = _mm_sha256msg2_epu32(t, w[(g + 3) % 4]);
    }

    /// Four rounds of `s` with message words plus constants `wk`.
    #[target_feature(enable = "sha,sse2,ssse3,sse4.1")]
    unsafe fn rounds(s: &mut State, wk: __m128i) {
        s.1 = _mm_sha256rnds2_epu32(s.1, s.0, wk);
        s.0 = _mm_sha256rnds2_epu32(s.0, s.1, _mm_shuffle_epi32(wk, 0x0E));
    }

    /// Runs whole 64-byte blocks of `a` through `sa` and of `b` through `sb`, interleaved.
    #[target_feature(enable = "sha,sse2,ssse3,sse4.1")]
    unsafe fn blocks_two(sa: &mut State, sb: &mut State, a: &[u8], b: &[u8]) {
        for (ba, bb) in a.chunks_exact(64).zip(b.chunks_exact(64)) {
            let (mut wa, mut wb) = (load(ba), load(bb));
            let (start_a, start_b) = (*sa, *sb);
            for g in 0..16 {
                if g >= 4 {
                    schedule(&mut wa, g);
                    schedule(&mut wb, g);
                }
                let k = _mm_loadu_si128(K.as_ptr().add(4 * g).cast());
                rounds(sa, _mm_add_epi32(wa[g % 4], k));
                rounds(sb, _mm_add_epi32(wb[g % 4], k));
            }
            *sa = State(
                _mm_add_epi32(sa.0, start_a.0),
                _mm_add_epi32(sa.1, start_a.1),
            );
            *sb = State(
                _mm_add_epi32(sb.0, start_b.0),
                _mm_add_epi32(sb.1, start_b.1),
            );
        }
    }

    /// The SHA-256 of all of `data` and of each of its leaves, in one pass over it.
    ///
    /// # Panics
    /// If the CPU lacks the extensions ([`available`]).
    pub(super) fn linear_and_leaves(data: &[u8]) -> (Digest, Vec<Digest>) {
        assert!(available(), "linear_and_leaves needs the SHA extensions");
        let mut leaves = Vec::with_capacity(data.len().div_ceil(LEAF));
        // SAFETY: the CPU has every feature the function is compiled for (checked above).
        let linear = unsafe { linear_and_leaves_unchecked(data, &mut leaves) };
        (linear, leaves)
    }

    #[target_feature(enable = "sha,sse2,ssse3,sse4.1")]
    unsafe fn linear_and_leaves_unchecked(data: &[u8], leaves: &mut Vec<Digest>) -> Digest {
        let mut linear = pack(&H0);
        // Every leaf but the last is a whole MiB, so only the last can leave a partial block,
        // and that block is also the linear hash's last.
        let mut tail: &[u8] = &[];
        for leaf in data.chunks(LEAF) {
            let whole = leaf.len() - leaf.len() % 64;
            let mut state = pack(&H0);
            blocks_shared(&mut linear, &mut state, &leaf[..whole]);
            tail = &leaf[whole..];
            leaves.push(finish(state, tail, leaf.len()));
        }
        finish(linear, tail, data.len())
    }

    /// Runs whole 64-byte blocks of `data` through both `sa` and `sb`. The message schedule
    /// depends on the data alone, so it is worked out once for both; the two chains of rounds
    /// are independent and interleave as in [`blocks_two`].
    #[target_feature(enable = "sha,sse2,ssse3,sse4.1")]
    unsafe fn blocks_shared(sa: &mut State, sb: &mut State, data: &[u8]) {
        for block in data.chunks_exact(64) {
            let mut w = load(block);
            let (start_a, start_b) = (*sa, *sb);
            for g in 0..16 {
                if g >= 4 {
                    schedule(&mut w, g);
                }
                let wk = _mm_add_epi32(w[g % 4], _mm_loadu_si128(K.as_ptr().add(4 * g).cast()));
                rounds(sa, wk);
                rounds(sb, wk);
            }
            *sa = State(
                _mm_add_epi32(sa.0, start_a.0),
                _mm_add_epi32(sa.1, start_a.1),
            );
            *sb = State(
                _mm_add_epi32(sb.0, start_b.0),
                _mm_add_epi32(sb.1, start_b.1),
            );
        }
    }

    /// Runs whole 64-byte blocks of `data` through `s`.
    #[target_feature(enable = "sha,sse2,ssse3,sse4.1")]
    unsafe fn blocks_one(s: &mut State, data: &[u8]) {
        for block in data.chunks_exact(64) {
            let mut w = load(block);
            let start = *s;
            for g in 0..16 {
                if g >= 4 {
                    schedule(&mut w, g);
                }
                rounds(
                    s,
                    _mm_add_epi32(w[g % 4], _mm_loadu_si128(K.as_ptr().add(4 * g).cast())),
                );
            }
            *s = State(_mm_add_epi32(s.0, start.0), _mm_add_epi32(s.1, start.1));
        }
    }

    /// Pads the last partial block (`tail`, under 64 bytes, of an input of `len` bytes) and
    /// returns the digest.
    #[target_feature(enable = "sha,sse2,ssse3,sse4.1")]
    unsafe fn finish(mut s: State, tail: &[u8], len: usize) -> Digest {
        let mut last = [0u8; 128];
        last[..tail.len()].copy_from_slice(tail);
        last[tail.len()] = 0x80;
        // The length in bits takes the last 8 bytes; a second block when it does not fit.
        let end = if tail.len() < 56 { 64 } else { 128 };
        last[end - 8..end].copy_from_slice(&(len as u64 * 8).to_be_bytes());
        blocks_one(&mut s, &last[..end]);
        unpack(s)
    }
}

// ---------------------------------------------------------------------------------------
// Combining digests
// ---------------------------------------------------------------------------------------

/// Root of a list of leaf (1 MiB) hashes: pairwise, odd last promoted unchanged.
///
/// This is the literal algorithm of the spec. It also combines any list of sibling
/// subtree roots of equal power-of-two size (the last may be smaller): see
/// [`combine_parts`]. An empty list gives the empty-input hash, `SHA256("")`.
pub fn root_of_leaves(leaves: &[Digest]) -> Digest {
    let mut level = leaves.to_vec();
    while level.len() > 1 {
        let half = level.len().div_ceil(2);
        for i in 0..half {
            level[i] = match level.get(2 * i + 1) {
                Some(right) => hash_pair(&level[2 * i], right),
                None => level[2 * i],
            };
        }
        level.truncate(half);
    }
    level.first().copied().unwrap_or_else(|| sha256(&[]))
}

/// Whether `n` is 2^k MiB for some k ≥ 0: the only legal part and chunk sizes.
fn is_pow2_mib(n: u64) -> bool {
    n % MIB == 0 && (n / MIB).is_power_of_two()
}

/// Combine the tree hashes of consecutive equal-size parts (each part a power-of-two
/// number of MiB, except the last, which may be shorter) into the archive's tree hash.
///
/// This is exact because each full part is a complete subtree: the first k rounds of
/// pairing over the archive's leaves happen inside each 2^k-leaf part, and the short last
/// part is paired (and promoted) exactly as it would be alone. What remains is the same
/// pairwise reduction over the part hashes. Returns `None`, never panics, if `part_size`
/// is not a power-of-two MiB. No parts gives `SHA256("")`, like an empty archive.
pub fn combine_parts(part_size: u64, part_hashes: &[Digest]) -> Option<Digest> {
    is_pow2_mib(part_size).then(|| root_of_leaves(part_hashes))
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

// ---------------------------------------------------------------------------------------
// Streaming
// ---------------------------------------------------------------------------------------

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

// ---------------------------------------------------------------------------------------
// One-shot, files and readers
// ---------------------------------------------------------------------------------------

/// Whole buffer, parallel across available cores for large inputs.
pub fn tree_hash(data: &[u8]) -> Digest {
    if data.len() <= LEAF {
        return sha256(data);
    }
    root_of_leaves(&leaf_hashes(data))
}

/// The two hashes Glacier checks an upload body against (API digest §4): its tree hash
/// (`x-amz-sha256-tree-hash`) and its linear SHA-256 (`x-amz-content-sha256`, the payload hash
/// SigV4 signs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BodyHashes {
    pub tree: Digest,
    pub linear: Digest,
}

/// Both hashes of an upload body in one pass over it, on the calling thread.
///
/// Every byte goes through two SHA-256 chains, its leaf's and the whole body's. With the SHA
/// extensions the two run interleaved on one message schedule (module `shani`), which costs
/// well under two single-chain passes: the SDK's own way, one pass per hash, is what this
/// replaces. Not parallel: an upload's parts are hashed on threads of their own already.
pub fn body_hashes(data: &[u8]) -> BodyHashes {
    #[cfg(target_arch = "x86_64")]
    if shani::available() {
        let (linear, leaves) = shani::linear_and_leaves(data);
        return BodyHashes {
            tree: root_of_leaves(&leaves),
            linear,
        };
    }
    body_hashes_portable(data)
}

/// Bytes fed to both hashers in turn by [`body_hashes_portable`]: small enough to stay in the
/// L1 cache between the two.
const SHARED_PIECE: usize = 16 * 1024;

/// [`body_hashes`] without the SHA extensions: still one pass over memory, each piece hashed
/// twice while it is in cache.
fn body_hashes_portable(data: &[u8]) -> BodyHashes {
    let mut linear = Sha256::new();
    let mut leaves = Vec::with_capacity(leaf_count(data.len()));
    for leaf in data.chunks(LEAF) {
        let mut h = Sha256::new();
        for piece in leaf.chunks(SHARED_PIECE) {
            h.update(piece);
            linear.update(piece);
        }
        leaves.push(h.finalize().into());
    }
    // No leaves (empty data) gives SHA256(""), the empty body's tree hash.
    BodyHashes {
        tree: root_of_leaves(&leaves),
        linear: linear.finalize().into(),
    }
}

/// The plain SHA-256 of `data`: an upload body's linear hash when its tree hash is known.
pub fn linear_sha256(data: &[u8]) -> Digest {
    sha256(data)
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
    debug_assert!(block > 0 && block % LEAF == 0);
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

// ---------------------------------------------------------------------------------------
// Range alignment
// ---------------------------------------------------------------------------------------

/// S divisible by 1 MiB and (E+1 divisible by 1 MiB or E == size-1); inclusive end, as
/// in `RetrievalByteRange`. Glacier rejects a retrieval range that fails this with a 400.
/// A range that is empty or runs past the archive is not aligned either.
pub fn is_mib_aligned(start: u64, end_inclusive: u64, size: u64) -> bool {
    // end_inclusive < size, so end_inclusive + 1 cannot overflow.
    start <= end_inclusive
        && end_inclusive < size
        && start % MIB == 0
        && ((end_inclusive + 1) % MIB == 0 || end_inclusive == size - 1)
}

/// The range `[start, end_exclusive)` is exactly one node of the archive's tree: in MiB
/// units `[j*2^i, min((j+1)*2^i, size))`. The whole archive counts as aligned.
///
/// Glacier sends `x-amz-sha256-tree-hash` only for tree-aligned ranges, and the header is
/// then the tree hash of the range's bytes. For `GetJobOutput` both ranges must pass: the
/// retrieval range within the archive, and the download range within the retrieved bytes
/// (with `size` = the retrieval's length).
pub fn is_tree_aligned(start: u64, end_exclusive: u64, size: u64) -> bool {
    if start == 0 && end_exclusive == size {
        return true;
    }
    if start >= end_exclusive || end_exclusive > size || start % MIB != 0 {
        return false;
    }
    let first_leaf = start / MIB;
    let len = end_exclusive - start;
    let leaves = len.div_ceil(MIB);
    if end_exclusive < size {
        // A node that ends inside the archive is complete: exactly 2^i leaves, starting
        // on a multiple of 2^i.
        len % MIB == 0 && leaves.is_power_of_two() && first_leaf % leaves == 0
    } else {
        // The last node on some level may be cut short by the end of the archive: it has
        // 2^i leaves in principle, for some 2^i >= `leaves`, and starts on a multiple of
        // 2^i. The smallest such 2^i is the weakest condition.
        first_leaf % leaves.next_power_of_two() == 0
    }
}

/// Split `[0, size)` into the largest tree-aligned chunks of at most `max_chunk` bytes
/// (`max_chunk` a power-of-two MiB), so a download can verify each chunk against an
/// `x-amz-sha256-tree-hash` header. Returns `(start, end_exclusive)` pairs.
///
/// Fixed `max_chunk` steps are already optimal: every chunk starts on a multiple of
/// `max_chunk`, so each full one is a complete node, and the short tail is the last node
/// of its level. A `max_chunk` that is not a power-of-two MiB is rounded down to one
/// (at least 1 MiB) rather than rejected. An empty archive has no chunks.
pub fn aligned_chunks(size: u64, max_chunk: u64) -> Vec<(u64, u64)> {
    let step = pow2_mib_at_most(max_chunk);
    let mut chunks = Vec::with_capacity(usize::try_from(size.div_ceil(step)).unwrap_or(0));
    let mut start = 0;
    while start < size {
        let end = size.min(start.saturating_add(step));
        chunks.push((start, end));
        start = end;
    }
    chunks
}

/// The largest power-of-two MiB not above `n`, and at least 1 MiB.
fn pow2_mib_at_most(n: u64) -> u64 {
    match n / MIB {
        0 => MIB,
        m => MIB << m.ilog2(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::HashSet;
    use std::io::Write as _;

    /// The spec, written as plainly as possible and sharing no code with the module.
    fn reference(data: &[u8]) -> Digest {
        let mut level: Vec<Digest> = if data.is_empty() {
            vec![Sha256::digest(b"").into()]
        } else {
            data.chunks(LEAF)
                .map(|c| Sha256::digest(c).into())
                .collect()
        };
        while level.len() > 1 {
            level = level
                .chunks(2)
                .map(|pair| match pair {
                    [a, b] => Sha256::digest([a.as_slice(), b.as_slice()].concat()).into(),
                    [a] => *a,
                    _ => unreachable!("chunks(2) yields one or two"),
                })
                .collect();
        }
        level[0]
    }

    /// Every level of the archive's tree, leaves first, each node with its byte range.
    fn tree_levels(data: &[u8]) -> Vec<Vec<((u64, u64), Digest)>> {
        let size = data.len() as u64;
        let mut level: Vec<_> = leaf_hashes(data)
            .into_iter()
            .enumerate()
            .map(|(i, d)| ((i as u64 * MIB, size.min((i as u64 + 1) * MIB)), d))
            .collect();
        let mut levels = vec![level.clone()];
        while level.len() > 1 {
            level = level
                .chunks(2)
                .map(|pair| match pair {
                    [(ra, a), (rb, b)] => ((ra.0, rb.1), hash_pair(a, b)),
                    [only] => *only,
                    _ => unreachable!("chunks(2) yields one or two"),
                })
                .collect();
            levels.push(level.clone());
        }
        levels
    }

    /// Cheap deterministic bytes: one xorshift64* word per 64 bytes, zeros between.
    /// Every leaf differs, which is what catches misplaced leaves, and it stays fast for
    /// multi-MiB inputs in debug builds.
    fn pseudo_random(len: usize, seed: u64) -> Vec<u8> {
        let mut x = seed | 1;
        let mut out = vec![0u8; len];
        for chunk in out.chunks_mut(64) {
            x ^= x >> 12;
            x ^= x << 25;
            x ^= x >> 27;
            let word = x.wrapping_mul(0x2545_f491_4f6c_dd1d).to_le_bytes();
            let n = chunk.len().min(8);
            chunk[..n].copy_from_slice(&word[..n]);
        }
        out
    }

    fn hex_of(d: Digest) -> String {
        to_hex(&d)
    }

    fn streamed(data: &[u8], cuts: &[usize]) -> Digest {
        let mut h = TreeHasher::new();
        let mut from = 0;
        for &cut in cuts {
            h.update(&data[from..cut]);
            from = cut;
        }
        h.update(&data[from..]);
        assert_eq!(h.bytes(), data.len() as u64);
        h.finish()
    }

    /// Checks every entry point against the expected hex.
    fn check_all(data: &[u8], expected: &str) {
        assert_eq!(hex_of(tree_hash(data)), expected, "tree_hash");
        assert_eq!(hex_of(reference(data)), expected, "reference");
        assert_eq!(
            hex_of(root_of_leaves(&leaf_hashes(data))),
            expected,
            "leaves"
        );
        assert_eq!(hex_of(streamed(data, &[])), expected, "one update");
        let third = data.len() / 3;
        assert_eq!(
            hex_of(streamed(data, &[third, 2 * third + 7.min(third)])),
            expected
        );
        assert_eq!(hex_of(tree_hash_reader(data).unwrap()), expected, "reader");
    }

    const EMPTY_HEX: &str = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

    #[test]
    fn vector_empty() {
        check_all(b"", EMPTY_HEX);
        assert_eq!(hex_of(root_of_leaves(&[])), EMPTY_HEX);
        assert_eq!(
            combine_parts(MIB, &[]).map(hex_of).as_deref(),
            Some(EMPTY_HEX)
        );
    }

    #[test]
    fn vector_hello_world() {
        check_all(
            b"hello world",
            "b94d27b9934d3e08a52e52d7da7dabfac484efe37a5380ee9088f7ace2efcde9",
        );
    }

    #[test]
    fn vector_sdk_105_906_680_bytes() {
        let data = b"01245678912".repeat(9_627_880);
        assert_eq!(data.len(), 105_906_680);
        let expected = "3d417484359fc9f5a3bafd576dc47b8b2de2bf2d4fdac5aa2aff768f2210d386";
        assert_eq!(hex_of(tree_hash(&data)), expected);
        assert_eq!(hex_of(tree_hash_reader(data.as_slice()).unwrap()), expected);
        assert_eq!(
            hex_of(streamed(&data, &[1, 3 * LEAF + 5, 40_000_000])),
            expected
        );
    }

    #[test]
    fn vector_one_mib_plus_one_zeros() {
        check_all(
            &vec![0; LEAF + 1],
            "28638dab8d5e1754a4ecb38b0ebe6df66c844f94aed142d4d0283d208bb786cd",
        );
    }

    #[test]
    fn vector_three_mib_zeros() {
        check_all(
            &vec![0; 3 * LEAF],
            "ca6cc129a4514ec765de86a4e7a49adf44842c9cac213c383ebe4071271bdf21",
        );
    }

    #[test]
    fn vector_four_mib_zeros() {
        check_all(
            &vec![0; 4 * LEAF],
            "27b557ba335a688f779a95e258a886ffa3b39b13533d6f9dcaa0497a2ed1fe18",
        );
    }

    #[test]
    fn up_to_one_mib_is_plain_sha256() {
        for len in [1, 1000, LEAF - 1, LEAF] {
            let data = pseudo_random(len, len as u64);
            assert_eq!(tree_hash(&data), sha256(&data));
        }
    }

    #[test]
    fn hex_round_trip_and_rejects() {
        let d = tree_hash(b"hello world");
        assert_eq!(from_hex(&to_hex(&d)), Some(d));
        assert_eq!(from_hex(&to_hex(&d).to_uppercase()), Some(d));
        assert_eq!(from_hex(""), None);
        assert_eq!(from_hex(&EMPTY_HEX[..62]), None);
        assert_eq!(from_hex(&format!("{EMPTY_HEX}00")), None);
        assert_eq!(from_hex(&EMPTY_HEX.replace('e', "g")), None);
    }

    #[test]
    fn two_at_once_match_one_at_a_time() {
        // Around the padding edges (55/56 bytes of tail need one/two final blocks), and
        // whole leaves, which is what the tree hash pairs up.
        let lens = [
            0,
            1,
            55,
            56,
            63,
            64,
            65,
            119,
            120,
            127,
            128,
            1000,
            LEAF - 1,
            LEAF,
        ];
        for (i, len) in lens.into_iter().enumerate() {
            let a = pseudo_random(len, 2 * i as u64 + 1);
            let b = pseudo_random(len, 2 * i as u64 + 2);
            let expected: (Digest, Digest) = (Sha256::digest(&a).into(), Sha256::digest(&b).into());
            assert_eq!(sha256_two(&a, &b), expected, "{len}");
            #[cfg(target_arch = "x86_64")]
            if shani::available() {
                assert_eq!(shani::digest_two(&a, &b), expected, "{len}");
                assert_eq!(shani::digest_two(&a, &a).0, expected.0, "{len}");
            }
        }
        // Unequal lengths are hashed one at a time.
        let (a, b) = (pseudo_random(LEAF, 7), pseudo_random(LEAF - 3, 8));
        let expected: (Digest, Digest) = (Sha256::digest(&a).into(), Sha256::digest(&b).into());
        assert_eq!(sha256_two(&a, &b), expected);
    }

    #[test]
    fn body_hashes_are_the_tree_hash_and_the_plain_sha256() {
        // The padding edges of the last block, of a leaf and of the whole body; whole leaves;
        // and the sizes of single and multipart bodies.
        let lens = [
            0,
            1,
            55,
            56,
            63,
            64,
            65,
            127,
            1000,
            LEAF - 1,
            LEAF,
            LEAF + 1,
            LEAF + 56,
            2 * LEAF,
            3 * LEAF + 5,
            4 * LEAF,
            5 * LEAF - 63,
        ];
        for (i, len) in lens.into_iter().enumerate() {
            // Random bytes throughout: a leaf's hash must differ from its neighbours'.
            let data: Vec<u8> = (0..len)
                .map(|j| {
                    (j as u64 ^ (j as u64 >> 11) ^ (i as u64 * 0x9e37)).wrapping_mul(0x2545_f491)
                        as u8
                })
                .collect();
            let expected = BodyHashes {
                tree: reference(&data),
                linear: Sha256::digest(&data).into(),
            };
            assert_eq!(body_hashes(&data), expected, "{len}");
            assert_eq!(body_hashes_portable(&data), expected, "{len}");
            assert_eq!(linear_sha256(&data), expected.linear, "{len}");
            #[cfg(target_arch = "x86_64")]
            if shani::available() {
                let (linear, leaves) = shani::linear_and_leaves(&data);
                assert_eq!(linear, expected.linear, "{len}");
                assert_eq!(leaves.len(), leaf_count(len), "{len}");
                assert_eq!(root_of_leaves(&leaves), expected.tree, "{len}");
            }
        }
    }

    #[test]
    fn parallel_leaves_match_sequential_for_any_thread_count() {
        let data = pseudo_random(9 * LEAF + 123, 7);
        let mut expected = vec![[0; 32]; 10];
        hash_leaves_seq(&data, &mut expected);
        for threads in 1..=6 {
            assert_eq!(
                leaf_hashes_on(&data, threads),
                expected,
                "threads={threads}"
            );
        }
    }

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
            if self.calls % 3 == 0 {
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

    #[test]
    fn combine_parts_rejects_bad_part_sizes() {
        let parts = [tree_hash(b"a"), tree_hash(b"b")];
        for bad in [0, 1, MIB - 1, MIB + 1, 3 * MIB, MIB / 2, 6 * MIB, u64::MAX] {
            assert_eq!(combine_parts(bad, &parts), None, "{bad}");
        }
        for good in [MIB, 2 * MIB, 4096 * MIB, 1 << 63] {
            assert!(combine_parts(good, &parts).is_some(), "{good}");
        }
    }

    #[test]
    fn mib_alignment_examples() {
        let size = 10 * MIB + 5;
        assert!(is_mib_aligned(0, size - 1, size));
        assert!(is_mib_aligned(0, MIB - 1, size));
        assert!(is_mib_aligned(3 * MIB, 6 * MIB - 1, size)); // MiB- but not tree-aligned
        assert!(is_mib_aligned(10 * MIB, size - 1, size));
        assert!(!is_mib_aligned(1, MIB - 1, size));
        assert!(!is_mib_aligned(0, MIB, size));
        assert!(!is_mib_aligned(0, size, size)); // past the end
        assert!(!is_mib_aligned(MIB, MIB - 1, size)); // backwards
        assert!(!is_mib_aligned(0, 0, 0));
        assert!(is_mib_aligned(0, 0, 1));
        assert!(!is_mib_aligned(0, u64::MAX, u64::MAX));
    }

    #[test]
    fn tree_alignment_examples() {
        let size = 10 * MIB + 5; // 11 leaves
        assert!(is_tree_aligned(0, size, size));
        assert!(is_tree_aligned(0, 8 * MIB, size));
        assert!(is_tree_aligned(8 * MIB, size, size)); // the cut-short last node of level 2
        assert!(is_tree_aligned(10 * MIB, size, size));
        assert!(is_tree_aligned(4 * MIB, 6 * MIB, size));
        assert!(!is_tree_aligned(3 * MIB, 6 * MIB, size)); // MiB-aligned only
        assert!(!is_tree_aligned(2 * MIB, 6 * MIB, size)); // 4 MiB, but not on a multiple of 4
        assert!(!is_tree_aligned(0, 3 * MIB, size));
        assert!(!is_tree_aligned(9 * MIB, size, size)); // 2 leaves from an odd start
        assert!(!is_tree_aligned(MIB, MIB, size)); // empty
        assert!(!is_tree_aligned(0, size + 1, size));
        assert!(is_tree_aligned(0, 0, 0));
    }

    /// Every byte range that is a node of the archive's tree: the same pairwise reduction
    /// with promotion as [`tree_levels`], over ranges instead of digests.
    fn node_ranges(size: u64) -> HashSet<(u64, u64)> {
        let mut level: Vec<(u64, u64)> = (0..size.div_ceil(MIB))
            .map(|i| (i * MIB, size.min((i + 1) * MIB)))
            .collect();
        let mut all: HashSet<_> = level.iter().copied().collect();
        while level.len() > 1 {
            level = level
                .chunks(2)
                .map(|pair| (pair[0].0, pair[pair.len() - 1].1))
                .collect();
            all.extend(level.iter().copied());
        }
        all
    }

    #[test]
    fn tree_alignment_matches_brute_force() {
        for leaves in 0..=13u64 {
            for tail in [0, 1, MIB - 1] {
                let size = (leaves * MIB + tail).saturating_sub(if tail == 0 { 0 } else { MIB });
                let nodes = node_ranges(size);
                let mut points: Vec<u64> = (0..=leaves).map(|i| i * MIB).collect();
                points.extend([1, MIB + 1, size, size.saturating_sub(1), size + 1]);
                for &s in &points {
                    for &e in &points {
                        let expected = nodes.contains(&(s, e)) || (s == 0 && e == size);
                        assert_eq!(is_tree_aligned(s, e, size), expected, "{s}..{e} of {size}");
                        if expected && e > s {
                            assert!(is_mib_aligned(s, e - 1, size), "{s}..{e} of {size}");
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn aligned_chunks_examples() {
        assert_eq!(aligned_chunks(0, MIB), vec![]);
        assert_eq!(aligned_chunks(5, 4 * MIB), vec![(0, 5)]);
        assert_eq!(
            aligned_chunks(9 * MIB + 1, 4 * MIB),
            vec![(0, 4 * MIB), (4 * MIB, 8 * MIB), (8 * MIB, 9 * MIB + 1)]
        );
        // Not a power-of-two MiB: rounded down to 2 MiB; too small: 1 MiB.
        assert_eq!(
            aligned_chunks(4 * MIB, 3 * MIB),
            vec![(0, 2 * MIB), (2 * MIB, 4 * MIB)]
        );
        assert_eq!(aligned_chunks(2 * MIB, 0), vec![(0, MIB), (MIB, 2 * MIB)]);
        assert_eq!(aligned_chunks(u64::MAX, u64::MAX).len(), 2);
    }

    fn cuts_in(len: usize, raw: &[usize]) -> Vec<usize> {
        let mut cuts: Vec<usize> = raw.iter().map(|c| c % (len + 1)).collect();
        cuts.sort_unstable();
        cuts
    }

    // Unoptimised sha2 hashes at roughly 100 MB/s, so the multi-MiB cases are kept few.
    proptest! {
        #![proptest_config(ProptestConfig::with_cases(24))]

        #[test]
        fn streaming_oneshot_reader_and_reference_agree(
            len in prop_oneof![0usize..3000, 0usize..9 * LEAF, Just(4 * LEAF)],
            seed: u64,
            raw_cuts in proptest::collection::vec(any::<usize>(), 0..8),
        ) {
            let data = pseudo_random(len, seed);
            let expected = reference(&data);
            prop_assert_eq!(tree_hash(&data), expected);
            prop_assert_eq!(streamed(&data, &cuts_in(len, &raw_cuts)), expected);
            prop_assert_eq!(tree_hash_reader(data.as_slice()).unwrap(), expected);
            prop_assert_eq!(root_of_leaves(&leaf_hashes(&data)), expected);
            let linear: Digest = Sha256::digest(&data).into();
            prop_assert_eq!(body_hashes(&data), BodyHashes { tree: expected, linear });
        }

        #[test]
        fn combined_parts_equal_whole_hash(
            part_mib in prop_oneof![Just(1u64), Just(2), Just(4), Just(8)],
            len in 1usize..18 * LEAF,
            seed: u64,
        ) {
            let data = pseudo_random(len, seed);
            let part = (part_mib * MIB) as usize;
            let hashes: Vec<Digest> = data.chunks(part).map(tree_hash).collect();
            prop_assert_eq!(combine_parts(part as u64, &hashes), Some(reference(&data)));
        }

        /// What a download relies on: the tree hash of an aligned range's bytes is the
        /// archive tree's node there (which Glacier sends as x-amz-sha256-tree-hash).
        #[test]
        fn aligned_range_hash_is_the_tree_node(
            len in 1usize..12 * LEAF,
            seed: u64,
            pick: (usize, usize),
        ) {
            let data = pseudo_random(len, seed);
            let levels = tree_levels(&data);
            let level = &levels[pick.0 % levels.len()];
            let ((s, e), node) = level[pick.1 % level.len()];
            prop_assert!(is_tree_aligned(s, e, len as u64));
            let bytes = &data[s as usize..e as usize];
            prop_assert_eq!(tree_hash(bytes), node);
            let leaves: Vec<Digest> = levels[0].iter().map(|&(_, d)| d).collect();
            let first = (s / MIB) as usize;
            prop_assert_eq!(root_of_leaves(&leaves[first..leaf_count(e as usize)]), node);
        }

        #[test]
        fn aligned_chunks_tile_the_archive(
            size in prop_oneof![0u64..20 * MIB, 0u64..1 << 42],
            max_shift in 0u32..8,
        ) {
            let max_chunk = MIB << max_shift;
            let chunks = aligned_chunks(size, max_chunk);
            let mut at = 0;
            for &(s, e) in &chunks {
                prop_assert_eq!(s, at);
                prop_assert!(e > s && e - s <= max_chunk);
                prop_assert!(is_tree_aligned(s, e, size));
                prop_assert!(is_mib_aligned(s, e - 1, size));
                at = e;
            }
            prop_assert_eq!(at, size);
        }
    }
}
