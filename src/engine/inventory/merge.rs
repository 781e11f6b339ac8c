//! Taking an inventory into the catalog, in two ways that give the same tree:
//! - the general way: the parsed archives go into a side table, then are reconciled with the
//!   tree;
//! - the first import into a vault with no archive yet (the common case, and the largest):
//!   nothing needs reconciling, so the parsed archives are only sorted into naming order
//!   (in memory and scratch files, see [`super::sort`]) and placed, with no side table.
//!
//! Either way new archives are placed in chunks, a transaction each, so a million-archive
//! import never holds the writer for long and never stalls `create` or `rename`. Parsing runs
//! beside the sorting or staging, and reading rows in naming order runs beside placing them, so
//! an import keeps two cores busy.
//!
//! Reconciling follows DESIGN.md §1–2:
//! - archives the catalog already has keep their node, name and inode (names are stable);
//! - archives gone upstream are dropped, but only when they are older than the inventory, so
//!   this mount's newer uploads survive an inventory that predates them;
//! - archives deleted locally (tombstones) do not come back;
//! - new archives get names in a fixed order (path, newest first, archive id), so the same
//!   inventory always gives the same tree: the newest takes the free name, the others get a
//!   `~date` (then `~id`) suffix, directories win over files, and `.jobs`/`.lock` are reserved.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::io::BufRead;
use std::sync::mpsc::{sync_channel, Receiver, SyncSender};
use std::time::{Duration, Instant};

use rusqlite::{params, Connection};

use super::parse::{self, InventoryArchive};
use super::sort;
use super::InventoryError;
use crate::catalog::changes::Change;
use crate::catalog::{self, nodes, schema, vaults, Catalog, CatalogError, Kind};
use crate::codec::{names, timefmt};

/// Rows handed to the writer per transaction while staging.
const STAGE_BATCH: usize = 50_000;
/// Archives the parser hands over at a time to the thread that sorts or stages them.
const PARSE_BATCH: usize = 4096;
/// Rows read ahead of the placing transaction (see [`place_stream`]), and handed over at a time.
const READ_AHEAD: usize = 16 * READ_BATCH;
const READ_BATCH: usize = 1024;

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

/// One archive of the inventory, with the path and mtime its description gives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Staged {
    pub(super) archive_id: String,
    pub(super) description: String,
    pub(super) created_s: i64,
    pub(super) size: u64,
    pub(super) tree_hash: String,
    pub(super) path: String,
    pub(super) mtime_s: i64,
}

impl Staged {
    /// Roughly the memory a row holds: its text, its four allocations and the struct itself.
    pub(super) fn weight(&self) -> usize {
        self.archive_id.len()
            + self.description.len()
            + self.tree_hash.len()
            + self.path.len()
            + 4 * 16
            + std::mem::size_of::<Staged>()
    }
}

