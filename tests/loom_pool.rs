//! Model-checks the frame pool's lock-free allocate/free/lookup under the
//! interleavings loom explores. Runs only with `RUSTFLAGS="--cfg loom"` (the
//! README's test command does that), which swaps the pool's atomics for
//! loom's.
//!
//! Every side of every race runs on a spawned thread, so loom schedules it
//! against the others (the main thread only sets the pool up before the
//! spawns and checks it after the joins). Each model:
//! - counts the executions loom ran and prints the count (visible with
//!   `-- --nocapture`), and fails if there was only one;
//! - records the outcomes it reached and fails if one it names as reachable
//!   never happened, so a model that stopped exploring (a race run in
//!   sequence by mistake) fails instead of passing vacuously;
//! - checks frame *contents* where frames change hands: each slot has a
//!   `loom::cell::UnsafeCell` payload that its holder writes, and loom fails
//!   the model ("Causality violation") when a thread touches a slot's payload
//!   without happening after the previous holder's accesses. That is what
//!   the pool's Release/Acquire orderings are for: with them weakened to
//!   Relaxed the hand-off models fail, while a model that looks only at slot
//!   numbers would still pass;
//! - checks the counters against what the observed results imply
//!   ([`check_counters`]).
//!
//! Models with two racing threads are explored exhaustively; those with
//! three use a preemption bound of 3 (loom's `preemption_bound`: at most
//! three switches away from a thread that could go on), which keeps the
//! whole file at a few seconds. `LOOM_MAX_PREEMPTIONS=n` sets every model's
//! bound instead (all of them also pass unbounded, in about 80 s on two
//! cores).
#![cfg(loom)]

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::Instant;

use avscap::portable::frame_pool::{Frame, FramePool, FreeError, Region};
use avscap::portable::framing::{plan, Alignment, PAGE_SIZE};
use loom::cell::UnsafeCell;
use loom::sync::Arc;
use loom::thread;

/// Bytes of every slot (one page), so slot `i` starts at `BASE + i * SLOT`.
const SLOT: u32 = PAGE_SIZE;
/// Virtual address of slot 0.
const BASE: usize = 0x10_0000;

/// Every pool of these models: `frames` one-page slots from [`BASE`]. The one
/// place that knows how pools are built.
fn pool(frames: u32) -> FramePool {
    let region = Region {
        virtual_base: BASE,
        logical_base: 0x8000_0000,
        len: 64 * SLOT as usize,
    };
    FramePool::with_plan(plan(frames, SLOT, Alignment::PAGE, &region).unwrap())
}

/// A pool and one payload word per slot, standing for the frame's bytes.
struct Shared {
    pool: FramePool,
    payload: Vec<UnsafeCell<u64>>,
}

// SAFETY: loom runs every modelled thread on one OS thread, one at a time, so
// the cells are never touched at once for real; loom's cell tracks which
// modelled thread accessed it and fails the model when two accesses are not
// ordered by happens-before, which is exactly what these models test.
unsafe impl Sync for Shared {}

impl Shared {
    fn new(frames: u32) -> Arc<Self> {
        Arc::new(Self {
            pool: pool(frames),
            payload: (0..frames).map(|_| UnsafeCell::new(0)).collect(),
        })
    }

    /// The payload of the frame `f`, which must be a slot of the pool.
    fn cell(&self, f: &Frame) -> &UnsafeCell<u64> {
        let cell = self.payload.get(f.index as usize);
        cell.unwrap_or_else(|| panic!("slot {} of a {}-slot pool", f.index, self.payload.len()))
    }

    /// Writes the payload of the frame `f`, as its holder.
    fn write(&self, f: &Frame, value: u64) {
        self.cell(f).with_mut(|p| {
            // SAFETY: `p` points into a live cell; loom checks (and fails the
            // model otherwise) that this write happens after every other
            // access to the cell. See `Shared`'s `Sync`.
            unsafe { *p = value }
        });
    }

    /// Reads the payload of the frame `f`, as its holder.
    fn read(&self, f: &Frame) -> u64 {
        self.cell(f).with(|p| {
            // SAFETY: as in `write`: loom checks this read happens after
            // every write to the cell.
            unsafe { *p }
        })
    }
}

/// Runs `work` on a new modelled CPU with its own handle on the pool.
fn cpu<T, F>(s: &Arc<Shared>, work: F) -> thread::JoinHandle<T>
where
    T: Send + 'static,
    F: FnOnce(&Shared) -> T + Send + 'static,
{
    let s = Arc::clone(s);
    thread::spawn(move || work(&s))
}

