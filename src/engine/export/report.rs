//! What an export tells its user: a progress line on stderr while it runs (rewritten in place
//! on a terminal, a plain line now and then otherwise), a summary at the end, and with
//! `--json` the same as JSON Lines on stdout, for scripts. Failures are always listed.
//!
//! JSON events (one object per line, each with an `"event"` key): `plan` once, `job` for each
//! retrieval job started or reused, `file` for each file placed, skipped or failed, `notice`
//! for things worth knowing (an expired output requested again), `progress` at most once a
//! second, and `summary` last. A dry run (`--dry-run`) prints only its `plan`, with the
//! counts of what the export would do and an `estimate` of what it would cost.

use std::io::{IsTerminal, Write};
use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use super::price;
use super::source::Listing;
use crate::config::StorageClass;
use crate::glacier::Tier;

/// Counts that make up progress and the summary.
#[derive(Debug, Clone, Default)]
pub struct Tally {
    pub files_total: u64,
    pub bytes_total: u64,
    pub dirs: u64,
    /// Files in place: downloaded, found complete, copied or created.
    pub files_done: u64,
    pub bytes_done: u64,
    pub downloaded: u64,
    pub bytes_downloaded: u64,
    pub already: u64,
    pub copied: u64,
    pub empty: u64,
    /// Symlinks and special files recreated (in a directory).
    pub specials: u64,
    pub jobs_started: u64,
    pub jobs_reused: u64,
    /// New jobs for outputs that expired before they were read.
    pub rerequests: u64,
    /// New jobs after an output's data did not match its tree hash.
    pub refetches: u64,
    pub failures: Vec<(String, String)>,
    /// What the destination cannot hold (an empty directory, a symlink or a special file in a
    /// bucket), and why.
    pub unheld: Vec<(String, String)>,
}

impl Tally {
    /// The totals of what is under PATH: files, their bytes, and directories below PATH.
    pub fn count(&mut self, listing: &Listing) {
        self.files_total = listing.files.len() as u64;
        self.bytes_total = listing.files.iter().map(|f| f.size).sum();
        self.dirs = listing
            .dirs
            .iter()
            .filter(|d| !d.rel.as_os_str().is_empty())
            .count() as u64;
    }
}

/// Retrievals in progress, as the progress line shows them.
#[derive(Debug, Clone, Default)]
pub struct Live {
    /// Bytes verified so far of the files being downloaded.
    pub bytes_partial: u64,
    pub downloading: u64,
    pub ready: u64,
    pub bytes_in_flight: u64,
    /// Per tier: jobs running at Glacier, and the likely time until the last is done.
    pub waiting: Vec<(String, u64, Duration)>,
}

/// How an export ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ending {
    Complete,
    Failed,
    Interrupted,
}

impl Ending {
    fn as_str(self) -> &'static str {
        match self {
            Ending::Complete => "complete",
            Ending::Failed => "failed",
            Ending::Interrupted => "interrupted",
        }
    }
}

/// What a dry run adds to the plan.
#[derive(Debug, Clone, Default)]
pub struct DryRun {
    /// Files (or objects) to write, and their bytes.
    pub to_write: u64,
    pub bytes_to_write: u64,
    pub open_uploads: u64,
    /// Archives to retrieve that have a usable job already (running or done), and their
    /// bytes: they cost no new retrieval.
    pub with_jobs: u64,
    pub bytes_with_jobs: u64,
    /// For S3: the class, and the PUT-class requests the writes take.
    pub s3: Option<(StorageClass, u64)>,
    /// The account's `BytesPerHour` data-retrieval policy, when it has one: the retrievals
    /// take at least their bytes over this rate.
    pub bytes_per_hour: Option<u64>,
}

/// Dollars to a hundredth of a cent: small exports cost fractions of a cent.
fn round_cents(x: f64) -> f64 {
    (x * 10_000.0).round() / 10_000.0
}

/// What the export is about to do.
#[derive(Debug, Clone)]
pub struct PlanInfo<'a> {
    pub vault: &'a str,
    pub path: &'a Path,
    pub dest: &'a Path,
    pub to_fetch: u64,
    pub bytes_to_fetch: u64,
    pub tier: &'a str,
    pub max_in_flight: u64,
}

