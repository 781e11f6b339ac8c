//! The namespace snapshot format: everything the catalog knows about a vault's tree that
//! archive descriptions cannot carry, as the bytes of one archive (ARCHITECTURE.md, "Namespace
//! snapshots"). Pure: [`encode`] and [`decode`] only turn values into bytes and back.
//!
//! Layout, all integers little-endian:
//!
//! ```text
//! magic     8 bytes   "GFSNAP\r\n" (the CR LF catches a transfer that rewrote line ends)
//! version   u16       1
//! vault     str       the vault's name
//! taken_s   i64       when the snapshot was taken, Unix seconds (also in the description)
//! change    i64       the catalog's change mark for the vault when taken: its newest ctime
//! count     u64       number of entries
//! body      zlib      the entries, deflate-compressed with zlib's Adler-32 check
//! ```
//!
//! where `str` is a u32 byte length and UTF-8 bytes, `bytes` the same without the UTF-8 rule,
//! and `opt<T>` a byte 0 (absent) or 1 followed by a `T`. Each entry is:
//!
//! ```text
//! path      str       relative to the vault, '/'-joined; parents come before their children
//! kind      u8        2 directory, 3 file, 4 symbolic link, 5 special file
//! mode      opt<u32>  absent: the kind's default; for kind 5 the S_IFMT bits give the type
//! uid, gid  opt<u32>  absent: the mount's
//! mtime_ns  i64
//! ctime_ns  i64
//! atime_ns  opt<i64>  absent: equals mtime
//! size      u64
//! archive   opt<str>  the archive id; absent for directories, empty and local-only files
//! tree_hash opt<str>
//! target    opt<bytes> a symbolic link's target
//! rdev      opt<u64>  a special file's device numbers
//! ```
//!
//! A reader refuses a version it does not know rather than guessing; a new field means a new
//! version. Compression is zlib through `flate2` with its pure-Rust backend: no C toolchain
//! for the build, and names and ids compress several-fold.

use std::io::{Read, Write};

use flate2::read::ZlibDecoder;
use flate2::write::ZlibEncoder;
use flate2::Compression;

const MAGIC: &[u8; 8] = b"GFSNAP\r\n";
/// The version this build writes and reads.
pub const VERSION: u16 = 1;
/// The largest string or byte field a reader accepts: far above a path's 1 KiB description
/// limit, low enough that a damaged length cannot ask for gigabytes.
const MAX_FIELD: u32 = 1 << 20;

/// What an entry is. The codes are the catalog's node kinds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EntryKind {
    Dir,
    File,
    Symlink,
    Special,
}

impl EntryKind {
    pub fn code(self) -> u8 {
        match self {
            EntryKind::Dir => 2,
            EntryKind::File => 3,
            EntryKind::Symlink => 4,
            EntryKind::Special => 5,
        }
    }

    fn from_code(c: u8) -> Option<EntryKind> {
        match c {
            2 => Some(EntryKind::Dir),
            3 => Some(EntryKind::File),
            4 => Some(EntryKind::Symlink),
            5 => Some(EntryKind::Special),
            _ => None,
        }
    }
}

/// One entry of the tree below the vault.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub path: String,
    pub kind: EntryKind,
    pub mode: Option<u32>,
    pub uid: Option<u32>,
    pub gid: Option<u32>,
    pub mtime_ns: i64,
    pub ctime_ns: i64,
    pub atime_ns: Option<i64>,
    pub size: u64,
    pub archive_id: Option<String>,
    pub tree_hash: Option<String>,
    pub target: Option<Vec<u8>>,
    pub rdev: Option<u64>,
}

/// A whole snapshot of one vault.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snapshot {
    pub vault: String,
    pub taken_s: i64,
    /// The catalog's change mark for the vault when the snapshot was taken.
    pub change: i64,
    pub entries: Vec<Entry>,
}

/// Why bytes are not a snapshot this build can read.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    #[error("not a glacierfs snapshot (no magic)")]
    NotASnapshot,
    #[error("snapshot version {0} is newer than this glacierfs reads ({VERSION}); upgrade it")]
    Version(u16),
    #[error("the snapshot is damaged: {0}")]
    Damaged(String),
}

