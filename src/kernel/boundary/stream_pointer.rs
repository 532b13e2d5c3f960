//! Stream pointers: the pin's locked leading edge, borrowed for one Process
//! call, and an owned clone of it, the handle that keeps one client frame
//! from completing while the simulated hardware holds it.
//!
//! A frame completes when the leading edge has left it and its last clone
//! is deleted, so deleting a clone twice (or using it after) corrupts
//! ks.sys's state. [`StreamClone`] makes that impossible: it is created
//! once by [`LeadingEdge::clone_locked`], moved (never copied) from Process
//! into the capture engine and from there to the delivery work, and deleted
//! exactly once: by [`StreamClone::complete`] after the frame was filled,
//! or by `Drop`, which completes it empty (`DataUsed` 0) on every path that
//! gives a frame up (stop, pause, a full engine, a failed route).
//!
//! [`LeadingEdge`] is the guard of the locked leading edge: its moves
//! consume it and give it back only if ks.sys left it locked, and dropping
//! it unlocks it, so Process cannot forget the unlock nor unlock twice.
//!
//! IRQL: every call here is ≤ DISPATCH_LEVEL (the `KsStreamPointer*`
//! routines); the driver clones under a spin lock and completes clones
//! with none held, so that a completion never runs inside its locks.

use core::marker::PhantomData;
use core::ptr::{null_mut, NonNull};

use wdk_sys::NTSTATUS;

use super::super::bindings::{
    frame_info_surface_pitch, KsStreamPointerAdvance, KsStreamPointerAdvanceOffsets,
    KsStreamPointerClone, KsStreamPointerDelete, KsStreamPointerSetStatusCode,
    KsStreamPointerUnlock, KSSTREAM_HEADER, KSSTREAM_POINTER, KS_FRAME_INFO, PKSSTREAM_POINTER,
};
use crate::portable::capture_engine::ClientBuffer;

/// The pin's leading edge, locked, for the duration of one Process call.
///
/// Invariant: `ptr` is the pin's leading-edge stream pointer, locked (its
/// header and data are valid and mapped), and `'p` does not outlive the
/// Process call that got it.
pub struct LeadingEdge<'p> {
    ptr: NonNull<KSSTREAM_POINTER>,
    _process: PhantomData<&'p ()>,
}

