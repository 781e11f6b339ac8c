//! Runs one sequence of operations against a file system over a fresh emulator and against the
//! reference model side by side: every result (Ok or errno) must be the model's prediction,
//! and after every step the whole tree (names, kinds, sizes, known modes and mtimes, and the
//! bytes of every file that is on this machine) must be the model's. At the end every handle
//! is closed, everything is synced, and the vaults must hold exactly the model's files (bytes
//! and decoded descriptions) with no multipart upload left; then an inventory settles and it
//! is all checked again.
//!
//! The file system is a [`Backend`]: a real mount (`mounted.rs`) or the same stack driven in
//! process (`inproc.rs`). The checks here are the same for both.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;

use super::ops::{
    chmod_mode, pattern, utime_secs, Op, OpenMode, INITIAL_VAULTS, LINK_TARGETS, MKNOD_MODE,
    OOB_NAMES, PATHS, ROOT_NAMES, VAULTS,
};
use super::state::{Arch, Entry, Expected, Listed, Model, Predict};
use crate::support::emulator::Emulator;

/// How many snapshots went up, machines were lost and restores were applied, over every case
/// of this process: the rarer steps' share of a run, for its summary line.
pub static SNAPSHOTS: AtomicU64 = AtomicU64::new(0);
pub static MACHINE_LOSSES: AtomicU64 = AtomicU64::new(0);
pub static RESTORES: AtomicU64 = AtomicU64::new(0);

/// How long anything asynchronous (uploads, deletes, jobs, inventories) may take to show.
pub const SETTLE: Duration = Duration::from_secs(90);

/// What kind of entry a listing shows.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Kind {
    Dir,
    File,
    /// A symlink, with its target.
    Link(String),
    Fifo,
    /// Anything else (a socket, a device).
    Other,
}

/// What a listing shows of one entry.
#[derive(Clone, Debug)]
pub struct Meta {
    pub dir: bool,
    pub kind: Kind,
    pub len: u64,
    /// Permission bits.
    pub mode: u32,
    /// Seconds since the epoch.
    pub mtime: Option<i64>,
}

/// A file system under test, by mount-relative path ("va/d/a"). Results that the model
/// predicts come back as `Err(errno)`; the others as a message.
pub trait Backend {
    type File;
    /// open(2); `mode` applies when `flags` has O_CREAT and the file is created.
    fn open(&self, path: &str, flags: i32, mode: u32) -> Result<Self::File, i32>;
    fn pwrite(&self, f: &Self::File, off: u64, data: &[u8]) -> Result<(), String>;
    fn ftruncate(&self, f: &Self::File, size: u64) -> Result<(), String>;
    fn fsync(&self, f: &Self::File) -> Result<(), String>;
    /// close(2), and what it returns.
    fn close(&self, f: Self::File) -> Result<(), i32>;
    fn truncate(&self, path: &str, size: u64) -> Result<(), i32>;
    fn rename(&self, from: &str, to: &str) -> Result<(), i32>;
    fn unlink(&self, path: &str) -> Result<(), i32>;
    /// mkdir(2) with mode 0777 under the umask 022.
    fn mkdir(&self, path: &str) -> Result<(), i32>;
    fn rmdir(&self, path: &str) -> Result<(), i32>;
    fn chmod(&self, path: &str, mode: u32) -> Result<(), i32>;
    /// utimensat(2) with both times `secs`.
    fn utime(&self, path: &str, secs: i64) -> Result<(), i32>;
    /// The whole file.
    fn read(&self, path: &str) -> Result<Vec<u8>, i32>;
    /// `std::fs::write`.
    fn write_file(&self, path: &str, data: &[u8]) -> Result<(), String>;
    fn xattr(&self, path: &str, name: &str) -> Result<String, i32>;
    /// The names the mount point lists, but for the control file.
    fn root(&self) -> Result<Vec<String>, String>;
    /// Every entry under `dir` by path relative to it.
    fn walk(&self, dir: &str) -> Result<BTreeMap<String, Meta>, String>;
    /// `glacierfs sync --wait` on `paths`, bounded by [`SETTLE`].
    fn sync_wait(&self, paths: &[String]) -> Result<(), String>;
    /// The daemon dies and starts again on the same cache; `open` were its handles.
    fn crash(&mut self, open: Vec<Self::File>);
    /// symlink(2): `path` pointing at `target`.
    fn symlink(&self, target: &str, path: &str) -> Result<(), i32>;
    /// mkfifo(3) with `mode` (under the umask 022).
    fn mkfifo(&self, path: &str, mode: u32) -> Result<(), i32>;
    fn readlink(&self, path: &str) -> Result<String, i32>;
    /// `glacierfs sync --wait --snapshot VAULT` (with `files`, the vault's files no writer
    /// holds, to sync first), bounded by [`SETTLE`].
    fn snapshot(&self, vault: &str, files: &[String]) -> Result<(), String>;
    /// `glacierfs catalog restore --wait VAULT`, while the emulator finishes every job.
    fn restore(&self, vault: &str) -> Result<(), String>;
    /// The machine is lost: the daemon stops (cleanly, or as a crash) and a new one starts on
    /// a new, empty cache directory over the same vaults, and looks into each.
    fn lose_machine(&mut self, clean: bool);
    fn emu(&self) -> &Emulator;
    /// The daemon's last log lines.
    fn log_tail(&self) -> String;
    /// How often to look again while waiting for something asynchronous.
    fn poll(&self) -> Duration;
}

