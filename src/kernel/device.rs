//! The AVStream device: PnP dispatch (Add, Start, Stop, Remove,
//! `SurpriseRemoval`), the filter factory, the DMA adapter, and the registry
//! of live allocators that Process looks client frames up in.
//!
//! The device holds no frame memory: Start only acquires the DMA adapter
//! ([`DmaMemory`]); each allocator instance and each stream takes common
//! buffers of its own when it needs them and gives them back when it ends.
//! Allocators deleted while their frames are still out are parked here and
//! freed at PnP stop or remove, before the adapter goes back.
//!
//! All device callbacks run at PASSIVE_LEVEL (AVStream calls them from PnP
//! IRP dispatch or its own worker). The device context they manage is in
//! nonpaged pool because pins, allocators and DPCs read it.

use core::ptr::null_mut;
use core::sync::atomic::{AtomicBool, AtomicU32, Ordering};

use wdk_sys::ntddk::DbgPrint;
use wdk_sys::{
    NTSTATUS, PCM_RESOURCE_LIST, PIRP, PVOID, STATUS_INSUFFICIENT_RESOURCES, STATUS_SUCCESS,
};

use super::allocator::AllocatorContext;
use super::bindings::{
    KsAcquireDevice, KsAddItemToObjectBag, KsCreateFilterFactory, KsReleaseDevice,
    KSCREATE_ITEM_FREEONSTOP, KSDEVICE_DISPATCH, PKSDEVICE,
};
use super::dma_memory::DmaMemory;
use super::filter::FILTER_DESCRIPTOR;
use super::hardware::Hardware;
use super::nonpaged::{KernelMutex, PoolBox, SpinLock};
use crate::portable::filter_identity::{
    filter_reference_string_utf16, FILTER_REFERENCE_STRING_UTF16_LEN,
};
use crate::portable::frame_pool::FramePool;

/// Most allocator instances alive on one device at once (one per
/// connection; a graph replacing its allocator briefly has two).
pub(crate) const MAX_LIVE_ALLOCATORS: usize = 8;

/// The pools of the device's live allocators (null: a free entry).
pub(crate) struct LivePools([*const FramePool; MAX_LIVE_ALLOCATORS]);

// SAFETY: the pointers are only dereferenced under the device's
// `allocators` spin lock, and each pool is nonpaged and freed only after
// its entry is cleared under that lock (allocator.rs).
unsafe impl Send for LivePools {}

impl LivePools {
    /// Records a pool; false when every entry is taken.
    ///
    /// IRQL: any (the caller holds the table's spin lock).
    pub(crate) fn insert(&mut self, pool: *const FramePool) -> bool {
        match self.0.iter_mut().find(|p| p.is_null()) {
            Some(entry) => {
                *entry = pool;
                true
            }
            None => false,
        }
    }

    /// Forgets a pool.
    ///
    /// IRQL: any (the caller holds the table's spin lock).
    pub(crate) fn remove(&mut self, pool: *const FramePool) {
        for entry in &mut self.0 {
            if core::ptr::eq(*entry, pool) {
                *entry = core::ptr::null();
            }
        }
    }

    /// The live pools. Only valid while the lock that guards `self` is held.
    ///
    /// IRQL: any (the caller holds the table's spin lock).
    pub(crate) fn pools(&self) -> impl Iterator<Item = &FramePool> {
        // SAFETY: see `Send`: a pointer in the table is a live pool while
        // the table's lock is held, which the borrow of `self` proves.
        self.0.iter().filter_map(|p| unsafe { p.as_ref() })
    }
}

/// The pin that holds the simulated hardware (one streaming pin per
/// device), from STOP → ACQUIRE to ACQUIRE → STOP or Close.
pub(crate) struct StreamingPin(pub(crate) *const Hardware);

// SAFETY: the pointer is only dereferenced under the device mutex, and a
// pin clears it under that mutex before its hardware is freed.
unsafe impl Send for StreamingPin {}

impl StreamingPin {
    /// Gives the claim back if `hardware` holds it (ACQUIRE → STOP, Close).
    ///
    /// IRQL: PASSIVE_LEVEL (the caller holds the device mutex).
    pub(crate) fn release(&mut self, hardware: *const Hardware) {
        if core::ptr::eq(self.0, hardware) {
            self.0 = core::ptr::null();
        }
    }
}

/// Per-device state, in `KSDEVICE.Context` (bagged: AVStream frees it with
/// the device).
pub(crate) struct DeviceContext {
    /// The DMA adapter and the common buffers made from it.
    pub(crate) dma: DmaMemory,
    /// The live allocators' pools (zero-copy look-ups in Process).
    pub(crate) allocators: SpinLock<LivePools>,
    /// Allocators deleted with frames still out: their buffers wait here
    /// for PnP stop or remove.
    parked: SpinLock<Option<PoolBox<AllocatorContext>>>,
    /// The streaming pin's hardware, under the device mutex (taken at
    /// PASSIVE_LEVEL by state changes, pin Close and PnP, in that order
    /// before any pin's processing mutex).
    pub(crate) streaming: KernelMutex<StreamingPin>,
    /// Set by `SurpriseRemoval`: no stream may start any more.
    pub(crate) removed: AtomicBool,
    /// Allocators deleted with frames still out (each one a debug print).
    pub(crate) allocator_leaks: AtomicU32,
}

