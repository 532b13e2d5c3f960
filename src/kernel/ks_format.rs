//! Translation between the KS format structures and the core's types: the
//! static data-range table built from the core's ranges, and readers and
//! writers for client formats and ranges. No decisions: every check is the
//! core's.
//!
//! IRQL: any. Every function here only reads and writes memory it is
//! handed (nonpaged statics, or client buffers ks.sys has locked) and calls
//! nothing in the kernel.

use wdk_sys::GUID;

use super::bindings::{
    KSDATAFORMAT, KSDATARANGE, KS_BITMAPINFOHEADER, KS_DATAFORMAT_VIDEOINFOHEADER,
    KS_DATARANGE_VIDEO, KS_VIDEOINFOHEADER, KS_VIDEO_STREAM_CONFIG_CAPS, PKSDATARANGE,
};
use super::driver_entry::KsTable;
use crate::portable::guid::{Guid, KSDATAFORMAT_SPECIFIER_VIDEOINFO, KSDATAFORMAT_TYPE_VIDEO};
use crate::portable::video_format::{
    ClientRange, ClientVideoRange, ProposedFormat, VideoFormat, VideoInfo, BITMAPINFOHEADER_SIZE,
    DATA_RANGES, DATA_RANGE_COUNT, KS_DATAFORMAT_VIDEOINFOHEADER_SIZE,
};

/// The core's GUID as the WDK's.
pub(crate) const fn to_guid(g: Guid) -> GUID {
    GUID {
        Data1: g.data1,
        Data2: g.data2,
        Data3: g.data3,
        Data4: g.data4,
    }
}

/// The WDK's GUID as the core's.
pub(crate) const fn from_guid(g: &GUID) -> Guid {
    Guid::new(g.Data1, g.Data2, g.Data3, g.Data4)
}

/// `sizeof` as the `ULONG` KS size fields take (all KS structs are far below 4 GiB).
#[allow(clippy::cast_possible_truncation)]
pub(crate) const fn ulong_size_of<T>() -> u32 {
    core::mem::size_of::<T>() as u32
}

/// The `KSDATAFORMAT` header of a format.
const fn data_format_header(
    format: &VideoFormat,
    format_size: u32,
    sample_size: u32,
) -> KSDATAFORMAT {
    // SAFETY: KSDATAFORMAT is integers and GUIDs; all-zero is a valid value.
    let mut header: KSDATAFORMAT = unsafe { core::mem::zeroed() };
    header.__bindgen_anon_1.FormatSize = format_size;
    header.__bindgen_anon_1.SampleSize = sample_size;
    header.__bindgen_anon_1.MajorFormat = to_guid(KSDATAFORMAT_TYPE_VIDEO);
    header.__bindgen_anon_1.SubFormat = to_guid(format.pixel.subtype());
    header.__bindgen_anon_1.Specifier = to_guid(KSDATAFORMAT_SPECIFIER_VIDEOINFO);
    header
}

/// `KS_VIDEOINFOHEADER` of a format (source/target rectangles empty: the
/// whole frame).
const fn video_info_header(info: &VideoInfo) -> KS_VIDEOINFOHEADER {
    // SAFETY: KS_VIDEOINFOHEADER is integers and RECTs; all-zero is valid.
    let mut vih: KS_VIDEOINFOHEADER = unsafe { core::mem::zeroed() };
    vih.dwBitRate = info.bit_rate;
    vih.AvgTimePerFrame = info.avg_time_per_frame;
    vih.bmiHeader = bitmap_header(info);
    vih
}

const fn bitmap_header(info: &VideoInfo) -> KS_BITMAPINFOHEADER {
    // SAFETY: KS_BITMAPINFOHEADER is integers; all-zero is valid.
    let mut bmi: KS_BITMAPINFOHEADER = unsafe { core::mem::zeroed() };
    bmi.biSize = BITMAPINFOHEADER_SIZE;
    bmi.biWidth = info.width;
    bmi.biHeight = info.height;
    bmi.biPlanes = info.planes;
    bmi.biBitCount = info.bit_count;
    bmi.biCompression = info.compression;
    bmi.biSizeImage = info.size_image;
    bmi
}

