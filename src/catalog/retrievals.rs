//! The retrieval engine's statements: archive-retrieval rows of the `jobs` table, the
//! `downloads` journal of their output, and the two node updates a retrieval makes (the
//! retrieved data becoming the file's, and the reads the cache's LRU orders by).
//!
//! Job ids are kept across mounts, since a job's output stays valid for at least 24 hours and
//! costs money to ask for again; a download's verified prefix is kept with its leaf hashes, so
//! a restart resumes it and still checks the whole.

use rusqlite::{params, Connection, OptionalExtension};

use super::jobs::{FailureCause, JobState};
use super::CatalogError;
use crate::codec::treehash::Digest;

/// A retrieval job as the catalog knows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetrievalJob {
    pub job_id: String,
    pub vault: u64,
    pub archive_id: Option<String>,
    pub state: JobState,
    /// Set when glacierfs itself failed the job.
    pub cause: Option<FailureCause>,
    pub message: Option<String>,
    pub ino: Option<u64>,
    /// Whether its output has been downloaded (a later eviction does not start a new job:
    /// the output is fetched again while Glacier keeps it).
    pub downloaded: bool,
    pub created_s: i64,
}

impl RetrievalJob {
    /// Running, or finished with output still to fetch.
    pub fn in_flight(&self) -> bool {
        self.state == JobState::InProgress
            || (self.state == JobState::Succeeded && !self.downloaded)
    }
}

/// The job that speaks for `archive_id`: the newest one that has not failed, else the newest
/// failed one.
pub fn for_archive(
    c: &Connection,
    vault: u64,
    archive_id: &str,
) -> Result<Option<RetrievalJob>, CatalogError> {
    let mut stmt = c.prepare_cached(
        "SELECT job_id, vault, archive_id, status, cause, message, ino, \
         bytes_done >= COALESCE(size, 0) AND status = 'Succeeded', created_s FROM jobs \
         WHERE action = 'ArchiveRetrieval' AND vault = ?1 AND archive_id = ?2 \
         ORDER BY CASE status WHEN 'Failed' THEN 1 ELSE 0 END, created_s DESC LIMIT 1",
    )?;
    Ok(stmt
        .query_row(params![vault as i64, archive_id], |r| {
            Ok(RetrievalJob {
                job_id: r.get(0)?,
                vault: r.get::<_, i64>(1)? as u64,
                archive_id: r.get(2)?,
                state: r.get(3)?,
                cause: r.get(4)?,
                message: r.get(5)?,
                ino: r.get::<_, Option<i64>>(6)?.map(|i| i as u64),
                downloaded: r.get(7)?,
                created_s: r.get(8)?,
            })
        })
        .optional()?)
}

/// What automatic retrievals (those an open started) created after `since_s` asked for: the
/// two bounds of the retrieval budget, kept in the catalog so they hold across mounts.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct AutoUse {
    pub bytes: u64,
    pub jobs: u64,
}

/// The ids of the automatic jobs recorded since `since_s`: a job being started is counted
/// against the budget until its row is among these, and no longer after.
pub fn auto_jobs_since(
    c: &Connection,
    since_s: i64,
) -> Result<std::collections::HashSet<String>, CatalogError> {
    let mut stmt = c.prepare_cached("SELECT job_id FROM jobs WHERE auto = 1 AND created_s > ?1")?;
    let rows = stmt.query_map([since_s], |r| r.get::<_, String>(0))?;
    Ok(rows.collect::<Result<_, _>>()?)
}

pub fn auto_use_since(c: &Connection, since_s: i64) -> Result<AutoUse, CatalogError> {
    let (bytes, jobs): (i64, i64) = c
        .prepare_cached(
            "SELECT COALESCE(SUM(size), 0), COUNT(*) FROM jobs WHERE auto = 1 AND created_s > ?1",
        )?
        .query_row([since_s], |r| Ok((r.get(0)?, r.get(1)?)))?;
    Ok(AutoUse {
        bytes: bytes.max(0) as u64,
        jobs: jobs.max(0) as u64,
    })
}

/// A job started or found for a file, as it is recorded.
#[derive(Debug, Clone)]
pub struct NewRetrieval<'a> {
    pub job_id: &'a str,
    pub vault: u64,
    pub archive_id: Option<&'a str>,
    pub tier: Option<&'a str>,
    pub state: JobState,
    pub message: Option<&'a str>,
    pub created_s: i64,
    pub completed_s: Option<i64>,
    pub size: u64,
    /// Started by an open: counts against the retrieval budget.
    pub auto: bool,
    pub ino: u64,
}

