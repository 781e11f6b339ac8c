//! Files and their data: create, open, read, write, close, fsync and setattr, as SEMANTICS.md
//! describes them. New content goes to a data file on local disk (visible at once, exact size and
//! times) and is uploaded by the write-back queue after the last close. Names (unlink, rename)
//! are `super::namespace`'s.
//!
//! The catalog is written at open, close and setattr, never on each write().

use std::ffi::OsStr;
use std::os::unix::fs::FileExt;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use super::control_files;
use super::error::{Missing, Op};
use super::peek::{Caller, Process};
use super::{checked_name, Attr, FsError, FsResult, GlacierFs};
use crate::catalog::{self, nodes, CatalogError, Kind, Node};
use crate::codec::names;
use crate::store::cache::Sidecar;
use crate::store::handles::Handle;

/// What setattr asks to change.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SetAttr {
    pub mode: Option<u32>,
    pub uid: Option<u32>,
    pub gid: Option<u32>,
    pub size: Option<u64>,
    pub mtime_ns: Option<i64>,
    /// A new access time (UTIME_OMIT is None, UTIME_NOW the time now).
    pub atime_ns: Option<i64>,
}

/// Which of set-user-ID and set-group-ID a setattr takes away besides its own changes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ClearSetId {
    /// Set-user-ID, and set-group-ID when the group may execute.
    pub set_id: bool,
    /// With `set_id`, the writer's group: set-group-ID without group execute goes too when it
    /// is not the file's.
    pub writer_gid: Option<u32>,
}

/// A failure on the data file of `ino`; a full cache disk is ENOSPC whatever the call was.
fn data_err(ino: u64) -> impl Fn(std::io::Error) -> FsError {
    move |e| {
        if e.raw_os_error() == Some(libc::ENOSPC) || e.raw_os_error() == Some(libc::EDQUOT) {
            FsError::NoSpace
        } else {
            FsError::DataFile { ino, source: e }
        }
    }
}

impl GlacierFs {
    pub(super) fn file_attr(&self, n: &Node) -> Attr {
        let mut a = self.attr_of(n);
        // Writes change the data file before close tells the catalog: its size is the truth.
        // That includes the moment a release has let go of its handle but not yet recorded
        // the size (the kernel asks for attributes right after close(2) returns, while the
        // release is still on its way).
        if n.kind == Kind::File && self.open_files.writers(n.ino) > 0 {
            let size = match self.handles.any_for(n.ino) {
                Some(h) => h.file.metadata().map(|m| m.len()),
                None => std::fs::metadata(self.data.data_path(n.ino)).map(|m| m.len()),
            };
            if let Ok(size) = size {
                a.size = size;
                a.blocks = super::local_blocks(size);
            }
        }
        a
    }

    /// Rewrites the sidecar of a staged file after its path or attributes changed, reading
    /// what it says from the catalog.
    pub(super) fn refresh_sidecar(&self, ino: u64) {
        match self.catalog.read(move |c| catalog::files::staged(c, ino)) {
            Ok(staged) => self.write_sidecar(staged),
            Err(e) => FsError::from(e).log(Op::new("sidecar").ino(ino)),
        }
    }

    /// Writes the sidecar a staged file's write read in its own transaction
    /// ([`catalog::files::staged`]); nothing for a file that is not staged.
    pub(super) fn write_sidecar(&self, staged: Option<catalog::files::Staged>) {
        let Some(catalog::files::Staged {
            node: n,
            vault,
            path,
        }) = staged
        else {
            return;
        };
        let sidecar = Sidecar {
            vault,
            path,
            mode: n.mode,
            uid: n.uid,
            gid: n.gid,
            mtime_ns: n.mtime_ns,
        };
        if let Err(e) = self.data.write_sidecar(n.ino, &sidecar) {
            log::warn!("sidecar of {}: {e}", n.name);
        }
    }

