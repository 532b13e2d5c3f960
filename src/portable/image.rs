//! Image synthesis for the simulated camera: colour bars and overlays,
//! written straight into a frame buffer.
//!
//! The picture is 75% colour bars with a few overlays (frame number,
//! dropped-frame count, a delivery-path marker and a stream-time clock), in
//! any of the pin's pixel formats.
//!
//! # Cost
//! Nothing here allocates, and nothing costs more than a few instructions
//! a pixel except copies and fills of runs of bytes. The bars are vertical,
//! so one line is built in the first row of each plane (one run of a
//! repeated pixel per bar) and copied to every other row: first by
//! doubling (row 0 to row 1, rows 0..2 to 2..4, ...) until the block at the
//! start of the plane holds 64 KiB, then that block to the rest of the
//! plane. The copies are large enough for the C library's string-copy path
//! and read a block that stays in cache, so a frame costs about what
//! filling its bytes with one value costs. Each overlay box is built a row
//! at a time, once per distinct row (margin, each font row), and that row
//! copied to the rows repeating it; the overlays touch only their own
//! pixels. The work is proportional to the bytes of the frame.
//!
//! # Layout of the picture
//! All overlay positions scale with the frame through an integer glyph
//! scale, [`glyph_scale`] (`max(1, height / 240)`), and use a hand-made 5x7
//! font drawn in 6x8 cells:
//!
//! * top left: `FRAME nnnnnn` and, below it, `DROP n`, white on black boxes;
//! * top right: the delivery-path marker, a solid box in the colour of
//!   [`DeliveryPath::colour`] carrying black text [`DeliveryPath::label`];
//! * bottom centre: the stream-time clock `mm:ss.hh`, white on black.
//!
//! Every box starts on an even column and row and has an even width and
//! height, so YUY2 pixel pairs and NV12 2x2 chroma blocks are never split
//! by a box edge. Text pixels inside a box change luma only (in the YUV
//! formats), so they never split a chroma pair either. The top overlays are
//! clipped to the rows above `height / 2` and the bottom one to the rows
//! below it, so the middle row always shows pure bars, even for tiny frames;
//! at the offered sizes the overlays stay in the top and bottom 15%.
//!
//! # Strides
//! Callers may pass a stride larger than [`FrameLayout::stride`] (a
//! client's surface pitch). Rows are then that far apart, NV12's chroma
//! plane starts at `stride * height`, and the padding at the end of every
//! row is written with zeros (so no stale bytes of an earlier frame leak
//! through it). Nothing past [`required_len`] is ever written.

use core::ops::Range;

use super::status::{NtStatus, STATUS_BUFFER_TOO_SMALL, STATUS_INVALID_PARAMETER};
use super::video_format::{FrameLayout, PixelFormat};

/// An 8-bit-per-channel RGB colour (full range, 0..=255).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Rgb {
    /// Red.
    pub r: u8,
    /// Green.
    pub g: u8,
    /// Blue.
    pub b: u8,
}

impl Rgb {
    /// The colour with these components.
    #[must_use]
    pub const fn new(r: u8, g: u8, b: u8) -> Self {
        Self { r, g, b }
    }
}

/// A BT.601 limited-range YCbCr colour (Y 16..=235, U and V 16..=240).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Yuv {
    /// Luma.
    pub y: u8,
    /// Blue-difference chroma (Cb).
    pub u: u8,
    /// Red-difference chroma (Cr).
    pub v: u8,
}

/// The 75% level of a colour-bar component (0xBF).
const LEVEL_75: u8 = 191;

/// The eight 75% colour bars (EIA-189-A order), left to right: white,
/// yellow, cyan, green, magenta, red, blue, black.
pub const BARS: [Rgb; 8] = [
    Rgb::new(LEVEL_75, LEVEL_75, LEVEL_75),
    Rgb::new(LEVEL_75, LEVEL_75, 0),
    Rgb::new(0, LEVEL_75, LEVEL_75),
    Rgb::new(0, LEVEL_75, 0),
    Rgb::new(LEVEL_75, 0, LEVEL_75),
    Rgb::new(LEVEL_75, 0, 0),
    Rgb::new(0, 0, LEVEL_75),
    Rgb::new(0, 0, 0),
];

/// [`BARS`] converted with [`rgb_to_yuv`].
pub const BARS_YUV: [Yuv; 8] = {
    let mut out = [Yuv { y: 0, u: 0, v: 0 }; 8];
    let mut i = 0;
    while i < BARS.len() {
        out[i] = rgb_to_yuv(BARS[i]);
        i += 1;
    }
    out
};

/// Colour of the boxes behind the text overlays (black).
pub const BOX_COLOUR: Rgb = Rgb::new(0, 0, 0);
/// Colour of the text in the black boxes (white).
pub const TEXT_COLOUR: Rgb = Rgb::new(255, 255, 255);
/// Colour of the text on the delivery-path marker (black).
pub const MARKER_TEXT_COLOUR: Rgb = Rgb::new(0, 0, 0);

/// Width of a glyph of the overlay font, in font pixels.
pub const GLYPH_WIDTH: u32 = 5;
/// Height of a glyph of the overlay font, in font pixels.
pub const GLYPH_HEIGHT: u32 = 7;
/// Horizontal advance from one character to the next, in font pixels.
pub const CELL_WIDTH: u32 = GLYPH_WIDTH + 1;

/// How the frame reached the buffer it is synthesised into; the marker in
/// the top-right corner shows it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DeliveryPath {
    /// Synthesised in place in a frame of our own allocator (the common
    /// buffer), handed to the client without a copy.
    ZeroCopy,
    /// Synthesised and then copied into a buffer the client supplied.
    Copied,
}

impl DeliveryPath {
    /// The marker's text: `ZERO-COPY` or `COPIED`.
    #[must_use]
    pub const fn label(self) -> &'static str {
        match self {
            Self::ZeroCopy => "ZERO-COPY",
            Self::Copied => "COPIED",
        }
    }

    /// The marker's box colour: bright green for zero-copy, orange for
    /// copied (neither is one of the 75% bar colours).
    #[must_use]
    pub const fn colour(self) -> Rgb {
        match self {
            Self::ZeroCopy => Rgb::new(0, 255, 0),
            Self::Copied => Rgb::new(255, 128, 0),
        }
    }
}

/// What the overlays of one frame show.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Overlay {
    /// Stream time of the frame, 100 ns units (shown as `mm:ss.hh`;
    /// negative times show as `00:00.00`).
    pub stream_time_100ns: i64,
    /// Frame number (shown with at least six digits).
    pub frame_number: u64,
    /// Frames dropped so far.
    pub dropped: u64,
    /// Delivery path, shown by the top-right marker.
    pub path: DeliveryPath,
}

/// Why a frame could not be synthesised. Every check runs before the first
/// byte is written, so on error the buffer is untouched.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SynthError {
    /// The buffer is shorter than the frame at the given stride.
    BufferTooSmall {
        /// Bytes the frame needs ([`required_len`]).
        needed: usize,
        /// Bytes the buffer has.
        got: usize,
    },
    /// The stride is below the layout's own stride.
    StrideTooSmall,
    /// The frame size at the given stride does not fit in `usize`.
    Overflow,
}

impl SynthError {
    /// The NTSTATUS the kernel shell returns for this error:
    /// `STATUS_BUFFER_TOO_SMALL` for a short buffer, otherwise
    /// `STATUS_INVALID_PARAMETER`.
    #[must_use]
    pub const fn ntstatus(self) -> NtStatus {
        match self {
            Self::BufferTooSmall { .. } => STATUS_BUFFER_TOO_SMALL,
            Self::StrideTooSmall | Self::Overflow => STATUS_INVALID_PARAMETER,
        }
    }
}

/// A short sentence for a person (a log line, the simulator's errors).
impl core::fmt::Display for SynthError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match *self {
            Self::BufferTooSmall { needed, got } => {
                write!(f, "the buffer has {got} bytes; the frame needs {needed}")
            }
            Self::StrideTooSmall => f.write_str("the stride is below the format's"),
            Self::Overflow => f.write_str("the frame size overflowed"),
        }
    }
}

#[cfg(test)]
mod synth_error_display {
    use super::SynthError;

    #[test]
    fn names_the_numbers() {
        let s = SynthError::BufferTooSmall {
            needed: 460_800,
            got: 12,
        }
        .to_string();
        assert_eq!(s, "the buffer has 12 bytes; the frame needs 460800");
        for e in [SynthError::StrideTooSmall, SynthError::Overflow] {
            assert!(e.to_string().starts_with("the "), "{e:?}");
        }
    }
}

/// Clamps an intermediate to the `u8` range.
#[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
const fn clamp_u8(v: i32) -> u8 {
    if v < 0 {
        0
    } else if v > 255 {
        255
    } else {
        v as u8
    }
}

/// Converts full-range RGB to BT.601 limited-range YCbCr.
///
/// It uses the usual 8-bit integer approximation:
/// `Y = ((66R + 129G + 25B + 128) >> 8) + 16`,
/// `U = ((-38R - 74G + 112B + 128) >> 8) + 128`,
/// `V = ((112R - 94G - 18B + 128) >> 8) + 128`.
#[must_use]
pub const fn rgb_to_yuv(c: Rgb) -> Yuv {
    let r = c.r as i32;
    let g = c.g as i32;
    let b = c.b as i32;
    Yuv {
        y: clamp_u8(((66 * r + 129 * g + 25 * b + 128) >> 8) + 16),
        u: clamp_u8(((-38 * r - 74 * g + 112 * b + 128) >> 8) + 128),
        v: clamp_u8(((112 * r - 94 * g - 18 * b + 128) >> 8) + 128),
    }
}

/// Which of the eight bars column `x` of a `width`-pixel line lies in.
///
/// It is `x * 8 / width`, clamped to 7 (so columns at or past `width` count as
/// the last bar, and a zero width gives 0). For a width that is a multiple of 8
/// (all offered sizes) bar `k` spans columns `[k*width/8, (k+1)*width/8)`.
#[must_use]
pub const fn bar_index(x: u32, width: u32) -> usize {
    if width == 0 {
        return 0;
    }
    let k = (x as u64 * 8) / width as u64;
    // k <= 7 in the cast, so it cannot truncate.
    #[allow(clippy::cast_possible_truncation)]
    if k > 7 {
        7
    } else {
        k as usize
    }
}

