//! Video formats of the capture pin: ranges, sizes, validation and
//! intersection.
//!
//! The data ranges the pin offers, the stride and image-size arithmetic of
//! each, validation of a format a client proposes (`SetDataFormat`), and
//! intersection of a client's data range with ours (the pin's intersect
//! handler).
//!
//! The KS structures (`KS_DATARANGE_VIDEO`, `KS_VIDEOINFOHEADER`) are not
//! named here; the kernel shell copies their fields into [`ProposedFormat`] /
//! [`ClientRange`] and writes [`VideoFormat::video_info`] back out.

use super::guid::{
    Guid, KSDATAFORMAT_SPECIFIER_VIDEOINFO, KSDATAFORMAT_TYPE_VIDEO, MEDIASUBTYPE_NV12,
    MEDIASUBTYPE_RGB24, MEDIASUBTYPE_YUY2,
};
use super::status::{
    NtStatus, STATUS_BUFFER_OVERFLOW, STATUS_BUFFER_TOO_SMALL, STATUS_INVALID_PARAMETER,
    STATUS_NO_MATCH, STATUS_SUCCESS,
};

/// 100 ns units per second (`REFERENCE_TIME` ticks).
pub const UNITS_PER_SECOND: i64 = 10_000_000;

/// Frame sizes offered, smallest first.
pub const FRAME_SIZES: [(u32, u32); 5] = [
    (320, 240),
    (640, 480),
    (1280, 720),
    (1920, 1080),
    (3840, 2160),
];

/// Frame intervals offered (`AvgTimePerFrame`, 100 ns): 30, 15 and 60 fps, in
/// the order the ranges list them (30 fps is the default of each size).
pub const FRAME_INTERVALS: [i64; 3] = [333_333, 666_667, 166_667];

/// The frame interval a client gets when it leaves `AvgTimePerFrame` at 0.
pub const DEFAULT_FRAME_INTERVAL: i64 = 333_333;

/// `sizeof(KSDATAFORMAT)`.
pub const KSDATAFORMAT_SIZE: u32 = 64;
/// Bytes of `KS_VIDEOINFOHEADER` before `bmiHeader` (`KS_SIZE_VIDEOHEADER` adds `biSize` to it).
pub const VIDEOINFOHEADER_PREFIX: u32 = 48;
/// `sizeof(KS_BITMAPINFOHEADER)`.
pub const BITMAPINFOHEADER_SIZE: u32 = 40;
/// `sizeof(KS_DATAFORMAT_VIDEOINFOHEADER)`.
pub const KS_DATAFORMAT_VIDEOINFOHEADER_SIZE: u32 =
    KSDATAFORMAT_SIZE + VIDEOINFOHEADER_PREFIX + BITMAPINFOHEADER_SIZE;
/// `KS_BI_RGB`.
pub const KS_BI_RGB: u32 = 0;
/// FourCC `YUY2` as `biCompression`.
pub const FOURCC_YUY2: u32 = u32::from_le_bytes(*b"YUY2");
/// FourCC `NV12` as `biCompression`.
pub const FOURCC_NV12: u32 = u32::from_le_bytes(*b"NV12");

/// The pixel formats the pin produces.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum PixelFormat {
    /// Packed 4:2:2, Y0 U Y1 V, top-down.
    Yuy2,
    /// Packed B G R, bottom-up DIB (positive `biHeight`), rows padded to 4 bytes.
    Rgb24,
    /// Planar 4:2:0: a Y plane, then interleaved U V at half resolution, top-down.
    Nv12,
}

impl PixelFormat {
    /// All pixel formats, in the order the pin offers them.
    pub const ALL: [Self; 3] = [Self::Nv12, Self::Yuy2, Self::Rgb24];

    /// The KS subtype GUID.
    #[must_use]
    pub const fn subtype(self) -> Guid {
        match self {
            Self::Yuy2 => MEDIASUBTYPE_YUY2,
            Self::Rgb24 => MEDIASUBTYPE_RGB24,
            Self::Nv12 => MEDIASUBTYPE_NV12,
        }
    }

    /// `biCompression`.
    #[must_use]
    pub const fn compression(self) -> u32 {
        match self {
            Self::Yuy2 => FOURCC_YUY2,
            Self::Rgb24 => KS_BI_RGB,
            Self::Nv12 => FOURCC_NV12,
        }
    }

    /// `biBitCount` (average bits per pixel).
    #[must_use]
    pub const fn bit_count(self) -> u16 {
        match self {
            Self::Yuy2 => 16,
            Self::Rgb24 => 24,
            Self::Nv12 => 12,
        }
    }

    /// Bits per pixel of the first (or only) plane, which sets the stride.
    const fn plane_bits(self) -> u32 {
        match self {
            Self::Yuy2 => 16,
            Self::Rgb24 => 24,
            Self::Nv12 => 8,
        }
    }

    /// The pixel format with this subtype GUID.
    #[must_use]
    pub fn from_subtype(guid: &Guid) -> Option<Self> {
        Self::ALL.into_iter().find(|p| p.subtype() == *guid)
    }

    /// Lower-case name (`yuy2`, `rgb24`, `nv12`).
    #[must_use]
    pub const fn name(self) -> &'static str {
        match self {
            Self::Yuy2 => "yuy2",
            Self::Rgb24 => "rgb24",
            Self::Nv12 => "nv12",
        }
    }

    /// Width and height granularity the layout needs (chroma subsampling).
    const fn granularity(self) -> (u32, u32) {
        match self {
            Self::Yuy2 => (2, 1),
            Self::Rgb24 => (1, 1),
            Self::Nv12 => (2, 2),
        }
    }
}

