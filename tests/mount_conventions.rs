//! Mounting the way other file systems are mounted: `mount -t fuse.glacierfs` with `-o`
//! options, an fstab line mounted with `mount MOUNTPOINT`, and what a systemd mount unit made
//! from that line runs. Each goes through the real mount(8) and mount.fuse3 (package fuse3),
//! which find glacierfs on PATH; the kernel must then show the type `fuse.glacierfs` with the
//! source `glacierfs`, the mount must work, and `umount` must end the daemon.
// A test fails by panicking, so unwrap and expect are how it says what went wrong.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use support::emulator::Emulator;
use support::mount::{aws_env, binary, fuse_available, is_mounted, wait_until, UnmountGuard};

const UNIT: &str = include_str!("../systemd/mnt-glacier.mount");

/// A mount namespace of the test's own in which /usr/local/bin holds `glacierfs` (a link to the
/// binary under test), where a user installs it: mount(8) clears PATH before it runs
/// mount.fuse3, which runs the program named by the type's subtype through /bin/sh and its
/// default PATH. The machine's own /usr/local/bin is left alone, and tests running side by
/// side do not see each other's. The test reaches the mounts through the holder's
/// /proc/PID/root, and drops whatever is still mounted when it ends, failed or not.
struct Namespace {
    holder: std::process::Child,
    _bin: tempfile::TempDir,
}

impl Namespace {
    fn new() -> Namespace {
        assert!(
            Path::new("/sbin/mount.fuse3").exists() || Path::new("/usr/sbin/mount.fuse3").exists(),
            "mount.fuse3 is missing: install the fuse3 package (scripts/test.sh does)"
        );
        let bin = tempfile::tempdir().unwrap();
        std::os::unix::fs::symlink(binary(), bin.path().join("glacierfs")).unwrap();
        let holder = Command::new("unshare")
            .args(["--mount", "--propagation", "private", "sleep", "3600"])
            .spawn()
            .unwrap();
        let ns = Namespace { holder, _bin: bin };
        let own = std::fs::read_link("/proc/self/ns/mnt").unwrap();
        let theirs = format!("/proc/{}/ns/mnt", ns.holder.id());
        assert!(
            wait_until(Duration::from_secs(10), || std::fs::read_link(&theirs)
                .is_ok_and(|l| l != own)),
            "unshare --mount did not start"
        );
        let out = ns
            .command("mount")
            .arg("--bind")
            .arg(ns._bin.path())
            .arg("/usr/local/bin")
            .output()
            .unwrap();
        ok("bind-mounting the test's /usr/local/bin", &out);
        ns
    }

    /// `program` run in the namespace, with the emulator's credentials.
    fn command(&self, program: &str) -> Command {
        let mut cmd = Command::new("nsenter");
        aws_env(&mut cmd)
            .arg("-t")
            .arg(self.holder.id().to_string())
            .args(["-m", "--", program]);
        cmd
    }

    /// `path` as the namespace sees it.
    fn path(&self, path: &Path) -> PathBuf {
        Path::new(&format!("/proc/{}/root", self.holder.id()))
            .join(path.strip_prefix("/").unwrap_or(path))
    }

    /// The namespace's mount table line for `mnt`: (mount options, type, source, super options).
    fn mountinfo(&self, mnt: &Path) -> Option<(String, String, String, String)> {
        let info =
            std::fs::read_to_string(format!("/proc/{}/mountinfo", self.holder.id())).unwrap();
        mountinfo_line(&info, mnt)
    }
}

impl Drop for Namespace {
    fn drop(&mut self) {
        let info = std::fs::read_to_string(format!("/proc/{}/mountinfo", self.holder.id()))
            .unwrap_or_default();
        for line in info.lines().filter(|l| l.contains(" - fuse.glacierfs ")) {
            if let Some(mnt) = line.split(' ').nth(4) {
                let _ = self.command("umount").args(["-l", mnt]).output();
            }
        }
        let _ = self.holder.kill();
        let _ = self.holder.wait();
    }
}

/// The line of a mount table for `mnt`: (mount options, type, source, super options).
fn mountinfo_line(info: &str, mnt: &Path) -> Option<(String, String, String, String)> {
    let want = mnt.to_string_lossy();
    info.lines().find_map(|l| {
        let (left, right) = l.split_once(" - ")?;
        let fields: Vec<&str> = left.split(' ').collect();
        if fields.get(4) != Some(&want.as_ref()) {
            return None;
        }
        let right: Vec<&str> = right.split(' ').collect();
        Some((
            fields.get(5)?.to_string(),
            right.first()?.to_string(),
            right.get(1)?.to_string(),
            right.get(2)?.to_string(),
        ))
    })
}

