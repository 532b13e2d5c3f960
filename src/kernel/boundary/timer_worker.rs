//! A one-shot `KTIMER` with its `KDPC`, and an I/O work item the DPC can
//! queue: the simulated hardware's "interrupt" (DISPATCH_LEVEL, constant
//! work) and its PASSIVE_LEVEL bottom half, as one owned value.
//!
//! [`TimerWorker`] owns a handler ([`TimerHandler`]) and the kernel objects
//! that call it, all in one nonpaged block that never moves, so the DPC's
//! and the work item's context pointer stays valid. Its rules:
//!
//! * the DPC calls [`TimerHandler::on_timer`] with a [`DispatchLevel`]
//!   token; the work item calls [`TimerHandler::on_work`] at PASSIVE_LEVEL;
//! * [`TimerControl::queue_work`] never queues the work item while it is
//!   queued or running (the I/O manager's one rule for work items); asked
//!   while the routine runs, it has the routine run the handler once more
//!   before it finishes, so no request is lost;
//! * [`TimerWorker::stop`] cancels the timer, flushes queued DPCs and waits
//!   until the work item is neither queued nor running; dropping the worker
//!   stops it first, so neither routine can run on freed memory.
//!
//! Why `IoQueueWorkItem` on the device's FDO rather than AVStream's
//! `KsRegisterWorker`/`KsQueueWorkItem`: the I/O manager's work item holds a
//! reference on the device object while it is queued or running, so the
//! driver cannot unload under it, and Driver Verifier checks it (a work
//! item queued twice, freed while queued).

use core::cell::UnsafeCell;
use core::ffi::c_void;
use core::mem::MaybeUninit;
use core::ptr::NonNull;

use wdk_sys::ntddk::{
    IoAllocateWorkItem, IoFreeWorkItem, IoQueueWorkItem, KeCancelTimer, KeFlushQueuedDpcs,
    KeInitializeDpc, KeInitializeTimerEx, KeSetTimer,
};
use wdk_sys::{
    _IO_WORKITEM, _TIMER_TYPE, _WORK_QUEUE_TYPE, KDPC, KTIMER, LARGE_INTEGER, PDEVICE_OBJECT,
    PKDPC, PVOID,
};

use super::locks::{DispatchLevel, Event, SpinLock};
use super::pool_box::PoolBox;

/// What a [`TimerWorker`] calls.
pub trait TimerHandler: Send + Sync + Sized {
    /// The timer expired.
    ///
    /// IRQL: DISPATCH_LEVEL (`at` proves it): constant work only.
    fn on_timer(&self, control: &TimerControl, at: &DispatchLevel);

    /// The work item runs (once per [`TimerControl::queue_work`] that found
    /// it idle, and once more for requests made while it ran).
    ///
    /// IRQL: PASSIVE_LEVEL.
    fn on_work(&self, control: &TimerControl);
}

/// The work item's state, under the control's spin lock.
#[derive(Default)]
struct WorkState {
    /// Queued and not yet started.
    queued: bool,
    /// The routine runs.
    running: bool,
    /// Asked for while running: run the handler once more.
    rerun: bool,
}

/// An `IO_WORKITEM`, freed on drop (only when neither queued nor running:
/// its owner, [`TimerWorker`], stops first).
struct WorkItem(NonNull<_IO_WORKITEM>);

impl Drop for WorkItem {
    /// IRQL: ≤ DISPATCH_LEVEL.
    fn drop(&mut self) {
        // SAFETY: allocated by IoAllocateWorkItem, neither queued nor
        // running (the owner stopped), freed once.
        unsafe { IoFreeWorkItem(self.0.as_ptr()) };
    }
}

