//! Crash and fault trials for writes: SIGKILL the daemon at seeded random moments during a
//! copy that includes multipart files, and at each step of each piece of background work (the
//! crash matrix: an upload's initiate, its parts, its complete, a delete, an inventory's
//! download and its ingest), remount on the same mountpoint, and check that every file ends up
//! archived exactly once with exact content, that duplicates from lost replies are settled by
//! the next inventory, and that no multipart upload is left behind. Then the same copy under
//! 20% transient faults.
// A test fails by panicking, so unwrap and expect are how it says what went wrong.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use rand::{Rng, SeedableRng};

use glacierfs::codec::names;
use support::emulator::{Emulator, FaultKind, FaultPlan, Op};
use support::mount::{binary, fuse_available, sync_wait, wait_until, Mount};

const VAULT: &str = "crashy";
const MIB: usize = 1 << 20;
const ARGS: &[&str] = &[
    "--part-size",
    "1MiB",
    "--write-back-delay",
    "0s",
    "--upload-concurrency",
    "2",
];

fn files(seed: u64) -> BTreeMap<String, Vec<u8>> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let sizes = [
        3 * MIB + 1,
        2 * MIB,
        1,
        700_000,
        5 * MIB / 2,
        12_345,
        MIB + 1,
        3,
        64 * 1024,
        2 * MIB + 17,
    ];
    sizes
        .iter()
        .enumerate()
        .map(|(i, &n)| {
            let data: Vec<u8> = (0..n).map(|_| rng.random()).collect();
            (format!("set/file-{i}.bin"), data)
        })
        .collect()
}

/// Writes every file not yet complete in the mount (as a user re-running the copy would).
fn copy_missing(mount: &Mount, files: &BTreeMap<String, Vec<u8>>) -> std::io::Result<()> {
    for (rel, data) in files {
        let dest = mount.path(VAULT).join(rel);
        if std::fs::read(&dest).ok().as_deref() == Some(data.as_slice()) {
            continue;
        }
        std::fs::create_dir_all(dest.parent().unwrap())?;
        std::fs::write(&dest, data)?;
    }
    Ok(())
}

/// Lets the daemon take in a fresh inventory (which settles lost-reply duplicates), then
/// checks one archive per file with exact bytes and no multipart upload left.
fn settle_and_check(
    emu: &Emulator,
    mount: &mut Mount,
    files: &BTreeMap<String, Vec<u8>>,
    trial: &str,
) {
    sync_wait(&mount.path(VAULT));
    emu.advance(Duration::from_secs(3600));
    emu.take_inventory(VAULT);
    mount.remount(
        &emu.endpoint(),
        &[ARGS, &["--inventory-max-age", "1s"]].concat(),
    );
    let dir = mount.path(VAULT);
    support::assert_vault_holds_exactly(emu, VAULT, &dir, files, trial, || mount.log_text());
    for (rel, data) in files {
        // A file may be cold (only in Glacier): each EAGAIN lets the emulator finish its job.
        let mut got = None;
        wait_until(Duration::from_secs(60), || {
            emu.complete_all_jobs();
            got = std::fs::read(mount.path(VAULT).join(rel)).ok();
            got.is_some()
        });
        assert_eq!(got.as_ref(), Some(data), "{trial}: {rel}");
    }
}

