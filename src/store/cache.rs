//! Local file data: one data file per inode (staged content, or retrieved content kept as a
//! cache), the sidecar that lets a staged file be recovered without the catalog, and the frozen
//! snapshots uploads read from.
//!
//! A sidecar is rewritten whenever what it records changes (create, close, chmod, touch,
//! rename: five times for each file `rsync -a` copies), so writing one is kept cheap: nothing is
//! written when the content is the one this store last wrote, and a new content is written over
//! the old in place, in one write of at most a page (whole or not at all, even if the daemon is
//! killed during it), instead of through a temporary file and a rename.
//!
//! Every name here comes from the catalog's inode numbers, never from user input. A snapshot is
//! a hard link to the data file, taken in an instant. A writer that opens the file while a
//! snapshot shares it does not write until the snapshot has a copy of its own
//! ([`DataStore::unshare`]), so an upload never sends bytes that change under it.
//!
//! The copy goes to the snapshot, not to the writer: the data file keeps its inode. With FUSE
//! passthrough that is the only way that works: the kernel pins every open of an inode to the
//! one backing file registered for it, and refuses an open of that inode that is not
//! passthrough on the same backing (fs/fuse/iomode.c `fuse_file_io_open`: EIO, direct I/O
//! included), so a writer cannot be given a different file while readers are open. Without
//! passthrough it keeps readers already open on the bytes the writer writes. An upload that
//! is reading the snapshot at that moment reads it through a [`Frozen`], whose file is
//! switched to the copy under a lock: no read is under way across the switch, the copy holds
//! exactly the bytes the snapshot held, so the upload goes on at the offset it reached and
//! its tree hash still holds.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::{FileExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock, Weak};

use serde::{Deserialize, Serialize};

use crate::catalog::files;

/// What a staged file is, for recovery without the catalog.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Sidecar {
    pub vault: String,
    /// '/'-separated, relative to the vault.
    pub path: String,
    pub mode: Option<u32>,
    pub uid: Option<u32>,
    pub gid: Option<u32>,
    pub mtime_ns: i64,
}

#[derive(Debug, Clone)]
pub struct DataStore {
    root: PathBuf,
    /// The snapshots uploads are reading now, by relative name, so [`DataStore::unshare`] can
    /// switch them to their copy. Weak: an upload that ends drops its snapshot.
    reading: Arc<Mutex<HashMap<String, Weak<Frozen>>>>,
    /// The sidecar last written for each inode, shared by every clone: one equal to it needs
    /// no write. Its lock is held while a sidecar is written, so it never disagrees with disk.
    sidecars: Arc<Mutex<HashMap<u64, Sidecar>>>,
}

/// A frozen snapshot as an upload reads it: the open file, which [`DataStore::unshare`] can
/// replace with an identical copy while the upload runs. Every read holds the lock for its
/// duration, so the switch waits for reads under way and no read spans it.
#[derive(Debug)]
pub struct Frozen {
    path: PathBuf,
    file: RwLock<File>,
}

impl Frozen {
    /// Opens `path` on its own: nothing will switch it (an upload outside the data store).
    pub fn open(path: PathBuf) -> io::Result<Frozen> {
        let file = File::open(&path)?;
        Ok(Frozen {
            path,
            file: RwLock::new(file),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The size of the file read now.
    pub fn size(&self) -> io::Result<u64> {
        Ok(crate::locks::read(&self.file).metadata()?.len())
    }

    /// Fills `buf` from `offset`, as `pread` does (tasks share the file without a cursor).
    pub fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        use std::os::unix::fs::FileExt;
        crate::locks::read(&self.file).read_exact_at(buf, offset)
    }

    /// Reads from `file` from now on; waits for the reads under way.
    fn switch_to(&self, file: File) {
        *crate::locks::write(&self.file) = file;
    }
}

/// Sidecars up to this size are written in place at offset 0: one write within the first page,
/// which a killed process completes or never starts. Longer ones (very long paths) go through
/// a temporary file and a rename.
const IN_PLACE: usize = 4096;

const DATA: &str = "data";
const SNAPSHOTS: &str = "snapshots";

fn private_dir(path: &Path) -> io::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(path)
}

impl DataStore {
    pub fn open(cache_dir: &Path) -> io::Result<DataStore> {
        private_dir(&cache_dir.join(DATA))?;
        private_dir(&cache_dir.join(SNAPSHOTS))?;
        Ok(DataStore {
            root: cache_dir.to_owned(),
            reading: Arc::default(),
            sidecars: Arc::default(),
        })
    }

