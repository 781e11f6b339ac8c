//! `glacierfs export` against the Glacier emulator, through a real mount: a whole vault comes
//! out exactly as the mount shows it; outstanding retrievals stay within
//! `--max-bytes-in-flight`; a killed export resumes without downloading anything twice; corrupt
//! job output never reaches DEST; Ctrl-C stops cleanly and a re-run reuses the jobs; Expedited
//! capacity that is short falls back to Standard only when `--tier` names the fallback.
//!
//! The export runs as a child process with `GLACIERFS_EXPORT_POLL_MS` set small, while the test
//! moves the emulator's clock (`complete_all_jobs`) and, all along, checks that every file
//! under its final name in DEST holds exactly its archive's bytes.
// A test fails by panicking, so unwrap and expect are how it says what went wrong.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fs::File;
use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::Value;

use support::emulator::{Emulator, Op, DEFAULT_START_SECS};
use support::export::{pattern, plain, Archive, Corruptor, Export, Vault, MIB, VAULT};
use support::mount::{fuse_available, wait_until};
use support::walk;

const STATE_DIR: &str = ".glacierfs-export";
const PART: &str = ".glacierfs-part";

/// Watches DEST: every file under a final name must hold exactly its archive's bytes from the
/// moment it appears (each is read once, on first sight; placed files never change).
struct Watch {
    expected: BTreeMap<String, Vec<u8>>,
    seen: BTreeSet<String>,
}

impl Watch {
    fn new(expected: BTreeMap<String, Vec<u8>>) -> Watch {
        Watch {
            expected,
            seen: BTreeSet::new(),
        }
    }

    fn check(&mut self, dest: &Path) {
        let mut found = Vec::new();
        final_files(dest, "", &mut found);
        for rel in found {
            if self.seen.contains(&rel) {
                continue;
            }
            let want = self
                .expected
                .get(&rel)
                .unwrap_or_else(|| panic!("{rel} is in DEST but not in the vault"));
            let got = match std::fs::read(dest.join(&rel)) {
                Ok(got) => got,
                Err(_) => continue, // a directory being replaced, say: look again later
            };
            assert!(
                got == *want,
                "{rel} holds {} bytes under its final name that are not its archive's {}",
                got.len(),
                want.len()
            );
            self.seen.insert(rel);
        }
    }
}

/// Files in DEST under final names: not the state directory, not temporary files.
fn final_files(dir: &Path, prefix: &str, out: &mut Vec<String>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if prefix.is_empty() && name == STATE_DIR || name.ends_with(PART) {
            continue;
        }
        let rel = format!("{prefix}{name}");
        match e.file_type() {
            Ok(t) if t.is_dir() => final_files(&e.path(), &format!("{rel}/"), out),
            Ok(t) if t.is_file() => out.push(rel),
            _ => {}
        }
    }
}

/// DEST must show exactly the mount's view: names, sizes, mtimes, and every byte.
fn assert_same_tree(vault: &Vault, dest: &Path, expected: &BTreeMap<String, Vec<u8>>) {
    let mine = walk(dest);
    let theirs = walk(&vault.root());
    if mine != theirs {
        let only_dest: Vec<_> = mine
            .iter()
            .filter(|(k, v)| theirs.get(*k) != Some(v))
            .collect();
        let only_mount: Vec<_> = theirs
            .iter()
            .filter(|(k, v)| mine.get(*k) != Some(v))
            .collect();
        panic!(
            "DEST differs from the mount:\nDEST only: {only_dest:?}\nmount only: {only_mount:?}"
        );
    }
    for (rel, data) in expected {
        let got = std::fs::read(dest.join(rel)).unwrap();
        assert!(got == *data, "{rel}: contents differ");
    }
}

