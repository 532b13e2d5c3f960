//! Intersection and validation of client formats against the pin's ranges.
#![allow(clippy::cast_sign_loss, clippy::cast_possible_wrap)]

use avscap::portable::guid::{
    Guid, GUID_NULL, KSDATAFORMAT_SPECIFIER_VIDEOINFO, KSDATAFORMAT_TYPE_VIDEO, MEDIASUBTYPE_NV12,
    MEDIASUBTYPE_RGB24, MEDIASUBTYPE_YUY2,
};
use avscap::portable::video_format::{
    intersect, intersect_any, validate_format, ClientRange, ClientVideoRange, FormatError,
    PixelFormat, ProposedFormat, DATA_RANGES, FOURCC_NV12, FOURCC_YUY2, FRAME_INTERVALS,
    FRAME_SIZES, KS_BI_RGB, KS_DATAFORMAT_VIDEOINFOHEADER_SIZE,
};
use proptest::prelude::*;

fn guid() -> impl Strategy<Value = Guid> {
    prop_oneof![
        Just(GUID_NULL),
        Just(KSDATAFORMAT_TYPE_VIDEO),
        Just(KSDATAFORMAT_SPECIFIER_VIDEOINFO),
        Just(MEDIASUBTYPE_YUY2),
        Just(MEDIASUBTYPE_RGB24),
        Just(MEDIASUBTYPE_NV12),
        any::<u32>().prop_map(|d| Guid::new(d, 1, 2, [3; 8])),
    ]
}

fn video_range() -> impl Strategy<Value = ClientVideoRange> {
    let dim = |v: &'static [i32]| proptest::sample::select(v.to_vec());
    (
        dim(&[0, 320, 640, 1280, 1920, 3840, 800, -1]),
        dim(&[0, 240, 480, 720, 1080, 2160, 600, -480]),
        prop_oneof![
            Just((0u16, 0u32)),
            Just((16, FOURCC_YUY2)),
            Just((24, KS_BI_RGB)),
            Just((12, FOURCC_NV12)),
            Just((32, 0))
        ],
        prop_oneof![
            Just(0i64),
            Just(333_333),
            Just(333_334),
            Just(666_667),
            Just(166_667),
            Just(400_000)
        ],
        prop_oneof![Just((0i64, 0i64)), (0i64..1_000_000, 0i64..1_000_000)],
    )
        .prop_map(
            |(width, height, (bit_count, compression), avg, (a, b))| ClientVideoRange {
                width,
                height,
                bit_count,
                compression,
                avg_time_per_frame: avg,
                min_frame_interval: a.min(b),
                max_frame_interval: a.max(b),
            },
        )
}

fn client_range() -> impl Strategy<Value = ClientRange> {
    (guid(), guid(), guid(), proptest::option::of(video_range()))
        .prop_map(|(major, sub, spec, video)| ClientRange::from_guids(major, sub, spec, video))
}

proptest! {
    // Miri interprets every case: a few there (the persisted regressions
    // still run first), the full count otherwise.
    #![proptest_config(ProptestConfig::with_cases(if cfg!(miri) { 8 } else { 2048 }))]

    /// A match satisfies both sides: it is one of our ranges, it meets every
    /// constraint the client set, and the format it names validates to itself.
    /// No match means no range of ours satisfies the client.
    #[test]
    fn intersection_satisfies_both_sides(client in client_range()) {
        match intersect_any(&client) {
            Ok(f) => {
                prop_assert!(DATA_RANGES.contains(&f));
                prop_assert!(client.major.is_none_or(|g| g == KSDATAFORMAT_TYPE_VIDEO));
                prop_assert!(client.sub.is_none_or(|g| g == f.pixel.subtype()));
                prop_assert!(client.specifier.is_none_or(|g| g == KSDATAFORMAT_SPECIFIER_VIDEOINFO));
                if let Some(v) = client.video {
                    prop_assert!(v.width == 0 || v.width as u32 == f.width);
                    // A YUV height matches by its size whatever its sign;
                    // an RGB height must be the positive (bottom-up) one.
                    prop_assert!(
                        v.height == 0
                            || v.height as u32 == f.height
                            || (f.pixel != PixelFormat::Rgb24 && v.height.unsigned_abs() == f.height)
                    );
                    prop_assert!(v.bit_count == 0 || v.bit_count == f.pixel.bit_count());
                    if v.min_frame_interval != 0 || v.max_frame_interval != 0 {
                        prop_assert!((v.min_frame_interval..=v.max_frame_interval).contains(&f.frame_interval));
                    }
                }
                let proposed = ProposedFormat::for_format(&f).unwrap();
                prop_assert_eq!(validate_format(&proposed), Ok(f));
            }
            Err(e) => {
                prop_assert_eq!(e, FormatError::NoMatch);
                for ours in &DATA_RANGES {
                    prop_assert_eq!(intersect(&client, ours), Err(FormatError::NoMatch));
                }
            }
        }
    }

    /// Validation never panics and never accepts a format we do not offer.
    #[test]
    fn validation_only_accepts_offered_formats(
        format_size in any::<u32>(), sample_size in any::<u32>(), bi_size in prop_oneof![Just(40u32), any::<u32>()],
        sub in guid(), width in any::<i32>(), height in any::<i32>(), planes in 0u16..3,
        (bit_count, compression) in prop_oneof![Just((16u16, FOURCC_YUY2)), Just((24, KS_BI_RGB)), Just((12, FOURCC_NV12)), (any::<u16>(), any::<u32>())],
        size_image in any::<u32>(), avg in any::<i64>(), pick in 0usize..45, use_pick in any::<bool>(),
    ) {
        let (width, height) = if use_pick { (DATA_RANGES[pick].width as i32, DATA_RANGES[pick].height as i32) } else { (width, height) };
        let p = ProposedFormat {
            format_size, sample_size, major: KSDATAFORMAT_TYPE_VIDEO, sub,
            specifier: KSDATAFORMAT_SPECIFIER_VIDEOINFO, bi_size,
            info: avscap::portable::video_format::VideoInfo {
                bit_rate: 0, avg_time_per_frame: avg, width, height, planes, bit_count, compression, size_image,
            },
        };
        match validate_format(&p) {
            Ok(f) => {
                prop_assert!(DATA_RANGES.contains(&f));
                prop_assert!(FRAME_SIZES.contains(&(f.width, f.height)));
                prop_assert!(FRAME_INTERVALS.contains(&f.frame_interval));
                prop_assert!(format_size >= KS_DATAFORMAT_VIDEOINFOHEADER_SIZE);
            }
            Err(e) => prop_assert!(e.ntstatus() < 0),
        }
    }
}
