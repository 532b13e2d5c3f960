//! The portable functional core: safe, `no_std`-compatible, heap-free Rust.
//!
//! Nothing in this tree calls into Windows. The kernel shell hands it numbers
//! (sizes, addresses as integers, times in 100 ns units) and gets back
//! decisions and errors that carry an NTSTATUS mapping.
#![forbid(unsafe_code)]
#![deny(
    clippy::std_instead_of_core,
    clippy::std_instead_of_alloc,
    clippy::alloc_instead_of_core
)]

pub mod capture_engine;
pub mod filter_identity;
pub mod frame_pool;
pub mod framing;
pub mod guid;
pub mod image;
pub mod ks_buffers;
pub mod pin_state;
pub mod status;
pub mod stream_memory;
pub mod video_format;
