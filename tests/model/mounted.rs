//! The model's backend through the kernel: the glacierfs binary mounted for real over a fresh
//! emulator, driven with ordinary system calls; `glacierfs sync --wait` syncs, and a crash is
//! SIGKILL followed by a remount on the same cache.

use std::collections::BTreeMap;
use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileExt, FileTypeExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::os::unix::io::IntoRawFd;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant, UNIX_EPOCH};

use super::harness::{Backend, Kind, Meta, SETTLE};
use super::ops::{INITIAL_VAULTS, VAULTS};
use crate::support::emulator::{ClockStart, Emulator, EmulatorOptions};
use crate::support::mount::{aws_env, binary, Mount};
use crate::support::xattr;

/// Fields drop in order: the mount before the emulator and the cache it uses.
pub struct Mounted {
    mount: Mount,
    emu: Emulator,
    args: Vec<String>,
    _cache: tempfile::TempDir,
}

fn errno(e: &std::io::Error) -> i32 {
    e.raw_os_error().unwrap_or(-1)
}

fn last_errno() -> i32 {
    errno(&std::io::Error::last_os_error())
}

fn cpath(p: &Path) -> CString {
    CString::new(p.as_os_str().as_bytes()).expect("path without NUL")
}

/// Closes a file and reports the result close(2) gives, which dropping a `File` hides.
fn close_fd(f: std::fs::File) -> Result<(), i32> {
    let fd = f.into_raw_fd();
    // SAFETY: the descriptor was just taken out of its owner and is closed once.
    if unsafe { libc::close(fd) } == 0 {
        Ok(())
    } else {
        Err(last_errno())
    }
}

