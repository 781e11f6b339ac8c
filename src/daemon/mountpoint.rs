//! The mountpoint before a mount: it must be a directory with nothing mounted on it, and a
//! stale FUSE mount a killed daemon left there ("Transport endpoint is not connected") is
//! cleared first, so that remounting after a crash needs no manual `umount`.

use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use super::MountError;

/// Checks the mountpoint; a stale FUSE mount left by a killed daemon is lazily unmounted first.
pub fn check_mountpoint(path: &Path) -> Result<PathBuf, MountError> {
    if is_stale(path) {
        log::warn!("clearing the stale mount at {}", path.display());
        lazy_unmount(path).map_err(MountError::Mount)?;
    }
    match std::fs::metadata(path) {
        Ok(m) if m.is_dir() => {}
        _ => return Err(MountError::NoMountpoint(path.to_owned())),
    }
    let canonical =
        std::fs::canonicalize(path).map_err(|_| MountError::NoMountpoint(path.to_owned()))?;
    if is_mount_point(&canonical) {
        return Err(MountError::Busy(canonical));
    }
    Ok(canonical)
}

/// A FUSE mount whose daemon is gone. statfs always reaches the daemon, where stat may be
/// answered from the kernel's attribute cache, so it is the reliable probe.
fn is_stale(path: &Path) -> bool {
    let Ok(c) = CString::new(path.as_os_str().as_bytes()) else {
        return false;
    };
    // SAFETY: statfs is plain data, for which all zeroes is a valid value.
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: `c` is a valid C string and `st` a writable statfs that outlives the call.
    let rc = unsafe { libc::statfs(c.as_ptr(), &mut st) };
    // While the kernel is still tearing the dead connection down, requests can also fail with
    // ECONNABORTED or EIO before they settle on ENOTCONN.
    rc != 0
        && matches!(
            std::io::Error::last_os_error().raw_os_error(),
            Some(libc::ENOTCONN | libc::ECONNABORTED | libc::EIO)
        )
}

fn is_mount_point(path: &Path) -> bool {
    let Ok(info) = std::fs::read_to_string("/proc/self/mountinfo") else {
        return false;
    };
    let target = path.as_os_str().as_bytes();
    info.lines().any(|line| {
        line.split(' ')
            .nth(4)
            .map(|m| unescape_mountinfo(m) == target)
            .unwrap_or(false)
    })
}

/// mountinfo escapes space, tab, newline and backslash as \ooo.
fn unescape_mountinfo(s: &str) -> Vec<u8> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let octal = b
            .get(i + 1..i + 4)
            .filter(|d| d.iter().all(|c| (b'0'..=b'7').contains(c)));
        match octal {
            Some(d) if b[i] == b'\\' => {
                out.push((d[0] - b'0') * 64 + (d[1] - b'0') * 8 + (d[2] - b'0'));
                i += 4;
            }
            _ => {
                out.push(b[i]);
                i += 1;
            }
        }
    }
    out
}

pub fn lazy_unmount(path: &Path) -> std::io::Result<()> {
    let c = CString::new(path.as_os_str().as_bytes())?;
    // SAFETY: a valid NUL-terminated path.
    let rc = unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mountinfo_paths_are_unescaped() {
        assert_eq!(unescape_mountinfo("/mnt/a\\040b"), b"/mnt/a b".to_vec());
        assert_eq!(unescape_mountinfo("/plain"), b"/plain".to_vec());
    }
}
