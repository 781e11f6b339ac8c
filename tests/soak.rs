//! The soak: one mount driven for a long time by a mixed workload (copies with `cp`, overwrites,
//! renames, deletes, cold reads, inventories, `.jobs` commands, syncs and remounts) while the
//! emulator fails 10% of every call with every transient kind. It samples the daemon's resident
//! memory, open descriptors and threads, and the catalog's and cache's size on disk, and fails
//! on growth that does not level off; at the end every file checks out exactly, in the vault
//! and through the mount, as in the crash and fault suites.
//!
//! The default run is short (75 s, a sample every 5 s); `GLACIERFS_SOAK_SECS` makes it longer
//! (`scripts/test.sh --long` sets 1800, and then a sample comes every 60 s).
//!
//! What "growth that does not level off" means here. A remount starts a new process, whose
//! memory, descriptors and threads start again from nothing, so those three are compared like
//! with like: the daemon is remounted three times in the first quarter of the run (the last
//! time after a SIGKILL) and then runs the rest as one process. That process warms up until
//! half-time (the catalog's page caches, the allocator's pools and the runtime's blocking
//! threads fill up to their bounds), and the maximum of the last quarter must not pass the
//! maximum of the third quarter by more than a slack: descriptors +8 and threads +8 (a
//! connection or a blocking-pool thread more or less at the moment of a sample is noise; a
//! leak per operation is hundreds over thousands of operations), memory +50% and 16 MiB (the
//! allocator keeps the high-water mark of a burst, such as a crash recovery or several
//! multipart uploads at once, and a leak keeps climbing past any fixed share) plus twice the
//! catalog's size (the catalog connections' page caches fill as it grows, up to their bounds,
//! which a short run does not reach). The catalog and
//! the cache outlive remounts, so they are compared over the whole run, the last third's
//! maximum against the middle third's: the catalog +50% and 2 MiB (its write-ahead log grows
//! up to the checkpoint size and is reused from then on), the cache +2 MiB (about the largest
//! file: it is bounded by `--cache-size` plus what is staged). The file set stays bounded (at
//! most 24 files), so a catalog that keeps rows for what is gone, or a cache that keeps data
//! of deleted files, keeps growing and fails.
// A test fails by panicking, so unwrap and expect are how it says what went wrong.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use glacierfs::codec::names;
use support::emulator::{Emulator, FaultKind, FaultPlan};
use support::mount::{aws_env, binary, fuse_available, wait_until, Mount};
use support::walk;

const VAULT: &str = "soak";
const KIB: usize = 1 << 10;
const MIB: usize = 1 << 20;
/// At most this many files live at once: the workload churns a bounded set, so nothing the
/// daemon keeps per live file can pass for a leak.
const MAX_FILES: usize = 24;
const ARGS: &[&str] = &[
    "--part-size",
    "1MiB",
    "--write-back-delay",
    "0s",
    "--upload-concurrency",
    "2",
    "--cache-size",
    "6MiB",
];

/// One sample of the daemon and its cache.
#[derive(Debug, Clone, Copy)]
struct Sample {
    at_s: u64,
    /// Which daemon process (0 for the first, one more per remount).
    generation: u32,
    rss_kib: u64,
    fds: u64,
    threads: u64,
    catalog_bytes: u64,
    cache_bytes: u64,
}

fn status_field(pid: u32, name: &str) -> u64 {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix(name))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no {name} in /proc/{pid}/status"))
}

fn dir_bytes(dir: &Path, filter: &dyn Fn(&str) -> bool) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .flatten()
        .map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            match e.metadata() {
                Ok(m) if m.is_dir() => dir_bytes(&e.path(), filter),
                Ok(m) if filter(&name) => m.len(),
                _ => 0,
            }
        })
        .sum()
}

fn sample(mount: &Mount, generation: u32, start: Instant) -> Sample {
    let pid = mount.pid().expect("the daemon runs");
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .count() as u64;
    Sample {
        at_s: start.elapsed().as_secs(),
        generation,
        rss_kib: status_field(pid, "VmRSS:"),
        fds,
        threads: status_field(pid, "Threads:"),
        // The catalog with its write-ahead log and shared memory, and its daily copies.
        catalog_bytes: dir_bytes(&mount.cache_dir, &|n| n.starts_with("catalog")),
        cache_bytes: dir_bytes(&mount.cache_dir.join("data"), &|_| true),
    }
}

