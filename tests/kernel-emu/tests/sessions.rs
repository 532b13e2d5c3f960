//! Full capture sessions of the real avscap.sys on both allocator paths,
//! every frame checked against the host core byte for byte; starvation,
//! stops in flight, Close without a stop, format changes and teardown.

mod common;

use avscap::portable::framing::{PinFraming, DEFAULT_PIN_FRAMES};
use avscap::portable::stream_memory::STAGING_SLOTS;
use avscap::portable::video_format::PixelFormat;
use avscap_kernel_emu::ks::{state, CLOCK_OFFSET};
use avscap_kernel_emu::{oracle, Config};
use common::{
    big_copies, check_frames, clones, configs, format, ok, queued, Path, Stream, DATADISCONTINUITY,
};

const FRAMES: usize = 100;

/// One full session: PAUSE with frames queued, RUN, 100 frames delivered
/// and checked, zero-copy measured, then a clean teardown.
fn session(pixel: PixelFormat, path: Path) {
    for config in configs() {
        let f = format(pixel, 320, 240);
        let mut s = Stream::open(config, f, path);
        s.set_state(state::PAUSE);
        for _ in 0..4 {
            assert!(s.queue_one());
        }
        let image = s.image_size();
        let copies_before = big_copies(&s.d, image);
        let run_time = s.d.uc.get_data().now;
        s.set_state(state::RUN);
        let frames = s.stream(FRAMES, 4);
        assert!(frames.len() >= FRAMES);
        let first_time = run_time + if config.clock { CLOCK_OFFSET } else { 0 };
        check_frames(&f, &frames, 1, Some(first_time));
        let copies = big_copies(&s.d, image) - copies_before;
        let user_frames = frames
            .iter()
            .filter(|c| c.origin == avscap_kernel_emu::ks::Origin::User)
            .count();
        match path {
            Path::Kernel => assert_eq!(
                copies, 0,
                "{config:?}: image-sized copies on the kernel path"
            ),
            Path::User => assert_eq!(
                copies,
                frames.len(),
                "{config:?}: one image copy per user frame"
            ),
            Path::Mixed => {
                assert_eq!(
                    copies, user_frames,
                    "{config:?}: one copy per user frame only"
                );
                assert!(user_frames > 0 && user_frames < frames.len());
            }
        }
        if config.clock {
            assert!(s.d.uc.get_data().ks.clock.get_time_calls >= frames.len() as u64);
        }
        let leaks = s.teardown();
        assert!(leaks.is_empty(), "{config:?} {path:?}: {leaks:#?}");
    }
}

#[test]
fn yuy2_user_path() {
    session(PixelFormat::Yuy2, Path::User);
}

#[test]
fn yuy2_kernel_path() {
    session(PixelFormat::Yuy2, Path::Kernel);
}

#[test]
fn nv12_user_path() {
    session(PixelFormat::Nv12, Path::User);
}

#[test]
fn nv12_kernel_path() {
    session(PixelFormat::Nv12, Path::Kernel);
}

#[test]
fn rgb24_user_path() {
    session(PixelFormat::Rgb24, Path::User);
}

#[test]
fn rgb24_kernel_path() {
    session(PixelFormat::Rgb24, Path::Kernel);
}

#[test]
fn mixed_queue() {
    session(PixelFormat::Yuy2, Path::Mixed);
    session(PixelFormat::Nv12, Path::Mixed);
}

