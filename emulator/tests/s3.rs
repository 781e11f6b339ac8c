//! The emulator's S3 subset through the real aws-sdk-s3, set up as glacierfs's export sets up
//! its client (path-style, checksums only when required): objects with metadata and storage
//! classes, the checksum checks, multipart uploads and their Complete checks, listings and
//! their pagination, copies, awkward keys, signatures, the hook, counters and faults, and the
//! Glacier API still answering on the same endpoint. Digests the tests expect are computed
//! here, independently of the emulator's code. A few tests speak raw HTTP where the SDK cannot
//! produce the request (a wrong `aws-chunked` trailer), with signature verification off.
// A test fails by panicking, so unwrap and expect are how it says what went wrong.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use aws_sdk_s3::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{
    ChecksumAlgorithm, ChecksumMode, CompletedMultipartUpload, CompletedPart, MetadataDirective,
    StorageClass,
};
use aws_sdk_s3::Client;
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use glacier_emulator::*;
use md5::Digest as _;
use sha2::Digest as _;
use support::{s3_client, s3_config};

const MIB: usize = 1 << 20;
const BUCKET: &str = "exports";

// ---------------------------------------------------------------------------------------------
// Helpers.

/// Deterministic pseudo-random bytes (xorshift), so different objects differ.
fn bytes(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

fn sha256(data: &[u8]) -> Vec<u8> {
    sha2::Sha256::digest(data).to_vec()
}

fn md5(data: &[u8]) -> Vec<u8> {
    md5::Md5::digest(data).to_vec()
}

fn b64_sha256(data: &[u8]) -> String {
    B64.encode(sha256(data))
}

fn quoted_md5(data: &[u8]) -> String {
    format!("\"{}\"", hex::encode(md5(data)))
}

/// The error code and HTTP status of a failed call (0: no response at all).
fn fail<O: std::fmt::Debug, E: ProvideErrorMetadata + std::fmt::Debug>(
    r: Result<O, SdkError<E>>,
) -> (String, u16) {
    let e = r.expect_err("the call should fail");
    let status = e.raw_response().map_or(0, |r| r.status().as_u16());
    (e.code().unwrap_or("<no code>").to_string(), status)
}

fn failed(code: &str, status: u16) -> (String, u16) {
    (code.to_string(), status)
}

async fn setup() -> (Emulator, Client) {
    let emu = Emulator::start();
    let c = s3_client(&emu.endpoint());
    c.create_bucket().bucket(BUCKET).send().await.unwrap();
    (emu, c)
}

async fn put(c: &Client, key: &str, data: &[u8]) -> String {
    c.put_object()
        .bucket(BUCKET)
        .key(key)
        .body(ByteStream::from(data.to_vec()))
        .send()
        .await
        .unwrap()
        .e_tag()
        .unwrap()
        .to_string()
}

async fn get(c: &Client, key: &str) -> Vec<u8> {
    let out = c.get_object().bucket(BUCKET).key(key).send().await.unwrap();
    out.body.collect().await.unwrap().into_bytes().to_vec()
}

async fn create_upload(c: &Client, key: &str) -> String {
    c.create_multipart_upload()
        .bucket(BUCKET)
        .key(key)
        .checksum_algorithm(ChecksumAlgorithm::Sha256)
        .send()
        .await
        .unwrap()
        .upload_id()
        .unwrap()
        .to_string()
}

/// Uploads a part with its SHA-256 checksum; returns the part as Complete lists it.
async fn upload_part(c: &Client, key: &str, id: &str, n: i32, data: &[u8]) -> CompletedPart {
    let out = c
        .upload_part()
        .bucket(BUCKET)
        .key(key)
        .upload_id(id)
        .part_number(n)
        .checksum_sha256(b64_sha256(data))
        .body(ByteStream::from(data.to_vec()))
        .send()
        .await
        .unwrap();
    assert_eq!(out.e_tag(), Some(quoted_md5(data).as_str()));
    assert_eq!(out.checksum_sha256(), Some(b64_sha256(data).as_str()));
    CompletedPart::builder()
        .part_number(n)
        .e_tag(out.e_tag().unwrap())
        .checksum_sha256(out.checksum_sha256().unwrap())
        .build()
}

fn part_list(parts: Vec<CompletedPart>) -> CompletedMultipartUpload {
    CompletedMultipartUpload::builder()
        .set_parts(Some(parts))
        .build()
}

/// One raw HTTP/1.1 exchange (`Connection: close`); returns status and body.
fn raw(addr: std::net::SocketAddr, head: &str, body: &[u8]) -> (u16, String) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.write_all(head.as_bytes()).unwrap();
    s.write_all(body).unwrap();
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).unwrap();
    let text = String::from_utf8_lossy(&buf).to_string();
    let status = text.split(' ').nth(1).unwrap().parse().unwrap();
    let body = text.split_once("\r\n\r\n").unwrap().1.to_string();
    (status, body)
}

/// A unique path in the temporary directory, removed when dropped.
struct TempFile(std::path::PathBuf);