/// Waits for `cond`, looking every `poll`, up to `timeout`; false if it never held.
pub fn wait_until(poll: Duration, timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let start = Instant::now();
    while start.elapsed() < timeout {
        if cond() {
            return true;
        }
        std::thread::sleep(poll);
    }
    cond()
}

fn name(e: i32) -> String {
    std::io::Error::from_raw_os_error(e).to_string()
}

fn rel(v: usize, p: &str) -> String {
    format!("{}/{p}", VAULTS[v])
}

/// Compares an outcome with the model's prediction.
fn expect<T, U>(what: &str, pred: &Predict<T>, got: &Result<U, i32>) -> Result<(), String> {
    match (pred, got) {
        (Predict::Ok(_), Ok(_)) => Ok(()),
        (Predict::Err(e), Err(g)) if e == g => Ok(()),
        (Predict::Ok(_), Err(g)) => Err(format!("{what}: model says Ok, mount says {}", name(*g))),
        (Predict::Err(e), Ok(_)) => Err(format!("{what}: model says {}, mount says Ok", name(*e))),
        (Predict::Err(e), Err(g)) => Err(format!(
            "{what}: model says {}, mount says {}",
            name(*e),
            name(*g)
        )),
        (Predict::Skip, _) => Ok(()),
    }
}

/// The mt2 description another tool would write.
pub fn mt2(path: &str, mtime: i64) -> String {
    let json = format!(
        r#"{{"filename":"{path}","mtime":"{}"}}"#,
        glacierfs::codec::timefmt::format_compact(mtime)
    );
    format!("mt2 {}", URL_SAFE_NO_PAD.encode(json))
}

/// Fields drop in order: the handles before the file system (a busy mount cannot be
/// unmounted).
struct Harness<B: Backend> {
    /// Open handles, parallel to the model's.
    files: Vec<B::File>,
    /// When each vault's last snapshot went up.
    snapped: Vec<Option<Instant>>,
    b: B,
}

impl<B: Backend> Harness<B> {
    fn wait(&self, cond: impl FnMut() -> bool) -> bool {
        wait_until(self.b.poll(), SETTLE, cond)
    }

    /// `glacierfs sync --wait` on every visible file no writer holds (one held open stays
    /// staged, and `sync --wait` would wait for it forever).
    fn sync(&self, m: &mut Model) -> Result<(), String> {
        let paths: Vec<String> = m
            .files
            .keys()
            .filter(|ino| m.writers(**ino) == 0)
            .filter_map(|ino| m.path_of(*ino))
            .map(|(v, p)| rel(v, &p))
            .collect();
        m.sync();
        if paths.is_empty() {
            return Ok(());
        }
        self.b.sync_wait(&paths)
    }

    /// Lets every running job finish and waits until each file the model says is being
    /// retrieved reads back its bytes.
    fn finish_retrievals(&self, m: &mut Model) -> Result<(), String> {
        for (v, p, ino) in m.retrievals() {
            let path = rel(v, &p);
            let want = m.file(ino).content.clone();
            let mut last = Err(0);
            let ok = self.wait(|| {
                self.b.emu().complete_all_jobs();
                last = self.b.read(&path);
                last.is_ok()
            });
            if !ok {
                return Err(format!(
                    "{path} never became readable after its job finished: {:?}",
                    last.map_err(name).map(|d| d.len())
                ));
            }
            if last.as_deref() != Ok(want.as_slice()) {
                return Err(format!("{path}: retrieved bytes differ"));
            }
        }
        m.complete_jobs();
        Ok(())
    }