pub struct Reporter {
    json: bool,
    tty: bool,
    /// What was reported before the plan (the files settled while the plan was made), held
    /// back so the plan comes first.
    held: Option<Vec<Output>>,
    /// A progress line is on the terminal and must be cleared before other output.
    line_shown: bool,
    last_progress: Option<Instant>,
}

enum Output {
    Json(Value),
    Line(String),
}

impl Reporter {
    pub fn new(json: bool) -> Reporter {
        Reporter {
            json,
            tty: std::io::stderr().is_terminal(),
            held: Some(Vec::new()),
            line_shown: false,
            last_progress: None,
        }
    }

    fn emit(&mut self, v: Value) {
        if let Some(held) = &mut self.held {
            held.push(Output::Json(v));
            return;
        }
        let mut out = std::io::stdout().lock();
        // A closed stdout (a pipe whose reader left) must not stop the export.
        let _ = writeln!(out, "{v}");
        let _ = out.flush();
    }

    fn say(&mut self, line: &str) {
        if let Some(held) = &mut self.held {
            held.push(Output::Line(line.to_owned()));
            return;
        }
        let mut err = std::io::stderr().lock();
        if self.line_shown {
            let _ = write!(err, "\r\x1b[K");
            self.line_shown = false;
        }
        let _ = writeln!(err, "{line}");
    }

    /// Says what the export is about to do, then what was held back.
    pub fn plan(&mut self, p: &PlanInfo<'_>, t: &Tally) {
        let held = self.held.take().unwrap_or_default();
        self.announce(p, t);
        for out in held {
            match out {
                Output::Json(v) => self.emit(v),
                Output::Line(l) => self.say(&l),
            }
        }
    }

    fn announce(&mut self, p: &PlanInfo<'_>, t: &Tally) {
        if self.json {
            self.emit(json!({
                "event": "plan", "vault": p.vault, "path": lossy(p.path), "dest": lossy(p.dest),
                "files": t.files_total, "bytes": t.bytes_total, "directories": t.dirs,
                "files_in_place": t.files_done, "to_fetch": p.to_fetch,
                "bytes_to_fetch": p.bytes_to_fetch, "tier": p.tier,
                "max_bytes_in_flight": p.max_in_flight,
            }));
            return;
        }
        self.say(&format!(
            "exporting {} files ({}) and {} directories of vault {} from {} to {}",
            t.files_total,
            size(t.bytes_total),
            t.dirs,
            p.vault,
            p.path.display(),
            p.dest.display()
        ));
        self.say(&format!(
            "{} in place already; {} archives ({}) to retrieve, tier {} for new jobs, at most {} \
             in flight",
            t.files_done,
            p.to_fetch,
            size(p.bytes_to_fetch),
            p.tier,
            size(p.max_in_flight)
        ));
    }

