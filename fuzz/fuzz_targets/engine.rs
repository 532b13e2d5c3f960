//! Engine and routing: sequences of Process (`route_frame` + `submit`),
//! timer ticks, delivery (`take_due`), run / pause / stop and the returns
//! of `take_queued`, over a capture engine of depth 1, 2, 4 or 8, with
//! client frames from our own allocator pools (held, freed, in flight),
//! foreign frames anywhere (inside our pools' slots too) and a staging pool
//! that runs out. A model of the engine (timeline, FIFO of queued and due
//! targets, statistics) and of the pools' slots is compared after every
//! step; every submitted target must come back exactly once, completed or
//! returned. Then `CopyPlan::new` and `CopyPlan::copy` (plans the engine
//! makes and hand-made ones) against a byte-level model of the copy, and
//! the clock helpers against saturating arithmetic.
#![no_main]

use std::collections::{HashSet, VecDeque};

use arbitrary::Arbitrary;
use avscap::portable::capture_engine::{
    qpc_to_100ns, rebase_to_clock, route_frame, stamp_options, timer_due_time, CaptureEngine,
    ClientBuffer, CopyPlan, CopyTooShort, DmaTarget, EngineError, EngineStats, RouteError, Target,
    Tick,
};
use avscap::portable::frame_pool::{Frame, FramePool, Region};
use avscap::portable::framing::{allocator_plan, staging_plan, AllocatorFraming};
use avscap::portable::image::DeliveryPath;
use avscap::portable::video_format::{FrameLayout, PixelFormat};
use libfuzzer_sys::fuzz_target;

const PAGE: usize = 4096;
const TIMEVALID: u32 = 0x10;
const DURATIONVALID: u32 = 0x100;
const DISCONTINUITY: u32 = 0x4;

// ---------------------------------------------------------------- input ----

#[derive(Arbitrary, Debug)]
enum Addr {
    /// Anything.
    Raw(usize),
    /// Near the start of slot `slot` of own pool `pool` (held or not).
    NearOwn { pool: u8, slot: u8, offset: i16 },
    /// Near the start of a staging slot.
    NearStaging { slot: u8, offset: i16 },
}

#[derive(Arbitrary, Debug)]
enum Extent {
    /// The image size plus or minus a little.
    Near(i16),
    /// The rows at the client's pitch, plus or minus a byte or two.
    Pitched(i8),
    Raw(u32),
}

#[derive(Arbitrary, Debug)]
enum Pitch {
    Packed,
    /// The layout's stride plus or minus a little, either sign.
    Near(i8, bool),
    Raw(i32),
}

#[derive(Arbitrary, Debug)]
enum When {
    /// When the next frame is due.
    OnTime,
    /// That many whole intervals late, plus a little.
    Late(u8, u16),
    /// Before it is due.
    Early(u16),
    /// Any step, backwards too.
    Step(i32),
}

#[derive(Arbitrary, Debug)]
enum Op {
    /// The client takes a frame from our allocator pool `n`.
    AllocOwn(u8),
    /// The client frees the n-th own frame it holds (not in flight).
    FreeOwn(u8),
    /// Process gets the n-th own frame the client holds.
    ProcessOwn(u8, Pitch),
    /// Process gets a frame at any address.
    ProcessForeign(Addr, Extent, Pitch),
    Run(When),
    Pause,
    Stop,
    Tick(When),
    /// The delivery work item takes a due frame (and stamps a reused
    /// header's options).
    TakeDue(u32),
    TakeQueued,
    Clocks(i64, i64, i64),
}

#[derive(Arbitrary, Debug)]
struct OwnPool {
    frames: u8,
    /// Frame size relative to the image (smaller frames are never used in place).
    size_delta: i16,
    page: u16,
}

#[derive(Arbitrary, Debug)]
enum CopyCase {
    /// A plan of the engine's for a small layout.
    Made {
        pixel: u8,
        width: u8,
        height: u8,
        pitch: Pitch,
        extent: Extent,
        source_delta: i8,
        dest_delta: i8,
    },
    /// Any plan.
    Hand {
        rows: u8,
        row_bytes: u8,
        source_stride: u8,
        dest_pitch: u8,
        data_used: u16,
        source_len: u16,
        dest_len: u16,
    },
}

