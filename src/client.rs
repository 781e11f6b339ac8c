//! How another process reaches a running mount: finding glacierfs mounts in the kernel's mount
//! table, the daemon that serves one and the options it was started with (read from its command
//! line in `/proc` with the binary's own parser: its endpoint, its cache directory), and the
//! extended-attribute calls through which commands ask a mount for work (`user.glacier.sync`,
//! `user.glacier.retrieve`) and read its answers. No socket or daemon protocol is needed, and
//! the file system's own permissions apply.

use std::ffi::{CString, OsStr, OsString};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::{Component, Path, PathBuf};

use clap::Parser;

use crate::config::{Cli, Command, MountArgs};

/// Why a mount refused a request made through an extended attribute.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("{}: the path holds a NUL byte", .0.display())]
    Nul(PathBuf),
    #[error("{}: not inside a glacierfs mount", .0.display())]
    NotAMount(PathBuf),
    #[error("{}: {source}", path.display())]
    Refused {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{}: no answer from the mount in {}s; is its daemon stuck?", .path.display(), .after.as_secs())]
    Unanswered {
        path: PathBuf,
        after: std::time::Duration,
    },
}

/// Sets an extended attribute; the error says which path refused it.
pub fn set_xattr(path: &Path, name: &str, value: &[u8]) -> Result<(), ClientError> {
    let p =
        CString::new(path.as_os_str().as_bytes()).map_err(|_| ClientError::Nul(path.to_owned()))?;
    let n = CString::new(name).map_err(|_| ClientError::Nul(path.to_owned()))?;
    // SAFETY: valid C strings and a buffer of the stated length.
    let rc = unsafe {
        libc::setxattr(
            p.as_ptr(),
            n.as_ptr(),
            value.as_ptr().cast(),
            value.len(),
            0,
        )
    };
    if rc == 0 {
        return Ok(());
    }
    let err = std::io::Error::last_os_error();
    Err(match err.raw_os_error() {
        Some(libc::ENOTSUP) => ClientError::NotAMount(path.to_owned()),
        _ => ClientError::Refused {
            path: path.to_owned(),
            source: err,
        },
    })
}

/// Reads an extended attribute as text; None if the file has none by that name.
pub fn get_xattr(path: &Path, name: &str) -> Option<String> {
    let p = CString::new(path.as_os_str().as_bytes()).ok()?;
    let n = CString::new(name).ok()?;
    let mut buf = vec![0u8; 256];
    // SAFETY: valid C strings and a buffer of the stated length.
    let len = unsafe { libc::getxattr(p.as_ptr(), n.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
    if len < 0 {
        return None;
    }
    buf.truncate(len as usize);
    String::from_utf8(buf).ok()
}

/// The entries of the `.jobs` file in `dir` (a mount's root or a vault), one JSON object per
/// line. Read on a thread of its own and given up after `wait`: a command that only reports
/// must not hang on a mount whose daemon does not answer.
pub fn read_jobs(
    dir: &Path,
    wait: std::time::Duration,
) -> Result<Vec<serde_json::Value>, ClientError> {
    let path = dir.join(".jobs");
    let (tx, rx) = std::sync::mpsc::channel();
    let reading = path.clone();
    std::thread::spawn(move || {
        let _ = tx.send(std::fs::read(&reading));
    });
    let text = match rx.recv_timeout(wait) {
        Ok(Ok(text)) => text,
        Ok(Err(source)) => return Err(ClientError::Refused { path, source }),
        Err(_) => return Err(ClientError::Unanswered { path, after: wait }),
    };
    Ok(text
        .split(|b| *b == b'\n')
        .filter_map(|line| serde_json::from_slice(line).ok())
        .collect())
}

/// One glacierfs mount in the kernel's mount table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountEntry {
    /// The mount point, unescaped.
    pub root: PathBuf,
    /// The user who mounted it (FUSE's `user_id` option), when the table says.
    pub user_id: Option<u32>,
}

/// Every glacierfs mount of this machine, from `/proc/self/mountinfo`.
pub fn mounts() -> Vec<MountEntry> {
    mounts_in(&std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default())
}

/// The roots of every glacierfs mount of this machine.
pub fn mount_roots() -> Vec<PathBuf> {
    mounts().into_iter().map(|m| m.root).collect()
}

/// The glacierfs mounts of the user running this process.
pub fn my_mounts() -> Vec<MountEntry> {
    // SAFETY: getuid has no preconditions.
    let me = unsafe { libc::getuid() };
    mounts()
        .into_iter()
        .filter(|m| m.user_id.is_none_or(|u| u == me))
        .collect()
}

/// Mount points of every glacierfs mount in a `/proc/*/mountinfo` text, unescaped.
pub fn glacierfs_mounts(mountinfo: &str) -> Vec<PathBuf> {
    mounts_in(mountinfo).into_iter().map(|m| m.root).collect()
}

/// glacierfs mounts in a mountinfo text. After the " - " separator come the file system type,
/// the source and the super-block options; glacierfs shows as type `fuse.glacierfs` where the
/// kernel records the subtype, otherwise as plain `fuse` with `glacierfs` as the source.
fn mounts_in(mountinfo: &str) -> Vec<MountEntry> {
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
            let user_id = fs.next().and_then(|opts| {
                opts.split(',')
                    .find_map(|o| o.strip_prefix("user_id="))
                    .and_then(|u| u.parse().ok())
            });
            Some(MountEntry {
                root: PathBuf::from(unescape_mountinfo(head.split(' ').nth(4)?)),
                user_id,
            })
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

/// The innermost of `roots` that holds `path` (canonical).
pub fn innermost_root<'a>(path: &Path, roots: &'a [PathBuf]) -> Option<&'a PathBuf> {
    roots
        .iter()
        .filter(|r| path.starts_with(r))
        .max_by_key(|r| r.components().count())
}

