//! The AVStream device: PnP dispatch (Add, Start, Stop, Remove), the filter
//! factory, and the one common buffer the allocator and the staging slots
//! are carved from.
//!
//! All device callbacks run at PASSIVE_LEVEL (AVStream calls them from PnP
//! IRP dispatch or its own worker). The device context they manage is in
//! nonpaged pool because pins and DPCs read it.

use core::ptr::null_mut;
use core::sync::atomic::{AtomicBool, AtomicU32};

use wdk_sys::ntddk::{
    DbgPrint, IoGetDmaAdapter, MmAllocateContiguousMemorySpecifyCache,
    MmFreeContiguousMemorySpecifyCache, MmGetPhysicalAddress,
};
use wdk_sys::{
    _INTERFACE_TYPE, _MEMORY_CACHING_TYPE, DEVICE_DESCRIPTION, NTSTATUS, PCM_RESOURCE_LIST,
    PDMA_ADAPTER, PHYSICAL_ADDRESS, PIRP, PVOID, STATUS_INSUFFICIENT_RESOURCES, STATUS_SUCCESS,
};

use super::bindings::{
    KsAcquireDevice, KsAddItemToObjectBag, KsCreateFilterFactory, KsReleaseDevice,
    KSCREATE_ITEM_FREEONSTOP, KSDEVICE_DISPATCH, PKSDEVICE,
};
use super::filter::FILTER_DESCRIPTOR;
use super::nonpaged::{PoolBox, SpinLock};
use crate::portable::common_buffer::CommonBufferLayout;
use crate::portable::filter_identity::{
    filter_reference_string_utf16, FILTER_REFERENCE_STRING_UTF16_LEN,
};
use crate::portable::frame_pool::{FramePool, Region};
use crate::portable::video_format::VideoFormat;

/// `DEVICE_DESCRIPTION_VERSION` (the original layout, which both header
/// sets define identically).
const DEVICE_DESCRIPTION_VERSION: u32 = 0;
/// Highest physical address a 32-bit bus master reaches.
const HIGHEST_32BIT_ADDRESS: i64 = 0xFFFF_FFFF;

/// Where the common buffer came from; it goes back the same way.
#[derive(Clone, Copy)]
enum BufferSource {
    /// `DMA_OPERATIONS.AllocateCommonBuffer` of this adapter.
    Adapter(PDMA_ADAPTER),
    /// `MmAllocateContiguousMemorySpecifyCache`, when no adapter was granted.
    Contiguous,
}

/// The device's common buffer.
#[derive(Clone, Copy)]
pub(crate) struct CommonBuffer {
    /// Addresses and length.
    pub(crate) region: Region,
    /// How it is divided (the largest of the core's fallback layouts that
    /// could be allocated).
    pub(crate) layout: CommonBufferLayout,
    source: BufferSource,
}

/// The allocator pool a device's Process looks frames up in (null: none).
pub(crate) struct PoolLink(pub(crate) *const FramePool);

// SAFETY: the pointer is only dereferenced under the device's `own` spin
// lock, and the pool it points at is nonpaged and freed only after the link
// is cleared under that lock (allocator.rs); moving the link between CPUs
// moves nothing else.
unsafe impl Send for PoolLink {}

impl CommonBuffer {
    /// The buffer of `layout.total` bytes at `va`, device address `logical`.
    fn new(
        layout: CommonBufferLayout,
        va: PVOID,
        logical: PHYSICAL_ADDRESS,
        source: BufferSource,
    ) -> Self {
        // SAFETY: LARGE_INTEGER's QuadPart covers all 8 bytes.
        let logical_base = unsafe { logical.QuadPart }.cast_unsigned();
        let region = Region {
            virtual_base: va as usize,
            logical_base,
            len: layout.total,
        };
        CommonBuffer {
            region,
            layout,
            source,
        }
    }
}

