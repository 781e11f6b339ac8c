//! Browsing costs nothing, through a real mount over the Glacier emulator: `gio`, `file` and
//! programs named like thumbnailers open cold files and start no retrieval job (counted at the
//! emulator), while `cat` still does; `--retrieve-allow` and `--retrieve-deny` move programs on
//! and off the list; refused peeks are counted for `glacierfs status` and logged once a minute
//! per program; the job cap of automatic retrievals holds across a remount; and `du` counts
//! only data on this machine.
// A test fails by panicking, so unwrap and expect are how it says what went wrong.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use glacierfs::catalog::{meta, Catalog};
use support::emulator::{ClockStart, Emulator, EmulatorOptions, Op};
use support::export::mt2;
use support::mount::{fuse_available, wait_until, Mount};
use support::walk;

const VAULT: &str = "pictures";

/// A JPEG's and a PNG's first bytes, so a type sniffer has something to find if it ever got
/// the data.
fn jpeg() -> Vec<u8> {
    let mut d = b"\xff\xd8\xff\xe0\x00\x10JFIF\x00\x01\x01\x00\x00\x01\x00\x01\x00\x00".to_vec();
    d.resize(70_000, 0x55);
    d
}

fn png() -> Vec<u8> {
    let mut d = b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR".to_vec();
    d.resize(5_000, 0x22);
    d
}

/// Cold files with and without extensions, and with names no type can be guessed from.
fn gallery() -> BTreeMap<String, Vec<u8>> {
    [
        ("beach.jpg", jpeg()),
        ("photos/scan", png()),
        ("photos/IMG_0001.PNG", png()),
        ("docs/README", b"read me first\n".to_vec()),
        ("docs/notes.md", b"# notes\n".to_vec()),
        ("blob", vec![0u8, 1, 2, 3, 250, 251, 252, 253]),
    ]
    .into_iter()
    .map(|(p, d)| (p.to_owned(), d))
    .collect()
}

/// A mount over a vault of cold files, with the emulator and cache behind it. Fields drop in
/// order: the mount goes before its cache and its endpoint.
struct Fixture {
    mount: Mount,
    cache: tempfile::TempDir,
    emu: Emulator,
}

impl Fixture {
    /// `files` in the vault, inventoried, mounted with `extra`, and loaded into the catalog;
    /// the emulator's counts start after the inventory. The emulator runs on real time, so
    /// the retrieval budget's 24 h window counts the jobs it dates.
    fn start(files: &BTreeMap<String, Vec<u8>>, extra: &[&str]) -> Fixture {
        let emu = Emulator::start_with(EmulatorOptions {
            clock: ClockStart::RealNow,
            ..EmulatorOptions::default()
        });
        emu.create_vault(VAULT);
        for (path, data) in files {
            emu.put_archive(VAULT, &mt2(path, 1_600_000_000), data, None);
        }
        emu.take_inventory(VAULT);
        let cache = tempfile::tempdir().unwrap();
        let mount = Mount::start(&emu.endpoint(), cache.path(), extra);
        let vault = mount.path(VAULT);
        let _ = std::fs::read_dir(&vault).map(|d| d.count());
        let loaded = wait_until(Duration::from_secs(60), || {
            emu.complete_all_jobs();
            walk(&vault).values().filter(|v| v.is_some()).count() >= files.len()
        });
        assert!(loaded, "the vault never loaded; log:\n{}", mount.log_text());
        emu.reset_stats();
        Fixture { mount, cache, emu }
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.mount.path(VAULT).join(rel)
    }

    fn cache(&self) -> &Path {
        self.cache.path()
    }

    /// Jobs the emulator was asked for since the vault loaded.
    fn initiated(&self) -> u64 {
        self.emu.stats().requests_for(Op::InitiateJob)
    }

    /// Asks for `rel` through `user.glacier.retrieve`, as `glacierfs retrieve` does.
    fn request(&self, rel: &str) {
        let out = Command::new("setfattr")
            .args(["-n", "user.glacier.retrieve", "-v", ""])
            .arg(self.path(rel))
            .output()
            .unwrap();
        assert!(out.status.success(), "setfattr {rel}: {out:?}");
    }

