//! The control files as files: `.jobs` at the root and in each vault, `.lock` in each vault.
//! They can be opened by name but are not listed by readdir (so `rsync --delete`, `rm -r` and copies out of a vault
//! never touch them). Each open reads a snapshot; each write carries whole commands, and the
//! write's result is the commands' result.
//!
//! The vault attributes of namespace snapshots (`user.glacier.snapshot`, `user.glacier.restore`)
//! and their `.jobs` entries are here too, beside the control files that show the other jobs.
//!
//! Their inode numbers live above every catalog inode: bit 62 set, then the directory's inode
//! and which file it is.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::SystemTime;

use super::{Attr, FileKind, FsError, FsResult, GlacierFs};
use crate::catalog::snapshots::{self, SnapshotRow};
use crate::catalog::{self, vaults, Kind, Node, ROOT_INO};
use crate::codec::timefmt;
use crate::fs::control::{self, Command, Entry};

const CONTROL_BIT: u64 = 1 << 62;
pub const JOBS: &str = ".jobs";
pub const LOCK: &str = ".lock";

/// A vault's namespace snapshot attributes. Read, `user.glacier.snapshot` says where its
/// snapshots stand (`none`, `uploading`, `confirmed <time>`, or `no-history <time>` for a
/// snapshot this catalog has no history of) and `user.glacier.restore` where its restore
/// stands (`none`, `requested`, `retrieving`, `applied <time>`, `failed: <why>`). Written,
/// they ask for a snapshot now (`glacierfs sync --snapshot`) and for a restore (`glacierfs
/// catalog restore`, the value naming the tier, empty for the mount's).
pub const SNAPSHOT_ATTRS: &[&str] = &["user.glacier.snapshot", "user.glacier.restore"];

/// Which control file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Which {
    Jobs,
    Lock,
}

/// Inode of control file `which` in directory `dir` (the root or a vault).
fn control_ino(dir: u64, which: Which) -> u64 {
    CONTROL_BIT | (dir << 1) | u64::from(which == Which::Lock)
}

/// The directory and kind of a control file's inode.
pub fn control_dir(ino: u64) -> Option<(u64, Which)> {
    if ino & CONTROL_BIT == 0 {
        return None;
    }
    let which = if ino & 1 == 1 {
        Which::Lock
    } else {
        Which::Jobs
    };
    Some(((ino & !CONTROL_BIT) >> 1, which))
}

/// Snapshots of open control files, by file handle.
#[derive(Default)]
pub struct ControlHandles {
    next: AtomicU64,
    open: Mutex<HashMap<u64, LockSnapshot>>,
}

/// What one open of a control file reads.
pub struct LockSnapshot {
    pub dir: u64,
    pub content: Vec<u8>,
}

impl ControlHandles {
    pub fn add(&self, snapshot: LockSnapshot) -> u64 {
        let fh = CONTROL_BIT | (self.next.fetch_add(1, Ordering::Relaxed) + 1);
        crate::locks::lock(&self.open).insert(fh, snapshot);
        fh
    }
}

pub fn is_control_handle(fh: u64) -> bool {
    fh & CONTROL_BIT != 0
}

fn iso(secs: Option<i64>) -> Option<String> {
    secs.map(|s| timefmt::format_iso8601(s, 0))
}

impl GlacierFs {
    fn control_attr(&self, dir: u64, which: Which) -> Attr {
        let now = SystemTime::now();
        Attr {
            ino: control_ino(dir, which),
            size: 0,
            kind: FileKind::RegularFile,
            perm: 0o644,
            nlink: 1,
            uid: self.options.uid,
            gid: self.options.gid,
            mtime: now,
            ctime: now,
            atime: now,
            rdev: 0,
            blocks: 0,
        }
    }

    /// A control file looked up in `parent`, if `parent` has one by that name.
    pub(super) fn lookup_control(&self, parent: &Node, name: &str) -> Option<Attr> {
        match (name, parent.kind) {
            (JOBS, Kind::Root | Kind::Vault) => Some(self.control_attr(parent.ino, Which::Jobs)),
            (LOCK, Kind::Vault) => Some(self.control_attr(parent.ino, Which::Lock)),
            _ => None,
        }
    }

