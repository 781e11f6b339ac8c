//! The feed of catalog changes the kernel cannot know about: those made by background work
//! (an inventory merge, a refreshed vault list) rather than by a FUSE request, whose reply
//! already tells the kernel. The mount drains it into kernel cache invalidations, which is what
//! lets entries and attributes carry long TTLs (ARCHITECTURE.md, "Threads").
//!
//! Listings are cached by the kernel too, and whatever changes the entries of a directory
//! (an insert, a delete, a rename into or out of it, by any path through the catalog) must be
//! told. Rather than trust every caller to say so, the writer connection of a watched catalog
//! has temporary triggers that note each changed directory, and the writer sends them once the
//! transaction has committed; a rolled-back transaction takes its notes with it.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{mpsc, Mutex};

use rusqlite::Connection;

use super::{Catalog, CatalogError};

/// Where changes go once [`Catalog::watch`] has started the feed.
#[derive(Default)]
pub(super) struct Feed {
    sender: Mutex<Option<mpsc::Sender<Change>>>,
    /// The listing triggers are on the writer connection.
    listings: AtomicBool,
    /// Counts the commits that changed some listing; moved after the commit, before the
    /// changes are sent.
    epoch: AtomicU64,
}

/// The triggers that note which directories' listings a transaction changed: the columns a
/// listing shows (name, kind) and where an entry is. Temporary, so only the watched writer
/// connection pays for them, and the schema on disk does not change. No insert here may meet
/// a conflict: the statement that fires a trigger imposes its own conflict policy on the
/// trigger's statements (an `INSERT OR FAIL` into `nodes` would fail on a directory already
/// noted, where `OR IGNORE` was meant).
const LISTING_TRIGGERS: &str = "
    CREATE TEMP TABLE IF NOT EXISTS changed_dirs (ino INTEGER PRIMARY KEY);
    CREATE TEMP TRIGGER IF NOT EXISTS listing_insert AFTER INSERT ON main.nodes BEGIN
        INSERT INTO changed_dirs SELECT NEW.parent
            WHERE NOT EXISTS (SELECT 1 FROM changed_dirs WHERE ino = NEW.parent);
    END;
    CREATE TEMP TRIGGER IF NOT EXISTS listing_delete AFTER DELETE ON main.nodes BEGIN
        INSERT INTO changed_dirs SELECT OLD.parent
            WHERE NOT EXISTS (SELECT 1 FROM changed_dirs WHERE ino = OLD.parent);
    END;
    CREATE TEMP TRIGGER IF NOT EXISTS listing_move AFTER UPDATE OF parent, name, kind
        ON main.nodes BEGIN
        INSERT INTO changed_dirs SELECT OLD.parent
            WHERE NOT EXISTS (SELECT 1 FROM changed_dirs WHERE ino = OLD.parent);
        INSERT INTO changed_dirs SELECT NEW.parent
            WHERE NOT EXISTS (SELECT 1 FROM changed_dirs WHERE ino = NEW.parent);
    END;";

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
    pub fn watch(&self) -> Result<mpsc::Receiver<Change>, CatalogError> {
        let (tx, rx) = mpsc::channel();
        *crate::locks::lock(&self.inner.changes.sender) = Some(tx);
        self.write(|tx| Ok(tx.execute_batch(LISTING_TRIGGERS)?))?;
        self.inner.changes.listings.store(true, Ordering::SeqCst);
        Ok(rx)
    }

    /// A number that moves whenever a committed transaction changed some directory's listing
    /// (only while the feed runs): a listing read after the number was taken is at least as
    /// new as that number.
    pub fn listings_epoch(&self) -> u64 {
        self.inner.changes.epoch.load(Ordering::SeqCst)
    }

    /// Notes committed changes; nothing happens when nobody watches (the CLI commands).
    pub fn changed(&self, changes: impl IntoIterator<Item = Change>) {
        send(&self.inner.changes, changes);
    }
}

fn send(feed: &Feed, changes: impl IntoIterator<Item = Change>) {
    let guard = crate::locks::lock(&feed.sender);
    if let Some(tx) = guard.as_ref() {
        for c in changes {
            if tx.send(c).is_err() {
                break;
            }
        }
    }
}

/// Sends the directories whose listings the transaction just committed changed, and forgets
/// them. Runs on the writer thread, between the commit and the replies.
pub(super) fn send_changed_listings(conn: &Connection, feed: &Feed) {
    if !feed.listings.load(Ordering::SeqCst) {
        return;
    }
    match take_changed_dirs(conn) {
        Ok(dirs) if dirs.is_empty() => {}
        Ok(dirs) => {
            feed.epoch.fetch_add(1, Ordering::SeqCst);
            send(feed, dirs.into_iter().map(Change::Node))
        }
        // The kernel keeps the old listing until the directory's mtime moves; said loudly,
        // as that is a stale view.
        Err(e) => log::warn!("listing changes not sent to the kernel: {e}"),
    }
}

fn take_changed_dirs(conn: &Connection) -> Result<Vec<u64>, CatalogError> {
    let dirs = conn
        .prepare_cached("SELECT ino FROM temp.changed_dirs")?
        .query_map([], |r| r.get::<_, i64>(0))?
        .map(|r| r.map(|ino| ino as u64))
        .collect::<Result<Vec<_>, _>>()?;
    if !dirs.is_empty() {
        conn.prepare_cached("DELETE FROM temp.changed_dirs")?
            .execute([])?;
    }
    Ok(dirs)
}
