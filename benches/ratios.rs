//! avscap's performance goals, each measured as a ratio against a baseline
//! taken in the same run (BENCHMARKS.md holds the goals and the results).
//!
//! These machines are shared and noisy, so no figure here is an absolute
//! time: the candidate and its baseline run interleaved (A B A B …), each
//! pair gives one ratio, and the table reports the median ratio with the
//! 10th–90th percentile spread. `scripts/bench.sh` pins the single-threaded
//! groups to one CPU with `taskset` and the two-thread group to two.
//!
//! `cargo bench --bench ratios -- [GROUP…]`, groups: `machine`, `pool`,
//! `threads`, `synthesis`, `copy`, `engine`, `simulator` (default: all).
#![allow(missing_docs)]
#![allow(
    clippy::cast_precision_loss,
    clippy::cast_possible_truncation,
    clippy::cast_sign_loss
)]

use std::collections::VecDeque;
use std::hint::black_box;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Barrier, Mutex};
use std::time::{Duration, Instant};

use avscap::portable::capture_engine::{
    route_frame, CaptureEngine, ClientBuffer, CopyPlan, DmaTarget, RouteError, Target, Tick,
};
use avscap::portable::frame_pool::FramePool;
use avscap::portable::framing::{plan, Alignment, PAGE_SIZE};
use avscap::portable::image::{synthesize, DeliveryPath, Overlay};
use avscap::portable::stream_memory::StreamMemory;
use avscap::portable::video_format::{FrameLayout, PixelFormat, VideoFormat, DATA_RANGES};
use crossbeam_queue::ArrayQueue;

/// The simulator's y4m conversion, measured where it lives. (Its unit tests
/// compile here under `clippy --all-targets` but only run with the example.)
#[path = "../examples/simulate/planes.rs"]
#[cfg_attr(test, allow(dead_code))]
mod planes;

/// The simulator's stand-in for a common buffer (`get` is the simulator's
/// alone).
#[path = "../examples/simulate/heap_buffer.rs"]
#[allow(dead_code)]
mod heap_buffer;

use heap_buffer::HeapBuffer;

const MIB: usize = 1 << 20;

// ---------------------------------------------------------------- harness

/// The spread of the per-pair ratios, and the median time of each side.
#[derive(Clone, Copy, Debug)]
struct Ratio {
    median: f64,
    p10: f64,
    p90: f64,
    base: Duration,
    cand: Duration,
}

fn percentile(sorted: &[f64], p: usize) -> f64 {
    sorted[(sorted.len() - 1) * p / 100]
}

fn median_duration(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

/// Runs `pairs` samples of each side, interleaved, on the shared state `s`,
/// and returns the ratio candidate / baseline. Each closure runs one sample
/// and returns its time.
fn interleaved<S>(
    pairs: usize,
    s: &mut S,
    base: &mut dyn FnMut(&mut S) -> Duration,
    cand: &mut dyn FnMut(&mut S) -> Duration,
) -> Ratio {
    // One unmeasured pair: page faults, caches, frequency.
    base(s);
    cand(s);
    let (mut ratios, mut bases, mut cands) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..pairs {
        let b = base(s);
        let c = cand(s);
        ratios.push(c.as_secs_f64() / b.as_secs_f64());
        bases.push(b);
        cands.push(c);
    }
    ratios.sort_by(f64::total_cmp);
    Ratio {
        median: percentile(&ratios, 50),
        p10: percentile(&ratios, 10),
        p90: percentile(&ratios, 90),
        base: median_duration(bases),
        cand: median_duration(cands),
    }
}

/// A stateless operation for [`per_op`] (fixes the closure's signature).
const fn op<F: FnMut(&mut ())>(f: F) -> F {
    f
}

/// Times `iters` calls of `f`.
fn time<S>(iters: u64, s: &mut S, f: &mut dyn FnMut(&mut S)) -> Duration {
    let start = Instant::now();
    for _ in 0..iters {
        f(s);
    }
    start.elapsed()
}

/// Compares two small operations, each sample about 20 ms of the baseline.
fn per_op<S>(
    pairs: usize,
    s: &mut S,
    base: &mut dyn FnMut(&mut S),
    cand: &mut dyn FnMut(&mut S),
) -> (Ratio, u64) {
    let target = Duration::from_millis(20);
    let mut iters = 1u64;
    loop {
        let t = time(iters, s, base);
        if t >= target / 4 {
            iters = ((target.as_secs_f64() / t.as_secs_f64() * iters as f64) as u64).max(1);
            break;
        }
        iters *= 2;
    }
    let ratio = interleaved(pairs, s, &mut |s| time(iters, s, base), &mut |s| {
        time(iters, s, cand)
    });
    (ratio, iters)
}

enum Goal {
    /// Ratio at most this.
    AtMost(f64),
    /// Ratio at least this (a real-time factor).
    AtLeast(f64),
    /// Reported, no goal.
    Info,
}

struct Row {
    what: String,
    candidate: String,
    baseline: String,
    ratio: Ratio,
    goal: Goal,
}

impl Row {
    fn met(&self) -> &'static str {
        match self.goal {
            Goal::AtMost(g) if self.ratio.median <= g => "yes",
            Goal::AtLeast(g) if self.ratio.median >= g => "yes",
            Goal::Info => "—",
            _ => "**no**",
        }
    }

    fn goal(&self) -> String {
        match self.goal {
            Goal::AtMost(g) => format!("≤ {g:.2}"),
            Goal::AtLeast(g) => format!("≥ {g:.2}"),
            Goal::Info => "—".into(),
        }
    }
}