/// Bytes of each archive's output served, over all its jobs, from the emulator's records.
fn served_by_archive(emu: &Emulator) -> HashMap<String, u64> {
    let stats = emu.stats();
    let mut out = HashMap::new();
    for r in emu.retrieval_log() {
        let bytes = stats
            .job_output
            .get(&r.job_id)
            .map_or(0, |s| s.bytes_served);
        *out.entry(r.archive_id).or_insert(0) += bytes;
    }
    out
}

fn jobs_by_archive(emu: &Emulator) -> HashMap<String, usize> {
    let mut out = HashMap::new();
    for r in emu.retrieval_log() {
        *out.entry(r.archive_id).or_insert(0) += 1;
    }
    out
}

#[test]
fn a_vault_of_300_archives_comes_out_exactly_as_the_mount_shows_it() {
    if !fuse_available() {
        return;
    }
    let mut archives = Vec::new();
    for i in 0..300usize {
        let size = match i {
            0 => 1,
            1 => 3 * MIB + 7,
            2 => 5 * MIB,
            3 => 9 * MIB + 11,
            _ if i % 25 == 0 => MIB + i,
            _ if i % 7 == 0 => 200_000 + i * 13,
            _ => 1 + (i * 7919) % 40_000,
        };
        let k = i as i64;
        let data = match i % 50 {
            // The same bytes as the one before: two archives, two files.
            9 => archives
                .last()
                .map_or_else(|| pattern(size, 0), |a: &Archive| a.data.clone()),
            _ => pattern(size, i as u32),
        };
        let archive = match i % 10 {
            // Several archives with one path: the newest keeps it, the others get suffixes.
            7 => plain(&format!("dup/same{}.dat", i % 3), data, k),
            // A raw Windows path, and no mtime: the creation date stands in.
            8 => Archive {
                description: format!("C:\\backup\\w{}\\file{i}.doc", i % 4),
                data,
                creation: DEFAULT_START_SECS - 300 * 86_400 + k * 7_200,
            },
            9 => plain(&format!("deep/a/b/c/d/{i}"), data, k),
            6 => plain(&format!("top{i}.txt"), data, k),
            _ => plain(&format!("d{}/s{}/f{i}.bin", i % 5, i % 3), data, k),
        };
        archives.push(archive);
    }
    // A file where a directory also is: the file takes a suffix.
    archives[299] = plain("deep/a/b", pattern(10, 299), 299);
    let vault = Vault::new(&archives);
    // What lives only in the catalog: an empty directory and an empty file.
    std::fs::create_dir_all(vault.root().join("empty/dir")).unwrap();
    File::create(vault.root().join("d1/empty.txt")).unwrap();

    let expected = vault.expected();
    assert_eq!(expected.len(), 301, "300 archives and an empty file");
    let out = tempfile::tempdir().unwrap();
    let dest = out.path().join("copy");
    let mut watch = Watch::new(expected.clone());
    let mut export = Export::start(&vault, &dest, &["--json"]);
    let status = export.drive(&vault.emu, |_| watch.check(&dest));
    assert!(status.success(), "export failed: {}", export.stderr());

    assert_same_tree(&vault, &dest, &expected);
    let s = export.summary();
    assert_eq!(s["status"], "complete", "{s}");
    assert_eq!(s["files_total"], 301, "{s}");
    assert_eq!(s["files_done"], 301, "{s}");
    assert_eq!(s["failed"], 0, "{s}");
    assert_eq!(s["jobs_started"], 300, "{s}");
    assert_eq!(s["rerequests"], 0, "{s}");
    assert_eq!(s["empty"], 1, "{s}");
    let plan = &export.events()[0];
    assert_eq!(plan["event"], "plan", "{plan}");
    assert_eq!(plan["to_fetch"], 300, "{plan}");
    // Straight from Glacier, once each: the mount fetched nothing into its cache.
    let served = served_by_archive(&vault.emu);
    for (id, size) in vault.archive_sizes() {
        assert_eq!(served.get(&id), Some(&size), "archive {id}");
    }

    // Running it again finds everything in place and starts nothing.
    let mut again = Export::start(&vault, &dest, &["--json"]);
    assert!(
        again.drive(&vault.emu, |_| {}).success(),
        "{}",
        again.stderr()
    );
    let s = again.summary();
    assert_eq!(
        (s["in_place"].as_u64(), s["jobs_started"].as_u64()),
        (Some(300), Some(0)),
        "{s}"
    );
    assert_same_tree(&vault, &dest, &expected);
}

