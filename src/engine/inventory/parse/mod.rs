//! Owns parsing Glacier inventory job output (JSON or CSV) as a stream.
//!
//! An inventory of a large vault runs to hundreds of megabytes, so nothing
//! here keeps the archive list: each archive is handed to the caller's
//! callback as soon as its record is parsed, and memory stays bounded by the
//! read buffer plus one record.
//!
//! Because records are delivered before the rest of the document has been
//! checked, an `Err` from [`parse`] invalidates every archive already handed
//! over: a caller should stage what it receives (for example in a database
//! transaction) and commit only on `Ok`.

mod csv;
mod json;

use std::io::{self, BufRead, BufReader, Read};

/// Size of the read buffer put in front of the caller's reader.
///
/// The CSV reader takes input in small pieces, which is only cheap when they come out of a
/// large in-memory buffer; the JSON parser reads larger blocks of its own, which pass it by.
const READ_BUFFER_BYTES: usize = 256 * 1024;

/// A UTF-8 byte order mark, which some tools put in front of text files.
const UTF8_BOM: &[u8] = b"\xEF\xBB\xBF";

/// One archive of an inventory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InventoryArchive {
    pub archive_id: String,
    /// The archive description; empty when the inventory has none.
    pub description: String,
    pub creation_date: String,
    pub size: u64,
    pub tree_hash: String,
}

/// The vault-level fields of an inventory (JSON only; CSV has neither).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct InventoryHeader {
    pub vault_arn: Option<String>,
    pub inventory_date: Option<String>,
}

/// Why the archive consumer stopped a parse: its own error, handed back whole in
/// [`ParseError::Callback`] so the caller can tell its own reasons from the parser's.
pub type Refusal = Box<dyn std::error::Error + Send + Sync>;

/// Why an inventory could not be parsed.
#[derive(Debug, thiserror::Error)]
pub enum ParseError {
    #[error("reading inventory: {0}")]
    Io(#[from] io::Error),
    #[error("malformed JSON inventory: {0}")]
    Json(String),
    #[error("malformed CSV inventory, record starting at line {line}: {msg}")]
    Csv { line: u64, msg: String },
    #[error("inventory parse stopped by the archive consumer: {0}")]
    Callback(Refusal),
}

/// The two formats an inventory job can produce.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InventoryFormat {
    Json,
    Csv,
}

/// Sniff the format from the first non-whitespace byte ('{' → JSON, else CSV).
///
/// A leading UTF-8 byte order mark is skipped. Input that is empty or all
/// whitespace is taken as CSV, in which it is a valid empty inventory.
pub fn sniff(first_bytes: &[u8]) -> InventoryFormat {
    match first_significant_byte(first_bytes) {
        Some(b'{') => InventoryFormat::Json,
        _ => InventoryFormat::Csv,
    }
}

/// Parse from any reader; calls `on_archive` for each archive in order and
/// returns the header fields found.
///
/// For JSON, `VaultARN` and `InventoryDate` may come before or after
/// `ArchiveList`; for CSV both are `None`. If `on_archive` returns
/// `Err(refusal)`, parsing stops at once and the error is
/// [`ParseError::Callback`]`(refusal)`.
pub fn parse<R: Read>(
    reader: R,
    format: InventoryFormat,
    on_archive: impl FnMut(InventoryArchive) -> Result<(), Refusal>,
) -> Result<InventoryHeader, ParseError> {
    let input = BufReader::with_capacity(READ_BUFFER_BYTES, skip_bom(reader)?);
    match format {
        InventoryFormat::Json => json::parse(input, on_archive),
        InventoryFormat::Csv => csv::parse(input, on_archive).map(|()| InventoryHeader::default()),
    }
}

/// Like [`parse`], but sniffs the format first from the reader's buffer.
pub fn parse_auto<R: BufRead>(
    mut reader: R,
    on_archive: impl FnMut(InventoryArchive) -> Result<(), Refusal>,
) -> Result<(InventoryFormat, InventoryHeader), ParseError> {
    let (format, lead) = sniff_stream(&mut reader)?;
    let header = parse(io::Cursor::new(lead).chain(reader), format, on_archive)?;
    Ok((format, header))
}

fn first_significant_byte(bytes: &[u8]) -> Option<u8> {
    let body = bytes.strip_prefix(UTF8_BOM).unwrap_or(bytes);
    body.iter().copied().find(|b| !b.is_ascii_whitespace())
}

