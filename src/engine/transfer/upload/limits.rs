//! The memory budget and the connections of a mount's uploads: [`UploadLimits`] hands out
//! permits of two kinds. A body permit stands for one body of up to a part size held in
//! memory, from the read that fills it until Glacier has it, so part size × bodies stays within
//! the budget whatever number of uploads run at once. A connection permit stands for one
//! request in flight, and is taken only once its body is read and hashed: there are up to twice
//! as many bodies as connections, so the next part is read and hashed while the last ones are
//! sent, and a connection never waits for hashing.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use tokio::sync::{AcquireError, OwnedSemaphorePermit, Semaphore};

/// Shared by all uploads of a mount: bounds the bodies held in memory and the requests in
/// flight. One body permit stands for one body of up to `unit` bytes; one connection permit
/// for one request.
#[derive(Debug, Clone)]
pub struct UploadLimits {
    permits: Arc<Semaphore>,
    total: u32,
    /// Bodies read and hashed, not yet sent: what the pipeline holds ready.
    ready: Arc<AtomicUsize>,
    connections: Arc<Semaphore>,
    connections_total: u32,
    unit: u64,
}

/// Bodies held per connection: one being sent, and the next one read and hashed meanwhile.
const BODIES_PER_CONNECTION: usize = 2;

impl UploadLimits {
    /// `max(1, min(concurrency, memory_budget / part_size))` connections, and twice as many
    /// bodies of `part_size` bytes as long as the budget holds them (never fewer bodies than
    /// connections): the concurrency is lowered, never the part size, to keep part size ×
    /// bodies within the budget (bounded memory: the SDK holds every body it sends).
    pub fn new(concurrency: usize, memory_budget: u64, part_size: u64) -> Self {
        let unit = part_size.max(1);
        let by_memory = usize::try_from(memory_budget / unit).unwrap_or(usize::MAX);
        let connections = concurrency.min(by_memory).clamp(1, u32::MAX as usize);
        let bodies = connections
            .saturating_mul(BODIES_PER_CONNECTION)
            .min(by_memory)
            .clamp(connections, u32::MAX as usize);
        let connections_total = u32::try_from(connections).unwrap_or(u32::MAX);
        let total = u32::try_from(bodies).unwrap_or(u32::MAX);
        UploadLimits {
            permits: Arc::new(Semaphore::new(total as usize)),
            total,
            ready: Arc::new(AtomicUsize::new(0)),
            connections: Arc::new(Semaphore::new(connections_total as usize)),
            connections_total,
            unit,
        }
    }

    /// How many requests may be in flight at once.
    pub fn permits(&self) -> usize {
        self.connections_total as usize
    }

    /// How many bodies of `part_size` may be in memory at once.
    pub fn bodies(&self) -> usize {
        self.total as usize
    }

    /// How many body permits are taken now: the bodies read, or being read, and not yet sent.
    pub fn bodies_held(&self) -> usize {
        (self.total as usize).saturating_sub(self.permits.available_permits())
    }

    /// How many bodies are read and hashed and not yet sent (waiting for a connection, or
    /// being sent).
    pub fn bodies_ready(&self) -> usize {
        self.ready.load(Ordering::SeqCst)
    }

    /// Counts a body as ready until the guard is dropped.
    pub(super) fn ready(&self) -> Ready {
        self.ready.fetch_add(1, Ordering::SeqCst);
        Ready(self.ready.clone())
    }

    /// Waits for a connection: held by one request, taken once its body is ready.
    pub(super) async fn connection(&self) -> Result<OwnedSemaphorePermit, AcquireError> {
        self.connections.clone().acquire_owned().await
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

/// One body counted in [`UploadLimits::bodies_ready`].
pub(super) struct Ready(Arc<AtomicUsize>);

impl Drop for Ready {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
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