#[test]
fn retrievals_in_flight_stay_within_the_bound() {
    if !fuse_available() {
        return;
    }
    let archives: Vec<Archive> = (0..30usize)
        .map(|i| {
            let size = 100 * 1024 + (i * 104_729) % (1400 * 1024);
            plain(&format!("p/{i:02}.bin"), pattern(size, i as u32), i as i64)
        })
        .collect();
    let total: usize = archives.iter().map(|a| a.data.len()).sum();
    assert!(total > 12 * MIB);
    let vault = Vault::new(&archives);
    let expected = vault.expected();
    let out = tempfile::tempdir().unwrap();
    let dest = out.path().join("copy");
    let mut watch = Watch::new(expected.clone());
    let mut most = 0;
    let mut export = Export::start(&vault, &dest, &["--json", "--max-bytes-in-flight", "4MiB"]);
    let status = export.drive(&vault.emu, |emu| {
        most = most.max(emu.retrievals_in_flight());
        watch.check(&dest);
    });
    assert!(status.success(), "export failed: {}", export.stderr());
    assert_same_tree(&vault, &dest, &expected);
    let max = vault.emu.max_retrievals_in_flight();
    assert!(max <= 4 * MIB as u64, "{max} bytes were in flight at once");
    assert!(
        max >= 2 * MIB as u64,
        "only {max} bytes in flight: no batching at all?"
    );
    assert!(most <= max);
    let s = export.summary();
    assert_eq!(s["jobs_started"], 30, "{s}");
    let progress: Vec<Value> = export
        .events()
        .into_iter()
        .filter(|e| e["event"] == "progress")
        .collect();
    assert!(!progress.is_empty());
    for p in &progress {
        assert!(
            p["bytes_in_flight"].as_u64().unwrap() <= 4 * MIB as u64,
            "{p}"
        );
    }
}

