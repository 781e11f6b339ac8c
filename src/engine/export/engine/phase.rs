//! Moving an archive between phases, and its two endings: placed (its files counted as
//! exported or copied) or failed (its files listed as failures). Either ending releases the
//! archive's bytes from the budget, so the next job can start.

use super::{Engine, JobRef, Phase, Replaces};
use crate::engine::export::pace;

impl Engine<'_> {
    /// Archive `i` needs a new job, for the reason given.
    pub(super) fn need_job(&mut self, i: usize, why: Replaces) {
        let e = &mut self.entries[i];
        e.phase = Phase::Pending;
        e.replaces = Some(why);
        e.not_before = None;
        self.again.insert(i);
    }

    pub(super) fn wait_for_job(&mut self, i: usize, job: JobRef) {
        self.entries[i].phase = Phase::Waiting(job);
        self.waiting.insert(i);
    }

    pub(super) fn mark_ready(&mut self, i: usize, job: JobRef) {
        self.ready.insert(pace::download_order(job.completed, i));
        self.entries[i].phase = Phase::Ready(job);
    }

    /// Archive `i` is downloaded, verified and placed; `fetched` is the bytes this run fetched.
    pub(super) fn done(&mut self, i: usize, fetched: u64) {
        self.open -= 1;
        let e = &mut self.entries[i];
        e.phase = Phase::Done;
        if std::mem::take(&mut e.charged) {
            self.budget.release(e.work.size);
        }
        let work = e.work.clone();
        let t = &mut *self.tally;
        t.downloaded += 1;
        t.bytes_downloaded += fetched;
        for (k, rel) in work.rels().into_iter().enumerate() {
            t.files_done += 1;
            t.bytes_done += work.size;
            let status = if k == 0 { "exported" } else { "copied" };
            if k > 0 {
                t.copied += 1;
            }
            self.report.file(rel, work.size, status, None);
        }
    }

    /// Gives up on an archive. `discard` drops its temporary data (it cannot be trusted);
    /// otherwise it stays for the next run to resume.
    pub(super) fn fail(&mut self, i: usize, why: &str, discard: bool) {
        self.open -= 1;
        let e = &mut self.entries[i];
        e.phase = Phase::Failed;
        if std::mem::take(&mut e.charged) {
            self.budget.release(e.work.size);
        }
        let work = e.work.clone();
        if discard {
            work.discard();
        }
        for rel in work.rels() {
            let path = rel.display().to_string();
            self.tally.failures.push((path, why.to_owned()));
            self.report.file(rel, work.size, "failed", Some(why));
        }
    }
}
