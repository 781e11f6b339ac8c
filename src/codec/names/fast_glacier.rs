//! FastGlacier's description formats, read only: v2 to v4,
//! `<m><v>N</v><p>BASE64</p><lm>YYYYMMDDTHHMMSSZ</lm></m>`, and v1,
//! `<ArchiveMetadata><Path>BASE64</Path></ArchiveMetadata>`.
//!
//! The path is standard base64 of UTF-8 and may use `\` or `;` as separators. This is not
//! an XML parser: the formats are one flat element of flat children, and anything else is not
//! FastGlacier's, so it falls through to the next decoder.

use base64::alphabet;
use base64::engine::general_purpose::GeneralPurpose;
use base64::Engine as _;

use super::{parse_date, Decoded, Format, LENIENT};

const STANDARD_LENIENT: GeneralPurpose = GeneralPurpose::new(&alphabet::STANDARD, LENIENT);

/// FastGlacier v2–v4, `<m><v>N</v><p>BASE64</p><lm>YYYYMMDDTHHMMSSZ</lm></m>`, and v1,
/// `<ArchiveMetadata><Path>BASE64</Path></ArchiveMetadata>`. Standard base64 of a UTF-8 path
/// that may use `\` or `;` as separators.
pub(super) fn decode(description: &str) -> Option<Decoded> {
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

#[cfg(test)]
mod tests {
    use base64::engine::general_purpose::STANDARD;
    use base64::Engine as _;

    use crate::codec::names::tests::ID;
    use crate::codec::names::{archive_path, decode, Format};
    use crate::codec::timefmt;

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
}