#[test]
fn a_killed_export_resumes_without_downloading_anything_twice() {
    if !fuse_available() {
        return;
    }
    let mut archives = vec![plain("a/big.bin", pattern(10 * MIB, 1), 0)];
    for i in 1..24usize {
        let size = match i {
            5 | 11 => 2 * MIB + i,
            _ => 50_000 + (i * 7_919 * 13) % (1300 * 1024),
        };
        archives.push(plain(
            &format!("b/f{i:02}.bin"),
            pattern(size, i as u32),
            i as i64,
        ));
    }
    let vault = Vault::new(&archives);
    let big_id = vault.emu.archives(VAULT)[0].id.clone();
    let expected = vault.expected();
    let sizes = vault.archive_sizes();
    let out = tempfile::tempdir().unwrap();
    let dest = out.path().join("copy");
    let mut watch = Watch::new(expected.clone());
    // Hold the big archive's download after its first 4 MiB chunk, so the kill finds it
    // half done (under its temporary name, with a verified prefix).
    vault.emu.set_stall(Duration::from_secs(20));
    let args = ["--json", "--max-bytes-in-flight", "14MiB"];

    let mut first = Export::start(&vault, &dest, &args);
    let started = Instant::now();
    let mut calm_since: Option<Instant> = None;
    loop {
        assert!(
            first.exited().is_none(),
            "the first run ended: {}",
            first.stderr()
        );
        assert!(
            started.elapsed() < Duration::from_secs(40),
            "{}",
            first.stderr()
        );
        for j in vault.emu.jobs(VAULT) {
            if j.archive_id.as_deref() == Some(big_id.as_str()) {
                vault.emu.stall_job_output(&j.id, 4 * MIB as u64);
            }
        }
        watch.check(&dest);
        match calm_since {
            // Stop moving the clock, so that jobs started from now on are still running at
            // the kill; give what is downloading time to land.
            Some(t) if t.elapsed() > Duration::from_millis(1500) => break,
            Some(_) => {}
            None => {
                vault.emu.complete_all_jobs();
                let big_served = vault
                    .emu
                    .retrieval_log()
                    .iter()
                    .filter(|r| r.archive_id == big_id)
                    .filter_map(|r| vault.emu.stats().job_output.get(&r.job_id).cloned())
                    .map(|s| s.bytes_served)
                    .sum::<u64>();
                if big_served >= 4 * MIB as u64 && watch.seen.len() >= 4 {
                    calm_since = Some(Instant::now());
                }
            }
        }
        std::thread::sleep(Duration::from_millis(30));
    }
    first.child.kill().unwrap();
    first.child.wait().unwrap();
    watch.check(&dest);
    let done_at_kill = watch.seen.clone();
    assert!(
        done_at_kill.len() < expected.len(),
        "everything was done before the kill"
    );
    assert!(
        dest.join("a/.big.bin.glacierfs-part").exists(),
        "the big file's partial data is under its temporary name"
    );
    assert!(!dest.join("a/big.bin").exists());
    let served_at_kill = served_by_archive(&vault.emu);
    let running_at_kill = vault
        .emu
        .jobs(VAULT)
        .iter()
        .filter(|j| j.archive_id.is_some() && j.status == "InProgress")
        .count();

    // A day passes: the big archive's output expires unread; jobs started just before the
    // kill are done and still available.
    vault.emu.clear_faults();
    let big_done = vault
        .emu
        .jobs(VAULT)
        .iter()
        .find(|j| j.archive_id.as_deref() == Some(big_id.as_str()))
        .map(|j| j.completion_secs)
        .expect("the big archive's job");
    let target = big_done + 86_400 + 1;
    vault
        .emu
        .advance(Duration::from_secs((target - vault.emu.now()).max(0) as u64));

    let mut second = Export::start(&vault, &dest, &args);
    let status = second.drive(&vault.emu, |_| watch.check(&dest));
    assert!(
        status.success(),
        "the second run failed: {}",
        second.stderr()
    );
    assert_same_tree(&vault, &dest, &expected);
    let s = second.summary();
    eprintln!("after the kill: {running_at_kill} jobs running; second run: {s}");
    assert!(s["rerequests"].as_u64().unwrap() >= 1, "{s}");
    if running_at_kill > 0 {
        assert!(s["jobs_reused"].as_u64().unwrap() >= 1, "{s}");
    }

    // No archive was downloaded twice: its bytes were served exactly once over both runs,
    // the big one included (4 MiB before the kill, the rest after, from a new job).
    let served = served_by_archive(&vault.emu);
    for (id, size) in &sizes {
        assert_eq!(
            served.get(id),
            Some(size),
            "archive {id} served twice or not at all"
        );
    }
    let big_before = served_at_kill.get(&big_id).copied().unwrap_or(0);
    assert_eq!(big_before, 4 * MIB as u64);
    // Each archive had one job, and another only where its output expired.
    let jobs = jobs_by_archive(&vault.emu);
    let extra: usize = jobs.values().map(|n| n - 1).sum();
    assert_eq!(extra as u64, s["rerequests"].as_u64().unwrap(), "{jobs:?}");
    assert_eq!(jobs.get(&big_id), Some(&2));
}

