//! Drives the Glacier emulator through the real aws-sdk-glacier, so the emulator is held to
//! what the SDK sends and expects: every operation's happy path, the documented checks and error
//! codes, the job clock, inventories, vault lock and fault injection. A few tests speak raw HTTP
//! where the SDK cannot produce the request (no version header, chunked bodies), unsigned, with
//! signature verification off; signatures have their own tests (`signatures.rs`).
// A test fails by panicking, so unwrap and expect are how it says what went wrong.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use aws_sdk_glacier::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_glacier::primitives::ByteStream;
use aws_sdk_glacier::types::{InventoryRetrievalJobInput, JobParameters, StatusCode};
use aws_sdk_glacier::Client;
use glacier_emulator::*;
use sha2::{Digest, Sha256};
use support::{sdk_client, sdk_client_with_timeout, sdk_config};

const MIB: usize = 1 << 20;
const HOUR: Duration = Duration::from_secs(3600);
const MINUTE: Duration = Duration::from_secs(60);

// ---------------------------------------------------------------------------------------------
// Helpers.

/// An independent reference tree hash, written out again here so the test does not trust the
/// emulator's own.
fn tree_hash(data: &[u8]) -> String {
    let mut level: Vec<[u8; 32]> = data.chunks(MIB).map(|c| Sha256::digest(c).into()).collect();
    if level.is_empty() {
        return hex::encode(Sha256::digest(b""));
    }
    while level.len() > 1 {
        level = level
            .chunks(2)
            .map(|p| match p {
                [a, b] => Sha256::new()
                    .chain_update(a)
                    .chain_update(b)
                    .finalize()
                    .into(),
                [a] => *a,
                _ => unreachable!(),
            })
            .collect();
    }
    hex::encode(level[0])
}

/// Deterministic pseudo-random bytes (xorshift), so different archives differ.
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

/// The error code and HTTP status of a failed call.
fn fail<O: std::fmt::Debug, E: ProvideErrorMetadata + std::fmt::Debug>(
    r: Result<O, SdkError<E>>,
) -> (String, u16) {
    let e = r.expect_err("the call should fail");
    let status = e.raw_response().map_or(0, |r| r.status().as_u16());
    (e.code().unwrap_or("<no code>").to_string(), status)
}

fn code<O: std::fmt::Debug, E: ProvideErrorMetadata + std::fmt::Debug>(
    r: Result<O, SdkError<E>>,
) -> String {
    fail(r).0
}

async fn setup(vault: &str) -> (Emulator, Client) {
    let emu = Emulator::start();
    let c = sdk_client(&emu.endpoint());
    c.create_vault().vault_name(vault).send().await.unwrap();
    (emu, c)
}

async fn upload(c: &Client, vault: &str, desc: &str, data: &[u8]) -> String {
    c.upload_archive()
        .vault_name(vault)
        .archive_description(desc)
        .body(ByteStream::from(data.to_vec()))
        .send()
        .await
        .unwrap()
        .archive_id()
        .unwrap()
        .to_string()
}

fn archive_params(archive_id: &str) -> aws_sdk_glacier::types::builders::JobParametersBuilder {
    JobParameters::builder()
        .r#type("archive-retrieval")
        .archive_id(archive_id)
}

async fn start_job(c: &Client, vault: &str, params: JobParameters) -> String {
    let out = c
        .initiate_job()
        .vault_name(vault)
        .job_parameters(params)
        .send()
        .await
        .unwrap();
    out.job_id().unwrap().to_string()
}

async fn read_output(
    c: &Client,
    vault: &str,
    job: &str,
    range: Option<&str>,
) -> (i32, Option<String>, Option<String>, Vec<u8>) {
    let out = c
        .get_job_output()
        .vault_name(vault)
        .job_id(job)
        .set_range(range.map(String::from))
        .send()
        .await
        .unwrap();
    let (status, hash, cr) = (
        out.status(),
        out.checksum().map(String::from),
        out.content_range().map(String::from),
    );
    let body = out.body.collect().await.unwrap().into_bytes().to_vec();
    (status, hash, cr, body)
}

/// One raw HTTP/1.1 exchange (`Connection: close`); returns status, headers and body.
fn raw(addr: SocketAddr, head: &str, body: &[u8]) -> (u16, Vec<(String, String)>, Vec<u8>) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.write_all(head.as_bytes()).unwrap();
    s.write_all(body).unwrap();
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).unwrap();
    let mut text = &buf[..];
    loop {
        let end = text
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .expect("a response head");
        let head = String::from_utf8_lossy(&text[..end]).to_string();
        text = &text[end + 4..];
        let mut lines = head.split("\r\n");
        let status: u16 = lines
            .next()
            .unwrap()
            .split(' ')
            .nth(1)
            .unwrap()
            .parse()
            .unwrap();
        if status == 100 {
            continue;
        }
        let headers = lines
            .map(|l| {
                let (n, v) = l.split_once(':').unwrap();
                (n.trim().to_ascii_lowercase(), v.trim().to_string())
            })
            .collect();
        return (status, headers, text.to_vec());
    }
}

fn header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(n, _)| n == name)
        .map(|(_, v)| v.as_str())
}

#[test]
fn reference_tree_hash_matches_published_vectors() {
    assert_eq!(
        tree_hash(b"hello world"),
        "b94d27b9934d3e08a52e52d7da7dabfac484efe37a5380ee9088f7ace2efcde9"
    );
    assert_eq!(
        tree_hash(&vec![0; MIB + 1]),
        "28638dab8d5e1754a4ecb38b0ebe6df66c844f94aed142d4d0283d208bb786cd"
    );
    assert_eq!(
        tree_hash(&vec![0; 3 * MIB]),
        "ca6cc129a4514ec765de86a4e7a49adf44842c9cac213c383ebe4071271bdf21"
    );
    assert_eq!(
        tree_hash(&vec![0; 4 * MIB]),
        "27b557ba335a688f779a95e258a886ffa3b39b13533d6f9dcaa0497a2ed1fe18"
    );
}

// ---------------------------------------------------------------------------------------------
// Vaults.

#[tokio::test]
async fn vault_crud_and_list_pagination() {
    let emu = Emulator::start();
    let c = sdk_client(&emu.endpoint());
    let mut names: Vec<String> = (0..25)
        .map(|i| format!("vault-{:02}", (i * 7) % 25))
        .collect();
    for n in &names {
        let out = c.create_vault().vault_name(n).send().await.unwrap();
        assert_eq!(
            out.location(),
            Some(format!("/123456789012/vaults/{n}").as_str())
        );
    }
    // Idempotent.
    c.create_vault()
        .vault_name("vault-03")
        .send()
        .await
        .unwrap();
    names.sort();
    assert_eq!(emu.vault_names(), names);

    let listed: Vec<String> = c
        .list_vaults()
        .into_paginator()
        .page_size(7)
        .items()
        .send()
        .try_collect()
        .await
        .unwrap()
        .into_iter()
        .map(|v| v.vault_name().unwrap().to_string())
        .collect();
    assert_eq!(listed, names);

    // Default page of 10; the marker is the last ARN returned and listing resumes after it.
    let page = c.list_vaults().send().await.unwrap();
    assert_eq!(page.vault_list().len(), 10);
    let marker = page.marker().unwrap().to_string();
    assert_eq!(
        marker,
        "arn:aws:glacier:us-east-1:123456789012:vaults/vault-09"
    );
    let next = c
        .list_vaults()
        .marker(&marker)
        .limit(3)
        .send()
        .await
        .unwrap();
    let next_names: Vec<_> = next
        .vault_list()
        .iter()
        .map(|v| v.vault_name().unwrap())
        .collect();
    assert_eq!(next_names, ["vault-10", "vault-11", "vault-12"]);
    let last = c
        .list_vaults()
        .marker(&marker)
        .limit(1000)
        .send()
        .await
        .unwrap();
    assert_eq!(last.vault_list().len(), 15);
    assert_eq!(last.marker(), None);

    assert_eq!(
        code(c.list_vaults().limit(0).send().await),
        "InvalidParameterValueException"
    );
    assert_eq!(
        code(c.list_vaults().limit(1001).send().await),
        "InvalidParameterValueException"
    );
    assert_eq!(
        code(c.list_vaults().marker("nonsense").send().await),
        "InvalidParameterValueException"
    );
    assert_eq!(
        fail(c.create_vault().vault_name("bad name!").send().await).0,
        "InvalidParameterValueException"
    );
    assert_eq!(
        code(c.create_vault().vault_name("x".repeat(256)).send().await),
        "InvalidParameterValueException"
    );
    c.create_vault()
        .vault_name("a".repeat(255))
        .send()
        .await
        .unwrap();

    let d = c
        .describe_vault()
        .vault_name("vault-00")
        .send()
        .await
        .unwrap();
    assert_eq!(
        d.vault_arn(),
        Some("arn:aws:glacier:us-east-1:123456789012:vaults/vault-00")
    );
    assert_eq!(d.creation_date(), Some("2026-01-01T00:00:00.000Z"));
    assert_eq!(d.last_inventory_date(), None);
    assert_eq!(
        fail(c.describe_vault().vault_name("nope").send().await),
        ("ResourceNotFoundException".into(), 404)
    );

    c.delete_vault()
        .vault_name("vault-00")
        .send()
        .await
        .unwrap();
    assert_eq!(
        code(c.delete_vault().vault_name("vault-00").send().await),
        "ResourceNotFoundException"
    );
    assert!(!emu.vault_names().contains(&"vault-00".to_string()));
}

