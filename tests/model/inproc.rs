//! The model's backend without a kernel: the daemon's stack in this process
//! (`support::inproc`), over a fresh emulator per case, with the mount options of the mounted
//! cases. Only the job poll interval is shorter than a command line can say, so that waiting
//! for inventories and retrievals costs milliseconds; it changes when the daemon looks, not
//! what it does.

use std::collections::BTreeMap;
use std::time::{Duration, UNIX_EPOCH};

use super::harness::{Backend, Kind, Meta, SETTLE};
use super::mounted::{case_args, case_emulator};
use crate::support::emulator::Emulator;
use crate::support::inproc::{log_tail, Fh, InProc};

/// How often the daemon checks running jobs, and the harness what it waits for.
const POLL: Duration = Duration::from_millis(1);
/// How long a closed file with no write-back delay may stay staged before it is taken for one
/// waiting out a backoff rather than about to go up.
const GRACE: Duration = Duration::from_millis(200);

pub struct InProcBackend {
    fs: InProc,
    long_delay: bool,
    /// The handles open now, whose files never start an upload.
    open: std::sync::Mutex<Vec<Fh>>,
}

impl InProcBackend {
    pub fn start(long_delay: bool) -> InProcBackend {
        let args = case_args(long_delay);
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        let fs = InProc::start(case_emulator(), &refs, |a| a.poll_interval = POLL);
        fs.settle_first_access(SETTLE)
            .unwrap_or_else(|e| panic!("{e}"));
        InProcBackend {
            fs,
            long_delay,
            open: Default::default(),
        }
    }

    fn walk(
        &self,
        dir: &str,
        prefix: &str,
        out: &mut BTreeMap<String, Meta>,
    ) -> Result<(), String> {
        let entries = self
            .fs
            .readdir(dir)
            .map_err(|e| format!("read_dir {prefix:?}: {}", err(e)))?;
        for (name, attr) in entries {
            let rel = format!("{prefix}{name}");
            // A listing's attributes, then a stat of each entry, as the mounted walk does.
            let path = format!("{dir}/{name}");
            let a = self
                .fs
                .getattr(&path)
                .map_err(|e| format!("stat {rel}: {}", err(e)))?;
            if a != attr {
                return Err(format!("{rel}: stat says {a:?}, the listing {attr:?}"));
            }
            use glacierfs::fs::FileKind;
            let is_dir = a.kind == FileKind::Directory;
            if is_dir {
                self.walk(&path, &format!("{rel}/"), out)?;
            }
            let kind = match a.kind {
                FileKind::Directory => Kind::Dir,
                FileKind::RegularFile => Kind::File,
                FileKind::NamedPipe => Kind::Fifo,
                FileKind::Symlink => {
                    let t = self
                        .fs
                        .fs()
                        .readlink(a.ino)
                        .map_err(|e| format!("readlink {rel}: {e}"))?;
                    Kind::Link(String::from_utf8_lossy(&t).into_owned())
                }
                _ => Kind::Other,
            };
            let mtime = a
                .mtime
                .duration_since(UNIX_EPOCH)
                .ok()
                .map(|d| d.as_secs() as i64);
            out.insert(
                rel,
                Meta {
                    dir: is_dir,
                    kind,
                    len: if is_dir { 0 } else { a.size },
                    mode: u32::from(a.perm) & 0o7777,
                    mtime,
                },
            );
        }
        Ok(())
    }
}

impl InProcBackend {
    fn held(&self) -> std::sync::MutexGuard<'_, Vec<Fh>> {
        self.open.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Waits until no upload is in flight or about to start: every visible file is cached,
    /// held open, or (with the long delay) staged and not due. Unlinks, renames (which may
    /// replace a file) and crashes wait for this, so they come between uploads, as they do
    /// through the mount in practice: there the kernel round trips and the remount take longer
    /// than a case's uploads. One that cuts an upload off after Glacier stored the archive but
    /// before its reply was recorded leaves a copy that RELIABILITY.md lets the next inventory
    /// settle, and the model's check before that inventory allows only a copy of a file's
    /// current version after a crash: the in-process runs, fast enough to land there often,
    /// would fail on it.
    fn quiesce(&self) -> Result<(), String> {
        let held: Vec<u64> = self.held().iter().map(|f| f.ino).collect();
        let start = std::time::Instant::now();
        loop {
            let mut uploading = Vec::new();
            let mut due = Vec::new();
            for vault in super::ops::VAULTS {
                self.busy_files(vault, &held, &mut uploading, &mut due);
            }
            // A file still staged after the grace is not due: a failed upload waits out its
            // backoff (which only `sync` cuts short).
            let waiting = !uploading.is_empty() || (!due.is_empty() && start.elapsed() < GRACE);
            if !waiting {
                return Ok(());
            }
            if start.elapsed() > SETTLE {
                return Err(format!(
                    "uploads still running before the crash: {uploading:?}"
                ));
            }
            std::thread::sleep(POLL);
        }
    }

