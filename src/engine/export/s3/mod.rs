//! Exporting to S3: `glacierfs export PATH s3://BUCKET[/PREFIX]`. Each file under PATH becomes
//! the object `PREFIX/REL` (REL its path below PATH as the mount shows it), streamed from its
//! archive's retrieval job into S3 without touching the local disk, and verified twice: by
//! glacierfs against Glacier's tree hashes before a byte is sent, and by S3 against the
//! SHA-256 checksum each request carries.
//!
//! The pieces: [`bucket`] talks to S3; [`parts`] sizes parts and holds the memory budget;
//! [`journal`] is the small local record that lets a killed export resume its multipart
//! uploads without fetching again what S3 already holds; [`survey`] finds what the bucket
//! already has; [`stream`] moves one archive (or one staged file) into one object. This file
//! owns what an object is called and what it carries:
//! - the key: PREFIX, `/`, REL (no `/` when PREFIX is empty); a key that is not UTF-8 or is
//!   longer than S3's 1,024 bytes fails that file alone;
//! - the storage class chosen with `--storage-class`;
//! - user metadata: `mtime` (seconds since the epoch, the convention rclone and s3fs read),
//!   `glacier-archive-id`, `glacier-tree-hash`, `glacier-vault`, `glacier-creation-date`, and
//!   `glacier-description` when the whole still fits S3's 2 KiB limit. A re-run recognises
//!   an object it wrote by its archive id and tree hash.

pub mod bucket;
pub mod journal;
pub mod parts;
pub mod stream;
pub mod survey;

use std::collections::BTreeMap;
use std::path::Path;
use std::time::SystemTime;

use crate::codec::treehash::{to_hex, Digest};
use crate::config::StorageClass;
use bucket::ObjectMeta;

/// S3's longest key, in bytes.
pub const MAX_KEY: usize = 1024;
/// S3's largest object.
pub const MAX_OBJECT: u64 = 5 << 40;
/// S3's limit on user metadata, names and values together, in bytes.
pub const MAX_METADATA: usize = 2048;
/// The largest object CopyObject copies in one request.
pub const MAX_COPY: u64 = 5 << 30;

pub const META_MTIME: &str = "mtime";
pub const META_ARCHIVE: &str = "glacier-archive-id";
pub const META_TREE_HASH: &str = "glacier-tree-hash";
pub const META_VAULT: &str = "glacier-vault";
pub const META_CREATED: &str = "glacier-creation-date";
pub const META_DESCRIPTION: &str = "glacier-description";

/// `s3://BUCKET[/PREFIX]`, read from the command line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct S3Url {
    pub bucket: String,
    /// Without a leading or trailing `/`; may be empty.
    pub prefix: String,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UrlError {
    #[error("{0:?}: an S3 destination is s3://BUCKET or s3://BUCKET/PREFIX")]
    NoBucket(String),
    #[error("{0:?}: an S3 destination must be UTF-8")]
    NotUtf8(String),
}

impl S3Url {
    /// `Some` when `dest` names S3 at all (`s3://…`), with whether it is well formed.
    pub fn parse(dest: &Path) -> Option<Result<S3Url, UrlError>> {
        let raw = dest.as_os_str();
        if !raw.as_encoded_bytes().starts_with(b"s3://") {
            return None;
        }
        let Some(s) = raw.to_str() else {
            return Some(Err(UrlError::NotUtf8(raw.to_string_lossy().into_owned())));
        };
        let rest = &s["s3://".len()..];
        let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        if bucket.is_empty() {
            return Some(Err(UrlError::NoBucket(s.to_owned())));
        }
        Some(Ok(S3Url {
            bucket: bucket.to_owned(),
            prefix: prefix.trim_matches('/').to_owned(),
        }))
    }

    /// Where the keys of this export start: `PREFIX/`, or nothing.
    pub fn key_base(&self) -> String {
        match self.prefix.is_empty() {
            true => String::new(),
            false => format!("{}/", self.prefix),
        }
    }
}

impl std::fmt::Display for S3Url {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.prefix.is_empty() {
            true => write!(f, "s3://{}", self.bucket),
            false => write!(f, "s3://{}/{}", self.bucket, self.prefix),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    #[error("the name is not UTF-8, which S3 keys must be")]
    NotUtf8,
    #[error("its key would be {0} bytes, over S3's limit of 1024")]
    TooLong(usize),
}

/// The key of the file at `rel` (relative to PATH).
pub fn key_for(url: &S3Url, rel: &Path) -> Result<String, KeyError> {
    let rel = rel.to_str().ok_or(KeyError::NotUtf8)?;
    let key = format!("{}{rel}", url.key_base());
    match key.len() {
        n if n > MAX_KEY => Err(KeyError::TooLong(n)),
        _ => Ok(key),
    }
}

/// What an object says of where it came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Provenance<'a> {
    pub vault: &'a str,
    pub mtime: SystemTime,
    /// None for a file that is not in Glacier yet (staged in the mount).
    pub archive_id: Option<&'a str>,
    pub tree_hash: &'a Digest,
    pub created: Option<&'a str>,
    pub description: Option<&'a str>,
}