#[derive(Arbitrary, Debug)]
struct Input {
    depth: u8,
    pixel: u8,
    width: u8,
    height: u8,
    interval: u8,
    staging_slots: u8,
    own: Vec<OwnPool>,
    start: i32,
    ops: Vec<Op>,
    copies: Vec<CopyCase>,
}

// ---------------------------------------------------------------- model ----

/// A pool's slots as the model sees them.
struct Slots {
    base: usize,
    logical: u64,
    slot: usize,
    frame_len: u32,
    taken: Vec<bool>,
}

impl Slots {
    fn new(pool: &FramePool, frame_len: u32) -> Self {
        let r = pool.region();
        Slots {
            base: r.virtual_base,
            logical: r.logical_base,
            slot: (frame_len as usize).max(1).next_multiple_of(PAGE),
            frame_len,
            taken: vec![false; pool.capacity() as usize],
        }
    }

    fn frame(&self, index: usize) -> Frame {
        Frame {
            virtual_address: self.base + index * self.slot,
            logical_address: self.logical + (index * self.slot) as u64,
            index: index as u32,
            len: self.frame_len,
        }
    }

    /// The slot that starts at `address`, taken or not.
    fn slot_at(&self, address: usize) -> Option<usize> {
        let off = address.checked_sub(self.base)?;
        (off % self.slot == 0 && off / self.slot < self.taken.len()).then_some(off / self.slot)
    }

    /// Checks a frame the pool handed out against a free slot and takes it.
    fn take(&mut self, got: Option<Frame>) {
        match got {
            Some(f) => {
                let i = f.index as usize;
                assert!(
                    i < self.taken.len() && !self.taken[i],
                    "slot {i} was not free"
                );
                assert_eq!(f, self.frame(i));
                self.taken[i] = true;
            }
            None => assert!(self.taken.iter().all(|&t| t), "a free slot was refused"),
        }
    }

