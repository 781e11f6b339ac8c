//! Background work, each engine on its own: the write-back queue ([`writeback`]), retrievals
//! ([`retrieve`]), inventories ([`inventory`]), recovery of staged files after a lost catalog
//! ([`recovery`]), the transfer engines they drive ([`transfer`]), namespace snapshots in the
//! vault and their restore ([`snapshot`]), and the export command's engine ([`export`]). Engines never import the file-system layer.

pub mod export;
pub mod inventory;
pub mod recovery;
pub mod retrieve;
pub mod snapshot;
pub mod transfer;
pub mod writeback;
