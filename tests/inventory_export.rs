//! `glacierfs inventory export`: every name, as the mount shows it, comes back exactly from all
//! three formats (JSON, CSV, and the dtgv name-override CSV, read here by a strict RFC 4180
//! reader), with commas, quotes, spaces and non-ASCII; beside a running mount and without one;
//! one dtgv row per archive; files no archive holds left out and counted; FILE written whole,
//! private, through a rename; an unknown vault is one line and exit 1.
// A test fails by panicking, so unwrap and expect are how it says what went wrong.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use glacierfs::codec::{names, timefmt};
use serde_json::Value;
use support::emulator::Emulator;
use support::mount::{aws_env, binary, fuse_available, sync_wait, wait_until, Mount};

fn run(args: &[&str]) -> std::process::Output {
    aws_env(&mut Command::new(binary()))
        .args(args)
        .output()
        .expect("glacierfs runs")
}

/// `inventory export` of `vault` in `format` to standard output: (stdout, stderr), after
/// checking it succeeded.
fn export(cache_dir: &Path, vault: &str, format: &str) -> (String, String) {
    let out = run(&[
        "inventory",
        "export",
        "--cache-dir",
        cache_dir.to_str().unwrap(),
        "--format",
        format,
        vault,
    ]);
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(out.status.success(), "export {format}: {stderr}");
    (String::from_utf8(out.stdout).unwrap(), stderr)
}

/// A strict RFC 4180 reader: fields separated by commas, records ended by CRLF or LF, a field
/// in double quotes may hold anything with its quotes doubled. Anything else fails the test,
/// so a writer that quotes wrongly cannot pass.
fn parse_csv(text: &str) -> Vec<Vec<String>> {
    let mut records = Vec::new();
    let mut record = Vec::new();
    let mut field = String::new();
    let (mut in_quotes, mut was_quoted) = (false, false);
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        if in_quotes {
            match c {
                '"' if chars.peek() == Some(&'"') => {
                    chars.next();
                    field.push('"');
                }
                '"' => in_quotes = false,
                c => field.push(c),
            }
            continue;
        }
        match c {
            '"' => {
                assert!(
                    field.is_empty() && !was_quoted,
                    "a quote inside an unquoted field: {text:?}"
                );
                in_quotes = true;
                was_quoted = true;
            }
            ',' => {
                record.push(std::mem::take(&mut field));
                was_quoted = false;
            }
            '\r' | '\n' => {
                if c == '\r' {
                    assert_eq!(chars.next(), Some('\n'), "a CR without LF: {text:?}");
                }
                record.push(std::mem::take(&mut field));
                records.push(std::mem::take(&mut record));
                was_quoted = false;
            }
            c => {
                assert!(!was_quoted, "text after a closing quote: {text:?}");
                field.push(c);
            }
        }
    }
    assert!(!in_quotes, "an unterminated quote: {text:?}");
    assert!(
        field.is_empty() && record.is_empty(),
        "the last record has no line end: {text:?}"
    );
    records
}

#[test]
fn the_test_csv_reader_reads_rfc_4180() {
    assert_eq!(
        parse_csv("a,\"b, \"\"c\"\"\"\r\n\"x\ny\",\n"),
        [vec!["a", "b, \"c\""], vec!["x\ny", ""]]
    );
    for bad in ["a\"b\n", "\"a\"b\n", "\"open\n", "no end"] {
        assert!(
            std::panic::catch_unwind(|| parse_csv(bad)).is_err(),
            "{bad:?} was accepted"
        );
    }
}

/// What one exported file must say; `date` checks its creation date.
struct Want {
    archive_id: String,
    size: u64,
    tree_hash: String,
    description: String,
    date: DateWant,
}

enum DateWant {
    /// Exactly this (an imported inventory's own date).
    Exactly(String),
    /// Glacier's form, within these Unix seconds (an upload: the catalog records when it
    /// completed).
    Between(i64, i64),
}

impl DateWant {
    fn check(&self, path: &str, got: &str) {
        match self {
            DateWant::Exactly(want) => assert_eq!(got, want, "{path}: creation date"),
            DateWant::Between(from, to) => {
                // `YYYY-MM-DDTHH:MM:SSZ`, whole seconds, as Glacier's inventories write it.
                assert!(
                    got.len() == 20 && got.ends_with('Z') && !got.contains('.'),
                    "{path}: creation date {got:?} is not in Glacier's form"
                );
                let (secs, _) = timefmt::parse_iso8601(got).expect("an ISO 8601 date");
                assert!(
                    (*from..=*to).contains(&secs),
                    "{path}: creation date {got} is not between {from} and {to}"
                );
            }
        }
    }
}

