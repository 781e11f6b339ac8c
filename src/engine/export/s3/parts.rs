//! How an object is cut into parts, and the memory budget the parts on their way share.
//!
//! A part is a power-of-two number of MiB, at least [`MIN_PART`], doubled until no object
//! needs more than S3's 10,000 parts. Being a power-of-two MiB at a multiple of its own size,
//! every part is one whole node of the archive's tree: Glacier sends its tree hash with each
//! ranged read, and the archive's tree hash is the plain combination of the parts' hashes.
//! An object no larger than one part goes up with one PutObject.
//!
//! Every byte between Glacier and S3 lives in one part buffer, so the budget counts part
//! buffers: a part takes its size from [`Memory`] before it is fetched and gives it back once
//! S3 has it. A part larger than the whole budget (an archive over about 5 TB with the default
//! budget) takes the whole budget, so it still goes, alone.

use std::sync::Arc;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::codec::treehash::MIB;

/// The smallest part: S3 takes 5 MiB, and 8 is the power of two above it.
pub const MIN_PART: u64 = 8 * MIB;
/// S3's most parts per object.
pub const MAX_PARTS: u64 = 10_000;

/// The part size for an object of `size` bytes.
pub fn part_size(size: u64) -> u64 {
    let mut part = MIN_PART;
    while size.div_ceil(part) > MAX_PARTS {
        part *= 2;
    }
    part
}

/// Part `number` (from 1) of an object of `size` bytes cut at `part`: `[start, end)`.
pub fn part_range(number: u32, part: u64, size: u64) -> (u64, u64) {
    let start = (u64::from(number) - 1) * part;
    (start, size.min(start + part))
}

/// How many parts an object of `size` bytes has.
pub fn part_count(size: u64, part: u64) -> u32 {
    size.div_ceil(part).max(1) as u32
}

/// The bytes of part buffers that may be held at once, counted in MiB.
#[derive(Debug, Clone)]
pub struct Memory {
    mib: Arc<Semaphore>,
    total_mib: u32,
}

impl Memory {
    /// A budget of `bytes`, at least one minimal part.
    pub fn new(bytes: u64) -> Memory {
        let total_mib = (bytes / MIB).clamp(MIN_PART / MIB, u64::from(u32::MAX >> 4)) as u32;
        Memory {
            mib: Arc::new(Semaphore::new(total_mib as usize)),
            total_mib,
        }
    }

    /// Waits until a buffer of `bytes` fits, and holds its room until the permit is dropped.
    pub async fn reserve(&self, bytes: u64) -> Option<OwnedSemaphorePermit> {
        let want = (bytes.div_ceil(MIB).max(1) as u32).min(self.total_mib);
        self.mib.clone().acquire_many_owned(want).await.ok()
    }

    /// What the budget holds now, in bytes.
    pub fn in_use(&self) -> u64 {
        u64::from(self.total_mib).saturating_sub(self.mib.available_permits() as u64) * MIB
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parts_grow_from_8_mib_to_stay_under_10000() {
        assert_eq!(part_size(0), 8 * MIB);
        assert_eq!(part_size(8 * MIB), 8 * MIB);
        assert_eq!(part_size(10_000 * 8 * MIB), 8 * MIB);
        assert_eq!(part_size(10_000 * 8 * MIB + 1), 16 * MIB);
        let five_tib = 5u64 << 40;
        let p = part_size(five_tib);
        assert_eq!(p, 1024 * MIB);
        assert!(five_tib.div_ceil(p) <= MAX_PARTS);
        for size in [1, MIB, 100 * MIB + 3, 1 << 40, five_tib] {
            let p = part_size(size);
            assert!((p / MIB).is_power_of_two() && p.is_multiple_of(MIB));
            assert!(size.div_ceil(p) <= MAX_PARTS);
        }
    }

    #[test]
    fn part_ranges_tile_the_object() {
        let size = 20 * MIB + 5;
        let part = 8 * MIB;
        assert_eq!(part_count(size, part), 3);
        assert_eq!(part_range(1, part, size), (0, 8 * MIB));
        assert_eq!(part_range(3, part, size), (16 * MIB, size));
        assert_eq!(part_count(0, part), 1);
    }

    #[tokio::test]
    async fn the_budget_holds_parts_until_they_are_dropped() {
        let m = Memory::new(16 * MIB);
        let a = m.reserve(8 * MIB).await.unwrap();
        let _b = m.reserve(8 * MIB).await.unwrap();
        assert_eq!(m.in_use(), 16 * MIB);
        let third = m.reserve(MIB);
        tokio::pin!(third);
        assert!(futures_poll_once(third.as_mut()).await.is_none());
        drop(a);
        assert!(third.await.is_some());
        // A part over the whole budget takes the whole budget.
        drop(_b);
        let huge = Memory::new(8 * MIB);
        assert!(huge.reserve(64 * MIB).await.is_some());
    }

    /// Polls a future once: Some(output) if it was ready.
    async fn futures_poll_once<F: std::future::Future + Unpin>(f: F) -> Option<F::Output> {
        tokio::select! {
            biased;
            out = f => Some(out),
            () = std::future::ready(()) => None,
        }
    }
}