/// The integer scale of the overlay font (font pixel size in frame pixels)
/// for a frame `height` rows high: `max(1, height / 240)`.
#[must_use]
pub const fn glyph_scale(height: u32) -> u32 {
    let s = height / 240;
    if s == 0 {
        1
    } else {
        s
    }
}

/// The validated geometry of one frame at one stride.
#[derive(Clone, Copy, Debug)]
struct Geom {
    pixel: PixelFormat,
    width: u32,
    height: u32,
    /// Bytes from one row to the next, in every plane.
    stride: usize,
    /// Bytes of the first (or only) plane: `stride * height`.
    luma_len: usize,
    /// Bytes of the whole frame.
    len: usize,
}

impl Geom {
    /// Checks `stride` against `layout` (which [`FrameLayout::new`] made,
    /// so its own fields agree) and computes the frame's extent.
    fn new(layout: &FrameLayout, stride: u32) -> Result<Self, SynthError> {
        if stride < layout.stride() {
            return Err(SynthError::StrideTooSmall);
        }
        let stride_bytes = usize::try_from(stride).map_err(|_| SynthError::Overflow)?;
        let rows = usize::try_from(layout.height()).map_err(|_| SynthError::Overflow)?;
        let luma_len = stride_bytes.checked_mul(rows).ok_or(SynthError::Overflow)?;
        let len = match layout.pixel() {
            PixelFormat::Nv12 => stride_bytes
                .checked_mul(rows / 2)
                .and_then(|chroma| luma_len.checked_add(chroma))
                .ok_or(SynthError::Overflow)?,
            PixelFormat::Yuy2 | PixelFormat::Rgb24 => luma_len,
        };
        Ok(Self {
            pixel: layout.pixel(),
            width: layout.width(),
            height: layout.height(),
            stride: stride_bytes,
            luma_len,
            len,
        })
    }

    /// Bytes of pixel data at the start of a row of the first plane (the
    /// rest of the row, up to the stride, is padding). NV12's chroma rows
    /// hold the same number of bytes (`width / 2` U,V pairs).
    fn row_bytes(&self) -> usize {
        let per_pixel: usize = match self.pixel {
            PixelFormat::Yuy2 => 2,
            PixelFormat::Rgb24 => 3,
            PixelFormat::Nv12 => 1,
        };
        usize::try_from(self.width)
            .unwrap_or(usize::MAX)
            .saturating_mul(per_pixel)
    }
}

/// Bytes a frame of `layout` occupies when its rows are `stride` bytes
/// apart: `stride * height`, plus `stride * height / 2` of chroma for NV12.
///
/// # Errors
/// [`SynthError::StrideTooSmall`] for a stride below
/// [`FrameLayout::stride`], [`SynthError::Overflow`] when the size does not
/// fit.
pub fn required_len(layout: &FrameLayout, stride: u32) -> Result<usize, SynthError> {
    Geom::new(layout, stride).map(|g| g.len)
}

/// Synthesises one frame: colour bars plus the overlays of `overlay`.
///
/// The frame is in `layout`'s pixel format with rows `stride` bytes apart
/// (RGB24 bottom-up, the YUV formats top-down). Row padding is zeroed; bytes of
/// `frame` past [`required_len`] are left alone.
///
/// Returns the number of bytes written, which is [`required_len`].
///
/// # Errors
/// As [`required_len`], and [`SynthError::BufferTooSmall`] when `frame` is
/// shorter than that. On error nothing has been written.
pub fn synthesize(
    frame: &mut [u8],
    layout: &FrameLayout,
    stride: u32,
    overlay: &Overlay,
) -> Result<usize, SynthError> {
    let geom = Geom::new(layout, stride)?;
    let got = frame.len();
    let too_small = SynthError::BufferTooSmall {
        needed: geom.len,
        got,
    };
    let bytes = frame.get_mut(..geom.len).ok_or(too_small)?;
    let (luma, chroma) = bytes.split_at_mut_checked(geom.luma_len).ok_or(too_small)?;
    let mut canvas = Canvas { geom, luma, chroma };
    canvas.fill_bars();
    canvas.draw_overlays(overlay);
    Ok(geom.len)
}

/// A half-open rectangle of image pixels (`x0..x1` × `y0..y1`, top-down
/// image coordinates whatever the memory order).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Rect {
    x0: u32,
    y0: u32,
    x1: u32,
    y1: u32,
}

impl Rect {
    /// The rectangle `w` × `h` at (`x`, `y`), saturating at `u32::MAX`.
    const fn new(x: u32, y: u32, w: u32, h: u32) -> Self {
        Self {
            x0: x,
            y0: y,
            x1: x.saturating_add(w),
            y1: y.saturating_add(h),
        }
    }

    /// The part of `self` inside `other` (empty rectangles have `x1 <= x0`
    /// or `y1 <= y0`).
    fn intersect(self, other: Self) -> Self {
        Self {
            x0: self.x0.max(other.x0),
            y0: self.y0.max(other.y0),
            x1: self.x1.min(other.x1),
            y1: self.y1.min(other.y1),
        }
    }

    const fn is_empty(self) -> bool {
        self.x1 <= self.x0 || self.y1 <= self.y0
    }
}

/// `n` rounded up to even (saturating).
const fn even_up(n: u32) -> u32 {
    n.saturating_add(n & 1)
}

/// Rounds `n` down to even.
const fn even_down(n: u32) -> u32 {
    n & !1
}

/// `u32` to `usize`, saturating (only on targets narrower than 32 bits).
fn to_usize(n: u32) -> usize {
    usize::try_from(n).unwrap_or(usize::MAX)
}

/// Floor of the mean of two bytes.
const fn mean(a: u8, b: u8) -> u8 {
    (a & b) + ((a ^ b) >> 1)
}

/// Text of one overlay line, at most [`TextBuf::CAPACITY`] bytes.
struct TextBuf {
    bytes: [u8; Self::CAPACITY],
    len: usize,
}

impl TextBuf {
    /// Enough for `FRAME ` plus the 20 digits of `u64::MAX`.
    const CAPACITY: usize = 32;

    const fn new() -> Self {
        Self {
            bytes: [0; Self::CAPACITY],
            len: 0,
        }
    }

    /// Appends one byte; a full buffer drops it.
    fn push(&mut self, b: u8) {
        if let Some(slot) = self.bytes.get_mut(self.len) {
            *slot = b;
            self.len += 1;
        }
    }

    fn push_str(&mut self, s: &str) {
        for b in s.bytes() {
            self.push(b);
        }
    }

    /// Appends `n` in decimal, zero-padded to at least `min_digits`.
    fn push_num(&mut self, n: u64, min_digits: usize) {
        let mut digits = [b'0'; 20];
        let mut start = digits.len();
        let mut v = n;
        loop {
            start -= 1;
            if let Some(slot) = digits.get_mut(start) {
                *slot = b'0' + u8::try_from(v % 10).unwrap_or(0);
            }
            v /= 10;
            if v == 0 || start == 0 {
                break;
            }
        }
        let count = digits.len() - start;
        for _ in count..min_digits {
            self.push(b'0');
        }
        for &d in digits.get(start..).unwrap_or(&[]) {
            self.push(d);
        }
    }

    fn as_bytes(&self) -> &[u8] {
        self.bytes.get(..self.len).unwrap_or(&[])
    }
}

/// The clock text `mm:ss.hh` (minutes widen past 99) of a stream time in
/// 100 ns units; negative times show as zero.
fn clock_text(stream_time_100ns: i64) -> TextBuf {
    let hundredths = u64::try_from(stream_time_100ns).unwrap_or(0) / 100_000;
    let seconds = hundredths / 100;
    let mut text = TextBuf::new();
    text.push_num(seconds / 60, 2);
    text.push(b':');
    text.push_num(seconds % 60, 2);
    text.push(b'.');
    text.push_num(hundredths % 100, 2);
    text
}

/// One overlay: a filled box, and text at an offset inside it.
struct TextBox {
    /// The box (aligned to even coordinates and sizes, not yet clipped).
    rect: Rect,
    text: TextBuf,
    fill: Rgb,
    ink: Rgb,
}

impl TextBox {
    /// A box at (`x`, `y`) (rounded down to even) just large enough for
    /// `text` at `scale` with a margin of `2 * scale` all round.
    fn new(x: u32, y: u32, scale: u32, text: TextBuf, fill: Rgb, ink: Rgb) -> Self {
        let (width, height) = box_size(text.len, scale);
        Self {
            rect: Rect::new(even_down(x), even_down(y), width, height),
            text,
            fill,
            ink,
        }
    }
}

/// Width and height (both even) of the box around `chars` characters of
/// text at scale `s`.
fn box_size(chars: usize, s: u32) -> (u32, u32) {
    let chars = u32::try_from(chars).unwrap_or(u32::MAX);
    let text_w = chars
        .saturating_mul(CELL_WIDTH)
        .saturating_sub(1)
        .saturating_mul(s);
    let pad = s.saturating_mul(4);
    (
        even_up(text_w.saturating_add(pad)),
        even_up(GLYPH_HEIGHT.saturating_mul(s).saturating_add(pad)),
    )
}

/// The planes of a frame being written.
struct Canvas<'a> {
    geom: Geom,
    /// The first plane (all of a packed frame).
    luma: &'a mut [u8],
    /// NV12's interleaved U,V plane (empty for packed formats).
    chroma: &'a mut [u8],
}

