//! Sorting a parsed inventory into naming order (path, newest first, archive id) with bounded
//! memory: rows are gathered into runs of a fixed byte budget, each run is sorted and, when the
//! inventory does not fit in one, written to an unnamed scratch file beside the catalog; the
//! runs are then merged as a stream.
//!
//! This is what lets a first import skip the catalog's side table: sequential scratch files cost
//! a fraction of the B-tree inserts, WAL frames and checkpoints that staging a million rows does.

use std::cmp::{Ordering, Reverse};
use std::collections::BinaryHeap;
use std::fs::File;
use std::io::{self, BufReader, BufWriter, Read, Seek, Write};
use std::path::{Path, PathBuf};

use super::Listed;
use crate::codec::{names, timefmt};

/// One archive of the inventory, with the path and mtime its description gives: what is sorted
/// here, staged in the side table, and placed. This module owns it because only the sorter
/// depends on its layout (the scratch file encoding and [`Staged::weight`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Staged {
    pub(super) archive_id: String,
    pub(super) description: String,
    pub(super) created_s: i64,
    pub(super) size: u64,
    pub(super) tree_hash: String,
    pub(super) path: String,
    pub(super) mtime_s: i64,
}

impl Staged {
    /// Roughly the memory a row holds: its text, its four allocations and the struct itself.
    pub(super) fn weight(&self) -> usize {
        self.archive_id.len()
            + self.description.len()
            + self.tree_hash.len()
            + self.path.len()
            + 4 * 16
            + std::mem::size_of::<Staged>()
    }
}

impl From<Listed> for Staged {
    fn from(a: Listed) -> Staged {
        let (segments, mtime) = names::archive_path(&a.description, &a.archive_id);
        let created_s = timefmt::parse_iso8601(&a.creation_date)
            .map(|(s, _)| s)
            .unwrap_or(0);
        Staged {
            path: segments.join("/"),
            mtime_s: mtime.unwrap_or(created_s),
            archive_id: a.archive_id,
            description: a.description,
            created_s,
            size: a.size,
            tree_hash: a.tree_hash,
        }
    }
}

/// Bytes of rows (as [`Staged::weight`] counts them) held in memory before a run is sorted and
/// spilled. Together with one read buffer per run while merging, this is the sorter's memory.
pub(super) const RUN_BUDGET: usize = 32 << 20;

/// Buffer of each scratch file, while writing a run and while merging.
const IO_BUFFER: usize = 128 << 10;

/// Naming order, the order new archives are placed in: by path, newest first, then archive id.
/// Paths and ids compare as bytes, as SQLite's BINARY collation does.
pub(super) fn naming_order(a: &Staged, b: &Staged) -> Ordering {
    a.path
        .as_bytes()
        .cmp(b.path.as_bytes())
        .then_with(|| b.created_s.cmp(&a.created_s))
        .then_with(|| a.archive_id.as_bytes().cmp(b.archive_id.as_bytes()))
}

/// Gathers rows, then hands them back in [`naming_order`]. Rows that compare equal come back in
/// the order they were pushed.
pub(super) struct Sorter {
    scratch_dir: PathBuf,
    budget: usize,
    rows: Vec<Staged>,
    weight: usize,
    runs: Vec<File>,
}

impl Sorter {
    /// A sorter that spills into `scratch_dir` whenever `budget` bytes of rows are held.
    pub(super) fn new(scratch_dir: &Path, budget: usize) -> Sorter {
        Sorter {
            scratch_dir: scratch_dir.to_owned(),
            budget: budget.max(1),
            rows: Vec::new(),
            weight: 0,
            runs: Vec::new(),
        }
    }

    pub(super) fn push(&mut self, row: Staged) -> io::Result<()> {
        self.weight += row.weight();
        self.rows.push(row);
        if self.weight >= self.budget {
            self.spill()?;
        }
        Ok(())
    }

