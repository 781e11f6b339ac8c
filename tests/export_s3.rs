//! `glacierfs export PATH s3://BUCKET/PREFIX` through a real mount, with the vault in the
//! Glacier emulator: against moto's S3 server (an S3 nobody on this project wrote) for the
//! whole of a 200-archive vault, and against the emulator's own S3 for what needs counting or
//! timing (requests made, memory held, kills at exact moments).
//!
//! Each export runs as a child process with its journal under a temporary XDG_STATE_HOME.
// A test fails by panicking, so unwrap and expect are how it says what went wrong.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::fs::File;
use std::time::{SystemTime, UNIX_EPOCH};

use support::export::{pattern, plain, Archive, Export, Vault, MIB, VAULT};
use support::mount::fuse_available;
use support::s3::Bucket;
use support::{walk, xattr};

fn moto_endpoint() -> Option<String> {
    match std::env::var("GLACIERFS_MOTO_ENDPOINT") {
        Ok(e) if !e.is_empty() => Some(e),
        _ => {
            assert!(
                std::env::var("CI").as_deref() != Ok("true"),
                "GLACIERFS_MOTO_ENDPOINT is not set: run the tests through scripts/test.sh"
            );
            eprintln!("skipping: GLACIERFS_MOTO_ENDPOINT is not set (scripts/test.sh sets it)");
            None
        }
    }
}

/// A bucket name no other test uses (moto is shared by all of them).
fn unique_bucket(prefix: &str) -> String {
    let n = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!("{prefix}-{}-{}", std::process::id(), n % 1_000_000_000)
}

/// What each object must be: the file's bytes and what the mount says of it.
struct Expected {
    data: Vec<u8>,
    metadata: BTreeMap<String, String>,
}

/// The mount's view of the vault, as objects under `prefix/`.
fn expected_objects(vault: &Vault, prefix: &str) -> BTreeMap<String, Expected> {
    let root = vault.root();
    let data = vault.expected();
    let mut out = BTreeMap::new();
    for (rel, seen) in walk(&root) {
        let Some(seen) = seen else { continue };
        let path = root.join(&rel);
        let mut metadata = BTreeMap::new();
        metadata.insert("mtime".to_owned(), seen.mtime.to_string());
        metadata.insert("glacier-vault".to_owned(), VAULT.to_owned());
        for (attr, name) in [
            ("archive_id", "glacier-archive-id"),
            ("tree_hash", "glacier-tree-hash"),
            ("creation_date", "glacier-creation-date"),
            ("description", "glacier-description"),
        ] {
            if let Ok(v) = xattr(&path, &format!("user.glacier.{attr}")) {
                metadata.insert(name.to_owned(), v);
            }
        }
        if seen.size == 0 {
            // An empty file has no archive; its object carries the empty tree hash.
            metadata.insert(
                "glacier-tree-hash".to_owned(),
                glacierfs::codec::treehash::to_hex(&glacierfs::codec::treehash::tree_hash(&[])),
            );
        }
        out.insert(
            format!("{prefix}/{rel}"),
            Expected {
                data: data[&rel].clone(),
                metadata,
            },
        );
    }
    out
}

/// Every object is exactly the mount's file: key, bytes, class and metadata.
fn assert_bucket_is_the_mount(bucket: &Bucket, expected: &BTreeMap<String, Expected>, class: &str) {
    let objects = bucket.objects();
    let keys: Vec<&String> = objects.keys().collect();
    let want: Vec<&String> = expected.keys().collect();
    assert_eq!(keys, want, "the bucket's keys are the mount's paths");
    for (key, e) in expected {
        let o = &objects[key];
        assert_eq!(o.size, e.data.len() as u64, "{key}");
        assert_eq!(o.storage_class, class, "{key}");
        assert_eq!(o.metadata, e.metadata, "{key}");
        assert!(
            bucket.get(key) == e.data,
            "{key}: the object's bytes differ"
        );
    }
    assert_eq!(bucket.open_uploads(), vec![], "no multipart upload is left");
}