#[test]
fn sigkill_during_a_copy_loses_nothing_and_leaves_no_duplicate() {
    if !fuse_available() {
        return;
    }
    // Ten trials by default; GLACIERFS_CRASH_TRIALS runs more (scripts/test.sh --long).
    let trials: u64 = std::env::var("GLACIERFS_CRASH_TRIALS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10);
    for seed in 0..trials {
        let trial = format!("trial {seed}");
        let emu = Emulator::start();
        emu.create_vault(VAULT);
        let files = files(seed);
        let cache = tempfile::tempdir().unwrap();
        let mut mount = Mount::start(&emu.endpoint(), cache.path(), ARGS);
        let kill_after =
            Duration::from_millis(rand::rngs::StdRng::seed_from_u64(seed).random_range(5..500));
        let pid = mount.pid().expect("daemon pid");
        let killer = std::thread::spawn(move || {
            std::thread::sleep(kill_after);
            // SAFETY: kill takes plain integers; the daemon is this test's own child.
            unsafe { libc::kill(pid as i32, libc::SIGKILL) };
        });
        // The copy may be cut off by the kill: that is the point.
        let _ = copy_missing(&mount, &files);
        killer.join().unwrap();
        mount.remount(&emu.endpoint(), ARGS);
        copy_missing(&mount, &files).unwrap_or_else(|e| panic!("{trial}: copy after remount: {e}"));
        settle_and_check(&emu, &mut mount, &files, &trial);
    }
}

#[test]
fn a_lost_upload_reply_leaves_a_twin_that_the_next_inventory_settles() {
    if !fuse_available() {
        return;
    }
    let emu = Emulator::start();
    emu.create_vault(VAULT);
    // The service stores the archive, but the reply never arrives: the retry stores another.
    emu.fail_next(Op::UploadArchive, FaultKind::ResetAfterCommit, 1);
    let files: BTreeMap<String, Vec<u8>> =
        [("twin.txt".to_string(), b"only once, please".to_vec())].into();
    let cache = tempfile::tempdir().unwrap();
    let mut mount = Mount::start(&emu.endpoint(), cache.path(), ARGS);
    copy_missing(&mount, &files).unwrap();
    sync_wait(&mount.path(VAULT));
    assert_eq!(
        emu.archives(VAULT).len(),
        2,
        "the lost reply should have left a twin"
    );
    settle_and_check(&emu, &mut mount, &files, "lost reply");
}

#[test]
fn twenty_percent_faults_still_archive_everything_once() {
    if !fuse_available() {
        return;
    }
    let emu = Emulator::start();
    emu.create_vault(VAULT);
    emu.set_stall(Duration::from_millis(300));
    let files = files(99);
    let cache = tempfile::tempdir().unwrap();
    let mut mount = Mount::start(&emu.endpoint(), cache.path(), ARGS);
    // Faults that strike before the service acts; a reply lost after it acted is the crash
    // test's business (it makes a duplicate that only an inventory can settle).
    emu.set_faults(FaultPlan {
        rate: 0.2,
        kinds: vec![
            FaultKind::Throttle,
            FaultKind::InternalError,
            FaultKind::Timeout,
            FaultKind::Reset,
        ],
        seed: 7,
        ops: Some(vec![
            Op::UploadArchive,
            Op::InitiateMultipartUpload,
            Op::UploadPart,
            Op::CompleteMultipartUpload,
            Op::DeleteArchive,
            Op::ListParts,
        ]),
    });
    copy_missing(&mount, &files).unwrap();
    sync_wait(&mount.path(VAULT));
    assert!(
        emu.stats().faults_injected() > 0,
        "the plan injected no fault"
    );
    emu.clear_faults();
    let archives = emu.archives(VAULT);
    assert_eq!(
        archives.len(),
        files.len(),
        "duplicates or missing archives"
    );
    settle_and_check(&emu, &mut mount, &files, "faults");
}

#[test]
fn staged_files_survive_the_loss_of_the_catalog() {
    if !fuse_available() {
        return;
    }
    let emu = Emulator::start();
    emu.create_vault(VAULT);
    let files: BTreeMap<String, Vec<u8>> = [
        (
            "docs/kept.txt".to_string(),
            b"staged, not uploaded".to_vec(),
        ),
        ("big.bin".to_string(), vec![7u8; MIB + 5]),
    ]
    .into();
    let cache = tempfile::tempdir().unwrap();
    let mut mount = Mount::start(&emu.endpoint(), cache.path(), &["--write-back-delay", "1h"]);
    copy_missing(&mount, &files).unwrap();
    mount.kill();
    for f in ["catalog.db", "catalog.db-wal", "catalog.db-shm"] {
        let _ = std::fs::remove_file(cache.path().join(f));
    }
    mount.remount(&emu.endpoint(), ARGS);
    for (rel, data) in &files {
        assert_eq!(
            &std::fs::read(mount.path(VAULT).join(rel)).unwrap_or_default(),
            data,
            "{rel} was not recovered; log:\n{}",
            mount.log_text()
        );
    }
    sync_wait(&mount.path(VAULT));
    for (rel, data) in &files {
        assert!(
            emu.archives(VAULT)
                .iter()
                .any(|a| names::decode(&a.description).path == *rel
                    && emu.archive_data(VAULT, &a.id).as_deref() == Some(data.as_slice())),
            "{rel} was not archived after recovery"
        );
    }
}

/// One point of the crash matrix: the `skip+1`-th request to `op` stalls, before the service
/// acts on it (`Timeout`) or after (`TimeoutAfterCommit`), and the daemon is killed while it
/// waits for the reply. `then` runs on the emulator after the kill.
struct CrashPoint {
    name: &'static str,
    op: Op,
    skip: usize,
    kind: FaultKind,
    then: fn(&Emulator),
}

fn nothing(_: &Emulator) {}

/// The service reclaims the upload while the daemon is down: the resume must start over.
fn reclaim_uploads(emu: &Emulator) {
    for u in emu.multipart_uploads(VAULT) {
        emu.drop_upload(VAULT, &u.id);
    }
}

/// Waits until the stalled request has reached the emulator (and, for a `*AfterCommit` kind,
/// the service has acted on it), then kills the daemon.
fn kill_at(emu: &Emulator, mount: &mut Mount, op: Op, what: &str) {
    let reached = wait_until(Duration::from_secs(60), || {
        emu.request_log()
            .iter()
            .any(|(o, status)| *o == op && *status == 0)
    });
    assert!(
        reached,
        "{what}: the daemon never reached {op:?}; log:\n{}",
        mount.log_text()
    );
    mount.kill();
}

/// A single-part file and a four-part file, written one part at a time so each step is reached
/// in a known order.
fn matrix_files() -> BTreeMap<String, Vec<u8>> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(4242);
    [("small.txt", 100_000), ("big/four-parts.bin", 3 * MIB + 1)]
        .into_iter()
        .map(|(rel, n)| {
            let data: Vec<u8> = (0..n).map(|_| rng.random()).collect();
            (rel.to_string(), data)
        })
        .collect()
}