fn bytes(rng: &mut impl Rng, n: usize) -> Vec<u8> {
    (0..n).map(|_| rng.random()).collect()
}

/// Mostly small files, some past the part size (multipart), a few empty.
fn size(rng: &mut impl Rng) -> usize {
    match rng.random_range(0..10) {
        0 => 0,
        1 => MIB + rng.random_range(1..300 * KIB),
        _ => rng.random_range(1..200 * KIB),
    }
}

/// Reads a file that may be cold: each EAGAIN lets the emulator finish its jobs, and a
/// transient failure that reached the caller is retried by the next open, as a user would.
fn read_through(emu: &Emulator, path: &Path, timeout: Duration) -> Option<Vec<u8>> {
    let mut data = None;
    wait_until(timeout, || {
        emu.complete_all_jobs();
        match std::fs::read(path) {
            Ok(d) => {
                data = Some(d);
                true
            }
            Err(_) => false,
        }
    });
    data
}

/// `glacierfs sync --wait`, given five minutes: an upload that never goes up fails the soak
/// with what `sync` says is left, instead of hanging it.
fn sync_within(path: &Path, log: impl Fn() -> String) {
    let out = aws_env(&mut Command::new(binary()))
        .args(["sync", "--timeout", "300s"])
        .arg(path)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "sync did not finish: {}{}\nlog:\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
        log()
    );
}

/// The figures of one stretch of samples: the largest value of each kind.
fn max_of(samples: &[Sample], f: impl Fn(&Sample) -> u64) -> u64 {
    samples.iter().map(f).max().unwrap_or(0)
}

/// Fails when the later stretch's maximum passes the earlier one's by more than the slack.
fn assert_levels_off(
    what: &str,
    earlier: &[Sample],
    later: &[Sample],
    f: impl Fn(&Sample) -> u64,
    slack: impl Fn(u64) -> u64,
    all: &[Sample],
) {
    let (before, after) = (max_of(earlier, &f), max_of(later, &f));
    assert!(
        !earlier.is_empty() && !later.is_empty(),
        "{what}: too few samples to compare: {all:#?}"
    );
    assert!(
        after <= before + slack(before),
        "{what} keeps growing: {after} at the end against {before} before (slack {}); \
         samples: {all:#?}",
        slack(before)
    );
}

struct Workload {
    rng: StdRng,
    emu: Emulator,
    mount: Mount,
    /// What the user wrote: every file's exact bytes, by path in the vault.
    expected: BTreeMap<String, Vec<u8>>,
    ops: BTreeMap<&'static str, u64>,
    next_name: u64,
    src: tempfile::TempDir,
}

impl Workload {
    fn vault(&self) -> PathBuf {
        self.mount.path(VAULT)
    }

    fn pick(&mut self) -> Option<String> {
        if self.expected.is_empty() {
            return None;
        }
        let i = self.rng.random_range(0..self.expected.len());
        self.expected.keys().nth(i).cloned()
    }

    fn new_name(&mut self) -> String {
        self.next_name += 1;
        format!("d{}/f{}.bin", self.next_name % 3, self.next_name)
    }

    fn count(&mut self, op: &'static str) {
        *self.ops.entry(op).or_default() += 1;
    }

    /// A new file, copied in with `cp` from a local file, as a user would.
    fn copy(&mut self) {
        let rel = self.new_name();
        let n = size(&mut self.rng);
        let data = bytes(&mut self.rng, n);
        let src = self.src.path().join("src.bin");
        std::fs::write(&src, &data).unwrap();
        let dest = self.vault().join(&rel);
        std::fs::create_dir_all(dest.parent().unwrap()).unwrap();
        let out = Command::new("cp").arg(&src).arg(&dest).output().unwrap();
        assert!(
            out.status.success(),
            "cp {rel}: {}\nlog:\n{}",
            String::from_utf8_lossy(&out.stderr),
            self.mount.log_text()
        );
        self.expected.insert(rel, data);
        self.count("copy");
    }

