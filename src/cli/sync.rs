//! Commands that talk to a running mount through the file system itself: `sync` asks for
//! uploads with the `user.glacier.sync` attribute (and with `--snapshot` for a namespace
//! snapshot with a vault's `user.glacier.snapshot`), `retrieve` for retrievals with
//! `user.glacier.retrieve`, and both, when asked to wait, watch each file's
//! `user.glacier.state` and the mount's `.jobs` (for bytes in flight and failures). No socket or
//! daemon protocol is needed, and permissions are the file system's own.
//!
//! While waiting they show progress: on a terminal one live line (files and bytes done, rate,
//! time left), otherwise a plain line at most every ten seconds, since a log or a CI console
//! wants a record rather than an animation. Each failure is printed once, when it happens,
//! with the mount's reason and the time of its next try; `--timeout` gives up with exit status
//! 1 and says what is left and why.

use std::collections::HashMap;
use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::client::{get_xattr, innermost_root, mount_roots, read_jobs, set_xattr};
use crate::codec::timefmt::format_span;
use crate::config::{format_size as human, RetrieveArgs, SyncArgs};

/// A plain progress line is printed at most this often.
const PLAIN_EVERY: Duration = Duration::from_secs(10);
/// How often each file's state is looked at.
const POLL: Duration = Duration::from_millis(500);
/// How often the mounts' `.jobs` are read, for bytes in flight and failures.
const JOBS_EVERY: Duration = Duration::from_secs(1);
/// How long a read of `.jobs` may take before the watch goes on without it.
const JOBS_WAIT: Duration = Duration::from_secs(5);
/// Files a give-up summary names one by one; the rest are counted.
const SUMMARY_FILES: usize = 10;

/// Files at or under `path` whose `user.glacier.state` is one of `states`, with their sizes.
fn files_in(path: &Path, states: &[&str], out: &mut Vec<(PathBuf, u64)>) {
    let Ok(meta) = std::fs::symlink_metadata(path) else {
        return;
    };
    if meta.is_file() {
        if get_xattr(path, "user.glacier.state").is_some_and(|s| states.contains(&s.as_str())) {
            out.push((path.to_owned(), meta.len()));
        }
        return;
    }
    if let Ok(entries) = std::fs::read_dir(path) {
        for e in entries.flatten() {
            files_in(&e.path(), states, out);
        }
    }
}

/// What a watch waits for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Goal {
    /// Staged files reach the vault.
    InGlacier,
    /// Cold archives reach the cache.
    Retrieved,
}

impl Goal {
    /// The `user.glacier.state` values of a file still on its way.
    fn waiting(self) -> &'static [&'static str] {
        match self {
            Goal::InGlacier => &["staged", "uploading"],
            Goal::Retrieved => &["cold", "retrieving"],
        }
    }

    /// The `.jobs` entries about this goal's files.
    fn action(self) -> &'static str {
        match self {
            Goal::InGlacier => "Upload",
            Goal::Retrieved => "ArchiveRetrieval",
        }
    }

    fn reached(self) -> &'static str {
        match self {
            Goal::InGlacier => "in Glacier",
            Goal::Retrieved => "retrieved",
        }
    }
}

/// What the mount's `.jobs` says about one file being watched.
#[derive(Debug, Clone, Default)]
struct Live {
    bytes_done: u64,
    /// Why its last attempt failed (and, for an upload, when the next one is).
    failure: Option<String>,
}

/// The `.jobs` entries of `goal` for files under the mount roots of `files`, by path. A failure
/// counts once its attempt has ended: an upload's StatusMessage while it is not in flight (it
/// then names the next try; while the next try runs it is the last one's), a retrieval job's
/// once the job has failed (a succeeded job's message just says so).
fn read_live(roots: &[PathBuf], files: &[(PathBuf, u64)], goal: Goal) -> HashMap<PathBuf, Live> {
    let mut wanted: Vec<&PathBuf> = files
        .iter()
        .filter_map(|(p, _)| innermost_root(p, roots))
        .collect();
    wanted.sort();
    wanted.dedup();
    let mut out = HashMap::new();
    for root in wanted {
        // A mount that does not answer in time only costs this round its details.
        let Ok(entries) = read_jobs(root, JOBS_WAIT) else {
            continue;
        };
        for e in entries {
            let (Some(action), Some(path)) = (e["Action"].as_str(), e["Path"].as_str()) else {
                continue;
            };
            if action != goal.action() {
                continue;
            }
            let failed = match goal {
                Goal::InGlacier => e["StatusCode"].as_str() != Some("InProgress"),
                Goal::Retrieved => e["StatusCode"].as_str() == Some("Failed"),
            };
            out.insert(
                root.join(path),
                Live {
                    bytes_done: e["BytesDone"].as_u64().unwrap_or(0),
                    failure: e["StatusMessage"]
                        .as_str()
                        .filter(|_| failed)
                        .map(str::to_owned),
                },
            );
        }
    }
    out
}

