//! CSV inventories.
//!
//! Glacier's CSV is not RFC 4180: a quoted field writes an inner `"` as `\"`
//! and leaves backslashes unescaped, so `\"` just before a field end may be an
//! escaped quote or a literal backslash followed by the closing quote. Such
//! spots are choice points. A record is read the way that makes a whole
//! record (exactly [`FIELD_COUNT`] fields and a Size of digits), preferring
//! the escaped-quote reading at each choice point in turn, and preferring a
//! record that ends on the lines read so far to one that needs more lines.
//! For Glacier's own output that recovers every single-line record exactly;
//! only a description that spans lines and itself looks like the tail of a
//! record (`",x,123,y` before a newline) can still be misread.
//! `""` is also accepted as an inner quote, for RFC writers.

use std::io::{BufRead, Read};

mod search;

use super::{InventoryArchive, ParseError, Refusal};
use search::{extract, locate, LiteralLists, Located, Partial};

/// ArchiveId, ArchiveDescription, CreationDate, Size, SHA256TreeHash.
const FIELD_COUNT: usize = 5;

/// The index of the Size column, the one column with a fixed alphabet.
const SIZE_FIELD: usize = 3;

/// Longest record accepted, quoting included. Glacier allows 1,024-byte
/// descriptions, so this is generous; it bounds memory and the search
/// through choice points when a stray quote runs a field on and on.
const MAX_RECORD_BYTES: usize = 64 * 1024;

pub(super) fn parse<R, F>(input: R, mut on_archive: F) -> Result<(), ParseError>
where
    R: BufRead,
    F: FnMut(InventoryArchive) -> Result<(), Refusal>,
{
    let mut records = RecordReader::new(input);
    while let Some(record) = records.next_record()? {
        on_archive(record.into_archive()?).map_err(ParseError::Callback)?;
    }
    Ok(())
}

/// Whether `line` is the optional header row, told by its first field.
///
/// It is recognised as a raw line rather than parsed as a record because
/// its Size column would fail the digits-only rule of [`search`].
fn is_header_line(line: &[u8]) -> bool {
    let first = line
        .split(|&b| b == b',')
        .next()
        .unwrap_or_default()
        .trim_ascii();
    let unquoted = first
        .strip_prefix(b"\"")
        .and_then(|f| f.strip_suffix(b"\""))
        .unwrap_or(first);
    unquoted == b"ArchiveId"
}

/// A record split into fields, not yet checked as an archive.
struct RawRecord {
    /// The physical line the record starts on, from 1.
    line: u64,
    fields: [Vec<u8>; FIELD_COUNT],
}

impl RawRecord {
    fn into_archive(self) -> Result<InventoryArchive, ParseError> {
        let line = self.line;
        let [id, description, date, size, hash] = self.fields;
        Ok(InventoryArchive {
            archive_id: text(id, "ArchiveId", line)?,
            description: text(description, "ArchiveDescription", line)?,
            creation_date: text(date, "CreationDate", line)?,
            size: byte_count(&size, line)?,
            tree_hash: tree_hash(text(hash, "SHA256TreeHash", line)?, line)?,
        })
    }
}

/// A tree hash is 64 hex digits. Anything else is refused here, with its line, rather than
/// stored: a cold read would only find out at the end of a download, as a hash mismatch.
fn tree_hash(hash: String, line: u64) -> Result<String, ParseError> {
    if hash.len() == 64 && hash.bytes().all(|b| b.is_ascii_hexdigit()) {
        Ok(hash)
    } else {
        Err(ParseError::Csv {
            line,
            msg: format!("SHA256TreeHash {hash:?} is not 64 hex digits"),
        })
    }
}

fn text(bytes: Vec<u8>, column: &str, line: u64) -> Result<String, ParseError> {
    String::from_utf8(bytes).map_err(|_| ParseError::Csv {
        line,
        msg: format!("{column} is not valid UTF-8"),
    })
}

fn byte_count(bytes: &[u8], line: u64) -> Result<u64, ParseError> {
    std::str::from_utf8(bytes.trim_ascii())
        .ok()
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| ParseError::Csv {
            line,
            msg: format!(
                "Size {:?} is not a byte count",
                String::from_utf8_lossy(bytes)
            ),
        })
}

/// Reads physical lines into one record buffer until they make a record.
struct RecordReader<R> {
    input: R,
    buf: Vec<u8>,
    lines_read: u64,
    at_eof: bool,
    /// Whether the first non-blank line, which may be a header, is behind us.
    past_first_line: bool,
}

