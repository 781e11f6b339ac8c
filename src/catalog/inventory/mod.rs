//! Taking an inventory into the catalog: every statement an import runs, behind one typed entry
//! point, [`import`]. The engine decides when an inventory is needed, fetches and parses it, and
//! feeds the parsed archives in through an [`Intake`]; the tree comes out the same in two ways:
//! - the general way ([`reconcile`]): the parsed archives go into a side table, then are
//!   reconciled with the tree;
//! - the first import into a vault with no archive yet ([`first`], the common case, and the
//!   largest): nothing needs reconciling, so the parsed archives are only sorted into naming
//!   order (in memory and scratch files beside the catalog, see [`sort`]) and placed, with no
//!   side table.
//!
//! Either way new archives are placed in chunks, a transaction each ([`place`]), so a
//! million-archive import never holds the writer for long and never stalls `create` or
//! `rename`. Parsing runs beside the sorting or staging, and reading rows in naming order runs
//! beside placing them, so an import keeps two cores busy.
//!
//! Reconciling keeps names stable and never resurrects what this mount deleted:
//! - archives the catalog already has keep their node, name and inode;
//! - archives gone upstream are dropped, but only when they are older than the inventory, so
//!   this mount's newer uploads survive an inventory that predates them;
//! - archives deleted locally (tombstones) do not come back;
//! - new archives get names in a fixed order (path, newest first, archive id), so the same
//!   inventory always gives the same tree: the newest takes the free name, the others get a
//!   `~date` (then `~id`) suffix, directories win over files, and `.jobs`/`.lock` are reserved.
//!
//! [`job`] records the inventory jobs themselves (the intent before starting one, and the
//! job's progress), for `.jobs` and for recovery.

mod first;
pub mod job;
mod place;
mod reconcile;
mod sort;
#[cfg(test)]
mod tests;

use std::path::Path;
use std::sync::mpsc::{sync_channel, Receiver, SyncSender};
use std::time::{Duration, Instant};

use super::{Catalog, CatalogError};
use sort::Staged;

/// Archives the parser hands over at a time to the thread that sorts or stages them.
const PARSE_BATCH: usize = 4096;

/// Who else may be writing the catalog during an import.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sharing {
    /// A mounted file system: new archives are placed a chunk per transaction, each holding
    /// the writer for at most [`SHARED_HOLD`], so a `create` or `rename` queued behind one never
    /// waits noticeably.
    Shared,
    /// Nothing (the `inventory import` command, which holds the cache directory's lock): the
    /// placing runs as one transaction, and a first import rebuilds the archive index in bulk
    /// after it instead of keeping it up row by row.
    Exclusive,
}

/// Most rows one placing transaction takes beside a mount. Each commit rewrites every index
/// page it touched, and the archive index, keyed by hashes, is touched all over: fewer, larger
/// chunks cost much less in all.
const SHARED_ROWS: usize = 100_000;
/// Longest one placing transaction holds the writer beside a mount.
const SHARED_HOLD: Duration = Duration::from_millis(200);

/// What an import did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ImportReport {
    pub archives: u64,
    pub added: u64,
    pub removed: u64,
    pub inventory_date: Option<String>,
}

/// One archive as the inventory lists it, the input of an import.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listed {
    pub archive_id: String,
    /// The archive description; empty when the inventory has none.
    pub description: String,
    /// ISO 8601, as the inventory writes it.
    pub creation_date: String,
    pub size: u64,
    pub tree_hash: String,
}

