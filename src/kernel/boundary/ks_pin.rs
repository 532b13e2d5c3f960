//! The AVStream pin (`KSPIN`): its dispatch trampolines, a borrowed handle
//! for the callbacks, its typed context, the long-lived handle its context
//! keeps, and the intersect and property-handler trampolines.

use core::marker::PhantomData;
use core::ptr::{null, null_mut, NonNull};

use wdk_sys::{
    NTSTATUS, PIRP, PULONG, PVOID, STATUS_DEVICE_NOT_READY, STATUS_INSUFFICIENT_RESOURCES,
    STATUS_INVALID_DEVICE_STATE, STATUS_INVALID_PARAMETER, STATUS_SUCCESS,
};

use super::super::bindings::{
    _KsEdit, KsGetDevice, KsGetPinFromIrp, KsPinAcquireProcessingMutex, KsPinAttemptProcessing,
    KsPinGetLeadingEdgeStreamPointer, KsPinGetReferenceClockInterface, KsPinReleaseProcessingMutex,
    KSALLOCATOR_DISPATCH, KSALLOCATOR_FRAMING_EX, KSATTRIBUTE_LIST, KSDATAFORMAT, KSDATARANGE,
    KSDEVICE, KSOBJECT_BAG, KSPIN, KSPIN_DESCRIPTOR_EX, KSPIN_DISPATCH, KSPROPERTY_ITEM, KSSTATE,
    KSSTREAM_POINTER_STATE, PFNKSINTERSECTHANDLEREX, PIKSREFERENCECLOCK, PKSDATAFORMAT,
    PKSDATARANGE, PKSIDENTIFIER, PKSMULTIPLE_ITEM, PKSPIN, PKSP_PIN,
};
use super::ks_device::{DeviceContextType, DeviceRef};
use super::nt_result;
use super::pool_box::{PoolBox, POOL_TAG};
use super::reference_clock::ReferenceClock;
use super::static_table::zeroed;
use super::stream_pointer::LeadingEdge;
use super::timer_worker::{TimerHandler, TimerWorker};
use crate::portable::video_format::OutputBuffer;

/// The one type the driver keeps in `KSPIN.Context` from Create to Close.
///
/// # Safety
/// Exactly one type of the driver implements this trait: a created pin's
/// `Context` is then null or that type, installed by the Create trampoline
/// of [`pin_dispatch`], which is what lets [`KsPin::context`] read it back.
pub unsafe trait PinContextType: Send + Sync + Sized + 'static {}

