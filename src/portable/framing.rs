//! Allocator framing: what the capture pin declares (`KSALLOCATOR_FRAMING_EX`
//! with one item, the `DECLARE_SIMPLE_FRAMING_EX` shape) and what an allocator
//! instance receives (the legacy `KSALLOCATOR_FRAMING`), plus the validator
//! that decides whether our frame pool can serve a requested framing.
//!
//! Validation follows the semantics of `KsValidateAllocatorCreateRequest`
//! narrowed to what a pool carved out of one common buffer can honour: at
//! least one frame and no more than the carve-out holds, a frame size that
//! covers the connection's image and fits a slot, `FileAlignment` given as a
//! mask (2^k − 1, at most `PAGE_SIZE − 1`), known and consistent flags, a
//! pool type that nonpaged memory satisfies, `Reserved` zero. Every product
//! and sum is overflow-checked.

use super::frame_pool::{Region, MAX_POOL_FRAMES};
use super::guid::{Guid, GUID_NULL, KSMEMORY_TYPE_KERNEL_NONPAGED};
use super::status::{
    NtStatus, STATUS_INSUFFICIENT_RESOURCES, STATUS_INVALID_PARAMETER, STATUS_NOT_SUPPORTED,
};
use super::video_format::{FrameLayout, VideoFormat, DATA_RANGES};

/// x64 page size.
pub const PAGE_SIZE: u32 = 4096;
/// `FileAlignment` mask for page alignment (`PAGE_SIZE − 1`).
pub const PAGE_ALIGNMENT_MASK: u32 = PAGE_SIZE - 1;
/// Alignment pool types named `…CacheAligned` guarantee (a cache line).
pub const CACHE_LINE: u32 = 64;

/// `KSALLOCATOR_REQUIREMENTF_INPLACE_MODIFIER` (same bit as `KSALLOCATOR_OPTIONF_COMPATIBLE`).
pub const REQUIREMENTF_INPLACE_MODIFIER: u32 = 0x0000_0001;
/// `KSALLOCATOR_OPTIONF_COMPATIBLE`.
pub const OPTIONF_COMPATIBLE: u32 = 0x0000_0001;
/// `KSALLOCATOR_REQUIREMENTF_SYSTEM_MEMORY` (same bit as `KSALLOCATOR_OPTIONF_SYSTEM_MEMORY`).
pub const REQUIREMENTF_SYSTEM_MEMORY: u32 = 0x0000_0002;
/// `KSALLOCATOR_OPTIONF_SYSTEM_MEMORY`.
pub const OPTIONF_SYSTEM_MEMORY: u32 = 0x0000_0002;
/// `KSALLOCATOR_REQUIREMENTF_FRAME_INTEGRITY`.
pub const REQUIREMENTF_FRAME_INTEGRITY: u32 = 0x0000_0004;
/// `KSALLOCATOR_REQUIREMENTF_MUST_ALLOCATE`.
pub const REQUIREMENTF_MUST_ALLOCATE: u32 = 0x0000_0008;
/// `KSALLOCATOR_REQUIREMENTF_PREFERENCES_ONLY`.
pub const REQUIREMENTF_PREFERENCES_ONLY: u32 = 0x8000_0000;
/// Every flag bit an allocator request may carry.
pub const KNOWN_FLAGS: u32 = REQUIREMENTF_INPLACE_MODIFIER
    | REQUIREMENTF_SYSTEM_MEMORY
    | REQUIREMENTF_FRAME_INTEGRITY
    | REQUIREMENTF_MUST_ALLOCATE
    | REQUIREMENTF_PREFERENCES_ONLY;

/// `POOL_TYPE` values a request may name; all are served from our nonpaged
/// (NX) common buffer, which satisfies a paged request too.
pub mod pool_type {
    /// `NonPagedPool`.
    pub const NON_PAGED: u32 = 0;
    /// `PagedPool`.
    pub const PAGED: u32 = 1;
    /// `NonPagedPoolCacheAligned`.
    pub const NON_PAGED_CACHE_ALIGNED: u32 = 4;
    /// `PagedPoolCacheAligned`.
    pub const PAGED_CACHE_ALIGNED: u32 = 5;
    /// `NonPagedPoolNx`.
    pub const NON_PAGED_NX: u32 = 512;
    /// `NonPagedPoolNxCacheAligned`.
    pub const NON_PAGED_NX_CACHE_ALIGNED: u32 = 516;
}

