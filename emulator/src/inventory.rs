//! Renders an inventory snapshot as a job's output, in JSON or CSV, applying the job's
//! StartDate (inclusive), EndDate (exclusive), Limit and Marker.

use serde_json::json;

use super::state::{Format, InventoryFilter, Snapshot};
use super::util::{encode_marker, iso_secs};

pub(crate) const MARKER_KIND: &str = "inv";

/// Returns the output bytes and, when `Limit` cut the listing short, the marker of the next page.
pub(crate) fn render(
    snap: &Snapshot,
    vault_arn: &str,
    format: Format,
    filter: &InventoryFilter,
    crlf: bool,
) -> (Vec<u8>, Option<String>) {
    let in_window = |created: i64| {
        filter.start.as_ref().is_none_or(|(_, s)| created >= *s)
            && filter.end.as_ref().is_none_or(|(_, e)| created < *e)
    };
    let mut selected = snap
        .archives
        .iter()
        .filter(|a| in_window(a.created_ms))
        .filter(|a| filter.marker.is_none_or(|pos| (a.created_ms, a.seq) >= pos));
    let limit = filter.limit.as_ref().map_or(usize::MAX, |(_, n)| *n);
    let page: Vec<_> = selected.by_ref().take(limit).collect();
    let next_marker = selected
        .next()
        .map(|a| encode_marker(MARKER_KIND, &[a.created_ms, a.seq as i64]));

    let bytes = match format {
        Format::Json => {
            let list: Vec<_> = page
                .iter()
                .map(|a| {
                    json!({
                        "ArchiveId": a.id,
                        "ArchiveDescription": a.description,
                        "CreationDate": iso_secs(a.created_ms),
                        "Size": a.size(),
                        "SHA256TreeHash": hex::encode(a.tree_hash),
                    })
                })
                .collect();
            let doc = json!({
                "VaultARN": vault_arn,
                "InventoryDate": iso_secs(snap.date_ms),
                "ArchiveList": list,
            });
            serde_json::to_vec(&doc).expect("a JSON value serializes")
        }
        Format::Csv => {
            let eol = if crlf { "\r\n" } else { "\n" };
            let mut out =
                format!("ArchiveId,ArchiveDescription,CreationDate,Size,SHA256TreeHash{eol}");
            for a in &page {
                out.push_str(&format!(
                    "{},{},{},{},{}{eol}",
                    csv_field(&a.id),
                    csv_field(&a.description),
                    iso_secs(a.created_ms),
                    a.size(),
                    hex::encode(a.tree_hash)
                ));
            }
            out.into_bytes()
        }
    };
    (bytes, next_marker)
}

/// Glacier's CSV quoting: a field with `,` or `"` is double-quoted and an inner `"` is written
/// `\"`; backslashes are left alone, which makes the format ambiguous, as documented.
fn csv_field(s: &str) -> String {
    if s.contains([',', '"']) {
        format!("\"{}\"", s.replace('"', "\\\""))
    } else {
        s.to_string()
    }
}
