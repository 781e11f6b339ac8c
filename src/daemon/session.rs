//! The mount itself: the stack behind a FUSE session, the kernel's cache invalidations, a
//! stop on SIGTERM or SIGINT (an outside `umount` ends the session the same way), catalog
//! copies while mounted, and the clean stop once the session is over.

use std::path::Path;
use std::time::Duration;

use fuser::{Config, MountOption, SessionACL};

use crate::catalog::Catalog;
use crate::config::MountArgs;
use crate::fs::fuse::FuseAdapter;

use super::detach::StartupReporter;
use super::mountpoint::lazy_unmount;
use super::stack::Stack;
use super::MountError;

/// Everything up to and including the FUSE session; returns when the file system is unmounted.
pub fn run(
    args: &MountArgs,
    cache_dir: &Path,
    mountpoint: &Path,
    reporter: &mut StartupReporter,
) -> Result<(), MountError> {
    let (fs, base) = Stack::start(args, cache_dir)?.into_parts();
    let mut session = fuser::Session::new(FuseAdapter::new(fs), mountpoint, &fuse_config(args))
        .map_err(MountError::Mount)?;
    log::info!("mounted at {}", mountpoint.display());
    crate::fs::invalidate::spawn(base.catalog().watch(), session.notifier());
    let mut unmounter = session.unmount_callable();
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
            if age.map_or(true, |a| a >= MAX_AGE) {
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

fn fuse_config(args: &MountArgs) -> Config {
    let mut config = Config::default();
    config.mount_options = vec![
        MountOption::FSName("glacierfs".into()),
        MountOption::Subtype("glacierfs".into()),
        MountOption::NoDev,
        MountOption::NoSuid,
        if args.read_only {
            MountOption::RO
        } else {
            MountOption::RW
        },
    ];
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
