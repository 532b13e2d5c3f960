//! Allocator framing: what the capture pin declares, what an allocator
//! instance receives, and whether and how an allocator can serve it.
//!
//! The pin declares a `KSALLOCATOR_FRAMING_EX` with one item (the
//! `DECLARE_SIMPLE_FRAMING_EX` shape); an allocator instance receives the
//! legacy `KSALLOCATOR_FRAMING`. The validator decides whether, and with how
//! much memory, an allocator can serve a requested framing.
//!
//! Each allocator instance gets a common buffer of its own, sized from the
//! request it was created with ([`allocator_plan`]); each stream gets its
//! staging slots at STOP → ACQUIRE ([`staging_plan`]). Validation follows
//! the semantics of `KsValidateAllocatorCreateRequest` and of the
//! `KSALLOCATOR_FRAMING` reference: `OptionsFlags` are creation options
//! (what the request may carry, not the requirement bits of the pin's own
//! declaration), `Frames` 0 and `FrameSize` 0 mean "no requirement" (the
//! pin's default count, the image size), any count from 1 to
//! [`MAX_POOL_FRAMES`] is served, `FileAlignment` is a mask (2^k − 1, at
//! most `PAGE_SIZE − 1`), the pool type must be one nonpaged memory can
//! stand for, `Reserved` is zero. Every product and sum is overflow-checked.

use super::frame_pool::{Region, MAX_POOL_FRAMES};
use super::guid::{Guid, GUID_NULL, KSMEMORY_TYPE_KERNEL_NONPAGED};
use super::status::{
    NtStatus, STATUS_INSUFFICIENT_RESOURCES, STATUS_INVALID_PARAMETER, STATUS_NOT_SUPPORTED,
};
use super::video_format::{max_image_size, FrameLayout, VideoFormat, DATA_RANGES};

/// x64 page size.
pub const PAGE_SIZE: u32 = 4096;
/// `FileAlignment` mask for page alignment (`PAGE_SIZE − 1`).
pub const PAGE_ALIGNMENT_MASK: u32 = PAGE_SIZE - 1;
/// Alignment pool types named `…CacheAligned` guarantee (a cache line).
pub const CACHE_LINE: u32 = 64;

/// A byte alignment: always a power of two.
///
/// Hence "aligned to" means "the low bits are zero" and rounding up never
/// divides by zero. Made only by [`Alignment::new`], [`Alignment::from_mask`] or the
/// constants.
///
/// ```compile_fail,E0423
/// // The field is private: no alignment of 3 (or 0) can be written down.
/// let three = avscap::portable::framing::Alignment(3);
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Alignment(u32);

impl Alignment {
    /// Byte alignment (1: any address).
    pub const BYTE: Self = Self(1);
    /// Cache-line alignment.
    pub const CACHE_LINE: Self = Self(CACHE_LINE);
    /// Page alignment.
    pub const PAGE: Self = Self(PAGE_SIZE);

    /// The alignment of `bytes` bytes, or `None` when `bytes` is not a
    /// power of two (0 included).
    #[must_use]
    pub const fn new(bytes: u32) -> Option<Self> {
        if bytes.is_power_of_two() {
            Some(Self(bytes))
        } else {
            None
        }
    }

    /// The alignment a `FileAlignment`-style mask (2^k − 1) stands for, or
    /// `None` for a value of another form (`u32::MAX` included: 2³² bytes
    /// is not a `u32`).
    #[must_use]
    pub const fn from_mask(mask: u32) -> Option<Self> {
        match mask.checked_add(1) {
            Some(bytes) => Self::new(bytes),
            None => None,
        }
    }

    /// Bytes.
    #[must_use]
    pub const fn get(self) -> u32 {
        self.0
    }

    /// The larger of two alignments (both powers of two, so it satisfies
    /// both).
    #[must_use]
    pub const fn max(self, other: Self) -> Self {
        if self.0 >= other.0 {
            self
        } else {
            other
        }
    }
}

