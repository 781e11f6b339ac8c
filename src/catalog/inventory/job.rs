//! The records of inventory jobs: the intent written before one is started (so that a crash
//! between InitiateJob and recording the job leaves a trace), and the job's row in `jobs`,
//! which `.jobs` and `glacierfs status` show.

use rusqlite::{params, Transaction};

use crate::catalog::{now_s, CatalogError};
use crate::codec::timefmt;
use crate::glacier::JobDesc;

/// Records that an inventory job of `vault` is about to be started; returns the intent's id,
/// for [`started`].
pub fn intend(tx: &Transaction<'_>, vault: u64) -> Result<i64, CatalogError> {
    tx.execute(
        "INSERT INTO intents (kind, vault, created_s, updated_s) \
         VALUES ('inventory-job', ?1, ?2, ?2)",
        params![vault as i64, now_s()],
    )?;
    Ok(tx.last_insert_rowid())
}

/// Marks the intent done: the job `job_id` was started, and [`record`] has it.
pub fn started(tx: &Transaction<'_>, intent: i64, job_id: &str) -> Result<(), CatalogError> {
    tx.execute(
        "UPDATE intents SET state = 'done', payload = json_object('job_id', ?2), \
         updated_s = ?3 WHERE id = ?1",
        params![intent, job_id, now_s()],
    )?;
    Ok(())
}

/// Records an inventory job of `vault` as DescribeJob or ListJobs last showed it.
pub fn record(tx: &Transaction<'_>, vault: u64, job: &JobDesc) -> Result<(), CatalogError> {
    tx.execute(
        "INSERT INTO jobs (job_id, vault, action, status, message, created_s, completed_s, size) \
         VALUES (?1, ?2, 'InventoryRetrieval', ?3, ?4, ?5, ?6, ?7) \
         ON CONFLICT(job_id) DO UPDATE SET status = excluded.status, \
         message = excluded.message, completed_s = excluded.completed_s, size = excluded.size",
        params![
            job.job_id,
            vault as i64,
            job.status.as_str(),
            job.status_message,
            timefmt::iso_secs(job.creation_date.as_deref()).unwrap_or_else(now_s),
            timefmt::iso_secs(job.completion_date.as_deref()),
            job.inventory_size.map(|s| s as i64),
        ],
    )?;
    Ok(())
}
