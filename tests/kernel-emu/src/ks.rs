//! The ks.sys model, with AVStream's semantics: the device, filter and pin
//! objects with their object bags, the device mutex, the filter control
//! mutex and the pin's processing mutex, `_KsEdit`, the pin's frame queue
//! with its leading edge and clones, pin-centric processing, and the
//! reference clock.
//!
//! A frame completes when the leading edge has left it and its last clone
//! is deleted; then its header and data are read back into a
//! [`Completed`] record and (for frames the model allocated) its memory is
//! unmapped, so a late write by the driver faults.

use std::collections::{BTreeMap, VecDeque};

use crate::layout::{
    size, KsFrameInfo, KsPin, KsReferenceClockVtbl, KsStreamHeader, KsStreamPointer,
    KsStreamPointerOffset,
};
use crate::machine::{self, alloc, arg, call, irql, Kind, Mem, Uc, R};
use crate::rules::Rule;
use crate::{nt, off};

/// `STATUS_SUCCESS`.
pub const STATUS_SUCCESS: u64 = 0;
/// `STATUS_PENDING`.
pub const STATUS_PENDING: u64 = 0x103;
/// `STATUS_UNSUCCESSFUL`.
pub const STATUS_UNSUCCESSFUL: u64 = 0xC000_0001;
/// `STATUS_DEVICE_NOT_READY`.
pub const STATUS_DEVICE_NOT_READY: u64 = 0xC000_00A3;
/// `STATUS_INSUFFICIENT_RESOURCES`.
pub const STATUS_INSUFFICIENT_RESOURCES: u64 = 0xC000_009A;
/// `STATUS_CANCELLED`.
pub const STATUS_CANCELLED: u64 = 0xC000_0120;

/// `KSSTATE` values.
pub mod state {
    /// `KSSTATE_STOP`.
    pub const STOP: u32 = 0;
    /// `KSSTATE_ACQUIRE`.
    pub const ACQUIRE: u32 = 1;
    /// `KSSTATE_PAUSE`.
    pub const PAUSE: u32 = 2;
    /// `KSSTATE_RUN`.
    pub const RUN: u32 = 3;
}

/// Bytes of the model's stream headers: a `KSSTREAM_HEADER` followed by a
/// `KS_FRAME_INFO` (the pin asks for both with `StreamHeaderSize`).
pub const HEADER_WITH_FRAME_INFO: u64 = size::<KsStreamHeader>() + size::<KsFrameInfo>();

/// Who owns an object bag.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BagOwner {
    /// The device (its mutex guards the bag).
    Device,
    /// A filter or a pin (the filter control mutex guards the bag).
    FilterOrPin,
}

/// One item in an object bag.
#[derive(Clone, Debug)]
pub struct BagItem {
    /// The item.
    pub item: u64,
    /// The driver's free callback (0: KS frees it itself).
    pub free: u64,
    /// A copy made by `_KsEdit` (KS's memory): its size.
    pub ks_copy: Option<u64>,
}

/// An object bag.
#[derive(Clone, Debug)]
pub struct Bag {
    /// What guards it.
    pub owner: BagOwner,
    /// Its items, in the order they were added.
    pub items: Vec<BagItem>,
}

/// Where a queued frame's memory came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Origin {
    /// Model memory (a user-mode client's buffer).
    User,
    /// The driver's own allocator (`Allocate`).
    Allocator,
    /// A kernel peer's allocator (model memory the peer owns: returned to
    /// it, not freed, when the frame completes).
    Peer,
}

/// A frame in a pin's queue.
#[derive(Clone, Debug)]
pub struct Frame {
    /// Model id, in arrival order.
    pub id: u64,
    /// Its `KSSTREAM_HEADER`.
    pub header: u64,
    /// Its data.
    pub data: u64,
    /// `FrameExtent`.
    pub extent: u32,
    /// Live clones on it.
    pub clones: u32,
    /// The leading edge has left it.
    pub passed: bool,
    /// Status set with `KsStreamPointerSetStatusCode`.
    pub status: Option<u32>,
    /// Where its memory came from.
    pub origin: Origin,
}

/// `KS_FRAME_INFO` of a completed frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FrameInfo {
    /// `ExtendedHeaderSize`.
    pub extended_header_size: u32,
    /// `dwFrameFlags`.
    pub frame_flags: u32,
    /// `PictureNumber`.
    pub picture_number: i64,
    /// `DropCount`.
    pub drop_count: i64,
}

/// A completed frame, as the client sees it.
#[derive(Clone, Debug)]
pub struct Completed {
    /// Model id.
    pub id: u64,
    /// Where its memory came from.
    pub origin: Origin,
    /// Its data pointer.
    pub data_address: u64,
    /// `FrameExtent`.
    pub extent: u32,
    /// `DataUsed`.
    pub data_used: u32,
    /// `PresentationTime.Time`.
    pub presentation_time: i64,
    /// `PresentationTime.Numerator` / `.Denominator`.
    pub time_ratio: (u32, u32),
    /// `Duration`.
    pub duration: i64,
    /// `OptionsFlags`.
    pub options_flags: u32,
    /// The `KS_FRAME_INFO` after the header.
    pub frame_info: Option<FrameInfo>,
    /// The status the driver set, if any.
    pub status: Option<u32>,
    /// The first `DataUsed` bytes.
    pub data: Vec<u8>,
    /// Completed by the model's flush at STOP or Close, not by the driver.
    pub flushed: bool,
}

/// The leading edge of a pin's queue.
#[derive(Clone, Debug, Default)]
pub struct Leading {
    /// Its `KSSTREAM_POINTER`.
    pub address: u64,
    /// The frame it sits on.
    pub frame: Option<u64>,
    /// Locked.
    pub locked: bool,
    /// Bytes of the frame it has advanced past.
    pub consumed: u32,
}

