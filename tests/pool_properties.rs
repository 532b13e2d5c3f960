//! Property tests of the frame pool and the framing validator.
#![allow(
    clippy::single_match_else,
    clippy::cast_possible_truncation,
    clippy::cast_sign_loss,
    clippy::cast_possible_wrap
)]

use avscap::portable::frame_pool::{FramePool, FreeError, Region, MAX_POOL_FRAMES};
use avscap::portable::framing::{self, AllocatorFraming, CarveOut, FramingError, PAGE_SIZE};
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

fn region_strategy() -> impl Strategy<Value = Region> {
    // Bases that agree modulo a page in both address spaces, as a common
    // buffer's do, but not necessarily page aligned themselves.
    (
        0usize..1 << 20,
        0u64..1 << 20,
        0usize..4096,
        1usize..(4 << 20),
    )
        .prop_map(|(v, l, skew, len)| Region {
            virtual_base: v * 4096 + skew,
            logical_base: l * 4096 + skew as u64,
            len,
        })
}

fn snapshot(p: &FramePool) -> (u32, u32, u64) {
    (p.in_use(), p.high_water(), p.failed_allocations())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1024))]

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
        let Ok(plan) = framing::plan(frames, frame_size, alignment, &region) else {
            return Ok(()); // does not fit: covered by the validator property
        };
        let pool = FramePool::with_plan(region, plan);
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

    /// The validator accepts exactly the requests a pool can serve: compared
    /// against a plain model of the carve-out (first slot at the first
    /// address aligned in both spaces, slots of the frame size rounded up to
    /// the alignment, all inside the region).
    #[test]
    fn validator_accepts_exactly_what_the_pool_can_serve(
        region in region_strategy(),
        frames in 0u32..=80,
        frame_size in prop_oneof![0u32..3_000_000, 0u32..100_000],
        image_size in prop_oneof![1u32..2_000_000, 1u32..100_000],
        mask in prop_oneof![Just(0u32), Just(3), Just(0xFF), Just(0xFFF), Just(0x1FFF), Just(0xFFFF), 0u32..0x2000],
    ) {
        let carve = CarveOut { region, max_frame_size: 2_500_000, max_frames: 48 };
        let request = AllocatorFraming { flags: 2, pool_type: 0, frames, frame_size, file_alignment: mask, reserved: 0 };
        let result = FramePool::for_request(&request, image_size, &carve);

        // The model.
        let effective = if frame_size == 0 { image_size } else { frame_size };
        let is_mask = mask & mask.wrapping_add(1) == 0 && mask < PAGE_SIZE;
        let align = u64::from(mask) + 1;
        let first = (align - region.virtual_base as u64 % align) % align;
        let slot = u64::from(effective).div_ceil(align) * align;
        let fits = first + slot * u64::from(frames) <= region.len as u64;
        let servable = is_mask
            && (1..=48).contains(&frames)
            && effective >= image_size
            && effective <= carve.max_frame_size
            && fits;
        prop_assert_eq!(result.is_ok(), servable, "{:?}", result.as_ref().err());

        if let Ok(pool) = result {
            // It really serves them: `frames` distinct frames, then none.
            let mut got = Vec::new();
            while let Some(f) = pool.allocate() {
                prop_assert_eq!(f.virtual_address as u64 % align, 0);
                prop_assert!(f.virtual_address + f.len as usize <= region.virtual_base + region.len);
                got.push(f);
            }
            prop_assert_eq!(got.len(), frames as usize);
            prop_assert_eq!(pool.plan().overhead, pool.plan().span - u64::from(effective) * u64::from(frames));
        }
    }

    /// Any request is answered with a plan or an error (never a panic), and
    /// every error maps to a failure NTSTATUS.
    #[test]
    fn arbitrary_requests_never_panic(
        flags in any::<u32>(), pool_type in any::<u32>(), frames in any::<u32>(),
        frame_size in any::<u32>(), mask in any::<u32>(), reserved in any::<u32>(),
        image_size in any::<u32>(), region in region_strategy(),
    ) {
        let carve = CarveOut { region, max_frame_size: u32::MAX, max_frames: MAX_POOL_FRAMES };
        let request = AllocatorFraming { flags, pool_type, frames, frame_size, file_alignment: mask, reserved };
        if let Err(e) = framing::validate(&request, image_size, &carve) {
            prop_assert!(e.ntstatus() < 0);
        }
    }
}

#[test]
fn failed_pool_creation_reports_the_validator_error() {
    let region = Region {
        virtual_base: 0,
        logical_base: 0,
        len: 1 << 20,
    };
    let carve = CarveOut {
        region,
        max_frame_size: 1 << 20,
        max_frames: 8,
    };
    let request = AllocatorFraming {
        frames: 4,
        frame_size: 300_000,
        file_alignment: 0xFFF,
        ..Default::default()
    };
    let err = FramePool::for_request(&request, 300_000, &carve).unwrap_err();
    assert_eq!(
        err,
        FramingError::DoesNotFit {
            needed: 4 * 300_000u64.div_ceil(4096) * 4096,
            available: 1 << 20
        }
    );
}