#[test]
fn corrupt_job_output_never_reaches_dest() {
    if !fuse_available() {
        return;
    }
    let mut archives = vec![
        plain("x/once.bin", pattern(2 * MIB + 3, 1), 0),
        plain("y/always.bin", pattern(MIB + MIB / 2, 2), 1),
    ];
    for i in 2..8usize {
        archives.push(plain(
            &format!("z/{i}.bin"),
            pattern(30_000 * i, i as u32),
            i as i64,
        ));
    }
    let vault = Vault::new(&archives);
    let ids: Vec<String> = vault
        .emu
        .archives(VAULT)
        .iter()
        .map(|a| a.id.clone())
        .collect();
    let (once, always) = (ids[0].clone(), ids[1].clone());
    let expected = vault.expected();
    let out = tempfile::tempdir().unwrap();
    let dest = out.path().join("copy");
    let mut watch = Watch::new(expected.clone());
    // The first download of `once` is corrupted one time, every download of every job of
    // `always` is.
    let mut corrupt = Corruptor::new(vec![once.clone()], vec![always.clone()]);
    let mut export = Export::start(&vault, &dest, &[]);
    let status = export.drive(&vault.emu, |emu| {
        corrupt.mark(emu);
        watch.check(&dest);
    });
    let err = export.stderr();
    assert_eq!(status.code(), Some(1), "{err}");
    assert!(
        err.contains("y/always.bin"),
        "the failure is listed:\n{err}"
    );
    assert!(err.contains("1 failed"), "{err}");
    assert!(err.contains("corrupt"), "{err}");
    assert!(!dest.join("y/always.bin").exists());
    assert!(
        !dest.join("y/.always.bin.glacierfs-part").exists(),
        "bad data is removed"
    );
    for (rel, data) in &expected {
        if rel != "y/always.bin" {
            assert!(std::fs::read(dest.join(rel)).unwrap() == *data, "{rel}");
        }
    }
    // Fetched again: `once` within its job, `always` with one new job before giving up.
    let jobs = jobs_by_archive(&vault.emu);
    assert_eq!(jobs.get(&once), Some(&1));
    assert_eq!(jobs.get(&always), Some(&2));
    assert!(vault.emu.stats().faults_injected() >= 7);
}

#[test]
fn ctrl_c_stops_cleanly_and_a_rerun_reuses_the_jobs() {
    if !fuse_available() {
        return;
    }
    let archives: Vec<Archive> = (0..5usize)
        .map(|i| plain(&format!("f{i}"), pattern(1000 + i, i as u32), i as i64))
        .collect();
    let vault = Vault::new(&archives);
    let expected = vault.expected();
    let out = tempfile::tempdir().unwrap();
    let dest = out.path().join("copy");
    let mut first = Export::start(&vault, &dest, &[]);
    let all_started = wait_until(Duration::from_secs(20), || vault.emu.jobs(VAULT).len() >= 5);
    assert!(all_started, "{}", first.stderr());
    std::thread::sleep(Duration::from_millis(300));
    // SAFETY: signalling a child this test started.
    unsafe { libc::kill(first.child.id() as i32, libc::SIGINT) };
    let stopped = wait_until(Duration::from_secs(10), || first.exited().is_some());
    assert!(stopped, "export ignored Ctrl-C");
    let status = first.exited().unwrap();
    let err = first.stderr();
    assert_eq!(status.code(), Some(130), "{err}");
    assert!(
        err.contains("run the same command again to resume"),
        "{err}"
    );
    assert!(
        final_names(&dest).is_empty(),
        "nothing was ready, nothing is placed"
    );

    let mut second = Export::start(&vault, &dest, &["--json"]);
    assert!(
        second.drive(&vault.emu, |_| {}).success(),
        "{}",
        second.stderr()
    );
    let s = second.summary();
    assert_eq!(
        (s["jobs_reused"].as_u64(), s["jobs_started"].as_u64()),
        (Some(5), Some(0)),
        "{s}"
    );
    assert_same_tree(&vault, &dest, &expected);
}

/// Archive retrievals at the emulator, by tier.
fn retrieval_tiers(emu: &Emulator) -> Vec<String> {
    emu.jobs(VAULT)
        .into_iter()
        .filter(|j| j.archive_id.is_some())
        .map(|j| j.tier)
        .collect()
}

fn three_archives() -> Vec<Archive> {
    (0..3usize)
        .map(|i| plain(&format!("f{i}.bin"), pattern(2000 + i, i as u32), i as i64))
        .collect()
}

