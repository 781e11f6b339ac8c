//! The thin fuser adapter: each FUSE request becomes a call into [`GlacierFs`], and each result
//! becomes a reply or an errno. No semantics live here.

use std::ffi::OsStr;
use std::io;
use std::path::Path;
use std::time::Duration;

use std::time::{SystemTime, UNIX_EPOCH};

use fuser::{
    Errno, FileAttr, FileHandle, FileType, Filesystem, FopenFlags, Generation, INodeNo, InitFlags,
    KernelConfig, LockOwner, OpenFlags, RenameFlags, ReplyAttr, ReplyCreate, ReplyData,
    ReplyDirectory, ReplyDirectoryPlus, ReplyEmpty, ReplyEntry, ReplyOpen, ReplyStatfs, ReplyWrite,
    ReplyXattr, Request, TimeOrNow, WriteFlags,
};

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use fuser::BackingId;

use crate::catalog::ROOT_INO;
use crate::fs::files::{ClearSetId, SetAttr};
use crate::fs::passthrough;
use crate::fs::peek::Caller;
use crate::fs::privileges;
use crate::fs::{Attr, FileKind, FsError, GlacierFs, Op};

/// How long the kernel may keep names and attributes. Every change made behind the kernel's
/// back (an inventory dropping archives, a vault gone upstream, sizes settled after a crash)
/// is sent to it as an invalidation (`catalog::changes`, `invalidate`), so this can be long;
/// names not seen yet need no notice, as failed lookups are not cached and cached listings
/// are told of every change (`opendir`).
const TTL: Duration = Duration::from_secs(3600);
/// Catalog rows read at a time to fill a listing reply (`fill_listing`).
const LISTING_CHUNK: usize = 128;
/// Longest name, as statfs reports it.
const NAME_MAX: u32 = 255;

pub struct FuseAdapter {
    fs: GlacierFs,
    /// Each directory's [`Catalog::listings_epoch`] when the kernel last started reading its
    /// listing from the daemon: the kernel may keep a listing only while no listing has
    /// changed since. One entry per directory listed since the mount started.
    ///
    /// [`Catalog::listings_epoch`]: crate::catalog::Catalog::listings_epoch
    listed_at: Mutex<HashMap<u64, u64>>,
    /// The kernel left clearing set-user-ID and set-group-ID bits to the daemon
    /// (`fs::privileges`); set at INIT.
    clears_privileges: bool,
}

impl FuseAdapter {
    pub fn new(fs: GlacierFs) -> Self {
        FuseAdapter {
            fs,
            listed_at: Mutex::default(),
            clears_privileges: false,
        }
    }

    /// Notes, before a listing's first rows are read, the epoch they are at least as new as.
    fn listing_starts(&self, dir: u64, offset: u64) {
        if offset == 0 && dir != ROOT_INO {
            let epoch = self.fs.catalog().listings_epoch();
            crate::locks::lock(&self.listed_at).insert(dir, epoch);
        }
    }

    /// Whether an open with `flags` may write.
    fn opens_for_writing(flags: i32) -> bool {
        flags & libc::O_ACCMODE != libc::O_RDONLY
    }
}

fn file_type(kind: FileKind) -> FileType {
    match kind {
        FileKind::Directory => FileType::Directory,
        FileKind::RegularFile => FileType::RegularFile,
        FileKind::Symlink => FileType::Symlink,
        FileKind::NamedPipe => FileType::NamedPipe,
        FileKind::Socket => FileType::Socket,
        FileKind::CharDevice => FileType::CharDevice,
        FileKind::BlockDevice => FileType::BlockDevice,
    }
}

/// Why the kernel will refuse to register passthrough's backing files, if it will: that needs
/// CAP_SYS_ADMIN in the initial user namespace, which an ordinary
/// user's mount, or one made inside a user namespace, does not have. None when it cannot tell:
/// passthrough is then tried, and turned off at the first refusal as before.
fn passthrough_refused() -> Option<&'static str> {
    use std::os::unix::fs::MetadataExt;
    // The initial user namespace's fixed inode number (PROC_USER_INIT_INO).
    const INIT_USER_NS: u64 = 0xEFFF_FFFD;
    const CAP_SYS_ADMIN: u32 = 21;
    let ns = std::fs::metadata("/proc/self/ns/user").ok()?;
    if ns.ino() != INIT_USER_NS {
        return Some("the mount is in a user namespace, where the kernel refuses it");
    }
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let caps = status.lines().find_map(|l| l.strip_prefix("CapEff:"))?;
    let caps = u64::from_str_radix(caps.trim(), 16).ok()?;
    (caps & (1 << CAP_SYS_ADMIN) == 0).then_some("it needs CAP_SYS_ADMIN, which the mount lacks")
}

