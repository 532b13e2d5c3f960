//! The simulator's y4m conversion: a synthesized frame (NV12, YUY2 or
//! bottom-up RGB24, at any stride) into the planar 4:2:0 Y/U/V planes a
//! YUV4MPEG2 frame holds.
//!
//! Depends on nothing of the simulator, only on avscap's public API, so a
//! bench can include it with
//! `#[path = "../examples/simulate/planes.rs"] mod planes;`.

use avscap::portable::image::{self, Rgb};
use avscap::portable::video_format::{FrameLayout, PixelFormat};

/// A 4:2:0 planar frame (the y4m payload).
pub struct Planes {
    /// Luma, `width * height` bytes.
    pub y: Vec<u8>,
    /// Cb, `width * height / 4` bytes.
    pub u: Vec<u8>,
    /// Cr, `width * height / 4` bytes.
    pub v: Vec<u8>,
}

impl Planes {
    /// Planes for a frame of `layout`'s size.
    #[must_use]
    pub fn new(layout: &FrameLayout) -> Self {
        let (w, h) = (layout.width as usize, layout.height as usize);
        Planes {
            y: vec![0; w * h],
            u: vec![0; w * h / 4],
            v: vec![0; w * h / 4],
        }
    }

    /// Converts a frame of any supported format into 4:2:0 planes
    /// (chroma of packed formats averaged over each 2x2 block).
    /// `stride`: bytes from one row to the next in `frame` (the format's
    /// stride, or the client's surface pitch); NV12's chroma rows follow its
    /// luma rows at the same stride.
    pub fn convert(&mut self, layout: &FrameLayout, frame: &[u8], stride: usize) {
        let (w, h) = (layout.width as usize, layout.height as usize);
        let cw = w / 2;
        match layout.pixel {
            PixelFormat::Nv12 => {
                for row in 0..h {
                    self.y[row * w..(row + 1) * w]
                        .copy_from_slice(&frame[row * stride..row * stride + w]);
                }
                let chroma = &frame[stride * h..];
                for row in 0..h / 2 {
                    for col in 0..cw {
                        self.u[row * cw + col] = chroma[row * stride + 2 * col];
                        self.v[row * cw + col] = chroma[row * stride + 2 * col + 1];
                    }
                }
            }
            PixelFormat::Yuy2 => {
                for row in 0..h {
                    let line = &frame[row * stride..];
                    for col in 0..w {
                        self.y[row * w + col] = line[2 * col];
                    }
                }
                for row in 0..h / 2 {
                    let (a, b) = (&frame[2 * row * stride..], &frame[(2 * row + 1) * stride..]);
                    for col in 0..cw {
                        self.u[row * cw + col] = avg2(a[4 * col + 1], b[4 * col + 1]);
                        self.v[row * cw + col] = avg2(a[4 * col + 3], b[4 * col + 3]);
                    }
                }
            }
            PixelFormat::Rgb24 => {
                let pixel = |x: usize, y: usize| {
                    // Bottom-up DIB: image row y is memory row h-1-y.
                    let p = (h - 1 - y) * stride + 3 * x;
                    image::rgb_to_yuv(Rgb {
                        r: frame[p + 2],
                        g: frame[p + 1],
                        b: frame[p],
                    })
                };
                for y in 0..h {
                    for x in 0..w {
                        self.y[y * w + x] = pixel(x, y).y;
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
                        self.u[y * cw + x] = avg4(q.map(|c| c.u));
                        self.v[y * cw + x] = avg4(q.map(|c| c.v));
                    }
                }
            }
        }
    }
}

fn avg2(a: u8, b: u8) -> u8 {
    u8::try_from((u16::from(a) + u16::from(b)).div_ceil(2)).unwrap_or(u8::MAX)
}

fn avg4(v: [u8; 4]) -> u8 {
    u8::try_from((v.iter().map(|&x| u16::from(x)).sum::<u16>() + 2) / 4).unwrap_or(u8::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The conversion as it was before it was rewritten for speed (kept
    /// verbatim as the reference the rewrite must match byte for byte).
    fn reference_convert(planes: &mut Planes, layout: &FrameLayout, frame: &[u8], stride: usize) {
        let (w, h) = (layout.width as usize, layout.height as usize);
        let cw = w / 2;
        match layout.pixel {
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
        let h = layout.height as usize;
        match layout.pixel {
            PixelFormat::Nv12 => h + h / 2,
            PixelFormat::Yuy2 | PixelFormat::Rgb24 => h,
        }
    }

    /// Bytes of one row's pixels (what the conversion reads of a row).
    fn row_bytes(layout: &FrameLayout) -> usize {
        let w = layout.width as usize;
        match layout.pixel {
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
        let mut got = Planes {
            y: want.y.clone(),
            u: want.u.clone(),
            v: want.v.clone(),
        };
        reference_convert(&mut want, layout, frame, stride);
        got.convert(layout, frame, stride);
        let what = format!(
            "{} {}x{} stride {stride} len {}",
            layout.pixel.name(),
            layout.width,
            layout.height,
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
                let packed = layout.stride as usize;
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
                        if image::synthesize(&mut frame, &layout, layout.stride, &overlay).is_ok() {
                            check(&layout, &frame, stride);
                        }
                    }
                }
            }
        }
        assert!(checked > 200, "only {checked} cases");
    }
}
