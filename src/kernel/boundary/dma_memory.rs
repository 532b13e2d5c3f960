//! Common buffers on demand. The device holds a DMA adapter from PnP start
//! to stop and nothing else: every common buffer belongs to the stream or
//! allocator that asked for it ([`CommonBuffer`] frees itself when dropped),
//! so no frame memory exists while nobody streams.
//!
//! Buffers come from the adapter's `AllocateCommonBuffer`; when no adapter
//! was granted (a root-enumerated device may get none), from
//! `MmAllocateContiguousNodeMemory` with `PAGE_READWRITE` (never executable
//! memory) and no address bound. Every buffer is freed before the adapter
//! it came from is put back: PnP stop and remove put the adapter back only
//! once no buffer is out, and otherwise the last buffer freed puts it back.
//!
//! IRQL: everything here runs at PASSIVE_LEVEL (`AllocateCommonBuffer`,
//! `FreeCommonBuffer`, the contiguous-memory routines and `IoGetDmaAdapter`
//! require it); the bookkeeping is behind a spin lock held only around
//! plain reads and writes.

use core::ptr::null_mut;

use wdk_sys::ntddk::{IoGetDmaAdapter, MmFreeContiguousMemory};
use wdk_sys::{
    _INTERFACE_TYPE, DEVICE_DESCRIPTION, DMA_OPERATIONS, NTSTATUS, PDEVICE_OBJECT, PDMA_ADAPTER,
    PHYSICAL_ADDRESS, PVOID, SIZE_T, STATUS_INSUFFICIENT_RESOURCES, ULONG,
};

use super::debug_print::debug_print;
use super::ks_device::KsDevice;
use super::locks::SpinLock;
use crate::portable::frame_pool::{FramePool, Region};
use crate::portable::framing::{BufferPlan, FramingError, MAX_FRAME_SIZE};

/// `DEVICE_DESCRIPTION_VERSION` (the original layout, which both header
/// sets define identically).
const DEVICE_DESCRIPTION_VERSION: u32 = 0;
/// `PAGE_READWRITE`: data pages, not executable.
const PAGE_READWRITE: ULONG = 0x04;
/// `MM_ANY_NODE_OK`: no NUMA node preference.
const MM_ANY_NODE_OK: ULONG = 0x8000_0000;

// `MmAllocateContiguousNodeMemory` (ntoskrnl, Windows Vista and later) is
// declared here because mingw-w64's headers, which the Linux cross-build
// generates wdk-sys from, lack it; the WDK declares it with this signature
// (`NODE_REQUIREMENT` is a ULONG), so both builds call the same export.
unsafe extern "system" {
    fn MmAllocateContiguousNodeMemory(
        number_of_bytes: SIZE_T,
        lowest_acceptable_address: PHYSICAL_ADDRESS,
        highest_acceptable_address: PHYSICAL_ADDRESS,
        boundary_address_multiple: PHYSICAL_ADDRESS,
        protect: ULONG,
        preferred_node: ULONG,
    ) -> PVOID;
}

/// Where a common buffer came from; it goes back the same way.
#[derive(Clone, Copy)]
enum Source {
    /// `DMA_OPERATIONS.AllocateCommonBuffer` of this adapter.
    Adapter(PDMA_ADAPTER),
    /// `MmAllocateContiguousNodeMemory`.
    Contiguous,
}

/// The adapter and how many buffers it has out.
struct DmaState {
    /// The adapter (null: none granted, or put back).
    adapter: PDMA_ADAPTER,
    /// Between PnP start and stop: new buffers may be made.
    started: bool,
    /// Buffers made from `adapter` and not yet freed.
    adapter_buffers: u32,
}

// SAFETY: the adapter pointer is a handle the HAL keeps valid until it is
// put back, which only happens with this state's lock released and the
// pointer cleared under it; moving the state between CPUs moves nothing.
unsafe impl Send for DmaState {}

/// The device's source of common buffers.
pub struct DmaMemory {
    state: SpinLock<DmaState>,
}

