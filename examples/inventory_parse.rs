//! Times the inventory parser alone on a file, to tell parsing from catalog work when profiling
//! an import: `cargo run --release --example inventory_parse -- FILE`.
// An example stops at the first thing that goes wrong, saying what it was.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Instant;

use glacierfs::engine::inventory::parse;

fn main() {
    let path = std::env::args()
        .nth(1)
        .expect("usage: inventory_parse FILE");
    let file = std::fs::File::open(&path).expect("open the inventory");
    let reader = std::io::BufReader::with_capacity(1 << 18, file);
    let started = Instant::now();
    let mut archives = 0u64;
    let mut bytes = 0usize;
    let (format, header) = parse::parse_auto(reader, |a| {
        archives += 1;
        bytes += a.archive_id.len() + a.description.len() + a.tree_hash.len();
        Ok(())
    })
    .expect("parse the inventory");
    println!(
        "{format:?}: {archives} archives ({bytes} bytes of text), dated {:?}, in {:.2?}",
        header.inventory_date,
        started.elapsed()
    );
}
