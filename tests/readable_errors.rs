//! Errors people can read, through a real mount: an endpoint that answers a bare 404 (an HTML
//! page, no error code) to InitiateMultipartUpload, as one lacking multipart uploads would, is
//! shown in `.jobs`, `glacierfs status`, the log and `glacierfs sync --wait --timeout` as one
//! line that names the operation, with no dumped structure; `sync` gives up within its timeout
//! with exit status 1. `retrieve --wait` shows progress and gives up the same way.
// A test fails by panicking, so unwrap and expect are how it says what went wrong.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use glacierfs::codec::names;
use support::emulator::{Emulator, FaultKind, Op};
use support::mount::{aws_env, binary, fuse_available, wait_until, Mount};

const VAULT: &str = "v";
const OPERATION: &str = "InitiateMultipartUpload";

fn glacierfs(args: &[&str], paths: &[&Path]) -> std::process::Output {
    aws_env(&mut Command::new(binary()))
        .args(args)
        .args(paths)
        .output()
        .unwrap()
}

/// The lines of `text` that speak of the failed operation; each must be readable.
fn readable_lines<'a>(text: &'a str, what: &str) -> Vec<&'a str> {
    let lines: Vec<&str> = text.lines().filter(|l| l.contains(OPERATION)).collect();
    assert!(!lines.is_empty(), "{what} never names {OPERATION}:\n{text}");
    for l in &lines {
        assert!(l.chars().count() <= 300, "{what}: longer than 300: {l}");
        assert!(!l.contains('{'), "{what}: a dumped structure: {l}");
        assert!(l.contains("404 Not Found"), "{what}: no HTTP status: {l}");
    }
    lines
}

