//! Kernel cache invalidation, from outside the FUSE loop: a thread drains the catalog's change
//! feed and tells the kernel which entries and attributes to forget. It runs on its own thread
//! because a notification written from inside a request handler can deadlock against the
//! kernel waiting for that very handler.

use std::collections::HashSet;
use std::ffi::OsStr;
use std::sync::mpsc::Receiver;

use fuser::{INodeNo, Notifier};

use crate::catalog::changes::Change;

/// Starts the thread; it ends when the catalog (the feed's sender) goes away.
pub fn spawn(feed: Receiver<Change>, notifier: Notifier) {
    let started = std::thread::Builder::new()
        .name("invalidate".into())
        .spawn(move || {
            while let Ok(first) = feed.recv() {
                // What queued meanwhile goes together, each node once: a copy into one
                // directory notes that directory at every commit.
                let mut nodes = HashSet::new();
                for change in std::iter::once(first).chain(feed.try_iter()) {
                    if matches!(change, Change::Node(ino) if !nodes.insert(ino)) {
                        continue;
                    }
                    tell(&notifier, &change);
                }
            }
        });
    if let Err(e) = started {
        log::warn!("no kernel cache invalidation thread ({e}); changes show after the TTL");
    }
}

fn tell(notifier: &Notifier, change: &Change) {
    let result = match change {
        Change::Entry { parent, name } => notifier.inval_entry(INodeNo(*parent), OsStr::new(name)),
        Change::Node(ino) => notifier.inval_inode(INodeNo(*ino), 0, 0),
    };
    match result {
        // ENOENT: the kernel had nothing cached for it, which is fine.
        Err(e) if e.raw_os_error() != Some(libc::ENOENT) => {
            log::debug!("invalidating {change:?}: {e}")
        }
        _ => {}
    }
}
