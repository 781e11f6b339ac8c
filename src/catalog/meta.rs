//! Named settings kept in the catalog's `meta` table: the mount's `--cache-size`, for
//! commands that read the catalog without the mount's options (`glacierfs status`), when
//! this mount last deleted each vault, so a vault listing older than the delete does not bring
//! the vault back, and how many opens of cold files by programs that only peek (file
//! managers, thumbnailers, indexers) the mount refused to start a retrieval for, per program,
//! so `glacierfs status` can say why a preview stayed empty without asking the daemon; the
//! account's limits (data-retrieval policy, provisioned capacity) as the daemon last read them,
//! so `status` shows them without the network; and the vault attributes the mount read from
//! Glacier (tags, access policy, notifications) with when, so a repeated read within the poll
//! interval costs no call, and which of them the endpoint does not support; and when this
//! catalog first saw each vault with no snapshot hold a tree, so that a vault's first snapshot
//! comes one interval later even when the mount restarts more often than that.

use rusqlite::{params, Connection, OptionalExtension};

use super::CatalogError;
use crate::glacier::{CapacityUnit, RetrievalPolicy};

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

/// When this catalog first saw `vault`, with no snapshot yet, hold a tree (Unix seconds).
pub fn first_tree_seen(conn: &Connection, vault: u64) -> Result<Option<i64>, CatalogError> {
    Ok(get(conn, &format!("first_tree_seen:{vault}"))?.and_then(|s| s.parse().ok()))
}

/// Records when this catalog first saw `vault` hold a tree.
pub fn set_first_tree_seen(tx: &Connection, vault: u64, at_s: i64) -> Result<(), CatalogError> {
    set(tx, &format!("first_tree_seen:{vault}"), &at_s.to_string())
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

/// The account's limits as the daemon last read them. A part the endpoint did not answer is
/// `None`, with the reason in `error`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccountLimits {
    /// When they were read (Unix seconds).
    pub checked_s: i64,
    pub policy: Option<RetrievalPolicy>,
    pub capacity: Option<Vec<CapacityUnit>>,
    /// Why a part is missing, as one line.
    pub error: Option<String>,
}

const LIMITS: &str = "account_limits";

/// Records the account's limits, replacing the last reading.
pub fn set_account_limits(conn: &Connection, limits: &AccountLimits) -> Result<(), CatalogError> {
    let policy = limits.policy.map(
        |p| serde_json::json!({ "Strategy": p.strategy(), "BytesPerHour": p.bytes_per_hour() }),
    );
    let capacity = limits.capacity.as_ref().map(|units| {
        units
            .iter()
            .map(|u| {
                serde_json::json!({
                    "CapacityId": u.capacity_id,
                    "StartDate": u.start_date,
                    "ExpirationDate": u.expiration_date,
                })
            })
            .collect::<Vec<_>>()
    });
    let value = serde_json::json!({
        "checked_s": limits.checked_s,
        "policy": policy,
        "capacity": capacity,
        "error": limits.error,
    });
    set(conn, LIMITS, &value.to_string())
}

/// The account's limits as the daemon last recorded them, if it ever did.
pub fn account_limits(conn: &Connection) -> Result<Option<AccountLimits>, CatalogError> {
    use serde_json::Value;
    let Some(raw) = get(conn, LIMITS)? else {
        return Ok(None);
    };
    let Ok(v) = serde_json::from_str::<Value>(&raw) else {
        return Ok(None);
    };
    let text = |v: &Value, k: &str| v.get(k).and_then(Value::as_str).map(str::to_owned);
    let policy = v.get("policy").and_then(|p| {
        RetrievalPolicy::from_rule(
            p.get("Strategy").and_then(Value::as_str)?,
            p.get("BytesPerHour").and_then(Value::as_u64),
        )
    });
    let capacity = v.get("capacity").and_then(Value::as_array).map(|units| {
        units
            .iter()
            .map(|u| CapacityUnit {
                capacity_id: text(u, "CapacityId").unwrap_or_default(),
                start_date: text(u, "StartDate"),
                expiration_date: text(u, "ExpirationDate"),
            })
            .collect()
    });
    Ok(Some(AccountLimits {
        checked_s: v.get("checked_s").and_then(Value::as_i64).unwrap_or(0),
        policy,
        capacity,
        error: text(&v, "error"),
    }))
}