    /// Lets Glacier finish every job until `rel` is cached.
    fn wait_cached(&self, rel: &str) {
        let path = self.path(rel);
        assert!(
            wait_until(Duration::from_secs(30), || {
                self.emu.complete_all_jobs();
                support::xattr(&path, "user.glacier.state").as_deref() == Ok("cached")
            }),
            "{rel} was never retrieved; log:\n{}",
            self.mount.log_text()
        );
    }

    /// Waits until the emulator was asked for `n` jobs.
    fn wait_initiated(&self, n: u64, what: &str) {
        assert!(
            wait_until(Duration::from_secs(10), || self.initiated() == n),
            "{what}: {} jobs, not {n}; log:\n{}",
            self.initiated(),
            self.mount.log_text()
        );
    }
}

/// Runs `program` with `args`; the output, whatever the exit status.
fn run(program: impl AsRef<std::ffi::OsStr>, args: &[&Path]) -> Output {
    let program = program.as_ref();
    Command::new(program)
        .args(args)
        // Local paths through GLib's own local file code: a machine with gvfs installed would
        // otherwise try to reach a session bus that a test run does not have.
        .env("GIO_USE_VFS", "local")
        .output()
        .unwrap_or_else(|e| panic!("{program:?} runs: {e}"))
}

/// `run`, with stdout and stderr as one text.
fn run_text(program: impl AsRef<std::ffi::OsStr>, args: &[&Path]) -> String {
    let out = run(program, args);
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// A copy of `tool` named `name` in `dir`: its command name is then `name`, as a real
/// thumbnailer's would be.
fn renamed(tool: &str, name: &str, dir: &Path) -> PathBuf {
    let to = dir.join(name);
    std::fs::copy(tool, &to).unwrap_or_else(|e| panic!("copying {tool}: {e}"));
    to
}

/// The mount's refused-peek counters, as `glacierfs status` reads them (the catalog alone).
fn refused(cache: &Path) -> BTreeMap<String, u64> {
    Catalog::open_read_only(cache)
        .expect("the catalog opens beside the mount")
        .read(meta::refused_peeks)
        .expect("counters")
        .into_iter()
        .collect()
}

/// Waits until `program`'s counter reaches at least `n`; its value then.
fn wait_refused(cache: &Path, program: &str, n: u64) -> u64 {
    let reached = wait_until(Duration::from_secs(10), || {
        refused(cache).get(program).copied().unwrap_or(0) >= n
    });
    let got = refused(cache);
    assert!(
        reached,
        "{program} never reached {n} refused peeks: {got:?}"
    );
    got[program]
}

/// Waits long enough for a job an open asked for to reach the emulator (jobs start in the
/// background within milliseconds), so "no job" is not just "not yet".
fn settle() {
    std::thread::sleep(Duration::from_secs(2));
}

fn assert_eagain(what: &str, out: &Output) {
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{what} succeeded on a cold file");
    assert!(
        err.contains("Resource temporarily unavailable"),
        "{what}: {err}"
    );
}

#[test]
fn gio_file_and_thumbnailers_start_no_job_and_cat_does() {
    if !fuse_available() {
        return;
    }
    let files = gallery();
    let f = Fixture::start(&files, &[]);

    // A file manager's listing: every entry with its content type, which GIO sniffs from the
    // first bytes when the name does not settle it.
    for dir in ["", "photos", "docs"] {
        let listing = run_text(
            "gio",
            &[
                Path::new("list"),
                Path::new("-a"),
                Path::new("standard::content-type"),
                &f.path(dir),
            ],
        );
        assert!(listing.contains("content-type"), "gio list: {listing}");
    }
    for rel in files.keys() {
        let info = run("gio", &[Path::new("info"), &f.path(rel)]);
        assert!(info.status.success(), "gio info {rel}: {info:?}");
    }
    // gio did open cold files (and was told no): the test is not passing by never asking.
    wait_refused(f.cache(), "gio", 1);

    for rel in files.keys() {
        // `file` reports a failed open in its own words ("no read permission", or "cannot
        // open"), and never the type the data would show.
        let path = f.path(rel);
        let text = run_text("file", &[&path]);
        let said = text.replace(&format!("{}: ", path.display()), "");
        assert!(
            !said.contains("JPEG") && !said.contains("PNG") && !said.contains("text"),
            "file {rel} read the data: {text}"
        );
    }
    wait_refused(f.cache(), "file", files.len() as u64);

    // Programs named like thumbnailers, reading images as theirs would.
    let bin = tempfile::tempdir().unwrap();
    let ffmpeg = renamed("/usr/bin/head", "ffmpegthumbnailer", bin.path());
    let tumbler = renamed("/bin/cat", "tumblerd", bin.path());
    for image in ["beach.jpg", "photos/scan", "photos/IMG_0001.PNG"] {
        let image = f.path(image);
        assert_eagain("ffmpegthumbnailer", &run(&ffmpeg, &[&image]));
        assert_eagain("tumblerd", &run(&tumbler, &[&image]));
    }
    wait_refused(f.cache(), "ffmpegthumbnailer", 3);
    wait_refused(f.cache(), "tumblerd", 3);

    settle();
    assert_eq!(f.initiated(), 0, "a peek started a retrieval job");
    assert!(
        f.emu.jobs(VAULT).iter().all(|j| j.archive_id.is_none()),
        "a peek started a retrieval job: {:?}",
        f.emu.jobs(VAULT)
    );
    assert_eq!(
        support::xattr(&f.path("beach.jpg"), "user.glacier.state").as_deref(),
        Ok("cold")
    );

    // A program that reads for the user starts one, as before.
    assert_eagain("cat", &run("cat", &[&f.path("beach.jpg")]));
    f.wait_initiated(1, "cat after the peeks");
    settle();
    assert_eq!(f.initiated(), 1, "cat started more than one job");

    // The log says why, once per program: "refused N peeks by P ...".
    for program in ["gio", "file", "ffmpegthumbnailer", "tumblerd"] {
        let said = format!(" by {program} at cold files in the last minute; they start no");
        assert!(
            wait_until(Duration::from_secs(5), || f
                .mount
                .log_text()
                .contains(&said)),
            "no log line for {program}:\n{}",
            f.mount.log_text()
        );
    }
}

#[test]
fn refused_peeks_are_counted_and_logged_once_a_minute() {
    if !fuse_available() {
        return;
    }
    let mut f = Fixture::start(&gallery(), &[]);
    let bin = tempfile::tempdir().unwrap();
    let thumbnailer = renamed("/usr/bin/head", "totem-video-thumbnailer", bin.path());
    let lines = |m: &Mount| {
        m.log_text()
            .lines()
            .filter(|l| l.contains("peeks by totem-video-thumbnailer at cold files"))
            .map(str::to_owned)
            .collect::<Vec<_>>()
    };
    let image = f.path("beach.jpg");
    for _ in 0..5 {
        assert_eagain("the thumbnailer", &run(&thumbnailer, &[&image]));
    }
    // The whole name, though the kernel keeps only "totem-video-thu" of it.
    assert_eq!(wait_refused(f.cache(), "totem-video-thumbnailer", 5), 5);
    assert!(
        wait_until(Duration::from_secs(5), || !lines(&f.mount).is_empty()),
        "no log line; log:\n{}",
        f.mount.log_text()
    );
    for _ in 0..7 {
        assert_eagain("the thumbnailer", &run(&thumbnailer, &[&image]));
    }
    assert_eq!(wait_refused(f.cache(), "totem-video-thumbnailer", 12), 12);
    std::thread::sleep(Duration::from_secs(3));
    let said = lines(&f.mount);
    assert_eq!(said.len(), 1, "logged more than once a minute: {said:#?}");
    assert!(
        said[0].contains("refused ") && said[0].contains("they start no retrieval"),
        "{}",
        said[0]
    );
    assert_eq!(f.initiated(), 0, "a peek started a job");
    // `glacierfs status` says why previews stay empty.
    let status = Command::new(support::mount::binary())
        .args(["status", "--cache-dir"])
        .arg(f.cache())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&status.stdout);
    let line = text
        .lines()
        .find(|l| l.starts_with("peeks refused:"))
        .unwrap_or_else(|| panic!("no peeks line in status:\n{text}"));
    assert!(
        line.contains("12 opens") && line.contains("totem-video-thumbnailer 12"),
        "{line}"
    );

    // The count is the mount's: it stays after the unmount, and a new mount starts over.
    f.mount.kill();
    assert_eq!(
        refused(f.cache()).get("totem-video-thumbnailer"),
        Some(&12),
        "the count did not outlive the daemon"
    );
    let endpoint = f.emu.endpoint();
    f.mount.remount(&endpoint, &[]);
    assert!(
        refused(f.cache()).is_empty(),
        "a new mount kept the old count"
    );
}

