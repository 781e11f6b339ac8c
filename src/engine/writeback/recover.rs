//! Crash recovery: before anything is served, files left open for writing are taken as
//! closed; then, as the queue starts, every journal row is settled by the state it was left in. An archive that exists
//! is recorded; a Complete whose reply was lost is repeated; an Initiate whose reply was lost
//! is found by description and aborted; an UploadArchive whose reply was lost is left to the
//! next inventory; a row whose node or snapshot is gone is dropped (its upload aborted); any
//! other row stays, and the queue resumes it at once.

use std::collections::HashSet;

use super::{WriteBack, WriteBackError};
use crate::catalog::changes::Change;
use crate::catalog::nodes;
use crate::catalog::uploads::{self, UploadRow, UploadState};
use crate::catalog::CatalogError;
use crate::codec::treehash;
use crate::locks::lock;

impl WriteBack {
    /// Settles what a previous run left: uploads whose snapshot or node is gone, and multipart
    /// uploads started but never recorded (aborted, matched by description).
    ///
    /// Rows are settled one by one, and a row that cannot be settled now (Glacier refused a
    /// call, say) does not stop the others: each failure is logged and returned, and the
    /// row stays in the journal for the queue, or the next start, to settle.
    pub(super) async fn recover(&self) -> Result<Vec<WriteBackError>, WriteBackError> {
        let rows = self.catalog.read_async(uploads::all).await?;
        let mut orphans_checked = HashSet::new();
        let mut failed = Vec::new();
        for row in rows {
            let ino = row.ino;
            if row.state == UploadState::Initiating && orphans_checked.insert(row.vault) {
                self.abort_unrecorded_uploads(row.vault).await;
            }
            if let Err(e) = self.settle_row(row).await {
                let e = WriteBackError::Settling {
                    ino,
                    source: Box::new(e),
                };
                log::warn!("settling the previous run's upload of {e}; it stays in the journal");
                // A file still there is retried by the queue, as after any failed attempt.
                lock(&self.state).forced.insert(ino);
                failed.push(e);
            }
        }
        Ok(failed)
    }

    /// Settles one journal row the previous run left.
    async fn settle_row(&self, row: UploadRow) -> Result<(), WriteBackError> {
        let ino = row.ino;
        let node = self.catalog.read_async(move |c| nodes::get(c, ino)).await?;
        let snapshot_ok = self.data.resolve(&row.snapshot).exists();
        if row.state == UploadState::Single && snapshot_ok {
            // UploadArchive went out and its answer was lost: the archive may exist.
            let path = self.data.resolve(&row.snapshot);
            let hashed = tokio::task::spawn_blocking(move || treehash::tree_hash_file(&path))
                .await
                .map_err(|source| WriteBackError::Hashing { ino, source })?;
            if let Ok(hash) = hashed {
                self.mark_unconfirmed(&row, hash).await?;
            }
        }
        // An archive that exists is recorded now: on its node, or in the delete queue if
        // the node is gone.
        if let (Some(id), Some(hash)) = (
            row.archive_id.clone(),
            row.tree_hash.as_deref().and_then(treehash::from_hex),
        ) {
            return self.finish(&row, &id, &hash).await;
        }
        // A Complete whose answer was lost for a file since unlinked: ask again, so the
        // archive (if it exists) is known and deleted rather than left behind.
        if node.is_none() && row.state == UploadState::Completing {
            if let (Ok(vault_name), Some(upload_id)) =
                (self.vault_name(row.vault), row.upload_id.clone())
            {
                if let Some((id, hash)) =
                    self.repeat_complete(&vault_name, &row, &upload_id).await?
                {
                    return self.finish(&row, &id, &hash).await;
                }
            }
        }
        if node.is_none() || !snapshot_ok {
            if let (Some(upload_id), Ok(vault_name)) = (&row.upload_id, self.vault_name(row.vault))
            {
                let _ = self.client.abort_multipart(&vault_name, upload_id).await;
            }
            self.data.remove_snapshot(&row.snapshot);
            self.catalog
                .write_async(move |tx| uploads::remove(tx, ino))
                .await?;
            return Ok(());
        }
        // The row stays; the queue picks the node up (it is still dirty) and resumes it.
        lock(&self.state).forced.insert(ino);
        Ok(())
    }

    /// Files that were open for writing when the previous run died never had their close
    /// recorded: their size comes from the data file, and they are due for upload as if
    /// closed now. Runs before anything is served (the daemon waits for it, then calls
    /// [`WriteBack::spawn`]): a file created or opened in this run, whose catalog entry is
    /// written a moment before its handle counts as a writer, must not be taken for one.
    pub async fn settle_interrupted_writers(&self) -> Result<(), CatalogError> {
        let open = self.catalog.read(uploads::unclosed)?;
        let sizes: Vec<(u64, u64)> = open
            .into_iter()
            .filter(|ino| self.open_files.writers(*ino) == 0)
            .map(|ino| {
                let len = std::fs::metadata(self.data.data_path(ino))
                    .map(|m| m.len())
                    .unwrap_or(0);
                (ino, len)
            })
            .collect();
        if sizes.is_empty() {
            return Ok(());
        }
        log::info!(
            "{} file(s) were open for writing when glacierfs stopped; taking them as closed",
            sizes.len()
        );
        let inos: Vec<u64> = sizes.iter().map(|(ino, _)| *ino).collect();
        self.catalog
            .write_async(move |tx| uploads::close_unclosed(tx, &sizes))
            .await?;
        // The mount may have shown the sizes the catalog had before.
        self.catalog.changed(inos.into_iter().map(Change::Node));
        Ok(())
    }

    /// A crash between InitiateMultipartUpload and its journal entry leaves an upload nobody
    /// knows the id of; find it by its description and abort it.
    pub(super) async fn abort_unrecorded_uploads(&self, vault: u64) {
        let Ok(vault_name) = self.vault_name(vault) else {
            return;
        };
        let Ok(listed) = self.client.list_multipart_uploads(&vault_name).await else {
            return;
        };
        let known = self
            .catalog
            .read(move |c| uploads::known_in_vault(c, vault))
            .unwrap_or_default();
        for u in listed {
            let ours = known
                .iter()
                .any(|(_, d)| u.description.as_deref() == Some(d.as_str()));
            let recorded = known
                .iter()
                .any(|(id, _)| id.as_deref() == Some(u.upload_id.as_str()));
            if ours && !recorded {
                log::info!("aborting an unrecorded multipart upload in {vault_name}");
                let _ = self.client.abort_multipart(&vault_name, &u.upload_id).await;
            }
        }
    }
}