#[test]
fn expedited_without_capacity_fails_the_export_when_the_tier_names_no_fallback() {
    if !fuse_available() {
        return;
    }
    let vault = Vault::new(&three_archives());
    vault.emu.set_expedited_shortage(true);
    let before = vault.emu.stats().requests_for(Op::InitiateJob);
    let out = tempfile::tempdir().unwrap();
    let dest = out.path().join("copy");
    let mut export = Export::start(&vault, &dest, &["--tier", "expedited"]);
    let status = export.drive(&vault.emu, |_| {});
    let err = export.stderr();
    assert_eq!(status.code(), Some(1), "{err}");
    assert!(err.contains("3 failed"), "{err}");
    assert!(
        err.contains("Expedited capacity is short (InitiateJob: InsufficientCapacityException")
            && err.contains("add ,standard to the tier, as in --tier expedited,standard"),
        "{err}"
    );
    // One Expedited request per archive, each refused; nothing asked of Standard.
    assert_eq!(vault.emu.stats().requests_for(Op::InitiateJob) - before, 3);
    assert!(retrieval_tiers(&vault.emu).is_empty());
    assert!(final_names(&dest).is_empty());
}

#[test]
fn expedited_without_capacity_falls_back_to_standard_when_the_tier_says_so() {
    if !fuse_available() {
        return;
    }
    let vault = Vault::new(&three_archives());
    let expected = vault.expected();
    vault.emu.set_expedited_shortage(true);
    let before = vault.emu.stats().requests_for(Op::InitiateJob);
    let out = tempfile::tempdir().unwrap();
    let dest = out.path().join("copy");
    let mut export = Export::start(&vault, &dest, &["--json", "--tier", "expedited,standard"]);
    let status = export.drive(&vault.emu, |_| {});
    let err = export.stderr();
    assert!(status.success(), "{err}");
    assert_same_tree(&vault, &dest, &expected);
    assert_eq!(retrieval_tiers(&vault.emu), ["Standard"; 3]);
    assert_eq!(vault.emu.stats().requests_for(Op::InitiateJob) - before, 6);
    let jobs: Vec<Value> = export
        .events()
        .into_iter()
        .filter(|e| e["event"] == "job")
        .collect();
    assert_eq!(jobs.len(), 3);
    assert!(jobs.iter().all(|j| j["tier"] == "Standard"), "{jobs:?}");
    // Logged once per job.
    for i in 0..3 {
        let line = format!("Expedited capacity short for f{i}.bin; requested Standard");
        assert_eq!(err.matches(&line).count(), 1, "{line}:\n{err}");
    }
}

fn final_names(dest: &Path) -> Vec<String> {
    let mut out = Vec::new();
    final_files(dest, "", &mut out);
    out
}

