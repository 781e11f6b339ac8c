//! Where an export writes: DEST, the temporary files data goes into before it is trusted, and
//! the small state directory that lets an interrupted export resume.
//!
//! The rules that keep DEST honest:
//! - Data goes into `.NAME.glacierfs-part` beside its final name and is renamed into place only
//!   after the whole file matched the archive's tree hash, with its mtime and mode already set.
//!   So a final name never holds partial or unverified data, whenever it is looked at.
//! - `DEST/.glacierfs-export/` (0700) holds one record per archive being downloaded: the job
//!   used and the verified prefix of its temporary file, with that prefix's leaf hashes. A
//!   record is written atomically (temporary file, fsync, rename) after the data it vouches
//!   for is on the disk, and it is checked against the file again before it is trusted. The
//!   directory also holds the lock that keeps two exports out of one DEST, and it is removed
//!   once an export has finished with every file in place.

use std::fs::{DirBuilder, File, OpenOptions};
use std::io::{self, Read};
use std::os::fd::AsRawFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::SystemTime;

use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

use crate::codec::treehash::{from_hex, to_hex, tree_hash_file, Digest, MIB};
use crate::engine::transfer::download::{DownloadJournal, JournalError, Resume};

/// The state directory's name, directly under DEST.
pub const STATE_DIR: &str = ".glacierfs-export";
const PART_SUFFIX: &str = ".glacierfs-part";
const LOCK_FILE: &str = "lock";
/// Longest file name most Linux file systems take.
const NAME_MAX: usize = 255;

#[derive(Debug, thiserror::Error)]
pub enum DestError {
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: io::Error },
    #[error("another export into {0} is running")]
    Busy(PathBuf),
    #[error("{0} is a directory, where the vault has a file")]
    NotAFile(PathBuf),
    #[error("{path}: the copy does not match the archive's tree hash")]
    Mismatch { path: PathBuf },
    #[error("{path}: copied {got} bytes, the file has {want}")]
    Size { path: PathBuf, got: u64, want: u64 },
    #[error(
        "{first} and {second} would be one file in the destination ({why}); rename one in the \
         vault, or export them one at a time"
    )]
    NameClash {
        first: PathBuf,
        second: PathBuf,
        why: &'static str,
    },
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> DestError + '_ {
    move |source| DestError::Io {
        path: path.to_owned(),
        source,
    }
}

/// DEST, with its state directory created and locked.
#[derive(Debug)]
pub struct Dest {
    root: PathBuf,
    state: PathBuf,
    /// Holds the exclusive lock for as long as the export runs.
    _lock: File,
}

impl Dest {
    /// Creates DEST and its state directory, and takes the lock.
    pub fn open(root: &Path) -> Result<Dest, DestError> {
        std::fs::create_dir_all(root).map_err(io_err(root))?;
        let state = root.join(STATE_DIR);
        match DirBuilder::new().mode(0o700).create(&state) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(io_err(&state)(e)),
        }
        let lock_path = state.join(LOCK_FILE);
        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .mode(0o600)
            .open(&lock_path)
            .map_err(io_err(&lock_path))?;
        // SAFETY: flock on a descriptor this function owns.
        if unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
            let e = io::Error::last_os_error();
            return Err(match e.raw_os_error() {
                Some(libc::EWOULDBLOCK) => DestError::Busy(root.to_owned()),
                _ => io_err(&lock_path)(e),
            });
        }
        Ok(Dest {
            root: root.to_owned(),
            state,
            _lock: lock,
        })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Where the file at `rel` (relative to PATH) ends up.
    pub fn final_path(&self, rel: &Path) -> PathBuf {
        self.root.join(rel)
    }

    /// Where its data is written until it is verified.
    pub fn temp_path(&self, rel: &Path) -> PathBuf {
        temp_beside(&self.final_path(rel))
    }

    /// The record of the download of `archive_id`.
    pub fn record(&self, archive_id: &str) -> RecordFile {
        let key = hex::encode(&Sha256::digest(archive_id.as_bytes())[..12]);
        RecordFile {
            path: self.state.join(format!("{key}.json")),
        }
    }

    /// Refuses, before anything is written, a listing in which two entries would land on one
    /// name in DEST: a file whose temporary name is another entry's final name (`a` and
    /// `.a.glacierfs-part`: the temporary file would overwrite the other, and placing the
    /// other would destroy the download), or, when DEST ignores case, names that differ only
    /// in case (the second would overwrite the first).
    pub fn check_names<'a>(
        &self,
        files: impl Iterator<Item = &'a Path>,
        dirs: impl Iterator<Item = &'a Path>,
    ) -> Result<(), DestError> {
        let ignores_case = self.ignores_case()?;
        find_clash(files, dirs, ignores_case).map_or(Ok(()), Err)
    }

    /// Whether DEST's file system ignores case: a probe file in the state directory, looked
    /// up again by its name in capitals.
    fn ignores_case(&self) -> Result<bool, DestError> {
        let probe = self.state.join("case-probe");
        File::create(&probe).map_err(io_err(&probe))?;
        let other = self.state.join("CASE-PROBE");
        let same = match (std::fs::metadata(&probe), std::fs::metadata(&other)) {
            (Ok(a), Ok(b)) => a.dev() == b.dev() && a.ino() == b.ino(),
            _ => false,
        };
        let _ = std::fs::remove_file(&probe);
        Ok(same)
    }

    /// Removes the state directory: everything is in place, nothing is left to resume.
    pub fn finish(self) -> Result<(), DestError> {
        std::fs::remove_dir_all(&self.state).map_err(io_err(&self.state))
    }
}