impl DmaMemory {
    /// No adapter yet.
    ///
    /// IRQL: any (a value; device Add makes it at PASSIVE_LEVEL).
    pub(crate) const fn new() -> Self {
        Self {
            state: SpinLock::new(DmaState {
                adapter: null_mut(),
                started: false,
                adapter_buffers: 0,
            }),
        }
    }

    /// PnP start of `device`: acquires the adapter (unless one is still
    /// held from before a stop, with buffers out) and allows buffers again.
    ///
    /// IRQL: PASSIVE_LEVEL.
    pub(crate) fn start(&self, device: &KsDevice<'_>) {
        let have = !self.state.lock().adapter.is_null();
        let adapter = if have {
            null_mut()
        } else {
            // SAFETY: the PDO of a live device, in its Start callback at
            // PASSIVE_LEVEL.
            unsafe { get_adapter(device.physical_device_object()) }
        };
        let mut state = self.state.lock();
        if state.adapter.is_null() {
            state.adapter = adapter;
        }
        state.started = true;
        if adapter.is_null() && !have {
            drop(state);
            debug_print(c"avscap: no DMA adapter granted; streams use contiguous memory\n");
        }
    }

    /// PnP stop or remove: no new buffers; the adapter is put back now if
    /// no buffer of it is out, else when the last one is freed.
    ///
    /// IRQL: PASSIVE_LEVEL.
    pub(crate) fn stop(&self) {
        let adapter = {
            let mut state = self.state.lock();
            state.started = false;
            if state.adapter_buffers == 0 {
                core::mem::replace(&mut state.adapter, null_mut())
            } else {
                null_mut()
            }
        };
        if !adapter.is_null() {
            // SAFETY: an adapter from IoGetDmaAdapter with no buffer out,
            // cleared from the state, so nobody uses it any more.
            unsafe { put_adapter(adapter) };
        }
    }

    /// A common buffer of `len` bytes (a page multiple), page aligned in
    /// both address spaces, or `None` when none can be had (or the device
    /// is not started).
    ///
    /// IRQL: PASSIVE_LEVEL.
    pub(crate) fn allocate(&self, len: usize) -> Option<CommonBuffer> {
        let adapter = {
            let mut state = self.state.lock();
            if !state.started {
                return None;
            }
            if !state.adapter.is_null() {
                state.adapter_buffers += 1;
            }
            state.adapter
        };
        let buffer = if adapter.is_null() {
            // SAFETY: PASSIVE_LEVEL.
            unsafe { contiguous_buffer(len) }.map(|(va, logical)| (va, logical, Source::Contiguous))
        } else {
            // SAFETY: the adapter stays live: our count keeps it from being
            // put back. PASSIVE_LEVEL.
            let made = unsafe { adapter_buffer(adapter, len) };
            if made.is_none() {
                self.adapter_buffer_freed();
            }
            made.map(|(va, logical)| (va, logical, Source::Adapter(adapter)))
        };
        let (va, logical, source) = buffer?;
        Some(CommonBuffer {
            region: Region {
                virtual_base: va as usize,
                logical_base: logical,
                len,
            },
            source,
            owner: core::ptr::from_ref(self),
        })
    }

    /// A common buffer sized by `plan` and the frame pool that carves it
    /// into `plan`'s frames.
    ///
    /// IRQL: PASSIVE_LEVEL.
    ///
    /// # Errors
    /// `STATUS_INSUFFICIENT_RESOURCES` when no buffer can be had (or the
    /// device is not started); the core's status when the pool does not
    /// fit the buffer (the buffer is freed then).
    pub(crate) fn pooled_buffer(&self, plan: &BufferPlan) -> Result<PooledBuffer, NTSTATUS> {
        let buffer = self
            .allocate(plan.bytes())
            .ok_or(STATUS_INSUFFICIENT_RESOURCES)?;
        let pool = FramePool::over(buffer.region(), plan).map_err(FramingError::ntstatus)?;
        Ok(PooledBuffer {
            pool,
            _buffer: buffer,
        })
    }

