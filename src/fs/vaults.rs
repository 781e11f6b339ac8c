//! `mkdir` and `rmdir` at the root: creating and deleting vaults. Both wait on Glacier, so
//! the call runs on the background runtime and the FUSE request is answered from there.
//!
//! The catalog row is written before the call (state `creating` or `deleting`), which is the
//! intent: a restart finds it and finishes the work (both calls are idempotent).

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::sync::Arc;

use super::{Done, FsError, FsResult, GlacierFs, Missing};
use crate::catalog::{nodes, vaults, Catalog, ROOT_INO};
use crate::codec::names;
use crate::glacier::{ErrorKind, GlacierClient};

fn vault_name(name: &OsStr) -> FsResult<String> {
    let s = std::str::from_utf8(name.as_bytes())
        .map_err(|_| FsError::Invalid("vault names are ASCII".into()))?;
    if names::is_reserved(s) {
        // The root's `.jobs` is a control file; a vault of that name could not be reached.
        Err(FsError::Exists)
    } else if names::is_valid_vault_name(s) {
        Ok(s.to_owned())
    } else {
        Err(FsError::Invalid(format!(
            "{s:?} is not a vault name: use 1-255 of A-Z a-z 0-9 _ . -"
        )))
    }
}

impl GlacierFs {
    pub(super) fn create_vault(&self, name: &OsStr, done: Done<super::Attr>) {
        let name = match vault_name(name) {
            Ok(n) => n,
            Err(e) => return done(Err(e)),
        };
        // One write decides, so a delete task finishing meanwhile cannot forget the vault
        // between the look and the change.
        let claim = {
            let name = name.clone();
            self.catalog
                .write(move |tx| match vaults::by_name(tx, &name)? {
                    Some(v) if v.state == "deleting" => {
                        // mkdir of a vault whose delete is still queued cancels that delete. Its
                        // DeleteVault may be out already: `creating` leaves the delete task to
                        // make the vault again at Glacier once that call is answered.
                        vaults::set_state(tx, v.ino, "creating")?;
                        Ok(Claim::TakenBack(v.ino))
                    }
                    Some(_) => Ok(Claim::Exists),
                    None => Ok(Claim::New(vaults::ensure(tx, &name, "creating")?.ino)),
                })
        };
        let ino = match claim {
            Ok(Claim::New(ino)) => ino,
            Ok(Claim::TakenBack(ino)) => return done(self.getattr(ino)),
            Ok(Claim::Exists) => return done(Err(FsError::Exists)),
            Err(e) => return done(Err(e.into())),
        };
        let client = Arc::clone(&self.services.client);
        let catalog = self.catalog.clone();
        let attr = self.getattr(ino);
        self.services.runtime.spawn(async move {
            let result = create_remote(&*client, &catalog, &name, ino).await;
            done(result.and(attr));
        });
    }

    pub(super) fn delete_vault(&self, name: &OsStr, done: Done<()>) {
        let result = (|| {
            let missing = || FsError::NotFound(Missing::Vault(name.to_string_lossy().into_owned()));
            let shown = std::str::from_utf8(name.as_bytes())
                .map_err(|_| missing())?
                .to_owned();
            // By the directory shown, not by name: a vault named `.jobs` shows as
            // `.jobs~vault`, and its row keeps the real name.
            let dir = self
                .catalog
                .read(move |c| nodes::lookup(c, ROOT_INO, &shown))?
                .ok_or_else(missing)?;
            let v = self
                .catalog
                .read(move |c| vaults::by_ino(c, dir.ino))?
                .filter(|v| v.state != "deleting")
                .ok_or_else(missing)?;
            let (files, _) = self.catalog.read(|c| nodes::vault_usage(c, v.ino))?;
            let has_dirs = self.catalog.read(|c| nodes::has_children(c, v.ino))?;
            // Glacier's own count matters too: a vault whose inventory has not been merged yet
            // looks empty in the catalog but is not.
            if files > 0 || has_dirs || v.remote_count.unwrap_or(0) > 0 {
                return Err(FsError::NotEmpty);
            }
            let ino = v.ino;
            self.catalog
                .write(move |tx| vaults::set_state(tx, ino, "deleting"))?;
            Ok(v)
        })();
        match result {
            Ok(v) => {
                done(Ok(()));
                spawn_delete(
                    &self.services.runtime,
                    Arc::clone(&self.services.client),
                    self.catalog.clone(),
                    v.name,
                    v.ino,
                    self.options.retry_interval,
                );
            }
            Err(e) => done(Err(e)),
        }
    }
}

