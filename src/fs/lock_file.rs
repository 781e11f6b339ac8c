//! `.lock` in each vault: the vault-lock state as one JSON object, and the commands that drive
//! the lock (a JSON policy initiates; `complete [lock-id]`; `abort`). Both need Glacier, so an
//! open and a write are answered from the background runtime, never on a FUSE thread.
//!
//! Completing a lock is irreversible: a Locked vault's policy can never change again.

use std::sync::Arc;

use serde_json::{json, Value};

use super::control_files::LockSnapshot;
use super::{Done, FsError, GlacierFs, Missing};
use crate::catalog::{vaults, Catalog};
use crate::glacier::{ErrorKind, GlacierClient, GlacierError};

/// A command written to `.lock`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LockCommand {
    Initiate { policy: String },
    Complete { lock_id: Option<String> },
    Abort,
}

/// Why a write to `.lock` is not a command; the write fails with EINVAL and this message.
#[derive(Debug, thiserror::Error)]
pub enum LockCommandError {
    #[error("commands are text")]
    NotText,
    #[error("not a JSON policy: {0}")]
    NotJson(#[from] serde_json::Error),
    #[error("a policy is a JSON object")]
    NotAnObject,
    #[error("write a JSON policy, `complete [lock-id]` or `abort`")]
    Unknown,
}

pub fn parse(input: &[u8]) -> Result<LockCommand, LockCommandError> {
    let text = std::str::from_utf8(input)
        .map_err(|_| LockCommandError::NotText)?
        .trim();
    if text.starts_with('{') {
        let v: Value = serde_json::from_str(text)?;
        if !v.is_object() {
            return Err(LockCommandError::NotAnObject);
        }
        return Ok(LockCommand::Initiate {
            policy: v.to_string(),
        });
    }
    let mut words = text.split_whitespace();
    match (words.next(), words.next(), words.next()) {
        (Some("complete"), id, None) => Ok(LockCommand::Complete {
            lock_id: id.map(str::to_owned),
        }),
        (Some("abort"), None, None) => Ok(LockCommand::Abort),
        _ => Err(LockCommandError::Unknown),
    }
}

/// Glacier's refusals: access denied (a Locked vault, a wrong lock id) is EACCES, the rest EIO.
fn refusal(e: &GlacierError) -> FsError {
    match e.kind {
        ErrorKind::AccessDenied | ErrorKind::InvalidParameter => {
            FsError::AccessDenied(e.message.clone())
        }
        _ => FsError::Glacier(e.clone()),
    }
}

/// The lock state as `.lock` shows it.
async fn render(client: &dyn GlacierClient, catalog: &Catalog, vault: u64, name: &str) -> Vec<u8> {
    let row = catalog
        .read(move |c| vaults::by_ino(c, vault))
        .ok()
        .flatten();
    let (lock_id, message) = row.map(|r| (r.lock_id, r.lock_message)).unwrap_or_default();
    let mut obj = match client.get_vault_lock(name).await {
        Ok(Some(l)) => json!({
            "State": l.state,
            "Policy": l.policy,
            "CreationDate": l.creation_date,
            "ExpirationDate": l.expiration_date,
        }),
        Ok(None) => {
            json!({"State": "None", "Policy": null, "CreationDate": null, "ExpirationDate": null})
        }
        Err(e) => json!({
            "State": "Unknown",
            "Policy": null,
            "CreationDate": null,
            "ExpirationDate": null,
            "StatusMessage": format!("the endpoint did not report a vault lock: {e}"),
        }),
    };
    if let Some(map) = obj.as_object_mut() {
        let locked_or_pending = matches!(
            map.get("State").and_then(Value::as_str),
            Some("InProgress" | "Locked")
        );
        if let Some(id) = lock_id.filter(|_| locked_or_pending) {
            map.insert("LockId".into(), json!(id));
        }
        if let Some(m) = message {
            map.entry("StatusMessage").or_insert(json!(m));
        }
    }
    let mut out = serde_json::to_vec_pretty(&obj).unwrap_or_default();
    out.push(b'\n');
    out
}

impl GlacierFs {
    /// Opens `.lock` of `vault`: the snapshot is taken from Glacier on the runtime.
    pub(super) fn open_lock(&self, vault: u64, done: Done<u64>) {
        let name = match self.catalog.read(move |c| vaults::by_ino(c, vault)) {
            Ok(Some(v)) => v.name,
            Ok(None) => return done(Err(FsError::NotFound(Missing::Inode(vault)))),
            Err(e) => return done(Err(e.into())),
        };
        let (client, catalog) = (Arc::clone(&self.services.client), self.catalog.clone());
        let snapshots = Arc::clone(&self.control_snapshots);
        self.services.runtime.spawn(async move {
            let content = render(client.as_ref(), &catalog, vault, &name).await;
            done(Ok(snapshots.add(LockSnapshot {
                dir: vault,
                content,
            })));
        });
    }

