//! The standard KS allocator object that AVStream wraps around a pin's
//! `KSALLOCATOR_DISPATCH` (brief §1.2, §3), modelled around avscap's four
//! callbacks and driven the ways a graph drives it.
//!
//! # What comes from the documents
//!
//! * Creation is an `IRP_MJ_CREATE` on the pin whose file name is the
//!   allocator create item `KSSTRING_Allocator` and whose create parameters
//!   are a legacy `KSALLOCATOR_FRAMING` (§3.1). KS validates the request
//!   (`KsValidateAllocatorCreateRequest`) before anything reaches the pin's
//!   `InitializeAllocator(Pin, Framing, &Context)`, whose failure fails the
//!   create with its status (§1.2). The framing pointer it receives points
//!   into the create request, which is gone once the create completes.
//! * The IRP interface `KSMETHODSETID_StreamAllocator` (§3.3a):
//!   `KSMETHOD_STREAMALLOCATOR_ALLOC` returns a frame, or `STATUS_PENDING`
//!   when the allocator already has its maximum number of frames out; the
//!   IRP completes when a frame is freed. `KSMETHOD_STREAMALLOCATOR_FREE`
//!   gives a frame back and may complete a pending ALLOC.
//! * The DISPATCH_LEVEL interface `KSPROPSETID_StreamAllocator` (§3.3b):
//!   `KSPROPERTY_STREAMALLOCATOR_FUNCTIONTABLE` hands out `AllocateFrame` /
//!   `FreeFrame`, callable at IRQL ≤ DISPATCH_LEVEL; `AllocateFrame` never
//!   waits; `FreeFrame` signals `KSEVENT_STREAMALLOCATOR_FREEFRAME` and
//!   completes pending ALLOC IRPs, from a work item when not at
//!   PASSIVE_LEVEL. `KSPROPERTY_STREAMALLOCATOR_STATUS` reports the framing
//!   and `AllocatedFrames`.
//! * Both interfaces compete for the same frames, serialised by one lock
//!   (the cancel spin lock in the documents). Every call of the pin's
//!   `Allocate` / `Free` happens under it, at DISPATCH_LEVEL, so the
//!   driver's routines are never entered twice at once for one object.
//! * `DeleteAllocator` runs once, when the object goes away; after it
//!   nothing is called with that context, and the function table is dead.
//!
//! # The model's stated choices (real ks.sys is not documented this far)
//!
//! * Create validation ([`validate_create_request`]): the create
//!   parameters must hold a whole `KSALLOCATOR_FRAMING`; `OptionsFlags` may
//!   only carry `COMPATIBLE | SYSTEM_MEMORY | FRAME_INTEGRITY |
//!   MUST_ALLOCATE` (the bits `ReactOS` accepts, brief §3.1); `FrameSize` 0 is
//!   refused (as `ReactOS` refuses it); `Frames` 0 is refused (the object
//!   needs a maximum to pend ALLOC requests against); `Reserved` must be 0
//!   (§2.1). Everything else (alignment mask, sizes against the format) is
//!   the pin's business in `InitializeAllocator`.
//! * The object enforces `Frames` itself: at the limit, ALLOC pends and
//!   `AllocateFrame` fails without calling the pin's `Allocate`. A NULL
//!   from `Allocate` below the limit is treated like the limit (ALLOC pends,
//!   `AllocateFrame` fails) and counted in [`AllocatorObject::null_below_limit`]
//!   so a test can insist it never happens.
//! * ALLOC requests are served first in, first out: a new ALLOC pends while
//!   older ones wait, even if a frame is free. `AllocateFrame` does not
//!   queue behind them (it never waits): a frame freed at DISPATCH_LEVEL is
//!   not reserved for the pending IRP, whoever asks first gets it.
//! * The free-frame event is signalled on every accepted free, through
//!   either interface (the documents name `FreeFrame`; a FREE IRP frees
//!   the same frame).
//! * Method and property requests are host values ([`KsIdentifierBytes`]):
//!   ks.sys serves them itself and the driver never sees them.
//! * `AllocateFrame` reports an empty allocator with
//!   `STATUS_INSUFFICIENT_RESOURCES` and `*Frame = NULL`.
//! * The object keeps the set of frames it handed out (that is how
//!   `AllocatedFrames` stays exact). A FREE of a pointer it did not hand out,
//!   or of one already given back, is refused before the pin sees it: the
//!   FREE IRP fails with `STATUS_INVALID_PARAMETER`, `FreeFrame` ignores
//!   it; both record the refusal (`[allocator.free-foreign]`,
//!   `[allocator.free-twice]`). Whether real KS checks this is not
//!   documented; the driver's own robustness against such frees is tested
//!   directly in `tests/allocator.rs`.
//! * Handles are file-object addresses. The object lives while its handle
//!   is open or a pin holds it (`KSPROPERTY_STREAM_ALLOCATOR` references the
//!   file object, §3.4); closing the handle cancels pending ALLOC IRPs
//!   (`STATUS_CANCELLED`), dropping the last reference calls
//!   `DeleteAllocator`, frames out or not.
//! * The completion work item is the object's own `IO_WORKITEM`, queued on
//!   the ntoskrnl model's work queue and run at PASSIVE_LEVEL on a thread
//!   of its own.
//!
//! The same object also serves a *peer's* allocator (a kernel peer that
//! allocates its own frames, [`Backend::Model`]): frames in model memory,
//! the same interfaces, so the graph feeds the pin the same way whichever
//! allocator it picked.
//!
//! Failures the model raises start with a rule name in brackets.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use avscap::portable::guid::Guid;

use crate::layout::{
    size, KsAllocatorDispatch, KsAllocatorFraming, KsPinDispatch, KsStreamAllocatorFunctionTable,
    KsStreamAllocatorStatus, IRP_IO_STATUS, IRP_IO_STATUS_INFORMATION, IRP_SIZE,
};
use crate::machine::{self, alloc, arg, call, irql, need_at_most, need_exactly, Kind, Mem, Uc, R};
use crate::nt::{self, Object};
use crate::oracle::guid_bytes;
use crate::session::{Driver, LegacyFraming};
use crate::{ks, off};

