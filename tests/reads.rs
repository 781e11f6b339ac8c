//! Reading archives through a real mount over the Glacier emulator: EAGAIN at open for cold
//! files (in every common tool), job reuse, `.jobs`, verified and resumable downloads, the LRU
//! cache, explicit retrieval with its budget, the Expedited fallback `--tier` may name, and
//! hidden control files.
// A test fails by panicking, so unwrap and expect are how it says what went wrong.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;

use glacierfs::codec::timefmt::format_compact;
use support::emulator::Emulator;
use support::mount::{aws_env, binary, fuse_available, wait_until, Mount};
use support::{walk, xattr};

const VAULT: &str = "archive";
const MIB: usize = 1 << 20;

fn mt2(path: &str) -> String {
    let json = format!(
        r#"{{"filename":"{path}","mtime":"{}"}}"#,
        format_compact(1_600_000_000)
    );
    format!("mt2 {}", URL_SAFE_NO_PAD.encode(json))
}

fn pattern(size: usize, seed: u8) -> Vec<u8> {
    (0..size)
        .map(|k| (k as u8).wrapping_mul(13).wrapping_add(seed))
        .collect()
}

/// A vault holding `files` (path → bytes), inventoried, mounted, and loaded into the catalog.
fn setup(emu: &Emulator, files: &BTreeMap<String, Vec<u8>>, cache: &Path, extra: &[&str]) -> Mount {
    emu.create_vault(VAULT);
    for (path, data) in files {
        emu.put_archive(VAULT, &mt2(path), data, None);
    }
    emu.take_inventory(VAULT);
    let mount = Mount::start(&emu.endpoint(), cache, extra);
    load(emu, &mount, files.len());
    mount
}

fn load(emu: &Emulator, mount: &Mount, files: usize) {
    let vault = mount.path(VAULT);
    let _ = std::fs::read_dir(&vault).map(|d| d.count());
    let loaded = wait_until(Duration::from_secs(60), || {
        emu.complete_all_jobs();
        walk(&vault).values().filter(|v| v.is_some()).count() >= files
    });
    assert!(loaded, "the vault never loaded; log:\n{}", mount.log_text());
}

fn retrievals(emu: &Emulator) -> usize {
    emu.jobs(VAULT)
        .iter()
        .filter(|j| j.archive_id.is_some())
        .count()
}

fn jobs_lines(dir: &Path) -> Vec<serde_json::Value> {
    let text = std::fs::read_to_string(dir.join(".jobs")).expect(".jobs opens by name");
    text.lines()
        .map(|l| serde_json::from_str(l).expect("JSON Lines"))
        .collect()
}

fn assert_eagain(what: &str, out: std::process::Output) {
    assert!(!out.status.success(), "{what} succeeded on a cold file");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("Resource temporarily unavailable"),
        "{what}: {err}"
    );
}

