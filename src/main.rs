//! The glacierfs binary: parses the command line (after turning a mount helper's
//! `glacierfs SOURCE MOUNTPOINT -o OPTIONS` into a `mount` command), sets up logging, and runs
//! the subcommand; it also writes its own completion scripts and manual page.
//! Exit codes: 0 success, 1 failure, 2 bad usage (clap's own convention).

use std::io::Write;
use std::process::ExitCode;

use clap::{CommandFactory, Parser};

use glacierfs::cli;
use glacierfs::config::{CatalogCommand, Cli, Command, InventoryCommand, MountArgs};
use glacierfs::daemon::{self, MountFlags};

fn main() -> ExitCode {
    let translated = match glacierfs::config::mount_helper::translate(std::env::args_os().collect())
    {
        Ok(t) => t,
        Err(e) => {
            eprintln!("glacierfs: {e}");
            return ExitCode::from(2);
        }
    };
    let cli = Cli::parse_from(translated.argv);
    if !matches!(cli.command, Command::Mount(_)) {
        // A command's output piped into `head` should stop quietly when the reader goes, as
        // other Unix tools do, not panic on the failed write. Rust ignores SIGPIPE by
        // default; the daemon keeps it ignored, since a closed socket must not kill a mount.
        // SAFETY: restoring a signal's default disposition has no preconditions.
        unsafe { libc::signal(libc::SIGPIPE, libc::SIG_DFL) };
    }
    match cli.command {
        Command::Mount(args) => mount(&args, translated.flags),
        Command::Treehash(args) => {
            init_logging(0, false, None);
            cli::treehash_files(&args)
        }
        Command::Inventory(InventoryCommand::Import(args)) => {
            init_logging(0, false, None);
            cli::catalog::import(&args)
        }
        Command::Inventory(InventoryCommand::Export(args)) => {
            init_logging(0, false, None);
            cli::inventory::export(&args)
        }
        Command::Catalog(CatalogCommand::Rebuild(args)) => {
            init_logging(0, false, None);
            cli::catalog::rebuild(&args)
        }
        Command::Catalog(CatalogCommand::Restore(args)) => {
            init_logging(0, false, None);
            cli::catalog::restore(&args)
        }
        Command::Status(args) => cli::status::run(&args),
        Command::Retrieve(args) => {
            init_logging(0, false, None);
            cli::sync::retrieve(&args)
        }
        Command::Sync(args) => {
            init_logging(0, false, None);
            cli::sync::sync(&args)
        }
        Command::Export(args) => {
            init_logging(0, true, None);
            glacierfs::engine::export::run(&args)
        }
        Command::Completions { shell } => {
            let mut out = Vec::new();
            clap_complete::generate(shell, &mut Cli::command(), "glacierfs", &mut out);
            write_stdout(&out)
        }
        Command::Man => match man_page() {
            Ok(page) => write_stdout(&page),
            Err(e) => {
                eprintln!("glacierfs: cannot write the manual page: {e}");
                ExitCode::FAILURE
            }
        },
    }
}

fn write_stdout(bytes: &[u8]) -> ExitCode {
    let mut out = std::io::stdout().lock();
    match out.write_all(bytes).and_then(|()| out.flush()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("glacierfs: {e}");
            ExitCode::FAILURE
        }
    }
}

/// One page for the whole program: clap_mangen's sections for `glacierfs`, a section per
/// command with its synopsis and options (so `man glacierfs` answers for every command without
/// a page per subcommand to install), and how mount(8) and fstab mount it.
fn man_page() -> std::io::Result<Vec<u8>> {
    let mut cmd = Cli::command();
    cmd.build();
    let mut page = Vec::new();
    let top = clap_mangen::Man::new(cmd.clone());
    top.render_title(&mut page)?;
    top.render_name_section(&mut page)?;
    top.render_synopsis_section(&mut page)?;
    top.render_description_section(&mut page)?;
    top.render_options_section(&mut page)?;
    for sub in leaf_commands(&cmd) {
        let name = sub.get_bin_name().unwrap_or(sub.get_name()).to_owned();
        let man = clap_mangen::Man::new(sub);
        let mut section = Vec::new();
        man.render_synopsis_section(&mut section)?;
        man.render_description_section(&mut section)?;
        man.render_options_section(&mut section)?;
        // Each rendering opens its own top-level sections; under the command's heading they
        // become subsections.
        let text = String::from_utf8_lossy(&section)
            .replace(".SH SYNOPSIS", &format!(".SH \"{}\"", name.to_uppercase()))
            .replace(".SH DESCRIPTION\n", ".PP\n")
            .replace(".SH OPTIONS", ".SS Options");
        page.extend_from_slice(text.as_bytes());
    }
    page.extend_from_slice(MAN_MOUNT_HELPER.as_bytes());
    top.render_version_section(&mut page)?;
    Ok(page)
}

