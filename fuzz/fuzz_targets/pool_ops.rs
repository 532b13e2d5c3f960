//! Pool operations: sequences of allocate, free (of a held frame, a foreign
//! address, an interior address, a doubled free, a never-allocated slot,
//! any address) and lookup / contains / `slot_of` of anything, over a pool
//! of 1..=64 slots of any size and alignment (odd slot sizes included, for
//! the slot arithmetic) anywhere in the address space. A model of the
//! slots (an array of held flags, slot numbers by division) gives every
//! return value, and the counters (`in_use`, `high_water`,
//! `failed_allocations`, `rejected_frees`, `capacity`) are compared with
//! it exactly after every step.
#![no_main]

use arbitrary::Arbitrary;
use avscap::portable::frame_pool::{Frame, FramePool, FreeError, Region};
use avscap::portable::framing::{plan, Alignment};
use libfuzzer_sys::fuzz_target;

#[derive(Arbitrary, Debug)]
enum Addr {
    /// The start of slot `n` (modulo one past the last) plus `delta`.
    Slot(u8, i32),
    /// The start of the n-th held frame.
    Held(u8),
    /// The start of the n-th frame freed before.
    Freed(u8),
    /// The region's first byte plus `delta`.
    Region(i32),
    Raw(usize),
}

#[derive(Arbitrary, Debug)]
enum Op {
    Allocate,
    Free(Addr),
    Lookup(Addr),
}

#[derive(Arbitrary, Debug)]
struct Input {
    frames: u8,
    frame_size: Result<u16, u32>,
    align: u8,
    /// Where the region starts (page `base`, then `low` bytes on: the
    /// slots start after the alignment padding).
    base: u64,
    low: u16,
    logical: u64,
    top: bool,
    ops: Vec<Op>,
}

/// The pool as the model keeps it.
struct Model {
    /// Address of slot 0.
    start: u128,
    logical_start: u128,
    slot: u128,
    frame_size: u32,
    held: Vec<bool>,
    freed: Vec<usize>,
    high_water: u32,
    failed: u64,
    rejected: u64,
}

impl Model {
    fn in_use(&self) -> u32 {
        self.held.iter().filter(|&&h| h).count() as u32
    }

    fn frame(&self, i: usize) -> Frame {
        let off = self.slot * i as u128;
        Frame {
            virtual_address: (self.start + off) as usize,
            logical_address: (self.logical_start + off) as u64,
            index: i as u32,
            len: self.frame_size,
        }
    }

    /// The slot starting at `address`, by division.
    fn slot_of(&self, address: usize) -> Result<usize, FreeError> {
        let a = address as u128;
        let n = self.held.len() as u128;
        if a < self.start || a - self.start >= self.slot * n {
            return Err(FreeError::Foreign);
        }
        let off = a - self.start;
        if !off.is_multiple_of(self.slot) {
            return Err(FreeError::NotSlotStart);
        }
        Ok((off / self.slot) as usize)
    }

    fn address(&self, a: &Addr) -> usize {
        let held: Vec<usize> = (0..self.held.len()).filter(|&i| self.held[i]).collect();
        match *a {
            Addr::Slot(n, d) => {
                let i = usize::from(n) % (self.held.len() + 1);
                (self.start + self.slot * i as u128).wrapping_add_signed(i128::from(d)) as usize
            }
            Addr::Held(n) if !held.is_empty() => {
                self.frame(held[usize::from(n) % held.len()])
                    .virtual_address
            }
            Addr::Freed(n) if !self.freed.is_empty() => {
                self.frame(self.freed[usize::from(n) % self.freed.len()])
                    .virtual_address
            }
            Addr::Held(_) | Addr::Freed(_) => self.start as usize,
            Addr::Region(d) => (self.start as usize).wrapping_add_signed(d as isize),
            Addr::Raw(v) => v,
        }
    }
}

fuzz_target!(|input: Input| {
    let frames = u32::from(input.frames % 64) + 1;
    let frame_size = match input.frame_size {
        Ok(v) => u32::from(v).max(1),
        Err(v) => v.max(1),
    };
    let align = 1u64 << (input.align % 32);
    let slot = u128::from(u64::from(frame_size).div_ceil(align) * align);
    let Ok(slot_size) = u32::try_from(slot) else {
        return;
    };
    let span = slot * u128::from(frames) + u128::from(align);
    // A region just long enough (with room for the alignment padding), at
    // any base: near the top of the address space too.
    // (Room for the low bytes and the logical base's rounding too.)
    let limit = u128::from(u64::MAX) - span - u128::from(align) - 65_536;
    let pick = |v: u64| -> u64 {
        if input.top {
            (limit - u128::from(v % 4096)) as u64
        } else {
            (u128::from(v) % limit) as u64
        }
    };
    let virt = pick(input.base).wrapping_add(u64::from(input.low)) as usize;
    // The same offset from alignment in both address spaces.
    let logical = pick(input.logical) / align * align + virt as u64 % align;
    let region = Region {
        virtual_base: virt,
        logical_base: logical,
        len: span as usize,
    };
    let alignment = Alignment::new(align as u32).unwrap();
    let plan = plan(frames, frame_size, alignment, &region).unwrap();
    assert_eq!(plan.slot_size(), slot_size);
    let first = u128::from(plan.first_offset());
    let pool = FramePool::with_plan(plan);

    let mut m = Model {
        start: virt as u128 + first,
        logical_start: u128::from(logical) + first,
        slot,
        frame_size,
        held: vec![false; frames as usize],
        freed: Vec::new(),
        high_water: 0,
        failed: 0,
        rejected: 0,
    };
    assert_eq!(m.start % u128::from(align), 0);

    for op in input.ops.iter().take(512) {
        match op {
            Op::Allocate => match pool.allocate() {
                Some(f) => {
                    let i = f.index as usize;
                    assert!(i < m.held.len() && !m.held[i], "slot {i} handed out twice");
                    assert_eq!(f, m.frame(i));
                    m.held[i] = true;
                    m.high_water = m.high_water.max(m.in_use());
                }
                None => {
                    assert_eq!(m.in_use(), frames, "a free slot was refused");
                    m.failed += 1;
                }
            },
            Op::Free(a) => {
                let address = m.address(a);
                let want = m.slot_of(address).and_then(|i| {
                    if m.held[i] {
                        Ok(i as u32)
                    } else {
                        Err(FreeError::NotAllocated)
                    }
                });
                assert_eq!(pool.free(address), want, "free({address:#x})");
                match want {
                    Ok(i) => {
                        m.held[i as usize] = false;
                        m.freed.push(i as usize);
                    }
                    Err(_) => m.rejected += 1,
                }
            }
            Op::Lookup(a) => {
                let address = m.address(a);
                let slot = m.slot_of(address);
                assert_eq!(pool.slot_of(address), slot.map(|i| i as u32));
                let want = slot.ok().filter(|&i| m.held[i]).map(|i| m.frame(i));
                assert_eq!(pool.lookup(address), want, "lookup({address:#x})");
                assert_eq!(pool.contains(address), want.is_some());
            }
        }
        assert_eq!(pool.capacity(), frames);
        assert_eq!(pool.in_use(), m.in_use());
        assert_eq!(pool.high_water(), m.high_water);
        assert_eq!(pool.failed_allocations(), m.failed);
        assert_eq!(pool.rejected_frees(), m.rejected);
    }
});
