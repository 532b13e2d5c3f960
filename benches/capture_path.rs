//! Benchmarks of the per-frame work the timer DPC and the allocator do.
#![allow(missing_docs)]

use avscap::portable::capture_engine::{CaptureEngine, ClientBuffer, DmaTarget, Target, Tick};
use avscap::portable::frame_pool::{FramePool, Region};
use avscap::portable::framing::{plan, PAGE_SIZE};
use avscap::portable::image::{synthesize, DeliveryPath, Overlay};
use avscap::portable::video_format::{FrameLayout, PixelFormat};
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use std::hint::black_box;

fn synthesis(c: &mut Criterion) {
    let mut group = c.benchmark_group("synthesize_1080p");
    for pixel in PixelFormat::ALL {
        let layout = FrameLayout::new(pixel, 1920, 1080).unwrap();
        let mut frame = vec![0u8; layout.image_size as usize];
        let overlay = Overlay {
            stream_time_100ns: 123_456_789,
            frame_number: 4242,
            dropped: 7,
            path: DeliveryPath::Copied,
        };
        group.throughput(Throughput::Bytes(u64::from(layout.image_size)));
        group.bench_with_input(
            BenchmarkId::from_parameter(pixel.name()),
            &layout,
            |b, layout| {
                b.iter(|| {
                    synthesize(black_box(&mut frame), layout, layout.stride, &overlay).unwrap()
                });
            },
        );
    }
    group.finish();
}

fn pool(c: &mut Criterion) {
    let region = Region {
        virtual_base: 0x100_0000,
        logical_base: 0x100_0000,
        len: 64 * 4096,
    };
    let pool = FramePool::with_plan(region, plan(64, 4096, PAGE_SIZE, &region).unwrap());
    for _ in 0..63 {
        pool.allocate().unwrap();
    }
    // The worst case for the bitmap search: only the last slot is free.
    c.bench_function("pool_allocate_free_last_slot", |b| {
        b.iter(|| {
            let f = pool.allocate().unwrap();
            pool.free(black_box(f.virtual_address)).unwrap();
        });
    });
}

fn engine(c: &mut Criterion) {
    let frame = avscap::portable::frame_pool::Frame {
        virtual_address: 0,
        logical_address: 0,
        index: 0,
        len: 0,
    };
    let mut engine = CaptureEngine::<u32, 8>::new(333_333, 1000).unwrap();
    engine.run(0);
    c.bench_function("engine_submit_tick", |b| {
        b.iter(|| {
            engine
                .submit(Target {
                    cookie: 1,
                    dma: DmaTarget::Direct(frame),
                    client: ClientBuffer {
                        address: 0,
                        extent: 1000,
                        surface_pitch: 0,
                    },
                })
                .unwrap();
            let due = engine.next_due().unwrap();
            assert!(matches!(black_box(engine.tick(due)), Tick::Due { .. }));
            assert!(black_box(engine.take_due()).is_some());
        });
    });
}

criterion_group!(benches, synthesis, pool, engine);
criterion_main!(benches);
