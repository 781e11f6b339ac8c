//! Vaults in the catalog: each is a node under the root plus a row of what Glacier last said
//! about it (ARN, inventory date, counts) and what the catalog holds (the merged inventory's
//! date).

use rusqlite::{params, Connection, OptionalExtension, Row};

use super::nodes::{self, Kind, NewNode};
use super::{now_ns, CatalogError, ROOT_INO};
use crate::glacier::VaultDesc;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VaultRow {
    pub ino: u64,
    pub name: String,
    pub arn: Option<String>,
    pub last_inventory_date: Option<String>,
    pub remote_count: Option<u64>,
    pub remote_size: Option<u64>,
    pub inventory_date: Option<String>,
    pub inventory_checked_s: Option<i64>,
    pub state: String,
    /// A vault lock this mount initiated, and why the last lock request failed.
    pub lock_id: Option<String>,
    pub lock_message: Option<String>,
}

const COLUMNS: &str = "ino, name, arn, last_inventory_date, remote_count, remote_size, \
                       inventory_date, inventory_checked_s, state, lock_id, lock_message";

fn from_row(r: &Row<'_>) -> rusqlite::Result<VaultRow> {
    Ok(VaultRow {
        ino: r.get::<_, i64>(0)? as u64,
        name: r.get(1)?,
        arn: r.get(2)?,
        last_inventory_date: r.get(3)?,
        remote_count: r.get::<_, Option<i64>>(4)?.map(|v| v as u64),
        remote_size: r.get::<_, Option<i64>>(5)?.map(|v| v as u64),
        inventory_date: r.get(6)?,
        inventory_checked_s: r.get(7)?,
        state: r.get(8)?,
        lock_id: r.get(9)?,
        lock_message: r.get(10)?,
    })
}

pub fn by_ino(conn: &Connection, ino: u64) -> Result<Option<VaultRow>, CatalogError> {
    let mut stmt = conn.prepare_cached(&format!("SELECT {COLUMNS} FROM vaults WHERE ino = ?1"))?;
    Ok(stmt.query_row([ino as i64], from_row).optional()?)
}

pub fn by_name(conn: &Connection, name: &str) -> Result<Option<VaultRow>, CatalogError> {
    let mut stmt = conn.prepare_cached(&format!("SELECT {COLUMNS} FROM vaults WHERE name = ?1"))?;
    Ok(stmt.query_row([name], from_row).optional()?)
}

