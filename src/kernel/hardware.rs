//! The simulated capture hardware of one pin, split by IRQL:
//!
//! * a periodic `KTIMER` + `KDPC` (DISPATCH_LEVEL) that only advances the
//!   core's capture engine: a constant handful of instructions per frame,
//!   whatever the frame size. When a frame falls due it queues the delivery
//!   work item (once; it drains every due frame);
//! * the delivery **work item** (PASSIVE_LEVEL) that does all the pixel
//!   work: it synthesizes each due frame into its DMA target, copies a
//!   staging slot out to the client frame (row by row at the client's
//!   surface pitch), stamps the stream header (presentation time on the
//!   graph's master clock when one is assigned, else QPC in 100 ns units)
//!   and `KS_FRAME_INFO`, completes the frame by deleting its clone, and
//!   restarts Process if it pended.
//!
//! Why `IoQueueWorkItem` on the device's FDO rather than AVStream's
//! `KsRegisterWorker`/`KsQueueWorkItem`: the I/O manager's work item holds a
//! reference on the device object while it is queued or running, so the
//! driver cannot unload under it, and Driver Verifier checks it (a work
//! item queued twice, freed while queued); its one rule, never queue an
//! item that is already queued, is kept by a flag under the hardware lock.
//! The wait for it (Stop, Pause, Close) is an event the routine signals
//! under that lock when it has nothing left to do; nothing is queued after
//! the engine left RUN and the DPC was flushed.
//!
//! Memory: the stream's staging slots (a common buffer of its own) are
//! taken at STOP → ACQUIRE for the connection's format and given back at
//! ACQUIRE → STOP.
//!
//! Everything the DPC touches is nonpaged: this struct lives inside the pin
//! context ([`super::nonpaged::PoolBox`]), and the code is in `.text` (the
//! driver puts nothing in `PAGE`).

use core::cell::UnsafeCell;
use core::ptr::{null_mut, NonNull};

use wdk_sys::ntddk::{
    IoAllocateWorkItem, IoFreeWorkItem, IoQueueWorkItem, KeCancelTimer, KeFlushQueuedDpcs,
    KeInitializeDpc, KeInitializeTimerEx, KeQueryPerformanceCounter, KeSetTimer,
};
use wdk_sys::{
    _IO_WORKITEM, _TIMER_TYPE, _WORK_QUEUE_TYPE, KDPC, KTIMER, LARGE_INTEGER, NTSTATUS,
    PDEVICE_OBJECT, PKDPC, PVOID, STATUS_INSUFFICIENT_RESOURCES,
};

use super::bindings::{
    frame_info_surface_pitch, KsPinAcquireProcessingMutex, KsPinAttemptProcessing,
    KsPinGetReferenceClockInterface, KsPinReleaseProcessingMutex, KSSTREAM_HEADER, KS_FRAME_INFO,
    PIKSREFERENCECLOCK, PKSPIN, PKSSTREAM_POINTER,
};
use super::device::DeviceContext;
use super::dma_memory::CommonBuffer;
use super::ks_format::ulong_size_of;
use super::nonpaged::{Event, SpinLock};
use super::stream_clone::StreamClone;
use crate::portable::capture_engine::{
    qpc_to_100ns, rebase_to_clock, route_frame, stamp_options, timer_due_time, CaptureEngine,
    ClientBuffer, Completion, DmaTarget, EngineStats, RouteError, Target, Tick,
};
use crate::portable::frame_pool::FramePool;
use crate::portable::framing::{staging_plan, FramingError};
use crate::portable::image::synthesize;
use crate::portable::stream_memory::STAGING_SLOTS;
use crate::portable::video_format::{FrameLayout, VideoFormat};

/// Most frames in flight to the hardware at once (queued and due).
pub(crate) const QUEUE_DEPTH: usize = 8;

/// The engine type: targets carry the stream-pointer clone of their frame.
pub(crate) type Engine = CaptureEngine<StreamClone, QUEUE_DEPTH>;