/// `KSSTRING_Allocator`: the allocator create item's name.
pub const KSSTRING_ALLOCATOR: &str = "{642F5D00-4791-11D0-A5D6-28DB04C10000}";
/// `KSMETHODSETID_StreamAllocator`.
pub const KSMETHODSETID_STREAM_ALLOCATOR: Guid = Guid::new(
    0xcf6e_4341,
    0xec87,
    0x11cf,
    [0xa1, 0x30, 0x00, 0x20, 0xaf, 0xd1, 0x56, 0xe4],
);
/// `KSPROPSETID_StreamAllocator`.
pub const KSPROPSETID_STREAM_ALLOCATOR: Guid = Guid::new(
    0xcf6e_4342,
    0xec87,
    0x11cf,
    [0xa1, 0x30, 0x00, 0x20, 0xaf, 0xd1, 0x56, 0xe4],
);
/// `KSEVENTSETID_StreamAllocator`.
pub const KSEVENTSETID_STREAM_ALLOCATOR: Guid = Guid::new(
    0x75d9_5571,
    0x073c,
    0x11d0,
    [0xa1, 0x61, 0x00, 0x20, 0xaf, 0xd1, 0x56, 0xe4],
);
/// `KSMETHOD_STREAMALLOCATOR_ALLOC`.
pub const KSMETHOD_STREAMALLOCATOR_ALLOC: u32 = 0;
/// `KSMETHOD_STREAMALLOCATOR_FREE`.
pub const KSMETHOD_STREAMALLOCATOR_FREE: u32 = 1;
/// `KSPROPERTY_STREAMALLOCATOR_FUNCTIONTABLE`.
pub const KSPROPERTY_STREAMALLOCATOR_FUNCTIONTABLE: u32 = 0;
/// `KSPROPERTY_STREAMALLOCATOR_STATUS`.
pub const KSPROPERTY_STREAMALLOCATOR_STATUS: u32 = 1;
/// `KSEVENT_STREAMALLOCATOR_FREEFRAME`.
pub const KSEVENT_STREAMALLOCATOR_FREEFRAME: u32 = 1;
/// `KSMETHOD_TYPE_SEND`.
pub const KSMETHOD_TYPE_SEND: u32 = 0x1;
/// `KSPROPERTY_TYPE_GET`.
pub const KSPROPERTY_TYPE_GET: u32 = 0x1;

/// `KSALLOCATOR_OPTIONF_COMPATIBLE | _SYSTEM_MEMORY` and the requirement
/// bits `FRAME_INTEGRITY | MUST_ALLOCATE`: what a create request may carry
/// in this model (the `ReactOS` rule, brief §3.1).
pub const CREATE_OPTION_BITS: u32 = 0x0000_000F;

/// `STATUS_SUCCESS`.
pub const STATUS_SUCCESS: u32 = 0;
/// `STATUS_PENDING`.
pub const STATUS_PENDING: u32 = 0x103;
/// `STATUS_INVALID_DEVICE_REQUEST`.
pub const STATUS_INVALID_DEVICE_REQUEST: u32 = 0xC000_0010;
/// `STATUS_INVALID_PARAMETER`.
pub const STATUS_INVALID_PARAMETER: u32 = 0xC000_000D;
/// `STATUS_BUFFER_TOO_SMALL`.
pub const STATUS_BUFFER_TOO_SMALL: u32 = 0xC000_0023;
/// `STATUS_OBJECT_NAME_NOT_FOUND`.
pub const STATUS_OBJECT_NAME_NOT_FOUND: u32 = 0xC000_0034;
/// `STATUS_INSUFFICIENT_RESOURCES`.
pub const STATUS_INSUFFICIENT_RESOURCES: u32 = 0xC000_009A;
/// `STATUS_CANCELLED`.
pub const STATUS_CANCELLED: u32 = 0xC000_0120;
/// `STATUS_NOT_FOUND`.
pub const STATUS_NOT_FOUND: u32 = 0xC000_0225;
/// `STATUS_INVALID_HANDLE`.
pub const STATUS_INVALID_HANDLE: u32 = 0xC000_0008;

/// Bytes the model gives an allocator's `FILE_OBJECT`.
const FILE_OBJECT_SIZE: u64 = 0xD8;

/// Who provides an object's frames.
#[derive(Clone, Debug)]
pub enum Backend {
    /// The pin's `KSALLOCATOR_DISPATCH` (avscap's allocator).
    Driver {
        /// The `KSALLOCATOR_DISPATCH`.
        dispatch: u64,
        /// The context `InitializeAllocator` returned.
        context: u64,
    },
    /// A peer's own allocator: frames of model memory, made at create.
    Model {
        /// Frames not handed out.
        free: VecDeque<u64>,
        /// Every frame it made.
        all: Vec<u64>,
    },
}

/// An ALLOC request waiting for a frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PendingAlloc {
    /// The IRP.
    pub irp: u64,
    /// Its data buffer (the frame pointer goes there).
    pub buffer: u64,
}

/// A method IRP's completion, in completion order.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Completion {
    /// The IRP.
    pub irp: u64,
    /// `IoStatus.Status`.
    pub status: u32,
    /// The frame it returned (0 if none).
    pub frame: u64,
}

/// One allocator object (the file object KS creates under the pin).
#[derive(Clone, Debug)]
pub struct AllocatorObject {
    /// Its `FILE_OBJECT` (also its handle in this model).
    pub file_object: u64,
    /// The pin it was created on (0 for a peer's allocator).
    pub pin: u64,
    /// Where frames come from.
    pub backend: Backend,
    /// The validated create framing.
    pub framing: LegacyFraming,
    /// Frames handed out and not given back, in hand-out order.
    pub out: Vec<u64>,
    /// Every frame ever handed out (tells a doubled free from a foreign one).
    pub ever: BTreeSet<u64>,
    /// ALLOC requests waiting, oldest first.
    pub pending: VecDeque<PendingAlloc>,
    /// Method IRPs that completed after pending, in order (taken by tests).
    pub completions: Vec<Completion>,
    /// Times the free-frame event was signalled.
    pub free_frame_signals: u64,
    /// The client's free-frame event (a notification `KEVENT`), if enabled.
    pub free_frame_event: Option<u64>,
    /// Frees refused before reaching the pin, with the rule.
    pub refusals: Vec<String>,
    /// The pin's `Allocate` calls.
    pub allocate_calls: u64,
    /// The pin's `Free` calls.
    pub free_calls: u64,
    /// `Allocate` returned NULL below the frame limit.
    pub null_below_limit: u64,
    /// `DeleteAllocator` calls (must end at exactly one).
    pub delete_calls: u64,
    /// Frames still out when the object was deleted.
    pub out_at_delete: usize,
    /// The handle is open.
    pub handle_open: bool,
    /// Pins holding it through `KSPROPERTY_STREAM_ALLOCATOR`.
    pub pin_references: u32,
    /// Deleted (`DeleteAllocator` ran); the function table is dead.
    pub deleted: bool,
    /// The object's completion work item.
    pub work_item: u64,
}

