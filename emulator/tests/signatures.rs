//! The emulator checks every request's SigV4 signature and payload hash, as Glacier does, so a
//! client that signs wrong fails at once. Driven through the real aws-sdk-glacier: requests it
//! signs with the right key pass; a wrong secret, an unknown key, a body byte or a header
//! changed after signing (by an interceptor that runs after the signer) are refused with
//! Glacier's errors, and nothing they asked for happens.
// A test fails by panicking, so unwrap and expect are how it says what went wrong.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use aws_sdk_glacier::config::interceptors::BeforeTransmitInterceptorContextMut;
use aws_sdk_glacier::config::{ConfigBag, Credentials, Intercept, Region, RuntimeComponents};
use aws_sdk_glacier::error::{BoxError, ProvideErrorMetadata, SdkError};
use aws_sdk_glacier::primitives::{ByteStream, SdkBody};
use aws_sdk_glacier::types::JobParameters;
use aws_sdk_glacier::Client;
use glacier_emulator::*;
use support::{sdk_client, sdk_config};

/// A client signing with these credentials instead of the well-known pair.
fn client_with(endpoint: &str, key_id: &str, secret: &str, token: Option<&str>) -> Client {
    let creds = Credentials::new(key_id, secret, token.map(str::to_owned), None, "test");
    Client::from_conf(sdk_config(endpoint).credentials_provider(creds).build())
}

/// The error code and HTTP status of a failed call.
fn failure<O: std::fmt::Debug, E: ProvideErrorMetadata + std::fmt::Debug>(
    r: Result<O, SdkError<E>>,
) -> (String, u16) {
    let e = r.expect_err("the call should fail");
    let status = e.raw_response().map_or(0, |r| r.status().as_u16());
    (e.code().unwrap_or("").to_owned(), status)
}

fn invalid_signature() -> (String, u16) {
    ("InvalidSignatureException".into(), 403)
}

/// What an interceptor does to a request after it was signed, right before it is sent.
#[derive(Debug, Clone)]
enum AfterSigning {
    /// Nothing: shows the interceptor itself is harmless.
    Nothing,
    /// Flips the lowest bit of the body's byte at this offset.
    FlipBodyByte(usize),
    /// Sets a header (replacing any of that name).
    SetHeader(&'static str, String),
}

#[derive(Debug)]
struct Tamper(AfterSigning);

impl Intercept for Tamper {
    fn name(&self) -> &'static str {
        "signatures::Tamper"
    }

    // Runs after the signer: whatever changes here is not what was signed.
    fn modify_before_transmit(
        &self,
        context: &mut BeforeTransmitInterceptorContextMut<'_>,
        _runtime_components: &RuntimeComponents,
        _cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        let request = context.request_mut();
        assert!(
            request.headers().get("authorization").is_some(),
            "the request is signed by now"
        );
        match &self.0 {
            AfterSigning::Nothing => {}
            AfterSigning::FlipBodyByte(at) => {
                let mut body = request.body().bytes().expect("an in-memory body").to_vec();
                body[*at] ^= 1;
                *request.body_mut() = SdkBody::from(body);
            }
            AfterSigning::SetHeader(name, value) => {
                request.headers_mut().insert(*name, value.clone());
            }
        }
        Ok(())
    }
}

async fn upload(
    c: &Client,
    vault: &str,
    data: &'static [u8],
    t: AfterSigning,
) -> Result<(), (String, u16)> {
    c.upload_archive()
        .vault_name(vault)
        .archive_description("d")
        .body(ByteStream::from_static(data))
        .customize()
        .interceptor(Tamper(t))
        .send()
        .await
        .map(drop)
        .map_err(|e| failure::<(), _>(Err(e)))
}

