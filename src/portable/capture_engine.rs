//! The capture engine: the simulated hardware's queue of DMA targets and the
//! delivery bookkeeping, independent of any clock (the caller passes time in
//! 100 ns units, from QPC, a master clock or a virtual clock).
//!
//! The flow, as the kernel shell drives it:
//! * Process locks the leading edge, clones it, and asks [`route_frame`] where
//!   the "hardware" should write: straight into the client frame when it is
//!   one of our pool's frames (zero-copy), else into a staging slot whose
//!   bytes are copied into the client frame at completion. The target goes
//!   into the engine with [`CaptureEngine::submit`] (full queue: Process pends).
//! * A timer DPC calls [`CaptureEngine::tick`] once per frame interval. The
//!   oldest target is filled (the caller synthesizes into it, copies staging
//!   to the client frame, fills the stream header from the
//!   [`Completion`]); with no target queued the frame is dropped and counted,
//!   and the next delivered frame carries `DATADISCONTINUITY`.
//! * Stop hands back every queued target ([`CaptureEngine::take_queued`]) so
//!   no clone and no staging slot leaks.
//!
//! Memory is bounded: the queue is an array of `DEPTH` entries.

use super::frame_pool::{Frame, FramePool};
use super::image::{DeliveryPath, Overlay};

/// `KSSTREAM_HEADER_OPTIONSF_DATADISCONTINUITY`.
pub const OPTIONSF_DATADISCONTINUITY: u32 = 0x0000_0004;
/// `KSSTREAM_HEADER_OPTIONSF_TIMEVALID`.
pub const OPTIONSF_TIMEVALID: u32 = 0x0000_0010;
/// `KSSTREAM_HEADER_OPTIONSF_DURATIONVALID`.
pub const OPTIONSF_DURATIONVALID: u32 = 0x0000_0100;

/// Where the simulated hardware writes one frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DmaTarget {
    /// The client frame is one of our pool's frames: written in place.
    Direct(Frame),
    /// A staging slot; its bytes are copied into the client frame at completion.
    Staging(Frame),
}

impl DmaTarget {
    /// The frame the hardware writes.
    #[must_use]
    pub const fn frame(&self) -> &Frame {
        match self {
            DmaTarget::Direct(f) | DmaTarget::Staging(f) => f,
        }
    }
}

/// A queued target: where to write, and the caller's handle for the client
/// frame (the shell's stream-pointer clone; the simulator's buffer id).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Target<C> {
    /// The caller's handle for the client frame.
    pub cookie: C,
    /// Where the hardware writes.
    pub dma: DmaTarget,
}

/// Why a client frame could not be given a DMA target.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RouteError {
    /// The client frame is smaller than the image: it cannot be filled.
    FrameTooSmall {
        /// Bytes the client frame has.
        have: u32,
        /// Bytes the image needs.
        need: u32,
    },
    /// The frame is foreign and every staging slot is in flight: pend and
    /// retry when a frame completes.
    NoStagingSlot,
}

/// Decides where the hardware writes a client frame at `data` with
/// `frame_extent` usable bytes: in place when the frame is one our allocator
/// handed out, else into a staging slot taken from `staging`.
///
/// # Errors
/// [`RouteError`]: a frame too small for the image is never written; no
/// free staging slot means "try again later".
pub fn route_frame(
    own: Option<&FramePool>,
    staging: &FramePool,
    data: usize,
    frame_extent: u32,
    image_size: u32,
) -> Result<DmaTarget, RouteError> {
    if frame_extent < image_size {
        return Err(RouteError::FrameTooSmall {
            have: frame_extent,
            need: image_size,
        });
    }
    if let Some(frame) = own.and_then(|pool| pool.lookup(data)) {
        if frame.len >= image_size {
            return Ok(DmaTarget::Direct(frame));
        }
    }
    staging
        .allocate()
        .map(DmaTarget::Staging)
        .ok_or(RouteError::NoStagingSlot)
}