#[tokio::test]
async fn describe_vault_counts_follow_the_inventory() {
    let (emu, c) = setup("v").await;
    upload(&c, "v", "one", b"first archive").await;
    upload(&c, "v", "two", b"second").await;
    let d = c.describe_vault().vault_name("v").send().await.unwrap();
    assert_eq!(d.last_inventory_date(), None, "no inventory yet");
    assert_eq!(
        (d.number_of_archives(), d.size_in_bytes()),
        (0, 0),
        "null counts read as 0"
    );

    emu.advance(HOUR);
    emu.take_inventory("v");
    upload(&c, "v", "three", b"after the inventory").await;
    let d = c.describe_vault().vault_name("v").send().await.unwrap();
    assert_eq!(d.last_inventory_date(), Some("2026-01-01T01:00:00.000Z"));
    assert_eq!((d.number_of_archives(), d.size_in_bytes()), (2, 19));
    assert_eq!(emu.inventory_date("v"), Some(emu.now()));
}

#[tokio::test]
async fn delete_vault_needs_an_inventory_showing_it_empty() {
    let (emu, c) = setup("v").await;
    let id = upload(&c, "v", "", b"data").await;
    let refused = fail(c.delete_vault().vault_name("v").send().await);
    assert_eq!(refused, ("InvalidParameterValueException".into(), 400));

    c.delete_archive()
        .vault_name("v")
        .archive_id(&id)
        .send()
        .await
        .unwrap();
    // The last inventory (none) does not show it empty yet.
    assert_eq!(
        code(c.delete_vault().vault_name("v").send().await),
        "InvalidParameterValueException"
    );
    emu.advance(HOUR);
    emu.take_inventory("v");
    c.delete_vault().vault_name("v").send().await.unwrap();

    // An empty inventory followed by a write is stale again.
    c.create_vault().vault_name("w").send().await.unwrap();
    emu.take_inventory("w");
    let id = upload(&c, "w", "", b"x").await;
    c.delete_archive()
        .vault_name("w")
        .archive_id(&id)
        .send()
        .await
        .unwrap();
    assert_eq!(
        code(c.delete_vault().vault_name("w").send().await),
        "InvalidParameterValueException"
    );
}

// ---------------------------------------------------------------------------------------------
// Archives.