/// Per-device state, in `KSDEVICE.Context` (bagged: AVStream frees it with
/// the device).
pub(crate) struct DeviceContext {
    /// The common buffer: set by the first Start, before the filter factory
    /// exists, and released by Remove, after the last handle is closed, so
    /// pins and allocators only ever read it. A PnP stop keeps it for the
    /// next start: filters created before the stop may still be open.
    pub(crate) buffer: Option<CommonBuffer>,
    /// The allocator instance's pool while one exists. Process looks client
    /// frames up in it; `DeleteAllocator` clears it under this lock before
    /// freeing the pool.
    pub(crate) own: SpinLock<PoolLink>,
    /// Set while a pin owns the simulated hardware (STOP → ACQUIRE claims it).
    pub(crate) hardware_claimed: AtomicBool,
    /// Set while an allocator instance owns the allocator carve-out.
    pub(crate) carve_out_claimed: AtomicBool,
    /// Allocators deleted with frames still out (each one a debug print).
    pub(crate) allocator_leaks: AtomicU32,
}

impl DeviceContext {
    /// Whether the device can stream `format`: its common buffer exists and
    /// its slots hold the format's image (a fallback layout may not).
    ///
    /// IRQL: any.
    pub(crate) fn streams(&self, format: &VideoFormat) -> bool {
        match (self.buffer, format.layout()) {
            (Some(buffer), Ok(layout)) => buffer.layout.holds(layout.image_size),
            _ => false,
        }
    }

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
}

/// The device dispatch table (brief §4.2).
pub(crate) static DEVICE_DISPATCH: KSDEVICE_DISPATCH = KSDEVICE_DISPATCH {
    Add: Some(device_add),
    Start: Some(device_start),
    PostStart: None,
    QueryStop: None,
    CancelStop: None,
    Stop: None,
    QueryRemove: None,
    CancelRemove: None,
    Remove: Some(device_remove),
    QueryCapabilities: None,
    SurpriseRemoval: None,
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
        buffer: None,
        own: SpinLock::new(PoolLink(core::ptr::null())),
        hardware_claimed: AtomicBool::new(false),
        carve_out_claimed: AtomicBool::new(false),
        allocator_leaks: AtomicU32::new(0),
    };
    let Some(context) = PoolBox::try_new(context) else {
        return STATUS_INSUFFICIENT_RESOURCES;
    };
    let raw = context.into_raw();
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

/// `AVStrMiniDeviceStart`: on the first start, allocates the common buffer
/// and creates the filter factory; on a start after a PnP stop, only the
/// factory (the buffer was kept, and pins opened before the stop may still
/// be using it).
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
            (*device).Context.cast::<DeviceContext>(),
        )
    };
    if started {
        return STATUS_SUCCESS; // PnP may send a second start; nothing to redo
    }
    if context.is_null() {
        return STATUS_INSUFFICIENT_RESOURCES;
    }
    let mut allocated_here = false;
    // SAFETY: a shared read; the context lives as long as the device.
    if unsafe { (*context).buffer.is_none() } {
        // SAFETY: live device at PASSIVE_LEVEL.
        let Some(buffer) = (unsafe { allocate_common_buffer(device) }) else {
            debug_print(c"avscap: no common buffer of any size could be allocated\n");
            return STATUS_INSUFFICIENT_RESOURCES;
        };
        // SAFETY: the buffer is written once, here, while it is still None,
        // which is before the first filter factory exists: no pin or
        // allocator can be reading it. Written through the raw pointer, so
        // no `&mut DeviceContext` is ever made.
        unsafe { (&raw mut (*context).buffer).write(Some(buffer)) };
        allocated_here = true;
    }
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
    if status < 0 && allocated_here {
        // SAFETY: this call made the buffer and no factory exists, so
        // nothing uses it.
        unsafe { release_common_buffer(context) };
    }
    status
}

/// The filter factory's reference string (the core's, as UTF-16); the
/// INF's `AddInterface` lines use the same.
static REFERENCE_STRING: [u16; FILTER_REFERENCE_STRING_UTF16_LEN] = filter_reference_string_utf16();

/// `AVStrMiniDeviceRemove`: gives the common buffer back.
///
/// IRQL: PASSIVE_LEVEL. Remove comes after the last handle to the device's
/// filters is closed (pins and allocators included), so nothing uses the
/// buffer any more. A PnP stop (`Stop` is not dispatched) keeps the buffer:
/// filters opened before it may still be streaming into it.
unsafe extern "C" fn device_remove(device: PKSDEVICE, _irp: PIRP) {
    // SAFETY: live device; Context set by `device_add`.
    let context = unsafe { (*device).Context.cast::<DeviceContext>() };
    if !context.is_null() {
        // SAFETY: see the function's IRQL and lifetime notes.
        unsafe { release_common_buffer(context) };
    }
}

