//! The KS allocator object around the pin's `KSALLOCATOR_DISPATCH`, driven
//! the ways a graph drives it: the create request and its validation, the
//! IRP interface (ALLOC pending at the frame limit, FREE completing pending
//! ALLOCs in order, inline at PASSIVE_LEVEL or from a work item), the
//! DISPATCH_LEVEL function table, the status property, the free-frame
//! event, thousands of mixed operations with an exact count, and close
//! with or without frames out.

mod common;

use avscap::portable::video_format::PixelFormat;
use avscap_kernel_emu::allocator_object::{
    self, Alloc, Completion, KSSTRING_ALLOCATOR, STATUS_CANCELLED, STATUS_INSUFFICIENT_RESOURCES,
    STATUS_INVALID_HANDLE, STATUS_INVALID_PARAMETER, STATUS_OBJECT_NAME_NOT_FOUND, STATUS_SUCCESS,
};
use avscap_kernel_emu::layout::{IRP_IO_STATUS, IRP_IO_STATUS_INFORMATION};
use avscap_kernel_emu::machine::{irql, Mem};
use avscap_kernel_emu::nt::{self, Object};
use avscap_kernel_emu::session::LegacyFraming;
use avscap_kernel_emu::{Config, Driver};
use common::{configs, format, ok, Path, Stream};

const STATUS_NOT_SUPPORTED: u32 = 0xC000_00BB;

fn open() -> Stream {
    Stream::open(
        Config::default(),
        format(PixelFormat::Yuy2, 320, 240),
        Path::User,
    )
}

fn pin_framing(s: &Stream) -> LegacyFraming {
    LegacyFraming::from_ex(&ok(s.d.allocator_framing_ex(s.pin), &s.d))
}

/// The driver's live buffers (common buffers and contiguous blocks).
fn buffers(d: &Driver) -> usize {
    let nt = &d.uc.get_data().nt;
    nt.common_buffers.len() + nt.contiguous.len()
}

fn object(d: &Driver, h: u64) -> &allocator_object::AllocatorObject {
    d.allocator_object(h).expect("a known allocator")
}

fn allocated_frames(d: &mut Driver, h: u64) -> u32 {
    let r = d.allocator_status(h);
    ok(r, d).1
}

fn alloc_frame(d: &mut Driver, h: u64) -> u64 {
    match ok(d.alloc_irp(h), d) {
        Alloc::Frame(f) => f,
        other => panic!("ALLOC gave {other:?}, expected a frame"),
    }
}

fn alloc_pending(d: &mut Driver, h: u64) -> u64 {
    match ok(d.alloc_irp(h), d) {
        Alloc::Pending(irp) => irp,
        other => panic!("ALLOC gave {other:?}, expected STATUS_PENDING"),
    }
}

fn finish(s: Stream) {
    let leaks = s.teardown();
    assert!(leaks.is_empty(), "{leaks:#?}");
}

/// An invalid request is refused by the validation and never reaches
/// `InitializeAllocator`.
#[test]
fn invalid_create_requests_never_reach_initialize_allocator() {
    let mut s = open();
    let good = pin_framing(&s);
    let mut reserved = good.to_bytes();
    reserved[20] = 1;
    let refused: [(&str, Vec<u8>); 6] = [
        ("short buffer", good.to_bytes()[..20].to_vec()),
        (
            "FrameSize 0",
            LegacyFraming::to_bytes(&LegacyFraming {
                frame_size: 0,
                ..good
            }),
        ),
        (
            "Frames 0",
            LegacyFraming::to_bytes(&LegacyFraming { frames: 0, ..good }),
        ),
        (
            "unknown option bit",
            LegacyFraming::to_bytes(&LegacyFraming {
                options_flags: good.options_flags | 0x0001_0000,
                ..good
            }),
        ),
        (
            "PREFERENCES_ONLY is a requirement, not a create option",
            LegacyFraming::to_bytes(&LegacyFraming {
                options_flags: good.options_flags | 0x8000_0000,
                ..good
            }),
        ),
        ("Reserved not 0", reserved),
    ];
    for (what, bytes) in refused {
        let r = allocator_object::create(&mut s.d.uc, s.pin, KSSTRING_ALLOCATOR, &bytes);
        assert_eq!(ok(r, &s.d), Err(STATUS_INVALID_PARAMETER), "{what}");
    }
    let r = allocator_object::create(
        &mut s.d.uc,
        s.pin,
        "{091BB63B-603F-11D1-B067-00A0C9062802}",
        &good.to_bytes(),
    );
    assert_eq!(ok(r, &s.d), Err(STATUS_OBJECT_NAME_NOT_FOUND), "other name");
    assert_eq!(
        s.d.initialize_allocator_calls(),
        0,
        "a refused request reached the pin"
    );
    assert_eq!(buffers(&s.d), 0);

    finish(s);
}

