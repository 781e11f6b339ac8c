//! `glacierfs status`: what a mount is doing, or what will resume at its next mount.
//!
//! Which mount: `status PATH` finds the mount that holds PATH and its cache directory from its
//! daemon's command line (`client::find_daemon`); `--cache-dir` names the directory itself; with
//! neither, every running mount of this user is listed, one line each, from
//! `/proc/self/mountinfo` (or, with none running, the default cache directory is reported).
//!
//! What it says comes from the catalog, which works whether or not the mount is up and never
//! touches the network. While the mount is up, the state of each upload (in flight or not, its
//! last failure and the time of its next try) lives in the daemon's memory; it is read from the
//! mount's own `.jobs`, so `status` and `.jobs` agree on each item. A mount that does not answer
//! in a few seconds is reported as such, and the catalog's view is shown instead.
//!
//! The human form is a summary that fits a screen however much is queued: counts and bytes by
//! state, the rate and time left, a few transfers in flight and failures with their reasons.
//! `--all` lists every item; `--json` gives everything, machine-readable.

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use serde_json::{json, Value};

use crate::catalog::jobs::{self, JobState};
use crate::catalog::{Catalog, CatalogError};
use crate::client::{self, ClientError};
use crate::codec::timefmt::format_span;
use crate::config::{OptionError, StatusArgs};
use crate::daemon::CacheLock;

/// Human sizes: binary units, one decimal.
pub fn human(bytes: u64) -> String {
    crate::config::format_size(bytes)
}

/// How long the mount may take to answer a read of `.jobs`.
const LIVE_WAIT: Duration = Duration::from_secs(5);
/// Items of each kind the summary names one by one; `--all` names every one.
const SHOWN: usize = 4;

/// Why there is nothing to report.
#[derive(Debug, thiserror::Error)]
pub enum StatusError {
    #[error("{}: no glacierfs catalog here", .0.display())]
    NoCatalog(PathBuf),
    #[error(transparent)]
    Catalog(#[from] CatalogError),
    #[error(transparent)]
    Client(#[from] ClientError),
    #[error(transparent)]
    Option(#[from] OptionError),
    #[error(
        "{}: cannot tell the cache directory of the mount at {} (its daemon's command line \
         cannot be read); name it with --cache-dir",
        .path.display(), .root.display()
    )]
    NoDaemon { path: PathBuf, root: PathBuf },
}

/// The states an upload can be in, as `status` and `.jobs` both show them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum UploadState {
    /// Waiting for its first attempt.
    Queued,
    /// An attempt is running.
    Uploading,
    /// The last attempt failed; the next waits out its backoff.
    Failed,
    /// An attempt is running after one that failed.
    Retrying,
}

impl UploadState {
    const ALL: [UploadState; 4] = [
        UploadState::Queued,
        UploadState::Uploading,
        UploadState::Failed,
        UploadState::Retrying,
    ];

    /// From `.jobs`' view of an upload: running (StatusCode InProgress) or not, and whether its
    /// last attempt failed (a StatusMessage).
    fn of(in_flight: bool, failed: bool) -> UploadState {
        match (in_flight, failed) {
            (false, false) => UploadState::Queued,
            (true, false) => UploadState::Uploading,
            (false, true) => UploadState::Failed,
            (true, true) => UploadState::Retrying,
        }
    }

    fn as_str(self) -> &'static str {
        match self {
            UploadState::Queued => "queued",
            UploadState::Uploading => "uploading",
            UploadState::Failed => "failed",
            UploadState::Retrying => "retrying",
        }
    }
}

/// What the mount's `.jobs` says about one upload.
struct LiveUpload {
    in_flight: bool,
    bytes_done: u64,
    message: Option<String>,
}

