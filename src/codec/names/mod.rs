//! Archive descriptions and the file names they become.
//!
//! An archive's description is the only metadata Glacier keeps, so this module owns:
//! - the **mt2** codec that glacierfs writes (mt-aws-glacier's format, so vaults stay readable
//!   by that tool), and the decoders for what other tools wrote: mt1, FastGlacier and
//!   CloudBerry/QNAP, with anything else taken as a raw path;
//! - the **sanitiser**, the single gate every decoded path passes before it becomes names:
//!   whatever a description says, no segment can be empty, `.` or `..`, hold a `/` or a control
//!   character, or pass 255 bytes, so no name can point outside its vault;
//! - the collision suffixes, the reserved control-file names, and the checks on names that users
//!   and Glacier hand us.
//!
//! Decoders never fail loudly: a description that looks like a format but does not decode falls
//! through to the next one, and finally to Raw.

use std::fmt;

use base64::alphabet;
use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig, URL_SAFE_NO_PAD};
use base64::engine::DecodePaddingMode;
use base64::Engine as _;
use serde::Deserialize;
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

use crate::codec::timefmt;

/// Glacier's limit on a description, in characters (all ASCII, so also bytes).
pub const MAX_DESCRIPTION: usize = 1024;
/// Linux's limit on one path segment, in bytes.
pub const MAX_SEGMENT: usize = 255;
/// Names taken by control files; archives with these names get a collision suffix.
pub const RESERVED: [&str; 2] = [".jobs", ".lock"];

/// Where archives whose description names nothing end up, under their ArchiveId.
const UNDEFINED_DIR: &str = "00undefined";
const MT2_PREFIX: &str = "mt2 ";
const JSON_OPEN: &str = r#"{"filename":""#;
const JSON_MID: &str = r#"","mtime":""#;
const JSON_CLOSE: &str = r#""}"#;
/// Bytes of the hash suffix a shortened segment gets: `~` and 8 hex digits.
const HASH_SUFFIX_LEN: usize = 9;

/// Other tools pad or not, and may leave stray low bits in the last character; accept all that.
const LENIENT: GeneralPurposeConfig = GeneralPurposeConfig::new()
    .with_decode_padding_mode(DecodePaddingMode::Indifferent)
    .with_decode_allow_trailing_bits(true);
const URL_SAFE_LENIENT: GeneralPurpose = GeneralPurpose::new(&alphabet::URL_SAFE, LENIENT);
const STANDARD_LENIENT: GeneralPurpose = GeneralPurpose::new(&alphabet::STANDARD, LENIENT);

/// Why a user-given name cannot be used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NameError {
    Empty,
    /// Over [`MAX_SEGMENT`] bytes (ENAMETOOLONG).
    TooLong,
    InvalidUtf8,
    Slash,
    ControlChar,
    /// `.` or `..`.
    DotName,
}

impl fmt::Display for NameError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let message = match self {
            Self::Empty => "name is empty",
            Self::TooLong => "name is longer than 255 bytes",
            Self::InvalidUtf8 => "name is not valid UTF-8",
            Self::Slash => "name contains '/'",
            Self::ControlChar => "name contains a control character",
            Self::DotName => "name is '.' or '..'",
        };
        f.write_str(message)
    }
}

impl std::error::Error for NameError {}

/// What a description says, before sanitising.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decoded {
    pub format: Format,
    pub path: String,
    pub mtime: Option<i64>,
}

/// The tool whose description format was recognised.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Mt2,
    Mt1,
    FastGlacier,
    CloudBerry,
    Raw,
}

// ---------------------------------------------------------------------------------------------
// Writing mt2

/// How one character is written inside a JSON string, exactly as serde_json writes it (a test
/// holds it to that): `"`, `\` and characters below U+0020 are escaped; everything else,
/// non-ASCII included, stays raw. Encoding and length share this one table, so they cannot
/// disagree, and encoding cannot fail.
enum JsonChar {
    Raw(char),
    Short(char),
    Unicode(u8),
}

impl JsonChar {
    fn of(c: char) -> Self {
        match c {
            '"' | '\\' => Self::Short(c),
            '\u{8}' => Self::Short('b'),
            '\u{c}' => Self::Short('f'),
            '\n' => Self::Short('n'),
            '\r' => Self::Short('r'),
            '\t' => Self::Short('t'),
            // Below U+0020, so it fits a byte.
            c if c < ' ' => Self::Unicode(c as u8),
            c => Self::Raw(c),
        }
    }

    fn len(&self) -> usize {
        match self {
            Self::Raw(c) => c.len_utf8(),
            Self::Short(_) => 2,
            Self::Unicode(_) => 6,
        }
    }

    fn push_to(&self, out: &mut String) {
        const HEX: &[u8; 16] = b"0123456789abcdef";
        match *self {
            Self::Raw(c) => out.push(c),
            Self::Short(c) => {
                out.push('\\');
                out.push(c);
            }
            Self::Unicode(b) => {
                out.push_str("\\u00");
                out.push(char::from(HEX[usize::from(b >> 4)]));
                out.push(char::from(HEX[usize::from(b & 0xf)]));
            }
        }
    }
}

