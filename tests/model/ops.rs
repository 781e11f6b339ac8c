//! The operations of the reference-model test and how proptest generates them: a small name
//! space (two vaults, a handful of paths one directory deep) so that collisions, renames over
//! existing files and `rmdir` of non-empty directories come up often.
//!
//! Handles are named by an index taken modulo the handles open when the operation runs, so
//! every sequence stays meaningful while proptest shrinks it.

use proptest::prelude::*;

pub const MIB: usize = 1 << 20;

/// The vaults operations act on. The first [`INITIAL_VAULTS`] exist when a case starts; the
/// others only once a `MkVault` makes them.
pub const VAULTS: [&str; 3] = ["va", "vb", "vc"];

pub const INITIAL_VAULTS: usize = 2;

/// Names `mkdir` and `rmdir` use at the root: the vaults, then a name that is not a vault name
/// (EINVAL) and the root's control file (EEXIST).
pub const ROOT_NAMES: [&str; 5] = ["va", "vb", "vc", "not a vault", ".jobs"];

/// Paths operations act on, relative to a vault. Any of them may become a file or a directory.
pub const PATHS: [&str; 7] = ["a", "b", "d", "d/a", "d/b", "e", "e/a"];

/// Symlink targets: a file and a directory of the vault, one up and back, and one dangling.
pub const LINK_TARGETS: [&str; 4] = ["a", "d", "../va/b", "nowhere/x"];

/// The mode `mkfifo` is asked for (the umask leaves it as is).
pub const MKNOD_MODE: u32 = 0o640;

/// Names out-of-band uploads use (top of the vault, so an inventory never has to invent a
/// directory name next to a local file).
pub const OOB_NAMES: [&str; 4] = ["a", "b", "d", "e"];

/// A length of data: most are small, a few go past the 1 MiB part size (multipart).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Len {
    Zero,
    Tiny(u8),
    Small(u16),
    Big(u8),
}

impl Len {
    pub fn bytes(self) -> usize {
        match self {
            Len::Zero => 0,
            Len::Tiny(n) => 1 + n as usize % 64,
            Len::Small(n) => 100 + n as usize % 20_000,
            Len::Big(k) => [MIB - 1, MIB, MIB + 1, 2 * MIB + 3][k as usize % 4],
        }
    }
}

/// Where a write lands: from the start, or somewhere past it (leaving a hole when beyond the end).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Off {
    Start,
    At(u16),
}

