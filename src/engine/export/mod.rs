//! `glacierfs export [--tier T] [--max-bytes-in-flight SIZE] [--json] PATH DEST`: copies every
//! file under PATH (a vault, or a directory inside one, in a running mount) to the same
//! relative path under DEST, straight from Glacier, never through the mount's cache.
//!
//! The pieces: [`source`] finds the mount, its daemon's options and the tree under PATH;
//! [`dest`] owns DEST, its temporary files and the state that lets a run resume; [`pace`]
//! holds the pacing rules; [`survey`] does step 1 below; [`archive`] retrieves one archive
//! (its job, download and placing); [`engine`] runs them all, paced; [`report`] shows progress
//! and the summary. This file puts them in order:
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
mod survey;

use std::ffi::CString;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Instant;

use crate::config::{AwsArgs, ExportArgs};
use crate::glacier::aws::{AwsGlacier, AwsOptions};
use crate::glacier::retry::{RetryPolicy, Retrying};
use crate::glacier::{GlacierClient, GlacierError, Tier};

use archive::Work;
use dest::{Dest, DestError};
use engine::{Engine, EngineError, Settings};
use report::{Ending, PlanInfo, Reporter, Tally};
use source::{Daemon, Listing, Located, SourceError};
use survey::survey;

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
    let daemon = daemon_of(&at);
    let listing = source::list(&at.path)?;
    check_no_state_clash(&at, &listing)?;
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
    let works = survey(&dest, &listing, &mut tally, &mut report)?;
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

    let ending = ending_of(interrupted, &tally);
    if ending == Ending::Complete {
        finish(dest, &listing)?;
    }
    report.summary(&tally, ending, started.elapsed());
    Ok(ending)
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
