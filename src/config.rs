//! The command line: clap definitions, typed option values (sizes, durations, tiers) with their
//! validation, and the defaults the README documents.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

use crate::glacier::{GlacierError, Tier};

pub const KIB: u64 = 1 << 10;
pub const MIB: u64 = 1 << 20;
pub const GIB: u64 = 1 << 30;

#[derive(Debug, Parser)]
#[command(
    name = "glacierfs",
    version,
    about = "A file system for Amazon Glacier vaults: vaults are directories, archives are files"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

pub mod mount_helper;

/// The kernel's type and source for every glacierfs mount, as `mount -t` and fstab name them.
pub const FS_TYPE: &str = "fuse.glacierfs";
pub const FS_SOURCE: &str = "glacierfs";

// One value per process, parsed once: the size of the mount's arguments costs nothing here.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Mount Glacier vaults at MOUNTPOINT
    Mount(MountArgs),
    /// Show uploads, jobs and cache use; works while mounted
    Status(StatusArgs),
    /// Load vault inventories, or write one out
    #[command(subcommand)]
    Inventory(InventoryCommand),
    /// Look after the catalog itself
    #[command(subcommand)]
    Catalog(CatalogCommand),
    /// Request retrieval of files or whole subtrees of a running mount
    Retrieve(RetrieveArgs),
    /// Upload staged files now, optionally waiting until they are in the vault
    Sync(SyncArgs),
    /// Copy a vault or subtree out of Glacier to a local directory or to S3
    Export(ExportArgs),
    /// Print the SHA-256 tree hash of local files
    Treehash(TreehashArgs),
    /// Print a completion script for SHELL (bash, zsh, fish, elvish or powershell)
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Print the manual page (roff), for `man -l -` or to install as glacierfs.1
    Man,
}

/// Mount flags the `-o` form of a mount can ask for beyond what `MountArgs` says. `nosuid` and
/// `nodev` need no field: glacierfs always sets both, since nothing in a vault is a device or
/// a program trusted to run as its owner.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MountFlags {
    /// `noexec` (or `user`/`users`, which imply it as mount(8) documents)
    pub noexec: bool,
}

/// Options shared by every command that opens a catalog.
#[derive(Debug, Clone, Args)]
pub struct CacheArgs {
    /// Catalog, staging and retrieved data [default: $XDG_CACHE_HOME/glacierfs, else ~/.cache/glacierfs]
    #[arg(long, value_name = "DIR")]
    pub cache_dir: Option<PathBuf>,
}

impl CacheArgs {
    pub fn resolve(&self) -> Result<PathBuf, OptionError> {
        if let Some(dir) = &self.cache_dir {
            return Ok(dir.clone());
        }
        if let Some(xdg) = std::env::var_os("XDG_CACHE_HOME").filter(|v| !v.is_empty()) {
            return Ok(PathBuf::from(xdg).join("glacierfs"));
        }
        match std::env::var_os("HOME").filter(|v| !v.is_empty()) {
            Some(home) => Ok(PathBuf::from(home).join(".cache").join("glacierfs")),
            None => Err(OptionError::NoCacheDir),
        }
    }
}

/// Where the vaults are and who we are there.
#[derive(Debug, Clone, Args)]
pub struct AwsArgs {
    /// AWS region [default: the AWS config chain]
    #[arg(long)]
    pub region: Option<String>,
    /// AWS profile
    #[arg(long, value_name = "NAME")]
    pub profile: Option<String>,
    /// A Glacier-compatible endpoint (tests, VPC endpoints)
    #[arg(long, value_name = "URL")]
    pub endpoint_url: Option<String>,
    /// Account id ("-" means the account of the credentials)
    #[arg(long, value_name = "ID", default_value = "-")]
    pub account_id: String,
}