#[derive(Default)]
struct Table {
    rows: Vec<Row>,
}

impl Table {
    fn push(&mut self, row: Row) {
        eprintln!(
            "  {}: {:.3} ({:.3}–{:.3}) goal {} {}",
            row.what,
            row.ratio.median,
            row.ratio.p10,
            row.ratio.p90,
            row.goal(),
            row.met()
        );
        self.rows.push(row);
    }

    fn print(&self) {
        println!("| what | candidate | baseline | ratio (median) | p10–p90 | goal | met |");
        println!("| --- | --- | --- | ---: | ---: | ---: | :---: |");
        for r in &self.rows {
            println!(
                "| {} | {} | {} | {} | {}–{} | {} | {} |",
                r.what,
                r.candidate,
                r.baseline,
                fixed(r.ratio.median),
                fixed(r.ratio.p10),
                fixed(r.ratio.p90),
                r.goal(),
                r.met()
            );
        }
    }
}

/// A ratio with three decimals, or three significant digits below 0.01.
fn fixed(r: f64) -> String {
    if r < 0.01 {
        format!("{r:.2e}")
    } else {
        format!("{r:.3}")
    }
}

fn ns(d: Duration, per: u64) -> String {
    format!("{:.2} ns", d.as_secs_f64() * 1e9 / per as f64)
}

fn gbps(bytes: usize, d: Duration) -> String {
    format!("{:.1} GB/s", bytes as f64 / d.as_secs_f64() / 1e9)
}

// ------------------------------------------------------------- buffers

/// Frames of `len` bytes covering at least `bytes` (at least 2 frames),
/// every page written.
fn ring_covering(bytes: usize, len: usize) -> Vec<Vec<u8>> {
    (0..bytes.div_ceil(len).max(2))
        .map(|_| vec![1u8; len])
        .collect()
}

const fn overlay(n: u64) -> Overlay {
    Overlay {
        stream_time_100ns: 123_456_789 + n.cast_signed() * 166_667,
        frame_number: n,
        dropped: 7,
        path: DeliveryPath::Copied,
    }
}

/// Times `f` over every frame of the ring.
fn each(frames: &mut [Vec<u8>], f: &mut dyn FnMut(&mut [u8])) -> Duration {
    let t = Instant::now();
    for frame in frames.iter_mut() {
        f(frame);
        black_box(frame);
    }
    t.elapsed()
}

// -------------------------------------------------------------- machine

fn machine() {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .map_or("unknown", |l| l.trim_start_matches([' ', '\t', ':']));
    println!("CPU: {model}");
    let mut caches = Vec::new();
    for i in 0..8 {
        let dir = format!("/sys/devices/system/cpu/cpu0/cache/index{i}");
        let read = |f: &str| std::fs::read_to_string(format!("{dir}/{f}")).ok();
        let (Some(level), Some(kind), Some(size)) = (read("level"), read("type"), read("size"))
        else {
            break;
        };
        caches.push(format!("L{} {} {}", level.trim(), kind.trim(), size.trim()));
    }
    println!("caches (cpu0): {}", caches.join(", "));
    // The practical limit: fill and copy of 512 MiB buffers.
    let len = 512 * MIB;
    let mut a = vec![1u8; len];
    let b = vec![2u8; len];
    let (mut fills, mut copies) = (Vec::new(), Vec::new());
    for round in 0..5u8 {
        let t = Instant::now();
        a.fill(round);
        black_box(&mut a);
        fills.push(t.elapsed());
        let t = Instant::now();
        // The source opaque: `b` is known to hold 2s, and a copy of a
        // memset buffer may be compiled as a memset.
        a.copy_from_slice(black_box(&b));
        black_box(&mut a);
        copies.push(t.elapsed());
    }
    println!(
        "memset 512 MiB: {}; memcpy 512 MiB: {} (bytes copied; median of 5)",
        gbps(len, median_duration(fills)),
        gbps(len, median_duration(copies))
    );
    println!();
}

