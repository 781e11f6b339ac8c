//! The glacierfs binary: parses the command line, sets up logging, and runs the subcommand.
//! Exit codes: 0 success, 1 failure, 2 bad usage (clap's own convention).

use std::io::Write;
use std::path::Path;
use std::process::ExitCode;

use clap::Parser;

use glacierfs::catalog::{vaults, Catalog};
use glacierfs::codec::{names, treehash};
use glacierfs::config::{
    CacheArgs, CatalogCommand, Cli, Command, ImportArgs, InventoryCommand, MountArgs, TreehashArgs,
};
use glacierfs::daemon;
use glacierfs::engine::inventory;

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Mount(args) => mount(&args),
        Command::Treehash(args) => {
            init_logging(0, false, None);
            treehash_files(&args)
        }
        Command::Inventory(InventoryCommand::Import(args)) => {
            init_logging(0, false, None);
            import_inventory(&args)
        }
        Command::Catalog(CatalogCommand::Rebuild(args)) => {
            init_logging(0, false, None);
            rebuild_catalog(&args)
        }
        Command::Status(args) => glacierfs::cli::status::run(&args),
        Command::Retrieve(args) => {
            init_logging(0, false, None);
            glacierfs::cli::sync::retrieve(&args)
        }
        Command::Sync(args) => {
            init_logging(0, false, None);
            glacierfs::cli::sync::sync(&args)
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
    // Everything glacierfs creates is private: 0700 directories, 0600 files.
    // SAFETY: umask cannot fail.
    unsafe { libc::umask(0o077) };
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

fn treehash_files(args: &TreehashArgs) -> ExitCode {
    let mut status = ExitCode::SUCCESS;
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    for file in &args.files {
        match treehash::tree_hash_file(file) {
            Ok(d) => {
                let _ = writeln!(out, "{}  {}", treehash::to_hex(&d), file.display());
            }
            Err(e) => {
                eprintln!("glacierfs: {}: {e}", file.display());
                status = ExitCode::FAILURE;
            }
        }
    }
    status
}

fn rebuild_catalog(args: &CacheArgs) -> ExitCode {
    let result = (|| -> Result<glacierfs::catalog::copy::Rebuilt, String> {
        let cache_dir = args.resolve().map_err(|e| e.to_string())?;
        // SAFETY: umask cannot fail.
        unsafe { libc::umask(0o077) };
        let _lock = daemon::CacheLock::acquire(&cache_dir)
            .map_err(|e| format!("{e}; unmount it before rebuilding its catalog"))?;
        glacierfs::catalog::copy::rebuild(&cache_dir).map_err(|e| e.to_string())
    })();
    match result {
        Ok(r) => {
            if let Some(kept) = &r.kept_as {
                println!("the old catalog is kept as {}", kept.display());
            }
            match r.copy_saved_s {
                Some(s) => println!(
                    "restored the catalog copy of {} ({} entries{})",
                    glacierfs::codec::timefmt::format_iso8601(s, 0),
                    r.entries,
                    if r.dropped > 0 {
                        format!("; {} uploaded since are left to the inventory", r.dropped)
                    } else {
                        String::new()
                    }
                ),
                None => println!("no catalog copy to restore: starting from an empty catalog"),
            }
            println!(
                "mount again: each vault's inventory is read again, and staged files are \
                 recovered from their sidecars"
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("glacierfs: {e}");
            ExitCode::FAILURE
        }
    }
}

fn import_inventory(args: &ImportArgs) -> ExitCode {
    match try_import(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("glacierfs: {e}");
            ExitCode::FAILURE
        }
    }
}

fn try_import(args: &ImportArgs) -> Result<(), String> {
    if !names::is_valid_vault_name(&args.vault) {
        return Err(format!("{:?} is not a vault name", args.vault));
    }
    let cache_dir = args.cache.resolve().map_err(|e| e.to_string())?;
    // SAFETY: umask cannot fail.
    unsafe { libc::umask(0o077) };
    daemon::prepare_cache_dir(&cache_dir).map_err(|e| e.to_string())?;
    let _lock = daemon::CacheLock::acquire(&cache_dir)
        .map_err(|e| format!("{e}; unmount it first, or let the mount fetch inventories itself"))?;
    let catalog = Catalog::open(&cache_dir).map_err(|e| e.to_string())?;
    let vault = args.vault.clone();
    let row = catalog
        .write(move |tx| vaults::ensure(tx, &vault, "present"))
        .map_err(|e| e.to_string())?;
    let file =
        std::fs::File::open(&args.file).map_err(|e| format!("{}: {e}", args.file.display()))?;
    let fallback = file_date(&args.file);
    let reader = std::io::BufReader::with_capacity(1 << 18, file);
    let started = std::time::Instant::now();
    let report = inventory::merge::import(&catalog, row.ino, reader, fallback)
        .map_err(|e| format!("{}: {e}", args.file.display()))?;
    catalog.close();
    println!(
        "{}: {} archives ({} new, {} gone upstream) in {:.1}s",
        args.vault,
        report.archives,
        report.added,
        report.removed,
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// A CSV inventory carries no date; the file's own mtime is the best stand-in.
fn file_date(path: &Path) -> Option<String> {
    let mtime = std::fs::metadata(path).ok()?.modified().ok()?;
    let secs = mtime.duration_since(std::time::UNIX_EPOCH).ok()?.as_secs() as i64;
    Some(glacierfs::codec::timefmt::format_iso8601(secs, 0))
}