/// A pin object.
#[derive(Clone, Debug, Default)]
pub struct Pin {
    /// The `KSPIN`.
    pub address: u64,
    /// Its filter.
    pub filter: u64,
    /// Its bag.
    pub bag: u64,
    /// `DeviceState`.
    pub state: u32,
    /// Frames not yet completed, in arrival order.
    pub frames: VecDeque<Frame>,
    /// The leading edge.
    pub leading: Leading,
    /// Processing requested (a trigger happened).
    pub attempt: bool,
    /// The thread holding the processing mutex.
    pub processing: Option<u32>,
    /// Completed frames, in completion order.
    pub completed: Vec<Completed>,
    /// Ids of every frame completed so far.
    pub completed_ids: std::collections::BTreeSet<u64>,
    /// Process calls and their statuses.
    pub process_results: Vec<u32>,
    /// Created (Create succeeded) and not closed.
    pub created: bool,
}

/// A clone the driver made.
#[derive(Clone, Debug)]
pub struct CloneRec {
    /// Its pin.
    pub pin: u64,
    /// Its frame.
    pub frame: u64,
}

/// The reference clock handed out by `KsPinGetReferenceClockInterface`.
#[derive(Clone, Debug, Default)]
pub struct Clock {
    /// The interface (0 until first asked for).
    pub interface: u64,
    /// References the driver holds.
    pub references: i64,
    /// `GetTime` calls.
    pub get_time_calls: u64,
}

/// The ks.sys model's state.
#[derive(Default)]
pub struct State {
    /// The driver object given to `DriverEntry`.
    pub driver_object: u64,
    /// The descriptor given to `KsInitializeDriver`.
    pub device_descriptor: Option<u64>,
    /// The `KSDEVICE`.
    pub device: u64,
    /// Its FDO.
    pub fdo: u64,
    /// Its PDO.
    pub pdo: u64,
    /// The device mutex: owner thread and recursion count.
    pub device_mutex: Option<(u32, u32)>,
    /// Filter descriptors registered with `KsCreateFilterFactory`, with
    /// their reference strings and flags.
    pub factories: Vec<(u64, String, u32)>,
    /// Filters: `KSFILTER` → its bag.
    pub filters: BTreeMap<u64, u64>,
    /// Pins by `KSPIN`.
    pub pins: BTreeMap<u64, Pin>,
    /// Object bags by handle.
    pub bags: BTreeMap<u64, Bag>,
    /// IRPs → the object they are for.
    pub irps: BTreeMap<u64, u64>,
    /// Live clones.
    pub clones: BTreeMap<u64, CloneRec>,
    /// Every clone ever deleted (a second delete is told apart from a
    /// foreign pointer).
    pub deleted_clones: Vec<u64>,
    /// Thread holding the filter control mutex.
    pub control_mutex: Option<u32>,
    /// The reference clock.
    pub clock: Clock,
    /// The KS allocator objects (see `allocator_object`).
    pub allocator_objects: crate::allocator_object::Objects,
    next_bag: u64,
    next_frame: u64,
}

/// `KSPIN_FLAG_PROCESS_IN_RUN_STATE_ONLY`.
pub const PROCESS_IN_RUN_STATE_ONLY: u32 = 0x0001_0000;

/// Master-clock time is virtual time plus this (so a driver that confuses
/// the two timelines is seen).
pub const CLOCK_OFFSET: i64 = 7_777_777;

/// The hooks of ks.sys's exports, by name.
#[must_use]
pub fn exports() -> Vec<(&'static str, machine::HookFn)> {
    vec![
        ("KsAcquireDevice", ks_acquire_device),
        ("KsAddItemToObjectBag", ks_add_item_to_object_bag),
        ("KsCreateFilterFactory", ks_create_filter_factory),
        ("KsGetDevice", ks_get_device),
        ("KsGetPinFromIrp", ks_get_pin_from_irp),
        ("KsInitializeDriver", ks_initialize_driver),
        (
            "KsPinAcquireProcessingMutex",
            ks_pin_acquire_processing_mutex,
        ),
        ("KsPinAttemptProcessing", ks_pin_attempt_processing),
        (
            "KsPinGetLeadingEdgeStreamPointer",
            ks_pin_get_leading_edge_stream_pointer,
        ),
        (
            "KsPinGetReferenceClockInterface",
            ks_pin_get_reference_clock_interface,
        ),
        (
            "KsPinReleaseProcessingMutex",
            ks_pin_release_processing_mutex,
        ),
        ("KsReleaseDevice", ks_release_device),
        ("KsStreamPointerAdvance", ks_stream_pointer_advance),
        (
            "KsStreamPointerAdvanceOffsets",
            ks_stream_pointer_advance_offsets,
        ),
        ("KsStreamPointerClone", ks_stream_pointer_clone),
        ("KsStreamPointerDelete", ks_stream_pointer_delete),
        (
            "KsStreamPointerSetStatusCode",
            ks_stream_pointer_set_status_code,
        ),
        ("KsStreamPointerUnlock", ks_stream_pointer_unlock),
        ("_KsEdit", ks_edit),
    ]
}

/// A new object bag (an unmapped handle: the driver never dereferences
/// one).
pub fn new_bag(uc: &mut Uc, owner: BagOwner) -> u64 {
    let ks = &mut uc.get_data_mut().ks;
    ks.next_bag += 1;
    let handle = 0x0000_0000_5000_0000 + ks.next_bag * 0x100;
    ks.bags.insert(
        handle,
        Bag {
            owner,
            items: Vec::new(),
        },
    );
    handle
}

