//! The retriever (`glacierfs::engine::retrieve`) in process, without a mount: a catalog in a
//! temporary directory, a data store beside it, and the real SDK client against the project's
//! Glacier emulator. What an open of a cold file gets and what it costs at Glacier: the
//! automatic-retrieval budget, the hold after Glacier refuses a job, reuse of a job already
//! started (by this engine or found in ListJobs), and a finished job's output becoming the
//! file's data, or failing the file once it is corrupt too often.
// A test fails by panicking, so unwrap and expect are how it says what went wrong.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::sync::Arc;
use std::time::{Duration, Instant};

use glacierfs::catalog::nodes::NewNode;
use glacierfs::catalog::{nodes, vaults, Catalog, Kind, Node};
use glacierfs::codec::treehash;
use glacierfs::config::parse_tiers;
use glacierfs::engine::retrieve::{RetrieveError, RetrieveOptions, Retriever};
use glacierfs::glacier::{GlacierClient, JobRequest, Tier};
use glacierfs::store::cache::DataStore;
use glacierfs::store::handles::OpenFiles;
use support::emulator::{ClockStart, Emulator, EmulatorOptions, FaultKind, Op};

const VAULT: &str = "v";

struct Setup {
    emu: Emulator,
    client: Arc<dyn GlacierClient>,
    catalog: Catalog,
    data: DataStore,
    vault: u64,
    retriever: Arc<Retriever>,
    _dir: tempfile::TempDir,
}

impl Setup {
    /// An emulator on real time (so the jobs it dates count in the budget's 24 h window) and a
    /// retriever with `budget` bytes of automatic retrievals per day.
    async fn new(budget: u64) -> Setup {
        let _ = env_logger::builder().is_test(true).try_init();
        let emu = Emulator::start_with(EmulatorOptions {
            clock: ClockStart::RealNow,
            ..EmulatorOptions::default()
        });
        emu.create_vault(VAULT);
        let client = support::glacier_client(&emu.endpoint()).await;
        let dir = tempfile::tempdir().expect("temporary directory");
        let catalog = Catalog::open(dir.path()).expect("catalog");
        let data = DataStore::open(dir.path()).expect("data store");
        let vault = catalog
            .write(|tx| vaults::ensure(tx, VAULT, "present"))
            .expect("vault row")
            .ino;
        let options = RetrieveOptions {
            tier: Tier::Standard.into(),
            auto: true,
            budget,
            job_budget: 1000,
            poll_interval: Duration::from_millis(100),
            cache_size: 1 << 30,
        };
        let retriever = Retriever::new(
            catalog.clone(),
            client.clone(),
            data.clone(),
            options,
            tokio::runtime::Handle::current(),
            Arc::new(OpenFiles::default()),
        );
        Setup {
            emu,
            client,
            catalog,
            data,
            vault,
            retriever,
            _dir: dir,
        }
    }

    /// A cold file of `len` bytes: an archive in the emulator, a node in the catalog.
    fn cold_file(&self, name: &str, len: usize) -> (Node, Vec<u8>) {
        let data: Vec<u8> = (0..len).map(|i| (i * 7 + name.len()) as u8).collect();
        let archive_id = self.emu.put_archive(VAULT, name, &data, None);
        let tree_hash = treehash::to_hex(&treehash::tree_hash(&data));
        let (vault, name_owned, size) = (self.vault, name.to_owned(), len as u64);
        let node = self
            .catalog
            .write(move |tx| {
                let new = NewNode {
                    parent: vault,
                    name: &name_owned,
                    vault,
                    size,
                    archive_id: Some(&archive_id),
                    tree_hash: Some(&tree_hash),
                    ..NewNode::default()
                };
                let ino = nodes::insert(tx, Kind::File, &new)?;
                nodes::get(tx, ino)
            })
            .expect("file node")
            .expect("the node just inserted");
        (node, data)
    }

    fn node(&self, ino: u64) -> Node {
        self.catalog
            .read(|c| nodes::get(c, ino))
            .expect("catalog read")
            .expect("the node")
    }

    fn initiated(&self) -> u64 {
        self.emu.stats().requests_for(Op::InitiateJob)
    }
}