/// The mt2 description glacierfs writes for a file at `relative_path` (from the vault root,
/// `/`-separated). Check [`fits`] first: this does not enforce the 1024-character limit.
pub fn encode_mt2(relative_path: &str, mtime: i64) -> String {
    let date = timefmt::format_compact(mtime);
    let mut json = String::with_capacity(json_len(relative_path, &date));
    json.push_str(JSON_OPEN);
    relative_path
        .chars()
        .for_each(|c| JsonChar::of(c).push_to(&mut json));
    json.push_str(JSON_MID);
    json.push_str(&date);
    json.push_str(JSON_CLOSE);

    let mut description = String::with_capacity(MT2_PREFIX.len() + base64_len(json.len()));
    description.push_str(MT2_PREFIX);
    URL_SAFE_NO_PAD.encode_string(json.as_bytes(), &mut description);
    description
}

/// Length of the mt2 description for this path/mtime, without building it.
pub fn mt2_len(relative_path: &str, mtime: i64) -> usize {
    let date = timefmt::format_compact(mtime);
    MT2_PREFIX.len() + base64_len(json_len(relative_path, &date))
}

/// true when `encode_mt2` would be ≤ 1024 chars; a path that fails this gets ENAMETOOLONG.
pub fn fits(relative_path: &str, mtime: i64) -> bool {
    mt2_len(relative_path, mtime) <= MAX_DESCRIPTION
}

fn json_len(path: &str, date: &str) -> usize {
    let escaped: usize = path.chars().map(|c| JsonChar::of(c).len()).sum();
    JSON_OPEN.len() + escaped + JSON_MID.len() + date.len() + JSON_CLOSE.len()
}

/// Length of unpadded base64 for `n` bytes.
fn base64_len(n: usize) -> usize {
    n / 3 * 4 + [0, 2, 3][n % 3]
}

// ---------------------------------------------------------------------------------------------
// Reading descriptions

/// What a description says: the first of mt2, mt1, FastGlacier and CloudBerry that decodes,
/// else the whole description as a raw path. Never fails, never panics.
pub fn decode(description: &str) -> Decoded {
    decode_mt(description)
        .or_else(|| decode_fast_glacier(description))
        .or_else(|| decode_cloudberry(description))
        .unwrap_or_else(|| Decoded {
            format: Format::Raw,
            path: description.to_owned(),
            mtime: None,
        })
}

/// The JSON inside mt1 and mt2. Only the file name is required: a name without a usable
/// mtime is still better than showing the base64 as a raw path.
#[derive(Deserialize)]
struct MtJson {
    filename: String,
    #[serde(default)]
    mtime: Option<Value>,
}

/// mt2 (`mt2 ` + base64url of UTF-8 JSON) and mt1 (the same, with the JSON bytes
/// double-encoded as Latin-1 → UTF-8). mt-aws-glacier splits tag and data on any white space.
fn decode_mt(description: &str) -> Option<Decoded> {
    let (tag, data) = description
        .trim()
        .split_once(|c: char| c.is_ascii_whitespace())?;
    let format = match tag {
        "mt2" => Format::Mt2,
        "mt1" => Format::Mt1,
        _ => return None,
    };
    let bytes = URL_SAFE_LENIENT.decode(data.trim_start()).ok()?;
    let json = match format {
        Format::Mt1 => undo_latin1_double_encoding(&bytes)?,
        _ => String::from_utf8(bytes).ok()?,
    };
    let meta: MtJson = serde_json::from_str(&json).ok()?;
    Some(Decoded {
        format,
        path: meta.filename,
        mtime: meta
            .mtime
            .as_ref()
            .and_then(Value::as_str)
            .and_then(parse_date),
    })
}

/// mt1 wrote UTF-8 bytes as if they were Latin-1 characters, then encoded those as UTF-8.
/// Reverse it: every character must be ≤ U+00FF and stands for one byte.
fn undo_latin1_double_encoding(bytes: &[u8]) -> Option<String> {
    let chars = std::str::from_utf8(bytes).ok()?;
    let original: Vec<u8> = chars
        .chars()
        .map(|c| u8::try_from(c).ok())
        .collect::<Option<_>>()?;
    String::from_utf8(original).ok()
}

/// FastGlacier v2–v4, `<m><v>N</v><p>BASE64</p><lm>YYYYMMDDTHHMMSSZ</lm></m>`, and v1,
/// `<ArchiveMetadata><Path>BASE64</Path></ArchiveMetadata>`. Standard base64 of a UTF-8 path
/// that may use `\` or `;` as separators.
fn decode_fast_glacier(description: &str) -> Option<Decoded> {
    // Cheap test first: inventories hold millions of descriptions, most of them not XML.
    let start = description.trim_start_matches(|c: char| c.is_whitespace() || is_quote(c));
    if !start.starts_with('<') {
        return None;
    }
    // Quotes and white space never belong in the tags, the base64 or the date, and FastGlacier
    // versions scatter them around all three, so drop every one before parsing.
    let compact: String = description
        .chars()
        .filter(|&c| !c.is_whitespace() && !is_quote(c))
        .collect();
    let (body, path_tag) = match element_body(&compact, "m") {
        Some(body) => (body, "p"),
        None => (element_body(&compact, "ArchiveMetadata")?, "Path"),
    };
    let children = flat_elements(body)?;
    let bytes = STANDARD_LENIENT.decode(child(&children, path_tag)?).ok()?;
    // FastGlacier is a Windows tool; a stray invalid byte should cost one character, not the
    // whole name.
    let path = String::from_utf8_lossy(&bytes).replace(';', "/");
    Some(Decoded {
        format: Format::FastGlacier,
        path,
        mtime: child(&children, "lm").and_then(parse_date),
    })
}