/// The timer and work item of a [`TimerWorker`], as its handler sees them.
///
/// Invariant: lives inside the worker's nonpaged block; the timer and DPC
/// are initialised, the DPC's routine and `context` (and the work routine's)
/// are the worker's, and the block outlives every DPC and work-item run
/// (the worker stops before it frees it).
pub struct TimerControl {
    timer: UnsafeCell<MaybeUninit<KTIMER>>,
    dpc: UnsafeCell<MaybeUninit<KDPC>>,
    work_item: WorkItem,
    work_routine: unsafe extern "C" fn(PDEVICE_OBJECT, PVOID),
    /// The worker's block, handed to the work routine.
    context: *mut c_void,
    work: SpinLock<WorkState>,
    /// Signalled while the work item is neither queued nor running.
    idle: Event,
}

#[expect(
    clippy::non_send_fields_in_send_ty,
    reason = "kernel objects and a context pointer, used only through the kernel's routines"
)]
// SAFETY: the kernel objects are made to be used from any CPU (the timer
// and DPC by the Ke routines, which serialise them; the work item only
// under `work`'s lock); `context` is only passed to the kernel.
unsafe impl Send for TimerControl {}
// SAFETY: as above; every method takes `&self` and is safe concurrently.
unsafe impl Sync for TimerControl {}

impl TimerControl {
    /// Arms the timer for `due_time` (`KeSetTimer`'s convention: negative
    /// is relative, in 100 ns units), replacing any earlier setting.
    ///
    /// IRQL: ≤ DISPATCH_LEVEL.
    pub(crate) fn arm(&self, due_time: i64) {
        let due = LARGE_INTEGER { QuadPart: due_time };
        // SAFETY: timer and DPC are initialised and live as long as the
        // worker, which cancels the timer and flushes the DPC before they
        // go (type invariant); KeSetTimer may be called at <= DISPATCH_LEVEL.
        unsafe { KeSetTimer(self.timer.get().cast(), due, self.dpc.get().cast()) };
    }

    /// Has the work item run the handler's `on_work` (now, or once more if
    /// it is running).
    ///
    /// IRQL: ≤ DISPATCH_LEVEL.
    pub(crate) fn queue_work(&self) {
        let mut work = self.work.lock();
        if work.running {
            work.rerun = true;
        } else if !work.queued {
            work.queued = true;
            self.idle.clear();
            // SAFETY: the work item is neither queued nor running (both
            // flags clear, under the lock every change of them takes); its
            // routine and context are the worker's, valid until the worker
            // has waited for the item to be idle (type invariant).
            // IoQueueWorkItem may be called at DISPATCH_LEVEL.
            unsafe {
                IoQueueWorkItem(
                    self.work_item.0.as_ptr(),
                    Some(self.work_routine),
                    _WORK_QUEUE_TYPE::DelayedWorkQueue,
                    self.context,
                );
            }
        }
    }

    /// The routine starts: the item is no longer queued.
    fn begin_run(&self) {
        let mut work = self.work.lock();
        work.queued = false;
        work.running = true;
    }

    /// The handler returned: true to run it again (asked for meanwhile),
    /// else the item is idle. After a `false` the routine touches nothing
    /// of the worker any more.
    fn end_run(&self) -> bool {
        let mut work = self.work.lock();
        if core::mem::take(&mut work.rerun) {
            return true;
        }
        work.running = false;
        self.idle.set();
        false
    }
}

/// The worker's nonpaged block: the kernel objects, then the handler.
struct Block<H> {
    control: TimerControl,
    handler: H,
}

/// A timer, its DPC and a work item, calling `H`; stopped and freed on drop.
pub struct TimerWorker<H: TimerHandler>(PoolBox<Block<H>>);

