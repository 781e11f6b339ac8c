//! Extended attributes: the read-only `user.glacier.*` view of files and vaults (SEMANTICS.md,
//! "Extended attributes"), and the vault attributes that live at Glacier and can be written:
//! `tags`, `access_policy` and `notifications` (SEMANTICS.md, "Vault attributes and account
//! limits").
//!
//! Names outside `user.glacier.` get EOPNOTSUPP rather than ENODATA, which tells `ls -l` and
//! friends to stop asking for SELinux labels and ACLs on every file.
//!
//! The Glacier-backed vault attributes are the one place a FUSE thread waits on the network.
//! The call itself runs on the runtime, as for `.lock`, but the FUSE thread waits for its
//! answer (at most [`REMOTE_WAIT`]): getxattr and setxattr have no later moment to answer
//! from, and a value that is not fresh is worth less than a short wait. A read is served from
//! what the catalog recorded when that is younger than the poll interval, so repeated reads
//! (`getfattr -d`, scripts) cost one call per interval; a write is confirmed by reading the
//! value back, and that reading is what later reads within the interval see.

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::control_files::SNAPSHOT_ATTRS;
use super::{FsError, FsResult, GlacierFs};
use crate::catalog::{meta, nodes, vaults, Kind, Node};
use crate::glacier::{ErrorKind, GlacierClient, GlacierError, Notifications};

const PREFIX: &str = "user.glacier.";

const FILE_ATTRS: &[&str] = &[
    "user.glacier.state",
    "user.glacier.archive_id",
    "user.glacier.tree_hash",
    "user.glacier.description",
    "user.glacier.creation_date",
    "user.glacier.job_id",
];
const VAULT_ATTRS: &[&str] = &[
    "user.glacier.vault_arn",
    "user.glacier.inventory_date",
    "user.glacier.archive_count",
];

/// The vault attributes that live at Glacier, readable and writable.
const REMOTE_ATTRS: &[&str] = &[
    "user.glacier.tags",
    "user.glacier.access_policy",
    "user.glacier.notifications",
];

/// The longest a getxattr or setxattr of a Glacier-backed attribute waits for Glacier (the
/// retrying client gives up on a transient failure well before this).
const REMOTE_WAIT: Duration = Duration::from_secs(60);

/// Asks for the staged files at or under a path to be uploaded now (`glacierfs sync`).
const SYNC: &[u8] = b"user.glacier.sync";

impl GlacierFs {
    /// The value of one attribute.
    pub fn getxattr(&self, ino: u64, name: &OsStr) -> FsResult<Vec<u8>> {
        let name = name.to_str().ok_or(FsError::NotSupported)?;
        if !name.starts_with(PREFIX) {
            return Err(FsError::NotSupported);
        }
        let n = self.node(ino)?;
        let value: Option<String> = match (n.kind, name) {
            (Kind::File, "user.glacier.state") => Some(self.file_state(&n).to_owned()),
            (Kind::File, "user.glacier.archive_id") => n.archive_id.clone(),
            (Kind::File, "user.glacier.tree_hash") => n.tree_hash.clone(),
            (Kind::File, "user.glacier.description") => n.description.clone(),
            // The archive's, so only while the file has one.
            (Kind::File, "user.glacier.creation_date") => n
                .archive_id
                .as_ref()
                .and(n.created_s)
                .map(|s| crate::codec::timefmt::format_iso8601(s, 0)),
            (Kind::File, "user.glacier.job_id") => self.services.retriever.job_id(&n),
            (Kind::Vault, attr) if VAULT_ATTRS.contains(&attr) => self.vault_attr(&n, attr)?,
            (Kind::Vault, attr) if SNAPSHOT_ATTRS.contains(&attr) => {
                self.snapshot_attr(n.ino, attr)?
            }
            (Kind::Vault, attr) if REMOTE_ATTRS.contains(&attr) => self.remote_attr(&n, attr)?,
            _ => None,
        };
        value.map(String::into_bytes).ok_or(FsError::NoAttr)
    }

    fn vault_attr(&self, n: &Node, attr: &str) -> FsResult<Option<String>> {
        let ino = n.ino;
        let row = self.catalog.read(|c| vaults::by_ino(c, ino))?;
        let Some(row) = row else { return Ok(None) };
        Ok(match attr {
            "user.glacier.vault_arn" => row.arn,
            "user.glacier.inventory_date" => row.inventory_date,
            "user.glacier.archive_count" => {
                let (files, _) = self.catalog.read(|c| nodes::vault_usage(c, ino))?;
                Some(files.to_string())
            }
            _ => None,
        })
    }

