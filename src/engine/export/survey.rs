//! Step 1 of an export, before any retrieval: every directory, empty file, symlink and special
//! file (`special`) under DEST, the files only the mount has (staged, not in Glacier yet)
//! copied through it, and for each archive what it still needs: nothing (every file already
//! in DEST), local copies (some file already in DEST), placing a download a previous run
//! finished, or a retrieval (a [`Work`] for the engine, resuming what a previous run verified).
//!
//! A file that cannot be handled is counted as failed and the others go on; only a directory
//! that cannot be created stops the export.

use std::collections::HashMap;
use std::path::Path;

use super::archive::{self, Sink, Target, Work};
use super::dest::{self, Dest, DestError, Journal, Record};
use super::report::{DryRun, Reporter, Tally};
use super::source::{FileEntry, Listing, Origin};
use super::special;
use crate::codec::treehash::{to_hex, Digest};

/// One archive and the files it becomes (several files of a vault may share an archive).
pub(super) struct Group<'l> {
    pub(super) archive_id: String,
    pub(super) tree_hash: Digest,
    pub(super) size: u64,
    pub(super) files: Vec<&'l FileEntry>,
}

/// The archives of a listing, in the order their first file appears.
#[derive(Default)]
pub(super) struct Groups<'l> {
    pub(super) list: Vec<Group<'l>>,
    by_archive: HashMap<&'l str, usize>,
}

impl<'l> Groups<'l> {
    /// Adds `f` to its archive's group; false when that archive's other files have another
    /// size, which leaves no way to tell which is right.
    pub(super) fn add(&mut self, f: &'l FileEntry, archive_id: &'l str, tree_hash: Digest) -> bool {
        match self.by_archive.get(archive_id) {
            Some(&g) if self.list[g].size == f.size => {
                self.list[g].files.push(f);
                true
            }
            Some(_) => false,
            None => {
                self.by_archive.insert(archive_id, self.list.len());
                self.list.push(Group {
                    archive_id: archive_id.to_owned(),
                    tree_hash,
                    size: f.size,
                    files: vec![f],
                });
                true
            }
        }
    }
}

/// Step 1: directories, empty files, files only the mount has, and files already in place.
/// Returns the archives left to retrieve.
pub fn survey(
    dest: &Dest,
    listing: &Listing,
    tally: &mut Tally,
    report: &mut Reporter,
) -> Result<Vec<Work>, DestError> {
    for d in &listing.dirs {
        let path = dest.final_path(&d.rel);
        std::fs::create_dir_all(&path).map_err(|source| DestError::Io { path, source })?;
    }
    tally.count(listing);
    special::recreate(dest, &listing.specials, tally, report);

    let groups = place_local_files(dest, listing, tally, report);
    let works = groups
        .list
        .iter()
        .filter_map(|g| settle_archive(dest, g, tally, report))
        .collect();
    Ok(works)
}

/// Step 1 of a dry run into a local directory: the same decisions as [`survey`], made by
/// looking only. Returns what would be written, and the archives to retrieve with their sizes.
pub fn dry(
    root: &Path,
    listing: &Listing,
    tally: &mut Tally,
    report: &mut Reporter,
) -> (DryRun, Vec<(String, u64)>) {
    tally.count(listing);
    let mut dry = DryRun {
        to_write: listing.specials.len() as u64,
        ..DryRun::default()
    };
    let mut groups = Groups::default();
    let write = |dry: &mut DryRun, size: u64| {
        dry.to_write += 1;
        dry.bytes_to_write += size;
    };
    for f in &listing.files {
        match &f.origin {
            // Staged files are always copied: nothing shows the copy in DEST is the same.
            Origin::Empty | Origin::Local => write(&mut dry, f.size),
            Origin::Unusable(why) => fail(tally, report, f, why),
            Origin::Archive {
                archive_id,
                tree_hash,
            } => {
                if !groups.add(f, archive_id, *tree_hash) {
                    fail(
                        tally,
                        report,
                        f,
                        "another file with this archive has another size",
                    );
                }
            }
        }
    }
    let mut to_fetch = Vec::new();
    for g in &groups.list {
        let mut any_in_place = false;
        for f in &g.files {
            let here = dest::holds(&root.join(&f.rel), g.size, Some(&g.tree_hash));
            match here {
                Ok(true) => {
                    any_in_place = true;
                    placed(tally, report, &f.rel, g.size, "in_place");
                }
                _ => write(&mut dry, g.size),
            }
        }
        if !any_in_place && !g.files.is_empty() {
            to_fetch.push((g.archive_id.clone(), g.size));
        }
    }
    (dry, to_fetch)
}

