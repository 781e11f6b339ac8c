//! The command line as users meet it: `treehash`, value errors, `inventory import` followed by a
//! mount that shows what was imported, and a detached mount that returns once it is ready.
// A test fails by panicking, so unwrap and expect are how it says what went wrong.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::os::unix::fs::PermissionsExt;
use std::process::Command;
use std::time::Duration;

use support::emulator::Emulator;
use support::mount::{aws_env, binary, fuse_available, is_mounted, wait_until, Mount};

fn run(args: &[&str]) -> std::process::Output {
    aws_env(&mut Command::new(binary()))
        .args(args)
        .output()
        .expect("glacierfs runs")
}

#[test]
fn treehash_prints_the_published_vectors() {
    let dir = tempfile::tempdir().unwrap();
    let hello = dir.path().join("hello");
    std::fs::write(&hello, "hello world").unwrap();
    let zeros = dir.path().join("zeros");
    std::fs::write(&zeros, vec![0u8; 3 << 20]).unwrap();
    let out = run(&["treehash", hello.to_str().unwrap(), zeros.to_str().unwrap()]);
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains("b94d27b9934d3e08a52e52d7da7dabfac484efe37a5380ee9088f7ace2efcde9"));
    assert!(text.contains("ca6cc129a4514ec765de86a4e7a49adf44842c9cac213c383ebe4071271bdf21"));

    let missing = run(&["treehash", dir.path().join("nope").to_str().unwrap()]);
    assert_eq!(missing.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&missing.stderr).contains("nope"));
}

#[test]
fn bad_values_get_a_clear_message_and_exit_code_2() {
    for (args, needle) in [
        (vec!["mount", "--cache-size", "ten", "/mnt"], "invalid size"),
        (vec!["mount", "--part-size", "3MiB", "/mnt"], "power of two"),
        (
            vec!["mount", "--write-back-delay", "5 weeks", "/mnt"],
            "invalid duration",
        ),
        (vec!["mount", "--tier", "fast", "/mnt"], "invalid tier"),
    ] {
        let out = run(&args);
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        assert!(
            String::from_utf8_lossy(&out.stderr).contains(needle),
            "{args:?}"
        );
    }
}

#[test]
fn an_imported_inventory_is_browsable() {
    let cache = tempfile::tempdir().unwrap();
    let cache_dir = cache.path().join("cache");
    let inv = cache.path().join("inventory.csv");
    let (aa, bb) = ("a".repeat(64), "b".repeat(64));
    std::fs::write(
        &inv,
        format!(
            "ArchiveId,ArchiveDescription,CreationDate,Size,SHA256TreeHash\r\n\
             id-one,\"reports/2019, final.pdf\",2019-05-01T10:00:00Z,1234,{aa}\r\n\
             id-two,reports/draft.txt,2019-04-01T10:00:00Z,10,{bb}\r\n"
        ),
    )
    .unwrap();
    let out = run(&[
        "inventory",
        "import",
        "--cache-dir",
        cache_dir.to_str().unwrap(),
        "archive",
        inv.to_str().unwrap(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("2 archives"));
    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&cache_dir), 0o700);
    assert_eq!(mode(&cache_dir.join("catalog.db")), 0o600);

    if !fuse_available() {
        return;
    }
    // An imported inventory browses offline before any endpoint has answered...
    {
        let offline = Mount::start("http://127.0.0.1:9", &cache_dir, &[]);
        assert_eq!(
            std::fs::metadata(offline.path("archive/reports/2019, final.pdf"))
                .unwrap()
                .len(),
            1234,
            "log:\n{}",
            offline.log_text()
        );
    }
    // ...and a vault Glacier never inventoried needs no job: the catalog is its whole view.
    let emu = Emulator::start();
    emu.create_vault("archive");
    let m = Mount::start(&emu.endpoint(), &cache_dir, &[]);
    let pdf = m.path("archive/reports/2019, final.pdf");
    assert_eq!(std::fs::metadata(&pdf).unwrap().len(), 1234);
    assert_eq!(
        std::fs::metadata(m.path("archive/reports/draft.txt"))
            .unwrap()
            .len(),
        10
    );
    assert!(
        emu.jobs("archive").is_empty(),
        "no inventory job for a never-inventoried vault"
    );
    for entry in std::fs::read_dir(&cache_dir).unwrap() {
        let p = entry.unwrap().path();
        let want = if p.is_dir() { 0o700 } else { 0o600 };
        assert_eq!(mode(&p), want, "{}", p.display());
    }
}