/// A CPU that holds `f`: it writes `value` into the frame, then frees it.
fn write_then_free(
    s: &Arc<Shared>,
    f: Frame,
    value: u64,
) -> thread::JoinHandle<Result<u32, FreeError>> {
    cpu(s, move |s| {
        s.write(&f, value);
        s.pool.free(f.virtual_address)
    })
}

/// A CPU that allocates while slot 0 is freed with [`write_then_free`]
/// (`freed` written): a frame it gets lies below `capacity`, is slot 0 only
/// with the freer's write in it, and then takes this CPU's write of 9.
fn allocate_after_free(
    s: &Arc<Shared>,
    capacity: u32,
    freed: u64,
) -> thread::JoinHandle<Option<Frame>> {
    cpu(s, move |s| {
        let g = s.pool.allocate();
        if let Some(g) = &g {
            assert!(
                g.index < capacity,
                "slot {} of {capacity} handed out",
                g.index
            );
            if g.index == 0 {
                assert_eq!(s.read(g), freed, "slot 0 handed out before its free");
            }
            s.write(g, 9);
        }
        g
    })
}

/// What one model checking run saw across its executions.
#[derive(Default)]
struct Run {
    executions: AtomicUsize,
    outcomes: Mutex<BTreeSet<String>>,
}

impl Run {
    /// Records an outcome reached by this execution.
    fn saw(&self, outcome: impl Into<String>) {
        self.outcomes.lock().unwrap().insert(outcome.into());
    }
}

/// Runs `model` under loom with `preemption_bound` (unless
/// `LOOM_MAX_PREEMPTIONS` is set; `None` = exhaustive), prints how many
/// executions were explored, and fails if only one was or if an outcome of
/// `reachable` never happened.
fn explore<F>(name: &str, preemption_bound: Option<usize>, reachable: &[&str], model: F)
where
    F: Fn(&Run) + Sync + Send + 'static,
{
    let run = std::sync::Arc::new(Run::default());
    let in_model = std::sync::Arc::clone(&run);
    let mut builder = loom::model::Builder::new();
    if builder.preemption_bound.is_none() {
        builder.preemption_bound = preemption_bound;
    }
    let bound = builder.preemption_bound;
    let start = Instant::now();
    builder.check(move || {
        in_model.executions.fetch_add(1, Ordering::Relaxed);
        model(&in_model);
    });
    let executions = run.executions.load(Ordering::Relaxed);
    // Every execution has finished: take the set rather than hold the lock
    // through the report.
    let outcomes = std::mem::take(&mut *run.outcomes.lock().unwrap());
    println!(
        "loom {name}: {executions} executions, preemption bound {bound:?}, {:.2?}, outcomes {outcomes:?}",
        start.elapsed()
    );
    assert!(executions > 1, "{name}: loom explored a single execution");
    for outcome in reachable {
        assert!(
            outcomes.contains(*outcome),
            "{name}: outcome `{outcome}` never happened in {executions} executions: {outcomes:?}"
        );
    }
}

/// Checks every counter of `p` against the results of all the `allocate`
/// (`allocs`) and `free` (`frees`) calls made on it, setup included, and
/// that every frame handed out is a slot of the pool:
/// - `in_use` = successful allocations − successful frees (each successful
///   free cleared a set bit, each successful allocation set a clear one);
/// - `failed_allocations` = allocations that returned `None`;
/// - `rejected_frees` = frees that returned an error;
/// - `high_water` = 1 + the highest slot index handed out (0 if none): the
///   pool takes the lowest free slot, so slot `m` is taken only while slots
///   `0..m` are all out (`m + 1` out at once), and no more than `m + 1` can
///   be out while no slot above `m` ever is.
fn check_counters(p: &FramePool, allocs: &[Option<Frame>], frees: &[Result<u32, FreeError>]) {
    for f in allocs.iter().flatten() {
        assert!(f.index < p.capacity(), "slot {} handed out", f.index);
        assert_eq!(f.virtual_address, BASE + f.index as usize * SLOT as usize);
        assert_eq!(f.len, SLOT);
    }
    let handed_out = allocs.iter().flatten().count();
    let released = frees.iter().filter(|r| r.is_ok()).count();
    assert_eq!(p.in_use() as usize, handed_out - released, "in_use");
    let failed = allocs.iter().filter(|a| a.is_none()).count();
    assert_eq!(p.failed_allocations(), failed as u64, "failed_allocations");
    let rejected = frees.iter().filter(|r| r.is_err()).count();
    assert_eq!(p.rejected_frees(), rejected as u64, "rejected_frees");
    let high = allocs.iter().flatten().map(|f| f.index + 1).max();
    assert_eq!(p.high_water(), high.unwrap_or(0), "high_water");
}