/// Where progress goes: a live line on a terminal, plain lines otherwise.
enum Display {
    Live(ProgressBar),
    Plain { last: Option<Instant> },
}

impl Display {
    fn new() -> Display {
        if !std::io::stderr().is_terminal() {
            return Display::Plain { last: None };
        }
        let bar = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr());
        if let Ok(style) = ProgressStyle::with_template("{spinner} {msg}") {
            bar.set_style(style);
        }
        Display::Live(bar)
    }

    fn progress(&mut self, line: String) {
        match self {
            Display::Live(bar) => {
                bar.set_message(line);
                bar.tick();
            }
            Display::Plain { last } => {
                if !matches!(last, Some(t) if t.elapsed() < PLAIN_EVERY) {
                    println!("{line}");
                    let _ = std::io::stdout().flush();
                    *last = Some(Instant::now());
                }
            }
        }
    }

    /// A line that stays, above the live line if there is one.
    fn note(&self, line: String) {
        match self {
            Display::Live(bar) => bar.suspend(|| eprintln!("{line}")),
            Display::Plain { .. } => eprintln!("{line}"),
        }
    }

    fn finish(&self) {
        if let Display::Live(bar) = self {
            bar.finish_and_clear();
        }
    }
}

/// "3 of 10 files, 1.5 MiB of 4.0 MiB, 512.0 KiB/s, about 5s left".
fn progress_line(
    files: (usize, usize),
    bytes: (u64, u64),
    elapsed: Duration,
    goal: Goal,
) -> String {
    let (done, total) = bytes;
    let secs = elapsed.as_secs_f64().max(0.001);
    let rate = (done as f64 / secs) as u64;
    let left = match rate {
        0 => "time left unknown".to_owned(),
        r => format!(
            "about {} left",
            format_span(Duration::from_secs(total.saturating_sub(done).div_ceil(r)))
        ),
    };
    format!(
        "{} of {} files {}, {} of {}, {}/s, {left}",
        files.0,
        files.1,
        goal.reached(),
        human(done),
        human(total),
        human(rate)
    )
}

/// Waits until none of `files` is in one of `goal`'s waiting states, showing progress and
/// failures; gives up after `timeout`.
fn watch(files: Vec<(PathBuf, u64)>, goal: Goal, timeout: Option<Duration>) -> ExitCode {
    let started = Instant::now();
    let (total_files, total_bytes) = (files.len(), files.iter().map(|(_, s)| s).sum::<u64>());
    let roots = mount_roots();
    let mut left = files;
    let mut live: HashMap<PathBuf, Live> = HashMap::new();
    let mut shown: HashMap<PathBuf, String> = HashMap::new();
    let mut jobs_read: Option<Instant> = None;
    let mut display = Display::new();
    loop {
        left.retain(|(p, _)| {
            get_xattr(p, "user.glacier.state").is_some_and(|s| goal.waiting().contains(&s.as_str()))
        });
        if left.is_empty() {
            display.finish();
            println!(
                "all files are {}: {total_files} file(s), {} ({:.1}s)",
                goal.reached(),
                human(total_bytes),
                started.elapsed().as_secs_f64()
            );
            return ExitCode::SUCCESS;
        }
        if !matches!(jobs_read, Some(t) if t.elapsed() < JOBS_EVERY) {
            live = read_live(&roots, &left, goal);
            jobs_read = Some(Instant::now());
            for (path, _) in &left {
                let Some(why) = live.get(path).and_then(|l| l.failure.as_ref()) else {
                    continue;
                };
                // Once per failure: a new attempt that fails again says so with a new time.
                if shown.get(path) != Some(why) {
                    display.note(format!("glacierfs: {}: {why}", path.display()));
                    shown.insert(path.clone(), why.clone());
                }
            }
        }
        let left_bytes: u64 = left.iter().map(|(_, s)| s).sum();
        let moving: u64 = left
            .iter()
            .map(|(p, s)| live.get(p).map_or(0, |l| l.bytes_done.min(*s)))
            .sum();
        let done = total_bytes - left_bytes + moving;
        display.progress(progress_line(
            (total_files - left.len(), total_files),
            (done, total_bytes),
            started.elapsed(),
            goal,
        ));
        if let Some(limit) = timeout.filter(|t| started.elapsed() >= *t) {
            display.finish();
            give_up(&left, &live, goal, limit);
            return ExitCode::FAILURE;
        }
        std::thread::sleep(POLL);
    }
}

