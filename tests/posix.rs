//! The POSIX details of a vault, through a real mount and the tools users run (SEMANTICS.md,
//! "Symlinks, special files and times"): symlinks, fifos, sockets and device nodes as catalog
//! entries; ENAMETOOLONG for a component over 255 bytes; directory times and link counts; atime
//! kept apart from mtime; ctime on every metadata change; and `rsync -a`, `cp -a` and `tar -x`
//! of a tree with all of these reading back equal.
// A test fails by panicking, so unwrap and expect are how it says what went wrong.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::Path;
use std::process::Command;

use support::emulator::Emulator;
use support::mount::{fuse_available, sync_wait, Mount};

const VAULT: &str = "posix";

fn mount(emu: &Emulator, cache: &Path) -> Mount {
    emu.create_vault(VAULT);
    Mount::start(&emu.endpoint(), cache, &["--write-back-delay", "1s"])
}

/// Runs a command; fails the test with its output unless it succeeds. Returns its stdout.
fn run(cmd: &mut Command) -> String {
    let out = cmd.output().expect("the command runs");
    assert!(
        out.status.success(),
        "{cmd:?} failed ({}): {}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// Runs a python3 script with `args`; its stdout.
fn py(script: &str, args: &[&Path]) -> String {
    run(Command::new("python3").arg("-c").arg(script).args(args))
}

fn lstat(p: &Path) -> std::fs::Metadata {
    std::fs::symlink_metadata(p).unwrap_or_else(|e| panic!("lstat {}: {e}", p.display()))
}

/// A long listing spans several replies, and past the first the kernel asks for names and
/// kinds only (READDIRPLUS_AUTO, while nothing in the directory is stat'ed): `ls -f` and
/// `find -type`, which stat nothing, see every entry once and with its kind on those pages.
#[test]
fn a_long_listing_shows_every_entry_once_with_its_kind() {
    if !fuse_available() {
        return;
    }
    let emu = Emulator::start();
    let cache = tempfile::tempdir().unwrap();
    let m = mount(&emu, cache.path());
    let d = m.path(VAULT).join("many");
    std::fs::create_dir(&d).unwrap();
    // Listings go in creation order: the other kinds, made last, come on a later reply.
    const FILES: usize = 1000;
    for i in 0..FILES {
        std::fs::File::create(d.join(format!("file-{i:04}"))).unwrap();
    }
    std::os::unix::fs::symlink("file-0000", d.join("link")).unwrap();
    run(Command::new("mkfifo").arg(d.join("fifo")));
    std::fs::create_dir(d.join("sub")).unwrap();

    let listed = run(Command::new("ls").arg("-f").arg(&d));
    let mut listed: Vec<&str> = listed.lines().collect();
    listed.sort_unstable();
    let mut want: Vec<String> = (0..FILES).map(|i| format!("file-{i:04}")).collect();
    want.extend([".", "..", "link", "fifo", "sub"].map(String::from));
    want.sort_unstable();
    assert_eq!(listed, want, "ls -f");
    for (kind, name) in [("l", "link"), ("p", "fifo"), ("d", "sub")] {
        let found = run(Command::new("find").arg(&d).args([
            "-mindepth",
            "1",
            "-type",
            kind,
            "-printf",
            "%P\n",
        ]));
        assert_eq!(found.trim(), name, "find -type {kind}");
    }
    let files = run(Command::new("find")
        .arg(&d)
        .args(["-mindepth", "1", "-type", "f"]));
    assert_eq!(files.lines().count(), FILES, "find -type f");
}

#[test]
fn symlinks_fifos_sockets_and_devices_live_in_the_catalog() {
    if !fuse_available() {
        return;
    }
    let emu = Emulator::start();
    let cache = tempfile::tempdir().unwrap();
    let mut m = mount(&emu, cache.path());
    let v = m.path(VAULT);
    std::fs::write(v.join("file.txt"), b"through the link\n").unwrap();

    // ln -s and readlink, with a target kept byte for byte (it need not exist).
    run(Command::new("ln")
        .args(["-s", "file.txt"])
        .arg(v.join("rel")));
    run(Command::new("ln")
        .args(["-s", "../nowhere/ x\u{e9}"])
        .arg(v.join("dangling")));
    assert_eq!(
        run(Command::new("readlink").arg(v.join("rel"))),
        "file.txt\n"
    );
    assert_eq!(
        run(Command::new("readlink").arg(v.join("dangling"))),
        "../nowhere/ x\u{e9}\n"
    );
    let rel = lstat(&v.join("rel"));
    assert!(rel.file_type().is_symlink());
    assert_eq!(
        rel.len(),
        "file.txt".len() as u64,
        "a symlink's size is its target's length"
    );
    assert_eq!(rel.permissions().mode() & 0o777, 0o777);
    assert_eq!(
        std::fs::read(v.join("rel")).unwrap(),
        b"through the link\n",
        "the kernel follows the link"
    );

    // mkfifo: the kernel serves the pipe, so the bytes never pass the daemon.
    run(Command::new("mkfifo")
        .args(["-m", "0640"])
        .arg(v.join("fifo")));
    let fifo = lstat(&v.join("fifo"));
    assert!(fifo.file_type().is_fifo());
    assert_eq!(fifo.permissions().mode() & 0o7777, 0o640);
    let piped = py(
        "import os, sys\n\
         fd = os.open(sys.argv[1], os.O_RDWR)\n\
         os.write(fd, b'via the pipe')\n\
         print(os.read(fd, 100).decode())",
        &[&v.join("fifo")],
    );
    assert_eq!(piped, "via the pipe\n");

    // Device nodes (root may make them) keep their numbers.
    run(Command::new("mknod")
        .args(["-m", "0600"])
        .arg(v.join("null"))
        .args(["c", "1", "3"]));
    run(Command::new("mknod")
        .arg(v.join("loop"))
        .args(["b", "7", "9"]));
    let null = lstat(&v.join("null"));
    assert!(null.file_type().is_char_device());
    assert_eq!(null.rdev(), libc::makedev(1, 3));
    assert_eq!(null.permissions().mode() & 0o7777, 0o600);
    let blk = lstat(&v.join("loop"));
    assert!(blk.file_type().is_block_device());
    assert_eq!(blk.rdev(), libc::makedev(7, 9));

    // A unix socket bound in the vault, and one made by mknod.
    py(
        "import socket, sys\n\
         s = socket.socket(socket.AF_UNIX)\n\
         s.bind(sys.argv[1])\n\
         s.close()",
        &[&v.join("bound.sock")],
    );
    py(
        "import os, stat, sys\nos.mknod(sys.argv[1], 0o600 | stat.S_IFSOCK)",
        &[&v.join("made.sock")],
    );
    assert!(lstat(&v.join("bound.sock")).file_type().is_socket());
    assert!(lstat(&v.join("made.sock")).file_type().is_socket());
    // mknod of a regular file is an empty file.
    py("import os, sys\nos.mknod(sys.argv[1])", &[&v.join("plain")]);
    let plain = lstat(&v.join("plain"));
    assert!(plain.file_type().is_file() && plain.len() == 0);

    // Hard links stay refused.
    let link = std::fs::hard_link(v.join("file.txt"), v.join("hard")).unwrap_err();
    assert_eq!(link.raw_os_error(), Some(libc::EPERM));

    // chmod keeps a fifo a fifo; chown and touch -h reach a symlink itself.
    std::fs::set_permissions(v.join("fifo"), std::fs::Permissions::from_mode(0o604)).unwrap();
    let fifo = lstat(&v.join("fifo"));
    assert!(fifo.file_type().is_fifo());
    assert_eq!(fifo.permissions().mode() & 0o7777, 0o604);
    std::os::unix::fs::lchown(v.join("rel"), Some(1234), Some(4321)).unwrap();
    run(Command::new("touch")
        .args(["-h", "-d", "@1000000000.25"])
        .arg(v.join("rel")));
    let rel = lstat(&v.join("rel"));
    assert_eq!((rel.uid(), rel.gid()), (1234, 4321));
    assert_eq!(
        (rel.mtime(), rel.mtime_nsec()),
        (1_000_000_000, 250_000_000)
    );

    // Rename and unlink; a symlink may replace a fifo (neither is a directory).
    std::fs::rename(v.join("dangling"), v.join("moved")).unwrap();
    std::fs::rename(v.join("moved"), v.join("made.sock")).unwrap();
    assert!(lstat(&v.join("made.sock")).file_type().is_symlink());
    std::fs::remove_file(v.join("bound.sock")).unwrap();
    assert!(std::fs::symlink_metadata(v.join("bound.sock")).is_err());
    // A directory cannot take a symlink's place, nor a symlink a directory's.
    std::fs::create_dir(v.join("dir")).unwrap();
    let err = std::fs::rename(v.join("dir"), v.join("rel")).unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::ENOTDIR));
    let err = std::fs::rename(v.join("rel"), v.join("dir")).unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::EISDIR));

    // None of them is ever uploaded: only file.txt becomes an archive.
    sync_wait(&v);
    let archives = emu.archives(VAULT);
    assert_eq!(archives.len(), 1, "{archives:?}");

    // They survive a remount, as the catalog has them.
    m.remount(&emu.endpoint(), &["--write-back-delay", "1s"]);
    assert_eq!(
        run(Command::new("readlink").arg(v.join("rel"))),
        "file.txt\n"
    );
    assert_eq!(
        run(Command::new("readlink").arg(v.join("made.sock"))),
        "../nowhere/ x\u{e9}\n"
    );
    assert!(lstat(&v.join("fifo")).file_type().is_fifo());
    assert_eq!(lstat(&v.join("null")).rdev(), libc::makedev(1, 3));
    let rel = lstat(&v.join("rel"));
    assert_eq!((rel.uid(), rel.mtime_nsec()), (1234, 250_000_000));
    let mut listed: Vec<String> = std::fs::read_dir(&v)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    listed.sort();
    assert_eq!(
        listed,
        [
            "dir",
            "fifo",
            "file.txt",
            "loop",
            "made.sock",
            "null",
            "plain",
            "rel"
        ]
    );
}