    pub fn cache_dir(&self) -> &Path {
        &self.root
    }

    pub fn data_path(&self, ino: u64) -> PathBuf {
        self.root.join(DATA).join(ino.to_string())
    }

    fn sidecar_path(&self, ino: u64) -> PathBuf {
        self.root.join(DATA).join(format!("{ino}.meta"))
    }

    /// Relative to the cache directory, as the catalog records it.
    pub fn snapshot_name(ino: u64, gen: i64) -> String {
        format!("{SNAPSHOTS}/{ino}-{gen}")
    }

    /// Where a download fills in a file's data before it is verified.
    pub fn partial_path(&self, ino: u64) -> PathBuf {
        self.root.join(DATA).join(format!("{ino}.part"))
    }

    pub fn resolve(&self, relative: &str) -> PathBuf {
        self.root.join(relative)
    }

    /// A new, empty data file (replacing any old one).
    pub fn create_empty(&self, ino: u64) -> io::Result<File> {
        OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(self.data_path(ino))
    }

    pub fn open_data(&self, ino: u64, write: bool) -> io::Result<File> {
        OpenOptions::new()
            .read(true)
            .write(write)
            .open(self.data_path(ino))
    }

    /// Makes sure no upload snapshot shares the data file before it is written: each snapshot
    /// that does is replaced by a copy (and an upload reading it is switched to the copy), and
    /// the data file keeps its inode, so handles open on it, and a passthrough backing
    /// registered for it, stay valid. The caller holds the data file's lock, and nothing
    /// writes the data file meanwhile: it is the snapshot's content that is copied.
    pub fn unshare(&self, ino: u64) -> io::Result<()> {
        let path = self.data_path(ino);
        let meta = match std::fs::metadata(&path) {
            Ok(m) => m,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(e),
        };
        if meta.nlink() <= 1 {
            return Ok(());
        }
        let prefix = format!("{ino}-");
        for entry in std::fs::read_dir(self.root.join(SNAPSHOTS))? {
            let entry = entry?;
            let Some(name) = entry.file_name().to_str().map(str::to_owned) else {
                continue;
            };
            let is_gen = name
                .strip_prefix(&prefix)
                .is_some_and(|gen| gen.parse::<i64>().is_ok());
            if !is_gen {
                continue;
            }
            let linked = entry
                .metadata()
                .is_ok_and(|m| (m.dev(), m.ino()) == (meta.dev(), meta.ino()));
            if linked {
                self.give_copy(ino, &format!("{SNAPSHOTS}/{name}"))?;
            }
        }
        Ok(())
    }

    /// Replaces snapshot `relative` (a link to the data file of `ino`) with a copy of it, and
    /// switches an upload reading it to the copy. The copy is made as `data/<ino>.copy`, the
    /// one name a copy in the making has in the cache. A snapshot removed meanwhile (its
    /// upload ended) needs no copy, and must not come back as one.
    fn give_copy(&self, ino: u64, relative: &str) -> io::Result<()> {
        let target = self.resolve(relative);
        let tmp = self.root.join(DATA).join(format!("{ino}.copy"));
        match copy_file(&target, &tmp) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            r => r?,
        }
        // Opened before the rename, so the upload is switched to this very copy.
        let copy = File::open(&tmp)?;
        let frozen = {
            // Under the table's lock, as every open and removal of a snapshot: an upload
            // opening it now either is in the table already (and is switched below) or opens
            // it after the rename (and reads the copy).
            let reading = crate::locks::lock(&self.reading);
            if !target.exists() {
                drop(reading);
                let _ = std::fs::remove_file(&tmp);
                return Ok(());
            }
            std::fs::rename(&tmp, &target)?;
            reading.get(relative).and_then(Weak::upgrade)
        };
        // The upload still reads the old inode until here, which nothing has written yet: the
        // writer's open is waiting for this.
        if let Some(frozen) = frozen {
            frozen.switch_to(copy);
        }
        Ok(())
    }