fn stage_row(a: InventoryArchive) -> Staged {
    let (segments, mtime) = names::archive_path(&a.description, &a.archive_id);
    let created_s = timefmt::parse_iso8601(&a.creation_date)
        .map(|(s, _)| s)
        .unwrap_or(0);
    Staged {
        path: segments.join("/"),
        mtime_s: mtime.unwrap_or(created_s),
        archive_id: a.archive_id,
        description: a.description,
        created_s,
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

/// Parses an inventory (JSON or CSV, detected) and merges it into `vault`, for a catalog that
/// nothing else writes to meanwhile (see [`Sharing::Exclusive`]); [`import_shared`] is for a
/// mounted file system.
/// `fallback_date` stands in for the inventory's date when the file does not carry one (CSV).
pub fn import(
    catalog: &Catalog,
    vault: u64,
    reader: impl BufRead,
    fallback_date: Option<String>,
) -> Result<ImportReport, InventoryError> {
    import_with(
        catalog,
        vault,
        reader,
        fallback_date,
        &Settings::new(Sharing::Exclusive),
    )
}

/// [`import`] beside a mounted file system (see [`Sharing::Shared`]).
pub fn import_shared(
    catalog: &Catalog,
    vault: u64,
    reader: impl BufRead,
    fallback_date: Option<String>,
) -> Result<ImportReport, InventoryError> {
    import_with(
        catalog,
        vault,
        reader,
        fallback_date,
        &Settings::new(Sharing::Shared),
    )
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

/// Where the parsed archives went.
enum Taken {
    /// Sorted, with the parent directories they need and the archive keys listed more than
    /// once (the first import into a vault).
    Sorted {
        sorter: sort::Sorter,
        dir_paths: BTreeSet<String>,
        repeated: HashSet<i64>,
    },
    /// Into the side table.
    Staged,
}

fn import_with(
    catalog: &Catalog,
    vault: u64,
    reader: impl BufRead,
    fallback_date: Option<String>,
    settings: &Settings,
) -> Result<ImportReport, InventoryError> {
    let _one_at_a_time = crate::locks::lock(&IMPORTS);
    // Left over by an import that died; nothing may mix with this one's rows.
    catalog.write(clear_side_table)?;
    let fresh =
        matches!(settings.route, Route::Auto) && catalog.read(move |c| is_fresh(c, vault))?;
    let started = Instant::now();
    let (archives, header, taken) = take_in(catalog, vault, reader, fresh, settings.run_budget)?;
    let inventory_date = header.inventory_date.or(fallback_date);
    let (added, removed) = match taken {
        Taken::Sorted {
            sorter,
            dir_paths,
            repeated,
        } => {
            let sorted = sorter.finish()?;
            log::debug!(
                "parsed and sorted {archives} archives in {:?}",
                started.elapsed()
            );
            // An upload or a delete may have landed while the inventory was read.
            if catalog.read(move |c| is_fresh(c, vault))? {
                let dirs = make_dirs(catalog, vault, dir_paths.into_iter().collect())?;
                let dedup = match settings.sharing {
                    Sharing::Exclusive => Dedup::Memory(HashMap::new()),
                    Sharing::Shared => Dedup::Catalog,
                };
                let place = Place {
                    dirs,
                    dedup,
                    rebuild_archive_index: settings.sharing == Sharing::Exclusive,
                };
                let added = place_stream(catalog, vault, place, settings, |out| {
                    for row in sorted {
                        let row = row.map(|row| {
                            let listed_twice =
                                repeated.contains(&nodes::archive_key(&row.archive_id));
                            (row, listed_twice)
                        });
                        if !out(row.map_err(CatalogError::from)) {
                            break;
                        }
                    }
                })?;
                if let Some(d) = inventory_date.clone() {
                    catalog.write(move |tx| vaults::set_inventory_date(tx, vault, &d))?;
                }
                (added, 0)
            } else {
                log::debug!("vault #{vault} changed during the import: reconciling in full");
                let mut batch = Vec::with_capacity(STAGE_BATCH);
                for row in sorted {
                    batch.push(row?);
                    if batch.len() == STAGE_BATCH {
                        stage(catalog, vault, std::mem::take(&mut batch))?;
                    }
                }
                stage(catalog, vault, batch)?;
                merge(catalog, vault, inventory_date.as_deref(), settings)?
            }
        }
        Taken::Staged => {
            log::debug!("staged {archives} archives in {:?}", started.elapsed());
            merge(catalog, vault, inventory_date.as_deref(), settings)?
        }
    };
    log::debug!("{added} files placed by {:?}", started.elapsed());
    Ok(ImportReport {
        archives,
        added,
        removed,
        inventory_date,
    })
}

/// Parses the inventory on this thread while another turns the archives into rows and sorts
/// them (`fresh`) or stages them in the side table.
fn take_in(
    catalog: &Catalog,
    vault: u64,
    reader: impl BufRead,
    fresh: bool,
    run_budget: usize,
) -> Result<(u64, parse::InventoryHeader, Taken), InventoryError> {
    let scratch = catalog
        .path()
        .parent()
        .map(std::path::Path::to_owned)
        .unwrap_or_default();
    let (to_taker, batches) = sync_channel::<Vec<InventoryArchive>>(4);
    std::thread::scope(|s| {
        let taker = std::thread::Builder::new()
            .name("inventory-take".into())
            .spawn_scoped(s, move || -> Result<(u64, Taken), InventoryError> {
                let mut archives = 0u64;
                if fresh {
                    let mut sorter = sort::Sorter::new(&scratch, run_budget);
                    let mut dir_paths = BTreeSet::new();
                    // Archives of one directory tend to come together: only a change of
                    // parent costs a set lookup.
                    let mut last_parent = String::new();
                    // 8 bytes an archive, sorted at the end to find those listed twice.
                    let mut keys = Vec::new();
                    for batch in batches {
                        for a in batch {
                            let row = stage_row(a);
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
                    Ok((
                        archives,
                        Taken::Sorted {
                            sorter,
                            dir_paths,
                            repeated,
                        },
                    ))
                } else {
                    let mut rows = Vec::with_capacity(STAGE_BATCH);
                    for batch in batches {
                        for a in batch {
                            rows.push(stage_row(a));
                            archives += 1;
                            if rows.len() >= STAGE_BATCH {
                                stage(catalog, vault, std::mem::take(&mut rows))?;
                            }
                        }
                    }
                    stage(catalog, vault, rows)?;
                    Ok((archives, Taken::Staged))
                }
            })?;
        let mut batch = Vec::with_capacity(PARSE_BATCH);
        let parsed = parse::parse_auto(reader, |a| {
            batch.push(a);
            if batch.len() == PARSE_BATCH {
                let full = std::mem::replace(&mut batch, Vec::with_capacity(PARSE_BATCH));
                // The taker stopped: its own error says why.
                to_taker
                    .send(full)
                    .map_err(|_| "the import stopped".to_owned())?;
            }
            Ok(())
        });
        let last = to_taker.send(batch);
        drop(to_taker);
        let taken = taker
            .join()
            .map_err(|_| std::io::Error::other("the inventory taker panicked"))?;
        match (parsed, taken) {
            (Ok((_, header)), Ok((archives, taken))) if last.is_ok() => {
                Ok((archives, header, taken))
            }
            (_, Err(e)) => Err(e),
            (Err(e), _) => Err(e.into()),
            (Ok(_), Ok(_)) => Err(std::io::Error::other("the inventory taker stopped").into()),
        }
    })
}

/// Whether the general reconciliation would find nothing to reconcile in `vault`: no archive
/// in its tree, no tombstone, no upload of unknown outcome. Then every archive of the inventory
/// is new, and it can be placed in naming order straight from a sort, with no side table.
/// Local-only entries (directories, empty or staged files) do not matter: placing checks every
/// name anyway.
fn is_fresh(c: &Connection, vault: u64) -> Result<bool, CatalogError> {
    if nodes::has_archives_below(c, vault)? {
        return Ok(false);
    }
    let mut pending = c.prepare_cached(
        "SELECT EXISTS (SELECT 1 FROM tombstones WHERE vault = ?1) \
             OR EXISTS (SELECT 1 FROM unconfirmed WHERE vault = ?1)",
    )?;
    Ok(!pending.query_row([vault as i64], |r| r.get::<_, bool>(0))?)
}

fn stage(catalog: &Catalog, vault: u64, rows: Vec<Staged>) -> Result<(), CatalogError> {
    if rows.is_empty() {
        return Ok(());
    }
    catalog.write(move |tx| {
        let mut stmt = tx.prepare_cached(
            "INSERT INTO inventory_import \
             (vault, archive_id, archive_key, description, created_s, size, tree_hash, path, mtime_s) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
        )?;
        for r in &rows {
            stmt.execute(params![
                vault as i64,
                r.archive_id,
                nodes::archive_key(&r.archive_id),
                r.description,
                r.created_s,
                r.size as i64,
                r.tree_hash,
                r.path,
                r.mtime_s
            ])?;
        }
        Ok(())
    })
}

/// Reconciles the staged inventory of `vault` with its tree, then clears the side table.
/// Returns the files added and removed.
fn merge(
    catalog: &Catalog,
    vault: u64,
    inventory_date: Option<&str>,
    settings: &Settings,
) -> Result<(u64, u64), InventoryError> {
    let inventory_s = inventory_date
        .and_then(timefmt::parse_iso8601)
        .map(|(s, _)| s);
    let settled = catalog.write(move |tx| settle_unconfirmed(tx, vault, inventory_s))?;
    if settled > 0 {
        log::info!("settled {settled} archive(s) of uploads whose outcome was unknown");
    }
    let gone = match inventory_s {
        Some(s) => catalog.write(move |tx| {
            if !nodes::has_archives_below(tx, vault)? {
                return Ok(Vec::new());
            }
            // Built after staging, in one sorted pass, rather than kept up row by row.
            tx.execute_batch(
                "CREATE INDEX IF NOT EXISTS inventory_import_by_archive \
                 ON inventory_import(archive_key)",
            )?;
            drop_gone_upstream(tx, vault, s)
        })?,
        // Without a date there is no telling old from new: drop nothing.
        None => Vec::new(),
    };
    let removed = gone.len() as u64;
    // The kernel may hold these names; new ones need no notice (listings are not cached, and
    // a failed lookup is not remembered).
    catalog.changed(
        gone.into_iter()
            .map(|(parent, name)| Change::Entry { parent, name }),
    );
    // Directories first, so that a file and a directory with the same path leave the name to
    // the directory wherever they fall in the order.
    let started = Instant::now();
    let dir_paths = catalog.read(move |c| new_directories(c, vault))?;
    log::debug!(
        "removed {removed}, found {} directories in {:?}",
        dir_paths.len(),
        started.elapsed()
    );
    let dirs = make_dirs(catalog, vault, dir_paths.into_iter().collect())?;
    // Then the files, streamed in naming order from a read connection.
    let place = Place {
        dirs,
        dedup: Dedup::Catalog,
        rebuild_archive_index: false,
    };
    let added = place_stream(catalog, vault, place, settings, |out| {
        let read = catalog.read(|c| {
            let mut stmt = c.prepare(&format!(
                "SELECT archive_id, description, created_s, size, tree_hash, path, mtime_s \
                 FROM inventory_import i WHERE {NEW_ROW} \
                 ORDER BY path, created_s DESC, archive_id"
            ))?;
            let mut rows = stmt.query([vault as i64])?;
            while let Some(r) = rows.next()? {
                let row = Staged {
                    archive_id: r.get(0)?,
                    description: r.get(1)?,
                    created_s: r.get(2)?,
                    size: r.get::<_, i64>(3)? as u64,
                    tree_hash: r.get(4)?,
                    path: r.get(5)?,
                    mtime_s: r.get(6)?,
                };
                // The archive may be listed twice, and its first listing placed already.
                if !out(Ok((row, true))) {
                    break;
                }
            }
            Ok(())
        });
        if let Err(e) = read {
            out(Err(e));
        }
    })?;
    let date = inventory_date.map(str::to_owned);
    catalog.write(move |tx| {
        clear_side_table(tx)?;
        if let Some(d) = &date {
            vaults::set_inventory_date(tx, vault, d)?;
        }
        Ok(())
    })?;
    Ok((added, removed))
}

/// Creates the directories (paths relative to the vault, in order) that new archives need, and
/// returns the ino of each.
fn make_dirs(
    catalog: &Catalog,
    vault: u64,
    dir_paths: Vec<String>,
) -> Result<HashMap<String, u64>, CatalogError> {
    let mut dirs: HashMap<String, u64> = HashMap::new();
    for chunk in dir_paths.chunks(SHARED_ROWS / 4) {
        let chunk = chunk.to_vec();
        dirs = catalog.write(move |tx| {
            for path in &chunk {
                ensure_dirs(tx, vault, path, &mut dirs)?;
            }
            Ok(dirs)
        })?;
    }
    Ok(dirs)
}

/// How a placing transaction tells an archive listed twice in the inventory from a new one.
enum Dedup {
    /// Ask the catalog (by the archive index) about each row flagged as possibly placed.
    Catalog,
    /// Nothing else writes and the vault had no archive: only this import placed archives, and
    /// the ids of those whose key is listed more than once are kept here.
    Memory(HashMap<i64, Vec<String>>),
}

/// What placing needs besides the rows.
struct Place {
    dirs: HashMap<String, u64>,
    dedup: Dedup,
    /// Drop the archive index before placing and build it again after, in the same
    /// transaction: one sorted build costs a fraction of a million scattered inserts. Only for
    /// [`Sharing::Exclusive`], where placing is one transaction, so the index is never missing
    /// for anyone, even after a crash.
    rebuild_archive_index: bool,
}

/// A row to place, and whether its archive may have a node already (so must be checked).
type PlaceRow = (Staged, bool);

/// What a placing transaction carries from one chunk to the next.
struct PlaceState {
    batches: Receiver<Result<Vec<PlaceRow>, CatalogError>>,
    /// Rows received and not placed yet, in reverse order (the next one last).
    pending: Vec<PlaceRow>,
    place: Place,
    added: u64,
    done: bool,
}

/// Places new archives in naming order, as `read` hands them over from another thread, a
/// chunk per transaction; returns how many files were placed. `read` gets a function that
/// passes a row on and says whether to go on.
fn place_stream(
    catalog: &Catalog,
    vault: u64,
    place: Place,
    settings: &Settings,
    read: impl FnOnce(&mut dyn FnMut(Result<PlaceRow, CatalogError>) -> bool) + Send,
) -> Result<u64, CatalogError> {
    // Rows travel in batches: a hand-over per row would cost more in thread wake-ups than
    // placing the row does.
    let (to_placer, batches) = sync_channel(READ_AHEAD / READ_BATCH);
    let (max_rows, max_hold) = (settings.chunk_rows, settings.chunk_hold);
    std::thread::scope(|s| {
        std::thread::Builder::new()
            .name("inventory-read".into())
            .spawn_scoped(s, move || {
                let to_placer: SyncSender<_> = to_placer;
                let mut batch = Vec::with_capacity(READ_BATCH);
                let mut open = true;
                read(&mut |row| {
                    match row {
                        Ok(row) => {
                            batch.push(row);
                            if batch.len() == READ_BATCH {
                                let full =
                                    std::mem::replace(&mut batch, Vec::with_capacity(READ_BATCH));
                                // Stops when the placer has gone (it failed).
                                open = to_placer.send(Ok(full)).is_ok();
                            }
                        }
                        Err(e) => {
                            let _ = to_placer.send(Ok(std::mem::take(&mut batch)));
                            let _ = to_placer.send(Err(e));
                            open = false;
                        }
                    }
                    open
                });
                if open && !batch.is_empty() {
                    let _ = to_placer.send(Ok(batch));
                }
            })?;
        let mut state = PlaceState {
            batches,
            pending: Vec::new(),
            place,
            added: 0,
            done: false,
        };
        while !state.done {
            state = catalog.write(move |tx| {
                let rebuild = state.place.rebuild_archive_index;
                if rebuild {
                    tx.execute_batch("DROP INDEX IF EXISTS nodes_by_archive")?;
                }
                let state = place_chunk(tx, vault, state, max_rows, max_hold)?;
                if rebuild {
                    schema::create_archive_index(tx)?;
                }
                Ok(state)
            })?;
        }
        Ok(state.added)
    })
}

/// Places rows until the stream ends or the chunk is full (in rows or in time).
fn place_chunk(
    tx: &Connection,
    vault: u64,
    mut state: PlaceState,
    max_rows: usize,
    max_hold: Duration,
) -> Result<PlaceState, CatalogError> {
    let started = Instant::now();
    let mut n = 0usize;
    while n < max_rows {
        // Checking the clock every row would cost more than it saves.
        if n % 1024 == 1023 && started.elapsed() >= max_hold {
            break;
        }
        if state.pending.is_empty() {
            match state.batches.recv() {
                Ok(batch) => {
                    state.pending = batch?;
                    state.pending.reverse();
                }
                Err(_) => {
                    state.done = true;
                    break;
                }
            }
        }
        let Some((row, may_be_placed)) = state.pending.pop() else {
            continue;
        };
        n += 1;
        let place = &mut state.place;
        // An inventory may list one archive twice; the first placement wins.
        let already = may_be_placed
            && match &mut place.dedup {
                Dedup::Catalog => nodes::archive_in_use(tx, vault, &row.archive_id)?,
                Dedup::Memory(placed) => {
                    let ids = placed
                        .entry(nodes::archive_key(&row.archive_id))
                        .or_default();
                    if ids.contains(&row.archive_id) {
                        true
                    } else {
                        ids.push(row.archive_id.clone());
                        false
                    }
                }
            };
        if !already {
            place_file(tx, vault, &row, &place.dirs)?;
            state.added += 1;
        }
    }
    Ok(state)
}

/// Empties the side table. Imports never overlap (see [`IMPORTS`]), so the whole table goes:
/// an unqualified DELETE lets SQLite drop the pages instead of visiting every row.
fn clear_side_table(tx: &rusqlite::Transaction<'_>) -> Result<(), CatalogError> {
    tx.execute_batch(
        "DELETE FROM inventory_import; DROP INDEX IF EXISTS inventory_import_by_archive;",
    )?;
    Ok(())
}

/// The condition for a staged row whose archive the catalog has never seen (nor deleted).
const NEW_ROW: &str = "vault = ?1 \
    AND NOT EXISTS (SELECT 1 FROM nodes n WHERE n.archive_key = i.archive_key \
                    AND n.archive_id = i.archive_id AND n.vault = ?1) \
    AND NOT EXISTS (SELECT 1 FROM tombstones t WHERE t.vault = ?1 AND t.archive_id = i.archive_id)";

/// The parent directories (relative paths) that new archives need.
fn new_directories(c: &Connection, vault: u64) -> Result<BTreeSet<String>, CatalogError> {
    let mut stmt = c.prepare(&format!(
        "SELECT path FROM inventory_import i WHERE {NEW_ROW}"
    ))?;
    let mut rows = stmt.query([vault as i64])?;
    let mut out = BTreeSet::new();
    while let Some(r) = rows.next()? {
        let path: String = r.get(0)?;
        if let Some((parent, _)) = path.rsplit_once('/') {
            if !out.contains(parent) {
                out.insert(parent.to_owned());
            }
        }
    }
    Ok(out)
}

/// Archives of uploads whose outcome was unknown: each match (description, size, tree hash)
/// is adopted by its file if the file has no archive yet, and deleted as a duplicate otherwise.
/// Records older than the inventory are settled either way and go.
fn settle_unconfirmed(
    tx: &rusqlite::Transaction<'_>,
    vault: u64,
    inventory_s: Option<i64>,
) -> Result<u64, CatalogError> {
    let records: Vec<(i64, Option<i64>, String, i64, String)> = {
        let mut s = tx.prepare(
            "SELECT id, ino, description, size, tree_hash FROM unconfirmed WHERE vault = ?1",
        )?;
        let rows = s.query_map([vault as i64], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?))
        })?;
        rows.collect::<Result<_, _>>()?
    };
    let mut settled = 0;
    for (_, ino, description, size, tree_hash) in &records {
        let matches: Vec<(i64, String)> = {
            let mut s = tx.prepare(&format!(
                "SELECT seq, archive_id FROM inventory_import i WHERE {NEW_ROW} \
                 AND description = ?2 AND size = ?3 AND tree_hash = ?4"
            ))?;
            let rows = s.query_map(params![vault as i64, description, size, tree_hash], |r| {
                Ok((r.get(0)?, r.get(1)?))
            })?;
            rows.collect::<Result<_, _>>()?
        };
        for (seq, archive_id) in matches {
            let node = match ino {
                Some(i) => nodes::get(tx, *i as u64)?,
                None => None,
            };
            match node {
                Some(n) if n.archive_id.is_none() => {
                    tx.execute(
                        "UPDATE nodes SET archive_id = ?2, archive_key = ?3, tree_hash = ?4, \
                         description = ?5 WHERE ino = ?1",
                        params![
                            n.ino as i64,
                            archive_id,
                            nodes::archive_key(&archive_id),
                            tree_hash,
                            description
                        ],
                    )?;
                }
                _ => {
                    crate::catalog::deletes::queue_delete(
                        tx,
                        vault,
                        &archive_id,
                        "",
                        catalog::now_ns(),
                        None,
                    )?;
                }
            }
            tx.execute("DELETE FROM inventory_import WHERE seq = ?1", [seq])?;
            settled += 1;
        }
    }
    if let Some(s) = inventory_s {
        tx.execute(
            "DELETE FROM unconfirmed WHERE vault = ?1 AND created_s < ?2",
            params![vault as i64, s],
        )?;
    }
    Ok(settled)
}

/// Removes archived files the inventory no longer lists, if they are older than it, and the
/// tombstones the inventory confirms. Returns the (parent, name) of each file removed.
fn drop_gone_upstream(
    tx: &Connection,
    vault: u64,
    inventory_s: i64,
) -> Result<Vec<(u64, String)>, CatalogError> {
    let removed = {
        let mut stmt = tx.prepare(
            "DELETE FROM nodes WHERE vault = ?1 AND kind = 3 AND archive_id IS NOT NULL \
             AND dirty = 0 AND COALESCE(created_s, 0) < ?2 \
             AND NOT EXISTS (SELECT 1 FROM inventory_import i \
                             WHERE i.archive_key = nodes.archive_key \
                             AND i.archive_id = nodes.archive_id AND i.vault = ?1) \
             RETURNING parent, name",
        )?;
        let rows = stmt.query_map(params![vault as i64, inventory_s], |r| {
            Ok((r.get::<_, i64>(0)? as u64, r.get::<_, String>(1)?))
        })?;
        rows.collect::<Result<Vec<_>, _>>()?
    };
    tx.execute(
        "DELETE FROM tombstones WHERE vault = ?1 AND deleted_s < ?2 \
         AND NOT EXISTS (SELECT 1 FROM inventory_import i \
                         WHERE i.archive_key = tombstones.archive_key \
                         AND i.archive_id = tombstones.archive_id AND i.vault = ?1)",
        params![vault as i64, inventory_s],
    )?;
    Ok(removed)
}

/// The ino of directory `path` (relative to the vault), creating the missing ones.
fn ensure_dirs(
    tx: &Connection,
    vault: u64,
    path: &str,
    dirs: &mut HashMap<String, u64>,
) -> Result<u64, CatalogError> {
    if let Some(&ino) = dirs.get(path) {
        return Ok(ino);
    }
    let (parent, name) = match path.rsplit_once('/') {
        Some((p, n)) => (ensure_dirs(tx, vault, p, dirs)?, n),
        None => (vault, path),
    };
    let ino = match nodes::lookup(tx, parent, name)? {
        Some(n) if n.kind == Kind::Dir => n.ino,
        // A name already shown as a file (or reserved) keeps it; the directory is set apart.
        existing => {
            let name = if existing.is_some() || (parent == vault && names::is_reserved(name)) {
                format!("{name}~dir")
            } else {
                name.to_owned()
            };
            match nodes::lookup(tx, parent, &name)? {
                Some(n) if n.kind == Kind::Dir => n.ino,
                _ => nodes::insert(
                    tx,
                    Kind::Dir,
                    &nodes::NewNode {
                        parent,
                        name: &name,
                        vault,
                        mtime_ns: catalog::now_ns(),
                        ..Default::default()
                    },
                )?,
            }
        }
    };
    dirs.insert(path.to_owned(), ino);
    Ok(ino)
}

/// Places one new archive as a file.
fn place_file(
    tx: &Connection,
    vault: u64,
    row: &Staged,
    dirs: &HashMap<String, u64>,
) -> Result<(), CatalogError> {
    let (parent, name) = match row.path.rsplit_once('/') {
        Some((p, n)) => (*dirs.get(p).ok_or(CatalogError::NotFound)?, n),
        None => (vault, row.path.as_str()),
    };
    let node = |name| nodes::NewNode {
        parent,
        name,
        vault,
        size: row.size,
        mtime_ns: row.mtime_s.saturating_mul(1_000_000_000),
        archive_id: Some(&row.archive_id),
        tree_hash: Some(&row.tree_hash),
        description: Some(&row.description),
        created_s: Some(row.created_s),
        ..Default::default()
    };
    // Most names are free: try the insert first and let the unique index say otherwise,
    // rather than looking every name up before inserting it.
    if !(parent == vault && names::is_reserved(name)) {
        match nodes::insert(tx, Kind::File, &node(name)) {
            Ok(_) => return Ok(()),
            Err(CatalogError::Exists) => {}
            Err(e) => return Err(e),
        }
    }
    let name = free_name(
        tx,
        parent,
        parent == vault,
        name,
        row.created_s,
        &row.archive_id,
    )?;
    nodes::insert(tx, Kind::File, &node(&name))?;
    Ok(())
}

/// The name a new archive takes: its own if free, else the collision suffixes in turn.
fn free_name(
    tx: &Connection,
    parent: u64,
    at_vault_root: bool,
    name: &str,
    created_s: i64,
    archive_id: &str,
) -> Result<String, CatalogError> {
    let free =
        |n: &str| -> Result<bool, CatalogError> { Ok(nodes::lookup(tx, parent, n)?.is_none()) };
    if !(at_vault_root && names::is_reserved(name)) && free(name)? {
        return Ok(name.to_owned());
    }
    let by_date = names::suffixed(name, created_s);
    if free(&by_date)? {
        return Ok(by_date);
    }
    let by_id = names::suffixed_with_id(name, created_s, archive_id);
    let mut candidate = by_id.clone();
    let mut n = 2;
    while !free(&candidate)? {
        candidate = format!("{by_id}~{n}");
        n += 1;
    }
    Ok(candidate)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::{vaults, ROOT_INO};

    fn inventory(archives: &[(&str, &str, &str)]) -> String {
        let list: Vec<_> = archives
            .iter()
            .map(|(id, desc, date)| {
                serde_json::json!({"ArchiveId": id, "ArchiveDescription": desc,
                    "CreationDate": date, "Size": 5, "SHA256TreeHash": "00"})
            })
            .collect();
        serde_json::json!({"VaultARN": "arn", "InventoryDate": "2026-01-02T00:00:00Z",
            "ArchiveList": list})
        .to_string()
    }

    fn tree(cat: &Catalog, ino: u64, prefix: &str, out: &mut Vec<String>) {
        let kids = cat.read(|c| nodes::children(c, ino, 0, 10_000)).unwrap();
        for k in kids {
            let p = format!("{prefix}{}", k.name);
            if k.kind.is_dir() {
                out.push(format!("{p}/"));
                tree(cat, k.ino, &format!("{p}/"), out);
            } else {
                out.push(p);
            }
        }
    }

    fn setup() -> (tempfile::TempDir, Catalog, u64) {
        let dir = tempfile::tempdir().unwrap();
        let cat = Catalog::open(dir.path()).unwrap();
        let v = cat
            .write(|tx| vaults::ensure(tx, "v", "present"))
            .unwrap()
            .ino;
        (dir, cat, v)
    }

    fn sorted_tree(cat: &Catalog, v: u64) -> Vec<String> {
        let mut t = Vec::new();
        tree(cat, v, "", &mut t);
        t.sort();
        t
    }

    #[test]
    fn collisions_follow_the_rules() {
        let (_d, cat, v) = setup();
        let inv = inventory(&[
            ("id-old", "a/x", "2020-01-01T00:00:00Z"),
            ("id-new", "a/x", "2021-01-01T00:00:00Z"),
            ("id-file", "a", "2020-01-01T00:00:00Z"),
            ("id-jobs", ".jobs", "2020-01-01T00:00:00Z"),
            ("id-empty", "", "2020-01-01T00:00:00Z"),
        ]);
        let r = import(&cat, v, inv.as_bytes(), None).unwrap();
        assert_eq!((r.archives, r.added), (5, 5));
        assert_eq!(
            sorted_tree(&cat, v),
            vec![
                ".jobs~20200101T000000Z",
                "00undefined/",
                "00undefined/id-empty",
                "a/",
                "a/x",
                "a/x~20200101T000000Z",
                "a~20200101T000000Z",
            ]
        );
        let x = cat.read(|c| nodes::lookup(c, v, "a")).unwrap().unwrap();
        let newest = cat.read(|c| nodes::lookup(c, x.ino, "x")).unwrap().unwrap();
        assert_eq!(newest.archive_id.as_deref(), Some("id-new"));
    }

    #[test]
    fn same_inventory_same_tree_and_refresh_renames_nothing() {
        let archives = [
            ("i1", "dup", "2020-01-01T00:00:00Z"),
            ("i2", "dup", "2020-01-01T00:00:00Z"),
            ("i3", "dup", "2019-01-01T00:00:00Z"),
            ("i4", "d/f", "2020-01-01T00:00:00Z"),
        ];
        let inv = inventory(&archives);
        let (_d1, c1, v1) = setup();
        let (_d2, c2, v2) = setup();
        import(&c1, v1, inv.as_bytes(), None).unwrap();
        import(&c2, v2, inv.as_bytes(), None).unwrap();
        assert_eq!(sorted_tree(&c1, v1), sorted_tree(&c2, v2));

        let before = sorted_tree(&c1, v1);
        let mut more = archives.to_vec();
        more.push(("i5", "dup", "2025-01-01T00:00:00Z"));
        let r = import(&c1, v1, inventory(&more).as_bytes(), None).unwrap();
        assert_eq!(r.added, 1);
        let after = sorted_tree(&c1, v1);
        for name in &before {
            assert!(after.contains(name), "{name} was renamed");
        }
    }

    #[test]
    fn archives_gone_upstream_are_dropped_unless_newer() {
        let (_d, cat, v) = setup();
        import(
            &cat,
            v,
            inventory(&[("old", "f", "2020-01-01T00:00:00Z")]).as_bytes(),
            None,
        )
        .unwrap();
        // An upload of this mount, newer than the next inventory.
        cat.write(move |tx| {
            nodes::insert(
                tx,
                Kind::File,
                &nodes::NewNode {
                    parent: v,
                    name: "mine",
                    vault: v,
                    archive_id: Some("mine-id"),
                    created_s: Some(2_000_000_000),
                    ..Default::default()
                },
            )
        })
        .unwrap();
        let r = import(&cat, v, inventory(&[]).as_bytes(), None).unwrap();
        assert_eq!(r.removed, 1);
        assert_eq!(sorted_tree(&cat, v), vec!["mine"]);
        assert!(cat
            .read(|c| nodes::lookup(c, ROOT_INO, "v"))
            .unwrap()
            .is_some());
    }

    /// Every node but the root, as the tree and the archives it shows; directory times are
    /// left out, being the time of the import.
    fn dump(cat: &Catalog) -> Vec<String> {
        cat.read(|c| {
            let mut s = c.prepare(
                "SELECT ino, parent, name, kind, vault, size, archive_id, archive_key, tree_hash, \
                 description, created_s, CASE kind WHEN 3 THEN mtime_ns END \
                 FROM nodes WHERE ino != 1 ORDER BY ino",
            )?;
            let rows = s.query_map([], |r| {
                let cols: Vec<String> = (0..12)
                    .map(|i| format!("{:?}", r.get_ref(i).unwrap()))
                    .collect();
                Ok(cols.join(" "))
            })?;
            Ok(rows.collect::<Result<_, _>>()?)
        })
        .unwrap()
    }

    fn settings(route: Route, sharing: Sharing, run_budget: usize, chunk_rows: usize) -> Settings {
        Settings {
            route,
            run_budget,
            chunk_rows,
            ..Settings::new(sharing)
        }
    }

    fn import_as(cat: &Catalog, v: u64, inv: &str, s: &Settings) -> ImportReport {
        import_with(cat, v, inv.as_bytes(), None, s).unwrap()
    }

    /// Archives drawn so that paths, dates and ids collide often: the same archive listed
    /// twice, a file and a directory of one name, names that look like collision suffixes,
    /// reserved names and empty descriptions.
    fn archives() -> impl proptest::strategy::Strategy<Value = Vec<(String, String, String)>> {
        let id = "[ijk][0-3]";
        let desc = proptest::sample::select(vec![
            "a",
            "a/x",
            "a/x/y",
            "a~20200101T000000Z",
            "a~dir/z",
            "x",
            ".jobs",
            ".lock/q",
            "",
            "b/./c",
            "/abs/a",
        ]);
        let date = proptest::sample::select(vec![
            "2019-06-01T00:00:00Z",
            "2020-01-01T00:00:00Z",
            "2020-01-01T00:00:00Z",
            "2021-03-04T05:06:07Z",
        ]);
        proptest::collection::vec((id, desc, date), 0..24).prop_map(|v| {
            v.into_iter()
                .map(|(i, d, t)| (i, d.to_owned(), t.to_owned()))
                .collect()
        })
    }

    fn owned_inventory(list: &[(String, String, String)]) -> String {
        let refs: Vec<(&str, &str, &str)> = list
            .iter()
            .map(|(i, d, t)| (i.as_str(), d.as_str(), t.as_str()))
            .collect();
        inventory(&refs)
    }

    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(48))]

        /// The first import straight from the sort (beside a mount or alone, with runs spilled
        /// to scratch files and several transactions) gives exactly the tree, inode numbers
        /// included, that the side table and the general reconciliation give; and so does a
        /// second, different inventory merged on top of either.
        #[test]
        fn a_first_import_from_the_sort_matches_the_general_merge(
            first in archives(),
            second in archives(),
            budget in 1usize..4000,
            chunk in 1usize..6,
        ) {
            let (_d0, general, v0) = setup();
            let side = settings(Route::SideTable, Sharing::Shared, budget, chunk);
            let first_report = import_as(&general, v0, &owned_inventory(&first), &side);
            let after_first = dump(&general);
            let second_report = import_as(&general, v0, &owned_inventory(&second), &side);
            let after_second = dump(&general);
            for sharing in [Sharing::Shared, Sharing::Exclusive] {
                let (_d, cat, v) = setup();
                prop_assert_eq!(v, v0);
                let fresh = settings(Route::Auto, sharing, budget, chunk);
                let r = import_as(&cat, v, &owned_inventory(&first), &fresh);
                prop_assert_eq!(&r, &first_report);
                prop_assert_eq!(&dump(&cat), &after_first);
                let r = import_as(&cat, v, &owned_inventory(&second), &fresh);
                prop_assert_eq!(&r, &second_report);
                prop_assert_eq!(&dump(&cat), &after_second);
            }
        }
    }

    #[test]
    fn a_first_import_respects_local_entries_like_the_general_merge() {
        let inv = inventory(&[
            ("id-a", "a", "2020-01-01T00:00:00Z"),
            ("id-d", "d/f", "2020-01-01T00:00:00Z"),
            ("id-e", "e", "2021-01-01T00:00:00Z"),
        ]);
        // A staged file named like an archive, and a local directory named like another.
        let local = |cat: &Catalog, v: u64| {
            cat.write(move |tx| {
                nodes::insert(
                    tx,
                    Kind::File,
                    &nodes::NewNode {
                        parent: v,
                        name: "a",
                        vault: v,
                        ..Default::default()
                    },
                )?;
                nodes::insert(
                    tx,
                    Kind::Dir,
                    &nodes::NewNode {
                        parent: v,
                        name: "e",
                        vault: v,
                        ..Default::default()
                    },
                )
            })
            .unwrap();
        };
        let (_d0, general, v0) = setup();
        local(&general, v0);
        import_as(
            &general,
            v0,
            &inv,
            &settings(Route::SideTable, Sharing::Shared, 1, 2),
        );
        for sharing in [Sharing::Shared, Sharing::Exclusive] {
            let (_d, cat, v) = setup();
            local(&cat, v);
            assert!(cat.read(move |c| is_fresh(c, v)).unwrap());
            import_as(&cat, v, &inv, &settings(Route::Auto, sharing, 1, 2));
            assert_eq!(dump(&cat), dump(&general));
        }
        assert_eq!(
            sorted_tree(&general, v0),
            vec![
                "a",
                "a~20200101T000000Z",
                "d/",
                "d/f",
                "e/",
                "e~20210101T000000Z"
            ]
        );
    }

    #[test]
    fn an_exclusive_first_import_leaves_the_archive_index_in_place() {
        let (_d, cat, v) = setup();
        let inv = inventory(&[
            ("id-1", "f", "2020-01-01T00:00:00Z"),
            ("id-1", "f", "2020-01-01T00:00:00Z"),
            ("id-2", "g", "2020-01-01T00:00:00Z"),
        ]);
        let r = import(&cat, v, inv.as_bytes(), None).unwrap();
        assert_eq!(
            (r.archives, r.added),
            (3, 2),
            "an archive listed twice is placed once"
        );
        cat.read(move |c| {
            let plan: String = c.query_row(
                "EXPLAIN QUERY PLAN SELECT 1 FROM nodes WHERE archive_key = 1 AND archive_id = 'x'",
                [],
                |r| r.get(3),
            )?;
            assert!(plan.contains("nodes_by_archive"), "{plan}");
            assert!(nodes::archive_in_use(c, v, "id-2")?);
            assert!(!is_fresh(c, v)?);
            Ok(())
        })
        .unwrap();
    }

    #[test]
    fn archives_below_are_found_at_any_depth() {
        let (_d, cat, v) = setup();
        assert!(!cat.read(move |c| nodes::has_archives_below(c, v)).unwrap());
        let inv = inventory(&[("deep", "a/b/c/f", "2020-01-01T00:00:00Z")]);
        import_shared(&cat, v, inv.as_bytes(), None).unwrap();
        assert!(cat.read(move |c| nodes::has_archives_below(c, v)).unwrap());
        let a = cat
            .read(move |c| nodes::lookup(c, v, "a"))
            .unwrap()
            .unwrap();
        assert!(cat
            .read(move |c| nodes::has_archives_below(c, a.ino))
            .unwrap());
        assert!(!cat.read(move |c| is_fresh(c, v)).unwrap());
    }
}
