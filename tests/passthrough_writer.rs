//! A writer that opens a file while its upload is in flight, through a real mount with FUSE
//! passthrough: a reader holds the file open, so the kernel pins every open of it to one
//! backing file, the data file the upload's snapshot links. The writer's open gives the
//! snapshot a copy and switches the upload to it; the upload goes on and completes once with
//! the old version, and the new version goes up after the writer's close.
// A test fails by panicking, so unwrap and expect are how it says what went wrong.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::FileExt;
use std::time::Duration;

use support::emulator::{Emulator, Link, Op};
use support::mount::{fuse_available, sync_wait, wait_until, Mount};

const VAULT: &str = "backup";
const MIB: usize = 1 << 20;

fn pattern(size: usize, seed: u8) -> Vec<u8> {
    (0..size)
        .map(|k| (k as u8).wrapping_mul(31).wrapping_add(seed) ^ (k >> 12) as u8)
        .collect()
}

#[test]
fn a_writer_during_an_upload_through_passthrough_does_not_restart_it() {
    if !fuse_available() {
        return;
    }
    let emu = Emulator::start();
    emu.create_vault(VAULT);
    let cache = tempfile::tempdir().unwrap();
    // One part at a time, so most parts are read from the snapshot after the writer's open;
    // the old archive is kept, to check it.
    let mount = Mount::start(
        &emu.endpoint(),
        cache.path(),
        &[
            "--part-size",
            "1MiB",
            "--upload-concurrency",
            "1",
            "--write-back-delay",
            "1s",
            "--delete-delay",
            "1h",
        ],
    );
    // A slow link keeps the multipart upload in flight for seconds.
    emu.set_link(Link {
        latency: Duration::ZERO,
        bandwidth: Some(MIB as u64),
    });
    let file = mount.path(VAULT).join("big.bin");
    let old = pattern(4 * MIB, 3);
    std::fs::write(&file, &old).unwrap();

    // A reader holds the file open: its passthrough backing is the data file.
    let mut reader = std::fs::File::open(&file).unwrap();
    assert!(
        wait_until(Duration::from_secs(60), || emu
            .stats()
            .requests_for(Op::UploadPart)
            >= 1),
        "the upload did not start"
    );

    // The writer opens the file mid-upload, changes a part not sent yet, and appends.
    let mut writer = std::fs::OpenOptions::new().write(true).open(&file).unwrap();
    let patch = vec![0xAB; 4096];
    writer
        .write_all_at(&patch, (3 * MIB + MIB / 2) as u64)
        .unwrap();
    writer.seek(SeekFrom::End(0)).unwrap();
    let tail = pattern(MIB / 2 + 7, 9);
    writer.write_all(&tail).unwrap();
    let mut new = old.clone();
    new[3 * MIB + MIB / 2..3 * MIB + MIB / 2 + patch.len()].copy_from_slice(&patch);
    new.extend_from_slice(&tail);

    // The reader, on the same backing, sees the writer's bytes at once.
    let mut seen = Vec::new();
    reader.read_to_end(&mut seen).unwrap();
    assert!(
        seen == new,
        "the open reader does not see the writer's bytes"
    );

    // The upload of the old version ends while the writer still has the file open: completed,
    // not thrown away (the queue logs that, and the next round would start it over).
    const THROWN_AWAY: &str = "changed while it was going up";
    assert!(
        wait_until(Duration::from_secs(60), || {
            let s = emu.stats();
            s.requests_for(Op::CompleteMultipartUpload) + s.requests_for(Op::AbortMultipartUpload)
                >= 1
                || mount.log_text().contains(THROWN_AWAY)
        }),
        "the upload neither completed nor was thrown away"
    );
    assert!(
        !mount.log_text().contains(THROWN_AWAY),
        "the upload in flight was thrown away: {}",
        mount.log_text()
    );
    let stats = emu.stats();
    assert_eq!(
        stats.requests_for(Op::AbortMultipartUpload),
        0,
        "the upload in flight was thrown away"
    );
    assert_eq!(stats.requests_for(Op::InitiateMultipartUpload), 1);
    assert!(
        wait_until(Duration::from_secs(30), || emu.archives(VAULT).len() == 1),
        "no archive of the old version"
    );
    let first = emu.archives(VAULT).remove(0);
    assert!(
        emu.archive_data(VAULT, &first.id).unwrap() == old,
        "the old version's archive does not hold the old bytes"
    );

    // After the writer's close, the new version goes up as a second archive.
    emu.set_link(Link::default());
    drop(writer);
    drop(reader);
    sync_wait(&file);
    let stats = emu.stats();
    assert_eq!(stats.requests_for(Op::InitiateMultipartUpload), 2);
    assert_eq!(stats.requests_for(Op::CompleteMultipartUpload), 2);
    assert_eq!(stats.requests_for(Op::AbortMultipartUpload), 0);
    let archives = emu.archives(VAULT);
    assert_eq!(archives.len(), 2, "{archives:?}");
    let second = archives.iter().find(|a| a.id != first.id).unwrap();
    assert!(
        emu.archive_data(VAULT, &second.id).unwrap() == new,
        "the new version's archive does not hold the new bytes"
    );
    assert!(
        std::fs::read(&file).unwrap() == new,
        "the file reads back different"
    );
    let log = mount.unmount();
    assert!(
        !log.contains("FUSE passthrough is off"),
        "the mount ran without passthrough, so this test proved nothing: {log}"
    );
}

