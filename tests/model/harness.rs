//! Runs one sequence of operations against a real mount over a fresh emulator and against the
//! reference model side by side: every result (Ok or errno) must be the model's prediction,
//! and after every step the whole tree (names, kinds, sizes, known modes and mtimes, and the
//! bytes of every file that is on this machine) must be the model's. At the end every handle
//! is closed, everything is synced, and the vaults must hold exactly the model's files (bytes
//! and decoded descriptions) with no multipart upload left; then an inventory settles and it
//! is all checked again.

use std::collections::BTreeMap;
use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::os::unix::io::IntoRawFd;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant, UNIX_EPOCH};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;

use super::ops::{chmod_mode, pattern, utime_secs, Op, OpenMode, OOB_NAMES, PATHS, VAULTS};
use super::state::{Arch, Entry, Expected, Model, Predict};
use crate::support::emulator::{ClockStart, Emulator, EmulatorOptions};
use crate::support::mount::{aws_env, binary, wait_until, Mount};
use crate::support::xattr;

/// How long anything asynchronous (uploads, deletes, jobs, inventories) may take to show.
const SETTLE: Duration = Duration::from_secs(90);

/// Fields drop in order: the handles before the mount (a busy mount cannot be unmounted),
/// the mount before the emulator and the cache it uses.
struct Harness {
    /// Open handles, parallel to the model's.
    files: Vec<std::fs::File>,
    mount: Mount,
    emu: Emulator,
    args: Vec<String>,
    _cache: tempfile::TempDir,
}

fn errno(e: &std::io::Error) -> i32 {
    e.raw_os_error().unwrap_or(-1)
}

fn name(e: i32) -> String {
    std::io::Error::from_raw_os_error(e).to_string()
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
        Err(errno(&std::io::Error::last_os_error()))
    }
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

impl Harness {
    fn start(long_delay: bool) -> Harness {
        // The emulated clock starts at the real time and is only moved forward, so every
        // inventory is dated after every upload the daemon (on the real clock) has made.
        let emu = Emulator::start_with(EmulatorOptions {
            clock: ClockStart::RealNow,
            ..EmulatorOptions::default()
        });
        for v in VAULTS {
            emu.create_vault(v);
        }
        let cache = tempfile::tempdir().expect("cache dir");
        let delay = if long_delay { "1h" } else { "0s" };
        let args: Vec<String> = [
            "--part-size",
            "1MiB",
            "--write-back-delay",
            delay,
            "--upload-concurrency",
            "2",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        let mount = Mount::start(&emu.endpoint(), cache.path(), &refs);
        Harness {
            files: Vec::new(),
            mount,
            emu,
            args,
            _cache: cache,
        }
    }

    fn path(&self, v: usize, p: &str) -> PathBuf {
        self.mount.path(VAULTS[v]).join(p)
    }

    /// The daemon's log, last lines, for failure messages.
    fn log_tail(&self) -> String {
        let log = self.mount.log_text();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(80)..].join("\n")
    }