/// The StatusMessage of each `.jobs` upload entry in `dir`, by path.
fn jobs_uploads(dir: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(dir.join(".jobs"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|e| e["Action"] == "Upload")
        .collect()
}

#[test]
fn a_bare_404_on_multipart_reads_as_one_line_everywhere_and_sync_gives_up_in_time() {
    if !fuse_available() {
        return;
    }
    let emu = Emulator::start();
    emu.create_vault(VAULT);
    emu.fail_next(
        Op::InitiateMultipartUpload,
        FaultKind::NoSuchOperation,
        1000,
    );
    let cache = tempfile::tempdir().unwrap();
    let mount = Mount::start(
        &emu.endpoint(),
        cache.path(),
        &["--part-size", "1MiB", "--write-back-delay", "1h"],
    );
    let vault = mount.path(VAULT);
    let big = vault.join("big.bin");
    std::fs::write(&big, vec![7u8; 2 << 20]).unwrap();
    // A second file nobody syncs: it stays queued, in `.jobs` and `status` alike.
    std::fs::write(vault.join("later.txt"), b"not yet").unwrap();

    // sync --wait --timeout: the failure once, as it happens; a plain progress line (no
    // terminal here); then, at the timeout, exit 1 and what is left and why.
    let started = Instant::now();
    let out = glacierfs(&["sync", "--wait", "--timeout", "5s"], &[&big]);
    let took = started.elapsed();
    let stderr = String::from_utf8_lossy(&out.stderr);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(1),
        "stdout:\n{stdout}\nstderr:\n{stderr}"
    );
    assert!(
        took >= Duration::from_secs(5) && took < Duration::from_secs(9),
        "sync took {took:?}"
    );
    let lines = readable_lines(&stderr, "sync");
    let as_it_happens: Vec<&&str> = lines
        .iter()
        .filter(|l| l.starts_with("glacierfs: ") && l.contains("big.bin"))
        .collect();
    assert_eq!(as_it_happens.len(), 1, "the failure once:\n{stderr}");
    assert!(
        as_it_happens[0].contains("multipart uploads")
            && as_it_happens[0].contains("retrying in 2m"),
        "no hint or next try: {}",
        as_it_happens[0]
    );
    assert!(
        stderr.contains("gave up after 5s: 1 file(s), 2.0 MiB, not yet in Glacier"),
        "{stderr}"
    );
    let progress: Vec<&str> = stdout
        .lines()
        .filter(|l| l.contains("of 1 files in Glacier"))
        .collect();
    assert_eq!(progress.len(), 1, "one plain line per 10 s:\n{stdout}");
    assert!(
        progress[0].starts_with("0 of 1 files in Glacier, "),
        "{stdout}"
    );

    // `.jobs`: the upload's StatusMessage.
    let jobs = jobs_uploads(&vault);
    let entry = jobs
        .iter()
        .find(|e| e["Path"] == "big.bin")
        .unwrap_or_else(|| panic!("no upload of big.bin in .jobs: {jobs:?}"));
    let message = entry["StatusMessage"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    readable_lines(&message, ".jobs StatusMessage");
    assert!(message.starts_with(OPERATION), "{message}");

    // `status PATH`, human and JSON, agreeing with `.jobs` on every upload's state.
    let human = glacierfs(&["status"], &[&vault]);
    assert!(
        human.status.success(),
        "{}",
        String::from_utf8_lossy(&human.stderr)
    );
    let human = String::from_utf8_lossy(&human.stdout).into_owned();
    readable_lines(&human, "status");
    assert!(human.contains("failures: 1"), "{human}");
    let json = glacierfs(&["status", "--json"], &[&vault]);
    let report: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap();
    let uploads = report["Uploads"].as_array().unwrap();
    assert_eq!(uploads.len(), 2, "{report:#}");
    for e in &jobs {
        let u = uploads
            .iter()
            .find(|u| u["Path"] == e["Path"])
            .unwrap_or_else(|| panic!("status lacks {e}"));
        let expected = match (e["StatusCode"].as_str(), e["StatusMessage"].is_string()) {
            (Some("InProgress"), false) => "uploading",
            (Some("InProgress"), true) => "retrying",
            (_, true) => "failed",
            (_, false) => "queued",
        };
        assert_eq!(u["State"], expected, ".jobs {e} vs status {u}");
        assert_eq!(u["StatusCode"], e["StatusCode"], ".jobs {e} vs status {u}");
        assert_eq!(
            u["StatusMessage"], e["StatusMessage"],
            ".jobs {e} vs status {u}"
        );
    }
    let big_state = uploads.iter().find(|u| u["Path"] == "big.bin").unwrap();
    assert_eq!(big_state["State"], "failed", "{report:#}");
    assert_eq!(report["Summary"]["Uploads"]["failed"]["Count"], 1);
    assert_eq!(report["Summary"]["Uploads"]["queued"]["Count"], 1);

    // The log, at WARN and above.
    let log = mount.log_text();
    let warned: String = log
        .lines()
        .filter(|l| l.contains(" WARN ") || l.contains(" ERROR "))
        .collect::<Vec<_>>()
        .join("\n");
    readable_lines(&warned, "the log");
    assert!(emu.stats().requests_for(Op::InitiateMultipartUpload) >= 1);
}

#[test]
fn retrieve_wait_shows_progress_and_gives_up_at_its_timeout() {
    if !fuse_available() {
        return;
    }
    let emu = Emulator::start();
    emu.create_vault(VAULT);
    emu.put_archive(
        VAULT,
        &names::encode_mt2("cold.txt", 1_600_000_000),
        b"far away",
        None,
    );
    emu.take_inventory(VAULT);
    let cache = tempfile::tempdir().unwrap();
    let mount = Mount::start(&emu.endpoint(), cache.path(), &[]);
    let file = mount.path(VAULT).join("cold.txt");
    assert!(
        wait_until(Duration::from_secs(60), || {
            emu.complete_all_jobs();
            file.exists()
        }),
        "the vault never loaded"
    );
    // The job is not completed: the wait must end at the timeout, with what is left.
    let started = Instant::now();
    let out = glacierfs(&["retrieve", "--timeout", "3s"], &[&file]);
    let took = started.elapsed();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stdout}\n{stderr}");
    assert!(took < Duration::from_secs(8), "retrieve took {took:?}");
    assert!(stdout.contains("1 archive(s), 8 bytes"), "{stdout}");
    assert!(stdout.contains("0 of 1 files retrieved"), "{stdout}");
    assert!(
        stderr.contains("gave up after 3s: 1 file(s), 8 B, not yet retrieved"),
        "{stderr}"
    );
    assert!(stderr.contains("cold.txt: retrieving"), "{stderr}");
    // A wait that sees the job complete ends with success: it waits for files asked for
    // before, too.
    let waiting = aws_env(&mut Command::new(binary()))
        .args(["retrieve", "--wait", "--timeout", "60s"])
        .arg(&file)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_secs(1));
    emu.complete_all_jobs();
    let out = waiting.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("0 archive(s), 0 bytes"), "{stdout}");
    assert!(
        stdout.contains("all files are retrieved: 1 file(s), 8 B"),
        "{stdout}"
    );
    assert_eq!(std::fs::read(&file).unwrap(), b"far away");
}
