//! The daemon's life cycle and what it tells: `glacierfs status` with and without a mount,
//! SIGTERM, credentials never in the log, and the local try-out script.
// A test fails by panicking, so unwrap and expect are how it says what went wrong.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use support::emulator::Emulator;
use support::mount::{aws_env, binary, fuse_available, is_mounted, wait_until, Mount};

fn status(cache: &Path) -> serde_json::Value {
    let out = aws_env(&mut Command::new(binary()))
        .args(["status", "--json", "--cache-dir"])
        .arg(cache)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "status: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("status --json is JSON")
}

#[test]
fn status_lists_pending_uploads_while_mounted_and_after_a_crash() {
    if !fuse_available() {
        return;
    }
    let emu = Emulator::start();
    emu.create_vault("v");
    let cache = tempfile::tempdir().unwrap();
    let mut mount = Mount::start(&emu.endpoint(), cache.path(), &["--write-back-delay", "1h"]);
    for i in 0..5 {
        std::fs::write(
            mount.path("v").join(format!("f{i}")),
            vec![b'x'; 1000 * (i + 1)],
        )
        .unwrap();
    }
    // close(2) returns before the kernel's release reaches the daemon, and a file's size is
    // recorded at release: wait until the last one has arrived.
    let mut s = serde_json::Value::Null;
    assert!(
        wait_until(Duration::from_secs(10), || {
            s = status(cache.path());
            s["Uploads"].as_array().is_some_and(|u| {
                u.len() == 5 && u.iter().all(|u| u["SizeInBytes"].as_u64() >= Some(1000))
            })
        }),
        "{s:#}"
    );
    assert_eq!(s["Mounted"], true);
    let uploads = s["Uploads"].as_array().unwrap();
    assert_eq!(uploads.len(), 5, "{s:#}");
    for u in uploads {
        assert!(u["SizeInBytes"].as_u64().unwrap() >= 1000);
        assert!(u.get("BytesDone").is_some(), "no progress: {u}");
    }
    assert_eq!(s["Cache"]["StagedBytes"], 15_000);
    let human = aws_env(&mut Command::new(binary()))
        .args(["status", "--cache-dir"])
        .arg(cache.path())
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&human.stdout).contains("uploads: 5"));

    mount.kill();
    let s = status(cache.path());
    assert_eq!(s["Mounted"], false);
    assert_eq!(
        s["Uploads"].as_array().unwrap().len(),
        5,
        "what will resume: {s:#}"
    );
    let human = aws_env(&mut Command::new(binary()))
        .args(["status", "--cache-dir"])
        .arg(cache.path())
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&human.stdout).contains("next mount will resume"));
}

#[test]
fn sigterm_unmounts_cleanly_and_exits_zero() {
    if !fuse_available() {
        return;
    }
    let emu = Emulator::start();
    emu.create_vault("v");
    let cache = tempfile::tempdir().unwrap();
    let mut mount = Mount::start(&emu.endpoint(), cache.path(), &[]);
    let path = mount.path("");
    let status = mount.terminate().expect("the daemon was running");
    assert!(status.success(), "SIGTERM exit status: {status:?}");
    assert!(!is_mounted(&path), "still mounted after SIGTERM");
}

#[test]
fn credentials_never_reach_the_log_even_at_trace_level() {
    if !fuse_available() {
        return;
    }
    let emu = Emulator::start();
    emu.create_vault("v");
    let cache = tempfile::tempdir().unwrap();
    let mnt = tempfile::tempdir().unwrap();
    let log = cache.path().join("trace.log");
    let (key_id, secret) = ("AKIDLEAKCHECK7Q3Z", "s3cr3t/NeverLog+ThisValue0123456789");
    emu.accept_credentials(key_id, secret);
    let mut child = aws_env(&mut Command::new(binary()))
        .env("AWS_ACCESS_KEY_ID", key_id)
        .env("AWS_SECRET_ACCESS_KEY", secret)
        .env("RUST_LOG", "trace")
        .args([
            "mount",
            "-f",
            "--region",
            "us-east-1",
            "--write-back-delay",
            "0s",
            "--endpoint-url",
        ])
        .arg(emu.endpoint())
        .arg("--cache-dir")
        .arg(cache.path().join("c"))
        .arg(mnt.path())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let _guard = support::mount::UnmountGuard(mnt.path().to_owned());
    assert!(wait_until(Duration::from_secs(30), || is_mounted(
        mnt.path()
    )));
    std::fs::write(mnt.path().join("v/file.txt"), b"some data").unwrap();
    std::fs::create_dir(mnt.path().join("new-vault")).unwrap();
    assert!(wait_until(Duration::from_secs(30), || !emu
        .archives("v")
        .is_empty()));
    let _ = Command::new("umount").arg(mnt.path()).status();
    let _ = child.wait();
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(
        text.lines().count() > 10,
        "too little was logged to tell:\n{text}"
    );
    assert!(!text.contains(secret), "the secret key was logged");
    assert!(!text.contains(key_id), "the access key id was logged");
}