impl Canvas<'_> {
    /// Offset in the first plane of image row `y` (memory row
    /// `height - 1 - y` for bottom-up RGB24), when a whole stride of it
    /// lies in the plane.
    fn row_start(&self, y: u32) -> Option<usize> {
        let mem_row = match self.geom.pixel {
            PixelFormat::Rgb24 => self.geom.height.checked_sub(1)?.checked_sub(y)?,
            PixelFormat::Yuy2 | PixelFormat::Nv12 => y,
        };
        let start = to_usize(mem_row).checked_mul(self.geom.stride)?;
        let end = start.checked_add(self.geom.stride)?;
        (end <= self.luma.len()).then_some(start)
    }

    /// Image row `y` of the first plane, a whole stride long.
    fn row(&mut self, y: u32) -> Option<&mut [u8]> {
        let start = self.row_start(y)?;
        self.luma
            .get_mut(start..start.checked_add(self.geom.stride)?)
    }

    /// Offset of row `cy` of NV12's chroma plane (covering image rows
    /// `2cy`, `2cy+1`), when a whole stride of it lies in the plane.
    fn chroma_row_start(&self, cy: u32) -> Option<usize> {
        let start = to_usize(cy).checked_mul(self.geom.stride)?;
        let end = start.checked_add(self.geom.stride)?;
        (end <= self.chroma.len()).then_some(start)
    }

    /// Writes the bars (and zero padding) into the first row of each
    /// plane, then copies that row to every other row of the plane
    /// ([`replicate_first_row`]).
    fn fill_bars(&mut self) {
        let geom = self.geom;
        let stride = geom.stride;
        if stride == 0 {
            return;
        }
        let row_bytes = geom.row_bytes();
        if let Some(first) = self.luma.get_mut(..stride) {
            if let Some((pixels, padding)) = first.split_at_mut_checked(row_bytes) {
                write_bar_line(pixels, geom.pixel, geom.width);
                padding.fill(0);
            }
            replicate_first_row(self.luma, stride);
        }
        if let Some(first) = self.chroma.get_mut(..stride) {
            if let Some((pixels, padding)) = first.split_at_mut_checked(row_bytes) {
                write_chroma_line(pixels, geom.width);
                padding.fill(0);
            }
            replicate_first_row(self.chroma, stride);
        }
    }

    /// The bytes of a first-plane row that filling columns `x0..x1` of a
    /// box writes: whole YUY2 pixel pairs, three bytes a pixel for RGB24.
    const fn box_span(&self, x0: usize, x1: usize) -> Range<usize> {
        match self.geom.pixel {
            PixelFormat::Rgb24 => x0.saturating_mul(3)..x1.saturating_mul(3),
            PixelFormat::Yuy2 => {
                (x0 & !1).saturating_mul(2)..(x1.saturating_add(1) & !1).saturating_mul(2)
            }
            PixelFormat::Nv12 => x0..x1,
        }
    }

    /// Draws one overlay box clipped to `band`: the box filled with its
    /// colour (chroma included), and its text on top (luma only in the YUV
    /// formats). Each row is built once per distinct content (the margin
    /// rows, then each of the seven font rows) and copied to the next rows
    /// that share it.
    fn draw_box(&mut self, b: &TextBox, band: Rect, s: u32) {
        let clip = b.rect.intersect(band);
        if clip.is_empty() {
            return;
        }
        let pad = s.saturating_mul(2);
        let text_y = b.rect.y0.saturating_add(pad);
        let (x0, x1) = (to_usize(clip.x0), to_usize(clip.x1));
        let span = self.box_span(x0, x1);
        let stride = self.geom.stride;
        // The image row last built or copied, and its font row.
        let mut last: Option<(usize, Option<u32>)> = None;
        for y in clip.y0..clip.y1 {
            let font_row = y
                .checked_sub(text_y)
                .map(|dy| dy / s)
                .filter(|&r| r < GLYPH_HEIGHT);
            let Some(start) = self.row_start(y) else {
                continue;
            };
            match last {
                Some((from, r)) if r == font_row && span.end <= stride => {
                    copy_apart(
                        self.luma,
                        from + span.start..from + span.end,
                        start + span.start,
                    );
                }
                _ => self.build_box_row(y, b, clip, span.clone(), font_row, s),
            }
            last = Some((start, font_row));
        }
        if self.geom.pixel == PixelFormat::Nv12 {
            let yuv = rgb_to_yuv(b.fill);
            let span = (x0 & !1)..(x1.saturating_add(1) & !1);
            let mut first: Option<usize> = None;
            for cy in clip.y0 / 2..clip.y1.div_ceil(2) {
                let Some(start) = self.chroma_row_start(cy) else {
                    continue;
                };
                match first {
                    Some(from) if span.end <= stride => {
                        copy_apart(
                            self.chroma,
                            from + span.start..from + span.end,
                            start + span.start,
                        );
                    }
                    _ => {
                        if let Some(uv) = self
                            .chroma
                            .get_mut(start..start + stride)
                            .and_then(|row| row.get_mut(span.clone()))
                        {
                            fill_pattern(uv, &[yuv.u, yuv.v]);
                        }
                        first = Some(start);
                    }
                }
            }
        }
    }

    /// Writes image row `y` of box `text_box` (clipped to `clip`, whose
    /// bytes in the row are `span`): the fill colour, then the lit pixels
    /// of font row `font_row` of its text.
    fn build_box_row(
        &mut self,
        y: u32,
        text_box: &TextBox,
        clip: Rect,
        span: Range<usize>,
        font_row: Option<u32>,
        scale: u32,
    ) {
        let pixel = self.geom.pixel;
        let Some(row) = self.row(y) else { return };
        if let Some(bytes) = row.get_mut(span) {
            let fill = text_box.fill;
            let yuv = rgb_to_yuv(fill);
            match pixel {
                PixelFormat::Rgb24 => fill_pattern(bytes, &[fill.b, fill.g, fill.r]),
                PixelFormat::Yuy2 => fill_pattern(bytes, &[yuv.y, yuv.u, yuv.y, yuv.v]),
                PixelFormat::Nv12 => bytes.fill(yuv.y),
            }
        }
        let Some(font_row) = font_row else { return };
        let text_x = text_box.rect.x0.saturating_add(scale.saturating_mul(2));
        let advance = CELL_WIDTH.saturating_mul(scale);
        for (&ch, i) in text_box.text.as_bytes().iter().zip(0u32..) {
            let cell_x = text_x.saturating_add(i.saturating_mul(advance));
            if cell_x >= clip.x1 {
                break;
            }
            let bits = glyph(ch).get(to_usize(font_row)).copied().unwrap_or(0);
            for col in (0..GLYPH_WIDTH).filter(|col| bits & (0x10 >> col) != 0) {
                let left = cell_x.saturating_add(col.saturating_mul(scale));
                let right = left.saturating_add(scale);
                let xs = to_usize(left.max(clip.x0))..to_usize(right.min(clip.x1));
                ink_pixels(row, pixel, xs, text_box.ink);
            }
        }
    }

    /// Draws every overlay of `overlay`.
    fn draw_overlays(&mut self, overlay: &Overlay) {
        let (width, height) = (self.geom.width, self.geom.height);
        let (top, bottom) = bands(width, height);
        for (b, band) in plan(width, height, overlay)
            .iter()
            .zip([top, top, top, bottom])
        {
            self.draw_box(b, band, glyph_scale(height));
        }
    }
}

/// Sets pixels `xs` of a first-plane row to text colour `ink`: all of
/// B,G,R for RGB24, luma only for the YUV formats.
fn ink_pixels(row: &mut [u8], pixel: PixelFormat, xs: Range<usize>, ink: Rgb) {
    if xs.is_empty() {
        return;
    }
    let luma = rgb_to_yuv(ink).y;
    match pixel {
        PixelFormat::Rgb24 => {
            if let Some(bytes) = row.get_mut(xs.start.saturating_mul(3)..xs.end.saturating_mul(3)) {
                fill_pattern(bytes, &[ink.b, ink.g, ink.r]);
            }
        }
        PixelFormat::Yuy2 => {
            let bytes = row.get_mut(xs.start.saturating_mul(2)..xs.end.saturating_mul(2));
            for px in bytes.into_iter().flat_map(|b| b.chunks_exact_mut(2)) {
                if let Some(y_byte) = px.first_mut() {
                    *y_byte = luma;
                }
            }
        }
        PixelFormat::Nv12 => {
            if let Some(bytes) = row.get_mut(xs) {
                bytes.fill(luma);
            }
        }
    }
}

/// The rows the top and the bottom overlays may use: above `height / 2`
/// and below `height / 2 + 1`, each edge on an even row so no NV12 chroma
/// block of the middle rows is touched.
const fn bands(width: u32, height: u32) -> (Rect, Rect) {
    let mid = height / 2;
    let top = Rect::new(0, 0, width, even_down(mid));
    let bottom_start = even_up(mid.saturating_add(1));
    let bottom = Rect {
        x0: 0,
        y0: bottom_start,
        x1: width,
        y1: height,
    };
    (top, bottom)
}

/// The four overlay boxes of a `width` × `height` frame, in drawing order:
/// frame number, dropped count, delivery marker (top) and clock (bottom).
fn plan(width: u32, height: u32, overlay: &Overlay) -> [TextBox; 4] {
    let s = glyph_scale(height);
    let margin = s.saturating_mul(2);

    let mut frame_text = TextBuf::new();
    frame_text.push_str("FRAME ");
    frame_text.push_num(overlay.frame_number, 6);
    let frame_box = TextBox::new(margin, margin, s, frame_text, BOX_COLOUR, TEXT_COLOUR);

    let mut drop_text = TextBuf::new();
    drop_text.push_str("DROP ");
    drop_text.push_num(overlay.dropped, 1);
    let drop_y = frame_box.rect.y1.saturating_add(margin);
    let drop_box = TextBox::new(margin, drop_y, s, drop_text, BOX_COLOUR, TEXT_COLOUR);

    let mut marker_text = TextBuf::new();
    marker_text.push_str(overlay.path.label());
    let (marker_w, _) = box_size(marker_text.len, s);
    let marker_x = width.saturating_sub(margin.saturating_add(marker_w));
    let marker_box = TextBox::new(
        marker_x,
        margin,
        s,
        marker_text,
        overlay.path.colour(),
        MARKER_TEXT_COLOUR,
    );

    let clock = clock_text(overlay.stream_time_100ns);
    let (clock_w, clock_h) = box_size(clock.len, s);
    let clock_x = width.saturating_sub(clock_w) / 2;
    let clock_y = height.saturating_sub(margin.saturating_add(clock_h));
    let clock_box = TextBox::new(clock_x, clock_y, s, clock, BOX_COLOUR, TEXT_COLOUR);

    [frame_box, drop_box, marker_box, clock_box]
}

/// Rows of a plane are copied from a block of at least this many bytes at
/// its start (whole rows, built by doubling the first row), so each copy is
/// large enough for the C library's string-instruction path and its source
/// stays in the L1/L2 cache.
const REPLICATE_BLOCK: usize = 64 * 1024;

/// Copies the first `stride` bytes of `plane` to every other whole
/// `stride`-byte row of it: rows `0..1` to `1..2`, `0..2` to `2..4`, ...
/// until the block at the start holds [`REPLICATE_BLOCK`] bytes, then that
/// block to the rest of the plane, a block at a time.
fn replicate_first_row(plane: &mut [u8], stride: usize) {
    if stride == 0 {
        return;
    }
    let total = plane.len() - plane.len() % stride;
    let Some(plane) = plane.get_mut(..total) else {
        return;
    };
    let mut filled = stride.min(total);
    while filled < total && filled < REPLICATE_BLOCK {
        let n = filled.min(total - filled);
        copy_apart(plane, 0..n, filled);
        filled += n;
    }
    let (block, rest) = plane.split_at_mut(filled);
    for chunk in rest.chunks_mut(filled) {
        if let Some(src) = block.get(..chunk.len()) {
            chunk.copy_from_slice(src);
        }
    }
}