/// The uploads in the `.jobs` of the mount at `root`, by inode.
fn live_uploads(root: &Path) -> Result<HashMap<u64, LiveUpload>, ClientError> {
    let entries = client::read_jobs(root, LIVE_WAIT)?;
    Ok(entries
        .iter()
        .filter(|e| e["Action"] == "Upload")
        .filter_map(|e| {
            let ino = e["JobId"].as_str()?.strip_prefix("upload-")?.parse().ok()?;
            Some((
                ino,
                LiveUpload {
                    in_flight: e["StatusCode"] == "InProgress",
                    bytes_done: e["BytesDone"].as_u64().unwrap_or(0),
                    message: e["StatusMessage"].as_str().map(str::to_owned),
                },
            ))
        })
        .collect())
}

/// The whole report, as JSON (the human form is rendered from it). `mount_root` is where the
/// mount is, when known: the live state of uploads is read from it.
pub fn report(dir: &Path, mount_root: Option<&Path>) -> Result<Value, StatusError> {
    if !dir.join("catalog.db").exists() {
        return Err(StatusError::NoCatalog(dir.to_owned()));
    }
    let pid = CacheLock::holder(dir);
    let catalog = Catalog::open_read_only(dir)?;
    let (overview, (cached, staged), cache_size, peeks, limits) = catalog.read(|c| {
        Ok((
            jobs::overview(c, None)?,
            jobs::cache_use(c)?,
            // A size that cannot be read shows as unknown rather than failing the report.
            crate::catalog::meta::cache_size(c).ok().flatten(),
            // Likewise: the count of refused peeks is a hint, not the report's substance.
            crate::catalog::meta::refused_peeks(c).unwrap_or_default(),
            // And the account's limits, as the daemon last read them.
            crate::catalog::meta::account_limits(c).ok().flatten(),
        ))
    })?;
    // Only a mount that is up has anything in flight, and only it knows what.
    let mount_root = mount_root.filter(|_| pid.is_some());
    let (live, live_error) = match mount_root.map(live_uploads) {
        Some(Ok(l)) => (Some(l), None),
        Some(Err(e)) => (None, Some(e.to_string())),
        None => (None, None),
    };
    let now = crate::catalog::now_s();
    let mut by_state: HashMap<UploadState, (u64, u64)> = HashMap::new();
    let (mut rate, mut moving, mut total) = (0u64, 0u64, 0u64);
    let mut failures = Vec::new();
    let uploads: Vec<Value> = overview
        .uploads
        .iter()
        .map(|u| {
            let l = live.as_ref().and_then(|l| l.get(&u.ino));
            let in_flight = l.is_some_and(|l| l.in_flight);
            let message = match (&live, l) {
                (Some(_), Some(l)) => l.message.clone(),
                _ => u.message.clone(),
            };
            let done = l.map_or(u.bytes_done, |l| l.bytes_done).min(u.size);
            let state = UploadState::of(in_flight, message.is_some());
            let counted = by_state.entry(state).or_default();
            counted.0 += 1;
            counted.1 += u.size;
            total += u.size;
            let per_second = u
                .started_s
                .filter(|_| in_flight)
                .map(|s| done / (now - s).max(1) as u64);
            if in_flight {
                rate += per_second.unwrap_or(0);
                moving += done;
            }
            if let Some(m) = &message {
                failures.push(json!({
                    "Action": "Upload", "Path": format!("{}/{}", u.vault, u.path),
                    "State": state.as_str(), "StatusMessage": m,
                }));
            }
            json!({
                "Vault": u.vault, "Path": u.path, "SizeInBytes": u.size, "BytesDone": done,
                "BytesPerSecond": per_second,
                "StatusCode": if in_flight { "InProgress" } else { "Queued" },
                "State": state.as_str(), "StatusMessage": message,
            })
        })
        .collect();
    let jobs: Vec<Value> = overview
        .jobs
        .iter()
        .map(|j| {
            json!({
                "Action": j.action, "StatusCode": j.status.as_str(), "JobId": j.job_id, "Vault": j.vault,
                "Path": j.path, "Tier": j.tier, "AgeSeconds": (now - j.created_s).max(0),
                "SizeInBytes": j.size, "BytesDone": j.bytes_done, "StatusMessage": j.message,
            })
        })
        .collect();
    let deletes: Vec<Value> = overview
        .deletes
        .iter()
        .map(|d| json!({"Vault": d.vault, "Path": d.path, "ArchiveId": d.archive_id, "Attempts": d.attempts, "StatusMessage": d.message}))
        .collect();
    failures.extend(
        overview
            .jobs
            .iter()
            .filter(|j| j.status == JobState::Failed)
            .map(|j| {
                let path = j.path.as_ref().map(|p| format!("{}/{p}", j.vault));
                json!({"Action": j.action, "Path": path, "JobId": j.job_id, "StatusMessage": j.message})
            }),
    );
    failures.extend(overview.deletes.iter().filter_map(|d| {
        let path = d.path.as_ref().map(|p| format!("{}/{p}", d.vault));
        d.message
            .as_ref()
            .map(|m| json!({"Action": "Delete", "Path": path, "StatusMessage": m}))
    }));
    let states: serde_json::Map<String, Value> = UploadState::ALL
        .iter()
        .map(|s| {
            let (count, bytes) = by_state.get(s).copied().unwrap_or_default();
            (
                s.as_str().to_owned(),
                json!({"Count": count, "Bytes": bytes}),
            )
        })
        .collect();
    let seconds_left = (rate > 0).then(|| total.saturating_sub(moving).div_ceil(rate));
    Ok(json!({
        "CacheDir": dir.display().to_string(),
        "MountPoint": mount_root.map(|m| m.display().to_string()),
        "Mounted": pid.is_some(),
        "Pid": pid.filter(|p| *p > 0),
        "LiveError": live_error,
        "Summary": {
            "Uploads": states,
            "BytesPerSecond": rate,
            "SecondsLeft": seconds_left,
        },
        "Uploads": uploads,
        "Jobs": jobs,
        "Deletes": deletes,
        "Cache": {"CachedBytes": cached, "CacheSize": cache_size, "StagedBytes": staged},
        "Failures": failures,
        "Snapshots": snapshots_report(&catalog, mount_root, now)?,
        "RefusedPeeks": peeks
            .iter()
            .map(|(program, n)| json!({"Program": program, "Count": n}))
            .collect::<Vec<_>>(),
        "AccountLimits": limits.as_ref().map(limits_json),
    }))
}