#[derive(Debug, Clone, Args)]
pub struct MountArgs {
    /// Where to mount
    pub mountpoint: PathBuf,
    #[command(flatten)]
    pub aws: AwsArgs,
    #[command(flatten)]
    pub cache: CacheArgs,
    /// Bound on retrieved data kept (LRU)
    #[arg(long, value_name = "SIZE", default_value = "10GiB", value_parser = parse_size)]
    pub cache_size: u64,
    /// Retrieval tier; `expedited,standard` falls back to Standard when Glacier has no
    /// Expedited capacity (a single tier never falls back)
    #[arg(long, value_name = "TIER[,FALLBACK]", default_value = "standard", value_parser = parse_tiers)]
    pub tier: Tiers,
    /// Multipart part size, a power of two from 1MiB to 4GiB; a file no larger goes up in one request
    #[arg(long, value_name = "SIZE", default_value = "16MiB", value_parser = parse_part_size)]
    pub part_size: u64,
    /// Parts and files in flight (lowered to fit --memory-budget)
    #[arg(long, value_name = "N", default_value_t = 4, value_parser = clap::value_parser!(u32).range(1..=256))]
    pub upload_concurrency: u32,
    /// Bound on upload bodies held in memory
    #[arg(long, value_name = "SIZE", default_value = "512MiB", value_parser = parse_size)]
    pub memory_budget: u64,
    /// Quiet time after the last close before an upload
    #[arg(long, value_name = "DURATION", default_value = "5s", value_parser = parse_duration)]
    pub write_back_delay: Duration,
    /// Time a delete waits in the queue (cancellable)
    #[arg(long, value_name = "DURATION", default_value = "0s", value_parser = parse_duration)]
    pub delete_delay: Duration,
    /// How often running jobs are checked
    #[arg(long, value_name = "DURATION", default_value = "60s", value_parser = parse_duration)]
    pub poll_interval: Duration,
    /// Look for a newer inventory when the last one is older than this
    #[arg(long, value_name = "DURATION", default_value = "24h", value_parser = parse_duration)]
    pub inventory_max_age: Duration,
    /// Upload a snapshot of a vault's names, modes, owners and times when it changed and the
    /// last one is older than this; `off` takes none unless `glacierfs sync --snapshot` asks
    #[arg(long, value_name = "DURATION|off", default_value = "24h", value_parser = parse_snapshot_interval)]
    pub snapshot_interval: SnapshotInterval,
    /// Opening a cold file returns EAGAIN without starting a retrieval job
    #[arg(long)]
    pub no_auto_retrieve: bool,
    /// Most bytes that open-triggered retrievals may ask for per 24 h
    #[arg(long, value_name = "SIZE", default_value = "10GiB", value_parser = parse_size)]
    pub retrieval_budget: u64,
    /// Most retrieval jobs that opens may start per 24 h (each job is billed as a request)
    #[arg(long, value_name = "N", default_value_t = 1000)]
    pub retrieval_job_budget: u64,
    /// Programs whose opens of cold files start no retrieval, besides the built-in file
    /// managers, thumbnailers and indexers (names as `ps -o comm` shows them; `*` matches any text)
    #[arg(long, value_name = "PROG,...", value_delimiter = ',', value_parser = parse_program)]
    pub retrieve_deny: Vec<String>,
    /// Programs of the built-in list whose opens of cold files start retrievals after all
    #[arg(long, value_name = "PROG,...", value_delimiter = ',', value_parser = parse_program)]
    pub retrieve_allow: Vec<String>,
    /// Refuse every write with EROFS
    #[arg(long)]
    pub read_only: bool,
    /// Serve file data through the daemon even where FUSE passthrough is available (it needs
    /// root); for comparison and for kernels whose passthrough misbehaves
    #[arg(long)]
    pub no_passthrough: bool,
    /// Let other users see the mount (turns on kernel permission checks)
    #[arg(long, conflicts_with = "allow_root")]
    pub allow_other: bool,
    /// Let root see the mount
    #[arg(long)]
    pub allow_root: bool,
    /// Owner shown for files [default: the mounting user]
    #[arg(long)]
    pub uid: Option<u32>,
    /// Group shown for files [default: the mounting user's group]
    #[arg(long)]
    pub gid: Option<u32>,
    /// Stay attached instead of returning once the mount is ready
    #[arg(short, long)]
    pub foreground: bool,
    /// More logging (repeatable)
    #[arg(short, long, action = clap::ArgAction::Count)]
    pub verbose: u8,
    /// Only warnings and errors
    #[arg(short, long, conflicts_with = "verbose")]
    pub quiet: bool,
}

