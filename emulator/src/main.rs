//! `glacier-emulator`: one emulator served on its own, a local Glacier endpoint to try glacierfs
//! against. Unlike in the tests, nobody here moves the clock by hand, so it follows real time:
//! every job, whatever its tier, completes `--job-delay` seconds after it was initiated, and an
//! inventory job returns a snapshot of the vault taken as it completes.
//!
//! S3 is served on the same endpoint, path-style (`/{bucket}/{key}`): a request signed for the
//! service `s3` is S3's (see the library's `s3` module); `--bucket NAME` creates buckets at
//! start.
//!
//! Requests must be signed (SigV4) with the one access key it accepts, `--access-key` /
//! `--secret-key`, by default `AKIDEMULATOR` / `emulator-secret`: a try-out exports those as
//! `AWS_ACCESS_KEY_ID` / `AWS_SECRET_ACCESS_KEY`, and a client that signs wrong hears so at once.
//!
//! `--latency MS` and `--bandwidth MB` set the link model (see the library's `link`): each
//! request waits that many milliseconds, and each connection carries that many MB (10^6 bytes)
//! a second each way, as a distant endpoint would; benchmarks of concurrency use them.
//!
//! `--demo VAULT` creates a vault holding a few small archives named the way other tools name
//! them (mt-aws-glacier, FastGlacier, a plain path), already inventoried, for a try-out to mount.
//!
//! Prints the endpoint URL on stdout, one line, once it accepts connections (and the
//! credentials to use on stderr, one line), and serves until SIGTERM or SIGINT. Exit codes: 0
//! stopped by a signal, 1 could not start, 2 bad usage.

use std::collections::BTreeMap;
use std::io::Write;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use glacier_emulator::{
    ClockStart, Emulator, EmulatorOptions, Link, ACCESS_KEY_ID, SECRET_ACCESS_KEY,
};

const USAGE: &str = "usage: glacier-emulator [--listen ADDR:PORT] [--job-delay SECS] [--seed N] \
                     [--access-key ID] [--secret-key SECRET] [--bucket NAME]... [--demo VAULT] \
                     [--latency MS] [--bandwidth MB]";

