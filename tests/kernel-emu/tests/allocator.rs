//! The pin's KS allocator callbacks, called as AVStream calls them
//! (`InitializeAllocator` / `DeleteAllocator` at PASSIVE_LEVEL, `Allocate`
//! / `Free` at DISPATCH_LEVEL) on a created pin, in both DMA configurations.

mod common;

use avscap::portable::framing::{OPTIONF_SYSTEM_MEMORY, PAGE_ALIGNMENT_MASK};
use avscap::portable::video_format::PixelFormat;
use avscap_kernel_emu::session::LegacyFraming;
use avscap_kernel_emu::Config;
use common::{configs, format, ok, Path, Stream};

const STATUS_INVALID_PARAMETER: u32 = 0xC000_000D;

/// The live buffers the driver holds (common buffers or contiguous
/// blocks): (address, bytes).
fn buffers(s: &Stream) -> Vec<(u64, u64)> {
    let nt = &s.d.uc.get_data().nt;
    let mut out: Vec<(u64, u64)> = nt
        .common_buffers
        .values()
        .map(|b| (b.va, u64::from(b.len)))
        .collect();
    out.extend(nt.contiguous.iter().map(|(va, (bytes, _))| (*va, *bytes)));
    out
}

fn pin_framing(s: &Stream) -> LegacyFraming {
    LegacyFraming::from_ex(&ok(s.d.allocator_framing_ex(s.pin), &s.d))
}

/// A good framing is served: distinct, aligned, non-overlapping frames
/// inside the one buffer it allocated, then NULL.
#[test]
fn frames_are_distinct_aligned_and_inside_the_buffer() {
    for config in configs() {
        let mut s = Stream::open(config, format(PixelFormat::Yuy2, 320, 240), Path::User);
        assert!(
            buffers(&s).is_empty(),
            "no memory before an allocator exists"
        );
        let framing = pin_framing(&s);
        let a =
            ok(s.d.create_allocator(s.pin, &framing), &s.d).expect("a good framing is accepted");
        let live = buffers(&s);
        assert_eq!(live.len(), 1, "{config:?}: one buffer per allocator");
        let (base, len) = live[0];
        let mut frames = Vec::new();
        for _ in 0..framing.frames {
            let f = ok(s.d.allocate(a), &s.d);
            assert_ne!(f, 0);
            frames.push(f);
        }
        assert_eq!(
            ok(s.d.allocate(a), &s.d),
            0,
            "more frames than the framing asked for"
        );
        frames.sort_unstable();
        for w in frames.windows(2) {
            assert!(
                w[1] - w[0] >= u64::from(framing.frame_size),
                "overlapping frames {w:x?}"
            );
        }
        for f in &frames {
            assert_eq!(
                f & u64::from(PAGE_ALIGNMENT_MASK.max(framing.file_alignment)),
                0,
                "frame {f:#x} misaligned"
            );
            assert!(
                *f >= base && f + u64::from(framing.frame_size) <= base + len,
                "frame {f:#x} outside the buffer"
            );
        }
        for f in &frames {
            ok(s.d.free(a, *f), &s.d);
        }
        ok(s.d.delete_allocator(a), &s.d);
        s.allocator = None;
        assert!(
            buffers(&s).is_empty(),
            "{config:?}: DeleteAllocator with every frame back frees the buffer"
        );
        let leaks = s.teardown();
        assert!(leaks.is_empty(), "{leaks:#?}");
    }
}

/// Bad framings are refused with a failure status, and leave nothing.
#[test]
fn bad_framings_are_refused() {
    let mut s = Stream::open(
        Config::default(),
        format(PixelFormat::Yuy2, 320, 240),
        Path::User,
    );
    let good = pin_framing(&s);
    let image = s.image_size();
    let cases = [
        (
            "frame below the image",
            LegacyFraming {
                frame_size: image - 1,
                ..good
            },
        ),
        (
            "absurd frame count",
            LegacyFraming {
                frames: 100_000,
                ..good
            },
        ),
        ("65 frames", LegacyFraming { frames: 65, ..good }),
        (
            "absurd frame size",
            LegacyFraming {
                frame_size: u32::MAX,
                ..good
            },
        ),
        (
            "FileAlignment not 2^k-1",
            LegacyFraming {
                file_alignment: 5,
                ..good
            },
        ),
        (
            "unknown option bit",
            LegacyFraming {
                options_flags: OPTIONF_SYSTEM_MEMORY | 0x0001_0000,
                ..good
            },
        ),
    ];
    for (what, framing) in cases {
        let status = ok(s.d.create_allocator(s.pin, &framing), &s.d)
            .map(|_| ())
            .expect_err(what);
        assert!(
            status & 0xC000_0000 == 0xC000_0000,
            "{what}: {status:#x} is not a failure status"
        );
        assert!(buffers(&s).is_empty(), "{what}: memory left behind");
    }
    let status = ok(
        s.d.create_allocator(
            s.pin,
            &LegacyFraming {
                options_flags: 0x0100_0000,
                ..good
            },
        ),
        &s.d,
    )
    .map(|_| ())
    .unwrap_err();
    assert_eq!(status, STATUS_INVALID_PARAMETER);
    let leaks = s.teardown();
    assert!(leaks.is_empty(), "{leaks:#?}");
}

