//! Browsing vaults through a real mount over the Glacier emulator: the tree built from
//! descriptions of every format (and hostile ones), name stability across imports and
//! refreshes, xattrs, vault mkdir/rmdir, the catalog's identity, and offline browsing.
// A test fails by panicking, so unwrap and expect are how it says what went wrong.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine;
use sha2::{Digest, Sha256};

use glacierfs::codec::timefmt::format_compact;
use support::emulator::Emulator;
use support::mount::{fuse_available, wait_until, Mount};
use support::{walk, xattr, Seen};

const VAULT: &str = "photos";

fn mt2(path: &str, mtime: i64) -> String {
    let json = format!(
        r#"{{"filename":"{path}","mtime":"{}"}}"#,
        format_compact(mtime)
    );
    format!("mt2 {}", URL_SAFE_NO_PAD.encode(json))
}

/// mt-aws-glacier's older format: the JSON's UTF-8 bytes, read as Latin-1, encoded again.
fn mt1(path: &str, mtime: i64) -> String {
    let json = format!(
        r#"{{"filename":"{path}","mtime":"{}"}}"#,
        format_compact(mtime)
    );
    let doubled: String = json.bytes().map(char::from).collect();
    format!("mt1 {}", URL_SAFE_NO_PAD.encode(doubled))
}

fn fast_glacier(path: &str, mtime: i64) -> String {
    format!(
        "<m><v>4</v><p>{}</p><lm>{}</lm></m>",
        STANDARD.encode(path),
        format_compact(mtime)
    )
}

fn fast_glacier_v1(path: &str) -> String {
    format!(
        "<ArchiveMetadata><Path>{}</Path></ArchiveMetadata>",
        STANDARD.encode(path)
    )
}

fn cloudberry(path: &str, mtime: i64) -> String {
    format!(
        r#"{{"Path":"{path}","UTCDateModified":"{}"}}"#,
        format_compact(mtime)
    )
}

/// What the vault should look like: files with size and mtime, and every parent directory.
#[derive(Default)]
struct Expected(BTreeMap<String, Option<Seen>>);

impl Expected {
    fn file(&mut self, path: &str, size: usize, mtime: i64) {
        let mut prefix = String::new();
        for seg in path.split('/').collect::<Vec<_>>().split_last().unwrap().1 {
            prefix.push_str(seg);
            prefix.push('/');
            self.0.insert(prefix.clone(), None);
        }
        let seen = Seen {
            size: size as u64,
            mtime,
        };
        assert!(
            self.0.insert(path.to_owned(), Some(seen)).is_none(),
            "duplicate expectation {path}"
        );
    }
}