/// A valid request whose framing the pin cannot serve reaches
/// `InitializeAllocator`, whose status fails the create and leaves nothing;
/// a good one creates the object, whose STATUS property echoes the framing.
#[test]
fn initialize_allocator_failure_fails_the_create() {
    let mut s = open();
    let good = pin_framing(&s);
    let image = s.image_size();
    let pin_refuses = [
        (
            "FileAlignment not a mask",
            LegacyFraming {
                file_alignment: 5,
                ..good
            },
            STATUS_INVALID_PARAMETER,
        ),
        (
            "frame below the image",
            LegacyFraming {
                frame_size: image - 1,
                ..good
            },
            STATUS_INVALID_PARAMETER,
        ),
        (
            "65 frames",
            LegacyFraming { frames: 65, ..good },
            STATUS_INSUFFICIENT_RESOURCES,
        ),
        (
            "alignment above a page",
            LegacyFraming {
                file_alignment: 0x1FFF,
                ..good
            },
            STATUS_NOT_SUPPORTED,
        ),
    ];
    for (n, (what, framing, status)) in pin_refuses.into_iter().enumerate() {
        assert_eq!(
            ok(s.d.open_allocator(s.pin, &framing), &s.d),
            Err(status),
            "{what}"
        );
        assert_eq!(s.d.initialize_allocator_calls(), n as u64 + 1, "{what}");
        assert_eq!(buffers(&s.d), 0, "{what}: memory left behind");
    }
    assert!(s
        .d
        .uc
        .get_data()
        .ks
        .allocator_objects
        .by_file_object
        .is_empty());

    let h = ok(s.d.open_allocator(s.pin, &good), &s.d).expect("a good framing");
    assert_eq!(s.d.initialize_allocator_calls(), 5);
    assert_eq!(buffers(&s.d), 1, "one buffer for the allocator");
    assert_eq!(ok(s.d.allocator_status(h), &s.d), (good, 0));
    ok(s.d.close_allocator(h), &s.d);
    let o = object(&s.d, h);
    assert_eq!((o.deleted, o.delete_calls, o.out_at_delete), (true, 1, 0));
    assert_eq!(
        buffers(&s.d),
        0,
        "DeleteAllocator with every frame back frees the buffer"
    );
    finish(s);
}