pub fn all(conn: &Connection) -> Result<Vec<VaultRow>, CatalogError> {
    let mut stmt = conn.prepare_cached(&format!("SELECT {COLUMNS} FROM vaults ORDER BY name"))?;
    let rows = stmt.query_map([], from_row)?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// Adds a vault (node and row) in `state`, or returns the existing one.
pub fn ensure(conn: &Connection, name: &str, state: &str) -> Result<VaultRow, CatalogError> {
    if let Some(v) = by_name(conn, name)? {
        return Ok(v);
    }
    // Glacier allows a vault named `.jobs`, which the root's control file takes: its directory
    // gets a suffix no vault name can have, so both stay reachable. The row keeps the real name.
    let shown = if crate::codec::names::is_reserved(name) {
        format!("{name}~vault")
    } else {
        name.to_owned()
    };
    let ino = nodes::insert(
        conn,
        Kind::Vault,
        &NewNode {
            parent: ROOT_INO,
            name: &shown,
            vault: 0,
            mtime_ns: now_ns(),
            ..Default::default()
        },
    )?;
    conn.execute(
        "INSERT INTO vaults (ino, name, state) VALUES (?1, ?2, ?3)",
        params![ino as i64, name, state],
    )?;
    by_ino(conn, ino)?.ok_or(CatalogError::NotFound)
}

/// Records what ListVaults or DescribeVault said.
pub fn record_remote(conn: &Connection, d: &VaultDesc) -> Result<VaultRow, CatalogError> {
    let v = ensure(conn, &d.name, "present")?;
    conn.execute(
        "UPDATE vaults SET arn = ?2, remote_created = ?3, last_inventory_date = ?4, \
         remote_count = ?5, remote_size = ?6, \
         state = CASE state WHEN 'creating' THEN 'present' ELSE state END WHERE ino = ?1",
        params![
            v.ino as i64,
            d.arn,
            d.creation_date,
            d.last_inventory_date,
            d.number_of_archives as i64,
            d.size_in_bytes as i64
        ],
    )?;
    by_ino(conn, v.ino)?.ok_or(CatalogError::NotFound)
}

pub fn set_state(conn: &Connection, ino: u64, state: &str) -> Result<(), CatalogError> {
    conn.execute(
        "UPDATE vaults SET state = ?2 WHERE ino = ?1",
        params![ino as i64, state],
    )?;
    Ok(())
}

pub fn set_checked(conn: &Connection, ino: u64, secs: i64) -> Result<(), CatalogError> {
    conn.execute(
        "UPDATE vaults SET inventory_checked_s = ?2 WHERE ino = ?1",
        params![ino as i64, secs],
    )?;
    Ok(())
}

pub fn set_inventory_date(conn: &Connection, ino: u64, date: &str) -> Result<(), CatalogError> {
    conn.execute(
        "UPDATE vaults SET inventory_date = ?2 WHERE ino = ?1",
        params![ino as i64, date],
    )?;
    Ok(())
}

/// A vault being made (again) is `present` once Glacier has it, unless the user deleted it
/// meanwhile (`rmdir` after the `mkdir` left it `deleting`).
pub fn settle_created(conn: &Connection, ino: u64) -> Result<(), CatalogError> {
    conn.execute(
        "UPDATE vaults SET state = 'present' WHERE ino = ?1 AND state = 'creating'",
        [ino as i64],
    )?;
    Ok(())
}

/// Records a refused DeleteVault where `.jobs` shows it: one row per vault, whose message is
/// the latest refusal.
pub fn record_delete_failure(
    conn: &Connection,
    ino: u64,
    message: &str,
) -> Result<(), CatalogError> {
    conn.execute(
        "INSERT INTO jobs (job_id, vault, action, status, message, created_s)
         VALUES (?1, ?2, 'DeleteVault', 'InProgress', ?3, ?4)
         ON CONFLICT(job_id) DO UPDATE SET message = excluded.message",
        params![
            format!("delete-vault-{ino}"),
            ino as i64,
            message,
            super::now_s()
        ],
    )?;
    Ok(())
}

/// Records how a vault-lock command ended: a lock id it produced (kept only when `keep_id`),
/// and the refusal message, if any (cleared by a success).
pub fn record_lock_result(
    conn: &Connection,
    ino: u64,
    lock_id: Option<&str>,
    keep_id: bool,
    message: Option<&str>,
) -> Result<(), CatalogError> {
    conn.execute(
        "UPDATE vaults SET lock_id = CASE WHEN ?2 THEN ?3 ELSE lock_id END, \
         lock_message = ?4 WHERE ino = ?1",
        params![ino as i64, keep_id && lock_id.is_some(), lock_id, message],
    )?;
    Ok(())
}

/// Forgets a vault entirely: its row, its subtree, its tombstones and jobs.
pub fn forget(conn: &Connection, ino: u64) -> Result<(), CatalogError> {
    conn.execute("DELETE FROM nodes WHERE vault = ?1", [ino as i64])?;
    conn.execute("DELETE FROM nodes WHERE ino = ?1", [ino as i64])?;
    conn.execute("DELETE FROM vaults WHERE ino = ?1", [ino as i64])?;
    conn.execute("DELETE FROM tombstones WHERE vault = ?1", [ino as i64])?;
    conn.execute("DELETE FROM jobs WHERE vault = ?1", [ino as i64])?;
    Ok(())
}

/// Forgets a vault this mount deleted, and notes when, so that a vault listing asked for
/// before the delete and answered after it does not bring the vault back.
pub fn forget_deleted(conn: &Connection, ino: u64, name: &str) -> Result<(), CatalogError> {
    forget(conn, ino)?;
    super::meta::set_vault_deleted(conn, name, now_ns())
}

/// Takes in a ListVaults answer asked for at `asked_ns`: records every vault it shows, except
/// one this mount deleted after the question went out (the answer predates the delete), and
/// forgets vaults known upstream that it no longer shows. Returns the entries forgotten, as
/// (parent, shown name), for the kernel to drop.
pub fn apply_listing(
    conn: &Connection,
    list: &[VaultDesc],
    asked_ns: i64,
) -> Result<Vec<(u64, String)>, CatalogError> {
    let names: std::collections::HashSet<&str> = list.iter().map(|v| v.name.as_str()).collect();
    for v in list {
        if by_name(conn, &v.name)?.is_none() && deleted_since(conn, &v.name, asked_ns)? {
            continue;
        }
        record_remote(conn, v)?;
    }
    let mut gone = Vec::new();
    for v in all(conn)? {
        // Only vaults known to exist upstream can vanish; ones being created or deleted by
        // this mount are its own business.
        if v.state == "present" && v.arn.is_some() && !names.contains(v.name.as_str()) {
            log::info!("vault {} is gone upstream", v.name);
            if let Some(n) = nodes::get(conn, v.ino)? {
                gone.push((n.parent, n.name));
            }
            forget(conn, v.ino)?;
        }
    }
    Ok(gone)
}

fn deleted_since(conn: &Connection, name: &str, since_ns: i64) -> Result<bool, CatalogError> {
    Ok(super::meta::vault_deleted_at(conn, name)?.is_some_and(|t| t >= since_ns))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::Catalog;

    fn desc(name: &str) -> VaultDesc {
        VaultDesc {
            name: name.into(),
            arn: Some(format!("arn:aws:glacier:us-east-1:0:vaults/{name}")),
            ..VaultDesc::default()
        }
    }

    #[test]
    fn a_vault_made_again_is_present_unless_deleted_meanwhile() {
        let dir = tempfile::tempdir().unwrap();
        let cat = Catalog::open(dir.path()).unwrap();
        let ino = cat
            .write(|tx| Ok(ensure(tx, "again", "creating")?.ino))
            .unwrap();
        let state = |cat: &Catalog| cat.read(move |c| by_ino(c, ino)).unwrap().unwrap().state;
        cat.write(move |tx| settle_created(tx, ino)).unwrap();
        assert_eq!(state(&cat), "present");
        cat.write(move |tx| set_state(tx, ino, "deleting")).unwrap();
        cat.write(move |tx| settle_created(tx, ino)).unwrap();
        assert_eq!(state(&cat), "deleting");
    }

    #[test]
    fn a_listing_older_than_a_delete_does_not_bring_the_vault_back() {
        let dir = tempfile::tempdir().unwrap();
        let cat = Catalog::open(dir.path()).unwrap();
        let asked_before = now_ns() - 1;
        let ino = cat
            .write(|tx| Ok(ensure(tx, "fresh", "present")?.ino))
            .unwrap();
        cat.write(move |tx| forget_deleted(tx, ino, "fresh"))
            .unwrap();
        // The listing was asked for before the delete: it still shows the vault.
        cat.write(move |tx| apply_listing(tx, &[desc("fresh")], asked_before))
            .unwrap();
        assert_eq!(cat.read(|c| by_name(c, "fresh")).unwrap(), None);
        // A listing asked for after the delete that still shows it (made again elsewhere) does.
        let asked_after = now_ns() + 1;
        cat.write(move |tx| apply_listing(tx, &[desc("fresh")], asked_after))
            .unwrap();
        assert!(cat.read(|c| by_name(c, "fresh")).unwrap().is_some());
    }
}
