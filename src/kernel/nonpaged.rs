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
    KeClearEvent, KeInitializeEvent, KeInitializeMutex, KeReleaseMutex, KeReleaseSpinLock,
    KeReleaseSpinLockFromDpcLevel, KeSetEvent, KeWaitForSingleObject,
};
use wdk_sys::{
    _EVENT_TYPE, _KWAIT_REASON, KEVENT, KIRQL, KMUTEX, KPROCESSOR_MODE, KSPIN_LOCK,
    POOL_FLAG_NON_PAGED,
};

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

// SAFETY: a PoolBox owns its T like a Box does; sending it sends the T.
unsafe impl<T: Send> Send for PoolBox<T> {}

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

/// `KernelMode` (`KPROCESSOR_MODE`).
const KERNEL_MODE: KPROCESSOR_MODE = 0;

/// Waits, in kernel mode, not alertable and without a timeout, until a
/// dispatcher object is signalled (and, for a mutex, owned).
///
/// IRQL: PASSIVE_LEVEL.
///
/// # Safety
/// `object` is an initialised dispatcher object (`KMUTEX`, `KEVENT`) in
/// nonpaged memory that stays valid during the wait.
unsafe fn wait_for(object: *mut core::ffi::c_void) {
    // SAFETY: the caller's guarantee; such a wait returns STATUS_SUCCESS
    // only, so its status says nothing.
    let _ = unsafe {
        KeWaitForSingleObject(
            object,
            _KWAIT_REASON::Executive,
            KERNEL_MODE,
            0,
            core::ptr::null_mut(),
        )
    };
}

/// Data guarded by a kernel mutex (`KMUTEX`), for state that PASSIVE_LEVEL
/// code changes while it waits for other things (stopping a stream waits
/// for its DPC and work item). Unlike a spin lock it may be held across a
/// wait; unlike a fast mutex it leaves the IRQL at PASSIVE_LEVEL (it only
/// disables normal kernel APCs), so `KeFlushQueuedDpcs` and waits may run
/// under it. It is recursive for the thread that holds it.
///
/// IRQL: PASSIVE_LEVEL only (taking it waits). Initialise in place with
/// [`Self::init`] before the first `lock`.
pub(crate) struct KernelMutex<T> {
    mutex: UnsafeCell<KMUTEX>,
    data: UnsafeCell<T>,
}

// SAFETY: `data` is reached only through a guard, which exists only while
// the KMUTEX is held by the current thread; `T: Send` lets it be used from
// whichever thread takes the mutex.
unsafe impl<T: Send> Sync for KernelMutex<T> {}
// SAFETY: as for `SpinLock`.
unsafe impl<T: Send> Send for KernelMutex<T> {}

impl<T> KernelMutex<T> {
    /// An uninitialised mutex over `value`; call [`Self::init`] at its final
    /// address.
    pub(crate) fn new(value: T) -> Self {
        KernelMutex {
            // SAFETY: KMUTEX is a plain kernel struct; `init` writes it
            // before any use and zero is a valid placeholder.
            mutex: UnsafeCell::new(unsafe { core::mem::zeroed() }),
            data: UnsafeCell::new(value),
        }
    }

    /// Initialises the mutex in place (signalled, not owned).
    ///
    /// IRQL: PASSIVE_LEVEL. Called once, before any `lock`, at the
    /// address the mutex keeps for its life (nonpaged).
    pub(crate) fn init(&self) {
        // SAFETY: the KMUTEX lives in a cell at a stable nonpaged address;
        // no thread uses it yet.
        unsafe { KeInitializeMutex(self.mutex.get(), 0) };
    }

    /// Waits for and takes the mutex.
    ///
    /// IRQL: PASSIVE_LEVEL.
    pub(crate) fn lock(&self) -> KernelMutexGuard<'_, T> {
        // SAFETY: an initialised KMUTEX in nonpaged memory; PASSIVE_LEVEL.
        unsafe { wait_for(self.mutex.get().cast()) };
        KernelMutexGuard {
            owner: self,
            _not_send: PhantomData,
        }
    }
}

/// Holds a [`KernelMutex`]; releases it on drop.
pub(crate) struct KernelMutexGuard<'a, T> {
    owner: &'a KernelMutex<T>,
    /// Not `Send`: a mutex is released by the thread that owns it.
    _not_send: PhantomData<*const ()>,
}

impl<T> Deref for KernelMutexGuard<'_, T> {
    type Target = T;
    fn deref(&self) -> &T {
        // SAFETY: the guard exists only while this thread owns the mutex.
        unsafe { &*self.owner.data.get() }
    }
}

impl<T> DerefMut for KernelMutexGuard<'_, T> {
    fn deref_mut(&mut self) -> &mut T {
        // SAFETY: as in `deref`, and `&mut self` makes it the only reference.
        unsafe { &mut *self.owner.data.get() }
    }
}

impl<T> Drop for KernelMutexGuard<'_, T> {
    /// IRQL: PASSIVE_LEVEL (`KeReleaseMutex` without a following wait).
    fn drop(&mut self) {
        // SAFETY: this thread owns the mutex (the guard took it).
        unsafe { KeReleaseMutex(self.owner.mutex.get(), 0) };
    }
}

/// A notification event (`KEVENT`): set, cleared, waited on.
///
/// IRQL: `set` and `clear` ≤ DISPATCH_LEVEL; `wait` PASSIVE_LEVEL. Initialise
/// in place with [`Self::init`].
pub(crate) struct Event(UnsafeCell<KEVENT>);

// SAFETY: a KEVENT is made to be signalled and waited on from any CPU; the
// kernel serialises access to it.
unsafe impl Sync for Event {}
// SAFETY: as above.
unsafe impl Send for Event {}

impl Event {
    /// An uninitialised event; call [`Self::init`] at its final address.
    pub(crate) fn new() -> Self {
        // SAFETY: KEVENT is a plain kernel struct; zero is a valid
        // placeholder until `init`.
        Event(UnsafeCell::new(unsafe { core::mem::zeroed() }))
    }

    /// Initialises the event in place, signalled or not.
    ///
    /// IRQL: ≤ DISPATCH_LEVEL; called once at the event's final address.
    pub(crate) fn init(&self, signalled: bool) {
        // SAFETY: a KEVENT at a stable nonpaged address, not yet in use.
        unsafe {
            KeInitializeEvent(
                self.0.get(),
                _EVENT_TYPE::NotificationEvent,
                u8::from(signalled),
            );
        };
    }

    /// Signals the event (without a following wait).
    ///
    /// IRQL: ≤ DISPATCH_LEVEL.
    pub(crate) fn set(&self) {
        // SAFETY: an initialised event; Wait = FALSE may be used at <= DISPATCH.
        unsafe { KeSetEvent(self.0.get(), 0, 0) };
    }

    /// Clears the event.
    ///
    /// IRQL: ≤ DISPATCH_LEVEL.
    pub(crate) fn clear(&self) {
        // SAFETY: an initialised event.
        unsafe { KeClearEvent(self.0.get()) };
    }

    /// Waits until the event is signalled.
    ///
    /// IRQL: PASSIVE_LEVEL.
    pub(crate) fn wait(&self) {
        // SAFETY: an initialised event in nonpaged memory; PASSIVE_LEVEL.
        unsafe { wait_for(self.0.get().cast()) };
    }
}
