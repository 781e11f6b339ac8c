//! `glacierfs status`: what a cache directory's mount is doing, or what will resume at its next
//! mount, read from the catalog alone (so it works whether or not the mount is up, and never
//! touches the network).

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use serde_json::{json, Value};

use crate::catalog::jobs::{self, JobState};
use crate::catalog::{Catalog, CatalogError};
use crate::config::StatusArgs;
use crate::daemon::CacheLock;

/// Human sizes: binary units, one decimal.
pub fn human(bytes: u64) -> String {
    crate::config::format_size(bytes)
}

/// Why there is nothing to report.
#[derive(Debug, thiserror::Error)]
pub enum StatusError {
    #[error("{}: no glacierfs catalog here", .0.display())]
    NoCatalog(PathBuf),
    #[error(transparent)]
    Catalog(#[from] CatalogError),
}

/// The whole report, as JSON (the human form is rendered from it).
pub fn report(dir: &Path) -> Result<Value, StatusError> {
    if !dir.join("catalog.db").exists() {
        return Err(StatusError::NoCatalog(dir.to_owned()));
    }
    let pid = CacheLock::holder(dir);
    let catalog = Catalog::open_read_only(dir)?;
    let (overview, (cached, staged), cache_size) = catalog.read(|c| {
        Ok((
            jobs::overview(c, None)?,
            jobs::cache_use(c)?,
            // A size that cannot be read shows as unknown rather than failing the report.
            crate::catalog::meta::cache_size(c).ok().flatten(),
        ))
    })?;
    let now = crate::catalog::now_s();
    let uploads: Vec<Value> = overview
        .uploads
        .iter()
        .map(|u| {
            let elapsed = u.started_s.map(|s| (now - s).max(1));
            json!({
                "Vault": u.vault, "Path": u.path, "SizeInBytes": u.size, "BytesDone": u.bytes_done,
                "BytesPerSecond": elapsed.map(|e| u.bytes_done / e as u64),
                "StatusCode": if u.started_s.is_some() { "InProgress" } else { "Queued" },
                "StatusMessage": u.message,
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
    let failures: Vec<Value> = overview
        .uploads
        .iter()
        .filter_map(|u| u.message.as_ref().map(|m| json!({"Action": "Upload", "Path": format!("{}/{}", u.vault, u.path), "StatusMessage": m})))
        .chain(overview.jobs.iter().filter(|j| j.status == JobState::Failed).map(|j| {
            json!({"Action": j.action, "Path": j.path, "JobId": j.job_id, "StatusMessage": j.message})
        }))
        .chain(overview.deletes.iter().filter_map(|d| {
            d.message.as_ref().map(|m| json!({"Action": "Delete", "Path": d.path, "StatusMessage": m}))
        }))
        .collect();
    Ok(json!({
        "CacheDir": dir.display().to_string(),
        "Mounted": pid.is_some(),
        "Pid": pid.filter(|p| *p > 0),
        "Uploads": uploads,
        "Jobs": jobs,
        "Deletes": deletes,
        "Cache": {"CachedBytes": cached, "CacheSize": cache_size, "StagedBytes": staged},
        "Failures": failures,
    }))
}

fn print_human(r: &Value) {
    let mounted = r["Mounted"].as_bool().unwrap_or(false);
    let dir = r["CacheDir"].as_str().unwrap_or_default();
    if mounted {
        match r["Pid"].as_u64() {
            Some(pid) => println!("{dir}: mounted (daemon pid {pid})"),
            None => println!("{dir}: mounted"),
        }
    } else {
        println!("{dir}: not mounted; this is what the next mount will resume:");
    }
    let empty = Vec::new();
    let list = |k: &str| r[k].as_array().unwrap_or(&empty).clone();
    let uploads = list("Uploads");
    println!("uploads: {}", uploads.len());
    for u in &uploads {
        let size = u["SizeInBytes"].as_u64().unwrap_or(0);
        let done = u["BytesDone"].as_u64().unwrap_or(0);
        let rate = u["BytesPerSecond"]
            .as_u64()
            .map(|b| format!(", {}/s", human(b)))
            .unwrap_or_default();
        println!(
            "  {}/{}: {} of {}{rate} ({})",
            u["Vault"].as_str().unwrap_or_default(),
            u["Path"].as_str().unwrap_or_default(),
            human(done),
            human(size),
            u["StatusCode"].as_str().unwrap_or_default()
        );
    }
    let jobs = list("Jobs");
    println!("jobs: {}", jobs.len());
    for j in &jobs {
        println!(
            "  {} {} {}/{} ({} min old)",
            j["Action"].as_str().unwrap_or_default(),
            j["StatusCode"].as_str().unwrap_or_default(),
            j["Vault"].as_str().unwrap_or_default(),
            j["Path"].as_str().unwrap_or(""),
            j["AgeSeconds"].as_i64().unwrap_or(0) / 60
        );
    }
    println!("deletes queued: {}", list("Deletes").len());
    let cache = &r["Cache"];
    let limit = cache["CacheSize"]
        .as_u64()
        .map(human)
        .unwrap_or_else(|| "unknown".into());
    println!(
        "cache: {} retrieved (limit {limit}), {} staged",
        human(cache["CachedBytes"].as_u64().unwrap_or(0)),
        human(cache["StagedBytes"].as_u64().unwrap_or(0))
    );
    let failures = list("Failures");
    if !failures.is_empty() {
        println!("failures:");
        for f in &failures {
            println!(
                "  {} {}: {}",
                f["Action"].as_str().unwrap_or_default(),
                f["Path"].as_str().unwrap_or(""),
                f["StatusMessage"].as_str().unwrap_or_default()
            );
        }
    }
}

pub fn run(args: &StatusArgs) -> ExitCode {
    let dir = match args.cache.resolve() {
        Ok(d) => d,
        Err(e) => {
            eprintln!("glacierfs: {e}");
            return ExitCode::FAILURE;
        }
    };
    match report(&dir) {
        Ok(r) if args.json => {
            println!("{}", serde_json::to_string_pretty(&r).unwrap_or_default());
            ExitCode::SUCCESS
        }
        Ok(r) => {
            print_human(&r);
            ExitCode::SUCCESS
        }
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
}
