//! The local record that lets an S3 export resume: for each multipart upload it opened, which
//! archive it holds and with what part size, and for each part it sent, that part's tree hash
//! and SHA-256; also the retrieval job each archive was given.
//!
//! S3 keeps the parts themselves, but not what glacierfs needs to trust them on a re-run:
//! ListParts gives a part's SHA-256, and the archive's tree hash can only be checked from
//! the parts' tree hashes. So a part's line is written *before* the part is sent, from the
//! bytes already verified against Glacier: a part S3 holds whose SHA-256 matches its line is
//! known good without being fetched again. A part with no line (written, then killed before
//! the line reached the file), or one whose checksum differs, is fetched and sent again.
//!
//! It is an append-only file of JSON lines, one per event, under the user's state directory
//! (`$XDG_STATE_HOME/glacierfs/exports/`, else `~/.local/state/...`), named after the
//! destination. A torn last line is ignored. Nothing in it is data: it holds no object's
//! bytes, and losing it costs only fetching parts again. The file is locked while an export
//! runs, so two exports never write one destination, compacted when opened, and removed when
//! an export finishes with every file in place.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fs::{DirBuilder, File, OpenOptions};
use std::io::{self, BufRead, BufReader, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

#[derive(Debug, thiserror::Error)]
pub enum JournalError {
    #[error("cannot find a state directory: set XDG_STATE_HOME or HOME")]
    NoStateDir,
    #[error("{}: {source}", path.display())]
    Io { path: PathBuf, source: io::Error },
    #[error("another export into {0} is running")]
    Busy(String),
}

/// One line of the file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "t", rename_all = "snake_case")]
enum Event {
    /// About to ask S3 for a multipart upload for `key`: if the answer is lost, an upload
    /// under `key` that no `Upload` line names is this export's, to abort.
    Opening {
        key: String,
    },
    Upload {
        key: String,
        upload: String,
        archive: Option<String>,
        tree: String,
        part: u64,
    },
    Part {
        upload: String,
        n: u32,
        tree: String,
        sha: String,
    },
    End {
        upload: String,
    },
    Job {
        archive: String,
        job: String,
    },
}

/// What the journal knows of one open multipart upload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UploadRec {
    pub key: String,
    pub archive: Option<String>,
    /// Hex tree hash of the whole object.
    pub tree: String,
    pub part_size: u64,
    /// Part number → (hex tree hash, base64 SHA-256), as sent.
    pub parts: BTreeMap<u32, (String, String)>,
}

#[derive(Debug, Default)]
struct State {
    uploads: HashMap<String, UploadRec>,
    jobs: HashMap<String, String>,
    /// Keys an upload was being opened for, with no answer recorded.
    opening: HashSet<String>,
}

impl State {
    fn apply(&mut self, e: Event) {
        match e {
            Event::Opening { key } => {
                self.opening.insert(key);
            }
            Event::Upload {
                key,
                upload,
                archive,
                tree,
                part,
            } => {
                self.opening.remove(&key);
                self.uploads.insert(
                    upload,
                    UploadRec {
                        key,
                        archive,
                        tree,
                        part_size: part,
                        parts: BTreeMap::new(),
                    },
                );
            }
            Event::Part {
                upload,
                n,
                tree,
                sha,
            } => {
                if let Some(u) = self.uploads.get_mut(&upload) {
                    u.parts.insert(n, (tree, sha));
                }
            }
            Event::End { upload } => {
                self.uploads.remove(&upload);
            }
            Event::Job { archive, job } => {
                self.jobs.insert(archive, job);
            }
        }
    }

    /// The events that rebuild this state.
    fn events(&self) -> Vec<Event> {
        let mut out: Vec<Event> = self
            .jobs
            .iter()
            .map(|(a, j)| Event::Job {
                archive: a.clone(),
                job: j.clone(),
            })
            .collect();
        out.extend(
            self.opening
                .iter()
                .map(|key| Event::Opening { key: key.clone() }),
        );
        for (id, u) in &self.uploads {
            out.push(Event::Upload {
                key: u.key.clone(),
                upload: id.clone(),
                archive: u.archive.clone(),
                tree: u.tree.clone(),
                part: u.part_size,
            });
            for (n, (tree, sha)) in &u.parts {
                out.push(Event::Part {
                    upload: id.clone(),
                    n: *n,
                    tree: tree.clone(),
                    sha: sha.clone(),
                });
            }
        }
        out
    }
}

