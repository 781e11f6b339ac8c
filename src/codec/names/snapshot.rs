//! The description of a namespace snapshot archive: `glacierfs-snapshot v1 <vault> <time>`,
//! the time as `YYYYMMDDTHHMMSSZ`. Recognising it is what keeps a snapshot from ever becoming a
//! file: the inventory import, the catalog rebuild and the upload path all ask [`parse`] first.

use crate::codec::timefmt;

/// What every snapshot description starts with.
const PREFIX: &str = "glacierfs-snapshot ";

/// A snapshot's description: which vault it is of and when it was taken.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapshotName {
    pub version: u32,
    pub vault: String,
    pub taken_s: i64,
}

/// The description of version 1 of a snapshot of `vault` taken at `taken_s`.
pub fn describe(vault: &str, taken_s: i64) -> String {
    format!("{PREFIX}v1 {vault} {}", timefmt::format_compact(taken_s))
}

/// Whether a description is a snapshot's, any version: such an archive is never a file, even
/// when this build cannot read its version.
pub fn is_snapshot(description: &str) -> bool {
    description.starts_with(PREFIX)
}

/// The vault and time a snapshot description names; None when it is not one this build can
/// read (see [`is_snapshot`] for the question whether it is a snapshot at all).
pub fn parse(description: &str) -> Option<SnapshotName> {
    let rest = description.strip_prefix(PREFIX)?;
    let mut fields = rest.split(' ');
    let version = fields.next()?.strip_prefix('v')?.parse().ok()?;
    let vault = fields.next()?;
    let taken_s = timefmt::parse_compact(fields.next()?)?;
    if fields.next().is_some() || vault.is_empty() || version != 1 {
        return None;
    }
    Some(SnapshotName {
        version,
        vault: vault.to_owned(),
        taken_s,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn descriptions_round_trip() {
        let d = describe("photos-2024", 1_700_000_000);
        assert_eq!(d, "glacierfs-snapshot v1 photos-2024 20231114T221320Z");
        assert!(is_snapshot(&d));
        assert_eq!(
            parse(&d),
            Some(SnapshotName {
                version: 1,
                vault: "photos-2024".into(),
                taken_s: 1_700_000_000
            })
        );
    }

    #[test]
    fn other_descriptions_are_not_snapshots() {
        for d in [
            "",
            "glacierfs-snapshot",
            "glacierfs-snapshot v1 v",
            "glacierfs-snapshot v1 v 2023",
            "glacierfs-snapshot v1 v 20231114T221320Z extra",
            "mt2 abc 20231114T221320Z",
        ] {
            assert_eq!(parse(d), None, "{d:?}");
        }
        assert!(!is_snapshot("mt2 abc 20231114T221320Z"));
        // A later version is still a snapshot (never a file), though not one to read.
        assert!(is_snapshot("glacierfs-snapshot v2 v 20231114T221320Z"));
        assert_eq!(parse("glacierfs-snapshot v2 v 20231114T221320Z"), None);
    }
}