    /// The plan of a dry run, with its estimated cost; everything held back is dropped (a
    /// dry run reports its findings in the plan alone).
    pub fn dry_run(&mut self, p: &PlanInfo<'_>, t: &Tally, d: &DryRun) {
        self.held = None;
        let retrieval: Vec<(Tier, f64)> = [Tier::Expedited, Tier::Standard, Tier::Bulk]
            .into_iter()
            .map(|tier| {
                let archives = p.to_fetch.saturating_sub(d.with_jobs);
                let bytes = p.bytes_to_fetch.saturating_sub(d.bytes_with_jobs);
                (tier, price::retrieval(tier, archives, bytes))
            })
            .collect();
        let s3 = d
            .s3
            .map(|(class, requests)| (class, price::storage(class, requests, d.bytes_to_write)));
        if self.json {
            let by_tier: serde_json::Map<String, Value> = retrieval
                .iter()
                .map(|(tier, c)| (tier.as_str().to_owned(), json!(round_cents(*c))))
                .collect();
            let mut plan = json!({
                "event": "plan", "dry_run": true, "vault": p.vault, "path": lossy(p.path),
                "dest": lossy(p.dest), "files": t.files_total, "bytes": t.bytes_total,
                "directories": t.dirs, "files_in_place": t.files_done,
                "to_write": d.to_write, "bytes_to_write": d.bytes_to_write,
                "to_fetch": p.to_fetch, "bytes_to_fetch": p.bytes_to_fetch, "tier": p.tier,
                "open_uploads": d.open_uploads, "with_jobs": d.with_jobs,
                "failed": t.failures.len(),
                "failures": pairs(&t.failures), "not_held": pairs(&t.unheld),
                "estimate": {
                    "retrieval_by_tier": by_tier, "priced_region": price::PRICED_REGION,
                    "priced_on": price::PRICED_ON,
                },
            });
            if let Some(rate) = d.bytes_per_hour {
                let new_bytes = p.bytes_to_fetch.saturating_sub(d.bytes_with_jobs);
                plan["policy_bytes_per_hour"] = json!(rate);
                plan["seconds_under_policy"] =
                    json!(super::pace::time_under_rate(new_bytes, rate).as_secs());
            }
            if let (Some((class, (requests, month))), Some(est)) = (s3, plan.get_mut("estimate")) {
                est["storage_class"] = json!(class.as_str());
                est["s3_requests"] = json!(round_cents(requests));
                est["storage_per_month"] = json!(round_cents(month));
            }
            self.emit(plan);
            return;
        }
        self.say(&format!(
            "dry run: nothing started, nothing written; vault {} from {} to {}",
            p.vault,
            p.path.display(),
            p.dest.display()
        ));
        self.say(&format!(
            "  {} files ({}) and {} directories; {} in place already",
            t.files_total,
            size(t.bytes_total),
            t.dirs,
            t.files_done
        ));
        self.say(&format!(
            "  to write: {} files ({}); to retrieve: {} archives ({})",
            d.to_write,
            size(d.bytes_to_write),
            p.to_fetch,
            size(p.bytes_to_fetch)
        ));
        if d.with_jobs > 0 {
            self.say(&format!(
                "  {} of those archives ({}) have a job already, which costs nothing more",
                d.with_jobs,
                size(d.bytes_with_jobs)
            ));
        }
        if let Some(rate) = d.bytes_per_hour {
            let new_bytes = p.bytes_to_fetch.saturating_sub(d.bytes_with_jobs);
            let warn = if new_bytes > rate { "warning: " } else { "" };
            self.say(&format!(
                "  {warn}the data-retrieval policy allows {} an hour: retrieving {} takes at \
                 least {} under it",
                size(rate),
                size(new_bytes),
                crate::codec::timefmt::format_span(super::pace::time_under_rate(new_bytes, rate))
            ));
        }
        if d.open_uploads > 0 {
            self.say(&format!(
                "  {} multipart uploads are open under the destination",
                d.open_uploads
            ));
        }
        for (what, list) in [
            ("cannot be exported", &t.failures),
            ("not exported", &t.unheld),
        ] {
            if let Some((path, why)) = list.first() {
                let more = match list.len() {
                    1 => String::new(),
                    n => format!(" (and {} more; --json lists them)", n - 1),
                };
                self.say(&format!("  {what}: {path}: {why}{more}"));
            }
        }
        let tiers: Vec<String> = retrieval
            .iter()
            .map(|(tier, c)| format!("{} {}", tier.as_str(), price::dollars(*c)))
            .collect();
        self.say(&format!(
            "  estimated retrieval: {} (this export uses {})",
            tiers.join(", "),
            p.tier
        ));
        if let Some((class, (requests, month))) = s3 {
            self.say(&format!(
                "  estimated S3: {} in requests, then {} a month in {}",
                price::dollars(requests),
                price::dollars(month),
                class.as_str()
            ));
        }
        self.say(&format!(
            "  prices of {} as of {}; data transfer and minimum storage durations not included",
            price::PRICED_REGION,
            price::PRICED_ON
        ));
    }

    pub fn job(&mut self, archive_id: &str, job_id: &str, tier: &str, reused: bool, path: &Path) {
        if self.json {
            self.emit(json!({
                "event": "job", "archive_id": archive_id, "job_id": job_id, "tier": tier,
                "reused": reused, "path": lossy(path),
            }));
        }
    }

