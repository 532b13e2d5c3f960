//! Translation between the KS format structures and the core's types: the
//! static data-range table built from the core's ranges, and readers and
//! writers for client formats and ranges. No decisions: every check is the
//! core's.
//!
//! IRQL: any, unless stated. Every function here only reads and writes
//! memory it is handed (nonpaged statics, or client bytes the boundary
//! hands over) and calls nothing in the kernel.

use wdk_sys::{GUID, NTSTATUS, STATUS_INVALID_PARAMETER};

use super::bindings::{
    KSALLOCATOR_FRAMING, KSDATAFORMAT, KSDATARANGE, KS_BITMAPINFOHEADER,
    KS_DATAFORMAT_VIDEOINFOHEADER, KS_DATARANGE_VIDEO, KS_VIDEOINFOHEADER,
    KS_VIDEO_STREAM_CONFIG_CAPS, PKSDATARANGE,
};
use super::boundary::{zeroed, KsPin, KsTable};
use crate::portable::guid::{Guid, KSDATAFORMAT_SPECIFIER_VIDEOINFO, KSDATAFORMAT_TYPE_VIDEO};
use crate::portable::ks_buffers::{self, allocator_framing, data_format, video, video_info_header};
use crate::portable::video_format::{
    validate_format, FormatError, VideoFormat, VideoInfo, BITMAPINFOHEADER_SIZE, DATA_RANGES,
    DATA_RANGE_COUNT, KS_DATAFORMAT_VIDEOINFOHEADER_SIZE,
};

/// The core's GUID as the WDK's.
pub const fn to_guid(g: Guid) -> GUID {
    GUID {
        Data1: g.data1,
        Data2: g.data2,
        Data3: g.data3,
        Data4: g.data4,
    }
}

/// `sizeof` as the `ULONG` KS size fields take (all KS structs are far below 4 GiB).
#[allow(clippy::cast_possible_truncation)]
pub const fn ulong_size_of<T>() -> u32 {
    core::mem::size_of::<T>() as u32
}

/// The `KSDATAFORMAT` header of a format.
const fn data_format_header(
    format: &VideoFormat,
    format_size: u32,
    sample_size: u32,
) -> KSDATAFORMAT {
    let mut header: KSDATAFORMAT = zeroed();
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
    let mut vih: KS_VIDEOINFOHEADER = zeroed();
    vih.dwBitRate = info.bit_rate;
    vih.AvgTimePerFrame = info.avg_time_per_frame;
    vih.bmiHeader = bitmap_header(info);
    vih
}

const fn bitmap_header(info: &VideoInfo) -> KS_BITMAPINFOHEADER {
    let mut bmi: KS_BITMAPINFOHEADER = zeroed();
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
    let mut range: KS_DATARANGE_VIDEO = zeroed();
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
    let mut cc: KS_VIDEO_STREAM_CONFIG_CAPS = zeroed();
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
    let mut out: [KS_DATARANGE_VIDEO; DATA_RANGE_COUNT] = zeroed();
    let mut i = 0;
    while i < DATA_RANGE_COUNT {
        out[i] = data_range(&DATA_RANGES[i]);
        i += 1;
    }
    out
}

/// The capture pin's data ranges, one per offered format, in the core's order.
pub static KS_DATA_RANGES: KsTable<[KS_DATARANGE_VIDEO; DATA_RANGE_COUNT]> =
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
pub static KS_DATA_RANGE_POINTERS: KsTable<[PKSDATARANGE; DATA_RANGE_COUNT]> =
    KsTable(build_range_pointers());

/// Which of our ranges a `KSDATARANGE` pointer handed back by ks.sys is.
pub fn our_range(range: *const KSDATARANGE) -> Option<VideoFormat> {
    let base = KS_DATA_RANGES.0.as_ptr() as usize;
    let offset = (range as usize).checked_sub(base)?;
    let size = core::mem::size_of::<KS_DATARANGE_VIDEO>();
    if offset % size != 0 {
        return None;
    }
    DATA_RANGES.get(offset / size).copied()
}

/// The pin's connection format, validated by the core.
///
/// IRQL: PASSIVE_LEVEL.
///
/// # Errors
/// `STATUS_INVALID_PARAMETER` without a format, else the core's status.
pub fn connection_format(pin: &KsPin<'_>) -> Result<VideoFormat, NTSTATUS> {
    let bytes = pin.connection_format().ok_or(STATUS_INVALID_PARAMETER)?;
    let proposed = ks_buffers::read_data_format(bytes).map_err(FormatError::ntstatus)?;
    validate_format(&proposed).map_err(FormatError::ntstatus)
}

