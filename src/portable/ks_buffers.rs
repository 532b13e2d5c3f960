//! The KS request buffers a client hands the pin, read from their bytes.
//!
//! They are a data format (`SetDataFormat`, pin creation), a data range (the
//! intersect handler) and an allocator framing (`InitializeAllocator`).
//!
//! The kernel shell makes one byte slice of what ks.sys passed and calls
//! these readers; nothing else in the shell picks fields out of a client's
//! buffer. So the fuzz targets and tests that feed bytes here exercise the
//! very code the driver runs. The offsets are those of the WDK structures
//! (all little-endian, naturally aligned); the shell checks each one against
//! the compiler's layout of its bindings at build time.
//!
//! A reader never reads past the slice and never trusts a size field past
//! it: a `FormatSize` larger than the bytes given is refused.

use super::framing::AllocatorFraming;
use super::guid::{Guid, KSDATAFORMAT_SPECIFIER_VIDEOINFO};
use super::video_format::{
    ClientRange, ClientVideoRange, FormatError, ProposedFormat, VideoInfo,
    KS_DATAFORMAT_VIDEOINFOHEADER_SIZE,
};

/// Offsets in `KSDATAFORMAT` (and `KSDATARANGE`, the same structure).
pub mod data_format {
    /// `FormatSize`.
    pub const FORMAT_SIZE: usize = 0;
    /// `SampleSize`.
    pub const SAMPLE_SIZE: usize = 8;
    /// `MajorFormat`.
    pub const MAJOR_FORMAT: usize = 16;
    /// `SubFormat`.
    pub const SUB_FORMAT: usize = 32;
    /// `Specifier`.
    pub const SPECIFIER: usize = 48;
    /// `sizeof(KSDATAFORMAT)`.
    pub const SIZE: usize = 64;
}

/// Offsets in `KS_VIDEOINFOHEADER` (its `bmiHeader` fields included).
pub mod video_info_header {
    /// `dwBitRate`.
    pub const BIT_RATE: usize = 32;
    /// `AvgTimePerFrame`.
    pub const AVG_TIME_PER_FRAME: usize = 40;
    /// `bmiHeader.biSize`.
    pub const BI_SIZE: usize = 48;
    /// `bmiHeader.biWidth`.
    pub const BI_WIDTH: usize = 52;
    /// `bmiHeader.biHeight`.
    pub const BI_HEIGHT: usize = 56;
    /// `bmiHeader.biPlanes`.
    pub const BI_PLANES: usize = 60;
    /// `bmiHeader.biBitCount`.
    pub const BI_BIT_COUNT: usize = 62;
    /// `bmiHeader.biCompression`.
    pub const BI_COMPRESSION: usize = 64;
    /// `bmiHeader.biSizeImage`.
    pub const BI_SIZE_IMAGE: usize = 68;
}

/// Offsets in `KS_DATAFORMAT_VIDEOINFOHEADER` and `KS_DATARANGE_VIDEO`.
pub mod video {
    /// `KS_DATAFORMAT_VIDEOINFOHEADER.VideoInfoHeader`.
    pub const FORMAT_VIDEO_INFO_HEADER: usize = 64;
    /// `KS_DATARANGE_VIDEO.ConfigCaps.MinFrameInterval`.
    pub const RANGE_MIN_FRAME_INTERVAL: usize = 184;
    /// `KS_DATARANGE_VIDEO.ConfigCaps.MaxFrameInterval`.
    pub const RANGE_MAX_FRAME_INTERVAL: usize = 192;
    /// `KS_DATARANGE_VIDEO.VideoInfoHeader`.
    pub const RANGE_VIDEO_INFO_HEADER: usize = 208;
    /// `sizeof(KS_DATARANGE_VIDEO)`.
    pub const RANGE_SIZE: usize = 296;
}

