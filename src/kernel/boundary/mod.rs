//! The unsafe boundary: every call into ks.sys and ntoskrnl, wrapped once in
//! safe types whose invariants are written where they are kept.
//!
//! The driver code above this module (device, filter, capture pin,
//! allocator, hardware) speaks to the kernel only through these types and
//! holds (almost) no `unsafe` of its own. Each type here owns one kernel
//! resource or borrows one kernel object, and its `unsafe` blocks rest on
//! three kinds of facts, stated at each block:
//!
//! * **AVStream's contracts**: which object a callback receives, how long
//!   it lives, which mutex is held, what a stream pointer guarantees while
//!   locked. They are taken in one place per object: the callback
//!   trampolines ([`ks_device`], [`ks_pin`], [`allocator_dispatch`]) turn
//!   the raw pointers ks.sys passes into borrowed handles ([`KsDevice`],
//!   [`KsPin`]), and nothing else ever sees a `PKSPIN` or `PKSDEVICE`.
//! * **Ownership**: a resource with a release call is a value whose `Drop`
//!   makes it: [`PoolBox`] (pool memory), [`StreamClone`] (a clone deleted
//!   exactly once), [`LeadingEdge`] (unlocked on drop), [`TimerWorker`]
//!   (timer, DPC and work item, flushed on drop), [`ReferenceClock`] (one
//!   interface reference), common buffers ([`PooledBuffer`]) and the DMA
//!   adapter ([`DmaMemory`]), the guards of [`SpinLock`], [`KernelMutex`] and the
//!   pin's processing mutex.
//! * **IRQL**: every routine states its IRQL. Code that must run at
//!   DISPATCH_LEVEL receives a [`DispatchLevel`] token, which only the DPC
//!   trampoline can make, so a spin lock is taken "at DPC level" only where
//!   that is true.
//!
//! Contexts are typed: a KS object's `Context` is read back only as the one
//! type the driver installs there ([`DeviceContextType`],
//! [`PinContextType`]), and the pointers from a child (a pin, an allocator)
//! to its device's context are [`DeviceRef`]s.
//!
//! This module depends on the bindings and on the portable core only; it
//! knows nothing of the driver built on it.

mod allocator_dispatch;
mod debug_print;
mod dma_memory;
mod ks_device;
mod ks_pin;
mod locks;
mod performance_counter;
mod pool_box;
mod reference_clock;
mod static_table;
mod stream_pointer;
mod timer_worker;

pub use allocator_dispatch::{allocator_dispatch, KsAllocator};
pub use debug_print::debug_print;
pub use dma_memory::{DmaMemory, PooledBuffer};
pub use ks_device::{device_dispatch, DeviceContextType, DeviceDispatch, DeviceRef, KsDevice};
pub use ks_pin::{
    intersect_handler, pin_dispatch, property_get_handler, DataIntersection, KsPin, PinContextType,
    PinDispatch, PinHandle, PropertyGet,
};
pub use locks::{DispatchLevel, KernelMutex, SpinLock};
pub use performance_counter::{performance_count, performance_counter};
pub use pool_box::PoolBox;
pub use reference_clock::ReferenceClock;
pub use static_table::{zeroed, KsTable};
pub use stream_pointer::{LeadingEdge, StreamClone};
pub use timer_worker::{TimerControl, TimerHandler, TimerWorker};

/// A kernel routine's `NTSTATUS` as a `Result` (warnings and information
/// statuses succeed).
const fn nt_result(status: wdk_sys::NTSTATUS) -> Result<(), wdk_sys::NTSTATUS> {
    if status < 0 {
        Err(status)
    } else {
        Ok(())
    }
}