    /// A file placed (`exported`, `in_place`, `copied`, `empty`), a symlink or special file
    /// `recreated`, `failed`, or `not_held` (something the destination cannot hold, such as an
    /// empty directory or a symlink in a bucket).
    pub fn file(&mut self, path: &Path, bytes: u64, status: &str, error: Option<&str>) {
        if self.json {
            self.emit(json!({
                "event": "file", "path": lossy(path), "bytes": bytes, "status": status, "error": error,
            }));
        } else if let Some(e) = error {
            let head = match status {
                "not_held" => "not exported",
                _ => "failed",
            };
            self.say(&format!("{head}: {}: {e}", path.display()));
        }
    }

    pub fn notice(&mut self, message: &str) {
        if self.json {
            self.emit(json!({"event": "notice", "message": message}));
        } else {
            self.say(message);
        }
    }

    /// Whether a progress line is due: at most four a second on a terminal, one a second as
    /// JSON, one every 30 s into a file or pipe. Gathering what it shows costs, so ask first.
    pub fn due(&self) -> bool {
        let every = match (self.json, self.tty) {
            (true, _) => Duration::from_secs(1),
            (false, true) => Duration::from_millis(250),
            (false, false) => Duration::from_secs(30),
        };
        self.last_progress.is_none_or(|at| at.elapsed() >= every)
    }

    /// Shows the progress line.
    pub fn progress(&mut self, t: &Tally, live: &Live) {
        self.last_progress = Some(Instant::now());
        if self.json {
            let waiting: Vec<Value> = live
                .waiting
                .iter()
                .map(|(tier, jobs, left)| {
                    json!({"tier": tier, "jobs": jobs, "likely_secs_left": left.as_secs()})
                })
                .collect();
            self.emit(json!({
                "event": "progress", "files_done": t.files_done, "files_total": t.files_total,
                "bytes_done": t.bytes_done + live.bytes_partial, "bytes_total": t.bytes_total,
                "downloading": live.downloading, "ready": live.ready,
                "bytes_in_flight": live.bytes_in_flight, "waiting": waiting,
                "failed": t.failures.len(),
            }));
            return;
        }
        let line = progress_line(t, live);
        if self.tty {
            let mut err = std::io::stderr().lock();
            let _ = write!(err, "\r\x1b[K{line}");
            let _ = err.flush();
            self.line_shown = true;
        } else {
            self.say(&line);
        }
    }

    pub fn summary(&mut self, t: &Tally, ending: Ending, elapsed: Duration) {
        if self.json {
            let failures: Vec<Value> = t
                .failures
                .iter()
                .map(|(p, e)| json!({"path": p, "error": e}))
                .collect();
            self.emit(json!({
                "event": "summary", "status": ending.as_str(),
                "files_total": t.files_total, "files_done": t.files_done,
                "bytes_total": t.bytes_total, "directories": t.dirs,
                "downloaded": t.downloaded, "bytes_downloaded": t.bytes_downloaded,
                "in_place": t.already, "copied": t.copied, "empty": t.empty,
                "specials": t.specials, "jobs_started": t.jobs_started, "jobs_reused": t.jobs_reused,
                "rerequests": t.rerequests, "refetches": t.refetches,
                "failed": t.failures.len(), "failures": failures,
                "not_held": pairs(&t.unheld),
                "seconds": elapsed.as_secs_f64(),
            }));
            return;
        }
        for line in summary_lines(t, ending, elapsed) {
            self.say(&line);
        }
    }
}

fn progress_line(t: &Tally, live: &Live) -> String {
    let mut line = format!(
        "{}/{} files, {}/{}",
        t.files_done,
        t.files_total,
        size(t.bytes_done + live.bytes_partial),
        size(t.bytes_total)
    );
    if live.downloading + live.ready > 0 {
        line += &format!(", {} downloading, {} ready", live.downloading, live.ready);
    }
    if !live.waiting.is_empty() {
        let tiers: Vec<String> = live
            .waiting
            .iter()
            .map(|(tier, jobs, left)| format!("{jobs} {tier} (~{})", span(*left)))
            .collect();
        line += &format!(", jobs waiting on Glacier: {}", tiers.join(", "));
    }
    if !t.failures.is_empty() {
        line += &format!(", {} failed", t.failures.len());
    }
    line
}