    fn open_handle(&self, ino: u64, file: std::fs::File, write: bool, modified: bool) -> u64 {
        use std::os::unix::fs::MetadataExt;
        if write {
            self.open_files.add_writer(ino);
        }
        self.open_files.opened(ino);
        let now = catalog::now_ns();
        let opened_as = file
            .metadata()
            .map(|m| (m.len(), m.mtime() * 1_000_000_000 + m.mtime_nsec()))
            .unwrap_or((0, 0));
        self.handles.insert(Handle {
            ino,
            file,
            write,
            modified: modified.into(),
            last_write_ns: (if modified { now } else { 0 }).into(),
            opened_as,
            marked_dirty: 0.into(),
        })
    }

    /// Before a writer can change the data file: an upload snapshot that shares it gets a copy
    /// of its own, and an upload reading it goes on from the copy. The data file keeps its
    /// inode, because handles open through passthrough are pinned to it (the kernel refuses to
    /// mix backings, or passthrough and non-passthrough opens, on one inode), so the writer
    /// shares their backing and they see its bytes; the upload in flight is not restarted.
    /// Called under the data file's lock, which every open and swap of it takes.
    fn unshare(&self, ino: u64) -> FsResult<()> {
        self.data.unshare(ino).map_err(data_err(ino))
    }

    pub fn create(
        &self,
        parent: u64,
        name: &OsStr,
        mode: u32,
        uid: u32,
        gid: u32,
    ) -> FsResult<(Attr, u64)> {
        self.writable()?;
        let p = self.entry_parent(parent)?;
        let name = checked_name(name)?;
        if p.kind == Kind::Vault && names::is_reserved(&name) {
            return Err(FsError::NotPermitted("names of control files are reserved"));
        }
        self.new_path(&p, &name)?;
        let (uid, gid) = self.owner(uid, gid);
        let vault = p.vault_ino();
        let now = catalog::now_ns();
        let staged = self.catalog.write(move |tx| {
            let ino = nodes::insert(
                tx,
                Kind::File,
                &nodes::NewNode {
                    parent: p.ino,
                    name: &name,
                    vault,
                    mtime_ns: now,
                    mode: Some(mode & 0o7777),
                    uid,
                    gid,
                    ..Default::default()
                },
            )?;
            catalog::files::stage_created(tx, ino, now)?;
            nodes::entries_changed(tx, p.ino, now)?;
            catalog::files::staged(tx, ino)?.ok_or(CatalogError::NotFound)
        })?;
        let node = staged.node.clone();
        let file = self
            .data
            .create_empty(node.ino)
            .map_err(data_err(node.ino))?;
        self.write_sidecar(Some(staged));
        let fh = self.open_handle(node.ino, file, true, true);
        Ok((self.attr_of(&node), fh))
    }

    /// Opens a file for its data, for a caller nobody knows (as a program that does not peek).
    pub fn open(&self, ino: u64, flags: i32) -> FsResult<u64> {
        self.open_as(ino, flags, &Caller::unknown())
    }

    /// Opens a file for its data. Local data (staged or cached) opens at once; an archive that
    /// is only in Glacier needs a retrieval first, unless the open truncates it anyway. A
    /// caller that only peeks (`peek`) gets EAGAIN for a cold file and starts nothing.
    pub fn open_as(&self, ino: u64, flags: i32, caller: &Caller) -> FsResult<u64> {
        self.open_then(ino, flags, caller, |_| None::<()>)
            .map(|(fh, _)| fh)
    }

    /// Opens a file as [`GlacierFs::open_as`] does, then runs `then` on the new handle (the
    /// adapter registers its passthrough backing there), all under the data file's lock: no
    /// copy-on-write, retrieval or eviction swaps or removes the data file between the open
    /// and the registration, so the backing is the file every later open finds.
    pub fn open_then<T>(
        &self,
        ino: u64,
        flags: i32,
        caller: &Caller,
        then: impl FnOnce(u64) -> Option<T>,
    ) -> FsResult<(u64, Option<T>)> {
        let _data = self.open_files.lock_data(ino);
        let fh = self.open_locked(ino, flags, caller)?;
        Ok((fh, then(fh)))
    }

