//! The write-back queue (`glacierfs::engine::writeback`) in-process, without a mount: a catalog
//! in a temp dir, a data store, the open-file table and the real SDK client against the
//! project's Glacier emulator. Files are staged the way the daemon finds them after a lost
//! catalog (data file plus sidecar, put back by `recover_staged`), so no test writes SQL.
//!
//! Covered: the backoff after a failed attempt (the next attempt waits; `sync`, here
//! `WriteBack::force`, tries again at once), cancel on unlink (a multipart upload is aborted;
//! an archive a cut-off Complete made is queued for deletion), and recovery of each journal
//! state a crash can leave (resume a multipart upload, restart one Glacier forgot, repeat a
//! Complete, abort an Initiate nobody recorded, record an archive already made).
// A test fails by panicking, so unwrap and expect are how it says what went wrong.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use glacierfs::catalog::deletes::queue_delete;
use glacierfs::catalog::uploads::{self, UploadRow, UploadState};
use glacierfs::catalog::{self, jobs, nodes, vaults, Catalog, Node};
use glacierfs::codec::names;
use glacierfs::codec::treehash::{self, to_hex, MIB};
use glacierfs::engine::recovery::recover_staged;
use glacierfs::engine::writeback::{WriteBack, WriteBackOptions};
use glacierfs::glacier::GlacierClient;
use glacierfs::store::cache::{DataStore, Sidecar};
use glacierfs::store::handles::OpenFiles;
use support::emulator::{Emulator, FaultKind, Op};

const VAULT: &str = "queue";

/// Deterministic pseudo-random bytes (xorshift).
fn data(len: u64, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    let mut out = vec![0u8; len as usize];
    for chunk in out.chunks_mut(8) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        chunk.copy_from_slice(&x.to_le_bytes()[..chunk.len()]);
    }
    out
}

