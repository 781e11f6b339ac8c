//! The multipart protocol: initiate (or resume from ListParts), send the parts (see
//! `parts`), complete with the combined tree hash, and recover from a refused Complete or an
//! upload Glacier has forgotten (started again, once).

use std::collections::HashMap;
use std::sync::atomic::Ordering;

use super::parts::Pass;
use super::{
    blocking, combined, echo_matches, effective_part_size, mismatch, record, unfit, Stop, Upload,
    UploadError, Uploaded, MAX_PARTS, MAX_PART_SIZE,
};
use crate::codec::treehash::{self, from_hex, to_hex, Digest, MIB};
use crate::glacier::{ArchiveCreated, ErrorKind, PartsListing};

impl Upload<'_> {
    /// A multipart upload, fresh (`None`) or resumed. A resumed upload Glacier has forgotten
    /// (reclaimed after 24 h idle, never initiated, or already completed: ListParts of a
    /// completed upload is a 404 too) is started again from scratch, once. That last case makes
    /// a second archive; the caller settles it against the inventory, where the journal's
    /// `before_complete` shows the first may exist.
    pub(super) async fn multipart(
        &self,
        resume: Option<(String, u64)>,
    ) -> Result<Uploaded, UploadError> {
        let mut resume = resume;
        loop {
            let resumed = resume.is_some();
            let attempt = match resume.take() {
                Some((upload_id, part_size)) => self.resumed(upload_id, part_size).await,
                None => self.initiate().await,
            };
            let mut added = 0;
            let result = match attempt {
                Ok((upload_id, part_size, listed)) => {
                    self.send_and_complete(&upload_id, part_size, listed, &mut added)
                        .await
                }
                Err(stop) => Err(stop),
            };
            match result {
                Ok(done) => return Ok(done),
                Err(Stop::Fail(e)) => return Err(e),
                // A 404 on an upload initiated by this very call is not a forgotten upload
                // (the vault may be gone): no second restart.
                Err(Stop::Gone(e)) if !resumed => return Err(e),
                Err(Stop::Gone(why)) => {
                    log::warn!(
                        "upload of {} to {}: {why}; starting over",
                        self.snapshot.path.display(),
                        self.spec.vault
                    );
                    // Those parts went to an upload that no longer counts.
                    self.progress.fetch_sub(added, Ordering::Relaxed);
                    record("restart", || self.journal.restarted())?;
                }
            }
        }
    }

    async fn initiate(&self) -> Result<(String, u64, HashMap<u64, Digest>), Stop> {
        let spec = self.spec;
        let part_size = effective_part_size(self.snapshot.size, spec.part_size);
        record("before InitiateMultipartUpload", || {
            self.journal.before_initiate(part_size)
        })?;
        let upload_id = self
            .client
            .initiate_multipart(&spec.vault, &spec.description, part_size)
            .await?;
        // If this entry fails, the open intent is matched against ListMultipartUploads.
        record("multipart upload initiated", || {
            self.journal.initiated(&upload_id, part_size)
        })?;
        log::debug!(
            "initiated upload {upload_id} of {} to {} in parts of {part_size}",
            self.snapshot.path.display(),
            spec.vault
        );
        Ok((upload_id, part_size, HashMap::new()))
    }

    /// The parts Glacier already has of a recorded upload, by start offset, or `Gone` when the
    /// upload cannot be continued.
    async fn resumed(
        &self,
        upload_id: String,
        part_size: u64,
    ) -> Result<(String, u64, HashMap<u64, Digest>), Stop> {
        let size = self.snapshot.size;
        if !(MIB..=MAX_PART_SIZE).contains(&part_size)
            || !part_size.is_power_of_two()
            || size.div_ceil(part_size) > MAX_PARTS
        {
            return Err(unfit(format!(
                "recorded part size {part_size} cannot carry {size} bytes"
            )));
        }
        let listing = match self.client.list_parts(&self.spec.vault, &upload_id).await {
            Ok(listing) => listing,
            Err(e) if e.kind == ErrorKind::NotFound => return Err(Stop::Gone(e.into())),
            Err(e) => return Err(e.into()),
        };
        let listed = self.usable_parts(&upload_id, part_size, &listing)?;
        log::debug!(
            "resuming upload {upload_id}: Glacier has {} of {} parts",
            listed.len(),
            size.div_ceil(part_size)
        );
        Ok((upload_id, part_size, listed))
    }

    /// Sorts what ListParts reports. An upload whose description, part size or layout does not
    /// fit this snapshot is not one this upload can continue (Complete would fail or make the
    /// wrong archive), so it is left alone and a fresh one started; the caller's settlement
    /// aborts uploads it no longer refers to. A part of the wrong length is sent again.
    fn usable_parts(
        &self,
        upload_id: &str,
        part_size: u64,
        listing: &PartsListing,
    ) -> Result<HashMap<u64, Digest>, Stop> {
        let size = self.snapshot.size;
        if listing.part_size != part_size {
            return Err(unfit(format!(
                "upload {upload_id} has parts of {}, the journal says {part_size}",
                listing.part_size
            )));
        }
        if let Some(d) = listing.description.as_deref() {
            if d != self.spec.description {
                return Err(unfit(format!(
                    "upload {upload_id} is for {d:?}, not {:?}",
                    self.spec.description
                )));
            }
        }
        let mut listed = HashMap::new();
        for part in &listing.parts {
            if part.start % part_size != 0 || part.start >= size {
                return Err(unfit(format!(
                    "upload {upload_id} has a part at {} that does not fit {size} bytes",
                    part.start
                )));
            }
            let expected_end = (part.start + part_size).min(size) - 1;
            match from_hex(&part.tree_hash) {
                Some(digest) if part.end_inclusive == expected_end => {
                    listed.insert(part.start, digest);
                }
                _ => {}
            }
        }
        Ok(listed)
    }

    /// Sends every part Glacier lacks (checking those it has), then completes the upload with
    /// the archive hash combined from the part hashes. If Glacier refuses that hash, one of
    /// the echoes it was combined from was wrong: every part is then checked against the
    /// snapshot, once, and the upload completed with hashes of our own.
    async fn send_and_complete(
        &self,
        upload_id: &str,
        part_size: u64,
        listed: HashMap<u64, Digest>,
        added: &mut u64,
    ) -> Result<Uploaded, Stop> {
        let hashes = self
            .send_parts(upload_id, part_size, listed, Pass::Send, added)
            .await?;
        let digest = combined(part_size, &hashes)?;
        match self.complete(upload_id, digest).await {
            Ok(created) => {
                self.finish(upload_id, part_size, created, digest, false)
                    .await
            }
            Err(Stop::Fail(UploadError::Glacier(e))) if e.kind == ErrorKind::InvalidParameter => {
                log::warn!("upload {upload_id}: {e}; checking every part against the snapshot");
                self.verify_and_complete(upload_id, part_size, added).await
            }
            Err(stop) => Err(stop),
        }
    }

    /// The recovery of a refused Complete: what Glacier lists is checked against the snapshot
    /// as on resume, parts that differ (or are missing) are sent again with our hash, and the
    /// upload is completed with the hashes verified here. A second refusal is final.
    async fn verify_and_complete(
        &self,
        upload_id: &str,
        part_size: u64,
        added: &mut u64,
    ) -> Result<Uploaded, Stop> {
        let listing = match self.client.list_parts(&self.spec.vault, upload_id).await {
            Ok(listing) => listing,
            Err(e) if e.kind == ErrorKind::NotFound => return Err(Stop::Gone(e.into())),
            Err(e) => return Err(e.into()),
        };
        let listed = self.usable_parts(upload_id, part_size, &listing)?;
        let hashes = self
            .send_parts(upload_id, part_size, listed, Pass::Verify, added)
            .await?;
        let digest = combined(part_size, &hashes)?;
        let created = self.complete(upload_id, digest).await?;
        self.finish(upload_id, part_size, created, digest, true)
            .await
    }

    /// CompleteMultipartUpload with `digest`, its intent recorded first.
    async fn complete(&self, upload_id: &str, digest: Digest) -> Result<ArchiveCreated, Stop> {
        let size = self.snapshot.size;
        // The last moment a change can still keep a wrong archive from being made.
        self.snapshot.check_size()?;
        record("before CompleteMultipartUpload", || {
            self.journal.before_complete(upload_id, size, &digest)
        })?;
        match self
            .client
            .complete_multipart(&self.spec.vault, upload_id, size, digest)
            .await
        {
            Ok(created) => Ok(created),
            Err(e) if e.kind == ErrorKind::NotFound => Err(Stop::Gone(e.into())),
            Err(e) => Err(e.into()),
        }
    }

    /// Records the archive Complete made. Glacier accepted `digest`, so an echo that differs
    /// is a contradiction only the snapshot can settle: unless `digest` was verified here
    /// already, the snapshot is hashed, and the archive is taken if either hash is its own.
    async fn finish(
        &self,
        upload_id: &str,
        part_size: u64,
        created: ArchiveCreated,
        digest: Digest,
        verified: bool,
    ) -> Result<Uploaded, Stop> {
        let (spec, size) = (self.spec, self.snapshot.size);
        let echoed = created.tree_hash.as_deref();
        let digest = if echo_matches(echoed, &digest) {
            digest
        } else {
            let theirs = echoed.unwrap_or_default();
            log::warn!(
                "upload {upload_id}: Glacier accepted tree hash {} for archive {} but reports \
                 {theirs}; hashing the snapshot",
                to_hex(&digest),
                created.archive_id
            );
            let local = if verified {
                digest
            } else {
                self.hash_snapshot(part_size).await?
            };
            if local != digest && from_hex(theirs) != Some(local) {
                let what = format!("archive {} (upload {upload_id})", created.archive_id);
                return Err(mismatch(what, &local, echoed).into());
            }
            local
        };
        record("archive created", || {
            self.journal.created(&created.archive_id, &digest)
        })?;
        log::info!(
            "uploaded {} ({size} bytes, {} parts) to {} as archive {}",
            self.snapshot.path.display(),
            size.div_ceil(part_size),
            spec.vault,
            created.archive_id
        );
        Ok(Uploaded {
            archive_id: created.archive_id,
            tree_hash: digest,
        })
    }

    /// The snapshot's tree hash, part by part within the memory budget.
    async fn hash_snapshot(&self, part_size: u64) -> Result<Digest, UploadError> {
        let size = self.snapshot.size;
        let mut hashes = Vec::new();
        for start in (0..size).step_by(usize::try_from(part_size).unwrap_or(usize::MAX)) {
            let len = part_size.min(size - start);
            let permit = self
                .limits
                .acquire(len)
                .await
                .map_err(|_| UploadError::Cancelled)?;
            let snapshot = self.snapshot.clone();
            let digest = blocking(move || {
                let data = snapshot.read(start, len, None)?;
                Ok(treehash::tree_hash(&data))
            })
            .await?;
            drop(permit);
            hashes.push(digest);
        }
        combined(part_size, &hashes)
    }
}
