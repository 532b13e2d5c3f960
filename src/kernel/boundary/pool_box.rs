//! Nonpaged, tagged storage for the driver's contexts.
//!
//! Every context the driver allocates (device, pin, allocator, the timer
//! worker, the kernel mutex's object) lives in a [`PoolBox`]:
//! `ExAllocatePool2(POOL_FLAG_NON_PAGED)` memory, which is NX and never
//! paged out, so DISPATCH_LEVEL code may touch it, tagged [`POOL_TAG`] so
//! `!poolused` and Driver Verifier's pool tracking attribute it. Allocation
//! failure is an error the caller maps to `STATUS_INSUFFICIENT_RESOURCES`,
//! never a panic.
//!
//! A box's contents never move while it lives (the pool block stays where
//! it is), which is what lets kernel objects that must not move (timers,
//! DPCs, dispatcher objects) live in one.

use core::marker::PhantomData;
use core::ops::{Deref, DerefMut};
use core::ptr::NonNull;

use wdk_sys::ntddk::{ExAllocatePool2, ExFreePoolWithTag};
use wdk_sys::POOL_FLAG_NON_PAGED;

/// Pool tag of every allocation the driver makes: `'pcvA'` reads "Avcp" in
/// a debugger's little-endian dump.
pub const POOL_TAG: u32 = u32::from_le_bytes(*b"Avcp");

/// An owned `T` in nonpaged pool, freed with its tag on drop.
///
/// Invariant: `ptr` is a live `ExAllocatePool2` block tagged [`POOL_TAG`],
/// at least `size_of::<T>()` bytes, 16-byte aligned, holding an initialised
/// `T` that this box alone owns.
pub struct PoolBox<T> {
    ptr: NonNull<T>,
    _owns: PhantomData<T>,
}

impl<T> PoolBox<T> {
    /// Moves `value` into a new nonpaged allocation.
    ///
    /// IRQL: ≤ DISPATCH_LEVEL (`ExAllocatePool2` with a nonpaged flag).
    /// Returns `None` when the pool is exhausted.
    pub(crate) fn try_new(value: T) -> Option<Self> {
        const {
            assert!(
                core::mem::align_of::<T>() <= 16,
                "pool blocks are 16-byte aligned"
            );
        }
        let size = core::mem::size_of::<T>().max(1) as u64;
        // SAFETY: ExAllocatePool2 may be called at IRQL <= DISPATCH_LEVEL
        // for nonpaged memory; it returns NULL or a block of at least `size`
        // bytes aligned to 16 (pool alignment on x64), which covers `T`'s
        // alignment (checked above).
        let raw = unsafe { ExAllocatePool2(POOL_FLAG_NON_PAGED, size, POOL_TAG) };
        let ptr = NonNull::new(raw.cast::<T>())?;
        // SAFETY: `ptr` is a fresh, exclusively owned, suitably sized and
        // aligned allocation; writing initialises it without reading it.
        unsafe { ptr.as_ptr().write(value) };
        Some(Self {
            ptr,
            _owns: PhantomData,
        })
    }

    /// Gives up ownership: the caller stores the pointer (in a KS object's
    /// `Context`, a bag) and later rebuilds the box with [`Self::from_raw`].
    ///
    /// IRQL: any.
    pub(super) const fn into_raw(self) -> *mut T {
        let ptr = self.ptr.as_ptr();
        core::mem::forget(self);
        ptr
    }

    /// The address of the contents, stable for the box's life (for a
    /// kernel object's context pointer).
    ///
    /// IRQL: any.
    pub(super) const fn as_ptr(&self) -> *const T {
        self.ptr.as_ptr()
    }

    /// Takes back ownership of a pointer made by [`Self::into_raw`].
    ///
    /// IRQL: any.
    ///
    /// # Safety
    /// `ptr` is null or came from `into_raw` of a `PoolBox<T>`, and no other
    /// box owns it or will be made from it.
    pub(super) unsafe fn from_raw(ptr: *mut T) -> Option<Self> {
        NonNull::new(ptr).map(|ptr| Self {
            ptr,
            _owns: PhantomData,
        })
    }
}

// SAFETY: a PoolBox owns its T like a Box does; sending it sends the T.
unsafe impl<T: Send> Send for PoolBox<T> {}
// SAFETY: sharing a PoolBox shares only `&T`.
unsafe impl<T: Sync> Sync for PoolBox<T> {}

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
    /// IRQL: ≤ DISPATCH_LEVEL for the free (`ExFreePoolWithTag` of
    /// nonpaged memory), and whatever `T`'s drop requires; the driver drops
    /// its boxes at PASSIVE_LEVEL.
    fn drop(&mut self) {
        // SAFETY: the box owns an initialised T, dropped once here.
        unsafe { core::ptr::drop_in_place(self.ptr.as_ptr()) };
        // SAFETY: the block was allocated by ExAllocatePool2 with POOL_TAG
        // and is freed with the same tag, once, and never touched again.
        unsafe { ExFreePoolWithTag(self.ptr.as_ptr().cast(), POOL_TAG) };
    }
}