#[test]
fn a_name_over_255_bytes_is_enametoolong_in_every_call() {
    if !fuse_available() {
        return;
    }
    let emu = Emulator::start();
    let cache = tempfile::tempdir().unwrap();
    let m = mount(&emu, cache.path());
    let v = m.path(VAULT);
    std::fs::create_dir(v.join("d")).unwrap();
    std::fs::write(v.join("f"), b"x").unwrap();
    // Each call with a 256-byte component, and the errno it ends in (0: it succeeded).
    let out = py(
        r#"
import os, stat, sys
v = sys.argv[1]
long = os.path.join(v, "n" * 256)
calls = {
    "lstat": lambda: os.lstat(long),
    "create": lambda: os.close(os.open(long, os.O_CREAT | os.O_WRONLY, 0o644)),
    "mkdir": lambda: os.mkdir(long),
    "mknod": lambda: os.mknod(long, 0o644 | stat.S_IFIFO),
    "symlink": lambda: os.symlink("f", long),
    "rename-from": lambda: os.rename(long, os.path.join(v, "g")),
    "rename-to": lambda: os.rename(os.path.join(v, "f"), long),
    "unlink": lambda: os.unlink(long),
    "rmdir": lambda: os.rmdir(long),
    "chmod": lambda: os.chmod(long, 0o600),
    "chown": lambda: os.chown(long, 1, 1),
    "truncate": lambda: os.truncate(long, 0),
    "utime": lambda: os.utime(long, (1, 1)),
    "inside": lambda: os.lstat(os.path.join(long, "x")),
}
for name, call in calls.items():
    try:
        call()
        print(name, 0)
    except OSError as e:
        print(name, e.errno)
# 255 bytes is still a name.
os.close(os.open(os.path.join(v, "d", "m" * 255), os.O_CREAT | os.O_WRONLY, 0o644))
print("255", os.lstat(os.path.join(v, "d", "m" * 255)).st_size)
"#,
        &[&v],
    );
    let mut lines = out.lines();
    for line in lines.by_ref().take(14) {
        let (call, errno) = line.split_once(' ').unwrap();
        assert_eq!(
            errno.parse::<i32>().unwrap(),
            libc::ENAMETOOLONG,
            "{call} of a 256-byte name"
        );
    }
    assert_eq!(lines.next(), Some("255 0"));
    assert!(
        v.join("f").exists(),
        "the file renamed to a long name stays"
    );
}