impl Off {
    pub fn bytes(self) -> u64 {
        match self {
            Off::Start => 0,
            Off::At(n) => n as u64 % 30_000,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OpenMode {
    /// O_RDONLY.
    RdOnly,
    /// O_RDWR without O_TRUNC: needs the data.
    RdWr,
    /// O_WRONLY|O_TRUNC: needs no data.
    WrTrunc,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Op {
    /// open(O_CREAT|O_WRONLY|O_TRUNC, 0644), write `len` bytes, and close unless `keep_open`.
    Create {
        v: u8,
        p: u8,
        len: Len,
        seed: u8,
        keep_open: bool,
    },
    Open {
        v: u8,
        p: u8,
        mode: OpenMode,
    },
    /// pwrite on a handle open for writing.
    Write {
        h: u8,
        off: Off,
        len: Len,
        seed: u8,
    },
    /// ftruncate on a handle open for writing.
    Ftruncate {
        h: u8,
        size: Len,
    },
    Fsync {
        h: u8,
    },
    Close {
        h: u8,
    },
    /// truncate(2) by path: a setattr of the size without a handle.
    Truncate {
        v: u8,
        p: u8,
        size: Len,
    },
    Rename {
        v: u8,
        p: u8,
        v2: u8,
        p2: u8,
    },
    Unlink {
        v: u8,
        p: u8,
    },
    Mkdir {
        v: u8,
        p: u8,
    },
    Rmdir {
        v: u8,
        p: u8,
    },
    /// mkdir(2) at the root: creates a vault (`n` indexes [`ROOT_NAMES`]).
    MkVault {
        n: u8,
    },
    /// rmdir(2) at the root: deletes a vault.
    RmVault {
        n: u8,
    },
    Chmod {
        v: u8,
        p: u8,
        mode: u8,
    },
    /// utimensat: sets the mtime to a fixed time in the past.
    Utime {
        v: u8,
        p: u8,
        t: u8,
    },
    /// Reads the whole file by path.
    Read {
        v: u8,
        p: u8,
    },
    /// Another tool uploads an archive (mt2 description) straight to the vault.
    OobPut {
        v: u8,
        name: u8,
        len: Len,
        seed: u8,
    },
    /// Another tool deletes the archive behind a path straight from the vault.
    OobDelete {
        v: u8,
        p: u8,
    },
    /// Glacier takes a new inventory of both vaults and the mount takes it in (this finishes
    /// every running job too).
    Inventory,
    /// Every running retrieval job finishes, and its data is downloaded.
    CompleteJobs,
    /// SIGKILL the daemon and mount again on the same cache.
    Crash,
    /// symlink(2), pointing at `LINK_TARGETS[t]`.
    Symlink {
        v: u8,
        p: u8,
        t: u8,
    },
    /// mkfifo(3).
    Mknod {
        v: u8,
        p: u8,
    },
    /// readlink(2).
    ReadLink {
        v: u8,
        p: u8,
    },
    /// `glacierfs sync --wait --snapshot` of a vault.
    Snapshot {
        v: u8,
    },
    /// The machine is lost: the daemon stops (cleanly or killed) and a new one mounts the
    /// same vaults on a new, empty cache directory; with `restore`, the first thing done there
    /// is `catalog restore` of every vault that holds a snapshot.
    MachineLoss {
        clean: bool,
        restore: bool,
    },
    /// `glacierfs catalog restore --wait` of a vault.
    Restore {
        v: u8,
    },
}

pub fn chmod_mode(m: u8) -> u32 {
    [0o600, 0o640, 0o755, 0o444][m as usize % 4]
}

pub fn utime_secs(t: u8) -> i64 {
    1_500_000_000 + (t as i64 % 16) * 86_400
}

/// Deterministic content for a (length, seed) pair; different seeds give different bytes.
pub fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|k| ((k as u32).wrapping_mul(2_654_435_761) >> 24) as u8 ^ seed.wrapping_mul(37))
        .collect()
}

fn len() -> impl Strategy<Value = Len> {
    prop_oneof![
        2 => Just(Len::Zero),
        10 => any::<u8>().prop_map(Len::Tiny),
        5 => any::<u16>().prop_map(Len::Small),
        1 => any::<u8>().prop_map(Len::Big),
    ]
}

fn off() -> impl Strategy<Value = Off> {
    prop_oneof![Just(Off::Start), any::<u16>().prop_map(Off::At)]
}

fn open_mode() -> impl Strategy<Value = OpenMode> {
    prop_oneof![
        Just(OpenMode::RdOnly),
        Just(OpenMode::RdWr),
        Just(OpenMode::WrTrunc)
    ]
}

fn v() -> impl Strategy<Value = u8> {
    prop_oneof![8 => Just(0u8), 2 => Just(1u8), 1 => Just(2u8)]
}

fn p() -> impl Strategy<Value = u8> {
    0..PATHS.len() as u8
}

pub fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        8 => (v(), p(), len(), any::<u8>(), any::<bool>()).prop_map(|(v, p, len, seed, keep_open)| {
            Op::Create { v, p, len, seed, keep_open }
        }),
        3 => (v(), p(), open_mode()).prop_map(|(v, p, mode)| Op::Open { v, p, mode }),
        4 => (any::<u8>(), off(), len(), any::<u8>())
            .prop_map(|(h, off, len, seed)| Op::Write { h, off, len, seed }),
        1 => (any::<u8>(), len()).prop_map(|(h, size)| Op::Ftruncate { h, size }),
        1 => any::<u8>().prop_map(|h| Op::Fsync { h }),
        4 => any::<u8>().prop_map(|h| Op::Close { h }),
        1 => (v(), p(), len()).prop_map(|(v, p, size)| Op::Truncate { v, p, size }),
        5 => (v(), p(), v(), p()).prop_map(|(v, p, v2, p2)| Op::Rename { v, p, v2, p2 }),
        3 => (v(), p()).prop_map(|(v, p)| Op::Unlink { v, p }),
        3 => (v(), p()).prop_map(|(v, p)| Op::Mkdir { v, p }),
        2 => (v(), p()).prop_map(|(v, p)| Op::Rmdir { v, p }),
        1 => (0..ROOT_NAMES.len() as u8).prop_map(|n| Op::MkVault { n }),
        1 => (0..ROOT_NAMES.len() as u8).prop_map(|n| Op::RmVault { n }),
        1 => (v(), p(), any::<u8>()).prop_map(|(v, p, mode)| Op::Chmod { v, p, mode }),
        1 => (v(), p(), any::<u8>()).prop_map(|(v, p, t)| Op::Utime { v, p, t }),
        3 => (v(), p()).prop_map(|(v, p)| Op::Read { v, p }),
        2 => (v(), 0..OOB_NAMES.len() as u8, len(), any::<u8>())
            .prop_map(|(v, name, len, seed)| Op::OobPut { v, name, len, seed }),
        1 => (v(), p()).prop_map(|(v, p)| Op::OobDelete { v, p }),
        2 => Just(Op::Inventory),
        1 => Just(Op::CompleteJobs),
        1 => Just(Op::Crash),
        2 => (v(), p(), any::<u8>()).prop_map(|(v, p, t)| Op::Symlink { v, p, t }),
        1 => (v(), p()).prop_map(|(v, p)| Op::Mknod { v, p }),
        1 => (v(), p()).prop_map(|(v, p)| Op::ReadLink { v, p }),
        2 => v().prop_map(|v| Op::Snapshot { v }),
        1 => (any::<bool>(), any::<bool>())
            .prop_map(|(clean, restore)| Op::MachineLoss { clean, restore }),
        1 => v().prop_map(|v| Op::Restore { v }),
    ]
}

pub fn ops(max: usize) -> impl Strategy<Value = Vec<Op>> {
    proptest::collection::vec(op(), 1..=max)
}
