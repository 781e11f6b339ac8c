//! Merging an inventory file into a vault's catalog: the parser ([`super::parse`]) feeds the
//! catalog's import ([`crate::catalog::inventory`]) as it goes, so the archive list is never
//! held whole. Parsing runs on the calling thread, taking the archives in on another.

use std::io::BufRead;

use super::parse::{self, InventoryArchive};
use super::InventoryError;
use crate::catalog::inventory::{self as import, Listed};
use crate::catalog::Catalog;

pub use crate::catalog::inventory::{ImportReport, Sharing};

/// Parses an inventory (JSON or CSV, detected) and merges it into `vault`, for a catalog that
/// nothing else writes to meanwhile (see [`Sharing::Exclusive`]); [`import_shared`] is for a
/// mounted file system.
/// `fallback_date` stands in for the inventory's date when the file does not carry one (CSV).
pub fn import(
    catalog: &Catalog,
    vault: u64,
    reader: impl BufRead,
    fallback_date: Option<String>,
) -> Result<ImportReport, InventoryError> {
    import_as(catalog, vault, reader, fallback_date, Sharing::Exclusive)
}

/// [`import`] beside a mounted file system (see [`Sharing::Shared`]).
pub fn import_shared(
    catalog: &Catalog,
    vault: u64,
    reader: impl BufRead,
    fallback_date: Option<String>,
) -> Result<ImportReport, InventoryError> {
    import_as(catalog, vault, reader, fallback_date, Sharing::Shared)
}

fn import_as(
    catalog: &Catalog,
    vault: u64,
    reader: impl BufRead,
    fallback_date: Option<String>,
    sharing: Sharing,
) -> Result<ImportReport, InventoryError> {
    import::import(catalog, vault, sharing, |intake| {
        let (_, header) = parse::parse_auto(reader, |a| Ok(intake.push(a.into())?))?;
        Ok(header.inventory_date.or(fallback_date))
    })
}

impl From<InventoryArchive> for Listed {
    fn from(a: InventoryArchive) -> Listed {
        Listed {
            archive_id: a.archive_id,
            description: a.description,
            creation_date: a.creation_date,
            size: a.size,
            tree_hash: a.tree_hash,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::{nodes, vaults};

    fn setup() -> (tempfile::TempDir, Catalog, u64) {
        let dir = tempfile::tempdir().unwrap();
        let cat = Catalog::open(dir.path()).unwrap();
        let v = cat
            .write(|tx| vaults::ensure(tx, "v", "present"))
            .unwrap()
            .ino;
        (dir, cat, v)
    }

    #[test]
    fn a_parsed_inventory_is_merged_with_its_date() {
        let (_d, cat, v) = setup();
        let json = r#"{"InventoryDate":"2026-01-02T00:00:00Z","ArchiveList":[
            {"ArchiveId":"id-1","ArchiveDescription":"a/f","CreationDate":"2020-01-01T00:00:00Z",
             "Size":5,"SHA256TreeHash":"00"}]}"#;
        let r = import_shared(&cat, v, json.as_bytes(), None).unwrap();
        assert_eq!((r.archives, r.added, r.removed), (1, 1, 0));
        assert_eq!(r.inventory_date.as_deref(), Some("2026-01-02T00:00:00Z"));
        let a = cat
            .read(move |c| nodes::lookup(c, v, "a"))
            .unwrap()
            .unwrap();
        assert!(cat
            .read(move |c| nodes::lookup(c, a.ino, "f"))
            .unwrap()
            .is_some());
    }

    #[test]
    fn a_csv_inventory_takes_the_fallback_date_and_a_bad_one_merges_nothing() {
        let (_d, cat, v) = setup();
        let h = "0".repeat(64);
        let csv = format!("id-1,f,2020-01-01T00:00:00Z,5,{h}\n");
        let r = import(&cat, v, csv.as_bytes(), Some("2026-01-01T00:00:00Z".into())).unwrap();
        assert_eq!(r.inventory_date.as_deref(), Some("2026-01-01T00:00:00Z"));
        let bad = format!("id-2,g,2020-01-01T00:00:00Z,5,{h}\nid-3,h,2020\n");
        let e = import(&cat, v, bad.as_bytes(), None).unwrap_err();
        assert!(matches!(e, InventoryError::Parse(_)), "{e}");
        assert!(cat
            .read(move |c| nodes::lookup(c, v, "g"))
            .unwrap()
            .is_none());
    }
}
