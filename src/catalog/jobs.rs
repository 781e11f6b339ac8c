//! Read-side views of background work, for `.jobs` and `glacierfs status`: Glacier jobs, the
//! uploads of staged files, and the delete queue, each with the path it concerns; the types
//! the `jobs` table stores (a job's state, why it failed); and the few writes `.jobs` commands
//! and `glacierfs status` need. The retrieval engine's own reads and writes of the table are in
//! [`super::retrievals`].

use rusqlite::types::{FromSql, FromSqlError, FromSqlResult, ToSql, ToSqlOutput, ValueRef};
use rusqlite::{params, Connection};

use super::{nodes, CatalogError, Kind};
use crate::glacier::JobStatus;

/// A job's state as the `jobs.status` column keeps it: Glacier's own words, as TEXT.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JobState {
    InProgress,
    Succeeded,
    Failed,
}

impl JobState {
    pub fn as_str(self) -> &'static str {
        match self {
            JobState::InProgress => "InProgress",
            JobState::Succeeded => "Succeeded",
            JobState::Failed => "Failed",
        }
    }
}

impl From<JobStatus> for JobState {
    fn from(s: JobStatus) -> JobState {
        match s {
            JobStatus::InProgress => JobState::InProgress,
            JobStatus::Succeeded => JobState::Succeeded,
            JobStatus::Failed => JobState::Failed,
        }
    }
}

impl ToSql for JobState {
    fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
        Ok(self.as_str().into())
    }
}

impl FromSql for JobState {
    fn column_result(v: ValueRef<'_>) -> FromSqlResult<Self> {
        match v.as_str()? {
            "InProgress" => Ok(JobState::InProgress),
            "Succeeded" => Ok(JobState::Succeeded),
            "Failed" => Ok(JobState::Failed),
            other => Err(FromSqlError::Other(
                format!("unknown job status {other:?}").into(),
            )),
        }
    }
}

/// Why glacierfs itself marked a job Failed (`jobs.cause`); NULL for jobs Glacier reported as
/// failed, and for every job that has not failed. The human text stays in `jobs.message`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureCause {
    /// Its output failed verification against the archive's tree hash too many times.
    Corrupt,
    /// Glacier refused to start it (a retrieval policy, access denied, a bad request); the row
    /// stands for a job that never existed.
    Refused,
}

impl FailureCause {
    pub fn as_str(self) -> &'static str {
        match self {
            FailureCause::Corrupt => "corrupt",
            FailureCause::Refused => "refused",
        }
    }
}

impl ToSql for FailureCause {
    fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
        Ok(self.as_str().into())
    }
}

impl FromSql for FailureCause {
    fn column_result(v: ValueRef<'_>) -> FromSqlResult<Self> {
        match v.as_str()? {
            "corrupt" => Ok(FailureCause::Corrupt),
            "refused" => Ok(FailureCause::Refused),
            other => Err(FromSqlError::Other(
                format!("unknown job failure cause {other:?}").into(),
            )),
        }
    }
}

#[derive(Debug, Clone)]
pub struct JobView {
    pub job_id: String,
    pub action: String,
    pub status: JobState,
    pub vault: String,
    pub path: Option<String>,
    pub archive_id: Option<String>,
    pub tier: Option<String>,
    pub created_s: i64,
    pub completed_s: Option<i64>,
    pub size: Option<i64>,
    pub bytes_done: Option<i64>,
    pub message: Option<String>,
    pub ino: Option<u64>,
}

#[derive(Debug, Clone)]
pub struct UploadView {
    pub ino: u64,
    pub vault: String,
    pub path: String,
    pub size: u64,
    pub message: Option<String>,
    /// Bytes sent, as the queue last recorded them, and when the upload started (Unix s).
    pub bytes_done: u64,
    pub started_s: Option<i64>,
}

#[derive(Debug, Clone)]
pub struct DeleteView {
    pub id: i64,
    pub vault: String,
    pub path: Option<String>,
    pub archive_id: Option<String>,
    pub attempts: i64,
    pub message: Option<String>,
}

#[derive(Debug, Clone, Default)]
pub struct Overview {
    pub jobs: Vec<JobView>,
    pub uploads: Vec<UploadView>,
    pub deletes: Vec<DeleteView>,
}

/// Background work in one vault (`Some(vault ino)`) or all of them. Succeeded Glacier jobs
/// are shown for a day, as long as Glacier keeps their output; failed ones until replaced.
pub fn overview(c: &Connection, vault: Option<u64>) -> Result<Overview, CatalogError> {
    let scope = vault.map(|v| v as i64);
    Ok(Overview {
        jobs: glacier_jobs(c, scope)?,
        uploads: uploads(c, scope)?,
        deletes: deletes(c, scope)?,
    })
}

fn glacier_jobs(c: &Connection, scope: Option<i64>) -> Result<Vec<JobView>, CatalogError> {
    let day_ago = super::now_s() - 86_400;
    let mut out = Vec::new();
    let mut stmt = c.prepare_cached(
        "SELECT j.job_id, j.action, j.status, v.name, j.archive_id, j.tier, j.created_s, \
         j.completed_s, j.size, j.bytes_done, j.message, j.ino FROM jobs j \
         JOIN vaults v ON v.ino = j.vault \
         WHERE (?1 IS NULL OR j.vault = ?1) \
         AND (j.status != 'Succeeded' OR COALESCE(j.completed_s, j.created_s) > ?2) \
         ORDER BY j.created_s",
    )?;
    let rows = stmt.query_map(params![scope, day_ago], |r| {
        Ok(JobView {
            job_id: r.get(0)?,
            action: r.get(1)?,
            status: r.get(2)?,
            vault: r.get(3)?,
            path: None,
            archive_id: r.get(4)?,
            tier: r.get(5)?,
            created_s: r.get(6)?,
            completed_s: r.get(7)?,
            size: r.get(8)?,
            bytes_done: r.get(9)?,
            message: r.get(10)?,
            ino: r.get::<_, Option<i64>>(11)?.map(|i| i as u64),
        })
    })?;
    for j in rows {
        let mut j = j?;
        if let Some(ino) = j.ino {
            j.path = nodes::vault_relative_path(c, ino).ok();
        }
        out.push(j);
    }
    Ok(out)
}

