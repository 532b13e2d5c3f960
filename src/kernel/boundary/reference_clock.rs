//! The graph's master clock, as `IKsReferenceClock` hands it to a pin.

use core::ptr::NonNull;

use super::super::bindings::{IKsReferenceClock, PIKSREFERENCECLOCK};

/// One reference on the graph's master clock, released on drop.
///
/// Invariant: the pointer is an `IKsReferenceClock` interface with a
/// vtable, on which this value holds one reference of its own.
pub struct ReferenceClock(NonNull<IKsReferenceClock>);

// SAFETY: KS clock interfaces are free-threaded (ks.sys serialises their
// state itself), and the reference moves with the value.
unsafe impl Send for ReferenceClock {}
// SAFETY: as above: `get_time` may be called from several CPUs at once.
unsafe impl Sync for ReferenceClock {}

impl ReferenceClock {
    /// Takes ownership of one reference on `clock`.
    ///
    /// # Safety
    /// `clock` is null or a live `IKsReferenceClock` that comes with a
    /// reference the caller gives to this value.
    pub(super) unsafe fn from_referenced(clock: PIKSREFERENCECLOCK) -> Option<Self> {
        let clock = NonNull::new(clock)?;
        // SAFETY: a live interface (caller) points at its vtable pointer.
        let has_vtable = unsafe { !(*clock.as_ptr()).lpVtbl.is_null() };
        if has_vtable {
            Some(Self(clock))
        } else {
            None // unusable, and impossible to release: leave it alone
        }
    }

    /// The clock's current time (100 ns units).
    ///
    /// IRQL: ≤ DISPATCH_LEVEL (the KS clocks' `GetTime`).
    pub(crate) fn get_time(&self) -> Option<i64> {
        let clock = self.0.as_ptr();
        // SAFETY: a live interface (type invariant).
        let vtable = unsafe { (*clock).lpVtbl };
        // SAFETY: its vtable is non-null (type invariant) and lives as long
        // as the interface.
        let get_time = unsafe { (*vtable).GetTime }?;
        // SAFETY: GetTime takes only the interface pointer, on which we hold
        // a reference.
        Some(unsafe { get_time(clock) })
    }
}

impl Drop for ReferenceClock {
    /// IRQL: ≤ DISPATCH_LEVEL (the driver drops it at PASSIVE_LEVEL).
    fn drop(&mut self) {
        let clock = self.0.as_ptr();
        // SAFETY: a live interface (type invariant).
        let vtable = unsafe { (*clock).lpVtbl };
        // SAFETY: its vtable is non-null (type invariant).
        if let Some(release) = unsafe { (*vtable).Release } {
            // SAFETY: the reference this value owns, released once.
            unsafe { release(clock) };
        }
    }
}
