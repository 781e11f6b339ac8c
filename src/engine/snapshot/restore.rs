//! Restoring a vault's tree from its newest snapshot (`glacierfs catalog restore`): a
//! whole-archive retrieval job like any other (a job Glacier already has for the archive is
//! reused, so a lost reply or a restart never pays twice), its output downloaded by the
//! download engine with every chunk checked against the tree hash and journaled in the
//! snapshot's row, so a download cut off resumes; then the catalog applies it in one
//! transaction (`catalog::snapshots::apply`), so a crash leaves the tree either untouched or
//! restored, and a re-run gives the same tree.

use std::sync::atomic::AtomicU64;
use std::sync::Arc;

use super::{SnapshotError, Snapshots, DIR};
use crate::catalog::changes::Change;
use crate::catalog::snapshots::{self, SnapshotRow};
use crate::codec::snapshot as format;
use crate::codec::treehash::{self, Digest, MIB};
use crate::config::{parse_tiers, Tiers};
use crate::engine::transfer::download::{
    self, DownloadJournal, DownloadSpec, JournalError, Resume,
};
use crate::glacier::{ErrorKind, JobFilter, JobRequest, JobStatus};

/// Chunks of a snapshot's download, and how many at once: snapshots are small.
const CHUNK: u64 = 16 * MIB;
const PARALLEL: usize = 2;

impl Snapshots {
    /// Asks for `vault`'s newest snapshot to be retrieved and applied.
    pub fn restore(&self, vault: u64, tiers: Option<Tiers>) -> Result<(), SnapshotError> {
        let tiers = tiers.unwrap_or(self.options.tier).to_string();
        let row = self
            .catalog
            .write(move |tx| snapshots::request_restore(tx, vault, &tiers))?;
        if row.is_none() {
            return Err(SnapshotError::NoSnapshot(self.vault_name(vault)?));
        }
        self.wake.notify_one();
        Ok(())
    }

    /// Moves every restore asked for one step on.
    pub(super) async fn restore_round(self: &Arc<Self>) -> Result<(), SnapshotError> {
        let pending = self.catalog.read_async(snapshots::restores_pending).await?;
        for row in pending {
            let id = row.id;
            if let Err(e) = self.advance(row).await {
                log::warn!("restoring a snapshot: {e}");
                if e.is_transient() {
                    continue;
                }
                let message = e.to_string();
                self.catalog
                    .write_async(move |tx| snapshots::restore_failed(tx, id, &message))
                    .await?;
            }
        }
        Ok(())
    }

    /// Starts the job, follows it, downloads and applies its output, as far as it can now.
    async fn advance(&self, row: SnapshotRow) -> Result<(), SnapshotError> {
        let vault_name = self.vault_name(row.vault)?;
        if row.restore.as_deref() == Some("retrieved") {
            return self.apply_retrieved(row, &vault_name).await;
        }
        let Some(archive_id) = row.archive_id.clone() else {
            return Err(SnapshotError::NoSnapshot(vault_name));
        };
        let job_id = match &row.job_id {
            Some(j) => j.clone(),
            None => {
                let job_id = self.start_job(&vault_name, &row, &archive_id).await?;
                let (id, j, file) = (
                    row.id,
                    job_id.clone(),
                    format!("{DIR}/restore-{}.gfsnap", row.id),
                );
                self.catalog
                    .write_async(move |tx| snapshots::set_restore_job(tx, id, &j, &file))
                    .await?;
                job_id
            }
        };
        let job = self.client.describe_job(&vault_name, &job_id).await?;
        match job.status {
            JobStatus::InProgress => return Ok(()),
            JobStatus::Failed => {
                let message = format!(
                    "the retrieval job {job_id} failed: {}",
                    job.status_message.unwrap_or_default()
                );
                let id = row.id;
                self.catalog
                    .write_async(move |tx| snapshots::restore_failed(tx, id, &message))
                    .await?;
                return Ok(());
            }
            JobStatus::Succeeded => {}
        }
        let row = self
            .catalog
            .read_async(move |c| snapshots::get(c, row.id))
            .await?
            .ok_or(crate::catalog::CatalogError::NotFound)?;
        let rel = row
            .file
            .clone()
            .unwrap_or_else(|| format!("{DIR}/restore-{}.gfsnap", row.id));
        let dest = self.cache_dir.join(&rel);
        std::fs::create_dir_all(self.cache_dir.join(DIR))?;
        let tree_hash = row
            .tree_hash
            .as_deref()
            .and_then(treehash::from_hex)
            .ok_or_else(|| SnapshotError::NoSnapshot(vault_name.clone()))?;
        let spec = DownloadSpec {
            vault: vault_name.clone(),
            job_id: job_id.clone(),
            size: row.size,
            tree_hash,
            dest: dest.clone(),
            chunk_size: CHUNK,
        };
        let resume = Resume {
            verified: row.verified,
            leaves: row
                .leaves
                .chunks_exact(32)
                .map(|c| {
                    let mut d: Digest = [0; 32];
                    d.copy_from_slice(c);
                    d
                })
                .collect(),
        };
        let journal = Journal {
            catalog: self.catalog.clone(),
            id: row.id,
        };
        let progress = AtomicU64::new(0);
        download::download(&self.client, &spec, resume, &journal, &progress, PARALLEL).await?;
        self.apply_file(&row, &dest, &vault_name).await
    }