    fn inventory(&self, m: &mut Model) -> Result<(), String> {
        self.sync(m)?;
        let emu = self.b.emu();
        emu.advance(Duration::from_secs(3600));
        let present = present_vaults(m);
        for vault in present.iter().copied() {
            emu.take_inventory(vault);
            self.b
                .write_file(&format!("{vault}/.jobs"), b"inventory\n")
                .map_err(|e| format!("asking {vault} for an inventory: {e}"))?;
        }
        let taken_in = |vault: &str| {
            let date = self.b.xattr(vault, "user.glacier.inventory_date").ok();
            glacierfs::codec::timefmt::iso_secs(date.as_deref()) == emu.inventory_date(vault)
        };
        let ok = self.wait(|| {
            emu.complete_all_jobs();
            present.iter().all(|v| taken_in(v))
        });
        if !ok {
            return Err("the mount never took in the new inventories".into());
        }
        m.inventory();
        self.finish_retrievals(m)
    }

    /// After a cold open: the retrieval job must be started (the open does not wait for it).
    fn wait_retrieving(&self, path: &str) -> Result<(), String> {
        let state = || self.b.xattr(path, "user.glacier.state");
        if self.wait(|| state().as_deref() == Ok("retrieving")) {
            Ok(())
        } else {
            Err(format!(
                "{path}: a cold open started no retrieval (state {:?})",
                state()
            ))
        }
    }

    fn close(&mut self, m: &mut Model, hi: usize) -> Result<(), String> {
        let got = self.b.close(self.files.remove(hi));
        m.close(hi);
        got.map_err(|e| format!("close: {}", name(e)))
    }

    fn create(
        &mut self,
        m: &mut Model,
        v: usize,
        p: &str,
        data: Vec<u8>,
        keep_open: bool,
    ) -> Result<(), String> {
        let pred = m.create(v, p);
        if pred == Predict::Skip {
            return Ok(());
        }
        let flags = libc::O_WRONLY | libc::O_CREAT | libc::O_TRUNC;
        let got = self.b.open(&rel(v, p), flags, 0o644);
        expect("create", &pred, &got)?;
        if let (Predict::Ok(hi), Ok(f)) = (pred, got) {
            self.files.push(f);
            if !data.is_empty() {
                self.b
                    .pwrite(&self.files[hi], 0, &data)
                    .map_err(|e| format!("write after create: {e}"))?;
                m.write(hi, 0, &data);
            }
            if !keep_open {
                self.close(m, hi)?;
            }
        }
        Ok(())
    }

    fn open(&mut self, m: &mut Model, v: usize, p: &str, mode: OpenMode) -> Result<(), String> {
        let pred = m.open(v, p, mode);
        if pred == Predict::Skip {
            return Ok(());
        }
        let flags = match mode {
            OpenMode::RdOnly => libc::O_RDONLY,
            OpenMode::RdWr => libc::O_RDWR,
            OpenMode::WrTrunc => libc::O_WRONLY | libc::O_TRUNC,
        };
        let got = self.b.open(&rel(v, p), flags, 0);
        expect("open", &pred, &got)?;
        match (pred, got) {
            (Predict::Ok(_), Ok(f)) => self.files.push(f),
            (Predict::Err(libc::EAGAIN), _) => self.wait_retrieving(&rel(v, p))?,
            _ => {}
        }
        Ok(())
    }

    fn read(&mut self, m: &mut Model, v: usize, p: &str) -> Result<(), String> {
        let pred = m.read(v, p);
        if pred == Predict::Skip {
            return Ok(());
        }
        let got = self.b.read(&rel(v, p));
        expect("read", &pred, &got)?;
        match (&pred, &got) {
            (Predict::Ok(want), Ok(data)) if want != data => Err(format!(
                "read: {} bytes differ from the model's {}",
                data.len(),
                want.len()
            )),
            (Predict::Err(libc::EAGAIN), _) => self.wait_retrieving(&rel(v, p)),
            _ => Ok(()),
        }
    }

    fn oob_put(&mut self, m: &mut Model, v: usize, path: &str, data: Vec<u8>, seed: u8) {
        if !m.present[v] {
            return;
        }
        m.archived(v);
        let emu = self.b.emu();
        // Each put a second apart: the newest of two with one path takes the name.
        emu.advance(Duration::from_secs(1));
        let mtime = 1_400_000_000 + seed as i64 * 1000;
        let id = emu.put_archive(VAULTS[v], &mt2(path, mtime), &data, None);
        let created = emu
            .archives(VAULTS[v])
            .iter()
            .find(|a| a.id == id)
            .map(|a| a.creation_secs)
            .expect("the archive just put");
        m.upstream.push(super::state::Upstream {
            vault: v,
            path: path.to_owned(),
            id,
            created,
            content: data,
            mtime,
        });
    }

