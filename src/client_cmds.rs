//! Commands that talk to a running mount through the file system itself: `sync` asks for
//! uploads with the `user.glacier.sync` attribute and watches `user.glacier.state`. No socket
//! or daemon protocol is needed, and permissions are the file system's own.

use std::ffi::CString;
use std::io::Write;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use crate::config::{RetrieveArgs, SyncArgs};

/// Sets an extended attribute; the error says which path refused it.
pub fn set_xattr(path: &Path, name: &str, value: &[u8]) -> Result<(), String> {
    let p = CString::new(path.as_os_str().as_bytes()).map_err(|_| "path holds NUL".to_string())?;
    let n = CString::new(name).map_err(|_| "name holds NUL".to_string())?;
    // SAFETY: valid C strings and a buffer of the stated length.
    let rc = unsafe {
        libc::setxattr(
            p.as_ptr(),
            n.as_ptr(),
            value.as_ptr().cast(),
            value.len(),
            0,
        )
    };
    if rc == 0 {
        return Ok(());
    }
    let err = std::io::Error::last_os_error();
    Err(match err.raw_os_error() {
        Some(libc::ENOTSUP) => format!("{}: not inside a glacierfs mount", path.display()),
        _ => format!("{}: {err}", path.display()),
    })
}

/// Reads an extended attribute as text; None if the file has none by that name.
pub fn get_xattr(path: &Path, name: &str) -> Option<String> {
    let p = CString::new(path.as_os_str().as_bytes()).ok()?;
    let n = CString::new(name).ok()?;
    let mut buf = vec![0u8; 256];
    // SAFETY: valid C strings and a buffer of the stated length.
    let len = unsafe { libc::getxattr(p.as_ptr(), n.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
    if len < 0 {
        return None;
    }
    buf.truncate(len as usize);
    String::from_utf8(buf).ok()
}

/// The roots of every glacierfs mount of this machine.
pub fn mount_roots() -> Vec<PathBuf> {
    roots_in(&std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default())
}

/// glacierfs mount points in a mountinfo text. After the " - " separator come the file system
/// type, then the source; depending on how the mount was made, glacierfs shows as type
/// "fuse.glacierfs" or as type "fuse" from source "glacierfs".
fn roots_in(info: &str) -> Vec<PathBuf> {
    info.lines()
        .filter(|l| {
            let tail = l.split(" - ").nth(1).unwrap_or_default();
            let mut f = tail.split(' ');
            matches!(
                (f.next(), f.next()),
                (Some("fuse.glacierfs"), _) | (Some("fuse"), Some("glacierfs"))
            )
        })
        .filter_map(|l| l.split(' ').nth(4))
        .map(PathBuf::from)
        .collect()
}

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mounts_are_found_in_either_mountinfo_form() {
        let info = "36 25 0:32 / /mnt/a rw,nosuid - fuse glacierfs rw,user_id=0\n\
                    37 25 0:33 / /mnt/b rw - fuse.glacierfs glacierfs rw\n\
                    38 25 0:34 / /mnt/c rw - fuse sshfs rw\n\
                    39 25 8:1 / / rw - ext4 /dev/vda rw\n";
        assert_eq!(
            roots_in(info),
            vec![PathBuf::from("/mnt/a"), PathBuf::from("/mnt/b")]
        );
    }
}