    /// Sorts the rows held and writes them out as one run.
    fn spill(&mut self) -> io::Result<()> {
        self.rows.sort_by(naming_order);
        let file = scratch_file(&self.scratch_dir)?;
        let mut out = BufWriter::with_capacity(IO_BUFFER, file);
        for row in self.rows.drain(..) {
            encode(&row, &mut out)?;
        }
        let mut file = out.into_inner().map_err(|e| e.into_error())?;
        file.rewind()?;
        self.runs.push(file);
        self.weight = 0;
        Ok(())
    }

    /// Every row pushed, in naming order.
    pub(super) fn finish(mut self) -> io::Result<Sorted> {
        if self.runs.is_empty() {
            // It all fit: no scratch file at all.
            self.rows.sort_by(naming_order);
            return Ok(Sorted::Memory(self.rows.into_iter()));
        }
        if !self.rows.is_empty() {
            self.spill()?;
        }
        let mut readers = Vec::with_capacity(self.runs.len());
        let mut heap = BinaryHeap::with_capacity(self.runs.len());
        for (run, file) in self.runs.into_iter().enumerate() {
            let mut reader = BufReader::with_capacity(IO_BUFFER, file);
            if let Some(row) = decode(&mut reader)? {
                heap.push(Reverse(Head { row, run }));
            }
            readers.push(reader);
        }
        Ok(Sorted::Runs { readers, heap })
    }
}

/// The rows of a [`Sorter`], in naming order.
pub(super) enum Sorted {
    Memory(std::vec::IntoIter<Staged>),
    Runs {
        readers: Vec<BufReader<File>>,
        heap: BinaryHeap<Reverse<Head>>,
    },
}

impl Iterator for Sorted {
    type Item = io::Result<Staged>;

    fn next(&mut self) -> Option<io::Result<Staged>> {
        match self {
            Sorted::Memory(rows) => rows.next().map(Ok),
            Sorted::Runs { readers, heap } => {
                let Reverse(Head { row, run }) = heap.pop()?;
                match decode(&mut readers[run]) {
                    Ok(Some(next)) => heap.push(Reverse(Head { row: next, run })),
                    Ok(None) => {}
                    Err(e) => {
                        // A broken run cannot be merged further; stop after the error.
                        heap.clear();
                        return Some(Err(e));
                    }
                }
                Some(Ok(row))
            }
        }
    }
}

/// The smallest unmerged row of one run.
pub(super) struct Head {
    row: Staged,
    run: usize,
}

impl Ord for Head {
    /// Equal rows come from the earlier run first, so the merge keeps the order of input.
    fn cmp(&self, other: &Self) -> Ordering {
        naming_order(&self.row, &other.row).then(self.run.cmp(&other.run))
    }
}

impl PartialOrd for Head {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl PartialEq for Head {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}

impl Eq for Head {}

/// A scratch file in `dir` that has no name, so that nothing is left behind whatever happens to
/// the process; private to the owner like everything in the cache directory.
fn scratch_file(dir: &Path) -> io::Result<File> {
    use std::os::unix::fs::OpenOptionsExt;
    let unnamed = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .mode(0o600)
        .custom_flags(libc::O_TMPFILE)
        .open(dir);
    match unnamed {
        Ok(f) => Ok(f),
        // Some file systems have no O_TMPFILE: name the file, then unlink it at once.
        Err(e)
            if matches!(
                e.raw_os_error(),
                Some(libc::EOPNOTSUPP) | Some(libc::EISDIR)
            ) =>
        {
            let path = dir.join(format!(
                ".inventory-sort-{}-{:016x}",
                std::process::id(),
                rand::random::<u64>()
            ));
            let f = std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&path)?;
            std::fs::remove_file(&path)?;
            Ok(f)
        }
        Err(e) => Err(e),
    }
}

