//! The emulated service's state: vaults, archives, uploads, jobs, locks and the clock.
//!
//! Time only moves when the owner says so (a test, or the binary keeping up with real time).
//! Job completion, job expiry and lock expiry are all functions of that clock; [`State::settle`]
//! applies them, and runs after every request and every clock change so that a job's output is
//! fixed at the moment it completes (an inventory job returns the snapshot current at
//! completion, not whatever is current when it is read).

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use rand::rngs::StdRng;
use serde_json::Value;

use super::inventory;
use super::retrievals::Retrievals;
use super::util::{chunk_hashes, random_id, tree_of, Digest};

pub(crate) const HOUR_MS: i64 = 3_600_000;
pub(crate) const DAY_MS: i64 = 24 * HOUR_MS;

/// Settings the handlers need; fixed at start except `auto_inventory` and `ignore_range`.
#[derive(Clone, Debug)]
pub(crate) struct Config {
    pub region: String,
    pub account_id: String,
    pub expedited_ms: i64,
    pub standard_ms: i64,
    pub bulk_ms: i64,
    pub inventory_ms: i64,
    pub job_retention_ms: i64,
    pub auto_inventory: bool,
    pub csv_crlf: bool,
    /// GetJobOutput of an archive answers as moto does: the whole output (200), whatever
    /// `Range` asked for, with no tree-hash header.
    pub ignore_range: bool,
}

pub(crate) struct Archive {
    pub id: String,
    pub description: String,
    pub data: Arc<Vec<u8>>,
    pub chunks: Vec<Digest>,
    pub tree_hash: Digest,
    pub created_ms: i64,
    pub seq: u64,
}

impl Archive {
    pub fn size(&self) -> u64 {
        self.data.len() as u64
    }
}

/// An inventory as of `date_ms`: what inventory jobs return and DescribeVault counts.
pub(crate) struct Snapshot {
    pub date_ms: i64,
    /// Ordered by (creation, seq): the order inventories list and markers walk.
    pub archives: Vec<Arc<Archive>>,
    /// The vault's `write_seq` when taken; DeleteVault needs it unchanged since.
    pub write_seq: u64,
}

pub(crate) struct Part {
    pub data: Vec<u8>,
    pub chunks: Vec<Digest>,
    pub tree_hash: Digest,
}

pub(crate) struct Upload {
    pub id: String,
    pub description: String,
    pub part_size: u64,
    pub created_ms: i64,
    pub last_activity_ms: i64,
    pub seq: u64,
    /// Parts by start offset.
    pub parts: BTreeMap<u64, Part>,
}