// ----------------------------------------------------------------- pool

fn pool_of(slots: u32, pages: &HeapBuffer) -> FramePool {
    let region = pages.region();
    FramePool::with_plan(plan(slots, PAGE_SIZE, Alignment::PAGE, &region).unwrap())
}

fn allocate_free(pool: &FramePool) {
    let f = pool.allocate().unwrap();
    pool.free(black_box(f.virtual_address)).unwrap();
}

/// The `Mutex<Vec>` free list's allocate+free.
fn pop_push(list: &Mutex<Vec<usize>>) {
    let f = list.lock().unwrap().pop().unwrap();
    list.lock().unwrap().push(black_box(f));
}

fn pool(table: &mut Table) {
    let pages = HeapBuffer::new(64 * PAGE_SIZE as usize);
    for slots in [4u32, 16, 64] {
        // The worst case for the bitmap search: only the last slot is free.
        let pool = pool_of(slots, &pages);
        for _ in 1..slots {
            pool.allocate().unwrap();
        }
        let word = AtomicU64::new(0);
        let mut two_cas = op(|&mut ()| {
            let v = black_box(0u64);
            let _ = word.compare_exchange(v, v | 1, Ordering::AcqRel, Ordering::Acquire);
            let _ = word.compare_exchange(v | 1, v, Ordering::AcqRel, Ordering::Acquire);
        });
        let (ratio, iters) = per_op(21, &mut (), &mut two_cas, &mut |()| allocate_free(&pool));
        table.push(Row {
            what: format!("pool allocate+free, last of {slots} slots"),
            candidate: ns(ratio.cand, iters),
            baseline: format!("two compare_exchange {}", ns(ratio.base, iters)),
            ratio,
            goal: Goal::AtMost(1.2),
        });
        // What any bitmap pool does at the least: read the word, pick the
        // lowest clear bit, claim it with a compare-and-swap, release it
        // with one atomic AND; no address, no checks, no counters.
        let bits = AtomicU64::new(u64::MAX >> (65 - slots));
        let mut bare = op(|&mut ()| {
            let current = bits.load(Ordering::Acquire);
            let bit = (!current).trailing_zeros();
            let claimed = current | (1 << bit);
            let _ = bits.compare_exchange(current, claimed, Ordering::AcqRel, Ordering::Acquire);
            let mask = 1u64 << black_box(bit);
            black_box(bits.fetch_and(!mask, Ordering::AcqRel) & mask);
        });
        let (ratio, iters) = per_op(21, &mut (), &mut two_cas, &mut bare);
        table.push(Row {
            what: format!("bare bitmap claim+release, {slots} slots"),
            candidate: ns(ratio.cand, iters),
            baseline: format!("two compare_exchange {}", ns(ratio.base, iters)),
            ratio,
            goal: Goal::Info,
        });
        let (ratio, iters) = per_op(21, &mut (), &mut bare, &mut |()| allocate_free(&pool));
        table.push(Row {
            what: format!("pool allocate+free, last of {slots} slots, over the bare bitmap"),
            candidate: ns(ratio.cand, iters),
            baseline: format!("bare bitmap {}", ns(ratio.base, iters)),
            ratio,
            goal: Goal::Info,
        });
        assert_eq!((pool.in_use(), pool.high_water()), (slots - 1, slots));
    }
    let pool = pool_of(16, &pages);
    let list = Mutex::new((0..16usize).collect::<Vec<_>>());
    let (ratio, iters) = per_op(21, &mut (), &mut |()| pop_push(&list), &mut |()| {
        allocate_free(&pool);
    });
    table.push(Row {
        what: "pool allocate+free, 16 slots, one thread".into(),
        candidate: ns(ratio.cand, iters),
        baseline: format!("Mutex<Vec> free list {}", ns(ratio.base, iters)),
        ratio,
        goal: Goal::Info,
    });
}

/// Two threads, each doing `pairs` allocate+free pairs on one shared free
/// list; the time until both are done.
fn two_threads(pairs: u64, op: &(dyn Fn() + Sync)) -> Duration {
    let barrier = Barrier::new(3);
    let mut start = Instant::now();
    std::thread::scope(|s| {
        for _ in 0..2 {
            s.spawn(|| {
                barrier.wait();
                for _ in 0..pairs {
                    op();
                }
            });
        }
        barrier.wait();
        start = Instant::now();
    });
    start.elapsed()
}