    fn oob_delete(&mut self, m: &mut Model, v: usize, p: &str) -> Result<(), String> {
        // Only archives whose upload is finished: what the daemon shows is then settled.
        self.sync(m)?;
        let pred = m.oob_delete(v, p);
        let shown = self.b.xattr(&rel(v, p), "user.glacier.archive_id");
        let vault = VAULTS[v];
        let emu = self.b.emu();
        match (&pred, &shown) {
            (Predict::Skip, _) => return Ok(()),
            (Predict::Ok(None), Err(libc::ENODATA)) => return Ok(()),
            (Predict::Ok(Some(Arch::Oob { id, .. })), Ok(s)) if s == id => {}
            (Predict::Ok(Some(Arch::Own)), Ok(s)) if emu.archive_data(vault, s).is_some() => {}
            _ => {
                return Err(format!(
                    "{vault}/{p}: model says archive {pred:?}, the mount shows {shown:?}"
                ))
            }
        }
        let id = shown.expect("an archive id");
        emu.delete_archive_direct(vault, &id);
        Ok(())
    }

    fn crash(&mut self, m: &mut Model) -> Result<(), String> {
        for hi in m.pre_crash_closes() {
            self.close(m, hi)?;
        }
        for (hi, f) in self.files.iter().enumerate() {
            if m.handles[hi].write {
                self.b
                    .fsync(f)
                    .map_err(|e| format!("fsync before the crash: {e}"))?;
            }
        }
        let open = std::mem::take(&mut self.files);
        self.b.crash(open);
        m.crash();
        Ok(())
    }