impl<R: BufRead> RecordReader<R> {
    fn new(input: R) -> Self {
        RecordReader {
            input,
            buf: Vec::new(),
            lines_read: 0,
            at_eof: false,
            past_first_line: false,
        }
    }

    fn next_record(&mut self) -> Result<Option<RawRecord>, ParseError> {
        let Some(line) = self.start_record()? else {
            return Ok(None);
        };
        // Per record: dropped with it, so its size is bounded by the record's.
        let mut lists = LiteralLists::default();
        let mut starts = vec![Partial::START];
        loop {
            match locate(&self.buf, self.at_eof, &starts, &mut lists) {
                Located::Record(literals) => {
                    let fields = extract(&self.buf, self.at_eof, &literals);
                    return Ok(Some(RawRecord { line, fields }));
                }
                Located::NeedMore(unfinished) => {
                    starts = unfinished;
                    self.read_line(line)?;
                }
                Located::Invalid(msg) => return Err(ParseError::Csv { line, msg }),
            }
        }
    }

    /// Skips blank lines and reads the first line of the next record,
    /// returning its line number, or `None` at the end of input.
    fn start_record(&mut self) -> Result<Option<u64>, ParseError> {
        loop {
            self.buf.clear();
            let line = self.lines_read + 1;
            if !self.read_line(line)? {
                return Ok(None);
            }
            if self.buf.iter().all(u8::is_ascii_whitespace) {
                continue;
            }
            let first = !std::mem::replace(&mut self.past_first_line, true);
            if !(first && is_header_line(&self.buf)) {
                return Ok(Some(line));
            }
        }
    }

    /// Appends one physical line, newline included; false at end of input.
    /// `record_line` is where the record started, for the error.
    fn read_line(&mut self, record_line: u64) -> Result<bool, ParseError> {
        if self.at_eof {
            return Ok(false);
        }
        // One byte past the limit, so that reaching it is told apart from
        // a last line that merely lacks its newline.
        let room = MAX_RECORD_BYTES.saturating_sub(self.buf.len()) + 1;
        let read = (&mut self.input)
            .take(room as u64)
            .read_until(b'\n', &mut self.buf)?;
        if self.buf.len() > MAX_RECORD_BYTES {
            return Err(ParseError::Csv {
                line: record_line,
                msg: format!("record is longer than {MAX_RECORD_BYTES} bytes"),
            });
        }
        if read == 0 || !self.buf.ends_with(b"\n") {
            self.at_eof = true;
        }
        if read > 0 {
            self.lines_read += 1;
        }
        Ok(read > 0)
    }
}

#[cfg(test)]
mod tests {
    use super::super::fixtures::*;
    use super::super::*;
    use proptest::prelude::*;

    #[test]
    fn csv_with_and_without_header() {
        let body = format!("{}\n{}\n", csv_line("a1", "one", 1), csv_line("a2", "", 2));
        let expected = vec![archive("a1", "one", 1), archive("a2", "", 2)];
        assert_eq!(csv(&body).unwrap(), expected);
        assert_eq!(csv(&format!("{CSV_HEADER}\n{body}")).unwrap(), expected);
        assert!(csv(&format!("{CSV_HEADER}\n")).unwrap().is_empty());
        assert!(csv("").unwrap().is_empty());
    }

    #[test]
    fn csv_crlf_and_missing_final_newline() {
        let doc = format!(
            "{CSV_HEADER}\r\n{}\r\n{}",
            csv_line("a1", "one", 1),
            csv_line("a2", "two", 2)
        );
        assert_eq!(
            csv(&doc).unwrap(),
            vec![archive("a1", "one", 1), archive("a2", "two", 2)]
        );
        let quoted_last = format!("{}\r\n", csv_line("a1", "\"x,y\"", 1));
        assert_eq!(csv(&quoted_last).unwrap(), vec![archive("a1", "x,y", 1)]);
    }

