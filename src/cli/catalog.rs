//! Commands that work on a cache directory's catalog directly, with no mount running:
//! `inventory import` (take an inventory file in) and `catalog rebuild` (restore the latest
//! sound copy of a damaged catalog, then apply any namespace snapshot a restore retrieved
//! that is newer than that copy). Each holds the cache lock for as long as it runs, so it
//! never races a mount. `catalog restore` is the exception: it asks a running mount, through
//! the vault's `user.glacier.restore` attribute, to retrieve and apply the vault's newest
//! namespace snapshot.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use crate::catalog::{copy, snapshots, vaults, Catalog, CatalogError};
use crate::client::{get_xattr, set_xattr};
use crate::codec::{names, snapshot, timefmt};
use crate::config::{CacheArgs, ImportArgs, OptionError, RestoreArgs};
use crate::daemon;
use crate::engine::inventory;

/// Why a catalog command failed; each message is one line that says what to do where it can.
#[derive(Debug, thiserror::Error)]
pub enum LocalError {
    #[error("{0:?} is not a vault name")]
    VaultName(String),
    #[error(transparent)]
    Option(#[from] OptionError),
    #[error("{0}; unmount it before rebuilding its catalog")]
    MountedForRebuild(String),
    #[error("{0}; unmount it first, or let the mount fetch inventories itself")]
    MountedForImport(String),
    #[error(transparent)]
    CacheDir(#[from] daemon::MountError),
    #[error(transparent)]
    Catalog(#[from] CatalogError),
    #[error("{}: {source}", path.display())]
    Input {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{}: {source}", path.display())]
    Import {
        path: PathBuf,
        source: inventory::InventoryError,
    },
}

/// `glacierfs catalog rebuild`.
pub fn rebuild(args: &CacheArgs) -> ExitCode {
    match try_rebuild(args) {
        Ok(r) => {
            if let Some(kept) = &r.kept_as {
                println!("the old catalog is kept as {}", kept.display());
            }
            match r.copy_saved_s {
                Some(s) => println!(
                    "restored the catalog copy of {} ({} entries{})",
                    timefmt::format_iso8601(s, 0),
                    r.entries,
                    if r.dropped > 0 {
                        format!("; {} uploaded since are left to the inventory", r.dropped)
                    } else {
                        String::new()
                    }
                ),
                None => println!("no catalog copy to restore: starting from an empty catalog"),
            }
            println!(
                "mount again: each vault's inventory is read again, and staged files are \
                 recovered from their sidecars"
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("glacierfs: {e}");
            ExitCode::FAILURE
        }
    }
}

fn try_rebuild(args: &CacheArgs) -> Result<copy::Rebuilt, LocalError> {
    let cache_dir = args.resolve()?;
    daemon::private_umask();
    let _lock = daemon::CacheLock::acquire(&cache_dir)
        .map_err(|e| LocalError::MountedForRebuild(e.to_string()))?;
    let rebuilt = copy::rebuild(&cache_dir)?;
    apply_retrieved_snapshots(&cache_dir, rebuilt.copy_saved_s)?;
    Ok(rebuilt)
}

/// After a rebuild: for each vault, the newest snapshot a restore retrieved into the cache
/// that is newer than the copy restored is applied, so what it knew is not lost with the
/// damaged catalog. Files that do not decode (a download cut short) are passed over.
fn apply_retrieved_snapshots(
    cache_dir: &Path,
    copy_saved_s: Option<i64>,
) -> Result<(), LocalError> {
    let Ok(dir) = std::fs::read_dir(cache_dir.join(crate::engine::snapshot::DIR)) else {
        return Ok(());
    };
    let mut newest: std::collections::HashMap<String, (i64, String)> = Default::default();
    for entry in dir.flatten() {
        let Ok(bytes) = std::fs::read(entry.path()) else {
            continue;
        };
        let Ok(snap) = snapshot::decode(&bytes) else {
            continue;
        };
        if copy_saved_s.is_some_and(|c| snap.taken_s <= c) {
            continue;
        }
        let file = format!(
            "{}/{}",
            crate::engine::snapshot::DIR,
            entry.file_name().to_string_lossy()
        );
        match newest.get(&snap.vault) {
            Some((t, _)) if *t >= snap.taken_s => {}
            _ => {
                newest.insert(snap.vault, (snap.taken_s, file));
            }
        }
    }
    if newest.is_empty() {
        return Ok(());
    }
    let catalog = Catalog::open(cache_dir)?;
    for (vault, (taken_s, file)) in newest {
        let name = vault.clone();
        catalog.write(move |tx| {
            let row = vaults::ensure(tx, &name, "present")?;
            let desc = names::snapshot::describe(&name, taken_s);
            snapshots::record_retrieved(tx, row.ino, &desc, taken_s, &file)
        })?;
        println!(
            "{vault}: the snapshot of {} retrieved before is applied once the mount has read \
             the vault's inventory",
            timefmt::format_iso8601(taken_s, 0)
        );
    }
    catalog.close();
    Ok(())
}

/// `glacierfs inventory import`.
pub fn import(args: &ImportArgs) -> ExitCode {
    match try_import(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("glacierfs: {e}");
            ExitCode::FAILURE
        }
    }
}

fn try_import(args: &ImportArgs) -> Result<(), LocalError> {
    if !names::is_valid_vault_name(&args.vault) {
        return Err(LocalError::VaultName(args.vault.clone()));
    }
    let cache_dir = args.cache.resolve()?;
    daemon::private_umask();
    daemon::prepare_cache_dir(&cache_dir)?;
    let _lock = daemon::CacheLock::acquire(&cache_dir)
        .map_err(|e| LocalError::MountedForImport(e.to_string()))?;
    let catalog = Catalog::open(&cache_dir)?;
    let vault = args.vault.clone();
    let row = catalog.write(move |tx| vaults::ensure(tx, &vault, "present"))?;
    let input = |source| LocalError::Input {
        path: args.file.clone(),
        source,
    };
    let file = std::fs::File::open(&args.file).map_err(input)?;
    let fallback = file_date(&args.file);
    let reader = std::io::BufReader::with_capacity(1 << 18, file);
    let started = std::time::Instant::now();
    let report =
        inventory::merge::import(&catalog, row.ino, reader, fallback).map_err(|source| {
            LocalError::Import {
                path: args.file.clone(),
                source,
            }
        })?;
    catalog.close();
    println!(
        "{}: {} archives ({} new, {} gone upstream) in {:.1}s",
        args.vault,
        report.archives,
        report.added,
        report.removed,
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// A CSV inventory carries no date; the file's own mtime is the best stand-in.
fn file_date(path: &Path) -> Option<String> {
    let mtime = std::fs::metadata(path).ok()?.modified().ok()?;
    let secs = mtime.duration_since(std::time::UNIX_EPOCH).ok()?.as_secs() as i64;
    Some(timefmt::format_iso8601(secs, 0))
}

/// `glacierfs catalog restore PATH`: asks the mount for the vault's newest snapshot to be
/// retrieved and applied; with a wait, returns once it is.
pub fn restore(args: &RestoreArgs) -> ExitCode {
    let path = &args.path;
    let Some(snapshot) = get_xattr(path, "user.glacier.snapshot") else {
        eprintln!(
            "glacierfs: {}: not a vault's directory in a running mount",
            path.display()
        );
        return ExitCode::FAILURE;
    };
    if snapshot == "none" || snapshot == "uploading" {
        eprintln!(
            "glacierfs: {}: the vault holds no snapshot this mount knows of (its inventory \
             may not be in yet: `cat .jobs` in the vault shows it)",
            path.display()
        );
        return ExitCode::FAILURE;
    }
    let tier = args.tier.map(|t| t.to_string()).unwrap_or_default();
    if let Err(e) = set_xattr(path, "user.glacier.restore", tier.as_bytes()) {
        eprintln!("glacierfs: {e}");
        return ExitCode::FAILURE;
    }
    if !args.wait && args.timeout.is_none() {
        println!(
            "restore asked for: a retrieval job for the snapshot, then its names, modes, owners \
             and times are applied; `cat .jobs` in the vault shows it"
        );
        return ExitCode::SUCCESS;
    }
    super::sync::wait_for_vault(path, "user.glacier.restore", args.timeout, |now| {
        if let Some(when) = now.strip_prefix("applied ") {
            Some(Ok(format!("the snapshot of {when} is applied")))
        } else {
            now.strip_prefix("failed: ").map(|why| Err(why.to_owned()))
        }
    })
}
