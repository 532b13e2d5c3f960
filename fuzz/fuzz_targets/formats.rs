//! Formats: `validate_format`, `FrameLayout::new`, `intersect`,
//! `intersect_any`, `OutputBuffer::check` and the header fields of the
//! chosen format, each against a model written here from the rules
//! (`KS_DATAFORMAT_VIDEOINFOHEADER`, the DIB size rule, the pin's offer of
//! 3 pixel formats × 5 sizes × 3 rates), with every size, dimension,
//! interval, bit count and compression a client may send, lying or not.
#![no_main]

use arbitrary::Arbitrary;
use avscap::portable::guid::Guid;
use avscap::portable::video_format::{
    intersect, intersect_any, validate_format, ClientRange, ClientVideoRange, FormatError,
    FrameLayout, OutputBuffer, PixelFormat, ProposedFormat, VideoFormat, VideoInfo, DATA_RANGES,
};
use libfuzzer_sys::fuzz_target;

// ---------------------------------------------------------------- model ----

/// The GUIDs, written out from the KS headers (not taken from the crate).
const VIDEO: Guid = fourcc_guid(0x7364_6976);
const YUY2: Guid = fourcc_guid(0x3259_5559);
const NV12: Guid = fourcc_guid(0x3231_564E);
const RGB24: Guid = Guid {
    data1: 0xE436_EB7D,
    data2: 0x524F,
    data3: 0x11CE,
    data4: [0x9F, 0x53, 0x00, 0x20, 0xAF, 0x0B, 0xA7, 0x70],
};
const VIDEOINFO: Guid = Guid {
    data1: 0x0558_9F80,
    data2: 0xC356,
    data3: 0x11CE,
    data4: [0xBF, 0x01, 0x00, 0xAA, 0x00, 0x55, 0x59, 0x5A],
};
const NONPAGED: Guid = Guid {
    data1: 0x4A6D_5FC4,
    data2: 0x7895,
    data3: 0x11D1,
    data4: [0xB0, 0x69, 0x00, 0xA0, 0xC9, 0x06, 0x28, 0x02],
};
const NULL: Guid = Guid {
    data1: 0,
    data2: 0,
    data3: 0,
    data4: [0; 8],
};

const fn fourcc_guid(fourcc: u32) -> Guid {
    Guid {
        data1: fourcc,
        data2: 0,
        data3: 0x0010,
        data4: [0x80, 0x00, 0x00, 0xAA, 0x00, 0x38, 0x9B, 0x71],
    }
}

const fn fourcc(s: [u8; 4]) -> u32 {
    u32::from_le_bytes(s)
}

const INVALID_PARAMETER: i32 = 0xC000_000Du32 as i32;
const NO_MATCH: i32 = 0xC000_0272u32 as i32;

/// One pixel format as the model knows it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct ModelPixel {
    pixel: PixelFormat,
    sub: Guid,
    compression: u32,
    bit_count: u16,
    /// Bits a pixel of the first plane takes (sets the stride).
    plane_bits: u64,
    gran_x: u64,
    gran_y: u64,
}

/// In the pin's order of preference.
const PIXELS: [ModelPixel; 3] = [
    ModelPixel {
        pixel: PixelFormat::Nv12,
        sub: NV12,
        compression: fourcc(*b"NV12"),
        bit_count: 12,
        plane_bits: 8,
        gran_x: 2,
        gran_y: 2,
    },
    ModelPixel {
        pixel: PixelFormat::Yuy2,
        sub: YUY2,
        compression: fourcc(*b"YUY2"),
        bit_count: 16,
        plane_bits: 16,
        gran_x: 2,
        gran_y: 1,
    },
    ModelPixel {
        pixel: PixelFormat::Rgb24,
        sub: RGB24,
        compression: 0,
        bit_count: 24,
        plane_bits: 24,
        gran_x: 1,
        gran_y: 1,
    },
];

const SIZES: [(u32, u32); 5] = [
    (320, 240),
    (640, 480),
    (1280, 720),
    (1920, 1080),
    (3840, 2160),
];
/// 30, 15, 60 fps, the order each size lists them.
const INTERVALS: [i64; 3] = [333_333, 666_667, 166_667];

fn model_pixel(p: PixelFormat) -> ModelPixel {
    *PIXELS.iter().find(|m| m.pixel == p).unwrap()
}

