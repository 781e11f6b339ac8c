//! What to ask for and what came back: the download's plan of tree-aligned chunks, what a
//! response to a ranged request holds (the range, or the whole output from an endpoint that
//! ignores `Range`), and why one fetch failed.

use std::collections::VecDeque;
use std::fmt;
use std::io;

use super::{DownloadError, Shared, ATTEMPTS};
use crate::codec::treehash::{is_tree_aligned, to_hex, Digest, MIB};
use crate::glacier::{ErrorKind, GlacierError, JobOutput};

/// The largest power-of-two MiB not above `n`, and at least 1 MiB.
pub(super) fn pow2_mib_at_most(n: u64) -> u64 {
    match n / MIB {
        0 => MIB,
        m => MIB << m.ilog2(),
    }
}

/// A byte range of the output, `[start, end)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Chunk {
    pub(super) start: u64,
    pub(super) end: u64,
}

impl Chunk {
    pub(super) fn len(self) -> u64 {
        self.end - self.start
    }
}

impl fmt::Display for Chunk {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "bytes {}-{}", self.start, self.end.saturating_sub(1))
    }
}

/// `[from, size)` in tree-aligned chunks of at most `chunk` bytes (a power-of-two MiB). `from`
/// is a MiB multiple; when it is not a multiple of `chunk` (a journal written with another
/// chunk size), the first chunks are the largest nodes that start there, until the steps line
/// up again.
pub(super) fn plan(from: u64, size: u64, chunk: u64) -> VecDeque<Chunk> {
    let mut out = VecDeque::new();
    let mut at = from;
    while at < size {
        let step = match at {
            0 => chunk,
            _ => chunk.min(1 << at.trailing_zeros()),
        };
        let end = size.min(at.saturating_add(step));
        debug_assert!(is_tree_aligned(at, end, size), "{at}..{end} of {size}");
        out.push_back(Chunk { start: at, end });
        at = end;
    }
    out
}

/// Why one fetch failed, in a way fetching again may cure.
pub(super) enum Bad {
    /// The body broke off (reset, timeout, or a connection closed before Content-Length).
    Cut(io::Error),
    /// The body ended early: `got` of the chunk's bytes.
    Short { got: u64 },
    /// The body is longer than the range asked for.
    Long,
    /// The chunk's bytes do not hash to the header.
    Hash { ours: Digest, theirs: String },
    /// The response is not for the range asked for.
    Range(String),
}

impl fmt::Display for Bad {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Bad::Cut(e) => write!(f, "the body broke off: {e}"),
            Bad::Short { got } => write!(f, "the body ended after {got} bytes"),
            Bad::Long => write!(f, "the body is longer than the range"),
            Bad::Hash { ours, theirs } => write!(
                f,
                "the data hashes to {}, Glacier's tree hash is {theirs}",
                to_hex(ours)
            ),
            Bad::Range(why) => f.write_str(why),
        }
    }
}

/// How a step failed: worth another fetch, or not.
pub(super) enum Fail {
    Retry(Bad),
    Stop(DownloadError),
}

impl From<Bad> for Fail {
    fn from(bad: Bad) -> Self {
        Fail::Retry(bad)
    }
}

impl From<DownloadError> for Fail {
    fn from(e: DownloadError) -> Self {
        Fail::Stop(e)
    }
}

/// The error after the last of [`ATTEMPTS`] fetches of `chunk`: a body that kept breaking off is
/// the network's fault (try later); anything else is data that cannot be trusted.
pub(super) fn give_up(sh: &Shared, chunk: Chunk, bad: Bad) -> DownloadError {
    let what = format!("job {}, {chunk}: {bad} ({ATTEMPTS} attempts)", sh.job_id);
    match bad {
        Bad::Cut(_) => GlacierError::new("GetJobOutput", ErrorKind::Transient, what).into(),
        _ => DownloadError::Corrupt { what },
    }
}

/// What a response to a ranged request carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Holds {
    /// The range asked for.
    Chunk,
    /// The whole output: the endpoint ignored the range.
    Whole,
}

/// Reads the status and headers of a response to a request for `chunk`.
pub(super) fn holds(out: &JobOutput, chunk: Chunk, size: u64) -> Result<Holds, Fail> {
    if chunk.start == 0 && chunk.end == size {
        return Ok(Holds::Chunk);
    }
    let Some(raw) = out.content_range.as_deref() else {
        // 200 without Content-Range: the whole output, unless its length says otherwise.
        return Ok(match (out.status, out.content_length) {
            (206, _) => Holds::Chunk,
            (_, Some(n)) if n == chunk.len() => Holds::Chunk,
            _ => Holds::Whole,
        });
    };
    let Some((first, last, total)) = parse_content_range(raw) else {
        return Err(Bad::Range(format!("unreadable Content-Range {raw:?}")).into());
    };
    if total.is_some_and(|t| t != size) {
        // Not a retrieval of this archive: fetching again cannot help.
        return Err(Fail::Stop(DownloadError::Corrupt {
            what: format!("the job's output is {raw}, the archive has {size} bytes"),
        }));
    }
    if (first, last) == (chunk.start, chunk.end - 1) {
        Ok(Holds::Chunk)
    } else if (first, last) == (0, size - 1) {
        Ok(Holds::Whole)
    } else {
        Err(Bad::Range(format!("asked for {chunk}, got Content-Range {raw:?}")).into())
    }
}