    /// One adapter buffer is gone; puts the adapter back if it was the last
    /// and the device is stopped.
    ///
    /// IRQL: PASSIVE_LEVEL.
    fn adapter_buffer_freed(&self) {
        let adapter = {
            let mut state = self.state.lock();
            state.adapter_buffers = state.adapter_buffers.saturating_sub(1);
            if state.adapter_buffers == 0 && !state.started {
                core::mem::replace(&mut state.adapter, null_mut())
            } else {
                null_mut()
            }
        };
        if !adapter.is_null() {
            // SAFETY: as in `stop`.
            unsafe { put_adapter(adapter) };
        }
    }
}

/// One common buffer, owned: dropping it frees it the way it came (at
/// PASSIVE_LEVEL: owners drop buffers only there).
pub struct CommonBuffer {
    region: Region,
    source: Source,
    owner: *const DmaMemory,
}

// SAFETY: the buffer is nonpaged memory owned by this value alone; the
// owner pointer is the device's DmaMemory, which outlives every buffer
// (buffers are freed by their streams and allocators, parked ones at PnP
// stop or remove, all before the device context goes).
unsafe impl Send for CommonBuffer {}
// SAFETY: through `&CommonBuffer` only the region (plain values) is read;
// the pointers inside are used by `drop` alone.
unsafe impl Sync for CommonBuffer {}

impl CommonBuffer {
    /// The buffer's addresses and length.
    ///
    /// IRQL: any.
    pub(crate) const fn region(&self) -> Region {
        self.region
    }
}

impl Drop for CommonBuffer {
    /// IRQL: PASSIVE_LEVEL.
    fn drop(&mut self) {
        let va = self.region.virtual_base as PVOID;
        match self.source {
            Source::Adapter(adapter) => {
                let logical = PHYSICAL_ADDRESS {
                    QuadPart: self.region.logical_base.cast_signed(),
                };
                // SAFETY: the adapter is live (our count keeps it) and has
                // operations (`get_adapter` returns no other).
                if let Some(free) = unsafe { operations(adapter).FreeCommonBuffer } {
                    // SAFETY: the buffer came from this adapter's
                    // AllocateCommonBuffer with this length, addresses and
                    // caching; PASSIVE_LEVEL.
                    unsafe {
                        free(
                            adapter,
                            u32::try_from(self.region.len).unwrap_or(u32::MAX),
                            logical,
                            va,
                            1,
                        );
                    };
                }
                // SAFETY: the owner outlives its buffers (see `Send`).
                if let Some(owner) = unsafe { self.owner.as_ref() } {
                    owner.adapter_buffer_freed();
                }
            }
            // SAFETY: the buffer came from MmAllocateContiguousNodeMemory;
            // PASSIVE_LEVEL.
            Source::Contiguous => unsafe { MmFreeContiguousMemory(va) },
        }
    }
}

/// A frame pool and the common buffer it hands out, owned together (a
/// stream's staging slots, an allocator instance's frames).
pub struct PooledBuffer {
    pool: FramePool,
    /// Declared after `pool`: freed after it, at PASSIVE_LEVEL (owners drop
    /// it only there).
    _buffer: CommonBuffer,
}

impl PooledBuffer {
    /// The pool over the buffer.
    ///
    /// IRQL: any.
    pub(crate) const fn pool(&self) -> &FramePool {
        &self.pool
    }
}

/// `IoGetDmaAdapter` for a non-scatter/gather bus master that addresses
/// 64 bits, or NULL.
///
/// IRQL: PASSIVE_LEVEL.
///
/// # Safety
/// `pdo` is a live physical device object.
unsafe fn get_adapter(pdo: PDEVICE_OBJECT) -> PDMA_ADAPTER {
    // SAFETY: DEVICE_DESCRIPTION is integers and BOOLEANs; all-zero is valid.
    let mut description: DEVICE_DESCRIPTION = unsafe { core::mem::zeroed() };
    description.Version = DEVICE_DESCRIPTION_VERSION;
    description.Master = 1;
    description.ScatterGather = 0;
    description.Dma32BitAddresses = 1;
    description.Dma64BitAddresses = 1;
    description.InterfaceType = _INTERFACE_TYPE::Internal;
    // The largest transfer: one frame of the largest format.
    description.MaximumLength = MAX_FRAME_SIZE;
    let mut map_registers = 0u32;
    // SAFETY: PASSIVE_LEVEL; the PDO is live (caller); the description and
    // count outlive the call.
    let adapter = unsafe { IoGetDmaAdapter(pdo, &raw mut description, &raw mut map_registers) };
    // SAFETY: a non-null adapter points at a DMA_ADAPTER.
    if !adapter.is_null() && unsafe { (*adapter).DmaOperations.is_null() } {
        // An adapter without operations cannot even be put back; treat it as
        // none (it is never seen from a conforming HAL).
        return null_mut();
    }
    adapter
}

