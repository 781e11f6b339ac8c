//! The whole stack below FUSE, assembled and stopped in one place: the catalog (bound to the
//! Glacier it mirrors), the Glacier client and its retries, the inventory worker, the data
//! store with staged files recovered, the open-file table, the write-back queue, the
//! retriever, the namespace snapshot engine, and the [`GlacierFs`] they serve. The mount puts a FUSE session in front of it
//! (`session`); tests call [`Stack::fs`] directly, with no kernel in between, so both run the
//! very same assembly.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use crate::catalog::{meta, vaults, Catalog, Identity};
use crate::config::MountArgs;
use crate::engine::inventory::{self, InventoryConfig, InventoryHandle};
use crate::engine::retrieve::{RetrieveOptions, Retriever};
use crate::engine::snapshot::{SnapshotOptions, Snapshots};
use crate::engine::writeback::{WriteBack, WriteBackOptions};
use crate::fs::peek::PeekRules;
use crate::fs::{FsOptions, GlacierFs, Services};
use crate::glacier::aws::{AwsGlacier, AwsOptions};
use crate::glacier::retry::{RetryPolicy, Retrying};
use crate::glacier::{ErrorKind, GlacierClient};
use crate::store::cache::DataStore;
use crate::store::handles::OpenFiles;

use super::cache_dir::{prepare_cache_dir, CacheLock};
use super::MountError;

/// How long a stop gives running tasks to reach their next await.
const STOP_GRACE: Duration = Duration::from_secs(5);

/// A running file system without its kernel side. Dropped, it stops as [`Stack::stop`] with
/// `clean: false` does.
pub struct Stack {
    // Dropped first: the handles go before the services behind them.
    fs: GlacierFs,
    base: Base,
}

/// What a stack runs on besides the file system itself: the catalog, the runtime of every
/// background task, and the cache directory's lock (released last).
pub struct Base {
    catalog: Catalog,
    runtime: tokio::runtime::Runtime,
    _lock: CacheLock,
}

impl Stack {
    /// Takes the cache directory, opens its catalog, connects to Glacier (or goes offline when
    /// the catalog can be browsed without it), recovers what a previous run left, and starts
    /// the background work. `args.mountpoint` is not looked at.
    pub fn start(args: &MountArgs, cache_dir: &Path) -> Result<Stack, MountError> {
        prepare_cache_dir(cache_dir)?;
        let lock = CacheLock::acquire(cache_dir)?;
        let catalog = Catalog::open(cache_dir)?;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("glacierfs-rt")
            .enable_all()
            .build()
            .map_err(MountError::Runtime)?;
        let client = connect(args, &catalog, &runtime)?;
        let fs = assemble(args, cache_dir, &catalog, client, runtime.handle())?;
        if args.no_passthrough {
            fs.backings().disable("--no-passthrough");
        }
        Ok(Stack {
            fs,
            base: Base {
                catalog,
                runtime,
                _lock: lock,
            },
        })
    }

    /// The file system, to call as the FUSE adapter would.
    pub fn fs(&self) -> &GlacierFs {
        &self.fs
    }

    pub fn catalog(&self) -> &Catalog {
        &self.base.catalog
    }

    pub fn runtime(&self) -> &tokio::runtime::Handle {
        self.base.runtime.handle()
    }

    /// Stops everything. Open handles are dropped without a release, as a killed daemon's
    /// are. `clean` also closes the catalog (marking the stop clean, so the next start skips
    /// the integrity check) and saves its copy; without it the next start finds what a crash
    /// at an await point would have left.
    pub fn stop(self, clean: bool) {
        let Stack { fs, base } = self;
        drop(fs);
        base.stop(clean);
    }

    /// The file system and the rest, for a FUSE session that takes the file system over.
    pub(super) fn into_parts(self) -> (GlacierFs, Base) {
        (self.fs, self.base)
    }
}

impl Base {
    pub fn catalog(&self) -> &Catalog {
        &self.catalog
    }

    pub fn runtime(&self) -> &tokio::runtime::Handle {
        self.runtime.handle()
    }