/// The metadata and class an object is stored with.
pub fn object_meta(class: StorageClass, p: &Provenance<'_>) -> ObjectMeta {
    let mut user = BTreeMap::new();
    let mtime = match p.mtime.duration_since(SystemTime::UNIX_EPOCH) {
        Ok(d) => d.as_secs() as i64,
        Err(e) => -(e.duration().as_secs() as i64),
    };
    user.insert(META_MTIME.to_owned(), mtime.to_string());
    user.insert(META_TREE_HASH.to_owned(), to_hex(p.tree_hash));
    user.insert(META_VAULT.to_owned(), p.vault.to_owned());
    if let Some(id) = p.archive_id {
        user.insert(META_ARCHIVE.to_owned(), id.to_owned());
    }
    if let Some(c) = p.created {
        user.insert(META_CREATED.to_owned(), c.to_owned());
    }
    // A description is printable ASCII when Glacier took it; anything else could not travel
    // in an HTTP header, so it is left out rather than mangled.
    if let Some(d) = p
        .description
        .filter(|d| d.bytes().all(|b| (32..127).contains(&b)))
    {
        let used: usize = user.iter().map(|(k, v)| k.len() + v.len()).sum();
        if used + META_DESCRIPTION.len() + d.len() <= MAX_METADATA {
            user.insert(META_DESCRIPTION.to_owned(), d.to_owned());
        }
    }
    ObjectMeta {
        storage_class: class.as_str(),
        user,
    }
}

/// Whether an object's metadata says it holds this archive (or, for a staged file, these
/// bytes): a re-run leaves such an object alone.
pub fn holds(user: &BTreeMap<String, String>, archive_id: Option<&str>, tree: &Digest) -> bool {
    let same_tree = user.get(META_TREE_HASH).map(String::as_str) == Some(to_hex(tree).as_str());
    let same_archive = match archive_id {
        Some(id) => user.get(META_ARCHIVE).map(String::as_str) == Some(id),
        None => true,
    };
    same_tree && same_archive
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;
    use std::time::Duration;

    fn url(s: &str) -> S3Url {
        S3Url::parse(Path::new(s)).unwrap().unwrap()
    }

    #[test]
    fn destinations_read_as_bucket_and_prefix() {
        assert_eq!(S3Url::parse(Path::new("/tmp/out")), None);
        assert_eq!(url("s3://b").prefix, "");
        assert_eq!(url("s3://b/").prefix, "");
        assert_eq!(url("s3://b/x/y/").prefix, "x/y");
        assert_eq!(url("s3://b/x").to_string(), "s3://b/x");
        assert!(matches!(
            S3Url::parse(Path::new("s3:///x")),
            Some(Err(UrlError::NoBucket(_)))
        ));
    }

    #[test]
    fn keys_are_prefix_slash_path() {
        let rel = PathBuf::from("a b/é,\"x\".txt");
        assert_eq!(key_for(&url("s3://b"), &rel).unwrap(), "a b/é,\"x\".txt");
        assert_eq!(
            key_for(&url("s3://b/p/q"), &rel).unwrap(),
            "p/q/a b/é,\"x\".txt"
        );
        let long = PathBuf::from("d/".repeat(510) + "xyzwv");
        assert_eq!(key_for(&url("s3://b"), &long), Err(KeyError::TooLong(1025)));
        let longest = PathBuf::from("d/".repeat(510) + "xyzw");
        assert_eq!(key_for(&url("s3://b"), &longest).map(|k| k.len()), Ok(1024));
        assert!(key_for(&url("s3://b/p"), &longest).is_err());
        assert!(key_for(&url("s3://b/p"), &long).is_err());
    }

    #[test]
    fn metadata_carries_provenance_and_drops_a_description_that_does_not_fit() {
        let tree = [7u8; 32];
        let mut p = Provenance {
            vault: "v",
            mtime: SystemTime::UNIX_EPOCH + Duration::from_secs(1_600_000_000),
            archive_id: Some("ARCHIVE"),
            tree_hash: &tree,
            created: Some("2020-01-01T00:00:00.000Z"),
            description: Some("photo.jpg"),
        };
        let m = object_meta(StorageClass::DeepArchive, &p);
        assert_eq!(m.storage_class, "DEEP_ARCHIVE");
        assert_eq!(m.user[META_MTIME], "1600000000");
        assert_eq!(m.user[META_DESCRIPTION], "photo.jpg");
        assert!(holds(&m.user, Some("ARCHIVE"), &tree));
        assert!(!holds(&m.user, Some("OTHER"), &tree));
        assert!(!holds(&m.user, Some("ARCHIVE"), &[8u8; 32]));
        let long = "x".repeat(2000);
        p.description = Some(&long);
        let m = object_meta(StorageClass::Standard, &p);
        assert!(!m.user.contains_key(META_DESCRIPTION));
        let total: usize = m.user.iter().map(|(k, v)| k.len() + v.len()).sum();
        assert!(total <= MAX_METADATA);
        p.description = Some("caf\u{e9}");
        assert!(!object_meta(StorageClass::Standard, &p)
            .user
            .contains_key(META_DESCRIPTION));
    }
}
