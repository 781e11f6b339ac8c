//! The reference model: what a user of the mount should see after each operation, and what
//! the vault should hold once everything is uploaded, following SEMANTICS.md.
//!
//! It knows nothing of the catalog. A file is an inode with its bytes, whether those bytes are
//! on this machine (`local`) or only in Glacier (cold), which archive backs it, and whether a
//! newer version still waits for its upload. Uploads become facts only at sync points (the
//! harness runs `glacierfs sync --wait` first), because with a zero write-back delay the
//! moment an upload starts is not the user's to know; until then the model keeps every path
//! the version had, since the description names the path at the start of the upload.

use std::collections::{BTreeMap, BTreeSet};

use libc::{EAGAIN, EEXIST, EINVAL, EISDIR, ENOENT, ENOTDIR, ENOTEMPTY, EXDEV};

use super::ops::MKNOD_MODE;

pub type Ino = u64;

/// The archive that backs a file's uploaded version.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Arch {
    None,
    /// Uploaded by this mount; its id is the daemon's business.
    Own,
    /// Put by another tool and taken in by an inventory.
    Oob {
        id: String,
        desc_path: String,
    },
}

#[derive(Clone, Debug)]
pub struct File {
    pub content: Vec<u8>,
    /// The bytes are on this machine (staged or cached); false: cold, only in Glacier.
    pub local: bool,
    pub arch: Arch,
    /// The archive was deleted upstream behind the mount's back.
    pub gone: bool,
    /// A closed version not yet known to be uploaded.
    pub pending: bool,
    /// Paths this version has had; its description names one of them.
    pub version_paths: BTreeSet<String>,
    /// Changed while a writer is open (goes up after the last close).
    pub unclosed_mod: bool,
    /// Checked only when the model knows it.
    pub mode: Option<u32>,
    pub mtime: Option<i64>,
    /// A retrieval job was started by a cold open.
    pub requested: bool,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Entry {
    Dir,
    File(Ino),
    /// A symlink and its target (a catalog entry only).
    Link(String),
    /// A fifo and its permission bits (a catalog entry only).
    Fifo(u32),
}

#[derive(Clone, Debug)]
pub struct Handle {
    pub ino: Ino,
    pub write: bool,
    /// This handle changed the file (O_TRUNC, write or ftruncate).
    pub modified: bool,
}

/// An archive put upstream that no inventory has shown yet.
#[derive(Clone, Debug)]
pub struct Upstream {
    pub vault: usize,
    pub path: String,
    pub id: String,
    pub created: i64,
    pub content: Vec<u8>,
    pub mtime: i64,
}

/// What the model says an operation returns. `Skip`: the semantics do not define the result,
/// so the harness does not run it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Predict<T> {
    Ok(T),
    Err(i32),
    Skip,
}

/// What the vault should hold for one file.
#[derive(Clone, Debug)]
pub struct Expected {
    pub path_now: String,
    pub content: Vec<u8>,
    /// The decoded description path must be one of these.
    pub desc_paths: BTreeSet<String>,
}

#[derive(Clone, Debug)]
pub struct Model {
    /// Each vault's entries; a vault that does not exist is empty and not `present`.
    pub vaults: Vec<BTreeMap<String, Entry>>,
    pub present: Vec<bool>,
    /// The vault has held an archive: Glacier's count of it may not be zero yet, so whether
    /// `rmdir` of it when empty gets ENOTEMPTY depends on the last inventory's timing.
    archived: Vec<bool>,
    pub files: BTreeMap<Ino, File>,
    pub handles: Vec<Handle>,
    pub upstream: Vec<Upstream>,
    next_ino: Ino,
    /// The write-back delay is long: nothing goes up before a sync, so a version's
    /// description names exactly the path it has at the sync.
    long_delay: bool,
    /// Each vault's last snapshot that went up, as the tree was then.
    pub snapshots: Vec<Option<Snap>>,
    /// The vault holds a snapshot this mount's catalog has no history of (a fresh cache after
    /// a machine loss, before a restore): the mount takes no snapshot of it.
    pub no_history: Vec<bool>,
    /// Something in the vault changed since the last machine loss. A restore applies a
    /// snapshot over such changes by their ctimes, to the nanosecond, which this model does
    /// not follow: restores are made only over a tree the descriptions alone gave.
    pub changed_since_loss: Vec<bool>,
}

/// What a snapshot recorded of one entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SnapKind {
    Dir,
    File {
        /// The archive the file had; None for an empty file.
        archive: Option<String>,
        content: Vec<u8>,
        mode: Option<u32>,
        mtime: Option<i64>,
    },
    Link(String),
    Fifo(u32),
}

/// A vault's tree as a snapshot carries it, parents first (a path sorts before the paths
/// below it).
#[derive(Clone, Debug, Default)]
pub struct Snap {
    pub entries: BTreeMap<String, SnapKind>,
}

