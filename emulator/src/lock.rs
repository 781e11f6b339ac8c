//! Vault lock: none → Initiate → InProgress (24 h) → Complete → Locked (immutable).
//! Abort or expiry of an InProgress lock returns the vault to none. Expiry is applied by
//! `State::settle`, so every handler here sees the state as of the emulator clock.

use serde_json::{json, Value};

use super::router::Route;
use super::state::{Lock, LockState, State, DAY_MS};
use super::util::iso_ms;
use super::wire::{json_body, json_str, ApiError, ApiResult, Request, Response};

const MAX_POLICY_BYTES: usize = 20 * 1024;

pub(crate) fn initiate(st: &mut State, req: &Request, route: &Route) -> ApiResult {
    st.vault(&route.vault)?;
    let body = json_body(req)?.unwrap_or_default();
    let policy = json_str(&body, "Policy")?
        .ok_or_else(|| ApiError::missing("Required parameter missing: Policy"))?
        .to_string();
    if policy.len() > MAX_POLICY_BYTES {
        return Err(ApiError::invalid(
            "The vault lock policy is larger than 20 KB",
        ));
    }
    if !matches!(serde_json::from_str::<Value>(&policy), Ok(Value::Object(_))) {
        return Err(ApiError::invalid(
            "The vault lock policy is not a JSON policy document",
        ));
    }
    let lock_id = st.new_id(24);
    let now = st.now_ms;
    let v = st.vault_mut(&route.vault)?;
    match v.lock.as_ref().map(|l| &l.state) {
        Some(LockState::InProgress { .. }) => {
            return Err(ApiError::access_denied(
                "A vault lock is already in progress",
            ))
        }
        Some(LockState::Locked) => {
            return Err(ApiError::access_denied(
                "The vault is locked; its lock policy cannot change",
            ))
        }
        None => {}
    }
    v.lock = Some(Lock {
        lock_id: lock_id.clone(),
        policy,
        created_ms: now,
        state: LockState::InProgress {
            expires_ms: now + DAY_MS,
        },
    });
    Ok(Response::empty(201).with_header("x-amz-lock-id", lock_id))
}

pub(crate) fn get(st: &mut State, route: &Route) -> ApiResult {
    let v = st.vault(&route.vault)?;
    let lock = v
        .lock
        .as_ref()
        .ok_or_else(|| ApiError::not_found("No vault lock policy is set"))?;
    let (state, expiration) = match lock.state {
        LockState::InProgress { expires_ms } => ("InProgress", json!(iso_ms(expires_ms))),
        LockState::Locked => ("Locked", Value::Null),
    };
    Ok(Response::json(
        200,
        &json!({
            "Policy": lock.policy,
            "State": state,
            "ExpirationDate": expiration,
            "CreationDate": iso_ms(lock.created_ms),
        }),
    ))
}

pub(crate) fn complete(st: &mut State, route: &Route) -> ApiResult {
    let v = st.vault_mut(&route.vault)?;
    let lock = v
        .lock
        .as_mut()
        .ok_or_else(|| ApiError::invalid("No vault lock is in progress"))?;
    let same = lock.lock_id == route.id;
    match (&lock.state, same) {
        (LockState::Locked, true) => Ok(Response::empty(204)),
        (LockState::Locked, false) => Err(ApiError::access_denied("The vault is already locked")),
        (LockState::InProgress { .. }, false) => Err(ApiError::invalid(format!(
            "The lock ID '{}' does not match the lock in progress",
            route.id
        ))),
        (LockState::InProgress { .. }, true) => {
            lock.state = LockState::Locked;
            Ok(Response::empty(204))
        }
    }
}

pub(crate) fn abort(st: &mut State, route: &Route) -> ApiResult {
    let v = st.vault_mut(&route.vault)?;
    if let Some(Lock {
        state: LockState::Locked,
        ..
    }) = v.lock
    {
        return Err(ApiError::access_denied(
            "The vault is locked; its lock cannot be aborted",
        ));
    }
    v.lock = None;
    Ok(Response::empty(204))
}
