//! The KS/WDM shell (only with the `kernel` feature): everything that talks
//! to ks.sys and ntoskrnl. It is `no_std` and builds only for
//! `x86_64-pc-windows-msvc`.

mod allocator;
pub mod bindings;
mod capture_pin;
mod device;
mod dma_memory;
mod driver_entry;
mod filter;
mod hardware;
mod ks_format;
mod nonpaged;
mod stream_clone;

// The panic handler: a panic bug-checks the machine with a Rust-specific
// code (wdk-panic). Not in test builds, where std provides one.
#[cfg(not(test))]
extern crate wdk_panic;

/// Heap allocations (`alloc`) come from the non-paged pool (wdk-alloc).
#[cfg(not(test))]
#[global_allocator]
static GLOBAL_ALLOCATOR: wdk_alloc::WdkAllocator = wdk_alloc::WdkAllocator;
