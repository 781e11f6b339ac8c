//! Shared test support: the Glacier emulator (the `glacier-emulator` crate), running mounts,
//! SDK clients, and small file-system helpers.
#![allow(dead_code)]

pub mod export;
pub mod inproc;
pub mod mount;
pub mod s3;

pub use glacier_emulator as emulator;

use std::collections::BTreeMap;
use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::time::UNIX_EPOCH;

/// One regular file seen through the mount.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Seen {
    pub size: u64,
    pub mtime: i64,
}

/// Every regular file under `dir`, by '/'-joined path relative to it; directories end in '/'.
pub fn walk(dir: &Path) -> BTreeMap<String, Option<Seen>> {
    let mut out = BTreeMap::new();
    walk_into(dir, "", &mut out);
    out
}

fn walk_into(dir: &Path, prefix: &str, out: &mut BTreeMap<String, Option<Seen>>) {
    let entries =
        std::fs::read_dir(dir).unwrap_or_else(|e| panic!("read_dir {}: {e}", dir.display()));
    for e in entries {
        let e = e.expect("directory entry");
        let name = e.file_name().to_string_lossy().into_owned();
        let rel = format!("{prefix}{name}");
        let meta = std::fs::symlink_metadata(e.path()).expect("stat");
        if meta.is_dir() {
            out.insert(format!("{rel}/"), None);
            walk_into(&e.path(), &format!("{rel}/"), out);
        } else {
            let mtime = meta
                .modified()
                .expect("mtime")
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_secs() as i64)
                .unwrap_or(0);
            out.insert(
                rel,
                Some(Seen {
                    size: meta.len(),
                    mtime,
                }),
            );
        }
    }
}