    fn open_locked(&self, ino: u64, flags: i32, caller: &Caller) -> FsResult<u64> {
        let n = self.node(ino)?;
        match n.kind {
            Kind::File => {}
            Kind::Root | Kind::Vault | Kind::Dir => return Err(FsError::IsDir),
            Kind::Symlink => return Err(FsError::IsSymlink(ino)),
            Kind::Special => return Err(FsError::NoDevice(ino)),
        }
        let acc = flags & libc::O_ACCMODE;
        let write = acc != libc::O_RDONLY;
        let truncate = write && flags & libc::O_TRUNC != 0;
        if write {
            self.writable()?;
            // New content becomes a new archive under this path: a path that cannot be
            // described (an old archive from another tool, say) could never be uploaded.
            let path = self
                .catalog
                .read(move |c| nodes::vault_relative_path(c, ino))?;
            if !names::fits(&path, 0) {
                return Err(FsError::NameTooLong(path));
            }
        }
        if !n.local && !truncate && n.size > 0 {
            // Only a cold open looks at its caller: warm opens pay nothing for it.
            let peeker = Process::of(caller.pid).and_then(|p| self.options.peek.peeker(&p));
            if let Some(program) = peeker {
                self.peeks.refused(&program);
                return Err(FsError::NotYetAvailable(format!(
                    "{} is in Glacier; {program} only peeks, so no retrieval was started",
                    n.name
                )));
            }
            return Err(self.services.retriever.cold_open(&n).into());
        }
        if !write {
            if n.archive_id.is_some() {
                self.services.retriever.touch(ino);
            }
            let file = if n.local {
                self.data.open_data(ino, false).map_err(data_err(ino))?
            } else {
                // An empty file has no data file until someone writes to it.
                self.data.create_empty(ino).map_err(data_err(ino))?
            };
            return Ok(self.open_handle(ino, file, false, false));
        }
        let _opening = self.open_files.opening_writer(ino);
        if n.local {
            self.unshare(ino)?;
        }
        let file = if n.local && !truncate {
            self.data.open_data(ino, true).map_err(data_err(ino))?
        } else {
            self.data.create_empty(ino).map_err(data_err(ino))?
        };
        if truncate {
            file.set_len(0).map_err(data_err(ino))?;
        }
        // The file counts as staged and open from now on, in the catalog too: if the daemon
        // dies while it is written, the restart finds it (writes through passthrough leave no
        // other trace). A close without writes puts it back.
        let gen = catalog::now_ns();
        let emptied = !n.local || truncate;
        let sidecar_changes = !n.local || truncate || n.dirty == 0;
        let staged = self.catalog.write(move |tx| {
            catalog::files::open_for_write(tx, ino, gen, emptied)?;
            if sidecar_changes {
                catalog::files::staged(tx, ino)
            } else {
                Ok(None)
            }
        })?;
        self.write_sidecar(staged);
        let fh = self.open_handle(ino, file, true, truncate);
        if n.local && !truncate && n.dirty == 0 {
            if let Some(h) = self.handles.get(fh) {
                h.marked_dirty.store(gen, Ordering::Relaxed);
            }
        }
        Ok(fh)
    }

    pub fn read(&self, fh: u64, offset: u64, size: u32) -> FsResult<Vec<u8>> {
        if control_files::is_control_handle(fh) {
            return self.read_control(fh, offset, size);
        }
        let h = self.handles.get(fh).ok_or(FsError::BadHandle(fh))?;
        let mut buf = vec![0u8; size as usize];
        let mut done = 0;
        while done < buf.len() {
            match h.file.read_at(&mut buf[done..], offset + done as u64) {
                Ok(0) => break,
                Ok(n) => done += n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(data_err(h.ino)(e)),
            }
        }
        buf.truncate(done);
        Ok(buf)
    }

    pub fn write(&self, fh: u64, offset: u64, data: &[u8]) -> FsResult<u32> {
        let h = self.handles.get(fh).ok_or(FsError::BadHandle(fh))?;
        if !h.write {
            // As write(2) on a descriptor not open for writing.
            return Err(FsError::BadHandle(fh));
        }
        h.file.write_all_at(data, offset).map_err(data_err(h.ino))?;
        h.mark_written(catalog::now_ns());
        Ok(data.len() as u32)
    }

