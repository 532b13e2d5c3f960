//! What the driver's structures and frames must be, computed on the host
//! from the portable core (`avscap` without the kernel feature) and laid out
//! with this crate's own mirrors of the KS structures: an independent
//! translation to check the driver's against.

use avscap::portable::framing::PinFraming;
use avscap::portable::guid::{Guid, KSDATAFORMAT_SPECIFIER_VIDEOINFO, KSDATAFORMAT_TYPE_VIDEO};
use avscap::portable::image::{synthesize, DeliveryPath, Overlay};
use avscap::portable::video_format::VideoFormat;

use crate::layout::{
    size, KsAllocatorFramingEx, KsBitmapInfoHeader, KsDataFormat, KsDataFormatVideoInfoHeader,
    KsDataRangeVideo, KsFramingItem, KsVideoInfoHeader, KsVideoStreamConfigCaps,
};
use crate::off;

/// A GUID's 16 bytes as Windows lays them out.
#[must_use]
pub fn guid_bytes(g: Guid) -> Vec<u8> {
    let mut out = Vec::with_capacity(16);
    out.extend_from_slice(&g.data1.to_le_bytes());
    out.extend_from_slice(&g.data2.to_le_bytes());
    out.extend_from_slice(&g.data3.to_le_bytes());
    out.extend_from_slice(&g.data4);
    out
}

fn put(buf: &mut [u8], at: u64, bytes: &[u8]) {
    buf[at as usize..at as usize + bytes.len()].copy_from_slice(bytes);
}

fn put_u32(buf: &mut [u8], at: u64, v: u32) {
    put(buf, at, &v.to_le_bytes());
}

fn put_i32(buf: &mut [u8], at: u64, v: i32) {
    put(buf, at, &v.to_le_bytes());
}

fn put_i64(buf: &mut [u8], at: u64, v: i64) {
    put(buf, at, &v.to_le_bytes());
}

fn data_format_header(buf: &mut [u8], at: u64, format: &VideoFormat, format_size: u32) {
    let info = format.video_info().expect("an offered format");
    put_u32(buf, at + off!(KsDataFormat, format_size), format_size);
    put_u32(buf, at + off!(KsDataFormat, sample_size), info.size_image);
    put(
        buf,
        at + off!(KsDataFormat, major_format),
        &guid_bytes(KSDATAFORMAT_TYPE_VIDEO),
    );
    put(
        buf,
        at + off!(KsDataFormat, sub_format),
        &guid_bytes(format.pixel.subtype()),
    );
    put(
        buf,
        at + off!(KsDataFormat, specifier),
        &guid_bytes(KSDATAFORMAT_SPECIFIER_VIDEOINFO),
    );
}

fn video_info_header(buf: &mut [u8], at: u64, format: &VideoFormat) {
    let info = format.video_info().expect("an offered format");
    put_u32(
        buf,
        at + off!(KsVideoInfoHeader, dw_bit_rate),
        info.bit_rate,
    );
    put_i64(
        buf,
        at + off!(KsVideoInfoHeader, avg_time_per_frame),
        info.avg_time_per_frame,
    );
    let b = at + off!(KsVideoInfoHeader, bmi_header);
    put_u32(
        buf,
        b + off!(KsBitmapInfoHeader, bi_size),
        size::<KsBitmapInfoHeader>() as u32,
    );
    put_i32(buf, b + off!(KsBitmapInfoHeader, bi_width), info.width);
    put_i32(buf, b + off!(KsBitmapInfoHeader, bi_height), info.height);
    put(
        buf,
        b + off!(KsBitmapInfoHeader, bi_planes),
        &info.planes.to_le_bytes(),
    );
    put(
        buf,
        b + off!(KsBitmapInfoHeader, bi_bit_count),
        &info.bit_count.to_le_bytes(),
    );
    put_u32(
        buf,
        b + off!(KsBitmapInfoHeader, bi_compression),
        info.compression,
    );
    put_u32(
        buf,
        b + off!(KsBitmapInfoHeader, bi_size_image),
        info.size_image,
    );
}