impl AllocatorObject {
    /// `KSSTREAMALLOCATOR_STATUS.AllocatedFrames`.
    #[must_use]
    pub fn allocated_frames(&self) -> u32 {
        self.out.len() as u32
    }
}

/// The stubs every object's function table and work item point at.
#[derive(Clone, Copy, Debug)]
pub struct Stubs {
    /// `AllocateFrame`.
    pub allocate_frame: u64,
    /// `FreeFrame`.
    pub free_frame: u64,
    /// The completion work item's routine.
    pub worker: u64,
}

/// The allocator objects of a machine (kept in the ks.sys model's state).
#[derive(Default)]
pub struct Objects {
    /// Objects by file object, deleted ones included.
    pub by_file_object: BTreeMap<u64, AllocatorObject>,
    /// The cancel spin lock (model memory, allocated on first use).
    pub cancel_lock: u64,
    /// The stubs (registered on first use).
    pub stubs: Option<Stubs>,
    /// Allocator create requests seen.
    pub create_requests: u64,
    /// `InitializeAllocator` calls.
    pub initialize_calls: u64,
    /// `KSPROPERTY_STREAM_ALLOCATOR` assignments: source pin → handle.
    pub assigned: BTreeMap<u64, u64>,
    /// Free request slots (see [`slot`]).
    slots: Vec<u64>,
    /// Data buffers of the `Driver` wrappers' ALLOC requests that pended
    /// (released when the request completes).
    wrapper_buffers: BTreeSet<u64>,
}

fn objects<'u>(uc: &'u Uc<'_>) -> &'u Objects {
    &uc.get_data().ks.allocator_objects
}

fn objects_mut<'u>(uc: &'u mut Uc<'_>) -> &'u mut Objects {
    &mut uc.get_data_mut().ks.allocator_objects
}

/// The live object behind `file_object`; a deleted or unknown one is a
/// model failure (a dead handle or function table used).
fn object<'u>(uc: &'u Uc<'_>, file_object: u64) -> R<&'u AllocatorObject> {
    match objects(uc).by_file_object.get(&file_object) {
        Some(o) if !o.deleted => Ok(o),
        Some(_) => Err(format!(
            "[allocator.closed] allocator {file_object:#x} used after it was deleted (its function table is dead)"
        )),
        None => Err(format!(
            "[allocator.unknown] {file_object:#x} is not an allocator object"
        )),
    }
}

fn object_mut<'u>(uc: &'u mut Uc<'_>, file_object: u64) -> R<&'u mut AllocatorObject> {
    object(uc, file_object)?;
    Ok(objects_mut(uc)
        .by_file_object
        .get_mut(&file_object)
        .unwrap())
}

/// Everything the allocator objects left behind (for `Driver::leaks`).
#[must_use]
pub fn leaks(k: &machine::Kernel) -> Vec<String> {
    let mut out = Vec::new();
    for o in k.ks.allocator_objects.by_file_object.values() {
        if !o.deleted {
            out.push(format!(
                "[allocator.leak] allocator object {:#x} never deleted (handle open: {}, pin references: {})",
                o.file_object, o.handle_open, o.pin_references
            ));
        } else if o.delete_calls != 1 {
            out.push(format!(
                "[allocator.delete-once] allocator object {:#x}: DeleteAllocator ran {} times",
                o.file_object, o.delete_calls
            ));
        }
    }
    out
}

// --- Create ---------------------------------------------------------------------

fn u32_at(bytes: &[u8], at: u64) -> u32 {
    u32::from_le_bytes(bytes[at as usize..at as usize + 4].try_into().unwrap())
}

/// `KsValidateAllocatorCreateRequest` as this model states it (see the
/// module documentation): the framing, or the status the create fails with.
///
/// # Errors
/// `STATUS_INVALID_PARAMETER` for a short buffer, unknown option bits,
/// `FrameSize` 0, `Frames` 0 or `Reserved` ≠ 0.
pub fn validate_create_request(params: &[u8]) -> Result<LegacyFraming, u32> {
    if (params.len() as u64) < size::<KsAllocatorFraming>() {
        return Err(STATUS_INVALID_PARAMETER);
    }
    let f = LegacyFraming {
        options_flags: u32_at(params, off!(KsAllocatorFraming, options_flags)),
        pool_type: u32_at(params, off!(KsAllocatorFraming, pool_type)),
        frames: u32_at(params, off!(KsAllocatorFraming, frames)),
        frame_size: u32_at(params, off!(KsAllocatorFraming, frame_size)),
        file_alignment: u32_at(params, off!(KsAllocatorFraming, file_alignment)),
    };
    let reserved = u32_at(params, off!(KsAllocatorFraming, reserved));
    if f.options_flags & !CREATE_OPTION_BITS != 0
        || f.frame_size == 0
        || f.frames == 0
        || reserved != 0
    {
        return Err(STATUS_INVALID_PARAMETER);
    }
    Ok(f)
}

fn stubs(uc: &mut Uc) -> Stubs {
    if let Some(s) = objects(uc).stubs {
        return s;
    }
    let s = Stubs {
        allocate_frame: machine::add_hook(
            uc,
            "ks.sys!StreamAllocator.AllocateFrame",
            allocate_frame_hook,
        ),
        free_frame: machine::add_hook(uc, "ks.sys!StreamAllocator.FreeFrame", free_frame_hook),
        worker: machine::add_hook(uc, "ks.sys!StreamAllocator.CompletionWorkItem", worker_hook),
    };
    objects_mut(uc).stubs = Some(s);
    s
}

fn new_work_item(uc: &mut Uc) -> R<u64> {
    let device = uc.get_data().ks.fdo;
    nt::new_work_item(uc, device, "allocator IO_WORKITEM")
}

fn new_object(
    uc: &mut Uc,
    pin: u64,
    backend: Backend,
    framing: LegacyFraming,
    file_object: u64,
) -> R<()> {
    stubs(uc);
    if objects(uc).cancel_lock == 0 {
        let lock = alloc(uc, 8, 16, Kind::Model("cancel spin lock"))?;
        objects_mut(uc).cancel_lock = lock;
    }
    let work_item = new_work_item(uc)?;
    objects_mut(uc).by_file_object.insert(
        file_object,
        AllocatorObject {
            file_object,
            pin,
            backend,
            framing,
            out: Vec::new(),
            ever: BTreeSet::new(),
            pending: VecDeque::new(),
            completions: Vec::new(),
            free_frame_signals: 0,
            free_frame_event: None,
            refusals: Vec::new(),
            allocate_calls: 0,
            free_calls: 0,
            null_below_limit: 0,
            delete_calls: 0,
            out_at_delete: 0,
            handle_open: true,
            pin_references: 0,
            deleted: false,
            work_item,
        },
    );
    Ok(())
}

