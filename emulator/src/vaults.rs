//! Vault operations: CreateVault, DescribeVault, ListVaults, DeleteVault.

use serde_json::{json, Value};

use super::router::Route;
use super::state::{State, Vault};
use super::util::{iso_ms, valid_vault_name};
use super::wire::{parse_limit, ApiError, ApiResult, Request, Response};

const MAX_VAULTS: usize = 1000;

/// DescribeVault's shape, also used by ListVaults. Counts come from the last inventory and are
/// `null` before the first one, like the real service.
pub(crate) fn vault_json(st: &State, v: &Vault) -> Value {
    let (count, size, date) = match &v.snapshot {
        Some(s) => (
            json!(s.archives.len()),
            json!(s.archives.iter().map(|a| a.size()).sum::<u64>()),
            json!(iso_ms(s.date_ms)),
        ),
        None => (Value::Null, Value::Null, Value::Null),
    };
    json!({
        "CreationDate": iso_ms(v.created_ms),
        "LastInventoryDate": date,
        "NumberOfArchives": count,
        "SizeInBytes": size,
        "VaultARN": st.vault_arn(&v.name),
        "VaultName": v.name,
    })
}

pub(crate) fn create(st: &mut State, route: &Route) -> ApiResult {
    let name = &route.vault;
    if !valid_vault_name(name) {
        return Err(ApiError::invalid(format!(
            "Invalid vault name '{name}': use 1 to 255 characters from [A-Za-z0-9_.-]"
        )));
    }
    if !st.vaults.contains_key(name) {
        if st.vaults.len() >= MAX_VAULTS {
            return Err(ApiError::limit_exceeded(
                "The maximum number of vaults has been reached",
            ));
        }
        let v = Vault::new(name, st.now_ms);
        st.vaults.insert(name.clone(), v);
    }
    Ok(Response::empty(201).with_header("Location", st.location(name)))
}

pub(crate) fn describe(st: &mut State, route: &Route) -> ApiResult {
    let v = st.vault(&route.vault)?;
    Ok(Response::json(200, &vault_json(st, v)))
}

pub(crate) fn list(st: &mut State, req: &Request) -> ApiResult {
    let limit = parse_limit(req, 10)?;
    let after = match req.query("marker") {
        None | Some("") => None,
        Some(m) => {
            let prefix = st.vault_arn("");
            match m.strip_prefix(prefix.as_str()) {
                Some(name) if !name.is_empty() => Some(name.to_string()),
                _ => {
                    return Err(ApiError::invalid(format!(
                        "Invalid marker '{m}': not a vault ARN"
                    )))
                }
            }
        }
    };
    // The marker is the ARN of the last vault returned; the listing resumes after it.
    let mut names = st
        .vaults
        .keys()
        .filter(|n| after.as_ref().is_none_or(|a| n.as_str() > a.as_str()));
    let page: Vec<&String> = names.by_ref().take(limit).collect();
    let more = names.next().is_some();
    let list: Vec<Value> = page
        .iter()
        .map(|n| vault_json(st, &st.vaults[*n]))
        .collect();
    let marker = match (more, page.last()) {
        (true, Some(last)) => json!(st.vault_arn(last)),
        _ => Value::Null,
    };
    Ok(Response::json(
        200,
        &json!({ "VaultList": list, "Marker": marker }),
    ))
}

pub(crate) fn delete(st: &mut State, route: &Route) -> ApiResult {
    let v = st.vault(&route.vault)?;
    // Glacier decides from its inventory: the last one must show the vault empty, and nothing
    // may have been written since. A vault never written to has nothing to show.
    let deletable = v.write_seq == 0
        || v.snapshot
            .as_ref()
            .is_some_and(|s| s.archives.is_empty() && s.write_seq == v.write_seq);
    if !deletable {
        return Err(ApiError::invalid(format!(
            "Vault not empty or recently written to: {}",
            st.vault_arn(&route.vault)
        )));
    }
    st.vaults.remove(&route.vault);
    Ok(Response::empty(204))
}
