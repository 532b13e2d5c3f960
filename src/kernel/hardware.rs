//! The simulated capture hardware of one pin, split by IRQL:
//!
//! * a one-shot timer and its DPC (DISPATCH_LEVEL), re-armed for each
//!   frame, that only advance the core's capture engine: a constant handful
//!   of instructions per frame, whatever the frame size. When a frame falls
//!   due the DPC asks for the delivery work;
//! * the delivery **work item** (PASSIVE_LEVEL) that does all the pixel
//!   work: it synthesizes each due frame into its DMA target, copies a
//!   staging slot out to the client frame (row by row at the client's
//!   surface pitch), stamps the stream header (presentation time on the
//!   graph's master clock when one is assigned, else QPC in 100 ns units)
//!   and `KS_FRAME_INFO`, completes the frame by deleting its clone, and
//!   restarts Process if it pended.
//!
//! The timer, DPC and work item are a [`TimerWorker`] (the boundary keeps
//! the work item's rules and stops everything before its memory goes);
//! this module is the handler it calls and the state both routines share
//! with Process and the state changes, under one spin lock. Nothing is
//! queued once the engine has left RUN and the worker has been stopped.
//!
//! Memory: the stream's staging slots (a common buffer of its own) are
//! taken at STOP → ACQUIRE for the connection's format and given back at
//! ACQUIRE → STOP.
//!
//! Everything the DPC touches is nonpaged (pool blocks of the boundary's
//! types), and the code is in `.text` (the driver puts nothing in `PAGE`).

use core::ptr::NonNull;

use wdk_sys::{NTSTATUS, STATUS_INSUFFICIENT_RESOURCES, STATUS_SHARING_VIOLATION};

use super::allocator_registry::AllocatorRegistry;
use super::bindings::KS_FRAME_INFO;
use super::boundary::{
    performance_count, performance_counter, DeviceRef, DispatchLevel, DmaMemory, KernelMutex,
    KsPin, LeadingEdge, PinHandle, PooledBuffer, ReferenceClock, SpinLock, StreamClone,
    TimerControl, TimerHandler, TimerWorker,
};
use super::ks_format::ulong_size_of;
use crate::portable::capture_engine::{
    qpc_to_100ns, rebase_to_clock, route_frame, stamp_options, timer_due_time, CaptureEngine,
    ClientBuffer, Completion, DmaTarget, EngineStats, RouteError, Target, Tick,
};
use crate::portable::framing::{staging_plan, FramingError};
use crate::portable::image::synthesize;
use crate::portable::stream_memory::STAGING_SLOTS;
use crate::portable::video_format::{FrameLayout, VideoFormat};

/// Most frames in flight to the hardware at once (queued and due).
pub const QUEUE_DEPTH: usize = 8;

/// The engine type: targets carry the stream-pointer clone of their frame.
pub type Engine = CaptureEngine<StreamClone, QUEUE_DEPTH>;

/// `KS_VIDEO_FLAG_FRAME`: a whole frame (not a field).
const KS_VIDEO_FLAG_FRAME: u32 = 0;

/// What Process does with the frame under the leading edge.
pub enum Step {
    /// Routed and cloned: the leading edge moves on by this many bytes,
    /// then the clone goes to the hardware.
    Cloned(Target<StreamClone>, u32),
    /// The frame cannot hold the image: complete it empty and move on.
    Skip,
    /// No room in the hardware, no staging slot or no clone: stop here; a
    /// completion restarts processing.
    Pend,
}

/// What the device needs of a pin's hardware: a handle to it for PnP stop
/// and surprise removal, held by the pin that streams (one per device),
/// from STOP → ACQUIRE to ACQUIRE → STOP or Close.
///
/// Invariant: `Some` points at a live [`Hardware`], which releases the
/// claim (under the device mutex that guards this value) before it goes.
pub struct StreamingPin(Option<NonNull<Hardware>>);

// SAFETY: the pointer is only dereferenced under the device mutex, and the
// hardware clears it under that mutex before it is freed (type invariant).
unsafe impl Send for StreamingPin {}

