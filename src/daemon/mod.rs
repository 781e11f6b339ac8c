//! The mount's life cycle: checking the mountpoint (and clearing a stale mount a killed daemon
//! left), detaching into the background while still reporting start-up failures, the cache
//! directory and its lock, connecting to Glacier (or going offline), running the FUSE session,
//! and stopping cleanly on SIGTERM, SIGINT or an outside `umount`.

use std::ffi::CString;
use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use fuser::{Config, MountOption, SessionACL};

use crate::catalog::{vaults, Catalog, CatalogError, Identity};
use crate::config::MountArgs;
use crate::engine::inventory::{self, InventoryConfig, InventoryHandle};
use crate::engine::retrieve::{RetrieveOptions, Retriever};
use crate::engine::writeback::{WriteBack, WriteBackOptions};
use crate::fs::fuse::FuseAdapter;
use crate::fs::{FsOptions, GlacierFs, Services};
use crate::glacier::aws::{AwsGlacier, AwsOptions};
use crate::glacier::retry::{RetryPolicy, Retrying};
use crate::glacier::{ErrorKind, GlacierClient, GlacierError};
use crate::store::cache::DataStore;
use crate::store::handles::OpenFiles;

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
    #[error("no AWS credentials: {0}")]
    Credentials(String),
    #[error("Glacier endpoint unreachable and no catalog to browse offline: {0}")]
    Unreachable(String),
    #[error("Glacier refused the connection check: {0}")]
    Glacier(GlacierError),
    #[error("mounting failed: {0}")]
    Mount(std::io::Error),
    #[error("{0}")]
    Other(String),
}

const LOCK_FILE: &str = "lock";
const LOG_FILE: &str = "glacierfs.log";

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

/// Checks the mountpoint; a stale FUSE mount ("Transport endpoint is not connected") left by a
/// killed daemon is lazily unmounted first.
pub fn check_mountpoint(path: &Path) -> Result<PathBuf, MountError> {
    if is_stale(path) {
        log::warn!("clearing the stale mount at {}", path.display());
        lazy_unmount(path).map_err(MountError::Mount)?;
    }
    match std::fs::metadata(path) {
        Ok(m) if m.is_dir() => {}
        _ => return Err(MountError::NoMountpoint(path.to_owned())),
    }
    let canonical =
        std::fs::canonicalize(path).map_err(|_| MountError::NoMountpoint(path.to_owned()))?;
    if is_mount_point(&canonical) {
        return Err(MountError::Busy(canonical));
    }
    Ok(canonical)
}

/// A FUSE mount whose daemon is gone. statfs always reaches the daemon, where stat may be
/// answered from the kernel's attribute cache, so it is the reliable probe.
fn is_stale(path: &Path) -> bool {
    let Ok(c) = CString::new(path.as_os_str().as_bytes()) else {
        return false;
    };
    // SAFETY: statfs is plain data, for which all zeroes is a valid value.
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: `c` is a valid C string and `st` a writable statfs that outlives the call.
    let rc = unsafe { libc::statfs(c.as_ptr(), &mut st) };
    // While the kernel is still tearing the dead connection down, requests can also fail with
    // ECONNABORTED or EIO before they settle on ENOTCONN.
    rc != 0
        && matches!(
            std::io::Error::last_os_error().raw_os_error(),
            Some(libc::ENOTCONN | libc::ECONNABORTED | libc::EIO)
        )
}

fn is_mount_point(path: &Path) -> bool {
    let Ok(info) = std::fs::read_to_string("/proc/self/mountinfo") else {
        return false;
    };
    let target = path.as_os_str().as_bytes();
    info.lines().any(|line| {
        line.split(' ')
            .nth(4)
            .map(|m| unescape_mountinfo(m) == target)
            .unwrap_or(false)
    })
}

