//! Synthesis: `image::synthesize` and `image::required_len` for every pixel
//! format, small frames (and tall narrow ones, for glyph scales above 1),
//! any stride at or above the layout's, any overlay values, buffers short,
//! exact and long. Checked against a model of the frame's extent and of its
//! bytes:
//! * the result (length or error) is the model's, and an error writes nothing;
//! * nothing past the required length is written (a canary tail);
//! * every byte up to it is written: two buffers prefilled with different
//!   bytes come out equal (which also makes the output deterministic);
//! * row padding (past the pixels of a row, up to the stride) is zero;
//! * every pixel is its column's colour bar or an overlay colour, the rows
//!   the overlays never reach (the top margin, the middle rows) are pure
//!   bars, and the frame-number box is at the top of the picture (RGB24
//!   bottom-up in memory, the YUV formats top-down).
#![no_main]

use arbitrary::Arbitrary;
use avscap::portable::image::{required_len, synthesize, DeliveryPath, Overlay, SynthError};
use avscap::portable::video_format::{FrameLayout, PixelFormat};
use libfuzzer_sys::fuzz_target;

// ---------------------------------------------------------------- model ----

/// 75% colour bars, left to right (R, G, B).
const BARS: [[u8; 3]; 8] = [
    [191, 191, 191],
    [191, 191, 0],
    [0, 191, 191],
    [0, 191, 0],
    [191, 0, 191],
    [191, 0, 0],
    [0, 0, 191],
    [0, 0, 0],
];
const BLACK: [u8; 3] = [0, 0, 0];
const WHITE: [u8; 3] = [255, 255, 255];
const GREEN: [u8; 3] = [0, 255, 0];
const ORANGE: [u8; 3] = [255, 128, 0];

/// BT.601 limited range, the 8-bit integer approximation.
fn yuv([r, g, b]: [u8; 3]) -> [u8; 3] {
    let (r, g, b) = (i32::from(r), i32::from(g), i32::from(b));
    let c = |v: i32| v.clamp(0, 255) as u8;
    [
        c(((66 * r + 129 * g + 25 * b + 128) >> 8) + 16),
        c(((-38 * r - 74 * g + 112 * b + 128) >> 8) + 128),
        c(((112 * r - 94 * g - 18 * b + 128) >> 8) + 128),
    ]
}

fn bar(x: u32, width: u32) -> usize {
    (u64::from(x) * 8 / u64::from(width)).min(7) as usize
}

/// Bytes a pixel takes in the first plane.
fn bytes_per_pixel(p: PixelFormat) -> usize {
    match p {
        PixelFormat::Rgb24 => 3,
        PixelFormat::Yuy2 => 2,
        PixelFormat::Nv12 => 1,
    }
}

/// Bytes of a frame at `stride`.
fn model_len(p: PixelFormat, height: u32, stride: u32) -> u64 {
    let luma = u64::from(stride) * u64::from(height);
    match p {
        PixelFormat::Nv12 => luma + u64::from(stride) * u64::from(height / 2),
        _ => luma,
    }
}

/// What one pixel of the output holds: its colour (RGB) or luma, and the
/// chroma pair it shares (the YUV formats).
#[derive(Debug, PartialEq, Eq, Clone, Copy)]
enum Px {
    Rgb([u8; 3]),
    Yuv { y: u8, uv: [u8; 2] },
}

struct Frame<'a> {
    buf: &'a [u8],
    pixel: PixelFormat,
    width: u32,
    height: u32,
    stride: usize,
    marker: [u8; 3],
    /// Each column's bar, as [`Frame::model_bar_px`] has it.
    bars: Vec<Px>,
    /// The box fills' chroma, and the fills' and inks' luma.
    fill_uv: [[u8; 2]; 2],
    lumas: [u8; 3],
}