/// Records a job; one already known takes Glacier's latest word on it (and loses any cause
/// glacierfs had failed it for) but keeps the file it was first asked for.
pub fn record(c: &Connection, j: &NewRetrieval<'_>) -> Result<(), CatalogError> {
    c.prepare_cached(
        "INSERT INTO jobs (job_id, vault, action, archive_id, tier, status, message, \
         created_s, completed_s, size, auto, ino) \
         VALUES (?1, ?2, 'ArchiveRetrieval', ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11) \
         ON CONFLICT(job_id) DO UPDATE SET status = excluded.status, \
         message = excluded.message, cause = NULL, completed_s = excluded.completed_s, \
         ino = COALESCE(jobs.ino, excluded.ino)",
    )?
    .execute(params![
        j.job_id,
        j.vault as i64,
        j.archive_id,
        j.tier,
        j.state,
        j.message,
        j.created_s,
        j.completed_s,
        j.size as i64,
        j.auto,
        j.ino as i64
    ])?;
    Ok(())
}

/// A permanent refusal to start a job, kept as a Failed row under a made-up id
/// (`refused-<ino>-<time>`) so `.jobs` shows Glacier's message and opens can be answered
/// without asking again for a while.
#[derive(Debug, Clone)]
pub struct Refusal<'a> {
    pub vault: u64,
    pub ino: u64,
    pub archive_id: &'a str,
    pub size: u64,
    pub message: &'a str,
    pub at_s: i64,
}

pub fn record_refusal(c: &Connection, r: &Refusal<'_>) -> Result<(), CatalogError> {
    let id = format!("refused-{}-{}", r.ino, r.at_s);
    c.execute(
        "INSERT OR REPLACE INTO jobs (job_id, vault, action, archive_id, status, cause, \
         message, created_s, completed_s, size, auto, ino) \
         VALUES (?1, ?2, 'ArchiveRetrieval', ?3, ?4, ?5, ?6, ?7, ?7, ?8, 0, ?9)",
        params![
            id,
            r.vault as i64,
            r.archive_id,
            JobState::Failed,
            FailureCause::Refused,
            r.message,
            r.at_s,
            r.size as i64,
            r.ino as i64
        ],
    )?;
    Ok(())
}

/// Asks for a downloaded job's output again, for `ino` (its data was evicted since).
pub fn fetch_again(c: &Connection, job_id: &str, ino: u64) -> Result<(), CatalogError> {
    c.execute(
        "UPDATE jobs SET bytes_done = 0, ino = ?2 WHERE job_id = ?1",
        params![job_id, ino as i64],
    )?;
    Ok(())
}

/// A retrieval job that is running, or finished and maybe not downloaded yet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PendingJob {
    pub job_id: String,
    pub vault_name: String,
    pub archive_id: Option<String>,
    pub state: JobState,
    pub ino: Option<u64>,
    pub created_s: i64,
}

/// Jobs running, and jobs finished whose file is still cold and not fully downloaded.
pub fn pending(c: &Connection) -> Result<Vec<PendingJob>, CatalogError> {
    let mut stmt = c.prepare_cached(
        "SELECT j.job_id, v.name, j.archive_id, j.status, j.ino, j.created_s FROM jobs j \
         JOIN vaults v ON v.ino = j.vault \
         LEFT JOIN nodes n ON n.ino = j.ino \
         WHERE j.action = 'ArchiveRetrieval' AND (j.status = 'InProgress' \
             OR (j.status = 'Succeeded' AND n.ino IS NOT NULL AND n.local = 0 \
                 AND j.bytes_done < COALESCE(j.size, 0)))",
    )?;
    let rows = stmt.query_map([], |r| {
        Ok(PendingJob {
            job_id: r.get(0)?,
            vault_name: r.get(1)?,
            archive_id: r.get(2)?,
            state: r.get(3)?,
            ino: r.get::<_, Option<i64>>(4)?.map(|i| i as u64),
            created_s: r.get(5)?,
        })
    })?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// Glacier's latest word on a job: its state, message and completion. A cause glacierfs had
/// failed it for goes with the message it explained.
pub fn set_state(
    c: &Connection,
    job_id: &str,
    state: JobState,
    message: Option<&str>,
    completed_s: Option<i64>,
) -> Result<(), CatalogError> {
    c.execute(
        "UPDATE jobs SET status = ?2, message = ?3, cause = NULL, completed_s = ?4 \
         WHERE job_id = ?1",
        params![job_id, state, message, completed_s],
    )?;
    Ok(())
}

/// Forgets a job (its output expired) and any download of it.
pub fn forget(c: &Connection, job_id: &str) -> Result<(), CatalogError> {
    c.execute("DELETE FROM jobs WHERE job_id = ?1", [job_id])?;
    c.execute("DELETE FROM downloads WHERE job_id = ?1", [job_id])?;
    Ok(())
}

/// Where a download stands in the journal.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DownloadRecord {
    /// Bytes `[0, verified)` of `<cache>/data/<ino>.part` are known good...
    pub verified: u64,
    /// ...and these are their 1 MiB leaf hashes.
    pub leaves: Vec<Digest>,
    /// Downloads of this job's output that failed verification so far.
    pub attempts: u32,
}

