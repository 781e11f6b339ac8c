//! Detaching into the background while still reporting start-up failures: the parent waits on
//! a pipe for the child's verdict ("ready" or why not) and exits with it, so `glacierfs mount`
//! fails visibly when the daemon cannot start. A detached daemon logs to a file in the cache
//! directory.

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use super::MountError;

const LOG_FILE: &str = "glacierfs.log";

/// The write end of the start-up pipe: the detached daemon says "ready" or why it failed.
pub struct StartupReporter {
    fd: Option<OwnedFd>,
}

impl StartupReporter {
    pub fn foreground() -> Self {
        StartupReporter { fd: None }
    }

    fn send(&mut self, msg: &str) {
        if let Some(fd) = self.fd.take() {
            let mut f = File::from(fd);
            let _ = f.write_all(msg.as_bytes());
        }
    }

    pub fn ready(&mut self) {
        self.send("ready\n");
    }

    pub fn failed(&mut self, err: &MountError) {
        self.send(&format!("{err}\n"));
    }
}

/// Forks into the background. The parent waits for the child's verdict and exits with it; the
/// child returns a reporter to deliver that verdict. Must run before any thread is started.
pub fn detach() -> std::io::Result<StartupReporter> {
    let mut fds = [0; 2];
    // SAFETY: fds is a valid two-element array.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: both descriptors were just created and are owned here.
    let (read_end, write_end) =
        unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    // SAFETY: single-threaded at this point (checked by the caller's contract).
    match unsafe { libc::fork() } {
        -1 => Err(std::io::Error::last_os_error()),
        0 => {
            drop(read_end);
            // SAFETY: plain syscall in the child.
            unsafe { libc::setsid() };
            redirect_stdio_to_null();
            Ok(StartupReporter {
                fd: Some(write_end),
            })
        }
        _child => {
            drop(write_end);
            let mut verdict = String::new();
            let _ = File::from(read_end).read_to_string(&mut verdict);
            match verdict.trim_end() {
                "ready" => std::process::exit(0),
                "" => {
                    eprintln!("glacierfs: the daemon exited during start-up; see its log");
                    std::process::exit(1)
                }
                msg => {
                    eprintln!("glacierfs: {msg}");
                    std::process::exit(1)
                }
            }
        }
    }
}

fn redirect_stdio_to_null() {
    if let Ok(null) = OpenOptions::new().read(true).write(true).open("/dev/null") {
        for fd in 0..3 {
            // SAFETY: dup2 onto the standard descriptors.
            unsafe { libc::dup2(null.as_raw_fd(), fd) };
        }
    }
}

/// The log file of a detached daemon, in the cache directory.
pub fn open_log(cache_dir: &Path) -> std::io::Result<File> {
    OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(cache_dir.join(LOG_FILE))
}