impl DeviceContext {
    /// The context of the device that owns a KS object (filter, pin).
    ///
    /// IRQL: ≤ DISPATCH_LEVEL (`KsGetDevice`).
    ///
    /// # Safety
    /// `object` is a live `PKSFILTER` or `PKSPIN` of this driver, whose device
    /// went through [`device_add`].
    pub(crate) unsafe fn of_object<'a>(object: PVOID) -> Option<&'a DeviceContext> {
        // SAFETY: KsGetDevice takes any AVStream object and returns its
        // device, valid while the object lives (caller's guarantee).
        let device = unsafe { super::bindings::KsGetDevice(object) };
        if device.is_null() {
            return None;
        }
        // SAFETY: `device` is a live KSDEVICE; its Context was set by
        // `device_add` to a DeviceContext that lives as long as the device.
        unsafe { (*device).Context.cast::<DeviceContext>().as_ref() }
    }

    /// Keeps an allocator whose frames are still out until PnP stop or
    /// remove (nobody can return them any more; freeing the buffer under
    /// them could corrupt whoever still writes there).
    ///
    /// IRQL: ≤ DISPATCH_LEVEL (a list push under a spin lock).
    pub(crate) fn park(&self, mut allocator: PoolBox<AllocatorContext>) {
        let mut parked = self.parked.lock();
        allocator.parked_next = parked.take();
        *parked = Some(allocator);
    }

    /// Frees every parked allocator and its buffer.
    ///
    /// IRQL: PASSIVE_LEVEL (common buffers are freed).
    fn free_parked(&self) {
        let mut list = self.parked.lock().take();
        while let Some(mut allocator) = list {
            list = allocator.parked_next.take();
            drop(allocator);
        }
    }

    /// Stops the stream of the pin that holds the hardware, if any: its
    /// timer, DPC and work item end and every frame it held completes.
    ///
    /// IRQL: PASSIVE_LEVEL.
    fn stop_streaming(&self) {
        let streaming = self.streaming.lock();
        // SAFETY: a pin clears this pointer under the mutex we hold before
        // its hardware goes, so it is live here.
        if let Some(hardware) = unsafe { streaming.0.as_ref() } {
            hardware.halt();
        }
    }
}

/// The device dispatch table (brief §4.2).
pub(crate) static DEVICE_DISPATCH: KSDEVICE_DISPATCH = KSDEVICE_DISPATCH {
    Add: Some(device_add),
    Start: Some(device_start),
    PostStart: None,
    QueryStop: None,
    CancelStop: None,
    Stop: Some(device_stop),
    QueryRemove: None,
    CancelRemove: None,
    Remove: Some(device_remove),
    QueryCapabilities: None,
    SurpriseRemoval: Some(device_surprise_removal),
    QueryPower: None,
    SetPower: None,
    QueryInterface: None,
};

/// Frees a device context when AVStream empties the device's object bag.
///
/// IRQL: PASSIVE_LEVEL (object-bag cleanup at device removal).
unsafe extern "C" fn free_device_context(context: PVOID) {
    // SAFETY: `context` is the pointer `device_add` bagged, made by
    // PoolBox::into_raw and owned by the bag alone; the bag frees it once.
    drop(unsafe { PoolBox::from_raw(context.cast::<DeviceContext>()) });
}

/// `AVStrMiniDeviceAdd`: creates the device context.
///
/// IRQL: PASSIVE_LEVEL.
unsafe extern "C" fn device_add(device: PKSDEVICE) -> NTSTATUS {
    let context = DeviceContext {
        dma: DmaMemory::new(),
        allocators: SpinLock::new(LivePools([core::ptr::null(); MAX_LIVE_ALLOCATORS])),
        parked: SpinLock::new(None),
        streaming: KernelMutex::new(StreamingPin(core::ptr::null())),
        removed: AtomicBool::new(false),
        allocator_leaks: AtomicU32::new(0),
    };
    let Some(context) = PoolBox::try_new(context) else {
        return STATUS_INSUFFICIENT_RESOURCES;
    };
    let raw = context.into_raw();
    // SAFETY: `raw` is the context's final, nonpaged address; nothing else
    // uses the mutex yet.
    unsafe { (*raw).streaming.init() };
    // SAFETY: AVStream passes a live device at PASSIVE_LEVEL; the bag is
    // edited under the device mutex, as KsAddItemToObjectBag requires.
    let status = unsafe {
        KsAcquireDevice(device);
        let status = KsAddItemToObjectBag((*device).Bag, raw.cast(), Some(free_device_context));
        KsReleaseDevice(device);
        status
    };
    if status < 0 {
        // SAFETY: the bag did not take the pointer; we still own it.
        drop(unsafe { PoolBox::from_raw(raw) });
        return status;
    }
    // SAFETY: live device; Context is ours to set from Add on.
    unsafe { (*device).Context = raw.cast() };
    STATUS_SUCCESS
}

