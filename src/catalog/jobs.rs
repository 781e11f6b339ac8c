//! Read-side views of background work, for `.jobs` and `glacierfs status`: Glacier jobs, the
//! uploads of staged files, and the delete queue, each with the path it concerns.

use rusqlite::{params, Connection};

use super::{nodes, CatalogError};

#[derive(Debug, Clone)]
pub struct JobView {
    pub job_id: String,
    pub action: String,
    pub status: String,
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
    let day_ago = super::now_s() - 86_400;
    let mut out = Overview::default();
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
        out.jobs.push(j);
    }

    let mut stmt = c.prepare_cached(
        "SELECT n.ino, v.name, n.size, u.message, COALESCE(u.bytes_done, 0), u.started_s \
         FROM nodes n \
         JOIN vaults v ON v.ino = n.vault LEFT JOIN uploads u ON u.ino = n.ino \
         WHERE n.dirty > 0 AND n.kind = 3 AND (?1 IS NULL OR n.vault = ?1) ORDER BY n.ino",
    )?;
    let rows = stmt.query_map(params![scope], |r| {
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
        out.uploads.push(UploadView {
            ino,
            vault,
            path: nodes::vault_relative_path(c, ino)?,
            size,
            message,
            bytes_done,
            started_s,
        });
    }

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
        out.deletes.push(d?);
    }
    Ok(out)
}

/// Bytes of retrieved data cached, and of staged data not yet in Glacier.
pub fn cache_use(c: &Connection) -> Result<(u64, u64), CatalogError> {
    let (cached, staged): (i64, i64) = c.query_row(
        "SELECT COALESCE(SUM(CASE WHEN dirty = 0 AND archive_id IS NOT NULL THEN size END), 0), \
                COALESCE(SUM(CASE WHEN dirty > 0 THEN size END), 0) \
         FROM nodes WHERE kind = 3 AND local = 1",
        [],
        |r| Ok((r.get(0)?, r.get(1)?)),
    )?;
    Ok((cached.max(0) as u64, staged.max(0) as u64))
}