/// The `KS_DATARANGE_VIDEO` the pin must offer for `format`.
#[must_use]
pub fn data_range_bytes(format: &VideoFormat) -> Vec<u8> {
    let mut buf = vec![0u8; size::<KsDataRangeVideo>() as usize];
    data_format_header(&mut buf, 0, format, size::<KsDataRangeVideo>() as u32);
    put_i32(&mut buf, off!(KsDataRangeVideo, b_fixed_size_samples), 1);
    let caps = format.config_caps().expect("an offered format");
    let c = off!(KsDataRangeVideo, config_caps);
    put(
        &mut buf,
        c + off!(KsVideoStreamConfigCaps, guid),
        &guid_bytes(KSDATAFORMAT_SPECIFIER_VIDEOINFO),
    );
    for field in [
        off!(KsVideoStreamConfigCaps, input_size),
        off!(KsVideoStreamConfigCaps, min_cropping_size),
        off!(KsVideoStreamConfigCaps, max_cropping_size),
        off!(KsVideoStreamConfigCaps, min_output_size),
        off!(KsVideoStreamConfigCaps, max_output_size),
    ] {
        put_i32(&mut buf, c + field, caps.width);
        put_i32(&mut buf, c + field + 4, caps.height);
    }
    for field in [
        off!(KsVideoStreamConfigCaps, crop_granularity_x),
        off!(KsVideoStreamConfigCaps, crop_align_x),
        off!(KsVideoStreamConfigCaps, output_granularity_x),
    ] {
        put_i32(&mut buf, c + field, caps.granularity_x);
    }
    for field in [
        off!(KsVideoStreamConfigCaps, crop_granularity_y),
        off!(KsVideoStreamConfigCaps, crop_align_y),
        off!(KsVideoStreamConfigCaps, output_granularity_y),
    ] {
        put_i32(&mut buf, c + field, caps.granularity_y);
    }
    put_i64(
        &mut buf,
        c + off!(KsVideoStreamConfigCaps, min_frame_interval),
        caps.frame_interval,
    );
    put_i64(
        &mut buf,
        c + off!(KsVideoStreamConfigCaps, max_frame_interval),
        caps.frame_interval,
    );
    put_i32(
        &mut buf,
        c + off!(KsVideoStreamConfigCaps, min_bits_per_second),
        caps.bits_per_second,
    );
    put_i32(
        &mut buf,
        c + off!(KsVideoStreamConfigCaps, max_bits_per_second),
        caps.bits_per_second,
    );
    video_info_header(&mut buf, off!(KsDataRangeVideo, video_info_header), format);
    buf
}

/// The `KS_DATAFORMAT_VIDEOINFOHEADER` the intersect handler must write for
/// `format`.
#[must_use]
pub fn data_format_bytes(format: &VideoFormat) -> Vec<u8> {
    let mut buf = vec![0u8; size::<KsDataFormatVideoInfoHeader>() as usize];
    data_format_header(
        &mut buf,
        0,
        format,
        size::<KsDataFormatVideoInfoHeader>() as u32,
    );
    video_info_header(
        &mut buf,
        off!(KsDataFormatVideoInfoHeader, video_info_header),
        format,
    );
    buf
}

/// The `KSALLOCATOR_FRAMING_EX` for a core framing (one item, 1:1).
#[must_use]
pub fn framing_ex_bytes(p: &PinFraming) -> Vec<u8> {
    let mut buf = vec![0u8; size::<KsAllocatorFramingEx>() as usize];
    put_u32(&mut buf, off!(KsAllocatorFramingEx, count_items), 1);
    put_u32(
        &mut buf,
        off!(KsAllocatorFramingEx, output_compression.ratio_numerator),
        1,
    );
    put_u32(
        &mut buf,
        off!(KsAllocatorFramingEx, output_compression.ratio_denominator),
        1,
    );
    let i = off!(KsAllocatorFramingEx, framing_item);
    put(
        &mut buf,
        i + off!(KsFramingItem, memory_type),
        &guid_bytes(p.memory_type),
    );
    put(
        &mut buf,
        i + off!(KsFramingItem, bus_type),
        &guid_bytes(p.bus_type),
    );
    put_u32(&mut buf, i + off!(KsFramingItem, flags), p.flags);
    put_u32(&mut buf, i + off!(KsFramingItem, frames), p.frames);
    put_u32(
        &mut buf,
        i + off!(KsFramingItem, file_alignment),
        p.file_alignment,
    );
    put_u32(
        &mut buf,
        i + off!(KsFramingItem, physical_range.min_frame_size),
        p.physical_range.min,
    );
    put_u32(
        &mut buf,
        i + off!(KsFramingItem, physical_range.max_frame_size),
        p.physical_range.max,
    );
    put_u32(
        &mut buf,
        i + off!(KsFramingItem, physical_range.stepping),
        p.physical_range.stepping,
    );
    put_u32(
        &mut buf,
        i + off!(KsFramingItem, framing_range.range.min_frame_size),
        p.framing_range.min,
    );
    put_u32(
        &mut buf,
        i + off!(KsFramingItem, framing_range.range.max_frame_size),
        p.framing_range.max,
    );
    put_u32(
        &mut buf,
        i + off!(KsFramingItem, framing_range.range.stepping),
        p.framing_range.stepping,
    );
    buf
}

/// The image the host build of the core synthesizes for a frame of
/// `format` with this picture number, drop count and delivery path (its
/// stream time is the picture number's interval count).
#[must_use]
pub fn expected_image(
    format: &VideoFormat,
    picture_number: u64,
    dropped: u64,
    path: DeliveryPath,
) -> Vec<u8> {
    let layout = format.layout().expect("an offered format");
    let mut buf = vec![0u8; layout.image_size() as usize];
    let overlay = Overlay {
        stream_time_100ns: picture_number as i64 * format.frame_interval,
        frame_number: picture_number,
        dropped,
        path,
    };
    synthesize(&mut buf, &layout, layout.stride(), &overlay)
        .expect("synthesis of an offered format");
    buf
}
