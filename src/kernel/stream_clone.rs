//! An owned stream-pointer clone: the handle that keeps one client frame
//! from completing while the simulated hardware holds it.
//!
//! A frame completes when the leading edge has left it and its last clone
//! is deleted, so deleting a clone twice (or using it after) corrupts
//! ks.sys's state. [`StreamClone`] makes that impossible: it is created
//! once by [`StreamClone::of_leading_edge`], moved (never copied) from
//! Process into the capture engine and from there to the delivery work,
//! and deleted exactly once: by [`StreamClone::complete`] after the frame
//! was filled, or by `Drop`, which completes it empty (`DataUsed` 0) on
//! every path that gives a frame up (stop, pause, a full engine, a failed
//! route).
//!
//! IRQL: creating, completing and dropping a clone are ≤ DISPATCH_LEVEL
//! (`KsStreamPointerClone`, `KsStreamPointerDelete`); the shell does them
//! with no spin lock held, so that the completion of a frame never runs
//! inside the driver's locks.

use core::ptr::{null_mut, NonNull};

use wdk_sys::NTSTATUS;

use super::bindings::{
    KsStreamPointerClone, KsStreamPointerDelete, KSSTREAM_HEADER, KSSTREAM_POINTER,
    PKSSTREAM_POINTER,
};

/// One live clone of the pin's leading edge, owned by whoever holds it.
pub(crate) struct StreamClone(NonNull<KSSTREAM_POINTER>);

// SAFETY: a clone may be used and deleted from any thread or CPU
// (KsStreamPointer* routines are ≤ DISPATCH_LEVEL and not thread-affine);
// ownership moves with the value.
unsafe impl Send for StreamClone {}

impl StreamClone {
    /// Clones the locked leading edge (the clone starts locked, so its
    /// frame stays mapped and resident until the clone is deleted).
    ///
    /// IRQL: ≤ DISPATCH_LEVEL.
    ///
    /// # Errors
    /// `KsStreamPointerClone`'s failure status.
    ///
    /// # Safety
    /// `leading` is the pin's locked leading edge.
    pub(crate) unsafe fn of_leading_edge(leading: PKSSTREAM_POINTER) -> Result<Self, NTSTATUS> {
        let mut clone: PKSSTREAM_POINTER = null_mut();
        // SAFETY: the caller's guarantee; no cancel callback (the pin holds
        // no clone while paused, see hardware.rs) and no context bytes.
        let status = unsafe { KsStreamPointerClone(leading, None, 0, &raw mut clone) };
        if status < 0 {
            return Err(status);
        }
        NonNull::new(clone).map(StreamClone).ok_or(status)
    }

    /// The frame's stream header (and, when its `Size` says so, the
    /// `KS_FRAME_INFO` after it).
    ///
    /// IRQL: any (reads the clone, which is nonpaged).
    pub(crate) fn header(&self) -> *mut KSSTREAM_HEADER {
        // SAFETY: a live clone's StreamHeader points at the locked frame's
        // header for as long as the clone lives.
        unsafe { (*self.0.as_ptr()).StreamHeader }
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
        let clone = self.0.as_ptr();
        // SAFETY: the clone is live and owned by this value; its header is
        // valid while it lives. Deleted exactly once, here.
        unsafe {
            (*(*clone).StreamHeader).DataUsed = 0;
            KsStreamPointerDelete(clone);
        }
    }
}
