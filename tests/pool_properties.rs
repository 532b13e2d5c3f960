//! Property tests of the frame pool and the framing validator.
#![allow(
    clippy::single_match_else,
    clippy::cast_possible_truncation,
    clippy::cast_sign_loss,
    clippy::cast_possible_wrap
)]

use avscap::portable::frame_pool::{FramePool, FreeError, Region, MAX_POOL_FRAMES};
use avscap::portable::framing::{
    self, Alignment, AllocatorFraming, FramingError, DEFAULT_PIN_FRAMES, MAX_FRAME_SIZE, PAGE_SIZE,
    REQUEST_FLAGS,
};
use proptest::prelude::*;
use std::collections::BTreeMap;

#[derive(Clone, Debug)]
enum Op {
    Allocate,
    /// Free the n-th frame we hold (modulo how many we hold).
    FreeHeld(usize),
    /// Free an arbitrary address relative to the region start.
    FreeAddress(i64),
    /// Free a frame we already freed (if any).
    FreeAgain(usize),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => Just(Op::Allocate),
        3 => any::<usize>().prop_map(Op::FreeHeld),
        2 => (-100_000i64..4_000_000).prop_map(Op::FreeAddress),
        1 => any::<usize>().prop_map(Op::FreeAgain),
    ]
}

fn snapshot(p: &FramePool) -> (u32, u32, u64) {
    (p.in_use(), p.high_water(), p.failed_allocations())
}

