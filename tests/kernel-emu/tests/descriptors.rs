//! The driver's descriptors and dispatch tables, read out of emulated
//! memory, against what the host core computes; the intersect handler's
//! answers for every offered range; the DMA adapter request.

mod common;

use avscap::portable::filter_identity::{FILTER_CATEGORIES, FILTER_REFERENCE_STRING};
use avscap::portable::framing::{PinFraming, DEFAULT_PIN_FRAMES, MAX_FRAME_SIZE};
use avscap::portable::guid::{KSNAME_FILTER, PIN_CATEGORY_CAPTURE};
use avscap::portable::video_format::{DATA_RANGES, DATA_RANGE_COUNT};
use avscap_kernel_emu::layout::{
    size, DeviceDescription, KsAllocatorDispatch, KsAllocatorFramingEx, KsDataRangeVideo,
    KsDeviceDescriptor, KsDeviceDispatch, KsFilterDescriptor, KsPin, KsPinDescriptor,
    KsPinDescriptorEx, KsPinDispatch,
};
use avscap_kernel_emu::machine::Mem;
use avscap_kernel_emu::{off, oracle, Config, Driver};
use common::{boot, ok};

/// `KSPIN_FLAG_PROCESS_IN_RUN_STATE_ONLY`.
const PROCESS_IN_RUN_STATE_ONLY: u32 = 0x0001_0000;

fn rd(d: &Driver, address: u64) -> u64 {
    ok(d.uc.r64(address), d)
}

fn rd32(d: &Driver, address: u64) -> u32 {
    ok(d.uc.r32(address), d)
}

fn bytes(d: &Driver, address: u64, len: u64) -> Vec<u8> {
    ok(d.uc.rbytes(address, len as usize), d)
}

#[test]
fn the_image_is_relocated_and_every_import_modelled() {
    let d = Driver::load(Config::default()).unwrap_or_else(|e| panic!("{e}"));
    assert!(
        d.relocations > 0,
        "no base relocation applied: the load base would not be exercised"
    );
    let expected = std::fs::read_to_string(
        avscap_kernel_emu::session::repo_root().join("scripts/expected-imports.txt"),
    )
    .unwrap();
    let mut listed: Vec<String> = expected
        .lines()
        .filter(|l| !l.is_empty())
        .map(str::to_string)
        .collect();
    let mut bound = d.imports.clone();
    listed.sort();
    bound.sort();
    assert_eq!(bound, listed, "the imports bound are the contract's");
}

#[test]
fn device_descriptor() {
    let d = boot(Config::default());
    let desc = d.uc.get_data().ks.device_descriptor.unwrap();
    assert_eq!(
        rd32(
            &d,
            desc + off!(KsDeviceDescriptor, filter_descriptors_count)
        ),
        0
    );
    assert_eq!(rd32(&d, desc + off!(KsDeviceDescriptor, version)), 0);
    let dispatch = rd(&d, desc + off!(KsDeviceDescriptor, dispatch));
    for (name, o, present) in [
        ("Add", off!(KsDeviceDispatch, add), true),
        ("Start", off!(KsDeviceDispatch, start), true),
        ("Stop", off!(KsDeviceDispatch, stop), true),
        ("Remove", off!(KsDeviceDispatch, remove), true),
        (
            "SurpriseRemoval",
            off!(KsDeviceDispatch, surprise_removal),
            true,
        ),
        ("PostStart", off!(KsDeviceDispatch, post_start), false),
        (
            "QueryInterface",
            off!(KsDeviceDispatch, query_interface),
            false,
        ),
    ] {
        assert_eq!(rd(&d, dispatch + o) != 0, present, "device dispatch {name}");
    }
}

