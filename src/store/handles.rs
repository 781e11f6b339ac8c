//! Open files: the table of file handles, and the registry of which inodes are open for
//! writing, shared with the write-back queue (a file is never uploaded while a writer has it
//! open, and its upload starts only after the last close).

use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};

/// One open file.
#[derive(Debug)]
pub struct Handle {
    pub ino: u64,
    pub file: File,
    pub write: bool,
    /// Set by the first write or truncate through this handle.
    pub modified: AtomicBool,
    /// When this handle last wrote, in ns; decides whether close moves the mtime.
    pub last_write_ns: AtomicI64,
    /// The data file's (size, mtime) at open: writes through passthrough never reach the
    /// daemon, so close compares the file against these to tell whether it changed.
    pub opened_as: (u64, i64),
    /// The staged generation this open gave a clean file; a close without writes undoes it.
    pub marked_dirty: AtomicI64,
}

impl Handle {
    /// Records a write or truncate through this handle, at `now_ns`.
    pub fn mark_written(&self, now_ns: i64) {
        self.modified.store(true, Ordering::Relaxed);
        self.last_write_ns.store(now_ns, Ordering::Relaxed);
    }

    /// Whether the file was written through this handle, seen or unseen by the daemon, and
    /// when it last was.
    pub fn written(&self) -> (bool, i64) {
        use std::os::unix::fs::MetadataExt;
        let seen = self.modified.load(Ordering::Relaxed);
        let last = self.last_write_ns.load(Ordering::Relaxed);
        match self.file.metadata() {
            Ok(m) => {
                let now = (m.len(), m.mtime() * 1_000_000_000 + m.mtime_nsec());
                let unseen = now != self.opened_as;
                (seen || unseen, if unseen { last.max(now.1) } else { last })
            }
            Err(_) => (seen, last),
        }
    }
}

/// The handle table.
#[derive(Debug, Default)]
pub struct Handles {
    next: AtomicU64,
    table: Mutex<HashMap<u64, Arc<Handle>>>,
}

impl Handles {
    pub fn insert(&self, h: Handle) -> u64 {
        let fh = self.next.fetch_add(1, Ordering::Relaxed) + 1;
        crate::locks::lock(&self.table).insert(fh, Arc::new(h));
        fh
    }

    pub fn get(&self, fh: u64) -> Option<Arc<Handle>> {
        crate::locks::lock(&self.table).get(&fh).cloned()
    }

    pub fn remove(&self, fh: u64) -> Option<Arc<Handle>> {
        crate::locks::lock(&self.table).remove(&fh)
    }

    /// Any open handle of `ino`, for reading or writing.
    pub fn any_open(&self, ino: u64) -> Option<Arc<Handle>> {
        self.find(|h| h.ino == ino)
    }

    /// Any handle open for writing `ino`, to read its current size from.
    pub fn any_for(&self, ino: u64) -> Option<Arc<Handle>> {
        self.find(|h| h.ino == ino && h.write)
    }

    fn find(&self, pred: impl Fn(&Handle) -> bool) -> Option<Arc<Handle>> {
        crate::locks::lock(&self.table)
            .values()
            .find(|h| pred(h))
            .cloned()
    }
}

/// Which inodes are open for writing, and when each one's mtime was last set explicitly.
#[derive(Debug, Default)]
pub struct OpenFiles {
    writers: Mutex<HashMap<u64, u32>>,
    /// Every open handle, readers too: cached data that is open is never evicted.
    open: Mutex<HashMap<u64, u32>>,
    mtime_set_ns: Mutex<HashMap<u64, i64>>,
    /// Wakes the write-back queue: a file was closed, or `sync` asked for an upload now.
    pub wake: tokio::sync::Notify,
    /// Inodes whose data file is locked now ([`OpenFiles::lock_data`]), and the signal that
    /// one was let go.
    data_locked: Mutex<HashSet<u64>>,
    data_freed: Condvar,
}

impl OpenFiles {
    pub fn opened(&self, ino: u64) {
        *crate::locks::lock(&self.open).entry(ino).or_insert(0) += 1;
    }

    pub fn closed(&self, ino: u64) {
        let mut open = crate::locks::lock(&self.open);
        match open.get_mut(&ino) {
            Some(n) if *n > 1 => *n -= 1,
            _ => {
                open.remove(&ino);
            }
        }
    }