fn is_quote(c: char) -> bool {
    c == '"' || c == '\''
}

/// The text between `<name>` and `</name>` when they open and close `s` exactly.
fn element_body<'a>(s: &'a str, name: &str) -> Option<&'a str> {
    let open = strip_prefix_ci(s.strip_prefix('<')?, name)?.strip_prefix('>')?;
    strip_suffix_ci(open.strip_suffix('>')?, name)?.strip_suffix("</")
}

/// Parses a flat run of `<name>text</name>` into (name, text) pairs; None on anything else.
fn flat_elements(mut s: &str) -> Option<Vec<(&str, &str)>> {
    let mut children = Vec::new();
    while !s.is_empty() {
        let (name, rest) = s.strip_prefix('<')?.split_once('>')?;
        let (text, rest) = rest.split_once('<')?;
        let (close, rest) = rest.strip_prefix('/')?.split_once('>')?;
        if name.is_empty() || !close.eq_ignore_ascii_case(name) {
            return None;
        }
        children.push((name, text));
        s = rest;
    }
    Some(children)
}

/// The text of the first child with this tag name, compared ASCII-case-insensitively.
fn child<'a>(children: &[(&str, &'a str)], name: &str) -> Option<&'a str> {
    children
        .iter()
        .find(|(tag, _)| tag.eq_ignore_ascii_case(name))
        .map(|&(_, text)| text)
}

fn strip_prefix_ci<'a>(s: &'a str, prefix: &str) -> Option<&'a str> {
    let head = s.get(..prefix.len())?;
    head.eq_ignore_ascii_case(prefix)
        .then(|| s.get(prefix.len()..))
        .flatten()
}

fn strip_suffix_ci<'a>(s: &'a str, suffix: &str) -> Option<&'a str> {
    let split = s.len().checked_sub(suffix.len())?;
    let tail = s.get(split..)?;
    tail.eq_ignore_ascii_case(suffix)
        .then(|| s.get(..split))
        .flatten()
}

/// CloudBerry and QNAP: a JSON object with `Path` (or `path`) and maybe `UTCDateModified`;
/// other keys are ignored.
fn decode_cloudberry(description: &str) -> Option<Decoded> {
    if !description.trim_start().starts_with('{') {
        return None;
    }
    let object: Map<String, Value> = serde_json::from_str(description).ok()?;
    let path = string_field(&object, "Path")?;
    Some(Decoded {
        format: Format::CloudBerry,
        path: path.to_owned(),
        mtime: string_field(&object, "UTCDateModified").and_then(parse_date),
    })
}

/// The first string value whose key matches ASCII-case-insensitively.
fn string_field<'a>(object: &'a Map<String, Value>, key: &str) -> Option<&'a str> {
    object
        .iter()
        .filter(|(k, _)| k.eq_ignore_ascii_case(key))
        .find_map(|(_, v)| v.as_str())
}

/// A date from a description: compact, ISO-8601, or ISO-8601 without a zone (taken as UTC,
/// which is what the fields that carry it say). None if it is none of those.
fn parse_date(s: &str) -> Option<i64> {
    let s = s.trim();
    let iso = |s: &str| timefmt::parse_iso8601(s).map(|(secs, _nanos)| secs);
    timefmt::parse_compact(s)
        .or_else(|| iso(s))
        .or_else(|| iso(&format!("{s}Z")))
}

// ---------------------------------------------------------------------------------------------
// Sanitising

/// Sanitise a decoded path into safe segments; None if nothing is left.
///
/// `\` counts as `/`. Windows prefixes (`\\server\share`, `\\?\`, `\\?\UNC\server\share`, `C:`)
/// are dropped; so are empty, `.` and `..` segments: dropping `..` rather than resolving it means
/// no path can climb. The result is stable: sanitising the joined segments gives them back.
pub fn sanitize(path: &str) -> Option<Vec<String>> {
    let unix = path.replace('\\', "/");
    let parts: Vec<&str> = unix.split('/').filter(|p| !p.is_empty()).collect();
    let after_share = parts
        .get(unc_prefix_len(path, &parts)..)
        .unwrap_or_default();
    let segments: Vec<String> = after_share
        .iter()
        .filter(|p| !matches!(**p, "." | ".."))
        // `C:` and the like only mean a drive in front. Dropping all of them in front keeps
        // sanitize idempotent (else `C:/D:/x` would lose `D:` the second time round).
        .skip_while(|p| is_drive(p))
        .map(|p| clean_segment(p))
        .collect();
    (!segments.is_empty()).then_some(segments)
}