/// Each vault's namespace snapshots: the newest confirmed one and its age, whether one is
/// going up, and whether the vault holds one this catalog has no history of (with the command
/// that restores it).
fn snapshots_report(
    catalog: &Catalog,
    mount_root: Option<&Path>,
    now: i64,
) -> Result<Value, StatusError> {
    use crate::catalog::{snapshots, vaults};
    let rows = catalog.read(|c| {
        let mut out = Vec::new();
        for v in vaults::all(c)? {
            let newest = snapshots::newest(c, v.ino)?;
            let no_history = snapshots::has_no_history(c, v.ino)?;
            let uploading = snapshots::uploading(c)?.iter().any(|r| r.vault == v.ino);
            out.push((v.name, newest, no_history, uploading));
        }
        Ok(out)
    })?;
    let vault_path = |name: &str| match mount_root {
        Some(m) => m.join(name).display().to_string(),
        None => format!("MOUNTPOINT/{name}"),
    };
    Ok(rows
        .into_iter()
        .filter(|(_, newest, no_history, uploading)| newest.is_some() || *no_history || *uploading)
        .map(|(vault, newest, no_history, uploading)| {
            json!({
                "Vault": vault,
                "Newest": newest.as_ref().map(|r| crate::codec::timefmt::format_iso8601(r.taken_s, 0)),
                "AgeSeconds": newest.as_ref().map(|r| (now - r.taken_s).max(0)),
                "Uploading": uploading,
                "NoHistory": no_history,
                "Restore": no_history.then(|| format!("glacierfs catalog restore {}", vault_path(&vault))),
            })
        })
        .collect())
}

