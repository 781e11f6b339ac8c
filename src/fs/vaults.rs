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
        let existing = self.catalog.read({
            let name = name.clone();
            move |c| vaults::by_name(c, &name)
        });
        match existing {
            Ok(Some(v)) if v.state == "deleting" => {
                // mkdir of a vault whose delete is still queued cancels that delete.
                let ino = v.ino;
                let r = self
                    .catalog
                    .write(move |tx| vaults::set_state(tx, ino, "present"))
                    .map_err(FsError::from)
                    .and_then(|_| self.getattr(ino));
                return done(r);
            }
            Ok(Some(_)) => return done(Err(FsError::Exists)),
            Ok(None) => {}
            Err(e) => return done(Err(e.into())),
        }
        let row = {
            let name = name.clone();
            self.catalog
                .write(move |tx| vaults::ensure(tx, &name, "creating"))
        };
        let row = match row {
            Ok(r) => r,
            Err(e) => return done(Err(e.into())),
        };
        let client = Arc::clone(&self.services.client);
        let catalog = self.catalog.clone();
        let attr = self.getattr(row.ino);
        self.services.runtime.spawn(async move {
            let result = create_remote(&*client, &catalog, &name, row.ino).await;
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
            catalog
                .write_async(move |tx| vaults::set_state(tx, ino, "present"))
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
            let still_wanted = catalog
                .read(|c| Ok(vaults::by_ino(c, ino)?.map(|v| v.state == "deleting")))
                .unwrap_or(Some(false));
            if still_wanted != Some(true) {
                return;
            }
            match client.delete_vault(&name).await {
                Ok(())
                | Err(crate::glacier::GlacierError {
                    kind: ErrorKind::NotFound,
                    ..
                }) => {
                    log::info!("vault {name} deleted");
                    let gone = name.clone();
                    let r = catalog
                        .write_async(move |tx| vaults::forget_deleted(tx, ino, &gone))
                        .await;
                    if let Err(e) = r {
                        log::error!("forgetting vault {name}: {e}");
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