/// What became of an upload that is no longer open, kept for the documented idempotency:
/// a repeat Complete returns the same archive, and a repeat Abort succeeds.
pub(crate) enum Finished {
    Completed {
        archive_id: String,
        tree_hash: Digest,
        at_ms: i64,
    },
    Aborted {
        at_ms: i64,
    },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Tier {
    Expedited,
    Standard,
    Bulk,
}

impl Tier {
    pub fn parse(s: &str) -> Option<Tier> {
        match s {
            "Expedited" => Some(Tier::Expedited),
            "Standard" => Some(Tier::Standard),
            "Bulk" => Some(Tier::Bulk),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Tier::Expedited => "Expedited",
            Tier::Standard => "Standard",
            Tier::Bulk => "Bulk",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Format {
    Json,
    Csv,
}

/// The inventory filters of a job, kept as given (strings echo back in DescribeJob).
#[derive(Clone, Debug, Default)]
pub(crate) struct InventoryFilter {
    pub start: Option<(String, i64)>,
    pub end: Option<(String, i64)>,
    pub limit: Option<(String, usize)>,
    /// Position (creation ms, seq) to resume from.
    pub marker: Option<(i64, u64)>,
}

pub(crate) enum JobKind {
    Archive {
        archive: Arc<Archive>,
        first: u64,
        last: u64,
    },
    Inventory {
        format: Format,
        filter: InventoryFilter,
    },
}

pub(crate) enum Outcome {
    Succeeded {
        output: Arc<Vec<u8>>,
        start: usize,
        end: usize,
        next_marker: Option<String>,
    },
    Failed(String),
}

pub(crate) struct Job {
    pub id: String,
    pub seq: u64,
    pub kind: JobKind,
    pub description: Option<String>,
    pub sns_topic: Option<String>,
    pub tier: Tier,
    pub created_ms: i64,
    pub complete_ms: i64,
    /// Fixed by `settle` once the clock reaches `complete_ms`.
    pub outcome: Option<Outcome>,
}

impl Job {
    pub fn status_code(&self) -> &'static str {
        match self.outcome {
            None => "InProgress",
            Some(Outcome::Succeeded { .. }) => "Succeeded",
            Some(Outcome::Failed(_)) => "Failed",
        }
    }

    pub fn action(&self) -> &'static str {
        match self.kind {
            JobKind::Archive { .. } => "ArchiveRetrieval",
            JobKind::Inventory { .. } => "InventoryRetrieval",
        }
    }
}

#[derive(Clone, Debug)]
pub(crate) enum LockState {
    InProgress { expires_ms: i64 },
    Locked,
}

#[derive(Clone, Debug)]
pub(crate) struct Lock {
    pub lock_id: String,
    pub policy: String,
    pub created_ms: i64,
    pub state: LockState,
}

pub(crate) struct Vault {
    pub name: String,
    pub created_ms: i64,
    pub archives: HashMap<String, Arc<Archive>>,
    /// Bumped by every archive added or deleted.
    pub write_seq: u64,
    pub snapshot: Option<Snapshot>,
    pub uploads: HashMap<String, Upload>,
    pub finished_uploads: HashMap<String, Finished>,
    pub jobs: HashMap<String, Job>,
    pub lock: Option<Lock>,
    pub access_policy: Option<String>,
    pub notifications: Option<Value>,
    pub tags: BTreeMap<String, String>,
}

impl Vault {
    pub fn new(name: &str, now_ms: i64) -> Vault {
        Vault {
            name: name.to_string(),
            created_ms: now_ms,
            archives: HashMap::new(),
            write_seq: 0,
            snapshot: None,
            uploads: HashMap::new(),
            finished_uploads: HashMap::new(),
            jobs: HashMap::new(),
            lock: None,
            access_policy: None,
            notifications: None,
            tags: BTreeMap::new(),
        }
    }

    /// Takes an inventory of the live archives.
    pub fn take_snapshot(&mut self, now_ms: i64) {
        let mut archives: Vec<Arc<Archive>> = self.archives.values().cloned().collect();
        archives.sort_by_key(|a| (a.created_ms, a.seq));
        self.snapshot = Some(Snapshot {
            date_ms: now_ms,
            archives,
            write_seq: self.write_seq,
        });
    }

    /// Jobs ordered by initiation, the order ListJobs uses.
    pub fn jobs_in_order(&self) -> Vec<&Job> {
        let mut jobs: Vec<&Job> = self.jobs.values().collect();
        jobs.sort_by_key(|j| j.seq);
        jobs
    }
}

pub(crate) struct State {
    pub config: Config,
    pub now_ms: i64,
    /// Global sequence: orders items created within the same millisecond.
    pub seq: u64,
    pub rng: StdRng,
    pub vaults: BTreeMap<String, Vault>,
    pub data_retrieval_policy: Value,
    pub capacity: Vec<(String, i64, i64)>,
    /// On-demand Expedited capacity is short: an Expedited archive retrieval is refused unless
    /// the account has an unexpired provisioned capacity unit.
    pub expedited_shortage: bool,
    /// Archive retrievals refused by the data-retrieval policy, for tests that must see none.
    pub policy_refusals: u64,
    /// Every archive retrieval initiated, for tests (see `retrievals`).
    pub retrievals: Retrievals,
}

impl State {
    pub fn new(config: Config, now_ms: i64, rng: StdRng) -> State {
        State {
            config,
            now_ms,
            seq: 0,
            rng,
            vaults: BTreeMap::new(),
            data_retrieval_policy: serde_json::json!({ "Rules": [{ "Strategy": "FreeTier" }] }),
            capacity: Vec::new(),
            expedited_shortage: false,
            policy_refusals: 0,
            retrievals: Retrievals::default(),
        }
    }

    pub fn next_seq(&mut self) -> u64 {
        self.seq += 1;
        self.seq
    }

    pub fn new_id(&mut self, len: usize) -> String {
        random_id(&mut self.rng, len)
    }

    pub fn vault_arn(&self, name: &str) -> String {
        format!(
            "arn:aws:glacier:{}:{}:vaults/{}",
            self.config.region, self.config.account_id, name
        )
    }

    pub fn location(&self, rest: &str) -> String {
        format!("/{}/vaults/{}", self.config.account_id, rest)
    }

