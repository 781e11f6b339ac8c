//! Each vault-API call of [`GlacierClient`], made through the SDK with its failure mapped by
//! [`super::convert::sdk_err`].

use std::collections::BTreeMap;

use aws_sdk_glacier::primitives::ByteStream;
use aws_sdk_glacier::types::{
    GlacierJobDescription, VaultAccessPolicy, VaultLockPolicy, VaultNotificationConfig,
};
use bytes::Bytes;

use crate::codec::treehash::{to_hex, BodyHashes, Digest};
use crate::glacier::{
    parse_range, ArchiveCreated, BoxFut, CapacityUnit, ErrorKind, GlacierClient, JobDesc,
    JobFilter, JobOutput, JobRequest, LockDesc, Notifications, PartDesc, PartsListing,
    RetrievalPolicy, UploadDesc, VaultDesc,
};

use super::convert::*;
use super::hashing::*;
use super::AwsGlacier;

impl GlacierClient for AwsGlacier {
    fn list_vaults(&self) -> BoxFut<'_, Vec<VaultDesc>> {
        Box::pin(async move {
            let mut out = Vec::new();
            let mut marker = None;
            loop {
                let page = self
                    .client
                    .list_vaults()
                    .account_id(&self.account)
                    .set_marker(marker.take())
                    .limit(1000)
                    .send()
                    .await
                    .map_err(|e| sdk_err("ListVaults", e))?;
                out.extend(page.vault_list().iter().map(|v| VaultDesc {
                    name: v.vault_name().unwrap_or_default().to_owned(),
                    arn: v.vault_arn().map(str::to_owned),
                    creation_date: v.creation_date().map(str::to_owned),
                    last_inventory_date: v.last_inventory_date().map(str::to_owned),
                    number_of_archives: non_negative(v.number_of_archives()),
                    size_in_bytes: non_negative(v.size_in_bytes()),
                }));
                marker = next_marker(page.marker());
                if marker.is_none() {
                    return Ok(out);
                }
            }
        })
    }

    fn describe_vault<'a>(&'a self, vault: &'a str) -> BoxFut<'a, VaultDesc> {
        Box::pin(async move {
            let v = self
                .client
                .describe_vault()
                .account_id(&self.account)
                .vault_name(vault)
                .send()
                .await
                .map_err(|e| sdk_err("DescribeVault", e))?;
            Ok(VaultDesc {
                name: v.vault_name().unwrap_or(vault).to_owned(),
                arn: v.vault_arn().map(str::to_owned),
                creation_date: v.creation_date().map(str::to_owned),
                last_inventory_date: v.last_inventory_date().map(str::to_owned),
                number_of_archives: non_negative(v.number_of_archives()),
                size_in_bytes: non_negative(v.size_in_bytes()),
            })
        })
    }

    fn create_vault<'a>(&'a self, vault: &'a str) -> BoxFut<'a, ()> {
        Box::pin(async move {
            self.client
                .create_vault()
                .account_id(&self.account)
                .vault_name(vault)
                .send()
                .await
                .map_err(|e| sdk_err("CreateVault", e))?;
            Ok(())
        })
    }

    fn delete_vault<'a>(&'a self, vault: &'a str) -> BoxFut<'a, ()> {
        Box::pin(async move {
            self.client
                .delete_vault()
                .account_id(&self.account)
                .vault_name(vault)
                .send()
                .await
                .map_err(|e| sdk_err("DeleteVault", e))?;
            Ok(())
        })
    }

    fn upload_archive<'a>(
        &'a self,
        vault: &'a str,
        description: &'a str,
        body: Bytes,
        tree_hash: Option<Digest>,
    ) -> BoxFut<'a, ArchiveCreated> {
        Box::pin(async move {
            let hashes = upload_hashes("UploadArchive", &body, tree_hash).await?;
            let precomputed = PrecomputedHashes::new(body.len(), &hashes);
            let out = self
                .client
                .upload_archive()
                .account_id(&self.account)
                .vault_name(vault)
                .archive_description(description)
                .checksum(to_hex(&hashes.tree))
                .body(ByteStream::from(body))
                .customize()
                .interceptor(precomputed)
                .send()
                .await
                .map_err(|e| sdk_err("UploadArchive", e))?;
            Ok(ArchiveCreated {
                archive_id: out
                    .archive_id()
                    .ok_or_else(|| missing("UploadArchive", "x-amz-archive-id"))?
                    .to_owned(),
                tree_hash: out.checksum().map(str::to_owned),
            })
        })
    }

    fn delete_archive<'a>(&'a self, vault: &'a str, archive_id: &'a str) -> BoxFut<'a, ()> {
        Box::pin(async move {
            self.client
                .delete_archive()
                .account_id(&self.account)
                .vault_name(vault)
                .archive_id(archive_id)
                .send()
                .await
                .map_err(|e| sdk_err("DeleteArchive", e))?;
            Ok(())
        })
    }

    fn initiate_multipart<'a>(
        &'a self,
        vault: &'a str,
        description: &'a str,
        part_size: u64,
    ) -> BoxFut<'a, String> {
        Box::pin(async move {
            let out = self
                .client
                .initiate_multipart_upload()
                .account_id(&self.account)
                .vault_name(vault)
                .archive_description(description)
                .part_size(part_size.to_string())
                .send()
                .await
                .map_err(|e| sdk_err("InitiateMultipartUpload", e))?;
            out.upload_id()
                .map(str::to_owned)
                .ok_or_else(|| missing("InitiateMultipartUpload", "x-amz-multipart-upload-id"))
        })
    }

    fn upload_part<'a>(
        &'a self,
        vault: &'a str,
        upload_id: &'a str,
        start: u64,
        body: Bytes,
        tree_hash: Option<Digest>,
    ) -> BoxFut<'a, Option<String>> {
        Box::pin(async move {
            let hashes = upload_hashes("UploadMultipartPart", &body, tree_hash).await?;
            self.upload_part_hashed(vault, upload_id, start, body, hashes)
                .await
        })
    }

    fn upload_part_hashed<'a>(
        &'a self,
        vault: &'a str,
        upload_id: &'a str,
        start: u64,
        body: Bytes,
        hashes: BodyHashes,
    ) -> BoxFut<'a, Option<String>> {
        Box::pin(async move {
            let end = start + body.len() as u64 - 1;
            let precomputed = PrecomputedHashes::new(body.len(), &hashes);
            let out = self
                .client
                .upload_multipart_part()
                .account_id(&self.account)
                .vault_name(vault)
                .upload_id(upload_id)
                .range(format!("bytes {start}-{end}/*"))
                .checksum(to_hex(&hashes.tree))
                .body(ByteStream::from(body))
                .customize()
                .interceptor(precomputed)
                .send()
                .await
                .map_err(|e| sdk_err("UploadMultipartPart", e))?;
            Ok(out.checksum().map(str::to_owned))
        })
    }

    fn complete_multipart<'a>(
        &'a self,
        vault: &'a str,
        upload_id: &'a str,
        size: u64,
        tree_hash: Digest,
    ) -> BoxFut<'a, ArchiveCreated> {
        Box::pin(async move {
            let out = self
                .client
                .complete_multipart_upload()
                .account_id(&self.account)
                .vault_name(vault)
                .upload_id(upload_id)
                .archive_size(size.to_string())
                .checksum(to_hex(&tree_hash))
                .send()
                .await
                .map_err(|e| sdk_err("CompleteMultipartUpload", e))?;
            Ok(ArchiveCreated {
                archive_id: out
                    .archive_id()
                    .ok_or_else(|| missing("CompleteMultipartUpload", "x-amz-archive-id"))?
                    .to_owned(),
                tree_hash: out.checksum().map(str::to_owned),
            })
        })
    }

    fn abort_multipart<'a>(&'a self, vault: &'a str, upload_id: &'a str) -> BoxFut<'a, ()> {
        Box::pin(async move {
            self.client
                .abort_multipart_upload()
                .account_id(&self.account)
                .vault_name(vault)
                .upload_id(upload_id)
                .send()
                .await
                .map_err(|e| sdk_err("AbortMultipartUpload", e))?;
            Ok(())
        })
    }

    fn list_parts<'a>(&'a self, vault: &'a str, upload_id: &'a str) -> BoxFut<'a, PartsListing> {
        Box::pin(async move {
            let mut listing = PartsListing {
                part_size: 0,
                description: None,
                parts: Vec::new(),
            };
            let mut marker = None;
            loop {
                let page = self
                    .client
                    .list_parts()
                    .account_id(&self.account)
                    .vault_name(vault)
                    .upload_id(upload_id)
                    .set_marker(marker.take())
                    .send()
                    .await
                    .map_err(|e| sdk_err("ListParts", e))?;
                listing.part_size = non_negative(page.part_size_in_bytes());
                listing.description = page.archive_description().map(str::to_owned);
                for p in page.parts() {
                    let (start, end_inclusive) = p
                        .range_in_bytes()
                        .and_then(parse_range)
                        .ok_or_else(|| missing("ListParts", "a valid RangeInBytes"))?;
                    listing.parts.push(PartDesc {
                        start,
                        end_inclusive,
                        tree_hash: p.sha256_tree_hash().unwrap_or_default().to_owned(),
                    });
                }
                marker = next_marker(page.marker());
                if marker.is_none() {
                    return Ok(listing);
                }
            }
        })
    }

    fn list_multipart_uploads<'a>(&'a self, vault: &'a str) -> BoxFut<'a, Vec<UploadDesc>> {
        Box::pin(async move {
            let mut out = Vec::new();
            let mut marker = None;
            loop {
                let page = self
                    .client
                    .list_multipart_uploads()
                    .account_id(&self.account)
                    .vault_name(vault)
                    .set_marker(marker.take())
                    .send()
                    .await
                    .map_err(|e| sdk_err("ListMultipartUploads", e))?;
                out.extend(page.uploads_list().iter().map(|u| UploadDesc {
                    upload_id: u.multipart_upload_id().unwrap_or_default().to_owned(),
                    description: u.archive_description().map(str::to_owned),
                    part_size: non_negative(u.part_size_in_bytes()),
                    creation_date: u.creation_date().map(str::to_owned),
                }));
                marker = next_marker(page.marker());
                if marker.is_none() {
                    return Ok(out);
                }
            }
        })
    }

    fn initiate_job<'a>(&'a self, vault: &'a str, request: &'a JobRequest) -> BoxFut<'a, String> {
        Box::pin(async move {
            let out = self
                .client
                .initiate_job()
                .account_id(&self.account)
                .vault_name(vault)
                .job_parameters(job_parameters(request))
                .send()
                .await
                .map_err(|e| sdk_err("InitiateJob", e))?;
            out.job_id()
                .map(str::to_owned)
                .ok_or_else(|| missing("InitiateJob", "x-amz-job-id"))
        })
    }

    fn describe_job<'a>(&'a self, vault: &'a str, job_id: &'a str) -> BoxFut<'a, JobDesc> {
        Box::pin(async move {
            let out = self
                .client
                .describe_job()
                .account_id(&self.account)
                .vault_name(vault)
                .job_id(job_id)
                .send()
                .await
                .map_err(|e| sdk_err("DescribeJob", e))?;
            // DescribeJob's output mirrors GlacierJobDescription field for field.
            let j = GlacierJobDescription::builder()
                .set_job_id(out.job_id().map(str::to_owned))
                .set_job_description(out.job_description().map(str::to_owned))
                .set_action(out.action().cloned())
                .set_archive_id(out.archive_id().map(str::to_owned))
                .set_status_code(out.status_code().cloned())
                .set_status_message(out.status_message().map(str::to_owned))
                .set_archive_size_in_bytes(out.archive_size_in_bytes())
                .set_inventory_size_in_bytes(out.inventory_size_in_bytes())
                .set_creation_date(out.creation_date().map(str::to_owned))
                .set_completion_date(out.completion_date().map(str::to_owned))
                .set_sha256_tree_hash(out.sha256_tree_hash().map(str::to_owned))
                .set_archive_sha256_tree_hash(out.archive_sha256_tree_hash().map(str::to_owned))
                .set_retrieval_byte_range(out.retrieval_byte_range().map(str::to_owned))
                .set_tier(out.tier().map(str::to_owned))
                .set_inventory_retrieval_parameters(out.inventory_retrieval_parameters().cloned())
                .build();
            Ok(job_desc(&j))
        })
    }

    fn list_jobs<'a>(&'a self, vault: &'a str, filter: JobFilter) -> BoxFut<'a, Vec<JobDesc>> {
        Box::pin(async move {
            let mut out = Vec::new();
            let mut marker = None;
            loop {
                let page = self
                    .client
                    .list_jobs()
                    .account_id(&self.account)
                    .vault_name(vault)
                    .set_marker(marker.take())
                    .set_completed(filter.completed.map(|c| c.to_string()))
                    .set_statuscode(filter.status.map(|s| s.as_str().to_owned()))
                    .send()
                    .await
                    .map_err(|e| sdk_err("ListJobs", e))?;
                out.extend(page.job_list().iter().map(job_desc));
                marker = next_marker(page.marker());
                if marker.is_none() {
                    return Ok(out);
                }
            }
        })
    }

    fn get_job_output<'a>(
        &'a self,
        vault: &'a str,
        job_id: &'a str,
        range: Option<(u64, u64)>,
    ) -> BoxFut<'a, JobOutput> {
        Box::pin(async move {
            let out = self
                .client
                .get_job_output()
                .account_id(&self.account)
                .vault_name(vault)
                .job_id(job_id)
                .set_range(range.map(|(s, e)| format!("bytes={s}-{e}")))
                .send()
                .await
                .map_err(|e| sdk_err("GetJobOutput", e))?;
            let content_range = out.content_range().map(str::to_owned);
            Ok(JobOutput {
                status: u16::try_from(out.status()).unwrap_or(200),
                tree_hash: out.checksum().map(str::to_owned),
                content_length: content_length(content_range.as_deref()),
                content_range,
                body: Box::pin(out.body.into_async_read()),
            })
        })
    }

    fn get_vault_lock<'a>(&'a self, vault: &'a str) -> BoxFut<'a, Option<LockDesc>> {
        Box::pin(async move {
            let result = self
                .client
                .get_vault_lock()
                .account_id(&self.account)
                .vault_name(vault)
                .send()
                .await;
            match result {
                Ok(out) => Ok(Some(LockDesc {
                    state: out.state().unwrap_or("Unknown").to_owned(),
                    policy: out.policy().map(str::to_owned),
                    creation_date: out.creation_date().map(str::to_owned),
                    expiration_date: out.expiration_date().map(str::to_owned),
                })),
                Err(e) => {
                    let err = sdk_err("GetVaultLock", e);
                    if err.kind == ErrorKind::NotFound && err.code.is_some() {
                        Ok(None)
                    } else {
                        Err(err)
                    }
                }
            }
        })
    }

    fn initiate_vault_lock<'a>(&'a self, vault: &'a str, policy: &'a str) -> BoxFut<'a, String> {
        Box::pin(async move {
            let out = self
                .client
                .initiate_vault_lock()
                .account_id(&self.account)
                .vault_name(vault)
                .policy(VaultLockPolicy::builder().policy(policy).build())
                .send()
                .await
                .map_err(|e| sdk_err("InitiateVaultLock", e))?;
            out.lock_id()
                .map(str::to_owned)
                .ok_or_else(|| missing("InitiateVaultLock", "x-amz-lock-id"))
        })
    }

    fn complete_vault_lock<'a>(&'a self, vault: &'a str, lock_id: &'a str) -> BoxFut<'a, ()> {
        Box::pin(async move {
            self.client
                .complete_vault_lock()
                .account_id(&self.account)
                .vault_name(vault)
                .lock_id(lock_id)
                .send()
                .await
                .map_err(|e| sdk_err("CompleteVaultLock", e))?;
            Ok(())
        })
    }

    fn abort_vault_lock<'a>(&'a self, vault: &'a str) -> BoxFut<'a, ()> {
        Box::pin(async move {
            self.client
                .abort_vault_lock()
                .account_id(&self.account)
                .vault_name(vault)
                .send()
                .await
                .map_err(|e| sdk_err("AbortVaultLock", e))?;
            Ok(())
        })
    }

    fn list_tags<'a>(&'a self, vault: &'a str) -> BoxFut<'a, BTreeMap<String, String>> {
        Box::pin(async move {
            let out = self
                .client
                .list_tags_for_vault()
                .account_id(&self.account)
                .vault_name(vault)
                .send()
                .await
                .map_err(|e| sub_resource_err("ListTagsForVault", e))?;
            Ok(out
                .tags()
                .map(|t| t.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
                .unwrap_or_default())
        })
    }

    fn add_tags<'a>(
        &'a self,
        vault: &'a str,
        tags: &'a BTreeMap<String, String>,
    ) -> BoxFut<'a, ()> {
        Box::pin(async move {
            self.client
                .add_tags_to_vault()
                .account_id(&self.account)
                .vault_name(vault)
                .set_tags(Some(tags.clone().into_iter().collect()))
                .send()
                .await
                .map_err(|e| sub_resource_err("AddTagsToVault", e))?;
            Ok(())
        })
    }

    fn remove_tags<'a>(&'a self, vault: &'a str, keys: &'a [String]) -> BoxFut<'a, ()> {
        Box::pin(async move {
            self.client
                .remove_tags_from_vault()
                .account_id(&self.account)
                .vault_name(vault)
                .set_tag_keys(Some(keys.to_vec()))
                .send()
                .await
                .map_err(|e| sub_resource_err("RemoveTagsFromVault", e))?;
            Ok(())
        })
    }

    fn get_access_policy<'a>(&'a self, vault: &'a str) -> BoxFut<'a, Option<String>> {
        Box::pin(async move {
            let result = self
                .client
                .get_vault_access_policy()
                .account_id(&self.account)
                .vault_name(vault)
                .send()
                .await;
            match result {
                Ok(out) => Ok(out.policy().and_then(|p| p.policy()).map(str::to_owned)),
                Err(e) => none_if_unset(sub_resource_err("GetVaultAccessPolicy", e)),
            }
        })
    }

    fn set_access_policy<'a>(&'a self, vault: &'a str, policy: &'a str) -> BoxFut<'a, ()> {
        Box::pin(async move {
            self.client
                .set_vault_access_policy()
                .account_id(&self.account)
                .vault_name(vault)
                .policy(VaultAccessPolicy::builder().policy(policy).build())
                .send()
                .await
                .map_err(|e| sub_resource_err("SetVaultAccessPolicy", e))?;
            Ok(())
        })
    }

    fn delete_access_policy<'a>(&'a self, vault: &'a str) -> BoxFut<'a, ()> {
        Box::pin(async move {
            self.client
                .delete_vault_access_policy()
                .account_id(&self.account)
                .vault_name(vault)
                .send()
                .await
                .map_err(|e| sub_resource_err("DeleteVaultAccessPolicy", e))?;
            Ok(())
        })
    }

    fn get_notifications<'a>(&'a self, vault: &'a str) -> BoxFut<'a, Option<Notifications>> {
        Box::pin(async move {
            let result = self
                .client
                .get_vault_notifications()
                .account_id(&self.account)
                .vault_name(vault)
                .send()
                .await;
            match result {
                Ok(out) => Ok(out.vault_notification_config().map(|c| Notifications {
                    sns_topic: c.sns_topic().unwrap_or_default().to_owned(),
                    events: c.events().to_vec(),
                })),
                Err(e) => none_if_unset(sub_resource_err("GetVaultNotifications", e)),
            }
        })
    }

    fn set_notifications<'a>(
        &'a self,
        vault: &'a str,
        config: &'a Notifications,
    ) -> BoxFut<'a, ()> {
        Box::pin(async move {
            let sdk = VaultNotificationConfig::builder()
                .sns_topic(&config.sns_topic)
                .set_events(Some(config.events.clone()))
                .build();
            self.client
                .set_vault_notifications()
                .account_id(&self.account)
                .vault_name(vault)
                .vault_notification_config(sdk)
                .send()
                .await
                .map_err(|e| sub_resource_err("SetVaultNotifications", e))?;
            Ok(())
        })
    }

    fn delete_notifications<'a>(&'a self, vault: &'a str) -> BoxFut<'a, ()> {
        Box::pin(async move {
            self.client
                .delete_vault_notifications()
                .account_id(&self.account)
                .vault_name(vault)
                .send()
                .await
                .map_err(|e| sub_resource_err("DeleteVaultNotifications", e))?;
            Ok(())
        })
    }

    fn get_retrieval_policy(&self) -> BoxFut<'_, RetrievalPolicy> {
        Box::pin(async move {
            let out = self
                .client
                .get_data_retrieval_policy()
                .account_id(&self.account)
                .send()
                .await
                .map_err(|e| sub_resource_err("GetDataRetrievalPolicy", e))?;
            retrieval_policy(out.policy())
        })
    }

    fn list_capacity(&self) -> BoxFut<'_, Vec<CapacityUnit>> {
        Box::pin(async move {
            let out = self
                .client
                .list_provisioned_capacity()
                .account_id(&self.account)
                .send()
                .await
                .map_err(|e| sub_resource_err("ListProvisionedCapacity", e))?;
            Ok(out
                .provisioned_capacity_list()
                .iter()
                .map(|c| CapacityUnit {
                    capacity_id: c.capacity_id().unwrap_or_default().to_owned(),
                    start_date: c.start_date().map(str::to_owned),
                    expiration_date: c.expiration_date().map(str::to_owned),
                })
                .collect())
        })
    }
}
