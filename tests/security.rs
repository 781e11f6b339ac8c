//! The security requirements (SEMANTICS.md and the README), checked through real mounts over the Glacier
//! emulator: the cache directory stays private (0700 directories, 0600 files) whatever the
//! umask; credentials never reach the logs at any level; the mount is private unless
//! `--allow-other`, which brings `default_permissions` and keeps `.lock` writes for the owner;
//! set-user-ID and set-group-ID go on writes, truncations and chowns as SEMANTICS.md says;
//! and staging paths never come from user input.
//!
//! tests/cli.rs checks the cache modes under the default umask; these run every glacierfs
//! process with umask 000 and look again after writes, uploads, a retrieval and the client
//! commands.
// A test fails by panicking, so unwrap and expect are how it says what went wrong.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::io::Write;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use glacierfs::codec::names;
use support::emulator::Emulator;
use support::mount::{
    aws_env, binary, force_unmount, fuse_available, is_mounted, wait_until, Mount,
};
use support::xattr;

const VAULT: &str = "v";
const MIB: usize = 1 << 20;
/// The uid and gid another local user runs as: `nobody`.
const OTHER: u32 = 65534;

fn pattern(size: usize, seed: u8) -> Vec<u8> {
    (0..size)
        .map(|k| (k as u8).wrapping_mul(29).wrapping_add(seed))
        .collect()
}

/// Makes `cmd` start with umask 000, so only glacierfs itself can make its files private.
fn with_open_umask(cmd: &mut Command) -> &mut Command {
    // SAFETY: umask is async-signal-safe and cannot fail.
    unsafe {
        cmd.pre_exec(|| {
            libc::umask(0);
            Ok(())
        })
    }
}

