//! The capture pin: descriptor (data ranges, allocator framing, flags),
//! dispatch (Create, Close, `SetDataFormat`, `SetDeviceState`, Process), the
//! intersect handler and the dropped-frames property.
//!
//! IRQL: every pin dispatch routine and the intersect and property handlers
//! run at PASSIVE_LEVEL (the pin does not set
//! `KSPIN_FLAG_DISPATCH_LEVEL_PROCESSING`, so Process is PASSIVE too).
//! What the timer DPC and the delivery work item share with them is behind
//! the hardware's spin lock; which pin streams is decided under the
//! device's mutex.

use core::ptr::{null, null_mut};
use core::sync::atomic::Ordering;

use wdk_sys::{
    GUID, NTSTATUS, PIRP, PULONG, PVOID, STATUS_BUFFER_TOO_SMALL, STATUS_DEVICE_NOT_READY,
    STATUS_DEVICE_REMOVED, STATUS_INSUFFICIENT_RESOURCES, STATUS_INVALID_DEVICE_STATE,
    STATUS_INVALID_PARAMETER, STATUS_NO_MATCH, STATUS_PENDING, STATUS_SHARING_VIOLATION,
    STATUS_SUCCESS,
};

use super::allocator::ALLOCATOR_DISPATCH;
use super::bindings::{
    self, _KsEdit, KsGetDevice, KsPinGetLeadingEdgeStreamPointer, KsStreamPointerAdvance,
    KsStreamPointerAdvanceOffsets, KsStreamPointerSetStatusCode, KsStreamPointerUnlock,
    KSALLOCATOR_FRAMING_EX, KSATTRIBUTE_LIST, KSAUTOMATION_TABLE, KSDATARANGE, KSEVENT_ITEM,
    KSMETHOD_ITEM, KSOBJECT_BAG, KSPIN_COMMUNICATION, KSPIN_DATAFLOW, KSPIN_DESCRIPTOR_EX,
    KSPIN_DISPATCH, KSPIN_FLAG_PROCESS_IN_RUN_STATE_ONLY, KSPROPERTY_DROPPEDFRAMES_CURRENT_S,
    KSPROPERTY_ITEM, KSPROPERTY_SET, KSSTATE, KSSTREAM_HEADER, KSSTREAM_POINTER_STATE,
    KS_DATAFORMAT_VIDEOINFOHEADER, KS_FRAME_INFO, PKSDATAFORMAT, PKSDATARANGE, PKSIDENTIFIER,
    PKSMULTIPLE_ITEM, PKSPIN, PKSP_PIN,
};
use super::device::{DeviceContext, StreamingPin};
use super::driver_entry::KsTable;
use super::hardware::{surface_pitch, Hardware, Step, WorkItem};
use super::ks_format::{
    format_for, our_range, read_client_range, read_format, to_guid, ulong_size_of,
    KS_DATA_RANGE_POINTERS,
};
use super::nonpaged::{PoolBox, POOL_TAG};
use crate::portable::capture_engine::ClientBuffer;
use crate::portable::framing::{PinFraming, DEFAULT_PIN_FRAMES};
use crate::portable::guid::{PIN_CATEGORY_CAPTURE, PROPSETID_VIDCAP_DROPPEDFRAMES};
use crate::portable::pin_state::{format_change_allowed, transition, HardwareAction, KsState};
use crate::portable::video_format::{
    intersect, validate_format, FormatError, FrameLayout, OutputBuffer, VideoFormat,
    DATA_RANGE_COUNT,
};

/// Per-pin state, in `KSPIN.Context` from Create to Close.
///
/// Only shared references to it are ever made: the timer DPC, Process and
/// the property handler may use it at the same time as the state callbacks.
/// What changes lives behind the hardware's spin lock or in atomics.
pub(crate) struct PinContext {
    pub(crate) hardware: Hardware,
}

impl PinContext {
    /// The context of a created pin.
    ///
    /// # Safety
    /// `pin` is a live pin of this driver whose Create succeeded and whose
    /// Close has not run.
    ///
    /// IRQL: any (reads the pin object and its context, both nonpaged).
    pub(crate) unsafe fn of<'a>(pin: PKSPIN) -> Option<&'a PinContext> {
        // SAFETY: the caller's guarantee: Context is the PinContext Create set.
        unsafe { (*pin).Context.cast::<PinContext>().as_ref() }
    }

