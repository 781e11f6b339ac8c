//! Shared test support: the Glacier emulator and helpers for mounting glacierfs.
#![allow(dead_code)]

pub mod emulator;
