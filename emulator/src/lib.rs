//! A Glacier emulator: an HTTP/1.1 server on 127.0.0.1 that speaks the Glacier REST API
//! (2012-06-01) as Glacier's API reference describes it, inside the process
//! that starts it. glacierfs's tests start one per test; the `glacier-emulator` binary
//! (`main.rs`) serves one on its own for a try-out, its clock following real time.
//!
//! Tests drive the service through the real SDK and inspect or nudge it through [`Emulator`]'s
//! methods: a clock that only moves on [`Emulator::advance`], inventory snapshots taken on
//! demand, out-of-band changes, and fault injection. The daemon under test sees only the API.
//!
//! Layout: `http` (sockets and fault delivery), `router` (operations), `sigv4` (signature
//! checks), `api` (dispatch and shared checks), one module per resource family (`vaults`, `archives`, `jobs`, `lock`,
//! `extras`), `inventory` (job output), `state` (the model and clock), `faults`, `wire`
//! (request/response/error shapes), `util` (hashes, dates, ids) and `retrievals` (what archive
//! retrievals are in flight, for tests that bound it: [`Emulator::max_retrievals_in_flight`]).
//!
//! **S3.** The same endpoint serves an S3 subset, path-style, for glacierfs's export to S3
//! (`s3`): a request whose SigV4 credential scope names the service `s3` is S3's, anything
//! else Glacier's. Tests read what was stored ([`Emulator::s3_object`],
//! [`Emulator::s3_open_uploads`]), count requests ([`Stats::s3_requests_for`],
//! [`Stats::s3_writes`]), script faults ([`Emulator::s3_fail_next`]) and stop the world at an
//! exact step with a hook ([`Emulator::s3_set_hook`]). Objects of every storage class are
//! readable at once: restores are not emulated.
//!
//! **Signatures.** Every request must carry a valid AWS Signature Version 4 for a known access
//! key, scoped to the emulator's region and `glacier`, over the body actually received; an
//! `x-amz-content-sha256` must be that body's SHA-256 (see `sigv4` for every check and its
//! error). The known keys are [`EmulatorOptions::credentials`], by default the one well-known
//! pair [`ACCESS_KEY_ID`] / [`SECRET_ACCESS_KEY`]; [`Emulator::accept_credentials`] adds one.
//! The switch is [`EmulatorOptions::verify_signatures`] (on by default) or
//! [`Emulator::set_verify_signatures`]: turn it off only for a test that sends raw, unsigned
//! HTTP on purpose. `x-amz-glacier-version` is required either way.
//!
//! **Clock.** Emulated time starts at [`DEFAULT_START_SECS`] (or real now) and moves only on
//! [`Emulator::advance`] / [`Emulator::complete_all_jobs`] (the binary calls `advance` in step
//! with real time). Jobs complete at creation + tier time (inventory: 4 h whatever the tier),
//! their output is fixed at that instant, and they vanish (404, gone from ListJobs) 24 h later.
//! An InProgress vault lock expires 24 h after initiation.
//!
//! **Inventory.** Jobs return the last snapshot, never live state: [`Emulator::take_inventory`]
//! takes one now; with [`Emulator::set_auto_inventory`] each inventory job snapshots the vault at
//! its completion. DescribeVault counts come from the snapshot (`null` before the first), and
//! DeleteVault needs a snapshot showing the vault empty with no write since.
//!
//! **Faults.** See [`FaultKind`]: error responses, resets and stalls fire before the request is
//! handled (nothing changes); the `…AfterCommit` kinds handle it first; output faults act on
//! GetJobOutput bodies. Scripted faults ([`Emulator::fail_next`]) go before the seeded plan;
//! [`Emulator::stall_job_output`] holds one job's downloads from an offset on.
//!
//! **Link.** [`Link`] (`link`) adds a latency to every request and a bandwidth cap per
//! connection, Glacier's and S3's alike, for benchmarks of concurrency: [`EmulatorOptions::link`]
//! or [`Emulator::set_link`]. Off by default.
//!
//! **Choices where the documents are silent:**
//! - GetJobOutput answers any `Range` request with 206 (even one covering everything) and clamps
//!   an end beyond the output; a start beyond it is InvalidParameterValueException.
//! - Markers are opaque and name a position, not an item (ListVaults: the last ARN returned, as
//!   documented; ListParts: the next part's offset). ListJobs and ListMultipartUploads list in
//!   initiation order.
//! - A repeat Complete or Abort of a multipart upload is honoured for 24 h; aborting a completed
//!   upload, or completing an aborted one, is ResourceNotFoundException.
//! - An archive deleted before its retrieval job completes makes the job Failed; output already
//!   fixed stays downloadable.
//! - CompleteVaultLock with no lock is InvalidParameterValueException. Select jobs are refused.
//! - Unknown routes get 400 UnknownOperationException; the `Date` header shows emulated time.