/// The model's layout: (stride, chroma offset, image size), all in u64 and
/// then held to u32 where the crate must refuse with `Overflow`.
fn model_layout(p: PixelFormat, width: u32, height: u32) -> Result<(u32, u32, u32), FormatError> {
    let m = model_pixel(p);
    let (w, h) = (u64::from(width), u64::from(height));
    if w == 0 || h == 0 || w % m.gran_x != 0 || h % m.gran_y != 0 {
        return Err(FormatError::BadDimensions);
    }
    // The crate computes the padded bit width in 32 bits.
    let bits = w * m.plane_bits + 31;
    if bits > u64::from(u32::MAX) {
        return Err(FormatError::Overflow);
    }
    // A whole number of 32-bit words per row.
    let stride = bits / 32 * 4;
    let plane = stride * h;
    if plane > u64::from(u32::MAX) {
        return Err(FormatError::Overflow);
    }
    let (chroma, image) = if p == PixelFormat::Nv12 {
        (plane, plane + plane / 2)
    } else {
        (0, plane)
    };
    if image > u64::from(u32::MAX) {
        return Err(FormatError::Overflow);
    }
    Ok((stride as u32, chroma as u32, image as u32))
}

fn model_interval(requested: i64) -> Option<i64> {
    if requested == 0 {
        return Some(333_333);
    }
    INTERVALS
        .into_iter()
        .find(|&i| (i128::from(requested) - i128::from(i)).abs() <= 1)
}

fn model_validate(p: &ProposedFormat) -> Result<VideoFormat, FormatError> {
    if p.major != VIDEO {
        return Err(FormatError::WrongMajorType);
    }
    if p.specifier != VIDEOINFO {
        return Err(FormatError::WrongSpecifier);
    }
    let Some(m) = PIXELS.iter().find(|m| m.sub == p.sub) else {
        return Err(FormatError::UnknownSubtype);
    };
    if p.bi_size < 40 {
        return Err(FormatError::BitmapHeaderTooSmall);
    }
    // KSDATAFORMAT (64) + VIDEOINFOHEADER up to bmiHeader (48) + biSize.
    let needed = u64::from(p.bi_size) + 48 + 64;
    if needed > u64::from(u32::MAX) {
        return Err(FormatError::Overflow);
    }
    if u64::from(p.format_size) < needed {
        return Err(FormatError::HeaderTooSmall);
    }
    let i = &p.info;
    if i.compression != m.compression {
        return Err(FormatError::CompressionMismatch);
    }
    if i.bit_count != m.bit_count {
        return Err(FormatError::BitCountMismatch);
    }
    if i.planes != 1 {
        return Err(FormatError::PlanesNotOne);
    }
    if i.width <= 0 || i.height == 0 {
        return Err(FormatError::BadDimensions);
    }
    if i.height < 0 && m.pixel == PixelFormat::Rgb24 {
        return Err(FormatError::UnsupportedOrientation);
    }
    let width = u32::try_from(i.width).unwrap();
    let height = u32::try_from(i64::from(i.height).abs()).unwrap();
    let (_, _, image) = model_layout(m.pixel, width, height)?;
    if !SIZES.contains(&(width, height)) {
        return Err(FormatError::UnsupportedSize);
    }
    let size_image_ok =
        i.size_image >= image || (i.size_image == 0 && m.pixel == PixelFormat::Rgb24);
    let sample_ok = p.sample_size == 0 || p.sample_size >= image;
    if !size_image_ok || !sample_ok {
        return Err(FormatError::ImageSizeTooSmall);
    }
    let frame_interval =
        model_interval(i.avg_time_per_frame).ok_or(FormatError::UnsupportedInterval)?;
    Ok(VideoFormat {
        pixel: m.pixel,
        width,
        height,
        frame_interval,
    })
}

fn model_status(e: FormatError) -> i32 {
    match e {
        FormatError::HeaderTooSmall
        | FormatError::BitmapHeaderTooSmall
        | FormatError::PlanesNotOne
        | FormatError::BadDimensions
        | FormatError::ImageSizeTooSmall
        | FormatError::Overflow => INVALID_PARAMETER,
        _ => NO_MATCH,
    }
}

/// The offered formats in the pin's order, built by the model.
fn model_ranges() -> impl Iterator<Item = VideoFormat> {
    PIXELS.iter().flat_map(|m| {
        SIZES.iter().flat_map(move |&(width, height)| {
            INTERVALS.iter().map(move |&frame_interval| VideoFormat {
                pixel: m.pixel,
                width,
                height,
                frame_interval,
            })
        })
    })
}