/// The pin callbacks the driver implements (on its pin context type); the
/// trampolines of [`pin_dispatch`] call them.
///
/// IRQL: all PASSIVE_LEVEL (the pin does not ask for DISPATCH_LEVEL
/// processing), with the pin's control mutex held except in Process.
pub trait PinDispatch: PinContextType {
    /// `AVStrMiniPinCreate`: the pin's context, installed by the trampoline
    /// on success. `handle` is the pin's long-lived handle, for the
    /// context to keep.
    ///
    /// # Errors
    /// The status Create fails with.
    fn create(pin: &KsPin<'_>, handle: PinHandle) -> Result<PoolBox<Self>, NTSTATUS>;
    /// `AVStrMiniPinClose`, with the context taken back from the pin (no
    /// other callback of the pin runs any more).
    fn close(pin: &KsPin<'_>, context: PoolBox<Self>);
    /// `AVStrMiniPinProcess`.
    fn process(pin: &KsPin<'_>) -> NTSTATUS;
    /// `AVStrMiniPinSetDataFormat`; `created` is false for the call made
    /// before Create (no old format, no context yet).
    fn set_data_format(pin: &KsPin<'_>, created: bool) -> NTSTATUS;
    /// `AVStrMiniPinSetDeviceState`. Never `STATUS_PENDING`.
    fn set_device_state(pin: &KsPin<'_>, to: KSSTATE::Type, from: KSSTATE::Type) -> NTSTATUS;
}

/// The pin dispatch table of `C`, offering `allocator` (a static table).
pub const fn pin_dispatch<C: PinDispatch>(
    allocator: &'static KSALLOCATOR_DISPATCH,
) -> KSPIN_DISPATCH {
    KSPIN_DISPATCH {
        Create: Some(create::<C>),
        Close: Some(close::<C>),
        Process: Some(process::<C>),
        Reset: None,
        SetDataFormat: Some(set_data_format::<C>),
        SetDeviceState: Some(set_device_state::<C>),
        Connect: None,
        Disconnect: None,
        Clock: null(),
        Allocator: allocator,
    }
}

/// A pin of this driver, borrowed for one callback.
///
/// Invariant: `raw` is a live `KSPIN` of this driver for `'a`, the code
/// holding the handle runs at PASSIVE_LEVEL in one of the pin's callbacks,
/// and `created` is true only after the pin's Create succeeded (so its
/// `Context` is null or the [`PinContextType`]).
pub struct KsPin<'a> {
    raw: NonNull<KSPIN>,
    created: bool,
    _callback: PhantomData<&'a KSPIN>,
}

impl KsPin<'_> {
    /// The handle for a pin callback.
    ///
    /// # Safety
    /// `pin` is null or the live pin AVStream passed to a callback of this
    /// driver at PASSIVE_LEVEL, which the handle does not outlive; `created`
    /// only if the pin's Create has succeeded and its Close has not run.
    pub(super) unsafe fn from_raw(pin: PKSPIN, created: bool) -> Option<Self> {
        NonNull::new(pin).map(|raw| Self {
            raw,
            created,
            _callback: PhantomData,
        })
    }

    /// The pin's context (None before Create has installed it).
    ///
    /// IRQL: any.
    pub(crate) fn context<C: PinContextType>(&self) -> Option<&C> {
        if !self.created {
            return None; // Context may still be the filter's
        }
        // SAFETY: a live pin (type invariant).
        let context = unsafe { (*self.raw.as_ptr()).Context };
        // SAFETY: a created pin's Context is null or the `C` the Create
        // trampoline installed (`PinContextType`'s contract), freed only by
        // the Close trampoline, after every other callback.
        unsafe { context.cast::<C>().as_ref() }
    }

    /// The context of the pin's device, as a reference the pin's and its
    /// allocators' contexts may keep.
    ///
    /// IRQL: ≤ DISPATCH_LEVEL (`KsGetDevice`).
    pub(crate) fn device_context<D: DeviceContextType>(&self) -> Option<DeviceRef<D>> {
        let device = self.device()?;
        // SAFETY: a live device of this driver.
        let context = unsafe { (*device.as_ptr()).Context };
        // SAFETY: the device's Context is null or its `D`
        // (`DeviceContextType`'s contract), which outlives the pin.
        let context = unsafe { context.cast::<D>().as_ref() }?;
        // SAFETY: the context of the pin's live device, handed to the pin's
        // code, which keeps it only in pin and allocator contexts.
        Some(unsafe { DeviceRef::new(context) })
    }

    /// The pin's device, live while the pin is.
    ///
    /// IRQL: ≤ DISPATCH_LEVEL (`KsGetDevice`).
    fn device(&self) -> Option<NonNull<KSDEVICE>> {
        // SAFETY: a live pin; KsGetDevice takes any AVStream object and
        // returns its device.
        NonNull::new(unsafe { KsGetDevice(self.raw.as_ptr().cast()) })
    }

    /// The bytes of the connection format (its `FormatSize` of them), once
    /// ks.sys has set one.
    ///
    /// IRQL: PASSIVE_LEVEL.
    pub(crate) fn connection_format(&self) -> Option<&[u8]> {
        // SAFETY: a live pin (type invariant).
        let format = unsafe { (*self.raw.as_ptr()).ConnectionFormat };
        // SAFETY: a format ks.sys set is a buffer of `FormatSize` readable
        // bytes it validated, replaced only under the control mutex, which
        // the callback holding `self` holds (Process only reads it).
        unsafe { client_bytes(format) }
    }

    /// The pin's current KS state.
    ///
    /// IRQL: any.
    pub(crate) fn device_state(&self) -> KSSTATE::Type {
        // SAFETY: a live pin; a plain read.
        unsafe { (*self.raw.as_ptr()).DeviceState }
    }

    /// Asks for stream headers of `size` bytes (a `KSSTREAM_HEADER` and the
    /// extended header after it).
    ///
    /// IRQL: PASSIVE_LEVEL (pin Create).
    pub(crate) fn set_stream_header_size(&self, size: u32) {
        // SAFETY: a live pin; StreamHeaderSize is the minidriver's to set in
        // Create, under the control mutex.
        unsafe { (*self.raw.as_ptr()).StreamHeaderSize = size };
    }

    /// Replaces the pin's descriptor and its allocator framing with per-pin
    /// copies (`_KsEdit`; the statics are never written) and writes
    /// `framing` into the copy. Editing an already edited item only
    /// rewrites it.
    ///
    /// IRQL: PASSIVE_LEVEL, control mutex held (Create, `SetDataFormat`).
    ///
    /// # Errors
    /// `_KsEdit`'s status (low memory); the pin keeps its old framing.
    pub(crate) fn edit_allocator_framing(
        &self,
        framing: KSALLOCATOR_FRAMING_EX,
    ) -> Result<(), NTSTATUS> {
        let pin = self.raw.as_ptr();
        // SAFETY: a live pin (type invariant).
        let bag = unsafe { (*pin).Bag };
        // SAFETY: a live pin; only the field's address is taken.
        let descriptor_slot = unsafe { &raw mut (*pin).Descriptor }.cast::<PVOID>();
        // SAFETY: the slot of a live pin's descriptor pointer, under the
        // control mutex; `_KsEdit` replaces it with a bag-owned copy of the
        // whole descriptor (old and new size: the descriptor's).
        nt_result(unsafe { ks_edit::<KSPIN_DESCRIPTOR_EX>(bag, descriptor_slot) })?;
        // SAFETY: a live pin.
        let descriptor = unsafe { (*pin).Descriptor }.cast_mut();
        // SAFETY: the descriptor is now the pin's own copy; its framing slot
        // is edited the same way.
        let framing_slot = unsafe { &raw mut (*descriptor).AllocatorFraming }.cast::<PVOID>();
        // SAFETY: as for the descriptor.
        nt_result(unsafe { ks_edit::<KSALLOCATOR_FRAMING_EX>(bag, framing_slot) })?;
        // SAFETY: the descriptor is the pin's own copy.
        let copy = unsafe { (*descriptor).AllocatorFraming }.cast_mut();
        // SAFETY: the pin's own, bag-owned copy of the framing, of its size,
        // written only here under the control mutex.
        unsafe { copy.write(framing) };
        Ok(())
    }

    /// The locked leading edge, or `None` when no frame is queued.
    ///
    /// IRQL: PASSIVE_LEVEL (Process).
    pub(crate) fn leading_edge(&self) -> Option<LeadingEdge<'_>> {
        // SAFETY: a live pin, in Process (the only callback that asks).
        let edge = unsafe {
            KsPinGetLeadingEdgeStreamPointer(
                self.raw.as_ptr(),
                KSSTREAM_POINTER_STATE::KSSTREAM_POINTER_STATE_LOCKED,
            )
        };
        // SAFETY: the locked leading edge of this pin, borrowed no longer
        // than `self` (this Process call).
        NonNull::new(edge).map(|edge| unsafe { LeadingEdge::from_locked(edge) })
    }

    /// A [`TimerWorker`] for `handler`, its work item on the pin's device.
    ///
    /// IRQL: PASSIVE_LEVEL.
    ///
    /// # Errors
    /// `STATUS_DEVICE_NOT_READY` without a device,
    /// `STATUS_INSUFFICIENT_RESOURCES` when the pool is exhausted.
    pub(crate) fn timer_worker<H: TimerHandler>(
        &self,
        handler: H,
    ) -> Result<TimerWorker<H>, NTSTATUS> {
        let device = self.device().ok_or(STATUS_DEVICE_NOT_READY)?;
        // SAFETY: a live device.
        let fdo = unsafe { (*device.as_ptr()).FunctionalDeviceObject };
        // SAFETY: the live FDO of the pin's device, which outlives the pin
        // and with it the worker (kept in the pin's context).
        unsafe { TimerWorker::try_new(fdo, handler) }.ok_or(STATUS_INSUFFICIENT_RESOURCES)
    }
}

/// The pin, for its context to keep: what the hardware does to the pin
/// outside its callbacks (restart processing, take the processing mutex,
/// fetch the clock).
///
/// Invariant: `raw` is a pin whose Create succeeded; the only handle made
/// for it is given to its Create, for its context, which the Close
/// trampoline frees before ks.sys frees the pin.
pub struct PinHandle(NonNull<KSPIN>);

// SAFETY: the KsPin* routines used through the handle may be called from
// any thread at their stated IRQLs; the pin outlives the handle.
unsafe impl Send for PinHandle {}
// SAFETY: as above.
unsafe impl Sync for PinHandle {}

impl PinHandle {
    /// Asks ks.sys to call Process again (asynchronously).
    ///
    /// IRQL: ≤ DISPATCH_LEVEL.
    pub(crate) fn attempt_processing(&self) {
        // SAFETY: a live pin (type invariant); allowed at <= DISPATCH_LEVEL.
        unsafe { KsPinAttemptProcessing(self.0.as_ptr(), 1) };
    }

    /// Takes the pin's processing mutex: Process does not run while the
    /// guard lives.
    ///
    /// IRQL: PASSIVE_LEVEL, outside Process (it would deadlock).
    pub(crate) fn processing_mutex(&self) -> ProcessingMutexGuard<'_> {
        // SAFETY: a live pin at PASSIVE_LEVEL; the caller is not Process.
        unsafe { KsPinAcquireProcessingMutex(self.0.as_ptr()) };
        ProcessingMutexGuard {
            pin: self,
            _not_send: PhantomData,
        }
    }

    /// The graph's master clock, when one is assigned.
    ///
    /// IRQL: PASSIVE_LEVEL.
    pub(crate) fn reference_clock(&self) -> Option<ReferenceClock> {
        let mut clock: PIKSREFERENCECLOCK = null_mut();
        // SAFETY: a live pin at PASSIVE_LEVEL; `clock` is a local out
        // pointer.
        let status = unsafe { KsPinGetReferenceClockInterface(self.0.as_ptr(), &raw mut clock) };
        if status < 0 {
            return None;
        }
        // SAFETY: on success the interface comes with a reference for us.
        unsafe { ReferenceClock::from_referenced(clock) }
    }
}

/// Holds a pin's processing mutex; releases it on drop.
pub struct ProcessingMutexGuard<'a> {
    pin: &'a PinHandle,
    /// Not `Send`: released by the thread that took it.
    _not_send: PhantomData<*const ()>,
}