/// ALLOC pends once the allocator has its maximum out (without asking the
/// pin); FREE completes the pending ALLOCs oldest first: inline when sent
/// at PASSIVE_LEVEL, from the work item when sent at DISPATCH_LEVEL or
/// through `FreeFrame`; every free signals the free-frame event; the count
/// is exact throughout.
#[test]
fn alloc_pends_at_the_limit_and_frees_complete_it_in_order() {
    let mut s = open();
    let framing = LegacyFraming {
        frames: 2,
        ..pin_framing(&s)
    };
    let h = ok(s.d.open_allocator(s.pin, &framing), &s.d).unwrap();
    let event = ok(s.d.enable_free_frame_event(h), &s.d);
    let table = ok(s.d.function_table(h), &s.d);
    let f1 = alloc_frame(&mut s.d, h);
    let f2 = alloc_frame(&mut s.d, h);
    assert_ne!(f1, f2);
    assert_eq!(allocated_frames(&mut s.d, h), 2);
    let irps = [
        alloc_pending(&mut s.d, h),
        alloc_pending(&mut s.d, h),
        alloc_pending(&mut s.d, h),
    ];
    assert_eq!(
        object(&s.d, h).allocate_calls,
        2,
        "the pin was asked beyond the limit"
    );
    assert_eq!(allocated_frames(&mut s.d, h), 2);
    assert!(s.d.take_alloc_completions(h).is_empty());

    // FREE at PASSIVE_LEVEL: the oldest ALLOC completes before FREE returns.
    assert_eq!(ok(s.d.free_irp(h, f1, irql::PASSIVE), &s.d), STATUS_SUCCESS);
    let done = s.d.take_alloc_completions(h);
    assert_eq!(done.len(), 1);
    assert_eq!((done[0].irp, done[0].status), (irps[0], STATUS_SUCCESS));
    let g1 = done[0].frame;
    assert_ne!(g1, 0);
    assert_ne!(g1, f2);
    assert_eq!(
        ok(s.d.uc.r32(irps[0] + IRP_IO_STATUS), &s.d),
        STATUS_SUCCESS
    );
    assert_eq!(ok(s.d.uc.r64(irps[0] + IRP_IO_STATUS_INFORMATION), &s.d), 8);
    assert_eq!(allocated_frames(&mut s.d, h), 2);

    // FREE at DISPATCH_LEVEL: the completion waits for the work item.
    assert_eq!(
        ok(s.d.free_irp(h, f2, irql::DISPATCH), &s.d),
        STATUS_SUCCESS
    );
    assert!(
        s.d.take_alloc_completions(h).is_empty(),
        "completed above PASSIVE_LEVEL"
    );
    assert_eq!(allocated_frames(&mut s.d, h), 1);
    let item = object(&s.d, h).work_item;
    assert!(s
        .d
        .uc
        .get_data()
        .nt
        .work_queue
        .iter()
        .any(|(w, _, _)| *w == item));
    let runs_before = s.d.uc.get_data().nt.work_items[&item].runs;
    ok(nt::run_ready(&mut s.d.uc), &s.d);
    assert_eq!(s.d.uc.get_data().nt.work_items[&item].runs, runs_before + 1);
    let done = s.d.take_alloc_completions(h);
    assert_eq!(done.len(), 1);
    assert_eq!((done[0].irp, done[0].status), (irps[1], STATUS_SUCCESS));
    let g2 = done[0].frame;

    // FreeFrame through the table at DISPATCH_LEVEL: the same, for the third.
    ok(s.d.free_frame(h, table, g1, irql::DISPATCH), &s.d);
    assert!(s.d.take_alloc_completions(h).is_empty());
    ok(nt::run_ready(&mut s.d.uc), &s.d);
    let done = s.d.take_alloc_completions(h);
    assert_eq!(
        done.iter().map(|c| (c.irp, c.status)).collect::<Vec<_>>(),
        vec![(irps[2], STATUS_SUCCESS)]
    );
    let g3 = done[0].frame;
    assert_eq!(allocated_frames(&mut s.d, h), 2);
    assert_eq!(object(&s.d, h).free_frame_signals, 3);
    assert!(matches!(
        s.d.uc.get_data().nt.objects.get(&event),
        Some(Object::Event { signaled: true, .. })
    ));

    for f in [g2, g3] {
        assert_eq!(ok(s.d.free_irp(h, f, irql::PASSIVE), &s.d), STATUS_SUCCESS);
    }
    assert_eq!(allocated_frames(&mut s.d, h), 0);
    let o = object(&s.d, h);
    assert_eq!(
        (o.allocate_calls, o.free_calls, o.null_below_limit),
        (5, 5, 0)
    );
    ok(s.d.close_allocator(h), &s.d);
    assert_eq!(buffers(&s.d), 0);
    finish(s);
}