/// Fills the emulator's vault with 1,000 archives covering every description format and the
/// hostile cases of the Core issue, and returns the tree SEMANTICS.md says they make.
fn populate(emu: &Emulator) -> Expected {
    emu.create_vault(VAULT);
    let mut exp = Expected::default();
    let n = std::cell::Cell::new(0usize);
    let put = |desc: &str, size: usize, created: i64| -> String {
        n.set(n.get() + 1);
        emu.put_archive(VAULT, desc, &vec![b'g'; size], Some(created))
    };
    let base = 1_700_000_000;
    for i in 0..150 {
        let path = format!("mt2/dir{}/file-{i}.txt", i % 7);
        let size = i % 37 + 1;
        put(&mt2(&path, 1_600_000_000 + i as i64), size, base + i as i64);
        exp.file(&path, size, 1_600_000_000 + i as i64);
    }
    for i in 0..100 {
        let path = format!("mt1/Ünïcødé-{i}.txt");
        put(&mt1(&path, 1_500_000_000 + i as i64), 3, base + i as i64);
        exp.file(&path, 3, 1_500_000_000 + i as i64);
    }
    for i in 0..100 {
        let path = format!("fg\\win\\{i}.dat");
        put(
            &fast_glacier(&path, 1_400_000_000 + i as i64),
            4,
            base + i as i64,
        );
        exp.file(&format!("fg/win/{i}.dat"), 4, 1_400_000_000 + i as i64);
    }
    for i in 0..50 {
        put(
            &fast_glacier_v1(&format!("B:/fg1/{i}.bin")),
            5,
            base + 1000 + i as i64,
        );
        exp.file(&format!("fg1/{i}.bin"), 5, base + 1000 + i as i64);
    }
    for i in 0..50 {
        let path = format!("cb/{i}.doc");
        put(
            &cloudberry(&path, 1_300_000_000 + i as i64),
            6,
            base + i as i64,
        );
        exp.file(&path, 6, 1_300_000_000 + i as i64);
    }
    for i in 0..50 {
        put(&format!("raw/plain-{i}.txt"), 7, base + 2000 + i as i64);
        exp.file(&format!("raw/plain-{i}.txt"), 7, base + 2000 + i as i64);
    }
    // Hostile descriptions: none may leave the vault or make an unusable name.
    put("../../etc/passwd", 8, base);
    exp.file("etc/passwd", 8, base);
    put("a//b/./../c", 9, base);
    exp.file("a/b/c", 9, base);
    put(r"\\server\share\x", 10, base);
    exp.file("x", 10, base);
    let id = put("", 11, base);
    exp.file(&format!("00undefined/{id}"), 11, base);
    let long = format!("long/{}", "x".repeat(1019));
    put(&long, 12, base);
    let hash = hex::encode(Sha256::digest("x".repeat(1019)));
    exp.file(
        &format!("long/{}~{}", "x".repeat(246), &hash[..8]),
        12,
        base,
    );
    // Duplicates: the newest takes the name, the others a date suffix, then an id suffix.
    for (k, created) in [1_650_000_000i64, 1_650_000_100, 1_650_000_200]
        .iter()
        .enumerate()
    {
        put("dup.txt", 20 + k, *created);
    }
    exp.file("dup.txt", 22, 1_650_000_200);
    exp.file(
        &format!("dup.txt~{}", format_compact(1_650_000_100)),
        21,
        1_650_000_100,
    );
    exp.file(
        &format!("dup.txt~{}", format_compact(1_650_000_000)),
        20,
        1_650_000_000,
    );
    let same = 1_640_000_000;
    let mut ids: Vec<String> = (0..3).map(|_| put("tri.txt", 30, same)).collect();
    ids.sort();
    exp.file("tri.txt", 30, same);
    exp.file(&format!("tri.txt~{}", format_compact(same)), 30, same);
    exp.file(
        &format!("tri.txt~{}~{}", format_compact(same), &ids[2][..8]),
        30,
        same,
    );
    // A file and a directory with the same path: the file takes the suffix.
    put("both", 31, base);
    put("both/inner", 32, base);
    exp.file(&format!("both~{}", format_compact(base)), 31, base);
    exp.file("both/inner", 32, base);
    // An archive named like a control file is set apart.
    put(".jobs", 33, base);
    exp.file(&format!(".jobs~{}", format_compact(base)), 33, base);
    let mut i = 0;
    while n.get() < 1000 {
        let path = format!("fill/{i}");
        put(&mt2(&path, 1_200_000_000), 1, base);
        exp.file(&path, 1, 1_200_000_000);
        i += 1;
    }
    emu.take_inventory(VAULT);
    exp
}

/// Lists the vault (which starts or reuses an inventory job), lets the emulator finish jobs,
/// and waits for `files` files to appear.
fn load_vault(emu: &Emulator, mount: &Mount, files: usize) -> BTreeMap<String, Option<Seen>> {
    let vault = mount.path(VAULT);
    let _ = std::fs::read_dir(&vault).expect("vault is listed").count();
    let mut tree = BTreeMap::new();
    let loaded = wait_until(Duration::from_secs(60), || {
        emu.complete_all_jobs();
        tree = walk(&vault);
        tree.values().filter(|v| v.is_some()).count() >= files
    });
    assert!(
        loaded,
        "vault never showed {files} files; log:\n{}",
        mount.log_text()
    );
    tree
}

#[test]
fn a_hostile_vault_browses_exactly_as_designed() {
    if !fuse_available() {
        return;
    }
    let emu = Emulator::start();
    let expected = populate(&emu);
    let cache = tempfile::tempdir().unwrap();
    let mount = Mount::start(&emu.endpoint(), cache.path(), &[]);

    assert!(std::fs::read_dir(mount.path(""))
        .unwrap()
        .any(|e| e.unwrap().file_name() == VAULT));
    let tree = load_vault(&emu, &mount, 1000);
    let missing: Vec<_> = expected
        .0
        .keys()
        .filter(|k| !tree.contains_key(*k))
        .collect();
    let extra: Vec<_> = tree
        .keys()
        .filter(|k| !expected.0.contains_key(*k))
        .collect();
    assert!(
        missing.is_empty() && extra.is_empty(),
        "missing {missing:#?}\nextra {extra:#?}"
    );
    for (path, seen) in &expected.0 {
        assert_eq!(&tree[path], seen, "attributes of {path}");
    }
    // Nothing escapes: every entry resolves inside the vault.
    let root = std::fs::canonicalize(mount.path(VAULT)).unwrap();
    for path in tree.keys() {
        let real = std::fs::canonicalize(root.join(path.trim_end_matches('/'))).unwrap();
        assert!(real.starts_with(&root), "{path} resolves outside the vault");
    }
    // Control files are not listed, and statfs answers.
    assert!(!tree.contains_key(".jobs") && !tree.contains_key(".lock"));
    let df = std::process::Command::new("df")
        .arg(mount.path(""))
        .output()
        .unwrap();
    assert!(
        df.status.success(),
        "df failed: {}",
        String::from_utf8_lossy(&df.stderr)
    );
}

