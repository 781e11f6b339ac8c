//! The file-system semantics (SEMANTICS.md), independent of the kernel: what each operation
//! means for vaults, directories and archives. The fuser adapter (`crate::fs::fuse`) only
//! translates to and from these calls, so everything here is testable without a mount.
//!
//! Requests are answered from the catalog and local files only. Work that must wait on Glacier
//! (creating and deleting vaults) is handed to the background runtime together with a
//! completion, so no FUSE thread ever blocks on the network.

pub mod control;
mod control_files;
pub mod error;
pub mod files;
pub mod fuse;
pub mod invalidate;
mod lock_file;
pub mod namespace;
pub mod passthrough;
pub mod peek;
pub mod privileges;
mod vaults;
mod xattr;

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

pub use error::{FsError, FsResult, Missing, Op};
pub(crate) use vaults::spawn_delete as spawn_vault_delete;

use crate::catalog::{self, nodes, Catalog, Kind, Node, ROOT_INO};
use crate::codec::names;
use crate::engine::inventory::InventoryHandle;
use crate::glacier::GlacierClient;
use crate::store::cache::DataStore;
use crate::store::handles::{self, Handles, OpenFiles};

/// A request's completion: called exactly once, from whichever thread finishes the work.
pub type Done<T> = Box<dyn FnOnce(FsResult<T>) + Send>;

/// Mount-wide settings the semantics depend on.
#[derive(Debug, Clone)]
pub struct FsOptions {
    pub uid: u32,
    pub gid: u32,
    pub read_only: bool,
    pub cache_dir: PathBuf,
    /// How long a refused DeleteVault waits before it is tried again.
    pub retry_interval: Duration,
    /// How long an archive delete waits in the queue (cancellable until then).
    pub delete_delay: Duration,
    /// Programs whose opens of cold files start no retrieval (`peek`).
    pub peek: peek::PeekRules,
}

/// What the semantics need from the rest of the daemon.
#[derive(Clone)]
pub struct Services {
    pub runtime: tokio::runtime::Handle,
    pub client: Arc<dyn GlacierClient>,
    pub inventory: InventoryHandle,
    pub writeback: Arc<crate::engine::writeback::WriteBack>,
    pub retriever: Arc<crate::engine::retrieve::Retriever>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileKind {
    Directory,
    RegularFile,
    Symlink,
    NamedPipe,
    Socket,
    CharDevice,
    BlockDevice,
}

impl FileKind {
    /// The kind of a special file, from the `S_IFMT` bits of `mode`.
    pub fn of_special(mode: u32) -> Option<FileKind> {
        match mode & libc::S_IFMT {
            libc::S_IFIFO => Some(FileKind::NamedPipe),
            libc::S_IFSOCK => Some(FileKind::Socket),
            libc::S_IFCHR => Some(FileKind::CharDevice),
            libc::S_IFBLK => Some(FileKind::BlockDevice),
            _ => None,
        }
    }
}

/// Longest name component, in bytes (NAME_MAX): a longer one is ENAMETOOLONG in every call
/// that takes a name, whether it would create the name or look it up.
pub const NAME_MAX: usize = names::MAX_SEGMENT;

/// Attributes of one inode, in the file system's terms.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Attr {
    pub ino: u64,
    pub size: u64,
    pub kind: FileKind,
    pub perm: u16,
    pub nlink: u32,
    pub uid: u32,
    pub gid: u32,
    pub mtime: SystemTime,
    pub ctime: SystemTime,
    /// Kept apart from the mtime once set; reads never change it (as with `noatime`).
    pub atime: SystemTime,
    /// A device node's number; 0 for everything else.
    pub rdev: u32,
    /// 512-byte blocks of data on this machine (`st_blocks`): a cold file's data is in
    /// Glacier, so it has none, and `du` shows what the cache holds, as on other
    /// hierarchical-storage file systems.
    pub blocks: u64,
}

/// The kind of file a node of catalog kind `kind` and mode `mode` is.
fn file_kind(kind: Kind, mode: Option<u32>) -> FileKind {
    match kind {
        Kind::Root | Kind::Vault | Kind::Dir => FileKind::Directory,
        Kind::File => FileKind::RegularFile,
        Kind::Symlink => FileKind::Symlink,
        // A special node always has its type bits; a pipe is the harmless guess otherwise.
        Kind::Special => mode
            .and_then(FileKind::of_special)
            .unwrap_or(FileKind::NamedPipe),
    }
}