/// The function table's `AllocateFrame` runs the pin's `Allocate` at
/// DISPATCH_LEVEL; with every frame out it returns at once with NULL and
/// without asking the pin; `FreeFrame` makes a frame available again.
#[test]
fn function_table_allocates_at_dispatch_and_fails_fast_when_empty() {
    let mut s = open();
    let framing = LegacyFraming {
        frames: 3,
        ..pin_framing(&s)
    };
    let h = ok(s.d.open_allocator(s.pin, &framing), &s.d).unwrap();
    let table = ok(s.d.function_table(h), &s.d);
    let dispatch = match &object(&s.d, h).backend {
        allocator_object::Backend::Driver { dispatch, .. } => *dispatch,
        allocator_object::Backend::Model { .. } => unreachable!(),
    };
    assert_ne!(
        table.allocate_frame,
        ok(s.d.uc.r64(dispatch + 16), &s.d),
        "the table is KS's, not the pin's"
    );
    let mut frames = Vec::new();
    for _ in 0..3 {
        let (status, f) = ok(s.d.allocate_frame(h, table, irql::DISPATCH), &s.d);
        assert_eq!(status, STATUS_SUCCESS);
        assert_ne!(f, 0);
        assert!(!frames.contains(&f));
        frames.push(f);
    }
    assert_eq!(
        ok(s.d.allocate_frame(h, table, irql::DISPATCH), &s.d),
        (STATUS_INSUFFICIENT_RESOURCES, 0),
        "an empty allocator fails at once with NULL"
    );
    assert_eq!(
        object(&s.d, h).allocate_calls,
        3,
        "the pin was asked with every frame out"
    );
    assert_eq!(allocated_frames(&mut s.d, h), 3);
    ok(s.d.free_frame(h, table, frames[1], irql::DISPATCH), &s.d);
    assert_eq!(allocated_frames(&mut s.d, h), 2);
    assert!(
        s.d.uc.get_data().nt.work_queue.is_empty(),
        "a work item with nothing pending"
    );
    // Also callable below DISPATCH_LEVEL.
    let (status, again) = ok(s.d.allocate_frame(h, table, irql::PASSIVE), &s.d);
    assert_eq!(status, STATUS_SUCCESS);
    frames[1] = again;
    for f in &frames {
        ok(s.d.free_frame(h, table, *f, irql::DISPATCH), &s.d);
    }
    assert_eq!(allocated_frames(&mut s.d, h), 0);
    assert!(s.d.uc.get_data().nt.spin_locks.is_empty());
    ok(s.d.close_allocator(h), &s.d);
    finish(s);
}

/// A small deterministic generator (no dependency).
struct Lcg(u64);

impl Lcg {
    fn next(&mut self, n: u64) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        (self.0 >> 33) % n
    }
}