/// Copies `buf[source]` to `buf[dest..]` when the two do not overlap, as
/// every row and pattern copy here does (a later row from an earlier one, or
/// in RGB24's bottom-up memory an earlier one from a later one): a plain
/// copy (`memcpy`), never a move, so the driver imports nothing beyond
/// `memcpy` and `memset` for it. Overlapping ranges, or ranges that leave
/// `buf`, copy nothing.
fn copy_apart(buf: &mut [u8], source: Range<usize>, dest: usize) {
    let len = source.len();
    if source.end <= dest {
        if let Some((head, tail)) = buf.split_at_mut_checked(dest) {
            if let (Some(from), Some(to)) = (head.get(source), tail.get_mut(..len)) {
                to.copy_from_slice(from);
            }
        }
    } else if dest.saturating_add(len) <= source.start {
        if let Some((head, tail)) = buf.split_at_mut_checked(source.start) {
            if let (Some(from), Some(to)) = (tail.get(..len), head.get_mut(dest..dest + len)) {
                to.copy_from_slice(from);
            }
        }
    }
}

/// Fills `dst` with repeats of `pattern` (the last one cut short if
/// `dst` is not a whole number of them): one copy, then doubling copies.
fn fill_pattern(dst: &mut [u8], pattern: &[u8]) {
    let n = pattern.len().min(dst.len());
    if n == 0 {
        return;
    }
    if let (Some(head), Some(src)) = (dst.get_mut(..n), pattern.get(..n)) {
        head.copy_from_slice(src);
    }
    let mut filled = n;
    while filled < dst.len() {
        let m = filled.min(dst.len() - filled);
        copy_apart(dst, 0..m, filled);
        filled += m;
    }
}

/// The first column of bar `k` in a `width`-pixel line, for `k` in
/// `0..=8` (`8` gives `width`): `ceil(k * width / 8)`, the least `x` with
/// `x * 8 / width >= k` (so bar `k` spans `bar_start(k)..bar_start(k + 1)`,
/// as [`bar_index`] has it).
fn bar_start(k: usize, width: u32) -> usize {
    let k = u64::try_from(k).unwrap_or(u64::MAX).min(8);
    usize::try_from((k * u64::from(width)).div_ceil(8)).unwrap_or(usize::MAX)
}

/// Writes one line of bars as the first plane's pixels: B,G,R for RGB24,
/// Y0 U Y1 V for YUY2 (chroma of a pair is the mean of its two pixels), Y
/// for NV12. Each bar is one run of a repeated pixel (or pair).
fn write_bar_line(pixels: &mut [u8], pixel: PixelFormat, width: u32) {
    match pixel {
        PixelFormat::Rgb24 => {
            for (k, c) in BARS.iter().enumerate() {
                let run = bar_start(k, width).saturating_mul(3)
                    ..bar_start(k + 1, width).saturating_mul(3);
                if let Some(run) = pixels.get_mut(run) {
                    fill_pattern(run, &[c.b, c.g, c.r]);
                }
            }
        }
        PixelFormat::Yuy2 => write_pair_line(pixels, width, |a, b| {
            [a.y, mean(a.u, b.u), b.y, mean(a.v, b.v)]
        }),
        PixelFormat::Nv12 => {
            for (k, c) in BARS_YUV.iter().enumerate() {
                if let Some(run) = pixels.get_mut(bar_start(k, width)..bar_start(k + 1, width)) {
                    run.fill(c.y);
                }
            }
        }
    }
}

/// Writes one line of NV12's U,V plane for the bars (each pair the mean of
/// its two columns; the bars are vertical, so both rows of a block agree).
fn write_chroma_line(pixels: &mut [u8], width: u32) {
    write_pair_line(pixels, width, |a, b| [mean(a.u, b.u), mean(a.v, b.v)]);
}

/// Writes a line of `N`-byte units, unit `p` covering columns `2p` and
/// `2p + 1` and holding `unit(bar colour of 2p, bar colour of 2p + 1)`: a
/// run of repeats for the pairs inside one bar, a single unit for a pair
/// astride two bars.
fn write_pair_line<const N: usize>(
    pixels: &mut [u8],
    width: u32,
    unit: impl Fn(Yuv, Yuv) -> [u8; N],
) {
    let pairs = pixels.len() / N;
    let mut p = 0;
    while p < pairs {
        let x = u32::try_from(p).unwrap_or(u32::MAX).saturating_mul(2);
        let a = bar_index(x, width);
        let b = bar_index(x.saturating_add(1), width);
        // Pair q lies inside bar a while 2q + 1 < bar_start(a + 1).
        let end = if a == b {
            (bar_start(a + 1, width) / 2).clamp(p + 1, pairs)
        } else {
            p + 1
        };
        if let Some(run) = pixels.get_mut(p.saturating_mul(N)..end.saturating_mul(N)) {
            fill_pattern(run, &unit(BARS_YUV[a], BARS_YUV[b]));
        }
        p = end;
    }
}

/// The 5x7 bitmap of `ch`: seven rows, top first, bit 4 the leftmost
/// column. Lower-case letters use the upper-case glyphs; characters the
/// font lacks are blank.
#[must_use]
pub fn glyph(ch: u8) -> [u8; 7] {
    let ch = ch.to_ascii_uppercase();
    let found = match ch {
        b'0'..=b'9' => DIGITS.get(usize::from(ch - b'0')),
        b'A'..=b'Z' => LETTERS.get(usize::from(ch - b'A')),
        b':' => Some(&COLON),
        b'.' => Some(&PERIOD),
        b'-' => Some(&HYPHEN),
        _ => None,
    };
    found.copied().unwrap_or([0; 7])
}

/// `:`.
const COLON: [u8; 7] = [0x00, 0x0C, 0x0C, 0x00, 0x0C, 0x0C, 0x00];
/// `.`.
const PERIOD: [u8; 7] = [0x00, 0x00, 0x00, 0x00, 0x00, 0x0C, 0x0C];
/// `-`.
const HYPHEN: [u8; 7] = [0x00, 0x00, 0x00, 0x1F, 0x00, 0x00, 0x00];

/// `0` to `9`.
const DIGITS: [[u8; 7]; 10] = [
    [0x0E, 0x11, 0x13, 0x15, 0x19, 0x11, 0x0E],
    [0x04, 0x0C, 0x04, 0x04, 0x04, 0x04, 0x0E],
    [0x0E, 0x11, 0x01, 0x02, 0x04, 0x08, 0x1F],
    [0x1F, 0x02, 0x04, 0x02, 0x01, 0x11, 0x0E],
    [0x02, 0x06, 0x0A, 0x12, 0x1F, 0x02, 0x02],
    [0x1F, 0x10, 0x1E, 0x01, 0x01, 0x11, 0x0E],
    [0x06, 0x08, 0x10, 0x1E, 0x11, 0x11, 0x0E],
    [0x1F, 0x01, 0x02, 0x04, 0x08, 0x08, 0x08],
    [0x0E, 0x11, 0x11, 0x0E, 0x11, 0x11, 0x0E],
    [0x0E, 0x11, 0x11, 0x0F, 0x01, 0x02, 0x0C],
];

/// `A` to `Z`.
const LETTERS: [[u8; 7]; 26] = [
    [0x0E, 0x11, 0x11, 0x1F, 0x11, 0x11, 0x11], // A
    [0x1E, 0x11, 0x11, 0x1E, 0x11, 0x11, 0x1E], // B
    [0x0E, 0x11, 0x10, 0x10, 0x10, 0x11, 0x0E], // C
    [0x1C, 0x12, 0x11, 0x11, 0x11, 0x12, 0x1C], // D
    [0x1F, 0x10, 0x10, 0x1E, 0x10, 0x10, 0x1F], // E
    [0x1F, 0x10, 0x10, 0x1E, 0x10, 0x10, 0x10], // F
    [0x0E, 0x11, 0x10, 0x17, 0x11, 0x11, 0x0F], // G
    [0x11, 0x11, 0x11, 0x1F, 0x11, 0x11, 0x11], // H
    [0x0E, 0x04, 0x04, 0x04, 0x04, 0x04, 0x0E], // I
    [0x07, 0x02, 0x02, 0x02, 0x02, 0x12, 0x0C], // J
    [0x11, 0x12, 0x14, 0x18, 0x14, 0x12, 0x11], // K
    [0x10, 0x10, 0x10, 0x10, 0x10, 0x10, 0x1F], // L
    [0x11, 0x1B, 0x15, 0x15, 0x11, 0x11, 0x11], // M
    [0x11, 0x11, 0x19, 0x15, 0x13, 0x11, 0x11], // N
    [0x0E, 0x11, 0x11, 0x11, 0x11, 0x11, 0x0E], // O
    [0x1E, 0x11, 0x11, 0x1E, 0x10, 0x10, 0x10], // P
    [0x0E, 0x11, 0x11, 0x11, 0x15, 0x12, 0x0D], // Q
    [0x1E, 0x11, 0x11, 0x1E, 0x14, 0x12, 0x11], // R
    [0x0F, 0x10, 0x10, 0x0E, 0x01, 0x01, 0x1E], // S
    [0x1F, 0x04, 0x04, 0x04, 0x04, 0x04, 0x04], // T
    [0x11, 0x11, 0x11, 0x11, 0x11, 0x11, 0x0E], // U
    [0x11, 0x11, 0x11, 0x11, 0x11, 0x0A, 0x04], // V
    [0x11, 0x11, 0x11, 0x15, 0x15, 0x15, 0x0A], // W
    [0x11, 0x11, 0x0A, 0x04, 0x0A, 0x11, 0x11], // X
    [0x11, 0x11, 0x0A, 0x04, 0x04, 0x04, 0x04], // Y
    [0x1F, 0x01, 0x02, 0x04, 0x08, 0x10, 0x1F], // Z
];

