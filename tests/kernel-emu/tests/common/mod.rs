//! Helpers shared by the emulated-kernel tests: formats, a check that
//! prints the driver's debug output on failure, and a streaming session on
//! either allocator path with every delivered frame checked.

#![allow(dead_code)] // each test binary uses its own subset

use avscap::portable::image::DeliveryPath;
use avscap::portable::video_format::{PixelFormat, VideoFormat, DATA_RANGES};
use avscap_kernel_emu::ks::{state, Completed, Origin};
use avscap_kernel_emu::machine::R;
use avscap_kernel_emu::oracle;
use avscap_kernel_emu::session::{Allocator, LegacyFraming};
use avscap_kernel_emu::{Config, Driver};

/// `KSSTREAM_HEADER_OPTIONSF_TIMEVALID`.
pub const TIMEVALID: u32 = 0x10;
/// `KSSTREAM_HEADER_OPTIONSF_DURATIONVALID`.
pub const DURATIONVALID: u32 = 0x100;
/// `KSSTREAM_HEADER_OPTIONSF_DATADISCONTINUITY`.
pub const DATADISCONTINUITY: u32 = 0x4;

/// Unwraps a model result; on failure the message and the driver's
/// `DbgPrint` output.
pub fn ok<T>(r: R<T>, d: &Driver) -> T {
    match r {
        Ok(v) => v,
        Err(e) => panic!("{e}\n--- DbgPrint ---\n{}", d.log()),
    }
}

/// Boots a driver or fails with the reason.
pub fn boot(config: Config) -> Driver {
    Driver::boot(config).unwrap_or_else(|e| panic!("boot: {e}"))
}

/// The offered format of this pixel format and size at 30 fps.
pub fn format(pixel: PixelFormat, width: u32, height: u32) -> VideoFormat {
    *DATA_RANGES
        .iter()
        .find(|f| {
            f.pixel == pixel
                && f.width == width
                && f.height == height
                && f.frame_interval == 333_333
        })
        .expect("an offered format")
}

/// Every configuration: DMA adapter granted or not, master clock or not.
pub fn configs() -> [Config; 4] {
    [
        Config {
            dma_adapter: true,
            clock: true,
            ..Config::default()
        },
        Config {
            dma_adapter: false,
            clock: true,
            ..Config::default()
        },
        Config {
            dma_adapter: true,
            clock: false,
            ..Config::default()
        },
        Config {
            dma_adapter: false,
            clock: false,
            ..Config::default()
        },
    ]
}

/// Where a session's frames come from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Path {
    /// A user-mode client's buffers (the driver's allocator is never used).
    User,
    /// The driver's own allocator (kernel-to-kernel connection).
    Kernel,
    /// Both, alternating.
    Mixed,
}

/// A connected pin, with the allocator the graph created on it (kernel and
/// mixed paths).
pub struct Stream {
    pub d: Driver,
    pub filter: u64,
    pub pin: u64,
    pub format: VideoFormat,
    pub allocator: Option<Allocator>,
    pub path: Path,
    /// Frames queued so far (decides the origin of the next on the mixed path).
    pub queued: u64,
}

impl Stream {
    /// Boots, creates a filter and connects the pin with `format`; on the
    /// kernel and mixed paths creates the allocator from the pin's framing.
    pub fn open(config: Config, format: VideoFormat, path: Path) -> Stream {
        let mut d = boot(config);
        let filter = ok(d.create_filter(), &d);
        let connected = ok(d.connect(filter, &format), &d);
        let pin = connected.unwrap_or_else(|s| panic!("pin Create failed: {s:#x}"));
        let allocator = (path != Path::User).then(|| {
            let ex = ok(d.allocator_framing_ex(pin), &d);
            let framing = LegacyFraming::from_ex(&ex);
            ok(d.create_allocator(pin, &framing), &d)
                .unwrap_or_else(|s| panic!("InitializeAllocator failed: {s:#x}"))
        });
        Stream {
            d,
            filter,
            pin,
            format,
            allocator,
            path,
            queued: 0,
        }
    }

    pub fn image_size(&self) -> u32 {
        self.format.layout().unwrap().image_size()
    }

    /// Queues one frame from the path's source; false when the allocator
    /// has none free.
    pub fn queue_one(&mut self) -> bool {
        let size = self.image_size();
        let from_allocator = match self.path {
            Path::User => false,
            Path::Kernel => true,
            Path::Mixed => self.queued.is_multiple_of(2),
        };
        let source = from_allocator.then(|| self.allocator.unwrap());
        if ok(queue_from(&mut self.d, self.pin, size, source), &self.d).is_none() {
            return false;
        }
        self.queued += 1;
        true
    }

    /// Gives a completed frame back to where it came from (allocator
    /// frames are freed to the allocator).
    pub fn recycle(&mut self, c: &Completed) {
        if c.origin == Origin::Allocator {
            let a = self.allocator.unwrap();
            ok(self.d.free(a, c.data_address), &self.d);
        }
    }

    pub fn set_state(&mut self, to: u32) {
        ok(self.d.set_state(self.pin, to), &self.d);
    }

    pub fn advance(&mut self, duration: i64) {
        ok(self.d.advance(duration), &self.d);
    }

