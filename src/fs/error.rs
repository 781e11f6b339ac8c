//! The file system's error type and the one exhaustive mapping from errors to errno.
//!
//! Every failure a FUSE request can end in is an [`FsError`]; [`FsError::errno`] is the only
//! place that decides what the caller sees, and [`FsError::log`] the only place that decides how
//! loudly it is logged (a missing file is routine, a catalog failure is not).
//!
//! An error names what it concerns where that is known where it arises (the inode, entry or
//! vault not found, the handle, the data file), and the log line adds the request that met it
//! ([`Op`]), so a line in the log can be traced to a file without a debugger.

use std::ffi::OsStr;
use std::fmt;

use crate::catalog::CatalogError;
use crate::engine::retrieve::RetrieveError;
use crate::glacier::{ErrorKind, GlacierError};

/// What was looked for and not found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Missing {
    /// An inode the catalog does not have, or hides (a vault being deleted).
    Inode(u64),
    /// A name in a directory.
    Entry { parent: u64, name: String },
    /// A vault, by its name.
    Vault(String),
}

impl Missing {
    /// A name in directory `parent`, as the kernel gave it (not necessarily UTF-8).
    pub fn entry(parent: u64, name: &OsStr) -> Missing {
        Missing::Entry {
            parent,
            name: name.to_string_lossy().into_owned(),
        }
    }
}

