//! Set-user-ID and set-group-ID bits that a change of a file's data or owner takes away, as
//! Linux takes them away, cleared by the daemon instead of the kernel.
//!
//! Left to the kernel, clearing them costs a round trip per write(2): before every write it
//! asks the file system for the file's `security.capability` attribute (FUSE does not let the
//! kernel remember that a file has none), and with passthrough that is the only request a
//! write makes. A mount that takes the job over (FUSE_HANDLE_KILLPRIV_V2, asked for at INIT)
//! is asked only about files that have one of the bits, and the adapter calls in here:
//!
//! - a write by someone who may not keep the bits: the kernel still decides that (it knows
//!   the writer's capabilities), and says so with an empty SETATTR before the write (through
//!   passthrough or the page cache) or a flag on a write it sends to the daemon;
//! - a truncation by anyone but root (an `ftruncate`, or an open with O_TRUNC), and any change
//!   of owner or group.
//!
//! Set-user-ID always goes. Set-group-ID goes when the group may execute; without group
//! execute it marks mandatory locking, which Linux keeps unless the writer is outside the
//! file's group: the daemon sees only the writer's primary group, so that is what it checks.
//! Root stands for the capability to keep the bits on a truncation (CAP_FSETID), where the
//! kernel's own answer does not reach the daemon. The mode is changed in the catalog write
//! itself, from the mode it finds there, so a chmod just before is not undone. Files carry no
//! `security.capability` here (foreign attributes are not stored): no capability to clear.

use crate::catalog::changes::Change;
use crate::fs::files::{ClearSetId, SetAttr};
use crate::fs::{FsResult, GlacierFs};

/// Whether a caller keeps the bits when it truncates.
fn keeps_privileges(uid: u32) -> bool {
    uid == 0
}

impl GlacierFs {
    /// A write by a caller of group `gid` who, the kernel says, may not keep the bits. No
    /// reply tells the kernel the new mode, so it is told to forget the old one.
    pub fn clear_privileges_for_writer(&self, ino: u64, gid: u32) -> FsResult<()> {
        self.setattr_clearing(ino, None, SetAttr::default(), writer_clears(gid))?;
        self.catalog.changed([Change::Node(ino)]);
        Ok(())
    }

    /// An open with O_TRUNC by `uid` of group `gid`: a truncation.
    pub fn clear_privileges_for_truncation(&self, ino: u64, uid: u32, gid: u32) -> FsResult<()> {
        if keeps_privileges(uid) {
            return Ok(());
        }
        self.clear_privileges_for_writer(ino, gid)
    }
}

/// What a setattr by `uid` of group `gid` takes away besides `change`: everything the kernel's
/// empty SETATTR asks for, a truncation by anyone but root, and a new owner or group, unless
/// the mode is being set as well.
pub fn clearing_in(uid: u32, gid: u32, change: &SetAttr) -> ClearSetId {
    if *change == SetAttr::default() {
        return writer_clears(gid);
    }
    if change.mode.is_some() {
        return ClearSetId::default();
    }
    if change.size.is_some() && !keeps_privileges(uid) {
        return writer_clears(gid);
    }
    ClearSetId {
        set_id: change.uid.is_some() || change.gid.is_some(),
        writer_gid: None,
    }
}

/// Set-user-ID, and set-group-ID without group execute only for a writer outside the file's
/// group (decided in the catalog's write, against the group the file has then).
fn writer_clears(gid: u32) -> ClearSetId {
    ClearSetId {
        set_id: true,
        writer_gid: Some(gid),
    }
}