const SERIAL: &[&str] = &[
    "--part-size",
    "1MiB",
    "--write-back-delay",
    "0s",
    "--upload-concurrency",
    "1",
];

#[test]
fn crash_matrix_of_an_upload() {
    if !fuse_available() {
        return;
    }
    use FaultKind::{Timeout, TimeoutAfterCommit};
    let points = [
        CrashPoint {
            name: "before UploadArchive",
            op: Op::UploadArchive,
            skip: 0,
            kind: Timeout,
            then: nothing,
        },
        CrashPoint {
            name: "after UploadArchive, before the catalog knows",
            op: Op::UploadArchive,
            skip: 0,
            kind: TimeoutAfterCommit,
            then: nothing,
        },
        CrashPoint {
            name: "before InitiateMultipartUpload",
            op: Op::InitiateMultipartUpload,
            skip: 0,
            kind: Timeout,
            then: nothing,
        },
        CrashPoint {
            name: "after InitiateMultipartUpload, before the journal knows",
            op: Op::InitiateMultipartUpload,
            skip: 0,
            kind: TimeoutAfterCommit,
            then: nothing,
        },
        CrashPoint {
            name: "during the first part",
            op: Op::UploadPart,
            skip: 0,
            kind: Timeout,
            then: nothing,
        },
        CrashPoint {
            name: "after the second part",
            op: Op::UploadPart,
            skip: 1,
            kind: TimeoutAfterCommit,
            then: nothing,
        },
        CrashPoint {
            name: "after the third part, upload reclaimed while down",
            op: Op::UploadPart,
            skip: 2,
            kind: TimeoutAfterCommit,
            then: reclaim_uploads,
        },
        CrashPoint {
            name: "before CompleteMultipartUpload",
            op: Op::CompleteMultipartUpload,
            skip: 0,
            kind: Timeout,
            then: nothing,
        },
        CrashPoint {
            name: "after CompleteMultipartUpload, before the catalog knows",
            op: Op::CompleteMultipartUpload,
            skip: 0,
            kind: TimeoutAfterCommit,
            then: nothing,
        },
    ];
    let files = matrix_files();
    for point in points {
        let emu = Emulator::start();
        emu.create_vault(VAULT);
        // Long enough that the daemon is killed while it still waits for the reply.
        emu.set_stall(Duration::from_secs(120));
        emu.fail_after(point.op, point.skip, point.kind);
        let cache = tempfile::tempdir().unwrap();
        let mut mount = Mount::start(&emu.endpoint(), cache.path(), SERIAL);
        copy_missing(&mount, &files).unwrap();
        kill_at(&emu, &mut mount, point.op, point.name);
        (point.then)(&emu);
        mount.remount(&emu.endpoint(), SERIAL);
        settle_and_check(&emu, &mut mount, &files, point.name);
    }
}