impl Drop for ProcessingMutexGuard<'_> {
    /// IRQL: PASSIVE_LEVEL.
    fn drop(&mut self) {
        // SAFETY: this guard took the mutex of this live pin, on this thread.
        unsafe { KsPinReleaseProcessingMutex(self.pin.0.as_ptr()) };
    }
}

/// The WDK's `KsEdit` macro (an inline, not an export): `_KsEdit` of the
/// item `slot` points at to a same-sized, bag-owned copy, the pointer
/// updated in place.
///
/// IRQL: PASSIVE_LEVEL.
///
/// # Safety
/// `bag` is the object bag of a live object whose mutex the caller holds,
/// and `slot` is that object's pointer to a `T`.
unsafe fn ks_edit<T>(bag: KSOBJECT_BAG, slot: *mut PVOID) -> NTSTATUS {
    let size = u32::try_from(size_of::<T>()).unwrap_or(u32::MAX);
    // SAFETY: the caller's guarantee; old and new sizes are both `T`'s.
    unsafe { _KsEdit(bag, slot, size, size, POOL_TAG) }
}

/// The bytes of a client's format or range: `FormatSize` of them, or `None`
/// for a null pointer.
///
/// # Safety
/// `header` is null or points at a readable `KSDATAFORMAT` (possibly
/// unaligned) followed by the rest of its `FormatSize` bytes, all readable
/// and unchanging for `'a`: ks.sys checks `FormatSize` against the buffer
/// it captured before it hands a format or range to the pin.
const unsafe fn client_bytes<'a>(header: *const KSDATAFORMAT) -> Option<&'a [u8]> {
    if header.is_null() {
        return None;
    }
    // SAFETY: the caller guarantees a readable header; it may be unaligned
    // in a client's buffer, hence read_unaligned.
    let size = unsafe { header.cast::<u32>().read_unaligned() };
    // SAFETY: `FormatSize` readable bytes from `header` (the caller's
    // guarantee); a u8 slice has no alignment requirement; nothing writes
    // them while the request is being handled.
    Some(unsafe { core::slice::from_raw_parts(header.cast::<u8>(), size as usize) })
}

