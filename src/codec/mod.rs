//! Codecs: pure conversions with no I/O of their own beyond the readers they are handed:
//! archive descriptions to names and back ([`names`]), Glacier's SHA-256 tree hash
//! ([`treehash`]), the date formats Glacier and the description formats use ([`timefmt`]),
//! and the namespace snapshot format ([`snapshot`]).

pub mod names;
pub mod snapshot;
pub mod timefmt;
pub mod treehash;
