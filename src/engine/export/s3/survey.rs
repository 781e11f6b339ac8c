//! Step 1 of an export to S3, before any retrieval: what the bucket already holds, and the
//! writes that need no job.
//!
//! [`look`] only reads (HeadObject for every key, one ListMultipartUploads), so `--dry-run`
//! uses it as it is. It sorts every file under PATH into: in place (an object under its key
//! whose metadata names the same archive and tree hash, or for a staged file the same tree
//! hash); a copy of an archive another key already holds; a file to send from the mount (a
//! staged file, or an empty one); or an archive to retrieve. Directories are not objects: an
//! empty one is listed as something the bucket cannot hold. It also matches the multipart
//! uploads left open under PREFIX with the journal: an upload this export opened for the same
//! archive is continued, one it opened for anything else is aborted, and one it did not open
//! is left alone and reported.
//!
//! [`settle`] then makes the writes that need no job: aborts of stale uploads, server-side
//! copies, and staged and empty files sent from the mount.

use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64};
use std::sync::{Arc, Mutex};

use tokio::sync::Semaphore;
use tokio::task::JoinSet;

use super::bucket::{Bucket, Head, OpenUpload, S3Error};
use super::journal::Journal;
use super::parts::part_size;
use super::stream::{self, Ctx, Expect, Source, Target};
use super::{holds, key_for, object_meta, Provenance, S3Url, MAX_COPY, MAX_OBJECT};
use crate::codec::treehash::{to_hex, tree_hash_file, Digest};
use crate::config::StorageClass;
use crate::engine::export::price::put_requests;
use crate::engine::export::report::{DryRun, Reporter, Tally};
use crate::engine::export::source::{self, FileEntry, Listing, Origin};
use crate::engine::export::special;
use crate::engine::export::survey::{failed, placed, Groups};

/// HeadObject requests at once.
const PARALLEL_HEADS: usize = 16;

/// An archive to retrieve, and the objects it becomes.
#[derive(Debug)]
pub struct ToFetch {
    pub archive_id: String,
    pub size: u64,
    pub tree_hash: Digest,
    pub targets: Vec<Target>,
}

/// A file sent from the mount: staged, or empty.
#[derive(Debug)]
pub struct LocalSend {
    pub target: Target,
    pub path: PathBuf,
    pub size: u64,
    pub tree: Digest,
}

/// An archive one key holds already, to be copied to another.
#[derive(Debug)]
pub struct CopyIn {
    pub from: String,
    pub target: Target,
    pub size: u64,
}

/// What step 1 found.
#[derive(Debug, Default)]
pub struct Found {
    pub fetch: Vec<ToFetch>,
    pub sends: Vec<LocalSend>,
    pub copies: Vec<CopyIn>,
    /// Uploads this export opened that nothing will continue.
    pub stale: Vec<OpenUpload>,
    /// Uploads under PREFIX this export did not open.
    pub foreign: Vec<OpenUpload>,
    /// Uploads to continue.
    pub resumed: usize,
}

/// What the survey needs to know of the export.
pub struct Scope<'a> {
    pub url: &'a S3Url,
    pub vault: &'a str,
    pub class: StorageClass,
}

