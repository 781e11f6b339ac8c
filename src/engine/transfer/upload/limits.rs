//! The memory budget of a mount's uploads: [`UploadLimits`] hands out permits, one per body
//! of up to a part size, so part size × bodies in flight stays within the budget whatever
//! number of uploads run at once.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use tokio::sync::{AcquireError, OwnedSemaphorePermit, Semaphore};

/// Shared by all uploads of a mount: bounds the bodies held in memory, and so the requests in
/// flight. One permit stands for one body of up to `unit` bytes.
#[derive(Debug, Clone)]
pub struct UploadLimits {
    permits: Arc<Semaphore>,
    total: u32,
    unit: u64,
}

impl UploadLimits {
    /// `max(1, min(concurrency, memory_budget / part_size))` permits of `part_size` bytes each:
    /// the concurrency is lowered, never the part size, to keep part size × in flight within
    /// the budget (bounded memory: the SDK holds every body it sends).
    pub fn new(concurrency: usize, memory_budget: u64, part_size: u64) -> Self {
        let unit = part_size.max(1);
        let by_memory = usize::try_from(memory_budget / unit).unwrap_or(usize::MAX);
        let total = concurrency.min(by_memory).clamp(1, u32::MAX as usize);
        let total = u32::try_from(total).unwrap_or(u32::MAX);
        UploadLimits {
            permits: Arc::new(Semaphore::new(total as usize)),
            total,
            unit,
        }
    }

    /// How many bodies of `part_size` may be in memory (and in flight) at once.
    pub fn permits(&self) -> usize {
        self.total as usize
    }

    /// Permits a body of `len` bytes needs: one per started `unit`. A part size raised for a
    /// huge file takes several, so the memory bound holds; one larger than the whole budget
    /// takes them all (the SDK cannot send a body it does not hold).
    pub(super) fn permits_for(&self, len: u64) -> u32 {
        let units = len.div_ceil(self.unit).max(1);
        u32::try_from(units).unwrap_or(u32::MAX).min(self.total)
    }

    /// Waits for the permits of a body of `len` bytes. Owned, so the wait can be held across
    /// loop turns (keeping its place in the semaphore's fair queue) and the permit can travel
    /// with the body into another task.
    pub(super) fn acquire(&self, len: u64) -> Acquire {
        Box::pin(
            self.permits
                .clone()
                .acquire_many_owned(self.permits_for(len)),
        )
    }
}

pub(super) type Acquire =
    Pin<Box<dyn Future<Output = Result<OwnedSemaphorePermit, AcquireError>> + Send>>;

pub(super) async fn permit_of(
    waiting: &mut Option<Acquire>,
) -> Result<OwnedSemaphorePermit, AcquireError> {
    match waiting {
        Some(acquire) => acquire.await,
        None => std::future::pending().await,
    }
}

/// The permit `waiting` has been granted already, if it has, without waiting for it.
pub(super) async fn permit_now(
    waiting: &mut Option<Acquire>,
) -> Option<Result<OwnedSemaphorePermit, AcquireError>> {
    waiting.as_ref()?;
    let now = tokio::select! {
        biased;
        permit = permit_of(waiting) => Some(permit),
        () = std::future::ready(()) => None,
    };
    if now.is_some() {
        *waiting = None;
    }
    now
}