const HELP: &str = "\
Serves a Glacier emulator on a local endpoint until SIGTERM or SIGINT, and an S3 subset on
the same endpoint, path-style (http://ENDPOINT/BUCKET/KEY): buckets, objects, multipart
uploads, with S3's checksum checks. Objects of every storage class read at once (no restore).

Options:
  --listen ADDR:PORT   where to listen (default 127.0.0.1:0, a free port)
  --job-delay SECS     how long every retrieval and inventory job takes (default 5)
  --seed N             seeds the archive, upload, job and lock ids
  --access-key ID      the access key id requests must be signed with (default AKIDEMULATOR)
  --secret-key SECRET  its secret access key (default emulator-secret)
  --bucket NAME        creates this S3 bucket at start (repeatable)
  --demo VAULT         creates this vault with a few archives named by other tools, inventoried
  --latency MS         adds this many milliseconds to every request (default 0)
  --bandwidth MB       caps each connection at this many MB (10^6 bytes) a second, each way
                       (default: no cap)
  -h, --help           prints this help

Every request must carry a valid AWS Signature Version 4 made with that key, so set
AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY to them (and AWS_REGION=us-east-1) for the client.
An S3 client must use path-style addressing (force_path_style, or addressing_style = path).

The endpoint URL is printed on stdout, one line, once it accepts connections; the credentials
to use go to stderr, one line.";

/// How often the emulated clock catches up with real time: the most a job completes late.
const TICK: Duration = Duration::from_millis(50);

struct Args {
    listen: SocketAddr,
    job_delay: Duration,
    seed: Option<u64>,
    access_key: String,
    secret_key: String,
    buckets: Vec<String>,
    demo: Option<String>,
    link: Link,
}

fn main() -> ExitCode {
    let args = match parse_args(std::env::args().skip(1)) {
        Ok(Some(args)) => args,
        Ok(None) => {
            println!("{USAGE}\n\n{HELP}");
            return ExitCode::SUCCESS;
        }
        Err(msg) => {
            eprintln!("glacier-emulator: {msg} ({USAGE})");
            return ExitCode::from(2);
        }
    };
    // Before any thread starts, so that every thread inherits the mask and the signals wait
    // for `next_stop_signal` instead of killing the process in the middle of a response.
    let stop_signals = block_stop_signals();

    let defaults = EmulatorOptions::default();
    let opts = EmulatorOptions {
        bind: args.listen,
        clock: ClockStart::RealNow,
        expedited: args.job_delay,
        standard: args.job_delay,
        bulk: args.job_delay,
        inventory: args.job_delay,
        auto_inventory: true,
        id_seed: args.seed.unwrap_or(defaults.id_seed),
        credentials: BTreeMap::from([(args.access_key.clone(), args.secret_key.clone())]),
        link: args.link,
        ..defaults
    };
    let region = opts.region.clone();
    let emu = match Emulator::try_start_with(opts) {
        Ok(emu) => emu,
        Err(e) => {
            eprintln!("glacier-emulator: cannot listen on {}: {e}", args.listen);
            return ExitCode::FAILURE;
        }
    };
    for bucket in &args.buckets {
        emu.s3_create_bucket(bucket);
    }
    if let Some(vault) = &args.demo {
        fill_demo(&emu, vault);
    }
    let mut stdout = std::io::stdout();
    // Whoever reads the URL may have gone; the endpoint serves regardless.
    let _ = writeln!(stdout, "{}", emu.endpoint());
    let _ = stdout.flush();
    // The endpoint line stays alone on stdout, for whoever reads it; this is for the person.
    // A secret given on the command line is the user's own: it is not echoed back.
    let secret = if args.secret_key == SECRET_ACCESS_KEY {
        SECRET_ACCESS_KEY
    } else {
        "<the --secret-key given>"
    };
    let buckets = if args.buckets.is_empty() {
        String::new()
    } else {
        format!(" (buckets: {})", args.buckets.join(", "))
    };
    eprintln!(
        "glacier-emulator: Glacier, and S3 on the same endpoint, path-style{buckets}; sign \
         requests with AWS_ACCESS_KEY_ID={} AWS_SECRET_ACCESS_KEY={secret} AWS_REGION={region}",
        args.access_key
    );

    // The emulated clock moves only when told to; advancing it by the real time elapsed, in
    // whole milliseconds counted from the start (so no rounding accumulates), completes each
    // job on time and keeps the `Date` header and every timestamp close to the real clock.
    let started = Instant::now();
    let mut followed = Duration::ZERO;
    while !next_stop_signal(&stop_signals, TICK) {
        let elapsed = Duration::from_millis(started.elapsed().as_millis() as u64);
        emu.advance(elapsed - followed);
        followed = elapsed;
    }
    ExitCode::SUCCESS
}

/// The options, or None when help was asked for; Err is one line saying what is wrong.
fn parse_args(mut args: impl Iterator<Item = String>) -> Result<Option<Args>, String> {
    let mut parsed = Args {
        listen: SocketAddr::from(([127, 0, 0, 1], 0)),
        job_delay: Duration::from_secs(5),
        seed: None,
        access_key: ACCESS_KEY_ID.to_string(),
        secret_key: SECRET_ACCESS_KEY.to_string(),
        buckets: Vec::new(),
        demo: None,
        link: Link::default(),
    };
    while let Some(arg) = args.next() {
        if arg == "-h" || arg == "--help" {
            return Ok(None);
        }
        let (name, inline) = match arg.split_once('=') {
            Some((name, value)) => (name.to_string(), Some(value.to_string())),
            None => (arg, None),
        };
        if !matches!(
            name.as_str(),
            "--listen"
                | "--job-delay"
                | "--seed"
                | "--access-key"
                | "--secret-key"
                | "--bucket"
                | "--demo"
                | "--latency"
                | "--bandwidth"
        ) {
            return Err(format!("unknown argument '{name}'"));
        }
        let Some(value) = inline.or_else(|| args.next()) else {
            return Err(format!("{name} needs a value"));
        };
        match name.as_str() {
            "--listen" => {
                parsed.listen = value.parse().map_err(|_| {
                    format!("--listen takes ADDR:PORT, such as 127.0.0.1:9000, not '{value}'")
                })?;
            }
            "--job-delay" => {
                parsed.job_delay = value
                    .parse::<f64>()
                    .ok()
                    .and_then(|secs| Duration::try_from_secs_f64(secs).ok())
                    .ok_or_else(|| {
                        format!("--job-delay takes seconds, such as 5 or 0.5, not '{value}'")
                    })?;
            }
            "--latency" => {
                parsed.link.latency = value
                    .parse::<f64>()
                    .ok()
                    .and_then(|ms| Duration::try_from_secs_f64(ms / 1000.0).ok())
                    .ok_or_else(|| {
                        format!("--latency takes milliseconds, such as 50, not '{value}'")
                    })?;
            }
            "--bandwidth" => {
                let rate = value
                    .parse::<f64>()
                    .ok()
                    .filter(|mb| mb.is_finite() && *mb > 0.0)
                    .map(|mb| (mb * 1e6) as u64)
                    .filter(|bytes| *bytes > 0)
                    .ok_or_else(|| {
                        format!("--bandwidth takes MB a second, such as 20, not '{value}'")
                    })?;
                parsed.link.bandwidth = Some(rate);
            }
            "--access-key" | "--secret-key" if value.is_empty() => {
                return Err(format!("{name} needs a value"));
            }
            "--access-key" => parsed.access_key = value,
            "--bucket" if !glacier_emulator::valid_bucket_name(&value) => {
                return Err(format!(
                    "--bucket takes an S3 bucket name (3 to 63 lower-case letters, digits, dots \
                     and hyphens), not '{value}'"
                ));
            }
            "--bucket" => parsed.buckets.push(value),
            "--demo" if value.is_empty() || value.contains('/') => {
                return Err(format!("--demo takes a vault name, not '{value}'"));
            }
            "--demo" => parsed.demo = Some(value),
            "--secret-key" => parsed.secret_key = value,
            _ => {
                parsed.seed = Some(value.parse().map_err(|_| {
                    format!("--seed takes a whole number from 0 to 2^64-1, not '{value}'")
                })?);
            }
        }
    }
    Ok(Some(parsed))
}

/// A vault of a few small archives, described the way other tools describe theirs, with an
/// inventory taken, so a mount lists them after its first inventory job.
fn fill_demo(emu: &Emulator, vault: &str) {
    use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
    use base64::Engine as _;
    let mt2 = |path: &str, mtime: &str| {
        let doc = format!(r#"{{"filename":"{path}","mtime":"{mtime}"}}"#);
        format!("mt2 {}", URL_SAFE_NO_PAD.encode(doc))
    };
    let fast_glacier = |path: &str, mtime: &str| {
        format!(
            "<m><v>4</v><p>{}</p><lm>{mtime}</lm></m>",
            STANDARD.encode(path)
        )
    };
    let archives: [(String, &[u8]); 5] = [
        (
            mt2("docs/readme.txt", "20240105T101500Z"),
            b"Hello from a Glacier archive.\n",
        ),
        (
            mt2("photos/2023/beach.jpg", "20230712T160000Z"),
            b"\xff\xd8 not really a photo",
        ),
        (
            mt2("photos/2023/hills.jpg", "20230713T090000Z"),
            b"\xff\xd8 not really a photo either",
        ),
        (
            fast_glacier("old-tool/backup.tar", "20190301T000000Z"),
            b"tar tar tar tar tar tar",
        ),
        ("notes-with-a-plain-description.md".to_owned(), b"# notes\n"),
    ];
    emu.create_vault(vault);
    for (description, data) in &archives {
        emu.put_archive(vault, description, data, None);
    }
    emu.take_inventory(vault);
}

/// Blocks SIGTERM and SIGINT in the calling thread and returns the set, for
/// [`next_stop_signal`].
fn block_stop_signals() -> libc::sigset_t {
    // SAFETY: the set is initialised by sigemptyset before use, and both calls only read or
    // write the set and this thread's mask.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGTERM);
        libc::sigaddset(&mut set, libc::SIGINT);
        libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
        set
    }
}

/// Waits up to `timeout` for one of the blocked stop signals; true if one came.
fn next_stop_signal(set: &libc::sigset_t, timeout: Duration) -> bool {
    let ts = libc::timespec {
        tv_sec: timeout.as_secs() as libc::time_t,
        tv_nsec: timeout.subsec_nanos() as libc::c_long,
    };
    // SAFETY: `set` and `ts` are valid for the call; a null info pointer is allowed.
    let signo = unsafe { libc::sigtimedwait(set, std::ptr::null_mut(), &ts) };
    // -1 is the timeout (EAGAIN) or another signal's handler running (EINTR): keep serving.
    signo > 0
}