/// Offsets in `KSALLOCATOR_FRAMING`.
pub mod allocator_framing {
    /// `OptionsFlags` / `RequirementsFlags` (a union).
    pub const FLAGS: usize = 0;
    /// `PoolType`.
    pub const POOL_TYPE: usize = 4;
    /// `Frames`.
    pub const FRAMES: usize = 8;
    /// `FrameSize`.
    pub const FRAME_SIZE: usize = 12;
    /// `FileAlignment` / `FramePitch` (a union).
    pub const FILE_ALIGNMENT: usize = 16;
    /// `Reserved`.
    pub const RESERVED: usize = 20;
    /// `sizeof(KSALLOCATOR_FRAMING)`.
    pub const SIZE: usize = 24;
}

/// Fixed-width little-endian reads at checked offsets: `None` past the end.
fn bytes_at<const N: usize>(bytes: &[u8], offset: usize) -> Option<[u8; N]> {
    bytes.get(offset..offset.checked_add(N)?)?.try_into().ok()
}

fn u16_at(bytes: &[u8], offset: usize) -> Option<u16> {
    bytes_at(bytes, offset).map(u16::from_le_bytes)
}

fn u32_at(bytes: &[u8], offset: usize) -> Option<u32> {
    bytes_at(bytes, offset).map(u32::from_le_bytes)
}

fn i32_at(bytes: &[u8], offset: usize) -> Option<i32> {
    bytes_at(bytes, offset).map(i32::from_le_bytes)
}

fn i64_at(bytes: &[u8], offset: usize) -> Option<i64> {
    bytes_at(bytes, offset).map(i64::from_le_bytes)
}

fn guid_at(bytes: &[u8], offset: usize) -> Option<Guid> {
    let b: [u8; 16] = bytes_at(bytes, offset)?;
    let mut data4 = [0u8; 8];
    data4.copy_from_slice(&b[8..]);
    Some(Guid::new(
        u32::from_le_bytes([b[0], b[1], b[2], b[3]]),
        u16::from_le_bytes([b[4], b[5]]),
        u16::from_le_bytes([b[6], b[7]]),
        data4,
    ))
}

/// The common header, with `FormatSize` checked against the bytes given:
/// the bytes it names, cut to that length, and the header's fields.
struct Header<'a> {
    bytes: &'a [u8],
    format_size: u32,
    sample_size: u32,
    major: Guid,
    sub: Guid,
    specifier: Guid,
}

fn header(bytes: &[u8]) -> Result<Header<'_>, FormatError> {
    use data_format::{FORMAT_SIZE, MAJOR_FORMAT, SAMPLE_SIZE, SIZE, SPECIFIER, SUB_FORMAT};
    let too_small = FormatError::HeaderTooSmall;
    let format_size = u32_at(bytes, FORMAT_SIZE).ok_or(too_small)?;
    let named = usize::try_from(format_size).map_err(|_| too_small)?;
    if named < SIZE {
        return Err(too_small);
    }
    let bytes = bytes.get(..named).ok_or(too_small)?;
    Ok(Header {
        bytes,
        format_size,
        sample_size: u32_at(bytes, SAMPLE_SIZE).ok_or(too_small)?,
        major: guid_at(bytes, MAJOR_FORMAT).ok_or(too_small)?,
        sub: guid_at(bytes, SUB_FORMAT).ok_or(too_small)?,
        specifier: guid_at(bytes, SPECIFIER).ok_or(too_small)?,
    })
}