fn file_attr(a: &Attr) -> FileAttr {
    FileAttr {
        ino: INodeNo(a.ino),
        size: a.size,
        blocks: a.blocks,
        atime: a.atime,
        mtime: a.mtime,
        ctime: a.ctime,
        crtime: a.ctime,
        kind: file_type(a.kind),
        perm: a.perm,
        nlink: a.nlink,
        uid: a.uid,
        gid: a.gid,
        rdev: a.rdev,
        blksize: 4096,
        flags: 0,
    }
}

/// Fills a listing reply from `offset` on, a chunk of catalog rows at a time (`fetch` reads
/// the chunk after a cookie), until `add` says the kernel's buffer is full or the directory has
/// no more entries. The buffer is what getdents(2) asked for (32 KiB for `find` and `ls`: some
/// 800 entries without attributes, 190 with), so each round trip carries as many entries as
/// it can hold, and at most one chunk is read for nothing.
fn fill_listing<T>(
    mut offset: u64,
    fetch: impl Fn(u64) -> Result<Vec<T>, FsError>,
    cookie: impl Fn(&T) -> u64,
    mut add: impl FnMut(&T) -> bool,
) -> Result<(), FsError> {
    loop {
        let entries = fetch(offset)?;
        if entries.is_empty() {
            return Ok(());
        }
        for e in &entries {
            if add(e) {
                return Ok(());
            }
            offset = cookie(e);
        }
    }
}

fn time_ns(t: TimeOrNow) -> i64 {
    let t = match t {
        TimeOrNow::SpecificTime(t) => t,
        TimeOrNow::Now => SystemTime::now(),
    };
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_nanos()).unwrap_or(i64::MAX),
        Err(e) => -i64::try_from(e.duration().as_nanos()).unwrap_or(i64::MAX),
    }
}

fn errno(op: Op<'_>, e: &FsError) -> Errno {
    e.log(op);
    Errno::from_i32(e.errno())
}

/// Replies to an xattr request: the size when asked for it, the data when it fits, else ERANGE.
fn reply_xattr(reply: ReplyXattr, size: u32, data: &[u8]) {
    if size == 0 {
        reply.size(data.len() as u32);
    } else if data.len() <= size as usize {
        reply.data(data);
    } else {
        reply.error(Errno::from_i32(libc::ERANGE));
    }
}

impl FuseAdapter {
    /// The passthrough registration for a new handle, if the kernel and the inode allow one.
    fn backing(
        &self,
        ino: u64,
        fh: u64,
        register: impl FnOnce(&std::fs::File) -> io::Result<BackingId>,
    ) -> Option<Arc<BackingId>> {
        let handle = self.fs.handle_file(fh)?;
        let token = self.fs.backings().acquire(ino, fh, &handle.file, || {
            register(&handle.file).map(|b| Arc::new(b) as passthrough::Token)
        })?;
        token.downcast::<BackingId>().ok()
    }
}