/// The implementation of [`synthesize`] as it was before the drawing was
/// reworked for speed (one `memcpy` per row, per-pixel stores, a division
/// per pixel of the first line), kept verbatim as the reference the fast
/// code must match byte for byte. It shares only the unchanged parts:
/// validation ([`Geom`]), the overlay plan, the font and the colours.
#[cfg(test)]
mod reference {
    use super::{
        bands, bar_index, glyph, glyph_scale, mean, plan, rgb_to_yuv, to_usize, FrameLayout, Geom,
        Overlay, PixelFormat, Rect, Rgb, SynthError, TextBox, BARS, BARS_YUV, CELL_WIDTH,
        GLYPH_WIDTH,
    };

    /// Synthesises one frame: colour bars plus the overlays of `overlay`, in
    /// `layout`'s pixel format with rows `stride` bytes apart (RGB24 bottom-up,
    /// the YUV formats top-down). Row padding is zeroed; bytes of `frame` past
    /// [`required_len`] are left alone.
    ///
    /// Returns the number of bytes written, which is [`required_len`].
    ///
    /// # Errors
    /// As [`required_len`], and [`SynthError::BufferTooSmall`] when `frame` is
    /// shorter than that. On error nothing has been written.
    pub(super) fn synthesize(
        frame: &mut [u8],
        layout: &FrameLayout,
        stride: u32,
        overlay: &Overlay,
    ) -> Result<usize, SynthError> {
        let geom = Geom::new(layout, stride)?;
        let got = frame.len();
        let too_small = SynthError::BufferTooSmall {
            needed: geom.len,
            got,
        };
        let bytes = frame.get_mut(..geom.len).ok_or(too_small)?;
        let (luma, chroma) = bytes.split_at_mut_checked(geom.luma_len).ok_or(too_small)?;
        let mut canvas = RefCanvas { geom, luma, chroma };
        canvas.fill_bars();
        canvas.draw_overlays(overlay);
        Ok(geom.len)
    }

    /// The planes of a frame being written.
    struct RefCanvas<'a> {
        geom: Geom,
        /// The first plane (all of a packed frame).
        luma: &'a mut [u8],
        /// NV12's interleaved U,V plane (empty for packed formats).
        chroma: &'a mut [u8],
    }

    impl RefCanvas<'_> {
        /// Image row `y` of the first plane (memory row `height - 1 - y` for
        /// bottom-up RGB24), a whole stride long.
        fn row(&mut self, y: u32) -> Option<&mut [u8]> {
            let mem_row = match self.geom.pixel {
                PixelFormat::Rgb24 => self.geom.height.checked_sub(1)?.checked_sub(y)?,
                PixelFormat::Yuy2 | PixelFormat::Nv12 => y,
            };
            let start = to_usize(mem_row).checked_mul(self.geom.stride)?;
            let end = start.checked_add(self.geom.stride)?;
            self.luma.get_mut(start..end)
        }

        /// Row `cy` of NV12's chroma plane (covering image rows `2cy`, `2cy+1`).
        fn chroma_row(&mut self, cy: u32) -> Option<&mut [u8]> {
            let start = to_usize(cy).checked_mul(self.geom.stride)?;
            let end = start.checked_add(self.geom.stride)?;
            self.chroma.get_mut(start..end)
        }

        /// Writes the bars into the first row of each plane, then copies that
        /// row to every other row of the plane.
        fn fill_bars(&mut self) {
            let geom = self.geom;
            let stride = geom.stride;
            if stride == 0 {
                return;
            }
            let row_bytes = geom.row_bytes();
            if let Some((first, rest)) = self.luma.split_at_mut_checked(stride) {
                if let Some((pixels, padding)) = first.split_at_mut_checked(row_bytes) {
                    write_bar_line(pixels, geom.pixel, geom.width);
                    padding.fill(0);
                }
                for row in rest.chunks_exact_mut(stride) {
                    row.copy_from_slice(first);
                }
            }
            if let Some((first, rest)) = self.chroma.split_at_mut_checked(stride) {
                if let Some((pixels, padding)) = first.split_at_mut_checked(row_bytes) {
                    write_chroma_line(pixels, geom.width);
                    padding.fill(0);
                }
                for row in rest.chunks_exact_mut(stride) {
                    row.copy_from_slice(first);
                }
            }
        }

        /// Fills `r` (already clipped; even-aligned for the YUV formats) with a
        /// solid colour, chroma included.
        fn fill_rect(&mut self, r: Rect, c: Rgb) {
            if r.is_empty() {
                return;
            }
            let yuv = rgb_to_yuv(c);
            let (x0, x1) = (to_usize(r.x0), to_usize(r.x1));
            match self.geom.pixel {
                PixelFormat::Rgb24 => {
                    for y in r.y0..r.y1 {
                        let span = self.row(y).and_then(|row| {
                            row.get_mut(x0.saturating_mul(3)..x1.saturating_mul(3))
                        });
                        for px in span.into_iter().flat_map(|s| s.chunks_exact_mut(3)) {
                            px.copy_from_slice(&[c.b, c.g, c.r]);
                        }
                    }
                }
                PixelFormat::Yuy2 => {
                    let (x0, x1) = (x0 & !1, x1.saturating_add(1) & !1);
                    for y in r.y0..r.y1 {
                        let span = self.row(y).and_then(|row| {
                            row.get_mut(x0.saturating_mul(2)..x1.saturating_mul(2))
                        });
                        for pair in span.into_iter().flat_map(|s| s.chunks_exact_mut(4)) {
                            pair.copy_from_slice(&[yuv.y, yuv.u, yuv.y, yuv.v]);
                        }
                    }
                }
                PixelFormat::Nv12 => {
                    for y in r.y0..r.y1 {
                        if let Some(span) = self.row(y).and_then(|row| row.get_mut(x0..x1)) {
                            span.fill(yuv.y);
                        }
                    }
                    let (x0, x1) = (x0 & !1, x1.saturating_add(1) & !1);
                    for cy in r.y0 / 2..r.y1.div_ceil(2) {
                        let span = self.chroma_row(cy).and_then(|row| row.get_mut(x0..x1));
                        for uv in span.into_iter().flat_map(|s| s.chunks_exact_mut(2)) {
                            uv.copy_from_slice(&[yuv.u, yuv.v]);
                        }
                    }
                }
            }
        }

        /// Sets the pixels of `r` (already clipped) to text colour `c`: all of
        /// B,G,R for RGB24, luma only for the YUV formats.
        fn ink_rect(&mut self, r: Rect, c: Rgb) {
            if r.is_empty() {
                return;
            }
            let luma = rgb_to_yuv(c).y;
            let (x0, x1) = (to_usize(r.x0), to_usize(r.x1));
            for y in r.y0..r.y1 {
                let pixel = self.geom.pixel;
                let Some(row) = self.row(y) else { continue };
                match pixel {
                    PixelFormat::Rgb24 => {
                        let span = row.get_mut(x0.saturating_mul(3)..x1.saturating_mul(3));
                        for px in span.into_iter().flat_map(|s| s.chunks_exact_mut(3)) {
                            px.copy_from_slice(&[c.b, c.g, c.r]);
                        }
                    }
                    PixelFormat::Yuy2 => {
                        let span = row.get_mut(x0.saturating_mul(2)..x1.saturating_mul(2));
                        for px in span.into_iter().flat_map(|s| s.chunks_exact_mut(2)) {
                            if let Some(y_byte) = px.first_mut() {
                                *y_byte = luma;
                            }
                        }
                    }
                    PixelFormat::Nv12 => {
                        if let Some(span) = row.get_mut(x0..x1) {
                            span.fill(luma);
                        }
                    }
                }
            }
        }

        /// Draws `text` with its top-left cell corner at (`x`, `y`), font
        /// pixels `s` × `s`, clipped to `clip`.
        fn draw_text(&mut self, text: &[u8], x: u32, y: u32, s: u32, clip: Rect, c: Rgb) {
            let advance = CELL_WIDTH.saturating_mul(s);
            for (&ch, i) in text.iter().zip(0u32..) {
                let cell_x = x.saturating_add(i.saturating_mul(advance));
                if cell_x >= clip.x1 {
                    break;
                }
                for (&bits, row) in glyph(ch).iter().zip(0u32..) {
                    let py = y.saturating_add(row.saturating_mul(s));
                    for col in 0..GLYPH_WIDTH {
                        if bits & (0x10 >> col) != 0 {
                            let px = cell_x.saturating_add(col.saturating_mul(s));
                            self.ink_rect(Rect::new(px, py, s, s).intersect(clip), c);
                        }
                    }
                }
            }
        }

        /// Draws one overlay box clipped to `band`.
        fn draw_box(&mut self, b: &TextBox, band: Rect, s: u32) {
            let clip = b.rect.intersect(band);
            if clip.is_empty() {
                return;
            }
            self.fill_rect(clip, b.fill);
            let pad = s.saturating_mul(2);
            self.draw_text(
                b.text.as_bytes(),
                b.rect.x0.saturating_add(pad),
                b.rect.y0.saturating_add(pad),
                s,
                clip,
                b.ink,
            );
        }

        /// Draws every overlay of `overlay`.
        fn draw_overlays(&mut self, overlay: &Overlay) {
            let (width, height) = (self.geom.width, self.geom.height);
            let (top, bottom) = bands(width, height);
            for (b, band) in plan(width, height, overlay)
                .iter()
                .zip([top, top, top, bottom])
            {
                self.draw_box(b, band, glyph_scale(height));
            }
        }
    }

    /// Writes one line of bars as the first plane's pixels: B,G,R for RGB24,
    /// Y0 U Y1 V for YUY2 (chroma of a pair is the mean of its two pixels), Y
    /// for NV12.
    fn write_bar_line(pixels: &mut [u8], pixel: PixelFormat, width: u32) {
        match pixel {
            PixelFormat::Rgb24 => {
                for (px, x) in pixels.chunks_exact_mut(3).zip(0u32..) {
                    let c = BARS[bar_index(x, width)];
                    px.copy_from_slice(&[c.b, c.g, c.r]);
                }
            }
            PixelFormat::Yuy2 => {
                for (pair, x) in pixels.chunks_exact_mut(4).zip((0u32..).step_by(2)) {
                    let a = BARS_YUV[bar_index(x, width)];
                    let b = BARS_YUV[bar_index(x.saturating_add(1), width)];
                    pair.copy_from_slice(&[a.y, mean(a.u, b.u), b.y, mean(a.v, b.v)]);
                }
            }
            PixelFormat::Nv12 => {
                for (y, x) in pixels.iter_mut().zip(0u32..) {
                    *y = BARS_YUV[bar_index(x, width)].y;
                }
            }
        }
    }

    /// Writes one line of NV12's U,V plane for the bars (each pair the mean of
    /// its two columns; the bars are vertical, so both rows of a block agree).
    fn write_chroma_line(pixels: &mut [u8], width: u32) {
        for (uv, x) in pixels.chunks_exact_mut(2).zip((0u32..).step_by(2)) {
            let a = BARS_YUV[bar_index(x, width)];
            let b = BARS_YUV[bar_index(x.saturating_add(1), width)];
            uv.copy_from_slice(&[mean(a.u, b.u), mean(a.v, b.v)]);
        }
    }
}

