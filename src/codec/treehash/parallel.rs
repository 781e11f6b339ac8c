//! Leaf hashing across threads: every 1 MiB leaf of a buffer hashed on up to all cores, and
//! two at a time on each core where the CPU has the SHA extensions (module `shani`).
//!
//! Threads claim pairs of leaves from a shared counter rather than taking fixed shares, so a
//! helper that starts late, or a core that is busy elsewhere, does not hold the rest up.

use std::num::NonZeroUsize;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::OnceLock;
use std::thread;

#[cfg(target_arch = "x86_64")]
use super::shani;
use super::{leaf_count, sha256, Digest, LEAF};

/// Below this many leaves, spawning threads costs more than it saves
/// (one leaf takes roughly half a millisecond with SHA-NI).
const PAR_MIN_LEAVES: usize = 4;

/// Threads worth using; looked up once because `available_parallelism` reads cgroup files.
pub(super) fn parallelism() -> usize {
    static THREADS: OnceLock<usize> = OnceLock::new();
    *THREADS.get_or_init(|| thread::available_parallelism().map_or(1, NonZeroUsize::get))
}

/// The hashes of two leaves: at once when both are whole leaves and the CPU can interleave
/// them (see [`shani`]), else one after the other.
fn sha256_two(a: &[u8], b: &[u8]) -> (Digest, Digest) {
    #[cfg(target_arch = "x86_64")]
    if a.len() == LEAF && b.len() == LEAF && shani::available() {
        return shani::digest_two(a, b);
    }
    (sha256(a), sha256(b))
}

/// Every leaf on the calling thread, in pairs so that both lanes of [`sha256_two`] are used.
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
pub(super) fn hash_leaves_with<R>(
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

/// Puts the hashes a thread claimed into their slots.
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

#[cfg(test)]
mod tests {
    use sha2::{Digest as _, Sha256};

    use super::*;
    use crate::codec::treehash::test_support::pseudo_random;

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
}