/// What is left when a watch gives up, and why, on standard error.
fn give_up(left: &[(PathBuf, u64)], live: &HashMap<PathBuf, Live>, goal: Goal, after: Duration) {
    let bytes: u64 = left.iter().map(|(_, s)| s).sum();
    eprintln!(
        "glacierfs: gave up after {}: {} file(s), {}, not yet {}",
        format_span(after),
        left.len(),
        human(bytes),
        goal.reached()
    );
    for (path, _) in left.iter().take(SUMMARY_FILES) {
        let state = get_xattr(path, "user.glacier.state").unwrap_or_default();
        let why = live
            .get(path)
            .and_then(|l| l.failure.clone())
            .unwrap_or_else(|| format!("{state}, no failure reported"));
        eprintln!("  {}: {why}", path.display());
    }
    if left.len() > SUMMARY_FILES {
        eprintln!("  and {} more", left.len() - SUMMARY_FILES);
    }
}

/// How long a namespace snapshot wait looks between reads of the vault's attribute.
const SNAPSHOT_POLL: Duration = Duration::from_millis(250);

/// Waits until `settled` says the vault attribute `name` at `path` has reached an end: `Ok`
/// with a line to print, or `Err` with why it failed. Gives up after `timeout`.
pub(crate) fn wait_for_vault(
    path: &Path,
    name: &str,
    timeout: Option<Duration>,
    settled: impl Fn(&str) -> Option<Result<String, String>>,
) -> ExitCode {
    let started = Instant::now();
    loop {
        let value = get_xattr(path, name).unwrap_or_default();
        match settled(value.trim()) {
            Some(Ok(line)) => {
                println!("{line}");
                return ExitCode::SUCCESS;
            }
            Some(Err(why)) => {
                eprintln!("glacierfs: {}: {why}", path.display());
                return ExitCode::FAILURE;
            }
            None => {}
        }
        if timeout.is_some_and(|t| started.elapsed() >= t) {
            eprintln!(
                "glacierfs: {}: gave up waiting after {} ({value}); `cat .jobs` in the vault \
                 shows where it stands",
                path.display(),
                format_span(started.elapsed())
            );
            return ExitCode::FAILURE;
        }
        std::thread::sleep(SNAPSHOT_POLL);
    }
}

/// `sync --snapshot PATH`: asks the mount for a snapshot of the vault at PATH now; with a
/// wait, returns once it is in the vault.
fn snapshot(path: &Path, args: &SyncArgs) -> ExitCode {
    let state = |p: &Path| get_xattr(p, "user.glacier.snapshot");
    let Some(before) = state(path) else {
        eprintln!(
            "glacierfs: {}: not a vault's directory in a running mount",
            path.display()
        );
        return ExitCode::FAILURE;
    };
    if let Some(when) = before.strip_prefix("no-history ") {
        eprintln!(
            "glacierfs: {}: the vault holds a snapshot of {when} this catalog has no history of; \
             run `glacierfs catalog restore {}` first",
            path.display(),
            path.display()
        );
        return ExitCode::FAILURE;
    }
    if let Err(e) = set_xattr(path, "user.glacier.snapshot", b"") {
        eprintln!("glacierfs: {e}");
        return ExitCode::FAILURE;
    }
    if !args.wait && args.timeout.is_none() {
        println!("snapshot asked for; `cat .jobs` in the vault shows it going up");
        return ExitCode::SUCCESS;
    }
    wait_for_vault(path, "user.glacier.snapshot", args.timeout, |now| {
        if now == "uploading" {
            return None;
        }
        match now.strip_prefix("confirmed ") {
            Some(when) if now != before => Some(Ok(format!("snapshot of {when} is in the vault"))),
            // Not gone up yet, or its upload failed and waits for another try.
            _ => None,
        }
    })
}

