//! The KS/WDM shell (only with the `kernel` feature): everything that talks
//! to ks.sys and ntoskrnl. It is `no_std` and builds only for
//! `x86_64-pc-windows-msvc`.
//!
//! Layers, each using only those above it in this list:
//!
//! * [`bindings`]: the generated ks.h / ksmedia.h declarations;
//! * [`boundary`]: every call into ks.sys and ntoskrnl, wrapped once in
//!   safe types (all but a few of the shell's `unsafe` blocks live there);
//! * `ks_format`, `allocator_registry`: format translation and the device's
//!   allocators;
//! * `hardware`, then `device_context`, then `allocator`: the simulated
//!   hardware, the device's shared state and the KS allocator;
//! * `capture_pin`, `filter`, `device`, `driver_entry`: the AVStream
//!   objects and their descriptors, from the pin up to `DriverEntry`.

mod allocator;
mod allocator_registry;
pub mod bindings;
mod boundary;
mod capture_pin;
mod device;
mod device_context;
mod driver_entry;
mod filter;
mod hardware;
mod ks_format;

// The panic handler: a panic bug-checks the machine with a Rust-specific
// code (wdk-panic). Not in test builds, where std provides one.
#[cfg(not(test))]
extern crate wdk_panic;

/// Heap allocations (`alloc`) come from the non-paged pool (wdk-alloc).
#[cfg(not(test))]
#[global_allocator]
static GLOBAL_ALLOCATOR: wdk_alloc::WdkAllocator = wdk_alloc::WdkAllocator;