#[test]
fn crash_matrix_of_a_delete() {
    if !fuse_available() {
        return;
    }
    for (name, kind) in [
        ("before DeleteArchive", FaultKind::Timeout),
        (
            "after DeleteArchive, before the catalog knows",
            FaultKind::TimeoutAfterCommit,
        ),
    ] {
        let emu = Emulator::start();
        emu.create_vault(VAULT);
        emu.set_stall(Duration::from_secs(120));
        let mut files = matrix_files();
        let cache = tempfile::tempdir().unwrap();
        let mut mount = Mount::start(&emu.endpoint(), cache.path(), SERIAL);
        copy_missing(&mount, &files).unwrap();
        sync_wait(&mount.path(VAULT));
        assert_eq!(emu.archives(VAULT).len(), files.len(), "{name}");
        emu.fail_next(Op::DeleteArchive, kind, 1);
        std::fs::remove_file(mount.path(VAULT).join("small.txt")).unwrap();
        files.remove("small.txt");
        kill_at(&emu, &mut mount, Op::DeleteArchive, name);
        mount.remount(&emu.endpoint(), SERIAL);
        assert!(
            !mount.path(VAULT).join("small.txt").exists(),
            "{name}: the deleted file came back after the remount"
        );
        settle_and_check(&emu, &mut mount, &files, name);
        assert!(
            !mount.path(VAULT).join("small.txt").exists(),
            "{name}: the deleted file came back with the inventory"
        );
    }
}

#[test]
fn crash_matrix_of_an_inventory_download() {
    if !fuse_available() {
        return;
    }
    let emu = Emulator::start();
    emu.create_vault(VAULT);
    emu.set_stall(Duration::from_secs(120));
    let mut expected = BTreeMap::new();
    for i in 0..300 {
        let rel = format!("old/dir-{}/f-{i}.txt", i % 7);
        let body = format!("archive {i}").into_bytes();
        emu.put_archive(VAULT, &names::encode_mt2(&rel, 1_600_000_000), &body, None);
        expected.insert(rel, body.len() as u64);
    }
    emu.take_inventory(VAULT);
    let cache = tempfile::tempdir().unwrap();
    let mut mount = Mount::start(&emu.endpoint(), cache.path(), &[]);
    let _ = std::fs::read_dir(mount.path(VAULT)).map(|d| d.count());
    let job = wait_until(Duration::from_secs(30), || {
        emu.jobs(VAULT)
            .iter()
            .any(|j| j.action == "InventoryRetrieval")
    });
    assert!(job, "listing the vault started no inventory job");
    let id = emu
        .jobs(VAULT)
        .into_iter()
        .find(|j| j.action == "InventoryRetrieval")
        .unwrap()
        .id;
    emu.stall_job_output(&id, 0);
    emu.complete_all_jobs();
    kill_at(
        &emu,
        &mut mount,
        Op::GetJobOutput,
        "during the inventory download",
    );
    emu.clear_faults();
    mount.remount(&emu.endpoint(), &[]);
    let vault = mount.path(VAULT);
    let loaded = wait_until(Duration::from_secs(60), || {
        emu.complete_all_jobs();
        let _ = std::fs::read_dir(&vault).map(|d| d.count());
        support::walk(&vault)
            .into_iter()
            .filter_map(|(rel, seen)| seen.map(|s| (rel, s.size)))
            .collect::<BTreeMap<_, _>>()
            == expected
    });
    assert!(
        loaded,
        "the inventory never loaded after the crash; log:\n{}",
        mount.log_text()
    );
}