/// The emulator's binary, built by this workspace (`cargo test --workspace` builds it for the
/// emulator's own tests; building it here is a no-op then, and makes this test stand alone).
fn emulator_binary() -> std::path::PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let built = Command::new(env!("CARGO"))
        .current_dir(root)
        .args([
            "build",
            "--release",
            "--quiet",
            "-p",
            "glacier-emulator",
            "--bin",
            "glacier-emulator",
        ])
        .status()
        .unwrap();
    assert!(built.success(), "building glacier-emulator failed");
    let bin = Path::new(binary()).with_file_name("glacier-emulator");
    assert!(bin.exists(), "no {}", bin.display());
    bin
}

/// Runs one line of the try-out's tour in bash, with the tour's variables; its output.
fn tour(line: &str, g: &str, m: &Path) -> std::process::Output {
    aws_env(&mut Command::new("bash"))
        .args(["-c", line])
        .env("G", g)
        .env("M", m)
        .output()
        .unwrap()
}

#[test]
fn try_local_runs_the_whole_tour_and_stop_leaves_nothing_behind() {
    if !fuse_available() {
        return;
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mnt = tempfile::tempdir().unwrap();
    let emulator = emulator_binary();
    let out = Command::new("bash")
        .arg(root.join("scripts/try-local.sh"))
        .arg(mnt.path())
        .env("GLACIERFS_BIN", binary())
        .env("GLACIER_EMULATOR_BIN", &emulator)
        .env("GLACIERFS_TRY_JOB_DELAY", "2")
        .output()
        .unwrap();
    let _guard = support::mount::UnmountGuard(mnt.path().to_owned());
    let stop = || {
        Command::new("bash")
            .arg(root.join("scripts/try-local.sh"))
            .arg("--stop")
            .output()
            .unwrap()
    };
    if !out.status.success() {
        let _ = stop();
        panic!(
            "try-local.sh failed:\n{}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let said = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(said.contains("scripts/try-local.sh --stop"), "{said}");
    assert!(is_mounted(mnt.path()));
    let g = binary();
    let m = mnt.path();
    let run = |line: &str| {
        let o = tour(line, g, m);
        (
            o.status.success(),
            String::from_utf8_lossy(&o.stdout).into_owned() + &String::from_utf8_lossy(&o.stderr),
        )
    };
    // The tour's steps, as printed: each must be in what the script said.
    let endpoint = said
        .split_whitespace()
        .find(|w| w.starts_with("http://127.0.0.1:"))
        .unwrap()
        .trim_end_matches(|c: char| !c.is_ascii_digit())
        .to_owned();
    for step in [
        "ls -lR $M/demo",
        "cat $M/demo/docs/readme.txt",
        "sync --wait $M/demo",
        "cat $M/demo/.lock",
        "export --dry-run",
        "s3://demo-bucket/demo",
    ] {
        assert!(said.contains(step), "the tour has no {step:?}: {said}");
    }
    // The demo vault fills in once its inventory job is done.
    let readme = m.join("demo/docs/readme.txt");
    let listed = wait_until(Duration::from_secs(30), || {
        let _ = run("ls -lR $M/demo");
        readme.exists()
    });
    assert!(listed, "the demo vault never filled in");
    // A cold read: EAGAIN, then the text once its job is done.
    let (ok, text) = run("cat $M/demo/docs/readme.txt");
    assert!(
        !ok && text.contains("Resource temporarily unavailable"),
        "{text}"
    );
    let read = wait_until(Duration::from_secs(30), || {
        run("cat $M/demo/docs/readme.txt").0
    });
    assert!(read, "the cold file never became readable");
    assert_eq!(
        run("cat $M/demo/docs/readme.txt").1,
        "Hello from a Glacier archive.\n"
    );
    // A 40 MiB file goes up as a multipart upload, and sync --wait returns once it is archived.
    let (ok, text) = run("head -c 40M /dev/urandom > $M/demo/big.bin && $G sync --wait $M/demo");
    assert!(ok, "{text}");
    let log = std::fs::read_to_string(root.join("target/try-local/cache/glacierfs.log")).unwrap();
    assert!(
        log.contains("(41943040 bytes, 3 parts)"),
        "not a multipart upload: {log}"
    );
    let (ok, lock) = run("cat $M/demo/.lock");
    assert!(ok && lock.contains("\"State\": \"None\""), "{lock}");
    // The export into the emulator's S3, priced first.
    let export = |extra: &str| {
        run(&format!(
            "$G export {extra} --s3-endpoint-url {endpoint} $M/demo s3://demo-bucket/demo"
        ))
    };
    let (ok, plan) = export("--dry-run");
    assert!(ok && plan.contains("to retrieve: 6 archives"), "{plan}");
    let (ok, done) = export("");
    assert!(
        ok && done.contains("export complete: 6 of 6 files"),
        "{done}"
    );

    let stopped = stop();
    assert!(
        stopped.status.success(),
        "{}",
        String::from_utf8_lossy(&stopped.stderr)
    );
    assert!(!is_mounted(mnt.path()), "--stop left the mount");
    let ps = Command::new("ps").args(["-eo", "args"]).output().unwrap();
    let procs = String::from_utf8_lossy(&ps.stdout);
    let mnt_str = mnt.path().to_string_lossy();
    assert!(
        !procs
            .lines()
            .any(|l| l.contains("glacierfs mount") && l.contains(mnt_str.as_ref())),
        "a daemon outlived --stop"
    );
    assert!(
        !procs.contains("glacier-emulator --job-delay"),
        "the emulator outlived --stop"
    );
}