/// Runs a glacierfs client command with umask 000; it must succeed.
fn client(args: &[&OsStr], env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(binary());
    aws_env(&mut cmd).args(args);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = with_open_umask(&mut cmd).output().expect("glacierfs runs");
    assert!(
        out.status.success(),
        "glacierfs {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// A mount made the way users make it: `glacierfs mount` without `--foreground`, which
/// detaches and logs to the cache directory. Started with umask 000 and whatever environment
/// the test gives. Unmounts and waits for the daemon when dropped.
struct Detached {
    mnt: tempfile::TempDir,
    pid: i32,
    /// What the starting process printed.
    output: Output,
}

impl Detached {
    fn start(endpoint: &str, cache: &Path, extra: &[&str], env: &[(&str, &str)]) -> Detached {
        let mnt = tempfile::Builder::new()
            .prefix("glacierfs-sec")
            .tempdir()
            .expect("mountpoint");
        let mut cmd = Command::new(binary());
        aws_env(&mut cmd)
            .arg("mount")
            .args(["--endpoint-url", endpoint, "--region", "us-east-1"])
            .arg("--cache-dir")
            .arg(cache)
            .args(["--poll-interval", "1s"])
            .args(extra)
            .arg(mnt.path());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let output = with_open_umask(&mut cmd).output().expect("glacierfs runs");
        assert!(
            output.status.success(),
            "mount failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        let pid = std::fs::read_to_string(cache.join("lock"))
            .expect("the lock file names the daemon")
            .trim()
            .parse()
            .expect("a pid");
        assert!(is_mounted(mnt.path()));
        Detached { mnt, pid, output }
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.mnt.path().join(rel)
    }
}

impl Drop for Detached {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(self.mnt.path()).status();
        // Unmounted, the daemon exits on its own; a hung one is ended so the test can finish.
        // SAFETY: signal 0 only asks whether the process exists.
        let gone = wait_until(Duration::from_secs(20), || unsafe {
            libc::kill(self.pid, 0) != 0
        });
        if !gone {
            // SAFETY: kill takes plain integers; the daemon is this test's own.
            unsafe { libc::kill(self.pid, libc::SIGKILL) };
        }
        if is_mounted(self.mnt.path()) {
            force_unmount(self.mnt.path());
        }
    }
}

/// Every entry below `dir`, by path relative to it.
fn tree(dir: &Path) -> BTreeMap<PathBuf, std::fs::Metadata> {
    fn into(root: &Path, dir: &Path, out: &mut BTreeMap<PathBuf, std::fs::Metadata>) {
        for e in std::fs::read_dir(dir).expect("read_dir") {
            let e = e.expect("entry");
            // Files come and go while the daemon works; one gone since the listing is fine.
            let Ok(meta) = std::fs::symlink_metadata(e.path()) else {
                continue;
            };
            let rel = e.path().strip_prefix(root).expect("below").to_owned();
            if meta.is_dir() {
                into(root, &e.path(), out);
            }
            out.insert(rel, meta);
        }
    }
    let mut out = BTreeMap::new();
    into(dir, dir, &mut out);
    out
}

/// The cache directory is 0700, every directory below it 0700, and every file 0600.
fn assert_private(cache: &Path, when: &str) -> BTreeMap<PathBuf, std::fs::Metadata> {
    let mode = |m: &std::fs::Metadata| m.permissions().mode() & 0o7777;
    let root = std::fs::metadata(cache).expect("cache dir");
    assert_eq!(mode(&root), 0o700, "{when}: the cache directory");
    let entries = tree(cache);
    for (rel, meta) in &entries {
        let want = if meta.is_dir() { 0o700 } else { 0o600 };
        assert!(
            meta.is_dir() || meta.is_file(),
            "{when}: {} is neither file nor directory",
            rel.display()
        );
        assert_eq!(
            mode(meta),
            want,
            "{when}: {} is {:o}",
            rel.display(),
            mode(meta)
        );
    }
    entries
}

/// Puts `files` into the vault as archives another tool wrote, and takes an inventory.
fn seed_vault(emu: &Emulator, files: &[(&str, Vec<u8>)]) {
    emu.create_vault(VAULT);
    for (path, data) in files {
        emu.put_archive(VAULT, &names::encode_mt2(path, 1_600_000_000), data, None);
    }
    emu.take_inventory(VAULT);
}

/// Lists the vault (which starts the inventory job), finishes the job, and waits for `file`.
fn load(emu: &Emulator, vault_dir: &Path, file: &str) {
    let _ = std::fs::read_dir(vault_dir).map(|d| d.count());
    assert!(
        wait_until(Duration::from_secs(60), || {
            emu.complete_all_jobs();
            vault_dir.join(file).exists()
        }),
        "the vault never loaded"
    );
}

/// Opens a cold file (EAGAIN, which starts its retrieval) and waits until it reads back.
fn retrieve(emu: &Emulator, file: &Path, data: &[u8]) {
    let first = std::fs::read(file);
    assert_eq!(
        first.err().and_then(|e| e.raw_os_error()),
        Some(libc::EAGAIN),
        "{} was not cold",
        file.display()
    );
    assert!(
        wait_until(Duration::from_secs(60), || {
            emu.complete_all_jobs();
            std::fs::read(file).ok().as_deref() == Some(data)
        }),
        "the retrieval of {} never finished",
        file.display()
    );
}

#[test]
fn the_cache_stays_private_under_umask_000() {
    if !fuse_available() {
        return;
    }
    let emu = Emulator::start();
    let cold = pattern(2 * MIB + 3, 7);
    seed_vault(&emu, &[("old/cold.bin", cold.clone())]);
    let scratch = tempfile::tempdir().unwrap();
    let cache = scratch.path().join("cache");
    let m = Detached::start(
        &emu.endpoint(),
        &cache,
        &["--part-size", "1MiB", "--write-back-delay", "0s"],
        &[],
    );
    let vault_dir = m.path(VAULT);
    load(&emu, &vault_dir, "old/cold.bin");
    assert_private(&cache, "after the inventory");

    // Staged: a file still open for writing, and a multipart one.
    std::fs::create_dir_all(vault_dir.join("new/deeper")).unwrap();
    let mut open = std::fs::File::create(vault_dir.join("new/deeper/open.txt")).unwrap();
    open.write_all(b"still being written\n").unwrap();
    let big = pattern(3 * MIB + 1, 3);
    std::fs::write(vault_dir.join("new/big.bin"), &big).unwrap();
    let staged = assert_private(&cache, "while files are staged");
    assert!(
        staged.keys().any(|p| p.starts_with("data")),
        "nothing staged: {:?}",
        staged.keys()
    );
    drop(open);

    let env: [(&str, &str); 0] = [];
    client(
        &[
            OsStr::new("sync"),
            OsStr::new("--wait"),
            vault_dir.as_os_str(),
        ],
        &env,
    );
    assert_eq!(emu.archives(VAULT).len(), 3);
    assert_private(&cache, "after the uploads");

    // A retrieval asked for by the client command, then read: retrieved data in the cache.
    let cold_path = vault_dir.join("old/cold.bin");
    client(&[OsStr::new("retrieve"), cold_path.as_os_str()], &env);
    assert!(
        wait_until(Duration::from_secs(60), || {
            emu.complete_all_jobs();
            std::fs::read(&cold_path).ok().as_deref() == Some(&cold[..])
        }),
        "the retrieval never finished"
    );
    assert_eq!(std::fs::read(vault_dir.join("new/big.bin")).unwrap(), big);
    let cache_arg = cache.as_os_str();
    client(
        &[OsStr::new("status"), OsStr::new("--cache-dir"), cache_arg],
        &env,
    );
    let after = assert_private(&cache, "after a retrieval and `status`");
    for known in ["catalog.db", "glacierfs.log", "lock", "data"] {
        assert!(
            after.contains_key(Path::new(known)),
            "no {known} in the cache"
        );
    }
    drop(m);

    // The client commands against an unmounted cache, and an import into a new one.
    client(
        &[OsStr::new("status"), OsStr::new("--cache-dir"), cache_arg],
        &env,
    );
    assert_private(&cache, "after `status` with nothing mounted");
    let inventory = scratch.path().join("inventory.csv");
    std::fs::write(
        &inventory,
        format!(
            "ArchiveId,ArchiveDescription,CreationDate,Size,SHA256TreeHash\n\
             id-1,a.txt,2019-05-01T10:00:00Z,12,{}\n",
            "a".repeat(64)
        ),
    )
    .unwrap();
    let fresh = scratch.path().join("fresh");
    client(
        &[
            OsStr::new("inventory"),
            OsStr::new("import"),
            OsStr::new("--cache-dir"),
            fresh.as_os_str(),
            OsStr::new(VAULT),
            inventory.as_os_str(),
        ],
        &env,
    );
    let imported = assert_private(&fresh, "after `inventory import`");
    assert!(imported.contains_key(Path::new("catalog.db")));
}

#[test]
fn credentials_never_reach_the_logs() {
    if !fuse_available() {
        return;
    }
    const KEY_ID: &str = "AKIDQ7HOSTILEZ3X9KEY";
    const SECRET: &str = "sEcReT+hostile/5f1e2d3c4b5a69788796a5b4c3d2e1f0";
    const TOKEN: &str = "FwoGZXIvYXdzEHostileSessionToken+9a8b7c6d5e4f3a2b1c0d/==";
    let creds = [
        ("AWS_ACCESS_KEY_ID", KEY_ID),
        ("AWS_SECRET_ACCESS_KEY", SECRET),
        ("AWS_SESSION_TOKEN", TOKEN),
        ("RUST_LOG", "trace"),
    ];
    let emu = Emulator::start();
    emu.accept_credentials(KEY_ID, SECRET);
    let cold = pattern(MIB + 17, 5);
    seed_vault(&emu, &[("cold.bin", cold.clone())]);
    let scratch = tempfile::tempdir().unwrap();
    let cache = scratch.path().join("cache");
    let m = Detached::start(
        &emu.endpoint(),
        &cache,
        &["-vvv", "--part-size", "1MiB", "--write-back-delay", "0s"],
        &creds,
    );
    let vault_dir = m.path(VAULT);
    // An inventory (the first listing), uploads (one single, one multipart), a retrieval.
    load(&emu, &vault_dir, "cold.bin");
    std::fs::write(vault_dir.join("small.txt"), b"small\n").unwrap();
    std::fs::write(vault_dir.join("multi.bin"), pattern(2 * MIB + 1, 9)).unwrap();
    let mut outputs = vec![client(
        &[
            OsStr::new("sync"),
            OsStr::new("--wait"),
            vault_dir.as_os_str(),
        ],
        &creds,
    )];
    retrieve(&emu, &vault_dir.join("cold.bin"), &cold);
    // A second inventory, asked for through `.jobs`.
    emu.advance(Duration::from_secs(3600));
    emu.take_inventory(VAULT);
    let before = xattr(&vault_dir, "user.glacier.inventory_date");
    std::fs::write(vault_dir.join(".jobs"), "inventory\n").unwrap();
    assert!(
        wait_until(Duration::from_secs(60), || {
            emu.complete_all_jobs();
            xattr(&vault_dir, "user.glacier.inventory_date") != before
        }),
        "the second inventory never arrived"
    );
    outputs.push(client(
        &[
            OsStr::new("status"),
            OsStr::new("--cache-dir"),
            cache.as_os_str(),
        ],
        &creds,
    ));
    let started = m.output.clone();
    drop(m);

    let log = std::fs::read_to_string(cache.join("glacierfs.log")).expect("the daemon's log");
    // The log really is at trace level, so the search below covers every level.
    assert!(log.contains("TRACE"), "no trace lines in the log");
    assert!(log.contains("DEBUG"), "no debug lines in the log");
    outputs.push(started);
    let mut text = vec![("glacierfs.log".to_string(), log.into_bytes())];
    for (i, out) in outputs.iter().enumerate() {
        text.push((format!("stdout of command {i}"), out.stdout.clone()));
        text.push((format!("stderr of command {i}"), out.stderr.clone()));
    }
    // Nothing else in the cache may hold them either: catalog, sidecars, data.
    for (rel, meta) in tree(&cache) {
        if meta.is_file() {
            let bytes = std::fs::read(cache.join(&rel)).unwrap_or_default();
            text.push((rel.display().to_string(), bytes));
        }
    }
    for (what, bytes) in &text {
        for (name, value) in [
            ("secret access key", SECRET),
            ("session token", TOKEN),
            ("access key id", KEY_ID),
        ] {
            let found = bytes.windows(value.len()).any(|w| w == value.as_bytes());
            assert!(!found, "the {name} appears in {what}");
        }
    }
}

/// A small program that tries one file-system operation as whoever runs it and prints `ok` or
/// the errno's name, so a test can run it as another user.
const PROBE: &str = r#"
import errno, os, sys
op, path = sys.argv[1], sys.argv[2]
try:
    if op == "stat":
        os.stat(path)
    elif op == "list":
        os.listdir(path)
    elif op == "read":
        with open(path, "rb") as f:
            f.read()
    elif op == "create":
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644))
    elif op == "mkdir":
        os.mkdir(path)
    elif op == "truncate":
        os.truncate(path, 0)
    elif op == "create-setuid":
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o4755)
        try:
            os.write(fd, sys.argv[3].encode())
        finally:
            os.close(fd)
    elif op == "open-for-writing":
        os.close(os.open(path, os.O_WRONLY))
    elif op == "write":
        fd = os.open(path, os.O_WRONLY)
        try:
            os.write(fd, sys.argv[3].encode())
        finally:
            os.close(fd)
    print("ok")
