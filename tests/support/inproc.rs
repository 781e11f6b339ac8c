//! The in-process harness: the whole stack below FUSE ([`glacierfs::daemon::Stack`], the same
//! assembly the daemon mounts) over a Glacier emulator, driven by path with no kernel and no
//! mount, as mountpoint-s3's `tests/fs.rs` drives its file system.
//!
//! Each operation does what the kernel would do with the system call of the same name and
//! then makes the calls the FUSE adapter (`src/fs/fuse.rs`) makes for the requests the kernel
//! sends: a path is looked up component by component from the root inode, `open(O_CREAT)`
//! looks the name up before it creates, `close` is a release, `truncate` a setattr without a
//! handle. What the kernel decides on its own before a request reaches the daemon is decided
//! here in the same order (EEXIST for mkdir of an existing name, EISDIR for unlink of a
//! directory or a directory opened for writing, the ancestor checks of rename, zero-length
//! writes never sent). Failures come back as the errno [`FsError::errno`] gives, which is what
//! the mounted path returns.
//!
//! A crash is [`Stack::stop`] without its clean-stop steps (handles are dropped with no
//! release, the catalog is not marked clean) followed by a new [`Stack`] on the same cache
//! directory. Unlike SIGKILL it takes effect at the background tasks' next await, so it
//! covers the crashes that happen between two steps of a task, not inside one.
//!
//! The daemon's log goes to a ring buffer ([`log_tail`]), for failure messages.

use std::collections::VecDeque;
use std::ffi::OsStr;
use std::path::Path;
use std::sync::{mpsc, Mutex, Once};
use std::time::{Duration, Instant};

use clap::Parser;
use glacierfs::catalog::{vaults, ROOT_INO};
use glacierfs::config::{Cli, Command, MountArgs};
use glacierfs::daemon::{MountError, Stack};
use glacierfs::fs::files::SetAttr;
use glacierfs::fs::{Attr, Done, FileKind, FsError, FsResult, GlacierFs};

use super::emulator::{Emulator, Op};

/// The umask the calls are made under, as the mounted tests set it.
pub const UMASK: u32 = 0o022;
/// The kernel's largest write request (the adapter asks for 1 MiB).
const MAX_WRITE: usize = 1 << 20;
/// How much one read request asks for.
const READ_CHUNK: u32 = 128 << 10;

/// An open file as the kernel knows it: the daemon's handle and the inode it is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Fh {
    pub fh: u64,
    pub ino: u64,
    /// A directory opened for reading: the kernel's opendir, which has no handle of its own.
    pub dir: bool,
}

/// An errno, as a system call on the mount would return it.
pub type Errno = i32;

fn errno(op: &str, e: FsError) -> Errno {
    e.log(op);
    e.errno()
}

/// Waits for a request that answers through a completion (mkdir, rmdir, control files).
fn answer<T: Send + 'static>(start: impl FnOnce(Done<T>)) -> FsResult<T> {
    let (tx, rx) = mpsc::channel();
    start(Box::new(move |r| {
        let _ = tx.send(r);
    }));
    rx.recv()
        .unwrap_or_else(|_| Err(FsError::Io(std::io::Error::other("request never answered"))))
}

fn caller() -> (u32, u32) {
    // SAFETY: getuid/getgid cannot fail.
    unsafe { (libc::getuid(), libc::getgid()) }
}

fn ns(secs: i64) -> i64 {
    secs.saturating_mul(1_000_000_000)
}

/// The parent part and the last name of a mount-relative path ("va/d/a" -> "va/d", "a").
fn split(path: &str) -> (&str, &str) {
    match path.rfind('/') {
        Some(i) => (&path[..i], &path[i + 1..]),
        None => ("", path),
    }
}

/// Whether `p` is `dir` or lies below it (mount-relative paths; no links, so paths are
/// ancestry).
fn at_or_below(p: &str, dir: &str) -> bool {
    p == dir || (p.len() > dir.len() && p.starts_with(dir) && p.as_bytes()[dir.len()] == b'/')
}