fn threads(table: &mut Table) {
    let cpus = std::thread::available_parallelism().map_or(1, usize::from);
    if cpus < 2 {
        eprintln!("threads: skipped, this process may run on {cpus} CPU (needs 2)");
        return;
    }
    let pages = HeapBuffer::new(16 * PAGE_SIZE as usize);
    let pool = pool_of(16, &pages);
    let ours = || allocate_free(&pool);
    let list = Mutex::new((0..16usize).collect::<Vec<_>>());
    let mutex = || pop_push(&list);
    let queue = ArrayQueue::new(16);
    for i in 0..16usize {
        queue.push(i).unwrap();
    }
    let array_queue = || {
        let f = queue.pop().unwrap();
        queue.push(black_box(f)).unwrap();
    };
    let pairs = 500_000;
    let baselines: [(&str, &(dyn Fn() + Sync)); 2] = [
        ("Mutex<Vec> free list", &mutex),
        ("crossbeam ArrayQueue", &array_queue),
    ];
    for (name, base) in baselines {
        let ratio = interleaved(15, &mut (), &mut |()| two_threads(pairs, base), &mut |()| {
            two_threads(pairs, &ours)
        });
        table.push(Row {
            what: "pool allocate+free, 16 slots, 2 threads × 500k pairs".into(),
            candidate: format!("{:.1} ms", ratio.cand.as_secs_f64() * 1e3),
            baseline: format!("{name} {:.1} ms", ratio.base.as_secs_f64() * 1e3),
            ratio,
            goal: Goal::AtMost(1.0),
        });
    }
    assert_eq!((pool.in_use(), pool.rejected_frees()), (0, 0));
}

// ------------------------------------------------------------ synthesis

const SIZES: [(u32, u32); 2] = [(1920, 1080), (3840, 2160)];
const FORMATS: [PixelFormat; 3] = [PixelFormat::Nv12, PixelFormat::Yuy2, PixelFormat::Rgb24];

/// Bytes the cold rings rotate through: past the last-level cache.
const COLD_BYTES: usize = 1024 * MIB;

fn synthesis(table: &mut Table) {
    for (w, h) in SIZES {
        for pixel in FORMATS {
            let layout = FrameLayout::new(pixel, w, h).unwrap();
            let image = layout.image_size() as usize;
            let mut n = 0u64;
            let mut synth = |frame: &mut [u8]| {
                n += 1;
                synthesize(frame, &layout, layout.stride(), &overlay(n)).unwrap();
            };
            // Cold: one sample is one pass over a ring of frames.
            let mut frames = ring_covering(COLD_BYTES, image);
            let bytes = frames.len() * image;
            let ratio = interleaved(
                9,
                &mut frames,
                &mut |f| each(f, &mut |frame| frame.fill(0x80)),
                &mut |f| each(f, &mut synth),
            );
            table.push(Row {
                what: format!("synthesis cold, {} {w}x{h}", pixel.name()),
                candidate: gbps(bytes, ratio.cand),
                baseline: format!("fill {}", gbps(bytes, ratio.base)),
                ratio,
                goal: Goal::AtMost(1.11),
            });
            if pixel == PixelFormat::Nv12 {
                // The least a frame written by copying rows costs: a 64 KiB
                // block (in cache, as synthesis's replicated rows are)
                // copied over each cold frame.
                let block = vec![0x80u8; 64 * 1024];
                let ratio = interleaved(
                    9,
                    &mut frames,
                    &mut |f| each(f, &mut |frame| frame.fill(0x80)),
                    &mut |f| {
                        each(f, &mut |frame| {
                            for chunk in frame.chunks_mut(block.len()) {
                                chunk.copy_from_slice(black_box(&block[..chunk.len()]));
                            }
                        })
                    },
                );
                table.push(Row {
                    what: format!(
                        "block copy (64 KiB cached source) over cold frames, {w}x{h} NV12 bytes"
                    ),
                    candidate: gbps(bytes, ratio.cand),
                    baseline: format!("fill {}", gbps(bytes, ratio.base)),
                    ratio,
                    goal: Goal::Info,
                });
            }
            drop(frames);
            // Hot: one frame, over and over.
            let mut frame = vec![1u8; image];
            let (ratio, iters) = per_op(
                21,
                &mut frame,
                &mut |f| {
                    f.fill(0x80);
                    black_box(f);
                },
                &mut |f| {
                    synth(f);
                    black_box(f);
                },
            );
            table.push(Row {
                what: format!("synthesis hot, {} {w}x{h}", pixel.name()),
                candidate: gbps(image * iters as usize, ratio.cand),
                baseline: format!("fill {}", gbps(image * iters as usize, ratio.base)),
                ratio,
                goal: Goal::AtMost(1.3),
            });
        }
    }
}

