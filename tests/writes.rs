//! Writing into vaults through a real mount over the Glacier emulator: `cp -r`, `rsync -a`,
//! `mv`, overwrite, `rm`, and `glacierfs sync --wait`. Every file must become exactly one
//! archive with the right bytes, tree hash and mt2 description, and read back without a job.
// A test fails by panicking, so unwrap and expect are how it says what went wrong.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, UNIX_EPOCH};

use glacierfs::codec::names;
use support::emulator::Emulator;
use support::mount::{fuse_available, sync_wait, wait_until, Mount};

const VAULT: &str = "backup";
const MIB: usize = 1 << 20;

/// A source tree: relative path → content.
fn source_tree(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    let mut files = BTreeMap::new();
    let special = [0, 1, MIB - 1, MIB, MIB + 1, 3 * MIB + 1];
    for (i, size) in special.iter().enumerate() {
        files.insert(format!("sizes/size-{i}.bin"), pattern(*size, i as u8));
    }
    let names = [
        "Ünïcødé",
        "日本語",
        "emoji-🎉",
        "spaces in name",
        "dash-and_underscore",
    ];
    let mut i = 0;
    while files.len() < 200 {
        let dir_name = names[i % names.len()];
        let path = format!(
            "nested/{dir_name}/level-{}/file-{i}-{}.txt",
            i % 3,
            names[(i / 5) % names.len()]
        );
        files.insert(path, pattern(1 + (i * 7919) % 20_000, i as u8));
        i += 1;
    }
    for (path, data) in &files {
        let p = dir.join(path);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(&p, data).unwrap();
    }
    files
}

fn pattern(size: usize, seed: u8) -> Vec<u8> {
    (0..size)
        .map(|k| (k as u8).wrapping_mul(31).wrapping_add(seed))
        .collect()
}

