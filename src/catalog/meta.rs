//! Named settings kept in the catalog's `meta` table: the mount's `--cache-size`, for
//! commands that read the catalog without the mount's options (`glacierfs status`), when
//! this mount last deleted each vault, so a vault listing older than the delete does not bring
//! the vault back, and how many opens of cold files by programs that only peek (file
//! managers, thumbnailers, indexers) the mount refused to start a retrieval for, per program,
//! so `glacierfs status` can say why a preview stayed empty without asking the daemon.

use rusqlite::{params, Connection, OptionalExtension};

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

/// Keys of the refused-peek counters: this prefix, then the program's name. Program names may
/// hold any character, so the counters are found by range (`;` follows `:`), not with LIKE.
const PEEKS: &str = "refused_peeks:";
const PEEKS_END: &str = "refused_peeks;";

/// Adds `counts` (program, peeks refused since the last call) to the mount's counters.
pub fn add_refused_peeks(conn: &Connection, counts: &[(String, u64)]) -> Result<(), CatalogError> {
    let mut stmt = conn.prepare_cached(
        "INSERT INTO meta (key, value) VALUES (?1, ?2) ON CONFLICT (key) DO UPDATE \
         SET value = CAST(CAST(value AS INTEGER) + CAST(excluded.value AS INTEGER) AS TEXT)",
    )?;
    for (program, n) in counts {
        stmt.execute(params![format!("{PEEKS}{program}"), n.to_string()])?;
    }
    Ok(())
}

/// Forgets the counters: a mount counts from its start.
pub fn clear_refused_peeks(conn: &Connection) -> Result<(), CatalogError> {
    conn.execute(
        "DELETE FROM meta WHERE key >= ?1 AND key < ?2",
        [PEEKS, PEEKS_END],
    )?;
    Ok(())
}

/// Opens of cold files refused since the mount started because the program only peeks, per
/// program, most first (then by name). The daemon adds to them about once a second.
pub fn refused_peeks(conn: &Connection) -> Result<Vec<(String, u64)>, CatalogError> {
    let mut stmt =
        conn.prepare_cached("SELECT key, value FROM meta WHERE key >= ?1 AND key < ?2")?;
    let rows = stmt.query_map([PEEKS, PEEKS_END], |r| {
        Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?))
    })?;
    let mut out = Vec::new();
    for row in rows {
        let (key, value) = row?;
        if let (Some(program), Ok(n)) = (key.strip_prefix(PEEKS), value.parse::<u64>()) {
            out.push((program.to_owned(), n));
        }
    }
    out.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn catalog() -> Connection {
        let mut c = Connection::open_in_memory().unwrap();
        super::super::schema::migrate(&mut c).unwrap();
        c
    }

    #[test]
    fn refused_peeks_add_up_per_program_and_clear() {
        let c = catalog();
        assert!(refused_peeks(&c).unwrap().is_empty());
        add_refused_peeks(&c, &[("nautilus".into(), 3), ("tumblerd".into(), 5)]).unwrap();
        add_refused_peeks(&c, &[("nautilus".into(), 4), ("odd%_name".into(), 1)]).unwrap();
        set_cache_size(&c, 7).unwrap();
        assert_eq!(
            refused_peeks(&c).unwrap(),
            vec![
                ("nautilus".to_owned(), 7),
                ("tumblerd".to_owned(), 5),
                ("odd%_name".to_owned(), 1)
            ]
        );
        clear_refused_peeks(&c).unwrap();
        assert!(refused_peeks(&c).unwrap().is_empty());
        assert_eq!(cache_size(&c).unwrap(), Some(7), "other settings stay");
    }
}