#[derive(Debug, Clone, Args)]
pub struct StatusArgs {
    #[command(flatten)]
    pub cache: CacheArgs,
    /// Machine-readable output
    #[arg(long)]
    pub json: bool,
    /// List every upload, job and delete, not only a summary
    #[arg(long)]
    pub all: bool,
    /// A mount point, or anything inside one [default: list every running mount of yours]
    #[arg(conflicts_with = "cache_dir")]
    pub path: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
pub enum InventoryCommand {
    /// Load an inventory file (JSON or CSV) you already have into the catalog
    Import(ImportArgs),
    /// Write the catalog's view of a vault (paths as the mount shows them) as JSON, CSV, or
    /// the name-override CSV of AWS's vault-to-S3 pipeline
    Export(InventoryExportArgs),
}

/// The formats `inventory export` writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum InventoryFormat {
    /// One JSON object: the vault and its files
    Json,
    /// A header line, then one row per file
    Csv,
    /// `GlacierArchiveID,FileName`: the name-override file of AWS's "Data Transfer from
    /// Glacier Vaults to S3" solution
    Dtgv,
}

#[derive(Debug, Clone, Args)]
pub struct InventoryExportArgs {
    #[command(flatten)]
    pub cache: CacheArgs,
    /// What to write
    #[arg(long, value_enum, default_value = "json")]
    pub format: InventoryFormat,
    /// The vault
    pub vault: String,
    /// Where to write [default: standard output]
    pub file: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
pub enum CatalogCommand {
    /// Put a damaged catalog aside and restore its latest copy (or start empty); the next
    /// mount reads each vault's inventory again and recovers staged files from their sidecars
    Rebuild(CacheArgs),
    /// Retrieve a vault's newest namespace snapshot and apply it: renamed archives get their
    /// names back, with modes, owners, times, empty files and directories, symlinks and special
    /// files
    Restore(RestoreArgs),
}

#[derive(Debug, Clone, Args)]
pub struct RestoreArgs {
    /// Retrieval tier, or a tier and its fallback as for mount [default: the mount's]
    #[arg(long, value_parser = parse_tiers)]
    pub tier: Option<Tiers>,
    /// Return only once the snapshot is applied
    #[arg(long)]
    pub wait: bool,
    /// Give up waiting after this long (exit status 1); implies --wait
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub timeout: Option<Duration>,
    /// A vault's directory in a running mount
    pub path: PathBuf,
}

#[derive(Debug, Clone, Args)]
pub struct ImportArgs {
    #[command(flatten)]
    pub cache: CacheArgs,
    /// The vault the inventory belongs to
    pub vault: String,
    /// The inventory file
    pub file: PathBuf,
}

#[derive(Debug, Clone, Args)]
pub struct RetrieveArgs {
    /// Retrieval tier, optionally with a fallback: `expedited,standard` [default: the mount's]
    #[arg(long, value_name = "TIER[,FALLBACK]", value_parser = parse_tiers)]
    pub tier: Option<Tiers>,
    /// Return only once the files are retrieved, showing progress
    #[arg(long)]
    pub wait: bool,
    /// Give up waiting after this long (exit status 1, with what is left and why); implies --wait
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub timeout: Option<Duration>,
    /// Files or directories inside a running mount
    #[arg(required = true)]
    pub paths: Vec<PathBuf>,
}

#[derive(Debug, Clone, Args)]
pub struct SyncArgs {
    /// Return only once the files are in the vault, showing progress
    #[arg(long)]
    pub wait: bool,
    /// Give up waiting after this long (exit status 1, with what is left and why); implies --wait
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub timeout: Option<Duration>,
    /// Also upload a snapshot of this vault's namespace now (a vault's directory in a mount)
    #[arg(long, value_name = "PATH")]
    pub snapshot: Option<PathBuf>,
    /// Files or directories inside a running mount [default: everything staged]
    pub paths: Vec<PathBuf>,
}

#[derive(Debug, Clone, Args)]
pub struct ExportArgs {
    /// Retrieval tier, optionally with a fallback: `expedited,standard` [default: the mount's]
    #[arg(long, value_name = "TIER[,FALLBACK]", value_parser = parse_tiers)]
    pub tier: Option<Tiers>,
    /// Bound on retrievals started but not yet downloaded
    #[arg(long, value_name = "SIZE", value_parser = parse_size)]
    pub max_bytes_in_flight: Option<u64>,
    /// Machine-readable progress
    #[arg(long)]
    pub json: bool,
    /// Print the plan and its estimated cost; start no job and write nothing
    #[arg(long)]
    pub dry_run: bool,
    /// S3 storage class of the objects written (S3 destinations)
    #[arg(long, value_name = "CLASS", default_value = "DEEP_ARCHIVE", value_parser = parse_storage_class)]
    pub storage_class: StorageClass,
    /// An S3-compatible endpoint (tests, VPC endpoints) [default: AWS]
    #[arg(long, value_name = "URL")]
    pub s3_endpoint_url: Option<String>,
    /// The bucket's region [default: the mount's region]
    #[arg(long, value_name = "REGION")]
    pub s3_region: Option<String>,
    /// Bound on data held in memory on its way to S3
    #[arg(long, value_name = "SIZE", default_value = "512MiB", value_parser = parse_size)]
    pub memory_budget: u64,
    /// A vault, or a subtree inside a running mount
    pub path: PathBuf,
    /// A local directory, or s3://BUCKET[/PREFIX]
    pub dest: PathBuf,
}

/// The S3 storage classes an export can write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StorageClass {
    DeepArchive,
    Glacier,
    GlacierIr,
    StandardIa,
    IntelligentTiering,
    Standard,
}