/// One archive in a vault, as a fresh mount names it from its description.
#[derive(Clone, Debug)]
pub struct Listed {
    pub id: String,
    pub desc_path: String,
    pub created: i64,
    pub content: Vec<u8>,
}

fn parent_of(p: &str) -> &str {
    p.rsplit_once('/').map_or("", |(d, _)| d)
}

fn is_under(p: &str, dir: &str) -> bool {
    p.len() > dir.len() && p.starts_with(dir) && p.as_bytes()[dir.len()] == b'/'
}

impl Model {
    pub fn new(vaults: usize, initial: usize, long_delay: bool) -> Model {
        Model {
            vaults: vec![BTreeMap::new(); vaults],
            present: (0..vaults).map(|v| v < initial).collect(),
            archived: vec![false; vaults],
            files: BTreeMap::new(),
            handles: Vec::new(),
            upstream: Vec::new(),
            next_ino: 1,
            long_delay,
            snapshots: vec![None; vaults],
            no_history: vec![false; vaults],
            changed_since_loss: vec![false; vaults],
        }
    }

    pub fn file(&self, ino: Ino) -> &File {
        &self.files[&ino]
    }

    fn file_mut(&mut self, ino: Ino) -> &mut File {
        self.files.get_mut(&ino).expect("model inode")
    }

    /// Where an inode is visible, if it is.
    pub fn path_of(&self, ino: Ino) -> Option<(usize, String)> {
        self.vaults.iter().enumerate().find_map(|(v, es)| {
            es.iter()
                .find(|(_, e)| **e == Entry::File(ino))
                .map(|(p, _)| (v, p.clone()))
        })
    }

    pub fn writers(&self, ino: Ino) -> usize {
        self.handles
            .iter()
            .filter(|h| h.ino == ino && h.write)
            .count()
    }

    /// The kernel walks the parents first: a missing one is ENOENT, a file ENOTDIR.
    fn parent_err(&self, v: usize, p: &str) -> Option<i32> {
        if !self.present[v] {
            return Some(ENOENT);
        }
        let mut prefix = String::new();
        let segs: Vec<&str> = p.split('/').collect();
        for seg in &segs[..segs.len() - 1] {
            if !prefix.is_empty() {
                prefix.push('/');
            }
            prefix.push_str(seg);
            match self.vaults[v].get(&prefix) {
                None => return Some(ENOENT),
                Some(Entry::Dir) => {}
                Some(_) => return Some(ENOTDIR),
            }
        }
        None
    }

    fn lookup(&self, v: usize, p: &str) -> Result<Option<Entry>, i32> {
        if let Some(e) = self.parent_err(v, p) {
            return Err(e);
        }
        Ok(self.vaults[v].get(p).cloned())
    }

    fn has_children(&self, v: usize, p: &str) -> bool {
        self.vaults[v].keys().any(|k| is_under(k, p))
    }

    /// A parent of `p` is a symlink: the kernel would follow it, which is the target's
    /// business, not this test's, so such operations are not made.
    pub fn through_link(&self, v: usize, p: &str) -> bool {
        let segs: Vec<&str> = p.split('/').collect();
        (1..segs.len()).any(|k| {
            matches!(
                self.vaults[v].get(&segs[..k].join("/")),
                Some(Entry::Link(_))
            )
        })
    }

    /// The entry at `p` is a symlink or a fifo: calls that follow the last name (open, chmod,
    /// utimes, truncate) act on a symlink's target, and opening a fifo waits for its other
    /// end, so those are not made.
    fn special(&self, v: usize, p: &str) -> bool {
        matches!(self.vaults[v].get(p), Some(Entry::Link(_) | Entry::Fifo(_)))
    }

    /// A change to the bytes: it goes up after the last writer closes, or now if none is open.
    fn modified(&mut self, ino: Ino) {
        let writers = self.writers(ino);
        let at = self.path_of(ino);
        if let Some((v, _)) = at {
            self.changed_since_loss[v] = true;
            // With no write-back delay this version may go up at any moment.
            if !self.files[&ino].content.is_empty() {
                self.archived[v] = true;
            }
        }
        let path = at.map(|(_, p)| p);
        let f = self.file_mut(ino);
        if !f.pending && !f.unclosed_mod {
            f.version_paths.clear();
        }
        if let Some(p) = path {
            f.version_paths.insert(p);
        }
        f.mtime = None;
        if writers > 0 {
            f.unclosed_mod = true;
        } else {
            f.pending = true;
        }
    }

    fn new_file(&mut self, content: Vec<u8>, local: bool) -> Ino {
        let ino = self.next_ino;
        self.next_ino += 1;
        self.files.insert(
            ino,
            File {
                content,
                local,
                arch: Arch::None,
                gone: false,
                pending: false,
                version_paths: BTreeSet::new(),
                unclosed_mod: false,
                mode: None,
                mtime: None,
                requested: false,
            },
        );
        ino
    }

