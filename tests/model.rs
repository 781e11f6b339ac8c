//! The reference-model property test: random sequences of file operations (create, write,
//! truncate, rename, unlink, mkdir, rmdir, setattr, close, fsync, symlink, mkfifo, readlink),
//! vault mkdir and rmdir at the root, out-of-band uploads and deletes followed by a newer
//! inventory, job completion, a crash followed by a remount, namespace snapshots, the loss of
//! the machine (a new, empty cache directory) and `catalog restore`, run against the file
//! system over the Glacier emulator and against a simple model of what the user should see
//! and what the vaults should hold (`model/state.rs`, after SEMANTICS.md).
//!
//! The same generated sequences run on two backends (`model/harness.rs`): a real mount
//! (`model/mounted.rs`, through the kernel) and the daemon's stack in this process
//! (`model/inproc.rs`, through the calls the FUSE adapter makes), which is fast enough for
//! thousands of cases.
//!
//! What the model takes as defined, where SEMANTICS.md leaves room:
//! - A crash happens only in a state the semantics define. Writable handles that changed
//!   nothing are closed first, and every other writable handle is fsynced ("fsync makes the
//!   file durable on this machine"). So a file still open for writing at the crash keeps
//!   exactly what it had at the crash and goes up like a closed file after the remount; a
//!   file unlinked while open is gone for good.
//! - Changing the size of a cold file to anything but zero fails with EAGAIN (the data is in
//!   Glacier); truncating it to zero needs no data.
//! - The result of opening a cold file whose archive was deleted upstream is not defined, so
//!   such opens are not made.
//! - A description names the path the file had when its upload started; with a zero
//!   write-back delay that moment is the daemon's, so any path the version had is accepted.
//!   With a long delay uploads start only at `sync --wait`, and the path must be exact.
//! - Calls that follow a symlink (open, truncate, chmod, utimes, or any path through one) act
//!   on its target, and opening a fifo waits for its other end: those are not made.
//! - A machine is lost only once everything is closed, uploaded and settled by an inventory:
//!   what a new machine gets back is what Glacier holds. A snapshot is not taken while a
//!   writer holds a file of its vault. A restore is made only over the tree the descriptions
//!   gave (nothing changed in the vault since the loss): over local changes the snapshot's
//!   rules compare ctimes to the nanosecond, which the model does not follow.
//!
//! Each case gets a fresh emulator, cache and mount (or stack). `GLACIERFS_MODEL_CASES` sets
//! how many mounted cases run (default 10), `GLACIERFS_MODEL_INPROC_CASES` how many in-process
//! ones (default 2000), `GLACIERFS_MODEL_SEED` the seed (printed on failure; both backends
//! start from the same sequences), and `GLACIERFS_MODEL_SHRINK` how many shrink steps a
//! failure may take (default 200). Failures that shrank to a real bug are kept below as
//! `regression_*` tests, run on both backends.
// A test fails by panicking, so unwrap and expect are how it says what went wrong.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

#[path = "model/harness.rs"]
mod harness;
#[path = "model/inproc.rs"]
mod inproc;
#[path = "model/mounted.rs"]
mod mounted;
#[path = "model/ops.rs"]
mod ops;
#[path = "model/state.rs"]
mod state;

use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::time::Instant;

use proptest::prelude::*;
use proptest::test_runner::{Config, RngAlgorithm, TestCaseError, TestRng, TestRunner};

use inproc::InProcBackend;
use mounted::Mounted;
use ops::Op::*;
use ops::{Len::*, Off::*, OpenMode::*};
use support::mount::fuse_available;

