//! The simulated capture hardware: a periodic `KTIMER` + `KDPC` at the frame
//! interval that runs the core's capture engine, synthesizes each frame into
//! its DMA target, copies staging slots out to client frames, stamps the
//! stream header (presentation time on the graph's master clock when one
//! is assigned, else QPC in 100 ns units) and `KS_FRAME_INFO`, and
//! completes the frame by deleting its stream-pointer clone.
//!
//! IRQL: the DPC runs at DISPATCH_LEVEL. Everything it touches is nonpaged:
//! this struct lives inside the pin context ([`super::nonpaged::PoolBox`]),
//! frames are in the common buffer or locked client buffers mapped by
//! ks.sys, and the code is in `.text` (the driver puts nothing in `PAGE`).

use core::cell::UnsafeCell;
use core::ptr::null_mut;

use wdk_sys::ntddk::{
    KeCancelTimer, KeFlushQueuedDpcs, KeInitializeDpc, KeInitializeTimerEx,
    KeQueryPerformanceCounter, KeSetTimer,
};
use wdk_sys::{_TIMER_TYPE, KDPC, KTIMER, LARGE_INTEGER, PKDPC, PVOID};

use super::bindings::{
    KsPinAttemptProcessing, KsPinGetFirstCloneStreamPointer, KsPinGetReferenceClockInterface,
    KsStreamPointerDelete, KsStreamPointerGetNextClone, KSSTREAM_HEADER, KS_FRAME_INFO,
    PIKSREFERENCECLOCK, PKSPIN, PKSSTREAM_POINTER,
};
use super::device::debug_print;
use super::ks_format::ulong_size_of;
use super::nonpaged::SpinLock;
use crate::portable::capture_engine::{
    qpc_to_100ns, rebase_to_clock, timer_due_time, CaptureEngine, Completion, DmaTarget,
    EngineStats, Target, Tick,
};
use crate::portable::frame_pool::FramePool;
use crate::portable::image::synthesize;
use crate::portable::video_format::{FrameLayout, VideoFormat};

/// Most frames in flight to the hardware at once.
pub(crate) const QUEUE_DEPTH: usize = 8;

/// The engine type: targets carry the stream-pointer clone of their frame.
pub(crate) type Engine = CaptureEngine<PKSSTREAM_POINTER, QUEUE_DEPTH>;

/// What the DPC and Process share, under the hardware's spin lock.
pub(crate) struct Shared {
    /// The capture engine (from ACQUIRE to STOP).
    pub(crate) engine: Option<Engine>,
    /// Staging slots for frames that are not ours.
    pub(crate) staging: FramePool,
    /// Process returned `STATUS_PENDING`: the DPC restarts it after a completion.
    pub(crate) pend_io: bool,
    /// Totals of the last stream (kept after stop for the property).
    pub(crate) last_stats: EngineStats,
    /// The connection format.
    pub(crate) format: VideoFormat,
    /// Layout of the frames the hardware writes (the format's).
    pub(crate) layout: FrameLayout,
    /// The graph's master clock, when one was assigned (ACQUIRE to STOP;
    /// one reference held).
    clock: PIKSREFERENCECLOCK,
}

// SAFETY: the raw pointers inside (the clones in the engine, the clock) are
// only dereferenced under the spin lock or by the one thread that popped a
// target from the engine, and they point at nonpaged objects that ks.sys
// keeps alive until the driver gives them back.
unsafe impl Send for Shared {}

/// The simulated hardware of one pin.
pub(crate) struct Hardware {
    /// Written by the kernel (`KeSetTimer`, expiry) while `&Hardware` is
    /// shared: hence the cells.
    timer: UnsafeCell<KTIMER>,
    dpc: UnsafeCell<KDPC>,
    pub(crate) shared: SpinLock<Shared>,
    pin: PKSPIN,
    qpc_frequency: i64,
}

