//! The capture engine as the driver runs it: frames routed through the pool,
//! ticks at the frame interval, drops under starvation, and stop.

use avscap::portable::capture_engine::{
    route_frame, CaptureEngine, ClientBuffer, Completion, DmaTarget, Target, Tick,
    OPTIONSF_DATADISCONTINUITY, OPTIONSF_DURATIONVALID, OPTIONSF_TIMEVALID,
};
use avscap::portable::frame_pool::{FramePool, Region};
use avscap::portable::framing::{plan, Alignment};
use avscap::portable::video_format::{default_format, DATA_RANGES};
use proptest::prelude::*;

const IMAGE: u32 = 460_800;

/// A foreign client frame (its address plays no part in these tests).
const CLIENT: ClientBuffer = ClientBuffer {
    address: 0x7000_0000,
    extent: IMAGE,
    surface_pitch: 0,
};

/// One interval as the driver runs it: the DPC's tick marks the oldest
/// target due, the delivery work item takes it.
fn deliver<C, const D: usize>(engine: &mut CaptureEngine<C, D>, now: i64) -> Option<Completion<C>> {
    match engine.tick(now) {
        Tick::Due { picture_number } => {
            let c = engine.take_due().expect("a due frame");
            assert_eq!(c.picture_number, picture_number);
            Some(c)
        }
        _ => None,
    }
}

fn pools() -> (FramePool, FramePool) {
    let region = Region {
        virtual_base: 0x100_0000,
        logical_base: 0x2000_0000,
        len: 8 << 20,
    };
    let own = region.sub_region(0, 4 << 20).unwrap();
    let stage = region.sub_region(4 << 20, 4 << 20).unwrap();
    (
        FramePool::with_plan(plan(4, IMAGE, Alignment::PAGE, &own).unwrap()),
        FramePool::with_plan(plan(2, IMAGE, Alignment::PAGE, &stage).unwrap()),
    )
}

#[test]
fn targets_always_available_means_no_drops_and_evenly_spaced_times() {
    for format in DATA_RANGES.iter().step_by(7) {
        let interval = format.frame_interval;
        let image = format.layout().unwrap().image_size();
        let mut engine = CaptureEngine::<u32, 4>::new(interval, image).unwrap();
        let start = 123_456_789;
        engine.run(start);
        let mut last: Option<i64> = None;
        for n in 1..=300u32 {
            engine
                .submit(Target {
                    cookie: n,
                    dma: DmaTarget::Staging(dummy_frame()),
                    client: CLIENT,
                })
                .unwrap();
            let due = engine.next_due().unwrap();
            assert_eq!(due, start + i64::from(n) * interval);
            let Some(c) = deliver(&mut engine, due) else {
                panic!("frame {n} dropped")
            };
            assert_eq!(c.target.cookie, n);
            assert_eq!(c.picture_number, u64::from(n));
            assert_eq!(c.drop_count, 0);
            assert_eq!(c.duration, interval);
            assert_eq!(c.data_used, image);
            assert_eq!(c.options_flags, OPTIONSF_TIMEVALID | OPTIONSF_DURATIONVALID);
            if let Some(prev) = last {
                assert!(c.presentation_time > prev);
                assert_eq!(c.presentation_time - prev, interval);
            }
            last = Some(c.presentation_time);
        }
        assert_eq!(engine.stats().dropped, 0);
        assert_eq!(engine.stats().delivered, 300);
    }
}

const fn dummy_frame() -> avscap::portable::frame_pool::Frame {
    avscap::portable::frame_pool::Frame {
        virtual_address: 0x1000,
        logical_address: 0x1000,
        index: 0,
        len: u32::MAX,
    }
}

#[test]
fn starvation_counts_drops_and_flags_the_next_frame() {
    let mut engine = CaptureEngine::<u32, 2>::new(333_333, IMAGE).unwrap();
    engine.run(0);
    engine
        .submit(Target {
            cookie: 1,
            dma: DmaTarget::Staging(dummy_frame()),
            client: CLIENT,
        })
        .unwrap();
    assert!({
        let due = engine.next_due().unwrap();
        deliver(&mut engine, due)
    }
    .is_some());
    for expected in 1..=3 {
        let Tick::Dropped {
            picture_number,
            drop_count,
        } = engine.tick(engine.next_due().unwrap())
        else {
            panic!("no target was queued; the frame must drop")
        };
        assert_eq!(drop_count, expected);
        assert_eq!(picture_number, expected + 1);
    }
    engine
        .submit(Target {
            cookie: 2,
            dma: DmaTarget::Staging(dummy_frame()),
            client: CLIENT,
        })
        .unwrap();
    engine
        .submit(Target {
            cookie: 3,
            dma: DmaTarget::Staging(dummy_frame()),
            client: CLIENT,
        })
        .unwrap();
    let c = {
        let due = engine.next_due().unwrap();
        deliver(&mut engine, due)
    }
    .unwrap();
    assert_eq!((c.picture_number, c.drop_count), (5, 3));
    assert_ne!(c.options_flags & OPTIONSF_DATADISCONTINUITY, 0);
    let c = {
        let due = engine.next_due().unwrap();
        deliver(&mut engine, due)
    }
    .unwrap();
    assert_eq!(
        c.options_flags & OPTIONSF_DATADISCONTINUITY,
        0,
        "only the first frame after drops"
    );
    assert_eq!(engine.stats().dropped, 3);
}

