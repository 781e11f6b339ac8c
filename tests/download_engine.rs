//! The download engine (`glacierfs::engine::transfer::download`) against the project's Glacier emulator,
//! through the real SDK client: sizes around the leaf and chunk edges at several chunk sizes and
//! parallelisms, corrupted, truncated and cut-off bodies, resuming from the journal (with the
//! same and another chunk size), expired jobs, an endpoint that ignores `Range` (as moto does),
//! and corruption that no tree-hash header can catch.
// A test fails by panicking, so unwrap and expect are how it says what went wrong.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{ready, Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use glacierfs::codec::treehash::{self, Digest, MIB};
use glacierfs::engine::transfer::download::{
    download, DownloadError, DownloadJournal, DownloadSpec, JournalError, Resume,
};
use glacierfs::glacier::{
    ArchiveCreated, BodyReader, BoxFut, ErrorKind, GlacierClient, GlacierError, JobDesc, JobFilter,
    JobOutput, JobRequest, LockDesc, PartsListing, Tier, UploadDesc, VaultDesc,
};
use support::emulator::{Emulator, FaultKind, Op};
use tokio::io::{AsyncRead, ReadBuf};

// ---------------------------------------------------------------------------------------------
// The real client on the emulator, and a wrapper that bends GetJobOutput.

/// The real SDK client on `endpoint`, behind the retrying decorator the engine is handed.
async fn client_for(endpoint: &str) -> Arc<dyn GlacierClient> {
    support::glacier_client(endpoint).await
}

/// How [`Bent`] treats GetJobOutput.
#[derive(Clone, Copy)]
enum Bend {
    /// Asks for everything and answers as moto does: 200, no Content-Range, no tree hash.
    IgnoreRange,
    /// Drops the tree-hash header and flips the byte at this offset of the output.
    StripAndFlip(u64),
    /// The n-th request (1-based) and every later one fail permanently.
    FailFrom(u64),
}

/// Passes everything to the real client, bending GetJobOutput.
struct Bent {
    inner: Arc<dyn GlacierClient>,
    bend: Bend,
    calls: AtomicU64,
}

fn bent(inner: &Arc<dyn GlacierClient>, bend: Bend) -> Arc<dyn GlacierClient> {
    Arc::new(Bent {
        inner: inner.clone(),
        bend,
        calls: AtomicU64::new(0),
    })
}

/// Flips the byte at output offset `at` as the body passes; `pos` is the body's first offset.
struct Flip {
    inner: BodyReader,
    pos: u64,
    at: u64,
}

impl AsyncRead for Flip {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        let before = buf.filled().len();
        ready!(this.inner.as_mut().poll_read(cx, buf))?;
        let fresh = &mut buf.filled_mut()[before..];
        let n = fresh.len() as u64;
        if (this.pos..this.pos + n).contains(&this.at) {
            fresh[(this.at - this.pos) as usize] ^= 0x20;
        }
        this.pos += n;
        Poll::Ready(Ok(()))
    }
}