/// The human lines of [`snapshots_report`]: one per vault that has snapshots.
fn snapshot_lines(r: &Value) -> Vec<String> {
    list(r, "Snapshots")
        .iter()
        .map(|s| {
            let vault = text(s, "Vault");
            if s["NoHistory"] == true {
                format!(
                    "snapshot: vault {vault} holds one of {} this catalog has no history of; run `{}`",
                    text(s, "Newest"),
                    text(s, "Restore")
                )
            } else {
                let age = s["AgeSeconds"]
                    .as_u64()
                    .map(|a| format!("last {} ago", format_span(Duration::from_secs(a))))
                    .unwrap_or_else(|| "none yet".to_owned());
                let up = if s["Uploading"] == true { ", one uploading" } else { "" };
                format!("snapshot: vault {vault}: {age}{up}")
            }
        })
        .collect()
}

/// The account's limits as `status --json` shows them; `null` parts were not answered.
fn limits_json(l: &crate::catalog::meta::AccountLimits) -> Value {
    json!({
        "CheckedAt": crate::codec::timefmt::format_iso8601(l.checked_s, 0),
        "DataRetrievalPolicy": l.policy.map(|p| json!({
            "Strategy": p.strategy(),
            "BytesPerHour": p.bytes_per_hour(),
        })),
        "ProvisionedCapacity": l.capacity.as_ref().map(|units| units
            .iter()
            .map(|u| json!({
                "CapacityId": u.capacity_id,
                "StartDate": u.start_date,
                "ExpirationDate": u.expiration_date,
            }))
            .collect::<Vec<_>>()),
        "Error": l.error,
    })
}

/// One line each for the data-retrieval policy and the provisioned capacity.
fn limits_lines(l: &Value) -> Vec<String> {
    if l.is_null() {
        return vec!["account limits: not read yet (the mount reads them at start)".to_owned()];
    }
    let policy = &l["DataRetrievalPolicy"];
    let mut out = vec![match policy["BytesPerHour"].as_u64() {
        Some(rate) => format!("data-retrieval policy: BytesPerHour, {}/hour", human(rate)),
        None if policy.is_null() => "data-retrieval policy: unknown".to_owned(),
        None => format!("data-retrieval policy: {}", text(policy, "Strategy")),
    }];
    out.push(match l["ProvisionedCapacity"].as_array() {
        Some(units) if units.is_empty() => "provisioned capacity: none".to_owned(),
        Some(units) => format!(
            "provisioned capacity: {} unit(s), expiring {}",
            units.len(),
            units
                .iter()
                .map(|u| u["ExpirationDate"].as_str().unwrap_or("(unknown)"))
                .collect::<Vec<_>>()
                .join(", ")
        ),
        None => "provisioned capacity: unknown".to_owned(),
    });
    if let Some(e) = l["Error"].as_str() {
        out.push(format!("  (not all limits could be read: {e})"));
    }
    out
}

/// One line on the peeks refused since the mount started (file managers, thumbnailers and
/// indexers opening cold files), so an empty preview has its reason: the top three programs.
fn peeks_line(peeks: &Value) -> Option<String> {
    let list = peeks.as_array().filter(|l| !l.is_empty())?;
    let total: u64 = list.iter().filter_map(|p| p["Count"].as_u64()).sum();
    let top: Vec<String> = list
        .iter()
        .take(3)
        .map(|p| {
            format!(
                "{} {}",
                text(p, "Program"),
                p["Count"].as_u64().unwrap_or(0)
            )
        })
        .collect();
    let more = match list.len() > 3 {
        true => ", ...",
        false => "",
    };
    Some(format!(
        "peeks refused: {total} opens of cold files by programs that only look ({}{more}); they start no retrieval",
        top.join(", ")
    ))
}