    /// Durability on this machine: the data file is synced and the catalog committed to disk.
    /// `glacierfs sync --wait` is what puts the file into Glacier.
    pub fn fsync(&self, fh: u64) -> FsResult<()> {
        if control_files::is_control_handle(fh) {
            return Ok(());
        }
        let h = self.handles.get(fh).ok_or(FsError::BadHandle(fh))?;
        h.file.sync_all().map_err(data_err(h.ino))?;
        let state = CloseState::of(&h)?;
        if state.written {
            self.record_close_state(h.ino, state, false)?;
        }
        self.catalog.sync()?;
        Ok(())
    }

    pub fn release(&self, fh: u64) -> FsResult<()> {
        if control_files::is_control_handle(fh) {
            self.release_control(fh);
            return Ok(());
        }
        let Some(h) = self.handles.remove(fh) else {
            return Ok(());
        };
        self.open_files.closed(h.ino);
        if !h.write {
            return Ok(());
        }
        let ino = h.ino;
        let h_marked = h.marked_dirty.load(Ordering::Relaxed);
        let state = CloseState::of(&h);
        // Let go of the data file before waiting on the catalog (see the adapter's release).
        drop(h);
        // Another writer still open keeps the mark: its writes may not reach the daemon.
        let marked = if self.open_files.writers(ino) > 1 {
            0
        } else {
            h_marked
        };
        let result = match state {
            Ok(state) if state.written => self.record_close_state(ino, state, true),
            Ok(_) => self
                .catalog
                // Opened for writing but not written: clean again if it was, and due as before.
                .write(move |tx| {
                    catalog::files::close_unwritten(tx, ino, marked, catalog::now_ns())
                })
                .map_err(FsError::from),
            Err(e) => Err(e),
        };
        if self.open_files.remove_writer(ino) == 0 {
            self.services.writeback.closed(ino);
        }
        result
    }

    /// Records what a writer left: the size of the data file, a new staged generation, and the
    /// mtime of its last write unless the mtime was set explicitly since (`cp -p`, `rsync -a`).
    fn record_close_state(&self, ino: u64, state: CloseState, closing: bool) -> FsResult<()> {
        let CloseState {
            size,
            last_write_ns: last_write,
            ..
        } = state;
        // Whether an explicit mtime came after the last write is decided on the catalog's
        // writer thread, in the order of the writes: close(2) does not wait for the release,
        // so a `touch -m` or rsync's utimensat right after it can be answered meanwhile. A
        // setattr marks the mtime as set (`mtime_set`) before queueing its own write, so this
        // write either sees the mark and keeps the mtime, or is applied before the setattr's;
        // deciding before queueing let the last write's time overwrite an mtime just set.
        let now_ns = catalog::now_ns();
        let open_files = Arc::clone(&self.open_files);
        let staged = self.catalog.write_twice(|| {
            let open_files = Arc::clone(&open_files);
            move |tx| {
                let mtime_ns = match open_files.mtime_set_at(ino) {
                    Some(set) if set >= last_write => None,
                    _ if last_write > 0 => Some(last_write),
                    _ => None,
                };
                let written = catalog::files::Written {
                    size,
                    mtime_ns,
                    now_ns,
                    closing,
                };
                catalog::files::record_written(tx, ino, &written)?;
                catalog::files::staged(tx, ino)
            }
        })?;
        self.write_sidecar(staged);
        Ok(())
    }

    pub fn setattr(&self, ino: u64, fh: Option<u64>, change: SetAttr) -> FsResult<Attr> {
        self.setattr_clearing(ino, fh, change, ClearSetId::default())
    }

