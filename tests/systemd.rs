//! The systemd template unit: its keys say what the README promises, and, where
//! systemd-analyze is installed, systemd itself accepts it.
// A test fails by panicking, so unwrap and expect are how it says what went wrong.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;
use std::path::Path;
use std::process::Command;

const UNIT: &str = include_str!("../systemd/glacierfs@.service");

/// section → key → values, in file order.
fn parse(unit: &str) -> HashMap<String, HashMap<String, Vec<String>>> {
    let mut out: HashMap<String, HashMap<String, Vec<String>>> = HashMap::new();
    let mut section = String::new();
    for line in unit
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
    {
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            section = name.to_owned();
            continue;
        }
        let (k, v) = line
            .split_once('=')
            .unwrap_or_else(|| panic!("not a key: {line}"));
        out.entry(section.clone())
            .or_default()
            .entry(k.trim().into())
            .or_default()
            .push(v.trim().into());
    }
    out
}

#[test]
fn the_unit_runs_a_foreground_mount_per_instance() {
    let u = parse(UNIT);
    let service = &u["Service"];
    let one = |k: &str| {
        service
            .get(k)
            .and_then(|v| v.first())
            .cloned()
            .unwrap_or_default()
    };
    assert!(
        one("EnvironmentFile").contains("%i"),
        "the instance names its environment file"
    );
    assert!(one("ExecStart").contains("glacierfs mount --foreground"));
    assert!(one("ExecStart").contains("${MOUNTPOINT}"));
    assert!(one("ExecStop").contains("umount"), "stopping unmounts");
    assert_eq!(one("Restart"), "on-failure");
    assert_eq!(one("Type"), "simple");
    assert!(u["Install"]["WantedBy"].contains(&"multi-user.target".to_string()));
}

#[test]
fn systemd_accepts_the_unit() {
    if Command::new("systemd-analyze")
        .arg("--version")
        .output()
        .is_err()
    {
        eprintln!("systemd-analyze is not installed; the keys were checked by parsing instead");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let unit = UNIT.replace("/usr/local/bin/glacierfs", env!("CARGO_BIN_EXE_glacierfs"));
    std::fs::write(dir.path().join("glacierfs@.service"), unit).unwrap();
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .arg(Path::new(".").join("glacierfs@demo.service"))
        .current_dir(dir.path())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "systemd-analyze verify: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
