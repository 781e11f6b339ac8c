//! The catalog's schema and its migrations. Each migration moves the schema up one version and
//! runs in the same transaction as the version bump, so a crash leaves either the old schema or
//! the new one.

use rusqlite::{Connection, Transaction};

use super::CatalogError;

/// Inode of the root directory, by FUSE convention.
pub const ROOT_INO: u64 = 1;

const MIGRATIONS: &[&str] = &[
    // 1: the tree, vaults, tombstones, jobs, intents and the inventory side table.
    r#"
    CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL) WITHOUT ROWID;

    -- Every directory entry: the root (ino 1), vaults (kind 1), directories (2), files (3).
    CREATE TABLE nodes (
        -- AUTOINCREMENT: an inode number is never reused, since the kernel may still hold it.
        ino         INTEGER PRIMARY KEY AUTOINCREMENT,
        parent      INTEGER NOT NULL,
        name        TEXT NOT NULL,
        kind        INTEGER NOT NULL,
        vault       INTEGER NOT NULL,      -- ino of the vault this node is in; 0 for root and vaults
        size        INTEGER NOT NULL DEFAULT 0,
        mtime_ns    INTEGER NOT NULL,
        ctime_ns    INTEGER NOT NULL,
        mode        INTEGER,               -- NULL: the default for the kind
        uid         INTEGER,
        gid         INTEGER,
        archive_id  TEXT,                  -- NULL: local only (empty file, directory, staged)
        archive_key INTEGER,               -- nodes::archive_key(archive_id): a small index key
        tree_hash   TEXT,
        description TEXT,
        created_s   INTEGER                -- the archive's CreationDate, Unix seconds
    );
    CREATE UNIQUE INDEX nodes_by_name ON nodes(parent, name);
    -- readdir pages through children by ino (keyset cookies, never OFFSET).
    CREATE INDEX nodes_by_parent ON nodes(parent, ino);
    -- Archive ids are 138 random characters; indexing a 64-bit hash of them keeps the index a
    -- tenth of the size, so a million-archive import stays in the page cache.
    CREATE INDEX nodes_by_archive ON nodes(archive_key) WHERE archive_key IS NOT NULL;

    CREATE TABLE vaults (
        ino                 INTEGER PRIMARY KEY,   -- the vault's directory node
        name                TEXT NOT NULL UNIQUE,
        arn                 TEXT,
        remote_created      TEXT,
        last_inventory_date TEXT,                  -- as DescribeVault/ListVaults last showed it
        remote_count        INTEGER,
        remote_size         INTEGER,
        inventory_date      TEXT,                  -- the inventory merged into the catalog
        inventory_checked_s INTEGER,               -- when DescribeVault was last asked
        state               TEXT NOT NULL DEFAULT 'present'  -- present | creating | deleting
    );

    -- Archives deleted locally: an inventory older than the delete must not bring them back.
    CREATE TABLE tombstones (
        vault      INTEGER NOT NULL,
        archive_id TEXT NOT NULL,
        archive_key INTEGER NOT NULL,
        deleted_s  INTEGER NOT NULL,
        PRIMARY KEY (vault, archive_id)
    ) WITHOUT ROWID;

    -- Glacier jobs this catalog knows of; job ids outlive mounts so finished output is reused.
    CREATE TABLE jobs (
        job_id      TEXT PRIMARY KEY,
        vault       INTEGER NOT NULL,
        action      TEXT NOT NULL,                 -- ArchiveRetrieval | InventoryRetrieval
        archive_id  TEXT,
        tier        TEXT,
        status      TEXT NOT NULL,                 -- InProgress | Succeeded | Failed
        message     TEXT,
        created_s   INTEGER NOT NULL,
        completed_s INTEGER,
        size        INTEGER,
        bytes_done  INTEGER NOT NULL DEFAULT 0,
        auto        INTEGER NOT NULL DEFAULT 0,    -- started by an open (counts against the budget)
        ino         INTEGER                        -- the file a retrieval is for
    ) WITHOUT ROWID;
    CREATE INDEX jobs_by_archive ON jobs(archive_id) WHERE archive_id IS NOT NULL;

    -- Creating calls recorded before they are made, and settled after (ARCHITECTURE.md, "The intents journal").
    CREATE TABLE intents (
        id        INTEGER PRIMARY KEY,
        kind      TEXT NOT NULL,
        vault     INTEGER NOT NULL,
        ino       INTEGER,
        payload   TEXT NOT NULL DEFAULT '{}',
        state     TEXT NOT NULL DEFAULT 'open',    -- open | done | unconfirmed | failed
        message   TEXT,
        created_s INTEGER NOT NULL,
        updated_s INTEGER NOT NULL
    );
    CREATE INDEX intents_open ON intents(state, kind);

    -- An inventory being imported: filled by the parser, then merged into nodes in chunks.
    CREATE TABLE inventory_import (
        seq          INTEGER PRIMARY KEY,
        vault        INTEGER NOT NULL,
        archive_id   TEXT NOT NULL,
        archive_key  INTEGER NOT NULL,
        description  TEXT NOT NULL,
        created_s    INTEGER NOT NULL,
        size         INTEGER NOT NULL,
        tree_hash    TEXT NOT NULL,
        path         TEXT NOT NULL,                -- sanitised, '/'-joined
        mtime_s      INTEGER NOT NULL
    );
    "#,
    // 2: local data and write-back: staged content, uploads in flight, deletes queued.
    r#"
    -- 1 when <cache>/data/<ino> holds the file's whole current content.
    ALTER TABLE nodes ADD COLUMN local INTEGER NOT NULL DEFAULT 0;
    -- Generation of staged content not yet in Glacier; 0 when the archive is current.
    ALTER TABLE nodes ADD COLUMN dirty INTEGER NOT NULL DEFAULT 0;
    -- When the last writer closed the file (write-back starts a delay after it).
    ALTER TABLE nodes ADD COLUMN closed_ns INTEGER;
    CREATE INDEX nodes_dirty ON nodes(dirty) WHERE dirty > 0;
    -- When cached data was last read; NULL: retrieved and not read yet (never evicted).
    ALTER TABLE nodes ADD COLUMN read_ns INTEGER;
    -- Vault lock: the id of a lock this mount initiated, and why the last request failed.
    ALTER TABLE vaults ADD COLUMN lock_id TEXT;
    ALTER TABLE vaults ADD COLUMN lock_message TEXT;
    CREATE INDEX nodes_cached ON nodes(read_ns) WHERE local = 1 AND dirty = 0;

    -- Downloads of retrieval-job output: how much of <cache>/data/<ino>.part is verified, and
    -- the 1 MiB leaf hashes of that prefix, so a restart resumes and still checks the whole.
    CREATE TABLE downloads (
        ino         INTEGER PRIMARY KEY,
        job_id      TEXT NOT NULL,
        archive_id  TEXT NOT NULL,
        vault       INTEGER NOT NULL,
        size        INTEGER NOT NULL,
        verified    INTEGER NOT NULL DEFAULT 0,
        leaves      BLOB NOT NULL DEFAULT x'',
        attempts    INTEGER NOT NULL DEFAULT 0,
        message     TEXT
    );

    -- One row per upload in progress: the intent of ARCHITECTURE.md's journal, updated around every
    -- creating call, so a restart knows exactly where each upload stands.
    CREATE TABLE uploads (
        ino          INTEGER PRIMARY KEY,
        gen          INTEGER NOT NULL,             -- the dirty generation being uploaded
        vault        INTEGER NOT NULL,
        snapshot     TEXT NOT NULL,                -- frozen copy, relative to the cache dir
        size         INTEGER NOT NULL,
        description  TEXT NOT NULL,
        mtime_ns     INTEGER NOT NULL,
        part_size    INTEGER,
        upload_id    TEXT,
        tree_hash    TEXT,
        archive_id   TEXT,            -- once the archive exists, before the node records it
        state        TEXT NOT NULL,   -- queued | single | initiating | parts | completing | created
        message      TEXT,
        bytes_done   INTEGER NOT NULL DEFAULT 0,
        attempts     INTEGER NOT NULL DEFAULT 0,
        started_s    INTEGER NOT NULL
    );

    -- Archives (and abandoned multipart uploads) to delete, queued and retried until done.
    CREATE TABLE deletes (
        id          INTEGER PRIMARY KEY,
        vault       INTEGER NOT NULL,
        archive_id  TEXT,
        upload_id   TEXT,
        path        TEXT,
        not_before_ns INTEGER NOT NULL,
        -- Wait until this node has no staged content: the replacing version must be safe first.
        after_ino   INTEGER,
        attempts    INTEGER NOT NULL DEFAULT 0,
        message     TEXT,
        created_s   INTEGER NOT NULL
    );

    -- Uploads whose outcome is unknown (an UploadArchive cut off before its reply, a Complete
    -- too old to repeat). The first inventory dated after one settles it: a matching archive
    -- is adopted or, if the file went up again meanwhile, deleted as a duplicate.
    CREATE TABLE unconfirmed (
        id          INTEGER PRIMARY KEY,
        vault       INTEGER NOT NULL,
        ino         INTEGER,
        description TEXT NOT NULL,
        size        INTEGER NOT NULL,
        tree_hash   TEXT NOT NULL,
        created_s   INTEGER NOT NULL
    );
    "#,
    // 3: why glacierfs marked a job Failed, as a column of its own. It used to be told by the
    // start of the message (which stays the human text): existing rows are filled from it.
    r#"
    ALTER TABLE jobs ADD COLUMN cause TEXT;        -- corrupt | refused; NULL: not ours to say
    UPDATE jobs SET cause = 'refused'
        WHERE status = 'Failed'
        AND substr(message, 1, 31) = 'Glacier refused the retrieval: ';
    UPDATE jobs SET cause = 'corrupt'
        WHERE status = 'Failed'
        AND instr(message, 'retrieved data does not match the archive''s tree hash') > 0;
    "#,
    // 4: symlinks (kind 4) and special files (kind 5: fifos, sockets, devices), times apart,
    // and directory link counts.
    r#"
    ALTER TABLE nodes ADD COLUMN target BLOB;       -- a symlink's target, raw bytes
    ALTER TABLE nodes ADD COLUMN rdev INTEGER;      -- a device node's number, else NULL
    ALTER TABLE nodes ADD COLUMN atime_ns INTEGER;  -- NULL: equal to mtime_ns
    -- Directories (vaults, for the root) directly inside: a directory's link count is 2 plus
    -- this. Counting children on every getattr would make `ls -l` of a large directory pay a
    -- scan per entry; triggers keep the count instead, so every writer (the file system, an
    -- inventory merge, a restore) keeps it right without knowing about it.
    ALTER TABLE nodes ADD COLUMN subdirs INTEGER NOT NULL DEFAULT 0;
    UPDATE nodes SET subdirs = (SELECT COUNT(*) FROM nodes c
        WHERE c.parent = nodes.ino AND c.ino != nodes.ino AND c.kind IN (1, 2))
        WHERE kind IN (0, 1, 2);
    CREATE TRIGGER nodes_subdir_added AFTER INSERT ON nodes
        WHEN NEW.kind IN (1, 2) AND NEW.parent != NEW.ino
    BEGIN
        UPDATE nodes SET subdirs = subdirs + 1 WHERE ino = NEW.parent;
        -- Its own count too, for a writer that inserts children before their parent.
        UPDATE nodes SET subdirs = (SELECT COUNT(*) FROM nodes c
            WHERE c.parent = NEW.ino AND c.ino != NEW.ino AND c.kind IN (1, 2))
            WHERE ino = NEW.ino;
    END;
    CREATE TRIGGER nodes_subdir_removed AFTER DELETE ON nodes
        WHEN OLD.kind IN (1, 2) AND OLD.parent != OLD.ino
    BEGIN
        UPDATE nodes SET subdirs = subdirs - 1 WHERE ino = OLD.parent;
    END;
    CREATE TRIGGER nodes_subdir_moved AFTER UPDATE OF parent, kind ON nodes
        WHEN (OLD.kind IN (1, 2) OR NEW.kind IN (1, 2)) AND OLD.ino != OLD.parent
    BEGIN
        UPDATE nodes SET subdirs = subdirs - (OLD.kind IN (1, 2)) WHERE ino = OLD.parent;
        UPDATE nodes SET subdirs = subdirs + (NEW.kind IN (1, 2)) WHERE ino = NEW.parent;
    END;
    "#,
    // 5: namespace snapshots (codec::snapshot): the archives that carry each vault's tree, the
    // upload journal of the ones this catalog takes, and the restore of one.
    r#"
    CREATE TABLE snapshots (
        id          INTEGER PRIMARY KEY,
        vault       INTEGER NOT NULL,
        description TEXT NOT NULL,
        taken_s     INTEGER NOT NULL,
        origin      TEXT NOT NULL,             -- taken (by this catalog) | listed (an inventory's)
        state       TEXT NOT NULL,             -- uploading | confirmed | deleting | gone
        step        TEXT,                      -- while uploading: single | initiating | parts | completing
        content     TEXT,                      -- SHA-256 of the entries taken: unchanged, none is due
        file        TEXT,                      -- the encoded snapshot, relative to the cache dir
        size        INTEGER NOT NULL DEFAULT 0,
        tree_hash   TEXT,
        archive_id  TEXT,
        upload_id   TEXT,
        part_size   INTEGER,
        message     TEXT,
        restore     TEXT,                      -- NULL | requested | retrieving | retrieved | applied | failed
        tier        TEXT,
        job_id      TEXT,
        verified    INTEGER NOT NULL DEFAULT 0,
        leaves      BLOB NOT NULL DEFAULT x'',
        applied_s   INTEGER
    );
    CREATE INDEX snapshots_by_vault ON snapshots(vault, taken_s);
    "#,
    // 6: the write-back queue asks for the staged files closed before a time on every close,
    // which without this read every staged file: a copy of thousands of files slowed down
    // with each file it staged (`uploads::due`).
    r#"
    CREATE INDEX nodes_due ON nodes(closed_ns) WHERE dirty > 0;
    "#,
    // 7: an inventory's new archives are checked against the uploads of unknown outcome
    // (catalog::inventory::reconcile), one lookup per archive: keep that a lookup.
    r#"
    CREATE INDEX unconfirmed_by_description ON unconfirmed(vault, description);
    "#,
];

