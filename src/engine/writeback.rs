//! The write-back queue: uploads staged files after the last close plus the write-back delay
//! (or at once when `sync` asks), deletes archives nobody needs any more, and after a restart
//! settles every upload and delete the previous run left open (DESIGN.md §2 and §5).
//!
//! Each upload reads a frozen snapshot of its file, and its progress is journaled in the
//! `uploads` table before and after each creating call, so a crash at any instant leaves a row
//! that says exactly what to do next: start over, resume a multipart upload, repeat Complete,
//! or (for an UploadArchive whose reply was lost) upload again and let the next inventory
//! settle the duplicate.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rusqlite::{params, Connection, OptionalExtension};

use crate::catalog::deletes::queue_delete;
use crate::catalog::{self, nodes, vaults, Catalog, CatalogError};
use crate::codec::names;
use crate::codec::treehash::{self, Digest};
use crate::engine::transfer::upload::{
    self, Resume, UploadError, UploadJournal, UploadLimits, UploadSpec,
};
use crate::glacier::{ErrorKind, GlacierClient};
use crate::store::cache::DataStore;
use crate::store::handles::OpenFiles;

/// Settings of the queue.
#[derive(Debug, Clone)]
pub struct WriteBackOptions {
    pub delay: Duration,
    pub part_size: u64,
    pub concurrency: usize,
    pub memory_budget: u64,
    pub delete_delay: Duration,
}

/// The queue; one per mount.
pub struct WriteBack {
    catalog: Catalog,
    client: Arc<dyn GlacierClient>,
    data: DataStore,
    open_files: Arc<OpenFiles>,
    options: WriteBackOptions,
    limits: UploadLimits,
    state: Mutex<QueueState>,
    runtime: std::sync::OnceLock<tokio::runtime::Handle>,
}

#[derive(Default)]
struct QueueState {
    in_flight: HashSet<u64>,
    /// The running upload tasks, so an unlink can stop its file's upload.
    tasks: HashMap<u64, tokio::task::JoinHandle<()>>,
    /// Files `sync` asked for: uploaded without waiting for the delay.
    forced: HashSet<u64>,
    /// Earliest next attempt after a failure.
    retry_at: HashMap<u64, i64>,
    failures: HashMap<u64, u32>,
    /// The last failure of each file's upload, for `.jobs`: also those that happen before the
    /// upload has a journal row to carry its message.
    last_error: HashMap<u64, String>,
    progress: HashMap<u64, Arc<AtomicU64>>,
    deletes_in_flight: HashSet<i64>,
}

/// A staged file due for upload.
#[derive(Debug, Clone)]
struct Due {
    ino: u64,
    gen: i64,
}

fn now_ns() -> i64 {
    catalog::now_ns()
}

fn lock(m: &Mutex<QueueState>) -> std::sync::MutexGuard<'_, QueueState> {
    crate::locks::lock(&m)
}

/// One uploads row, as the journal left it.
#[derive(Debug, Clone)]
struct UploadRow {
    ino: u64,
    gen: i64,
    vault: u64,
    snapshot: String,
    size: u64,
    description: String,
    part_size: Option<u64>,
    upload_id: Option<String>,
    tree_hash: Option<String>,
    archive_id: Option<String>,
    state: String,
}

impl WriteBack {
    pub fn new(
        catalog: Catalog,
        client: Arc<dyn GlacierClient>,
        data: DataStore,
        open_files: Arc<OpenFiles>,
        options: WriteBackOptions,
    ) -> Arc<WriteBack> {
        let limits = UploadLimits::new(
            options.concurrency,
            options.memory_budget,
            options.part_size,
        );
        Arc::new(WriteBack {
            catalog,
            client,
            data,
            open_files,
            options,
            limits,
            state: Mutex::new(QueueState::default()),
            runtime: std::sync::OnceLock::new(),
        })
    }

    /// Asks for the staged files among `inos` to be uploaded now.
    /// A file waiting out the backoff after a failure is tried again at once: the user asked.
    pub fn force(&self, inos: impl IntoIterator<Item = u64>) {
        let mut st = lock(&self.state);
        for ino in inos {
            st.retry_at.remove(&ino);
            st.forced.insert(ino);
        }
        drop(st);
        self.open_files.wake.notify_one();
    }

    /// Why the last attempt to upload `ino` failed, while it has not succeeded since.
    pub fn last_error(&self, ino: u64) -> Option<String> {
        lock(&self.state).last_error.get(&ino).cloned()
    }

