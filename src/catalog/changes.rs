//! The feed of catalog changes the kernel cannot know about: those made by background work
//! (an inventory merge, a refreshed vault list) rather than by a FUSE request, whose reply
//! already tells the kernel. The mount drains it into kernel cache invalidations, which is what
//! lets entries and attributes carry long TTLs (ARCHITECTURE.md, "Threads").

use std::sync::mpsc;

use super::Catalog;

/// One thing the kernel may have cached that is no longer so. Sent after the change commits,
/// so a lookup the invalidation prompts sees the new state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// The name `name` in directory `parent` is gone or now names another node.
    Entry { parent: u64, name: String },
    /// The node's attributes or, for a directory, its listing changed.
    Node(u64),
}

impl Catalog {
    /// Starts the feed; the mount calls it once. Changes noted before then are dropped, as
    /// nothing was cached.
    pub fn watch(&self) -> mpsc::Receiver<Change> {
        let (tx, rx) = mpsc::channel();
        *crate::locks::lock(&self.inner.changes) = Some(tx);
        rx
    }

    /// Notes committed changes; nothing happens when nobody watches (the CLI commands).
    pub fn changed(&self, changes: impl IntoIterator<Item = Change>) {
        let guard = crate::locks::lock(&self.inner.changes);
        if let Some(tx) = guard.as_ref() {
            for c in changes {
                if tx.send(c).is_err() {
                    break;
                }
            }
        }
    }
}