/// An allocator create request on `pin` (`IRP_MJ_CREATE` of the create item
/// `name`, create parameters `params`), at PASSIVE_LEVEL: validated, then
/// `InitializeAllocator(pin, framing, &context)`. Returns the allocator's
/// handle (its file object) or the status the create failed with.
pub fn create(uc: &mut Uc, pin: u64, name: &str, params: &[u8]) -> R<Result<u64, u32>> {
    need_exactly(uc, irql::PASSIVE)?;
    if !uc.get_data().ks.pins.get(&pin).is_some_and(|p| p.created) {
        return Err(format!(
            "[allocator.create] allocator create request on {pin:#x}, which is not a created pin"
        ));
    }
    objects_mut(uc).create_requests += 1;
    let dispatch = ks::dispatch_routine(uc, pin, off!(KsPinDispatch, allocator))?;
    // A pin without KSALLOCATOR_DISPATCH has no allocator create item
    // (model choice for that case: the name is not found).
    if name != KSSTRING_ALLOCATOR || dispatch == 0 {
        return Ok(Err(STATUS_OBJECT_NAME_NOT_FOUND));
    }
    let framing = match validate_create_request(params) {
        Ok(f) => f,
        Err(status) => return Ok(Err(status)),
    };
    // The create request's parameters: InitializeAllocator's framing points
    // into them, and they are gone when the create completes.
    let request = alloc(
        uc,
        params.len() as u64,
        16,
        Kind::Model("allocator create parameters"),
    )?;
    uc.wbytes(request, params)?;
    let out = alloc(uc, 8, 16, Kind::Model("allocator context out"))?;
    let initialize = uc.r64(dispatch + off!(KsAllocatorDispatch, initialize_allocator))?;
    objects_mut(uc).initialize_calls += 1;
    let status = call(uc, initialize, &[pin, request, out], irql::PASSIVE, 1)? as u32;
    let context = uc.r64(out)?;
    machine::free(uc, out)?;
    machine::free(uc, request)?;
    if status != STATUS_SUCCESS {
        return Ok(Err(status));
    }
    let file_object = alloc(
        uc,
        FILE_OBJECT_SIZE,
        16,
        Kind::Model("allocator FILE_OBJECT"),
    )?;
    new_object(
        uc,
        pin,
        Backend::Driver { dispatch, context },
        framing,
        file_object,
    )?;
    Ok(Ok(file_object))
}

/// A kernel peer's own allocator (what it creates on its pin, modelled as
/// a default allocator over model memory): `framing.frames` frames of
/// `framing.frame_size` bytes, aligned per `FileAlignment`.
pub fn create_peer(uc: &mut Uc, framing: LegacyFraming) -> R<u64> {
    need_exactly(uc, irql::PASSIVE)?;
    let params = framing.to_bytes();
    let framing = validate_create_request(&params).map_err(|s| {
        format!("[allocator.peer] the peer's allocator refused its framing: {s:#x}")
    })?;
    let align = if framing.file_alignment >= 15 {
        machine::PAGE
    } else {
        16
    };
    let mut all = Vec::new();
    for _ in 0..framing.frames {
        all.push(alloc(
            uc,
            u64::from(framing.frame_size),
            align,
            Kind::Model("peer allocator frame"),
        )?);
    }
    let file_object = alloc(
        uc,
        FILE_OBJECT_SIZE,
        16,
        Kind::Model("peer allocator FILE_OBJECT"),
    )?;
    new_object(
        uc,
        0,
        Backend::Model {
            free: all.iter().copied().collect(),
            all,
        },
        framing,
        file_object,
    )?;
    Ok(file_object)
}

// --- The lock and the pin's routines ------------------------------------------------

/// Takes the cancel spin lock (raising to DISPATCH_LEVEL); returns the
/// IRQL to go back to.
fn lock(uc: &mut Uc) -> R<u8> {
    need_at_most(uc, irql::DISPATCH)?;
    let lock = objects(uc).cancel_lock;
    let k = uc.get_data_mut();
    if let Some(h) = k.nt.spin_locks.get(&lock) {
        return Err(format!(
            "[allocator.lock] the cancel spin lock taken while thread {} holds it: the allocator object was re-entered",
            h.thread
        ));
    }
    let thread = k.thread;
    k.nt.spin_locks.insert(
        lock,
        nt::Holder {
            thread,
            raised: true,
        },
    );
    let old = k.irql;
    k.irql = irql::DISPATCH;
    Ok(old)
}

fn unlock(uc: &mut Uc, old: u8) {
    let lock = objects(uc).cancel_lock;
    let k = uc.get_data_mut();
    k.nt.spin_locks.remove(&lock);
    k.irql = old;
}

/// Runs `f` under the cancel spin lock; the lock is released on failure too.
fn locked<T>(uc: &mut Uc, f: impl FnOnce(&mut Uc) -> R<T>) -> R<T> {
    let old = lock(uc)?;
    let r = f(uc);
    unlock(uc, old);
    r
}

/// Under the lock: one frame from the backend if the object is below its
/// limit, checked (aligned, inside live memory of at least `FrameSize`
/// bytes, not already out) and counted.
fn take_frame(uc: &mut Uc, file_object: u64) -> R<Option<u64>> {
    let o = object(uc, file_object)?;
    if o.out.len() >= o.framing.frames as usize {
        return Ok(None);
    }
    let framing = o.framing;
    let frame = match &o.backend {
        Backend::Driver { dispatch, context } => {
            let (dispatch, context) = (*dispatch, *context);
            let allocate = uc.r64(dispatch + off!(KsAllocatorDispatch, allocate))?;
            let thread = uc.get_data().thread;
            object_mut(uc, file_object)?.allocate_calls += 1;
            call(uc, allocate, &[context], irql::DISPATCH, thread)?
        }
        Backend::Model { .. } => {
            let o = object_mut(uc, file_object)?;
            let Backend::Model { free, .. } = &mut o.backend else {
                unreachable!()
            };
            free.pop_front().unwrap_or(0)
        }
    };
    if frame == 0 {
        object_mut(uc, file_object)?.null_below_limit += 1;
        return Ok(None);
    }
    if frame & u64::from(framing.file_alignment) != 0 {
        return Err(format!(
            "[allocator.misaligned] Allocate returned {frame:#x}, not aligned to FileAlignment {:#x}",
            framing.file_alignment
        ));
    }
    let fits = uc.get_data().memory.block_at(frame).is_some_and(|b| {
        !b.freed
            && frame >= b.address
            && frame + u64::from(framing.frame_size) <= b.address + b.size
    });
    if !fits {
        return Err(format!(
            "[allocator.frame-bounds] Allocate returned {frame:#x}, which does not start {} bytes of live memory ({})",
            framing.frame_size,
            uc.get_data().describe(frame)
        ));
    }
    let o = object_mut(uc, file_object)?;
    if o.out.contains(&frame) {
        return Err(format!(
            "[allocator.duplicate-frame] Allocate returned {frame:#x}, which is already out"
        ));
    }
    o.out.push(frame);
    o.ever.insert(frame);
    Ok(Some(frame))
}

