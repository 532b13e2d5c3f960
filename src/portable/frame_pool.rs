//! The frame pool: N fixed slots carved out of a contiguous region (a common
//! buffer of an allocator instance or of a stream's staging slots), handed
//! out and taken back by address.
//!
//! The pool never touches the region's bytes and does not own it: addresses
//! are plain integers here, and the kernel shell, which owns the common
//! buffer, turns them into pointers.
//!
//! # Concurrency
//! `allocate`, `free`, `lookup` and the counters take `&self` and are
//! lock-free on core atomics: slot ownership is one bit per slot in a single
//! `AtomicU64`, claimed and released with compare-and-swap. That is what the
//! KS allocator callbacks need: they may run at DISPATCH_LEVEL on several
//! CPUs at once, where no wait is allowed. A failed CAS means another CPU
//! changed the word, i.e. made progress, and every retry re-reads it, so no
//! caller blocks and each attempt is a handful of instructions; with at
//! most 64 slots there is no list to walk. A spin lock would serve as well
//! but would need the shell's `KSPIN_LOCK`, which the host tests could not
//! exercise; the atomics are checked here, under loom (`tests/loom_pool.rs`).

#[cfg(loom)]
use loom::sync::atomic::{AtomicU32, AtomicU64, Ordering};

#[cfg(not(loom))]
use core::sync::atomic::{AtomicU32, AtomicU64, Ordering};

use super::framing::{self, Alignment, BufferPlan, FramingError, PoolPlan};

/// Most slots one pool tracks (one bit each in a 64-bit word).
pub const MAX_POOL_FRAMES: u32 = 64;

/// The inverse of an odd `n` modulo 2⁶⁴ (Newton's iteration: each step
/// doubles the correct low bits, from 3 for `n` itself). 1 for an even `n`
/// (never reached: the pool passes the odd part of a slot size ≥ 1).
const fn odd_inverse(n: u64) -> u64 {
    if n.is_multiple_of(2) {
        return 1;
    }
    let mut x = n;
    let mut i = 0;
    while i < 5 {
        x = x.wrapping_mul(2u64.wrapping_sub(n.wrapping_mul(x)));
        i += 1;
    }
    x
}

/// A contiguous, physically contiguous memory region: the common buffer or
/// a part of it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Region {
    /// Kernel virtual address of the first byte.
    pub virtual_base: usize,
    /// Device-visible (logical / bus) address of the first byte.
    pub logical_base: u64,
    /// Length in bytes.
    pub len: usize,
}

impl Region {
    /// The part of this region starting `offset` bytes in, `len` long.
    #[must_use]
    pub fn sub_region(&self, offset: usize, len: usize) -> Option<Self> {
        let end = offset.checked_add(len)?;
        if end > self.len {
            return None;
        }
        Some(Self {
            virtual_base: self.virtual_base.checked_add(offset)?,
            logical_base: self.logical_base.checked_add(offset as u64)?,
            len,
        })
    }
}

/// A frame handed out by the pool.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Frame {
    /// Kernel virtual address (what `Allocate` returns and `Free` receives).
    pub virtual_address: usize,
    /// Device-visible address the "hardware" writes to.
    pub logical_address: u64,
    /// Slot number, `0..frames`.
    pub index: u32,
    /// Usable bytes.
    pub len: u32,
}

/// Why a `free` was refused. A refused free changes nothing in the pool.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FreeError {
    /// The address lies outside the pool's slots: not our frame.
    Foreign,
    /// The address lies inside a slot but not at its start.
    NotSlotStart,
    /// The slot is not allocated (a double free, or a never-allocated slot).
    NotAllocated,
}

/// A short sentence for a person (a log line, the simulator's errors).
impl core::fmt::Display for FreeError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(match self {
            Self::Foreign => "the address is outside the pool's slots",
            Self::NotSlotStart => "the address is not the start of a slot",
            Self::NotAllocated => "the slot is not allocated",
        })
    }
}

#[cfg(test)]
mod free_error_display {
    use super::FreeError;

    #[test]
    fn every_error_is_a_sentence() {
        for e in [
            FreeError::Foreign,
            FreeError::NotSlotStart,
            FreeError::NotAllocated,
        ] {
            let s = e.to_string();
            assert!(s.starts_with("the ") && s.contains("slot"), "{e:?}: {s}");
        }
    }
}