/// Why a size, a format or a range was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FormatError {
    /// `MajorFormat` is not `KSDATAFORMAT_TYPE_VIDEO`.
    WrongMajorType,
    /// `Specifier` is not `KSDATAFORMAT_SPECIFIER_VIDEOINFO`.
    WrongSpecifier,
    /// `SubFormat` is none of ours.
    UnknownSubtype,
    /// `FormatSize` cannot hold the header it claims (`biSize` included).
    HeaderTooSmall,
    /// `biSize` is below `sizeof(KS_BITMAPINFOHEADER)`.
    BitmapHeaderTooSmall,
    /// `biCompression` does not belong to the subtype.
    CompressionMismatch,
    /// `biBitCount` does not belong to the subtype.
    BitCountMismatch,
    /// `biPlanes` is not 1.
    PlanesNotOne,
    /// Width or height is zero or not a multiple of the format's granularity.
    BadDimensions,
    /// A well-formed size that is not one of [`FRAME_SIZES`].
    UnsupportedSize,
    /// Top-down RGB (negative `biHeight`) or a negative height for YUV.
    UnsupportedOrientation,
    /// `biSizeImage` (or `SampleSize`) is smaller than the image.
    ImageSizeTooSmall,
    /// `AvgTimePerFrame` is not one of [`FRAME_INTERVALS`].
    UnsupportedInterval,
    /// An intermediate product or sum overflowed.
    Overflow,
    /// No range of ours satisfies the client's range.
    NoMatch,
}

impl FormatError {
    /// The NTSTATUS the kernel shell returns for this error: malformed input
    /// is `STATUS_INVALID_PARAMETER`, well-formed but unsupported is
    /// `STATUS_NO_MATCH`.
    #[must_use]
    pub const fn ntstatus(self) -> NtStatus {
        match self {
            Self::HeaderTooSmall
            | Self::BitmapHeaderTooSmall
            | Self::PlanesNotOne
            | Self::BadDimensions
            | Self::ImageSizeTooSmall
            | Self::Overflow => STATUS_INVALID_PARAMETER,
            Self::WrongMajorType
            | Self::WrongSpecifier
            | Self::UnknownSubtype
            | Self::CompressionMismatch
            | Self::BitCountMismatch
            | Self::UnsupportedSize
            | Self::UnsupportedOrientation
            | Self::UnsupportedInterval
            | Self::NoMatch => STATUS_NO_MATCH,
        }
    }
}

/// A short sentence for a person (a log line, the simulator's refusals).
impl core::fmt::Display for FormatError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(match self {
            Self::WrongMajorType => "the major type is not video",
            Self::WrongSpecifier => "the specifier is not VIDEOINFO",
            Self::UnknownSubtype => "the subtype is not one of the pin's",
            Self::HeaderTooSmall => "the format is too small for its header",
            Self::BitmapHeaderTooSmall => "biSize is below a BITMAPINFOHEADER",
            Self::CompressionMismatch => "biCompression does not match the subtype",
            Self::BitCountMismatch => "biBitCount does not match the subtype",
            Self::PlanesNotOne => "biPlanes is not 1",
            Self::BadDimensions => {
                "the width or height is zero or not a multiple of the format's granularity"
            }
            Self::UnsupportedSize => "the pin does not offer that size",
            Self::UnsupportedOrientation => "the pin does not offer that orientation",
            Self::ImageSizeTooSmall => "the image size is below the image's bytes",
            Self::UnsupportedInterval => "the pin does not offer that frame rate",
            Self::Overflow => "a size overflowed",
            Self::NoMatch => "no format of the pin matches the range",
        })
    }
}

#[cfg(test)]
mod format_error_display {
    use super::FormatError;

    /// Every variant says something, in words (no Debug names).
    #[test]
    fn every_error_is_a_sentence() {
        let all = [
            FormatError::WrongMajorType,
            FormatError::WrongSpecifier,
            FormatError::UnknownSubtype,
            FormatError::HeaderTooSmall,
            FormatError::BitmapHeaderTooSmall,
            FormatError::CompressionMismatch,
            FormatError::BitCountMismatch,
            FormatError::PlanesNotOne,
            FormatError::BadDimensions,
            FormatError::UnsupportedSize,
            FormatError::UnsupportedOrientation,
            FormatError::ImageSizeTooSmall,
            FormatError::UnsupportedInterval,
            FormatError::Overflow,
            FormatError::NoMatch,
        ];
        for e in all {
            let s = e.to_string();
            assert!(s.contains(' '), "{e:?}: {s}");
            assert_ne!(s, format!("{e:?}"));
        }
    }
}

/// Where the planes of one frame lie and how large it is, all checked: made
/// only by [`FrameLayout::new`] (or [`VideoFormat::layout`]), so the
/// synthesis and the copy planning can trust every field.
///
/// ```compile_fail,E0616
/// // The fields are private: no caller can give a layout a size its
/// // dimensions do not have.
/// fn forge(layout: &mut avscap::portable::video_format::FrameLayout) {
///     layout.image_size = 1;
/// }
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FrameLayout {
    /// Pixel format.
    pixel: PixelFormat,
    /// Width in pixels.
    width: u32,
    /// Height in pixels.
    height: u32,
    /// Bytes from one row of the first plane to the next (DIB rule: a whole
    /// number of 32-bit words). NV12's chroma plane uses the same stride.
    stride: u32,
    /// Offset of NV12's interleaved UV plane (0 for packed formats).
    chroma_offset: u32,
    /// Bytes of one frame: `biSizeImage`.
    image_size: u32,
}

