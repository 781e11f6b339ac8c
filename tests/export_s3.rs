//! `glacierfs export PATH s3://BUCKET/PREFIX` through a real mount, with the vault in the
//! Glacier emulator: against moto's S3 server (an S3 nobody on this project wrote) for the
//! whole of a 200-archive vault, and against the emulator's own S3 for what needs counting or
//! timing (requests made, memory held, kills at exact moments).
//!
//! Each export runs as a child process with its journal under a temporary XDG_STATE_HOME.
// A test fails by panicking, so unwrap and expect are how it says what went wrong.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::fs::File;
use std::time::{SystemTime, UNIX_EPOCH};

use support::export::{pattern, plain, Archive, Corruptor, Export, Vault, MIB, VAULT};
use support::mount::fuse_available;
use support::s3::Bucket;
use support::{moto_endpoint, unique_name, walk, xattr};

/// What each object must be: the file's bytes and what the mount says of it.
struct Expected {
    data: Vec<u8>,
    metadata: BTreeMap<String, String>,
}

/// The mount's view of the vault, as objects under `prefix/`.
fn expected_objects(vault: &Vault, prefix: &str) -> BTreeMap<String, Expected> {
    let root = vault.root();
    let data = vault.expected();
    let mut out = BTreeMap::new();
    for (rel, seen) in walk(&root) {
        let Some(seen) = seen else { continue };
        let path = root.join(&rel);
        let mut metadata = BTreeMap::new();
        metadata.insert("mtime".to_owned(), seen.mtime.to_string());
        metadata.insert("glacier-vault".to_owned(), VAULT.to_owned());
        for (attr, name) in [
            ("archive_id", "glacier-archive-id"),
            ("tree_hash", "glacier-tree-hash"),
            ("creation_date", "glacier-creation-date"),
            ("description", "glacier-description"),
        ] {
            if let Ok(v) = xattr(&path, &format!("user.glacier.{attr}")) {
                metadata.insert(name.to_owned(), v);
            }
        }
        if seen.size == 0 {
            // An empty file has no archive; its object carries the empty tree hash.
            metadata.insert(
                "glacier-tree-hash".to_owned(),
                glacierfs::codec::treehash::to_hex(&glacierfs::codec::treehash::tree_hash(&[])),
            );
        }
        out.insert(
            format!("{prefix}/{rel}"),
            Expected {
                data: data[&rel].clone(),
                metadata,
            },
        );
    }
    out
}

/// Every object is exactly the mount's file: key, bytes, class and metadata.
fn assert_bucket_is_the_mount(bucket: &Bucket, expected: &BTreeMap<String, Expected>, class: &str) {
    let objects = bucket.objects();
    let keys: Vec<&String> = objects.keys().collect();
    let want: Vec<&String> = expected.keys().collect();
    assert_eq!(keys, want, "the bucket's keys are the mount's paths");
    for (key, e) in expected {
        let o = &objects[key];
        assert_eq!(o.size, e.data.len() as u64, "{key}");
        assert_eq!(o.storage_class, class, "{key}");
        assert_eq!(o.metadata, e.metadata, "{key}");
        assert!(
            bucket.get(key) == e.data,
            "{key}: the object's bytes differ"
        );
    }
    assert_eq!(bucket.open_uploads(), vec![], "no multipart upload is left");
}

/// 200 archives from 1 B to 9 MiB, nested, non-ASCII and colliding names, identical
/// contents in two archives, and an empty file.
fn two_hundred_archives() -> Vec<Archive> {
    (0..200usize)
        .map(|i| {
            let size = match i {
                0 => 1,
                1 => 9 * MIB + 11, // two parts
                2 => 8 * MIB,      // exactly one part: one PutObject
                3 => 17 * MIB + 5, // three parts
                _ if i % 40 == 0 => MIB + i,
                _ => 1 + (i * 7919) % 30_000,
            };
            let data = match i {
                11 => pattern(1 + (10 * 7919) % 30_000, 10), // the same bytes as archive 10
                _ => pattern(size, i as u32),
            };
            let k = i as i64;
            match i % 8 {
                0 => plain(&format!("photos/été/日本/{i}.jpg"), data, k),
                1 => plain(&format!("same/name{}.txt", i % 3), data, k), // collisions
                2 => plain(&format!("a b/c,d/\"q\" {i}.bin"), data, k),
                _ => plain(&format!("d{}/s{}/f{i}.bin", i % 5, i % 3), data, k),
            }
        })
        .collect()
}