/// `KSALLOCATOR_REQUIREMENTF_INPLACE_MODIFIER` (same bit as `KSALLOCATOR_OPTIONF_COMPATIBLE`).
pub const REQUIREMENTF_INPLACE_MODIFIER: u32 = 0x0000_0001;
/// `KSALLOCATOR_OPTIONF_COMPATIBLE`.
pub const OPTIONF_COMPATIBLE: u32 = 0x0000_0001;
/// `KSALLOCATOR_REQUIREMENTF_SYSTEM_MEMORY` (same bit as `KSALLOCATOR_OPTIONF_SYSTEM_MEMORY`).
pub const REQUIREMENTF_SYSTEM_MEMORY: u32 = 0x0000_0002;
/// `KSALLOCATOR_OPTIONF_SYSTEM_MEMORY`.
pub const OPTIONF_SYSTEM_MEMORY: u32 = 0x0000_0002;
/// `KSALLOCATOR_OPTIONF_VALID`: every creation option.
pub const OPTIONF_VALID: u32 = OPTIONF_COMPATIBLE | OPTIONF_SYSTEM_MEMORY;
/// `KSALLOCATOR_REQUIREMENTF_FRAME_INTEGRITY`.
pub const REQUIREMENTF_FRAME_INTEGRITY: u32 = 0x0000_0004;
/// `KSALLOCATOR_REQUIREMENTF_MUST_ALLOCATE`.
pub const REQUIREMENTF_MUST_ALLOCATE: u32 = 0x0000_0008;
/// `KSALLOCATOR_REQUIREMENTF_PREFERENCES_ONLY`.
pub const REQUIREMENTF_PREFERENCES_ONLY: u32 = 0x8000_0000;
/// `KSALLOCATOR_FLAG_CAN_ALLOCATE` (a framing item flag): the pin can
/// allocate frames of the item's memory type.
pub const FLAG_CAN_ALLOCATE: u32 = 0x0000_0040;
/// The flag bits an allocator create request may carry.
///
/// Its `OptionsFlags` are creation options ([`OPTIONF_VALID`]: `COMPATIBLE`,
/// `SYSTEM_MEMORY`, both of which a nonpaged common buffer honours); a graph
/// manager that copies requirement bits of a framing (frame integrity,
/// must-allocate, preferences-only) into the request is served too, since none
/// of them asks anything this allocator does not do. Other bits are refused, as
/// `KsValidateAllocatorCreateRequest` refuses them.
pub const REQUEST_FLAGS: u32 = OPTIONF_VALID
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
    /// More frames than a pool tracks.
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
    /// `FrameSize` is above [`MAX_FRAME_SIZE`], the largest image the pin
    /// ever produces.
    FrameTooLarge {
        /// `FrameSize` asked for.
        frame_size: u32,
        /// The largest frame served.
        max: u32,
    },
    /// `FileAlignment` is not of the form 2^k − 1.
    AlignmentNotMask(u32),
    /// `FileAlignment` asks for more than page alignment.
    AlignmentAbovePage(u32),
    /// Flag bits an allocator request may not carry ([`REQUEST_FLAGS`]).
    UnknownFlags(u32),
    /// A pool type nonpaged system memory cannot stand for (session pools,
    /// must-succeed, unknown values).
    UnsupportedPoolType(u32),
    /// `Reserved` is not zero.
    ReservedNotZero,
    /// The region's virtual and logical bases disagree modulo the alignment,
    /// so no slot can be aligned in both.
    RegionMisaligned,
    /// The slots do not fit in the region (a buffer smaller than its plan).
    DoesNotFit {
        /// Bytes the slots need, alignment padding included.
        needed: u64,
        /// Bytes the region has.
        available: u64,
    },
    /// A pool asked to hold frames of 0 bytes.
    ZeroFrameSize,
    /// A product or sum overflowed.
    Overflow,
}

impl FramingError {
    /// The NTSTATUS the allocator's `InitializeAllocator` returns.
    #[must_use]
    pub const fn ntstatus(self) -> NtStatus {
        match self {
            Self::NoFrames
            | Self::ZeroFrameSize
            | Self::FrameSmallerThanImage { .. }
            | Self::AlignmentNotMask(_)
            | Self::UnknownFlags(_)
            | Self::ReservedNotZero
            | Self::Overflow => STATUS_INVALID_PARAMETER,
            Self::TooManyFrames { .. } | Self::FrameTooLarge { .. } | Self::DoesNotFit { .. } => {
                STATUS_INSUFFICIENT_RESOURCES
            }
            Self::AlignmentAbovePage(_) | Self::UnsupportedPoolType(_) | Self::RegionMisaligned => {
                STATUS_NOT_SUPPORTED
            }
        }
    }
}