    /// Opens snapshot `relative` for an upload, which reads it through the result until it
    /// ends; [`DataStore::unshare`] switches it to a copy when a writer opens the file.
    pub fn open_snapshot(&self, relative: &str) -> io::Result<Arc<Frozen>> {
        let mut reading = crate::locks::lock(&self.reading);
        reading.retain(|_, f| f.strong_count() > 0);
        if let Some(frozen) = reading.get(relative).and_then(Weak::upgrade) {
            return Ok(frozen);
        }
        let frozen = Arc::new(Frozen::open(self.resolve(relative))?);
        reading.insert(relative.to_owned(), Arc::downgrade(&frozen));
        Ok(frozen)
    }

    /// Freezes the current data as `snapshots/<ino>-<gen>` and returns its relative name.
    pub fn snapshot(&self, ino: u64, gen: i64) -> io::Result<String> {
        let name = Self::snapshot_name(ino, gen);
        let target = self.resolve(&name);
        match std::fs::hard_link(self.data_path(ino), &target) {
            Ok(()) => Ok(name),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(name),
            Err(e) => Err(e),
        }
    }

    pub fn remove_snapshot(&self, relative: &str) {
        // Under the table's lock, so a writer's copy of it cannot be put back after this.
        let _reading = crate::locks::lock(&self.reading);
        let _ = std::fs::remove_file(self.resolve(relative));
    }

    /// Forgets a file's local data and sidecar.
    pub fn remove(&self, ino: u64) {
        let _ = std::fs::remove_file(self.data_path(ino));
        self.remove_sidecar(ino);
    }

    /// Records what a staged file is; nothing is written if the sidecar already says it.
    pub fn write_sidecar(&self, ino: u64, sidecar: &Sidecar) -> io::Result<()> {
        let mut written = crate::locks::lock(&self.sidecars);
        if written.get(&ino) == Some(sidecar) {
            return Ok(());
        }
        // Forgotten first: if the write fails, the next call writes again.
        written.remove(&ino);
        let mut body = serde_json::to_vec(sidecar).map_err(io::Error::other)?;
        let path = self.sidecar_path(ino);
        // Not truncated: the new content is written over the old in one write (below).
        let f = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(&path)?;
        let old = usize::try_from(f.metadata()?.len()).unwrap_or(usize::MAX);
        if body.len() <= IN_PLACE && old <= IN_PLACE {
            // Padded with spaces over whatever a longer old content left (JSON allows trailing
            // white space), so no truncate is needed and the file is never half old, half new.
            body.resize(body.len().max(old), b' ');
            f.write_all_at(&body, 0)?;
        } else {
            drop(f);
            let tmp = self.root.join(DATA).join(format!("{ino}.meta.tmp"));
            let mut t = OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(0o600)
                .open(&tmp)?;
            io::Write::write_all(&mut t, &body)?;
            std::fs::rename(tmp, path)?;
        }
        written.insert(ino, sidecar.clone());
        Ok(())
    }

    pub fn read_sidecar(&self, ino: u64) -> io::Result<Sidecar> {
        let body = std::fs::read(self.sidecar_path(ino))?;
        serde_json::from_slice(&body).map_err(io::Error::other)
    }

    pub fn remove_sidecar(&self, ino: u64) {
        let mut written = crate::locks::lock(&self.sidecars);
        written.remove(&ino);
        let _ = std::fs::remove_file(self.sidecar_path(ino));
    }

    /// Bytes available to an unprivileged writer on the cache disk.
    pub fn free_space(&self) -> io::Result<u64> {
        free_space(&self.root)
    }
}

/// A data file's inode, mtime and size, or None if it is not there.
fn identity(path: &std::path::Path) -> Option<(u64, i128, u64)> {
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::metadata(path).ok()?;
    let mtime = i128::from(m.mtime()) * 1_000_000_000 + i128::from(m.mtime_nsec());
    Some((m.ino(), mtime, m.len()))
}