    /// New content over an existing file (O_TRUNC: no retrieval needed, even when cold).
    fn overwrite(&mut self) {
        let Some(rel) = self.pick() else { return };
        let n = size(&mut self.rng);
        let data = bytes(&mut self.rng, n);
        std::fs::write(self.vault().join(&rel), &data)
            .unwrap_or_else(|e| panic!("overwrite {rel}: {e}\nlog:\n{}", self.mount.log_text()));
        self.expected.insert(rel, data);
        self.count("overwrite");
    }

    fn rename(&mut self) {
        let Some(from) = self.pick() else { return };
        // Sometimes over another file, which then goes.
        let to = if self.rng.random_bool(0.3) {
            self.pick().filter(|t| *t != from)
        } else {
            None
        }
        .unwrap_or_else(|| self.new_name());
        let dest = self.vault().join(&to);
        std::fs::create_dir_all(dest.parent().unwrap()).unwrap();
        std::fs::rename(self.vault().join(&from), &dest).unwrap_or_else(|e| {
            panic!(
                "rename {from} to {to}: {e}\nlog:\n{}",
                self.mount.log_text()
            )
        });
        let data = self.expected.remove(&from).unwrap();
        self.expected.insert(to, data);
        self.count("rename");
    }

    fn delete(&mut self) {
        let Some(rel) = self.pick() else { return };
        std::fs::remove_file(self.vault().join(&rel))
            .unwrap_or_else(|e| panic!("rm {rel}: {e}\nlog:\n{}", self.mount.log_text()));
        self.expected.remove(&rel);
        self.count("delete");
    }

    /// Reads a file back; one evicted from the small cache is read cold, through a job.
    fn read(&mut self) {
        let Some(rel) = self.pick() else { return };
        let got = read_through(
            &self.emu,
            &self.vault().join(&rel),
            Duration::from_secs(180),
        );
        assert_eq!(
            got.as_deref(),
            Some(self.expected[&rel].as_slice()),
            "{rel} did not read back exactly; log:\n{}",
            self.mount.log_text()
        );
        self.count("read");
    }

    /// A newer inventory in the emulator, asked for through `.jobs`, and the listing.
    fn inventory(&mut self) {
        self.emu.take_inventory(VAULT);
        let _ = std::fs::write(self.vault().join(".jobs"), "inventory\n");
        self.emu.complete_all_jobs();
        let _ = std::fs::read_to_string(self.vault().join(".jobs"));
        let _ = std::fs::read_to_string(self.mount.path(".jobs"));
        self.count("inventory");
    }

    fn sync(&mut self) {
        sync_within(&self.vault(), || self.mount.log_text());
        self.count("sync");
    }

    fn step(&mut self) {
        let full = self.expected.len() >= MAX_FILES;
        match self.rng.random_range(0..100) {
            0..=24 if !full => self.copy(),
            0..=24 => self.delete(),
            25..=44 => self.overwrite(),
            45..=59 => self.rename(),
            60..=69 => self.delete(),
            70..=92 => self.read(),
            93 => self.inventory(),
            _ => self.sync(),
        }
    }

    /// A clean stop (SIGTERM) or a crash (SIGKILL), then a new daemon on the same cache.
    fn remount(&mut self, crash: bool) {
        if !crash {
            let status = self.mount.terminate();
            assert!(
                status.is_some_and(|s| s.success()),
                "the daemon did not stop cleanly: {status:?}\nlog:\n{}",
                self.mount.log_text()
            );
        }
        self.mount.remount(&self.emu.endpoint(), ARGS);
        self.count("remount");
    }
}

