//! Settings of the mount kept in the catalog's `meta` table for commands that read the
//! catalog without the mount's options (`glacierfs status`).

use rusqlite::Connection;

use super::CatalogError;

/// Records the mount's `--cache-size`.
pub fn set_cache_size(tx: &Connection, bytes: u64) -> Result<(), CatalogError> {
    tx.execute(
        "INSERT OR REPLACE INTO meta (key, value) VALUES ('cache_size', ?1)",
        [bytes.to_string()],
    )?;
    Ok(())
}
