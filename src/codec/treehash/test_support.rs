//! Helpers shared by the tree-hash tests: the spec written out plainly, and cheap test data.

use sha2::{Digest as _, Sha256};

use super::{Digest, LEAF};

/// The spec, written as plainly as possible and sharing no code with the module.
pub(super) fn reference(data: &[u8]) -> Digest {
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

/// Cheap deterministic bytes: one xorshift64* word per 64 bytes, zeros between.
/// Every leaf differs, which is what catches misplaced leaves, and it stays fast for
/// multi-MiB inputs in debug builds.
pub(super) fn pseudo_random(len: usize, seed: u64) -> Vec<u8> {
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