/// Empties and deletes a bag: the driver's free callbacks run (PASSIVE,
/// newest item first), KS's own copies are freed.
pub fn free_bag(uc: &mut Uc, bag: u64) -> R<()> {
    let Some(b) = uc.get_data_mut().ks.bags.remove(&bag) else {
        return Err(Rule::BadArgument.broke(format!("bag {bag:#x} freed twice")));
    };
    for item in b.items.iter().rev() {
        if item.ks_copy.is_some() {
            machine::free(uc, item.item)?;
        } else if item.free != 0 {
            call(uc, item.free, &[item.item], irql::PASSIVE, 1)?;
        } else {
            return Err(Rule::BadArgument.broke(format!(
                "bag item {:#x} has no free callback: KS would ExFreePool it, but it is not KS's",
                item.item
            )));
        }
    }
    Ok(())
}

fn check_bag_guard(uc: &Uc, bag: u64) -> R<()> {
    let k = uc.get_data();
    let b =
        k.ks.bags
            .get(&bag)
            .ok_or_else(|| Rule::BadArgument.broke(format!("{bag:#x} is not an object bag")))?;
    let held = match b.owner {
        BagOwner::Device => k.ks.device_mutex.is_some_and(|(t, _)| t == k.thread),
        BagOwner::FilterOrPin => k.ks.control_mutex == Some(k.thread),
    };
    if held {
        Ok(())
    } else {
        Err(Rule::Mutex.broke(format!(
            "object bag {bag:#x} edited without holding its object's mutex ({:?})",
            b.owner
        )))
    }
}

// --- Driver, device, filter factory ------------------------------------------------

fn ks_initialize_driver(uc: &mut Uc) -> R<u64> {
    let (driver, _registry, descriptor) = (arg(uc, 0)?, arg(uc, 1)?, arg(uc, 2)?);
    if driver != uc.get_data().ks.driver_object {
        return Err(Rule::BadArgument.broke("KsInitializeDriver with another driver object"));
    }
    if machine::inject(uc, "KsInitializeDriver") {
        return Ok(STATUS_INSUFFICIENT_RESOURCES);
    }
    uc.get_data_mut().ks.device_descriptor = (descriptor != 0).then_some(descriptor);
    Ok(STATUS_SUCCESS)
}

fn ks_create_filter_factory(uc: &mut Uc) -> R<u64> {
    let fdo = arg(uc, 0)?;
    let descriptor = arg(uc, 1)?;
    let reference = arg(uc, 2)?;
    let flags = arg(uc, 4)? as u32;
    let factory_out = arg(uc, 7)?;
    if fdo != uc.get_data().ks.fdo {
        return Err(Rule::BadArgument.broke(format!(
            "KsCreateFilterFactory on {fdo:#x}, not the device's FDO"
        )));
    }
    if descriptor == 0 {
        return Err(Rule::BadArgument.broke("KsCreateFilterFactory without a descriptor"));
    }
    if machine::inject(uc, "KsCreateFilterFactory") {
        return Ok(STATUS_INSUFFICIENT_RESOURCES);
    }
    let reference = if reference == 0 {
        String::new()
    } else {
        uc.wstr(reference)?
    };
    uc.get_data_mut()
        .ks
        .factories
        .push((descriptor, reference, flags));
    if factory_out != 0 {
        uc.w64(factory_out, 0x0000_0000_5fff_0000)?;
    }
    Ok(STATUS_SUCCESS)
}

fn ks_acquire_device(uc: &mut Uc) -> R<u64> {
    let device = arg(uc, 0)?;
    if device != uc.get_data().ks.device {
        return Err(
            Rule::BadArgument.broke(format!("KsAcquireDevice of {device:#x}, not the device"))
        );
    }
    let thread = uc.get_data().thread;
    let m = &mut uc.get_data_mut().ks.device_mutex;
    *m = match *m {
        None => Some((thread, 1)),
        Some((t, n)) if t == thread => Some((t, n + 1)),
        Some((t, _)) => {
            return Err(Rule::Deadlock.broke(format!(
                "KsAcquireDevice by thread {thread} while thread {t} holds the device mutex: a deadlock in this model"
            )))
        }
    };
    Ok(0)
}

fn ks_release_device(uc: &mut Uc) -> R<u64> {
    let device = arg(uc, 0)?;
    if device != uc.get_data().ks.device {
        return Err(
            Rule::BadArgument.broke(format!("KsReleaseDevice of {device:#x}, not the device"))
        );
    }
    let thread = uc.get_data().thread;
    let m = &mut uc.get_data_mut().ks.device_mutex;
    *m = match *m {
        Some((t, n)) if t == thread => (n > 1).then_some((t, n - 1)),
        _ => return Err(Rule::Mutex.broke("KsReleaseDevice without holding the device mutex")),
    };
    Ok(0)
}

fn ks_get_device(uc: &mut Uc) -> R<u64> {
    let object = arg(uc, 0)?;
    let ks = &uc.get_data().ks;
    if object == ks.device || ks.filters.contains_key(&object) || ks.pins.contains_key(&object) {
        Ok(ks.device)
    } else {
        Err(Rule::BadArgument.broke(format!(
            "KsGetDevice of {object:#x}, which is not a live KS object"
        )))
    }
}

fn ks_get_pin_from_irp(uc: &mut Uc) -> R<u64> {
    let irp = arg(uc, 0)?;
    let ks = &uc.get_data().ks;
    let object = ks.irps.get(&irp).copied().ok_or_else(|| {
        format!("KsGetPinFromIrp of {irp:#x}, which is not an IRP the model sent")
    })?;
    Ok(if ks.pins.contains_key(&object) {
        object
    } else {
        0
    })
}

