//! What the emulator's own tests share: an SDK client set up for an emulator endpoint. It lives
//! here, not in the library, so that the emulator itself does not depend on the SDK.
#![allow(dead_code)]

use std::time::Duration;

/// A ready SDK client for `endpoint`: the emulator's well-known credentials, us-east-1, retries
/// off (tests see raw behaviour), plain HTTP through the rustls-ring client (the crate has no
/// default client).
pub fn sdk_client(endpoint: &str) -> aws_sdk_glacier::Client {
    aws_sdk_glacier::Client::from_conf(sdk_config(endpoint).build())
}

/// Like [`sdk_client`], with an attempt timeout, so a stalled connection shows as a timeout.
pub fn sdk_client_with_timeout(endpoint: &str, timeout: Duration) -> aws_sdk_glacier::Client {
    use aws_sdk_glacier::config::timeout::TimeoutConfig;
    let timeouts = TimeoutConfig::builder()
        .connect_timeout(Duration::from_secs(5))
        .operation_attempt_timeout(timeout)
        .build();
    aws_sdk_glacier::Client::from_conf(sdk_config(endpoint).timeout_config(timeouts).build())
}

/// The configuration behind [`sdk_client`], for tests that need to change something (retries,
/// timeouts) before building a client.
pub fn sdk_config(endpoint: &str) -> aws_sdk_glacier::config::Builder {
    use aws_sdk_glacier::config::retry::RetryConfig;
    use aws_sdk_glacier::config::timeout::TimeoutConfig;
    use aws_sdk_glacier::config::{BehaviorVersion, Credentials, Region};
    use aws_smithy_http_client::tls::{rustls_provider::CryptoMode, Provider};

    let http = aws_smithy_http_client::Builder::new()
        .tls_provider(Provider::Rustls(CryptoMode::Ring))
        .build_https();
    let credentials = Credentials::new(
        glacier_emulator::ACCESS_KEY_ID,
        glacier_emulator::SECRET_ACCESS_KEY,
        None,
        None,
        "emulator",
    );
    aws_sdk_glacier::Config::builder()
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new("us-east-1"))
        .credentials_provider(credentials)
        .endpoint_url(endpoint)
        .http_client(http)
        .retry_config(RetryConfig::disabled())
        .timeout_config(
            TimeoutConfig::builder()
                .connect_timeout(Duration::from_secs(5))
                .build(),
        )
}

/// A ready S3 client for `endpoint`, set up as glacierfs's export sets up its own: path-style,
/// checksums only when an operation requires them (the export sends its own), the emulator's
/// well-known credentials, retries off.
pub fn s3_client(endpoint: &str) -> aws_sdk_s3::Client {
    aws_sdk_s3::Client::from_conf(s3_config(endpoint).build())
}

/// The configuration behind [`s3_client`], for tests that change something (the secret, say).
pub fn s3_config(endpoint: &str) -> aws_sdk_s3::config::Builder {
    use aws_sdk_s3::config::retry::RetryConfig;
    use aws_sdk_s3::config::timeout::TimeoutConfig;
    use aws_sdk_s3::config::{
        BehaviorVersion, Credentials, Region, RequestChecksumCalculation,
        ResponseChecksumValidation,
    };
    use aws_smithy_http_client::tls::{rustls_provider::CryptoMode, Provider};

    let http = aws_smithy_http_client::Builder::new()
        .tls_provider(Provider::Rustls(CryptoMode::Ring))
        .build_https();
    let credentials = Credentials::new(
        glacier_emulator::ACCESS_KEY_ID,
        glacier_emulator::SECRET_ACCESS_KEY,
        None,
        None,
        "emulator",
    );
    aws_sdk_s3::Config::builder()
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new("us-east-1"))
        .credentials_provider(credentials)
        .endpoint_url(endpoint)
        .force_path_style(true)
        .http_client(http)
        .retry_config(RetryConfig::disabled())
        .request_checksum_calculation(RequestChecksumCalculation::WhenRequired)
        .response_checksum_validation(ResponseChecksumValidation::WhenRequired)
        .timeout_config(
            TimeoutConfig::builder()
                .connect_timeout(Duration::from_secs(5))
                .build(),
        )
}