#[cfg(test)]
mod tests {
    extern crate alloc;

    use super::*;
    use crate::portable::video_format::FRAME_SIZES;
    use alloc::vec;
    use alloc::vec::Vec;
    use proptest::prelude::*;

    fn layout(pixel: PixelFormat, w: u32, h: u32) -> FrameLayout {
        FrameLayout::new(pixel, w, h).unwrap()
    }

    fn overlay(frame_number: u64) -> Overlay {
        Overlay {
            // 1:15.43
            stream_time_100ns: 754_300_000,
            frame_number,
            dropped: 5,
            path: DeliveryPath::ZeroCopy,
        }
    }

    fn synth(l: &FrameLayout, stride: u32, o: &Overlay) -> Vec<u8> {
        let mut buf = vec![0xA5; required_len(l, stride).unwrap()];
        assert_eq!(synthesize(&mut buf, l, stride, o), Ok(buf.len()));
        buf
    }

    fn idx(n: u32) -> usize {
        usize::try_from(n).unwrap()
    }

    /// RGB of image pixel (x, y) of a bottom-up RGB24 frame.
    fn rgb_at(buf: &[u8], l: &FrameLayout, stride: u32, x: u32, y: u32) -> Rgb {
        let off = idx(l.height() - 1 - y) * idx(stride) + idx(x) * 3;
        Rgb::new(buf[off + 2], buf[off + 1], buf[off])
    }

    /// Y of pixel (x, y) and the U,V of its pair / block, for YUY2 or NV12.
    fn yuv_at(buf: &[u8], l: &FrameLayout, stride: u32, x: u32, y: u32) -> Yuv {
        let (stride, x, y) = (idx(stride), idx(x), idx(y));
        match l.pixel() {
            PixelFormat::Yuy2 => {
                let pair = y * stride + (x & !1) * 2;
                Yuv {
                    y: buf[y * stride + x * 2],
                    u: buf[pair + 1],
                    v: buf[pair + 3],
                }
            }
            PixelFormat::Nv12 => {
                let block = stride * idx(l.height()) + (y / 2) * stride + (x & !1);
                Yuv {
                    y: buf[y * stride + x],
                    u: buf[block],
                    v: buf[block + 1],
                }
            }
            PixelFormat::Rgb24 => unreachable!(),
        }
    }

    /// The bytes of image row `y` (for NV12: its luma row, then the
    /// chroma row it shares), pixels only (no padding).
    fn image_row(buf: &[u8], l: &FrameLayout, stride: u32, y: u32) -> Vec<u8> {
        let pitch = idx(stride);
        match l.pixel() {
            PixelFormat::Rgb24 => {
                let off = idx(l.height() - 1 - y) * pitch;
                buf[off..off + idx(l.width()) * 3].to_vec()
            }
            PixelFormat::Yuy2 => {
                let off = idx(y) * pitch;
                buf[off..off + idx(l.width()) * 2].to_vec()
            }
            PixelFormat::Nv12 => {
                let w = idx(l.width());
                let off = idx(y) * pitch;
                let c = pitch * idx(l.height()) + idx(y / 2) * pitch;
                let mut row = buf[off..off + w].to_vec();
                row.extend_from_slice(&buf[c..c + w]);
                row
            }
        }
    }

    fn rows_differing(a: &[u8], b: &[u8], l: &FrameLayout, stride: u32) -> Vec<u32> {
        (0..l.height())
            .filter(|&y| image_row(a, l, stride, y) != image_row(b, l, stride, y))
            .collect()
    }

    #[test]
    fn rgb_to_yuv_matches_bt601_integer_formula() {
        assert_eq!(
            rgb_to_yuv(Rgb::new(0, 0, 0)),
            Yuv {
                y: 16,
                u: 128,
                v: 128
            }
        );
        assert_eq!(
            rgb_to_yuv(BARS[0]),
            Yuv {
                y: 180,
                u: 128,
                v: 128
            }
        );
        assert_eq!(
            rgb_to_yuv(Rgb::new(255, 255, 255)),
            Yuv {
                y: 235,
                u: 128,
                v: 128
            }
        );
        // 75% yellow: Y = ((195*191 + 128) >> 8) + 16 = 161,
        // U = ((-112*191 + 128) >> 8) + 128 = 44, V = ((18*191 + 128) >> 8) + 128 = 141.
        assert_eq!(
            rgb_to_yuv(BARS[1]),
            Yuv {
                y: 161,
                u: 44,
                v: 141
            }
        );
        // Extremes stay inside the limited range.
        assert_eq!(rgb_to_yuv(Rgb::new(0, 0, 255)).u, 240);
        assert_eq!(rgb_to_yuv(Rgb::new(255, 255, 0)).u, 16);
        assert_eq!(rgb_to_yuv(Rgb::new(255, 0, 0)).v, 240);
        for (c, yuv) in BARS.iter().zip(BARS_YUV) {
            assert_eq!(rgb_to_yuv(*c), yuv);
        }
    }

    #[test]
    fn bars_are_75_percent_in_eia_order() {
        let names = [
            (1, 1, 1),
            (1, 1, 0),
            (0, 1, 1),
            (0, 1, 0),
            (1, 0, 1),
            (1, 0, 0),
            (0, 0, 1),
            (0, 0, 0),
        ];
        for (bar, (r, g, b)) in BARS.iter().zip(names) {
            assert_eq!(*bar, Rgb::new(191 * r, 191 * g, 191 * b));
        }
    }

    #[test]
    fn bar_index_spans_eighths_and_clamps() {
        assert_eq!(bar_index(0, 640), 0);
        assert_eq!(bar_index(79, 640), 0);
        assert_eq!(bar_index(80, 640), 1);
        assert_eq!(bar_index(639, 640), 7);
        assert_eq!(bar_index(640, 640), 7);
        assert_eq!(bar_index(u32::MAX, 1), 7);
        assert_eq!(bar_index(5, 0), 0);
        for (w, _) in FRAME_SIZES {
            for k in 0..8u32 {
                assert_eq!(bar_index(k * w / 8, w), idx(k));
                assert_eq!(bar_index((k + 1) * w / 8 - 1, w), idx(k));
            }
        }
    }

    /// The offered sizes the per-size sweeps run: all of them, or under
    /// Miri (which interprets every byte) the smallest.
    const SWEPT_SIZES: &[(u32, u32)] = if cfg!(miri) {
        FRAME_SIZES.split_at(1).0
    } else {
        &FRAME_SIZES
    };