    /// Drops an inode no path and no handle reaches any more.
    fn forget_if_orphan(&mut self, ino: Ino) {
        if self.path_of(ino).is_none() && !self.handles.iter().any(|h| h.ino == ino) {
            self.files.remove(&ino);
        }
    }

    /// Opening with O_TRUNC for writing: no data needed, the file is local and empty.
    fn truncate_open(&mut self, ino: Ino) {
        let f = self.file_mut(ino);
        f.content.clear();
        f.local = true;
        f.requested = false;
    }

    /// open(O_CREAT|O_WRONLY|O_TRUNC, 0644); the new handle's index.
    pub fn create(&mut self, v: usize, p: &str) -> Predict<usize> {
        if self.special(v, p) {
            return Predict::Skip;
        }
        let ino = match self.lookup(v, p) {
            Err(e) => return Predict::Err(e),
            Ok(Some(Entry::Dir)) => return Predict::Err(EISDIR),
            Ok(Some(Entry::File(ino))) => {
                self.truncate_open(ino);
                ino
            }
            Ok(Some(_)) => return Predict::Skip,
            Ok(None) => {
                let ino = self.new_file(Vec::new(), true);
                self.file_mut(ino).mode = Some(0o644);
                self.vaults[v].insert(p.to_owned(), Entry::File(ino));
                ino
            }
        };
        self.handles.push(Handle {
            ino,
            write: true,
            modified: true,
        });
        self.modified(ino);
        Predict::Ok(self.handles.len() - 1)
    }

    pub fn open(&mut self, v: usize, p: &str, mode: super::ops::OpenMode) -> Predict<usize> {
        use super::ops::OpenMode;
        let ino = match self.lookup(v, p) {
            Err(e) => return Predict::Err(e),
            Ok(None) => return Predict::Err(ENOENT),
            // O_RDONLY of a directory is an opendir in disguise; not what this test is about.
            Ok(Some(Entry::Dir)) if mode == OpenMode::RdOnly => return Predict::Skip,
            Ok(Some(Entry::Dir)) => return Predict::Err(EISDIR),
            Ok(Some(Entry::File(ino))) => ino,
            Ok(Some(_)) => return Predict::Skip,
        };
        let f = self.file(ino);
        let cold = !f.local && !f.content.is_empty();
        match mode {
            OpenMode::RdOnly | OpenMode::RdWr if cold => {
                // An archive deleted upstream cannot be retrieved; SEMANTICS.md does not say
                // what its open returns.
                if f.gone {
                    return Predict::Skip;
                }
                self.file_mut(ino).requested = true;
                return Predict::Err(EAGAIN);
            }
            _ => {}
        }
        let write = mode != OpenMode::RdOnly;
        let trunc = mode == OpenMode::WrTrunc;
        if trunc {
            self.truncate_open(ino);
        }
        self.handles.push(Handle {
            ino,
            write,
            modified: trunc,
        });
        if trunc {
            self.modified(ino);
        }
        Predict::Ok(self.handles.len() - 1)
    }

    /// Index of the `h`-th writable handle (modulo), if any is open.
    pub fn writable(&self, h: u8) -> Option<usize> {
        let w: Vec<usize> = (0..self.handles.len())
            .filter(|&i| self.handles[i].write)
            .collect();
        (!w.is_empty()).then(|| w[h as usize % w.len()])
    }

    pub fn any_handle(&self, h: u8) -> Option<usize> {
        (!self.handles.is_empty()).then(|| h as usize % self.handles.len())
    }

    pub fn write(&mut self, hi: usize, off: u64, data: &[u8]) {
        // POSIX: writing no bytes has no other result, not even at an offset past the end.
        if data.is_empty() {
            return;
        }
        let ino = self.handles[hi].ino;
        self.handles[hi].modified = true;
        let f = self.file_mut(ino);
        let end = off as usize + data.len();
        if f.content.len() < end {
            f.content.resize(end, 0);
        }
        f.content[off as usize..end].copy_from_slice(data);
        self.modified(ino);
    }

    pub fn ftruncate(&mut self, hi: usize, size: usize) {
        let ino = self.handles[hi].ino;
        self.handles[hi].modified = true;
        self.file_mut(ino).content.resize(size, 0);
        self.modified(ino);
    }

    pub fn close(&mut self, hi: usize) {
        let h = self.handles.remove(hi);
        if h.write && self.writers(h.ino) == 0 && self.files.contains_key(&h.ino) {
            let f = self.file_mut(h.ino);
            if f.unclosed_mod {
                f.unclosed_mod = false;
                f.pending = true;
            }
        }
        self.forget_if_orphan(h.ino);
    }

