//! A model of the graph manager (the user-mode KS proxy / pipe logic) for
//! one connection of the capture pin: it reads both pins'
//! `KSALLOCATOR_FRAMING_EX`, decides whose allocator the connection uses,
//! creates it, assigns it to the source pin with `KSPROPERTY_STREAM_ALLOCATOR`,
//! and then acts as the requestor that fills the pin's queue from it.
//!
//! # Selection rules modelled (brief §1.3, §2.3–§2.7, §3.4)
//!
//! Our allocator (the capture pin's `KSALLOCATOR_DISPATCH`, wrapped in a KS
//! allocator object) is chosen only if every rule below holds for some pair
//! of framing items (ours, the peer's); each refusal is written down with
//! its rule name:
//!
//! * `[graph.user-peer]` — the peer is a kernel pin: kernel-allocated
//!   frames never go to a user-mode pin (§1.3, §2.7 a).
//! * `[graph.no-dispatch]` — our pin has a `KSALLOCATOR_DISPATCH` (§1.1).
//! * `[graph.can-allocate]` — our item sets `KSALLOCATOR_FLAG_CAN_ALLOCATE`
//!   (§2.4: the pin can allocate this memory type); a pin that offers an
//!   allocator without saying so is never asked to allocate.
//! * `[graph.memory-type]` — the memory types intersect: equal, or one is
//!   `KSMEMORY_TYPE_WILDCARD` (`GUID_NULL`, §2.5); the result must be a
//!   kernel system type (never `KSMEMORY_TYPE_USER`). Types are compared
//!   as GUIDs: nonpaged memory does not stand in for a peer that names
//!   `KERNEL_PAGED` (the model's choice; the GUIDs are distinct types).
//! * `[graph.frames]` — the peer needs no more frames than we declare
//!   (§2.7 b: "your `Frames` below the peer's need"); `Frames` 0 is no need.
//! * `[graph.frame-size]` — the frame size, the larger of the two framing
//!   minimums, lies inside our framing range and our physical range (what
//!   we can make) and inside the peer's physical range (what it can take).
//!   `Stepping` is not modelled (no `ATTENTION_STEPPING`).
//! * `[graph.alignment]` — both `FileAlignment` values are masks
//!   (2^k − 1, §2.6), and ours is at least the peer's: the allocator
//!   guarantees the alignment it declares, no more.
//! * `[graph.must-allocate]` — the peer does not set
//!   `KSALLOCATOR_REQUIREMENTF_MUST_ALLOCATE` (§2.3, §2.7 b).
//!
//! When all hold, the model prefers our allocator (the source's own, which
//! makes the capture zero-copy); a real graph manager may still prefer
//! another (§2.7 c), which is the refused case the tests cover anyway.
//!
//! Otherwise: a user-mode peer brings user buffers ([`Allocation::UserBuffers`]);
//! a kernel peer allocates ([`Allocation::Peer`]) with its own framing: its
//! frame count raised to ours, frames of the larger minimum size capped at
//! its physical maximum, its alignment (our requirements are
//! `PREFERENCES_ONLY`, so its allocator need not meet them; §2.3).
//!
//! The allocator's legacy `KSALLOCATOR_FRAMING` (the create request) is:
//! `OptionsFlags = KSALLOCATOR_OPTIONF_SYSTEM_MEMORY`, `PoolType` from the
//! memory type (`PagedPool` for `KERNEL_PAGED`, else `NonPagedPool`), the
//! frame count, the frame size and the combined alignment mask.

use std::collections::VecDeque;

use avscap::portable::framing::{
    FLAG_CAN_ALLOCATE, OPTIONF_SYSTEM_MEMORY, REQUIREMENTF_MUST_ALLOCATE,
    REQUIREMENTF_PREFERENCES_ONLY,
};
use avscap::portable::guid::{Guid, GUID_NULL, KSMEMORY_TYPE_KERNEL_NONPAGED};

