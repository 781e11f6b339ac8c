//! `glacierfs export [OPTIONS] PATH DEST`: copies every file under PATH (a vault, or a
//! directory inside one, in a running mount) out of Glacier, straight from retrieval jobs and
//! never through the mount's cache. DEST is a local directory (each file at the same relative
//! path under it) or `s3://BUCKET[/PREFIX]` (each file an object, streamed: see [`s3`]).
//!
//! The pieces: [`source`] finds the mount, its daemon's options and the tree under PATH;
//! [`dest`] owns a local DEST, its temporary files and the state that lets a run resume;
//! [`s3`] owns an S3 DEST: keys, metadata, parts, its journal and the streaming; [`pace`]
//! holds the pacing rules; [`survey`] (and [`s3::survey`]) does step 1 below; [`archive`]
//! retrieves one archive (its job, then its transfer); [`engine`] runs them all, paced;
//! [`report`] shows progress and the summary; [`price`] estimates costs for `--dry-run`.
//! This file puts them in order:
//! 1. list PATH through the mount; settle what needs no retrieval (directories, empty files,
//!    files only the mount has, copies of archives DEST already holds) and skip whatever DEST
//!    already holds with the right tree hash;
//! 2. retrieve the rest (the engine), each archive placed or completed once verified;
//! 3. when every file is in place, drop the state that served the run (and set directory
//!    times in a local DEST).
//!
//! `--dry-run` does step 1's looking without its writing, and prints the plan with its cost.
//!
//! Exit status: 0 when every file is in place and verified, 1 when some failed (they are
//! listed) or the export could not run, 130 when stopped by Ctrl-C or SIGTERM.

mod archive;
mod dest;
mod engine;
mod pace;
mod price;
mod report;
pub mod s3;
mod source;
mod special;
mod survey;

use std::ffi::CString;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Instant;

use crate::config::{AwsArgs, ExportArgs, Tiers};
use crate::glacier::aws::{AwsGlacier, AwsOptions};
use crate::glacier::retry::{RetryPolicy, Retrying};
use crate::glacier::{GlacierClient, GlacierError, JobAction, JobFilter, JobStatus, Tier};

use archive::{Sink, Work};
use dest::{Dest, DestError};
use engine::{Engine, EngineError, Settings};
use report::{Ending, PlanInfo, Reporter, Tally};
use s3::bucket::{Bucket, Reach, S3Error};
use s3::journal::{Journal, JournalError};
use s3::parts::Memory;
use s3::stream::Ctx;
use s3::survey::{look, settle, Scope};
use s3::{S3Url, UrlError};
use source::{Daemon, Listing, Located, SourceError};
use survey::survey;

use pace::POLL_ENV;

/// Archives transferred at once into a local directory: each writes a file of its own.
const PARALLEL_FILES_DIR: usize = 4;
/// Archives streamed at once into S3: many small objects are latency-bound, and the memory
/// budget bounds the bytes whatever the count.
const PARALLEL_FILES_S3: usize = 16;

