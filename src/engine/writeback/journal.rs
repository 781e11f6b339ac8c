//! The upload engine's journal, kept in the catalog: each step lands in the file's uploads row,
//! committed before the engine makes the call it announces (the catalog's write returns only
//! after its commit).

use crate::catalog::{uploads, Catalog, CatalogError};
use crate::codec::treehash::{self, Digest};
use crate::engine::transfer::upload::{JournalError, UploadJournal};

/// The journal of one upload.
pub(super) struct Journal {
    catalog: Catalog,
    ino: u64,
}

impl Journal {
    pub(super) fn new(catalog: Catalog, ino: u64) -> Journal {
        Journal { catalog, ino }
    }
}

/// The engine sees the catalog's failure as a journal failure (transient: nothing was sent
/// after the entry that failed).
fn committed(r: Result<(), CatalogError>) -> Result<(), JournalError> {
    r.map_err(JournalError::new)
}

impl UploadJournal for Journal {
    fn before_single(&self) -> Result<(), JournalError> {
        let ino = self.ino;
        committed(
            self.catalog
                .write(move |tx| uploads::before_single(tx, ino)),
        )
    }

    fn before_initiate(&self, part_size: u64) -> Result<(), JournalError> {
        let ino = self.ino;
        committed(
            self.catalog
                .write(move |tx| uploads::before_initiate(tx, ino, part_size)),
        )
    }

    fn initiated(&self, upload_id: &str, part_size: u64) -> Result<(), JournalError> {
        let (ino, upload_id) = (self.ino, upload_id.to_owned());
        committed(
            self.catalog
                .write(move |tx| uploads::initiated(tx, ino, &upload_id, part_size)),
        )
    }

    fn before_complete(
        &self,
        upload_id: &str,
        _size: u64,
        tree_hash: &Digest,
    ) -> Result<(), JournalError> {
        let (ino, upload_id) = (self.ino, upload_id.to_owned());
        let hash = treehash::to_hex(tree_hash);
        committed(
            self.catalog
                .write(move |tx| uploads::before_complete(tx, ino, &upload_id, &hash)),
        )
    }

    fn created(&self, archive_id: &str, tree_hash: &Digest) -> Result<(), JournalError> {
        let (ino, archive_id) = (self.ino, archive_id.to_owned());
        let hash = treehash::to_hex(tree_hash);
        committed(
            self.catalog
                .write(move |tx| uploads::created(tx, ino, &archive_id, &hash)),
        )
    }

    fn restarted(&self) -> Result<(), JournalError> {
        let ino = self.ino;
        committed(self.catalog.write(move |tx| uploads::restarted(tx, ino)))
    }
}
