//! The KS allocator a pin offers (`KSALLOCATOR_DISPATCH`): trampolines
//! from ks.sys's context pointer to an owned, typed allocator context.

use core::ffi::c_void;
use core::ptr::null_mut;

use wdk_sys::{NTSTATUS, PVOID, STATUS_INVALID_PARAMETER, STATUS_SUCCESS};

use super::super::bindings::{
    KSALLOCATOR_DISPATCH, KSALLOCATOR_FRAMING, PKSALLOCATOR_FRAMING, PKSPIN,
};
use super::ks_pin::KsPin;
use super::pool_box::PoolBox;

/// An allocator instance: made by `InitializeAllocator`, called by
/// `Allocate` and `Free`, given back by `DeleteAllocator`.
pub trait KsAllocator: Send + Sync + Sized {
    /// `AVStrMiniInitializeAllocator`: a new instance for `pin`, from the
    /// bytes of the `KSALLOCATOR_FRAMING` the client asked for.
    ///
    /// IRQL: PASSIVE_LEVEL.
    ///
    /// # Errors
    /// The status the allocator's creation fails with.
    fn initialize(pin: &KsPin<'_>, framing: &[u8]) -> Result<PoolBox<Self>, NTSTATUS>;

    /// `AVStrMiniDeleteAllocator`: the instance, given back (ks.sys calls
    /// nothing of it any more).
    ///
    /// IRQL: PASSIVE_LEVEL.
    fn delete(allocator: PoolBox<Self>);

    /// `AVStrMiniAllocate`: a frame's virtual address, or `None`.
    ///
    /// IRQL: ≤ DISPATCH_LEVEL, on several CPUs at once.
    fn allocate(&self) -> Option<usize>;

    /// `AVStrMiniAllocatorFreeFrame`: a frame given back (any pointer a
    /// client passes: the allocator checks it).
    ///
    /// IRQL: ≤ DISPATCH_LEVEL, on several CPUs at once.
    fn free(&self, frame: usize);
}

/// The allocator dispatch table of `A`.
pub const fn allocator_dispatch<A: KsAllocator>() -> KSALLOCATOR_DISPATCH {
    KSALLOCATOR_DISPATCH {
        InitializeAllocator: Some(initialize::<A>),
        DeleteAllocator: Some(delete::<A>),
        Allocate: Some(allocate::<A>),
        Free: Some(free::<A>),
    }
}

/// IRQL: PASSIVE_LEVEL.
unsafe extern "C" fn initialize<A: KsAllocator>(
    pin: PKSPIN,
    framing: PKSALLOCATOR_FRAMING,
    context: *mut PVOID,
) -> NTSTATUS {
    if framing.is_null() || context.is_null() {
        return STATUS_INVALID_PARAMETER;
    }
    // SAFETY: allocators are created on a created pin of this driver, at
    // PASSIVE_LEVEL, for the duration of this call.
    let Some(pin) = (unsafe { KsPin::from_raw(pin, true) }) else {
        return STATUS_INVALID_PARAMETER;
    };
    // SAFETY: ks.sys passes the framing of the create request it captured:
    // a whole, readable KSALLOCATOR_FRAMING; a u8 slice has no alignment
    // requirement, and nothing writes it during this call.
    let bytes = unsafe {
        core::slice::from_raw_parts(framing.cast::<u8>(), size_of::<KSALLOCATOR_FRAMING>())
    };
    match A::initialize(&pin, bytes) {
        Ok(allocator) => {
            // SAFETY: ks.sys passes a valid out pointer. It keeps the
            // context until DeleteAllocator, which takes the box back.
            unsafe { *context = allocator.into_raw().cast() };
            STATUS_SUCCESS
        }
        Err(status) => status,
    }
}

/// IRQL: ≤ DISPATCH_LEVEL.
unsafe extern "C" fn allocate<A: KsAllocator>(context: PVOID) -> PVOID {
    // SAFETY: `context` is the allocator `initialize` returned, live until
    // DeleteAllocator (after which ks.sys calls nothing of it).
    let Some(allocator) = (unsafe { context.cast::<A>().as_ref() }) else {
        return null_mut();
    };
    allocator
        .allocate()
        .map_or(null_mut(), |address| address as *mut c_void)
}

/// IRQL: ≤ DISPATCH_LEVEL.
unsafe extern "C" fn free<A: KsAllocator>(context: PVOID, frame: PVOID) {
    // SAFETY: as in `allocate`.
    if let Some(allocator) = unsafe { context.cast::<A>().as_ref() } {
        allocator.free(frame as usize);
    }
}

/// IRQL: PASSIVE_LEVEL.
unsafe extern "C" fn delete<A: KsAllocator>(context: PVOID) {
    // SAFETY: `context` came from PoolBox::into_raw in `initialize`, and
    // ks.sys deletes each allocator once, after its last Allocate and Free.
    if let Some(allocator) = unsafe { PoolBox::from_raw(context.cast::<A>()) } {
        A::delete(allocator);
    }
}