fn vault_attr_key(vault: &str, attr: &str) -> String {
    format!("vault_attr:{attr}:{vault}")
}

/// Records what Glacier said `attr` of `vault` is (`None`: not set) at `at_ms`.
pub fn set_vault_attr(
    conn: &Connection,
    vault: &str,
    attr: &str,
    value: Option<&str>,
    at_ms: i64,
) -> Result<(), CatalogError> {
    let v = serde_json::json!({ "at_ms": at_ms, "value": value });
    set(conn, &vault_attr_key(vault, attr), &v.to_string())
}

/// What `attr` of `vault` was when last read, and when (Unix milliseconds); `None` if never.
#[allow(clippy::type_complexity)]
pub fn vault_attr(
    conn: &Connection,
    vault: &str,
    attr: &str,
) -> Result<Option<(Option<String>, i64)>, CatalogError> {
    let Some(raw) = get(conn, &vault_attr_key(vault, attr))? else {
        return Ok(None);
    };
    let Ok(v) = serde_json::from_str::<serde_json::Value>(&raw) else {
        return Ok(None);
    };
    let at = v
        .get("at_ms")
        .and_then(serde_json::Value::as_i64)
        .unwrap_or(0);
    let value = v
        .get("value")
        .and_then(serde_json::Value::as_str)
        .map(str::to_owned);
    Ok(Some((value, at)))
}

fn unsupported_key(attr: &str) -> String {
    format!("vault_attr_unsupported:{attr}")
}

/// Notes that the endpoint does not support `attr` (or, with `false`, that it does).
pub fn set_vault_attr_unsupported(
    conn: &Connection,
    attr: &str,
    unsupported: bool,
) -> Result<(), CatalogError> {
    if unsupported {
        set(conn, &unsupported_key(attr), "1")
    } else {
        conn.execute("DELETE FROM meta WHERE key = ?1", [unsupported_key(attr)])?;
        Ok(())
    }
}

/// Whether the endpoint has answered that it does not support `attr`.
pub fn vault_attr_unsupported(conn: &Connection, attr: &str) -> Result<bool, CatalogError> {
    Ok(get(conn, &unsupported_key(attr))?.is_some())
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

    #[test]
    fn account_limits_and_vault_attrs_round_trip() {
        let c = catalog();
        assert_eq!(account_limits(&c).unwrap(), None);
        let limits = AccountLimits {
            checked_s: 42,
            policy: Some(RetrievalPolicy::BytesPerHour(1000)),
            capacity: Some(vec![CapacityUnit {
                capacity_id: "u1".into(),
                start_date: Some("2026-01-01T00:00:00.000Z".into()),
                expiration_date: Some("2026-02-01T00:00:00.000Z".into()),
            }]),
            error: None,
        };
        set_account_limits(&c, &limits).unwrap();
        assert_eq!(account_limits(&c).unwrap(), Some(limits));
        assert_eq!(vault_attr(&c, "v", "tags").unwrap(), None);
        set_vault_attr(&c, "v", "tags", Some("{}"), 7).unwrap();
        set_vault_attr(&c, "v", "access_policy", None, 8).unwrap();
        assert_eq!(
            vault_attr(&c, "v", "tags").unwrap(),
            Some((Some("{}".into()), 7))
        );
        assert_eq!(
            vault_attr(&c, "v", "access_policy").unwrap(),
            Some((None, 8))
        );
        assert!(!vault_attr_unsupported(&c, "tags").unwrap());
        set_vault_attr_unsupported(&c, "tags", true).unwrap();
        assert!(vault_attr_unsupported(&c, "tags").unwrap());
        set_vault_attr_unsupported(&c, "tags", false).unwrap();
        assert!(!vault_attr_unsupported(&c, "tags").unwrap());
    }
}