/// Under the lock: gives `frame` back to the backend if the object handed
/// it out (else records the refusal). Returns whether it was accepted.
fn return_frame(uc: &mut Uc, file_object: u64, frame: u64) -> R<bool> {
    let o = object_mut(uc, file_object)?;
    let Some(index) = o.out.iter().position(|f| *f == frame) else {
        let rule = if o.ever.contains(&frame) {
            "[allocator.free-twice]"
        } else {
            "[allocator.free-foreign]"
        };
        o.refusals.push(format!(
            "{rule} free of {frame:#x}, which this allocator has not got out; refused before the pin's Free"
        ));
        return Ok(false);
    };
    o.out.remove(index);
    let driver = match &mut o.backend {
        Backend::Model { free, .. } => {
            free.push_back(frame);
            None
        }
        Backend::Driver { dispatch, context } => Some((*dispatch, *context)),
    };
    if let Some((dispatch, context)) = driver {
        o.free_calls += 1;
        let f = uc.r64(dispatch + off!(KsAllocatorDispatch, free))?;
        let thread = uc.get_data().thread;
        call(uc, f, &[context, frame], irql::DISPATCH, thread)?;
    }
    let o = object_mut(uc, file_object)?;
    o.free_frame_signals += 1;
    if let Some(event) = o.free_frame_event {
        if let Some(Object::Event { signaled, .. }) = uc.get_data_mut().nt.objects.get_mut(&event) {
            *signaled = true;
        }
    }
    Ok(true)
}

fn complete_irp(
    uc: &mut Uc,
    file_object: u64,
    pending: PendingAlloc,
    status: u32,
    frame: u64,
) -> R<()> {
    let PendingAlloc { irp, buffer } = pending;
    uc.w64(buffer, frame)?;
    if objects_mut(uc).wrapper_buffers.remove(&buffer) {
        release_slot(uc, buffer);
    }
    uc.w32(irp + IRP_IO_STATUS, status)?;
    uc.w64(
        irp + IRP_IO_STATUS_INFORMATION,
        if status == STATUS_SUCCESS { 8 } else { 0 },
    )?;
    if let Some(o) = objects_mut(uc).by_file_object.get_mut(&file_object) {
        o.completions.push(Completion { irp, status, frame });
    }
    Ok(())
}

/// Completes pending ALLOC requests, oldest first, while frames can be
/// had. PASSIVE_LEVEL only (inline from a PASSIVE FREE, or the work item).
fn complete_pending(uc: &mut Uc, file_object: u64) -> R<()> {
    need_exactly(uc, irql::PASSIVE)?;
    loop {
        let o = object(uc, file_object)?;
        let Some(&PendingAlloc { irp, buffer }) = o.pending.front() else {
            return Ok(());
        };
        let Some(frame) = locked(uc, |uc| take_frame(uc, file_object))? else {
            return Ok(());
        };
        object_mut(uc, file_object)?.pending.pop_front();
        complete_irp(
            uc,
            file_object,
            PendingAlloc { irp, buffer },
            STATUS_SUCCESS,
            frame,
        )?;
    }
}

/// After a free: completes pending ALLOCs now (caller at PASSIVE_LEVEL) or
/// from the object's work item (caller above PASSIVE_LEVEL).
fn after_free(uc: &mut Uc, file_object: u64) -> R<()> {
    if object(uc, file_object)?.pending.is_empty() {
        return Ok(());
    }
    if uc.get_data().irql == irql::PASSIVE {
        return complete_pending(uc, file_object);
    }
    let item = object(uc, file_object)?.work_item;
    let worker = stubs(uc).worker;
    let k = uc.get_data_mut();
    let w =
        k.nt.work_items
            .get_mut(&item)
            .ok_or("[allocator.work-item] the object's work item is gone")?;
    if !w.busy {
        w.busy = true;
        k.nt.work_queue.push_back((item, worker, file_object));
    }
    Ok(())
}

fn worker_hook(uc: &mut Uc) -> R<u64> {
    let file_object = arg(uc, 1)?;
    if objects(uc)
        .by_file_object
        .get(&file_object)
        .is_none_or(|o| o.deleted)
    {
        return Err(format!(
            "[allocator.work-item] completion work item ran for {file_object:#x} after its allocator was deleted"
        ));
    }
    complete_pending(uc, file_object)?;
    Ok(0)
}

// --- The DISPATCH_LEVEL interface ----------------------------------------------------

/// `AllocateFrame(FileObject, &Frame)`: IRQL ≤ DISPATCH_LEVEL, never waits.
fn allocate_frame_hook(uc: &mut Uc) -> R<u64> {
    let (file_object, out) = (arg(uc, 0)?, arg(uc, 1)?);
    need_at_most(uc, irql::DISPATCH)?;
    object(uc, file_object)?;
    if out == 0 {
        return Err("[allocator.function-table] AllocateFrame with a NULL Frame pointer".into());
    }
    let frame = locked(uc, |uc| take_frame(uc, file_object))?;
    uc.w64(out, frame.unwrap_or(0))?;
    Ok(u64::from(if frame.is_some() {
        STATUS_SUCCESS
    } else {
        STATUS_INSUFFICIENT_RESOURCES
    }))
}

/// `FreeFrame(FileObject, Frame)`: IRQL ≤ DISPATCH_LEVEL.
fn free_frame_hook(uc: &mut Uc) -> R<u64> {
    let (file_object, frame) = (arg(uc, 0)?, arg(uc, 1)?);
    need_at_most(uc, irql::DISPATCH)?;
    object(uc, file_object)?;
    if locked(uc, |uc| return_frame(uc, file_object, frame))? {
        after_free(uc, file_object)?;
    }
    Ok(0)
}

