//! The capture pin's KS allocator (`KSALLOCATOR_DISPATCH`): each allocator
//! instance gets a common buffer of its own, sized from the framing it is
//! created with, and the core's frame pool hands out its slots. Used only
//! when the graph manager picks it (kernel-to-kernel connections); the
//! capture path works without it.
//!
//! Lifetime: `InitializeAllocator` takes the buffer and registers the pool
//! with the device (Process writes frames of a live pool in place);
//! `DeleteAllocator` unregisters it and frees the buffer when every frame is
//! back, or parks the allocator on the device until PnP stop or remove
//! (`AllocatorRegistry::retire`). Several allocators may live at once.
//!
//! IRQL: `InitializeAllocator` and `DeleteAllocator` run at PASSIVE_LEVEL
//! (allocator create and close). `Allocate` and `Free` may run at
//! DISPATCH_LEVEL on several CPUs at once: they only touch the pool's
//! atomics and the nonpaged allocator context, never wait and never fail
//! with anything but NULL / a refused free.

use wdk_sys::{
    NTSTATUS, STATUS_DEVICE_NOT_READY, STATUS_INSUFFICIENT_RESOURCES, STATUS_INVALID_PARAMETER,
};

use super::allocator_registry::AllocatorContext;
use super::bindings::KSALLOCATOR_DISPATCH;
use super::boundary::{allocator_dispatch, debug_print, KsAllocator, KsPin, KsTable, PoolBox};
use super::device_context::DeviceContext;
use super::ks_format::connection_format;
use crate::portable::framing::{allocator_plan, FramingError};
use crate::portable::ks_buffers::read_allocator_framing;

/// The allocator offered in `KSPIN_DISPATCH.Allocator`.
pub static ALLOCATOR_DISPATCH: KsTable<KSALLOCATOR_DISPATCH> =
    KsTable(allocator_dispatch::<AllocatorContext>());

impl KsAllocator for AllocatorContext {
    /// `AVStrMiniInitializeAllocator`: validates the requested framing with
    /// the core, allocates a common buffer of the size it asks for, and
    /// registers the pool over it with the device.
    fn initialize(pin: &KsPin<'_>, framing: &[u8]) -> Result<PoolBox<Self>, NTSTATUS> {
        let device = pin
            .device_context::<DeviceContext>()
            .ok_or(STATUS_DEVICE_NOT_READY)?;
        let request = read_allocator_framing(framing).ok_or(STATUS_INVALID_PARAMETER)?;
        let image = connection_format(pin)?
            .layout()
            .map_err(|_| STATUS_INVALID_PARAMETER)?
            .image_size();
        let plan = allocator_plan(&request, image).map_err(FramingError::ntstatus)?;
        let frames = device.dma.pooled_buffer(&plan)?;
        // On an error from here on, the buffer is freed as it drops.
        let registry = device.project(|d| &d.allocators);
        let allocator =
            PoolBox::try_new(Self::new(frames, registry)).ok_or(STATUS_INSUFFICIENT_RESOURCES)?;
        if registry.register(&allocator) {
            Ok(allocator)
        } else {
            Err(STATUS_INSUFFICIENT_RESOURCES)
        }
    }

    /// `AVStrMiniDeleteAllocator`: unregisters the pool, then frees the
    /// allocator and its buffer, or parks them while frames are still out.
    fn delete(allocator: PoolBox<Self>) {
        let registry = allocator.registry();
        registry.retire(allocator);
    }

    /// `AVStrMiniAllocate`: a free slot's virtual address, or `None` when
    /// all are out.
    fn allocate(&self) -> Option<usize> {
        self.pool().allocate().map(|frame| frame.virtual_address)
    }

    /// `AVStrMiniAllocatorFreeFrame`: gives a frame back. A foreign or
    /// misplaced pointer, or a second free of a slot that is still free, is
    /// refused by the pool, which counts it and changes nothing. (A second
    /// free that arrives after the slot was handed out again cannot be told
    /// from the new holder's: the pool knows slots only by address.)
    fn free(&self, frame: usize) {
        if self.pool().free(frame).is_err() {
            debug_print(
                c"avscap: allocator Free refused a pointer that is not an allocated frame\n",
            );
        }
    }
}