impl StreamingPin {
    /// No pin streams.
    pub(crate) const fn none() -> Self {
        Self(None)
    }

    /// The streaming hardware, if any.
    ///
    /// IRQL: PASSIVE_LEVEL (the caller holds the device mutex).
    pub(crate) fn hardware(&self) -> Option<&Hardware> {
        // SAFETY: live hardware while the mutex guarding `self` is held
        // (type invariant).
        self.0.map(|hardware| unsafe { hardware.as_ref() })
    }

    /// Whether hardware other than `hardware` streams.
    fn held_by_other(&self, hardware: &Hardware) -> bool {
        self.0.is_some_and(|h| !core::ptr::eq(h.as_ptr(), hardware))
    }

    /// Gives the claim back if `hardware` holds it.
    fn release(&mut self, hardware: &Hardware) {
        if self.0.is_some_and(|h| core::ptr::eq(h.as_ptr(), hardware)) {
            self.0 = None;
        }
    }
}

/// What the DPC, the work item and Process share, under the hardware's
/// spin lock.
struct Shared {
    /// The capture engine (from ACQUIRE to STOP).
    engine: Option<Engine>,
    /// The stream's staging slots (from ACQUIRE to STOP; freed at
    /// PASSIVE_LEVEL, outside the lock).
    staging: Option<PooledBuffer>,
    /// Process returned `STATUS_PENDING`: the work item restarts it after
    /// a completion has freed what it frees.
    pend_io: bool,
    /// `KsStreamPointerClone` failed (low memory): nothing in flight may
    /// complete to restart Process, so the next timer tick does, and the
    /// frame is tried again then.
    retry_on_tick: bool,
    /// Totals of the last stream (kept after stop for the property).
    last_stats: EngineStats,
    /// The connection format.
    format: VideoFormat,
    /// Layout of the frames the hardware writes (the format's).
    layout: FrameLayout,
    /// The graph's master clock, when one was assigned (ACQUIRE to STOP).
    clock: Option<ReferenceClock>,
}

impl Shared {
    /// Whether a stream exists (ACQUIRE to STOP): its engine or its staging
    /// slots.
    ///
    /// IRQL: DISPATCH_LEVEL (called with the hardware spin lock held).
    const fn has_stream(&self) -> bool {
        self.engine.is_some() || self.staging.is_some()
    }

    /// Gives back the staging slot a target held, if it held one (a slot
    /// the engine or Process took cannot be refused, so the result is
    /// ignored).
    ///
    /// IRQL: DISPATCH_LEVEL (called with the hardware spin lock held).
    fn free_slot(&self, dma: DmaTarget) {
        if let (DmaTarget::Staging(slot), Some(staging)) = (dma, &self.staging) {
            let _ = staging.pool().free(slot.virtual_address);
        }
    }
}

/// What the timer worker calls: the engine and everything it needs.
struct Simulation {
    shared: SpinLock<Shared>,
    pin: PinHandle,
    dma: DeviceRef<DmaMemory>,
    allocators: DeviceRef<AllocatorRegistry>,
    qpc_frequency: i64,
}

/// The device parts a pin's hardware uses.
#[derive(Clone, Copy)]
pub struct DeviceParts {
    /// The device's DMA memory (staging buffers).
    pub(crate) dma: DeviceRef<DmaMemory>,
    /// The device's allocators (zero-copy look-ups).
    pub(crate) allocators: DeviceRef<AllocatorRegistry>,
    /// Which pin streams.
    pub(crate) streaming: DeviceRef<KernelMutex<StreamingPin>>,
}

/// The simulated hardware of one pin.
pub struct Hardware {
    worker: TimerWorker<Simulation>,
    streaming: DeviceRef<KernelMutex<StreamingPin>>,
}