#[test]
fn cold_files_fail_at_open_in_every_tool_then_read_back_exact() {
    if !fuse_available() {
        return;
    }
    let emu = Emulator::start();
    let data = pattern(3 * MIB + 5, 1);
    let files: BTreeMap<String, Vec<u8>> = [("docs/report.pdf".to_string(), data.clone())].into();
    let cache = tempfile::tempdir().unwrap();
    let mount = setup(&emu, &files, cache.path(), &[]);
    let file = mount.path(VAULT).join("docs/report.pdf");
    assert_eq!(xattr(&file, "user.glacier.state").as_deref(), Ok("cold"));

    let out_dir = tempfile::tempdir().unwrap();
    let copy = out_dir.path().join("copy");
    assert_eagain("cat", Command::new("cat").arg(&file).output().unwrap());
    assert_eagain(
        "dd",
        Command::new("dd")
            .arg(format!("if={}", file.display()))
            .arg(format!("of={}", copy.display()))
            .output()
            .unwrap(),
    );
    assert_eagain(
        "cp",
        Command::new("cp").arg(&file).arg(&copy).output().unwrap(),
    );
    for (what, script) in [
        (
            "python open().read()",
            "import sys; open(sys.argv[1], 'rb').read()",
        ),
        (
            "shutil.copy",
            "import sys, shutil; shutil.copy(sys.argv[1], sys.argv[2])",
        ),
    ] {
        let out = Command::new("python3")
            .args(["-c", script])
            .arg(&file)
            .arg(&copy)
            .output()
            .unwrap();
        assert!(!out.status.success(), "{what} succeeded on a cold file");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains("Resource temporarily unavailable") || err.contains("Errno 11"),
            "{what}: {err}"
        );
    }
    assert!(
        std::fs::metadata(&copy)
            .map(|m| m.len() == 0)
            .unwrap_or(true),
        "a tool wrote a copy"
    );
    let empty_copy = copy.exists();
    assert!(!empty_copy || std::fs::read(&copy).unwrap().is_empty());

    // One job, shown in .jobs with its path; more opens start no more.
    assert!(
        wait_until(Duration::from_secs(10), || retrievals(&emu) == 1),
        "no retrieval job"
    );
    let _ = std::fs::read(&file);
    assert_eq!(retrievals(&emu), 1, "a second open started another job");
    assert_eq!(
        xattr(&file, "user.glacier.state").as_deref(),
        Ok("retrieving")
    );
    let job_id = xattr(&file, "user.glacier.job_id").expect("job id while retrieving");
    let lines = jobs_lines(&mount.path(VAULT));
    let job = lines
        .iter()
        .find(|l| l["Action"] == "ArchiveRetrieval")
        .unwrap_or_else(|| panic!("no ArchiveRetrieval in .jobs: {lines:#?}"));
    assert_eq!(job["StatusCode"], "InProgress");
    assert_eq!(job["Path"], "docs/report.pdf");
    assert_eq!(job["JobId"], job_id.as_str());
    let root_lines = jobs_lines(&mount.path(""));
    assert!(root_lines
        .iter()
        .any(|l| l["Path"] == "archive/docs/report.pdf"));

    emu.complete_all_jobs();
    assert!(
        wait_until(Duration::from_secs(30), || std::fs::read(&file).is_ok()),
        "never became readable; log:\n{}",
        mount.log_text()
    );
    assert_eq!(std::fs::read(&file).unwrap(), data);
    assert_eq!(xattr(&file, "user.glacier.state").as_deref(), Ok("cached"));

    // A second mount, with a catalog of its own, reuses the finished job.
    let other_cache = tempfile::tempdir().unwrap();
    let second = Mount::start(&emu.endpoint(), other_cache.path(), &[]);
    load(&emu, &second, 1);
    let again = second.path(VAULT).join("docs/report.pdf");
    let _ = std::fs::read(&again);
    assert!(
        wait_until(Duration::from_secs(30), || std::fs::read(&again).is_ok()),
        "the second mount never read it; log:\n{}",
        second.log_text()
    );
    assert_eq!(std::fs::read(&again).unwrap(), data);
    assert_eq!(
        retrievals(&emu),
        1,
        "the second mount started a job of its own"
    );
}

#[test]
fn corrupted_output_is_never_served() {
    if !fuse_available() {
        return;
    }
    let emu = Emulator::start();
    let files: BTreeMap<String, Vec<u8>> =
        [("bad.bin".to_string(), pattern(2 * MIB + 7, 2))].into();
    let cache = tempfile::tempdir().unwrap();
    let mount = setup(&emu, &files, cache.path(), &[]);
    let file = mount.path(VAULT).join("bad.bin");
    assert!(std::fs::read(&file).is_err());
    assert!(wait_until(Duration::from_secs(10), || retrievals(&emu) == 1));
    let job = emu
        .jobs(VAULT)
        .into_iter()
        .find(|j| j.archive_id.is_some())
        .unwrap();
    emu.corrupt_job_output(&job.id, true);
    emu.complete_all_jobs();
    let failed = wait_until(Duration::from_secs(60), || {
        std::fs::read(&file).err().and_then(|e| e.raw_os_error()) == Some(libc::EIO)
    });
    assert!(
        failed,
        "a corrupted retrieval was not refused with EIO; log:\n{}",
        mount.log_text()
    );
    let lines = jobs_lines(&mount.path(VAULT));
    let l = lines
        .iter()
        .find(|l| l["Action"] == "ArchiveRetrieval")
        .unwrap();
    assert_eq!(l["StatusCode"], "Failed");
    assert!(
        l["StatusMessage"]
            .as_str()
            .unwrap_or_default()
            .contains("tree hash"),
        "{l}"
    );
}