    /// Stores a new archive; the caller has checked everything. Returns its id.
    pub fn add_archive(
        &mut self,
        vault: &str,
        description: String,
        data: Vec<u8>,
        created_ms: i64,
    ) -> String {
        let chunks = chunk_hashes(&data);
        let tree_hash = tree_of(&chunks);
        self.add_archive_hashed(vault, description, data, chunks, tree_hash, created_ms)
    }

    pub fn add_archive_hashed(
        &mut self,
        vault: &str,
        description: String,
        data: Vec<u8>,
        chunks: Vec<Digest>,
        tree_hash: Digest,
        created_ms: i64,
    ) -> String {
        let id = self.new_id(138);
        let seq = self.next_seq();
        let archive = Archive {
            id: id.clone(),
            description,
            data: Arc::new(data),
            chunks,
            tree_hash,
            created_ms,
            seq,
        };
        let v = self
            .vaults
            .get_mut(vault)
            .expect("caller checked the vault exists");
        v.archives.insert(id.clone(), Arc::new(archive));
        v.write_seq += 1;
        id
    }

    /// Removes an archive. Jobs already prepared keep their output; jobs still running fail
    /// when they complete (see `settle`).
    pub fn remove_archive(&mut self, vault: &str, id: &str) -> bool {
        let Some(v) = self.vaults.get_mut(vault) else {
            return false;
        };
        let removed = v.archives.remove(id).is_some();
        if removed {
            v.write_seq += 1;
        }
        removed
    }

    pub fn advance(&mut self, ms: i64) {
        self.now_ms += ms;
        self.settle();
    }

    /// Applies everything the clock implies: completes due jobs (fixing their output), drops
    /// expired job output, expired locks and old idempotency records.
    pub fn settle(&mut self) {
        let now = self.now_ms;
        let config = self.config.clone();
        for vault in self.vaults.values_mut() {
            let mut due: Vec<String> = vault
                .jobs
                .values()
                .filter(|j| j.outcome.is_none() && j.complete_ms <= now)
                .map(|j| j.id.clone())
                .collect();
            due.sort_by_key(|id| vault.jobs[id].complete_ms);
            for id in due {
                complete_job(vault, &id, &config);
            }
            vault.jobs.retain(|_, j| {
                j.outcome.is_none() || now < j.complete_ms + config.job_retention_ms
            });
            if let Some(Lock {
                state: LockState::InProgress { expires_ms },
                ..
            }) = &vault.lock
            {
                if now >= *expires_ms {
                    vault.lock = None;
                }
            }
            vault.finished_uploads.retain(|_, f| {
                let at = match f {
                    Finished::Completed { at_ms, .. } | Finished::Aborted { at_ms } => *at_ms,
                };
                now < at + DAY_MS
            });
        }
    }
}

/// Fixes the outcome of a job reaching its completion time.
fn complete_job(vault: &mut Vault, id: &str, config: &Config) {
    let complete_ms = vault.jobs[id].complete_ms;
    let outcome = match &vault.jobs[id].kind {
        JobKind::Archive {
            archive,
            first,
            last,
        } => {
            if vault.archives.contains_key(&archive.id) {
                Outcome::Succeeded {
                    output: archive.data.clone(),
                    start: *first as usize,
                    end: *last as usize + 1,
                    next_marker: None,
                }
            } else {
                Outcome::Failed("The archive was deleted before the job completed".into())
            }
        }
        JobKind::Inventory { format, filter } => {
            let (format, filter) = (*format, filter.clone());
            if config.auto_inventory {
                // The snapshot is dated at the job's completion; the live state is the state at
                // that instant, since nothing changes while the clock jumps.
                let newer = vault
                    .snapshot
                    .as_ref()
                    .is_none_or(|s| s.date_ms <= complete_ms);
                if newer {
                    vault.take_snapshot(complete_ms);
                }
            }
            match &vault.snapshot {
                None => Outcome::Failed("The vault has no inventory yet".into()),
                Some(snap) => {
                    let arn = format!(
                        "arn:aws:glacier:{}:{}:vaults/{}",
                        config.region, config.account_id, vault.name
                    );
                    let (bytes, next_marker) =
                        inventory::render(snap, &arn, format, &filter, config.csv_crlf);
                    let end = bytes.len();
                    Outcome::Succeeded {
                        output: Arc::new(bytes),
                        start: 0,
                        end,
                        next_marker,
                    }
                }
            }
        }
    };
    vault.jobs.get_mut(id).expect("due job exists").outcome = Some(outcome);
}