use crate::allocator_object::{self, Alloc, FunctionTable};
use crate::layout::{size, KsAllocatorFramingEx, KsFramingItem, KsPinDispatch};
use crate::machine::{irql, R};
use crate::oracle::guid_bytes;
use crate::session::{Driver, LegacyFraming};
use crate::{ks, nt, off};

/// `KSMEMORY_TYPE_WILDCARD` (= `KSMEMORY_TYPE_DONT_CARE`).
pub const KSMEMORY_TYPE_WILDCARD: Guid = GUID_NULL;
/// `KSMEMORY_TYPE_USER`.
pub const KSMEMORY_TYPE_USER: Guid = Guid::new(
    0x8cb0_fc28,
    0x7893,
    0x11d1,
    [0xb0, 0x69, 0x00, 0xa0, 0xc9, 0x06, 0x28, 0x02],
);
/// `KSMEMORY_TYPE_KERNEL_PAGED`.
pub const KSMEMORY_TYPE_KERNEL_PAGED: Guid = Guid::new(
    0xd833_f8f8,
    0x7894,
    0x11d1,
    [0xb0, 0x69, 0x00, 0xa0, 0xc9, 0x06, 0x28, 0x02],
);
/// `KSMEMORY_TYPE_KERNEL_NONPAGED`.
pub const KSMEMORY_TYPE_NONPAGED: Guid = KSMEMORY_TYPE_KERNEL_NONPAGED;

/// A frame-size range (`KS_FRAMING_RANGE`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Range {
    /// `MinFrameSize`.
    pub min: u32,
    /// `MaxFrameSize`.
    pub max: u32,
    /// `Stepping`.
    pub stepping: u32,
}

/// One `KS_FRAMING_ITEM`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FramingItem {
    /// `MemoryType`.
    pub memory_type: Guid,
    /// `BusType`.
    pub bus_type: Guid,
    /// `MemoryFlags`.
    pub memory_flags: u32,
    /// `Flags` (requirements and `KSALLOCATOR_FLAG_*`).
    pub flags: u32,
    /// `Frames`.
    pub frames: u32,
    /// `FileAlignment` (a mask).
    pub file_alignment: u32,
    /// `PhysicalRange`.
    pub physical: Range,
    /// `FramingRange.Range`.
    pub framing: Range,
}

impl FramingItem {
    /// A kernel pin's item as `DECLARE_SIMPLE_FRAMING_EX` builds it, with
    /// frames of exactly `frame_size` bytes (both ranges min = max).
    #[must_use]
    pub fn exact(
        memory_type: Guid,
        flags: u32,
        frames: u32,
        file_alignment: u32,
        frame_size: u32,
    ) -> Self {
        let exact = Range {
            min: frame_size,
            max: frame_size,
            stepping: 0,
        };
        FramingItem {
            memory_type,
            bus_type: GUID_NULL,
            memory_flags: 0,
            flags,
            frames,
            file_alignment,
            physical: exact,
            framing: exact,
        }
    }
}

fn guid_from(bytes: &[u8]) -> Guid {
    let mut data4 = [0u8; 8];
    data4.copy_from_slice(&bytes[8..16]);
    Guid::new(
        u32::from_le_bytes(bytes[0..4].try_into().unwrap()),
        u16::from_le_bytes(bytes[4..6].try_into().unwrap()),
        u16::from_le_bytes(bytes[6..8].try_into().unwrap()),
        data4,
    )
}