/// Thousands of mixed operations on both interfaces (3000 per DMA
/// configuration): the object's `AllocatedFrames`, its set of frames out,
/// the pin's Allocate − Free count and the client's frames agree after
/// every step; pending ALLOCs
/// complete oldest first; at the end every frame goes back and
/// `DeleteAllocator` finds them all home (the buffer is freed, not parked).
#[test]
#[allow(clippy::too_many_lines)] // one scripted run: each operation, then every invariant
fn mixed_traffic_keeps_the_count_exact() {
    // The master clock plays no part in allocation: both DMA configurations.
    for config in configs().into_iter().filter(|c| c.clock) {
        let mut s = Stream::open(config, format(PixelFormat::Nv12, 320, 240), Path::User);
        let framing = pin_framing(&s);
        let limit = framing.frames as usize;
        let h = ok(s.d.open_allocator(s.pin, &framing), &s.d).unwrap();
        let table = ok(s.d.function_table(h), &s.d);
        let mut rng = Lcg(0x5eed ^ u64::from(config.dma_adapter) ^ u64::from(config.clock) << 1);
        let mut held: Vec<u64> = Vec::new();
        let mut waiting: std::collections::VecDeque<u64> = std::collections::VecDeque::new();
        let mut ops = [0u32; 8];
        let mut inline_completions = 0;
        let mut deferred_completions = 0;
        let foreign = s.d.uc.get_data().ks.device;
        let mut bogus_frees = 0;
        for step in 0..3000 {
            let op = rng.next(8) as usize;
            ops[op] += 1;
            // ALLOCs that must complete during this step: after a FREE at
            // PASSIVE_LEVEL, or when the work items run, as many waiting
            // ones as there are frames free.
            let mut must_complete = None;
            match op {
                0 | 1 => {
                    let expect_pending = !waiting.is_empty() || held.len() == limit;
                    match ok(s.d.alloc_irp(h), &s.d) {
                        Alloc::Frame(f) => {
                            assert!(
                                !expect_pending,
                                "step {step}: ALLOC served past the limit or a waiting IRP"
                            );
                            held.push(f);
                        }
                        Alloc::Pending(irp) => {
                            assert!(
                                expect_pending,
                                "step {step}: ALLOC pended with a frame free"
                            );
                            waiting.push_back(irp);
                        }
                        Alloc::Failed(st) => panic!("step {step}: ALLOC failed {st:#x}"),
                    }
                }
                2 => {
                    let (status, f) = ok(s.d.allocate_frame(h, table, irql::DISPATCH), &s.d);
                    if held.len() < limit {
                        assert_eq!(status, STATUS_SUCCESS, "step {step}");
                        held.push(f);
                    } else {
                        assert_eq!(
                            (status, f),
                            (STATUS_INSUFFICIENT_RESOURCES, 0),
                            "step {step}"
                        );
                    }
                }
                3..=5 if !held.is_empty() => {
                    let f = held.swap_remove(rng.next(held.len() as u64) as usize);
                    match op {
                        3 => {
                            assert_eq!(ok(s.d.free_irp(h, f, irql::PASSIVE), &s.d), STATUS_SUCCESS);
                            must_complete = Some(waiting.len().min(limit - held.len()));
                        }
                        4 => {
                            assert_eq!(
                                ok(s.d.free_irp(h, f, irql::DISPATCH), &s.d),
                                STATUS_SUCCESS
                            );
                        }
                        _ => ok(s.d.free_frame(h, table, f, irql::DISPATCH), &s.d),
                    }
                }
                6 => {
                    ok(nt::run_ready(&mut s.d.uc), &s.d);
                    must_complete = Some(waiting.len().min(limit - held.len()));
                }
                7 if rng.next(4) == 0 => {
                    let before = object(&s.d, h).free_calls;
                    let bogus = if rng.next(2) == 0 {
                        foreign
                    } else {
                        held.first().copied().unwrap_or(foreign) + 64
                    };
                    assert_eq!(
                        ok(s.d.free_irp(h, bogus, irql::PASSIVE), &s.d),
                        STATUS_INVALID_PARAMETER
                    );
                    assert_eq!(
                        object(&s.d, h).free_calls,
                        before,
                        "a refused free reached the pin"
                    );
                    bogus_frees += 1;
                }
                _ => assert_eq!(allocated_frames(&mut s.d, h) as usize, held.len()),
            }
            let done: Vec<Completion> = s.d.take_alloc_completions(h);
            if let Some(n) = must_complete {
                assert_eq!(
                    done.len(),
                    n,
                    "step {step}: op {op} left ALLOCs waiting with frames free"
                );
                if op == 3 {
                    inline_completions += n;
                } else {
                    deferred_completions += n;
                }
            } else {
                assert!(done.is_empty(), "step {step}: op {op} completed an ALLOC");
            }
            for c in done {
                assert_eq!(
                    Some(c.irp),
                    waiting.pop_front(),
                    "step {step}: ALLOC completed out of order"
                );
                assert_eq!(c.status, STATUS_SUCCESS);
                held.push(c.frame);
            }
            let o = object(&s.d, h);
            let mut out = o.out.clone();
            out.sort_unstable();
            let mut mine = held.clone();
            mine.sort_unstable();
            assert_eq!(
                out, mine,
                "step {step}: the object's frames out differ from the client's"
            );
            assert!(held.len() <= limit);
            assert_eq!(
                o.allocate_calls - o.free_calls,
                held.len() as u64,
                "step {step}: pin Allocate − Free"
            );
            assert_eq!(
                o.null_below_limit, 0,
                "step {step}: the pin ran dry below the limit"
            );
            assert!(s.d.uc.get_data().nt.spin_locks.is_empty());
        }
        assert!(ops.iter().all(|n| *n > 200), "{ops:?}");
        assert!(
            inline_completions > 50 && deferred_completions > 50,
            "{inline_completions} inline, {deferred_completions} deferred"
        );
        // Give everything back; pending ALLOCs complete as frames come home.
        while !held.is_empty() || !waiting.is_empty() {
            for f in std::mem::take(&mut held) {
                assert_eq!(ok(s.d.free_irp(h, f, irql::DISPATCH), &s.d), STATUS_SUCCESS);
            }
            ok(nt::run_ready(&mut s.d.uc), &s.d);
            for c in s.d.take_alloc_completions(h) {
                assert_eq!(Some(c.irp), waiting.pop_front());
                held.push(c.frame);
            }
        }
        assert_eq!(allocated_frames(&mut s.d, h), 0);
        assert_eq!(
            object(&s.d, h).refusals.len(),
            bogus_frees,
            "refusals recorded"
        );
        ok(s.d.close_allocator(h), &s.d);
        let o = object(&s.d, h);
        assert_eq!((o.delete_calls, o.out_at_delete), (1, 0));
        assert_eq!(o.allocate_calls, o.free_calls);
        assert!(!s.d.log().contains("frames still out"), "{}", s.d.log());
        assert_eq!(
            buffers(&s.d),
            0,
            "{config:?}: the allocator's buffer was not freed"
        );
        finish(s);
    }
}