/// What a completed frame's stream header and `KS_FRAME_INFO` carry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Completion<C> {
    /// The target that was filled.
    pub target: Target<C>,
    /// `PresentationTime.Time`: start of this frame's interval, in the time
    /// base the caller passed to [`CaptureEngine::run`].
    pub presentation_time: i64,
    /// `Duration`: the frame interval.
    pub duration: i64,
    /// `DataUsed`: the image size.
    pub data_used: u32,
    /// `OptionsFlags`: `TIMEVALID | DURATIONVALID`, plus `DATADISCONTINUITY`
    /// on the first frame after a drop.
    pub options_flags: u32,
    /// `KS_FRAME_INFO.PictureNumber`: frames due since the stream started,
    /// delivered or dropped, this one included (1 for the first).
    pub picture_number: u64,
    /// `KS_FRAME_INFO.DropCount`: frames dropped since the stream started.
    pub drop_count: u64,
    /// Stream time at this frame, for the on-screen clock.
    pub stream_time: i64,
}

impl<C> Completion<C> {
    /// What the synthesized image shows for this frame: its stream time,
    /// picture number, drop count, and whether it was written in place.
    #[must_use]
    pub fn overlay(&self) -> Overlay {
        Overlay {
            stream_time_100ns: self.stream_time,
            frame_number: self.picture_number,
            dropped: self.drop_count,
            path: match self.target.dma {
                DmaTarget::Direct(_) => DeliveryPath::ZeroCopy,
                DmaTarget::Staging(_) => DeliveryPath::Copied,
            },
        }
    }
}

/// What one tick did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Tick<C> {
    /// The oldest target is to be filled and completed.
    Deliver(Completion<C>),
    /// No target was queued: the frame was dropped.
    Dropped {
        /// Picture number of the dropped frame.
        picture_number: u64,
        /// Drop count including it.
        drop_count: u64,
    },
    /// The engine is not running; nothing happened.
    Idle,
}

/// Totals since the stream started.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct EngineStats {
    /// Frames completed.
    pub delivered: u64,
    /// Frames dropped (no target queued, or the tick came late).
    pub dropped: u64,
    /// Completed frames written in place.
    pub zero_copy: u64,
    /// Completed frames that went through a staging slot.
    pub copied: u64,
    /// Bytes copied from staging slots into client frames.
    pub bytes_copied: u64,
}

impl EngineStats {
    /// `KSPROPERTY_DROPPEDFRAMES_CURRENT`'s `PictureNumber`: frames due so
    /// far, delivered or dropped.
    #[must_use]
    pub const fn picture_number(&self) -> u64 {
        self.delivered + self.dropped
    }
}

/// Converts a performance-counter reading to 100 ns units (what Media
/// Foundation expects in `PresentationTime` when there is no master clock),
/// without overflowing for any counter value and frequency.
#[must_use]
pub fn qpc_to_100ns(counter: i64, frequency: i64) -> i64 {
    if frequency <= 0 {
        return 0;
    }
    let scaled = i128::from(counter) * 10_000_000 / i128::from(frequency);
    i64::try_from(scaled).unwrap_or(if scaled < 0 { i64::MIN } else { i64::MAX })
}

/// A frame time on the engine's timeline (QPC, 100 ns) moved onto a master
/// clock's: the clock's `now` minus how long ago the frame's time was on the
/// engine's timeline. Reading both clocks at completion keeps frames in step
/// with the master clock however far the two drift apart.
#[must_use]
pub fn rebase_to_clock(frame_time: i64, engine_now: i64, clock_now: i64) -> i64 {
    clock_now.saturating_sub(engine_now.saturating_sub(frame_time))
}

/// The `DueTime` for `KeSetTimer` that fires at `due` when it is `now` (both
/// in 100 ns): a negative, i.e. relative, interval, at least 1 unit so a
/// late timer fires at once instead of being read as an absolute time.
#[must_use]
pub fn timer_due_time(due: i64, now: i64) -> i64 {
    -(due.saturating_sub(now).max(1))
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    Stopped,
    Running { start: i64 },
    Paused,
}

/// Why [`CaptureEngine::new`] refused its parameters.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EngineError {
    /// The frame interval is not positive.
    BadInterval,
    /// `DEPTH` is 0.
    NoQueue,
}

/// The capture engine for one pin; `DEPTH` is the most targets in flight.
#[derive(Debug)]
pub struct CaptureEngine<C, const DEPTH: usize> {
    queue: [Option<Target<C>>; DEPTH],
    head: usize,
    len: usize,
    interval: i64,
    image_size: u32,
    state: State,
    ticks: u64,
    stats: EngineStats,
    discontinuity: bool,
}