/// Runs the three formats against `want` (path -> file) and returns the JSON run's stderr.
/// Every path and archive id must come back exactly, in path byte order; dtgv has one row
/// per archive, under the first of its paths in byte order.
fn check_exports(cache_dir: &Path, vault: &str, want: &BTreeMap<String, Want>) -> String {
    // A BTreeMap of Strings iterates in byte order, which is the order promised.
    let paths: Vec<&String> = want.keys().collect();

    let (json, stderr) = export(cache_dir, vault, "json");
    let doc: Value = serde_json::from_str(&json).unwrap_or_else(|e| panic!("{e}: {json}"));
    assert_eq!(doc["vault"], vault);
    let files = doc["files"].as_array().expect("a files array");
    assert_eq!(
        files
            .iter()
            .map(|f| f["path"].as_str().unwrap())
            .collect::<Vec<_>>(),
        paths,
        "JSON paths"
    );
    for f in files {
        let path = f["path"].as_str().unwrap();
        let w = &want[path];
        assert_eq!(f["archive_id"], w.archive_id.as_str(), "{path}");
        assert_eq!(f["size"], w.size, "{path}");
        assert_eq!(f["tree_hash"], w.tree_hash.as_str(), "{path}");
        assert_eq!(f["description"], w.description.as_str(), "{path}");
        w.date.check(path, f["creation_date"].as_str().unwrap());
        assert_eq!(f.as_object().unwrap().len(), 6, "{path}: {f}");
    }

    let (csv, _) = export(cache_dir, vault, "csv");
    assert!(
        !csv.replace("\r\n", "").contains('\n'),
        "CSV records end in CRLF"
    );
    let records = parse_csv(&csv);
    assert_eq!(
        records[0],
        [
            "Path",
            "ArchiveId",
            "Size",
            "SHA256TreeHash",
            "CreationDate",
            "ArchiveDescription"
        ]
    );
    assert_eq!(
        records[1..].iter().map(|r| &r[0]).collect::<Vec<_>>(),
        paths,
        "CSV paths"
    );
    for r in &records[1..] {
        let w = &want[&r[0]];
        assert_eq!(r.len(), 6, "{r:?}");
        assert_eq!(
            (&r[1], &r[2], &r[3], &r[5]),
            (
                &w.archive_id,
                &w.size.to_string(),
                &w.tree_hash,
                &w.description
            ),
            "{}",
            r[0]
        );
        w.date.check(&r[0], &r[4]);
    }

    let (dtgv, _) = export(cache_dir, vault, "dtgv");
    assert!(
        !dtgv.starts_with('\u{feff}'),
        "no byte-order mark before the header"
    );
    let records = parse_csv(&dtgv);
    assert_eq!(records[0], ["GlacierArchiveID", "FileName"]);
    let mut first_path: BTreeMap<&str, &str> = BTreeMap::new();
    for (path, w) in want {
        // Visited in byte order: the first path seen for an archive is its first.
        first_path.entry(w.archive_id.as_str()).or_insert(path);
    }
    let mut rows: Vec<(&str, &str)> = records[1..]
        .iter()
        .map(|r| {
            assert_eq!(r.len(), 2, "{r:?}");
            (r[0].as_str(), r[1].as_str())
        })
        .collect();
    let ids: BTreeSet<&str> = rows.iter().map(|r| r.0).collect();
    assert_eq!(ids.len(), rows.len(), "one dtgv row per archive: {rows:?}");
    rows.sort();
    assert_eq!(
        rows,
        first_path.into_iter().collect::<Vec<_>>(),
        "dtgv rows"
    );
    stderr
}

/// The names a test writes: commas, double quotes, spaces at either end, non-ASCII, nested
/// directories. (No line breaks: the mount refuses control characters in a name, and the
/// inventory import turns them into `_`. No backslash: the mount refuses a name that would
/// not read back the same from its description.)
const NAMES: &[&str] = &[
    "plain.txt",
    "comma, here.txt",
    "say \"hi\".txt",
    "  spaced name .txt",
    "é.txt",
    "日本/資料 1.txt",
    "a/b/c/deep, \"mixed\" é 日本.txt",
    "a/b sibling.txt",
];

