//! The S3 model: buckets, their objects, open multipart uploads and the uploads completed
//! lately (a repeated Complete is answered as the first was, as S3 does).

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use md5::{Digest as _, Md5};
use rand::rngs::StdRng;

use super::wire::{no_such_bucket, no_such_upload};
use crate::util::{random_id, Digest};
use crate::wire::ApiError;

pub(crate) type Md5Digest = [u8; 16];

pub(crate) fn md5(data: &[u8]) -> Md5Digest {
    Md5::digest(data).into()
}

pub(crate) struct S3State {
    pub buckets: BTreeMap<String, Bucket>,
    rng: StdRng,
    /// Orders uploads by initiation, for listings.
    seq: u64,
}

#[derive(Default)]
pub(crate) struct Bucket {
    pub objects: BTreeMap<String, Object>,
    /// Open uploads by id.
    pub uploads: HashMap<String, Upload>,
    /// Completed uploads by id: what a repeated Complete answers.
    pub completed: HashMap<String, Completed>,
}

#[derive(Clone)]
pub(crate) struct Object {
    pub data: Arc<Vec<u8>>,
    /// In quotes, as S3 sends it.
    pub etag: String,
    pub metadata: BTreeMap<String, String>,
    pub storage_class: String,
    /// Base64; a multipart object's is the composite form, `…-N`.
    pub checksum_sha256: Option<String>,
    /// 0 for an object from one PUT or a copy.
    pub parts: u32,
    pub content_type: String,
    pub modified_ms: i64,
}

pub(crate) struct Upload {
    pub key: String,
    pub seq: u64,
    pub initiated_ms: i64,
    pub metadata: BTreeMap<String, String>,
    pub storage_class: String,
    pub content_type: String,
    /// The upload was created with `x-amz-checksum-algorithm: SHA256`: every part carries one.
    pub sha256: bool,
    pub parts: BTreeMap<u32, Part>,
}

pub(crate) struct Part {
    pub data: Arc<Vec<u8>>,
    pub md5: Md5Digest,
    pub sha256: Digest,
    /// Base64, when the part was sent with a SHA-256 checksum.
    pub checksum_sha256: Option<String>,
    pub modified_ms: i64,
}

impl Part {
    pub fn etag(&self) -> String {
        format!("\"{}\"", hex::encode(self.md5))
    }
}

pub(crate) struct Completed {
    pub key: String,
    pub etag: String,
    pub checksum_sha256: Option<String>,
}

impl S3State {
    pub fn new(rng: StdRng) -> S3State {
        S3State {
            buckets: BTreeMap::new(),
            rng,
            seq: 0,
        }
    }

    pub fn bucket(&self, name: &str) -> Result<&Bucket, ApiError> {
        self.buckets.get(name).ok_or_else(no_such_bucket)
    }

    pub fn bucket_mut(&mut self, name: &str) -> Result<&mut Bucket, ApiError> {
        self.buckets.get_mut(name).ok_or_else(no_such_bucket)
    }

    /// A new upload id and its place in initiation order.
    pub fn next_upload(&mut self) -> (String, u64) {
        self.seq += 1;
        (random_id(&mut self.rng, 64), self.seq)
    }
}

impl Bucket {
    /// The open upload `id`, which must be for `key`.
    pub fn upload_mut(&mut self, key: &str, id: &str) -> Result<&mut Upload, ApiError> {
        self.uploads
            .get_mut(id)
            .filter(|u| u.key == key)
            .ok_or_else(no_such_upload)
    }

    pub fn upload(&self, key: &str, id: &str) -> Result<&Upload, ApiError> {
        self.uploads
            .get(id)
            .filter(|u| u.key == key)
            .ok_or_else(no_such_upload)
    }
}

/// A valid bucket name: 3 to 63 lower-case letters, digits, dots and hyphens, starting and
/// ending with a letter or digit.
pub fn valid_bucket_name(name: &str) -> bool {
    let b = name.as_bytes();
    (3..=63).contains(&b.len())
        && b.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, b'.' | b'-'))
        && b[0].is_ascii_alphanumeric()
        && b[b.len() - 1].is_ascii_alphanumeric()
        && !name.contains("..")
}
