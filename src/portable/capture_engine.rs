//! The capture engine: the simulated hardware's queue of DMA targets and the
//! delivery bookkeeping.
//!
//! It is independent of any clock: the caller passes time in 100 ns units,
//! from QPC, a master clock or a virtual clock.
//!
//! The flow, as the kernel shell drives it, in three places that never do
//! each other's work:
//! * **Process** (PASSIVE_LEVEL) locks the leading edge, clones it, and asks
//!   [`route_frame`] where the "hardware" should write: straight into the
//!   client frame when it is one of our allocator's frames (zero-copy), else
//!   into a staging slot whose bytes are copied into the client frame later.
//!   The target goes into the engine with [`CaptureEngine::submit`] (no
//!   room: Process pends).
//! * **The timer DPC** (DISPATCH_LEVEL) calls [`CaptureEngine::tick`] once per
//!   frame interval. That is bookkeeping only, the same few instructions
//!   whatever the frame size: the oldest queued target becomes *due*
//!   ([`Tick::Due`]) or, with none queued, the frame is dropped and counted
//!   and the next delivered frame carries `DATADISCONTINUITY`.
//! * **The delivery work item** (PASSIVE_LEVEL) takes due frames with
//!   [`CaptureEngine::take_due`] and does all the pixel work: synthesis into
//!   the DMA target, the copy out of a staging slot ([`CopyPlan`]), the
//!   stream header ([`Completion`], [`stamp_options`]), completion.
//! * Stop hands back every target still held, due or queued
//!   ([`CaptureEngine::take_queued`]), so no clone and no staging slot leaks.
//!
//! Memory is bounded: queued and due targets share one budget of `DEPTH`,
//! each kept in an array of `DEPTH` entries.
//!
//! The caller's handle for a client frame (`C`, the shell's stream-pointer
//! clone) is moved in and out, never copied: the engine owns a frame from
//! `submit` until `take_due` or `take_queued` hands it back, so two owners of
//! one clone cannot exist.

use super::frame_pool::{Frame, FramePool};
use super::image::{DeliveryPath, Overlay};
use super::video_format::FrameLayout;

/// `KSSTREAM_HEADER_OPTIONSF_DATADISCONTINUITY`.
pub const OPTIONSF_DATADISCONTINUITY: u32 = 0x0000_0004;
/// `KSSTREAM_HEADER_OPTIONSF_TIMEVALID`.
pub const OPTIONSF_TIMEVALID: u32 = 0x0000_0010;
/// `KSSTREAM_HEADER_OPTIONSF_DURATIONVALID`.
pub const OPTIONSF_DURATIONVALID: u32 = 0x0000_0100;
/// The `OptionsFlags` bits the capture pin decides for every frame it
/// delivers. A reused stream header may still carry them from an earlier
/// use; [`stamp_options`] clears them before setting this frame's.
pub const OPTIONSF_DRIVER_OWNED: u32 =
    OPTIONSF_DATADISCONTINUITY | OPTIONSF_TIMEVALID | OPTIONSF_DURATIONVALID;

/// A stream header's new `OptionsFlags`: the bits the pin owns
/// ([`OPTIONSF_DRIVER_OWNED`]) replaced by this frame's `flags`, every other
/// bit (set by the client or by ks.sys) kept.
#[must_use]
pub const fn stamp_options(existing: u32, flags: u32) -> u32 {
    (existing & !OPTIONSF_DRIVER_OWNED) | (flags & OPTIONSF_DRIVER_OWNED)
}

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
            Self::Direct(f) | Self::Staging(f) => f,
        }
    }
}

/// The client's frame as Process saw it.
///
/// It holds the system address the stream pointer gave (`OffsetOut.Data`), the
/// bytes the frame may hold (`OffsetOut.Remaining`) and the surface pitch its
/// header asks for (`KS_FRAME_INFO.lSurfacePitch`, 0 when none). Completion
/// writes through this address with this plan, never through values read again
/// from the stream header later.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ClientBuffer {
    /// System virtual address of the frame's first byte.
    pub address: usize,
    /// Bytes the frame holds.
    pub extent: u32,
    /// Bytes from one row to the next the client asks for (0: packed).
    pub surface_pitch: i32,
}