    pub fn truncate(&mut self, v: usize, p: &str, size: usize) -> Predict<()> {
        let ino = match self.lookup(v, p) {
            Err(e) => return Predict::Err(e),
            Ok(None) => return Predict::Err(ENOENT),
            Ok(Some(Entry::Dir)) => return Predict::Err(EISDIR),
            Ok(Some(Entry::File(ino))) => ino,
            Ok(Some(_)) => return Predict::Skip,
        };
        let f = self.file_mut(ino);
        if !f.local && !f.content.is_empty() {
            if size > 0 {
                // The new size needs the data, which is in Glacier.
                return Predict::Err(EAGAIN);
            }
            f.local = true;
            f.requested = false;
        }
        f.content.resize(size, 0);
        self.modified(ino);
        Predict::Ok(())
    }

    fn set_attr(
        &mut self,
        v: usize,
        p: &str,
        set: impl FnOnce(&mut File),
        fifo_mode: Option<u32>,
    ) -> Predict<()> {
        match self.lookup(v, p) {
            Err(e) => Predict::Err(e),
            Ok(None) => Predict::Err(ENOENT),
            Ok(Some(Entry::Dir)) => Predict::Ok(()),
            Ok(Some(Entry::File(ino))) => {
                self.changed_since_loss[v] = true;
                set(self.file_mut(ino));
                Predict::Ok(())
            }
            Ok(Some(Entry::Link(_))) => Predict::Skip,
            Ok(Some(Entry::Fifo(m))) => {
                self.changed_since_loss[v] = true;
                let mode = fifo_mode.unwrap_or(m);
                self.vaults[v].insert(p.to_owned(), Entry::Fifo(mode));
                Predict::Ok(())
            }
        }
    }

    pub fn chmod(&mut self, v: usize, p: &str, mode: u32) -> Predict<()> {
        self.set_attr(v, p, |f| f.mode = Some(mode), Some(mode))
    }

    pub fn utime(&mut self, v: usize, p: &str, secs: i64) -> Predict<()> {
        self.set_attr(v, p, |f| f.mtime = Some(secs), None)
    }

    /// symlink(2) and mkfifo(3): a new catalog entry, or EEXIST.
    pub fn make_special(&mut self, v: usize, p: &str, entry: Entry) -> Predict<()> {
        match self.lookup(v, p) {
            Err(e) => Predict::Err(e),
            Ok(Some(_)) => Predict::Err(EEXIST),
            Ok(None) => {
                self.changed_since_loss[v] = true;
                self.vaults[v].insert(p.to_owned(), entry);
                Predict::Ok(())
            }
        }
    }

    pub fn mkfifo(&mut self, v: usize, p: &str) -> Predict<()> {
        self.make_special(v, p, Entry::Fifo(MKNOD_MODE))
    }

    /// readlink(2): the target, byte for byte.
    pub fn readlink(&self, v: usize, p: &str) -> Predict<String> {
        match self.lookup(v, p) {
            Err(e) => Predict::Err(e),
            Ok(None) => Predict::Err(ENOENT),
            Ok(Some(Entry::Link(t))) => Predict::Ok(t),
            Ok(Some(_)) => Predict::Err(EINVAL),
        }
    }

    /// Reading a whole file by path: its bytes, or EAGAIN (and a job) when it is cold.
    pub fn read(&mut self, v: usize, p: &str) -> Predict<Vec<u8>> {
        let ino = match self.lookup(v, p) {
            Err(e) => return Predict::Err(e),
            Ok(None) => return Predict::Err(ENOENT),
            Ok(Some(Entry::File(ino))) => ino,
            Ok(Some(_)) => return Predict::Skip,
        };
        let f = self.file(ino);
        if !f.local && !f.content.is_empty() {
            if f.gone {
                return Predict::Skip;
            }
            self.file_mut(ino).requested = true;
            return Predict::Err(EAGAIN);
        }
        Predict::Ok(f.content.clone())
    }

    pub fn unlink(&mut self, v: usize, p: &str) -> Predict<()> {
        match self.lookup(v, p) {
            Err(e) => Predict::Err(e),
            Ok(None) => Predict::Err(ENOENT),
            Ok(Some(Entry::Dir)) => Predict::Err(EISDIR),
            Ok(Some(Entry::File(ino))) => {
                self.changed_since_loss[v] = true;
                self.vaults[v].remove(p);
                self.forget_if_orphan(ino);
                Predict::Ok(())
            }
            Ok(Some(_)) => {
                self.changed_since_loss[v] = true;
                self.vaults[v].remove(p);
                Predict::Ok(())
            }
        }
    }

    pub fn mkdir(&mut self, v: usize, p: &str) -> Predict<()> {
        match self.lookup(v, p) {
            Err(e) => Predict::Err(e),
            Ok(Some(_)) => Predict::Err(EEXIST),
            Ok(None) => {
                self.changed_since_loss[v] = true;
                self.vaults[v].insert(p.to_owned(), Entry::Dir);
                Predict::Ok(())
            }
        }
    }