/// `bytes S-E/T` (T may be `*`).
fn parse_content_range(raw: &str) -> Option<(u64, u64, Option<u64>)> {
    let spec = raw.trim().strip_prefix("bytes")?.trim_start();
    let (range, total) = spec.split_once('/')?;
    let (first, last) = crate::glacier::parse_range(range)?;
    let total = match total.trim() {
        "*" => None,
        t => Some(t.parse().ok()?),
    };
    Some((first, last, total))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::glacier::JobOutput;

    fn chunks(from: u64, size: u64, chunk: u64) -> Vec<(u64, u64)> {
        plan(from, size, chunk)
            .into_iter()
            .map(|c| (c.start, c.end))
            .collect()
    }

    #[test]
    fn plans_are_tree_aligned_from_any_mib_start() {
        let size = 9 * MIB + 1;
        assert_eq!(
            chunks(0, size, 4 * MIB),
            vec![(0, 4 * MIB), (4 * MIB, 8 * MIB), (8 * MIB, size)]
        );
        // Resumed at 3 MiB with 4 MiB chunks: 1 MiB to reach 4, then full steps.
        assert_eq!(
            chunks(3 * MIB, size, 4 * MIB),
            vec![(3 * MIB, 4 * MIB), (4 * MIB, 8 * MIB), (8 * MIB, size)]
        );
        assert_eq!(
            chunks(2 * MIB, size, 8 * MIB),
            vec![(2 * MIB, 4 * MIB), (4 * MIB, 8 * MIB), (8 * MIB, size)]
        );
        assert_eq!(chunks(size, size, MIB), vec![]);
        assert_eq!(chunks(0, 1, 16 * MIB), vec![(0, 1)]);
        for from in 0..=9 {
            for c in chunks(from * MIB, size, 4 * MIB) {
                assert!(is_tree_aligned(c.0, c.1, size), "{c:?}");
            }
        }
    }

    #[test]
    fn chunk_sizes_round_down_to_a_power_of_two_mib() {
        assert_eq!(pow2_mib_at_most(0), MIB);
        assert_eq!(pow2_mib_at_most(3 * MIB), 2 * MIB);
        assert_eq!(pow2_mib_at_most(16 * MIB), 16 * MIB);
    }

    #[test]
    fn content_ranges_parse() {
        assert_eq!(
            parse_content_range("bytes 0-1048575/8388608"),
            Some((0, 1_048_575, Some(8_388_608)))
        );
        assert_eq!(parse_content_range("bytes 5-9/*"), Some((5, 9, None)));
        assert_eq!(parse_content_range("bytes 9-5/10"), None);
        assert_eq!(parse_content_range("5-9/10"), None);
    }

    fn output(status: u16, content_range: Option<&str>, content_length: Option<u64>) -> JobOutput {
        JobOutput {
            status,
            tree_hash: None,
            content_range: content_range.map(str::to_owned),
            content_length,
            body: Box::pin(tokio::io::empty()),
        }
    }

    #[test]
    fn responses_that_ignore_range_are_told_apart() {
        let size = 3 * MIB;
        let c = Chunk {
            start: MIB,
            end: 2 * MIB,
        };
        let is = |out: JobOutput, want: Holds| {
            assert!(
                matches!(holds(&out, c, size), Ok(h) if h == want),
                "{out:?}"
            );
        };
        is(
            output(206, Some("bytes 1048576-2097151/3145728"), None),
            Holds::Chunk,
        );
        is(output(200, None, None), Holds::Whole); // moto
        is(output(200, None, Some(size)), Holds::Whole);
        is(output(200, None, Some(MIB)), Holds::Chunk);
        is(
            output(206, Some("bytes 0-3145727/3145728"), None),
            Holds::Whole,
        );
        let wrong = output(206, Some("bytes 0-1048575/3145728"), None);
        assert!(matches!(
            holds(&wrong, c, size),
            Err(Fail::Retry(Bad::Range(_)))
        ));
        let other = output(206, Some("bytes 1048576-2097151/9"), None);
        assert!(matches!(holds(&other, c, size), Err(Fail::Stop(_))));
        // A request for everything is answered with everything, whatever the status.
        let all = Chunk {
            start: 0,
            end: size,
        };
        assert!(matches!(
            holds(&output(200, None, None), all, size),
            Ok(Holds::Chunk)
        ));
    }
}