/// The root of the glacierfs mount that holds `path` (a mount point or anything inside one).
pub fn mount_of(path: &Path) -> Result<PathBuf, ClientError> {
    let canonical = std::fs::canonicalize(path).map_err(|source| ClientError::Refused {
        path: path.to_owned(),
        source,
    })?;
    innermost_root(&canonical, &mount_roots())
        .cloned()
        .ok_or_else(|| ClientError::NotAMount(path.to_owned()))
}

/// The daemon serving a mount, as its command line and environment in `/proc` describe it.
#[derive(Debug, Clone)]
pub struct Daemon {
    pub pid: u32,
    /// Its options, read with the binary's own parser.
    pub args: MountArgs,
    /// Its cache directory, resolved as it resolved it (its `--cache-dir` against its working
    /// directory, else its own XDG_CACHE_HOME or HOME); None if that cannot be read.
    pub cache_dir: Option<PathBuf>,
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
        let args = split_nul(&raw);
        let cwd = std::fs::read_link(entry.path().join("cwd")).ok();
        if let Some(m) = mount_args_for(&args, cwd.as_deref(), mount_root) {
            let env = std::fs::read(entry.path().join("environ")).unwrap_or_default();
            let cache_dir = daemon_cache_dir(&m, cwd.as_deref(), &split_nul(&env));
            return Some(Daemon {
                pid,
                args: m,
                cache_dir,
            });
        }
    }
    None
}

/// Where a daemon with these options, working directory and environment keeps its cache: the
/// rule of `CacheArgs::resolve`, applied to the daemon's own values instead of ours.
fn daemon_cache_dir(m: &MountArgs, cwd: Option<&Path>, env: &[OsString]) -> Option<PathBuf> {
    if let Some(dir) = &m.cache.cache_dir {
        return match dir.is_absolute() {
            true => Some(dir.clone()),
            false => cwd.map(|c| normalize(&c.join(dir))),
        };
    }
    let var = |name: &str| {
        env.iter().find_map(|kv| {
            let rest = kv.as_bytes().strip_prefix(name.as_bytes())?;
            let value = rest.strip_prefix(b"=")?;
            (!value.is_empty()).then(|| PathBuf::from(OsStr::from_bytes(value)))
        })
    };
    var("XDG_CACHE_HOME")
        .map(|x| x.join("glacierfs"))
        .or_else(|| var("HOME").map(|h| h.join(".cache").join("glacierfs")))
}