fn mtime_secs(p: &Path) -> i64 {
    std::fs::metadata(p)
        .unwrap()
        .modified()
        .unwrap()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// Every non-empty file under `prefix` in the mount is exactly one archive in the emulator,
/// with its bytes, its tree hash and an mt2 description naming its path and mtime.
fn check_archived(emu: &Emulator, mount: &Mount, prefix: &str, files: &BTreeMap<String, Vec<u8>>) {
    let archives = emu.archives(VAULT);
    let mut by_path: BTreeMap<String, Vec<_>> = BTreeMap::new();
    for a in &archives {
        let d = names::decode(&a.description);
        assert_eq!(d.format, names::Format::Mt2, "not mt2: {}", a.description);
        by_path
            .entry(d.path.clone())
            .or_default()
            .push((a.clone(), d.mtime));
    }
    for (rel, data) in files {
        let path = format!("{prefix}{rel}");
        let local = mount.path(VAULT).join(&path);
        assert_eq!(
            &std::fs::read(&local).unwrap(),
            data,
            "{path} reads back different"
        );
        if data.is_empty() {
            assert!(
                !by_path.contains_key(&path),
                "an empty file became an archive"
            );
            continue;
        }
        let entries = by_path
            .get(&path)
            .unwrap_or_else(|| panic!("{path} has no archive"));
        assert_eq!(entries.len(), 1, "{path} has {} archives", entries.len());
        let (a, mtime) = &entries[0];
        assert_eq!(
            emu.archive_data(VAULT, &a.id).unwrap(),
            *data,
            "{path}: archive bytes"
        );
        let expected_hash =
            glacierfs::codec::treehash::to_hex(&glacierfs::codec::treehash::tree_hash(data));
        assert_eq!(a.tree_hash, expected_hash, "{path}: tree hash");
        assert_eq!(
            *mtime,
            Some(mtime_secs(&local)),
            "{path}: mtime in the description"
        );
        assert_eq!(
            support::xattr(&local, "user.glacier.archive_id").as_deref(),
            Ok(a.id.as_str()),
            "{path}: archive id"
        );
    }
    let expected = files.values().filter(|d| !d.is_empty()).count();
    assert_eq!(archives.len(), expected, "archives beyond one per file");
}

/// A mount with small parts, and a short write-back delay: long enough for a tool's rename
/// after close to come first (as with the default), short enough for tests; `sync --wait`
/// skips it anyway.
fn mount_for_writes(emu: &Emulator, cache: &Path, extra: &[&str]) -> Mount {
    let mut args = vec!["--part-size", "1MiB", "--write-back-delay", "2s"];
    args.extend_from_slice(extra);
    Mount::start(&emu.endpoint(), cache, &args)
}

#[test]
fn cp_r_of_200_files_gives_one_verified_archive_each() {
    if !fuse_available() {
        return;
    }
    let emu = Emulator::start();
    emu.create_vault(VAULT);
    let src = tempfile::tempdir().unwrap();
    let files = source_tree(src.path());
    let cache = tempfile::tempdir().unwrap();
    let mount = mount_for_writes(&emu, cache.path(), &[]);
    let status = Command::new("cp")
        .arg("-r")
        .arg(src.path().join("."))
        .arg(mount.path(VAULT).join("copy"))
        .status()
        .unwrap();
    assert!(status.success());
    // Visible at once, with exact sizes.
    for (rel, data) in &files {
        let meta = std::fs::metadata(mount.path(VAULT).join("copy").join(rel)).unwrap();
        assert_eq!(meta.len(), data.len() as u64, "{rel}");
    }
    sync_wait(&mount.path(VAULT));
    check_archived(&emu, &mount, "copy/", &files);
    assert!(
        emu.jobs(VAULT).is_empty(),
        "reading back started a retrieval job"
    );
    assert!(
        emu.multipart_uploads(VAULT).is_empty(),
        "a multipart upload was left behind"
    );
}

#[test]
fn rsync_twice_then_mv() {
    if !fuse_available() {
        return;
    }
    let emu = Emulator::start();
    emu.create_vault(VAULT);
    let src = tempfile::tempdir().unwrap();
    let files: BTreeMap<String, Vec<u8>> = source_tree(src.path()).into_iter().take(40).collect();
    // Keep only the files this test wrote into its smaller source.
    let src2 = tempfile::tempdir().unwrap();
    for (rel, data) in &files {
        let p = src2.path().join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(&p, data).unwrap();
    }
    let cache = tempfile::tempdir().unwrap();
    let mount = mount_for_writes(&emu, cache.path(), &[]);
    let dest = mount.path(VAULT).join("dir");
    let run = |flags: &str| {
        let out = Command::new("rsync")
            .arg(flags)
            .arg(format!("{}/", src2.path().display()))
            .arg(format!("{}/", dest.display()))
            .output()
            .expect("rsync runs (scripts/test.sh installs it)");
        assert!(
            out.status.success(),
            "rsync {flags}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    run("-a");
    sync_wait(&dest);
    check_archived(&emu, &mount, "dir/", &files);
    let second = run("-ai");
    assert_eq!(
        second.trim(),
        "",
        "a second rsync found differences:\n{second}"
    );

    // mv of an archived file is catalog-only, visible at once, and keeps the content.
    let (rel, data) = files.iter().find(|(_, d)| d.len() > 10).unwrap();
    let moved = mount.path(VAULT).join("moved.bin");
    std::fs::rename(dest.join(rel), &moved).unwrap();
    assert!(!dest.join(rel).exists());
    assert_eq!(&std::fs::read(&moved).unwrap(), data);
    assert_eq!(
        emu.archives(VAULT).len(),
        files.values().filter(|d| !d.is_empty()).count()
    );
}

/// Sets a path's mtime (and atime) to `secs`, as rsync and `cp -p` do after closing a file.
fn set_mtime(path: &Path, secs: i64) {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(path.as_os_str().as_bytes()).unwrap();
    let t = libc::timespec {
        tv_sec: secs,
        tv_nsec: 0,
    };
    let times = [t, t];
    // SAFETY: `c` is a NUL-terminated path and `times` two timespecs, both alive for the call.
    let rc = unsafe { libc::utimensat(libc::AT_FDCWD, c.as_ptr(), times.as_ptr(), 0) };
    assert_eq!(rc, 0, "utimensat {}", std::io::Error::last_os_error());
}

/// close(2) does not wait for the daemon to see the release, so a tool that sets the mtime
/// right after closing (rsync's temporary file, then rename) has its setattr answered while
/// the release is still recording the last write's time: the mtime set must win every time,
/// or a second `rsync -a` copies the file again. Several writers at once, as on a busy
/// machine, so the two meet often; checked after the renames (which make the kernel ask the
/// daemon again) and after a remount (the catalog itself).
#[test]
fn mtime_set_right_after_close_is_kept() {
    if !fuse_available() {
        return;
    }
    let emu = Emulator::start();
    emu.create_vault(VAULT);
    let cache = tempfile::tempdir().unwrap();
    let args = ["--write-back-delay", "1h"];
    let mount = Mount::start(&emu.endpoint(), cache.path(), &args);
    let dir = mount.path(VAULT).join("times");
    std::fs::create_dir(&dir).unwrap();
    const THREADS: i64 = 4;
    const FILES: i64 = 150;
    let expected = |t: i64, i: i64| 1_000_000_000 + t * 10_000 + i;
    std::thread::scope(|s| {
        for t in 0..THREADS {
            let dir = &dir;
            s.spawn(move || {
                for i in 0..FILES {
                    let tmp = dir.join(format!(".f-{t}-{i}.tmp"));
                    std::fs::write(&tmp, pattern(100 + i as usize, t as u8)).unwrap();
                    set_mtime(&tmp, expected(t, i));
                    std::fs::rename(&tmp, dir.join(format!("f-{t}-{i}"))).unwrap();
                }
            });
        }
    });
    let wrong = |dir: &Path| -> Vec<String> {
        let mut wrong = Vec::new();
        for t in 0..THREADS {
            for i in 0..FILES {
                let got = mtime_secs(&dir.join(format!("f-{t}-{i}")));
                if got != expected(t, i) {
                    wrong.push(format!("f-{t}-{i}: {got} instead of {}", expected(t, i)));
                }
            }
        }
        wrong
    };
    let seen = wrong(&dir);
    assert!(seen.is_empty(), "mtimes lost through the mount: {seen:?}");
    mount.unmount();
    let mount = Mount::start(&emu.endpoint(), cache.path(), &args);
    let kept = wrong(&mount.path(VAULT).join("times"));
    assert!(kept.is_empty(), "mtimes lost in the catalog: {kept:?}");
}

#[test]
fn sync_wait_returns_once_the_archive_is_in_the_vault() {
    if !fuse_available() {
        return;
    }
    let emu = Emulator::start();
    emu.create_vault(VAULT);
    let cache = tempfile::tempdir().unwrap();
    let mount = Mount::start(&emu.endpoint(), cache.path(), &["--write-back-delay", "1h"]);
    let file = mount.path(VAULT).join("report.txt");
    std::fs::write(&file, b"quarterly numbers").unwrap();
    assert_eq!(
        support::xattr(&file, "user.glacier.state").as_deref(),
        Ok("staged")
    );
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        emu.archives(VAULT).is_empty(),
        "uploaded before the write-back delay"
    );
    sync_wait(&file);
    let archives = emu.archives(VAULT);
    assert_eq!(archives.len(), 1);
    assert_eq!(
        emu.archive_data(VAULT, &archives[0].id).unwrap(),
        b"quarterly numbers"
    );
    assert_eq!(
        support::xattr(&file, "user.glacier.state").as_deref(),
        Ok("cached")
    );
}

#[test]
fn overwrite_and_rm_delete_replaced_archives() {
    if !fuse_available() {
        return;
    }
    let emu = Emulator::start();
    emu.create_vault(VAULT);
    let cache = tempfile::tempdir().unwrap();
    let mount = mount_for_writes(&emu, cache.path(), &[]);
    let file: PathBuf = mount.path(VAULT).join("doc.txt");
    std::fs::write(&file, b"first version").unwrap();
    sync_wait(&file);
    let first = emu.archives(VAULT)[0].id.clone();

    std::fs::write(&file, b"second, longer version").unwrap();
    sync_wait(&file);
    assert!(
        wait_until(Duration::from_secs(20), || {
            let a = emu.archives(VAULT);
            a.len() == 1 && a[0].id != first
        }),
        "the replaced archive was not deleted: {:?}",
        emu.archives(VAULT)
            .iter()
            .map(|a| &a.description)
            .collect::<Vec<_>>()
    );
    assert_eq!(
        emu.archive_data(VAULT, &emu.archives(VAULT)[0].id).unwrap(),
        b"second, longer version"
    );

    // rsync's pattern: a temporary name, then a rename over the old file; one upload.
    let tmp = mount.path(VAULT).join(".doc.txt.AbC123");
    std::fs::write(&tmp, b"third version").unwrap();
    std::fs::rename(&tmp, &file).unwrap();
    sync_wait(&file);
    assert!(wait_until(Duration::from_secs(20), || emu
        .archives(VAULT)
        .len()
        == 1));
    let a = &emu.archives(VAULT)[0];
    assert_eq!(emu.archive_data(VAULT, &a.id).unwrap(), b"third version");
    assert_eq!(names::decode(&a.description).path, "doc.txt");

    std::fs::remove_file(&file).unwrap();
    assert!(!file.exists());
    assert!(
        wait_until(Duration::from_secs(20), || emu.archives(VAULT).is_empty()),
        "rm did not delete the archive"
    );
}

#[test]
fn refused_writes_get_the_documented_errors() {
    if !fuse_available() {
        return;
    }
    let emu = Emulator::start();
    emu.create_vault(VAULT);
    emu.create_vault("other");
    let cache = tempfile::tempdir().unwrap();
    let mount = mount_for_writes(&emu, cache.path(), &[]);
    let v = mount.path(VAULT);
    let errno = |r: std::io::Result<()>| r.unwrap_err().raw_os_error().unwrap();

    // A path whose description could not fit is refused when it is named.
    let long = v
        .join("d".repeat(250))
        .join("e".repeat(250))
        .join("f".repeat(250));
    std::fs::create_dir_all(long.parent().unwrap().parent().unwrap()).unwrap();
    std::fs::create_dir(long.parent().unwrap()).unwrap();
    assert_eq!(errno(std::fs::write(&long, b"x")), libc::ENAMETOOLONG);
    // ... including for staged files under a directory renamed to a longer path.
    std::fs::create_dir(v.join("short")).unwrap();
    std::fs::write(v.join("short").join("g".repeat(250)), b"staged").unwrap();
    let deep = v.join("h".repeat(250)).join("i".repeat(250));
    std::fs::create_dir_all(deep.parent().unwrap()).unwrap();
    assert_eq!(
        errno(std::fs::rename(v.join("short"), &deep)),
        libc::ENAMETOOLONG
    );

    std::fs::write(v.join("a.txt"), b"a").unwrap();
    assert_eq!(
        errno(std::fs::rename(
            v.join("a.txt"),
            mount.path("other").join("a.txt")
        )),
        libc::EXDEV
    );
    assert_eq!(
        errno(std::fs::rename(mount.path("other"), mount.path("renamed"))),
        libc::EPERM
    );
    assert_eq!(
        errno(std::fs::hard_link(v.join("a.txt"), v.join("b.txt"))),
        libc::EPERM
    );
    // Symlinks and fifos are catalog entries (tests/posix.rs), and never archives.
    std::os::unix::fs::symlink("a.txt", v.join("c.txt")).unwrap();
    let fifo = std::ffi::CString::new(v.join("fifo").to_str().unwrap()).unwrap();
    // SAFETY: `fifo` is a valid C string.
    assert_eq!(unsafe { libc::mkfifo(fifo.as_ptr(), 0o644) }, 0);
    // Empty files and directories stay in the catalog only.
    std::fs::write(v.join("empty"), b"").unwrap();
    std::fs::create_dir(v.join("empty-dir")).unwrap();
    sync_wait(&v);
    assert!(emu.archives(VAULT).iter().all(|a| {
        let path = names::decode(&a.description).path;
        !path.starts_with("empty") && path != "c.txt" && path != "fifo"
    }));
    assert!(v.join("empty").exists() && v.join("empty-dir").is_dir());
    drop(mount);

    let ro = Mount::start(&emu.endpoint(), cache.path(), &["--read-only"]);
    let v = ro.path(VAULT);
    assert_eq!(errno(std::fs::write(v.join("new"), b"x")), libc::EROFS);
    assert_eq!(errno(std::fs::create_dir(v.join("newdir"))), libc::EROFS);
    assert_eq!(errno(std::fs::remove_file(v.join("a.txt"))), libc::EROFS);
}

#[test]
fn a_full_cache_disk_gives_enospc_and_loses_nothing_staged() {
    if !fuse_available() {
        return;
    }
    let emu = Emulator::start();
    emu.create_vault(VAULT);
    let disk = tempfile::tempdir().unwrap();
    let ok = Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=6m", "tmpfs"])
        .arg(disk.path())
        .status()
        .unwrap()
        .success();
    assert!(ok, "mounting a small tmpfs for the cache failed");
    struct Unmount<'a>(&'a Path);
    impl Drop for Unmount<'_> {
        fn drop(&mut self) {
            let _ = Command::new("umount").arg("-l").arg(self.0).status();
        }
    }
    let _tmpfs = Unmount(disk.path());
    let cache = disk.path().join("cache");
    let mount = Mount::start(&emu.endpoint(), &cache, &["--write-back-delay", "1h"]);
    let kept = mount.path(VAULT).join("kept.bin");
    let kept_data = pattern(MIB, 3);
    std::fs::write(&kept, &kept_data).unwrap();
    let big = mount.path(VAULT).join("too-big.bin");
    let err = std::fs::write(&big, pattern(16 * MIB, 4)).unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::ENOSPC), "{err}");
    std::fs::remove_file(&big).unwrap();
    assert_eq!(
        std::fs::read(&kept).unwrap(),
        kept_data,
        "staged data was damaged"
    );
    sync_wait(&kept);
    let archives = emu.archives(VAULT);
    assert_eq!(archives.len(), 1);
    assert_eq!(emu.archive_data(VAULT, &archives[0].id).unwrap(), kept_data);
}