#[test]
fn a_vault_of_200_archives_lands_in_moto_s3_exactly_as_the_mount_shows_it() {
    let Some(moto) = moto_endpoint() else { return };
    if !fuse_available() {
        return;
    }
    let vault = Vault::new(&two_hundred_archives());
    File::create(vault.root().join("photos/empty.txt")).unwrap();
    let bucket = Bucket::create(&moto, &unique_name("export"));
    let expected = expected_objects(&vault, "backup/2024");
    assert_eq!(expected.len(), 201);

    let state = tempfile::tempdir().unwrap();
    let dest = format!("s3://{}/backup/2024/", bucket.name);
    let args = [
        "--json",
        "--storage-class",
        "STANDARD_IA",
        "--s3-endpoint-url",
        moto.as_str(),
    ];
    let env = [("XDG_STATE_HOME", state.path().as_os_str())];
    let mut export = Export::start_env(&vault, &dest, &args, &env);
    let status = export.drive(&vault.emu, |_| {});
    assert!(status.success(), "export failed: {}", export.stderr());
    let s = export.summary();
    assert_eq!(s["status"], "complete", "{s}");
    assert_eq!(s["files_done"], 201, "{s}");
    assert_eq!(s["jobs_started"], 200, "{s}");
    assert_eq!(s["empty"], 1, "{s}");
    assert_bucket_is_the_mount(&bucket, &expected, "STANDARD_IA");
    assert_journal_gone(state.path().as_os_str());

    // The default class, with another prefix: the archives' jobs are reused, not paid again.
    let dest = format!("s3://{}/deep", bucket.name);
    let args = ["--json", "--s3-endpoint-url", moto.as_str()];
    let mut again = Export::start_env(&vault, &dest, &args, &env);
    assert!(
        again.drive(&vault.emu, |_| {}).success(),
        "{}",
        again.stderr()
    );
    let s = again.summary();
    assert_eq!(
        (s["jobs_started"].as_u64(), s["jobs_reused"].as_u64()),
        (Some(0), Some(200)),
        "{s}"
    );
    let deep = bucket.objects();
    let under_deep: Vec<_> = deep
        .iter()
        .filter(|(k, _)| k.starts_with("deep/"))
        .collect();
    assert_eq!(under_deep.len(), 201);
    assert!(under_deep
        .iter()
        .all(|(_, o)| o.storage_class == "DEEP_ARCHIVE"));
}

/// The journal is removed once an export completes.
fn assert_journal_gone(state: &OsStr) {
    let dir = std::path::Path::new(state).join("glacierfs/exports");
    let left: Vec<_> = std::fs::read_dir(&dir)
        .map(|d| d.flatten().map(|e| e.file_name()).collect())
        .unwrap_or_default();
    assert!(left.is_empty(), "journal files left: {left:?}");
}

// ---------------------------------------------------------------------------------------------
// Against the emulator's S3: what needs counting, limits or exact timing.

use std::os::unix::process::ExitStatusExt;
use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use support::emulator::{Emulator, Op, S3Event, S3Op, Stage};

const BUCKET: &str = "out";

/// An export into the emulator's own S3, its journal under `state`.
fn start_emu(vault: &Vault, prefix: &str, extra: &[&str], state: &tempfile::TempDir) -> Export {
    let endpoint = vault.emu.endpoint();
    let mut args = vec!["--json", "--s3-endpoint-url", endpoint.as_str()];
    args.extend_from_slice(extra);
    let dest = format!("s3://{BUCKET}/{prefix}");
    // A temporary directory of its own, to show the export leaves nothing there.
    let tmp = state.path().join("tmp");
    std::fs::create_dir_all(&tmp).unwrap();
    let env = [
        ("XDG_STATE_HOME", state.path().as_os_str()),
        ("TMPDIR", tmp.as_os_str()),
    ];
    Export::start_env(vault, &dest, &args, &env)
}

