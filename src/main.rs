//! The glacierfs binary: parses the command line, sets up logging, and runs the subcommand.
//! Exit codes: 0 success, 1 failure, 2 bad usage (clap's own convention).

use std::process::ExitCode;

use clap::Parser;

use glacierfs::cli;
use glacierfs::config::{CatalogCommand, Cli, Command, InventoryCommand, MountArgs};
use glacierfs::daemon;

fn main() -> ExitCode {
    let cli = Cli::parse();
    if !matches!(cli.command, Command::Mount(_)) {
        // A command's output piped into `head` should stop quietly when the reader goes, as
        // other Unix tools do, not panic on the failed write. Rust ignores SIGPIPE by
        // default; the daemon keeps it ignored, since a closed socket must not kill a mount.
        // SAFETY: restoring a signal's default disposition has no preconditions.
        unsafe { libc::signal(libc::SIGPIPE, libc::SIG_DFL) };
    }
    match cli.command {
        Command::Mount(args) => mount(&args),
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
    }
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

fn mount(args: &MountArgs) -> ExitCode {
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
    match daemon::run(args, &cache_dir, &mountpoint, &mut reporter) {
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
