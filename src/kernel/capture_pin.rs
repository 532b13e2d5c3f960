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

use core::ptr::null;

use wdk_sys::{
    GUID, NTSTATUS, STATUS_BUFFER_TOO_SMALL, STATUS_DEVICE_NOT_READY, STATUS_DEVICE_REMOVED,
    STATUS_INVALID_DEVICE_STATE, STATUS_INVALID_PARAMETER, STATUS_NO_MATCH, STATUS_PENDING,
    STATUS_SUCCESS,
};

use super::allocator::ALLOCATOR_DISPATCH;
use super::bindings::{
    self, KSALLOCATOR_FRAMING_EX, KSAUTOMATION_TABLE, KSDATARANGE, KSEVENT_ITEM, KSMETHOD_ITEM,
    KSPIN_COMMUNICATION, KSPIN_DATAFLOW, KSPIN_DESCRIPTOR_EX, KSPIN_DISPATCH,
    KSPIN_FLAG_PROCESS_IN_RUN_STATE_ONLY, KSPROPERTY_DROPPEDFRAMES_CURRENT_S, KSPROPERTY_ITEM,
    KSPROPERTY_SET, KSSTATE, KSSTREAM_HEADER, KS_DATAFORMAT_VIDEOINFOHEADER, KS_FRAME_INFO,
};
use super::boundary::{
    intersect_handler, pin_dispatch, property_get_handler, zeroed, DataIntersection, DeviceRef,
    KsPin, KsTable, PinContextType, PinDispatch, PinHandle, PoolBox, PropertyGet,
};
use super::device_context::DeviceContext;
use super::hardware::{DeviceParts, Hardware, Step};
use super::ks_format::{
    connection_format, format_for, our_range, to_guid, ulong_size_of, KS_DATA_RANGE_POINTERS,
};
use crate::portable::framing::{PinFraming, DEFAULT_PIN_FRAMES};
use crate::portable::guid::{PIN_CATEGORY_CAPTURE, PROPSETID_VIDCAP_DROPPEDFRAMES};
use crate::portable::ks_buffers;
use crate::portable::pin_state::{format_change_allowed, transition, HardwareAction, KsState};
use crate::portable::video_format::{
    intersect, FormatError, FrameLayout, VideoFormat, DATA_RANGE_COUNT,
};

/// Per-pin state, in `KSPIN.Context` from Create to Close.
///
/// Only shared references to it are ever made: the timer DPC, Process and
/// the property handler may use it at the same time as the state callbacks.
/// What changes lives behind the hardware's spin lock or in atomics.
pub struct PinContext {
    hardware: Hardware,
    device: DeviceRef<DeviceContext>,
}

// SAFETY: `PinContext` is the only type the driver stores in
// `KSPIN.Context` (the Create trampoline installs what `create` returns).
unsafe impl PinContextType for PinContext {}

// --- Descriptor -------------------------------------------------------------