/// Reads an extended attribute; Err carries the errno.
pub fn xattr(path: &Path, name: &str) -> Result<String, i32> {
    let p = CString::new(path.as_os_str().as_bytes()).expect("path");
    let n = CString::new(name).expect("name");
    let mut buf = vec![0u8; 4096];
    // SAFETY: valid C strings and a buffer of the stated length.
    let len = unsafe { libc::getxattr(p.as_ptr(), n.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
    if len < 0 {
        return Err(std::io::Error::last_os_error().raw_os_error().unwrap_or(0));
    }
    buf.truncate(len as usize);
    Ok(String::from_utf8_lossy(&buf).into_owned())
}

/// A bare SDK client for `endpoint`: the emulator's well-known credentials (it checks every
/// signature), us-east-1, retries off (tests see raw behaviour), plain HTTP through the
/// rustls-ring client (the crate has no default client).
/// The emulator's own tests build theirs the same way; the emulator library has no SDK in it.
pub fn sdk_client(endpoint: &str) -> aws_sdk_glacier::Client {
    aws_sdk_glacier::Client::from_conf(sdk_config(endpoint).build())
}

/// The emulator's well-known credentials, for an SDK client of either service (moto takes
/// any).
pub fn emulator_credentials() -> aws_sdk_glacier::config::Credentials {
    aws_sdk_glacier::config::Credentials::new(
        emulator::ACCESS_KEY_ID,
        emulator::SECRET_ACCESS_KEY,
        None,
        None,
        "emulator",
    )
}

/// A plain rustls-ring HTTP client for the SDKs (the crates are built without a default one).
pub fn sdk_http_client() -> aws_smithy_runtime_api::client::http::SharedHttpClient {
    use aws_smithy_http_client::tls::{rustls_provider::CryptoMode, Provider};
    aws_smithy_http_client::Builder::new()
        .tls_provider(Provider::Rustls(CryptoMode::Ring))
        .build_https()
}

/// moto's endpoint, which `scripts/test.sh` starts and passes in GLACIERFS_MOTO_ENDPOINT; None
/// (and a note) outside it, which CI never is.
pub fn moto_endpoint() -> Option<String> {
    match std::env::var("GLACIERFS_MOTO_ENDPOINT") {
        Ok(e) if !e.is_empty() => Some(e),
        _ => {
            assert!(
                std::env::var("CI").as_deref() != Ok("true"),
                "GLACIERFS_MOTO_ENDPOINT is not set: run the tests through scripts/test.sh"
            );
            eprintln!("skipping: GLACIERFS_MOTO_ENDPOINT is not set (scripts/test.sh sets it)");
            None
        }
    }
}

/// A name no other test uses, for what lives in moto (shared by every test).
pub fn unique_name(prefix: &str) -> String {
    let n = std::time::SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_nanos();
    format!("{prefix}-{}-{}", std::process::id(), n % 1_000_000_000)
}

/// The configuration behind [`sdk_client`], for tests that need to change something (an
/// interceptor, say) before building a client.
pub fn sdk_config(endpoint: &str) -> aws_sdk_glacier::config::Builder {
    use aws_sdk_glacier::config::retry::RetryConfig;
    use aws_sdk_glacier::config::timeout::TimeoutConfig;
    use aws_sdk_glacier::config::{BehaviorVersion, Region};

    aws_sdk_glacier::Config::builder()
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new("us-east-1"))
        .credentials_provider(emulator_credentials())
        .endpoint_url(endpoint)
        .http_client(sdk_http_client())
        .retry_config(RetryConfig::disabled())
        .timeout_config(
            TimeoutConfig::builder()
                .connect_timeout(std::time::Duration::from_secs(5))
                .build(),
        )
}

/// The real SDK client on `endpoint` (the emulator's well-known credentials, through the
/// environment as the daemon reads them), behind the retrying decorator the daemon uses, with
/// short backoffs for tests.
pub async fn glacier_client(
    endpoint: &str,
) -> std::sync::Arc<dyn glacierfs::glacier::GlacierClient> {
    use glacierfs::glacier::aws::{AwsGlacier, AwsOptions};
    use glacierfs::glacier::retry::{RetryPolicy, Retrying};
    static ENV: std::sync::Once = std::sync::Once::new();
    // Before any SDK client reads the environment.
    ENV.call_once(|| {
        std::env::set_var("AWS_ACCESS_KEY_ID", emulator::ACCESS_KEY_ID);
        std::env::set_var("AWS_SECRET_ACCESS_KEY", emulator::SECRET_ACCESS_KEY);
        std::env::set_var("AWS_EC2_METADATA_DISABLED", "true");
    });
    let aws = AwsGlacier::connect(&AwsOptions {
        region: Some("us-east-1".into()),
        profile: None,
        endpoint_url: Some(endpoint.to_owned()),
        account_id: "-".into(),
        connect_timeout: Some(std::time::Duration::from_secs(5)),
    })
    .await
    .expect("connect to the emulator");
    let policy = RetryPolicy {
        max_attempts: 8,
        base: std::time::Duration::from_millis(10),
        cap: std::time::Duration::from_millis(200),
    };
    std::sync::Arc::new(Retrying::new(std::sync::Arc::new(aws), policy))
}

/// Waits until `vault` holds exactly one archive per file of `expected` (decoded mt2 path and
/// exact bytes) and no multipart upload, listing `dir` (the vault in the mount) meanwhile so
/// the daemon takes in new inventories; fails with the vault's contents and `log` otherwise.
pub fn assert_vault_holds_exactly(
    emu: &emulator::Emulator,
    vault: &str,
    dir: &Path,
    expected: &BTreeMap<String, Vec<u8>>,
    trial: &str,
    log: impl Fn() -> String,
) {
    use std::time::Duration;
    let settled = mount::wait_until(Duration::from_secs(120), || {
        emu.complete_all_jobs();
        let _ = std::fs::read_dir(dir).map(|d| d.count());
        let archives = emu.archives(vault);
        archives.len() == expected.len()
            && expected.iter().all(|(rel, data)| {
                archives.iter().any(|a| {
                    glacierfs::codec::names::decode(&a.description).path == *rel
                        && emu.archive_data(vault, &a.id).as_deref() == Some(data.as_slice())
                })
            })
    });
    assert!(
        settled,
        "{trial}: the vault does not hold exactly one archive per file: {:#?}\nlog:\n{}",
        emu.archives(vault)
            .iter()
            .map(|a| (glacierfs::codec::names::decode(&a.description).path, a.size))
            .collect::<Vec<_>>(),
        log()
    );
    assert!(
        mount::wait_until(Duration::from_secs(60), || emu
            .multipart_uploads(vault)
            .is_empty()),
        "{trial}: multipart uploads left behind"
    );
}