/// Every object under `prefix/` in the emulator's bucket is exactly the mount's file.
fn assert_emulated_bucket_is_the_mount(emu: &Emulator, vault: &Vault, prefix: &str, class: &str) {
    let expected = expected_objects(vault, prefix);
    let keys: Vec<String> = emu
        .s3_keys(BUCKET)
        .into_iter()
        .filter(|k| k.starts_with(&format!("{prefix}/")))
        .collect();
    assert_eq!(keys, expected.keys().cloned().collect::<Vec<_>>());
    for (key, e) in &expected {
        let o = emu.s3_object(BUCKET, key).unwrap();
        assert!(o.data == e.data, "{key}: the object's bytes differ");
        assert_eq!(o.storage_class, class, "{key}");
        assert_eq!(o.metadata, e.metadata, "{key}");
        assert!(
            o.checksum_sha256.is_some(),
            "{key}: stored with its SHA-256"
        );
    }
    assert!(
        emu.s3_open_uploads(BUCKET).is_empty(),
        "no upload left open"
    );
}

/// Archives around the part size: small, exactly one part, two and three parts.
fn mixed_archives() -> Vec<Archive> {
    let sizes = [1, 5000, 8 * MIB, 8 * MIB + 1, 17 * MIB + 3, 300_000];
    sizes
        .iter()
        .enumerate()
        .map(|(i, &size)| plain(&format!("m/{i}.bin"), pattern(size, i as u32), i as i64))
        .collect()
}

#[test]
fn a_dry_run_then_the_export_then_a_rerun_that_asks_for_nothing() {
    if !fuse_available() {
        return;
    }
    let vault = Vault::new(&mixed_archives());
    File::create(vault.root().join("m/empty")).unwrap();
    std::fs::create_dir(vault.root().join("nothing-here")).unwrap();
    let emu = &vault.emu;
    emu.s3_create_bucket(BUCKET);
    let state = tempfile::tempdir().unwrap();
    emu.reset_stats();

    let mut dry = start_emu(&vault, "p", &["--dry-run"], &state);
    assert!(dry.drive(emu, |_| {}).success(), "{}", dry.stderr());
    let events = dry.events();
    assert_eq!(events.len(), 1, "one plan: {events:?}");
    let plan = events[0].clone();
    assert_eq!(plan["dry_run"], true, "{plan}");
    let stats = emu.stats();
    assert_eq!(
        stats.requests_for(Op::InitiateJob),
        0,
        "a dry run starts no job"
    );
    assert_eq!(stats.requests_for(Op::GetJobOutput), 0);
    assert_eq!(emu.s3_writes(), 0, "a dry run writes nothing to S3");
    assert_eq!(plan["to_fetch"], 6, "{plan}");
    assert_eq!(plan["to_write"], 7, "{plan}");
    assert_eq!(plan["not_held"][0]["path"], "nothing-here", "{plan}");
    assert_eq!(plan["estimate"]["storage_class"], "DEEP_ARCHIVE", "{plan}");

    let mut export = start_emu(&vault, "p", &[], &state);
    assert!(export.drive(emu, |_| {}).success(), "{}", export.stderr());
    let s = export.summary();
    assert_eq!(s["jobs_started"], plan["to_fetch"], "{s}");
    assert_eq!(s["files_done"], plan["to_write"], "{s}");
    assert_eq!(s["not_held"][0]["path"], "nothing-here", "{s}");
    assert_emulated_bucket_is_the_mount(emu, &vault, "p", "DEEP_ARCHIVE");
    let parts = |key: &str| emu.s3_object(BUCKET, key).unwrap().parts;
    assert_eq!(
        parts("p/m/2.bin"),
        0,
        "exactly one part's size: one PutObject"
    );
    assert_eq!(parts("p/m/3.bin"), 2);
    assert_eq!(parts("p/m/4.bin"), 3);
    assert_journal_gone(state.path().as_os_str());

    emu.reset_stats();
    let mut again = start_emu(&vault, "p", &[], &state);
    assert!(again.drive(emu, |_| {}).success(), "{}", again.stderr());
    let s = again.summary();
    assert_eq!(s["in_place"], 7, "{s}");
    let stats = emu.stats();
    assert_eq!(stats.requests_for(Op::InitiateJob), 0);
    assert_eq!(stats.requests_for(Op::GetJobOutput), 0);
    assert_eq!(
        stats.requests_for(Op::ListJobs),
        0,
        "nothing to retrieve, nothing to look up"
    );
    assert_eq!(emu.s3_writes(), 0, "a re-run after success writes nothing");
}