mod api;
mod archives;
mod extras;
mod faults;
mod http;
mod inventory;
mod jobs;
mod link;
mod lock;
mod retrievals;
mod router;
mod s3;
mod sigv4;
mod state;
mod util;
mod vaults;
mod wire;

use std::collections::BTreeMap;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rand::rngs::StdRng;
use rand::SeedableRng;

pub use faults::{FaultKind, FaultPlan};
pub use link::Link;
pub use router::Op;
pub use s3::state::valid_bucket_name;
pub use s3::{S3Event, S3FaultKind, S3Hook, S3ObjectInfo, S3Op, S3UploadInfo, Stage};
pub use sigv4::{ACCESS_KEY_ID, SECRET_ACCESS_KEY};

use api::BodyHashes;
use faults::Faults;
use state::{JobKind, LockState, State};
use util::{iso_secs, sha256};
use wire::{ApiError, OutputServed, Request};

/// 2026-01-01T00:00:00Z, the default start of the emulated clock.
pub const DEFAULT_START_SECS: i64 = 1_767_225_600;

/// Where the emulated clock starts. It never moves on its own either way.
#[derive(Clone, Copy, Debug)]
pub enum ClockStart {
    /// Seconds since the Unix epoch.
    Fixed(i64),
    /// The real time at start-up.
    RealNow,
}

#[derive(Clone, Debug)]
pub struct EmulatorOptions {
    /// Address to listen on; port 0 picks a free one.
    pub bind: SocketAddr,
    pub clock: ClockStart,
    pub region: String,
    /// The numeric account id used in ARNs and `Location` headers.
    pub account_id: String,
    /// Time from initiation to completion of archive jobs, per tier.
    pub expedited: Duration,
    pub standard: Duration,
    pub bulk: Duration,
    /// Inventory jobs take this long regardless of tier.
    pub inventory: Duration,
    /// How long a completed job (and its output) stays available.
    pub job_retention: Duration,
    /// An inventory job's output is a snapshot taken at the job's completion.
    pub auto_inventory: bool,
    /// CSV inventories end lines with CRLF instead of LF.
    pub csv_crlf: bool,
    /// How long the `Timeout` faults hold a connection before dropping it.
    pub stall: Duration,
    /// Seeds the archive, upload, job and lock ids.
    pub id_seed: u64,
    /// Check every request's SigV4 signature and payload hash. Off only for tests that send
    /// raw, unsigned HTTP on purpose.
    pub verify_signatures: bool,
    /// Secrets by access key id: the credentials a signature may be made with.
    pub credentials: BTreeMap<String, String>,
    /// Latency per request and bandwidth per connection (none by default).
    pub link: Link,
}