except OSError as e:
    print(errno.errorcode.get(e.errno, str(e.errno)))
"#;

/// Runs [`PROBE`] as the `nobody` user (fork, then setgid and setuid before exec).
fn as_other(op: &str, path: &Path, arg: &str) -> String {
    // The system's python3: an interpreter under root's home would not run as another user.
    let out = Command::new("python3")
        .arg("-c")
        .arg(PROBE)
        .arg(op)
        .arg(path)
        .arg(arg)
        .current_dir("/")
        .env_clear()
        .env("PATH", "/usr/local/bin:/usr/bin:/bin")
        .uid(OTHER)
        .gid(OTHER)
        .output()
        .expect("python3 runs");
    assert!(
        out.status.success(),
        "probe: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// The super options of the mount at `path`, from /proc/self/mountinfo.
fn mount_options(path: &Path) -> String {
    let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    let p = path.to_string_lossy();
    let line = info
        .lines()
        .find(|l| l.split(' ').nth(4) == Some(p.as_ref()))
        .unwrap_or_else(|| panic!("{p} is not in mountinfo"));
    line.split(" - ").nth(1).unwrap_or_default().to_owned()
}

const POLICY: &str = r#"{"Version":"2012-10-17","Statement":[{"Sid":"deny-deletes","Principal":"*","Effect":"Deny","Action":"glacier:DeleteArchive","Resource":"arn:aws:glacier:us-east-1:123456789012:vaults/v"}]}"#;

#[test]
fn the_mount_is_private_by_default() {
    if !fuse_available() {
        return;
    }
    let emu = Emulator::start();
    emu.create_vault(VAULT);
    let cache = tempfile::tempdir().unwrap();
    let m = Mount::start(&emu.endpoint(), cache.path(), &[]);
    std::fs::write(m.path(VAULT).join("mine.txt"), b"owner's\n").unwrap();
    let options = mount_options(&m.mountpoint);
    assert!(!options.contains("allow_other"), "{options}");

    for (op, rel) in [
        ("stat", ""),
        ("list", ""),
        ("stat", VAULT),
        ("list", VAULT),
        ("read", "v/mine.txt"),
        ("create", "v/theirs.txt"),
    ] {
        assert_eq!(as_other(op, &m.path(rel), ""), "EACCES", "{op} {rel:?}");
    }
    assert_eq!(
        as_other("write", &m.path("v/.lock"), POLICY),
        "EACCES",
        ".lock"
    );
    // The owner is not affected.
    assert!(std::fs::read_dir(m.path(VAULT)).is_ok());
    assert!(!m.path("v/theirs.txt").exists());
    assert!(emu.lock_state(VAULT).is_none());
}

#[test]
fn allow_other_brings_default_permissions_and_keeps_lock_writes_for_the_owner() {
    if !fuse_available() {
        return;
    }
    let emu = Emulator::start();
    emu.create_vault(VAULT);
    let cache = tempfile::tempdir().unwrap();
    let m = Mount::start(&emu.endpoint(), cache.path(), &["--allow-other"]);
    let options = mount_options(&m.mountpoint);
    assert!(
        options.contains("default_permissions") && options.contains("allow_other"),
        "{options}"
    );

    let vault_dir = m.path(VAULT);
    std::fs::write(vault_dir.join("public.txt"), b"for everyone\n").unwrap();
    let private = vault_dir.join("private.txt");
    std::fs::write(&private, b"owner only\n").unwrap();
    std::fs::set_permissions(&private, std::fs::Permissions::from_mode(0o600)).unwrap();
    let shared = vault_dir.join("shared");
    std::fs::create_dir(&shared).unwrap();
    std::fs::set_permissions(&shared, std::fs::Permissions::from_mode(0o777)).unwrap();

    // Other users see the mount, and the kernel checks the modes the catalog keeps.
    assert_eq!(as_other("list", &m.path(""), ""), "ok");
    assert_eq!(as_other("list", &vault_dir, ""), "ok");
    assert_eq!(as_other("read", &vault_dir.join("public.txt"), ""), "ok");
    assert_eq!(as_other("read", &private, ""), "EACCES");
    assert_eq!(
        as_other("create", &vault_dir.join("theirs.txt"), ""),
        "EACCES"
    );
    assert_eq!(as_other("mkdir", &vault_dir.join("theirs"), ""), "EACCES");
    assert_eq!(as_other("create", &shared.join("theirs.txt"), ""), "ok");
    assert!(shared.join("theirs.txt").exists());
    assert!(!vault_dir.join("theirs.txt").exists());

    // `.lock` writes are the owner's alone (SEMANTICS.md, "Control files"), and so is `.jobs`.
    let lock = vault_dir.join(".lock");
    assert_eq!(as_other("write", &lock, POLICY), "EACCES");
    assert_eq!(as_other("write", &lock, "abort"), "EACCES");
    assert_eq!(
        as_other("write", &vault_dir.join(".jobs"), "inventory"),
        "EACCES"
    );
    assert!(
        emu.lock_state(VAULT).is_none(),
        "another user started a lock"
    );
    assert_eq!(as_other("read", &lock, ""), "ok");

    std::fs::OpenOptions::new()
        .write(true)
        .open(&lock)
        .and_then(|mut f| f.write_all(POLICY.as_bytes()))
        .expect("the owner initiates a lock");
    assert_eq!(
        emu.lock_state(VAULT).map(|l| l.state).as_deref(),
        Some("InProgress")
    );
    std::fs::OpenOptions::new()
        .write(true)
        .open(&lock)
        .and_then(|mut f| f.write_all(b"abort\n"))
        .expect("the owner aborts it");
    assert!(emu.lock_state(VAULT).is_none());
}

#[test]
fn staging_paths_never_come_from_user_input() {
    if !fuse_available() {
        return;
    }
    let emu = Emulator::start();
    emu.create_vault(VAULT);
    let scratch = tempfile::tempdir().unwrap();
    let cache = scratch.path().join("cache");
    let m = Mount::start(
        &emu.endpoint(),
        &cache,
        &["--part-size", "1MiB", "--write-back-delay", "0s"],
    );
    let vault_dir = m.path(VAULT);

    // Names that would climb if they were ever joined onto a cache path, names of the cache's
    // own files, and a name as long as a name can be. All carry a marker to search for.
    const MARK: &str = "zq9mark";
    let long = format!("{MARK}{}", "L".repeat(255 - MARK.len()));
    let hostile: Vec<String> = vec![
        format!("..%2f..%2f{MARK}"),
        format!("..\u{2215}..\u{2215}{MARK}"),
        format!("{MARK}.."),
        format!("...{MARK}"),
        format!("-{MARK}"),
        format!(" {MARK} "),
        format!("{MARK}\u{202e}"),
        long,
        "0".into(),
        "1".into(),
        "1.meta".into(),
        "2.part".into(),
        "3.copy".into(),
        "4-1".into(),
        "lock".into(),
        "catalog.db".into(),
        "glacierfs.log".into(),
    ];
    // The same names again inside directories laid out like the cache itself.
    std::fs::create_dir_all(vault_dir.join("data/snapshots")).unwrap();
    let mut written = BTreeMap::new();
    let mut held = Vec::new();
    for (i, name) in hostile.iter().enumerate() {
        for dir in ["", "data", "data/snapshots"] {
            let path = vault_dir.join(dir).join(name);
            let size = if i == 0 && dir.is_empty() {
                2 * MIB + 1
            } else {
                10 + i
            };
            let data = pattern(size, i as u8);
            let mut f = std::fs::File::create(&path).unwrap();
            f.write_all(&data).unwrap();
            if i % 5 == 0 {
                // Some stay open, staged, while the cache is inspected.
                held.push(f);
            }
            written.insert(path, data);
        }
    }
    // `..` never reaches the file system as a name: the kernel resolves it first.
    assert!(std::fs::File::create(vault_dir.join("data/..")).is_err());

    let staging_name = |name: &str| {
        let (ino, suffix) = name.split_once('.').unwrap_or((name, ""));
        !ino.is_empty()
            && ino.bytes().all(|b| b.is_ascii_digit())
            && ["", "meta", "part", "copy", "meta.tmp"].contains(&suffix)
    };
    let snapshot_name = |name: &str| {
        name.split_once('-').is_some_and(|(a, b)| {
            !a.is_empty()
                && !b.is_empty()
                && a.bytes().all(|c| c.is_ascii_digit())
                && b.bytes().all(|c| c.is_ascii_digit())
        })
    };
    let check_cache = |when: &str| {
        let entries = tree(&cache);
        let mut staged = 0;
        for rel in entries.keys() {
            let parts: Vec<&OsStr> = rel.iter().collect();
            let name = rel.file_name().unwrap().to_string_lossy();
            assert!(
                !name.contains(MARK),
                "{when}: {} in the cache",
                rel.display()
            );
            match parts.as_slice() {
                [top] if *top == OsStr::new("data") || *top == OsStr::new("snapshots") => {}
                [top, _] if *top == OsStr::new("data") => {
                    assert!(staging_name(&name), "{when}: data/{name}");
                    staged += 1;
                }
                [top, _] if *top == OsStr::new("snapshots") => {
                    assert!(snapshot_name(&name), "{when}: snapshots/{name}");
                }
                [_] => {}
                _ => panic!("{when}: unexpected depth: {}", rel.display()),
            }
        }
        staged
    };
    assert!(check_cache("while staged") > 0, "nothing staged");
    drop(held);

    let out = aws_env(&mut Command::new(binary()))
        .args([
            OsStr::new("sync"),
            OsStr::new("--wait"),
            vault_dir.as_os_str(),
        ])
        .output()
        .unwrap();
    assert!(out.status.success());
    check_cache("after the uploads");
    for (path, data) in &written {
        assert_eq!(&std::fs::read(path).unwrap(), data, "{}", path.display());
    }
    assert_eq!(emu.archives(VAULT).len(), written.len());

    // Nothing beside the cache, and the cache's own files are still its own.
    let beside: Vec<_> = std::fs::read_dir(scratch.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(beside, vec![OsStr::new("cache").to_owned()]);
    let pid: u32 = std::fs::read_to_string(cache.join("lock"))
        .unwrap()
        .trim()
        .parse()
        .expect("the lock file still holds the daemon's pid");
    assert_eq!(Some(pid), m.pid());
    let marked_in_tmp = std::fs::read_dir(std::env::temp_dir())
        .unwrap()
        .filter_map(|e| e.ok())
        .any(|e| {
            e.file_name()
                .as_bytes()
                .windows(MARK.len())
                .any(|w| w == MARK.as_bytes())
        });
    assert!(
        !marked_in_tmp,
        "a hostile name appeared in the temp directory"
    );
}

/// The permission bits of `path`, once they are `want` (the kernel hears of a mode the daemon
/// changed at an open by an invalidation, a moment later).
fn settled_perm(path: &Path, want: u32) -> u32 {
    let perm = || std::fs::metadata(path).unwrap().permissions().mode() & 0o7777;
    wait_until(Duration::from_secs(10), || perm() == want);
    perm()
}

#[test]
fn writing_or_truncating_takes_set_user_id_away_as_linux_does() {
    if !fuse_available() {
        return;
    }
    let emu = Emulator::start();
    emu.create_vault(VAULT);
    let cache = tempfile::tempdir().unwrap();
    let m = Mount::start(&emu.endpoint(), cache.path(), &["--allow-other"]);
    let shared = m.path(VAULT).join("shared");
    std::fs::create_dir(&shared).unwrap();
    std::fs::set_permissions(&shared, std::fs::Permissions::from_mode(0o777)).unwrap();
    let file = |name: &str, perm: u32| {
        let path = shared.join(name);
        std::fs::write(&path, b"before\n").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(perm)).unwrap();
        assert_eq!(
            std::fs::metadata(&path).unwrap().permissions().mode() & 0o7777,
            perm
        );
        path
    };

    // Another user's write takes set-user-ID away, and set-group-ID with group execute; the
    // kernel leaves this to the daemon, and passthrough writes never reach it.
    let setuid = file("setuid", 0o4757);
    assert_eq!(as_other("write", &setuid, "theirs\n"), "ok");
    assert_eq!(settled_perm(&setuid, 0o0757), 0o0757);
    assert_eq!(std::fs::read(&setuid).unwrap(), b"theirs\n");
    let setgid = file("setgid", 0o6777);
    assert_eq!(as_other("write", &setgid, "theirs\n"), "ok");
    assert_eq!(settled_perm(&setgid, 0o0777), 0o0777);
    // Without group execute, set-group-ID marks mandatory locking: it stays for a writer in
    // the file's group, and goes for one outside it.
    let locking = file("locking", 0o2767);
    std::os::unix::fs::chown(&locking, None, Some(OTHER)).unwrap();
    assert_eq!(settled_perm(&locking, 0o2767), 0o2767, "a chown took it");
    assert_eq!(as_other("write", &locking, "theirs\n"), "ok");
    assert_eq!(settled_perm(&locking, 0o2767), 0o2767);
    let outside = file("outside", 0o2767);
    assert_eq!(as_other("write", &outside, "theirs\n"), "ok");
    assert_eq!(settled_perm(&outside, 0o0767), 0o0767);
    // An open for writing without a write changes nothing.
    let opened = file("opened", 0o4757);
    assert_eq!(as_other("open-for-writing", &opened, ""), "ok");
    assert_eq!(settled_perm(&opened, 0o4757), 0o4757);
    // A truncation.
    let truncated = file("truncated", 0o4757);
    assert_eq!(as_other("truncate", &truncated, ""), "ok");
    assert_eq!(settled_perm(&truncated, 0o0757), 0o0757);
    assert_eq!(std::fs::metadata(&truncated).unwrap().len(), 0);
    // Another user creating a set-user-ID file loses the bit at its first write.
    let created = shared.join("created");
    assert_eq!(as_other("create-setuid", &created, "theirs\n"), "ok");
    assert_eq!(settled_perm(&created, 0o0755), 0o0755);

    // Root keeps the bits when it writes or truncates (it holds CAP_FSETID)...
    let roots = file("roots", 0o4757);
    std::fs::OpenOptions::new()
        .write(true)
        .open(&roots)
        .and_then(|mut f| f.write_all(b"root's\n"))
        .unwrap();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&roots)
        .and_then(|f| f.set_len(3))
        .unwrap();
    assert_eq!(settled_perm(&roots, 0o4757), 0o4757);
    // ... but not when it gives the file away.
    std::os::unix::fs::chown(&roots, Some(OTHER), None).unwrap();
    assert_eq!(settled_perm(&roots, 0o0757), 0o0757);
    assert_eq!(
        std::os::unix::fs::MetadataExt::uid(&std::fs::metadata(&roots).unwrap()),
        OTHER
    );
    // The catalog has the new modes too: a new mount shows them.
    drop(m);
    let m = Mount::start(&emu.endpoint(), cache.path(), &["--allow-other"]);
    let shared = m.path(VAULT).join("shared");
    for (name, perm) in [
        ("setuid", 0o0757),
        ("locking", 0o2767),
        ("opened", 0o4757),
        ("roots", 0o0757),
    ] {
        let mode = std::fs::metadata(shared.join(name))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o7777, perm, "{name}");
    }
}

