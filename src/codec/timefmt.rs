//! Conversions between Unix time and the date strings that Glacier and the description formats
//! use: the compact `YYYYMMDDTHHMMSSZ` of mt-aws-glacier and FastGlacier, and Glacier's own
//! ISO-8601 (`2012-03-20T17:03:43.221Z`).
//!
//! The project has no date crate, so the calendar arithmetic lives here, using Howard Hinnant's
//! days-from-civil / civil-from-days algorithms (proleptic Gregorian calendar, UTC only).
//! Every string this module writes has a four-digit year, so times are clamped to
//! [`MIN_SECS`]..=[`MAX_SECS`] (years 0000 to 9999) when formatted: a file's mtime can be any
//! `i64`, but a description must always stay parseable.

/// 0000-01-01T00:00:00Z, the earliest time with a four-digit year.
pub const MIN_SECS: i64 = -62_167_219_200;
/// 9999-12-31T23:59:59Z, the latest time with a four-digit year.
pub const MAX_SECS: i64 = 253_402_300_799;

const SECS_PER_DAY: i64 = 86_400;

/// A UTC calendar date and time of day, fields not yet checked when parsed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Civil {
    year: i64,
    month: u32,
    day: u32,
    hour: u32,
    minute: u32,
    second: u32,
}

impl Civil {
    /// Splits a Unix time, after clamping it into the four-digit-year range.
    fn from_unix(secs: i64) -> Self {
        let secs = secs.clamp(MIN_SECS, MAX_SECS);
        let days = secs.div_euclid(SECS_PER_DAY);
        let time = secs.rem_euclid(SECS_PER_DAY);
        let (year, month, day) = civil_from_days(days);
        // `time` is in 0..86_400, so each part fits a u32.
        Civil {
            year,
            month,
            day,
            hour: (time / 3600) as u32,
            minute: (time / 60 % 60) as u32,
            second: (time % 60) as u32,
        }
    }

