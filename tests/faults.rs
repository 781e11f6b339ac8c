//! Long fault runs and permanent errors through a real mount. The emulator fails 20 to 50% of
//! every call with every kind of transient error (throttling, 5xx, timeouts, resets before and
//! after the service acted, output cut short), while files are written, deleted and read cold;
//! afterwards the vault holds exactly what the user wrote, nothing else. Permanent refusals
//! (PolicyEnforced, InvalidParameterValue, an expired job) lead to the documented recovery or a
//! Failed entry in `.jobs` with Glacier's message, never to a user waiting forever.
//!
//! `GLACIERFS_FAULT_ROUNDS` runs more seeded rounds per rate (scripts/test.sh --long).
// A test fails by panicking, so unwrap and expect are how it says what went wrong.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use rand::{Rng, SeedableRng};

use glacierfs::codec::names;
use support::emulator::{ClockStart, Emulator, EmulatorOptions, FaultKind, FaultPlan, Op};
use support::mount::{aws_env, binary, fuse_available, sync_wait, wait_until, Mount};
use support::walk;

const VAULT: &str = "faulty";
const MIB: usize = 1 << 20;
const ARGS: &[&str] = &[
    "--part-size",
    "1MiB",
    "--write-back-delay",
    "0s",
    "--upload-concurrency",
    "2",
];

fn glacierfs(args: &[&str], paths: &[&Path]) -> std::process::Output {
    aws_env(&mut Command::new(binary()))
        .args(args)
        .args(paths)
        .output()
        .unwrap()
}

fn bytes(rng: &mut impl Rng, n: usize) -> Vec<u8> {
    (0..n).map(|_| rng.random()).collect()
}

fn jobs_text(dir: &Path) -> String {
    std::fs::read_to_string(dir.join(".jobs")).unwrap_or_default()
}

/// Reads a file that may be cold: each open that gets EAGAIN lets the emulator finish its jobs.
fn read_through(emu: &Emulator, path: &Path, timeout: Duration) -> Option<Vec<u8>> {
    let mut data = None;
    wait_until(timeout, || {
        emu.complete_all_jobs();
        match std::fs::read(path) {
            Ok(d) => {
                data = Some(d);
                true
            }
            Err(e) if e.raw_os_error() == Some(libc::EAGAIN) => false,
            // A transient failure that reached the caller (EIO after the retries ran out) is
            // retried by the next open, as a user would.
            Err(_) => false,
        }
    });
    data
}

/// Every transient kind the emulator has, before and after the service acts.
fn transient_kinds() -> Vec<FaultKind> {
    vec![
        FaultKind::Throttle,
        FaultKind::InternalError,
        FaultKind::ServiceUnavailable,
        FaultKind::RequestTimeout,
        FaultKind::Timeout,
        FaultKind::Reset,
        FaultKind::ResetAfterCommit,
        FaultKind::TimeoutAfterCommit,
        FaultKind::ResetMidBody,
        FaultKind::TruncateOutput,
    ]
}