/// `AVStrMiniPinCreate`. IRQL: PASSIVE_LEVEL.
unsafe extern "C" fn create<C: PinDispatch>(pin: PKSPIN, _irp: PIRP) -> NTSTATUS {
    // SAFETY: AVStream passes a live pin of this driver, not yet created.
    let Some(ks_pin) = (unsafe { KsPin::from_raw(pin, false) }) else {
        return STATUS_INVALID_PARAMETER;
    };
    let handle = PinHandle(ks_pin.raw);
    match C::create(&ks_pin, handle) {
        Ok(context) => {
            // SAFETY: a live pin in Create, under the control mutex;
            // Context is the minidriver's from here on and owns the box
            // until the Close trampoline takes it back.
            unsafe { (*pin).Context = context.into_raw().cast() };
            STATUS_SUCCESS
        }
        Err(status) => status,
    }
}

/// `AVStrMiniPinClose`. IRQL: PASSIVE_LEVEL.
unsafe extern "C" fn close<C: PinDispatch>(pin: PKSPIN, _irp: PIRP) -> NTSTATUS {
    // SAFETY: a live, created pin; Close runs once, after every other
    // callback of the pin.
    let Some(ks_pin) = (unsafe { KsPin::from_raw(pin, true) }) else {
        return STATUS_SUCCESS;
    };
    // SAFETY: a live pin.
    let raw = unsafe { (*pin).Context }.cast::<C>();
    // SAFETY: the pointer the Create trampoline made with PoolBox::into_raw
    // (or null); no other callback of the pin runs again, so the box is
    // the only owner.
    let Some(context) = (unsafe { PoolBox::from_raw(raw) }) else {
        return STATUS_SUCCESS;
    };
    // SAFETY: a live pin; its context is owned by `context` now.
    unsafe { (*pin).Context = null_mut() };
    C::close(&ks_pin, context);
    STATUS_SUCCESS
}