proptest! {
    // Miri interprets every case: a few there (the persisted regressions
    // still run first), the full count otherwise.
    #![proptest_config(ProptestConfig::with_cases(if cfg!(miri) { 8 } else { 1024 }))]

    /// Under any sequence of allocations and (good or bad) frees, the pool
    /// never hands out more than N frames, never two overlapping frames,
    /// never a misaligned one, and every rejected free leaves it unchanged.
    #[test]
    fn pool_never_overlaps_misaligns_or_overcommits(
        frames in 1u32..=16,
        frame_size in 1u32..200_000,
        align_shift in 0u32..=12,
        ops in proptest::collection::vec(op(), 1..200),
    ) {
        let alignment = 1u32 << align_shift;
        let region = Region { virtual_base: 0x7700_0000 + 0x40, logical_base: 0x1_0000_0040, len: 4 << 20 };
        let Ok(plan) = framing::plan(frames, frame_size, Alignment::new(alignment).unwrap(), &region) else {
            return Ok(()); // does not fit: covered by the validator property
        };
        let pool = FramePool::with_plan(plan);
        let mut held: BTreeMap<usize, avscap::portable::frame_pool::Frame> = BTreeMap::new();
        let mut freed: Vec<usize> = Vec::new();
        for op in ops {
            match op {
                Op::Allocate => match pool.allocate() {
                    Some(f) => {
                        prop_assert!(held.len() < frames as usize, "more than N frames out");
                        prop_assert_eq!(f.virtual_address % alignment as usize, 0);
                        prop_assert_eq!(f.logical_address % u64::from(alignment), 0);
                        prop_assert!(f.len >= frame_size);
                        let end = f.virtual_address + f.len as usize;
                        prop_assert!(f.virtual_address >= region.virtual_base);
                        prop_assert!(end <= region.virtual_base + region.len);
                        for g in held.values() {
                            let g_end = g.virtual_address + g.len as usize;
                            prop_assert!(end <= g.virtual_address || g_end <= f.virtual_address, "overlap");
                        }
                        prop_assert!(held.insert(f.virtual_address, f).is_none());
                    }
                    None => prop_assert_eq!(held.len(), frames as usize, "None while slots were free"),
                },
                Op::FreeHeld(n) => {
                    if held.is_empty() { continue; }
                    let key = *held.keys().nth(n % held.len()).unwrap();
                    prop_assert!(pool.free(key).is_ok());
                    held.remove(&key);
                    freed.push(key);
                }
                Op::FreeAddress(off) => {
                    let addr = (region.virtual_base as i64 + off) as usize;
                    let before = snapshot(&pool);
                    match pool.free(addr) {
                        Ok(_) => {
                            prop_assert!(held.remove(&addr).is_some(), "freed a frame nobody held");
                            freed.push(addr);
                        }
                        Err(_) => prop_assert_eq!(snapshot(&pool), before),
                    }
                }
                Op::FreeAgain(n) => {
                    if freed.is_empty() { continue; }
                    let addr = freed[n % freed.len()];
                    if held.contains_key(&addr) { continue; } // re-allocated since
                    let before = snapshot(&pool);
                    prop_assert_eq!(pool.free(addr), Err(FreeError::NotAllocated));
                    prop_assert_eq!(snapshot(&pool), before);
                }
            }
            prop_assert_eq!(pool.in_use() as usize, held.len());
            prop_assert!(pool.high_water() <= frames);
            for addr in held.keys() {
                prop_assert!(pool.contains(*addr));
            }
        }
    }

    /// The validator accepts exactly the requests an allocator can serve,
    /// compared against a plain model of the rules (zeros mean "no
    /// requirement", 1..=64 frames, frames from the image size up to the
    /// largest image, an alignment mask no coarser than a page, known
    /// option flags), and the buffer it sizes serves them: exactly N
    /// distinct, page-aligned frames inside a buffer with under a page of
    /// slack per frame.
    #[test]
    fn validator_accepts_exactly_what_an_allocator_can_serve(
        frames in prop_oneof![0u32..=80, Just(u32::MAX)],
        frame_size in prop_oneof![0u32..3_000_000, 0u32..100_000, Just(MAX_FRAME_SIZE), Just(MAX_FRAME_SIZE + 1)],
        image_size in prop_oneof![1u32..2_000_000, 1u32..100_000],
        mask in prop_oneof![Just(0u32), Just(3), Just(0xFF), Just(0xFFF), Just(0x1FFF), Just(0xFFFF), 0u32..0x2000],
        flags in prop_oneof![Just(0u32), Just(1), Just(2), Just(3), Just(0x8000_000F), any::<u32>()],
        base_page in 0usize..1 << 20,
    ) {
        let request = AllocatorFraming { flags, pool_type: 0, frames, frame_size, file_alignment: mask, reserved: 0 };
        let result = framing::allocator_plan(&request, image_size);

        // The model.
        let effective = if frame_size == 0 { image_size } else { frame_size };
        let count = if frames == 0 { DEFAULT_PIN_FRAMES } else { frames };
        let is_mask = mask & mask.wrapping_add(1) == 0 && mask < PAGE_SIZE;
        let servable = is_mask
            && flags & !REQUEST_FLAGS == 0
            && (1..=64).contains(&count)
            && effective >= image_size
            && effective <= MAX_FRAME_SIZE;
        prop_assert_eq!(result.is_ok(), servable, "{:?}", result.as_ref().err());

        if let Ok(plan) = result {
            prop_assert_eq!(plan.bytes() % PAGE_SIZE as usize, 0);
            prop_assert!(plan.overhead() < u64::from(PAGE_SIZE) * u64::from(count));
            // A buffer of exactly that length, as the shell allocates it.
            let region = Region { virtual_base: base_page * 4096, logical_base: 0x1_0000_0000, len: plan.bytes() };
            let pool = FramePool::over(region, &plan).unwrap();
            let mut got = Vec::new();
            while let Some(f) = pool.allocate() {
                prop_assert_eq!(f.virtual_address as u64 % (u64::from(mask) + 1), 0);
                prop_assert_eq!(f.virtual_address % 4096, 0);
                prop_assert!(f.len >= image_size);
                prop_assert!(f.virtual_address + f.len as usize <= region.virtual_base + region.len);
                got.push(f);
            }
            prop_assert_eq!(got.len(), count as usize);
        }
    }

    /// Any request is answered with a plan or an error (never a panic), and
    /// every error maps to a failure NTSTATUS.
    #[test]
    fn arbitrary_requests_never_panic(
        flags in any::<u32>(), pool_type in any::<u32>(), frames in any::<u32>(),
        frame_size in any::<u32>(), mask in any::<u32>(), reserved in any::<u32>(),
        image_size in any::<u32>(),
    ) {
        let request = AllocatorFraming { flags, pool_type, frames, frame_size, file_alignment: mask, reserved };
        if let Err(e) = framing::allocator_plan(&request, image_size) {
            prop_assert!(e.ntstatus() < 0);
        }
    }
}

#[test]
fn a_pool_refuses_a_buffer_that_is_not_its_plans() {
    let request = AllocatorFraming {
        frames: 4,
        frame_size: 300_000,
        file_alignment: 0xFFF,
        ..Default::default()
    };
    let plan = framing::allocator_plan(&request, 300_000).unwrap();
    let short = Region {
        virtual_base: 0,
        logical_base: 0,
        len: plan.bytes() - 1,
    };
    assert_eq!(
        FramePool::over(short, &plan).unwrap_err(),
        FramingError::DoesNotFit {
            needed: plan.bytes() as u64,
            available: plan.bytes() as u64 - 1
        }
    );
    let unaligned = Region {
        virtual_base: 0x100,
        logical_base: 0x100,
        len: plan.bytes() + 4096,
    };
    assert_eq!(
        FramePool::over(unaligned, &plan).unwrap_err(),
        FramingError::RegionMisaligned
    );
    assert_eq!(MAX_POOL_FRAMES, 64);
}