/// Names an allocation result for the outcome sets: `-` or the slot index.
fn slot(a: Option<Frame>) -> String {
    a.map_or_else(|| "-".into(), |f| f.index.to_string())
}

/// Two CPUs allocate at once from a two-slot pool (both on spawned threads):
/// each gets a slot, the two differ, each holder's writes to its frame do not
/// race the other's, and a third allocation after both fails. Counters:
/// two out, high water 2, one failure.
#[test]
fn concurrent_allocations_get_distinct_slots() {
    explore(
        "concurrent_allocations_get_distinct_slots",
        None,
        &["0 1", "1 0"],
        |run| {
            let s = Shared::new(2);
            let allocator = |id| {
                cpu(&s, move |s| {
                    let f = s.pool.allocate();
                    if let Some(f) = &f {
                        s.write(f, id);
                    }
                    f
                })
            };
            let (a, b) = (allocator(1), allocator(2));
            let (a, b) = (a.join().unwrap(), b.join().unwrap());
            run.saw(format!("{} {}", slot(a), slot(b)));
            let (fa, fb) = (a.unwrap(), b.unwrap());
            assert_ne!(fa.index, fb.index);
            assert_eq!((s.read(&fa), s.read(&fb)), (1, 2));
            let c = s.pool.allocate();
            assert_eq!(c, None);
            check_counters(&s.pool, &[a, b, c], &[]);
        },
    );
}

/// One CPU frees the only slot of a full one-slot pool while another
/// allocates: the allocation either runs first and fails, or runs after and
/// gets slot 0. The free always succeeds. Counters follow the outcome.
#[test]
fn free_racing_allocate_is_consistent() {
    explore(
        "free_racing_allocate_is_consistent",
        None,
        &["got 0", "failed"],
        |run| {
            let s = Shared::new(1);
            let f = s.pool.allocate();
            let releaser = cpu(&s, move |s| s.pool.free(f.unwrap().virtual_address));
            let allocator = cpu(&s, |s| s.pool.allocate());
            let freed = releaser.join().unwrap();
            let got = allocator.join().unwrap();
            assert_eq!(freed, Ok(0));
            match got {
                Some(g) => {
                    assert_eq!(g, f.unwrap());
                    run.saw("got 0");
                }
                None => run.saw("failed"),
            }
            check_counters(&s.pool, &[f, got], &[freed]);
        },
    );
}

/// The same frame freed twice at once (a doubled Free from two paths, both
/// on spawned threads): exactly one free succeeds, the other is refused as
/// `NotAllocated`, the slot is free once, and one free is counted rejected.
#[test]
fn double_free_race_succeeds_once() {
    explore(
        "double_free_race_succeeds_once",
        None,
        &["first wins", "second wins"],
        |run| {
            let s = Shared::new(2);
            let f = s.pool.allocate();
            let freer = || cpu(&s, move |s| s.pool.free(f.unwrap().virtual_address));
            let (a, b) = (freer(), freer());
            let (a, b) = (a.join().unwrap(), b.join().unwrap());
            match (a, b) {
                (Ok(0), Err(FreeError::NotAllocated)) => run.saw("first wins"),
                (Err(FreeError::NotAllocated), Ok(0)) => run.saw("second wins"),
                other => panic!("doubled free answered {other:?}"),
            }
            assert!(!s.pool.contains(f.unwrap().virtual_address));
            check_counters(&s.pool, &[f], &[a, b]);
        },
    );
}