    /// The device context this pin streams from.
    ///
    /// IRQL: any.
    pub(crate) fn device(&self) -> Option<&DeviceContext> {
        self.hardware.device()
    }
}

// --- Descriptor -------------------------------------------------------------

const fn framing_ex(p: &PinFraming) -> KSALLOCATOR_FRAMING_EX {
    // SAFETY: integers and GUIDs; all-zero is valid.
    let mut f: KSALLOCATOR_FRAMING_EX = unsafe { core::mem::zeroed() };
    f.CountItems = 1;
    f.PinFlags = 0;
    f.OutputCompression.RatioNumerator = 1;
    f.OutputCompression.RatioDenominator = 1;
    f.OutputCompression.RatioConstantMargin = 0;
    f.PinWeight = 0;
    let item = &mut f.FramingItem[0];
    item.MemoryType = to_guid(p.memory_type);
    item.BusType = to_guid(p.bus_type);
    item.Flags = p.flags;
    item.Frames = p.frames;
    bindings::set_framing_item_file_alignment(item, p.file_alignment);
    item.PhysicalRange.MinFrameSize = p.physical_range.min;
    item.PhysicalRange.MaxFrameSize = p.physical_range.max;
    item.PhysicalRange.Stepping = p.physical_range.stepping;
    item.FramingRange.Range.MinFrameSize = p.framing_range.min;
    item.FramingRange.Range.MaxFrameSize = p.framing_range.max;
    item.FramingRange.Range.Stepping = p.framing_range.stepping;
    f
}

// The KS framing is the core's, field by field (checked at compile time
// for the declared framing and for a connection's).
const _: () = {
    let declared = PinFraming::declared();
    let f = framing_ex(&declared);
    let item = &f.FramingItem[0];
    assert!(f.CountItems == 1 && f.OutputCompression.RatioNumerator == 1);
    assert!(f.OutputCompression.RatioDenominator == 1);
    assert!(item.MemoryType.Data1 == declared.memory_type.data1);
    assert!(item.Flags == declared.flags && item.Frames == declared.frames);
    assert!(bindings::framing_item_file_alignment(item) == declared.file_alignment);
    assert!(item.FramingRange.Range.MinFrameSize == declared.framing_range.min);
    assert!(item.FramingRange.Range.MaxFrameSize == declared.framing_range.max);
    assert!(item.PhysicalRange.MaxFrameSize == declared.physical_range.max);
};

/// The declared framing (edited per connection in Create, never in place).
static PIN_FRAMING: KSALLOCATOR_FRAMING_EX = framing_ex(&PinFraming::declared());

static PIN_CATEGORY: GUID = to_guid(PIN_CATEGORY_CAPTURE);

static PIN_DISPATCH: KsTable<KSPIN_DISPATCH> = KsTable(KSPIN_DISPATCH {
    Create: Some(pin_create),
    Close: Some(pin_close),
    Process: Some(pin_process),
    Reset: None,
    SetDataFormat: Some(pin_set_data_format),
    SetDeviceState: Some(pin_set_device_state),
    Connect: None,
    Disconnect: None,
    Clock: null(),
    Allocator: &raw const ALLOCATOR_DISPATCH,
});

static DROPPED_FRAMES_PROPERTIES: KsTable<[KSPROPERTY_ITEM; 1]> = KsTable([{
    // SAFETY: integers, pointers and option-of-fn; all-zero is valid (no
    // set handler, no values, no relations).
    let mut item: KSPROPERTY_ITEM = unsafe { core::mem::zeroed() };
    item.PropertyId =
        bindings::KSPROPERTY_VIDCAP_DROPPEDFRAMES::KSPROPERTY_DROPPEDFRAMES_CURRENT as u32;
    item.__bindgen_anon_1.GetPropertyHandler = Some(get_dropped_frames);
    item.MinProperty = ulong_size_of::<KSPROPERTY_DROPPEDFRAMES_CURRENT_S>();
    item.MinData = ulong_size_of::<KSPROPERTY_DROPPEDFRAMES_CURRENT_S>();
    item
}]);