    /// A snapshot retrieved before a catalog rebuild: applied once the rebuilt catalog has the
    /// vault's inventory, so its archives are there to be matched.
    async fn apply_retrieved(
        &self,
        row: SnapshotRow,
        vault_name: &str,
    ) -> Result<(), SnapshotError> {
        let vault = row.vault;
        let v = self
            .catalog
            .read_async(move |c| crate::catalog::vaults::by_ino(c, vault))
            .await?;
        if v.is_none_or(|v| v.inventory_date.is_none()) {
            return Ok(());
        }
        let file = row.file.clone().unwrap_or_default();
        let dest = self.cache_dir.join(file);
        self.apply_file(&row, &dest, vault_name).await
    }

    /// Decodes a retrieved snapshot and applies it in one transaction.
    async fn apply_file(
        &self,
        row: &SnapshotRow,
        dest: &std::path::Path,
        vault_name: &str,
    ) -> Result<(), SnapshotError> {
        let snap = format::decode(&std::fs::read(dest)?)?;
        let (id, vault) = (row.id, row.vault);
        let applied = self
            .catalog
            .write_async(move |tx| snapshots::apply(tx, id, vault, &snap))
            .await?;
        log::info!(
            "vault {vault_name}: snapshot of {} applied: {} entries restored, {} kept as \
             changed here, {} dropped (their archives are gone)",
            crate::codec::timefmt::format_iso8601(row.taken_s, 0),
            applied.changed,
            applied.kept,
            applied.dropped
        );
        self.catalog.changed(
            applied
                .names
                .into_iter()
                .map(|(parent, name)| Change::Entry { parent, name })
                .chain(applied.touched.into_iter().map(Change::Node)),
        );
        Ok(())
    }

    /// A job for the snapshot's archive: one Glacier already has, else a new one.
    async fn start_job(
        &self,
        vault_name: &str,
        row: &SnapshotRow,
        archive_id: &str,
    ) -> Result<String, SnapshotError> {
        let listed = self
            .client
            .list_jobs(vault_name, JobFilter::default())
            .await?;
        if let Some(j) = listed
            .into_iter()
            .find(|j| j.archive_id.as_deref() == Some(archive_id) && j.status != JobStatus::Failed)
        {
            log::info!(
                "vault {vault_name}: reusing retrieval job {} for its snapshot",
                j.job_id
            );
            return Ok(j.job_id);
        }
        // The tiers as the restore asked (`expedited,standard` falls back once, as opens do).
        let tiers = row
            .tier
            .as_deref()
            .and_then(|t| parse_tiers(t).ok())
            .unwrap_or(self.options.tier);
        let mut tier = tiers.first();
        let job_id = loop {
            let request = JobRequest::Archive {
                archive_id: archive_id.to_owned(),
                tier,
                range: None,
                description: Some(format!("glacierfs restore {vault_name}")),
            };
            match self.client.initiate_job(vault_name, &request).await {
                Ok(id) => break id,
                Err(e) if e.kind == ErrorKind::InsufficientCapacity => {
                    let what = format!("the snapshot of vault {vault_name}");
                    tier = tiers.on_shortage(tier, e, &what)?;
                }
                Err(e) => return Err(e.into()),
            }
        };
        log::info!("vault {vault_name}: retrieving its snapshot (job {job_id})");
        Ok(job_id)
    }
}

/// The download engine's journal, in the snapshot's row.
struct Journal {
    catalog: crate::catalog::Catalog,
    id: i64,
}

impl DownloadJournal for Journal {
    fn verified(&self, upto: u64, leaves: &[Digest]) -> Result<(), JournalError> {
        let id = self.id;
        let flat: Vec<u8> = leaves.iter().flatten().copied().collect();
        self.catalog
            .write(move |tx| snapshots::set_verified(tx, id, upto, &flat))
            .map_err(JournalError::from)
    }
}
