//! Range alignment: which retrieval ranges Glacier accepts ([`is_mib_aligned`]), which ranges
//! it sends a tree hash for ([`is_tree_aligned`]), and how to cut a download into chunks that
//! can each be verified ([`aligned_chunks`]).
//!
//! All three rest on the shape of the tree: every power-of-two-MiB run that starts on a
//! multiple of its own length is a complete subtree, and the last node of a level may be cut
//! short by the end of the archive.

use super::MIB;

/// S divisible by 1 MiB and (E+1 divisible by 1 MiB or E == size-1); inclusive end, as
/// in `RetrievalByteRange`. Glacier rejects a retrieval range that fails this with a 400.
/// A range that is empty or runs past the archive is not aligned either.
pub fn is_mib_aligned(start: u64, end_inclusive: u64, size: u64) -> bool {
    // end_inclusive < size, so end_inclusive + 1 cannot overflow.
    start <= end_inclusive
        && end_inclusive < size
        && start.is_multiple_of(MIB)
        && ((end_inclusive + 1).is_multiple_of(MIB) || end_inclusive == size - 1)
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
    if start >= end_exclusive || end_exclusive > size || !start.is_multiple_of(MIB) {
        return false;
    }
    let first_leaf = start / MIB;
    let len = end_exclusive - start;
    let leaves = len.div_ceil(MIB);
    if end_exclusive < size {
        // A node that ends inside the archive is complete: exactly 2^i leaves, starting
        // on a multiple of 2^i.
        len.is_multiple_of(MIB) && leaves.is_power_of_two() && first_leaf.is_multiple_of(leaves)
    } else {
        // The last node on some level may be cut short by the end of the archive: it has
        // 2^i leaves in principle, for some 2^i >= `leaves`, and starts on a multiple of
        // 2^i. The smallest such 2^i is the weakest condition.
        first_leaf.is_multiple_of(leaves.next_power_of_two())
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
    use std::collections::HashSet;

    use proptest::prelude::*;

    use super::*;
    use crate::codec::treehash::test_support::pseudo_random;
    use crate::codec::treehash::{hash_pair, leaf_count, leaf_hashes, root_of_leaves, tree_hash};
    use crate::codec::treehash::{Digest, LEAF};

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

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(24))]

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
