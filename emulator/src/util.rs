//! Pure helpers for the emulator: the SHA-256 tree hash and its alignment rules, ISO-8601 and
//! HTTP dates, random ids, opaque pagination markers and the description rules.
//!
//! The tree hash here is written independently of glacierfs's `src/treehash.rs` on purpose: the
//! emulator is the referee for the daemon's hashing, so it must not share the code it checks.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use rand::rngs::StdRng;
use rand::Rng;
use sha2::{Digest as _, Sha256};

pub(crate) const MIB: u64 = 1 << 20;

/// A raw SHA-256 digest.
pub(crate) type Digest = [u8; 32];

pub(crate) fn sha256(data: &[u8]) -> Digest {
    Sha256::digest(data).into()
}

/// SHA-256 of each 1 MiB chunk. Kept per archive and per part so that range hashes and the
/// Complete check never need a second pass over the data.
pub(crate) fn chunk_hashes(data: &[u8]) -> Vec<Digest> {
    data.chunks(MIB as usize).map(sha256).collect()
}

/// Root of the tree over chunk hashes; an odd last node is promoted unchanged. No chunks gives
/// SHA-256 of the empty string, as the SDKs do.
pub(crate) fn tree_of(hashes: &[Digest]) -> Digest {
    if hashes.is_empty() {
        return sha256(b"");
    }
    let mut level = hashes.to_vec();
    while level.len() > 1 {
        level = level
            .chunks(2)
            .map(|pair| match pair {
                [a, b] => {
                    let mut h = Sha256::new();
                    h.update(a);
                    h.update(b);
                    h.finalize().into()
                }
                [a] => *a,
                _ => unreachable!("chunks(2) yields one or two items"),
            })
            .collect();
    }
    level[0]
}

/// Whether `[start, end_excl)` is exactly one node of the tree of an archive of `size` bytes:
/// in MiB units `[j·2^i, min((j+1)·2^i, size))`. The whole archive is the root, so it counts.
pub(crate) fn is_tree_aligned(start: u64, end_excl: u64, size: u64) -> bool {
    if start >= end_excl || end_excl > size || !start.is_multiple_of(MIB) {
        return false;
    }
    let mut span = MIB;
    while start.is_multiple_of(span) {
        if end_excl == (start + span).min(size) {
            return true;
        }
        if start + span >= size {
            return false;
        }
        span <<= 1;
    }
    false
}

/// The retrieval-range rule of InitiateJob: S on a MiB boundary, and E+1 on one or E the last
/// byte.
pub(crate) fn is_mib_aligned(start: u64, end_incl: u64, size: u64) -> bool {
    start.is_multiple_of(MIB)
        && start <= end_incl
        && end_incl < size
        && ((end_incl + 1).is_multiple_of(MIB) || end_incl + 1 == size)
}

/// Tree hash of an aligned byte range, from the archive's chunk hashes.
pub(crate) fn range_tree_hash(chunks: &[Digest], start: u64, end_excl: u64) -> Digest {
    let first = (start / MIB) as usize;
    let last = end_excl.div_ceil(MIB) as usize;
    tree_of(&chunks[first..last])
}

// ---------------------------------------------------------------------------------------------
// Dates. The emulator keeps milliseconds since the Unix epoch; Glacier speaks ISO-8601 UTC.

/// Days since 1970-01-01 of a proleptic Gregorian date (Hinnant's algorithm).
fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m as i64 + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d as i64 - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (
        if m <= 2 {
            yoe + era * 400 + 1
        } else {
            yoe + era * 400
        },
        m,
        d,
    )
}

struct Civil {
    y: i64,
    mo: u32,
    d: u32,
    h: i64,
    mi: i64,
    s: i64,
    ms: i64,
    weekday: usize,
}

fn civil(ms: i64) -> Civil {
    let days = ms.div_euclid(86_400_000);
    let rem = ms.rem_euclid(86_400_000);
    let (y, mo, d) = civil_from_days(days);
    Civil {
        y,
        mo,
        d,
        h: rem / 3_600_000,
        mi: rem / 60_000 % 60,
        s: rem / 1000 % 60,
        ms: rem % 1000,
        // 1970-01-01 was a Thursday.
        weekday: (days + 4).rem_euclid(7) as usize,
    }
}

/// `2026-01-01T00:00:00.000Z`, the form of API dates (DescribeVault, jobs, uploads).
pub(crate) fn iso_ms(ms: i64) -> String {
    let c = civil(ms);
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}Z",
        c.y, c.mo, c.d, c.h, c.mi, c.s, c.ms
    )
}

/// `2026-01-01T00:00:00Z`, the form inventories use.
pub(crate) fn iso_secs(ms: i64) -> String {
    let c = civil(ms);
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}Z",
        c.y, c.mo, c.d, c.h, c.mi, c.s
    )
}