#[test]
fn a_long_mixed_workload_under_faults_levels_off_and_loses_nothing() {
    if !fuse_available() {
        return;
    }
    let secs: u64 = std::env::var("GLACIERFS_SOAK_SECS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(75);
    let every = Duration::from_secs((secs / 30).max(5));
    let run = Duration::from_secs(secs);

    let mut rng = StdRng::seed_from_u64(0x50a6);
    let emu = Emulator::start();
    emu.create_vault(VAULT);
    emu.set_stall(Duration::from_millis(200));
    let mut expected = BTreeMap::new();
    for i in 0..6 {
        let rel = format!("cold/c{i}.bin");
        let n = size(&mut rng);
        let data = bytes(&mut rng, n);
        emu.put_archive(VAULT, &names::encode_mt2(&rel, 1_600_000_000), &data, None);
        expected.insert(rel, data);
    }
    emu.take_inventory(VAULT);
    let cache = tempfile::tempdir().unwrap();
    let mount = Mount::start(&emu.endpoint(), cache.path(), ARGS);
    let vault = mount.path(VAULT);
    assert!(
        wait_until(Duration::from_secs(60), || {
            emu.complete_all_jobs();
            walk(&vault).values().filter(|s| s.is_some()).count() >= expected.len()
        }),
        "the vault never loaded; log:\n{}",
        mount.log_text()
    );
    emu.set_faults(FaultPlan {
        rate: 0.10,
        kinds: vec![
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
        ],
        seed: 0x50a6,
        ops: None,
    });

    let mut w = Workload {
        rng,
        emu,
        mount,
        expected,
        ops: BTreeMap::new(),
        next_name: 0,
        src: tempfile::tempdir().unwrap(),
    };
    // Remounts in the first quarter only (at an eighth, a fifth and a quarter of the run, the
    // last one a crash), so the rest is one process: it warms up until half-time (its caches
    // and the allocator's pools fill), and then its growth can be judged.
    let remounts = [run / 8, run / 5, run / 4];
    let mut generation = 0u32;
    let start = Instant::now();
    let mut samples = vec![sample(&w.mount, generation, start)];
    let mut next_sample = start + every;
    while start.elapsed() < run {
        w.step();
        if remounts
            .get(generation as usize)
            .is_some_and(|at| start.elapsed() >= *at)
        {
            w.remount(generation as usize == remounts.len() - 1);
            generation += 1;
        }
        if Instant::now() >= next_sample {
            let s = sample(&w.mount, generation, start);
            // As it goes, so a run that fails half-way still shows its curve.
            eprintln!("soak: sample {s:?}");
            samples.push(s);
            next_sample = Instant::now() + every;
        }
    }
    let operations: u64 = w.ops.values().sum();
    let faults = w.emu.stats().faults_injected();

    // The process figures: the last process's second and last quarters of the run.
    let last = generation;
    let quarter = |from: u64, to: u64| -> Vec<Sample> {
        samples
            .iter()
            .filter(|s| s.generation == last && s.at_s >= from && s.at_s < to)
            .copied()
            .collect()
    };
    let q3 = quarter(secs / 2, secs * 3 / 4);
    let q4 = quarter(secs * 3 / 4, u64::MAX);
    // The disk figures: across remounts, the middle third against the last.
    let third = |from: u64, to: u64| -> Vec<Sample> {
        samples
            .iter()
            .filter(|s| s.at_s >= from && s.at_s < to)
            .copied()
            .collect()
    };
    let middle = third(secs / 3, secs * 2 / 3);
    let end = third(secs * 2 / 3, u64::MAX);
    let (first, final_) = (samples[0], *samples.last().unwrap());
    eprintln!(
        "soak: {} s, {operations} operations ({:?}), {faults} faults injected, {} samples\n\
         soak: start: RSS {} KiB, {} fds, {} threads, catalog {} KiB, cache {} KiB\n\
         soak: end:   RSS {} KiB, {} fds, {} threads, catalog {} KiB, cache {} KiB\n\
         soak: last process: RSS max {} KiB then {} KiB, fds max {} then {}, threads max {} \
         then {} (third quarter, then last)",
        start.elapsed().as_secs(),
        w.ops,
        samples.len(),
        first.rss_kib,
        first.fds,
        first.threads,
        first.catalog_bytes / 1024,
        first.cache_bytes / 1024,
        final_.rss_kib,
        final_.fds,
        final_.threads,
        final_.catalog_bytes / 1024,
        final_.cache_bytes / 1024,
        max_of(&q3, |s| s.rss_kib),
        max_of(&q4, |s| s.rss_kib),
        max_of(&q3, |s| s.fds),
        max_of(&q4, |s| s.fds),
        max_of(&q3, |s| s.threads),
        max_of(&q4, |s| s.threads),
    );
    // The curves, one line per sample, for RELIABILITY.md.
    eprintln!("soak: at_s gen rss_kib fds threads catalog_kib cache_kib");
    for s in &samples {
        eprintln!(
            "soak: {} {} {} {} {} {} {}",
            s.at_s,
            s.generation,
            s.rss_kib,
            s.fds,
            s.threads,
            s.catalog_bytes / 1024,
            s.cache_bytes / 1024
        );
    }
    assert!(faults > 0, "the plan injected no fault");
    assert_eq!(generation as usize, remounts.len(), "not every remount ran");
    let catalog_kib = max_of(&q4, |s| s.catalog_bytes) / 1024;
    assert_levels_off(
        "memory (KiB)",
        &q3,
        &q4,
        |s| s.rss_kib,
        // Each catalog connection caches pages of the catalog up to its own bound, so until
        // those caches are full (a short run ends before they are) memory follows the catalog's
        // size: twice the catalog is allowed on top, the writer's cache and a reader's filling.
        |b| b / 2 + 16 * 1024 + 2 * catalog_kib,
        &samples,
    );
    assert_levels_off("open descriptors", &q3, &q4, |s| s.fds, |_| 8, &samples);
    assert_levels_off("threads", &q3, &q4, |s| s.threads, |_| 8, &samples);
    assert_levels_off(
        "catalog bytes",
        &middle,
        &end,
        |s| s.catalog_bytes,
        |b| b / 2 + 2 * MIB as u64,
        &samples,
    );
    assert_levels_off(
        "cache bytes",
        &middle,
        &end,
        |s| s.cache_bytes,
        |_| 2 * MIB as u64,
        &samples,
    );

    // Faults off; a newer inventory settles the twins that lost replies and the crash left,
    // and then the vault holds exactly one archive per file, and every file reads back exact
    // through the mount (cold ones through a retrieval).
    w.emu.clear_faults();
    sync_within(&w.vault(), || w.mount.log_text());
    w.emu.advance(Duration::from_secs(3600));
    w.emu.take_inventory(VAULT);
    w.mount.remount(
        &w.emu.endpoint(),
        &[ARGS, &["--inventory-max-age", "1s"]].concat(),
    );
    let vault = w.vault();
    // An empty file is no archive: it lives in the catalog only.
    let archived: BTreeMap<String, Vec<u8>> = w
        .expected
        .iter()
        .filter(|(_, data)| !data.is_empty())
        .map(|(rel, data)| (rel.clone(), data.clone()))
        .collect();
    // Renames of archived files live in the catalog (an archive's description cannot
    // change), so each file is matched to its archive by the id the mount gives it.
    let holds_exactly = || {
        w.emu.complete_all_jobs();
        let _ = std::fs::read_dir(&vault).map(|d| d.count());
        w.emu.archives(VAULT).len() == archived.len()
            && archived.iter().all(|(rel, data)| {
                support::xattr(&vault.join(rel), "user.glacier.archive_id")
                    .ok()
                    .and_then(|id| w.emu.archive_data(VAULT, &id))
                    .as_deref()
                    == Some(data.as_slice())
            })
    };
    assert!(
        wait_until(Duration::from_secs(120), holds_exactly),
        "the vault does not hold exactly one archive per file: {:?}\nexpected: {:?}\nlog:\n{}",
        w.emu
            .archives(VAULT)
            .iter()
            .map(|a| (names::decode(&a.description).path, a.size))
            .collect::<Vec<_>>(),
        archived
            .iter()
            .map(|(rel, data)| (rel, data.len()))
            .collect::<Vec<_>>(),
        w.mount.log_text()
    );
    assert!(
        w.emu.multipart_uploads(VAULT).is_empty(),
        "multipart uploads left behind"
    );
    let seen: Vec<String> = walk(&vault)
        .into_iter()
        .filter(|(_, s)| s.is_some())
        .map(|(rel, _)| rel)
        .collect();
    assert_eq!(
        seen,
        w.expected.keys().cloned().collect::<Vec<_>>(),
        "the tree differs from what was written"
    );
    for (rel, data) in &w.expected {
        let got = read_through(&w.emu, &vault.join(rel), Duration::from_secs(120));
        assert_eq!(
            got.as_deref(),
            Some(data.as_slice()),
            "{rel} did not read back exactly at the end; log:\n{}",
            w.mount.log_text()
        );
    }
}