#[tokio::test]
async fn upload_archive_and_its_checks() {
    let (emu, c) = setup("v").await;
    let data = bytes(2 * MIB + 17, 1);
    let out = c
        .upload_archive()
        .vault_name("v")
        .archive_description("  docs/report.pdf")
        .body(ByteStream::from(data.clone()))
        .send()
        .await
        .unwrap();
    let id = out.archive_id().unwrap();
    assert_eq!(id.len(), 138);
    assert!(id
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'));
    assert_eq!(out.checksum(), Some(tree_hash(&data).as_str()));
    assert_eq!(
        out.location(),
        Some(format!("/123456789012/vaults/v/archives/{id}").as_str())
    );
    assert_eq!(emu.archive_data("v", id).unwrap(), data);
    let info = &emu.archives("v")[0];
    assert_eq!(
        info.description, "docs/report.pdf",
        "leading spaces are stripped"
    );
    assert_eq!(
        (info.size, info.tree_hash.as_str()),
        (data.len() as u64, tree_hash(&data).as_str())
    );
    assert_eq!(info.creation_date, "2026-01-01T00:00:00Z");

    let upload_with = |desc: String, checksum: Option<String>, body: Vec<u8>| {
        c.upload_archive()
            .vault_name("v")
            .archive_description(desc)
            .set_checksum(checksum)
            .body(ByteStream::from(body))
            .send()
    };
    let bad_hash = upload_with("x".into(), Some(tree_hash(b"other")), b"data".to_vec()).await;
    assert_eq!(
        fail(bad_hash),
        ("InvalidParameterValueException".into(), 400)
    );
    let non_ascii = upload_with("caf\u{e9}".into(), None, b"data".to_vec()).await;
    assert_eq!(code(non_ascii), "InvalidParameterValueException");
    let control = upload_with("tab\there".into(), None, b"data".to_vec()).await;
    assert_eq!(code(control), "InvalidParameterValueException");
    let long = upload_with("d".repeat(1025), None, b"data".to_vec()).await;
    assert_eq!(code(long), "InvalidParameterValueException");
    upload_with("d".repeat(1024), None, b"data".to_vec())
        .await
        .unwrap();
    let empty = upload_with("empty".into(), None, Vec::new()).await;
    assert_eq!(code(empty), "InvalidParameterValueException");
    let missing = c
        .upload_archive()
        .vault_name("nope")
        .body(ByteStream::from_static(b"x"))
        .send()
        .await;
    assert_eq!(code(missing), "ResourceNotFoundException");

    // The linear hash is checked too: overwrite the one the SDK computed.
    let wrong_linear = c
        .upload_archive()
        .vault_name("v")
        .body(ByteStream::from_static(b"payload"))
        .customize()
        .mutate_request(|r| {
            r.headers_mut()
                .insert("x-amz-content-sha256", hex::encode([7u8; 32]));
        })
        .send()
        .await;
    assert_eq!(code(wrong_linear), "InvalidParameterValueException");
    assert_eq!(
        emu.archives("v").len(),
        2,
        "only the two valid uploads are stored"
    );
}

#[tokio::test]
async fn delete_archive_is_not_found_the_second_time() {
    let (emu, c) = setup("v").await;
    let id = upload(&c, "v", "a", b"abc").await;
    c.delete_archive()
        .vault_name("v")
        .archive_id(&id)
        .send()
        .await
        .unwrap();
    assert!(emu.archives("v").is_empty());
    let again = fail(
        c.delete_archive()
            .vault_name("v")
            .archive_id(&id)
            .send()
            .await,
    );
    assert_eq!(again, ("ResourceNotFoundException".into(), 404));
}

// ---------------------------------------------------------------------------------------------
// Multipart uploads.

async fn initiate(c: &Client, vault: &str, part_size: usize, desc: &str) -> String {
    let out = c
        .initiate_multipart_upload()
        .vault_name(vault)
        .part_size(part_size.to_string())
        .archive_description(desc)
        .send()
        .await
        .unwrap();
    out.upload_id().unwrap().to_string()
}

async fn put_part(
    c: &Client,
    vault: &str,
    upload: &str,
    start: usize,
    data: &[u8],
) -> Result<String, String> {
    let range = format!("bytes {}-{}/*", start, start + data.len() - 1);
    c.upload_multipart_part()
        .vault_name(vault)
        .upload_id(upload)
        .range(range)
        .body(ByteStream::from(data.to_vec()))
        .send()
        .await
        .map(|o| o.checksum().unwrap().to_string())
        .map_err(|e| e.code().unwrap_or("?").to_string())
}

async fn complete(
    c: &Client,
    vault: &str,
    upload: &str,
    size: usize,
    hash: &str,
) -> Result<String, String> {
    c.complete_multipart_upload()
        .vault_name(vault)
        .upload_id(upload)
        .archive_size(size.to_string())
        .checksum(hash)
        .send()
        .await
        .map(|o| o.archive_id().unwrap().to_string())
        .map_err(|e| e.code().unwrap_or("?").to_string())
}

#[tokio::test]
async fn multipart_upload_checks_and_completion() {
    let (emu, c) = setup("v").await;
    for bad in ["3145728", "524288", "8589934592", "abc"] {
        let r = c
            .initiate_multipart_upload()
            .vault_name("v")
            .part_size(bad)
            .send()
            .await;
        assert_eq!(code(r), "InvalidParameterValueException", "part size {bad}");
    }
    let r = c
        .initiate_multipart_upload()
        .vault_name("v")
        .part_size("1048576")
        .archive_description("na\u{ef}ve")
        .send()
        .await;
    assert_eq!(code(r), "InvalidParameterValueException");

    let data = bytes(5 * MIB / 2, 2);
    let up = initiate(&c, "v", MIB, "  big/file.bin").await;
    assert_eq!(up.len(), 92);
    let listed = emu.multipart_uploads("v");
    assert_eq!(
        (listed[0].description.as_str(), listed[0].part_size),
        ("big/file.bin", MIB as u64)
    );

    // Content-Range must start on a part boundary and fit one part; the body must match it.
    assert_eq!(
        put_part(&c, "v", &up, 100, &data[100..MIB])
            .await
            .unwrap_err(),
        "InvalidParameterValueException"
    );
    assert_eq!(
        put_part(&c, "v", &up, 0, &data[..MIB + 1])
            .await
            .unwrap_err(),
        "InvalidParameterValueException"
    );
    let mismatched = c
        .upload_multipart_part()
        .vault_name("v")
        .upload_id(&up)
        .range("bytes 0-99/*")
        .body(ByteStream::from(data[..50].to_vec()))
        .send()
        .await;
    assert_eq!(code(mismatched), "InvalidParameterValueException");
    let bad_hash = c
        .upload_multipart_part()
        .vault_name("v")
        .upload_id(&up)
        .range(format!("bytes 0-{}/*", MIB - 1))
        .checksum(tree_hash(b"wrong"))
        .body(ByteStream::from(data[..MIB].to_vec()))
        .send()
        .await;
    assert_eq!(code(bad_hash), "InvalidParameterValueException");
    assert!(
        emu.multipart_uploads("v")[0].parts.is_empty(),
        "rejected parts are not stored"
    );
    let unknown = put_part(&c, "v", "no-such-upload", 0, &data[..10]).await;
    assert_eq!(unknown.unwrap_err(), "ResourceNotFoundException");

    // Parts out of order; a re-upload of a range overwrites it.
    let h0 = put_part(&c, "v", &up, 0, &bytes(MIB, 99)).await.unwrap();
    assert_eq!(h0, tree_hash(&bytes(MIB, 99)));
    put_part(&c, "v", &up, 2 * MIB, &data[2 * MIB..])
        .await
        .unwrap();
    put_part(&c, "v", &up, 0, &data[..MIB]).await.unwrap();
    let whole = tree_hash(&data);
    // Missing the middle part: refused, and the upload stays open.
    assert_eq!(
        complete(&c, "v", &up, data.len(), &whole)
            .await
            .unwrap_err(),
        "InvalidParameterValueException"
    );
    assert_eq!(emu.multipart_uploads("v").len(), 1);
    put_part(&c, "v", &up, MIB, &data[MIB..2 * MIB])
        .await
        .unwrap();
    assert_eq!(
        complete(&c, "v", &up, data.len() + 1, &whole)
            .await
            .unwrap_err(),
        "InvalidParameterValueException"
    );
    assert_eq!(
        complete(&c, "v", &up, data.len(), &tree_hash(b"x"))
            .await
            .unwrap_err(),
        "InvalidParameterValueException"
    );
    let id = complete(&c, "v", &up, data.len(), &whole).await.unwrap();
    assert_eq!(emu.archive_data("v", &id).unwrap(), data);
    assert_eq!(emu.archives("v")[0].description, "big/file.bin");
    // A repeat Complete returns the same archive; the upload itself is gone.
    assert_eq!(
        complete(&c, "v", &up, data.len(), &whole).await.unwrap(),
        id
    );
    assert_eq!(emu.archives("v").len(), 1);
    let parts = c.list_parts().vault_name("v").upload_id(&up).send().await;
    assert_eq!(code(parts), "ResourceNotFoundException");
    let abort = c
        .abort_multipart_upload()
        .vault_name("v")
        .upload_id(&up)
        .send()
        .await;
    assert_eq!(code(abort), "ResourceNotFoundException");

    // A short part that is not the last makes Complete fail.
    let up = initiate(&c, "v", MIB, "short").await;
    put_part(&c, "v", &up, 0, &data[..1000]).await.unwrap();
    put_part(&c, "v", &up, MIB, &data[..1000]).await.unwrap();
    let mut joined = data[..1000].to_vec();
    joined.extend_from_slice(&data[..1000]);
    assert_eq!(
        complete(&c, "v", &up, 2000, &tree_hash(&joined))
            .await
            .unwrap_err(),
        "InvalidParameterValueException"
    );
}

#[tokio::test]
async fn list_parts_and_uploads_paginate() {
    let (_emu, c) = setup("v").await;
    let up = initiate(&c, "v", MIB, "parts").await;
    for i in (0..12).rev() {
        put_part(&c, "v", &up, i * MIB, &bytes(10 + i, i as u64))
            .await
            .unwrap();
    }
    let parts = c
        .list_parts()
        .vault_name("v")
        .upload_id(&up)
        .into_paginator()
        .page_size(5)
        .items()
        .send()
        .try_collect()
        .await
        .unwrap();
    let ranges: Vec<String> = parts
        .iter()
        .map(|p| p.range_in_bytes().unwrap().to_string())
        .collect();
    let expected: Vec<String> = (0..12)
        .map(|i| format!("{}-{}", i * MIB, i * MIB + 10 + i - 1))
        .collect();
    assert_eq!(ranges, expected);
    assert_eq!(
        parts[3].sha256_tree_hash(),
        Some(tree_hash(&bytes(13, 3)).as_str())
    );
    let first = c
        .list_parts()
        .vault_name("v")
        .upload_id(&up)
        .send()
        .await
        .unwrap();
    assert_eq!(first.parts().len(), 12, "default limit is 50");
    assert_eq!(first.part_size_in_bytes(), MIB as i64);
    assert_eq!(first.archive_description(), Some("parts"));
    assert_eq!(first.marker(), None);
    let bad = c
        .list_parts()
        .vault_name("v")
        .upload_id(&up)
        .limit(0)
        .send()
        .await;
    assert_eq!(code(bad), "InvalidParameterValueException");

    let mut ids = vec![up];
    for i in 0..8 {
        ids.push(initiate(&c, "v", 2 * MIB, &format!("u{i}")).await);
    }
    let uploads = c
        .list_multipart_uploads()
        .vault_name("v")
        .into_paginator()
        .page_size(4)
        .items()
        .send()
        .try_collect()
        .await
        .unwrap();
    let listed: Vec<String> = uploads
        .iter()
        .map(|u| u.multipart_upload_id().unwrap().to_string())
        .collect();
    assert_eq!(listed, ids);
    assert_eq!(uploads[1].part_size_in_bytes(), 2 * MIB as i64);
    assert_eq!(
        uploads[1].vault_arn(),
        Some("arn:aws:glacier:us-east-1:123456789012:vaults/v")
    );
}

#[tokio::test]
async fn abort_is_idempotent_and_dropped_uploads_are_gone() {
    let (emu, c) = setup("v").await;
    let up = initiate(&c, "v", MIB, "").await;
    put_part(&c, "v", &up, 0, b"part").await.unwrap();
    c.abort_multipart_upload()
        .vault_name("v")
        .upload_id(&up)
        .send()
        .await
        .unwrap();
    c.abort_multipart_upload()
        .vault_name("v")
        .upload_id(&up)
        .send()
        .await
        .unwrap();
    assert_eq!(
        put_part(&c, "v", &up, 0, b"part").await.unwrap_err(),
        "ResourceNotFoundException"
    );
    let unknown = c
        .abort_multipart_upload()
        .vault_name("v")
        .upload_id("nope")
        .send()
        .await;
    assert_eq!(code(unknown), "ResourceNotFoundException");

    let up = initiate(&c, "v", MIB, "").await;
    emu.drop_upload("v", &up);
    let parts = c.list_parts().vault_name("v").upload_id(&up).send().await;
    assert_eq!(fail(parts), ("ResourceNotFoundException".into(), 404));
    let _idle = initiate(&c, "v", MIB, "").await;
    emu.advance(25 * HOUR);
    assert_eq!(emu.drop_idle_uploads(24 * HOUR), 1);
    assert!(emu.multipart_uploads("v").is_empty());
}

// ---------------------------------------------------------------------------------------------
// Jobs.

#[tokio::test]
async fn archive_job_completes_on_the_clock_and_serves_ranges() {
    let (emu, c) = setup("v").await;
    let data = bytes(11 * MIB / 2, 3); // 5.5 MiB
    let id = upload(&c, "v", "five and a half", &data).await;
    let job = start_job(&c, "v", archive_params(&id).description("whole").build()).await;
    assert_eq!(job.len(), 92);

    let d = c
        .describe_job()
        .vault_name("v")
        .job_id(&job)
        .send()
        .await
        .unwrap();
    assert_eq!(d.status_code(), Some(&StatusCode::InProgress));
    assert!(!d.completed());
    assert_eq!(d.completion_date(), None);
    assert_eq!(d.retrieval_byte_range(), Some("0-5767167"));
    assert_eq!(
        d.sha256_tree_hash(),
        None,
        "whole-archive hash is withheld while in progress"
    );
    assert_eq!(
        d.archive_sha256_tree_hash(),
        Some(tree_hash(&data).as_str())
    );
    assert_eq!(d.archive_size_in_bytes(), Some(data.len() as i64));
    assert_eq!(
        (d.tier(), d.job_description()),
        (Some("Standard"), Some("whole"))
    );
    assert_eq!(d.inventory_size_in_bytes(), None);
    assert!(d.inventory_retrieval_parameters().is_none());

    let early = fail(c.get_job_output().vault_name("v").job_id(&job).send().await);
    assert_eq!(early, ("InvalidParameterValueException".into(), 400));
    emu.advance(4 * HOUR - MINUTE);
    assert_eq!(emu.jobs("v")[0].status, "InProgress");
    emu.advance(MINUTE);
    let d = c
        .describe_job()
        .vault_name("v")
        .job_id(&job)
        .send()
        .await
        .unwrap();
    assert_eq!(d.status_code(), Some(&StatusCode::Succeeded));
    assert_eq!(d.completion_date(), Some("2026-01-01T04:00:00.000Z"));
    assert_eq!(d.sha256_tree_hash(), Some(tree_hash(&data).as_str()));

    let out = c
        .get_job_output()
        .vault_name("v")
        .job_id(&job)
        .send()
        .await
        .unwrap();
    assert_eq!(out.status(), 200);
    assert_eq!(out.content_range(), None);
    assert_eq!(out.content_type(), Some("application/octet-stream"));
    assert_eq!(out.accept_ranges(), Some("bytes"));
    assert_eq!(out.archive_description(), Some("five and a half"));
    assert_eq!(out.checksum(), Some(tree_hash(&data).as_str()));
    assert_eq!(
        out.body.collect().await.unwrap().into_bytes().as_ref(),
        &data[..]
    );

    // The hash header appears exactly when the range is a node of the tree.
    let cases: &[(usize, usize, bool)] = &[
        (0, MIB, true),
        (0, 2 * MIB, true),
        (MIB, 3 * MIB, false),
        (4 * MIB, data.len(), true),
        (5 * MIB, data.len(), true),
        (2 * MIB, 4 * MIB, true),
        (2 * MIB, 3 * MIB + 5, false),
        (100, 201, false),
    ];
    for &(s, e, aligned) in cases {
        let range = format!("bytes={}-{}", s, e - 1);
        let (status, hash, cr, body) = read_output(&c, "v", &job, Some(&range)).await;
        assert_eq!(status, 206, "{range}");
        assert_eq!(
            cr.as_deref(),
            Some(format!("bytes {}-{}/{}", s, e - 1, data.len()).as_str())
        );
        assert_eq!(body, &data[s..e], "{range}");
        let want = aligned.then(|| tree_hash(&data[s..e]));
        assert_eq!(hash, want, "{range}");
    }
    let stats = emu.stats();
    let served = &stats.job_output[&job];
    assert_eq!(served.ranges.len(), 1 + cases.len());
    assert_eq!(served.ranges[1], (0, MIB as u64 - 1));
    let expected_bytes = data.len() + cases.iter().map(|(s, e, _)| e - s).sum::<usize>();
    assert_eq!(served.bytes_served, expected_bytes as u64);

    let bad_range = c
        .get_job_output()
        .vault_name("v")
        .job_id(&job)
        .range("bytes=9999999-")
        .send()
        .await;
    assert_eq!(code(bad_range), "InvalidParameterValueException");
}

#[tokio::test]
async fn ranged_retrieval_jobs_and_their_hashes() {
    let (emu, c) = setup("v").await;
    let data = bytes(11 * MIB / 2, 4);
    let id = upload(&c, "v", "", &data).await;

    for bad in [
        "100-1048575",
        "0-1000",
        "0-5767168",
        "1048576-1048575",
        "x-y",
    ] {
        let r = c
            .initiate_job()
            .vault_name("v")
            .job_parameters(archive_params(&id).retrieval_byte_range(bad).build())
            .send()
            .await;
        assert_eq!(
            fail(r),
            ("InvalidParameterValueException".into(), 400),
            "range {bad}"
        );
    }
    // MiB-aligned but not a tree node: accepted, no hashes anywhere.
    let job = start_job(
        &c,
        "v",
        archive_params(&id)
            .retrieval_byte_range("1048576-3145727")
            .tier("Expedited")
            .build(),
    )
    .await;
    let d = c
        .describe_job()
        .vault_name("v")
        .job_id(&job)
        .send()
        .await
        .unwrap();
    assert_eq!((d.sha256_tree_hash(), d.tier()), (None, Some("Expedited")));
    emu.advance(3 * MINUTE);
    let (status, hash, _, body) = read_output(&c, "v", &job, None).await;
    assert_eq!(
        (status, hash, body.as_slice()),
        (200, None, &data[MIB..3 * MIB])
    );
    let (_, hash, _, body) = read_output(&c, "v", &job, Some("bytes=0-1048575")).await;
    assert_eq!(
        (hash, body.as_slice()),
        (None, &data[MIB..2 * MIB]),
        "both ranges must be aligned"
    );

    // A tree node: the hash is known even while the job runs.
    let job = start_job(
        &c,
        "v",
        archive_params(&id)
            .retrieval_byte_range("2097152-4194303")
            .tier("Bulk")
            .build(),
    )
    .await;
    let d = c
        .describe_job()
        .vault_name("v")
        .job_id(&job)
        .send()
        .await
        .unwrap();
    assert_eq!(
        d.sha256_tree_hash(),
        Some(tree_hash(&data[2 * MIB..4 * MIB]).as_str())
    );
    emu.advance(8 * HOUR - MINUTE);
    assert_eq!(
        code(c.get_job_output().vault_name("v").job_id(&job).send().await),
        "InvalidParameterValueException"
    );
    emu.advance(MINUTE);
    let (_, hash, _, body) = read_output(&c, "v", &job, None).await;
    assert_eq!(
        (hash, body.as_slice()),
        (
            Some(tree_hash(&data[2 * MIB..4 * MIB])),
            &data[2 * MIB..4 * MIB]
        )
    );
    let (_, hash, cr, body) = read_output(&c, "v", &job, Some("bytes=1048576-2097151")).await;
    assert_eq!(cr.as_deref(), Some("bytes 1048576-2097151/2097152"));
    assert_eq!(
        (hash, body.as_slice()),
        (
            Some(tree_hash(&data[3 * MIB..4 * MIB])),
            &data[3 * MIB..4 * MIB]
        )
    );

    // The last byte may end a range that is not a whole MiB.
    start_job(
        &c,
        "v",
        archive_params(&id)
            .retrieval_byte_range("5242880-5767167")
            .build(),
    )
    .await;
    let jobs = emu.jobs("v");
    assert_eq!(
        jobs.last().unwrap().range,
        Some((5 * MIB as u64, data.len() as u64 - 1))
    );
}

#[tokio::test]
async fn initiate_job_parameter_errors() {
    let (emu, c) = setup("v").await;
    let id = upload(&c, "v", "", b"abc").await;
    let r = c.initiate_job().vault_name("v").send().await;
    assert_eq!(fail(r), ("MissingParameterValueException".into(), 400));
    let r = c
        .initiate_job()
        .vault_name("v")
        .job_parameters(JobParameters::builder().archive_id(&id).build())
        .send()
        .await;
    assert_eq!(code(r), "MissingParameterValueException");
    let r = c
        .initiate_job()
        .vault_name("v")
        .job_parameters(JobParameters::builder().r#type("archive-retrieval").build())
        .send()
        .await;
    assert_eq!(code(r), "MissingParameterValueException");
    let r = c
        .initiate_job()
        .vault_name("v")
        .job_parameters(archive_params("unknown").build())
        .send()
        .await;
    assert_eq!(fail(r), ("ResourceNotFoundException".into(), 404));
    let r = c
        .initiate_job()
        .vault_name("v")
        .job_parameters(archive_params(&id).tier("Fast").build())
        .send()
        .await;
    assert_eq!(code(r), "InvalidParameterValueException");
    let r = c
        .initiate_job()
        .vault_name("v")
        .job_parameters(JobParameters::builder().r#type("restore").build())
        .send()
        .await;
    assert_eq!(code(r), "InvalidParameterValueException");
    let r = c
        .initiate_job()
        .vault_name("v")
        .job_parameters(archive_params(&id).description("\u{1}").build())
        .send()
        .await;
    assert_eq!(code(r), "InvalidParameterValueException");
    let inv = || JobParameters::builder().r#type("inventory-retrieval");
    let r = c
        .initiate_job()
        .vault_name("v")
        .job_parameters(inv().build())
        .send()
        .await;
    assert_eq!(code(r), "ResourceNotFoundException", "never inventoried");
    emu.take_inventory("v");
    let r = c
        .initiate_job()
        .vault_name("v")
        .job_parameters(inv().retrieval_byte_range("0-2").build())
        .send()
        .await;
    assert_eq!(code(r), "InvalidParameterValueException");
    let r = c
        .initiate_job()
        .vault_name("v")
        .job_parameters(inv().format("XML").build())
        .send()
        .await;
    assert_eq!(code(r), "InvalidParameterValueException");
    let r = c
        .initiate_job()
        .vault_name("nope")
        .job_parameters(inv().build())
        .send()
        .await;
    assert_eq!(code(r), "ResourceNotFoundException");
    let out = c
        .initiate_job()
        .vault_name("v")
        .job_parameters(inv().build())
        .send()
        .await
        .unwrap();
    assert_eq!(
        out.location(),
        Some(format!("/123456789012/vaults/v/jobs/{}", out.job_id().unwrap()).as_str())
    );
}

#[tokio::test]
async fn jobs_expire_a_day_after_completion_and_fail_if_the_archive_goes() {
    let (emu, c) = setup("v").await;
    let id = upload(&c, "v", "", b"keep").await;
    let gone = upload(&c, "v", "", b"gone").await;
    let job = start_job(&c, "v", archive_params(&id).tier("Expedited").build()).await;
    let doomed = start_job(&c, "v", archive_params(&gone).tier("Expedited").build()).await;
    emu.delete_archive_direct("v", &gone);
    emu.complete_all_jobs();
    assert_eq!(emu.now(), DEFAULT_START_SECS + 180);
    let d = c
        .describe_job()
        .vault_name("v")
        .job_id(&doomed)
        .send()
        .await
        .unwrap();
    assert_eq!(d.status_code(), Some(&StatusCode::Failed));
    assert_eq!(
        code(
            c.get_job_output()
                .vault_name("v")
                .job_id(&doomed)
                .send()
                .await
        ),
        "InvalidParameterValueException"
    );

    // Output prepared before a delete stays downloadable.
    c.delete_archive()
        .vault_name("v")
        .archive_id(&id)
        .send()
        .await
        .unwrap();
    emu.advance(24 * HOUR - Duration::from_secs(1));
    assert_eq!(read_output(&c, "v", &job, None).await.3, b"keep");
    emu.advance(Duration::from_secs(1));
    assert_eq!(
        fail(c.describe_job().vault_name("v").job_id(&job).send().await),
        ("ResourceNotFoundException".into(), 404)
    );
    assert_eq!(
        code(c.get_job_output().vault_name("v").job_id(&job).send().await),
        "ResourceNotFoundException"
    );
    assert!(c
        .list_jobs()
        .vault_name("v")
        .send()
        .await
        .unwrap()
        .job_list()
        .is_empty());
    assert!(emu.jobs("v").is_empty());
}

#[tokio::test]
async fn list_jobs_filters_and_paginates() {
    let (emu, c) = setup("v").await;
    let id = upload(&c, "v", "", b"archive").await;
    let mut ids = Vec::new();
    for i in 0..130 {
        let tier = if i % 2 == 0 { "Expedited" } else { "Bulk" };
        ids.push(start_job(&c, "v", archive_params(&id).tier(tier).build()).await);
    }
    emu.advance(5 * MINUTE);
    let all = c
        .list_jobs()
        .vault_name("v")
        .into_paginator()
        .page_size(17)
        .items()
        .send()
        .try_collect()
        .await
        .unwrap();
    let listed: Vec<String> = all
        .iter()
        .map(|j| j.job_id().unwrap().to_string())
        .collect();
    assert_eq!(listed, ids, "sorted by initiation");

    let count = |status: Option<&'static str>, completed: Option<&'static str>| {
        let c = c.clone();
        async move {
            let req = c
                .list_jobs()
                .vault_name("v")
                .set_statuscode(status.map(String::from))
                .set_completed(completed.map(String::from));
            req.into_paginator()
                .items()
                .send()
                .try_collect()
                .await
                .unwrap()
                .len()
        }
    };
    assert_eq!(count(Some("Succeeded"), None).await, 65);
    assert_eq!(count(Some("InProgress"), None).await, 65);
    assert_eq!(count(Some("Failed"), None).await, 0);
    assert_eq!(count(None, Some("true")).await, 65);
    assert_eq!(count(None, Some("false")).await, 65);
    assert_eq!(count(Some("InProgress"), Some("true")).await, 0);

    let first = c.list_jobs().vault_name("v").send().await.unwrap();
    assert_eq!(first.job_list().len(), 50, "default limit");
    let second = c
        .list_jobs()
        .vault_name("v")
        .marker(first.marker().unwrap())
        .limit(1000)
        .send()
        .await
        .unwrap();
    assert_eq!(second.job_list().len(), 80);
    assert_eq!(second.job_list()[0].job_id(), Some(ids[50].as_str()));
    assert_eq!(second.marker(), None);

    let lj = || c.list_jobs().vault_name("v");
    assert_eq!(
        code(lj().statuscode("Done").send().await),
        "InvalidParameterValueException"
    );
    assert_eq!(
        code(lj().completed("yes").send().await),
        "InvalidParameterValueException"
    );
    assert_eq!(
        code(lj().limit(0).send().await),
        "InvalidParameterValueException"
    );
    assert_eq!(
        code(lj().marker("garbage").send().await),
        "InvalidParameterValueException"
    );
}

// ---------------------------------------------------------------------------------------------
// Inventory.

#[tokio::test]
async fn inventory_json_and_csv_return_the_snapshot() {
    let (emu, c) = setup("v").await;
    let a = upload(&c, "v", "plain/name.txt", b"alpha").await;
    emu.advance(Duration::from_secs(90));
    let b = upload(&c, "v", "with,comma", &bytes(MIB + 3, 5)).await;
    let q = upload(&c, "v", "say \"hi\"", b"quoted").await;
    emu.advance(HOUR);
    emu.take_inventory("v");
    upload(&c, "v", "too late", b"not in the snapshot").await;

    let json_job = start_job(
        &c,
        "v",
        JobParameters::builder()
            .r#type("inventory-retrieval")
            .build(),
    )
    .await;
    let csv_job = start_job(
        &c,
        "v",
        JobParameters::builder()
            .r#type("inventory-retrieval")
            .format("CSV")
            .tier("Expedited")
            .build(),
    )
    .await;
    emu.advance(4 * HOUR - MINUTE);
    assert_eq!(
        emu.jobs("v")[1].status,
        "InProgress",
        "inventory takes 4 h whatever the tier"
    );
    emu.advance(MINUTE);

    let out = c
        .get_job_output()
        .vault_name("v")
        .job_id(&json_job)
        .send()
        .await
        .unwrap();
    assert_eq!(
        (out.status(), out.content_type(), out.checksum()),
        (200, Some("application/json"), None)
    );
    let body = out.body.collect().await.unwrap().into_bytes();
    let doc: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(
        doc["VaultARN"],
        "arn:aws:glacier:us-east-1:123456789012:vaults/v"
    );
    assert_eq!(doc["InventoryDate"], "2026-01-01T01:01:30Z");
    let list = doc["ArchiveList"].as_array().unwrap();
    let ids: Vec<&str> = list
        .iter()
        .map(|e| e["ArchiveId"].as_str().unwrap())
        .collect();
    assert_eq!(ids, [a.as_str(), b.as_str(), q.as_str()]);
    assert_eq!(list[1]["ArchiveDescription"], "with,comma");
    assert_eq!(list[1]["Size"], MIB + 3);
    assert_eq!(list[1]["SHA256TreeHash"], tree_hash(&bytes(MIB + 3, 5)));
    assert_eq!(list[1]["CreationDate"], "2026-01-01T00:01:30Z");
    let d = c
        .describe_job()
        .vault_name("v")
        .job_id(&json_job)
        .send()
        .await
        .unwrap();
    assert_eq!(d.inventory_size_in_bytes(), Some(body.len() as i64));
    assert_eq!(
        d.inventory_retrieval_parameters().unwrap().format(),
        Some("JSON")
    );
    assert_eq!(d.inventory_retrieval_parameters().unwrap().marker(), None);
    assert_eq!(
        (
            d.archive_id(),
            d.retrieval_byte_range(),
            d.sha256_tree_hash()
        ),
        (None, None, None)
    );

    let out = c
        .get_job_output()
        .vault_name("v")
        .job_id(&csv_job)
        .send()
        .await
        .unwrap();
    assert_eq!(out.content_type(), Some("text/csv"));
    let csv = String::from_utf8(out.body.collect().await.unwrap().into_bytes().to_vec()).unwrap();
    let lines: Vec<&str> = csv.lines().collect();
    assert_eq!(
        lines[0],
        "ArchiveId,ArchiveDescription,CreationDate,Size,SHA256TreeHash"
    );
    assert_eq!(
        lines[1],
        format!(
            "{a},plain/name.txt,2026-01-01T00:00:00Z,5,{}",
            tree_hash(b"alpha")
        )
    );
    assert!(lines[2].starts_with(&format!("{b},\"with,comma\",")));
    assert!(
        lines[3].starts_with(&format!("{q},\"say \\\"hi\\\"\",")),
        "{}",
        lines[3]
    );
    assert_eq!(lines.len(), 4);
}

#[tokio::test]
async fn auto_inventory_snapshots_at_job_completion() {
    let (emu, c) = setup("v").await;
    emu.set_auto_inventory(true);
    upload(&c, "v", "before", b"1").await;
    let job = start_job(
        &c,
        "v",
        JobParameters::builder()
            .r#type("inventory-retrieval")
            .build(),
    )
    .await;
    upload(&c, "v", "while running", b"2").await;
    emu.complete_all_jobs();
    upload(&c, "v", "after", b"3").await;
    let body = read_output(&c, "v", &job, None).await.3;
    let doc: serde_json::Value = serde_json::from_slice(&body).unwrap();
    let descs: Vec<&str> = doc["ArchiveList"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["ArchiveDescription"].as_str().unwrap())
        .collect();
    assert_eq!(descs, ["before", "while running"]);
    let d = c.describe_vault().vault_name("v").send().await.unwrap();
    assert_eq!(d.last_inventory_date(), Some("2026-01-01T04:00:00.000Z"));
    assert_eq!(d.number_of_archives(), 2);
}

#[tokio::test]
async fn inventory_pagination_and_date_filters() {
    let (emu, c) = setup("v").await;
    let base = DEFAULT_START_SECS - 100 * 3600;
    let ids: Vec<String> = (0..25)
        .map(|i| emu.put_archive("v", &format!("f{i}"), &[i as u8 + 1], Some(base + i * 3600)))
        .collect();
    emu.take_inventory("v");

    let run =
        |limit: Option<&str>, marker: Option<String>, start: Option<i64>, end: Option<i64>| {
            let c = c.clone();
            let iso = |s: i64| format!("{}Z", &iso_utc(s));
            let params = InventoryRetrievalJobInput::builder()
                .set_limit(limit.map(String::from))
                .set_marker(marker)
                .set_start_date(start.map(iso))
                .set_end_date(end.map(iso))
                .build();
            let jp = JobParameters::builder()
                .r#type("inventory-retrieval")
                .inventory_retrieval_parameters(params)
                .build();
            async move {
                c.initiate_job()
                    .vault_name("v")
                    .job_parameters(jp)
                    .send()
                    .await
            }
        };
    let mut seen = Vec::new();
    let mut marker = None;
    let mut pages = 0;
    loop {
        let job = run(Some("10"), marker.clone(), None, None)
            .await
            .unwrap()
            .job_id()
            .unwrap()
            .to_string();
        emu.complete_all_jobs();
        let body = read_output(&c, "v", &job, None).await.3;
        let doc: serde_json::Value = serde_json::from_slice(&body).unwrap();
        seen.extend(
            doc["ArchiveList"]
                .as_array()
                .unwrap()
                .iter()
                .map(|e| e["ArchiveId"].as_str().unwrap().to_string()),
        );
        let d = c
            .describe_job()
            .vault_name("v")
            .job_id(&job)
            .send()
            .await
            .unwrap();
        let p = d.inventory_retrieval_parameters().unwrap();
        assert_eq!(p.limit(), Some("10"));
        pages += 1;
        marker = p.marker().map(String::from);
        if marker.is_none() {
            break;
        }
    }
    assert_eq!((pages, &seen), (3, &ids));

    // StartDate inclusive, EndDate exclusive.
    let job = run(None, None, Some(base + 5 * 3600), Some(base + 10 * 3600))
        .await
        .unwrap()
        .job_id()
        .unwrap()
        .to_string();
    emu.complete_all_jobs();
    let body = read_output(&c, "v", &job, None).await.3;
    let doc: serde_json::Value = serde_json::from_slice(&body).unwrap();
    let got: Vec<&str> = doc["ArchiveList"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["ArchiveId"].as_str().unwrap())
        .collect();
    assert_eq!(
        got,
        ids[5..10].iter().map(String::as_str).collect::<Vec<_>>()
    );
    let d = c
        .describe_job()
        .vault_name("v")
        .job_id(&job)
        .send()
        .await
        .unwrap();
    assert_eq!(
        d.inventory_retrieval_parameters().unwrap().start_date(),
        Some(format!("{}Z", iso_utc(base + 5 * 3600)).as_str())
    );

    assert_eq!(
        code(run(Some("0"), None, None, None).await),
        "InvalidParameterValueException"
    );
    assert_eq!(
        code(run(Some("ten"), None, None, None).await),
        "InvalidParameterValueException"
    );
    assert_eq!(
        code(run(None, Some("bogus".into()), None, None).await),
        "InvalidParameterValueException"
    );
    assert_eq!(
        code(run(None, None, Some(base + 10), Some(base)).await),
        "InvalidParameterValueException"
    );
}

/// `YYYY-MM-DDTHH:MM:SS` for epoch seconds, without a date crate.
fn iso_utc(secs: i64) -> String {
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    // Civil-from-days (Hinnant).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}",
        rem / 3600,
        rem / 60 % 60,
        rem % 60
    )
}

// ---------------------------------------------------------------------------------------------
// Vault lock and the small sub-resources.

#[tokio::test]
async fn vault_lock_state_machine() {
    let (emu, c) = setup("v").await;
    let policy = r#"{"Version":"2012-10-17","Statement":[]}"#;
    let initiate = || {
        c.initiate_vault_lock()
            .vault_name("v")
            .policy(
                aws_sdk_glacier::types::VaultLockPolicy::builder()
                    .policy(policy)
                    .build(),
            )
            .send()
    };
    let get = || c.get_vault_lock().vault_name("v").send();
    let complete = |id: String| c.complete_vault_lock().vault_name("v").lock_id(id).send();
    let abort = || c.abort_vault_lock().vault_name("v").send();

    assert_eq!(fail(get().await), ("ResourceNotFoundException".into(), 404));
    let id1 = initiate().await.unwrap().lock_id().unwrap().to_string();
    assert_eq!(id1.len(), 24);
    let g = get().await.unwrap();
    assert_eq!((g.state(), g.policy()), (Some("InProgress"), Some(policy)));
    assert_eq!(
        (g.creation_date(), g.expiration_date()),
        (
            Some("2026-01-01T00:00:00.000Z"),
            Some("2026-01-02T00:00:00.000Z")
        )
    );
    assert_eq!(
        fail(initiate().await),
        ("AccessDeniedException".into(), 403)
    );
    assert_eq!(
        code(complete("wrong".into()).await),
        "InvalidParameterValueException"
    );
    abort().await.unwrap();
    assert_eq!(code(get().await), "ResourceNotFoundException");
    abort().await.unwrap();

    // An InProgress lock expires after 24 h.
    initiate().await.unwrap();
    emu.advance(24 * HOUR - MINUTE);
    assert_eq!(emu.lock_state("v").unwrap().state, "InProgress");
    emu.advance(MINUTE);
    assert!(emu.lock_state("v").is_none());
    assert_eq!(code(get().await), "ResourceNotFoundException");

    let id3 = initiate().await.unwrap().lock_id().unwrap().to_string();
    complete(id3.clone()).await.unwrap();
    let g = get().await.unwrap();
    assert_eq!((g.state(), g.expiration_date()), (Some("Locked"), None));
    complete(id3.clone()).await.unwrap();
    assert_eq!(
        code(complete("other".into()).await),
        "AccessDeniedException"
    );
    assert_eq!(code(abort().await), "AccessDeniedException");
    assert_eq!(code(initiate().await), "AccessDeniedException");
    emu.advance(48 * HOUR);
    assert_eq!(
        emu.lock_state("v").unwrap().state,
        "Locked",
        "a lock is forever"
    );

    c.create_vault().vault_name("w").send().await.unwrap();
    let bad = c
        .initiate_vault_lock()
        .vault_name("w")
        .policy(
            aws_sdk_glacier::types::VaultLockPolicy::builder()
                .policy("not json")
                .build(),
        )
        .send()
        .await;
    assert_eq!(code(bad), "InvalidParameterValueException");
    let missing = c.initiate_vault_lock().vault_name("w").send().await;
    assert_eq!(code(missing), "MissingParameterValueException");
    assert_eq!(
        code(
            c.complete_vault_lock()
                .vault_name("w")
                .lock_id("x")
                .send()
                .await
        ),
        "InvalidParameterValueException"
    );
}

#[tokio::test]
async fn access_policy_notifications_and_tags() {
    use aws_sdk_glacier::types::{VaultAccessPolicy, VaultNotificationConfig};
    let (_emu, c) = setup("v").await;
    assert_eq!(
        code(c.get_vault_access_policy().vault_name("v").send().await),
        "ResourceNotFoundException"
    );
    let p = VaultAccessPolicy::builder().policy("{}").build();
    c.set_vault_access_policy()
        .vault_name("v")
        .policy(p)
        .send()
        .await
        .unwrap();
    let got = c
        .get_vault_access_policy()
        .vault_name("v")
        .send()
        .await
        .unwrap();
    assert_eq!(got.policy().and_then(|p| p.policy()), Some("{}"));
    c.delete_vault_access_policy()
        .vault_name("v")
        .send()
        .await
        .unwrap();
    c.delete_vault_access_policy()
        .vault_name("v")
        .send()
        .await
        .unwrap();

    let n = VaultNotificationConfig::builder()
        .sns_topic("arn:aws:sns:us-east-1:123456789012:t")
        .events("ArchiveRetrievalCompleted")
        .build();
    c.set_vault_notifications()
        .vault_name("v")
        .vault_notification_config(n)
        .send()
        .await
        .unwrap();
    let got = c
        .get_vault_notifications()
        .vault_name("v")
        .send()
        .await
        .unwrap();
    assert_eq!(
        got.vault_notification_config().unwrap().events(),
        ["ArchiveRetrievalCompleted"]
    );
    let bad = VaultNotificationConfig::builder()
        .events("Whatever")
        .build();
    assert_eq!(
        code(
            c.set_vault_notifications()
                .vault_name("v")
                .vault_notification_config(bad)
                .send()
                .await
        ),
        "InvalidParameterValueException"
    );

    c.add_tags_to_vault()
        .vault_name("v")
        .tags("team", "ops")
        .tags("env", "")
        .send()
        .await
        .unwrap();
    c.remove_tags_from_vault()
        .vault_name("v")
        .tag_keys("env")
        .tag_keys("absent")
        .send()
        .await
        .unwrap();
    let tags = c
        .list_tags_for_vault()
        .vault_name("v")
        .send()
        .await
        .unwrap();
    assert_eq!(
        tags.tags().unwrap().get("team").map(String::as_str),
        Some("ops")
    );
    assert_eq!(tags.tags().unwrap().len(), 1);
    let r = c
        .add_tags_to_vault()
        .vault_name("v")
        .tags("aws:reserved", "x")
        .send()
        .await;
    assert_eq!(code(r), "InvalidParameterValueException");
}

// ---------------------------------------------------------------------------------------------
// Wire details the SDK hides.

#[test]
fn raw_http_details() {
    // These requests are unsigned on purpose: what is checked here comes after the signature.
    let emu = Emulator::start_with(EmulatorOptions {
        verify_signatures: false,
        ..EmulatorOptions::default()
    });
    emu.create_vault("vault");
    let addr = emu.addr();

    // The version header is required; errors carry Glacier's shape.
    let (status, headers, body) = raw(
        addr,
        "GET /-/vaults/vault HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        b"",
    );
    assert_eq!(status, 400);
    assert_eq!(
        header(&headers, "x-amzn-errortype"),
        Some("MissingParameterValueException")
    );
    assert!(header(&headers, "x-amzn-requestid").is_some());
    let err: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(
        (err["code"].as_str(), err["type"].as_str()),
        (Some("MissingParameterValueException"), Some("Client"))
    );
    assert!(err["message"]
        .as_str()
        .unwrap()
        .contains("x-amz-glacier-version"));

    // Percent-decoded path segments, a numeric account id, and real JSON nulls.
    let v = "x-amz-glacier-version: 2012-06-01\r\n";
    let (status, headers, body) = raw(
        addr,
        &format!(
            "GET /123456789012/vaults/%76ault HTTP/1.1\r\nHost: x\r\n{v}Connection: close\r\n\r\n"
        ),
        b"",
    );
    assert_eq!(status, 200);
    assert!(header(&headers, "x-amzn-requestid").is_some());
    let text = String::from_utf8(body).unwrap();
    assert!(
        text.contains("\"LastInventoryDate\":null") && text.contains("\"NumberOfArchives\":null"),
        "{text}"
    );
    let (status, _, _) = raw(
        addr,
        &format!("GET /12345/vaults/vault HTTP/1.1\r\nHost: x\r\n{v}Connection: close\r\n\r\n"),
        b"",
    );
    assert_eq!(status, 400, "account ids are '-' or 12 digits");

    // A chunked upload behind Expect: 100-continue.
    let data = b"chunked archive body";
    let hash = tree_hash(data);
    let head = format!(
        "POST /-/vaults/vault/archives HTTP/1.1\r\nHost: x\r\n{v}x-amz-sha256-tree-hash: {hash}\r\n\
         x-amz-content-sha256: UNSIGNED-PAYLOAD\r\nTransfer-Encoding: chunked\r\nExpect: 100-continue\r\nConnection: close\r\n\r\n"
    );
    let body = [
        b"5\r\nchunk\r\n".as_slice(),
        b"f;ext=1\r\ned archive body\r\n",
        b"0\r\n\r\n",
    ]
    .concat();
    let (status, headers, _) = raw(addr, &head, &body);
    assert_eq!(status, 201);
    let id = header(&headers, "x-amz-archive-id").unwrap();
    assert_eq!(emu.archive_data("vault", id).unwrap(), data);

    // Unknown routes are counted and refused.
    let (status, headers, _) = raw(
        addr,
        &format!("PATCH /-/vaults/vault HTTP/1.1\r\nHost: x\r\n{v}Connection: close\r\n\r\n"),
        b"",
    );
    assert_eq!(
        (status, header(&headers, "x-amzn-errortype")),
        (400, Some("UnknownOperationException"))
    );
    assert_eq!(emu.stats().requests_for(Op::Unknown), 1);
}

// ---------------------------------------------------------------------------------------------
// Fault injection.

#[tokio::test]
async fn error_faults_reach_the_sdk_as_their_class_and_change_nothing() {
    let (emu, c) = setup("v").await;
    let cases = [
        (FaultKind::Throttle, "ThrottlingException", 400),
        (FaultKind::InternalError, "ServiceUnavailableException", 500),
        (
            FaultKind::ServiceUnavailable,
            "ServiceUnavailableException",
            503,
        ),
        (FaultKind::RequestTimeout, "RequestTimeoutException", 408),
    ];
    for (kind, want_code, want_status) in cases {
        emu.fail_next(Op::UploadArchive, kind, 1);
        let r = c
            .upload_archive()
            .vault_name("v")
            .body(ByteStream::from_static(b"data"))
            .send()
            .await;
        let e = r.expect_err("fault");
        assert!(matches!(e, SdkError::ServiceError(_)), "{kind:?}: {e:?}");
        assert_eq!(
            (e.code(), e.raw_response().unwrap().status().as_u16()),
            (Some(want_code), want_status)
        );
        assert!(
            emu.archives("v").is_empty(),
            "{kind:?} must not store the archive"
        );
    }
    // Scripted faults are used up; the next call goes through.
    emu.fail_next(Op::DescribeVault, FaultKind::Throttle, 2);
    assert_eq!(
        code(c.describe_vault().vault_name("v").send().await),
        "ThrottlingException"
    );
    assert_eq!(
        code(c.describe_vault().vault_name("v").send().await),
        "ThrottlingException"
    );
    c.describe_vault().vault_name("v").send().await.unwrap();
    let stats = emu.stats();
    assert_eq!(stats.faults[&FaultKind::Throttle], 3);
    assert_eq!(stats.faults_injected(), 6);
    assert_eq!(stats.requests_for(Op::DescribeVault), 3);
    let log = emu.request_log();
    assert_eq!(
        &log[log.len() - 3..],
        &[
            (Op::DescribeVault, 400),
            (Op::DescribeVault, 400),
            (Op::DescribeVault, 200)
        ]
    );
}

#[tokio::test]
async fn the_sdk_retries_every_transient_fault_and_no_permanent_error() {
    use aws_sdk_glacier::config::retry::RetryConfig;
    let (emu, _) = setup("v").await;
    emu.set_stall(Duration::from_millis(50));
    let retry = RetryConfig::standard()
        .with_max_attempts(2)
        .with_initial_backoff(Duration::from_millis(1))
        .with_max_backoff(Duration::from_millis(5));
    let c = Client::from_conf(sdk_config(&emu.endpoint()).retry_config(retry).build());
    let transient = [
        FaultKind::Throttle,
        FaultKind::InternalError,
        FaultKind::ServiceUnavailable,
        FaultKind::RequestTimeout,
        FaultKind::Reset,
        FaultKind::Timeout,
    ];
    for kind in transient {
        emu.reset_stats();
        emu.fail_next(Op::UploadArchive, kind, 1);
        let body = ByteStream::from_static(b"retried");
        c.upload_archive()
            .vault_name("v")
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(
            emu.stats().requests_for(Op::UploadArchive),
            2,
            "{kind:?} is retried"
        );
    }
    assert_eq!(
        emu.archives("v").len(),
        transient.len(),
        "each upload stored once"
    );
    emu.reset_stats();
    let r = c.describe_vault().vault_name("missing").send().await;
    assert_eq!(code(r), "ResourceNotFoundException");
    assert_eq!(
        emu.stats().requests_for(Op::DescribeVault),
        1,
        "permanent errors are not"
    );
}

#[tokio::test]
async fn resets_and_timeouts_are_dispatch_or_timeout_errors() {
    let (emu, c) = setup("v").await;
    emu.set_stall(Duration::from_millis(300));

    emu.fail_next(Op::UploadArchive, FaultKind::Reset, 1);
    let e = c
        .upload_archive()
        .vault_name("v")
        .body(ByteStream::from_static(b"reset"))
        .send()
        .await
        .unwrap_err();
    assert!(matches!(e, SdkError::DispatchFailure(_)), "{e:?}");
    assert!(
        emu.archives("v").is_empty(),
        "a reset before processing stores nothing"
    );

    emu.fail_next(Op::UploadArchive, FaultKind::Timeout, 1);
    let e = c
        .upload_archive()
        .vault_name("v")
        .body(ByteStream::from_static(b"stall"))
        .send()
        .await
        .unwrap_err();
    assert!(matches!(e, SdkError::DispatchFailure(_)), "{e:?}");
    assert!(emu.archives("v").is_empty());

    let impatient = sdk_client_with_timeout(&emu.endpoint(), Duration::from_millis(100));
    emu.fail_next(Op::DescribeVault, FaultKind::Timeout, 1);
    let e = impatient
        .describe_vault()
        .vault_name("v")
        .send()
        .await
        .unwrap_err();
    assert!(matches!(e, SdkError::TimeoutError(_)), "{e:?}");

    // After-commit faults: the client sees a failure, but the service did the work.
    emu.fail_next(Op::UploadArchive, FaultKind::ResetAfterCommit, 1);
    let e = c
        .upload_archive()
        .vault_name("v")
        .archive_description("lost reply")
        .body(ByteStream::from_static(b"kept"))
        .send()
        .await
        .unwrap_err();
    assert!(matches!(e, SdkError::DispatchFailure(_)), "{e:?}");
    let stored = emu.archives("v");
    assert_eq!(
        (stored.len(), stored[0].description.as_str()),
        (1, "lost reply")
    );
    emu.fail_next(Op::CreateVault, FaultKind::TimeoutAfterCommit, 1);
    assert!(c.create_vault().vault_name("w").send().await.is_err());
    assert!(emu.vault_names().contains(&"w".to_string()));
    assert!(emu.request_log().contains(&(Op::UploadArchive, 0)));

    // The connection pool recovers: the next call on the same client works.
    c.describe_vault().vault_name("v").send().await.unwrap();
}

#[tokio::test]
async fn output_faults_corrupt_or_cut_the_body() {
    let (emu, c) = setup("v").await;
    let data = bytes(3 * MIB, 6);
    let id = upload(&c, "v", "", &data).await;
    let job = start_job(&c, "v", archive_params(&id).build()).await;
    emu.complete_all_jobs();

    emu.fail_next(Op::GetJobOutput, FaultKind::CorruptOutput, 1);
    let (_, hash, _, body) = read_output(&c, "v", &job, None).await;
    assert_eq!(
        hash.as_deref(),
        Some(tree_hash(&data).as_str()),
        "headers still claim the right hash"
    );
    assert_eq!(body.len(), data.len());
    assert_ne!(body, data);
    assert_ne!(tree_hash(&body), tree_hash(&data));
    assert_eq!(read_output(&c, "v", &job, None).await.3, data, "one-shot");

    emu.corrupt_job_output(&job, false);
    assert_ne!(
        read_output(&c, "v", &job, Some("bytes=0-1048575")).await.3,
        &data[..MIB]
    );
    assert_eq!(
        read_output(&c, "v", &job, Some("bytes=0-1048575")).await.3,
        &data[..MIB]
    );
    emu.corrupt_job_output(&job, true);
    assert_ne!(read_output(&c, "v", &job, None).await.3, data);
    assert_ne!(read_output(&c, "v", &job, None).await.3, data);
    emu.clear_faults();
    assert_eq!(read_output(&c, "v", &job, None).await.3, data);

    for kind in [FaultKind::TruncateOutput, FaultKind::ResetMidBody] {
        emu.fail_next(Op::GetJobOutput, kind, 1);
        let out = c
            .get_job_output()
            .vault_name("v")
            .job_id(&job)
            .send()
            .await
            .unwrap();
        match out.body.collect().await {
            Err(_) => {}
            Ok(b) => assert!(
                b.into_bytes().len() < data.len(),
                "{kind:?} must not deliver the whole body"
            ),
        }
    }
    let served = &emu.stats().job_output[&job];
    assert!(
        served.bytes_served < 7 * data.len() as u64,
        "cut bodies count what was sent"
    );
    assert_eq!(read_output(&c, "v", &job, None).await.3, data);
}

#[tokio::test]
async fn a_seeded_fault_plan_is_reproducible() {
    let (emu, c) = setup("v").await;
    let run = |seed: u64| {
        let (emu, c) = (&emu, &c);
        async move {
            emu.set_faults(FaultPlan {
                rate: 0.5,
                kinds: vec![
                    FaultKind::Throttle,
                    FaultKind::InternalError,
                    FaultKind::CorruptOutput,
                ],
                seed,
                ops: Some(vec![Op::DescribeVault]),
            });
            let mut outcomes = Vec::new();
            for _ in 0..40 {
                let r = c.describe_vault().vault_name("v").send().await;
                outcomes.push(r.err().and_then(|e| e.code().map(String::from)));
                // Operations outside the plan are never hit.
                c.list_vaults().send().await.unwrap();
            }
            outcomes
        }
    };
    let first = run(42).await;
    let faults = first.iter().filter(|o| o.is_some()).count();
    assert!((8..=32).contains(&faults), "{faults} faults at rate 0.5");
    assert!(first
        .iter()
        .flatten()
        .all(|c| c == "ThrottlingException" || c == "ServiceUnavailableException"));
    assert_eq!(run(42).await, first);
    assert_ne!(run(43).await, first);
    emu.clear_faults();
    c.describe_vault().vault_name("v").send().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn parallel_part_uploads_assemble_correctly() {
    let (emu, c) = setup("v").await;
    let data = bytes(8 * MIB + 123, 7);
    let up = initiate(&c, "v", MIB, "parallel").await;
    let tasks: Vec<_> = data
        .chunks(MIB)
        .enumerate()
        .map(|(i, part)| {
            let (c, up, part) = (c.clone(), up.clone(), part.to_vec());
            tokio::spawn(async move { put_part(&c, "v", &up, i * MIB, &part).await.unwrap() })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    assert_eq!(emu.multipart_uploads("v")[0].parts.len(), 9);
    let id = complete(&c, "v", &up, data.len(), &tree_hash(&data))
        .await
        .unwrap();
    assert_eq!(emu.archive_data("v", &id).unwrap(), data);
}
