//! The file system's error type and the one exhaustive mapping from errors to errno.
//!
//! Every failure a FUSE request can end in is an [`FsError`]; [`FsError::errno`] is the only
//! place that decides what the caller sees, and [`FsError::log`] the only place that decides how
//! loudly it is logged (a missing file is routine, a catalog failure is not).

use crate::catalog::CatalogError;
use crate::engine::retrieve::RetrieveError;
use crate::glacier::{ErrorKind, GlacierError};

#[derive(Debug, thiserror::Error)]
pub enum FsError {
    #[error("no such file or directory")]
    NotFound,
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
    #[error(transparent)]
    Catalog(#[from] CatalogError),
    #[error(transparent)]
    Glacier(#[from] GlacierError),
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
            FsError::NotFound => libc::ENOENT,
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
            FsError::Io(e) => e.raw_os_error().unwrap_or(libc::EIO),
        }
    }

    /// Logs the error at the level it deserves, with the operation that met it.
    pub fn log(&self, op: &str) {
        match self {
            FsError::NotFound | FsError::Exists | FsError::NoAttr | FsError::Range => {
                log::trace!("{op}: {self}")
            }
            FsError::NotEmpty
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
            | FsError::NotImplemented(_) => log::debug!("{op}: {self}"),
            FsError::BudgetSpent(_) | FsError::NoSpace => log::warn!("{op}: {self}"),
            FsError::Catalog(_) | FsError::Glacier(_) | FsError::Io(_) => {
                log::error!("{op}: {self}")
            }
        }
    }
}

pub type FsResult<T> = Result<T, FsError>;

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
    }
}
