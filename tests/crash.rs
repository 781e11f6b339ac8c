//! Crash and fault trials for writes: SIGKILL the daemon at seeded random moments during a
//! copy that includes multipart files, remount on the same mountpoint, and check that every
//! file ends up archived exactly once with exact content, that duplicates from lost replies
//! are settled by the next inventory, and that no multipart upload is left behind. Then the
//! same copy under 20% transient faults.

mod support;

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use rand::{Rng, SeedableRng};

use glacierfs::names;
use support::emulator::{Emulator, FaultKind, FaultPlan, Op};
use support::mount::{aws_env, binary, fuse_available, wait_until, Mount};

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

fn sync_wait(path: &Path) {
    let out = aws_env(&mut Command::new(binary()))
        .args(["sync", "--wait"])
        .arg(path)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "sync: {}",
        String::from_utf8_lossy(&out.stderr)
    );
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
    let _ = std::fs::read_dir(mount.path(VAULT)).map(|d| d.count());
    let settled = wait_until(Duration::from_secs(60), || {
        emu.complete_all_jobs();
        let archives = emu.archives(VAULT);
        archives.len() == files.len()
            && files.iter().all(|(rel, data)| {
                archives.iter().any(|a| {
                    names::decode(&a.description).path == *rel
                        && emu.archive_data(VAULT, &a.id).as_deref() == Some(data.as_slice())
                })
            })
    });
    assert!(
        settled,
        "{trial}: archives never settled to one per file: {:#?}\nlog:\n{}",
        emu.archives(VAULT)
            .iter()
            .map(|a| (names::decode(&a.description).path, a.size))
            .collect::<Vec<_>>(),
        mount.log_text()
    );
    assert!(
        wait_until(Duration::from_secs(30), || emu
            .multipart_uploads(VAULT)
            .is_empty()),
        "{trial}: multipart uploads left behind"
    );
    for (rel, data) in files {
        assert_eq!(
            &std::fs::read(mount.path(VAULT).join(rel)).unwrap(),
            data,
            "{trial}: {rel}"
        );
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
