//! The first import into a vault with no archive yet: every archive of the inventory is new,
//! so they are only sorted into naming order and placed, with no side table. If the vault
//! changed while the inventory was read (an upload or a delete landed), the sorted rows go to
//! the side table after all and the general reconciliation takes over.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::path::Path;
use std::sync::mpsc::Receiver;

use super::place::{self, Dedup, Place};
use super::sort::{Sorted, Sorter, Staged};
use super::{reconcile, ImportError, Settings, Sharing};
use crate::catalog::{nodes, vaults, Catalog, CatalogError};

/// The archives of a first import, sorted, with the parent directories they need and the
/// archive keys listed more than once.
pub(super) struct Gathered {
    sorter: Sorter,
    dir_paths: BTreeSet<String>,
    repeated: HashSet<i64>,
}

impl Gathered {
    /// Every row, in naming order.
    pub(super) fn finish(self) -> std::io::Result<SortedInventory> {
        Ok(SortedInventory {
            rows: self.sorter.finish()?,
            dir_paths: self.dir_paths,
            repeated: self.repeated,
        })
    }
}

/// [`Gathered`] once sorted.
pub(super) struct SortedInventory {
    rows: Sorted,
    dir_paths: BTreeSet<String>,
    repeated: HashSet<i64>,
}

/// Sorts the rows, noting the directories they need and the archives listed twice on the way.
/// Returns how many archives there were.
pub(super) fn gather(
    batches: Receiver<Vec<Staged>>,
    scratch: &Path,
    run_budget: usize,
) -> Result<(u64, Gathered), ImportError> {
    let mut archives = 0u64;
    let mut sorter = Sorter::new(scratch, run_budget);
    let mut dir_paths = BTreeSet::new();
    // Archives of one directory tend to come together: only a change of parent costs a set
    // lookup.
    let mut last_parent = String::new();
    // 8 bytes an archive, sorted at the end to find those listed twice.
    let mut keys = Vec::new();
    for batch in batches {
        for row in batch {
            if let Some((parent, _)) = row.path.rsplit_once('/') {
                if parent != last_parent {
                    if !dir_paths.contains(parent) {
                        dir_paths.insert(parent.to_owned());
                    }
                    last_parent.clear();
                    last_parent.push_str(parent);
                }
            }
            keys.push(nodes::archive_key(&row.archive_id));
            archives += 1;
            sorter.push(row)?;
        }
    }
    keys.sort_unstable();
    let repeated = keys
        .windows(2)
        .filter(|w| w[0] == w[1])
        .map(|w| w[0])
        .collect();
    let gathered = Gathered {
        sorter,
        dir_paths,
        repeated,
    };
    Ok((archives, gathered))
}

/// Places the sorted archives, or reconciles them in full if the vault is no longer fresh.
/// Returns the files added and removed.
pub(super) fn place_sorted(
    catalog: &Catalog,
    vault: u64,
    sorted: SortedInventory,
    inventory_date: Option<&str>,
    settings: &Settings,
) -> Result<(u64, u64), ImportError> {
    // An upload or a delete may have landed while the inventory was read.
    if !catalog.read(move |c| reconcile::is_fresh(c, vault))? {
        log::debug!("vault #{vault} changed during the import: reconciling in full");
        let mut batch = Vec::with_capacity(reconcile::STAGE_BATCH);
        for row in sorted.rows {
            batch.push(row?);
            if batch.len() == reconcile::STAGE_BATCH {
                reconcile::stage(catalog, vault, std::mem::take(&mut batch))?;
            }
        }
        reconcile::stage(catalog, vault, batch)?;
        return reconcile::merge(catalog, vault, inventory_date, settings);
    }
    let dirs = place::make_dirs(catalog, vault, sorted.dir_paths.into_iter().collect())?;
    let dedup = match settings.sharing {
        Sharing::Exclusive => Dedup::Memory(HashMap::new()),
        Sharing::Shared => Dedup::Catalog,
    };
    let place = Place {
        dirs,
        dedup,
        bulk: settings.sharing == Sharing::Exclusive,
    };
    let (rows, repeated) = (sorted.rows, sorted.repeated);
    let added = place::place_stream(catalog, vault, place, settings, |out| {
        for row in rows {
            let row = row.map(|row| {
                let listed_twice = repeated.contains(&nodes::archive_key(&row.archive_id));
                (row, listed_twice)
            });
            if !out(row.map_err(CatalogError::from)) {
                break;
            }
        }
    })?;
    if let Some(d) = inventory_date.map(str::to_owned) {
        catalog.write(move |tx| vaults::set_inventory_date(tx, vault, &d))?;
    }
    Ok((added, 0))
}