/// Places the files that need no retrieval (empty ones, and those only the mount has), fails
/// the unusable ones, and groups the rest by archive.
fn place_local_files<'l>(
    dest: &Dest,
    listing: &'l Listing,
    tally: &mut Tally,
    report: &mut Reporter,
) -> Groups<'l> {
    let mut groups = Groups::default();
    for f in &listing.files {
        let (outcome, status) = match &f.origin {
            Origin::Empty => (place_empty(dest, f), "empty"),
            Origin::Local => (copy_from_mount(dest, f), "copied"),
            Origin::Unusable(why) => {
                fail(tally, report, f, why);
                continue;
            }
            Origin::Archive {
                archive_id,
                tree_hash,
            } => {
                if !groups.add(f, archive_id, *tree_hash) {
                    let why = "another file with this archive has another size";
                    fail(tally, report, f, why);
                }
                continue;
            }
        };
        match outcome {
            Ok(()) => {
                match status {
                    "empty" => tally.empty += 1,
                    _ => tally.copied += 1,
                }
                placed(tally, report, &f.rel, f.size, status);
            }
            Err(e) => fail(tally, report, f, &e.to_string()),
        }
    }
    groups
}

/// Counts one file as in place, and reports it with `status`.
pub(super) fn placed(
    tally: &mut Tally,
    report: &mut Reporter,
    rel: &Path,
    size: u64,
    status: &str,
) {
    tally.files_done += 1;
    tally.bytes_done += size;
    report.file(rel, size, status, None);
}

/// Counts one file as failed, and reports why.
pub(super) fn failed(tally: &mut Tally, report: &mut Reporter, rel: &Path, size: u64, why: &str) {
    tally
        .failures
        .push((rel.display().to_string(), why.to_owned()));
    report.file(rel, size, "failed", Some(why));
}

fn fail(tally: &mut Tally, report: &mut Reporter, f: &FileEntry, why: &str) {
    failed(tally, report, &f.rel, f.size, why);
}

fn place_empty(dest: &Dest, f: &FileEntry) -> Result<(), DestError> {
    let path = dest.final_path(&f.rel);
    match dest::holds(&path, 0, None)? {
        true => dest::touch(&path, f.mtime, f.mode),
        false => dest::create_empty(&path, f.mtime, f.mode),
    }
}

/// A file whose bytes only the mount has (not in Glacier yet): read through the mount, which
/// serves it from local disk without a retrieval. Always copied: with no tree hash to compare,
/// a file already in DEST cannot be shown to be the same.
fn copy_from_mount(dest: &Dest, f: &FileEntry) -> Result<(), DestError> {
    let path = dest.final_path(&f.rel);
    let temp = dest.temp_path(&f.rel);
    dest::copy_verified(&f.path, &temp, f.size, None)?;
    dest::place(&temp, &path, f.mtime, f.mode)
}

/// Decides what one archive still needs: nothing (every file in place), local copies (some
/// file in place), placing a download a previous run finished, or a retrieval.
fn settle_archive(
    dest: &Dest,
    g: &Group<'_>,
    tally: &mut Tally,
    report: &mut Reporter,
) -> Option<Work> {
    let targets = inspect_targets(dest, g, tally, report);
    let in_place = targets.iter().find(|(_, placed)| *placed);
    if let Some(source) = in_place.map(|(t, _)| t.final_path.clone()) {
        copy_from_placed(&source, &targets, g, tally, report);
        dest.record(&g.archive_id).remove();
        return None;
    }
    let targets: Vec<Target> = targets.into_iter().map(|(t, _)| t).collect();
    let (work, verified) = resume_work(dest, g, targets)?;
    if verified < g.size {
        return Some(work);
    }
    // A previous run downloaded and verified it all, and stopped before placing it.
    place_downloaded(&work, tally, report);
    None
}

