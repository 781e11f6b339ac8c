//! Running the glacierfs binary against an endpoint, mounted for real, for the tests. A
//! [`Mount`] unmounts and stops its daemon when dropped, even when the test fails.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The binary cargo built for these tests.
pub fn binary() -> &'static str {
    env!("CARGO_BIN_EXE_glacierfs")
}

/// Whether FUSE mounts can run here. Under CI a missing /dev/fuse is an error, not a skip.
pub fn fuse_available() -> bool {
    // SAFETY: geteuid has no preconditions.
    let ok = Path::new("/dev/fuse").exists() && unsafe { libc::geteuid() } == 0;
    if !ok {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "FUSE tests need /dev/fuse and root, and CI=true says they must run"
        );
        eprintln!("skipping: FUSE tests need /dev/fuse and root");
    }
    ok
}

/// Environment for a glacierfs process: the emulator's well-known credentials (it checks every
/// signature; moto takes any), no profile files, no IMDS.
pub fn aws_env(cmd: &mut Command) -> &mut Command {
    use glacier_emulator::{ACCESS_KEY_ID, SECRET_ACCESS_KEY};
    cmd.env("AWS_ACCESS_KEY_ID", ACCESS_KEY_ID)
        .env("AWS_SECRET_ACCESS_KEY", SECRET_ACCESS_KEY)
        .env("AWS_REGION", "us-east-1")
        .env("AWS_CONFIG_FILE", "/dev/null")
        .env("AWS_SHARED_CREDENTIALS_FILE", "/dev/null")
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .env_remove("AWS_PROFILE")
        .env_remove("AWS_SESSION_TOKEN")
}

/// Is `path` a glacierfs mount right now?
pub fn is_mounted(path: &Path) -> bool {
    let Ok(info) = std::fs::read_to_string("/proc/self/mountinfo") else {
        return false;
    };
    let p = path.to_string_lossy();
    info.lines().any(|l| {
        let fields: Vec<&str> = l.split(' ').collect();
        fields.get(4) == Some(&p.as_ref()) && l.contains("glacierfs")
    })
}

/// Lazily unmounts `path` if anything is mounted there.
pub fn force_unmount(path: &Path) {
    let _ = Command::new("umount")
        .arg("-l")
        .arg(path)
        .stderr(Stdio::null())
        .status();
}