impl GlacierClient for Bent {
    fn get_job_output<'a>(
        &'a self,
        vault: &'a str,
        job_id: &'a str,
        range: Option<(u64, u64)>,
    ) -> BoxFut<'a, JobOutput> {
        Box::pin(async move {
            let n = self.calls.fetch_add(1, Ordering::SeqCst) + 1;
            match self.bend {
                Bend::IgnoreRange => {
                    let out = self.inner.get_job_output(vault, job_id, None).await?;
                    Ok(JobOutput {
                        status: 200,
                        tree_hash: None,
                        content_range: None,
                        content_length: None,
                        body: out.body,
                    })
                }
                Bend::StripAndFlip(at) => {
                    let out = self.inner.get_job_output(vault, job_id, range).await?;
                    Ok(JobOutput {
                        tree_hash: None,
                        body: Box::pin(Flip {
                            inner: out.body,
                            pos: range.map_or(0, |r| r.0),
                            at,
                        }),
                        ..out
                    })
                }
                Bend::FailFrom(k) if n >= k => Err(GlacierError::new(
                    "GetJobOutput",
                    ErrorKind::AccessDenied,
                    "injected permanent failure",
                )),
                Bend::FailFrom(_) => self.inner.get_job_output(vault, job_id, range).await,
            }
        })
    }

    fn list_vaults(&self) -> BoxFut<'_, Vec<VaultDesc>> {
        self.inner.list_vaults()
    }
    fn describe_vault<'a>(&'a self, vault: &'a str) -> BoxFut<'a, VaultDesc> {
        self.inner.describe_vault(vault)
    }
    fn create_vault<'a>(&'a self, vault: &'a str) -> BoxFut<'a, ()> {
        self.inner.create_vault(vault)
    }
    fn delete_vault<'a>(&'a self, vault: &'a str) -> BoxFut<'a, ()> {
        self.inner.delete_vault(vault)
    }
    fn upload_archive<'a>(
        &'a self,
        vault: &'a str,
        description: &'a str,
        body: Bytes,
        tree_hash: Option<Digest>,
    ) -> BoxFut<'a, ArchiveCreated> {
        self.inner
            .upload_archive(vault, description, body, tree_hash)
    }
    fn delete_archive<'a>(&'a self, vault: &'a str, archive_id: &'a str) -> BoxFut<'a, ()> {
        self.inner.delete_archive(vault, archive_id)
    }
    fn initiate_multipart<'a>(
        &'a self,
        vault: &'a str,
        description: &'a str,
        part_size: u64,
    ) -> BoxFut<'a, String> {
        self.inner.initiate_multipart(vault, description, part_size)
    }
    fn upload_part<'a>(
        &'a self,
        vault: &'a str,
        upload_id: &'a str,
        start: u64,
        body: Bytes,
        tree_hash: Option<Digest>,
    ) -> BoxFut<'a, Option<String>> {
        self.inner
            .upload_part(vault, upload_id, start, body, tree_hash)
    }
    fn complete_multipart<'a>(
        &'a self,
        vault: &'a str,
        upload_id: &'a str,
        size: u64,
        tree_hash: Digest,
    ) -> BoxFut<'a, ArchiveCreated> {
        self.inner
            .complete_multipart(vault, upload_id, size, tree_hash)
    }
    fn abort_multipart<'a>(&'a self, vault: &'a str, upload_id: &'a str) -> BoxFut<'a, ()> {
        self.inner.abort_multipart(vault, upload_id)
    }
    fn list_parts<'a>(&'a self, vault: &'a str, upload_id: &'a str) -> BoxFut<'a, PartsListing> {
        self.inner.list_parts(vault, upload_id)
    }
    fn list_multipart_uploads<'a>(&'a self, vault: &'a str) -> BoxFut<'a, Vec<UploadDesc>> {
        self.inner.list_multipart_uploads(vault)
    }
    fn initiate_job<'a>(&'a self, vault: &'a str, request: &'a JobRequest) -> BoxFut<'a, String> {
        self.inner.initiate_job(vault, request)
    }
    fn describe_job<'a>(&'a self, vault: &'a str, job_id: &'a str) -> BoxFut<'a, JobDesc> {
        self.inner.describe_job(vault, job_id)
    }
    fn list_jobs<'a>(&'a self, vault: &'a str, filter: JobFilter) -> BoxFut<'a, Vec<JobDesc>> {
        self.inner.list_jobs(vault, filter)
    }
    fn get_vault_lock<'a>(&'a self, vault: &'a str) -> BoxFut<'a, Option<LockDesc>> {
        self.inner.get_vault_lock(vault)
    }
    fn initiate_vault_lock<'a>(&'a self, vault: &'a str, policy: &'a str) -> BoxFut<'a, String> {
        self.inner.initiate_vault_lock(vault, policy)
    }
    fn complete_vault_lock<'a>(&'a self, vault: &'a str, lock_id: &'a str) -> BoxFut<'a, ()> {
        self.inner.complete_vault_lock(vault, lock_id)
    }
    fn abort_vault_lock<'a>(&'a self, vault: &'a str) -> BoxFut<'a, ()> {
        self.inner.abort_vault_lock(vault)
    }
    fn list_tags<'a>(
        &'a self,
        vault: &'a str,
    ) -> BoxFut<'a, std::collections::BTreeMap<String, String>> {
        self.inner.list_tags(vault)
    }
    fn add_tags<'a>(
        &'a self,
        vault: &'a str,
        tags: &'a std::collections::BTreeMap<String, String>,
    ) -> BoxFut<'a, ()> {
        self.inner.add_tags(vault, tags)
    }
    fn remove_tags<'a>(&'a self, vault: &'a str, keys: &'a [String]) -> BoxFut<'a, ()> {
        self.inner.remove_tags(vault, keys)
    }
    fn get_access_policy<'a>(&'a self, vault: &'a str) -> BoxFut<'a, Option<String>> {
        self.inner.get_access_policy(vault)
    }
    fn set_access_policy<'a>(&'a self, vault: &'a str, policy: &'a str) -> BoxFut<'a, ()> {
        self.inner.set_access_policy(vault, policy)
    }
    fn delete_access_policy<'a>(&'a self, vault: &'a str) -> BoxFut<'a, ()> {
        self.inner.delete_access_policy(vault)
    }
    fn get_notifications<'a>(
        &'a self,
        vault: &'a str,
    ) -> BoxFut<'a, Option<glacierfs::glacier::Notifications>> {
        self.inner.get_notifications(vault)
    }
    fn set_notifications<'a>(
        &'a self,
        vault: &'a str,
        config: &'a glacierfs::glacier::Notifications,
    ) -> BoxFut<'a, ()> {
        self.inner.set_notifications(vault, config)
    }
    fn delete_notifications<'a>(&'a self, vault: &'a str) -> BoxFut<'a, ()> {
        self.inner.delete_notifications(vault)
    }
    fn get_retrieval_policy(&self) -> BoxFut<'_, glacierfs::glacier::RetrievalPolicy> {
        self.inner.get_retrieval_policy()
    }
    fn list_capacity(&self) -> BoxFut<'_, Vec<glacierfs::glacier::CapacityUnit>> {
        self.inner.list_capacity()
    }
}