/// Reads a client's proposed format for [`validate_format`](super::video_format::validate_format).
///
/// `bytes` is what the client sent; only its first `FormatSize` bytes are
/// read. The video header is read when `FormatSize` covers a whole
/// `KS_DATAFORMAT_VIDEOINFOHEADER`; a shorter format goes to the validator
/// with zeroed video fields and is refused there.
///
/// # Errors
/// [`FormatError::HeaderTooSmall`] when `FormatSize` is below
/// `sizeof(KSDATAFORMAT)` or above the bytes given.
pub fn read_data_format(bytes: &[u8]) -> Result<ProposedFormat, FormatError> {
    use video_info_header as v;
    let h = header(bytes)?;
    let mut proposed = ProposedFormat {
        format_size: h.format_size,
        sample_size: h.sample_size,
        major: h.major,
        sub: h.sub,
        specifier: h.specifier,
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
    if h.format_size >= KS_DATAFORMAT_VIDEOINFOHEADER_SIZE {
        let at = |field: usize| video::FORMAT_VIDEO_INFO_HEADER + field;
        let b = h.bytes;
        // FormatSize ≥ the whole structure, and `b` is FormatSize long.
        let read = || -> Option<(u32, VideoInfo)> {
            Some((
                u32_at(b, at(v::BI_SIZE))?,
                VideoInfo {
                    bit_rate: u32_at(b, at(v::BIT_RATE))?,
                    avg_time_per_frame: i64_at(b, at(v::AVG_TIME_PER_FRAME))?,
                    width: i32_at(b, at(v::BI_WIDTH))?,
                    height: i32_at(b, at(v::BI_HEIGHT))?,
                    planes: u16_at(b, at(v::BI_PLANES))?,
                    bit_count: u16_at(b, at(v::BI_BIT_COUNT))?,
                    compression: u32_at(b, at(v::BI_COMPRESSION))?,
                    size_image: u32_at(b, at(v::BI_SIZE_IMAGE))?,
                },
            ))
        };
        let (bi_size, info) = read().ok_or(FormatError::HeaderTooSmall)?;
        proposed.bi_size = bi_size;
        proposed.info = info;
    }
    Ok(proposed)
}

/// Reads a client's data range for [`intersect`](super::video_format::intersect).
///
/// The video part (size, bit count, compression, frame intervals) is read
/// when the range's specifier is `KSDATAFORMAT_SPECIFIER_VIDEOINFO` and
/// `FormatSize` covers a whole `KS_DATARANGE_VIDEO`; otherwise the range
/// constrains only the GUIDs.
///
/// # Errors
/// [`FormatError::HeaderTooSmall`] when `FormatSize` is below
/// `sizeof(KSDATARANGE)` or above the bytes given.
pub fn read_data_range(bytes: &[u8]) -> Result<ClientRange, FormatError> {
    use video_info_header as v;
    let h = header(bytes)?;
    let covers_video = usize::try_from(h.format_size).is_ok_and(|n| n >= video::RANGE_SIZE);
    let video = if covers_video && h.specifier == KSDATAFORMAT_SPECIFIER_VIDEOINFO {
        let at = |field: usize| video::RANGE_VIDEO_INFO_HEADER + field;
        let b = h.bytes;
        let read = || -> Option<ClientVideoRange> {
            Some(ClientVideoRange {
                width: i32_at(b, at(v::BI_WIDTH))?,
                height: i32_at(b, at(v::BI_HEIGHT))?,
                bit_count: u16_at(b, at(v::BI_BIT_COUNT))?,
                compression: u32_at(b, at(v::BI_COMPRESSION))?,
                avg_time_per_frame: i64_at(b, at(v::AVG_TIME_PER_FRAME))?,
                min_frame_interval: i64_at(b, video::RANGE_MIN_FRAME_INTERVAL)?,
                max_frame_interval: i64_at(b, video::RANGE_MAX_FRAME_INTERVAL)?,
            })
        };
        Some(read().ok_or(FormatError::HeaderTooSmall)?)
    } else {
        None
    };
    Ok(ClientRange::from_guids(h.major, h.sub, h.specifier, video))
}

/// Reads the `KSALLOCATOR_FRAMING` an allocator is created with, or `None`
/// for fewer bytes than the structure has.
#[must_use]
pub fn read_allocator_framing(bytes: &[u8]) -> Option<AllocatorFraming> {
    use allocator_framing::{FILE_ALIGNMENT, FLAGS, FRAMES, FRAME_SIZE, POOL_TYPE, RESERVED};
    Some(AllocatorFraming {
        flags: u32_at(bytes, FLAGS)?,
        pool_type: u32_at(bytes, POOL_TYPE)?,
        frames: u32_at(bytes, FRAMES)?,
        frame_size: u32_at(bytes, FRAME_SIZE)?,
        file_alignment: u32_at(bytes, FILE_ALIGNMENT)?,
        reserved: u32_at(bytes, RESERVED)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::portable::guid::KSDATAFORMAT_TYPE_VIDEO;
    use crate::portable::video_format::{
        default_format, intersect_any, validate_format, PixelFormat, BITMAPINFOHEADER_SIZE,
        DATA_RANGES,
    };

    fn put(b: &mut [u8], at: usize, v: &[u8]) {
        b[at..at + v.len()].copy_from_slice(v);
    }

    fn put_guid(b: &mut [u8], at: usize, g: Guid) {
        put(b, at, &g.data1.to_le_bytes());
        put(b, at + 4, &g.data2.to_le_bytes());
        put(b, at + 6, &g.data3.to_le_bytes());
        put(b, at + 8, &g.data4);
    }

    /// The bytes of a `KS_DATAFORMAT_VIDEOINFOHEADER` for the default
    /// format, written field by field at the WDK offsets.
    fn format_bytes() -> [u8; 152] {
        use video_info_header as v;
        let f = default_format();
        let info = f.video_info().unwrap();
        let mut b = [0u8; 152];
        put(&mut b, 0, &152u32.to_le_bytes());
        put(&mut b, 8, &info.size_image.to_le_bytes());
        put_guid(&mut b, 16, KSDATAFORMAT_TYPE_VIDEO);
        put_guid(&mut b, 32, f.pixel.subtype());
        put_guid(&mut b, 48, KSDATAFORMAT_SPECIFIER_VIDEOINFO);
        let at = |x| video::FORMAT_VIDEO_INFO_HEADER + x;
        put(&mut b, at(v::BIT_RATE), &info.bit_rate.to_le_bytes());
        put(
            &mut b,
            at(v::AVG_TIME_PER_FRAME),
            &info.avg_time_per_frame.to_le_bytes(),
        );
        put(&mut b, at(v::BI_SIZE), &BITMAPINFOHEADER_SIZE.to_le_bytes());
        put(&mut b, at(v::BI_WIDTH), &info.width.to_le_bytes());
        put(&mut b, at(v::BI_HEIGHT), &info.height.to_le_bytes());
        put(&mut b, at(v::BI_PLANES), &1u16.to_le_bytes());
        put(&mut b, at(v::BI_BIT_COUNT), &info.bit_count.to_le_bytes());
        put(
            &mut b,
            at(v::BI_COMPRESSION),
            &info.compression.to_le_bytes(),
        );
        put(&mut b, at(v::BI_SIZE_IMAGE), &info.size_image.to_le_bytes());
        b
    }

    #[test]
    fn a_well_formed_format_reads_back_and_validates() {
        let b = format_bytes();
        let p = read_data_format(&b).unwrap();
        assert_eq!(p.format_size, 152);
        assert_eq!(p.bi_size, BITMAPINFOHEADER_SIZE);
        assert_eq!(p.info, default_format().video_info().unwrap());
        assert_eq!(validate_format(&p), Ok(default_format()));
        // Extra bytes past FormatSize are not read.
        let mut longer = [0xEEu8; 400];
        longer[..152].copy_from_slice(&b);
        assert_eq!(read_data_format(&longer), Ok(p));
    }

    /// A `FormatSize` below the header or past the bytes given is refused,
    /// whatever the slice holds; a size between the header and the video
    /// header reads only the GUIDs.
    #[test]
    fn format_sizes_are_checked_against_the_bytes() {
        let b = format_bytes();
        for short in [0usize, 3, 4, 63] {
            assert_eq!(
                read_data_format(&b[..short]),
                Err(FormatError::HeaderTooSmall),
                "{short}"
            );
        }
        for size in [0u32, 1, 63, 153, u32::MAX] {
            let mut lying = b;
            put(&mut lying, 0, &size.to_le_bytes());
            assert_eq!(
                read_data_format(&lying),
                Err(FormatError::HeaderTooSmall),
                "{size}"
            );
        }
        let mut header_only = b;
        put(&mut header_only, 0, &64u32.to_le_bytes());
        let p = read_data_format(&header_only).unwrap();
        assert_eq!((p.format_size, p.bi_size, p.info.width), (64, 0, 0));
        assert_eq!(validate_format(&p), Err(FormatError::BitmapHeaderTooSmall));
    }

    #[test]
    fn ranges_read_their_video_part_only_when_whole() {
        use video_info_header as v;
        let mut b = [0u8; video::RANGE_SIZE];
        let size = u32::try_from(video::RANGE_SIZE).unwrap();
        put(&mut b, 0, &size.to_le_bytes());
        put_guid(&mut b, 16, KSDATAFORMAT_TYPE_VIDEO);
        put_guid(&mut b, 32, PixelFormat::Yuy2.subtype());
        put_guid(&mut b, 48, KSDATAFORMAT_SPECIFIER_VIDEOINFO);
        let at = |x| video::RANGE_VIDEO_INFO_HEADER + x;
        put(&mut b, at(v::BI_WIDTH), &320i32.to_le_bytes());
        put(&mut b, at(v::BI_HEIGHT), &240i32.to_le_bytes());
        put(&mut b, at(v::BI_BIT_COUNT), &16u16.to_le_bytes());
        put(
            &mut b,
            at(v::BI_COMPRESSION),
            &PixelFormat::Yuy2.compression().to_le_bytes(),
        );
        put(
            &mut b,
            video::RANGE_MIN_FRAME_INTERVAL,
            &166_667i64.to_le_bytes(),
        );
        put(
            &mut b,
            video::RANGE_MAX_FRAME_INTERVAL,
            &166_667i64.to_le_bytes(),
        );
        let r = read_data_range(&b).unwrap();
        let video = r.video.unwrap();
        assert_eq!((video.width, video.height, video.bit_count), (320, 240, 16));
        assert_eq!(video.min_frame_interval, 166_667);
        let f = intersect_any(&r).unwrap();
        assert_eq!(
            (f.pixel, f.width, f.height, f.frame_interval),
            (PixelFormat::Yuy2, 320, 240, 166_667)
        );
        assert!(DATA_RANGES.contains(&f));
        // One byte short of the video part: a GUID-only range.
        put(&mut b, 0, &(size - 1).to_le_bytes());
        assert_eq!(read_data_range(&b).unwrap().video, None);
        // A FormatSize past the bytes is refused.
        put(&mut b, 0, &(size + 1).to_le_bytes());
        assert_eq!(read_data_range(&b), Err(FormatError::HeaderTooSmall));
    }

    #[test]
    fn allocator_framing_reads_every_field() {
        let mut b = [0u8; allocator_framing::SIZE];
        for (i, chunk) in b.chunks_mut(4).enumerate() {
            let n = u32::try_from(i).unwrap() + 1;
            chunk.copy_from_slice(&(0x1111_1111 * n).to_le_bytes());
        }
        let f = read_allocator_framing(&b).unwrap();
        assert_eq!(
            [
                f.flags,
                f.pool_type,
                f.frames,
                f.frame_size,
                f.file_alignment,
                f.reserved
            ],
            [
                0x1111_1111,
                0x2222_2222,
                0x3333_3333,
                0x4444_4444,
                0x5555_5555,
                0x6666_6666
            ]
        );
        assert_eq!(read_allocator_framing(&b[..23]), None);
    }
}
