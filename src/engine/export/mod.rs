//! `glacierfs export [--tier T] [--max-bytes-in-flight SIZE] [--json] PATH DEST`: copies every
//! file under PATH (a vault, or a directory inside one, in a running mount) to the same
//! relative path under DEST, straight from Glacier, never through the mount's cache.
//!
//! The pieces: [`source`] finds the mount, its daemon's options and the tree under PATH;
//! [`dest`] owns DEST, its temporary files and the state that lets a run resume; [`pace`]
//! holds the pacing rules; [`archive`] retrieves one archive (its job, download and placing);
//! [`engine`] runs them all, paced; [`report`] shows progress and the summary. This file puts them in order:
//! 1. list PATH through the mount, create every directory and empty file under DEST, copy what
//!    only the mount has (staged files), and skip whatever DEST already holds with the right
//!    size and tree hash;
//! 2. retrieve the rest (the engine), placing each file once verified;
//! 3. when every file is in place, remove the state directory and set directory times.
//!
//! Exit status: 0 when every file is in place and verified, 1 when some failed (they are
//! listed) or the export could not run, 130 when stopped by Ctrl-C or SIGTERM.

mod archive;
mod dest;
mod engine;
mod pace;
mod report;
mod source;

use std::collections::HashMap;
use std::ffi::CString;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Instant;

use crate::codec::treehash::{to_hex, Digest};
use crate::config::{AwsArgs, ExportArgs};
use crate::glacier::aws::{AwsGlacier, AwsOptions};
use crate::glacier::retry::{RetryPolicy, Retrying};
use crate::glacier::{GlacierClient, GlacierError, Tier};

use archive::{Target, Work};
use dest::{Dest, DestError, Journal, Record};
use engine::{Engine, EngineError, Settings};
use report::{Ending, PlanInfo, Reporter, Tally};
use source::{FileEntry, Listing, Origin, SourceError};

use pace::POLL_ENV;

#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    #[error(transparent)]
    Source(#[from] SourceError),
    #[error(transparent)]
    Dest(#[from] DestError),
    #[error(transparent)]
    Engine(#[from] EngineError),
    #[error("connecting to Glacier: {0}")]
    Connect(GlacierError),
    #[error("{0} is inside a glacierfs mount; export to a local directory")]
    DestInMount(PathBuf),
    #[error(
        "{0}: the vault has an entry named {state} at the top of PATH, where the export keeps \
         its state; export a directory below it, or the vault into a parent directory",
        state = dest::STATE_DIR
    )]
    StateClash(PathBuf),
    #[error("cannot start the runtime: {0}")]
    Runtime(io::Error),
}

/// Runs the command and maps how it ended to the exit status.
pub fn run(args: &ExportArgs) -> ExitCode {
    match export(args) {
        Ok(Ending::Complete) => ExitCode::SUCCESS,
        Ok(Ending::Failed) => ExitCode::FAILURE,
        Ok(Ending::Interrupted) => ExitCode::from(130),
        Err(e) => {
            eprintln!("glacierfs export: {e}");
            ExitCode::FAILURE
        }
    }
}