fn summary_lines(t: &Tally, ending: Ending, elapsed: Duration) -> Vec<String> {
    let head = match ending {
        Ending::Complete => "export complete",
        Ending::Failed => "export finished with failures",
        Ending::Interrupted => "export interrupted",
    };
    let mut out = vec![
        format!(
            "{head}: {} of {} files ({} of {}), {} directories, in {}",
            t.files_done,
            t.files_total,
            size(t.bytes_done),
            size(t.bytes_total),
            t.dirs,
            span(elapsed)
        ),
        format!(
            "  {} retrieved ({}), {} already in place, {} copied, {} empty",
            t.downloaded,
            size(t.bytes_downloaded),
            t.already,
            t.copied,
            t.empty
        ),
        format!(
            "  jobs: {} started, {} reused; {} re-requested after their output expired, {} \
             after corrupt data",
            t.jobs_started, t.jobs_reused, t.rerequests, t.refetches
        ),
    ];
    if t.specials > 0 {
        out.push(format!(
            "  {} symlinks and special files recreated",
            t.specials
        ));
    }
    if !t.unheld.is_empty() {
        out.push(format!(
            "  {} not exported, since the destination cannot hold them:",
            t.unheld.len()
        ));
        out.extend(t.unheld.iter().map(|(p, e)| format!("    {p}: {e}")));
    }
    if !t.failures.is_empty() {
        out.push(format!("  {} failed:", t.failures.len()));
        out.extend(t.failures.iter().map(|(p, e)| format!("    {p}: {e}")));
    }
    match ending {
        Ending::Complete => {}
        Ending::Failed => out.push(
            "  run the same command again to retry what failed; what is in place is kept".into(),
        ),
        Ending::Interrupted => out.push(
            "  run the same command again to resume: files in place are kept, running jobs and \
             verified partial downloads are reused"
                .into(),
        ),
    }
    out
}

fn pairs(list: &[(String, String)]) -> Vec<Value> {
    list.iter()
        .map(|(p, e)| json!({"path": p, "why": e}))
        .collect()
}

/// A path as JSON text: names that are not UTF-8 (possible in old descriptions) are shown with
/// replacement characters rather than failing the report.
fn lossy(path: &Path) -> String {
    path.to_string_lossy().into_owned()
}

/// Bytes in binary units, as the options take them.
pub fn size(bytes: u64) -> String {
    crate::config::format_size(bytes)
}

/// A duration the way people say it: `45s`, `12m`, `3h 20m`.
pub fn span(d: Duration) -> String {
    let s = d.as_secs();
    match s {
        0..=59 => format!("{s}s"),
        60..=3599 => format!("{}m", s / 60),
        _ => format!("{}h {}m", s / 3600, s % 3600 / 60),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_and_spans_read_well() {
        assert_eq!(size(0), "0 B");
        assert_eq!(size(1023), "1023 B");
        assert_eq!(size(4 << 20), "4.0 MiB");
        assert_eq!(size(3 << 29), "1.5 GiB");
        assert_eq!(span(Duration::from_secs(45)), "45s");
        assert_eq!(span(Duration::from_secs(720)), "12m");
        assert_eq!(span(Duration::from_secs(12_000)), "3h 20m");
    }

    #[test]
    fn progress_and_summary_say_what_matters() {
        let t = Tally {
            files_total: 300,
            files_done: 12,
            bytes_total: 3 << 20,
            bytes_done: 1 << 20,
            failures: vec![("a/b".into(), "corrupt".into())],
            rerequests: 2,
            ..Tally::default()
        };
        let live = Live {
            downloading: 2,
            waiting: vec![("Bulk".into(), 7, Duration::from_secs(7200))],
            ..Live::default()
        };
        let line = progress_line(&t, &live);
        assert!(line.starts_with("12/300 files, 1.0 MiB/3.0 MiB"), "{line}");
        assert!(line.contains("7 Bulk (~2h 0m)"), "{line}");
        assert!(line.contains("1 failed"), "{line}");
        let lines = summary_lines(&t, Ending::Failed, Duration::from_secs(3)).join("\n");
        assert!(lines.contains("2 re-requested"), "{lines}");
        assert!(lines.contains("a/b: corrupt"), "{lines}");
        assert!(lines.contains("run the same command again"), "{lines}");
    }
}