/// Waits for `cond`, polling, up to `timeout`; false if it never held.
pub fn wait_until(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let start = Instant::now();
    while start.elapsed() < timeout {
        if cond() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    cond()
}

fn statfs_ok(path: &Path) -> bool {
    use std::os::unix::ffi::OsStrExt;
    let Ok(c) = std::ffi::CString::new(path.as_os_str().as_bytes()) else {
        return false;
    };
    // SAFETY: statfs is plain data, for which all zeroes is a valid value.
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: `c` is a valid C string and `st` a writable statfs that outlives the call.
    unsafe { libc::statfs(c.as_ptr(), &mut st) == 0 }
}

/// Starts `glacierfs mount --foreground` and waits until its mount answers.
fn spawn_daemon(
    endpoint: &str,
    cache_dir: &Path,
    mountpoint: &Path,
    extra: &[&str],
    log: &tempfile::NamedTempFile,
    log_filter: Option<&str>,
) -> Result<Child, String> {
    // Appended, so a remount's log follows the killed daemon's instead of overwriting it.
    let log_out = std::fs::OpenOptions::new()
        .append(true)
        .open(log.path())
        .map_err(|e| e.to_string())?;
    let mut cmd = Command::new(binary());
    aws_env(&mut cmd)
        .arg("mount")
        .arg("--foreground")
        .arg("--endpoint-url")
        .arg(endpoint)
        .arg("--region")
        .arg("us-east-1")
        .arg("--cache-dir")
        .arg(cache_dir)
        .arg("--poll-interval")
        .arg("1s")
        .args(extra)
        .arg(mountpoint)
        .env(
            "RUST_LOG",
            log_filter.map(str::to_owned).unwrap_or_else(|| {
                std::env::var("GLACIERFS_TEST_LOG").unwrap_or_else(|_| "info".into())
            }),
        )
        .stdout(Stdio::null())
        .stderr(Stdio::from(log_out));
    let logged_before = std::fs::metadata(log.path()).map(|m| m.len()).unwrap_or(0);
    let mut child = cmd.spawn().map_err(|e| e.to_string())?;
    // A live mount answers statfs (which always reaches the daemon); a stale one says
    // "Transport endpoint is not connected". And it must be this daemon's mount: a mount the
    // previous daemon left can still answer for a moment, so wait for this one to say it has
    // mounted, too.
    let says_mounted = || {
        std::fs::read(log.path())
            .ok()
            .and_then(|t| t.get(logged_before as usize..).map(|t| t.to_vec()))
            .is_some_and(|t| String::from_utf8_lossy(&t).contains("mounted at"))
    };
    let live = || says_mounted() && is_mounted(mountpoint) && statfs_ok(mountpoint);
    let up = wait_until(Duration::from_secs(30), || {
        live() || matches!(child.try_wait(), Ok(Some(_)))
    });
    let exited = child.try_wait().ok().flatten();
    if !up || !live() || exited.is_some() {
        let (mounted, answering) = (is_mounted(mountpoint), statfs_ok(mountpoint));
        let _ = child.kill();
        let status = child.wait().ok();
        let err = std::fs::read_to_string(log.path()).unwrap_or_default();
        return Err(format!(
            "glacierfs did not mount (exit {status:?}, mounted {mounted}, answering \
             {answering}): {err}"
        ));
    }
    Ok(child)
}

/// A running glacierfs mount.
pub struct Mount {
    pub mountpoint: PathBuf,
    pub cache_dir: PathBuf,
    child: Option<Child>,
    /// The daemon's stderr; a file, not a pipe, so a chatty daemon can never block on it.
    log: tempfile::NamedTempFile,
    /// The daemon's RUST_LOG, when a test chose it.
    log_filter: Option<String>,
    _mnt_dir: tempfile::TempDir,
}

impl Mount {
    /// Mounts with `--foreground` in a child process and waits until the mount is up.
    /// `cache_dir` is kept by the caller so a test can remount on the same catalog.
    pub fn start(endpoint: &str, cache_dir: &Path, extra: &[&str]) -> Mount {
        Self::try_start(endpoint, cache_dir, extra).unwrap_or_else(|e| panic!("mount failed: {e}"))
    }

    pub fn try_start(endpoint: &str, cache_dir: &Path, extra: &[&str]) -> Result<Mount, String> {
        Self::start_logging(endpoint, cache_dir, extra, None)
    }

    /// As [`Mount::start`], with the daemon's log filter (RUST_LOG) set to `filter`.
    pub fn start_with_log(endpoint: &str, cache_dir: &Path, extra: &[&str], filter: &str) -> Mount {
        Self::start_logging(endpoint, cache_dir, extra, Some(filter))
            .unwrap_or_else(|e| panic!("mount failed: {e}"))
    }

    fn start_logging(
        endpoint: &str,
        cache_dir: &Path,
        extra: &[&str],
        log_filter: Option<&str>,
    ) -> Result<Mount, String> {
        let mnt_dir = tempfile::Builder::new()
            .prefix("glacierfs-mnt")
            .tempdir()
            .map_err(|e| e.to_string())?;
        let mountpoint = mnt_dir.path().to_path_buf();
        let log = tempfile::NamedTempFile::new().map_err(|e| e.to_string())?;
        let child = spawn_daemon(endpoint, cache_dir, &mountpoint, extra, &log, log_filter)?;
        Ok(Mount {
            mountpoint,
            cache_dir: cache_dir.to_owned(),
            child: Some(child),
            log,
            log_filter: log_filter.map(str::to_owned),
            _mnt_dir: mnt_dir,
        })
    }

    /// Starts a new daemon on the same mountpoint and cache, as a user would after a crash:
    /// the stale mount the killed daemon left must be cleared by the new one.
    pub fn remount(&mut self, endpoint: &str, extra: &[&str]) {
        self.kill();
        // The dead daemon's mount must stop answering before the new daemon starts, or the
        // wait below could take the old mount for the new one.
        wait_until(Duration::from_secs(10), || !statfs_ok(&self.mountpoint));
        let child = spawn_daemon(
            endpoint,
            &self.cache_dir,
            &self.mountpoint,
            extra,
            &self.log,
            self.log_filter.as_deref(),
        )
        .unwrap_or_else(|e| panic!("remount failed: {e}"));
        self.child = Some(child);
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        if rel.is_empty() {
            self.mountpoint.clone()
        } else {
            self.mountpoint.join(rel)
        }
    }

    /// What the daemon has logged so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(self.log.path()).unwrap_or_default()
    }

    /// SIGKILL, as a crash would; the stale mount stays behind.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERM, and the daemon's exit status.
    pub fn terminate(&mut self) -> Option<std::process::ExitStatus> {
        let mut c = self.child.take()?;
        // SAFETY: kill takes plain integers; the daemon is this test's own child.
        unsafe { libc::kill(c.id() as i32, libc::SIGTERM) };
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(20) {
            if let Ok(Some(status)) = c.try_wait() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = c.kill();
        c.wait().ok()
    }

    /// Unmounts and waits for the daemon to exit; returns its stderr.
    pub fn unmount(mut self) -> String {
        self.stop()
    }

    fn stop(&mut self) -> String {
        let _ = Command::new("umount").arg(&self.mountpoint).status();
        if let Some(mut c) = self.child.take() {
            let exited = wait_until(Duration::from_secs(20), || {
                matches!(c.try_wait(), Ok(Some(_)))
            });
            if !exited {
                let _ = c.kill();
            }
            let _ = c.wait();
        }
        let err = self.log_text();
        if is_mounted(&self.mountpoint) {
            force_unmount(&self.mountpoint);
        }
        err
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        let err = self.stop();
        if std::thread::panicking() && !err.is_empty() {
            eprintln!("--- glacierfs log ---\n{err}\n---");
        }
    }
}

/// Unmounts a path when dropped: for mounts made by a detached `glacierfs mount`.
pub struct UnmountGuard(pub PathBuf);

impl Drop for UnmountGuard {
    fn drop(&mut self) {
        if is_mounted(&self.0) {
            let _ = Command::new("umount").arg(&self.0).status();
        }
        if is_mounted(&self.0) {
            force_unmount(&self.0);
        }
    }
}

impl Mount {
    /// The daemon's process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }
}

/// `glacierfs sync --wait` on `path` (a file or directory in a mount): uploads what is staged
/// there now and returns once it is in the vault; fails the test if the command fails.
pub fn sync_wait(path: &Path) {
    let out = aws_env(&mut Command::new(binary()))
        .args(["sync", "--wait"])
        .arg(path)
        .output()
        .expect("glacierfs sync runs");
    assert!(
        out.status.success(),
        "sync failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}