/// Why an import failed.
#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    #[error(transparent)]
    Catalog(#[from] CatalogError),
    /// A scratch file of the sort, or a thread of the import that could not start.
    #[error("inventory I/O: {0}")]
    Io(#[from] std::io::Error),
    #[error("inventory I/O: the inventory import's {0} thread panicked")]
    Panicked(&'static str),
    #[error("inventory I/O: the inventory import stopped before the inventory ended")]
    Stopped,
}

impl ImportError {
    /// Worth another try: everything but the catalog refusing (a scratch file or a thread may
    /// do better the next time).
    pub fn is_transient(&self) -> bool {
        !matches!(self, ImportError::Catalog(_))
    }
}

/// What [`Intake::push`] says when the import has stopped taking archives; the import's own
/// error says why.
#[derive(Debug, thiserror::Error)]
#[error("the import stopped")]
pub struct Stopped;

/// Where the feeder of an [`import`] puts the archives it parses, in the inventory's order.
pub struct Intake {
    to_taker: SyncSender<Vec<Staged>>,
    /// Archives already turned into rows: decoding each description into its path here, on
    /// the feeder's thread, leaves the taker only the sorting, so neither thread waits on the
    /// other for long.
    batch: Vec<Staged>,
    /// Namespace snapshots: never files, taken in apart (`snapshots::take_listed`).
    snapshots: Vec<super::snapshots::ListedSnapshot>,
}

impl Intake {
    /// Hands an archive over. Archives travel in batches: a hand-over each would cost more in
    /// thread wake-ups than taking the archive in does.
    pub fn push(&mut self, archive: Listed) -> Result<(), Stopped> {
        if crate::codec::names::snapshot::is_snapshot(&archive.description) {
            self.snapshots.push(listed_snapshot(archive));
            return Ok(());
        }
        self.batch.push(Staged::from(archive));
        if self.batch.len() == PARSE_BATCH {
            let full = std::mem::replace(&mut self.batch, Vec::with_capacity(PARSE_BATCH));
            self.to_taker.send(full).map_err(|_| Stopped)?;
        }
        Ok(())
    }

    /// Hands the last batch over and closes the stream; returns the snapshots set apart.
    fn finish(self) -> Result<Vec<super::snapshots::ListedSnapshot>, Stopped> {
        self.to_taker.send(self.batch).map_err(|_| Stopped)?;
        Ok(self.snapshots)
    }
}

/// A snapshot archive as the snapshots table takes it; one whose description this build
/// cannot read is dated by its creation.
fn listed_snapshot(a: Listed) -> super::snapshots::ListedSnapshot {
    let created = crate::codec::timefmt::iso_secs(Some(&a.creation_date)).unwrap_or(0);
    super::snapshots::ListedSnapshot {
        taken_s: crate::codec::names::snapshot::parse(&a.description)
            .map_or(created, |n| n.taken_s),
        archive_id: a.archive_id,
        description: a.description,
        size: a.size,
        tree_hash: a.tree_hash,
    }
}

/// One import at a time per process: they share the side table.
static IMPORTS: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// Which way an import goes; tests compare the two.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Route {
    /// Straight from the parser through a sort when the vault holds no archive yet, else the
    /// side table.
    Auto,
    /// Always the side table and the general reconciliation.
    #[cfg(test)]
    SideTable,
}

/// The knobs of an import; tests turn them to reach every path with small inventories.
struct Settings {
    route: Route,
    run_budget: usize,
    sharing: Sharing,
    /// Most rows per placing transaction, and longest hold of the writer by one.
    chunk_rows: usize,
    chunk_hold: Duration,
}

impl Settings {
    fn new(sharing: Sharing) -> Settings {
        let (chunk_rows, chunk_hold) = match sharing {
            Sharing::Shared => (SHARED_ROWS, SHARED_HOLD),
            Sharing::Exclusive => (usize::MAX, Duration::MAX),
        };
        Settings {
            route: Route::Auto,
            run_budget: sort::RUN_BUDGET,
            sharing,
            chunk_rows,
            chunk_hold,
        }
    }
}

/// Merges an inventory into `vault`. `feed` runs on the calling thread: it pushes every
/// archive of the inventory into the [`Intake`] and returns the inventory's date, if known.
/// An error from `feed` invalidates what it pushed: nothing of the inventory is merged then.
pub fn import<E, F>(
    catalog: &Catalog,
    vault: u64,
    sharing: Sharing,
    feed: F,
) -> Result<ImportReport, E>
where
    E: From<ImportError>,
    F: FnOnce(&mut Intake) -> Result<Option<String>, E>,
{
    import_with(catalog, vault, &Settings::new(sharing), feed)
}

/// Where the parsed archives went.
enum Taken {
    /// Sorted (the first import into a vault).
    Sorted(first::Gathered),
    /// Into the side table.
    Staged,
}

fn import_with<E, F>(
    catalog: &Catalog,
    vault: u64,
    settings: &Settings,
    feed: F,
) -> Result<ImportReport, E>
where
    E: From<ImportError>,
    F: FnOnce(&mut Intake) -> Result<Option<String>, E>,
{
    let _one_at_a_time = crate::locks::lock(&IMPORTS);
    // Left over by an import that died; nothing may mix with this one's rows.
    catalog
        .write(reconcile::clear_side_table)
        .map_err(ImportError::from)?;
    let fresh = matches!(settings.route, Route::Auto)
        && catalog
            .read(move |c| reconcile::is_fresh(c, vault))
            .map_err(ImportError::from)?;
    let started = Instant::now();
    let (archives, inventory_date, taken, snapshots) =
        take_in(catalog, vault, fresh, settings.run_budget, feed)?;
    let (added, removed) = match taken {
        Taken::Sorted(gathered) => {
            let sorted = gathered.finish().map_err(ImportError::from)?;
            log::debug!(
                "parsed and sorted {archives} archives in {:?}",
                started.elapsed()
            );
            first::place_sorted(catalog, vault, sorted, inventory_date.as_deref(), settings)?
        }
        Taken::Staged => {
            log::debug!("staged {archives} archives in {:?}", started.elapsed());
            reconcile::merge(catalog, vault, inventory_date.as_deref(), settings)?
        }
    };
    log::debug!("{added} files placed by {:?}", started.elapsed());
    let inventory_s = crate::codec::timefmt::iso_secs(inventory_date.as_deref());
    catalog
        .write(move |tx| super::snapshots::take_listed(tx, vault, &snapshots, inventory_s))
        .map_err(ImportError::from)?;
    Ok(ImportReport {
        archives,
        added,
        removed,
        inventory_date,
    })
}

/// Runs `feed` on this thread, which also turns the archives into rows, while another sorts
/// the rows (`fresh`) or stages them in the side table. Returns the archives taken, the inventory's
/// date and where they went.
fn take_in<E, F>(
    catalog: &Catalog,
    vault: u64,
    fresh: bool,
    run_budget: usize,
    feed: F,
) -> Result<
    (
        u64,
        Option<String>,
        Taken,
        Vec<super::snapshots::ListedSnapshot>,
    ),
    E,
>
where
    E: From<ImportError>,
    F: FnOnce(&mut Intake) -> Result<Option<String>, E>,
{
    let scratch = catalog
        .path()
        .parent()
        .map(Path::to_owned)
        .unwrap_or_default();
    let (to_taker, batches) = sync_channel::<Vec<Staged>>(4);
    std::thread::scope(|s| {
        let taker = std::thread::Builder::new()
            .name("inventory-take".into())
            .spawn_scoped(s, move || {
                take(catalog, vault, fresh, &scratch, run_budget, batches)
            })
            .map_err(ImportError::from)?;
        let mut intake = Intake {
            to_taker,
            batch: Vec::with_capacity(PARSE_BATCH),
            snapshots: Vec::new(),
        };
        let fed = feed(&mut intake);
        let last = intake.finish();
        let taken = taker.join().map_err(|_| ImportError::Panicked("take"))?;
        match (fed, taken) {
            (Ok(date), Ok((archives, taken))) => match last {
                Ok(snapshots) => Ok((archives, date, taken, snapshots)),
                Err(_) => Err(ImportError::Stopped.into()),
            },
            // The taker's failure is the cause; the feeder's is then only that it stopped.
            (_, Err(e)) => Err(e.into()),
            (Err(e), _) => Err(e),
        }
    })
}

/// The taker's side of [`take_in`].
fn take(
    catalog: &Catalog,
    vault: u64,
    fresh: bool,
    scratch: &Path,
    run_budget: usize,
    batches: Receiver<Vec<Staged>>,
) -> Result<(u64, Taken), ImportError> {
    if fresh {
        let (archives, gathered) = first::gather(batches, scratch, run_budget)?;
        Ok((archives, Taken::Sorted(gathered)))
    } else {
        let archives = reconcile::stage_all(catalog, vault, batches)?;
        Ok((archives, Taken::Staged))
    }
}
