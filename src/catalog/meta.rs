//! Named settings kept in the catalog's `meta` table: the mount's `--cache-size`, for
//! commands that read the catalog without the mount's options (`glacierfs status`), and when
//! this mount last deleted each vault, so a vault listing older than the delete does not bring
//! the vault back.

use rusqlite::{Connection, OptionalExtension};

use super::CatalogError;

fn get(conn: &Connection, key: &str) -> Result<Option<String>, CatalogError> {
    Ok(conn
        .query_row("SELECT value FROM meta WHERE key = ?1", [key], |r| r.get(0))
        .optional()?)
}

fn set(conn: &Connection, key: &str, value: &str) -> Result<(), CatalogError> {
    conn.execute(
        "INSERT OR REPLACE INTO meta (key, value) VALUES (?1, ?2)",
        [key, value],
    )?;
    Ok(())
}

/// Records the mount's `--cache-size`.
pub fn set_cache_size(tx: &Connection, bytes: u64) -> Result<(), CatalogError> {
    set(tx, "cache_size", &bytes.to_string())
}

/// The `--cache-size` the mount last recorded, if any (a `glacierfs status` beside it shows it).
pub fn cache_size(conn: &Connection) -> Result<Option<u64>, CatalogError> {
    Ok(get(conn, "cache_size")?.and_then(|s| s.parse().ok()))
}

fn deleted_key(vault: &str) -> String {
    format!("deleted_vault:{vault}")
}

/// Notes that this mount deleted `vault` at `at_ns`.
pub fn set_vault_deleted(conn: &Connection, vault: &str, at_ns: i64) -> Result<(), CatalogError> {
    set(conn, &deleted_key(vault), &at_ns.to_string())
}

/// When this mount last deleted `vault`, if it ever did.
pub fn vault_deleted_at(conn: &Connection, vault: &str) -> Result<Option<i64>, CatalogError> {
    Ok(get(conn, &deleted_key(vault))?.and_then(|s| s.parse().ok()))
}
