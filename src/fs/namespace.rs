//! The namespace of files and directories inside a vault: unlink and rename, and the entries
//! that are names only (symlinks, fifos, sockets, devices), as SEMANTICS.md describes them.
//! Unlink and rename are catalog changes plus their consequences for local data: the data
//! file of a removed or replaced file goes, its staged upload is cancelled, and its archive is
//! queued for deletion after the delete delay. Renames are catalog-only, since Glacier cannot
//! change an archive's description; a staged file is uploaded under its new path.
//!
//! Symlinks and special files live in the catalog only, like empty files: no data file, no
//! archive, nothing to upload or retrieve. Every change of a directory's entries sets its mtime
//! and ctime.

use std::ffi::OsStr;

use super::error::Missing;
use super::{checked_name, Attr, FsError, FsResult, GlacierFs};
use crate::catalog::{self, nodes, Kind, Node, ROOT_INO};
use crate::codec::names;

/// Linux's RENAME_NOREPLACE.
pub const RENAME_NOREPLACE: u32 = 1;

impl GlacierFs {
    pub fn unlink(&self, parent: u64, name: &OsStr) -> FsResult<()> {
        self.writable()?;
        let n = self.entry(parent, name)?;
        if n.kind.is_dir() {
            return Err(FsError::IsDir);
        }
        let delay = self.delete_not_before();
        let path = self
            .catalog
            .read(|c| nodes::vault_relative_path(c, n.ino))?;
        // The data goes first: on a full cache disk, the catalog needs the room it frees.
        self.data.remove(n.ino);
        let now = catalog::now_ns();
        self.catalog.write_twice(|| {
            let (node, path) = (n.clone(), path.clone());
            move |tx| {
                catalog::files::remove(tx, &node, &path, delay)?;
                nodes::entries_changed(tx, node.parent, now)
            }
        })?;
        // Staged content going up now has nobody left to serve: stop it.
        self.services.writeback.cancel(n.ino);
        self.open_files.wake.notify_one();
        Ok(())
    }

    /// symlink(2): a catalog entry holding `target` as given (raw bytes, not checked: a
    /// symlink may point anywhere, or nowhere).
    pub fn symlink(
        &self,
        parent: u64,
        name: &OsStr,
        target: &[u8],
        uid: u32,
        gid: u32,
    ) -> FsResult<Attr> {
        self.name_only_entry(
            parent,
            name,
            Kind::Symlink,
            Entry {
                mode: 0o777,
                size: target.len() as u64,
                target: Some(target.to_vec()),
                rdev: None,
                uid,
                gid,
            },
        )
    }

    /// readlink(2).
    pub fn readlink(&self, ino: u64) -> FsResult<Vec<u8>> {
        let n = self.node(ino)?;
        match (n.kind, n.target) {
            (Kind::Symlink, Some(target)) => Ok(target),
            _ => Err(FsError::Invalid(format!(
                "{} is not a symbolic link",
                n.name
            ))),
        }
    }

    /// mknod(2): a fifo, socket or device becomes a catalog entry whose mode keeps its type
    /// bits; a regular file is an empty file, as `create` would make and close it. `mode` has
    /// the umask applied already.
    pub fn mknod(
        &self,
        parent: u64,
        name: &OsStr,
        mode: u32,
        rdev: u32,
        uid: u32,
        gid: u32,
    ) -> FsResult<Attr> {
        match mode & libc::S_IFMT {
            libc::S_IFREG | 0 => {
                let (attr, fh) = self.create(parent, name, mode & 0o7777, uid, gid)?;
                self.release(fh)?;
                Ok(attr)
            }
            libc::S_IFIFO | libc::S_IFSOCK | libc::S_IFCHR | libc::S_IFBLK => {
                let device = matches!(mode & libc::S_IFMT, libc::S_IFCHR | libc::S_IFBLK);
                self.name_only_entry(
                    parent,
                    name,
                    Kind::Special,
                    Entry {
                        mode: mode & (libc::S_IFMT | 0o7777),
                        size: 0,
                        target: None,
                        rdev: device.then_some(u64::from(rdev)),
                        uid,
                        gid,
                    },
                )
            }
            _ => Err(FsError::Invalid(format!("mknod of mode {mode:o}"))),
        }
    }

    /// Adds an entry that is a name only (a symlink or special file) to `parent`, checked as a
    /// new file's name would be.
    fn name_only_entry(&self, parent: u64, name: &OsStr, kind: Kind, e: Entry) -> FsResult<Attr> {
        self.writable()?;
        let p = self.entry_parent(parent)?;
        let name = checked_name(name)?;
        if p.kind == Kind::Vault && names::is_reserved(&name) {
            return Err(FsError::NotPermitted("names of control files are reserved"));
        }
        self.new_path(&p, &name)?;
        let (uid, gid) = self.owner(e.uid, e.gid);
        let vault = p.vault_ino();
        let now = catalog::now_ns();
        let node = self.catalog.write(move |tx| {
            let ino = nodes::insert(
                tx,
                kind,
                &nodes::NewNode {
                    parent: p.ino,
                    name: &name,
                    vault,
                    size: e.size,
                    mtime_ns: now,
                    mode: Some(e.mode),
                    uid,
                    gid,
                    target: e.target.as_deref(),
                    rdev: e.rdev,
                    ..Default::default()
                },
            )?;
            nodes::entries_changed(tx, p.ino, now)?;
            nodes::get(tx, ino)?.ok_or(catalog::CatalogError::NotFound)
        })?;
        Ok(self.attr_of(&node))
    }

