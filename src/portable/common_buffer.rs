//! How the device's one common buffer is divided: the allocator's carve-out
//! (frames handed to a kernel-mode peer through `KSALLOCATOR_DISPATCH`) and
//! the staging slots (where the simulated hardware writes frames that are
//! then copied into client buffers). Sized at PnP start for the largest
//! format the pin offers.

use super::frame_pool::{Region, MAX_POOL_FRAMES};
use super::framing::{CarveOut, FramingError, DEFAULT_PIN_FRAMES, PAGE_SIZE};
use super::video_format::{max_image_size, DATA_RANGES, FRAME_SIZES};

/// Staging slots the device keeps: one being filled, one being copied out.
pub const DEFAULT_STAGING_SLOTS: u32 = 2;

/// The division of the common buffer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CommonBufferLayout {
    /// Bytes one slot holds: the largest image rounded up to a page.
    pub slot_size: u32,
    /// Frames in the allocator's carve-out.
    pub allocator_frames: u32,
    /// Staging slots.
    pub staging_slots: u32,
    /// Total bytes to allocate.
    pub total: usize,
}

impl CommonBufferLayout {
    /// The layout for slots of `max_image` bytes.
    ///
    /// # Errors
    /// [`FramingError::NoFrames`] / [`FramingError::TooManyFrames`] for a
    /// count outside 1..=64, or [`FramingError::Overflow`].
    pub fn new(
        max_image: u32,
        allocator_frames: u32,
        staging_slots: u32,
    ) -> Result<Self, FramingError> {
        for count in [allocator_frames, staging_slots] {
            if count == 0 {
                return Err(FramingError::NoFrames);
            }
            if count > MAX_POOL_FRAMES {
                return Err(FramingError::TooManyFrames {
                    requested: count,
                    max: MAX_POOL_FRAMES,
                });
            }
        }
        let slot_size = max_image
            .checked_next_multiple_of(PAGE_SIZE)
            .ok_or(FramingError::Overflow)?;
        let total = u64::from(slot_size) * u64::from(allocator_frames + staging_slots);
        let total = usize::try_from(total).map_err(|_| FramingError::Overflow)?;
        Ok(CommonBufferLayout {
            slot_size,
            allocator_frames,
            staging_slots,
            total,
        })
    }

    /// The device's layout: the largest offered image, the pin's default
    /// allocator frames and [`DEFAULT_STAGING_SLOTS`].
    ///
    /// # Errors
    /// As [`Self::new`] (not for the offered formats).
    pub fn for_device() -> Result<Self, FramingError> {
        Self::new(max_image_size(), DEFAULT_PIN_FRAMES, DEFAULT_STAGING_SLOTS)
    }

    /// The layouts a device tries, largest first: slots for the largest
    /// offered image, then for the largest image of each smaller frame size.
    /// One physically contiguous buffer of the first size (about 142 MiB for
    /// 3840x2160 RGB24) is often not to be had on a running system; a device
    /// that gets a smaller one still starts, and formats whose image does not
    /// fit a slot are refused at pin creation.
    #[must_use]
    pub fn fallbacks() -> [Option<Self>; FRAME_SIZES.len()] {
        let mut out = [None; FRAME_SIZES.len()];
        for (slot, &(w, h)) in out.iter_mut().zip(FRAME_SIZES.iter().rev()) {
            let largest = DATA_RANGES
                .iter()
                .filter(|f| (f.width, f.height) == (w, h))
                .filter_map(|f| f.layout().ok())
                .map(|l| l.image_size)
                .max();
            *slot = largest
                .and_then(|image| Self::new(image, DEFAULT_PIN_FRAMES, DEFAULT_STAGING_SLOTS).ok());
        }
        out
    }

    /// Whether frames of `image_size` bytes fit this layout's slots.
    #[must_use]
    pub const fn holds(&self, image_size: u32) -> bool {
        image_size <= self.slot_size
    }