// ----------------------------------------------------------------- copy

/// The staging → client copy (`CopyPlan::copy`, what the delivery work item
/// runs) against `copy_from_slice` of the same image bytes, both over rings
/// past the last-level cache.
fn copy(table: &mut Table) {
    let cases = [
        (PixelFormat::Nv12, 1920, 1080, 0u32),
        (PixelFormat::Nv12, 3840, 2160, 0),
        (PixelFormat::Nv12, 3840, 2160, 4096),
        (PixelFormat::Yuy2, 1920, 1080, 4096),
        (PixelFormat::Rgb24, 1920, 1080, 5824),
    ];
    for (pixel, w, h, pitch) in cases {
        let layout = FrameLayout::new(pixel, w, h).unwrap();
        let image = layout.image_size() as usize;
        let rows = layout.image_size() / layout.stride();
        let extent = if pitch == 0 {
            layout.image_size()
        } else {
            pitch * rows
        };
        let plan = CopyPlan::new(&layout, i32::try_from(pitch).unwrap(), extent);
        assert_eq!(plan.is_packed(), pitch == 0);
        let sources = ring_covering(COLD_BYTES / 2, image);
        let mut dests = ring_covering(COLD_BYTES / 2, extent as usize);
        let count = sources.len().min(dests.len());
        let timed = |dests: &mut Vec<Vec<u8>>, f: &dyn Fn(&[u8], &mut [u8])| {
            let t = Instant::now();
            for (s, d) in sources.iter().zip(dests.iter_mut()) {
                f(s, d);
                black_box(d);
            }
            t.elapsed()
        };
        let ratio = interleaved(
            9,
            &mut dests,
            &mut |d| timed(d, &|s, d| d[..image].copy_from_slice(black_box(s))),
            &mut |d| {
                timed(d, &|s, d| {
                    plan.copy(s, d).unwrap();
                })
            },
        );
        let how = if pitch == 0 {
            "packed".to_string()
        } else {
            format!("rows at pitch {pitch}")
        };
        table.push(Row {
            what: format!("copy path, {} {w}x{h} {how}", pixel.name()),
            candidate: gbps(count * image, ratio.cand),
            baseline: format!("memcpy {}", gbps(count * image, ratio.base)),
            ratio,
            goal: Goal::AtMost(1.0 / 0.9),
        });
        if pitch != 0 {
            // The same row-sized copies into a packed destination: what
            // copying in rows costs by itself, whatever the pitch.
            let row = layout.stride() as usize;
            let ratio = interleaved(
                9,
                &mut dests,
                &mut |d| timed(d, &|s, d| d[..image].copy_from_slice(black_box(s))),
                &mut |d| {
                    timed(d, &|s, d| {
                        for (from, to) in s.chunks(row).zip(d.chunks_mut(row)) {
                            to.copy_from_slice(from);
                        }
                    })
                },
            );
            table.push(Row {
                what: format!(
                    "{row}-byte row copies, packed destination, {} {w}x{h}",
                    pixel.name()
                ),
                candidate: gbps(count * image, ratio.cand),
                baseline: format!("memcpy {}", gbps(count * image, ratio.base)),
                ratio,
                goal: Goal::Info,
            });
        }
    }
}

// --------------------------------------------------------------- engine

/// A client frame: one of the allocator's (zero-copy) or the client's own.
enum Client {
    Own(usize),
    Foreign(Vec<u8>),
}

/// One stream as the driver runs it: the allocator's buffer and pool (when
/// the graph chose it), the staging slots, the client's frames.
struct Stream {
    layout: FrameLayout,
    interval: i64,
    own: Option<(HeapBuffer, FramePool)>,
    staging_buffer: HeapBuffer,
    staging: FramePool,
    clients: Vec<Client>,
}

/// Frames the delivery work item writes, or only the bookkeeping.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Work {
    Pixels,
    Bookkeeping,
}