impl FrameLayout {
    /// Computes the layout of a `width` × `height` frame, refusing zero or
    /// odd sizes the format cannot subsample and any overflow.
    ///
    /// # Errors
    /// [`FormatError::BadDimensions`] or [`FormatError::Overflow`].
    pub const fn new(pixel: PixelFormat, width: u32, height: u32) -> Result<Self, FormatError> {
        let (gx, gy) = pixel.granularity();
        if width == 0 || height == 0 || !width.is_multiple_of(gx) || !height.is_multiple_of(gy) {
            return Err(FormatError::BadDimensions);
        }
        let Some(bits) = width.checked_mul(pixel.plane_bits()) else {
            return Err(FormatError::Overflow);
        };
        let Some(bits) = bits.checked_add(31) else {
            return Err(FormatError::Overflow);
        };
        let stride = (bits & !31) / 8;
        let Some(plane) = stride.checked_mul(height) else {
            return Err(FormatError::Overflow);
        };
        let (chroma_offset, image_size) = match pixel {
            PixelFormat::Nv12 => match plane.checked_add(plane / 2) {
                Some(total) => (plane, total),
                None => return Err(FormatError::Overflow),
            },
            PixelFormat::Yuy2 | PixelFormat::Rgb24 => (0, plane),
        };
        Ok(Self {
            pixel,
            width,
            height,
            stride,
            chroma_offset,
            image_size,
        })
    }

    /// Pixel format.
    #[must_use]
    pub const fn pixel(&self) -> PixelFormat {
        self.pixel
    }

    /// Width in pixels (non-zero, a multiple of the format's granularity).
    #[must_use]
    pub const fn width(&self) -> u32 {
        self.width
    }

    /// Height in pixels (non-zero, a multiple of the format's granularity).
    #[must_use]
    pub const fn height(&self) -> u32 {
        self.height
    }

    /// Bytes from one row of the first plane to the next (DIB rule: a whole
    /// number of 32-bit words). NV12's chroma plane uses the same stride.
    #[must_use]
    pub const fn stride(&self) -> u32 {
        self.stride
    }

    /// Offset of NV12's interleaved UV plane (0 for packed formats).
    #[must_use]
    pub const fn chroma_offset(&self) -> u32 {
        self.chroma_offset
    }

    /// Bytes of one frame: `biSizeImage`.
    #[must_use]
    pub const fn image_size(&self) -> u32 {
        self.image_size
    }
}

/// One exact format: what a pin connection streams.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct VideoFormat {
    /// Pixel format.
    pub pixel: PixelFormat,
    /// Width in pixels.
    pub width: u32,
    /// Height in pixels (the DIB's `biHeight` is this, positive).
    pub height: u32,
    /// `AvgTimePerFrame`, 100 ns units.
    pub frame_interval: i64,
}

/// The video-info fields of a format, as `KS_VIDEOINFOHEADER` carries them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct VideoInfo {
    /// `dwBitRate`.
    pub bit_rate: u32,
    /// `AvgTimePerFrame`.
    pub avg_time_per_frame: i64,
    /// `biWidth`.
    pub width: i32,
    /// `biHeight`.
    pub height: i32,
    /// `biPlanes`.
    pub planes: u16,
    /// `biBitCount`.
    pub bit_count: u16,
    /// `biCompression`.
    pub compression: u32,
    /// `biSizeImage` (also the data range's `SampleSize`).
    pub size_image: u32,
}

impl VideoFormat {
    /// Frame layout. Every format in [`DATA_RANGES`] has one; the error case
    /// is for formats built by hand.
    ///
    /// # Errors
    /// As [`FrameLayout::new`].
    pub const fn layout(&self) -> Result<FrameLayout, FormatError> {
        FrameLayout::new(self.pixel, self.width, self.height)
    }

    /// Frames per second, rounded to the nearest integer (30 for 333 333).
    #[must_use]
    pub const fn fps(&self) -> u32 {
        if self.frame_interval <= 0 {
            return 0;
        }
        #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
        let fps = ((UNITS_PER_SECOND + self.frame_interval / 2) / self.frame_interval) as u32;
        fps
    }

    /// The header fields for this format (bit rate = image bits × fps,
    /// saturated at `u32::MAX`).
    ///
    /// # Errors
    /// As [`FrameLayout::new`], or [`FormatError::Overflow`] for a size past
    /// `i32::MAX`.
    pub const fn video_info(&self) -> Result<VideoInfo, FormatError> {
        let layout = match self.layout() {
            Ok(l) => l,
            Err(e) => return Err(e),
        };
        // 4K RGB24 at 60 fps is about 11.9 Gbit/s, past what the 32-bit
        // dwBitRate holds: the field is advisory, so it saturates.
        let bits = (layout.image_size as u64) * 8 * (self.fps() as u64);
        #[allow(clippy::cast_possible_truncation)]
        let bit_rate = if bits > u32::MAX as u64 {
            u32::MAX
        } else {
            bits as u32
        };
        if self.width > i32::MAX as u32 || self.height > i32::MAX as u32 {
            return Err(FormatError::Overflow);
        }
        #[allow(clippy::cast_possible_truncation, clippy::cast_possible_wrap)]
        Ok(VideoInfo {
            bit_rate,
            avg_time_per_frame: self.frame_interval,
            width: self.width as i32,
            height: self.height as i32,
            planes: 1,
            bit_count: self.pixel.bit_count(),
            compression: self.pixel.compression(),
            size_image: layout.image_size,
        })
    }

