//! S3 for the export tests: an SDK client for a bucket on an S3 endpoint (moto's, or the
//! emulator's), and what a test reads back from it.

use std::collections::BTreeMap;

use aws_sdk_s3::config::retry::RetryConfig;
use aws_sdk_s3::config::{BehaviorVersion, Region};

use super::{emulator_credentials, sdk_http_client};

/// An object as S3 holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Object {
    pub size: u64,
    pub storage_class: String,
    pub metadata: BTreeMap<String, String>,
}

/// A bucket, through the SDK, with its own runtime.
pub struct Bucket {
    pub client: aws_sdk_s3::Client,
    pub name: String,
    rt: tokio::runtime::Runtime,
}

impl Bucket {
    /// Creates the bucket `name` on `endpoint`.
    pub fn create(endpoint: &str, name: &str) -> Bucket {
        let conf = aws_sdk_s3::Config::builder()
            .behavior_version(BehaviorVersion::latest())
            .region(Region::new("us-east-1"))
            .credentials_provider(emulator_credentials())
            .endpoint_url(endpoint)
            .force_path_style(true)
            .http_client(sdk_http_client())
            .retry_config(RetryConfig::disabled())
            .build();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let client = aws_sdk_s3::Client::from_conf(conf);
        rt.block_on(client.create_bucket().bucket(name).send())
            .expect("CreateBucket");
        Bucket {
            client,
            name: name.to_owned(),
            rt,
        }
    }

    /// Every object: key → what it is stored as.
    pub fn objects(&self) -> BTreeMap<String, Object> {
        let mut out = BTreeMap::new();
        let mut token: Option<String> = None;
        loop {
            let page = self
                .rt
                .block_on(
                    self.client
                        .list_objects_v2()
                        .bucket(&self.name)
                        .set_continuation_token(token.take())
                        .send(),
                )
                .expect("ListObjectsV2");
            for o in page.contents() {
                let key = o.key().unwrap().to_owned();
                let head = self
                    .rt
                    .block_on(
                        self.client
                            .head_object()
                            .bucket(&self.name)
                            .key(&key)
                            .send(),
                    )
                    .expect("HeadObject");
                let class = o
                    .storage_class()
                    .map_or("STANDARD".to_owned(), |c| c.as_str().to_owned());
                out.insert(
                    key,
                    Object {
                        size: o.size().unwrap_or(0) as u64,
                        storage_class: class,
                        metadata: head
                            .metadata()
                            .map(|m| {
                                m.iter()
                                    .map(|(k, v)| (k.to_lowercase(), v.clone()))
                                    .collect()
                            })
                            .unwrap_or_default(),
                    },
                );
            }
            match page.next_continuation_token() {
                Some(t) if page.is_truncated() == Some(true) => token = Some(t.to_owned()),
                _ => break,
            }
        }
        out
    }

    /// An object's bytes (its class must allow a GET).
    pub fn get(&self, key: &str) -> Vec<u8> {
        self.rt.block_on(async {
            let out = self
                .client
                .get_object()
                .bucket(&self.name)
                .key(key)
                .send()
                .await
                .unwrap_or_else(|e| panic!("GetObject {key}: {e:?}"));
            out.body.collect().await.unwrap().into_bytes().to_vec()
        })
    }

    /// Multipart uploads left open: (key, upload id).
    pub fn open_uploads(&self) -> Vec<(String, String)> {
        let out = self
            .rt
            .block_on(
                self.client
                    .list_multipart_uploads()
                    .bucket(&self.name)
                    .send(),
            )
            .expect("ListMultipartUploads");
        out.uploads()
            .iter()
            .map(|u| {
                (
                    u.key().unwrap_or_default().to_owned(),
                    u.upload_id().unwrap_or_default().to_owned(),
                )
            })
            .collect()
    }
}
