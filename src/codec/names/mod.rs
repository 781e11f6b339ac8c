//! Archive descriptions and the file names they become.
//!
//! An archive's description is the only metadata Glacier keeps, so this module owns:
//! - reading and writing descriptions: [`decode`] tries each format in turn, and one file per
//!   format family holds its codec: `mt` for the **mt2** format glacierfs writes
//!   (mt-aws-glacier's, so vaults stay readable by that tool) and the mt1 it only reads,
//!   `fast_glacier` and `cloudberry` (CloudBerry and QNAP) for what other tools wrote, with
//!   anything else taken as a raw path;
//! - the **sanitiser**, the single gate every decoded path passes before it becomes names:
//!   whatever a description says, no segment can be empty, `.` or `..`, hold a `/` or a control
//!   character, or pass 255 bytes, so no name can point outside its vault;
//! - the collision suffixes, the reserved control-file names, and the checks on names that users
//!   and Glacier hand us;
//! - recognising the descriptions of glacierfs's own namespace snapshots (`snapshot`), which
//!   are never files.
//!
//! Decoders never fail loudly: a description that looks like a format but does not decode falls
//! through to the next one, and finally to Raw.

mod cloudberry;
mod fast_glacier;
mod mt;
pub mod snapshot;

use base64::engine::general_purpose::GeneralPurposeConfig;
use base64::engine::DecodePaddingMode;
use sha2::{Digest, Sha256};

use crate::codec::timefmt;

pub use mt::{encode_mt2, fits, mt2_len};

/// Glacier's limit on a description, in characters (all ASCII, so also bytes).
pub const MAX_DESCRIPTION: usize = 1024;
/// Linux's limit on one path segment, in bytes.
pub const MAX_SEGMENT: usize = 255;
/// Names taken by control files; archives with these names get a collision suffix.
pub const RESERVED: [&str; 2] = [".jobs", ".lock"];

/// Where archives whose description names nothing end up, under their ArchiveId.
const UNDEFINED_DIR: &str = "00undefined";
/// Bytes of the hash suffix a shortened segment gets: `~` and 8 hex digits.
const HASH_SUFFIX_LEN: usize = 9;

/// Other tools pad or not, and may leave stray low bits in the last character; accept all that.
const LENIENT: GeneralPurposeConfig = GeneralPurposeConfig::new()
    .with_decode_padding_mode(DecodePaddingMode::Indifferent)
    .with_decode_allow_trailing_bits(true);

/// Why a user-given name cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    #[error("name is empty")]
    Empty,
    /// Over [`MAX_SEGMENT`] bytes (ENAMETOOLONG).
    #[error("name is longer than 255 bytes")]
    TooLong,
    #[error("name is not valid UTF-8")]
    InvalidUtf8,
    #[error("name contains '/'")]
    Slash,
    #[error("name contains a control character")]
    ControlChar,
    /// `.` or `..`.
    #[error("name is '.' or '..'")]
    DotName,
}

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
// Reading descriptions

/// What a description says: the first of mt2, mt1, FastGlacier and CloudBerry that decodes,
/// else the whole description as a raw path. Never fails, never panics.
pub fn decode(description: &str) -> Decoded {
    mt::decode(description)
        .or_else(|| fast_glacier::decode(description))
        .or_else(|| cloudberry::decode(description))
        .unwrap_or_else(|| Decoded {
            format: Format::Raw,
            path: description.to_owned(),
            mtime: None,
        })
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
    use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
    use base64::Engine as _;
    use proptest::prelude::*;

    use super::*;

    /// A real ArchiveId's shape, shared by the tests of every format.
    pub(super) const ID: &str = "NkbByEejwEggmBz2fTHgJrg0XBoDfjP4q6iu87-TjhqG6eGoOY9Z8i1_AUyUsuhPAdTqLHy8pTl5nfCFJmDl2yEZONi5L26Omw12vcs01MNGntHEQL8MBfGlqrEXAMPLEArchiveId";

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
