//! The capture pin's KS allocator (`KSALLOCATOR_DISPATCH`): each allocator
//! instance gets a common buffer of its own, sized from the framing it is
//! created with, and the core's frame pool hands out its slots. Used only
//! when the graph manager picks it (kernel-to-kernel connections); the
//! capture path works without it.
//!
//! Lifetime: `InitializeAllocator` takes the buffer and registers the pool
//! with the device (Process writes frames of a live pool in place);
//! `DeleteAllocator` unregisters it and frees the buffer when every frame is
//! back. If frames are still out then (nobody can return them any more), the
//! whole allocator is parked on the device and freed at PnP stop or remove,
//! before the DMA adapter is put back; the next allocator simply gets a
//! buffer of its own. Several allocators may live at once.
//!
//! IRQL: `InitializeAllocator` and `DeleteAllocator` run at PASSIVE_LEVEL
//! (allocator create and close). `Allocate` and `Free` may run at
//! DISPATCH_LEVEL on several CPUs at once: they only touch the pool's
//! atomics and the nonpaged allocator context, never wait and never fail
//! with anything but NULL / a refused free.

use core::sync::atomic::Ordering;

use wdk_sys::{
    NTSTATUS, PVOID, STATUS_DEVICE_NOT_READY, STATUS_INSUFFICIENT_RESOURCES,
    STATUS_INVALID_PARAMETER, STATUS_SUCCESS,
};

use super::bindings::{KSALLOCATOR_DISPATCH, KSALLOCATOR_FRAMING, PKSALLOCATOR_FRAMING, PKSPIN};
use super::capture_pin::PinContext;
use super::device::{debug_print, DeviceContext};
use super::dma_memory::CommonBuffer;
use super::nonpaged::PoolBox;
use crate::portable::frame_pool::FramePool;
use crate::portable::framing::allocator_plan;
use crate::portable::ks_buffers::read_allocator_framing;

/// One allocator instance: its pool, the buffer the pool carves, and the
/// device it is registered with.
pub(crate) struct AllocatorContext {
    pool: FramePool,
    /// Declared after `pool`: dropped (freed) after it.
    _buffer: CommonBuffer,
    device: *const DeviceContext,
    /// The next parked allocator (the device's list of allocators deleted
    /// with frames out).
    pub(crate) parked_next: Option<PoolBox<AllocatorContext>>,
}

// SAFETY: the device pointer is to the device context, which outlives every
// allocator (parked ones are freed by the device itself); the rest is owned.
unsafe impl Send for AllocatorContext {}

/// The allocator offered in `KSPIN_DISPATCH.Allocator`.
pub(crate) static ALLOCATOR_DISPATCH: KSALLOCATOR_DISPATCH = KSALLOCATOR_DISPATCH {
    InitializeAllocator: Some(initialize_allocator),
    DeleteAllocator: Some(delete_allocator),
    Allocate: Some(allocate_frame),
    Free: Some(free_frame),
};