impl StorageClass {
    pub const ALL: [StorageClass; 6] = [
        StorageClass::DeepArchive,
        StorageClass::Glacier,
        StorageClass::GlacierIr,
        StorageClass::StandardIa,
        StorageClass::IntelligentTiering,
        StorageClass::Standard,
    ];

    /// The name S3 uses, in `x-amz-storage-class`.
    pub fn as_str(self) -> &'static str {
        match self {
            StorageClass::DeepArchive => "DEEP_ARCHIVE",
            StorageClass::Glacier => "GLACIER",
            StorageClass::GlacierIr => "GLACIER_IR",
            StorageClass::StandardIa => "STANDARD_IA",
            StorageClass::IntelligentTiering => "INTELLIGENT_TIERING",
            StorageClass::Standard => "STANDARD",
        }
    }
}

#[derive(Debug, Clone, Args)]
pub struct TreehashArgs {
    #[arg(required = true)]
    pub files: Vec<PathBuf>,
}

/// A storage class by its S3 name, in either case, with `-` for `_` if you like.
pub fn parse_storage_class(s: &str) -> Result<StorageClass, OptionError> {
    let wanted = s.trim().to_ascii_uppercase().replace('-', "_");
    StorageClass::ALL
        .into_iter()
        .find(|c| c.as_str() == wanted)
        .ok_or_else(|| OptionError::StorageClass(s.to_owned()))
}

/// An option value glacierfs cannot take; each message is one line that says what would do.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OptionError {
    #[error("cannot find a cache directory: set --cache-dir, XDG_CACHE_HOME or HOME")]
    NoCacheDir,
    #[error("invalid size {0:?}: expected a number with an optional unit like 16MiB")]
    SizeNotANumber(String),
    #[error("invalid size {0:?}: unknown unit {1:?} (use B, KiB, MiB, GiB, TiB)")]
    SizeUnit(String, String),
    #[error("invalid duration {0:?}: expected seconds or a value like 5s, 10m, 24h")]
    DurationNotANumber(String),
    #[error("invalid duration {0:?}: unknown unit {1:?} (use s, m, h or d)")]
    DurationUnit(String, String),
    #[error("invalid size {0:?}: too large")]
    SizeTooLarge(String),
    #[error("invalid duration {0:?}: too large")]
    DurationTooLarge(String),
    #[error("invalid part size {0:?}: must be a power of two from 1MiB to 4GiB")]
    PartSize(String),
    #[error("invalid tier {0:?}: use expedited, standard or bulk")]
    Tier(String),
    #[error("invalid tier list {0:?}: {1} is named twice")]
    TierTwice(String, &'static str),
    #[error("invalid tier list {0:?}: a fallback must be slower than the tier before it, as in expedited,standard")]
    TierOrder(String),
    #[error(
        "invalid tier list {0:?}: only Expedited can be short of capacity, so only expedited takes \
         a fallback, and one: expedited,standard or expedited,bulk"
    )]
    TierFallback(String),
    #[error(
        "invalid storage class {0:?}: use DEEP_ARCHIVE, GLACIER, GLACIER_IR, STANDARD_IA, \
         INTELLIGENT_TIERING or STANDARD"
    )]
    StorageClass(String),
    #[error(
        "invalid program name {0:?}: give the name a program runs as (as `ps -o comm` shows \
         it), without a path, separated by commas"
    )]
    Program(String),
}