/// `AVStrMiniPinProcess`. IRQL: PASSIVE_LEVEL.
unsafe extern "C" fn process<C: PinDispatch>(pin: PKSPIN) -> NTSTATUS {
    // SAFETY: Process only runs on a created pin.
    let Some(pin) = (unsafe { KsPin::from_raw(pin, true) }) else {
        return STATUS_INVALID_DEVICE_STATE;
    };
    C::process(&pin)
}

/// `AVStrMiniPinSetDataFormat`. IRQL: PASSIVE_LEVEL.
unsafe extern "C" fn set_data_format<C: PinDispatch>(
    pin: PKSPIN,
    old_format: PKSDATAFORMAT,
    _old_attributes: PKSMULTIPLE_ITEM,
    _range: *const KSDATARANGE,
    _attribute_range: *const KSATTRIBUTE_LIST,
) -> NTSTATUS {
    // Without an old format the call comes before Create.
    let created = !old_format.is_null();
    // SAFETY: a live pin, created exactly when it has an old format.
    let Some(pin) = (unsafe { KsPin::from_raw(pin, created) }) else {
        return STATUS_INVALID_PARAMETER;
    };
    C::set_data_format(&pin, created)
}

/// `AVStrMiniPinSetDeviceState`. IRQL: PASSIVE_LEVEL.
unsafe extern "C" fn set_device_state<C: PinDispatch>(
    pin: PKSPIN,
    to: KSSTATE::Type,
    from: KSSTATE::Type,
) -> NTSTATUS {
    // SAFETY: state changes reach only created pins.
    let Some(pin) = (unsafe { KsPin::from_raw(pin, true) }) else {
        return STATUS_INVALID_DEVICE_STATE;
    };
    C::set_device_state(&pin, to, from)
}

/// A pin's data intersection: a caller's range against one of ours.
pub trait DataIntersection {
    /// The data format the intersection writes.
    type Format: Copy;
    /// The format for `caller_range` (its bytes) within `our_range` (a
    /// pointer into the pin's static range table, compared, never read).
    ///
    /// IRQL: PASSIVE_LEVEL.
    ///
    /// # Errors
    /// `STATUS_NO_MATCH` or the core's status for a malformed range.
    fn intersect(
        caller_range: &[u8],
        our_range: *const KSDATARANGE,
    ) -> Result<Self::Format, NTSTATUS>;
}

/// The `IntersectHandler` of a pin descriptor for `I`.
#[expect(
    clippy::unnecessary_wraps,
    reason = "the descriptor's member is an optional callback"
)]
pub const fn intersect_handler<I: DataIntersection>() -> PFNKSINTERSECTHANDLEREX {
    Some(intersect::<I>)
}