async fn create_remote(
    client: &dyn GlacierClient,
    catalog: &Catalog,
    name: &str,
    ino: u64,
) -> FsResult<()> {
    match client.create_vault(name).await {
        Ok(()) => {
            // Not over an `rmdir` that came while the call was out.
            catalog
                .write_async(move |tx| vaults::settle_created(tx, ino))
                .await?;
            Ok(())
        }
        Err(e) => {
            log::warn!("creating vault {name}: {e}");
            catalog
                .write_async(move |tx| vaults::forget(tx, ino))
                .await?;
            Err(e.into())
        }
    }
}

/// Runs DeleteVault until it succeeds or the user takes the vault back. Glacier refuses while
/// its last inventory still lists archives, which can take a day to change, so refusals are
/// retried at a slow pace and the reason is kept where `.jobs` shows it.
pub(crate) fn spawn_delete(
    runtime: &tokio::runtime::Handle,
    client: Arc<dyn GlacierClient>,
    catalog: Catalog,
    name: String,
    ino: u64,
    retry_interval: std::time::Duration,
) {
    runtime.spawn(async move {
        loop {
            let state = catalog
                .read(|c| Ok(vaults::by_ino(c, ino)?.map(|v| v.state)))
                .unwrap_or_default();
            match state.as_deref() {
                Some("deleting") => {}
                // Taken back before DeleteVault went out: the vault is still at Glacier.
                Some("creating") => {
                    let _ = catalog
                        .write_async(move |tx| vaults::settle_created(tx, ino))
                        .await;
                    return;
                }
                _ => return,
            }
            match client.delete_vault(&name).await {
                Ok(())
                | Err(crate::glacier::GlacierError {
                    kind: ErrorKind::NotFound,
                    ..
                }) => {
                    let gone = name.clone();
                    let r = catalog
                        .write_async(move |tx| match vaults::by_ino(tx, ino)? {
                            Some(v) if v.state == "deleting" => {
                                vaults::forget_deleted(tx, ino, &gone)?;
                                Ok(true)
                            }
                            // Taken back by a mkdir while the call was out.
                            Some(_) => {
                                vaults::set_state(tx, ino, "creating")?;
                                Ok(false)
                            }
                            None => Ok(true),
                        })
                        .await;
                    match r {
                        Ok(true) => log::info!("vault {name} deleted"),
                        Ok(false) => {
                            log::info!("vault {name} was made again while its delete was out");
                            recreate(&*client, &catalog, &name, ino, retry_interval).await;
                        }
                        Err(e) => log::error!("forgetting vault {name}: {e}"),
                    }
                    return;
                }
                Err(e) => {
                    log::warn!("deleting vault {name}: {e}; will retry");
                    let message = e.message.clone();
                    let _ = catalog
                        .write_async(move |tx| vaults::record_delete_failure(tx, ino, &message))
                        .await;
                    tokio::time::sleep(retry_interval).await;
                }
            }
        }
    });
}

/// What a vault `mkdir` found in the catalog.
enum Claim {
    /// A new row (its inode), to be made at Glacier.
    New(u64),
    /// A vault whose delete was queued, now wanted again.
    TakenBack(u64),
    Exists,
}

