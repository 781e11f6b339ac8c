//! The mt-aws-glacier description formats: **mt2**, which glacierfs writes (so vaults stay
//! readable by that tool), and the older **mt1**, which it only reads.
//!
//! mt2 is `mt2 ` followed by unpadded base64url of the UTF-8 JSON
//! `{"filename":"<path>","mtime":"<YYYYMMDDTHHMMSSZ>"}`; mt1 is the same with the JSON bytes
//! double-encoded (read as Latin-1, then written as UTF-8). The encoder and [`mt2_len`] share
//! one escaping table, so the length check that decides ENAMETOOLONG can never disagree with
//! the description actually written.

use base64::alphabet;
use base64::engine::general_purpose::{GeneralPurpose, URL_SAFE_NO_PAD};
use base64::Engine as _;
use serde::Deserialize;
use serde_json::Value;

use super::{parse_date, Decoded, Format, LENIENT, MAX_DESCRIPTION};
use crate::codec::timefmt;

const MT2_PREFIX: &str = "mt2 ";
/// The fixed text around the path and the date in mt2's JSON. Keys in this order, with no
/// spaces, is how serde_json writes the object, and what mt-aws-glacier writes too.
const JSON_OPEN: &str = r#"{"filename":""#;
const JSON_MID: &str = r#"","mtime":""#;
const JSON_CLOSE: &str = r#""}"#;
/// mt2 is written without padding; reading accepts what other writers may have added.
const URL_SAFE_LENIENT: GeneralPurpose = GeneralPurpose::new(&alphabet::URL_SAFE, LENIENT);

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
pub(super) fn decode(description: &str) -> Option<Decoded> {
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

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::codec::names::{decode, is_valid_description};

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

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

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
    }
}