/// Keeps retrieved data within `cache_size`: the least recently read cached files lose their
/// local copy (they go back to cold) until the total fits. Staged data (not in Glacier yet),
/// files open now, and data retrieved but not read yet are never evicted.
pub fn evict(
    catalog: &crate::catalog::Catalog,
    data: &DataStore,
    cache_size: u64,
    open_files: &super::handles::OpenFiles,
    is_open: &dyn Fn(u64) -> bool,
) -> Result<(), crate::catalog::CatalogError> {
    let (mut total, candidates) = catalog.read(|c| {
        let total = files::cached_bytes(c)?;
        if total <= cache_size {
            return Ok((total, Vec::new()));
        }
        Ok((total, files::eviction_order(c)?))
    })?;
    let mut evicted = Vec::new();
    for (ino, size) in candidates {
        if total <= cache_size {
            break;
        }
        if is_open(ino) {
            continue;
        }
        evicted.push(ino);
        total = total.saturating_sub(size);
    }
    if evicted.is_empty() {
        return Ok(());
    }
    let mut marked = Vec::new();
    for ino in evicted {
        // Under the file's data lock: an open (which registers its passthrough backing under
        // the same lock) either came first and is seen open here, or comes after and finds the
        // file cold. Without it, an open between the check above and the removal kept a
        // backing on the removed file, and the next open of the retrieved copy got EIO.
        let _data = open_files.lock_data(ino);
        if is_open(ino) {
            continue;
        }
        // The data file as it is now: a writer that truncates and rewrites it after the
        // catalog marks it cold changes this, and then the file is the writer's and stays.
        let path = data.data_path(ino);
        let before = identity(&path);
        // A writer may have taken the file since it was chosen: then it stays.
        if !catalog.write(move |tx| files::evict(tx, ino))? {
            continue;
        }
        // A writer that opened the file since the catalog marked it cold keeps its data file
        // (its open marks the file local again); one that starts opening it after this
        // removal creates a new one.
        open_files.unless_written(ino, || {
            if before == identity(&path) {
                let _ = std::fs::remove_file(&path);
            }
        });
        marked.push(ino);
    }
    let evicted = marked;
    if evicted.is_empty() {
        return Ok(());
    }
    // Cold again, with no blocks on this machine: the kernel must not keep the old ones.
    catalog.changed(
        evicted
            .iter()
            .map(|ino| crate::catalog::changes::Change::Node(*ino)),
    );
    log::info!(
        "evicted {} cached file(s) to stay within the cache size",
        evicted.len()
    );
    Ok(())
}

fn copy_file(from: &Path, to: &Path) -> io::Result<()> {
    let mut src = File::open(from)?;
    let mut dst = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(to)?;
    // std::io::copy uses copy_file_range where the kernel allows, so no bytes pass through here.
    io::copy(&mut src, &mut dst)?;
    dst.sync_data()
}