    /// Bytes sent so far for the upload of `ino`, while it runs.
    pub fn progress(&self, ino: u64) -> Option<u64> {
        lock(&self.state)
            .progress
            .get(&ino)
            .map(|p| p.load(std::sync::atomic::Ordering::Relaxed))
    }

    pub fn is_uploading(&self, ino: u64) -> bool {
        lock(&self.state).in_flight.contains(&ino)
    }

    /// Runs the queue until the runtime stops.
    pub fn spawn(self: &Arc<Self>, runtime: &tokio::runtime::Handle) {
        let _ = self.runtime.set(runtime.clone());
        let me = Arc::clone(self);
        runtime.spawn(async move {
            if let Err(e) = me.recover().await {
                log::error!("settling the previous run's uploads: {}", e.message);
            }
            loop {
                if let Err(e) = me.tick().await {
                    log::error!("write-back: {e}");
                }
                tokio::select! {
                    _ = me.open_files.wake.notified() => {},
                    _ = tokio::time::sleep(Duration::from_millis(500)) => {},
                }
            }
        });
    }

    /// Writes the bytes sent by running uploads, for `glacierfs status` (which reads only the
    /// catalog).
    async fn record_progress(&self) -> Result<(), CatalogError> {
        let progress: Vec<(u64, u64)> = lock(&self.state)
            .progress
            .iter()
            .map(|(ino, p)| (*ino, p.load(std::sync::atomic::Ordering::Relaxed)))
            .collect();
        if progress.is_empty() {
            return Ok(());
        }
        self.catalog
            .write_async(move |tx| {
                let mut stmt =
                    tx.prepare_cached("UPDATE uploads SET bytes_done = ?2 WHERE ino = ?1")?;
                for (ino, done) in &progress {
                    stmt.execute(params![*ino as i64, *done as i64])?;
                }
                Ok(())
            })
            .await
    }

    /// Starts the uploads and deletes that are due.
    async fn tick(self: &Arc<Self>) -> Result<(), CatalogError> {
        crate::catalog::ensure_reserve(self.data.cache_dir());
        self.record_progress().await?;
        let cutoff = now_ns() - self.options.delay.as_nanos() as i64;
        let forced: Vec<u64> = lock(&self.state).forced.iter().copied().collect();
        let due = self
            .catalog
            .read(move |c| due_uploads(c, cutoff, &forced))?;
        let now = now_ns();
        for d in due {
            if self.open_files.writers(d.ino) > 0 {
                continue;
            }
            {
                let mut st = lock(&self.state);
                if st.in_flight.contains(&d.ino)
                    || st.retry_at.get(&d.ino).is_some_and(|t| *t > now)
                {
                    continue;
                }
                st.in_flight.insert(d.ino);
                st.forced.remove(&d.ino);
            }
            let me = Arc::clone(self);
            let ino = d.ino;
            let task = tokio::spawn(async move {
                let outcome = me.upload_file(d).await;
                me.after_upload(ino, outcome);
            });
            lock(&self.state).tasks.insert(ino, task);
        }
        self.run_deletes().await
    }

    /// Stops the upload of a file that was just unlinked: its multipart upload is aborted, and
    /// an archive it may already have made is deleted (or left for the next inventory to settle,
    /// when the reply that would have named it was cut off).
    pub fn cancel(self: &Arc<Self>, ino: u64) {
        let task = {
            let mut st = lock(&self.state);
            st.in_flight.remove(&ino);
            st.progress.remove(&ino);
            st.forced.remove(&ino);
            st.retry_at.remove(&ino);
            st.tasks.remove(&ino)
        };
        if let Some(t) = &task {
            t.abort();
        }
        let Some(runtime) = self.runtime.get() else {
            return;
        };
        let me = Arc::clone(self);
        runtime.spawn(async move {
            // The abort lands at the task's next await: wait for it, so the row read below
            // says where the upload really stopped.
            if let Some(t) = task {
                let _ = t.await;
            }
            if let Err(e) = me.clean_up_cancelled(ino).await {
                log::warn!(
                    "cleaning up the cancelled upload of inode {ino}: {}",
                    e.message
                );
            }
        });
    }

