//! The delete worker: archives (and abandoned multipart uploads) queued for deletion go once
//! their delay has passed and their replacement is safe; a failed delete is retried with a
//! growing wait, its message kept for `.jobs`.

use std::sync::Arc;

use super::WriteBack;
use crate::catalog::deletes::{self, DueDelete};
use crate::catalog::{self, CatalogError};
use crate::glacier::ErrorKind;
use crate::locks::lock;

/// What a queued delete removes, in words for the log.
fn what(d: &DueDelete) -> String {
    match (&d.archive_id, &d.path) {
        (Some(_), Some(p)) if !p.is_empty() => format!("the old archive of {p}"),
        (Some(a), _) => format!("archive {}…", a.get(..12).unwrap_or(a)),
        _ => "an abandoned multipart upload".into(),
    }
}

/// How long a delete waits after its `attempts`-th failure: 1 s, doubling, up to 512 s.
fn retry_wait_ns(attempts: i64) -> i64 {
    (1i64 << attempts.clamp(0, 9)) * 1_000_000_000
}

impl WriteBack {
    /// Starts the deletes whose time has come, each once. A delete that ended while the queue
    /// was being read is skipped: the read may predate its outcome (done, or put off by its
    /// backoff), and starting it again would send a second DeleteArchive or skip the backoff.
    /// (Only one caller runs this at a time: the write-back loop.)
    pub(super) async fn run_deletes(self: &Arc<Self>) -> Result<(), CatalogError> {
        let now = catalog::now_ns();
        // Cleared before the read: whatever ends from here on is kept until the next look.
        lock(&self.state).deletes_settled.clear();
        let due = self
            .catalog
            .read_async(move |c| deletes::due(c, now))
            .await?;
        for d in due {
            {
                let mut st = lock(&self.state);
                if st.deletes_settled.contains(&d.id) || !st.deletes_in_flight.insert(d.id) {
                    continue;
                }
            }
            let me = Arc::clone(self);
            tokio::spawn(async move {
                let id = d.id;
                me.delete_one(d).await;
                let mut st = lock(&me.state);
                st.deletes_in_flight.remove(&id);
                st.deletes_settled.insert(id);
            });
        }
        Ok(())
    }

    async fn delete_one(&self, d: DueDelete) {
        let result = match (&d.archive_id, &d.upload_id) {
            (Some(archive), _) => self.client.delete_archive(&d.vault_name, archive).await,
            (None, Some(upload)) => self.client.abort_multipart(&d.vault_name, upload).await,
            (None, None) => Ok(()),
        };
        let id = d.id;
        let recorded = match result {
            // Already gone is as good as deleted.
            Err(e) if e.kind != ErrorKind::NotFound => {
                log::warn!(
                    "deleting {} from {}: {e}; will retry",
                    what(&d),
                    d.vault_name
                );
                let message = e.to_string();
                let not_before = catalog::now_ns() + retry_wait_ns(d.attempts);
                self.catalog
                    .write_async(move |tx| deletes::failed(tx, id, &message, not_before))
                    .await
            }
            _ => {
                log::info!("deleted {} from {}", what(&d), d.vault_name);
                self.catalog
                    .write_async(move |tx| deletes::done(tx, id))
                    .await
            }
        };
        if let Err(e) = recorded {
            log::error!(
                "recording the delete of {} in {}: {e}",
                what(&d),
                d.vault_name
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn due(archive_id: Option<&str>, path: Option<&str>) -> DueDelete {
        DueDelete {
            id: 1,
            vault_name: "v".into(),
            archive_id: archive_id.map(Into::into),
            upload_id: None,
            path: path.map(Into::into),
            attempts: 0,
        }
    }

    #[test]
    fn deletes_are_named_for_the_log() {
        assert_eq!(
            what(&due(Some("abc"), Some("a/b.txt"))),
            "the old archive of a/b.txt"
        );
        assert_eq!(
            what(&due(Some("0123456789abcdef"), Some(""))),
            "archive 0123456789ab…"
        );
        assert_eq!(what(&due(Some("short"), None)), "archive short…");
        assert_eq!(what(&due(None, None)), "an abandoned multipart upload");
    }

    #[test]
    fn failed_deletes_back_off_up_to_512_seconds() {
        assert_eq!(retry_wait_ns(0), 1_000_000_000);
        assert_eq!(retry_wait_ns(3), 8_000_000_000);
        assert_eq!(retry_wait_ns(9), 512_000_000_000);
        assert_eq!(retry_wait_ns(100), 512_000_000_000);
    }
}