#[test]
fn a_dry_run_starts_nothing_writes_nothing_and_its_counts_match_the_export() {
    if !fuse_available() {
        return;
    }
    let archives: Vec<Archive> = (0..12usize)
        .map(|i| {
            plain(
                &format!("p/{i:02}.bin"),
                pattern(1000 * (i + 1), i as u32),
                i as i64,
            )
        })
        .collect();
    let vault = Vault::new(&archives);
    File::create(vault.root().join("p/empty")).unwrap();
    let out = tempfile::tempdir().unwrap();
    let dest = out.path().join("copy");
    // Two files are in place already: the plan must not count them.
    let expected = vault.expected();
    std::fs::create_dir_all(dest.join("p")).unwrap();
    for rel in ["p/00.bin", "p/01.bin"] {
        std::fs::write(dest.join(rel), &expected[rel]).unwrap();
    }
    let before = final_names(&dest);
    vault.emu.reset_stats();

    let mut dry = Export::start(&vault, &dest, &["--dry-run", "--json"]);
    assert!(dry.drive(&vault.emu, |_| {}).success(), "{}", dry.stderr());
    let events = dry.events();
    assert_eq!(events.len(), 1, "a dry run prints one plan: {events:?}");
    let plan = &events[0];
    assert_eq!(
        (plan["event"].as_str(), plan["dry_run"].as_bool()),
        (Some("plan"), Some(true))
    );
    assert_eq!(
        vault
            .emu
            .stats()
            .requests_for(support::emulator::Op::InitiateJob),
        0
    );
    assert_eq!(final_names(&dest), before, "a dry run writes nothing");
    assert!(!dest.join(STATE_DIR).exists());
    assert_eq!(plan["to_fetch"], 10, "{plan}");
    assert_eq!(plan["files_in_place"], 2, "{plan}");
    assert_eq!(plan["to_write"], 11, "{plan}");
    let tiers = &plan["estimate"]["retrieval_by_tier"];
    assert!(
        tiers["Expedited"].as_f64() > tiers["Bulk"].as_f64(),
        "{plan}"
    );

    let mut real = Export::start(&vault, &dest, &["--json"]);
    assert!(
        real.drive(&vault.emu, |_| {}).success(),
        "{}",
        real.stderr()
    );
    let s = real.summary();
    assert_eq!(s["jobs_started"], plan["to_fetch"], "{s}");
    assert_eq!(s["downloaded"], plan["to_fetch"], "{s}");
    assert_eq!(s["in_place"], plan["files_in_place"], "{s}");
    let written = s["files_done"].as_u64().unwrap() - s["in_place"].as_u64().unwrap();
    assert_eq!(Some(written), plan["to_write"].as_u64(), "{s}");

    // Into another directory: every archive is to retrieve again, and the plan knows which
    // have a job already (the ten the export ran), which cost nothing more.
    let other = out.path().join("other");
    let mut dry = Export::start(&vault, &other, &["--dry-run", "--json"]);
    assert!(dry.drive(&vault.emu, |_| {}).success(), "{}", dry.stderr());
    let plan = &dry.events()[0];
    assert_eq!(
        (plan["to_fetch"].as_u64(), plan["with_jobs"].as_u64()),
        (Some(12), Some(10)),
        "{plan}"
    );
}

