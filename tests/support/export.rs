//! What the export tests share: a mounted vault of archives in the emulator, and a running
//! `glacierfs export` with its output in files.

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use serde_json::Value;

use super::emulator::{Emulator, DEFAULT_START_SECS};
use super::mount::{aws_env, binary, wait_until, Mount};
use super::{walk, xattr};
use glacierfs::codec::timefmt::format_compact;

pub const VAULT: &str = "vault";
pub const MIB: usize = 1 << 20;

pub fn mt2(path: &str, mtime: i64) -> String {
    let json = format!(
        r#"{{"filename":"{path}","mtime":"{}"}}"#,
        format_compact(mtime)
    );
    format!("mt2 {}", URL_SAFE_NO_PAD.encode(json))
}

pub fn pattern(size: usize, seed: u32) -> Vec<u8> {
    (0..size)
        .map(|k| {
            (k as u32)
                .wrapping_mul(31)
                .wrapping_add(seed.wrapping_mul(7)) as u8
        })
        .collect()
}

/// One archive to put in the vault.
pub struct Archive {
    pub description: String,
    pub data: Vec<u8>,
    pub creation: i64,
}

pub fn plain(path: &str, data: Vec<u8>, k: i64) -> Archive {
    Archive {
        description: mt2(path, 1_500_000_000 + k * 977),
        data,
        creation: DEFAULT_START_SECS - 400 * 86_400 + k * 3_600,
    }
}

/// A mounted vault holding `archives`, fully loaded into the mount's catalog.
pub struct Vault {
    pub emu: Emulator,
    pub mount: Mount,
    pub cache: tempfile::TempDir,
}

impl Vault {
    pub fn new(archives: &[Archive]) -> Vault {
        let emu = Emulator::start();
        emu.create_vault(VAULT);
        for a in archives {
            emu.put_archive(VAULT, &a.description, &a.data, Some(a.creation));
        }
        emu.take_inventory(VAULT);
        let cache = tempfile::tempdir().unwrap();
        let mount = Mount::start(&emu.endpoint(), cache.path(), &[]);
        let root = mount.path(VAULT);
        let _ = std::fs::read_dir(&root).map(|d| d.count());
        let loaded = wait_until(Duration::from_secs(60), || {
            emu.complete_all_jobs();
            walk(&root).values().filter(|v| v.is_some()).count() >= archives.len()
        });
        assert!(loaded, "the vault never loaded; log:\n{}", mount.log_text());
        Vault { emu, mount, cache }
    }

    pub fn root(&self) -> PathBuf {
        self.mount.path(VAULT)
    }

    /// Every file of the mount's view with the bytes it must have: its archive's, or none.
    pub fn expected(&self) -> BTreeMap<String, Vec<u8>> {
        let root = self.root();
        walk(&root)
            .into_iter()
            .filter_map(|(rel, seen)| {
                let seen = seen?;
                let data = match xattr(&root.join(&rel), "user.glacier.archive_id") {
                    Ok(id) => self.emu.archive_data(VAULT, &id).expect("archive exists"),
                    Err(_) => Vec::new(),
                };
                assert_eq!(data.len() as u64, seen.size, "{rel}");
                Some((rel, data))
            })
            .collect()
    }

    /// Archive id → size, from the mount's view.
    pub fn archive_sizes(&self) -> BTreeMap<String, u64> {
        let root = self.root();
        walk(&root)
            .into_iter()
            .filter_map(|(rel, seen)| {
                let id = xattr(&root.join(rel), "user.glacier.archive_id").ok()?;
                Some((id, seen?.size))
            })
            .collect()
    }
}

/// A running `glacierfs export`, its stdout and stderr in files (a pipe could fill and block it).
pub struct Export {
    pub child: Child,
    out: tempfile::NamedTempFile,
    err: tempfile::NamedTempFile,
}

impl Export {
    pub fn start(vault: &Vault, dest: impl AsRef<OsStr>, extra: &[&str]) -> Export {
        Export::start_env(vault, dest, extra, &[])
    }

    /// With more environment, such as `XDG_STATE_HOME` for an S3 export's journal.
    pub fn start_env(
        vault: &Vault,
        dest: impl AsRef<OsStr>,
        extra: &[&str],
        env: &[(&str, &OsStr)],
    ) -> Export {
        let out = tempfile::NamedTempFile::new().unwrap();
        let err = tempfile::NamedTempFile::new().unwrap();
        let mut cmd = Command::new(binary());
        aws_env(&mut cmd)
            .arg("export")
            .args(extra)
            .arg(vault.root())
            .arg(dest)
            .env("GLACIERFS_EXPORT_POLL_MS", "100")
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::from(out.reopen().unwrap()))
            .stderr(Stdio::from(err.reopen().unwrap()));
        for (k, v) in env {
            cmd.env(k, v);
        }
        Export {
            child: cmd.spawn().expect("spawn glacierfs export"),
            out,
            err,
        }
    }

    pub fn stdout(&self) -> String {
        std::fs::read_to_string(self.out.path()).unwrap_or_default()
    }

    pub fn stderr(&self) -> String {
        std::fs::read_to_string(self.err.path()).unwrap_or_default()
    }

    pub fn events(&self) -> Vec<Value> {
        self.stdout()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
            .collect()
    }

    pub fn summary(&self) -> Value {
        self.events()
            .into_iter()
            .find(|e| e["event"] == "summary")
            .unwrap_or_else(|| panic!("no summary; stderr:\n{}", self.stderr()))
    }

    pub fn exited(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().expect("wait for export")
    }

    /// Runs the clock until the export exits, calling `each` (before the clock moves) on the way.
    pub fn drive(&mut self, emu: &Emulator, mut each: impl FnMut(&Emulator)) -> ExitStatus {
        let start = Instant::now();
        loop {
            if let Some(status) = self.exited() {
                each(emu);
                return status;
            }
            assert!(
                start.elapsed() < Duration::from_secs(60),
                "export did not finish; stderr:\n{}",
                self.stderr()
            );
            each(emu);
            emu.complete_all_jobs();
            std::thread::sleep(Duration::from_millis(30));
        }
    }
}

impl Drop for Export {
    fn drop(&mut self) {
        if self.exited().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Corrupts job outputs as their jobs appear: one download of each job for the archives in
/// `once`, every download of every job for those in `always`. Call [`Corruptor::mark`] before
/// the clock moves, so no job completes unmarked.
pub struct Corruptor {
    pub once: Vec<String>,
    pub always: Vec<String>,
    marked: std::collections::BTreeSet<String>,
}

impl Corruptor {
    pub fn new(once: Vec<String>, always: Vec<String>) -> Corruptor {
        Corruptor {
            once,
            always,
            marked: Default::default(),
        }
    }

    pub fn mark(&mut self, emu: &Emulator) {
        for j in emu.jobs(VAULT) {
            let Some(a) = j.archive_id.as_deref() else {
                continue;
            };
            if !self.marked.insert(j.id.clone()) {
                continue;
            }
            if self.once.iter().any(|x| x == a) {
                emu.corrupt_job_output(&j.id, false);
            } else if self.always.iter().any(|x| x == a) {
                emu.corrupt_job_output(&j.id, true);
            }
        }
    }
}
