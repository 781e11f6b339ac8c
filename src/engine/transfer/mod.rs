//! Moving data between the local cache and Glacier, in the background: each transfer reads or
//! writes local files and talks to Glacier only through [`crate::glacier::GlacierClient`], and
//! records its intents through a journal the caller makes durable, so a crash at any instant
//! can be settled on the next start (ARCHITECTURE.md, "The intents journal").

pub mod download;
pub mod upload;

/// Transfer buffers (upload bodies, download chunks, export parts) are allocated on one
/// thread and freed on another, over and over. glibc's malloc would soon serve them from its
/// per-thread arenas, which keep what is freed (and it raises its threshold for mapping a
/// buffer each time a mapped one is freed), so a long-running process would hold several times
/// the memory its budgets allow without using it. Buffers of 1 MiB and more are mapped and
/// unmapped instead, so what a transfer releases leaves the process. Called once at the start
/// of a process that transfers (the mount, the export).
pub fn return_large_buffers_at_once() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        // SAFETY: mallopt only sets a tuning parameter of the allocator; it has no memory
        // preconditions, and a refusal (returning 0) leaves the default in place.
        let set = unsafe { libc::mallopt(libc::M_MMAP_THRESHOLD, 1 << 20) };
        if set == 0 {
            log::debug!("the allocator kept its own threshold for mapping large buffers");
        }
    }
}
