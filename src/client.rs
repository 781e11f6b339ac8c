//! How another process reaches a running mount: finding glacierfs mounts in the kernel's mount
//! table, and the extended-attribute calls through which commands ask a mount for work
//! (`user.glacier.sync`, `user.glacier.retrieve`) and read its answers. No socket or daemon
//! protocol is needed, and the file system's own permissions apply.

use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

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

/// The roots of every glacierfs mount of this machine.
pub fn mount_roots() -> Vec<PathBuf> {
    roots_in(&std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default())
}

/// glacierfs mount points in a mountinfo text. After the " - " separator come the file system
/// type, then the source; depending on how the mount was made, glacierfs shows as type
/// "fuse.glacierfs" or as type "fuse" from source "glacierfs".
fn roots_in(info: &str) -> Vec<PathBuf> {
    info.lines()
        .filter(|l| {
            let tail = l.split(" - ").nth(1).unwrap_or_default();
            let mut f = tail.split(' ');
            matches!(
                (f.next(), f.next()),
                (Some("fuse.glacierfs"), _) | (Some("fuse"), Some("glacierfs"))
            )
        })
        .filter_map(|l| l.split(' ').nth(4))
        .map(PathBuf::from)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mounts_are_found_in_either_mountinfo_form() {
        let info = "36 25 0:32 / /mnt/a rw,nosuid - fuse glacierfs rw,user_id=0\n\
                    37 25 0:33 / /mnt/b rw - fuse.glacierfs glacierfs rw\n\
                    38 25 0:34 / /mnt/c rw - fuse sshfs rw\n\
                    39 25 8:1 / / rw - ext4 /dev/vda rw\n";
        assert_eq!(
            roots_in(info),
            vec![PathBuf::from("/mnt/a"), PathBuf::from("/mnt/b")]
        );
    }
}
