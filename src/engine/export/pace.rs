//! The pacing rules of an export, kept free of I/O so they can be tested on their own: how many
//! bytes of retrievals may be outstanding, how many may start in any hour under a
//! `BytesPerHour` data-retrieval policy ([`HourWindow`]), which finished output to fetch first,
//! and how long a job of each tier is likely to take.
//!
//! Why keep to the policy's rate: Glacier refuses a retrieval that would take the bytes
//! retrieved in the trailing hour over it (PolicyEnforcedException), and a refused archive
//! would fail. Starting only what the last hour leaves room for means no start is refused.
//!
//! Why pace at all: a retrieval's output lasts 24 hours after the job completes. Starting every
//! job of a large vault at once would have Glacier finish them all within hours of each other,
//! and whatever could not be downloaded in time would expire, be paid for and requested again.
//! Bounding the bytes started but not yet downloaded bounds that risk (and the disk the
//! downloads need): the default bound is the free space of DEST's disk, at most 50 GiB.

use std::collections::VecDeque;
use std::time::{Duration, Instant, SystemTime};

use crate::config::GIB;

/// The default bound on bytes in flight never exceeds this.
pub const DEFAULT_CAP: u64 = 50 * GIB;

/// How often running jobs are checked when neither `GLACIERFS_EXPORT_POLL_MS` nor the mount's
/// `--poll-interval` says otherwise (real jobs take minutes to hours).
pub const DEFAULT_POLL: Duration = Duration::from_secs(60);
pub const POLL_ENV: &str = "GLACIERFS_EXPORT_POLL_MS";

/// The poll interval: `GLACIERFS_EXPORT_POLL_MS` when it is a positive number of
/// milliseconds, else the mount's own, else [`DEFAULT_POLL`].
pub fn poll_interval(env: Option<&str>, mount: Option<Duration>) -> Duration {
    env.and_then(|v| v.trim().parse::<u64>().ok())
        .filter(|ms| *ms > 0)
        .map(Duration::from_millis)
        .or(mount)
        .unwrap_or(DEFAULT_POLL)
}

/// The default bound: the free space of DEST's disk, at most [`DEFAULT_CAP`], at least a byte.
pub fn default_max_in_flight(free: u64) -> u64 {
    free.clamp(1, DEFAULT_CAP)
}

/// Bytes of retrievals started (or adopted) and not yet downloaded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Budget {
    max: u64,
    used: u64,
}

impl Budget {
    pub fn new(max: u64) -> Budget {
        Budget { max, used: 0 }
    }

    pub fn used(&self) -> u64 {
        self.used
    }

    /// Whether a new retrieval of `size` bytes may start now. One larger than the whole bound
    /// starts alone, when nothing else is outstanding; otherwise it could never start.
    pub fn admits(&self, size: u64) -> bool {
        self.used == 0 || self.used.saturating_add(size) <= self.max
    }

    /// Counts a retrieval. Jobs found running are counted even past the bound: they are
    /// outstanding whether or not this export wanted them.
    pub fn take(&mut self, size: u64) {
        self.used = self.used.saturating_add(size);
    }

    pub fn release(&mut self, size: u64) {
        self.used = self.used.saturating_sub(size);
    }
}

/// The order finished outputs are downloaded in: the one whose 24-hour window ends first, so
/// outputs near their end are read before they expire. An unknown completion date sorts last;
/// ties go in listing order.
pub fn download_order(completed: Option<i64>, index: usize) -> (i64, usize) {
    (completed.unwrap_or(i64::MAX), index)
}

/// How long jobs of a tier usually take: the upper end of the range Glacier documents (1-5
/// minutes for Expedited, 3-5 hours for Standard, 5-12 hours for Bulk).
pub fn typical_wait(tier: &str) -> Duration {
    match tier.to_ascii_lowercase().as_str() {
        "expedited" => Duration::from_secs(5 * 60),
        "bulk" => Duration::from_secs(12 * 3600),
        _ => Duration::from_secs(5 * 3600),
    }
}

/// The likely time left for a job of `tier` started at `created`: never negative.
pub fn likely_left(tier: &str, created: SystemTime, now: SystemTime) -> Duration {
    let ran = now.duration_since(created).unwrap_or_default();
    typical_wait(tier).saturating_sub(ran)
}

/// Backoff before retrying a download after its `attempt`-th transient failure.
pub fn retry_delay(attempt: u32) -> Duration {
    Duration::from_secs(1u64 << attempt.min(6))
}

/// The length of the policy's hour. `GLACIERFS_EXPORT_HOUR_MS` shortens it, for tests whose
/// emulated Glacier moves its clock an hour at a time.
pub const HOUR_ENV: &str = "GLACIERFS_EXPORT_HOUR_MS";

pub fn policy_hour(env: Option<&str>) -> Duration {
    env.and_then(|v| v.trim().parse::<u64>().ok())
        .filter(|ms| *ms > 0)
        .map(Duration::from_millis)
        .unwrap_or(Duration::from_secs(3600))
}