/// `st_blocks` of a file with `size` bytes on this machine.
fn local_blocks(size: u64) -> u64 {
    size.div_ceil(512)
}

/// One directory entry for readdir(plus); `cookie` resumes the listing after it.
#[derive(Debug, Clone)]
pub struct DirEntry {
    pub name: Vec<u8>,
    pub attr: Attr,
    pub cookie: u64,
}

/// One directory entry for a listing without attributes (readdir); `cookie` as in
/// [`DirEntry`].
#[derive(Debug, Clone)]
pub struct DirName {
    pub name: Vec<u8>,
    pub ino: u64,
    pub kind: FileKind,
    pub cookie: u64,
}

/// statfs figures.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StatFs {
    pub block_size: u32,
    pub blocks: u64,
    pub blocks_free: u64,
    pub blocks_available: u64,
    pub files: u64,
}

// readdir cookies: 1 and 2 are "." and ".."; a catalog child resumes after ino = cookie - 2.
const DOT_COOKIE: u64 = 1;
const DOTDOT_COOKIE: u64 = 2;
const COOKIE_BASE: u64 = 2;

pub struct GlacierFs {
    catalog: Catalog,
    options: FsOptions,
    services: Services,
    data: DataStore,
    handles: Handles,
    open_files: Arc<OpenFiles>,
    backings: passthrough::Backings,
    control_snapshots: Arc<control_files::ControlHandles>,
    /// Peeks refused, counted for the log and `glacierfs status`.
    peeks: Arc<peek::Tally>,
    /// The namespace snapshot engine, once the stack has started it (none in-process).
    snapshots: std::sync::OnceLock<Arc<crate::engine::snapshot::Snapshots>>,
}

fn time_from_ns(ns: i64) -> SystemTime {
    if ns >= 0 {
        UNIX_EPOCH + Duration::from_nanos(ns as u64)
    } else {
        UNIX_EPOCH - Duration::from_nanos(ns.unsigned_abs())
    }
}

impl GlacierFs {
    pub fn new(
        catalog: Catalog,
        options: FsOptions,
        services: Services,
        data: DataStore,
        open_files: Arc<OpenFiles>,
    ) -> Self {
        let peeks = peek::Tally::new(catalog.clone(), services.runtime.clone());
        GlacierFs {
            catalog,
            options,
            services,
            data,
            handles: Handles::default(),
            open_files,
            backings: passthrough::Backings::default(),
            control_snapshots: Arc::default(),
            peeks,
            snapshots: std::sync::OnceLock::new(),
        }
    }

    /// Hands the file system the snapshot engine, for `sync --snapshot`, `catalog restore` and
    /// `.jobs`.
    pub fn set_snapshots(&self, snapshots: Arc<crate::engine::snapshot::Snapshots>) {
        let _ = self.snapshots.set(snapshots);
    }

    /// Passthrough registrations, for the adapter that makes them.
    pub fn backings(&self) -> &passthrough::Backings {
        &self.backings
    }

    /// The data file behind an open handle.
    pub fn handle_file(&self, fh: u64) -> Option<Arc<handles::Handle>> {
        self.handles.get(fh)
    }

    pub fn catalog(&self) -> &Catalog {
        &self.catalog
    }

    fn attr_of(&self, n: &Node) -> Attr {
        let kind = file_kind(n.kind, n.mode);
        let default_perm = match n.kind {
            Kind::Root | Kind::Vault | Kind::Dir => 0o755,
            Kind::Symlink => 0o777,
            Kind::File | Kind::Special => 0o644,
        };
        Attr {
            ino: n.ino,
            size: if n.kind.is_dir() { 0 } else { n.size },
            kind,
            perm: n.mode.map(|m| (m & 0o7777) as u16).unwrap_or(default_perm),
            // "." and the entry in its parent, plus each subdirectory's "..": the count the
            // catalog keeps as directories come and go, so this costs no query.
            nlink: if n.kind.is_dir() {
                u32::try_from(n.subdirs.saturating_add(2)).unwrap_or(u32::MAX)
            } else {
                1
            },
            uid: n.uid.unwrap_or(self.options.uid),
            gid: n.gid.unwrap_or(self.options.gid),
            mtime: time_from_ns(n.mtime_ns),
            ctime: time_from_ns(n.ctime_ns),
            atime: time_from_ns(n.atime_ns.unwrap_or(n.mtime_ns)),
            rdev: n.rdev.map(|d| d as u32).unwrap_or(0),
            blocks: if n.kind == Kind::File && n.local {
                local_blocks(n.size)
            } else {
                0
            },
        }
    }

