//! The graph manager model picks the connection's allocator from both
//! pins' `KSALLOCATOR_FRAMING_EX` (brief §2.7), creates it, assigns it with
//! `KSPROPERTY_STREAM_ALLOCATOR`, and feeds the capture pin's queue from it
//! through the KS allocator object (function table and ALLOC/FREE IRPs):
//! our allocator for a compatible kernel peer (zero-copy), the peer's when
//! it demands what we do not declare (copy path), user buffers for a
//! user-mode peer (copy path, our allocator never created). Every frame is
//! checked against the host core byte for byte.

mod common;

use avscap::portable::framing::{
    FLAG_CAN_ALLOCATE, OPTIONF_SYSTEM_MEMORY, PAGE_ALIGNMENT_MASK, REQUIREMENTF_MUST_ALLOCATE,
    REQUIREMENTF_PREFERENCES_ONLY, REQUIREMENTF_SYSTEM_MEMORY,
};
use avscap::portable::video_format::PixelFormat;
use avscap_kernel_emu::allocator_object;
use avscap_kernel_emu::graph::{
    framing_ex_bytes, parse_framing_ex, select, Allocation, Endpoint, FramingItem, Range,
    KSMEMORY_TYPE_KERNEL_PAGED, KSMEMORY_TYPE_NONPAGED, KSMEMORY_TYPE_USER, KSMEMORY_TYPE_WILDCARD,
};
use avscap_kernel_emu::ks::{state, Origin, CLOCK_OFFSET};
use avscap_kernel_emu::session::LegacyFraming;
use avscap_kernel_emu::Config;
use common::{big_copies, check_frames, configs, format, ok, Path, Stream};

const FRAMES: usize = 40;

fn kernel_peer(item: FramingItem, has_allocator: bool) -> Endpoint {
    // Through the bytes, as the graph reads a pin's property.
    let items = parse_framing_ex(&framing_ex_bytes(&[item])).unwrap();
    assert_eq!(items, vec![item]);
    Endpoint {
        user_mode: false,
        has_allocator,
        items,
    }
}

/// A plain kernel consumer: nonpaged system memory, 2 frames of the image,
/// long alignment, no allocator of its own.
fn plain_consumer(image: u32) -> Endpoint {
    kernel_peer(
        FramingItem::exact(
            KSMEMORY_TYPE_NONPAGED,
            REQUIREMENTF_SYSTEM_MEMORY,
            2,
            3,
            image,
        ),
        false,
    )
}

/// One connection through the graph manager, streamed and checked: the
/// decision (and the rule that refused ours), where the frames came from,
/// zero-copy or one copy per frame, the allocator object's counts, and a
/// clean teardown.
fn graph_session(
    config: Config,
    pixel: PixelFormat,
    peer: impl Fn(u32) -> Endpoint,
    expect: Allocation,
    rule: Option<&str>,
) -> LegacyFraming {
    let f = format(pixel, 320, 240);
    let mut s = Stream::open(config, f, Path::User);
    let image = s.image_size();
    let mut c = ok(s.d.graph_connect(s.pin, &peer(image)), &s.d);
    let what = format!("{config:?} {pixel:?} {expect:?}");
    assert_eq!(c.decision.allocation, expect, "{what}: {:#?}", c.decision);
    match rule {
        Some(rule) => assert!(
            c.decision.refusals.iter().any(|r| r.starts_with(rule)),
            "{what}: no {rule} in {:#?}",
            c.decision.refusals
        ),
        None => assert!(c.decision.refusals.is_empty(), "{:#?}", c.decision.refusals),
    }
    let ours = expect == Allocation::Ours;
    assert_eq!(
        s.d.initialize_allocator_calls(),
        u64::from(ours),
        "{what}: InitializeAllocator only when ours is chosen"
    );
    assert_eq!(allocator_object::assigned(&s.d.uc, s.pin), c.allocator);
    let framing = c.decision.framing.unwrap_or(LegacyFraming {
        options_flags: 0,
        pool_type: 0,
        frames: 0,
        frame_size: image,
        file_alignment: 0,
    });

    s.set_state(state::PAUSE);
    ok(s.d.graph_refill(&mut c, 4), &s.d);
    assert_eq!(common::queued(&s.d, s.pin), 4, "{what}");
    let copies_before = big_copies(&s.d, image);
    let run_time = s.d.uc.get_data().now;
    s.set_state(state::RUN);
    let frames = ok(s.d.graph_stream(&mut c, FRAMES, 4, f.frame_interval), &s.d);
    assert!(frames.len() >= FRAMES);
    let first_time = run_time + if config.clock { CLOCK_OFFSET } else { 0 };
    check_frames(&f, &frames, 1, Some(first_time));
    let origin = match expect {
        Allocation::Ours => Origin::Allocator,
        Allocation::Peer => Origin::Peer,
        Allocation::UserBuffers => Origin::User,
    };
    assert!(
        frames.iter().all(|c| c.origin == origin),
        "{what}: frames of another origin"
    );
    assert!(
        frames.iter().all(|c| c.extent == framing.frame_size),
        "{what}: FrameExtent"
    );
    let copies = big_copies(&s.d, image) - copies_before;
    if ours {
        assert_eq!(
            copies, 0,
            "{what}: image-sized copies on our allocator's frames"
        );
    } else {
        assert_eq!(copies, frames.len(), "{what}: one image copy per frame");
    }
    if let Some(h) = c.allocator {
        assert!(
            c.obtained.0 > 0 && c.obtained.1 > 0,
            "{what}: both interfaces used: {:?}",
            c.obtained
        );
        let o = s.d.allocator_object(h).unwrap().clone();
        assert_eq!(o.null_below_limit, 0, "{what}");
        assert!(o.refusals.is_empty(), "{what}: {:?}", o.refusals);
        assert!(o.free_frame_signals >= frames.len() as u64);
        let held = o.out.len() as u32;
        assert_eq!(ok(s.d.allocator_status(h), &s.d), (framing, held), "{what}");
        if ours {
            assert_eq!(o.allocate_calls - o.free_calls, u64::from(held));
        }
    }

    s.set_state(state::STOP);
    ok(s.d.graph_disconnect(&mut c), &s.d);
    assert_eq!(allocator_object::assigned(&s.d.uc, s.pin), None);
    for o in
        s.d.uc
            .get_data()
            .ks
            .allocator_objects
            .by_file_object
            .values()
    {
        assert_eq!(
            (o.deleted, o.delete_calls, o.out_at_delete),
            (true, 1, 0),
            "{what}: the allocator went with frames out"
        );
    }
    assert!(!s.d.log().contains("frames still out"), "{}", s.d.log());
    let leaks = s.teardown();
    assert!(leaks.is_empty(), "{what}: {leaks:#?}");
    framing
}