    #[test]
    fn csv_quoted_commas() {
        let doc = csv_line("a1", r#""a, b,,c""#, 1);
        assert_eq!(csv(&doc).unwrap(), vec![archive("a1", "a, b,,c", 1)]);
    }

    #[test]
    fn csv_backslash_escaped_quotes() {
        let cases = [
            (r#""say \"hi\", then go""#, r#"say "hi", then go"#),
            (r#""\"""#, r#"""#),
            (r#""ends with \"""#, r#"ends with ""#),
            (r#""\"\",\"\"""#, "\"\",\"\""),
            (r#""a\\"b""#, r#"a\"b"#),
        ];
        for (field, description) in cases {
            let doc = csv_line("a1", field, 1);
            assert_eq!(
                csv(&doc).unwrap(),
                vec![archive("a1", description, 1)],
                "{field}"
            );
        }
    }

    #[test]
    fn csv_doubled_quotes() {
        let doc = csv_line("a1", r#""say ""hi"", then go""""#, 1);
        assert_eq!(
            csv(&doc).unwrap(),
            vec![archive("a1", r#"say "hi", then go""#, 1)]
        );
    }

    #[test]
    fn csv_backslashes_are_literal() {
        let cases = [
            (r"C:\dir\file", r"C:\dir\file"),
            (r#""C:\dir, \file""#, r"C:\dir, \file"),
            // A field ending in a backslash: `\"` here closes the field.
            (r#""a,b\""#, r"a,b\"),
            (r#""a,b\\""#, r"a,b\\"),
            // An RFC writer's `a\"b` (`""` for the quote, backslash as is).
            (r#""a\""b""#, r#"a\"b"#),
        ];
        for (field, description) in cases {
            let doc = format!("{}\n{}\n", csv_line("a1", field, 1), csv_line("a2", "x", 2));
            assert_eq!(
                csv(&doc).unwrap(),
                vec![archive("a1", description, 1), archive("a2", "x", 2)],
                "{field}"
            );
        }
    }

    #[test]
    fn csv_embedded_newlines() {
        let doc = format!(
            "{}\n{}\r\n{}\n",
            csv_line("a1", "\"line one\nline \\\"two\\\",\n\nend\"", 1),
            csv_line("a2", "\"crlf\r\ninside\"", 2),
            csv_line("a3", "x", 3)
        );
        assert_eq!(
            csv(&doc).unwrap(),
            vec![
                archive("a1", "line one\nline \"two\",\n\nend", 1),
                archive("a2", "crlf\r\ninside", 2),
                archive("a3", "x", 3)
            ]
        );
    }

    #[test]
    fn csv_multi_line_descriptions_that_look_like_records() {
        // Each first line could end a record if `\",` were read as a literal
        // backslash and a closing quote; only the Size rule tells otherwise.
        let cases = [
            "\"a\",\"b\",\"c\",\"d\"\nnext",
            "\",,,\nz",
            "x\",\n\",\n\",\n",
        ];
        for description in cases {
            let doc = format!(
                "{}\n{}\n",
                csv_line("a1", &glacier_csv_field(description), 1),
                csv_line("a2", "x", 2)
            );
            assert_eq!(
                csv(&doc).unwrap(),
                vec![archive("a1", description, 1), archive("a2", "x", 2)],
                "{description:?}"
            );
        }
    }

    #[test]
    fn csv_quoted_header_and_header_only_on_first_line() {
        let header =
            "\"ArchiveId\",\"ArchiveDescription\",\"CreationDate\",\"Size\",\"SHA256TreeHash\"";
        let doc = format!("{header}\r\n{}\r\n", csv_line("a1", "x", 1));
        assert_eq!(csv(&doc).unwrap(), vec![archive("a1", "x", 1)]);

        let late_header = format!("{}\n{CSV_HEADER}\n", csv_line("a1", "x", 1));
        assert_eq!(csv_error_line(csv(&late_header)), 2);
    }

    #[test]
    fn csv_search_stays_linear_on_adversarial_records() {
        // Every line ends in a choice point and the quote never closes; a
        // search restarted per line would take minutes here.
        let many_lines = format!("a1,\"{}", "\\\",\n".repeat(15_000));
        assert_eq!(csv_error_line(csv(&many_lines)), 1);
        let one_line = format!("a1,\"{}\n", "\\\",".repeat(20_000));
        assert_eq!(csv_error_line(csv(&one_line)), 1);
        let doubled = format!("a1,\"{}\",{DATE},1,{HASH}\n", "\\\"\"".repeat(15_000));
        assert_eq!(csv(&doubled).unwrap().len(), 1);
    }

    #[test]
    fn csv_blank_lines_are_skipped() {
        let doc = format!(
            "\n\r\n{CSV_HEADER}\n\n{}\n  \n{}\n\n\r\n\n",
            csv_line("a1", "one", 1),
            csv_line("a2", "two", 2)
        );
        assert_eq!(
            csv(&doc).unwrap(),
            vec![archive("a1", "one", 1), archive("a2", "two", 2)]
        );
    }

    #[test]
    fn csv_wrong_column_count_reports_the_line() {
        let good = csv_line("a1", "one", 1);
        let multi_line = csv_line("a2", "\"two\nlines\"", 2);
        let doc = format!("{CSV_HEADER}\n{good}\n\n{multi_line}\na3,short,{DATE},3\n");
        let err = csv(&doc).unwrap_err();
        assert_eq!(csv_error_line(Err(err)), 6);

        let too_many = format!("{good},extra\n");
        match csv(&too_many) {
            Err(ParseError::Csv { line: 1, msg }) => assert!(msg.contains("found 6"), "{msg}"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn csv_tree_hash_must_be_64_hex_digits() {
        let good = csv_line("a1", "one", 1);
        for bad in [
            &HASH[..63],
            &format!("{HASH}0"),
            &HASH.replace('b', "g"),
            "",
        ] {
            let doc = format!("{CSV_HEADER}\n{good}\n{}\n", csv_line("a2", "two", 2))
                .replace(&format!("2,{HASH}"), &format!("2,{bad}"));
            match csv(&doc) {
                Err(ParseError::Csv { line: 3, msg }) => {
                    assert!(msg.contains("SHA256TreeHash"), "{msg}")
                }
                other => panic!("{bad:?}: {other:?}"),
            }
        }
        let upper = csv_line("a1", "one", 1).replace(HASH, &HASH.to_ascii_uppercase());
        assert!(csv(&upper).is_ok());
    }

    #[test]
    fn csv_malformed_records() {
        let cases = [
            csv_line("a1", "\"never closed", 1),
            csv_line("a1", "\"closed\"early", 1),
            csv_line("a1", "x", 1).replace(",1,", ",-1,"),
            csv_line("a1", "x", 1).replace(",1,", ",,"),
            format!("a1,\"{}\",{DATE},1,{HASH}", "x".repeat(70_000)),
        ];
        for doc in cases {
            assert_eq!(csv_error_line(csv(&doc)), 1, "{:.80}", doc);
        }
        let bad_utf8 = b"a1,\xFF,2012-03-20T17:03:43Z,1,h\n";
        assert!(matches!(
            collect(bad_utf8, InventoryFormat::Csv),
            Err(ParseError::Csv { line: 1, .. })
        ));
    }

    #[test]
    fn csv_callback_error_stops_parsing() {
        let doc = format!("{}\n{}\n", csv_line("a1", "x", 1), csv_line("a2", "x", 2));
        let mut seen = 0;
        let result = parse(doc.as_bytes(), InventoryFormat::Csv, |_| {
            seen += 1;
            Err("stop".into())
        });
        assert!(matches!(result, Err(ParseError::Callback(msg)) if msg.to_string() == "stop"));
        assert_eq!(seen, 1);
    }

    /// Writes a CSV field as Glacier does: quoted only when it holds `,` or
    /// `"` (or a line break, which Glacier's printable-ASCII descriptions
    /// never hold but any writer must quote), with inner quotes as `\"` and
    /// backslashes left alone.
    fn glacier_csv_field(value: &str) -> String {
        if value.contains([',', '"', '\n', '\r']) {
            format!("\"{}\"", value.replace('"', "\\\""))
        } else {
            value.to_string()
        }
    }

    fn to_glacier_csv(archives: &[InventoryArchive], header: bool, newline: &str) -> String {
        let mut out = String::new();
        if header {
            out.push_str(CSV_HEADER);
            out.push_str(newline);
        }
        for a in archives {
            let description = glacier_csv_field(&a.description);
            out.push_str(&format!(
                "{},{description},{},{},{}{newline}",
                a.archive_id, a.creation_date, a.size, a.tree_hash
            ));
        }
        out
    }

    proptest! {
        #[test]
        fn csv_round_trip(
            archives in prop::collection::vec(archive_strategy("[ -~]{0,100}"), 0..20),
            header: bool,
            crlf: bool,
        ) {
            let doc = to_glacier_csv(&archives, header, if crlf { "\r\n" } else { "\n" });
            prop_assert_eq!(parse_all(doc.as_bytes(), InventoryFormat::Csv), archives);
        }

        #[test]
        fn csv_round_trip_with_quote_heavy_descriptions(
            archives in prop::collection::vec(archive_strategy("[a\\\\\",\" ]{0,12}"), 0..8),
        ) {
            let doc = to_glacier_csv(&archives, false, "\n");
            prop_assert_eq!(parse_all(doc.as_bytes(), InventoryFormat::Csv), archives);
        }

        #[test]
        fn csv_round_trip_multi_line_descriptions(
            archives in prop::collection::vec(archive_strategy("[a\\\\\",\n ]{0,16}"), 0..8),
            crlf: bool,
        ) {
            // Descriptions without digits: with them a description spanning
            // lines can mimic a record's tail, which no reader can tell apart.
            let doc = to_glacier_csv(&archives, false, if crlf { "\r\n" } else { "\n" });
            prop_assert_eq!(parse_all(doc.as_bytes(), InventoryFormat::Csv), archives);
        }
    }
}
