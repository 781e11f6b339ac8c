//! Namespace snapshots and `catalog restore`, through real mounts over the emulator: what the
//! catalog alone knew (renames, modes, owners, times, empty files and directories) survives the
//! loss of the cache directory; SIGKILLs during a snapshot's upload and during a restore lose
//! nothing; snapshots are never files.
// A test fails by panicking, so unwrap and expect are how it says what went wrong.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::collections::BTreeMap;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

use glacierfs::codec::names::snapshot as description;
use support::emulator::{Emulator, FaultKind, Op};
use support::mount::{aws_env, binary, fuse_available, sync_wait, wait_until, Mount};
use support::xattr;

const VAULT: &str = "keep";
const ARGS: &[&str] = &["--write-back-delay", "0s", "--snapshot-interval", "off"];

/// What a user sees of one entry: kind, mode, owner, size, both times to the nanosecond, and a
/// symlink's target.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Stat {
    kind: &'static str,
    mode: u32,
    uid: u32,
    gid: u32,
    size: u64,
    mtime: (i64, i64),
    atime: (i64, i64),
    target: Option<String>,
}

/// Every entry below `dir` by relative path, as `stat` shows it.
fn tree(dir: &Path) -> BTreeMap<String, Stat> {
    let mut out = BTreeMap::new();
    fn walk(dir: &Path, prefix: &str, out: &mut BTreeMap<String, Stat>) {
        for e in std::fs::read_dir(dir).unwrap() {
            let e = e.unwrap();
            let rel = format!("{prefix}{}", e.file_name().to_string_lossy());
            let m = std::fs::symlink_metadata(e.path()).unwrap();
            let t = m.file_type();
            let kind = if t.is_dir() {
                "dir"
            } else if t.is_symlink() {
                "symlink"
            } else if t.is_fifo() {
                "fifo"
            } else {
                "file"
            };
            out.insert(
                rel.clone(),
                Stat {
                    kind,
                    mode: m.mode() & 0o7777,
                    uid: m.uid(),
                    gid: m.gid(),
                    size: if m.is_dir() { 0 } else { m.len() },
                    mtime: (m.mtime(), m.mtime_nsec()),
                    atime: (m.atime(), m.atime_nsec()),
                    target: t
                        .is_symlink()
                        .then(|| std::fs::read_link(e.path()).unwrap().display().to_string()),
                },
            );
            if m.is_dir() {
                walk(&e.path(), &format!("{rel}/"), out);
            }
        }
    }
    walk(dir, "", &mut out);
    out
}

fn run(args: &[&str], path: &Path) -> Output {
    aws_env(&mut Command::new(binary()))
        .args(args)
        .arg(path)
        .output()
        .unwrap()
}

