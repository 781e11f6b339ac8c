//! Retries with jittered exponential backoff, as a decorator around any [`GlacierClient`].
//!
//! Only transient failures (throttling, 5xx, timeouts, resets) are retried; everything else is
//! returned at once so the caller can recover. Full jitter keeps many
//! concurrent uploads from retrying in lockstep after a burst of throttling.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use rand::Rng;

use super::{
    ArchiveCreated, BoxFut, CapacityUnit, GlacierClient, GlacierError, JobDesc, JobFilter,
    JobOutput, JobRequest, LockDesc, Notifications, PartsListing, RetrievalPolicy, UploadDesc,
    VaultDesc,
};
use crate::codec::treehash::{BodyHashes, Digest};

/// How hard to try.
#[derive(Debug, Clone, Copy)]
pub struct RetryPolicy {
    pub max_attempts: u32,
    pub base: Duration,
    pub cap: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_attempts: 8,
            base: Duration::from_millis(100),
            cap: Duration::from_secs(20),
        }
    }
}

impl RetryPolicy {
    /// Full jitter: a uniform delay in [0, min(cap, base·2^attempt)].
    pub fn delay(&self, attempt: u32) -> Duration {
        let exp = self.base.saturating_mul(1u32 << attempt.min(16));
        let ceiling = exp.min(self.cap);
        let millis = ceiling.as_millis().max(1) as u64;
        Duration::from_millis(rand::rng().random_range(0..=millis))
    }
}

/// A [`GlacierClient`] that retries the transient failures of the one it wraps.
pub struct Retrying {
    inner: Arc<dyn GlacierClient>,
    policy: RetryPolicy,
}

impl Retrying {
    pub fn new(inner: Arc<dyn GlacierClient>, policy: RetryPolicy) -> Self {
        Retrying { inner, policy }
    }

    async fn run<'a, T, F, Fut>(&'a self, call: F) -> Result<T, GlacierError>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, GlacierError>> + 'a,
    {
        self.run_if(call, GlacierError::is_transient).await
    }

    /// Retries the failures `retry` picks. Calls that create something (a job, a multipart
    /// upload) retry only refusals that certainly did nothing (throttling): a 5xx or a reset
    /// may come after the service acted, and a blind retry would pay for a second job. Their
    /// callers reconcile with a listing instead.
    async fn run_if<'a, T, F, Fut>(
        &'a self,
        mut call: F,
        retry: fn(&GlacierError) -> bool,
    ) -> Result<T, GlacierError>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, GlacierError>> + 'a,
    {
        let mut attempt = 0;
        loop {
            match call().await {
                Err(e) if retry(&e) && attempt + 1 < self.policy.max_attempts => {
                    let delay = self.policy.delay(attempt);
                    log::debug!("{e}; retry {} in {delay:?}", attempt + 1);
                    tokio::time::sleep(delay).await;
                    attempt += 1;
                }
                Err(e) => {
                    if e.is_transient() {
                        log::warn!("{e}; giving up after {} attempts", attempt + 1);
                    }
                    return Err(e);
                }
                Ok(v) => return Ok(v),
            }
        }
    }
}