fn text<'a>(v: &'a Value, key: &str) -> &'a str {
    v[key].as_str().unwrap_or_default()
}

fn list<'a>(r: &'a Value, key: &str) -> &'a [Value] {
    r[key].as_array().map(Vec::as_slice).unwrap_or_default()
}

/// "4 queued (1.2 MiB), 1 failed (3.0 MiB)": the states that have any uploads.
fn state_counts(r: &Value) -> String {
    let states = &r["Summary"]["Uploads"];
    let parts: Vec<String> = UploadState::ALL
        .iter()
        .filter_map(|s| {
            let entry = &states[s.as_str()];
            let count = entry["Count"].as_u64().filter(|c| *c > 0)?;
            let bytes = entry["Bytes"].as_u64().unwrap_or(0);
            Some(format!("{count} {} ({})", s.as_str(), human(bytes)))
        })
        .collect();
    match parts.is_empty() {
        true => "none".to_owned(),
        false => parts.join(", "),
    }
}

/// "and 12 more (--all lists every item)" when `shown` of `all` were listed.
fn more(all: usize, shown: usize) -> Option<String> {
    (all > shown).then(|| format!("  and {} more (--all lists every item)", all - shown))
}

fn upload_line(u: &Value) -> String {
    let rate = u["BytesPerSecond"]
        .as_u64()
        .map(|b| format!(", {}/s", human(b)))
        .unwrap_or_default();
    let why = u["StatusMessage"]
        .as_str()
        .map(|m| format!(": {m}"))
        .unwrap_or_default();
    format!(
        "  {}/{}: {} of {}{rate} ({}){why}",
        text(u, "Vault"),
        text(u, "Path"),
        human(u["BytesDone"].as_u64().unwrap_or(0)),
        human(u["SizeInBytes"].as_u64().unwrap_or(0)),
        text(u, "State"),
    )
}

fn job_line(j: &Value) -> String {
    let why = j["StatusMessage"]
        .as_str()
        .map(|m| format!(": {m}"))
        .unwrap_or_default();
    format!(
        "  {} {} {}/{} ({} old){why}",
        text(j, "Action"),
        text(j, "StatusCode"),
        text(j, "Vault"),
        text(j, "Path"),
        format_span(Duration::from_secs(j["AgeSeconds"].as_u64().unwrap_or(0)))
    )
}