/// Runs the clock until the export exits; returns how it exited and its peak resident memory
/// in bytes. The peak is the kernel's high-water mark of the export's own address space
/// (VmHWM), read until it exits. (wait4's ru_maxrss would not do: Linux carries it across
/// exec, so it would count this test process, emulator and archives included.)
fn run_with_peak_rss(export: &mut Export, emu: &Emulator) -> (std::process::ExitStatus, u64) {
    let pid = export.child.id();
    let started = std::time::Instant::now();
    let mut peak = 0;
    loop {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
        let hwm = status
            .lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok());
        if let Some(kib) = hwm {
            peak = peak.max(kib * 1024);
        }
        if let Some(exit) = export.exited() {
            return (exit, peak);
        }
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "export never finished"
        );
        emu.complete_all_jobs();
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Every file under `dir`, with its size.
fn files_under(dir: &std::path::Path) -> BTreeMap<String, u64> {
    walk(dir)
        .into_iter()
        .filter_map(|(k, v)| v.map(|v| (k, v.size)))
        .collect()
}

#[test]
fn a_256_mib_archive_streams_within_the_memory_budget_and_touches_no_disk() {
    if !fuse_available() {
        return;
    }
    let big = pattern(256 * MIB, 7);
    let vault = Vault::new(&[plain("big.bin", big.clone(), 0)]);
    let emu = &vault.emu;
    emu.s3_create_bucket(BUCKET);
    let state = tempfile::tempdir().unwrap();
    let cache_before = files_under(vault.cache.path());
    let mut export = start_emu(&vault, "rss", &["--memory-budget", "64MiB"], &state);
    let (status, peak) = run_with_peak_rss(&mut export, emu);
    assert!(status.success(), "export failed: {}", export.stderr());
    assert!(peak > 0, "the export's memory was never read");
    let budget = 64 * MIB as u64;
    eprintln!("peak RSS of the export: {} MiB", peak >> 20);
    assert!(
        peak < budget + 64 * MIB as u64,
        "peak RSS {} MiB",
        peak >> 20
    );
    assert!(emu.s3_object(BUCKET, "rss/big.bin").unwrap().data == big);
    // Nothing under the temporary directory the export was given, nor in the mount's cache.
    assert!(files_under(&state.path().join("tmp")).is_empty());
    let data_before: BTreeMap<_, _> = cache_before
        .iter()
        .filter(|(k, _)| k.starts_with("data/"))
        .collect();
    let cache_after = files_under(vault.cache.path());
    let data_after: BTreeMap<_, _> = cache_after
        .iter()
        .filter(|(k, _)| k.starts_with("data/"))
        .collect();
    assert_eq!(data_before, data_after, "the mount's cache gained no data");
}

/// Holds every UploadPart that reaches it until opened, and counts them.
#[derive(Default)]
struct PartGate {
    open: std::sync::Mutex<bool>,
    opened: std::sync::Condvar,
    held: AtomicUsize,
}

impl PartGate {
    fn hold(&self) {
        self.held.fetch_add(1, Ordering::SeqCst);
        let mut open = self.open.lock().unwrap();
        while !*open {
            open = self.opened.wait(open).unwrap();
        }
    }

    fn release(&self) {
        *self.open.lock().unwrap() = true;
        self.opened.notify_all();
    }
}