/// A kernel peer our framing satisfies gets our allocator: the legacy
/// framing is exactly ours (4 page-aligned frames of the image, nonpaged
/// system memory), and the session is zero-copy. Every configuration.
#[test]
fn a_compatible_kernel_peer_gets_our_allocator() {
    for config in configs() {
        let framing = graph_session(
            config,
            PixelFormat::Yuy2,
            plain_consumer,
            Allocation::Ours,
            None,
        );
        let image = format(PixelFormat::Yuy2, 320, 240)
            .layout()
            .unwrap()
            .image_size();
        assert_eq!(
            framing,
            LegacyFraming {
                options_flags: OPTIONF_SYSTEM_MEMORY,
                pool_type: 0,
                frames: 4,
                frame_size: image,
                file_alignment: PAGE_ALIGNMENT_MASK,
            }
        );
    }
}

/// A wildcard peer (any memory, any size, no frame count) and a peer that
/// could allocate itself but asks nothing we do not declare: ours either way.
#[test]
fn a_wildcard_or_allocating_peer_still_gets_ours() {
    let wildcard = |_| {
        kernel_peer(
            FramingItem {
                memory_type: KSMEMORY_TYPE_WILDCARD,
                bus_type: KSMEMORY_TYPE_WILDCARD,
                memory_flags: 0,
                flags: 0,
                frames: 0,
                file_alignment: 0,
                physical: Range {
                    min: 0,
                    max: u32::MAX,
                    stepping: 1,
                },
                framing: Range {
                    min: 0,
                    max: u32::MAX,
                    stepping: 1,
                },
            },
            false,
        )
    };
    graph_session(
        Config::default(),
        PixelFormat::Nv12,
        wildcard,
        Allocation::Ours,
        None,
    );
    let allocating = |image| {
        kernel_peer(
            FramingItem::exact(
                KSMEMORY_TYPE_NONPAGED,
                REQUIREMENTF_SYSTEM_MEMORY | FLAG_CAN_ALLOCATE,
                4,
                PAGE_ALIGNMENT_MASK,
                image,
            ),
            true,
        )
    };
    graph_session(
        Config::default(),
        PixelFormat::Rgb24,
        allocating,
        Allocation::Ours,
        None,
    );
}

/// A kernel peer that needs more frames than we declare: its allocator
/// (8 frames), the copy path, our `InitializeAllocator` never called.
#[test]
fn a_peer_needing_more_frames_allocates_itself() {
    let framing = graph_session(
        Config::default(),
        PixelFormat::Yuy2,
        |image| {
            kernel_peer(
                FramingItem::exact(
                    KSMEMORY_TYPE_NONPAGED,
                    REQUIREMENTF_SYSTEM_MEMORY | FLAG_CAN_ALLOCATE,
                    8,
                    3,
                    image,
                ),
                true,
            )
        },
        Allocation::Peer,
        Some("[graph.frames]"),
    );
    assert_eq!(framing.frames, 8);
}

/// A kernel peer that needs larger frames than our physical range allows:
/// its allocator, frames larger than the image, still exact images.
#[test]
fn a_peer_needing_larger_frames_allocates_itself() {
    let framing = graph_session(
        Config {
            dma_adapter: false,
            ..Config::default()
        },
        PixelFormat::Nv12,
        |image| {
            kernel_peer(
                FramingItem::exact(
                    KSMEMORY_TYPE_NONPAGED,
                    REQUIREMENTF_SYSTEM_MEMORY | FLAG_CAN_ALLOCATE,
                    2,
                    3,
                    image + 4096,
                ),
                true,
            )
        },
        Allocation::Peer,
        Some("[graph.frame-size]"),
    );
    let image = format(PixelFormat::Nv12, 320, 240)
        .layout()
        .unwrap()
        .image_size();
    assert_eq!(framing.frame_size, image + 4096);
}

