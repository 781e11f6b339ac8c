//! The cache's bound: reads noted since the last round are written to the catalog, then the
//! least recently read cached data above `--cache-size` is evicted. Staged data, open files,
//! files being downloaded and data retrieved but not read yet are never evicted.

use super::Retriever;
use crate::catalog::{retrievals, CatalogError};
use crate::locks::lock;

impl Retriever {
    /// Writes the reads noted since the last round, then evicts down to `--cache-size`.
    pub(super) fn flush_reads_and_evict(&self) -> Result<(), CatalogError> {
        let reads: Vec<(u64, i64)> = lock(&self.state).reads.drain().collect();
        if !reads.is_empty() {
            self.catalog
                .write(move |tx| retrievals::record_reads(tx, &reads))?;
        }
        crate::store::cache::evict(
            &self.catalog,
            &self.data,
            self.options.cache_size,
            &self.open_files,
            &|ino| self.open_elsewhere(ino),
        )
    }

    fn open_elsewhere(&self, ino: u64) -> bool {
        lock(&self.state).downloading.contains_key(&ino) || self.open_files.is_open(ino)
    }
}