#[test]
fn every_format_round_trips_the_names_a_running_mount_shows() {
    if !fuse_available() {
        return;
    }
    let started = now_secs();
    let emu = Emulator::start();
    emu.create_vault("v");
    let cache = tempfile::tempdir().unwrap();
    let cache_dir = cache.path().join("cache");
    // Uploads only on `sync`, so what is staged stays staged while the test looks.
    let hold = ["--write-back-delay", "1h"];
    let m = Mount::start(&emu.endpoint(), &cache_dir, &hold);
    let vault = m.path("v");
    assert!(
        wait_until(Duration::from_secs(30), || vault.is_dir()),
        "the vault never showed: {}",
        m.log_text()
    );
    let write = |rel: &str, data: &[u8]| {
        let p = vault.join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(&p, data).unwrap_or_else(|e| panic!("{rel}: {e}"));
    };
    for name in NAMES.iter().chain(&["changing.txt", "before.txt"]) {
        write(name, format!("the bytes of {name}").as_bytes());
    }
    write("empty", b"");
    assert!(
        std::fs::write(vault.join("new\nline"), b"x").is_err(),
        "the mount takes no line break in a name"
    );
    sync_wait(&vault);
    // Renamed once archived: the catalog has the new name, the archive the old description.
    std::fs::rename(vault.join("before.txt"), vault.join("a/after, renamed.txt")).unwrap();
    // Changed since its upload: the archive is an older version, so it is left out.
    std::fs::OpenOptions::new()
        .append(true)
        .open(vault.join("changing.txt"))
        .and_then(|mut f| std::io::Write::write_all(&mut f, b" and more"))
        .unwrap();
    write("later/staged, \"new\".txt", b"not uploaded");

    let want = mount_view(&emu, &vault, started);
    let mut expected: BTreeSet<&str> = NAMES.iter().copied().collect();
    expected.insert("a/after, renamed.txt");
    assert_eq!(
        want.keys().map(String::as_str).collect::<BTreeSet<_>>(),
        expected,
        "the mount shows the names written, archived"
    );
    // While the mount runs (it holds the cache lock; the export needs none).
    let stderr = check_exports(&cache_dir, "v", &want);
    let notes: Vec<&str> = stderr.lines().collect();
    assert_eq!(
        notes,
        [
            "1 staged file has no archive yet and is not listed",
            "1 file has changes not uploaded yet and is not listed (`glacierfs sync --wait` \
             uploads them)",
            "1 empty file has no archive and is not listed"
        ]
    );
    let renamed = &want["a/after, renamed.txt"];
    assert_eq!(
        names::decode(&renamed.description).path,
        "before.txt",
        "the description is the archive's own"
    );
    drop(m);

    // Two files sharing one archive, as an endpoint that names archives by content gives
    // them (moto does; the emulator gives each upload its own id), put in the catalog with
    // no mount running. The twin's path sorts before the original's, so dtgv must name the
    // archive by the twin.
    let original = &want["plain.txt"];
    {
        use glacierfs::catalog::nodes::{self, Kind, NewNode};
        use glacierfs::catalog::{vaults, Catalog};
        let catalog = Catalog::open(&cache_dir).unwrap();
        let (id, hash, desc) = (
            original.archive_id.clone(),
            original.tree_hash.clone(),
            original.description.clone(),
        );
        let size = original.size;
        catalog
            .write(move |tx| {
                let v = vaults::by_name(tx, "v")?.unwrap().ino;
                let a = nodes::lookup(tx, v, "a")?.unwrap().ino;
                nodes::insert(
                    tx,
                    Kind::File,
                    &NewNode {
                        parent: a,
                        name: "twin, of plain.txt",
                        vault: v,
                        size,
                        mtime_ns: 1,
                        archive_id: Some(&id),
                        tree_hash: Some(&hash),
                        description: Some(&desc),
                        created_s: Some(now_secs()),
                        ..Default::default()
                    },
                )?;
                Ok(())
            })
            .unwrap();
        catalog.close();
    }
    let m = Mount::start(&emu.endpoint(), &cache_dir, &hold);
    let vault = m.path("v");
    assert!(wait_until(Duration::from_secs(30), || vault.is_dir()));
    let want = mount_view(&emu, &vault, started);
    assert_eq!(
        want["a/twin, of plain.txt"].archive_id, want["plain.txt"].archive_id,
        "the mount shows both files of the shared archive"
    );
    check_exports(&cache_dir, "v", &want);
    let (dtgv, _) = export(&cache_dir, "v", "dtgv");
    let rows = parse_csv(&dtgv);
    let named: Vec<&str> = rows
        .iter()
        .filter(|r| r[0] == original.archive_id)
        .map(|r| r[1].as_str())
        .collect();
    assert_eq!(named, ["a/twin, of plain.txt"]);
}

