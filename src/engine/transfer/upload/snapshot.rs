//! The frozen snapshot an upload reads: opened once, read with `pread` by every part task,
//! and checked for size before each step that would make an archive of it. It is read
//! through a [`Frozen`], which the data store may switch to an identical copy mid-upload
//! (a writer opened the file the snapshot links); reads do not notice.

use std::io;
use std::path::PathBuf;
use std::sync::Arc;

use bytes::BytesMut;

use super::UploadError;
use crate::store::cache::Frozen;

/// The open snapshot, shared by the tasks that read its parts.
pub(super) struct Snapshot {
    file: Arc<Frozen>,
    pub(super) path: PathBuf,
    pub(super) size: u64,
}

impl Snapshot {
    pub(super) fn open(file: Arc<Frozen>, size: u64) -> Result<Snapshot, UploadError> {
        let path = file.path().to_owned();
        let snapshot = Snapshot { file, path, size };
        snapshot.check_size()?;
        Ok(snapshot)
    }

    /// The cheap check that the snapshot is still what the upload is for. It asks the open
    /// file, which is what the bytes were read from.
    pub(super) fn check_size(&self) -> Result<(), UploadError> {
        let actual = self.file.size()?;
        if actual == self.size {
            Ok(())
        } else {
            Err(self.changed(actual))
        }
    }

    pub(super) fn changed(&self, actual: u64) -> UploadError {
        UploadError::Changed {
            path: self.path.clone(),
            expected: self.size,
            actual,
        }
    }

    /// Bytes `[start, start + len)`, with `pread`: tasks share the file without a cursor.
    /// `reuse` is a buffer an earlier body is done with: refilling it spares the page faults
    /// (and zeroing) of a fresh allocation, a good part of what reading costs.
    pub(super) fn read(
        &self,
        start: u64,
        len: u64,
        reuse: Option<BytesMut>,
    ) -> Result<BytesMut, UploadError> {
        let len = usize::try_from(len)
            .map_err(|_| UploadError::Invalid(format!("a body of {len} bytes")))?;
        let mut buf = match reuse {
            Some(mut buf) if buf.len() >= len => {
                buf.truncate(len);
                buf
            }
            Some(mut buf) => {
                buf.resize(len, 0);
                buf
            }
            None => BytesMut::zeroed(len),
        };
        match self.file.read_exact_at(&mut buf, start) {
            Ok(()) => Ok(buf),
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => {
                let actual = self.file.size()?;
                Err(self.changed(actual))
            }
            Err(e) => Err(e.into()),
        }
    }
}