/// One `KS_DATARANGE_VIDEO`, for the static table. A format without a
/// layout (none of the offered ones) would give an all-zero range, which
/// the layout test in `portable` rules out.
const fn data_range(format: &VideoFormat) -> KS_DATARANGE_VIDEO {
    // SAFETY: KS_DATARANGE_VIDEO is integers, GUIDs, SIZEs and RECTs;
    // all-zero is a valid value.
    let mut range: KS_DATARANGE_VIDEO = unsafe { core::mem::zeroed() };
    let (Ok(info), Ok(caps)) = (format.video_info(), format.config_caps()) else {
        return range;
    };
    range.DataRange = data_format_header(
        format,
        ulong_size_of::<KS_DATARANGE_VIDEO>(),
        info.size_image,
    );
    range.bFixedSizeSamples = 1;
    range.bTemporalCompression = 0;
    // SAFETY: as above.
    let mut cc: KS_VIDEO_STREAM_CONFIG_CAPS = unsafe { core::mem::zeroed() };
    cc.guid = to_guid(KSDATAFORMAT_SPECIFIER_VIDEOINFO);
    cc.InputSize.cx = caps.width;
    cc.InputSize.cy = caps.height;
    cc.MinCroppingSize = cc.InputSize;
    cc.MaxCroppingSize = cc.InputSize;
    cc.MinOutputSize = cc.InputSize;
    cc.MaxOutputSize = cc.InputSize;
    cc.CropGranularityX = caps.granularity_x;
    cc.CropGranularityY = caps.granularity_y;
    cc.CropAlignX = caps.granularity_x;
    cc.CropAlignY = caps.granularity_y;
    cc.OutputGranularityX = caps.granularity_x;
    cc.OutputGranularityY = caps.granularity_y;
    cc.MinFrameInterval = caps.frame_interval;
    cc.MaxFrameInterval = caps.frame_interval;
    cc.MinBitsPerSecond = caps.bits_per_second;
    cc.MaxBitsPerSecond = caps.bits_per_second;
    range.ConfigCaps = cc;
    range.VideoInfoHeader = video_info_header(&info);
    range
}

const fn build_ranges() -> [KS_DATARANGE_VIDEO; DATA_RANGE_COUNT] {
    // SAFETY: as in `data_range`.
    let mut out: [KS_DATARANGE_VIDEO; DATA_RANGE_COUNT] = unsafe { core::mem::zeroed() };
    let mut i = 0;
    while i < DATA_RANGE_COUNT {
        out[i] = data_range(&DATA_RANGES[i]);
        i += 1;
    }
    out
}

/// The capture pin's data ranges, one per offered format, in the core's order.
pub(crate) static KS_DATA_RANGES: KsTable<[KS_DATARANGE_VIDEO; DATA_RANGE_COUNT]> =
    KsTable(build_ranges());

const fn build_range_pointers() -> [PKSDATARANGE; DATA_RANGE_COUNT] {
    let mut out = [core::ptr::null_mut(); DATA_RANGE_COUNT];
    let mut i = 0;
    while i < DATA_RANGE_COUNT {
        // `*mut` only because the C member is a non-const pointer: ks.sys
        // never writes through it.
        out[i] = (&raw const KS_DATA_RANGES.0[i])
            .cast::<KSDATARANGE>()
            .cast_mut();
        i += 1;
    }
    out
}

/// The pointer table `KSPIN_DESCRIPTOR.DataRanges` points at.
pub(crate) static KS_DATA_RANGE_POINTERS: KsTable<[PKSDATARANGE; DATA_RANGE_COUNT]> =
    KsTable(build_range_pointers());