/// Bytes in binary units, as the options take them: `512 B`, `1.5 KiB`, `10.0 GiB`.
pub fn format_size(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    match unit {
        0 => format!("{bytes} B"),
        _ => format!("{value:.1} {}", UNITS[unit]),
    }
}

/// Parses sizes like `4096`, `16MiB`, `1GiB`, `10G`, `512k`. Binary units throughout: a
/// storage tool's "G" means GiB to almost everyone who types it.
pub fn parse_size(s: &str) -> Result<u64, OptionError> {
    let t = s.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (digits, unit) = t.split_at(split);
    let n: u64 = digits
        .parse()
        .map_err(|_| OptionError::SizeNotANumber(s.to_string()))?;
    let mult = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" | "kib" => KIB,
        "m" | "mb" | "mib" => MIB,
        "g" | "gb" | "gib" => GIB,
        "t" | "tb" | "tib" => GIB << 10,
        other => return Err(OptionError::SizeUnit(s.to_string(), other.to_string())),
    };
    n.checked_mul(mult)
        .ok_or_else(|| OptionError::SizeTooLarge(s.to_string()))
}

/// Parses durations: plain seconds, or a number with s, m, h or d.
pub fn parse_duration(s: &str) -> Result<Duration, OptionError> {
    let t = s.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (digits, unit) = t.split_at(split);
    let n: u64 = digits
        .parse()
        .map_err(|_| OptionError::DurationNotANumber(s.to_string()))?;
    let secs = match unit.trim() {
        "" | "s" => 1,
        "m" | "min" => 60,
        "h" => 3600,
        "d" => 86400,
        other => return Err(OptionError::DurationUnit(s.to_string(), other.to_string())),
    };
    n.checked_mul(secs)
        .map(Duration::from_secs)
        .ok_or_else(|| OptionError::DurationTooLarge(s.to_string()))
}

/// `--snapshot-interval`: how long between namespace snapshots; `None` for `off`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SnapshotInterval(pub Option<Duration>);

/// `--snapshot-interval`: a duration, or `off`.
pub fn parse_snapshot_interval(s: &str) -> Result<SnapshotInterval, OptionError> {
    if s.trim().eq_ignore_ascii_case("off") {
        return Ok(SnapshotInterval(None));
    }
    parse_duration(s).map(|d| SnapshotInterval(Some(d)))
}

/// A part size must be 2^k MiB with k in 0..=12 (Glacier's rule for multipart uploads).
pub fn parse_part_size(s: &str) -> Result<u64, OptionError> {
    let n = parse_size(s)?;
    if n.is_power_of_two() && (MIB..=4 * GIB).contains(&n) {
        Ok(n)
    } else {
        Err(OptionError::PartSize(s.to_string()))
    }
}

/// A program name for `--retrieve-deny` and `--retrieve-allow`: what a process runs as (its
/// command name or its executable's file name), optionally with `*` wildcards. A path is
/// refused rather than cut to its last part, so nobody believes the directory counts.
pub fn parse_program(s: &str) -> Result<String, OptionError> {
    let name = s.trim();
    if name.is_empty() || name.contains('/') || name.chars().any(char::is_control) {
        return Err(OptionError::Program(s.to_owned()));
    }
    Ok(name.to_owned())
}