impl<H: TimerHandler> TimerWorker<H> {
    /// A stopped worker for `handler`, its work item on `device_object`;
    /// `None` when the pool is exhausted (the handler is dropped).
    ///
    /// IRQL: PASSIVE_LEVEL.
    ///
    /// # Safety
    /// `device_object` is the live FDO of the device, which outlives the
    /// worker.
    pub(super) unsafe fn try_new(device_object: PDEVICE_OBJECT, handler: H) -> Option<Self> {
        // SAFETY: the caller's guarantee; PASSIVE_LEVEL.
        let work_item = WorkItem(NonNull::new(unsafe { IoAllocateWorkItem(device_object) })?);
        let mut block = PoolBox::try_new(Block {
            control: TimerControl {
                timer: UnsafeCell::new(MaybeUninit::uninit()),
                dpc: UnsafeCell::new(MaybeUninit::uninit()),
                work_item,
                work_routine: work_routine::<H>,
                context: core::ptr::null_mut(),
                work: SpinLock::new(WorkState::default()),
                idle: Event::try_new(true)?,
            },
            handler,
        })?;
        let context = block.as_ptr().cast_mut().cast::<c_void>();
        block.control.context = context;
        let control = &block.control;
        // SAFETY: a KTIMER-sized cell in the block, which never moves and
        // outlives the timer's use (the worker cancels it before freeing);
        // nothing uses it yet.
        unsafe { KeInitializeTimerEx(control.timer.get().cast(), _TIMER_TYPE::NotificationTimer) };
        // SAFETY: likewise for the DPC; its routine only uses `context`
        // (the block) while the worker lives, which flushes it before the
        // block goes.
        unsafe { KeInitializeDpc(control.dpc.get().cast(), Some(timer_dpc::<H>), context) };
        Some(Self(block))
    }

    /// The handler.
    ///
    /// IRQL: any.
    pub(crate) fn handler(&self) -> &H {
        &self.0.handler
    }

    /// The timer and work item.
    ///
    /// IRQL: any.
    pub(crate) fn control(&self) -> &TimerControl {
        &self.0.control
    }

    /// Cancels the timer, waits for every queued DPC and until the work
    /// item is neither queued nor running. The handler must no longer arm
    /// the timer or queue work from its routines (it stopped its engine
    /// first), or the worker may run again after this returns.
    ///
    /// IRQL: PASSIVE_LEVEL.
    pub(crate) fn stop(&self) {
        let control = &self.0.control;
        // SAFETY: an initialised timer (type invariant); any IRQL <= DISPATCH.
        unsafe { KeCancelTimer(control.timer.get().cast()) };
        // SAFETY: PASSIVE_LEVEL, as KeFlushQueuedDpcs requires.
        unsafe { KeFlushQueuedDpcs() };
        control.idle.wait();
        // The routine signals idle under the lock: once we have held it, it
        // has released it and no longer touches the block.
        drop(control.work.lock());
    }
}

impl<H: TimerHandler> Drop for TimerWorker<H> {
    /// IRQL: PASSIVE_LEVEL.
    fn drop(&mut self) {
        self.stop();
    }
}

/// The timer's DPC.
///
/// IRQL: DISPATCH_LEVEL.
unsafe extern "C" fn timer_dpc<H: TimerHandler>(
    _dpc: PKDPC,
    context: PVOID,
    _arg1: PVOID,
    _arg2: PVOID,
) {
    // SAFETY: `context` is the block of the worker that initialised this
    // DPC, alive until the worker has flushed every DPC.
    let Some(block) = (unsafe { context.cast::<Block<H>>().as_ref() }) else {
        return;
    };
    // SAFETY: a DPC runs at DISPATCH_LEVEL, for the whole of this call,
    // which the token does not outlive.
    let at = unsafe { DispatchLevel::assume() };
    block.handler.on_timer(&block.control, &at);
}

/// The work item's routine.
///
/// IRQL: PASSIVE_LEVEL.
unsafe extern "C" fn work_routine<H: TimerHandler>(_device: PDEVICE_OBJECT, context: PVOID) {
    // SAFETY: `context` is the block of the worker that queued this item,
    // alive until the worker has seen the routine end (`end_run` false).
    let Some(block) = (unsafe { context.cast::<Block<H>>().as_ref() }) else {
        return;
    };
    block.control.begin_run();
    loop {
        block.handler.on_work(&block.control);
        if !block.control.end_run() {
            return;
        }
    }
}