fn ks_add_item_to_object_bag(uc: &mut Uc) -> R<u64> {
    let (bag, item, free) = (arg(uc, 0)?, arg(uc, 1)?, arg(uc, 2)?);
    check_bag_guard(uc, bag)?;
    if item == 0 {
        return Err(Rule::BadArgument.broke("KsAddItemToObjectBag of NULL"));
    }
    let b = uc.get_data_mut().ks.bags.get_mut(&bag).unwrap();
    if b.items.iter().any(|i| i.item == item) {
        return Err(Rule::BadArgument.broke(format!("item {item:#x} added to bag {bag:#x} twice")));
    }
    if machine::inject(uc, "KsAddItemToObjectBag") {
        return Ok(STATUS_INSUFFICIENT_RESOURCES);
    }
    let b = uc.get_data_mut().ks.bags.get_mut(&bag).unwrap();
    b.items.push(BagItem {
        item,
        free,
        ks_copy: None,
    });
    Ok(STATUS_SUCCESS)
}

fn ks_edit(uc: &mut Uc) -> R<u64> {
    let (bag, pointer, new_size, old_size, _tag) = (
        arg(uc, 0)?,
        arg(uc, 1)?,
        arg(uc, 2)? as u32,
        arg(uc, 3)? as u32,
        arg(uc, 4)?,
    );
    check_bag_guard(uc, bag)?;
    let old = uc.r64(pointer)?;
    let existing = uc
        .get_data()
        .ks
        .bags
        .get(&bag)
        .and_then(|b| b.items.iter().find(|i| i.item == old).cloned());
    if let Some(item) = &existing {
        if item.ks_copy.is_some_and(|size| u64::from(new_size) <= size) {
            return Ok(STATUS_SUCCESS); // already an editable copy
        }
    }
    if machine::inject(uc, "_KsEdit") {
        return Ok(STATUS_INSUFFICIENT_RESOURCES);
    }
    let copy = alloc(uc, u64::from(new_size), 16, Kind::Model("_KsEdit copy"))?;
    if old != 0 {
        let bytes = uc.rbytes(old, old_size.min(new_size) as usize)?;
        uc.wbytes(copy, &bytes)?;
    }
    uc.w64(pointer, copy)?;
    let b = uc.get_data_mut().ks.bags.get_mut(&bag).unwrap();
    b.items.push(BagItem {
        item: copy,
        free: 0,
        ks_copy: Some(u64::from(new_size)),
    });
    if let Some(item) = existing {
        b.items.retain(|i| i.item != item.item);
        if item.ks_copy.is_some() {
            machine::free(uc, item.item)?;
        }
    }
    Ok(STATUS_SUCCESS)
}

// --- Clock --------------------------------------------------------------------------

fn ks_pin_get_reference_clock_interface(uc: &mut Uc) -> R<u64> {
    let (pin, out) = (arg(uc, 0)?, arg(uc, 1)?);
    pin_of(uc, pin)?;
    if !uc.get_data().config.clock {
        return Ok(STATUS_UNSUCCESSFUL);
    }
    if machine::inject(uc, "KsPinGetReferenceClockInterface") {
        return Ok(STATUS_UNSUCCESSFUL);
    }
    if uc.get_data().ks.clock.interface == 0 {
        let vtbl = alloc(
            uc,
            crate::layout::size::<KsReferenceClockVtbl>(),
            16,
            Kind::Model("IKsReferenceClockVtbl"),
        )?;
        let entries = [
            (
                off!(KsReferenceClockVtbl, query_interface),
                "IKsReferenceClock.QueryInterface",
                clock_unexpected as machine::HookFn,
            ),
            (
                off!(KsReferenceClockVtbl, add_ref),
                "IKsReferenceClock.AddRef",
                clock_add_ref,
            ),
            (
                off!(KsReferenceClockVtbl, release),
                "IKsReferenceClock.Release",
                clock_release,
            ),
            (
                off!(KsReferenceClockVtbl, get_time),
                "IKsReferenceClock.GetTime",
                clock_get_time,
            ),
            (
                off!(KsReferenceClockVtbl, get_physical_time),
                "IKsReferenceClock.GetPhysicalTime",
                clock_get_time,
            ),
            (
                off!(KsReferenceClockVtbl, get_correlated_time),
                "IKsReferenceClock.GetCorrelatedTime",
                clock_unexpected,
            ),
            (
                off!(KsReferenceClockVtbl, get_correlated_physical_time),
                "IKsReferenceClock.GetCorrelatedPhysicalTime",
                clock_unexpected,
            ),
            (
                off!(KsReferenceClockVtbl, get_resolution),
                "IKsReferenceClock.GetResolution",
                clock_unexpected,
            ),
            (
                off!(KsReferenceClockVtbl, get_state),
                "IKsReferenceClock.GetState",
                clock_unexpected,
            ),
        ];
        for (offset, name, f) in entries {
            let stub = machine::add_hook(uc, name, f);
            uc.w64(vtbl + offset, stub)?;
        }
        let interface = alloc(uc, 8, 16, Kind::Model("IKsReferenceClock"))?;
        uc.w64(interface, vtbl)?;
        uc.get_data_mut().ks.clock.interface = interface;
    }
    let interface = uc.get_data().ks.clock.interface;
    uc.w64(out, interface)?;
    uc.get_data_mut().ks.clock.references += 1;
    Ok(STATUS_SUCCESS)
}

fn check_clock(uc: &Uc) -> R<()> {
    let this = arg(uc, 0)?;
    let clock = &uc.get_data().ks.clock;
    if this != clock.interface || clock.interface == 0 {
        return Err(
            Rule::BadArgument.broke(format!("clock method called on {this:#x}, not the clock"))
        );
    }
    if clock.references <= 0 {
        return Err(Rule::ClockReference.broke("clock used after its last reference was released"));
    }
    Ok(())
}

fn clock_unexpected(_uc: &mut Uc) -> R<u64> {
    Err(Rule::BadArgument.broke("a clock method the model does not provide"))
}

fn clock_add_ref(uc: &mut Uc) -> R<u64> {
    check_clock(uc)?;
    let c = &mut uc.get_data_mut().ks.clock;
    c.references += 1;
    Ok(c.references as u64)
}

