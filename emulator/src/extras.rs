//! The small vault sub-resources and account settings: access policy, notifications, tags, the
//! data retrieval policy and provisioned capacity. The vault sub-resources only store what they
//! are given (after the documented checks). The account settings are enforced at InitiateJob
//! as Glacier does ([`check_retrieval`]): a `BytesPerHour` policy refuses an archive retrieval
//! that would push the bytes retrieved in the trailing hour of emulated time over its rate, and
//! while on-demand Expedited capacity is short (a test's knob) an Expedited retrieval needs an
//! unexpired provisioned capacity unit.

use serde_json::{json, Map, Value};

use super::router::{Op, Route};
use super::state::{State, Tier, DAY_MS, HOUR_MS};
use super::util::iso_ms;
use super::wire::{json_body, json_str, ApiError, ApiResult, Request, Response};

const MAX_TAGS: usize = 50;
const MAX_CAPACITY_UNITS: usize = 2;

fn body_or_missing(req: &Request, what: &str) -> Result<Map<String, Value>, ApiError> {
    json_body(req)?.ok_or_else(|| ApiError::missing(format!("Required parameter missing: {what}")))
}

pub(crate) fn handle(st: &mut State, req: &Request, route: &Route) -> ApiResult {
    match route.op {
        Op::GetDataRetrievalPolicy => Ok(Response::json(
            200,
            &json!({ "Policy": st.data_retrieval_policy }),
        )),
        Op::SetDataRetrievalPolicy => set_retrieval_policy(st, req),
        Op::PurchaseProvisionedCapacity => {
            if st.capacity.len() >= MAX_CAPACITY_UNITS {
                return Err(ApiError::limit_exceeded(
                    "At most 2 provisioned capacity units",
                ));
            }
            let id = st.new_id(24);
            let now = st.now_ms;
            st.capacity.push((id.clone(), now, now + 30 * DAY_MS));
            Ok(Response::empty(201).with_header("x-amz-capacity-id", id))
        }
        Op::ListProvisionedCapacity => {
            let list: Vec<Value> = st
                .capacity
                .iter()
                .map(|(id, s, e)| {
                    json!({ "CapacityId": id, "StartDate": iso_ms(*s), "ExpirationDate": iso_ms(*e) })
                })
                .collect();
            Ok(Response::json(
                200,
                &json!({ "ProvisionedCapacityList": list }),
            ))
        }
        _ => vault_extra(st, req, route),
    }
}

fn vault_extra(st: &mut State, req: &Request, route: &Route) -> ApiResult {
    let v = st.vault_mut(&route.vault)?;
    match route.op {
        Op::SetVaultAccessPolicy => {
            let body = body_or_missing(req, "Policy")?;
            let policy = json_str(&body, "Policy")?
                .ok_or_else(|| ApiError::missing("Required parameter missing: Policy"))?;
            v.access_policy = Some(policy.to_string());
            Ok(Response::empty(204))
        }
        Op::GetVaultAccessPolicy => match &v.access_policy {
            Some(p) => Ok(Response::json(200, &json!({ "Policy": p }))),
            None => Err(ApiError::not_found("No vault access policy is set")),
        },
        Op::DeleteVaultAccessPolicy => {
            v.access_policy = None;
            Ok(Response::empty(204))
        }
        Op::SetVaultNotifications => {
            let body = body_or_missing(req, "vaultNotificationConfig")?;
            if let Some(events) = body.get("Events").and_then(Value::as_array) {
                let known = ["ArchiveRetrievalCompleted", "InventoryRetrievalCompleted"];
                if let Some(bad) = events
                    .iter()
                    .find(|e| !e.as_str().is_some_and(|e| known.contains(&e)))
                {
                    return Err(ApiError::invalid(format!(
                        "Invalid notification event {bad}"
                    )));
                }
            }
            v.notifications = Some(Value::Object(body));
            Ok(Response::empty(204))
        }
        Op::GetVaultNotifications => match &v.notifications {
            Some(n) => Ok(Response::json(200, n)),
            None => Err(ApiError::not_found("No notification configuration is set")),
        },
        Op::DeleteVaultNotifications => {
            v.notifications = None;
            Ok(Response::empty(204))
        }
        Op::AddTagsToVault => {
            let body = json_body(req)?.unwrap_or_default();
            let tags = match body.get("Tags") {
                None | Some(Value::Null) => Map::new(),
                Some(Value::Object(t)) => t.clone(),
                Some(_) => return Err(ApiError::invalid("Tags must be an object")),
            };
            let mut merged = v.tags.clone();
            for (k, val) in &tags {
                let val = val
                    .as_str()
                    .ok_or_else(|| ApiError::invalid("Tag values are strings"))?;
                if k.is_empty() || k.len() > 128 || k.starts_with("aws:") || val.len() > 256 {
                    return Err(ApiError::invalid(format!("Invalid tag '{k}'")));
                }
                merged.insert(k.clone(), val.to_string());
            }
            if merged.len() > MAX_TAGS {
                return Err(ApiError::limit_exceeded("Too many tags on the vault"));
            }
            v.tags = merged;
            Ok(Response::empty(204))
        }
        Op::RemoveTagsFromVault => {
            let body = json_body(req)?.unwrap_or_default();
            for key in body
                .get("TagKeys")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                if let Some(k) = key.as_str() {
                    v.tags.remove(k);
                }
            }
            Ok(Response::empty(204))
        }
        Op::ListTagsForVault => Ok(Response::json(200, &json!({ "Tags": v.tags }))),
        op => unreachable!("{op:?} is not a vault sub-resource"),
    }
}