    /// A command written to `.lock`; the write's result is the command's.
    pub(super) fn write_lock(&self, vault: u64, data: &[u8], uid: u32, done: Done<u32>) {
        if uid != self.options.uid {
            return done(Err(FsError::AccessDenied(
                "only the mount's owner may change a vault lock".into(),
            )));
        }
        let command = match parse(data) {
            Ok(c) => c,
            Err(e) => return done(Err(FsError::Invalid(e.to_string()))),
        };
        let name = match self.catalog.read(move |c| vaults::by_ino(c, vault)) {
            Ok(Some(v)) => v,
            Ok(None) => return done(Err(FsError::NotFound(Missing::Inode(vault)))),
            Err(e) => return done(Err(e.into())),
        };
        let (client, catalog) = (Arc::clone(&self.services.client), self.catalog.clone());
        let len = data.len() as u32;
        self.services.runtime.spawn(async move {
            let result = run(client.as_ref(), &name.name, name.lock_id.clone(), command).await;
            let (lock_id, message) = match &result {
                Ok(id) => (id.clone(), None),
                Err(e) => (None, Some(e.message.clone())),
            };
            let keep_id = result.is_ok();
            let _ = catalog
                .write_async(move |tx| {
                    vaults::record_lock_result(
                        tx,
                        vault,
                        lock_id.as_deref(),
                        keep_id,
                        message.as_deref(),
                    )
                })
                .await;
            done(result.map(|_| len).map_err(|e| refusal(&e)));
        });
    }
}

/// Runs a lock command; a new lock's id is returned so the mount can show and complete it.
async fn run(
    client: &dyn GlacierClient,
    vault: &str,
    known_id: Option<String>,
    command: LockCommand,
) -> Result<Option<String>, GlacierError> {
    match command {
        LockCommand::Initiate { policy } => {
            let id = client.initiate_vault_lock(vault, &policy).await?;
            log::warn!("vault {vault}: lock {id} initiated; it expires in 24 h unless completed");
            Ok(Some(id))
        }
        LockCommand::Complete { lock_id } => {
            let id = lock_id.or(known_id).ok_or_else(|| {
                GlacierError::new(
                    "CompleteVaultLock",
                    ErrorKind::InvalidParameter,
                    "no lock id: write `complete <lock-id>`",
                )
            })?;
            client.complete_vault_lock(vault, &id).await?;
            log::warn!(
                "vault {vault}: lock {id} completed; the vault's lock policy can never change now"
            );
            Ok(Some(id))
        }
        LockCommand::Abort => {
            client.abort_vault_lock(vault).await?;
            log::info!("vault {vault}: lock aborted");
            Ok(None)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lock_commands_parse() {
        assert!(matches!(
            parse(br#"{"Version":"2012-10-17"}"#),
            Ok(LockCommand::Initiate { .. })
        ));
        assert_eq!(
            parse(b"complete AbC").unwrap(),
            LockCommand::Complete {
                lock_id: Some("AbC".into())
            }
        );
        assert_eq!(
            parse(b"complete\n").unwrap(),
            LockCommand::Complete { lock_id: None }
        );
        assert_eq!(parse(b"abort").unwrap(), LockCommand::Abort);
        assert!(parse(b"{not json").is_err());
        assert!(parse(b"[1,2]").is_err());
        assert!(parse(b"lock it").is_err());
        assert!(parse(b"abort now").is_err());
    }
}