fn clock_release(uc: &mut Uc) -> R<u64> {
    check_clock(uc)?;
    let c = &mut uc.get_data_mut().ks.clock;
    c.references -= 1;
    Ok(c.references as u64)
}

fn clock_get_time(uc: &mut Uc) -> R<u64> {
    check_clock(uc)?;
    let k = uc.get_data_mut();
    k.ks.clock.get_time_calls += 1;
    Ok((k.now + CLOCK_OFFSET) as u64)
}

// --- Processing ------------------------------------------------------------------------

fn pin_of<'u>(uc: &'u Uc<'_>, pin: u64) -> R<&'u Pin> {
    uc.get_data()
        .ks
        .pins
        .get(&pin)
        .ok_or_else(|| Rule::BadArgument.broke(format!("{pin:#x} is not a live pin")))
}

fn pin_mut<'u>(uc: &'u mut Uc<'_>, pin: u64) -> R<&'u mut Pin> {
    uc.get_data_mut()
        .ks
        .pins
        .get_mut(&pin)
        .ok_or_else(|| Rule::BadArgument.broke(format!("{pin:#x} is not a live pin")))
}

fn ks_pin_attempt_processing(uc: &mut Uc) -> R<u64> {
    let pin = arg(uc, 0)?;
    pin_mut(uc, pin)?.attempt = true;
    Ok(0)
}

fn ks_pin_acquire_processing_mutex(uc: &mut Uc) -> R<u64> {
    let pin = arg(uc, 0)?;
    let thread = uc.get_data().thread;
    loop {
        let p = pin_mut(uc, pin)?;
        match p.processing {
            None => {
                p.processing = Some(thread);
                return Ok(0);
            }
            Some(t) if t == thread => return Err(Rule::Deadlock.broke(
                "KsPinAcquireProcessingMutex by its owner (inside Process, or twice): a deadlock",
            )),
            Some(_) => {
                if !nt::run_one(uc)? {
                    return Err(Rule::Deadlock
                        .broke("KsPinAcquireProcessingMutex: the owner can never release it"));
                }
            }
        }
    }
}

fn ks_pin_release_processing_mutex(uc: &mut Uc) -> R<u64> {
    let pin = arg(uc, 0)?;
    let thread = uc.get_data().thread;
    let p = pin_mut(uc, pin)?;
    if p.processing != Some(thread) {
        return Err(Rule::Mutex.broke("KsPinReleaseProcessingMutex without holding it"));
    }
    p.processing = None;
    Ok(0)
}

/// Runs Process on one pin that has a trigger pending, has reached its
/// minimum processing state and whose processing mutex is free. Returns
/// whether it ran.
pub fn run_processing(uc: &mut Uc) -> R<bool> {
    let ready = uc
        .get_data()
        .ks
        .pins
        .values()
        .filter(|p| p.created && p.attempt && p.processing.is_none())
        .filter(|p| p.state == state::RUN || p.state == state::PAUSE)
        .map(|p| (p.address, p.state))
        .collect::<Vec<_>>();
    let mut chosen = None;
    for (pin, pin_state) in ready {
        // The minimum processing state is PAUSE, or RUN with
        // KSPIN_FLAG_PROCESS_IN_RUN_STATE_ONLY (read from the descriptor).
        let descriptor = uc.r64(pin + off!(KsPin, descriptor))?;
        let flags = uc.r32(descriptor + off!(crate::layout::KsPinDescriptorEx, flags))?;
        if pin_state == state::RUN || flags & PROCESS_IN_RUN_STATE_ONLY == 0 {
            chosen = Some(pin);
            break;
        }
    }
    let ready = chosen;
    let Some(pin) = ready else {
        return Ok(false);
    };
    let process = dispatch_routine(uc, pin, off!(crate::layout::KsPinDispatch, process))?;
    let thread = uc.get_data_mut().new_thread();
    let before = {
        let p = pin_mut(uc, pin)?;
        p.attempt = false;
        p.processing = Some(thread);
        (p.leading.frame, p.leading.consumed, p.completed.len())
    };
    let status = crate::cost::measure(uc, crate::cost::Cost::Process, |uc| {
        call(uc, process, &[pin], irql::PASSIVE, thread)
    })? as u32;
    let p = pin_mut(uc, pin)?;
    p.processing = None;
    p.process_results.push(status);
    if p.leading.locked {
        p.leading.locked = false; // AVStream unlocks what Process left locked
    }
    let after = (p.leading.frame, p.leading.consumed, p.completed.len());
    if u64::from(status) == STATUS_SUCCESS && p.leading.frame.is_some() {
        if after == before {
            return Err(Rule::ProcessNoProgress.broke("Process returned STATUS_SUCCESS with a frame at the leading edge that it did not move: AVStream would call it again forever"));
        }
        p.attempt = true;
    }
    Ok(true)
}

/// Pins that wait for processing nothing will ever restart: in RUN, a
/// frame at the leading edge, the last Process returned `STATUS_PENDING`,
/// no trigger pending, and nothing left in the system that could call
/// `KsPinAttemptProcessing` (no timer queued, no DPC, no work item). On
/// Windows such a pin streams no more frames until the graph stops it.
#[must_use]
pub fn stalled_pins(uc: &Uc) -> Vec<String> {
    let k = uc.get_data();
    let idle = k.nt.dpc_queue.is_empty()
        && k.nt.work_queue.is_empty()
        && k.nt.timers.values().all(|t| t.due.is_none());
    if !idle {
        return Vec::new();
    }
    k.ks.pins
        .values()
        .filter(|p| p.created && p.state == state::RUN && p.leading.frame.is_some())
        .filter(|p| !p.attempt && p.processing.is_none())
        .filter(|p| p.process_results.last().map(|s| u64::from(*s)) == Some(STATUS_PENDING))
        .map(|p| {
            Rule::ProcessStalled.broke(format!(
                "pin {:#x}: Process returned STATUS_PENDING with {} frame(s) queued, and no timer, DPC or work item is left to restart it",
                p.address,
                p.frames.len()
            ))
        })
        .collect()
}