/// The pool. See the module documentation for its concurrency contract.
///
/// # Cost
/// An `allocate` + `free` pair is two locked read-modify-writes on the
/// ownership word (a compare-and-swap to claim, a single-bit atomic AND —
/// `lock btr` on x86 — to release) and a few register operations: the slot
/// number of a freed address comes from one multiply and one rotate (no
/// division; see [`FramePool::slot_of`]), the number of slots out is
/// derived from the word when asked, not kept in a counter, and the
/// high-water mark is written only when it moves.
/// `benches/ratios.rs` measures the pair against two bare compare-and-swaps.
#[derive(Debug)]
pub struct FramePool {
    plan: PoolPlan,
    /// Virtual address of slot 0.
    start: u64,
    /// Logical address of slot 0.
    logical_start: u64,
    /// `plan.slot_size()`, at least 1.
    slot: u64,
    /// `slot = odd · 2^shift`; `inverse · odd ≡ 1 (mod 2⁶⁴)`: see
    /// [`FramePool::slot_of`].
    shift: u32,
    inverse: u64,
    /// One bit per slot.
    full: u64,
    /// Bit i set = slot i is handed out.
    allocated: AtomicU64,
    high_water: AtomicU32,
    failed_allocations: AtomicU64,
    rejected_frees: AtomicU64,
}

impl FramePool {
    /// Builds the pool for a buffer allocated by its [`BufferPlan`]
    /// ([`framing::allocator_plan`] for an allocator instance,
    /// [`framing::staging_plan`] for staging slots): page-aligned slots laid
    /// out over `region`, which must be the allocated buffer (page aligned
    /// in both address spaces, at least `plan.len` bytes).
    ///
    /// # Errors
    /// [`FramingError::RegionMisaligned`] or [`FramingError::DoesNotFit`]
    /// for a region that is not such a buffer.
    pub fn over(region: Region, plan: &BufferPlan) -> Result<Self, FramingError> {
        let pool_plan = framing::plan(plan.frames(), plan.frame_size(), Alignment::PAGE, &region)?;
        if pool_plan.first_offset() != 0 {
            return Err(FramingError::RegionMisaligned);
        }
        Ok(Self::with_plan(pool_plan))
    }

    /// Builds a pool from a plan [`framing::plan`] made (the only way to get
    /// a [`PoolPlan`]): 1..=64 slots of at least the frame size, every slot
    /// inside the plan's region with addresses that do not wrap. Nothing
    /// is checked again here.
    #[must_use]
    pub fn with_plan(plan: PoolPlan) -> Self {
        let frames = plan.frames();
        let full = if frames >= 64 {
            u64::MAX
        } else {
            (1u64 << frames) - 1
        };
        let slot = u64::from(plan.slot_size());
        let shift = slot.trailing_zeros();
        let region = plan.region();
        Self {
            start: (region.virtual_base as u64).wrapping_add(u64::from(plan.first_offset())),
            logical_start: region
                .logical_base
                .wrapping_add(u64::from(plan.first_offset())),
            plan,
            slot,
            shift,
            inverse: odd_inverse(slot >> shift),
            full,
            allocated: AtomicU64::new(0),
            high_water: AtomicU32::new(0),
            failed_allocations: AtomicU64::new(0),
            rejected_frees: AtomicU64::new(0),
        }
    }

    /// The layout this pool serves.
    #[must_use]
    pub const fn plan(&self) -> &PoolPlan {
        &self.plan
    }

    /// The region the pool carves.
    #[must_use]
    pub const fn region(&self) -> &Region {
        self.plan.region()
    }

    fn frame(&self, index: u32) -> Frame {
        // In range by construction: `framing::plan` kept every slot inside
        // the region and checked that no slot address wraps.
        let offset = u64::from(index) * self.slot;
        #[allow(clippy::cast_possible_truncation)]
        let virtual_address = self.start.wrapping_add(offset) as usize;
        Frame {
            virtual_address,
            logical_address: self.logical_start.wrapping_add(offset),
            index,
            len: self.plan.frame_size(),
        }
    }