/// The human form: a summary of at most 25 lines, or with `all` every item as well.
fn human_lines(r: &Value, all: bool) -> Vec<String> {
    let mut out = Vec::new();
    let dir = text(r, "CacheDir");
    let at = r["MountPoint"]
        .as_str()
        .map(|m| format!(" at {m}"))
        .unwrap_or_default();
    match (r["Mounted"].as_bool().unwrap_or(false), r["Pid"].as_u64()) {
        (true, Some(pid)) => out.push(format!("{dir}: mounted{at} (daemon pid {pid})")),
        (true, None) => out.push(format!("{dir}: mounted{at}")),
        (false, _) => out.push(format!(
            "{dir}: not mounted; this is what the next mount will resume:"
        )),
    }
    if let Some(e) = r["LiveError"].as_str() {
        out.push(format!("  (what is in flight is unknown: {e})"));
    }
    let uploads = list(r, "Uploads");
    let staged: u64 = uploads
        .iter()
        .filter_map(|u| u["SizeInBytes"].as_u64())
        .sum();
    out.push(format!(
        "uploads: {} ({}): {}",
        uploads.len(),
        human(staged),
        state_counts(r)
    ));
    let in_flight: Vec<&Value> = uploads
        .iter()
        .filter(|u| u["StatusCode"] == "InProgress")
        .collect();
    if !in_flight.is_empty() {
        let rate = r["Summary"]["BytesPerSecond"].as_u64().unwrap_or(0);
        let left = r["Summary"]["SecondsLeft"]
            .as_u64()
            .map(|s| format!(", about {} left", format_span(Duration::from_secs(s))))
            .unwrap_or_default();
        out.push(format!(
            "in flight: {}, {}/s{left}",
            in_flight.len(),
            human(rate)
        ));
        let shown = if all { in_flight.len() } else { SHOWN };
        out.extend(in_flight.iter().take(shown).map(|u| upload_line(u)));
        out.extend(more(in_flight.len(), shown));
    }
    let failures = list(r, "Failures");
    if !failures.is_empty() {
        out.push(format!("failures: {}", failures.len()));
        let shown = if all { failures.len() } else { SHOWN };
        out.extend(failures.iter().take(shown).map(|f| {
            format!(
                "  {} {}: {}",
                text(f, "Action"),
                text(f, "Path"),
                text(f, "StatusMessage")
            )
        }));
        out.extend(more(failures.len(), shown));
    }
    let jobs = list(r, "Jobs");
    let mut by_code: Vec<(&str, usize)> = Vec::new();
    for j in jobs {
        let code = text(j, "StatusCode");
        match by_code.iter_mut().find(|(c, _)| *c == code) {
            Some((_, n)) => *n += 1,
            None => by_code.push((code, 1)),
        }
    }
    let codes: Vec<String> = by_code.iter().map(|(c, n)| format!("{n} {c}")).collect();
    match codes.is_empty() {
        true => out.push("jobs: 0".to_owned()),
        false => out.push(format!("jobs: {} ({})", jobs.len(), codes.join(", "))),
    }
    // Failed jobs are listed with the failures; the summary shows those still running.
    let running: Vec<&Value> = jobs
        .iter()
        .filter(|j| all || j["StatusCode"] == "InProgress")
        .collect();
    let shown = if all { running.len() } else { SHOWN };
    out.extend(running.iter().take(shown).map(|j| job_line(j)));
    out.extend(more(running.len(), shown));
    let deletes = list(r, "Deletes");
    out.push(format!("deletes queued: {}", deletes.len()));
    if all {
        out.extend(deletes.iter().map(|d| {
            format!(
                "  {}/{} ({} attempts)",
                text(d, "Vault"),
                d["Path"].as_str().unwrap_or("(no path)"),
                d["Attempts"].as_i64().unwrap_or(0)
            )
        }));
    }
    let cache = &r["Cache"];
    let limit = cache["CacheSize"]
        .as_u64()
        .map(human)
        .unwrap_or_else(|| "unknown".into());
    out.push(format!(
        "cache: {} retrieved (limit {limit}), {} staged",
        human(cache["CachedBytes"].as_u64().unwrap_or(0)),
        human(cache["StagedBytes"].as_u64().unwrap_or(0))
    ));
    if let Some(line) = peeks_line(&r["RefusedPeeks"]) {
        out.push(line);
    }
    out.extend(snapshot_lines(r));
    out.extend(limits_lines(&r["AccountLimits"]));
    if all {
        out.push(format!("every upload ({}):", uploads.len()));
        out.extend(uploads.iter().map(upload_line));
    }
    out
}

/// Writes `lines` to standard output. A reader that went away (`status | head`) ends the
/// output quietly: that is not a failure of `status`.
fn emit(lines: impl IntoIterator<Item = String>) -> ExitCode {
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    for line in lines {
        if writeln!(out, "{line}").is_err() {
            return ExitCode::SUCCESS;
        }
    }
    let _ = out.flush();
    ExitCode::SUCCESS
}

fn json_text(v: &Value) -> String {
    serde_json::to_string_pretty(v).unwrap_or_default()
}