    /// The Unix time, or None when a field is out of range (month 13, 30 February, second 60...).
    /// Leap seconds are refused: neither Glacier nor the tools whose dates we read write them.
    fn to_unix(self) -> Option<i64> {
        let valid = (0..=9999).contains(&self.year)
            && (1..=12).contains(&self.month)
            && (1..=days_in_month(self.year, self.month)).contains(&self.day)
            && self.hour < 24
            && self.minute < 60
            && self.second < 60;
        if !valid {
            return None;
        }
        let days = days_from_civil(self.year, self.month, self.day);
        let time =
            i64::from(self.hour) * 3600 + i64::from(self.minute) * 60 + i64::from(self.second);
        Some(days * SECS_PER_DAY + time)
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Hinnant's `days_from_civil`).
fn days_from_civil(year: i64, month: u32, day: u32) -> i64 {
    // Count years from March, so that the leap day is the last day of the year.
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let year_of_era = year.rem_euclid(400);
    let month = i64::from(month);
    let month_from_march = if month > 2 { month - 3 } else { month + 9 };
    let day_of_year = (153 * month_from_march + 2) / 5 + i64::from(day) - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * 146_097 + day_of_era - 719_468
}

/// The (year, month, day) of a count of days since 1970-01-01 (Hinnant's `civil_from_days`).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let days = days + 719_468;
    let era = days.div_euclid(146_097);
    let day_of_era = days.rem_euclid(146_097);
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let month_from_march = (5 * day_of_year + 2) / 153;
    // Both are small and positive by construction: day 1..=31, month 1..=12.
    let day = (day_of_year - (153 * month_from_march + 2) / 5 + 1) as u32;
    let month = if month_from_march < 10 {
        month_from_march + 3
    } else {
        month_from_march - 9
    } as u32;
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

fn is_leap(year: i64) -> bool {
    year % 4 == 0 && (year % 100 != 0 || year % 400 == 0)
}

fn days_in_month(year: i64, month: u32) -> u32 {
    match month {
        2 if is_leap(year) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// The value of a run of ASCII digits; None if empty, not all digits, or too large.
fn number(digits: &[u8]) -> Option<u32> {
    if digits.is_empty() {
        return None;
    }
    digits.iter().try_fold(0u32, |acc, &b| {
        let digit = char::from(b).to_digit(10)?;
        acc.checked_mul(10)?.checked_add(digit)
    })
}

/// The digits in `bytes[start..end]`, refusing anything shorter than asked for.
fn field(bytes: &[u8], start: usize, end: usize) -> Option<u32> {
    number(bytes.get(start..end)?)
}

/// True when `bytes[at]` is `expected`.
fn byte_is(bytes: &[u8], at: usize, expected: u8) -> bool {
    bytes.get(at) == Some(&expected)
}

/// `YYYYMMDDTHHMMSSZ` (UTC), the mtime format of mt-aws-glacier and FastGlacier.
pub fn format_compact(secs: i64) -> String {
    let c = Civil::from_unix(secs);
    format!(
        "{:04}{:02}{:02}T{:02}{:02}{:02}Z",
        c.year, c.month, c.day, c.hour, c.minute, c.second
    )
}

/// Parses exactly `YYYYMMDDTHHMMSSZ`: sixteen characters, digits where digits belong, and a
/// real date and time.
pub fn parse_compact(s: &str) -> Option<i64> {
    let b = s.as_bytes();
    if b.len() != 16 || !byte_is(b, 8, b'T') || !byte_is(b, 15, b'Z') {
        return None;
    }
    Civil {
        year: i64::from(field(b, 0, 4)?),
        month: field(b, 4, 6)?,
        day: field(b, 6, 8)?,
        hour: field(b, 9, 11)?,
        minute: field(b, 11, 13)?,
        second: field(b, 13, 15)?,
    }
    .to_unix()
}

/// The time of day of a Unix time, `HH:MM:SS` (UTC): when something will happen next, in a
/// line that already says the day.
pub fn format_clock(secs: i64) -> String {
    let c = Civil::from_unix(secs);
    format!("{:02}:{:02}:{:02}", c.hour, c.minute, c.second)
}

/// A span as people say it, to the two largest units: `45s`, `2m`, `2m30s`, `1h5m`, `3d2h`.
pub fn format_span(span: std::time::Duration) -> String {
    let s = span.as_secs();
    let (big, small) = match s {
        0..=59 => return format!("{s}s"),
        60..=3599 => ((s / 60, "m"), (s % 60, "s")),
        3600..=86_399 => ((s / 3600, "h"), (s % 3600 / 60, "m")),
        _ => ((s / 86_400, "d"), (s % 86_400 / 3600, "h")),
    };
    match small.0 {
        0 => format!("{}{}", big.0, big.1),
        n => format!("{}{}{n}{}", big.0, big.1, small.1),
    }
}

/// Glacier's ISO-8601 with millisecond precision: `2012-03-20T17:03:43.221Z`.
/// Nanoseconds past a second are clamped to 999 ms rather than carried.
pub fn format_iso8601(secs: i64, nanos: u32) -> String {
    let c = Civil::from_unix(secs);
    let millis = nanos.min(999_999_999) / 1_000_000;
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}Z",
        c.year, c.month, c.day, c.hour, c.minute, c.second, millis
    )
}

/// Parses `YYYY-MM-DDTHH:MM:SS[.f]{Z|±HH:MM}` into (Unix seconds, nanoseconds), with 1 to 9
/// fractional digits (Glacier prints 3, .NET tools 7). None on anything else.
///
/// With an offset the result is converted to UTC, so a date near year 0 or 9999 may land just
/// outside [`MIN_SECS`]..=[`MAX_SECS`].
/// Unix seconds of a Glacier date, if there is one and it parses.
pub fn iso_secs(s: Option<&str>) -> Option<i64> {
    s.and_then(parse_iso8601).map(|(secs, _)| secs)
}

pub fn parse_iso8601(s: &str) -> Option<(i64, u32)> {
    let b = s.as_bytes();
    let local = parse_iso_civil(b.get(..19)?)?.to_unix()?;
    let (nanos, zone) = split_fraction(b.get(19..)?)?;
    let offset = parse_offset(zone)?;
    Some((local - offset, nanos))
}

/// `YYYY-MM-DDTHH:MM:SS`, fields unchecked.
fn parse_iso_civil(b: &[u8]) -> Option<Civil> {
    let separators = [(4, b'-'), (7, b'-'), (10, b'T'), (13, b':'), (16, b':')];
    if b.len() != 19 || !separators.iter().all(|&(at, sep)| byte_is(b, at, sep)) {
        return None;
    }
    Some(Civil {
        year: i64::from(field(b, 0, 4)?),
        month: field(b, 5, 7)?,
        day: field(b, 8, 10)?,
        hour: field(b, 11, 13)?,
        minute: field(b, 14, 16)?,
        second: field(b, 17, 19)?,
    })
}

/// Splits an optional `.digits` fraction off the front; returns (nanoseconds, the rest).
fn split_fraction(b: &[u8]) -> Option<(u32, &[u8])> {
    let Some(after_dot) = b.strip_prefix(b".") else {
        return Some((0, b));
    };
    let len = after_dot.iter().take_while(|c| c.is_ascii_digit()).count();
    if !(1..=9).contains(&len) {
        return None;
    }
    let (digits, rest) = after_dot.split_at(len);
    // At most nine digits, so this stays below 10^9 and `len` below 10.
    let nanos = number(digits)? * 10u32.pow(9 - len as u32);
    Some((nanos, rest))
}

/// `Z` or `±HH:MM`, as seconds east of UTC.
fn parse_offset(b: &[u8]) -> Option<i64> {
    if b == b"Z" {
        return Some(0);
    }
    let sign = match b.first()? {
        b'+' => 1,
        b'-' => -1,
        _ => return None,
    };
    if b.len() != 6 || !byte_is(b, 3, b':') {
        return None;
    }
    let hours = field(b, 1, 3)?;
    let minutes = field(b, 4, 6)?;
    if hours > 23 || minutes > 59 {
        return None;
    }
    Some(sign * (i64::from(hours) * 3600 + i64::from(minutes) * 60))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spans_and_clock_times_read_as_people_say_them() {
        use std::time::Duration;
        let span = |s| format_span(Duration::from_secs(s));
        assert_eq!(span(0), "0s");
        assert_eq!(span(45), "45s");
        assert_eq!(span(120), "2m");
        assert_eq!(span(150), "2m30s");
        assert_eq!(span(3900), "1h5m");
        assert_eq!(span(7200), "2h");
        assert_eq!(span(86_400 * 3 + 7200 + 5), "3d2h");
        assert_eq!(format_clock(1_332_263_023), "17:03:43");
    }
    use proptest::prelude::*;

    #[test]
    fn range_constants_match_the_calendar() {
        assert_eq!(parse_compact("00000101T000000Z"), Some(MIN_SECS));
        assert_eq!(parse_compact("99991231T235959Z"), Some(MAX_SECS));
        assert_eq!(days_from_civil(1970, 1, 1), 0);
        assert_eq!(civil_from_days(0), (1970, 1, 1));
    }

    #[test]
    fn compact_known_values() {
        assert_eq!(format_compact(0), "19700101T000000Z");
        assert_eq!(format_compact(123), "19700101T000203Z");
        assert_eq!(format_compact(1_352_924_178), "20121114T201618Z");
        assert_eq!(format_compact(-1), "19691231T235959Z");
        assert_eq!(format_compact(951_782_400), "20000229T000000Z");
        assert_eq!(format_compact(-2_208_988_800), "19000101T000000Z");
        assert_eq!(parse_compact("20121114T201618Z"), Some(1_352_924_178));
        assert_eq!(parse_compact("19691231T235959Z"), Some(-1));
    }

    #[test]
    fn compact_clamps_out_of_range_years() {
        assert_eq!(format_compact(i64::MAX), "99991231T235959Z");
        assert_eq!(format_compact(i64::MIN), "00000101T000000Z");
        assert_eq!(format_compact(MAX_SECS + 1), "99991231T235959Z");
    }

    #[test]
    fn compact_rejects_malformed() {
        for bad in [
            "",
            "20121114T201618",
            "20121114T201618Z ",
            " 20121114T201618Z",
            "20121114t201618Z",
            "2012111XT201618Z",
            "+0121114T201618Z",
            "20121314T201618Z",
            "20120230T000000Z",
            "20130229T000000Z",
            "19000229T000000Z",
            "20121100T000000Z",
            "20121114T241618Z",
            "20121114T206018Z",
            "20121114T201660Z",
            "20121114T2016١٨Z",
            "2012-11-14T20:16:18Z",
        ] {
            assert_eq!(parse_compact(bad), None, "{bad:?}");
        }
        assert!(parse_compact("20000229T000000Z").is_some());
        assert!(parse_compact("20240229T000000Z").is_some());
    }

    #[test]
    fn iso_known_values() {
        assert_eq!(
            parse_iso8601("2012-03-20T17:03:43.221Z"),
            Some((1_332_263_023, 221_000_000))
        );
        assert_eq!(
            parse_iso8601("2012-03-20T17:03:43Z"),
            Some((1_332_263_023, 0))
        );
        assert_eq!(
            parse_iso8601("2012-03-20T17:03:43.5Z"),
            Some((1_332_263_023, 500_000_000))
        );
        assert_eq!(
            parse_iso8601("2012-03-20T17:03:43.123456789Z"),
            Some((1_332_263_023, 123_456_789))
        );
        assert_eq!(
            parse_iso8601("2012-03-20T17:03:43.1234567Z"),
            Some((1_332_263_023, 123_456_700))
        );
        assert_eq!(
            parse_iso8601("2012-03-20T17:03:43+00:00"),
            Some((1_332_263_023, 0))
        );
        // 12:03 at UTC-5 is 17:03 UTC.
        assert_eq!(
            parse_iso8601("2012-03-20T12:03:43-05:00"),
            Some((1_332_263_023, 0))
        );
        assert_eq!(
            parse_iso8601("2012-03-20T22:33:43.221+05:30"),
            Some((1_332_263_023, 221_000_000))
        );
        assert_eq!(parse_iso8601("1969-12-31T23:59:59Z"), Some((-1, 0)));
        assert_eq!(
            format_iso8601(1_332_263_023, 221_000_000),
            "2012-03-20T17:03:43.221Z"
        );
        assert_eq!(
            format_iso8601(1_332_263_023, 221_999_999),
            "2012-03-20T17:03:43.221Z"
        );
        assert_eq!(format_iso8601(-1, 0), "1969-12-31T23:59:59.000Z");
        assert_eq!(format_iso8601(0, u32::MAX), "1970-01-01T00:00:00.999Z");
    }

    #[test]
    fn iso_rejects_malformed() {
        for bad in [
            "",
            "2012-03-20",
            "2012-03-20T17:03:43",
            "2012-03-20T17:03:43.Z",
            "2012-03-20T17:03:43.1234567890Z",
            "2012-03-20T17:03:43.221",
            "2012-03-20T17:03:43.22aZ",
            "2012-03-20 17:03:43Z",
            "2012-03-20T17:03:43ZZ",
            "2012-03-20T17:03:43+0000",
            "2012-03-20T17:03:43+24:00",
            "2012-03-20T17:03:43+05:60",
            "2012-03-20T17:03:43+5:30",
            "2012-03-20T17:03:43-05:30x",
            "2012-02-30T17:03:43Z",
            "2012-03-20T17:03:60Z",
            "2012/03/20T17:03:43Z",
            "+012-03-20T17:03:43Z",
            "2012-03-20T17:03:43.2€Z",
            "2012-03-2é17:03:43Z",
        ] {
            assert_eq!(parse_iso8601(bad), None, "{bad:?}");
        }
    }

    proptest! {
        #[test]
        fn compact_round_trips(secs in MIN_SECS..=MAX_SECS) {
            let s = format_compact(secs);
            prop_assert_eq!(s.len(), 16);
            prop_assert_eq!(parse_compact(&s), Some(secs));
        }

        #[test]
        fn iso_round_trips_to_the_millisecond(secs in MIN_SECS..=MAX_SECS, nanos in 0u32..1_000_000_000) {
            let s = format_iso8601(secs, nanos);
            prop_assert_eq!(parse_iso8601(&s), Some((secs, nanos / 1_000_000 * 1_000_000)));
        }

        #[test]
        fn civil_days_round_trip(days in -800_000i64..3_000_000) {
            let (y, m, d) = civil_from_days(days);
            prop_assert!((1..=12).contains(&m) && d >= 1 && d <= days_in_month(y, m));
            prop_assert_eq!(days_from_civil(y, m, d), days);
        }

        #[test]
        fn parsers_never_panic(s in "\\PC{0,40}", t in "[0-9TZ:.+-]{0,40}") {
            let _ = parse_compact(&s);
            let _ = parse_iso8601(&s);
            let _ = parse_compact(&t);
            let _ = parse_iso8601(&t);
        }
    }
}