/// A retrieval tier and, optionally, the tier to ask for instead when Glacier has no capacity
/// for it: `expedited,standard` asks for Expedited, and for Standard when Glacier answers
/// InsufficientCapacityException. Only Expedited runs short (its capacity is on demand or
/// provisioned; Standard and Bulk always have room), so only Expedited takes a fallback, and a
/// single tier never falls back: paying for a slower tier nobody asked for would be a surprise.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tiers {
    first: Tier,
    fallback: Option<Tier>,
}

impl From<Tier> for Tiers {
    fn from(first: Tier) -> Tiers {
        Tiers {
            first,
            fallback: None,
        }
    }
}

impl Tiers {
    /// The tier asked for first.
    pub fn first(self) -> Tier {
        self.first
    }

    /// The tier asked for when the first has no capacity, if the list names one.
    pub fn fallback(self) -> Option<Tier> {
        self.fallback
    }

    /// For people: `Bulk`, or `Expedited, then Standard`.
    pub fn describe(self) -> String {
        match self.fallback {
            Some(next) => format!("{}, then {}", self.first.as_str(), next.as_str()),
            None => self.first.as_str().to_owned(),
        }
    }

    /// What follows Glacier's refusal of `tried` for want of capacity (`cause`): the tier to
    /// ask for next, or the error to fail with. The fallback is logged here, once per job, so
    /// the mount and the export say it alike; `what` names the file.
    pub fn on_shortage(
        self,
        tried: Tier,
        cause: GlacierError,
        what: &str,
    ) -> Result<Tier, NoCapacity> {
        match self.fallback.filter(|_| tried == self.first) {
            Some(next) => {
                log::warn!(
                    "{} capacity short for {what}; requested {} as the tiers {self} asked ({cause})",
                    tried.as_str(),
                    next.as_str()
                );
                Ok(next)
            }
            None => Err(NoCapacity {
                tiers: self,
                tried,
                cause,
            }),
        }
    }
}

/// The option's own spelling, lowercase: `expedited,standard`. It parses back to the same list,
/// which is how `glacierfs retrieve` hands its `--tier` to the mount.
impl std::fmt::Display for Tiers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.first.as_str().to_ascii_lowercase())?;
        if let Some(next) = self.fallback {
            write!(f, ",{}", next.as_str().to_ascii_lowercase())?;
        }
        Ok(())
    }
}

/// Glacier had no capacity for a tier the list gives no fallback for. The message says how to
/// ask for one, since that is the fix; Glacier's answer is part of the message, so it is not
/// also a `source`.
#[derive(Debug, Clone)]
pub struct NoCapacity {
    pub tiers: Tiers,
    pub tried: Tier,
    pub cause: GlacierError,
}

impl std::fmt::Display for NoCapacity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} capacity is short ({})",
            self.tried.as_str(),
            self.cause
        )?;
        if self.tried == Tier::Expedited && self.tiers.fallback.is_none() {
            write!(
                f,
                "; add ,standard to the tier, as in --tier {},standard, to fall back to Standard",
                self.tiers
            )?;
        }
        Ok(())
    }
}

impl std::error::Error for NoCapacity {}

/// How fast a tier is, fastest first: a fallback must be slower than the tier it follows.
fn speed_rank(t: Tier) -> u8 {
    match t {
        Tier::Expedited => 0,
        Tier::Standard => 1,
        Tier::Bulk => 2,
    }
}

