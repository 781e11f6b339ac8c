//! SHA-256 of two inputs at once with the x86-64 SHA extensions (SHA-NI).
//!
//! Each SHA256RNDS2 depends on the one before, and its latency is several times its issue
//! rate, so a single hash leaves the unit idle most of the time; two independent hashes
//! interleaved fill those gaps. sha2 (and ring, in the SDK) hash one input at a time with
//! the same instructions; on a 2-core AMD EPYC (the machine glacierfs is sized for) this
//! takes about a fifth less CPU per leaf than sha2. Checked against sha2 by the tests in
//! `parallel` and in the parent module, and by every tree-hash test, since leaves go through
//! here.
//!
//! This is the only file of the tree hash with `unsafe`. The safe entry points
//! ([`digest_two`], [`linear_and_leaves`]) check at run time that the CPU has the features the
//! `#[target_feature]` functions are compiled for; every `unsafe fn` below relies on that
//! check, and its only other unsafe operations are unaligned loads and stores
//! (`_mm_loadu_si128`, `_mm_storeu_si128`) at offsets that stay inside the slices and arrays
//! named next to them.

use std::arch::x86_64::{
    __m128i, _mm_add_epi32, _mm_alignr_epi8, _mm_blend_epi16, _mm_loadu_si128, _mm_set_epi64x,
    _mm_sha256msg1_epu32, _mm_sha256msg2_epu32, _mm_sha256rnds2_epu32, _mm_shuffle_epi32,
    _mm_shuffle_epi8, _mm_storeu_si128,
};
use std::sync::OnceLock;

use super::{Digest, LEAF};

/// The round constants of FIPS 180-4, §4.2.2.
const K: [u32; 64] = [
    0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4, 0xab1c5ed5,
    0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174,
    0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da,
    0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7, 0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967,
    0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85,
    0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070,
    0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
    0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7, 0xc67178f2,
];