/// A ring of the last log lines of every in-process stack of this test binary.
struct Ring {
    lines: Mutex<VecDeque<String>>,
    level: log::LevelFilter,
}

static RING: std::sync::OnceLock<Ring> = std::sync::OnceLock::new();
const RING_LINES: usize = 400;

impl log::Log for Ring {
    fn enabled(&self, m: &log::Metadata<'_>) -> bool {
        m.level() <= self.level
            && (m.target().starts_with("glacierfs") || m.level() <= log::Level::Warn)
    }

    fn log(&self, r: &log::Record<'_>) {
        if !self.enabled(r.metadata()) {
            return;
        }
        let line = format!("{} {}: {}", r.level(), r.target(), r.args());
        let mut lines = self.lines.lock().unwrap_or_else(|e| e.into_inner());
        if lines.len() == RING_LINES {
            lines.pop_front();
        }
        lines.push_back(line);
    }

    fn flush(&self) {}
}

/// The last `n` lines the in-process daemons logged.
pub fn log_tail(n: usize) -> String {
    let Some(ring) = RING.get() else {
        return String::new();
    };
    let lines = ring.lines.lock().unwrap_or_else(|e| e.into_inner());
    let skip = lines.len().saturating_sub(n);
    lines
        .iter()
        .skip(skip)
        .cloned()
        .collect::<Vec<_>>()
        .join("\n")
}

/// Process-wide set-up, once: dummy credentials and no profile files for the SDK (before any
/// client reads the environment), and the log ring.
fn init() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        for (k, v) in [
            ("AWS_ACCESS_KEY_ID", glacier_emulator::ACCESS_KEY_ID),
            ("AWS_SECRET_ACCESS_KEY", glacier_emulator::SECRET_ACCESS_KEY),
            ("AWS_REGION", "us-east-1"),
            ("AWS_CONFIG_FILE", "/dev/null"),
            ("AWS_SHARED_CREDENTIALS_FILE", "/dev/null"),
            ("AWS_EC2_METADATA_DISABLED", "true"),
        ] {
            std::env::set_var(k, v);
        }
        std::env::remove_var("AWS_PROFILE");
        std::env::remove_var("AWS_SESSION_TOKEN");
        let level = match std::env::var("GLACIERFS_TEST_LOG").as_deref() {
            Ok("trace") => log::LevelFilter::Trace,
            Ok("debug") => log::LevelFilter::Debug,
            Ok("warn") => log::LevelFilter::Warn,
            _ => log::LevelFilter::Info,
        };
        let ring = RING.get_or_init(|| Ring {
            lines: Mutex::new(VecDeque::new()),
            level,
        });
        if log::set_logger(ring).is_ok() {
            log::set_max_level(level);
        }
    });
}

/// Mount options as `glacierfs mount` would parse them from `extra`, with the endpoint and
/// region the mounted tests give.
pub fn mount_args(endpoint: &str, cache_dir: &Path, extra: &[&str]) -> MountArgs {
    let cache = cache_dir.to_string_lossy();
    let mut argv = vec![
        "glacierfs",
        "mount",
        "--endpoint-url",
        endpoint,
        "--region",
        "us-east-1",
        "--cache-dir",
        &cache,
        "--poll-interval",
        "1s",
    ];
    argv.extend_from_slice(extra);
    argv.push("/nonexistent-mountpoint");
    match Cli::try_parse_from(argv) {
        Ok(Cli {
            command: Command::Mount(m),
        }) => m,
        Ok(_) => panic!("not a mount command"),
        Err(e) => panic!("mount options {extra:?}: {e}"),
    }
}

/// A fresh cache directory, in memory where the machine has a tmpfs at /dev/shm: the catalog
/// syncs at every commit, which on a disk costs more than all the rest of a case.
fn cache_dir() -> tempfile::TempDir {
    let shm = Path::new("/dev/shm");
    let b = tempfile::Builder::new()
        .prefix("glacierfs-inproc")
        .to_owned();
    let dir = if shm.is_dir() {
        b.tempdir_in(shm)
    } else {
        b.tempdir()
    };
    dir.expect("cache dir")
}

