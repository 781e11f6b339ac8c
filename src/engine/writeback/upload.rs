//! One file's upload: freeze the staged content as a snapshot, open its journal row, hand it
//! to the upload engine (fresh, resumed, or by repeating a Complete), and record the archive
//! on the node, queueing the archive it replaces for deletion.

use std::sync::atomic::AtomicU64;
use std::sync::Arc;

use super::journal::Journal;
use super::{WriteBack, WriteBackError};
use crate::catalog::uploads::{self, Due, UploadRow, UploadState};
use crate::catalog::{self, nodes, vaults, CatalogError, Node};
use crate::codec::names;
use crate::codec::treehash::{self, Digest};
use crate::engine::transfer::upload::{self, Resume, UploadError, UploadSpec};
use crate::glacier::ErrorKind;
use crate::locks::lock;

impl WriteBack {
    /// Uploads one staged file: snapshot, journal, upload, then record the archive.
    pub(super) async fn upload_file(&self, due: Due) -> Result<(), WriteBackError> {
        let ino = due.ino;
        let existing = self
            .catalog
            .read_async(move |c| uploads::get(c, ino))
            .await?;
        let row = match existing {
            Some(row) => row,
            None => match self.freeze(due).await? {
                Some(row) => row,
                None => return Ok(()),
            },
        };
        self.run(row).await
    }

    /// Freezes the file and writes its uploads row; None when there is nothing to send.
    async fn freeze(&self, due: Due) -> Result<Option<UploadRow>, WriteBackError> {
        let ino = due.ino;
        let Some(node) = self.catalog.read_async(move |c| nodes::get(c, ino)).await? else {
            return Ok(None);
        };
        if node.dirty != due.gen {
            return Ok(None);
        }
        // The data file, not the catalog, says how big the content is: a writer cut off by a
        // crash never got to record its size.
        let on_disk = std::fs::metadata(self.data.data_path(ino))
            .map(|m| m.len())
            .unwrap_or(0);
        if on_disk == 0 && self.open_files.writers(ino) == 0 {
            // An empty file cannot be an archive: it lives in the catalog only. (Emptied by a
            // writer that is opening it, it is due again when that writer closes.)
            self.finish_empty(&node).await?;
            return Ok(None);
        }
        let (vault_name, path) = self.catalog.read(move |c| {
            let v = vaults::by_ino(c, node.vault)?.ok_or(CatalogError::NotFound)?;
            Ok((v.name, nodes::vault_relative_path(c, ino)?))
        })?;
        let mtime_s = node.mtime_ns.div_euclid(1_000_000_000);
        let description = names::encode_mt2(&path, mtime_s);
        if !names::is_valid_description(&description) {
            return Err(WriteBackError::DescriptionTooLong {
                vault: vault_name,
                path,
            });
        }
        let snapshot_error = |source| WriteBackError::Snapshot { ino, source };
        let snapshot = self.data.snapshot(ino, due.gen).map_err(snapshot_error)?;
        if self.open_files.writers(ino) > 0 {
            // A writer opened the file since the queue looked: it may hold the very inode the
            // snapshot links (and truncate or write it), so this snapshot is not frozen. The
            // file is due again when that writer closes. A writer that opens it after this
            // check finds the data file shared and gives the snapshot a copy before it writes.
            self.data.remove_snapshot(&snapshot);
            return Ok(None);
        }
        let size = std::fs::metadata(self.data.resolve(&snapshot))
            .map_err(snapshot_error)?
            .len();
        let row = UploadRow {
            ino,
            gen: due.gen,
            vault: node.vault,
            snapshot,
            size,
            description,
            part_size: None,
            upload_id: None,
            tree_hash: None,
            archive_id: None,
            state: UploadState::Queued,
        };
        let r = row.clone();
        let mtime_ns = node.mtime_ns;
        self.catalog
            .write_async(move |tx| uploads::begin(tx, &r, mtime_ns))
            .await?;
        log::info!("uploading {vault_name}/{path} ({size} bytes)");
        Ok(Some(row))
    }

    /// Runs (or resumes) the upload an uploads row describes.
    async fn run(&self, row: UploadRow) -> Result<(), WriteBackError> {
        // The archive exists; only recording it on the node was cut off.
        if let (Some(id), Some(hash)) = (
            row.archive_id.clone(),
            row.tree_hash.as_deref().and_then(treehash::from_hex),
        ) {
            return self.finish(&row, &id, &hash).await;
        }
        let vault_name = self.vault_name(row.vault)?;
        let resume = match (&row.upload_id, row.part_size) {
            (Some(id), Some(_)) if row.state == UploadState::Completing => {
                if let Some(done) = self.repeat_complete(&vault_name, &row, id).await? {
                    return self.finish(&row, &done.0, &done.1).await;
                }
                Resume::Fresh
            }
            (Some(id), Some(part_size)) => Resume::Multipart {
                upload_id: id.clone(),
                part_size,
            },
            _ => Resume::Fresh,
        };
        let progress = Arc::new(AtomicU64::new(0));
        lock(&self.state)
            .progress
            .insert(row.ino, Arc::clone(&progress));
        let spec = UploadSpec {
            vault: vault_name,
            description: row.description.clone(),
            file: self.data.resolve(&row.snapshot),
            size: row.size,
            part_size: row.part_size.unwrap_or(self.options.part_size),
        };
        let journal = Journal::new(self.catalog.clone(), row.ino);
        // Opened through the data store, so a writer that opens the file while this runs can
        // give the upload a copy of the snapshot instead of changing its bytes.
        let file = {
            let (data, name) = (self.data.clone(), row.snapshot.clone());
            tokio::task::spawn_blocking(move || data.open_snapshot(&name))
                .await
                .map_err(|_| UploadError::Cancelled)
                .and_then(|r| r.map_err(UploadError::Io))
        };
        let result = match file {
            Ok(file) => {
                upload::upload_frozen(
                    &self.client,
                    &spec,
                    file,
                    resume,
                    &self.limits,
                    &journal,
                    &progress,
                )
                .await
            }
            Err(e) => Err(e),
        };
        match result {
            Ok(done) => self.finish(&row, &done.archive_id, &done.tree_hash).await,
            Err(UploadError::Changed { .. }) => {
                // The frozen copy changed under the upload. A writer never shares it (its open
                // gives the snapshot a copy first), so something outside glacierfs did: drop
                // it and the row; the next round freezes the file again. The row as the
                // journal has it now: `row` was read before Initiate recorded the multipart
                // upload this must abort, which Glacier would otherwise keep open.
                let ino = row.ino;
                let now = self.catalog.read(move |c| uploads::get(c, ino))?;
                self.discard(now.as_ref().unwrap_or(&row), &spec.vault)
                    .await?;
                Err(WriteBackError::Changed {
                    description: row.description,
                })
            }
            Err(e) => Err(self.failed(&row, e).await?),
        }
    }

