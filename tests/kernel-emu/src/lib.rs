//! An emulated Windows kernel for avscap.sys: the real cross-built driver
//! executed on an x86-64 emulator (unicorn) against a Rust model of
//! ntoskrnl and ks.sys, and checked against the host build of the portable
//! core.
//!
//! This crate is a test harness, GPL-2.0-or-later because it links
//! unicorn; it is never linked into the driver. Its tests are in `tests/`.

pub mod allocator_object;
pub mod cost;
pub mod coverage;
pub mod graph;
pub mod ks;
pub mod layout;
pub mod machine;
pub mod nt;
pub mod oracle;
pub mod pe;
pub mod rules;
pub mod session;
pub mod symbols;

pub use machine::Config;
pub use session::Driver;