/// 200 archives from 1 B to 9 MiB, nested, non-ASCII and colliding names, identical
/// contents in two archives, and an empty file.
fn two_hundred_archives() -> Vec<Archive> {
    (0..200usize)
        .map(|i| {
            let size = match i {
                0 => 1,
                1 => 9 * MIB + 11, // two parts
                2 => 8 * MIB,      // exactly one part: one PutObject
                3 => 17 * MIB + 5, // three parts
                _ if i % 40 == 0 => MIB + i,
                _ => 1 + (i * 7919) % 30_000,
            };
            let data = match i {
                11 => pattern(1 + (10 * 7919) % 30_000, 10), // the same bytes as archive 10
                _ => pattern(size, i as u32),
            };
            let k = i as i64;
            match i % 8 {
                0 => plain(&format!("photos/été/日本/{i}.jpg"), data, k),
                1 => plain(&format!("same/name{}.txt", i % 3), data, k), // collisions
                2 => plain(&format!("a b/c,d/\"q\" {i}.bin"), data, k),
                _ => plain(&format!("d{}/s{}/f{i}.bin", i % 5, i % 3), data, k),
            }
        })
        .collect()
}

#[test]
fn a_vault_of_200_archives_lands_in_moto_s3_exactly_as_the_mount_shows_it() {
    let Some(moto) = moto_endpoint() else { return };
    if !fuse_available() {
        return;
    }
    let vault = Vault::new(&two_hundred_archives());
    File::create(vault.root().join("photos/empty.txt")).unwrap();
    let bucket = Bucket::create(&moto, &unique_bucket("export"));
    let expected = expected_objects(&vault, "backup/2024");
    assert_eq!(expected.len(), 201);

    let state = tempfile::tempdir().unwrap();
    let dest = format!("s3://{}/backup/2024/", bucket.name);
    let args = [
        "--json",
        "--storage-class",
        "STANDARD_IA",
        "--s3-endpoint-url",
        moto.as_str(),
    ];
    let env = [("XDG_STATE_HOME", state.path().as_os_str())];
    let mut export = Export::start_env(&vault, &dest, &args, &env);
    let status = export.drive(&vault.emu, |_| {});
    assert!(status.success(), "export failed: {}", export.stderr());
    let s = export.summary();
    assert_eq!(s["status"], "complete", "{s}");
    assert_eq!(s["files_done"], 201, "{s}");
    assert_eq!(s["jobs_started"], 200, "{s}");
    assert_eq!(s["empty"], 1, "{s}");
    assert_bucket_is_the_mount(&bucket, &expected, "STANDARD_IA");
    assert_journal_gone(state.path().as_os_str());

    // The default class, with another prefix: the archives' jobs are reused, not paid again.
    let dest = format!("s3://{}/deep", bucket.name);
    let args = ["--json", "--s3-endpoint-url", moto.as_str()];
    let mut again = Export::start_env(&vault, &dest, &args, &env);
    assert!(
        again.drive(&vault.emu, |_| {}).success(),
        "{}",
        again.stderr()
    );
    let s = again.summary();
    assert_eq!(
        (s["jobs_started"].as_u64(), s["jobs_reused"].as_u64()),
        (Some(0), Some(200)),
        "{s}"
    );
    let deep = bucket.objects();
    let under_deep: Vec<_> = deep
        .iter()
        .filter(|(k, _)| k.starts_with("deep/"))
        .collect();
    assert_eq!(under_deep.len(), 201);
    assert!(under_deep
        .iter()
        .all(|(_, o)| o.storage_class == "DEEP_ARCHIVE"));
}

/// The journal is removed once an export completes.
fn assert_journal_gone(state: &OsStr) {
    let dir = std::path::Path::new(state).join("glacierfs/exports");
    let left: Vec<_> = std::fs::read_dir(&dir)
        .map(|d| d.flatten().map(|e| e.file_name()).collect())
        .unwrap_or_default();
    assert!(left.is_empty(), "journal files left: {left:?}");
}