/// RFC 7231 `Date` header value.
pub(crate) fn http_date(ms: i64) -> String {
    const DAYS: [&str; 7] = ["Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"];
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let c = civil(ms);
    format!(
        "{}, {:02} {} {:04} {:02}:{:02}:{:02} GMT",
        DAYS[c.weekday],
        c.d,
        MONTHS[c.mo as usize - 1],
        c.y,
        c.h,
        c.mi,
        c.s
    )
}

/// Parses `YYYY-MM-DDTHH:MM:SS[.fff](Z|+00:00)` to epoch milliseconds. Inventory filters are
/// documented with seconds precision; fractions are accepted and kept.
pub(crate) fn parse_iso(s: &str) -> Option<i64> {
    let b = s.as_bytes();
    if b.len() < 20 || b[4] != b'-' || b[7] != b'-' || b[10] != b'T' || b[13] != b':' {
        return None;
    }
    if b[16] != b':' {
        return None;
    }
    let num = |r: std::ops::Range<usize>| -> Option<i64> {
        let t = s.get(r)?;
        if t.bytes().all(|c| c.is_ascii_digit()) {
            t.parse().ok()
        } else {
            None
        }
    };
    let (y, mo, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (h, mi, sec) = (num(11..13)?, num(14..16)?, num(17..19)?);
    if !(1..=12).contains(&mo) || !(1..=31).contains(&d) || h > 23 || mi > 59 || sec > 60 {
        return None;
    }
    let mut rest = &s[19..];
    let mut frac_ms = 0;
    if let Some(f) = rest.strip_prefix('.') {
        let digits = f.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return None;
        }
        let padded = format!("{:0<3}", &f[..digits.min(3)]);
        frac_ms = padded.parse::<i64>().ok()?;
        rest = &f[digits..];
    }
    if rest != "Z" && rest != "+00:00" {
        return None;
    }
    let days = days_from_civil(y, mo as u32, d as u32);
    Some(days * 86_400_000 + h * 3_600_000 + mi * 60_000 + sec * 1000 + frac_ms)
}

// ---------------------------------------------------------------------------------------------
// Ids and markers.

const ID_ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

/// A random id over `[A-Za-z0-9_-]`, the alphabet of every id in Glacier's examples.
pub(crate) fn random_id(rng: &mut StdRng, len: usize) -> String {
    (0..len)
        .map(|_| ID_ALPHABET[rng.random_range(0..ID_ALPHABET.len())] as char)
        .collect()
}

/// Markers are opaque to clients; inside they name a position (`kind:a:b`) rather than an item,
/// so a page boundary survives the item it pointed at disappearing.
pub(crate) fn encode_marker(kind: &str, parts: &[i64]) -> String {
    let mut s = kind.to_string();
    for p in parts {
        s.push(':');
        s.push_str(&p.to_string());
    }
    URL_SAFE_NO_PAD.encode(s)
}

pub(crate) fn decode_marker(kind: &str, marker: &str) -> Option<Vec<i64>> {
    let raw = URL_SAFE_NO_PAD.decode(marker).ok()?;
    let text = String::from_utf8(raw).ok()?;
    let mut it = text.split(':');
    if it.next()? != kind {
        return None;
    }
    it.map(|p| p.parse().ok()).collect()
}

// ---------------------------------------------------------------------------------------------
// Text rules.

/// Percent-decodes one path segment or query component. Invalid escapes and non-UTF-8 results
/// are refused rather than guessed at.
pub(crate) fn percent_decode(s: &str) -> Option<String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = s.get(i + 1..i + 3)?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// Checks an archive or job description: at most 1,024 bytes of printable ASCII (0x20–0x7E).
/// Leading spaces are dropped first, as Glacier documents for multipart uploads (and as any HTTP
/// header parser does anyway).
pub(crate) fn check_description(raw: &[u8]) -> Result<String, String> {
    let start = raw.iter().position(|&c| c != b' ').unwrap_or(raw.len());
    let raw = &raw[start..];
    if raw.len() > 1024 {
        return Err(format!(
            "Invalid description: length {} exceeds 1024",
            raw.len()
        ));
    }
    if let Some(bad) = raw.iter().find(|c| !(0x20..=0x7e).contains(*c)) {
        return Err(format!(
            "Invalid description: byte 0x{bad:02x} is not printable ASCII"
        ));
    }
    Ok(String::from_utf8(raw.to_vec()).expect("printable ASCII is UTF-8"))
}

pub(crate) fn valid_vault_name(name: &str) -> bool {
    (1..=255).contains(&name.len())
        && name
            .bytes()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'_' | b'.' | b'-'))
}