    /// Whether the frame rows lie bottom-up in memory (RGB DIBs).
    #[must_use]
    pub const fn bottom_up(&self) -> bool {
        matches!(self.pixel, PixelFormat::Rgb24)
    }
}

/// The `KS_VIDEO_STREAM_CONFIG_CAPS` numbers of one offered format (a
/// fixed size: input, cropping and output sizes are all the frame size).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConfigCaps {
    /// Frame width (`InputSize.cx`, crop and output sizes).
    pub width: i32,
    /// Frame height (`InputSize.cy`, ...).
    pub height: i32,
    /// `CropGranularityX`, `CropAlignX`, `OutputGranularityX`: the pixel
    /// format's horizontal subsampling step.
    pub granularity_x: i32,
    /// `CropGranularityY`, `CropAlignY`, `OutputGranularityY`.
    pub granularity_y: i32,
    /// `MinFrameInterval` = `MaxFrameInterval`: the range's one rate.
    pub frame_interval: i64,
    /// `MinBitsPerSecond` = `MaxBitsPerSecond` (a `LONG`: saturated).
    pub bits_per_second: i32,
}

impl VideoFormat {
    /// The stream-config caps of this format's data range.
    ///
    /// # Errors
    /// As [`VideoFormat::video_info`].
    pub const fn config_caps(&self) -> Result<ConfigCaps, FormatError> {
        let info = match self.video_info() {
            Ok(i) => i,
            Err(e) => return Err(e),
        };
        let (gx, gy) = self.pixel.granularity();
        #[allow(clippy::cast_possible_wrap)]
        let bits_per_second = if info.bit_rate > i32::MAX as u32 {
            i32::MAX
        } else {
            info.bit_rate as i32
        };
        #[allow(clippy::cast_possible_wrap)]
        Ok(ConfigCaps {
            width: info.width,
            height: info.height,
            granularity_x: gx as i32,
            granularity_y: gy as i32,
            frame_interval: self.frame_interval,
            bits_per_second,
        })
    }
}

/// What a caller's output buffer allows (the intersect handler's
/// `DataBufferSize` against the bytes of the format it would write).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OutputBuffer {
    /// Size 0: the caller asks how big the result is. Report the size and
    /// return `STATUS_BUFFER_OVERFLOW`.
    SizeQuery,
    /// Too small: `STATUS_BUFFER_TOO_SMALL`, nothing written.
    TooSmall,
    /// Large enough: write the format and return `STATUS_SUCCESS`.
    Fits,
}

impl OutputBuffer {
    /// Classifies a buffer of `available` bytes for a result of `needed` bytes.
    #[must_use]
    pub const fn check(available: u32, needed: u32) -> Self {
        if available == 0 {
            Self::SizeQuery
        } else if available < needed {
            Self::TooSmall
        } else {
            Self::Fits
        }
    }

    /// The status the handler returns.
    #[must_use]
    pub const fn ntstatus(self) -> NtStatus {
        match self {
            Self::SizeQuery => STATUS_BUFFER_OVERFLOW,
            Self::TooSmall => STATUS_BUFFER_TOO_SMALL,
            Self::Fits => STATUS_SUCCESS,
        }
    }
}

/// Number of data ranges the pin offers.
pub const DATA_RANGE_COUNT: usize =
    PixelFormat::ALL.len() * FRAME_SIZES.len() * FRAME_INTERVALS.len();

const fn build_ranges() -> [VideoFormat; DATA_RANGE_COUNT] {
    let mut out = [VideoFormat {
        pixel: PixelFormat::Nv12,
        width: 0,
        height: 0,
        frame_interval: 0,
    }; DATA_RANGE_COUNT];
    let mut n = 0;
    let mut p = 0;
    while p < PixelFormat::ALL.len() {
        let mut s = 0;
        while s < FRAME_SIZES.len() {
            let mut i = 0;
            while i < FRAME_INTERVALS.len() {
                out[n] = VideoFormat {
                    pixel: PixelFormat::ALL[p],
                    width: FRAME_SIZES[s].0,
                    height: FRAME_SIZES[s].1,
                    frame_interval: FRAME_INTERVALS[i],
                };
                n += 1;
                i += 1;
            }
            s += 1;
        }
        p += 1;
    }
    out
}

/// Every format the capture pin offers, one fixed format per data range, in
/// the order the pin lists them: pixel format, then size, then 30/15/60 fps.
pub static DATA_RANGES: [VideoFormat; DATA_RANGE_COUNT] = build_ranges();

/// Largest `biSizeImage` of any offered format: what one slot of the common
/// buffer must hold.
#[must_use]
pub const fn max_image_size() -> u32 {
    let mut max = 0;
    let mut i = 0;
    while i < DATA_RANGE_COUNT {
        if let Ok(layout) = DATA_RANGES[i].layout() {
            if layout.image_size > max {
                max = layout.image_size;
            }
        }
        i += 1;
    }
    max
}

