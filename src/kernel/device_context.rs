//! The device's context: what the device's pins and allocators share (the
//! DMA memory, the allocator registry, which pin streams) and what PnP
//! changes (removal).
//!
//! It lives in `KSDEVICE.Context`, owned by the device's object bag
//! (AVStream frees it with the device), in nonpaged pool because pins,
//! allocators and DPCs read it. Pins and allocators reach it through
//! [`DeviceRef`]s.

use core::sync::atomic::{AtomicBool, Ordering};

use super::allocator_registry::AllocatorRegistry;
use super::boundary::{DeviceContextType, DmaMemory, KernelMutex};
use super::hardware::StreamingPin;

/// Per-device state.
pub struct DeviceContext {
    /// The DMA adapter and the common buffers made from it.
    pub(crate) dma: DmaMemory,
    /// The live and the parked allocators.
    pub(crate) allocators: AllocatorRegistry,
    /// The streaming pin's hardware, under the device mutex (taken at
    /// PASSIVE_LEVEL by state changes, pin Close and PnP, in that order
    /// before any pin's processing mutex).
    pub(crate) streaming: KernelMutex<StreamingPin>,
    /// Set by `SurpriseRemoval`: no stream may start any more.
    removed: AtomicBool,
}

// SAFETY: `DeviceContext` is the only type the driver stores in
// `KSDEVICE.Context` (device.rs installs it in Add).
unsafe impl DeviceContextType for DeviceContext {}

impl DeviceContext {
    /// A context with no adapter, no allocators and no stream; `None` when
    /// the pool is exhausted.
    ///
    /// IRQL: PASSIVE_LEVEL.
    pub(crate) fn try_new() -> Option<Self> {
        Some(Self {
            dma: DmaMemory::new(),
            allocators: AllocatorRegistry::new(),
            streaming: KernelMutex::try_new(StreamingPin::none())?,
            removed: AtomicBool::new(false),
        })
    }

    /// Whether the device was surprise-removed.
    ///
    /// IRQL: any.
    pub(crate) fn is_removed(&self) -> bool {
        self.removed.load(Ordering::Acquire)
    }

    /// The device is gone: a running stream stops now (its frames complete
    /// empty) and none may start again.
    ///
    /// IRQL: PASSIVE_LEVEL.
    pub(crate) fn surprise_removed(&self) {
        self.removed.store(true, Ordering::Release);
        self.stop_streaming();
    }

    /// Ends everything the device holds for PnP stop and remove: the running
    /// stream (if a pin still streams), the parked allocators' buffers, then
    /// the DMA adapter (now, or when the last buffer still out is freed).
    ///
    /// IRQL: PASSIVE_LEVEL.
    pub(crate) fn release_resources(&self) {
        self.stop_streaming();
        self.allocators.free_parked();
        self.dma.stop();
    }

    /// Stops the stream of the pin that holds the hardware, if any: its
    /// timer, DPC and work item end and every frame it held completes.
    ///
    /// IRQL: PASSIVE_LEVEL.
    fn stop_streaming(&self) {
        let streaming = self.streaming.lock();
        if let Some(hardware) = streaming.hardware() {
            hardware.halt();
        }
    }
}