/// What a download of `job_id` for `ino` resumes from: the journal's record when it is of the
/// same job (its output is byte for byte the same), else a fresh record (replacing another
/// job's).
pub fn begin_download(
    c: &Connection,
    ino: u64,
    job_id: &str,
    archive_id: &str,
    vault: u64,
    size: u64,
) -> Result<DownloadRecord, CatalogError> {
    let existing: Option<(String, i64, Vec<u8>, i64)> = c
        .query_row(
            "SELECT job_id, verified, leaves, attempts FROM downloads WHERE ino = ?1",
            [ino as i64],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
        )
        .optional()?;
    match existing {
        Some((j, verified, leaves, attempts)) if j == job_id => Ok(DownloadRecord {
            verified: verified.max(0) as u64,
            leaves: leaves_of(&leaves),
            attempts: u32::try_from(attempts.max(0)).unwrap_or(u32::MAX),
        }),
        _ => {
            c.execute(
                "INSERT OR REPLACE INTO downloads (ino, job_id, archive_id, vault, size) \
                 VALUES (?1, ?2, ?3, ?4, ?5)",
                params![ino as i64, job_id, archive_id, vault as i64, size as i64],
            )?;
            Ok(DownloadRecord::default())
        }
    }
}

/// Records the verified prefix of `ino`'s download.
pub fn record_verified(
    c: &Connection,
    ino: u64,
    upto: u64,
    leaves: &[Digest],
) -> Result<(), CatalogError> {
    let blob: Vec<u8> = leaves.iter().flatten().copied().collect();
    c.prepare_cached("UPDATE downloads SET verified = ?2, leaves = ?3 WHERE ino = ?1")?
        .execute(params![ino as i64, upto as i64, blob])?;
    Ok(())
}

/// A download of `job_id` for `ino` failed verification: it starts over next time, and if
/// `give_up`, the job is failed for good with `message`.
pub fn record_corrupt(
    c: &Connection,
    ino: u64,
    job_id: &str,
    message: &str,
    give_up: bool,
) -> Result<(), CatalogError> {
    c.execute(
        "UPDATE downloads SET attempts = attempts + 1, verified = 0, leaves = x'', \
         message = ?2 WHERE ino = ?1",
        params![ino as i64, message],
    )?;
    if give_up {
        c.execute(
            "UPDATE jobs SET status = ?2, cause = ?3, message = ?4 WHERE job_id = ?1",
            params![job_id, JobState::Failed, FailureCause::Corrupt, message],
        )?;
    }
    Ok(())
}

/// The whole output of `job_id` is downloaded and verified for `ino`: the journal entry goes,
/// and the data becomes the file's (cached, unread so far) if the file still holds
/// `archive_id` and nothing staged. Returns whether it did.
pub fn finish_download(
    c: &Connection,
    ino: u64,
    job_id: &str,
    archive_id: Option<&str>,
    size: u64,
) -> Result<bool, CatalogError> {
    c.execute(
        "UPDATE jobs SET bytes_done = ?2 WHERE job_id = ?1",
        params![job_id, size as i64],
    )?;
    c.execute("DELETE FROM downloads WHERE ino = ?1", [ino as i64])?;
    Ok(c.execute(
        "UPDATE nodes SET local = 1, read_ns = NULL \
         WHERE ino = ?1 AND local = 0 AND dirty = 0 AND archive_id IS ?2",
        params![ino as i64, archive_id],
    )? == 1)
}