    /// A node as the user may see it: vaults being deleted are already gone from view.
    /// `missing` names what was looked for, for the error.
    fn visible(&self, n: Option<Node>, missing: impl FnOnce() -> Missing) -> FsResult<Node> {
        let Some(n) = n else {
            return Err(FsError::NotFound(missing()));
        };
        if n.kind == Kind::Vault {
            // Read after the node, so a vault forgotten in between has no row any more: only a
            // row that says the vault is wanted shows it (a node and its row go in one write).
            let shown = self
                .catalog
                .read(|c| Ok(catalog::vaults::by_ino(c, n.ino)?.map(|v| v.state != "deleting")))?;
            if shown != Some(true) {
                return Err(FsError::NotFound(missing()));
            }
        }
        Ok(n)
    }

    fn node(&self, ino: u64) -> FsResult<Node> {
        let n = self.catalog.read(|c| nodes::get(c, ino))?;
        self.visible(n, || Missing::Inode(ino))
    }

    /// The visible entry `name` of directory `parent`. Catalog names are UTF-8, so no other
    /// name is ever found.
    fn entry(&self, parent: u64, name: &OsStr) -> FsResult<Node> {
        let missing = || Missing::entry(parent, name);
        if name.len() > NAME_MAX {
            return Err(FsError::NameTooLong(name.to_string_lossy().into_owned()));
        }
        let Ok(utf8) = std::str::from_utf8(name.as_bytes()) else {
            return Err(FsError::NotFound(missing()));
        };
        let n = self.catalog.read(|c| nodes::lookup(c, parent, utf8))?;
        self.visible(n, missing)
    }

    /// First access to a vault's contents asks the inventory worker to make sure the catalog
    /// has its inventory; the worker decides whether a job is needed.
    fn touch_vault(&self, n: &Node) {
        let vault = n.vault_ino();
        if vault != 0 {
            self.services.inventory.request(vault, false);
        }
    }

    pub fn getattr(&self, ino: u64) -> FsResult<Attr> {
        if let Some(a) = self.control_getattr(ino) {
            return a;
        }
        match self.node(ino) {
            Err(FsError::NotFound(missing)) => {
                self.unlinked_attr(ino).ok_or(FsError::NotFound(missing))
            }
            n => Ok(self.file_attr(&n?)),
        }
    }

    /// Whether `ino` is a control file (opened with direct I/O, never passthrough).
    pub fn is_control(&self, ino: u64) -> bool {
        control_files::control_dir(ino).is_some()
    }

    /// Whether `fh` is a handle of a control file.
    pub fn is_control_handle(&self, fh: u64) -> bool {
        control_files::is_control_handle(fh)
    }

    pub fn lookup(&self, parent: u64, name: &OsStr) -> FsResult<Attr> {
        let p = self.node(parent)?;
        if !p.kind.is_dir() {
            return Err(FsError::NotDir);
        }
        self.touch_vault(&p);
        if let Some(a) = name.to_str().and_then(|utf8| self.lookup_control(&p, utf8)) {
            return Ok(a);
        }
        Ok(self.file_attr(&self.entry(parent, name)?))
    }