/// A doubled Free racing a reallocation of the same slot (three threads:
/// two frees of one frame, one allocation). When the second free comes after
/// the slot was handed out again, the pool cannot tell it from the new
/// holder's own Free (a slot is named only by its address) and accepts it:
/// the model shows that this is the only way both frees succeed, and that in
/// every interleaving the pool's accounting still matches the calls' results
/// (`in_use` never goes negative or counts a slot twice). Preemption
/// bound 3.
#[test]
fn doubled_free_racing_reallocation_keeps_the_accounting() {
    explore(
        "doubled_free_racing_reallocation_keeps_the_accounting",
        Some(3),
        &[
            "one free refused, slot reallocated",
            "one free refused, allocation failed",
            "stale free released the new holder's slot",
        ],
        |run| {
            let s = Shared::new(1);
            let f = s.pool.allocate();
            let freer = || cpu(&s, move |s| s.pool.free(f.unwrap().virtual_address));
            let (a, b) = (freer(), freer());
            let allocator = cpu(&s, |s| s.pool.allocate());
            let (a, b) = (a.join().unwrap(), b.join().unwrap());
            let got = allocator.join().unwrap();
            assert!(a.is_ok() || b.is_ok(), "both frees refused");
            if let Some(g) = got {
                assert_eq!(g, f.unwrap());
            }
            let outcome = match (a.is_ok() && b.is_ok(), got.is_some()) {
                (true, true) => "stale free released the new holder's slot",
                (true, false) => panic!("two frees accepted without a reallocation"),
                (false, true) => "one free refused, slot reallocated",
                (false, false) => "one free refused, allocation failed",
            };
            run.saw(outcome);
            if a.is_ok() && b.is_ok() {
                // The new holder's frame is no longer out.
                assert!(!s.pool.contains(f.unwrap().virtual_address));
            }
            for r in [a, b] {
                assert!(matches!(r, Ok(0) | Err(FreeError::NotAllocated)));
            }
            check_counters(&s.pool, &[f, got], &[a, b]);
        },
    );
}

/// Frame contents hand-off: the holder of the only slot writes its frame and
/// frees it while another CPU allocates. If the allocation gets the slot, it
/// must see the holder's write, and its own write must not race it: the
/// free's release must pair with the allocation's acquire. Loom fails the
/// model ("Causality violation") if either is weakened to Relaxed.
#[test]
fn frame_contents_hand_off_from_free_to_allocate() {
    explore(
        "frame_contents_hand_off_from_free_to_allocate",
        None,
        &["handed off", "failed"],
        |run| {
            let s = Shared::new(1);
            let f = s.pool.allocate();
            let holder = write_then_free(&s, f.unwrap(), 1);
            let next = cpu(&s, |s| {
                let g = s.pool.allocate();
                if let Some(g) = &g {
                    assert_eq!(s.read(g), 1, "the previous holder's write is lost");
                    s.write(g, 2);
                }
                g
            });
            let freed = holder.join().unwrap();
            let got = next.join().unwrap();
            run.saw(if got.is_some() {
                "handed off"
            } else {
                "failed"
            });
            check_counters(&s.pool, &[f, got], &[freed]);
        },
    );
}

/// Frame contents hand-off across a reuse of the slot (ABA on the ownership
/// word): the holder writes 1, frees, allocates the slot again, writes 2 and
/// frees again, while another CPU allocates. The allocating CPU can read the
/// word as "slot free" from the first free and then win its
/// compare-and-swap against the second: it must still see the write of 2,
/// so the compare-and-swap itself must acquire (an acquire on the first
/// load alone is not enough). It reads 1 if it took the slot between the
/// two holdings (then the holder's second allocation failed) and 2 if after.
#[test]
fn frame_contents_hand_off_across_reuse() {
    explore(
        "frame_contents_hand_off_across_reuse",
        None,
        &["read 1", "read 2", "failed"],
        |run| {
            let s = Shared::new(1);
            let f = s.pool.allocate();
            let holder = cpu(&s, move |s| {
                let f = f.unwrap();
                s.write(&f, 1);
                let first = s.pool.free(f.virtual_address);
                let again = s.pool.allocate();
                let mut frees = vec![first];
                if let Some(g) = &again {
                    assert_eq!(s.read(g), 1);
                    s.write(g, 2);
                    frees.push(s.pool.free(g.virtual_address));
                }
                (again, frees)
            });
            let next = cpu(&s, |s| s.pool.allocate().map(|g| (g, s.read(&g))));
            let (again, frees) = holder.join().unwrap();
            let got = next.join().unwrap();
            match (again, got) {
                (Some(_), Some((_, read))) => {
                    assert_eq!(read, 2, "took the slot after the second free");
                    run.saw("read 2");
                }
                (None, Some((_, read))) => {
                    assert_eq!(read, 1, "took the slot between the holdings");
                    run.saw("read 1");
                }
                (_, None) => run.saw("failed"),
            }
            check_counters(&s.pool, &[f, again, got.map(|(g, _)| g)], &frees);
        },
    );
}