    pub fn rmdir(&mut self, v: usize, p: &str) -> Predict<()> {
        match self.lookup(v, p) {
            Err(e) => Predict::Err(e),
            Ok(None) => Predict::Err(ENOENT),
            Ok(Some(Entry::Dir)) if self.has_children(v, p) => Predict::Err(ENOTEMPTY),
            Ok(Some(Entry::Dir)) => {
                self.changed_since_loss[v] = true;
                self.vaults[v].remove(p);
                Predict::Ok(())
            }
            Ok(Some(_)) => Predict::Err(ENOTDIR),
        }
    }

    /// mkdir(2) at the root (SEMANTICS.md "Vaults are directories"): `n` indexes
    /// `ROOT_NAMES`, vaults first, then a name that is not a vault name and `.jobs`.
    pub fn mkvault(&mut self, n: usize) -> Predict<()> {
        match n {
            v if v < self.vaults.len() => {
                if self.present[v] {
                    return Predict::Err(EEXIST);
                }
                self.present[v] = true;
                Predict::Ok(())
            }
            3 => Predict::Err(EINVAL),
            _ => Predict::Err(EEXIST),
        }
    }

    /// rmdir(2) at the root: an empty vault is gone at once, one with entries is ENOTEMPTY.
    pub fn rmvault(&mut self, n: usize) -> Predict<()> {
        match n {
            v if v < self.vaults.len() => {
                if !self.present[v] {
                    return Predict::Err(ENOENT);
                }
                if !self.vaults[v].is_empty() {
                    return Predict::Err(ENOTEMPTY);
                }
                // Glacier's count (from the last inventory) or a file unlinked while open
                // may still hold the vault; neither is the user's to see.
                if self.archived[v] || self.handles.iter().any(|h| self.path_of(h.ino).is_none()) {
                    return Predict::Skip;
                }
                self.present[v] = false;
                Predict::Ok(())
            }
            3 => Predict::Err(ENOENT),
            // rmdir of the control file: the kernel's and the adapter's business.
            _ => Predict::Skip,
        }
    }

    /// An archive went into vault `v`.
    pub fn archived(&mut self, v: usize) {
        self.archived[v] = true;
    }

    /// rename(2), with its errors in the order the kernel and then the file system find them.
    pub fn rename(&mut self, v: usize, p: &str, v2: usize, p2: &str) -> Predict<()> {
        if let Some(e) = self.parent_err(v, p).or_else(|| self.parent_err(v2, p2)) {
            return Predict::Err(e);
        }
        let Some(src) = self.vaults[v].get(p).cloned() else {
            return Predict::Err(ENOENT);
        };
        if v == v2 && p == p2 {
            return Predict::Ok(());
        }
        if src == Entry::Dir && v == v2 && is_under(p2, p) {
            return Predict::Err(EINVAL);
        }
        let dst = self.vaults[v2].get(p2).cloned();
        if dst.is_some() && v == v2 && is_under(p, p2) {
            return Predict::Err(ENOTEMPTY);
        }
        let special = |e: &Entry| matches!(e, Entry::Link(_) | Entry::Fifo(_));
        if v != v2 && (special(&src) || dst.as_ref().is_some_and(special)) {
            // The kernel and the in-process adapter order the kind and EXDEV checks apart
            // for these; which comes first is not this test's business.
            return Predict::Skip;
        }
        match (&src, &dst) {
            (Entry::Dir, Some(Entry::Dir)) | (_, None) => {}
            (Entry::Dir, Some(_)) => return Predict::Err(ENOTDIR),
            (_, Some(Entry::Dir)) => return Predict::Err(EISDIR),
            _ => {}
        }
        if v != v2 {
            return Predict::Err(EXDEV);
        }
        if dst == Some(Entry::Dir) && self.has_children(v, p2) {
            return Predict::Err(ENOTEMPTY);
        }
        self.changed_since_loss[v] = true;
        let entries = &mut self.vaults[v];
        let replaced = entries.remove(p2);
        let moved: Vec<String> = entries
            .keys()
            .filter(|k| *k == p || is_under(k, p))
            .cloned()
            .collect();
        let mut touched = Vec::new();
        for old in moved {
            let e = entries.remove(&old).expect("moved entry");
            let new = format!("{p2}{}", &old[p.len()..]);
            if let Entry::File(ino) = e {
                touched.push((ino, new.clone()));
            }
            entries.insert(new, e);
        }
        for (ino, new) in touched {
            let f = self.file_mut(ino);
            if f.pending || f.unclosed_mod {
                f.version_paths.insert(new);
            }
        }
        if let Some(Entry::File(ino)) = replaced {
            self.forget_if_orphan(ino);
        }
        Predict::Ok(())
    }