#[test]
fn retrieve_allow_and_deny_move_programs_on_and_off_the_list() {
    if !fuse_available() {
        return;
    }
    let f = Fixture::start(
        &gallery(),
        &[
            "--retrieve-allow",
            "ffmpegthumbnailer",
            "--retrieve-deny",
            "cat",
        ],
    );

    // cat is denied: no job.
    assert_eagain("cat", &run("cat", &[&f.path("beach.jpg")]));
    wait_refused(f.cache(), "cat", 1);
    settle();
    assert_eq!(f.initiated(), 0, "a denied cat started a job");

    // tumblerd is still on the built-in list.
    let bin = tempfile::tempdir().unwrap();
    let tumbler = renamed("/bin/cat", "tumblerd", bin.path());
    assert_eagain("tumblerd", &run(&tumbler, &[&f.path("photos/scan")]));
    wait_refused(f.cache(), "tumblerd", 1);
    settle();
    assert_eq!(f.initiated(), 0, "tumblerd started a job");

    // The allowed thumbnailer starts jobs again.
    let ffmpeg = renamed("/usr/bin/head", "ffmpegthumbnailer", bin.path());
    assert_eagain("ffmpegthumbnailer", &run(&ffmpeg, &[&f.path("beach.jpg")]));
    f.wait_initiated(1, "the allowed thumbnailer");
    assert!(!refused(f.cache()).contains_key("ffmpegthumbnailer"));

    // Explicit requests ignore the list: the attribute starts a job whoever sets it.
    f.request("photos/scan");
    f.wait_initiated(2, "the attribute");
}