    fn step(&mut self, m: &mut Model, op: &Op) -> Result<(), String> {
        let path = |v: u8, p: u8| (v as usize, PATHS[p as usize]);
        let through = |v: u8, p: u8| {
            let (v, p) = path(v, p);
            m.through_link(v, p)
        };
        let skip = match *op {
            Op::Create { v, p, .. }
            | Op::Open { v, p, .. }
            | Op::Truncate { v, p, .. }
            | Op::Unlink { v, p }
            | Op::Mkdir { v, p }
            | Op::Rmdir { v, p }
            | Op::Chmod { v, p, .. }
            | Op::Utime { v, p, .. }
            | Op::Read { v, p }
            | Op::OobDelete { v, p }
            | Op::Symlink { v, p, .. }
            | Op::Mknod { v, p }
            | Op::ReadLink { v, p } => through(v, p),
            Op::Rename { v, p, v2, p2 } => through(v, p) || through(v2, p2),
            _ => false,
        };
        if skip {
            return Ok(());
        }
        match *op {
            Op::Create {
                v,
                p,
                len,
                seed,
                keep_open,
            } => {
                let (v, p) = path(v, p);
                self.create(m, v, p, pattern(len.bytes(), seed), keep_open)?;
            }
            Op::Open { v, p, mode } => {
                let (v, p) = path(v, p);
                self.open(m, v, p, mode)?;
            }
            Op::Write { h, off, len, seed } => {
                let Some(hi) = m.writable(h) else {
                    return Ok(());
                };
                let data = pattern(len.bytes(), seed);
                self.b
                    .pwrite(&self.files[hi], off.bytes(), &data)
                    .map_err(|e| format!("write: {e}"))?;
                m.write(hi, off.bytes(), &data);
            }
            Op::Ftruncate { h, size } => {
                let Some(hi) = m.writable(h) else {
                    return Ok(());
                };
                self.b
                    .ftruncate(&self.files[hi], size.bytes() as u64)
                    .map_err(|e| format!("ftruncate: {e}"))?;
                m.ftruncate(hi, size.bytes());
            }
            Op::Fsync { h } => {
                let Some(hi) = m.any_handle(h) else {
                    return Ok(());
                };
                self.b
                    .fsync(&self.files[hi])
                    .map_err(|e| format!("fsync: {e}"))?;
            }
            Op::Close { h } => {
                let Some(hi) = m.any_handle(h) else {
                    return Ok(());
                };
                self.close(m, hi)?;
            }
            Op::Truncate { v, p, size } => {
                let (v, p) = path(v, p);
                let pred = m.truncate(v, p, size.bytes());
                if pred == Predict::Skip {
                    return Ok(());
                }
                let got = self.b.truncate(&rel(v, p), size.bytes() as u64);
                expect("truncate", &pred, &got)?;
            }
            Op::Rename { v, p, v2, p2 } => {
                let ((v, p), (v2, p2)) = (path(v, p), path(v2, p2));
                let pred = m.rename(v, p, v2, p2);
                if pred == Predict::Skip {
                    return Ok(());
                }
                let got = self.b.rename(&rel(v, p), &rel(v2, p2));
                expect("rename", &pred, &got)?;
            }
            Op::Unlink { v, p } => {
                let (v, p) = path(v, p);
                let pred = m.unlink(v, p);
                expect("unlink", &pred, &self.b.unlink(&rel(v, p)))?;
            }
            Op::Mkdir { v, p } => {
                let (v, p) = path(v, p);
                let pred = m.mkdir(v, p);
                expect("mkdir", &pred, &self.b.mkdir(&rel(v, p)))?;
            }
            Op::Rmdir { v, p } => {
                let (v, p) = path(v, p);
                let pred = m.rmdir(v, p);
                expect("rmdir", &pred, &self.b.rmdir(&rel(v, p)))?;
            }
            Op::MkVault { n } => {
                let pred = m.mkvault(n as usize);
                expect(
                    "mkdir of a vault",
                    &pred,
                    &self.b.mkdir(ROOT_NAMES[n as usize]),
                )?;
            }
            Op::RmVault { n } => {
                let pred = m.rmvault(n as usize);
                if pred != Predict::Skip {
                    expect(
                        "rmdir of a vault",
                        &pred,
                        &self.b.rmdir(ROOT_NAMES[n as usize]),
                    )?;
                }
            }
            Op::Chmod { v, p, mode } => {
                let (v, p) = path(v, p);
                let pred = m.chmod(v, p, chmod_mode(mode));
                if pred == Predict::Skip {
                    return Ok(());
                }
                let got = self.b.chmod(&rel(v, p), chmod_mode(mode));
                expect("chmod", &pred, &got)?;
            }
            Op::Utime { v, p, t } => {
                let (v, p) = path(v, p);
                let secs = utime_secs(t);
                let pred = m.utime(v, p, secs);
                if pred == Predict::Skip {
                    return Ok(());
                }
                expect("utimensat", &pred, &self.b.utime(&rel(v, p), secs))?;
            }
            Op::Read { v, p } => {
                let (v, p) = path(v, p);
                self.read(m, v, p)?;
            }
            Op::OobPut { v, name, len, seed } => {
                let (v, path) = (v as usize, OOB_NAMES[name as usize]);
                self.oob_put(m, v, path, pattern(len.bytes().max(1), seed), seed);
            }
            Op::OobDelete { v, p } => {
                let (v, p) = path(v, p);
                self.oob_delete(m, v, p)?;
            }
            Op::Inventory => self.inventory(m)?,
            Op::CompleteJobs => {
                self.b.emu().complete_all_jobs();
                self.finish_retrievals(m)?;
            }
            Op::Crash => self.crash(m)?,
            Op::Symlink { v, p, t } => {
                let (v, p) = path(v, p);
                let target = LINK_TARGETS[t as usize % LINK_TARGETS.len()];
                let pred = m.make_special(v, p, Entry::Link(target.to_owned()));
                expect("symlink", &pred, &self.b.symlink(target, &rel(v, p)))?;
            }
            Op::Mknod { v, p } => {
                let (v, p) = path(v, p);
                let pred = m.mkfifo(v, p);
                expect("mkfifo", &pred, &self.b.mkfifo(&rel(v, p), MKNOD_MODE))?;
            }
            Op::ReadLink { v, p } => {
                let (v, p) = path(v, p);
                let pred = m.readlink(v, p);
                let got = self.b.readlink(&rel(v, p));
                expect("readlink", &pred, &got)?;
                if let (Predict::Ok(want), Ok(t)) = (&pred, &got) {
                    if want != t {
                        return Err(format!("readlink: {t:?}, the model says {want:?}"));
                    }
                }
            }
            Op::Snapshot { v } => self.snapshot(m, v as usize)?,
            Op::MachineLoss { clean, restore } => {
                self.lose_machine(m, clean)?;
                if restore {
                    for v in 0..VAULTS.len() {
                        self.restore(m, v)?;
                    }
                }
            }
            Op::Restore { v } => self.restore(m, v as usize)?,
        }
        Ok(())
    }