/// One round at `rate`: an inventory load, writes (single and multipart), an overwrite, a
/// delete and cold reads, all under faults. Returns the faults injected.
fn round(rate: f64, seed: u64) -> u64 {
    let trial = format!("rate {rate}, seed {seed}");
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let emu = Emulator::start();
    emu.create_vault(VAULT);
    emu.set_stall(Duration::from_millis(200));
    let mut expected: BTreeMap<String, Vec<u8>> = BTreeMap::new();
    for i in 0..4 {
        let rel = format!("old/cold-{i}.bin");
        let data = bytes(&mut rng, [10, 70_000, MIB + 3, 5][i]);
        emu.put_archive(VAULT, &names::encode_mt2(&rel, 1_600_000_000), &data, None);
        expected.insert(rel, data);
    }
    emu.take_inventory(VAULT);
    let cache = tempfile::tempdir().unwrap();
    let mut mount = Mount::start(&emu.endpoint(), cache.path(), ARGS);
    emu.set_faults(FaultPlan {
        rate,
        kinds: transient_kinds(),
        seed,
        ops: None,
    });
    let vault = mount.path(VAULT);
    let loaded = wait_until(Duration::from_secs(120), || {
        emu.complete_all_jobs();
        let _ = std::fs::read_dir(&vault).map(|d| d.count());
        walk(&vault).values().filter(|s| s.is_some()).count() >= expected.len()
    });
    assert!(
        loaded,
        "{trial}: the inventory never loaded; log:\n{}",
        mount.log_text()
    );

    let sizes = [
        1,
        65_536,
        2 * MIB + 9,
        3 * MIB,
        100,
        MIB + 1,
        500_000,
        4 * MIB,
    ];
    for (i, n) in sizes.into_iter().enumerate() {
        let rel = format!("new/file-{i}.bin");
        let data = bytes(&mut rng, n);
        std::fs::create_dir_all(vault.join("new")).unwrap();
        std::fs::write(vault.join(&rel), &data).unwrap();
        expected.insert(rel, data);
    }
    // An overwrite of a cold file (O_TRUNC needs no retrieval) and a delete of another.
    let replaced = bytes(&mut rng, 4096);
    std::fs::write(vault.join("old/cold-0.bin"), &replaced).unwrap();
    expected.insert("old/cold-0.bin".into(), replaced);
    std::fs::remove_file(vault.join("old/cold-3.bin")).unwrap();
    expected.remove("old/cold-3.bin");
    sync_wait(&vault);

    for rel in ["old/cold-1.bin", "old/cold-2.bin"] {
        let got = read_through(&emu, &vault.join(rel), Duration::from_secs(180));
        assert_eq!(
            got.as_deref(),
            Some(expected[rel].as_slice()),
            "{trial}: {rel} was not read back exactly; log:\n{}",
            mount.log_text()
        );
    }
    let injected = emu.stats().faults_injected();
    assert!(injected > 0, "{trial}: the plan injected no fault");

    // Faults off: a newer inventory settles the twins that lost replies left, and the vault
    // must then hold exactly one archive per file, with its bytes, and no upload behind.
    emu.clear_faults();
    emu.advance(Duration::from_secs(3600));
    emu.take_inventory(VAULT);
    mount.remount(
        &emu.endpoint(),
        &[ARGS, &["--inventory-max-age", "1s"]].concat(),
    );
    support::assert_vault_holds_exactly(&emu, VAULT, &vault, &expected, &trial, || {
        mount.log_text()
    });
    let seen: Vec<String> = walk(&vault)
        .into_iter()
        .filter(|(_, s)| s.is_some())
        .map(|(rel, _)| rel)
        .collect();
    assert_eq!(
        seen,
        expected.keys().cloned().collect::<Vec<_>>(),
        "{trial}: the tree differs from what was written"
    );
    injected
}