    /// Takes a free slot, or returns `None` when all are out (and counts the
    /// failure). Never blocks; IRQL ≤ DISPATCH_LEVEL safe.
    #[must_use = "a frame dropped here stays out until its address is freed"]
    pub fn allocate(&self) -> Option<Frame> {
        let full = self.full;
        let mut current = self.allocated.load(Ordering::Acquire);
        loop {
            let free = !current & full;
            if free == 0 {
                self.failed_allocations.fetch_add(1, Ordering::Relaxed);
                return None;
            }
            let bit = free.trailing_zeros();
            let next = current | (1u64 << bit);
            match self.allocated.compare_exchange_weak(
                current,
                next,
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) => {
                    self.note_high_water(next);
                    return Some(self.frame(bit));
                }
                Err(seen) => current = seen,
            }
        }
    }

    /// Raises the high-water mark to the number of slots out in `word` (a
    /// state the ownership word held), writing it only when it moves. The
    /// highest set bit bounds the count from above, so in the steady state
    /// (the mark already at that bound) this is one plain load.
    fn note_high_water(&self, word: u64) {
        let mark = self.high_water.load(Ordering::Relaxed);
        if 64 - word.leading_zeros() <= mark {
            return;
        }
        let out = word.count_ones();
        if out > mark {
            self.high_water.fetch_max(out, Ordering::Relaxed);
        }
    }

    /// Maps an address to the slot that starts there, allocated or not.
    ///
    /// # Errors
    /// [`FreeError::Foreign`] or [`FreeError::NotSlotStart`].
    pub fn slot_of(&self, virtual_address: usize) -> Result<u32, FreeError> {
        // Below the first slot wraps to a huge offset.
        let offset = (virtual_address as u64).wrapping_sub(self.start);
        // offset / slot without a division (Hacker's Delight, 10-17): with
        // slot = odd · 2^shift, `offset · inverse` rotated right by `shift`
        // is the exact quotient when slot divides offset, and otherwise
        // exceeds (2⁶⁴ − 1) / slot, which is more than 2³² > 64 for a 32-bit
        // slot. So one comparison against the slot count accepts exactly
        // the slot starts of this pool.
        let index = offset.wrapping_mul(self.inverse).rotate_right(self.shift);
        if index < u64::from(self.plan.frames()) {
            // Below 64.
            #[allow(clippy::cast_possible_truncation)]
            return Ok(index as u32);
        }
        // Refused: say why (the slow path, only for bad pointers). At most
        // 64 slots of at most 4 GiB: the product does not overflow.
        if offset >= self.slot * u64::from(self.plan.frames()) {
            Err(FreeError::Foreign)
        } else {
            Err(FreeError::NotSlotStart)
        }
    }

    /// Returns a frame by its virtual address. A foreign pointer, a pointer
    /// not at a slot start and a slot that is not allocated are refused and
    /// counted, and leave the pool as it was. IRQL ≤ DISPATCH_LEVEL safe.
    ///
    /// # Errors
    /// The [`FreeError`] saying why it was refused.
    pub fn free(&self, virtual_address: usize) -> Result<u32, FreeError> {
        let result = self.slot_of(virtual_address).and_then(|index| {
            let bit = 1u64 << index;
            // Clearing a bit that is already clear leaves the word as it
            // was, so a doubled free needs no compare-and-swap loop: one
            // atomic AND, whose old value says whether the slot was out.
            if self.allocated.fetch_and(!bit, Ordering::AcqRel) & bit == 0 {
                Err(FreeError::NotAllocated)
            } else {
                Ok(index)
            }
        });
        if result.is_err() {
            self.rejected_frees.fetch_add(1, Ordering::Relaxed);
        }
        result
    }

    /// Is this frame address one of ours? True when it is the start of a slot
    /// that is handed out: the capture path's zero-copy test.
    #[must_use]
    pub fn contains(&self, virtual_address: usize) -> bool {
        self.lookup(virtual_address).is_some()
    }

    /// The frame (with its logical address) that starts at this address, if
    /// it is an allocated slot of this pool.
    #[must_use]
    pub fn lookup(&self, virtual_address: usize) -> Option<Frame> {
        let index = self.slot_of(virtual_address).ok()?;
        let allocated = self.allocated.load(Ordering::Acquire) & (1u64 << index) != 0;
        allocated.then(|| self.frame(index))
    }

    /// Number of slots.
    #[must_use]
    pub const fn capacity(&self) -> u32 {
        self.plan.frames()
    }

    /// Slots handed out now.
    #[must_use]
    pub fn in_use(&self) -> u32 {
        self.allocated.load(Ordering::Acquire).count_ones()
    }

    /// Most slots ever out at once.
    #[must_use]
    pub fn high_water(&self) -> u32 {
        self.high_water.load(Ordering::Relaxed)
    }

    /// `allocate` calls that found every slot out.
    #[must_use]
    pub fn failed_allocations(&self) -> u64 {
        self.failed_allocations.load(Ordering::Relaxed)
    }

    /// `free` calls refused (foreign, misplaced or doubled pointers).
    #[must_use]
    pub fn rejected_frees(&self) -> u64 {
        self.rejected_frees.load(Ordering::Relaxed)
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;
    use crate::portable::framing::plan;

    fn pool(frames: u32) -> FramePool {
        let region = Region {
            virtual_base: 0x40_0000,
            logical_base: 0x1000_0000,
            len: 1 << 22,
        };
        FramePool::with_plan(plan(frames, 10_000, Alignment::PAGE, &region).unwrap())
    }

    #[test]
    fn hands_out_n_distinct_aligned_frames_then_none() {
        let p = pool(3);
        let f: [Frame; 3] = core::array::from_fn(|_| p.allocate().unwrap());
        assert_eq!(p.allocate(), None);
        assert_eq!(p.failed_allocations(), 1);
        for fr in &f {
            assert_eq!(fr.virtual_address % 4096, 0);
            assert_eq!(fr.logical_address % 4096, 0);
            assert_eq!(fr.len, 10_000);
            assert_eq!(
                fr.logical_address - 0x1000_0000,
                (fr.virtual_address - 0x40_0000) as u64
            );
        }
        assert_eq!(f[1].virtual_address - f[0].virtual_address, 12_288);
        assert_eq!((p.in_use(), p.high_water()), (3, 3));
    }

    #[test]
    fn free_maps_back_and_slot_is_reused() {
        let p = pool(2);
        let a = p.allocate().unwrap();
        let b = p.allocate().unwrap();
        assert_eq!(p.free(a.virtual_address), Ok(a.index));
        assert_eq!(p.allocate(), Some(a));
        assert!(p.contains(b.virtual_address));
        assert_eq!(p.lookup(b.virtual_address), Some(b));
    }

    #[test]
    fn bad_frees_are_refused_and_change_nothing() {
        let p = pool(4);
        let a = p.allocate().unwrap();
        let before = (p.in_use(), p.high_water());
        assert_eq!(p.free(0x1234), Err(FreeError::Foreign));
        assert_eq!(p.free(a.virtual_address + 8), Err(FreeError::NotSlotStart));
        assert_eq!(
            p.free(a.virtual_address + 4 * 12_288),
            Err(FreeError::Foreign)
        );
        assert_eq!(
            p.free(a.virtual_address + 12_288),
            Err(FreeError::NotAllocated)
        );
        assert_eq!(p.free(a.virtual_address), Ok(0));
        assert_eq!(p.free(a.virtual_address), Err(FreeError::NotAllocated));
        assert_eq!(p.rejected_frees(), 5);
        assert_eq!(before, (1, 1));
        assert_eq!(p.in_use(), 0);
        assert!(!p.contains(a.virtual_address));
    }

    #[test]
    fn sixty_four_slots_use_the_whole_word() {
        let region = Region {
            virtual_base: 0,
            logical_base: 0,
            len: 64 * 4096,
        };
        let p = FramePool::with_plan(plan(64, 4096, Alignment::PAGE, &region).unwrap());
        for i in 0..64 {
            assert_eq!(p.allocate().unwrap().index, i);
        }
        assert_eq!(p.allocate(), None);
        assert_eq!(p.in_use(), 64);
    }

    /// The inverse multiply and rotate in `slot_of` against plain division, for
    /// slot sizes from 1 byte to 4 GiB − 1 (byte-aligned plans) and
    /// addresses at, next to and between slot starts.
    #[test]
    #[allow(clippy::std_instead_of_alloc)]
    fn slot_of_matches_division() {
        let sizes = [
            1u32,
            2,
            3,
            7,
            4095,
            4096,
            4097,
            12_288,
            3_110_400,
            12_441_600,
            0x7fff_ffff,
            0x8000_0000,
            u32::MAX - 1,
            u32::MAX,
        ];
        for slot in sizes {
            for frames in [1u32, 3, 64] {
                let base = 0x7f00_0000_0000usize;
                let region = Region {
                    virtual_base: base,
                    logical_base: 0,
                    len: usize::try_from(u64::from(slot) * u64::from(frames)).unwrap(),
                };
                let p = FramePool::with_plan(plan(frames, slot, Alignment::BYTE, &region).unwrap());
                let s = u64::from(slot);
                let span = s * u64::from(frames);
                let mut offsets = std::vec![0u64, 1, span - 1, span, span + 1];
                for i in 0..u64::from(frames) {
                    for d in [0i64, -1, 1, -2, 2] {
                        if let Some(o) = (i * s).checked_add_signed(d) {
                            offsets.push(o);
                        }
                    }
                }
                for o in offsets {
                    let expected = if o >= span {
                        Err(FreeError::Foreign)
                    } else if o % s != 0 {
                        Err(FreeError::NotSlotStart)
                    } else {
                        Ok(u32::try_from(o / s).unwrap())
                    };
                    let addr = base + usize::try_from(o).unwrap();
                    assert_eq!(p.slot_of(addr), expected, "slot {slot}, offset {o}");
                }
                assert_eq!(p.slot_of(base - 1), Err(FreeError::Foreign));
            }
        }
    }

    #[test]
    #[allow(clippy::std_instead_of_alloc)]
    fn high_water_follows_the_most_out_at_once() {
        let p = pool(8);
        let f: std::vec::Vec<_> = (0..5).map(|_| p.allocate().unwrap()).collect();
        assert_eq!(p.high_water(), 5);
        // Free slots 0..3: the next allocations take low bits while slot 4
        // stays out, so the highest set bit overstates the count.
        for fr in &f[..4] {
            p.free(fr.virtual_address).unwrap();
        }
        let g: std::vec::Vec<_> = (0..3).map(|_| p.allocate().unwrap()).collect();
        assert_eq!((p.in_use(), p.high_water()), (4, 5));
        let h: std::vec::Vec<_> = (0..2).map(|_| p.allocate().unwrap()).collect();
        assert_eq!((p.in_use(), p.high_water()), (6, 6));
        assert_eq!(g.len() + h.len(), 5);
    }

    #[test]
    fn sub_region_checks_bounds() {
        let r = Region {
            virtual_base: 100,
            logical_base: 1000,
            len: 50,
        };
        assert_eq!(
            r.sub_region(10, 40),
            Some(Region {
                virtual_base: 110,
                logical_base: 1010,
                len: 40
            })
        );
        assert_eq!(r.sub_region(10, 41), None);
        assert_eq!(r.sub_region(usize::MAX, 2), None);
    }

    #[test]
    #[allow(clippy::std_instead_of_alloc, clippy::std_instead_of_core)]
    fn concurrent_allocate_and_free_never_share_a_slot() {
        use std::sync::Arc;
        let p = Arc::new(pool(8));
        let threads: std::vec::Vec<_> = (0..4)
            .map(|_| {
                let p = Arc::clone(&p);
                std::thread::spawn(move || {
                    let mut owned = std::vec::Vec::new();
                    for round in 0..5_000u32 {
                        if round % 3 != 2 {
                            if let Some(f) = p.allocate() {
                                owned.push(f);
                            }
                        } else if let Some(f) = owned.pop() {
                            p.free(f.virtual_address).unwrap();
                        }
                    }
                    owned
                })
            })
            .collect();
        let mut seen = std::collections::HashSet::new();
        for t in threads {
            for f in t.join().unwrap() {
                assert!(seen.insert(f.index), "slot {} owned twice", f.index);
            }
        }
        assert_eq!(p.in_use() as usize, seen.len());
        assert!(p.high_water() <= 8);
    }
}