#[tokio::test]
async fn requests_signed_with_the_right_key_pass_everywhere() {
    let emu = Emulator::start();
    let c = sdk_client(&emu.endpoint());
    // Path parameters, query strings (sorted, one with a marker), JSON bodies, upload bodies
    // with their hash headers, a body-less POST and a DELETE: each signs its own way.
    c.create_vault()
        .vault_name("sig.vault-1_x")
        .send()
        .await
        .unwrap();
    c.create_vault().vault_name("other").send().await.unwrap();
    let page = c.list_vaults().limit(1).send().await.unwrap();
    let marker = page.marker().expect("a second page").to_owned();
    let rest = c
        .list_vaults()
        .limit(1)
        .marker(marker)
        .send()
        .await
        .unwrap();
    assert_eq!(rest.vault_list().len(), 1);
    let id = c
        .upload_archive()
        .vault_name("sig.vault-1_x")
        .archive_description("a description with spaces  and  more")
        .body(ByteStream::from_static(b"archive body"))
        .send()
        .await
        .unwrap()
        .archive_id()
        .unwrap()
        .to_owned();
    let upload = c
        .initiate_multipart_upload()
        .vault_name("sig.vault-1_x")
        .part_size("1048576")
        .send()
        .await
        .unwrap()
        .upload_id()
        .unwrap()
        .to_owned();
    c.upload_multipart_part()
        .vault_name("sig.vault-1_x")
        .upload_id(&upload)
        .range("bytes 0-4/*")
        .body(ByteStream::from_static(b"parts"))
        .send()
        .await
        .unwrap();
    c.list_parts()
        .vault_name("sig.vault-1_x")
        .upload_id(&upload)
        .limit(5)
        .send()
        .await
        .unwrap();
    c.abort_multipart_upload()
        .vault_name("sig.vault-1_x")
        .upload_id(&upload)
        .send()
        .await
        .unwrap();
    let job = c
        .initiate_job()
        .vault_name("sig.vault-1_x")
        .job_parameters(
            JobParameters::builder()
                .r#type("archive-retrieval")
                .archive_id(&id)
                .tier("Expedited")
                .build(),
        )
        .send()
        .await
        .unwrap()
        .job_id()
        .unwrap()
        .to_owned();
    emu.complete_all_jobs();
    c.list_jobs()
        .vault_name("sig.vault-1_x")
        .completed("true")
        .statuscode("Succeeded")
        .limit(10)
        .send()
        .await
        .unwrap();
    let out = c
        .get_job_output()
        .vault_name("sig.vault-1_x")
        .job_id(&job)
        .range("bytes=0-6")
        .send()
        .await
        .unwrap();
    assert_eq!(
        out.body.collect().await.unwrap().into_bytes().as_ref(),
        b"archive"
    );
    c.add_tags_to_vault()
        .vault_name("sig.vault-1_x")
        .tags("k", "v w")
        .send()
        .await
        .unwrap();
    c.delete_archive()
        .vault_name("sig.vault-1_x")
        .archive_id(&id)
        .send()
        .await
        .unwrap();

    // Another pair, once the emulator is told of it, with a session token (signed, not
    // checked: there is no STS here).
    emu.accept_credentials("AKIDSECOND", "second/secret+key");
    let second = client_with(
        &emu.endpoint(),
        "AKIDSECOND",
        "second/secret+key",
        Some("tok/en=="),
    );
    second.list_vaults().send().await.unwrap();

    // And not one request was refused.
    let log = emu.request_log();
    assert!(log.iter().all(|(_, status)| *status < 300), "{log:?}");
}

#[tokio::test]
async fn a_wrong_secret_or_an_unknown_key_is_refused() {
    let emu = Emulator::start();
    let wrong = client_with(&emu.endpoint(), ACCESS_KEY_ID, "emulator-secreT", None);
    assert_eq!(
        failure(wrong.create_vault().vault_name("v").send().await),
        invalid_signature()
    );
    emu.create_vault("v");
    assert_eq!(
        failure(
            wrong
                .upload_archive()
                .vault_name("v")
                .body(ByteStream::from_static(b"data"))
                .send()
                .await
        ),
        invalid_signature()
    );
    let unknown = client_with(&emu.endpoint(), "AKIDNOBODY", SECRET_ACCESS_KEY, None);
    assert_eq!(
        failure(unknown.list_vaults().send().await),
        ("UnrecognizedClientException".into(), 403)
    );
    assert_eq!(
        emu.vault_names(),
        ["v"],
        "the refused CreateVault did nothing"
    );
    assert!(
        emu.archives("v").is_empty(),
        "the refused upload stored nothing"
    );

    // Signed for another region than the endpoint's.
    let elsewhere = Client::from_conf(
        sdk_config(&emu.endpoint())
            .region(Region::new("eu-west-1"))
            .build(),
    );
    assert_eq!(
        failure(elsewhere.list_vaults().send().await),
        invalid_signature()
    );

    // With verification off, anything goes (for tests that send raw HTTP on purpose).
    emu.set_verify_signatures(false);
    wrong.list_vaults().send().await.unwrap();
}