/// The files the mount shows under `vault` whose archive holds their current content, with
/// what the mount and the emulator say of them.
fn mount_view(emu: &Emulator, vault: &Path, started: i64) -> BTreeMap<String, Want> {
    let archives: BTreeMap<String, support::emulator::ArchiveInfo> = emu
        .archives("v")
        .into_iter()
        .map(|a| (a.id.clone(), a))
        .collect();
    let mut out = BTreeMap::new();
    for (rel, seen) in support::walk(vault) {
        let Some(seen) = seen else { continue };
        let p = vault.join(&rel);
        let state = support::xattr(&p, "user.glacier.state").unwrap();
        let Ok(archive_id) = support::xattr(&p, "user.glacier.archive_id") else {
            continue;
        };
        if state == "staged" || state == "uploading" {
            continue;
        }
        let in_vault = &archives[&archive_id];
        assert_eq!(in_vault.size, seen.size, "{rel}");
        let tree_hash = support::xattr(&p, "user.glacier.tree_hash").unwrap();
        assert_eq!(tree_hash, in_vault.tree_hash, "{rel}");
        let description = support::xattr(&p, "user.glacier.description").unwrap();
        assert_eq!(description, in_vault.description, "{rel}");
        out.insert(
            rel,
            Want {
                archive_id,
                size: seen.size,
                tree_hash,
                description,
                date: DateWant::Between(started, now_secs()),
            },
        );
    }
    out
}