/// How many leading parts of a `\\`-path name a server and share or a device, not directories.
fn unc_prefix_len(path: &str, parts: &[&str]) -> usize {
    if !path.starts_with(r"\\") {
        return 0;
    }
    let is_device = |p: &&str| matches!(*p, "?" | ".");
    match parts {
        [device, unc, ..] if is_device(device) && unc.eq_ignore_ascii_case("UNC") => 4,
        [device, ..] if is_device(device) => 1,
        _ => 2,
    }
}

fn is_drive(part: &str) -> bool {
    matches!(part.as_bytes(), [letter, b':'] if letter.is_ascii_alphabetic())
}

/// Makes one segment (already free of `/`) safe: control characters become `_`, and an
/// over-long one is cut on a character boundary and told apart by a hash of the original.
fn clean_segment(raw: &str) -> String {
    let cleaned: String = raw
        .chars()
        .map(|c| if c.is_control() { '_' } else { c })
        .collect();
    if cleaned.len() <= MAX_SEGMENT {
        return cleaned;
    }
    let hash = hex::encode(&Sha256::digest(raw.as_bytes())[..4]);
    let kept = truncate_to(&cleaned, MAX_SEGMENT - HASH_SUFFIX_LEN);
    format!("{kept}~{hash}")
}

/// The longest prefix of `s` of at most `max_bytes` that ends on a character boundary.
fn truncate_to(s: &str, max_bytes: usize) -> &str {
    let mut end = max_bytes.min(s.len());
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s.get(..end).unwrap_or_default()
}

/// decode + sanitize + fallback: the segments an archive appears under, and its mtime.
/// A description that leaves nothing becomes ["00undefined", <archive_id sanitised>].
pub fn archive_path(description: &str, archive_id: &str) -> (Vec<String>, Option<i64>) {
    let decoded = decode(description);
    let segments = sanitize(&decoded.path)
        .unwrap_or_else(|| vec![UNDEFINED_DIR.to_owned(), id_segment(archive_id)]);
    (segments, decoded.mtime)
}

/// An ArchiveId as one safe segment. Real ids are already safe; this guards against a hostile
/// or broken inventory.
fn id_segment(archive_id: &str) -> String {
    let flat: String = archive_id.chars().map(safe_char).collect();
    match flat.as_str() {
        "" => "_".to_owned(),
        "." | ".." => flat.replace('.', "_"),
        _ => clean_segment(&flat),
    }
}

fn safe_char(c: char) -> char {
    if c == '/' || c == '\\' || c.is_control() {
        '_'
    } else {
        c
    }
}

/// Whether a path glacierfs writes comes back unchanged when its description is read again
/// (after a catalog rebuild, or by another mount). It does not when a name holds `\`, or the
/// path starts with a drive-like `C:`; those are still safe, just renamed on re-import.
pub fn is_stable_path(relative_path: &str) -> bool {
    sanitize(relative_path).is_some_and(|segments| segments.join("/") == relative_path)
}

// ---------------------------------------------------------------------------------------------
// Collisions and checks

/// `<name>~<YYYYMMDDTHHMMSSZ>` (creation date). The name is cut to keep the result ≤ 255 bytes.
pub fn suffixed(name: &str, creation_secs: i64) -> String {
    with_suffix(
        name,
        &format!("~{}", timefmt::format_compact(creation_secs)),
    )
}

/// [`suffixed`] plus `~<first 8 of ArchiveId>`, for when the date alone still collides.
pub fn suffixed_with_id(name: &str, creation_secs: i64, archive_id: &str) -> String {
    let id: String = archive_id.chars().take(8).map(safe_char).collect();
    let date = timefmt::format_compact(creation_secs);
    with_suffix(name, &format!("~{date}~{id}"))
}

fn with_suffix(name: &str, suffix: &str) -> String {
    let room = MAX_SEGMENT.saturating_sub(suffix.len());
    format!("{}{suffix}", truncate_to(name, room))
}

/// `.jobs` or `.lock`: names that control files take.
pub fn is_reserved(name: &str) -> bool {
    RESERVED.contains(&name)
}

/// Glacier's rule, `[A-Za-z0-9_.-]{1,255}`, less `.` and `..`, which no directory can be named.
pub fn is_valid_vault_name(name: &str) -> bool {
    (1..=MAX_SEGMENT).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
        && name != "."
        && name != ".."
}

/// Check a user-given file name (one segment, raw bytes from FUSE) for create/mkdir/rename:
/// valid UTF-8, no '/', no NUL or control chars, not "." or "..", ≤ 255 bytes.
/// It must be UTF-8 because the description carries it in JSON.
pub fn check_user_segment(name: &[u8]) -> Result<&str, NameError> {
    if name.is_empty() {
        return Err(NameError::Empty);
    }
    if name.len() > MAX_SEGMENT {
        return Err(NameError::TooLong);
    }
    let name = std::str::from_utf8(name).map_err(|_| NameError::InvalidUtf8)?;
    if name.contains('/') {
        return Err(NameError::Slash);
    }
    if name.chars().any(char::is_control) {
        return Err(NameError::ControlChar);
    }
    if name == "." || name == ".." {
        return Err(NameError::DotName);
    }
    Ok(name)
}