    /// `glacierfs sync --wait` on every file no writer holds: each closed version is in Glacier.
    pub fn sync(&mut self) {
        let inos: Vec<Ino> = self.files.keys().copied().collect();
        for ino in inos {
            if self.writers(ino) > 0 || !self.files[&ino].pending {
                continue;
            }
            let path = self.path_of(ino).map(|(_, p)| p);
            let long = self.long_delay;
            let f = self.file_mut(ino);
            f.pending = false;
            if long {
                f.version_paths = path.into_iter().collect();
            }
            if f.content.is_empty() {
                f.arch = Arch::None;
            } else {
                f.arch = Arch::Own;
            }
            f.gone = false;
        }
    }

    /// The archive an out-of-band delete at `p` removes: `Ok(None)` when the file has none.
    /// Called after [`Model::sync`].
    pub fn oob_delete(&mut self, v: usize, p: &str) -> Predict<Option<Arch>> {
        let Ok(Some(Entry::File(ino))) = self.lookup(v, p) else {
            return Predict::Skip;
        };
        let f = self.file_mut(ino);
        if f.gone {
            return Predict::Skip;
        }
        // Still pending after the sync: a writer held the file, so whether the version closed
        // before it went up (and which archive the file now shows) depends on when its upload
        // started, which is the daemon's business.
        if f.pending {
            return Predict::Skip;
        }
        if f.arch == Arch::None {
            return Predict::Ok(None);
        }
        f.gone = true;
        Predict::Ok(Some(f.arch.clone()))
    }

    /// A new inventory of every vault is taken in: archives gone upstream leave the view
    /// (unless a writer holds them), new ones appear under their description's path, or with
    /// a `~date` suffix when the name is taken. Called after [`Model::sync`]; the jobs the
    /// refresh lets finish are [`Model::complete_jobs`]'s business.
    pub fn inventory(&mut self) {
        for v in 0..self.vaults.len() {
            let gone: Vec<(String, Ino)> = self.vaults[v]
                .iter()
                .filter_map(|(p, e)| match e {
                    Entry::File(ino) => {
                        let f = &self.files[ino];
                        (f.arch != Arch::None && f.gone && self.writers(*ino) == 0)
                            .then(|| (p.clone(), *ino))
                    }
                    _ => None,
                })
                .collect();
            for (p, ino) in gone {
                self.vaults[v].remove(&p);
                self.forget_if_orphan(ino);
            }
            let mut new: Vec<Upstream> = self
                .upstream
                .iter()
                .filter(|u| u.vault == v)
                .cloned()
                .collect();
            new.sort_by(|a, b| (&a.path, -a.created, &a.id).cmp(&(&b.path, -b.created, &b.id)));
            for u in new {
                let date = glacierfs::codec::timefmt::format_compact(u.created);
                let id8: String = u.id.chars().take(8).collect();
                let name = [
                    u.path.clone(),
                    format!("{}~{date}", u.path),
                    format!("{}~{date}~{id8}", u.path),
                ]
                .into_iter()
                .find(|n| !self.vaults[v].contains_key(n))
                .expect("a free name");
                let ino = self.new_file(u.content.clone(), false);
                let f = self.file_mut(ino);
                f.arch = Arch::Oob {
                    id: u.id.clone(),
                    desc_path: u.path.clone(),
                };
                f.mtime = Some(u.mtime);
                self.vaults[v].insert(name, Entry::File(ino));
            }
        }
        self.upstream.clear();
    }

    /// Files whose retrieval is running and whose archive is still there: after the jobs
    /// finish, these become readable.
    pub fn retrievals(&self) -> Vec<(usize, String, Ino)> {
        self.files
            .iter()
            .filter(|(_, f)| f.requested && !f.local && !f.gone)
            .filter_map(|(ino, _)| self.path_of(*ino).map(|(v, p)| (v, p, *ino)))
            .collect()
    }

    pub fn complete_jobs(&mut self) {
        for (_, _, ino) in self.retrievals() {
            let f = self.file_mut(ino);
            f.local = true;
            f.requested = false;
        }
    }

    /// Before a crash, writable handles that changed nothing are closed; the others are
    /// fsynced by the harness, so what they wrote is durable and defined.
    pub fn pre_crash_closes(&self) -> Vec<usize> {
        (0..self.handles.len())
            .rev()
            .filter(|&i| self.handles[i].write && !self.handles[i].modified)
            .collect()
    }

    /// The daemon died: every handle is gone. A file a writer held keeps what was fsynced and
    /// goes up like a closed one; a file no path reaches is gone for good.
    pub fn crash(&mut self) {
        let held: BTreeSet<Ino> = self.handles.iter().map(|h| h.ino).collect();
        self.handles.clear();
        for ino in held {
            if let Some(f) = self.files.get_mut(&ino) {
                if f.unclosed_mod {
                    f.unclosed_mod = false;
                    f.pending = true;
                }
            }
            self.forget_if_orphan(ino);
        }
    }