/// Gets the common buffer: the largest of the core's fallback layouts that
/// can be had, from a DMA adapter for a 32-bit bus master
/// (`AllocateCommonBuffer`), or, when no adapter is granted (a
/// root-enumerated device may get none) or it gives no buffer, physically
/// contiguous memory below 4 GiB. One adapter is requested for all sizes.
///
/// IRQL: PASSIVE_LEVEL.
unsafe fn allocate_common_buffer(device: PKSDEVICE) -> Option<CommonBuffer> {
    let ladder = CommonBufferLayout::fallbacks();
    let largest = ladder.iter().flatten().next()?;
    // SAFETY: live device at PASSIVE_LEVEL.
    let adapter = unsafe { get_adapter(device, largest.total) };
    if adapter.is_null() {
        debug_print(c"avscap: no DMA adapter granted; using contiguous memory below 4 GiB\n");
    } else {
        for layout in ladder.iter().flatten() {
            // SAFETY: a live adapter at PASSIVE_LEVEL.
            if let Some(buffer) = unsafe { adapter_buffer(adapter, *layout) } {
                return Some(buffer);
            }
        }
        // SAFETY: the adapter is ours and holds no buffer; give it back.
        unsafe { put_adapter(adapter) };
        debug_print(c"avscap: the DMA adapter gave no common buffer; trying contiguous memory\n");
    }
    ladder.iter().flatten().find_map(|layout| {
        // SAFETY: PASSIVE_LEVEL.
        unsafe { contiguous_buffer(*layout) }
    })
}

/// `IoGetDmaAdapter` for a 32-bit, non-scatter/gather bus master, or NULL.
///
/// IRQL: PASSIVE_LEVEL.
unsafe fn get_adapter(device: PKSDEVICE, maximum: usize) -> PDMA_ADAPTER {
    // SAFETY: DEVICE_DESCRIPTION is integers and BOOLEANs; all-zero is valid.
    let mut description: DEVICE_DESCRIPTION = unsafe { core::mem::zeroed() };
    description.Version = DEVICE_DESCRIPTION_VERSION;
    description.Master = 1;
    description.ScatterGather = 0;
    description.Dma32BitAddresses = 1;
    description.InterfaceType = _INTERFACE_TYPE::Internal;
    description.MaximumLength = u32::try_from(maximum).unwrap_or(u32::MAX);
    let mut map_registers = 0u32;
    // SAFETY: PASSIVE_LEVEL; the PDO is the device's, live while it is; the
    // description and count outlive the call.
    let adapter = unsafe {
        IoGetDmaAdapter(
            (*device).PhysicalDeviceObject,
            &raw mut description,
            &raw mut map_registers,
        )
    };
    // SAFETY: a non-null adapter points at a DMA_ADAPTER.
    if !adapter.is_null() && unsafe { (*adapter).DmaOperations.is_null() } {
        // An adapter without operations cannot even be put back; treat it as
        // none (it is never seen from a conforming HAL).
        return null_mut();
    }
    adapter
}

/// One common buffer of `layout.total` bytes from `adapter`.
///
/// IRQL: PASSIVE_LEVEL.
unsafe fn adapter_buffer(
    adapter: PDMA_ADAPTER,
    layout: CommonBufferLayout,
) -> Option<CommonBuffer> {
    let length = u32::try_from(layout.total).ok()?;
    // SAFETY: `get_adapter` returns only adapters with operations.
    let allocate = unsafe { (*(*adapter).DmaOperations).AllocateCommonBuffer }?;
    let mut logical = PHYSICAL_ADDRESS { QuadPart: 0 };
    // SAFETY: PASSIVE_LEVEL, as AllocateCommonBuffer requires; the adapter
    // is live until PutDmaAdapter. Cached memory: x64 DMA is cache-coherent,
    // and the CPU synthesizes whole frames into it.
    let va = unsafe { allocate(adapter, length, &raw mut logical, 1) };
    if va.is_null() {
        return None;
    }
    Some(CommonBuffer::new(
        layout,
        va,
        logical,
        BufferSource::Adapter(adapter),
    ))
}

