//! The mount itself: the stack behind a FUSE session, the kernel's cache invalidations, a
//! stop on SIGTERM or SIGINT (an outside `umount` ends the session the same way), catalog
//! copies while mounted, and the clean stop once the session is over.
//!
//! Root mounts with mount(2) itself, as type `fuse.glacierfs` with source `glacierfs`, so the
//! mount table, `mount -t fuse.glacierfs`, fstab and systemd all name it alike (fuser's own
//! mount always says plain `fuse`); the kernel connection is then handed to fuser, which runs
//! the same INIT handshake (passthrough included) as for a mount it made. A user without the
//! right to mount goes through fuser and fusermount3, which gives the same type from the
//! subtype option.

use std::ffi::CString;
use std::fs::OpenOptions;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use fuser::{Config, MountOption, SessionACL};

use crate::catalog::Catalog;
use crate::config::{MountArgs, MountFlags, FS_SOURCE, FS_TYPE};
use crate::fs::fuse::FuseAdapter;

use super::detach::StartupReporter;
use super::mountpoint::lazy_unmount;
use super::stack::Stack;
use super::MountError;

/// Everything up to and including the FUSE session; returns when the file system is unmounted.
pub fn run(
    args: &MountArgs,
    flags: MountFlags,
    cache_dir: &Path,
    mountpoint: &Path,
    reporter: &mut StartupReporter,
) -> Result<(), MountError> {
    crate::engine::transfer::return_large_buffers_at_once();
    let (fs, base) = Stack::start(args, cache_dir)?.into_parts();
    // Started before the kernel can cache anything: its long TTLs and cached listings rely on
    // hearing of every change made behind its back.
    let feed = base.catalog().watch()?;
    let (session, mut unmounter) = open_session(FuseAdapter::new(fs), args, flags, mountpoint)?;
    log::info!("mounted at {}", mountpoint.display());
    crate::fs::invalidate::spawn(feed, session.notifier());
    let mountpoint_owned = mountpoint.to_owned();
    base.runtime().spawn(async move {
        wait_for_stop_signal().await;
        log::info!("stopping: unmounting {}", mountpoint_owned.display());
        if let Err(e) = unmounter.unmount() {
            log::warn!("unmount failed ({e}); detaching lazily");
            let _ = lazy_unmount(&mountpoint_owned);
        }
    });
    spawn_catalog_copies(base.catalog(), base.runtime());
    reporter.ready();
    let result = session.run();
    log::info!("unmounted; saving state");
    base.stop(true);
    result.map_err(MountError::Mount)
}

/// Keeps a catalog copy no older than a day while mounted, for `glacierfs catalog rebuild`; the
/// first is saved a few minutes after the mount (out of the way of its start-up), so even a
/// mount that never stops cleanly has one.
fn spawn_catalog_copies(catalog: &Catalog, runtime: &tokio::runtime::Handle) {
    const MAX_AGE: Duration = Duration::from_secs(86_400);
    let catalog = catalog.clone();
    runtime.spawn(async move {
        tokio::time::sleep(Duration::from_secs(300)).await;
        loop {
            let age = std::fs::metadata(catalog.copy_path())
                .and_then(|m| m.modified())
                .ok()
                .and_then(|t| t.elapsed().ok());
            if age.is_none_or(|a| a >= MAX_AGE) {
                let c = catalog.clone();
                match tokio::task::spawn_blocking(move || c.save_copy()).await {
                    Ok(Ok(())) => log::debug!("saved a copy of the catalog"),
                    Ok(Err(e)) => log::warn!("saving a copy of the catalog: {e}"),
                    Err(e) => log::warn!("saving a copy of the catalog: {e}"),
                }
            }
            tokio::time::sleep(Duration::from_secs(3600)).await;
        }
    });
}

async fn wait_for_stop_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        return std::future::pending().await;
    };
    tokio::select! {
        _ = term.recv() => {},
        _ = int.recv() => {},
    }
}

/// Mounts and starts the session: with mount(2) where we may, else through fuser and
/// fusermount3. Either way the session has done the INIT handshake when this returns.
fn open_session(
    adapter: FuseAdapter,
    args: &MountArgs,
    flags: MountFlags,
    mountpoint: &Path,
) -> Result<(fuser::Session<FuseAdapter>, Unmounter), MountError> {
    let config = fuse_config(args, flags);
    // SAFETY: geteuid has no preconditions.
    let device = if unsafe { libc::geteuid() } == 0 {
        mount_direct(mountpoint, args, flags).map_err(MountError::Mount)?
    } else {
        None
    };
    let Some(device) = device else {
        let mut session =
            fuser::Session::new(adapter, mountpoint, &config).map_err(MountError::Mount)?;
        let unmounter = Unmounter::Fuser(session.unmount_callable());
        return Ok((session, unmounter));
    };
    let unmounter = Unmounter::Direct {
        mountpoint: mountpoint.to_owned(),
        device: device.try_clone().map_err(MountError::Mount)?,
    };
    match fuser::Session::from_fd(adapter, device, config.acl, config) {
        Ok(session) => Ok((session, unmounter)),
        Err(e) => {
            // The kernel has the mount but nobody will ever answer it: take it away again.
            let _ = lazy_unmount(mountpoint);
            Err(MountError::Mount(e))
        }
    }
}