#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    #[error(transparent)]
    Source(#[from] SourceError),
    #[error(transparent)]
    Dest(#[from] DestError),
    #[error(transparent)]
    Engine(#[from] EngineError),
    #[error(transparent)]
    Url(#[from] UrlError),
    #[error(transparent)]
    S3(#[from] S3Error),
    #[error(transparent)]
    Journal(#[from] JournalError),
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
    let at = source::locate(&args.path)?;
    match S3Url::parse(&args.dest) {
        Some(url) => to_s3(args, &at, &url?),
        None => to_dir(args, &at),
    }
}

fn to_dir(args: &ExportArgs, at: &Located) -> Result<Ending, ExportError> {
    let started = Instant::now();
    if let Some(inside) = source::inside_a_mount(&args.dest) {
        return Err(ExportError::DestInMount(inside));
    }
    let daemon = daemon_of(at);
    let listing = source::list(&at.path)?;
    check_no_state_clash(at, &listing)?;
    let tier = tier_of(args, daemon.as_ref());
    let mut report = Reporter::new(args.json);
    let mut tally = Tally::default();
    if args.dry_run {
        let (mut dry, to_fetch) = survey::dry(&args.dest, &listing, &mut tally, &mut report);
        let aws = daemon.as_ref().map(|d| d.aws.clone());
        let rt = runtime()?;
        (dry.with_jobs, dry.bytes_with_jobs) =
            rt.block_on(jobs_already_there(aws.as_ref(), &at.vault, &to_fetch));
        dry.bytes_per_hour = rt.block_on(dry_policy_rate(aws.as_ref()));
        let info = PlanInfo {
            to_fetch: to_fetch.len() as u64,
            bytes_to_fetch: to_fetch.iter().map(|(_, size)| size).sum(),
            ..plan_info(
                at,
                &args.dest,
                tier,
                &[],
                args.max_bytes_in_flight.unwrap_or(0),
            )
        };
        report.dry_run(&info, &tally, &dry);
        return Ok(Ending::Complete);
    }
    let dest = Dest::open(&args.dest)?;
    dest.check_names(
        listing.files.iter().map(|f| f.rel.as_path()),
        listing.dirs.iter().map(|d| d.rel.as_path()),
    )?;
    let max_in_flight = args
        .max_bytes_in_flight
        .unwrap_or_else(|| pace::default_max_in_flight(free_space(dest.root())));

    let works = survey(&dest, &listing, &mut tally, &mut report)?;
    report.plan(
        &plan_info(at, dest.root(), tier, &works, max_in_flight),
        &tally,
    );

    let interrupted = if works.is_empty() {
        false
    } else {
        let settings = settings(at, daemon.as_ref(), tier, max_in_flight, PARALLEL_FILES_DIR);
        let aws = daemon.map(|d| d.aws);
        let runtime = runtime()?;
        runtime.block_on(retrieve(aws, settings, works, &mut tally, &mut report))?
    };

    let ending = ending_of(interrupted, &tally);
    if ending == Ending::Complete {
        finish(dest, &listing)?;
    }
    report.summary(&tally, ending, started.elapsed());
    Ok(ending)
}

/// What the plan says of the retrievals ahead.
fn plan_info<'a>(
    at: &'a Located,
    dest: &'a Path,
    tier: Tiers,
    works: &[Work],
    max_in_flight: u64,
) -> PlanInfo<'a> {
    PlanInfo {
        vault: &at.vault,
        path: &at.path,
        dest,
        to_fetch: works.len() as u64,
        bytes_to_fetch: works.iter().map(|w| w.size).sum(),
        // The tier of new jobs; each `job` event names the tier its job got.
        tier: tier.first().as_str(),
        max_in_flight,
    }
}

fn tier_of(args: &ExportArgs, daemon: Option<&Daemon>) -> Tiers {
    args.tier
        .or(daemon.map(|d| d.tier))
        .unwrap_or(Tier::Standard.into())
}

fn settings(
    at: &Located,
    daemon: Option<&Daemon>,
    tier: Tiers,
    max_in_flight: u64,
    parallel_files: usize,
) -> Settings {
    let env = std::env::var(POLL_ENV).ok();
    Settings {
        vault: at.vault.clone(),
        tier,
        max_in_flight,
        poll_every: pace::poll_interval(env.as_deref(), daemon.map(|d| d.poll_every)),
        parallel_files,
        // Read from Glacier once connected (`retrieve`).
        policy_rate: None,
    }
}

/// The account's `BytesPerHour` rate, if its data-retrieval policy has one. An endpoint that
/// cannot say leaves the export unpaced, with a warning.
async fn policy_rate(client: &dyn GlacierClient) -> Option<u64> {
    match client.get_retrieval_policy().await {
        Ok(p) => p.bytes_per_hour(),
        Err(e) => {
            log::warn!("reading the data-retrieval policy: {e}; the export is not paced to it");
            None
        }
    }
}

/// The dry run's line on the policy, for [`DryRun::bytes_per_hour`].
async fn dry_policy_rate(aws: Option<&AwsArgs>) -> Option<u64> {
    match connect(aws).await {
        Ok(client) => policy_rate(client.as_ref()).await,
        Err(e) => {
            log::warn!("reading the data-retrieval policy: {e}");
            None
        }
    }
}

fn runtime() -> Result<tokio::runtime::Runtime, ExportError> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("glacierfs-export")
        .enable_all()
        .build()
        .map_err(ExportError::Runtime)
}

/// The export to S3: the same steps, with the bucket's survey, the streams and the journal.
fn to_s3(args: &ExportArgs, at: &Located, url: &S3Url) -> Result<Ending, ExportError> {
    let started = Instant::now();
    crate::engine::transfer::return_large_buffers_at_once();
    let daemon = daemon_of(at);
    let listing = source::list(&at.path)?;
    let tier = tier_of(args, daemon.as_ref());
    let poll_from = daemon.clone();
    let aws = daemon.map(|d| d.aws);
    let reach = Reach {
        bucket: url.bucket.clone(),
        region: args
            .s3_region
            .clone()
            .or_else(|| aws.as_ref().and_then(|a| a.region.clone())),
        profile: aws.as_ref().and_then(|a| a.profile.clone()),
        endpoint_url: args.s3_endpoint_url.clone(),
    };
    let dest = PathBuf::from(url.to_string());
    let max_in_flight = args.max_bytes_in_flight.unwrap_or(pace::DEFAULT_CAP);
    let scope = Scope {
        url,
        vault: &at.vault,
        class: args.storage_class,
    };
    let mut report = Reporter::new(args.json);
    let mut tally = Tally::default();
    runtime()?.block_on(async {
        let bucket = Bucket::connect(&reach).await;
        bucket.check().await?;
        if args.dry_run {
            let found = look(&bucket, None, &scope, &listing, &mut tally, &mut report).await?;
            let mut dry = s3::survey::dry_run(&found, args.storage_class);
            let to_fetch: Vec<(String, u64)> = found
                .fetch
                .iter()
                .map(|f| (f.archive_id.clone(), f.size))
                .collect();
            (dry.with_jobs, dry.bytes_with_jobs) =
                jobs_already_there(aws.as_ref(), &at.vault, &to_fetch).await;
            dry.bytes_per_hour = dry_policy_rate(aws.as_ref()).await;
            let info = PlanInfo {
                to_fetch: found.fetch.len() as u64,
                bytes_to_fetch: found.fetch.iter().map(|f| f.size).sum(),
                ..plan_info(at, &dest, tier, &[], max_in_flight)
            };
            report.dry_run(&info, &tally, &dry);
            return Ok(Ending::Complete);
        }
        let journal = Journal::open(&s3::journal::state_dir()?, &journal_identity(&reach, url))?;
        let mut found = look(
            &bucket,
            Some(&journal),
            &scope,
            &listing,
            &mut tally,
            &mut report,
        )
        .await?;
        let ctx = Arc::new(Ctx {
            bucket,
            journal,
            memory: Memory::new(args.memory_budget),
        });
        let works: Vec<Work> = std::mem::take(&mut found.fetch)
            .into_iter()
            .map(|f| Work {
                recorded_job: ctx.journal.job(&f.archive_id),
                archive_id: f.archive_id,
                size: f.size,
                tree_hash: f.tree_hash,
                sink: Sink::S3 {
                    targets: f.targets,
                    ctx: ctx.clone(),
                },
            })
            .collect();
        report.plan(&plan_info(at, &dest, tier, &works, max_in_flight), &tally);
        if !found.foreign.is_empty() {
            report.notice(&format!(
                "{} multipart uploads under {url} were not started by this export and are left \
                 alone (they cost storage until aborted)",
                found.foreign.len()
            ));
        }
        settle(&ctx, &mut found, &mut tally, &mut report).await;
        let interrupted = match works.is_empty() {
            true => false,
            false => {
                let settings = settings(
                    at,
                    poll_from.as_ref(),
                    tier,
                    max_in_flight,
                    PARALLEL_FILES_S3,
                );
                retrieve(aws, settings, works, &mut tally, &mut report).await?
            }
        };
        let ending = ending_of(interrupted, &tally);
        if ending == Ending::Complete {
            ctx.journal.finish();
        }
        report.summary(&tally, ending, started.elapsed());
        Ok(ending)
    })
}

/// How many of `archives` (id, size) have a usable job at Glacier already (a whole-archive
/// retrieval, running or done), and their bytes: ListJobs only reads, and costs nothing.
/// A dry run that cannot ask says so and counts none.
async fn jobs_already_there(
    aws: Option<&AwsArgs>,
    vault: &str,
    archives: &[(String, u64)],
) -> (u64, u64) {
    if archives.is_empty() {
        return (0, 0);
    }
    let listed = match connect(aws).await {
        Ok(client) => client.list_jobs(vault, JobFilter::default()).await,
        Err(e) => Err(e),
    };
    let jobs = match listed {
        Ok(jobs) => jobs,
        Err(e) => {
            log::warn!("listing the vault's jobs: {e}; the estimate counts none as reusable");
            return (0, 0);
        }
    };
    let sizes: std::collections::HashMap<&str, u64> = archives
        .iter()
        .map(|(id, size)| (id.as_str(), *size))
        .collect();
    let usable: std::collections::HashSet<&str> = jobs
        .iter()
        .filter(|j| j.action == JobAction::ArchiveRetrieval && j.status != JobStatus::Failed)
        .filter_map(|j| {
            let id = j.archive_id.as_deref()?;
            let size = *sizes.get(id)?;
            archive::whole_archive(j, size).then_some(id)
        })
        .collect();
    let bytes = usable.iter().map(|id| sizes[id]).sum();
    (usable.len() as u64, bytes)
}

/// What names one S3 destination, for its journal: where, which bucket, which prefix.
fn journal_identity(reach: &Reach, url: &S3Url) -> String {
    format!("{}|{}", reach.endpoint_url.as_deref().unwrap_or("aws"), url)
}

/// The daemon serving the mount, whose options (endpoint, region, tier) the export borrows.
fn daemon_of(at: &Located) -> Option<Daemon> {
    let daemon = source::find_daemon(&at.mount_root);
    match &daemon {
        Some(d) => log::debug!("using the options of daemon {}: {:?}", d.pid, d.aws),
        None => log::warn!(
            "found no daemon serving {}; reaching Glacier through the AWS configuration alone",
            at.mount_root.display()
        ),
    }
    daemon
}

/// DEST keeps its state in a directory at its top; an entry of that name at the top of PATH
/// would land on it.
fn check_no_state_clash(at: &Located, listing: &Listing) -> Result<(), ExportError> {
    let clash = listing
        .dirs
        .iter()
        .map(|d| &d.rel)
        .chain(listing.files.iter().map(|f| &f.rel))
        .any(|rel| rel.as_os_str() == dest::STATE_DIR);
    match clash {
        true => Err(ExportError::StateClash(at.path.clone())),
        false => Ok(()),
    }
}

fn ending_of(interrupted: bool, tally: &Tally) -> Ending {
    if interrupted {
        Ending::Interrupted
    } else if tally.failures.is_empty() {
        Ending::Complete
    } else {
        Ending::Failed
    }
}

/// Step 3, once every file is in place: removes what the run no longer needs and sets the
/// directories' times.
fn finish(dest: Dest, listing: &Listing) -> Result<(), ExportError> {
    // Temporary files an interrupted run left behind that no download resumed.
    for f in &listing.files {
        let _ = std::fs::remove_file(dest.temp_path(&f.rel));
    }
    let root = dest.root().to_owned();
    dest.finish()?;
    set_dir_times(&root, listing);
    Ok(())
}

/// Runs the engine, stopping it on Ctrl-C or SIGTERM; true if it was stopped.
async fn retrieve(
    aws: Option<AwsArgs>,
    settings: Settings,
    works: Vec<Work>,
    tally: &mut Tally,
    report: &mut Reporter,
) -> Result<bool, ExportError> {
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let signals = tokio::spawn(async move {
        wait_for_stop_signal().await;
        let _ = stop.send(true);
        // Keep the sender: a dropped one would read as "never stopped" from here on.
        std::future::pending::<()>().await;
    });
    let client = connect(aws.as_ref()).await.map_err(ExportError::Connect)?;
    let mut settings = settings;
    if let Some(rate) = policy_rate(client.as_ref()).await {
        let bytes: u64 = works.iter().map(|w| w.size).sum();
        let hour = pace::policy_hour(std::env::var(pace::HOUR_ENV).ok().as_deref());
        settings.policy_rate = Some((rate, hour));
        if bytes > rate {
            report.notice(&format!(
                "the data-retrieval policy allows {} an hour: the {} to retrieve take at least {} \
                 at that pace",
                crate::config::format_size(rate),
                crate::config::format_size(bytes),
                crate::codec::timefmt::format_span(pace::time_under_rate(bytes, rate))
            ));
        }
    }
    let engine = Engine::new(client, settings, works, tally, report, stopped);
    let ran = engine.run().await;
    signals.abort();
    Ok(ran?)
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
