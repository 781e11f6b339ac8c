//! The mount-helper calling convention, turned into an ordinary `glacierfs mount` command line
//! before clap sees it. mount(8) runs `mount.fuse3`, which runs `glacierfs SOURCE MOUNTPOINT -o
//! OPTIONS` (for `mount -t fuse.glacierfs`, an fstab line or a systemd mount unit); and
//! `glacierfs mount ... -o OPTIONS` is accepted too. Each `name=value` or `name` in OPTIONS is a
//! long option of `mount` (`_` or `-` alike), or one of the generic mount options, which are
//! accepted: `ro` and `rw` set `--read-only`, `noexec`, `exec`, `user` and `users` decide the
//! noexec flag, and the rest (`defaults`, `_netdev`, `nofail`, `noauto`, `auto`, `nouser`,
//! `nosuid`, `nodev`, `suid`, `dev`) change nothing: mount(8) and systemd act on the first
//! ones, and glacierfs always mounts nosuid and nodev. A comma cannot appear inside a value, so
//! a tier and its fallback are written with a colon, `tier=expedited:standard`, which `--tier`
//! takes as it takes `expedited,standard`.

use std::ffi::{OsStr, OsString};

use clap::CommandFactory;

use crate::config::{Cli, MountFlags};

/// The command line clap should parse, and the mount flags `-o` asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Translated {
    pub argv: Vec<OsString>,
    pub flags: MountFlags,
}

/// A `-o` list glacierfs cannot take; each message is one line naming the culprit.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MountOptionError {
    #[error("unknown mount option {0:?} (see glacierfs mount --help for the options)")]
    Unknown(String),
    #[error("mount option {0:?} needs a value: {0}=VALUE")]
    NeedsValue(String),
    #[error("mount option {0:?} takes no value")]
    TakesNoValue(String),
    #[error("-o needs a list of options, like -o region=eu-west-1,allow_other")]
    Missing,
    #[error("mount options must be UTF-8: {0:?}")]
    NotUtf8(OsString),
}

/// Options mount(8), fstab and mount.fuse3 use that mean nothing to glacierfs itself.
const IGNORED: &[&str] = &[
    "defaults", "_netdev", "nofail", "noauto", "auto", "nouser", "nosuid", "nodev", "suid", "dev",
];

/// Rewrites `argv` (program name first) when it uses a mount helper's convention; any other
/// command line comes back as it was.
pub fn translate(argv: Vec<OsString>) -> Result<Translated, MountOptionError> {
    let unchanged = |argv| Translated {
        argv,
        flags: MountFlags::default(),
    };
    let Some(first) = argv.get(1).and_then(|a| a.to_str()) else {
        return Ok(unchanged(argv));
    };
    if first == "mount" {
        let (rest, flags) = translate_mount_args(&argv[2..])?;
        let mut out = argv[..2].to_vec();
        out.extend(rest);
        return Ok(Translated { argv: out, flags });
    }
    if is_subcommand(first) || first.starts_with('-') {
        return Ok(unchanged(argv));
    }
    // `glacierfs SOURCE MOUNTPOINT [-o OPTIONS]...`. A mistyped subcommand followed by a path
    // must not mount anything, so the form needs the source mount(8) gives or an `-o`.
    let Some(mountpoint) = argv
        .get(2)
        .filter(|a| !a.as_encoded_bytes().starts_with(b"-"))
    else {
        return Ok(unchanged(argv));
    };
    let rest = &argv[3..];
    let has_o = rest.iter().any(|a| a.as_encoded_bytes().starts_with(b"-o"));
    if first != crate::config::FS_SOURCE && !has_o {
        return Ok(unchanged(argv));
    }
    let (translated, flags) = translate_mount_args(rest)?;
    let mut out = vec![argv[0].clone(), OsString::from("mount")];
    out.extend(translated);
    out.push(OsString::from("--"));
    out.push(mountpoint.clone());
    Ok(Translated { argv: out, flags })
}

fn is_subcommand(name: &str) -> bool {
    name == "help"
        || Cli::command()
            .get_subcommands()
            .any(|c| c.get_name() == name || c.get_all_aliases().any(|a| a == name))
}

/// How `mount` takes a long option: as a flag, or with a value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Flag,
    Counted,
    Value,
}