    /// [`GlacierFs::setattr`], also taking set-user-ID and set-group-ID away from a file
    /// as `clear` says (`fs::privileges`), in the same catalog write as the rest.
    pub fn setattr_clearing(
        &self,
        ino: u64,
        fh: Option<u64>,
        change: SetAttr,
        clear: ClearSetId,
    ) -> FsResult<Attr> {
        if let Some(a) = self.control_getattr(ino) {
            // Truncating a control file (a shell's `>`) is accepted and changes nothing.
            return a;
        }
        let n = match self.node(ino) {
            Err(FsError::NotFound(_)) => return self.setattr_unlinked(ino, fh, change),
            n => n?,
        };
        // Only what is not a directory loses the bits, as on Linux.
        let clear = if n.kind.is_dir() {
            ClearSetId::default()
        } else {
            clear
        };
        let any = change.mode.is_some()
            || clear.set_id
            || change.uid.is_some()
            || change.gid.is_some()
            || change.size.is_some()
            || change.mtime_ns.is_some()
            || change.atime_ns.is_some();
        if !any {
            return Ok(self.file_attr(&n));
        }
        self.writable()?;
        if n.kind == Kind::Root || n.kind == Kind::Vault {
            // A vault's attributes are Glacier's; keep ownership and times as they are.
            return Ok(self.attr_of(&n));
        }
        if let Some(size) = change.size {
            match n.kind {
                Kind::File => self.truncate(&n, fh, size)?,
                Kind::Root | Kind::Vault | Kind::Dir => return Err(FsError::IsDir),
                // As truncate(2) of a fifo or symlink target that is not a regular file.
                Kind::Symlink | Kind::Special => {
                    return Err(FsError::Invalid(format!(
                        "{} is not a regular file",
                        n.name
                    )))
                }
            }
        }
        if let Some(t) = change.mtime_ns {
            self.open_files.mtime_set(ino, catalog::now_ns().max(t));
        }
        // A special file's mode is stored whole: chmod keeps its type bits.
        let type_bits = match n.kind {
            Kind::Special => n.mode.unwrap_or(0) & libc::S_IFMT,
            _ => 0,
        };
        let attrs = nodes::AttrChange {
            mode: change.mode.map(|m| (m & 0o7777) | type_bits),
            uid: change.uid,
            gid: change.gid,
            mtime_ns: change.mtime_ns,
            atime_ns: change.atime_ns,
            clear_set_id: clear.set_id,
            writer: clear.writer_gid.map(|gid| nodes::WriterGroup {
                gid,
                unset_shows: self.options.gid,
            }),
        };
        // The node comes back from the write itself, and the sidecar's fields with it: no read
        // transaction after the commit.
        let (n, staged) = self.catalog.write(move |tx| {
            nodes::set_attrs(tx, ino, attrs)?;
            let n = nodes::get(tx, ino)?.ok_or(CatalogError::NotFound)?;
            let staged = if n.dirty > 0 {
                catalog::files::staged(tx, ino)?
            } else {
                None
            };
            Ok((n, staged))
        })?;
        self.write_sidecar(staged);
        Ok(self.file_attr(&n))
    }

    /// The attributes of a file unlinked while still open: it lives on in its handles' data
    /// file until the last close, with no name and no catalog entry (POSIX keeps such a file
    /// usable through its descriptors: fstat, ftruncate, reads and writes).
    pub(super) fn unlinked_attr(&self, ino: u64) -> Option<Attr> {
        use std::os::unix::fs::MetadataExt;
        let h = self.handles.any_open(ino)?;
        let m = h.file.metadata().ok()?;
        let ns = |s: i64, n: i64| s.saturating_mul(1_000_000_000).saturating_add(n);
        Some(Attr {
            ino,
            size: m.len(),
            kind: super::FileKind::RegularFile,
            // The data file's own mode is the cache's 0600; the file's mode went with its entry.
            perm: 0o644,
            nlink: 0,
            uid: self.options.uid,
            gid: self.options.gid,
            mtime: super::time_from_ns(ns(m.mtime(), m.mtime_nsec())),
            ctime: super::time_from_ns(ns(m.ctime(), m.ctime_nsec())),
            atime: super::time_from_ns(ns(m.mtime(), m.mtime_nsec())),
            rdev: 0,
            blocks: super::local_blocks(m.len()),
        })
    }

    /// setattr on a file unlinked while open: a new size applies to its data file; the other
    /// attributes had their home in the catalog entry, which is gone, so they stay as they are.
    fn setattr_unlinked(&self, ino: u64, fh: Option<u64>, change: SetAttr) -> FsResult<Attr> {
        if let Some(size) = change.size {
            let h = fh
                .and_then(|fh| self.handles.get(fh))
                .filter(|h| h.write && h.ino == ino)
                .or_else(|| self.handles.any_for(ino))
                .ok_or(FsError::NotFound(Missing::Inode(ino)))?;
            h.file.set_len(size).map_err(data_err(ino))?;
            h.mark_written(catalog::now_ns());
        }
        self.unlinked_attr(ino)
            .ok_or(FsError::NotFound(Missing::Inode(ino)))
    }

