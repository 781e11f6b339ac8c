//! The one-call path: a snapshot of at most one part goes up in a single UploadArchive.

use std::sync::atomic::Ordering;

use super::{blocking, echoed_or_hashed, record, Upload, UploadError, Uploaded};

impl Upload<'_> {
    /// Sends the whole snapshot in one UploadArchive, announced in the journal first.
    pub(super) async fn single(&self) -> Result<Uploaded, UploadError> {
        let (spec, size) = (self.spec, self.snapshot.size);
        let permit = self
            .limits
            .acquire(size)
            .await
            .map_err(|_| UploadError::Cancelled)?;
        let snapshot = self.snapshot.clone();
        let body = blocking(move || {
            let data = snapshot.read(0, snapshot.size, None)?;
            snapshot.check_size()?;
            Ok(data.freeze())
        })
        .await?;
        record("before UploadArchive", || self.journal.before_single())?;
        let connection = self
            .limits
            .connection()
            .await
            .map_err(|_| UploadError::Cancelled)?;
        let created = self
            .client
            .upload_archive(&spec.vault, &spec.description, body.clone(), None)
            .await?;
        // Glacier checked the body against the tree hash the client computed from it. The archive
        // exists either way; left unrecorded, the open intent is settled against the next
        // inventory.
        let what = || format!("archive {}", created.archive_id);
        let digest = echoed_or_hashed(created.tree_hash.as_deref(), body, what).await?;
        // The SDK has let go of the body and the connection, and so have we.
        drop(connection);
        drop(permit);
        record("archive created", || {
            self.journal.created(&created.archive_id, &digest)
        })?;
        self.progress.fetch_add(size, Ordering::Relaxed);
        log::info!(
            "uploaded {} ({size} bytes) to {} as archive {}",
            self.snapshot.path.display(),
            spec.vault,
            created.archive_id
        );
        Ok(Uploaded {
            archive_id: created.archive_id,
            tree_hash: digest,
        })
    }
}