/// Why a framing was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FramingError {
    /// `Frames` is 0.
    NoFrames,
    /// More frames than the pool tracks or the carve-out holds.
    TooManyFrames {
        /// Frames asked for.
        requested: u32,
        /// Most this pool can serve.
        max: u32,
    },
    /// `FrameSize` is below the connection's image size.
    FrameSmallerThanImage {
        /// `FrameSize` asked for.
        frame_size: u32,
        /// `biSizeImage` of the connection format.
        image_size: u32,
    },
    /// `FrameSize` is above what one slot of the carve-out holds.
    FrameLargerThanSlot {
        /// `FrameSize` asked for.
        frame_size: u32,
        /// Largest frame a slot holds.
        max: u32,
    },
    /// `FileAlignment` is not of the form 2^k − 1.
    AlignmentNotMask(u32),
    /// `FileAlignment` asks for more than page alignment.
    AlignmentAbovePage(u32),
    /// Flag bits no allocator request defines.
    UnknownFlags(u32),
    /// `INPLACE_MODIFIER` (frames are changed in place) with `FRAME_INTEGRITY`
    /// (frames must not be changed).
    ContradictoryFlags,
    /// A pool type nonpaged system memory cannot stand for (session pools,
    /// must-succeed, unknown values).
    UnsupportedPoolType(u32),
    /// `Reserved` is not zero.
    ReservedNotZero,
    /// The region's virtual and logical bases disagree modulo the alignment,
    /// so no slot can be aligned in both.
    RegionMisaligned,
    /// The slots do not fit in the region.
    DoesNotFit {
        /// Bytes the slots need, alignment padding included.
        needed: u64,
        /// Bytes the region has.
        available: u64,
    },
    /// A product or sum overflowed.
    Overflow,
}

impl FramingError {
    /// The NTSTATUS the allocator's `InitializeAllocator` returns.
    #[must_use]
    pub const fn ntstatus(self) -> NtStatus {
        match self {
            FramingError::NoFrames
            | FramingError::FrameSmallerThanImage { .. }
            | FramingError::AlignmentNotMask(_)
            | FramingError::ContradictoryFlags
            | FramingError::ReservedNotZero
            | FramingError::Overflow => STATUS_INVALID_PARAMETER,
            FramingError::TooManyFrames { .. }
            | FramingError::FrameLargerThanSlot { .. }
            | FramingError::DoesNotFit { .. } => STATUS_INSUFFICIENT_RESOURCES,
            FramingError::AlignmentAbovePage(_)
            | FramingError::UnknownFlags(_)
            | FramingError::UnsupportedPoolType(_)
            | FramingError::RegionMisaligned => STATUS_NOT_SUPPORTED,
        }
    }
}

/// A frame-size range (`KS_FRAMING_RANGE`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FrameSizeRange {
    /// `MinFrameSize`.
    pub min: u32,
    /// `MaxFrameSize`.
    pub max: u32,
    /// `Stepping`.
    pub stepping: u32,
}

/// The pin's declared framing: a `KSALLOCATOR_FRAMING_EX` with one
/// `KS_FRAMING_ITEM`, as `DECLARE_SIMPLE_FRAMING_EX` builds it (compression
/// 1:1, bus type "don't care", memory/bus flags 0, weights 0).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PinFraming {
    /// `FramingItem[0].MemoryType`.
    pub memory_type: Guid,
    /// `FramingItem[0].BusType`.
    pub bus_type: Guid,
    /// `FramingItem[0].Flags`.
    pub flags: u32,
    /// `FramingItem[0].Frames`.
    pub frames: u32,
    /// `FramingItem[0].FileAlignment` (a mask).
    pub file_alignment: u32,
    /// `FramingItem[0].PhysicalRange`.
    pub physical_range: FrameSizeRange,
    /// `FramingItem[0].FramingRange.Range`.
    pub framing_range: FrameSizeRange,
}

/// Frames the pin asks for by default (its allocator hands out this many).
pub const DEFAULT_PIN_FRAMES: u32 = 4;

/// Flags the pin declares: it wants system (nonpaged) memory, and because the
/// capture path copies into any frame, everything is only a preference.
pub const PIN_FRAMING_FLAGS: u32 = REQUIREMENTF_SYSTEM_MEMORY | REQUIREMENTF_PREFERENCES_ONLY;