/// mount(2) of a `fuse.glacierfs` file system, as libfuse does it for root: a fresh
/// /dev/fuse connection named in the data, the owner the kernel lets in, and the flags.
/// `Ok(None)` when the kernel says we may not (root without CAP_SYS_ADMIN, say), so the
/// caller goes through fusermount3 instead.
fn mount_direct(
    mountpoint: &Path,
    args: &MountArgs,
    flags: MountFlags,
) -> std::io::Result<Option<OwnedFd>> {
    let device = OwnedFd::from(
        OpenOptions::new()
            .read(true)
            .write(true)
            .open("/dev/fuse")?,
    );
    let root_mode = std::fs::metadata(mountpoint)?.mode() & libc::S_IFMT;
    // SAFETY: getuid and getgid have no preconditions.
    let (uid, gid) = unsafe { (libc::getuid(), libc::getgid()) };
    let data = kernel_options(device.as_raw_fd(), root_mode, uid, gid, args);
    let mut ms = libc::MS_NOSUID | libc::MS_NODEV;
    if args.read_only {
        ms |= libc::MS_RDONLY;
    }
    if flags.noexec {
        ms |= libc::MS_NOEXEC;
    }
    let target = CString::new(mountpoint.as_os_str().as_bytes())?;
    let source = CString::new(FS_SOURCE)?;
    let fstype = CString::new(FS_TYPE)?;
    let data = CString::new(data)?;
    // SAFETY: every pointer is a NUL-terminated string that outlives the call.
    let rc = unsafe {
        libc::mount(
            source.as_ptr(),
            target.as_ptr(),
            fstype.as_ptr(),
            ms,
            data.as_ptr().cast(),
        )
    };
    if rc == 0 {
        return Ok(Some(device));
    }
    let err = std::io::Error::last_os_error();
    if err.raw_os_error() == Some(libc::EPERM) {
        log::debug!("mount(2) refused ({err}); mounting through fusermount3");
        return Ok(None);
    }
    Err(err)
}

/// The FUSE file system's own options, as the kernel parses them from mount(2)'s data.
fn kernel_options(fd: i32, root_mode: u32, uid: u32, gid: u32, args: &MountArgs) -> String {
    let mut data = format!("fd={fd},rootmode={root_mode:o},user_id={uid},group_id={gid}");
    // The kernel knows only allow_other; fuser lets root alone in besides the owner for
    // --allow-root (the session's ACL), as with a mount fusermount3 made.
    if args.allow_other || args.allow_root {
        data.push_str(",allow_other");
    }
    if args.allow_other {
        data.push_str(",default_permissions");
    }
    data
}

/// Takes the mount away on SIGTERM or SIGINT, whichever way it was made.
enum Unmounter {
    Fuser(fuser::SessionUnmounter),
    /// Our own mount(2): `device` is a second handle on its connection, which tells whether the
    /// mount is still this one before the path is unmounted (after an outside `umount`,
    /// something else may have been mounted there since).
    Direct {
        mountpoint: PathBuf,
        device: OwnedFd,
    },
}

impl Unmounter {
    fn unmount(&mut self) -> std::io::Result<()> {
        match self {
            Unmounter::Fuser(u) => u.unmount(),
            Unmounter::Direct { mountpoint, device } => {
                if !connected(device) {
                    return Ok(());
                }
                let c = CString::new(mountpoint.as_os_str().as_bytes())?;
                // SAFETY: a valid NUL-terminated path.
                if unsafe { libc::umount2(c.as_ptr(), 0) } == 0 {
                    Ok(())
                } else {
                    Err(std::io::Error::last_os_error())
                }
            }
        }
    }
}

/// Whether a FUSE connection still has its mount: /dev/fuse polls as an error once the
/// connection is gone.
fn connected(device: &OwnedFd) -> bool {
    let mut pfd = libc::pollfd {
        fd: device.as_fd().as_raw_fd(),
        events: 0,
        revents: 0,
    };
    // SAFETY: one valid pollfd, a zero timeout.
    let rc = unsafe { libc::poll(&mut pfd, 1, 0) };
    !(rc == 1 && pfd.revents & libc::POLLERR != 0)
}

fn fuse_config(args: &MountArgs, flags: MountFlags) -> Config {
    let mut config = Config::default();
    config.mount_options = vec![
        MountOption::FSName(FS_SOURCE.into()),
        MountOption::Subtype("glacierfs".into()),
        MountOption::NoDev,
        MountOption::NoSuid,
        if args.read_only {
            MountOption::RO
        } else {
            MountOption::RW
        },
    ];
    if flags.noexec {
        config.mount_options.push(MountOption::NoExec);
    }
    config.acl = if args.allow_other {
        // Other users see the mount, so the kernel must check permissions for them.
        config.mount_options.push(MountOption::DefaultPermissions);
        SessionACL::All
    } else if args.allow_root {
        SessionACL::RootAndOwner
    } else {
        SessionACL::Owner
    };
    config.n_threads = Some(4);
    config
}
