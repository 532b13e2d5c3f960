//! The memory one stream takes, and when: nothing while nobody streams.
//!
//! * **Staging slots**, taken at STOP → ACQUIRE for the connection's format
//!   and given back at ACQUIRE → STOP: [`STAGING_SLOTS`] page-rounded
//!   images. The simulated hardware writes a frame there when the client's
//!   frame is not one of ours (every user-mode connection), and the
//!   delivery work copies it out.
//! * **An allocator buffer**, only on a connection whose graph manager
//!   creates the pin's KS allocator (kernel-to-kernel): sized from the
//!   framing the allocator is created with ([`framing::allocator_plan`]),
//!   taken by `InitializeAllocator` and given back by `DeleteAllocator`.
//!
//! [`StreamMemory`] computes both for a format from the same sizing code the
//! driver runs; the README's table of memory per format is generated from it
//! (and checked against it by `tests/stream_memory_table.rs`).

use super::framing::DEFAULT_PIN_FRAMES;
use super::framing::{self, AllocatorFraming, BufferPlan, FramingError, PinFraming};
use super::video_format::{FrameLayout, VideoFormat};

/// Staging slots a stream keeps: one being written by the hardware, one
/// being copied out to a client frame.
pub const STAGING_SLOTS: u32 = 2;

/// The common-buffer memory one stream of a format takes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StreamMemory {
    /// The frame layout.
    pub layout: FrameLayout,
    /// The staging slots every stream takes at STOP → ACQUIRE.
    pub staging: BufferPlan,
    /// The allocator's buffer when a graph manager creates the pin's
    /// allocator with the framing the pin declares for this format
    /// ([`DEFAULT_PIN_FRAMES`] frames of the image size).
    pub allocator: BufferPlan,
}

impl StreamMemory {
    /// The memory a stream of `format` takes.
    ///
    /// # Errors
    /// The sizing code's [`FramingError`] (none for an offered format).
    pub fn for_format(format: &VideoFormat) -> Result<Self, FramingError> {
        let layout = format.layout().map_err(|_| FramingError::Overflow)?;
        let pin = PinFraming::for_format(format, DEFAULT_PIN_FRAMES)?;
        Ok(Self {
            layout,
            staging: framing::staging_plan(&layout, STAGING_SLOTS)?,
            allocator: framing::allocator_plan(
                &AllocatorFraming::from_pin(&pin),
                layout.image_size(),
            )?,
        })
    }

    /// Bytes a user-mode connection's stream takes (staging only).
    #[must_use]
    pub const fn copy_path_bytes(&self) -> usize {
        self.staging.bytes()
    }

    /// Bytes a kernel-to-kernel stream takes when the pin's allocator is
    /// chosen (its buffer and the staging slots).
    #[must_use]
    pub const fn allocator_path_bytes(&self) -> usize {
        self.staging.bytes() + self.allocator.bytes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::portable::framing::PAGE_SIZE;
    use crate::portable::video_format::DATA_RANGES;

    #[test]
    fn every_offered_format_is_sized_with_under_a_page_of_slack_per_frame() {
        for f in &DATA_RANGES {
            let m = StreamMemory::for_format(f).unwrap();
            let image = m.layout.image_size();
            for plan in [m.staging, m.allocator] {
                assert!(plan.frame_size() >= image);
                assert_eq!(plan.bytes() % PAGE_SIZE as usize, 0);
                assert!(plan.overhead() < u64::from(PAGE_SIZE) * u64::from(plan.frames()));
            }
            assert_eq!(m.staging.frames(), STAGING_SLOTS);
            assert_eq!(m.allocator.frames(), DEFAULT_PIN_FRAMES);
        }
    }

    #[test]
    fn the_largest_stream_is_a_fraction_of_the_old_device_wide_buffer() {
        let largest = DATA_RANGES
            .iter()
            .map(|f| StreamMemory::for_format(f).unwrap().allocator_path_bytes())
            .max()
            .unwrap();
        // 3840x2160 RGB24: 6 slots of 24,883,200 bytes, as the device used
        // to hold from PnP start for its whole life; now only while a
        // kernel-to-kernel stream of that format runs.
        assert_eq!(largest, 6 * 24_883_200);
        let small = StreamMemory::for_format(&DATA_RANGES[0]).unwrap();
        assert!(small.copy_path_bytes() < 1 << 20, "{small:?}");
    }
}
