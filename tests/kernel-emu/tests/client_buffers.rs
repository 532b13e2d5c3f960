//! A client's KS buffers through the real driver: proposed formats
//! (`SetDataFormat` and Create) and data ranges (the intersect handler),
//! broken field by field and at random, get exactly the host core's answer
//! (`portable::ks_buffers` reads them, then the validator or the
//! intersection decides). The driver may not be more or less permissive
//! than the core it was built from.

mod common;

use avscap::portable::ks_buffers::{
    data_format, read_data_format, read_data_range, video, video_info_header as vih,
};
use avscap::portable::video_format::{
    default_format, intersect, validate_format, PixelFormat, VideoFormat, DATA_RANGES,
};
use avscap_kernel_emu::machine::Mem;
use avscap_kernel_emu::{oracle, Config, Driver};
use common::{boot, ok};

/// A small deterministic generator (xorshift64*): the same cases every run.
struct Cases(u64);

impl Cases {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: usize) -> usize {
        usize::try_from(self.next() % n as u64).unwrap()
    }
}

fn put(b: &mut [u8], at: usize, v: &[u8]) {
    b[at..at + v.len()].copy_from_slice(v);
}

/// Named breakages of a format: (what, offset, bytes).
fn format_breakages() -> Vec<(&'static str, usize, Vec<u8>)> {
    let at = |field| video::FORMAT_VIDEO_INFO_HEADER + field;
    let le32 = |v: u32| v.to_le_bytes().to_vec();
    let le_signed = |v: i32| v.to_le_bytes().to_vec();
    let le_wide = |v: i64| v.to_le_bytes().to_vec();
    vec![
        ("SampleSize 1", data_format::SAMPLE_SIZE, le32(1)),
        (
            "MajorFormat garbage",
            data_format::MAJOR_FORMAT,
            vec![0xAB; 16],
        ),
        ("SubFormat garbage", data_format::SUB_FORMAT, vec![0xCD; 16]),
        ("Specifier null", data_format::SPECIFIER, vec![0; 16]),
        ("biSize 0", at(vih::BI_SIZE), le32(0)),
        ("biSize 39", at(vih::BI_SIZE), le32(39)),
        ("biSize 41 (past FormatSize)", at(vih::BI_SIZE), le32(41)),
        ("biSize u32::MAX", at(vih::BI_SIZE), le32(u32::MAX)),
        ("biWidth 0", at(vih::BI_WIDTH), le_signed(0)),
        ("biWidth -640", at(vih::BI_WIDTH), le_signed(-640)),
        ("biWidth 641", at(vih::BI_WIDTH), le_signed(641)),
        ("biWidth i32::MAX", at(vih::BI_WIDTH), le_signed(i32::MAX)),
        ("biHeight 0", at(vih::BI_HEIGHT), le_signed(0)),
        ("biHeight -480", at(vih::BI_HEIGHT), le_signed(-480)),
        ("biHeight i32::MIN", at(vih::BI_HEIGHT), le_signed(i32::MIN)),
        (
            "biPlanes 2",
            at(vih::BI_PLANES),
            2u16.to_le_bytes().to_vec(),
        ),
        (
            "biBitCount 24",
            at(vih::BI_BIT_COUNT),
            24u16.to_le_bytes().to_vec(),
        ),
        (
            "biBitCount 0",
            at(vih::BI_BIT_COUNT),
            0u16.to_le_bytes().to_vec(),
        ),
        ("biCompression RGB", at(vih::BI_COMPRESSION), le32(0)),
        ("biSizeImage 1", at(vih::BI_SIZE_IMAGE), le32(1)),
        (
            "biSizeImage u32::MAX",
            at(vih::BI_SIZE_IMAGE),
            le32(u32::MAX),
        ),
        ("AvgTimePerFrame 0", at(vih::AVG_TIME_PER_FRAME), le_wide(0)),
        (
            "AvgTimePerFrame -1",
            at(vih::AVG_TIME_PER_FRAME),
            le_wide(-1),
        ),
        (
            "AvgTimePerFrame 333334",
            at(vih::AVG_TIME_PER_FRAME),
            le_wide(333_334),
        ),
        (
            "AvgTimePerFrame i64::MAX",
            at(vih::AVG_TIME_PER_FRAME),
            le_wide(i64::MAX),
        ),
        (
            "AvgTimePerFrame i64::MIN",
            at(vih::AVG_TIME_PER_FRAME),
            le_wide(i64::MIN),
        ),
    ]
}