/// An emulator, a cache directory and the stack over them. Fields drop in order: the stack
/// before the emulator it talks to and the cache it uses.
pub struct InProc {
    stack: Option<Stack>,
    pub args: MountArgs,
    pub emu: Emulator,
    cache: tempfile::TempDir,
}

impl InProc {
    /// Starts a stack on a fresh cache directory over `emu`, with `extra` mount options; `tune`
    /// may then change what the command line cannot say (sub-second poll intervals).
    pub fn start(emu: Emulator, extra: &[&str], tune: impl FnOnce(&mut MountArgs)) -> InProc {
        init();
        let cache = cache_dir();
        let mut args = mount_args(&emu.endpoint(), cache.path(), extra);
        tune(&mut args);
        let stack = Stack::start(&args, cache.path())
            .unwrap_or_else(|e| panic!("in-process start failed: {e}\n{}", log_tail(40)));
        InProc {
            stack: Some(stack),
            args,
            emu,
            cache,
        }
    }

    pub fn fs(&self) -> &GlacierFs {
        self.stack.as_ref().expect("a running stack").fs()
    }

    pub fn cache_dir(&self) -> &Path {
        self.cache.path()
    }

    pub fn stack(&self) -> &Stack {
        self.stack.as_ref().expect("a running stack")
    }