/// A queued target: where to write, the client frame it ends up in, and the
/// caller's handle for that frame (the shell's stream-pointer clone; the
/// simulator's buffer id).
#[derive(Debug, PartialEq, Eq)]
pub struct Target<C> {
    /// The caller's handle for the client frame.
    pub cookie: C,
    /// Where the hardware writes.
    pub dma: DmaTarget,
    /// The client frame.
    pub client: ClientBuffer,
}

impl<C> Target<C> {
    /// How the image reaches the client frame: `None` when the hardware
    /// writes it in place, else the copy out of the staging slot.
    #[must_use]
    pub fn copy_plan(&self, layout: &FrameLayout) -> Option<CopyPlan> {
        match self.dma {
            DmaTarget::Direct(_) => None,
            DmaTarget::Staging(_) => Some(CopyPlan::new(
                layout,
                self.client.surface_pitch,
                self.client.extent,
            )),
        }
    }

    /// The frame's `DataUsed` once delivered: the image, or what the copy
    /// writes at the client's pitch. Process advances the leading edge by
    /// exactly this, so ks.sys and the pin agree on it.
    #[must_use]
    pub fn data_used(&self, layout: &FrameLayout) -> u32 {
        self.copy_plan(layout)
            .map_or_else(|| layout.image_size(), |plan| plan.data_used)
    }
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

/// A short sentence for a person (a log line, the simulator's errors).
impl core::fmt::Display for RouteError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match *self {
            Self::FrameTooSmall { have, need } => write!(
                f,
                "the client frame has {have} bytes; the image needs {need}"
            ),
            Self::NoStagingSlot => f.write_str("every staging slot is in flight"),
        }
    }
}

/// Decides where the hardware writes a client frame at `data` with
/// `frame_extent` usable bytes.
///
/// The write goes in place when the frame is one an allocator of ours handed
/// out (`own`, the live pools), else into a staging slot taken from
/// `staging`.
///
/// # Errors
/// [`RouteError`]: a frame too small for the image is never written; no
/// free staging slot means "try again later".
pub fn route_frame<'a>(
    own: impl IntoIterator<Item = &'a FramePool>,
    staging: &FramePool,
    client: ClientBuffer,
    image_size: u32,
) -> Result<DmaTarget, RouteError> {
    if client.extent < image_size {
        return Err(RouteError::FrameTooSmall {
            have: client.extent,
            need: image_size,
        });
    }
    let mine = own
        .into_iter()
        .find_map(|pool| pool.lookup(client.address))
        .filter(|frame| frame.len >= image_size);
    if let Some(frame) = mine {
        return Ok(DmaTarget::Direct(frame));
    }
    staging
        .allocate()
        .map(DmaTarget::Staging)
        .ok_or(RouteError::NoStagingSlot)
}

/// How a staging slot's image is copied into a client frame.
///
/// The copy goes row by row at the client surface's pitch
/// (`KS_FRAME_INFO.lSurfacePitch`) when the client asked for one that is
/// wider than the packed stride and the frame holds the image at that pitch,
/// else as one packed block.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CopyPlan {
    /// Rows to copy (every row of every plane; NV12's chroma rows follow
    /// its luma rows at the same stride, so one row index covers both).
    pub rows: u32,
    /// Bytes of each row (the packed stride).
    pub row_bytes: u32,
    /// Bytes from one source row to the next (the packed stride).
    pub source_stride: u32,
    /// Bytes from one destination row to the next (|pitch|, or the packed
    /// stride when the copy is packed).
    pub dest_pitch: u32,
    /// `DataUsed` of the delivered frame.
    pub data_used: u32,
}

