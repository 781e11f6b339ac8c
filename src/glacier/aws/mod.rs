//! The real [`GlacierClient`]: aws-sdk-glacier over an HTTPS client built with rustls and ring.
//!
//! The SDK's own retries are turned off. Retrying lives in [`super::retry`], where the
//! classification in [`super::ErrorKind`] applies (the SDK would, for one, keep retrying
//! LimitExceededException as if it were throttling).
//!
//! Upload bodies are hashed once, and not by the SDK. Its Glacier customisation hashes
//! every body twice over (each MiB for the tree hash, the whole for the linear SHA-256 that
//! SigV4 signs), even when the tree-hash header is given; that was most of an upload's CPU.
//! Here both hashes come from one pass ([`treehash::body_hashes`]) on the blocking pool (or
//! from the caller, who computed them the same way, for `upload_part_hashed`), and an
//! interceptor, `PrecomputedHashes`, hands them to the SDK so that it has nothing left to
//! hash. The request is the one the SDK would have sent: the same headers, signed the same way.

mod calls;
mod convert;
mod hashing;

use std::time::Duration;

use aws_config::BehaviorVersion;
use aws_sdk_glacier::config::retry::RetryConfig;
use aws_sdk_glacier::config::timeout::TimeoutConfig;
use aws_sdk_glacier::config::Region;
use aws_sdk_glacier::Client;
use aws_smithy_http_client::tls;

use super::{ErrorKind, GlacierError};

/// Where and as whom to connect.
#[derive(Debug, Clone, Default)]
pub struct AwsOptions {
    pub region: Option<String>,
    pub profile: Option<String>,
    pub endpoint_url: Option<String>,
    pub account_id: String,
    /// Connect timeout; also bounds how long an unreachable endpoint delays a mount.
    pub connect_timeout: Option<Duration>,
}

/// aws-sdk-glacier behind [`GlacierClient`].
#[derive(Debug, Clone)]
pub struct AwsGlacier {
    client: Client,
    account: String,
    region: String,
}

impl AwsGlacier {
    /// Loads credentials and region through the normal AWS chain (environment, profiles, SSO,
    /// instance roles). Fails when no region can be found: every call would fail without one.
    pub async fn connect(opts: &AwsOptions) -> Result<AwsGlacier, GlacierError> {
        let http = aws_smithy_http_client::Builder::new()
            .tls_provider(tls::Provider::Rustls(
                tls::rustls_provider::CryptoMode::Ring,
            ))
            .build_https();
        let mut loader = aws_config::defaults(BehaviorVersion::latest()).http_client(http);
        if let Some(region) = &opts.region {
            loader = loader.region(Region::new(region.clone()));
        }
        if let Some(profile) = &opts.profile {
            loader = loader.profile_name(profile);
        }
        if let Some(url) = &opts.endpoint_url {
            loader = loader.endpoint_url(url);
        }
        let shared = loader.load().await;
        let region = shared.region().map(|r| r.to_string()).ok_or_else(|| {
            GlacierError::new(
                "connect",
                ErrorKind::Other,
                "no AWS region configured: pass --region or set AWS_REGION",
            )
        })?;
        let timeouts = TimeoutConfig::builder()
            .connect_timeout(opts.connect_timeout.unwrap_or(Duration::from_secs(10)))
            .read_timeout(Duration::from_secs(120))
            .build();
        let conf = aws_sdk_glacier::config::Builder::from(&shared)
            .retry_config(RetryConfig::disabled())
            .timeout_config(timeouts)
            .build();
        Ok(AwsGlacier {
            client: Client::from_conf(conf),
            account: opts.account_id.clone(),
            region,
        })
    }

    /// A client on an SDK configuration made elsewhere, taken as it is (retries included):
    /// for callers that need something [`AwsGlacier::connect`] does not offer, such as an
    /// interceptor of their own.
    pub fn from_conf(conf: aws_sdk_glacier::Config, account_id: &str) -> AwsGlacier {
        let region = conf.region().map(|r| r.to_string()).unwrap_or_default();
        AwsGlacier {
            client: Client::from_conf(conf),
            account: account_id.to_owned(),
            region,
        }
    }

    pub fn region(&self) -> &str {
        &self.region
    }
}
