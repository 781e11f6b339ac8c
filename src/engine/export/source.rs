//! Where an export reads from: the glacierfs mount that holds PATH, the options its daemon was
//! started with, and the tree under PATH as the mount shows it.
//!
//! Export needs no catalog access. The names, sizes, mtimes, archive ids and tree hashes come
//! from the mount itself (readdir and getattr are answered from the catalog, never the network,
//! and `user.glacier.*` attributes carry the rest). Nothing here opens a file of the vault:
//! opening a cold file would start a retrieval into the mount's cache, which an export must not
//! do. Where to reach Glacier (endpoint, region, profile, account) is read from the daemon's own
//! command line in `/proc`, so an export talks to the same service as the mount it reads.

use std::ffi::{OsStr, OsString};
use std::io;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::fs::PermissionsExt;
use std::path::{Component, Path, PathBuf};
use std::time::SystemTime;

use clap::Parser;

use crate::client::get_xattr;
use crate::codec::treehash::{from_hex, Digest};
use crate::config::{AwsArgs, Cli, Command, MountArgs};
use crate::glacier::Tier;

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
    let root = roots
        .iter()
        .filter(|r| path.starts_with(r))
        .max_by_key(|r| r.components().count())
        .ok_or_else(|| SourceError::NotMounted(path.to_owned()))?;
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

/// Mount points of every glacierfs mount in a `/proc/*/mountinfo` text, unescaped. The file
/// system type is `fuse.glacierfs` where the kernel records the subtype; otherwise it is plain
/// `fuse` with `glacierfs` as the source.
pub fn glacierfs_mounts(mountinfo: &str) -> Vec<PathBuf> {
    mountinfo
        .lines()
        .filter_map(|l| {
            let (head, tail) = l.split_once(" - ")?;
            let mut fs = tail.split(' ');
            let ours = matches!(
                (fs.next()?, fs.next()?),
                ("fuse.glacierfs", _) | ("fuse" | "fuseblk", "glacierfs")
            );
            if !ours {
                return None;
            }
            Some(PathBuf::from(unescape_mountinfo(head.split(' ').nth(4)?)))
        })
        .collect()
}

/// The kernel writes space, tab, newline and backslash in mount points as `\ooo` octal.
fn unescape_mountinfo(field: &str) -> OsString {
    let b = field.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let octal = b.get(i + 1..i + 4).filter(|d| {
            b[i] == b'\\' && d.iter().all(|c| (b'0'..=b'7').contains(c)) && d[0] <= b'3'
        });
        match octal {
            Some(d) => {
                out.push((d[0] - b'0') * 64 + (d[1] - b'0') * 8 + (d[2] - b'0'));
                i += 4;
            }
            None => {
                out.push(b[i]);
                i += 1;
            }
        }
    }
    OsString::from_vec(out)
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
    pub tier: Tier,
    /// How often the mount checks running jobs: the export checks as often.
    pub poll_every: std::time::Duration,
}

/// The daemon serving the mount at `mount_root`, found by its command line in `/proc`.
pub fn find_daemon(mount_root: &Path) -> Option<Daemon> {
    let procs = std::fs::read_dir("/proc").ok()?;
    for entry in procs.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        // Processes come and go, and some are not ours to read: skip what cannot be read.
        let Ok(raw) = std::fs::read(entry.path().join("cmdline")) else {
            continue;
        };
        let args = split_cmdline(&raw);
        let cwd = std::fs::read_link(entry.path().join("cwd")).ok();
        if let Some(m) = mount_args_for(&args, cwd.as_deref(), mount_root) {
            return Some(Daemon {
                pid,
                aws: m.aws,
                tier: m.tier,
                poll_every: m.poll_interval,
            });
        }
    }
    None
}

fn split_cmdline(raw: &[u8]) -> Vec<OsString> {
    raw.split(|b| *b == 0)
        .filter(|a| !a.is_empty())
        .map(|a| OsStr::from_bytes(a).to_owned())
        .collect()
}