/// A FREE of a frame the object did not hand out, or handed out and got
/// back, is refused before the pin's `Free` (the FREE IRP fails, `FreeFrame`
/// ignores it), and records why.
#[test]
fn foreign_and_doubled_frees_are_refused_before_the_pin() {
    let mut s = open();
    let framing = LegacyFraming {
        frames: 2,
        ..pin_framing(&s)
    };
    let h = ok(s.d.open_allocator(s.pin, &framing), &s.d).unwrap();
    let table = ok(s.d.function_table(h), &s.d);
    let f = alloc_frame(&mut s.d, h);
    let foreign = s.d.uc.get_data().ks.device;
    assert_eq!(
        ok(s.d.free_irp(h, foreign, irql::PASSIVE), &s.d),
        STATUS_INVALID_PARAMETER
    );
    assert_eq!(
        ok(s.d.free_irp(h, f + 16, irql::PASSIVE), &s.d),
        STATUS_INVALID_PARAMETER
    );
    assert_eq!(object(&s.d, h).free_calls, 0);
    assert_eq!(ok(s.d.free_irp(h, f, irql::PASSIVE), &s.d), STATUS_SUCCESS);
    assert_eq!(
        ok(s.d.free_irp(h, f, irql::PASSIVE), &s.d),
        STATUS_INVALID_PARAMETER
    );
    ok(s.d.free_frame(h, table, f, irql::DISPATCH), &s.d);
    let o = object(&s.d, h);
    assert_eq!((o.free_calls, o.free_frame_signals), (1, 1));
    let rules: Vec<&str> = o
        .refusals
        .iter()
        .map(|r| &r[..=r.find(']').unwrap()])
        .collect();
    assert_eq!(
        rules,
        [
            "[allocator.free-foreign]",
            "[allocator.free-foreign]",
            "[allocator.free-twice]",
            "[allocator.free-twice]"
        ]
    );
    assert_eq!(allocated_frames(&mut s.d, h), 0);
    ok(s.d.close_allocator(h), &s.d);
    finish(s);
}

/// Close with frames out: pending ALLOCs are cancelled, `DeleteAllocator`
/// runs once with the frames still out, and the driver keeps that buffer
/// (parked) until PnP stop while a second allocator works independently.
#[test]
fn close_with_frames_out_keeps_the_driver_safe() {
    for config in configs() {
        let mut s = Stream::open(config, format(PixelFormat::Yuy2, 320, 240), Path::User);
        let framing = LegacyFraming {
            frames: 2,
            ..pin_framing(&s)
        };
        let h = ok(s.d.open_allocator(s.pin, &framing), &s.d).unwrap();
        let f1 = alloc_frame(&mut s.d, h);
        let f2 = alloc_frame(&mut s.d, h);
        let irp = alloc_pending(&mut s.d, h);
        ok(s.d.close_allocator(h), &s.d);
        assert_eq!(
            s.d.take_alloc_completions(h),
            vec![Completion {
                irp,
                status: STATUS_CANCELLED,
                frame: 0
            }]
        );
        assert_eq!(ok(s.d.uc.r32(irp + IRP_IO_STATUS), &s.d), STATUS_CANCELLED);
        let o = object(&s.d, h);
        assert_eq!((o.deleted, o.delete_calls, o.out_at_delete), (true, 1, 2));
        assert!(s.d.log().contains("frames still out"));
        assert_eq!(
            buffers(&s.d),
            1,
            "{config:?}: the buffer went with frames out"
        );
        let h2 = ok(s.d.open_allocator(s.pin, &framing), &s.d).unwrap();
        let g = alloc_frame(&mut s.d, h2);
        assert!(g != f1 && g != f2);
        assert_eq!(buffers(&s.d), 2);
        assert_eq!(ok(s.d.free_irp(h2, g, irql::PASSIVE), &s.d), STATUS_SUCCESS);
        ok(s.d.close_allocator(h2), &s.d);
        assert_eq!(buffers(&s.d), 1);
        ok(s.d.close_pin(s.pin), &s.d);
        ok(s.d.stop_device(), &s.d);
        assert_eq!(
            buffers(&s.d),
            0,
            "{config:?}: PnP stop frees the parked buffer"
        );
        ok(s.d.remove_device(), &s.d);
        let leaks = s.d.leaks();
        assert!(leaks.is_empty(), "{leaks:#?}");
    }
}

