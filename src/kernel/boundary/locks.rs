//! Locks and events: a `KSPIN_LOCK` over data that DPCs touch, a `KMUTEX`
//! over data that PASSIVE_LEVEL code changes while it waits, a notification
//! event, and the token that proves code runs at DISPATCH_LEVEL.
//!
//! The dispatcher objects (`KMUTEX`, `KEVENT`) are self-referential once
//! initialised (their wait lists point at themselves), so each lives in a
//! pool block of its own, initialised there and never moved: the Rust value
//! that owns it may move freely.

use core::cell::UnsafeCell;
use core::marker::PhantomData;
use core::mem::MaybeUninit;
use core::ops::{Deref, DerefMut};

use wdk_sys::ntddk::{
    KeAcquireSpinLockAtDpcLevel, KeAcquireSpinLockRaiseToDpc, KeClearEvent, KeInitializeEvent,
    KeInitializeMutex, KeReleaseMutex, KeReleaseSpinLock, KeReleaseSpinLockFromDpcLevel,
    KeSetEvent, KeWaitForSingleObject,
};
use wdk_sys::{_EVENT_TYPE, _KWAIT_REASON, KEVENT, KIRQL, KMUTEX, KPROCESSOR_MODE, KSPIN_LOCK};

use super::pool_box::PoolBox;

/// Proof that the code holding it runs at DISPATCH_LEVEL: only the DPC
/// trampoline ([`super::TimerWorker`]) makes one, and it cannot leave the
/// DPC (not `Send`, and borrowed for the DPC's duration).
pub struct DispatchLevel {
    _not_send: PhantomData<*const ()>,
}

impl DispatchLevel {
    /// The token for a DPC routine.
    ///
    /// # Safety
    /// The caller runs at DISPATCH_LEVEL for as long as the token lives.
    pub(super) const unsafe fn assume() -> Self {
        Self {
            _not_send: PhantomData,
        }
    }
}

/// Data guarded by a `KSPIN_LOCK`. Kept in nonpaged memory (a
/// [`PoolBox`]), so it may be locked from a DPC.
pub struct SpinLock<T> {
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
    /// A released lock over `value` (`KeInitializeSpinLock` stores 0; a
    /// spin lock, unlike a dispatcher object, may move while released).
    pub(crate) const fn new(value: T) -> Self {
        Self {
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
    /// IRQL: DISPATCH_LEVEL (the token's proof).
    pub(crate) fn lock_at_dpc_level<'a>(&'a self, _at: &'a DispatchLevel) -> SpinLockGuard<'a, T> {
        // SAFETY: as in `lock`; the token proves DISPATCH_LEVEL, which
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
pub struct SpinLockGuard<'a, T> {
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
    /// IRQL: DISPATCH_LEVEL (the lock is held); back to the IRQL `lock`
    /// raised from.
    fn drop(&mut self) {
        match self.old_irql {
            // SAFETY: this guard took the lock with an IRQL raise from
            // `irql`, on this CPU (the guard is not Send).
            Some(irql) => unsafe { KeReleaseSpinLock(self.owner.lock.get(), irql) },
            // SAFETY: this guard took the lock at DPC level, on this CPU.
            None => unsafe { KeReleaseSpinLockFromDpcLevel(self.owner.lock.get()) },
        }
    }
}

/// `KernelMode` (`KPROCESSOR_MODE`).
const KERNEL_MODE: KPROCESSOR_MODE = 0;

/// A dispatcher object (`KMUTEX`, `KEVENT`) in a nonpaged block of its own,
/// initialised there and never moved.
struct DispatcherObject<T>(PoolBox<UnsafeCell<MaybeUninit<T>>>);

impl<T> DispatcherObject<T> {
    /// An uninitialised object's block; `None` when the pool is exhausted.
    ///
    /// IRQL: ≤ DISPATCH_LEVEL.
    fn allocate() -> Option<Self> {
        PoolBox::try_new(UnsafeCell::new(MaybeUninit::uninit())).map(Self)
    }

    /// The object's address, stable for the block's life.
    fn get(&self) -> *mut T {
        self.0.get().cast()
    }

    /// Waits, in kernel mode, not alertable and without a timeout, until
    /// the object is signalled (and, for a mutex, owned).
    ///
    /// IRQL: PASSIVE_LEVEL.
    ///
    /// # Safety
    /// The object has been initialised.
    unsafe fn wait(&self) {
        // SAFETY: an initialised dispatcher object in nonpaged memory that
        // stays valid during the wait (`&self`); such a wait returns
        // STATUS_SUCCESS only, so its status says nothing.
        let _ = unsafe {
            KeWaitForSingleObject(
                self.get().cast(),
                _KWAIT_REASON::Executive,
                KERNEL_MODE,
                0,
                core::ptr::null_mut(),
            )
        };
    }
}

/// Data guarded by a kernel mutex (`KMUTEX`), for state that PASSIVE_LEVEL
/// code changes while it waits for other things (stopping a stream waits
/// for its DPC and work item). Unlike a spin lock it may be held across a
/// wait; unlike a fast mutex it leaves the IRQL at PASSIVE_LEVEL (it only
/// disables normal kernel APCs), so `KeFlushQueuedDpcs` and waits may run
/// under it. It is recursive for the thread that holds it.
///
/// IRQL: PASSIVE_LEVEL only (taking it waits).
pub struct KernelMutex<T> {
    /// Initialised by `try_new`.
    mutex: DispatcherObject<KMUTEX>,
    data: UnsafeCell<T>,
}

// SAFETY: `data` is reached only through a guard, which exists only while
// the KMUTEX is held by the current thread; `T: Send` lets it be used from
// whichever thread takes the mutex.
unsafe impl<T: Send> Sync for KernelMutex<T> {}
#[expect(
    clippy::non_send_fields_in_send_ty,
    reason = "the KMUTEX's block is used only through the Ke routines, from any thread"
)]
// SAFETY: as for `SpinLock`; the KMUTEX is a kernel object any thread may
// wait on and (once it owns it) release.
unsafe impl<T: Send> Send for KernelMutex<T> {}

impl<T> KernelMutex<T> {
    /// A released mutex over `value`, or `None` when the pool is exhausted.
    ///
    /// IRQL: PASSIVE_LEVEL.
    pub(crate) fn try_new(value: T) -> Option<Self> {
        let mutex = DispatcherObject::<KMUTEX>::allocate()?;
        // SAFETY: a KMUTEX-sized block of nonpaged memory of its own, never
        // moved, not yet in use; KeInitializeMutex writes all of it.
        unsafe { KeInitializeMutex(mutex.get(), 0) };
        Some(Self {
            mutex,
            data: UnsafeCell::new(value),
        })
    }