impl Hardware {
    /// A stopped hardware for `pin`, streaming frames of `format`; `handle`
    /// is the pin's long-lived handle.
    ///
    /// IRQL: PASSIVE_LEVEL (pin Create).
    ///
    /// # Errors
    /// The timer worker's creation status.
    pub(crate) fn new(
        pin: &KsPin<'_>,
        handle: PinHandle,
        device: DeviceParts,
        format: VideoFormat,
        layout: FrameLayout,
    ) -> Result<Self, NTSTATUS> {
        let (_, qpc_frequency) = performance_counter();
        let simulation = Simulation {
            shared: SpinLock::new(Shared {
                engine: None,
                staging: None,
                pend_io: false,
                retry_on_tick: false,
                last_stats: EngineStats::default(),
                format,
                layout,
                clock: None,
            }),
            pin: handle,
            dma: device.dma,
            allocators: device.allocators,
            qpc_frequency,
        };
        Ok(Self {
            worker: pin.timer_worker(simulation)?,
            streaming: device.streaming,
        })
    }

    fn sim(&self) -> &Simulation {
        self.worker.handler()
    }

    /// STOP → ACQUIRE: refuses if another pin streams, else takes the
    /// stream's memory and claims the device's hardware (`streaming`: the
    /// device's, locked by the caller).
    ///
    /// IRQL: PASSIVE_LEVEL (the device mutex is held).
    ///
    /// # Errors
    /// `STATUS_SHARING_VIOLATION` when another pin streams, else as
    /// [`Simulation::acquire`].
    pub(crate) fn acquire(&self, streaming: &mut StreamingPin) -> Result<(), NTSTATUS> {
        if streaming.held_by_other(self) {
            return Err(STATUS_SHARING_VIOLATION);
        }
        self.sim().acquire()?;
        streaming.0 = Some(NonNull::from_ref(self));
        Ok(())
    }

    /// PAUSE → RUN: starts or resumes the timer, and restarts Process if it
    /// pended before the hardware ran.
    ///
    /// IRQL: PASSIVE_LEVEL.
    pub(crate) fn run(&self) {
        let sim = self.sim();
        let now = sim.now();
        let attempt = {
            let mut shared = sim.shared.lock();
            if let Some(engine) = shared.engine.as_mut() {
                engine.run(now);
            }
            sim.arm(self.worker.control(), &shared);
            core::mem::take(&mut shared.pend_io)
        };
        if attempt {
            sim.pin.attempt_processing();
        }
    }

    /// RUN → PAUSE: stops the timer, waits for the DPC and the work item,
    /// and hands every frame the hardware held back empty, so that no frame
    /// sits under a clone (where its IRP could not be cancelled) while the
    /// pin is paused. Picture numbers and drop counts carry on at RUN.
    ///
    /// IRQL: PASSIVE_LEVEL.
    pub(crate) fn pause(&self) {
        self.halt_with(Engine::pause);
    }

    /// PAUSE → ACQUIRE, Close, PnP stop and surprise removal: stops the
    /// hardware, waits for the DPC and the work item, and hands every frame
    /// it held back empty (staging slots freed). The engine's totals stay
    /// for the dropped-frames property.
    ///
    /// IRQL: PASSIVE_LEVEL.
    pub(crate) fn halt(&self) {
        self.halt_with(|engine| {
            engine.stop();
        });
    }

    /// IRQL: PASSIVE_LEVEL (waits).
    fn halt_with(&self, stop: impl FnOnce(&mut Engine)) {
        let sim = self.sim();
        // The processing mutex keeps Process out while the hardware stops
        // (the documented order: the control mutex AVStream holds, then
        // this one), so that when this returns no clone of the pin exists.
        let _processing = sim.pin.processing_mutex();
        {
            let mut shared = sim.shared.lock();
            if let Some(engine) = shared.engine.as_mut() {
                stop(engine);
            }
        }
        // With the engine out of RUN (under the lock), no DPC re-arms the
        // timer or asks for work: once the worker has stopped, neither
        // runs again.
        self.worker.stop();
        loop {
            let target = {
                let mut guard = sim.shared.lock();
                let shared = &mut *guard;
                let Some(target) = shared.engine.as_mut().and_then(Engine::take_queued) else {
                    break;
                };
                shared.free_slot(target.dma);
                target
            };
            // Outside the lock: the clone completes its frame empty.
            drop(target);
        }
    }