impl LeadingEdge<'_> {
    /// Wraps the pointer `KsPinGetLeadingEdgeStreamPointer(…, LOCKED)`
    /// returned.
    ///
    /// # Safety
    /// `ptr` is the pin's locked leading edge and the caller is the pin's
    /// Process, which the guard does not outlive.
    pub(super) const unsafe fn from_locked(ptr: NonNull<KSSTREAM_POINTER>) -> Self {
        Self {
            ptr,
            _process: PhantomData,
        }
    }

    /// The frame under the leading edge: where its unwritten bytes start,
    /// how many there are, and the surface pitch its `KS_FRAME_INFO` asks
    /// for. `None` for a frame with no bytes left (or no data at all).
    ///
    /// IRQL: any (reads the locked, resident stream pointer).
    pub(crate) fn frame(&self) -> Option<ClientBuffer> {
        // SAFETY: the locked leading edge is valid (type invariant).
        let (data, remaining) = unsafe { output_position(self.ptr) };
        if data.is_null() || remaining == 0 {
            return None;
        }
        Some(ClientBuffer {
            address: data as usize,
            extent: remaining,
            surface_pitch: self.surface_pitch(),
        })
    }

    /// The surface pitch in the frame's `KS_FRAME_INFO` (0 when it has none).
    ///
    /// IRQL: any.
    fn surface_pitch(&self) -> i32 {
        // SAFETY: the locked leading edge is valid (type invariant).
        let header = unsafe { (*self.ptr.as_ptr()).StreamHeader };
        // SAFETY: a locked frame's header is valid and resident, and spans
        // the `Size` bytes it declares.
        unsafe { frame_info(header) }.map_or(0, |info| {
            // SAFETY: `frame_info` found a whole KS_FRAME_INFO inside the
            // header's allocation; it may be unaligned: read by value.
            frame_info_surface_pitch(&unsafe { info.read_unaligned() })
        })
    }

    /// Clones the locked leading edge (the clone starts locked, so its
    /// frame stays mapped and resident until the clone is deleted).
    ///
    /// IRQL: ≤ DISPATCH_LEVEL.
    ///
    /// # Errors
    /// `KsStreamPointerClone`'s failure status (low memory).
    pub(crate) fn clone_locked(&self) -> Result<StreamClone, NTSTATUS> {
        let mut clone: PKSSTREAM_POINTER = null_mut();
        // SAFETY: a locked leading edge (type invariant); no cancel callback
        // (the pin holds no clone while paused, see hardware.rs) and no
        // context bytes; `clone` is a local out pointer.
        let status = unsafe { KsStreamPointerClone(self.ptr.as_ptr(), None, 0, &raw mut clone) };
        if status < 0 {
            return Err(status);
        }
        NonNull::new(clone).map(StreamClone).ok_or(status)
    }

    /// Moves the leading edge to the next frame (a zero-length frame is
    /// stepped over this way).
    ///
    /// IRQL: ≤ DISPATCH_LEVEL.
    ///
    /// # Errors
    /// ks.sys's status when the edge could not move and is no longer locked
    /// (`STATUS_DEVICE_NOT_READY`: it ran off the end of the queue).
    pub(crate) fn advance(self) -> Result<Self, NTSTATUS> {
        let ptr = self.ptr.as_ptr();
        // SAFETY: a locked leading edge (type invariant).
        let status = unsafe { KsStreamPointerAdvance(ptr) };
        self.kept_if(status)
    }

    /// Moves the leading edge `bytes` further into its output frame,
    /// ejecting the frame when `eject` is set.
    ///
    /// IRQL: ≤ DISPATCH_LEVEL.
    ///
    /// # Errors
    /// As [`Self::advance`].
    pub(crate) fn advance_out(self, bytes: u32, eject: bool) -> Result<Self, NTSTATUS> {
        let ptr = self.ptr.as_ptr();
        // SAFETY: a locked leading edge; ks.sys checks `bytes` against the
        // frame's remaining bytes itself.
        let status = unsafe { KsStreamPointerAdvanceOffsets(ptr, 0, bytes, u8::from(eject)) };
        self.kept_if(status)
    }

    /// Completes the frame under the leading edge empty, with `status` for
    /// the client to see, and moves on past it.
    ///
    /// IRQL: ≤ DISPATCH_LEVEL.
    ///
    /// # Errors
    /// As [`Self::advance`].
    pub(crate) fn complete_empty(self, status: NTSTATUS) -> Result<Self, NTSTATUS> {
        let ptr = self.ptr.as_ptr();
        // SAFETY: a locked leading edge (type invariant).
        let header = unsafe { (*ptr).StreamHeader };
        // SAFETY: the locked frame's header is valid, resident and ours to
        // write until the edge leaves the frame.
        unsafe { (*header).DataUsed = 0 };
        // Best effort: the frame completes empty either way.
        // SAFETY: a locked leading edge.
        let _ = unsafe { KsStreamPointerSetStatusCode(ptr, status) };
        // SAFETY: a locked leading edge; its offsets are valid.
        let remaining = unsafe { (*ptr).OffsetOut.Remaining };
        self.advance_out(remaining, false)
    }

    /// Keeps the guard if a move succeeded; otherwise the edge is not
    /// locked any more and is given up without an unlock.
    const fn kept_if(self, status: NTSTATUS) -> Result<Self, NTSTATUS> {
        if status < 0 {
            core::mem::forget(self);
            Err(status)
        } else {
            Ok(self)
        }
    }
}

impl Drop for LeadingEdge<'_> {
    /// Unlocks the leading edge without ejecting its frame.
    ///
    /// IRQL: ≤ DISPATCH_LEVEL.
    fn drop(&mut self) {
        // SAFETY: a locked leading edge (type invariant), unlocked once.
        unsafe { KsStreamPointerUnlock(self.ptr.as_ptr(), 0) };
    }
}

/// One live clone of the pin's leading edge, owned by whoever holds it.
///
/// Invariant: the pointer is a clone made by `KsStreamPointerClone`,
/// locked, not yet deleted, and owned by this value alone.
pub struct StreamClone(NonNull<KSSTREAM_POINTER>);

// SAFETY: a clone may be used and deleted from any thread or CPU
// (KsStreamPointer* routines are ≤ DISPATCH_LEVEL and not thread-affine);
// ownership moves with the value.
unsafe impl Send for StreamClone {}