impl PinFraming {
    /// The `DECLARE_SIMPLE_FRAMING_EX` shape: physical range unlimited,
    /// framing range `[min_frame, max_frame]` with stepping 1.
    #[must_use]
    pub const fn simple(
        flags: u32,
        frames: u32,
        file_alignment: u32,
        min_frame: u32,
        max_frame: u32,
    ) -> Self {
        PinFraming {
            memory_type: KSMEMORY_TYPE_KERNEL_NONPAGED,
            bus_type: GUID_NULL,
            flags,
            frames,
            file_alignment,
            physical_range: FrameSizeRange {
                min: 0,
                max: u32::MAX,
                stepping: 1,
            },
            framing_range: FrameSizeRange {
                min: min_frame,
                max: max_frame,
                stepping: 1,
            },
        }
    }

    /// The framing the pin descriptor declares before any format is set:
    /// page-aligned frames spanning the smallest to the largest image offered.
    #[must_use]
    pub const fn declared() -> Self {
        let mut min = u32::MAX;
        let mut max = 0;
        let mut i = 0;
        while i < DATA_RANGES.len() {
            if let Ok(l) = DATA_RANGES[i].layout() {
                if l.image_size < min {
                    min = l.image_size;
                }
                if l.image_size > max {
                    max = l.image_size;
                }
            }
            i += 1;
        }
        Self::simple(
            PIN_FRAMING_FLAGS,
            DEFAULT_PIN_FRAMES,
            PAGE_ALIGNMENT_MASK,
            min,
            max,
        )
    }

    /// The framing for a connection format: `frames` page-aligned frames of
    /// exactly the image size (physical and framing ranges min = max = image
    /// size, stepping 0), which is what the pin's Create writes into its
    /// edited copy of the descriptor.
    ///
    /// # Errors
    /// [`FramingError::NoFrames`], [`FramingError::TooManyFrames`], or the
    /// format's layout error reported as [`FramingError::Overflow`].
    pub fn for_format(format: &VideoFormat, frames: u32) -> Result<Self, FramingError> {
        check_frame_count(frames, MAX_POOL_FRAMES)?;
        let image = format
            .layout()
            .map_err(|_| FramingError::Overflow)?
            .image_size;
        let exact = FrameSizeRange {
            min: image,
            max: image,
            stepping: 0,
        };
        Ok(PinFraming {
            frames,
            physical_range: exact,
            framing_range: exact,
            ..Self::simple(PIN_FRAMING_FLAGS, frames, PAGE_ALIGNMENT_MASK, image, image)
        })
    }
}

/// The legacy `KSALLOCATOR_FRAMING` an allocator instance is created with.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct AllocatorFraming {
    /// `OptionsFlags` / `RequirementsFlags` (one union).
    pub flags: u32,
    /// `PoolType`.
    pub pool_type: u32,
    /// `Frames`.
    pub frames: u32,
    /// `FrameSize` (0: no requirement, meaning the image size).
    pub frame_size: u32,
    /// `FileAlignment` (a mask).
    pub file_alignment: u32,
    /// `Reserved` (must be 0).
    pub reserved: u32,
}

impl AllocatorFraming {
    /// The request a graph manager derives from [`PinFraming::for_format`].
    #[must_use]
    pub const fn from_pin(pin: &PinFraming) -> Self {
        AllocatorFraming {
            flags: REQUIREMENTF_SYSTEM_MEMORY,
            pool_type: pool_type::NON_PAGED,
            frames: pin.frames,
            frame_size: pin.framing_range.max,
            file_alignment: pin.file_alignment,
            reserved: 0,
        }
    }
}

/// What one pool carved from one region looks like: the validator's answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PoolPlan {
    /// Number of slots.
    pub frames: u32,
    /// Usable bytes of each frame (the requested `FrameSize`).
    pub frame_size: u32,
    /// Alignment of every slot's virtual and logical address, in bytes.
    pub alignment: u32,
    /// Bytes from one slot to the next: `frame_size` rounded up to `alignment`.
    pub slot_size: u32,
    /// Offset of slot 0 from the region's start (padding to reach alignment).
    pub first_offset: u32,
    /// Bytes from the region's start to the end of the last slot.
    pub span: u64,
    /// Bytes the pool takes beyond `frames × frame_size`: slot rounding plus
    /// the leading padding.
    pub overhead: u64,
}