/// Whether `bytes` settle the format: they hold a significant byte that is not
/// just the start of a byte order mark cut short.
fn settles_format(bytes: &[u8]) -> bool {
    let partial_bom = bytes.len() < UTF8_BOM.len() && UTF8_BOM.starts_with(bytes);
    !partial_bom && first_significant_byte(bytes).is_some()
}

/// Sniffs the format of a buffered stream without losing input.
///
/// Usually the first `fill_buf` decides it and nothing is consumed. A buffer
/// holding only whitespace (or part of a byte order mark) has to be consumed
/// to see further; those bytes are returned so the parse still sees them.
/// Whole blank lines among them are dropped, which both formats allow, so the
/// returned prefix stays short however much leading whitespace there is.
fn sniff_stream<R: BufRead>(reader: &mut R) -> io::Result<(InventoryFormat, Vec<u8>)> {
    let mut lead = Vec::new();
    loop {
        let buf = reader.fill_buf()?;
        if lead.is_empty() && settles_format(buf) {
            return Ok((sniff(buf), lead));
        }
        if buf.is_empty() {
            return Ok((sniff(&lead), lead));
        }
        lead.extend_from_slice(buf);
        let taken = buf.len();
        reader.consume(taken);
        if settles_format(&lead) {
            return Ok((sniff(&lead), lead));
        }
        if let Some(last_newline) = lead.iter().rposition(|&b| b == b'\n') {
            lead.drain(..=last_newline);
        }
    }
}