#[test]
fn a_write_is_not_preceded_by_a_question_about_security_capability() {
    if !fuse_available() {
        return;
    }
    let emu = Emulator::start();
    emu.create_vault(VAULT);
    let cache = tempfile::tempdir().unwrap();
    let m = Mount::start_with_log(
        &emu.endpoint(),
        cache.path(),
        &[],
        "info,fuser::request=debug",
    );
    let file = m.path(VAULT).join("dd.bin");
    let dd = Command::new("dd")
        .arg("if=/dev/zero")
        .arg(format!("of={}", file.display()))
        .args(["bs=64k", "count=64", "status=none"])
        .status()
        .unwrap();
    assert!(dd.success());
    assert_eq!(std::fs::metadata(&file).unwrap().len(), 64 * 65536);
    // Left to the kernel, each of the 64 write(2) calls would first ask for the file's
    // security.capability; the daemon clears set-user-ID itself, so the kernel asks at most
    // once for a file it has not seen before.
    let log = m.log_text();
    let asked = log
        .lines()
        .filter(|l| l.contains("GETXATTR name \"security.capability\""))
        .count();
    assert!(
        log.contains("CREATE"),
        "the log filter did not show the requests"
    );
    assert!(
        asked <= 2,
        "security.capability asked {asked} times for 64 writes"
    );
}