/// Records when cached files were last read (the LRU evicts the least recently read).
pub fn record_reads(c: &Connection, reads: &[(u64, i64)]) -> Result<(), CatalogError> {
    let mut stmt = c.prepare_cached("UPDATE nodes SET read_ns = ?2 WHERE ino = ?1")?;
    for (ino, at_ns) in reads {
        stmt.execute(params![*ino as i64, at_ns])?;
    }
    Ok(())
}

fn leaves_of(blob: &[u8]) -> Vec<Digest> {
    blob.chunks_exact(32)
        .map(|c| {
            let mut d = [0u8; 32];
            d.copy_from_slice(c);
            d
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn catalog() -> Connection {
        let mut c = Connection::open_in_memory().unwrap();
        super::super::schema::migrate(&mut c).unwrap();
        c
    }

    fn job<'a>(id: &'a str, archive: &'a str, created_s: i64) -> NewRetrieval<'a> {
        NewRetrieval {
            job_id: id,
            vault: 2,
            archive_id: Some(archive),
            tier: Some("Standard"),
            state: JobState::InProgress,
            message: None,
            created_s,
            completed_s: None,
            size: 10,
            auto: true,
            ino: 5,
        }
    }

    #[test]
    fn states_and_causes_round_trip_and_a_new_word_clears_the_cause() {
        let c = catalog();
        record(&c, &job("j1", "a", 100)).unwrap();
        let got = for_archive(&c, 2, "a").unwrap().unwrap();
        assert_eq!((got.state, got.cause), (JobState::InProgress, None));
        assert!(got.in_flight());
        assert_eq!(
            auto_use_since(&c, 99).unwrap(),
            AutoUse { bytes: 10, jobs: 1 }
        );
        record(&c, &job("j3", "b", 150)).unwrap();
        assert_eq!(
            auto_use_since(&c, 99).unwrap(),
            AutoUse { bytes: 20, jobs: 2 }
        );
        assert_eq!(auto_use_since(&c, 150).unwrap(), AutoUse::default());
        assert_eq!(auto_jobs_since(&c, 99).unwrap().len(), 2);
        assert!(auto_jobs_since(&c, 150).unwrap().is_empty());

        begin_download(&c, 5, "j1", "a", 2, 10).unwrap();
        record_corrupt(&c, 5, "j1", "bad bytes", true).unwrap();
        let got = for_archive(&c, 2, "a").unwrap().unwrap();
        assert_eq!(got.state, JobState::Failed);
        assert_eq!(got.cause, Some(FailureCause::Corrupt));
        assert_eq!(got.message.as_deref(), Some("bad bytes"));

        // Glacier's word on the same job replaces the message, and the cause with it.
        record(&c, &job("j1", "a", 100)).unwrap();
        let got = for_archive(&c, 2, "a").unwrap().unwrap();
        assert_eq!((got.state, got.cause), (JobState::InProgress, None));
    }

    #[test]
    fn a_refusal_is_a_failed_row_that_a_live_job_outranks() {
        let c = catalog();
        let refusal = Refusal {
            vault: 2,
            ino: 5,
            archive_id: "a",
            size: 10,
            message: "Glacier refused the retrieval: no",
            at_s: 200,
        };
        record_refusal(&c, &refusal).unwrap();
        let got = for_archive(&c, 2, "a").unwrap().unwrap();
        assert_eq!(got.job_id, "refused-5-200");
        assert_eq!(got.cause, Some(FailureCause::Refused));
        assert_eq!(
            auto_use_since(&c, 0).unwrap(),
            AutoUse::default(),
            "a refusal costs nothing"
        );
        record(&c, &job("j2", "a", 100)).unwrap();
        assert_eq!(for_archive(&c, 2, "a").unwrap().unwrap().job_id, "j2");
    }

    #[test]
    fn a_download_resumes_only_the_same_jobs_record() {
        let c = catalog();
        assert_eq!(
            begin_download(&c, 5, "j1", "a", 2, 10).unwrap(),
            DownloadRecord::default()
        );
        record_verified(&c, 5, 4, &[[7u8; 32]]).unwrap();
        let resumed = begin_download(&c, 5, "j1", "a", 2, 10).unwrap();
        assert_eq!((resumed.verified, resumed.leaves), (4, vec![[7u8; 32]]));
        let other = begin_download(&c, 5, "j2", "a", 2, 10).unwrap();
        assert_eq!(other, DownloadRecord::default());
    }
}