fn ok(out: &Output, what: &str) -> String {
    assert!(
        out.status.success(),
        "{what} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn sh(cmd: &str, dir: &Path) {
    let out = Command::new("sh")
        .arg("-c")
        .arg(cmd)
        .current_dir(dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{cmd}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The snapshot archives in the vault.
fn snapshot_archives(emu: &Emulator) -> Vec<String> {
    emu.archives(VAULT)
        .into_iter()
        .filter(|a| description::is_snapshot(&a.description))
        .map(|a| a.description)
        .collect()
}

/// A tree only the catalog can hold: archives renamed, chmod, chown and touch on them, an
/// empty file, an empty directory, symlinks (one dangling), a fifo, an atime apart from its
/// mtime; then a snapshot of it.
fn build_and_snapshot(emu: &Emulator, mount: &Mount) {
    let v = mount.path(VAULT);
    std::fs::create_dir_all(v.join("docs")).unwrap();
    std::fs::write(v.join("a.txt"), b"first archive").unwrap();
    std::fs::write(v.join("docs/b.txt"), b"second archive").unwrap();
    std::fs::write(v.join("docs/c.txt"), b"third archive").unwrap();
    sync_wait(&v);
    sh(
        "mkdir -p renamed/deep && mv a.txt renamed/deep/a2.txt && mv docs/c.txt c-moved.txt \
         && chmod 600 docs/b.txt && chown 1234:5678 docs/b.txt \
         && touch -m -d '2001-02-03 04:05:06' docs/b.txt renamed/deep/a2.txt \
         && mkdir empty-dir && chmod 750 empty-dir && : > empty-file && chmod 604 empty-file \
         && ln -s renamed/deep/a2.txt link && ln -s ../nowhere renamed/dangling \
         && mkfifo -m 640 pipe && touch -h -m -d '2002-03-04 05:06:07.123456789' link \
         && touch -a -d '1999-12-31 23:59:58.5' empty-file docs/b.txt \
         && rmdir docs 2>/dev/null; true",
        &v,
    );
    let out = run(&["sync", "--wait", "--snapshot"], &v);
    let said = ok(&out, "sync --snapshot");
    assert!(said.contains("snapshot of"), "{said}");
    assert_eq!(snapshot_archives(emu).len(), 1, "one snapshot went up");
}

/// A mount on a fresh cache directory that has taken the vault's inventory in.
fn fresh_mount(emu: &Emulator, cache: &Path) -> Mount {
    emu.take_inventory(VAULT);
    let mount = Mount::start(&emu.endpoint(), cache, ARGS);
    let v = mount.path(VAULT);
    let _ = std::fs::read_dir(&v).unwrap().count();
    let loaded = wait_until(Duration::from_secs(60), || {
        emu.complete_all_jobs();
        xattr(&v, "user.glacier.snapshot").is_ok_and(|s| s.starts_with("no-history"))
    });
    assert!(loaded, "no inventory came in; log:\n{}", mount.log_text());
    mount
}

/// `catalog restore --wait` while the emulator finishes the job it starts.
fn restore_wait(emu: &Emulator, vault: &Path) -> String {
    let mut child = aws_env(&mut Command::new(binary()))
        .args(["catalog", "restore", "--wait", "--timeout", "60s"])
        .arg(vault)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    wait_until(Duration::from_secs(70), || {
        emu.complete_all_jobs();
        child.try_wait().unwrap().is_some()
    });
    let out = child.wait_with_output().unwrap();
    ok(&out, "catalog restore --wait")
}

#[test]
fn a_fresh_cache_gets_the_whole_tree_back_from_the_snapshot() {
    if !fuse_available() {
        return;
    }
    let emu = Emulator::start();
    emu.create_vault(VAULT);
    let cache_a = tempfile::tempdir().unwrap();
    let a = Mount::start(&emu.endpoint(), cache_a.path(), ARGS);
    build_and_snapshot(&emu, &a);
    // Uploaded after the snapshot: it keeps the name its description gives.
    std::fs::write(a.path(VAULT).join("late.txt"), b"after the snapshot").unwrap();
    sync_wait(&a.path(VAULT));
    let before = tree(&a.path(VAULT));
    assert_eq!(before["docs/b.txt"].mode, 0o600, "{before:#?}");
    assert_eq!(before["pipe"].kind, "fifo", "{before:#?}");
    assert_eq!(
        before["link"].target.as_deref(),
        Some("renamed/deep/a2.txt")
    );
    assert_ne!(before["empty-file"].atime, before["empty-file"].mtime);
    a.unmount();

    let cache_b = tempfile::tempdir().unwrap();
    let b = fresh_mount(&emu, cache_b.path());
    let v = b.path(VAULT);
    // Before the restore: the descriptions' names only, no snapshot among them, and the mount
    // says what to run.
    let plain = tree(&v);
    assert!(plain.contains_key("a.txt"), "{plain:#?}");
    assert!(
        plain.keys().all(|k| !k.contains("glacierfs-snapshot")),
        "a snapshot shows as a file: {plain:#?}"
    );
    let jobs = std::fs::read_to_string(v.join(".jobs")).unwrap();
    assert!(
        jobs.contains("\"NoHistory\"") && jobs.contains("glacierfs catalog restore"),
        "{jobs}"
    );
    assert!(
        wait_until(Duration::from_secs(10), || b
            .log_text()
            .contains("no history of: run `glacierfs catalog restore`")),
        "{}",
        b.log_text()
    );

    let status = ok(&run(&["status"], &v), "status");
    assert!(
        status.contains(&format!(
            "no history of; run `glacierfs catalog restore {}`",
            v.display()
        )),
        "{status}"
    );

    let said = restore_wait(&emu, &v);
    assert!(said.contains("is applied"), "{said}");
    let mut after = tree(&v);
    let restored = after.clone();
    // The file uploaded after the snapshot has what its description carries: its name and
    // its mtime to the second; everything else is the snapshot's, to the nanosecond.
    let (late, late_before) = (after.remove("late.txt"), before.get("late.txt"));
    let (late, late_before) = (late.unwrap(), late_before.unwrap());
    assert_eq!(
        (late.size, late.mtime.0),
        (late_before.size, late_before.mtime.0)
    );
    let mut rest = before.clone();
    rest.remove("late.txt");
    assert_eq!(after, rest, "the restored tree differs");
    let jobs = std::fs::read_to_string(v.join(".jobs")).unwrap();
    assert!(!jobs.contains("NoHistory"), "{jobs}");
    let status = ok(&run(&["status"], &v), "status");
    assert!(status.contains("snapshot: vault keep: last "), "{status}");

    // Applying the same snapshot again changes nothing, and pays for no second job.
    let jobs_before = emu.stats().requests_for(Op::InitiateJob);
    restore_wait(&emu, &v);
    assert_eq!(tree(&v), restored);
    assert_eq!(emu.stats().requests_for(Op::InitiateJob), jobs_before);
    b.unmount();
}

#[test]
fn local_changes_win_and_archives_gone_are_dropped() {
    if !fuse_available() {
        return;
    }
    let emu = Emulator::start();
    emu.create_vault(VAULT);
    let cache_a = tempfile::tempdir().unwrap();
    let a = Mount::start(&emu.endpoint(), cache_a.path(), ARGS);
    build_and_snapshot(&emu, &a);
    a.unmount();
    // Another tool deletes the archive the snapshot calls c-moved.txt.
    let gone = emu
        .archives(VAULT)
        .into_iter()
        .find(|x| {
            x.description.starts_with("mt2 ") && x.size == 13 && {
                glacierfs::codec::names::decode(&x.description).path == "docs/c.txt"
            }
        })
        .unwrap();
    emu.delete_archive_direct(VAULT, &gone.id);

    let cache_b = tempfile::tempdir().unwrap();
    let b = fresh_mount(&emu, cache_b.path());
    let v = b.path(VAULT);
    // Changed here before the restore: this file keeps its own state.
    sh("mv docs/b.txt mine.txt && chmod 640 mine.txt", &v);
    restore_wait(&emu, &v);
    let after = tree(&v);
    assert!(after.contains_key("renamed/deep/a2.txt"), "{after:#?}");
    assert_eq!(after["mine.txt"].mode, 0o640, "{after:#?}");
    assert!(!after.contains_key("docs/b.txt"), "{after:#?}");
    assert!(!after.contains_key("c-moved.txt"), "{after:#?}");
    assert!(after.contains_key("empty-file"), "{after:#?}");
    b.unmount();
}

#[test]
fn sigkill_during_a_snapshot_upload_loses_nothing_and_leaves_one_snapshot() {
    if !fuse_available() {
        return;
    }
    let emu = Emulator::start();
    emu.create_vault(VAULT);
    let cache = tempfile::tempdir().unwrap();
    let mut mount = Mount::start(&emu.endpoint(), cache.path(), ARGS);
    let v = mount.path(VAULT);
    std::fs::write(v.join("x.txt"), b"an archive").unwrap();
    sync_wait(&v);
    sh("mv x.txt y.txt && chmod 611 y.txt", &v);
    // The service stores the snapshot but its reply never comes: the daemon dies waiting.
    emu.set_stall(Duration::from_secs(120));
    emu.fail_next(Op::UploadArchive, FaultKind::TimeoutAfterCommit, 1);
    ok(&run(&["sync", "--snapshot"], &v), "sync --snapshot");
    let reached = wait_until(Duration::from_secs(30), || {
        emu.request_log()
            .iter()
            .any(|(o, status)| *o == Op::UploadArchive && *status == 0)
    });
    assert!(reached, "no snapshot upload; log:\n{}", mount.log_text());
    let jobs = std::fs::read_to_string(v.join(".jobs")).unwrap();
    let shown = jobs
        .lines()
        .any(|l| l.contains("\"Snapshot\"") && l.contains("\"InProgress\""));
    assert!(shown, ".jobs does not show the snapshot going up: {jobs}");
    mount.kill();
    emu.clear_faults();
    mount.remount(&emu.endpoint(), ARGS);
    // The restart sends it again: the lost reply left a twin, which the next inventory settles.
    let v = mount.path(VAULT);
    assert!(
        wait_until(Duration::from_secs(30), || xattr(
            &v,
            "user.glacier.snapshot"
        )
        .is_ok_and(|s| s.starts_with("confirmed"))),
        "the snapshot was not resumed; log:\n{}",
        mount.log_text()
    );
    assert_eq!(
        snapshot_archives(&emu).len(),
        2,
        "a twin from the lost reply"
    );
    emu.advance(Duration::from_secs(3600));
    emu.take_inventory(VAULT);
    mount.remount(
        &emu.endpoint(),
        &[ARGS, &["--inventory-max-age", "1s"]].concat(),
    );
    let _ = std::fs::read_dir(mount.path(VAULT)).unwrap().count();
    assert!(
        wait_until(Duration::from_secs(60), || {
            emu.complete_all_jobs();
            snapshot_archives(&emu).len() == 1
        }),
        "the twin was not deleted: {:?}; log:\n{}",
        snapshot_archives(&emu),
        mount.log_text()
    );
    let t = tree(&mount.path(VAULT));
    assert_eq!(t["y.txt"].mode, 0o611, "{t:#?}");
    mount.unmount();
}

#[test]
fn sigkill_during_a_restore_loses_nothing_the_rerun_gives_the_same_tree_and_rebuild_uses_it() {
    if !fuse_available() {
        return;
    }
    let emu = Emulator::start();
    emu.create_vault(VAULT);
    let cache_a = tempfile::tempdir().unwrap();
    let a = Mount::start(&emu.endpoint(), cache_a.path(), ARGS);
    build_and_snapshot(&emu, &a);
    let before = tree(&a.path(VAULT));
    a.unmount();

    let cache_b = tempfile::tempdir().unwrap();
    let mut b = fresh_mount(&emu, cache_b.path());
    let v = b.path(VAULT);
    ok(&run(&["catalog", "restore"], &v), "catalog restore");
    // The job finishes, its output stalls mid-download, and the daemon dies.
    let job = loop {
        let jobs = emu.jobs(VAULT);
        if let Some(j) = jobs.iter().find(|j| j.archive_id.is_some()) {
            break j.id.clone();
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    emu.set_stall(Duration::from_secs(120));
    emu.stall_job_output(&job, 0);
    emu.complete_all_jobs();
    let reached = wait_until(Duration::from_secs(30), || {
        emu.request_log()
            .iter()
            .any(|(o, status)| *o == Op::GetJobOutput && *status == 0)
    });
    assert!(reached, "no download; log:\n{}", b.log_text());
    b.kill();
    emu.clear_faults();
    b.remount(&emu.endpoint(), ARGS);
    let v = b.path(VAULT);
    assert!(
        wait_until(Duration::from_secs(30), || xattr(
            &v,
            "user.glacier.restore"
        )
        .is_ok_and(|s| s.starts_with("applied"))),
        "the restore did not resume; log:\n{}",
        b.log_text()
    );
    assert_eq!(tree(&v), before);
    restore_wait(&emu, &v);
    assert_eq!(tree(&v), before, "a re-run changed the tree");
    b.unmount();

    // The catalog and its copy are lost, but the retrieved snapshot is still in the cache:
    // `catalog rebuild` takes it, and the next mount applies it once the inventory is in.
    for f in [
        "catalog.db",
        "catalog.db-wal",
        "catalog.db-shm",
        "catalog.copy.db",
    ] {
        let _ = std::fs::remove_file(cache_b.path().join(f));
    }
    let out = aws_env(&mut Command::new(binary()))
        .args(["catalog", "rebuild", "--cache-dir"])
        .arg(cache_b.path())
        .output()
        .unwrap();
    let said = ok(&out, "catalog rebuild");
    assert!(said.contains("retrieved before is applied once"), "{said}");
    let c = Mount::start(&emu.endpoint(), cache_b.path(), ARGS);
    let v = c.path(VAULT);
    let _ = std::fs::read_dir(&v).unwrap().count();
    assert!(
        wait_until(Duration::from_secs(60), || {
            emu.complete_all_jobs();
            tree(&v) == before
        }),
        "the rebuilt catalog did not get the tree back: {:#?}; log:\n{}",
        tree(&v),
        c.log_text()
    );
    c.unmount();
}

#[test]
fn snapshots_go_up_by_themselves_unless_turned_off() {
    if !fuse_available() {
        return;
    }
    let emu = Emulator::start();
    emu.create_vault(VAULT);
    let cache = tempfile::tempdir().unwrap();
    let mut mount = Mount::start(&emu.endpoint(), cache.path(), ARGS);
    let v = mount.path(VAULT);
    std::fs::create_dir(v.join("d")).unwrap();
    std::fs::write(v.join("d/f"), b"data").unwrap();
    sync_wait(&v);
    std::thread::sleep(Duration::from_secs(3));
    assert!(snapshot_archives(&emu).is_empty(), "off takes none");
    let jobs = std::fs::read_to_string(v.join(".jobs")).unwrap();
    assert!(!jobs.contains("\"Snapshot\""), "{jobs}");

    mount.remount(
        &emu.endpoint(),
        &["--write-back-delay", "0s", "--snapshot-interval", "1s"],
    );
    assert!(
        wait_until(Duration::from_secs(30), || snapshot_archives(&emu).len()
            == 1),
        "no snapshot went up; log:\n{}",
        mount.log_text()
    );
    // Unchanged, none more; changed, another.
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(snapshot_archives(&emu).len(), 1);
    sh("chmod 700 d", &mount.path(VAULT));
    assert!(
        wait_until(Duration::from_secs(30), || snapshot_archives(&emu).len()
            == 2),
        "a change took no snapshot; log:\n{}",
        mount.log_text()
    );
    // Never a file.
    let t = tree(&mount.path(VAULT));
    assert_eq!(t.keys().collect::<Vec<_>>(), ["d", "d/f"]);
    mount.unmount();
}