static DROPPED_FRAMES_SET_ID: GUID = to_guid(PROPSETID_VIDCAP_DROPPEDFRAMES);

static PIN_PROPERTY_SETS: KsTable<[KSPROPERTY_SET; 1]> = KsTable([KSPROPERTY_SET {
    Set: &raw const DROPPED_FRAMES_SET_ID,
    PropertiesCount: 1,
    PropertyItem: DROPPED_FRAMES_PROPERTIES.0.as_ptr(),
    FastIoCount: 0,
    FastIoTable: null(),
}]);

static PIN_AUTOMATION: KsTable<KSAUTOMATION_TABLE> = KsTable(KSAUTOMATION_TABLE {
    PropertySetsCount: 1,
    PropertyItemSize: ulong_size_of::<KSPROPERTY_ITEM>(),
    PropertySets: PIN_PROPERTY_SETS.0.as_ptr(),
    MethodSetsCount: 0,
    MethodItemSize: ulong_size_of::<KSMETHOD_ITEM>(),
    MethodSets: null(),
    EventSetsCount: 0,
    EventItemSize: ulong_size_of::<KSEVENT_ITEM>(),
    EventSets: null(),
});

/// The capture pin's descriptor.
pub(crate) static CAPTURE_PIN_DESCRIPTOR: KsTable<KSPIN_DESCRIPTOR_EX> = KsTable({
    // SAFETY: pointers, integers and option-of-fn; all-zero is valid (no
    // interfaces and mediums: the standard streaming ones).
    let mut d: KSPIN_DESCRIPTOR_EX = unsafe { core::mem::zeroed() };
    d.Dispatch = &raw const PIN_DISPATCH.0;
    d.AutomationTable = &raw const PIN_AUTOMATION.0;
    #[allow(clippy::cast_possible_truncation)]
    {
        d.PinDescriptor.DataRangesCount = DATA_RANGE_COUNT as u32;
    }
    d.PinDescriptor.DataRanges = KS_DATA_RANGE_POINTERS.0.as_ptr();
    d.PinDescriptor.DataFlow = KSPIN_DATAFLOW::KSPIN_DATAFLOW_OUT;
    d.PinDescriptor.Communication = KSPIN_COMMUNICATION::KSPIN_COMMUNICATION_BOTH;
    d.PinDescriptor.Category = &raw const PIN_CATEGORY;
    d.PinDescriptor.Name = &raw const PIN_CATEGORY;
    // Process only in RUN; no GENERATE_MAPPINGS: the common-buffer design
    // writes through virtual addresses.
    d.Flags = KSPIN_FLAG_PROCESS_IN_RUN_STATE_ONLY;
    d.InstancesPossible = 1;
    d.InstancesNecessary = 1;
    d.AllocatorFraming = &raw const PIN_FRAMING;
    d.IntersectHandler = Some(intersect_handler);
    d
});

// --- Create / Close / format -----------------------------------------------

/// The connection format, validated by the core.
///
/// # Safety
/// `pin` is live and its `ConnectionFormat` set (true from `SetDataFormat` on).
///
/// IRQL: PASSIVE_LEVEL (pin Create and `SetDataFormat`).
unsafe fn connection_format(pin: PKSPIN) -> Result<VideoFormat, NTSTATUS> {
    // SAFETY: the caller's guarantee; ks.sys validated FormatSize against
    // the buffer it allocated for the format.
    let format = unsafe { (*pin).ConnectionFormat };
    if format.is_null() {
        return Err(STATUS_INVALID_PARAMETER);
    }
    // SAFETY: as above.
    let proposed = unsafe { read_format(format) }.map_err(FormatError::ntstatus)?;
    validate_format(&proposed).map_err(FormatError::ntstatus)
}

/// The frame layout and the per-pin framing of a connection format
/// (`STATUS_INVALID_PARAMETER` if the core cannot size it).
///
/// IRQL: any (arithmetic only).
fn layout_and_framing(format: &VideoFormat) -> Result<(FrameLayout, PinFraming), NTSTATUS> {
    match (
        format.layout(),
        PinFraming::for_format(format, DEFAULT_PIN_FRAMES),
    ) {
        (Ok(layout), Ok(framing)) => Ok((layout, framing)),
        _ => Err(STATUS_INVALID_PARAMETER),
    }
}