/// A kernel peer on another memory type (paged): the types do not
/// intersect; the peer's paged-pool allocator is used.
#[test]
fn a_peer_on_another_memory_type_allocates_itself() {
    let framing = graph_session(
        Config {
            clock: false,
            ..Config::default()
        },
        PixelFormat::Yuy2,
        |image| {
            kernel_peer(
                FramingItem::exact(
                    KSMEMORY_TYPE_KERNEL_PAGED,
                    REQUIREMENTF_SYSTEM_MEMORY | FLAG_CAN_ALLOCATE,
                    2,
                    3,
                    image,
                ),
                true,
            )
        },
        Allocation::Peer,
        Some("[graph.memory-type]"),
    );
    assert_eq!(
        framing.pool_type, 1,
        "PagedPool for KSMEMORY_TYPE_KERNEL_PAGED"
    );
}

/// A kernel peer that insists on allocating (`MUST_ALLOCATE`) gets its way.
#[test]
fn a_must_allocate_peer_allocates_itself() {
    graph_session(
        Config::default(),
        PixelFormat::Rgb24,
        |image| {
            kernel_peer(
                FramingItem::exact(
                    KSMEMORY_TYPE_NONPAGED,
                    REQUIREMENTF_SYSTEM_MEMORY | REQUIREMENTF_MUST_ALLOCATE | FLAG_CAN_ALLOCATE,
                    2,
                    3,
                    image,
                ),
                true,
            )
        },
        Allocation::Peer,
        Some("[graph.must-allocate]"),
    );
}

/// A user-mode peer is never given a kernel allocator: its buffers, the
/// copy path, no allocator object at all.
#[test]
fn a_user_mode_peer_never_gets_ours() {
    graph_session(
        Config::default(),
        PixelFormat::Yuy2,
        |image| Endpoint {
            user_mode: true,
            has_allocator: true,
            items: vec![FramingItem::exact(
                KSMEMORY_TYPE_USER,
                FLAG_CAN_ALLOCATE,
                2,
                0,
                image,
            )],
        },
        Allocation::UserBuffers,
        Some("[graph.user-peer]"),
    );
}

/// What we declare is what lets a graph manager pick our allocator: our
/// item as the graph reads it, then the same selection with each of the
/// facts it relies on taken away (no `CAN_ALLOCATE`, a memory type our
/// allocator does not make, no dispatch) or with a peer asking alignment
/// beyond ours or a non-mask alignment: each is refused with its rule.
#[test]
fn our_declared_framing_is_what_makes_ours_selectable() {
    let s = Stream::open(
        Config::default(),
        format(PixelFormat::Yuy2, 320, 240),
        Path::User,
    );
    let image = s.image_size();
    let ours = ok(s.d.endpoint(s.pin), &s.d);
    assert!(ours.has_allocator && !ours.user_mode);
    assert_eq!(
        ours.items,
        vec![FramingItem::exact(
            KSMEMORY_TYPE_NONPAGED,
            REQUIREMENTF_SYSTEM_MEMORY | REQUIREMENTF_PREFERENCES_ONLY | FLAG_CAN_ALLOCATE,
            4,
            PAGE_ALIGNMENT_MASK,
            image,
        )],
        "the pin's edited framing"
    );
    let peer = plain_consumer(image);
    assert_eq!(select(&ours, &peer).allocation, Allocation::Ours);

    let refused = |o: &Endpoint, p: &Endpoint, rule: &str| {
        let d = select(o, p);
        assert_eq!(d.allocation, Allocation::Peer, "{rule}");
        assert!(
            d.refusals.iter().any(|r| r.starts_with(rule)),
            "{rule}: {:#?}",
            d.refusals
        );
    };
    let mut o = ours.clone();
    o.items[0].flags &= !FLAG_CAN_ALLOCATE;
    refused(&o, &peer, "[graph.can-allocate]");
    let mut o = ours.clone();
    o.items[0].memory_type = KSMEMORY_TYPE_USER;
    refused(&o, &peer, "[graph.memory-type]");
    let mut o = ours.clone();
    o.has_allocator = false;
    refused(&o, &peer, "[graph.no-dispatch]");
    let mut p = peer.clone();
    p.items[0].file_alignment = 0x1FFF;
    refused(&ours, &p, "[graph.alignment]");
    p.items[0].file_alignment = 5;
    refused(&ours, &p, "[graph.alignment]");
    // Our physical range is exactly the image: one byte more is refused.
    let mut p = peer.clone();
    p.items[0].framing.min = image + 1;
    p.items[0].physical.max = image + 1;
    refused(&ours, &p, "[graph.frame-size]");
    let leaks = s.teardown();
    assert!(leaks.is_empty(), "{leaks:#?}");
}