/// Builds a `KSALLOCATOR_FRAMING_EX` (compression 1:1, weights 0) with
/// these items, as a peer would publish it.
#[must_use]
pub fn framing_ex_bytes(items: &[FramingItem]) -> Vec<u8> {
    let head = off!(KsAllocatorFramingEx, framing_item) as usize;
    let item_size = size::<KsFramingItem>() as usize;
    let mut b = vec![0u8; head + item_size * items.len().max(1)];
    let put = |b: &mut Vec<u8>, at: usize, v: u32| {
        b[at..at + 4].copy_from_slice(&v.to_le_bytes());
    };
    put(
        &mut b,
        off!(KsAllocatorFramingEx, count_items) as usize,
        items.len() as u32,
    );
    put(
        &mut b,
        off!(KsAllocatorFramingEx, output_compression.ratio_numerator) as usize,
        1,
    );
    put(
        &mut b,
        off!(KsAllocatorFramingEx, output_compression.ratio_denominator) as usize,
        1,
    );
    for (n, it) in items.iter().enumerate() {
        let i = head + n * item_size;
        let at = |o: u64| i + o as usize;
        b[at(off!(KsFramingItem, memory_type))..at(off!(KsFramingItem, memory_type)) + 16]
            .copy_from_slice(&guid_bytes(it.memory_type));
        b[at(off!(KsFramingItem, bus_type))..at(off!(KsFramingItem, bus_type)) + 16]
            .copy_from_slice(&guid_bytes(it.bus_type));
        put(
            &mut b,
            at(off!(KsFramingItem, memory_flags)),
            it.memory_flags,
        );
        put(&mut b, at(off!(KsFramingItem, flags)), it.flags);
        put(&mut b, at(off!(KsFramingItem, frames)), it.frames);
        put(
            &mut b,
            at(off!(KsFramingItem, file_alignment)),
            it.file_alignment,
        );
        put(
            &mut b,
            at(off!(KsFramingItem, physical_range.min_frame_size)),
            it.physical.min,
        );
        put(
            &mut b,
            at(off!(KsFramingItem, physical_range.max_frame_size)),
            it.physical.max,
        );
        put(
            &mut b,
            at(off!(KsFramingItem, physical_range.stepping)),
            it.physical.stepping,
        );
        put(
            &mut b,
            at(off!(KsFramingItem, framing_range.range.min_frame_size)),
            it.framing.min,
        );
        put(
            &mut b,
            at(off!(KsFramingItem, framing_range.range.max_frame_size)),
            it.framing.max,
        );
        put(
            &mut b,
            at(off!(KsFramingItem, framing_range.range.stepping)),
            it.framing.stepping,
        );
    }
    b
}

/// The items of a `KSALLOCATOR_FRAMING_EX`.
pub fn parse_framing_ex(bytes: &[u8]) -> R<Vec<FramingItem>> {
    let head = off!(KsAllocatorFramingEx, framing_item) as usize;
    let item_size = size::<KsFramingItem>() as usize;
    let u32_at = |at: usize| -> R<u32> {
        bytes
            .get(at..at + 4)
            .map(|s| u32::from_le_bytes(s.try_into().unwrap()))
            .ok_or_else(|| format!("[graph.framing] KSALLOCATOR_FRAMING_EX cut short at {at}"))
    };
    let count = u32_at(off!(KsAllocatorFramingEx, count_items) as usize)? as usize;
    if count == 0 || bytes.len() < head + count * item_size {
        return Err(format!(
            "[graph.framing] KSALLOCATOR_FRAMING_EX of {} bytes with CountItems {count}",
            bytes.len()
        ));
    }
    (0..count)
        .map(|n| {
            let i = head + n * item_size;
            let at = |o: u64| i + o as usize;
            let range = |o: u64| -> R<Range> {
                Ok(Range {
                    min: u32_at(at(o))?,
                    max: u32_at(at(o) + 4)?,
                    stepping: u32_at(at(o) + 8)?,
                })
            };
            Ok(FramingItem {
                memory_type: guid_from(&bytes[at(off!(KsFramingItem, memory_type))..]),
                bus_type: guid_from(&bytes[at(off!(KsFramingItem, bus_type))..]),
                memory_flags: u32_at(at(off!(KsFramingItem, memory_flags)))?,
                flags: u32_at(at(off!(KsFramingItem, flags)))?,
                frames: u32_at(at(off!(KsFramingItem, frames)))?,
                file_alignment: u32_at(at(off!(KsFramingItem, file_alignment)))?,
                physical: range(off!(KsFramingItem, physical_range))?,
                framing: range(off!(KsFramingItem, framing_range.range))?,
            })
        })
        .collect()
}