#[test]
fn a_detached_mount_returns_once_ready_and_reports_failures() {
    if !fuse_available() {
        return;
    }
    let emu = Emulator::start();
    emu.create_vault("v");
    let cache = tempfile::tempdir().unwrap();
    let mnt = tempfile::tempdir().unwrap();
    let args = |m: &std::path::Path| {
        vec![
            "mount".to_string(),
            "--endpoint-url".into(),
            emu.endpoint(),
            "--region".into(),
            "us-east-1".into(),
            "--cache-dir".into(),
            cache.path().to_string_lossy().into_owned(),
            m.to_string_lossy().into_owned(),
        ]
    };
    let out = aws_env(&mut Command::new(binary()))
        .args(args(mnt.path()))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let guard = support::mount::UnmountGuard(mnt.path().to_owned());
    assert!(
        is_mounted(mnt.path()),
        "mount returned before the file system was ready"
    );
    assert!(mnt.path().join("v").is_dir());

    // A second mount on the same cache directory fails, and says why.
    let other = tempfile::tempdir().unwrap();
    let second = aws_env(&mut Command::new(binary()))
        .args(args(other.path()))
        .output()
        .unwrap();
    assert_eq!(second.status.code(), Some(1));
    let msg = String::from_utf8_lossy(&second.stderr);
    assert!(msg.contains("in use by another glacierfs mount"), "{msg}");

    // Unmounted from outside, the daemon exits on its own.
    let pid: i32 = std::fs::read_to_string(cache.path().join("lock"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert!(Command::new("umount")
        .arg(mnt.path())
        .status()
        .unwrap()
        .success());
    drop(guard);
    assert!(
        // SAFETY: signal 0 only asks whether the process exists.
        wait_until(Duration::from_secs(20), || unsafe { libc::kill(pid, 0) }
            != 0),
        "the daemon outlived its mount"
    );
}

#[test]
fn mount_failures_say_what_is_wrong() {
    if !fuse_available() {
        return;
    }
    let emu = Emulator::start();
    let cache = tempfile::tempdir().unwrap();
    let missing = cache.path().join("no-such-dir");
    let out = run(&[
        "mount",
        "--endpoint-url",
        &emu.endpoint(),
        "--region",
        "us-east-1",
        "--cache-dir",
        cache.path().join("c").to_str().unwrap(),
        missing.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("does not exist"),
        "{:?}",
        out
    );

    // No credentials anywhere in the chain.
    let mnt = tempfile::tempdir().unwrap();
    let home = tempfile::tempdir().unwrap();
    let out = Command::new(binary())
        .env_clear()
        .env("HOME", home.path())
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .env("AWS_CONFIG_FILE", "/dev/null")
        .env("AWS_SHARED_CREDENTIALS_FILE", "/dev/null")
        .args([
            "mount",
            "--endpoint-url",
            &emu.endpoint(),
            "--region",
            "us-east-1",
            "--cache-dir",
        ])
        .arg(cache.path().join("c2"))
        .arg(mnt.path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let msg = String::from_utf8_lossy(&out.stderr);
    assert!(msg.contains("credentials"), "{msg}");
    assert!(!is_mounted(mnt.path()));
}

#[test]
fn a_damaged_catalog_refuses_the_mount_and_says_what_to_do() {
    if !fuse_available() {
        return;
    }
    let emu = Emulator::start();
    let cache = tempfile::tempdir().unwrap();
    std::fs::set_permissions(cache.path(), std::fs::Permissions::from_mode(0o700)).unwrap();
    std::fs::write(cache.path().join("catalog.db"), vec![0x5a; 64 * 1024]).unwrap();
    let err = Mount::try_start(&emu.endpoint(), cache.path(), &[])
        .err()
        .expect("refused");
    assert!(
        err.contains("damaged") && err.contains("glacierfs catalog rebuild"),
        "{err}"
    );
}

/// `glacierfs … | head -1` stops quietly when `head` goes, as other tools do: killed by
/// SIGPIPE, with nothing on stderr, rather than a panic on the failed write.
#[test]
fn a_command_piped_into_head_stops_quietly() {
    let dir = tempfile::tempdir().unwrap();
    // Far more output than a pipe holds, so the writes after `head` exits must fail.
    for i in 0..3000 {
        std::fs::write(dir.path().join(format!("f{i:04}")), i.to_string()).unwrap();
    }
    let script = format!(
        "{} treehash {}/f* | head -1; echo \"exit=${{PIPESTATUS[0]}}\" >&2",
        binary(),
        dir.path().display()
    );
    let out = Command::new("bash")
        .arg("-c")
        .arg(&script)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(stdout.lines().count(), 1, "{stdout}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert_eq!(
        stderr.trim(),
        "exit=141",
        "killed by SIGPIPE, nothing else said"
    );
}
