//! The simulator's y4m conversion: a synthesized frame (NV12, YUY2 or
//! bottom-up RGB24, at any stride) into the planar 4:2:0 Y/U/V planes a
//! YUV4MPEG2 frame holds.
//!
//! Depends on nothing of the simulator, only on avscap's public API, so a
//! bench can include it with
//! `#[path = "../examples/simulate/planes.rs"] mod planes;`.
//!
//! # Cost
//! The conversion runs once per delivered frame on the whole frame, so it is
//! written as loops the compiler vectorises: rows are walked as slices
//! (`chunks`, `chunks_exact`), pixels as fixed-size arrays (`as_chunks`)
//! zipped with the output rows, so no access needs a bounds check. NV12 is
//! a row copy for luma and a de-interleave for chroma; YUY2 picks luma
//! bytes and averages chroma over each pair of rows; RGB24 converts every
//! pixel (BT.601, [`rgb_to_yuv`]'s arithmetic) and averages the
//! chroma of each 2x2 block.

use avscap::portable::video_format::{FrameLayout, PixelFormat};

#[cfg(doc)]
use avscap::portable::image::rgb_to_yuv;

/// A 4:2:0 planar frame (the y4m payload).
pub struct Planes {
    /// Luma, `width * height` bytes.
    pub y: Vec<u8>,
    /// Cb, `width * height / 4` bytes.
    pub u: Vec<u8>,
    /// Cr, `width * height / 4` bytes.
    pub v: Vec<u8>,
    /// YUY2: one row of interleaved chroma averaged over two rows.
    chroma_row: Vec<u8>,
    /// RGB24: each pixel's `U` and `V` for two rows (four rows of `width`).
    chroma_sums: Vec<i16>,
}

impl Planes {
    /// Planes for a frame of `layout`'s size.
    #[must_use]
    pub fn new(layout: &FrameLayout) -> Self {
        let (w, h) = (layout.width() as usize, layout.height() as usize);
        Self {
            y: vec![0; w * h],
            u: vec![0; w * h / 4],
            v: vec![0; w * h / 4],
            chroma_row: Vec::new(),
            chroma_sums: Vec::new(),
        }
    }