/// Makes a vault taken back by `mkdir` again at Glacier after its DeleteVault went through,
/// retrying while Glacier refuses and the vault is still wanted. Until then it is `creating`,
/// which a vault listing that does not show it leaves alone.
async fn recreate(
    client: &dyn GlacierClient,
    catalog: &Catalog,
    name: &str,
    ino: u64,
    retry_interval: std::time::Duration,
) {
    loop {
        let wanted = catalog
            .read(|c| Ok(vaults::by_ino(c, ino)?.is_some_and(|v| v.state == "creating")))
            .unwrap_or(false);
        if !wanted {
            return;
        }
        match client.create_vault(name).await {
            Ok(()) => {
                if let Err(e) = catalog
                    .write_async(move |tx| vaults::settle_created(tx, ino))
                    .await
                {
                    log::error!("recording vault {name} as made again: {e}");
                }
                return;
            }
            Err(e) => {
                log::warn!("making vault {name} again: {e}; will retry");
                tokio::time::sleep(retry_interval).await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::ffi::OsStr;

    use crate::catalog::{nodes, vaults, Kind, ROOT_INO};

    fn runtime() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
    }

    /// A listing reads the nodes, then the vault rows: a vault forgotten in between (its
    /// DeleteVault done) leaves, in that view, a node with no row. It once was listed, so a
    /// vault deleted by `rmdir` showed again in `ls` of the mount point.
    #[test]
    fn a_vault_node_without_its_row_is_neither_listed_nor_found() {
        let dir = tempfile::tempdir().unwrap();
        let rt = runtime();
        let (fs, _) = super::super::files::tests::fs(dir.path(), &rt);
        // The older snapshot of the nodes: the vault's node is there, its row is gone.
        let ino = fs
            .catalog
            .write(|tx| {
                nodes::insert(
                    tx,
                    Kind::Vault,
                    &nodes::NewNode {
                        parent: ROOT_INO,
                        name: "gone",
                        vault: 0,
                        mtime_ns: 1,
                        ..Default::default()
                    },
                )
            })
            .unwrap();
        let names: Vec<String> = fs
            .readdir(ROOT_INO, 0, 100)
            .unwrap()
            .into_iter()
            .map(|e| String::from_utf8_lossy(&e.name).into_owned())
            .collect();
        assert!(names.iter().any(|n| n == "v"), "{names:?}");
        assert!(!names.iter().any(|n| n == "gone"), "{names:?}");
        let found = fs.lookup(ROOT_INO, OsStr::new("gone"));
        assert_eq!(
            found.map(|a| a.ino).map_err(|e| e.errno()),
            Err(libc::ENOENT)
        );
        assert_eq!(
            fs.getattr(ino).map(drop).map_err(|e| e.errno()),
            Err(libc::ENOENT)
        );
    }

    /// `mkdir` of a vault whose delete is queued takes it back in one write: the vault is
    /// `creating` (made again at Glacier if its DeleteVault was out) and shows at once.
    #[test]
    fn mkdir_takes_back_a_vault_being_deleted() {
        let dir = tempfile::tempdir().unwrap();
        let rt = runtime();
        let (fs, vault) = super::super::files::tests::fs(dir.path(), &rt);
        fs.catalog
            .write(move |tx| vaults::set_state(tx, vault, "deleting"))
            .unwrap();
        assert!(fs.lookup(ROOT_INO, OsStr::new("v")).is_err());
        let (tx, rx) = std::sync::mpsc::channel();
        fs.mkdir(
            ROOT_INO,
            OsStr::new("v"),
            0o755,
            0,
            0,
            Box::new(move |r| tx.send(r.map(|a| a.ino)).unwrap()),
        );
        assert_eq!(rx.recv().unwrap().unwrap(), vault);
        let row = fs
            .catalog
            .read(|c| vaults::by_name(c, "v"))
            .unwrap()
            .unwrap();
        assert_eq!(row.state, "creating");
        assert_eq!(fs.lookup(ROOT_INO, OsStr::new("v")).unwrap().ino, vault);
    }
}
