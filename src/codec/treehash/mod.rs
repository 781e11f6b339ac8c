//! Glacier's tree hash: SHA-256 over 1 MiB leaves, paired up level by level.
//!
//! This module owns the tree hash and everything built on it. Its public API lives here, with
//! the [`Digest`] type, the one-shot hash, the two hashes of an upload body and the combining
//! of part hashes; the rest is split along its jobs:
//! - `parallel`: leaves hashed in parallel across cores ([`leaf_hashes`]), two at a time on
//!   each core where the CPU has the SHA extensions (`shani`, the only file with `unsafe`);
//! - `stream`: streaming ([`TreeHasher`]) and hashing files and readers ([`tree_hash_file`],
//!   [`tree_hash_file_range`], [`tree_hash_reader`]) in bounded memory;
//! - `align`: which retrieval ranges Glacier accepts ([`is_mib_aligned`]), which ranges it
//!   sends a tree hash for ([`is_tree_aligned`]), and how to cut a download into chunks that
//!   can each be verified ([`aligned_chunks`]).
//!
//! Here: one-shot hashing ([`tree_hash`]); the two hashes of an upload body, tree and linear,
//! in one pass ([`body_hashes`]), so that neither the SDK nor anyone else has to go over the
//! body twice; and combining the hashes of multipart-upload parts into the archive hash
//! ([`combine_parts`]).
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

mod align;
mod parallel;
#[cfg(target_arch = "x86_64")]
mod shani;
mod stream;
#[cfg(test)]
mod test_support;

use sha2::{Digest as _, Sha256};

pub use align::{aligned_chunks, is_mib_aligned, is_tree_aligned};
pub use parallel::leaf_hashes;
pub use stream::{tree_hash_file, tree_hash_file_range, tree_hash_reader, TreeHasher};

/// One mebibyte: the leaf size of the tree hash and the unit of range alignment.
pub const MIB: u64 = 1 << 20;

/// A raw SHA-256 digest (a leaf, an inner node or a root).
pub type Digest = [u8; 32];

/// The leaf size as a `usize`, for slicing.
const LEAF: usize = MIB as usize;

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
    n.is_multiple_of(MIB) && (n / MIB).is_power_of_two()
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

// ---------------------------------------------------------------------------------------
// One-shot hashing and upload bodies
// ---------------------------------------------------------------------------------------

/// Whole buffer, parallel across available cores for large inputs.
pub fn tree_hash(data: &[u8]) -> Digest {
    if data.len() <= LEAF {
        return sha256(data);
    }
    root_of_leaves(&leaf_hashes(data))
}

/// The two hashes Glacier checks an upload body against: its tree hash
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

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::test_support::{pseudo_random, reference};
    use super::*;

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
    fn combine_parts_rejects_bad_part_sizes() {
        let parts = [tree_hash(b"a"), tree_hash(b"b")];
        for bad in [0, 1, MIB - 1, MIB + 1, 3 * MIB, MIB / 2, 6 * MIB, u64::MAX] {
            assert_eq!(combine_parts(bad, &parts), None, "{bad}");
        }
        for good in [MIB, 2 * MIB, 4096 * MIB, 1 << 63] {
            assert!(combine_parts(good, &parts).is_some(), "{good}");
        }
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

    }
}
