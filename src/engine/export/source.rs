//! Where an export reads from: the glacierfs mount that holds PATH, the options its daemon was
//! started with, and the tree under PATH as the mount shows it.
//!
//! Export needs no catalog access. The names, sizes, mtimes, archive ids and tree hashes come
//! from the mount itself (readdir and getattr are answered from the catalog, never the network,
//! and `user.glacier.*` attributes carry the rest). Nothing here opens a file of the vault:
//! opening a cold file would start a retrieval into the mount's cache, which an export must not
//! do. Where to reach Glacier (endpoint, region, profile, account) is read from the daemon's own
//! command line in `/proc`, so an export talks to the same service as the mount it reads.

use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::{Component, Path, PathBuf};
use std::time::SystemTime;

use crate::client::{get_xattr, glacierfs_mounts, innermost_root};
use crate::codec::treehash::{from_hex, Digest};
use crate::config::{AwsArgs, Tiers};

#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: io::Error },
    #[error("{0} is not inside a glacierfs mount")]
    NotMounted(PathBuf),
    #[error("{0} is the root of a glacierfs mount; name a vault, or a directory inside one")]
    MountRoot(PathBuf),
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> SourceError + '_ {
    move |source| SourceError::Io {
        path: path.to_owned(),
        source,
    }
}

/// PATH, placed inside its mount.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Located {
    /// The root of the glacierfs mount.
    pub mount_root: PathBuf,
    /// The vault: the first component below the mount root.
    pub vault: String,
    /// PATH, canonical.
    pub path: PathBuf,
}

/// Finds the glacierfs mount that holds `path`, and the vault it is in.
pub fn locate(path: &Path) -> Result<Located, SourceError> {
    let canonical = std::fs::canonicalize(path).map_err(io_err(path))?;
    let info = std::fs::read_to_string("/proc/self/mountinfo")
        .map_err(io_err(Path::new("/proc/self/mountinfo")))?;
    place(&canonical, &glacierfs_mounts(&info))
}

/// `path` (canonical) placed in the innermost of `roots` that holds it.
fn place(path: &Path, roots: &[PathBuf]) -> Result<Located, SourceError> {
    let root =
        innermost_root(path, roots).ok_or_else(|| SourceError::NotMounted(path.to_owned()))?;
    let vault = match path
        .strip_prefix(root)
        .ok()
        .and_then(|r| r.components().next())
    {
        Some(Component::Normal(v)) => v.to_string_lossy().into_owned(),
        _ => return Err(SourceError::MountRoot(path.to_owned())),
    };
    Ok(Located {
        mount_root: root.clone(),
        vault,
        path: path.to_owned(),
    })
}

/// The glacierfs mount that `path` (which need not exist yet) would be inside, if any.
pub fn inside_a_mount(path: &Path) -> Option<PathBuf> {
    let absolute = std::env::current_dir().ok()?.join(path);
    // The nearest existing ancestor, resolved: that is where a new directory would go.
    let existing = absolute
        .ancestors()
        .find_map(|a| std::fs::canonicalize(a).ok())?;
    let info = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    glacierfs_mounts(&info)
        .into_iter()
        .find(|root| existing.starts_with(root))
}

/// How the mount's daemon reaches Glacier, as its command line says.
#[derive(Debug, Clone)]
pub struct Daemon {
    pub pid: u32,
    pub aws: AwsArgs,
    pub tier: Tiers,
    /// How often the mount checks running jobs: the export checks as often.
    pub poll_every: std::time::Duration,
}

/// The daemon serving the mount at `mount_root`, found by its command line in `/proc`.
pub fn find_daemon(mount_root: &Path) -> Option<Daemon> {
    crate::client::find_daemon(mount_root).map(|d| Daemon {
        pid: d.pid,
        aws: d.args.aws,
        tier: d.args.tier,
        poll_every: d.args.poll_interval,
    })
}

/// Where a file's bytes come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    /// An empty file: it lives in the catalog only.
    Empty,
    /// An archive in Glacier.
    Archive {
        archive_id: String,
        tree_hash: Digest,
    },
    /// Data only the mount has (staged, or still uploading): copied through the mount.
    Local,
    /// Nothing to export it from, and why.
    Unusable(String),
}

/// One file under PATH.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileEntry {
    /// Relative to PATH.
    pub rel: PathBuf,
    /// Where it is in the mount.
    pub path: PathBuf,
    pub size: u64,
    pub mtime: SystemTime,
    /// Permission bits as the mount shows them.
    pub mode: u32,
    pub origin: Origin,
}