/// The bytes of retrievals started in the trailing hour, under a `BytesPerHour` rate.
#[derive(Debug, Clone)]
pub struct HourWindow {
    rate: u64,
    hour: Duration,
    starts: VecDeque<(Instant, u64)>,
}

impl HourWindow {
    pub fn new(rate: u64, hour: Duration) -> HourWindow {
        HourWindow {
            rate,
            hour,
            starts: VecDeque::new(),
        }
    }

    /// Bytes started within the hour before `now`.
    pub fn used(&mut self, now: Instant) -> u64 {
        while let Some((at, _)) = self.starts.front() {
            if now.saturating_duration_since(*at) >= self.hour {
                self.starts.pop_front();
            } else {
                break;
            }
        }
        self.starts.iter().map(|(_, n)| n).sum()
    }

    /// Whether a retrieval of `size` may start at `now` without going over the rate. One
    /// larger than the whole rate starts only into an empty hour (Glacier refuses it then,
    /// and its file fails: no pace could let it through).
    pub fn admits(&mut self, size: u64, now: Instant) -> bool {
        let used = self.used(now);
        used == 0 || used.saturating_add(size) <= self.rate
    }

    pub fn take(&mut self, size: u64, now: Instant) {
        self.starts.push_back((now, size));
    }
}

/// How long retrieving `bytes` takes at `rate` bytes an hour, at the least.
pub fn time_under_rate(bytes: u64, rate: u64) -> Duration {
    let rate = rate.max(1);
    Duration::from_secs(bytes.saturating_mul(3600).div_ceil(rate))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_budget_bounds_what_starts_and_lets_a_giant_start_alone() {
        let mut b = Budget::new(4 << 20);
        assert!(b.admits(5 << 20), "alone, anything starts");
        b.take(3 << 20);
        assert!(b.admits(1 << 20));
        assert!(!b.admits((1 << 20) + 1));
        b.take(1 << 20);
        assert!(!b.admits(1));
        b.release(4 << 20);
        assert_eq!(b.used(), 0);
        b.take(10 << 20); // a job found running
        assert!(!b.admits(1));
        b.release(100 << 20);
        assert_eq!(b.used(), 0);
    }

    #[test]
    fn outputs_nearest_their_expiry_go_first() {
        let mut keys = [
            download_order(Some(500), 0),
            download_order(None, 1),
            download_order(Some(100), 2),
            download_order(Some(100), 3),
            download_order(None, 4),
        ];
        keys.sort();
        let order: Vec<usize> = keys.iter().map(|k| k.1).collect();
        assert_eq!(order, vec![2, 3, 0, 1, 4]);
    }

    #[test]
    fn settings_and_estimates() {
        let mount = Some(Duration::from_secs(2));
        assert_eq!(poll_interval(None, None), DEFAULT_POLL);
        assert_eq!(poll_interval(None, mount), Duration::from_secs(2));
        assert_eq!(
            poll_interval(Some("250"), mount),
            Duration::from_millis(250)
        );
        assert_eq!(poll_interval(Some("0"), None), DEFAULT_POLL);
        assert_eq!(poll_interval(Some("soon"), mount), Duration::from_secs(2));
        assert_eq!(default_max_in_flight(0), 1);
        assert_eq!(default_max_in_flight(GIB), GIB);
        assert_eq!(default_max_in_flight(u64::MAX), DEFAULT_CAP);
        let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        assert_eq!(
            likely_left("Bulk", t0, t0 + Duration::from_secs(3600)),
            Duration::from_secs(11 * 3600)
        );
        assert_eq!(
            likely_left("Expedited", t0, t0 + Duration::from_secs(3600)),
            Duration::ZERO
        );
        assert_eq!(
            likely_left("Standard", t0 + Duration::from_secs(9), t0),
            typical_wait("x")
        );
        assert_eq!(retry_delay(0), Duration::from_secs(1));
        assert_eq!(retry_delay(30), Duration::from_secs(64));
    }

    #[test]
    fn the_hour_window_admits_what_the_rate_leaves_room_for() {
        let t0 = Instant::now();
        let hour = Duration::from_secs(3600);
        let mut w = HourWindow::new(2500, hour);
        assert!(w.admits(1000, t0));
        w.take(1000, t0);
        assert!(w.admits(1000, t0));
        w.take(1000, t0 + Duration::from_secs(600));
        assert!(!w.admits(1000, t0 + Duration::from_secs(601)));
        assert!(w.admits(500, t0 + Duration::from_secs(601)));
        // An hour after the first start, only the second counts.
        assert_eq!(w.used(t0 + hour), 1000);
        assert!(w.admits(1000, t0 + hour));
        assert!(!w.admits(1501, t0 + hour));
        // Larger than the rate: only into an empty hour.
        assert!(!w.admits(5000, t0 + hour));
        assert!(w.admits(5000, t0 + hour * 2));
        assert_eq!(policy_hour(Some("250")), Duration::from_millis(250));
        assert_eq!(policy_hour(Some("x")), hour);
        assert_eq!(time_under_rate(5000, 2500), Duration::from_secs(7200));
        assert_eq!(time_under_rate(1, 3600), Duration::from_secs(1));
    }
}