/// `KSPROPERTY_STREAM_ALLOCATOR` references the object: closing the handle
/// does not delete it while the pin holds it; clearing the pin's allocator
/// does. A closed handle cannot be assigned.
#[test]
fn a_pin_reference_keeps_the_object_until_it_is_dropped() {
    let mut s = open();
    let framing = pin_framing(&s);
    let h = ok(s.d.open_allocator(s.pin, &framing), &s.d).unwrap();
    assert_eq!(
        ok(s.d.set_stream_allocator(s.pin, Some(h)), &s.d),
        STATUS_SUCCESS
    );
    assert_eq!(allocator_object::assigned(&s.d.uc, s.pin), Some(h));
    let table = ok(s.d.function_table(h), &s.d);
    ok(s.d.close_allocator(h), &s.d);
    assert_eq!(
        object(&s.d, h).delete_calls,
        0,
        "deleted while the pin holds it"
    );
    let err = s.d.close_allocator(h).unwrap_err();
    assert!(err.starts_with("[allocator.close-twice]"), "{err}");
    // The pin's side (AVStream's requestor) still uses the table.
    let (status, frame) = ok(s.d.allocate_frame(h, table, irql::DISPATCH), &s.d);
    assert_eq!(status, STATUS_SUCCESS);
    ok(s.d.free_frame(h, table, frame, irql::DISPATCH), &s.d);
    assert_eq!(
        ok(s.d.set_stream_allocator(s.pin, None), &s.d),
        STATUS_SUCCESS
    );
    let o = object(&s.d, h);
    assert_eq!((o.deleted, o.delete_calls), (true, 1));
    assert_eq!(
        ok(s.d.set_stream_allocator(s.pin, Some(h)), &s.d),
        STATUS_INVALID_HANDLE
    );
    finish(s);
}

/// After the object is deleted its function table is dead: a call through
/// it is a failure naming the rule; so is a second close of the handle.
#[test]
fn a_dead_function_table_or_a_second_close_fails() {
    let mut s = open();
    let framing = pin_framing(&s);
    let h = ok(s.d.open_allocator(s.pin, &framing), &s.d).unwrap();
    let table = ok(s.d.function_table(h), &s.d);
    ok(s.d.close_allocator(h), &s.d);
    let e =
        s.d.free_frame(h, table, 0x1000, irql::DISPATCH)
            .unwrap_err();
    assert!(e.contains("[allocator.closed]"), "{e}");

    let mut second = open();
    let handle = ok(second.d.open_allocator(second.pin, &framing), &second.d).unwrap();
    ok(second.d.close_allocator(handle), &second.d);
    let err = second.d.close_allocator(handle).unwrap_err();
    assert!(err.starts_with("[allocator.closed]"), "{err}");
    finish(second);
}

/// Both interfaces go through one lock (the cancel spin lock): every call
/// leaves it free, and entering the object while it is held (what a
/// re-entrant or concurrent call would do) is a failure naming the rule.
#[test]
fn one_lock_serialises_the_object() {
    let mut s = open();
    let framing = pin_framing(&s);
    let h = ok(s.d.open_allocator(s.pin, &framing), &s.d).unwrap();
    let table = ok(s.d.function_table(h), &s.d);
    let frame = alloc_frame(&mut s.d, h);
    assert!(s.d.uc.get_data().nt.spin_locks.is_empty());
    ok(s.d.free_frame(h, table, frame, irql::DISPATCH), &s.d);
    assert!(s.d.uc.get_data().nt.spin_locks.is_empty());
    let lock = s.d.uc.get_data().ks.allocator_objects.cancel_lock;
    s.d.uc.get_data_mut().nt.spin_locks.insert(
        lock,
        nt::Holder {
            thread: 7,
            raised: true,
        },
    );
    let err = s.d.allocate_frame(h, table, irql::DISPATCH).unwrap_err();
    assert!(err.contains("[allocator.lock]"), "{err}");
    assert_eq!(
        object(&s.d, h).allocate_calls,
        1,
        "the pin was entered under a held lock"
    );
}