    async fn clean_up_cancelled(&self, ino: u64) -> Result<(), UploadFailure> {
        let Some(row) = self.catalog.read_async(move |c| upload_row(c, ino)).await? else {
            return Ok(());
        };
        if let (Some(id), Some(hash)) = (
            row.archive_id.clone(),
            row.tree_hash.as_deref().and_then(treehash::from_hex),
        ) {
            // Made before the cancel took: record it, which queues its delete (no node).
            return self.finish(&row, &id, &hash).await;
        }
        let vault_name = self.vault_name(row.vault)?;
        match (row.state.as_str(), &row.upload_id) {
            // Complete may have gone through: ask again, so a made archive is known and deleted.
            ("completing", Some(upload_id)) => {
                if let Some((id, hash)) = self.repeat_complete(&vault_name, &row, upload_id).await?
                {
                    return self.finish(&row, &id, &hash).await;
                }
            }
            ("initiating", None) => self.abort_unrecorded_uploads(row.vault).await,
            ("single", _) => {
                let path = self.data.resolve(&row.snapshot);
                if let Ok(Ok(hash)) =
                    tokio::task::spawn_blocking(move || treehash::tree_hash_file(&path)).await
                {
                    self.mark_unconfirmed(&row, hash).await?;
                }
            }
            _ => {}
        }
        log::info!(
            "upload of {} cancelled: the file was deleted",
            row.description
        );
        self.discard(&row, &vault_name).await
    }

    fn after_upload(&self, ino: u64, outcome: Result<(), UploadFailure>) {
        let mut st = lock(&self.state);
        st.in_flight.remove(&ino);
        st.tasks.remove(&ino);
        st.progress.remove(&ino);
        match outcome {
            Ok(()) => {
                st.failures.remove(&ino);
                st.retry_at.remove(&ino);
                st.last_error.remove(&ino);
            }
            Err(e) => {
                let n = {
                    let n = st.failures.entry(ino).or_insert(0);
                    *n += 1;
                    *n
                };
                // Transient trouble retries soon; anything else waits longer, but is never
                // dropped: the file stays staged and shows its error until it goes up.
                let base = if e.transient { 1u64 } else { 60 };
                let secs = (base << n.min(8)).min(600);
                st.retry_at
                    .insert(ino, now_ns() + secs as i64 * 1_000_000_000);
                log::warn!(
                    "upload of inode {ino} failed (attempt {n}): {}; retrying in {secs}s",
                    e.message
                );
                st.last_error.insert(ino, e.message);
            }
        }
        drop(st);
        self.open_files.wake.notify_one();
    }

    /// Uploads one staged file: snapshot, journal, upload, then record the archive.
    async fn upload_file(&self, due: Due) -> Result<(), UploadFailure> {
        let ino = due.ino;
        let existing = self.catalog.read_async(move |c| upload_row(c, ino)).await?;
        let row = match existing {
            Some(row) => row,
            None => match self.prepare(due).await? {
                Some(row) => row,
                None => return Ok(()),
            },
        };
        self.run(row).await
    }