    /// Settles a failed attempt: an Initiate whose reply may have been lost is looked for,
    /// and the failure is kept on the row for `.jobs`. Returns the error to report.
    async fn failed(
        &self,
        row: &UploadRow,
        e: UploadError,
    ) -> Result<WriteBackError, CatalogError> {
        let ino = row.ino;
        // InitiateMultipartUpload is not retried blindly: if its reply was lost, an upload
        // nobody recorded may exist. Find it by description and abort it.
        let state = self
            .catalog
            .read(move |c| uploads::get(c, ino))?
            .map(|r| r.state);
        if state == Some(UploadState::Initiating) {
            self.abort_unrecorded_uploads(row.vault).await;
        }
        let message = e.to_string();
        let _ = self
            .catalog
            .write_async(move |tx| uploads::record_failure(tx, ino, &message))
            .await;
        Ok(e.into())
    }

    /// Forgets an upload that cannot go on: its multipart upload is aborted, its row and
    /// snapshot removed.
    pub(super) async fn discard(
        &self,
        row: &UploadRow,
        vault_name: &str,
    ) -> Result<(), WriteBackError> {
        if let Some(id) = &row.upload_id {
            let _ = self.client.abort_multipart(vault_name, id).await;
        }
        self.data.remove_snapshot(&row.snapshot);
        let ino = row.ino;
        self.catalog
            .write_async(move |tx| uploads::remove(tx, ino))
            .await?;
        Ok(())
    }

    /// A Complete whose reply was lost is repeated: it is idempotent for a while.
    pub(super) async fn repeat_complete(
        &self,
        vault_name: &str,
        row: &UploadRow,
        upload_id: &str,
    ) -> Result<Option<(String, Digest)>, WriteBackError> {
        let Some(hash) = row.tree_hash.as_deref().and_then(treehash::from_hex) else {
            return Ok(None);
        };
        match self
            .client
            .complete_multipart(vault_name, upload_id, row.size, hash)
            .await
        {
            Ok(created) => Ok(Some((created.archive_id, hash))),
            Err(e) if e.kind == ErrorKind::NotFound => {
                // Too late to ask again: the archive may exist. Upload afresh and let the next
                // inventory settle a duplicate.
                self.mark_unconfirmed(row, hash).await?;
                Ok(None)
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Leaves a possibly made archive to the next inventory, and starts the upload over.
    pub(super) async fn mark_unconfirmed(
        &self,
        row: &UploadRow,
        hash: Digest,
    ) -> Result<(), WriteBackError> {
        let row = row.clone();
        self.catalog
            .write_async(move |tx| uploads::mark_unconfirmed(tx, &row, &treehash::to_hex(&hash)))
            .await?;
        Ok(())
    }

    /// Records the new archive on its node; the archive it replaces goes to the delete queue.
    pub(super) async fn finish(
        &self,
        row: &UploadRow,
        archive_id: &str,
        hash: &Digest,
    ) -> Result<(), WriteBackError> {
        let row_c = row.clone();
        let archive_id = archive_id.to_owned();
        let hash_hex = treehash::to_hex(hash);
        let delete_at = self.delete_at();
        let clean = self
            .catalog
            .write_async(move |tx| {
                uploads::record_archive(tx, &row_c, &archive_id, &hash_hex, delete_at)
            })
            .await?;
        self.data.remove_snapshot(&row.snapshot);
        if clean {
            self.data.remove_sidecar(row.ino);
        }
        Ok(())
    }

    async fn finish_empty(&self, node: &Node) -> Result<(), WriteBackError> {
        let node = node.clone();
        let ino = node.ino;
        let delete_at = self.delete_at();
        self.catalog
            .write_async(move |tx| uploads::record_empty(tx, &node, delete_at))
            .await?;
        self.data.remove_sidecar(ino);
        Ok(())
    }

    /// When an archive replaced now may be deleted.
    fn delete_at(&self) -> i64 {
        catalog::now_ns() + self.options.delete_delay.as_nanos() as i64
    }

    pub(super) fn vault_name(&self, vault: u64) -> Result<String, WriteBackError> {
        let v = self.catalog.read(move |c| vaults::by_ino(c, vault))?;
        v.map(|v| v.name).ok_or(WriteBackError::VaultGone { vault })
    }
}