/// `AVStrMiniDeviceStart`: acquires the DMA adapter (no frame memory) and
/// creates the filter factory.
///
/// IRQL: PASSIVE_LEVEL. Never returns `STATUS_PENDING`.
unsafe extern "C" fn device_start(
    device: PKSDEVICE,
    _irp: PIRP,
    _translated: PCM_RESOURCE_LIST,
    _untranslated: PCM_RESOURCE_LIST,
) -> NTSTATUS {
    // SAFETY: AVStream passes a live device whose Context `device_add` set.
    let (started, context) = unsafe {
        (
            (*device).Started != 0,
            (*device).Context.cast::<DeviceContext>().as_ref(),
        )
    };
    if started {
        return STATUS_SUCCESS; // PnP may send a second start; nothing to redo
    }
    let Some(context) = context else {
        return STATUS_INSUFFICIENT_RESOURCES;
    };
    // SAFETY: the device's PDO, live while the device is; PASSIVE_LEVEL.
    unsafe { context.dma.start((*device).PhysicalDeviceObject) };
    // SAFETY: live device at PASSIVE_LEVEL; the factory is created under the
    // device mutex. The descriptor is an immutable static. The reference
    // string is a NUL-terminated UTF-16 static that ks.sys only reads (the
    // parameter is `PWSTR` only for historical reasons).
    let status = unsafe {
        KsAcquireDevice(device);
        let status = KsCreateFilterFactory(
            (*device).FunctionalDeviceObject,
            &raw const FILTER_DESCRIPTOR.0,
            REFERENCE_STRING.as_ptr().cast_mut(),
            null_mut(),
            KSCREATE_ITEM_FREEONSTOP,
            None,
            None,
            null_mut(),
        );
        KsReleaseDevice(device);
        status
    };
    if status < 0 {
        context.dma.stop();
    }
    status
}

/// The filter factory's reference string (the core's, as UTF-16); the
/// INF's `AddInterface` lines use the same.
static REFERENCE_STRING: [u16; FILTER_REFERENCE_STRING_UTF16_LEN] = filter_reference_string_utf16();

/// Ends everything the device holds for PnP stop and remove: the running
/// stream (if a pin still streams), the parked allocators' buffers, then the
/// DMA adapter (now, or when the last buffer still out is freed).
///
/// IRQL: PASSIVE_LEVEL.
///
/// # Safety
/// `device` is a live device of this driver.
unsafe fn release_device_resources(device: PKSDEVICE) {
    // SAFETY: live device; Context set by `device_add`.
    let Some(context) = (unsafe { (*device).Context.cast::<DeviceContext>().as_ref() }) else {
        return;
    };
    context.stop_streaming();
    context.free_parked();
    context.dma.stop();
}

/// `AVStrMiniDeviceStop`: PnP stop.
///
/// IRQL: PASSIVE_LEVEL.
unsafe extern "C" fn device_stop(device: PKSDEVICE, _irp: PIRP) {
    // SAFETY: AVStream passes a live device.
    unsafe { release_device_resources(device) };
}

/// `AVStrMiniDeviceRemove`: the last handle is closed (pins and allocators
/// included); whatever a stop left is released.
///
/// IRQL: PASSIVE_LEVEL.
unsafe extern "C" fn device_remove(device: PKSDEVICE, _irp: PIRP) {
    // SAFETY: AVStream passes a live device.
    unsafe { release_device_resources(device) };
}

/// `AVStrMiniDeviceSurpriseRemoval`: the hardware is gone. A running stream
/// stops now (its frames complete empty) and none may start again; handles
/// close later, and Remove follows them.
///
/// IRQL: PASSIVE_LEVEL.
unsafe extern "C" fn device_surprise_removal(device: PKSDEVICE, _irp: PIRP) {
    // SAFETY: live device; Context set by `device_add`.
    if let Some(context) = unsafe { (*device).Context.cast::<DeviceContext>().as_ref() } {
        context.removed.store(true, Ordering::Release);
        context.stop_streaming();
    }
}

/// A debug print (seen in `WinDbg` or `DebugView`).
///
/// IRQL: any (`DbgPrint` with a plain string).
pub(crate) fn debug_print(message: &core::ffi::CStr) {
    // SAFETY: a NUL-terminated string with no format directives.
    unsafe { DbgPrint(c"%s".as_ptr(), message.as_ptr()) };
}