/// Process ids of glacierfs daemons whose command line names `mnt`.
fn daemons_for(mnt: &Path) -> Vec<u32> {
    let want = mnt.to_string_lossy().into_owned();
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(cmdline) = std::fs::read(e.path().join("cmdline")) else {
            continue;
        };
        let args: Vec<String> = cmdline
            .split(|b| *b == 0)
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect();
        let is_glacierfs = args.first().is_some_and(|a| a.ends_with("glacierfs"));
        if is_glacierfs && args.contains(&want) {
            out.push(pid);
        }
    }
    out
}

fn ok(what: &str, out: &Output) {
    assert!(
        out.status.success(),
        "{what} failed ({}): {}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The options every mount here needs to reach the emulator and keep its cache in the test.
fn test_options(emu: &Emulator, cache: &Path) -> String {
    format!(
        "endpoint_url={},region=us-east-1,cache_dir={},poll_interval=1s,write-back-delay=0s",
        emu.endpoint(),
        cache.display()
    )
}

/// What each mounted test starts from: an emulator with the vault `v`, a cache directory and
/// an empty mount point; None where FUSE mounts cannot run.
fn setup() -> Option<(Emulator, tempfile::TempDir, tempfile::TempDir)> {
    if !fuse_available() {
        return None;
    }
    let emu = Emulator::start();
    emu.create_vault("v");
    Some((
        emu,
        tempfile::tempdir().unwrap(),
        tempfile::tempdir().unwrap(),
    ))
}

/// `mount -t fuse.glacierfs glacierfs MNT -o OPTIONS`, in `ns`.
fn mount_t(ns: &Namespace, mnt: &Path, options: &str) -> Command {
    let mut cmd = ns.command("mount");
    cmd.args(["-t", "fuse.glacierfs", "glacierfs"])
        .arg(mnt)
        .args(["-o", options]);
    cmd
}

/// The mount answers, shows the emulator's vault, takes a file and uploads it.
fn check_working(emu: &Emulator, mnt: &Path, name: &str) {
    assert!(
        mnt.join("v").is_dir(),
        "the vault is not in {}",
        mnt.display()
    );
    let file = mnt.join("v").join(name);
    std::fs::write(&file, b"through mount(8)").unwrap();
    assert_eq!(std::fs::read(&file).unwrap(), b"through mount(8)");
    assert!(
        wait_until(Duration::from_secs(30), || emu
            .archives("v")
            .iter()
            .any(|a| a.size == 16)),
        "the file written through the mount never reached the vault"
    );
}

/// `umount` (in `ns`, or here) takes the mount away and the detached daemon notices and exits.
fn unmount_and_check_exit(ns: Option<&Namespace>, mnt: &Path, args: &[&str]) {
    let daemons = daemons_for(mnt);
    assert_eq!(
        daemons.len(),
        1,
        "one daemon for {}: {daemons:?}",
        mnt.display()
    );
    let mut umount = match ns {
        Some(ns) => ns.command("umount"),
        None => Command::new("umount"),
    };
    let out = umount.args(args).arg(mnt).output().unwrap();
    ok("umount", &out);
    let still = match ns {
        Some(ns) => ns.mountinfo(mnt).is_some(),
        None => is_mounted(mnt),
    };
    assert!(!still, "still mounted after umount");
    assert!(
        wait_until(Duration::from_secs(20), || daemons_for(mnt).is_empty()),
        "the daemon did not exit after umount"
    );
}

#[test]
fn mount_t_fuse_glacierfs_with_o_options_mounts_and_umount_stops_it() {
    let Some((emu, cache, mnt)) = setup() else {
        return;
    };
    let ns = Namespace::new();
    let options = format!("defaults,{}", test_options(&emu, cache.path()));
    let out = mount_t(&ns, mnt.path(), &options)
        // fuser says at debug level which capabilities the INIT handshake settled on.
        .env("RUST_LOG", "info,fuser=debug")
        .output()
        .unwrap();
    ok("mount -t fuse.glacierfs", &out);
    // mount(8) returned: the daemon detached once the mount was up, so it is there now.
    let (opts, fstype, source, _) = ns.mountinfo(mnt.path()).expect("mounted");
    assert_eq!(fstype, "fuse.glacierfs");
    assert_eq!(source, "glacierfs");
    for flag in ["rw", "nosuid", "nodev"] {
        assert!(opts.split(',').any(|o| o == flag), "{flag} missing: {opts}");
    }
    check_working(&emu, &ns.path(mnt.path()), "via-mount-t.txt");
    // The session made from our own mount(2) negotiated passthrough as fuser's mount does.
    let log = std::fs::read_to_string(cache.path().join("glacierfs.log")).unwrap();
    assert!(
        log.contains("capability FUSE_PASSTHROUGH enabled") && !log.contains("passthrough is off"),
        "passthrough was not negotiated:\n{log}"
    );
    unmount_and_check_exit(Some(&ns), mnt.path(), &[]);
}

#[test]
fn an_fstab_line_mounts_with_mount_mountpoint() {
    let Some((emu, cache, mnt)) = setup() else {
        return;
    };
    let ns = Namespace::new();
    // The README's line, plus noexec and what reaching the emulator takes; a temporary fstab
    // (util-linux's --fstab), so the machine's own is left alone.
    let fstab = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(
        fstab.path(),
        format!(
            "# a comment, as fstab files have\nglacierfs {} fuse.glacierfs \
             _netdev,nofail,noexec,region=eu-west-1,allow_other,{} 0 0\n",
            mnt.path().display(),
            test_options(&emu, cache.path())
        ),
    )
    .unwrap();
    let out = ns
        .command("mount")
        .arg("--fstab")
        .arg(fstab.path())
        .arg(mnt.path())
        .output()
        .unwrap();
    ok("mount --fstab FILE MOUNTPOINT", &out);
    let (opts, fstype, source, super_opts) = ns.mountinfo(mnt.path()).expect("mounted");
    assert_eq!(fstype, "fuse.glacierfs");
    assert_eq!(source, "glacierfs");
    assert!(
        opts.split(',').any(|o| o == "noexec"),
        "noexec missing: {opts}"
    );
    assert!(
        super_opts.split(',').any(|o| o == "allow_other")
            && super_opts.split(',').any(|o| o == "default_permissions"),
        "allow_other did not reach the kernel: {super_opts}"
    );
    check_working(&emu, &ns.path(mnt.path()), "via-fstab.txt");
    // allow_other: another user sees the mount (and the kernel checks the modes for them).
    let other = ns
        .command("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups", "ls"])
        .arg(mnt.path())
        .output()
        .unwrap();
    ok("ls as nobody", &other);
    assert_eq!(String::from_utf8_lossy(&other.stdout).trim(), "v");
    unmount_and_check_exit(Some(&ns), mnt.path(), &[]);
}

/// The value of `key=` in a unit file (each key here appears once).
fn unit_value<'a>(unit: &'a str, key: &str) -> &'a str {
    unit.lines()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix('='))
        .unwrap_or_else(|| panic!("no {key}= in the unit"))
        .trim()
}