    /// Background tasks end at their next await (blocking ones are waited for), then, when
    /// `clean`, the catalog is closed and copied; an unclean stop abandons the catalog first,
    /// as a crash would leave it. The lock goes last.
    pub fn stop(self, clean: bool) {
        let Base {
            catalog,
            runtime,
            _lock,
        } = self;
        if !clean {
            // As a killed daemon: nothing queued commits, and nothing still running writes.
            catalog.abandon();
        }
        runtime.shutdown_timeout(STOP_GRACE);
        if clean {
            catalog.close();
            if let Err(e) = catalog.save_copy() {
                log::warn!("saving a copy of the catalog: {e}");
            }
        }
    }
}

/// The Glacier client (with retries), once the endpoint has answered, or once it is clear the
/// catalog can be browsed offline. The catalog is bound to this Glacier on the way.
fn connect(
    args: &MountArgs,
    catalog: &Catalog,
    runtime: &tokio::runtime::Runtime,
) -> Result<Arc<dyn GlacierClient>, MountError> {
    let had_identity = catalog.identity()?.is_some();
    let aws = runtime
        .block_on(AwsGlacier::connect(&AwsOptions {
            region: args.aws.region.clone(),
            profile: args.aws.profile.clone(),
            endpoint_url: args.aws.endpoint_url.clone(),
            account_id: args.aws.account_id.clone(),
            connect_timeout: Some(Duration::from_secs(3)),
        }))
        .map_err(MountError::Connect)?;
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
    let browsable = had_identity || !catalog.read(vaults::all)?.is_empty();
    let cache_size = args.cache_size;
    // For `glacierfs status`, which reads the catalog without the mount's options; its count
    // of refused peeks starts with the mount.
    catalog.write(move |tx| {
        meta::set_cache_size(tx, cache_size)?;
        meta::clear_refused_peeks(tx)
    })?;
    let raw: Arc<dyn GlacierClient> = Arc::new(aws);
    let client: Arc<dyn GlacierClient> =
        Arc::new(Retrying::new(raw.clone(), RetryPolicy::default()));

    // A short retry policy: one throttled reply must not fail a mount, but an unreachable
    // endpoint should be told apart from a reachable one quickly.
    let probe = Retrying::new(
        raw,
        RetryPolicy {
            max_attempts: 3,
            base: Duration::from_millis(200),
            cap: Duration::from_secs(1),
        },
    );
    match runtime.block_on(inventory::refresh_vault_list(catalog, &probe)) {
        Ok(n) => {
            log::info!("connected: {n} vaults");
            if !had_identity {
                catalog.bind_identity(&identity)?;
            }
        }
        Err(inventory::InventoryError::Glacier(e)) => match e.kind {
            ErrorKind::Credentials => return Err(MountError::Credentials(e)),
            ErrorKind::Transient if browsable => {
                log::warn!("Glacier is unreachable ({e}); browsing the catalog offline")
            }
            ErrorKind::Transient => return Err(MountError::Unreachable(e)),
            _ => return Err(MountError::Glacier(e)),
        },
        Err(e) => return Err(MountError::Inventory(e)),
    }
    Ok(client)
}