    fn truncate(&self, n: &Node, fh: Option<u64>, size: u64) -> FsResult<()> {
        if !n.local && size > 0 && n.size > 0 {
            return Err(FsError::NotYetAvailable(format!(
                "{}: changing the size needs the data, which is in Glacier",
                n.name
            )));
        }
        let ino = n.ino;
        match fh.and_then(|fh| self.handles.get(fh)).filter(|h| h.write) {
            Some(h) => {
                h.file.set_len(size).map_err(data_err(ino))?;
                h.mark_written(catalog::now_ns());
            }
            None => {
                let _data = self.open_files.lock_data(ino);
                let file = if n.local {
                    self.unshare(ino)?;
                    self.data.open_data(ino, true)
                } else {
                    self.data.create_empty(ino)
                };
                let file = file.map_err(data_err(ino))?;
                file.set_len(size).map_err(data_err(ino))?;
                let now = catalog::now_ns();
                let writers = self.open_files.writers(ino);
                let staged = self.catalog.write(move |tx| {
                    catalog::files::truncated(tx, ino, size, now, writers == 0)?;
                    catalog::files::staged(tx, ino)
                })?;
                self.write_sidecar(staged);
                if writers == 0 {
                    self.services.writeback.closed(ino);
                }
            }
        }
        Ok(())
    }
}

/// What a writer's handle left in its data file.
#[derive(Debug, Clone, Copy)]
struct CloseState {
    written: bool,
    size: u64,
    last_write_ns: i64,
}

impl CloseState {
    fn of(h: &Handle) -> FsResult<CloseState> {
        let size = h.file.metadata().map_err(data_err(h.ino))?.len();
        let (written, last_write_ns) = h.written();
        Ok(CloseState {
            written,
            size,
            last_write_ns,
        })
    }
}