/// A stream's staging slots: the pool and the common buffer it carves.
pub(crate) struct Staging {
    pool: FramePool,
    /// Declared after `pool`: freed after it, at PASSIVE_LEVEL.
    _buffer: CommonBuffer,
}

/// What the DPC, the work item and Process share, under the hardware's
/// spin lock.
pub(crate) struct Shared {
    /// The capture engine (from ACQUIRE to STOP).
    engine: Option<Engine>,
    /// The stream's staging slots (from ACQUIRE to STOP).
    staging: Option<Staging>,
    /// Process returned `STATUS_PENDING`: the work item restarts it after
    /// a completion has freed what it frees.
    pend_io: bool,
    /// `KsStreamPointerClone` failed (low memory): nothing in flight may
    /// complete to restart Process, so the next timer tick does, and the
    /// frame is tried again then.
    retry_on_tick: bool,
    /// The delivery work item is queued or running.
    work_queued: bool,
    /// Totals of the last stream (kept after stop for the property).
    last_stats: EngineStats,
    /// The connection format.
    format: VideoFormat,
    /// Layout of the frames the hardware writes (the format's).
    layout: FrameLayout,
    /// The graph's master clock, when one was assigned (ACQUIRE to STOP;
    /// one reference held).
    clock: PIKSREFERENCECLOCK,
}

// SAFETY: the raw pointers inside (the clock; the clones are owned values)
// are only dereferenced under the spin lock or by the one thread that took
// a target from the engine, and they point at nonpaged objects that ks.sys
// keeps alive until the driver gives them back.
unsafe impl Send for Shared {}

impl Shared {
    /// Gives back the staging slot a target held, if it held one (a slot
    /// the engine or Process took cannot be refused, so the result is
    /// ignored).
    ///
    /// IRQL: DISPATCH_LEVEL (called with the hardware spin lock held).
    fn free_slot(&self, dma: DmaTarget) {
        if let (DmaTarget::Staging(slot), Some(staging)) = (dma, &self.staging) {
            let _ = staging.pool.free(slot.virtual_address);
        }
    }
}

/// The delivery work item (`IO_WORKITEM`), freed on drop.
pub(crate) struct WorkItem(NonNull<_IO_WORKITEM>);

impl WorkItem {
    /// A work item of the device object `fdo`, or `None` when the pool is
    /// exhausted.
    ///
    /// IRQL: ≤ DISPATCH_LEVEL (called at PASSIVE_LEVEL, pin Create).
    ///
    /// # Safety
    /// `fdo` is the device's live functional device object.
    pub(crate) unsafe fn new(fdo: PDEVICE_OBJECT) -> Option<Self> {
        // SAFETY: the caller's guarantee.
        NonNull::new(unsafe { IoAllocateWorkItem(fdo) }).map(WorkItem)
    }
}

impl Drop for WorkItem {
    /// IRQL: ≤ DISPATCH_LEVEL. The owner drops it only when it is neither
    /// queued nor running (after `Hardware::halt`).
    fn drop(&mut self) {
        // SAFETY: allocated by IoAllocateWorkItem, not queued (owner's
        // guarantee), freed once.
        unsafe { IoFreeWorkItem(self.0.as_ptr()) };
    }
}

/// What Process does with the frame under the leading edge.
pub(crate) enum Step {
    /// Routed and cloned: the leading edge moves on by this many bytes,
    /// then the clone goes to the hardware.
    Cloned(Target<StreamClone>, u32),
    /// The frame cannot hold the image: complete it empty and move on.
    Skip,
    /// No room in the hardware, no staging slot or no clone: stop here; a
    /// completion restarts processing.
    Pend,
}

/// The simulated hardware of one pin.
pub(crate) struct Hardware {
    /// Written by the kernel (`KeSetTimer`, expiry) while `&Hardware` is
    /// shared: hence the cells.
    timer: UnsafeCell<KTIMER>,
    dpc: UnsafeCell<KDPC>,
    work_item: WorkItem,
    /// Signalled while no delivery work is queued or running.
    work_idle: Event,
    shared: SpinLock<Shared>,
    pin: PKSPIN,
    device: *const DeviceContext,
    qpc_frequency: i64,
}

