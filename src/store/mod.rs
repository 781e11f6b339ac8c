//! Local state shared by the engines and the file-system layer, kept below both so neither
//! imports the other: the data files on disk ([`cache`]) and the table of open files
//! ([`handles`]), which tells the write-back queue what a writer still holds.

pub mod cache;
pub mod handles;