fn export(args: &ExportArgs) -> Result<Ending, ExportError> {
    let started = Instant::now();
    let at = source::locate(&args.path)?;
    if let Some(inside) = source::inside_a_mount(&args.dest) {
        return Err(ExportError::DestInMount(inside));
    }
    let daemon = source::find_daemon(&at.mount_root);
    match &daemon {
        Some(d) => log::debug!("using the options of daemon {}: {:?}", d.pid, d.aws),
        None => log::warn!(
            "found no daemon serving {}; reaching Glacier through the AWS configuration alone",
            at.mount_root.display()
        ),
    }
    let listing = source::list(&at.path)?;
    let clash = listing
        .dirs
        .iter()
        .map(|d| &d.rel)
        .chain(listing.files.iter().map(|f| &f.rel))
        .any(|rel| rel.as_os_str() == dest::STATE_DIR);
    if clash {
        return Err(ExportError::StateClash(at.path.clone()));
    }
    let dest = Dest::open(&args.dest)?;
    let max_in_flight = args
        .max_bytes_in_flight
        .unwrap_or_else(|| pace::default_max_in_flight(free_space(dest.root())));
    let tier = args
        .tier
        .or(daemon.as_ref().map(|d| d.tier))
        .unwrap_or(Tier::Standard);

    let mut report = Reporter::new(args.json);
    let mut tally = Tally::default();
    let works = prepare(&dest, &listing, &mut tally, &mut report)?;
    report.plan(
        &PlanInfo {
            vault: &at.vault,
            path: &at.path,
            dest: dest.root(),
            to_fetch: works.len() as u64,
            bytes_to_fetch: works.iter().map(|w| w.size).sum(),
            tier: tier.as_str(),
            max_in_flight,
        },
        &tally,
    );

    let interrupted = if works.is_empty() {
        false
    } else {
        let settings = Settings {
            vault: at.vault.clone(),
            tier,
            max_in_flight,
            poll_every: pace::poll_interval(std::env::var(POLL_ENV).ok().as_deref()),
        };
        let aws = daemon.map(|d| d.aws);
        retrieve(aws, settings, works, &mut tally, &mut report)?
    };

    let ending = if interrupted {
        Ending::Interrupted
    } else if tally.failures.is_empty() {
        Ending::Complete
    } else {
        Ending::Failed
    };
    if ending == Ending::Complete {
        // Temporary files an interrupted run left behind that no download resumed.
        for f in &listing.files {
            let _ = std::fs::remove_file(dest.temp_path(&f.rel));
        }
        let root = dest.root().to_owned();
        dest.finish()?;
        set_dir_times(&root, &listing);
    }
    report.summary(&tally, ending, started.elapsed());
    Ok(ending)
}

/// Runs the engine on a runtime of its own, stopping it on Ctrl-C or SIGTERM.
fn retrieve(
    aws: Option<AwsArgs>,
    settings: Settings,
    works: Vec<Work>,
    tally: &mut Tally,
    report: &mut Reporter,
) -> Result<bool, ExportError> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("glacierfs-export")
        .enable_all()
        .build()
        .map_err(ExportError::Runtime)?;
    runtime.block_on(async move {
        let (stop, stopped) = tokio::sync::watch::channel(false);
        tokio::spawn(async move {
            wait_for_stop_signal().await;
            let _ = stop.send(true);
            // Keep the sender: a dropped one would read as "never stopped" from here on.
            std::future::pending::<()>().await;
        });
        let client = connect(aws.as_ref()).await.map_err(ExportError::Connect)?;
        let engine = Engine::new(client, settings, works, tally, report, stopped);
        Ok(engine.run().await?)
    })
}

async fn wait_for_stop_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
        }
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

/// A client for the mount's endpoint, region and account; credentials from the usual chain.
async fn connect(aws: Option<&AwsArgs>) -> Result<Arc<dyn GlacierClient>, GlacierError> {
    let opts = AwsOptions {
        region: aws.and_then(|a| a.region.clone()),
        profile: aws.and_then(|a| a.profile.clone()),
        endpoint_url: aws.and_then(|a| a.endpoint_url.clone()),
        account_id: aws.map_or_else(|| "-".into(), |a| a.account_id.clone()),
        connect_timeout: None,
    };
    let inner: Arc<dyn GlacierClient> = Arc::new(AwsGlacier::connect(&opts).await?);
    Ok(Arc::new(Retrying::new(inner, RetryPolicy::default())))
}