/// Replaces the pin's descriptor and framing with per-pin copies
/// (`_KsEdit`; the statics are never written) and writes the connection's
/// framing into the copy. Editing an already edited item is a no-op.
///
/// IRQL: PASSIVE_LEVEL, pin control mutex held (Create, `SetDataFormat`).
unsafe fn edit_framing(pin: PKSPIN, framing: &PinFraming) -> NTSTATUS {
    // SAFETY: live pin, PASSIVE, mutex held (caller). Each `ks_edit`
    // replaces the pointer it is given with a bag-owned copy of the item;
    // we then only write to the copy of the framing.
    unsafe {
        let status = ks_edit((*pin).Bag, &raw mut (*pin).Descriptor);
        if status < 0 {
            return status;
        }
        let descriptor = (*pin).Descriptor.cast_mut();
        let status = ks_edit((*pin).Bag, &raw mut (*descriptor).AllocatorFraming);
        if status < 0 {
            return status;
        }
        (*descriptor)
            .AllocatorFraming
            .cast_mut()
            .write(framing_ex(framing));
    }
    STATUS_SUCCESS
}

/// The WDK's `KsEdit` macro (an inline, not an export): `_KsEdit` of an
/// item to a same-sized, bag-owned copy, the pointer updated in place.
///
/// IRQL: PASSIVE_LEVEL.
///
/// # Safety
/// `bag` is the object bag of a live object whose mutex the caller holds,
/// and `item` points at that object's pointer to a `T`.
unsafe fn ks_edit<T>(bag: KSOBJECT_BAG, item: *mut *const T) -> NTSTATUS {
    let size = ulong_size_of::<T>();
    // SAFETY: the caller's guarantee; old and new sizes are both `T`'s.
    unsafe { _KsEdit(bag, item.cast::<PVOID>(), size, size, POOL_TAG) }
}

/// `AVStrMiniPinCreate`: the pin context (no frame memory: staging slots
/// come at STOP → ACQUIRE) and the per-pin framing.
///
/// IRQL: PASSIVE_LEVEL.
unsafe extern "C" fn pin_create(pin: PKSPIN, _irp: PIRP) -> NTSTATUS {
    // SAFETY: AVStream passes a live pin with its connection format set.
    let format = match unsafe { connection_format(pin) } {
        Ok(f) => f,
        Err(status) => return status,
    };
    // SAFETY: live pin of this driver.
    let Some(device) = (unsafe { DeviceContext::of_object(pin.cast()) }) else {
        return STATUS_DEVICE_NOT_READY;
    };
    let (layout, pin_framing) = match layout_and_framing(&format) {
        Ok(both) => both,
        Err(status) => return status,
    };
    // SAFETY: live pin; KsGetDevice returns its live device, whose FDO the
    // work item references while queued.
    let work_item = unsafe {
        let ks_device = KsGetDevice(pin.cast());
        if ks_device.is_null() {
            return STATUS_DEVICE_NOT_READY;
        }
        WorkItem::new((*ks_device).FunctionalDeviceObject)
    };
    let Some(work_item) = work_item else {
        return STATUS_INSUFFICIENT_RESOURCES;
    };
    let context = PinContext {
        hardware: Hardware::new(pin, device, work_item, format, layout),
    };
    let Some(context) = PoolBox::try_new(context) else {
        return STATUS_INSUFFICIENT_RESOURCES;
    };
    // SAFETY: live pin, PASSIVE, control mutex held during Create.
    let status = unsafe { edit_framing(pin, &pin_framing) };
    if status < 0 {
        return status; // `context` (and its work item) drops here
    }
    let raw = context.into_raw();
    // SAFETY: `raw` is the context's final address (owned by the pin until
    // Close); only shared references to it are made from here on.
    unsafe { (*raw).hardware.init() };
    // SAFETY: live pin; StreamHeaderSize and Context are the minidriver's.
    unsafe {
        (*pin).StreamHeaderSize =
            ulong_size_of::<KSSTREAM_HEADER>() + ulong_size_of::<KS_FRAME_INFO>();
        (*pin).Context = raw.cast();
    }
    STATUS_SUCCESS
}