/// A routine of the pin's dispatch table, read from its (possibly edited)
/// descriptor.
pub fn dispatch_routine(uc: &Uc, pin: u64, offset: u64) -> R<u64> {
    let descriptor = uc.r64(pin + off!(KsPin, descriptor))?;
    let dispatch = uc.r64(descriptor)?;
    uc.r64(dispatch + offset)
}

// --- Frames and stream pointers ----------------------------------------------------------

/// Adds a frame to the back of a pin's queue (`pitch`: the client's
/// `KS_FRAME_INFO.lSurfacePitch`, 0 for none). A frame arriving while
/// nothing is at the leading edge triggers processing.
pub fn queue_frame(
    uc: &mut Uc,
    pin: u64,
    data: u64,
    extent: u32,
    origin: Origin,
    pitch: i32,
) -> R<u64> {
    let header = alloc(uc, HEADER_WITH_FRAME_INFO, 16, Kind::Model("stream header"))?;
    let header_size = uc
        .r32(pin + off!(KsPin, stream_header_size))?
        .max(size::<KsStreamHeader>() as u32);
    if u64::from(header_size) > HEADER_WITH_FRAME_INFO {
        return Err(Rule::BadArgument.broke(format!(
            "StreamHeaderSize {header_size} is more than the model provides"
        )));
    }
    uc.w32(header + off!(KsStreamHeader, size), header_size)?;
    uc.w32(header + off!(KsStreamHeader, frame_extent), extent)?;
    uc.w64(header + off!(KsStreamHeader, data), data)?;
    if u64::from(header_size) >= HEADER_WITH_FRAME_INFO {
        let info = header + size::<KsStreamHeader>();
        uc.w32(info + off!(KsFrameInfo, reserved1), pitch as u32)?;
    }
    let k = uc.get_data_mut();
    k.ks.next_frame += 1;
    let id = k.ks.next_frame;
    let p =
        k.ks.pins
            .get_mut(&pin)
            .ok_or_else(|| Rule::BadArgument.broke(format!("{pin:#x} is not a live pin")))?;
    p.frames.push_back(Frame {
        id,
        header,
        data,
        extent,
        clones: 0,
        passed: false,
        status: None,
        origin,
    });
    if p.leading.frame.is_none() {
        p.leading.frame = Some(id);
        p.leading.consumed = 0;
        p.attempt = true;
        sync_leading(uc, pin)?;
    }
    Ok(id)
}

fn frame(p: &Pin, id: u64) -> R<&Frame> {
    p.frames.iter().find(|f| f.id == id).ok_or_else(|| {
        if p.completed_ids.contains(&id) {
            Rule::FrameCompletedTwice.broke(format!("frame {id} is used after it completed"))
        } else {
            Rule::BadArgument.broke(format!("frame {id} is not in the queue"))
        }
    })
}

/// Completes frame `id` of `pin` now (what AVStream does when the leading
/// edge has left it and its last clone is gone, or when it cancels it).
/// A frame completes once: a second completion is a rule violation.
pub fn complete_frame(uc: &mut Uc, pin: u64, id: u64, flushed: bool) -> R<()> {
    if pin_of(uc, pin)?.completed_ids.contains(&id) {
        return Err(Rule::FrameCompletedTwice.broke(format!("frame {id} completed twice")));
    }
    let f = frame(pin_of(uc, pin)?, id)?.clone();
    complete(uc, pin, &f, flushed)
}

/// Writes the leading edge's `KSSTREAM_POINTER` from the model's state.
fn sync_leading(uc: &mut Uc, pin: u64) -> R<()> {
    let p = pin_of(uc, pin)?;
    let sp = p.leading.address;
    let (header, data, count, remaining) = match p.leading.frame {
        Some(id) => {
            let f = frame(p, id)?;
            (
                f.header,
                f.data + u64::from(p.leading.consumed),
                f.extent,
                f.extent - p.leading.consumed,
            )
        }
        None => (0, 0, 0, 0),
    };
    uc.w64(sp + off!(KsStreamPointer, context), 0)?;
    uc.w64(sp + off!(KsStreamPointer, pin), pin)?;
    uc.w64(sp + off!(KsStreamPointer, stream_header), header)?;
    uc.w64(
        sp + off!(KsStreamPointer, offset),
        sp + off!(KsStreamPointer, offset_out),
    )?;
    let out = sp + off!(KsStreamPointer, offset_out);
    uc.w64(out + off!(KsStreamPointerOffset, data), data)?;
    uc.w32(out + off!(KsStreamPointerOffset, count), count)?;
    uc.w32(out + off!(KsStreamPointerOffset, remaining), remaining)?;
    Ok(())
}

/// Moves the leading edge off its frame onto the next one (keeping its
/// lock state); the frame it left may complete. Returns whether it landed
/// on a frame.
fn leave_frame(uc: &mut Uc, pin: u64) -> R<bool> {
    let p = pin_mut(uc, pin)?;
    let Some(current) = p.leading.frame else {
        return Ok(false);
    };
    let index = p
        .frames
        .iter()
        .position(|f| f.id == current)
        .ok_or(Rule::BadArgument.broke("the leading edge's frame left the queue"))?;
    p.frames[index].passed = true;
    let next = p.frames.get(index + 1).map(|f| f.id);
    p.leading.frame = next;
    p.leading.consumed = 0;
    if next.is_none() {
        p.leading.locked = false;
    }
    sync_leading(uc, pin)?;
    try_complete(uc, pin, current)?;
    Ok(next.is_some())
}