    /// ACQUIRE → STOP (and Close): drops the engine, keeping its totals for
    /// the dropped-frames property, gives the staging slots and the master
    /// clock back, and the device's hardware claim (`streaming`: the
    /// device's, locked by the caller). The hardware is halted: no DPC or
    /// work runs.
    ///
    /// IRQL: PASSIVE_LEVEL (the staging buffer is freed; the device mutex
    /// is held).
    pub(crate) fn release(&self, streaming: &mut StreamingPin) {
        let (staging, clock) = {
            let mut shared = self.sim().shared.lock();
            if let Some(engine) = shared.engine.take() {
                shared.last_stats = engine.stats();
            }
            (shared.staging.take(), shared.clock.take())
        };
        // Outside the spin lock, at PASSIVE_LEVEL.
        drop(staging);
        drop(clock);
        streaming.release(self);
    }

    /// Switches to frames of another format. Only while no stream exists
    /// (STOP); returns false otherwise.
    ///
    /// IRQL: ≤ DISPATCH_LEVEL (takes the spin lock briefly).
    pub(crate) fn reformat(&self, format: VideoFormat, layout: FrameLayout) -> bool {
        let mut shared = self.sim().shared.lock();
        if shared.has_stream() {
            return false;
        }
        shared.format = format;
        shared.layout = layout;
        true
    }

    /// Whether the format may change now (no stream).
    ///
    /// IRQL: ≤ DISPATCH_LEVEL (takes the spin lock briefly).
    pub(crate) fn can_reformat(&self) -> bool {
        !self.sim().shared.lock().has_stream()
    }

    /// Bytes of one frame of the connection format.
    ///
    /// IRQL: ≤ DISPATCH_LEVEL (takes the spin lock briefly).
    pub(crate) fn image_size(&self) -> u32 {
        self.sim().shared.lock().layout.image_size()
    }

    /// Totals of the current (or last) stream.
    ///
    /// IRQL: ≤ DISPATCH_LEVEL (takes the spin lock briefly).
    pub(crate) fn stats(&self) -> EngineStats {
        let shared = self.sim().shared.lock();
        shared
            .engine
            .as_ref()
            .map_or(shared.last_stats, Engine::stats)
    }

    /// Marks Process as pended (nothing to process now).
    ///
    /// IRQL: ≤ DISPATCH_LEVEL.
    pub(crate) fn pend(&self) {
        self.sim().shared.lock().pend_io = true;
    }

    /// Routes the frame under the locked leading edge (zero-copy when it is
    /// a frame of one of the device's live allocators, else a staging slot)
    /// and clones it, under the hardware lock. On `Pend` it marks Process
    /// as pended under the same lock, so a completion in between cannot
    /// miss the restart.
    ///
    /// IRQL: PASSIVE_LEVEL on entry; DISPATCH_LEVEL inside (spin locks held
    /// while `KsStreamPointerClone` runs, which is allowed there).
    pub(crate) fn route(&self, leading: &LeadingEdge<'_>, client: ClientBuffer) -> Step {
        let sim = self.sim();
        let mut guard = sim.shared.lock();
        let shared = &mut *guard;
        let layout = shared.layout;
        let ready = shared
            .engine
            .as_ref()
            .is_some_and(|e| e.is_running() && e.has_room());
        let Some(staging) = shared.staging.as_ref().filter(|_| ready) else {
            shared.pend_io = true;
            return Step::Pend;
        };
        // Lock order: the hardware lock, then the device's allocator lock
        // (no path takes them the other way round).
        let routed = {
            let live = sim.allocators.live();
            route_frame(live.pools(), staging.pool(), client, layout.image_size())
        };
        let dma = match routed {
            Ok(dma) => dma,
            Err(RouteError::FrameTooSmall { .. }) => return Step::Skip,
            Err(RouteError::NoStagingSlot) => {
                shared.pend_io = true;
                return Step::Pend;
            }
        };
        if let Ok(cookie) = leading.clone_locked() {
            let target = Target {
                cookie,
                dma,
                client,
            };
            let advance = target.data_used(&layout);
            return Step::Cloned(target, advance);
        }
        // The clone failed (KS could not allocate it). The frame stays at
        // the leading edge; if no frame is in flight, no completion will
        // restart Process, so the timer's next tick does.
        shared.free_slot(dma);
        shared.pend_io = true;
        shared.retry_on_tick = true;
        Step::Pend
    }