/// Looks at the bucket; writes nothing. `journal` is None for a dry run (no upload can be
/// told apart as this export's then; all count as open).
pub async fn look(
    bucket: &Bucket,
    journal: Option<&Journal>,
    scope: &Scope<'_>,
    listing: &Listing,
    tally: &mut Tally,
    report: &mut Reporter,
) -> Result<Found, S3Error> {
    tally.count(listing);
    for rel in empty_dirs(listing) {
        let why = "an empty directory: S3 holds objects, not directories";
        tally
            .unheld
            .push((rel.display().to_string(), why.to_owned()));
        report.file(&rel, 0, "not_held", Some(why));
    }
    special::not_held(&listing.specials, tally, report);

    // Every file that can have a key, with what the bucket holds under it.
    let mut keyed: Vec<(&FileEntry, String)> = Vec::new();
    for f in &listing.files {
        let refused = match (&f.origin, key_for(scope.url, &f.rel)) {
            (_, Err(e)) => Some(e.to_string()),
            (Origin::Unusable(why), _) => Some(why.clone()),
            (_, Ok(_)) if f.size > MAX_OBJECT => {
                Some("larger than S3's largest object (5 TiB)".to_owned())
            }
            (_, Ok(key)) => {
                keyed.push((f, key));
                None
            }
        };
        if let Some(why) = refused {
            failed(tally, report, &f.rel, f.size, &why);
        }
    }
    let heads = heads(bucket, keyed.iter().map(|(_, k)| k.clone()).collect()).await?;

    let mut found = Found::default();
    let mut groups = Groups::default();
    let mut held_by_archive: HashMap<&str, String> = HashMap::new();
    let mut pending: Vec<(&FileEntry, String)> = Vec::new();
    for ((f, key), head) in keyed.into_iter().zip(heads) {
        match &f.origin {
            Origin::Archive {
                archive_id,
                tree_hash,
            } => {
                let here = head.as_ref().is_some_and(|h| {
                    h.size == f.size && holds(&h.user, Some(archive_id), tree_hash)
                });
                if here {
                    held_by_archive.insert(archive_id, key.clone());
                    tally.already += 1;
                    placed(tally, report, &f.rel, f.size, "in_place");
                } else if !groups.add(f, archive_id, *tree_hash) {
                    let why = "another file with this archive has another size";
                    failed(tally, report, &f.rel, f.size, why);
                } else {
                    pending.push((f, key));
                }
            }
            Origin::Empty | Origin::Local => {
                let tree = local_tree(f).await;
                let tree = match tree {
                    Ok(t) => t,
                    Err(e) => {
                        failed(tally, report, &f.rel, f.size, &e);
                        continue;
                    }
                };
                let here = head
                    .as_ref()
                    .is_some_and(|h| h.size == f.size && holds(&h.user, None, &tree));
                if here {
                    tally.already += 1;
                    placed(tally, report, &f.rel, f.size, "in_place");
                    continue;
                }
                let target = target(scope, f, key, None, &tree);
                found.sends.push(LocalSend {
                    target,
                    path: f.path.clone(),
                    size: f.size,
                    tree,
                });
            }
            Origin::Unusable(_) => {}
        }
    }

    let keys: HashMap<&Path, String> = pending
        .iter()
        .map(|(f, k)| (f.rel.as_path(), k.clone()))
        .collect();
    for g in &groups.list {
        let todo: Vec<&&FileEntry> = g
            .files
            .iter()
            .filter(|f| keys.contains_key(f.rel.as_path()))
            .collect();
        if todo.is_empty() {
            continue;
        }
        let make = |f: &FileEntry| {
            target(
                scope,
                f,
                keys[f.rel.as_path()].clone(),
                Some(&g.archive_id),
                &g.tree_hash,
            )
        };
        match held_by_archive.get(g.archive_id.as_str()) {
            Some(from) => found.copies.extend(todo.iter().map(|f| CopyIn {
                from: from.clone(),
                target: make(f),
                size: g.size,
            })),
            None => found.fetch.push(ToFetch {
                archive_id: g.archive_id.clone(),
                size: g.size,
                tree_hash: g.tree_hash,
                targets: todo.iter().map(|f| make(f)).collect(),
            }),
        }
    }

    let open = bucket.open_uploads(&scope.url.key_base()).await?;
    match_uploads(&mut found, open, journal);
    Ok(found)
}

/// The target for one file.
fn target(
    scope: &Scope<'_>,
    f: &FileEntry,
    key: String,
    archive_id: Option<&str>,
    tree: &Digest,
) -> Target {
    let details = match archive_id {
        Some(_) => source::archive_details(&f.path),
        None => source::ArchiveDetails::default(),
    };
    let meta = object_meta(
        scope.class,
        &Provenance {
            vault: scope.vault,
            mtime: f.mtime,
            archive_id,
            tree_hash: tree,
            created: details.created.as_deref(),
            description: details.description.as_deref(),
        },
    );
    Target {
        rel: f.rel.clone(),
        key,
        meta,
        upload: Mutex::new(None),
        written: AtomicBool::new(false),
    }
}

/// The tree hash of a file only the mount has, read through it (staged data is local: no
/// retrieval). An empty file's is the hash of nothing.
async fn local_tree(f: &FileEntry) -> Result<Digest, String> {
    let path = f.path.clone();
    match tokio::task::spawn_blocking(move || tree_hash_file(&path)).await {
        Ok(Ok(t)) => Ok(t),
        Ok(Err(e)) => Err(format!("reading it through the mount: {e}")),
        Err(e) => Err(e.to_string()),
    }
}

/// Directories with no file anywhere below them.
fn empty_dirs(listing: &Listing) -> Vec<PathBuf> {
    let mut with_files: BTreeSet<&Path> = BTreeSet::new();
    for f in &listing.files {
        let mut at = f.rel.parent();
        while let Some(p) = at {
            with_files.insert(p);
            at = p.parent();
        }
    }
    // PATH itself is the empty relative path: shown as ".".
    listing
        .dirs
        .iter()
        .filter(|d| !with_files.contains(d.rel.as_path()))
        .map(|d| match d.rel.as_os_str().is_empty() {
            true => PathBuf::from("."),
            false => d.rel.clone(),
        })
        .collect()
}