/// Polls `done` every 50 ms for up to `limit`.
async fn wait_for(limit: Duration, mut done: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + limit;
    while Instant::now() < end {
        if done() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    done()
}

/// Everything a write-back queue needs, on a fresh emulator.
struct Rig {
    emu: Arc<Emulator>,
    client: Arc<dyn GlacierClient>,
    _dir: tempfile::TempDir,
    catalog: Catalog,
    data: DataStore,
    open_files: Arc<OpenFiles>,
    vault: u64,
    /// Inode numbers for the sidecars that stage files; far above the catalog's own.
    next_parked: AtomicU64,
}

impl Rig {
    async fn new() -> Rig {
        let emu = Arc::new(Emulator::start());
        emu.create_vault(VAULT);
        let client = support::glacier_client(&emu.endpoint()).await;
        let dir = tempfile::tempdir().expect("temp dir");
        let catalog = Catalog::open(dir.path()).expect("open the catalog");
        let data = DataStore::open(dir.path()).expect("open the data store");
        let vault = catalog
            .write(|tx| Ok(vaults::ensure(tx, VAULT, "present")?.ino))
            .expect("the vault");
        Rig {
            emu,
            client,
            _dir: dir,
            catalog,
            data,
            open_files: Arc::new(OpenFiles::default()),
            vault,
            next_parked: AtomicU64::new(1_000_000),
        }
    }

    /// Stages `bytes` as `name` at the vault's top, closed now (so due at once with no delay).
    fn stage(&self, name: &str, bytes: &[u8]) -> Node {
        let parked = self.next_parked.fetch_add(1, Ordering::SeqCst);
        std::fs::write(self.data.data_path(parked), bytes).expect("write the data file");
        let sidecar = Sidecar {
            vault: VAULT.into(),
            path: name.into(),
            mode: Some(0o644),
            uid: None,
            gid: None,
            mtime_ns: 1_700_000_000_000_000_000,
        };
        self.data
            .write_sidecar(parked, &sidecar)
            .expect("write the sidecar");
        assert_eq!(recover_staged(&self.catalog, &self.data).expect("stage"), 1);
        self.node_named(name).expect("the staged node")
    }

    fn node_named(&self, name: &str) -> Option<Node> {
        let (vault, name) = (self.vault, name.to_owned());
        self.catalog
            .read(move |c| nodes::lookup(c, vault, &name))
            .expect("catalog read")
    }

    fn node(&self, ino: u64) -> Option<Node> {
        self.catalog
            .read(move |c| nodes::get(c, ino))
            .expect("catalog read")
    }

    fn row(&self, ino: u64) -> Option<UploadRow> {
        self.catalog
            .read(move |c| uploads::get(c, ino))
            .expect("catalog read")
    }

    /// Whether `ino` has its archive and nothing staged.
    fn clean(&self, ino: u64) -> bool {
        self.node(ino)
            .is_some_and(|n| n.dirty == 0 && n.archive_id.is_some())
    }

    /// Unlinks a file as the file system does: the node goes, its archive (if any) is queued
    /// for deletion, and its upload is cancelled.
    fn unlink(&self, wb: &Arc<WriteBack>, ino: u64) {
        self.data.remove(ino);
        let vault = self.vault;
        self.catalog
            .write(move |tx| {
                let current = nodes::get(tx, ino)?.and_then(|n| n.archive_id);
                nodes::remove(tx, ino)?;
                if let Some(id) = current {
                    queue_delete(tx, vault, &id, "", catalog::now_ns(), None)?;
                }
                Ok(())
            })
            .expect("unlink");
        wb.cancel(ino);
    }

    /// A queue with no write-back delay and 1 MiB parts, started on this runtime.
    fn start(&self, delete_delay: Duration) -> Arc<WriteBack> {
        let wb = WriteBack::new(
            self.catalog.clone(),
            self.client.clone(),
            self.data.clone(),
            self.open_files.clone(),
            WriteBackOptions {
                delay: Duration::ZERO,
                part_size: MIB,
                concurrency: 4,
                memory_budget: 64 * MIB,
                delete_delay,
            },
        );
        wb.spawn(&tokio::runtime::Handle::current());
        wb
    }

    fn count(&self, op: Op) -> u64 {
        self.emu.stats().requests_for(op)
    }

    /// The vault holds exactly one archive, with `bytes`, and no multipart upload.
    fn holds_only(&self, bytes: &[u8]) -> String {
        let archives = self.emu.archives(VAULT);
        assert_eq!(archives.len(), 1, "archives: {archives:#?}");
        let stored = self.emu.archive_data(VAULT, &archives[0].id);
        assert!(
            stored.as_deref() == Some(bytes),
            "the archive's bytes differ"
        );
        assert_eq!(self.emu.multipart_uploads(VAULT), vec![]);
        archives[0].id.clone()
    }

    /// A journal row for `node`'s staged content as the queue writes it before any call:
    /// the snapshot taken, the description of its path and mtime.
    fn journal(&self, node: &Node) -> UploadRow {
        let snapshot = self.data.snapshot(node.ino, node.dirty).expect("snapshot");
        let size = std::fs::metadata(self.data.resolve(&snapshot))
            .expect("snapshot size")
            .len();
        let row = UploadRow {
            ino: node.ino,
            gen: node.dirty,
            vault: self.vault,
            snapshot,
            size,
            description: names::encode_mt2(&node.name, node.mtime_ns.div_euclid(1_000_000_000)),
            part_size: None,
            upload_id: None,
            tree_hash: None,
            archive_id: None,
            state: UploadState::Queued,
        };
        let (r, mtime_ns) = (row.clone(), node.mtime_ns);
        self.catalog
            .write(move |tx| uploads::begin(tx, &r, mtime_ns))
            .expect("open the journal row");
        row
    }

    /// A multipart upload of `bytes` in 1 MiB parts, sending the parts starting below `upto`.
    async fn multipart(&self, description: &str, bytes: &[u8], upto: u64) -> String {
        let id = self
            .client
            .initiate_multipart(VAULT, description, MIB)
            .await
            .expect("initiate");
        for start in (0..upto.min(bytes.len() as u64)).step_by(MIB as usize) {
            let end = (start + MIB).min(bytes.len() as u64);
            let body = Bytes::copy_from_slice(&bytes[start as usize..end as usize]);
            self.client
                .upload_part(VAULT, &id, start, body, None)
                .await
                .expect("upload a part");
        }
        id
    }
}

fn snapshot_exists(rig: &Rig, row: &UploadRow) -> bool {
    rig.data.resolve(&row.snapshot).exists()
}

// ---------------------------------------------------------------------------------------------
// Backoff.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transient_failure_waits_its_backoff_and_sync_forces_the_retry() {
    let rig = Rig::new().await;
    let bytes = data(1000, 1);
    let node = rig.stage("flaky.txt", &bytes);
    // Every UploadArchive fails (the client's own retries included) until cleared.
    rig.emu
        .fail_next(Op::UploadArchive, FaultKind::InternalError, 10_000);
    let wb = rig.start(Duration::from_secs(3600));

    assert!(
        wait_for(Duration::from_secs(30), || wb
            .last_error(node.ino)
            .is_some())
        .await,
        "the first attempt never failed"
    );
    let first = wb
        .next_attempt_in(node.ino)
        .expect("a backoff after the failure");
    assert!(
        first <= Duration::from_secs(2),
        "a transient failure retries within seconds, not {first:?}"
    );
    assert!(
        wb.last_error(node.ino)
            .unwrap()
            .contains("ServiceUnavailable"),
        "{:?}",
        wb.last_error(node.ino)
    );
    // The next attempt waits: nothing is sent while the backoff runs.
    let sent = rig.count(Op::UploadArchive);
    if let Some(quiet) = first.checked_sub(Duration::from_millis(400)) {
        tokio::time::sleep(quiet).await;
        assert_eq!(
            rig.count(Op::UploadArchive),
            sent,
            "tried again during the backoff"
        );
    }
    // The second failure waits twice as long.
    assert!(
        wait_for(Duration::from_secs(30), || wb
            .next_attempt_in(node.ino)
            .is_some_and(|d| d > Duration::from_millis(2500)))
        .await,
        "the backoff did not grow after a second failure"
    );
    assert!(!rig.clean(node.ino));

    // `sync` does not wait for the backoff to run out.
    rig.emu.clear_faults();
    let backoff_ends = Instant::now() + wb.next_attempt_in(node.ino).unwrap_or_default();
    wb.force([node.ino]);
    assert_eq!(
        wb.next_attempt_in(node.ino),
        None,
        "force clears the backoff"
    );
    assert!(
        wait_for(Duration::from_secs(30), || rig.clean(node.ino)).await,
        "the forced retry did not upload the file"
    );
    assert!(
        Instant::now() < backoff_ends,
        "the upload waited for the backoff instead of going at once"
    );
    rig.holds_only(&bytes);
    assert_eq!(wb.last_error(node.ino), None);
    assert_eq!(wb.next_attempt_in(node.ino), None);
    assert_eq!(rig.row(node.ino), None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_upload_waits_minutes_until_sync_asks() {
    let rig = Rig::new().await;
    let bytes = data(2000, 2);
    let node = rig.stage("refused.txt", &bytes);
    rig.emu
        .fail_next(Op::UploadArchive, FaultKind::InvalidParameter, 1);
    let wb = rig.start(Duration::from_secs(3600));
    assert!(
        wait_for(Duration::from_secs(30), || wb
            .last_error(node.ino)
            .is_some())
        .await
    );
    let wait = wb.next_attempt_in(node.ino).expect("a backoff");
    assert!(
        wait > Duration::from_secs(60),
        "a refusal is not retried soon: {wait:?}"
    );
    assert!(wb
        .last_error(node.ino)
        .unwrap()
        .contains("InvalidParameterValueException"));
    let sent = rig.count(Op::UploadArchive);
    tokio::time::sleep(Duration::from_millis(1200)).await;
    assert_eq!(rig.count(Op::UploadArchive), sent);

    wb.force([node.ino]);
    assert!(wait_for(Duration::from_secs(30), || rig.clean(node.ino)).await);
    rig.holds_only(&bytes);
    assert_eq!(wb.last_error(node.ino), None);
}

// ---------------------------------------------------------------------------------------------
// Cancel.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unlinking_a_file_mid_upload_aborts_its_multipart_upload() {
    let rig = Rig::new().await;
    let bytes = data(3 * MIB, 3);
    let node = rig.stage("big.bin", &bytes);
    // Parts hang: the upload is in the middle of sending them when the file goes.
    rig.emu.set_stall(Duration::from_secs(10));
    rig.emu
        .fail_next(Op::UploadPart, FaultKind::Timeout, 10_000);
    let wb = rig.start(Duration::from_secs(3600));
    assert!(
        wait_for(Duration::from_secs(30), || {
            rig.row(node.ino)
                .is_some_and(|r| r.state == UploadState::Parts)
                && rig.count(Op::UploadPart) > 0
        })
        .await,
        "the multipart upload never started sending parts"
    );
    let row = rig.row(node.ino).expect("the journal row");
    assert_eq!(rig.emu.multipart_uploads(VAULT).len(), 1);
    assert!(wb.is_uploading(node.ino));

    rig.unlink(&wb, node.ino);
    assert!(
        wait_for(Duration::from_secs(30), || rig
            .emu
            .multipart_uploads(VAULT)
            .is_empty()
            && rig.row(node.ino).is_none())
        .await,
        "the cancelled upload was not aborted: {:?}",
        rig.emu.multipart_uploads(VAULT)
    );
    rig.emu.clear_faults();
    assert!(!wb.is_uploading(node.ino));
    assert!(!snapshot_exists(&rig, &row), "the snapshot was left behind");
    assert_eq!(rig.emu.archives(VAULT), vec![]);
    assert!(rig.count(Op::AbortMultipartUpload) >= 1);
    assert_eq!(rig.count(Op::CompleteMultipartUpload), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_archive_made_by_a_cancelled_complete_is_queued_for_deletion() {
    let rig = Rig::new().await;
    let bytes = data(2 * MIB + 10, 4);
    let node = rig.stage("made.bin", &bytes);
    // Complete goes through, and its reply hangs: the archive exists, unrecorded.
    rig.emu.set_stall(Duration::from_secs(10));
    rig.emu.fail_next(
        Op::CompleteMultipartUpload,
        FaultKind::TimeoutAfterCommit,
        1,
    );
    let wb = rig.start(Duration::from_secs(3600));
    assert!(
        wait_for(Duration::from_secs(30), || rig.emu.archives(VAULT).len()
            == 1)
        .await,
        "Complete never went through"
    );
    assert_eq!(
        rig.row(node.ino).map(|r| r.state),
        Some(UploadState::Completing)
    );

    rig.unlink(&wb, node.ino);
    // The cleanup asks Complete again, learns the archive's id, and queues its delete.
    assert!(
        wait_for(Duration::from_secs(30), || rig.row(node.ino).is_none()).await,
        "the cancelled upload's row was not settled"
    );
    let archive = rig.holds_only(&bytes);
    let queued = rig
        .catalog
        .read(|c| jobs::overview(c, None))
        .expect("overview")
        .deletes;
    assert_eq!(queued.len(), 1, "{queued:?}");
    assert_eq!(queued[0].archive_id.as_deref(), Some(archive.as_str()));
    assert_eq!(rig.count(Op::CompleteMultipartUpload), 2);
    assert!(!wb.is_uploading(node.ino));
}

// ---------------------------------------------------------------------------------------------
// Recovery: a journal row in each state a crash can leave, settled when the queue starts.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recovery_resumes_a_recorded_multipart_upload() {
    let rig = Rig::new().await;
    let bytes = data(3 * MIB, 5);
    let node = rig.stage("resumed.bin", &bytes);
    let row = rig.journal(&node);
    // The previous run initiated the upload and sent its first part.
    let upload_id = rig.multipart(&row.description, &bytes, MIB).await;
    let (ino, id) = (node.ino, upload_id.clone());
    rig.catalog
        .write(move |tx| {
            uploads::before_initiate(tx, ino, MIB)?;
            uploads::initiated(tx, ino, &id, MIB)
        })
        .expect("journal");

    let _wb = rig.start(Duration::from_secs(3600));
    assert!(wait_for(Duration::from_secs(60), || rig.clean(node.ino)).await);
    rig.holds_only(&bytes);
    assert_eq!(
        rig.count(Op::InitiateMultipartUpload),
        1,
        "no second Initiate"
    );
    assert_eq!(
        rig.count(Op::UploadPart),
        3,
        "only the two missing parts were sent"
    );
    assert_eq!(rig.row(node.ino), None);
    assert!(!snapshot_exists(&rig, &row));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recovery_starts_over_when_glacier_forgot_the_upload() {
    let rig = Rig::new().await;
    let bytes = data(3 * MIB, 6);
    let node = rig.stage("forgotten.bin", &bytes);
    let row = rig.journal(&node);
    let upload_id = rig.multipart(&row.description, &bytes, MIB).await;
    let (ino, id) = (node.ino, upload_id.clone());
    rig.catalog
        .write(move |tx| uploads::initiated(tx, ino, &id, MIB))
        .expect("journal");
    // Reclaimed while the daemon was down: ListParts answers 404.
    rig.emu.drop_upload(VAULT, &upload_id);

    let _wb = rig.start(Duration::from_secs(3600));
    assert!(wait_for(Duration::from_secs(60), || rig.clean(node.ino)).await);
    rig.holds_only(&bytes);
    assert_eq!(rig.count(Op::InitiateMultipartUpload), 2, "a fresh upload");
    assert_eq!(rig.row(node.ino), None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recovery_repeats_a_complete_whose_reply_was_lost() {
    let rig = Rig::new().await;
    let bytes = data(2 * MIB + 1, 7);
    let node = rig.stage("completed.bin", &bytes);
    let row = rig.journal(&node);
    let upload_id = rig.multipart(&row.description, &bytes, u64::MAX).await;
    let hash = treehash::tree_hash(&bytes);
    let made = rig
        .client
        .complete_multipart(VAULT, &upload_id, bytes.len() as u64, hash)
        .await
        .expect("complete");
    let (ino, id, hex) = (node.ino, upload_id.clone(), to_hex(&hash));
    rig.catalog
        .write(move |tx| {
            uploads::initiated(tx, ino, &id, MIB)?;
            uploads::before_complete(tx, ino, &id, &hex)
        })
        .expect("journal");

    let _wb = rig.start(Duration::from_secs(3600));
    assert!(wait_for(Duration::from_secs(60), || rig.clean(node.ino)).await);
    let archive = rig.holds_only(&bytes);
    assert_eq!(
        archive, made.archive_id,
        "the archive Complete made is the one recorded"
    );
    assert_eq!(
        rig.node(node.ino).and_then(|n| n.archive_id),
        Some(made.archive_id)
    );
    assert_eq!(rig.count(Op::InitiateMultipartUpload), 1);
    assert_eq!(rig.count(Op::CompleteMultipartUpload), 2);
    assert_eq!(rig.row(node.ino), None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recovery_aborts_an_initiate_nobody_recorded() {
    let rig = Rig::new().await;
    let bytes = data(3 * MIB, 8);
    let node = rig.stage("unrecorded.bin", &bytes);
    let row = rig.journal(&node);
    let ino = node.ino;
    rig.catalog
        .write(move |tx| uploads::before_initiate(tx, ino, MIB))
        .expect("journal");
    // Initiate went through; the crash came before its reply was journaled.
    let orphan = rig.multipart(&row.description, &bytes, 0).await;

    let _wb = rig.start(Duration::from_secs(3600));
    assert!(wait_for(Duration::from_secs(60), || rig.clean(node.ino)).await);
    rig.holds_only(&bytes);
    assert!(
        rig.emu
            .multipart_uploads(VAULT)
            .iter()
            .all(|u| u.id != orphan),
        "the unrecorded upload is still there"
    );
    assert!(rig.count(Op::AbortMultipartUpload) >= 1);
    assert_eq!(rig.count(Op::InitiateMultipartUpload), 2);
    assert_eq!(rig.row(node.ino), None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recovery_records_an_archive_that_was_made_but_not_recorded() {
    let rig = Rig::new().await;
    let bytes = data(5000, 9);
    let node = rig.stage("created.txt", &bytes);
    let row = rig.journal(&node);
    let made = rig
        .client
        .upload_archive(VAULT, &row.description, Bytes::from(bytes.clone()), None)
        .await
        .expect("upload");
    let (ino, id, hex) = (
        node.ino,
        made.archive_id.clone(),
        to_hex(&treehash::tree_hash(&bytes)),
    );
    rig.catalog
        .write(move |tx| {
            uploads::before_single(tx, ino)?;
            uploads::created(tx, ino, &id, &hex)
        })
        .expect("journal");

    let _wb = rig.start(Duration::from_secs(3600));
    assert!(wait_for(Duration::from_secs(60), || rig.clean(node.ino)).await);
    rig.holds_only(&bytes);
    assert_eq!(
        rig.node(node.ino).and_then(|n| n.archive_id),
        Some(made.archive_id)
    );
    assert_eq!(rig.count(Op::UploadArchive), 1, "nothing sent again");
    assert_eq!(rig.row(node.ino), None);
    assert!(!snapshot_exists(&rig, &row));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recovery_drops_the_row_of_a_file_deleted_meanwhile() {
    let rig = Rig::new().await;
    let bytes = data(3 * MIB, 10);
    let node = rig.stage("gone.bin", &bytes);
    let row = rig.journal(&node);
    let upload_id = rig.multipart(&row.description, &bytes, MIB).await;
    let (ino, id) = (node.ino, upload_id.clone());
    rig.catalog
        .write(move |tx| {
            uploads::initiated(tx, ino, &id, MIB)?;
            nodes::remove(tx, ino)
        })
        .expect("journal");

    let _wb = rig.start(Duration::from_secs(3600));
    assert!(wait_for(Duration::from_secs(30), || rig.row(node.ino).is_none()).await);
    assert!(
        wait_for(Duration::from_secs(30), || rig
            .emu
            .multipart_uploads(VAULT)
            .is_empty())
        .await,
        "the dead upload was not aborted"
    );
    assert_eq!(rig.emu.archives(VAULT), vec![]);
    assert!(!snapshot_exists(&rig, &row));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recovery_goes_on_past_a_row_it_cannot_settle() {
    let rig = Rig::new().await;
    // First row: a file deleted meanwhile whose Complete's reply was lost; asking again is
    // refused, so this row cannot be settled now.
    let stuck_bytes = data(2 * MIB, 11);
    let gone_bytes = data(3 * MIB, 12);
    // Both are staged first: staging puts back every data file no node claims.
    let stuck = rig.stage("stuck.bin", &stuck_bytes);
    let gone = rig.stage("gone.bin", &gone_bytes);
    let stuck_row = rig.journal(&stuck);
    let stuck_upload = rig
        .multipart(&stuck_row.description, &stuck_bytes, u64::MAX)
        .await;
    let (ino, id, hex) = (
        stuck.ino,
        stuck_upload.clone(),
        to_hex(&treehash::tree_hash(&stuck_bytes)),
    );
    rig.catalog
        .write(move |tx| {
            uploads::initiated(tx, ino, &id, MIB)?;
            uploads::before_complete(tx, ino, &id, &hex)?;
            nodes::remove(tx, ino)
        })
        .expect("journal");
    rig.emu
        .fail_next(Op::CompleteMultipartUpload, FaultKind::InvalidParameter, 1);
    // Second row: a file deleted meanwhile with a multipart upload under way, which recovery
    // settles by aborting the upload and dropping the row.
    let gone_row = rig.journal(&gone);
    let gone_upload = rig.multipart(&gone_row.description, &gone_bytes, MIB).await;
    let (ino, id) = (gone.ino, gone_upload.clone());
    rig.catalog
        .write(move |tx| {
            uploads::initiated(tx, ino, &id, MIB)?;
            nodes::remove(tx, ino)
        })
        .expect("journal");
    assert!(stuck.ino < gone.ino, "the stuck row is settled first");

    let _wb = rig.start(Duration::from_secs(3600));
    assert!(
        wait_for(Duration::from_secs(30), || rig.row(gone.ino).is_none()).await,
        "the row after the stuck one was never settled"
    );
    assert!(
        wait_for(Duration::from_secs(30), || rig
            .emu
            .multipart_uploads(VAULT)
            .iter()
            .all(|u| u.id != gone_upload))
        .await,
        "the second row's dead upload was not aborted"
    );
    assert!(
        rig.row(stuck.ino).is_some(),
        "the row that could not be settled stays in the journal"
    );
}

// ---------------------------------------------------------------------------------------------
// Races the soak found, forced here: a writer half-way through its open.

/// A writer that has truncated the data file but whose handle does not count yet (the open
/// path between `opening_writer` and its handle): the queue must neither freeze nor settle the
/// file meanwhile. Before `OpenFiles::opening_writer`, the queue saw no writer, took the
/// truncated file for an empty one (or froze it by a hard link the writer then wrote into).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_queue_leaves_a_file_alone_while_a_writer_is_opening_it() {
    let rig = Rig::new().await;
    let old = data(3000, 11);
    let node = rig.stage("opening.txt", &old);
    let control = rig.stage("control.txt", &data(500, 12));
    // The writer's open: counted, then O_TRUNC; its handle does not exist yet.
    let opening = rig.open_files.opening_writer(node.ino);
    std::fs::File::create(rig.data.data_path(node.ino)).expect("truncate the data file");
    let wb = rig.start(Duration::from_secs(3600));
    // Both files were due in the same round: once the other one is up, that round has
    // decided about this one too.
    assert!(wait_for(Duration::from_secs(30), || rig.clean(control.ino)).await);
    tokio::time::sleep(Duration::from_millis(600)).await;
    let now = rig.node(node.ino).expect("the node");
    assert_eq!(
        now.dirty, node.dirty,
        "the queue settled a file being opened"
    );
    assert_eq!(now.archive_id, None);
    assert_eq!(
        rig.row(node.ino),
        None,
        "the queue froze a file being opened"
    );
    assert_eq!(
        rig.count(Op::UploadArchive),
        1,
        "only the other file went up"
    );

    // The writer writes and closes: its bytes, and only them, go up.
    let new = data(2500, 13);
    std::fs::write(rig.data.data_path(node.ino), &new).expect("write");
    let written = catalog::files::Written {
        size: new.len() as u64,
        mtime_ns: Some(catalog::now_ns()),
        now_ns: catalog::now_ns(),
        closing: true,
    };
    let ino = node.ino;
    rig.catalog
        .write(move |tx| catalog::files::record_written(tx, ino, &written))
        .expect("record the close");
    drop(opening);
    wb.force([node.ino]);
    assert!(wait_for(Duration::from_secs(30), || rig.clean(node.ino)).await);
    let id = rig
        .node(node.ino)
        .and_then(|n| n.archive_id)
        .expect("an archive");
    assert_eq!(rig.emu.archive_data(VAULT, &id).as_deref(), Some(&new[..]));
    assert_eq!(rig.emu.archives(VAULT).len(), 2);
}

/// Eviction marks a file cold, then removes its data file. A writer that starts opening the
/// file in between must keep the data file (its O_TRUNC truncates that very inode); before
/// `OpenFiles::unless_written` the removal went ahead, and the writer's bytes went into an
/// unlinked file while every later open got EIO.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn eviction_never_removes_the_data_file_of_a_writer_that_is_opening_it() {
    let rig = Rig::new().await;
    let bytes = data(4000, 21);
    let node = rig.stage("evicted.txt", &bytes);
    let _wb = rig.start(Duration::from_secs(3600));
    assert!(wait_for(Duration::from_secs(30), || rig.clean(node.ino)).await);
    let ino = node.ino;
    rig.catalog
        .write(move |tx| glacierfs::catalog::retrievals::record_reads(tx, &[(ino, 1)]))
        .expect("record a read");

    let opening = rig.open_files.opening_writer(ino);
    glacierfs::store::cache::evict(&rig.catalog, &rig.data, 0, &rig.open_files, &|_| false)
        .expect("evict");
    assert!(
        rig.data.data_path(ino).exists(),
        "eviction removed the data file of a writer that is opening it"
    );
    drop(opening);

    // With no writer, the same eviction removes it.
    rig.catalog
        .write(move |tx| {
            catalog::files::record_written(
                tx,
                ino,
                &catalog::files::Written {
                    size: 4000,
                    mtime_ns: None,
                    now_ns: 5,
                    closing: true,
                },
            )
        })
        .expect("mark local");
    assert!(wait_for(Duration::from_secs(30), || rig.clean(ino)).await);
    rig.catalog
        .write(move |tx| glacierfs::catalog::retrievals::record_reads(tx, &[(ino, 1)]))
        .expect("record a read");
    glacierfs::store::cache::evict(&rig.catalog, &rig.data, 0, &rig.open_files, &|_| false)
        .expect("evict");
    assert!(
        !rig.data.data_path(ino).exists(),
        "eviction removed nothing"
    );
}

/// An open registers its passthrough backing under the data file's lock
/// (`OpenFiles::lock_data`); eviction takes the same lock, so it cannot remove the file between
/// the open and its registration (the backing would point at a removed file, and the next open
/// of the retrieved copy got EIO): it waits, then sees the file open and keeps it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn eviction_waits_for_an_open_under_way_and_keeps_its_file() {
    let rig = Rig::new().await;
    let node = rig.stage("held.txt", &data(4000, 31));
    let _wb = rig.start(Duration::from_secs(3600));
    assert!(wait_for(Duration::from_secs(30), || rig.clean(node.ino)).await);
    let ino = node.ino;
    rig.catalog
        .write(move |tx| glacierfs::catalog::retrievals::record_reads(tx, &[(ino, 1)]))
        .expect("record a read");

    // An open under way: it holds the lock, and its handle is not in the table yet.
    let opening = rig.open_files.lock_data(ino);
    let evictor = {
        let (catalog, data, files) = (
            rig.catalog.clone(),
            rig.data.clone(),
            rig.open_files.clone(),
        );
        std::thread::spawn(move || {
            glacierfs::store::cache::evict(&catalog, &data, 0, &files, &|i| files.is_open(i))
        })
    };
    // Time for an eviction that does not wait to finish (only a broken one does).
    tokio::time::sleep(Duration::from_millis(300)).await;
    rig.open_files.opened(ino);
    drop(opening);
    evictor.join().expect("the evictor").expect("evict");
    assert!(
        rig.data.data_path(ino).exists(),
        "eviction removed the data file of an open under way"
    );
    assert!(
        rig.node(ino).is_some_and(|n| n.local),
        "an open file was marked cold"
    );
}