pub fn sync(args: &SyncArgs) -> ExitCode {
    let Some(vault) = &args.snapshot else {
        return sync_files(args);
    };
    // The vault's staged files first, so the snapshot names their archives.
    let files = if args.paths.is_empty() {
        SyncArgs {
            paths: vec![vault.clone()],
            ..args.clone()
        }
    } else {
        args.clone()
    };
    match sync_files(&files) {
        code if code == ExitCode::SUCCESS => snapshot(vault, args),
        code => code,
    }
}

fn sync_files(args: &SyncArgs) -> ExitCode {
    let paths = if args.paths.is_empty() {
        mount_roots()
    } else {
        args.paths.clone()
    };
    if paths.is_empty() {
        eprintln!("glacierfs: no glacierfs mount found; name the files to sync");
        return ExitCode::FAILURE;
    }
    for p in &paths {
        if let Err(e) = set_xattr(p, "user.glacier.sync", b"") {
            eprintln!("glacierfs: {e}");
            return ExitCode::FAILURE;
        }
    }
    if !args.wait && args.timeout.is_none() {
        return ExitCode::SUCCESS;
    }
    let mut pending = Vec::new();
    for p in &paths {
        // Absolute, so each file can be matched with its mount's `.jobs`.
        let p = std::fs::canonicalize(p).unwrap_or_else(|_| p.clone());
        files_in(&p, Goal::InGlacier.waiting(), &mut pending);
    }
    watch(pending, Goal::InGlacier, args.timeout)
}

/// `glacierfs retrieve`: says how many archives and bytes a request involves, then asks the
/// mount for them through `user.glacier.retrieve`; with `--wait`, watches them arrive.
pub fn retrieve(args: &RetrieveArgs) -> ExitCode {
    let (mut cold, mut coming) = (Vec::new(), Vec::new());
    for p in &args.paths {
        let Ok(p) = std::fs::canonicalize(p) else {
            eprintln!("glacierfs: {}: no such file or directory", p.display());
            return ExitCode::FAILURE;
        };
        files_in(&p, &["cold"], &mut cold);
        // Asked for before: nothing to request, but a wait waits for them too.
        files_in(&p, &["retrieving"], &mut coming);
    }
    // The list goes to the mount as the option spells it, fallback and all.
    let tier = args.tier.map(|t| t.to_string()).unwrap_or_default();
    let shown = args
        .tier
        .map(|t| t.describe())
        .unwrap_or_else(|| "the mount's default".into());
    let bytes: u64 = cold.iter().map(|(_, s)| s).sum();
    println!("{} archive(s), {bytes} bytes, tier {shown}", cold.len());
    if let Some(w) = args
        .paths
        .first()
        .and_then(|p| super::status::policy_warning(p, bytes))
    {
        eprintln!("glacierfs: {w}");
    }
    let mut failed = 0;
    for (path, _) in &cold {
        if let Err(e) = set_xattr(path, "user.glacier.retrieve", tier.as_bytes()) {
            eprintln!("glacierfs: {e}");
            failed += 1;
        }
    }
    if failed > 0 {
        eprintln!("glacierfs: {failed} retrieval request(s) failed");
        return ExitCode::FAILURE;
    }
    if !args.wait && args.timeout.is_none() {
        println!("requested; `cat .jobs` in the vault shows their progress");
        return ExitCode::SUCCESS;
    }
    cold.extend(coming);
    watch(cold, Goal::Retrieved, args.timeout)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_progress_line_says_files_bytes_rate_and_time_left() {
        let line = progress_line(
            (3, 10),
            (2 << 20, 6 << 20),
            Duration::from_secs(2),
            Goal::InGlacier,
        );
        assert_eq!(
            line,
            "3 of 10 files in Glacier, 2.0 MiB of 6.0 MiB, 1.0 MiB/s, about 4s left"
        );
        let stalled = progress_line((0, 1), (0, 100), Duration::from_secs(5), Goal::Retrieved);
        assert_eq!(
            stalled,
            "0 of 1 files retrieved, 0 B of 100 B, 0 B/s, time left unknown"
        );
    }
}