/// Writes a JSON inventory of `count` archives in `dirs` directories.
fn write_inventory(path: &Path, count: usize, dirs: usize) {
    use std::io::Write;
    let mut out = std::io::BufWriter::new(std::fs::File::create(path).unwrap());
    write!(
        out,
        r#"{{"VaultARN":"arn:aws:glacier:us-east-1:123456789012:vaults/{VAULT}","InventoryDate":"2099-01-01T00:00:00Z","ArchiveList":["#
    )
    .unwrap();
    for i in 0..count {
        let hash = format!("{:064x}", i + 1);
        let id = format!("{hash}{hash}{}", &hash[..10]);
        let desc = names::encode_mt2(&format!("d{}/f{i}", i % dirs), 1_600_000_000);
        let sep = if i == 0 { "" } else { "," };
        write!(
            out,
            r#"{sep}{{"ArchiveId":"{id}","ArchiveDescription":"{desc}","CreationDate":"2024-01-01T00:00:00Z","Size":{},"SHA256TreeHash":"{hash}"}}"#,
            i + 1
        )
        .unwrap();
    }
    write!(out, "]}}").unwrap();
}

/// SIGKILL `glacierfs inventory import` at seeded moments while it ingests a large inventory:
/// the catalog must never be left damaged, and importing again must give the whole tree.
#[test]
fn a_killed_inventory_ingest_leaves_a_sound_catalog() {
    let dir = tempfile::tempdir().unwrap();
    let inventory = dir.path().join("inventory.json");
    const COUNT: usize = 100_000;
    write_inventory(&inventory, COUNT, 100);
    let import = |cache: &Path| {
        let mut cmd = Command::new(binary());
        cmd.args(["inventory", "import", "--cache-dir"])
            .arg(cache)
            .arg(VAULT)
            .arg(&inventory)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped());
        cmd
    };
    // How long a whole import takes here, so the kills spread over all of it.
    let cache = tempfile::tempdir().unwrap();
    let started = std::time::Instant::now();
    assert!(import(cache.path()).status().unwrap().success());
    let whole = started.elapsed();
    let trials: u64 = std::env::var("GLACIERFS_CRASH_TRIALS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(5);
    for seed in 0..trials {
        let cache = tempfile::tempdir().unwrap();
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        let at = whole.mul_f64(rng.random_range(0.05..0.95));
        let mut child = import(cache.path()).spawn().unwrap();
        std::thread::sleep(at);
        let _ = child.kill();
        let _ = child.wait();
        let again = import(cache.path()).output().unwrap();
        assert!(
            again.status.success(),
            "trial {seed} (killed after {at:?}): the next import failed: {}",
            String::from_utf8_lossy(&again.stderr)
        );
        if fuse_available() {
            // A vault Glacier never inventoried: the catalog is its whole view.
            let emu = Emulator::start();
            emu.create_vault(VAULT);
            let mount = Mount::start(&emu.endpoint(), cache.path(), &[]);
            let listed: usize = (0..100)
                .map(|d| {
                    std::fs::read_dir(mount.path(VAULT).join(format!("d{d}")))
                        .unwrap()
                        .count()
                })
                .sum();
            assert_eq!(listed, COUNT, "trial {seed}: entries lost or doubled");
        }
    }
}

