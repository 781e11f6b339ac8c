//! The reference-model property test: random sequences of file operations (create, write,
//! truncate, rename, unlink, mkdir, rmdir, setattr, close, fsync), out-of-band uploads and
//! deletes followed by a newer inventory, job completion, and a crash followed by a remount,
//! run against a real mount over the Glacier emulator and against a simple model of what the
//! user should see and what the vaults should hold (`model/state.rs`, after SEMANTICS.md).
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
//!
//! Each case gets a fresh emulator, cache and mount. `GLACIERFS_MODEL_CASES` sets how many
//! cases run (default 10), `GLACIERFS_MODEL_SEED` the seed (printed on failure), and
//! `GLACIERFS_MODEL_SHRINK` how many shrink steps a failure may take (default 200). Failures
//! that shrank to a real bug are kept below as `regression_*` tests.
// A test fails by panicking, so unwrap and expect are how it says what went wrong.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

#[path = "model/harness.rs"]
mod harness;
#[path = "model/ops.rs"]
mod ops;
#[path = "model/state.rs"]
mod state;

use proptest::prelude::*;
use proptest::test_runner::{Config, RngAlgorithm, TestCaseError, TestRng, TestRunner};

use ops::Op::*;
use ops::{Len::*, Off::*, OpenMode::*};
use support::mount::fuse_available;

fn env_num(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

#[test]
fn random_operation_sequences_match_the_model() {
    if !fuse_available() {
        return;
    }
    let cases = env_num("GLACIERFS_MODEL_CASES", 10) as u32;
    let seed = env_num("GLACIERFS_MODEL_SEED", 0x676c_6163_6965_7266);
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
    let case = std::sync::atomic::AtomicU32::new(0);
    let result = runner.run(&(any::<bool>(), ops::ops(25)), |(long_delay, ops)| {
        let case = case.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
        harness::run_case(&ops, long_delay).map_err(|e| {
            // Shown as it happens: shrinking a failure can take a while.
            let first = e.lines().next().unwrap_or_default();
            eprintln!("run {case} ({} ops) failed: {first}", ops.len());
            TestCaseError::fail(format!(
                "seed {seed}, run {case}, long write-back delay {long_delay}: {e}"
            ))
        })
    });
    if let Err(e) = result {
        panic!("GLACIERFS_MODEL_SEED={seed}: {e}");
    }
}

/// Runs a fixed sequence, as a regression test does, with every check on.
fn replay(long_delay: bool, ops: &[ops::Op]) {
    if !fuse_available() {
        return;
    }
    if let Err(e) = harness::run_case(ops, long_delay) {
        panic!("{e}");
    }
}

/// A smoke sequence touching every kind of operation once, so a broken harness shows at once.
#[test]
fn every_kind_of_operation_once() {
    if !fuse_available() {
        return;
    }
    let r = harness::run_case(
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
        ],
        false,
    );
    if let Err(e) = r {
        panic!("{e}");
    }
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
