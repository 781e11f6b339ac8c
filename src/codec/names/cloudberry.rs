//! CloudBerry's and QNAP's description format, read only: a JSON object with `Path` (or
//! `path`) and maybe `UTCDateModified`; other keys are ignored.

use serde_json::{Map, Value};

use super::{parse_date, Decoded, Format};

/// CloudBerry and QNAP: a JSON object with `Path` (or `path`) and maybe `UTCDateModified`;
/// other keys are ignored.
pub(super) fn decode(description: &str) -> Option<Decoded> {
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

#[cfg(test)]
mod tests {
    use crate::codec::names::tests::ID;
    use crate::codec::names::{archive_path, decode, Format};

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
}
