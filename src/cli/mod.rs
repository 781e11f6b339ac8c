//! The commands that run outside the daemon and read or drive a mount: `status` (from the
//! catalog alone) and `sync`/`retrieve` (through the mount's extended attributes).

pub mod status;
pub mod sync;