/// `.NAME.glacierfs-part` beside `path`, or a hashed name when that would be too long.
pub fn temp_beside(path: &Path) -> PathBuf {
    let name = path.file_name().map(|n| n.as_bytes()).unwrap_or_default();
    let mut temp = Vec::with_capacity(name.len() + 16);
    if name.len() + 1 + PART_SUFFIX.len() <= NAME_MAX {
        temp.push(b'.');
        temp.extend_from_slice(name);
    } else {
        temp.extend_from_slice(b".long-");
        temp.extend_from_slice(hex::encode(&Sha256::digest(name)[..8]).as_bytes());
    }
    temp.extend_from_slice(PART_SUFFIX.as_bytes());
    path.with_file_name(std::ffi::OsStr::from_bytes(&temp))
}

/// The first pair of entries that would land on one name in DEST (see [`Dest::check_names`]).
fn find_clash<'a>(
    files: impl Iterator<Item = &'a Path>,
    dirs: impl Iterator<Item = &'a Path>,
    ignores_case: bool,
) -> Option<DestError> {
    let files: Vec<&Path> = files.collect();
    let all: Vec<&Path> = files.iter().copied().chain(dirs).collect();
    // Every entry by its name as DEST would see it; the first to claim a name keeps it.
    let key = |p: &Path| -> Vec<u8> {
        match ignores_case {
            true => p.to_string_lossy().to_lowercase().into_bytes(),
            false => p.as_os_str().as_bytes().to_vec(),
        }
    };
    let mut seen: std::collections::HashMap<Vec<u8>, &Path> = std::collections::HashMap::new();
    for p in &all {
        if let Some(first) = seen.insert(key(p), p) {
            return Some(DestError::NameClash {
                first: first.to_owned(),
                second: p.to_path_buf(),
                why: "the destination ignores case",
            });
        }
    }
    for f in &files {
        let temp = temp_beside(f);
        if let Some(other) = seen.get(&key(&temp)) {
            return Some(DestError::NameClash {
                first: f.to_path_buf(),
                second: other.to_path_buf(),
                why: "the second is the first's temporary name while it is downloaded",
            });
        }
    }
    None
}

/// Whether `path` already holds exactly this content (right size and tree hash).
pub fn holds(path: &Path, size: u64, tree_hash: Option<&Digest>) -> Result<bool, DestError> {
    let meta = match std::fs::symlink_metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(false),
        Err(e) => return Err(io_err(path)(e)),
    };
    if meta.is_dir() {
        return Err(DestError::NotAFile(path.to_owned()));
    }
    if !meta.is_file() || meta.len() != size {
        return Ok(false);
    }
    match tree_hash {
        None => Ok(true),
        Some(want) => Ok(tree_hash_file(path).map_err(io_err(path))? == *want),
    }
}

/// Mode bits for an exported file: the mount's, but always readable and writable by its owner,
/// so a later run can check it and replace it.
fn file_mode(mode: u32) -> u32 {
    (mode & 0o777) | 0o600
}