/// Limits of a carve-out: the most frames and the largest frame it serves.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CarveOut {
    /// The memory the pool may use.
    pub region: Region,
    /// The largest frame one slot may hold (the device sizes its common
    /// buffer for the largest format it offers).
    pub max_frame_size: u32,
    /// The most frames the pool may hand out (≤ [`MAX_POOL_FRAMES`]).
    pub max_frames: u32,
}

fn check_frame_count(frames: u32, max: u32) -> Result<(), FramingError> {
    if frames == 0 {
        return Err(FramingError::NoFrames);
    }
    let max = if max > MAX_POOL_FRAMES {
        MAX_POOL_FRAMES
    } else {
        max
    };
    if frames > max {
        return Err(FramingError::TooManyFrames {
            requested: frames,
            max,
        });
    }
    Ok(())
}

fn check_flags(flags: u32) -> Result<(), FramingError> {
    let unknown = flags & !KNOWN_FLAGS;
    if unknown != 0 {
        return Err(FramingError::UnknownFlags(unknown));
    }
    let both = REQUIREMENTF_INPLACE_MODIFIER | REQUIREMENTF_FRAME_INTEGRITY;
    if flags & both == both {
        return Err(FramingError::ContradictoryFlags);
    }
    Ok(())
}

/// The alignment in bytes implied by a `FileAlignment` mask and a pool type.
fn alignment_of(mask: u32, pool: u32) -> Result<u32, FramingError> {
    if mask & mask.wrapping_add(1) != 0 {
        return Err(FramingError::AlignmentNotMask(mask));
    }
    if mask > PAGE_ALIGNMENT_MASK {
        return Err(FramingError::AlignmentAbovePage(mask));
    }
    let floor = match pool {
        pool_type::NON_PAGED | pool_type::PAGED | pool_type::NON_PAGED_NX => 1,
        pool_type::NON_PAGED_CACHE_ALIGNED
        | pool_type::PAGED_CACHE_ALIGNED
        | pool_type::NON_PAGED_NX_CACHE_ALIGNED => CACHE_LINE,
        other => return Err(FramingError::UnsupportedPoolType(other)),
    };
    Ok((mask + 1).max(floor))
}

/// Validates an allocator request against the connection's image size and a
/// carve-out, and lays the slots out.
///
/// # Errors
/// A [`FramingError`]; [`FramingError::ntstatus`] gives the status to return.
pub fn validate(
    request: &AllocatorFraming,
    image_size: u32,
    carve: &CarveOut,
) -> Result<PoolPlan, FramingError> {
    if request.reserved != 0 {
        return Err(FramingError::ReservedNotZero);
    }
    check_flags(request.flags)?;
    let alignment = alignment_of(request.file_alignment, request.pool_type)?;
    let frame_size = if request.frame_size == 0 {
        image_size
    } else {
        request.frame_size
    };
    if frame_size < image_size || frame_size == 0 {
        return Err(FramingError::FrameSmallerThanImage {
            frame_size,
            image_size,
        });
    }
    if frame_size > carve.max_frame_size {
        return Err(FramingError::FrameLargerThanSlot {
            frame_size,
            max: carve.max_frame_size,
        });
    }
    check_frame_count(request.frames, carve.max_frames)?;
    plan(request.frames, frame_size, alignment, &carve.region)
}

/// Lays `frames` slots of `frame_size` bytes, each aligned to `alignment`
/// (a power of two) in both address spaces, into `region`.
///
/// # Errors
/// [`FramingError::RegionMisaligned`], [`FramingError::DoesNotFit`] or
/// [`FramingError::Overflow`].
pub fn plan(
    frames: u32,
    frame_size: u32,
    alignment: u32,
    region: &Region,
) -> Result<PoolPlan, FramingError> {
    debug_assert!(alignment.is_power_of_two());
    let a = u64::from(alignment);
    let virt = region.virtual_base as u64;
    if virt % a != region.logical_base % a {
        return Err(FramingError::RegionMisaligned);
    }
    let first_offset = (a - virt % a) % a;
    let slot_size = frame_size
        .checked_next_multiple_of(alignment)
        .ok_or(FramingError::Overflow)?;
    let span = u64::from(slot_size)
        .checked_mul(u64::from(frames))
        .and_then(|s| s.checked_add(first_offset))
        .ok_or(FramingError::Overflow)?;
    let available = region.len as u64;
    if span > available {
        return Err(FramingError::DoesNotFit {
            needed: span,
            available,
        });
    }
    // The addresses of every slot must stay representable.
    region
        .logical_base
        .checked_add(span)
        .ok_or(FramingError::Overflow)?;
    region
        .virtual_base
        .checked_add(usize::try_from(span).map_err(|_| FramingError::Overflow)?)
        .ok_or(FramingError::Overflow)?;
    let used = u64::from(frame_size) * u64::from(frames);
    Ok(PoolPlan {
        frames,
        frame_size,
        alignment,
        slot_size,
        #[allow(clippy::cast_possible_truncation)]
        first_offset: first_offset as u32,
        span,
        overhead: span - used,
    })
}