fn set_retrieval_policy(st: &mut State, req: &Request) -> ApiResult {
    let body = json_body(req)?.unwrap_or_default();
    let policy = body.get("Policy").cloned().unwrap_or(Value::Null);
    let rules = policy.get("Rules").and_then(Value::as_array);
    let Some([rule]) = rules.map(Vec::as_slice) else {
        return Err(ApiError::invalid(
            "The data retrieval policy takes exactly one rule",
        ));
    };
    let strategy = rule.get("Strategy").and_then(Value::as_str);
    let bytes = rule.get("BytesPerHour");
    match (strategy, bytes) {
        (Some("BytesPerHour"), Some(b)) if b.as_u64().is_some_and(|b| b > 0) => {}
        (Some("FreeTier" | "None"), None) => {}
        _ => {
            return Err(ApiError::invalid(
                "Invalid rule: Strategy is BytesPerHour (with BytesPerHour), FreeTier or None",
            ))
        }
    }
    st.data_retrieval_policy = policy;
    Ok(Response::empty(204))
}

/// Glacier's checks of an archive retrieval of `bytes` at `tier` against the account settings,
/// before the job is created. A refusal by the policy is counted for tests.
pub(crate) fn check_retrieval(st: &mut State, tier: Tier, bytes: u64) -> Result<(), ApiError> {
    if tier == Tier::Expedited && st.expedited_shortage {
        let now = st.now_ms;
        if !st.capacity.iter().any(|(_, _, expires)| *expires > now) {
            return Err(ApiError::new(
                503,
                "InsufficientCapacityException",
                "There is not enough capacity to process this Expedited job",
            ));
        }
    }
    let rule = st
        .data_retrieval_policy
        .get("Rules")
        .and_then(Value::as_array)
        .and_then(|r| r.first());
    let rate = rule
        .filter(|r| r.get("Strategy").and_then(Value::as_str) == Some("BytesPerHour"))
        .and_then(|r| r.get("BytesPerHour"))
        .and_then(Value::as_u64);
    if let Some(rate) = rate {
        let since = st.now_ms - HOUR_MS;
        let recent: u64 = st
            .retrievals
            .log
            .iter()
            .filter(|r| r.created_ms > since)
            .map(|r| r.len())
            .sum();
        if recent + bytes > rate {
            st.policy_refusals += 1;
            return Err(ApiError::new(
                400,
                "PolicyEnforcedException",
                format!(
                    "Retrieval of {bytes} bytes would exceed the data retrieval policy's \
                     {rate} bytes per hour ({recent} retrieved in the last hour)"
                ),
            ));
        }
    }
    Ok(())
}