fn uploads(c: &Connection, scope: Option<i64>) -> Result<Vec<UploadView>, CatalogError> {
    let mut out = Vec::new();
    let mut stmt = c.prepare_cached(
        "SELECT n.ino, v.name, n.size, u.message, COALESCE(u.bytes_done, 0), u.started_s \
         FROM nodes n \
         JOIN vaults v ON v.ino = n.vault LEFT JOIN uploads u ON u.ino = n.ino \
         WHERE n.dirty > 0 AND n.kind = ?2 AND (?1 IS NULL OR n.vault = ?1) ORDER BY n.ino",
    )?;
    let rows = stmt.query_map(params![scope, Kind::File], |r| {
        Ok((
            r.get::<_, i64>(0)? as u64,
            r.get::<_, String>(1)?,
            r.get::<_, i64>(2)? as u64,
            r.get::<_, Option<String>>(3)?,
            r.get::<_, i64>(4)?.max(0) as u64,
            r.get::<_, Option<i64>>(5)?,
        ))
    })?;
    for row in rows {
        let (ino, vault, size, message, bytes_done, started_s) = row?;
        out.push(UploadView {
            ino,
            vault,
            path: nodes::vault_relative_path(c, ino)?,
            size,
            message,
            bytes_done,
            started_s,
        });
    }
    Ok(out)
}

fn deletes(c: &Connection, scope: Option<i64>) -> Result<Vec<DeleteView>, CatalogError> {
    let mut out = Vec::new();
    let mut stmt = c.prepare_cached(
        "SELECT d.id, v.name, d.path, d.archive_id, d.attempts, d.message FROM deletes d \
         JOIN vaults v ON v.ino = d.vault WHERE (?1 IS NULL OR d.vault = ?1) ORDER BY d.id",
    )?;
    let rows = stmt.query_map(params![scope], |r| {
        Ok(DeleteView {
            id: r.get(0)?,
            vault: r.get(1)?,
            path: r.get::<_, Option<String>>(2)?.filter(|p| !p.is_empty()),
            archive_id: r.get(3)?,
            attempts: r.get(4)?,
            message: r.get(5)?,
        })
    })?;
    for d in rows {
        out.push(d?);
    }
    Ok(out)
}

/// How much of a job's output has been downloaded so far, for `.jobs` (an inventory's
/// download; a retrieval's goes through [`super::retrievals`]).
pub fn set_bytes_done(c: &Connection, job_id: &str, bytes: u64) -> Result<(), CatalogError> {
    c.execute(
        "UPDATE jobs SET bytes_done = ?2 WHERE job_id = ?1",
        params![job_id, bytes as i64],
    )?;
    Ok(())
}

/// Bytes of retrieved data cached, and of staged data not yet in Glacier.
pub fn cache_use(c: &Connection) -> Result<(u64, u64), CatalogError> {
    let (cached, staged): (i64, i64) = c.query_row(
        "SELECT COALESCE(SUM(CASE WHEN dirty = 0 AND archive_id IS NOT NULL THEN size END), 0), \
                COALESCE(SUM(CASE WHEN dirty > 0 THEN size END), 0) \
         FROM nodes WHERE kind = ?1 AND local = 1",
        [Kind::File],
        |r| Ok((r.get(0)?, r.get(1)?)),
    )?;
    Ok((cached.max(0) as u64, staged.max(0) as u64))
}

/// Which queued deletes a `.jobs` `cancel` names.
#[derive(Debug, Clone, Default)]
pub struct CancelTarget {
    /// `delete-N`: that one delete, wherever it is.
    pub id: Option<i64>,
    /// Otherwise, deletes of this vault-relative path not tried yet...
    pub path: String,
    /// ...in this vault (by ino: the `.jobs` of a vault)...
    pub vault: Option<u64>,
    /// ...or in the vault of this name (a `vault/path` target at the root).
    pub vault_name: Option<String>,
}

/// Drops the queued deletes `t` names, with their tombstones: the archive stays, so the next
/// inventory may show it again. Returns how many were cancelled.
pub fn cancel_deletes(c: &Connection, t: &CancelTarget) -> Result<usize, CatalogError> {
    let p = params![t.id, t.path, t.vault.map(|v| v as i64), t.vault_name];
    c.execute(
        "DELETE FROM tombstones WHERE EXISTS (SELECT 1 FROM deletes d \
         WHERE (d.id = ?1 OR (?1 IS NULL AND d.path = ?2 AND d.attempts = 0 AND \
               (?3 IS NULL OR d.vault = ?3) AND \
               (?4 IS NULL OR d.vault = (SELECT ino FROM vaults WHERE name = ?4)))) \
         AND d.vault = tombstones.vault AND d.archive_id = tombstones.archive_id)",
        p,
    )?;
    Ok(c.execute(
        "DELETE FROM deletes \
         WHERE (id = ?1 OR (?1 IS NULL AND path = ?2 AND attempts = 0 AND \
               (?3 IS NULL OR vault = ?3) AND \
               (?4 IS NULL OR vault = (SELECT ino FROM vaults WHERE name = ?4))))",
        p,
    )?)
}
