//! JSON inventories, read a value at a time from a window of the input: the document's own
//! structure (the top-level object and the `ArchiveList` array) is walked here, and each value
//! in it (a key, a header field, an archive record, anything unknown) is parsed by serde_json
//! from a slice of the window. Parsing from a slice lets serde_json borrow and scan strings in
//! bulk; through a reader it takes them byte by byte, which cost most of a large import's
//! parsing. Records are handed over as soon as each is parsed and the window only ever holds
//! the unparsed tail, so memory stays bounded by the read size plus one value.

use std::fmt;
use std::io::{self, Read};

use serde::de::{self, DeserializeOwned, Deserializer, IgnoredAny, Unexpected, Visitor};
use serde::Deserialize;

use super::{InventoryArchive, InventoryHeader, ParseError, Refusal};

/// Bytes read into the window at a time (more when one value needs more).
const READ_BYTES: usize = 1 << 20;

pub(super) fn parse<R, F>(input: R, mut on_archive: F) -> Result<InventoryHeader, ParseError>
where
    R: Read,
    F: FnMut(InventoryArchive) -> Result<(), Refusal>,
{
    let mut doc = Window {
        input,
        buf: Vec::new(),
        pos: 0,
        consumed: 0,
        eof: false,
    };
    if doc.peek()? != Some(b'{') {
        return Err(doc.malformed("expected an inventory object with an ArchiveList"));
    }
    doc.pos += 1;
    // Outer Option: seen at all (to refuse duplicates); inner: null.
    let mut vault_arn = None;
    let mut inventory_date = None;
    let mut saw_list = false;
    let mut first = true;
    loop {
        match doc.peek()? {
            Some(b'}') if first => {
                doc.pos += 1;
                break;
            }
            Some(b'"') => {}
            _ => return Err(doc.malformed("expected a key of the inventory object")),
        }
        first = false;
        let key: String = doc.value()?;
        if doc.peek()? != Some(b':') {
            return Err(doc.malformed("expected `:` after a key"));
        }
        doc.pos += 1;
        match key.as_str() {
            "VaultARN" => {
                let value = doc.value()?;
                set_once(&doc, &mut vault_arn, "VaultARN", value)?
            }
            "InventoryDate" => {
                let value = doc.value()?;
                set_once(&doc, &mut inventory_date, "InventoryDate", value)?
            }
            "ArchiveList" => {
                // A second list would feed the consumer twice.
                if saw_list {
                    return Err(doc.malformed("duplicate field `ArchiveList`"));
                }
                doc.archive_list(&mut on_archive)?;
                saw_list = true;
            }
            _ => {
                doc.value::<IgnoredAny>()?;
            }
        }
        match doc.peek()? {
            Some(b',') => doc.pos += 1,
            Some(b'}') => {
                doc.pos += 1;
                break;
            }
            _ => return Err(doc.malformed("expected `,` or `}` in the inventory object")),
        }
    }
    // Without a list this is not an inventory; reading it as an empty vault would make every
    // known archive look deleted.
    if !saw_list {
        return Err(doc.malformed("missing field `ArchiveList`"));
    }
    if doc.peek()?.is_some() {
        return Err(doc.malformed("trailing characters after the inventory object"));
    }
    Ok(InventoryHeader {
        vault_arn: vault_arn.flatten(),
        inventory_date: inventory_date.flatten(),
    })
}

/// Stores a header field, refusing a second one: picking either would be a guess.
fn set_once<R: Read>(
    doc: &Window<R>,
    slot: &mut Option<Option<String>>,
    name: &'static str,
    value: Option<String>,
) -> Result<(), ParseError> {
    match slot.replace(value) {
        Some(_) => Err(doc.malformed(format_args!("duplicate field `{name}`"))),
        None => Ok(()),
    }
}

/// The unparsed part of the input: `buf[pos..]`, which starts `consumed + pos` bytes into it.
struct Window<R> {
    input: R,
    buf: Vec<u8>,
    pos: usize,
    /// Bytes dropped from the front of `buf` so far.
    consumed: u64,
    eof: bool,
}

