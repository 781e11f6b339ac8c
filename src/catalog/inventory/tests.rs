//! The import's tests: the rules of naming and reconciling, and the first import from the sort
//! giving exactly the tree the general reconciliation gives.

use super::reconcile::is_fresh;
use super::*;
use crate::catalog::{nodes, vaults, Kind, ROOT_INO};

/// The date every test inventory carries.
const INVENTORY_DATE: &str = "2026-01-02T00:00:00Z";

/// An inventory as the parser hands it over.
struct Inventory(Vec<Listed>);

fn inventory(archives: &[(&str, &str, &str)]) -> Inventory {
    Inventory(
        archives
            .iter()
            .map(|(id, desc, date)| Listed {
                archive_id: (*id).to_owned(),
                description: (*desc).to_owned(),
                creation_date: (*date).to_owned(),
                size: 5,
                tree_hash: "00".to_owned(),
            })
            .collect(),
    )
}

/// Feeds `inv` as a parser would.
fn feed(
    inv: &Inventory,
    fallback_date: Option<String>,
) -> impl FnOnce(&mut Intake) -> Result<Option<String>, ImportError> + '_ {
    move |intake| {
        for a in &inv.0 {
            intake.push(a.clone()).map_err(|_| ImportError::Stopped)?;
        }
        Ok(Some(INVENTORY_DATE.to_owned()).or(fallback_date))
    }
}

fn import(
    cat: &Catalog,
    v: u64,
    inv: &Inventory,
    fallback_date: Option<String>,
) -> Result<ImportReport, ImportError> {
    super::import(cat, v, Sharing::Exclusive, feed(inv, fallback_date))
}

fn import_shared(
    cat: &Catalog,
    v: u64,
    inv: &Inventory,
    fallback_date: Option<String>,
) -> Result<ImportReport, ImportError> {
    super::import(cat, v, Sharing::Shared, feed(inv, fallback_date))
}

fn tree(cat: &Catalog, ino: u64, prefix: &str, out: &mut Vec<String>) {
    let kids = cat.read(|c| nodes::children(c, ino, 0, 10_000)).unwrap();
    for k in kids {
        let p = format!("{prefix}{}", k.name);
        if k.kind.is_dir() {
            out.push(format!("{p}/"));
            tree(cat, k.ino, &format!("{p}/"), out);
        } else {
            out.push(p);
        }
    }
}

fn setup() -> (tempfile::TempDir, Catalog, u64) {
    let dir = tempfile::tempdir().unwrap();
    let cat = Catalog::open(dir.path()).unwrap();
    let v = cat
        .write(|tx| vaults::ensure(tx, "v", "present"))
        .unwrap()
        .ino;
    (dir, cat, v)
}

fn sorted_tree(cat: &Catalog, v: u64) -> Vec<String> {
    let mut t = Vec::new();
    tree(cat, v, "", &mut t);
    t.sort();
    t
}

#[test]
fn collisions_follow_the_rules() {
    let (_d, cat, v) = setup();
    let inv = inventory(&[
        ("id-old", "a/x", "2020-01-01T00:00:00Z"),
        ("id-new", "a/x", "2021-01-01T00:00:00Z"),
        ("id-file", "a", "2020-01-01T00:00:00Z"),
        ("id-jobs", ".jobs", "2020-01-01T00:00:00Z"),
        ("id-empty", "", "2020-01-01T00:00:00Z"),
    ]);
    let r = import(&cat, v, &inv, None).unwrap();
    assert_eq!((r.archives, r.added), (5, 5));
    assert_eq!(
        sorted_tree(&cat, v),
        vec![
            ".jobs~20200101T000000Z",
            "00undefined/",
            "00undefined/id-empty",
            "a/",
            "a/x",
            "a/x~20200101T000000Z",
            "a~20200101T000000Z",
        ]
    );
    let x = cat.read(|c| nodes::lookup(c, v, "a")).unwrap().unwrap();
    let newest = cat.read(|c| nodes::lookup(c, x.ino, "x")).unwrap().unwrap();
    assert_eq!(newest.archive_id.as_deref(), Some("id-new"));
}