fn escaped_unit_name(mnt: &Path) -> PathBuf {
    let out = Command::new("systemd-escape")
        .args(["--path", "--suffix=mount"])
        .arg(mnt)
        .output()
        .unwrap();
    ok("systemd-escape", &out);
    PathBuf::from(String::from_utf8(out.stdout).unwrap().trim())
}

/// systemd does not run here as PID 1, so the unit is checked by systemd-analyze and then
/// started and stopped the way systemd does it: `mount WHAT WHERE -t TYPE -o OPTIONS` in the
/// unit's environment, then `umount WHERE -c`.
#[test]
fn the_systemd_mount_unit_mounts_and_unmounts_cleanly() {
    let value = |key| unit_value(UNIT, key);
    assert_eq!(value("What"), "glacierfs");
    assert_eq!(value("Type"), "fuse.glacierfs");
    assert_eq!(value("Where"), "/mnt/glacier");
    assert!(value("Options").split(',').any(|o| o == "_netdev"));
    assert_eq!(value("WantedBy"), "remote-fs.target");
    // The file's own name is the escaped Where=, as systemd requires.
    assert_eq!(
        escaped_unit_name(Path::new(value("Where"))),
        PathBuf::from("mnt-glacier.mount")
    );
    assert!(Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("systemd/mnt-glacier.mount")
        .exists());
    let Some((emu, cache, mnt)) = setup() else {
        return;
    };
    let ns = Namespace::new();
    let where_ = mnt.path().to_string_lossy().into_owned();
    // The same unit for this test's mount point, with the emulator's options after the
    // unit's own (a later option overrides an earlier one, as in fstab).
    let options = format!("{},{}", value("Options"), test_options(&emu, cache.path()));
    let text = UNIT
        .replace("/mnt/glacier", &where_)
        .replace(value("Options"), &options);
    let dir = tempfile::tempdir().unwrap();
    let name = escaped_unit_name(mnt.path());
    std::fs::write(dir.path().join(&name), &text).unwrap();
    let verify = Command::new("systemd-analyze")
        .arg("verify")
        .arg(Path::new(".").join(&name))
        .current_dir(dir.path())
        .output()
        .unwrap();
    ok("systemd-analyze verify", &verify);
    let ours = |key| unit_value(&text, key);
    let mut mount = ns.command("mount");
    for (k, v) in ours("Environment")
        .split_whitespace()
        .filter_map(|kv| kv.split_once('='))
    {
        mount.env(k, v);
    }
    // The emulator takes only its own key; the unit's profile would look for a config file.
    mount.env_remove("AWS_PROFILE");
    let out = mount
        .arg(ours("What"))
        .arg(ours("Where"))
        .args(["-t", ours("Type"), "-o", ours("Options")])
        .output()
        .unwrap();
    ok("mount as systemd runs it", &out);
    let (_, fstype, source, super_opts) = ns.mountinfo(mnt.path()).expect("mounted");
    assert_eq!(
        (fstype.as_str(), source.as_str()),
        ("fuse.glacierfs", "glacierfs")
    );
    assert!(super_opts.contains("allow_other"), "{super_opts}");
    check_working(&emu, &ns.path(mnt.path()), "via-unit.txt");
    unmount_and_check_exit(Some(&ns), mnt.path(), &["-c"]);
}

