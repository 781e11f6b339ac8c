//! Space held back for the catalog: when the cache disk fills up, the writer deletes the
//! reserve file so the catalog can still record the deletes and closes that free space again;
//! the write-back queue makes it again once there is room.

use std::path::Path;

/// The reserve's file name in the cache directory.
pub(super) const RESERVE_FILE: &str = "catalog.reserve";
const RESERVE_BYTES: i64 = 2 << 20;

/// Gives the reserve up, so the next commit finds room.
pub(super) fn release(path: &Path) {
    if std::fs::remove_file(path).is_ok() {
        log::warn!("the cache disk is full: released the catalog's reserve space");
    }
}

/// (Re)creates the reserve when there is room for it.
pub fn ensure_reserve(dir: &Path) {
    use std::os::fd::AsRawFd;
    use std::os::unix::fs::OpenOptionsExt;
    let path = dir.join(RESERVE_FILE);
    if path.exists() {
        return;
    }
    let Ok(f) = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&path)
    else {
        return;
    };
    // SAFETY: fallocate on a descriptor we own; blocks are really allocated (not sparse).
    if unsafe { libc::fallocate(f.as_raw_fd(), 0, 0, RESERVE_BYTES) } != 0 {
        drop(f);
        let _ = std::fs::remove_file(&path);
    }
}
