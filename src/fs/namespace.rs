//! The namespace of files and directories inside a vault: unlink and rename, as SEMANTICS.md
//! describes them. Both are catalog changes plus their consequences for local data: the data
//! file of a removed or replaced file goes, its staged upload is cancelled, and its archive is
//! queued for deletion after the delete delay. Renames are catalog-only, since Glacier cannot
//! change an archive's description; a staged file is uploaded under its new path.

use std::ffi::OsStr;

use super::error::Missing;
use super::{checked_name, FsError, FsResult, GlacierFs};
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
        self.catalog.write_twice(|| {
            let (node, path) = (n.clone(), path.clone());
            move |tx| catalog::files::remove(tx, &node, &path, delay)
        })?;
        // Staged content going up now has nobody left to serve: stop it.
        self.services.writeback.cancel(n.ino);
        self.open_files.wake.notify_one();
        Ok(())
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
        self.catalog.write(move |tx| {
            let replaced = replaced.as_ref().map(|(e, path)| (e, path.as_str()));
            catalog::files::rename_replacing(tx, &src_c, replaced, new_parent, &new_name, delay)
        })?;
        if let Some(e) = existing.filter(|e| e.kind == Kind::File) {
            self.data.remove(e.ino);
            self.services.writeback.cancel(e.ino);
        }
        self.refresh_sidecars_under(&src);
        Ok(())
    }

    /// Whether `src` may take the place of `e`: a file replaces a file, a directory an empty
    /// directory, and nothing replaces anything under RENAME_NOREPLACE.
    fn check_replace(&self, src: &Node, e: &Node, flags: u32) -> FsResult<()> {
        if flags & RENAME_NOREPLACE != 0 {
            return Err(FsError::Exists);
        }
        match (src.kind, e.kind) {
            (Kind::File, Kind::File) => Ok(()),
            (Kind::File, _) => Err(FsError::IsDir),
            (_, Kind::File) => Err(FsError::NotDir),
            _ => {
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
