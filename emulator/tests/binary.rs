//! The `glacier-emulator` binary as a try-out uses it: started on its own, it prints its
//! endpoint, serves the SDK, completes jobs on its own in real time, and stops on SIGTERM.
// A test fails by panicking, so unwrap and expect are how it says what went wrong.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use aws_sdk_glacier::primitives::ByteStream;
use aws_sdk_glacier::types::{JobParameters, StatusCode};
use aws_sdk_glacier::Client;
use support::sdk_client;

/// A running binary, killed when dropped so a failing test leaves nothing behind.
struct Served {
    child: Child,
    endpoint: String,
}

impl Served {
    fn start(args: &[&str]) -> Served {
        let mut child = Command::new(env!("CARGO_BIN_EXE_glacier-emulator"))
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .spawn()
            .expect("start glacier-emulator");
        let stdout = child.stdout.take().expect("piped stdout");
        // A thread reads, so that a binary that never prints fails the test instead of hanging.
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut line = String::new();
            let _ = BufReader::new(stdout).read_line(&mut line);
            let _ = tx.send(line);
        });
        let mut served = Served {
            child,
            endpoint: String::new(),
        };
        let line = rx
            .recv_timeout(Duration::from_secs(10))
            .expect("the endpoint line within 10 s");
        served.endpoint = line.trim_end().to_string();
        served
    }

    /// Sends SIGTERM and waits for the exit.
    fn stop(&mut self) -> ExitStatus {
        // SAFETY: kill has no memory effects; the pid is our own child, not yet reaped.
        unsafe { libc::kill(self.child.id() as libc::pid_t, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(status) = self.child.try_wait().expect("wait for glacier-emulator") {
                return status;
            }
            assert!(Instant::now() < deadline, "no exit within 10 s of SIGTERM");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Polls DescribeJob until the job is no longer in progress; returns its status and how long
/// that took.
async fn wait_for_job(c: &Client, vault: &str, job: &str) -> (StatusCode, Duration) {
    let started = Instant::now();
    loop {
        let d = c
            .describe_job()
            .vault_name(vault)
            .job_id(job)
            .send()
            .await
            .expect("DescribeJob");
        let status = d.status_code().cloned().expect("a status code");
        if status != StatusCode::InProgress {
            assert!(d.completed(), "a finished job says it completed");
            return (status, started.elapsed());
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "job {job} still in progress after 10 s"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn serves_the_sdk_and_completes_jobs_in_real_time() {
    let mut served = Served::start(&["--job-delay", "1", "--seed", "7"]);
    assert!(
        served.endpoint.starts_with("http://127.0.0.1:"),
        "endpoint line: {:?}",
        served.endpoint
    );
    let c = sdk_client(&served.endpoint);
    c.create_vault()
        .vault_name("try")
        .send()
        .await
        .expect("CreateVault");
    let data = b"an archive to retrieve".to_vec();
    let archive_id = c
        .upload_archive()
        .vault_name("try")
        .archive_description("try/file")
        .body(ByteStream::from(data.clone()))
        .send()
        .await
        .expect("UploadArchive")
        .archive_id()
        .expect("an archive id")
        .to_string();

    let job = c
        .initiate_job()
        .vault_name("try")
        .job_parameters(
            JobParameters::builder()
                .r#type("archive-retrieval")
                .archive_id(&archive_id)
                .tier("Bulk")
                .build(),
        )
        .send()
        .await
        .expect("InitiateJob (archive)")
        .job_id()
        .expect("a job id")
        .to_string();
    let (status, took) = wait_for_job(&c, "try", &job).await;
    assert_eq!(status, StatusCode::Succeeded);
    // The delay applies to every tier, Bulk included; some slack below for the poll interval.
    assert!(
        took >= Duration::from_millis(700),
        "completed after {took:?}"
    );
    let out = c
        .get_job_output()
        .vault_name("try")
        .job_id(&job)
        .send()
        .await
        .expect("GetJobOutput");
    let body = out.body.collect().await.expect("job output").into_bytes();
    assert_eq!(body.as_ref(), data.as_slice());

    // Nobody takes inventories by hand here: the job's completion does.
    let job = c
        .initiate_job()
        .vault_name("try")
        .job_parameters(
            JobParameters::builder()
                .r#type("inventory-retrieval")
                .build(),
        )
        .send()
        .await
        .expect("InitiateJob (inventory)")
        .job_id()
        .expect("a job id")
        .to_string();
    let (status, _) = wait_for_job(&c, "try", &job).await;
    assert_eq!(status, StatusCode::Succeeded);
    let out = c
        .get_job_output()
        .vault_name("try")
        .job_id(&job)
        .send()
        .await
        .expect("GetJobOutput");
    let body = out.body.collect().await.expect("job output").into_bytes();
    let inventory: serde_json::Value = serde_json::from_slice(&body).expect("a JSON inventory");
    assert_eq!(
        inventory["ArchiveList"][0]["ArchiveId"].as_str(),
        Some(archive_id.as_str()),
        "inventory: {inventory}"
    );

    let status = served.stop();
    assert!(status.success(), "SIGTERM should stop it cleanly: {status}");
}

#[tokio::test]
async fn accepts_signatures_made_with_its_key_only() {
    use aws_sdk_glacier::config::Credentials;
    use aws_sdk_glacier::error::ProvideErrorMetadata;

    let client = |endpoint: &str, key_id: &str, secret: &str| {
        let creds = Credentials::new(key_id, secret, None, None, "test");
        Client::from_conf(
            support::sdk_config(endpoint)
                .credentials_provider(creds)
                .build(),
        )
    };
    // The documented defaults, as sdk_client signs.
    let served = Served::start(&[]);
    sdk_client(&served.endpoint)
        .list_vaults()
        .send()
        .await
        .expect("the default key");
    drop(served);

    let served = Served::start(&["--access-key", "AKIDTRYOUT", "--secret-key=try/out+secret"]);
    let refused = sdk_client(&served.endpoint).list_vaults().send().await;
    assert_eq!(
        refused
            .expect_err("the default key is not this one's")
            .code(),
        Some("UnrecognizedClientException")
    );
    let wrong = client(&served.endpoint, "AKIDTRYOUT", "try/out+secreT");
    let refused = wrong.list_vaults().send().await;
    assert_eq!(
        refused.expect_err("a wrong secret").code(),
        Some("InvalidSignatureException")
    );
    client(&served.endpoint, "AKIDTRYOUT", "try/out+secret")
        .create_vault()
        .vault_name("try")
        .send()
        .await
        .expect("its own key");
}

#[test]
fn a_bad_argument_is_one_line_and_exit_2() {
    for args in [
        &["--job-delay", "soon"][..],
        &["--listen", "nowhere"],
        &["--seed"],
        &["--access-key"],
        &["--secret-key="],
        &["--verbose"],
    ] {
        let out = Command::new(env!("CARGO_BIN_EXE_glacier-emulator"))
            .args(args)
            .stdin(Stdio::null())
            .output()
            .expect("run glacier-emulator");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        assert_eq!(stderr.lines().count(), 1, "{args:?}: {stderr}");
        assert!(out.stdout.is_empty(), "{args:?}");
    }
}

#[test]
fn an_address_in_use_is_one_line_and_exit_1() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind a port");
    let addr = taken.local_addr().expect("its address").to_string();
    let out = Command::new(env!("CARGO_BIN_EXE_glacier-emulator"))
        .args(["--listen", &addr])
        .stdin(Stdio::null())
        .output()
        .expect("run glacier-emulator");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
}
