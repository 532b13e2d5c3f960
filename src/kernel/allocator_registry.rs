//! The device's allocators: the pools of the live ones (Process writes
//! frames of a live pool in place) and the ones deleted while their frames
//! were still out, parked until PnP stop or remove.
//!
//! Every allocator instance gets a common buffer of its own; the core's
//! frame pool hands out its slots. A pool is registered from
//! `InitializeAllocator` to `DeleteAllocator`; an allocator deleted with
//! frames out (nobody can return them any more; freeing the buffer under
//! them could corrupt whoever still writes there) is parked, and freed at
//! PnP stop or remove, before the DMA adapter goes back.

use core::sync::atomic::{AtomicU32, Ordering};

use super::boundary::{debug_print, DeviceRef, PoolBox, PooledBuffer, SpinLock};
use crate::portable::frame_pool::FramePool;

/// Most allocator instances alive on one device at once (one per
/// connection; a graph replacing its allocator briefly has two).
pub const MAX_LIVE_ALLOCATORS: usize = 8;

/// One allocator instance: its frames (a pool over a common buffer of its
/// own) and the registry it is registered with.
pub struct AllocatorContext {
    /// Freed with the allocator, at PASSIVE_LEVEL.
    frames: PooledBuffer,
    registry: DeviceRef<AllocatorRegistry>,
    /// The next parked allocator (the registry's list of allocators deleted
    /// with frames out).
    parked_next: Option<PoolBox<Self>>,
}

impl AllocatorContext {
    /// An allocator handing out `frames`, for `registry`'s device.
    ///
    /// IRQL: any.
    pub(crate) const fn new(frames: PooledBuffer, registry: DeviceRef<AllocatorRegistry>) -> Self {
        Self {
            frames,
            registry,
            parked_next: None,
        }
    }

    /// The pool of the allocator's frames.
    ///
    /// IRQL: any.
    pub(crate) const fn pool(&self) -> &FramePool {
        self.frames.pool()
    }

    /// The registry this allocator belongs to.
    ///
    /// IRQL: any.
    pub(crate) const fn registry(&self) -> DeviceRef<AllocatorRegistry> {
        self.registry
    }
}

/// The pools of the device's live allocators (null: a free entry).
///
/// Invariant: a non-null entry is the pool of a live allocator, which
/// removes it (under the lock guarding this table) before it is freed.
pub struct LivePools([*const FramePool; MAX_LIVE_ALLOCATORS]);

// SAFETY: the pointers are only dereferenced under the lock that guards the
// table, and each pool is nonpaged and freed only after its entry is
// cleared under that lock (type invariant).
unsafe impl Send for LivePools {}

impl LivePools {
    /// The live pools. Valid while the lock that guards `self` is held,
    /// which the borrow of `self` proves.
    ///
    /// IRQL: any (the caller holds the table's spin lock).
    pub(crate) fn pools(&self) -> impl Iterator<Item = &FramePool> {
        // SAFETY: a non-null entry is a live pool while the table's lock is
        // held (type invariant).
        self.0.iter().filter_map(|p| unsafe { p.as_ref() })
    }
}

/// The device's allocators.
pub struct AllocatorRegistry {
    /// The live allocators' pools (zero-copy look-ups in Process).
    live: SpinLock<LivePools>,
    /// Allocators deleted with frames still out.
    parked: SpinLock<Option<PoolBox<AllocatorContext>>>,
    /// How many allocators were deleted with frames still out.
    leaks: AtomicU32,
}

impl AllocatorRegistry {
    /// No allocators.
    ///
    /// IRQL: any.
    pub(crate) const fn new() -> Self {
        Self {
            live: SpinLock::new(LivePools([core::ptr::null(); MAX_LIVE_ALLOCATORS])),
            parked: SpinLock::new(None),
            leaks: AtomicU32::new(0),
        }
    }

    /// The live pools, locked.
    ///
    /// IRQL: ≤ DISPATCH_LEVEL (a spin lock).
    pub(crate) fn live(&self) -> impl core::ops::Deref<Target = LivePools> + '_ {
        self.live.lock()
    }

    /// Registers a new allocator's pool; false when every entry is taken.
    ///
    /// IRQL: ≤ DISPATCH_LEVEL.
    pub(crate) fn register(&self, allocator: &PoolBox<AllocatorContext>) -> bool {
        let mut live = self.live.lock();
        let Some(entry) = live.0.iter_mut().find(|p| p.is_null()) else {
            return false;
        };
        *entry = allocator.pool();
        true
    }

    /// Unregisters an allocator being deleted, then frees it, or parks it
    /// (with a debug print) when frames are still out.
    ///
    /// IRQL: PASSIVE_LEVEL (its buffer may be freed).
    pub(crate) fn retire(&self, mut allocator: PoolBox<AllocatorContext>) {
        let pool: *const FramePool = allocator.pool();
        for entry in &mut self.live.lock().0 {
            if core::ptr::eq(*entry, pool) {
                *entry = core::ptr::null();
            }
        }
        if allocator.pool().in_use() == 0 {
            drop(allocator); // the buffer is freed here, at PASSIVE_LEVEL
            return;
        }
        self.leaks.fetch_add(1, Ordering::Relaxed);
        debug_print(
            c"avscap: allocator deleted with frames still out; its buffer is kept until the device stops\n",
        );
        let mut parked = self.parked.lock();
        allocator.parked_next = parked.take();
        *parked = Some(allocator);
    }

    /// Frees every parked allocator and its buffer (PnP stop or remove).
    ///
    /// IRQL: PASSIVE_LEVEL (common buffers are freed).
    pub(crate) fn free_parked(&self) {
        let mut list = self.parked.lock().take();
        while let Some(mut allocator) = list {
            list = allocator.parked_next.take();
            drop(allocator);
        }
    }
}