/// The journal of one destination, locked for as long as it is open.
#[derive(Debug)]
pub struct Journal {
    path: PathBuf,
    file: Mutex<File>,
    /// What the file says, kept up to date as lines are appended.
    state: Mutex<State>,
}

/// Where journals live.
pub fn state_dir() -> Result<PathBuf, JournalError> {
    if let Some(xdg) = std::env::var_os("XDG_STATE_HOME").filter(|v| !v.is_empty()) {
        return Ok(PathBuf::from(xdg).join("glacierfs").join("exports"));
    }
    match std::env::var_os("HOME").filter(|v| !v.is_empty()) {
        Some(home) => Ok(PathBuf::from(home).join(".local/state/glacierfs/exports")),
        None => Err(JournalError::NoStateDir),
    }
}

impl Journal {
    /// Opens (creating, locking and compacting) the journal for `destination`, an identity
    /// such as the endpoint, bucket and prefix together.
    pub fn open(dir: &Path, destination: &str) -> Result<Journal, JournalError> {
        let io = |path: &Path| {
            let path = path.to_owned();
            move |source| JournalError::Io { path, source }
        };
        DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(io(dir))?;
        let digest = Sha256::digest(destination.as_bytes());
        let path = dir.join(format!("s3-{}.jsonl", hex::encode(&digest[..12])));
        let file = OpenOptions::new()
            .read(true)
            .append(true)
            .create(true)
            .mode(0o600)
            .open(&path)
            .map_err(io(&path))?;
        // SAFETY: flock on a descriptor this function owns for the call's duration.
        if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
            return Err(JournalError::Busy(destination.to_owned()));
        }
        let mut found = State::default();
        for line in BufReader::new(&file).lines() {
            let line = line.map_err(io(&path))?;
            // A line cut short by a kill is the last one; it is skipped, and with it only
            // the knowledge that one part needs no second fetch.
            if let Ok(e) = serde_json::from_str::<Event>(&line) {
                found.apply(e);
            }
        }
        let journal = Journal {
            path,
            file: Mutex::new(file),
            state: Mutex::new(found),
        };
        journal.compact()?;
        Ok(journal)
    }

    /// Rewrites the file with only what is still live, so it never grows past one export.
    fn compact(&self) -> Result<(), JournalError> {
        let mut text = String::new();
        for e in crate::locks::lock(&self.state).events() {
            if let Ok(line) = serde_json::to_string(&e) {
                text.push_str(&line);
                text.push('\n');
            }
        }
        let file = crate::locks::lock(&self.file);
        let err = |source| JournalError::Io {
            path: self.path.clone(),
            source,
        };
        // The lock stays on this descriptor: the file is rewritten in place, not replaced.
        file.set_len(0).map_err(err)?;
        (&*file).write_all(text.as_bytes()).map_err(err)
    }

    fn append(&self, e: Event) -> Result<(), JournalError> {
        let line = serde_json::to_string(&e).map_err(|e| JournalError::Io {
            path: self.path.clone(),
            source: io::Error::other(e),
        })? + "\n";
        {
            let file = crate::locks::lock(&self.file);
            // One write per line, in append mode: a kill leaves at most one torn line, the
            // last.
            (&*file)
                .write_all(line.as_bytes())
                .map_err(|source| JournalError::Io {
                    path: self.path.clone(),
                    source,
                })?;
        }
        crate::locks::lock(&self.state).apply(e);
        Ok(())
    }

    /// The uploads recorded as open, by upload id.
    pub fn uploads(&self) -> HashMap<String, UploadRec> {
        crate::locks::lock(&self.state).uploads.clone()
    }

    /// What is recorded of one upload.
    pub fn upload(&self, upload_id: &str) -> Option<UploadRec> {
        crate::locks::lock(&self.state)
            .uploads
            .get(upload_id)
            .cloned()
    }

    /// The job recorded for an archive.
    pub fn job(&self, archive: &str) -> Option<String> {
        crate::locks::lock(&self.state).jobs.get(archive).cloned()
    }

    /// Written before CreateMultipartUpload.
    pub fn opening(&self, key: &str) -> Result<(), JournalError> {
        self.append(Event::Opening {
            key: key.to_owned(),
        })
    }

    /// Whether an upload was being opened for `key` and its answer never recorded.
    pub fn was_opening(&self, key: &str) -> bool {
        crate::locks::lock(&self.state).opening.contains(key)
    }

    pub fn upload_opened(&self, upload_id: &str, rec: &UploadRec) -> Result<(), JournalError> {
        self.append(Event::Upload {
            key: rec.key.clone(),
            upload: upload_id.to_owned(),
            archive: rec.archive.clone(),
            tree: rec.tree.clone(),
            part: rec.part_size,
        })
    }

    /// Written before the part is sent, from bytes already verified.
    pub fn part_sending(
        &self,
        upload_id: &str,
        n: u32,
        tree: &str,
        sha: &str,
    ) -> Result<(), JournalError> {
        self.append(Event::Part {
            upload: upload_id.to_owned(),
            n,
            tree: tree.to_owned(),
            sha: sha.to_owned(),
        })
    }

    /// The upload was completed or aborted.
    pub fn upload_ended(&self, upload_id: &str) -> Result<(), JournalError> {
        self.append(Event::End {
            upload: upload_id.to_owned(),
        })
    }

    pub fn set_job(&self, archive: &str, job: &str) -> Result<(), JournalError> {
        self.append(Event::Job {
            archive: archive.to_owned(),
            job: job.to_owned(),
        })
    }

    /// Removes the file: the export it served is complete.
    pub fn finish(&self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(key: &str) -> UploadRec {
        UploadRec {
            key: key.into(),
            archive: Some("A".into()),
            tree: "ab".into(),
            part_size: 8 << 20,
            parts: BTreeMap::new(),
        }
    }

    #[test]
    fn a_reopened_journal_knows_open_uploads_parts_and_jobs() {
        let dir = tempfile::tempdir().unwrap();
        {
            let j = Journal::open(dir.path(), "s3://b/p").unwrap();
            assert!(matches!(
                Journal::open(dir.path(), "s3://b/p"),
                Err(JournalError::Busy(_))
            ));
            j.upload_opened("U1", &rec("k1")).unwrap();
            j.part_sending("U1", 1, "t1", "s1").unwrap();
            j.part_sending("U1", 2, "t2", "s2").unwrap();
            j.opening("k2").unwrap();
            j.upload_opened("U2", &rec("k2")).unwrap();
            j.upload_ended("U2").unwrap();
            j.opening("k3").unwrap();
            j.set_job("A", "J").unwrap();
        }
        // A torn last line, as a kill mid-write leaves.
        let file = std::fs::read_dir(dir.path())
            .unwrap()
            .next()
            .unwrap()
            .unwrap()
            .path();
        let mut f = OpenOptions::new().append(true).open(&file).unwrap();
        f.write_all(b"{\"t\":\"part\",\"upload\":\"U1\",\"n\":3,\"tr")
            .unwrap();
        drop(f);
        let j = Journal::open(dir.path(), "s3://b/p").unwrap();
        assert_eq!(j.uploads().len(), 1);
        let u = &j.uploads()["U1"];
        assert_eq!(u.key, "k1");
        assert_eq!(u.parts.len(), 2);
        assert_eq!(u.parts[&2], ("t2".into(), "s2".into()));
        assert_eq!(j.job("A").as_deref(), Some("J"));
        assert!(j.was_opening("k3") && !j.was_opening("k2"));
        let mode = std::fs::metadata(&file).unwrap().permissions();
        assert_eq!(
            std::os::unix::fs::PermissionsExt::mode(&mode) & 0o777,
            0o600
        );
        // Compacted: the ended upload and the torn line are gone from the file.
        let text = std::fs::read_to_string(&file).unwrap();
        assert!(!text.contains("U2") && !text.contains("\"n\":3"), "{text}");
        j.finish();
        assert!(!file.exists());
        // Another destination has another file.
        let other = Journal::open(dir.path(), "s3://b/q").unwrap();
        assert!(other.uploads().is_empty());
    }
}