/// Opens the gate when dropped.
struct Release(Arc<PartGate>);

impl Drop for Release {
    fn drop(&mut self) {
        self.0.release();
    }
}

#[test]
fn the_next_parts_are_fetched_while_the_last_are_sent_and_no_more() {
    if !fuse_available() {
        return;
    }
    // 12 parts of 8 MiB; each of the 4 part tasks sends one part and fetches the next.
    let parts = 12;
    let big = pattern(parts * 8 * MIB, 11);
    let vault = Vault::new(&[plain("big.bin", big.clone(), 0)]);
    let emu = &vault.emu;
    emu.s3_create_bucket(BUCKET);
    let gate = Arc::new(PartGate::default());
    let hook_gate = gate.clone();
    emu.s3_set_hook(Some(Arc::new(move |e: &S3Event| {
        if e.op == S3Op::UploadPart && e.stage == Stage::Before {
            hook_gate.hold();
        }
    })));
    // Whatever fails, the held requests go on, so the emulator can stop.
    let _release = Release(gate.clone());
    let state = tempfile::tempdir().unwrap();
    emu.reset_stats();
    let mut export = start_emu(&vault, "ahead", &[], &state);
    let fetched = || emu.stats().requests_for(Op::GetJobOutput);
    // With every UploadPart held, the export fetches until each task has a part on its way to
    // S3 and the next one in memory: 4 sent, 4 more fetched meanwhile. Then it waits.
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while gate.held.load(Ordering::SeqCst) < 4 || fetched() < 8 {
        assert!(fetched() <= 8, "{} parts fetched", fetched());
        assert!(export.exited().is_none(), "{}", export.stderr());
        assert!(
            std::time::Instant::now() < deadline,
            "never 4 parts sent and 4 more fetched: {} sent, {} fetched",
            gate.held.load(Ordering::SeqCst),
            fetched()
        );
        emu.complete_all_jobs();
        std::thread::sleep(Duration::from_millis(5));
    }
    // No further part comes while none has gone: the bound holds.
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(fetched(), 8, "parts fetched while 4 were held");
    assert_eq!(gate.held.load(Ordering::SeqCst), 4, "parts sent at once");
    gate.release();
    let status = export.drive(emu, |_| {});
    emu.s3_set_hook(None);
    assert!(status.success(), "export failed: {}", export.stderr());
    assert!(emu.s3_object(BUCKET, "ahead/big.bin").unwrap().data == big);
    assert_eq!(fetched(), parts as u64, "each part fetched once");
}

/// Bytes of job output served for `archive` since the last reset, and the ranges served.
fn served_for(emu: &Emulator, archive: &str) -> (u64, Vec<(u64, u64)>) {
    let stats = emu.stats();
    let mut bytes = 0;
    let mut ranges = Vec::new();
    for r in emu.retrieval_log() {
        if r.archive_id != archive {
            continue;
        }
        if let Some(s) = stats.job_output.get(&r.job_id) {
            bytes += s.bytes_served;
            ranges.extend(s.ranges.iter().copied());
        }
    }
    (bytes, ranges)
}

fn archive_id_of(vault: &Vault, rel: &str) -> String {
    xattr(&vault.root().join(rel), "user.glacier.archive_id").unwrap()
}