/// Step 1: directories, empty files, files only the mount has, and files already in place.
/// Returns the archives left to retrieve. A file that cannot be handled is counted as failed;
/// only a directory that cannot be created stops the export.
fn prepare(
    dest: &Dest,
    listing: &Listing,
    tally: &mut Tally,
    report: &mut Reporter,
) -> Result<Vec<Work>, ExportError> {
    for d in &listing.dirs {
        let path = dest.final_path(&d.rel);
        std::fs::create_dir_all(&path).map_err(|source| DestError::Io { path, source })?;
    }
    tally.dirs = listing
        .dirs
        .iter()
        .filter(|d| !d.rel.as_os_str().is_empty())
        .count() as u64;
    tally.files_total = listing.files.len() as u64;
    tally.bytes_total = listing.files.iter().map(|f| f.size).sum();

    let mut groups: Vec<(String, Digest, u64, Vec<&FileEntry>)> = Vec::new();
    let mut by_archive: HashMap<&str, usize> = HashMap::new();
    for f in &listing.files {
        let outcome = match &f.origin {
            Origin::Empty => place_empty(dest, f).map(|()| "empty"),
            Origin::Local => copy_from_mount(dest, f).map(|()| "copied"),
            Origin::Unusable(why) => {
                fail(tally, report, f, why);
                continue;
            }
            Origin::Archive {
                archive_id,
                tree_hash,
            } => {
                match by_archive.get(archive_id.as_str()) {
                    Some(&g) if groups[g].2 == f.size => groups[g].3.push(f),
                    Some(_) => fail(
                        tally,
                        report,
                        f,
                        "another file with this archive has another size",
                    ),
                    None => {
                        by_archive.insert(archive_id, groups.len());
                        groups.push((archive_id.clone(), *tree_hash, f.size, vec![f]));
                    }
                }
                continue;
            }
        };
        match outcome {
            Ok(status) => {
                match status {
                    "empty" => tally.empty += 1,
                    _ => tally.copied += 1,
                }
                tally.files_done += 1;
                tally.bytes_done += f.size;
                report.file(&f.rel, f.size, status, None);
            }
            Err(e) => fail(tally, report, f, &e.to_string()),
        }
    }

    let mut works = Vec::new();
    for (archive_id, tree_hash, size, files) in groups {
        if let Some(w) = settle_archive(dest, &archive_id, tree_hash, size, &files, tally, report) {
            works.push(w);
        }
    }
    Ok(works)
}

fn fail(tally: &mut Tally, report: &mut Reporter, f: &FileEntry, why: &str) {
    tally
        .failures
        .push((f.rel.display().to_string(), why.to_owned()));
    report.file(&f.rel, f.size, "failed", Some(why));
}

fn place_empty(dest: &Dest, f: &FileEntry) -> Result<(), DestError> {
    let path = dest.final_path(&f.rel);
    match dest::holds(&path, 0, None)? {
        true => dest::touch(&path, f.mtime, f.mode),
        false => dest::create_empty(&path, f.mtime, f.mode),
    }
}

/// A file whose bytes only the mount has (not in Glacier yet): read through the mount, which
/// serves it from local disk without a retrieval. Always copied: with no tree hash to compare,
/// a file already in DEST cannot be shown to be the same.
fn copy_from_mount(dest: &Dest, f: &FileEntry) -> Result<(), DestError> {
    let path = dest.final_path(&f.rel);
    let temp = dest.temp_path(&f.rel);
    dest::copy_verified(&f.path, &temp, f.size, None)?;
    dest::place(&temp, &path, f.mtime, f.mode)
}