// ---------------------------------------------------------------------------------------------
// A journal that keeps its records, and can refuse after a number of them.

#[derive(Default)]
struct Journal {
    records: Mutex<Vec<(u64, Vec<Digest>)>>,
    /// Records accepted before every later one fails.
    accept: Option<usize>,
}

impl DownloadJournal for Journal {
    fn verified(&self, upto: u64, leaves: &[Digest]) -> Result<(), JournalError> {
        let mut records = self.records.lock().expect("journal lock");
        if self.accept.is_some_and(|n| records.len() >= n) {
            return Err(io::Error::other("injected journal failure").into());
        }
        records.push((upto, leaves.to_vec()));
        Ok(())
    }
}

impl Journal {
    fn accepting(n: usize) -> Journal {
        Journal {
            accept: Some(n),
            ..Journal::default()
        }
    }

    fn upto(&self) -> Vec<u64> {
        let records = self.records.lock().expect("journal lock");
        records.iter().map(|r| r.0).collect()
    }

    /// What a restart would read.
    fn resume(&self) -> Resume {
        let records = self.records.lock().expect("journal lock");
        records
            .last()
            .map(|(verified, leaves)| Resume {
                verified: *verified,
                leaves: leaves.clone(),
            })
            .unwrap_or_default()
    }
}

// ---------------------------------------------------------------------------------------------
// One emulator, vault and client per test.

const VAULT: &str = "downloads";

struct Setup {
    emu: Arc<Emulator>,
    client: Arc<dyn GlacierClient>,
    dir: tempfile::TempDir,
}

/// An archive and a completed job retrieving all of it.
struct Job {
    id: String,
    data: Vec<u8>,
    tree_hash: Digest,
}