/// The mount (of this user) whose daemon keeps its cache in `dir`, if one is running.
fn mount_using(dir: &Path) -> Option<PathBuf> {
    let dir = std::fs::canonicalize(dir).ok()?;
    client::my_mounts().into_iter().find_map(|m| {
        let used = client::find_daemon(&m.root)?.cache_dir?;
        (std::fs::canonicalize(used).ok()? == dir).then_some(m.root)
    })
}

/// The cache directory and mount root of the mount that holds `path`.
fn target_of(path: &Path) -> Result<(PathBuf, PathBuf), StatusError> {
    let root = client::mount_of(path)?;
    let dir = client::find_daemon(&root)
        .and_then(|d| d.cache_dir)
        .ok_or_else(|| StatusError::NoDaemon {
            path: path.to_owned(),
            root: root.clone(),
        })?;
    Ok((dir, root))
}

/// The warning `glacierfs retrieve` prints when retrieving `bytes` from the mount holding
/// `path` would take more than an hour under the account's `BytesPerHour` data-retrieval
/// policy, as the mount last read it (from its catalog: no network).
pub fn policy_warning(path: &Path, bytes: u64) -> Option<String> {
    let (dir, _) = target_of(path).ok()?;
    let catalog = Catalog::open_read_only(&dir).ok()?;
    let limits = catalog
        .read(|c| Ok(crate::catalog::meta::account_limits(c).ok().flatten()))
        .ok()??;
    let rate = limits.policy?.bytes_per_hour()?;
    (bytes > rate).then(|| rate_warning(bytes, rate))
}

/// "warning: …": `bytes` is more than `rate` allows in an hour, and how long it needs.
fn rate_warning(bytes: u64, rate: u64) -> String {
    let hours = Duration::from_secs(bytes.saturating_mul(3600).div_ceil(rate.max(1)));
    format!(
        "warning: the data-retrieval policy allows {}/hour; {} needs at least {} under it, and \
         Glacier refuses what goes over the rate",
        human(rate),
        human(bytes),
        format_span(hours)
    )
}

/// One line per running mount of this user: where, its cache, and its uploads by state.
fn list_mounts(mounts: &[client::MountEntry], as_json: bool) -> ExitCode {
    let rows: Vec<Value> = mounts
        .iter()
        .map(|m| {
            let daemon = client::find_daemon(&m.root);
            let dir = daemon.as_ref().and_then(|d| d.cache_dir.clone());
            let summary = dir
                .as_deref()
                .map(|d| report(d, Some(&m.root)).map_err(|e| e.to_string()));
            json!({
                "MountPoint": m.root.display().to_string(),
                "CacheDir": dir.map(|d| d.display().to_string()),
                "Pid": daemon.map(|d| d.pid),
                "Summary": summary.as_ref().and_then(|s| s.as_ref().ok()).map(|r| r["Summary"].clone()),
                "Error": summary.and_then(Result::err),
            })
        })
        .collect();
    if as_json {
        return emit([json_text(&json!({ "Mounts": rows }))]);
    }
    emit(rows.iter().map(|m| {
        let cache = m["CacheDir"]
            .as_str()
            .map(|d| format!("cache {d}"))
            .unwrap_or_else(|| "cache unknown".to_owned());
        let pid = m["Pid"]
            .as_u64()
            .map(|p| format!(", daemon pid {p}"))
            .unwrap_or_default();
        let what = match (m["Summary"].is_object(), m["Error"].as_str()) {
            (true, _) => format!("uploads: {}", state_counts(m)),
            (false, Some(e)) => e.to_owned(),
            (false, None) => "its daemon's command line cannot be read".to_owned(),
        };
        format!("{}: {cache}{pid}; {what}", text(m, "MountPoint"))
    }))
}