impl fmt::Display for Missing {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Missing::Inode(ino) => write!(f, "inode {ino}"),
            Missing::Entry { parent, name } => write!(f, "{name:?} in directory inode {parent}"),
            Missing::Vault(name) => write!(f, "vault {name:?}"),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum FsError {
    #[error("no such file or directory: {0}")]
    NotFound(Missing),
    /// A file handle this mount did not give out, or has released (or one used for what it
    /// was not opened for).
    #[error("bad file handle {0}")]
    BadHandle(u64),
    #[error("file exists")]
    Exists,
    #[error("directory not empty")]
    NotEmpty,
    #[error("not a directory")]
    NotDir,
    #[error("is a directory")]
    IsDir,
    #[error("invalid argument: {0}")]
    Invalid(String),
    #[error("name too long: {0}")]
    NameTooLong(String),
    #[error("operation not permitted: {0}")]
    NotPermitted(&'static str),
    #[error("permission denied: {0}")]
    AccessDenied(String),
    #[error("read-only file system")]
    ReadOnly,
    #[error("operation not supported")]
    NotSupported,
    #[error("no such attribute")]
    NoAttr,
    #[error("attribute value too large for the buffer")]
    Range,
    #[error("data not yet retrieved: {0}")]
    NotYetAvailable(String),
    #[error("retrieval budget spent: {0}")]
    BudgetSpent(String),
    #[error("cannot move between vaults")]
    CrossVault,
    #[error("no space left on the cache disk")]
    NoSpace,
    #[error("operation not implemented yet: {0}")]
    NotImplemented(&'static str),
    /// The endpoint does not implement the call behind an attribute (partial emulators).
    #[error("the endpoint does not support {0}")]
    EndpointUnsupported(String),
    /// Glacier accepted a change but reading it back showed something else.
    #[error("not confirmed: {0}")]
    NotConfirmed(String),
    /// Glacier did not answer a call a request waits for in time.
    #[error("no answer from Glacier in time: {0}")]
    NoAnswer(String),
    /// A symlink opened as a file (the kernel follows symlinks, so only O_NOFOLLOW gets here).
    #[error("inode {0} is a symbolic link")]
    IsSymlink(u64),
    /// A fifo, socket or device opened as a file: the kernel serves those itself, so an open
    /// that reaches the daemon has nothing behind it.
    #[error("inode {0} is a special file with nothing behind it here")]
    NoDevice(u64),
    #[error(transparent)]
    Catalog(#[from] CatalogError),
    #[error(transparent)]
    Glacier(#[from] GlacierError),
    #[error("I/O error on the data file of inode {ino}: {source}")]
    DataFile {
        ino: u64,
        #[source]
        source: std::io::Error,
    },
    #[error("I/O error: {0}")]
    Io(#[from] std::io::Error),
}

impl From<RetrieveError> for FsError {
    fn from(e: RetrieveError) -> FsError {
        match e {
            RetrieveError::NotYetAvailable(m) => FsError::NotYetAvailable(m),
            RetrieveError::BudgetSpent(m) => FsError::BudgetSpent(m),
            RetrieveError::Failed(m) => FsError::Io(std::io::Error::other(m)),
            RetrieveError::Catalog(e) => FsError::Catalog(e),
        }
    }
}

impl FsError {
    /// The errno the caller sees.
    pub fn errno(&self) -> i32 {
        match self {
            FsError::NotFound(_) => libc::ENOENT,
            FsError::BadHandle(_) => libc::EBADF,
            FsError::Exists => libc::EEXIST,
            FsError::NotEmpty => libc::ENOTEMPTY,
            FsError::NotDir => libc::ENOTDIR,
            FsError::IsDir => libc::EISDIR,
            FsError::Invalid(_) => libc::EINVAL,
            FsError::NameTooLong(_) => libc::ENAMETOOLONG,
            FsError::NotPermitted(_) => libc::EPERM,
            FsError::AccessDenied(_) => libc::EACCES,
            FsError::ReadOnly => libc::EROFS,
            FsError::NotSupported => libc::EOPNOTSUPP,
            FsError::NoAttr => libc::ENODATA,
            FsError::Range => libc::ERANGE,
            FsError::NotYetAvailable(_) => libc::EAGAIN,
            FsError::BudgetSpent(_) => libc::EDQUOT,
            FsError::CrossVault => libc::EXDEV,
            FsError::NoSpace => libc::ENOSPC,
            FsError::NotImplemented(_) => libc::ENOSYS,
            FsError::EndpointUnsupported(_) => libc::ENOTSUP,
            FsError::NotConfirmed(_) => libc::EIO,
            FsError::NoAnswer(_) => libc::ETIMEDOUT,
            FsError::IsSymlink(_) => libc::ELOOP,
            FsError::NoDevice(_) => libc::ENXIO,
            FsError::Catalog(e) => match e {
                CatalogError::NotFound => libc::ENOENT,
                CatalogError::Exists => libc::EEXIST,
                CatalogError::NotEmpty => libc::ENOTEMPTY,
                CatalogError::Sqlite(_)
                | CatalogError::Io(_)
                | CatalogError::TooNew { .. }
                | CatalogError::WrongIdentity { .. }
                | CatalogError::CommitFailed(_)
                | CatalogError::Damaged { .. }
                | CatalogError::WriterGone => libc::EIO,
            },
            FsError::Glacier(e) => match e.kind {
                ErrorKind::NotFound => libc::ENOENT,
                ErrorKind::InvalidParameter => libc::EINVAL,
                ErrorKind::AccessDenied | ErrorKind::Credentials => libc::EACCES,
                ErrorKind::LimitExceeded => libc::EDQUOT,
                ErrorKind::Unsupported => libc::EOPNOTSUPP,
                ErrorKind::PolicyEnforced
                | ErrorKind::InsufficientCapacity
                | ErrorKind::Transient
                | ErrorKind::Other => libc::EIO,
            },
            FsError::DataFile { source, .. } => source.raw_os_error().unwrap_or(libc::EIO),
            FsError::Io(e) => e.raw_os_error().unwrap_or(libc::EIO),
        }
    }

    /// Logs the error at the level it deserves, with the operation that met it (an [`Op`], or
    /// a plain word for work that is not a request).
    pub fn log(&self, op: impl fmt::Display) {
        match self {
            FsError::NotFound(_) | FsError::Exists | FsError::NoAttr | FsError::Range => {
                log::trace!("{op}: {self}")
            }
            FsError::NotEmpty
            | FsError::BadHandle(_)
            | FsError::NotDir
            | FsError::IsDir
            | FsError::Invalid(_)
            | FsError::NameTooLong(_)
            | FsError::NotPermitted(_)
            | FsError::AccessDenied(_)
            | FsError::ReadOnly
            | FsError::NotSupported
            | FsError::NotYetAvailable(_)
            | FsError::CrossVault
            | FsError::NotImplemented(_)
            | FsError::IsSymlink(_)
            | FsError::NoDevice(_) => log::debug!("{op}: {self}"),
            FsError::BudgetSpent(_)
            | FsError::NoSpace
            | FsError::EndpointUnsupported(_)
            | FsError::NoAnswer(_) => log::warn!("{op}: {self}"),
            FsError::Catalog(_)
            | FsError::Glacier(_)
            | FsError::NotConfirmed(_)
            | FsError::DataFile { .. }
            | FsError::Io(_) => {
                log::error!("{op}: {self}")
            }
        }
    }
}

pub type FsResult<T> = Result<T, FsError>;

/// The request an error answered, as its log line names it: the operation and the inode,
/// handle and names it was given. It is formatted only when the line is logged.
#[derive(Debug, Clone, Copy)]
pub struct Op<'a> {
    name: &'static str,
    ino: Option<u64>,
    fh: Option<u64>,
    entry: Option<(u64, &'a OsStr)>,
    target: Option<(u64, &'a OsStr)>,
}

impl<'a> Op<'a> {
    pub fn new(name: &'static str) -> Op<'a> {
        Op {
            name,
            ino: None,
            fh: None,
            entry: None,
            target: None,
        }
    }

    pub fn ino(self, ino: u64) -> Op<'a> {
        Op {
            ino: Some(ino),
            ..self
        }
    }

    pub fn fh(self, fh: u64) -> Op<'a> {
        Op {
            fh: Some(fh),
            ..self
        }
    }

    /// The entry `name` in directory `parent`.
    pub fn entry(self, parent: u64, name: &'a OsStr) -> Op<'a> {
        Op {
            entry: Some((parent, name)),
            ..self
        }
    }

    /// Where a rename moves its entry to.
    pub fn target(self, parent: u64, name: &'a OsStr) -> Op<'a> {
        Op {
            target: Some((parent, name)),
            ..self
        }
    }
}

impl fmt::Display for Op<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name)?;
        let mut sep = " (";
        let mut part = |f: &mut fmt::Formatter<'_>, args: fmt::Arguments<'_>| {
            let r = write!(f, "{sep}{args}");
            sep = ", ";
            r
        };
        if let Some(ino) = self.ino {
            part(f, format_args!("inode {ino}"))?;
        }
        if let Some(fh) = self.fh {
            part(f, format_args!("handle {fh}"))?;
        }
        if let Some((parent, name)) = self.entry {
            part(f, format_args!("{name:?} in directory inode {parent}"))?;
        }
        if let Some((parent, name)) = self.target {
            part(f, format_args!("to {name:?} in directory inode {parent}"))?;
        }
        if sep == ", " {
            f.write_str(")")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errno_mapping() {
        assert_eq!(FsError::NotYetAvailable("x".into()).errno(), libc::EAGAIN);
        assert_eq!(FsError::BudgetSpent("x".into()).errno(), libc::EDQUOT);
        assert_eq!(FsError::NotSupported.errno(), libc::EOPNOTSUPP);
        assert_eq!(
            FsError::Catalog(CatalogError::NotEmpty).errno(),
            libc::ENOTEMPTY
        );
        let g = GlacierError::new("CreateVault", ErrorKind::InvalidParameter, "bad");
        assert_eq!(FsError::Glacier(g).errno(), libc::EINVAL);
        let io = std::io::Error::from_raw_os_error(libc::ENOSPC);
        assert_eq!(FsError::Io(io).errno(), libc::ENOSPC);
        assert_eq!(FsError::IsSymlink(3).errno(), libc::ELOOP);
        assert_eq!(FsError::NoDevice(3).errno(), libc::ENXIO);
        assert_eq!(FsError::NameTooLong("x".into()).errno(), libc::ENAMETOOLONG);
    }

    #[test]
    fn a_bad_handle_is_ebadf_and_says_which() {
        let e = FsError::BadHandle(42);
        assert_eq!(e.errno(), libc::EBADF);
        assert!(e.to_string().contains("42"), "{e}");
    }

    #[test]
    fn errors_keep_their_errno_and_name_what_they_concern() {
        let e = FsError::NotFound(Missing::Inode(7));
        assert_eq!(e.errno(), libc::ENOENT);
        assert!(e.to_string().contains("inode 7"), "{e}");
        let e = FsError::NotFound(Missing::entry(3, OsStr::new("a.txt")));
        assert_eq!(e.errno(), libc::ENOENT);
        assert!(
            e.to_string().contains("\"a.txt\" in directory inode 3"),
            "{e}"
        );
        let e = FsError::NotFound(Missing::Vault("photos".into()));
        assert!(e.to_string().contains("vault \"photos\""), "{e}");
        let e = FsError::DataFile {
            ino: 9,
            source: std::io::Error::from_raw_os_error(libc::EIO),
        };
        assert_eq!(e.errno(), libc::EIO);
        assert!(e.to_string().contains("inode 9"), "{e}");
    }

    #[test]
    fn an_op_names_the_request() {
        let op = Op::new("rename")
            .entry(1, OsStr::new("a"))
            .target(2, OsStr::new("b"));
        assert_eq!(
            op.to_string(),
            "rename (\"a\" in directory inode 1, to \"b\" in directory inode 2)"
        );
        assert_eq!(Op::new("read").fh(5).to_string(), "read (handle 5)");
        assert_eq!(Op::new("statfs").to_string(), "statfs");
    }
}