/// Three CPUs on a three-slot pool with slots 0 and 1 out: two allocate while
/// the third writes slot 0's frame and frees it. No slot is handed out twice
/// (the two allocations differ, and each new holder's write to its frame
/// would race the other's otherwise); slot 0 is handed out only after its
/// free, carrying the freer's write; nothing at or above the capacity is
/// handed out; a failure happens only while all three slots are out, so
/// the other allocation then holds slot 2. Preemption bound 3.
#[test]
fn two_allocators_and_a_freer_never_share_a_slot() {
    explore(
        "two_allocators_and_a_freer_never_share_a_slot",
        Some(3),
        &["2 0", "0 2", "2 -", "- 2"],
        |run| {
            let s = Shared::new(3);
            let setup = [s.pool.allocate(), s.pool.allocate()];
            let releaser = write_then_free(&s, setup[0].unwrap(), 7);
            let allocator = || allocate_after_free(&s, 3, 7);
            let (a, b) = (allocator(), allocator());
            let freed = releaser.join().unwrap();
            let (a, b) = (a.join().unwrap(), b.join().unwrap());
            assert_eq!(freed, Ok(0));
            run.saw(format!("{} {}", slot(a), slot(b)));
            if let (Some(x), Some(y)) = (a, b) {
                assert_ne!(x.index, y.index, "one slot handed out twice");
            }
            match (a, b) {
                (None, None) => panic!("both failed with a slot free"),
                (None, Some(g)) | (Some(g), None) => assert_eq!(g.index, 2),
                _ => {}
            }
            check_counters(&s.pool, &[setup[0], setup[1], a, b], &[freed]);
        },
    );
}

/// The race over the last free bit of a pool of `frames` slots: all but the
/// top slot are out, two CPUs allocate while a third frees slot 0. One
/// allocation gets the top slot; the other gets slot 0 (after the free) or
/// fails (before it), never a slot at or above the capacity, and the failure
/// and high-water counts match. For 63 slots bit 63 of the word is outside
/// the pool and must stay unused; for 64 the pool is the whole word.
/// Preemption bound 3.
fn last_free_bit(name: &str, frames: u32) {
    explore(
        name,
        Some(3),
        &["top 0", "0 top", "top -", "- top"],
        move |run| {
            let s = Shared::new(frames);
            let mut allocs: Vec<_> = (1..frames).map(|_| s.pool.allocate()).collect();
            let first = allocs[0].unwrap();
            let releaser = write_then_free(&s, first, 7);
            let allocator = || allocate_after_free(&s, frames, 7);
            let (a, b) = (allocator(), allocator());
            let freed = releaser.join().unwrap();
            let (a, b) = (a.join().unwrap(), b.join().unwrap());
            assert_eq!(freed, Ok(0));
            let label = |g: Option<Frame>| match g {
                Some(g) if g.index == frames - 1 => "top".to_string(),
                other => slot(other),
            };
            run.saw(format!("{} {}", label(a), label(b)));
            let indices: BTreeSet<_> = [a, b].iter().flatten().map(|g| g.index).collect();
            assert!(indices.contains(&(frames - 1)), "nobody got the top slot");
            assert_eq!(indices.len(), [a, b].iter().flatten().count());
            allocs.extend([a, b]);
            check_counters(&s.pool, &allocs, &[freed]);
            assert_eq!(s.pool.allocate().is_none(), a.is_some() && b.is_some());
        },
    );
}

/// [`last_free_bit`] over a 63-slot pool: bit 63 of the word is not a slot.
#[test]
fn last_free_bit_of_a_63_slot_pool() {
    last_free_bit("last_free_bit_of_a_63_slot_pool", 63);
}

/// [`last_free_bit`] over a 64-slot pool: every bit of the word is a slot.
#[test]
fn last_free_bit_of_a_64_slot_pool() {
    last_free_bit("last_free_bit_of_a_64_slot_pool", 64);
}