/// What the core answers for a proposed format: the format, or the status.
fn core_answer(bytes: &[u8]) -> Result<VideoFormat, u32> {
    read_data_format(bytes)
        .and_then(|p| validate_format(&p))
        .map_err(|e| e.ntstatus().cast_unsigned())
}

/// Proposes `bytes` as the connection format; the driver's answer.
fn driver_answer(d: &mut Driver, filter: u64, range: u64, bytes: &[u8]) -> Result<(), u32> {
    let pin = ok(d.create_pin(filter, bytes, range), d)?;
    ok(d.close_pin(pin), d);
    Ok(())
}

/// Closes the filter and removes the device: nothing may be left behind.
fn closed(mut d: Driver, filter: u64) {
    ok(d.close_filter(filter), &d);
    ok(d.stop_device(), &d);
    ok(d.remove_device(), &d);
    assert!(d.leaks().is_empty(), "{:?}", d.leaks());
}

#[test]
fn every_broken_format_gets_the_cores_status() {
    let mut d = boot(Config::default());
    let filter = ok(d.create_filter(), &d);
    let good = oracle::data_format_bytes(&default_format());
    let client = ok(d.client_range(&default_format()), &d);
    let (_, range) = ok(d.intersect(filter, client), &d).expect("a match");
    assert_eq!(driver_answer(&mut d, filter, range, &good), Ok(()));

    let mut refused = 0;
    let mut check = |d: &mut Driver, what: &str, bytes: &[u8]| {
        let expected = core_answer(bytes);
        let got = driver_answer(d, filter, range, bytes);
        assert_eq!(got, expected.map(|_| ()), "{what}");
        refused += usize::from(got.is_err());
    };
    for (what, at, value) in format_breakages() {
        let mut b = good.clone();
        put(&mut b, at, &value);
        check(&mut d, what, &b);
    }
    // FormatSize: only the header, or the header and part of the video
    // header (ks.sys passes exactly FormatSize bytes).
    for size in [64usize, 100, 151] {
        let mut b = good[..size].to_vec();
        put(&mut b, 0, &u32::try_from(size).unwrap().to_le_bytes());
        check(&mut d, "short FormatSize", &b);
    }
    // Random bytes over random fields, 1 to 4 at a time.
    let mut cases = Cases(0x5eed_f00d_1234_5678);
    for _ in 0..300 {
        let mut b = good.clone();
        for _ in 0..=cases.below(4) {
            let at = 4 + cases.below(b.len() - 4); // FormatSize stays true
            b[at] = u8::try_from(cases.next() & 0xFF).unwrap();
        }
        check(&mut d, "random bytes", &b);
    }
    assert!(
        refused > 250,
        "only {refused} of the broken formats refused"
    );
    closed(d, filter);
}

/// The format the driver's intersect handler settles on for a client
/// range (bytes), read back with the core.
fn driver_intersection(d: &mut Driver, filter: u64, range: &[u8]) -> Option<VideoFormat> {
    let address = ok(d.client_range(&default_format()), d);
    ok(d.uc.wbytes(address, range), d);
    let (bytes, _) = ok(d.intersect(filter, address), d)?;
    Some(core_answer(&bytes).expect("the driver wrote a valid format"))
}

/// The core's choice for the same range: the first of our ranges with the
/// client's subtype that intersects (the order the model tries them in).
fn core_intersection(range: &[u8]) -> Option<VideoFormat> {
    let client = read_data_range(range).ok()?;
    let sub = &range[data_format::SUB_FORMAT..data_format::SUB_FORMAT + 16];
    DATA_RANGES
        .iter()
        .filter(|f| oracle::guid_bytes(f.pixel.subtype()) == sub)
        .find_map(|ours| intersect(&client, ours).ok())
}