/// The plan for the staging slots a device keeps for copied frames: `count`
/// page-aligned slots of the format's image size.
///
/// # Errors
/// As [`plan`], and [`FramingError::NoFrames`] / [`FramingError::TooManyFrames`].
pub fn staging_plan(
    layout: &FrameLayout,
    count: u32,
    region: &Region,
) -> Result<PoolPlan, FramingError> {
    check_frame_count(count, MAX_POOL_FRAMES)?;
    plan(count, layout.image_size, PAGE_SIZE, region)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::portable::video_format::default_format;

    const IMAGE: u32 = 460_800; // 640x480 NV12

    fn carve(len: usize) -> CarveOut {
        CarveOut {
            region: Region {
                virtual_base: 0x10_0000,
                logical_base: 0x8000_0000,
                len,
            },
            max_frame_size: 1 << 21,
            max_frames: 8,
        }
    }

    fn request(frames: u32, frame_size: u32, mask: u32) -> AllocatorFraming {
        AllocatorFraming {
            flags: REQUIREMENTF_SYSTEM_MEMORY,
            pool_type: 0,
            frames,
            frame_size,
            file_alignment: mask,
            reserved: 0,
        }
    }

    #[test]
    fn pin_framing_follows_the_connection_format() {
        let f = PinFraming::for_format(&default_format(), 4).unwrap();
        assert_eq!(f.frames, 4);
        assert_eq!(f.file_alignment, 0xFFF);
        assert_eq!(
            (
                f.framing_range.min,
                f.framing_range.max,
                f.framing_range.stepping
            ),
            (IMAGE, IMAGE, 0)
        );
        assert_eq!(f.physical_range, f.framing_range);
        assert_eq!(f.memory_type, KSMEMORY_TYPE_KERNEL_NONPAGED);
        assert_eq!(f.flags, 0x8000_0002);
        assert_eq!(
            PinFraming::for_format(&default_format(), 0),
            Err(FramingError::NoFrames)
        );
        assert!(matches!(
            PinFraming::for_format(&default_format(), 65),
            Err(FramingError::TooManyFrames { .. })
        ));
    }

    #[test]
    fn declared_framing_spans_all_offered_images() {
        let d = PinFraming::declared();
        assert_eq!(d.framing_range.min, 115_200); // 320x240 NV12
        assert_eq!(d.framing_range.max, 24_883_200); // 3840x2160 RGB24
        assert_eq!(
            d.physical_range,
            FrameSizeRange {
                min: 0,
                max: u32::MAX,
                stepping: 1
            }
        );
    }

    #[test]
    fn page_aligned_plan_rounds_slots_and_reports_overhead() {
        let p = validate(&request(4, IMAGE, 0xFFF), IMAGE, &carve(4 << 20)).unwrap();
        assert_eq!(p.slot_size, 462_848); // 113 pages
        assert_eq!(p.first_offset, 0);
        assert_eq!(p.span, 4 * 462_848);
        assert_eq!(p.overhead, 4 * (462_848 - 460_800));
    }

    #[test]
    fn misaligned_region_start_is_padded() {
        let mut c = carve(4 << 20);
        c.region.virtual_base += 0x100;
        c.region.logical_base += 0x100;
        let p = validate(&request(2, IMAGE, 0xFFF), IMAGE, &c).unwrap();
        assert_eq!(p.first_offset, 0xF00);
        assert_eq!(p.overhead, 0xF00 + 2 * 2048);
        c.region.logical_base += 0x10;
        assert_eq!(
            validate(&request(2, IMAGE, 0xFFF), IMAGE, &c),
            Err(FramingError::RegionMisaligned)
        );
    }

    #[test]
    fn zero_frame_size_means_image_size() {
        let p = validate(&request(1, 0, 3), IMAGE, &carve(1 << 20)).unwrap();
        assert_eq!(p.frame_size, IMAGE);
    }

    #[test]
    fn each_bad_field_gets_its_error_and_status() {
        let c = carve(4 << 20);
        let cases: [(AllocatorFraming, FramingError, NtStatus); 10] = [
            (
                request(0, IMAGE, 0xFFF),
                FramingError::NoFrames,
                STATUS_INVALID_PARAMETER,
            ),
            (
                request(9, IMAGE, 0xFFF),
                FramingError::TooManyFrames {
                    requested: 9,
                    max: 8,
                },
                STATUS_INSUFFICIENT_RESOURCES,
            ),
            (
                request(2, IMAGE - 1, 0xFFF),
                FramingError::FrameSmallerThanImage {
                    frame_size: IMAGE - 1,
                    image_size: IMAGE,
                },
                STATUS_INVALID_PARAMETER,
            ),
            (
                request(2, (1 << 21) + 1, 0xFFF),
                FramingError::FrameLargerThanSlot {
                    frame_size: (1 << 21) + 1,
                    max: 1 << 21,
                },
                STATUS_INSUFFICIENT_RESOURCES,
            ),
            (
                request(2, IMAGE, 4096),
                FramingError::AlignmentNotMask(4096),
                STATUS_INVALID_PARAMETER,
            ),
            (
                request(2, IMAGE, 0x1FFF),
                FramingError::AlignmentAbovePage(0x1FFF),
                STATUS_NOT_SUPPORTED,
            ),
            (
                AllocatorFraming {
                    flags: 0x10,
                    ..request(2, IMAGE, 0xFFF)
                },
                FramingError::UnknownFlags(0x10),
                STATUS_NOT_SUPPORTED,
            ),
            (
                AllocatorFraming {
                    flags: 0x5,
                    ..request(2, IMAGE, 0xFFF)
                },
                FramingError::ContradictoryFlags,
                STATUS_INVALID_PARAMETER,
            ),
            (
                AllocatorFraming {
                    pool_type: 32,
                    ..request(2, IMAGE, 0xFFF)
                },
                FramingError::UnsupportedPoolType(32),
                STATUS_NOT_SUPPORTED,
            ),
            (
                AllocatorFraming {
                    reserved: 1,
                    ..request(2, IMAGE, 0xFFF)
                },
                FramingError::ReservedNotZero,
                STATUS_INVALID_PARAMETER,
            ),
        ];
        for (req, err, status) in cases {
            assert_eq!(validate(&req, IMAGE, &c), Err(err), "{req:?}");
            assert_eq!(err.ntstatus(), status);
        }
    }

    #[test]
    fn more_frames_than_the_region_holds_do_not_fit() {
        let r = validate(&request(8, IMAGE, 0xFFF), IMAGE, &carve(3 << 20));
        assert_eq!(
            r,
            Err(FramingError::DoesNotFit {
                needed: 8 * 462_848,
                available: 3 << 20
            })
        );
        assert_eq!(r.unwrap_err().ntstatus(), STATUS_INSUFFICIENT_RESOURCES);
    }

    #[test]
    fn cache_aligned_pool_types_raise_the_alignment() {
        let req = AllocatorFraming {
            pool_type: pool_type::NON_PAGED_NX_CACHE_ALIGNED,
            ..request(2, 1000, 3)
        };
        assert_eq!(validate(&req, 1000, &carve(1 << 20)).unwrap().alignment, 64);
        assert_eq!(
            validate(&request(2, 1000, 3), 1000, &carve(1 << 20))
                .unwrap()
                .alignment,
            4
        );
    }

    #[test]
    fn overflowing_sizes_are_errors_not_panics() {
        let huge = CarveOut {
            region: Region {
                virtual_base: usize::MAX - 4095,
                logical_base: u64::MAX - 4095,
                len: usize::MAX,
            },
            max_frame_size: u32::MAX,
            max_frames: 64,
        };
        assert_eq!(
            validate(&request(2, u32::MAX, 0xFFF), 1, &huge),
            Err(FramingError::Overflow)
        );
        assert_eq!(
            validate(&request(64, 1 << 30, 0xFFF), 1, &huge),
            Err(FramingError::Overflow)
        );
    }

    #[test]
    fn legacy_request_from_pin_framing_validates() {
        let pin = PinFraming::for_format(&default_format(), 4).unwrap();
        let req = AllocatorFraming::from_pin(&pin);
        assert_eq!(validate(&req, IMAGE, &carve(4 << 20)).unwrap().frames, 4);
    }
}