#[test]
fn the_lru_keeps_recent_reads_and_never_evicts_open_staged_or_unread_data() {
    if !fuse_available() {
        return;
    }
    let emu = Emulator::start();
    let files: BTreeMap<String, Vec<u8>> = (0..6)
        .map(|i| (format!("f{i}.bin"), pattern(5 * MIB, i as u8)))
        .collect();
    let cache = tempfile::tempdir().unwrap();
    let mount = setup(
        &emu,
        &files,
        cache.path(),
        &["--cache-size", "10MiB", "--write-back-delay", "1h"],
    );
    let v = mount.path(VAULT);
    let out = aws_env(&mut Command::new(binary()))
        .arg("retrieve")
        .arg(&v)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let state = |f: &str| xattr(&v.join(f), "user.glacier.state").unwrap_or_default();
    let all_cached = wait_until(Duration::from_secs(60), || {
        emu.complete_all_jobs();
        files.keys().all(|f| state(f) == "cached")
    });
    assert!(
        all_cached,
        "retrievals did not finish; log:\n{}",
        mount.log_text()
    );
    // 30 MiB retrieved, none read yet: nothing may go, over the limit or not.
    std::thread::sleep(Duration::from_secs(2));
    assert!(
        files.keys().all(|f| state(f) == "cached"),
        "unread data was evicted"
    );

    let staged = v.join("staged.bin");
    std::fs::write(&staged, pattern(8 * MIB, 9)).unwrap();
    let held = std::fs::File::open(v.join("f0.bin")).unwrap();
    for (name, data) in &files {
        assert_eq!(&std::fs::read(v.join(name)).unwrap(), data);
        std::thread::sleep(Duration::from_millis(50));
    }
    let settled = wait_until(Duration::from_secs(20), || {
        state("f1.bin") == "cold" && state("f2.bin") == "cold"
    });
    assert!(
        settled,
        "the oldest reads were not evicted: {:?}",
        files.keys().map(|f| (f, state(f))).collect::<Vec<_>>()
    );
    assert_eq!(state("f0.bin"), "cached", "an open file was evicted");
    assert_eq!(state("f5.bin"), "cached", "the newest read was evicted");
    assert_eq!(
        std::fs::read(&staged).unwrap(),
        pattern(8 * MIB, 9),
        "staged data was evicted"
    );
    drop(held);
}

#[test]
fn explicit_retrieval_of_a_subtree_and_the_budget() {
    if !fuse_available() {
        return;
    }
    let emu = Emulator::start();
    let mut files: BTreeMap<String, Vec<u8>> = (0..100)
        .map(|i| {
            (
                format!("tree/d{}/f{i}.txt", i % 4),
                pattern(100 + i, i as u8),
            )
        })
        .collect();
    files.insert("big.bin".into(), pattern(2 * MIB, 7));
    let cache = tempfile::tempdir().unwrap();
    let mount = setup(&emu, &files, cache.path(), &["--retrieval-budget", "1MiB"]);
    let tree = mount.path(VAULT).join("tree");
    let out = aws_env(&mut Command::new(binary()))
        .args(["retrieve", "--tier", "bulk"])
        .arg(&tree)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    let bytes: usize = files
        .iter()
        .filter(|(k, _)| k.starts_with("tree/"))
        .map(|(_, d)| d.len())
        .sum();
    assert!(
        text.contains(&format!("100 archive(s), {bytes} bytes, tier Bulk")),
        "{text}"
    );
    assert!(
        wait_until(Duration::from_secs(30), || retrievals(&emu) == 100),
        "{} jobs",
        retrievals(&emu)
    );
    emu.complete_all_jobs();
    let cached = wait_until(Duration::from_secs(90), || {
        files.keys().filter(|k| k.starts_with("tree/")).all(|k| {
            xattr(&mount.path(VAULT).join(k), "user.glacier.state").as_deref() == Ok("cached")
        })
    });
    assert!(
        cached,
        "not every explicit retrieval was cached; log:\n{}",
        mount.log_text()
    );
    for (k, d) in files.iter().filter(|(k, _)| k.starts_with("tree/")) {
        assert_eq!(&std::fs::read(mount.path(VAULT).join(k)).unwrap(), d);
    }
    // Opening a 2 MiB archive would pass the 1 MiB budget for automatic retrievals.
    let err = std::fs::read(mount.path(VAULT).join("big.bin")).unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::EDQUOT));
    assert_eq!(retrievals(&emu), 100, "the refused open started a job");
}

