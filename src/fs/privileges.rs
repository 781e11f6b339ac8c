//! Set-user-ID and set-group-ID bits that a change of a file's data or owner takes away, as
//! Linux takes them away, cleared by the daemon instead of the kernel.
//!
//! Left to the kernel, clearing them costs a round trip per write(2): before every write it
//! asks the file system for the file's `security.capability` attribute (FUSE does not let the
//! kernel remember that a file has none), and with passthrough that is the only request a
//! write makes. A mount that takes the job over (FUSE_HANDLE_KILLPRIV_V2, asked for at INIT)
//! gets no such question, so the adapter calls in here instead:
//!
//! - a writer that is not root clears the bits when it opens the file (or creates it with
//!   them), because passthrough writes never reach the daemon: Linux clears them at the
//!   first write, so only a writer that opens and never writes sees a difference;
//! - a write the kernel marks as one that must clear them (a write it sends to the daemon);
//! - a truncation by anyone but root, and any change of owner or group.
//!
//! Set-group-ID is cleared only with group execute: without it the bit marks mandatory
//! locking, which Linux keeps. Root stands for the capability to keep the bits (CAP_FSETID).
//! Files carry no `security.capability` here (foreign attributes are not stored), so there
//! are no capabilities to clear.

use crate::catalog::changes::Change;
use crate::fs::files::SetAttr;
use crate::fs::{FileKind, FsResult, GlacierFs};

const SET_UID: u32 = 0o4000;
const SET_GID: u32 = 0o2000;
const GROUP_EXEC: u32 = 0o0010;

/// `perm` without the bits a write, truncation or chown takes away, or None when it has none.
pub fn cleared(perm: u32) -> Option<u32> {
    let mut kill = perm & SET_UID;
    if perm & (SET_GID | GROUP_EXEC) == SET_GID | GROUP_EXEC {
        kill |= SET_GID;
    }
    (kill != 0).then_some(perm & !kill)
}

/// Whether a caller keeps the bits when it writes or truncates.
fn keeps_privileges(uid: u32) -> bool {
    uid == 0
}

impl GlacierFs {
    /// Clears the bits of `ino` when `uid`, about to write it, may not keep them.
    pub fn clear_privileges_for_writer(&self, ino: u64, uid: u32) -> FsResult<()> {
        if keeps_privileges(uid) {
            return Ok(());
        }
        self.clear_privileges(ino)
    }

    /// Clears the bits of `ino` whoever writes, and tells the kernel, whose copy of the mode
    /// would be stale.
    pub fn clear_privileges(&self, ino: u64) -> FsResult<()> {
        let a = self.getattr(ino)?;
        if a.kind != FileKind::RegularFile {
            return Ok(());
        }
        if let Some(perm) = cleared(u32::from(a.perm)) {
            let change = SetAttr {
                mode: Some(perm),
                uid: None,
                gid: None,
                size: None,
                mtime_ns: None,
                atime_ns: None,
            };
            self.setattr(ino, None, change)?;
            self.catalog.changed([Change::Node(ino)]);
        }
        Ok(())
    }

    /// Adds to a setattr by `uid` the clearing that comes with it: a truncation by anyone but
    /// root, or a new owner or group, of a regular file whose mode is not being set as well.
    pub fn clear_privileges_in(&self, ino: u64, uid: u32, change: &mut SetAttr) -> FsResult<()> {
        let truncates = change.size.is_some() && !keeps_privileges(uid);
        let chowns = change.uid.is_some() || change.gid.is_some();
        if change.mode.is_some() || !(truncates || chowns) {
            return Ok(());
        }
        let a = self.getattr(ino)?;
        if a.kind == FileKind::RegularFile {
            change.mode = cleared(u32::from(a.perm));
        }
        Ok(())
    }
}

/// The mode a file is created with by `uid`: a creator that is not root writes what it
/// creates through a handle whose writes the daemon may never see.
pub fn creation_mode(mode: u32, uid: u32) -> u32 {
    if keeps_privileges(uid) {
        return mode;
    }
    let type_bits = mode & !0o7777;
    cleared(mode & 0o7777).map_or(mode, |perm| perm | type_bits)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn set_uid_goes_and_set_gid_only_with_group_execute() {
        assert_eq!(cleared(0o4755), Some(0o0755));
        assert_eq!(cleared(0o2775), Some(0o0775));
        assert_eq!(cleared(0o6775), Some(0o0775));
        // Without group execute set-group-ID marks mandatory locking and stays.
        assert_eq!(cleared(0o2745), None);
        assert_eq!(cleared(0o6745), Some(0o2745));
        assert_eq!(cleared(0o0755), None);
        assert_eq!(cleared(0o1777), None, "the sticky bit is not a privilege");
    }

    #[test]
    fn only_root_creates_with_the_bits() {
        assert_eq!(creation_mode(0o104755, 0), 0o104755);
        assert_eq!(creation_mode(0o104755, 1000), 0o100755);
        assert_eq!(creation_mode(0o100644, 1000), 0o100644);
    }
}