impl Hardware {
    /// A stopped hardware for `pin`, streaming frames of `layout`.
    ///
    /// IRQL: PASSIVE_LEVEL (pin Create).
    pub(crate) fn new(
        pin: PKSPIN,
        format: VideoFormat,
        layout: FrameLayout,
        staging: FramePool,
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
            shared: SpinLock::new(Shared {
                engine: None,
                staging,
                pend_io: false,
                last_stats: EngineStats::default(),
                format,
                layout,
                clock: null_mut(),
            }),
            pin,
            // SAFETY: LARGE_INTEGER's QuadPart covers all 8 bytes.
            qpc_frequency: unsafe { frequency.QuadPart },
        }
    }

    /// Initialises the timer and DPC in place. Called once, through the
    /// pointer the pin context will live at for good (after
    /// `PoolBox::into_raw`), so the DPC's context pointer stays valid.
    ///
    /// IRQL: PASSIVE_LEVEL (pin Create).
    pub(crate) fn init(&self) {
        let context = core::ptr::from_ref(self).cast_mut().cast();
        // SAFETY: the timer and DPC live in nonpaged pool at a stable
        // address for as long as this hardware (the pin context); they are
        // cells, written only by these calls and the kernel. The DPC routine
        // only uses `context` (as a shared reference) while the timer can
        // fire, and `quiesce` flushes it before the memory goes.
        unsafe {
            KeInitializeTimerEx(self.timer.get(), _TIMER_TYPE::NotificationTimer);
            KeInitializeDpc(self.dpc.get(), Some(timer_dpc), context);
        }
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
    /// held, so a concurrent stop either sees the timer armed (and cancels
    /// it) or arms nothing.
    ///
    /// IRQL: ≤ DISPATCH_LEVEL; called with the hardware spin lock held (so at DISPATCH_LEVEL).
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

    /// Starts or resumes the hardware (PAUSE → RUN).
    ///
    /// IRQL: PASSIVE_LEVEL.
    pub(crate) fn run(&self) {
        let now = self.now();
        let mut shared = self.shared.lock();
        if let Some(engine) = shared.engine.as_mut() {
            engine.run(now);
        }
        self.arm(&shared);
    }

    /// Stops the timer and waits until no DPC runs. Targets stay queued
    /// (RUN → PAUSE).
    ///
    /// IRQL: PASSIVE_LEVEL (`KeFlushQueuedDpcs` waits).
    pub(crate) fn pause(&self) {
        {
            let mut shared = self.shared.lock();
            if let Some(engine) = shared.engine.as_mut() {
                engine.pause();
            }
        }
        self.quiesce();
    }

    /// IRQL: PASSIVE_LEVEL (`KeFlushQueuedDpcs` waits).
    fn quiesce(&self) {
        // SAFETY: the timer is initialised; PASSIVE_LEVEL, as
        // KeFlushQueuedDpcs requires. After the engine left RUN under the
        // lock, no DPC re-arms the timer, so once it is cancelled and the
        // queued DPCs are flushed, none can run again.
        unsafe {
            KeCancelTimer(self.timer.get());
            KeFlushQueuedDpcs();
        }
    }

    /// Stops the hardware and hands every in-flight frame back (PAUSE →
    /// ACQUIRE, and before close): each clone is deleted with `DataUsed` 0
    /// so its frame completes, each staging slot is freed. Any clone the
    /// engine did not know of is deleted too and reported.
    ///
    /// IRQL: PASSIVE_LEVEL.
    pub(crate) fn stop_and_flush(&self) {
        {
            let mut shared = self.shared.lock();
            if let Some(engine) = shared.engine.as_mut() {
                engine.stop();
            }
        }
        self.quiesce();
        loop {
            let target = {
                let mut shared = self.shared.lock();
                let Some(target) = shared.engine.as_mut().and_then(Engine::take_queued) else {
                    break;
                };
                if let DmaTarget::Staging(frame) = target.dma {
                    // A slot the engine handed out cannot be refused.
                    let _ = shared.staging.free(frame.virtual_address);
                }
                target
            };
            // SAFETY: the clone came from KsStreamPointerClone in Process and
            // was owned by the engine alone; nobody else deletes it.
            unsafe { abandon_clone(target.cookie) };
        }
        // SAFETY: the pin is live; at PASSIVE_LEVEL with the hardware
        // stopped, the clones left on the pin are not in anybody's hands.
        let mut stray = unsafe { KsPinGetFirstCloneStreamPointer(self.pin) };
        while !stray.is_null() {
            debug_print(c"avscap: deleting a clone the hardware did not hold\n");
            // SAFETY: `stray` is a live clone of this pin; the next one is
            // fetched before it is deleted.
            stray = unsafe {
                let next = KsStreamPointerGetNextClone(stray);
                abandon_clone(stray);
                next
            };
        }
    }

    /// Queues a clone Process prepared, after the leading edge has left its
    /// frame. If the hardware stopped meanwhile, the frame is completed
    /// empty and its staging slot freed instead.
    ///
    /// IRQL: PASSIVE_LEVEL (Process).
    pub(crate) fn submit_or_abandon(&self, target: Target<PKSSTREAM_POINTER>) {
        let rejected = {
            let mut shared = self.shared.lock();
            let outcome = match shared.engine.as_mut() {
                Some(engine) if engine.is_running() => engine.submit(target),
                _ => Err(target),
            };
            outcome.err().inspect(|t| {
                if let DmaTarget::Staging(slot) = t.dma {
                    let _ = shared.staging.free(slot.virtual_address);
                }
            })
        };
        if let Some(target) = rejected {
            // SAFETY: the clone was made by Process and handed to us alone.
            unsafe { abandon_clone(target.cookie) };
        }
    }

    /// Whether the format may change now (no engine, no staging slot out).
    ///
    /// IRQL: PASSIVE_LEVEL (takes the spin lock briefly).
    pub(crate) fn can_reformat(&self) -> bool {
        let shared = self.shared.lock();
        shared.engine.is_none() && shared.staging.in_use() == 0
    }

    /// Switches to frames of another layout, with staging slots laid out
    /// for it. Only while no engine exists (STOP); returns false otherwise.
    ///
    /// IRQL: PASSIVE_LEVEL (takes the spin lock briefly).
    pub(crate) fn reformat(
        &self,
        format: VideoFormat,
        layout: FrameLayout,
        staging: FramePool,
    ) -> bool {
        let mut shared = self.shared.lock();
        if shared.engine.is_some() || shared.staging.in_use() != 0 {
            return false;
        }
        shared.format = format;
        shared.layout = layout;
        shared.staging = staging;
        true
    }

    /// The connection format.
    ///
    /// IRQL: ≤ DISPATCH_LEVEL (takes the spin lock briefly).
    pub(crate) fn format(&self) -> VideoFormat {
        self.shared.lock().format
    }

    /// Bytes of one frame of the connection format.
    ///
    /// IRQL: ≤ DISPATCH_LEVEL (takes the spin lock briefly).
    pub(crate) fn image_size(&self) -> u32 {
        self.shared.lock().layout.image_size
    }

    /// Creates the engine for a new stream and takes the graph's master
    /// clock, if it has one (STOP → ACQUIRE: a clock is only assigned while
    /// the pin is stopped, so this is the point to fetch it).
    ///
    /// IRQL: PASSIVE_LEVEL.
    pub(crate) fn acquire(&self, engine: Engine) {
        let mut clock: PIKSREFERENCECLOCK = null_mut();
        // SAFETY: live pin at PASSIVE_LEVEL; on success the interface comes
        // with a reference, released in `release`.
        let status = unsafe { KsPinGetReferenceClockInterface(self.pin, &raw mut clock) };
        let mut shared = self.shared.lock();
        shared.engine = Some(engine);
        shared.clock = if status >= 0 { clock } else { null_mut() };
    }

    /// Drops the engine, keeping its totals for the dropped-frames property,
    /// and the master clock (ACQUIRE → STOP; the hardware is stopped and no
    /// DPC runs).
    ///
    /// IRQL: PASSIVE_LEVEL.
    pub(crate) fn release(&self) {
        let clock = {
            let mut shared = self.shared.lock();
            if let Some(engine) = shared.engine.take() {
                shared.last_stats = engine.stats();
            }
            core::mem::replace(&mut shared.clock, null_mut())
        };
        // SAFETY: the reference `acquire` took, released once, at PASSIVE
        // and outside the spin lock; no DPC uses the clock any more.
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

    /// A frame's presentation time: its time on the QPC timeline, moved onto
    /// the master clock's when there is one.
    ///
    /// IRQL: ≤ DISPATCH_LEVEL (a KS reference clock may be read at
    /// DISPATCH_LEVEL, as avshws does from its DPC).
    fn presentation_time(&self, clock: PIKSREFERENCECLOCK, frame_time: i64) -> i64 {
        // SAFETY: a clock in `Shared` holds a reference until `release`,
        // which runs only after the hardware is quiesced.
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

    /// One tick: runs in the DPC.
    ///
    /// IRQL: DISPATCH_LEVEL.
    fn on_timer(&self) {
        let now = self.now();
        let (tick, attempt, layout, clock) = {
            // SAFETY: the DPC runs at DISPATCH_LEVEL.
            let mut shared = unsafe { self.shared.lock_at_dpc_level() };
            let tick = shared.engine.as_mut().map_or(Tick::Idle, |e| e.tick(now));
            let attempt = core::mem::take(&mut shared.pend_io);
            (tick, attempt, shared.layout, shared.clock)
        };
        if let Tick::Deliver(completion) = tick {
            self.complete(&completion, &layout, clock);
        }
        {
            // SAFETY: the DPC runs at DISPATCH_LEVEL.
            let shared = unsafe { self.shared.lock_at_dpc_level() };
            self.arm(&shared);
        }
        if attempt {
            // SAFETY: the pin is live while its hardware runs (stop flushes
            // this DPC before the pin goes); asynchronous processing may be
            // requested at DISPATCH_LEVEL.
            unsafe { KsPinAttemptProcessing(self.pin, 1) };
        }
    }

    /// Fills and completes one frame.
    ///
    /// IRQL: DISPATCH_LEVEL.
    fn complete(
        &self,
        c: &Completion<PKSSTREAM_POINTER>,
        layout: &FrameLayout,
        clock: PIKSREFERENCECLOCK,
    ) {
        let Target { cookie: clone, dma } = c.target;
        let image = layout.image_size as usize;
        let frame = dma.frame();
        // SAFETY: the frame is a slot of the common buffer (own allocator
        // frame or staging slot) of at least `image` bytes (the pool's slot
        // size covers the image; route_frame checked `len >= image`), nonpaged,
        // and this DPC is its only writer: the engine handed the target out
        // once.
        let pixels =
            unsafe { core::slice::from_raw_parts_mut(frame.virtual_address as *mut u8, image) };
        let overlay = c.overlay();
        let written = synthesize(pixels, layout, layout.stride, &overlay).is_ok();
        // SAFETY: the clone is live (only this DPC or stop deletes it, and
        // stop flushes this DPC first) and locked (clones of a locked
        // leading edge start locked), so its header and data are resident.
        let header_ptr = unsafe { (*clone).StreamHeader };
        // SAFETY: as above; no other reference to the header exists while
        // this DPC owns the clone.
        let header = unsafe { &mut *header_ptr };
        if let DmaTarget::Staging(slot) = dma {
            if written {
                // SAFETY: `header.Data` is the locked client frame, at least
                // `image` bytes (route_frame refused smaller frames); the
                // staging slot is ours; the two never overlap (a staging
                // slot is never handed to a client).
                unsafe {
                    core::ptr::copy_nonoverlapping(
                        slot.virtual_address as *const u8,
                        header.Data.cast::<u8>(),
                        image,
                    );
                };
            }
            // SAFETY: DISPATCH_LEVEL, as lock_at_dpc_level requires.
            let shared = unsafe { self.shared.lock_at_dpc_level() };
            let _ = shared.staging.free(slot.virtual_address);
        }
        header.DataUsed = if written { c.data_used } else { 0 };
        header.Duration = c.duration;
        header.PresentationTime.Time = self.presentation_time(clock, c.presentation_time);
        header.PresentationTime.Numerator = 1;
        header.PresentationTime.Denominator = 1;
        header.OptionsFlags |= c.options_flags;
        if header.Size >= ulong_size_of::<KSSTREAM_HEADER>() + ulong_size_of::<KS_FRAME_INFO>() {
            // SAFETY: `Size` says the header is followed by a KS_FRAME_INFO
            // (the pin's StreamHeaderSize asks for one); same residency as
            // the header.
            // The pointer is derived from the raw header pointer (whose
            // allocation spans `Size` bytes), not from `header`, which only
            // covers the KSSTREAM_HEADER itself.
            let info = unsafe { &mut *header_ptr.add(1).cast::<KS_FRAME_INFO>() };
            info.ExtendedHeaderSize = ulong_size_of::<KS_FRAME_INFO>();
            info.dwFrameFlags = KS_VIDEO_FLAG_FRAME;
            info.PictureNumber = i64::try_from(c.picture_number).unwrap_or(i64::MAX);
            info.DropCount = i64::try_from(c.drop_count).unwrap_or(i64::MAX);
        }
        // SAFETY: the clone is ours to delete; this completes the frame.
        unsafe { KsStreamPointerDelete(clone) };
    }
}

/// `KS_VIDEO_FLAG_FRAME`: a whole frame (not a field).
const KS_VIDEO_FLAG_FRAME: u32 = 0;

/// Completes a frame that will not be filled: `DataUsed` 0, clone deleted.
///
/// # Safety
/// `clone` is a live clone owned by the caller, not used afterwards.
///
/// IRQL: ≤ DISPATCH_LEVEL (`KsStreamPointerDelete`); called at PASSIVE_LEVEL.
unsafe fn abandon_clone(clone: PKSSTREAM_POINTER) {
    // SAFETY: the caller's guarantee; the header of a live clone is valid.
    unsafe {
        (*(*clone).StreamHeader).DataUsed = 0;
        KsStreamPointerDelete(clone);
    }
}

/// The timer's DPC.
///
/// IRQL: DISPATCH_LEVEL.
unsafe extern "C" fn timer_dpc(_dpc: PKDPC, context: PVOID, _arg1: PVOID, _arg2: PVOID) {
    // SAFETY: `context` is the Hardware that initialised this DPC (`init`),
    // alive until `quiesce` has flushed every DPC.
    if let Some(hardware) = unsafe { context.cast::<Hardware>().as_ref() } {
        hardware.on_timer();
    }
}