/// Decides what one archive still needs: nothing (every file in place), local copies (some
/// file in place), placing a download a previous run finished, or a retrieval.
fn settle_archive(
    dest: &Dest,
    archive_id: &str,
    tree_hash: Digest,
    size: u64,
    files: &[&FileEntry],
    tally: &mut Tally,
    report: &mut Reporter,
) -> Option<Work> {
    // Each file, and whether DEST already holds it.
    let mut targets: Vec<(Target, bool)> = Vec::new();
    for f in files {
        let final_path = dest.final_path(&f.rel);
        let placed = match dest::holds(&final_path, size, Some(&tree_hash)) {
            Ok(placed) => placed,
            Err(e) => {
                fail(tally, report, f, &e.to_string());
                continue;
            }
        };
        let target = Target {
            rel: f.rel.clone(),
            temp: dest.temp_path(&f.rel),
            final_path,
            mtime: f.mtime,
            mode: f.mode,
        };
        targets.push((target, placed));
    }
    let in_place = targets.iter().find(|(_, placed)| *placed);
    if let Some(source) = in_place.map(|(t, _)| t.final_path.clone()) {
        for (t, placed) in &targets {
            let result = match placed {
                true => dest::touch(&t.final_path, t.mtime, t.mode),
                false => dest::copy_verified(&source, &t.temp, size, Some(&tree_hash))
                    .and_then(|()| dest::place(&t.temp, &t.final_path, t.mtime, t.mode)),
            };
            match result {
                Ok(()) => {
                    let status = if *placed { "in_place" } else { "copied" };
                    match placed {
                        true => tally.already += 1,
                        false => tally.copied += 1,
                    }
                    tally.files_done += 1;
                    tally.bytes_done += size;
                    report.file(&t.rel, size, status, None);
                }
                Err(e) => {
                    let why = e.to_string();
                    tally
                        .failures
                        .push((t.rel.display().to_string(), why.clone()));
                    report.file(&t.rel, size, "failed", Some(&why));
                }
            }
        }
        dest.record(archive_id).remove();
        return None;
    }
    let targets: Vec<Target> = targets.into_iter().map(|(t, _)| t).collect();
    let first_temp = targets.first()?.temp.clone();
    let file = dest.record(archive_id);
    let old = file.load(archive_id);
    let resume = old
        .as_ref()
        .map(|r| dest::trusted_prefix(r, &first_temp, size))
        .unwrap_or_default();
    let recorded_job = old.and_then(|r| r.job_id);
    let record = Record {
        archive_id: archive_id.to_owned(),
        size,
        job_id: recorded_job.clone(),
        verified: resume.verified,
        leaves: resume.leaves.iter().map(to_hex).collect(),
    };
    let work = Work {
        archive_id: archive_id.to_owned(),
        size,
        tree_hash,
        targets,
        journal: Journal::new(file, record),
        recorded_job,
    };
    if resume.verified < size {
        return Some(work);
    }
    // A previous run downloaded and verified it all, and stopped before placing it.
    match archive::place_all(&work) {
        Ok(()) => {
            tally.downloaded += 1;
            for (k, t) in work.targets.iter().enumerate() {
                tally.files_done += 1;
                tally.bytes_done += size;
                tally.copied += u64::from(k > 0);
                report.file(
                    &t.rel,
                    size,
                    if k == 0 { "exported" } else { "copied" },
                    None,
                );
            }
            None
        }
        Err(e) => {
            for t in &work.targets {
                let why = e.to_string();
                tally
                    .failures
                    .push((t.rel.display().to_string(), why.clone()));
                report.file(&t.rel, size, "failed", Some(&why));
            }
            None
        }
    }
}

/// Directory mtimes as the mount shows them, deepest first (placing files changed them).
fn set_dir_times(root: &Path, listing: &Listing) {
    for d in listing.dirs.iter().rev() {
        let Some(mtime) = d.mtime else { continue };
        let path = root.join(&d.rel);
        if let Err(e) = std::fs::File::open(&path).and_then(|f| f.set_modified(mtime)) {
            log::debug!("{}: setting the mtime: {e}", path.display());
        }
    }
}

/// Free bytes for an unprivileged writer on the disk that holds `path`.
fn free_space(path: &Path) -> u64 {
    let Ok(c) = CString::new(path.as_os_str().as_bytes()) else {
        return 0;
    };
    // SAFETY: statvfs is plain data, for which all zeroes is a valid value.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: `c` is a valid C string and `st` a writable statvfs that outlives the call.
    if unsafe { libc::statvfs(c.as_ptr(), &mut st) } != 0 {
        return 0;
    }
    (st.f_bavail as u64).saturating_mul(st.f_frsize as u64)
}