impl CopyPlan {
    /// The plan for a frame of `layout` into a client frame of `extent`
    /// bytes whose header asks for rows `surface_pitch` bytes apart (0: no
    /// pitch given). The sign of the pitch is ignored (the image's own
    /// orientation is fixed by its format), as is a pitch narrower than the
    /// stride or one the frame cannot hold: then the copy is packed, which
    /// always fits a frame Process accepted (`extent ≥ image size`).
    #[must_use]
    pub fn new(layout: &FrameLayout, surface_pitch: i32, extent: u32) -> Self {
        let stride = layout.stride().max(1);
        let rows = layout.image_size() / stride;
        let packed = Self {
            rows: 1,
            row_bytes: layout.image_size(),
            source_stride: layout.image_size(),
            dest_pitch: layout.image_size(),
            data_used: layout.image_size(),
        };
        let pitch = surface_pitch.unsigned_abs();
        if pitch <= stride {
            return packed;
        }
        match pitch.checked_mul(rows) {
            Some(span) if span <= extent => Self {
                rows,
                row_bytes: stride,
                source_stride: stride,
                dest_pitch: pitch,
                data_used: span,
            },
            _ => packed,
        }
    }

    /// Whether this is one block copy.
    #[must_use]
    pub const fn is_packed(&self) -> bool {
        self.rows == 1
    }

    /// Copies the image from `source` (the staging slot) into `dest` (the
    /// client frame) by this plan and returns the frame's `DataUsed`. Every
    /// row is one `copy_from_slice`; a packed plan is one block.
    ///
    /// # Errors
    /// [`CopyTooShort`] when `source` or `dest` cannot hold what the plan
    /// reads or writes (or `dest` is shorter than `data_used`), or for a
    /// hand-made plan whose rows overlap (a row longer than its stride or
    /// pitch); then nothing has been written.
    pub fn copy(&self, source: &[u8], dest: &mut [u8]) -> Result<u32, CopyTooShort> {
        let (rows, len) = (self.rows as usize, self.row_bytes as usize);
        let (read_step, write_step) = (self.source_stride as usize, self.dest_pitch as usize);
        if rows == 0 || len == 0 {
            return Ok(self.data_used);
        }
        if rows > 1 && (len > read_step || len > write_step) {
            return Err(CopyTooShort);
        }
        // From the first row's start to the last row's end.
        let reach = |step: usize| (rows - 1).checked_mul(step)?.checked_add(len);
        let (Some(read), Some(write)) = (reach(read_step), reach(write_step)) else {
            return Err(CopyTooShort);
        };
        // `DataUsed` tells the client this much of its frame is valid.
        if dest.len() < self.data_used as usize {
            return Err(CopyTooShort);
        }
        let (Some(source), Some(dest)) = (source.get(..read), dest.get_mut(..write)) else {
            return Err(CopyTooShort);
        };
        if self.is_packed() {
            dest.copy_from_slice(source);
        } else {
            // Both steps are at least `len` (checked above), so every chunk
            // but the last is a whole step and the last is exactly `len`.
            let pairs = source.chunks(read_step).zip(dest.chunks_mut(write_step));
            for (from, to) in pairs {
                to[..len].copy_from_slice(&from[..len]);
            }
        }
        Ok(self.data_used)
    }

    /// Bytes the plan writes into the client frame.
    #[must_use]
    pub const fn bytes_copied(&self) -> u64 {
        self.rows as u64 * self.row_bytes as u64
    }
}

/// [`CopyPlan::copy`] was handed a source or destination shorter than the
/// plan's rows reach, or a plan whose rows overlap.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CopyTooShort;

impl core::fmt::Display for CopyTooShort {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("a copy's source or destination is shorter than its rows reach")
    }
}

