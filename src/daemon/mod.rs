//! The mount's life cycle, one job per module: `mountpoint` checks the mountpoint and clears a
//! stale mount a killed daemon left; `detach` goes into the background while still reporting
//! start-up failures; `cache_dir` prepares the cache directory and holds its lock; `stack`
//! assembles everything below FUSE (and is what in-process tests start); `session` mounts
//! (type `fuse.glacierfs`), runs the FUSE session and stops cleanly on SIGTERM, SIGINT or an
//! outside `umount`.

mod cache_dir;
mod detach;
mod mountpoint;
mod session;
pub mod stack;

use std::path::PathBuf;

use crate::catalog::CatalogError;
use crate::engine::inventory::InventoryError;
use crate::glacier::GlacierError;

pub use crate::config::{MountFlags, FS_SOURCE, FS_TYPE};
pub use cache_dir::{prepare_cache_dir, private_umask, CacheLock};
pub use detach::{detach, open_log, StartupReporter};
pub use mountpoint::{check_mountpoint, lazy_unmount};
pub use session::run;
pub use stack::Stack;

/// Why a mount could not start; each says what to do about it.
#[derive(Debug, thiserror::Error)]
pub enum MountError {
    #[error("mountpoint {0} does not exist or is not a directory")]
    NoMountpoint(PathBuf),
    #[error("mountpoint {0} is busy: something is already mounted there")]
    Busy(PathBuf),
    #[error("cache directory {dir} is in use by another glacierfs mount{}", .pid.map(|p| format!(" (pid {p})")).unwrap_or_default())]
    Locked { dir: PathBuf, pid: Option<u32> },
    #[error("cannot prepare cache directory {0}: {1}")]
    CacheDir(PathBuf, std::io::Error),
    #[error(transparent)]
    Catalog(#[from] CatalogError),
    #[error("cannot start the runtime: {0}")]
    Runtime(std::io::Error),
    /// The client could not be set up (no region, say); the message says why.
    #[error("{}", .0.message)]
    Connect(GlacierError),
    #[error("no AWS credentials: {}", .0.message)]
    Credentials(GlacierError),
    #[error("Glacier endpoint unreachable and no catalog to browse offline: {0}")]
    Unreachable(GlacierError),
    #[error("Glacier refused the connection check: {0}")]
    Glacier(GlacierError),
    #[error(transparent)]
    Inventory(InventoryError),
    #[error("mounting failed: {0}")]
    Mount(std::io::Error),
}