/// One end of the connection, as the graph manager sees it.
#[derive(Clone, Debug)]
pub struct Endpoint {
    /// A user-mode pin (a DirectShow renderer, Frame Server…).
    pub user_mode: bool,
    /// The pin offers an allocator of its own.
    pub has_allocator: bool,
    /// Its framing items.
    pub items: Vec<FramingItem>,
}

/// Whose frames the connection uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Allocation {
    /// Our pin's allocator: zero-copy.
    Ours,
    /// The kernel peer's allocator: the driver copies.
    Peer,
    /// The user-mode peer's buffers: the driver copies.
    UserBuffers,
}

/// The graph manager's decision.
#[derive(Clone, Debug)]
pub struct Decision {
    /// Whose allocator.
    pub allocation: Allocation,
    /// The create request for it (none for user buffers).
    pub framing: Option<LegacyFraming>,
    /// Why ours was refused, one rule per line (empty when chosen).
    pub refusals: Vec<String>,
}

fn intersect(a: Guid, b: Guid) -> Option<Guid> {
    if a.is_null() {
        Some(b)
    } else if b.is_null() || a == b {
        Some(a)
    } else {
        None
    }
}

fn is_mask(m: u32) -> bool {
    m & m.wrapping_add(1) == 0
}

fn pool_type(memory_type: Guid) -> u32 {
    u32::from(memory_type == KSMEMORY_TYPE_KERNEL_PAGED) // PagedPool : NonPagedPool
}

/// Whether our item `o` can serve the peer's item `p`: the create framing,
/// or the refusals.
fn ours_for(o: &FramingItem, p: &FramingItem) -> Result<LegacyFraming, Vec<String>> {
    let mut refusals = Vec::new();
    if o.flags & FLAG_CAN_ALLOCATE == 0 {
        refusals.push(
            "[graph.can-allocate] our framing item lacks KSALLOCATOR_FLAG_CAN_ALLOCATE".to_string(),
        );
    }
    let memory_type = intersect(o.memory_type, p.memory_type);
    match memory_type {
        None => refusals.push(format!(
            "[graph.memory-type] our {} and the peer's {} do not intersect",
            o.memory_type, p.memory_type
        )),
        Some(t) if t == KSMEMORY_TYPE_USER || t.is_null() => refusals.push(format!(
            "[graph.memory-type] {t} is not a kernel memory type our allocator makes"
        )),
        Some(_) => {}
    }
    if p.frames > o.frames {
        refusals.push(format!(
            "[graph.frames] the peer needs {} frames, we declare {}",
            p.frames, o.frames
        ));
    }
    let frame_size = o.framing.min.max(p.framing.min);
    if frame_size > o.framing.max || frame_size > o.physical.max || frame_size < o.physical.min {
        refusals.push(format!(
            "[graph.frame-size] frames of {frame_size} bytes are outside what we make ({:?}, physical {:?})",
            o.framing, o.physical
        ));
    }
    if frame_size > p.physical.max || frame_size < p.physical.min {
        refusals.push(format!(
            "[graph.frame-size] the peer cannot take frames of {frame_size} bytes (physical {:?})",
            p.physical
        ));
    }
    if !is_mask(o.file_alignment) || !is_mask(p.file_alignment) {
        refusals.push(format!(
            "[graph.alignment] FileAlignment {:#x} / {:#x} is not a mask",
            o.file_alignment, p.file_alignment
        ));
    } else if p.file_alignment > o.file_alignment {
        refusals.push(format!(
            "[graph.alignment] the peer needs alignment mask {:#x}, ours guarantees {:#x}",
            p.file_alignment, o.file_alignment
        ));
    }
    if p.flags & REQUIREMENTF_MUST_ALLOCATE != 0 {
        refusals
            .push("[graph.must-allocate] the peer insists on allocating its frames".to_string());
    }
    if !refusals.is_empty() {
        return Err(refusals);
    }
    Ok(LegacyFraming {
        options_flags: OPTIONF_SYSTEM_MEMORY,
        pool_type: pool_type(memory_type.unwrap_or(GUID_NULL)),
        frames: o.frames.max(p.frames),
        frame_size,
        file_alignment: o.file_alignment | p.file_alignment,
    })
}