/// A tier's fallback in `-o`, where a comma separates options, takes a colon, and the mount
/// made so falls back from Expedited to Standard when Glacier has no Expedited capacity.
#[test]
fn a_tier_fallback_in_o_options_is_written_with_a_colon() {
    let Some((emu, cache, mnt)) = setup() else {
        return;
    };
    emu.put_archive("v", "urgent.bin", b"needed today", None);
    emu.take_inventory("v");
    emu.set_expedited_shortage(true);
    let ns = Namespace::new();
    let options = format!(
        "tier=expedited:standard,{}",
        test_options(&emu, cache.path())
    );
    ok(
        "mount -t fuse.glacierfs",
        &mount_t(&ns, mnt.path(), &options).output().unwrap(),
    );
    let file = ns.path(mnt.path()).join("v/urgent.bin");
    assert!(
        wait_until(Duration::from_secs(60), || {
            emu.complete_all_jobs();
            file.exists()
        }),
        "the vault never loaded"
    );
    let cold = std::fs::read(&file).unwrap_err();
    assert_eq!(cold.raw_os_error(), Some(libc::EAGAIN));
    let retrieval_tiers = || -> Vec<String> {
        emu.jobs("v")
            .into_iter()
            .filter(|j| j.archive_id.is_some())
            .map(|j| j.tier)
            .collect()
    };
    assert!(
        wait_until(Duration::from_secs(10), || !retrieval_tiers().is_empty()),
        "no retrieval job started"
    );
    assert_eq!(retrieval_tiers(), ["Standard"]);
    let log = std::fs::read_to_string(cache.path().join("glacierfs.log")).unwrap();
    assert!(
        log.contains("Expedited capacity short for urgent.bin; requested Standard"),
        "{log}"
    );
    unmount_and_check_exit(Some(&ns), mnt.path(), &[]);
}

#[test]
fn an_unknown_option_fails_the_mount_with_one_line_naming_it() {
    let Some((emu, cache, mnt)) = setup() else {
        return;
    };
    let ns = Namespace::new();
    let options = format!("{},bogus_opt=1", test_options(&emu, cache.path()));
    let out = mount_t(&ns, mnt.path(), &options).output().unwrap();
    assert!(!out.status.success(), "an unknown option mounted");
    let err = String::from_utf8_lossy(&out.stderr);
    let ours: Vec<&str> = err
        .lines()
        .filter(|l| l.starts_with("glacierfs:"))
        .collect();
    assert_eq!(ours.len(), 1, "{err}");
    assert!(ours[0].contains("\"bogus_opt\""), "{err}");
    assert!(ns.mountinfo(mnt.path()).is_none());
}

/// `glacierfs mount ... -o OPTIONS`, run directly, and the `ro` and `noexec` generic options.
#[test]
fn glacierfs_mount_takes_o_and_ro_reaches_the_kernel() {
    let Some((emu, cache, mnt)) = setup() else {
        return;
    };
    let _guard = UnmountGuard(mnt.path().to_owned());
    let out = aws_env(&mut Command::new(binary()))
        .arg("mount")
        .arg(mnt.path())
        .arg("-o")
        .arg(format!("ro,noexec,{}", test_options(&emu, cache.path())))
        .output()
        .unwrap();
    ok("glacierfs mount -o", &out);
    let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    let (opts, fstype, _, _) = mountinfo_line(&info, mnt.path()).expect("mounted");
    assert_eq!(fstype, "fuse.glacierfs");
    let opts: Vec<&str> = opts.split(',').collect();
    assert!(opts.contains(&"ro") && opts.contains(&"noexec"), "{opts:?}");
    let err = std::fs::write(mnt.path().join("v/no.txt"), b"x").unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::EROFS));
    unmount_and_check_exit(None, mnt.path(), &[]);
}