/// Drops a leading byte order mark, which neither parser would accept.
///
/// Reads the first three bytes itself rather than peeking at a buffer, since a
/// buffer may hold fewer than three bytes at first.
fn skip_bom<R: Read>(mut reader: R) -> io::Result<io::Chain<io::Cursor<Vec<u8>>, R>> {
    let mut lead = [0u8; 3];
    let mut filled = 0;
    while filled < lead.len() {
        match reader.read(&mut lead[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    let kept = if lead[..filled] == *UTF8_BOM {
        Vec::new()
    } else {
        lead[..filled].to_vec()
    };
    Ok(io::Cursor::new(kept).chain(reader))
}

/// What the tests of both parsers and of the entry points share.
#[cfg(test)]
mod fixtures {
    use super::*;
    use proptest::prelude::*;

    pub(super) fn collect(
        input: &[u8],
        format: InventoryFormat,
    ) -> Result<(InventoryHeader, Vec<InventoryArchive>), ParseError> {
        let mut archives = Vec::new();
        let header = parse(input, format, |a| {
            archives.push(a);
            Ok(())
        })?;
        Ok((header, archives))
    }

    pub(super) fn json(
        input: &str,
    ) -> Result<(InventoryHeader, Vec<InventoryArchive>), ParseError> {
        collect(input.as_bytes(), InventoryFormat::Json)
    }

    pub(super) fn csv(input: &str) -> Result<Vec<InventoryArchive>, ParseError> {
        let (header, archives) = collect(input.as_bytes(), InventoryFormat::Csv)?;
        assert_eq!(header, InventoryHeader::default());
        Ok(archives)
    }

    pub(super) fn archive(id: &str, description: &str, size: u64) -> InventoryArchive {
        InventoryArchive {
            archive_id: id.to_string(),
            description: description.to_string(),
            creation_date: "2012-03-20T17:03:43Z".to_string(),
            size,
            tree_hash: "beb0fe31a1c7ca8c6c04d574ea906e3f97b31fdca7571defb5b44dca89b5af60"
                .to_string(),
        }
    }

    pub(super) const HASH: &str =
        "beb0fe31a1c7ca8c6c04d574ea906e3f97b31fdca7571defb5b44dca89b5af60";
    pub(super) const DATE: &str = "2012-03-20T17:03:43Z";

    pub(super) fn json_record(id: &str, description: &str, size: &str) -> String {
        format!(
            r#"{{"ArchiveId":"{id}","ArchiveDescription":{description},"CreationDate":"{DATE}","Size":{size},"SHA256TreeHash":"{HASH}"}}"#
        )
    }

    pub(super) fn csv_line(id: &str, description: &str, size: u64) -> String {
        format!("{id},{description},{DATE},{size},{HASH}")
    }

    pub(super) fn csv_error_line(result: Result<Vec<InventoryArchive>, ParseError>) -> u64 {
        match result {
            Err(ParseError::Csv { line, .. }) => line,
            other => panic!("expected a CSV error, got {other:?}"),
        }
    }

    pub(super) const CSV_HEADER: &str =
        "ArchiveId,ArchiveDescription,CreationDate,Size,SHA256TreeHash";

    pub(super) fn archive_strategy(
        description: &'static str,
    ) -> impl Strategy<Value = InventoryArchive> {
        (
            "[A-Za-z0-9_-]{1,138}",
            description,
            "20[0-9]{2}-[01][0-9]-[0-3][0-9]T[0-2][0-9]:[0-5][0-9]:[0-5][0-9]Z",
            any::<u64>(),
            "[0-9a-f]{64}",
        )
            .prop_map(
                |(archive_id, description, creation_date, size, tree_hash)| InventoryArchive {
                    archive_id,
                    description,
                    creation_date,
                    size,
                    tree_hash,
                },
            )
    }

    pub(super) fn parse_all(input: &[u8], format: InventoryFormat) -> Vec<InventoryArchive> {
        collect(input, format).unwrap().1
    }
}

#[cfg(test)]
mod tests {
    use super::fixtures::*;
    use super::*;
    use proptest::prelude::*;

    /// A reader that fails after yielding some bytes.
    struct Failing(&'static [u8]);

    impl Read for Failing {
        fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
            if self.0.is_empty() {
                return Err(io::Error::new(io::ErrorKind::ConnectionReset, "gone"));
            }
            let n = self.0.len().min(out.len());
            out[..n].copy_from_slice(&self.0[..n]);
            self.0 = &self.0[n..];
            Ok(n)
        }
    }

    #[test]
    fn io_errors_are_reported_as_io() {
        let cases: [(InventoryFormat, &'static [u8]); 2] = [
            (InventoryFormat::Json, b"{\"ArchiveList\":[\n"),
            (InventoryFormat::Csv, b"a1,\"open quote\n"),
        ];
        for (format, prefix) in cases {
            let result = parse(Failing(prefix), format, |_| Ok(()));
            match result {
                Err(ParseError::Io(e)) => assert_eq!(e.kind(), io::ErrorKind::ConnectionReset),
                other => panic!("{format:?}: expected an I/O error, got {other:?}"),
            }
        }
    }

    // ---- sniffing ----

    #[test]
    fn sniffing() {
        assert_eq!(sniff(b"{\"ArchiveList\":[]}"), InventoryFormat::Json);
        assert_eq!(sniff(b" \r\n\t{"), InventoryFormat::Json);
        assert_eq!(sniff(b"\xEF\xBB\xBF {"), InventoryFormat::Json);
        assert_eq!(sniff(CSV_HEADER.as_bytes()), InventoryFormat::Csv);
        assert_eq!(sniff(b"  a1,x"), InventoryFormat::Csv);
        assert_eq!(sniff(b"[]"), InventoryFormat::Csv);
        assert_eq!(sniff(b""), InventoryFormat::Csv);
        assert_eq!(sniff(b"  \n"), InventoryFormat::Csv);
    }

    #[test]
    fn parse_auto_detects_both_formats() {
        let json_doc = format!(
            r#"{{"VaultARN":"v","ArchiveList":[{}]}}"#,
            json_record("a1", r#""d""#, "1")
        );
        let csv_doc = format!("{CSV_HEADER}\n{}\n", csv_line("a1", "d", 1));
        for (doc, format) in [
            (json_doc, InventoryFormat::Json),
            (csv_doc, InventoryFormat::Csv),
        ] {
            // Leading whitespace longer than the reader's buffer, to make
            // sniffing look past the first fill.
            for lead in ["", "\n \n  ", "\u{FEFF}\n\n"] {
                let input = format!("{lead}{doc}");
                let reader = BufReader::with_capacity(2, input.as_bytes());
                let mut archives = Vec::new();
                let (found, _) = parse_auto(reader, |a| {
                    archives.push(a);
                    Ok(())
                })
                .unwrap();
                assert_eq!(found, format, "{input:?}");
                assert_eq!(archives, vec![archive("a1", "d", 1)], "{input:?}");
            }
        }
        assert_eq!(
            parse_auto(&b""[..], |_| Ok(())).unwrap().0,
            InventoryFormat::Csv
        );
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
            let _ = parse(&bytes[..], InventoryFormat::Json, |_| Ok(()));
            let _ = parse(&bytes[..], InventoryFormat::Csv, |_| Ok(()));
            let _ = parse_auto(&bytes[..], |_| Ok(()));
        }

        #[test]
        fn syntax_heavy_bytes_never_panic(
            bytes in prop::collection::vec(prop::sample::select(b"{}[]:,\"\\ \r\n0aA-.eu".to_vec()), 0..256)
        ) {
            let _ = parse(&bytes[..], InventoryFormat::Json, |_| Ok(()));
            let _ = parse(&bytes[..], InventoryFormat::Csv, |_| Ok(()));
        }
    }
}