/// Counters under churn: on a two-slot pool, two CPUs each allocate twice
/// (writing each frame they get), hand the pool one bad pointer (one
/// foreign, one inside a slot), free their first frame and keep the second.
/// Allocations fail or succeed, and slots 0 or 1 are reached, depending on
/// the interleaving; after the joins `in_use`, `high_water`,
/// `failed_allocations` and `rejected_frees` equal what the calls' results
/// imply ([`check_counters`]), the kept frames differ, hold their holder's
/// write and are found by `lookup`. Two threads: explored exhaustively.
#[test]
fn counters_match_the_results_under_churn() {
    explore(
        "counters_match_the_results_under_churn",
        None,
        &[
            "kept 1 0, failed 1",
            "kept 1 -, failed 2",
            "kept - 1, failed 2",
        ],
        |run| {
            let s = Shared::new(2);
            let worker = |id: u64, bad: usize| {
                cpu(&s, move |s| {
                    let allocs = [s.pool.allocate(), s.pool.allocate()];
                    for (n, f) in allocs.iter().enumerate() {
                        if let Some(f) = f {
                            s.write(f, id * 10 + n as u64);
                        }
                    }
                    let mut frees = vec![s.pool.free(bad)];
                    if let Some(f) = allocs[0] {
                        frees.push(s.pool.free(f.virtual_address));
                    }
                    (allocs, frees)
                })
            };
            let a = worker(1, 0x1234);
            let b = worker(2, BASE + 8);
            let (allocs_a, mut frees) = a.join().unwrap();
            let (allocs_b, frees_b) = b.join().unwrap();
            frees.extend(frees_b);
            let allocs: Vec<_> = allocs_a.iter().chain(&allocs_b).copied().collect();
            let failed = allocs.iter().filter(|f| f.is_none()).count();
            let (ka, kb) = (allocs_a[1], allocs_b[1]);
            run.saw(format!("kept {} {}, failed {failed}", slot(ka), slot(kb)));
            assert!(frees.contains(&Err(FreeError::Foreign)));
            assert!(frees.contains(&Err(FreeError::NotSlotStart)));
            assert!(!frees.contains(&Err(FreeError::NotAllocated)));
            for (k, value) in [(ka, 11), (kb, 21)] {
                if let Some(k) = k {
                    assert_eq!(s.read(&k), value);
                    assert_eq!(s.pool.lookup(k.virtual_address), Some(k));
                }
            }
            if let (Some(x), Some(y)) = (ka, kb) {
                assert_ne!(x.index, y.index);
            }
            check_counters(&s.pool, &allocs, &frees);
        },
    );
}

/// `lookup`/`contains` (the capture path's zero-copy test) racing a `free`
/// of the frame on another CPU and its reallocation on a third. Slots 0 and
/// 1 are out; one CPU frees slot 0, one allocates, one looks slot 0 up twice
/// (`lookup`, then `contains`) and slot 1 once. Each lookup of slot 0 is
/// either exactly slot 0's frame (index, both addresses, length) or `None`,
/// never another slot's frame; "absent then present" happens only when the
/// allocation took slot 0 back; slot 1, out throughout, is always found.
/// Preemption bound 3.
#[test]
fn lookup_and_contains_racing_free_and_reallocation() {
    explore(
        "lookup_and_contains_racing_free_and_reallocation",
        Some(3),
        &["found found", "found gone", "gone gone", "gone found"],
        |run| {
            let s = Shared::new(2);
            let setup = [s.pool.allocate(), s.pool.allocate()];
            let (f0, f1) = (setup[0].unwrap(), setup[1].unwrap());
            let releaser = cpu(&s, move |s| s.pool.free(f0.virtual_address));
            let allocator = cpu(&s, |s| s.pool.allocate());
            let looker = cpu(&s, move |s| {
                let first = s.pool.lookup(f0.virtual_address);
                let then = s.pool.contains(f0.virtual_address);
                let other = s.pool.lookup(f1.virtual_address);
                (first, then, other)
            });
            let freed = releaser.join().unwrap();
            let got = allocator.join().unwrap();
            let (first, then, other) = looker.join().unwrap();
            assert_eq!(freed, Ok(0));
            if let Some(found) = first {
                assert_eq!(found, f0, "lookup gave another frame");
            }
            assert_eq!(other, Some(f1), "a slot out throughout was not found");
            if first.is_none() && then {
                assert_eq!(got, Some(f0), "slot 0 reappeared without a reallocation");
            }
            let name = |present: bool| if present { "found" } else { "gone" };
            run.saw(format!("{} {}", name(first.is_some()), name(then)));
            check_counters(&s.pool, &[setup[0], setup[1], got], &[freed]);
        },
    );
}