#[test]
fn filter_descriptor_and_factory() {
    let d = boot(Config::default());
    let (filter, reference, _flags) = d.uc.get_data().ks.factories[0].clone();
    assert_eq!(reference, FILTER_REFERENCE_STRING);
    assert_eq!(
        rd32(&d, filter + off!(KsFilterDescriptor, version)),
        u32::MAX
    );
    assert_eq!(
        rd32(&d, filter + off!(KsFilterDescriptor, pin_descriptors_count)),
        1
    );
    assert_eq!(
        u64::from(rd32(
            &d,
            filter + off!(KsFilterDescriptor, pin_descriptor_size)
        )),
        size::<KsPinDescriptorEx>()
    );
    let reference_guid = rd(&d, filter + off!(KsFilterDescriptor, reference_guid));
    assert_eq!(
        bytes(&d, reference_guid, 16),
        oracle::guid_bytes(KSNAME_FILTER)
    );
    let count = rd32(&d, filter + off!(KsFilterDescriptor, categories_count));
    assert_eq!(count as usize, FILTER_CATEGORIES.len());
    let categories = rd(&d, filter + off!(KsFilterDescriptor, categories));
    for (i, c) in FILTER_CATEGORIES.iter().enumerate() {
        assert_eq!(
            bytes(&d, categories + 16 * i as u64, 16),
            oracle::guid_bytes(*c),
            "category {i}"
        );
    }
    let dispatch = rd(&d, filter + off!(KsFilterDescriptor, dispatch));
    assert_eq!(
        bytes(&d, dispatch, 32),
        vec![0; 32],
        "a pin-centric filter has no filter callbacks"
    );
}

#[test]
fn pin_descriptor_ranges_and_dispatch() {
    let d = boot(Config::default());
    let pin = d.pin_descriptor().unwrap();
    let pd = pin + off!(KsPinDescriptorEx, pin_descriptor);
    assert_eq!(
        rd32(&d, pd + off!(KsPinDescriptor, data_ranges_count)) as usize,
        DATA_RANGE_COUNT
    );
    assert_eq!(DATA_RANGE_COUNT, 45);
    let ranges = rd(&d, pd + off!(KsPinDescriptor, data_ranges));
    for (i, f) in DATA_RANGES.iter().enumerate() {
        let range = rd(&d, ranges + 8 * i as u64);
        assert_eq!(
            bytes(&d, range, size::<KsDataRangeVideo>()),
            oracle::data_range_bytes(f),
            "data range {i} ({f:?})"
        );
    }
    assert_eq!(
        rd32(&d, pd + off!(KsPinDescriptor, data_flow)),
        2,
        "KSPIN_DATAFLOW_OUT"
    );
    assert_eq!(
        rd32(&d, pd + off!(KsPinDescriptor, communication)),
        3,
        "KSPIN_COMMUNICATION_BOTH"
    );
    for field in [off!(KsPinDescriptor, category), off!(KsPinDescriptor, name)] {
        assert_eq!(
            bytes(&d, rd(&d, pd + field), 16),
            oracle::guid_bytes(PIN_CATEGORY_CAPTURE)
        );
    }
    assert_eq!(rd32(&d, pd + off!(KsPinDescriptor, interfaces_count)), 0);
    assert_eq!(rd32(&d, pd + off!(KsPinDescriptor, mediums_count)), 0);
    assert_eq!(
        rd32(&d, pin + off!(KsPinDescriptorEx, flags)),
        PROCESS_IN_RUN_STATE_ONLY
    );
    assert_eq!(
        rd32(&d, pin + off!(KsPinDescriptorEx, instances_possible)),
        1
    );
    assert_eq!(
        rd32(&d, pin + off!(KsPinDescriptorEx, instances_necessary)),
        1
    );
    assert_ne!(rd(&d, pin + off!(KsPinDescriptorEx, intersect_handler)), 0);
    assert_ne!(rd(&d, pin + off!(KsPinDescriptorEx, automation_table)), 0);
    let framing = rd(&d, pin + off!(KsPinDescriptorEx, allocator_framing));
    assert_eq!(
        bytes(&d, framing, size::<KsAllocatorFramingEx>()),
        oracle::framing_ex_bytes(&PinFraming::declared()),
        "declared AllocatorFraming"
    );
    let dispatch = rd(&d, pin + off!(KsPinDescriptorEx, dispatch));
    for (name, o, present) in [
        ("Create", off!(KsPinDispatch, create), true),
        ("Close", off!(KsPinDispatch, close), true),
        ("Process", off!(KsPinDispatch, process), true),
        ("Reset", off!(KsPinDispatch, reset), false),
        ("SetDataFormat", off!(KsPinDispatch, set_data_format), true),
        (
            "SetDeviceState",
            off!(KsPinDispatch, set_device_state),
            true,
        ),
        ("Connect", off!(KsPinDispatch, connect), false),
        ("Disconnect", off!(KsPinDispatch, disconnect), false),
        ("Clock", off!(KsPinDispatch, clock), false),
        ("Allocator", off!(KsPinDispatch, allocator), true),
    ] {
        assert_eq!(rd(&d, dispatch + o) != 0, present, "pin dispatch {name}");
    }
    let allocator = rd(&d, dispatch + off!(KsPinDispatch, allocator));
    for o in [
        off!(KsAllocatorDispatch, initialize_allocator),
        off!(KsAllocatorDispatch, delete_allocator),
        off!(KsAllocatorDispatch, allocate),
        off!(KsAllocatorDispatch, free),
    ] {
        assert_ne!(rd(&d, allocator + o), 0);
    }
}