/// A snapshot changed by something outside glacierfs (here, bytes appended to it in the cache
/// directory) cannot be uploaded: the upload is dropped and its multipart upload aborted at
/// Glacier, not left open there, and the next round uploads the file as it is now.
#[test]
fn an_upload_whose_snapshot_changed_outside_is_aborted_at_glacier() {
    if !fuse_available() {
        return;
    }
    let emu = Emulator::start();
    emu.create_vault(VAULT);
    let cache = tempfile::tempdir().unwrap();
    let mount = Mount::start(
        &emu.endpoint(),
        cache.path(),
        &[
            "--part-size",
            "1MiB",
            "--upload-concurrency",
            "1",
            "--write-back-delay",
            "1s",
        ],
    );
    emu.set_link(Link {
        latency: Duration::ZERO,
        bandwidth: Some(MIB as u64),
    });
    let file = mount.path(VAULT).join("big.bin");
    std::fs::write(&file, pattern(4 * MIB, 5)).unwrap();
    assert!(
        wait_until(Duration::from_secs(60), || emu
            .stats()
            .requests_for(Op::UploadPart)
            >= 1),
        "the upload did not start"
    );
    let snapshots: Vec<_> = std::fs::read_dir(cache.path().join("snapshots"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(snapshots.len(), 1, "{snapshots:?}");
    let mut outside = std::fs::OpenOptions::new()
        .append(true)
        .open(&snapshots[0])
        .unwrap();
    outside
        .write_all(b"changed behind glacierfs' back")
        .unwrap();
    drop(outside);
    assert!(
        wait_until(Duration::from_secs(60), || mount
            .log_text()
            .contains("changed while it was going up")),
        "the change went unnoticed: {}",
        mount.log_text()
    );
    emu.set_link(Link::default());
    assert!(
        wait_until(Duration::from_secs(30), || emu
            .stats()
            .requests_for(Op::AbortMultipartUpload)
            >= 1),
        "the dropped upload was left open at Glacier"
    );
    let now = std::fs::read(&file).unwrap();
    sync_wait(&file);
    let archives = emu.archives(VAULT);
    assert_eq!(archives.len(), 1, "{archives:?}");
    assert!(
        emu.archive_data(VAULT, &archives[0].id).unwrap() == now,
        "the archive does not hold the file as it is now"
    );
    mount.unmount();
}
