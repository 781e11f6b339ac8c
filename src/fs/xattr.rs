//! Extended attributes: the read-only `user.glacier.*` view of files and vaults (SEMANTICS.md,
//! "Extended attributes").
//!
//! Names outside `user.glacier.` get EOPNOTSUPP rather than ENODATA, which tells `ls -l` and
//! friends to stop asking for SELinux labels and ACLs on every file.

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;

use super::{FsError, FsResult, GlacierFs};
use crate::catalog::{nodes, vaults, Kind, Node};

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
        tier: Option<crate::glacier::Tier>,
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

    pub fn setxattr(&self, ino: u64, name: &OsStr, value: &[u8]) -> FsResult<()> {
        let n = self.node(ino)?;
        let name = name.as_bytes();
        if !name.starts_with(PREFIX.as_bytes()) {
            return Err(FsError::NotSupported);
        }
        if name == SYNC {
            let staged = self.catalog.read(|c| nodes::staged_at_or_below(c, &n))?;
            self.services.writeback.force(staged);
            return Ok(());
        }
        if name == b"user.glacier.retrieve" {
            let tier = match std::str::from_utf8(value).map(str::trim) {
                Ok("") => None,
                Ok(t) => Some(crate::glacier::Tier::parse(t).ok_or_else(|| {
                    FsError::Invalid(format!(
                        "{t:?} is not a tier: use expedited, standard or bulk"
                    ))
                })?),
                Err(_) => return Err(FsError::Invalid("the tier must be text".into())),
            };
            return self.retrieve_at_or_below(&n, tier).map(|_| ());
        }
        Err(FsError::NotPermitted(
            "user.glacier attributes are read-only",
        ))
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