    fn delete_not_before(&self) -> i64 {
        catalog::now_ns().saturating_add(self.options.delete_delay.as_nanos() as i64)
    }

    pub fn rename(
        &self,
        parent: u64,
        name: &OsStr,
        new_parent: u64,
        new_name: &OsStr,
        flags: u32,
    ) -> FsResult<()> {
        self.writable()?;
        if flags & !RENAME_NOREPLACE != 0 {
            return Err(FsError::Invalid(
                "only RENAME_NOREPLACE is supported".into(),
            ));
        }
        let src = self.entry(parent, name)?;
        if src.kind == Kind::Vault || parent == ROOT_INO {
            return Err(FsError::NotPermitted("vaults cannot be renamed"));
        }
        let dst_parent = self.entry_parent(new_parent)?;
        if dst_parent.vault_ino() != src.vault_ino() {
            return Err(FsError::CrossVault);
        }
        let new_name = checked_name(new_name)?;
        if dst_parent.kind == Kind::Vault && names::is_reserved(&new_name) {
            return Err(FsError::NotPermitted("names of control files are reserved"));
        }
        if src.kind == Kind::Dir && self.is_within(dst_parent.ino, src.ino)? {
            return Err(FsError::Invalid(
                "cannot move a directory into itself".into(),
            ));
        }
        let new_path = self.new_path(&dst_parent, &new_name)?;
        if src.kind == Kind::Dir {
            self.check_paths_fit(src.ino, &new_path)?;
        }
        let existing = self
            .catalog
            .read(|c| nodes::lookup(c, new_parent, &new_name))?;
        if let Some(e) = &existing {
            if e.ino == src.ino {
                return Ok(());
            }
            self.check_replace(&src, e, flags)?;
        }
        let delay = self.delete_not_before();
        let replaced = match existing.clone() {
            Some(e) => {
                let path = self
                    .catalog
                    .read(|c| nodes::vault_relative_path(c, e.ino))?;
                Some((e, path))
            }
            None => None,
        };
        let src_c = src.clone();
        let now = catalog::now_ns();
        let staged = self.catalog.write(move |tx| {
            let replaced = replaced.as_ref().map(|(e, path)| (e, path.as_str()));
            catalog::files::rename_replacing(tx, &src_c, replaced, new_parent, &new_name, delay)?;
            nodes::entries_changed(tx, src_c.parent, now)?;
            nodes::entries_changed(tx, new_parent, now)?;
            // A file's new sidecar is read in the same write; a directory's files below it are
            // listed afterwards.
            match src_c.kind {
                Kind::File => catalog::files::staged(tx, src_c.ino),
                _ => Ok(None),
            }
        })?;
        if let Some(e) = existing.filter(|e| e.kind == Kind::File) {
            self.data.remove(e.ino);
            self.services.writeback.cancel(e.ino);
        }
        if src.kind == Kind::File {
            self.write_sidecar(staged);
        } else {
            self.refresh_sidecars_under(&src);
        }
        Ok(())
    }

    /// Whether `src` may take the place of `e`: anything but a directory replaces anything but
    /// a directory (a file, symlink or special file), a directory an empty directory, and
    /// nothing replaces anything under RENAME_NOREPLACE.
    fn check_replace(&self, src: &Node, e: &Node, flags: u32) -> FsResult<()> {
        if flags & RENAME_NOREPLACE != 0 {
            return Err(FsError::Exists);
        }
        match (src.kind.is_dir(), e.kind.is_dir()) {
            (false, false) => Ok(()),
            (false, true) => Err(FsError::IsDir),
            (true, false) => Err(FsError::NotDir),
            (true, true) => {
                let ino = e.ino;
                if self.catalog.read(|c| nodes::has_children(c, ino))? {
                    Err(FsError::NotEmpty)
                } else {
                    Ok(())
                }
            }
        }
    }

    /// Whether `ino` is `ancestor` or lies below it.
    fn is_within(&self, mut ino: u64, ancestor: u64) -> FsResult<bool> {
        loop {
            if ino == ancestor {
                return Ok(true);
            }
            let n = self
                .catalog
                .read(|c| nodes::get(c, ino))?
                .ok_or(FsError::NotFound(Missing::Inode(ino)))?;
            if n.kind == Kind::Vault || n.kind == Kind::Root {
                return Ok(false);
            }
            ino = n.parent;
        }
    }

    /// A directory may move only where every file under it can still be described: a staged
    /// one is uploaded under its new path, and an archived one would be if it were rewritten.
    fn check_paths_fit(&self, dir: u64, new_dir_path: &str) -> FsResult<()> {
        let files = self.catalog.read(|c| nodes::files_below(c, dir))?;
        for rel in files {
            let path = format!("{new_dir_path}/{rel}");
            if !names::fits(&path, 0) {
                return Err(FsError::NameTooLong(path));
            }
        }
        Ok(())
    }

    fn refresh_sidecars_under(&self, n: &Node) {
        if n.kind == Kind::File {
            self.refresh_sidecar(n.ino);
            return;
        }
        if let Ok(inos) = self.catalog.read(|c| nodes::staged_at_or_below(c, n)) {
            for ino in inos {
                self.refresh_sidecar(ino);
            }
        }
    }
}

/// What a name-only entry holds besides its name.
struct Entry {
    mode: u32,
    size: u64,
    target: Option<Vec<u8>>,
    rdev: Option<u64>,
    uid: u32,
    gid: u32,
}