impl Stream {
    fn new(format: &VideoFormat, own_path: bool) -> Self {
        let memory = StreamMemory::for_format(format).unwrap();
        let staging_buffer = HeapBuffer::new(memory.staging.bytes());
        let staging = FramePool::over(staging_buffer.region(), &memory.staging).unwrap();
        let mut clients = Vec::new();
        let own = own_path.then(|| {
            let buffer = HeapBuffer::new(memory.allocator.bytes());
            let pool = FramePool::over(buffer.region(), &memory.allocator).unwrap();
            while let Some(f) = pool.allocate() {
                clients.push(Client::Own(f.virtual_address));
            }
            (buffer, pool)
        });
        if !own_path {
            let image = memory.layout.image_size() as usize;
            clients.extend((0..4).map(|_| Client::Foreign(vec![1u8; image])));
        }
        Self {
            layout: memory.layout,
            interval: format.frame_interval,
            own,
            staging_buffer,
            staging,
            clients,
        }
    }

    fn client(&self, id: usize) -> ClientBuffer {
        let address = match &self.clients[id] {
            Client::Own(address) => *address,
            Client::Foreign(bytes) => bytes.as_ptr() as usize,
        };
        ClientBuffer {
            address,
            extent: self.layout.image_size(),
            surface_pitch: 0,
        }
    }

    /// Streams `frames` frames in virtual time, as the driver's Process,
    /// timer DPC and delivery work item do, with a client that returns each
    /// frame at once.
    fn run(&mut self, frames: u64, work: Work) -> Duration {
        let start = Instant::now();
        let image = self.layout.image_size() as usize;
        let mut engine = CaptureEngine::<usize, 8>::new(self.interval, image as u32).unwrap();
        engine.run(0);
        let mut ready: VecDeque<usize> = (0..self.clients.len()).collect();
        let mut delivered = 0;
        while delivered < frames {
            // Process.
            while engine.has_room() {
                let Some(&id) = ready.front() else { break };
                let client = self.client(id);
                let own = self.own.as_ref().map(|(_, pool)| pool);
                match route_frame(own, &self.staging, client, image as u32) {
                    Ok(dma) => {
                        engine
                            .submit(Target {
                                cookie: id,
                                dma,
                                client,
                            })
                            .unwrap();
                        ready.pop_front();
                    }
                    Err(RouteError::NoStagingSlot) => break,
                    Err(e) => panic!("{e:?}"),
                }
            }
            // The timer DPC.
            let now = engine.next_due().unwrap();
            assert!(matches!(engine.tick(now), Tick::Due { .. }));
            // The delivery work item.
            while let Some(c) = engine.take_due() {
                let frame = *c.target.dma.frame();
                let id = c.target.cookie;
                match c.target.dma {
                    DmaTarget::Direct(_) if work == Work::Pixels => {
                        let (buffer, _) = self.own.as_mut().unwrap();
                        let pixels = buffer.at(frame.virtual_address, image).unwrap();
                        synthesize(pixels, &self.layout, self.layout.stride(), &c.overlay())
                            .unwrap();
                    }
                    DmaTarget::Direct(_) => {}
                    DmaTarget::Staging(_) => {
                        if work == Work::Pixels {
                            let slot = self
                                .staging_buffer
                                .at(frame.virtual_address, image)
                                .unwrap();
                            synthesize(slot, &self.layout, self.layout.stride(), &c.overlay())
                                .unwrap();
                            let Client::Foreign(dest) = &mut self.clients[id] else {
                                unreachable!("staging targets are foreign frames")
                            };
                            let plan = c.target.copy_plan(&self.layout).unwrap();
                            plan.copy(slot, dest).unwrap();
                        }
                        self.staging.free(frame.virtual_address).unwrap();
                    }
                }
                ready.push_back(id);
                delivered += 1;
            }
        }
        engine.stop();
        while let Some(t) = engine.take_queued() {
            if let DmaTarget::Staging(f) = t.dma {
                self.staging.free(f.virtual_address).unwrap();
            }
        }
        let elapsed = start.elapsed();
        assert_eq!(engine.stats().dropped, 0);
        assert_eq!(self.staging.in_use(), 0);
        elapsed
    }

    /// The same frames in the same order, filled (and copied) only.
    fn baseline(&mut self, frames: u64) -> Duration {
        let start = Instant::now();
        let image = self.layout.image_size() as usize;
        let slots = self.staging.capacity() as usize;
        let slot_size = self.staging.plan().slot_size() as usize;
        let staging_base = self.staging_buffer.region().virtual_base;
        for n in 0..frames as usize {
            let id = n % self.clients.len();
            match &mut self.clients[id] {
                Client::Own(address) => {
                    let (buffer, _) = self.own.as_mut().unwrap();
                    let frame = buffer.at(*address, image).unwrap();
                    frame.fill(0x80);
                    black_box(frame);
                }
                Client::Foreign(dest) => {
                    let address = staging_base + (n % slots) * slot_size;
                    let slot = self.staging_buffer.at(address, image).unwrap();
                    slot.fill(0x80);
                    // Opaque, or the compiler turns the copy of a memset
                    // buffer into a second memset.
                    let slot = black_box(slot);
                    dest.copy_from_slice(slot);
                    black_box(dest);
                }
            }
        }
        start.elapsed()
    }
}