    fn allocator_len(&self) -> usize {
        self.slot_size as usize * self.allocator_frames as usize
    }

    /// The allocator's carve-out of a buffer allocated with this layout
    /// (page aligned in both address spaces, as common buffers are).
    #[must_use]
    pub fn allocator_carve_out(&self, buffer: &Region) -> Option<CarveOut> {
        let region = buffer.sub_region(0, self.allocator_len())?;
        Some(CarveOut {
            region,
            max_frame_size: self.slot_size,
            max_frames: self.allocator_frames,
        })
    }

    /// The staging slots' region of a buffer allocated with this layout.
    #[must_use]
    pub fn staging_region(&self, buffer: &Region) -> Option<Region> {
        buffer.sub_region(
            self.allocator_len(),
            self.slot_size as usize * self.staging_slots as usize,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::portable::frame_pool::FramePool;
    use crate::portable::framing::{self, AllocatorFraming, PinFraming};
    use crate::portable::video_format::{FrameLayout, PixelFormat, DATA_RANGES};

    #[test]
    fn device_buffer_holds_the_largest_format_in_every_slot() {
        let l = CommonBufferLayout::for_device().unwrap();
        assert_eq!(l.slot_size, 24_883_200); // 3840x2160 RGB24, already a page multiple
        assert_eq!((l.allocator_frames, l.staging_slots), (4, 2));
        assert_eq!(l.total, 6 * 24_883_200);
    }

    #[test]
    fn every_offered_format_fits_both_carve_outs() {
        let l = CommonBufferLayout::for_device().unwrap();
        let buffer = Region {
            virtual_base: 0xFFFF_8000_0000_0000,
            logical_base: 0x1000_0000,
            len: l.total,
        };
        let carve = l.allocator_carve_out(&buffer).unwrap();
        let staging = l.staging_region(&buffer).unwrap();
        assert_eq!(carve.region.len + staging.len, l.total);
        for f in &DATA_RANGES {
            let layout = f.layout().unwrap();
            let pin = PinFraming::for_format(f, 4).unwrap();
            let pool = FramePool::for_request(
                &AllocatorFraming::from_pin(&pin),
                layout.image_size,
                &carve,
            )
            .unwrap();
            assert_eq!(pool.capacity(), 4);
            let plan = framing::staging_plan(&layout, 2, &staging).unwrap();
            assert_eq!(plan.frames, 2);
        }
    }

    #[test]
    fn fallbacks_shrink_from_the_largest_format() {
        let all = CommonBufferLayout::fallbacks();
        let sizes = all.map(|l| l.unwrap().slot_size);
        assert_eq!(
            sizes[0],
            CommonBufferLayout::for_device().unwrap().slot_size
        );
        assert!(sizes.windows(2).all(|w| w[0] > w[1]), "{sizes:?}");
        // 1920x1080 RGB24 = 6,220,800 bytes, rounded up to 1,519 pages.
        assert_eq!(sizes[1], 6_221_824);
        let smallest = all[4].unwrap();
        assert!(smallest.holds(230_400)); // 320x240 RGB24
        assert!(!smallest.holds(460_800 * 2)); // 640x480 YUY2
        assert_eq!(smallest.total, 6 * 233_472);
    }

    #[test]
    fn bad_counts_are_refused() {
        assert_eq!(
            CommonBufferLayout::new(1000, 0, 2),
            Err(FramingError::NoFrames)
        );
        assert!(matches!(
            CommonBufferLayout::new(1000, 2, 65),
            Err(FramingError::TooManyFrames { .. })
        ));
        assert_eq!(
            CommonBufferLayout::new(u32::MAX, 2, 2),
            Err(FramingError::Overflow)
        );
        let small = CommonBufferLayout::new(
            FrameLayout::new(PixelFormat::Nv12, 320, 240)
                .unwrap()
                .image_size,
            1,
            1,
        );
        assert_eq!(small.unwrap().slot_size, 118_784);
    }
}