/// The schema version this build writes.
pub fn current_version() -> u32 {
    MIGRATIONS.len() as u32
}

/// Brings the catalog up to [`current_version`]. A catalog from a newer glacierfs is refused
/// rather than guessed at.
pub fn migrate(conn: &mut Connection) -> Result<(), CatalogError> {
    let version: u32 = conn.query_row("PRAGMA user_version", [], |r| r.get(0))?;
    if version > current_version() {
        return Err(CatalogError::TooNew {
            found: version,
            supported: current_version(),
        });
    }
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(version as usize) {
        let tx = conn.transaction()?;
        tx.execute_batch(sql)?;
        if i == 0 {
            seed_root(&tx)?;
        }
        tx.pragma_update(None, "user_version", i as u32 + 1)?;
        tx.commit()?;
    }
    Ok(())
}

/// The archive index exactly as migration 1 creates it, for an import that drops it and builds
/// it again in one sorted pass (see `inventory::merge`).
const ARCHIVE_INDEX: &str =
    "CREATE INDEX nodes_by_archive ON nodes(archive_key) WHERE archive_key IS NOT NULL;";

/// Creates the archive index (after it was dropped in the same transaction).
pub fn create_archive_index(tx: &Connection) -> Result<(), CatalogError> {
    tx.execute_batch(ARCHIVE_INDEX)?;
    Ok(())
}