#[test]
fn every_broken_range_gets_the_cores_intersection() {
    let mut d = boot(Config::default());
    let filter = ok(d.create_filter(), &d);
    let at = |field| video::RANGE_VIDEO_INFO_HEADER + field;
    let yuy2 = *DATA_RANGES
        .iter()
        .find(|f| f.pixel == PixelFormat::Yuy2)
        .unwrap();
    let good = oracle::data_range_bytes(&yuy2);
    assert_eq!(driver_intersection(&mut d, filter, &good), Some(yuy2));
    let named: Vec<(&str, usize, Vec<u8>)> = vec![
        (
            "width 0 (any)",
            at(vih::BI_WIDTH),
            0i32.to_le_bytes().to_vec(),
        ),
        (
            "width -1",
            at(vih::BI_WIDTH),
            (-1i32).to_le_bytes().to_vec(),
        ),
        (
            "height -240",
            at(vih::BI_HEIGHT),
            (-240i32).to_le_bytes().to_vec(),
        ),
        (
            "bit count 0",
            at(vih::BI_BIT_COUNT),
            0u16.to_le_bytes().to_vec(),
        ),
        (
            "interval 0 (any)",
            at(vih::AVG_TIME_PER_FRAME),
            0i64.to_le_bytes().to_vec(),
        ),
        (
            "interval -1",
            at(vih::AVG_TIME_PER_FRAME),
            (-1i64).to_le_bytes().to_vec(),
        ),
        (
            "min interval huge",
            video::RANGE_MIN_FRAME_INTERVAL,
            i64::MAX.to_le_bytes().to_vec(),
        ),
        (
            "max interval 0",
            video::RANGE_MAX_FRAME_INTERVAL,
            0i64.to_le_bytes().to_vec(),
        ),
        ("specifier garbage", data_format::SPECIFIER, vec![0x77; 16]),
        ("major garbage", data_format::MAJOR_FORMAT, vec![0x66; 16]),
    ];
    for (what, offset, value) in named {
        let mut b = good.clone();
        put(&mut b, offset, &value);
        assert_eq!(
            driver_intersection(&mut d, filter, &b),
            core_intersection(&b),
            "{what}"
        );
    }
    let mut cases = Cases(0x0dd_ba11_cafe_f00d);
    let mut matched = 0;
    for _ in 0..200 {
        let mut b = good.clone();
        for _ in 0..=cases.below(3) {
            // Past FormatSize and the subtype (which picks our ranges).
            let at = 64 + cases.below(b.len() - 64);
            b[at] = u8::try_from(cases.next() & 0xFF).unwrap();
        }
        let expected = core_intersection(&b);
        matched += usize::from(expected.is_some());
        assert_eq!(driver_intersection(&mut d, filter, &b), expected);
    }
    assert!(matched > 0 && matched < 200, "{matched} of 200 matched");
    closed(d, filter);
}

/// `SetDeviceState` with states a caller should never send: raw values
/// that are no `KSSTATE` are refused with `STATUS_INVALID_PARAMETER` and
/// change nothing; a jump over states (STOP → RUN, RUN → STOP) runs every
/// step's work in order, as the core's transition table says, and the pin
/// still closes clean.
#[test]
fn garbage_and_skipped_states_are_handled() {
    use avscap::portable::pin_state::{transition, KsState};
    use avscap_kernel_emu::layout::{KsPin, KsPinDispatch};
    use avscap_kernel_emu::machine::{call, irql};
    use avscap_kernel_emu::{ks, off};

    const STATUS_INVALID_PARAMETER: u64 = 0xC000_000D;
    let mut d = boot(Config::default());
    let filter = ok(d.create_filter(), &d);
    let pin = ok(d.connect(filter, &default_format()), &d).expect("connects");
    let routine = ok(
        ks::dispatch_routine(&d.uc, pin, off!(KsPinDispatch, set_device_state)),
        &d,
    );
    let set = |d: &mut Driver, to: u32, from: u32| -> u64 {
        let status = ok(
            d.controlled(|uc| {
                call(
                    uc,
                    routine,
                    &[pin, u64::from(to), u64::from(from)],
                    irql::PASSIVE,
                    1,
                )
            }),
            d,
        ) & 0xFFFF_FFFF;
        if status == 0 {
            ok(d.uc.w32(pin + off!(KsPin, device_state), to), d);
        }
        status
    };
    for (to, from) in [
        (4u32, 0u32),
        (0, 4),
        (u32::MAX, 0),
        (0x8000_0000, 3),
        (7, 9),
    ] {
        assert!(
            KsState::from_raw(to.cast_signed()).is_none()
                || KsState::from_raw(from.cast_signed()).is_none()
        );
        assert_eq!(
            set(&mut d, to, from),
            STATUS_INVALID_PARAMETER,
            "{to} <- {from}"
        );
    }
    // STOP → RUN in one call, then RUN → STOP: the core's whole list of
    // work for each jump runs (acquire and start; stop and release).
    assert!(transition(KsState::Stop, KsState::Run).iter().count() > 1);
    assert_eq!(set(&mut d, 3, 0), 0);
    ok(d.advance(2 * 333_333), &d);
    assert_eq!(set(&mut d, 0, 3), 0);
    ok(d.close_pin(pin), &d);
    closed(d, filter);
}
