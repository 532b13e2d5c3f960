//! avscap: an AVStream video-capture minidriver with a simulated camera.
//!
//! The crate has two module trees:
//!
//! * [`portable`]: the functional core. Safe Rust with no FFI and no heap,
//!   compiled unchanged into the driver and into this host library. Every
//!   decision the driver makes (framing validation, the frame pool over the
//!   common buffer, formats and intersection, image synthesis, the capture
//!   engine) lives here and is tested on the host.
//! * `kernel` (only with the `kernel` feature): the KS/WDM shell that
//!   translates between ks.sys and the core. It is `no_std` and builds only
//!   for `x86_64-pc-windows-msvc`.
#![cfg_attr(feature = "kernel", no_std)]

#[cfg(feature = "kernel")]
mod kernel;
pub mod portable;
