//! Shared test support: the Glacier emulator, running mounts, and small file-system helpers.
#![allow(dead_code)]

pub mod emulator;
pub mod mount;

use std::collections::BTreeMap;
use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::time::UNIX_EPOCH;

/// One regular file seen through the mount.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Seen {
    pub size: u64,
    pub mtime: i64,
}

/// Every regular file under `dir`, by '/'-joined path relative to it; directories end in '/'.
pub fn walk(dir: &Path) -> BTreeMap<String, Option<Seen>> {
    let mut out = BTreeMap::new();
    walk_into(dir, "", &mut out);
    out
}

fn walk_into(dir: &Path, prefix: &str, out: &mut BTreeMap<String, Option<Seen>>) {
    let entries =
        std::fs::read_dir(dir).unwrap_or_else(|e| panic!("read_dir {}: {e}", dir.display()));
    for e in entries {
        let e = e.expect("directory entry");
        let name = e.file_name().to_string_lossy().into_owned();
        let rel = format!("{prefix}{name}");
        let meta = std::fs::symlink_metadata(e.path()).expect("stat");
        if meta.is_dir() {
            out.insert(format!("{rel}/"), None);
            walk_into(&e.path(), &format!("{rel}/"), out);
        } else {
            let mtime = meta
                .modified()
                .expect("mtime")
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_secs() as i64)
                .unwrap_or(0);
            out.insert(
                rel,
                Some(Seen {
                    size: meta.len(),
                    mtime,
                }),
            );
        }
    }
}

/// Reads an extended attribute; Err carries the errno.
pub fn xattr(path: &Path, name: &str) -> Result<String, i32> {
    let p = CString::new(path.as_os_str().as_bytes()).expect("path");
    let n = CString::new(name).expect("name");
    let mut buf = vec![0u8; 4096];
    // SAFETY: valid C strings and a buffer of the stated length.
    let len = unsafe { libc::getxattr(p.as_ptr(), n.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
    if len < 0 {
        return Err(std::io::Error::last_os_error().raw_os_error().unwrap_or(0));
    }
    buf.truncate(len as usize);
    Ok(String::from_utf8_lossy(&buf).into_owned())
}