    /// Queues a clone Process prepared, after the leading edge has left its
    /// frame. If the hardware stopped or filled up meanwhile, the frame is
    /// completed empty and its staging slot freed instead.
    ///
    /// IRQL: PASSIVE_LEVEL (Process).
    pub(crate) fn submit_or_abandon(&self, target: Target<StreamClone>) {
        let rejected = {
            let mut guard = self.sim().shared.lock();
            let shared = &mut *guard;
            let outcome = match shared.engine.as_mut() {
                Some(engine) if engine.is_running() => engine.submit(target),
                _ => Err(target),
            };
            outcome.err().inspect(|t| shared.free_slot(t.dma))
        };
        // Outside the lock: a rejected clone completes its frame empty.
        drop(rejected);
    }
}

impl Drop for Hardware {
    /// Gives the device's hardware claim back if a state change did not;
    /// the worker then stops (its own drop) before the memory goes.
    ///
    /// IRQL: PASSIVE_LEVEL (pin Close).
    fn drop(&mut self) {
        self.streaming.lock().release(self);
    }
}

impl Simulation {
    /// Now, in 100 ns units on the QPC timeline (the stamps Media Foundation
    /// expects).
    ///
    /// IRQL: any.
    fn now(&self) -> i64 {
        qpc_to_100ns(performance_count(), self.qpc_frequency)
    }

    /// Arms the timer for the engine's next due time. Called with the lock
    /// held, so a concurrent halt either sees the timer armed (and cancels
    /// it) or arms nothing.
    ///
    /// IRQL: DISPATCH_LEVEL (the hardware spin lock is held).
    fn arm(&self, control: &TimerControl, shared: &Shared) {
        if let Some(due) = shared.engine.as_ref().and_then(Engine::next_due) {
            control.arm(timer_due_time(due, self.now()));
        }
    }

    /// STOP → ACQUIRE: takes the stream's staging slots for the connection
    /// format, builds the engine and takes the graph's master clock, if it
    /// has one (a clock is only assigned while the pin is stopped, so this
    /// is the point to fetch it). On failure nothing is left behind.
    ///
    /// IRQL: PASSIVE_LEVEL.
    ///
    /// # Errors
    /// `STATUS_INSUFFICIENT_RESOURCES` when no staging memory can be had,
    /// or the core's sizing error.
    fn acquire(&self) -> Result<(), NTSTATUS> {
        let (format, layout) = {
            let shared = self.shared.lock();
            (shared.format, shared.layout)
        };
        let plan = staging_plan(&layout, STAGING_SLOTS).map_err(FramingError::ntstatus)?;
        let staging = self.dma.pooled_buffer(&plan)?;
        let engine = Engine::new(format.frame_interval, layout.image_size())
            .map_err(|_| STATUS_INSUFFICIENT_RESOURCES)?;
        let clock = self.pin.reference_clock();
        let mut shared = self.shared.lock();
        shared.engine = Some(engine);
        shared.staging = Some(staging);
        shared.pend_io = false;
        shared.retry_on_tick = false;
        shared.clock = clock;
        Ok(())
    }

