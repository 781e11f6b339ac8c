//! glacierfs: a FUSE file system for Amazon Glacier vaults.
//!
//! Vaults are directories and archives are files. A SQLite catalog caches each vault's
//! inventory so browsing never waits on the network; see DESIGN.md for the contract.

pub mod cache;
pub mod catalog;
pub mod client_cmds;
pub mod config;
pub mod control;
pub mod daemon;
pub mod export;
pub mod fs;
pub mod fuse;
pub mod glacier;
pub mod invalidate;
pub mod inventory;
pub mod names;
pub mod recovery;
pub mod retrieve;
pub mod status;
pub mod timefmt;
pub mod transfer;
pub mod treehash;
pub mod writeback;