impl Frame<'_> {
    /// The pixel at image column `x`, image row `y` (top-down).
    fn at(&self, x: u32, y: u32) -> Px {
        let (x, s) = (x as usize, self.stride);
        match self.pixel {
            PixelFormat::Rgb24 => {
                let o = (self.height - 1 - y) as usize * s + 3 * x;
                Px::Rgb([self.buf[o + 2], self.buf[o + 1], self.buf[o]])
            }
            PixelFormat::Yuy2 => {
                let row = y as usize * s;
                let pair = row + (x & !1) * 2;
                Px::Yuv {
                    y: self.buf[row + 2 * x],
                    uv: [self.buf[pair + 1], self.buf[pair + 3]],
                }
            }
            PixelFormat::Nv12 => {
                let chroma = self.height as usize * s + (y / 2) as usize * s + (x & !1);
                Px::Yuv {
                    y: self.buf[y as usize * s + x],
                    uv: [self.buf[chroma], self.buf[chroma + 1]],
                }
            }
        }
    }

    /// The bar colour of column `x` as this format stores it (a YUV pair's
    /// chroma is the floor of the mean of its two columns').
    fn bar_px(&self, x: u32) -> Px {
        self.bars[x as usize]
    }

    fn model_bar_px(&self, x: u32) -> Px {
        let w = self.width;
        match self.pixel {
            PixelFormat::Rgb24 => Px::Rgb(BARS[bar(x, w)]),
            _ => {
                let x0 = x & !1;
                let (a, b) = (yuv(BARS[bar(x0, w)]), yuv(BARS[bar(x0 + 1, w)]));
                // Written out: the model's floor of the mean.
                #[allow(clippy::manual_midpoint)]
                let mean = |i: usize| ((u16::from(a[i]) + u16::from(b[i])) / 2) as u8;
                Px::Yuv {
                    y: yuv(BARS[bar(x, w)])[0],
                    uv: [mean(1), mean(2)],
                }
            }
        }
    }

    /// Whether `px` is a colour the picture may hold at column `x`: its
    /// bar, or a box fill (black, or the path marker's colour) with, on
    /// top, text ink (white or black; luma only in the YUV formats).
    fn allowed(&self, x: u32, px: Px) -> bool {
        if px == self.bar_px(x) {
            return true;
        }
        match px {
            Px::Rgb(c) => [BLACK, WHITE, self.marker].contains(&c),
            // Text is inside its box: off a bar, the chroma is a box
            // fill's and the luma a fill's or an ink's.
            Px::Yuv { y, uv } => self.fill_uv.contains(&uv) && self.lumas.contains(&y),
        }
    }
}

/// Whether every byte of `bytes` is `value` (one comparison of slices, not
/// a loop the fuzzer instruments byte by byte).
fn all(bytes: &[u8], value: u8) -> bool {
    match bytes.split_first() {
        None => true,
        // Every byte equals the one before it, and the first is `value`.
        Some((&first, rest)) => first == value && *rest == bytes[..rest.len()],
    }
}

// ---------------------------------------------------------------- input ----

#[derive(Arbitrary, Debug)]
enum Stride {
    /// The layout's own stride plus a few bytes.
    Extra(u8),
    /// Below the layout's stride by this much (refused).
    Short(u8),
    /// Any stride (a huge one with a small buffer: refused).
    Raw(u32),
}

#[derive(Arbitrary, Debug)]
enum Length {
    /// The required length plus a tail that must stay untouched.
    Tail(u8),
    /// The required length minus this much (refused).
    Short(u16),
}

#[derive(Arbitrary, Debug)]
struct Input {
    pixel: u8,
    /// 1..=64 columns (rounded up to the format's granularity).
    width: u8,
    /// 1..=64 rows, or with `tall` 230..=741 rows at 1..=8 columns.
    height: u16,
    tall: bool,
    stride: Stride,
    length: Length,
    fill: u8,
    stream_time: i64,
    frame_number: u64,
    dropped: u64,
    zero_copy: bool,
}