/// Completes a frame if the leading edge has left it and no clone holds it.
fn try_complete(uc: &mut Uc, pin: u64, id: u64) -> R<()> {
    let p = pin_of(uc, pin)?;
    let f = frame(p, id)?.clone();
    if !f.passed || f.clones > 0 {
        return Ok(());
    }
    complete(uc, pin, &f, false)
}

fn complete(uc: &mut Uc, pin: u64, f: &Frame, flushed: bool) -> R<()> {
    let h = f.header;
    let header_size = uc.r32(h + off!(KsStreamHeader, size))?;
    let data_used = uc.r32(h + off!(KsStreamHeader, data_used))?;
    if data_used > f.extent {
        return Err(Rule::FrameOverfilled.broke(format!(
            "frame completed with DataUsed {data_used} beyond its FrameExtent {}",
            f.extent
        )));
    }
    let frame_info = if u64::from(header_size) >= HEADER_WITH_FRAME_INFO {
        let i = h + size::<KsStreamHeader>();
        Some(FrameInfo {
            extended_header_size: uc.r32(i + off!(KsFrameInfo, extended_header_size))?,
            frame_flags: uc.r32(i + off!(KsFrameInfo, frame_flags))?,
            picture_number: uc.ri64(i + off!(KsFrameInfo, picture_number))?,
            drop_count: uc.ri64(i + off!(KsFrameInfo, drop_count))?,
        })
    } else {
        None
    };
    let record = Completed {
        id: f.id,
        origin: f.origin,
        data_address: f.data,
        extent: f.extent,
        data_used,
        presentation_time: uc.ri64(h + off!(KsStreamHeader, presentation_time.time))?,
        time_ratio: (
            uc.r32(h + off!(KsStreamHeader, presentation_time.numerator))?,
            uc.r32(h + off!(KsStreamHeader, presentation_time.denominator))?,
        ),
        duration: uc.ri64(h + off!(KsStreamHeader, duration))?,
        options_flags: uc.r32(h + off!(KsStreamHeader, options_flags))?,
        frame_info,
        status: f.status,
        data: uc.rbytes(f.data, data_used as usize)?,
        flushed,
    };
    machine::free(uc, h)?;
    if f.origin == Origin::User {
        machine::free(uc, f.data)?;
    }
    let p = pin_mut(uc, pin)?;
    if !p.completed_ids.insert(f.id) {
        return Err(Rule::FrameCompletedTwice.broke(format!("frame {} completed twice", f.id)));
    }
    p.frames.retain(|x| x.id != f.id);
    p.completed.push(record);
    Ok(())
}

/// Completes every frame still queued (STOP, Close): AVStream cancels
/// them. A frame a clone still holds would keep the transition waiting
/// forever: that is a failure.
pub fn flush_queue(uc: &mut Uc, pin: u64) -> R<()> {
    let frames: Vec<Frame> = pin_of(uc, pin)?.frames.iter().cloned().collect();
    if let Some(f) = frames.iter().find(|f| f.clones > 0) {
        return Err(Rule::CloneLeak.broke(format!(
            "frame {} still has {} clone(s) when AVStream flushes the queue: the stop would never complete",
            f.id, f.clones
        )));
    }
    for f in &frames {
        complete(uc, pin, f, true)?;
    }
    let p = pin_mut(uc, pin)?;
    p.leading.frame = None;
    p.leading.locked = false;
    p.leading.consumed = 0;
    sync_leading(uc, pin)
}

/// Which stream pointer `sp` is: the leading edge of a pin, or a clone.
enum Pointer {
    Leading(u64),
    Clone(CloneRec),
}

fn pointer(uc: &Uc, sp: u64) -> R<Pointer> {
    let ks = &uc.get_data().ks;
    if let Some(p) = ks.pins.values().find(|p| p.leading.address == sp) {
        return Ok(Pointer::Leading(p.address));
    }
    if let Some(c) = ks.clones.get(&sp) {
        return Ok(Pointer::Clone(c.clone()));
    }
    if ks.deleted_clones.contains(&sp) {
        return Err(Rule::CloneUseAfterDelete
            .broke(format!("stream pointer {sp:#x} used after it was deleted")));
    }
    Err(Rule::BadArgument.broke(format!("{sp:#x} is not a stream pointer")))
}

fn ks_pin_get_leading_edge_stream_pointer(uc: &mut Uc) -> R<u64> {
    let (pin, lock) = (arg(uc, 0)?, arg(uc, 1)? as u32);
    let p = pin_mut(uc, pin)?;
    if lock == 1 {
        if p.leading.frame.is_none() {
            return Ok(0);
        }
        p.leading.locked = true;
    } else {
        p.leading.locked = false;
    }
    let address = p.leading.address;
    sync_leading(uc, pin)?;
    Ok(address)
}

fn leading_locked(uc: &Uc, pin: u64, what: &str) -> R<()> {
    if pin_of(uc, pin)?.leading.locked {
        Ok(())
    } else {
        Err(Rule::LeadingEdgeUnlocked
            .broke(format!("{what} on the leading edge while it is unlocked")))
    }
}

fn ks_stream_pointer_advance_offsets(uc: &mut Uc) -> R<u64> {
    let (sp, in_used, out_used, eject) = (
        arg(uc, 0)?,
        arg(uc, 1)? as u32,
        arg(uc, 2)? as u32,
        arg(uc, 3)? as u8,
    );
    let Pointer::Leading(pin) = pointer(uc, sp)? else {
        return Err(Rule::BadArgument.broke(
            "KsStreamPointerAdvanceOffsets on a clone: not modelled (the driver never does it)",
        ));
    };
    leading_locked(uc, pin, "KsStreamPointerAdvanceOffsets")?;
    if in_used != 0 {
        return Err(Rule::BadArgument.broke("InUsed on an output pin"));
    }
    let p = pin_mut(uc, pin)?;
    let id = p
        .leading
        .frame
        .ok_or(Rule::BadArgument.broke("the leading edge has no frame"))?;
    let extent = frame(p, id)?.extent;
    let remaining = extent - p.leading.consumed;
    if out_used > remaining {
        return Err(Rule::FrameOverfilled.broke(format!(
            "advanced by {out_used} bytes with {remaining} remaining in the frame"
        )));
    }
    p.leading.consumed += out_used;
    if p.leading.consumed == extent || eject != 0 {
        return Ok(if leave_frame(uc, pin)? {
            STATUS_SUCCESS
        } else {
            STATUS_DEVICE_NOT_READY
        });
    }
    sync_leading(uc, pin)?;
    Ok(STATUS_SUCCESS)
}