    /// Files uploading now, and closed files staged with no delay (due at once).
    fn busy_files(
        &self,
        dir: &str,
        held: &[u64],
        uploading: &mut Vec<String>,
        due: &mut Vec<String>,
    ) {
        for (name, attr) in self.fs.readdir(dir).unwrap_or_default() {
            let path = format!("{dir}/{name}");
            if attr.kind == glacierfs::fs::FileKind::Directory {
                self.busy_files(&path, held, uploading, due);
                continue;
            }
            match self.fs.getxattr(&path, "user.glacier.state").as_deref() {
                Ok("uploading") => uploading.push(path),
                Ok("staged") if !self.long_delay && !held.contains(&attr.ino) => due.push(path),
                _ => {}
            }
        }
    }
}

/// The directory of a mount-relative path and the last name in it.
fn split(path: &str) -> (&str, &str) {
    path.rsplit_once('/').unwrap_or(("", path))
}

/// What the kernel does before it asks the daemon to make `path`: its parent must be a
/// directory, and the name must be free (EEXIST, whatever is there, a dangling symlink too).
fn parent_for_new(fs: &InProc, path: &str) -> Result<u64, i32> {
    let (dir, name) = split(path);
    let d = fs.lookup(dir)?;
    if d.kind != glacierfs::fs::FileKind::Directory {
        return Err(libc::ENOTDIR);
    }
    match fs.fs().lookup(d.ino, std::ffi::OsStr::new(name)) {
        Ok(_) => Err(libc::EEXIST),
        Err(glacierfs::fs::FsError::NotFound(_)) => Ok(d.ino),
        Err(e) => Err(e.errno()),
    }
}

/// Waits until the vault attribute `name` of `vault` satisfies `done`, finishing every job
/// the emulator has meanwhile.
fn wait_attr(
    fs: &InProc,
    vault: &str,
    name: &str,
    done: impl Fn(&str) -> bool,
) -> Result<(), String> {
    let start = std::time::Instant::now();
    loop {
        fs.emu.complete_all_jobs();
        let now = fs.getxattr(vault, name);
        if now.as_deref().is_ok_and(&done) {
            return Ok(());
        }
        if start.elapsed() > SETTLE {
            return Err(format!("{vault}: {name} stayed {now:?}"));
        }
        std::thread::sleep(POLL);
    }
}

fn err(e: i32) -> std::io::Error {
    std::io::Error::from_raw_os_error(e)
}

impl Backend for InProcBackend {
    type File = Fh;

    fn open(&self, path: &str, flags: i32, mode: u32) -> Result<Fh, i32> {
        let f = self.fs.open(path, flags, mode)?;
        self.held().push(f);
        Ok(f)
    }

    fn pwrite(&self, f: &Fh, off: u64, data: &[u8]) -> Result<(), String> {
        self.fs.write(*f, off, data).map_err(|e| err(e).to_string())
    }

    fn ftruncate(&self, f: &Fh, size: u64) -> Result<(), String> {
        self.fs.ftruncate(*f, size).map_err(|e| err(e).to_string())
    }

    fn fsync(&self, f: &Fh) -> Result<(), String> {
        self.fs.fsync(*f).map_err(|e| err(e).to_string())
    }

    fn close(&self, f: Fh) -> Result<(), i32> {
        self.held().retain(|h| *h != f);
        self.fs.close(f)
    }

    fn truncate(&self, path: &str, size: u64) -> Result<(), i32> {
        self.fs.truncate(path, size)
    }

    fn rename(&self, from: &str, to: &str) -> Result<(), i32> {
        if let Err(e) = self.quiesce() {
            panic!("{e}");
        }
        self.fs.rename(from, to)
    }

    fn unlink(&self, path: &str) -> Result<(), i32> {
        if let Err(e) = self.quiesce() {
            panic!("{e}");
        }
        self.fs.unlink(path)
    }