impl<C: Copy, const DEPTH: usize> CaptureEngine<C, DEPTH> {
    /// An engine for frames of `image_size` bytes every `interval` (100 ns).
    ///
    /// # Errors
    /// [`EngineError`] for a non-positive interval or a zero depth.
    pub fn new(interval: i64, image_size: u32) -> Result<Self, EngineError> {
        if interval <= 0 {
            return Err(EngineError::BadInterval);
        }
        if DEPTH == 0 {
            return Err(EngineError::NoQueue);
        }
        Ok(CaptureEngine {
            queue: [None; DEPTH],
            head: 0,
            len: 0,
            interval,
            image_size,
            state: State::Stopped,
            ticks: 0,
            stats: EngineStats::default(),
            discontinuity: false,
        })
    }

    /// Queues a target for the hardware. A full queue hands it back (the
    /// caller returns `STATUS_PENDING` from Process and retries after the
    /// next completion).
    ///
    /// # Errors
    /// The target itself when the queue is full.
    pub fn submit(&mut self, target: Target<C>) -> Result<(), Target<C>> {
        if self.len == DEPTH {
            return Err(target);
        }
        let slot = (self.head + self.len) % DEPTH;
        self.queue[slot] = Some(target);
        self.len += 1;
        Ok(())
    }

    /// Targets queued now.
    #[must_use]
    pub fn queued(&self) -> usize {
        self.len
    }

    /// Whether another target fits.
    #[must_use]
    pub fn has_room(&self) -> bool {
        self.len < DEPTH
    }

    fn pop(&mut self) -> Option<Target<C>> {
        if self.len == 0 {
            return None;
        }
        let t = self.queue[self.head].take();
        self.head = (self.head + 1) % DEPTH;
        self.len -= 1;
        t
    }

    /// Starts (from stop) or resumes (from pause) the hardware at time `now`.
    /// A fresh start resets picture numbers and drop counts; a resume keeps
    /// them and continues the timeline from `now`.
    pub fn run(&mut self, now: i64) {
        let done = i64::try_from(self.ticks).unwrap_or(i64::MAX);
        self.state = match self.state {
            State::Stopped => {
                self.ticks = 0;
                self.stats = EngineStats::default();
                self.discontinuity = false;
                State::Running { start: now }
            }
            State::Paused => State::Running {
                start: now.saturating_sub(done.saturating_mul(self.interval)),
            },
            running @ State::Running { .. } => running,
        };
    }

    /// Pauses the hardware: ticks do nothing until [`Self::run`]; queued
    /// targets stay queued.
    pub fn pause(&mut self) {
        if matches!(self.state, State::Running { .. }) {
            self.state = State::Paused;
        }
    }

    /// Stops the hardware. Every queued target must then be handed back with
    /// [`Self::take_queued`]; returns how many there are.
    pub fn stop(&mut self) -> usize {
        self.state = State::Stopped;
        self.len
    }

    /// Hands back the oldest queued target (stop/cleanup path).
    pub fn take_queued(&mut self) -> Option<Target<C>> {
        self.pop()
    }

    /// Whether the hardware is running.
    #[must_use]
    pub fn is_running(&self) -> bool {
        matches!(self.state, State::Running { .. })
    }

    /// The absolute time the next tick is due (for the shell's timer), or
    /// `None` when not running. Due times are computed from the start, so
    /// a late timer does not accumulate drift.
    #[must_use]
    pub fn next_due(&self) -> Option<i64> {
        match self.state {
            State::Running { start } => {
                let next = i64::try_from(self.ticks.saturating_add(1)).unwrap_or(i64::MAX);
                Some(start.saturating_add(next.saturating_mul(self.interval)))
            }
            _ => None,
        }
    }

    /// The frame interval.
    #[must_use]
    pub fn interval(&self) -> i64 {
        self.interval
    }

    /// Totals since the stream started.
    #[must_use]
    pub fn stats(&self) -> EngineStats {
        self.stats
    }