#[test]
fn same_inventory_same_tree_and_refresh_renames_nothing() {
    let archives = [
        ("i1", "dup", "2020-01-01T00:00:00Z"),
        ("i2", "dup", "2020-01-01T00:00:00Z"),
        ("i3", "dup", "2019-01-01T00:00:00Z"),
        ("i4", "d/f", "2020-01-01T00:00:00Z"),
    ];
    let inv = inventory(&archives);
    let (_d1, c1, v1) = setup();
    let (_d2, c2, v2) = setup();
    import(&c1, v1, &inv, None).unwrap();
    import(&c2, v2, &inv, None).unwrap();
    assert_eq!(sorted_tree(&c1, v1), sorted_tree(&c2, v2));

    let before = sorted_tree(&c1, v1);
    let mut more = archives.to_vec();
    more.push(("i5", "dup", "2025-01-01T00:00:00Z"));
    let r = import(&c1, v1, &inventory(&more), None).unwrap();
    assert_eq!(r.added, 1);
    let after = sorted_tree(&c1, v1);
    for name in &before {
        assert!(after.contains(name), "{name} was renamed");
    }
}

#[test]
fn archives_gone_upstream_are_dropped_unless_newer() {
    let (_d, cat, v) = setup();
    import(
        &cat,
        v,
        &inventory(&[("old", "f", "2020-01-01T00:00:00Z")]),
        None,
    )
    .unwrap();
    // An upload of this mount, newer than the next inventory.
    cat.write(move |tx| {
        nodes::insert(
            tx,
            Kind::File,
            &nodes::NewNode {
                parent: v,
                name: "mine",
                vault: v,
                archive_id: Some("mine-id"),
                created_s: Some(2_000_000_000),
                ..Default::default()
            },
        )
    })
    .unwrap();
    let r = import(&cat, v, &inventory(&[]), None).unwrap();
    assert_eq!(r.removed, 1);
    assert_eq!(sorted_tree(&cat, v), vec!["mine"]);
    assert!(cat
        .read(|c| nodes::lookup(c, ROOT_INO, "v"))
        .unwrap()
        .is_some());
}