    fn mkdir(&self, path: &str) -> Result<(), i32> {
        self.fs.mkdir(path, 0o777)
    }

    fn rmdir(&self, path: &str) -> Result<(), i32> {
        self.fs.rmdir(path)
    }

    fn chmod(&self, path: &str, mode: u32) -> Result<(), i32> {
        self.fs.chmod(path, mode)
    }

    fn utime(&self, path: &str, secs: i64) -> Result<(), i32> {
        self.fs.utime(path, secs)
    }

    fn read(&self, path: &str) -> Result<Vec<u8>, i32> {
        self.fs.read_file(path)
    }

    fn write_file(&self, path: &str, data: &[u8]) -> Result<(), String> {
        self.fs
            .write_file(path, data)
            .map_err(|e| err(e).to_string())
    }

    fn xattr(&self, path: &str, name: &str) -> Result<String, i32> {
        self.fs.getxattr(path, name)
    }

    fn root(&self) -> Result<Vec<String>, String> {
        let entries = self
            .fs
            .readdir("")
            .map_err(|e| format!("listing the root: {}", err(e)))?;
        Ok(entries
            .into_iter()
            .map(|(n, _)| n)
            .filter(|n| n != ".jobs")
            .collect())
    }

    fn walk(&self, dir: &str) -> Result<BTreeMap<String, Meta>, String> {
        let mut out = BTreeMap::new();
        self.walk(dir, "", &mut out)?;
        Ok(out)
    }

    fn sync_wait(&self, paths: &[String]) -> Result<(), String> {
        self.fs.sync_wait(paths, POLL, SETTLE)
    }

    fn crash(&mut self, _open: Vec<Fh>) {
        if let Err(e) = self.quiesce() {
            panic!("{e}");
        }
        self.held().clear();
        self.fs.crash();
        if let Err(e) = self.fs.settle_first_access(SETTLE) {
            panic!("{e}");
        }
    }

    fn symlink(&self, target: &str, path: &str) -> Result<(), i32> {
        let parent = parent_for_new(&self.fs, path)?;
        let (uid, gid) = (0, 0);
        self.fs
            .fs()
            .symlink(
                parent,
                std::ffi::OsStr::new(split(path).1),
                target.as_bytes(),
                uid,
                gid,
            )
            .map(drop)
            .map_err(|e| e.errno())
    }

    fn mkfifo(&self, path: &str, mode: u32) -> Result<(), i32> {
        let parent = parent_for_new(&self.fs, path)?;
        self.fs
            .fs()
            .mknod(
                parent,
                std::ffi::OsStr::new(split(path).1),
                libc::S_IFIFO | (mode & !crate::support::inproc::UMASK),
                0,
                0,
                0,
            )
            .map(drop)
            .map_err(|e| e.errno())
    }

    fn readlink(&self, path: &str) -> Result<String, i32> {
        let a = self.fs.lookup(path)?;
        self.fs
            .fs()
            .readlink(a.ino)
            .map(|t| String::from_utf8_lossy(&t).into_owned())
            .map_err(|e| e.errno())
    }

    fn snapshot(&self, vault: &str, files: &[String]) -> Result<(), String> {
        if !files.is_empty() {
            self.sync_wait(files)?;
        }
        let before = self.fs.getxattr(vault, "user.glacier.snapshot");
        self.fs
            .setxattr(vault, "user.glacier.snapshot", b"")
            .map_err(|e| format!("asking for a snapshot of {vault}: {}", err(e)))?;
        wait_attr(&self.fs, vault, "user.glacier.snapshot", |now| {
            now.starts_with("confirmed ") && before.as_deref().ok() != Some(now)
        })
    }

    fn restore(&self, vault: &str) -> Result<(), String> {
        self.fs
            .setxattr(vault, "user.glacier.restore", b"")
            .map_err(|e| format!("asking for a restore of {vault}: {}", err(e)))?;
        wait_attr(&self.fs, vault, "user.glacier.restore", |now| {
            now.starts_with("applied")
        })
    }

    fn lose_machine(&mut self, clean: bool) {
        self.held().clear();
        self.fs.lose_machine(clean);
    }

    fn emu(&self) -> &Emulator {
        &self.fs.emu
    }

    fn log_tail(&self) -> String {
        log_tail(300)
    }

    fn poll(&self) -> Duration {
        POLL
    }
}