impl TempFile {
    fn with(name: &str, data: &[u8]) -> TempFile {
        let path =
            std::env::temp_dir().join(format!("glacier-emulator-s3-{}-{name}", std::process::id()));
        std::fs::write(&path, data).unwrap();
        TempFile(path)
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

// ---------------------------------------------------------------------------------------------
// Objects.

#[tokio::test]
async fn put_head_get_with_metadata_and_storage_class() {
    let (emu, c) = setup().await;
    assert_eq!(
        fail(c.create_bucket().bucket(BUCKET).send().await),
        failed("BucketAlreadyOwnedByYou", 409)
    );
    c.head_bucket().bucket(BUCKET).send().await.unwrap();
    assert_eq!(fail(c.head_bucket().bucket("absent").send().await).1, 404);

    let data = bytes(3000, 1);
    let out = c
        .put_object()
        .bucket(BUCKET)
        .key("vault/a.bin")
        .metadata("Glacier-Archive-Id", "abc-123")
        .metadata("tree-hash", "00ff")
        .storage_class(StorageClass::DeepArchive)
        .content_type("application/x-test")
        .checksum_sha256(b64_sha256(&data))
        .body(ByteStream::from(data.clone()))
        .send()
        .await
        .unwrap();
    assert_eq!(out.e_tag(), Some(quoted_md5(&data).as_str()));
    assert_eq!(out.checksum_sha256(), Some(b64_sha256(&data).as_str()));

    let head = c
        .head_object()
        .bucket(BUCKET)
        .key("vault/a.bin")
        .checksum_mode(ChecksumMode::Enabled)
        .send()
        .await
        .unwrap();
    assert_eq!(head.content_length(), Some(3000));
    assert_eq!(head.storage_class(), Some(&StorageClass::DeepArchive));
    assert_eq!(head.e_tag(), Some(quoted_md5(&data).as_str()));
    assert_eq!(head.checksum_sha256(), Some(b64_sha256(&data).as_str()));
    assert_eq!(head.content_type(), Some("application/x-test"));
    let want: BTreeMap<String, String> = [("glacier-archive-id", "abc-123"), ("tree-hash", "00ff")]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let got: BTreeMap<String, String> = head.metadata().unwrap().clone().into_iter().collect();
    assert_eq!(got, want);
    // Without checksum mode, no checksum.
    let plain = c
        .head_object()
        .bucket(BUCKET)
        .key("vault/a.bin")
        .send()
        .await
        .unwrap();
    assert_eq!(plain.checksum_sha256(), None);

    // A DEEP_ARCHIVE object reads at once: restores are not emulated.
    let full = c
        .get_object()
        .bucket(BUCKET)
        .key("vault/a.bin")
        .checksum_mode(ChecksumMode::Enabled)
        .send()
        .await
        .unwrap();
    assert_eq!(full.checksum_sha256(), Some(b64_sha256(&data).as_str()));
    assert_eq!(full.body.collect().await.unwrap().into_bytes(), data);

    let ranged = c
        .get_object()
        .bucket(BUCKET)
        .key("vault/a.bin")
        .range("bytes=10-19")
        .send()
        .await
        .unwrap();
    assert_eq!(ranged.content_range(), Some("bytes 10-19/3000"));
    assert_eq!(
        ranged.body.collect().await.unwrap().into_bytes(),
        data[10..20]
    );
    let tail = c
        .get_object()
        .bucket(BUCKET)
        .key("vault/a.bin")
        .range("bytes=-5")
        .send()
        .await
        .unwrap();
    assert_eq!(
        tail.body.collect().await.unwrap().into_bytes(),
        data[2995..]
    );
    assert_eq!(
        fail(
            c.get_object()
                .bucket(BUCKET)
                .key("vault/a.bin")
                .range("bytes=3000-")
                .send()
                .await
        ),
        failed("InvalidRange", 416)
    );

    let info = emu.s3_object(BUCKET, "vault/a.bin").unwrap();
    assert_eq!(info.data, data);
    assert_eq!(info.metadata, want);
    assert_eq!(info.storage_class, "DEEP_ARCHIVE");
    assert_eq!(info.checksum_sha256, Some(b64_sha256(&data)));
    assert_eq!((info.parts, info.etag), (0, quoted_md5(&data)));

    // STANDARD is not named on HEAD, as S3 does; no checksum was sent, none is kept.
    put(&c, "std", b"x").await;
    let head = c
        .head_object()
        .bucket(BUCKET)
        .key("std")
        .send()
        .await
        .unwrap();
    assert_eq!(head.storage_class(), None);
    assert_eq!(
        emu.s3_object(BUCKET, "std").unwrap().storage_class,
        "STANDARD"
    );
    assert_eq!(emu.s3_object(BUCKET, "std").unwrap().checksum_sha256, None);

    // Unknown keys and buckets.
    assert_eq!(
        fail(c.get_object().bucket(BUCKET).key("nope").send().await),
        failed("NoSuchKey", 404)
    );
    assert_eq!(
        fail(c.head_object().bucket(BUCKET).key("nope").send().await).1,
        404
    );
    assert_eq!(
        fail(
            c.put_object()
                .bucket("absent")
                .key("k")
                .body(ByteStream::from_static(b"x"))
                .send()
                .await
        ),
        failed("NoSuchBucket", 404)
    );
    c.delete_object()
        .bucket(BUCKET)
        .key("std")
        .send()
        .await
        .unwrap();
    assert_eq!(emu.s3_keys(BUCKET), vec!["vault/a.bin".to_string()]);
}

#[tokio::test]
async fn digests_that_do_not_match_store_nothing() {
    let (emu, c) = setup().await;
    let data = bytes(1000, 2);
    let wrong_sha = c
        .put_object()
        .bucket(BUCKET)
        .key("k")
        .checksum_sha256(b64_sha256(b"something else"))
        .body(ByteStream::from(data.clone()))
        .send()
        .await;
    assert_eq!(fail(wrong_sha), failed("BadDigest", 400));
    let wrong_md5 = c
        .put_object()
        .bucket(BUCKET)
        .key("k")
        .content_md5(B64.encode(md5(b"something else")))
        .body(ByteStream::from(data.clone()))
        .send()
        .await;
    assert_eq!(fail(wrong_md5), failed("BadDigest", 400));
    let not_a_digest = c
        .put_object()
        .bucket(BUCKET)
        .key("k")
        .checksum_sha256("bm90IGEgZGlnZXN0")
        .body(ByteStream::from(data.clone()))
        .send()
        .await;
    assert_eq!(fail(not_a_digest), failed("InvalidRequest", 400));
    assert!(emu.s3_keys(BUCKET).is_empty());
    // The right digests are accepted.
    c.put_object()
        .bucket(BUCKET)
        .key("k")
        .content_md5(B64.encode(md5(&data)))
        .checksum_sha256(b64_sha256(&data))
        .body(ByteStream::from(data.clone()))
        .send()
        .await
        .unwrap();
    assert_eq!(emu.s3_object(BUCKET, "k").unwrap().data, data);

    // A part with a wrong checksum is not stored either.
    let id = create_upload(&c, "big").await;
    let bad_part = c
        .upload_part()
        .bucket(BUCKET)
        .key("big")
        .upload_id(&id)
        .part_number(1)
        .checksum_sha256(b64_sha256(b"other"))
        .body(ByteStream::from(data.clone()))
        .send()
        .await;
    assert_eq!(fail(bad_part), failed("BadDigest", 400));
    // And one without, to an upload created with SHA256, is refused.
    let no_sum = c
        .upload_part()
        .bucket(BUCKET)
        .key("big")
        .upload_id(&id)
        .part_number(1)
        .body(ByteStream::from(data.clone()))
        .send()
        .await;
    assert_eq!(fail(no_sum), failed("InvalidRequest", 400));
    assert_eq!(emu.s3_open_uploads(BUCKET)[0].parts, vec![]);
}

#[tokio::test]
async fn limits_on_keys_metadata_and_storage_classes() {
    let (emu, c) = setup().await;
    let long_key = "k".repeat(1025);
    let r = c
        .put_object()
        .bucket(BUCKET)
        .key(&long_key)
        .body(ByteStream::from_static(b"x"))
        .send()
        .await;
    assert_eq!(fail(r), failed("KeyTooLongError", 400));
    c.put_object()
        .bucket(BUCKET)
        .key("k".repeat(1024))
        .body(ByteStream::from_static(b"x"))
        .send()
        .await
        .unwrap();

    // 2 KiB of names and values is the most: "m" + 2047 bytes fits, one more does not.
    let r = c
        .put_object()
        .bucket(BUCKET)
        .key("meta")
        .metadata("m", "v".repeat(2048))
        .body(ByteStream::from_static(b"x"))
        .send()
        .await;
    assert_eq!(fail(r), failed("MetadataTooLarge", 400));
    c.put_object()
        .bucket(BUCKET)
        .key("meta")
        .metadata("m", "v".repeat(2047))
        .body(ByteStream::from_static(b"x"))
        .send()
        .await
        .unwrap();

    let r = c
        .put_object()
        .bucket(BUCKET)
        .key("class")
        .storage_class(StorageClass::from("REDUCED_REDUNDANCY"))
        .body(ByteStream::from_static(b"x"))
        .send()
        .await;
    assert_eq!(fail(r), failed("InvalidStorageClass", 400));
    for class in [
        "STANDARD",
        "STANDARD_IA",
        "INTELLIGENT_TIERING",
        "GLACIER",
        "GLACIER_IR",
        "DEEP_ARCHIVE",
    ] {
        c.put_object()
            .bucket(BUCKET)
            .key(class)
            .storage_class(StorageClass::from(class))
            .body(ByteStream::from_static(b"x"))
            .send()
            .await
            .unwrap();
        assert_eq!(emu.s3_object(BUCKET, class).unwrap().storage_class, class);
    }
    assert_eq!(emu.s3_keys(BUCKET).len(), 8);
}

/// The conditions a careful writer uses: `If-None-Match: *` not to overwrite, `If-Match` to
/// overwrite only what it saw; on reads, `If-Match` and `If-None-Match`.
#[tokio::test]
async fn conditional_writes_and_reads() {
    let (emu, c) = setup().await;
    let put_if_absent = |data: &'static [u8]| {
        c.put_object()
            .bucket(BUCKET)
            .key("k")
            .if_none_match("*")
            .body(ByteStream::from_static(data))
            .send()
    };
    let etag = put_if_absent(b"first")
        .await
        .unwrap()
        .e_tag()
        .unwrap()
        .to_string();
    assert_eq!(
        fail(put_if_absent(b"second").await),
        failed("PreconditionFailed", 412)
    );
    assert_eq!(emu.s3_object(BUCKET, "k").unwrap().data, b"first");
    let r = c
        .put_object()
        .bucket(BUCKET)
        .key("k")
        .if_match("\"0000\"")
        .body(ByteStream::from_static(b"third"))
        .send()
        .await;
    assert_eq!(fail(r), failed("PreconditionFailed", 412));
    c.put_object()
        .bucket(BUCKET)
        .key("k")
        .if_match(&etag)
        .body(ByteStream::from_static(b"third"))
        .send()
        .await
        .unwrap();
    assert_eq!(emu.s3_object(BUCKET, "k").unwrap().data, b"third");

    // Complete checks too, and a refusal leaves the upload open.
    let id = create_upload(&c, "k").await;
    let part = upload_part(&c, "k", &id, 1, b"multi").await;
    let r = c
        .complete_multipart_upload()
        .bucket(BUCKET)
        .key("k")
        .upload_id(&id)
        .if_none_match("*")
        .multipart_upload(part_list(vec![part]))
        .send()
        .await;
    assert_eq!(fail(r), failed("PreconditionFailed", 412));
    assert_eq!(emu.s3_open_uploads(BUCKET).len(), 1);
    assert_eq!(emu.s3_object(BUCKET, "k").unwrap().data, b"third");

    let etag = quoted_md5(b"third");
    let r = c
        .get_object()
        .bucket(BUCKET)
        .key("k")
        .if_match(quoted_md5(b"first"))
        .send()
        .await;
    assert_eq!(fail(r).1, 412);
    let got = c
        .get_object()
        .bucket(BUCKET)
        .key("k")
        .if_match(&etag)
        .send()
        .await
        .unwrap();
    assert_eq!(
        got.body.collect().await.unwrap().into_bytes(),
        &b"third"[..]
    );
    let r = c
        .head_object()
        .bucket(BUCKET)
        .key("k")
        .if_none_match(&etag)
        .send()
        .await;
    assert_eq!(fail(r).1, 304);
}

// ---------------------------------------------------------------------------------------------
// Multipart uploads.

#[tokio::test]
async fn multipart_upload_completes_with_composite_checksum_and_etag() {
    let (emu, c) = setup().await;
    let key = "vault/big archive";
    let id = c
        .create_multipart_upload()
        .bucket(BUCKET)
        .key(key)
        .checksum_algorithm(ChecksumAlgorithm::Sha256)
        .storage_class(StorageClass::Glacier)
        .metadata("archive-id", "xyz")
        .send()
        .await
        .unwrap()
        .upload_id()
        .unwrap()
        .to_string();
    let data = [bytes(5 * MIB, 1), bytes(5 * MIB, 2), bytes(123, 3)];
    let mut parts = Vec::new();
    for (i, d) in data.iter().enumerate() {
        parts.push(upload_part(&c, key, &id, i as i32 + 1, d).await);
    }

    let open = emu.s3_open_uploads(BUCKET);
    assert_eq!(open.len(), 1);
    assert_eq!(
        (open[0].key.as_str(), open[0].upload_id.as_str()),
        (key, id.as_str())
    );
    assert_eq!(
        open[0].parts,
        vec![(1, 5 * MIB as u64), (2, 5 * MIB as u64), (3, 123)]
    );

    // ListParts, two at a time.
    let page = c
        .list_parts()
        .bucket(BUCKET)
        .key(key)
        .upload_id(&id)
        .max_parts(2)
        .send()
        .await
        .unwrap();
    assert_eq!(page.is_truncated(), Some(true));
    assert_eq!(page.next_part_number_marker(), Some("2"));
    let listed: Vec<_> = page
        .parts()
        .iter()
        .map(|p| (p.part_number(), p.size()))
        .collect();
    assert_eq!(
        listed,
        vec![
            (Some(1), Some(5 * MIB as i64)),
            (Some(2), Some(5 * MIB as i64))
        ]
    );
    assert_eq!(page.parts()[1].e_tag(), Some(quoted_md5(&data[1]).as_str()));
    assert_eq!(
        page.parts()[1].checksum_sha256(),
        Some(b64_sha256(&data[1]).as_str())
    );
    assert!(page.parts()[0].last_modified().is_some());
    let rest = c
        .list_parts()
        .bucket(BUCKET)
        .key(key)
        .upload_id(&id)
        .max_parts(2)
        .part_number_marker("2")
        .send()
        .await
        .unwrap();
    assert_eq!(rest.is_truncated(), Some(false));
    assert_eq!(rest.parts().len(), 1);
    assert_eq!(rest.parts()[0].part_number(), Some(3));
    assert_eq!(rest.parts()[0].size(), Some(123));

    let done = c
        .complete_multipart_upload()
        .bucket(BUCKET)
        .key(key)
        .upload_id(&id)
        .multipart_upload(part_list(parts.clone()))
        .send()
        .await
        .unwrap();
    let md5s: Vec<u8> = data.iter().flat_map(|d| md5(d)).collect();
    let shas: Vec<u8> = data.iter().flat_map(|d| sha256(d)).collect();
    let etag = format!("\"{}-3\"", hex::encode(md5(&md5s)));
    let composite = format!("{}-3", B64.encode(sha256(&shas)));
    assert_eq!(done.e_tag(), Some(etag.as_str()));
    assert_eq!(done.checksum_sha256(), Some(composite.as_str()));
    assert!(emu.s3_open_uploads(BUCKET).is_empty());

    let head = c
        .head_object()
        .bucket(BUCKET)
        .key(key)
        .checksum_mode(ChecksumMode::Enabled)
        .send()
        .await
        .unwrap();
    assert_eq!(head.checksum_sha256(), Some(composite.as_str()));
    assert_eq!(head.e_tag(), Some(etag.as_str()));
    assert_eq!(head.storage_class(), Some(&StorageClass::Glacier));
    assert_eq!(head.content_length(), Some(10 * MIB as i64 + 123));
    let whole: Vec<u8> = data.concat();
    assert_eq!(get(&c, key).await, whole);
    let info = emu.s3_object(BUCKET, key).unwrap();
    assert_eq!((info.parts, info.etag.as_str()), (3, etag.as_str()));
    assert_eq!(info.checksum_sha256.as_deref(), Some(composite.as_str()));
    assert_eq!(
        info.metadata.get("archive-id").map(String::as_str),
        Some("xyz")
    );

    // A repeated Complete (a reply lost, say) answers as the first did.
    let again = c
        .complete_multipart_upload()
        .bucket(BUCKET)
        .key(key)
        .upload_id(&id)
        .multipart_upload(part_list(parts))
        .send()
        .await
        .unwrap();
    assert_eq!(again.e_tag(), Some(etag.as_str()));
}

#[tokio::test]
async fn complete_checks_sizes_order_etags_and_checksums() {
    let (emu, c) = setup().await;
    let key = "k";
    let id = create_upload(&c, key).await;
    let one = upload_part(&c, key, &id, 1, &bytes(MIB, 1)).await;
    let two = upload_part(&c, key, &id, 2, &bytes(10, 2)).await;
    let complete = |parts: Vec<CompletedPart>| {
        c.complete_multipart_upload()
            .bucket(BUCKET)
            .key(key)
            .upload_id(&id)
            .multipart_upload(part_list(parts))
            .send()
    };
    // Part 1 is under 5 MiB and not the last.
    assert_eq!(
        fail(complete(vec![one.clone(), two.clone()]).await),
        failed("EntityTooSmall", 400)
    );
    assert_eq!(
        fail(complete(vec![two.clone(), one.clone()]).await),
        failed("InvalidPartOrder", 400)
    );
    let cpart = |n: i32, etag: Option<&str>, sum: Option<String>| {
        CompletedPart::builder()
            .part_number(n)
            .set_e_tag(etag.map(String::from))
            .set_checksum_sha256(sum)
            .build()
    };
    let wrong_etag = cpart(1, Some("\"0000\""), one.checksum_sha256().map(String::from));
    assert_eq!(
        fail(complete(vec![wrong_etag]).await),
        failed("InvalidPart", 400)
    );
    let wrong_sum = cpart(1, one.e_tag(), Some(b64_sha256(b"x")));
    assert_eq!(
        fail(complete(vec![wrong_sum]).await),
        failed("InvalidPart", 400)
    );
    let missing = cpart(3, two.e_tag(), two.checksum_sha256().map(String::from));
    assert_eq!(
        fail(complete(vec![one.clone(), missing]).await),
        failed("InvalidPart", 400)
    );
    let no_sum = cpart(1, one.e_tag(), None);
    assert_eq!(
        fail(complete(vec![no_sum]).await),
        failed("InvalidRequest", 400)
    );
    // Nothing completed: the upload is still open, with both parts.
    assert!(emu.s3_keys(BUCKET).is_empty());
    assert_eq!(emu.s3_open_uploads(BUCKET)[0].parts.len(), 2);
    // The last part alone may be small.
    complete(vec![one]).await.unwrap();
    assert_eq!(emu.s3_object(BUCKET, key).unwrap().data, bytes(MIB, 1));

    // A part number out of range.
    let id = create_upload(&c, key).await;
    let r = c
        .upload_part()
        .bucket(BUCKET)
        .key(key)
        .upload_id(&id)
        .part_number(10_001)
        .checksum_sha256(b64_sha256(b"x"))
        .body(ByteStream::from_static(b"x"))
        .send()
        .await;
    assert_eq!(fail(r), failed("InvalidArgument", 400));
}

#[tokio::test]
async fn abort_leaves_no_upload() {
    let (emu, c) = setup().await;
    let id = create_upload(&c, "k").await;
    upload_part(&c, "k", &id, 1, b"data").await;
    c.abort_multipart_upload()
        .bucket(BUCKET)
        .key("k")
        .upload_id(&id)
        .send()
        .await
        .unwrap();
    assert!(emu.s3_open_uploads(BUCKET).is_empty());
    assert!(emu.s3_keys(BUCKET).is_empty());
    let list = c
        .list_parts()
        .bucket(BUCKET)
        .key("k")
        .upload_id(&id)
        .send()
        .await;
    assert_eq!(fail(list), failed("NoSuchUpload", 404));
    let again = c
        .abort_multipart_upload()
        .bucket(BUCKET)
        .key("k")
        .upload_id(&id)
        .send()
        .await;
    assert_eq!(fail(again), failed("NoSuchUpload", 404));
    let part = c
        .upload_part()
        .bucket(BUCKET)
        .key("k")
        .upload_id(&id)
        .part_number(1)
        .body(ByteStream::from_static(b"x"))
        .send()
        .await;
    assert_eq!(fail(part), failed("NoSuchUpload", 404));
}

#[tokio::test]
async fn list_multipart_uploads_lists_open_ones_by_page() {
    let (emu, c) = setup().await;
    let a = create_upload(&c, "a").await;
    let b1 = create_upload(&c, "b").await;
    let b2 = create_upload(&c, "b").await;
    let cx = create_upload(&c, "c/x").await;
    let done = create_upload(&c, "d").await;
    let part = upload_part(&c, "d", &done, 1, b"x").await;
    c.complete_multipart_upload()
        .bucket(BUCKET)
        .key("d")
        .upload_id(&done)
        .multipart_upload(part_list(vec![part]))
        .send()
        .await
        .unwrap();

    let mut seen = Vec::new();
    let (mut key_marker, mut id_marker) = (None::<String>, None::<String>);
    let mut pages = 0;
    loop {
        let page = c
            .list_multipart_uploads()
            .bucket(BUCKET)
            .max_uploads(2)
            .set_key_marker(key_marker.clone())
            .set_upload_id_marker(id_marker.clone())
            .send()
            .await
            .unwrap();
        pages += 1;
        for u in page.uploads() {
            seen.push((
                u.key().unwrap().to_string(),
                u.upload_id().unwrap().to_string(),
            ));
            assert!(u.initiated().is_some());
        }
        if page.is_truncated() != Some(true) {
            break;
        }
        key_marker = page.next_key_marker().map(String::from);
        id_marker = page.next_upload_id_marker().map(String::from);
    }
    let want: Vec<(String, String)> = [("a", a), ("b", b1), ("b", b2), ("c/x", cx.clone())]
        .into_iter()
        .map(|(k, id)| (k.to_string(), id))
        .collect();
    assert_eq!(seen, want);
    assert_eq!(pages, 2);
    let prefixed = c
        .list_multipart_uploads()
        .bucket(BUCKET)
        .prefix("c/")
        .send()
        .await
        .unwrap();
    assert_eq!(prefixed.uploads().len(), 1);
    assert_eq!(prefixed.uploads()[0].upload_id(), Some(cx.as_str()));
    assert_eq!(emu.s3_open_uploads(BUCKET).len(), 4);
}

// ---------------------------------------------------------------------------------------------
// Listings, copies, keys.

#[tokio::test]
async fn list_objects_v2_paginates() {
    let (_emu, c) = setup().await;
    let mut keys: Vec<String> = (0..7).map(|i| format!("v/{i:02}")).collect();
    keys.push("w/other".into());
    for (i, k) in keys.iter().enumerate() {
        put(&c, k, &bytes(i + 1, i as u64)).await;
    }
    c.put_object()
        .bucket(BUCKET)
        .key("v/03")
        .storage_class(StorageClass::GlacierIr)
        .body(ByteStream::from(bytes(4, 3)))
        .send()
        .await
        .unwrap();

    let mut listed = Vec::new();
    let mut token = None::<String>;
    let mut counts = Vec::new();
    loop {
        let page = c
            .list_objects_v2()
            .bucket(BUCKET)
            .prefix("v/")
            .max_keys(3)
            .set_continuation_token(token.clone())
            .send()
            .await
            .unwrap();
        counts.push(page.key_count().unwrap());
        for o in page.contents() {
            listed.push((
                o.key().unwrap().to_string(),
                o.size().unwrap(),
                o.e_tag().unwrap().to_string(),
                o.storage_class().unwrap().as_str().to_string(),
            ));
            assert!(o.last_modified().is_some());
        }
        match page.next_continuation_token() {
            Some(t) => {
                assert_eq!(page.is_truncated(), Some(true));
                token = Some(t.to_string());
            }
            None => {
                assert_eq!(page.is_truncated(), Some(false));
                break;
            }
        }
    }
    assert_eq!(counts, vec![3, 3, 1]);
    let want: Vec<(String, i64, String, String)> = (0..7)
        .map(|i| {
            let data = bytes(i + 1, i as u64);
            let class = if i == 3 { "GLACIER_IR" } else { "STANDARD" };
            (
                format!("v/{i:02}"),
                i as i64 + 1,
                quoted_md5(&data),
                class.to_string(),
            )
        })
        .collect();
    assert_eq!(listed, want);

    // With a delimiter, a common prefix stands for all keys under it.
    let top = c
        .list_objects_v2()
        .bucket(BUCKET)
        .delimiter("/")
        .send()
        .await
        .unwrap();
    let prefixes: Vec<_> = top
        .common_prefixes()
        .iter()
        .map(|p| p.prefix().unwrap().to_string())
        .collect();
    assert_eq!(prefixes, vec!["v/".to_string(), "w/".to_string()]);
    assert!(top.contents().is_empty());
    assert_eq!(
        fail(c.list_objects_v2().bucket("absent").send().await),
        failed("NoSuchBucket", 404)
    );
}

#[tokio::test]
async fn copy_object_with_replaced_or_copied_metadata() {
    let (emu, c) = setup().await;
    let data = bytes(2000, 5);
    c.put_object()
        .bucket(BUCKET)
        .key("src")
        .metadata("a", "1")
        .checksum_sha256(b64_sha256(&data))
        .body(ByteStream::from(data.clone()))
        .send()
        .await
        .unwrap();
    let out = c
        .copy_object()
        .bucket(BUCKET)
        .key("dst")
        .copy_source(format!("{BUCKET}/src"))
        .metadata_directive(MetadataDirective::Replace)
        .metadata("b", "2")
        .storage_class(StorageClass::GlacierIr)
        .send()
        .await
        .unwrap();
    let result = out.copy_object_result().unwrap();
    assert_eq!(result.e_tag(), Some(quoted_md5(&data).as_str()));
    let dst = emu.s3_object(BUCKET, "dst").unwrap();
    assert_eq!(dst.data, data);
    assert_eq!(
        dst.metadata,
        BTreeMap::from([("b".to_string(), "2".to_string())])
    );
    assert_eq!(dst.storage_class, "GLACIER_IR");
    assert_eq!(dst.checksum_sha256, Some(b64_sha256(&data)));

    c.copy_object()
        .bucket(BUCKET)
        .key("dst2")
        .copy_source(format!("/{BUCKET}/src"))
        .send()
        .await
        .unwrap();
    let dst2 = emu.s3_object(BUCKET, "dst2").unwrap();
    assert_eq!(
        dst2.metadata,
        BTreeMap::from([("a".to_string(), "1".to_string())])
    );
    assert_eq!(dst2.storage_class, "STANDARD");

    // Onto itself, changing only the storage class, is how S3 moves an object between
    // classes; changing nothing is refused.
    c.copy_object()
        .bucket(BUCKET)
        .key("src")
        .copy_source(format!("{BUCKET}/src"))
        .storage_class(StorageClass::DeepArchive)
        .send()
        .await
        .unwrap();
    assert_eq!(
        emu.s3_object(BUCKET, "src").unwrap().storage_class,
        "DEEP_ARCHIVE"
    );
    let same = c
        .copy_object()
        .bucket(BUCKET)
        .key("src")
        .copy_source(format!("{BUCKET}/src"))
        .send()
        .await;
    assert_eq!(fail(same), failed("InvalidRequest", 400));
    let missing = c
        .copy_object()
        .bucket(BUCKET)
        .key("x")
        .copy_source(format!("{BUCKET}/absent"))
        .send()
        .await;
    assert_eq!(fail(missing), failed("NoSuchKey", 404));
}

#[tokio::test]
async fn awkward_keys_round_trip() {
    let (emu, c) = setup().await;
    let keys = [
        "dir/sub/file.txt",
        "with space",
        "100%",
        "100%25",
        "a+b",
        "naïve/日本語",
        "comma,here",
        "quote\"s and 'apostrophes'",
        "semi;colon&amp=eq?q#hash",
        "~tilde*star(paren)!$@:",
        "trailing/",
    ];
    for k in keys {
        put(&c, k, k.as_bytes()).await;
    }
    let mut want: Vec<String> = keys.iter().map(|k| k.to_string()).collect();
    want.sort();
    assert_eq!(emu.s3_keys(BUCKET), want);
    let listed = c.list_objects_v2().bucket(BUCKET).send().await.unwrap();
    let names: Vec<String> = listed
        .contents()
        .iter()
        .map(|o| o.key().unwrap().to_string())
        .collect();
    assert_eq!(names, want);
    for k in keys {
        assert_eq!(get(&c, k).await, k.as_bytes(), "{k}");
        let head = c.head_object().bucket(BUCKET).key(k).send().await.unwrap();
        assert_eq!(head.content_length(), Some(k.len() as i64), "{k}");
    }
    // A multipart upload and a delete under an awkward key.
    let key = "odd +%,\"/ключ";
    let id = create_upload(&c, key).await;
    let part = upload_part(&c, key, &id, 1, b"multi").await;
    assert_eq!(emu.s3_open_uploads(BUCKET)[0].key, key);
    c.complete_multipart_upload()
        .bucket(BUCKET)
        .key(key)
        .upload_id(&id)
        .multipart_upload(part_list(vec![part]))
        .send()
        .await
        .unwrap();
    assert_eq!(get(&c, key).await, b"multi");
    c.delete_object()
        .bucket(BUCKET)
        .key("100%")
        .send()
        .await
        .unwrap();
    assert!(emu.s3_object(BUCKET, "100%").is_none());
    assert!(emu.s3_object(BUCKET, "100%25").is_some());
}

// ---------------------------------------------------------------------------------------------
// Signatures and bodies.

#[tokio::test]
async fn a_wrong_secret_fails_with_signature_does_not_match() {
    use aws_sdk_s3::config::Credentials;
    let emu = Emulator::start();
    let wrong = Client::from_conf(
        s3_config(&emu.endpoint())
            .credentials_provider(Credentials::new(
                ACCESS_KEY_ID,
                "not-the-secret",
                None,
                None,
                "test",
            ))
            .build(),
    );
    assert_eq!(
        fail(wrong.create_bucket().bucket(BUCKET).send().await),
        failed("SignatureDoesNotMatch", 403)
    );
    let unknown = Client::from_conf(
        s3_config(&emu.endpoint())
            .credentials_provider(Credentials::new("AKIDUNKNOWN", "x", None, None, "test"))
            .build(),
    );
    assert_eq!(
        fail(unknown.create_bucket().bucket(BUCKET).send().await),
        failed("InvalidAccessKeyId", 403)
    );
    assert!(emu.s3_buckets().is_empty());
    assert_eq!(emu.stats().s3_requests_for(S3Op::CreateBucket), 2);
    // The same switch as Glacier's turns the check off.
    emu.set_verify_signatures(false);
    wrong.create_bucket().bucket(BUCKET).send().await.unwrap();
    assert_eq!(emu.s3_buckets(), vec![BUCKET.to_string()]);
}

/// Streamed bodies: without a checksum the SDK signs `UNSIGNED-PAYLOAD`. Asked for a checksum
/// it computes itself (which the export's client, computing only when required, does not),
/// over plain HTTP it sends a signed `aws-chunked` body with the checksum as a trailer.
#[tokio::test]
async fn streamed_bodies_with_and_without_trailing_checksums() {
    use aws_sdk_s3::config::RequestChecksumCalculation;
    let (emu, c) = setup().await;
    let data = bytes(200_000, 9);
    let file = TempFile::with("streamed", &data);
    c.put_object()
        .bucket(BUCKET)
        .key("unsigned")
        .body(ByteStream::from_path(&file.0).await.unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(emu.s3_object(BUCKET, "unsigned").unwrap().data, data);
    // Naming an algorithm the client does not compute for: S3 refuses the request.
    let r = c
        .put_object()
        .bucket(BUCKET)
        .key("named")
        .checksum_algorithm(ChecksumAlgorithm::Sha256)
        .body(ByteStream::from_path(&file.0).await.unwrap())
        .send()
        .await;
    assert_eq!(fail(r), failed("InvalidRequest", 400));

    let computing = Client::from_conf(
        s3_config(&emu.endpoint())
            .request_checksum_calculation(RequestChecksumCalculation::WhenSupported)
            .build(),
    );
    emu.reset_stats();
    let out = computing
        .put_object()
        .bucket(BUCKET)
        .key("chunked")
        .checksum_algorithm(ChecksumAlgorithm::Sha256)
        .body(ByteStream::from_path(&file.0).await.unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(out.checksum_sha256(), Some(b64_sha256(&data).as_str()));
    let info = emu.s3_object(BUCKET, "chunked").unwrap();
    assert_eq!(info.data, data);
    assert_eq!(info.checksum_sha256, Some(b64_sha256(&data)));

    // A part streamed the same way carries its checksum to ListParts.
    let id = create_upload(&c, "parted").await;
    let part = computing
        .upload_part()
        .bucket(BUCKET)
        .key("parted")
        .upload_id(&id)
        .part_number(1)
        .checksum_algorithm(ChecksumAlgorithm::Sha256)
        .body(ByteStream::from_path(&file.0).await.unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(part.checksum_sha256(), Some(b64_sha256(&data).as_str()));
    let parts = c
        .list_parts()
        .bucket(BUCKET)
        .key("parted")
        .upload_id(&id)
        .send()
        .await
        .unwrap();
    assert_eq!(
        parts.parts()[0].checksum_sha256(),
        Some(b64_sha256(&data).as_str())
    );
    // Both went through as the streaming kind, each chunk's signature checked.
    assert_eq!(
        emu.s3_request_log(),
        vec![
            (S3Op::PutObject, 200),
            (S3Op::CreateMultipartUpload, 200),
            (S3Op::UploadPart, 200),
            (S3Op::ListParts, 200)
        ]
    );
}

#[test]
fn a_wrong_trailing_checksum_or_content_hash_is_refused() {
    let emu = Emulator::start_with(EmulatorOptions {
        verify_signatures: false,
        ..EmulatorOptions::default()
    });
    emu.s3_create_bucket(BUCKET);
    // Unsigned, but scoped to S3: what makes it an S3 request.
    let auth = "AWS4-HMAC-SHA256 Credential=AKIDEMULATOR/20260101/us-east-1/s3/aws4_request, \
                SignedHeaders=host, Signature=00";
    let chunked = |trailer: &str| {
        let body = format!("5\r\nhello\r\n0\r\nx-amz-checksum-sha256:{trailer}\r\n\r\n");
        let head = format!(
            "PUT /{BUCKET}/k HTTP/1.1\r\nHost: h\r\nAuthorization: {auth}\r\n\
             x-amz-content-sha256: STREAMING-UNSIGNED-PAYLOAD-TRAILER\r\n\
             Content-Encoding: aws-chunked\r\nx-amz-decoded-content-length: 5\r\n\
             x-amz-trailer: x-amz-checksum-sha256\r\nContent-Length: {}\r\n\
             Connection: close\r\n\r\n",
            body.len()
        );
        raw(emu.addr(), &head, body.as_bytes())
    };
    let (status, body) = chunked(&b64_sha256(b"other"));
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("<Code>BadDigest</Code>"), "{body}");
    assert!(emu.s3_keys(BUCKET).is_empty());
    let (status, body) = chunked(&b64_sha256(b"hello"));
    assert_eq!(status, 200, "{body}");
    let info = emu.s3_object(BUCKET, "k").unwrap();
    assert_eq!(info.data, b"hello");
    assert_eq!(info.checksum_sha256, Some(b64_sha256(b"hello")));

    // A hex x-amz-content-sha256 is checked against the body.
    let head = format!(
        "PUT /{BUCKET}/k2 HTTP/1.1\r\nHost: h\r\nAuthorization: {auth}\r\n\
         x-amz-content-sha256: {}\r\nContent-Length: 5\r\nConnection: close\r\n\r\n",
        hex::encode(sha256(b"other"))
    );
    let (status, body) = raw(emu.addr(), &head, b"hello");
    assert_eq!(status, 400, "{body}");
    assert!(
        body.contains("<Code>XAmzContentSHA256Mismatch</Code>"),
        "{body}"
    );
    assert!(emu.s3_object(BUCKET, "k2").is_none());
}

// ---------------------------------------------------------------------------------------------
// The hook, counters and faults.

#[tokio::test]
async fn the_hook_sees_before_and_after_in_order() {
    let emu = Arc::new(Emulator::start());
    emu.s3_create_bucket(BUCKET);
    let c = s3_client(&emu.endpoint());
    // What the emulator holds at each call: the object's presence, the upload's part numbers.
    type Seen = (Stage, S3Op, Option<u32>, Option<u16>, bool, Vec<u32>);
    let seen: Arc<Mutex<Vec<Seen>>> = Arc::default();
    let released = Arc::new(AtomicBool::new(false));
    let weak: Weak<Emulator> = Arc::downgrade(&emu);
    let (log, flag) = (seen.clone(), released.clone());
    emu.s3_set_hook(Some(Arc::new(move |e: &S3Event| {
        let emu = weak.upgrade().unwrap();
        let key = e.key.clone().unwrap_or_default();
        let exists = emu.s3_object(&e.bucket, &key).is_some();
        let parts = emu
            .s3_open_uploads(&e.bucket)
            .first()
            .map(|u| u.parts.iter().map(|p| p.0).collect())
            .unwrap_or_default();
        log.lock()
            .unwrap()
            .push((e.stage, e.op, e.part_number, e.status, exists, parts));
        // The response waits for the hook: the client cannot have it before this is set.
        if e.stage == Stage::After && e.part_number == Some(2) {
            std::thread::sleep(Duration::from_millis(200));
            flag.store(true, Ordering::SeqCst);
        }
    })));

    put(&c, "k", b"data").await;
    let id = create_upload(&c, "m").await;
    let one = upload_part(&c, "m", &id, 1, b"one").await;
    let two = upload_part(&c, "m", &id, 2, b"two").await;
    assert!(
        released.load(Ordering::SeqCst),
        "the response came before the hook ended"
    );
    // Out of order: refused, and the hook still sees both stages.
    c.complete_multipart_upload()
        .bucket(BUCKET)
        .key("m")
        .upload_id(&id)
        .multipart_upload(part_list(vec![two.clone(), one]))
        .send()
        .await
        .unwrap_err();
    // Part 2 alone is the last part, so it may be small.
    c.complete_multipart_upload()
        .bucket(BUCKET)
        .key("m")
        .upload_id(&id)
        .multipart_upload(part_list(vec![two]))
        .send()
        .await
        .unwrap();
    emu.s3_set_hook(None);
    put(&c, "after", b"x").await;

    use S3Op::*;
    use Stage::*;
    let want: Vec<Seen> = vec![
        (Before, PutObject, None, None, false, vec![]),
        (After, PutObject, None, Some(200), true, vec![]),
        (Before, CreateMultipartUpload, None, None, false, vec![]),
        (After, CreateMultipartUpload, None, Some(200), false, vec![]),
        (Before, UploadPart, Some(1), None, false, vec![]),
        (After, UploadPart, Some(1), Some(200), false, vec![1]),
        (Before, UploadPart, Some(2), None, false, vec![1]),
        (After, UploadPart, Some(2), Some(200), false, vec![1, 2]),
        (
            Before,
            CompleteMultipartUpload,
            None,
            None,
            false,
            vec![1, 2],
        ),
        (
            After,
            CompleteMultipartUpload,
            None,
            Some(400),
            false,
            vec![1, 2],
        ),
        (
            Before,
            CompleteMultipartUpload,
            None,
            None,
            false,
            vec![1, 2],
        ),
        (
            After,
            CompleteMultipartUpload,
            None,
            Some(200),
            true,
            vec![],
        ),
    ];
    assert_eq!(*seen.lock().unwrap(), want);
}

#[tokio::test]
async fn counters_count_writes_and_not_reads() {
    let (emu, c) = setup().await;
    assert_eq!(emu.s3_writes(), 1);
    emu.reset_stats();
    put(&c, "a", b"1").await;
    get(&c, "a").await;
    c.head_object()
        .bucket(BUCKET)
        .key("a")
        .send()
        .await
        .unwrap();
    c.list_objects_v2().bucket(BUCKET).send().await.unwrap();
    c.head_bucket().bucket(BUCKET).send().await.unwrap();
    c.copy_object()
        .bucket(BUCKET)
        .key("b")
        .copy_source(format!("{BUCKET}/a"))
        .send()
        .await
        .unwrap();
    let id = create_upload(&c, "m").await;
    let part = upload_part(&c, "m", &id, 1, b"x").await;
    c.list_parts()
        .bucket(BUCKET)
        .key("m")
        .upload_id(&id)
        .send()
        .await
        .unwrap();
    c.list_multipart_uploads()
        .bucket(BUCKET)
        .send()
        .await
        .unwrap();
    c.complete_multipart_upload()
        .bucket(BUCKET)
        .key("m")
        .upload_id(&id)
        .multipart_upload(part_list(vec![part]))
        .send()
        .await
        .unwrap();
    let id = create_upload(&c, "n").await;
    c.abort_multipart_upload()
        .bucket(BUCKET)
        .key("n")
        .upload_id(&id)
        .send()
        .await
        .unwrap();
    c.delete_object()
        .bucket(BUCKET)
        .key("a")
        .send()
        .await
        .unwrap();

    let stats = emu.stats();
    // put, copy, create ×2, part, complete, abort, delete.
    assert_eq!(stats.s3_writes(), 8);
    assert_eq!(emu.s3_writes(), 8);
    for (op, n) in [
        (S3Op::PutObject, 1),
        (S3Op::GetObject, 1),
        (S3Op::HeadObject, 1),
        (S3Op::ListObjectsV2, 1),
        (S3Op::HeadBucket, 1),
        (S3Op::CopyObject, 1),
        (S3Op::CreateMultipartUpload, 2),
        (S3Op::UploadPart, 1),
        (S3Op::ListParts, 1),
        (S3Op::ListMultipartUploads, 1),
        (S3Op::CompleteMultipartUpload, 1),
        (S3Op::AbortMultipartUpload, 1),
        (S3Op::DeleteObject, 1),
    ] {
        assert_eq!(stats.s3_requests_for(op), n, "{op:?}");
    }
    // S3 requests are not Glacier's.
    assert!(stats.requests.is_empty());
    assert_eq!(emu.s3_request_log().len(), 14);
    emu.reset_stats();
    assert_eq!(emu.s3_writes(), 0);
    assert!(emu.s3_request_log().is_empty());
}

#[tokio::test]
async fn scripted_faults_hit_exact_requests() {
    let (emu, c) = setup().await;
    emu.s3_fail_next(S3Op::PutObject, S3FaultKind::InternalError, 1);
    emu.s3_fail_next(S3Op::PutObject, S3FaultKind::SlowDown, 1);
    let r = c
        .put_object()
        .bucket(BUCKET)
        .key("a")
        .body(ByteStream::from_static(b"1"))
        .send()
        .await;
    assert_eq!(fail(r), failed("InternalError", 500));
    let r = c
        .put_object()
        .bucket(BUCKET)
        .key("a")
        .body(ByteStream::from_static(b"1"))
        .send()
        .await;
    assert_eq!(fail(r), failed("SlowDown", 503));
    assert!(emu.s3_keys(BUCKET).is_empty());
    put(&c, "a", b"1").await;

    // A reset before handling stores nothing; one after commit stores, and the client never
    // hears.
    emu.s3_fail_next(S3Op::PutObject, S3FaultKind::Reset, 1);
    let r = c
        .put_object()
        .bucket(BUCKET)
        .key("b")
        .body(ByteStream::from_static(b"2"))
        .send()
        .await;
    assert_eq!(fail(r).1, 0);
    assert!(emu.s3_object(BUCKET, "b").is_none());
    emu.s3_fail_next(S3Op::PutObject, S3FaultKind::ResetAfterCommit, 1);
    let r = c
        .put_object()
        .bucket(BUCKET)
        .key("b")
        .body(ByteStream::from_static(b"2"))
        .send()
        .await;
    assert_eq!(fail(r).1, 0);
    assert_eq!(emu.s3_object(BUCKET, "b").unwrap().data, b"2");

    // The second part of an upload, exactly.
    let id = create_upload(&c, "m").await;
    emu.s3_fail_after(S3Op::UploadPart, 1, S3FaultKind::Reset);
    upload_part(&c, "m", &id, 1, b"one").await;
    let r = c
        .upload_part()
        .bucket(BUCKET)
        .key("m")
        .upload_id(&id)
        .part_number(2)
        .checksum_sha256(b64_sha256(b"two"))
        .body(ByteStream::from_static(b"two"))
        .send()
        .await;
    assert_eq!(fail(r).1, 0);
    assert_eq!(emu.s3_open_uploads(BUCKET)[0].parts, vec![(1, 3)]);
    upload_part(&c, "m", &id, 2, b"two").await;

    let stats = emu.stats();
    assert_eq!(stats.s3_faults.values().sum::<u64>(), 5);
    assert_eq!(stats.s3_faults.get(&S3FaultKind::Reset), Some(&2));
    let puts: Vec<u16> = emu
        .s3_request_log()
        .into_iter()
        .filter(|(op, _)| *op == S3Op::PutObject)
        .map(|(_, s)| s)
        .collect();
    assert_eq!(puts, vec![500, 503, 200, 0, 0]);

    // clear_faults drops what is still scripted.
    emu.s3_fail_next(S3Op::GetObject, S3FaultKind::InternalError, 5);
    emu.clear_faults();
    assert_eq!(get(&c, "a").await, b"1");
}

// ---------------------------------------------------------------------------------------------
// Glacier alongside, and the binary.

#[tokio::test]
async fn glacier_still_answers_on_the_same_endpoint() {
    let (emu, c) = setup().await;
    let glacier = support::sdk_client(&emu.endpoint());
    glacier
        .create_vault()
        .vault_name("photos")
        .send()
        .await
        .unwrap();
    let archive = glacier
        .upload_archive()
        .vault_name("photos")
        .archive_description("one")
        .body(aws_sdk_glacier::primitives::ByteStream::from_static(
            b"glacier data",
        ))
        .send()
        .await
        .unwrap();
    put(&c, "photos/one", b"s3 data").await;
    assert_eq!(emu.vault_names(), vec!["photos".to_string()]);
    assert_eq!(emu.s3_buckets(), vec![BUCKET.to_string()]);
    assert_eq!(
        emu.archive_data("photos", archive.archive_id().unwrap()),
        Some(b"glacier data".to_vec())
    );
    assert_eq!(get(&c, "photos/one").await, b"s3 data");
    let vaults = glacier.list_vaults().send().await.unwrap();
    assert_eq!(vaults.vault_list().len(), 1);
    let stats = emu.stats();
    assert_eq!(stats.requests_for(Op::CreateVault), 1);
    assert_eq!(stats.requests_for(Op::UploadArchive), 1);
    assert_eq!(stats.s3_requests_for(S3Op::PutObject), 1);
    assert_eq!(stats.s3_requests_for(S3Op::CreateBucket), 1);
}

#[tokio::test]
async fn the_binary_creates_buckets_and_serves_s3() {
    use std::io::BufRead;
    use std::process::{Command, Stdio};
    let mut child = Command::new(env!("CARGO_BIN_EXE_glacier-emulator"))
        .args(["--bucket", "first", "--bucket=second"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let mut note = String::new();
    std::io::BufReader::new(child.stderr.take().unwrap())
        .read_line(&mut note)
        .unwrap();
    let c = s3_client(line.trim_end());
    let heads = (
        c.head_bucket().bucket("first").send().await,
        c.head_bucket().bucket("second").send().await,
        c.head_bucket().bucket("third").send().await,
    );
    let _ = child.kill();
    let _ = child.wait();
    assert!(
        note.contains("S3 on the same endpoint, path-style"),
        "{note}"
    );
    heads.0.unwrap();
    heads.1.unwrap();
    assert_eq!(fail(heads.2).1, 404);

    let bad = Command::new(env!("CARGO_BIN_EXE_glacier-emulator"))
        .args(["--bucket", "Not_A_Bucket"])
        .output()
        .unwrap();
    assert_eq!(bad.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("--bucket"));
}