/// The options of `args` when they are a `glacierfs mount` of `mount_root`. The daemon's
/// command line is parsed with the binary's own parser, so every spelling it accepts
/// (`--region=x`, options after the mount point) is understood. A relative mount point is
/// taken from the daemon's working directory, which a detached daemon keeps.
pub fn mount_args_for(
    args: &[OsString],
    cwd: Option<&Path>,
    mount_root: &Path,
) -> Option<MountArgs> {
    let program = Path::new(args.first()?).file_name()?.to_string_lossy();
    if !program.contains("glacierfs")
        || args.get(1).map(OsString::as_os_str) != Some("mount".as_ref())
    {
        return None;
    }
    let Ok(Cli {
        command: Command::Mount(m),
    }) = Cli::try_parse_from(args)
    else {
        return None;
    };
    let point = match m.mountpoint.is_absolute() {
        true => m.mountpoint.clone(),
        false => cwd?.join(&m.mountpoint),
    };
    let same = normalize(&point) == mount_root
        // Symbolic links on the way: the kernel lists the resolved path.
        || (point.file_name() == mount_root.file_name()
            && std::fs::canonicalize(&point).is_ok_and(|p| p == mount_root));
    same.then_some(m)
}

/// `.` and `..` resolved lexically.
fn normalize(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for c in path.components() {
        match c {
            Component::CurDir => {}
            Component::ParentDir => {
                out.pop();
            }
            other => out.push(other),
        }
    }
    out
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

    fn args(line: &[&str]) -> Vec<OsString> {
        line.iter().map(OsString::from).collect()
    }

    #[test]
    fn mountinfo_lists_glacierfs_mounts_unescaped() {
        let info = "\
36 35 98:0 / /mnt1 rw,noatime master:1 - ext3 /dev/root rw,errors=continue
90 25 0:51 / /tmp/glacierfs-mnt\\040x rw,nosuid,nodev - fuse.glacierfs glacierfs rw,user_id=0
91 25 0:52 / /srv/g rw shared:7 - fuse.glacierfs glacierfs rw,user_id=0
92 25 0:53 / /srv/other rw - fuse.sshfs host: rw
93 25 0:54 / /srv/plain rw,relatime - fuse glacierfs rw,user_id=0,group_id=0
94 25 0:55 / /srv/else rw,relatime - fuse other rw,user_id=0,group_id=0";
        assert_eq!(
            glacierfs_mounts(info),
            vec![
                PathBuf::from("/tmp/glacierfs-mnt x"),
                PathBuf::from("/srv/g"),
                PathBuf::from("/srv/plain")
            ]
        );
        assert_eq!(
            unescape_mountinfo("a\\134b\\011c\\9"),
            OsString::from("a\\b\tc\\9")
        );
    }

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

    #[test]
    fn daemon_command_lines_are_read_with_the_binarys_parser() {
        let root = Path::new("/tmp/mnt");
        let line = args(&[
            "/usr/local/bin/glacierfs",
            "mount",
            "--foreground",
            "--endpoint-url",
            "http://127.0.0.1:9",
            "--region=eu-west-1",
            "--tier",
            "bulk",
            "/tmp/mnt",
            "--account-id",
            "123456789012",
        ]);
        let m = mount_args_for(&line, None, root).expect("a mount of /tmp/mnt");
        assert_eq!(m.aws.endpoint_url.as_deref(), Some("http://127.0.0.1:9"));
        assert_eq!(m.aws.region.as_deref(), Some("eu-west-1"));
        assert_eq!(m.aws.account_id, "123456789012");
        assert_eq!(m.tier, Tier::Bulk);
        assert_eq!(m.aws.profile, None);

        // Relative to the daemon's working directory.
        let rel = args(&["glacierfs", "mount", "--profile", "p", "./x/../mnt"]);
        let m = mount_args_for(&rel, Some(Path::new("/tmp")), root).expect("relative");
        assert_eq!(m.aws.profile.as_deref(), Some("p"));
        assert_eq!(m.tier, Tier::Standard);
        assert!(mount_args_for(&rel, None, root).is_none());

        // Other mounts, other commands, other programs.
        assert!(mount_args_for(&args(&["glacierfs", "mount", "/tmp/other"]), None, root).is_none());
        assert!(mount_args_for(&args(&["glacierfs", "status"]), None, root).is_none());
        assert!(mount_args_for(&args(&["mount", "/dev/sda1", "/tmp/mnt"]), None, root).is_none());
        assert!(mount_args_for(
            &args(&["glacierfs", "mount", "--bogus", "/tmp/mnt"]),
            None,
            root
        )
        .is_none());
        assert_eq!(
            split_cmdline(b"glacierfs\0mount\0/a b\0"),
            args(&["glacierfs", "mount", "/a b"])
        );
    }
}