/// A short sentence for a person (a log line, the simulator's refusals).
impl core::fmt::Display for FramingError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match *self {
            Self::NoFrames => f.write_str("0 frames requested; at least 1"),
            Self::TooManyFrames { requested, max } => {
                write!(f, "{requested} frames requested; at most {max}")
            }
            Self::FrameSmallerThanImage {
                frame_size,
                image_size,
            } => write!(
                f,
                "frames of {frame_size} bytes requested; the image needs {image_size}"
            ),
            Self::ZeroFrameSize => f.write_str("frames of 0 bytes requested"),
            Self::FrameTooLarge { frame_size, max } => {
                write!(f, "frames of {frame_size} bytes requested; at most {max}")
            }
            Self::AlignmentNotMask(mask) => {
                write!(f, "alignment mask {mask:#x} is not of the form 2^k - 1")
            }
            Self::AlignmentAbovePage(mask) => write!(
                f,
                "alignment mask {mask:#x} asks for more than page alignment"
            ),
            Self::UnknownFlags(bits) => write!(f, "unknown flag bits {bits:#x}"),
            Self::UnsupportedPoolType(pool) => write!(f, "unsupported pool type {pool}"),
            Self::ReservedNotZero => f.write_str("the reserved field is not zero"),
            Self::RegionMisaligned => {
                f.write_str("the buffer's virtual and logical addresses are aligned differently")
            }
            Self::DoesNotFit { needed, available } => write!(
                f,
                "the slots need {needed} bytes; the buffer has {available}"
            ),
            Self::Overflow => f.write_str("a buffer size overflowed"),
        }
    }
}

#[cfg(test)]
mod framing_error_display {
    use super::FramingError;