#[test]
fn the_job_cap_holds_across_a_remount() {
    if !fuse_available() {
        return;
    }
    let files: BTreeMap<String, Vec<u8>> = (1..=5)
        .map(|k| (format!("f{k}"), vec![k as u8; 1000]))
        .collect();
    let cap = ["--retrieval-job-budget", "3"];
    let mut f = Fixture::start(&files, &cap);
    let quota = |what: &str, out: &Output| {
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            !out.status.success() && err.contains("Disk quota exceeded"),
            "{what}: {err}"
        );
    };

    for k in 1..=3 {
        assert_eagain("cat", &run("cat", &[&f.path(&format!("f{k}"))]));
    }
    f.wait_initiated(3, "three cold opens");
    quota("a fourth cold open", &run("cat", &[&f.path("f4")]));
    // A file whose job is running waits on it, as before.
    assert_eagain("cat f1 again", &run("cat", &[&f.path("f1")]));
    settle();
    assert_eq!(f.initiated(), 3);

    // The count is in the catalog: a new daemon on the same cache still says no.
    let endpoint = f.emu.endpoint();
    f.mount.remount(&endpoint, &cap);
    quota("f4 after a remount", &run("cat", &[&f.path("f4")]));
    quota("f5 after a remount", &run("cat", &[&f.path("f5")]));
    assert_eagain("f2 after a remount", &run("cat", &[&f.path("f2")]));
    settle();
    assert_eq!(f.initiated(), 3, "the cap was passed after a remount");

    // A raised cap lets the next open through.
    f.mount.remount(&endpoint, &["--retrieval-job-budget", "4"]);
    assert_eagain("f4 with room", &run("cat", &[&f.path("f4")]));
    f.wait_initiated(4, "a fourth job under a cap of 4");
}