    /// NUL-separated names of the attributes this inode has.
    pub fn listxattr(&self, ino: u64) -> FsResult<Vec<u8>> {
        let n = self.node(ino)?;
        let candidates: &[&str] = match n.kind {
            Kind::File => FILE_ATTRS,
            Kind::Vault => VAULT_ATTRS,
            Kind::Root | Kind::Dir | Kind::Symlink | Kind::Special => &[],
        };
        let mut out = Vec::new();
        for name in candidates {
            if self.getxattr(ino, OsStr::new(name)).is_ok() {
                out.extend_from_slice(name.as_bytes());
                out.push(0);
            }
        }
        if n.kind == Kind::Vault {
            // Listed without asking Glacier (a listing must not cost a call per attribute),
            // unless the endpoint has shown it lacks them.
            for name in REMOTE_ATTRS {
                let short = short_name(name);
                if !self
                    .catalog
                    .read(|c| meta::vault_attr_unsupported(c, short))?
                {
                    out.extend_from_slice(name.as_bytes());
                    out.push(0);
                }
            }
        }
        Ok(out)
    }

    /// What the data of a file is doing: `staged` and `uploading` files are on their way to
    /// Glacier; `cold` archives must be retrieved before they are read; `cached` ones are here.
    fn file_state(&self, n: &Node) -> &'static str {
        if self.services.writeback.is_uploading(n.ino) {
            "uploading"
        } else if n.dirty > 0 {
            "staged"
        } else if n.archive_id.is_some() && !n.local {
            if self.services.retriever.job_id(n).is_some() {
                "retrieving"
            } else {
                "cold"
            }
        } else {
            "cached"
        }
    }

    /// Starts (or reuses) retrievals of every cold file at or below `n`; returns how many.
    pub fn retrieve_at_or_below(
        &self,
        n: &Node,
        tier: Option<crate::config::Tiers>,
    ) -> FsResult<usize> {
        if n.kind == Kind::File {
            return Ok(usize::from(self.services.retriever.request(n, tier)?));
        }
        let cold = self.catalog.read(|c| nodes::cold_at_or_below(c, n))?;
        let mut started = 0;
        for f in cold {
            if self.services.retriever.request(&f, tier)? {
                started += 1;
            }
        }
        Ok(started)
    }

    /// setxattr by the mount's owner.
    pub fn setxattr(&self, ino: u64, name: &OsStr, value: &[u8]) -> FsResult<()> {
        self.setxattr_by(ino, name, value, self.options.uid)
    }

    /// setxattr by user `uid`: only the mount's owner may change a vault's access policy.
    pub fn setxattr_by(&self, ino: u64, name: &OsStr, value: &[u8], uid: u32) -> FsResult<()> {
        let n = self.node(ino)?;
        if let (Kind::Vault, Some(attr)) = (n.kind, name.to_str()) {
            if REMOTE_ATTRS.contains(&attr) {
                return self.set_remote_attr(&n, attr, value, uid);
            }
        }
        let name = name.as_bytes();
        if !name.starts_with(PREFIX.as_bytes()) {
            return Err(FsError::NotSupported);
        }
        if name == SYNC {
            let staged = self.catalog.read(|c| nodes::staged_at_or_below(c, &n))?;
            self.services.writeback.force(staged);
            return Ok(());
        }
        if n.kind == Kind::Vault && SNAPSHOT_ATTRS.iter().any(|a| a.as_bytes() == name) {
            return self.snapshot_command(n.ino, name, value);
        }
        if name == b"user.glacier.retrieve" {
            let tier = match std::str::from_utf8(value).map(str::trim) {
                Ok("") => None,
                Ok(t) => Some(
                    crate::config::parse_tiers(t).map_err(|e| FsError::Invalid(e.to_string()))?,
                ),
                Err(_) => return Err(FsError::Invalid("the tier must be text".into())),
            };
            return self.retrieve_at_or_below(&n, tier).map(|_| ());
        }
        Err(FsError::NotPermitted(
            "user.glacier attributes are read-only",
        ))
    }

    /// A Glacier-backed vault attribute: the catalog's reading when it is younger than the poll
    /// interval, else a fresh one.
    fn remote_attr(&self, n: &Node, attr: &str) -> FsResult<Option<String>> {
        let vault = self.vault_name(n)?;
        let short = short_name(attr);
        let cached = {
            let vault = vault.clone();
            self.catalog
                .read(move |c| meta::vault_attr(c, &vault, short))?
        };
        let fresh_ms = i64::try_from(self.options.retry_interval.as_millis()).unwrap_or(i64::MAX);
        if let Some((value, at)) = cached {
            if now_ms().saturating_sub(at) < fresh_ms {
                return Ok(value);
            }
        }
        let client = Arc::clone(&self.services.client);
        let value = self.wait_for(
            attr,
            async move { fetch(client.as_ref(), &vault, short).await },
        )?;
        self.settle(attr, value)
    }

    /// A write of a Glacier-backed vault attribute, confirmed by reading it back.
    fn set_remote_attr(&self, n: &Node, attr: &str, value: &[u8], uid: u32) -> FsResult<()> {
        let short = short_name(attr);
        if short == "access_policy" && uid != self.options.uid {
            return Err(FsError::AccessDenied(
                "only the mount's owner may change a vault's access policy".into(),
            ));
        }
        let change = Change::parse(short, value).map_err(FsError::Invalid)?;
        let vault = self.vault_name(n)?;
        let client = Arc::clone(&self.services.client);
        let result = self.wait_for(attr, async move {
            apply(client.as_ref(), &vault, &change).await?;
            let back = fetch(client.as_ref(), &vault, short).await?;
            Ok((back, change))
        })?;
        let (back, change) = match result {
            Ok((back, change)) => (back, change),
            Err(e) => return self.settle(attr, Err(e)).map(|_| ()),
        };
        let wanted = change.expected();
        let read = self.settle(attr, Ok(back))?;
        if !same_value(read.as_deref(), wanted.as_deref()) {
            return Err(FsError::NotConfirmed(format!(
                "{attr} of vault {}: Glacier reads back {} after the write",
                n.name,
                read.as_deref().unwrap_or("nothing")
            )));
        }
        Ok(())
    }

    fn vault_name(&self, n: &Node) -> FsResult<String> {
        let ino = n.ino;
        self.catalog
            .read(move |c| vaults::by_ino(c, ino))?
            .map(|v| v.name)
            .ok_or(FsError::NotFound(super::Missing::Inode(ino)))
    }

    /// Runs `call` on the runtime and waits for its answer on this thread (see the module note).
    fn wait_for<T: Send + 'static>(
        &self,
        attr: &str,
        call: impl std::future::Future<Output = Result<T, (String, GlacierError)>> + Send + 'static,
    ) -> FsResult<Result<T, (String, GlacierError)>> {
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        self.services.runtime.spawn(async move {
            let _ = tx.send(call.await);
        });
        rx.recv_timeout(REMOTE_WAIT)
            .map_err(|_| FsError::NoAnswer(format!("{attr} after {REMOTE_WAIT:?}")))
    }

    /// Records what Glacier answered for `attr` (its value, or that the endpoint lacks the
    /// call) and turns a failure into the error the caller sees.
    fn settle(
        &self,
        attr: &str,
        answer: Result<(String, Option<String>), (String, GlacierError)>,
    ) -> FsResult<Option<String>> {
        let short = short_name(attr);
        match answer {
            Ok((vault, value)) => {
                let at = now_ms();
                let stored = value.clone();
                self.catalog.write(move |tx| {
                    meta::set_vault_attr(tx, &vault, short, stored.as_deref(), at)?;
                    meta::set_vault_attr_unsupported(tx, short, false)
                })?;
                Ok(value)
            }
            Err((_, e)) if e.kind == ErrorKind::Unsupported => {
                self.catalog
                    .write(move |tx| meta::set_vault_attr_unsupported(tx, short, true))?;
                Err(FsError::EndpointUnsupported(format!("{attr} ({e})")))
            }
            Err((_, e)) => Err(FsError::Glacier(e)),
        }
    }

    pub fn removexattr(&self, ino: u64, name: &OsStr) -> FsResult<()> {
        self.node(ino)?;
        if !name.as_bytes().starts_with(PREFIX.as_bytes()) {
            return Err(FsError::NotSupported);
        }
        Err(FsError::NotPermitted(
            "user.glacier attributes are read-only",
        ))
    }
}