/// The initial hash value of FIPS 180-4, §5.3.3.
const H0: [u32; 8] = [
    0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a, 0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19,
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

/// # Safety
/// The CPU must have SHA, SSE2, SSSE3 and SSE4.1 (see [`available`]).
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

/// The eight state words `h` in the register layout of [`State`].
///
/// # Safety
/// The CPU must have SHA, SSE2, SSSE3 and SSE4.1 (see [`available`]).
#[target_feature(enable = "sha,sse2,ssse3,sse4.1")]
unsafe fn pack(h: &[u32; 8]) -> State {
    // The two unaligned loads read words 0..4 and 4..8 of `h`, which has eight.
    let abcd = _mm_shuffle_epi32(_mm_loadu_si128(h.as_ptr().cast()), 0xB1); // CDAB
    let efgh = _mm_shuffle_epi32(_mm_loadu_si128(h.as_ptr().add(4).cast()), 0x1B); // HGFE
    State(
        _mm_alignr_epi8(abcd, efgh, 8),    // ABEF
        _mm_blend_epi16(efgh, abcd, 0xF0), // CDGH
    )
}

/// The digest a state stands for: its eight words, big-endian.
///
/// # Safety
/// The CPU must have SHA, SSE2, SSSE3 and SSE4.1 (see [`available`]).
#[target_feature(enable = "sha,sse2,ssse3,sse4.1")]
unsafe fn unpack(s: State) -> Digest {
    let feba = _mm_shuffle_epi32(s.0, 0x1B);
    let dchg = _mm_shuffle_epi32(s.1, 0xB1);
    // The two unaligned stores write words 0..4 and 4..8 of `words`, which has eight.
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
///
/// # Safety
/// The CPU must have SHA, SSE2, SSSE3 and SSE4.1 (see [`available`]), and `block` must be
/// 64 bytes long: all four loads read from it.
#[target_feature(enable = "sha,sse2,ssse3,sse4.1")]
unsafe fn load(block: &[u8]) -> [__m128i; 4] {
    // Every caller passes a block from `chunks_exact(64)` or a 64-byte slice of the padding
    // buffer; the assertion keeps that promise checked in test builds.
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

/// Round constants 4g..4g+3, for rounds of group `g` (0 to 15).
///
/// # Safety
/// The CPU must have SHA, SSE2, SSSE3 and SSE4.1 (see [`available`]), and `g` must be below
/// 16: the unaligned load reads `K[4g..4g + 4]`, and `K` has 64 words.
#[target_feature(enable = "sha,sse2,ssse3,sse4.1")]
unsafe fn constants(g: usize) -> __m128i {
    debug_assert!(g < 16);
    _mm_loadu_si128(K.as_ptr().add(4 * g).cast())
}

/// Message words 4g..4g+3 (g ≥ 4) into `w[g % 4]`, from the four groups before it.
///
/// # Safety
/// The CPU must have SHA, SSE2, SSSE3 and SSE4.1 (see [`available`]).
#[target_feature(enable = "sha,sse2,ssse3,sse4.1")]
unsafe fn schedule(w: &mut [__m128i; 4], g: usize) {
    let t = _mm_sha256msg1_epu32(w[g % 4], w[(g + 1) % 4]);
    let t = _mm_add_epi32(t, _mm_alignr_epi8(w[(g + 3) % 4], w[(g + 2) % 4], 4));
    w[g % 4] = _mm_sha256msg2_epu32(t, w[(g + 3) % 4]);
}

/// Four rounds of `s` with message words plus constants `wk`.
///
/// # Safety
/// The CPU must have SHA, SSE2, SSSE3 and SSE4.1 (see [`available`]).
#[target_feature(enable = "sha,sse2,ssse3,sse4.1")]
unsafe fn rounds(s: &mut State, wk: __m128i) {
    s.1 = _mm_sha256rnds2_epu32(s.1, s.0, wk);
    s.0 = _mm_sha256rnds2_epu32(s.0, s.1, _mm_shuffle_epi32(wk, 0x0E));
}

/// Runs whole 64-byte blocks of `a` through `sa` and of `b` through `sb`, interleaved.
///
/// # Safety
/// The CPU must have SHA, SSE2, SSSE3 and SSE4.1 (see [`available`]).
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
            let k = constants(g);
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

/// # Safety
/// The CPU must have SHA, SSE2, SSSE3 and SSE4.1 (see [`available`]).
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
///
/// # Safety
/// The CPU must have SHA, SSE2, SSSE3 and SSE4.1 (see [`available`]).
#[target_feature(enable = "sha,sse2,ssse3,sse4.1")]
unsafe fn blocks_shared(sa: &mut State, sb: &mut State, data: &[u8]) {
    for block in data.chunks_exact(64) {
        let mut w = load(block);
        let (start_a, start_b) = (*sa, *sb);
        for g in 0..16 {
            if g >= 4 {
                schedule(&mut w, g);
            }
            let wk = _mm_add_epi32(w[g % 4], constants(g));
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
///
/// # Safety
/// The CPU must have SHA, SSE2, SSSE3 and SSE4.1 (see [`available`]).
#[target_feature(enable = "sha,sse2,ssse3,sse4.1")]
unsafe fn blocks_one(s: &mut State, data: &[u8]) {
    for block in data.chunks_exact(64) {
        let mut w = load(block);
        let start = *s;
        for g in 0..16 {
            if g >= 4 {
                schedule(&mut w, g);
            }
            rounds(s, _mm_add_epi32(w[g % 4], constants(g)));
        }
        *s = State(_mm_add_epi32(s.0, start.0), _mm_add_epi32(s.1, start.1));
    }
}

/// Pads the last partial block (`tail`, under 64 bytes, of an input of `len` bytes) and
/// returns the digest.
///
/// # Safety
/// The CPU must have SHA, SSE2, SSSE3 and SSE4.1 (see [`available`]).
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