fn long_option(name: &str) -> Option<Kind> {
    if matches!(name, "help" | "version") {
        return None;
    }
    let cli = Cli::command();
    let mount = cli.find_subcommand("mount")?;
    let arg = mount.get_arguments().find(|a| a.get_long() == Some(name))?;
    Some(if arg.get_action().takes_values() {
        Kind::Value
    } else if matches!(arg.get_action(), clap::ArgAction::Count) {
        Kind::Counted
    } else {
        Kind::Flag
    })
}

/// The arguments of `mount` with every `-o LIST` (or `-oLIST`) replaced by long options, which
/// come first, in the order the lists named them; a later mention overrides an earlier one.
fn translate_mount_args(
    args: &[OsString],
) -> Result<(Vec<OsString>, MountFlags), MountOptionError> {
    let mut lists = Vec::new();
    let mut kept = Vec::new();
    let mut i = 0;
    while i < args.len() {
        let arg = &args[i];
        let bytes = arg.as_encoded_bytes();
        if bytes == b"--" {
            kept.extend_from_slice(&args[i..]);
            break;
        }
        if bytes == b"-o" {
            let list = args.get(i + 1).ok_or(MountOptionError::Missing)?;
            lists.push(utf8(list)?.to_owned());
            i += 2;
            continue;
        }
        if bytes.starts_with(b"-o") {
            lists.push(utf8(arg)?[2..].to_owned());
            i += 1;
            continue;
        }
        kept.push(arg.clone());
        i += 1;
    }
    let mut options = Options::default();
    for list in &lists {
        for item in list.split(',').filter(|s| !s.is_empty()) {
            options.add(item)?;
        }
    }
    let mut out = options.to_args();
    out.extend(kept);
    Ok((out, options.flags))
}

fn utf8(s: &OsStr) -> Result<&str, MountOptionError> {
    s.to_str()
        .ok_or_else(|| MountOptionError::NotUtf8(s.to_owned()))
}

#[derive(Default)]
struct Options {
    /// Long name and value, in order of first mention.
    longs: Vec<(String, Option<String>)>,
    verbose: usize,
    read_only: bool,
    flags: MountFlags,
}

impl Options {
    fn add(&mut self, item: &str) -> Result<(), MountOptionError> {
        match item {
            "ro" => self.read_only = true,
            "rw" => self.read_only = false,
            "noexec" | "user" | "users" => self.flags.noexec = true,
            "exec" => self.flags.noexec = false,
            _ if IGNORED.contains(&item) => {}
            _ => self.add_long(item)?,
        }
        Ok(())
    }

    fn add_long(&mut self, item: &str) -> Result<(), MountOptionError> {
        let (name, value) = match item.split_once('=') {
            Some((n, v)) => (n, Some(v)),
            None => (item, None),
        };
        let long = name.replace('_', "-");
        match (long_option(&long), value) {
            (None, _) => return Err(MountOptionError::Unknown(name.to_owned())),
            (Some(Kind::Value), None) => return Err(MountOptionError::NeedsValue(name.to_owned())),
            (Some(Kind::Flag | Kind::Counted), Some(_)) => {
                return Err(MountOptionError::TakesNoValue(name.to_owned()))
            }
            (Some(Kind::Counted), None) => self.verbose += 1,
            (Some(_), None) if long == "read-only" => self.read_only = true,
            (Some(_), value) => {
                let value = value.map(str::to_owned);
                match self.longs.iter_mut().find(|(l, _)| *l == long) {
                    Some(slot) => slot.1 = value,
                    None => self.longs.push((long, value)),
                }
            }
        }
        Ok(())
    }