#[test]
fn no_auto_retrieve_starts_no_job() {
    if !fuse_available() {
        return;
    }
    let emu = Emulator::start();
    let files: BTreeMap<String, Vec<u8>> = [("x.bin".to_string(), pattern(1000, 1))].into();
    let cache = tempfile::tempdir().unwrap();
    let mount = setup(&emu, &files, cache.path(), &["--no-auto-retrieve"]);
    let err = std::fs::read(mount.path(VAULT).join("x.bin")).unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::EAGAIN));
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(retrievals(&emu), 0);
}

#[test]
fn control_files_are_hidden_and_rsync_delete_leaves_them_alone() {
    if !fuse_available() {
        return;
    }
    let emu = Emulator::start();
    let files: BTreeMap<String, Vec<u8>> = [("old.txt".to_string(), b"old".to_vec())].into();
    let cache = tempfile::tempdir().unwrap();
    let mount = setup(&emu, &files, cache.path(), &[]);
    let v = mount.path(VAULT);
    let ls = Command::new("ls").arg("-a").arg(&v).output().unwrap();
    let listing = String::from_utf8_lossy(&ls.stdout);
    assert!(
        !listing.contains(".jobs") && !listing.contains(".lock"),
        "{listing}"
    );
    assert!(v.join(".jobs").exists(), ".jobs opens by name");
    let src = tempfile::tempdir().unwrap();
    std::fs::write(src.path().join("new.txt"), b"new").unwrap();
    let out = Command::new("rsync")
        .args(["-a", "--delete"])
        .arg(format!("{}/", src.path().display()))
        .arg(format!("{}/", v.display()))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "rsync --delete: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!v.join("old.txt").exists() && v.join("new.txt").exists());
    // Writes to .jobs are commands; anything else is refused.
    std::fs::write(v.join(".jobs"), b"inventory\n").unwrap();
    let bad = std::fs::write(v.join(".jobs"), b"format c:\n").unwrap_err();
    assert_eq!(bad.raw_os_error(), Some(libc::EINVAL));
}

/// The verified prefix the catalog records for the download in progress, if any.
fn verified_prefix(cache: &Path) -> Option<i64> {
    let db = rusqlite::Connection::open_with_flags(
        cache.join("catalog.db"),
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
    )
    .ok()?;
    db.query_row("SELECT verified FROM downloads", [], |r| r.get(0))
        .ok()
}

#[test]
fn a_download_cut_off_by_a_crash_resumes_from_the_verified_bytes() {
    if !fuse_available() {
        return;
    }
    let emu = Emulator::start();
    let data = pattern(128 * MIB + 3, 5);
    let files: BTreeMap<String, Vec<u8>> = [("big.iso".to_string(), data.clone())].into();
    let cache = tempfile::tempdir().unwrap();
    let mut mount = setup(&emu, &files, cache.path(), &[]);
    let file = mount.path(VAULT).join("big.iso");
    assert!(std::fs::read(&file).is_err());
    assert!(wait_until(Duration::from_secs(10), || retrievals(&emu) == 1));
    let job = emu
        .jobs(VAULT)
        .into_iter()
        .find(|j| j.archive_id.is_some())
        .unwrap();
    emu.complete_all_jobs();
    // Kill once some of the download is verified, and before all of it is.
    let caught = wait_until(Duration::from_secs(60), || {
        verified_prefix(cache.path()).is_some_and(|v| v >= 8 * MIB as i64)
    });
    assert!(
        caught,
        "the download never got under way; log:\n{}",
        mount.log_text()
    );
    mount.kill();
    let verified = verified_prefix(cache.path()).expect("a download row survives the crash") as u64;
    assert!(
        verified < data.len() as u64,
        "the download finished before the kill"
    );
    let before = emu
        .stats()
        .job_output
        .get(&job.id)
        .cloned()
        .unwrap_or_default();

    mount.remount(&emu.endpoint(), &[]);
    assert!(
        wait_until(Duration::from_secs(60), || std::fs::read(&file).is_ok()),
        "never became readable after the restart; log:\n{}",
        mount.log_text()
    );
    assert_eq!(std::fs::read(&file).unwrap(), data);
    let after = emu
        .stats()
        .job_output
        .get(&job.id)
        .cloned()
        .unwrap_or_default();
    let resumed = &after.ranges[before.ranges.len()..];
    assert!(!resumed.is_empty());
    for (start, _) in resumed {
        assert!(
            *start >= verified,
            "re-requested {start}, below the verified {verified}"
        );
    }
    // The daemon may have verified (and recorded) a little more after the test looked.
    let re_requested = after.bytes_served - before.bytes_served;
    assert!(
        re_requested <= data.len() as u64 - verified,
        "{re_requested} bytes asked for again, more than the {} not verified",
        data.len() as u64 - verified
    );
    assert_eq!(retrievals(&emu), 1, "the restart started a new job");
}