#[test]
fn the_same_inventory_gives_the_same_tree_and_a_refresh_renames_nothing() {
    if !fuse_available() {
        return;
    }
    let emu = Emulator::start();
    emu.create_vault(VAULT);
    for k in 0..20 {
        emu.put_archive(VAULT, "same-name", &[b'a'; 3], Some(1_700_000_000 + k % 4));
        emu.put_archive(
            VAULT,
            &mt2(&format!("d/{k}"), 1_600_000_000),
            &[b'b'; 2],
            None,
        );
    }
    emu.take_inventory(VAULT);
    let (c1, c2) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let first = {
        let m = Mount::start(&emu.endpoint(), c1.path(), &[]);
        load_vault(&emu, &m, 40)
    };
    let second = {
        let m = Mount::start(&emu.endpoint(), c2.path(), &[]);
        load_vault(&emu, &m, 40)
    };
    assert_eq!(first, second, "two empty catalogs gave different trees");

    let ids_before = archive_ids(c1.path(), &emu, &first);
    for k in 0..5 {
        emu.put_archive(VAULT, "same-name", &[b'c'; 4], Some(1_800_000_000 + k));
    }
    emu.advance(Duration::from_secs(2 * 86400));
    emu.take_inventory(VAULT);
    let m = Mount::start(&emu.endpoint(), c1.path(), &["--inventory-max-age", "1s"]);
    let after = load_vault(&emu, &m, 45);
    for (path, id) in &ids_before {
        assert_eq!(
            xattr(&m.path(VAULT).join(path), "user.glacier.archive_id").as_ref(),
            Ok(id),
            "{path} changed after the refresh"
        );
    }
    assert_eq!(after.len(), first.len() + 5);
}

/// Archive ids of every file in `tree`, read through a fresh mount of `cache`.
fn archive_ids(
    cache: &Path,
    emu: &Emulator,
    tree: &BTreeMap<String, Option<Seen>>,
) -> BTreeMap<String, String> {
    let m = Mount::start(&emu.endpoint(), cache, &[]);
    tree.iter()
        .filter(|(_, v)| v.is_some())
        .map(|(p, _)| {
            let id = xattr(&m.path(VAULT).join(p), "user.glacier.archive_id").expect("archive id");
            (p.clone(), id)
        })
        .collect()
}

#[test]
fn xattrs_cold_opens_and_vault_directories() {
    if !fuse_available() {
        return;
    }
    let emu = Emulator::start();
    emu.create_vault(VAULT);
    let id = emu.put_archive(VAULT, &mt2("docs/a.txt", 1_600_000_000), b"hello", None);
    emu.take_inventory(VAULT);
    let cache = tempfile::tempdir().unwrap();
    let mount = Mount::start(&emu.endpoint(), cache.path(), &[]);
    load_vault(&emu, &mount, 1);
    let file = mount.path("photos/docs/a.txt");

    assert_eq!(xattr(&file, "user.glacier.archive_id"), Ok(id.clone()));
    assert_eq!(xattr(&file, "user.glacier.state").as_deref(), Ok("cold"));
    assert_eq!(xattr(&file, "security.selinux"), Err(libc::EOPNOTSUPP));
    assert_eq!(xattr(&file, "user.glacier.nonsense"), Err(libc::ENODATA));
    assert_eq!(
        xattr(&mount.path(VAULT), "user.glacier.archive_count").as_deref(),
        Ok("1")
    );
    let arn = xattr(&mount.path(VAULT), "user.glacier.vault_arn").unwrap();
    assert!(arn.ends_with(":vaults/photos"), "{arn}");
    let dump = std::process::Command::new("getfattr")
        .args(["-d", "-m", "user.glacier"])
        .arg(&file)
        .output();
    if let Ok(out) = dump {
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            text.contains(&id) && text.contains("cold"),
            "getfattr shows:\n{text}"
        );
    }

    // A cold file refuses to open rather than read as empty.
    let err = std::fs::read(&file).unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::EAGAIN));

    // Directories inside a vault live in the catalog.
    std::fs::create_dir(mount.path("photos/new-dir")).unwrap();
    assert_eq!(
        std::fs::remove_dir(mount.path("photos/docs"))
            .unwrap_err()
            .raw_os_error(),
        Some(libc::ENOTEMPTY)
    );
    std::fs::remove_dir(mount.path("photos/new-dir")).unwrap();

    // mkdir and rmdir at the root create and delete vaults.
    let bad = std::fs::create_dir(mount.path("bad name!")).unwrap_err();
    assert_eq!(bad.raw_os_error(), Some(libc::EINVAL));
    std::fs::create_dir(mount.path("fresh")).unwrap();
    assert!(emu.vault_names().contains(&"fresh".to_string()));
    assert_eq!(
        std::fs::remove_dir(mount.path(VAULT))
            .unwrap_err()
            .raw_os_error(),
        Some(libc::ENOTEMPTY)
    );
    std::fs::remove_dir(mount.path("fresh")).unwrap();
    assert!(
        !mount.path("fresh").exists(),
        "a deleted vault is gone from view at once"
    );
    assert!(
        wait_until(Duration::from_secs(30), || !emu
            .vault_names()
            .contains(&"fresh".to_string())),
        "DeleteVault never reached the emulator"
    );
    // Hard links are refused (symlinks and special files are tests/posix.rs's).
    std::fs::write(mount.path("photos/linked"), b"x").unwrap();
    let link =
        std::fs::hard_link(mount.path("photos/linked"), mount.path("photos/link")).unwrap_err();
    assert_eq!(link.raw_os_error(), Some(libc::EPERM));
}

