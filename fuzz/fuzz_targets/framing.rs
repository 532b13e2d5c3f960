//! Framing: `allocator_plan` and `staging_plan` for any request and image
//! size, then the pool `FramePool::over` builds on a region of exactly the
//! planned length at any page-aligned bases (and on regions that are too
//! short, misaligned or at the end of the address space); and
//! `framing::plan` for any frame count, frame size, power-of-two alignment
//! and region. Each against a model of the rules written here: the same
//! result, the same error variant with the same fields, the same status;
//! and for every pool built, its frames allocated to exhaustion: exactly N,
//! each inside the region, aligned in both address spaces, at the same
//! offset in both, non-overlapping, then none.
#![no_main]

use arbitrary::Arbitrary;
use avscap::portable::frame_pool::{FramePool, Region};
use avscap::portable::framing::{
    allocator_plan, plan, staging_plan, Alignment, AllocatorFraming, BufferPlan, FramingError,
};
use avscap::portable::video_format::{FrameLayout, PixelFormat, DATA_RANGES};
use libfuzzer_sys::fuzz_target;

// ---------------------------------------------------------------- model ----

const PAGE: u64 = 4096;
/// The largest image offered (3840x2160 RGB24), a whole number of pages.
const MAX_FRAME: u32 = 3840 * 3 * 2160;
const MAX_FRAMES: u32 = 64;
/// `OPTIONF_COMPATIBLE`, `OPTIONF_SYSTEM_MEMORY`, `REQUIREMENTF_FRAME_INTEGRITY`,
/// `REQUIREMENTF_MUST_ALLOCATE`, `REQUIREMENTF_PREFERENCES_ONLY`.
const REQUEST_FLAGS: u32 = 0x1 | 0x2 | 0x4 | 0x8 | 0x8000_0000;
/// `NonPagedPool`, `PagedPool`, their cache-aligned kinds, `NonPagedPoolNx`
/// and its cache-aligned kind.
const POOL_TYPES: [u32; 6] = [0, 1, 4, 5, 512, 516];

const INVALID_PARAMETER: i32 = 0xC000_000Du32 as i32;
const INSUFFICIENT_RESOURCES: i32 = 0xC000_009Au32 as i32;
const NOT_SUPPORTED: i32 = 0xC000_00BBu32 as i32;

/// A buffer plan as the model computes it: (frames, frame size, slot, bytes).
type Buffer = (u32, u32, u32, u64);

/// A pool holds 1 to 64 frames.
fn model_frame_count(frames: u32) -> Result<(), FramingError> {
    if frames == 0 {
        return Err(FramingError::NoFrames);
    }
    if frames > MAX_FRAMES {
        return Err(FramingError::TooManyFrames {
            requested: frames,
            max: MAX_FRAMES,
        });
    }
    Ok(())
}

fn model_buffer(frames: u32, frame_size: u32) -> Result<Buffer, FramingError> {
    model_frame_count(frames)?;
    // Whole pages, at least one.
    let slot = u64::from(frame_size.max(1)).div_ceil(PAGE) * PAGE;
    let slot = u32::try_from(slot).map_err(|_| FramingError::Overflow)?;
    Ok((
        frames,
        frame_size,
        slot,
        u64::from(slot) * u64::from(frames),
    ))
}

fn model_allocator(r: &AllocatorFraming, image: u32) -> Result<Buffer, FramingError> {
    if r.reserved != 0 {
        return Err(FramingError::ReservedNotZero);
    }
    if r.flags & !REQUEST_FLAGS != 0 {
        return Err(FramingError::UnknownFlags(r.flags & !REQUEST_FLAGS));
    }
    // A mask 2^k − 1: one more is a power of two (u32::MAX is not).
    let mask = r.file_alignment;
    if mask == u32::MAX || !(mask + 1).is_power_of_two() {
        return Err(FramingError::AlignmentNotMask(mask));
    }
    if mask + 1 > 4096 {
        return Err(FramingError::AlignmentAbovePage(mask));
    }
    if !POOL_TYPES.contains(&r.pool_type) {
        return Err(FramingError::UnsupportedPoolType(r.pool_type));
    }
    let frame_size = if r.frame_size == 0 {
        image
    } else {
        r.frame_size
    };
    if frame_size == 0 || frame_size < image {
        return Err(FramingError::FrameSmallerThanImage {
            frame_size,
            image_size: image,
        });
    }
    if frame_size > MAX_FRAME {
        return Err(FramingError::FrameTooLarge {
            frame_size,
            max: MAX_FRAME,
        });
    }
    let frames = if r.frames == 0 { 4 } else { r.frames };
    model_buffer(frames, frame_size)
}