#[tokio::test]
async fn a_body_byte_changed_after_signing_is_refused() {
    let emu = Emulator::start();
    emu.create_vault("v");
    let c = sdk_client(&emu.endpoint());
    const DATA: &[u8] = b"the body that was signed";

    // The interceptor alone changes nothing.
    upload(&c, "v", DATA, AfterSigning::Nothing).await.unwrap();
    assert_eq!(emu.archives("v").len(), 1);

    // An upload carries its hashes in signed headers; the signature covers the body itself.
    for at in [0, DATA.len() / 2, DATA.len() - 1] {
        assert_eq!(
            upload(&c, "v", DATA, AfterSigning::FlipBodyByte(at)).await,
            Err(invalid_signature()),
            "byte {at}"
        );
    }
    assert_eq!(emu.archives("v").len(), 1, "no changed body was stored");

    // A JSON body has no hash header: the signature alone covers it.
    let archive = emu.put_archive("v", "x", b"archive", None);
    let job = c
        .initiate_job()
        .vault_name("v")
        .job_parameters(
            JobParameters::builder()
                .r#type("archive-retrieval")
                .archive_id(&archive)
                .description("a")
                .build(),
        )
        .customize()
        .interceptor(Tamper(AfterSigning::FlipBodyByte(2)))
        .send()
        .await;
    assert_eq!(failure(job), invalid_signature());
    assert!(emu.jobs("v").is_empty(), "no job was started");
}

#[tokio::test]
async fn a_wrong_x_amz_content_sha256_is_refused() {
    let emu = Emulator::start();
    emu.create_vault("v");
    let c = sdk_client(&emu.endpoint());
    const DATA: &[u8] = b"payload";
    let wrong = hex::encode([7u8; 32]);

    // Changed after signing: the signature no longer covers the headers sent.
    assert_eq!(
        upload(
            &c,
            "v",
            DATA,
            AfterSigning::SetHeader("x-amz-content-sha256", wrong.clone())
        )
        .await,
        Err(invalid_signature())
    );
    // Changed before signing, so signed as it is: the signature is good, but the header does
    // not name the body received (nor what the signer hashed).
    let before = c
        .upload_archive()
        .vault_name("v")
        .body(ByteStream::from_static(DATA))
        .customize()
        .mutate_request({
            let wrong = wrong.clone();
            move |r| {
                r.headers_mut()
                    .insert("x-amz-content-sha256", wrong.clone());
            }
        })
        .send()
        .await;
    assert_eq!(
        failure(before),
        ("InvalidParameterValueException".into(), 400)
    );
    // The same on an operation that has no such header of its own.
    let describe = c
        .describe_vault()
        .vault_name("v")
        .customize()
        .mutate_request(move |r| {
            r.headers_mut()
                .insert("x-amz-content-sha256", wrong.clone());
        })
        .send()
        .await;
    assert_eq!(
        failure(describe),
        ("InvalidParameterValueException".into(), 400)
    );
    // The tree hash, changed after signing, is a signature error too (it is a signed header);
    // changed before, the upload's own checksum check refuses it.
    let tree = hex::encode([9u8; 32]);
    assert_eq!(
        upload(
            &c,
            "v",
            DATA,
            AfterSigning::SetHeader("x-amz-sha256-tree-hash", tree)
        )
        .await,
        Err(invalid_signature())
    );
    assert!(emu.archives("v").is_empty());
}

#[tokio::test]
async fn every_x_amz_header_must_be_signed() {
    let emu = Emulator::start();
    let c = sdk_client(&emu.endpoint());
    let r = c
        .create_vault()
        .vault_name("v")
        .customize()
        .interceptor(Tamper(AfterSigning::SetHeader(
            "x-amz-extra",
            "added after signing".into(),
        )))
        .send()
        .await;
    assert_eq!(failure(r), invalid_signature());
    assert!(emu.vault_names().is_empty());
}

#[test]
fn an_unsigned_request_is_missing_its_token() {
    let emu = Emulator::start();
    let mut s = TcpStream::connect(emu.addr()).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(
        b"GET /-/vaults HTTP/1.1\r\nHost: x\r\nx-amz-glacier-version: 2012-06-01\r\n\
          Connection: close\r\n\r\n",
    )
    .unwrap();
    let mut response = String::new();
    s.read_to_string(&mut response).unwrap();
    assert!(response.starts_with("HTTP/1.1 403 "), "{response}");
    assert!(
        response.contains("\"code\":\"MissingAuthenticationTokenException\""),
        "{response}"
    );
    assert_eq!(emu.request_log(), [(Op::ListVaults, 403)]);
}