    /// Converts a frame of any supported format into 4:2:0 planes
    /// (chroma of packed formats averaged over each 2x2 block).
    /// `stride`: bytes from one row to the next in `frame` (the format's
    /// stride, or the client's surface pitch); NV12's chroma rows follow its
    /// luma rows at the same stride.
    ///
    /// Each chroma plane gets `(width / 2) * (height / 2)` samples, so at
    /// an odd size (RGB24 allows one, YUY2 an odd height) the last column
    /// and row add luma only and the tails of the chroma planes are left
    /// as they were.
    ///
    /// # Panics
    /// If `frame` ends before the last row's pixels, or `stride` is smaller
    /// than a row's pixels.
    pub fn convert(&mut self, layout: &FrameLayout, frame: &[u8], stride: usize) {
        let (w, h) = (layout.width() as usize, layout.height() as usize);
        let (cw, ch) = (w / 2, h / 2);
        let (rows, row_bytes) = match layout.pixel() {
            PixelFormat::Nv12 => (h + ch, w),
            PixelFormat::Yuy2 => (h, 2 * w),
            PixelFormat::Rgb24 => (h, 3 * w),
        };
        assert!(
            stride >= row_bytes,
            "stride {stride} below a row's {row_bytes} bytes"
        );
        assert!(
            rows == 0 || frame.len() >= (rows - 1) * stride + row_bytes,
            "frame of {} bytes is short of {rows} rows of {row_bytes} at stride {stride}",
            frame.len()
        );
        // The rows of the three planes. `max(1)`: a one-pixel-wide frame
        // has no chroma columns, and chunks of zero bytes are refused.
        let y_rows = self.y.chunks_exact_mut(w.max(1));
        let u_rows = self.u[..cw * ch].chunks_exact_mut(cw.max(1));
        let v_rows = self.v[..cw * ch].chunks_exact_mut(cw.max(1));
        let chroma_rows = u_rows.zip(v_rows);
        match layout.pixel() {
            PixelFormat::Nv12 => {
                for (y_row, line) in y_rows.zip(frame.chunks(stride)) {
                    y_row.copy_from_slice(&line[..w]);
                }
                let chroma = frame[stride * h..].chunks(stride);
                for ((u_row, v_row), line) in chroma_rows.zip(chroma) {
                    deinterleave(u_row, v_row, &line[..2 * cw]);
                }
            }
            PixelFormat::Yuy2 => {
                self.chroma_row.resize(w, 0);
                let mut lines = frame.chunks(stride);
                let mut y_rows = y_rows;
                for (u_row, v_row) in chroma_rows {
                    let (Some(ya), Some(yb), Some(a), Some(b)) =
                        (y_rows.next(), y_rows.next(), lines.next(), lines.next())
                    else {
                        unreachable!("a chroma row is two rows of luma");
                    };
                    let (a, b) = (&a[..2 * w], &b[..2 * w]);
                    yuy2_luma(ya, a);
                    yuy2_luma(yb, b);
                    yuy2_chroma(u_row, v_row, a, b, &mut self.chroma_row);
                }
                // An odd last row: luma only.
                for (y_row, line) in y_rows.zip(lines) {
                    yuy2_luma(y_row, &line[..2 * w]);
                }
            }
            PixelFormat::Rgb24 => {
                // Bottom-up DIB: image row y is memory row h-1-y.
                let mut lines = frame.chunks(stride).take(h).rev();
                let mut y_rows = y_rows;
                self.chroma_sums.resize(4 * w, 0);
                let (ua, rest) = self.chroma_sums.split_at_mut(w);
                let (va, rest) = rest.split_at_mut(w);
                let (ub, vb) = rest.split_at_mut(w);
                if cw > 0 {
                    for (u_row, v_row) in chroma_rows {
                        let (Some(ya), Some(yb), Some(a), Some(b)) =
                            (y_rows.next(), y_rows.next(), lines.next(), lines.next())
                        else {
                            unreachable!("a chroma row is two rows of luma");
                        };
                        rgb_row(ya, ua, va, &a[..3 * w]);
                        rgb_row(yb, ub, vb, &b[..3 * w]);
                        mean4_rows(u_row, ua, ub);
                        mean4_rows(v_row, va, vb);
                    }
                }
                // An odd last row (or a frame one pixel wide): luma only.
                for (y_row, line) in y_rows.zip(lines) {
                    rgb_row(y_row, ua, va, &line[..3 * w]);
                }
            }
        }
    }
}

/// NV12 chroma: one row of interleaved `UVUV…` into a row of each plane.
///
/// Each pair is read as one little-endian `u16` and split by mask and
/// shift: that vectorises to a mask, a shift and a pack per 16 bytes, where
/// picking the two bytes of a `[u8; 2]` gathers them one by one.
fn deinterleave(u_row: &mut [u8], v_row: &mut [u8], uv: &[u8]) {
    let (pairs, _) = uv.as_chunks::<2>();
    for ((u, v), &pair) in u_row.iter_mut().zip(v_row.iter_mut()).zip(pairs) {
        let pair = u16::from_le_bytes(pair);
        *u = low_byte(pair);
        *v = high_byte(pair);
    }
}

/// YUY2 luma: the even bytes of a `Y0 U Y1 V` row.
fn yuy2_luma(y_row: &mut [u8], line: &[u8]) {
    let (pairs, _) = line.as_chunks::<2>();
    for (y, &pair) in y_row.iter_mut().zip(pairs) {
        *y = low_byte(u16::from_le_bytes(pair));
    }
}