impl Hardware {
    /// A stopped hardware for `pin`, streaming frames of `format`.
    ///
    /// IRQL: PASSIVE_LEVEL (pin Create).
    pub(crate) fn new(
        pin: PKSPIN,
        device: &DeviceContext,
        work_item: WorkItem,
        format: VideoFormat,
        layout: FrameLayout,
    ) -> Self {
        let mut frequency = LARGE_INTEGER { QuadPart: 0 };
        // SAFETY: QPC may be read at any IRQL; the out pointer is a local.
        unsafe { KeQueryPerformanceCounter(&raw mut frequency) };
        Hardware {
            // SAFETY: KTIMER and KDPC are plain kernel structs that
            // `init` initialises before any use; zero is a valid placeholder.
            timer: UnsafeCell::new(unsafe { core::mem::zeroed() }),
            // SAFETY: as above.
            dpc: UnsafeCell::new(unsafe { core::mem::zeroed() }),
            work_item,
            work_idle: Event::new(),
            shared: SpinLock::new(Shared {
                engine: None,
                staging: None,
                pend_io: false,
                retry_on_tick: false,
                work_queued: false,
                last_stats: EngineStats::default(),
                format,
                layout,
                clock: null_mut(),
            }),
            pin,
            device: core::ptr::from_ref(device),
            // SAFETY: LARGE_INTEGER's QuadPart covers all 8 bytes.
            qpc_frequency: unsafe { frequency.QuadPart },
        }
    }

    /// Initialises the timer, DPC and idle event in place. Called once,
    /// through the pointer the pin context will live at for good (after
    /// `PoolBox::into_raw`), so the DPC's context pointer stays valid.
    ///
    /// IRQL: PASSIVE_LEVEL (pin Create).
    pub(crate) fn init(&self) {
        let context = core::ptr::from_ref(self).cast_mut().cast();
        // SAFETY: the timer and DPC live in nonpaged pool at a stable
        // address for as long as this hardware (the pin context); they are
        // cells, written only by these calls and the kernel. The DPC routine
        // only uses `context` (as a shared reference) while the timer can
        // fire, and `halt` flushes it before the memory goes.
        unsafe {
            KeInitializeTimerEx(self.timer.get(), _TIMER_TYPE::NotificationTimer);
            KeInitializeDpc(self.dpc.get(), Some(timer_dpc), context);
        }
        self.work_idle.init(true);
    }

    /// The device this hardware belongs to.
    ///
    /// IRQL: any.
    pub(crate) fn device(&self) -> Option<&DeviceContext> {
        // SAFETY: the device outlives its pins.
        unsafe { self.device.as_ref() }
    }

    /// Now, in 100 ns units on the QPC timeline (the stamps Media Foundation
    /// expects).
    ///
    /// IRQL: any.
    fn now(&self) -> i64 {
        // SAFETY: KeQueryPerformanceCounter may be called at any IRQL; the
        // returned union's QuadPart covers all 8 bytes.
        let counter = unsafe { KeQueryPerformanceCounter(null_mut()).QuadPart };
        qpc_to_100ns(counter, self.qpc_frequency)
    }

