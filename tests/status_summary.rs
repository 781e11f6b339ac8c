//! `glacierfs status` at a glance, through a real mount: `status PATH` finds the mount that
//! holds PATH and its cache directory without `--cache-dir`; with no PATH it lists every
//! running mount with its cache directory; with 5,000 files queued the summary stays within
//! 25 lines while `--all` lists every one; and `status | head -1` stops quietly.
// A test fails by panicking, so unwrap and expect are how it says what went wrong.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use support::emulator::Emulator;
use support::mount::{aws_env, binary, fuse_available, wait_until, Mount};

const FILES: usize = 5000;

fn status(args: &[&str], path: Option<&Path>) -> std::process::Output {
    let mut cmd = Command::new(binary());
    aws_env(&mut cmd).arg("status").args(args);
    if let Some(p) = path {
        cmd.arg(p);
    }
    // Not the default cache directory of this machine: only the mount may tell where it is.
    cmd.env("HOME", "/nonexistent").env_remove("XDG_CACHE_HOME");
    cmd.output().unwrap()
}

fn stdout_of(out: &std::process::Output) -> String {
    assert!(
        out.status.success(),
        "status failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn status_of_a_path_with_five_thousand_queued_is_a_short_summary() {
    if !fuse_available() {
        return;
    }
    let emu = Emulator::start();
    emu.create_vault("v");
    let cache = tempfile::tempdir().unwrap();
    let mount = Mount::start(&emu.endpoint(), cache.path(), &["--write-back-delay", "1h"]);
    let dir = mount.path("v").join("dir");
    std::fs::create_dir(&dir).unwrap();
    for i in 0..FILES {
        std::fs::write(dir.join(format!("f{i:04}")), b"queued bytes").unwrap();
    }
    let canonical_cache = std::fs::canonicalize(cache.path()).unwrap();

    // Releases reach the daemon after close(2) returns: wait until every file is counted.
    let mut report = serde_json::Value::Null;
    assert!(
        wait_until(Duration::from_secs(60), || {
            let out = status(&["--json"], Some(&dir));
            report = serde_json::from_slice(&out.stdout).unwrap_or_default();
            report["Summary"]["Uploads"]["queued"]["Bytes"] == FILES * 12
        }),
        "never saw {FILES} queued: {}",
        report["Summary"]
    );
    assert_eq!(
        Path::new(report["CacheDir"].as_str().unwrap()),
        canonical_cache,
        "status PATH found another cache"
    );
    assert_eq!(report["Mounted"], true);
    assert_eq!(
        report["MountPoint"].as_str(),
        Some(mount.path("").to_str().unwrap())
    );
    assert_eq!(report["Summary"]["Uploads"]["queued"]["Count"], FILES);
    assert_eq!(report["Uploads"].as_array().unwrap().len(), FILES);

    // The human summary: at most 25 lines, counts and bytes by state.
    let text = stdout_of(&status(&[], Some(&dir)));
    let lines: Vec<&str> = text.lines().collect();
    assert!(lines.len() <= 25, "{} lines:\n{text}", lines.len());
    assert!(
        text.contains(&format!(
            "uploads: {FILES} (58.6 KiB): {FILES} queued (58.6 KiB)"
        )),
        "{text}"
    );
    assert!(
        lines[0].contains("mounted at") && lines[0].contains(canonical_cache.to_str().unwrap()),
        "{text}"
    );
    // The mount point itself works as well as a path inside it.
    let at_root = stdout_of(&status(&[], Some(&mount.path(""))));
    assert_eq!(at_root.lines().next(), lines.first().copied());

    // --all lists every item.
    let all = stdout_of(&status(&["--all"], Some(&dir)));
    let listed = all.lines().filter(|l| l.starts_with("  v/dir/f")).count();
    assert_eq!(listed, FILES, "--all listed {listed}");

    // No PATH: every running mount of this user, with its cache directory.
    let mounts = stdout_of(&status(&[], None));
    let ours = mounts
        .lines()
        .find(|l| l.starts_with(&format!("{}: ", mount.path("").display())))
        .unwrap_or_else(|| panic!("our mount is not listed:\n{mounts}"));
    assert!(
        ours.contains(&format!("cache {}", canonical_cache.display()))
            && ours.contains(&format!("{FILES} queued")),
        "{ours}"
    );

    // A closed pipe ends the output quietly, with no panic.
    for args in ["", "--all", "--json"] {
        let piped = aws_env(&mut Command::new("bash"))
            .arg("-c")
            .arg(format!(
                "set -o pipefail; '{}' status {args} '{}' | head -1",
                binary(),
                dir.display()
            ))
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&piped.stderr);
        assert!(!err.contains("panicked"), "status {args} | head -1: {err}");
        assert_eq!(String::from_utf8_lossy(&piped.stdout).lines().count(), 1);
        // Killed by SIGPIPE (141) or stopped quietly (0); never a failure of its own.
        assert!(
            matches!(piped.status.code(), Some(0 | 141)),
            "status {args} | head -1 exited {:?}: {err}",
            piped.status
        );
    }
    let piped = aws_env(&mut Command::new("bash"))
        .arg("-c")
        .arg(format!("'{}' status | head -1", binary()))
        .output()
        .unwrap();
    assert!(piped.status.success());
    assert!(!String::from_utf8_lossy(&piped.stderr).contains("panicked"));
}

#[test]
fn status_of_a_path_outside_any_mount_says_so_in_one_line() {
    let dir = tempfile::tempdir().unwrap();
    let out = status(&[], Some(dir.path()));
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("not inside a glacierfs mount"), "{err}");
    // --cache-dir keeps working, and names a directory, not a path in a mount.
    let both = aws_env(&mut Command::new(binary()))
        .args(["status", "--cache-dir"])
        .arg(dir.path())
        .arg(dir.path())
        .output()
        .unwrap();
    assert_eq!(both.status.code(), Some(2), "PATH and --cache-dir together");
    let only = aws_env(&mut Command::new(binary()))
        .args(["status", "--cache-dir"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert_eq!(only.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&only.stderr).contains("no glacierfs catalog here"));
}