#[test]
fn unlink_during_an_upload_aborts_it() {
    use support::emulator::{FaultKind, Op};
    if !fuse_available() {
        return;
    }
    let emu = Emulator::start();
    emu.create_vault(VAULT);
    // Every part stalls for a while: the upload is surely under way when the file goes.
    emu.set_stall(Duration::from_secs(2));
    emu.fail_next(Op::UploadPart, FaultKind::Timeout, 100);
    let cache = tempfile::tempdir().unwrap();
    let mount = Mount::start(
        &emu.endpoint(),
        cache.path(),
        &["--part-size", "1MiB", "--write-back-delay", "0s"],
    );
    let file = mount.path(VAULT).join("big.bin");
    std::fs::write(&file, pattern(3 * MIB, 1)).unwrap();
    assert!(
        wait_until(Duration::from_secs(20), || !emu
            .multipart_uploads(VAULT)
            .is_empty()),
        "the upload never started"
    );
    std::fs::remove_file(&file).unwrap();
    emu.clear_faults();
    assert!(
        wait_until(Duration::from_secs(30), || emu
            .multipart_uploads(VAULT)
            .is_empty()),
        "the multipart upload of a deleted file was left behind; log:\n{}",
        mount.log_text()
    );
    // Left alone, the upload would have finished within a few seconds of the faults ending.
    std::thread::sleep(Duration::from_secs(5));
    assert_eq!(
        emu.stats().requests_for(Op::CompleteMultipartUpload),
        0,
        "the upload went on"
    );
    assert!(
        emu.archives(VAULT).is_empty(),
        "a deleted file became an archive"
    );
}