    /// Freezes the file and writes its uploads row; None when there is nothing to send.
    async fn prepare(&self, due: Due) -> Result<Option<UploadRow>, UploadFailure> {
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
        if on_disk == 0 {
            // An empty file cannot be an archive: it lives in the catalog only.
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
            return Err(UploadFailure::permanent(format!(
                "{vault_name}/{path}: its description would pass 1024 characters"
            )));
        }
        let snapshot = self
            .data
            .snapshot(ino, due.gen)
            .map_err(|e| UploadFailure::transient(format!("snapshot: {e}")))?;
        let size = std::fs::metadata(self.data.resolve(&snapshot))
            .map_err(|e| UploadFailure::transient(format!("snapshot: {e}")))?
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
            state: "queued".into(),
        };
        let r = row.clone();
        self.catalog
            .write_async(move |tx| {
                tx.execute(
                    "INSERT OR REPLACE INTO uploads (ino, gen, vault, snapshot, size, description, \
                     mtime_ns, state, started_s) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, 'queued', ?8)",
                    params![
                        r.ino as i64,
                        r.gen,
                        r.vault as i64,
                        r.snapshot,
                        r.size as i64,
                        r.description,
                        node.mtime_ns,
                        catalog::now_s()
                    ],
                )?;
                Ok(())
            })
            .await?;
        log::info!("uploading {vault_name}/{path} ({size} bytes)");
        Ok(Some(row))
    }

    /// Runs (or resumes) the upload an uploads row describes.
    async fn run(&self, row: UploadRow) -> Result<(), UploadFailure> {
        // The archive exists; only recording it on the node was cut off.
        if let (Some(id), Some(hash)) = (
            row.archive_id.clone(),
            row.tree_hash.as_deref().and_then(treehash::from_hex),
        ) {
            return self.finish(&row, &id, &hash).await;
        }
        let vault_name = self.vault_name(row.vault)?;
        let resume = match (&row.upload_id, row.part_size) {
            (Some(id), Some(part_size)) if row.state == "completing" => {
                if let Some(done) = self.repeat_complete(&vault_name, &row, id).await? {
                    return self.finish(&row, &done.0, &done.1).await;
                }
                let _ = part_size;
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
        let journal = Journal {
            catalog: self.catalog.clone(),
            ino: row.ino,
        };
        let result = upload::upload(
            &self.client,
            &spec,
            resume,
            &self.limits,
            &journal,
            &progress,
        )
        .await;
        match result {
            Ok(done) => self.finish(&row, &done.archive_id, &done.tree_hash).await,
            Err(UploadError::Changed { .. }) => {
                // The frozen copy changed under the upload (a writer shared it through
                // passthrough): drop it and the row; the next round freezes the file again.
                self.discard(&row, &spec.vault).await?;
                Err(UploadFailure::transient(format!(
                    "{}: changed while it was going up; starting again",
                    row.description
                )))
            }
            Err(e) => {
                let ino = row.ino;
                // InitiateMultipartUpload is not retried blindly: if its reply was lost, an
                // upload nobody recorded may exist. Find it by description and abort it.
                let state = self
                    .catalog
                    .read(move |c| upload_row(c, ino))?
                    .map(|r| r.state);
                if state.as_deref() == Some("initiating") {
                    self.abort_unrecorded_uploads(row.vault).await;
                }
                let msg = e.to_string();
                let m = msg.clone();
                let _ = self
                    .catalog
                    .write_async(move |tx| {
                        tx.execute(
                            "UPDATE uploads SET message = ?2, attempts = attempts + 1 WHERE ino = ?1",
                            params![ino as i64, m],
                        )?;
                        Ok(())
                    })
                    .await;
                Err(UploadFailure {
                    transient: e.is_transient(),
                    message: msg,
                })
            }
        }
    }

    /// Forgets an upload that cannot go on: its multipart upload is aborted, its row and
    /// snapshot removed.
    async fn discard(&self, row: &UploadRow, vault_name: &str) -> Result<(), UploadFailure> {
        if let Some(id) = &row.upload_id {
            let _ = self.client.abort_multipart(vault_name, id).await;
        }
        self.data.remove_snapshot(&row.snapshot);
        let ino = row.ino;
        self.catalog
            .write_async(move |tx| {
                tx.execute("DELETE FROM uploads WHERE ino = ?1", [ino as i64])?;
                Ok(())
            })
            .await?;
        Ok(())
    }

    /// A Complete whose reply was lost is repeated: it is idempotent for a while.
    async fn repeat_complete(
        &self,
        vault_name: &str,
        row: &UploadRow,
        upload_id: &str,
    ) -> Result<Option<(String, Digest)>, UploadFailure> {
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
            Err(e) => Err(UploadFailure {
                transient: e.is_transient(),
                message: e.to_string(),
            }),
        }
    }

    async fn mark_unconfirmed(&self, row: &UploadRow, hash: Digest) -> Result<(), UploadFailure> {
        let (vault, description, size) = (row.vault, row.description.clone(), row.size);
        let ino = row.ino;
        self.catalog
            .write_async(move |tx| {
                tx.execute(
                    "INSERT INTO unconfirmed (vault, ino, description, size, tree_hash, created_s) \
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                    params![
                        vault as i64,
                        ino as i64,
                        description,
                        size as i64,
                        treehash::to_hex(&hash),
                        catalog::now_s()
                    ],
                )?;
                tx.execute(
                    "UPDATE uploads SET state = 'queued', upload_id = NULL WHERE ino = ?1",
                    [ino as i64],
                )?;
                Ok(())
            })
            .await?;
        Ok(())
    }

    /// Records the new archive on its node; the archive it replaces goes to the delete queue.
    async fn finish(
        &self,
        row: &UploadRow,
        archive_id: &str,
        hash: &Digest,
    ) -> Result<(), UploadFailure> {
        let row_c = row.clone();
        let archive_id = archive_id.to_owned();
        let hash_hex = treehash::to_hex(hash);
        let delete_at = now_ns() + self.options.delete_delay.as_nanos() as i64;
        let clean = self
            .catalog
            .write_async(move |tx| record_archive(tx, &row_c, &archive_id, &hash_hex, delete_at))
            .await?;
        self.data.remove_snapshot(&row.snapshot);
        if clean {
            self.data.remove_sidecar(row.ino);
        }
        Ok(())
    }

    async fn finish_empty(&self, node: &catalog::Node) -> Result<(), UploadFailure> {
        let node = node.clone();
        let delete_at = now_ns() + self.options.delete_delay.as_nanos() as i64;
        self.catalog
            .write_async(move |tx| {
                let path = nodes::vault_relative_path(tx, node.ino)?;
                tx.execute(
                    "UPDATE nodes SET archive_id = NULL, archive_key = NULL, tree_hash = NULL, \
                     description = NULL, dirty = 0, size = 0 WHERE ino = ?1 AND dirty = ?2",
                    params![node.ino as i64, node.dirty],
                )?;
                if let Some(old) = &node.archive_id {
                    queue_delete(tx, node.vault, old, &path, delete_at, None)?;
                }
                Ok(())
            })
            .await?;
        self.data.remove_sidecar(node.ino);
        Ok(())
    }

    fn vault_name(&self, vault: u64) -> Result<String, UploadFailure> {
        let v = self.catalog.read(move |c| vaults::by_ino(c, vault))?;
        v.map(|v| v.name)
            .ok_or_else(|| UploadFailure::permanent(format!("vault #{vault} is gone")))
    }

    /// Deletes whose time has come.
    async fn run_deletes(self: &Arc<Self>) -> Result<(), CatalogError> {
        let now = now_ns();
        let due = self
            .catalog
            .read_async(move |c| due_deletes(c, now))
            .await?;
        for d in due {
            if !lock(&self.state).deletes_in_flight.insert(d.id) {
                continue;
            }
            let me = Arc::clone(self);
            tokio::spawn(async move {
                let id = d.id;
                me.delete_one(d).await;
                lock(&me.state).deletes_in_flight.remove(&id);
            });
        }
        Ok(())
    }

    async fn delete_one(&self, d: DueDelete) {
        let result = match (&d.archive_id, &d.upload_id) {
            (Some(archive), _) => self.client.delete_archive(&d.vault_name, archive).await,
            (None, Some(upload)) => self.client.abort_multipart(&d.vault_name, upload).await,
            (None, None) => Ok(()),
        };
        let outcome = match result {
            Ok(()) => Ok(()),
            Err(e) if e.kind == ErrorKind::NotFound => Ok(()),
            Err(e) => Err(e),
        };
        let id = d.id;
        let r = match outcome {
            Ok(()) => {
                log::info!("deleted {} from {}", d.what(), d.vault_name);
                self.catalog
                    .write_async(move |tx| {
                        tx.execute("DELETE FROM deletes WHERE id = ?1", [id])?;
                        Ok(())
                    })
                    .await
            }
            Err(e) => {
                log::warn!(
                    "deleting {} from {}: {e}; will retry",
                    d.what(),
                    d.vault_name
                );
                let msg = e.to_string();
                let backoff = (1i64 << (d.attempts.min(9) as u32)) * 1_000_000_000;
                self.catalog
                    .write_async(move |tx| {
                        tx.execute(
                            "UPDATE deletes SET attempts = attempts + 1, message = ?2, \
                             not_before_ns = ?3 WHERE id = ?1",
                            params![id, msg, now_ns() + backoff],
                        )?;
                        Ok(())
                    })
                    .await
            }
        };
        if let Err(e) = r {
            log::error!("recording a delete: {e}");
        }
    }

    /// Settles what a previous run left: uploads whose snapshot or node is gone, and multipart
    /// uploads started but never recorded (aborted, matched by description).
    async fn recover(&self) -> Result<(), UploadFailure> {
        let rows = self.catalog.read_async(all_upload_rows).await?;
        let mut orphans_checked = HashSet::new();
        for row in rows {
            let ino = row.ino;
            let node = self.catalog.read_async(move |c| nodes::get(c, ino)).await?;
            let snapshot_ok = self.data.resolve(&row.snapshot).exists();
            if row.state == "initiating" && orphans_checked.insert(row.vault) {
                self.abort_unrecorded_uploads(row.vault).await;
            }
            if row.state == "single" {
                // UploadArchive went out and its answer was lost: the archive may exist.
                if snapshot_ok {
                    let path = self.data.resolve(&row.snapshot);
                    if let Ok(hash) =
                        tokio::task::spawn_blocking(move || treehash::tree_hash_file(&path))
                            .await
                            .map_err(|e| UploadFailure::transient(e.to_string()))?
                    {
                        self.mark_unconfirmed(&row, hash).await?;
                    }
                }
            }
            // An archive that exists is recorded now: on its node, or in the delete queue if
            // the node is gone.
            if let (Some(id), Some(hash)) = (
                row.archive_id.clone(),
                row.tree_hash.as_deref().and_then(treehash::from_hex),
            ) {
                self.finish(&row, &id, &hash).await?;
                continue;
            }
            // A Complete whose answer was lost for a file since unlinked: ask again, so the
            // archive (if it exists) is known and deleted rather than left behind.
            if node.is_none() && row.state == "completing" {
                if let (Ok(vault_name), Some(upload_id)) =
                    (self.vault_name(row.vault), row.upload_id.clone())
                {
                    if let Some((id, hash)) =
                        self.repeat_complete(&vault_name, &row, &upload_id).await?
                    {
                        self.finish(&row, &id, &hash).await?;
                        continue;
                    }
                }
            }
            if node.is_none() || !snapshot_ok {
                if let (Some(upload_id), Ok(vault_name)) =
                    (&row.upload_id, self.vault_name(row.vault))
                {
                    let _ = self.client.abort_multipart(&vault_name, upload_id).await;
                }
                self.data.remove_snapshot(&row.snapshot);
                self.catalog
                    .write_async(move |tx| {
                        tx.execute("DELETE FROM uploads WHERE ino = ?1", [ino as i64])?;
                        Ok(())
                    })
                    .await?;
                continue;
            }
            // The row stays; the queue picks the node up (it is still dirty) and resumes it.
            lock(&self.state).forced.insert(ino);
        }
        Ok(())
    }

    /// Files that were open for writing when the previous run died never had their close
    /// recorded: their size comes from the data file, and they are due for upload as if
    /// closed now. Runs before anything is served (the daemon waits for it, then calls
    /// [`WriteBack::spawn`]): a file created or opened in this run, whose catalog entry is
    /// written a moment before its handle counts as a writer, must not be taken for one.
    pub async fn settle_interrupted_writers(&self) -> Result<(), CatalogError> {
        let open: Vec<u64> = self.catalog.read(|c| {
            let mut s = c.prepare(
                "SELECT ino FROM nodes WHERE dirty > 0 AND kind = 3 AND closed_ns IS NULL",
            )?;
            let rows = s.query_map([], |r| r.get::<_, i64>(0))?;
            Ok(rows
                .map(|r| r.map(|i| i as u64))
                .collect::<Result<_, _>>()?)
        })?;
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
            .write_async(move |tx| {
                let mut stmt = tx.prepare(
                    "UPDATE nodes SET size = ?2, closed_ns = ?3, local = 1 WHERE ino = ?1 AND closed_ns IS NULL",
                )?;
                for (ino, len) in &sizes {
                    stmt.execute(params![*ino as i64, *len as i64, now_ns()])?;
                }
                Ok(())
            })
            .await?;
        // The mount may have shown the sizes the catalog had before.
        self.catalog
            .changed(inos.into_iter().map(crate::catalog::changes::Change::Node));
        Ok(())
    }

    /// A crash between InitiateMultipartUpload and its journal entry leaves an upload nobody
    /// knows the id of; find it by its description and abort it.
    async fn abort_unrecorded_uploads(&self, vault: u64) {
        let Ok(vault_name) = self.vault_name(vault) else {
            return;
        };
        let Ok(listed) = self.client.list_multipart_uploads(&vault_name).await else {
            return;
        };
        let known: Vec<(Option<String>, String)> = self
            .catalog
            .read(move |c| {
                let mut s =
                    c.prepare("SELECT upload_id, description FROM uploads WHERE vault = ?1")?;
                let rows = s.query_map([vault as i64], |r| Ok((r.get(0)?, r.get(1)?)))?;
                Ok(rows.collect::<Result<_, _>>()?)
            })
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

/// Why an upload attempt failed.
#[derive(Debug)]
struct UploadFailure {
    transient: bool,
    message: String,
}

impl UploadFailure {
    fn transient(message: String) -> Self {
        UploadFailure {
            transient: true,
            message,
        }
    }
    fn permanent(message: String) -> Self {
        UploadFailure {
            transient: false,
            message,
        }
    }
}

impl From<CatalogError> for UploadFailure {
    fn from(e: CatalogError) -> Self {
        UploadFailure::transient(e.to_string())
    }
}

impl From<UploadError> for UploadFailure {
    fn from(e: UploadError) -> Self {
        UploadFailure {
            transient: e.is_transient(),
            message: e.to_string(),
        }
    }
}

/// The journal of one upload: each step lands in its uploads row, committed before the engine
/// makes the call it announces.
struct Journal {
    catalog: Catalog,
    ino: u64,
}

impl Journal {
    fn set(&self, sql: &'static str, p: Vec<rusqlite::types::Value>) -> Result<(), String> {
        let ino = self.ino as i64;
        self.catalog
            .write(move |tx| {
                let mut all = vec![rusqlite::types::Value::Integer(ino)];
                all.extend(p);
                tx.execute(sql, rusqlite::params_from_iter(all))?;
                Ok(())
            })
            .map_err(|e| e.to_string())
    }
}

impl UploadJournal for Journal {
    fn before_single(&self) -> Result<(), String> {
        self.set("UPDATE uploads SET state = 'single' WHERE ino = ?1", vec![])
    }
    fn before_initiate(&self, part_size: u64) -> Result<(), String> {
        self.set(
            "UPDATE uploads SET state = 'initiating', part_size = ?2 WHERE ino = ?1",
            vec![(part_size as i64).into()],
        )
    }
    fn initiated(&self, upload_id: &str, part_size: u64) -> Result<(), String> {
        self.set(
            "UPDATE uploads SET state = 'parts', upload_id = ?2, part_size = ?3 WHERE ino = ?1",
            vec![upload_id.to_owned().into(), (part_size as i64).into()],
        )
    }
    fn before_complete(
        &self,
        upload_id: &str,
        _size: u64,
        tree_hash: &Digest,
    ) -> Result<(), String> {
        self.set(
            "UPDATE uploads SET state = 'completing', upload_id = ?2, tree_hash = ?3 WHERE ino = ?1",
            vec![upload_id.to_owned().into(), treehash::to_hex(tree_hash).into()],
        )
    }
    fn created(&self, archive_id: &str, tree_hash: &Digest) -> Result<(), String> {
        self.set(
            "UPDATE uploads SET state = 'created', archive_id = ?2, tree_hash = ?3 WHERE ino = ?1",
            vec![
                archive_id.to_owned().into(),
                treehash::to_hex(tree_hash).into(),
            ],
        )
    }
    fn restarted(&self) -> Result<(), String> {
        self.set(
            "UPDATE uploads SET state = 'queued', upload_id = NULL WHERE ino = ?1",
            vec![],
        )
    }
}

/// Puts the uploaded archive on its node. Returns whether the node is now clean.
fn record_archive(
    tx: &Connection,
    row: &UploadRow,
    archive_id: &str,
    hash_hex: &str,
    delete_at: i64,
) -> Result<bool, CatalogError> {
    tx.execute("DELETE FROM uploads WHERE ino = ?1", [row.ino as i64])?;
    if row.part_size.is_none() {
        // UploadArchive is not idempotent: an attempt whose reply was lost (and retried) may
        // have left a twin. The next inventory finds it by description, size and hash.
        tx.execute(
            "INSERT INTO unconfirmed (vault, ino, description, size, tree_hash, created_s) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            params![
                row.vault as i64,
                row.ino as i64,
                row.description,
                row.size as i64,
                hash_hex,
                catalog::now_s()
            ],
        )?;
    }
    // An endpoint that names archives by content may hand back an id already queued for
    // deletion (another file's old version): it is in use again.
    tx.execute(
        "DELETE FROM deletes WHERE vault = ?1 AND archive_id = ?2",
        params![row.vault as i64, archive_id],
    )?;
    tx.execute(
        "DELETE FROM tombstones WHERE vault = ?1 AND archive_id = ?2",
        params![row.vault as i64, archive_id],
    )?;
    let Some(node) = nodes::get(tx, row.ino)? else {
        // Unlinked while it was uploading: the new archive has no one left to serve.
        queue_delete(tx, row.vault, archive_id, "", delete_at, None)?;
        return Ok(true);
    };
    let old = node.archive_id.clone();
    // Renamed while it was going up: the description names the old path, so the file goes up
    // once more under its new name, and this archive is replaced like any older version.
    let path_now = nodes::vault_relative_path(tx, row.ino)?;
    let renamed = names::decode(&row.description).path != path_now;
    let dirty_after = if renamed {
        now_ns()
    } else if node.dirty == row.gen {
        0
    } else {
        node.dirty
    };
    tx.execute(
        "UPDATE nodes SET archive_id = ?2, archive_key = ?3, tree_hash = ?4, description = ?5, \
         created_s = ?6, local = 1, dirty = ?7, read_ns = ?6 * 1000000000, \
         size = CASE WHEN dirty = ?9 THEN ?10 ELSE size END, \
         closed_ns = CASE WHEN ?8 THEN ?6 * 1000000000 ELSE closed_ns END WHERE ino = ?1",
        params![
            row.ino as i64,
            archive_id,
            nodes::archive_key(archive_id),
            hash_hex,
            row.description,
            catalog::now_s(),
            dirty_after,
            renamed,
            row.gen,
            row.size as i64
        ],
    )?;
    if let Some(old) = old.filter(|o| o != archive_id) {
        queue_delete(tx, row.vault, &old, &path_now, delete_at, None)?;
    }
    Ok(dirty_after == 0)
}