/// Parses `--tier`: one tier, or a tier and its fallback, separated by `,` (or `:`, which the
/// `-o tier=expedited:standard` form of a mount uses, since a comma there separates options).
pub fn parse_tiers(s: &str) -> Result<Tiers, OptionError> {
    let mut named: Vec<Tier> = Vec::new();
    for word in s.split([',', ':']).map(str::trim) {
        let t = Tier::parse(word).ok_or_else(|| OptionError::Tier(word.to_owned()))?;
        if named.contains(&t) {
            return Err(OptionError::TierTwice(s.to_owned(), t.as_str()));
        }
        if named
            .last()
            .is_some_and(|&last| speed_rank(last) > speed_rank(t))
        {
            return Err(OptionError::TierOrder(s.to_owned()));
        }
        named.push(t);
    }
    match named[..] {
        [first] => Ok(Tiers::from(first)),
        [Tier::Expedited, next] => Ok(Tiers {
            first: Tier::Expedited,
            fallback: Some(next),
        }),
        _ => Err(OptionError::TierFallback(s.to_owned())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size("4096"), Ok(4096));
        assert_eq!(parse_size("16MiB"), Ok(16 * MIB));
        assert_eq!(parse_size("1GiB"), Ok(GIB));
        assert_eq!(parse_size("10G"), Ok(10 * GIB));
        assert!(parse_size("ten").is_err());
        assert!(parse_size("5XB").is_err());
        assert!(parse_size("99999999999999T").is_err());
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("30"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_snapshot_interval("off"), Ok(SnapshotInterval(None)));
        assert_eq!(
            parse_snapshot_interval("12h"),
            Ok(SnapshotInterval(Some(Duration::from_secs(43_200))))
        );
        assert!(parse_snapshot_interval("never").is_err());
        assert_eq!(parse_duration("5s"), Ok(Duration::from_secs(5)));
        assert_eq!(parse_duration("10m"), Ok(Duration::from_secs(600)));
        assert_eq!(parse_duration("24h"), Ok(Duration::from_secs(86400)));
        assert!(parse_duration("5 weeks").is_err());
    }

    #[test]
    fn part_sizes() {
        assert_eq!(parse_part_size("1MiB"), Ok(MIB));
        assert_eq!(parse_part_size("4GiB"), Ok(4 * GIB));
        assert!(parse_part_size("3MiB").is_err());
        assert!(parse_part_size("512KiB").is_err());
        assert!(parse_part_size("8GiB").is_err());
    }

    #[test]
    fn storage_classes_read_in_any_case() {
        assert_eq!(
            parse_storage_class("DEEP_ARCHIVE"),
            Ok(StorageClass::DeepArchive)
        );
        assert_eq!(
            parse_storage_class("glacier-ir"),
            Ok(StorageClass::GlacierIr)
        );
        assert_eq!(
            parse_storage_class("Standard_IA"),
            Ok(StorageClass::StandardIa)
        );
        for c in StorageClass::ALL {
            assert_eq!(parse_storage_class(c.as_str()), Ok(c));
        }
        assert!(parse_storage_class("REDUCED_REDUNDANCY").is_err());
    }

    #[test]
    fn mount_defaults_match_the_design() {
        let cli = Cli::try_parse_from(["glacierfs", "mount", "/mnt"]).expect("parses");
        let Command::Mount(m) = cli.command else {
            panic!("not a mount")
        };
        assert_eq!(m.cache_size, 10 * GIB);
        assert_eq!(m.part_size, 16 * MIB);
        assert_eq!(m.upload_concurrency, 4);
        assert_eq!(m.memory_budget, 512 * MIB);
        assert_eq!(m.write_back_delay, Duration::from_secs(5));
        assert_eq!(m.poll_interval, Duration::from_secs(60));
        assert_eq!(m.inventory_max_age, Duration::from_secs(86400));
        assert_eq!(m.tier, Tiers::from(Tier::Standard));
        assert_eq!(m.tier.fallback(), None);
        assert_eq!(m.aws.account_id, "-");
        assert_eq!(m.retrieval_job_budget, 1000);
        assert!(m.retrieve_deny.is_empty() && m.retrieve_allow.is_empty());
    }

    #[test]
    fn a_tier_list_is_a_tier_and_its_fallback() {
        let one = parse_tiers("Bulk").unwrap();
        assert_eq!((one.first(), one.fallback()), (Tier::Bulk, None));
        for text in [
            "expedited,standard",
            " Expedited , STANDARD ",
            "expedited:standard",
        ] {
            let t = parse_tiers(text).unwrap_or_else(|e| panic!("{text}: {e}"));
            assert_eq!(
                (t.first(), t.fallback()),
                (Tier::Expedited, Some(Tier::Standard))
            );
            assert_eq!(t.to_string(), "expedited,standard");
            assert_eq!(t.describe(), "Expedited, then Standard");
        }
        let t = parse_tiers("expedited,bulk").unwrap();
        assert_eq!(t.fallback(), Some(Tier::Bulk));
        // What the option prints parses back to the same list (retrieve hands it on so).
        for t in [one, t, Tiers::from(Tier::Expedited)] {
            assert_eq!(parse_tiers(&t.to_string()), Ok(t));
        }
    }

    #[test]
    fn bad_tier_lists_are_refused_in_one_line() {
        let refused = |text: &str| parse_tiers(text).expect_err(text);
        assert_eq!(
            refused("expedited,expedited"),
            OptionError::TierTwice("expedited,expedited".into(), "Expedited")
        );
        assert_eq!(
            refused("standard,expedited"),
            OptionError::TierOrder("standard,expedited".into())
        );
        assert_eq!(
            refused("bulk:standard"),
            OptionError::TierOrder("bulk:standard".into())
        );
        for text in ["expedited,standard,bulk", "standard,bulk"] {
            assert_eq!(refused(text), OptionError::TierFallback(text.into()));
        }
        assert_eq!(refused("expedited,"), OptionError::Tier(String::new()));
        assert_eq!(refused("fast,bulk"), OptionError::Tier("fast".into()));
        for text in [
            "expedited,expedited",
            "standard,expedited",
            "standard,bulk",
            "x",
        ] {
            let line = refused(text).to_string();
            assert!(!line.contains('\n') && line.contains(text), "{line}");
        }
        // The command line says the same.
        let e = mount(&["--tier", "standard,bulk"]).unwrap_err().to_string();
        assert!(e.contains("only expedited takes a fallback"), "{e}");
        let m = mount(&["--tier", "expedited,standard"]).unwrap();
        assert_eq!(m.tier.fallback(), Some(Tier::Standard));
    }

    #[test]
    fn a_shortage_falls_back_only_when_the_list_says_so() {
        let short = || {
            GlacierError::new(
                "InitiateJob",
                crate::glacier::ErrorKind::InsufficientCapacity,
                "not enough capacity",
            )
        };
        let listed = parse_tiers("expedited,standard").unwrap();
        assert_eq!(
            listed.on_shortage(Tier::Expedited, short(), "f").unwrap(),
            Tier::Standard
        );
        // The fallback is asked for once: short again, it fails.
        assert!(listed.on_shortage(Tier::Standard, short(), "f").is_err());
        let alone = Tiers::from(Tier::Expedited);
        let e = alone
            .on_shortage(Tier::Expedited, short(), "f")
            .unwrap_err();
        let line = e.to_string();
        assert!(
            line.starts_with("Expedited capacity is short (InitiateJob: not enough capacity)")
                && line.contains("--tier expedited,standard")
                && !line.contains('\n'),
            "{line}"
        );
    }

    fn mount(args: &[&str]) -> Result<MountArgs, clap::Error> {
        let all = ["glacierfs", "mount"].iter().chain(args).chain(&["/mnt"]);
        Cli::try_parse_from(all).map(|cli| match cli.command {
            Command::Mount(m) => m,
            other => panic!("not a mount: {other:?}"),
        })
    }

    #[test]
    fn peek_lists_and_the_job_budget_parse() {
        let m = mount(&[
            "--retrieve-deny",
            "cat,my-indexer*",
            "--retrieve-deny",
            "vlc",
            "--retrieve-allow",
            " tumblerd ",
            "--retrieval-job-budget",
            "3",
        ])
        .expect("parses");
        assert_eq!(m.retrieve_deny, ["cat", "my-indexer*", "vlc"]);
        assert_eq!(m.retrieve_allow, ["tumblerd"]);
        assert_eq!(m.retrieval_job_budget, 3);
        assert_eq!(
            mount(&["--retrieval-job-budget", "0"])
                .unwrap()
                .retrieval_job_budget,
            0
        );
        for bad in ["/usr/bin/cat", "cat,,vlc", "", "a\tb"] {
            let e = mount(&["--retrieve-deny", bad]).expect_err(bad);
            assert!(
                e.to_string().contains("invalid program name"),
                "{bad:?}: {e}"
            );
        }
        assert!(mount(&["--retrieval-job-budget", "-1"]).is_err());
        assert!(mount(&["--retrieval-job-budget", "many"]).is_err());
        assert_eq!(parse_program("nautilus"), Ok("nautilus".to_owned()));
    }
}