/// A row as its fields in order, each string as a little-endian u32 length and its bytes.
fn encode(row: &Staged, out: &mut impl Write) -> io::Result<()> {
    for s in [&row.path, &row.archive_id, &row.description, &row.tree_hash] {
        let len =
            u32::try_from(s.len()).map_err(|_| io::Error::other("inventory field too long"))?;
        out.write_all(&len.to_le_bytes())?;
        out.write_all(s.as_bytes())?;
    }
    out.write_all(&row.created_s.to_le_bytes())?;
    out.write_all(&row.size.to_le_bytes())?;
    out.write_all(&row.mtime_s.to_le_bytes())
}

/// The next row of a run, or `None` at its end.
fn decode(input: &mut impl Read) -> io::Result<Option<Staged>> {
    let mut len = [0u8; 4];
    match input.read_exact(&mut len) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e),
    }
    let path = string(input, u32::from_le_bytes(len))?;
    let mut next_string = |input: &mut dyn Read| -> io::Result<String> {
        input.read_exact(&mut len)?;
        string(input, u32::from_le_bytes(len))
    };
    let archive_id = next_string(input)?;
    let description = next_string(input)?;
    let tree_hash = next_string(input)?;
    let mut word = [0u8; 8];
    let mut int = |input: &mut dyn Read| -> io::Result<[u8; 8]> {
        input.read_exact(&mut word)?;
        Ok(word)
    };
    let created_s = i64::from_le_bytes(int(input)?);
    let size = u64::from_le_bytes(int(input)?);
    let mtime_s = i64::from_le_bytes(int(input)?);
    Ok(Some(Staged {
        archive_id,
        description,
        created_s,
        size,
        tree_hash,
        path,
        mtime_s,
    }))
}

fn string(input: &mut (impl Read + ?Sized), len: u32) -> io::Result<String> {
    let mut bytes = vec![0u8; len as usize];
    input.read_exact(&mut bytes)?;
    // Only this process wrote the run, from valid strings.
    String::from_utf8(bytes).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(path: &str, created_s: i64, id: &str) -> Staged {
        Staged {
            archive_id: id.into(),
            description: format!("d-{id}"),
            created_s,
            size: created_s as u64 * 3,
            tree_hash: format!("h-{id}"),
            path: path.into(),
            mtime_s: created_s + 1,
        }
    }

    fn sorted(rows: Vec<Staged>, budget: usize) -> Vec<Staged> {
        let dir = std::env::temp_dir();
        let mut s = Sorter::new(&dir, budget);
        for r in rows {
            s.push(r).unwrap();
        }
        s.finish().unwrap().collect::<io::Result<_>>().unwrap()
    }

    proptest::proptest! {
        /// Spilled runs merge to exactly what one stable in-memory sort gives, for any budget.
        #[test]
        fn runs_merge_to_one_stable_sort(
            rows in proptest::collection::vec(
                ("[ab/é]{0,3}", 0i64..3, "[xy]{0,2}", "[pq]{0,2}"), 0..60),
            budget in 1usize..2000,
        ) {
            let rows: Vec<Staged> = rows
                .into_iter()
                .map(|(p, c, id, d)| Staged { description: d, ..row(&p, c, &id) })
                .collect();
            let mut expected = rows.clone();
            expected.sort_by(naming_order);
            let got = sorted(rows, budget);
            proptest::prop_assert_eq!(got, expected);
        }
    }

    #[test]
    fn newest_first_within_a_path() {
        let got = sorted(
            vec![
                row("b", 1, "z"),
                row("a", 1, "y"),
                row("a", 2, "x"),
                row("a", 1, "a"),
            ],
            1,
        );
        let keys: Vec<_> = got
            .iter()
            .map(|r| (r.path.as_str(), r.created_s, r.archive_id.as_str()))
            .collect();
        assert_eq!(
            keys,
            vec![("a", 2, "x"), ("a", 1, "a"), ("a", 1, "y"), ("b", 1, "z")]
        );
    }
}