    /// Up to `max` entries after `offset` (a cookie from an earlier entry, or 0).
    pub fn readdir(&self, ino: u64, offset: u64, max: usize) -> FsResult<Vec<DirEntry>> {
        let dir = self.node(ino)?;
        if !dir.kind.is_dir() {
            return Err(FsError::NotDir);
        }
        self.touch_vault(&dir);
        let mut out = Vec::with_capacity(max.min(1024));
        if offset < DOT_COOKIE {
            out.push(DirEntry {
                name: b".".to_vec(),
                attr: self.attr_of(&dir),
                cookie: DOT_COOKIE,
            });
        }
        if offset < DOTDOT_COOKIE {
            let parent = if ino == ROOT_INO {
                dir.clone()
            } else {
                self.node(dir.parent)?
            };
            out.push(DirEntry {
                name: b"..".to_vec(),
                attr: self.attr_of(&parent),
                cookie: DOTDOT_COOKIE,
            });
        }
        let after = offset.saturating_sub(COOKIE_BASE);
        let want = max.saturating_sub(out.len());
        if want == 0 {
            return Ok(out);
        }
        // The two reads are two snapshots: the vaults are read after the children, and only
        // a vault whose row is there and not being deleted is listed, so a vault forgotten in
        // between (its DeleteVault done) is not listed from the older snapshot of the nodes.
        let (children, shown) = self.catalog.read(|c| {
            let kids = nodes::children(c, ino, after, want)?;
            let shown: Vec<u64> = if ino == ROOT_INO {
                catalog::vaults::all(c)?
                    .into_iter()
                    .filter(|v| v.state != "deleting")
                    .map(|v| v.ino)
                    .collect()
            } else {
                Vec::new()
            };
            Ok((kids, shown))
        })?;
        for n in children {
            let cookie = n.ino + COOKIE_BASE;
            if n.kind == Kind::Vault && !shown.contains(&n.ino) {
                continue;
            }
            out.push(DirEntry {
                name: n.name.as_bytes().to_vec(),
                // As getattr would answer: a file open for writing has its data file's size.
                attr: self.file_attr(&n),
                cookie,
            });
        }
        Ok(out)
    }

    /// Up to `max` entries after `offset`, as [`GlacierFs::readdir`] lists them, with names
    /// and kinds only: what a listing without attributes (`find`, `ls` without `-l`) is sent,
    /// read without the columns it does not need.
    pub fn readdir_names(&self, ino: u64, offset: u64, max: usize) -> FsResult<Vec<DirName>> {
        if ino == ROOT_INO {
            // The vaults: few, and those being deleted are left out, as readdir does.
            let entries = self.readdir(ino, offset, max)?;
            return Ok(entries
                .into_iter()
                .map(|e| DirName {
                    name: e.name,
                    ino: e.attr.ino,
                    kind: e.attr.kind,
                    cookie: e.cookie,
                })
                .collect());
        }
        let dir = self.node(ino)?;
        if !dir.kind.is_dir() {
            return Err(FsError::NotDir);
        }
        self.touch_vault(&dir);
        let mut out = Vec::with_capacity(max.min(1024));
        for (name, ino, cookie) in [(".", ino, DOT_COOKIE), ("..", dir.parent, DOTDOT_COOKIE)] {
            if offset < cookie {
                out.push(DirName {
                    name: name.as_bytes().to_vec(),
                    ino,
                    kind: FileKind::Directory,
                    cookie,
                });
            }
        }
        let want = max.saturating_sub(out.len());
        if want == 0 {
            return Ok(out);
        }
        let after = offset.saturating_sub(COOKIE_BASE);
        let children = self
            .catalog
            .read(|c| nodes::child_names(c, ino, after, want))?;
        out.extend(children.into_iter().map(|c| DirName {
            kind: file_kind(c.kind, c.mode),
            name: c.name.into_bytes(),
            ino: c.ino,
            cookie: c.ino + COOKIE_BASE,
        }));
        Ok(out)
    }

    pub fn mkdir(
        &self,
        parent: u64,
        name: &OsStr,
        mode: u32,
        uid: u32,
        gid: u32,
        done: Done<Attr>,
    ) {
        if self.options.read_only {
            return done(Err(FsError::ReadOnly));
        }
        let p = match self.node(parent) {
            Ok(p) => p,
            Err(e) => return done(Err(e)),
        };
        if p.kind == Kind::Root {
            return self.create_vault(name, done);
        }
        done(self.mkdir_in_vault(&p, name, mode, uid, gid))
    }