/// mountinfo escapes space, tab, newline and backslash as \ooo.
fn unescape_mountinfo(s: &str) -> Vec<u8> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let octal = b
            .get(i + 1..i + 4)
            .filter(|d| d.iter().all(|c| (b'0'..=b'7').contains(c)));
        match octal {
            Some(d) if b[i] == b'\\' => {
                out.push((d[0] - b'0') * 64 + (d[1] - b'0') * 8 + (d[2] - b'0'));
                i += 4;
            }
            _ => {
                out.push(b[i]);
                i += 1;
            }
        }
    }
    out
}

pub fn lazy_unmount(path: &Path) -> std::io::Result<()> {
    let c = CString::new(path.as_os_str().as_bytes())?;
    // SAFETY: a valid NUL-terminated path.
    let rc = unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// The write end of the start-up pipe: the detached daemon says "ready" or why it failed.
pub struct StartupReporter {
    fd: Option<OwnedFd>,
}

impl StartupReporter {
    pub fn foreground() -> Self {
        StartupReporter { fd: None }
    }

    fn send(&mut self, msg: &str) {
        if let Some(fd) = self.fd.take() {
            let mut f = File::from(fd);
            let _ = f.write_all(msg.as_bytes());
        }
    }

    pub fn ready(&mut self) {
        self.send("ready\n");
    }

    pub fn failed(&mut self, err: &MountError) {
        self.send(&format!("{err}\n"));
    }
}

/// Forks into the background. The parent waits for the child's verdict and exits with it; the
/// child returns a reporter to deliver that verdict. Must run before any thread is started.
pub fn detach() -> std::io::Result<StartupReporter> {
    let mut fds = [0; 2];
    // SAFETY: fds is a valid two-element array.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: both descriptors were just created and are owned here.
    let (read_end, write_end) =
        unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    // SAFETY: single-threaded at this point (checked by the caller's contract).
    match unsafe { libc::fork() } {
        -1 => Err(std::io::Error::last_os_error()),
        0 => {
            drop(read_end);
            // SAFETY: plain syscall in the child.
            unsafe { libc::setsid() };
            redirect_stdio_to_null();
            Ok(StartupReporter {
                fd: Some(write_end),
            })
        }
        _child => {
            drop(write_end);
            let mut verdict = String::new();
            let _ = File::from(read_end).read_to_string(&mut verdict);
            match verdict.trim_end() {
                "ready" => std::process::exit(0),
                "" => {
                    eprintln!("glacierfs: the daemon exited during start-up; see its log");
                    std::process::exit(1)
                }
                msg => {
                    eprintln!("glacierfs: {msg}");
                    std::process::exit(1)
                }
            }
        }
    }
}

fn redirect_stdio_to_null() {
    if let Ok(null) = OpenOptions::new().read(true).write(true).open("/dev/null") {
        for fd in 0..3 {
            // SAFETY: dup2 onto the standard descriptors.
            unsafe { libc::dup2(null.as_raw_fd(), fd) };
        }
    }
}

/// The log file of a detached daemon, in the cache directory.
pub fn open_log(cache_dir: &Path) -> std::io::Result<File> {
    OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(cache_dir.join(LOG_FILE))
}

/// Everything up to and including the FUSE session; returns when the file system is unmounted.
pub fn run(
    args: &MountArgs,
    cache_dir: &Path,
    mountpoint: &Path,
    reporter: &mut StartupReporter,
) -> Result<(), MountError> {
    prepare_cache_dir(cache_dir)?;
    let _lock = CacheLock::acquire(cache_dir)?;
    let catalog = Catalog::open(cache_dir)?;
    let had_identity = catalog.identity()?.is_some();

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("glacierfs-rt")
        .enable_all()
        .build()
        .map_err(|e| MountError::Other(format!("cannot start the runtime: {e}")))?;
    let aws = runtime
        .block_on(AwsGlacier::connect(&AwsOptions {
            region: args.aws.region.clone(),
            profile: args.aws.profile.clone(),
            endpoint_url: args.aws.endpoint_url.clone(),
            account_id: args.aws.account_id.clone(),
            connect_timeout: Some(Duration::from_secs(3)),
        }))
        .map_err(|e| MountError::Other(e.message))?;
    let identity = Identity {
        endpoint: args.aws.endpoint_url.clone().unwrap_or_default(),
        region: aws.region().to_owned(),
        account: args.aws.account_id.clone(),
    };
    // A catalog that belongs elsewhere is refused now; a new one is bound only once the
    // endpoint has answered, so a mistyped endpoint does not claim the cache for itself.
    if had_identity {
        catalog.bind_identity(&identity)?;
    }
    // An imported inventory (no endpoint recorded yet) can be browsed offline too.
    let browsable = had_identity || !catalog.read(crate::catalog::vaults::all)?.is_empty();
    let cache_size = args.cache_size;
    catalog.write(move |tx| {
        // For `glacierfs status`, which reads the catalog without the mount's options.
        tx.execute(
            "INSERT OR REPLACE INTO meta (key, value) VALUES ('cache_size', ?1)",
            [cache_size.to_string()],
        )?;
        Ok(())
    })?;
    let raw: Arc<dyn GlacierClient> = Arc::new(aws);
    let client: Arc<dyn GlacierClient> =
        Arc::new(Retrying::new(raw.clone(), RetryPolicy::default()));

    // A short retry policy: one throttled reply must not fail a mount, but an unreachable
    // endpoint should be told apart from a reachable one quickly.
    let probe = Retrying::new(
        raw.clone(),
        RetryPolicy {
            max_attempts: 3,
            base: Duration::from_millis(200),
            cap: Duration::from_secs(1),
        },
    );
    match runtime.block_on(inventory::refresh_vault_list(&catalog, &probe)) {
        Ok(n) => {
            log::info!("connected: {n} vaults");
            if !had_identity {
                catalog.bind_identity(&identity)?;
            }
        }
        Err(inventory::InventoryError::Glacier(e)) => match e.kind {
            ErrorKind::Credentials => return Err(MountError::Credentials(e.message)),
            ErrorKind::Transient if browsable => {
                log::warn!("Glacier is unreachable ({e}); browsing the catalog offline")
            }
            ErrorKind::Transient => return Err(MountError::Unreachable(e.to_string())),
            _ => return Err(MountError::Glacier(e)),
        },
        Err(e) => return Err(MountError::Other(e.to_string())),
    }

    let retry_interval = args.poll_interval.max(Duration::from_secs(1));
    let inventory = InventoryHandle::new(InventoryConfig {
        catalog: catalog.clone(),
        client: client.clone(),
        cache_dir: cache_dir.to_owned(),
        max_age: args.inventory_max_age,
        poll_interval: args.poll_interval,
        runtime: runtime.handle().clone(),
    });
    resume_vault_work(&catalog, &client, runtime.handle(), retry_interval)?;
    spawn_vault_list_refresh(
        &catalog,
        &client,
        runtime.handle(),
        retry_interval.max(Duration::from_secs(30)),
    );

    let (uid, gid) = owner(args);
    let data =
        DataStore::open(cache_dir).map_err(|e| MountError::CacheDir(cache_dir.to_owned(), e))?;
    // Before anything is served: staged files whose catalog was lost come back first.
    match crate::engine::recovery::recover_staged(&catalog, &data) {
        Ok(0) => {}
        Ok(n) => log::warn!("{n} staged file(s) recovered from their sidecars"),
        Err(e) => return Err(e.into()),
    }
    let open_files = Arc::new(OpenFiles::default());
    let writeback = WriteBack::new(
        catalog.clone(),
        client.clone(),
        data.clone(),
        open_files.clone(),
        WriteBackOptions {
            delay: args.write_back_delay,
            part_size: args.part_size,
            concurrency: args.upload_concurrency as usize,
            memory_budget: args.memory_budget,
            delete_delay: args.delete_delay,
        },
    );
    if !args.read_only {
        writeback.spawn(runtime.handle());
    }
    let retriever = Retriever::new(
        catalog.clone(),
        client.clone(),
        data.clone(),
        RetrieveOptions {
            tier: args.tier,
            auto: !args.no_auto_retrieve,
            budget: args.retrieval_budget,
            poll_interval: args.poll_interval,
            cache_size: args.cache_size,
        },
        runtime.handle().clone(),
        open_files.clone(),
    );
    retriever.spawn();
    let fs = GlacierFs::new(
        catalog.clone(),
        FsOptions {
            uid,
            gid,
            read_only: args.read_only,
            cache_dir: cache_dir.to_owned(),
            retry_interval,
            delete_delay: args.delete_delay,
        },
        Services {
            runtime: runtime.handle().clone(),
            client,
            inventory,
            writeback,
            retriever,
        },
        data,
        open_files,
    );
    if args.no_passthrough {
        fs.backings().disable("--no-passthrough");
    }
    let mut session = fuser::Session::new(FuseAdapter::new(fs), mountpoint, &fuse_config(args))
        .map_err(MountError::Mount)?;
    log::info!("mounted at {}", mountpoint.display());
    crate::fs::invalidate::spawn(catalog.watch(), session.notifier());
    let mut unmounter = session.unmount_callable();
    let mountpoint_owned = mountpoint.to_owned();
    runtime.spawn(async move {
        wait_for_stop_signal().await;
        log::info!("stopping: unmounting {}", mountpoint_owned.display());
        if let Err(e) = unmounter.unmount() {
            log::warn!("unmount failed ({e}); detaching lazily");
            let _ = lazy_unmount(&mountpoint_owned);
        }
    });
    spawn_catalog_copies(&catalog, runtime.handle());
    reporter.ready();
    let result = session.run();
    log::info!("unmounted; saving state");
    runtime.shutdown_timeout(Duration::from_secs(5));
    catalog.close();
    if let Err(e) = catalog.save_copy() {
        log::warn!("saving a copy of the catalog: {e}");
    }
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

fn owner(args: &MountArgs) -> (u32, u32) {
    // SAFETY: getuid/getgid cannot fail.
    let (uid, gid) = unsafe { (libc::getuid(), libc::getgid()) };
    (args.uid.unwrap_or(uid), args.gid.unwrap_or(gid))
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

/// Finishes vault creations and deletions a previous run recorded but did not see through.
fn resume_vault_work(
    catalog: &Catalog,
    client: &Arc<dyn GlacierClient>,
    runtime: &tokio::runtime::Handle,
    retry_interval: Duration,
) -> Result<(), MountError> {
    for v in catalog.read(vaults::all)? {
        match v.state.as_str() {
            "deleting" => crate::fs::spawn_vault_delete(
                runtime,
                client.clone(),
                catalog.clone(),
                v.name,
                v.ino,
                retry_interval,
            ),
            "creating" => {
                let (client, catalog) = (client.clone(), catalog.clone());
                runtime.spawn(async move {
                    match client.create_vault(&v.name).await {
                        Ok(()) => {
                            let _ = catalog
                                .write_async(move |tx| vaults::set_state(tx, v.ino, "present"))
                                .await;
                        }
                        Err(e) => log::warn!("re-creating vault {}: {e}", v.name),
                    }
                });
            }
            _ => {}
        }
    }
    Ok(())
}

fn spawn_vault_list_refresh(
    catalog: &Catalog,
    client: &Arc<dyn GlacierClient>,
    runtime: &tokio::runtime::Handle,
    every: Duration,
) {
    let (catalog, client) = (catalog.clone(), client.clone());
    runtime.spawn(async move {
        loop {
            tokio::time::sleep(every).await;
            if let Err(e) = inventory::refresh_vault_list(&catalog, client.as_ref()).await {
                log::debug!("refreshing the vault list: {e}");
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mountinfo_paths_are_unescaped() {
        assert_eq!(unescape_mountinfo("/mnt/a\\040b"), b"/mnt/a b".to_vec());
        assert_eq!(unescape_mountinfo("/plain"), b"/plain".to_vec());
    }

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