    /// A snapshot of vault `v` went up, holding its tree as it is now; `archive_of` gives the
    /// archive each file shows (the harness reads it from the mount).
    pub fn snapshot(&mut self, v: usize, mut archive_of: impl FnMut(&str) -> Option<String>) {
        let mut snap = Snap::default();
        for (p, e) in &self.vaults[v] {
            let kind = match e {
                Entry::Dir => SnapKind::Dir,
                Entry::Link(t) => SnapKind::Link(t.clone()),
                Entry::Fifo(m) => SnapKind::Fifo(*m),
                Entry::File(ino) => {
                    let f = &self.files[ino];
                    SnapKind::File {
                        archive: archive_of(p),
                        content: f.content.clone(),
                        mode: f.mode,
                        mtime: f.mtime,
                    }
                }
            };
            snap.entries.insert(p.clone(), kind);
        }
        self.snapshots[v] = Some(snap);
        self.archived[v] = true;
    }

    /// The machine is lost; a new one mounts the same vaults on an empty cache directory and
    /// takes their inventories in. Every handle was closed and everything uploaded first. The
    /// tree is then what the descriptions carry (SEMANTICS.md, "What lives only on this
    /// machine"): each archive under its description's path, the newest of one path keeping
    /// it and the others taking `~date` (then `~date~id`), a file in the way of a directory
    /// taking the suffix too; nothing is on this machine. `present` are the vaults Glacier
    /// has; `listed` their archives; `snapshot_held` whether each holds a snapshot.
    pub fn machine_loss(
        &mut self,
        present: Vec<bool>,
        listed: Vec<Vec<Listed>>,
        snapshot_held: Vec<bool>,
    ) {
        self.handles.clear();
        self.files.clear();
        self.upstream.clear();
        for v in 0..self.vaults.len() {
            self.vaults[v].clear();
            self.present[v] = present[v];
            self.no_history[v] = snapshot_held[v];
            self.changed_since_loss[v] = false;
            let mut archives = listed[v].clone();
            if !archives.is_empty() || snapshot_held[v] {
                self.archived[v] = true;
            }
            for a in &archives {
                let mut d = parent_of(&a.desc_path);
                while !d.is_empty() {
                    self.vaults[v].insert(d.to_owned(), Entry::Dir);
                    d = parent_of(d);
                }
            }
            archives.sort_by(|a, b| {
                (&a.desc_path, -a.created, &a.id).cmp(&(&b.desc_path, -b.created, &b.id))
            });
            for a in archives {
                let name = self.free_name(v, &a.desc_path, a.created, &a.id);
                let ino = self.new_file(a.content.clone(), false);
                self.file_mut(ino).arch = Arch::Oob {
                    id: a.id.clone(),
                    desc_path: a.desc_path.clone(),
                };
                self.vaults[v].insert(name, Entry::File(ino));
            }
        }
    }

    /// The name an archive of `path` takes in vault `v`: the path, or with `~date`, then
    /// `~date~id8`, whichever is free.
    fn free_name(&self, v: usize, path: &str, created: i64, id: &str) -> String {
        let date = glacierfs::codec::timefmt::format_compact(created);
        let id8: String = id.chars().take(8).collect();
        [
            path.to_owned(),
            format!("{path}~{date}"),
            format!("{path}~{date}~{id8}"),
        ]
        .into_iter()
        .find(|n| !self.vaults[v].contains_key(n))
        .expect("a free name")
    }

    /// Whether a restore of vault `v` is one this model defines: a snapshot it took is the
    /// vault's newest, the mount has no history of it, and nothing changed since the loss.
    pub fn restorable(&self, v: usize) -> bool {
        self.present[v]
            && self.no_history[v]
            && !self.changed_since_loss[v]
            && self.snapshots[v].is_some()
            && self.handles.is_empty()
    }