/// Frames 0 and `FrameSize` 0 mean "no requirement" (`KSALLOCATOR_FRAMING`):
/// the driver documents that it serves them with 4 frames of the image size.
#[test]
fn zero_frames_and_zero_size_are_served() {
    let mut s = Stream::open(
        Config::default(),
        format(PixelFormat::Nv12, 320, 240),
        Path::User,
    );
    let framing = LegacyFraming {
        frames: 0,
        frame_size: 0,
        ..pin_framing(&s)
    };
    let a = ok(s.d.create_allocator(s.pin, &framing), &s.d).expect("served");
    let mut frames = Vec::new();
    while let Some(f) = Some(ok(s.d.allocate(a), &s.d)).filter(|f| *f != 0) {
        frames.push(f);
    }
    assert_eq!(frames.len(), 4);
    frames.sort_unstable();
    for w in frames.windows(2) {
        assert!(
            w[1] - w[0] >= u64::from(s.image_size()),
            "frames smaller than the image"
        );
    }
    for f in frames {
        ok(s.d.free(a, f), &s.d);
    }
    s.allocator = Some(a);
    let leaks = s.teardown();
    assert!(leaks.is_empty(), "{leaks:#?}");
}

/// A foreign, an interior and a doubled Free change nothing.
#[test]
fn bad_frees_change_nothing() {
    let mut s = Stream::open(
        Config::default(),
        format(PixelFormat::Yuy2, 320, 240),
        Path::User,
    );
    let framing = pin_framing(&s);
    let a = ok(s.d.create_allocator(s.pin, &framing), &s.d).unwrap();
    let frames: Vec<u64> = (0..framing.frames)
        .map(|_| ok(s.d.allocate(a), &s.d))
        .collect();
    let foreign = s.d.uc.get_data().ks.device;
    ok(s.d.free(a, foreign), &s.d);
    ok(s.d.free(a, frames[1] + 16), &s.d);
    ok(s.d.free(a, 0), &s.d);
    assert_eq!(
        ok(s.d.allocate(a), &s.d),
        0,
        "a foreign or interior Free made a frame available"
    );
    ok(s.d.free(a, frames[2]), &s.d);
    ok(s.d.free(a, frames[2]), &s.d);
    assert_eq!(ok(s.d.allocate(a), &s.d), frames[2]);
    assert_eq!(
        ok(s.d.allocate(a), &s.d),
        0,
        "a doubled Free made a second frame available"
    );
    assert!(
        s.d.log().contains("refused"),
        "refusals are reported: {}",
        s.d.log()
    );
    for f in frames {
        ok(s.d.free(a, f), &s.d);
    }
    s.allocator = Some(a);
    let leaks = s.teardown();
    assert!(leaks.is_empty(), "{leaks:#?}");
}

/// `DeleteAllocator` with frames still out keeps the buffer (nobody can give
/// them back) until PnP stop, which frees it before the adapter goes back;
/// a second allocator after the first works.
#[test]
fn delete_with_frames_out_then_a_second_allocator() {
    for config in configs() {
        let mut s = Stream::open(config, format(PixelFormat::Yuy2, 320, 240), Path::User);
        let framing = pin_framing(&s);
        let a = ok(s.d.create_allocator(s.pin, &framing), &s.d).unwrap();
        let out = ok(s.d.allocate(a), &s.d);
        assert_ne!(out, 0);
        ok(s.d.delete_allocator(a), &s.d);
        assert_eq!(
            buffers(&s).len(),
            1,
            "{config:?}: the buffer went while a frame was out"
        );
        assert!(s.d.log().contains("frames still out"));
        let b = ok(s.d.create_allocator(s.pin, &framing), &s.d).expect("a second allocator");
        assert_eq!(buffers(&s).len(), 2);
        let f = ok(s.d.allocate(b), &s.d);
        assert_ne!(f, 0);
        assert_ne!(f, out);
        ok(s.d.free(b, f), &s.d);
        ok(s.d.delete_allocator(b), &s.d);
        assert_eq!(buffers(&s).len(), 1);
        ok(s.d.close_pin(s.pin), &s.d);
        ok(s.d.stop_device(), &s.d);
        assert!(
            buffers(&s).is_empty(),
            "{config:?}: PnP stop frees the parked buffer"
        );
        let nt = &s.d.uc.get_data().nt;
        assert!(
            nt.adapters.values().all(|a| a.put),
            "adapter not put back at stop"
        );
        ok(s.d.remove_device(), &s.d);
        let leaks = s.d.leaks();
        assert!(leaks.is_empty(), "{leaks:#?}");
    }
}