/// The default format: the first 640x480 range at 30 fps (NV12).
#[must_use]
pub const fn default_format() -> VideoFormat {
    VideoFormat {
        pixel: PixelFormat::Nv12,
        width: 640,
        height: 480,
        frame_interval: DEFAULT_FRAME_INTERVAL,
    }
}

/// Maps a client's `AvgTimePerFrame` to ours: 0 means "default", and ±1 is
/// accepted for rounding (10 000 000 / 30 written as 333 334, say).
fn canonical_interval(interval: i64) -> Option<i64> {
    if interval == 0 {
        return Some(DEFAULT_FRAME_INTERVAL);
    }
    FRAME_INTERVALS
        .into_iter()
        .find(|&ours| interval.abs_diff(ours) <= 1)
}

/// A format a client proposes (`KS_DATAFORMAT_VIDEOINFOHEADER`, as read by the
/// shell from a buffer the shell has already checked holds `FormatSize` bytes).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ProposedFormat {
    /// `KSDATAFORMAT.FormatSize`.
    pub format_size: u32,
    /// `KSDATAFORMAT.SampleSize`.
    pub sample_size: u32,
    /// `KSDATAFORMAT.MajorFormat`.
    pub major: Guid,
    /// `KSDATAFORMAT.SubFormat`.
    pub sub: Guid,
    /// `KSDATAFORMAT.Specifier`.
    pub specifier: Guid,
    /// `bmiHeader.biSize`.
    pub bi_size: u32,
    /// The video-info fields.
    pub info: VideoInfo,
}

impl ProposedFormat {
    /// The `KS_DATAFORMAT_VIDEOINFOHEADER` a client sends for one of our
    /// formats (what the intersect handler hands out), or `None` for a
    /// format without a layout.
    #[must_use]
    pub fn for_format(format: &VideoFormat) -> Option<Self> {
        let info = format.video_info().ok()?;
        Some(Self {
            format_size: KS_DATAFORMAT_VIDEOINFOHEADER_SIZE,
            sample_size: info.size_image,
            major: KSDATAFORMAT_TYPE_VIDEO,
            sub: format.pixel.subtype(),
            specifier: KSDATAFORMAT_SPECIFIER_VIDEOINFO,
            bi_size: BITMAPINFOHEADER_SIZE,
            info,
        })
    }
}

/// `KS_SIZE_VIDEOHEADER` plus the `KSDATAFORMAT` in front, overflow-checked.
fn format_bytes_needed(bi_size: u32) -> Result<u32, FormatError> {
    if bi_size < BITMAPINFOHEADER_SIZE {
        return Err(FormatError::BitmapHeaderTooSmall);
    }
    bi_size
        .checked_add(VIDEOINFOHEADER_PREFIX)
        .and_then(|v| v.checked_add(KSDATAFORMAT_SIZE))
        .ok_or(FormatError::Overflow)
}

/// Checks the bitmap fields of a client's header against one pixel format and
/// returns the size they name.
fn check_bitmap(pixel: PixelFormat, info: &VideoInfo) -> Result<(u32, u32), FormatError> {
    if info.compression != pixel.compression() {
        return Err(FormatError::CompressionMismatch);
    }
    if info.bit_count != pixel.bit_count() {
        return Err(FormatError::BitCountMismatch);
    }
    if info.planes != 1 {
        return Err(FormatError::PlanesNotOne);
    }
    if info.width <= 0 || info.height == 0 {
        return Err(FormatError::BadDimensions);
    }
    // A negative biHeight means a top-down DIB for RGB, which this pin does
    // not produce (its RGB24 is bottom-up). YUV formats are top-down
    // whatever the sign, and DirectShow's guidance is to accept them with a
    // negative biHeight and ignore the sign.
    if info.height < 0 && pixel == PixelFormat::Rgb24 {
        return Err(FormatError::UnsupportedOrientation);
    }
    #[allow(clippy::cast_sign_loss)]
    Ok((info.width as u32, info.height.unsigned_abs()))
}

/// Validates a format proposed for the pin (`SetDataFormat`) and returns the
/// exact format it names, or why it cannot be streamed.
///
/// # Errors
/// A [`FormatError`]; [`FormatError::ntstatus`] gives the status to return.
pub fn validate_format(p: &ProposedFormat) -> Result<VideoFormat, FormatError> {
    if p.major != KSDATAFORMAT_TYPE_VIDEO {
        return Err(FormatError::WrongMajorType);
    }
    if p.specifier != KSDATAFORMAT_SPECIFIER_VIDEOINFO {
        return Err(FormatError::WrongSpecifier);
    }
    let pixel = PixelFormat::from_subtype(&p.sub).ok_or(FormatError::UnknownSubtype)?;
    if p.format_size < format_bytes_needed(p.bi_size)? {
        return Err(FormatError::HeaderTooSmall);
    }
    let (width, height) = check_bitmap(pixel, &p.info)?;
    let layout = FrameLayout::new(pixel, width, height)?;
    if !FRAME_SIZES.contains(&(width, height)) {
        return Err(FormatError::UnsupportedSize);
    }
    // biSizeImage may be 0 for uncompressed RGB (the DIB rule); otherwise it,
    // and a non-zero SampleSize, must cover the image.
    let size_ok = |v: u32| v >= layout.image_size || (v == 0 && pixel == PixelFormat::Rgb24);
    if !size_ok(p.info.size_image) || !(p.sample_size == 0 || p.sample_size >= layout.image_size) {
        return Err(FormatError::ImageSizeTooSmall);
    }
    let frame_interval =
        canonical_interval(p.info.avg_time_per_frame).ok_or(FormatError::UnsupportedInterval)?;
    Ok(VideoFormat {
        pixel,
        width,
        height,
        frame_interval,
    })
}