    #[test]
    fn names_the_numbers() {
        let says = |e: FramingError| e.to_string();
        assert_eq!(
            says(FramingError::TooManyFrames {
                requested: 1000,
                max: 64
            }),
            "1000 frames requested; at most 64"
        );
        assert_eq!(
            says(FramingError::NoFrames),
            "0 frames requested; at least 1"
        );
        let small = says(FramingError::FrameSmallerThanImage {
            frame_size: 100,
            image_size: 460_800,
        });
        assert!(small.contains("100") && small.contains("460800"), "{small}");
        let large = says(FramingError::FrameTooLarge {
            frame_size: 99_999_999,
            max: 24_883_200,
        });
        assert!(
            large.contains("99999999") && large.contains("24883200"),
            "{large}"
        );
        let fit = says(FramingError::DoesNotFit {
            needed: 8192,
            available: 4096,
        });
        assert!(fit.contains("8192") && fit.contains("4096"), "{fit}");
        assert!(says(FramingError::AlignmentNotMask(6)).contains("0x6"));
        assert!(says(FramingError::AlignmentAbovePage(0x1_ffff)).contains("0x1ffff"));
        assert!(says(FramingError::UnknownFlags(0x100)).contains("0x100"));
        assert!(says(FramingError::UnsupportedPoolType(7)).contains('7'));
        for e in [
            FramingError::ZeroFrameSize,
            FramingError::ReservedNotZero,
            FramingError::RegionMisaligned,
            FramingError::Overflow,
        ] {
            let s = says(e);
            assert!(!s.is_empty() && !s.contains('{'), "{e:?}: {s}");
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

/// Flags the pin declares.
///
/// It wants system (nonpaged) memory; because the capture path copies into any
/// frame, every requirement is only a preference; and it can allocate frames of
/// its memory type (`KSALLOCATOR_FLAG_CAN_ALLOCATE`): its
/// `KSALLOCATOR_DISPATCH` hands out nonpaged common-buffer frames, which is
/// exactly what the item's `KSMEMORY_TYPE_KERNEL_NONPAGED` names. The
/// `KS_FRAMING_ITEM` reference defines the flag as "the pin can allocate this
/// memory type" and warns only against setting it for memory the device can
/// merely address; a graph manager choosing where frames come from reads it to
/// know that the pin offers an allocator at all, so a pin that has one says so.
pub const PIN_FRAMING_FLAGS: u32 =
    REQUIREMENTF_SYSTEM_MEMORY | REQUIREMENTF_PREFERENCES_ONLY | FLAG_CAN_ALLOCATE;

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
        Self {
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
                if l.image_size() < min {
                    min = l.image_size();
                }
                if l.image_size() > max {
                    max = l.image_size();
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
            .image_size();
        let exact = FrameSizeRange {
            min: image,
            max: image,
            stepping: 0,
        };
        Ok(Self {
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
        Self {
            flags: REQUIREMENTF_SYSTEM_MEMORY,
            pool_type: pool_type::NON_PAGED,
            frames: pin.frames,
            frame_size: pin.framing_range.max,
            file_alignment: pin.file_alignment,
            reserved: 0,
        }
    }
}

/// What one pool carved from one region looks like.
///
/// Made only by [`plan`], which checked every field against the region it
/// carries, so a pool built from it
/// ([`FramePool::with_plan`](super::frame_pool::FramePool::with_plan)) can
/// trust it without checking again.
///
/// ```compile_fail,E0616
/// // The fields are private: no caller can bend a plan after the fact.
/// fn forge(plan: &mut avscap::portable::framing::PoolPlan) {
///     plan.slot_size = 0;
/// }
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PoolPlan {
    /// The region the slots are carved from.
    region: Region,
    /// Number of slots: 1..=64.
    frames: u32,
    /// Usable bytes of each frame (the requested `FrameSize`), at least 1.
    frame_size: u32,
    /// Alignment of every slot's virtual and logical address.
    alignment: Alignment,
    /// Bytes from one slot to the next: `frame_size` rounded up to
    /// `alignment` (so at least `frame_size`: slots never overlap).
    slot_size: u32,
    /// Offset of slot 0 from the region's start (padding to reach alignment).
    first_offset: u32,
    /// Bytes from the region's start to the end of the last slot: at most
    /// the region's length, and every address below it representable.
    span: u64,
}

impl PoolPlan {
    /// The region the slots are carved from.
    #[must_use]
    pub const fn region(&self) -> &Region {
        &self.region
    }

    /// Number of slots (1..=64).
    #[must_use]
    pub const fn frames(&self) -> u32 {
        self.frames
    }

    /// Usable bytes of each frame.
    #[must_use]
    pub const fn frame_size(&self) -> u32 {
        self.frame_size
    }

    /// Alignment of every slot in both address spaces.
    #[must_use]
    pub const fn alignment(&self) -> Alignment {
        self.alignment
    }

    /// Bytes from one slot to the next (`frame_size` rounded up to the
    /// alignment).
    #[must_use]
    pub const fn slot_size(&self) -> u32 {
        self.slot_size
    }

    /// Offset of slot 0 from the region's start.
    #[must_use]
    pub const fn first_offset(&self) -> u32 {
        self.first_offset
    }

    /// Bytes from the region's start to the end of the last slot.
    #[must_use]
    pub const fn span(&self) -> u64 {
        self.span
    }

    /// Bytes the pool takes beyond `frames × frame_size`: slot rounding plus
    /// the leading padding.
    #[must_use]
    pub const fn overhead(&self) -> u64 {
        self.span - self.frame_size as u64 * self.frames as u64
    }
}

/// The largest `FrameSize` an allocator serves: the largest image the pin
/// offers, rounded up to a page. A larger frame would never be filled.
pub const MAX_FRAME_SIZE: u32 = max_image_size().next_multiple_of(PAGE_SIZE);

/// One common buffer for a stream: `frames` page-aligned slots of
/// `slot_size` bytes, each holding a frame of `frame_size` bytes.
///
/// Made by [`allocator_plan`] (an allocator instance's buffer) and
/// [`staging_plan`] (a stream's staging slots); the shell allocates exactly
/// `bytes()` bytes and builds the pool over them with `FramePool::over`.
///
/// ```compile_fail,E0616
/// // The fields are private: only the planners above make one.
/// fn forge(plan: &mut avscap::portable::framing::BufferPlan) {
///     plan.len = 1;
/// }
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BufferPlan {
    /// Slots: 1..=64.
    frames: u32,
    /// Usable bytes of each frame.
    frame_size: u32,
    /// Bytes from one slot to the next: `frame_size` rounded up to a page
    /// (which also satisfies any alignment a request may ask for).
    slot_size: u32,
    /// Bytes of the whole buffer: `frames × slot_size`, a page multiple.
    len: usize,
}

impl BufferPlan {
    fn new(frames: u32, frame_size: u32) -> Result<Self, FramingError> {
        check_frame_count(frames, MAX_POOL_FRAMES)?;
        let slot_size = frame_size
            .max(1)
            .checked_next_multiple_of(PAGE_SIZE)
            .ok_or(FramingError::Overflow)?;
        let len = usize::try_from(u64::from(slot_size) * u64::from(frames))
            .map_err(|_| FramingError::Overflow)?;
        Ok(Self {
            frames,
            frame_size,
            slot_size,
            len,
        })
    }

    /// Slots (1..=64).
    #[must_use]
    pub const fn frames(&self) -> u32 {
        self.frames
    }

    /// Usable bytes of each frame.
    #[must_use]
    pub const fn frame_size(&self) -> u32 {
        self.frame_size
    }

    /// Bytes from one slot to the next (a page multiple).
    #[must_use]
    pub const fn slot_size(&self) -> u32 {
        self.slot_size
    }

    /// Bytes of the whole buffer to allocate.
    #[must_use]
    pub const fn bytes(&self) -> usize {
        self.len
    }

    /// Bytes the buffer takes beyond the frames themselves (slot rounding:
    /// under one page per frame).
    #[must_use]
    pub const fn overhead(&self) -> u64 {
        self.len as u64 - self.frame_size as u64 * self.frames as u64
    }
}

const fn check_frame_count(frames: u32, max: u32) -> Result<(), FramingError> {
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

const fn check_flags(flags: u32) -> Result<(), FramingError> {
    let unknown = flags & !REQUEST_FLAGS;
    if unknown != 0 {
        return Err(FramingError::UnknownFlags(unknown));
    }
    Ok(())
}

/// The alignment implied by a `FileAlignment` mask and a pool type.
fn alignment_of(mask: u32, pool: u32) -> Result<Alignment, FramingError> {
    let Some(asked) = Alignment::from_mask(mask) else {
        return Err(FramingError::AlignmentNotMask(mask));
    };
    if asked > Alignment::PAGE {
        return Err(FramingError::AlignmentAbovePage(mask));
    }
    let floor = match pool {
        pool_type::NON_PAGED | pool_type::PAGED | pool_type::NON_PAGED_NX => Alignment::BYTE,
        pool_type::NON_PAGED_CACHE_ALIGNED
        | pool_type::PAGED_CACHE_ALIGNED
        | pool_type::NON_PAGED_NX_CACHE_ALIGNED => Alignment::CACHE_LINE,
        other => return Err(FramingError::UnsupportedPoolType(other)),
    };
    Ok(asked.max(floor))
}

/// Validates an allocator create request for a connection whose image is
/// `image_size` bytes and sizes the common buffer that serves it
/// (`InitializeAllocator`).
///
/// `Frames` 0 is served with [`DEFAULT_PIN_FRAMES`] frames and `FrameSize` 0
/// with frames of the image size: the `KSALLOCATOR_FRAMING` reference defines
/// both zeros as "no requirement". Slots are page aligned, which covers every
/// alignment a valid request may ask for.
///
/// # Errors
/// A [`FramingError`]; [`FramingError::ntstatus`] gives the status to return.
pub fn allocator_plan(
    request: &AllocatorFraming,
    image_size: u32,
) -> Result<BufferPlan, FramingError> {
    if request.reserved != 0 {
        return Err(FramingError::ReservedNotZero);
    }
    check_flags(request.flags)?;
    // Validated for the status it may return; every valid alignment is at
    // most a page, and the slots are page aligned.
    alignment_of(request.file_alignment, request.pool_type)?;
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
    if frame_size > MAX_FRAME_SIZE {
        return Err(FramingError::FrameTooLarge {
            frame_size,
            max: MAX_FRAME_SIZE,
        });
    }
    let frames = if request.frames == 0 {
        DEFAULT_PIN_FRAMES
    } else {
        request.frames
    };
    BufferPlan::new(frames, frame_size)
}

/// The staging slots a stream takes at STOP → ACQUIRE: `count` page-aligned
/// slots of the format's image size.
///
/// # Errors
/// [`FramingError::NoFrames`] / [`FramingError::TooManyFrames`] for a count
/// outside 1..=64, [`FramingError::Overflow`].
pub fn staging_plan(layout: &FrameLayout, count: u32) -> Result<BufferPlan, FramingError> {
    BufferPlan::new(count, layout.image_size())
}

/// Lays `frames` slots of `frame_size` bytes, each aligned to `alignment`
/// in both address spaces, into `region`: the only way to make a
/// [`PoolPlan`].
///
/// # Errors
/// [`FramingError::NoFrames`] / [`FramingError::TooManyFrames`] for a count
/// outside 1..=64, [`FramingError::ZeroFrameSize`],
/// [`FramingError::RegionMisaligned`], [`FramingError::DoesNotFit`] or
/// [`FramingError::Overflow`] (a slot address past the end of either
/// address space).
pub fn plan(
    frames: u32,
    frame_size: u32,
    alignment: Alignment,
    region: &Region,
) -> Result<PoolPlan, FramingError> {
    check_frame_count(frames, MAX_POOL_FRAMES)?;
    if frame_size == 0 {
        return Err(FramingError::ZeroFrameSize);
    }
    let a = u64::from(alignment.get());
    let virt = region.virtual_base as u64;
    if virt % a != region.logical_base % a {
        return Err(FramingError::RegionMisaligned);
    }
    let first_offset = (a - virt % a) % a;
    let slot_size = frame_size
        .checked_next_multiple_of(alignment.get())
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
    Ok(PoolPlan {
        region: *region,
        frames,
        frame_size,
        alignment,
        slot_size,
        #[allow(clippy::cast_possible_truncation)]
        first_offset: first_offset as u32,
        span,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::portable::video_format::{default_format, PixelFormat};

    const IMAGE: u32 = 460_800; // 640x480 NV12
    const SLOT: u32 = 462_848; // 113 pages

    fn request(frames: u32, frame_size: u32, mask: u32) -> AllocatorFraming {
        AllocatorFraming {
            flags: OPTIONF_SYSTEM_MEMORY,
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
        // SYSTEM_MEMORY | CAN_ALLOCATE | PREFERENCES_ONLY.
        assert_eq!(f.flags, 0x8000_0042);
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
        assert_eq!(d.flags & FLAG_CAN_ALLOCATE, FLAG_CAN_ALLOCATE);
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
    fn allocator_buffer_is_sized_from_its_request() {
        let p = allocator_plan(&request(4, IMAGE, 0xFFF), IMAGE).unwrap();
        assert_eq!((p.frames, p.frame_size, p.slot_size), (4, IMAGE, SLOT));
        assert_eq!(p.len, 4 * SLOT as usize);
        assert_eq!(p.overhead(), 4 * u64::from(SLOT - IMAGE));
        // Any count the pool tracks is served, not only the declared 4.
        for frames in [1, 2, 7, 64] {
            let p = allocator_plan(&request(frames, IMAGE, 3), IMAGE).unwrap();
            assert_eq!(p.len, frames as usize * SLOT as usize, "{frames}");
        }
        // A larger frame than the image gets a larger slot.
        let p = allocator_plan(&request(2, IMAGE + 5000, 0), IMAGE).unwrap();
        assert_eq!(p.slot_size, (IMAGE + 5000).next_multiple_of(PAGE_SIZE));
    }

    #[test]
    fn zero_frames_and_zero_frame_size_mean_no_requirement() {
        let p = allocator_plan(&request(0, 0, 3), IMAGE).unwrap();
        assert_eq!((p.frames, p.frame_size), (DEFAULT_PIN_FRAMES, IMAGE));
    }

    #[test]
    fn option_flags_are_options_not_requirements() {
        // COMPATIBLE shares its bit with INPLACE_MODIFIER; with
        // FRAME_INTEGRITY it is a valid request, not a contradiction.
        for flags in [
            0,
            OPTIONF_COMPATIBLE,
            OPTIONF_SYSTEM_MEMORY,
            OPTIONF_VALID,
            OPTIONF_COMPATIBLE | REQUIREMENTF_FRAME_INTEGRITY,
            REQUEST_FLAGS,
        ] {
            let r = AllocatorFraming {
                flags,
                ..request(4, IMAGE, 0xFFF)
            };
            assert!(allocator_plan(&r, IMAGE).is_ok(), "{flags:#x}");
        }
        let r = AllocatorFraming {
            flags: OPTIONF_VALID | 0x10,
            ..request(4, IMAGE, 0xFFF)
        };
        assert_eq!(
            allocator_plan(&r, IMAGE),
            Err(FramingError::UnknownFlags(0x10))
        );
    }

    #[test]
    fn each_bad_field_gets_its_error_and_status() {
        let cases: [(AllocatorFraming, FramingError, NtStatus); 9] = [
            (
                request(65, IMAGE, 0xFFF),
                FramingError::TooManyFrames {
                    requested: 65,
                    max: 64,
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
                request(2, MAX_FRAME_SIZE + 1, 0xFFF),
                FramingError::FrameTooLarge {
                    frame_size: MAX_FRAME_SIZE + 1,
                    max: MAX_FRAME_SIZE,
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
                    flags: 0x20,
                    ..request(2, IMAGE, 0xFFF)
                },
                FramingError::UnknownFlags(0x20),
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
            (
                request(u32::MAX, IMAGE, 0xFFF),
                FramingError::TooManyFrames {
                    requested: u32::MAX,
                    max: 64,
                },
                STATUS_INSUFFICIENT_RESOURCES,
            ),
        ];
        for (req, err, status) in cases {
            assert_eq!(allocator_plan(&req, IMAGE), Err(err), "{req:?}");
            assert_eq!(err.ntstatus(), status);
        }
    }

    #[test]
    fn page_aligned_plan_rounds_slots_and_reports_overhead() {
        let region = Region {
            virtual_base: 0x10_0000,
            logical_base: 0x8000_0000,
            len: 4 << 20,
        };
        let p = plan(4, IMAGE, Alignment::PAGE, &region).unwrap();
        assert_eq!(p.slot_size, SLOT);
        assert_eq!(p.first_offset, 0);
        assert_eq!(p.span, 4 * u64::from(SLOT));
        assert_eq!(p.overhead(), 4 * u64::from(SLOT - IMAGE));
    }

    #[test]
    fn misaligned_region_start_is_padded() {
        let mut region = Region {
            virtual_base: 0x10_0100,
            logical_base: 0x8000_0100,
            len: 4 << 20,
        };
        let p = plan(2, IMAGE, Alignment::PAGE, &region).unwrap();
        assert_eq!(p.first_offset, 0xF00);
        assert_eq!(p.overhead(), 0xF00 + 2 * 2048);
        region.logical_base += 0x10;
        assert_eq!(
            plan(2, IMAGE, Alignment::PAGE, &region),
            Err(FramingError::RegionMisaligned)
        );
        region.len = 100;
        region.logical_base -= 0x10;
        assert!(matches!(
            plan(2, IMAGE, Alignment::PAGE, &region),
            Err(FramingError::DoesNotFit { .. })
        ));
    }

    #[test]
    fn cache_aligned_pool_types_are_served() {
        let req = AllocatorFraming {
            pool_type: pool_type::NON_PAGED_NX_CACHE_ALIGNED,
            ..request(2, 1000, 3)
        };
        assert_eq!(
            alignment_of(req.file_alignment, req.pool_type),
            Ok(Alignment::CACHE_LINE)
        );
        assert_eq!(allocator_plan(&req, 1000).unwrap().slot_size, PAGE_SIZE);
    }

    /// An alignment is a power of two or it does not exist: 0 and 3 (which
    /// `plan` once divided by and accepted) have no `Alignment`.
    #[test]
    fn alignments_are_powers_of_two_only() {
        for bytes in 0..=70_000u32 {
            assert_eq!(
                Alignment::new(bytes).map(Alignment::get),
                bytes.is_power_of_two().then_some(bytes),
                "{bytes}"
            );
        }
        assert_eq!(Alignment::new(1 << 31).map(Alignment::get), Some(1 << 31));
        assert_eq!(Alignment::new(u32::MAX), None);
        assert_eq!(Alignment::from_mask(0xFFF), Some(Alignment::PAGE));
        assert_eq!(Alignment::from_mask(0), Some(Alignment::BYTE));
        assert_eq!(Alignment::from_mask(5), None);
        assert_eq!(Alignment::from_mask(u32::MAX), None);
        assert_eq!(Alignment::PAGE.max(Alignment::CACHE_LINE), Alignment::PAGE);
    }

    /// The plans a hand-made `PoolPlan` could once describe — no slots,
    /// more than 64, slots of 0 bytes (every frame at one address), slots
    /// that wrap past the end of the address space (frame address 0) — are
    /// refused by the one constructor, and every plan it makes keeps its
    /// slots at least a frame apart and inside the region.
    #[test]
    fn plans_that_cannot_be_served_are_refused() {
        let region = Region {
            virtual_base: 0x10_0000,
            logical_base: 0x10_0000,
            len: 1 << 24,
        };
        assert_eq!(
            plan(0, 4096, Alignment::PAGE, &region),
            Err(FramingError::NoFrames)
        );
        assert_eq!(
            plan(65, 4096, Alignment::PAGE, &region),
            Err(FramingError::TooManyFrames {
                requested: 65,
                max: 64
            })
        );
        assert_eq!(
            plan(4, 0, Alignment::PAGE, &region),
            Err(FramingError::ZeroFrameSize)
        );
        let top = Region {
            virtual_base: usize::MAX - 0xFFFF,
            logical_base: 0x10_0000,
            len: 0x1_0000,
        };
        // 15 slots end one page below the top of the address space; a 16th
        // would end at 2^64, its end address wrapping to 0.
        assert_eq!(
            plan(15, 4096, Alignment::PAGE, &top).map(|p| p.frames()),
            Ok(15)
        );
        assert_eq!(
            plan(16, 4096, Alignment::PAGE, &top),
            Err(FramingError::Overflow)
        );
        for (frames, size, align) in [(1, 1, 1), (3, 4097, 4096), (64, 100, 64), (7, 4096, 2)] {
            let p = plan(frames, size, Alignment::new(align).unwrap(), &region).unwrap();
            assert!(p.slot_size() >= p.frame_size());
            assert_eq!(p.slot_size() % align, 0);
            assert!(p.span() <= region.len as u64);
            assert_eq!(p.region(), &region);
            assert_eq!(p.overhead(), p.span() - u64::from(size) * u64::from(frames));
        }
    }

    #[test]
    fn overflowing_sizes_are_errors_not_panics() {
        let huge = Region {
            virtual_base: usize::MAX - 4095,
            logical_base: u64::MAX - 4095,
            len: usize::MAX,
        };
        assert_eq!(
            plan(2, u32::MAX, Alignment::PAGE, &huge),
            Err(FramingError::Overflow)
        );
        assert_eq!(
            plan(64, 1 << 30, Alignment::PAGE, &huge),
            Err(FramingError::Overflow)
        );
        assert!(allocator_plan(&request(64, u32::MAX, 0xFFF), 1).is_err());
    }

    #[test]
    fn legacy_request_from_pin_framing_validates() {
        let pin = PinFraming::for_format(&default_format(), 4).unwrap();
        let req = AllocatorFraming::from_pin(&pin);
        assert_eq!(allocator_plan(&req, IMAGE).unwrap().frames, 4);
    }

    #[test]
    fn staging_slots_hold_one_image_each() {
        let l = FrameLayout::new(PixelFormat::Yuy2, 1920, 1080).unwrap();
        let p = staging_plan(&l, 2).unwrap();
        assert_eq!(p.frame_size, 4_147_200);
        assert_eq!(p.len, 2 * 4_149_248);
        assert_eq!(staging_plan(&l, 0), Err(FramingError::NoFrames));
    }
}