const fn framing_ex(p: &PinFraming) -> KSALLOCATOR_FRAMING_EX {
    let mut f: KSALLOCATOR_FRAMING_EX = zeroed();
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

static PIN_DISPATCH: KsTable<KSPIN_DISPATCH> =
    KsTable(pin_dispatch::<PinContext>(&ALLOCATOR_DISPATCH.0));

/// `KSPROPERTY_DROPPEDFRAMES_CURRENT`: frames due, dropped, and the average
/// frame size of the stream.
struct DroppedFrames;

impl PropertyGet<PinContext> for DroppedFrames {
    type Value = KSPROPERTY_DROPPEDFRAMES_CURRENT_S;

    fn get(context: &PinContext, value: &mut Self::Value) {
        let stats = context.hardware.stats();
        value.PictureNumber = i64::try_from(stats.picture_number()).unwrap_or(i64::MAX);
        value.DropCount = i64::try_from(stats.dropped).unwrap_or(i64::MAX);
        value.AverageFrameSize = context.hardware.image_size();
    }
}

static DROPPED_FRAMES_PROPERTIES: KsTable<[KSPROPERTY_ITEM; 1]> =
    KsTable([property_get_handler::<PinContext, DroppedFrames>(
        bindings::KSPROPERTY_VIDCAP_DROPPEDFRAMES::KSPROPERTY_DROPPEDFRAMES_CURRENT as u32,
    )]);

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
pub static CAPTURE_PIN_DESCRIPTOR: KsTable<KSPIN_DESCRIPTOR_EX> = KsTable({
    // No interfaces and mediums: the standard streaming ones.
    let mut d: KSPIN_DESCRIPTOR_EX = zeroed();
    d.Dispatch = &raw const PIN_DISPATCH.0;
    d.AutomationTable = &raw const PIN_AUTOMATION.0;
    #[expect(clippy::cast_possible_truncation, reason = "a handful of ranges")]
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
    d.IntersectHandler = intersect_handler::<VideoIntersection>();
    d
});

// --- Create / Close / format -----------------------------------------------

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

impl PinDispatch for PinContext {
    /// `AVStrMiniPinCreate`: the pin context (no frame memory: staging
    /// slots come at STOP → ACQUIRE) and the per-pin framing.
    fn create(pin: &KsPin<'_>, handle: PinHandle) -> Result<PoolBox<Self>, NTSTATUS> {
        let format = connection_format(pin)?;
        let device = pin
            .device_context::<DeviceContext>()
            .ok_or(STATUS_DEVICE_NOT_READY)?;
        let (layout, pin_framing) = layout_and_framing(&format)?;
        let parts = DeviceParts {
            dma: device.project(|d| &d.dma),
            allocators: device.project(|d| &d.allocators),
            streaming: device.project(|d| &d.streaming),
        };
        let hardware = Hardware::new(pin, handle, parts, format, layout)?;
        let context = PoolBox::try_new(Self { hardware, device })
            .ok_or(wdk_sys::STATUS_INSUFFICIENT_RESOURCES)?;
        pin.edit_allocator_framing(framing_ex(&pin_framing))?;
        pin.set_stream_header_size(
            ulong_size_of::<KSSTREAM_HEADER>() + ulong_size_of::<KS_FRAME_INFO>(),
        );
        Ok(context)
    }

    /// `AVStrMiniPinClose`: stops the hardware if a stop was skipped (every
    /// frame it held completes), gives the stream's memory and the device's
    /// hardware claim back; the context is freed on return.
    fn close(_pin: &KsPin<'_>, context: PoolBox<Self>) {
        let mut streaming = context.device.streaming.lock();
        context.hardware.halt();
        context.hardware.release(&mut streaming);
    }

    /// `AVStrMiniPinProcess`: hands every queued frame to the hardware, in
    /// place when it is one of a live allocator's frames, else through a
    /// staging slot; returns `STATUS_PENDING` when the hardware is full (the
    /// delivery work item calls `KsPinAttemptProcessing` after the next
    /// completion).
    fn process(pin: &KsPin<'_>) -> NTSTATUS {
        let Some(context) = pin.context::<Self>() else {
            return STATUS_INVALID_DEVICE_STATE;
        };
        let hardware = &context.hardware;
        let Some(mut leading) = pin.leading_edge() else {
            hardware.pend();
            return STATUS_PENDING;
        };
        let moved = loop {
            let Some(client) = leading.frame() else {
                // A zero-length frame: step over it (as avshws does);
                // advancing offsets by 0 bytes might not leave it.
                match leading.advance() {
                    Ok(next) => leading = next,
                    Err(status) => break Err(status),
                }
                continue;
            };
            let next = match hardware.route(&leading, client) {
                Step::Pend => break Ok(leading),
                // The frame cannot hold an image: it completes empty, with
                // an error status the client sees, instead of coming back
                // as a success with no data.
                Step::Skip => leading.complete_empty(STATUS_BUFFER_TOO_SMALL),
                Step::Cloned(target, advance) => {
                    // The leading edge leaves the frame first (by exactly
                    // the bytes delivery will report as DataUsed, ejecting
                    // the frame), so a DataUsed computed by ks.sys agrees
                    // with ours; only then may the hardware complete the
                    // clone, which keeps the frame alive meanwhile.
                    let next = leading.advance_out(advance, true);
                    hardware.submit_or_abandon(target);
                    next
                }
            };
            match next {
                Ok(next) => leading = next,
                Err(status) => break Err(status),
            }
        };
        match moved {
            // Still locked: unlocked as the guard drops.
            Ok(_locked) => STATUS_PENDING,
            // Ran off the end of the queue.
            Err(STATUS_DEVICE_NOT_READY) => STATUS_SUCCESS,
            Err(status) => {
                hardware.pend();
                status
            }
        }
    }

    /// `AVStrMiniPinSetDataFormat`: the core validates the format; before
    /// Create that is all; on a connected pin the change is allowed only in
    /// STOP and re-derives the framing.
    fn set_data_format(pin: &KsPin<'_>, created: bool) -> NTSTATUS {
        let format = match connection_format(pin) {
            Ok(f) => f,
            Err(status) => return status,
        };
        if !created {
            return STATUS_SUCCESS;
        }
        let state = KsState::from_raw(pin.device_state());
        if !state.is_some_and(format_change_allowed) {
            return STATUS_INVALID_DEVICE_STATE;
        }
        let Some(context) = pin.context::<Self>() else {
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
        if let Err(status) = pin.edit_allocator_framing(framing_ex(&pin_framing)) {
            return status;
        }
        if context.hardware.reformat(format, layout) {
            STATUS_SUCCESS
        } else {
            STATUS_INVALID_DEVICE_STATE
        }
    }

    /// `AVStrMiniPinSetDeviceState`: runs the core's transition actions on
    /// the hardware, under the device mutex (one streaming pin per device,
    /// and PnP's stop or surprise removal never overlaps a transition).
    fn set_device_state(pin: &KsPin<'_>, to: KSSTATE::Type, from: KSSTATE::Type) -> NTSTATUS {
        let (Some(to), Some(from)) = (KsState::from_raw(to), KsState::from_raw(from)) else {
            return STATUS_INVALID_PARAMETER;
        };
        let Some(context) = pin.context::<Self>() else {
            return STATUS_INVALID_DEVICE_STATE;
        };
        let device = &context.device;
        let hardware = &context.hardware;
        let mut streaming = device.streaming.lock();
        for action in transition(from, to).iter() {
            let step = match action {
                HardwareAction::Acquire | HardwareAction::Run if device.is_removed() => {
                    Err(STATUS_DEVICE_REMOVED)
                }
                HardwareAction::Acquire => hardware.acquire(&mut streaming),
                HardwareAction::Run => {
                    hardware.run();
                    Ok(())
                }
                HardwareAction::Pause => {
                    hardware.pause();
                    Ok(())
                }
                HardwareAction::StopAndFlush => {
                    hardware.halt();
                    Ok(())
                }
                HardwareAction::Release => {
                    hardware.release(&mut streaming);
                    Ok(())
                }
            };
            if let Err(status) = step {
                return status;
            }
        }
        STATUS_SUCCESS
    }
}

// --- Intersection ------------------------------------------------------------

/// The pin's data intersection: our range against the caller's, by the
/// core's rules, as a `KS_DATAFORMAT_VIDEOINFOHEADER`.
struct VideoIntersection;

impl DataIntersection for VideoIntersection {
    type Format = KS_DATAFORMAT_VIDEOINFOHEADER;

    fn intersect(caller_range: &[u8], our: *const KSDATARANGE) -> Result<Self::Format, NTSTATUS> {
        let ours = our_range(our).ok_or(STATUS_NO_MATCH)?;
        let client = ks_buffers::read_data_range(caller_range).map_err(FormatError::ntstatus)?;
        let format = intersect(&client, &ours).map_err(FormatError::ntstatus)?;
        format_for(&format).ok_or(STATUS_NO_MATCH)
    }
}
