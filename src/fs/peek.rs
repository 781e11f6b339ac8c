//! Programs that only peek: file managers, thumbnailers, indexers and `file` open a file to
//! guess its type or draw a preview, not because a user asked for its data. Their opens of a
//! cold file get EAGAIN as every open does, but start no retrieval job: browsing a vault in a
//! file manager must not cost a job per file. This module owns the built-in list of such
//! programs (`--retrieve-deny` adds to it, `--retrieve-allow` takes from it), finding out which
//! program an open comes from, and the count of peeks refused: logged at most once a minute
//! per program and added to the catalog (`catalog::meta::refused_peeks`) about once a second,
//! off the request path, for `glacierfs status`.
//!
//! It lives in the file-system layer because only a FUSE request knows its caller's pid; the
//! retrieval engine below never hears of a peek, so its budget and jobs see only real reads.
//!
//! The caller is looked up only when an open meets a cold file (warm opens pay nothing), and
//! not cached: the process is blocked in its open while we look, so its pid cannot have been
//! reused, and the look costs a few microseconds (three small reads under /proc).

use std::cell::OnceCell;
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use crate::catalog::{meta, Catalog};
use crate::locks::lock;

/// Who sent a request, as FUSE tells it: the calling thread's id in the mount's pid namespace
/// (0 when the kernel cannot name one, then nobody is taken for a peeker).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Caller {
    pub pid: u32,
}

impl Caller {
    pub fn new(pid: u32) -> Caller {
        Caller { pid }
    }

    /// A caller nobody knows (in-process calls): treated as any other program.
    pub fn unknown() -> Caller {
        Caller { pid: 0 }
    }
}

/// The longest command name the kernel keeps (TASK_COMM_LEN less its NUL): a longer program
/// name shows cut to this in `/proc/PID/comm`.
const COMM_MAX: usize = 15;

/// One entry of the built-in list: a name pattern, and for a tool that does more than peek,
/// the subcommands that only peek.
struct Rule {
    pattern: &'static str,
    only: &'static [&'static str],
}

const fn any(pattern: &'static str) -> Rule {
    Rule { pattern, only: &[] }
}

/// The programs that only peek. Names are matched against the process's command name and its
/// executable's file name (a command name is cut at 15 characters; a name of that length is
/// matched as the start of a longer one). `*` matches any text.
const BUILT_IN: &[Rule] = &[
    // GIO and gvfs: the daemons, and the `gio` tool's subcommands that read metadata (`gio
    // info` and `gio list` sniff content types from the first bytes); `gio cat` and `gio copy`
    // read data and start jobs.
    any("gvfsd"),
    any("gvfsd-*"),
    any("gvfs-*"),
    Rule {
        pattern: "gio",
        only: &["info", "list", "tree"],
    },
    // File managers (desktop icons included) and KDE's I/O workers, which dolphin's previews
    // and type detection run in.
    any("nautilus"),
    any("nemo"),
    any("nemo-desktop"),
    any("caja"),
    any("thunar"),
    any("pcmanfm"),
    any("pcmanfm-qt"),
    any("dolphin"),
    any("konqueror"),
    any("kioworker"),
    any("kioslave"),
    any("kioslave5"),
    any("xfdesktop"),
    any("spacefm"),
    // Thumbnailers: tumbler's daemon, and the helpers GNOME's and others' thumbnail factories
    // run (named for the bwrap sandbox's command line, and every `*thumbnailer`).
    any("tumblerd"),
    any("*thumbnailer"),
    any("gdk-pixbuf-thumbnailer"),
    any("gnome-thumbnail-font"),
    any("gnome-epub-thumbnailer"),
    any("gnome-mobi-thumbnailer"),
    any("gsf-office-thumbnailer"),
    any("evince-thumbnailer"),
    any("atril-thumbnailer"),
    any("xreader-thumbnailer"),
    any("totem-video-thumbnailer"),
    any("ffmpegthumbnailer"),
    // Indexers: GNOME's tracker (localsearch since GNOME 47), KDE's baloo, recoll.
    any("tracker-miner-*"),
    any("tracker-extract*"),
    any("localsearch*"),
    any("baloo*"),
    any("recollindex"),
    // Type detection.
    any("file"),
];