    /// Fills and completes one due frame: synthesis into its DMA target,
    /// the copy to the client frame for a staging target, the stream
    /// header and `KS_FRAME_INFO`, then the clone's deletion. Then, under
    /// one lock, its staging slot goes back and the pend flag is taken:
    /// returns whether Process pended and must be restarted now that this
    /// completion freed what it frees.
    ///
    /// IRQL: PASSIVE_LEVEL.
    fn deliver(&self, completion: Completion<StreamClone>, layout: &FrameLayout) -> bool {
        let overlay = completion.overlay();
        let copy = completion.target.copy_plan(layout);
        let Completion {
            target,
            presentation_time,
            duration,
            options_flags,
            picture_number,
            drop_count,
            ..
        } = completion;
        let Target {
            cookie: mut clone,
            dma,
            ..
        } = target;
        let image = layout.image_size() as usize;
        let data_used = match (dma, copy) {
            (DmaTarget::Staging(slot), Some(plan)) => {
                // SAFETY: a slot of this stream's staging buffer (nonpaged,
                // alive until ACQUIRE → STOP, which halts this work first) of
                // at least `image` bytes (its plan's frame size covers the
                // image); the pool handed it to this target alone, and a
                // staging slot is never a client frame, so it does not
                // overlap the clone's data.
                let pixels = unsafe {
                    core::slice::from_raw_parts_mut(slot.virtual_address as *mut u8, image)
                };
                match synthesize(pixels, layout, layout.stride(), &overlay) {
                    // The plan fits a frame Process accepted; were it not
                    // to, the frame goes back empty rather than half written.
                    Ok(_) => plan.copy(pixels, clone.data_mut()).unwrap_or(0),
                    Err(_) => 0,
                }
            }
            // An allocator's frame is the client frame: written in place
            // (route_frame checked it holds the image).
            _ => clone
                .data_mut()
                .get_mut(..image)
                .and_then(|pixels| synthesize(pixels, layout, layout.stride(), &overlay).ok())
                .map_or(0, |_| layout.image_size()),
        };
        let time = self.presentation_time(presentation_time);
        let (header, info) = clone.headers_mut();
        header.DataUsed = data_used;
        header.Duration = duration;
        header.PresentationTime.Time = time;
        header.PresentationTime.Numerator = 1;
        header.PresentationTime.Denominator = 1;
        header.OptionsFlags = stamp_options(header.OptionsFlags, options_flags);
        if let Some(info) = info {
            info.ExtendedHeaderSize = ulong_size_of::<KS_FRAME_INFO>();
            info.dwFrameFlags = KS_VIDEO_FLAG_FRAME;
            info.PictureNumber = i64::try_from(picture_number).unwrap_or(i64::MAX);
            info.DropCount = i64::try_from(drop_count).unwrap_or(i64::MAX);
        }
        clone.complete();
        let mut shared = self.shared.lock();
        shared.free_slot(dma);
        core::mem::take(&mut shared.pend_io)
    }

    /// A frame's presentation time: its time on the QPC timeline, moved onto
    /// the master clock's when there is one.
    ///
    /// IRQL: PASSIVE_LEVEL (the delivery work item).
    fn presentation_time(&self, frame_time: i64) -> i64 {
        let shared = self.shared.lock();
        shared
            .clock
            .as_ref()
            .and_then(ReferenceClock::get_time)
            .map_or(frame_time, |clock_time| {
                rebase_to_clock(frame_time, self.now(), clock_time)
            })
    }
}

impl TimerHandler for Simulation {
    /// One timer expiry: bookkeeping only, then the delivery work is asked
    /// for if a frame fell due, and Process is restarted if a failed clone
    /// left it pended.
    ///
    /// IRQL: DISPATCH_LEVEL.
    fn on_timer(&self, control: &TimerControl, at: &DispatchLevel) {
        let now = self.now();
        let (due, retry) = {
            let mut shared = self.shared.lock_at_dpc_level(at);
            let tick = shared.engine.as_mut().map_or(Tick::Idle, |e| e.tick(now));
            self.arm(control, &shared);
            (
                matches!(tick, Tick::Due { .. }),
                core::mem::take(&mut shared.retry_on_tick),
            )
        };
        if retry {
            self.pin.attempt_processing();
        }
        if due {
            control.queue_work();
        }
    }

    /// The delivery work: every due frame, filled and completed; Process
    /// restarted after each completion if it pended.
    ///
    /// IRQL: PASSIVE_LEVEL.
    fn on_work(&self, _control: &TimerControl) {
        loop {
            let next = {
                let mut shared = self.shared.lock();
                let due = shared.engine.as_mut().and_then(Engine::take_due);
                due.map(|c| (c, shared.layout))
            };
            let Some((completion, layout)) = next else {
                return;
            };
            if self.deliver(completion, &layout) {
                self.pin.attempt_processing();
            }
        }
    }
}
