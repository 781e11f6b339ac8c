//! JSON inventories, read with serde's streaming-visitor technique: the
//! `ArchiveList` array is visited element by element and never collected.

use std::fmt;
use std::io::{self, Read};

use serde::de::{
    self, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Unexpected, Visitor,
};
use serde::Deserialize;

use super::{InventoryArchive, InventoryHeader, ParseError, Refusal};

pub(super) fn parse<R, F>(input: R, on_archive: F) -> Result<InventoryHeader, ParseError>
where
    R: Read,
    F: FnMut(InventoryArchive) -> Result<(), Refusal>,
{
    let mut consumer = Consumer {
        on_archive,
        refusal: None,
    };
    let mut de = serde_json::Deserializer::from_reader(input);
    let outcome = InventorySeed(&mut consumer)
        .deserialize(&mut de)
        .and_then(|header| de.end().map(|()| header));
    // A refusal can only travel through serde as a generic error; report
    // the consumer's own message instead.
    if let Some(msg) = consumer.refusal {
        return Err(ParseError::Callback(msg));
    }
    outcome.map_err(from_serde_json)
}

fn from_serde_json(err: serde_json::Error) -> ParseError {
    if err.is_io() {
        ParseError::Io(io::Error::from(err))
    } else {
        ParseError::Json(err.to_string())
    }
}

/// The caller's callback, plus the message it refused with, if it did.
struct Consumer<F> {
    on_archive: F,
    refusal: Option<Refusal>,
}

impl<F: FnMut(InventoryArchive) -> Result<(), Refusal>> Consumer<F> {
    fn deliver<E: de::Error>(&mut self, archive: InventoryArchive) -> Result<(), E> {
        (self.on_archive)(archive).map_err(|msg| {
            self.refusal = Some(msg);
            E::custom("stopped by the archive consumer")
        })
    }
}

/// The top-level object. The keys of interest are matched as identifiers
/// so that no key is allocated; anything else is skipped unparsed.
#[derive(Deserialize)]
#[serde(field_identifier)]
enum TopKey {
    #[serde(rename = "VaultARN")]
    VaultArn,
    InventoryDate,
    ArchiveList,
    #[serde(other)]
    Other,
}

struct InventorySeed<'c, F>(&'c mut Consumer<F>);

impl<'de, F: FnMut(InventoryArchive) -> Result<(), Refusal>> DeserializeSeed<'de>
    for InventorySeed<'_, F>
{
    type Value = InventoryHeader;

    fn deserialize<D: Deserializer<'de>>(self, de: D) -> Result<InventoryHeader, D::Error> {
        de.deserialize_map(self)
    }
}

impl<'de, F: FnMut(InventoryArchive) -> Result<(), Refusal>> Visitor<'de> for InventorySeed<'_, F> {
    type Value = InventoryHeader;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an inventory object with an ArchiveList")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<InventoryHeader, A::Error> {
        // Outer Option: seen at all (to refuse duplicates); inner: null.
        let mut vault_arn = None;
        let mut inventory_date = None;
        let mut saw_list = false;
        while let Some(key) = map.next_key::<TopKey>()? {
            match key {
                TopKey::VaultArn => set_once(&mut vault_arn, "VaultARN", map.next_value()?)?,
                TopKey::InventoryDate => {
                    set_once(&mut inventory_date, "InventoryDate", map.next_value()?)?
                }
                TopKey::ArchiveList => {
                    // A second list would feed the consumer twice.
                    if saw_list {
                        return Err(de::Error::duplicate_field("ArchiveList"));
                    }
                    map.next_value_seed(ArchiveListSeed(&mut *self.0))?;
                    saw_list = true;
                }
                TopKey::Other => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        // Without a list this is not an inventory; reading it as an empty
        // vault would make every known archive look deleted.
        if !saw_list {
            return Err(de::Error::missing_field("ArchiveList"));
        }
        Ok(InventoryHeader {
            vault_arn: vault_arn.flatten(),
            inventory_date: inventory_date.flatten(),
        })
    }
}

/// Stores a header field, refusing a second one: picking either would be a guess.
fn set_once<E: de::Error>(
    slot: &mut Option<Option<String>>,
    name: &'static str,
    value: Option<String>,
) -> Result<(), E> {
    match slot.replace(value) {
        Some(_) => Err(E::duplicate_field(name)),
        None => Ok(()),
    }
}

/// The `ArchiveList` array: each element goes to the consumer as soon as
/// it is parsed, so the list itself is never held.
struct ArchiveListSeed<'c, F>(&'c mut Consumer<F>);

impl<'de, F: FnMut(InventoryArchive) -> Result<(), Refusal>> DeserializeSeed<'de>
    for ArchiveListSeed<'_, F>
{
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, de: D) -> Result<(), D::Error> {
        de.deserialize_seq(self)
    }
}

impl<'de, F: FnMut(InventoryArchive) -> Result<(), Refusal>> Visitor<'de>
    for ArchiveListSeed<'_, F>
{
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an array of archive records")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        while let Some(record) = seq.next_element::<ArchiveRecord>()? {
            self.0.deliver(record.into())?;
        }
        Ok(())
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

    proptest! {
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