/// `tags` of `user.glacier.tags`.
fn short_name(attr: &str) -> &'static str {
    match attr.strip_prefix(PREFIX) {
        Some("tags") => "tags",
        Some("access_policy") => "access_policy",
        _ => "notifications",
    }
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// Reads one Glacier-backed attribute of `vault` as the attribute shows it: the vault's name
/// and the value (`None`: not set). Tags are always set (`{}` when there are none).
async fn fetch(
    client: &dyn GlacierClient,
    vault: &str,
    short: &str,
) -> Result<(String, Option<String>), (String, GlacierError)> {
    let failed = |e| (vault.to_owned(), e);
    let value = match short {
        "tags" => Some(tags_text(&client.list_tags(vault).await.map_err(failed)?)),
        "access_policy" => client.get_access_policy(vault).await.map_err(failed)?,
        _ => client
            .get_notifications(vault)
            .await
            .map_err(failed)?
            .map(|n| notifications_text(&n)),
    };
    Ok((vault.to_owned(), value))
}

/// Whether two readings say the same: as JSON when both parse (Glacier may space or order a
/// policy differently from how it was written), else as text.
fn same_value(a: Option<&str>, b: Option<&str>) -> bool {
    match (a, b) {
        (Some(a), Some(b)) => {
            match (
                serde_json::from_str::<serde_json::Value>(a),
                serde_json::from_str::<serde_json::Value>(b),
            ) {
                (Ok(x), Ok(y)) => x == y,
                _ => a == b,
            }
        }
        (a, b) => a == b,
    }
}

