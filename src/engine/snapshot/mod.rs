//! Namespace snapshots in the vault (ARCHITECTURE.md, "Namespace snapshots"): what the catalog
//! knows of a vault's tree that descriptions cannot carry, uploaded as an archive of its own,
//! so losing the machine loses none of it.
//!
//! This engine owns when a snapshot goes up and what becomes of the old ones:
//! - **When.** Every tick it looks at each vault: a snapshot is due when the tree's entries
//!   differ from the last one taken and that one is older than `--snapshot-interval`, or at
//!   once when `glacierfs sync --snapshot` asks. A vault with no snapshot yet gets its first
//!   once this catalog has seen it hold a tree for the interval (kept in the catalog, so
//!   restarts do not put it off; a vault's first tree is often a copy still under way). Never
//!   for a vault whose inventory is not in yet, nor for one holding a snapshot this catalog has no history of: that tree is the
//!   descriptions' names only, and uploading it would make it the newest.
//! - **How.** The encoded snapshot is written to `<cache>/snapshots/` and uploaded by the
//!   upload engine with its journal in the snapshot's row, so a restart settles an upload cut
//!   off at any instant: a multipart upload is resumed or repeated, an unrecorded one aborted,
//!   and a single upload whose reply was lost sent again, the inventory then deleting the twin.
//! - **Retention.** The newest confirmed snapshot is kept; older ones go through the delete
//!   queue once 90 days old, when Glacier no longer charges for deleting them early.
//!
//! Restoring one (`glacierfs catalog restore`) is in [`restore`].

mod restore;

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::Notify;

use crate::catalog::snapshots::{self, SnapshotRow};
use crate::catalog::{meta, vaults, Catalog, CatalogError};
use crate::codec::names::snapshot as description;
use crate::codec::snapshot::{self as format, Snapshot};
use crate::codec::treehash::{self, Digest};
use crate::config::Tiers;
use crate::engine::transfer::upload::{
    self, JournalError, Resume, UploadError, UploadJournal, UploadLimits, UploadSpec,
};
use crate::glacier::GlacierClient;
use crate::locks::lock;

/// The cache's folder for encoded snapshots: those being uploaded, and those retrieved.
pub const DIR: &str = "snapshots";