    pub(super) fn control_getattr(&self, ino: u64) -> Option<FsResult<Attr>> {
        let (dir, which) = control_dir(ino)?;
        Some(self.node(dir).map(|_| self.control_attr(dir, which)))
    }

    /// Opens a control file; `.lock` answers once Glacier has, from the runtime.
    pub fn open_control(&self, ino: u64, done: super::Done<u64>) {
        let Some((dir, which)) = control_dir(ino) else {
            return done(Err(FsError::NotFound(super::Missing::Inode(ino))));
        };
        match which {
            Which::Lock => self.open_lock(dir, done),
            Which::Jobs => done(self.jobs_entries(dir).map(|e| {
                self.control_snapshots.add(LockSnapshot {
                    dir,
                    content: control::render(&e),
                })
            })),
        }
    }

    pub(super) fn read_control(&self, fh: u64, offset: u64, size: u32) -> FsResult<Vec<u8>> {
        let open = crate::locks::lock(&self.control_snapshots.open);
        let snap = open.get(&fh).ok_or(FsError::BadHandle(fh))?;
        let start = (offset as usize).min(snap.content.len());
        let end = start.saturating_add(size as usize).min(snap.content.len());
        Ok(snap.content[start..end].to_vec())
    }

    /// A write to an open control file: whole commands, whose result is the write's.
    pub fn write_control(&self, ino: u64, fh: u64, data: &[u8], uid: u32, done: super::Done<u32>) {
        let dir = {
            let open = crate::locks::lock(&self.control_snapshots.open);
            match open.get(&fh) {
                Some(s) => s.dir,
                None => return done(Err(FsError::BadHandle(fh))),
            }
        };
        if matches!(control_dir(ino), Some((_, Which::Lock))) {
            return self.write_lock(dir, data, uid, done);
        }
        let result = control::parse(data)
            .map_err(|e| FsError::Invalid(e.to_string()))
            .and_then(|commands| {
                for c in commands {
                    self.run_command(dir, c)?;
                }
                Ok(data.len() as u32)
            });
        done(result)
    }

    pub(super) fn release_control(&self, fh: u64) {
        crate::locks::lock(&self.control_snapshots.open).remove(&fh);
    }

    fn run_command(&self, dir: u64, command: Command) -> FsResult<()> {
        match command {
            Command::Retrieve { path, tier } => {
                let n = self.resolve(dir, &path)?;
                let started = self.retrieve_at_or_below(&n, tier)?;
                log::info!("retrieve {path}: {started} archive(s) asked for");
                Ok(())
            }
            Command::Inventory => {
                let vaults: Vec<u64> = if dir == ROOT_INO {
                    self.catalog
                        .read(vaults::all)?
                        .into_iter()
                        .map(|v| v.ino)
                        .collect()
                } else {
                    vec![dir]
                };
                for v in vaults {
                    self.services.inventory.request(v, true);
                }
                Ok(())
            }
            Command::Cancel { target } => self.cancel(dir, &target),
        }
    }

    /// A path relative to `dir`, as `.jobs` commands give it.
    fn resolve(&self, dir: u64, path: &str) -> FsResult<Node> {
        let mut n = self.node(dir)?;
        for seg in path.split('/').filter(|s| !s.is_empty() && *s != ".") {
            let parent = n.ino;
            n = self.entry(parent, std::ffi::OsStr::new(seg))?;
        }
        Ok(n)
    }

    /// Cancels queued deletes, by their JobId (`delete-N`) or by path. Glacier's own jobs
    /// cannot be cancelled.
    fn cancel(&self, dir: u64, target: &str) -> FsResult<()> {
        let id = target
            .strip_prefix("delete-")
            .and_then(|n| n.parse::<i64>().ok());
        let scope = (dir != ROOT_INO).then_some(dir);
        let (path, vault_name) = match target.split_once('/') {
            Some((v, p)) if dir == ROOT_INO => (p.to_owned(), Some(v.to_owned())),
            _ => (target.to_owned(), None),
        };
        let target_of = catalog::jobs::CancelTarget {
            id,
            path,
            vault: scope,
            vault_name,
        };
        let cancelled = self
            .catalog
            .write(move |tx| catalog::jobs::cancel_deletes(tx, &target_of))?;
        if cancelled == 0 {
            return Err(FsError::Invalid(format!(
                "{target}: no queued work of this mount to cancel (Glacier's jobs cannot be)"
            )));
        }
        Ok(())
    }