#[test]
fn a_catalog_belongs_to_one_endpoint_and_one_mount() {
    if !fuse_available() {
        return;
    }
    let (a, b) = (Emulator::start(), Emulator::start());
    a.create_vault(VAULT);
    let cache = tempfile::tempdir().unwrap();
    let first = Mount::start(&a.endpoint(), cache.path(), &[]);
    let second = Mount::try_start(&a.endpoint(), cache.path(), &[])
        .err()
        .expect("second mount refused");
    assert!(
        second.contains("in use by another glacierfs mount"),
        "{second}"
    );
    drop(first);
    let other = Mount::try_start(&b.endpoint(), cache.path(), &[])
        .err()
        .expect("other endpoint refused");
    assert!(other.contains("belongs to"), "{other}");
}

#[test]
fn an_unreachable_endpoint_browses_the_catalog_offline() {
    if !fuse_available() {
        return;
    }
    let emu = Emulator::start();
    emu.create_vault(VAULT);
    emu.put_archive(VAULT, &mt2("kept.txt", 1_600_000_000), b"data", None);
    emu.take_inventory(VAULT);
    let endpoint = emu.endpoint();
    let cache = tempfile::tempdir().unwrap();
    {
        let m = Mount::start(&endpoint, cache.path(), &[]);
        load_vault(&emu, &m, 1);
    }
    drop(emu);
    let m = Mount::start(&endpoint, cache.path(), &[]);
    assert!(m.path("photos/kept.txt").exists());
    assert!(
        m.log_text().contains("offline"),
        "no offline warning:\n{}",
        m.log_text()
    );
    // And a fresh catalog with nothing to browse is refused with a clear message.
    let empty = tempfile::tempdir().unwrap();
    let err = Mount::try_start(&endpoint, empty.path(), &[])
        .err()
        .expect("refused");
    assert!(err.contains("unreachable"), "{err}");
    // That failed mount did not claim the cache for the endpoint it could not reach: the
    // right endpoint mounts it.
    let emu = Emulator::start();
    emu.create_vault(VAULT);
    let m = Mount::start(&emu.endpoint(), empty.path(), &[]);
    assert!(m.path(VAULT).is_dir(), "log:\n{}", m.log_text());
}

#[test]
fn transient_faults_are_retried_until_the_vault_loads() {
    use support::emulator::{FaultKind, FaultPlan, Op};
    if !fuse_available() {
        return;
    }
    let emu = Emulator::start();
    emu.create_vault(VAULT);
    for k in 0..30 {
        emu.put_archive(
            VAULT,
            &mt2(&format!("f/{k}"), 1_600_000_000),
            &[b'z'; 9],
            None,
        );
    }
    emu.take_inventory(VAULT);
    // The very first call of the mount is throttled, and must not fail it.
    emu.fail_next(Op::ListVaults, FaultKind::Throttle, 1);
    let cache = tempfile::tempdir().unwrap();
    let mount = Mount::start(&emu.endpoint(), cache.path(), &[]);
    emu.set_faults(FaultPlan {
        rate: 0.35,
        kinds: vec![
            FaultKind::Throttle,
            FaultKind::InternalError,
            FaultKind::ServiceUnavailable,
            FaultKind::Reset,
            FaultKind::TruncateOutput,
            FaultKind::ResetMidBody,
        ],
        seed: 42,
        ops: Some(vec![
            Op::DescribeVault,
            Op::ListJobs,
            Op::InitiateJob,
            Op::DescribeJob,
            Op::GetJobOutput,
        ]),
    });
    let tree = load_vault(&emu, &mount, 30);
    assert_eq!(tree.values().filter(|v| v.is_some()).count(), 30);
    assert!(
        emu.stats().faults_injected() > 0,
        "the plan injected no fault"
    );
}