/// YUY2 chroma of two rows: each `U`/`V` averaged with the one below,
/// first into `scratch` as one interleaved `UVUV…` row (the odd bytes of
/// both rows, averaged), then de-interleaved.
fn yuy2_chroma(u_row: &mut [u8], v_row: &mut [u8], a: &[u8], b: &[u8], scratch: &mut [u8]) {
    let (a, _) = a.as_chunks::<2>();
    let (b, _) = b.as_chunks::<2>();
    for (c, (&a, &b)) in scratch.iter_mut().zip(a.iter().zip(b)) {
        *c = avg2(
            high_byte(u16::from_le_bytes(a)),
            high_byte(u16::from_le_bytes(b)),
        );
    }
    deinterleave(u_row, v_row, scratch);
}

/// RGB24, one row of `B G R` pixels: each pixel's luma into `y_row`, its
/// `U` and `V` into `u_row` and `v_row`.
fn rgb_row(y_row: &mut [u8], u_row: &mut [i16], v_row: &mut [i16], line: &[u8]) {
    let (pixels, _) = line.as_chunks::<3>();
    for (((y, u), v), &[b, g, r]) in y_row
        .iter_mut()
        .zip(u_row.iter_mut())
        .zip(v_row.iter_mut())
        .zip(pixels)
    {
        *y = luma(r, g, b);
        *u = cb(r, g, b);
        *v = cr(r, g, b);
    }
}

/// The rounded mean of each 2x2 block of two rows of samples (an odd last
/// column has none).
fn mean4_rows(out: &mut [u8], a: &[i16], b: &[i16]) {
    let (a, _) = a.as_chunks::<2>();
    let (b, _) = b.as_chunks::<2>();
    for (o, (&[a0, a1], &[b0, b1])) in out.iter_mut().zip(a.iter().zip(b)) {
        // Four samples of 16..=240: the sum fits an i16 and the mean a u8.
        *o = u8::try_from((a0 + a1 + b0 + b1 + 2) >> 2).unwrap_or(u8::MAX);
    }
}

// The per-pixel arithmetic is `rgb_to_yuv`'s, in 16-bit lanes (8 to a
// vector instead of 4): every product and partial sum fits them, so each
// result is exact; the test checks all 2^24 colours against `rgb_to_yuv`.

/// [`rgb_to_yuv`]'s luma, `((66R + 129G + 25B + 128) >> 8) + 16`. The sum
/// is at most 56228, within a `u16`; the result is 16..=235, so the clamp
/// `rgb_to_yuv` has never acts and is left out.
fn luma(r: u8, g: u8, b: u8) -> u8 {
    let y = (66 * u16::from(r) + 129 * u16::from(g) + 25 * u16::from(b) + 128) >> 8;
    u8::try_from(y + 16).unwrap_or(u8::MAX)
}

/// [`rgb_to_yuv`]'s `U`, `((-38R - 74G + 112B + 128) >> 8) + 128`: every
/// partial sum is within -28560..=28688, an `i16`; the result is 16..=240,
/// never clamped.
fn cb(r: u8, g: u8, b: u8) -> i16 {
    ((-38 * i16::from(r) - 74 * i16::from(g) + 112 * i16::from(b) + 128) >> 8) + 128
}

/// [`rgb_to_yuv`]'s `V`, `((112R - 94G - 18B + 128) >> 8) + 128`: every
/// partial sum is within -28560..=28688, an `i16`; the result is 16..=240,
/// never clamped.
fn cr(r: u8, g: u8, b: u8) -> i16 {
    ((112 * i16::from(r) - 94 * i16::from(g) - 18 * i16::from(b) + 128) >> 8) + 128
}

/// The low byte of a `u16`.
fn low_byte(x: u16) -> u8 {
    u8::try_from(x & 0xff).unwrap_or(u8::MAX)
}