    pub fn is_open(&self, ino: u64) -> bool {
        crate::locks::lock(&self.open).contains_key(&ino)
    }

    pub fn writers(&self, ino: u64) -> u32 {
        *crate::locks::lock(&self.writers).get(&ino).unwrap_or(&0)
    }

    /// A writer is opening `ino`: it counts as one from before its data file is unshared or
    /// truncated until the guard goes (by then its handle counts). Without this, the queue
    /// could freeze the data file between the writer's truncate and its handle, and the
    /// snapshot (a hard link) would take in the writer's bytes.
    pub fn opening_writer(&self, ino: u64) -> Opening<'_> {
        self.add_writer(ino);
        Opening { files: self, ino }
    }

    /// Runs `f` unless a writer has `ino` open or is opening it, holding the writers' table
    /// meanwhile, so no writer can start opening it until `f` is done. Eviction removes a
    /// data file through this: a writer that truncates it must not lose its new file.
    pub fn unless_written(&self, ino: u64, f: impl FnOnce()) -> bool {
        let writers = crate::locks::lock(&self.writers);
        if writers.contains_key(&ino) {
            return false;
        }
        f();
        drop(writers);
        true
    }

    /// Locks the data file of `ino` until the guard goes. An open and its passthrough
    /// registration, a swap of the data file (a copy-on-write unshare, a finished retrieval's
    /// rename) and its removal (eviction) each run under it: the kernel pins a backing to one
    /// file per inode, and an open that registered a file swapped or removed meanwhile made
    /// the next open of the inode fail with EIO. Not reentrant.
    pub fn lock_data(&self, ino: u64) -> DataLock<'_> {
        let mut locked = crate::locks::lock(&self.data_locked);
        while locked.contains(&ino) {
            locked = self
                .data_freed
                .wait(locked)
                .unwrap_or_else(|e| e.into_inner());
        }
        locked.insert(ino);
        DataLock { files: self, ino }
    }

    pub fn add_writer(&self, ino: u64) {
        *crate::locks::lock(&self.writers).entry(ino).or_insert(0) += 1;
    }

    /// Returns how many writers remain.
    pub fn remove_writer(&self, ino: u64) -> u32 {
        let mut w = crate::locks::lock(&self.writers);
        let left = match w.get_mut(&ino) {
            Some(n) if *n > 1 => {
                *n -= 1;
                *n
            }
            _ => {
                w.remove(&ino);
                0
            }
        };
        if left == 0 {
            crate::locks::lock(&self.mtime_set_ns).remove(&ino);
        }
        left
    }

    pub fn mtime_set(&self, ino: u64, at_ns: i64) {
        crate::locks::lock(&self.mtime_set_ns).insert(ino, at_ns);
    }

    pub fn mtime_set_at(&self, ino: u64) -> Option<i64> {
        crate::locks::lock(&self.mtime_set_ns).get(&ino).copied()
    }
}

/// A writer being opened; see [`OpenFiles::opening_writer`].
#[must_use]
pub struct Opening<'a> {
    files: &'a OpenFiles,
    ino: u64,
}

impl Drop for Opening<'_> {
    fn drop(&mut self) {
        self.files.remove_writer(self.ino);
    }
}

/// The lock on one inode's data file; see [`OpenFiles::lock_data`].
#[must_use]
pub struct DataLock<'a> {
    files: &'a OpenFiles,
    ino: u64,
}

impl Drop for DataLock<'_> {
    fn drop(&mut self) {
        crate::locks::lock(&self.files.data_locked).remove(&self.ino);
        self.files.data_freed.notify_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_writer_counts_while_it_is_being_opened() {
        let files = OpenFiles::default();
        {
            let _opening = files.opening_writer(7);
            assert_eq!(files.writers(7), 1, "counted before its handle exists");
            // Its handle counts from here on; the guard's end leaves that count.
            files.add_writer(7);
            files.mtime_set(7, 5);
        }
        assert_eq!(files.writers(7), 1);
        assert_eq!(files.mtime_set_at(7), Some(5));
        // An open that fails leaves nothing behind.
        drop(files.opening_writer(8));
        assert_eq!(files.writers(8), 0);
    }
}