impl StreamClone {
    /// The frame's bytes from where the clone points (where the leading
    /// edge was when it was cloned) to its end.
    ///
    /// IRQL: any (the frame is locked and mapped while the clone lives).
    pub(crate) fn data_mut(&mut self) -> &mut [u8] {
        // SAFETY: a live, locked clone (type invariant).
        let (data, remaining) = unsafe { output_position(self.0) };
        if data.is_null() {
            return &mut [];
        }
        // SAFETY: the clone is locked, so its `Remaining` bytes from `Data`
        // are mapped, resident and writable; this value owns the clone
        // alone and `&mut self` makes this the only reference to them; the
        // stream header is elsewhere (a separate KS allocation).
        unsafe { core::slice::from_raw_parts_mut(data, remaining as usize) }
    }

    /// The frame's stream header, and the `KS_FRAME_INFO` after it when the
    /// header's `Size` makes room for one (the pin's `StreamHeaderSize` asks
    /// for it).
    ///
    /// IRQL: any.
    pub(crate) fn headers_mut(&mut self) -> (&mut KSSTREAM_HEADER, Option<&mut KS_FRAME_INFO>) {
        // SAFETY: a live clone (type invariant).
        let header = unsafe { (*self.0.as_ptr()).StreamHeader };
        // SAFETY: a live clone's header is valid and resident, spanning its
        // `Size` bytes.
        let info = unsafe { frame_info(header) }.filter(|p| p.is_aligned());
        // SAFETY: a KS_FRAME_INFO found by `frame_info` lies inside the
        // header's allocation after the KSSTREAM_HEADER, so it does not
        // overlap the header reference below; it is aligned (filtered) and
        // this value alone owns the clone.
        let info = info.map(|p| unsafe { &mut *p });
        // SAFETY: as above, for the header itself.
        (unsafe { &mut *header }, info)
    }

    /// Deletes the clone of a frame whose header has been filled in: the
    /// frame completes with what it holds.
    ///
    /// IRQL: ≤ DISPATCH_LEVEL.
    pub(crate) fn complete(self) {
        let clone = self.0.as_ptr();
        core::mem::forget(self);
        // SAFETY: the clone is live and owned by this value alone, which is
        // gone now: deleted exactly once.
        unsafe { KsStreamPointerDelete(clone) };
    }
}

impl Drop for StreamClone {
    /// Completes the frame empty: `DataUsed` 0, clone deleted.
    ///
    /// IRQL: ≤ DISPATCH_LEVEL.
    fn drop(&mut self) {
        self.headers_mut().0.DataUsed = 0;
        // SAFETY: the clone is live and owned by this value; deleted exactly
        // once, here.
        unsafe { KsStreamPointerDelete(self.0.as_ptr()) };
    }
}

/// Where a stream pointer's unwritten output bytes start (null: the frame
/// has no data) and how many remain.
///
/// IRQL: any.
///
/// # Safety
/// `ptr` is a live, locked stream pointer of the pin (its leading edge or a
/// clone of it).
unsafe fn output_position(ptr: NonNull<KSSTREAM_POINTER>) -> (*mut u8, u32) {
    // SAFETY: the caller's guarantee; the offsets are read by value.
    let offset = unsafe { (*ptr.as_ptr()).OffsetOut };
    // SAFETY: `Data` and `Mappings` are both pointers in the same slot; the
    // pin does not ask for mappings, so ks.sys set `Data`.
    let data = unsafe { offset.__bindgen_anon_1.Data };
    (data, offset.Remaining)
}

/// The `KS_FRAME_INFO` after a stream header, when the header's `Size`
/// says it is there.
///
/// IRQL: any.
///
/// # Safety
/// `header` is a valid, resident stream header whose allocation spans its
/// `Size` bytes.
unsafe fn frame_info(header: *mut KSSTREAM_HEADER) -> Option<*mut KS_FRAME_INFO> {
    // SAFETY: the caller's guarantee.
    let size = unsafe { (*header).Size };
    let needed = size_of::<KSSTREAM_HEADER>() + size_of::<KS_FRAME_INFO>();
    // The pointer is derived from the raw header pointer, whose allocation
    // spans `Size` bytes, not from a reference to the header alone.
    (size as usize >= needed).then(|| header.wrapping_add(1).cast::<KS_FRAME_INFO>())
}
