//! Placing new archives as files, in naming order, a chunk of rows per transaction (see
//! [`Settings`]): the directories they need first, then each file under its own name if free,
//! else a collision suffix. Both ways of an import end here.

use std::collections::HashMap;
use std::sync::mpsc::{sync_channel, Receiver, SyncSender};
use std::time::{Duration, Instant};

use rusqlite::{Connection, Transaction, TransactionBehavior};

use super::sort::Staged;
use super::{Settings, SHARED_ROWS};
use crate::catalog::{self, nodes, schema, Catalog, CatalogError, Kind};
use crate::codec::names;

/// Rows read ahead of the placing transaction (see [`place_stream`]), and handed over at a time.
const READ_AHEAD: usize = 16 * READ_BATCH;
const READ_BATCH: usize = 1024;

/// Creates the directories (paths relative to the vault, in order) that new archives need, and
/// returns the ino of each.
pub(super) fn make_dirs(
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
pub(super) enum Dedup {
    /// Ask the catalog (by the archive index) about each row flagged as possibly placed.
    Catalog,
    /// Nothing else writes and the vault had no archive: only this import placed archives, and
    /// the ids of those whose key is listed more than once are kept here.
    Memory(HashMap<i64, Vec<String>>),
}

/// What placing needs besides the rows.
pub(super) struct Place {
    pub(super) dirs: HashMap<String, u64>,
    pub(super) dedup: Dedup,
    /// Place everything in one transaction with a rollback journal ([`in_rollback_journal`]),
    /// dropping the archive index before and building it again after: one sorted build costs
    /// a fraction of a million scattered inserts. Only for [`Sharing::Exclusive`] (nothing
    /// else reads or writes), into a vault with no archive yet; the index is never missing for
    /// anyone, even after a crash, since it goes and comes back in the same transaction.
    pub(super) bulk: bool,
}

/// A row to place, and whether its archive may have a node already (so must be checked).
pub(super) type PlaceRow = (Staged, bool);

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
pub(super) fn place_stream(
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
        if state.place.bulk {
            // The journal mode changes only with no other connection open.
            crate::locks::lock(&catalog.inner.readers).clear();
            return catalog.with_connection(move |conn| {
                in_rollback_journal(conn, move |tx| {
                    tx.execute_batch("DROP INDEX IF EXISTS nodes_by_archive")?;
                    while !state.done {
                        state = place_chunk(tx, vault, state, usize::MAX, Duration::MAX)?;
                    }
                    schema::create_archive_index(tx)?;
                    Ok(state.added)
                })
            });
        }
        while !state.done {
            state = catalog.write(move |tx| place_chunk(tx, vault, state, max_rows, max_hold))?;
        }
        Ok(state.added)
    })
}

/// Runs `f` in one transaction with a rollback journal instead of the write-ahead log, then
/// goes back to the log. Through the log every page is written twice, into the log and then by
/// the checkpoint into the database; a rollback journal takes only the original of each page
/// the transaction changes, and a page beyond the file's old end has none, so the rows of a
/// bulk import are written once. A crash leaves the journal behind, and the next open rolls the
/// database back from it: the import is there whole or not at all, as through the log.
/// The journal mode cannot change while another connection has the database open: then `f`
/// runs through the log as usual.
fn in_rollback_journal<T>(
    conn: &mut Connection,
    f: impl FnOnce(&Transaction<'_>) -> Result<T, CatalogError>,
) -> Result<T, CatalogError> {
    let (was_mode, was_sync): (String, i64) = (
        conn.query_row("PRAGMA journal_mode", [], |r| r.get(0))?,
        conn.query_row("PRAGMA synchronous", [], |r| r.get(0))?,
    );
    let mode: String = conn.query_row("PRAGMA journal_mode = DELETE", [], |r| r.get(0))?;
    if mode != "delete" {
        log::debug!("the catalog stays in journal mode {mode} for the import");
    }
    // NORMAL leaves a rollback journal unsynced at moments a power cut could then damage the
    // database; FULL syncs it before every write that overwrites a page.
    conn.execute_batch("PRAGMA synchronous = FULL")?;
    let result = conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(CatalogError::from)
        .and_then(|tx| {
            let v = f(&tx)?;
            tx.commit()?;
            Ok(v)
        });
    // Back as it was even after a failure: the mount reads beside the writer through the log.
    let back = conn
        .execute_batch(&format!("PRAGMA synchronous = {was_sync}"))
        .and_then(|()| {
            conn.query_row(&format!("PRAGMA journal_mode = {was_mode}"), [], |r| {
                r.get::<_, String>(0)
            })
        });
    match back {
        Ok(mode) if mode == was_mode => {}
        Ok(mode) => log::warn!("the catalog stayed in journal mode {mode} after the import"),
        Err(e) => log::warn!("the catalog's journal mode could not go back to {was_mode}: {e}"),
    }
    result
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
    // Rows not placed yet whose names are not reserved, in order.
    let mut free_names = Vec::with_capacity(ROWS_PER_INSERT);
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
                Dedup::Catalog => {
                    // The catalog answers only for the rows already in it.
                    place_files(tx, vault, &mut free_names, &place.dirs)?;
                    nodes::archive_in_use(tx, vault, &row.archive_id)?
                }
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
            if is_reserved_at_top(&row) {
                place_files(tx, vault, &mut free_names, &place.dirs)?;
                place_file(tx, vault, &row, &place.dirs)?;
            } else {
                free_names.push(row);
                if free_names.len() == ROWS_PER_INSERT {
                    place_files(tx, vault, &mut free_names, &place.dirs)?;
                }
            }
            state.added += 1;
        }
    }
    place_files(tx, vault, &mut free_names, &state.place.dirs)?;
    Ok(state)
}

