//! The commands that run outside the daemon: `status` (from the catalog alone), `sync` and
//! `retrieve` (through a mount's extended attributes), `inventory import` and `catalog
//! rebuild` (on a catalog no mount holds), `inventory export` (read-only, beside a mount or
//! not), and `treehash`.

pub mod catalog;
pub mod inventory;
pub mod status;
pub mod sync;

use std::io::Write;
use std::process::ExitCode;

use crate::codec::treehash;
use crate::config::TreehashArgs;

/// `glacierfs treehash FILE...`: prints each file's tree hash as `sha256sum` prints digests.
pub fn treehash_files(args: &TreehashArgs) -> ExitCode {
    let mut status = ExitCode::SUCCESS;
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    for file in &args.files {
        match treehash::tree_hash_file(file) {
            Ok(d) => {
                let _ = writeln!(out, "{}  {}", treehash::to_hex(&d), file.display());
            }
            Err(e) => {
                eprintln!("glacierfs: {}: {e}", file.display());
                status = ExitCode::FAILURE;
            }
        }
    }
    status
}