/// `dd` of `count` blocks of `bs` zeros into `path` at block `seek`, without truncating it: a
/// write into the middle of a file, as the daemon (or the kernel's cache) must take it.
fn dd_zeros(path: &Path, bs: usize, count: usize, seek: usize) {
    let status = Command::new("dd")
        .arg("if=/dev/zero")
        .arg(format!("of={}", path.display()))
        .args([
            format!("bs={bs}"),
            format!("count={count}"),
            format!("seek={seek}"),
        ])
        .args(["conv=notrunc", "status=none"])
        .status()
        .unwrap();
    assert!(status.success());
}

/// `--no-passthrough`: the daemon serves every byte itself (the path unprivileged mounts take),
/// and writes, overwrites in place, reads and uploads give the same bytes as with passthrough.
#[test]
fn without_passthrough_the_daemon_serves_the_same_bytes() {
    if !fuse_available() {
        return;
    }
    let emu = Emulator::start();
    emu.create_vault(VAULT);
    let cache = tempfile::tempdir().unwrap();
    let mut mount = mount_for_writes(&emu, cache.path(), &["--no-passthrough"]);
    let mut files = BTreeMap::new();
    for (i, size) in [1, MIB + 1, 3 * MIB + 1].into_iter().enumerate() {
        let rel = format!("plain/file-{i}.bin");
        let data = pattern(size, 40 + i as u8);
        std::fs::create_dir_all(mount.path(VAULT).join("plain")).unwrap();
        std::fs::write(mount.path(VAULT).join(&rel), &data).unwrap();
        files.insert(rel, data);
    }
    // dd into the middle of a file without truncating it: the daemon writes at the offset.
    let target = mount.path(VAULT).join("plain/file-2.bin");
    dd_zeros(&target, 4096, 3, 5);
    let data = files.get_mut("plain/file-2.bin").unwrap();
    data[5 * 4096..8 * 4096].fill(0);
    for (rel, data) in &files {
        assert_eq!(
            &std::fs::read(mount.path(VAULT).join(rel)).unwrap(),
            data,
            "{rel}"
        );
    }
    // The page cache is kept across opens: an overwrite must still show at once.
    let first = mount.path(VAULT).join("plain/file-1.bin");
    let replaced = pattern(MIB / 2, 99);
    std::fs::write(&first, &replaced).unwrap();
    assert_eq!(std::fs::read(&first).unwrap(), replaced);
    files.insert("plain/file-1.bin".into(), replaced);

    // The kernel's writeback cache holds written data, size and mtime, and hands all three to
    // the daemon by the time the file is closed: a new mount (a kernel that holds nothing)
    // shows what the old one showed, to the nanosecond.
    assert!(
        mount
            .log_text()
            .contains("the kernel's writeback cache is on"),
        "{}",
        mount.log_text()
    );
    let args = [
        "--part-size",
        "1MiB",
        "--write-back-delay",
        "2s",
        "--no-passthrough",
    ];
    mount.remount(&emu.endpoint(), &args);
    // An unaligned write into a page this kernel does not hold: it reads the page first.
    let odd = mount.path(VAULT).join("plain/file-2.bin");
    dd_zeros(&odd, 100, 1, 77);
    let data = files.get_mut("plain/file-2.bin").unwrap();
    data[7700..7800].fill(0);
    let seen = std::fs::metadata(&odd).unwrap();
    assert_eq!(seen.len(), data.len() as u64);
    mount.remount(&emu.endpoint(), &args);
    let after = std::fs::metadata(&odd).unwrap();
    assert_eq!(after.len(), seen.len());
    assert_eq!(after.modified().unwrap(), seen.modified().unwrap());
    assert_eq!(&std::fs::read(&odd).unwrap(), data);
    sync_wait(&mount.path(VAULT));
    check_archived(&emu, &mount, "", &files);
    assert!(
        mount
            .log_text()
            .contains("FUSE passthrough is off (--no-passthrough)"),
        "{}",
        mount.log_text()
    );
}