/// `du -s -B1` of `path`: bytes of blocks on this machine.
fn du(path: &Path) -> u64 {
    let out = Command::new("du")
        .arg("-s")
        .arg("-B1")
        .arg(path)
        .output()
        .unwrap();
    assert!(out.status.success(), "du: {out:?}");
    let text = String::from_utf8_lossy(&out.stdout);
    text.split_whitespace()
        .next()
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("du printed {text:?}"))
}

/// `stat -c %b`: the blocks of `path`.
fn blocks(path: &Path) -> u64 {
    let out = Command::new("stat")
        .args(["-c", "%b"])
        .arg(path)
        .output()
        .unwrap();
    assert!(out.status.success(), "stat: {out:?}");
    String::from_utf8_lossy(&out.stdout).trim().parse().unwrap()
}

#[test]
fn du_counts_only_data_on_this_machine() {
    if !fuse_available() {
        return;
    }
    let files = gallery();
    let f = Fixture::start(&files, &[]);
    let vault = f.path("");
    assert_eq!(du(&vault), 0, "a vault of cold files holds nothing here");
    let apparent = Command::new("du")
        .args(["-s", "-B1", "--apparent-size"])
        .arg(&vault)
        .output()
        .unwrap();
    let apparent: u64 = String::from_utf8_lossy(&apparent.stdout)
        .split_whitespace()
        .next()
        .and_then(|n| n.parse().ok())
        .unwrap();
    let total: u64 = files.values().map(|d| d.len() as u64).sum();
    assert!(apparent >= total, "sizes still show: {apparent} < {total}");
    let blocks_of = |rel: &str| files[rel].len().div_ceil(512) as u64;

    // Retrieved, the file counts.
    assert_eagain("cat", &run("cat", &[&f.path("beach.jpg")]));
    f.wait_cached("beach.jpg");
    let mut here = blocks_of("beach.jpg") * 512;
    assert_eq!(du(&vault), here);

    // Retrieved without an open, the file counts too, in `stat` as well: the kernel keeps
    // the cold attributes it was given (`stat` asks for none anew, unlike a listing) until the
    // daemon tells it they changed.
    let scan = f.path("photos/scan");
    assert_eq!(blocks(&scan), 0);
    f.request("photos/scan");
    f.wait_cached("photos/scan");
    let want = blocks_of("photos/scan");
    assert!(
        wait_until(Duration::from_secs(5), || blocks(&scan) == want),
        "stat says {} blocks, not {want}",
        blocks(&scan)
    );
    here += want * 512;
    assert_eq!(du(&vault), here);

    // So does a file written here.
    std::fs::write(f.path("new.txt"), vec![b'x'; 1500]).unwrap();
    assert_eq!(du(&vault), here + 1536);
}

#[test]
fn an_evicted_file_has_no_blocks_again() {
    if !fuse_available() {
        return;
    }
    let files: BTreeMap<String, Vec<u8>> = [
        ("beach.jpg".to_owned(), jpeg()),
        ("dunes.jpg".to_owned(), jpeg()),
    ]
    .into();
    // Room for one of the two.
    let f = Fixture::start(&files, &["--cache-size", "100000"]);
    let beach = f.path("beach.jpg");
    f.request("beach.jpg");
    f.wait_cached("beach.jpg");
    assert_eq!(std::fs::read(&beach).unwrap(), files["beach.jpg"]);
    assert_eq!(
        blocks(&beach),
        files["beach.jpg"].len().div_ceil(512) as u64
    );

    // The next retrieval pushes the one read least recently out of the cache.
    f.request("dunes.jpg");
    f.wait_cached("dunes.jpg");
    assert!(
        wait_until(Duration::from_secs(30), || {
            support::xattr(&beach, "user.glacier.state").as_deref() == Ok("cold")
        }),
        "beach.jpg was never evicted; log:\n{}",
        f.mount.log_text()
    );
    assert!(
        wait_until(Duration::from_secs(5), || blocks(&beach) == 0),
        "an evicted file still shows {} blocks",
        blocks(&beach)
    );
}