/// Which of our ranges a `KSDATARANGE` pointer handed back by ks.sys is.
pub(crate) fn our_range(range: *const KSDATARANGE) -> Option<VideoFormat> {
    let base = KS_DATA_RANGES.0.as_ptr() as usize;
    let offset = (range as usize).checked_sub(base)?;
    let size = core::mem::size_of::<KS_DATARANGE_VIDEO>();
    if offset % size != 0 {
        return None;
    }
    DATA_RANGES.get(offset / size).copied()
}

/// The header fields every KS format and range starts with.
fn guids(header: &KSDATAFORMAT) -> (u32, u32, Guid, Guid, Guid) {
    // SAFETY: both members of the KSDATAFORMAT union cover the same
    // initialised bytes; the struct member is plain integers and GUIDs, so
    // any bytes are a valid value.
    let h = unsafe { &header.__bindgen_anon_1 };
    (
        h.FormatSize,
        h.SampleSize,
        from_guid(&h.MajorFormat),
        from_guid(&h.SubFormat),
        from_guid(&h.Specifier),
    )
}

fn video_info(vih: &KS_VIDEOINFOHEADER) -> VideoInfo {
    let b = &vih.bmiHeader;
    VideoInfo {
        bit_rate: vih.dwBitRate,
        avg_time_per_frame: vih.AvgTimePerFrame,
        width: b.biWidth,
        height: b.biHeight,
        planes: b.biPlanes,
        bit_count: b.biBitCount,
        compression: b.biCompression,
        size_image: b.biSizeImage,
    }
}

/// Reads a client's proposed format for the core's validator.
///
/// # Safety
/// `format` points at a readable format of at least `FormatSize` bytes and
/// at least `sizeof(KSDATAFORMAT)` (ks.sys checks both before it calls the
/// pin with a format).
pub(crate) unsafe fn read_format(format: *const KSDATAFORMAT) -> ProposedFormat {
    // SAFETY: the caller guarantees the header is readable; it may be
    // unaligned in a client's buffer, hence read_unaligned.
    let header = unsafe { format.read_unaligned() };
    let (format_size, sample_size, major, sub, specifier) = guids(&header);
    let mut proposed = ProposedFormat {
        format_size,
        sample_size,
        major,
        sub,
        specifier,
        bi_size: 0,
        info: VideoInfo {
            bit_rate: 0,
            avg_time_per_frame: 0,
            width: 0,
            height: 0,
            planes: 0,
            bit_count: 0,
            compression: 0,
            size_image: 0,
        },
    };
    // Only a buffer that holds the whole video header is read further; a
    // shorter one goes to the validator as is and is refused there.
    if format_size >= KS_DATAFORMAT_VIDEOINFOHEADER_SIZE {
        // SAFETY: the caller guarantees FormatSize readable bytes, and they
        // cover a KS_DATAFORMAT_VIDEOINFOHEADER.
        let full = unsafe {
            format
                .cast::<KS_DATAFORMAT_VIDEOINFOHEADER>()
                .read_unaligned()
        };
        proposed.bi_size = full.VideoInfoHeader.bmiHeader.biSize;
        proposed.info = video_info(&full.VideoInfoHeader);
    }
    proposed
}

