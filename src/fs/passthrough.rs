//! FUSE passthrough bookkeeping: which inodes have open handles whose I/O goes straight to
//! their data file in the kernel, and through which backing file.
//!
//! The kernel's rule (fs/fuse/iomode.c): while an inode has a passthrough open, every other
//! open of it must be passthrough too, with the same backing file. So each inode has at most
//! one backing registration, shared by all its handles and dropped with the last one; and the
//! file-system layer never swaps the data file of an inode a writer opens (its copy-on-write
//! gives the copy to the upload snapshot instead, `store::cache`). The adapter
//! registers a backing inside `GlacierFs::open_then`, under the data file's lock
//! (`store::handles::OpenFiles::lock_data`) that every swap and eviction also takes, so the
//! file registered is the one later opens find.
//!
//! The registration itself (a `fuser::BackingId`) is created by the adapter, which owns the
//! kernel connection; it is kept here as an opaque token so this layer stays kernel-free.

use std::any::Any;
use std::collections::HashMap;
use std::fs::File;
use std::os::unix::fs::MetadataExt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

/// A backing registration, as the adapter made it.
pub type Token = Arc<dyn Any + Send + Sync>;

struct Slot {
    token: Token,
    /// (device, inode) of the data file the registration points at.
    file_id: (u64, u64),
    users: u32,
}

#[derive(Default)]
pub struct Backings {
    disabled: AtomicBool,
    slots: Mutex<HashMap<u64, Slot>>,
    by_handle: Mutex<HashMap<u64, u64>>,
}

impl Backings {
    /// Turns passthrough off for this mount (no capability, or the kernel refused).
    pub fn disable(&self, why: &str) {
        if !self.disabled.swap(true, Ordering::Relaxed) {
            log::info!("FUSE passthrough is off ({why}); file data is served by the daemon");
        }
    }

    pub fn enabled(&self) -> bool {
        !self.disabled.load(Ordering::Relaxed)
    }

    /// Whether some handle of `ino` is open through passthrough.
    pub fn in_use(&self, ino: u64) -> bool {
        crate::locks::lock(&self.slots).contains_key(&ino)
    }

    /// The registration handle `fh` of `ino` (opened on `file`) should use: the inode's
    /// existing one, or a new one from `register`. None means serve it in the daemon.
    pub fn acquire(
        &self,
        ino: u64,
        fh: u64,
        file: &File,
        register: impl FnOnce() -> std::io::Result<Token>,
    ) -> Option<Token> {
        if !self.enabled() {
            return None;
        }
        let meta = file.metadata().ok()?;
        let file_id = (meta.dev(), meta.ino());
        let mut slots = crate::locks::lock(&self.slots);
        let token = match slots.get_mut(&ino) {
            Some(slot) if slot.file_id == file_id => {
                slot.users += 1;
                slot.token.clone()
            }
            // The file layer never swaps the data file of an inode in passthrough use.
            Some(_) => return None,
            None => match register() {
                Ok(token) => {
                    slots.insert(
                        ino,
                        Slot {
                            token: token.clone(),
                            file_id,
                            users: 1,
                        },
                    );
                    token
                }
                Err(e) => {
                    self.disable(&e.to_string());
                    return None;
                }
            },
        };
        crate::locks::lock(&self.by_handle).insert(fh, ino);
        Some(token)
    }

    /// Called when handle `fh` is released; the last user drops the registration.
    pub fn release(&self, fh: u64) {
        let Some(ino) = crate::locks::lock(&self.by_handle).remove(&fh) else {
            return;
        };
        let mut slots = crate::locks::lock(&self.slots);
        if let Some(slot) = slots.get_mut(&ino) {
            slot.users -= 1;
            if slot.users == 0 {
                slots.remove(&ino);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_registration_per_inode_dropped_with_the_last_handle() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        std::fs::write(&path, b"x").unwrap();
        let b = Backings::default();
        let mut made = 0;
        let f = File::open(&path).unwrap();
        let t1 = b.acquire(7, 1, &f, || {
            made += 1;
            Ok(Arc::new(1u32) as Token)
        });
        let t2 = b.acquire(7, 2, &f, || {
            made += 1;
            Ok(Arc::new(2u32) as Token)
        });
        assert_eq!(made, 1);
        assert!(Arc::ptr_eq(&t1.unwrap(), &t2.unwrap()));
        // Another data file for the same inode cannot join: it is served by the daemon.
        let other = dir.path().join("g");
        std::fs::write(&other, b"y").unwrap();
        assert!(b
            .acquire(7, 3, &File::open(&other).unwrap(), || unreachable!())
            .is_none());
        b.release(1);
        assert!(b.in_use(7));
        b.release(2);
        assert!(!b.in_use(7));
    }

    #[test]
    fn a_refusal_turns_passthrough_off() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        std::fs::write(&path, b"x").unwrap();
        let b = Backings::default();
        let f = File::open(&path).unwrap();
        let r = b.acquire(1, 1, &f, || {
            Err(std::io::Error::from_raw_os_error(libc::EPERM))
        });
        assert!(r.is_none() && !b.enabled());
    }
}