/// The snapshot's bytes.
pub fn encode(s: &Snapshot) -> Vec<u8> {
    let mut out = Vec::new();
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&VERSION.to_le_bytes());
    put_bytes(&mut out, s.vault.as_bytes());
    out.extend_from_slice(&s.taken_s.to_le_bytes());
    out.extend_from_slice(&s.change.to_le_bytes());
    out.extend_from_slice(&(s.entries.len() as u64).to_le_bytes());
    let mut body = Vec::new();
    for e in &s.entries {
        put_entry(&mut body, e);
    }
    let mut z = ZlibEncoder::new(out, Compression::default());
    // Writing into a Vec cannot fail.
    let _ = z.write_all(&body);
    z.finish().unwrap_or_default()
}

/// Only the header: the vault, time and change mark, without inflating the entries.
pub fn decode_header(bytes: &[u8]) -> Result<(String, i64, i64), SnapshotError> {
    let mut r = Reader { b: bytes, at: 0 };
    let (vault, taken_s, change, _) = r.header()?;
    Ok((vault, taken_s, change))
}

/// The snapshot in `bytes`, checked: the magic, a known version, the zlib check, and every
/// field within the data.
pub fn decode(bytes: &[u8]) -> Result<Snapshot, SnapshotError> {
    let mut r = Reader { b: bytes, at: 0 };
    let (vault, taken_s, change, count) = r.header()?;
    let mut body = Vec::new();
    ZlibDecoder::new(&bytes[r.at..])
        .read_to_end(&mut body)
        .map_err(|e| SnapshotError::Damaged(format!("the entries do not inflate: {e}")))?;
    let mut r = Reader { b: &body, at: 0 };
    // Each entry takes at least 40 bytes, so a damaged count cannot reserve much.
    let mut entries = Vec::with_capacity((count as usize).min(body.len() / 40 + 1));
    for _ in 0..count {
        entries.push(r.entry()?);
    }
    if r.at != body.len() {
        return Err(SnapshotError::Damaged("bytes after the last entry".into()));
    }
    Ok(Snapshot {
        vault,
        taken_s,
        change,
        entries,
    })
}

fn put_bytes(out: &mut Vec<u8>, b: &[u8]) {
    out.extend_from_slice(&(b.len() as u32).to_le_bytes());
    out.extend_from_slice(b);
}

fn put_opt<T>(out: &mut Vec<u8>, v: Option<T>, put: impl FnOnce(&mut Vec<u8>, T)) {
    match v {
        None => out.push(0),
        Some(v) => {
            out.push(1);
            put(out, v);
        }
    }
}

fn put_entry(out: &mut Vec<u8>, e: &Entry) {
    put_bytes(out, e.path.as_bytes());
    out.push(e.kind.code());
    put_opt(out, e.mode, |o, v| o.extend_from_slice(&v.to_le_bytes()));
    put_opt(out, e.uid, |o, v| o.extend_from_slice(&v.to_le_bytes()));
    put_opt(out, e.gid, |o, v| o.extend_from_slice(&v.to_le_bytes()));
    out.extend_from_slice(&e.mtime_ns.to_le_bytes());
    out.extend_from_slice(&e.ctime_ns.to_le_bytes());
    put_opt(out, e.atime_ns, |o, v| {
        o.extend_from_slice(&v.to_le_bytes())
    });
    out.extend_from_slice(&e.size.to_le_bytes());
    put_opt(out, e.archive_id.as_deref(), |o, v| {
        put_bytes(o, v.as_bytes())
    });
    put_opt(out, e.tree_hash.as_deref(), |o, v| {
        put_bytes(o, v.as_bytes())
    });
    put_opt(out, e.target.as_deref(), put_bytes);
    put_opt(out, e.rdev, |o, v| o.extend_from_slice(&v.to_le_bytes()));
}

struct Reader<'a> {
    b: &'a [u8],
    at: usize,
}

