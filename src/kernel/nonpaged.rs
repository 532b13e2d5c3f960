//! Nonpaged, tagged storage for the shell's contexts, and a spin lock over
//! data that DPCs touch.
//!
//! Every context the driver allocates (device, pin, allocator) lives in a
//! [`PoolBox`]: `ExAllocatePool2(POOL_FLAG_NON_PAGED)` memory, which is NX and
//! never paged out, so DISPATCH_LEVEL code may touch it, tagged
//! [`POOL_TAG`] so `!poolused` and Driver Verifier's pool tracking attribute
//! it. Allocation failure is an error the caller maps to
//! `STATUS_INSUFFICIENT_RESOURCES`, never a panic.
//!
//! IRQL: the allocation and free routines and the lock routines state
//! theirs; everything else (`into_raw`, `from_raw`, dereferences) only
//! moves pointers and may run at any IRQL.

use core::cell::UnsafeCell;
use core::marker::PhantomData;
use core::ops::{Deref, DerefMut};
use core::ptr::NonNull;

use wdk_sys::ntddk::{
    ExAllocatePool2, ExFreePoolWithTag, KeAcquireSpinLockAtDpcLevel, KeAcquireSpinLockRaiseToDpc,
    KeReleaseSpinLock, KeReleaseSpinLockFromDpcLevel,
};
use wdk_sys::{KIRQL, KSPIN_LOCK, POOL_FLAG_NON_PAGED};

/// Pool tag of every allocation the driver makes: `'pcvA'` reads "Avcp" in
/// a debugger's little-endian dump.
pub(crate) const POOL_TAG: u32 = u32::from_le_bytes(*b"Avcp");

/// An owned `T` in nonpaged pool, freed with its tag on drop.
pub(crate) struct PoolBox<T> {
    ptr: NonNull<T>,
    _owns: PhantomData<T>,
}

impl<T> PoolBox<T> {
    /// Moves `value` into a new nonpaged allocation.
    ///
    /// IRQL: ≤ DISPATCH_LEVEL (`ExAllocatePool2` with a nonpaged flag).
    /// Returns `None` when the pool is exhausted.
    pub(crate) fn try_new(value: T) -> Option<Self> {
        let size = core::mem::size_of::<T>().max(1) as u64;
        // SAFETY: ExAllocatePool2 may be called at IRQL <= DISPATCH_LEVEL
        // for nonpaged memory; it returns NULL or a block of at least `size`
        // bytes aligned to 16 (pool alignment on x64), which covers the
        // alignment of every context type the shell stores (checked below).
        let raw = unsafe { ExAllocatePool2(POOL_FLAG_NON_PAGED, size, POOL_TAG) };
        const {
            assert!(
                core::mem::align_of::<T>() <= 16,
                "pool blocks are 16-byte aligned"
            );
        }
        let ptr = NonNull::new(raw.cast::<T>())?;
        // SAFETY: `ptr` is a fresh, exclusively owned, suitably sized and
        // aligned allocation; writing initialises it without reading it.
        unsafe { ptr.as_ptr().write(value) };
        Some(PoolBox {
            ptr,
            _owns: PhantomData,
        })
    }

    /// Gives up ownership: the caller stores the pointer (in a KS object's
    /// `Context`) and later rebuilds the box with [`Self::from_raw`].
    pub(crate) fn into_raw(self) -> *mut T {
        let ptr = self.ptr.as_ptr();
        core::mem::forget(self);
        ptr
    }

    /// Takes back ownership of a pointer made by [`Self::into_raw`].
    ///
    /// # Safety
    /// `ptr` came from `into_raw` of a `PoolBox<T>` and is not owned by any
    /// other box or used after this box is dropped.
    pub(crate) unsafe fn from_raw(ptr: *mut T) -> Option<Self> {
        NonNull::new(ptr).map(|ptr| PoolBox {
            ptr,
            _owns: PhantomData,
        })
    }
}

impl<T> Deref for PoolBox<T> {
    type Target = T;
    fn deref(&self) -> &T {
        // SAFETY: the box owns an initialised T for its whole life.
        unsafe { self.ptr.as_ref() }
    }
}

impl<T> DerefMut for PoolBox<T> {
    fn deref_mut(&mut self) -> &mut T {
        // SAFETY: as in `deref`, and `&mut self` makes the access unique.
        unsafe { self.ptr.as_mut() }
    }
}