fn due_uploads(c: &Connection, cutoff_ns: i64, forced: &[u64]) -> Result<Vec<Due>, CatalogError> {
    let mut out = Vec::new();
    let mut stmt = c.prepare_cached(
        "SELECT ino, dirty FROM nodes WHERE dirty > 0 AND kind = 3 \
         AND closed_ns IS NOT NULL AND closed_ns <= ?1",
    )?;
    let rows = stmt.query_map([cutoff_ns], |r| {
        Ok(Due {
            ino: r.get::<_, i64>(0)? as u64,
            gen: r.get(1)?,
        })
    })?;
    for r in rows {
        out.push(r?);
    }
    let seen: HashSet<u64> = out.iter().map(|d| d.ino).collect();
    let mut one =
        c.prepare_cached("SELECT dirty FROM nodes WHERE ino = ?1 AND dirty > 0 AND kind = 3")?;
    for ino in forced.iter().filter(|i| !seen.contains(i)) {
        if let Some(gen) = one.query_row([*ino as i64], |r| r.get(0)).optional()? {
            out.push(Due { ino: *ino, gen });
        }
    }
    Ok(out)
}

fn upload_row(c: &Connection, ino: u64) -> Result<Option<UploadRow>, CatalogError> {
    let mut stmt = c.prepare_cached(&format!("{UPLOAD_SELECT} WHERE ino = ?1"))?;
    Ok(stmt.query_row([ino as i64], upload_from_row).optional()?)
}

