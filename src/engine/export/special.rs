//! Symlinks and special files (fifos, sockets, devices) under PATH: entries that are names
//! only, with no data to retrieve. A directory export recreates each with its mode and times
//! (a device needs the privilege mknod(2) asks for; without it, that entry fails and the others
//! go on). A bucket holds objects only, so an S3 export lists them as not exported.

use std::ffi::CString;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use super::dest::Dest;
use super::report::{Reporter, Tally};
use super::survey::failed;

/// What kind of entry it is, with what it needs to be made again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SpecialKind {
    /// A symlink and its target, byte for byte.
    Symlink(PathBuf),
    Fifo,
    Socket,
    CharDevice(u64),
    BlockDevice(u64),
}

/// One symlink or special file under PATH.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Special {
    /// Relative to PATH.
    pub rel: PathBuf,
    pub kind: SpecialKind,
    /// Permission bits, as the mount shows them.
    pub mode: u32,
    /// (seconds, nanoseconds) of the atime and mtime.
    pub atime: (i64, i64),
    pub mtime: (i64, i64),
}

impl Special {
    /// The entry at `full` in the mount, if it is a symlink or special file.
    pub fn of(full: &Path, rel: PathBuf, meta: &std::fs::Metadata) -> io::Result<Option<Special>> {
        let t = meta.file_type();
        let kind = if t.is_symlink() {
            SpecialKind::Symlink(std::fs::read_link(full)?)
        } else if t.is_fifo() {
            SpecialKind::Fifo
        } else if t.is_socket() {
            SpecialKind::Socket
        } else if t.is_char_device() {
            SpecialKind::CharDevice(meta.rdev())
        } else if t.is_block_device() {
            SpecialKind::BlockDevice(meta.rdev())
        } else {
            return Ok(None);
        };
        Ok(Some(Special {
            rel,
            kind,
            mode: meta.mode() & 0o7777,
            atime: (meta.atime(), meta.atime_nsec()),
            mtime: (meta.mtime(), meta.mtime_nsec()),
        }))
    }

    /// What it is, in words, for the report.
    pub fn what(&self) -> &'static str {
        match self.kind {
            SpecialKind::Symlink(_) => "a symlink",
            SpecialKind::Fifo => "a fifo",
            SpecialKind::Socket => "a socket",
            SpecialKind::CharDevice(_) => "a character device",
            SpecialKind::BlockDevice(_) => "a block device",
        }
    }
}

/// Recreates every symlink and special file in DEST (an entry of that name already there that
/// is not a directory is replaced, so a second run puts back what the first did). Each counts
/// as done, or as failed with why.
pub fn recreate(dest: &Dest, specials: &[Special], tally: &mut Tally, report: &mut Reporter) {
    for s in specials {
        match make(&dest.final_path(&s.rel), s) {
            Ok(()) => {
                tally.specials += 1;
                report.file(&s.rel, 0, "recreated", None);
            }
            Err(e) => failed(tally, report, &s.rel, 0, &e.to_string()),
        }
    }
}

/// Why an S3 export leaves each of `specials` out, as the summary lists it.
pub fn not_held(specials: &[Special], tally: &mut Tally, report: &mut Reporter) {
    for s in specials {
        let why = format!("{}: S3 holds objects only", s.what());
        tally
            .unheld
            .push((s.rel.display().to_string(), why.clone()));
        report.file(&s.rel, 0, "not_held", Some(&why));
    }
}

fn c_path(path: &Path) -> io::Result<CString> {
    CString::new(path.as_os_str().as_bytes())
        .map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))
}

fn check(rc: libc::c_int) -> io::Result<()> {
    match rc {
        0 => Ok(()),
        _ => Err(io::Error::last_os_error()),
    }
}

fn make(path: &Path, s: &Special) -> Result<(), MakeError> {
    let at = |source| MakeError {
        path: path.to_owned(),
        source,
    };
    match std::fs::symlink_metadata(path) {
        Ok(m) if !m.is_dir() => std::fs::remove_file(path).map_err(at)?,
        _ => {}
    }
    let c = c_path(path).map_err(at)?;
    let perm = s.mode & 0o7777;
    let (kind, rdev) = match &s.kind {
        SpecialKind::Symlink(target) => {
            std::os::unix::fs::symlink(target, path).map_err(at)?;
            return set_times(&c, s, libc::AT_SYMLINK_NOFOLLOW).map_err(at);
        }
        SpecialKind::Fifo => (libc::S_IFIFO, 0),
        SpecialKind::Socket => (libc::S_IFSOCK, 0),
        SpecialKind::CharDevice(d) => (libc::S_IFCHR, *d),
        SpecialKind::BlockDevice(d) => (libc::S_IFBLK, *d),
    };
    // SAFETY: `c` is a valid C string; mknod takes plain integers besides.
    check(unsafe { libc::mknod(c.as_ptr(), kind | perm, rdev as libc::dev_t) }).map_err(at)?;
    // mknod applied the umask: the mode is set again as the mount shows it.
    // SAFETY: as above.
    check(unsafe { libc::chmod(c.as_ptr(), perm) }).map_err(at)?;
    set_times(&c, s, 0).map_err(at)
}

/// utimensat(2) of both times, to the nanosecond.
fn set_times(c: &CString, s: &Special, flags: libc::c_int) -> io::Result<()> {
    let ts = |(sec, nsec): (i64, i64)| libc::timespec {
        tv_sec: sec as libc::time_t,
        tv_nsec: nsec as libc::c_long,
    };
    let times = [ts(s.atime), ts(s.mtime)];
    // SAFETY: `c` is a valid C string and `times` two timespecs that outlive the call.
    check(unsafe { libc::utimensat(libc::AT_FDCWD, c.as_ptr(), times.as_ptr(), flags) })
}

/// Recreating one entry failed.
#[derive(Debug, thiserror::Error)]
#[error("{}: {source}", path.display())]
struct MakeError {
    path: PathBuf,
    source: io::Error,
}