/// `AVStrMiniInitializeAllocator`: validates the requested framing with the
/// core, allocates a common buffer of the size it asks for, and registers
/// the pool over it with the device.
///
/// IRQL: PASSIVE_LEVEL.
unsafe extern "C" fn initialize_allocator(
    pin: PKSPIN,
    framing: PKSALLOCATOR_FRAMING,
    context: *mut PVOID,
) -> NTSTATUS {
    if framing.is_null() || context.is_null() {
        return STATUS_INVALID_PARAMETER;
    }
    // SAFETY: the allocator is created on a created pin of this driver.
    let Some(pin_context) = (unsafe { PinContext::of(pin) }) else {
        return STATUS_DEVICE_NOT_READY;
    };
    let Some(device) = pin_context.device() else {
        return STATUS_DEVICE_NOT_READY;
    };
    // SAFETY: ks.sys passes the framing of the create request it captured:
    // a whole, readable KSALLOCATOR_FRAMING; a u8 slice has no alignment
    // requirement, and nothing writes it during this call.
    let bytes = unsafe {
        core::slice::from_raw_parts(framing.cast::<u8>(), size_of::<KSALLOCATOR_FRAMING>())
    };
    let Some(request) = read_allocator_framing(bytes) else {
        return STATUS_INVALID_PARAMETER;
    };
    let image = pin_context.hardware.image_size();
    let plan = match allocator_plan(&request, image) {
        Ok(plan) => plan,
        Err(e) => return e.ntstatus(),
    };
    let Some(buffer) = device.dma.allocate(plan.bytes()) else {
        return STATUS_INSUFFICIENT_RESOURCES;
    };
    let pool = match FramePool::over(buffer.region(), &plan) {
        Ok(pool) => pool,
        Err(e) => return e.ntstatus(), // `buffer` is freed here
    };
    let allocator = AllocatorContext {
        pool,
        _buffer: buffer,
        device: core::ptr::from_ref(device),
        parked_next: None,
    };
    let Some(allocator) = PoolBox::try_new(allocator) else {
        return STATUS_INSUFFICIENT_RESOURCES;
    };
    if !device.allocators.lock().insert(&raw const allocator.pool) {
        return STATUS_INSUFFICIENT_RESOURCES; // `allocator` and its buffer go
    }
    // SAFETY: ks.sys passes a valid out pointer. The context stays live
    // until DeleteAllocator, which unregisters the pool under the device's
    // lock before freeing it.
    unsafe { *context = allocator.into_raw().cast() };
    STATUS_SUCCESS
}

/// `AVStrMiniAllocate`: a free slot's virtual address, or NULL when all are
/// out.
///
/// IRQL: ≤ DISPATCH_LEVEL.
unsafe extern "C" fn allocate_frame(context: PVOID) -> PVOID {
    // SAFETY: `context` is the AllocatorContext InitializeAllocator returned,
    // live until DeleteAllocator (after which ks.sys calls nothing).
    let Some(allocator) = (unsafe { context.cast::<AllocatorContext>().as_ref() }) else {
        return core::ptr::null_mut();
    };
    allocator
        .pool
        .allocate()
        .map_or(core::ptr::null_mut(), |f| f.virtual_address as PVOID)
}

/// `AVStrMiniAllocatorFreeFrame`: gives a frame back. A foreign or
/// misplaced pointer, or a second free of a slot that is still free, is
/// refused by the pool, which counts it and changes nothing. (A second free
/// that arrives after the slot was handed out again cannot be told from the
/// new holder's: the pool knows slots only by address.)
///
/// IRQL: ≤ DISPATCH_LEVEL.
unsafe extern "C" fn free_frame(context: PVOID, frame: PVOID) {
    // SAFETY: as in `allocate_frame`.
    let Some(allocator) = (unsafe { context.cast::<AllocatorContext>().as_ref() }) else {
        return;
    };
    if allocator.pool.free(frame as usize).is_err() {
        debug_print(c"avscap: allocator Free refused a pointer that is not an allocated frame\n");
    }
}

/// `AVStrMiniDeleteAllocator`: unregisters the pool from the device, then
/// frees the allocator and its buffer, or parks them on the device when
/// frames are still out.
///
/// IRQL: PASSIVE_LEVEL.
unsafe extern "C" fn delete_allocator(context: PVOID) {
    // SAFETY: `context` came from PoolBox::into_raw in InitializeAllocator
    // and ks.sys deletes each allocator once.
    let Some(allocator) = (unsafe { PoolBox::from_raw(context.cast::<AllocatorContext>()) }) else {
        return;
    };
    // SAFETY: the device outlives its allocators.
    let Some(device) = (unsafe { allocator.device.as_ref() }) else {
        return;
    };
    device.allocators.lock().remove(&raw const allocator.pool);
    if allocator.pool.in_use() == 0 {
        drop(allocator); // the buffer is freed here, at PASSIVE_LEVEL
    } else {
        device.allocator_leaks.fetch_add(1, Ordering::Relaxed);
        debug_print(
            c"avscap: allocator deleted with frames still out; its buffer is kept until the device stops\n",
        );
        device.park(allocator);
    }
}