/// A catalog cut short is refused with advice; `glacierfs catalog rebuild` restores the copy
/// the last clean stop saved; the next mount reads the inventory again (bringing what changed
/// upstream since the copy) and recovers from their sidecars the files staged after it.
#[test]
fn a_damaged_catalog_is_refused_then_rebuilt_from_its_copy_and_the_inventory() {
    if !fuse_available() {
        return;
    }
    const HOLD: &[&str] = &["--write-back-delay", "1h"];
    let emu = Emulator::start();
    emu.create_vault(VAULT);
    let mut expected: BTreeMap<String, Vec<u8>> = BTreeMap::new();
    for i in 0..3 {
        let rel = format!("old/a-{i}.txt");
        let body = format!("old archive {i}").into_bytes();
        emu.put_archive(VAULT, &names::encode_mt2(&rel, 1_600_000_000), &body, None);
        expected.insert(rel, body);
    }
    emu.take_inventory(VAULT);
    let cache = tempfile::tempdir().unwrap();
    let mut mount = Mount::start(&emu.endpoint(), cache.path(), HOLD);
    let vault = mount.path(VAULT);
    assert!(wait_until(Duration::from_secs(60), || {
        emu.complete_all_jobs();
        vault.join("old/a-2.txt").exists()
    }));
    let mut write = |mount: &Mount, rel: &str, body: &[u8]| {
        std::fs::write(mount.path(VAULT).join(rel), body).unwrap();
        expected.insert(rel.to_string(), body.to_vec());
    };
    write(
        &mount,
        "staged-before-copy.txt",
        b"in the copy, not uploaded",
    );
    // A clean stop saves the copy.
    mount.terminate();
    assert!(
        cache.path().join("catalog.copy.db").exists(),
        "no copy saved"
    );

    mount.remount(&emu.endpoint(), HOLD);
    write(&mount, "staged-after-copy.txt", b"only a sidecar knows me");
    // Upstream moves on while the catalog is damaged: a newer inventory must bring it in.
    let rel = "old/added-upstream.txt".to_string();
    emu.put_archive(
        VAULT,
        &names::encode_mt2(&rel, 1_600_000_000),
        b"new upstream",
        None,
    );
    expected.insert(rel, b"new upstream".to_vec());
    emu.advance(Duration::from_secs(2 * 86_400));
    emu.take_inventory(VAULT);
    mount.kill();
    let db = cache.path().join("catalog.db");
    let len = std::fs::metadata(&db).unwrap().len();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&db)
        .unwrap()
        .set_len(len / 2)
        .unwrap();
    for f in ["catalog.db-wal", "catalog.db-shm"] {
        let _ = std::fs::remove_file(cache.path().join(f));
    }

    let refused = Mount::try_start(&emu.endpoint(), cache.path(), HOLD)
        .err()
        .expect("a damaged catalog must not mount");
    assert!(
        refused.contains("damaged") && refused.contains("glacierfs catalog rebuild"),
        "{refused}"
    );
    let out = Command::new(binary())
        .args(["catalog", "rebuild", "--cache-dir"])
        .arg(cache.path())
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{said}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(said.contains("restored the catalog copy"), "{said}");

    mount.remount(&emu.endpoint(), &["--inventory-max-age", "1s"]);
    let vault = mount.path(VAULT);
    let back = wait_until(Duration::from_secs(60), || {
        emu.complete_all_jobs();
        let _ = std::fs::read_dir(&vault).map(|d| d.count());
        expected.keys().all(|rel| vault.join(rel).exists())
    });
    assert!(
        back,
        "not everything came back: {:?}\nlog:\n{}",
        support::walk(&vault).keys().collect::<Vec<_>>(),
        mount.log_text()
    );
    for rel in ["staged-before-copy.txt", "staged-after-copy.txt"] {
        assert_eq!(
            std::fs::read(vault.join(rel)).unwrap(),
            expected[rel],
            "{rel}"
        );
    }
    settle_and_check(&emu, &mut mount, &expected, "rebuilt catalog");
}