    /// `glacierfs sync --wait` on every visible file no writer holds (one held open stays
    /// staged, and `sync --wait` would wait for it forever).
    fn sync(&self, m: &mut Model) -> Result<(), String> {
        let paths: Vec<PathBuf> = m
            .files
            .keys()
            .filter(|ino| m.writers(**ino) == 0)
            .filter_map(|ino| m.path_of(*ino))
            .map(|(v, p)| self.path(v, &p))
            .collect();
        m.sync();
        if paths.is_empty() {
            return Ok(());
        }
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

    /// Lets every running job finish and waits until each file the model says is being
    /// retrieved reads back its bytes.
    fn finish_retrievals(&self, m: &mut Model) -> Result<(), String> {
        for (v, p, ino) in m.retrievals() {
            let path = self.path(v, &p);
            let want = m.file(ino).content.clone();
            let mut last = Err(0);
            let ok = wait_until(SETTLE, || {
                self.emu.complete_all_jobs();
                last = std::fs::read(&path).map_err(|e| errno(&e));
                last.is_ok()
            });
            if !ok {
                return Err(format!(
                    "{}/{p} never became readable after its job finished: {:?}",
                    VAULTS[v],
                    last.map_err(name).map(|d| d.len())
                ));
            }
            if last.as_deref() != Ok(want.as_slice()) {
                return Err(format!("{}/{p}: retrieved bytes differ", VAULTS[v]));
            }
        }
        m.complete_jobs();
        Ok(())
    }

    fn inventory(&self, m: &mut Model) -> Result<(), String> {
        self.sync(m)?;
        self.emu.advance(Duration::from_secs(3600));
        for (v, vault) in VAULTS.iter().enumerate() {
            self.emu.take_inventory(vault);
            std::fs::write(self.path(v, ".jobs"), b"inventory\n")
                .map_err(|e| format!("asking {vault} for an inventory: {e}"))?;
        }
        let taken_in = |v: usize| {
            let date = xattr(&self.mount.path(VAULTS[v]), "user.glacier.inventory_date").ok();
            glacierfs::codec::timefmt::iso_secs(date.as_deref())
                == self.emu.inventory_date(VAULTS[v])
        };
        let ok = wait_until(SETTLE, || {
            self.emu.complete_all_jobs();
            (0..VAULTS.len()).all(taken_in)
        });
        if !ok {
            return Err("the mount never took in the new inventories".into());
        }
        m.inventory();
        self.finish_retrievals(m)
    }

    /// After a cold open: the retrieval job must be started (the open does not wait for it).
    fn wait_retrieving(&self, v: usize, p: &str) -> Result<(), String> {
        let path = self.path(v, p);
        let ok = wait_until(SETTLE, || {
            xattr(&path, "user.glacier.state").as_deref() == Ok("retrieving")
        });
        if ok {
            Ok(())
        } else {
            Err(format!(
                "{}/{p}: a cold open started no retrieval (state {:?})",
                VAULTS[v],
                xattr(&path, "user.glacier.state")
            ))
        }
    }

    fn close(&mut self, m: &mut Model, hi: usize) -> Result<(), String> {
        let got = close_fd(self.files.remove(hi));
        m.close(hi);
        got.map_err(|e| format!("close: {}", name(e)))
    }

    fn step(&mut self, m: &mut Model, op: &Op) -> Result<(), String> {
        match *op {
            Op::Create {
                v,
                p,
                len,
                seed,
                keep_open,
            } => {
                let (v, p) = (v as usize, PATHS[p as usize]);
                let pred = m.create(v, p);
                let got = std::fs::OpenOptions::new()
                    .write(true)
                    .create(true)
                    .truncate(true)
                    .mode(0o644)
                    .open(self.path(v, p))
                    .map_err(|e| errno(&e));
                expect("create", &pred, &got)?;
                if let (Predict::Ok(hi), Ok(f)) = (pred, got) {
                    self.files.push(f);
                    let data = pattern(len.bytes(), seed);
                    if !data.is_empty() {
                        self.files[hi]
                            .write_all_at(&data, 0)
                            .map_err(|e| format!("write after create: {e}"))?;
                        m.write(hi, 0, &data);
                    }
                    if !keep_open {
                        self.close(m, hi)?;
                    }
                }
            }
            Op::Open { v, p, mode } => {
                let (v, p) = (v as usize, PATHS[p as usize]);
                let pred = m.open(v, p, mode);
                if pred == Predict::Skip {
                    return Ok(());
                }
                let mut o = std::fs::OpenOptions::new();
                match mode {
                    OpenMode::RdOnly => o.read(true),
                    OpenMode::RdWr => o.read(true).write(true),
                    OpenMode::WrTrunc => o.write(true).truncate(true),
                };
                let got = o.open(self.path(v, p)).map_err(|e| errno(&e));
                expect("open", &pred, &got)?;
                match (pred, got) {
                    (Predict::Ok(_), Ok(f)) => self.files.push(f),
                    (Predict::Err(libc::EAGAIN), _) => self.wait_retrieving(v, p)?,
                    _ => {}
                }
            }
            Op::Write { h, off, len, seed } => {
                let Some(hi) = m.writable(h) else {
                    return Ok(());
                };
                let data = pattern(len.bytes(), seed);
                self.files[hi]
                    .write_all_at(&data, off.bytes())
                    .map_err(|e| format!("write: {e}"))?;
                m.write(hi, off.bytes(), &data);
            }
            Op::Ftruncate { h, size } => {
                let Some(hi) = m.writable(h) else {
                    return Ok(());
                };
                self.files[hi]
                    .set_len(size.bytes() as u64)
                    .map_err(|e| format!("ftruncate: {e}"))?;
                m.ftruncate(hi, size.bytes());
            }
            Op::Fsync { h } => {
                let Some(hi) = m.any_handle(h) else {
                    return Ok(());
                };
                self.files[hi]
                    .sync_all()
                    .map_err(|e| format!("fsync: {e}"))?;
            }
            Op::Close { h } => {
                let Some(hi) = m.any_handle(h) else {
                    return Ok(());
                };
                self.close(m, hi)?;
            }
            Op::Truncate { v, p, size } => {
                let (v, p) = (v as usize, PATHS[p as usize]);
                let pred = m.truncate(v, p, size.bytes());
                let c = cpath(&self.path(v, p));
                // SAFETY: a valid C string.
                let r = unsafe { libc::truncate(c.as_ptr(), size.bytes() as libc::off_t) };
                let got = if r == 0 {
                    Ok(())
                } else {
                    Err(errno(&std::io::Error::last_os_error()))
                };
                expect("truncate", &pred, &got)?;
            }
            Op::Rename { v, p, v2, p2 } => {
                let (v, p, v2, p2) = (
                    v as usize,
                    PATHS[p as usize],
                    v2 as usize,
                    PATHS[p2 as usize],
                );
                let pred = m.rename(v, p, v2, p2);
                let got =
                    std::fs::rename(self.path(v, p), self.path(v2, p2)).map_err(|e| errno(&e));
                expect("rename", &pred, &got)?;
            }
            Op::Unlink { v, p } => {
                let (v, p) = (v as usize, PATHS[p as usize]);
                let pred = m.unlink(v, p);
                let got = std::fs::remove_file(self.path(v, p)).map_err(|e| errno(&e));
                expect("unlink", &pred, &got)?;
            }
            Op::Mkdir { v, p } => {
                let (v, p) = (v as usize, PATHS[p as usize]);
                let pred = m.mkdir(v, p);
                let got = std::fs::create_dir(self.path(v, p)).map_err(|e| errno(&e));
                expect("mkdir", &pred, &got)?;
            }
            Op::Rmdir { v, p } => {
                let (v, p) = (v as usize, PATHS[p as usize]);
                let pred = m.rmdir(v, p);
                let got = std::fs::remove_dir(self.path(v, p)).map_err(|e| errno(&e));
                expect("rmdir", &pred, &got)?;
            }
            Op::Chmod { v, p, mode } => {
                let (v, p) = (v as usize, PATHS[p as usize]);
                let pred = m.chmod(v, p, chmod_mode(mode));
                let got = std::fs::set_permissions(
                    self.path(v, p),
                    std::fs::Permissions::from_mode(chmod_mode(mode)),
                )
                .map_err(|e| errno(&e));
                expect("chmod", &pred, &got)?;
            }
            Op::Utime { v, p, t } => {
                let (v, p) = (v as usize, PATHS[p as usize]);
                let secs = utime_secs(t);
                let pred = m.utime(v, p, secs);
                let c = cpath(&self.path(v, p));
                let ts = libc::timespec {
                    tv_sec: secs as libc::time_t,
                    tv_nsec: 0,
                };
                // SAFETY: a valid C string and two timespecs.
                let r =
                    unsafe { libc::utimensat(libc::AT_FDCWD, c.as_ptr(), [ts, ts].as_ptr(), 0) };
                let got = if r == 0 {
                    Ok(())
                } else {
                    Err(errno(&std::io::Error::last_os_error()))
                };
                expect("utimensat", &pred, &got)?;
            }
            Op::Read { v, p } => {
                let (v, p) = (v as usize, PATHS[p as usize]);
                let pred = m.read(v, p);
                if pred == Predict::Skip {
                    return Ok(());
                }
                let got = std::fs::read(self.path(v, p)).map_err(|e| errno(&e));
                expect("read", &pred, &got)?;
                match (&pred, &got) {
                    (Predict::Ok(want), Ok(data)) if want != data => {
                        return Err(format!(
                            "read: {} bytes differ from the model's {}",
                            data.len(),
                            want.len()
                        ))
                    }
                    (Predict::Err(libc::EAGAIN), _) => self.wait_retrieving(v, p)?,
                    _ => {}
                }
            }
            Op::OobPut { v, name, len, seed } => {
                let (v, path) = (v as usize, OOB_NAMES[name as usize]);
                let data = pattern(len.bytes().max(1), seed);
                // Each put a second apart: the newest of two with one path takes the name.
                self.emu.advance(Duration::from_secs(1));
                let mtime = 1_400_000_000 + seed as i64 * 1000;
                let id = self
                    .emu
                    .put_archive(VAULTS[v], &mt2(path, mtime), &data, None);
                let created = self
                    .emu
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
            Op::OobDelete { v, p } => {
                let (v, p) = (v as usize, PATHS[p as usize]);
                // Only archives whose upload is finished: what the daemon shows is then settled.
                self.sync(m)?;
                let pred = m.oob_delete(v, p);
                let shown = xattr(&self.path(v, p), "user.glacier.archive_id");
                let vault = VAULTS[v];
                match (&pred, &shown) {
                    (Predict::Skip, _) => return Ok(()),
                    (Predict::Ok(None), Err(libc::ENODATA)) => return Ok(()),
                    (Predict::Ok(Some(Arch::Oob { id, .. })), Ok(s)) if s == id => {}
                    (Predict::Ok(Some(Arch::Own)), Ok(s))
                        if self.emu.archive_data(vault, s).is_some() => {}
                    _ => {
                        return Err(format!(
                            "{vault}/{p}: model says archive {pred:?}, the mount shows {shown:?}"
                        ))
                    }
                }
                let id = shown.expect("an archive id");
                self.emu.delete_archive_direct(vault, &id);
            }
            Op::Inventory => self.inventory(m)?,
            Op::CompleteJobs => {
                self.emu.complete_all_jobs();
                self.finish_retrievals(m)?;
            }
            Op::Crash => {
                for hi in m.pre_crash_closes() {
                    self.close(m, hi)?;
                }
                for (hi, f) in self.files.iter().enumerate() {
                    if m.handles[hi].write {
                        f.sync_all()
                            .map_err(|e| format!("fsync before the crash: {e}"))?;
                    }
                }
                let refs: Vec<&str> = self.args.iter().map(String::as_str).collect();
                self.mount.remount(&self.emu.endpoint(), &refs);
                for f in self.files.drain(..) {
                    // The daemon that served this handle is dead: whatever close says is moot.
                    let _ = close_fd(f);
                }
                m.crash();
            }
        }
        Ok(())
    }

    /// The whole tree of every vault against the model.
    fn check_tree(&self, m: &Model) -> Result<(), String> {
        for (v, vault) in VAULTS.iter().enumerate() {
            let mut seen = BTreeMap::new();
            walk(&self.mount.path(vault), "", &mut seen)?;
            let model: BTreeMap<&String, &Entry> = m.vaults[v].iter().collect();
            let seen_names: Vec<&String> = seen.keys().collect();
            let model_names: Vec<&String> = model.keys().copied().collect();
            if seen_names != model_names {
                return Err(format!(
                    "{vault}: the mount shows {seen_names:?}, the model {model_names:?}"
                ));
            }
            for (p, e) in &m.vaults[v] {
                let meta = &seen[p];
                match e {
                    Entry::Dir if !meta.is_dir() => return Err(format!("{vault}/{p}: not a dir")),
                    Entry::Dir => {}
                    Entry::File(ino) => {
                        let f = m.file(*ino);
                        if meta.is_dir() {
                            return Err(format!("{vault}/{p}: a directory, the model has a file"));
                        }
                        // Files open for writing, or closed a moment ago, too: a listing
                        // and getattr both give the data file's size while a writer is open
                        // or its release is on its way.
                        let want = f.content.len() as u64;
                        if meta.len() != want {
                            return Err(format!(
                                "{vault}/{p}: size {}, the model says {}",
                                meta.len(),
                                f.content.len()
                            ));
                        }
                        if let Some(mode) = f.mode {
                            if meta.mode() & 0o7777 != mode {
                                return Err(format!(
                                    "{vault}/{p}: mode {:o}, the model says {mode:o}",
                                    meta.mode() & 0o7777
                                ));
                            }
                        }
                        if let Some(t) = f.mtime {
                            let got = meta
                                .modified()
                                .ok()
                                .and_then(|m| m.duration_since(UNIX_EPOCH).ok())
                                .map(|d| d.as_secs() as i64);
                            if got != Some(t) {
                                return Err(format!(
                                    "{vault}/{p}: mtime {got:?}, the model says {t}"
                                ));
                            }
                        }
                        if f.local || f.content.is_empty() {
                            let data = std::fs::read(self.path(v, p))
                                .map_err(|e| format!("{vault}/{p}: reading a local file: {e}"))?;
                            if data != f.content {
                                return Err(format!(
                                    "{vault}/{p}: {} bytes differ from the model's {}",
                                    data.len(),
                                    f.content.len()
                                ));
                            }
                        }
                    }
                }
            }
        }
        Ok(())
    }

    /// Each vault holds one archive per non-empty file of the model, with its bytes and a
    /// description naming a path that version had, and nothing else; no multipart upload is
    /// left. Deletes run in the background, so this waits for them. `twins_ok`: after a
    /// crash an upload cut off before its reply was recorded may have left a copy, which only
    /// the next inventory settles (DESIGN.md, "Intents before calls"), so until then an extra
    /// archive with the same description and bytes as a matched one is allowed.
    fn check_vaults(&self, m: &Model, twins_ok: bool) -> Result<(), String> {
        for (v, vault) in VAULTS.iter().enumerate() {
            let want = m.expected_archives(v);
            let mut last = String::new();
            let ok = wait_until(SETTLE, || {
                match self.vault_matches(vault, &want, twins_ok) {
                    Ok(()) => true,
                    Err(e) => {
                        last = e;
                        false
                    }
                }
            });
            if !ok {
                return Err(format!("{vault}: {last}"));
            }
            let ok = wait_until(SETTLE, || self.emu.multipart_uploads(vault).is_empty());
            if !ok {
                return Err(format!("{vault}: multipart uploads left behind"));
            }
        }
        Ok(())
    }

    fn vault_matches(&self, vault: &str, want: &[Expected], twins_ok: bool) -> Result<(), String> {
        let have: Vec<(String, Vec<u8>)> = self
            .emu
            .archives(vault)
            .iter()
            .map(|a| {
                (
                    glacierfs::codec::names::decode(&a.description).path,
                    self.emu.archive_data(vault, &a.id).unwrap_or_default(),
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

/// Every entry under `dir` by vault-relative path, with its metadata.
fn walk(
    dir: &Path,
    prefix: &str,
    out: &mut BTreeMap<String, std::fs::Metadata>,
) -> Result<(), String> {
    let entries = std::fs::read_dir(dir).map_err(|e| format!("read_dir {prefix:?}: {e}"))?;
    for e in entries {
        let e = e.map_err(|e| format!("read_dir {prefix:?}: {e}"))?;
        let rel = format!("{prefix}{}", e.file_name().to_string_lossy());
        let meta = std::fs::symlink_metadata(e.path()).map_err(|e| format!("stat {rel}: {e}"))?;
        if meta.is_dir() {
            walk(&e.path(), &format!("{rel}/"), out)?;
        }
        out.insert(rel, meta);
    }
    Ok(())
}

/// Runs one case: a fresh emulator, cache and mount; `ops` step by step with the tree checked
/// after each; then the end-of-case checks. The error names the step and carries the log.
pub fn run_case(ops: &[Op], long_delay: bool) -> Result<(), String> {
    // Files are created 0644 and directories 0755 whatever the caller's umask was.
    // SAFETY: umask cannot fail.
    unsafe { libc::umask(0o022) };
    let mut h = Harness::start(long_delay);
    let mut m = Model::new(VAULTS.len(), long_delay);
    let fail = |h: &Harness, at: String, e: String| {
        Err(format!(
            "{at}: {e}\n--- daemon log (tail) ---\n{}",
            h.log_tail()
        ))
    };
    for (i, op) in ops.iter().enumerate() {
        if let Err(e) = h.step(&mut m, op).and_then(|()| h.check_tree(&m)) {
            return fail(&h, format!("step {i} {op:?}"), e);
        }
    }
    let crashed = ops.contains(&Op::Crash);
    let end = |h: &mut Harness, m: &mut Model| -> Result<(), String> {
        while !h.files.is_empty() {
            h.close(m, h.files.len() - 1)?;
        }
        h.sync(m)?;
        h.check_tree(m)?;
        h.check_vaults(m, crashed)?;
        h.inventory(m)?;
        h.check_tree(m)?;
        h.check_vaults(m, false)
    };
    if let Err(e) = end(&mut h, &mut m) {
        return fail(&h, "at the end".into(), e);
    }
    Ok(())
}