fn ks_stream_pointer_advance(uc: &mut Uc) -> R<u64> {
    let sp = arg(uc, 0)?;
    let Pointer::Leading(pin) = pointer(uc, sp)? else {
        return Err(Rule::BadArgument
            .broke("KsStreamPointerAdvance on a clone: not modelled (the driver never does it)"));
    };
    if pin_of(uc, pin)?.leading.frame.is_none() {
        return Ok(STATUS_DEVICE_NOT_READY);
    }
    Ok(if leave_frame(uc, pin)? {
        STATUS_SUCCESS
    } else {
        STATUS_DEVICE_NOT_READY
    })
}

fn ks_stream_pointer_unlock(uc: &mut Uc) -> R<u64> {
    let (sp, eject) = (arg(uc, 0)?, arg(uc, 1)? as u8);
    match pointer(uc, sp)? {
        Pointer::Leading(pin) => {
            if !pin_of(uc, pin)?.leading.locked {
                return Err(Rule::LeadingEdgeDoubleUnlock
                    .broke("KsStreamPointerUnlock of the leading edge, which is not locked"));
            }
            pin_mut(uc, pin)?.leading.locked = false;
            if eject != 0 {
                leave_frame(uc, pin)?; // keeps the (now unlocked) state
            }
            Ok(0)
        }
        Pointer::Clone(_) => Err(Rule::BadArgument
            .broke("KsStreamPointerUnlock on a clone: not modelled (the driver never does it)")),
    }
}

fn ks_stream_pointer_clone(uc: &mut Uc) -> R<u64> {
    let (sp, cancel, context_size, out) = (arg(uc, 0)?, arg(uc, 1)?, arg(uc, 2)?, arg(uc, 3)?);
    let Pointer::Leading(pin) = pointer(uc, sp)? else {
        return Err(Rule::BadArgument
            .broke("KsStreamPointerClone of a clone: not modelled (the driver never does it)"));
    };
    if cancel != 0 {
        return Err(Rule::BadArgument
            .broke("clone with a cancel callback: not modelled (the driver passes none)"));
    }
    let id = pin_of(uc, pin)?
        .leading
        .frame
        .ok_or(Rule::BadArgument.broke("KsStreamPointerClone of a leading edge with no frame"))?;
    if machine::inject(uc, "KsStreamPointerClone") {
        return Ok(STATUS_INSUFFICIENT_RESOURCES);
    }
    let clone = alloc(
        uc,
        64 + context_size,
        16,
        Kind::Model("stream pointer clone"),
    )?;
    let bytes = uc.rbytes(sp, 64)?;
    uc.wbytes(clone, &bytes)?;
    uc.w64(
        clone + off!(KsStreamPointer, context),
        if context_size > 0 { clone + 64 } else { 0 },
    )?;
    uc.w64(
        clone + off!(KsStreamPointer, offset),
        clone + off!(KsStreamPointer, offset_out),
    )?;
    let ks = &mut uc.get_data_mut().ks;
    ks.clones.insert(clone, CloneRec { pin, frame: id });
    let p = ks.pins.get_mut(&pin).unwrap();
    p.frames.iter_mut().find(|f| f.id == id).unwrap().clones += 1;
    uc.w64(out, clone)?;
    Ok(STATUS_SUCCESS)
}

fn ks_stream_pointer_delete(uc: &mut Uc) -> R<u64> {
    let sp = arg(uc, 0)?;
    if uc.get_data().ks.deleted_clones.contains(&sp) && !uc.get_data().ks.clones.contains_key(&sp) {
        return Err(Rule::CloneDoubleDelete.broke(format!(
            "KsStreamPointerDelete of {sp:#x}, a clone already deleted"
        )));
    }
    let c = match pointer(uc, sp)? {
        Pointer::Clone(c) => c,
        Pointer::Leading(_) => {
            return Err(Rule::BadArgument.broke("KsStreamPointerDelete of the leading edge"))
        }
    };
    machine::free(uc, sp)?;
    let ks = &mut uc.get_data_mut().ks;
    ks.clones.remove(&sp);
    ks.deleted_clones.push(sp);
    let p = ks.pins.get_mut(&c.pin).unwrap();
    p.frames
        .iter_mut()
        .find(|f| f.id == c.frame)
        .ok_or(Rule::BadArgument.broke("a clone's frame left the queue"))?
        .clones -= 1;
    try_complete(uc, c.pin, c.frame)?;
    Ok(0)
}

fn ks_stream_pointer_set_status_code(uc: &mut Uc) -> R<u64> {
    let (sp, status) = (arg(uc, 0)?, arg(uc, 1)? as u32);
    let (pin, id) = match pointer(uc, sp)? {
        Pointer::Leading(pin) => (
            pin,
            pin_of(uc, pin)?
                .leading
                .frame
                .ok_or(Rule::BadArgument.broke("SetStatusCode on a leading edge with no frame"))?,
        ),
        Pointer::Clone(c) => (c.pin, c.frame),
    };
    let p = pin_mut(uc, pin)?;
    p.frames
        .iter_mut()
        .find(|f| f.id == id)
        .ok_or(Rule::BadArgument.broke("frame left the queue"))?
        .status = Some(status);
    Ok(STATUS_SUCCESS)
}