    /// Arms the timer for the engine's next due time. Called with the lock
    /// held, so a concurrent halt either sees the timer armed (and cancels
    /// it) or arms nothing.
    ///
    /// IRQL: DISPATCH_LEVEL (the hardware spin lock is held).
    fn arm(&self, shared: &Shared) {
        if let Some(due) = shared.engine.as_ref().and_then(Engine::next_due) {
            let due_time = LARGE_INTEGER {
                QuadPart: timer_due_time(due, self.now()),
            };
            // SAFETY: timer and DPC were initialised in `init` and live as
            // long as `self`; KeSetTimer may be called at <= DISPATCH_LEVEL.
            unsafe { KeSetTimer(self.timer.get(), due_time, self.dpc.get()) };
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
    pub(crate) fn acquire(&self) -> Result<(), NTSTATUS> {
        let (format, layout) = {
            let shared = self.shared.lock();
            (shared.format, shared.layout)
        };
        let plan = staging_plan(&layout, STAGING_SLOTS).map_err(FramingError::ntstatus)?;
        let device = self.device().ok_or(STATUS_INSUFFICIENT_RESOURCES)?;
        let buffer = device
            .dma
            .allocate(plan.bytes())
            .ok_or(STATUS_INSUFFICIENT_RESOURCES)?;
        let pool = FramePool::over(buffer.region(), &plan).map_err(FramingError::ntstatus)?;
        let engine = Engine::new(format.frame_interval, layout.image_size())
            .map_err(|_| STATUS_INSUFFICIENT_RESOURCES)?;
        let mut clock: PIKSREFERENCECLOCK = null_mut();
        // SAFETY: live pin at PASSIVE_LEVEL; on success the interface comes
        // with a reference, released in `release`.
        let status = unsafe { KsPinGetReferenceClockInterface(self.pin, &raw mut clock) };
        let mut shared = self.shared.lock();
        shared.engine = Some(engine);
        shared.staging = Some(Staging {
            pool,
            _buffer: buffer,
        });
        shared.pend_io = false;
        shared.retry_on_tick = false;
        shared.clock = if status >= 0 { clock } else { null_mut() };
        Ok(())
    }

    /// PAUSE → RUN: starts or resumes the timer, and restarts Process if it
    /// pended before the hardware ran.
    ///
    /// IRQL: PASSIVE_LEVEL.
    pub(crate) fn run(&self) {
        let now = self.now();
        let attempt = {
            let mut shared = self.shared.lock();
            if let Some(engine) = shared.engine.as_mut() {
                engine.run(now);
            }
            self.arm(&shared);
            core::mem::take(&mut shared.pend_io)
        };
        if attempt {
            // SAFETY: live pin; asynchronous processing may be requested at
            // PASSIVE_LEVEL.
            unsafe { KsPinAttemptProcessing(self.pin, 1) };
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
        // The processing mutex keeps Process out while the hardware stops
        // (the documented order: the control mutex AVStream holds, then
        // this one), so that when this returns no clone of the pin exists.
        // SAFETY: live pin at PASSIVE_LEVEL, outside Process.
        unsafe { KsPinAcquireProcessingMutex(self.pin) };
        {
            let mut shared = self.shared.lock();
            if let Some(engine) = shared.engine.as_mut() {
                stop(engine);
            }
        }
        // SAFETY: the timer is initialised; PASSIVE_LEVEL, as
        // KeFlushQueuedDpcs requires. With the engine out of RUN (under the
        // lock), no DPC re-arms the timer or queues work, so once the timer
        // is cancelled and the queued DPCs are flushed none can run again.
        unsafe {
            KeCancelTimer(self.timer.get());
            KeFlushQueuedDpcs();
        }
        // The last DPC may have queued the work item: wait until it has
        // delivered every due frame and said it is idle.
        self.work_idle.wait();
        loop {
            let target = {
                let mut guard = self.shared.lock();
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
        // SAFETY: acquired above.
        unsafe { KsPinReleaseProcessingMutex(self.pin) };
    }

    /// ACQUIRE → STOP (and Close): drops the engine, keeping its totals for
    /// the dropped-frames property, gives the staging slots and the master
    /// clock back. The hardware is halted: no DPC or work runs.
    ///
    /// IRQL: PASSIVE_LEVEL (the staging buffer is freed).
    pub(crate) fn release(&self) {
        let (staging, clock) = {
            let mut shared = self.shared.lock();
            if let Some(engine) = shared.engine.take() {
                shared.last_stats = engine.stats();
            }
            (
                shared.staging.take(),
                core::mem::replace(&mut shared.clock, null_mut()),
            )
        };
        drop(staging);
        // SAFETY: the reference `acquire` took, released once, at PASSIVE
        // and outside the spin lock; no DPC or work item uses it any more.
        unsafe {
            if let Some(release) = clock
                .as_ref()
                .and_then(|c| c.lpVtbl.as_ref())
                .and_then(|v| v.Release)
            {
                release(clock);
            }
        }
    }

    /// Switches to frames of another format. Only while no stream exists
    /// (STOP); returns false otherwise.
    ///
    /// IRQL: ≤ DISPATCH_LEVEL (takes the spin lock briefly).
    pub(crate) fn reformat(&self, format: VideoFormat, layout: FrameLayout) -> bool {
        let mut shared = self.shared.lock();
        if shared.engine.is_some() || shared.staging.is_some() {
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
        let shared = self.shared.lock();
        shared.engine.is_none() && shared.staging.is_none()
    }

    /// Bytes of one frame of the connection format.
    ///
    /// IRQL: ≤ DISPATCH_LEVEL (takes the spin lock briefly).
    pub(crate) fn image_size(&self) -> u32 {
        self.shared.lock().layout.image_size()
    }

    /// Totals of the current (or last) stream.
    ///
    /// IRQL: ≤ DISPATCH_LEVEL (takes the spin lock briefly).
    pub(crate) fn stats(&self) -> EngineStats {
        let shared = self.shared.lock();
        shared
            .engine
            .as_ref()
            .map_or(shared.last_stats, Engine::stats)
    }

    /// Marks Process as pended (nothing to process now).
    ///
    /// IRQL: ≤ DISPATCH_LEVEL.
    pub(crate) fn pend(&self) {
        self.shared.lock().pend_io = true;
    }

    /// Routes the frame under the locked leading edge (zero-copy when it is
    /// a frame of one of the device's live allocators, else a staging slot)
    /// and clones it, under the hardware lock. On `Pend` it marks Process
    /// as pended under the same lock, so a completion in between cannot
    /// miss the restart.
    ///
    /// IRQL: PASSIVE_LEVEL on entry; DISPATCH_LEVEL inside (spin locks held
    /// while `KsStreamPointerClone` runs, which is allowed there).
    ///
    /// # Safety
    /// `leading` is the pin's locked leading edge and `client` its frame.
    pub(crate) unsafe fn route(&self, leading: PKSSTREAM_POINTER, client: ClientBuffer) -> Step {
        let mut guard = self.shared.lock();
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
        let routed = match self.device() {
            Some(device) => {
                let live = device.allocators.lock();
                route_frame(live.pools(), &staging.pool, client, layout.image_size())
            }
            None => route_frame(None, &staging.pool, client, layout.image_size()),
        };
        let dma = match routed {
            Ok(dma) => dma,
            Err(RouteError::FrameTooSmall { .. }) => return Step::Skip,
            Err(RouteError::NoStagingSlot) => {
                shared.pend_io = true;
                return Step::Pend;
            }
        };
        // SAFETY: the caller's guarantee.
        if let Ok(cookie) = unsafe { StreamClone::of_leading_edge(leading) } {
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
            let mut guard = self.shared.lock();
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

    /// A frame's presentation time: its time on the QPC timeline, moved onto
    /// the master clock's when there is one.
    ///
    /// IRQL: PASSIVE_LEVEL (the delivery work item).
    fn presentation_time(&self, clock: PIKSREFERENCECLOCK, frame_time: i64) -> i64 {
        // SAFETY: a clock in `Shared` holds a reference until `release`,
        // which runs only after the hardware is halted.
        let get_time = unsafe {
            clock
                .as_ref()
                .and_then(|c| c.lpVtbl.as_ref())
                .and_then(|v| v.GetTime)
        };
        match get_time {
            // SAFETY: as above; GetTime takes only the interface pointer.
            Some(get_time) => rebase_to_clock(frame_time, self.now(), unsafe { get_time(clock) }),
            None => frame_time,
        }
    }

    /// One timer expiry: bookkeeping only, then the delivery work item is
    /// queued if a frame fell due and it is not queued already, and Process
    /// is restarted if a failed clone left it pended.
    ///
    /// IRQL: DISPATCH_LEVEL.
    fn on_timer(&self) {
        let now = self.now();
        let (queue_work, retry) = {
            // SAFETY: the DPC runs at DISPATCH_LEVEL.
            let mut shared = unsafe { self.shared.lock_at_dpc_level() };
            let tick = shared.engine.as_mut().map_or(Tick::Idle, |e| e.tick(now));
            let queue = matches!(tick, Tick::Due { .. }) && !shared.work_queued;
            if queue {
                shared.work_queued = true;
                self.work_idle.clear();
            }
            self.arm(&shared);
            (queue, core::mem::take(&mut shared.retry_on_tick))
        };
        if retry {
            // SAFETY: the pin is live while its timer runs (halt cancels the
            // timer and flushes this DPC before the pin goes);
            // KsPinAttemptProcessing may be called at DISPATCH_LEVEL.
            unsafe { KsPinAttemptProcessing(self.pin, 1) };
        }
        if queue_work {
            let context = core::ptr::from_ref(self).cast_mut().cast();
            // SAFETY: the work item is not queued (the flag, set under the
            // lock, was clear); the routine uses `context` only until it
            // signals idle, and `halt` waits for that before the hardware
            // can go. IoQueueWorkItem may be called at DISPATCH_LEVEL.
            unsafe {
                IoQueueWorkItem(
                    self.work_item.0.as_ptr(),
                    Some(delivery_work),
                    _WORK_QUEUE_TYPE::DelayedWorkQueue,
                    context,
                );
            }
        }
    }

    /// The delivery work: every due frame, filled and completed; Process
    /// restarted after each completion if it pended. Signals idle (under
    /// the lock, as the last thing it does with `self`) when none is left.
    ///
    /// IRQL: PASSIVE_LEVEL.
    fn deliver_due(&self) {
        loop {
            let next = {
                let mut shared = self.shared.lock();
                let due = shared.engine.as_mut().and_then(Engine::take_due);
                if due.is_none() {
                    shared.work_queued = false;
                    self.work_idle.set();
                }
                due.map(|c| (c, shared.layout, shared.clock))
            };
            let Some((completion, layout, clock)) = next else {
                return;
            };
            if self.deliver(completion, &layout, clock) {
                // SAFETY: the pin is live while its hardware runs (halt
                // waits for this routine before the pin goes); asynchronous
                // processing may be requested at PASSIVE_LEVEL.
                unsafe { KsPinAttemptProcessing(self.pin, 1) };
            }
        }
    }

    /// Fills and completes one due frame: synthesis into its DMA target,
    /// the copy to the client frame for a staging target, the stream
    /// header and `KS_FRAME_INFO`, then the clone's deletion. Then, under
    /// one lock, its staging slot goes back and the pend flag is taken:
    /// returns whether Process pended and must be restarted now that this
    /// completion freed what it frees.
    ///
    /// IRQL: PASSIVE_LEVEL.
    fn deliver(
        &self,
        completion: Completion<StreamClone>,
        layout: &FrameLayout,
        clock: PIKSREFERENCECLOCK,
    ) -> bool {
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
            cookie: clone,
            dma,
            client,
        } = target;
        let image = layout.image_size() as usize;
        let frame = dma.frame();
        // SAFETY: the frame is a slot of a common buffer of ours (an
        // allocator frame or a staging slot) of at least `image` bytes (its
        // plan's frame size covers the image; route_frame checked), nonpaged,
        // and this work item is its only writer: the engine handed the
        // target out once.
        let pixels =
            unsafe { core::slice::from_raw_parts_mut(frame.virtual_address as *mut u8, image) };
        let written = synthesize(pixels, layout, layout.stride(), &overlay).is_ok();
        let mut data_used = 0;
        if written {
            data_used = layout.image_size();
            if let Some(plan) = copy {
                // SAFETY: the client frame Process recorded, locked and
                // mapped while its clone lives, `client.extent` bytes long;
                // a staging slot is never a client frame, so it does not
                // overlap `pixels`, and this work item is its only writer.
                let dest = unsafe {
                    core::slice::from_raw_parts_mut(
                        client.address as *mut u8,
                        client.extent as usize,
                    )
                };
                // The plan fits a frame Process accepted; were it not to,
                // the frame goes back empty rather than half written.
                data_used = plan.copy(pixels, dest).unwrap_or(0);
            }
        }
        let header_ptr = clone.header();
        // SAFETY: the clone is live and locked, so its header is resident;
        // no other reference to it exists while this work item owns the
        // clone.
        let header = unsafe { &mut *header_ptr };
        header.DataUsed = data_used;
        header.Duration = duration;
        header.PresentationTime.Time = self.presentation_time(clock, presentation_time);
        header.PresentationTime.Numerator = 1;
        header.PresentationTime.Denominator = 1;
        header.OptionsFlags = stamp_options(header.OptionsFlags, options_flags);
        // SAFETY: the header of a live clone, as above.
        if let Some(info) = unsafe { frame_info(header_ptr) } {
            // SAFETY: `frame_info` checked that the header's Size covers it.
            let info = unsafe { &mut *info };
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
}

/// `KS_VIDEO_FLAG_FRAME`: a whole frame (not a field).
const KS_VIDEO_FLAG_FRAME: u32 = 0;

/// The `KS_FRAME_INFO` after a stream header, when the header's `Size`
/// says it is there (the pin's `StreamHeaderSize` asks for one).
///
/// IRQL: any.
///
/// # Safety
/// `header` is a valid, resident stream header whose allocation spans its
/// `Size` bytes.
pub(crate) unsafe fn frame_info(header: *mut KSSTREAM_HEADER) -> Option<*mut KS_FRAME_INFO> {
    // SAFETY: the caller's guarantee.
    let size = unsafe { (*header).Size };
    // The pointer is derived from the raw header pointer, whose allocation
    // spans `Size` bytes, not from a reference to the header alone.
    (size >= ulong_size_of::<KSSTREAM_HEADER>() + ulong_size_of::<KS_FRAME_INFO>())
        .then(|| header.wrapping_add(1).cast::<KS_FRAME_INFO>())
}

/// The surface pitch a frame's `KS_FRAME_INFO` asks for (0 when it has
/// none).
///
/// IRQL: any.
///
/// # Safety
/// As [`frame_info`].
pub(crate) unsafe fn surface_pitch(header: *mut KSSTREAM_HEADER) -> i32 {
    // SAFETY: the caller's guarantee; a KS_FRAME_INFO `frame_info` found is
    // inside the header's allocation (possibly unaligned: read by value).
    unsafe { frame_info(header).map_or(0, |info| frame_info_surface_pitch(&info.read_unaligned())) }
}

/// The timer's DPC.
///
/// IRQL: DISPATCH_LEVEL.
unsafe extern "C" fn timer_dpc(_dpc: PKDPC, context: PVOID, _arg1: PVOID, _arg2: PVOID) {
    // SAFETY: `context` is the Hardware that initialised this DPC (`init`),
    // alive until `halt` has flushed every DPC.
    if let Some(hardware) = unsafe { context.cast::<Hardware>().as_ref() } {
        hardware.on_timer();
    }
}

/// The delivery work item's routine.
///
/// IRQL: PASSIVE_LEVEL.
unsafe extern "C" fn delivery_work(_device: PDEVICE_OBJECT, context: PVOID) {
    // SAFETY: `context` is the Hardware that queued this item, alive until
    // `halt` has seen the routine signal idle (its last use of it).
    if let Some(hardware) = unsafe { context.cast::<Hardware>().as_ref() } {
        hardware.deliver_due();
    }
}