fn all_upload_rows(c: &Connection) -> Result<Vec<UploadRow>, CatalogError> {
    let mut stmt = c.prepare(UPLOAD_SELECT)?;
    let rows = stmt.query_map([], upload_from_row)?;
    Ok(rows.collect::<Result<_, _>>()?)
}

const UPLOAD_SELECT: &str = "SELECT ino, gen, vault, snapshot, size, description, part_size, \
                             upload_id, tree_hash, archive_id, state FROM uploads";

fn upload_from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<UploadRow> {
    Ok(UploadRow {
        ino: r.get::<_, i64>(0)? as u64,
        gen: r.get(1)?,
        vault: r.get::<_, i64>(2)? as u64,
        snapshot: r.get(3)?,
        size: r.get::<_, i64>(4)? as u64,
        description: r.get(5)?,
        part_size: r.get::<_, Option<i64>>(6)?.map(|v| v as u64),
        upload_id: r.get(7)?,
        tree_hash: r.get(8)?,
        archive_id: r.get(9)?,
        state: r.get(10)?,
    })
}

struct DueDelete {
    id: i64,
    vault_name: String,
    archive_id: Option<String>,
    upload_id: Option<String>,
    path: Option<String>,
    attempts: i64,
}

impl DueDelete {
    fn what(&self) -> String {
        match (&self.archive_id, &self.path) {
            (Some(_), Some(p)) if !p.is_empty() => format!("the old archive of {p}"),
            (Some(a), _) => format!("archive {}…", &a[..a.len().min(12)]),
            _ => "an abandoned multipart upload".into(),
        }
    }
}

/// Deletes whose delay has passed and whose replacement (if any) is safely uploaded.
fn due_deletes(c: &Connection, now: i64) -> Result<Vec<DueDelete>, CatalogError> {
    let mut stmt = c.prepare_cached(
        "SELECT d.id, v.name, d.archive_id, d.upload_id, d.path, d.attempts FROM deletes d \
         JOIN vaults v ON v.ino = d.vault \
         WHERE d.not_before_ns <= ?1 AND (d.after_ino IS NULL OR NOT EXISTS \
             (SELECT 1 FROM nodes n WHERE n.ino = d.after_ino AND n.dirty > 0)) \
         AND (d.archive_id IS NULL OR NOT EXISTS (SELECT 1 FROM nodes n \
             WHERE n.archive_id = d.archive_id AND n.vault = d.vault))",
    )?;
    let rows = stmt.query_map([now], |r| {
        Ok(DueDelete {
            id: r.get(0)?,
            vault_name: r.get(1)?,
            archive_id: r.get(2)?,
            upload_id: r.get(3)?,
            path: r.get(4)?,
            attempts: r.get(5)?,
        })
    })?;
    Ok(rows.collect::<Result<_, _>>()?)
}