    /// `glacierfs catalog restore` of vault `v` (SEMANTICS.md "Snapshots and restore", and
    /// the rules of `catalog::snapshots::apply`): archives are matched by id and go back to
    /// the snapshot's paths with its modes and times, unless the name is taken, when they
    /// keep their descriptions' names; entries whose archive is gone are dropped; empty
    /// files, directories, symlinks and fifos come back where nothing is in their way;
    /// archives uploaded after the snapshot keep their descriptions' names; directories the
    /// descriptions made that only held moved archives go.
    pub fn restore(&mut self, v: usize) {
        let snap = self.snapshots[v].clone().expect("a snapshot");
        self.no_history[v] = false;
        let by_id: BTreeMap<String, (String, Ino)> = self.vaults[v]
            .iter()
            .filter_map(|(p, e)| match e {
                Entry::File(ino) => match &self.files[ino].arch {
                    Arch::Oob { id, .. } => Some((id.clone(), (p.clone(), *ino))),
                    _ => None,
                },
                _ => None,
            })
            .collect();
        // Matched archives leave their places first.
        let mut moved: BTreeMap<String, (String, Ino)> = BTreeMap::new();
        let mut emptied: Vec<String> = Vec::new();
        for (path, kind) in &snap.entries {
            if let SnapKind::File {
                archive: Some(id), ..
            } = kind
            {
                if let Some((at, ino)) = by_id.get(id) {
                    self.vaults[v].remove(at);
                    if at != path {
                        emptied.push(parent_of(at).to_owned());
                    }
                    moved.insert(path.clone(), (at.clone(), *ino));
                }
            }
        }
        let mut wanted: BTreeSet<String> = BTreeSet::new();
        let mut blocked: BTreeSet<String> = BTreeSet::new();
        for (path, kind) in &snap.entries {
            let parent = parent_of(path);
            if !self.ensure_dir(v, parent, &mut wanted, &mut blocked) {
                if let Some((at, ino)) = moved.remove(path) {
                    self.vaults[v].insert(at, Entry::File(ino));
                }
                continue;
            }
            let here = self.vaults[v].get(path).cloned();
            match kind {
                SnapKind::Dir => match here {
                    Some(Entry::Dir) => {
                        wanted.insert(path.clone());
                    }
                    Some(_) => {
                        blocked.insert(path.clone());
                    }
                    None => {
                        self.vaults[v].insert(path.clone(), Entry::Dir);
                        wanted.insert(path.clone());
                    }
                },
                SnapKind::File {
                    archive,
                    content,
                    mode,
                    mtime,
                } => {
                    if let Some((at, ino)) = moved.remove(path) {
                        if here.is_some() {
                            self.vaults[v].insert(at, Entry::File(ino));
                        } else {
                            self.vaults[v].insert(path.clone(), Entry::File(ino));
                            let f = self.file_mut(ino);
                            f.mode = *mode;
                            f.mtime = *mtime;
                        }
                    } else if archive.is_none() && content.is_empty() && here.is_none() {
                        let ino = self.new_file(Vec::new(), true);
                        let f = self.file_mut(ino);
                        f.mode = *mode;
                        f.mtime = *mtime;
                        self.vaults[v].insert(path.clone(), Entry::File(ino));
                    } else if archive.is_none() && content.is_empty() {
                        if let Some(Entry::File(ino)) = here {
                            let f = self.file_mut(ino);
                            if f.content.is_empty() && f.arch == Arch::None {
                                f.mode = *mode;
                                f.mtime = *mtime;
                            }
                        }
                    }
                }
                SnapKind::Link(t) => {
                    if here.is_none() {
                        self.vaults[v].insert(path.clone(), Entry::Link(t.clone()));
                    }
                }
                SnapKind::Fifo(m) => match here {
                    None | Some(Entry::Fifo(_)) => {
                        self.vaults[v].insert(path.clone(), Entry::Fifo(*m));
                    }
                    Some(_) => {}
                },
            }
        }
        // Directories the descriptions made that only held moved archives, bottom up.
        while let Some(d) = emptied.pop() {
            if d.is_empty() || wanted.contains(&d) {
                continue;
            }
            if self.vaults[v].get(&d) == Some(&Entry::Dir) && !self.has_children(v, &d) {
                self.vaults[v].remove(&d);
                emptied.push(parent_of(&d).to_owned());
            }
        }
    }

    /// The directory `path` for a restore, made when missing; false when a non-directory is
    /// in the way of it or a parent.
    fn ensure_dir(
        &mut self,
        v: usize,
        path: &str,
        wanted: &mut BTreeSet<String>,
        blocked: &mut BTreeSet<String>,
    ) -> bool {
        if path.is_empty() || wanted.contains(path) {
            return true;
        }
        if blocked.contains(path) || !self.ensure_dir(v, parent_of(path), wanted, blocked) {
            return false;
        }
        match self.vaults[v].get(path) {
            Some(Entry::Dir) => {}
            Some(_) => {
                blocked.insert(path.to_owned());
                return false;
            }
            None => {
                self.vaults[v].insert(path.to_owned(), Entry::Dir);
            }
        }
        wanted.insert(path.to_owned());
        true
    }

    /// What vault `v` should hold once everything is uploaded and every delete is done:
    /// the model's files, and what other tools put there that no inventory has shown yet.
    pub fn expected_archives(&self, v: usize) -> Vec<Expected> {
        let unseen = self
            .upstream
            .iter()
            .filter(|u| u.vault == v)
            .map(|u| Expected {
                path_now: format!("(not listed yet) {}", u.path),
                content: u.content.clone(),
                desc_paths: [u.path.clone()].into(),
            });
        self.vaults[v]
            .iter()
            .filter_map(|(p, e)| match e {
                Entry::File(ino) => Some((p, &self.files[ino])),
                _ => None,
            })
            .filter(|(_, f)| !f.content.is_empty() && !f.gone)
            .map(|(p, f)| Expected {
                path_now: p.clone(),
                content: f.content.clone(),
                desc_paths: match &f.arch {
                    Arch::Oob { desc_path, .. } => [desc_path.clone()].into(),
                    _ => f.version_paths.clone(),
                },
            })
            .chain(unseen)
            .collect()
    }
}