#[cfg(test)]
pub(super) mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use super::*;
    use crate::catalog::{vaults, Catalog};
    use crate::engine::inventory::InventoryHandle;
    use crate::engine::retrieve::{RetrieveOptions, Retriever};
    use crate::engine::writeback::{WriteBack, WriteBackOptions};
    use crate::fs::{FsOptions, Services};
    use crate::glacier::{aws::AwsGlacier, GlacierClient, Tier};
    use crate::store::cache::DataStore;
    use crate::store::handles::OpenFiles;

    /// A file system on a fresh catalog with one vault, `v`. Nothing here reaches Glacier: the
    /// client points at a closed port and no engine is started.
    pub(in crate::fs) fn fs(
        dir: &std::path::Path,
        runtime: &tokio::runtime::Runtime,
    ) -> (GlacierFs, u64) {
        let catalog = Catalog::open(dir).unwrap();
        let vault = catalog
            .write(|tx| vaults::ensure(tx, "v", "present"))
            .unwrap()
            .ino;
        let conf = aws_sdk_glacier::Config::builder()
            .behavior_version(aws_sdk_glacier::config::BehaviorVersion::latest())
            .region(aws_sdk_glacier::config::Region::new("us-east-1"))
            .endpoint_url("http://127.0.0.1:1")
            .build();
        let client: Arc<dyn GlacierClient> = Arc::new(AwsGlacier::from_conf(conf, "-"));
        let data = DataStore::open(dir).unwrap();
        let open_files = Arc::new(OpenFiles::default());
        let writeback = WriteBack::new(
            catalog.clone(),
            client.clone(),
            data.clone(),
            open_files.clone(),
            WriteBackOptions {
                delay: Duration::from_secs(3600),
                part_size: 1 << 20,
                concurrency: 1,
                memory_budget: 1 << 24,
                delete_delay: Duration::ZERO,
            },
        );
        let retriever = Retriever::new(
            catalog.clone(),
            client.clone(),
            data.clone(),
            RetrieveOptions {
                tier: Tier::Bulk.into(),
                auto: false,
                budget: 0,
                job_budget: 0,
                poll_interval: Duration::from_secs(3600),
                cache_size: 1 << 30,
            },
            runtime.handle().clone(),
            open_files.clone(),
        );
        let options = FsOptions {
            uid: 0,
            gid: 0,
            read_only: false,
            cache_dir: dir.to_owned(),
            retry_interval: Duration::from_secs(3600),
            delete_delay: Duration::ZERO,
            peek: crate::fs::peek::PeekRules::default(),
        };
        let services = Services {
            runtime: runtime.handle().clone(),
            client,
            inventory: InventoryHandle::disabled(),
            writeback,
            retriever,
        };
        let fs = GlacierFs::new(catalog, options, services, data, open_files);
        (fs, vault)
    }

    /// A scratch directory and a runtime for [`fs`].
    fn scratch() -> (tempfile::TempDir, tokio::runtime::Runtime) {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        (tempfile::tempdir().unwrap(), runtime)
    }

    fn errno<T: std::fmt::Debug>(r: FsResult<T>) -> i32 {
        r.expect_err("the call should fail").errno()
    }

    /// The sidecar is what recovers a staged file without the catalog: each change to its name
    /// or attributes is in it once the call returns, read in the change's own write.
    #[test]
    fn a_staged_files_sidecar_follows_each_change() {
        let (dir, runtime) = scratch();
        let (fs, vault) = fs(dir.path(), &runtime);
        let (attr, fh) = fs.create(vault, OsStr::new("a"), 0o640, 0, 0).unwrap();
        let ino = attr.ino;
        let sidecar = || fs.data.read_sidecar(ino).unwrap();
        let s = sidecar();
        assert_eq!((s.vault.as_str(), s.path.as_str()), ("v", "a"));
        assert_eq!(s.mode, Some(0o640));
        fs.write(fh, 0, b"data").unwrap();
        fs.release(fh).unwrap();
        let written = fs.getattr(ino).unwrap().mtime;
        assert_eq!(super::super::time_from_ns(sidecar().mtime_ns), written);

        let old = 1_600_000_000_123_456_789;
        let change = SetAttr {
            mode: Some(0o600),
            mtime_ns: Some(old),
            ..Default::default()
        };
        fs.setattr(ino, None, change).unwrap();
        let s = sidecar();
        assert_eq!((s.mode, s.mtime_ns), (Some(0o600), old));

        fs.rename(vault, OsStr::new("a"), vault, OsStr::new("b"), 0)
            .unwrap();
        assert_eq!(sidecar().path, "b");

        // Truncated with no writer open: still staged, still described.
        let change = SetAttr {
            size: Some(1),
            mode: Some(0o644),
            ..Default::default()
        };
        fs.setattr(ino, None, change).unwrap();
        let s = sidecar();
        assert_eq!((s.path.as_str(), s.mode), ("b", Some(0o644)));
    }

    #[test]
    fn unknown_and_released_handles_are_ebadf() {
        let (dir, runtime) = scratch();
        let (fs, vault) = fs(dir.path(), &runtime);
        let (attr, fh) = fs.create(vault, OsStr::new("f"), 0o644, 0, 0).unwrap();
        assert_eq!(fs.write(fh, 0, b"data").unwrap(), 4);
        assert_eq!(fs.read(fh, 0, 16).unwrap(), b"data");
        fs.release(fh).unwrap();
        assert_eq!(fs.getattr(attr.ino).unwrap().size, 4);
        // A released handle and one never given out fail alike.
        for bad in [fh, 9999] {
            assert_eq!(errno(fs.read(bad, 0, 1)), libc::EBADF);
            assert_eq!(errno(fs.write(bad, 0, b"x")), libc::EBADF);
            assert_eq!(errno(fs.fsync(bad)), libc::EBADF);
        }
        // As write(2) on a descriptor opened read-only.
        let ro = fs.open(attr.ino, libc::O_RDONLY).unwrap();
        assert_eq!(errno(fs.write(ro, 0, b"x")), libc::EBADF);
        fs.release(ro).unwrap();
        // A name that is not there says which, and is still ENOENT.
        let e = fs.unlink(vault, OsStr::new("nope")).unwrap_err();
        assert_eq!(e.errno(), libc::ENOENT);
        assert!(e.to_string().contains("\"nope\""), "{e}");
    }
}