/// RUN with nothing queued: every interval drops a frame; the property and
/// the next frame's `KS_FRAME_INFO` report the drops, and that frame carries
/// DATADISCONTINUITY (the ones after it do not).
#[test]
fn starvation_reports_drops_and_a_discontinuity() {
    for path in [Path::User, Path::Kernel] {
        let f = format(PixelFormat::Yuy2, 320, 240);
        let mut s = Stream::open(Config::default(), f, path);
        s.set_state(state::RUN);
        s.advance(5 * f.frame_interval + 1);
        assert!(s.d.take_completed(s.pin).is_empty());
        let (pictures, drops, average) = ok(s.d.dropped_frames(s.pin), &s.d);
        assert_eq!(
            (pictures, drops),
            (5, 5),
            "{path:?}: five intervals, five drops"
        );
        assert_eq!(average, s.image_size());
        let frames = s.stream(6, 4);
        let first = frames[0].frame_info.unwrap();
        assert_eq!((first.picture_number, first.drop_count), (6, 5), "{path:?}");
        assert_ne!(
            frames[0].options_flags & DATADISCONTINUITY,
            0,
            "{path:?}: no discontinuity after drops"
        );
        for c in &frames[1..] {
            assert_eq!(c.options_flags & DATADISCONTINUITY, 0);
            assert_eq!(c.frame_info.unwrap().drop_count, 5);
        }
        // The picture shows the drops too (every frame's DropCount is 5,
        // checked above), as the host core draws them.
        for c in &frames {
            if let Err(e) = common::image_check(&f, c) {
                panic!("{path:?}: {e}");
            }
        }
        let (pictures, drops, _) = ok(s.d.dropped_frames(s.pin), &s.d);
        assert_eq!(drops, 5);
        assert!(pictures >= 11);
        let leaks = s.teardown();
        assert!(leaks.is_empty(), "{leaks:#?}");
    }
}

/// RUN → PAUSE → ACQUIRE → STOP with frames in the hardware: PAUSE hands
/// every clone back (frames complete empty), the timer is cancelled and no
/// DPC runs afterwards; the pin then streams again from STOP.
#[test]
fn stop_in_flight_completes_everything_and_streams_again() {
    for config in configs() {
        for path in [Path::User, Path::Kernel] {
            let f = format(PixelFormat::Nv12, 320, 240);
            let mut s = Stream::open(config, f, path);
            s.set_state(state::RUN);
            for _ in 0..4 {
                assert!(s.queue_one());
            }
            s.advance(f.frame_interval / 2);
            // The user path holds as many frames as it has staging slots;
            // the kernel path writes in place and holds all four.
            let in_flight = if path == Path::User {
                STAGING_SLOTS as usize
            } else {
                4
            };
            assert_eq!(
                clones(&s.d, s.pin),
                in_flight,
                "{config:?} {path:?}: frames in the hardware"
            );
            s.set_state(state::PAUSE);
            assert_eq!(
                clones(&s.d, s.pin),
                0,
                "{config:?} {path:?}: clones left in PAUSE"
            );
            let handed_back = s.d.take_completed(s.pin);
            assert_eq!(handed_back.len(), in_flight);
            assert!(handed_back.iter().all(|c| c.data_used == 0 && !c.flushed));
            let k = s.d.uc.get_data();
            assert!(
                k.nt.timers.values().all(|t| t.due.is_none()),
                "timer still queued"
            );
            let dpc_runs: u64 = k.nt.dpcs.values().map(|d| d.runs).sum();
            s.advance(10 * f.frame_interval);
            let k = s.d.uc.get_data();
            assert_eq!(
                k.nt.dpcs.values().map(|d| d.runs).sum::<u64>(),
                dpc_runs,
                "a DPC ran after PAUSE"
            );
            for c in &handed_back {
                s.recycle(c);
            }
            s.set_state(state::STOP);
            assert_eq!(queued(&s.d, s.pin), 0);
            // Frames the hardware never took are cancelled by the STOP.
            let cancelled = s.d.take_completed(s.pin);
            assert_eq!(cancelled.len(), 4 - in_flight);
            for c in &cancelled {
                assert!(c.flushed && c.data_used == 0);
                s.recycle(c);
            }
            // And again, from STOP.
            s.set_state(state::PAUSE);
            for _ in 0..4 {
                assert!(s.queue_one());
            }
            s.set_state(state::RUN);
            let frames = s.stream(10, 4);
            check_frames(&f, &frames, 1, None);
            let leaks = s.teardown();
            assert!(leaks.is_empty(), "{config:?} {path:?}: {leaks:#?}");
        }
    }
}