/// The high byte of a `u16`.
fn high_byte(x: u16) -> u8 {
    u8::try_from(x >> 8).unwrap_or(u8::MAX)
}

/// The rounded-up mean of two samples.
fn avg2(a: u8, b: u8) -> u8 {
    u8::try_from((u16::from(a) + u16::from(b) + 1) >> 1).unwrap_or(u8::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use avscap::portable::image::{self, Rgb};

    /// The reference's averages, as they were.
    fn avg2(a: u8, b: u8) -> u8 {
        u8::try_from((u16::from(a) + u16::from(b)).div_ceil(2)).unwrap_or(u8::MAX)
    }

    fn avg4(v: [u8; 4]) -> u8 {
        u8::try_from((v.iter().map(|&x| u16::from(x)).sum::<u16>() + 2) / 4).unwrap_or(u8::MAX)
    }

    /// The conversion as it was before it was rewritten for speed (kept
    /// verbatim as the reference the rewrite must match byte for byte).
    fn reference_convert(planes: &mut Planes, layout: &FrameLayout, frame: &[u8], stride: usize) {
        let (w, h) = (layout.width() as usize, layout.height() as usize);
        let cw = w / 2;
        match layout.pixel() {
            PixelFormat::Nv12 => {
                for row in 0..h {
                    planes.y[row * w..(row + 1) * w]
                        .copy_from_slice(&frame[row * stride..row * stride + w]);
                }
                let chroma = &frame[stride * h..];
                for row in 0..h / 2 {
                    for col in 0..cw {
                        planes.u[row * cw + col] = chroma[row * stride + 2 * col];
                        planes.v[row * cw + col] = chroma[row * stride + 2 * col + 1];
                    }
                }
            }
            PixelFormat::Yuy2 => {
                for row in 0..h {
                    let line = &frame[row * stride..];
                    for col in 0..w {
                        planes.y[row * w + col] = line[2 * col];
                    }
                }
                for row in 0..h / 2 {
                    let (a, b) = (&frame[2 * row * stride..], &frame[(2 * row + 1) * stride..]);
                    for col in 0..cw {
                        planes.u[row * cw + col] = avg2(a[4 * col + 1], b[4 * col + 1]);
                        planes.v[row * cw + col] = avg2(a[4 * col + 3], b[4 * col + 3]);
                    }
                }
            }
            PixelFormat::Rgb24 => {
                let pixel = |x: usize, y: usize| {
                    let p = (h - 1 - y) * stride + 3 * x;
                    image::rgb_to_yuv(Rgb {
                        r: frame[p + 2],
                        g: frame[p + 1],
                        b: frame[p],
                    })
                };
                for y in 0..h {
                    for x in 0..w {
                        planes.y[y * w + x] = pixel(x, y).y;
                    }
                }
                for y in 0..h / 2 {
                    for x in 0..cw {
                        let q = [
                            pixel(2 * x, 2 * y),
                            pixel(2 * x + 1, 2 * y),
                            pixel(2 * x, 2 * y + 1),
                            pixel(2 * x + 1, 2 * y + 1),
                        ];
                        planes.u[y * cw + x] = avg4(q.map(|c| c.u));
                        planes.v[y * cw + x] = avg4(q.map(|c| c.v));
                    }
                }
            }
        }
    }

    /// The per-pixel arithmetic without the clamp is `rgb_to_yuv`'s for
    /// every colour (so the clamp it leaves out never acts).
    #[test]
    fn pixel_arithmetic_matches_rgb_to_yuv_for_every_colour() {
        for r in 0..=255 {
            for g in 0..=255 {
                for b in 0..=255 {
                    let want = image::rgb_to_yuv(Rgb { r, g, b });
                    assert_eq!(luma(r, g, b), want.y, "Y of {r} {g} {b}");
                    assert_eq!(cb(r, g, b), i16::from(want.u), "U of {r} {g} {b}");
                    assert_eq!(cr(r, g, b), i16::from(want.v), "V of {r} {g} {b}");
                }
            }
        }
    }

    /// Deterministic bytes covering every value (xorshift64).
    fn noise(len: usize, seed: u64) -> Vec<u8> {
        let mut s = seed | 1;
        (0..len)
            .map(|_| {
                s ^= s << 13;
                s ^= s >> 7;
                s ^= s << 17;
                s.to_le_bytes()[0]
            })
            .collect()
    }

    /// Rows a frame of `layout` spans (NV12: luma and chroma rows).
    fn rows(layout: &FrameLayout) -> usize {
        let h = layout.height() as usize;
        match layout.pixel() {
            PixelFormat::Nv12 => h + h / 2,
            PixelFormat::Yuy2 | PixelFormat::Rgb24 => h,
        }
    }

    /// Bytes of one row's pixels (what the conversion reads of a row).
    fn row_bytes(layout: &FrameLayout) -> usize {
        let w = layout.width() as usize;
        match layout.pixel() {
            PixelFormat::Nv12 => w,
            PixelFormat::Yuy2 => 2 * w,
            PixelFormat::Rgb24 => 3 * w,
        }
    }

    fn check(layout: &FrameLayout, frame: &[u8], stride: usize) {
        // Both start from the same stale bytes (a frame converted before):
        // what one overwrites, the other must too (at odd sizes the
        // reference leaves the planes' tails alone).
        let mut want = Planes::new(layout);
        want.y = noise(want.y.len(), 1);
        want.u = noise(want.u.len(), 2);
        want.v = noise(want.v.len(), 3);
        let mut got = Planes::new(layout);
        got.y.clone_from(&want.y);
        got.u.clone_from(&want.u);
        got.v.clone_from(&want.v);
        reference_convert(&mut want, layout, frame, stride);
        got.convert(layout, frame, stride);
        let what = format!(
            "{} {}x{} stride {stride} len {}",
            layout.pixel().name(),
            layout.width(),
            layout.height(),
            frame.len()
        );
        assert!(got.y == want.y, "Y differs: {what}");
        assert!(got.u == want.u, "U differs: {what}");
        assert!(got.v == want.v, "V differs: {what}");
    }

    /// Every format, even and (where the format allows) odd sizes, packed
    /// and wider strides, whole last rows and a last row cut to its pixels;
    /// noise and synthesized pictures.
    #[test]
    fn convert_matches_the_reference() {
        let sizes = [
            (2, 2),
            (4, 2),
            (6, 4),
            (18, 6),
            (34, 10),
            (64, 48),
            (66, 50),
            (320, 240),
            (642, 482),
            (3, 3),
            (5, 2),
            (2, 3),
            (33, 17),
            (321, 241),
        ];
        let mut checked = 0;
        for pixel in PixelFormat::ALL {
            for (w, h) in sizes {
                let Ok(layout) = FrameLayout::new(pixel, w, h) else {
                    continue;
                };
                let packed = layout.stride() as usize;
                for stride in [packed, packed + 1, packed + 4, packed + 64, 2 * packed + 3] {
                    let full = rows(&layout) * stride;
                    let cut = full - stride + row_bytes(&layout);
                    for len in [full, cut] {
                        let seed = u64::from(w * 7919 + h * 104_729) + stride as u64;
                        check(&layout, &noise(len, seed), stride);
                        checked += 1;
                    }
                    if stride == packed {
                        let mut frame = vec![0u8; full];
                        let overlay = image::Overlay {
                            stream_time_100ns: 12_345_678,
                            frame_number: 42,
                            dropped: 3,
                            path: image::DeliveryPath::Copied,
                        };
                        if image::synthesize(&mut frame, &layout, layout.stride(), &overlay).is_ok()
                        {
                            check(&layout, &frame, stride);
                        }
                    }
                }
            }
        }
        assert!(checked > 200, "only {checked} cases");
    }
}
