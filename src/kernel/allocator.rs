//! The capture pin's KS allocator (`KSALLOCATOR_DISPATCH`): frames carved
//! from the allocator part of the device's common buffer by the core's
//! frame pool. Used only when the graph manager picks it (kernel-to-kernel
//! connections); the capture path works without it.
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

use super::bindings::{
    framing_file_alignment, framing_requirements_flags, KSALLOCATOR_DISPATCH, PKSALLOCATOR_FRAMING,
    PKSPIN,
};
use super::capture_pin::PinContext;
use super::device::{debug_print, DeviceContext, PoolLink};
use super::nonpaged::PoolBox;
use crate::portable::frame_pool::FramePool;
use crate::portable::framing::AllocatorFraming;

/// One allocator instance: its pool and the device whose carve-out it uses.
struct AllocatorContext {
    pool: FramePool,
    device: *const DeviceContext,
}

/// The allocator offered in `KSPIN_DISPATCH.Allocator`.
pub(crate) static ALLOCATOR_DISPATCH: KSALLOCATOR_DISPATCH = KSALLOCATOR_DISPATCH {
    InitializeAllocator: Some(initialize_allocator),
    DeleteAllocator: Some(delete_allocator),
    Allocate: Some(allocate_frame),
    Free: Some(free_frame),
};

/// `AVStrMiniInitializeAllocator`: validates the requested framing with the
/// core and builds a pool over the device's allocator carve-out.
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
    let Some(carve) = device
        .buffer
        .and_then(|b| b.layout.allocator_carve_out(&b.region))
    else {
        return STATUS_DEVICE_NOT_READY;
    };
    // SAFETY: ks.sys passes the framing from the create request it validated.
    let f = unsafe { &*framing };
    let request = AllocatorFraming {
        flags: framing_requirements_flags(f),
        pool_type: f.PoolType.cast_unsigned(),
        frames: f.Frames,
        frame_size: f.FrameSize,
        file_alignment: framing_file_alignment(f),
        reserved: f.Reserved,
    };
    let image = pin_context.hardware.image_size();
    let pool = match FramePool::for_request(&request, image, &carve) {
        Ok(pool) => pool,
        Err(e) => return e.ntstatus(),
    };
    // One allocator instance at a time owns the carve-out.
    if device
        .carve_out_claimed
        .compare_exchange(false, true, Ordering::AcqRel, Ordering::Acquire)
        .is_err()
    {
        return STATUS_INSUFFICIENT_RESOURCES;
    }
    let allocator = AllocatorContext {
        pool,
        device: core::ptr::from_ref(device),
    };
    let Some(allocator) = PoolBox::try_new(allocator) else {
        device.carve_out_claimed.store(false, Ordering::Release);
        return STATUS_INSUFFICIENT_RESOURCES;
    };
    let raw = allocator.into_raw();
    // SAFETY: `raw` is live until DeleteAllocator, which clears this
    // pointer under the same lock before freeing it.
    *device.own.lock() = PoolLink(unsafe { &raw const (*raw).pool });
    // SAFETY: ks.sys passes a valid out pointer.
    unsafe { *context = raw.cast() };
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

/// `AVStrMiniAllocatorFreeFrame`: gives a frame back. A foreign, misplaced
/// or doubled pointer is refused by the pool, which counts it and changes
/// nothing.
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

/// `AVStrMiniDeleteAllocator`: detaches the pool from the device, checks
/// that every frame came back, and frees the context (never the common
/// buffer: that belongs to the device).
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
    {
        let mut own = device.own.lock();
        if core::ptr::eq(own.0, &raw const allocator.pool) {
            own.0 = core::ptr::null();
        }
    }
    if allocator.pool.in_use() == 0 {
        device.carve_out_claimed.store(false, Ordering::Release);
    } else {
        // Frames still out may be written by whoever holds them: the
        // carve-out stays claimed (no later allocator reuses it) until the
        // device goes away.
        device.allocator_leaks.fetch_add(1, Ordering::Relaxed);
        debug_print(
            c"avscap: allocator deleted with frames still out; its carve-out stays reserved\n",
        );
    }
}
