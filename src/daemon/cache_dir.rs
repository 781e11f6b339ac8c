//! The cache directory a mount owns: created private (0700), and held by an exclusive lock
//! for as long as the mount runs, so that two mounts never share one catalog. The lock file
//! names the holder's pid, for the message a second mount shows and for `glacierfs status`.

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;

use super::MountError;

const LOCK_FILE: &str = "lock";

/// Everything glacierfs creates is private: 0700 directories, 0600 files, whatever the
/// caller's umask. Set before anything is created.
pub fn private_umask() {
    // SAFETY: umask has no preconditions and cannot fail.
    unsafe { libc::umask(0o077) };
}

/// Creates the cache directory 0700 (tightening an existing one), whatever the umask.
pub fn prepare_cache_dir(dir: &Path) -> Result<(), MountError> {
    let err = |e| MountError::CacheDir(dir.to_owned(), e);
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(err)?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700)).map_err(err)
}

/// The exclusive lock that keeps a second mount off a cache directory. Held until dropped.
pub struct CacheLock {
    _file: File,
}

impl CacheLock {
    /// The pid of the mount holding `dir`'s lock, if one does.
    pub fn holder(dir: &Path) -> Option<u32> {
        let mut file = OpenOptions::new()
            .read(true)
            .open(dir.join(LOCK_FILE))
            .ok()?;
        // SAFETY: flock on a descriptor we own; released when it closes.
        if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_SH | libc::LOCK_NB) } == 0 {
            return None;
        }
        let mut text = String::new();
        let _ = file.read_to_string(&mut text);
        text.trim().parse().ok().or(Some(0))
    }

    pub fn acquire(dir: &Path) -> Result<CacheLock, MountError> {
        let path = dir.join(LOCK_FILE);
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(&path)
            .map_err(|e| MountError::CacheDir(dir.to_owned(), e))?;
        // SAFETY: flock on a descriptor we own.
        let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
        if rc != 0 {
            let mut text = String::new();
            let _ = file.read_to_string(&mut text);
            return Err(MountError::Locked {
                dir: dir.to_owned(),
                pid: text.trim().parse().ok(),
            });
        }
        file.set_len(0)
            .and_then(|_| file.write_all(format!("{}\n", std::process::id()).as_bytes()))
            .map_err(|e| MountError::CacheDir(dir.to_owned(), e))?;
        Ok(CacheLock { _file: file })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_lock_on_a_cache_directory_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let _first = CacheLock::acquire(dir.path()).unwrap();
        match CacheLock::acquire(dir.path()) {
            Err(MountError::Locked { pid, .. }) => assert_eq!(pid, Some(std::process::id())),
            other => panic!("expected Locked, got {:?}", other.err()),
        }
    }

    #[test]
    fn cache_directory_is_private_whatever_the_umask() {
        let dir = tempfile::tempdir().unwrap();
        let cache = dir.path().join("c");
        std::fs::create_dir(&cache).unwrap();
        std::fs::set_permissions(&cache, std::fs::Permissions::from_mode(0o755)).unwrap();
        prepare_cache_dir(&cache).unwrap();
        let mode = std::fs::metadata(&cache).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o700);
    }
}