    /// Looks into every vault, as a mount's first access does, and waits until the daemon has
    /// asked Glacier about each (DescribeVault) and recorded the answer; with no newer
    /// inventory upstream that is all a first access does. Its check then cannot land in the
    /// middle of what comes next: one that finds an inventory taken later would merge it after
    /// uploads made since, which the emulator's clock (hours ahead of the daemon's once a job
    /// has run) dates after them. Only right after a start: a vault looked into before is not
    /// checked again.
    pub fn settle_first_access(&self, timeout: Duration) -> Result<(), String> {
        let described = || self.emu.stats().requests_for(Op::DescribeVault);
        let checked = || -> Result<bool, String> {
            let rows = self
                .stack()
                .catalog()
                .read(vaults::all)
                .map_err(|e| e.to_string())?;
            Ok(present(rows)
                .iter()
                .all(|v| v.inventory_checked_s.is_some()))
        };
        let before = described();
        let rows = present(
            self.stack()
                .catalog()
                .read(vaults::all)
                .map_err(|e| e.to_string())?,
        );
        for v in &rows {
            let _ = self.readdir(&v.name);
        }
        let want = before + rows.len() as u64;
        let start = Instant::now();
        loop {
            if described() >= want && checked()? {
                return Ok(());
            }
            if start.elapsed() > timeout {
                return Err(format!(
                    "the first access never checked the vaults: {rows:?}"
                ));
            }
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    /// Stops the stack as a crash would and starts a new one on the same cache directory.
    /// Handles open before are gone.
    pub fn crash(&mut self) {
        self.restart(false);
    }

    /// Stops the stack as the end of a mount does and starts a new one.
    pub fn restart_clean(&mut self) {
        self.restart(true);
    }

    /// The machine is lost: the stack stops (cleanly, or as a crash) and a new one starts on a
    /// new, empty cache directory over the same emulator, as a new machine would mount the
    /// same vaults.
    pub fn lose_machine(&mut self, clean: bool) {
        if let Some(s) = self.stack.take() {
            s.stop(clean);
        }
        self.cache = cache_dir();
        self.args.cache.cache_dir = Some(self.cache.path().to_owned());
        let stack = Stack::start(&self.args, self.cache.path())
            .unwrap_or_else(|e| panic!("in-process start failed: {e}\n{}", log_tail(40)));
        self.stack = Some(stack);
    }

    fn restart(&mut self, clean: bool) {
        if let Some(s) = self.stack.take() {
            s.stop(clean);
        }
        // The cache lock is an flock on an open file. A process another test thread is
        // spawning at the moment of the stop holds a copy of that file until its exec closes
        // it, so the lock can stay ours for a few milliseconds after the stack let it go.
        // Only that case is waited for: a lock held by another pid fails at once.
        let start = Instant::now();
        let stack = loop {
            match Stack::start(&self.args, self.cache.path()) {
                Err(MountError::Locked { pid, .. })
                    if pid == Some(std::process::id())
                        && start.elapsed() < Duration::from_secs(5) =>
                {
                    std::thread::sleep(Duration::from_millis(5));
                }
                started => {
                    break started.unwrap_or_else(|e| {
                        panic!("in-process restart failed: {e}\n{}", log_tail(40))
                    })
                }
            }
        };
        self.stack = Some(stack);
    }

    // ---- paths, as the kernel walks them ----

    /// The attributes `path` resolves to, walking from the root.
    pub fn lookup(&self, path: &str) -> Result<Attr, Errno> {
        let mut attr = self
            .fs()
            .getattr(ROOT_INO)
            .map_err(|e| errno("getattr", e))?;
        for seg in path.split('/').filter(|s| !s.is_empty()) {
            if attr.kind != FileKind::Directory {
                return Err(libc::ENOTDIR);
            }
            attr = self
                .fs()
                .lookup(attr.ino, OsStr::new(seg))
                .map_err(|e| errno("lookup", e))?;
        }
        Ok(attr)
    }

    /// The directory a new or existing entry `path` lives in, and its name.
    fn parent<'p>(&self, path: &'p str) -> Result<(Attr, &'p str), Errno> {
        let (dir, name) = split(path);
        let p = self.lookup(dir)?;
        if p.kind != FileKind::Directory {
            return Err(libc::ENOTDIR);
        }
        Ok((p, name))
    }

    /// The entry `name` in `dir`: `Ok(None)` when there is none.
    fn child(&self, dir: &Attr, name: &str) -> Result<Option<Attr>, Errno> {
        match self.fs().lookup(dir.ino, OsStr::new(name)) {
            Ok(a) => Ok(Some(a)),
            Err(FsError::NotFound(_)) => Ok(None),
            Err(e) => Err(errno("lookup", e)),
        }
    }

    pub fn getattr(&self, path: &str) -> Result<Attr, Errno> {
        let a = self.lookup(path)?;
        self.fs().getattr(a.ino).map_err(|e| errno("getattr", e))
    }

    // ---- open files ----

    /// open(2) with `flags`; `mode` applies when O_CREAT creates the file.
    pub fn open(&self, path: &str, flags: i32, mode: u32) -> Result<Fh, Errno> {
        if flags & libc::O_CREAT == 0 {
            let a = self.lookup(path)?;
            return self.open_attr(&a, flags);
        }
        let (dir, name) = self.parent(path)?;
        match self.child(&dir, name)? {
            Some(_) if flags & libc::O_EXCL != 0 => Err(libc::EEXIST),
            // The kernel opens what is there; O_CREAT is not passed on.
            Some(a) => self.open_attr(&a, flags & !(libc::O_CREAT | libc::O_EXCL)),
            None => {
                let (uid, gid) = caller();
                let (a, fh) = self
                    .fs()
                    .create(dir.ino, OsStr::new(name), mode & !UMASK, uid, gid)
                    .map_err(|e| errno("create", e))?;
                Ok(Fh {
                    fh,
                    ino: a.ino,
                    dir: false,
                })
            }
        }
    }

    fn open_attr(&self, a: &Attr, flags: i32) -> Result<Fh, Errno> {
        let write = flags & libc::O_ACCMODE != libc::O_RDONLY;
        if a.kind == FileKind::Directory {
            // The VFS refuses to open a directory for writing; reading one is an opendir.
            if write {
                return Err(libc::EISDIR);
            }
            return Ok(Fh {
                fh: 0,
                ino: a.ino,
                dir: true,
            });
        }
        let fh = if self.fs().is_control(a.ino) {
            answer(|done| self.fs().open_control(a.ino, done))
        } else {
            self.fs().open(a.ino, flags)
        };
        let fh = fh.map_err(|e| errno("open", e))?;
        Ok(Fh {
            fh,
            ino: a.ino,
            dir: false,
        })
    }

    /// pread: up to `size` bytes at `off`.
    pub fn read(&self, f: Fh, off: u64, size: u32) -> Result<Vec<u8>, Errno> {
        if f.dir {
            return Err(libc::EISDIR);
        }
        self.fs()
            .read(f.fh, off, size)
            .map_err(|e| errno("read", e))
    }

    /// pwrite of all of `data` at `off`, in requests no larger than the kernel's.
    pub fn write(&self, f: Fh, off: u64, data: &[u8]) -> Result<(), Errno> {
        if f.dir {
            return Err(libc::EBADF);
        }
        // A write of nothing never reaches the daemon.
        for (i, chunk) in data.chunks(MAX_WRITE).enumerate() {
            let at = off + (i * MAX_WRITE) as u64;
            let n = if self.fs().is_control_handle(f.fh) {
                let (uid, _) = caller();
                answer(|done| self.fs().write_control(f.ino, f.fh, chunk, uid, done))
            } else {
                self.fs().write(f.fh, at, chunk)
            };
            let n = n.map_err(|e| errno("write", e))?;
            if n as usize != chunk.len() {
                return Err(libc::EIO);
            }
        }
        Ok(())
    }

    /// ftruncate: a setattr of the size through the handle.
    pub fn ftruncate(&self, f: Fh, size: u64) -> Result<(), Errno> {
        if f.dir {
            return Err(libc::EINVAL);
        }
        let change = SetAttr {
            size: Some(size),
            ..SetAttr::default()
        };
        self.fs()
            .setattr(f.ino, Some(f.fh), change)
            .map(drop)
            .map_err(|e| errno("setattr", e))
    }

    pub fn fsync(&self, f: Fh) -> Result<(), Errno> {
        if f.dir {
            return Ok(());
        }
        self.fs().fsync(f.fh).map_err(|e| errno("fsync", e))
    }

    /// close(2): the flush (always fine) and the release. The kernel does not pass a
    /// release's failure on to close(2); it is returned here, as the daemon failing it is a bug.
    pub fn close(&self, f: Fh) -> Result<(), Errno> {
        if f.dir {
            return Ok(());
        }
        self.fs().backings().release(f.fh);
        self.fs().release(f.fh).map_err(|e| errno("release", e))
    }

    // ---- whole files and names ----

    /// The whole file, as `std::fs::read` reads it.
    pub fn read_file(&self, path: &str) -> Result<Vec<u8>, Errno> {
        let f = self.open(path, libc::O_RDONLY, 0)?;
        if f.dir {
            return Err(libc::EISDIR);
        }
        let mut out = Vec::new();
        let result = loop {
            match self.read(f, out.len() as u64, READ_CHUNK) {
                Ok(b) if b.is_empty() => break Ok(()),
                Ok(b) => out.extend_from_slice(&b),
                Err(e) => break Err(e),
            }
        };
        let closed = self.close(f);
        result.and(closed).map(|()| out)
    }

    /// `std::fs::write`: create or truncate, write, close.
    pub fn write_file(&self, path: &str, data: &[u8]) -> Result<(), Errno> {
        let f = self.open(path, libc::O_WRONLY | libc::O_CREAT | libc::O_TRUNC, 0o666)?;
        let written = self.write(f, 0, data);
        let closed = self.close(f);
        written.and(closed)
    }

    /// truncate(2): a setattr of the size without a handle.
    pub fn truncate(&self, path: &str, size: u64) -> Result<(), Errno> {
        let a = self.lookup(path)?;
        if a.kind == FileKind::Directory {
            return Err(libc::EISDIR);
        }
        let change = SetAttr {
            size: Some(size),
            ..SetAttr::default()
        };
        self.fs()
            .setattr(a.ino, None, change)
            .map(drop)
            .map_err(|e| errno("setattr", e))
    }

    /// chmod(2): the kernel sends the new permission bits with the file's type bits.
    pub fn chmod(&self, path: &str, mode: u32) -> Result<(), Errno> {
        let a = self.lookup(path)?;
        let kind = match a.kind {
            FileKind::Directory => libc::S_IFDIR,
            FileKind::RegularFile => libc::S_IFREG,
            FileKind::Symlink => libc::S_IFLNK,
            FileKind::NamedPipe => libc::S_IFIFO,
            FileKind::Socket => libc::S_IFSOCK,
            FileKind::CharDevice => libc::S_IFCHR,
            FileKind::BlockDevice => libc::S_IFBLK,
        };
        let change = SetAttr {
            mode: Some((mode & 0o7777) | kind),
            ..SetAttr::default()
        };
        self.fs()
            .setattr(a.ino, None, change)
            .map(drop)
            .map_err(|e| errno("setattr", e))
    }

    /// utimensat(2) setting the mtime to `secs` and leaving the atime (UTIME_OMIT).
    pub fn utime(&self, path: &str, secs: i64) -> Result<(), Errno> {
        let a = self.lookup(path)?;
        let change = SetAttr {
            mtime_ns: Some(ns(secs)),
            ..SetAttr::default()
        };
        self.fs()
            .setattr(a.ino, None, change)
            .map(drop)
            .map_err(|e| errno("setattr", e))
    }

    pub fn unlink(&self, path: &str) -> Result<(), Errno> {
        let (dir, name) = self.parent(path)?;
        match self.child(&dir, name)? {
            None => Err(libc::ENOENT),
            Some(a) if a.kind == FileKind::Directory => Err(libc::EISDIR),
            Some(_) => self
                .fs()
                .unlink(dir.ino, OsStr::new(name))
                .map_err(|e| errno("unlink", e)),
        }
    }

    /// mkdir(2) with `mode` (before the umask).
    pub fn mkdir(&self, path: &str, mode: u32) -> Result<(), Errno> {
        let (dir, name) = self.parent(path)?;
        if self.child(&dir, name)?.is_some() {
            return Err(libc::EEXIST);
        }
        let (uid, gid) = caller();
        answer(|done| {
            self.fs()
                .mkdir(dir.ino, OsStr::new(name), mode & !UMASK, uid, gid, done)
        })
        .map(drop)
        .map_err(|e| errno("mkdir", e))
    }

    pub fn rmdir(&self, path: &str) -> Result<(), Errno> {
        let (dir, name) = self.parent(path)?;
        match self.child(&dir, name)? {
            None => Err(libc::ENOENT),
            Some(a) if a.kind != FileKind::Directory => Err(libc::ENOTDIR),
            Some(_) => answer(|done| self.fs().rmdir(dir.ino, OsStr::new(name), done))
                .map_err(|e| errno("rmdir", e)),
        }
    }

    /// rename(2) without flags, with the checks the kernel makes before it asks the daemon:
    /// both parents resolve, the source exists, a directory does not move below itself
    /// (EINVAL), the target is not an ancestor of the source (ENOTEMPTY), renaming an entry
    /// onto itself does nothing, and the kinds of source and target agree.
    pub fn rename(&self, from: &str, to: &str) -> Result<(), Errno> {
        let (from_dir, from_name) = self.parent(from)?;
        let (to_dir, to_name) = self.parent(to)?;
        let src = self.child(&from_dir, from_name)?.ok_or(libc::ENOENT)?;
        if at_or_below(split(to).0, from) {
            return Err(libc::EINVAL);
        }
        let dst = self.child(&to_dir, to_name)?;
        if dst.is_some() && at_or_below(split(from).0, to) {
            return Err(libc::ENOTEMPTY);
        }
        if let Some(d) = &dst {
            if d.ino == src.ino {
                return Ok(());
            }
            match (src.kind, d.kind) {
                (FileKind::Directory, FileKind::RegularFile) => return Err(libc::ENOTDIR),
                (FileKind::RegularFile, FileKind::Directory) => return Err(libc::EISDIR),
                _ => {}
            }
        }
        self.fs()
            .rename(
                from_dir.ino,
                OsStr::new(from_name),
                to_dir.ino,
                OsStr::new(to_name),
                0,
            )
            .map_err(|e| errno("rename", e))
    }

    /// The entries of a directory (without "." and ".."), with their attributes, as
    /// READDIRPLUS pages them.
    pub fn readdir(&self, path: &str) -> Result<Vec<(String, Attr)>, Errno> {
        let a = self.lookup(path)?;
        if a.kind != FileKind::Directory {
            return Err(libc::ENOTDIR);
        }
        let mut out = Vec::new();
        let mut offset = 0;
        loop {
            let page = self
                .fs()
                .readdir(a.ino, offset, 128)
                .map_err(|e| errno("readdirplus", e))?;
            let Some(last) = page.last() else {
                return Ok(out);
            };
            offset = last.cookie;
            for e in page {
                if e.name != b"." && e.name != b".." {
                    out.push((String::from_utf8_lossy(&e.name).into_owned(), e.attr));
                }
            }
        }
    }

    /// getxattr(2), as text.
    pub fn getxattr(&self, path: &str, name: &str) -> Result<String, Errno> {
        let a = self.lookup(path)?;
        let v = self
            .fs()
            .getxattr(a.ino, OsStr::new(name))
            .map_err(|e| errno("getxattr", e))?;
        Ok(String::from_utf8_lossy(&v).into_owned())
    }

    pub fn setxattr(&self, path: &str, name: &str, value: &[u8]) -> Result<(), Errno> {
        let a = self.lookup(path)?;
        self.fs()
            .setxattr(a.ino, OsStr::new(name), value)
            .map_err(|e| errno("setxattr", e))
    }

    /// `glacierfs sync --wait PATHS`: asks for the uploads through `user.glacier.sync`, then
    /// waits until no file at or under the paths is staged or uploading, polling every `poll`.
    pub fn sync_wait(
        &self,
        paths: &[String],
        poll: Duration,
        timeout: Duration,
    ) -> Result<(), String> {
        for p in paths {
            self.setxattr(p, "user.glacier.sync", b"")
                .map_err(|e| format!("sync {p}: {}", std::io::Error::from_raw_os_error(e)))?;
        }
        let start = Instant::now();
        loop {
            let mut left = Vec::new();
            for p in paths {
                self.pending(p, &mut left);
            }
            if left.is_empty() {
                return Ok(());
            }
            if start.elapsed() > timeout {
                return Err(format!(
                    "sync --wait did not return in {timeout:?}: {left:#?}"
                ));
            }
            std::thread::sleep(poll);
        }
    }

    /// Files at or under `path` still on their way to Glacier, with their state.
    fn pending(&self, path: &str, out: &mut Vec<(String, String)>) {
        let Ok(a) = self.lookup(path) else { return };
        if a.kind == FileKind::RegularFile {
            let state = self.getxattr(path, "user.glacier.state");
            if matches!(state.as_deref(), Ok("staged" | "uploading")) {
                out.push((path.to_owned(), state.unwrap_or_default()));
            }
            return;
        }
        for (name, _) in self.readdir(path).unwrap_or_default() {
            self.pending(&format!("{path}/{name}"), out);
        }
    }
}

impl Drop for InProc {
    fn drop(&mut self) {
        if let Some(s) = self.stack.take() {
            s.stop(true);
        }
    }
}

/// The vaults in view: one being deleted is out of view, and nothing looks into it.
fn present(rows: Vec<vaults::VaultRow>) -> Vec<vaults::VaultRow> {
    rows.into_iter().filter(|v| v.state == "present").collect()
}
