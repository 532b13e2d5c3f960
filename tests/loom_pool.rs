//! Model-checks the frame pool's lock-free allocate/free under every
//! interleaving loom explores. Runs only with `RUSTFLAGS="--cfg loom"`
//! (the README's test command does that), which swaps the pool's atomics for
//! loom's.
#![cfg(loom)]

use avscap::portable::frame_pool::{FramePool, FreeError, Region};
use avscap::portable::framing::{plan, Alignment};
use loom::sync::Arc;
use loom::thread;

fn pool(frames: u32) -> FramePool {
    let region = Region {
        virtual_base: 0x10_0000,
        logical_base: 0x10_0000,
        len: 1 << 16,
    };
    FramePool::with_plan(plan(frames, 4096, Alignment::PAGE, &region).unwrap())
}

/// Two CPUs allocate at once from a pool with two slots: each gets a
/// different slot, and a third allocation fails.
#[test]
fn concurrent_allocations_get_distinct_slots() {
    loom::model(|| {
        let p = Arc::new(pool(2));
        let q = Arc::clone(&p);
        let t = thread::spawn(move || q.allocate().map(|f| f.index));
        let mine = p.allocate().map(|f| f.index);
        let theirs = t.join().unwrap();
        assert!(mine.is_some() && theirs.is_some());
        assert_ne!(mine, theirs);
        assert_eq!(p.allocate(), None);
        assert_eq!(p.in_use(), 2);
        assert_eq!(p.high_water(), 2);
    });
}

/// One CPU frees while another allocates from a full pool: the allocation
/// either sees the freed slot or fails cleanly, never both or a torn state.
#[test]
fn free_racing_allocate_is_consistent() {
    loom::model(|| {
        let p = Arc::new(pool(1));
        let f = p.allocate().unwrap();
        let q = Arc::clone(&p);
        let t = thread::spawn(move || q.free(f.virtual_address));
        let got = p.allocate();
        assert_eq!(t.join().unwrap(), Ok(0));
        match got {
            Some(g) => {
                assert_eq!(g.index, 0);
                assert_eq!(p.in_use(), 1);
            }
            None => {
                assert_eq!(p.in_use(), 0);
                assert_eq!(p.failed_allocations(), 1);
            }
        }
    });
}

/// The same frame freed twice at once (a doubled Free from two paths): exactly
/// one free succeeds, the other is refused, and the slot is free once.
#[test]
fn double_free_race_succeeds_once() {
    loom::model(|| {
        let p = Arc::new(pool(2));
        let f = p.allocate().unwrap();
        let q = Arc::clone(&p);
        let t = thread::spawn(move || q.free(f.virtual_address));
        let a = p.free(f.virtual_address);
        let b = t.join().unwrap();
        assert!(matches!(
            (a, b),
            (Ok(0), Err(FreeError::NotAllocated)) | (Err(FreeError::NotAllocated), Ok(0))
        ));
        assert_eq!(p.in_use(), 0);
        assert_eq!(p.rejected_frees(), 1);
    });
}