impl<T> Drop for PoolBox<T> {
    /// IRQL: ≤ DISPATCH_LEVEL (`ExFreePoolWithTag` of nonpaged memory);
    /// the shell drops its boxes at PASSIVE_LEVEL.
    fn drop(&mut self) {
        // SAFETY: the box owns an initialised T, dropped once here; then the
        // block, allocated by ExAllocatePool2 with POOL_TAG, is freed with
        // the same tag and never touched again.
        unsafe {
            core::ptr::drop_in_place(self.ptr.as_ptr());
            ExFreePoolWithTag(self.ptr.as_ptr().cast(), POOL_TAG);
        }
    }
}

/// Data guarded by a `KSPIN_LOCK`. Lives inside a [`PoolBox`] (nonpaged),
/// so it may be locked from a DPC.
pub(crate) struct SpinLock<T> {
    lock: UnsafeCell<KSPIN_LOCK>,
    data: UnsafeCell<T>,
}

// SAFETY: access to `data` only happens through a guard, and a guard only
// exists while the KSPIN_LOCK is held, which excludes every other CPU; `T`
// itself must be `Send` to be handed between the CPUs that take the lock.
unsafe impl<T: Send> Sync for SpinLock<T> {}
// SAFETY: moving the lock moves the data with it; no guard can exist then.
unsafe impl<T: Send> Send for SpinLock<T> {}

impl<T> SpinLock<T> {
    /// A released lock over `value` (`KeInitializeSpinLock` stores 0).
    pub(crate) const fn new(value: T) -> Self {
        SpinLock {
            lock: UnsafeCell::new(0),
            data: UnsafeCell::new(value),
        }
    }

    /// Raises to DISPATCH_LEVEL and takes the lock.
    ///
    /// IRQL: ≤ DISPATCH_LEVEL on entry; DISPATCH_LEVEL while the guard
    /// lives; back to the caller's IRQL when it drops.
    pub(crate) fn lock(&self) -> SpinLockGuard<'_, T> {
        // SAFETY: the lock word lives as long as `self` and is only ever
        // passed to the Ke spin-lock routines; IRQL <= DISPATCH_LEVEL is the
        // caller's documented precondition.
        let old_irql = unsafe { KeAcquireSpinLockRaiseToDpc(self.lock.get()) };
        SpinLockGuard {
            owner: self,
            old_irql: Some(old_irql),
            _not_send: PhantomData,
        }
    }

    /// Takes the lock from code already at DISPATCH_LEVEL (a DPC).
    ///
    /// # Safety
    /// The caller runs at DISPATCH_LEVEL.
    pub(crate) unsafe fn lock_at_dpc_level(&self) -> SpinLockGuard<'_, T> {
        // SAFETY: as in `lock`; the caller guarantees DISPATCH_LEVEL, which
        // KeAcquireSpinLockAtDpcLevel requires.
        unsafe { KeAcquireSpinLockAtDpcLevel(self.lock.get()) };
        SpinLockGuard {
            owner: self,
            old_irql: None,
            _not_send: PhantomData,
        }
    }
}

/// Holds a [`SpinLock`]; releases it (and restores the IRQL) on drop.
pub(crate) struct SpinLockGuard<'a, T> {
    owner: &'a SpinLock<T>,
    old_irql: Option<KIRQL>,
    /// Not `Send`: a spin lock is released, and the IRQL restored, on the
    /// CPU that took it.
    _not_send: PhantomData<*const ()>,
}

impl<T> Deref for SpinLockGuard<'_, T> {
    type Target = T;
    fn deref(&self) -> &T {
        // SAFETY: the guard exists only while the lock is held.
        unsafe { &*self.owner.data.get() }
    }
}

impl<T> DerefMut for SpinLockGuard<'_, T> {
    fn deref_mut(&mut self) -> &mut T {
        // SAFETY: the guard exists only while the lock is held, and
        // `&mut self` makes this the only reference through it.
        unsafe { &mut *self.owner.data.get() }
    }
}

impl<T> Drop for SpinLockGuard<'_, T> {
    fn drop(&mut self) {
        // SAFETY: this guard took the lock, in the matching way: with an
        // IRQL raise (restore it) or at DPC level (release only).
        unsafe {
            match self.old_irql {
                Some(irql) => KeReleaseSpinLock(self.owner.lock.get(), irql),
                None => KeReleaseSpinLockFromDpcLevel(self.owner.lock.get()),
            }
        }
    }
}