fn tags_text(tags: &BTreeMap<String, String>) -> String {
    serde_json::to_string(tags).unwrap_or_default()
}

fn notifications_text(n: &Notifications) -> String {
    serde_json::to_string(n).unwrap_or_default()
}

/// A write to a Glacier-backed attribute, parsed.
#[derive(Debug, Clone)]
enum Change {
    /// Replace the tag set with this one.
    Tags(BTreeMap<String, String>),
    /// Set (`Some`) or delete (`None`) the access policy.
    AccessPolicy(Option<String>),
    /// Set (`Some`) or delete (`None`) the notification configuration.
    Notifications(Option<Notifications>),
}

impl Change {
    fn parse(short: &str, value: &[u8]) -> Result<Change, String> {
        let text = std::str::from_utf8(value)
            .map_err(|_| format!("user.glacier.{short} takes JSON text"))?
            .trim();
        match short {
            "tags" => {
                let text = if text.is_empty() { "{}" } else { text };
                serde_json::from_str(text).map(Change::Tags).map_err(|_| {
                    r#"user.glacier.tags takes a JSON object of strings, e.g. {"project":"x"}"#
                        .to_owned()
                })
            }
            "access_policy" if text.is_empty() => Ok(Change::AccessPolicy(None)),
            "access_policy" => match serde_json::from_str::<serde_json::Value>(text) {
                Ok(v) if v.is_object() => Ok(Change::AccessPolicy(Some(v.to_string()))),
                _ => Err("user.glacier.access_policy takes a JSON policy object, or nothing \
                          to delete it"
                    .to_owned()),
            },
            _ if text.is_empty() => Ok(Change::Notifications(None)),
            _ => serde_json::from_str(text)
                .map(|n| Change::Notifications(Some(n)))
                .map_err(|_| {
                    r#"user.glacier.notifications takes {"SNSTopic":"arn:…","Events":[…]}, or nothing to delete it"#
                        .to_owned()
                }),
        }
    }

    /// What reading the attribute back must show once the change is in.
    fn expected(&self) -> Option<String> {
        match self {
            Change::Tags(t) => Some(tags_text(t)),
            Change::AccessPolicy(p) => p.clone(),
            Change::Notifications(n) => n.as_ref().map(notifications_text),
        }
    }
}

/// Makes `change` at Glacier. Tags are replaced as a set: the new ones added (overwriting),
/// then the keys no longer wanted removed.
async fn apply(
    client: &dyn GlacierClient,
    vault: &str,
    change: &Change,
) -> Result<(), (String, GlacierError)> {
    let failed = |e| (vault.to_owned(), e);
    match change {
        Change::Tags(wanted) => {
            let current = client.list_tags(vault).await.map_err(failed)?;
            if !wanted.is_empty() {
                client.add_tags(vault, wanted).await.map_err(failed)?;
            }
            let stale: Vec<String> = current
                .into_keys()
                .filter(|k| !wanted.contains_key(k))
                .collect();
            if !stale.is_empty() {
                client.remove_tags(vault, &stale).await.map_err(failed)?;
            }
        }
        Change::AccessPolicy(Some(p)) => {
            client.set_access_policy(vault, p).await.map_err(failed)?
        }
        Change::AccessPolicy(None) => client.delete_access_policy(vault).await.map_err(failed)?,
        Change::Notifications(Some(n)) => {
            client.set_notifications(vault, n).await.map_err(failed)?
        }
        Change::Notifications(None) => client.delete_notifications(vault).await.map_err(failed)?,
    }
    Ok(())
}