fn model_accepts(client: &ClientRange, ours: &VideoFormat) -> bool {
    let m = model_pixel(ours.pixel);
    let guid_ok = |want: Option<Guid>, have: Guid| want.is_none() || want == Some(have);
    if !guid_ok(client.major, VIDEO)
        || !guid_ok(client.sub, m.sub)
        || !guid_ok(client.specifier, VIDEOINFO)
    {
        return false;
    }
    let Some(range) = client.video else {
        return true;
    };
    let (w, h) = (i64::from(ours.width), i64::from(ours.height));
    let width_ok = range.width == 0 || i64::from(range.width) == w;
    let height_ok = range.height == 0
        || i64::from(range.height) == h
        || (ours.pixel != PixelFormat::Rgb24 && i64::from(range.height) == -h);
    let bitmap_ok = (range.bit_count == 0 && range.compression == 0)
        || (range.bit_count == m.bit_count && range.compression == m.compression);
    let interval_ok = if range.min_frame_interval != 0 || range.max_frame_interval != 0 {
        range.min_frame_interval <= ours.frame_interval
            && ours.frame_interval <= range.max_frame_interval
    } else {
        range.avg_time_per_frame == 0
            || (i128::from(range.avg_time_per_frame) - i128::from(ours.frame_interval)).abs() <= 1
    };
    width_ok && height_ok && bitmap_ok && interval_ok
}

/// The header fields the pin writes for an offered format.
fn model_info(f: &VideoFormat) -> VideoInfo {
    let m = model_pixel(f.pixel);
    let (_, _, image) = model_layout(f.pixel, f.width, f.height).unwrap();
    // Frames per second, rounded to nearest.
    let fps = (10_000_000 + f.frame_interval / 2) / f.frame_interval;
    let bits = u128::from(image) * 8 * fps as u128;
    VideoInfo {
        bit_rate: u32::try_from(bits).unwrap_or(u32::MAX),
        avg_time_per_frame: f.frame_interval,
        width: f.width as i32,
        height: f.height as i32,
        planes: 1,
        bit_count: m.bit_count,
        compression: m.compression,
        size_image: image,
    }
}

// ---------------------------------------------------------------- input ----

#[derive(Arbitrary, Debug, Clone, Copy)]
enum GuidChoice {
    Null,
    Video,
    VideoInfo,
    Yuy2,
    Nv12,
    Rgb24,
    NonPaged,
    /// A known GUID with one bit flipped.
    Flipped(u8, u8),
    Raw(u32, u16, u16, [u8; 8]),
}

impl GuidChoice {
    fn guid(self) -> Guid {
        let known = [VIDEO, VIDEOINFO, YUY2, NV12, RGB24, NONPAGED];
        match self {
            GuidChoice::Null => NULL,
            GuidChoice::Video => VIDEO,
            GuidChoice::VideoInfo => VIDEOINFO,
            GuidChoice::Yuy2 => YUY2,
            GuidChoice::Nv12 => NV12,
            GuidChoice::Rgb24 => RGB24,
            GuidChoice::NonPaged => NONPAGED,
            GuidChoice::Flipped(which, bit) => {
                let mut g = known[usize::from(which) % known.len()];
                let bit = u32::from(bit) % 128;
                match bit {
                    0..=31 => g.data1 ^= 1 << bit,
                    32..=47 => g.data2 ^= 1 << (bit - 32),
                    48..=63 => g.data3 ^= 1 << (bit - 48),
                    _ => g.data4[((bit - 64) / 8) as usize] ^= 1 << ((bit - 64) % 8),
                }
                g
            }
            GuidChoice::Raw(a, b, c, d) => Guid {
                data1: a,
                data2: b,
                data3: c,
                data4: d,
            },
        }
    }
}

/// A 32-bit size: near the truth, or anything.
#[derive(Arbitrary, Debug, Clone, Copy)]
enum Size32 {
    Keep,
    Delta(i16),
    Zero,
    Max,
    Raw(u32),
}

impl Size32 {
    fn apply(self, truth: u32) -> u32 {
        match self {
            Size32::Keep => truth,
            Size32::Delta(d) => truth.wrapping_add_signed(i32::from(d)),
            Size32::Zero => 0,
            Size32::Max => u32::MAX,
            Size32::Raw(v) => v,
        }
    }
}

/// A signed dimension: one of the offered ones, its negation, an extreme, or anything.
#[derive(Arbitrary, Debug, Clone, Copy)]
enum Dim {
    Keep,
    Negate,
    Offered(u8, bool),
    Delta(i8),
    Zero,
    Min,
    Max,
    Raw(i32),
}