/// Every node but the root, as the tree and the archives it shows; directory times are
/// left out, being the time of the import.
fn dump(cat: &Catalog) -> Vec<String> {
    cat.read(|c| {
        let mut s = c.prepare(
            "SELECT ino, parent, name, kind, vault, size, archive_id, archive_key, tree_hash, \
             description, created_s, CASE kind WHEN 3 THEN mtime_ns END \
             FROM nodes WHERE ino != 1 ORDER BY ino",
        )?;
        let rows = s.query_map([], |r| {
            let cols: Vec<String> = (0..12)
                .map(|i| format!("{:?}", r.get_ref(i).unwrap()))
                .collect();
            Ok(cols.join(" "))
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    })
    .unwrap()
}

fn settings(route: Route, sharing: Sharing, run_budget: usize, chunk_rows: usize) -> Settings {
    Settings {
        route,
        run_budget,
        chunk_rows,
        ..Settings::new(sharing)
    }
}

fn import_as(cat: &Catalog, v: u64, inv: &Inventory, s: &Settings) -> ImportReport {
    import_with(cat, v, s, feed(inv, None)).unwrap()
}

/// Archives drawn so that paths, dates and ids collide often: the same archive listed
/// twice, a file and a directory of one name, names that look like collision suffixes,
/// reserved names and empty descriptions.
fn archives() -> impl proptest::strategy::Strategy<Value = Vec<(String, String, String)>> {
    let id = "[ijk][0-3]";
    let desc = proptest::sample::select(vec![
        "a",
        "a/x",
        "a/x/y",
        "a~20200101T000000Z",
        "a~dir/z",
        "x",
        ".jobs",
        ".lock/q",
        "",
        "b/./c",
        "/abs/a",
    ]);
    let date = proptest::sample::select(vec![
        "2019-06-01T00:00:00Z",
        "2020-01-01T00:00:00Z",
        "2020-01-01T00:00:00Z",
        "2021-03-04T05:06:07Z",
    ]);
    proptest::collection::vec((id, desc, date), 0..24).prop_map(|v| {
        v.into_iter()
            .map(|(i, d, t)| (i, d.to_owned(), t.to_owned()))
            .collect()
    })
}

fn owned_inventory(list: &[(String, String, String)]) -> Inventory {
    let refs: Vec<(&str, &str, &str)> = list
        .iter()
        .map(|(i, d, t)| (i.as_str(), d.as_str(), t.as_str()))
        .collect();
    inventory(&refs)
}

use proptest::prelude::*;

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    /// The first import straight from the sort (beside a mount or alone, with runs spilled
    /// to scratch files and several transactions) gives exactly the tree, inode numbers
    /// included, that the side table and the general reconciliation give; and so does a
    /// second, different inventory merged on top of either.
    #[test]
    fn a_first_import_from_the_sort_matches_the_general_merge(
        first in archives(),
        second in archives(),
        budget in 1usize..4000,
        chunk in 1usize..6,
    ) {
        let (_d0, general, v0) = setup();
        let side = settings(Route::SideTable, Sharing::Shared, budget, chunk);
        let first_report = import_as(&general, v0, &owned_inventory(&first), &side);
        let after_first = dump(&general);
        let second_report = import_as(&general, v0, &owned_inventory(&second), &side);
        let after_second = dump(&general);
        for sharing in [Sharing::Shared, Sharing::Exclusive] {
            let (_d, cat, v) = setup();
            prop_assert_eq!(v, v0);
            let fresh = settings(Route::Auto, sharing, budget, chunk);
            let r = import_as(&cat, v, &owned_inventory(&first), &fresh);
            prop_assert_eq!(&r, &first_report);
            prop_assert_eq!(&dump(&cat), &after_first);
            let r = import_as(&cat, v, &owned_inventory(&second), &fresh);
            prop_assert_eq!(&r, &second_report);
            prop_assert_eq!(&dump(&cat), &after_second);
        }
    }
}

#[test]
fn a_first_import_respects_local_entries_like_the_general_merge() {
    let inv = inventory(&[
        ("id-a", "a", "2020-01-01T00:00:00Z"),
        ("id-d", "d/f", "2020-01-01T00:00:00Z"),
        ("id-e", "e", "2021-01-01T00:00:00Z"),
    ]);
    // A staged file named like an archive, and a local directory named like another.
    let local = |cat: &Catalog, v: u64| {
        cat.write(move |tx| {
            nodes::insert(
                tx,
                Kind::File,
                &nodes::NewNode {
                    parent: v,
                    name: "a",
                    vault: v,
                    ..Default::default()
                },
            )?;
            nodes::insert(
                tx,
                Kind::Dir,
                &nodes::NewNode {
                    parent: v,
                    name: "e",
                    vault: v,
                    ..Default::default()
                },
            )
        })
        .unwrap();
    };
    let (_d0, general, v0) = setup();
    local(&general, v0);
    import_as(
        &general,
        v0,
        &inv,
        &settings(Route::SideTable, Sharing::Shared, 1, 2),
    );
    for sharing in [Sharing::Shared, Sharing::Exclusive] {
        let (_d, cat, v) = setup();
        local(&cat, v);
        assert!(cat.read(move |c| is_fresh(c, v)).unwrap());
        import_as(&cat, v, &inv, &settings(Route::Auto, sharing, 1, 2));
        assert_eq!(dump(&cat), dump(&general));
    }
    assert_eq!(
        sorted_tree(&general, v0),
        vec![
            "a",
            "a~20200101T000000Z",
            "d/",
            "d/f",
            "e/",
            "e~20210101T000000Z"
        ]
    );
}

#[test]
fn an_exclusive_first_import_leaves_the_archive_index_in_place() {
    let (_d, cat, v) = setup();
    let inv = inventory(&[
        ("id-1", "f", "2020-01-01T00:00:00Z"),
        ("id-1", "f", "2020-01-01T00:00:00Z"),
        ("id-2", "g", "2020-01-01T00:00:00Z"),
    ]);
    let r = import(&cat, v, &inv, None).unwrap();
    assert_eq!(
        (r.archives, r.added),
        (3, 2),
        "an archive listed twice is placed once"
    );
    cat.read(move |c| {
        let plan: String = c.query_row(
            "EXPLAIN QUERY PLAN SELECT 1 FROM nodes WHERE archive_key = 1 AND archive_id = 'x'",
            [],
            |r| r.get(3),
        )?;
        assert!(plan.contains("nodes_by_archive"), "{plan}");
        assert!(nodes::archive_in_use(c, v, "id-2")?);
        assert!(!is_fresh(c, v)?);
        Ok(())
    })
    .unwrap();
}

#[test]
fn archives_below_are_found_at_any_depth() {
    let (_d, cat, v) = setup();
    assert!(!cat.read(move |c| nodes::has_archives_below(c, v)).unwrap());
    let inv = inventory(&[("deep", "a/b/c/f", "2020-01-01T00:00:00Z")]);
    import_shared(&cat, v, &inv, None).unwrap();
    assert!(cat.read(move |c| nodes::has_archives_below(c, v)).unwrap());
    let a = cat
        .read(move |c| nodes::lookup(c, v, "a"))
        .unwrap()
        .unwrap();
    assert!(cat
        .read(move |c| nodes::has_archives_below(c, a.ino))
        .unwrap());
    assert!(!cat.read(move |c| is_fresh(c, v)).unwrap());
}

/// The archive of one of this mount's uploads, listed by an inventory taken while the upload
/// was out (its reply not yet recorded, or lost and retried, leaving a twin), is never placed
/// as a new file: the upload records it, and the next inventory deletes the twin. Seen in the
/// soak as an archive nobody deleted and a second file of the same name.
#[test]
fn an_uploads_own_archive_is_never_placed_as_a_new_file() {
    use crate::catalog::{deletes, uploads};
    let (_d, cat, v) = setup();
    let ino = cat
        .write(move |tx| {
            nodes::insert(
                tx,
                Kind::File,
                &nodes::NewNode {
                    parent: v,
                    name: "f",
                    vault: v,
                    size: 5,
                    ..Default::default()
                },
            )
        })
        .unwrap();
    let row = uploads::UploadRow {
        ino,
        gen: 1,
        vault: v,
        snapshot: "snapshots/f".into(),
        size: 5,
        description: "f".into(),
        part_size: None,
        upload_id: None,
        tree_hash: None,
        archive_id: None,
        state: uploads::UploadState::Queued,
    };
    let r = row.clone();
    cat.write(move |tx| {
        uploads::begin(tx, &r, 0)?;
        uploads::before_single(tx, ino)
    })
    .unwrap();
    let date = "2020-01-01T00:00:00Z";
    // UploadArchive is out: a first attempt whose reply was lost made "twin".
    let r = import(&cat, v, &inventory(&[("twin", "f", date)]), None).unwrap();
    assert_eq!(r.added, 0, "the twin was placed");
    assert_eq!(sorted_tree(&cat, v), vec!["f"]);

    // The retry's reply names "mine"; an inventory taken before it is recorded lists both.
    cat.write(move |tx| uploads::created(tx, ino, "mine", "00"))
        .unwrap();
    let both = inventory(&[("twin", "f", date), ("mine", "f", date)]);
    let r = import(&cat, v, &both, None).unwrap();
    assert_eq!(r.added, 0, "the upload's own archive was placed");

    // Recorded: the next inventory settles the twin as a duplicate, and places nothing.
    let r = row.clone();
    cat.write(move |tx| uploads::record_archive(tx, &r, "mine", "00", 0))
        .unwrap();
    let r = import(&cat, v, &both, None).unwrap();
    assert_eq!(r.added, 0);
    assert_eq!(sorted_tree(&cat, v), vec!["f"]);
    let f = cat.read(move |c| nodes::get(c, ino)).unwrap().unwrap();
    assert_eq!(f.archive_id.as_deref(), Some("mine"));
    let queued: Vec<_> = cat
        .read(|c| deletes::due(c, i64::MAX))
        .unwrap()
        .into_iter()
        .filter_map(|d| d.archive_id)
        .collect();
    assert_eq!(queued, vec!["twin".to_owned()]);
}

/// The exclusive first import writes its rows once, through a rollback journal, not into the
/// write-ahead log and again into the database; after it the catalog is back on its log, and
/// its readers see the whole tree.
#[test]
fn an_exclusive_first_import_bypasses_the_log_and_goes_back_to_it() {
    let (_d, cat, v) = setup();
    let list: Vec<(String, String)> = (0..4000)
        .map(|i| (format!("id-{i}"), format!("d{}/f{i}", i % 10)))
        .collect();
    let refs: Vec<(&str, &str, &str)> = list
        .iter()
        .map(|(id, path)| (id.as_str(), path.as_str(), "2020-01-01T00:00:00Z"))
        .collect();
    let report = import(&cat, v, &inventory(&refs), None).unwrap();
    assert_eq!(report.added, 4000);
    let len = |suffix: &str| {
        let mut p = cat.path().as_os_str().to_owned();
        p.push(suffix);
        std::fs::metadata(p).map_or(0, |m| m.len())
    };
    let (db, wal) = (len(""), len("-wal"));
    assert!(
        wal < db / 4,
        "the log holds {wal} bytes beside a database of {db}: the rows went through it"
    );
    assert_eq!(len("-journal"), 0, "the rollback journal was left behind");
    let mode: String = cat
        .with_connection(|c| Ok(c.query_row("PRAGMA journal_mode", [], |r| r.get(0))?))
        .unwrap();
    assert_eq!(mode, "wal");
    assert_eq!(sorted_tree(&cat, v).len(), 4010);
}