fn engine(table: &mut Table) {
    const FRAMES: u64 = 600;
    let offered = DATA_RANGES
        .iter()
        .find(|f| (f.pixel, f.width, f.height) == (PixelFormat::Nv12, 3840, 2160))
        .expect("the pin offers 3840x2160 NV12");
    let format = VideoFormat {
        frame_interval: 166_667,
        ..*offered
    };
    for (own_path, baseline) in [(true, "memset-only"), (false, "memset + memcpy")] {
        let mut stream = Stream::new(&format, own_path);
        let ratio = interleaved(5, &mut stream, &mut |s| s.baseline(FRAMES), &mut |s| {
            s.run(FRAMES, Work::Pixels)
        });
        let path = if own_path {
            "own frames (zero-copy)"
        } else {
            "foreign frames (copy)"
        };
        let real = |d: Duration| FRAMES as f64 / 60.0 / d.as_secs_f64();
        table.push(Row {
            what: format!("engine, NV12 3840x2160 60 fps, {FRAMES} frames, {path}"),
            candidate: format!("{:.1}× real time", real(ratio.cand)),
            baseline: format!("{baseline} {:.1}× real time", real(ratio.base)),
            ratio,
            goal: Goal::AtMost(1.1),
        });
        let ratio = interleaved(5, &mut stream, &mut |s| s.baseline(FRAMES), &mut |s| {
            s.run(FRAMES, Work::Bookkeeping)
        });
        table.push(Row {
            what: format!("engine bookkeeping only (no pixels), {path}"),
            candidate: ns(ratio.cand, FRAMES) + " per frame",
            baseline: format!("{baseline} {}", ns(ratio.base, FRAMES) + " per frame"),
            ratio,
            goal: Goal::Info,
        });
    }
}

// ------------------------------------------------------------ simulator

/// The simulator binary next to this bench's (`cargo build --release
/// --example simulate`, which `scripts/bench.sh` runs first).
fn simulator_binary() -> std::path::PathBuf {
    let exe = std::env::current_exe().unwrap();
    let dir = exe.parent().and_then(std::path::Path::parent).unwrap();
    let binary = dir.join("examples").join("simulate");
    assert!(
        binary.exists(),
        "{} is missing: run `cargo build --release --example simulate` (scripts/bench.sh does)",
        binary.display()
    );
    binary
}

fn simulate(out: &std::path::Path, frames: u32) -> Duration {
    let start = Instant::now();
    let status = std::process::Command::new(simulator_binary())
        .args([
            "--format",
            "nv12",
            "--size",
            "3840x2160",
            "--fps",
            "60",
            "--path",
            "own",
        ])
        .args(["--frames", &frames.to_string()])
        .arg("--out")
        .arg(out)
        .stdout(std::process::Stdio::null())
        .status()
        .unwrap();
    assert!(status.success(), "simulate failed: {status}");
    start.elapsed()
}

/// The simulator's y4m conversion of a synthesized frame (the frame it just
/// wrote, so in cache) against a memcpy of the frame's bytes.
fn conversion(table: &mut Table) {
    for (w, h) in SIZES {
        for pixel in FORMATS {
            let layout = FrameLayout::new(pixel, w, h).unwrap();
            let image = layout.image_size() as usize;
            let mut frame = vec![0u8; image];
            synthesize(&mut frame, &layout, layout.stride(), &overlay(1)).unwrap();
            let mut copy = vec![0u8; image];
            let mut planes = planes::Planes::new(&layout);
            let (ratio, iters) = per_op(
                21,
                &mut (),
                &mut |&mut ()| {
                    copy.copy_from_slice(black_box(&frame));
                    black_box(&mut copy);
                },
                &mut |&mut ()| {
                    planes.convert(&layout, &frame, layout.stride() as usize);
                    black_box(&mut planes);
                },
            );
            table.push(Row {
                what: format!("simulator y4m conversion, {} {w}x{h}", pixel.name()),
                candidate: gbps(image * iters as usize, ratio.cand),
                baseline: format!("memcpy {}", gbps(image * iters as usize, ratio.base)),
                ratio,
                goal: if pixel == PixelFormat::Nv12 {
                    Goal::AtMost(1.2)
                } else {
                    Goal::Info
                },
            });
        }
    }
}