/// The `KS_DATAFORMAT_VIDEOINFOHEADER` for a format (the intersect handler's
/// result), or `None` for a format without a layout.
pub fn format_for(format: &VideoFormat) -> Option<KS_DATAFORMAT_VIDEOINFOHEADER> {
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

// The core reads client buffers at fixed offsets (portable::ks_buffers):
// each one is checked here against the compiler's layout of the bindings,
// so a header set that lays a structure out differently fails the build.
const _: () = {
    use core::mem::{offset_of, size_of};
    type Vih = KS_VIDEOINFOHEADER;
    assert!(offset_of!(KSDATAFORMAT, __bindgen_anon_1.FormatSize) == data_format::FORMAT_SIZE);
    assert!(offset_of!(KSDATAFORMAT, __bindgen_anon_1.SampleSize) == data_format::SAMPLE_SIZE);
    assert!(offset_of!(KSDATAFORMAT, __bindgen_anon_1.MajorFormat) == data_format::MAJOR_FORMAT);
    assert!(offset_of!(KSDATAFORMAT, __bindgen_anon_1.SubFormat) == data_format::SUB_FORMAT);
    assert!(offset_of!(KSDATAFORMAT, __bindgen_anon_1.Specifier) == data_format::SPECIFIER);
    assert!(size_of::<KSDATAFORMAT>() == data_format::SIZE);
    assert!(offset_of!(Vih, dwBitRate) == video_info_header::BIT_RATE);
    assert!(offset_of!(Vih, AvgTimePerFrame) == video_info_header::AVG_TIME_PER_FRAME);
    assert!(offset_of!(Vih, bmiHeader.biSize) == video_info_header::BI_SIZE);
    assert!(offset_of!(Vih, bmiHeader.biWidth) == video_info_header::BI_WIDTH);
    assert!(offset_of!(Vih, bmiHeader.biHeight) == video_info_header::BI_HEIGHT);
    assert!(offset_of!(Vih, bmiHeader.biPlanes) == video_info_header::BI_PLANES);
    assert!(offset_of!(Vih, bmiHeader.biBitCount) == video_info_header::BI_BIT_COUNT);
    assert!(offset_of!(Vih, bmiHeader.biCompression) == video_info_header::BI_COMPRESSION);
    assert!(offset_of!(Vih, bmiHeader.biSizeImage) == video_info_header::BI_SIZE_IMAGE);
    assert!(
        offset_of!(KS_DATAFORMAT_VIDEOINFOHEADER, VideoInfoHeader)
            == video::FORMAT_VIDEO_INFO_HEADER
    );
    assert!(
        offset_of!(KS_DATARANGE_VIDEO, ConfigCaps.MinFrameInterval)
            == video::RANGE_MIN_FRAME_INTERVAL
    );
    assert!(
        offset_of!(KS_DATARANGE_VIDEO, ConfigCaps.MaxFrameInterval)
            == video::RANGE_MAX_FRAME_INTERVAL
    );
    assert!(offset_of!(KS_DATARANGE_VIDEO, VideoInfoHeader) == video::RANGE_VIDEO_INFO_HEADER);
    assert!(size_of::<KS_DATARANGE_VIDEO>() == video::RANGE_SIZE);
    assert!(size_of::<KSALLOCATOR_FRAMING>() == allocator_framing::SIZE);
    assert!(offset_of!(KSALLOCATOR_FRAMING, PoolType) == allocator_framing::POOL_TYPE);
    assert!(offset_of!(KSALLOCATOR_FRAMING, Frames) == allocator_framing::FRAMES);
    assert!(offset_of!(KSALLOCATOR_FRAMING, FrameSize) == allocator_framing::FRAME_SIZE);
    assert!(offset_of!(KSALLOCATOR_FRAMING, __bindgen_anon_1) == allocator_framing::FLAGS);
    assert!(offset_of!(KSALLOCATOR_FRAMING, __bindgen_anon_2) == allocator_framing::FILE_ALIGNMENT);
    assert!(offset_of!(KSALLOCATOR_FRAMING, Reserved) == allocator_framing::RESERVED);
};