/// Close straight from RUN with frames in flight: the driver's Close stops
/// the hardware; every frame completes and nothing leaks.
#[test]
fn close_without_stop() {
    for path in [Path::User, Path::Kernel] {
        let f = format(PixelFormat::Yuy2, 320, 240);
        let mut s = Stream::open(Config::default(), f, path);
        s.set_state(state::RUN);
        let _ = s.stream(3, 4);
        s.advance(f.frame_interval / 3);
        assert!(clones(&s.d, s.pin) > 0);
        ok(s.d.close_pin(s.pin), &s.d);
        assert_eq!(s.d.uc.get_data().ks.clones.len(), 0);
        let completed = s.d.take_completed(s.pin);
        assert!(!completed.is_empty());
        for c in &completed {
            s.recycle(c);
        }
        if let Some(a) = s.allocator.take() {
            ok(s.d.delete_allocator(a), &s.d);
        }
        ok(s.d.stop_device(), &s.d);
        ok(s.d.remove_device(), &s.d);
        let leaks = s.d.leaks();
        assert!(leaks.is_empty(), "{path:?}: {leaks:#?}");
    }
}

/// A format change in STOP re-edits the framing and streams the new
/// format; in RUN it is refused and nothing changes.
#[test]
fn format_change_in_stop_only() {
    let yuy2 = format(PixelFormat::Yuy2, 320, 240);
    let nv12 = format(PixelFormat::Nv12, 320, 240);
    let mut s = Stream::open(Config::default(), yuy2, Path::User);
    let before = ok(s.d.allocator_framing_ex(s.pin), &s.d);
    assert_eq!(
        before,
        oracle::framing_ex_bytes(&PinFraming::for_format(&yuy2, DEFAULT_PIN_FRAMES).unwrap())
    );
    assert_eq!(
        ok(s.d.change_format(s.pin, &nv12), &s.d),
        0,
        "refused in STOP"
    );
    let after = ok(s.d.allocator_framing_ex(s.pin), &s.d);
    assert_eq!(
        after,
        oracle::framing_ex_bytes(&PinFraming::for_format(&nv12, DEFAULT_PIN_FRAMES).unwrap())
    );
    s.format = nv12;
    s.set_state(state::RUN);
    let frames = s.stream(5, 4);
    check_frames(&nv12, &frames, 1, None);
    let status = ok(s.d.change_format(s.pin, &yuy2), &s.d);
    assert_eq!(
        status, 0xC000_0184,
        "a format change in RUN: STATUS_INVALID_DEVICE_STATE"
    );
    assert_eq!(
        ok(s.d.allocator_framing_ex(s.pin), &s.d),
        after,
        "the framing changed on a refused format change"
    );
    let frames = s.stream(3, 4);
    assert!(frames
        .iter()
        .all(|c| c.data_used == nv12.layout().unwrap().image_size()));
    let leaks = s.teardown();
    assert!(leaks.is_empty(), "{leaks:#?}");
}

/// Surprise removal while streaming: the stream stops (every frame the
/// hardware held completes empty, no timer or DPC stays behind) and no
/// stream may start again; Close, PnP remove and the bag cleanup then
/// leave nothing behind.
#[test]
fn surprise_removal_while_streaming() {
    for path in [Path::User, Path::Kernel] {
        let f = format(PixelFormat::Yuy2, 320, 240);
        let mut s = Stream::open(Config::default(), f, path);
        s.set_state(state::RUN);
        let _ = s.stream(3, 4);
        s.advance(f.frame_interval / 2);
        assert!(clones(&s.d, s.pin) > 0);
        ok(s.d.surprise_removal(), &s.d);
        assert_eq!(
            clones(&s.d, s.pin),
            0,
            "{path:?}: clones left after surprise removal"
        );
        assert!(s
            .d
            .uc
            .get_data()
            .nt
            .timers
            .values()
            .all(|t| t.due.is_none()));
        for c in s.d.take_completed(s.pin) {
            s.recycle(&c);
        }
        ok(s.d.set_state(s.pin, state::STOP), &s.d);
        let status = ok(s.d.step_state(s.pin, state::ACQUIRE), &s.d);
        assert_eq!(
            status, 0xC000_02B6,
            "{path:?}: a stream started after surprise removal (STATUS_DEVICE_REMOVED expected)"
        );
        for c in s.d.take_completed(s.pin) {
            s.recycle(&c);
        }
        ok(s.d.close_pin(s.pin), &s.d);
        if let Some(a) = s.allocator.take() {
            ok(s.d.delete_allocator(a), &s.d);
        }
        ok(s.d.remove_device(), &s.d);
        let leaks = s.d.leaks();
        assert!(leaks.is_empty(), "{path:?}: {leaks:#?}");
    }
}