#[test]
fn corrupt_job_output_is_fetched_again_or_fails_and_never_becomes_an_object() {
    if !fuse_available() {
        return;
    }
    let archives = vec![
        plain("c/once.bin", pattern(17 * MIB + 3, 1), 0),
        plain("c/always.bin", pattern(9 * MIB + 5, 2), 1),
        plain("c/small-always.bin", pattern(70_000, 3), 2),
        plain("c/fine.bin", pattern(5000, 4), 3),
    ];
    let vault = Vault::new(&archives);
    let emu = &vault.emu;
    emu.s3_create_bucket(BUCKET);
    let once = archive_id_of(&vault, "c/once.bin");
    let always = [
        archive_id_of(&vault, "c/always.bin"),
        archive_id_of(&vault, "c/small-always.bin"),
    ];
    let state = tempfile::tempdir().unwrap();
    // One download of `once` is corrupted, every download of the `always` ones is.
    let mut corrupt = Corruptor::new(vec![once.clone()], always.to_vec());
    let mut export = start_emu(&vault, "c", &[], &state);
    let status = export.drive(emu, |emu| corrupt.mark(emu));
    let err = export.stderr();
    assert_eq!(status.code(), Some(1), "{err}");
    let s = export.summary();
    assert_eq!(s["failed"], 2, "{s}");
    assert_eq!(
        s["refetches"], 2,
        "one new job for each archive that stayed corrupt: {s}"
    );
    let keys = emu.s3_keys(BUCKET);
    assert_eq!(
        keys,
        vec!["c/c/fine.bin", "c/c/once.bin"],
        "corrupt data never becomes an object"
    );
    assert!(emu.s3_object(BUCKET, "c/c/once.bin").unwrap().data == archives[0].data);
    assert!(
        emu.s3_open_uploads(BUCKET).is_empty(),
        "no multipart upload is left open"
    );
    // Only the corrupted range of `once` was fetched twice, within its one job.
    let (bytes, _) = served_for(emu, &once);
    assert_eq!(
        bytes,
        17 * MIB as u64 + 3 + 8 * MIB as u64,
        "one part fetched again"
    );
}

/// Where a kill lands: the `nth` (from 1) request of `op` at `stage`.
#[derive(Debug, Clone, Copy)]
struct Moment {
    op: S3Op,
    stage: Stage,
    nth: usize,
}

#[test]
fn an_export_killed_at_seeded_moments_completes_on_a_rerun_without_fetching_twice() {
    if !fuse_available() {
        return;
    }
    // Five parts, so a kill can land before, among and after them; and two small objects.
    let big = pattern(36 * MIB + 17, 9);
    let vault = Vault::new(&[
        plain("k/big.bin", big.clone(), 0),
        plain("k/a.txt", pattern(1000, 1), 1),
        plain("k/b.txt", pattern(2000, 2), 2),
    ]);
    let emu = &vault.emu;
    emu.s3_create_bucket(BUCKET);
    let big_id = archive_id_of(&vault, "k/big.bin");
    let seed: u64 = std::env::var("GLACIERFS_TEST_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
        });
    eprintln!("seed {seed} (set GLACIERFS_TEST_SEED to repeat)");
    let seeded =
        |k: u64| 1 + ((seed.wrapping_mul(6364136223846793005).wrapping_add(k)) >> 33) as usize % 5;
    let moments = [
        Moment {
            op: S3Op::CreateMultipartUpload,
            stage: Stage::Before,
            nth: 1,
        },
        Moment {
            op: S3Op::CreateMultipartUpload,
            stage: Stage::After,
            nth: 1,
        },
        Moment {
            op: S3Op::UploadPart,
            stage: Stage::Before,
            nth: seeded(1),
        },
        Moment {
            op: S3Op::UploadPart,
            stage: Stage::After,
            nth: seeded(2),
        },
        Moment {
            op: S3Op::UploadPart,
            stage: Stage::After,
            nth: 5,
        },
        Moment {
            op: S3Op::CompleteMultipartUpload,
            stage: Stage::Before,
            nth: 1,
        },
        Moment {
            op: S3Op::CompleteMultipartUpload,
            stage: Stage::After,
            nth: 1,
        },
        Moment {
            op: S3Op::PutObject,
            stage: Stage::After,
            nth: 1,
        },
    ];
    for (k, m) in moments.iter().enumerate() {
        let prefix = format!("kill{k}");
        let state = tempfile::tempdir().unwrap();
        let pid = Arc::new(AtomicU32::new(0));
        let seen = Arc::new(AtomicUsize::new(0));
        let (hook_pid, hook_seen, m2) = (pid.clone(), seen.clone(), *m);
        emu.s3_set_hook(Some(Arc::new(move |e: &S3Event| {
            if e.op == m2.op && e.stage == m2.stage && seen_nth(&hook_seen, m2.nth) {
                let p = hook_pid.load(Ordering::SeqCst);
                // SAFETY: signalling the export this test started.
                unsafe { libc::kill(p as i32, libc::SIGKILL) };
            }
        })));
        emu.reset_stats();
        let mut first = start_emu(&vault, &prefix, &[], &state);
        pid.store(first.child.id(), Ordering::SeqCst);
        let status = first.drive(emu, |_| {});
        emu.s3_set_hook(None);
        assert_eq!(
            status.signal(),
            Some(libc::SIGKILL),
            "{m:?} never came: {}",
            first.stderr()
        );
        // Requests the dead export had fully sent may still be landing.
        std::thread::sleep(Duration::from_millis(300));
        let held: u64 = emu
            .s3_open_uploads(BUCKET)
            .iter()
            .filter(|u| u.key == format!("{prefix}/k/big.bin"))
            .flat_map(|u| u.parts.iter().map(|p| p.1))
            .sum();
        let big_in_place = emu
            .s3_object(BUCKET, &format!("{prefix}/k/big.bin"))
            .is_some();

        emu.reset_stats();
        let mut again = start_emu(&vault, &prefix, &[], &state);
        assert!(
            again.drive(emu, |_| {}).success(),
            "{m:?}: {}",
            again.stderr()
        );
        assert_emulated_bucket_is_the_mount(emu, &vault, &prefix, "DEEP_ARCHIVE");
        assert_journal_gone(state.path().as_os_str());
        // What S3 held of the big object is not fetched again: the re-run reads the rest,
        // each range once.
        let (bytes, ranges) = served_for(emu, &big_id);
        let want = if big_in_place {
            0
        } else {
            big.len() as u64 - held
        };
        assert_eq!(
            bytes, want,
            "{m:?}: served {ranges:?} after a kill with {held} bytes held"
        );
        let mut sorted = ranges.clone();
        sorted.sort();
        sorted.dedup();
        assert_eq!(
            sorted.len(),
            ranges.len(),
            "{m:?}: a range fetched twice: {ranges:?}"
        );
        assert_eq!(
            emu.stats().requests_for(Op::InitiateJob),
            0,
            "{m:?}: jobs are reused"
        );
    }
}