/// (mtime, ctime) in nanoseconds, as lstat(2) reads them through the mount.
fn times(p: &Path) -> (i64, i64) {
    let m = lstat(p);
    (
        m.mtime() * 1_000_000_000 + m.mtime_nsec(),
        m.ctime() * 1_000_000_000 + m.ctime_nsec(),
    )
}

#[test]
fn a_directory_s_times_change_with_its_entries() {
    if !fuse_available() {
        return;
    }
    let emu = Emulator::start();
    let cache = tempfile::tempdir().unwrap();
    let m = mount(&emu, cache.path());
    let v = m.path(VAULT);
    let (a, b) = (v.join("a"), v.join("b"));
    std::fs::create_dir(&a).unwrap();
    std::fs::create_dir(&b).unwrap();
    std::fs::write(a.join("keep"), b"x").unwrap();
    const OLD: i64 = 1_000_000_000_000_000_000;
    // Sets `dirs` to an old mtime (read once, so the kernel caches it), runs `op`, and checks
    // that each dir's mtime moved off it, with the ctime moved along to the same instant.
    let check = |what: &str, dirs: &[&Path], op: &dyn Fn()| {
        for d in dirs {
            run(Command::new("touch").args(["-d", "@1000000000"]).arg(d));
            assert_eq!(times(d).0, OLD);
        }
        op();
        for d in dirs {
            let (mtime, ctime) = times(d);
            assert!(mtime > OLD, "{what}: {} kept its mtime", d.display());
            assert_eq!(ctime, mtime, "{what}: {} ctime", d.display());
        }
    };
    check("create", &[&a], &|| {
        std::fs::write(a.join("new"), b"").unwrap()
    });
    check("mkdir", &[&a], &|| {
        std::fs::create_dir(a.join("sub")).unwrap()
    });
    check("symlink", &[&a], &|| {
        std::os::unix::fs::symlink("keep", a.join("ln")).unwrap()
    });
    check("mkfifo", &[&a], &|| {
        run(Command::new("mkfifo").arg(a.join("p")));
    });
    check("unlink", &[&a], &|| {
        std::fs::remove_file(a.join("new")).unwrap()
    });
    check("rmdir", &[&a], &|| {
        std::fs::remove_dir(a.join("sub")).unwrap()
    });
    check("rename within", &[&a], &|| {
        std::fs::rename(a.join("ln"), a.join("ln2")).unwrap()
    });
    check("rename across", &[&a, &b], &|| {
        std::fs::rename(a.join("p"), b.join("p")).unwrap()
    });
    // The vault is a directory too (whose times touch(1) cannot set: they are Glacier's).
    let before = times(&v);
    std::fs::write(v.join("top"), b"").unwrap();
    let (mtime, ctime) = times(&v);
    assert!(mtime > before.0, "create in the vault: its mtime");
    assert_eq!(ctime, mtime, "create in the vault: its ctime");
    // Looking and reading change nothing.
    run(Command::new("touch").args(["-d", "@1000000000"]).arg(&a));
    run(Command::new("ls").arg("-l").arg(&a));
    std::fs::read(a.join("keep")).unwrap();
    assert_eq!(times(&a).0, OLD);
}