fn model_status(e: FramingError) -> i32 {
    match e {
        FramingError::NoFrames
        | FramingError::ZeroFrameSize
        | FramingError::FrameSmallerThanImage { .. }
        | FramingError::AlignmentNotMask(_)
        | FramingError::UnknownFlags(_)
        | FramingError::ReservedNotZero
        | FramingError::Overflow => INVALID_PARAMETER,
        FramingError::TooManyFrames { .. }
        | FramingError::FrameTooLarge { .. }
        | FramingError::DoesNotFit { .. } => INSUFFICIENT_RESOURCES,
        FramingError::AlignmentAbovePage(_)
        | FramingError::UnsupportedPoolType(_)
        | FramingError::RegionMisaligned => NOT_SUPPORTED,
    }
}

/// `framing::plan` as the model has it: (first offset, slot size, span).
fn model_plan(
    frames: u32,
    frame_size: u32,
    align: u64,
    r: &Region,
) -> Result<(u64, u64, u64), FramingError> {
    model_frame_count(frames)?;
    if frame_size == 0 {
        return Err(FramingError::ZeroFrameSize);
    }
    let virt = r.virtual_base as u64;
    if virt % align != r.logical_base % align {
        return Err(FramingError::RegionMisaligned);
    }
    let first = (align - virt % align) % align;
    let slot = u64::from(frame_size).div_ceil(align) * align;
    if slot > u64::from(u32::MAX) {
        return Err(FramingError::Overflow);
    }
    let span = slot * u64::from(frames) + first;
    if span > r.len as u64 {
        return Err(FramingError::DoesNotFit {
            needed: span,
            available: r.len as u64,
        });
    }
    // Every slot address representable in both address spaces.
    if u128::from(r.logical_base) + u128::from(span) > u128::from(u64::MAX)
        || u128::from(virt) + u128::from(span) > u128::from(u64::MAX)
    {
        return Err(FramingError::Overflow);
    }
    Ok((first, slot, span))
}

/// Allocates every frame of `pool` and checks the set: `frames` of them,
/// each `frame_size` bytes at the same offset in both address spaces,
/// inside `region`, aligned to `align`, none overlapping; then none.
fn exhaust(pool: &FramePool, region: &Region, frames: u32, frame_size: u32, align: u64) {
    assert_eq!(pool.capacity(), frames);
    let mut got = Vec::new();
    while let Some(f) = pool.allocate() {
        assert!(got.len() < frames as usize, "more frames than slots");
        got.push(f);
    }
    assert_eq!(got.len(), frames as usize, "fewer frames than slots");
    assert_eq!(pool.allocate(), None);
    assert_eq!(pool.in_use(), frames);
    assert_eq!(pool.failed_allocations(), 2);
    let (v0, l0) = (region.virtual_base as u128, u128::from(region.logical_base));
    let end = v0 + region.len as u128;
    let mut indices: Vec<u32> = got.iter().map(|f| f.index).collect();
    indices.sort_unstable();
    assert!(indices.iter().copied().eq(0..frames), "{indices:?}");
    for f in &got {
        let (v, l) = (f.virtual_address as u128, u128::from(f.logical_address));
        assert_eq!(f.len, frame_size);
        assert!(
            v >= v0 && v + u128::from(frame_size) <= end,
            "{f:?} outside {region:?}"
        );
        assert_eq!(v - v0, l - l0, "{f:?}: offsets differ");
        assert_eq!(v % u128::from(align), 0, "{f:?}");
        assert_eq!(l % u128::from(align), 0, "{f:?}");
        assert_eq!(pool.lookup(f.virtual_address), Some(*f));
    }
    got.sort_by_key(|f| f.virtual_address);
    for w in got.windows(2) {
        assert!(
            w[0].virtual_address as u128 + u128::from(frame_size) <= w[1].virtual_address as u128,
            "{:?} overlaps {:?}",
            w[0],
            w[1]
        );
    }
}

// ---------------------------------------------------------------- input ----

#[derive(Arbitrary, Debug)]
enum Flags {
    /// A subset of the bits a request may carry.
    Valid(u8),
    Raw(u32),
}

#[derive(Arbitrary, Debug)]
enum Mask {
    /// 2^k − 1 for k = 0..=31.
    Bits(u8),
    Raw(u32),
}

#[derive(Arbitrary, Debug)]
enum Count {
    Small(u8),
    Raw(u32),
}