fn seed_root(tx: &Transaction<'_>) -> Result<(), CatalogError> {
    let now = super::now_ns();
    tx.execute(
        "INSERT INTO nodes (ino, parent, name, kind, vault, mtime_ns, ctime_ns)
         VALUES (?1, ?1, '', 0, 0, ?2, ?2)",
        rusqlite::params![ROOT_INO as i64, now],
    )?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn index_sql(conn: &Connection) -> String {
        conn.query_row(
            "SELECT sql FROM sqlite_schema WHERE name = 'nodes_by_archive'",
            [],
            |r| r.get(0),
        )
        .unwrap()
    }

    #[test]
    fn the_rebuilt_archive_index_is_the_migrated_one() {
        assert!(
            MIGRATIONS[0].contains(ARCHIVE_INDEX),
            "migration 1 defines it"
        );
        let mut conn = Connection::open_in_memory().unwrap();
        migrate(&mut conn).unwrap();
        let migrated = index_sql(&conn);
        conn.execute_batch("DROP INDEX nodes_by_archive").unwrap();
        create_archive_index(&conn).unwrap();
        assert_eq!(index_sql(&conn), migrated);
    }

    #[test]
    fn migration_3_reads_the_cause_off_the_message() {
        let mut conn = Connection::open_in_memory().unwrap();
        for sql in &MIGRATIONS[..2] {
            conn.execute_batch(sql).unwrap();
        }
        conn.pragma_update(None, "user_version", 2).unwrap();
        let row = |id: &str, status: &str, message: &str| {
            conn.execute(
                "INSERT INTO jobs (job_id, vault, action, status, message, created_s) \
                 VALUES (?1, 2, 'ArchiveRetrieval', ?2, ?3, 0)",
                rusqlite::params![id, status, message],
            )
            .unwrap();
        };
        row(
            "refused-3-9",
            "Failed",
            "Glacier refused the retrieval: InitiateJob: PolicyEnforced: no",
        );
        row(
            "corrupt",
            "Failed",
            "retrieved data does not match the archive's tree hash: job x, bytes 0-9",
        );
        row("glacier", "Failed", "Glacier's own failure");
        row(
            "running",
            "InProgress",
            "Glacier refused the retrieval: old text",
        );
        migrate(&mut conn).unwrap();
        let cause = |id: &str| -> Option<String> {
            conn.query_row("SELECT cause FROM jobs WHERE job_id = ?1", [id], |r| {
                r.get(0)
            })
            .unwrap()
        };
        assert_eq!(cause("refused-3-9").as_deref(), Some("refused"));
        assert_eq!(cause("corrupt").as_deref(), Some("corrupt"));
        assert_eq!(cause("glacier"), None);
        assert_eq!(cause("running"), None);
    }

    #[test]
    fn migration_4_counts_subdirectories_and_the_triggers_keep_the_count() {
        let mut conn = Connection::open_in_memory().unwrap();
        let tx = conn.transaction().unwrap();
        for sql in &MIGRATIONS[..3] {
            tx.execute_batch(sql).unwrap();
        }
        seed_root(&tx).unwrap();
        tx.pragma_update(None, "user_version", 3).unwrap();
        tx.commit().unwrap();
        let add = |conn: &Connection, ino: i64, parent: i64, kind: i64| {
            conn.execute(
                "INSERT INTO nodes (ino, parent, name, kind, vault, mtime_ns, ctime_ns) \
                 VALUES (?1, ?2, ?1, ?3, 2, 0, 0)",
                rusqlite::params![ino, parent, kind],
            )
            .unwrap();
        };
        // Before the migration: a vault (2) with two directories and a file.
        add(&conn, 2, 1, 1);
        add(&conn, 3, 2, 2);
        add(&conn, 4, 2, 2);
        add(&conn, 5, 2, 3);
        migrate(&mut conn).unwrap();
        let subdirs = |conn: &Connection, ino: i64| -> i64 {
            conn.query_row("SELECT subdirs FROM nodes WHERE ino = ?1", [ino], |r| {
                r.get(0)
            })
            .unwrap()
        };
        assert_eq!((subdirs(&conn, 1), subdirs(&conn, 2)), (1, 2));
        // Symlinks and special files are not directories.
        add(&conn, 6, 3, 4);
        add(&conn, 7, 3, 5);
        add(&conn, 8, 3, 2);
        assert_eq!(subdirs(&conn, 3), 1);
        // A move takes the count from one parent to the other.
        conn.execute("UPDATE nodes SET parent = 4 WHERE ino = 8", [])
            .unwrap();
        assert_eq!((subdirs(&conn, 3), subdirs(&conn, 4)), (0, 1));
        conn.execute("DELETE FROM nodes WHERE ino = 8", []).unwrap();
        assert_eq!(subdirs(&conn, 4), 0);
        // A child inserted before its parent is counted when the parent arrives.
        add(&conn, 10, 9, 2);
        add(&conn, 9, 2, 2);
        assert_eq!((subdirs(&conn, 9), subdirs(&conn, 2)), (1, 3));
    }
}