/// Names and attributes are cached by the kernel for a long time; an archive that a newer
/// inventory drops must still vanish at once, because the merge tells the kernel so.
#[test]
fn an_archive_dropped_by_a_newer_inventory_vanishes_from_the_kernel_cache() {
    if !fuse_available() {
        return;
    }
    let emu = Emulator::start();
    emu.create_vault(VAULT);
    let gone = emu.put_archive(VAULT, &mt2("gone.txt", 1_600_000_000), b"old", None);
    emu.put_archive(VAULT, &mt2("kept.txt", 1_600_000_000), b"kept", None);
    emu.take_inventory(VAULT);
    let cache = tempfile::tempdir().unwrap();
    let m = Mount::start(
        &emu.endpoint(),
        cache.path(),
        &["--inventory-max-age", "1s"],
    );
    load_vault(&emu, &m, 2);
    let vault = m.path(VAULT);
    // Looked up now, so the kernel holds the name and its attributes.
    assert_eq!(std::fs::metadata(vault.join("gone.txt")).unwrap().len(), 3);
    emu.delete_archive_direct(VAULT, &gone);
    emu.advance(std::time::Duration::from_secs(2 * 86_400));
    emu.take_inventory(VAULT);
    std::fs::write(vault.join(".jobs"), "inventory\n").unwrap();
    let vanished = wait_until(std::time::Duration::from_secs(60), || {
        emu.complete_all_jobs();
        std::fs::symlink_metadata(vault.join("gone.txt")).is_err()
    });
    assert!(
        vanished,
        "the dropped archive is still visible; log:\n{}",
        m.log_text()
    );
    assert!(vault.join("kept.txt").exists());
}

/// The kernel keeps a directory's listing, so listing it again asks the daemon nothing; an
/// archive a newer inventory adds behind its back still shows in the next listing.
#[test]
fn a_repeated_listing_is_the_kernels_and_an_archive_added_upstream_still_shows() {
    if !fuse_available() {
        return;
    }
    let emu = Emulator::start();
    emu.create_vault(VAULT);
    for name in ["a.txt", "b.txt", "c.txt"] {
        emu.put_archive(VAULT, &mt2(name, 1_600_000_000), name.as_bytes(), None);
    }
    emu.take_inventory(VAULT);
    let cache = tempfile::tempdir().unwrap();
    let m = Mount::start_with_log(
        &emu.endpoint(),
        cache.path(),
        &["--inventory-max-age", "1s"],
        "info,fuser::request=debug",
    );
    load_vault(&emu, &m, 3);
    let vault = m.path(VAULT);
    let names = || -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(&vault)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    };
    let listings_asked = || m.log_text().matches("READDIR").count();
    // Once read after the last change, a listing stays with the kernel.
    names();
    let asked = listings_asked();
    assert_eq!(names(), ["a.txt", "b.txt", "c.txt"]);
    assert_eq!(names(), ["a.txt", "b.txt", "c.txt"]);
    assert!(asked > 0, "the log filter did not show the requests");
    assert_eq!(
        listings_asked(),
        asked,
        "a cached listing was asked for again"
    );

    emu.put_archive(VAULT, &mt2("new.txt", 1_600_000_000), b"new", None);
    emu.advance(std::time::Duration::from_secs(2 * 86_400));
    emu.take_inventory(VAULT);
    std::fs::write(vault.join(".jobs"), "inventory\n").unwrap();
    let shown = wait_until(std::time::Duration::from_secs(60), || {
        emu.complete_all_jobs();
        names().contains(&"new.txt".to_owned())
    });
    assert!(
        shown,
        "the added archive never showed; log:\n{}",
        m.log_text()
    );
    names();
    let asked = listings_asked();
    assert_eq!(names(), ["a.txt", "b.txt", "c.txt", "new.txt"]);
    assert_eq!(listings_asked(), asked, "the new listing was not kept");
}