/// Is this a valid description to send to Glacier (printable ASCII 0x20..=0x7E, ≤ 1024)?
pub fn is_valid_description(d: &str) -> bool {
    d.len() <= MAX_DESCRIPTION && d.bytes().all(|b| (0x20..=0x7e).contains(&b))
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::engine::general_purpose::STANDARD;
    use proptest::prelude::*;

    const ID: &str = "NkbByEejwEggmBz2fTHgJrg0XBoDfjP4q6iu87-TjhqG6eGoOY9Z8i1_AUyUsuhPAdTqLHy8pTl5nfCFJmDl2yEZONi5L26Omw12vcs01MNGntHEQL8MBfGlqrEXAMPLEArchiveId";

    fn parts(path: &str) -> Option<Vec<&str>> {
        Some(path.split('/').collect())
    }

    fn assert_sanitized(path: &str, expected: Option<Vec<&str>>) {
        let expected = expected.map(|v| v.into_iter().map(String::from).collect::<Vec<_>>());
        assert_eq!(sanitize(path), expected, "{path:?}");
    }

    /// Every promise the sanitiser makes about the names it returns.
    fn assert_safe(segments: &[String]) -> Result<(), TestCaseError> {
        prop_assert!(!segments.is_empty());
        for segment in segments {
            prop_assert!(
                check_user_segment(segment.as_bytes()).is_ok(),
                "{:?}",
                segment
            );
            prop_assert!(!segment.contains('\\'), "{:?}", segment);
        }
        Ok(())
    }

    // --- mt2 and mt1 ---

    #[test]
    fn mt2_published_vector() {
        let vector = "mt2 eyJmaWxlbmFtZSI6ImZpbGUiLCJtdGltZSI6IjIwMTIxMTE0VDIwMTYxOFoifQ";
        assert_eq!(encode_mt2("file", 1_352_924_178), vector);
        assert_eq!(mt2_len("file", 1_352_924_178), vector.len());
        let expected = Decoded {
            format: Format::Mt2,
            path: "file".into(),
            mtime: Some(1_352_924_178),
        };
        assert_eq!(decode(vector), expected);
        // Padding, and white space around and inside, are tolerated.
        assert_eq!(decode(&format!("  {vector}==\n")), expected);
        assert_eq!(decode(&vector.replace("mt2 ", "mt2 \t ")), expected);
    }

    #[test]
    fn mt2_json_matches_serde_json() {
        let path = "dir/\"quoted\"\\back\u{1}\u{8}\t\n\u{c}\r\u{1f}\u{7f}/Яé😀";
        let description = encode_mt2(path, 0);
        let json = URL_SAFE_LENIENT
            .decode(description.trim_start_matches(MT2_PREFIX))
            .expect("valid base64");
        let reference = serde_json::json!({ "filename": path, "mtime": "19700101T000000Z" });
        assert_eq!(json, serde_json::to_vec(&reference).expect("serialises"));
    }

    #[test]
    fn mt1_published_vector() {
        let vector = "mt1 eyJmaWxlbmFtZSI6IsOQwq9Bw5DCryIsIm10aW1lIjoiMTk3MDAxMDFUMDAwMjAzWiJ9";
        let decoded = decode(vector);
        assert_eq!(decoded.format, Format::Mt1);
        assert_eq!(decoded.path, "ЯAЯ");
        assert_eq!(decoded.mtime, Some(123));
    }

    #[test]
    fn mt_without_usable_mtime_keeps_the_name() {
        let json = r#"{"filename":"a/b","mtime":"yesterday"}"#;
        let decoded = decode(&format!("mt2 {}", URL_SAFE_NO_PAD.encode(json)));
        assert_eq!(
            (decoded.format, decoded.path, decoded.mtime),
            (Format::Mt2, "a/b".into(), None)
        );
        let json = r#"{"filename":"a","extra":1}"#;
        assert_eq!(
            decode(&format!("mt2 {}", URL_SAFE_NO_PAD.encode(json))).format,
            Format::Mt2
        );
    }

    #[test]
    fn broken_mt_falls_through_to_raw() {
        for description in [
            "mt2 !!!notbase64",
            "mt2 eyJmaWxlbmFtZSI6",
            "mt2",
            "mt2 ",
            "mt3 eyJmaWxlbmFtZSI6ImZpbGUiLCJtdGltZSI6IjIwMTIxMTE0VDIwMTYxOFoifQ",
            // Valid mt2 JSON, but as mt1 its characters are not a valid double encoding.
            "mt1 eyJmaWxlbmFtZSI6ItCvIn0",
        ] {
            let decoded = decode(description);
            assert_eq!(decoded.format, Format::Raw, "{description:?}");
            assert_eq!(decoded.path, description);
        }
        // The number where a name should be is not a name.
        let json = r#"{"filename":42}"#;
        let description = format!("mt2 {}", URL_SAFE_NO_PAD.encode(json));
        assert_eq!(decode(&description).format, Format::Raw);
    }

    #[test]
    fn fits_at_the_limit() {
        // 4 + ceil(4n/3) ≤ 1024 with n = 42 + path length: 723 ASCII bytes fit, 724 do not.
        assert!(fits(&"a".repeat(723), 0));
        assert_eq!(encode_mt2(&"a".repeat(723), 0).len(), 1024);
        assert!(!fits(&"a".repeat(724), 0));
        // An escaped quote costs two bytes.
        assert!(!fits(&format!("{}\"", "a".repeat(722)), 0));
    }

    // --- FastGlacier ---

    #[test]
    fn fast_glacier_v2_with_drive_and_unicode() {
        let description =
            "<m><v>2</v><p>QjovQmFja3VwL9Ck0L7RgtC+L2ltZyAxLmpwZw==</p><lm>20130214T181623Z</lm></m>";
        let decoded = decode(description);
        assert_eq!(decoded.format, Format::FastGlacier);
        assert_eq!(decoded.path, "B:/Backup/Фото/img 1.jpg");
        assert_eq!(decoded.mtime, timefmt::parse_compact("20130214T181623Z"));
        assert_eq!(
            archive_path(description, ID).0,
            ["Backup", "Фото", "img 1.jpg"]
        );
    }

    #[test]
    fn fast_glacier_tolerates_quotes_whitespace_and_missing_parts() {
        let description = " \"<m> <v> 4 </v>\n <p> \"RG9jczsyMDEzO3JlcG9ydC5wZGY\" </p> </m>\" ";
        let decoded = decode(description);
        assert_eq!(decoded.format, Format::FastGlacier);
        assert_eq!(decoded.path, "Docs/2013/report.pdf");
        assert_eq!(decoded.mtime, None);
        let with_backslashes = "<m><v>3</v><p>QzpcVXNlcnNcbWVcbm90ZXMudHh0</p><lm>bad</lm></m>";
        assert_eq!(
            archive_path(with_backslashes, ID),
            (vec!["Users".into(), "me".into(), "notes.txt".into()], None)
        );
    }

    #[test]
    fn fast_glacier_v1() {
        let description =
            "<ArchiveMetadata><Path>XFxuYXNcc2hhcmVcbXVzaWNcc29uZy5tcDM=</Path></ArchiveMetadata>";
        let decoded = decode(description);
        assert_eq!(decoded.format, Format::FastGlacier);
        assert_eq!(decoded.path, r"\\nas\share\music\song.mp3");
        assert_eq!(archive_path(description, ID).0, ["music", "song.mp3"]);
    }

    #[test]
    fn fast_glacier_built_from_standard_base64() {
        let encoded = STANDARD.encode("Photos\\2014\\a+b/c?.jpg");
        assert!(encoded.contains('+') || encoded.contains('/'), "{encoded}");
        let description = format!("<m><v>4</v><p>{encoded}</p><lm>20140101T000000Z</lm></m>");
        assert_eq!(
            archive_path(&description, ID),
            (
                vec![
                    "Photos".into(),
                    "2014".into(),
                    "a+b".into(),
                    "c?.jpg".into()
                ],
                Some(1_388_534_400)
            )
        );
    }

    #[test]
    fn broken_fast_glacier_falls_through_to_raw() {
        for description in [
            "<m><v>2</v><p>not base64!</p></m>",
            "<m><v>2</v><lm>20130214T181623Z</lm></m>",
            "<m><v>2</v><p>QQ==</q></m>",
            "<m><v>2</v><p>QQ==</p>",
            "<x><p>QQ==</p></x>",
            "<m>",
            "<",
        ] {
            assert_eq!(decode(description).format, Format::Raw, "{description:?}");
        }
    }

    // --- CloudBerry ---

    #[test]
    fn cloudberry_json() {
        let description = r#"{"Path":"C:\\Data\\Пример\\file.txt","UTCDateModified":"20150601T120000Z","Size":3}"#;
        let decoded = decode(description);
        assert_eq!(decoded.format, Format::CloudBerry);
        assert_eq!(decoded.path, r"C:\Data\Пример\file.txt");
        assert_eq!(decoded.mtime, Some(1_433_160_000));
        assert_eq!(
            archive_path(description, ID).0,
            ["Data", "Пример", "file.txt"]
        );

        let iso = r#"{"Path":"/a/b","UTCDateModified":"2015-06-01T12:00:00.1234567Z"}"#;
        assert_eq!(decode(iso).mtime, Some(1_433_160_000));
        let zoneless = r#"{"Path":"/a/b","UTCDateModified":"2015-06-01T12:00:00"}"#;
        assert_eq!(decode(zoneless).mtime, Some(1_433_160_000));
        let bad_date = r#"{"Path":"/a/b","UTCDateModified":"June"}"#;
        assert_eq!(decode(bad_date).mtime, None);

        let qnap = r#" {"path": "share/x.bin", "other": [1, 2]} "#;
        let decoded = decode(qnap);
        assert_eq!(
            (decoded.format, decoded.path.as_str()),
            (Format::CloudBerry, "share/x.bin")
        );
    }

    #[test]
    fn json_without_a_path_is_raw() {
        for description in [r#"{"Path":5}"#, r#"{"name":"x"}"#, r#"["Path"]"#, "{"] {
            assert_eq!(decode(description).format, Format::Raw, "{description:?}");
        }
    }

    // --- sanitising ---

    #[test]
    fn hostile_paths() {
        assert_sanitized("../../etc/passwd", parts("etc/passwd"));
        assert_sanitized("a//b/./../c", parts("a/b/c"));
        assert_sanitized(r"\\server\share\x", parts("x"));
        assert_sanitized(r"\\server\share", None);
        assert_sanitized(r"\\?\C:\dir\x", parts("dir/x"));
        assert_sanitized(r"\\?\UNC\server\share\x", parts("x"));
        assert_sanitized(r"C:\Users\me\file.txt", parts("Users/me/file.txt"));
        assert_sanitized("B:/x", parts("x"));
        assert_sanitized("/C:", None);
        assert_sanitized("./C:/x", parts("x"));
        assert_sanitized("a/C:/x", parts("a/C:/x"));
        assert_sanitized("C:x", parts("C:x"));
        assert_sanitized("/", None);
        assert_sanitized("", None);
        assert_sanitized("./../..", None);
        assert_sanitized("...", parts("..."));
        assert_sanitized("a\u{0}b/\u{7f}\u{85}\n", parts("a_b/___"));
        assert_sanitized(" spaced /x", parts(" spaced /x"));
    }

    #[test]
    fn long_segments_are_cut_with_a_hash() {
        let long = "é".repeat(200); // 400 bytes
        let segments = sanitize(&format!("dir/{long}")).expect("segments");
        let cut = &segments[1];
        assert!(cut.len() <= MAX_SEGMENT);
        let (kept, hash) = cut.rsplit_once('~').expect("suffix");
        assert!(long.starts_with(kept));
        assert_eq!(hash, hex::encode(&Sha256::digest(long.as_bytes())[..4]));
        // Two names that differ only past the cut stay apart.
        let other = format!("{}x", "é".repeat(199));
        assert_ne!(sanitize(&other), sanitize(&long));
        // Exactly 255 bytes is left alone.
        let exact = "a".repeat(MAX_SEGMENT);
        assert_eq!(sanitize(&exact), Some(vec![exact.clone()]));
    }

    #[test]
    fn empty_or_degenerate_descriptions_use_the_archive_id() {
        for description in ["", "/", "..", r"C:\", "mt2 eyJmaWxlbmFtZSI6IiJ9"] {
            assert_eq!(
                archive_path(description, ID).0,
                [UNDEFINED_DIR.to_owned(), ID.to_owned()],
                "{description:?}"
            );
        }
        assert_eq!(archive_path("", "").0, [UNDEFINED_DIR, "_"]);
        assert_eq!(archive_path("", "..").0, [UNDEFINED_DIR, "__"]);
        assert_eq!(archive_path("", "a/b\\c").0, [UNDEFINED_DIR, "a_b_c"]);
    }

    #[test]
    fn a_full_length_raw_description() {
        let description: String = (0..MAX_DESCRIPTION)
            .map(|i| if i % 100 == 99 { '/' } else { 'x' })
            .collect();
        assert!(is_valid_description(&description));
        let (segments, mtime) = archive_path(&description, ID);
        assert_eq!(mtime, None);
        assert_eq!(segments.len(), 11);
        assert!(segments.iter().all(|s| !s.is_empty() && s.len() <= 99));

        let one_segment = "y".repeat(MAX_DESCRIPTION);
        let (segments, _) = archive_path(&one_segment, ID);
        assert_eq!(segments.len(), 1);
        assert_eq!(segments[0].len(), MAX_SEGMENT);
    }

    #[test]
    fn stable_paths() {
        assert!(is_stable_path("a/b c/Я.txt"));
        assert!(!is_stable_path(r"a\b"));
        assert!(!is_stable_path("C:/x"));
        assert!(!is_stable_path(""));
    }

    // --- suffixes and checks ---

    #[test]
    fn suffixes() {
        assert_eq!(
            suffixed("photo.jpg", 1_352_924_178),
            "photo.jpg~20121114T201618Z"
        );
        assert_eq!(
            suffixed_with_id("photo.jpg", 1_352_924_178, ID),
            "photo.jpg~20121114T201618Z~NkbByEej"
        );
        assert_eq!(suffixed_with_id("x", 0, "a/"), "x~19700101T000000Z~a_");
        let long = "é".repeat(127); // 254 bytes
        let with_date = suffixed(&long, 0);
        assert!(with_date.len() <= MAX_SEGMENT && with_date.ends_with("~19700101T000000Z"));
        let with_id = suffixed_with_id(&long, 0, ID);
        assert!(with_id.len() <= MAX_SEGMENT && with_id.ends_with("~19700101T000000Z~NkbByEej"));
    }

    #[test]
    fn reserved_names() {
        assert!(is_reserved(".jobs") && is_reserved(".lock"));
        assert!(!is_reserved("jobs") && !is_reserved(".Jobs") && !is_reserved(".jobs~x"));
    }

    #[test]
    fn vault_names() {
        assert!(is_valid_vault_name("my-vault_1.backup"));
        assert!(is_valid_vault_name(&"v".repeat(255)));
        for bad in ["", ".", "..", "a b", "a/b", "vaulté", &"v".repeat(256)] {
            assert!(!is_valid_vault_name(bad), "{bad:?}");
        }
    }

    #[test]
    fn user_segments() {
        assert_eq!(check_user_segment("Я.txt".as_bytes()), Ok("Я.txt"));
        assert_eq!(check_user_segment(b"..."), Ok("..."));
        assert_eq!(check_user_segment(b""), Err(NameError::Empty));
        assert_eq!(check_user_segment(&[b'a'; 256]), Err(NameError::TooLong));
        assert!(check_user_segment(&[b'a'; 255]).is_ok());
        assert_eq!(check_user_segment(b"\xff"), Err(NameError::InvalidUtf8));
        assert_eq!(check_user_segment(b"a/b"), Err(NameError::Slash));
        assert_eq!(check_user_segment(b"a\0b"), Err(NameError::ControlChar));
        assert_eq!(check_user_segment(b"a\x7f"), Err(NameError::ControlChar));
        assert_eq!(
            check_user_segment("a\u{9b}".as_bytes()),
            Err(NameError::ControlChar)
        );
        assert_eq!(check_user_segment(b"."), Err(NameError::DotName));
        assert_eq!(check_user_segment(b".."), Err(NameError::DotName));
        assert_eq!(
            NameError::TooLong.to_string(),
            "name is longer than 255 bytes"
        );
    }

    #[test]
    fn descriptions_for_glacier() {
        assert!(is_valid_description(""));
        assert!(is_valid_description(" ~"));
        assert!(is_valid_description(&"a".repeat(1024)));
        assert!(!is_valid_description(&"a".repeat(1025)));
        assert!(!is_valid_description("tab\there"));
        assert!(!is_valid_description("é"));
        assert!(!is_valid_description("\u{7f}"));
    }

    // --- properties ---

    /// Descriptions that look like each format, with random insides.
    fn format_like() -> impl Strategy<Value = String> {
        prop_oneof![
            ("mt[12]\\s{1,2}", "[A-Za-z0-9_=-]{0,120}").prop_map(|(tag, data)| tag + &data),
            ".*".prop_map(|s| format!("mt2 {}", URL_SAFE_NO_PAD.encode(s))),
            ".*".prop_map(|s| format!("mt1 {}", URL_SAFE_NO_PAD.encode(s))),
            (any::<String>(), "[0-9TZ:.-]{0,20}").prop_map(|(path, lm)| {
                let p = STANDARD.encode(path);
                format!("<m><v>2</v><p>{p}</p><lm>{lm}</lm></m>")
            }),
            "[<>/mpvlPathArchiveMetadta \"']{0,60}",
            (any::<String>(), any::<String>()).prop_map(|(path, date)| {
                serde_json::json!({ "Path": path, "UTCDateModified": date }).to_string()
            }),
            "[{}\":,\\[\\] pathPATH0-9]{0,60}",
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        #[test]
        fn arbitrary_strings_give_safe_names(description in any::<String>(), id in any::<String>()) {
            let _ = decode(&description);
            assert_safe(&archive_path(&description, &id).0)?;
        }

        #[test]
        fn printable_ascii_gives_safe_names(description in "[ -~]{0,1024}", id in "[ -~]{0,140}") {
            assert_safe(&archive_path(&description, &id).0)?;
        }

        #[test]
        fn format_lookalikes_give_safe_names(description in format_like()) {
            assert_safe(&archive_path(&description, ID).0)?;
        }

        #[test]
        fn hostile_mt2_paths_give_safe_names(path in any::<String>(), mtime in any::<i64>()) {
            let (segments, decoded_mtime) = archive_path(&encode_mt2(&path, mtime), ID);
            assert_safe(&segments)?;
            prop_assert_eq!(decoded_mtime, Some(mtime.clamp(timefmt::MIN_SECS, timefmt::MAX_SECS)));
        }

        #[test]
        fn mt2_round_trips(path in "\\PC*", mtime in timefmt::MIN_SECS..=timefmt::MAX_SECS) {
            let description = encode_mt2(&path, mtime);
            prop_assert!(is_valid_description(&description) || description.len() > MAX_DESCRIPTION);
            prop_assert_eq!(
                decode(&description),
                Decoded { format: Format::Mt2, path, mtime: Some(mtime) }
            );
        }

        #[test]
        fn mt2_len_and_fits_agree_with_encode(path in ".{0,800}|[a\"\\\\\u{1}é]{700,770}", mtime in any::<i64>()) {
            let len = encode_mt2(&path, mtime).len();
            prop_assert_eq!(mt2_len(&path, mtime), len);
            prop_assert_eq!(fits(&path, mtime), len <= MAX_DESCRIPTION);
        }

        #[test]
        fn sanitize_is_idempotent(path in any::<String>()) {
            if let Some(segments) = sanitize(&path) {
                prop_assert_eq!(sanitize(&segments.join("/")), Some(segments));
            }
        }

        #[test]
        fn suffixes_stay_within_a_segment(name in "\\PC{0,300}", secs in any::<i64>(), id in any::<String>()) {
            prop_assert!(suffixed(&name, secs).len() <= MAX_SEGMENT);
            prop_assert!(suffixed_with_id(&name, secs, &id).len() <= MAX_SEGMENT);
        }
    }
}