impl Reader<'_> {
    fn take(&mut self, n: usize) -> Result<&[u8], SnapshotError> {
        let end = self.at.checked_add(n).filter(|&e| e <= self.b.len());
        let end = end.ok_or_else(|| SnapshotError::Damaged("it ends too soon".into()))?;
        let s = &self.b[self.at..end];
        self.at = end;
        Ok(s)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], SnapshotError> {
        let mut a = [0u8; N];
        a.copy_from_slice(self.take(N)?);
        Ok(a)
    }

    fn u8(&mut self) -> Result<u8, SnapshotError> {
        Ok(self.array::<1>()?[0])
    }

    fn u32(&mut self) -> Result<u32, SnapshotError> {
        Ok(u32::from_le_bytes(self.array()?))
    }

    fn u64(&mut self) -> Result<u64, SnapshotError> {
        Ok(u64::from_le_bytes(self.array()?))
    }

    fn i64(&mut self) -> Result<i64, SnapshotError> {
        Ok(i64::from_le_bytes(self.array()?))
    }

    fn bytes(&mut self) -> Result<Vec<u8>, SnapshotError> {
        let n = self.u32()?;
        if n > MAX_FIELD {
            return Err(SnapshotError::Damaged(format!("a field of {n} bytes")));
        }
        Ok(self.take(n as usize)?.to_vec())
    }

    fn str(&mut self) -> Result<String, SnapshotError> {
        String::from_utf8(self.bytes()?)
            .map_err(|_| SnapshotError::Damaged("a name that is not UTF-8".into()))
    }

    fn opt<T>(
        &mut self,
        get: impl FnOnce(&mut Self) -> Result<T, SnapshotError>,
    ) -> Result<Option<T>, SnapshotError> {
        match self.u8()? {
            0 => Ok(None),
            1 => get(self).map(Some),
            b => Err(SnapshotError::Damaged(format!("presence byte {b}"))),
        }
    }

    fn header(&mut self) -> Result<(String, i64, i64, u64), SnapshotError> {
        if self.take(MAGIC.len()).ok() != Some(&MAGIC[..]) {
            return Err(SnapshotError::NotASnapshot);
        }
        let version = u16::from_le_bytes(self.array()?);
        if version != VERSION {
            return Err(SnapshotError::Version(version));
        }
        Ok((self.str()?, self.i64()?, self.i64()?, self.u64()?))
    }

    fn entry(&mut self) -> Result<Entry, SnapshotError> {
        let path = self.str()?;
        let code = self.u8()?;
        let kind = EntryKind::from_code(code)
            .ok_or_else(|| SnapshotError::Damaged(format!("entry kind {code}")))?;
        Ok(Entry {
            path,
            kind,
            mode: self.opt(Self::u32)?,
            uid: self.opt(Self::u32)?,
            gid: self.opt(Self::u32)?,
            mtime_ns: self.i64()?,
            ctime_ns: self.i64()?,
            atime_ns: self.opt(Self::i64)?,
            size: self.u64()?,
            archive_id: self.opt(Self::str)?,
            tree_hash: self.opt(Self::str)?,
            target: self.opt(Self::bytes)?,
            rdev: self.opt(Self::u64)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn sample() -> Snapshot {
        let file = Entry {
            path: "photos/2024/beach.jpg".into(),
            kind: EntryKind::File,
            mode: Some(0o100640),
            uid: Some(1000),
            gid: Some(100),
            mtime_ns: 1_700_000_000_123_456_789,
            ctime_ns: 1_700_000_001_000_000_000,
            atime_ns: None,
            size: 4_000_000,
            archive_id: Some("a".repeat(138)),
            tree_hash: Some("0f".repeat(32)),
            target: None,
            rdev: None,
        };
        Snapshot {
            vault: "v".into(),
            taken_s: 1_700_000_100,
            change: 1_700_000_001_000_000_000,
            entries: vec![
                Entry {
                    path: "photos".into(),
                    kind: EntryKind::Dir,
                    archive_id: None,
                    tree_hash: None,
                    size: 0,
                    ..file.clone()
                },
                file.clone(),
                Entry {
                    path: "link".into(),
                    kind: EntryKind::Symlink,
                    target: Some(b"photos/2024".to_vec()),
                    archive_id: None,
                    ..file.clone()
                },
                Entry {
                    path: "fifo".into(),
                    kind: EntryKind::Special,
                    mode: Some(0o010644),
                    rdev: Some(0),
                    atime_ns: Some(5),
                    archive_id: None,
                    ..file
                },
            ],
        }
    }

    #[test]
    fn a_snapshot_round_trips_and_its_header_reads_alone() {
        let s = sample();
        let bytes = encode(&s);
        assert_eq!(&bytes[..8], MAGIC);
        assert_eq!(decode(&bytes).unwrap(), s);
        assert_eq!(
            decode_header(&bytes).unwrap(),
            ("v".to_owned(), s.taken_s, s.change)
        );
    }

    #[test]
    fn the_entries_are_compressed() {
        let mut s = sample();
        let one = s.entries[1].clone();
        s.entries = (0..200)
            .map(|i| Entry {
                path: format!("photos/2024/img{i:04}.jpg"),
                ..one.clone()
            })
            .collect();
        let plain: usize = s
            .entries
            .iter()
            .map(|e| {
                let mut b = Vec::new();
                put_entry(&mut b, e);
                b.len()
            })
            .sum();
        assert!(
            encode(&s).len() * 3 < plain,
            "compressed well below {plain}"
        );
    }

    #[test]
    fn damage_and_unknown_versions_are_refused() {
        let bytes = encode(&sample());
        assert!(matches!(decode(b"hello"), Err(SnapshotError::NotASnapshot)));
        let mut v2 = bytes.clone();
        v2[8] = 2;
        assert!(matches!(decode(&v2), Err(SnapshotError::Version(2))));
        let mut flipped = bytes.clone();
        let last = flipped.len() - 10;
        flipped[last] ^= 0x55;
        assert!(matches!(decode(&flipped), Err(SnapshotError::Damaged(_))));
        for cut in [9, 20, bytes.len() - 1] {
            assert!(decode(&bytes[..cut]).is_err(), "cut at {cut}");
        }
    }

    fn entry() -> impl Strategy<Value = Entry> {
        let ids = (
            proptest::option::of(any::<u32>()),
            proptest::option::of(any::<u32>()),
            proptest::option::of(any::<u32>()),
        );
        let times = (
            any::<i64>(),
            any::<i64>(),
            proptest::option::of(any::<i64>()),
        );
        let data = (
            any::<u64>(),
            proptest::option::of("[A-Za-z0-9_-]{0,138}"),
            proptest::option::of("[0-9a-f]{64}"),
            proptest::option::of(proptest::collection::vec(any::<u8>(), 0..64)),
            proptest::option::of(any::<u64>()),
        );
        ("[a-z0-9/ ._-]{1,40}", 2u8..=5, ids, times, data).prop_map(
            |(
                path,
                k,
                (mode, uid, gid),
                (mtime_ns, ctime_ns, atime_ns),
                (size, a, t, target, rdev),
            )| {
                Entry {
                    path,
                    kind: EntryKind::from_code(k).unwrap(),
                    mode,
                    uid,
                    gid,
                    mtime_ns,
                    ctime_ns,
                    atime_ns,
                    size,
                    archive_id: a,
                    tree_hash: t,
                    target,
                    rdev,
                }
            },
        )
    }

    proptest! {
        #[test]
        fn any_snapshot_round_trips(
            vault in "[A-Za-z0-9._-]{1,255}",
            taken_s in any::<i64>(),
            change in any::<i64>(),
            entries in proptest::collection::vec(entry(), 0..20),
        ) {
            let s = Snapshot { vault, taken_s, change, entries };
            prop_assert_eq!(decode(&encode(&s)).unwrap(), s);
        }

        #[test]
        fn any_bytes_decode_without_panicking(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            let _ = decode(&bytes);
            let mut with_magic = MAGIC.to_vec();
            with_magic.extend_from_slice(&1u16.to_le_bytes());
            with_magic.extend_from_slice(&bytes);
            let _ = decode(&with_magic);
        }
    }
}