/// One directory under PATH (PATH itself is the empty relative path).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirEntry {
    pub rel: PathBuf,
    pub mtime: Option<SystemTime>,
}

/// The tree under PATH, parents before children, names in byte order.
#[derive(Debug, Clone, Default)]
pub struct Listing {
    pub dirs: Vec<DirEntry>,
    pub files: Vec<FileEntry>,
    /// Symlinks and special files: names only, nothing to retrieve.
    pub specials: Vec<super::special::Special>,
}

/// Lists everything under `path` through the mount. A PATH that is a file is a tree of one.
pub fn list(path: &Path) -> Result<Listing, SourceError> {
    let meta = std::fs::metadata(path).map_err(io_err(path))?;
    let mut out = Listing::default();
    if meta.is_dir() {
        walk(path, Path::new(""), meta.modified().ok(), &mut out)?;
    } else {
        let name = path.file_name().map(PathBuf::from).unwrap_or_default();
        out.files.push(file_entry(path, name, &meta));
    }
    Ok(out)
}

fn walk(
    dir: &Path,
    rel: &Path,
    mtime: Option<SystemTime>,
    out: &mut Listing,
) -> Result<(), SourceError> {
    out.dirs.push(DirEntry {
        rel: rel.to_owned(),
        mtime,
    });
    let mut entries = Vec::new();
    for e in std::fs::read_dir(dir).map_err(io_err(dir))? {
        entries.push(e.map_err(io_err(dir))?.file_name());
    }
    entries.sort_by(|a, b| a.as_bytes().cmp(b.as_bytes()));
    for name in entries {
        let full = dir.join(&name);
        let meta = std::fs::symlink_metadata(&full).map_err(io_err(&full))?;
        if meta.is_dir() {
            walk(&full, &rel.join(&name), meta.modified().ok(), out)?;
        } else if meta.is_file() {
            out.files.push(file_entry(&full, rel.join(&name), &meta));
        } else if let Some(s) =
            super::special::Special::of(&full, rel.join(&name), &meta).map_err(io_err(&full))?
        {
            out.specials.push(s);
        }
    }
    Ok(())
}

fn file_entry(full: &Path, rel: PathBuf, meta: &std::fs::Metadata) -> FileEntry {
    let size = meta.len();
    let origin = if size == 0 {
        Origin::Empty
    } else {
        origin_of(full)
    };
    FileEntry {
        rel,
        path: full.to_owned(),
        size,
        mtime: meta.modified().unwrap_or(SystemTime::UNIX_EPOCH),
        mode: meta.permissions().mode() & 0o777,
        origin,
    }
}

/// What the mount knows of a file's archive besides its id and hash, for an object's
/// metadata.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ArchiveDetails {
    pub created: Option<String>,
    pub description: Option<String>,
}

pub fn archive_details(full: &Path) -> ArchiveDetails {
    ArchiveDetails {
        created: get_xattr(full, "user.glacier.creation_date"),
        description: get_xattr(full, "user.glacier.description"),
    }
}

fn origin_of(full: &Path) -> Origin {
    let state = get_xattr(full, "user.glacier.state");
    if matches!(state.as_deref(), Some("staged" | "uploading")) {
        // The archive, if any, is an older version: the current bytes are local.
        return Origin::Local;
    }
    match get_xattr(full, "user.glacier.archive_id") {
        None => Origin::Local,
        Some(archive_id) => match get_xattr(full, "user.glacier.tree_hash")
            .as_deref()
            .and_then(from_hex)
        {
            Some(tree_hash) => Origin::Archive {
                archive_id,
                tree_hash,
            },
            None => Origin::Unusable(
                "the mount knows no tree hash to verify the archive against".into(),
            ),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_are_placed_in_the_innermost_mount_and_vault() {
        let roots = [PathBuf::from("/srv"), PathBuf::from("/srv/g")];
        let at = place(Path::new("/srv/g/photos/2019"), &roots).unwrap();
        assert_eq!(at.mount_root, PathBuf::from("/srv/g"));
        assert_eq!(at.vault, "photos");
        assert!(matches!(
            place(Path::new("/srv/g"), &roots),
            Err(SourceError::MountRoot(_))
        ));
        assert!(matches!(
            place(Path::new("/home/x"), &roots),
            Err(SourceError::NotMounted(_))
        ));
    }
}