impl Dim {
    fn apply(self, truth: i32, pick: impl Fn(usize) -> u32) -> i32 {
        match self {
            Dim::Keep => truth,
            Dim::Negate => truth.wrapping_neg(),
            Dim::Offered(i, neg) => {
                let v = pick(usize::from(i) % SIZES.len()) as i32;
                if neg {
                    -v
                } else {
                    v
                }
            }
            Dim::Delta(d) => truth.wrapping_add(i32::from(d)),
            Dim::Zero => 0,
            Dim::Min => i32::MIN,
            Dim::Max => i32::MAX,
            Dim::Raw(v) => v,
        }
    }
}

#[derive(Arbitrary, Debug, Clone, Copy)]
enum Interval {
    Keep,
    Zero,
    Offered(u8, i8),
    Min,
    Max,
    Raw(i64),
}

impl Interval {
    fn apply(self, truth: i64) -> i64 {
        match self {
            Interval::Keep => truth,
            Interval::Zero => 0,
            Interval::Offered(i, d) => {
                INTERVALS[usize::from(i) % INTERVALS.len()] + i64::from(d % 4)
            }
            Interval::Min => i64::MIN,
            Interval::Max => i64::MAX,
            Interval::Raw(v) => v,
        }
    }
}

#[derive(Arbitrary, Debug, Clone, Copy)]
enum Bitmap {
    Keep,
    /// Bit count and compression of one pixel format.
    Of(u8),
    /// Any bit count 0..=255 with any format's compression.
    BitCount(u8, u8),
    Raw(u16, u32),
}

impl Bitmap {
    fn apply(self, bit_count: u16, compression: u32) -> (u16, u32) {
        match self {
            Bitmap::Keep => (bit_count, compression),
            Bitmap::Of(i) => {
                let m = PIXELS[usize::from(i) % 3];
                (m.bit_count, m.compression)
            }
            Bitmap::BitCount(bits, i) => {
                let comps = [0, fourcc(*b"YUY2"), fourcc(*b"NV12"), fourcc(*b"I420")];
                (u16::from(bits), comps[usize::from(i) % comps.len()])
            }
            Bitmap::Raw(b, c) => (b, c),
        }
    }
}

#[derive(Arbitrary, Debug)]
struct Proposal {
    /// Which offered format the client starts from.
    base: u8,
    format_size: Size32,
    sample_size: Size32,
    major: Option<GuidChoice>,
    sub: Option<GuidChoice>,
    specifier: Option<GuidChoice>,
    bi_size: Size32,
    width: Dim,
    height: Dim,
    planes: Option<u16>,
    bitmap: Bitmap,
    size_image: Size32,
    interval: Interval,
    bit_rate: u32,
}

#[derive(Arbitrary, Debug, Clone, Copy)]
enum RangeDim {
    Any,
    Offered(u8, bool),
    Raw(i32),
}

#[derive(Arbitrary, Debug)]
struct Range {
    major: Option<GuidChoice>,
    sub: Option<GuidChoice>,
    specifier: Option<GuidChoice>,
    video: Option<RangeVideo>,
}

#[derive(Arbitrary, Debug)]
struct RangeVideo {
    width: RangeDim,
    height: RangeDim,
    bitmap: Bitmap,
    avg: Interval,
    min: Interval,
    max: Interval,
}

#[derive(Arbitrary, Debug)]
struct Input {
    proposal: Proposal,
    range: Range,
    /// `FrameLayout::new` with any dimensions.
    layout: (u8, u32, u32),
    /// The intersect handler's `DataBufferSize`.
    buffer: Size32,
}

fn build_proposal(p: &Proposal) -> ProposedFormat {
    let base = DATA_RANGES[usize::from(p.base) % DATA_RANGES.len()];
    let good = ProposedFormat::for_format(&base).unwrap();
    let (bit_count, compression) = p.bitmap.apply(good.info.bit_count, good.info.compression);
    ProposedFormat {
        format_size: p.format_size.apply(good.format_size),
        sample_size: p.sample_size.apply(good.sample_size),
        major: p.major.map_or(good.major, GuidChoice::guid),
        sub: p.sub.map_or(good.sub, GuidChoice::guid),
        specifier: p.specifier.map_or(good.specifier, GuidChoice::guid),
        bi_size: p.bi_size.apply(good.bi_size),
        info: VideoInfo {
            bit_rate: p.bit_rate,
            avg_time_per_frame: p.interval.apply(good.info.avg_time_per_frame),
            width: p.width.apply(good.info.width, |i| SIZES[i].0),
            height: p.height.apply(good.info.height, |i| SIZES[i].1),
            planes: p.planes.unwrap_or(1),
            bit_count,
            compression,
            size_image: p.size_image.apply(good.info.size_image),
        },
    }
}