impl Default for EmulatorOptions {
    fn default() -> Self {
        EmulatorOptions {
            bind: SocketAddr::from(([127, 0, 0, 1], 0)),
            clock: ClockStart::Fixed(DEFAULT_START_SECS),
            region: "us-east-1".into(),
            account_id: "123456789012".into(),
            expedited: Duration::from_secs(3 * 60),
            standard: Duration::from_secs(4 * 3600),
            bulk: Duration::from_secs(8 * 3600),
            inventory: Duration::from_secs(4 * 3600),
            job_retention: Duration::from_secs(24 * 3600),
            auto_inventory: false,
            csv_crlf: false,
            stall: Duration::from_secs(5),
            id_seed: 0x6c61_6369_6572,
            verify_signatures: true,
            credentials: sigv4::default_keys(),
            link: Link::default(),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ArchiveInfo {
    pub id: String,
    pub description: String,
    pub size: u64,
    /// Lowercase hex.
    pub tree_hash: String,
    /// ISO-8601, seconds precision, as inventories show it.
    pub creation_date: String,
    pub creation_secs: i64,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct JobInfo {
    pub id: String,
    /// `ArchiveRetrieval` or `InventoryRetrieval`.
    pub action: String,
    pub archive_id: Option<String>,
    pub tier: String,
    /// `InProgress`, `Succeeded` or `Failed`.
    pub status: String,
    /// Inclusive byte range retrieved, for archive jobs.
    pub range: Option<(u64, u64)>,
    pub description: Option<String>,
    pub creation_secs: i64,
    /// When the job completes (or completed).
    pub completion_secs: i64,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UploadInfo {
    pub id: String,
    pub description: String,
    pub part_size: u64,
    pub creation_secs: i64,
    pub last_activity_secs: i64,
    /// Inclusive byte ranges of the parts received, sorted.
    pub parts: Vec<(u64, u64)>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LockInfo {
    pub lock_id: String,
    /// `InProgress` or `Locked`.
    pub state: String,
    pub policy: String,
    pub creation_secs: i64,
    pub expiration_secs: Option<i64>,
}

/// An archive-retrieval job, as [`Emulator::retrieval_log`] reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RetrievalInfo {
    pub job_id: String,
    pub vault: String,
    pub archive_id: String,
    /// Inclusive byte range of the archive retrieved.
    pub range: (u64, u64),
    pub creation_secs: i64,
    /// Whether every byte of its output has been served in full at least once.
    pub downloaded: bool,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct JobOutputStats {
    /// Inclusive ranges, relative to the job output, in the order served.
    pub ranges: Vec<(u64, u64)>,
    /// Body bytes actually written to the socket.
    pub bytes_served: u64,
}

#[derive(Clone, Debug, Default)]
pub struct Stats {
    /// Requests received per operation, faulted ones included.
    pub requests: BTreeMap<Op, u64>,
    /// Faults injected, by kind.
    pub faults: BTreeMap<FaultKind, u64>,
    pub job_output: BTreeMap<String, JobOutputStats>,
    /// S3 requests received per operation, faulted and refused ones included.
    pub s3_requests: BTreeMap<S3Op, u64>,
    /// S3 faults injected, by kind.
    pub s3_faults: BTreeMap<S3FaultKind, u64>,
}

impl Stats {
    pub fn requests_for(&self, op: Op) -> u64 {
        self.requests.get(&op).copied().unwrap_or(0)
    }

    /// S3 requests received for `op`, faulted and refused ones included.
    pub fn s3_requests_for(&self, op: S3Op) -> u64 {
        self.s3_requests.get(&op).copied().unwrap_or(0)
    }

    /// S3 requests to operations that change state ([`S3Op::is_write`]): PUT of an object,
    /// a part or a copy, create, complete and abort of an upload, deletes, bucket creation.
    /// Counted whatever their outcome; reads (GET, HEAD, lists) never count.
    pub fn s3_writes(&self) -> u64 {
        self.s3_requests
            .iter()
            .filter(|(op, _)| op.is_write())
            .map(|(_, n)| n)
            .sum()
    }

    pub fn faults_injected(&self) -> u64 {
        self.faults.values().sum()
    }
}

#[derive(Default)]
struct Record {
    stats: Stats,
    log: Vec<(Op, u16)>,
    s3_log: Vec<(S3Op, u16)>,
}

/// What the server threads share with the test-facing handle.
pub(crate) struct Shared {
    state: Mutex<State>,
    faults: Mutex<Faults>,
    record: Mutex<Record>,
    stall: Mutex<Duration>,
    link: Mutex<Link>,
    auth: Mutex<sigv4::Verifier>,
    s3: Mutex<s3::state::S3State>,
    s3_faults: Mutex<s3::S3Faults>,
    s3_hook: Mutex<Option<S3Hook>>,
    shutdown: AtomicBool,
    request_ids: AtomicU64,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panicking test thread must not take the emulator down with it.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Shared {
    fn faults(&self) -> MutexGuard<'_, Faults> {
        lock(&self.faults)
    }

    fn now_ms(&self) -> i64 {
        lock(&self.state).now_ms
    }

    fn stall(&self) -> Duration {
        *lock(&self.stall)
    }

    fn link(&self) -> Link {
        *lock(&self.link)
    }

    /// Checks a request's signature and payload hash, unless verification is off. `hashes`
    /// are the upload hashes when the operation has them, whose linear hash is the body's.
    fn verify_signature(&self, req: &Request, hashes: Option<&BodyHashes>) -> Result<(), ApiError> {
        if !lock(&self.auth).enabled {
            return Ok(());
        }
        // Hashed outside the lock: bodies can be large.
        let body_sha256 = hashes.map_or_else(|| sha256(&req.body), |h| h.linear);
        sigv4::verify(&lock(&self.auth), req, &body_sha256)
    }

    fn next_request_id(&self) -> String {
        let n = self.request_ids.fetch_add(1, Ordering::Relaxed);
        format!("EMU{n:012}-{:08x}", n.wrapping_mul(0x9e37_79b9) as u32)
    }

    /// Logs a request; status 0 means no response was sent.
    fn record(&self, op: Op, status: u16) {
        let mut r = lock(&self.record);
        *r.stats.requests.entry(op).or_insert(0) += 1;
        r.log.push((op, status));
    }

    fn count_fault(&self, kind: FaultKind) {
        *lock(&self.record).stats.faults.entry(kind).or_insert(0) += 1;
    }

    /// Logs an S3 request; status 0 means no response was sent.
    fn record_s3(&self, op: S3Op, status: u16) {
        let mut r = lock(&self.record);
        *r.stats.s3_requests.entry(op).or_insert(0) += 1;
        r.s3_log.push((op, status));
    }

    fn count_s3_fault(&self, kind: S3FaultKind) {
        *lock(&self.record).stats.s3_faults.entry(kind).or_insert(0) += 1;
    }

    fn record_output(&self, served: &OutputServed, bytes: u64) {
        let mut r = lock(&self.record);
        let entry = r.stats.job_output.entry(served.job_id.clone()).or_default();
        entry.ranges.push((served.first, served.last));
        entry.bytes_served += bytes;
    }

    /// Marks output bytes as downloaded for the in-flight accounting (`retrievals`), once a
    /// response carrying them went out in full.
    fn output_delivered(&self, served: &OutputServed) {
        lock(&self.state).note_served(&served.job_id, served.first, served.last);
    }

    /// Takes back bytes counted by `record_output` that the socket did not accept.
    fn uncount_output(&self, job_id: &str, bytes: u64) {
        if bytes > 0 {
            if let Some(entry) = lock(&self.record).stats.job_output.get_mut(job_id) {
                entry.bytes_served -= bytes;
            }
        }
    }
}

/// A running emulator. The server stops when this is dropped.
pub struct Emulator {
    shared: Arc<Shared>,
    addr: SocketAddr,
    server: Option<JoinHandle<()>>,
}

fn ms(d: Duration) -> i64 {
    d.as_millis() as i64
}

impl Emulator {
    pub fn start() -> Emulator {
        Emulator::start_with(EmulatorOptions::default())
    }

    pub fn start_with(opts: EmulatorOptions) -> Emulator {
        Emulator::try_start_with(opts).expect("start the emulator")
    }

    /// Like [`Emulator::start_with`], but an address that cannot be bound (already in use, say)
    /// is an error rather than a panic, for the binary to report.
    pub fn try_start_with(opts: EmulatorOptions) -> std::io::Result<Emulator> {
        let start_ms = match opts.clock {
            ClockStart::Fixed(secs) => secs * 1000,
            ClockStart::RealNow => SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .expect("clock after 1970")
                .as_millis() as i64,
        };
        let config = state::Config {
            region: opts.region.clone(),
            account_id: opts.account_id.clone(),
            expedited_ms: ms(opts.expedited),
            standard_ms: ms(opts.standard),
            bulk_ms: ms(opts.bulk),
            inventory_ms: ms(opts.inventory),
            job_retention_ms: ms(opts.job_retention),
            auto_inventory: opts.auto_inventory,
            csv_crlf: opts.csv_crlf,
            ignore_range: false,
        };
        let shared = Arc::new(Shared {
            state: Mutex::new(State::new(
                config,
                start_ms,
                StdRng::seed_from_u64(opts.id_seed),
            )),
            faults: Mutex::new(Faults::default()),
            record: Mutex::new(Record::default()),
            stall: Mutex::new(opts.stall),
            link: Mutex::new(opts.link),
            auth: Mutex::new(sigv4::Verifier {
                enabled: opts.verify_signatures,
                region: opts.region.clone(),
                keys: opts.credentials.clone(),
            }),
            s3: Mutex::new(s3::state::S3State::new(StdRng::seed_from_u64(
                opts.id_seed ^ 0x5333,
            ))),
            s3_faults: Mutex::new(s3::S3Faults::default()),
            s3_hook: Mutex::new(None),
            shutdown: AtomicBool::new(false),
            request_ids: AtomicU64::new(1),
        });
        let listener = TcpListener::bind(opts.bind)?;
        let addr = listener.local_addr()?;
        let server_shared = shared.clone();
        let server = std::thread::Builder::new()
            .name("glacier-emulator".into())
            .spawn(move || http::serve(listener, server_shared))?;
        Ok(Emulator {
            shared,
            addr,
            server: Some(server),
        })
    }

    /// `http://127.0.0.1:PORT`.
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    fn state(&self) -> MutexGuard<'_, State> {
        lock(&self.shared.state)
    }

    /// Emulated time, seconds since the Unix epoch.
    pub fn now(&self) -> i64 {
        self.state().now_ms.div_euclid(1000)
    }

    /// Moves the clock forward; jobs that come due complete (their output fixed as of then),
    /// and expired jobs and locks go away.
    pub fn advance(&self, d: Duration) {
        self.state().advance(ms(d));
    }

    /// Creates a vault out of band (idempotent). Panics on an invalid name.
    pub fn create_vault(&self, name: &str) {
        assert!(util::valid_vault_name(name), "invalid vault name {name:?}");
        let mut st = self.state();
        let now = st.now_ms;
        st.vaults
            .entry(name.to_string())
            .or_insert_with(|| state::Vault::new(name, now));
    }

    pub fn vault_names(&self) -> Vec<String> {
        self.state().vaults.keys().cloned().collect()
    }

    /// Stores an archive directly, optionally backdated. Counts as a write to the vault.
    pub fn put_archive(
        &self,
        vault: &str,
        description: &str,
        data: &[u8],
        creation_secs: Option<i64>,
    ) -> String {
        assert!(!data.is_empty(), "an archive holds at least one byte");
        let mut st = self.state();
        assert!(st.vaults.contains_key(vault), "no vault {vault:?}");
        let created = creation_secs.map_or(st.now_ms, |s| s * 1000);
        st.add_archive(vault, description.to_string(), data.to_vec(), created)
    }

    /// Live archives (not the inventory), oldest first.
    pub fn archives(&self, vault: &str) -> Vec<ArchiveInfo> {
        let st = self.state();
        let Some(v) = st.vaults.get(vault) else {
            return Vec::new();
        };
        let mut list: Vec<_> = v.archives.values().collect();
        list.sort_by_key(|a| (a.created_ms, a.seq));
        list.iter()
            .map(|a| ArchiveInfo {
                id: a.id.clone(),
                description: a.description.clone(),
                size: a.size(),
                tree_hash: hex::encode(a.tree_hash),
                creation_date: iso_secs(a.created_ms),
                creation_secs: a.created_ms.div_euclid(1000),
            })
            .collect()
    }

    pub fn archive_data(&self, vault: &str, id: &str) -> Option<Vec<u8>> {
        let st = self.state();
        st.vaults
            .get(vault)?
            .archives
            .get(id)
            .map(|a| a.data.to_vec())
    }

    /// Deletes an archive behind the client's back (another tool, say).
    pub fn delete_archive_direct(&self, vault: &str, id: &str) {
        self.state().remove_archive(vault, id);
    }

    /// Takes an inventory snapshot at the current time: what later inventory jobs return and
    /// what DescribeVault counts.
    pub fn take_inventory(&self, vault: &str) {
        let mut st = self.state();
        let now = st.now_ms;
        st.vaults
            .get_mut(vault)
            .unwrap_or_else(|| panic!("no vault {vault:?}"))
            .take_snapshot(now);
    }

    /// Date of the last inventory snapshot, seconds.
    pub fn inventory_date(&self, vault: &str) -> Option<i64> {
        let st = self.state();
        st.vaults
            .get(vault)?
            .snapshot
            .as_ref()
            .map(|s| s.date_ms.div_euclid(1000))
    }

    pub fn set_auto_inventory(&self, on: bool) {
        self.state().config.auto_inventory = on;
    }

    /// Makes GetJobOutput of archives behave as moto's does: every request, ranged or not, is
    /// answered with the whole output (200, no Content-Range) and no tree-hash header, so a
    /// client must cope with data it can check only as a whole.
    pub fn set_ignore_range(&self, on: bool) {
        self.state().config.ignore_range = on;
    }

    /// Jobs still listed by the service (in progress, or completed and not yet expired).
    pub fn jobs(&self, vault: &str) -> Vec<JobInfo> {
        let st = self.state();
        let Some(v) = st.vaults.get(vault) else {
            return Vec::new();
        };
        v.jobs_in_order()
            .into_iter()
            .map(|j| {
                let (archive_id, range) = match &j.kind {
                    JobKind::Archive {
                        archive,
                        first,
                        last,
                    } => (Some(archive.id.clone()), Some((*first, *last))),
                    JobKind::Inventory { .. } => (None, None),
                };
                JobInfo {
                    id: j.id.clone(),
                    action: j.action().into(),
                    archive_id,
                    tier: j.tier.as_str().into(),
                    status: j.status_code().into(),
                    range,
                    description: j.description.clone(),
                    creation_secs: j.created_ms.div_euclid(1000),
                    completion_secs: j.complete_ms.div_euclid(1000),
                }
            })
            .collect()
    }

    /// Advances the clock just far enough for every running job to complete.
    pub fn complete_all_jobs(&self) {
        let mut st = self.state();
        let now = st.now_ms;
        let latest = st
            .vaults
            .values()
            .flat_map(|v| v.jobs.values())
            .filter(|j| j.outcome.is_none())
            .map(|j| j.complete_ms)
            .max();
        if let Some(t) = latest {
            st.advance((t - now).max(0));
        }
    }

    pub fn multipart_uploads(&self, vault: &str) -> Vec<UploadInfo> {
        let st = self.state();
        let Some(v) = st.vaults.get(vault) else {
            return Vec::new();
        };
        let mut list: Vec<_> = v.uploads.values().collect();
        list.sort_by_key(|u| u.seq);
        list.iter()
            .map(|u| UploadInfo {
                id: u.id.clone(),
                description: u.description.clone(),
                part_size: u.part_size,
                creation_secs: u.created_ms.div_euclid(1000),
                last_activity_secs: u.last_activity_ms.div_euclid(1000),
                parts: u
                    .parts
                    .iter()
                    .map(|(s, p)| (*s, s + p.data.len() as u64 - 1))
                    .collect(),
            })
            .collect()
    }

    /// Drops an upload as Glacier's idle reclaim would: afterwards it is simply unknown (404).
    pub fn drop_upload(&self, vault: &str, upload_id: &str) {
        if let Some(v) = self.state().vaults.get_mut(vault) {
            v.uploads.remove(upload_id);
        }
    }

    /// Drops every upload idle for at least `idle`; returns how many.
    pub fn drop_idle_uploads(&self, idle: Duration) -> usize {
        let mut st = self.state();
        let cutoff = st.now_ms - ms(idle);
        let mut dropped = 0;
        for v in st.vaults.values_mut() {
            let before = v.uploads.len();
            v.uploads.retain(|_, u| u.last_activity_ms > cutoff);
            dropped += before - v.uploads.len();
        }
        dropped
    }

    pub fn lock_state(&self, vault: &str) -> Option<LockInfo> {
        let st = self.state();
        let lock = st.vaults.get(vault)?.lock.as_ref()?;
        let (state, expiration_secs) = match lock.state {
            LockState::InProgress { expires_ms } => {
                ("InProgress", Some(expires_ms.div_euclid(1000)))
            }
            LockState::Locked => ("Locked", None),
        };
        Some(LockInfo {
            lock_id: lock.lock_id.clone(),
            state: state.into(),
            policy: lock.policy.clone(),
            creation_secs: lock.created_ms.div_euclid(1000),
            expiration_secs,
        })
    }

    /// Sets the link model for requests from now on (a request being served keeps the one it
    /// started with).
    pub fn set_link(&self, link: Link) {
        *lock(&self.shared.link) = link;
    }

    /// Installs a probabilistic fault plan (replacing any other) and restarts its counters.
    pub fn set_faults(&self, plan: FaultPlan) {
        self.shared.faults().set_plan(plan);
    }

    /// Removes the plan, scripted faults (S3's too) and pending output corruptions.
    pub fn clear_faults(&self) {
        self.shared.faults().clear();
        lock(&self.shared.s3_faults).clear();
    }

    /// The next `count` requests to `op` get `kind`, ahead of any plan.
    pub fn fail_next(&self, op: Op, kind: FaultKind, count: usize) {
        self.shared.faults().fail_next(op, kind, count);
    }

    /// Lets `skip` more requests to `op` through, then hits the next one with `kind`: places a
    /// fault (or, with a `*AfterCommit` stall, a crash point) at an exact step.
    pub fn fail_after(&self, op: Op, skip: usize, kind: FaultKind) {
        self.shared.faults().fail_after(op, skip, kind);
    }

    /// Flips a byte in the next download of this job's output (every download if persistent).
    pub fn corrupt_job_output(&self, job_id: &str, persistent: bool) {
        self.shared.faults().corrupt_job(job_id, persistent);
    }

    /// Downloads of this job's output whose `Range` starts at or beyond `from` (relative to the
    /// output; no `Range` starts at 0) stall like a `Timeout` fault: held silent for the stall
    /// time, then dropped without a response. Until `clear_faults`.
    pub fn stall_job_output(&self, job_id: &str, from: u64) {
        self.shared.faults().stall_job(job_id, from);
    }

    /// How long `Timeout` faults stall.
    pub fn set_stall(&self, d: Duration) {
        *lock(&self.shared.stall) = d;
    }

    /// Turns signature verification on or off from the next request on.
    pub fn set_verify_signatures(&self, on: bool) {
        lock(&self.shared.auth).enabled = on;
    }

    /// Accepts signatures made with this access key id and secret too (or, for a known id,
    /// with this secret instead of the old one).
    pub fn accept_credentials(&self, access_key_id: &str, secret_access_key: &str) {
        lock(&self.shared.auth)
            .keys
            .insert(access_key_id.to_string(), secret_access_key.to_string());
    }

    pub fn stats(&self) -> Stats {
        lock(&self.shared.record).stats.clone()
    }

    /// Every request in arrival order with the status sent; 0 means no response (reset or
    /// timeout fault).
    pub fn request_log(&self) -> Vec<(Op, u16)> {
        lock(&self.shared.record).log.clone()
    }

    /// Bytes of archive retrievals started and not yet downloaded: jobs still available and not
    /// failed whose output has not been served in full (a response counts once it went out
    /// whole; a body cut short counts for nothing).
    pub fn retrievals_in_flight(&self) -> u64 {
        self.state().retrievals_in_flight()
    }

    /// The most [`Emulator::retrievals_in_flight`] ever was, since start.
    pub fn max_retrievals_in_flight(&self) -> u64 {
        self.state().retrievals.max_in_flight
    }

    /// Every archive-retrieval job ever initiated, in order, including jobs since expired.
    pub fn retrieval_log(&self) -> Vec<RetrievalInfo> {
        let st = self.state();
        st.retrievals
            .log
            .iter()
            .map(|r| RetrievalInfo {
                job_id: r.job_id.clone(),
                vault: r.vault.clone(),
                archive_id: r.archive_id.clone(),
                range: (r.first, r.last),
                creation_secs: r.created_ms.div_euclid(1000),
                downloaded: r.downloaded(),
            })
            .collect()
    }

    /// Sets the account's data-retrieval policy as SetDataRetrievalPolicy would: `strategy`
    /// is `None`, `FreeTier` or `BytesPerHour` (with `bytes_per_hour`).
    pub fn set_retrieval_policy(&self, strategy: &str, bytes_per_hour: Option<u64>) {
        let mut rule = serde_json::json!({ "Strategy": strategy });
        if let (Some(n), Some(map)) = (bytes_per_hour, rule.as_object_mut()) {
            map.insert("BytesPerHour".into(), serde_json::json!(n));
        }
        self.state().data_retrieval_policy = serde_json::json!({ "Rules": [rule] });
    }

    /// Makes on-demand Expedited capacity short (or plentiful again): while short, an Expedited
    /// archive retrieval fails with InsufficientCapacityException unless the account has an
    /// unexpired provisioned capacity unit.
    pub fn set_expedited_shortage(&self, short: bool) {
        self.state().expedited_shortage = short;
    }

    /// Archive retrievals refused with PolicyEnforcedException by the data-retrieval policy.
    pub fn policy_refusals(&self) -> u64 {
        self.state().policy_refusals
    }

    /// Clears the counts and logs, Glacier's and S3's.
    pub fn reset_stats(&self) {
        *lock(&self.shared.record) = Record::default();
    }

    // -----------------------------------------------------------------------------------------
    // S3 (see the `s3` module): buckets, objects and uploads served on the same endpoint.

    fn s3_state(&self) -> MutexGuard<'_, s3::state::S3State> {
        lock(&self.shared.s3)
    }

    /// Creates a bucket out of band (idempotent). Panics on a name S3 would refuse.
    pub fn s3_create_bucket(&self, name: &str) {
        assert!(
            s3::state::valid_bucket_name(name),
            "invalid bucket name {name:?}"
        );
        self.s3_state().create_bucket(name);
    }

    /// The buckets, sorted.
    pub fn s3_buckets(&self) -> Vec<String> {
        self.s3_state().buckets.keys().cloned().collect()
    }

    /// The keys of a bucket's objects, sorted (as S3 lists them, by UTF-8 bytes); empty for
    /// an unknown bucket.
    pub fn s3_keys(&self, bucket: &str) -> Vec<String> {
        self.s3_state().keys(bucket)
    }

    /// An object as stored: data, metadata, storage class, checksum, parts, ETag.
    pub fn s3_object(&self, bucket: &str, key: &str) -> Option<S3ObjectInfo> {
        self.s3_state().object_info(bucket, key)
    }

    /// Stores an object directly (STANDARD, no metadata, no checksum), creating the bucket if
    /// need be: something already at the destination, as another tool would leave it.
    pub fn s3_put_object(&self, bucket: &str, key: &str, data: &[u8]) {
        let now = self.shared.now_ms();
        self.s3_state().put_object(bucket, key, data, now);
    }

    /// The bucket's open multipart uploads, by key and then initiation.
    pub fn s3_open_uploads(&self, bucket: &str) -> Vec<S3UploadInfo> {
        self.s3_state().open_uploads(bucket)
    }

    /// The next `count` S3 requests to `op` get `kind` (before they are handled, except
    /// [`S3FaultKind::ResetAfterCommit`]).
    pub fn s3_fail_next(&self, op: S3Op, kind: S3FaultKind, count: usize) {
        lock(&self.shared.s3_faults).script(op, Some(kind), count);
    }

    /// Lets `skip` more S3 requests to `op` through, then hits the next one with `kind`.
    pub fn s3_fail_after(&self, op: S3Op, skip: usize, kind: S3FaultKind) {
        let mut faults = lock(&self.shared.s3_faults);
        faults.script(op, None, skip);
        faults.script(op, Some(kind), 1);
    }

    /// Sets (or with None removes) the hook every S3 request that gets past its signature and
    /// any fault passes twice: [`Stage::Before`] once parsed, before it changes anything, and
    /// [`Stage::After`] once applied, before the response is written. It runs on the request's
    /// own thread with no emulator lock held, so it may call the emulator, block the request,
    /// or kill the client at that exact point.
    pub fn s3_set_hook(&self, hook: Option<S3Hook>) {
        *lock(&self.shared.s3_hook) = hook;
    }

    /// Every S3 request in arrival order with the status sent; 0 means no response (a reset or
    /// timeout fault).
    pub fn s3_request_log(&self) -> Vec<(S3Op, u16)> {
        lock(&self.shared.record).s3_log.clone()
    }

    /// Shorthand for `stats().s3_writes()`.
    pub fn s3_writes(&self) -> u64 {
        self.stats().s3_writes()
    }
}

impl Drop for Emulator {
    fn drop(&mut self) {
        self.shared.shutdown.store(true, Ordering::SeqCst);
        // Wake the accept loop so it sees the flag; connection threads notice within a poll.
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_secs(1));
        if let Some(server) = self.server.take() {
            let _ = server.join();
        }
    }
}