/// `AVStrMiniPinClose`: stops the hardware if a stop was skipped (every
/// frame it held completes), gives the stream's memory and the device's
/// hardware claim back, and frees the context.
///
/// IRQL: PASSIVE_LEVEL.
unsafe extern "C" fn pin_close(pin: PKSPIN, _irp: PIRP) -> NTSTATUS {
    // SAFETY: Context is the pointer Create made with PoolBox::into_raw;
    // Close runs once, after every other pin callback.
    let Some(context) = (unsafe { PoolBox::from_raw((*pin).Context.cast::<PinContext>()) }) else {
        return STATUS_SUCCESS;
    };
    if let Some(device) = context.device() {
        let mut streaming = device.streaming.lock();
        context.hardware.halt();
        context.hardware.release();
        streaming.release(&raw const context.hardware);
    }
    // SAFETY: live pin; the context is gone with `context`.
    unsafe { (*pin).Context = null_mut() };
    STATUS_SUCCESS
}

/// `AVStrMiniPinSetDataFormat`: the core validates the format; before Create
/// (`old_format` NULL) that is all; on a connected pin the change is allowed
/// only in STOP and re-derives the framing.
///
/// IRQL: PASSIVE_LEVEL.
unsafe extern "C" fn pin_set_data_format(
    pin: PKSPIN,
    old_format: PKSDATAFORMAT,
    _old_attributes: PKSMULTIPLE_ITEM,
    _range: *const KSDATARANGE,
    _attribute_range: *const KSATTRIBUTE_LIST,
) -> NTSTATUS {
    // SAFETY: AVStream passes a live pin whose ConnectionFormat is the
    // format being proposed.
    let format = match unsafe { connection_format(pin) } {
        Ok(f) => f,
        Err(status) => return status,
    };
    if old_format.is_null() {
        return STATUS_SUCCESS; // Context still belongs to the filter here
    }
    // SAFETY: a pin with an old format has been created.
    let state = KsState::from_raw(unsafe { (*pin).DeviceState });
    if !state.is_some_and(format_change_allowed) {
        return STATUS_INVALID_DEVICE_STATE;
    }
    // SAFETY: a pin with an old format has been created; only a shared
    // reference is made.
    let Some(context) = (unsafe { PinContext::of(pin) }) else {
        return STATUS_INVALID_DEVICE_STATE;
    };
    let (layout, pin_framing) = match layout_and_framing(&format) {
        Ok(both) => both,
        Err(status) => return status,
    };
    // Everything that can refuse comes before the pin changes: the
    // hardware's precondition, then the framing edit.
    if !context.hardware.can_reformat() {
        return STATUS_INVALID_DEVICE_STATE;
    }
    // SAFETY: live pin, PASSIVE, control mutex held.
    let status = unsafe { edit_framing(pin, &pin_framing) };
    if status < 0 {
        return status;
    }
    if context.hardware.reformat(format, layout) {
        STATUS_SUCCESS
    } else {
        STATUS_INVALID_DEVICE_STATE
    }
}

/// `AVStrMiniPinSetDeviceState`: runs the core's transition actions on the
/// hardware, under the device mutex (one streaming pin per device, and
/// PnP's stop or surprise removal never overlaps a transition). Never
/// returns `STATUS_PENDING`.
///
/// IRQL: PASSIVE_LEVEL, filter control mutex held.
unsafe extern "C" fn pin_set_device_state(
    pin: PKSPIN,
    to: KSSTATE::Type,
    from: KSSTATE::Type,
) -> NTSTATUS {
    let (Some(to), Some(from)) = (KsState::from_raw(to), KsState::from_raw(from)) else {
        return STATUS_INVALID_PARAMETER;
    };
    // SAFETY: created pin; only a shared reference is made.
    let Some(context) = (unsafe { PinContext::of(pin) }) else {
        return STATUS_INVALID_DEVICE_STATE;
    };
    let Some(device) = context.device() else {
        return STATUS_DEVICE_NOT_READY;
    };
    let hardware = &context.hardware;
    let ours: *const Hardware = hardware;
    let mut streaming = device.streaming.lock();
    for action in transition(from, to).iter() {
        match action {
            HardwareAction::Acquire => {
                if device.removed.load(Ordering::Acquire) {
                    return STATUS_DEVICE_REMOVED;
                }
                if !streaming.0.is_null() && !core::ptr::eq(streaming.0, ours) {
                    return STATUS_SHARING_VIOLATION; // another pin streams
                }
                if let Err(status) = hardware.acquire() {
                    return status;
                }
                *streaming = StreamingPin(ours);
            }
            HardwareAction::Run => {
                if device.removed.load(Ordering::Acquire) {
                    return STATUS_DEVICE_REMOVED;
                }
                hardware.run();
            }
            HardwareAction::Pause => hardware.pause(),
            HardwareAction::StopAndFlush => hardware.halt(),
            HardwareAction::Release => {
                hardware.release();
                streaming.release(ours);
            }
        }
    }
    STATUS_SUCCESS
}