/// The peer's allocator for our item `o` (its first item that can allocate,
/// else its first item: a default allocator of the sink).
fn peer_framing(ours: &Endpoint, peer: &Endpoint) -> LegacyFraming {
    let p = peer
        .items
        .iter()
        .find(|p| p.flags & FLAG_CAN_ALLOCATE != 0)
        .unwrap_or(&peer.items[0]);
    let o = &ours.items[0];
    let mut alignment = p.file_alignment;
    if o.flags & REQUIREMENTF_PREFERENCES_ONLY == 0 {
        alignment |= o.file_alignment;
    }
    LegacyFraming {
        options_flags: OPTIONF_SYSTEM_MEMORY,
        pool_type: pool_type(p.memory_type),
        frames: p.frames.max(o.frames).max(1),
        frame_size: o.framing.min.max(p.framing.min).min(p.physical.max).max(1),
        file_alignment: alignment,
    }
}

/// Decides whose allocator the connection of our source pin `ours` with
/// `peer` uses (the rules in the module documentation).
#[must_use]
pub fn select(ours: &Endpoint, peer: &Endpoint) -> Decision {
    if peer.user_mode {
        return Decision {
            allocation: Allocation::UserBuffers,
            framing: None,
            refusals: vec![
                "[graph.user-peer] kernel frames cannot go to a user-mode pin".to_string(),
            ],
        };
    }
    let mut refusals = Vec::new();
    if ours.has_allocator {
        for o in &ours.items {
            for p in &peer.items {
                match ours_for(o, p) {
                    Ok(framing) => {
                        return Decision {
                            allocation: Allocation::Ours,
                            framing: Some(framing),
                            refusals: Vec::new(),
                        }
                    }
                    Err(r) if refusals.is_empty() => refusals = r,
                    Err(_) => {}
                }
            }
        }
    } else {
        refusals.push("[graph.no-dispatch] our pin has no KSALLOCATOR_DISPATCH".to_string());
    }
    Decision {
        allocation: Allocation::Peer,
        framing: Some(peer_framing(ours, peer)),
        refusals,
    }
}

/// A connection of our capture pin that the graph set up, and the
/// requestor state that feeds the pin's queue from its allocator.
#[derive(Debug)]
pub struct Connection {
    /// Our (source) pin.
    pub pin: u64,
    /// The graph's decision.
    pub decision: Decision,
    /// The allocator's handle (none for user buffers).
    pub allocator: Option<u64>,
    /// Its function table.
    pub table: Option<FunctionTable>,
    /// `FrameExtent` of the frames queued.
    pub extent: u32,
    /// ALLOC IRPs that pended, oldest first.
    pub waiting: VecDeque<u64>,
    /// Frames requested (even: function table, odd: ALLOC IRP).
    pub requests: u64,
    /// Frames given back (even: FREE IRP at PASSIVE, odd: `FreeFrame` at
    /// DISPATCH_LEVEL).
    pub frees: u64,
    /// Frames obtained through each interface: (IRP, function table).
    pub obtained: (u64, u64),
}

impl Driver {
    /// Our pin as the graph manager sees it: its published framing and
    /// whether it has a `KSALLOCATOR_DISPATCH`.
    pub fn endpoint(&self, pin: u64) -> R<Endpoint> {
        let items = parse_framing_ex(&self.allocator_framing_ex(pin)?)?;
        let has_allocator =
            ks::dispatch_routine(&self.uc, pin, off!(KsPinDispatch, allocator))? != 0;
        Ok(Endpoint {
            user_mode: false,
            has_allocator,
            items,
        })
    }