/// `/proc` files hold NUL-separated strings (`cmdline`, `environ`).
fn split_nul(raw: &[u8]) -> Vec<OsString> {
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
    if !program.contains("glacierfs") {
        return None;
    }
    // A daemon started by mount(8) (`glacierfs SOURCE MOUNTPOINT -o OPTIONS`) or with `-o`
    // reads its options through the same translation it used itself.
    let args = crate::config::mount_helper::translate(args.to_vec())
        .ok()?
        .argv;
    if args.get(1).map(OsString::as_os_str) != Some("mount".as_ref()) {
        return None;
    }
    let Ok(Cli {
        command: Command::Mount(m),
    }) = Cli::try_parse_from(&args)
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

#[cfg(test)]
mod tests {
    use super::*;

    use crate::glacier::Tier;

    fn args(line: &[&str]) -> Vec<OsString> {
        line.iter().map(OsString::from).collect()
    }

    #[test]
    fn mounts_are_found_in_either_mountinfo_form_unescaped_with_their_user() {
        let info = "\
36 35 98:0 / /mnt1 rw,noatime master:1 - ext3 /dev/root rw,errors=continue
90 25 0:51 / /tmp/glacierfs-mnt\\040x rw,nosuid,nodev - fuse.glacierfs glacierfs rw,user_id=0
91 25 0:52 / /srv/g rw shared:7 - fuse.glacierfs glacierfs rw,user_id=1000,group_id=1000
92 25 0:53 / /srv/other rw - fuse.sshfs host: rw
93 25 0:54 / /srv/plain rw,relatime - fuse glacierfs rw,group_id=0
94 25 0:55 / /srv/else rw,relatime - fuse other rw,user_id=0,group_id=0";
        assert_eq!(
            mounts_in(info),
            vec![
                MountEntry {
                    root: PathBuf::from("/tmp/glacierfs-mnt x"),
                    user_id: Some(0)
                },
                MountEntry {
                    root: PathBuf::from("/srv/g"),
                    user_id: Some(1000)
                },
                MountEntry {
                    root: PathBuf::from("/srv/plain"),
                    user_id: None
                },
            ]
        );
        assert_eq!(
            unescape_mountinfo("a\\134b\\011c\\9"),
            OsString::from("a\\b\tc\\9")
        );
        let roots = glacierfs_mounts(info);
        assert_eq!(
            innermost_root(Path::new("/srv/g/v/d"), &roots),
            Some(&PathBuf::from("/srv/g"))
        );
        assert_eq!(innermost_root(Path::new("/srv/gg"), &roots), None);
    }

    #[test]
    fn daemon_command_lines_in_the_mount_helper_form_are_read_too() {
        let root = Path::new("/tmp/mnt");
        let helper = args(&[
            "glacierfs",
            "glacierfs",
            "/tmp/mnt",
            "-o",
            "rw,region=eu-west-1,poll_interval=2s,tier=bulk",
        ]);
        let m = mount_args_for(&helper, None, root).expect("the mount(8) form");
        assert_eq!(m.aws.region.as_deref(), Some("eu-west-1"));
        assert_eq!(m.poll_interval, std::time::Duration::from_secs(2));
        assert_eq!(m.tier, Tier::Bulk.into());
        let with_o = args(&["glacierfs", "mount", "/tmp/mnt", "-o", "region=us-west-2"]);
        let m = mount_args_for(&with_o, None, root).expect("mount with -o");
        assert_eq!(m.aws.region.as_deref(), Some("us-west-2"));
        assert!(mount_args_for(&helper, None, Path::new("/tmp/other")).is_none());
    }

    #[test]
    fn a_daemons_tier_fallback_is_read_in_either_form() {
        // What an export borrows when it has no --tier of its own.
        let root = Path::new("/tmp/mnt");
        let helper = args(&[
            "glacierfs",
            "glacierfs",
            "/tmp/mnt",
            "-o",
            "tier=expedited:standard",
        ]);
        let plain = args(&["glacierfs", "mount", "--tier", "expedited,bulk", "/tmp/mnt"]);
        let m = mount_args_for(&helper, None, root).expect("the mount(8) form");
        assert_eq!(
            (m.tier.first(), m.tier.fallback()),
            (Tier::Expedited, Some(Tier::Standard))
        );
        let m = mount_args_for(&plain, None, root).expect("the plain form");
        assert_eq!(m.tier.fallback(), Some(Tier::Bulk));
        let alone = args(&["glacierfs", "mount", "--tier=expedited", "/tmp/mnt"]);
        let m = mount_args_for(&alone, None, root).expect("one tier");
        assert_eq!(m.tier.fallback(), None);
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
        assert_eq!(m.tier, Tier::Bulk.into());
        assert_eq!(m.aws.profile, None);

        // Relative to the daemon's working directory.
        let rel = args(&["glacierfs", "mount", "--profile", "p", "./x/../mnt"]);
        let m = mount_args_for(&rel, Some(Path::new("/tmp")), root).expect("relative");
        assert_eq!(m.aws.profile.as_deref(), Some("p"));
        assert_eq!(m.tier, Tier::Standard.into());
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
            split_nul(b"glacierfs\0mount\0/a b\0"),
            args(&["glacierfs", "mount", "/a b"])
        );
    }

    #[test]
    fn a_daemons_cache_dir_is_resolved_as_the_daemon_resolved_it() {
        let root = Path::new("/tmp/mnt");
        let cwd = Some(Path::new("/home/u/work"));
        let env = args(&["HOME=/home/u", "XDG_CACHE_HOME=", "PATH=/bin"]);
        let parsed = |line: &[&str]| mount_args_for(&args(line), cwd, root).unwrap();
        let m = parsed(&["glacierfs", "mount", "/tmp/mnt"]);
        assert_eq!(
            daemon_cache_dir(&m, cwd, &env),
            Some(PathBuf::from("/home/u/.cache/glacierfs"))
        );
        let xdg = args(&["HOME=/home/u", "XDG_CACHE_HOME=/var/cache/u"]);
        assert_eq!(
            daemon_cache_dir(&m, cwd, &xdg),
            Some(PathBuf::from("/var/cache/u/glacierfs"))
        );
        assert_eq!(daemon_cache_dir(&m, cwd, &[]), None);
        let m = parsed(&["glacierfs", "mount", "--cache-dir", "../c", "/tmp/mnt"]);
        assert_eq!(
            daemon_cache_dir(&m, cwd, &env),
            Some(PathBuf::from("/home/u/c"))
        );
        let m = parsed(&["glacierfs", "mount", "--cache-dir=/srv/c", "/tmp/mnt"]);
        assert_eq!(
            daemon_cache_dir(&m, None, &[]),
            Some(PathBuf::from("/srv/c"))
        );
    }
}