#[test]
fn retrieve_commands_written_to_dot_jobs_start_jobs() {
    if !fuse_available() {
        return;
    }
    let emu = Emulator::start();
    let files: BTreeMap<String, Vec<u8>> = [
        ("a.bin".to_string(), pattern(100, 1)),
        ("d/b.bin".to_string(), pattern(200, 2)),
    ]
    .into();
    let cache = tempfile::tempdir().unwrap();
    let mount = setup(&emu, &files, cache.path(), &["--no-auto-retrieve"]);
    std::fs::write(mount.path(VAULT).join(".jobs"), b"retrieve a.bin\n").unwrap();
    std::fs::write(
        mount.path("").join(".jobs"),
        format!("retrieve {VAULT}/d bulk\n"),
    )
    .unwrap();
    assert!(
        wait_until(Duration::from_secs(10), || retrievals(&emu) == 2),
        "{} jobs",
        retrievals(&emu)
    );
    let mut tiers: Vec<String> = emu
        .jobs(VAULT)
        .into_iter()
        .filter(|j| j.archive_id.is_some())
        .map(|j| j.tier)
        .collect();
    tiers.sort();
    assert_eq!(tiers, vec!["Bulk".to_string(), "Standard".to_string()]);
    let missing =
        std::fs::write(mount.path(VAULT).join(".jobs"), b"retrieve nope.bin\n").unwrap_err();
    assert_eq!(missing.raw_os_error(), Some(libc::ENOENT));
}

/// InitiateJob calls the emulator has answered, refused ones included.
fn initiated(emu: &Emulator) -> u64 {
    emu.stats().requests_for(support::emulator::Op::InitiateJob)
}

/// The `.jobs` line of the retrieval of `path` in the vault.
fn job_line(mount: &Mount, path: &str) -> Option<serde_json::Value> {
    jobs_lines(&mount.path(VAULT))
        .into_iter()
        .find(|l| l["Action"] == "ArchiveRetrieval" && l["Path"] == path)
}

#[test]
fn expedited_without_capacity_fails_when_the_tier_names_no_fallback() {
    if !fuse_available() {
        return;
    }
    let emu = Emulator::start();
    let files: BTreeMap<String, Vec<u8>> = [("urgent.bin".to_string(), pattern(500, 3))].into();
    let cache = tempfile::tempdir().unwrap();
    let mount = setup(&emu, &files, cache.path(), &["--tier", "expedited"]);
    emu.set_expedited_shortage(true);
    let before = initiated(&emu);
    let file = mount.path(VAULT).join("urgent.bin");
    let out = Command::new("cat").arg(&file).output().unwrap();
    assert_eagain("cat", out);
    // Glacier's refusal becomes a Failed job, and opens get EIO instead of EAGAIN.
    assert!(
        wait_until(Duration::from_secs(10), || {
            std::fs::read(&file).err().and_then(|e| e.raw_os_error()) == Some(libc::EIO)
        }),
        "the refusal never reached the open; log:\n{}",
        mount.log_text()
    );
    let out = Command::new("cat").arg(&file).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("Input/output error"), "{err}");
    let line = job_line(&mount, "urgent.bin").expect("a .jobs line for the refused retrieval");
    assert_eq!(line["StatusCode"], "Failed", "{line}");
    let message = line["StatusMessage"].as_str().unwrap_or_default();
    assert!(
        message.contains("InsufficientCapacityException")
            && message.contains("add ,standard to the tier, as in --tier expedited,standard"),
        "{message}"
    );
    // Only the Expedited request was made: no Standard job nobody asked for.
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(initiated(&emu) - before, 1);
    assert_eq!(retrievals(&emu), 0, "{:?}", emu.jobs(VAULT));
    assert!(
        !mount.log_text().contains("requested Standard"),
        "{}",
        mount.log_text()
    );
}