    #[test]
    fn centre_row_shows_the_bars_in_every_format_and_size() {
        for &(w, h) in SWEPT_SIZES {
            for pixel in PixelFormat::ALL {
                let l = layout(pixel, w, h);
                let buf = synth(&l, l.stride(), &overlay(123));
                let y = h / 2;
                for k in 0..8u32 {
                    let x = k * w / 8 + w / 16;
                    let bar = idx(k);
                    match pixel {
                        PixelFormat::Rgb24 => {
                            assert_eq!(rgb_at(&buf, &l, l.stride(), x, y), BARS[bar], "{l:?} {k}");
                        }
                        PixelFormat::Yuy2 | PixelFormat::Nv12 => {
                            assert_eq!(
                                yuv_at(&buf, &l, l.stride(), x, y),
                                rgb_to_yuv(BARS[bar]),
                                "{l:?} {k}"
                            );
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn every_pixel_of_the_centre_row_is_its_bar() {
        for pixel in PixelFormat::ALL {
            let l = layout(pixel, 320, 240);
            let buf = synth(&l, l.stride(), &overlay(7));
            for x in 0..320 {
                let bar = bar_index(x, 320);
                if pixel == PixelFormat::Rgb24 {
                    assert_eq!(rgb_at(&buf, &l, l.stride(), x, 120), BARS[bar]);
                } else {
                    assert_eq!(yuv_at(&buf, &l, l.stride(), x, 120), BARS_YUV[bar]);
                }
            }
        }
    }

    #[test]
    fn overlays_stay_in_the_top_and_bottom_15_percent() {
        for &(w, h) in SWEPT_SIZES {
            for pixel in PixelFormat::ALL {
                let l = layout(pixel, w, h);
                let buf = synth(&l, l.stride(), &overlay(u64::MAX));
                let bars = image_row(&buf, &l, l.stride(), h / 2);
                let (lo, hi) = (h.div_ceil(100) * 15, h * 85 / 100);
                for y in lo..hi {
                    assert_eq!(image_row(&buf, &l, l.stride(), y), bars, "{l:?} row {y}");
                }
                // And the overlays are really there: the top-left and the
                // bottom-centre pixels inside the boxes are not bars.
                let m = 2 * glyph_scale(h);
                assert_ne!(image_row(&buf, &l, l.stride(), m), bars, "{l:?}");
                assert_ne!(image_row(&buf, &l, l.stride(), h - m - 1), bars, "{l:?}");
            }
        }
    }

    #[test]
    fn errors_leave_the_buffer_untouched() {
        // Under Miri a smaller frame: the checks walk every byte.
        let (w, h) = if cfg!(miri) { (32, 24) } else { (320, 240) };
        let l = layout(PixelFormat::Yuy2, w, h);
        let mut buf = vec![0x5A; idx(l.image_size()) - 1];
        assert_eq!(
            synthesize(&mut buf, &l, l.stride(), &overlay(1)),
            Err(SynthError::BufferTooSmall {
                needed: idx(l.image_size()),
                got: buf.len()
            })
        );
        assert!(buf.iter().all(|&b| b == 0x5A));

        let mut buf = vec![0x5A; idx(l.image_size()) * 2];
        assert_eq!(
            synthesize(&mut buf, &l, l.stride() - 2, &overlay(1)),
            Err(SynthError::StrideTooSmall)
        );
        assert_eq!(
            synthesize(&mut buf, &l, 0, &overlay(1)),
            Err(SynthError::StrideTooSmall)
        );
        // A larger stride needs more than the buffer has.
        assert!(matches!(
            synthesize(&mut buf, &l, l.stride() * 3, &overlay(1)),
            Err(SynthError::BufferTooSmall { .. })
        ));
        assert!(buf.iter().all(|&b| b == 0x5A));

        assert_eq!(
            SynthError::BufferTooSmall { needed: 1, got: 0 }.ntstatus(),
            STATUS_BUFFER_TOO_SMALL
        );
        assert_eq!(
            SynthError::StrideTooSmall.ntstatus(),
            STATUS_INVALID_PARAMETER
        );
        assert_eq!(SynthError::Overflow.ntstatus(), STATUS_INVALID_PARAMETER);
    }

    #[test]
    fn required_len_follows_the_stride() {
        let l = layout(PixelFormat::Yuy2, 640, 480);
        assert_eq!(required_len(&l, l.stride()), Ok(idx(l.image_size())));
        assert_eq!(required_len(&l, 1536), Ok(1536 * 480));
        let l = layout(PixelFormat::Nv12, 640, 480);
        assert_eq!(required_len(&l, l.stride()), Ok(idx(l.image_size())));
        assert_eq!(required_len(&l, 704), Ok(704 * 480 + 704 * 240));
        let l = layout(PixelFormat::Rgb24, 3840, 2160);
        assert_eq!(required_len(&l, l.stride()), Ok(idx(l.image_size())));
        assert_eq!(
            required_len(&l, l.stride() - 1),
            Err(SynthError::StrideTooSmall)
        );
        // The largest stride still fits a 64-bit usize.
        #[cfg(target_pointer_width = "64")]
        assert_eq!(
            required_len(&l, u32::MAX),
            Ok(usize::try_from(u64::from(u32::MAX) * 2160).unwrap())
        );
    }

    #[test]
    fn frame_number_changes_only_the_top_overlay() {
        for pixel in PixelFormat::ALL {
            let l = layout(pixel, 640, 480);
            let a = synth(&l, l.stride(), &overlay(123));
            let b = synth(&l, l.stride(), &overlay(124));
            assert_ne!(a, b, "{pixel:?}");
            let rows = rows_differing(&a, &b, &l, l.stride());
            assert!(!rows.is_empty());
            assert!(
                rows.iter().all(|&y| y < 480 * 15 / 100),
                "{pixel:?} {rows:?}"
            );
            assert_eq!(
                image_row(&a, &l, l.stride(), 240),
                image_row(&b, &l, l.stride(), 240)
            );
        }
    }

    #[test]
    fn last_digit_change_touches_only_its_glyph_cell() {
        let l = layout(PixelFormat::Yuy2, 640, 480);
        let a = synth(&l, l.stride(), &overlay(123));
        let b = synth(&l, l.stride(), &overlay(124));
        let s = glyph_scale(480);
        // "FRAME 000123": the last digit is character 11 of the text,
        // which starts at margin + padding = 4 s.
        let cell_x0 = 4 * s + 11 * CELL_WIDTH * s;
        let cell_x1 = cell_x0 + GLYPH_WIDTH * s;
        #[cfg(not(miri))]
        let rows = 0..480;
        // Under Miri only the rows that differ at all (every other row is
        // equal byte for byte, so none of its pixels can differ).
        #[cfg(miri)]
        let rows = rows_differing(&a, &b, &l, l.stride());
        for y in rows {
            for x in 0..640 {
                let (pa, pb) = (
                    yuv_at(&a, &l, l.stride(), x, y),
                    yuv_at(&b, &l, l.stride(), x, y),
                );
                if pa != pb {
                    assert!((cell_x0..cell_x1).contains(&x), "({x}, {y})");
                    assert!((4 * s..11 * s).contains(&y), "({x}, {y})");
                    // Only luma differs: text never changes chroma.
                    assert_eq!((pa.u, pa.v), (pb.u, pb.v));
                }
            }
        }
    }

    #[test]
    fn text_is_the_font_bitmap_white_on_black() {
        // At 320x240 the scale is 1 and "FRAME ..." starts at (4, 4).
        let l = layout(PixelFormat::Nv12, 320, 240);
        let buf = synth(&l, l.stride(), &overlay(0));
        let white = rgb_to_yuv(TEXT_COLOUR);
        let black = rgb_to_yuv(BOX_COLOUR);
        for (i, ch) in b"FRAME 000000".iter().enumerate() {
            let cx = 4 + u32::try_from(i).unwrap() * CELL_WIDTH;
            for (bits, row) in glyph(*ch).iter().zip(0u32..) {
                for col in 0..GLYPH_WIDTH {
                    let p = yuv_at(&buf, &l, l.stride(), cx + col, 4 + row);
                    let on = bits & (0x10 >> col) != 0;
                    assert_eq!(p.y, if on { white.y } else { black.y }, "{ch} {row} {col}");
                    assert_eq!((p.u, p.v), (128, 128));
                }
            }
        }
    }

    #[test]
    fn clock_shows_minutes_seconds_hundredths() {
        assert_eq!(clock_text(754_300_000).as_bytes(), b"01:15.43");
        assert_eq!(clock_text(0).as_bytes(), b"00:00.00");
        assert_eq!(clock_text(-5).as_bytes(), b"00:00.00");
        assert_eq!(
            clock_text(99 * 600_000_000 + 599_999_999).as_bytes(),
            b"99:59.99"
        );
        assert_eq!(clock_text(100 * 600_000_000).as_bytes(), b"100:00.00");
        // i64::MAX 100 ns units are 922 337 203 685.477 s.
        assert_eq!(clock_text(i64::MAX).as_bytes(), b"15372286728:05.47");

        // A different time changes only the bottom overlay.
        let l = layout(PixelFormat::Rgb24, 640, 480);
        let a = synth(&l, l.stride(), &overlay(9));
        let later = Overlay {
            stream_time_100ns: 754_400_000,
            ..overlay(9)
        };
        let b = synth(&l, l.stride(), &later);
        let rows = rows_differing(&a, &b, &l, l.stride());
        assert!(!rows.is_empty());
        assert!(rows.iter().all(|&y| y >= 480 * 85 / 100), "{rows:?}");
    }

    #[test]
    fn delivery_markers_differ_in_colour_and_text() {
        assert_ne!(
            DeliveryPath::ZeroCopy.colour(),
            DeliveryPath::Copied.colour()
        );
        for pixel in PixelFormat::ALL {
            let l = layout(pixel, 640, 480);
            let zero = synth(&l, l.stride(), &overlay(1));
            let copied = synth(
                &l,
                l.stride(),
                &Overlay {
                    path: DeliveryPath::Copied,
                    ..overlay(1)
                },
            );
            assert_ne!(zero, copied, "{pixel:?}");
            let rows = rows_differing(&zero, &copied, &l, l.stride());
            assert!(rows.iter().all(|&y| y < 480 * 15 / 100), "{pixel:?}");
            // The marker's corner pixel (just inside its top-right corner)
            // has the marker colour.
            let s = glyph_scale(480);
            let (x, y) = (640 - 2 * s - 1, 2 * s);
            for (buf, path) in [
                (&zero, DeliveryPath::ZeroCopy),
                (&copied, DeliveryPath::Copied),
            ] {
                if pixel == PixelFormat::Rgb24 {
                    assert_eq!(rgb_at(buf, &l, l.stride(), x, y), path.colour());
                } else {
                    assert_eq!(yuv_at(buf, &l, l.stride(), x, y), rgb_to_yuv(path.colour()));
                }
            }
        }
    }

    #[test]
    fn larger_stride_keeps_every_row_and_zeroes_padding() {
        for pixel in PixelFormat::ALL {
            let l = layout(pixel, 320, 240);
            let tight = synth(&l, l.stride(), &overlay(42));
            let wide_stride = l.stride() + 72;
            let needed = required_len(&l, wide_stride).unwrap();
            let mut wide = vec![0xEE; needed + 64];
            assert_eq!(
                synthesize(&mut wide, &l, wide_stride, &overlay(42)),
                Ok(needed)
            );
            for y in 0..240 {
                assert_eq!(
                    image_row(&tight, &l, l.stride(), y),
                    image_row(&wide, &l, wide_stride, y),
                    "{pixel:?} row {y}"
                );
            }
            let row_bytes = match pixel {
                PixelFormat::Yuy2 => 640,
                PixelFormat::Rgb24 => 960,
                PixelFormat::Nv12 => 320,
            };
            for row in wide[..needed].chunks_exact(idx(wide_stride)) {
                assert!(row[row_bytes..].iter().all(|&b| b == 0), "{pixel:?}");
            }
            assert!(wide[needed..].iter().all(|&b| b == 0xEE), "{pixel:?}");
        }
    }

    #[test]
    fn rgb24_is_bottom_up() {
        let l = layout(PixelFormat::Rgb24, 640, 480);
        let buf = synth(&l, l.stride(), &overlay(1));
        let stride = idx(l.stride());
        // Image (4, 4) lies in the black top-left box: memory row 475, near
        // the end of the buffer.
        let off = (480 - 1 - 4) * stride + 4 * 3;
        assert!(off > buf.len() * 9 / 10);
        assert_eq!(&buf[off..off + 3], &[0, 0, 0]);
        // Memory row 4 is image row 475, where column 4 is plain white bar.
        assert_eq!(&buf[4 * stride + 12..4 * stride + 15], &[191, 191, 191]);
        // The first memory row is the bottom image row: all bars.
        assert_eq!(rgb_at(&buf, &l, l.stride(), 4, 479), BARS[0]);
    }

    #[test]
    fn nv12_4k_frame_is_synthesised() {
        let l = layout(PixelFormat::Nv12, 3840, 2160);
        let buf = synth(&l, l.stride(), &overlay(1_000_000));
        assert_eq!(buf.len(), 12_441_600);
        for k in 0..8u32 {
            let x = k * 480 + 240;
            assert_eq!(yuv_at(&buf, &l, l.stride(), x, 1080), BARS_YUV[idx(k)]);
            assert_eq!(yuv_at(&buf, &l, l.stride(), x, 1081), BARS_YUV[idx(k)]);
        }
        assert_eq!(
            yuv_at(&buf, &l, l.stride(), 3840 - 19, 18),
            rgb_to_yuv(DeliveryPath::ZeroCopy.colour())
        );
    }

    #[test]
    fn tiny_frames_and_extreme_overlays_do_not_panic() {
        let extremes = [
            Overlay {
                stream_time_100ns: i64::MIN,
                frame_number: u64::MAX,
                dropped: u64::MAX,
                path: DeliveryPath::Copied,
            },
            Overlay {
                stream_time_100ns: i64::MAX,
                frame_number: 0,
                dropped: 0,
                path: DeliveryPath::ZeroCopy,
            },
        ];
        for (w, h) in [(2, 2), (16, 16), (8, 2), (2, 8), (320, 2), (64, 1000)] {
            for pixel in PixelFormat::ALL {
                let l = layout(pixel, w, h);
                for o in &extremes {
                    let buf = synth(&l, l.stride() + 4, o);
                    // The middle row is pure bars even here.
                    let y = h / 2;
                    for x in 0..w {
                        let bar = bar_index(x, w);
                        if pixel == PixelFormat::Rgb24 {
                            assert_eq!(rgb_at(&buf, &l, l.stride() + 4, x, y), BARS[bar]);
                        } else {
                            assert_eq!(yuv_at(&buf, &l, l.stride() + 4, x, y).y, BARS_YUV[bar].y);
                        }
                    }
                }
            }
        }
        for (w, h) in [(1, 1), (3, 1), (5, 3)] {
            let l = layout(PixelFormat::Rgb24, w, h);
            synth(&l, l.stride(), &extremes[0]);
        }
    }

    #[test]
    fn font_covers_the_overlay_text() {
        for text in [
            "FRAME 0123456789",
            "DROP",
            DeliveryPath::ZeroCopy.label(),
            DeliveryPath::Copied.label(),
            "12:34.56",
        ] {
            for ch in text.bytes().filter(|&c| c != b' ') {
                let g = glyph(ch);
                assert!(g.iter().any(|&row| row != 0), "{}", char::from(ch));
            }
        }
        for ch in 0..=u8::MAX {
            assert!(glyph(ch).iter().all(|&row| row < 0x20));
        }
        assert_eq!(glyph(b' '), [0; 7]);
        assert_eq!(glyph(b'a'), glyph(b'A'));
        // Every digit and letter is distinct.
        let mut all: Vec<[u8; 7]> = (b'0'..=b'9').chain(b'A'..=b'Z').map(glyph).collect();
        all.sort_unstable();
        all.dedup();
        assert_eq!(all.len(), 36);
    }

    /// Synthesises `l` at `stride` with both the fast code and
    /// [`reference`] into buffers of the same (non-zero, position-dependent)
    /// garbage with `tail` bytes past the frame, and asserts they agree on
    /// every byte, the tail included.
    fn assert_matches_reference(l: &FrameLayout, stride: u32, o: &Overlay, tail: usize) {
        let needed = required_len(l, stride).unwrap();
        // Byte i is (i % 251) | 1: whole periods copied (and the buffers
        // compared whole below), so Miri, which interprets every step of a
        // per-byte loop, spends its time in the synthesis.
        let period: Vec<u8> = (0..251u8).map(|b| b | 1).collect();
        let mut garbage = period.repeat((needed + tail).div_ceil(period.len()));
        garbage.truncate(needed + tail);
        let mut fast = garbage.clone();
        let mut slow = garbage;
        assert_eq!(synthesize(&mut fast, l, stride, o), Ok(needed));
        assert_eq!(reference::synthesize(&mut slow, l, stride, o), Ok(needed));
        if fast != slow {
            let i = fast.iter().zip(&slow).position(|(a, b)| a != b).unwrap();
            let (row, col) = (i / idx(stride), i % idx(stride));
            panic!(
                "{:?} {}x{} stride {stride} {o:?}: byte {i} (row {row}, column {col}) is {} but the reference wrote {}",
                l.pixel(), l.width(), l.height(), fast[i], slow[i]
            );
        }
    }

    fn extreme_overlays() -> [Overlay; 4] {
        [
            overlay(123),
            Overlay {
                stream_time_100ns: i64::MIN,
                frame_number: u64::MAX,
                dropped: u64::MAX,
                path: DeliveryPath::Copied,
            },
            Overlay {
                stream_time_100ns: i64::MAX,
                frame_number: 0,
                dropped: 0,
                path: DeliveryPath::ZeroCopy,
            },
            Overlay {
                stream_time_100ns: 1,
                frame_number: 1_000_000_007,
                dropped: 88_888,
                path: DeliveryPath::Copied,
            },
        ]
    }

    #[test]
    fn matches_the_reference_on_many_sizes_strides_and_overlays() {
        #[cfg(not(miri))]
        let widths = [
            1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 14, 16, 18, 22, 30, 62, 64, 66, 98, 126, 130, 158, 238,
            240, 242, 318, 320, 322, 642,
        ];
        #[cfg(not(miri))]
        let heights = [
            1, 2, 3, 4, 5, 6, 8, 16, 30, 62, 240, 241, 478, 480, 482, 722,
        ];
        #[cfg(not(miri))]
        let min_checked = 800;
        // Under Miri (which interprets every byte) a few of each kind: the
        // smallest, odd and even, the text clipped at the right edge (2 or
        // 3 wide, 30 high) and whole (130 wide).
        #[cfg(miri)]
        let (widths, heights, min_checked) = ([1, 2, 3, 130], [1, 2, 5, 30], 60);
        let overlays = extreme_overlays();
        let mut checked = 0;
        for pixel in PixelFormat::ALL {
            for (&w, wi) in widths.iter().zip(0usize..) {
                for (&h, hi) in heights.iter().zip(0usize..) {
                    let Ok(l) = FrameLayout::new(pixel, w, h) else {
                        continue;
                    };
                    // Every combination at the packed stride and a padded
                    // one; the odd extra strides and the other overlays
                    // on a rotating subset.
                    let o = &overlays[(wi + hi) % overlays.len()];
                    assert_matches_reference(&l, l.stride(), &overlay(7), 0);
                    assert_matches_reference(&l, l.stride() + 4, o, 3);
                    let odd = [1, 3, 72, 130][(wi * 3 + hi) % 4];
                    assert_matches_reference(&l, l.stride() + odd, o, 1);
                    checked += 3;
                }
            }
        }
        assert!(checked > min_checked, "{checked}");
        // Scales 2..=9 on narrow frames (boxes clipped at the right edge)
        // and wide, short ones (boxes clipped by the bands).
        #[cfg(not(miri))]
        let scaled = [
            (64, 960),
            (40, 1200),
            (10, 2160),
            (3000, 2),
            (2000, 6),
            (1282, 18),
        ];
        // Under Miri one of each, smaller (scale 2).
        #[cfg(miri)]
        let scaled = [(10, 480), (642, 2)];
        for (w, h) in scaled {
            for pixel in PixelFormat::ALL {
                for o in &overlays {
                    if let Ok(l) = FrameLayout::new(pixel, w, h) {
                        assert_matches_reference(&l, l.stride(), o, 2);
                        assert_matches_reference(&l, l.stride() + 12, o, 0);
                    }
                }
            }
        }
    }

    #[test]
    fn matches_the_reference_at_the_offered_sizes() {
        for (i, &(w, h)) in SWEPT_SIZES.iter().enumerate() {
            for pixel in PixelFormat::ALL {
                let l = layout(pixel, w, h);
                let o = &extreme_overlays()[i % 4];
                assert_matches_reference(&l, l.stride(), o, 0);
                assert_matches_reference(&l, l.stride() + 64, &overlay(1), 5);
            }
        }
    }

    /// The largest side `arbitrary_frames_match_the_reference` draws: under
    /// Miri, which interprets every byte, frames under 64 × 64.
    const MAX_SIDE: u32 = if cfg!(miri) { 64 } else { 700 };

    proptest! {
        // Miri interprets every case: a few there, proptest's default
        // otherwise.
        #![proptest_config(ProptestConfig::with_cases(
            if cfg!(miri) { 8 } else { ProptestConfig::default().cases }
        ))]

        #[test]
        fn arbitrary_frames_never_panic_or_overrun(
            p in 0usize..3,
            w in 1u32..80,
            h in 1u32..80,
            extra_stride in 0u32..20,
            extra_buf in 0usize..40,
            short in proptest::bool::ANY,
            t in proptest::num::i64::ANY,
            n in proptest::num::u64::ANY,
            d in proptest::num::u64::ANY,
        ) {
            let pixel = PixelFormat::ALL[p];
            let Ok(l) = FrameLayout::new(pixel, w, h) else { return Ok(()) };
            let stride = l.stride() + extra_stride;
            let needed = required_len(&l, stride).unwrap();
            let len = if short { needed.saturating_sub(extra_buf + 1) } else { needed + extra_buf };
            let mut buf = vec![0x77u8; len];
            let o = Overlay { stream_time_100ns: t, frame_number: n, dropped: d, path: DeliveryPath::Copied };
            match synthesize(&mut buf, &l, stride, &o) {
                Ok(written) => {
                    prop_assert!(!short);
                    prop_assert_eq!(written, needed);
                    prop_assert!(buf[needed..].iter().all(|&b| b == 0x77));
                }
                Err(e) => {
                    prop_assert!(short);
                    prop_assert_eq!(e, SynthError::BufferTooSmall { needed, got: len });
                    prop_assert!(buf.iter().all(|&b| b == 0x77));
                }
            }
        }

        #[test]
        fn arbitrary_frames_match_the_reference(
            p in 0usize..3,
            w in 1u32..MAX_SIDE,
            h in 1u32..MAX_SIDE,
            extra_stride in 0u32..40,
            t in proptest::num::i64::ANY,
            n in proptest::num::u64::ANY,
            d in proptest::num::u64::ANY,
            copied in proptest::bool::ANY,
        ) {
            let Ok(l) = FrameLayout::new(PixelFormat::ALL[p], w, h) else { return Ok(()) };
            let path = if copied { DeliveryPath::Copied } else { DeliveryPath::ZeroCopy };
            let o = Overlay { stream_time_100ns: t, frame_number: n, dropped: d, path };
            assert_matches_reference(&l, l.stride() + extra_stride, &o, 7);
        }

        #[test]
        fn arbitrary_sizes_and_strides_are_refused_not_trusted(
            p in 0usize..3,
            w in proptest::num::u32::ANY,
            h in proptest::num::u32::ANY,
            stride in proptest::num::u32::ANY,
        ) {
            let Ok(l) = FrameLayout::new(PixelFormat::ALL[p], w, h) else { return Ok(()) };
            let mut buf = [0x11u8; 64];
            let r = synthesize(&mut buf, &l, stride, &overlay(3));
            if let Ok(n) = r {
                prop_assert!(n <= 64);
            } else {
                prop_assert!(buf.iter().all(|&b| b == 0x11));
            }
        }
    }
}