#[test]
fn a_directory_s_link_count_is_two_plus_its_subdirectories() {
    if !fuse_available() {
        return;
    }
    let emu = Emulator::start();
    let cache = tempfile::tempdir().unwrap();
    let mut m = mount(&emu, cache.path());
    let v = m.path(VAULT);
    let nlink = |p: &Path| lstat(p).nlink();
    assert_eq!(nlink(&v), 2, "an empty vault");
    let d = v.join("d");
    std::fs::create_dir(&d).unwrap();
    assert_eq!(nlink(&d), 2);
    assert_eq!(nlink(&v), 3);
    for sub in ["x", "y", "z"] {
        std::fs::create_dir(d.join(sub)).unwrap();
    }
    std::fs::write(d.join("file"), b"1").unwrap();
    std::os::unix::fs::symlink("x", d.join("link")).unwrap();
    run(Command::new("mkfifo").arg(d.join("fifo")));
    assert_eq!(nlink(&d), 5, "files, symlinks and fifos are not counted");
    assert_eq!(nlink(&d.join("file")), 1);
    std::fs::remove_dir(d.join("x")).unwrap();
    assert_eq!(nlink(&d), 4);
    std::fs::rename(d.join("y"), v.join("y")).unwrap();
    assert_eq!((nlink(&d), nlink(&v)), (3, 4));
    // find(1) trusts the count to skip leaves: it must still find every directory.
    let found = run(Command::new("find").arg(&v).args(["-type", "d"]));
    assert_eq!(found.lines().count(), 4, "{found}");
    m.remount(&emu.endpoint(), &[]);
    assert_eq!((nlink(&d), nlink(&v)), (3, 4));
    let root = lstat(&m.path(""));
    assert_eq!(root.nlink(), 3, "the root: 2 plus its one vault");
}