// --- The IRP interface and the properties ---------------------------------------------

/// Bytes of a request slot: an IRP, or a small data buffer.
const SLOT: u64 = 256;
const _: () = assert!(IRP_SIZE <= SLOT);

/// A zeroed request slot (an IRP or a request's data buffer). Slots are
/// carved from large blocks and reused: a mapping per request would make
/// thousands of requests slow (unicorn's cost per mapping grows with
/// their number). The driver never sees these.
fn slot(uc: &mut Uc) -> R<u64> {
    if objects(uc).slots.is_empty() {
        let block = alloc(uc, 64 * SLOT, machine::PAGE, Kind::Model("request slots"))?;
        objects_mut(uc).slots = (0..64).rev().map(|i| block + i * SLOT).collect();
    }
    let at = objects_mut(uc).slots.pop().unwrap();
    uc.wbytes(at, &[0u8; SLOT as usize])?;
    Ok(at)
}

fn release_slot(uc: &mut Uc, at: u64) {
    objects_mut(uc).slots.push(at);
}

/// Runs `f` with the caller at `level` (the IRQL the request is sent at).
fn at_level<T>(uc: &mut Uc, level: u8, f: impl FnOnce(&mut Uc) -> R<T>) -> R<T> {
    let old = uc.get_data().irql;
    uc.get_data_mut().irql = level;
    let r = f(uc);
    uc.get_data_mut().irql = old;
    r
}

/// `IOCTL_KS_METHOD` on an allocator handle, sent at `level`: the request
/// (`KSMETHOD` = set, id, flags) and a data buffer of `data_len` bytes at
/// `data`. Returns the IRP and its status (`STATUS_PENDING` for an ALLOC
/// that waits; its completion lands in [`AllocatorObject::completions`]).
pub fn ks_method(
    uc: &mut Uc,
    file_object: u64,
    method: &KsIdentifierBytes,
    data: u64,
    data_len: u32,
    level: u8,
) -> R<(u64, u32)> {
    object(uc, file_object)?;
    if !object(uc, file_object)?.handle_open {
        return Err(format!(
            "[allocator.closed] IOCTL_KS_METHOD on the closed handle {file_object:#x}"
        ));
    }
    at_level(uc, level, |uc| {
        need_at_most(uc, irql::DISPATCH)?;
        let irp = slot(uc)?;
        let status = if method.set != guid_bytes(KSMETHODSETID_STREAM_ALLOCATOR)
            || method.id > KSMETHOD_STREAMALLOCATOR_FREE
        {
            STATUS_NOT_FOUND
        } else if method.flags != KSMETHOD_TYPE_SEND {
            STATUS_INVALID_DEVICE_REQUEST
        } else if data_len < 8 || data == 0 {
            STATUS_BUFFER_TOO_SMALL
        } else if method.id == KSMETHOD_STREAMALLOCATOR_ALLOC {
            method_alloc(uc, file_object, irp, data)?
        } else {
            let frame = uc.r64(data)?;
            if locked(uc, |uc| return_frame(uc, file_object, frame))? {
                after_free(uc, file_object)?;
                STATUS_SUCCESS
            } else {
                STATUS_INVALID_PARAMETER
            }
        };
        if status != STATUS_PENDING {
            uc.w32(irp + IRP_IO_STATUS, status)?;
            let information =
                if status == STATUS_SUCCESS && method.id == KSMETHOD_STREAMALLOCATOR_ALLOC {
                    8
                } else {
                    0
                };
            uc.w64(irp + IRP_IO_STATUS_INFORMATION, information)?;
            release_slot(uc, irp); // completed: the caller has its status
        }
        Ok((irp, status))
    })
}

fn method_alloc(uc: &mut Uc, file_object: u64, irp: u64, data: u64) -> R<u32> {
    let frame = if object(uc, file_object)?.pending.is_empty() {
        locked(uc, |uc| take_frame(uc, file_object))?
    } else {
        None // older requests first
    };
    if let Some(frame) = frame {
        uc.w64(data, frame)?;
        return Ok(STATUS_SUCCESS);
    }
    uc.w64(data, 0)?;
    object_mut(uc, file_object)?
        .pending
        .push_back(PendingAlloc { irp, buffer: data });
    Ok(STATUS_PENDING)
}

/// A `KSMETHOD` / `KSPROPERTY` request (`KSIDENTIFIER`) as the caller
/// writes it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KsIdentifierBytes {
    /// `Set` (16 bytes, Windows layout).
    pub set: Vec<u8>,
    /// `Id`.
    pub id: u32,
    /// `Flags`.
    pub flags: u32,
}

impl KsIdentifierBytes {
    /// A request of `set`, `id`, `flags`.
    #[must_use]
    pub fn new(set: Guid, id: u32, flags: u32) -> Self {
        KsIdentifierBytes {
            set: guid_bytes(set),
            id,
            flags,
        }
    }
}

/// `IOCTL_KS_PROPERTY` (get) on an allocator handle at PASSIVE_LEVEL, into
/// `out` of `out_len` bytes. Returns the status and the bytes written.
pub fn ks_property(
    uc: &mut Uc,
    file_object: u64,
    property: &KsIdentifierBytes,
    out: u64,
    out_len: u32,
) -> R<(u32, u32)> {
    need_at_most(uc, irql::PASSIVE)?;
    let o = object(uc, file_object)?.clone();
    if !o.handle_open {
        return Err(format!(
            "[allocator.closed] IOCTL_KS_PROPERTY on the closed handle {file_object:#x}"
        ));
    }
    if property.set != guid_bytes(KSPROPSETID_STREAM_ALLOCATOR)
        || property.id > KSPROPERTY_STREAMALLOCATOR_STATUS
    {
        return Ok((STATUS_NOT_FOUND, 0));
    }
    if property.flags != KSPROPERTY_TYPE_GET {
        return Ok((STATUS_INVALID_DEVICE_REQUEST, 0)); // both are get-only
    }
    if property.id == KSPROPERTY_STREAMALLOCATOR_FUNCTIONTABLE {
        let need = size::<KsStreamAllocatorFunctionTable>() as u32;
        if out_len < need {
            return Ok((STATUS_BUFFER_TOO_SMALL, 0));
        }
        let s = stubs(uc);
        uc.w64(
            out + off!(KsStreamAllocatorFunctionTable, allocate_frame),
            s.allocate_frame,
        )?;
        uc.w64(
            out + off!(KsStreamAllocatorFunctionTable, free_frame),
            s.free_frame,
        )?;
        return Ok((STATUS_SUCCESS, need));
    }
    let need = size::<KsStreamAllocatorStatus>() as u32;
    if out_len < need {
        return Ok((STATUS_BUFFER_TOO_SMALL, 0));
    }
    let (allocated, framing) = locked(uc, |uc| {
        let o = object(uc, file_object)?;
        Ok((o.allocated_frames(), o.framing))
    })?;
    let mut bytes = framing.to_bytes();
    bytes.extend_from_slice(&allocated.to_le_bytes());
    bytes.extend_from_slice(&0u32.to_le_bytes());
    uc.wbytes(out, &bytes)?;
    Ok((STATUS_SUCCESS, need))
}