    fn in_use(&self) -> u32 {
        self.taken.iter().filter(|&&t| t).count() as u32
    }
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum State {
    Stopped,
    Running { start: i128 },
    Paused,
}

struct Held {
    cookie: u64,
    dma: DmaTarget,
    client: ClientBuffer,
}

struct Due {
    held: Held,
    /// The start of its interval on the timeline it was due on.
    presentation: i128,
    picture: u64,
    drops: u64,
    flags: u32,
}

struct Model<const D: usize> {
    interval: i128,
    image: u32,
    state: State,
    /// Frames whose interval has passed since the start (picture number of the last).
    frames: u64,
    stats: EngineStats,
    discontinuity: bool,
    queued: VecDeque<Held>,
    due: VecDeque<Due>,
}

impl<const D: usize> Model<D> {
    fn next_due(&self) -> Option<i64> {
        match self.state {
            State::Running { start } => {
                Some(i64::try_from(start + i128::from(self.frames + 1) * self.interval).unwrap())
            }
            _ => None,
        }
    }
}

/// Where a delivered or returned target's resources go back.
fn release(
    dma: &DmaTarget,
    staging: &FramePool,
    staging_model: &mut Slots,
    in_flight: &mut [Vec<u32>],
    own: &[(FramePool, Slots)],
) {
    match dma {
        DmaTarget::Staging(f) => {
            assert_eq!(staging.free(f.virtual_address), Ok(f.index));
            staging_model.taken[f.index as usize] = false;
        }
        DmaTarget::Direct(f) => {
            let (p, _) = own
                .iter()
                .enumerate()
                .find(|(_, (_, s))| s.slot_at(f.virtual_address).is_some())
                .expect("a direct target is in an own pool");
            let n = &mut in_flight[p][f.index as usize];
            assert!(*n > 0);
            *n -= 1;
        }
    }
}

fn model_plan(layout: &FrameLayout, pitch: i32, extent: u32) -> CopyPlan {
    let (stride, image) = (u64::from(layout.stride()), u64::from(layout.image_size()));
    let rows = image / stride;
    let p = u64::from(pitch.unsigned_abs());
    if p > stride && p * rows <= u64::from(extent) {
        CopyPlan {
            rows: rows as u32,
            row_bytes: stride as u32,
            source_stride: stride as u32,
            dest_pitch: p as u32,
            data_used: (p * rows) as u32,
        }
    } else {
        CopyPlan {
            rows: 1,
            row_bytes: image as u32,
            source_stride: image as u32,
            dest_pitch: image as u32,
            data_used: image as u32,
        }
    }
}

/// The copy by the plan, byte by byte, into a copy of `dest`.
fn model_copy(p: &CopyPlan, source: &[u8], dest: &[u8]) -> Result<(u32, Vec<u8>), CopyTooShort> {
    let (rows, len) = (p.rows as usize, p.row_bytes as usize);
    let (rs, ws) = (p.source_stride as usize, p.dest_pitch as usize);
    if rows == 0 || len == 0 {
        return Ok((p.data_used, dest.to_vec()));
    }
    if rows > 1 && (len > rs || len > ws) {
        return Err(CopyTooShort);
    }
    let read = (rows - 1) * rs + len;
    let write = (rows - 1) * ws + len;
    if dest.len() < p.data_used as usize || source.len() < read || dest.len() < write {
        return Err(CopyTooShort);
    }
    let mut out = dest.to_vec();
    for r in 0..rows {
        for i in 0..len {
            out[r * ws + i] = source[r * rs + i];
        }
    }
    Ok((p.data_used, out))
}

fn pitch_of(p: &Pitch, stride: u32) -> i32 {
    match *p {
        Pitch::Packed => 0,
        Pitch::Near(d, neg) => {
            let v = (i64::from(stride) + i64::from(d)) as i32;
            if neg {
                -v
            } else {
                v
            }
        }
        Pitch::Raw(v) => v,
    }
}

fn extent_of(e: &Extent, layout: &FrameLayout, pitch: i32) -> u32 {
    let image = layout.image_size();
    match *e {
        Extent::Near(d) => image.saturating_add_signed(i32::from(d)),
        Extent::Pitched(d) => {
            let rows = image / layout.stride();
            pitch
                .unsigned_abs()
                .saturating_mul(rows)
                .saturating_add_signed(i32::from(d % 3))
        }
        Extent::Raw(v) => v,
    }
}

fn check_copy(case: &CopyCase) {
    let (plan, source_len, dest_len) = match case {
        CopyCase::Made {
            pixel,
            width,
            height,
            pitch,
            extent,
            source_delta,
            dest_delta,
        } => {
            let pixel =
                [PixelFormat::Nv12, PixelFormat::Yuy2, PixelFormat::Rgb24][usize::from(*pixel) % 3];
            let w = (u32::from(*width) % 32 + 1).next_multiple_of(2);
            let h = (u32::from(*height) % 16 + 1).next_multiple_of(2);
            let layout = FrameLayout::new(pixel, w, h).unwrap();
            let pitch = pitch_of(pitch, layout.stride());
            // Keep the client frame small: extents past 64 KiB are tried
            // for the plan only.
            let extent = extent_of(extent, &layout, pitch);
            let plan = CopyPlan::new(&layout, pitch, extent);
            assert_eq!(
                plan,
                model_plan(&layout, pitch, extent),
                "{layout:?} {pitch} {extent}"
            );
            if extent > 1 << 16 {
                return;
            }
            let source = layout.image_size() as usize;
            let dest = plan.data_used as usize;
            (
                plan,
                source.saturating_add_signed(isize::from(*source_delta % 4)),
                dest.saturating_add_signed(isize::from(*dest_delta % 8)),
            )
        }
        CopyCase::Hand {
            rows,
            row_bytes,
            source_stride,
            dest_pitch,
            data_used,
            source_len,
            dest_len,
        } => (
            CopyPlan {
                rows: u32::from(*rows % 9),
                row_bytes: u32::from(*row_bytes % 65),
                source_stride: u32::from(*source_stride % 65),
                dest_pitch: u32::from(*dest_pitch % 65),
                data_used: u32::from(*data_used % 700),
            },
            usize::from(*source_len % 700),
            usize::from(*dest_len % 700),
        ),
    };
    assert_eq!(plan.is_packed(), plan.rows == 1);
    assert_eq!(
        plan.bytes_copied(),
        u64::from(plan.rows) * u64::from(plan.row_bytes)
    );
    let source: Vec<u8> = (0..source_len).map(|i| (i * 7 + 1) as u8).collect();
    // The destination is a slice of a longer buffer whose tail must stay.
    let mut buf = vec![0xEEu8; dest_len + 64];
    for (i, b) in buf[..dest_len].iter_mut().enumerate() {
        *b = (i * 13 + 5) as u8 | 0x80;
    }
    let before = buf[..dest_len].to_vec();
    let want = model_copy(&plan, &source, &before);
    let got = plan.copy(&source, &mut buf[..dest_len]);
    match want {
        Ok((used, after)) => {
            assert_eq!(got, Ok(used), "{plan:?}");
            assert_eq!(buf[..dest_len], after[..], "{plan:?}");
        }
        Err(e) => {
            assert_eq!(got, Err(e), "{plan:?}");
            assert_eq!(buf[..dest_len], before[..], "written on refusal");
        }
    }
    assert!(
        buf[dest_len..].iter().all(|&b| b == 0xEE),
        "written past dest"
    );
}

fn check_clocks(a: i64, b: i64, c: i64) {
    let clamp = |v: i128| v.clamp(i128::from(i64::MIN), i128::from(i64::MAX)) as i64;
    let want = if b <= 0 {
        0
    } else {
        clamp(i128::from(a) * 10_000_000 / i128::from(b))
    };
    assert_eq!(qpc_to_100ns(a, b), want);
    let ago = clamp(i128::from(b) - i128::from(a));
    assert_eq!(
        rebase_to_clock(a, b, c),
        clamp(i128::from(c) - i128::from(ago))
    );
    let until_due = clamp(i128::from(a) - i128::from(b)).max(1);
    assert_eq!(timer_due_time(a, b), -until_due);
}

#[allow(clippy::too_many_lines)]
fn run<const D: usize>(input: &Input) {
    let pixel =
        [PixelFormat::Nv12, PixelFormat::Yuy2, PixelFormat::Rgb24][usize::from(input.pixel) % 3];
    let width = (u32::from(input.width) % 64 + 1).next_multiple_of(2);
    let height = (u32::from(input.height) % 64 + 1).next_multiple_of(2);
    let layout = FrameLayout::new(pixel, width, height).unwrap();
    let image = layout.image_size();
    let interval: i64 = match input.interval % 8 {
        0 => 333_333,
        1 => 166_667,
        2 => 666_667,
        3 => 1,
        n => i64::from(n) * 1000 + i64::from(input.interval),
    };
    for bad in [0, -1, i64::MIN] {
        assert_eq!(
            CaptureEngine::<u64, D>::new(bad, image).err(),
            Some(EngineError::BadInterval)
        );
    }
    let mut engine = CaptureEngine::<u64, D>::new(interval, image).unwrap();
    assert_eq!(engine.interval(), interval);

    // The staging slots, then the own pools, each in a region of its own.
    let slots = u32::from(input.staging_slots % 8) + 1;
    let plan = staging_plan(&layout, slots).unwrap();
    let region = |k: usize, page: u16| Region {
        virtual_base: ((k + 1) << 40) | (usize::from(page) * PAGE),
        logical_base: (((k + 1) << 36) | (usize::from(page) * PAGE)) as u64,
        len: plan.bytes().max(64 * (1 << 20)),
    };
    let staging = FramePool::over(
        Region {
            len: plan.bytes(),
            ..region(0, input.start as u16)
        },
        &plan,
    )
    .unwrap();
    let mut staging_model = Slots::new(&staging, image);
    let mut own: Vec<(FramePool, Slots)> = Vec::new();
    for (k, o) in input.own.iter().take(3).enumerate() {
        let frame_size = image.saturating_add_signed(i32::from(o.size_delta)).max(1);
        let request = AllocatorFraming {
            frames: u32::from(o.frames % 8) + 1,
            frame_size,
            ..AllocatorFraming::default()
        };
        let plan = allocator_plan(&request, 1).unwrap();
        let r = region(k + 1, o.page);
        let pool = FramePool::over(
            Region {
                len: plan.bytes(),
                ..r
            },
            &plan,
        )
        .unwrap();
        let slots = Slots::new(&pool, frame_size);
        own.push((pool, slots));
    }
    let mut in_flight: Vec<Vec<u32>> = own.iter().map(|(_, s)| vec![0; s.taken.len()]).collect();

    let mut model = Model::<D> {
        interval: i128::from(interval),
        image,
        state: State::Stopped,
        frames: 0,
        stats: EngineStats::default(),
        discontinuity: false,
        queued: VecDeque::new(),
        due: VecDeque::new(),
    };
    let mut now = i64::from(input.start) * 1000;
    let mut next_cookie = 0u64;
    let mut outstanding: HashSet<u64> = HashSet::new();

    let time = |when: &When, model: &Model<D>, now: &mut i64| {
        let next = model.next_due().unwrap_or(*now);
        *now = match *when {
            When::OnTime => next,
            When::Late(k, j) => next + i64::from(k) * interval + i64::from(j) % interval,
            When::Early(e) => next - 1 - i64::from(e),
            When::Step(s) => *now + i64::from(s),
        };
    };

    for op in input.ops.iter().take(256) {
        match op {
            Op::AllocOwn(n) => {
                if own.is_empty() {
                    continue;
                }
                let k = usize::from(*n) % own.len();
                let (pool, slots) = &mut own[k];
                slots.take(pool.allocate());
            }
            Op::FreeOwn(n) => {
                let held: Vec<(usize, usize)> = own
                    .iter()
                    .enumerate()
                    .flat_map(|(p, (_, s))| {
                        (0..s.taken.len())
                            .filter(move |&i| s.taken[i])
                            .map(move |i| (p, i))
                    })
                    .filter(|&(p, i)| in_flight[p][i] == 0)
                    .collect();
                if held.is_empty() {
                    continue;
                }
                let (p, i) = held[usize::from(*n) % held.len()];
                let (pool, slots) = &mut own[p];
                assert_eq!(pool.free(slots.frame(i).virtual_address), Ok(i as u32));
                slots.taken[i] = false;
            }
            Op::ProcessOwn(..) | Op::ProcessForeign(..) => {
                let client = match op {
                    Op::ProcessOwn(n, pitch) => {
                        let held: Vec<Frame> = own
                            .iter()
                            .enumerate()
                            .flat_map(|(p, (_, s))| {
                                let flight = &in_flight[p];
                                (0..s.taken.len())
                                    .filter(move |&i| s.taken[i] && flight[i] == 0)
                                    .map(move |i| s.frame(i))
                            })
                            .collect();
                        if held.is_empty() {
                            continue;
                        }
                        let f = held[usize::from(*n) % held.len()];
                        ClientBuffer {
                            address: f.virtual_address,
                            extent: f.len,
                            surface_pitch: pitch_of(pitch, layout.stride()),
                        }
                    }
                    Op::ProcessForeign(addr, extent, pitch) => {
                        let near = |s: &Slots, slot: u8, off: i16| {
                            (s.base + usize::from(slot % 9) * s.slot)
                                .wrapping_add_signed(isize::from(off))
                        };
                        let address = match addr {
                            Addr::Raw(a) => *a,
                            Addr::NearOwn { pool, slot, offset } if !own.is_empty() => {
                                near(&own[usize::from(*pool) % own.len()].1, *slot, *offset)
                            }
                            Addr::NearOwn { slot, offset, .. }
                            | Addr::NearStaging { slot, offset } => {
                                near(&staging_model, *slot, *offset)
                            }
                        };
                        let surface_pitch = pitch_of(pitch, layout.stride());
                        ClientBuffer {
                            address,
                            extent: extent_of(extent, &layout, surface_pitch),
                            surface_pitch,
                        }
                    }
                    _ => unreachable!(),
                };
                // The model's routing: in place only into an own frame the
                // client holds that is large enough, else a staging slot.
                let got = route_frame(own.iter().map(|(p, _)| p), &staging, client, image);
                let target = if client.extent < image {
                    assert_eq!(
                        got,
                        Err(RouteError::FrameTooSmall {
                            have: client.extent,
                            need: image
                        })
                    );
                    continue;
                } else if let Some((p, i)) = own.iter().enumerate().find_map(|(p, (_, s))| {
                    s.slot_at(client.address)
                        .filter(|&i| s.taken[i] && s.frame_len >= image)
                        .map(|i| (p, i))
                }) {
                    let want = DmaTarget::Direct(own[p].1.frame(i));
                    assert_eq!(got, Ok(want), "{client:?}");
                    in_flight[p][i] += 1;
                    want
                } else {
                    match got {
                        Ok(DmaTarget::Staging(f)) => {
                            staging_model.take(Some(f));
                            DmaTarget::Staging(f)
                        }
                        Err(RouteError::NoStagingSlot) => {
                            staging_model.take(None);
                            continue;
                        }
                        other => panic!("{client:?} routed to {other:?}"),
                    }
                };
                let cookie = next_cookie;
                next_cookie += 1;
                let t = Target {
                    cookie,
                    dma: target,
                    client,
                };
                let room = model.queued.len() + model.due.len() < D;
                match engine.submit(t) {
                    Ok(()) => {
                        assert!(room, "accepted past its depth");
                        outstanding.insert(cookie);
                        model.queued.push_back(Held {
                            cookie,
                            dma: target,
                            client,
                        });
                    }
                    Err(back) => {
                        assert!(!room, "refused with room");
                        assert_eq!(
                            (back.cookie, back.dma, back.client),
                            (cookie, target, client)
                        );
                        release(&target, &staging, &mut staging_model, &mut in_flight, &own);
                    }
                }
            }
            Op::Run(when) => {
                time(when, &model, &mut now);
                engine.run(now);
                model.state = match model.state {
                    State::Stopped => {
                        model.frames = 0;
                        model.stats = EngineStats::default();
                        model.discontinuity = false;
                        State::Running {
                            start: i128::from(now),
                        }
                    }
                    // The timeline continues from now: the frames already
                    // due lie just behind it.
                    State::Paused => State::Running {
                        start: i128::from(now) - i128::from(model.frames) * model.interval,
                    },
                    running @ State::Running { .. } => running,
                };
            }
            Op::Pause => {
                engine.pause();
                if matches!(model.state, State::Running { .. }) {
                    model.state = State::Paused;
                }
            }
            Op::Stop => {
                assert_eq!(engine.stop(), model.queued.len() + model.due.len());
                model.state = State::Stopped;
            }
            Op::Tick(when) => {
                time(when, &model, &mut now);
                let got = engine.tick(now);
                let State::Running { start } = model.state else {
                    assert_eq!(got, Tick::Idle);
                    continue;
                };
                // The whole intervals gone by since the start say which
                // frame this is; at least the next one.
                let passed = (i128::from(now) - start).max(0) / model.interval;
                let picture = (model.frames + 1).max(passed as u64);
                let missed = picture - model.frames - 1;
                model.frames = picture;
                model.stats.dropped += missed;
                if missed > 0 {
                    model.discontinuity = true;
                }
                match model.queued.pop_front() {
                    None => {
                        model.stats.dropped += 1;
                        model.discontinuity = true;
                        assert_eq!(
                            got,
                            Tick::Dropped {
                                picture_number: picture,
                                drop_count: model.stats.dropped
                            }
                        );
                    }
                    Some(held) => {
                        assert_eq!(
                            got,
                            Tick::Due {
                                picture_number: picture
                            }
                        );
                        let mut flags = TIMEVALID | DURATIONVALID;
                        if model.discontinuity {
                            flags |= DISCONTINUITY;
                            model.discontinuity = false;
                        }
                        model.stats.delivered += 1;
                        match held.dma {
                            DmaTarget::Direct(_) => model.stats.zero_copy += 1,
                            DmaTarget::Staging(_) => {
                                model.stats.copied += 1;
                                model.stats.bytes_copied += u64::from(model.image);
                            }
                        }
                        model.due.push_back(Due {
                            held,
                            presentation: start + i128::from(picture - 1) * model.interval,
                            picture,
                            drops: model.stats.dropped,
                            flags,
                        });
                    }
                }
            }
            Op::TakeDue(existing) => {
                let got = engine.take_due();
                let Some(want) = model.due.pop_front() else {
                    assert!(got.is_none());
                    continue;
                };
                let c = got.expect("a due frame");
                assert_eq!(c.target.cookie, want.held.cookie);
                assert_eq!(c.target.dma, want.held.dma);
                assert_eq!(c.target.client, want.held.client);
                assert_eq!(c.picture_number, want.picture);
                assert_eq!(i128::from(c.presentation_time), want.presentation);
                assert_eq!(c.drop_count, want.drops);
                assert_eq!(c.options_flags, want.flags);
                assert_eq!(c.duration, interval);
                assert_eq!(c.data_used, image);
                assert_eq!(
                    i128::from(c.stream_time),
                    i128::from(want.picture) * model.interval
                );
                let overlay = c.overlay();
                assert_eq!(
                    (
                        overlay.frame_number,
                        overlay.dropped,
                        overlay.stream_time_100ns
                    ),
                    (want.picture, want.drops, c.stream_time)
                );
                let direct = matches!(want.held.dma, DmaTarget::Direct(_));
                assert_eq!(overlay.path == DeliveryPath::ZeroCopy, direct);
                // The header's other option bits stay; the pin's are this frame's.
                let stamped = stamp_options(*existing, c.options_flags);
                let owned = DISCONTINUITY | TIMEVALID | DURATIONVALID;
                assert_eq!(stamped, (*existing & !owned) | want.flags);
                // How the image reaches the client.
                let plan = c.target.copy_plan(&layout);
                let want_plan = (!direct).then(|| {
                    model_plan(
                        &layout,
                        want.held.client.surface_pitch,
                        want.held.client.extent,
                    )
                });
                assert_eq!(plan, want_plan);
                assert_eq!(
                    c.target.data_used(&layout),
                    want_plan.map_or(image, |p| p.data_used)
                );
                assert!(outstanding.remove(&c.target.cookie), "delivered twice");
                release(
                    &c.target.dma,
                    &staging,
                    &mut staging_model,
                    &mut in_flight,
                    &own,
                );
            }
            Op::TakeQueued => {
                let got = engine.take_queued();
                let want = model
                    .due
                    .pop_front()
                    .map(|d| d.held)
                    .or_else(|| model.queued.pop_front());
                match (got, want) {
                    (None, None) => {}
                    (Some(t), Some(w)) => {
                        assert_eq!((t.cookie, t.dma, t.client), (w.cookie, w.dma, w.client));
                        assert!(outstanding.remove(&t.cookie), "returned twice");
                        release(&t.dma, &staging, &mut staging_model, &mut in_flight, &own);
                    }
                    (got, want) => panic!(
                        "take_queued: {:?}, model {:?}",
                        got.map(|t| t.cookie),
                        want.map(|w| w.cookie)
                    ),
                }
            }
            Op::Clocks(a, b, c) => check_clocks(*a, *b, *c),
        }

        // After every step.
        assert_eq!(engine.queued(), model.queued.len());
        assert_eq!(engine.due(), model.due.len());
        assert_eq!(engine.has_room(), model.queued.len() + model.due.len() < D);
        assert_eq!(
            engine.is_running(),
            matches!(model.state, State::Running { .. })
        );
        assert_eq!(engine.next_due(), model.next_due());
        assert_eq!(engine.stats(), model.stats);
        assert_eq!(
            engine.stats().picture_number(),
            model.stats.delivered + model.stats.dropped
        );
        assert_eq!(staging.in_use(), staging_model.in_use());
        for (pool, slots) in &own {
            assert_eq!(pool.in_use(), slots.in_use());
        }
        assert_eq!(
            outstanding.len(),
            model.queued.len() + model.due.len(),
            "a target lost"
        );
    }

    // Stop hands back everything still held, due frames first.
    assert_eq!(engine.stop(), outstanding.len());
    while let Some(t) = engine.take_queued() {
        let w = model
            .due
            .pop_front()
            .map(|d| d.held)
            .or_else(|| model.queued.pop_front())
            .expect("the model holds it");
        assert_eq!(t.cookie, w.cookie);
        assert!(outstanding.remove(&t.cookie), "returned twice");
        release(&t.dma, &staging, &mut staging_model, &mut in_flight, &own);
    }
    assert!(
        outstanding.is_empty(),
        "targets never returned: {outstanding:?}"
    );
    assert_eq!(staging.in_use(), 0, "a staging slot leaked");
    assert!(in_flight.iter().flatten().all(|&n| n == 0));
}

fuzz_target!(|input: Input| {
    assert_eq!(
        CaptureEngine::<u64, 0>::new(1, 1).err(),
        Some(EngineError::NoQueue)
    );
    match input.depth % 4 {
        0 => run::<1>(&input),
        1 => run::<2>(&input),
        2 => run::<4>(&input),
        _ => run::<8>(&input),
    }
    for case in input.copies.iter().take(8) {
        check_copy(case);
    }
});