/// (atime, mtime, ctime) in nanoseconds.
fn three_times(p: &Path) -> (i64, i64, i64) {
    let m = lstat(p);
    let ns = |s: i64, n: i64| s * 1_000_000_000 + n;
    (
        ns(m.atime(), m.atime_nsec()),
        ns(m.mtime(), m.mtime_nsec()),
        ns(m.ctime(), m.ctime_nsec()),
    )
}

#[test]
fn atime_is_kept_apart_to_the_nanosecond_and_reads_leave_it() {
    if !fuse_available() {
        return;
    }
    let emu = Emulator::start();
    let cache = tempfile::tempdir().unwrap();
    let mut m = mount(&emu, cache.path());
    let v = m.path(VAULT);
    let f = v.join("f");
    std::fs::write(&f, b"content").unwrap();
    const A: i64 = 1_500_000_000_123_456_789;
    const M: i64 = 1_600_000_000_987_654_321;
    py(
        &format!("import os, sys\nos.utime(sys.argv[1], ns=({A}, {M}))"),
        &[&f],
    );
    let (atime, mtime, _) = three_times(&f);
    assert_eq!((atime, mtime), (A, M));
    // Reads do not change it (as with noatime), nor does listing.
    assert_eq!(std::fs::read(&f).unwrap(), b"content");
    run(Command::new("ls").arg("-lu").arg(&v));
    assert_eq!(three_times(&f).0, A);
    // UTIME_OMIT: touch -m sets the mtime alone, touch -a the atime alone.
    run(Command::new("touch")
        .args(["-m", "-d", "@1700000000.5"])
        .arg(&f));
    assert_eq!(
        (three_times(&f).0, three_times(&f).1),
        (A, 1_700_000_000_500_000_000)
    );
    run(Command::new("touch")
        .args(["-a", "-d", "@1400000000.000000001"])
        .arg(&f));
    assert_eq!(
        (three_times(&f).0, three_times(&f).1),
        (1_400_000_000_000_000_001, 1_700_000_000_500_000_000)
    );
    // UTIME_NOW for the atime alone: it becomes the time now; the mtime stays.
    let (_, _, ctime_before) = three_times(&f);
    run(Command::new("touch").arg("-a").arg(&f));
    let (atime, mtime, ctime) = three_times(&f);
    assert!(atime > M, "touch -a: the atime is now");
    assert_eq!(mtime, 1_700_000_000_500_000_000);
    assert!(ctime > ctime_before, "utimensat changes the ctime");
    // A write moves the mtime and leaves the atime. (fsync records the write's mtime before
    // close returns; a bare close records it as the release arrives, just after.)
    std::fs::OpenOptions::new()
        .append(true)
        .open(&f)
        .and_then(|mut h| {
            std::io::Write::write_all(&mut h, b"!")?;
            h.sync_all()
        })
        .unwrap();
    let after_write = three_times(&f);
    assert_eq!(after_write.0, atime);
    assert!(after_write.1 > mtime);
    // A file whose atime was never set apart reads back its mtime as both, and keeps the
    // old one as its atime when only the mtime is set.
    std::fs::write(v.join("g"), b"").unwrap();
    let (a0, m0, _) = three_times(&v.join("g"));
    assert_eq!(a0, m0);
    run(Command::new("touch")
        .args(["-m", "-d", "@1700000000"])
        .arg(v.join("g")));
    assert_eq!(three_times(&v.join("g")).0, a0);
    // All of it is in the catalog.
    m.remount(&emu.endpoint(), &[]);
    assert_eq!(three_times(&f).0, atime);
    assert_eq!(three_times(&v.join("g")).0, a0);
}