/// What a client's data range asks for. Any field left at its wildcard value
/// (`GUID_NULL`, 0) accepts anything.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct ClientRange {
    /// `MajorFormat` (wildcard: `GUID_NULL`).
    pub major: Option<Guid>,
    /// `SubFormat` (wildcard: `GUID_NULL`).
    pub sub: Option<Guid>,
    /// `Specifier` (wildcard: `GUID_NULL`).
    pub specifier: Option<Guid>,
    /// The `KS_DATARANGE_VIDEO` part, when the client sent a full video range.
    pub video: Option<ClientVideoRange>,
}

/// The video part of a client's range (`KS_DATARANGE_VIDEO`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct ClientVideoRange {
    /// `biWidth` (0: any).
    pub width: i32,
    /// `biHeight` (0: any; negative asks for top-down).
    pub height: i32,
    /// `biBitCount` (0 together with `compression` 0: any).
    pub bit_count: u16,
    /// `biCompression`.
    pub compression: u32,
    /// `AvgTimePerFrame` (0: any).
    pub avg_time_per_frame: i64,
    /// `ConfigCaps.MinFrameInterval` (0 with max 0: no limits).
    pub min_frame_interval: i64,
    /// `ConfigCaps.MaxFrameInterval`.
    pub max_frame_interval: i64,
}

impl ClientRange {
    /// A range that accepts every format.
    pub const ANY: Self = Self {
        major: None,
        sub: None,
        specifier: None,
        video: None,
    };

    /// Builds the range from the GUIDs as KS hands them over, mapping
    /// `GUID_NULL` to "any".
    #[must_use]
    pub fn from_guids(
        major: Guid,
        sub: Guid,
        specifier: Guid,
        video: Option<ClientVideoRange>,
    ) -> Self {
        let opt = |g: Guid| if g.is_null() { None } else { Some(g) };
        Self {
            major: opt(major),
            sub: opt(sub),
            specifier: opt(specifier),
            video,
        }
    }

    /// Whether `ours` satisfies every constraint of this range.
    #[must_use]
    pub fn accepts(&self, ours: &VideoFormat) -> bool {
        let guid_ok = |want: Option<Guid>, have: Guid| want.is_none_or(|w| w == have);
        if !guid_ok(self.major, KSDATAFORMAT_TYPE_VIDEO)
            || !guid_ok(self.sub, ours.pixel.subtype())
            || !guid_ok(self.specifier, KSDATAFORMAT_SPECIFIER_VIDEOINFO)
        {
            return false;
        }
        let Some(v) = self.video else { return true };
        // The sign of a YUV height carries no meaning (see `check_bitmap`);
        // a negative RGB height asks for a top-down image we do not make.
        let height_ok = v.height == 0
            || i64::from(v.height) == i64::from(ours.height)
            || (ours.pixel != PixelFormat::Rgb24 && i64::from(v.height) == -i64::from(ours.height));
        let dims_ok = (v.width == 0 || i64::from(v.width) == i64::from(ours.width)) && height_ok;
        let bitmap_any = v.bit_count == 0 && v.compression == 0;
        let bitmap_ok = bitmap_any
            || (v.bit_count == ours.pixel.bit_count() && v.compression == ours.pixel.compression());
        let limits_given = v.min_frame_interval != 0 || v.max_frame_interval != 0;
        let interval_ok = if limits_given {
            v.min_frame_interval <= ours.frame_interval
                && ours.frame_interval <= v.max_frame_interval
        } else {
            v.avg_time_per_frame == 0 || v.avg_time_per_frame.abs_diff(ours.frame_interval) <= 1
        };
        dims_ok && bitmap_ok && interval_ok
    }
}

/// Intersects a client's range with one of our formats: the format to use,
/// or [`FormatError::NoMatch`].
///
/// # Errors
/// [`FormatError::NoMatch`] when `ours` does not satisfy the client.
pub fn intersect(client: &ClientRange, ours: &VideoFormat) -> Result<VideoFormat, FormatError> {
    if client.accepts(ours) {
        Ok(*ours)
    } else {
        Err(FormatError::NoMatch)
    }
}