#[test]
fn expedited_without_capacity_falls_back_to_standard_when_asked() {
    if !fuse_available() {
        return;
    }
    let emu = Emulator::start();
    let data = pattern(500, 3);
    let files: BTreeMap<String, Vec<u8>> = [("urgent.bin".to_string(), data.clone())].into();
    let cache = tempfile::tempdir().unwrap();
    let mount = setup(
        &emu,
        &files,
        cache.path(),
        &["--tier", "expedited,standard"],
    );
    emu.set_expedited_shortage(true);
    let before = initiated(&emu);
    let file = mount.path(VAULT).join("urgent.bin");
    assert_eagain("cat", Command::new("cat").arg(&file).output().unwrap());
    assert!(
        wait_until(Duration::from_secs(10), || retrievals(&emu) == 1),
        "no job started; log:\n{}",
        mount.log_text()
    );
    let job = emu
        .jobs(VAULT)
        .into_iter()
        .find(|j| j.archive_id.is_some())
        .unwrap();
    assert_eq!(job.tier, "Standard");
    // The Expedited request, refused, then the Standard one.
    assert_eq!(initiated(&emu) - before, 2);
    let log = mount.log_text();
    assert_eq!(
        log.matches("Expedited capacity short for urgent.bin; requested Standard")
            .count(),
        1,
        "the fallback is logged once:\n{log}"
    );
    assert!(
        wait_until(Duration::from_secs(30), || {
            emu.complete_all_jobs();
            std::fs::read(&file).is_ok_and(|got| got == data)
        }),
        "the file never read; log:\n{}",
        mount.log_text()
    );
}

#[test]
fn retrieve_falls_back_to_standard_only_with_a_fallback_in_its_tier() {
    if !fuse_available() {
        return;
    }
    let emu = Emulator::start();
    let data = pattern(700, 5);
    let files: BTreeMap<String, Vec<u8>> = [("urgent.bin".to_string(), data.clone())].into();
    let cache = tempfile::tempdir().unwrap();
    let mount = setup(&emu, &files, cache.path(), &["--no-auto-retrieve"]);
    emu.set_expedited_shortage(true);
    let before = initiated(&emu);
    let file = mount.path(VAULT).join("urgent.bin");
    let retrieve = |tier: &str, timeout: &str| {
        aws_env(&mut Command::new(binary()))
            .args(["retrieve", "--tier", tier, "--timeout", timeout])
            .arg(&file)
            .output()
            .unwrap()
    };
    // Plain Expedited: refused, and the wait says why and how to ask for a fallback.
    let out = retrieve("expedited", "5s");
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert_eq!(out.status.code(), Some(1), "{stdout}\n{stderr}");
    assert!(stdout.contains("tier Expedited"), "{stdout}");
    assert!(
        stderr.contains("Expedited capacity is short")
            && stderr.contains("--tier expedited,standard"),
        "{stderr}"
    );
    assert_eq!(initiated(&emu) - before, 1);
    assert_eq!(retrievals(&emu), 0);

    // With the fallback: a Standard job, and the file arrives.
    let waiting = aws_env(&mut Command::new(binary()))
        .args([
            "retrieve",
            "--tier",
            "expedited,standard",
            "--timeout",
            "60s",
        ])
        .arg(&file)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    assert!(
        wait_until(Duration::from_secs(10), || retrievals(&emu) == 1),
        "no job started; log:\n{}",
        mount.log_text()
    );
    emu.complete_all_jobs();
    let out = waiting.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("1 archive(s), 700 bytes, tier Expedited, then Standard"),
        "{stdout}"
    );
    let tiers: Vec<String> = emu
        .jobs(VAULT)
        .into_iter()
        .filter(|j| j.archive_id.is_some())
        .map(|j| j.tier)
        .collect();
    assert!(tiers.contains(&"Standard".to_string()), "{tiers:?}");
    assert!(!tiers.contains(&"Expedited".to_string()), "{tiers:?}");
    assert_eq!(initiated(&emu) - before, 3);
    assert_eq!(std::fs::read(&file).unwrap(), data);
}