/// True on the `nth` call (from 1), counting in `seen`.
fn seen_nth(seen: &AtomicUsize, nth: usize) -> bool {
    seen.fetch_add(1, Ordering::SeqCst) + 1 == nth
}

#[test]
fn an_endpoint_that_ignores_range_still_gives_verified_multipart_objects() {
    if !fuse_available() {
        return;
    }
    let vault = Vault::new(&mixed_archives());
    let emu = &vault.emu;
    emu.s3_create_bucket(BUCKET);
    emu.set_ignore_range(true);
    let state = tempfile::tempdir().unwrap();
    let mut export = start_emu(&vault, "whole", &["--memory-budget", "16MiB"], &state);
    assert!(export.drive(emu, |_| {}).success(), "{}", export.stderr());
    assert_emulated_bucket_is_the_mount(emu, &vault, "whole", "DEEP_ARCHIVE");
    assert_eq!(emu.s3_object(BUCKET, "whole/m/4.bin").unwrap().parts, 3);
}

#[test]
fn staged_files_too_long_keys_and_empty_directories() {
    if !fuse_available() {
        return;
    }
    let deep = format!("{}/f.bin", vec!["x".repeat(250); 5].join("/"));
    let vault = Vault::new(&[
        plain("ok.bin", pattern(100, 1), 0),
        plain(&deep, pattern(10, 2), 1),
    ]);
    let emu = &vault.emu;
    emu.s3_create_bucket(BUCKET);
    std::fs::create_dir(vault.root().join("hollow")).unwrap();
    // Written through the mount just now: staged, so it comes from the mount.
    std::fs::write(vault.root().join("staged.txt"), b"not in Glacier yet").unwrap();
    assert_eq!(
        xattr(&vault.root().join("staged.txt"), "user.glacier.state").as_deref(),
        Ok("staged")
    );
    let state = tempfile::tempdir().unwrap();
    let mut export = start_emu(&vault, "s", &["--storage-class", "glacier-ir"], &state);
    let status = export.drive(emu, |_| {});
    assert_eq!(
        status.code(),
        Some(1),
        "a key too long fails: {}",
        export.stderr()
    );
    let s = export.summary();
    assert_eq!(s["failed"], 1, "{s}");
    assert!(
        s["failures"][0]["error"].as_str().unwrap().contains("1024"),
        "{s}"
    );
    assert_eq!(s["not_held"][0]["path"], "hollow", "{s}");
    assert_eq!(emu.s3_keys(BUCKET), vec!["s/ok.bin", "s/staged.txt"]);
    let staged = emu.s3_object(BUCKET, "s/staged.txt").unwrap();
    assert_eq!(staged.data, b"not in Glacier yet");
    assert_eq!(staged.storage_class, "GLACIER_IR");
    assert!(!staged.metadata.contains_key("glacier-archive-id"));
}