/// Intersects a client's range with every range the pin offers and returns
/// the first format (in the pin's order of preference) that satisfies it.
///
/// # Errors
/// [`FormatError::NoMatch`] when no range satisfies the client.
pub fn intersect_any(client: &ClientRange) -> Result<VideoFormat, FormatError> {
    DATA_RANGES
        .iter()
        .find(|f| client.accepts(f))
        .copied()
        .ok_or(FormatError::NoMatch)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn proposed(f: &VideoFormat) -> ProposedFormat {
        ProposedFormat::for_format(f).unwrap()
    }

    #[test]
    fn offers_every_format_size_and_rate_once() {
        assert_eq!(DATA_RANGES.len(), 45);
        for pixel in PixelFormat::ALL {
            for size in FRAME_SIZES {
                for interval in [666_667, 333_333, 166_667] {
                    let n = DATA_RANGES
                        .iter()
                        .filter(|f| {
                            f.pixel == pixel
                                && (f.width, f.height) == size
                                && f.frame_interval == interval
                        })
                        .count();
                    assert_eq!(n, 1, "{pixel:?} {size:?} {interval}");
                }
            }
        }
        assert_eq!(DATA_RANGES.iter().filter(|f| f.fps() == 15).count(), 15);
        assert_eq!(DATA_RANGES.iter().filter(|f| f.fps() == 30).count(), 15);
        assert_eq!(DATA_RANGES.iter().filter(|f| f.fps() == 60).count(), 15);
    }

    #[test]
    fn stride_and_image_size_per_format() {
        let l = FrameLayout::new(PixelFormat::Yuy2, 320, 240).unwrap();
        assert_eq!((l.stride, l.image_size), (640, 153_600));
        let l = FrameLayout::new(PixelFormat::Rgb24, 320, 240).unwrap();
        assert_eq!((l.stride, l.image_size), (960, 230_400));
        let l = FrameLayout::new(PixelFormat::Nv12, 1280, 720).unwrap();
        assert_eq!(
            (l.stride, l.chroma_offset, l.image_size),
            (1280, 921_600, 1_382_400)
        );
        let l = FrameLayout::new(PixelFormat::Nv12, 3840, 2160).unwrap();
        assert_eq!(l.image_size, 12_441_600);
        let l = FrameLayout::new(PixelFormat::Rgb24, 3840, 2160).unwrap();
        assert_eq!(l.image_size, 24_883_200);
        assert_eq!(max_image_size(), 24_883_200);
        // RGB24 rows are padded to a 32-bit multiple.
        let l = FrameLayout::new(PixelFormat::Rgb24, 3, 1).unwrap();
        assert_eq!(l.stride, 12);
    }

    #[test]
    fn image_size_equals_ks_dibsize_for_all_ranges() {
        for f in &DATA_RANGES {
            let info = f.video_info().unwrap();
            let w = u64::from(info.width.unsigned_abs());
            let dib = ((w * u64::from(info.bit_count) + 31) & !31) / 8
                * u64::from(info.height.unsigned_abs());
            assert_eq!(u64::from(info.size_image), dib, "{f:?}");
        }
    }

    #[test]
    fn layout_refuses_bad_and_overflowing_sizes() {
        assert_eq!(
            FrameLayout::new(PixelFormat::Nv12, 641, 480),
            Err(FormatError::BadDimensions)
        );
        assert_eq!(
            FrameLayout::new(PixelFormat::Yuy2, 0, 480),
            Err(FormatError::BadDimensions)
        );
        assert_eq!(
            FrameLayout::new(PixelFormat::Rgb24, u32::MAX, 1),
            Err(FormatError::Overflow)
        );
        assert_eq!(
            FrameLayout::new(PixelFormat::Yuy2, 65_536, 65_536),
            Err(FormatError::Overflow)
        );
    }

    #[test]
    fn frame_intervals_are_in_100ns_units() {
        let by_fps = |fps| {
            DATA_RANGES
                .iter()
                .find(|f| f.fps() == fps)
                .unwrap()
                .frame_interval
        };
        assert_eq!(by_fps(15), 666_667);
        assert_eq!(by_fps(30), 333_333);
        assert_eq!(by_fps(60), 166_667);
    }

    #[test]
    fn validate_accepts_every_offered_format_exactly() {
        for f in &DATA_RANGES {
            assert_eq!(validate_format(&proposed(f)), Ok(*f));
        }
    }

    #[test]
    fn validate_rejects_each_bad_field_with_its_status() {
        type Edit = fn(&mut ProposedFormat);
        let good = proposed(&default_format());
        let cases: [(Edit, FormatError); 11] = [
            (
                |p| p.major = crate::portable::guid::GUID_NULL,
                FormatError::WrongMajorType,
            ),
            (
                |p| p.specifier = crate::portable::guid::GUID_NULL,
                FormatError::WrongSpecifier,
            ),
            (|p| p.sub.data1 ^= 1, FormatError::UnknownSubtype),
            (|p| p.format_size = 151, FormatError::HeaderTooSmall),
            (|p| p.bi_size = 39, FormatError::BitmapHeaderTooSmall),
            (|p| p.bi_size = u32::MAX - 10, FormatError::Overflow),
            (
                |p| p.info.compression = FOURCC_YUY2,
                FormatError::CompressionMismatch,
            ),
            (|p| p.info.bit_count = 16, FormatError::BitCountMismatch),
            (|p| p.info.width = 800, FormatError::UnsupportedSize),
            (
                |p| p.info.size_image = 460_799,
                FormatError::ImageSizeTooSmall,
            ),
            (
                |p| p.info.avg_time_per_frame = 400_000,
                FormatError::UnsupportedInterval,
            ),
        ];
        for (edit, want) in cases {
            let mut p = good;
            edit(&mut p);
            assert_eq!(validate_format(&p), Err(want));
        }
        assert_eq!(
            FormatError::HeaderTooSmall.ntstatus(),
            STATUS_INVALID_PARAMETER
        );
        assert_eq!(FormatError::UnsupportedSize.ntstatus(), STATUS_NO_MATCH);
    }

    #[test]
    fn config_caps_describe_one_fixed_format() {
        let f = VideoFormat {
            pixel: PixelFormat::Nv12,
            width: 1280,
            height: 720,
            frame_interval: 166_667,
        };
        let c = f.config_caps().unwrap();
        assert_eq!(
            (c.width, c.height, c.granularity_x, c.granularity_y),
            (1280, 720, 2, 2)
        );
        assert_eq!(c.frame_interval, 166_667);
        assert_eq!(c.bits_per_second, 1_382_400 * 8 * 60);
        let big = VideoFormat {
            pixel: PixelFormat::Rgb24,
            width: 3840,
            height: 2160,
            frame_interval: 333_333,
        };
        assert_eq!(big.config_caps().unwrap().bits_per_second, i32::MAX);
    }

    #[test]
    fn output_buffer_size_query_too_small_and_fits() {
        assert_eq!(OutputBuffer::check(0, 152), OutputBuffer::SizeQuery);
        assert_eq!(OutputBuffer::check(151, 152), OutputBuffer::TooSmall);
        assert_eq!(OutputBuffer::check(152, 152), OutputBuffer::Fits);
        assert_eq!(OutputBuffer::SizeQuery.ntstatus(), STATUS_BUFFER_OVERFLOW);
        assert_eq!(OutputBuffer::TooSmall.ntstatus(), STATUS_BUFFER_TOO_SMALL);
        assert_eq!(OutputBuffer::Fits.ntstatus(), STATUS_SUCCESS);
    }

    #[test]
    fn bit_rate_is_image_bits_times_fps_and_saturates() {
        let f = VideoFormat {
            pixel: PixelFormat::Yuy2,
            width: 320,
            height: 240,
            frame_interval: 333_333,
        };
        assert_eq!(f.video_info().unwrap().bit_rate, 36_864_000);
        let f = VideoFormat {
            pixel: PixelFormat::Rgb24,
            width: 3840,
            height: 2160,
            frame_interval: 166_667,
        };
        assert_eq!(f.video_info().unwrap().bit_rate, u32::MAX);
    }

    #[test]
    fn extreme_intervals_are_refused_not_overflowed() {
        let mut p = proposed(&default_format());
        for interval in [i64::MIN, i64::MAX, -333_333] {
            p.info.avg_time_per_frame = interval;
            assert_eq!(validate_format(&p), Err(FormatError::UnsupportedInterval));
            let client = ClientRange {
                video: Some(ClientVideoRange {
                    avg_time_per_frame: interval,
                    ..ClientVideoRange::default()
                }),
                ..ClientRange::ANY
            };
            assert_eq!(intersect_any(&client), Err(FormatError::NoMatch));
        }
    }

    #[test]
    fn validate_normalises_rounded_and_default_intervals() {
        let mut p = proposed(&default_format());
        p.info.avg_time_per_frame = 333_334;
        assert_eq!(validate_format(&p).unwrap().frame_interval, 333_333);
        p.info.avg_time_per_frame = 0;
        assert_eq!(
            validate_format(&p).unwrap().frame_interval,
            DEFAULT_FRAME_INTERVAL
        );
    }

    #[test]
    fn wildcard_range_gets_the_first_offered_format() {
        assert_eq!(intersect_any(&ClientRange::ANY), Ok(DATA_RANGES[0]));
        let yuy2 = ClientRange {
            sub: Some(MEDIASUBTYPE_YUY2),
            ..ClientRange::ANY
        };
        assert_eq!(intersect_any(&yuy2).unwrap().pixel, PixelFormat::Yuy2);
    }

    #[test]
    fn full_video_range_picks_size_and_rate() {
        let client = ClientRange::from_guids(
            KSDATAFORMAT_TYPE_VIDEO,
            MEDIASUBTYPE_RGB24,
            KSDATAFORMAT_SPECIFIER_VIDEOINFO,
            Some(ClientVideoRange {
                width: 1920,
                height: 1080,
                bit_count: 24,
                compression: KS_BI_RGB,
                avg_time_per_frame: 0,
                min_frame_interval: 100_000,
                max_frame_interval: 200_000,
            }),
        );
        let got = intersect_any(&client).unwrap();
        assert_eq!(
            got,
            VideoFormat {
                pixel: PixelFormat::Rgb24,
                width: 1920,
                height: 1080,
                frame_interval: 166_667
            }
        );
        let top_down = ClientRange {
            video: Some(ClientVideoRange {
                height: -1080,
                ..client.video.unwrap()
            }),
            ..client
        };
        assert_eq!(intersect_any(&top_down), Err(FormatError::NoMatch));
        assert_eq!(FormatError::NoMatch.ntstatus(), STATUS_NO_MATCH);
        // The same negative height on a YUV range matches: its sign means
        // nothing there.
        let yuv = ClientRange {
            sub: Some(PixelFormat::Yuy2.subtype()),
            video: Some(ClientVideoRange {
                bit_count: 16,
                compression: FOURCC_YUY2,
                ..top_down.video.unwrap()
            }),
            ..top_down
        };
        assert_eq!(intersect_any(&yuv).map(|f| f.height), Ok(1080));
    }

    #[test]
    fn yuv_ignores_the_sign_of_its_height_and_rgb_does_not() {
        for f in [PixelFormat::Nv12, PixelFormat::Yuy2] {
            let format = *DATA_RANGES.iter().find(|r| r.pixel == f).unwrap();
            let mut p = proposed(&format);
            p.info.height = -p.info.height;
            assert_eq!(validate_format(&p), Ok(format), "{f:?}");
        }
        let rgb = *DATA_RANGES
            .iter()
            .find(|r| r.pixel == PixelFormat::Rgb24)
            .unwrap();
        let mut p = proposed(&rgb);
        p.info.height = -p.info.height;
        assert_eq!(
            validate_format(&p),
            Err(FormatError::UnsupportedOrientation)
        );
    }
}