/// `AVStrMiniIntersectHandlerEx`: `I`'s format written with the KS
/// size-query convention (`OutputBuffer`).
///
/// IRQL: PASSIVE_LEVEL.
unsafe extern "C" fn intersect<I: DataIntersection>(
    _filter: PVOID,
    _irp: PIRP,
    _pin: PKSP_PIN,
    caller_range: PKSDATARANGE,
    our_range: PKSDATARANGE,
    buffer_size: u32,
    data: PVOID,
    data_size: PULONG,
) -> NTSTATUS {
    // SAFETY: ks.sys checked the caller's range against the request buffer.
    let Some(caller) = (unsafe { client_bytes(caller_range) }) else {
        return STATUS_INVALID_PARAMETER;
    };
    let format = match I::intersect(caller, our_range) {
        Ok(format) => format,
        Err(status) => return status,
    };
    let needed = u32::try_from(size_of::<I::Format>()).unwrap_or(u32::MAX);
    let check = OutputBuffer::check(buffer_size, needed);
    if check == OutputBuffer::Fits && !data.is_null() {
        // SAFETY: `data` holds `buffer_size` >= `needed` writable bytes
        // (ks.sys's contract); possibly unaligned.
        unsafe { data.cast::<I::Format>().write_unaligned(format) };
    }
    if check != OutputBuffer::TooSmall && !data_size.is_null() {
        // SAFETY: ks.sys passes a valid out pointer.
        unsafe { *data_size = needed };
    }
    check.ntstatus()
}

/// A read-only pin property whose value is a fixed-size structure (also
/// its request: the `KSPROPERTY` is the value's first member).
pub trait PropertyGet<C: PinContextType> {
    /// The property's value.
    type Value: Copy;
    /// Fills in `value` (which holds the request as the client sent it).
    ///
    /// IRQL: PASSIVE_LEVEL.
    fn get(context: &C, value: &mut Self::Value);
}

/// The `KSPROPERTY_ITEM` of a [`PropertyGet`]: its handler, and `MinProperty`
/// and `MinData` both the value's size (so ks.sys has checked both buffers
/// before the handler runs).
pub const fn property_get_handler<C: PinContextType, P: PropertyGet<C>>(
    id: u32,
) -> KSPROPERTY_ITEM {
    let size = size_of::<P::Value>();
    assert!(size <= u32::MAX as usize);
    let mut item: KSPROPERTY_ITEM = zeroed();
    item.PropertyId = id;
    item.__bindgen_anon_1.GetPropertyHandler = Some(get_property::<C, P>);
    #[expect(clippy::cast_possible_truncation, reason = "checked just above")]
    {
        item.MinProperty = size as u32;
        item.MinData = size as u32;
    }
    item
}

/// A property's get handler.
///
/// IRQL: PASSIVE_LEVEL. ks.sys has checked the buffers against the item's
/// `MinProperty` / `MinData` before calling.
unsafe extern "C" fn get_property<C: PinContextType, P: PropertyGet<C>>(
    irp: PIRP,
    _request: PKSIDENTIFIER,
    data: PVOID,
) -> NTSTATUS {
    if irp.is_null() || data.is_null() {
        return STATUS_INVALID_PARAMETER;
    }
    // SAFETY: a property IRP sent to a pin of this driver.
    let pin = unsafe { KsGetPinFromIrp(irp) };
    // SAFETY: properties reach only created pins, during the IRP.
    let Some(pin) = (unsafe { KsPin::from_raw(pin, true) }) else {
        return STATUS_INVALID_PARAMETER;
    };
    let Some(context) = pin.context::<C>() else {
        return STATUS_INVALID_DEVICE_STATE;
    };
    let out = data.cast::<P::Value>();
    // SAFETY: `data` holds at least MinData bytes, the value's size
    // (`property_get_handler` set it); possibly unaligned.
    let mut value = unsafe { out.read_unaligned() };
    P::get(context, &mut value);
    // SAFETY: as above.
    unsafe { out.write_unaligned(value) };
    // SAFETY: a live IRP of this request; Information is the handler's to
    // set (bytes returned).
    unsafe { (*irp).IoStatus.Information = size_of::<P::Value>() as u64 };
    STATUS_SUCCESS
}