/// The mount options of a case: 1 MiB parts, so a few files go up in several, and a zero or
/// an hour-long write-back delay.
pub fn case_args(long_delay: bool) -> Vec<String> {
    let delay = if long_delay { "1h" } else { "0s" };
    [
        "--part-size",
        "1MiB",
        "--write-back-delay",
        delay,
        "--upload-concurrency",
        "2",
        // Snapshots only when a case asks for one (`sync --snapshot`).
        "--snapshot-interval",
        "off",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

/// An emulator for one case, holding the first [`INITIAL_VAULTS`] of [`VAULTS`]. Its clock starts at the real
/// time and is only moved forward, so every inventory is dated after every upload the daemon
/// (on the real clock) has made.
pub fn case_emulator() -> Emulator {
    let emu = Emulator::start_with(EmulatorOptions {
        clock: ClockStart::RealNow,
        ..EmulatorOptions::default()
    });
    for v in &VAULTS[..INITIAL_VAULTS] {
        emu.create_vault(v);
    }
    emu
}

impl Mounted {
    pub fn start(long_delay: bool) -> Mounted {
        // Files are created 0644 and directories 0755 whatever the caller's umask was.
        // SAFETY: umask cannot fail.
        unsafe { libc::umask(0o022) };
        let emu = case_emulator();
        let cache = tempfile::tempdir().expect("cache dir");
        let args = case_args(long_delay);
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        let mount = Mount::start(&emu.endpoint(), cache.path(), &refs);
        Mounted {
            mount,
            emu,
            args,
            _cache: cache,
        }
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.mount.path(rel)
    }

    /// A call that says -1 and leaves the errno.
    fn call(&self, rc: libc::c_int) -> Result<(), i32> {
        if rc == 0 {
            Ok(())
        } else {
            Err(last_errno())
        }
    }
}

fn walk(dir: &Path, prefix: &str, out: &mut BTreeMap<String, Meta>) -> Result<(), String> {
    let entries = std::fs::read_dir(dir).map_err(|e| format!("read_dir {prefix:?}: {e}"))?;
    for e in entries {
        let e = e.map_err(|e| format!("read_dir {prefix:?}: {e}"))?;
        let rel = format!("{prefix}{}", e.file_name().to_string_lossy());
        let meta = std::fs::symlink_metadata(e.path()).map_err(|e| format!("stat {rel}: {e}"))?;
        if meta.is_dir() {
            walk(&e.path(), &format!("{rel}/"), out)?;
        }
        let mtime = meta
            .modified()
            .ok()
            .and_then(|m| m.duration_since(UNIX_EPOCH).ok())
            .map(|d| d.as_secs() as i64);
        let t = meta.file_type();
        let kind = if t.is_dir() {
            Kind::Dir
        } else if t.is_file() {
            Kind::File
        } else if t.is_symlink() {
            let target =
                std::fs::read_link(e.path()).map_err(|e| format!("readlink {rel}: {e}"))?;
            Kind::Link(target.to_string_lossy().into_owned())
        } else if t.is_fifo() {
            Kind::Fifo
        } else {
            Kind::Other
        };
        out.insert(
            rel,
            Meta {
                dir: meta.is_dir(),
                kind,
                len: meta.len(),
                mode: meta.mode() & 0o7777,
                mtime,
            },
        );
    }
    Ok(())
}

impl Backend for Mounted {
    type File = std::fs::File;

    fn open(&self, path: &str, flags: i32, mode: u32) -> Result<std::fs::File, i32> {
        let mut o = std::fs::OpenOptions::new();
        match flags & libc::O_ACCMODE {
            libc::O_RDONLY => o.read(true),
            libc::O_WRONLY => o.write(true),
            _ => o.read(true).write(true),
        };
        o.create(flags & libc::O_CREAT != 0)
            .truncate(flags & libc::O_TRUNC != 0)
            .mode(mode);
        o.open(self.path(path)).map_err(|e| errno(&e))
    }

    fn pwrite(&self, f: &std::fs::File, off: u64, data: &[u8]) -> Result<(), String> {
        f.write_all_at(data, off).map_err(|e| e.to_string())
    }

    fn ftruncate(&self, f: &std::fs::File, size: u64) -> Result<(), String> {
        f.set_len(size).map_err(|e| e.to_string())
    }

    fn fsync(&self, f: &std::fs::File) -> Result<(), String> {
        f.sync_all().map_err(|e| e.to_string())
    }

    fn close(&self, f: std::fs::File) -> Result<(), i32> {
        close_fd(f)
    }

    fn truncate(&self, path: &str, size: u64) -> Result<(), i32> {
        let c = cpath(&self.path(path));
        // SAFETY: a valid C string.
        self.call(unsafe { libc::truncate(c.as_ptr(), size as libc::off_t) })
    }

    fn rename(&self, from: &str, to: &str) -> Result<(), i32> {
        std::fs::rename(self.path(from), self.path(to)).map_err(|e| errno(&e))
    }

    fn unlink(&self, path: &str) -> Result<(), i32> {
        std::fs::remove_file(self.path(path)).map_err(|e| errno(&e))
    }

    fn mkdir(&self, path: &str) -> Result<(), i32> {
        std::fs::create_dir(self.path(path)).map_err(|e| errno(&e))
    }

    fn rmdir(&self, path: &str) -> Result<(), i32> {
        std::fs::remove_dir(self.path(path)).map_err(|e| errno(&e))
    }

    fn chmod(&self, path: &str, mode: u32) -> Result<(), i32> {
        std::fs::set_permissions(self.path(path), std::fs::Permissions::from_mode(mode))
            .map_err(|e| errno(&e))
    }

    fn utime(&self, path: &str, secs: i64) -> Result<(), i32> {
        let c = cpath(&self.path(path));
        let ts = libc::timespec {
            tv_sec: secs as libc::time_t,
            tv_nsec: 0,
        };
        // SAFETY: a valid C string and two timespecs.
        self.call(unsafe { libc::utimensat(libc::AT_FDCWD, c.as_ptr(), [ts, ts].as_ptr(), 0) })
    }

    fn read(&self, path: &str) -> Result<Vec<u8>, i32> {
        std::fs::read(self.path(path)).map_err(|e| errno(&e))
    }

    fn write_file(&self, path: &str, data: &[u8]) -> Result<(), String> {
        std::fs::write(self.path(path), data).map_err(|e| e.to_string())
    }

    fn xattr(&self, path: &str, name: &str) -> Result<String, i32> {
        xattr(&self.path(path), name)
    }

    fn root(&self) -> Result<Vec<String>, String> {
        let entries =
            std::fs::read_dir(self.path("")).map_err(|e| format!("listing the root: {e}"))?;
        let mut out = Vec::new();
        for e in entries {
            let e = e.map_err(|e| format!("listing the root: {e}"))?;
            let name = e.file_name().to_string_lossy().into_owned();
            if name != ".jobs" {
                out.push(name);
            }
        }
        Ok(out)
    }

    fn walk(&self, dir: &str) -> Result<BTreeMap<String, Meta>, String> {
        let mut out = BTreeMap::new();
        walk(&self.path(dir), "", &mut out)?;
        Ok(out)
    }

    fn sync_wait(&self, paths: &[String]) -> Result<(), String> {
        let paths: Vec<PathBuf> = paths.iter().map(|p| self.path(p)).collect();
        let mut child = aws_env(&mut Command::new(binary()))
            .args(["sync", "--wait"])
            .args(&paths)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .map_err(|e| format!("sync: {e}"))?;
        let start = Instant::now();
        loop {
            if let Some(status) = child.try_wait().map_err(|e| e.to_string())? {
                if status.success() {
                    return Ok(());
                }
                let out = child.wait_with_output().map_err(|e| e.to_string())?;
                return Err(format!(
                    "sync --wait failed: {}",
                    String::from_utf8_lossy(&out.stderr)
                ));
            }
            if start.elapsed() > SETTLE {
                let _ = child.kill();
                let _ = child.wait();
                let states: Vec<String> = paths
                    .iter()
                    .map(|p| format!("{}: {:?}", p.display(), xattr(p, "user.glacier.state")))
                    .collect();
                return Err(format!(
                    "sync --wait did not return in {SETTLE:?}: {states:#?}"
                ));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn crash(&mut self, open: Vec<std::fs::File>) {
        let refs: Vec<&str> = self.args.iter().map(String::as_str).collect();
        self.mount.remount(&self.emu.endpoint(), &refs);
        for f in open {
            // The daemon that served this handle is dead: whatever close says is moot.
            let _ = close_fd(f);
        }
    }

    fn symlink(&self, target: &str, path: &str) -> Result<(), i32> {
        std::os::unix::fs::symlink(target, self.path(path)).map_err(|e| errno(&e))
    }

    fn mkfifo(&self, path: &str, mode: u32) -> Result<(), i32> {
        let c = cpath(&self.path(path));
        // SAFETY: a valid C string.
        self.call(unsafe { libc::mkfifo(c.as_ptr(), mode as libc::mode_t) })
    }

    fn readlink(&self, path: &str) -> Result<String, i32> {
        std::fs::read_link(self.path(path))
            .map(|t| t.to_string_lossy().into_owned())
            .map_err(|e| errno(&e))
    }

    fn snapshot(&self, vault: &str, files: &[String]) -> Result<(), String> {
        let mut args = vec![
            "sync".to_owned(),
            "--wait".to_owned(),
            "--snapshot".to_owned(),
        ];
        args.push(self.path(vault).display().to_string());
        args.extend(files.iter().map(|f| self.path(f).display().to_string()));
        let out = run_bounded(&args, &self.emu)?;
        if !out.contains("is in the vault") {
            return Err(format!("sync --snapshot said: {out}"));
        }
        Ok(())
    }

    fn restore(&self, vault: &str) -> Result<(), String> {
        let args = [
            "catalog".to_owned(),
            "restore".to_owned(),
            "--wait".to_owned(),
            self.path(vault).display().to_string(),
        ];
        let out = run_bounded(&args, &self.emu)?;
        if !out.contains("is applied") {
            return Err(format!("catalog restore said: {out}"));
        }
        Ok(())
    }

    fn lose_machine(&mut self, clean: bool) {
        if !clean {
            self.mount.kill();
        }
        let cache = tempfile::tempdir().expect("cache dir");
        let refs: Vec<&str> = self.args.iter().map(String::as_str).collect();
        // The old mount goes first (dropping it unmounts), then the new one takes its place.
        let old = std::mem::replace(
            &mut self.mount,
            Mount::start(&self.emu.endpoint(), cache.path(), &refs),
        );
        drop(old);
        self._cache = cache;
    }

    fn emu(&self) -> &Emulator {
        &self.emu
    }

    fn log_tail(&self) -> String {
        let log = self.mount.log_text();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(80)..].join("\n")
    }

    fn poll(&self) -> Duration {
        Duration::from_millis(50)
    }
}

/// Runs `glacierfs ARGS` while the emulator finishes every job it is asked for, up to
/// [`SETTLE`]; its output, or why it failed.
fn run_bounded(args: &[String], emu: &Emulator) -> Result<String, String> {
    let mut child = aws_env(&mut Command::new(binary()))
        .args(args)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .map_err(|e| format!("{args:?}: {e}"))?;
    let start = Instant::now();
    while child.try_wait().map_err(|e| e.to_string())?.is_none() {
        if start.elapsed() > SETTLE {
            let _ = child.kill();
            let _ = child.wait();
            return Err(format!("{args:?} did not return in {SETTLE:?}"));
        }
        emu.complete_all_jobs();
        std::thread::sleep(Duration::from_millis(50));
    }
    let out = child.wait_with_output().map_err(|e| e.to_string())?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    if out.status.success() {
        Ok(text)
    } else {
        Err(format!("{args:?} failed: {text}"))
    }
}