/// A due frame, as the delivery work item fills and completes it: the target
/// and what its stream header and `KS_FRAME_INFO` carry.
#[derive(Debug, PartialEq, Eq)]
pub struct Completion<C> {
    /// The target to fill.
    pub target: Target<C>,
    /// `PresentationTime.Time`: start of this frame's interval, in the time
    /// base the caller passed to [`CaptureEngine::run`].
    pub presentation_time: i64,
    /// `Duration`: the frame interval.
    pub duration: i64,
    /// `DataUsed` of a packed frame: the image size (a pitched copy reports
    /// its own, [`CopyPlan::data_used`]).
    pub data_used: u32,
    /// The `OptionsFlags` bits this frame sets: `TIMEVALID | DURATIONVALID`,
    /// plus `DATADISCONTINUITY` on the first frame after a drop. Written
    /// with [`stamp_options`].
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
    pub const fn overlay(&self) -> Overlay {
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

/// What one tick did (bookkeeping only: no frame is touched).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Tick {
    /// The oldest queued target is due: [`CaptureEngine::take_due`] hands it
    /// to the delivery work.
    Due {
        /// Picture number of the due frame.
        picture_number: u64,
    },
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
    /// Frames due for delivery (completed, or about to be).
    pub delivered: u64,
    /// Frames dropped (no target queued, or the tick came late).
    pub dropped: u64,
    /// Delivered frames written in place.
    pub zero_copy: u64,
    /// Delivered frames that went through a staging slot.
    pub copied: u64,
    /// Image bytes of the delivered frames that went through a staging slot.
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
/// clock's.
///
/// The result is the clock's `now` minus how long ago the frame's time was on
/// the engine's timeline. Reading both clocks at completion keeps frames in
/// step with the master clock however far the two drift apart.
#[must_use]
pub const fn rebase_to_clock(frame_time: i64, engine_now: i64, clock_now: i64) -> i64 {
    clock_now.saturating_sub(engine_now.saturating_sub(frame_time))
}

/// The `DueTime` for `KeSetTimer` that fires at `due` when it is `now` (both
/// in 100 ns).
///
/// It is a negative, i.e. relative, interval, at least 1 unit so a late
/// timer fires at once instead of being read as an absolute time.
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

/// A short sentence for a person (a log line, the simulator's errors).
impl core::fmt::Display for EngineError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(match self {
            Self::BadInterval => "the frame interval is not positive",
            Self::NoQueue => "the target queue has no room (depth 0)",
        })
    }
}

#[cfg(test)]
mod error_display {
    use super::{CopyTooShort, EngineError, RouteError};

    #[test]
    fn route_error_names_the_numbers() {
        let s = RouteError::FrameTooSmall {
            have: 1000,
            need: 460_800,
        }
        .to_string();
        assert_eq!(s, "the client frame has 1000 bytes; the image needs 460800");
        assert!(RouteError::NoStagingSlot.to_string().contains("staging"));
    }

    #[test]
    fn engine_and_copy_errors_are_sentences() {
        assert!(EngineError::BadInterval.to_string().contains("interval"));
        assert!(EngineError::NoQueue.to_string().contains("depth 0"));
        assert!(CopyTooShort.to_string().contains("shorter"));
    }
}

/// A bounded FIFO of `DEPTH` entries in an array.
#[derive(Debug)]
struct Fifo<T, const DEPTH: usize> {
    slots: [Option<T>; DEPTH],
    head: usize,
    len: usize,
}

impl<T, const DEPTH: usize> Fifo<T, DEPTH> {
    fn new() -> Self {
        Self {
            slots: core::array::from_fn(|_| None),
            head: 0,
            len: 0,
        }
    }

    fn push(&mut self, item: T) -> Result<(), T> {
        if self.len == DEPTH {
            return Err(item);
        }
        self.slots[(self.head + self.len) % DEPTH] = Some(item);
        self.len += 1;
        Ok(())
    }

    const fn pop(&mut self) -> Option<T> {
        if self.len == 0 {
            return None;
        }
        let item = self.slots[self.head].take();
        self.head = (self.head + 1) % DEPTH;
        self.len -= 1;
        item
    }
}