/// Sets the times and mode of a file already in place (a file found complete in DEST).
pub fn touch(path: &Path, mtime: SystemTime, mode: u32) -> Result<(), DestError> {
    // Read-only is enough: setting times and mode needs ownership, not write access, and a
    // file copied from a read-only source may not be writable.
    let f = OpenOptions::new()
        .read(true)
        .open(path)
        .map_err(io_err(path))?;
    f.set_modified(mtime).map_err(io_err(path))?;
    f.set_permissions(std::fs::Permissions::from_mode(file_mode(mode)))
        .map_err(io_err(path))
}

/// Gives `temp` its mtime and mode, then renames it to `dest`, durably.
pub fn place(temp: &Path, dest: &Path, mtime: SystemTime, mode: u32) -> Result<(), DestError> {
    touch(temp, mtime, mode)?;
    std::fs::rename(temp, dest).map_err(io_err(dest))?;
    // The rename is durable once the directory is; a crash must not bring the old name back
    // with the state record already gone.
    let dir = dest.parent().unwrap_or(Path::new("."));
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_err(dir))
}

/// Copies a verified file to `temp` and checks the copy before it can be placed.
pub fn copy_verified(
    from: &Path,
    temp: &Path,
    size: u64,
    tree_hash: Option<&Digest>,
) -> Result<(), DestError> {
    let got = std::fs::copy(from, temp).map_err(io_err(from))?;
    let checked = if got != size {
        Err(DestError::Size {
            path: from.to_owned(),
            got,
            want: size,
        })
    } else {
        File::open(temp)
            .and_then(|f| f.sync_all())
            .map_err(io_err(temp))?;
        match holds(temp, size, tree_hash)? {
            true => Ok(()),
            false => Err(DestError::Mismatch {
                path: temp.to_owned(),
            }),
        }
    };
    if checked.is_err() {
        let _ = std::fs::remove_file(temp);
    }
    checked
}

/// Creates an empty file at `dest` (through a temporary name, like every other file).
pub fn create_empty(dest: &Path, mtime: SystemTime, mode: u32) -> Result<(), DestError> {
    let temp = temp_beside(dest);
    File::create(&temp).map_err(io_err(&temp))?;
    place(&temp, dest, mtime, mode)
}

/// What a record says about one archive's download.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    pub archive_id: String,
    pub size: u64,
    /// The retrieval job last used for it.
    pub job_id: Option<String>,
    /// Bytes `[0, verified)` of the temporary file are verified...
    pub verified: u64,
    /// ...and these are their 1 MiB leaf hashes, concatenated hex.
    pub leaves: String,
}

/// One record's file in the state directory.
#[derive(Debug, Clone)]
pub struct RecordFile {
    path: PathBuf,
}

impl RecordFile {
    /// The record, if there is a readable one for this archive.
    pub fn load(&self, archive_id: &str) -> Option<Record> {
        let text = std::fs::read(&self.path).ok()?;
        let rec: Record = serde_json::from_slice(&text).ok()?;
        (rec.archive_id == archive_id).then_some(rec)
    }

    /// Replaces the record atomically; `durable` also waits for the disk.
    pub fn save(&self, rec: &Record, durable: bool) -> io::Result<()> {
        let tmp = self.path.with_extension("json.tmp");
        let body = serde_json::to_vec(rec).map_err(io::Error::other)?;
        let mut f = OpenOptions::new()
            .create(true)
            .truncate(true)
            .write(true)
            .mode(0o600)
            .open(&tmp)?;
        io::Write::write_all(&mut f, &body)?;
        if durable {
            f.sync_data()?;
        }
        std::fs::rename(&tmp, &self.path)
    }