/// Rows one statement inserts: each statement costs about as much again as the row it
/// inserts (binding, opening and closing its cursors, ending it), and most names are free.
/// The tests' inventories are small: a few rows a statement lets them reach every path.
const ROWS_PER_INSERT: usize = if cfg!(test) { 3 } else { 32 };

/// Places `rows` (none under a reserved name, in naming order) and empties it: a full set in
/// one statement, anything less, and whatever follows a taken name, a row at a time. An
/// `INSERT OR FAIL` stops at the first taken name and keeps the rows before it, so that row
/// takes a suffixed name by [`place_file`] and the others follow it: each row gets the name and
/// the ino it would get placed alone.
fn place_files(
    tx: &Connection,
    vault: u64,
    rows: &mut Vec<Staged>,
    dirs: &HashMap<String, u64>,
) -> Result<(), CatalogError> {
    let mut rest = &rows[..];
    if rest.len() == ROWS_PER_INSERT {
        match insert_files(tx, vault, rest, dirs) {
            Ok(()) => rest = &[],
            Err(CatalogError::Exists) => {
                let placed = usize::try_from(tx.changes()).unwrap_or(usize::MAX);
                let taken = rest.get(placed).ok_or(CatalogError::Exists)?;
                place_file(tx, vault, taken, dirs)?;
                rest = &rest[placed + 1..];
            }
            Err(e) => return Err(e),
        }
    }
    for row in rest {
        place_file(tx, vault, row, dirs)?;
    }
    rows.clear();
    Ok(())
}

/// The columns of an archive's file, in the order [`insert_files`] binds them.
const FILE_COLUMNS: &str = "parent, name, kind, vault, size, mtime_ns, ctime_ns, archive_id, \
    tree_hash, description, created_s, archive_key";
const FILE_VALUES: usize = 12;

/// Inserts [`ROWS_PER_INSERT`] files in one `INSERT OR FAIL`; [`CatalogError::Exists`] when a
/// name is taken, with the rows before it inserted.
fn insert_files(
    tx: &Connection,
    vault: u64,
    rows: &[Staged],
    dirs: &HashMap<String, u64>,
) -> Result<(), CatalogError> {
    static SQL: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    let sql = SQL.get_or_init(|| {
        let row = format!("({})", ["?"; FILE_VALUES].join(", "));
        format!(
            "INSERT OR FAIL INTO nodes ({FILE_COLUMNS}) VALUES {}",
            vec![row; ROWS_PER_INSERT].join(", ")
        )
    });
    let mut stmt = tx.prepare_cached(sql)?;
    for (i, row) in rows.iter().enumerate() {
        let (parent, name) = parent_and_name(vault, row, dirs)?;
        let mtime_ns = row.mtime_s.saturating_mul(1_000_000_000);
        let at = i * FILE_VALUES;
        stmt.raw_bind_parameter(at + 1, parent as i64)?;
        stmt.raw_bind_parameter(at + 2, name)?;
        stmt.raw_bind_parameter(at + 3, Kind::File)?;
        stmt.raw_bind_parameter(at + 4, vault as i64)?;
        stmt.raw_bind_parameter(at + 5, row.size as i64)?;
        stmt.raw_bind_parameter(at + 6, mtime_ns)?;
        stmt.raw_bind_parameter(at + 7, mtime_ns)?;
        stmt.raw_bind_parameter(at + 8, &row.archive_id)?;
        stmt.raw_bind_parameter(at + 9, &row.tree_hash)?;
        stmt.raw_bind_parameter(at + 10, &row.description)?;
        stmt.raw_bind_parameter(at + 11, row.created_s)?;
        stmt.raw_bind_parameter(at + 12, nodes::archive_key(&row.archive_id))?;
    }
    match stmt.raw_execute() {
        Ok(_) => Ok(()),
        Err(rusqlite::Error::SqliteFailure(e, _))
            if e.code == rusqlite::ErrorCode::ConstraintViolation =>
        {
            Err(CatalogError::Exists)
        }
        Err(e) => Err(e.into()),
    }
}

/// Whether a row's name is reserved where it goes (`.jobs` or `.lock` at the vault's top).
fn is_reserved_at_top(row: &Staged) -> bool {
    !row.path.contains('/') && names::is_reserved(&row.path)
}

/// The directory a row goes into, and its name there.
fn parent_and_name<'r>(
    vault: u64,
    row: &'r Staged,
    dirs: &HashMap<String, u64>,
) -> Result<(u64, &'r str), CatalogError> {
    Ok(match row.path.rsplit_once('/') {
        Some((p, n)) => (*dirs.get(p).ok_or(CatalogError::NotFound)?, n),
        None => (vault, row.path.as_str()),
    })
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
    let (parent, name) = parent_and_name(vault, row, dirs)?;
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