/// Why a snapshot could not be taken or restored; each message is one line.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    #[error(transparent)]
    Catalog(#[from] CatalogError),
    #[error("snapshot file: {0}")]
    Io(#[from] std::io::Error),
    #[error("uploading the snapshot: {0}")]
    Upload(#[from] UploadError),
    #[error(transparent)]
    Glacier(#[from] crate::glacier::GlacierError),
    #[error("downloading the snapshot: {0}")]
    Download(#[from] crate::engine::transfer::download::DownloadError),
    #[error(transparent)]
    Format(#[from] format::SnapshotError),
    #[error(
        "vault {0} holds a snapshot this catalog has no history of: run `glacierfs catalog \
         restore` on it first"
    )]
    NoHistory(String),
    #[error(transparent)]
    NoCapacity(#[from] crate::config::NoCapacity),
    #[error("vault {0} holds no snapshot to restore")]
    NoSnapshot(String),
    #[error("vault {0} is not in the catalog")]
    NoVault(u64),
}

impl SnapshotError {
    /// Whether trying again later may succeed; a restore that fails otherwise is marked failed
    /// until asked for again.
    pub fn is_transient(&self) -> bool {
        match self {
            SnapshotError::Catalog(_) => true,
            SnapshotError::Glacier(e) => e.is_transient(),
            SnapshotError::Download(e) => e.is_transient(),
            SnapshotError::Upload(e) => e.is_transient(),
            SnapshotError::Io(_)
            | SnapshotError::Format(_)
            | SnapshotError::NoHistory(_)
            | SnapshotError::NoSnapshot(_)
            | SnapshotError::NoCapacity(_)
            | SnapshotError::NoVault(_) => false,
        }
    }
}

/// How the engine runs.
#[derive(Debug, Clone)]
pub struct SnapshotOptions {
    /// `None`: no snapshot is taken unless asked for.
    pub interval: Option<Duration>,
    pub part_size: u64,
    /// How often vaults and running restores are looked at.
    pub tick: Duration,
    /// The tier of a restore that names none.
    pub tier: Tiers,
}

/// The engine; one per mount.
pub struct Snapshots {
    catalog: Catalog,
    client: Arc<dyn GlacierClient>,
    cache_dir: PathBuf,
    options: SnapshotOptions,
    limits: UploadLimits,
    wake: Notify,
    /// Vaults `sync --snapshot` asked for.
    asked: Mutex<HashSet<u64>>,
    /// Vaults whose snapshot is being uploaded now.
    uploading: Mutex<HashSet<u64>>,
    /// Vaults the log was told have a snapshot without history.
    warned: Mutex<HashSet<u64>>,
    /// Vaults due by time whose tree was found unchanged, and when.
    unchanged: Mutex<HashMap<u64, i64>>,
}

/// How long a tree due by time but found unchanged is left before it is looked at again (at
/// most; an interval shorter than this is used instead). An hour against the default day's
/// interval: a change is snapshotted at most an hour late, and a vault of millions of entries
/// is read once an hour rather than at every tick.
const RECHECK_UNCHANGED_S: i64 = 3600;

impl Snapshots {
    pub fn new(
        catalog: Catalog,
        client: Arc<dyn GlacierClient>,
        cache_dir: PathBuf,
        options: SnapshotOptions,
    ) -> Arc<Snapshots> {
        // One snapshot at a time, within one part of memory.
        let limits = UploadLimits::new(1, options.part_size, options.part_size);
        Arc::new(Snapshots {
            catalog,
            client,
            cache_dir,
            options,
            limits,
            wake: Notify::new(),
            asked: Mutex::new(HashSet::new()),
            uploading: Mutex::new(HashSet::new()),
            warned: Mutex::new(HashSet::new()),
            unchanged: Mutex::new(HashMap::new()),
        })
    }

    /// Starts the engine: each round settles what a previous run or attempt left, then looks
    /// at every vault.
    pub fn spawn(self: &Arc<Self>, runtime: &tokio::runtime::Handle) {
        let me = self.clone();
        runtime.spawn(async move {
            loop {
                me.round().await;
                let _ = tokio::time::timeout(me.options.tick, me.wake.notified()).await;
            }
        });
    }

    /// `glacierfs sync --snapshot`: take a snapshot of `vault` now, changed or not.
    pub fn ask(&self, vault: u64) -> Result<(), SnapshotError> {
        if self.catalog.read(|c| snapshots::has_no_history(c, vault))? {
            return Err(SnapshotError::NoHistory(self.vault_name(vault)?));
        }
        lock(&self.asked).insert(vault);
        self.wake.notify_one();
        Ok(())
    }

    /// Whether a snapshot of `vault` is being uploaded now.
    pub fn is_uploading(&self, vault: u64) -> bool {
        lock(&self.uploading).contains(&vault) || lock(&self.asked).contains(&vault)
    }

    fn vault_name(&self, vault: u64) -> Result<String, SnapshotError> {
        let row = self.catalog.read(|c| vaults::by_ino(c, vault))?;
        Ok(row.ok_or(SnapshotError::NoVault(vault))?.name)
    }

    /// One look at every vault: restores, due snapshots, retention, and the no-history note.
    async fn round(self: &Arc<Self>) {
        // Uploads that failed last time, or that a previous run left.
        self.resume_uploads().await;
        if let Err(e) = self.restore_round().await {
            log::warn!("snapshot restore: {e}");
        }
        let Ok(all) = self.catalog.read_async(vaults::all).await else {
            return;
        };
        for v in all.into_iter().filter(|v| v.state == "present") {
            let vault = v.ino;
            let asked = lock(&self.asked).contains(&vault);
            match self.take_if_due(&v, asked).await {
                Ok(_) => {}
                Err(e) => log::warn!("snapshot of vault {}: {e}", v.name),
            }
            if asked {
                lock(&self.asked).remove(&vault);
            }
            let now = crate::catalog::now_s();
            match self
                .catalog
                .write_async(move |tx| snapshots::expire(tx, vault, now))
                .await
            {
                Ok(0) => {}
                Ok(n) => log::info!(
                    "{n} snapshot(s) of vault {} past 90 days queued for deletion",
                    v.name
                ),
                Err(e) => log::warn!("snapshot retention in vault {}: {e}", v.name),
            }
        }
    }

    /// Takes and uploads a snapshot of vault `v` when one is due (or `asked`); true if taken.
    async fn take_if_due(&self, v: &vaults::VaultRow, asked: bool) -> Result<bool, SnapshotError> {
        let vault = v.ino;
        if self.catalog.read(|c| snapshots::has_no_history(c, vault))? {
            if lock(&self.warned).insert(vault) {
                log::warn!(
                    "vault {} holds a snapshot this catalog has no history of: run `glacierfs \
                     catalog restore` on the vault's directory to get its names, modes, owners \
                     and times back",
                    v.name
                );
            }
            return Ok(false);
        }
        if !asked {
            let Some(interval) = self.options.interval else {
                return Ok(false);
            };
            // An inventory Glacier has but the catalog has not taken in yet: the tree is not
            // whole.
            if v.last_inventory_date.is_some() && v.inventory_date.is_none() {
                return Ok(false);
            }
            let last = self.catalog.read(|c| snapshots::last_taken(c, vault))?;
            let now = crate::catalog::now_s();
            // Since when the tree may have differed from its last snapshot: that snapshot's
            // time, or for a vault with none, when this mount first saw the tree hold anything.
            let since = match &last {
                Some(last) => last.taken_s,
                None => match self.catalog.read(|c| snapshots::holds_entries(c, vault))? {
                    true => self.first_seen(vault, now)?,
                    false => return Ok(false),
                },
            };
            let interval = interval.as_secs() as i64;
            if now - since < interval {
                return Ok(false);
            }
            // Due by time: whether the tree changed takes a pass over all of it, so a tree found
            // unchanged is looked at again only after a while, not at every tick.
            let recheck = interval.clamp(1, RECHECK_UNCHANGED_S);
            if let Some(last) = &last {
                if lock(&self.unchanged)
                    .get(&vault)
                    .is_some_and(|at| now - at < recheck)
                {
                    return Ok(false);
                }
                let digest = self.catalog.read(|c| snapshots::tree_digest(c, vault))?;
                if last.content.as_deref() == Some(digest.as_str()) {
                    lock(&self.unchanged).insert(vault, now);
                    return Ok(false);
                }
            }
        }
        lock(&self.unchanged).remove(&vault);
        let row = self.take(v).await?;
        self.upload(row).await?;
        Ok(true)
    }

    /// When this catalog first saw `vault` (with no snapshot yet) hold a tree: kept in the
    /// catalog, so a mount restarted more often than the interval still takes a first one.
    fn first_seen(&self, vault: u64, now: i64) -> Result<i64, SnapshotError> {
        Ok(
            match self.catalog.read(|c| meta::first_tree_seen(c, vault))? {
                Some(at) => at,
                None => {
                    self.catalog
                        .write(move |tx| meta::set_first_tree_seen(tx, vault, now))?;
                    now
                }
            },
        )
    }

    /// Encodes the vault's tree into a file and records it, ready to upload.
    async fn take(&self, v: &vaults::VaultRow) -> Result<SnapshotRow, SnapshotError> {
        let vault = v.ino;
        // One read, so the digest is of the entries taken.
        let ((entries, change), content) = self.catalog.read(|c| {
            Ok((
                snapshots::vault_entries(c, vault)?,
                snapshots::tree_digest(c, vault)?,
            ))
        })?;
        let last = self.catalog.read(|c| snapshots::last_taken(c, vault))?;
        // Descriptions name the second: two snapshots in one second get the next one.
        let taken_s = crate::catalog::now_s().max(last.map_or(0, |l| l.taken_s + 1));
        let bytes = format::encode(&Snapshot {
            vault: v.name.clone(),
            taken_s,
            change,
            entries,
        });
        let dir = self.cache_dir.join(DIR);
        std::fs::create_dir_all(&dir)?;
        let rel = format!(
            "{DIR}/{}-{}.gfsnap",
            v.name,
            crate::codec::timefmt::format_compact(taken_s)
        );
        write_durably(&self.cache_dir.join(&rel), &bytes)?;
        let desc = description::describe(&v.name, taken_s);
        let size = bytes.len() as u64;
        let id = self
            .catalog
            .write(move |tx| snapshots::begin(tx, vault, &desc, taken_s, &content, &rel, size))?;
        Ok(self
            .catalog
            .read(|c| snapshots::get(c, id))?
            .ok_or(CatalogError::NotFound)?)
    }

    /// Uploads a recorded snapshot, resuming where its journal says.
    async fn upload(&self, row: SnapshotRow) -> Result<(), SnapshotError> {
        let vault_name = self.vault_name(row.vault)?;
        let Some(file) = row.file.clone() else {
            let id = row.id;
            self.catalog.write(move |tx| snapshots::abandon(tx, id))?;
            return Ok(());
        };
        let path = self.cache_dir.join(&file);
        if !path.exists() {
            let id = row.id;
            self.catalog.write(move |tx| snapshots::abandon(tx, id))?;
            return Ok(());
        }
        let resume = match (row.step.as_deref(), &row.upload_id, row.part_size) {
            (Some("parts" | "completing"), Some(upload_id), Some(part_size)) => Resume::Multipart {
                upload_id: upload_id.clone(),
                part_size,
            },
            (Some("initiating"), _, _) => {
                self.abort_unrecorded(&vault_name, &row.description).await;
                Resume::Fresh
            }
            _ => Resume::Fresh,
        };
        let spec = UploadSpec {
            vault: vault_name.clone(),
            description: row.description.clone(),
            file: path.clone(),
            size: row.size,
            part_size: self.options.part_size,
        };
        let journal = Journal {
            catalog: self.catalog.clone(),
            id: row.id,
        };
        lock(&self.uploading).insert(row.vault);
        let progress = AtomicU64::new(0);
        let result = upload::upload(
            &self.client,
            &spec,
            resume,
            &self.limits,
            &journal,
            &progress,
        )
        .await;
        lock(&self.uploading).remove(&row.vault);
        match result {
            Ok(done) => {
                log::info!(
                    "snapshot of vault {vault_name} uploaded ({} bytes, archive {})",
                    row.size,
                    done.archive_id
                );
                let _ = std::fs::remove_file(&path);
                Ok(())
            }
            Err(e) => {
                let (id, message) = (row.id, e.to_string());
                self.catalog
                    .write(move |tx| snapshots::set_message(tx, id, &message))?;
                Err(e.into())
            }
        }
    }

    /// Uploads a previous run left, before anything new is taken.
    async fn resume_uploads(&self) {
        let rows = match self.catalog.read_async(snapshots::uploading).await {
            Ok(rows) => rows,
            Err(e) => return log::warn!("snapshot uploads to resume: {e}"),
        };
        for row in rows {
            if let Err(e) = self.upload(row).await {
                log::warn!("resuming a snapshot upload: {e}");
            }
        }
    }

    /// A multipart upload initiated with `description` whose id no row recorded (the reply
    /// was lost to a crash): nothing can continue it, so it is aborted.
    async fn abort_unrecorded(&self, vault_name: &str, description: &str) {
        let Ok(listed) = self.client.list_multipart_uploads(vault_name).await else {
            return;
        };
        for u in listed {
            if u.description.as_deref() == Some(description) {
                log::info!("aborting an unrecorded snapshot upload in {vault_name}");
                let _ = self.client.abort_multipart(vault_name, &u.upload_id).await;
            }
        }
    }
}

/// Writes `bytes` to `path` and flushes them to the disk before the row that names it.
fn write_durably(path: &std::path::Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let mut f = std::fs::File::create(path)?;
    f.write_all(bytes)?;
    f.sync_all()
}

/// The upload engine's journal, in the snapshot's row.
struct Journal {
    catalog: Catalog,
    id: i64,
}

impl Journal {
    fn step(
        &self,
        step: &'static str,
        upload_id: Option<String>,
        part_size: Option<u64>,
    ) -> Result<(), JournalError> {
        let id = self.id;
        self.catalog
            .write(move |tx| snapshots::set_step(tx, id, step, upload_id.as_deref(), part_size))
            .map_err(JournalError::new)
    }
}

impl UploadJournal for Journal {
    fn before_single(&self) -> Result<(), JournalError> {
        self.step("single", None, None)
    }

    fn before_initiate(&self, part_size: u64) -> Result<(), JournalError> {
        self.step("initiating", None, Some(part_size))
    }

    fn initiated(&self, upload_id: &str, part_size: u64) -> Result<(), JournalError> {
        self.step("parts", Some(upload_id.to_owned()), Some(part_size))
    }

    fn before_complete(
        &self,
        upload_id: &str,
        _size: u64,
        _tree_hash: &Digest,
    ) -> Result<(), JournalError> {
        self.step("completing", Some(upload_id.to_owned()), None)
    }

    fn created(&self, archive_id: &str, tree_hash: &Digest) -> Result<(), JournalError> {
        let (id, archive_id) = (self.id, archive_id.to_owned());
        let hash = treehash::to_hex(tree_hash);
        self.catalog
            .write(move |tx| snapshots::created(tx, id, &archive_id, &hash))
            .map_err(JournalError::new)
    }

    fn restarted(&self) -> Result<(), JournalError> {
        let id = self.id;
        self.catalog
            .write(move |tx| snapshots::restart(tx, id))
            .map_err(JournalError::new)
    }
}
