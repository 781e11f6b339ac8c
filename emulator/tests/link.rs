//! The link model: every request waits the latency set, and bodies move no faster than the
//! bandwidth set per connection, Glacier's and S3's, both ways; the binary sets both from its
//! options. Times are asserted only from below ("at least"), never as an upper bound.
// A test fails by panicking, so unwrap and expect are how it says what went wrong.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use aws_sdk_glacier::primitives::ByteStream;
use aws_sdk_glacier::types::JobParameters;
use glacier_emulator::{Emulator, EmulatorOptions, Link};
use support::{s3_client, sdk_client};

const LATENCY: Duration = Duration::from_millis(150);
/// 4 MB/s: a 2 MB body takes at least half a second each way.
const RATE: u64 = 4_000_000;
const BODY: usize = 2_000_000;

/// Asserts that moving a body of `len` bytes, started at `started`, took at least its time
/// at [`RATE`].
fn took_the_body_time(what: &str, len: usize, started: Instant) {
    let took = started.elapsed();
    assert_eq!(len, BODY, "{what}");
    assert!(took >= body_time(), "a {BODY}-byte {what} took {took:?}");
}

fn body_time() -> Duration {
    Duration::from_secs_f64(BODY as f64 / RATE as f64)
}

#[tokio::test]
async fn every_request_waits_the_latency() {
    let emu = Emulator::start_with(EmulatorOptions {
        link: Link {
            latency: LATENCY,
            bandwidth: None,
        },
        ..EmulatorOptions::default()
    });
    emu.create_vault("v");
    let c = sdk_client(&emu.endpoint());
    let started = Instant::now();
    for _ in 0..3 {
        c.list_vaults().send().await.unwrap();
    }
    // Three requests, each one round trip: the latency is per request, not per connection.
    assert!(
        started.elapsed() >= 3 * LATENCY,
        "3 requests took {:?}",
        started.elapsed()
    );
    // An error answer waits as long as a success.
    let started = Instant::now();
    let missing = c.describe_vault().vault_name("nope").send().await;
    assert!(missing.is_err());
    assert!(started.elapsed() >= LATENCY, "took {:?}", started.elapsed());
}

#[tokio::test]
async fn glacier_bodies_move_at_the_bandwidth_each_way() {
    let emu = Emulator::start();
    emu.create_vault("v");
    // Set after start: the test knob as a test would turn it.
    emu.set_link(Link {
        latency: Duration::ZERO,
        bandwidth: Some(RATE),
    });
    let c = sdk_client(&emu.endpoint());
    let data = vec![7u8; BODY];

    let started = Instant::now();
    let archive = c
        .upload_archive()
        .vault_name("v")
        .body(ByteStream::from(data.clone()))
        .send()
        .await
        .unwrap()
        .archive_id()
        .unwrap()
        .to_string();
    took_the_body_time("upload", data.len(), started);

    let job = c
        .initiate_job()
        .vault_name("v")
        .job_parameters(
            JobParameters::builder()
                .r#type("archive-retrieval")
                .archive_id(&archive)
                .build(),
        )
        .send()
        .await
        .unwrap()
        .job_id()
        .unwrap()
        .to_string();
    emu.complete_all_jobs();
    let started = Instant::now();
    let out = c
        .get_job_output()
        .vault_name("v")
        .job_id(&job)
        .send()
        .await
        .unwrap();
    let got = out.body.collect().await.unwrap().into_bytes();
    took_the_body_time("download", got.len(), started);
}

#[tokio::test]
async fn s3_bodies_move_at_the_bandwidth_each_way() {
    let emu = Emulator::start_with(EmulatorOptions {
        link: Link {
            latency: Duration::ZERO,
            bandwidth: Some(RATE),
        },
        ..EmulatorOptions::default()
    });
    emu.s3_create_bucket("paced");
    let c = s3_client(&emu.endpoint());
    let data = vec![9u8; BODY];

    let (len, started) = (data.len(), Instant::now());
    c.put_object()
        .bucket("paced")
        .key("k")
        .body(aws_sdk_s3::primitives::ByteStream::from(data))
        .send()
        .await
        .unwrap();
    took_the_body_time("PutObject", len, started);

    let started = Instant::now();
    let out = c
        .get_object()
        .bucket("paced")
        .key("k")
        .send()
        .await
        .unwrap();
    let got = out.body.collect().await.unwrap().into_bytes();
    took_the_body_time("GetObject", got.len(), started);
}

#[tokio::test]
async fn the_binary_takes_latency_and_bandwidth() {
    let mut child = Command::new(env!("CARGO_BIN_EXE_glacier-emulator"))
        .args(["--latency", "150", "--bandwidth", "4"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start glacier-emulator");
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let endpoint = line.trim_end().to_string();
    let c = sdk_client(&endpoint);
    c.create_vault().vault_name("v").send().await.unwrap();
    let started = Instant::now();
    c.upload_archive()
        .vault_name("v")
        .body(ByteStream::from(vec![1u8; BODY]))
        .send()
        .await
        .unwrap();
    let took = started.elapsed();
    let _ = child.kill();
    let _ = child.wait();
    assert!(
        took >= LATENCY + body_time(),
        "an upload behind 150 ms and 4 MB/s took {took:?}"
    );
}

#[test]
fn the_binary_refuses_bad_link_values_in_one_line() {
    for args in [
        ["--latency", "soon"],
        ["--latency", "-5"],
        ["--bandwidth", "0"],
        ["--bandwidth", "fast"],
    ] {
        let out = Command::new(env!("CARGO_BIN_EXE_glacier-emulator"))
            .args(args)
            .stdin(Stdio::null())
            .output()
            .expect("run glacier-emulator");
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(err.trim_end().lines().count(), 1, "{args:?}: {err}");
        assert!(err.contains(args[0]), "{args:?}: {err}");
    }
}