#[test]
fn symlinks_and_special_files_are_recreated_with_their_modes_and_times() {
    use std::os::unix::fs::{FileTypeExt, MetadataExt};
    if !fuse_available() {
        return;
    }
    let vault = Vault::new(&[plain("a.bin", pattern(100, 1), 0)]);
    let root = vault.root();
    std::fs::create_dir(root.join("sub")).unwrap();
    std::os::unix::fs::symlink("a.bin", root.join("link")).unwrap();
    std::os::unix::fs::symlink("../nowhere", root.join("sub/dangling")).unwrap();
    let made = |what: &str, rel: &str, mode: u32, dev: (u32, u32)| {
        let c = std::ffi::CString::new(root.join(rel).as_os_str().to_str().unwrap()).unwrap();
        // SAFETY: `c` is a valid C string; the rest are plain integers.
        let rc = unsafe { libc::mknod(c.as_ptr(), mode, libc::makedev(dev.0, dev.1)) };
        assert_eq!(rc, 0, "mknod {what}: {}", std::io::Error::last_os_error());
        // SAFETY: as above.
        assert_eq!(unsafe { libc::chmod(c.as_ptr(), mode & 0o7777) }, 0);
    };
    made("fifo", "sub/pipe", libc::S_IFIFO | 0o620, (0, 0));
    made("socket", "sock", libc::S_IFSOCK | 0o600, (0, 0));
    made("device", "null", libc::S_IFCHR | 0o640, (1, 3));
    // Times apart, to the nanosecond, on every one of them (the symlink's own, not its
    // target's).
    let times = |rel: &str, atime: i64, mtime: i64| {
        let c = std::ffi::CString::new(root.join(rel).as_os_str().to_str().unwrap()).unwrap();
        let ts = |ns: i64| libc::timespec {
            tv_sec: ns / 1_000_000_000,
            tv_nsec: ns % 1_000_000_000,
        };
        let both = [ts(atime), ts(mtime)];
        // SAFETY: `c` is a valid C string and `both` two timespecs.
        let rc = unsafe {
            libc::utimensat(
                libc::AT_FDCWD,
                c.as_ptr(),
                both.as_ptr(),
                libc::AT_SYMLINK_NOFOLLOW,
            )
        };
        assert_eq!(rc, 0, "{rel}: {}", std::io::Error::last_os_error());
    };
    let special = ["link", "sub/dangling", "sub/pipe", "sock", "null"];
    for (k, rel) in special.iter().enumerate() {
        let k = k as i64;
        times(
            rel,
            1_500_000_000_000_000_001 + k,
            1_600_000_000_000_000_003 + k * 1_000,
        );
    }
    // What DEST must hold for each: type, mode, target or device, atime, mtime.
    let seen = |at: &Path| -> Vec<String> {
        special
            .iter()
            .map(|rel| {
                let p = at.join(rel);
                let m = std::fs::symlink_metadata(&p).unwrap();
                let t = m.file_type();
                let kind = if t.is_symlink() {
                    format!("-> {}", std::fs::read_link(&p).unwrap().display())
                } else if t.is_fifo() {
                    "fifo".into()
                } else if t.is_socket() {
                    "socket".into()
                } else if t.is_char_device() {
                    format!("char {}", m.rdev())
                } else {
                    "other".into()
                };
                let mode = if t.is_symlink() {
                    0o777
                } else {
                    m.mode() & 0o7777
                };
                format!(
                    "{rel} {kind} {mode:o} {}.{:09} {}.{:09}",
                    m.atime(),
                    m.atime_nsec(),
                    m.mtime(),
                    m.mtime_nsec()
                )
            })
            .collect()
    };
    let want = seen(&root);
    assert!(want[2].contains("fifo 620 "), "{want:?}");
    assert!(want[4].contains(&format!("char {} 640", libc::makedev(1, 3))));

    let out = tempfile::tempdir().unwrap();
    let dest = out.path().join("copy");
    for run in ["first", "again"] {
        let mut export = Export::start(&vault, &dest, &["--json"]);
        let status = export.drive(&vault.emu, |_| {});
        assert!(status.success(), "{run}: {}", export.stderr());
        let s = export.summary();
        assert_eq!(s["status"], "complete", "{run}: {s}");
        assert_eq!(s["specials"], 5, "{run}: {s}");
        assert_eq!(seen(&dest), want, "{run}");
        assert_eq!(std::fs::read(dest.join("link")).unwrap(), pattern(100, 1));
    }
}

/// A file whose name is another's temporary name (`a` and `.a.glacierfs-part`) would have its
/// download overwrite the other, and its placing destroy it: the export refuses before it
/// starts a job or writes a file, and names both.
#[test]
fn a_name_that_is_another_files_temporary_name_is_refused_up_front() {
    if !fuse_available() {
        return;
    }
    let vault = Vault::new(&[
        plain("a", pattern(100, 1), 0),
        plain(&format!(".a{PART}"), pattern(200, 2), 1),
        plain("b", pattern(300, 3), 2),
    ]);
    let out = tempfile::tempdir().unwrap();
    let dest = out.path().join("copy");
    let mut export = Export::start(&vault, &dest, &[]);
    let status = export.drive(&vault.emu, |_| {});
    let err = export.stderr();
    assert!(!status.success(), "the clash went unnoticed: {err}");
    assert!(
        err.contains(&format!("a and .a{PART} would be one file")),
        "{err}"
    );
    assert_eq!(err.trim().lines().count(), 1, "one readable line: {err}");
    assert!(vault
        .emu
        .jobs(VAULT)
        .iter()
        .all(|j| j.action != "ArchiveRetrieval"));
    assert!(final_names(&dest).is_empty(), "{:?}", final_names(&dest));
}