/// Each file of the archive, and whether DEST already holds it (right size and tree hash).
/// A file that cannot be checked fails and is left out.
fn inspect_targets(
    dest: &Dest,
    g: &Group<'_>,
    tally: &mut Tally,
    report: &mut Reporter,
) -> Vec<(Target, bool)> {
    let mut targets = Vec::new();
    for f in &g.files {
        let final_path = dest.final_path(&f.rel);
        let placed = match dest::holds(&final_path, g.size, Some(&g.tree_hash)) {
            Ok(placed) => placed,
            Err(e) => {
                fail(tally, report, f, &e.to_string());
                continue;
            }
        };
        let target = Target {
            rel: f.rel.clone(),
            temp: dest.temp_path(&f.rel),
            final_path,
            mtime: f.mtime,
            mode: f.mode,
        };
        targets.push((target, placed));
    }
    targets
}

/// Some file of the archive is already in DEST (`source`): the others become verified copies
/// of it, and those in place get their times and mode.
fn copy_from_placed(
    source: &Path,
    targets: &[(Target, bool)],
    g: &Group<'_>,
    tally: &mut Tally,
    report: &mut Reporter,
) {
    for (t, in_place) in targets {
        let result = match in_place {
            true => dest::touch(&t.final_path, t.mtime, t.mode),
            false => dest::copy_verified(source, &t.temp, g.size, Some(&g.tree_hash))
                .and_then(|()| dest::place(&t.temp, &t.final_path, t.mtime, t.mode)),
        };
        match result {
            Ok(()) => {
                let status = if *in_place { "in_place" } else { "copied" };
                match in_place {
                    true => tally.already += 1,
                    false => tally.copied += 1,
                }
                placed(tally, report, &t.rel, g.size, status);
            }
            Err(e) => failed(tally, report, &t.rel, g.size, &e.to_string()),
        }
    }
}

/// The retrieval an archive needs, resuming from what a previous run recorded and its
/// temporary file still agrees with; also how many bytes of it are verified already. None
/// when none of its files is left to export.
fn resume_work(dest: &Dest, g: &Group<'_>, targets: Vec<Target>) -> Option<(Work, u64)> {
    let first_temp = targets.first()?.temp.clone();
    let file = dest.record(&g.archive_id);
    let old = file.load(&g.archive_id);
    let resume = old
        .as_ref()
        .map(|r| dest::trusted_prefix(r, &first_temp, g.size))
        .unwrap_or_default();
    let recorded_job = old.and_then(|r| r.job_id);
    let record = Record {
        archive_id: g.archive_id.clone(),
        size: g.size,
        job_id: recorded_job.clone(),
        verified: resume.verified,
        leaves: resume.leaves.iter().map(to_hex).collect(),
    };
    let work = Work {
        archive_id: g.archive_id.clone(),
        size: g.size,
        tree_hash: g.tree_hash,
        recorded_job,
        sink: Sink::Dir {
            targets,
            journal: Journal::new(file, record),
        },
    };
    Some((work, resume.verified))
}

/// Places a download a previous run verified in full: the first file as exported, the
/// others as copies of it.
fn place_downloaded(work: &Work, tally: &mut Tally, report: &mut Reporter) {
    let Sink::Dir { targets, journal } = &work.sink else {
        return;
    };
    match archive::place_all(targets, journal, work) {
        Ok(()) => {
            tally.downloaded += 1;
            for (k, t) in targets.iter().enumerate() {
                tally.copied += u64::from(k > 0);
                let status = if k == 0 { "exported" } else { "copied" };
                placed(tally, report, &t.rel, work.size, status);
            }
        }
        Err(e) => {
            for t in targets {
                failed(tally, report, &t.rel, work.size, &e.to_string());
            }
        }
    }
}