/// Enables `KSEVENT_STREAMALLOCATOR_FREEFRAME` with a notification event:
/// returns the `KEVENT` (not signalled).
pub fn enable_free_frame_event(uc: &mut Uc, file_object: u64) -> R<u64> {
    object(uc, file_object)?;
    let event = alloc(uc, 24, 16, Kind::Model("KEVENT"))?;
    uc.get_data_mut().nt.objects.insert(
        event,
        Object::Event {
            synchronization: false,
            signaled: false,
        },
    );
    object_mut(uc, file_object)?.free_frame_event = Some(event);
    Ok(event)
}

// --- Assignment and close ------------------------------------------------------------

/// `KSPROPERTY_STREAM_ALLOCATOR` set on a source pin: the pin references the
/// new allocator (`handle`, or none) and dereferences the one it had.
/// Returns the status.
pub fn set_stream_allocator(uc: &mut Uc, pin: u64, handle: Option<u64>) -> R<u32> {
    need_exactly(uc, irql::PASSIVE)?;
    if !uc.get_data().ks.pins.contains_key(&pin) {
        return Err(format!("[allocator.assign] {pin:#x} is not a pin"));
    }
    if let Some(h) = handle {
        match objects(uc).by_file_object.get(&h) {
            Some(o) if o.handle_open && !o.deleted => {}
            _ => return Ok(STATUS_INVALID_HANDLE),
        }
        object_mut(uc, h)?.pin_references += 1;
    }
    let old = match handle {
        Some(h) => objects_mut(uc).assigned.insert(pin, h),
        None => objects_mut(uc).assigned.remove(&pin),
    };
    if let Some(old) = old {
        dereference(uc, old)?;
    }
    Ok(STATUS_SUCCESS)
}

/// The allocator assigned to a pin.
#[must_use]
pub fn assigned(uc: &Uc, pin: u64) -> Option<u64> {
    objects(uc).assigned.get(&pin).copied()
}

fn dereference(uc: &mut Uc, file_object: u64) -> R<()> {
    let o = object_mut(uc, file_object)?;
    o.pin_references = o
        .pin_references
        .checked_sub(1)
        .ok_or("[allocator.reference] a pin dereferenced an allocator it did not hold")?;
    if !o.handle_open && o.pin_references == 0 {
        delete(uc, file_object)?;
    }
    Ok(())
}

/// Closes the allocator's handle (at `PASSIVE_LEVEL`): pending ALLOC requests
/// are cancelled; when no pin holds the object it is deleted.
pub fn close(uc: &mut Uc, file_object: u64) -> R<()> {
    need_exactly(uc, irql::PASSIVE)?;
    let o = object(uc, file_object)?;
    if !o.handle_open {
        return Err(format!(
            "[allocator.close-twice] handle {file_object:#x} closed twice"
        ));
    }
    let pending: Vec<PendingAlloc> = o.pending.iter().copied().collect();
    for p in pending {
        complete_irp(uc, file_object, p, STATUS_CANCELLED, 0)?;
    }
    let o = object_mut(uc, file_object)?;
    o.pending.clear();
    o.handle_open = false;
    if let Some(event) = o.free_frame_event.take() {
        uc.get_data_mut().nt.objects.remove(&event);
        machine::free(uc, event)?;
    }
    if object(uc, file_object)?.pin_references == 0 {
        delete(uc, file_object)?;
    }
    Ok(())
}

/// The object goes: its work item is cancelled and freed, `DeleteAllocator`
/// runs (frames out or not), a peer's frames that are back are freed.
fn delete(uc: &mut Uc, file_object: u64) -> R<()> {
    let o = object(uc, file_object)?.clone();
    // A queued completion work item has nothing left to complete.
    uc.get_data_mut()
        .nt
        .work_queue
        .retain(|(item, _, _)| *item != o.work_item);
    uc.get_data_mut().nt.work_items.remove(&o.work_item);
    machine::free(uc, o.work_item)?;
    match &o.backend {
        Backend::Driver { dispatch, context } => {
            let f = uc.r64(dispatch + off!(KsAllocatorDispatch, delete_allocator))?;
            {
                let o = object_mut(uc, file_object)?;
                o.delete_calls += 1;
                o.out_at_delete = o.out.len();
            }
            call(uc, f, &[*context], irql::PASSIVE, 1)?;
        }
        Backend::Model { free, .. } => {
            for f in free {
                machine::free(uc, *f)?;
            }
            let o = object_mut(uc, file_object)?;
            o.delete_calls += 1;
            o.out_at_delete = o.out.len();
        }
    }
    object_mut(uc, file_object)?.deleted = true;
    machine::free(uc, file_object)?;
    Ok(())
}

// --- The graph's view, on the Driver ------------------------------------------------

/// What an ALLOC request gave.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Alloc {
    /// A frame, at once.
    Frame(u64),
    /// `STATUS_PENDING`: the IRP completes later.
    Pending(u64),
    /// Another status.
    Failed(u32),
}

/// `KSSTREAMALLOCATOR_FUNCTIONTABLE`, as handed out.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FunctionTable {
    /// `AllocateFrame`.
    pub allocate_frame: u64,
    /// `FreeFrame`.
    pub free_frame: u64,
}

impl Driver {
    /// Creates an allocator object on `pin` with `framing`, as
    /// `KsCreateAllocator` does. Returns its handle or the create's status.
    pub fn open_allocator(&mut self, pin: u64, framing: &LegacyFraming) -> R<Result<u64, u32>> {
        create(&mut self.uc, pin, KSSTRING_ALLOCATOR, &framing.to_bytes())
    }