// --- Process ---------------------------------------------------------------

/// `AVStrMiniPinProcess`: hands every queued frame to the hardware, in
/// place when it is one of a live allocator's frames, else through a
/// staging slot; returns `STATUS_PENDING` when the hardware is full (the
/// delivery work item calls `KsPinAttemptProcessing` after the next
/// completion).
///
/// IRQL: PASSIVE_LEVEL.
unsafe extern "C" fn pin_process(pin: PKSPIN) -> NTSTATUS {
    // SAFETY: Process only runs on a created pin.
    let Some(context) = (unsafe { PinContext::of(pin) }) else {
        return STATUS_INVALID_DEVICE_STATE;
    };
    let hardware = &context.hardware;
    // SAFETY: live pin; a locked leading edge or NULL.
    let leading = unsafe {
        KsPinGetLeadingEdgeStreamPointer(pin, KSSTREAM_POINTER_STATE::KSSTREAM_POINTER_STATE_LOCKED)
    };
    if leading.is_null() {
        hardware.pend();
        return STATUS_PENDING;
    }
    let mut status;
    loop {
        // SAFETY: `leading` is locked: its header and offsets are valid.
        let (data, remaining, header) = unsafe {
            let offset = &(*leading).OffsetOut;
            (
                offset.__bindgen_anon_1.Data,
                offset.Remaining,
                (*leading).StreamHeader,
            )
        };
        if data.is_null() || remaining == 0 {
            // A zero-length frame: step over it (as avshws does); advancing
            // offsets by 0 bytes might not leave it.
            // SAFETY: locked leading edge.
            status = unsafe { KsStreamPointerAdvance(leading) };
        } else {
            let client = ClientBuffer {
                address: data as usize,
                extent: remaining,
                // SAFETY: the locked frame's header, sized by its `Size`.
                surface_pitch: unsafe { surface_pitch(header) },
            };
            // SAFETY: `leading` is the locked leading edge, `client` its frame.
            match unsafe { hardware.route(leading, client) } {
                Step::Pend => {
                    status = STATUS_PENDING;
                    break;
                }
                Step::Skip => {
                    // The frame cannot hold an image: it completes empty, with
                    // an error status the client sees, instead of coming back
                    // as a success with no data.
                    // SAFETY: locked leading edge; its header is writable;
                    // advancing by the whole (non-zero) remainder moves on.
                    status = unsafe {
                        (*header).DataUsed = 0;
                        // Best effort: the frame completes empty either way.
                        let _ = KsStreamPointerSetStatusCode(leading, STATUS_BUFFER_TOO_SMALL);
                        KsStreamPointerAdvanceOffsets(leading, 0, remaining, 0)
                    };
                }
                Step::Cloned(target, advance) => {
                    // The leading edge leaves the frame first (by exactly the
                    // bytes delivery will report as DataUsed, ejecting the
                    // frame), so a DataUsed computed by ks.sys agrees with
                    // ours; only then may the hardware complete the clone.
                    // SAFETY: locked leading edge; `advance` <= `remaining`
                    // (route_frame checked the image fits, CopyPlan keeps a
                    // pitched copy inside the extent); the clone keeps the
                    // frame alive.
                    status = unsafe { KsStreamPointerAdvanceOffsets(leading, 0, advance, 1) };
                    hardware.submit_or_abandon(target);
                }
            }
        }
        if status < 0 {
            break;
        }
    }
    if status >= 0 {
        // SAFETY: the leading edge is still locked (no failed advance).
        unsafe { KsStreamPointerUnlock(leading, 0) };
    } else if status == STATUS_DEVICE_NOT_READY {
        status = STATUS_SUCCESS; // ran off the end of the queue
    } else {
        hardware.pend();
    }
    status
}