fn build_range(r: &Range) -> ClientRange {
    let dim = |d: RangeDim, pick: fn(usize) -> u32| match d {
        RangeDim::Any => 0,
        RangeDim::Offered(i, neg) => {
            let v = pick(usize::from(i) % SIZES.len()) as i32;
            if neg {
                -v
            } else {
                v
            }
        }
        RangeDim::Raw(v) => v,
    };
    let interval = |i: Interval| match i {
        Interval::Keep => 0,
        other => other.apply(0),
    };
    ClientRange {
        major: r.major.map(GuidChoice::guid),
        sub: r.sub.map(GuidChoice::guid),
        specifier: r.specifier.map(GuidChoice::guid),
        video: r.video.as_ref().map(|v| {
            let (bit_count, compression) = v.bitmap.apply(0, 0);
            ClientVideoRange {
                width: dim(v.width, |i| SIZES[i].0),
                height: dim(v.height, |i| SIZES[i].1),
                bit_count,
                compression,
                avg_time_per_frame: interval(v.avg),
                min_frame_interval: interval(v.min),
                max_frame_interval: interval(v.max),
            }
        }),
    }
}

// ---------------------------------------------------------------- check ----

fuzz_target!(|input: Input| {
    // The offered formats are the model's, in the model's order.
    assert!(DATA_RANGES.iter().copied().eq(model_ranges()));

    // SetDataFormat.
    let proposed = build_proposal(&input.proposal);
    let got = validate_format(&proposed);
    let want = model_validate(&proposed);
    assert_eq!(got, want, "{proposed:?}");
    match got {
        Ok(f) => {
            assert!(DATA_RANGES.contains(&f));
            assert_eq!(f.video_info(), Ok(model_info(&f)));
        }
        Err(e) => assert_eq!(e.ntstatus(), model_status(e), "{e:?}"),
    }

    // The layout of any pixel format at any size.
    let (p, w, h) = input.layout;
    let pixel = PIXELS[usize::from(p) % 3].pixel;
    let layout = FrameLayout::new(pixel, w, h);
    let want = model_layout(pixel, w, h);
    match (layout, want) {
        (Ok(l), Ok((stride, chroma, image))) => {
            assert_eq!(
                (
                    l.pixel(),
                    l.width(),
                    l.height(),
                    l.stride(),
                    l.chroma_offset(),
                    l.image_size()
                ),
                (pixel, w, h, stride, chroma, image)
            );
        }
        (got, want) => assert_eq!(got.err(), want.err(), "{pixel:?} {w}x{h}"),
    }

    // The intersect handler.
    let client = build_range(&input.range);
    let want = model_ranges().find(|f| model_accepts(&client, f));
    let got = intersect_any(&client);
    assert_eq!(got.ok(), want, "{client:?}");
    if let Err(e) = got {
        assert_eq!(e, FormatError::NoMatch);
        assert_eq!(e.ntstatus(), NO_MATCH);
    }
    for f in &DATA_RANGES {
        let accepted = model_accepts(&client, f);
        assert_eq!(client.accepts(f), accepted);
        let want = if accepted {
            Ok(*f)
        } else {
            Err(FormatError::NoMatch)
        };
        assert_eq!(intersect(&client, f), want);
    }
    if let Ok(f) = got {
        // What the handler writes back is a format SetDataFormat takes as it is.
        let written = ProposedFormat::for_format(&f).unwrap();
        assert_eq!(written.format_size, 64 + 48 + 40);
        assert_eq!(written.info, model_info(&f));
        assert_eq!(validate_format(&written), Ok(f));
    }

    // The output buffer the handler writes that format into.
    let needed = 64 + 48 + 40;
    let available = input.buffer.apply(needed);
    let (class, status) = match available {
        0 => (OutputBuffer::SizeQuery, 0x8000_0005u32 as i32),
        a if a < needed => (OutputBuffer::TooSmall, 0xC000_0023u32 as i32),
        _ => (OutputBuffer::Fits, 0),
    };
    assert_eq!(OutputBuffer::check(available, needed), class);
    assert_eq!(class.ntstatus(), status);
});