/// Every offered range intersected with itself gives its exact format;
/// each connects, and Create edits a per-pin copy of the framing sized for
/// the connection (the static descriptor is left alone).
#[test]
fn intersection_and_per_pin_framing_for_every_range() {
    let mut d = boot(Config::default());
    let filter = ok(d.create_filter(), &d);
    let static_descriptor = d.pin_descriptor().unwrap();
    let declared = oracle::framing_ex_bytes(&PinFraming::declared());
    for f in &DATA_RANGES {
        let client = ok(d.client_range(f), &d);
        let (format, _) = ok(d.intersect(filter, client), &d).expect("a match");
        assert_eq!(format, oracle::data_format_bytes(f), "{f:?}");
        let pin = ok(d.connect(filter, f), &d).unwrap_or_else(|s| panic!("{f:?}: Create {s:#x}"));
        assert_ne!(
            rd(&d, pin + off!(KsPin, descriptor)),
            static_descriptor,
            "Create must _KsEdit the descriptor"
        );
        let expected =
            oracle::framing_ex_bytes(&PinFraming::for_format(f, DEFAULT_PIN_FRAMES).unwrap());
        assert_eq!(ok(d.allocator_framing_ex(pin), &d), expected, "{f:?}");
        assert_eq!(
            u64::from(rd32(&d, pin + off!(KsPin, stream_header_size))),
            avscap_kernel_emu::ks::HEADER_WITH_FRAME_INFO
        );
        ok(d.close_pin(pin), &d);
    }
    let framing = rd(
        &d,
        static_descriptor + off!(KsPinDescriptorEx, allocator_framing),
    );
    assert_eq!(bytes(&d, framing, size::<KsAllocatorFramingEx>()), declared);
}

/// Start asks for a 64-bit bus-master adapter able to move the largest frame.
#[test]
fn dma_adapter_request() {
    let d = boot(Config::default());
    let adapters = &d.uc.get_data().nt.adapters;
    assert_eq!(adapters.len(), 1);
    let desc = &adapters.values().next().unwrap().description;
    let at = |o: u64| desc[o as usize];
    assert_eq!(at(off!(DeviceDescription, master)), 1);
    assert_eq!(at(off!(DeviceDescription, dma64_bit_addresses)), 1);
    let o = off!(DeviceDescription, maximum_length) as usize;
    assert_eq!(
        u32::from_le_bytes(desc[o..o + 4].try_into().unwrap()),
        MAX_FRAME_SIZE
    );
    let no_adapter = boot(Config {
        dma_adapter: false,
        ..Config::default()
    });
    assert!(
        no_adapter.log().contains("no DMA adapter granted"),
        "{}",
        no_adapter.log()
    );
}