fn now_secs() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// An inventory taken in with `inventory import`, no mount ever started: names from mt2
/// descriptions (non-ASCII) and raw ones (commas, quotes), two archives that want one name,
/// and a reserved name, come back exactly as the catalog placed them.
#[test]
fn an_imported_inventory_exports_without_a_mount() {
    let tmp = tempfile::tempdir().unwrap();
    let cache_dir = tmp.path().join("cache");
    let hash = |i: usize| format!("{i:064x}");
    // (id, description, date, size)
    let mut archives: Vec<(String, String, String, u64)> = NAMES
        .iter()
        .enumerate()
        .map(|(i, name)| {
            (
                format!("id-mt2-{i}"),
                names::encode_mt2(name, 1_500_000_000),
                "2019-05-01T10:00:00Z".to_owned(),
                100 + i as u64,
            )
        })
        .collect();
    for (id, desc, date) in [
        (
            "id-raw-1",
            "reports/2019, final \"v2\".pdf",
            "2019-06-01T00:00:00Z",
        ),
        ("id-dup-1", "dup, twice.txt", "2020-01-01T00:00:00Z"),
        ("id-dup-2", "dup, twice.txt", "2021-02-03T04:05:06Z"),
        ("id-reserved", ".jobs", "2022-01-01T00:00:00Z"),
    ] {
        archives.push((id.into(), desc.into(), date.into(), 7));
    }
    let list: Vec<Value> = archives
        .iter()
        .enumerate()
        .map(|(i, (id, desc, date, size))| {
            serde_json::json!({
                "ArchiveId": id, "ArchiveDescription": desc, "CreationDate": date,
                "Size": size, "SHA256TreeHash": hash(i),
            })
        })
        .collect();
    let inventory = tmp.path().join("inventory.json");
    std::fs::write(
        &inventory,
        serde_json::json!({
            "VaultARN": "arn:aws:glacier:us-east-1:012345678901:vaults/v",
            "InventoryDate": "2023-01-01T00:00:00Z",
            "ArchiveList": list,
        })
        .to_string(),
    )
    .unwrap();
    let out = run(&[
        "inventory",
        "import",
        "--cache-dir",
        cache_dir.to_str().unwrap(),
        "v",
        inventory.to_str().unwrap(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // Where each archive must be: its decoded path, or the collision name the catalog gives
    // the one that finds its name taken (`~` and its creation date).
    let exported = export(&cache_dir, "v", "json").0;
    let doc: Value = serde_json::from_str(&exported).unwrap();
    let placed: BTreeMap<&str, &str> = doc["files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| {
            (
                f["archive_id"].as_str().unwrap(),
                f["path"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(placed.len(), archives.len(), "{exported}");
    let mut want = BTreeMap::new();
    for (i, (id, desc, date, size)) in archives.iter().enumerate() {
        let decoded = names::archive_path(desc, id).0.join("/");
        let secs = timefmt::parse_iso8601(date).unwrap().0;
        let path = placed[id.as_str()];
        assert!(
            path == decoded || path == names::suffixed(&decoded, secs),
            "{id}: {path:?} is neither {decoded:?} nor its collision name"
        );
        want.insert(
            path.to_owned(),
            Want {
                archive_id: id.clone(),
                size: *size,
                tree_hash: hash(i),
                description: desc.clone(),
                date: DateWant::Exactly(date.clone()),
            },
        );
    }
    for name in NAMES {
        assert_eq!(placed[&*want[*name].archive_id], *name);
    }
    assert_ne!(
        placed["id-dup-1"], placed["id-dup-2"],
        "one name, two files"
    );
    assert_ne!(
        placed["id-reserved"], ".jobs",
        "a control file's name is not an archive's"
    );
    let stderr = check_exports(&cache_dir, "v", &want);
    assert_eq!(stderr, "", "nothing left out, nothing to say");
}

#[test]
fn a_file_is_written_whole_and_private_and_an_unknown_vault_is_one_line() {
    let tmp = tempfile::tempdir().unwrap();
    let cache_dir = tmp.path().join("cache");
    let inventory = tmp.path().join("inventory.csv");
    std::fs::write(
        &inventory,
        format!(
            "ArchiveId,ArchiveDescription,CreationDate,Size,SHA256TreeHash\n\
             id-one,\"a, b.txt\",2019-05-01T10:00:00Z,12,{}\n",
            "c".repeat(64)
        ),
    )
    .unwrap();
    let import = run(&[
        "inventory",
        "import",
        "--cache-dir",
        cache_dir.to_str().unwrap(),
        "v",
        inventory.to_str().unwrap(),
    ]);
    assert!(import.status.success());
    let cache = cache_dir.to_str().unwrap();
    let out_dir = tmp.path().join("out");
    std::fs::create_dir(&out_dir).unwrap();
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    let leftovers = || -> Vec<String> {
        std::fs::read_dir(&out_dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with('.'))
            .collect()
    };

    for format in ["json", "csv", "dtgv"] {
        let file = out_dir.join(format!("v.{format}"));
        let out = run(&[
            "inventory",
            "export",
            "--cache-dir",
            cache,
            "--format",
            format,
            "v",
            file.to_str().unwrap(),
        ]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(out.stdout.is_empty(), "FILE given: nothing on stdout");
        let (stdout, _) = export(&cache_dir, "v", format);
        assert_eq!(std::fs::read_to_string(&file).unwrap(), stdout, "{format}");
        assert!(stdout.contains("a, b.txt"), "{stdout}");
        assert_eq!(mode(&file), 0o600, "{format}: a new file is private");
    }

    // An existing file keeps its mode and is replaced by a rename, never written in place.
    let file = out_dir.join("existing.csv");
    std::fs::write(&file, "old content\n").unwrap();
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o640)).unwrap();
    let before = std::fs::metadata(&file).unwrap().ino();
    let held = std::fs::File::open(&file).unwrap();
    let out = run(&[
        "inventory",
        "export",
        "--cache-dir",
        cache,
        "--format",
        "csv",
        "v",
        file.to_str().unwrap(),
    ]);
    assert!(out.status.success());
    assert_eq!(mode(&file), 0o640);
    assert_ne!(
        std::fs::metadata(&file).unwrap().ino(),
        before,
        "renamed over"
    );
    let old = std::io::read_to_string(held).unwrap();
    assert_eq!(
        old, "old content\n",
        "a reader of the old file sees it whole"
    );
    assert!(std::fs::read_to_string(&file)
        .unwrap()
        .starts_with("Path,ArchiveId"));
    assert!(leftovers().is_empty(), "{:?}", leftovers());

    // An unknown vault: one line naming it and what to do, exit 1, FILE untouched.
    let written = std::fs::read(&file).unwrap();
    for target in [None, Some(file.to_str().unwrap())] {
        let mut args = vec!["inventory", "export", "--cache-dir", cache, "nosuch-vault"];
        args.extend(target);
        let out = run(&args);
        assert_eq!(out.status.code(), Some(1));
        assert!(out.stdout.is_empty());
        let stderr = String::from_utf8(out.stderr).unwrap();
        assert_eq!(stderr.lines().count(), 1, "{stderr}");
        assert!(stderr.contains("\"nosuch-vault\""), "{stderr}");
        assert!(stderr.contains("ls "), "{stderr}");
        assert!(stderr.contains("inventory import"), "{stderr}");
    }
    assert_eq!(std::fs::read(&file).unwrap(), written);
    assert!(leftovers().is_empty(), "{:?}", leftovers());

    // A cache directory with no catalog says so, and creates nothing.
    let empty = tmp.path().join("no-catalog");
    std::fs::create_dir(&empty).unwrap();
    let out = run(&[
        "inventory",
        "export",
        "--cache-dir",
        empty.to_str().unwrap(),
        "v",
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(String::from_utf8_lossy(&out.stderr).lines().count(), 1);
    assert_eq!(std::fs::read_dir(&empty).unwrap().count(), 0);
}