    pub fn remove(&self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// The journal the download engine writes through, for one archive.
#[derive(Debug)]
pub struct Journal {
    file: RecordFile,
    rec: Mutex<Record>,
}

impl Journal {
    pub fn new(file: RecordFile, rec: Record) -> Journal {
        Journal {
            file,
            rec: Mutex::new(rec),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Record> {
        crate::locks::lock(&self.rec)
    }

    /// Records the job now used for this archive. Not synced: losing it only loses the count of
    /// re-requests after a crash, and ListJobs finds the job anyway.
    pub fn set_job(&self, job_id: &str) -> io::Result<()> {
        let mut rec = self.lock();
        rec.job_id = Some(job_id.to_owned());
        self.file.save(&rec, false)
    }

    /// Where the next download starts, as recorded.
    pub fn resume(&self) -> Resume {
        let rec = self.lock();
        Resume {
            verified: rec.verified,
            leaves: parse_leaves(&rec.leaves).unwrap_or_default(),
        }
    }

    /// The record is no longer needed: the file is in place, or given up.
    pub fn remove(&self) {
        self.file.remove();
    }
}

impl DownloadJournal for Journal {
    fn verified(&self, upto: u64, leaves: &[Digest]) -> Result<(), JournalError> {
        let mut rec = self.lock();
        rec.verified = upto;
        rec.leaves = leaves.iter().map(to_hex).collect();
        Ok(self.file.save(&rec, true)?)
    }
}

fn parse_leaves(hexes: &str) -> Option<Vec<Digest>> {
    if !hexes.len().is_multiple_of(64) {
        return None;
    }
    (0..hexes.len() / 64)
        .map(|i| from_hex(hexes.get(i * 64..(i + 1) * 64)?))
        .collect()
}

/// What of a record can be trusted: its prefix, if the temporary file still holds exactly
/// those bytes (the file may have been removed, truncated or written by anything since).
pub fn trusted_prefix(rec: &Record, temp: &Path, size: u64) -> Resume {
    let Some(leaves) = parse_leaves(&rec.leaves) else {
        return Resume::default();
    };
    let fits = rec.size == size
        && rec.verified <= size
        && leaves.len() as u64 == rec.verified.div_ceil(MIB)
        && (rec.verified.is_multiple_of(MIB) || rec.verified == size);
    if rec.verified == 0 || !fits {
        return Resume::default();
    }
    match std::fs::metadata(temp) {
        Ok(m) if m.is_file() && m.len() == size => {}
        _ => return Resume::default(),
    }
    match leaves_of(temp, rec.verified) {
        Ok(found) if found == leaves => Resume {
            verified: rec.verified,
            leaves,
        },
        _ => Resume::default(),
    }
}

/// The 1 MiB leaf hashes of the first `len` bytes of a file.
fn leaves_of(path: &Path, len: u64) -> io::Result<Vec<Digest>> {
    let mut f = File::open(path)?.take(len);
    let mut buf = vec![0u8; MIB as usize];
    let mut out = Vec::new();
    loop {
        let mut filled = 0;
        while filled < buf.len() {
            match f.read(&mut buf[filled..])? {
                0 => break,
                n => filled += n,
            }
        }
        if filled == 0 {
            break;
        }
        out.push(Sha256::digest(&buf[..filled]).into());
        if filled < buf.len() {
            break;
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::treehash::leaf_hashes;

    fn clash(files: &[&str], dirs: &[&str], ignores_case: bool) -> Option<String> {
        find_clash(
            files.iter().map(Path::new),
            dirs.iter().map(Path::new),
            ignores_case,
        )
        .map(|e| e.to_string())
    }

    #[test]
    fn a_name_that_is_another_files_temporary_name_is_refused() {
        let e = clash(&["a", ".a.glacierfs-part"], &[], false).unwrap();
        assert!(
            e.starts_with("a and .a.glacierfs-part would be one file"),
            "{e}"
        );
        assert!(clash(&["d/x", "d/.x.glacierfs-part"], &[], false).is_some());
        // A directory of that name is hit just the same.
        assert!(clash(&["d/x"], &["d/.x.glacierfs-part"], false).is_some());
        // Temporary names in other directories, or of directories, are no clash.
        assert_eq!(clash(&["a", "b/.a.glacierfs-part"], &["c"], false), None);
        assert_eq!(clash(&["b/f"], &["a", ".a.glacierfs-part"], false), None);
        let long = "x".repeat(250);
        let long_temp = temp_beside(Path::new(&long));
        assert!(clash(&[&long, long_temp.to_str().unwrap()], &[], false).is_some());
    }

    #[test]
    fn names_differing_only_in_case_are_refused_where_case_is_ignored() {
        assert_eq!(clash(&["Photo.JPG", "photo.jpg"], &["D", "d"], false), None);
        let e = clash(&["Photo.JPG", "photo.jpg"], &[], true).unwrap();
        assert!(e.contains("ignores case"), "{e}");
        assert!(clash(&["D/a", "d/b"], &["D", "d"], true).is_some());
        assert!(clash(&["a", ".A.glacierfs-part"], &[], true).is_some());
        assert_eq!(clash(&["a", "b"], &["c"], true), None);
    }

    #[test]
    fn this_file_system_is_probed_as_case_sensitive() {
        // Linux file systems here keep case; a DEST that ignores it is told apart by the probe.
        let dir = tempfile::tempdir().unwrap();
        let dest = Dest::open(dir.path()).unwrap();
        assert!(!dest.ignores_case().unwrap());
        assert!(!dest.state.join("case-probe").exists());
        let files = [Path::new("A"), Path::new("a")];
        assert!(dest
            .check_names(files.into_iter(), std::iter::empty())
            .is_ok());
        let files = [Path::new("a"), Path::new(".a.glacierfs-part")];
        assert!(dest
            .check_names(files.into_iter(), std::iter::empty())
            .is_err());
    }

    #[test]
    fn temporary_names_sit_beside_and_stay_short() {
        assert_eq!(
            temp_beside(Path::new("/d/a/photo.jpg")),
            PathBuf::from("/d/a/.photo.jpg.glacierfs-part")
        );
        let long = "x".repeat(250);
        let t = temp_beside(&Path::new("/d").join(&long));
        let name = t.file_name().unwrap().len();
        assert!(name <= NAME_MAX, "{name}");
        assert!(t.starts_with("/d"));
        assert_ne!(t, temp_beside(&Path::new("/d").join("y".repeat(250))));
    }

    #[test]
    fn records_are_trusted_only_as_far_as_the_file_agrees() {
        let dir = tempfile::tempdir().unwrap();
        let dest = Dest::open(dir.path()).unwrap();
        assert!(matches!(Dest::open(dir.path()), Err(DestError::Busy(_))));
        let size = 3 * MIB + 5;
        let data: Vec<u8> = (0..size).map(|i| (i % 251) as u8).collect();
        let temp = dest.temp_path(Path::new("f"));
        std::fs::write(&temp, &data).unwrap();
        let leaves = leaf_hashes(&data[..2 * MIB as usize]);
        let journal = Journal::new(
            dest.record("A"),
            Record {
                archive_id: "A".into(),
                size,
                ..Record::default()
            },
        );
        journal.verified(2 * MIB, &leaves).unwrap();
        journal.set_job("J").unwrap();
        let rec = dest.record("A").load("A").expect("saved");
        assert_eq!(rec.job_id.as_deref(), Some("J"));
        assert!(dest.record("A").load("B").is_none());
        let r = trusted_prefix(&rec, &temp, size);
        assert_eq!((r.verified, r.leaves), (2 * MIB, leaves));

        // Changed bytes inside the prefix, a short file, or another size: start over.
        let mut bad = data.clone();
        bad[MIB as usize + 7] ^= 1;
        std::fs::write(&temp, &bad).unwrap();
        assert_eq!(trusted_prefix(&rec, &temp, size), Resume::default());
        std::fs::write(&temp, &data[..100]).unwrap();
        assert_eq!(trusted_prefix(&rec, &temp, size), Resume::default());
        std::fs::write(&temp, &data).unwrap();
        assert_eq!(trusted_prefix(&rec, &temp, size + 1), Resume::default());

        journal.remove();
        assert!(dest.record("A").load("A").is_none());
        dest.finish().unwrap();
        assert!(!dir.path().join(STATE_DIR).exists());
    }

    #[test]
    fn files_are_placed_with_times_and_checked_by_tree_hash() {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("src");
        std::fs::write(&src, b"hello world").unwrap();
        let hash = crate::codec::treehash::tree_hash(b"hello world");
        assert!(holds(&src, 11, Some(&hash)).unwrap());
        assert!(!holds(&src, 11, Some(&[0; 32])).unwrap());
        assert!(!holds(&src, 12, None).unwrap());
        assert!(!holds(&dir.path().join("none"), 1, None).unwrap());
        assert!(matches!(
            holds(dir.path(), 1, None),
            Err(DestError::NotAFile(_))
        ));

        let out = dir.path().join("out");
        let temp = temp_beside(&out);
        copy_verified(&src, &temp, 11, Some(&hash)).unwrap();
        let when = SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1_600_000_000);
        place(&temp, &out, when, 0o640).unwrap();
        let meta = std::fs::metadata(&out).unwrap();
        assert_eq!(meta.modified().unwrap(), when);
        assert_eq!(meta.permissions().mode() & 0o777, 0o640);
        assert!(!temp.exists());
        assert!(matches!(
            copy_verified(&src, &temp, 11, Some(&[1; 32])),
            Err(DestError::Mismatch { .. })
        ));
        assert!(!temp.exists(), "a bad copy is removed");

        let empty = dir.path().join("empty");
        create_empty(&empty, when, 0o600).unwrap();
        assert_eq!(std::fs::metadata(&empty).unwrap().len(), 0);
    }
}