    /// Everything `.jobs` in `dir` shows: Glacier jobs, uploads, deletes and vault deletes.
    fn jobs_entries(&self, dir: u64) -> FsResult<Vec<Entry>> {
        let scope = (dir != ROOT_INO).then_some(dir);
        let prefix_vault = dir == ROOT_INO;
        let rows = self
            .catalog
            .read(move |c| catalog::jobs::overview(c, scope))?;
        let mut out = Vec::new();
        let path_of = |vault: &str, path: &str| {
            if prefix_vault && !path.is_empty() {
                format!("{vault}/{path}")
            } else {
                path.to_owned()
            }
        };
        for j in rows.jobs {
            let progress = j.ino.and_then(|i| self.services.retriever.progress(i));
            out.push(
                Entry::new(&j.action, j.status.as_str())
                    .set("JobId", j.job_id)
                    .set("Vault", j.vault.clone())
                    .opt("Path", j.path.map(|p| path_of(&j.vault, &p)))
                    .opt("ArchiveId", j.archive_id)
                    .opt("Tier", j.tier)
                    .opt("CreationDate", iso(Some(j.created_s)))
                    .opt("CompletionDate", iso(j.completed_s))
                    .opt("SizeInBytes", j.size)
                    .opt(
                        "BytesDone",
                        progress.or(j.bytes_done.map(|b| b.max(0) as u64)),
                    )
                    .opt("StatusMessage", j.message),
            );
        }
        for u in rows.uploads {
            let uploading = self.services.writeback.is_uploading(u.ino);
            let done = self.services.writeback.progress(u.ino).unwrap_or(0);
            out.push(
                Entry::new("Upload", if uploading { "InProgress" } else { "Queued" })
                    .set("JobId", format!("upload-{}", u.ino))
                    .set("Vault", u.vault.clone())
                    .set("Path", path_of(&u.vault, &u.path))
                    .set("SizeInBytes", u.size)
                    .set("BytesDone", done)
                    .opt(
                        "StatusMessage",
                        self.services.writeback.last_error(u.ino).or(u.message),
                    ),
            );
        }
        self.snapshot_entries(scope, &mut out)?;
        for d in rows.deletes {
            out.push(
                Entry::new(
                    "Delete",
                    if d.attempts > 0 {
                        "InProgress"
                    } else {
                        "Queued"
                    },
                )
                .set("JobId", format!("delete-{}", d.id))
                .set("Vault", d.vault.clone())
                .opt("Path", d.path.map(|p| path_of(&d.vault, &p)))
                .opt("ArchiveId", d.archive_id)
                .opt("StatusMessage", d.message),
            );
        }
        Ok(out)
    }
}

impl GlacierFs {
    fn snapshot_engine(&self) -> FsResult<&crate::engine::snapshot::Snapshots> {
        self.snapshots
            .get()
            .map(|s| &**s)
            .ok_or(FsError::NotPermitted("this mount takes no snapshots"))
    }

    /// The value of a vault's snapshot attribute (see [`SNAPSHOT_ATTRS`]).
    pub(super) fn snapshot_attr(&self, vault: u64, attr: &str) -> FsResult<Option<String>> {
        let rows: Vec<SnapshotRow> = self
            .catalog
            .read(snapshots::all)?
            .into_iter()
            .filter(|r| r.vault == vault)
            .collect();
        let time = |s: i64| timefmt::format_iso8601(s, 0);
        if attr == "user.glacier.restore" {
            let latest = rows
                .iter()
                .filter(|r| r.restore.is_some())
                .max_by_key(|r| r.id);
            return Ok(Some(match latest {
                None => "none".to_owned(),
                Some(r) => match r.restore.as_deref() {
                    Some("applied") => format!("applied {}", time(r.taken_s)),
                    Some("failed") => {
                        // getxattr callers read into small buffers: the reason, cut short.
                        let why = r.message.as_deref().unwrap_or("");
                        let cut = (0..=why.len().min(160))
                            .rev()
                            .find(|&i| why.is_char_boundary(i))
                            .unwrap_or(0);
                        format!("failed: {}", &why[..cut])
                    }
                    Some(state) => state.to_owned(),
                    None => "none".to_owned(),
                },
            }));
        }
        let uploading = self.snapshots.get().is_some_and(|s| s.is_uploading(vault));
        let newest = self.catalog.read(|c| snapshots::newest(c, vault))?;
        Ok(Some(if uploading {
            "uploading".to_owned()
        } else if self.catalog.read(|c| snapshots::has_no_history(c, vault))? {
            format!(
                "no-history {}",
                newest.map_or(String::new(), |r| time(r.taken_s))
            )
        } else {
            match newest {
                Some(r) => format!("confirmed {}", time(r.taken_s)),
                None => "none".to_owned(),
            }
        }))
    }