impl<R: Read> Window<R> {
    /// Reads more input behind what is unparsed, dropping what is parsed; false at the end.
    /// Reads at least as much as is held, so a value longer than one read is re-parsed only a
    /// logarithmic number of times.
    fn fill(&mut self) -> io::Result<bool> {
        if self.eof {
            return Ok(false);
        }
        if self.pos > 0 {
            self.buf.drain(..self.pos);
            self.consumed += self.pos as u64;
            self.pos = 0;
        }
        let held = self.buf.len();
        self.buf.resize(held + READ_BYTES.max(held), 0);
        let n = loop {
            match self.input.read(&mut self.buf[held..]) {
                Ok(n) => break n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    self.buf.truncate(held);
                    return Err(e);
                }
            }
        };
        self.buf.truncate(held + n);
        self.eof = n == 0;
        Ok(n > 0)
    }

    /// The next byte that is not whitespace, left unparsed; `None` at the end of the input.
    fn peek(&mut self) -> Result<Option<u8>, ParseError> {
        loop {
            while let Some(&b) = self.buf.get(self.pos) {
                if !matches!(b, b' ' | b'\n' | b'\r' | b'\t') {
                    return Ok(Some(b));
                }
                self.pos += 1;
            }
            if !self.fill()? {
                return Ok(None);
            }
        }
    }

    /// Parses the next value. A value the window cuts off (or that ends right at its end, as a
    /// number cut short would) is parsed again once more input is in.
    fn value<T: DeserializeOwned>(&mut self) -> Result<T, ParseError> {
        loop {
            let held = &self.buf[self.pos..];
            let mut values = serde_json::Deserializer::from_slice(held).into_iter::<T>();
            let more = match values.next() {
                Some(Ok(value)) => {
                    let end = values.byte_offset();
                    if end < held.len() || self.eof {
                        self.pos += end;
                        return Ok(value);
                    }
                    true
                }
                Some(Err(e)) if e.is_eof() && !self.eof => true,
                Some(Err(e)) => {
                    // serde_json places the error within the slice; say where the value began.
                    let text = e.to_string();
                    let what = text
                        .rsplit_once(" at line ")
                        .map_or(text.as_str(), |(w, _)| w);
                    return Err(self.malformed(what));
                }
                None if !self.eof => true,
                None => return Err(self.malformed("the inventory ends where a value belongs")),
            };
            if more {
                self.fill()?;
            }
        }
    }

    /// The `ArchiveList` array: each record goes to the consumer as soon as it is parsed, so
    /// the list itself is never held.
    fn archive_list<F>(&mut self, on_archive: &mut F) -> Result<(), ParseError>
    where
        F: FnMut(InventoryArchive) -> Result<(), Refusal>,
    {
        if self.peek()? != Some(b'[') {
            return Err(self.malformed("`ArchiveList` is not an array of archive records"));
        }
        self.pos += 1;
        if self.peek()? == Some(b']') {
            self.pos += 1;
            return Ok(());
        }
        loop {
            let record: ArchiveRecord = self.value()?;
            on_archive(record.into()).map_err(ParseError::Callback)?;
            match self.peek()? {
                Some(b',') => self.pos += 1,
                Some(b']') => {
                    self.pos += 1;
                    return Ok(());
                }
                _ => return Err(self.malformed("expected `,` or `]` after an archive record")),
            }
        }
    }

    /// The error for what the input holds at the current position.
    fn malformed(&self, what: impl fmt::Display) -> ParseError {
        ParseError::Json(format!(
            "{what}, at byte {}",
            self.consumed + self.pos as u64
        ))
    }
}

/// One element of `ArchiveList`. Unknown keys are ignored.
#[derive(Deserialize)]
struct ArchiveRecord {
    #[serde(rename = "ArchiveId")]
    archive_id: String,
    #[serde(
        rename = "ArchiveDescription",
        default,
        deserialize_with = "null_as_empty"
    )]
    description: String,
    #[serde(rename = "CreationDate")]
    creation_date: String,
    #[serde(rename = "Size", deserialize_with = "number_or_numeric_string")]
    size: u64,
    #[serde(rename = "SHA256TreeHash")]
    tree_hash: String,
}