/// The capture engine for one pin; `DEPTH` is the most targets it holds,
/// queued and due together.
#[derive(Debug)]
pub struct CaptureEngine<C, const DEPTH: usize> {
    queue: Fifo<Target<C>, DEPTH>,
    due: Fifo<Completion<C>, DEPTH>,
    interval: i64,
    image_size: u32,
    state: State,
    ticks: u64,
    stats: EngineStats,
    discontinuity: bool,
}

impl<C, const DEPTH: usize> CaptureEngine<C, DEPTH> {
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
        Ok(Self {
            queue: Fifo::new(),
            due: Fifo::new(),
            interval,
            image_size,
            state: State::Stopped,
            ticks: 0,
            stats: EngineStats::default(),
            discontinuity: false,
        })
    }

    /// Queues a target for the hardware. No room hands it back (the caller
    /// returns `STATUS_PENDING` from Process and retries after the next
    /// completion).
    ///
    /// # Errors
    /// The target itself when the engine already holds `DEPTH` targets.
    pub fn submit(&mut self, target: Target<C>) -> Result<(), Target<C>> {
        if !self.has_room() {
            return Err(target);
        }
        self.queue.push(target)
    }

    /// Targets queued now (not yet due).
    #[must_use]
    pub const fn queued(&self) -> usize {
        self.queue.len
    }

    /// Due frames the delivery work has not taken yet.
    #[must_use]
    pub const fn due(&self) -> usize {
        self.due.len
    }

    /// Whether another target fits (queued and due share `DEPTH`).
    #[must_use]
    pub const fn has_room(&self) -> bool {
        self.queue.len + self.due.len < DEPTH
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

    /// Pauses the hardware: ticks do nothing until [`Self::run`]; targets
    /// stay where they are.
    pub const fn pause(&mut self) {
        if matches!(self.state, State::Running { .. }) {
            self.state = State::Paused;
        }
    }

    /// Stops the hardware. Every target it still holds must then be handed
    /// back with [`Self::take_queued`]; returns how many there are.
    pub const fn stop(&mut self) -> usize {
        self.state = State::Stopped;
        self.queue.len + self.due.len
    }

    /// Hands back the oldest target still held, due ones first (stop,
    /// pause and cleanup paths: the caller completes it empty).
    pub fn take_queued(&mut self) -> Option<Target<C>> {
        self.due
            .pop()
            .map(|c| c.target)
            .or_else(|| self.queue.pop())
    }

    /// Hands the oldest due frame to the delivery work, which fills and
    /// completes it.
    pub const fn take_due(&mut self) -> Option<Completion<C>> {
        self.due.pop()
    }

    /// Whether the hardware is running.
    #[must_use]
    pub const fn is_running(&self) -> bool {
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
    pub const fn interval(&self) -> i64 {
        self.interval
    }

    /// Totals since the stream started.
    #[must_use]
    pub const fn stats(&self) -> EngineStats {
        self.stats
    }

    /// One frame interval has passed at `now`. Intervals that went by without
    /// a tick (a late timer) count as dropped frames first. Constant work:
    /// no frame is touched here (the DPC calls this).
    pub fn tick(&mut self, now: i64) -> Tick {
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
        let Some(target) = self.queue.pop() else {
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
        let completion = Completion {
            target,
            presentation_time: start.saturating_add(index.saturating_mul(self.interval)),
            duration: self.interval,
            data_used: self.image_size,
            options_flags,
            picture_number,
            drop_count: self.stats.dropped,
            stream_time: index.saturating_add(1).saturating_mul(self.interval),
        };
        // Cannot fail: the target came off the queue, and queued plus due
        // never exceed DEPTH.
        let _ = self.due.push(completion);
        Tick::Due { picture_number }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::portable::frame_pool::Region;
    use crate::portable::framing::{plan, Alignment};
    use crate::portable::video_format::PixelFormat;

    const I: i64 = 333_333;

    fn frame(index: u32) -> Frame {
        Frame {
            virtual_address: 0x1000 * (index as usize + 1),
            logical_address: 0,
            index,
            len: 100,
        }
    }

    fn client(address: usize) -> ClientBuffer {
        ClientBuffer {
            address,
            extent: 100,
            surface_pitch: 0,
        }
    }

    fn direct(cookie: u32) -> Target<u32> {
        Target {
            cookie,
            dma: DmaTarget::Direct(frame(cookie)),
            client: client(0x1000 * (cookie as usize + 1)),
        }
    }

    /// One interval: the DPC's tick, then the work item's take.
    fn deliver<const D: usize>(e: &mut CaptureEngine<u32, D>, now: i64) -> Completion<u32> {
        assert!(
            matches!(e.tick(now), Tick::Due { .. }),
            "expected a due frame"
        );
        e.take_due().expect("a due frame")
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
        let c = deliver(&mut e, I);
        assert_eq!(c.target.cookie, 1);
        e.submit(direct(3)).unwrap();
        assert_eq!(e.take_queued().unwrap().cookie, 2);
        assert_eq!(e.take_queued().unwrap().cookie, 3);
        assert_eq!(e.take_queued(), None);
    }

    #[test]
    fn tick_only_marks_due_and_due_frames_count_against_depth() {
        let mut e = CaptureEngine::<u32, 2>::new(I, 100).unwrap();
        e.run(0);
        e.submit(direct(1)).unwrap();
        e.submit(direct(2)).unwrap();
        // The DPC's part: the target leaves the queue but stays held.
        assert_eq!(e.tick(I), Tick::Due { picture_number: 1 });
        assert_eq!((e.queued(), e.due()), (1, 1));
        // Still full: the due frame has not been completed yet.
        assert!(!e.has_room());
        assert_eq!(e.submit(direct(3)), Err(direct(3)));
        // The work item's part frees the room.
        assert_eq!(e.take_due().unwrap().target.cookie, 1);
        assert!(e.has_room());
        assert_eq!(e.take_due(), None);
    }

    #[test]
    fn stop_hands_back_due_frames_before_queued_ones() {
        let mut e = CaptureEngine::<u32, 4>::new(I, 100).unwrap();
        e.run(0);
        for n in 1..=3 {
            e.submit(direct(n)).unwrap();
        }
        assert!(matches!(e.tick(I), Tick::Due { .. }));
        assert_eq!(e.stop(), 3);
        let back: Vec<u32> = core::iter::from_fn(|| e.take_queued().map(|t| t.cookie)).collect();
        assert_eq!(back, [1, 2, 3]);
        assert_eq!(e.stop(), 0);
    }

    #[test]
    fn overlay_shows_the_completion_and_its_path() {
        let mut e = CaptureEngine::<u32, 2>::new(I, 100).unwrap();
        e.run(0);
        e.submit(direct(1)).unwrap();
        e.submit(Target {
            cookie: 2,
            dma: DmaTarget::Staging(frame(2)),
            client: client(0x9000),
        })
        .unwrap();
        let a = deliver(&mut e, I);
        let b = deliver(&mut e, 2 * I);
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
        let c = deliver(&mut e, 3 * I + 10);
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
        let _ = deliver(&mut e, I);
        e.pause();
        e.run(50 * I);
        let c = deliver(&mut e, 51 * I);
        assert_eq!((c.picture_number, c.drop_count), (2, 0));
        assert_eq!(c.presentation_time, 50 * I);
        assert_eq!(c.options_flags & OPTIONSF_DATADISCONTINUITY, 0);
    }

    #[test]
    fn stamping_clears_the_bits_the_pin_owns_and_keeps_the_rest() {
        const SPLICEPOINT: u32 = 0x0000_0002; // set by a client: kept
        let stale = OPTIONSF_DATADISCONTINUITY | OPTIONSF_TIMEVALID | SPLICEPOINT;
        // A clean frame written into a header that carried a discontinuity
        // and a time from an earlier use.
        assert_eq!(
            stamp_options(stale, OPTIONSF_DURATIONVALID),
            OPTIONSF_DURATIONVALID | SPLICEPOINT
        );
        assert_eq!(
            stamp_options(0, OPTIONSF_TIMEVALID | OPTIONSF_DURATIONVALID),
            OPTIONSF_TIMEVALID | OPTIONSF_DURATIONVALID
        );
        // Only the pin's bits can be set through it.
        assert_eq!(stamp_options(0, u32::MAX), OPTIONSF_DRIVER_OWNED);
    }

    #[test]
    #[allow(clippy::std_instead_of_alloc)]
    fn copy_writes_rows_at_the_pitch_and_nothing_else() {
        let l = FrameLayout::new(PixelFormat::Nv12, 64, 16).unwrap();
        let source: std::vec::Vec<u8> = (0..l.image_size()).map(|i| (i % 251) as u8).collect();
        for pitch in [0, 64, 80, 4096] {
            let rows = l.image_size() / l.stride();
            let extent = if pitch > 64 {
                pitch * rows
            } else {
                l.image_size()
            };
            let plan = CopyPlan::new(&l, i32::try_from(pitch).unwrap(), extent);
            let mut dest = std::vec![0xeeu8; extent as usize + 7];
            assert_eq!(plan.copy(&source, &mut dest), Ok(plan.data_used));
            let step = if plan.is_packed() { 64 } else { pitch as usize };
            for (r, row) in source.chunks(64).enumerate() {
                assert_eq!(&dest[r * step..r * step + 64], row, "pitch {pitch} row {r}");
                let gap = &dest[r * step + 64..(r * step + step).min(extent as usize)];
                assert!(
                    gap.iter().all(|&b| b == 0xee),
                    "pitch {pitch}: padding written"
                );
            }
            assert!(dest[extent as usize..].iter().all(|&b| b == 0xee));
        }
    }

    #[test]
    #[allow(clippy::std_instead_of_alloc)]
    fn copy_refuses_short_buffers_and_overlapping_rows_without_writing() {
        let l = FrameLayout::new(PixelFormat::Yuy2, 32, 8).unwrap();
        let plan = CopyPlan::new(&l, 100, 800);
        let source = std::vec![1u8; l.image_size() as usize];
        let mut dest = std::vec![0u8; 799];
        assert_eq!(plan.copy(&source, &mut dest), Err(CopyTooShort));
        assert_eq!(plan.copy(&source[1..], &mut [0u8; 800]), Err(CopyTooShort));
        assert!(dest.iter().all(|&b| b == 0));
        let overlapping = [
            CopyPlan {
                row_bytes: 101,
                ..plan
            },
            CopyPlan {
                source_stride: 0,
                ..plan
            },
            CopyPlan {
                dest_pitch: 63,
                ..plan
            },
            CopyPlan {
                rows: u32::MAX,
                ..plan
            },
        ];
        // A destination well past the plan's 800 bytes (under Miri, which
        // interprets every byte the check below walks, less far past).
        let room = if cfg!(miri) { 1 << 12 } else { 1 << 16 };
        for bad in overlapping {
            let mut dest = std::vec![0u8; room];
            assert_eq!(bad.copy(&source, &mut dest), Err(CopyTooShort), "{bad:?}");
            assert!(dest.iter().all(|&b| b == 0));
        }
        let empty = CopyPlan { rows: 0, ..plan };
        assert_eq!(empty.copy(&[], &mut []), Ok(plan.data_used));
    }

    #[test]
    fn copy_plan_honours_a_wider_pitch_within_the_extent() {
        let l = FrameLayout::new(PixelFormat::Nv12, 320, 240).unwrap();
        // No pitch, the packed stride, or a narrower one: one block.
        for pitch in [0, 320, 200, -320] {
            let p = CopyPlan::new(&l, pitch, l.image_size());
            assert!(p.is_packed(), "{pitch}");
            assert_eq!((p.rows, p.row_bytes, p.data_used), (1, 115_200, 115_200));
        }
        // A 512-byte surface pitch: 360 rows (240 luma + 120 chroma).
        let p = CopyPlan::new(&l, 512, 512 * 360);
        assert_eq!((p.rows, p.row_bytes, p.data_used), (360, 320, 512 * 360));
        assert_eq!((p.source_stride, p.dest_pitch), (320, 512));
        assert_eq!(p.bytes_copied(), u64::from(l.image_size()));
        // A negative pitch is read by its size.
        assert_eq!(CopyPlan::new(&l, -512, 512 * 360), p);
        // One byte short of the pitched extent: packed, never past the frame.
        assert!(CopyPlan::new(&l, 512, 512 * 360 - 1).is_packed());
        // A pitch whose span overflows is packed too.
        assert!(CopyPlan::new(&l, i32::MAX, u32::MAX).is_packed());
        let rgb = FrameLayout::new(PixelFormat::Rgb24, 320, 240).unwrap();
        let p = CopyPlan::new(&rgb, -1024, 1024 * 240);
        assert_eq!((p.rows, p.row_bytes, p.dest_pitch), (240, 960, 1024));
        // The target reports the DataUsed Process advances by.
        let mut t = Target {
            cookie: 0u32,
            dma: DmaTarget::Staging(frame(0)),
            client: ClientBuffer {
                address: 0x5000,
                extent: 1024 * 240,
                surface_pitch: 1024,
            },
        };
        assert_eq!(t.data_used(&rgb), 1024 * 240);
        t.dma = DmaTarget::Direct(frame(0));
        assert_eq!(
            (t.copy_plan(&rgb), t.data_used(&rgb)),
            (None, rgb.image_size())
        );
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
        let own = FramePool::with_plan(plan(2, 5000, Alignment::PAGE, &own_region).unwrap());
        let staging =
            FramePool::with_plan(plan(1, 5000, Alignment::PAGE, &staging_region).unwrap());
        let at = |address, extent| ClientBuffer {
            address,
            extent,
            surface_pitch: 0,
        };
        let mine = own.allocate().unwrap();
        let t = route_frame([&own], &staging, at(mine.virtual_address, 5000), 5000).unwrap();
        assert_eq!(t, DmaTarget::Direct(mine));
        assert_eq!(staging.in_use(), 0);
        // A user-mode buffer: copied through staging.
        let t = route_frame([&own], &staging, at(0xDEAD_0000, 8000), 5000).unwrap();
        assert!(matches!(t, DmaTarget::Staging(_)));
        assert_eq!(
            route_frame(None, &staging, at(0xDEAD_0000, 8000), 5000),
            Err(RouteError::NoStagingSlot)
        );
        assert_eq!(
            route_frame([&own], &staging, at(mine.virtual_address, 4999), 5000),
            Err(RouteError::FrameTooSmall {
                have: 4999,
                need: 5000
            })
        );
        // A pointer inside our region that is not an allocated frame is
        // treated as foreign, never written in place.
        staging.free(t.frame().virtual_address).unwrap();
        let unallocated = own.plan().slot_size() as usize + mine.virtual_address;
        assert!(matches!(
            route_frame([&own], &staging, at(unallocated, 5000), 5000),
            Ok(DmaTarget::Staging(_))
        ));
        staging.free(staging.region().virtual_base).unwrap();
        // Any of several live pools counts as ours.
        let other_region = Region {
            virtual_base: 0x80_0000,
            logical_base: 0x80_0000,
            len: 1 << 19,
        };
        let other = FramePool::with_plan(plan(1, 5000, Alignment::PAGE, &other_region).unwrap());
        let theirs = other.allocate().unwrap();
        assert_eq!(
            route_frame(
                [&own, &other],
                &staging,
                at(theirs.virtual_address, 5000),
                5000
            ),
            Ok(DmaTarget::Direct(theirs))
        );
    }
}
