//! Moving data between the local cache and Glacier, in the background: each transfer reads or
//! writes local files and talks to Glacier only through [`crate::glacier::GlacierClient`], and
//! records its intents through a journal the caller makes durable, so a crash at any instant
//! can be settled on the next start (ARCHITECTURE.md, "The intents journal").

pub mod download;
pub mod upload;
