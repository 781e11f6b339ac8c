//! Commands that talk to a running mount through the file system itself: `sync` asks for
//! uploads with the `user.glacier.sync` attribute and watches `user.glacier.state`. No socket
//! or daemon protocol is needed, and permissions are the file system's own.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use crate::client::{get_xattr, mount_roots, set_xattr};
use crate::config::{RetrieveArgs, SyncArgs};

/// Files at or under `path` that are still on their way to Glacier, with their sizes.
fn pending(path: &Path, out: &mut Vec<(PathBuf, u64)>) {
    let Ok(meta) = std::fs::symlink_metadata(path) else {
        return;
    };
    if meta.is_file() {
        if matches!(
            get_xattr(path, "user.glacier.state").as_deref(),
            Some("staged" | "uploading")
        ) {
            out.push((path.to_owned(), meta.len()));
        }
        return;
    }
    if let Ok(entries) = std::fs::read_dir(path) {
        for e in entries.flatten() {
            pending(&e.path(), out);
        }
    }
}

pub fn sync(args: &SyncArgs) -> ExitCode {
    let paths = if args.paths.is_empty() {
        mount_roots()
    } else {
        args.paths.clone()
    };
    if paths.is_empty() {
        eprintln!("glacierfs: no glacierfs mount found; name the files to sync");
        return ExitCode::FAILURE;
    }
    for p in &paths {
        if let Err(e) = set_xattr(p, "user.glacier.sync", b"") {
            eprintln!("glacierfs: {e}");
            return ExitCode::FAILURE;
        }
    }
    if !args.wait {
        return ExitCode::SUCCESS;
    }
    let started = Instant::now();
    let mut last_report = Instant::now() - Duration::from_secs(60);
    loop {
        let mut left = Vec::new();
        for p in &paths {
            pending(p, &mut left);
        }
        if left.is_empty() {
            println!(
                "all files are in Glacier ({:.1}s)",
                started.elapsed().as_secs_f64()
            );
            return ExitCode::SUCCESS;
        }
        if last_report.elapsed() >= Duration::from_secs(5) {
            let bytes: u64 = left.iter().map(|(_, s)| s).sum();
            println!(
                "waiting for {} file(s), {bytes} bytes, to reach Glacier...",
                left.len()
            );
            let _ = std::io::stdout().flush();
            last_report = Instant::now();
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Cold archives at or under `path`, with their sizes.
fn cold_files(path: &Path, out: &mut Vec<(PathBuf, u64)>) {
    let Ok(meta) = std::fs::symlink_metadata(path) else {
        return;
    };
    if meta.is_file() {
        if get_xattr(path, "user.glacier.state").as_deref() == Some("cold") {
            out.push((path.to_owned(), meta.len()));
        }
        return;
    }
    if let Ok(entries) = std::fs::read_dir(path) {
        for e in entries.flatten() {
            cold_files(&e.path(), out);
        }
    }
}

/// `glacierfs retrieve`: says how many archives and bytes a request involves, then asks the
/// mount for them through `user.glacier.retrieve`.
pub fn retrieve(args: &RetrieveArgs) -> ExitCode {
    let mut cold = Vec::new();
    for p in &args.paths {
        if std::fs::symlink_metadata(p).is_err() {
            eprintln!("glacierfs: {}: no such file or directory", p.display());
            return ExitCode::FAILURE;
        }
        cold_files(p, &mut cold);
    }
    let tier = args.tier.map(|t| t.as_str()).unwrap_or("");
    let shown = if tier.is_empty() {
        "the mount's default"
    } else {
        tier
    };
    let bytes: u64 = cold.iter().map(|(_, s)| s).sum();
    println!("{} archive(s), {bytes} bytes, tier {shown}", cold.len());
    let mut failed = 0;
    for (path, _) in &cold {
        if let Err(e) = set_xattr(path, "user.glacier.retrieve", tier.as_bytes()) {
            eprintln!("glacierfs: {e}");
            failed += 1;
        }
    }
    if failed > 0 {
        eprintln!("glacierfs: {failed} retrieval request(s) failed");
        return ExitCode::FAILURE;
    }
    println!("requested; `cat .jobs` in the vault shows their progress");
    ExitCode::SUCCESS
}