/// Reads a client's data range for the core's intersection.
///
/// # Safety
/// As [`read_format`]: `range` holds `FormatSize` readable bytes (ks.sys
/// checks each range of a multiple-item request against the request size).
pub(crate) unsafe fn read_client_range(range: *const KSDATARANGE) -> ClientRange {
    // SAFETY: the caller guarantees the header is readable.
    let header = unsafe { range.read_unaligned() };
    let (format_size, _, major, sub, specifier) = guids(&header);
    let video = (format_size >= ulong_size_of::<KS_DATARANGE_VIDEO>()
        && specifier == KSDATAFORMAT_SPECIFIER_VIDEOINFO)
        .then(|| {
            // SAFETY: FormatSize readable bytes cover a KS_DATARANGE_VIDEO.
            let v = unsafe { range.cast::<KS_DATARANGE_VIDEO>().read_unaligned() };
            let b = &v.VideoInfoHeader.bmiHeader;
            ClientVideoRange {
                width: b.biWidth,
                height: b.biHeight,
                bit_count: b.biBitCount,
                compression: b.biCompression,
                avg_time_per_frame: v.VideoInfoHeader.AvgTimePerFrame,
                min_frame_interval: v.ConfigCaps.MinFrameInterval,
                max_frame_interval: v.ConfigCaps.MaxFrameInterval,
            }
        });
    ClientRange::from_guids(major, sub, specifier, video)
}

/// The `KS_DATAFORMAT_VIDEOINFOHEADER` for a format (the intersect handler's
/// result), or `None` for a format without a layout.
pub(crate) fn format_for(format: &VideoFormat) -> Option<KS_DATAFORMAT_VIDEOINFOHEADER> {
    let info = format.video_info().ok()?;
    Some(KS_DATAFORMAT_VIDEOINFOHEADER {
        DataFormat: data_format_header(format, KS_DATAFORMAT_VIDEOINFOHEADER_SIZE, info.size_image),
        VideoInfoHeader: video_info_header(&info),
    })
}

const _: () =
    assert!(ulong_size_of::<KS_DATAFORMAT_VIDEOINFOHEADER>() == KS_DATAFORMAT_VIDEOINFOHEADER_SIZE);
const _: () = assert!(ulong_size_of::<KS_BITMAPINFOHEADER>() == BITMAPINFOHEADER_SIZE);

// The static table is the core's ranges, translated field by field: checked
// at compile time for every range, so a translation slip fails the build.
const _: () = {
    let ranges = build_ranges();
    let mut i = 0;
    while i < DATA_RANGE_COUNT {
        let r = &ranges[i];
        let f = &DATA_RANGES[i];
        let (Ok(layout), Ok(info)) = (f.layout(), f.video_info()) else {
            panic!("an offered format has no layout");
        };
        // SAFETY: both members of the KSDATAFORMAT union cover the same
        // initialised bytes, all integers and GUIDs.
        let header = unsafe { r.DataRange.__bindgen_anon_1 };
        assert!(header.FormatSize == ulong_size_of::<KS_DATARANGE_VIDEO>());
        assert!(header.SampleSize == layout.image_size());
        assert!(header.MajorFormat.Data1 == KSDATAFORMAT_TYPE_VIDEO.data1);
        assert!(header.SubFormat.Data1 == f.pixel.subtype().data1);
        assert!(header.SubFormat.Data2 == f.pixel.subtype().data2);
        assert!(header.Specifier.Data1 == KSDATAFORMAT_SPECIFIER_VIDEOINFO.data1);
        assert!(r.bFixedSizeSamples == 1 && r.bTemporalCompression == 0);
        assert!(r.ConfigCaps.MinFrameInterval == f.frame_interval);
        assert!(r.ConfigCaps.MaxFrameInterval == f.frame_interval);
        assert!(
            r.ConfigCaps.InputSize.cx == info.width && r.ConfigCaps.InputSize.cy == info.height
        );
        let vih = &r.VideoInfoHeader;
        assert!(vih.AvgTimePerFrame == f.frame_interval);
        assert!(vih.dwBitRate == info.bit_rate);
        assert!(vih.bmiHeader.biSize == BITMAPINFOHEADER_SIZE);
        assert!(vih.bmiHeader.biWidth == info.width && vih.bmiHeader.biHeight == info.height);
        assert!(vih.bmiHeader.biBitCount == f.pixel.bit_count());
        assert!(vih.bmiHeader.biCompression == f.pixel.compression());
        assert!(vih.bmiHeader.biSizeImage == layout.image_size());
        i += 1;
    }
};