/// Everything from the inventory worker up to the file system, with the background work
/// started and the previous run's leftovers taken up.
fn assemble(
    args: &MountArgs,
    cache_dir: &Path,
    catalog: &Catalog,
    client: Arc<dyn GlacierClient>,
    runtime: &tokio::runtime::Handle,
) -> Result<GlacierFs, MountError> {
    let retry_interval = args.poll_interval.max(Duration::from_secs(1));
    let inventory = InventoryHandle::new(InventoryConfig {
        catalog: catalog.clone(),
        client: client.clone(),
        cache_dir: cache_dir.to_owned(),
        max_age: args.inventory_max_age,
        poll_interval: args.poll_interval,
        runtime: runtime.clone(),
    });
    resume_vault_work(catalog, &client, runtime, retry_interval)?;
    spawn_vault_list_refresh(
        catalog,
        &client,
        runtime,
        retry_interval.max(Duration::from_secs(30)),
    );
    spawn_limits_poll(catalog, &client, runtime, retry_interval);
    let data =
        DataStore::open(cache_dir).map_err(|e| MountError::CacheDir(cache_dir.to_owned(), e))?;
    // Before anything is served: staged files whose catalog was lost come back first.
    match crate::engine::recovery::recover_staged(catalog, &data) {
        Ok(0) => {}
        Ok(n) => log::warn!("{n} staged file(s) recovered from their sidecars"),
        Err(e) => return Err(e.into()),
    }
    let open_files = Arc::new(OpenFiles::default());
    let writeback = write_back(args, catalog, &client, &data, &open_files);
    if !args.read_only {
        // Before anything is served, like the recovery above.
        runtime.block_on(writeback.settle_interrupted_writers())?;
        writeback.spawn(runtime);
    }
    let retriever = Retriever::new(
        catalog.clone(),
        client.clone(),
        data.clone(),
        RetrieveOptions {
            tier: args.tier,
            auto: !args.no_auto_retrieve,
            budget: args.retrieval_budget,
            job_budget: args.retrieval_job_budget,
            poll_interval: args.poll_interval,
            cache_size: args.cache_size,
        },
        runtime.clone(),
        open_files.clone(),
    );
    retriever.spawn();
    let snapshots = Snapshots::new(
        catalog.clone(),
        client.clone(),
        cache_dir.to_owned(),
        SnapshotOptions {
            interval: args.snapshot_interval.0,
            part_size: args.part_size,
            tick: args.poll_interval.max(Duration::from_secs(1)),
            tier: args.tier,
        },
    );
    if !args.read_only {
        snapshots.spawn(runtime);
    }
    let services = Services {
        runtime: runtime.clone(),
        client,
        inventory,
        writeback,
        retriever,
    };
    let options = fs_options(args, cache_dir, retry_interval);
    let fs = GlacierFs::new(catalog.clone(), options, services, data, open_files);
    fs.set_snapshots(snapshots);
    Ok(fs)
}

fn write_back(
    args: &MountArgs,
    catalog: &Catalog,
    client: &Arc<dyn GlacierClient>,
    data: &DataStore,
    open_files: &Arc<OpenFiles>,
) -> Arc<WriteBack> {
    WriteBack::new(
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
    )
}

fn fs_options(args: &MountArgs, cache_dir: &Path, retry_interval: Duration) -> FsOptions {
    // SAFETY: getuid/getgid cannot fail.
    let (uid, gid) = unsafe { (libc::getuid(), libc::getgid()) };
    FsOptions {
        uid: args.uid.unwrap_or(uid),
        gid: args.gid.unwrap_or(gid),
        read_only: args.read_only,
        cache_dir: cache_dir.to_owned(),
        retry_interval,
        delete_delay: args.delete_delay,
        peek: PeekRules::new(args.retrieve_deny.clone(), args.retrieve_allow.clone()),
    }
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

/// Reads the account's limits (data-retrieval policy, provisioned capacity) at start and every
/// poll interval into the catalog, where `glacierfs status` and the warnings of `retrieve` and
/// `export` read them without the network. An endpoint without these calls leaves the parts it
/// cannot answer unknown, with the reason logged once.
fn spawn_limits_poll(
    catalog: &Catalog,
    client: &Arc<dyn GlacierClient>,
    runtime: &tokio::runtime::Handle,
    every: Duration,
) {
    let (catalog, client) = (catalog.clone(), client.clone());
    runtime.spawn(async move {
        let mut last_error: Option<String> = None;
        loop {
            let policy = client.get_retrieval_policy().await;
            let capacity = client.list_capacity().await;
            let error = [policy.as_ref().err(), capacity.as_ref().err()]
                .into_iter()
                .flatten()
                .map(ToString::to_string)
                .collect::<Vec<_>>();
            let error = (!error.is_empty()).then(|| error.join("; "));
            if error.is_some() && error != last_error {
                log::warn!(
                    "reading the account's limits: {}",
                    error.as_deref().unwrap_or_default()
                );
            }
            last_error.clone_from(&error);
            let limits = crate::catalog::meta::AccountLimits {
                checked_s: crate::catalog::now_s(),
                policy: policy.ok(),
                capacity: capacity.ok(),
                error,
            };
            if let Err(e) = catalog
                .write_async(move |tx| crate::catalog::meta::set_account_limits(tx, &limits))
                .await
            {
                log::debug!("recording the account's limits: {e}");
            }
            tokio::time::sleep(every).await;
        }
    });
}