    /// `sync --wait --snapshot` of vault `v`, after everything else is synced; not made while
    /// a writer holds a file of the vault (its staged version would be in the snapshot with
    /// the archive it had before, which is the daemon's timing to know), nor when the mount
    /// has no history of the vault's snapshots (it refuses; SEMANTICS.md).
    fn snapshot(&mut self, m: &mut Model, v: usize) -> Result<(), String> {
        let held = m
            .handles
            .iter()
            .any(|h| m.path_of(h.ino).is_some_and(|(hv, _)| hv == v));
        if !m.present[v] || m.no_history[v] || held {
            return Ok(());
        }
        self.sync(m)?;
        let files: Vec<String> = m.vaults[v]
            .iter()
            .filter(|(_, e)| matches!(e, Entry::File(_)))
            .map(|(p, _)| rel(v, p))
            .collect();
        // Snapshots are named to the second: two of one vault in one second would leave which
        // is the newest to chance.
        if let Some(last) = self.snapped[v] {
            let next = Duration::from_millis(1_100);
            if last.elapsed() < next {
                std::thread::sleep(next - last.elapsed());
            }
        }
        self.b.snapshot(VAULTS[v], &files)?;
        self.snapped[v] = Some(Instant::now());
        let b = &self.b;
        m.snapshot(v, |p| b.xattr(&rel(v, p), "user.glacier.archive_id").ok());
        SNAPSHOTS.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    /// The machine is lost. First every handle is closed, everything goes up, an inventory
    /// settles any twin a crash left, and the vaults are checked: what a new machine can get
    /// back is what Glacier holds. Then a new daemon on an empty cache takes the inventories
    /// in (with the snapshots among the archives, which never show as files).
    fn lose_machine(&mut self, m: &mut Model, clean: bool) -> Result<(), String> {
        while !self.files.is_empty() {
            self.close(m, self.files.len() - 1)?;
        }
        self.inventory(m)?;
        self.check_tree(m)?;
        self.check_vaults(m, false)?;
        let emu = self.b.emu();
        emu.advance(Duration::from_secs(3600));
        let present: Vec<bool> = VAULTS
            .iter()
            .map(|v| emu.vault_names().iter().any(|n| n == v))
            .collect();
        let mut listed = Vec::new();
        let mut snapshot_held = Vec::new();
        for (v, vault) in VAULTS.iter().enumerate() {
            let mut archives = Vec::new();
            let mut snap = false;
            if present[v] {
                emu.take_inventory(vault);
                for a in emu.archives(vault) {
                    if glacierfs::codec::names::snapshot::is_snapshot(&a.description) {
                        snap = true;
                        continue;
                    }
                    archives.push(Listed {
                        desc_path: glacierfs::codec::names::decode(&a.description).path,
                        content: emu.archive_data(vault, &a.id).unwrap_or_default(),
                        created: a.creation_secs,
                        id: a.id,
                    });
                }
            }
            listed.push(archives);
            snapshot_held.push(snap);
        }
        self.b.lose_machine(clean);
        let emu = self.b.emu();
        let want: Vec<&str> = VAULTS
            .iter()
            .enumerate()
            .filter(|(v, _)| present[*v])
            .map(|(_, n)| *n)
            .collect();
        let taken_in = |vault: &str| {
            let date = self.b.xattr(vault, "user.glacier.inventory_date").ok();
            glacierfs::codec::timefmt::iso_secs(date.as_deref()) == emu.inventory_date(vault)
        };
        // The inventory's date is recorded before the snapshots it lists are taken in: a
        // vault that holds one is in once the mount says it has no history of it.
        let snapshot_known = |v: usize| {
            !snapshot_held[v]
                || self
                    .b
                    .xattr(VAULTS[v], "user.glacier.snapshot")
                    .is_ok_and(|s| s.starts_with("no-history"))
        };
        let ok = self.wait(|| {
            emu.complete_all_jobs();
            VAULTS.iter().enumerate().all(|(v, vault)| {
                if !want.contains(vault) {
                    return true;
                }
                let _ = self.b.walk(vault);
                taken_in(vault) && snapshot_known(v)
            })
        });
        if !ok {
            return Err("the new machine never took the inventories in".into());
        }
        m.machine_loss(present, listed, snapshot_held);
        MACHINE_LOSSES.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    /// `catalog restore --wait` of vault `v`, where the model defines its outcome.
    fn restore(&mut self, m: &mut Model, v: usize) -> Result<(), String> {
        if !m.restorable(v) {
            return Ok(());
        }
        self.b.restore(VAULTS[v])?;
        m.restore(v);
        RESTORES.fetch_add(1, Ordering::Relaxed);
        // The restore let every job finish: files whose retrieval ran are readable now.
        self.finish_retrievals(m)
    }

    /// The whole tree of every vault against the model.
    fn check_tree(&self, m: &Model) -> Result<(), String> {
        let mut listed = self.b.root()?;
        listed.sort();
        let mut want: Vec<String> = present_vaults(m).iter().map(|v| v.to_string()).collect();
        want.sort();
        if listed != want {
            return Err(format!(
                "the mount point lists {listed:?}, the model's vaults are {want:?}"
            ));
        }
        for (v, vault) in VAULTS.iter().enumerate() {
            if !m.present[v] {
                continue;
            }
            let seen = self.b.walk(vault)?;
            let seen_names: Vec<&String> = seen.keys().collect();
            let model_names: Vec<&String> = m.vaults[v].keys().collect();
            if seen_names != model_names {
                return Err(format!(
                    "{vault}: the mount shows {seen_names:?}, the model {model_names:?}"
                ));
            }
            for (p, e) in &m.vaults[v] {
                let meta = &seen[p];
                match e {
                    Entry::Dir if !meta.dir => return Err(format!("{vault}/{p}: not a dir")),
                    Entry::Dir => {}
                    Entry::File(ino) if meta.kind != Kind::File => {
                        return Err(format!(
                            "{vault}/{p}: a {:?}, the model has a file {ino}",
                            meta.kind
                        ))
                    }
                    Entry::File(ino) => self.check_file(m, v, p, *ino, meta)?,
                    Entry::Link(t) => {
                        if meta.kind != Kind::Link(t.clone()) || meta.len != t.len() as u64 {
                            return Err(format!(
                                "{vault}/{p}: {:?} of size {}, the model has a symlink to {t:?}",
                                meta.kind, meta.len
                            ));
                        }
                    }
                    Entry::Fifo(mode) => {
                        if meta.kind != Kind::Fifo || meta.mode != *mode {
                            return Err(format!(
                                "{vault}/{p}: {:?} mode {:o}, the model has a fifo {mode:o}",
                                meta.kind, meta.mode
                            ));
                        }
                    }
                }
            }
        }
        Ok(())
    }

    fn check_file(
        &self,
        m: &Model,
        v: usize,
        p: &str,
        ino: u64,
        meta: &Meta,
    ) -> Result<(), String> {
        let vault = VAULTS[v];
        let f = m.file(ino);
        if meta.dir {
            return Err(format!("{vault}/{p}: a directory, the model has a file"));
        }
        // Files open for writing, or closed a moment ago, too: a listing and getattr both
        // give the data file's size while a writer is open or its release is on its way.
        if meta.len != f.content.len() as u64 {
            return Err(format!(
                "{vault}/{p}: size {}, the model says {}",
                meta.len,
                f.content.len()
            ));
        }
        if let Some(mode) = f.mode {
            if meta.mode != mode {
                return Err(format!(
                    "{vault}/{p}: mode {:o}, the model says {mode:o}",
                    meta.mode
                ));
            }
        }
        if let Some(t) = f.mtime {
            if meta.mtime != Some(t) {
                return Err(format!(
                    "{vault}/{p}: mtime {:?}, the model says {t}",
                    meta.mtime
                ));
            }
        }
        if f.local || f.content.is_empty() {
            let data = self
                .b
                .read(&rel(v, p))
                .map_err(|e| format!("{vault}/{p}: reading a local file: {}", name(e)))?;
            if data != f.content {
                return Err(format!(
                    "{vault}/{p}: {} bytes differ from the model's {}",
                    data.len(),
                    f.content.len()
                ));
            }
        }
        Ok(())
    }

    /// Each vault holds one archive per non-empty file of the model, with its bytes and a
    /// description naming a path that version had, and nothing else; no multipart upload is
    /// left. Deletes run in the background, so this waits for them. `twins_ok`: after a
    /// crash an upload cut off before its reply was recorded may have left a copy, which only
    /// the next inventory settles (an intent is recorded before each call, and an upload
    /// whose reply was lost is found again by its description and tree hash), so until then
    /// an extra archive with the same description and bytes as a matched one is allowed.
    fn check_vaults(&self, m: &Model, twins_ok: bool) -> Result<(), String> {
        for (v, vault) in VAULTS.iter().enumerate() {
            if !m.present[v] {
                // A deleted vault (never one that held an archive) is gone upstream too.
                if !self.wait(|| !self.b.emu().vault_names().iter().any(|n| n == vault)) {
                    return Err(format!("{vault}: deleted, but still in Glacier"));
                }
                continue;
            }
            let want = m.expected_archives(v);
            let mut last = String::new();
            let ok = self.wait(|| match self.vault_matches(vault, &want, twins_ok) {
                Ok(()) => true,
                Err(e) => {
                    last = e;
                    false
                }
            });
            if !ok {
                return Err(format!("{vault}: {last}"));
            }
            if !self.wait(|| self.b.emu().multipart_uploads(vault).is_empty()) {
                return Err(format!("{vault}: multipart uploads left behind"));
            }
        }
        Ok(())
    }

    fn vault_matches(&self, vault: &str, want: &[Expected], twins_ok: bool) -> Result<(), String> {
        let emu = self.b.emu();
        let have: Vec<(String, Vec<u8>)> = emu
            .archives(vault)
            .iter()
            .filter(|a| !glacierfs::codec::names::snapshot::is_snapshot(&a.description))
            .map(|a| {
                (
                    glacierfs::codec::names::decode(&a.description).path,
                    emu.archive_data(vault, &a.id).unwrap_or_default(),
                )
            })
            .collect();
        let mut used = vec![false; have.len()];
        if !assign(want, &have, &mut used, 0, twins_ok) {
            let have_s: Vec<(&String, usize)> = have.iter().map(|(p, d)| (p, d.len())).collect();
            let want_s: Vec<(&String, usize, Vec<&String>)> = want
                .iter()
                .map(|w| (&w.path_now, w.content.len(), w.desc_paths.iter().collect()))
                .collect();
            return Err(format!(
                "archives (description path, size) {have_s:?} are not the model's \
                 (path, size, description paths) {want_s:?}"
            ));
        }
        Ok(())
    }

    /// After the last step: every handle closed, everything synced, the vaults checked, an
    /// inventory taken in, and all of it checked again.
    fn finish(&mut self, m: &mut Model, crashed: bool) -> Result<(), String> {
        while !self.files.is_empty() {
            self.close(m, self.files.len() - 1)?;
        }
        self.sync(m)?;
        self.check_tree(m)?;
        self.check_vaults(m, crashed)?;
        self.inventory(m)?;
        self.check_tree(m)?;
        self.check_vaults(m, false)
    }
}

/// The vaults the model says exist.
fn present_vaults(m: &Model) -> Vec<&'static str> {
    VAULTS
        .iter()
        .enumerate()
        .filter(|(v, _)| m.present[*v])
        .map(|(_, n)| *n)
        .collect()
}

/// A one-to-one match of expected files to archives (backtracking; the lists are short).
fn assign(
    want: &[Expected],
    have: &[(String, Vec<u8>)],
    used: &mut [bool],
    i: usize,
    twins_ok: bool,
) -> bool {
    if i == want.len() {
        return (0..have.len()).all(|j| {
            used[j] || (twins_ok && (0..have.len()).any(|k| used[k] && have[k] == have[j]))
        });
    }
    for j in 0..have.len() {
        if !used[j] && have[j].1 == want[i].content && want[i].desc_paths.contains(&have[j].0) {
            used[j] = true;
            if assign(want, have, used, i + 1, twins_ok) {
                return true;
            }
            used[j] = false;
        }
    }
    false
}

/// Runs one case on a fresh file system `b` (its emulator holding the vaults of
/// [`VAULTS`]): `ops` step by step with the tree checked after each, then the end-of-case
/// checks. The error names the step and carries the daemon's log.
pub fn run_case<B: Backend>(b: B, ops: &[Op], long_delay: bool) -> Result<(), String> {
    let mut h = Harness {
        files: Vec::new(),
        snapped: vec![None; VAULTS.len()],
        b,
    };
    let mut m = Model::new(VAULTS.len(), INITIAL_VAULTS, long_delay);
    let fail = |h: &Harness<B>, at: String, e: String| {
        Err(format!(
            "{at}: {e}\n--- daemon log (tail) ---\n{}",
            h.b.log_tail()
        ))
    };
    for (i, op) in ops.iter().enumerate() {
        if let Err(e) = h.step(&mut m, op).and_then(|()| h.check_tree(&m)) {
            return fail(&h, format!("step {i} {op:?}"), e);
        }
    }
    let crashed = ops.iter().any(|o| matches!(o, Op::Crash));
    if let Err(e) = h.finish(&mut m, crashed) {
        return fail(&h, "at the end".into(), e);
    }
    Ok(())
}
