//! glacierfs: a FUSE file system for Amazon Glacier vaults.
//!
//! Vaults are directories and archives are files. A SQLite catalog caches each vault's
//! inventory so browsing never waits on the network. ARCHITECTURE.md maps the modules below
//! into layers; each layer uses only the ones beneath it (a test reads the `use` lines and
//! keeps it so):
//!
//! - [`codec`] and [`locks`]: pure functions on bytes and strings (names, tree hash, dates),
//!   and the one lock helper;
//! - [`glacier`]: the vault API behind one trait;
//! - [`config`]: command-line options and their typed values;
//! - [`client`]: how another process reaches a running mount;
//! - [`catalog`]: the SQLite catalog, the only place that speaks SQL;
//! - [`store`]: local data files and the open-file table, shared by engines and file system;
//! - [`engine`]: background work (uploads, retrievals, inventories, recovery, export);
//! - [`fs`]: the file-system semantics and the FUSE adapter;
//! - [`daemon`]: a mount's life cycle;
//! - [`cli`]: the commands that are not the daemon.

pub mod catalog;
pub mod cli;
pub mod client;
pub mod codec;
pub mod config;
pub mod daemon;
pub mod engine;
pub mod fs;
pub mod glacier;
pub mod locks;
pub mod store;
