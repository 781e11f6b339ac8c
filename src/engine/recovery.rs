//! Staged files outliving their catalog: when the catalog is lost (damaged and moved aside,
//! or deleted), files written but not uploaded yet are still in `data/`, each with a sidecar
//! giving its vault, path, mode and times. At mount, before the file system is served, every
//! staged data file no catalog node claims is put back into the tree as a staged file, so it
//! is uploaded as if nothing had happened. Nothing staged is ever dropped.

use std::path::PathBuf;

use crate::catalog::{files, nodes, vaults, Catalog, CatalogError, Kind};
use crate::store::cache::{DataStore, Sidecar};

/// A staged data file whose node is gone.
struct Orphan {
    /// Where its data waits while new inode numbers are handed out.
    parked: PathBuf,
    sidecar: Sidecar,
}

/// Puts orphaned staged files back; returns how many.
pub fn recover_staged(catalog: &Catalog, data: &DataStore) -> Result<usize, CatalogError> {
    let orphans = find_orphans(catalog, data)?;
    let count = orphans.len();
    for o in orphans {
        let sidecar = o.sidecar.clone();
        let size = std::fs::metadata(&o.parked)?.len();
        let ino = catalog.write(move |tx| {
            let file = files::Recovered {
                vault: &sidecar.vault,
                path: &sidecar.path,
                size,
                mtime_ns: sidecar.mtime_ns,
                mode: sidecar.mode,
                uid: sidecar.uid,
                gid: sidecar.gid,
            };
            files::place_recovered(tx, &file)
        })?;
        std::fs::rename(&o.parked, data.data_path(ino))?;
        let mut sidecar = o.sidecar;
        sidecar.path = catalog.read(move |c| nodes::vault_relative_path(c, ino))?;
        data.write_sidecar(ino, &sidecar)?;
        log::warn!(
            "recovered staged file {}/{} from its sidecar",
            sidecar.vault,
            sidecar.path
        );
    }
    Ok(count)
}

/// Sidecars whose inode the catalog does not know as a staged file. Their data is first moved
/// out of the way, since the new nodes will take fresh inode numbers that may be theirs.
fn find_orphans(catalog: &Catalog, data: &DataStore) -> Result<Vec<Orphan>, CatalogError> {
    let dir = data.cache_dir().join("data");
    let mut orphans = Vec::new();
    let Ok(entries) = std::fs::read_dir(&dir) else {
        return Ok(orphans);
    };
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let Some(ino) = name
            .strip_suffix(".meta")
            .and_then(|n| n.parse::<u64>().ok())
        else {
            continue;
        };
        let Ok(sidecar) = data.read_sidecar(ino) else {
            continue;
        };
        // The same inode as a file of the same vault is this sidecar's own node (its path may
        // have moved since); anything else under that number belongs to a newer catalog.
        let vault = sidecar.vault.clone();
        let owner = catalog.read(move |c| {
            let Some(n) = nodes::get(c, ino)? else {
                return Ok(None);
            };
            let same = n.kind == Kind::File
                && vaults::by_ino(c, n.vault)?.is_some_and(|v| v.name == vault);
            Ok(same.then_some(n.dirty))
        })?;
        match owner {
            // Uploaded, and the sidecar outlived it by a crash: it has nothing left to save.
            Some(0) => {
                data.remove_sidecar(ino);
                continue;
            }
            Some(_) => continue,
            None if !data.data_path(ino).exists() => {
                data.remove_sidecar(ino);
                continue;
            }
            None => {}
        }
        let parked = dir.join(format!("recovering-{ino}"));
        std::fs::rename(data.data_path(ino), &parked)?;
        data.remove_sidecar(ino);
        orphans.push(Orphan { parked, sidecar });
    }
    Ok(orphans)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn staged_files_come_back_when_the_catalog_is_lost() {
        let dir = tempfile::tempdir().unwrap();
        let data = DataStore::open(dir.path()).unwrap();
        // A previous catalog's staged files: inodes 3 and 4, both in the way of new numbers.
        for (ino, path, body) in [(3u64, "docs/a.txt", "alpha"), (4, "b.txt", "beta")] {
            std::fs::write(data.data_path(ino), body).unwrap();
            let sidecar = Sidecar {
                vault: "v".into(),
                path: path.into(),
                mode: Some(0o640),
                uid: None,
                gid: None,
                mtime_ns: 1_600_000_000_000_000_000,
            };
            data.write_sidecar(ino, &sidecar).unwrap();
        }
        let cat = Catalog::open(dir.path()).unwrap();
        assert_eq!(recover_staged(&cat, &data).unwrap(), 2);
        let (a, b) = cat
            .read(|c| {
                let v = vaults::by_name(c, "v")?.unwrap().ino;
                let docs = nodes::lookup(c, v, "docs")?.unwrap();
                Ok((
                    nodes::lookup(c, docs.ino, "a.txt")?.unwrap(),
                    nodes::lookup(c, v, "b.txt")?.unwrap(),
                ))
            })
            .unwrap();
        assert!(a.dirty > 0 && a.local && a.closed_ns.is_some() && a.mode == Some(0o640));
        assert_eq!(
            std::fs::read_to_string(data.data_path(a.ino)).unwrap(),
            "alpha"
        );
        assert_eq!(
            std::fs::read_to_string(data.data_path(b.ino)).unwrap(),
            "beta"
        );
        // Known files are left alone: a second pass finds nothing.
        assert_eq!(recover_staged(&cat, &data).unwrap(), 0);
    }
}