/// Waits (up to 20 s) for `cond`, giving the retriever's background tasks the runtime.
async fn eventually(what: &str, mut cond: impl FnMut() -> bool) {
    let start = Instant::now();
    while !cond() {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "timed out waiting: {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Lets background work that should not happen have its chance to.
async fn settle() {
    tokio::time::sleep(Duration::from_millis(300)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_budget_bounds_automatic_retrievals() {
    let t = Setup::new(1000).await;
    let (big, _) = t.cold_file("big", 2000);
    let e = t.retriever.cold_open(&big);
    assert!(matches!(e, RetrieveError::BudgetSpent(_)), "{e}");
    settle().await;
    assert_eq!(t.initiated(), 0, "a refused open starts no job");
    assert!(t.emu.jobs(VAULT).is_empty());

    let (small, _) = t.cold_file("small", 600);
    let e = t.retriever.cold_open(&small);
    assert!(matches!(e, RetrieveError::NotYetAvailable(_)), "{e}");
    eventually("the job is recorded", || {
        t.retriever.job_id(&small).is_some()
    })
    .await;
    assert_eq!(t.initiated(), 1);

    // 600 of 1000 bytes are spent for the next 24 h.
    let (other, _) = t.cold_file("other", 600);
    let e = t.retriever.cold_open(&other);
    assert!(matches!(e, RetrieveError::BudgetSpent(_)), "{e}");
    // An explicit request is not bound by the budget.
    assert!(t.retriever.request(&other, None).expect("request"));
    eventually("the requested job", || t.retriever.job_id(&other).is_some()).await;
    assert_eq!(t.initiated(), 2);

    // A day later the window has moved past both jobs.
    t.retriever.advance_clock(Duration::from_secs(25 * 3600));
    let (late, _) = t.cold_file("late", 900);
    let e = t.retriever.cold_open(&late);
    assert!(matches!(e, RetrieveError::NotYetAvailable(_)), "{e}");
    eventually("a job within the new window", || {
        t.retriever.job_id(&late).is_some()
    })
    .await;
    assert_eq!(t.initiated(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_of_cold_opens_cannot_pass_the_budget_together() {
    let t = Setup::new(1000).await;
    let (a, _) = t.cold_file("a", 600);
    let (b, _) = t.cold_file("b", 600);
    let first = t.retriever.cold_open(&a);
    let second = t.retriever.cold_open(&b);
    assert!(
        matches!(first, RetrieveError::NotYetAvailable(_)),
        "{first}"
    );
    assert!(matches!(second, RetrieveError::BudgetSpent(_)), "{second}");
    eventually("the first job", || t.retriever.job_id(&a).is_some()).await;
    settle().await;
    assert_eq!(t.initiated(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_job_fails_opens_for_the_hold_then_is_asked_again() {
    let t = Setup::new(1 << 30).await;
    let (f, _) = t.cold_file("f", 1000);
    t.emu
        .fail_next(Op::InitiateJob, FaultKind::PolicyEnforced, 1);
    let e = t.retriever.cold_open(&f);
    assert!(matches!(e, RetrieveError::NotYetAvailable(_)), "{e}");
    eventually("the refusal is recorded", || {
        matches!(t.retriever.cold_open(&f), RetrieveError::Failed(_))
    })
    .await;
    let asked = t.initiated();
    assert!(asked >= 1);
    match t.retriever.cold_open(&f) {
        RetrieveError::Failed(m) => assert!(
            m.contains("f: Glacier refused the retrieval: ") && m.contains("PolicyEnforced"),
            "{m}"
        ),
        e => panic!("{e}"),
    }
    assert!(t.retriever.job_id(&f).is_none());

    // Still held a little before the hold ends: nothing is asked.
    t.retriever.advance_clock(Duration::from_secs(14 * 60));
    let e = t.retriever.cold_open(&f);
    assert!(matches!(e, RetrieveError::Failed(_)), "{e}");
    settle().await;
    assert_eq!(t.initiated(), asked);

    // Once it has passed, an open asks again, and this time Glacier starts the job.
    t.retriever.advance_clock(Duration::from_secs(2 * 60));
    let e = t.retriever.cold_open(&f);
    assert!(matches!(e, RetrieveError::NotYetAvailable(_)), "{e}");
    eventually("the new job", || t.retriever.job_id(&f).is_some()).await;
    assert_eq!(t.initiated(), asked + 1);
    assert_eq!(t.emu.jobs(VAULT).len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_explicit_request_is_not_held_by_a_refusal() {
    let t = Setup::new(1 << 30).await;
    let (f, _) = t.cold_file("f", 1000);
    t.emu
        .fail_next(Op::InitiateJob, FaultKind::PolicyEnforced, 1);
    let _ = t.retriever.cold_open(&f);
    eventually("the refusal is recorded", || {
        matches!(t.retriever.cold_open(&f), RetrieveError::Failed(_))
    })
    .await;
    let asked = t.initiated();
    assert!(t.retriever.request(&f, None).expect("request"));
    eventually("the requested job", || t.retriever.job_id(&f).is_some()).await;
    assert_eq!(t.initiated(), asked + 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_falls_back_from_expedited_only_when_its_tiers_say_so() {
    let t = Setup::new(1 << 30).await;
    let (f, _) = t.cold_file("f", 1000);
    t.emu.set_expedited_shortage(true);
    let alone = parse_tiers("expedited").unwrap();
    assert!(t.retriever.request(&f, Some(alone)).expect("request"));
    eventually("the refusal is recorded", || {
        matches!(t.retriever.cold_open(&f), RetrieveError::Failed(_))
    })
    .await;
    match t.retriever.cold_open(&f) {
        RetrieveError::Failed(m) => assert!(
            m.starts_with("f: Glacier refused the retrieval: Expedited capacity is short")
                && m.contains("--tier expedited,standard"),
            "{m}"
        ),
        e => panic!("{e}"),
    }
    settle().await;
    assert_eq!(t.initiated(), 1);
    assert!(t.emu.jobs(VAULT).is_empty());

    let listed = parse_tiers("expedited,standard").unwrap();
    assert!(t.retriever.request(&f, Some(listed)).expect("request"));
    eventually("the fallback job", || t.retriever.job_id(&f).is_some()).await;
    assert_eq!(t.initiated(), 3);
    let tiers: Vec<String> = t.emu.jobs(VAULT).into_iter().map(|j| j.tier).collect();
    assert_eq!(tiers, ["Standard"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_open_reuses_the_job_started_by_the_first() {
    let t = Setup::new(1 << 30).await;
    let (f, _) = t.cold_file("f", 1000);
    // Two opens at once: the second finds the first one's start under way.
    let _ = t.retriever.cold_open(&f);
    let _ = t.retriever.cold_open(&f);
    eventually("the job", || t.retriever.job_id(&f).is_some()).await;
    let job = t.retriever.job_id(&f).expect("job id");
    // A later open names the recorded job and asks Glacier for nothing.
    match t.retriever.cold_open(&f) {
        RetrieveError::NotYetAvailable(m) => assert!(m.contains(&job), "{m}"),
        e => panic!("{e}"),
    }
    assert!(t.retriever.request(&f, None).expect("request"));
    settle().await;
    assert_eq!(t.initiated(), 1);
    assert_eq!(t.emu.jobs(VAULT).len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_glacier_already_has_is_reused() {
    let t = Setup::new(1 << 30).await;
    let (f, _) = t.cold_file("f", 1000);
    let request = JobRequest::Archive {
        archive_id: f.archive_id.clone().expect("archive id"),
        tier: Tier::Bulk,
        range: None,
        description: None,
    };
    let existing = t
        .client
        .initiate_job(VAULT, &request)
        .await
        .expect("a job started elsewhere");
    let e = t.retriever.cold_open(&f);
    assert!(matches!(e, RetrieveError::NotYetAvailable(_)), "{e}");
    eventually("the job is found", || t.retriever.job_id(&f).is_some()).await;
    assert_eq!(t.retriever.job_id(&f), Some(existing));
    settle().await;
    assert_eq!(t.initiated(), 1, "only the job started elsewhere");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_finished_job_becomes_the_files_data() {
    let t = Setup::new(1 << 30).await;
    t.retriever.spawn();
    let (f, data) = t.cold_file("f", 3 << 20);
    let _ = t.retriever.cold_open(&f);
    eventually("the job", || t.retriever.job_id(&f).is_some()).await;
    t.emu.complete_all_jobs();
    eventually("the data is cached", || t.node(f.ino).local).await;
    let cached = std::fs::read(t.data.data_path(f.ino)).expect("cached data");
    assert!(cached == data, "the cached bytes differ");
    assert!(t.retriever.job_id(&t.node(f.ino)).is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn output_that_stays_corrupt_fails_the_file() {
    let t = Setup::new(1 << 30).await;
    t.retriever.spawn();
    let (f, _) = t.cold_file("f", 1000);
    let _ = t.retriever.cold_open(&f);
    eventually("the job", || t.retriever.job_id(&f).is_some()).await;
    let job = t.retriever.job_id(&f).expect("job id");
    t.emu.corrupt_job_output(&job, true);
    t.emu.complete_all_jobs();
    eventually("the job fails", || t.retriever.job_id(&f).is_none()).await;
    match t.retriever.cold_open(&f) {
        RetrieveError::Failed(m) => assert!(
            m.contains("retrieved data does not match the archive's tree hash"),
            "{m}"
        ),
        e => panic!("{e}"),
    }
    assert!(!t.node(f.ino).local);
    // Corrupt output is never asked for again by an open, however long it has been.
    t.retriever.advance_clock(Duration::from_secs(3600));
    assert!(matches!(
        t.retriever.cold_open(&f),
        RetrieveError::Failed(_)
    ));
    settle().await;
    assert_eq!(t.initiated(), 1);
}