#[test]
fn stop_returns_every_target_and_the_pools_get_everything_back() {
    let (own, staging) = pools();
    let mut engine = CaptureEngine::<usize, 8>::new(333_333, IMAGE).unwrap();
    engine.run(0);
    // Two own frames (zero-copy) and two foreign ones (staging).
    let mut client = Vec::new();
    for _ in 0..2 {
        client.push(own.allocate().unwrap().virtual_address);
    }
    client.push(0x9000_0000);
    client.push(0x9100_0000);
    for &data in &client {
        let buffer = ClientBuffer {
            address: data,
            extent: IMAGE,
            surface_pitch: 0,
        };
        let dma = route_frame([&own], &staging, buffer, IMAGE).unwrap();
        engine
            .submit(Target {
                cookie: data,
                dma,
                client: buffer,
            })
            .unwrap();
    }
    assert_eq!(staging.in_use(), 2);
    // A fifth, foreign, frame finds no staging slot: Process would pend.
    let fifth = ClientBuffer {
        address: 0x9200_0000,
        extent: IMAGE,
        surface_pitch: 0,
    };
    assert!(route_frame([&own], &staging, fifth, IMAGE).is_err());
    assert!(deliver(&mut engine, 333_333).is_some());
    assert_eq!(engine.stop(), 3);
    let mut returned = 0;
    while let Some(t) = engine.take_queued() {
        returned += 1;
        if let DmaTarget::Staging(f) = t.dma {
            staging.free(f.virtual_address).unwrap();
        }
        if own.contains(t.cookie) {
            own.free(t.cookie).unwrap();
        }
    }
    assert_eq!(returned, 3);
    assert_eq!(engine.queued(), 0);
    // The delivered (first, zero-copy) frame stays with the client; the
    // rest came back, staging slots included.
    assert_eq!(staging.in_use(), 0);
    assert_eq!(own.in_use(), 1);
    assert_eq!(engine.tick(2 * 333_333), Tick::Idle);
}

#[test]
fn restart_after_stop_resets_counts() {
    let mut engine = CaptureEngine::<u32, 2>::new(333_333, IMAGE).unwrap();
    engine.run(0);
    let _ = engine.tick(333_333);
    assert_eq!(engine.stats().dropped, 1);
    engine.stop();
    engine.run(10_000_000);
    engine
        .submit(Target {
            cookie: 1,
            dma: DmaTarget::Staging(dummy_frame()),
            client: CLIENT,
        })
        .unwrap();
    let c = deliver(&mut engine, 10_333_333).unwrap();
    assert_eq!(
        (c.picture_number, c.drop_count, c.presentation_time),
        (1, 0, 10_000_000)
    );
    assert_eq!(c.options_flags & OPTIONSF_DATADISCONTINUITY, 0);
}

#[test]
fn default_format_is_offered() {
    assert!(DATA_RANGES.contains(&default_format()));
}

proptest! {
    // Miri interprets every case: a few there, proptest's default otherwise.
    #![proptest_config(ProptestConfig::with_cases(
        if cfg!(miri) { 8 } else { ProptestConfig::default().cases }
    ))]

    /// Whatever the client does (submitting 0..n frames between ticks, ticks
    /// arriving late), every picture is either delivered or dropped exactly
    /// once, times never go backwards, and the discontinuity flag appears
    /// exactly on the deliveries that follow a drop.
    #[test]
    fn every_picture_is_delivered_or_dropped_once(
        steps in proptest::collection::vec((0usize..3, 0i64..3), 1..150),
    ) {
        const I: i64 = 166_667;
        let mut engine = CaptureEngine::<u64, 3>::new(I, 1000).unwrap();
        engine.run(0);
        let mut next_cookie = 0u64;
        let mut submitted = 0u64;
        let mut delivered = Vec::new();
        let mut last_picture = 0;
        let mut last_time = i64::MIN;
        let mut dropped_since_delivery = false;
        for (submit, late) in steps {
            for _ in 0..submit {
                if engine.submit(Target { cookie: next_cookie, dma: DmaTarget::Staging(dummy_frame()), client: CLIENT }).is_ok() {
                    next_cookie += 1;
                    submitted += 1;
                }
            }
            let now = engine.next_due().unwrap() + late * I;
            match engine.tick(now) {
                Tick::Due { .. } => {
                    let c = engine.take_due().unwrap();
                    prop_assert!(c.picture_number > last_picture);
                    if c.picture_number > last_picture + 1 { dropped_since_delivery = true; }
                    prop_assert!(c.presentation_time > last_time);
                    prop_assert_eq!(c.options_flags & OPTIONSF_DATADISCONTINUITY != 0, dropped_since_delivery);
                    prop_assert_eq!(c.picture_number, engine.stats().delivered + c.drop_count);
                    dropped_since_delivery = false;
                    last_picture = c.picture_number;
                    last_time = c.presentation_time;
                    delivered.push(c.target.cookie);
                }
                Tick::Dropped { picture_number, .. } => {
                    prop_assert!(picture_number > last_picture);
                    last_picture = picture_number;
                    dropped_since_delivery = true;
                }
                Tick::Idle => prop_assert!(false, "engine stopped by itself"),
            }
        }
        let stats = engine.stats();
        prop_assert_eq!(stats.delivered + stats.dropped, last_picture);
        // FIFO and nothing lost: delivered cookies are 0..k in order, and the
        // rest come back on stop.
        prop_assert!(delivered.iter().copied().eq(0..delivered.len() as u64));
        engine.stop();
        let mut back = 0;
        while engine.take_queued().is_some() { back += 1; }
        prop_assert_eq!(delivered.len() as u64 + back, submitted);
    }
}