fuzz_target!(|input: Input| {
    let pixel =
        [PixelFormat::Nv12, PixelFormat::Yuy2, PixelFormat::Rgb24][usize::from(input.pixel) % 3];
    let (gx, gy) = match pixel {
        PixelFormat::Nv12 => (2, 2),
        PixelFormat::Yuy2 => (2, 1),
        PixelFormat::Rgb24 => (1, 1),
    };
    let (width, height) = if input.tall {
        (
            u32::from(input.width % 8) + 1,
            u32::from(input.height % 512) + 230,
        )
    } else {
        (
            u32::from(input.width % 64) + 1,
            u32::from(input.height % 64) + 1,
        )
    };
    let (width, height) = (width.next_multiple_of(gx), height.next_multiple_of(gy));
    let layout = FrameLayout::new(pixel, width, height).unwrap();
    let own_stride = layout.stride();
    assert_eq!(
        own_stride as usize,
        (width as usize * bytes_per_pixel(pixel)).next_multiple_of(4)
    );
    let stride = match input.stride {
        Stride::Extra(e) => own_stride + u32::from(e % 65),
        Stride::Short(d) => own_stride.saturating_sub(u32::from(d) + 1),
        Stride::Raw(s) => s,
    };
    let overlay = Overlay {
        stream_time_100ns: input.stream_time,
        frame_number: input.frame_number,
        dropped: input.dropped,
        path: if input.zero_copy {
            DeliveryPath::ZeroCopy
        } else {
            DeliveryPath::Copied
        },
    };
    let marker = if input.zero_copy { GREEN } else { ORANGE };

    if stride < own_stride {
        assert_eq!(
            required_len(&layout, stride),
            Err(SynthError::StrideTooSmall)
        );
        let mut buf = [input.fill; 64];
        assert_eq!(
            synthesize(&mut buf, &layout, stride, &overlay),
            Err(SynthError::StrideTooSmall)
        );
        assert!(all(&buf, input.fill));
        return;
    }
    let needed = model_len(pixel, height, stride);
    let needed = usize::try_from(needed).unwrap();
    assert_eq!(required_len(&layout, stride), Ok(needed));
    // Past 64 KiB only the refusal of a short buffer is tried.
    let len = match input.length {
        Length::Tail(t) if needed <= 1 << 16 => needed + usize::from(t),
        Length::Tail(_) => 4096.min(needed - 1),
        Length::Short(s) => needed.saturating_sub(usize::from(s) + 1).min(1 << 16),
    };
    let fill_a = input.fill;
    let fill_b = input.fill ^ 0xA5;
    let mut a = vec![fill_a; len];
    let result = synthesize(&mut a, &layout, stride, &overlay);
    if len < needed {
        assert_eq!(result, Err(SynthError::BufferTooSmall { needed, got: len }));
        assert!(all(&a, fill_a), "written on refusal");
        return;
    }
    assert_eq!(result, Ok(needed));
    let mut b = vec![fill_b; len];
    assert_eq!(synthesize(&mut b, &layout, stride, &overlay), Ok(needed));

    // Nothing past the frame; every byte of it written, the same way.
    assert!(all(&a[needed..], fill_a), "written past the frame");
    assert!(all(&b[needed..], fill_b), "written past the frame");
    if a[..needed] != b[..needed] {
        let i = (0..needed).find(|&i| a[i] != b[i]).unwrap();
        panic!("byte {i} of {needed} not written (stride {stride}, {width}x{height})");
    }

    // Row padding is zero, in every row of every plane.
    let s = stride as usize;
    let row_bytes = width as usize * bytes_per_pixel(pixel);
    let rows = match pixel {
        PixelFormat::Nv12 => height as usize + height as usize / 2,
        _ => height as usize,
    };
    for r in 0..rows {
        assert!(
            all(&a[r * s + row_bytes..(r + 1) * s], 0),
            "padding of row {r} not zero"
        );
    }

    // Every pixel is a bar or an overlay colour.
    let uv = |c: [u8; 3]| [yuv(c)[1], yuv(c)[2]];
    let mut frame = Frame {
        buf: &a,
        pixel,
        width,
        height,
        stride: s,
        marker,
        bars: Vec::new(),
        fill_uv: [uv(BLACK), uv(marker)],
        lumas: [yuv(BLACK)[0], yuv(WHITE)[0], yuv(marker)[0]],
    };
    frame.bars = (0..width).map(|x| frame.model_bar_px(x)).collect();
    // A row of pure bars, as the first plane and NV12's chroma plane hold it.
    let mut bar_row = Vec::with_capacity(row_bytes);
    let mut bar_chroma = Vec::new();
    for (x, px) in frame.bars.iter().enumerate() {
        match (pixel, *px) {
            (PixelFormat::Rgb24, Px::Rgb([r, g, b])) => bar_row.extend([b, g, r]),
            (PixelFormat::Yuy2, Px::Yuv { y, uv }) => bar_row.extend([y, uv[x % 2]]),
            (PixelFormat::Nv12, Px::Yuv { y, uv }) => {
                bar_row.push(y);
                bar_chroma.push(uv[x % 2]);
            }
            _ => unreachable!(),
        }
    }
    let is_bar_row = |y: u32| {
        let mem = if pixel == PixelFormat::Rgb24 {
            height - 1 - y
        } else {
            y
        } as usize;
        let chroma = height as usize * s + (y / 2) as usize * s;
        a[mem * s..mem * s + row_bytes] == bar_row[..]
            && (pixel != PixelFormat::Nv12 || a[chroma..chroma + row_bytes] == bar_chroma[..])
    };
    // Pixel by pixel only where a row is not pure bars.
    for y in (0..height).filter(|&y| !is_bar_row(y)) {
        for x in 0..width {
            let px = frame.at(x, y);
            assert!(frame.allowed(x, px), "({x}, {y}): {px:?}");
        }
    }
    // The rows no overlay reaches: above the boxes' margin, and the middle
    // rows between the top band (below even_down(h/2)) and the bottom band
    // (from the even row after h/2).
    let scale = (height / 240).max(1);
    let mid = height / 2;
    let bottom_band = (mid + 1).next_multiple_of(2);
    let bars_only = (0..(2 * scale).min(height)).chain((mid & !1)..bottom_band.min(height));
    for y in bars_only {
        assert!(is_bar_row(y), "row {y} is not pure bars");
    }
    // The frame-number box starts at (2s, 2s) in its fill colour, black,
    // when it lies in the top band (on a narrow frame the path marker, drawn
    // later, may cover it): the picture's top is at the top.
    let corner = 2 * scale;
    if corner < width && corner < (mid & !1) && bar(corner, width) != 7 {
        let fill = |c: [u8; 3]| match pixel {
            PixelFormat::Rgb24 => Px::Rgb(c),
            _ => {
                let [y, u, v] = yuv(c);
                Px::Yuv { y, uv: [u, v] }
            }
        };
        let got = frame.at(corner, corner);
        assert!(
            got == fill(BLACK) || got == fill(marker),
            "frame box not at the top left: {got:?}"
        );
    }
});