impl Filesystem for FuseAdapter {
    fn init(&mut self, _req: &Request, config: &mut KernelConfig) -> io::Result<()> {
        // READDIRPLUS where it pays: the kernel asks for attributes with a listing's first
        // page, and with the later ones only while the program listing is stat'ing what it
        // reads (READDIRPLUS_AUTO), so `ls -l` costs one round trip per page rather than one
        // per entry, and `find`, which needs names and types only, is not sent attributes.
        match config.add_capabilities(InitFlags::FUSE_DO_READDIRPLUS) {
            Ok(()) => {
                if let Err(missing) = config.add_capabilities(InitFlags::FUSE_READDIRPLUS_AUTO) {
                    log::info!("kernel lacks {missing:?}; every listing page has attributes");
                }
            }
            Err(missing) => log::info!("kernel lacks {missing:?}; listings use plain readdir"),
        }
        // O_TRUNC must arrive with the open: truncating a cold file needs no retrieval, but an
        // open without the flag would ask for one.
        if let Err(missing) = config.add_capabilities(InitFlags::FUSE_ATOMIC_O_TRUNC) {
            log::warn!("kernel lacks {missing:?}; overwriting an archived file needs its data");
        }
        let _ = config.set_max_write(1 << 20);
        // The daemon clears set-user-ID and set-group-ID bits itself (`fs::privileges`), so
        // the kernel stops asking for `security.capability` before every write(2).
        match config.add_capabilities(InitFlags::FUSE_HANDLE_KILLPRIV_V2) {
            Ok(()) => self.clears_privileges = true,
            Err(missing) => log::info!("kernel lacks {missing:?}; it asks before each write"),
        }
        // Without passthrough, opens keep the page cache (FOPEN_KEEP_CACHE below); the kernel
        // still drops it when a file's size or mtime changes behind its back.
        if let Err(missing) = config.add_capabilities(InitFlags::FUSE_AUTO_INVAL_DATA) {
            log::info!("kernel lacks {missing:?}");
        }
        // Passthrough: reads and writes of open files go straight to their data files in the
        // kernel. It needs the capability and a stacking depth (our backing files live on an
        // ordinary file system, at most one overlay deep), and the right to register backing
        // files, which an ordinary user's mount does not have: known here, before the first
        // open, so that such a mount gets the writeback cache below instead.
        let passthrough = if !self.fs.backings().enabled() {
            Err(None)
        } else if let Some(why) = passthrough_refused() {
            Err(Some(why))
        } else {
            config
                .add_capabilities(InitFlags::FUSE_PASSTHROUGH)
                .map_err(|_| Some("the kernel lacks FUSE_PASSTHROUGH"))
                .and_then(|_| {
                    config
                        .set_max_stack_depth(2)
                        .map_err(|_| Some("the stacking depth was refused"))
                })
        };
        if let Err(why) = passthrough {
            if let Some(why) = why {
                self.fs.backings().disable(why);
            }
            // Without passthrough, the writeback cache keeps written data in the page cache
            // and sends it in large batches, and the kernel keeps size and mtime itself, so a
            // file just written is read back from the page cache rather than dropped when its
            // mtime moves (AUTO_INVAL_DATA). The kernel sends the mtime it kept with a setattr
            // when the file is flushed. Passthrough and the writeback cache exclude each other
            // in the kernel, so only a mount without passthrough asks for it.
            match config.add_capabilities(InitFlags::FUSE_WRITEBACK_CACHE) {
                Ok(()) => log::info!("the kernel's writeback cache is on"),
                Err(missing) => log::info!("kernel lacks {missing:?}; writes go through at once"),
            }
        }
        Ok(())
    }

    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        match self.fs.lookup(parent.0, name) {
            Ok(a) => reply.entry(&TTL, &file_attr(&a), Generation(0)),
            Err(e) => reply.error(errno(Op::new("lookup").entry(parent.0, name), &e)),
        }
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        match self.fs.getattr(ino.0) {
            Ok(a) => reply.attr(&TTL, &file_attr(&a)),
            Err(e) => reply.error(errno(Op::new("getattr").ino(ino.0), &e)),
        }
    }

    fn mkdir(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        reply: ReplyEntry,
    ) {
        let (parent, owned) = (parent.0, name.to_owned());
        self.fs.mkdir(
            parent,
            name,
            mode & !umask,
            req.uid(),
            req.gid(),
            Box::new(move |r| match r {
                Ok(a) => reply.entry(&TTL, &file_attr(&a), Generation(0)),
                Err(e) => reply.error(errno(Op::new("mkdir").entry(parent, &owned), &e)),
            }),
        );
    }

    fn rmdir(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        let (parent, owned) = (parent.0, name.to_owned());
        self.fs.rmdir(
            parent,
            name,
            Box::new(move |r| match r {
                Ok(()) => reply.ok(),
                Err(e) => reply.error(errno(Op::new("rmdir").entry(parent, &owned), &e)),
            }),
        );
    }

    fn open(&self, req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        if self.fs.is_control(ino.0) {
            // Control files render a snapshot per open: no page cache, no passthrough.
            return self.fs.open_control(
                ino.0,
                Box::new(move |r| match r {
                    Ok(fh) => reply.opened(FileHandle(fh), FopenFlags::FOPEN_DIRECT_IO),
                    Err(e) => reply.error(errno(Op::new("open").ino(ino.0), &e)),
                }),
            );
        }
        // An open that truncates is a truncation (`fs::privileges`).
        if self.clears_privileges
            && flags.0 & libc::O_TRUNC != 0
            && Self::opens_for_writing(flags.0)
        {
            let cleared = self
                .fs
                .clear_privileges_for_truncation(ino.0, req.uid(), req.gid());
            if let Err(e) = cleared {
                return reply.error(errno(Op::new("open").ino(ino.0), &e));
            }
        }
        // The caller's pid: a program that only peeks starts no retrieval (`peek`).
        // The backing is registered under the data file's lock, with the open (`open_then`).
        let opened = self
            .fs
            .open_then(ino.0, flags.0, &Caller::new(req.pid()), |fh| {
                self.backing(ino.0, fh, |f| reply.open_backing(f))
            });
        match opened {
            Ok((fh, backing)) => match backing {
                Some(b) => reply.opened_passthrough(FileHandle(fh), FopenFlags::empty(), &b),
                // File data changes only through this mount's own writes (which the kernel
                // sees) or with a new size or mtime (AUTO_INVAL_DATA): the page cache may stay
                // across opens, so a second read is not served by the daemon again.
                None => reply.opened(FileHandle(fh), FopenFlags::FOPEN_KEEP_CACHE),
            },
            Err(e) => reply.error(errno(Op::new("open").ino(ino.0), &e)),
        }
    }

    fn create(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        _flags: i32,
        reply: ReplyCreate,
    ) {
        match self
            .fs
            .create(parent.0, name, mode & !umask, req.uid(), req.gid())
        {
            Ok((a, fh)) => {
                // The creator's handle must be passthrough too: the kernel refuses to mix
                // passthrough and cached opens of one inode.
                let (attr, fh) = (file_attr(&a), FileHandle(fh));
                match self.backing(a.ino, fh.0, |f| reply.open_backing(f)) {
                    Some(b) => reply.created_passthrough(
                        &TTL,
                        &attr,
                        Generation(0),
                        fh,
                        FopenFlags::empty(),
                        &b,
                    ),
                    None => {
                        reply.created(&TTL, &attr, Generation(0), fh, FopenFlags::FOPEN_KEEP_CACHE)
                    }
                }
            }
            Err(e) => reply.error(errno(Op::new("create").entry(parent.0, name), &e)),
        }
    }

    fn read(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        match self.fs.read(fh.0, offset, size) {
            Ok(data) => reply.data(&data),
            Err(e) => reply.error(errno(Op::new("read").ino(ino.0).fh(fh.0), &e)),
        }
    }

    fn write(
        &self,
        req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        data: &[u8],
        write_flags: WriteFlags,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyWrite,
    ) {
        if self.fs.is_control_handle(fh.0) {
            return self.fs.write_control(
                ino.0,
                fh.0,
                data,
                req.uid(),
                Box::new(move |r| match r {
                    Ok(n) => reply.written(n),
                    Err(e) => reply.error(errno(Op::new("write").ino(ino.0).fh(fh.0), &e)),
                }),
            );
        }
        // The kernel marks a write whose writer may not keep the bits (it knows the caller's
        // capabilities; its uid alone would not tell in a user namespace).
        if write_flags.contains(WriteFlags::FUSE_WRITE_KILL_SUIDGID) {
            if let Err(e) = self.fs.clear_privileges_for_writer(ino.0, req.gid()) {
                return reply.error(errno(Op::new("write").ino(ino.0).fh(fh.0), &e));
            }
        }
        match self.fs.write(fh.0, offset, data) {
            Ok(n) => reply.written(n),
            Err(e) => reply.error(errno(Op::new("write").ino(ino.0).fh(fh.0), &e)),
        }
    }

    fn flush(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _lock_owner: LockOwner,
        reply: ReplyEmpty,
    ) {
        reply.ok();
    }

    fn release(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        _flush: bool,
        reply: ReplyEmpty,
    ) {
        // The kernel's hold on the data file goes first, then ours: on a full disk, the
        // space of a file unlinked meanwhile comes back only when the last holder lets go.
        self.fs.backings().release(fh.0);
        let result = self.fs.release(fh.0);
        match result {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(errno(Op::new("release").ino(ino.0).fh(fh.0), &e)),
        }
    }

    fn fsync(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        match self.fs.fsync(fh.0) {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(errno(Op::new("fsync").ino(ino.0).fh(fh.0), &e)),
        }
    }

    fn setattr(
        &self,
        req: &Request,
        ino: INodeNo,
        mode: Option<u32>,
        uid: Option<u32>,
        gid: Option<u32>,
        size: Option<u64>,
        atime: Option<TimeOrNow>,
        mtime: Option<TimeOrNow>,
        _ctime: Option<SystemTime>,
        fh: Option<FileHandle>,
        _crtime: Option<SystemTime>,
        _chgtime: Option<SystemTime>,
        _bkuptime: Option<SystemTime>,
        _flags: Option<fuser::BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        let change = SetAttr {
            mode,
            uid,
            gid,
            size,
            mtime_ns: mtime.map(time_ns),
            atime_ns: atime.map(time_ns),
        };
        let clear = if self.clears_privileges {
            privileges::clearing_in(req.uid(), req.gid(), &change)
        } else {
            ClearSetId::default()
        };
        match self
            .fs
            .setattr_clearing(ino.0, fh.map(|f| f.0), change, clear)
        {
            Ok(a) => reply.attr(&TTL, &file_attr(&a)),
            Err(e) => reply.error(errno(Op::new("setattr").ino(ino.0), &e)),
        }
    }

    fn unlink(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        match self.fs.unlink(parent.0, name) {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(errno(Op::new("unlink").entry(parent.0, name), &e)),
        }
    }

    fn rename(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        newparent: INodeNo,
        newname: &OsStr,
        flags: RenameFlags,
        reply: ReplyEmpty,
    ) {
        match self
            .fs
            .rename(parent.0, name, newparent.0, newname, flags.bits())
        {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(errno(
                Op::new("rename")
                    .entry(parent.0, name)
                    .target(newparent.0, newname),
                &e,
            )),
        }
    }

    fn opendir(&self, _req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        match self.fs.getattr(ino.0) {
            // The kernel keeps a directory's listing and serves the next one itself, so a
            // repeated `find` or `ls -l` costs the daemon nothing. It may keep what it has
            // only if no listing changed since the daemon last began to send it this one (a
            // change while it was being read, by this opener or a concurrent one, could
            // otherwise leave the old listing cached for good); a change also drops the
            // listing at once (`catalog::changes`), for a program that keeps the directory
            // open and reads it again. The root is left out: its entries are the vaults,
            // whose state can hide them without an entry changing.
            Ok(a) if a.kind == FileKind::Directory && ino.0 != ROOT_INO => {
                let epoch = self.fs.catalog().listings_epoch();
                let read_at = crate::locks::lock(&self.listed_at).get(&ino.0).copied();
                let keep = if read_at == Some(epoch) {
                    FopenFlags::FOPEN_KEEP_CACHE
                } else {
                    FopenFlags::empty()
                };
                reply.opened(FileHandle(0), FopenFlags::FOPEN_CACHE_DIR | keep)
            }
            Ok(a) if a.kind == FileKind::Directory => {
                reply.opened(FileHandle(0), FopenFlags::empty())
            }
            Ok(_) => reply.error(Errno::from_i32(libc::ENOTDIR)),
            Err(e) => reply.error(errno(Op::new("opendir").ino(ino.0), &e)),
        }
    }

    fn readdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectory,
    ) {
        self.listing_starts(ino.0, offset);
        // Names and kinds only: a plain listing's entries carry no attributes.
        let filled = fill_listing(
            offset,
            |after| self.fs.readdir_names(ino.0, after, LISTING_CHUNK),
            |e| e.cookie,
            |e| {
                let name = OsStr::new(std::str::from_utf8(&e.name).unwrap_or("?"));
                reply.add(INodeNo(e.ino), e.cookie, file_type(e.kind), name)
            },
        );
        match filled {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(errno(Op::new("readdir").ino(ino.0), &e)),
        }
    }

    fn readdirplus(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectoryPlus,
    ) {
        self.listing_starts(ino.0, offset);
        let filled = fill_listing(
            offset,
            |after| self.fs.readdir(ino.0, after, LISTING_CHUNK),
            |e| e.cookie,
            |e| {
                let name = OsStr::new(std::str::from_utf8(&e.name).unwrap_or("?"));
                let attr = file_attr(&e.attr);
                reply.add(
                    INodeNo(e.attr.ino),
                    e.cookie,
                    name,
                    &TTL,
                    &attr,
                    Generation(0),
                )
            },
        );
        match filled {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(errno(Op::new("readdirplus").ino(ino.0), &e)),
        }
    }

    fn statfs(&self, _req: &Request, _ino: INodeNo, reply: ReplyStatfs) {
        match self.fs.statfs() {
            Ok(s) => reply.statfs(
                s.blocks,
                s.blocks_free,
                s.blocks_available,
                s.files,
                0,
                s.block_size,
                NAME_MAX,
                s.block_size,
            ),
            Err(e) => reply.error(errno(Op::new("statfs"), &e)),
        }
    }

    fn getxattr(&self, _req: &Request, ino: INodeNo, name: &OsStr, size: u32, reply: ReplyXattr) {
        match self.fs.getxattr(ino.0, name) {
            Ok(v) => reply_xattr(reply, size, &v),
            Err(e) => reply.error(errno(Op::new("getxattr").ino(ino.0), &e)),
        }
    }

    fn listxattr(&self, _req: &Request, ino: INodeNo, size: u32, reply: ReplyXattr) {
        match self.fs.listxattr(ino.0) {
            Ok(v) => reply_xattr(reply, size, &v),
            Err(e) => reply.error(errno(Op::new("listxattr").ino(ino.0), &e)),
        }
    }

    fn setxattr(
        &self,
        req: &Request,
        ino: INodeNo,
        name: &OsStr,
        value: &[u8],
        _flags: i32,
        _position: u32,
        reply: ReplyEmpty,
    ) {
        match self.fs.setxattr_by(ino.0, name, value, req.uid()) {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(errno(Op::new("setxattr").ino(ino.0), &e)),
        }
    }

    fn removexattr(&self, _req: &Request, ino: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        match self.fs.removexattr(ino.0, name) {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(errno(Op::new("removexattr").ino(ino.0), &e)),
        }
    }

    fn access(&self, _req: &Request, ino: INodeNo, _mask: fuser::AccessFlags, reply: ReplyEmpty) {
        match self.fs.getattr(ino.0) {
            Ok(_) => reply.ok(),
            Err(e) => reply.error(errno(Op::new("access").ino(ino.0), &e)),
        }
    }

    fn symlink(
        &self,
        req: &Request,
        parent: INodeNo,
        link_name: &OsStr,
        target: &Path,
        reply: ReplyEntry,
    ) {
        use std::os::unix::ffi::OsStrExt;
        let target = target.as_os_str().as_bytes();
        match self
            .fs
            .symlink(parent.0, link_name, target, req.uid(), req.gid())
        {
            Ok(a) => reply.entry(&TTL, &file_attr(&a), Generation(0)),
            Err(e) => reply.error(errno(Op::new("symlink").entry(parent.0, link_name), &e)),
        }
    }

    fn readlink(&self, _req: &Request, ino: INodeNo, reply: ReplyData) {
        match self.fs.readlink(ino.0) {
            Ok(target) => reply.data(&target),
            Err(e) => reply.error(errno(Op::new("readlink").ino(ino.0), &e)),
        }
    }

    fn link(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _newparent: INodeNo,
        _newname: &OsStr,
        reply: ReplyEntry,
    ) {
        reply.error(errno(
            Op::new("link"),
            &FsError::NotPermitted("archives cannot be hard links"),
        ));
    }

    fn mknod(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        rdev: u32,
        reply: ReplyEntry,
    ) {
        match self
            .fs
            .mknod(parent.0, name, mode & !umask, rdev, req.uid(), req.gid())
        {
            Ok(a) => reply.entry(&TTL, &file_attr(&a), Generation(0)),
            Err(e) => reply.error(errno(Op::new("mknod").entry(parent.0, name), &e)),
        }
    }
}