    /// One frame interval has passed at `now`. Intervals that went by without
    /// a tick (a late timer) count as dropped frames first.
    pub fn tick(&mut self, now: i64) -> Tick<C> {
        let State::Running { start } = self.state else {
            return Tick::Idle;
        };
        let elapsed = now.saturating_sub(start).max(0) / self.interval;
        let due = u64::try_from(elapsed).unwrap_or(0);
        // This tick stands for frame `ticks + 1`; every whole interval beyond
        // it that has already passed was missed.
        if due > self.ticks + 1 {
            let missed = due - (self.ticks + 1);
            self.ticks += missed;
            self.stats.dropped += missed;
            self.discontinuity = true;
        }
        self.ticks += 1;
        let picture_number = self.ticks;
        let Some(target) = self.pop() else {
            self.stats.dropped += 1;
            self.discontinuity = true;
            return Tick::Dropped {
                picture_number,
                drop_count: self.stats.dropped,
            };
        };
        let index = i64::try_from(picture_number - 1).unwrap_or(i64::MAX);
        let mut options_flags = OPTIONSF_TIMEVALID | OPTIONSF_DURATIONVALID;
        if self.discontinuity {
            options_flags |= OPTIONSF_DATADISCONTINUITY;
            self.discontinuity = false;
        }
        self.stats.delivered += 1;
        match target.dma {
            DmaTarget::Direct(_) => self.stats.zero_copy += 1,
            DmaTarget::Staging(_) => {
                self.stats.copied += 1;
                self.stats.bytes_copied += u64::from(self.image_size);
            }
        }
        Tick::Deliver(Completion {
            target,
            presentation_time: start.saturating_add(index.saturating_mul(self.interval)),
            duration: self.interval,
            data_used: self.image_size,
            options_flags,
            picture_number,
            drop_count: self.stats.dropped,
            stream_time: index.saturating_add(1).saturating_mul(self.interval),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::portable::frame_pool::Region;
    use crate::portable::framing::{plan, PAGE_SIZE};

    const I: i64 = 333_333;

    fn frame(index: u32) -> Frame {
        Frame {
            virtual_address: 0x1000 * (index as usize + 1),
            logical_address: 0,
            index,
            len: 100,
        }
    }

    fn direct(cookie: u32) -> Target<u32> {
        Target {
            cookie,
            dma: DmaTarget::Direct(frame(cookie)),
        }
    }

    #[test]
    fn qpc_scales_to_100ns_without_overflow() {
        assert_eq!(qpc_to_100ns(10_000_000, 10_000_000), 10_000_000);
        assert_eq!(qpc_to_100ns(3_000_000, 3_000_000), 10_000_000);
        assert_eq!(qpc_to_100ns(i64::MAX, 10_000_000), i64::MAX);
        assert_eq!(qpc_to_100ns(i64::MAX, 1), i64::MAX);
        assert_eq!(qpc_to_100ns(5, 0), 0);
        assert_eq!(timer_due_time(1000, 400), -600);
        assert_eq!(rebase_to_clock(9_000, 10_000, 500_000), 499_000);
        assert_eq!(rebase_to_clock(i64::MIN, i64::MAX, 0), -i64::MAX);
        assert_eq!(timer_due_time(1000, 5000), -1);
    }

    #[test]
    fn refuses_bad_parameters() {
        assert_eq!(
            CaptureEngine::<u32, 4>::new(0, 100).unwrap_err(),
            EngineError::BadInterval
        );
        assert_eq!(
            CaptureEngine::<u32, 0>::new(I, 100).unwrap_err(),
            EngineError::NoQueue
        );
    }

    #[test]
    fn queue_is_bounded_and_fifo() {
        let mut e = CaptureEngine::<u32, 2>::new(I, 100).unwrap();
        e.submit(direct(1)).unwrap();
        e.submit(direct(2)).unwrap();
        assert_eq!(e.submit(direct(3)), Err(direct(3)));
        e.run(0);
        let Tick::Deliver(c) = e.tick(I) else {
            panic!("expected a delivery")
        };
        assert_eq!(c.target.cookie, 1);
        e.submit(direct(3)).unwrap();
        assert_eq!(e.take_queued().unwrap().cookie, 2);
        assert_eq!(e.take_queued().unwrap().cookie, 3);
        assert_eq!(e.take_queued(), None);
    }

    #[test]
    fn overlay_shows_the_completion_and_its_path() {
        let mut e = CaptureEngine::<u32, 2>::new(I, 100).unwrap();
        e.run(0);
        e.submit(direct(1)).unwrap();
        e.submit(Target {
            cookie: 2,
            dma: DmaTarget::Staging(frame(2)),
        })
        .unwrap();
        let Tick::Deliver(a) = e.tick(I) else {
            panic!("expected a delivery")
        };
        let Tick::Deliver(b) = e.tick(2 * I) else {
            panic!("expected a delivery")
        };
        assert_eq!(a.overlay().path, DeliveryPath::ZeroCopy);
        assert_eq!(b.overlay().path, DeliveryPath::Copied);
        assert_eq!(
            (
                b.overlay().frame_number,
                b.overlay().dropped,
                b.overlay().stream_time_100ns
            ),
            (2, 0, 2 * I)
        );
    }

    #[test]
    fn idle_when_not_running() {
        let mut e = CaptureEngine::<u32, 2>::new(I, 100).unwrap();
        e.submit(direct(1)).unwrap();
        assert_eq!(e.tick(I), Tick::Idle);
        assert_eq!(e.next_due(), None);
        e.run(1000);
        assert_eq!(e.next_due(), Some(1000 + I));
        e.pause();
        assert_eq!(e.tick(2 * I), Tick::Idle);
        assert_eq!(e.queued(), 1);
    }

    #[test]
    fn late_tick_counts_missed_intervals_as_drops() {
        let mut e = CaptureEngine::<u32, 4>::new(I, 100).unwrap();
        e.run(0);
        e.submit(direct(1)).unwrap();
        // Three whole intervals passed before the first tick ran.
        let Tick::Deliver(c) = e.tick(3 * I + 10) else {
            panic!("expected a delivery")
        };
        assert_eq!((c.picture_number, c.drop_count), (3, 2));
        assert_ne!(c.options_flags & OPTIONSF_DATADISCONTINUITY, 0);
        assert_eq!(c.presentation_time, 2 * I);
        assert_eq!(e.next_due(), Some(4 * I));
    }

    #[test]
    fn resume_keeps_counts_and_continues_from_now() {
        let mut e = CaptureEngine::<u32, 4>::new(I, 100).unwrap();
        e.run(0);
        e.submit(direct(1)).unwrap();
        e.submit(direct(2)).unwrap();
        assert!(matches!(e.tick(I), Tick::Deliver(_)));
        e.pause();
        e.run(50 * I);
        let Tick::Deliver(c) = e.tick(51 * I) else {
            panic!("expected a delivery")
        };
        assert_eq!((c.picture_number, c.drop_count), (2, 0));
        assert_eq!(c.presentation_time, 50 * I);
        assert_eq!(c.options_flags & OPTIONSF_DATADISCONTINUITY, 0);
    }

    #[test]
    fn route_prefers_own_frames_and_falls_back_to_staging() {
        let region = Region {
            virtual_base: 0x10_0000,
            logical_base: 0x10_0000,
            len: 1 << 20,
        };
        let own_region = region.sub_region(0, 1 << 19).unwrap();
        let staging_region = region.sub_region(1 << 19, 1 << 19).unwrap();
        let own = FramePool::with_plan(own_region, plan(2, 5000, PAGE_SIZE, &own_region).unwrap());
        let staging = FramePool::with_plan(
            staging_region,
            plan(1, 5000, PAGE_SIZE, &staging_region).unwrap(),
        );
        let mine = own.allocate().unwrap();
        let t = route_frame(Some(&own), &staging, mine.virtual_address, 5000, 5000).unwrap();
        assert_eq!(t, DmaTarget::Direct(mine));
        assert_eq!(staging.in_use(), 0);
        // A user-mode buffer: copied through staging.
        let t = route_frame(Some(&own), &staging, 0xDEAD_0000, 8000, 5000).unwrap();
        assert!(matches!(t, DmaTarget::Staging(_)));
        assert_eq!(
            route_frame(None, &staging, 0xDEAD_0000, 8000, 5000),
            Err(RouteError::NoStagingSlot)
        );
        assert_eq!(
            route_frame(Some(&own), &staging, mine.virtual_address, 4999, 5000),
            Err(RouteError::FrameTooSmall {
                have: 4999,
                need: 5000
            })
        );
        // A pointer inside our region that is not an allocated frame is
        // treated as foreign, never written in place.
        staging.free(t.frame().virtual_address).unwrap();
        let unallocated = own.plan().slot_size as usize + mine.virtual_address;
        assert!(matches!(
            route_frame(Some(&own), &staging, unallocated, 5000, 5000),
            Ok(DmaTarget::Staging(_))
        ));
    }
}