#[derive(Arbitrary, Debug)]
enum FrameSize {
    Image(i32),
    Zero,
    MaxFrame(i16),
    Raw(u32),
}

#[derive(Arbitrary, Debug)]
enum Image {
    /// One of the offered formats' image size.
    Offered(u8),
    Raw(u32),
}

#[derive(Arbitrary, Debug)]
struct Request {
    flags: Flags,
    pool_type: Result<u8, u32>,
    frames: Count,
    frame_size: FrameSize,
    mask: Mask,
    reserved: Option<u32>,
    image: Image,
}

#[derive(Arbitrary, Debug)]
enum Base {
    /// A page-aligned address.
    Page(u64),
    /// The last pages of the address space.
    Top(u8),
    Raw(u64),
}

impl Base {
    fn addr(&self, span: u64) -> u64 {
        match *self {
            Base::Page(p) => (p % (1 << 52)) * PAGE,
            // The last page-aligned base the span fits below, give or take
            // a few pages.
            Base::Top(n) => ((u64::MAX - span.saturating_sub(1)) / PAGE * PAGE)
                .wrapping_sub(u64::from(n % 4) * PAGE)
                .wrapping_add(u64::from(n / 64) * PAGE),
            Base::Raw(v) => v,
        }
    }
}

#[derive(Arbitrary, Debug)]
enum Len {
    Exact,
    Delta(i16),
    Raw(u64),
}

impl Len {
    fn of(&self, exact: u64) -> usize {
        match *self {
            Len::Exact => exact as usize,
            Len::Delta(d) => exact.saturating_add_signed(i64::from(d)) as usize,
            Len::Raw(v) => v as usize,
        }
    }
}

#[derive(Arbitrary, Debug)]
struct RegionIn {
    virt: Base,
    logical: Base,
    /// Low bits added to both bases, or to the virtual one only.
    low: Option<(u16, bool)>,
    len: Len,
}

impl RegionIn {
    fn region(&self, exact: u64) -> Region {
        let (mut v, mut l) = (self.virt.addr(exact), self.logical.addr(exact));
        if let Some((low, both)) = self.low {
            v = v.wrapping_add(u64::from(low));
            if both {
                l = l.wrapping_add(u64::from(low));
            }
        }
        Region {
            virtual_base: v as usize,
            logical_base: l,
            len: self.len.of(exact),
        }
    }
}

#[derive(Arbitrary, Debug)]
struct PlanIn {
    frames: Count,
    frame_size: Result<u16, u32>,
    /// log2 of the alignment (any u32 tried for `Alignment::new` too).
    align: u8,
    raw_align: u32,
    region: RegionIn,
}

#[derive(Arbitrary, Debug)]
struct Input {
    request: Request,
    region: RegionIn,
    staging: (u8, u8, u8),
    plan: PlanIn,
}

fn count(c: &Count) -> u32 {
    match *c {
        Count::Small(n) => u32::from(n % 70),
        Count::Raw(v) => v,
    }
}

fn build_request(r: &Request) -> (AllocatorFraming, u32) {
    let image = match r.image {
        Image::Offered(i) => DATA_RANGES[usize::from(i) % DATA_RANGES.len()]
            .layout()
            .unwrap()
            .image_size(),
        Image::Raw(v) => v,
    };
    let flags = match r.flags {
        Flags::Valid(bits) => {
            let all = [0x1, 0x2, 0x4, 0x8, 0x8000_0000];
            (0..5)
                .filter(|i| bits & (1 << i) != 0)
                .fold(0, |acc, i| acc | all[i])
        }
        Flags::Raw(v) => v,
    };
    let pool_type = match r.pool_type {
        Ok(i) => POOL_TYPES[usize::from(i) % POOL_TYPES.len()],
        Err(v) => v,
    };
    let frame_size = match r.frame_size {
        FrameSize::Image(d) => image.wrapping_add_signed(d % 8192),
        FrameSize::Zero => 0,
        FrameSize::MaxFrame(d) => MAX_FRAME.wrapping_add_signed(i32::from(d)),
        FrameSize::Raw(v) => v,
    };
    let file_alignment = match r.mask {
        Mask::Bits(k) => ((1u64 << (k % 33)) - 1) as u32,
        Mask::Raw(v) => v,
    };
    (
        AllocatorFraming {
            flags,
            pool_type,
            frames: count(&r.frames),
            frame_size,
            file_alignment,
            reserved: r.reserved.unwrap_or(0),
        },
        image,
    )
}