impl GlacierClient for Retrying {
    fn list_vaults(&self) -> BoxFut<'_, Vec<VaultDesc>> {
        Box::pin(self.run(|| self.inner.list_vaults()))
    }
    fn describe_vault<'a>(&'a self, vault: &'a str) -> BoxFut<'a, VaultDesc> {
        Box::pin(self.run(move || self.inner.describe_vault(vault)))
    }
    fn create_vault<'a>(&'a self, vault: &'a str) -> BoxFut<'a, ()> {
        Box::pin(self.run(move || self.inner.create_vault(vault)))
    }
    fn delete_vault<'a>(&'a self, vault: &'a str) -> BoxFut<'a, ()> {
        Box::pin(self.run(move || self.inner.delete_vault(vault)))
    }
    fn upload_archive<'a>(
        &'a self,
        vault: &'a str,
        description: &'a str,
        body: Bytes,
        tree_hash: Option<Digest>,
    ) -> BoxFut<'a, ArchiveCreated> {
        Box::pin(self.run(move || {
            self.inner
                .upload_archive(vault, description, body.clone(), tree_hash)
        }))
    }
    fn delete_archive<'a>(&'a self, vault: &'a str, archive_id: &'a str) -> BoxFut<'a, ()> {
        Box::pin(self.run(move || self.inner.delete_archive(vault, archive_id)))
    }
    fn initiate_multipart<'a>(
        &'a self,
        vault: &'a str,
        description: &'a str,
        part_size: u64,
    ) -> BoxFut<'a, String> {
        Box::pin(self.run_if(
            move || self.inner.initiate_multipart(vault, description, part_size),
            GlacierError::is_refusal,
        ))
    }
    fn upload_part<'a>(
        &'a self,
        vault: &'a str,
        upload_id: &'a str,
        start: u64,
        body: Bytes,
        tree_hash: Option<Digest>,
    ) -> BoxFut<'a, Option<String>> {
        Box::pin(self.run(move || {
            self.inner
                .upload_part(vault, upload_id, start, body.clone(), tree_hash)
        }))
    }
    fn upload_part_hashed<'a>(
        &'a self,
        vault: &'a str,
        upload_id: &'a str,
        start: u64,
        body: Bytes,
        hashes: BodyHashes,
    ) -> BoxFut<'a, Option<String>> {
        Box::pin(self.run(move || {
            self.inner
                .upload_part_hashed(vault, upload_id, start, body.clone(), hashes)
        }))
    }
    fn complete_multipart<'a>(
        &'a self,
        vault: &'a str,
        upload_id: &'a str,
        size: u64,
        tree_hash: Digest,
    ) -> BoxFut<'a, ArchiveCreated> {
        Box::pin(self.run(move || {
            self.inner
                .complete_multipart(vault, upload_id, size, tree_hash)
        }))
    }
    fn abort_multipart<'a>(&'a self, vault: &'a str, upload_id: &'a str) -> BoxFut<'a, ()> {
        Box::pin(self.run(move || self.inner.abort_multipart(vault, upload_id)))
    }
    fn list_parts<'a>(&'a self, vault: &'a str, upload_id: &'a str) -> BoxFut<'a, PartsListing> {
        Box::pin(self.run(move || self.inner.list_parts(vault, upload_id)))
    }
    fn list_multipart_uploads<'a>(&'a self, vault: &'a str) -> BoxFut<'a, Vec<UploadDesc>> {
        Box::pin(self.run(move || self.inner.list_multipart_uploads(vault)))
    }
    fn initiate_job<'a>(&'a self, vault: &'a str, request: &'a JobRequest) -> BoxFut<'a, String> {
        Box::pin(self.run_if(
            move || self.inner.initiate_job(vault, request),
            GlacierError::is_refusal,
        ))
    }
    fn describe_job<'a>(&'a self, vault: &'a str, job_id: &'a str) -> BoxFut<'a, JobDesc> {
        Box::pin(self.run(move || self.inner.describe_job(vault, job_id)))
    }
    fn list_jobs<'a>(&'a self, vault: &'a str, filter: JobFilter) -> BoxFut<'a, Vec<JobDesc>> {
        Box::pin(self.run(move || self.inner.list_jobs(vault, filter)))
    }
    fn get_job_output<'a>(
        &'a self,
        vault: &'a str,
        job_id: &'a str,
        range: Option<(u64, u64)>,
    ) -> BoxFut<'a, JobOutput> {
        // Only the request is retried here; a body cut off mid-stream is the downloader's to
        // resume, since it knows how much it has verified.
        Box::pin(self.run(move || self.inner.get_job_output(vault, job_id, range)))
    }
    fn get_vault_lock<'a>(&'a self, vault: &'a str) -> BoxFut<'a, Option<LockDesc>> {
        Box::pin(self.run(move || self.inner.get_vault_lock(vault)))
    }
    fn initiate_vault_lock<'a>(&'a self, vault: &'a str, policy: &'a str) -> BoxFut<'a, String> {
        Box::pin(self.run(move || self.inner.initiate_vault_lock(vault, policy)))
    }
    fn complete_vault_lock<'a>(&'a self, vault: &'a str, lock_id: &'a str) -> BoxFut<'a, ()> {
        Box::pin(self.run(move || self.inner.complete_vault_lock(vault, lock_id)))
    }
    fn abort_vault_lock<'a>(&'a self, vault: &'a str) -> BoxFut<'a, ()> {
        Box::pin(self.run(move || self.inner.abort_vault_lock(vault)))
    }
    fn list_tags<'a>(&'a self, vault: &'a str) -> BoxFut<'a, BTreeMap<String, String>> {
        Box::pin(self.run(move || self.inner.list_tags(vault)))
    }
    fn add_tags<'a>(
        &'a self,
        vault: &'a str,
        tags: &'a BTreeMap<String, String>,
    ) -> BoxFut<'a, ()> {
        Box::pin(self.run(move || self.inner.add_tags(vault, tags)))
    }
    fn remove_tags<'a>(&'a self, vault: &'a str, keys: &'a [String]) -> BoxFut<'a, ()> {
        Box::pin(self.run(move || self.inner.remove_tags(vault, keys)))
    }
    fn get_access_policy<'a>(&'a self, vault: &'a str) -> BoxFut<'a, Option<String>> {
        Box::pin(self.run(move || self.inner.get_access_policy(vault)))
    }
    fn set_access_policy<'a>(&'a self, vault: &'a str, policy: &'a str) -> BoxFut<'a, ()> {
        Box::pin(self.run(move || self.inner.set_access_policy(vault, policy)))
    }
    fn delete_access_policy<'a>(&'a self, vault: &'a str) -> BoxFut<'a, ()> {
        Box::pin(self.run(move || self.inner.delete_access_policy(vault)))
    }
    fn get_notifications<'a>(&'a self, vault: &'a str) -> BoxFut<'a, Option<Notifications>> {
        Box::pin(self.run(move || self.inner.get_notifications(vault)))
    }
    fn set_notifications<'a>(
        &'a self,
        vault: &'a str,
        config: &'a Notifications,
    ) -> BoxFut<'a, ()> {
        Box::pin(self.run(move || self.inner.set_notifications(vault, config)))
    }
    fn delete_notifications<'a>(&'a self, vault: &'a str) -> BoxFut<'a, ()> {
        Box::pin(self.run(move || self.inner.delete_notifications(vault)))
    }
    fn get_retrieval_policy(&self) -> BoxFut<'_, RetrievalPolicy> {
        Box::pin(self.run(|| self.inner.get_retrieval_policy()))
    }
    fn list_capacity(&self) -> BoxFut<'_, Vec<CapacityUnit>> {
        Box::pin(self.run(|| self.inner.list_capacity()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_are_jittered_and_capped() {
        let p = RetryPolicy {
            max_attempts: 5,
            base: Duration::from_millis(100),
            cap: Duration::from_millis(800),
        };
        for attempt in 0..20 {
            assert!(p.delay(attempt) <= Duration::from_millis(800));
        }
        let spread: std::collections::HashSet<_> = (0..50).map(|_| p.delay(3)).collect();
        assert!(spread.len() > 5, "full jitter should spread delays");
    }
}