pub fn free_space(path: &Path) -> io::Result<u64> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(path.as_os_str().as_bytes())
        .map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    // SAFETY: `st` is plain data that statvfs fills in.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: a valid NUL-terminated path and out-pointer.
    if unsafe { libc::statvfs(c.as_ptr(), &mut st) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(st.f_bavail as u64 * st.f_frsize as u64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::FileExt;

    #[test]
    fn a_writer_never_changes_a_snapshot() {
        let dir = tempfile::tempdir().unwrap();
        let store = DataStore::open(dir.path()).unwrap();
        store
            .create_empty(7)
            .unwrap()
            .write_all_at(b"version one", 0)
            .unwrap();
        let snap = store.snapshot(7, 1).unwrap();
        store.unshare(7).unwrap();
        store
            .open_data(7, true)
            .unwrap()
            .write_all_at(b"VERSION TWO", 0)
            .unwrap();
        assert_eq!(std::fs::read(store.resolve(&snap)).unwrap(), b"version one");
        assert_eq!(std::fs::read(store.data_path(7)).unwrap(), b"VERSION TWO");
    }

    #[test]
    fn an_upload_reading_a_snapshot_goes_on_from_its_copy() {
        let dir = tempfile::tempdir().unwrap();
        let store = DataStore::open(dir.path()).unwrap();
        store
            .create_empty(7)
            .unwrap()
            .write_all_at(b"0123456789", 0)
            .unwrap();
        let snap = store.snapshot(7, 1).unwrap();
        let data_ino = std::fs::metadata(store.data_path(7)).unwrap().ino();
        // The upload has read the first half when a writer opens the file.
        let frozen = store.open_snapshot(&snap).unwrap();
        let mut head = [0u8; 5];
        frozen.read_exact_at(&mut head, 0).unwrap();
        assert_eq!(&head, b"01234");
        store.unshare(7).unwrap();
        // The data file keeps its inode: a passthrough backing registered on it stays valid.
        assert_eq!(
            std::fs::metadata(store.data_path(7)).unwrap().ino(),
            data_ino
        );
        store
            .open_data(7, true)
            .unwrap()
            .write_all_at(b"ABCDEFGHIJKL", 0)
            .unwrap();
        // The upload reads the rest as it was frozen, from the copy.
        let mut tail = [0u8; 5];
        frozen.read_exact_at(&mut tail, 5).unwrap();
        assert_eq!(&tail, b"56789");
        assert_eq!(frozen.size().unwrap(), 10);
        assert_eq!(std::fs::read(store.resolve(&snap)).unwrap(), b"0123456789");
        // Nothing shares the data file now, and a second unshare copies nothing.
        assert_eq!(std::fs::metadata(store.data_path(7)).unwrap().nlink(), 1);
        store.unshare(7).unwrap();
        assert_eq!(std::fs::read(store.data_path(7)).unwrap(), b"ABCDEFGHIJKL");
        assert!(!dir.path().join("data/7.copy").exists());
    }

    #[test]
    fn sidecars_round_trip_and_files_are_private() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let store = DataStore::open(dir.path()).unwrap();
        let car = Sidecar {
            vault: "v".into(),
            path: "a/b".into(),
            mode: Some(0o640),
            uid: None,
            gid: None,
            mtime_ns: 5,
        };
        let with_path = |path: String| Sidecar {
            path,
            ..car.clone()
        };
        // A shorter content written in place over a longer one reads back as itself; so does
        // one too long to be written in place, and a short one after it.
        for s in [
            car.clone(),
            with_path("a/".repeat(300) + "b"),
            car.clone(),
            with_path("c/".repeat(3000) + "d"),
            car.clone(),
        ] {
            store.write_sidecar(3, &s).unwrap();
            assert_eq!(store.read_sidecar(3).unwrap(), s);
        }
        store.create_empty(3).unwrap();
        let mode = std::fs::metadata(store.data_path(3))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        let sidecar_mode = std::fs::metadata(dir.path().join("data/3.meta"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(sidecar_mode & 0o777, 0o600);
    }

    #[test]
    fn a_sidecar_is_written_only_when_its_content_changes() {
        let dir = tempfile::tempdir().unwrap();
        let store = DataStore::open(dir.path()).unwrap();
        let car = Sidecar {
            vault: "v".into(),
            path: "a".into(),
            mode: None,
            uid: None,
            gid: None,
            mtime_ns: 5,
        };
        let path = dir.path().join("data/9.meta");
        store.write_sidecar(9, &car).unwrap();
        // Changed behind the store's back: an equal content is not written again...
        std::fs::write(&path, b"marker").unwrap();
        store.write_sidecar(9, &car).unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"marker");
        // ...a new one is, and a removed sidecar is written again even with the old content.
        let moved = Sidecar {
            path: "b".into(),
            ..car.clone()
        };
        store.write_sidecar(9, &moved).unwrap();
        assert_eq!(store.read_sidecar(9).unwrap(), moved);
        store.remove_sidecar(9);
        store.write_sidecar(9, &moved).unwrap();
        assert_eq!(store.read_sidecar(9).unwrap(), moved);
        store.remove(9);
        assert!(!path.exists());
        store.write_sidecar(9, &moved).unwrap();
        assert_eq!(store.read_sidecar(9).unwrap(), moved);
    }
}