#[test]
fn every_metadata_change_sets_the_ctime() {
    if !fuse_available() {
        return;
    }
    let emu = Emulator::start();
    let cache = tempfile::tempdir().unwrap();
    let m = mount(&emu, cache.path());
    let v = m.path(VAULT);
    let f = v.join("f");
    std::fs::write(&f, b"0123456789").unwrap();
    std::os::unix::fs::symlink("f", v.join("ln")).unwrap();
    run(Command::new("mkfifo").arg(v.join("p")));
    let steps: [(&str, &Path, &dyn Fn()); 7] = [
        ("chmod", &f, &|| {
            std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o600)).unwrap()
        }),
        ("chown", &f, &|| {
            std::os::unix::fs::chown(&f, Some(7), Some(7)).unwrap()
        }),
        ("utime", &f, &|| {
            run(Command::new("touch").args(["-d", "@1000"]).arg(&f));
        }),
        ("truncate", &f, &|| {
            run(Command::new("truncate").args(["-s", "3"]).arg(&f));
        }),
        ("chmod of a fifo", &v.join("p"), &|| {
            std::fs::set_permissions(v.join("p"), std::fs::Permissions::from_mode(0o600)).unwrap()
        }),
        ("lchown of a symlink", &v.join("ln"), &|| {
            std::os::unix::fs::lchown(v.join("ln"), Some(3), None).unwrap()
        }),
        ("rename", &v.join("g"), &|| {
            std::fs::rename(&f, v.join("g")).unwrap()
        }),
    ];
    for (what, path, op) in steps {
        // The renamed file is looked at before under its old name.
        let before = times(if what == "rename" { &f } else { path }).1;
        op();
        let after = times(path).1;
        assert!(after > before, "{what}: ctime {before} -> {after}");
    }
}

/// `find -printf` of a tree's types, modes, mtimes, atimes (when `atime`), symlink targets
/// and paths, sorted, plus the bytes of its regular files.
fn fingerprint(root: &Path, atime: bool) -> String {
    let format = if atime {
        "%y %m %T@ %A@ %l %P\n"
    } else {
        "%y %m %T@ %l %P\n"
    };
    let listed = run(Command::new("find")
        .arg(root)
        .args(["-mindepth", "1", "-printf", format]));
    let mut lines: Vec<String> = listed.lines().map(str::to_owned).collect();
    lines.sort();
    let mut out = lines.join("\n");
    for line in &lines {
        if let Some(rel) = line.strip_prefix("f ") {
            let rel = rel.rsplit(' ').next().unwrap();
            let bytes = std::fs::read(root.join(rel)).unwrap();
            out.push_str(&format!("\n{rel}: {}", String::from_utf8_lossy(&bytes)));
        }
    }
    out
}