    /// Connects our capture pin to `peer` as the graph manager does: reads
    /// both framings, selects, creates the allocator (ours on our pin, or
    /// the peer's) and assigns it to our pin with `KSPROPERTY_STREAM_ALLOCATOR`.
    pub fn graph_connect(&mut self, pin: u64, peer: &Endpoint) -> R<Connection> {
        let ours = self.endpoint(pin)?;
        let decision = select(&ours, peer);
        let image = {
            let f = LegacyFraming::from_ex(&self.allocator_framing_ex(pin)?);
            f.frame_size
        };
        let (allocator, extent) = match decision.allocation {
            Allocation::UserBuffers => (None, image),
            Allocation::Ours | Allocation::Peer => {
                let framing = decision.framing.expect("a kernel allocator has a framing");
                let handle = if decision.allocation == Allocation::Ours {
                    self.open_allocator(pin, &framing)?.map_err(|s| {
                        format!("[graph.create] our allocator's create failed with {s:#x}")
                    })?
                } else {
                    allocator_object::create_peer(&mut self.uc, framing)?
                };
                let status = self.set_stream_allocator(pin, Some(handle))?;
                if status != 0 {
                    return Err(format!(
                        "[graph.assign] KSPROPERTY_STREAM_ALLOCATOR returned {status:#x}"
                    ));
                }
                (Some(handle), framing.frame_size)
            }
        };
        let table = match allocator {
            Some(h) => Some(self.function_table(h)?),
            None => None,
        };
        Ok(Connection {
            pin,
            decision,
            allocator,
            table,
            extent,
            waiting: VecDeque::new(),
            requests: 0,
            frees: 0,
            obtained: (0, 0),
        })
    }

    fn origin(c: &Connection) -> ks::Origin {
        match c.decision.allocation {
            Allocation::Ours => ks::Origin::Allocator,
            Allocation::Peer => ks::Origin::Peer,
            Allocation::UserBuffers => ks::Origin::User,
        }
    }

    /// Queues the frames of ALLOC IRPs that completed since the last call.
    fn graph_take_completed_allocs(&mut self, c: &mut Connection) -> R<()> {
        let Some(h) = c.allocator else {
            return Ok(());
        };
        for done in self.take_alloc_completions(h) {
            let Some(i) = c.waiting.iter().position(|irp| *irp == done.irp) else {
                return Err(format!(
                    "[graph.requestor] completion of an IRP it never sent ({:#x})",
                    done.irp
                ));
            };
            if i != 0 {
                return Err(format!(
                    "[graph.requestor] ALLOC IRP {:#x} completed before {:#x}, which was sent earlier",
                    done.irp, c.waiting[0]
                ));
            }
            c.waiting.pop_front();
            if done.status == 0 {
                c.obtained.0 += 1;
                ks::queue_frame(
                    &mut self.uc,
                    c.pin,
                    done.frame,
                    c.extent,
                    Self::origin(c),
                    0,
                )?;
            }
        }
        nt::run_ready(&mut self.uc)
    }

    /// Gets one frame from the connection's allocator (alternately through
    /// the function table at DISPATCH_LEVEL and an ALLOC IRP) and queues it
    /// on the pin. False when none is free now (the IRP pended or the
    /// table failed fast).
    pub fn graph_queue_one(&mut self, c: &mut Connection) -> R<bool> {
        let Some(h) = c.allocator else {
            self.queue_user_frame(c.pin, c.extent, 0)?;
            return Ok(true);
        };
        if !c.waiting.is_empty() {
            return Ok(false); // a requestor waits for its IRP
        }
        let by_table = c.requests.is_multiple_of(2);
        c.requests += 1;
        let frame = if by_table {
            let table = c.table.expect("a table for every allocator");
            let (status, frame) = self.allocate_frame(h, table, irql::DISPATCH)?;
            if (status == 0) != (frame != 0) {
                return Err(format!(
                    "[graph.requestor] AllocateFrame returned {status:#x} with frame {frame:#x}"
                ));
            }
            if frame != 0 {
                c.obtained.1 += 1;
            }
            frame
        } else {
            match self.alloc_irp(h)? {
                Alloc::Frame(f) => {
                    c.obtained.0 += 1;
                    f
                }
                Alloc::Pending(irp) => {
                    c.waiting.push_back(irp);
                    0
                }
                Alloc::Failed(s) => {
                    return Err(format!("[graph.requestor] ALLOC failed with {s:#x}"))
                }
            }
        };
        if frame == 0 {
            return Ok(false);
        }
        ks::queue_frame(&mut self.uc, c.pin, frame, c.extent, Self::origin(c), 0)?;
        nt::run_ready(&mut self.uc)?;
        Ok(true)
    }