fn check_buffer(got: Result<BufferPlan, FramingError>, want: Result<Buffer, FramingError>) {
    match (got, want) {
        (Ok(p), Ok((frames, frame_size, slot, bytes))) => {
            assert_eq!(
                (p.frames(), p.frame_size(), p.slot_size(), p.bytes() as u64),
                (frames, frame_size, slot, bytes)
            );
            assert_eq!(
                p.overhead(),
                bytes - u64::from(frame_size) * u64::from(frames)
            );
            assert!(p.overhead() < PAGE * u64::from(frames));
        }
        (got, want) => {
            assert_eq!(got.err(), want.err());
            let e = got.unwrap_err();
            assert_eq!(e.ntstatus(), model_status(e), "{e:?}");
        }
    }
}

// ---------------------------------------------------------------- check ----

fuzz_target!(|input: Input| {
    // The allocator's buffer, then the pool over it.
    let (request, image) = build_request(&input.request);
    let got = allocator_plan(&request, image);
    let want = model_allocator(&request, image);
    check_buffer(got, want);
    if let Ok(buffer) = got {
        let region = input.region.region(buffer.bytes() as u64);
        let (frames, frame_size) = (buffer.frames(), buffer.frame_size());
        let pool = FramePool::over(region, &buffer);
        // `over` lays page-aligned slots from the region's very start.
        let want = model_plan(frames, frame_size, PAGE, &region).and_then(|(first, _, _)| {
            if first == 0 {
                Ok(())
            } else {
                Err(FramingError::RegionMisaligned)
            }
        });
        assert_eq!(pool.as_ref().err().copied(), want.err(), "{region:?}");
        if let Ok(pool) = pool {
            assert_eq!(pool.region(), &region);
            exhaust(&pool, &region, frames, frame_size, PAGE);
        }
    }

    // A stream's staging slots.
    let (p, w, n) = input.staging;
    let pixel = [PixelFormat::Nv12, PixelFormat::Yuy2, PixelFormat::Rgb24][usize::from(p) % 3];
    let size = FRAME_SIZES_AND_SMALL[usize::from(w) % FRAME_SIZES_AND_SMALL.len()];
    if let Ok(layout) = FrameLayout::new(pixel, size.0, size.1) {
        let n = u32::from(n % 70);
        check_buffer(
            staging_plan(&layout, n),
            model_buffer(n, layout.image_size()),
        );
    }

    // Any plan: alignments are powers of two, and only those.
    let raw = input.plan.raw_align;
    assert_eq!(
        Alignment::new(raw).map(Alignment::get),
        raw.is_power_of_two().then_some(raw)
    );
    assert_eq!(
        Alignment::from_mask(raw).map(Alignment::get),
        raw.checked_add(1).filter(|a| a.is_power_of_two())
    );
    let align = 1u32 << (input.plan.align % 32);
    let alignment = Alignment::new(align).unwrap();
    let frames = count(&input.plan.frames);
    let frame_size = match input.plan.frame_size {
        Ok(v) => u32::from(v),
        Err(v) => v,
    };
    let exact = u64::from(frame_size)
        .div_ceil(u64::from(align))
        .saturating_mul(u64::from(align))
        .saturating_mul(u64::from(frames.min(64)));
    let region = input.plan.region.region(exact);
    let got = plan(frames, frame_size, alignment, &region);
    let want = model_plan(frames, frame_size, u64::from(align), &region);
    match (got, want) {
        (Ok(p), Ok((first, slot, span))) => {
            assert_eq!(p.region(), &region);
            assert_eq!(
                (p.frames(), p.frame_size(), p.alignment(), p.slot_size()),
                (frames, frame_size, alignment, slot as u32)
            );
            assert_eq!((u64::from(p.first_offset()), p.span()), (first, span));
            assert_eq!(
                p.overhead(),
                span - u64::from(frame_size) * u64::from(frames)
            );
            let pool = FramePool::with_plan(p);
            exhaust(&pool, &region, frames, frame_size, u64::from(align));
        }
        (got, want) => {
            assert_eq!(
                got.err(),
                want.err(),
                "{frames} x {frame_size} / {align} in {region:?}"
            );
            let e = got.unwrap_err();
            assert_eq!(e.ntstatus(), model_status(e));
        }
    }
});

/// Offered sizes and a few small ones.
const FRAME_SIZES_AND_SMALL: [(u32, u32); 8] = [
    (320, 240),
    (640, 480),
    (1280, 720),
    (1920, 1080),
    (3840, 2160),
    (2, 2),
    (64, 2),
    (6, 4),
];