fn pseudo_random(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

impl Setup {
    async fn new() -> Setup {
        // RUST_LOG=glacierfs=debug shows the engine's view of each fault.
        let _ = env_logger::builder().is_test(true).try_init();
        let emu = Arc::new(Emulator::start());
        emu.create_vault(VAULT);
        let client = client_for(&emu.endpoint()).await;
        Setup {
            emu,
            client,
            dir: tempfile::tempdir().expect("temporary directory"),
        }
    }

    async fn job(&self, len: usize) -> Job {
        let data = pseudo_random(len, len as u64);
        let archive_id = self.emu.put_archive(VAULT, "test archive", &data, None);
        let request = JobRequest::Archive {
            archive_id,
            tier: Tier::Expedited,
            range: None,
            description: None,
        };
        let id = self
            .client
            .initiate_job(VAULT, &request)
            .await
            .expect("InitiateJob");
        self.emu.complete_all_jobs();
        Job {
            id,
            tree_hash: treehash::tree_hash(&data),
            data,
        }
    }

    fn spec(&self, job: &Job, chunk_size: u64, name: &str) -> DownloadSpec {
        DownloadSpec {
            vault: VAULT.into(),
            job_id: job.id.clone(),
            size: job.data.len() as u64,
            tree_hash: job.tree_hash,
            dest: self.dir.path().join(name),
            chunk_size,
        }
    }

    /// The output ranges the emulator served for `job` since the last reset, sorted.
    fn served(&self, job: &Job) -> (Vec<(u64, u64)>, u64) {
        let stats = self.emu.stats();
        let out = stats.job_output.get(&job.id).cloned().unwrap_or_default();
        let mut ranges = out.ranges;
        ranges.sort_unstable();
        (ranges, out.bytes_served)
    }
}

/// Runs the engine; returns its result and the progress it reported.
async fn run(
    client: &Arc<dyn GlacierClient>,
    spec: &DownloadSpec,
    resume: Resume,
    journal: &Journal,
    parallel: usize,
) -> (Result<(), DownloadError>, u64) {
    let progress = AtomicU64::new(0);
    let result = download(client, spec, resume, journal, &progress, parallel).await;
    (result, progress.load(Ordering::SeqCst))
}

fn read(path: &PathBuf) -> Vec<u8> {
    std::fs::read(path).expect("read the data file")
}

/// Inclusive ranges of `[from, size)` in steps of `chunk` (starting aligned).
fn chunk_ranges(from: u64, size: u64, chunk: u64) -> Vec<(u64, u64)> {
    (from..size)
        .step_by(chunk as usize)
        .map(|s| (s, size.min(s + chunk) - 1))
        .collect()
}

// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sizes_chunk_sizes_and_parallelism() {
    let t = Setup::new().await;
    for len in [1, MIB, MIB + 1, 5 * MIB + 3] {
        let job = t.job(len as usize).await;
        for chunk in [MIB, 2 * MIB] {
            for parallel in [1, 4] {
                let case = format!("{len} bytes, chunks of {chunk}, {parallel} at once");
                let spec = t.spec(&job, chunk, &format!("{len}-{chunk}-{parallel}"));
                let journal = Journal::default();
                t.emu.reset_stats();
                let (result, progress) =
                    run(&t.client, &spec, Resume::default(), &journal, parallel).await;
                result.unwrap_or_else(|e| panic!("{case}: {e}"));
                assert!(read(&spec.dest) == job.data, "{case}: the bytes differ");
                assert_eq!(progress, len, "{case}");
                let mode = std::fs::metadata(&spec.dest).expect("stat").permissions();
                assert_eq!(mode.mode() & 0o777, 0o600, "{case}");
                // Each chunk requested once, exactly; nothing else.
                let (ranges, bytes) = t.served(&job);
                assert_eq!(ranges, chunk_ranges(0, len, chunk), "{case}");
                assert_eq!(bytes, len, "{case}");
                // The journal grows chunk by chunk and reaches the size only at the end, with
                // every leaf.
                let upto = journal.upto();
                assert!(upto.windows(2).all(|w| w[0] < w[1]), "{case}: {upto:?}");
                assert_eq!(upto.last(), Some(&len), "{case}");
                assert!(upto[..upto.len() - 1]
                    .iter()
                    .all(|u| u % chunk == 0 && *u < len));
                assert_eq!(journal.resume().leaves, treehash::leaf_hashes(&job.data));
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn persistent_corruption_is_never_reported_verified() {
    let t = Setup::new().await;
    let job = t.job(5 * MIB as usize + 3).await;
    let spec = t.spec(&job, 2 * MIB, "corrupt");
    t.emu.corrupt_job_output(&job.id, true);
    let journal = Journal::default();
    let (result, progress) = run(&t.client, &spec, Resume::default(), &journal, 2).await;
    let err = result.expect_err("corrupt data must not be accepted");
    assert!(matches!(err, DownloadError::Corrupt { .. }), "{err}");
    assert!(!err.is_transient());
    assert_eq!(progress, 0, "no chunk verified");
    assert!(
        journal.upto().iter().all(|u| *u == 0),
        "{:?}",
        journal.upto()
    );
    // Each chunk was tried three times at most.
    let requests = t.emu.stats().requests_for(Op::GetJobOutput);
    assert!((3..=9).contains(&requests), "{requests} requests");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn one_time_faults_are_fetched_again() {
    let t = Setup::new().await;
    let len = 5 * MIB + 3;
    let job = t.job(len as usize).await;
    let chunks = chunk_ranges(0, len, MIB).len() as u64;
    let cases: [(&str, Option<FaultKind>, u64); 5] = [
        ("corrupted", None, 1),
        ("truncated", Some(FaultKind::TruncateOutput), 1),
        ("reset mid-body", Some(FaultKind::ResetMidBody), 1),
        ("corrupted by fault", Some(FaultKind::CorruptOutput), 2),
        // Retried by the client, not the engine.
        ("server errors", Some(FaultKind::InternalError), 2),
    ];
    for (name, fault, extra) in cases {
        let spec = t.spec(&job, MIB, name);
        match fault {
            None => t.emu.corrupt_job_output(&job.id, false),
            Some(kind) => t.emu.fail_next(Op::GetJobOutput, kind, extra as usize),
        }
        t.emu.reset_stats();
        let journal = Journal::default();
        let (result, progress) = run(&t.client, &spec, Resume::default(), &journal, 2).await;
        result.unwrap_or_else(|e| panic!("{name}: {e}"));
        assert!(read(&spec.dest) == job.data, "{name}: the bytes differ");
        assert_eq!(progress, len, "{name}: each chunk counted once");
        let stats = t.emu.stats();
        assert_eq!(
            stats.requests_for(Op::GetJobOutput),
            chunks + extra,
            "{name}"
        );
        assert!(stats.faults_injected() >= 1, "{name}: the fault fired");
        assert_eq!(journal.upto().last(), Some(&len), "{name}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn resume_requests_only_what_lies_beyond() {
    let t = Setup::new().await;
    let len = 5 * MIB + 3;
    let job = t.job(len as usize).await;
    let spec = t.spec(&job, MIB, "resumed");
    // The journal takes two records, then fails: the download stops there.
    let first = Journal::accepting(2);
    let (result, _) = run(&t.client, &spec, Resume::default(), &first, 2).await;
    let err = result.expect_err("the journal stops the download");
    assert!(matches!(err, DownloadError::Journal(_)), "{err}");
    assert!(err.is_transient());
    let resume = first.resume();
    assert!(
        resume.verified >= 2 * MIB && resume.verified < len,
        "{resume:?}"
    );
    assert_eq!(
        resume.leaves,
        treehash::leaf_hashes(&job.data[..resume.verified as usize])
    );

    t.emu.reset_stats();
    let journal = Journal::default();
    let from = resume.verified;
    let (result, progress) = run(&t.client, &spec, resume, &journal, 2).await;
    result.expect("the resumed download");
    assert!(read(&spec.dest) == job.data, "the bytes differ");
    assert_eq!(progress, len - from);
    let (ranges, bytes) = t.served(&job);
    assert_eq!(ranges, chunk_ranges(from, len, MIB));
    assert_eq!(bytes, len - from, "only bytes beyond the verified prefix");
    assert_eq!(journal.upto().last(), Some(&len));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn resume_after_a_permanent_error_with_another_chunk_size() {
    let t = Setup::new().await;
    let len = 9 * MIB;
    let job = t.job(len as usize).await;
    let spec = t.spec(&job, MIB, "rechunked");
    // Requests 1-3 pass, the 4th fails for good: three chunks are recorded.
    let failing = bent(&t.client, Bend::FailFrom(4));
    let first = Journal::default();
    let (result, _) = run(&failing, &spec, Resume::default(), &first, 1).await;
    let err = result.expect_err("the client fails");
    assert!(matches!(err, DownloadError::Glacier(_)), "{err}");
    assert!(!err.is_transient());
    assert_eq!(first.upto(), vec![MIB, 2 * MIB, 3 * MIB]);

    // Resumed with 4 MiB chunks: 1 MiB to reach a 4 MiB boundary, then full chunks, each a
    // node of the tree, so each still comes with a tree hash to check.
    t.emu.reset_stats();
    let spec = DownloadSpec {
        chunk_size: 4 * MIB,
        ..spec
    };
    let journal = Journal::default();
    let (result, _) = run(&t.client, &spec, first.resume(), &journal, 1).await;
    result.expect("the resumed download");
    assert!(read(&spec.dest) == job.data, "the bytes differ");
    let (ranges, _) = t.served(&job);
    assert_eq!(
        ranges,
        vec![
            (3 * MIB, 4 * MIB - 1),
            (4 * MIB, 8 * MIB - 1),
            (8 * MIB, 9 * MIB - 1)
        ]
    );
    assert_eq!(journal.upto(), vec![4 * MIB, 8 * MIB, len]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_expired_job_is_reported_expired() {
    let t = Setup::new().await;
    let job = t.job(MIB as usize + 1).await;
    t.emu.advance(Duration::from_secs(25 * 3600));
    let spec = t.spec(&job, MIB, "expired");
    let journal = Journal::default();
    let (result, _) = run(&t.client, &spec, Resume::default(), &journal, 2).await;
    let err = result.expect_err("the job's output is gone");
    assert!(matches!(err, DownloadError::Expired), "{err}");
    assert!(!err.is_transient());
    assert!(journal.upto().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_endpoint_that_ignores_range_still_gives_exact_bytes() {
    let t = Setup::new().await;
    let len = 5 * MIB + 3;
    let job = t.job(len as usize).await;
    let moto = bent(&t.client, Bend::IgnoreRange);

    // One request, the whole output, journalled chunk by chunk.
    let spec = t.spec(&job, MIB, "whole");
    let journal = Journal::default();
    let (result, progress) = run(&moto, &spec, Resume::default(), &journal, 4).await;
    result.expect("download through an endpoint that ignores Range");
    assert!(read(&spec.dest) == job.data, "the bytes differ");
    assert_eq!(progress, len);
    assert_eq!(t.served(&job).0, vec![(0, len - 1)]);
    assert_eq!(
        journal.upto(),
        vec![MIB, 2 * MIB, 3 * MIB, 4 * MIB, 5 * MIB, len]
    );

    // Cut off mid-body: asked again, and the prefix already verified is skipped, not rewritten.
    t.emu.reset_stats();
    t.emu
        .fail_next(Op::GetJobOutput, FaultKind::ResetMidBody, 1);
    let spec = t.spec(&job, MIB, "whole-reset");
    let journal = Journal::default();
    let (result, progress) = run(&moto, &spec, Resume::default(), &journal, 4).await;
    result.expect("download after a reset");
    assert!(read(&spec.dest) == job.data, "the bytes differ");
    assert_eq!(progress, len, "each chunk counted once");
    assert_eq!(t.emu.stats().requests_for(Op::GetJobOutput), 2);

    // Resumed: the prefix is neither rewritten nor hashed again.
    let spec = t.spec(&job, 2 * MIB, "whole-resumed");
    let mut prefix = job.data[..2 * MIB as usize].to_vec();
    prefix.resize(len as usize, 0);
    std::fs::write(&spec.dest, &prefix).expect("write the prefix");
    let resume = Resume {
        verified: 2 * MIB,
        leaves: treehash::leaf_hashes(&job.data[..2 * MIB as usize]),
    };
    let journal = Journal::default();
    let (result, progress) = run(&moto, &spec, resume, &journal, 4).await;
    result.expect("resumed download through an endpoint that ignores Range");
    assert!(read(&spec.dest) == job.data, "the bytes differ");
    assert_eq!(progress, len - 2 * MIB);
    assert_eq!(journal.upto(), vec![4 * MIB, len]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn corruption_without_a_tree_hash_is_caught_by_the_final_check() {
    let t = Setup::new().await;
    let len = 5 * MIB + 3;
    let job = t.job(len as usize).await;
    let spec = t.spec(&job, MIB, "unchecked");
    let lying = bent(&t.client, Bend::StripAndFlip(3 * MIB + 17));
    let journal = Journal::default();
    let (result, _) = run(&lying, &spec, Resume::default(), &journal, 2).await;
    let err = result.expect_err("the archive's tree hash does not match");
    assert!(matches!(err, DownloadError::Corrupt { .. }), "{err}");
    let upto = journal.upto();
    assert!(
        upto.iter().all(|u| *u < len),
        "never recorded whole: {upto:?}"
    );
    assert_eq!(upto.last(), Some(&0), "the journal is told to start over");
    assert_eq!(journal.resume(), Resume::default());

    // Starting over, with an honest endpoint, gives the archive.
    let journal = Journal::default();
    let (result, _) = run(&t.client, &spec, Resume::default(), &journal, 2).await;
    result.expect("the download from scratch");
    assert!(read(&spec.dest) == job.data, "the bytes differ");
}