    fn mkdir_in_vault(
        &self,
        parent: &Node,
        name: &OsStr,
        mode: u32,
        uid: u32,
        gid: u32,
    ) -> FsResult<Attr> {
        if !parent.kind.is_dir() {
            return Err(FsError::NotDir);
        }
        let name = checked_name(name)?;
        let vault = parent.vault_ino();
        // A directory's own path must leave room for files in it, so the check is the same one
        // a file would get: its mt2 description must fit.
        self.new_path(parent, &name)?;
        if parent.kind == Kind::Vault && names::is_reserved(&name) {
            return Err(FsError::Exists);
        }
        let parent_ino = parent.ino;
        let (uid, gid) = self.owner(uid, gid);
        let now = catalog::now_ns();
        let node = self.catalog.write(move |tx| {
            let ino = nodes::insert(
                tx,
                Kind::Dir,
                &nodes::NewNode {
                    parent: parent_ino,
                    name: &name,
                    vault,
                    mtime_ns: now,
                    mode: Some(mode & 0o7777),
                    uid,
                    gid,
                    ..Default::default()
                },
            )?;
            nodes::entries_changed(tx, parent_ino, now)?;
            nodes::get(tx, ino)?.ok_or(catalog::CatalogError::NotFound)
        })?;
        Ok(self.attr_of(&node))
    }

    /// Refuses changes on a read-only mount.
    fn writable(&self) -> FsResult<()> {
        if self.options.read_only {
            Err(FsError::ReadOnly)
        } else {
            Ok(())
        }
    }

    /// The vault-relative path a new entry `name` in `parent` would have, checked against the
    /// description limit: a path that could never be uploaded is refused now, not later.
    pub(super) fn new_path(&self, parent: &Node, name: &str) -> FsResult<String> {
        let rel = self
            .catalog
            .read(|c| nodes::vault_relative_path(c, parent.ino))?;
        let path = if rel.is_empty() {
            name.to_owned()
        } else {
            format!("{rel}/{name}")
        };
        if !names::fits(&path, 0) {
            return Err(FsError::NameTooLong(path));
        }
        if !names::is_stable_path(&path) {
            return Err(FsError::Invalid(format!(
                "{name:?} would not survive a round trip through its archive description"
            )));
        }
        Ok(path)
    }

    /// The directory a new entry goes into: a vault or a directory, never the root (which
    /// holds only vaults) or a file.
    fn entry_parent(&self, parent: u64) -> FsResult<Node> {
        let p = self.node(parent)?;
        match p.kind {
            Kind::Root => Err(FsError::NotPermitted("only vaults live at the root")),
            Kind::File | Kind::Symlink | Kind::Special => Err(FsError::NotDir),
            Kind::Vault | Kind::Dir => Ok(p),
        }
    }

    /// Owners are recorded only when they differ from the mount's, so a catalog moved to
    /// another user keeps showing that user's files as theirs.
    fn owner(&self, uid: u32, gid: u32) -> (Option<u32>, Option<u32>) {
        (
            (uid != self.options.uid).then_some(uid),
            (gid != self.options.gid).then_some(gid),
        )
    }

    pub fn rmdir(&self, parent: u64, name: &OsStr, done: Done<()>) {
        if self.options.read_only {
            return done(Err(FsError::ReadOnly));
        }
        if parent == ROOT_INO {
            return self.delete_vault(name, done);
        }
        let result = (|| {
            let n = self.entry(parent, name)?;
            if n.kind != Kind::Dir {
                return Err(FsError::NotDir);
            }
            let now = catalog::now_ns();
            self.catalog.write(move |tx| {
                nodes::remove(tx, n.ino)?;
                nodes::entries_changed(tx, n.parent, now)
            })?;
            Ok(())
        })();
        done(result)
    }

    pub fn statfs(&self) -> FsResult<StatFs> {
        let used = self.catalog.read(nodes::total_bytes)?;
        let available = crate::store::cache::free_space(&self.options.cache_dir)?;
        let block_size = 4096u64;
        let free_blocks = available / block_size;
        Ok(StatFs {
            block_size: block_size as u32,
            blocks: used.div_ceil(block_size) + free_blocks,
            blocks_free: free_blocks,
            blocks_available: free_blocks,
            files: 0,
        })
    }
}

/// A user-given name for a new entry, checked.
fn checked_name(name: &OsStr) -> FsResult<String> {
    names::check_user_segment(name.as_bytes())
        .map(str::to_owned)
        .map_err(|e| match e {
            names::NameError::TooLong => FsError::NameTooLong(name.to_string_lossy().into_owned()),
            other => FsError::Invalid(format!("{other}")),
        })
}