    /// Gives a completed frame back to the connection's allocator
    /// (alternately a FREE IRP at PASSIVE_LEVEL and `FreeFrame` at
    /// DISPATCH_LEVEL). User buffers go back to their client (nothing to do).
    pub fn graph_recycle(&mut self, c: &mut Connection, done: &ks::Completed) -> R<()> {
        let Some(h) = c.allocator else {
            return Ok(());
        };
        let by_irp = c.frees.is_multiple_of(2);
        c.frees += 1;
        if by_irp {
            let status = self.free_irp(h, done.data_address, irql::PASSIVE)?;
            if status != 0 {
                return Err(format!(
                    "[graph.requestor] FREE of frame {} returned {status:#x}",
                    done.id
                ));
            }
        } else {
            let table = c.table.expect("a table for every allocator");
            self.free_frame(h, table, done.data_address, irql::DISPATCH)?;
        }
        Ok(())
    }

    /// Keeps `depth` frames queued: frames of completed ALLOC IRPs first,
    /// then new requests until one is refused.
    pub fn graph_refill(&mut self, c: &mut Connection, depth: usize) -> R<()> {
        self.graph_take_completed_allocs(c)?;
        while self.uc.get_data().ks.pins[&c.pin].frames.len() < depth {
            if !self.graph_queue_one(c)? {
                break;
            }
        }
        Ok(())
    }

    /// Streams until `count` frames completed, one interval of `interval`
    /// at a time, every completed frame given back and replaced.
    pub fn graph_stream(
        &mut self,
        c: &mut Connection,
        count: usize,
        depth: usize,
        interval: i64,
    ) -> R<Vec<ks::Completed>> {
        self.graph_refill(c, depth)?;
        let mut out = Vec::new();
        let mut idle = 0;
        while out.len() < count {
            self.advance(interval)?;
            let done = self.take_completed(c.pin);
            idle = if done.is_empty() { idle + 1 } else { 0 };
            if idle >= 10 {
                return Err("[graph.stall] no frame completed for 10 intervals".into());
            }
            for d in done {
                self.graph_recycle(c, &d)?;
                out.push(d);
            }
            nt::run_ready(&mut self.uc)?;
            self.graph_refill(c, depth)?;
        }
        Ok(out)
    }

    /// Disconnects: the pin must be stopped; flushed frames go back, the
    /// pin drops its allocator (`KSPROPERTY_STREAM_ALLOCATOR` = NULL) and the
    /// graph closes the handle (pending ALLOC IRPs are cancelled; the
    /// object is deleted).
    pub fn graph_disconnect(&mut self, c: &mut Connection) -> R<()> {
        if self.state(c.pin) != ks::state::STOP {
            return Err("[graph.disconnect] disconnect of a pin that is not stopped".into());
        }
        for d in self.take_completed(c.pin) {
            self.graph_recycle(c, &d)?;
        }
        nt::run_ready(&mut self.uc)?;
        if let Some(h) = c.allocator.take() {
            let status = self.set_stream_allocator(c.pin, None)?;
            if status != 0 {
                return Err(format!(
                    "[graph.assign] clearing the allocator returned {status:#x}"
                ));
            }
            // Frames of ALLOC IRPs that completed but were never queued go back too.
            for done in self.take_alloc_completions(h) {
                if done.status == 0 {
                    let status = self.free_irp(h, done.frame, irql::PASSIVE)?;
                    if status != 0 {
                        return Err(format!("[graph.requestor] FREE returned {status:#x}"));
                    }
                }
            }
            self.close_allocator(h)?;
            c.waiting.clear();
        }
        Ok(())
    }
}