fn env_num(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// One case on a backend: the mounted one or the in-process one.
fn run_on(mounted: bool, ops: &[ops::Op], long_delay: bool) -> Result<(), String> {
    if mounted {
        harness::run_case(Mounted::start(long_delay), ops, long_delay)
    } else {
        harness::run_case(InProcBackend::start(long_delay), ops, long_delay)
    }
}

/// `cases` generated sequences from `seed`, each run on the chosen backend. `stop` set by
/// another runner's failure turns the cases left into no-ops, so the failure shrinks alone.
fn run_sequences(mounted: bool, seed: u64, cases: u32, stop: &AtomicBool) -> Result<u32, String> {
    let config = Config {
        cases,
        failure_persistence: None,
        fork: false,
        max_shrink_iters: env_num("GLACIERFS_MODEL_SHRINK", 200) as u32,
        ..Config::default()
    };
    let mut key = [0u8; 32];
    key[..8].copy_from_slice(&seed.to_le_bytes());
    let mut runner =
        TestRunner::new_with_rng(config, TestRng::from_seed(RngAlgorithm::ChaCha, &key));
    let case = AtomicU32::new(0);
    let failing = AtomicBool::new(false);
    let result = runner.run(&(any::<bool>(), ops::ops(29)), |(long_delay, ops)| {
        if stop.load(Ordering::Relaxed) && !failing.load(Ordering::Relaxed) {
            return Ok(());
        }
        let case = case.fetch_add(1, Ordering::Relaxed) + 1;
        run_on(mounted, &ops, long_delay).map_err(|e| {
            failing.store(true, Ordering::Relaxed);
            stop.store(true, Ordering::Relaxed);
            // Shown as it happens: shrinking a failure can take a while.
            let first = e.lines().next().unwrap_or_default();
            eprintln!("run {case} ({} ops) failed: {first}", ops.len());
            TestCaseError::fail(format!(
                "seed {seed}, run {case}, long write-back delay {long_delay}: {e}"
            ))
        })
    });
    match result {
        Ok(()) => Ok(case.load(Ordering::Relaxed)),
        Err(e) => Err(format!("GLACIERFS_MODEL_SEED={seed}: {e}")),
    }
}

/// `cases` generated sequences split over `runners` threads. The first runner starts from
/// the seed itself, so its sequences are the ones every backend runs; runner k starts from
/// seed + k (a failure names its seed: rerun it with one runner to reproduce it).
fn random_sequences(mounted: bool, cases: u32, runners: u32) {
    let seed = env_num("GLACIERFS_MODEL_SEED", 0x676c_6163_6965_7266);
    let runners = runners.clamp(1, cases.max(1));
    let stop = AtomicBool::new(false);
    let started = Instant::now();
    let results: Vec<Result<u32, String>> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..runners)
            .map(|k| {
                let share = cases / runners + u32::from(k < cases % runners);
                let stop = &stop;
                s.spawn(move || {
                    run_sequences(mounted, seed.wrapping_add(u64::from(k)), share, stop)
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap_or_else(|_| Err("a runner panicked".into())))
            .collect()
    });
    let mut runs = 0;
    for r in results {
        match r {
            Ok(n) => runs += n,
            Err(e) => panic!("{e}"),
        }
    }
    let secs = started.elapsed().as_secs_f64();
    let n = |c: &std::sync::atomic::AtomicU64| c.load(Ordering::Relaxed);
    eprintln!(
        "{runs} runs in {secs:.1}s ({:.1} per second, {runners} runners); {} snapshots, {} \
         machines lost, {} restores",
        f64::from(runs) / secs.max(1e-9),
        n(&harness::SNAPSHOTS),
        n(&harness::MACHINE_LOSSES),
        n(&harness::RESTORES)
    );
}

#[test]
fn random_operation_sequences_match_the_model() {
    if !fuse_available() {
        return;
    }
    random_sequences(true, env_num("GLACIERFS_MODEL_CASES", 10) as u32, 1);
}

/// The same sequences, many more of them, on the stack driven in process. The cases wait on
/// the emulator and the daemon's background work more than they compute, so several runners
/// share the machine's cores (`GLACIERFS_MODEL_INPROC_RUNNERS`, default 4).
#[test]
fn random_operation_sequences_match_the_model_in_process() {
    random_sequences(
        false,
        env_num("GLACIERFS_MODEL_INPROC_CASES", 2000) as u32,
        env_num("GLACIERFS_MODEL_INPROC_RUNNERS", 4) as u32,
    );
}

/// Runs a fixed sequence, as a regression test does, with every check on, on both backends.
fn replay(long_delay: bool, ops: &[ops::Op]) {
    if let Err(e) = run_on(false, ops, long_delay) {
        panic!("in process: {e}");
    }
    if !fuse_available() {
        return;
    }
    if let Err(e) = run_on(true, ops, long_delay) {
        panic!("mounted: {e}");
    }
}

/// A smoke sequence touching every kind of operation once, so a broken harness shows at once.
#[test]
fn every_kind_of_operation_once() {
    replay(
        false,
        &[
            Mkdir { v: 0, p: 2 },
            Create {
                v: 0,
                p: 3,
                len: Big(2),
                seed: 1,
                keep_open: false,
            },
            Create {
                v: 0,
                p: 0,
                len: Tiny(9),
                seed: 2,
                keep_open: true,
            },
            Write {
                h: 0,
                off: At(100),
                len: Tiny(3),
                seed: 3,
            },
            Fsync { h: 0 },
            Ftruncate {
                h: 0,
                size: Tiny(1),
            },
            Close { h: 0 },
            Truncate {
                v: 0,
                p: 0,
                size: Tiny(4),
            },
            Chmod {
                v: 0,
                p: 0,
                mode: 0,
            },
            Utime { v: 0, p: 0, t: 3 },
            Rename {
                v: 0,
                p: 0,
                v2: 0,
                p2: 1,
            },
            Rename {
                v: 0,
                p: 1,
                v2: 1,
                p2: 1,
            },
            Rmdir { v: 0, p: 2 },
            OobPut {
                v: 0,
                name: 1,
                len: Small(7),
                seed: 4,
            },
            OobPut {
                v: 1,
                name: 0,
                len: Tiny(5),
                seed: 5,
            },
            Inventory,
            Read { v: 0, p: 1 },
            Read { v: 0, p: 0 },
            Open {
                v: 1,
                p: 0,
                mode: RdWr,
            },
            CompleteJobs,
            Read { v: 0, p: 1 },
            OobDelete { v: 0, p: 3 },
            Open {
                v: 0,
                p: 1,
                mode: WrTrunc,
            },
            Write {
                h: 0,
                off: Start,
                len: Small(3),
                seed: 6,
            },
            Crash,
            Unlink { v: 0, p: 3 },
            Inventory,
            Symlink { v: 0, p: 5, t: 3 },
            Mknod { v: 1, p: 2 },
            ReadLink { v: 0, p: 5 },
            ReadLink { v: 1, p: 2 },
            Snapshot { v: 0 },
            MachineLoss {
                clean: true,
                restore: false,
            },
            Restore { v: 0 },
        ],
    );
}

/// What only the catalog knew comes back on a new machine: an archive renamed after its
/// upload, its mode and mtime, an empty file, a directory, a symlink and a fifo go into a
/// snapshot; the machine is lost (killed); the new one shows the descriptions' names until
/// the restore, which puts the snapshot's tree back. An archive uploaded after the snapshot
/// keeps its description's name, and one deleted since is dropped.
#[test]
fn a_snapshot_brings_the_tree_back_after_the_machine_is_lost() {
    replay(
        false,
        &[
            Create {
                v: 0,
                p: 0,
                len: Tiny(7),
                seed: 1,
                keep_open: false,
            },
            Create {
                v: 0,
                p: 1,
                len: Small(9),
                seed: 2,
                keep_open: false,
            },
            Inventory,
            Mkdir { v: 0, p: 2 },
            Rename {
                v: 0,
                p: 0,
                v2: 0,
                p2: 3,
            },
            Chmod {
                v: 0,
                p: 3,
                mode: 0,
            },
            Utime { v: 0, p: 3, t: 5 },
            Create {
                v: 0,
                p: 5,
                len: Zero,
                seed: 0,
                keep_open: false,
            },
            Symlink { v: 0, p: 4, t: 3 },
            Mknod { v: 0, p: 6 },
            Snapshot { v: 0 },
            OobDelete { v: 0, p: 1 },
            Create {
                v: 0,
                p: 0,
                len: Tiny(3),
                seed: 3,
                keep_open: false,
            },
            MachineLoss {
                clean: false,
                restore: false,
            },
            Read { v: 0, p: 0 },
            Restore { v: 0 },
            ReadLink { v: 0, p: 4 },
            CompleteJobs,
            Read { v: 0, p: 3 },
        ],
    );
}

/// Found by the random test: a vault deleted by `rmdir` showed again in the root's listing
/// when its delete finished between the listing's read of the nodes and of the vaults.
#[test]
fn regression_a_deleted_vault_stays_gone() {
    replay(
        false,
        &[
            RmVault { n: 1 },
            Chmod {
                v: 0,
                p: 0,
                mode: 1,
            },
            Mkdir { v: 0, p: 6 },
            Chmod {
                v: 0,
                p: 0,
                mode: 1,
            },
        ],
    );
}

/// Found by the random test: `mkdir` of a vault whose delete was still under way answered
/// ENOENT when the delete finished between its look and its change.
#[test]
fn regression_a_vault_made_again_while_its_delete_runs_is_there() {
    replay(
        true,
        &[
            RmVault { n: 0 },
            Read { v: 1, p: 0 },
            MkVault { n: 0 },
            Create {
                v: 0,
                p: 2,
                len: Tiny(7),
                seed: 33,
                keep_open: true,
            },
        ],
    );
}

/// A listing (READDIRPLUS) once gave the catalog's size of a file open for writing (0 here)
/// instead of its data file's, and the kernel kept that size for `ls -l` and `stat`.
#[test]
fn regression_a_listing_gives_a_file_open_for_writing_its_written_size() {
    replay(
        false,
        &[Create {
            v: 0,
            p: 0,
            len: Tiny(9),
            seed: 2,
            keep_open: true,
        }],
    );
}

/// Found by the random test (the model was wrong): a write of zero bytes at an offset past the
/// end of a file does not extend it.
#[test]
fn regression_a_zero_length_write_past_the_end_changes_nothing() {
    replay(
        false,
        &[
            Create {
                v: 0,
                p: 0,
                len: Zero,
                seed: 0,
                keep_open: true,
            },
            Write {
                h: 0,
                off: At(1),
                len: Zero,
                seed: 0,
            },
        ],
    );
}