    /// The allocator object behind a handle (deleted ones too).
    #[must_use]
    pub fn allocator_object(&self, handle: u64) -> Option<&AllocatorObject> {
        objects(&self.uc).by_file_object.get(&handle)
    }

    /// `InitializeAllocator` calls so far (every create that passed validation).
    #[must_use]
    pub fn initialize_allocator_calls(&self) -> u64 {
        objects(&self.uc).initialize_calls
    }

    /// `KSMETHOD_STREAMALLOCATOR_ALLOC` at PASSIVE_LEVEL.
    pub fn alloc_irp(&mut self, handle: u64) -> R<Alloc> {
        let data = slot(&mut self.uc)?;
        let request = KsIdentifierBytes::new(
            KSMETHODSETID_STREAM_ALLOCATOR,
            KSMETHOD_STREAMALLOCATOR_ALLOC,
            KSMETHOD_TYPE_SEND,
        );
        let (irp, status) = ks_method(&mut self.uc, handle, &request, data, 8, irql::PASSIVE)?;
        let result = match status {
            STATUS_SUCCESS => Alloc::Frame(self.uc.r64(data)?),
            STATUS_PENDING => {
                objects_mut(&mut self.uc).wrapper_buffers.insert(data);
                return Ok(Alloc::Pending(irp));
            }
            other => Alloc::Failed(other),
        };
        release_slot(&mut self.uc, data);
        Ok(result)
    }

    /// `KSMETHOD_STREAMALLOCATOR_FREE` of `frame`, sent at `level`. Returns
    /// its status.
    pub fn free_irp(&mut self, handle: u64, frame: u64, level: u8) -> R<u32> {
        let data = slot(&mut self.uc)?;
        self.uc.w64(data, frame)?;
        let request = KsIdentifierBytes::new(
            KSMETHODSETID_STREAM_ALLOCATOR,
            KSMETHOD_STREAMALLOCATOR_FREE,
            KSMETHOD_TYPE_SEND,
        );
        let status = ks_method(&mut self.uc, handle, &request, data, 8, level)?.1;
        release_slot(&mut self.uc, data);
        Ok(status)
    }

    /// ALLOC IRPs that completed after pending, in completion order (taken).
    /// The IRPs' slots are reused afterwards.
    pub fn take_alloc_completions(&mut self, handle: u64) -> Vec<Completion> {
        let done = objects_mut(&mut self.uc)
            .by_file_object
            .get_mut(&handle)
            .map(|o| std::mem::take(&mut o.completions))
            .unwrap_or_default();
        for c in &done {
            release_slot(&mut self.uc, c.irp);
        }
        done
    }

    /// `KSPROPERTY_STREAMALLOCATOR_FUNCTIONTABLE`.
    pub fn function_table(&mut self, handle: u64) -> R<FunctionTable> {
        let len = size::<KsStreamAllocatorFunctionTable>();
        let out = slot(&mut self.uc)?;
        let request = KsIdentifierBytes::new(
            KSPROPSETID_STREAM_ALLOCATOR,
            KSPROPERTY_STREAMALLOCATOR_FUNCTIONTABLE,
            KSPROPERTY_TYPE_GET,
        );
        let (status, written) = ks_property(&mut self.uc, handle, &request, out, len as u32)?;
        if status != STATUS_SUCCESS || u64::from(written) != len {
            return Err(format!(
                "FUNCTIONTABLE returned {status:#x} ({written} bytes)"
            ));
        }
        let table = FunctionTable {
            allocate_frame: self
                .uc
                .r64(out + off!(KsStreamAllocatorFunctionTable, allocate_frame))?,
            free_frame: self
                .uc
                .r64(out + off!(KsStreamAllocatorFunctionTable, free_frame))?,
        };
        release_slot(&mut self.uc, out);
        Ok(table)
    }

    /// `AllocateFrame` through the function table, called at `level` on
    /// thread 1: (status, frame).
    pub fn allocate_frame(
        &mut self,
        handle: u64,
        table: FunctionTable,
        level: u8,
    ) -> R<(u32, u64)> {
        let out = slot(&mut self.uc)?;
        self.uc.w64(out, 0xDEAD_BEEF)?;
        let status = call(&mut self.uc, table.allocate_frame, &[handle, out], level, 1)? as u32;
        let frame = self.uc.r64(out)?;
        release_slot(&mut self.uc, out);
        Ok((status, frame))
    }

    /// `FreeFrame` through the function table, called at `level` on thread 1.
    pub fn free_frame(
        &mut self,
        handle: u64,
        table: FunctionTable,
        frame: u64,
        level: u8,
    ) -> R<()> {
        call(&mut self.uc, table.free_frame, &[handle, frame], level, 1).map(|_| ())
    }

    /// `KSPROPERTY_STREAMALLOCATOR_STATUS`: the framing and `AllocatedFrames`.
    pub fn allocator_status(&mut self, handle: u64) -> R<(LegacyFraming, u32)> {
        let len = size::<KsStreamAllocatorStatus>();
        let out = slot(&mut self.uc)?;
        let request = KsIdentifierBytes::new(
            KSPROPSETID_STREAM_ALLOCATOR,
            KSPROPERTY_STREAMALLOCATOR_STATUS,
            KSPROPERTY_TYPE_GET,
        );
        let (status, written) = ks_property(&mut self.uc, handle, &request, out, len as u32)?;
        if status != STATUS_SUCCESS || u64::from(written) != len {
            return Err(format!("STATUS returned {status:#x} ({written} bytes)"));
        }
        let bytes = self.uc.rbytes(out, len as usize)?;
        release_slot(&mut self.uc, out);
        let framing = validate_create_request(&bytes[..size::<KsAllocatorFraming>() as usize])
            .map_err(|s| format!("STATUS reported a framing that is not valid ({s:#x})"))?;
        Ok((
            framing,
            u32_at(&bytes, off!(KsStreamAllocatorStatus, allocated_frames)),
        ))
    }

    /// Enables the free-frame event; returns the `KEVENT`.
    pub fn enable_free_frame_event(&mut self, handle: u64) -> R<u64> {
        enable_free_frame_event(&mut self.uc, handle)
    }

    /// `KSPROPERTY_STREAM_ALLOCATOR` set on a source pin.
    pub fn set_stream_allocator(&mut self, pin: u64, handle: Option<u64>) -> R<u32> {
        set_stream_allocator(&mut self.uc, pin, handle)
    }

    /// Closes an allocator handle.
    pub fn close_allocator(&mut self, handle: u64) -> R<()> {
        close(&mut self.uc, handle)
    }
}