fn simulator(table: &mut Table) {
    const FRAMES: u32 = 600;
    conversion(table);
    let video = Duration::from_secs_f64(f64::from(FRAMES) / 60.0);
    let null = std::path::Path::new("/dev/null");
    let runs: Vec<Duration> = (0..3).map(|_| simulate(null, FRAMES)).collect();
    let mut factors: Vec<f64> = runs
        .iter()
        .map(|d| video.as_secs_f64() / d.as_secs_f64())
        .collect();
    factors.sort_by(f64::total_cmp);
    let wall = median_duration(runs);
    table.push(Row {
        what: format!("simulator, NV12 3840x2160 60 fps, {FRAMES} frames to /dev/null"),
        candidate: format!("{:.2} s wall", wall.as_secs_f64()),
        baseline: format!("{:.0} s of video", video.as_secs_f64()),
        ratio: Ratio {
            median: percentile(&factors, 50),
            p10: factors[0],
            p90: factors[factors.len() - 1],
            base: video,
            cand: wall,
        },
        goal: Goal::AtLeast(8.0),
    });
    to_disk(table);
}

/// The simulator writing a file, against writing the same bytes with plain
/// 1 MiB `write`s; both end with `fsync`, so the disk (not the page cache)
/// is what both wait for.
fn to_disk(table: &mut Table) {
    use std::io::Write as _;
    const FRAMES: u32 = 120;
    let dir = simulator_binary()
        .parent()
        .and_then(std::path::Path::parent)
        .and_then(std::path::Path::parent)
        .unwrap()
        .join("bench");
    std::fs::create_dir_all(&dir).unwrap();
    let video = dir.join("simulate.y4m");
    let plain = dir.join("plain.bin");
    // The file's size, known after the first simulator run.
    let mut bytes = 0usize;
    let ratio = interleaved(
        3,
        &mut bytes,
        &mut |bytes| {
            let start = Instant::now();
            let mut file = std::fs::File::create(&plain).unwrap();
            let chunk = vec![0x5au8; MIB];
            let mut left = (*bytes).max(MIB);
            while left > 0 {
                let n = left.min(MIB);
                file.write_all(&chunk[..n]).unwrap();
                left -= n;
            }
            file.sync_all().unwrap();
            start.elapsed()
        },
        &mut |bytes| {
            let start = Instant::now();
            simulate(&video, FRAMES);
            std::fs::File::open(&video).unwrap().sync_all().unwrap();
            let elapsed = start.elapsed();
            *bytes = std::fs::metadata(&video).unwrap().len() as usize;
            elapsed
        },
    );
    let _ = std::fs::remove_file(&video);
    let _ = std::fs::remove_file(&plain);
    table.push(Row {
        what: format!("simulator, NV12 3840x2160, {FRAMES} frames to a file, fsync"),
        candidate: format!("{:.0} MB/s", bytes as f64 / ratio.cand.as_secs_f64() / 1e6),
        baseline: format!(
            "plain write+fsync {:.0} MB/s",
            bytes as f64 / ratio.base.as_secs_f64() / 1e6
        ),
        ratio,
        goal: Goal::Info,
    });
}

// ----------------------------------------------------------------- main

/// Every group's name, `machine` first.
const NAMES: [&str; 7] = [
    "machine",
    "pool",
    "threads",
    "synthesis",
    "copy",
    "engine",
    "simulator",
];

/// A group of rows.
type Group = fn(&mut Table);

/// The groups after `machine`, in the order they run.
const GROUPS: [(&str, Group); 6] = [
    ("pool", pool),
    ("threads", threads),
    ("synthesis", synthesis),
    ("copy", copy),
    ("engine", engine),
    ("simulator", simulator),
];

fn main() {
    let groups: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with("--"))
        .collect();

    if let Some(bad) = groups.iter().find(|g| !NAMES.contains(&g.as_str())) {
        eprintln!(
            "ratios: unknown group `{bad}`; groups: {}",
            NAMES.join(", ")
        );
        std::process::exit(2);
    }
    let wanted = |g: &str| groups.is_empty() || groups.iter().any(|x| x == g);
    let mut table = Table::default();
    let runs = GROUPS;
    if wanted("machine") {
        machine();
    }
    for (name, run) in runs {
        if wanted(name) {
            eprintln!("{name}:");
            run(&mut table);
        }
    }
    if !table.rows.is_empty() {
        table.print();
    }
}