/// A file unlinked while open stays usable through its descriptor, as POSIX has it: fstat,
/// ftruncate, reads and writes work; at the last close its data is dropped, never uploaded.
#[test]
fn a_file_unlinked_while_open_stays_usable_until_closed() {
    if !fuse_available() {
        return;
    }
    let emu = Emulator::start();
    emu.create_vault(VAULT);
    let cache = tempfile::tempdir().unwrap();
    let mount = mount_for_writes(&emu, cache.path(), &[]);
    let script = r#"
import os, sys
p = sys.argv[1]
fd = os.open(p, os.O_RDWR | os.O_CREAT, 0o644)
os.write(fd, b"hello world")
os.unlink(p)
assert os.fstat(fd).st_size == 11, os.fstat(fd)
os.ftruncate(fd, 5)
assert os.fstat(fd).st_size == 5, os.fstat(fd)
os.lseek(fd, 0, 0)
assert os.read(fd, 100) == b"hello"
os.close(fd)
assert not os.path.exists(p)
"#;
    let out = Command::new("python3")
        .args(["-c", script])
        .arg(mount.path(VAULT).join("scratch.tmp"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}\nlog:\n{}",
        String::from_utf8_lossy(&out.stderr),
        mount.log_text()
    );
    std::fs::write(mount.path(VAULT).join("kept.txt"), b"kept").unwrap();
    sync_wait(&mount.path(VAULT));
    let archives = emu.archives(VAULT);
    assert_eq!(archives.len(), 1, "only kept.txt may be archived");
    assert_eq!(names::decode(&archives[0].description).path, "kept.txt");
}