impl From<ArchiveRecord> for InventoryArchive {
    fn from(r: ArchiveRecord) -> Self {
        InventoryArchive {
            archive_id: r.archive_id,
            description: r.description,
            creation_date: r.creation_date,
            size: r.size,
            tree_hash: r.tree_hash,
        }
    }
}

fn null_as_empty<'de, D: Deserializer<'de>>(de: D) -> Result<String, D::Error> {
    Option::<String>::deserialize(de).map(Option::unwrap_or_default)
}

/// Glacier writes `Size` as a number, but some tools and mocks quote it.
fn number_or_numeric_string<'de, D: Deserializer<'de>>(de: D) -> Result<u64, D::Error> {
    de.deserialize_any(SizeVisitor)
}

struct SizeVisitor;

impl Visitor<'_> for SizeVisitor {
    type Value = u64;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a byte count, as a non-negative integer or a string holding one")
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<u64, E> {
        Ok(v)
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<u64, E> {
        u64::try_from(v).map_err(|_| E::invalid_value(Unexpected::Signed(v), &self))
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<u64, E> {
        v.trim()
            .parse()
            .map_err(|_| E::invalid_value(Unexpected::Str(v), &self))
    }
}

#[cfg(test)]
mod tests {
    use super::super::fixtures::*;
    use super::super::*;
    use proptest::prelude::*;

    #[test]
    fn json_header_before_list() {
        let doc = format!(
            r#"{{"VaultARN":"arn:aws:glacier:us-west-2:012345678901:vaults/examplevault","InventoryDate":"2011-12-12T14:19:01Z","ArchiveList":[{},{}]}}"#,
            json_record("a1", r#""one""#, "1"),
            json_record("a2", r#""two""#, "2")
        );
        let (header, archives) = json(&doc).unwrap();
        assert_eq!(
            header.vault_arn.as_deref(),
            Some("arn:aws:glacier:us-west-2:012345678901:vaults/examplevault")
        );
        assert_eq!(
            header.inventory_date.as_deref(),
            Some("2011-12-12T14:19:01Z")
        );
        assert_eq!(
            archives,
            vec![archive("a1", "one", 1), archive("a2", "two", 2)]
        );
    }

    #[test]
    fn json_header_after_list() {
        let doc = format!(
            "{{\n  \"ArchiveList\": [\n    {}\n  ],\n  \"InventoryDate\": \"d\",\n  \"VaultARN\": \"v\"\n}}\n",
            json_record("a1", r#""one""#, "1")
        );
        let (header, archives) = json(&doc).unwrap();
        assert_eq!(header.vault_arn.as_deref(), Some("v"));
        assert_eq!(header.inventory_date.as_deref(), Some("d"));
        assert_eq!(archives, vec![archive("a1", "one", 1)]);
    }

    #[test]
    fn json_empty_list() {
        let (header, archives) = json(r#"{"VaultARN":"v","ArchiveList":[]}"#).unwrap();
        assert_eq!(header.vault_arn.as_deref(), Some("v"));
        assert_eq!(header.inventory_date, None);
        assert!(archives.is_empty());
    }

    #[test]
    fn json_null_or_missing_description_is_empty() {
        let missing = format!(
            r#"{{"ArchiveId":"a2","CreationDate":"{DATE}","Size":2,"SHA256TreeHash":"{HASH}"}}"#
        );
        let doc = format!(
            r#"{{"ArchiveList":[{},{missing}]}}"#,
            json_record("a1", "null", "1")
        );
        let (_, archives) = json(&doc).unwrap();
        assert_eq!(archives, vec![archive("a1", "", 1), archive("a2", "", 2)]);
    }

    #[test]
    fn json_size_as_string() {
        let doc = format!(
            r#"{{"ArchiveList":[{}]}}"#,
            json_record("a1", r#""d""#, r#""18446744073709551615""#)
        );
        let (_, archives) = json(&doc).unwrap();
        assert_eq!(archives, vec![archive("a1", "d", u64::MAX)]);
    }

    #[test]
    fn json_bad_sizes_are_errors() {
        for size in [
            "-1",
            "1.5",
            r#""12x""#,
            r#""""#,
            "null",
            "18446744073709551616",
            "true",
        ] {
            let doc = format!(
                r#"{{"ArchiveList":[{}]}}"#,
                json_record("a1", r#""d""#, size)
            );
            assert!(
                matches!(json(&doc), Err(ParseError::Json(_))),
                "size {size}"
            );
        }
    }

    #[test]
    fn json_unknown_keys_are_ignored() {
        let record = format!(
            r#"{{"Extra":{{"x":[1,{{"y":null}}]}},"ArchiveId":"a1","ArchiveDescription":"d","CreationDate":"{DATE}","Size":1,"Tags":["t"],"SHA256TreeHash":"{HASH}"}}"#
        );
        let doc = format!(
            r#"{{"Marker":null,"Nested":{{"ArchiveList":[1,2]}},"ArchiveList":[{record}],"Count":1.5e3}}"#
        );
        let (header, archives) = json(&doc).unwrap();
        assert_eq!(header, InventoryHeader::default());
        assert_eq!(archives, vec![archive("a1", "d", 1)]);
    }

    #[test]
    fn json_null_header_fields_are_none() {
        let (header, _) =
            json(r#"{"VaultARN":null,"InventoryDate":null,"ArchiveList":[]}"#).unwrap();
        assert_eq!(header, InventoryHeader::default());
    }

    #[test]
    fn json_structural_errors() {
        let record = json_record("a1", r#""d""#, "1");
        let cases = [
            "".to_string(),
            "[]".to_string(),
            "{}".to_string(),
            r#"{"ArchiveList":null}"#.to_string(),
            r#"{"ArchiveList":[],"ArchiveList":[]}"#.to_string(),
            r#"{"VaultARN":"a","VaultARN":"b","ArchiveList":[]}"#.to_string(),
            r#"{"ArchiveList":[]} trailing"#.to_string(),
            format!(r#"{{"ArchiveList":[{record}"#),
            r#"{"ArchiveList":[{"ArchiveId":"a1"}]}"#.to_string(),
            r#"{"ArchiveList":[7]}"#.to_string(),
        ];
        for doc in cases {
            assert!(matches!(json(&doc), Err(ParseError::Json(_))), "{doc:?}");
        }
    }

    #[test]
    fn json_truncation_after_records_still_errors_after_delivering_them() {
        let doc = format!(r#"{{"ArchiveList":[{},"#, json_record("a1", r#""d""#, "1"));
        let mut seen = 0;
        let result = parse(doc.as_bytes(), InventoryFormat::Json, |_| {
            seen += 1;
            Ok(())
        });
        assert!(matches!(result, Err(ParseError::Json(_))));
        assert_eq!(seen, 1);
    }

    #[test]
    fn json_callback_error_stops_parsing() {
        let doc = format!(
            r#"{{"ArchiveList":[{},{},{}]}}"#,
            json_record("a1", "null", "1"),
            json_record("a2", "null", "2"),
            json_record("a3", "null", "3")
        );
        let mut seen = Vec::new();
        let result = parse(doc.as_bytes(), InventoryFormat::Json, |a| {
            seen.push(a.archive_id);
            if seen.len() == 2 {
                Err("disk full".into())
            } else {
                Ok(())
            }
        });
        assert!(matches!(result, Err(ParseError::Callback(msg)) if msg.to_string() == "disk full"));
        assert_eq!(seen, ["a1", "a2"]);
    }

    #[test]
    fn json_with_byte_order_mark() {
        let (_, archives) =
            collect(b"\xEF\xBB\xBF{\"ArchiveList\":[]}", InventoryFormat::Json).unwrap();
        assert!(archives.is_empty());
    }

    fn to_json(archives: &[InventoryArchive], header_first: bool, string_sizes: bool) -> String {
        let list: Vec<serde_json::Value> = archives
            .iter()
            .map(|a| {
                let size = if string_sizes {
                    serde_json::json!(a.size.to_string())
                } else {
                    serde_json::json!(a.size)
                };
                let description = if a.description.is_empty() {
                    serde_json::Value::Null
                } else {
                    serde_json::json!(a.description)
                };
                serde_json::json!({
                    "ArchiveId": a.archive_id,
                    "ArchiveDescription": description,
                    "CreationDate": a.creation_date,
                    "Size": size,
                    "SHA256TreeHash": a.tree_hash,
                })
            })
            .collect();
        let list = serde_json::to_string(&list).unwrap();
        let header = r#""VaultARN":"arn:aws:glacier:us-east-1:1:vaults/v","InventoryDate":"2024-01-01T00:00:00Z""#;
        if header_first {
            format!("{{{header},\"ArchiveList\":{list}}}")
        } else {
            format!("{{\"ArchiveList\":{list},{header}}}")
        }
    }

    /// Hands out at most `step` bytes a read, so values are cut off by the parser's window
    /// at every position.
    struct Trickle<'a> {
        rest: &'a [u8],
        step: usize,
    }

    impl Read for Trickle<'_> {
        fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
            let n = self.rest.len().min(out.len()).min(self.step);
            out[..n].copy_from_slice(&self.rest[..n]);
            self.rest = &self.rest[n..];
            Ok(n)
        }
    }

    fn trickled(
        doc: &[u8],
        step: usize,
    ) -> Result<(InventoryHeader, Vec<InventoryArchive>), ParseError> {
        let mut archives = Vec::new();
        let header = parse(Trickle { rest: doc, step }, InventoryFormat::Json, |a| {
            archives.push(a);
            Ok(())
        })?;
        Ok((header, archives))
    }

    #[test]
    fn json_values_cut_off_by_short_reads_are_read_whole() {
        let record = json_record("a1", r#""d""#, "1234");
        let doc = format!(
            r#"{{"Count": 12345, "Flag": true, "Marker" : null, "ArchiveList": [ {record} , {record} ], "InventoryDate": "2024-01-01T00:00:00Z"}}"#
        );
        let whole = json(&doc).unwrap();
        assert_eq!(whole.1.len(), 2);
        for step in 1..=9 {
            let (header, archives) = trickled(doc.as_bytes(), step).unwrap();
            assert_eq!((&header, &archives), (&whole.0, &whole.1), "step {step}");
        }
        // Cut short inside a number, a literal and a record: still errors, however it is read.
        for cut in [
            r#"{"Count": 12"#,
            r#"{"Flag": tru"#,
            r#"{"ArchiveList": [{"Arch"#,
        ] {
            for step in [1, 2, 64] {
                let e = trickled(cut.as_bytes(), step).unwrap_err();
                assert!(matches!(e, ParseError::Json(_)), "{cut}: {e}");
            }
        }
    }

    proptest! {
        #[test]
        fn json_round_trip_in_short_reads(
            archives in prop::collection::vec(archive_strategy("\\PC{0,40}"), 0..6),
            step in 1usize..40,
        ) {
            let doc = to_json(&archives, false, false);
            let (header, parsed) = trickled(doc.as_bytes(), step).unwrap();
            prop_assert_eq!(parsed, archives);
            prop_assert_eq!(header.inventory_date.as_deref(), Some("2024-01-01T00:00:00Z"));
        }

        #[test]
        fn json_round_trip(
            archives in prop::collection::vec(archive_strategy("\\PC{0,100}"), 0..20),
            header_first: bool,
            string_sizes: bool,
        ) {
            let doc = to_json(&archives, header_first, string_sizes);
            let (header, parsed) = collect(doc.as_bytes(), InventoryFormat::Json).unwrap();
            prop_assert_eq!(parsed, archives);
            prop_assert_eq!(header.inventory_date.as_deref(), Some("2024-01-01T00:00:00Z"));
        }
    }
}