    /// Streams until `count` frames have completed, keeping `depth` frames
    /// queued (each completed frame is recycled and replaced). Returns the
    /// completed frames in order.
    pub fn stream(&mut self, count: usize, depth: usize) -> Vec<Completed> {
        while (self.d.uc.get_data().ks.pins[&self.pin].frames.len()) < depth {
            if !self.queue_one() {
                break;
            }
        }
        let mut out = Vec::new();
        let mut idle = 0;
        while out.len() < count {
            self.advance(self.format.frame_interval);
            let done = self.d.take_completed(self.pin);
            idle = if done.is_empty() { idle + 1 } else { 0 };
            assert!(
                idle < 10,
                "no frame completed for 10 intervals\n{}",
                self.d.log()
            );
            for c in done {
                self.recycle(&c);
                out.push(c);
                self.queue_one();
            }
        }
        out
    }

    /// Stops the pin and gives every completed frame back to where it came
    /// from, then unloads the driver as the system would
    /// ([`Driver::unload`]: pin closed, allocator deleted, filter closed,
    /// device stopped and removed); returns the rules it broke.
    pub fn teardown(mut self) -> Vec<String> {
        if self.d.state(self.pin) != state::STOP {
            self.set_state(state::STOP);
        }
        for c in self.d.take_completed(self.pin) {
            self.recycle(&c);
        }
        ok(self.d.unload(), &self.d)
    }
}

/// Checks a run of frames delivered while streaming: every one full, its
/// times exactly one interval apart (starting at `first_time`), picture
/// numbers consecutive from `first_picture`, no drops, and byte for byte
/// the host core's image for the frame and its path.
pub fn check_frames(
    format: &VideoFormat,
    frames: &[Completed],
    first_picture: i64,
    first_time: Option<i64>,
) {
    let size = format.layout().unwrap().image_size();
    let interval = format.frame_interval;
    for (i, c) in frames.iter().enumerate() {
        let what = format!("frame {i} (id {}, {:?})", c.id, c.origin);
        assert!(!c.flushed, "{what} was flushed, not delivered");
        assert_eq!(c.data_used, size, "{what}: DataUsed");
        assert_eq!(c.duration, interval, "{what}: Duration");
        assert_eq!(c.time_ratio, (1, 1), "{what}: PresentationTime ratio");
        assert_eq!(
            c.options_flags & (TIMEVALID | DURATIONVALID),
            TIMEVALID | DURATIONVALID,
            "{what}: OptionsFlags {:#x}",
            c.options_flags
        );
        assert_eq!(
            c.options_flags & DATADISCONTINUITY,
            0,
            "{what}: unexpected discontinuity"
        );
        assert_eq!(c.status, None, "{what}: status set");
        let info = c
            .frame_info
            .unwrap_or_else(|| panic!("{what}: no KS_FRAME_INFO"));
        assert_eq!(info.extended_header_size, 72, "{what}: ExtendedHeaderSize");
        assert_eq!(
            info.picture_number,
            first_picture + i as i64,
            "{what}: PictureNumber"
        );
        assert_eq!(info.drop_count, 0, "{what}: DropCount");
        if let Some(t0) = first_time {
            assert_eq!(
                c.presentation_time,
                t0 + i as i64 * interval,
                "{what}: PresentationTime"
            );
        } else if i > 0 {
            assert_eq!(
                c.presentation_time - frames[i - 1].presentation_time,
                interval,
                "{what}: PresentationTime step"
            );
        }
        if let Err(e) = image_check(format, c) {
            panic!("{what}: {e}");
        }
    }
}

/// Compares a delivered frame with the host core's image for its picture
/// number and drop count, drawn for its path (zero-copy for the driver's
/// own frames, copied for any other).
pub fn image_check(format: &VideoFormat, c: &Completed) -> Result<(), String> {
    let info = c
        .frame_info
        .ok_or("a delivered frame without KS_FRAME_INFO")?;
    let path = if c.origin == Origin::Allocator {
        DeliveryPath::ZeroCopy
    } else {
        DeliveryPath::Copied
    };
    let expected = oracle::expected_image(
        format,
        info.picture_number as u64,
        info.drop_count as u64,
        path,
    );
    match c.data.iter().zip(&expected).position(|(a, b)| a != b) {
        None if c.data.len() == expected.len() => Ok(()),
        at => Err(format!(
            "frame {} (picture {}): the image differs from the host core's at byte {} of {}",
            c.id,
            info.picture_number,
            at.unwrap_or(c.data.len().min(expected.len())),
            expected.len()
        )),
    }
}

/// Queues one frame on the pin: from `allocator` (its `Allocate`) when
/// there is one, else a user-mode client's buffer. Returns the frame's id,
/// or `None` when the allocator has no frame free.
pub fn queue_from(
    d: &mut Driver,
    pin: u64,
    size: u32,
    allocator: Option<Allocator>,
) -> R<Option<u64>> {
    match allocator {
        Some(a) => {
            let frame = d.allocate(a)?;
            if frame == 0 {
                return Ok(None);
            }
            d.queue_allocator_frame(pin, frame, size).map(Some)
        }
        None => d.queue_user_frame(pin, size, 0).map(Some),
    }
}

/// The pin's frames that are queued and not completed.
pub fn queued(d: &Driver, pin: u64) -> usize {
    d.uc.get_data()
        .ks
        .pins
        .get(&pin)
        .map_or(0, |p| p.frames.len())
}

/// Live clones on the pin.
pub fn clones(d: &Driver, pin: u64) -> usize {
    d.uc.get_data()
        .ks
        .clones
        .values()
        .filter(|c| c.pin == pin)
        .count()
}

/// `memcpy` calls of at least `len` bytes so far.
pub fn big_copies(d: &Driver, len: u32) -> usize {
    d.uc.get_data()
        .nt
        .memcpy
        .iter()
        .filter(|l| **l >= u64::from(len))
        .count()
}