#[test]
fn twenty_to_fifty_percent_transient_faults_lose_nothing() {
    if !fuse_available() {
        return;
    }
    let rounds: u64 = std::env::var("GLACIERFS_FAULT_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1);
    let mut total = 0;
    for rate in [0.2, 0.35, 0.5] {
        for seed in 0..rounds {
            let injected = round(rate, 1000 + seed);
            eprintln!("rate {rate}, seed {}: {injected} faulty calls", 1000 + seed);
            total += injected;
        }
    }
    eprintln!("faulty calls in all: {total}");
}

/// A vault with one cold archive, loaded into a fresh mount.
fn one_cold_file(emu: &Emulator, cache: &Path, data: &[u8]) -> Mount {
    emu.create_vault(VAULT);
    emu.put_archive(
        VAULT,
        &names::encode_mt2("cold.txt", 1_600_000_000),
        data,
        None,
    );
    emu.take_inventory(VAULT);
    let mount = Mount::start(emu.endpoint().as_str(), cache, ARGS);
    let vault = mount.path(VAULT);
    assert!(
        wait_until(Duration::from_secs(60), || {
            emu.complete_all_jobs();
            vault.join("cold.txt").exists()
        }),
        "the vault never loaded"
    );
    mount
}

#[test]
fn a_refused_retrieval_shows_in_dot_jobs_and_opens_get_eio_until_asked_again() {
    if !fuse_available() {
        return;
    }
    let emu = Emulator::start();
    let cache = tempfile::tempdir().unwrap();
    let mount = one_cold_file(&emu, cache.path(), b"behind a policy");
    let vault = mount.path(VAULT);
    let file = vault.join("cold.txt");
    emu.fail_next(Op::InitiateJob, FaultKind::PolicyEnforced, 1);
    let first = std::fs::read(&file).unwrap_err();
    assert_eq!(first.raw_os_error(), Some(libc::EAGAIN), "{first}");
    assert!(
        wait_until(Duration::from_secs(30), || jobs_text(&vault)
            .contains("PolicyEnforcedException")),
        ".jobs never showed the refusal: {}\nlog:\n{}",
        jobs_text(&vault),
        mount.log_text()
    );
    let line = jobs_text(&vault)
        .lines()
        .find(|l| l.contains("PolicyEnforcedException"))
        .unwrap()
        .to_owned();
    let entry: serde_json::Value = serde_json::from_str(&line).unwrap();
    assert_eq!(entry["StatusCode"], "Failed", "{line}");
    assert_eq!(entry["Path"], "cold.txt", "{line}");
    let asked = emu.stats().requests_for(Op::InitiateJob);
    // Opens now fail loudly instead of waiting on a job that does not exist, and do not pester
    // Glacier with a request it refuses.
    let again = std::fs::read(&file).unwrap_err();
    assert_eq!(again.raw_os_error(), Some(libc::EIO), "{again}");
    assert_eq!(emu.stats().requests_for(Op::InitiateJob), asked);
    // Asking explicitly tries again at once.
    let out = glacierfs(&["retrieve"], &[&file]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        read_through(&emu, &file, Duration::from_secs(60)).as_deref(),
        Some(&b"behind a policy"[..]),
        "log:\n{}",
        mount.log_text()
    );
}

#[test]
fn a_refused_upload_shows_its_message_and_sync_tries_again_at_once() {
    if !fuse_available() {
        return;
    }
    let emu = Emulator::start();
    emu.create_vault(VAULT);
    emu.fail_next(Op::UploadArchive, FaultKind::InvalidParameter, 1);
    let cache = tempfile::tempdir().unwrap();
    let mount = Mount::start(&emu.endpoint(), cache.path(), ARGS);
    let vault = mount.path(VAULT);
    std::fs::write(vault.join("kept.txt"), b"refused once").unwrap();
    assert!(
        wait_until(Duration::from_secs(30), || jobs_text(&vault)
            .contains("InvalidParameterValueException")),
        ".jobs never showed the refusal: {}\nlog:\n{}",
        jobs_text(&vault),
        mount.log_text()
    );
    assert!(emu.archives(VAULT).is_empty());
    assert_eq!(
        std::fs::read(vault.join("kept.txt")).unwrap(),
        b"refused once",
        "the staged file must stay readable while its upload is refused"
    );
    // The queue would wait a minute or more before trying again; sync asks for it now.
    sync_wait(&vault.join("kept.txt"));
    let archives = emu.archives(VAULT);
    assert_eq!(archives.len(), 1);
    assert_eq!(
        emu.archive_data(VAULT, &archives[0].id).as_deref(),
        Some(&b"refused once"[..])
    );
}

#[test]
fn a_job_that_expired_before_its_download_is_asked_for_again() {
    if !fuse_available() {
        return;
    }
    let emu = Emulator::start();
    let cache = tempfile::tempdir().unwrap();
    let mount = one_cold_file(&emu, cache.path(), b"expired once");
    let file = mount.path(VAULT).join("cold.txt");
    // Stall every download so the job completes and expires before its output is fetched.
    let err = std::fs::read(&file).unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::EAGAIN), "{err}");
    let job = |emu: &Emulator| {
        emu.jobs(VAULT)
            .into_iter()
            .filter(|j| j.action == "ArchiveRetrieval")
            .map(|j| j.id)
            .collect::<Vec<_>>()
    };
    assert!(wait_until(Duration::from_secs(30), || !job(&emu).is_empty()));
    let first = job(&emu)[0].clone();
    emu.stall_job_output(&first, 0);
    emu.complete_all_jobs();
    emu.advance(Duration::from_secs(2 * 86_400));
    emu.clear_faults();
    assert_eq!(
        read_through(&emu, &file, Duration::from_secs(90)).as_deref(),
        Some(&b"expired once"[..]),
        "log:\n{}",
        mount.log_text()
    );
    assert!(
        job(&emu).iter().any(|id| *id != first),
        "the expired job was not replaced by a new one"
    );
}

/// `.jobs` reports an inventory's download as it goes, like a retrieval's: once the inventory
/// is in, its entry's BytesDone is its whole size (it used to stay at 0).
#[test]
fn an_inventory_download_reports_its_bytes_done() {
    if !fuse_available() {
        return;
    }
    // The real time, so the finished job is recent enough for `.jobs` to list it.
    let emu = Emulator::start_with(EmulatorOptions {
        clock: ClockStart::RealNow,
        ..EmulatorOptions::default()
    });
    let cache = tempfile::tempdir().unwrap();
    let mount = one_cold_file(&emu, cache.path(), b"listed");
    let vault = mount.path(VAULT);
    let entry = || {
        jobs_text(&vault)
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .find(|e| e["Action"] == "InventoryRetrieval")
    };
    let mut last = None;
    let done = wait_until(Duration::from_secs(30), || {
        last = entry();
        last.as_ref().is_some_and(|e| {
            e["StatusCode"] == "Succeeded"
                && e["SizeInBytes"].as_u64().is_some_and(|s| s > 0)
                && e["BytesDone"] == e["SizeInBytes"]
        })
    });
    assert!(
        done,
        "the inventory's entry does not show its download done: {last:?}\n.jobs:\n{}",
        jobs_text(&vault)
    );
}