    fn to_args(&self) -> Vec<OsString> {
        let mut out: Vec<OsString> = self
            .longs
            .iter()
            .map(|(long, value)| match value {
                Some(v) => format!("--{long}={v}").into(),
                None => format!("--{long}").into(),
            })
            .collect();
        out.extend((0..self.verbose).map(|_| OsString::from("--verbose")));
        if self.read_only {
            out.push("--read-only".into());
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Command;
    use clap::Parser;

    fn argv(args: &[&str]) -> Vec<OsString> {
        args.iter().map(OsString::from).collect()
    }

    fn strings(t: &Translated) -> Vec<String> {
        t.argv
            .iter()
            .map(|a| a.to_string_lossy().into_owned())
            .collect()
    }

    #[test]
    fn the_helper_convention_becomes_a_mount_command() {
        let t = translate(argv(&[
            "glacierfs",
            "glacierfs",
            "/mnt/glacier",
            "-o",
            "rw,region=eu-west-1,cache_dir=/var/cache/g,allow_other,dev,suid",
        ]))
        .unwrap();
        assert_eq!(
            strings(&t),
            [
                "glacierfs",
                "mount",
                "--region=eu-west-1",
                "--cache-dir=/var/cache/g",
                "--allow-other",
                "--",
                "/mnt/glacier"
            ]
        );
        assert_eq!(t.flags, MountFlags::default());
        let cli = Cli::try_parse_from(t.argv).unwrap();
        let Command::Mount(m) = cli.command else {
            panic!("not a mount")
        };
        assert_eq!(m.aws.region.as_deref(), Some("eu-west-1"));
        assert_eq!(m.cache.cache_dir.as_deref(), Some("/var/cache/g".as_ref()));
        assert!(m.allow_other && !m.read_only);
        assert_eq!(m.mountpoint, std::path::Path::new("/mnt/glacier"));
    }

    #[test]
    fn every_long_option_of_mount_can_be_given_with_o() {
        let cli = Cli::command();
        let mount = cli.find_subcommand("mount").unwrap();
        let mut tried = 0;
        for arg in mount.get_arguments() {
            let Some(long) = arg.get_long() else { continue };
            if long == "help" {
                continue;
            }
            let value = match arg.get_action().takes_values() {
                false => String::new(),
                true => match long {
                    "tier" => "=bulk".into(),
                    "cache-size" | "part-size" | "memory-budget" | "retrieval-budget" => {
                        "=16MiB".into()
                    }
                    "upload-concurrency" | "uid" | "gid" | "retrieval-job-budget" => "=7".into(),
                    "write-back-delay" | "delete-delay" | "poll-interval" | "inventory-max-age"
                    | "snapshot-interval" => "=9s".into(),
                    _ => "=x".into(),
                },
            };
            for name in [long.to_owned(), long.replace('-', "_")] {
                let t = translate(argv(&[
                    "glacierfs",
                    "src",
                    "/m",
                    "-o",
                    &format!("{name}{value}"),
                ]))
                .unwrap_or_else(|e| panic!("{name}: {e}"));
                assert!(
                    strings(&t).contains(&format!("--{long}{value}")),
                    "{name}: {:?}",
                    strings(&t)
                );
                Cli::try_parse_from(&t.argv).unwrap_or_else(|e| panic!("{name}: {e}"));
                tried += 1;
            }
        }
        assert!(tried > 40, "only {tried} options tried");
    }

    #[test]
    fn generic_mount_options_are_accepted() {
        for opt in [
            "defaults",
            "_netdev",
            "nofail",
            "noauto",
            "auto",
            "user",
            "users",
            "nouser",
            "rw",
            "ro",
            "nosuid",
            "nodev",
            "suid",
            "dev",
            "noexec",
            "exec",
            "allow_other",
            "allow_root",
        ] {
            let t = translate(argv(&["glacierfs", "glacierfs", "/m", "-o", opt]))
                .unwrap_or_else(|e| panic!("{opt}: {e}"));
            Cli::try_parse_from(&t.argv).unwrap_or_else(|e| panic!("{opt}: {e}"));
        }
    }

    #[test]
    fn generic_options_set_what_they_name() {
        let t = translate(argv(&["glacierfs", "glacierfs", "/m", "-o", "ro,noexec"])).unwrap();
        assert!(strings(&t).contains(&"--read-only".to_owned()));
        assert!(t.flags.noexec);
        // Later wins, as in mount(8): rw undoes ro, exec undoes noexec and user's noexec.
        let t = translate(argv(&[
            "glacierfs",
            "glacierfs",
            "/m",
            "-o",
            "ro,user,rw,exec",
        ]))
        .unwrap();
        assert!(!strings(&t).contains(&"--read-only".to_owned()));
        assert!(!t.flags.noexec);
        let t = translate(argv(&["glacierfs", "glacierfs", "/m", "-o", "users"])).unwrap();
        assert!(t.flags.noexec);
        let t = translate(argv(&["glacierfs", "glacierfs", "/m", "-o", "allow_root"])).unwrap();
        assert!(strings(&t).contains(&"--allow-root".to_owned()));
    }

    #[test]
    fn a_tier_fallback_is_written_with_a_colon() {
        let t = translate(argv(&[
            "glacierfs",
            "glacierfs",
            "/m",
            "-o",
            "region=a,tier=expedited:standard,allow_other",
        ]))
        .unwrap();
        assert!(
            strings(&t).contains(&"--tier=expedited:standard".to_owned()),
            "{:?}",
            strings(&t)
        );
        let Command::Mount(m) = Cli::try_parse_from(&t.argv).unwrap().command else {
            panic!("not a mount")
        };
        assert_eq!(m.tier.to_string(), "expedited,standard");
        assert!(m.allow_other);
        // A comma splits the list, so the fallback would be an option of its own.
        let e = translate(argv(&[
            "glacierfs",
            "glacierfs",
            "/m",
            "-o",
            "tier=expedited,standard",
        ]))
        .unwrap_err();
        assert_eq!(e, MountOptionError::Unknown("standard".into()));
        // The list is checked as --tier checks it.
        let t = translate(argv(&[
            "glacierfs",
            "glacierfs",
            "/m",
            "-o",
            "tier=bulk:standard",
        ]))
        .unwrap();
        let e = Cli::try_parse_from(&t.argv).unwrap_err().to_string();
        assert!(e.contains("invalid tier list \"bulk:standard\""), "{e}");
    }

    #[test]
    fn a_later_mention_overrides_an_earlier_one() {
        let t = translate(argv(&[
            "glacierfs",
            "glacierfs",
            "/m",
            "-o",
            "region=a,tier=bulk",
            "-o",
            "region=b",
        ]))
        .unwrap();
        let s = strings(&t);
        assert_eq!(s[2..4], ["--region=b", "--tier=bulk"]);
        Cli::try_parse_from(&t.argv).unwrap();
    }

    #[test]
    fn the_mount_subcommand_takes_o_too() {
        let t = translate(argv(&[
            "glacierfs",
            "mount",
            "--cache-dir",
            "/c",
            "-oread_only,poll_interval=3s",
            "/m",
            "-o",
            "noexec",
        ]))
        .unwrap();
        assert_eq!(
            strings(&t),
            [
                "glacierfs",
                "mount",
                "--poll-interval=3s",
                "--read-only",
                "--cache-dir",
                "/c",
                "/m"
            ]
        );
        assert!(t.flags.noexec);
        Cli::try_parse_from(&t.argv).unwrap();
    }

    #[test]
    fn bad_options_are_named_in_one_line() {
        let err = |args: &[&str]| translate(argv(args)).unwrap_err();
        let e = err(&["glacierfs", "glacierfs", "/m", "-o", "region=x,bogus_opt"]);
        assert_eq!(e, MountOptionError::Unknown("bogus_opt".into()));
        assert!(e.to_string().contains("\"bogus_opt\"") && !e.to_string().contains('\n'));
        assert_eq!(
            err(&["glacierfs", "glacierfs", "/m", "-o", "region"]),
            MountOptionError::NeedsValue("region".into())
        );
        assert_eq!(
            err(&["glacierfs", "glacierfs", "/m", "-o", "allow_other=1"]),
            MountOptionError::TakesNoValue("allow_other".into())
        );
        assert_eq!(
            err(&["glacierfs", "mount", "/m", "-o"]),
            MountOptionError::Missing
        );
        // Not mount options at all: help and version stay clap's.
        assert_eq!(
            err(&["glacierfs", "glacierfs", "/m", "-o", "help"]),
            MountOptionError::Unknown("help".into())
        );
    }

    #[test]
    fn other_command_lines_are_left_alone() {
        for args in [
            vec!["glacierfs", "status", "--json"],
            vec!["glacierfs", "sync", "a", "b"],
            vec!["glacierfs", "--help"],
            vec!["glacierfs"],
            // A mistyped subcommand is clap's to report, not a mount of "b".
            vec!["glacierfs", "statsu", "b"],
            vec!["glacierfs", "help", "mount"],
        ] {
            let t = translate(argv(&args)).unwrap();
            assert_eq!(t.argv, argv(&args), "{args:?}");
        }
    }
}