/// Physically contiguous, cached memory below 4 GiB. Its "logical" address
/// is the physical one: good enough for the simulated hardware, which never
/// does DMA (a real device would need an adapter's logical address).
///
/// IRQL: PASSIVE_LEVEL.
unsafe fn contiguous_buffer(layout: CommonBufferLayout) -> Option<CommonBuffer> {
    let lowest = PHYSICAL_ADDRESS { QuadPart: 0 };
    let highest = PHYSICAL_ADDRESS {
        QuadPart: HIGHEST_32BIT_ADDRESS,
    };
    let boundary = PHYSICAL_ADDRESS { QuadPart: 0 };
    // SAFETY: PASSIVE_LEVEL, as the routine requires.
    let va = unsafe {
        MmAllocateContiguousMemorySpecifyCache(
            layout.total as u64,
            lowest,
            highest,
            boundary,
            _MEMORY_CACHING_TYPE::MmCached,
        )
    };
    if va.is_null() {
        return None;
    }
    // SAFETY: `va` is a resident, nonpaged allocation we own.
    let physical = unsafe { MmGetPhysicalAddress(va) };
    Some(CommonBuffer::new(
        layout,
        va,
        physical,
        BufferSource::Contiguous,
    ))
}

/// Gives the common buffer back the way it came, and the adapter with it.
///
/// IRQL: PASSIVE_LEVEL.
///
/// # Safety
/// `context` is a live device context and nothing uses its buffer any more.
unsafe fn release_common_buffer(context: *mut DeviceContext) {
    // SAFETY: the caller's guarantee; taken through the raw pointer, so no
    // `&mut DeviceContext` is made.
    let Some(buffer) = (unsafe { (&raw mut (*context).buffer).replace(None) }) else {
        return;
    };
    let va = buffer.region.virtual_base as PVOID;
    match buffer.source {
        BufferSource::Adapter(adapter) => {
            let logical = PHYSICAL_ADDRESS {
                QuadPart: buffer.region.logical_base.cast_signed(),
            };
            // SAFETY: the buffer came from this adapter's AllocateCommonBuffer
            // with this length, addresses and caching; PASSIVE_LEVEL.
            unsafe {
                if let Some(free) = (*(*adapter).DmaOperations).FreeCommonBuffer {
                    free(
                        adapter,
                        u32::try_from(buffer.region.len).unwrap_or(u32::MAX),
                        logical,
                        va,
                        1,
                    );
                }
                put_adapter(adapter);
            }
        }
        BufferSource::Contiguous => {
            // SAFETY: the buffer came from MmAllocateContiguousMemorySpecifyCache
            // with this length and caching; PASSIVE_LEVEL.
            unsafe {
                MmFreeContiguousMemorySpecifyCache(
                    va,
                    buffer.region.len as u64,
                    _MEMORY_CACHING_TYPE::MmCached,
                );
            };
        }
    }
}

/// `DMA_OPERATIONS.PutDmaAdapter`.
///
/// IRQL: ≤ DISPATCH_LEVEL (called at PASSIVE_LEVEL here).
///
/// # Safety
/// `adapter` is a live adapter from `IoGetDmaAdapter`, not used afterwards.
unsafe fn put_adapter(adapter: PDMA_ADAPTER) {
    // SAFETY: the caller's guarantee (an adapter from `get_adapter` has
    // operations); PutDmaAdapter may be called at <= DISPATCH_LEVEL.
    unsafe {
        if let Some(put) = (*(*adapter).DmaOperations).PutDmaAdapter {
            put(adapter);
        }
    }
}

/// A debug print (seen in `WinDbg` or `DebugView`).
///
/// IRQL: any (`DbgPrint` with a plain string).
pub(crate) fn debug_print(message: &core::ffi::CStr) {
    // SAFETY: a NUL-terminated string with no format directives.
    unsafe { DbgPrint(c"%s".as_ptr(), message.as_ptr()) };
}