pub fn run(args: &StatusArgs) -> ExitCode {
    let target = match (&args.path, &args.cache.cache_dir) {
        (Some(path), _) => target_of(path).map(|(dir, root)| (dir, Some(root))),
        (None, Some(dir)) => Ok((dir.clone(), mount_using(dir))),
        (None, None) => {
            let mounts = client::my_mounts();
            if !mounts.is_empty() {
                return list_mounts(&mounts, args.json);
            }
            // Nothing running: what the default cache directory will resume.
            args.cache
                .resolve()
                .map(|dir| (dir, None))
                .map_err(StatusError::from)
        }
    };
    let result = target.and_then(|(dir, root)| report(&dir, root.as_deref()));
    match result {
        Ok(r) if args.json => emit([json_text(&r)]),
        Ok(r) => emit(human_lines(&r, args.all)),
        Err(e) => {
            eprintln!("glacierfs: {e}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_read_well() {
        assert_eq!(human(5), "5 B");
        assert_eq!(human(1536), "1.5 KiB");
        assert_eq!(human(10 << 30), "10.0 GiB");
    }

    #[test]
    fn an_uploads_state_follows_jobs_view_of_it() {
        assert_eq!(UploadState::of(false, false), UploadState::Queued);
        assert_eq!(UploadState::of(true, false), UploadState::Uploading);
        assert_eq!(UploadState::of(false, true), UploadState::Failed);
        assert_eq!(UploadState::of(true, true), UploadState::Retrying);
    }

    /// A report with `n` queued uploads, `f` of them failed, and `j` jobs running.
    fn big_report(n: usize, f: usize, j: usize) -> Value {
        let uploads: Vec<Value> = (0..n)
            .map(|i| {
                let failed = i < f;
                json!({"Vault": "v", "Path": format!("f{i}"), "SizeInBytes": 1000,
                       "BytesDone": 0, "StatusCode": "Queued",
                       "State": if failed { "failed" } else { "queued" },
                       "StatusMessage": failed.then_some("InitiateMultipartUpload: no")})
            })
            .collect();
        let failures: Vec<Value> = (0..f)
            .map(|i| json!({"Action": "Upload", "Path": format!("v/f{i}"), "StatusMessage": "no"}))
            .collect();
        let jobs: Vec<Value> = (0..j)
            .map(|i| {
                json!({"Action": "ArchiveRetrieval", "StatusCode": "InProgress",
                            "Vault": "v", "Path": format!("c{i}"), "AgeSeconds": 60})
            })
            .collect();
        json!({
            "CacheDir": "/c", "MountPoint": "/m", "Mounted": true, "Pid": 7,
            "Summary": {"Uploads": {
                "queued": {"Count": n - f, "Bytes": 1000 * (n - f)},
                "uploading": {"Count": 0, "Bytes": 0},
                "failed": {"Count": f, "Bytes": 1000 * f},
                "retrying": {"Count": 0, "Bytes": 0}},
                "BytesPerSecond": 0, "SecondsLeft": null},
            "Uploads": uploads, "Jobs": jobs, "Deletes": [], "Failures": failures,
            "Cache": {"CachedBytes": 0, "CacheSize": 1024, "StagedBytes": 1000 * n},
        })
    }

    #[test]
    fn the_summary_fits_a_screen_and_all_lists_everything() {
        let r = big_report(5000, 30, 40);
        let lines = human_lines(&r, false);
        assert!(
            lines.len() <= 25,
            "{} lines:\n{}",
            lines.len(),
            lines.join("\n")
        );
        assert!(lines.contains(&"/c: mounted at /m (daemon pid 7)".to_owned()));
        assert!(
            lines.contains(
                &"uploads: 5000 (4.8 MiB): 4970 queued (4.7 MiB), 30 failed (29.3 KiB)".to_owned()
            ),
            "{lines:#?}"
        );
        assert!(lines.contains(&"failures: 30".to_owned()));
        assert!(lines.contains(&"  and 26 more (--all lists every item)".to_owned()));
        let every = human_lines(&r, true);
        assert!(every.len() > 5000 + 30 + 40, "{}", every.len());
        assert!(every.iter().any(|l| l.starts_with("  v/f4999: ")));
    }
}