/// The mount-helper convention, which clap does not know about.
const MAN_MOUNT_HELPER: &str = r#".SH "MOUNT(8) AND FSTAB"
The kernel sees the type \fBfuse.glacierfs\fR with the source \fBglacierfs\fR, so mount(8),
/etc/fstab and systemd mount units can mount it (with mount.fuse3 from fuse3 installed):
.PP
.nf
mount \-t fuse.glacierfs glacierfs /mnt/glacier \-o region=eu\-west\-1,cache_dir=/var/cache/g
glacierfs /mnt/glacier fuse.glacierfs _netdev,nofail,region=eu\-west\-1,allow_other 0 0
.fi
.PP
mount.fuse3 runs \fBglacierfs\fR \fISOURCE MOUNTPOINT\fR \fB\-o\fR \fIOPTIONS\fR, which
glacierfs reads as \fBglacierfs mount\fR; \fBglacierfs mount \-o\fR \fIOPTIONS\fR works too.
Every long option of \fBmount\fR can be given as \fIname\fR=\fIvalue\fR or \fIname\fR
(with \- or _), and the generic options are accepted: \fBro\fR and \fBrw\fR, \fBnoexec\fR,
\fBexec\fR, \fBuser\fR and \fBusers\fR (which imply noexec), \fBallow_other\fR,
\fBallow_root\fR, and \fBdefaults\fR, \fB_netdev\fR, \fBnofail\fR, \fBnoauto\fR,
\fBauto\fR, \fBnouser\fR, \fBnosuid\fR, \fBnodev\fR, \fBsuid\fR and \fBdev\fR, which
change nothing (glacierfs always mounts nosuid and nodev). An unknown option is an error
that names it.
"#;

/// The commands that run something (`inventory export`, not `inventory`), in help order.
fn leaf_commands(cmd: &clap::Command) -> Vec<clap::Command> {
    let mut out = Vec::new();
    for sub in cmd.get_subcommands().filter(|s| s.get_name() != "help") {
        if sub.has_subcommands() {
            out.extend(leaf_commands(sub));
        } else {
            out.push(sub.clone());
        }
    }
    out
}

/// `-v` raises the level, `-q` keeps only warnings; RUST_LOG, when set, decides instead.
fn init_logging(verbose: u8, quiet: bool, file: Option<std::fs::File>) {
    let level = match (quiet, verbose) {
        (true, _) => "warn",
        (false, 0) => "info",
        (false, 1) => "debug",
        _ => "trace",
    };
    // The SDK's own crates are chatty and can echo request details; keep them at warn unless
    // RUST_LOG asks otherwise.
    let default = format!(
        "{level},aws_smithy_runtime=warn,aws_config=warn,hyper=warn,rustls=warn,fuser=warn"
    );
    let mut builder =
        env_logger::Builder::from_env(env_logger::Env::default().default_filter_or(default));
    builder.format_timestamp_millis();
    if let Some(f) = file {
        builder.target(env_logger::Target::Pipe(Box::new(f)));
    }
    let _ = builder.try_init();
}

fn mount(args: &MountArgs, flags: MountFlags) -> ExitCode {
    daemon::private_umask();
    let cache_dir = match args.cache.resolve() {
        Ok(d) => d,
        Err(e) => {
            eprintln!("glacierfs: {e}");
            return ExitCode::FAILURE;
        }
    };
    let mountpoint = match daemon::check_mountpoint(&args.mountpoint) {
        Ok(m) => m,
        Err(e) => {
            eprintln!("glacierfs: {e}");
            return ExitCode::FAILURE;
        }
    };
    let mut reporter = if args.foreground {
        init_logging(args.verbose, args.quiet, None);
        daemon::StartupReporter::foreground()
    } else {
        // Detach before any thread exists; the parent exits with the daemon's start-up verdict.
        let reporter = match daemon::detach() {
            Ok(r) => r,
            Err(e) => {
                eprintln!("glacierfs: cannot detach: {e}");
                return ExitCode::FAILURE;
            }
        };
        let log = daemon::prepare_cache_dir(&cache_dir)
            .ok()
            .and_then(|_| daemon::open_log(&cache_dir).ok());
        init_logging(args.verbose, args.quiet, log);
        reporter
    };
    match daemon::run(args, flags, &cache_dir, &mountpoint, &mut reporter) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            log::error!("{e}");
            if args.foreground {
                eprintln!("glacierfs: {e}");
            }
            reporter.failed(&e);
            ExitCode::FAILURE
        }
    }
}