/// One common buffer of `len` bytes from `adapter`: its virtual and logical
/// addresses.
///
/// IRQL: PASSIVE_LEVEL.
///
/// # Safety
/// `adapter` is a live adapter from [`get_adapter`].
unsafe fn adapter_buffer(adapter: PDMA_ADAPTER, len: usize) -> Option<(PVOID, u64)> {
    let length = u32::try_from(len).ok()?;
    // SAFETY: a live adapter from `get_adapter`, which returns only adapters
    // with operations.
    let allocate = unsafe { operations(adapter).AllocateCommonBuffer }?;
    let mut logical = PHYSICAL_ADDRESS { QuadPart: 0 };
    // SAFETY: PASSIVE_LEVEL, as AllocateCommonBuffer requires; the adapter
    // is live. Cached memory: x64 DMA is cache-coherent, and the CPU
    // synthesizes whole frames into it.
    let va = unsafe { allocate(adapter, length, &raw mut logical, 1) };
    if va.is_null() {
        return None;
    }
    // SAFETY: LARGE_INTEGER's QuadPart covers all 8 bytes.
    Some((va, unsafe { logical.QuadPart }.cast_unsigned()))
}

/// Physically contiguous, cached, non-executable memory anywhere in the
/// physical address space. Its "logical" address is the physical one: good
/// enough for the simulated hardware, which never does DMA (a real device
/// would need an adapter's logical address).
///
/// IRQL: PASSIVE_LEVEL.
unsafe fn contiguous_buffer(len: usize) -> Option<(PVOID, u64)> {
    let lowest = PHYSICAL_ADDRESS { QuadPart: 0 };
    let highest = PHYSICAL_ADDRESS { QuadPart: -1 };
    let boundary = PHYSICAL_ADDRESS { QuadPart: 0 };
    // SAFETY: PASSIVE_LEVEL, as the routine requires.
    let va = unsafe {
        MmAllocateContiguousNodeMemory(
            len as SIZE_T,
            lowest,
            highest,
            boundary,
            PAGE_READWRITE,
            MM_ANY_NODE_OK,
        )
    };
    if va.is_null() {
        return None;
    }
    // SAFETY: `va` is a resident, nonpaged allocation we own.
    let physical = unsafe { wdk_sys::ntddk::MmGetPhysicalAddress(va) };
    // SAFETY: LARGE_INTEGER's QuadPart covers all 8 bytes.
    Some((va, unsafe { physical.QuadPart }.cast_unsigned()))
}

/// `DMA_OPERATIONS.PutDmaAdapter`.
///
/// IRQL: ≤ DISPATCH_LEVEL (called at PASSIVE_LEVEL here).
///
/// # Safety
/// `adapter` is a live adapter from `IoGetDmaAdapter` with no common buffer
/// out, not used afterwards.
unsafe fn put_adapter(adapter: PDMA_ADAPTER) {
    // SAFETY: the caller's guarantee (an adapter from `get_adapter` has
    // operations).
    if let Some(put) = unsafe { operations(adapter).PutDmaAdapter } {
        // SAFETY: the caller's guarantee: live, no buffer out, not used
        // afterwards.
        unsafe { put(adapter) };
    }
}

/// An adapter's `DMA_OPERATIONS`.
///
/// IRQL: any.
///
/// # Safety
/// `adapter` is a live adapter whose `DmaOperations` is not null.
unsafe fn operations<'a>(adapter: PDMA_ADAPTER) -> &'a DMA_OPERATIONS {
    // SAFETY: the caller's guarantee: a live adapter.
    let operations = unsafe { (*adapter).DmaOperations };
    // SAFETY: the caller's guarantee: non-null, and the HAL keeps it while
    // the adapter lives.
    unsafe { &*operations }
}