    /// Waits for and takes the mutex.
    ///
    /// IRQL: PASSIVE_LEVEL.
    pub(crate) fn lock(&self) -> KernelMutexGuard<'_, T> {
        // SAFETY: initialised in `try_new`.
        unsafe { self.mutex.wait() };
        KernelMutexGuard {
            owner: self,
            _not_send: PhantomData,
        }
    }
}

/// Holds a [`KernelMutex`]; releases it on drop.
pub struct KernelMutexGuard<'a, T> {
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
        // SAFETY: this thread owns the initialised mutex (the guard took it
        // and is not Send).
        unsafe { KeReleaseMutex(self.owner.mutex.get(), 0) };
    }
}

/// A notification event (`KEVENT`): set, cleared, waited on.
///
/// IRQL: `set` and `clear` ≤ DISPATCH_LEVEL; `wait` PASSIVE_LEVEL.
pub struct Event(DispatcherObject<KEVENT>);

// SAFETY: a KEVENT is made to be signalled and waited on from any CPU; the
// kernel serialises access to it.
unsafe impl Sync for Event {}
#[expect(
    clippy::non_send_fields_in_send_ty,
    reason = "the KEVENT's block is used only through the Ke routines, from any CPU"
)]
// SAFETY: as above.
unsafe impl Send for Event {}

impl Event {
    /// A notification event, signalled or not; `None` when the pool is
    /// exhausted.
    ///
    /// IRQL: ≤ DISPATCH_LEVEL.
    pub(crate) fn try_new(signalled: bool) -> Option<Self> {
        let event = DispatcherObject::<KEVENT>::allocate()?;
        // SAFETY: a KEVENT-sized nonpaged block of its own, never moved,
        // not yet in use; KeInitializeEvent writes all of it.
        unsafe {
            KeInitializeEvent(
                event.get(),
                _EVENT_TYPE::NotificationEvent,
                u8::from(signalled),
            );
        };
        Some(Self(event))
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
        // SAFETY: initialised in `try_new`.
        unsafe { self.0.wait() };
    }
}