/// Which programs only peek: the built-in list, less `allow`, plus `deny` (a name in `deny`
/// wins over `allow`, so `--retrieve-allow '*' --retrieve-deny nautilus` leaves only nautilus).
#[derive(Debug, Clone, Default)]
pub struct PeekRules {
    deny: Vec<String>,
    allow: Vec<String>,
}

/// A process as `/proc` describes it.
#[derive(Debug, Clone, Default)]
pub(super) struct Process {
    /// The process's command name (of its main thread: a worker thread has its own name).
    comm: String,
    /// The file name of its executable, when we may read the link (the same user, or root).
    exe: Option<String>,
    /// Its thread group, where its arguments are read.
    tgid: u32,
    /// Its arguments after the program's name, read only when a rule asks for them.
    args: OnceCell<Vec<String>>,
}

impl Process {
    /// The process behind thread `tid`; None when it cannot be read (gone, or pid 0).
    pub(super) fn of(tid: u32) -> Option<Process> {
        if tid == 0 {
            return None;
        }
        // FUSE names the calling thread; the process is its thread group.
        let status = std::fs::read_to_string(format!("/proc/{tid}/status")).ok()?;
        let tgid = status
            .lines()
            .find_map(|l| l.strip_prefix("Tgid:"))
            .and_then(|v| v.trim().parse::<u32>().ok())
            .unwrap_or(tid);
        let comm = std::fs::read_to_string(format!("/proc/{tgid}/comm")).ok()?;
        let exe = std::fs::read_link(format!("/proc/{tgid}/exe"))
            .ok()
            .and_then(|p| {
                let name = p.file_name()?.to_string_lossy().into_owned();
                Some(name.trim_end_matches(" (deleted)").to_owned())
            });
        Some(Process {
            comm: comm.trim_end_matches('\n').to_owned(),
            exe,
            tgid,
            args: OnceCell::new(),
        })
    }

    /// A process named `comm`, running `exe` with `args`: for tests.
    #[cfg(test)]
    fn named(comm: &str, exe: Option<&str>, args: &[&str]) -> Process {
        Process {
            comm: comm.to_owned(),
            exe: exe.map(str::to_owned),
            tgid: 0,
            args: OnceCell::from(args.iter().map(|a| (*a).to_owned()).collect::<Vec<_>>()),
        }
    }

    /// The first argument that is not an option: a tool's subcommand.
    fn subcommand(&self) -> Option<&str> {
        let args = self.args.get_or_init(|| {
            let raw = std::fs::read(format!("/proc/{}/cmdline", self.tgid)).unwrap_or_default();
            raw.split(|b| *b == 0)
                .skip(1)
                .filter(|a| !a.is_empty())
                .map(|a| String::from_utf8_lossy(a).into_owned())
                .collect()
        });
        args.iter()
            .map(String::as_str)
            .find(|a| !a.starts_with('-'))
    }

    /// The name of this process `pattern` matches, if any: the executable's (whole) name
    /// first, then the command name, which a long name shows cut short.
    fn matched_by(&self, pattern: &str) -> Option<&str> {
        if let Some(exe) = self.exe.as_deref().filter(|e| glob(pattern, e)) {
            return Some(exe);
        }
        let cut = self.comm.len() == COMM_MAX;
        (glob(pattern, &self.comm) || (cut && head_covers(pattern, &self.comm)))
            .then_some(self.comm.as_str())
    }
}

impl PeekRules {
    pub fn new(deny: Vec<String>, allow: Vec<String>) -> PeekRules {
        PeekRules { deny, allow }
    }

    /// The program's name if process `p` only peeks.
    pub(super) fn peeker(&self, p: &Process) -> Option<String> {
        if let Some(name) = self.deny.iter().find_map(|d| p.matched_by(d)) {
            return Some(name.to_owned());
        }
        if self.allow.iter().any(|a| p.matched_by(a).is_some()) {
            return None;
        }
        BUILT_IN.iter().find_map(|rule| {
            let name = p.matched_by(rule.pattern)?;
            let peeks = rule.only.is_empty()
                || p.subcommand()
                    .is_some_and(|s| rule.only.iter().any(|o| o.eq_ignore_ascii_case(s)));
            peeks.then(|| name.to_owned())
        })
    }
}