/// A tree with files whose atime and mtime differ, a subdirectory with its own mode, relative,
/// absolute and dangling symlinks, a fifo and an empty file, all with times in the past.
fn source_tree(root: &Path) {
    py(
        r##"
import os, sys
r = sys.argv[1]
os.makedirs(os.path.join(r, "docs", "deep"))
for rel, body in [("a.txt", b"alpha\n"), ("docs/b.md", b"# bee\n"), ("docs/deep/c", b"c" * 70), ("empty", b"")]:
    with open(os.path.join(r, rel), "wb") as f:
        f.write(body)
os.symlink("docs/b.md", os.path.join(r, "to-b"))
os.symlink("/etc/hostname", os.path.join(r, "docs", "absolute"))
os.symlink("../missing", os.path.join(r, "docs", "dangling"))
os.mkfifo(os.path.join(r, "docs", "pipe"))
os.chmod(os.path.join(r, "docs", "pipe"), 0o620)
os.chmod(os.path.join(r, "docs", "deep"), 0o750)
os.chmod(os.path.join(r, "a.txt"), 0o600)
n = 0
for d, dirs, files in os.walk(r, topdown=False):
    for name in files + dirs:
        p = os.path.join(d, name)
        n += 1
        os.utime(p, ns=(1_500_000_000_000_000_000 + n * 1_000_000_007, 1_600_000_000_000_000_000 + n * 3_000_000_011), follow_symlinks=False)
"##,
        &[root],
    );
}

#[test]
fn rsync_cp_and_tar_of_a_tree_with_symlinks_and_a_fifo_read_back_equal() {
    if !fuse_available() {
        return;
    }
    let emu = Emulator::start();
    let cache = tempfile::tempdir().unwrap();
    let mut m = mount(&emu, cache.path());
    let v = m.path(VAULT);
    let src = tempfile::tempdir().unwrap();
    source_tree(src.path());
    // rsync -a keeps mtimes, not atimes (that takes --atimes), and tar -x sets no atime:
    // those two are compared without atimes. cp -a keeps both.
    let want = fingerprint(src.path(), false);
    let want_with_atime = fingerprint(src.path(), true);
    assert!(want.contains("p 620 "), "{want}");
    assert!(want.contains("l 777 "), "{want}");

    let into = v.join("rsync");
    let mut from = src.path().as_os_str().to_owned();
    from.push("/");
    run(Command::new("rsync").arg("-a").arg(&from).arg(&into));
    assert_eq!(fingerprint(&into, false), want, "rsync -a");
    let again = run(Command::new("rsync")
        .args(["-a", "--itemize-changes"])
        .arg(&from)
        .arg(&into));
    assert_eq!(again, "", "a second rsync -a finds nothing to do");

    let into = v.join("cp");
    run(Command::new("cp").arg("-a").arg(src.path()).arg(&into));
    assert_eq!(fingerprint(&into, true), want_with_atime, "cp -a");

    let archive = tempfile::NamedTempFile::new().unwrap();
    // The pax format, as tar's own keeps whole seconds only.
    run(Command::new("tar")
        .args(["--format=posix", "-cf"])
        .arg(archive.path())
        .arg("-C")
        .arg(src.path())
        .arg("."));
    let into = v.join("tar");
    std::fs::create_dir(&into).unwrap();
    run(Command::new("tar")
        .arg("-xf")
        .arg(archive.path())
        .arg("-C")
        .arg(&into));
    assert_eq!(fingerprint(&into, false), want, "tar -x");

    // Uploaded and remounted, the tree is the same, and rsync still finds nothing to do.
    sync_wait(&v);
    m.remount(&emu.endpoint(), &[]);
    assert_eq!(fingerprint(&v.join("cp"), true), want_with_atime);
    let again = run(Command::new("rsync")
        .args(["-a", "--itemize-changes"])
        .arg(&from)
        .arg(v.join("rsync")));
    assert_eq!(again, "", "after a remount");
}