/// HeadObject of every key, a few at a time, in order.
async fn heads(bucket: &Bucket, keys: Vec<String>) -> Result<Vec<Option<Head>>, S3Error> {
    let limit = Arc::new(Semaphore::new(PARALLEL_HEADS));
    let mut tasks = JoinSet::new();
    for (i, key) in keys.into_iter().enumerate() {
        let (bucket, limit) = (bucket.clone(), limit.clone());
        tasks.spawn(async move {
            let _permit = limit.acquire_owned().await;
            (i, bucket.head(&key).await)
        });
    }
    let mut out = vec![None; tasks.len()];
    while let Some(joined) = tasks.join_next().await {
        let (i, head) = joined.map_err(|e| S3Error {
            op: "HeadObject",
            kind: super::bucket::S3ErrorKind::Other,
            message: e.to_string(),
        })?;
        out[i] = head?;
    }
    Ok(out)
}

/// Sorts the open uploads: continued (set on their target), stale, or someone else's.
fn match_uploads(found: &mut Found, open: Vec<OpenUpload>, journal: Option<&Journal>) {
    let Some(journal) = journal else {
        found.foreign = open;
        return;
    };
    let ours = journal.uploads();
    let mut targets: HashMap<&str, (&Target, &ToFetch)> = HashMap::new();
    for w in &found.fetch {
        for t in &w.targets {
            targets.insert(t.key.as_str(), (t, w));
        }
    }
    for u in open {
        let Some(rec) = ours.get(&u.upload_id) else {
            // Opened by a run killed before it could record the answer: ours, unusable.
            match journal.was_opening(&u.key) {
                true => found.stale.push(u),
                false => found.foreign.push(u),
            }
            continue;
        };
        let fits = targets.get(u.key.as_str()).is_some_and(|(t, w)| {
            rec.archive.as_deref() == Some(w.archive_id.as_str())
                && rec.tree == to_hex(&w.tree_hash)
                && rec.part_size == part_size(w.size)
                && crate::locks::lock(&t.upload).is_none()
        });
        match (fits, targets.get(u.key.as_str())) {
            (true, Some((t, _))) => {
                *crate::locks::lock(&t.upload) = Some(u.upload_id.clone());
                found.resumed += 1;
            }
            _ => found.stale.push(u),
        }
    }
}

/// What a dry run reports of an S3 export: what would be written, and its requests.
pub fn dry_run(found: &Found, class: StorageClass) -> DryRun {
    // PUT-class requests per object: streamed ones by their parts, copies one each (an archive's
    // later objects are copies of its first, up to CopyObject's limit).
    let mut requests = 0;
    let mut sizes = Vec::new();
    for f in &found.fetch {
        for k in 0..f.targets.len() {
            requests += match k > 0 && f.size <= MAX_COPY {
                true => 1,
                false => put_requests(f.size),
            };
            sizes.push(f.size);
        }
    }
    for s in &found.sends {
        requests += put_requests(s.size);
        sizes.push(s.size);
    }
    requests += found.copies.len() as u64;
    sizes.extend(found.copies.iter().map(|c| c.size));
    DryRun {
        to_write: sizes.len() as u64,
        bytes_to_write: sizes.iter().sum(),
        open_uploads: (found.foreign.len() + found.stale.len() + found.resumed) as u64,
        s3: Some((class, requests)),
        ..DryRun::default()
    }
}

/// Does what needs no job: aborts stale uploads, copies archives held under another key,
/// and sends staged and empty files from the mount. Each failure fails its file alone.
pub async fn settle(ctx: &Arc<Ctx>, found: &mut Found, tally: &mut Tally, report: &mut Reporter) {
    for u in found.stale.drain(..) {
        match ctx.bucket.abort(&u.key, &u.upload_id).await {
            Ok(()) => {
                if let Err(e) = ctx.journal.upload_ended(&u.upload_id) {
                    log::warn!("{e}");
                }
            }
            Err(e) => log::warn!("{}: aborting a stale upload: {e}", u.key),
        }
    }
    for c in found.copies.drain(..) {
        match ctx
            .bucket
            .copy(&c.from, &c.target.key, &c.target.meta)
            .await
        {
            Ok(()) => {
                tally.copied += 1;
                placed(tally, report, &c.target.rel, c.size, "copied");
            }
            Err(e) => failed(tally, report, &c.target.rel, c.size, &e.to_string()),
        }
    }
    for s in found.sends.drain(..) {
        let want = Expect {
            size: s.size,
            tree: &s.tree,
            archive: None,
        };
        let progress = AtomicU64::new(0);
        let source = Source::File(s.path.clone());
        match stream::send(ctx, &source, &s.target, want, &progress).await {
            Ok(_) => {
                let status = match s.size {
                    0 => {
                        tally.empty += 1;
                        "empty"
                    }
                    _ => {
                        tally.copied += 1;
                        "copied"
                    }
                };
                placed(tally, report, &s.target.rel, s.size, status);
            }
            Err(e) => failed(tally, report, &s.target.rel, s.size, &e.to_string()),
        }
    }
}