/// Whether `name` matches `pattern`, where `*` stands for any text (none included), ignoring
/// ASCII case (`Thunar` and `thunar` are one program).
fn glob(pattern: &str, name: &str) -> bool {
    let (p, n) = (pattern.as_bytes(), name.as_bytes());
    // The classic linear matcher: on a mismatch, let the last `*` swallow one more byte.
    let (mut pi, mut ni) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while ni < n.len() {
        if pi < p.len() && p[pi] == b'*' {
            star = Some((pi, ni));
            pi += 1;
        } else if pi < p.len() && p[pi].eq_ignore_ascii_case(&n[ni]) {
            pi += 1;
            ni += 1;
        } else if let Some((sp, sn)) = star {
            pi = sp + 1;
            ni = sn + 1;
            star = Some((sp, sn + 1));
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|c| *c == b'*')
}

/// Whether a command name cut at [`COMM_MAX`] can be the start of a name `pattern` matches,
/// judged by the pattern's text before any `*` alone: `totem-video-thu` is the start of
/// `totem-video-thumbnailer`; `*thumbnailer` says nothing about how a name starts, so it is
/// left to the executable's name.
fn head_covers(pattern: &str, comm: &str) -> bool {
    let head = pattern.split('*').next().unwrap_or_default();
    head.len() >= comm.len()
        && head
            .get(..comm.len())
            .is_some_and(|h| h.eq_ignore_ascii_case(comm))
}

/// How often refused peeks are added to the catalog, and the log checked for lines due.
const FLUSH_EVERY: Duration = Duration::from_secs(1);
/// At most one log line per program per this long.
const LOG_EVERY: Duration = Duration::from_secs(60);

/// Peeks refused and not yet counted in the catalog or logged.
#[derive(Debug, Default)]
struct TallyState {
    unsaved: BTreeMap<String, u64>,
    unlogged: BTreeMap<String, u64>,
    logged_at: HashMap<String, Instant>,
    /// A flush task is running (it stops once nothing is left to save or log).
    flushing: bool,
}

impl TallyState {
    fn add(&mut self, program: &str) {
        *self.unsaved.entry(program.to_owned()).or_default() += 1;
        *self.unlogged.entry(program.to_owned()).or_default() += 1;
    }

    /// What is due at `now`: the counts to add to the catalog, and the log lines of programs
    /// not logged for [`LOG_EVERY`].
    fn take(&mut self, now: Instant) -> (Vec<(String, u64)>, Vec<String>) {
        let counts = std::mem::take(&mut self.unsaved).into_iter().collect();
        let due: Vec<String> = self
            .unlogged
            .keys()
            .filter(|p| {
                self.logged_at
                    .get(*p)
                    .is_none_or(|at| now.duration_since(*at) >= LOG_EVERY)
            })
            .cloned()
            .collect();
        let mut lines = Vec::with_capacity(due.len());
        for program in due {
            if let Some(n) = self.unlogged.remove(&program) {
                lines.push(line(&program, n));
                self.logged_at.insert(program, now);
            }
        }
        (counts, lines)
    }

    fn idle(&self) -> bool {
        self.unsaved.is_empty() && self.unlogged.is_empty()
    }
}

fn line(program: &str, n: u64) -> String {
    let peeks = if n == 1 { "peek" } else { "peeks" };
    format!(
        "refused {n} {peeks} by {program} at cold files in the last minute; they start no \
         retrieval"
    )
}

/// The count of refused peeks: kept in memory on the request path, saved and logged by a
/// task on the runtime.
pub(super) struct Tally {
    catalog: Catalog,
    runtime: tokio::runtime::Handle,
    state: Mutex<TallyState>,
}

impl Tally {
    pub(super) fn new(catalog: Catalog, runtime: tokio::runtime::Handle) -> Arc<Tally> {
        Arc::new(Tally {
            catalog,
            runtime,
            state: Mutex::default(),
        })
    }

    /// Counts one refused peek by `program`; never waits on the catalog.
    pub(super) fn refused(self: &Arc<Self>, program: &str) {
        let mut st = lock(&self.state);
        st.add(program);
        if !st.flushing {
            st.flushing = true;
            self.runtime.spawn(flush(Arc::downgrade(self)));
        }
    }
}

/// Saves and logs what is due every [`FLUSH_EVERY`], until nothing is left or the file
/// system is gone (its drop saves the rest). The tally is not held across an await, so the
/// file system's drop is never left to this task.
async fn flush(tally: Weak<Tally>) {
    loop {
        tokio::time::sleep(FLUSH_EVERY).await;
        let Some(me) = tally.upgrade() else { return };
        let (counts, lines, stop) = {
            let mut st = lock(&me.state);
            let (counts, lines) = st.take(Instant::now());
            let stop = st.idle();
            if stop {
                st.flushing = false;
            }
            (counts, lines, stop)
        };
        let catalog = me.catalog.clone();
        drop(me);
        for l in lines {
            log::info!("{l}");
        }
        if !counts.is_empty() {
            if let Err(e) = catalog
                .write_async(move |tx| meta::add_refused_peeks(tx, &counts))
                .await
            {
                log::warn!("counting refused peeks: {e}");
            }
        }
        if stop {
            return;
        }
    }
}

impl Drop for Tally {
    /// The last counts and lines, at unmount.
    fn drop(&mut self) {
        let st = self
            .state
            .get_mut()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        for (program, n) in std::mem::take(&mut st.unlogged) {
            log::info!("{}", line(&program, n));
        }
        let counts: Vec<(String, u64)> = std::mem::take(&mut st.unsaved).into_iter().collect();
        if !counts.is_empty() {
            if let Err(e) = self
                .catalog
                .write(move |tx| meta::add_refused_peeks(tx, &counts))
            {
                log::warn!("counting refused peeks: {e}");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules(deny: &[&str], allow: &[&str]) -> PeekRules {
        let own = |v: &[&str]| v.iter().map(|s| (*s).to_owned()).collect();
        PeekRules::new(own(deny), own(allow))
    }

    fn peeker(r: &PeekRules, comm: &str, exe: Option<&str>, args: &[&str]) -> Option<String> {
        r.peeker(&Process::named(comm, exe, args))
    }

    #[test]
    fn the_built_in_list_knows_file_managers_thumbnailers_and_indexers() {
        let r = PeekRules::default();
        for (comm, exe) in [
            ("nautilus", "nautilus"),
            ("pool-org.gnome.", "nautilus"),
            ("Thunar", "Thunar"),
            ("gvfsd-metadata", "gvfsd-metadata"),
            ("gvfs-udisks2-vo", "gvfs-udisks2-volume-monitor"),
            ("kioworker", "kioworker"),
            ("tumblerd", "tumblerd"),
            ("tracker-extract", "tracker-extract-3"),
            ("tracker-miner-f", "tracker-miner-fs-3"),
            ("baloo_file_extr", "baloo_file_extractor"),
            ("file", "file"),
        ] {
            assert!(peeker(&r, comm, Some(exe), &[]).is_some(), "{comm} / {exe}");
        }
        assert_eq!(
            peeker(&r, "pool-org.gnome.", Some("nautilus"), &[]).as_deref(),
            Some("nautilus"),
            "a worker thread's name is not the program's"
        );
        for (comm, exe) in [
            ("cat", "cat"),
            ("cp", "cp"),
            ("rsync", "rsync"),
            ("python3", "python3.11"),
            ("filezilla", "filezilla"),
            ("profile", "profile"),
        ] {
            assert_eq!(peeker(&r, comm, Some(exe), &[]), None, "{comm} / {exe}");
        }
    }

    #[test]
    fn a_cut_command_name_matches_the_start_of_a_listed_one() {
        let r = PeekRules::default();
        // Without the executable's name (another user's process), the 15 characters left of
        // the name still match.
        for comm in ["totem-video-thu", "ffmpegthumbnail", "gdk-pixbuf-thum"] {
            assert!(peeker(&r, comm, None, &[]).is_some(), "{comm}");
        }
        // Only a name cut at 15 characters is taken as the start of another.
        assert_eq!(peeker(&r, "totem-video", None, &[]), None);
        // `*thumbnailer` says nothing about a cut name's start.
        assert_eq!(peeker(&r, "my-own-viewer-1", None, &[]), None);
        assert_eq!(
            peeker(&r, "ffmpegthumbnail", Some("ffmpegthumbnailer"), &[]).as_deref(),
            Some("ffmpegthumbnailer"),
            "the whole name is the one counted"
        );
    }

    #[test]
    fn gio_peeks_only_with_its_metadata_subcommands() {
        let r = PeekRules::default();
        for args in [
            &["info", "x"][..],
            &["list", "-a", "standard::content-type", "d"],
        ] {
            assert_eq!(peeker(&r, "gio", Some("gio"), args).as_deref(), Some("gio"));
        }
        for args in [&["cat", "x"][..], &["copy", "x", "y"], &[]] {
            assert_eq!(peeker(&r, "gio", Some("gio"), args), None, "{args:?}");
        }
    }

    #[test]
    fn deny_adds_allow_takes_away_and_deny_wins() {
        let r = rules(&["cat", "my-*"], &["nautilus", "*thumbnailer"]);
        assert_eq!(peeker(&r, "cat", Some("cat"), &[]).as_deref(), Some("cat"));
        assert_eq!(
            peeker(&r, "my-indexer", None, &[]).as_deref(),
            Some("my-indexer")
        );
        assert_eq!(peeker(&r, "nautilus", Some("nautilus"), &[]), None);
        assert_eq!(
            peeker(&r, "ffmpegthumbnail", Some("ffmpegthumbnailer"), &[]),
            None,
            "an allowed pattern covers the built-in names it matches"
        );
        assert!(peeker(&r, "tumblerd", Some("tumblerd"), &[]).is_some());
        let only = rules(&["nautilus"], &["*"]);
        assert!(peeker(&only, "nautilus", Some("nautilus"), &[]).is_some());
        assert_eq!(peeker(&only, "tumblerd", Some("tumblerd"), &[]), None);
    }

    #[test]
    fn globs() {
        assert!(glob("a*c", "abbbc"));
        assert!(glob("*", ""));
        assert!(glob("ab*", "ab"));
        assert!(glob("*b*b", "abab"));
        assert!(glob("FILE", "file"));
        assert!(!glob("a*c", "abd"));
        assert!(!glob("file", "files"));
        assert!(!glob("", "x"));
    }

    #[test]
    fn refused_peeks_are_logged_at_most_once_a_minute_per_program() {
        let mut st = TallyState::default();
        let t0 = Instant::now();
        st.add("nautilus");
        st.add("nautilus");
        st.add("file");
        let (counts, lines) = st.take(t0);
        assert_eq!(
            counts,
            vec![("file".to_owned(), 1), ("nautilus".to_owned(), 2)]
        );
        assert_eq!(
            lines,
            vec![
                "refused 1 peek by file at cold files in the last minute; they start no \
                 retrieval",
                "refused 2 peeks by nautilus at cold files in the last minute; they start no \
                 retrieval"
            ]
        );
        for _ in 0..12 {
            st.add("nautilus");
        }
        let (counts, lines) = st.take(t0 + Duration::from_secs(30));
        assert_eq!(counts, vec![("nautilus".to_owned(), 12)], "saved at once");
        assert!(lines.is_empty(), "logged again within a minute: {lines:?}");
        assert!(!st.idle(), "the line is still due");
        let (counts, lines) = st.take(t0 + Duration::from_secs(61));
        assert!(counts.is_empty());
        assert_eq!(
            lines,
            vec![
                "refused 12 peeks by nautilus at cold files in the last minute; they start \
                 no retrieval"
            ]
        );
        assert!(st.idle());
    }

    #[test]
    fn this_process_is_found_under_proc() {
        // SAFETY: gettid has no preconditions.
        let tid = unsafe { libc::gettid() } as u32;
        let me = Process::of(tid).expect("this thread is under /proc");
        let exe = std::env::current_exe().unwrap();
        let exe = exe.file_name().unwrap().to_string_lossy().into_owned();
        assert_eq!(me.exe.as_deref(), Some(exe.as_str()));
        // The test harness names its threads after tests: the process's name is not that.
        assert!(exe.starts_with(&me.comm), "{} vs {exe}", me.comm);
        assert!(Process::of(0).is_none());
    }
}