// --- Intersection and properties ---------------------------------------------

/// `AVStrMiniIntersectHandlerEx`: our range against the caller's, by the
/// core's rules; writes a `KS_DATAFORMAT_VIDEOINFOHEADER`.
///
/// IRQL: PASSIVE_LEVEL.
unsafe extern "C" fn intersect_handler(
    _filter: PVOID,
    _irp: PIRP,
    _pin: PKSP_PIN,
    caller_range: PKSDATARANGE,
    our_range_ptr: PKSDATARANGE,
    buffer_size: u32,
    data: PVOID,
    data_size: PULONG,
) -> NTSTATUS {
    let Some(ours) = our_range(our_range_ptr) else {
        return STATUS_NO_MATCH;
    };
    // SAFETY: ks.sys checked the caller's range against the request buffer.
    let client = match unsafe { read_client_range(caller_range) } {
        Ok(c) => c,
        Err(e) => return e.ntstatus(),
    };
    let format = match intersect(&client, &ours) {
        Ok(f) => f,
        Err(e) => return e.ntstatus(),
    };
    let Some(result) = format_for(&format) else {
        return STATUS_NO_MATCH;
    };
    let needed = ulong_size_of::<KS_DATAFORMAT_VIDEOINFOHEADER>();
    let check = OutputBuffer::check(buffer_size, needed);
    if check == OutputBuffer::Fits {
        // SAFETY: `data` holds `buffer_size` >= `needed` writable bytes
        // (ks.sys's contract); possibly unaligned.
        unsafe {
            data.cast::<KS_DATAFORMAT_VIDEOINFOHEADER>()
                .write_unaligned(result);
        };
    }
    if check != OutputBuffer::TooSmall && !data_size.is_null() {
        // SAFETY: ks.sys passes a valid out pointer.
        unsafe { *data_size = needed };
    }
    check.ntstatus()
}

/// `KSPROPERTY_DROPPEDFRAMES_CURRENT` get handler: frames due, dropped, and
/// the average frame size of the stream.
///
/// IRQL: PASSIVE_LEVEL. ks.sys has checked the buffers against the item's
/// `MinProperty` / `MinData` before calling.
unsafe extern "C" fn get_dropped_frames(
    irp: PIRP,
    _request: PKSIDENTIFIER,
    data: PVOID,
) -> NTSTATUS {
    // SAFETY: a property IRP on a pin of this driver.
    let pin = unsafe { bindings::KsGetPinFromIrp(irp) };
    if pin.is_null() || data.is_null() {
        return STATUS_INVALID_PARAMETER;
    }
    // SAFETY: properties reach only created pins.
    let Some(context) = (unsafe { PinContext::of(pin) }) else {
        return STATUS_INVALID_DEVICE_STATE;
    };
    let stats = context.hardware.stats();
    let average = context.hardware.image_size();
    // SAFETY: `data` holds at least MinData bytes: a whole
    // KSPROPERTY_DROPPEDFRAMES_CURRENT_S; possibly unaligned.
    unsafe {
        let out = data.cast::<KSPROPERTY_DROPPEDFRAMES_CURRENT_S>();
        let mut value = out.read_unaligned();
        value.PictureNumber = i64::try_from(stats.picture_number()).unwrap_or(i64::MAX);
        value.DropCount = i64::try_from(stats.dropped).unwrap_or(i64::MAX);
        value.AverageFrameSize = average;
        out.write_unaligned(value);
        (*irp).IoStatus.Information =
            u64::from(ulong_size_of::<KSPROPERTY_DROPPEDFRAMES_CURRENT_S>());
    }
    STATUS_SUCCESS
}