#[test]
fn the_bucket_is_reached_in_the_mounts_region_unless_told_otherwise() {
    if !fuse_available() {
        return;
    }
    // The emulator checks that each request is signed for its region, us-east-1, which the
    // test mounts name with --region.
    let vault = Vault::new(&[plain("r.bin", pattern(10, 1), 0)]);
    let emu = &vault.emu;
    emu.s3_create_bucket(BUCKET);
    let endpoint = emu.endpoint();
    let state = tempfile::tempdir().unwrap();
    let dest = format!("s3://{BUCKET}/r");
    // The environment names another region: the mount's wins, for Glacier and for S3.
    let env = [
        ("XDG_STATE_HOME", state.path().as_os_str()),
        ("AWS_REGION", OsStr::new("eu-west-1")),
    ];
    let told = [
        "--s3-endpoint-url",
        endpoint.as_str(),
        "--s3-region",
        "eu-west-1",
    ];
    let mut wrong = Export::start_env(&vault, &dest, &told, &env);
    let status = wrong.drive(emu, |_| {});
    let err = wrong.stderr();
    assert_eq!(status.code(), Some(1), "{err}");
    assert_eq!(err.lines().count(), 1, "one line: {err}");
    assert!(err.contains("HeadBucket"), "{err}");
    let mut right = Export::start_env(&vault, &dest, &told[..2], &env);
    assert!(right.drive(emu, |_| {}).success(), "{}", right.stderr());
    assert_eq!(emu.s3_keys(BUCKET), vec!["r/r.bin"]);
}

#[test]
fn symlinks_and_special_files_are_listed_as_not_exported() {
    if !fuse_available() {
        return;
    }
    let vault = Vault::new(&[plain("a.bin", pattern(100, 1), 0)]);
    let emu = &vault.emu;
    emu.s3_create_bucket(BUCKET);
    std::os::unix::fs::symlink("a.bin", vault.root().join("link")).unwrap();
    let fifo = std::ffi::CString::new(vault.root().join("pipe").to_str().unwrap()).unwrap();
    // SAFETY: `fifo` is a valid C string.
    assert_eq!(unsafe { libc::mkfifo(fifo.as_ptr(), 0o644) }, 0);
    let state = tempfile::tempdir().unwrap();
    let mut export = start_emu(&vault, "s", &[], &state);
    let status = export.drive(emu, |_| {});
    assert!(status.success(), "{}", export.stderr());
    let s = export.summary();
    assert_eq!(s["status"], "complete", "{s}");
    let unheld: Vec<(String, String)> = s["not_held"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| {
            (
                u["path"].as_str().unwrap().to_owned(),
                u["why"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert_eq!(
        unheld,
        [
            (
                "link".to_owned(),
                "a symlink: S3 holds objects only".to_owned()
            ),
            (
                "pipe".to_owned(),
                "a fifo: S3 holds objects only".to_owned()
            ),
        ],
        "{s}"
    );
    assert_eq!(emu.s3_keys(BUCKET), vec!["s/a.bin"]);
}
