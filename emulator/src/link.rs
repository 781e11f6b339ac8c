//! The link model: what the network between a client and a real Glacier or S3 endpoint adds,
//! so that a benchmark on one machine sees what concurrency buys. A real endpoint is 20–100 ms
//! away and gives each connection a bounded rate; an emulator on loopback has neither, and
//! every figure taken against it says nothing about how many requests to keep in flight.
//!
//! Two knobs, both off by default: a latency added to every request before it is handled (one
//! round trip), and a bandwidth cap per connection, applied to request bodies as they are read
//! and to response bodies as they are written. Each connection is paced on its own, as a real
//! endpoint paces each TCP stream, so N connections carry N times the rate of one.

use std::thread;
use std::time::{Duration, Instant};

/// The network between the client and the endpoint.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Link {
    /// Added to every request before it is handled: the round trip to a distant endpoint.
    pub latency: Duration,
    /// Bytes per second one connection carries in each direction; None is unbounded.
    pub bandwidth: Option<u64>,
}

impl Link {
    /// Holds the calling connection's thread for one round trip.
    pub(crate) fn delay(&self) {
        if !self.latency.is_zero() {
            thread::sleep(self.latency);
        }
    }

    /// A pacer for one body moving over one connection.
    pub(crate) fn pacer(&self) -> Pacer {
        Pacer {
            start: Instant::now(),
            moved: 0,
            rate: self.bandwidth.filter(|r| *r > 0),
        }
    }

    /// How many bytes to move between two looks at the clock: small enough that the pace is
    /// smooth at the rate set (about 10 ms of data), large enough to cost nothing unbounded.
    pub(crate) fn step(&self) -> usize {
        match self.bandwidth.filter(|r| *r > 0) {
            Some(rate) => (rate / 100).clamp(4 << 10, 1 << 20) as usize,
            None => 1 << 20,
        }
    }
}

/// Paces one body: after each step, sleeps until the bytes moved so far are due at the rate.
pub(crate) struct Pacer {
    start: Instant,
    moved: u64,
    rate: Option<u64>,
}

impl Pacer {
    /// Counts `n` more bytes moved and waits until the link would have carried them all.
    pub(crate) fn moved(&mut self, n: usize) {
        self.moved += n as u64;
        let Some(rate) = self.rate else {
            return;
        };
        let due = self.start + Duration::from_secs_f64(self.moved as f64 / rate as f64);
        let now = Instant::now();
        if due > now {
            thread::sleep(due - now);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bounded_link_takes_at_least_its_time() {
        let link = Link {
            latency: Duration::ZERO,
            bandwidth: Some(1_000_000),
        };
        let started = Instant::now();
        let mut pacer = link.pacer();
        for _ in 0..10 {
            pacer.moved(20_000);
        }
        // 200 kB at 1 MB/s: at least 200 ms; never asserted from above.
        assert!(started.elapsed() >= Duration::from_millis(200));
    }

    #[test]
    fn steps_follow_the_rate() {
        let unbounded = Link::default();
        assert_eq!(unbounded.step(), 1 << 20);
        let slow = Link {
            latency: Duration::ZERO,
            bandwidth: Some(20_000_000),
        };
        assert_eq!(slow.step(), 200_000);
    }
}