    /// A write of a vault's snapshot attribute: a snapshot now, or a restore.
    pub(super) fn snapshot_command(&self, vault: u64, name: &[u8], value: &[u8]) -> FsResult<()> {
        use crate::engine::snapshot::SnapshotError;
        let engine = self.snapshot_engine()?;
        let result = if name == b"user.glacier.snapshot" {
            engine.ask(vault)
        } else {
            let tier = match std::str::from_utf8(value).map(str::trim) {
                Ok("") => None,
                Ok(t) => Some(
                    crate::config::parse_tiers(t).map_err(|e| FsError::Invalid(e.to_string()))?,
                ),
                Err(_) => return Err(FsError::Invalid("the tier must be text".into())),
            };
            engine.restore(vault, tier)
        };
        result.map_err(|e| match e {
            SnapshotError::Catalog(c) => FsError::Catalog(c),
            other => FsError::Invalid(other.to_string()),
        })
    }

    /// `.jobs` entries of namespace snapshots: uploads (Action `Snapshot`), restores
    /// (`SnapshotRestore`), and a vault holding a snapshot this catalog has no history of.
    fn snapshot_entries(&self, scope: Option<u64>, out: &mut Vec<Entry>) -> FsResult<()> {
        let rows = self.catalog.read(snapshots::all)?;
        let all_vaults = self.catalog.read(vaults::all)?;
        let name_of = |ino: u64| {
            all_vaults
                .iter()
                .find(|v| v.ino == ino)
                .map(|v| v.name.clone())
                .unwrap_or_default()
        };
        let in_scope = |r: &&SnapshotRow| scope.is_none_or(|v| v == r.vault);
        for r in rows.iter().filter(in_scope) {
            let uploading = self
                .snapshots
                .get()
                .is_some_and(|s| s.is_uploading(r.vault));
            if r.state == "uploading" {
                out.push(
                    Entry::new("Snapshot", if uploading { "InProgress" } else { "Queued" })
                        .set("JobId", format!("snapshot-{}", r.id))
                        .set("Vault", name_of(r.vault))
                        .set("Description", r.description.clone())
                        .set("SizeInBytes", r.size)
                        .opt("CreationDate", iso(Some(r.taken_s)))
                        .opt("StatusMessage", r.message.clone()),
                );
            }
            if matches!(r.restore.as_deref(), Some("requested" | "retrieving")) {
                out.push(
                    Entry::new("SnapshotRestore", "InProgress")
                        .set(
                            "JobId",
                            r.job_id.clone().unwrap_or(format!("restore-{}", r.id)),
                        )
                        .set("Vault", name_of(r.vault))
                        .set("Description", r.description.clone())
                        .opt("ArchiveId", r.archive_id.clone())
                        .opt("Tier", r.tier.clone())
                        .set("SizeInBytes", r.size)
                        .set("BytesDone", r.verified),
                );
            }
        }
        for v in all_vaults
            .iter()
            .filter(|v| scope.is_none_or(|s| s == v.ino))
        {
            let ino = v.ino;
            if !self.catalog.read(|c| snapshots::has_no_history(c, ino))? {
                continue;
            }
            let newest = self.catalog.read(|c| snapshots::newest(c, ino))?;
            out.push(
                Entry::new("Snapshot", "NoHistory")
                    .set("JobId", format!("snapshot-history-{}", v.name))
                    .set("Vault", v.name.clone())
                    .opt("CreationDate", iso(newest.map(|r| r.taken_s)))
                    .set(
                        "StatusMessage",
                        format!(
                            "vault {} holds a snapshot this catalog has no history of: run                              `glacierfs catalog restore` on the vault's directory to get its                              names, modes, owners and times back",
                            v.name
                        ),
                    ),
            );
        }
        Ok(())
    }
}
