//! The ntoskrnl model: pool (special-pool style), IRQL and spin locks,
//! events and mutexes, timers and DPCs on virtual time, work items, QPC,
//! DMA adapters and common buffers, contiguous memory, `DbgPrint`,
//! `KeBugCheckEx`, and `memcpy` / `memset` with every call counted. Also
//! the scheduler that runs DPCs, work items and KS processing.

use std::collections::{BTreeMap, VecDeque};
use std::fmt::Write as _;

use crate::layout::{DeviceDescription, DmaAdapter, DmaOperations};
use crate::machine::{self, alloc, arg, call, irql, need_at_most, tag_str, Kind, Mem, Uc, R};
use crate::rules::Rule;
use crate::{ks, off};

/// `STATUS_SUCCESS`.
pub const STATUS_SUCCESS: u64 = 0;
/// `POOL_FLAG_NON_PAGED`.
const POOL_FLAG_NON_PAGED: u64 = 0x40;
/// `POOL_FLAG_PAGED`.
const POOL_FLAG_PAGED: u64 = 0x100;
/// `PAGE_READWRITE`.
const PAGE_READWRITE: u64 = 0x04;
/// Logical (bus) addresses of common buffers start here: distinct from
/// every virtual address the model hands out.
const LOGICAL_BASE: u64 = 0x0000_0000_8000_0000;
/// Physical addresses of contiguous blocks start here.
const PHYSICAL_BASE: u64 = 0x0000_0002_0000_0000;

/// A pool block the driver allocated.
#[derive(Clone, Debug)]
pub struct PoolBlock {
    /// Its tag.
    pub tag: u32,
    /// Requested bytes.
    pub size: u64,
    /// Where `ExAllocatePool2` was called from (named in a leak report).
    pub site: u64,
}

/// A spin lock's holder.
#[derive(Clone, Copy, Debug)]
pub struct Holder {
    /// The thread that acquired it.
    pub thread: u32,
    /// Acquired with `KeAcquireSpinLockRaiseToDpc` (to be released with
    /// `KeReleaseSpinLock`), else with `KeAcquireSpinLockAtDpcLevel` (to be
    /// released with `KeReleaseSpinLockFromDpcLevel`).
    pub raised: bool,
}

/// A dispatcher object the model knows.
#[derive(Clone, Debug)]
pub enum Object {
    /// A `KEVENT`.
    Event {
        /// Synchronization (auto-reset) rather than notification.
        synchronization: bool,
        /// Signalled.
        signaled: bool,
    },
    /// A `KMUTEX`.
    Mutex {
        /// Owning thread and recursion count.
        owner: Option<(u32, u32)>,
    },
}

/// A `KTIMER`.
#[derive(Clone, Debug, Default)]
pub struct Timer {
    /// Queued, due at this virtual time.
    pub due: Option<i64>,
    /// DPC to queue on expiry.
    pub dpc: u64,
    /// Times it expired.
    pub expirations: u64,
}

/// A `KDPC`.
#[derive(Clone, Debug, Default)]
pub struct Dpc {
    /// Routine.
    pub routine: u64,
    /// `DeferredContext`.
    pub context: u64,
    /// In the DPC queue.
    pub queued: bool,
    /// Times it ran.
    pub runs: u64,
}

/// An `IO_WORKITEM`.
#[derive(Clone, Debug, Default)]
pub struct WorkItem {
    /// The device object it was allocated for.
    pub device: u64,
    /// Queued or running.
    pub busy: bool,
    /// Times it ran.
    pub runs: u64,
}

/// A common buffer handed out by the model's DMA adapter.
#[derive(Clone, Debug)]
pub struct CommonBuffer {
    /// Virtual address.
    pub va: u64,
    /// Length the driver asked for.
    pub len: u32,
    /// Logical address.
    pub logical: u64,
    /// The adapter.
    pub adapter: u64,
}

/// A DMA adapter the model granted.
#[derive(Clone, Debug)]
pub struct Adapter {
    /// The driver's `DEVICE_DESCRIPTION`, as read at `IoGetDmaAdapter`.
    pub description: Vec<u8>,
    /// Put back.
    pub put: bool,
}

/// The ntoskrnl model's state.
#[derive(Default)]
pub struct State {
    /// Live pool blocks.
    pub pool: BTreeMap<u64, PoolBlock>,
    /// Every pool allocation and free, by tag: (allocations, frees).
    pub pool_by_tag: BTreeMap<u32, (u64, u64)>,
    /// Held spin locks.
    pub spin_locks: BTreeMap<u64, Holder>,
    /// Dispatcher objects by address.
    pub objects: BTreeMap<u64, Object>,
    /// Timers by address.
    pub timers: BTreeMap<u64, Timer>,
    /// DPCs by address.
    pub dpcs: BTreeMap<u64, Dpc>,
    /// The DPC queue.
    pub dpc_queue: VecDeque<u64>,
    /// Work items by address.
    pub work_items: BTreeMap<u64, WorkItem>,
    /// The work queue: (item, routine, context).
    pub work_queue: VecDeque<(u64, u64, u64)>,
    /// Adapters granted.
    pub adapters: BTreeMap<u64, Adapter>,
    /// Live common buffers by virtual address.
    pub common_buffers: BTreeMap<u64, CommonBuffer>,
    /// Every common buffer ever allocated and freed: (va, len).
    pub common_buffer_log: Vec<(&'static str, u64, u32)>,
    /// Live contiguous blocks: virtual address → (bytes, physical).
    pub contiguous: BTreeMap<u64, (u64, u64)>,
    /// Every contiguous block allocated and freed: (what, va, bytes).
    pub contiguous_log: Vec<(&'static str, u64, u64)>,
    next_logical: u64,
    next_physical: u64,
    /// Lengths of every `memcpy`.
    pub memcpy: Vec<u64>,
    /// Lengths of every `memset`.
    pub memset: Vec<u64>,
    /// The bug check, if one happened.
    pub bugcheck: Option<[u64; 5]>,
}

impl State {
    /// How many spin locks `thread` holds.
    #[must_use]
    pub fn spin_locks_held_by(&self, thread: u32) -> usize {
        self.spin_locks
            .values()
            .filter(|h| h.thread == thread)
            .count()
    }
}

/// The hooks of ntoskrnl.exe's exports, by name.
#[must_use]
pub fn exports() -> Vec<(&'static str, machine::HookFn)> {
    vec![
        ("DbgPrint", dbg_print),
        ("ExAllocatePool2", ex_allocate_pool2),
        ("ExFreePoolWithTag", ex_free_pool_with_tag),
        ("IoAllocateWorkItem", io_allocate_work_item),
        ("IoFreeWorkItem", io_free_work_item),
        ("IoGetDmaAdapter", io_get_dma_adapter),
        ("IoQueueWorkItem", io_queue_work_item),
        (
            "KeAcquireSpinLockAtDpcLevel",
            ke_acquire_spin_lock_at_dpc_level,
        ),
        (
            "KeAcquireSpinLockRaiseToDpc",
            ke_acquire_spin_lock_raise_to_dpc,
        ),
        ("KeBugCheckEx", ke_bug_check_ex),
        ("KeCancelTimer", ke_cancel_timer),
        ("KeClearEvent", ke_clear_event),
        ("KeFlushQueuedDpcs", ke_flush_queued_dpcs),
        ("KeInitializeDpc", ke_initialize_dpc),
        ("KeInitializeEvent", ke_initialize_event),
        ("KeInitializeMutex", ke_initialize_mutex),
        ("KeInitializeTimerEx", ke_initialize_timer_ex),
        ("KeQueryPerformanceCounter", ke_query_performance_counter),
        ("KeReleaseMutex", ke_release_mutex),
        ("KeReleaseSpinLock", ke_release_spin_lock),
        (
            "KeReleaseSpinLockFromDpcLevel",
            ke_release_spin_lock_from_dpc_level,
        ),
        ("KeSetEvent", ke_set_event),
        ("KeSetTimer", ke_set_timer),
        ("KeWaitForSingleObject", ke_wait_for_single_object),
        (
            "MmAllocateContiguousNodeMemory",
            mm_allocate_contiguous_node_memory,
        ),
        ("MmFreeContiguousMemory", mm_free_contiguous_memory),
        ("MmGetPhysicalAddress", mm_get_physical_address),
        ("memcpy", memcpy),
        ("memset", memset),
    ]
}

// --- Debug output and bug checks ---------------------------------------------

fn dbg_print(uc: &mut Uc) -> R<u64> {
    let format = uc.cstr(arg(uc, 0)?)?;
    let mut out = String::new();
    let mut next = 1;
    let mut chars = format.chars().peekable();
    while let Some(c) = chars.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        let mut spec = String::new();
        while let Some(&d) = chars.peek() {
            chars.next();
            spec.push(d);
            if d.is_ascii_alphabetic() && d != 'l' && d != 'I' && d != 'h' {
                break;
            }
        }
        if spec == "%" {
            out.push('%');
            continue;
        }
        let value = arg(uc, next)?;
        next += 1;
        match spec.chars().last() {
            Some('s') => out.push_str(&uc.cstr(value)?),
            Some('d' | 'i') => out.push_str(&(value as i64 as i32).to_string()),
            Some('u') => out.push_str(&(value as u32).to_string()),
            Some('x' | 'X') => {
                let _ = write!(out, "{:x}", value as u32);
            }
            _ => {
                let _ = write!(out, "{value:#x}");
            }
        }
    }
    uc.get_data_mut().log.push(out);
    Ok(STATUS_SUCCESS)
}

fn ke_bug_check_ex(uc: &mut Uc) -> R<u64> {
    let mut code = [0u64; 5];
    for (i, c) in code.iter_mut().enumerate() {
        *c = arg(uc, i)?;
    }
    uc.get_data_mut().nt.bugcheck = Some(code);
    Err(Rule::BugCheck.broke(format!(
        "KeBugCheckEx({:#x}, {:#x}, {:#x}, {:#x}, {:#x}): the driver bug-checked the machine (a Rust panic ends here)",
        code[0], code[1], code[2], code[3], code[4]
    )))
}

// --- Pool --------------------------------------------------------------------

fn ex_allocate_pool2(uc: &mut Uc) -> R<u64> {
    let (flags, size, tag) = (arg(uc, 0)?, arg(uc, 1)?, arg(uc, 2)? as u32);
    if flags & POOL_FLAG_PAGED != 0 && uc.get_data().irql >= irql::DISPATCH {
        return Err(Rule::PagedPoolAtDispatch.broke("paged pool requested at DISPATCH_LEVEL"));
    }
    if flags & (POOL_FLAG_NON_PAGED | POOL_FLAG_PAGED) == 0 {
        return Err(Rule::BadArgument.broke(format!("pool flags {flags:#x} name no pool type")));
    }
    if tag == 0 {
        return Err(Rule::BadArgument.broke("pool tag 0"));
    }
    if machine::inject(uc, "ExAllocatePool2") {
        return Ok(0);
    }
    let address = alloc(uc, size, 16, Kind::Pool { tag })?;
    let caller = machine::return_address(uc);
    let nt = &mut uc.get_data_mut().nt;
    nt.pool.insert(
        address,
        PoolBlock {
            tag,
            size,
            site: caller,
        },
    );
    nt.pool_by_tag.entry(tag).or_default().0 += 1;
    Ok(address)
}

fn ex_free_pool_with_tag(uc: &mut Uc) -> R<u64> {
    let (address, tag) = (arg(uc, 0)?, arg(uc, 1)? as u32);
    let Some(block) = uc.get_data().nt.pool.get(&address).cloned() else {
        let k = uc.get_data();
        let freed_pool = k.memory.block_at(address).is_some_and(|b| {
            b.freed && b.address == address && matches!(b.kind, Kind::Pool { .. })
        });
        let rule = if freed_pool {
            Rule::PoolDoubleFree
        } else {
            Rule::PoolUnknownFree
        };
        return Err(rule.broke(format!(
            "ExFreePoolWithTag of {address:#x}, which is not a live pool block ({})",
            k.describe(address)
        )));
    };
    if block.tag != tag {
        return Err(Rule::PoolWrongTag.broke(format!(
            "block {address:#x} was allocated with tag {:?} and freed with tag {:?}",
            tag_str(block.tag),
            tag_str(tag)
        )));
    }
    if let Some((lock, _)) = uc
        .get_data()
        .nt
        .spin_locks
        .range(address..address + block.size.max(1))
        .next()
    {
        return Err(Rule::UseAfterFree.broke(format!(
            "pool block {address:#x} freed while the spin lock at {lock:#x} inside it is held"
        )));
    }
    let range = address..address + block.size.max(1);
    let nt = &uc.get_data().nt;
    if let Some((timer, _)) = nt
        .timers
        .range(range.clone())
        .find(|(_, t)| t.due.is_some())
    {
        return Err(Rule::TimerInFreedPool.broke(format!(
            "pool block {address:#x} freed while the timer at {timer:#x} inside it is queued (Driver Verifier: a timer in freed pool)"
        )));
    }
    if let Some((dpc, _)) = nt.dpcs.range(range.clone()).find(|(_, d)| d.queued) {
        return Err(Rule::DpcInFreedPool.broke(format!(
            "pool block {address:#x} freed while the DPC at {dpc:#x} inside it is queued"
        )));
    }
    machine::free(uc, address)?;
    let nt = &mut uc.get_data_mut().nt;
    nt.timers.retain(|a, _| !range.contains(a));
    nt.dpcs.retain(|a, _| !range.contains(a));
    nt.objects.retain(|a, _| !range.contains(a));
    nt.pool.remove(&address);
    nt.pool_by_tag.entry(tag).or_default().1 += 1;
    Ok(0)
}

// --- Spin locks ----------------------------------------------------------------

fn acquire(uc: &mut Uc, lock: u64, raised: bool) -> R<()> {
    let thread = uc.get_data().thread;
    if let Some(h) = uc.get_data().nt.spin_locks.get(&lock) {
        return Err(Rule::SpinLockRecursion.broke(format!(
            "spin lock {lock:#x} acquired while already held (by thread {}): a deadlock",
            h.thread
        )));
    }
    uc.get_data_mut()
        .nt
        .spin_locks
        .insert(lock, Holder { thread, raised });
    Ok(())
}

fn release(uc: &mut Uc, lock: u64, raised: bool) -> R<()> {
    let thread = uc.get_data().thread;
    match uc.get_data().nt.spin_locks.get(&lock) {
        None => {
            Err(Rule::SpinLockNotHeld.broke(format!("spin lock {lock:#x} released but not held")))
        }
        Some(h) if h.thread != thread => Err(Rule::SpinLockNotHeld.broke(format!(
            "spin lock {lock:#x} released by thread {thread} but held by thread {}",
            h.thread
        ))),
        Some(h) if h.raised != raised => Err(Rule::SpinLockVariant.broke(format!(
            "spin lock {lock:#x} acquired with {} but released with {}",
            if h.raised {
                "KeAcquireSpinLockRaiseToDpc"
            } else {
                "KeAcquireSpinLockAtDpcLevel"
            },
            if raised {
                "KeReleaseSpinLock"
            } else {
                "KeReleaseSpinLockFromDpcLevel"
            }
        ))),
        Some(_) => {
            uc.get_data_mut().nt.spin_locks.remove(&lock);
            Ok(())
        }
    }
}

fn ke_acquire_spin_lock_raise_to_dpc(uc: &mut Uc) -> R<u64> {
    let lock = arg(uc, 0)?;
    acquire(uc, lock, true)?;
    let k = uc.get_data_mut();
    let old = k.irql;
    k.irql = irql::DISPATCH;
    Ok(u64::from(old))
}

fn ke_release_spin_lock(uc: &mut Uc) -> R<u64> {
    let (lock, new_irql) = (arg(uc, 0)?, arg(uc, 1)? as u8);
    if new_irql > irql::DISPATCH {
        return Err(Rule::BadArgument.broke(format!("KeReleaseSpinLock to IRQL {new_irql}")));
    }
    release(uc, lock, true)?;
    uc.get_data_mut().irql = new_irql;
    Ok(0)
}

fn ke_acquire_spin_lock_at_dpc_level(uc: &mut Uc) -> R<u64> {
    let lock = arg(uc, 0)?;
    acquire(uc, lock, false)?;
    Ok(0)
}

fn ke_release_spin_lock_from_dpc_level(uc: &mut Uc) -> R<u64> {
    let lock = arg(uc, 0)?;
    release(uc, lock, false)?;
    Ok(0)
}

// --- Events and mutexes ----------------------------------------------------------

fn ke_initialize_event(uc: &mut Uc) -> R<u64> {
    let (event, kind, state) = (arg(uc, 0)?, arg(uc, 1)? as u32, arg(uc, 2)? as u8);
    let synchronization = match kind {
        0 => false,
        1 => true,
        other => return Err(Rule::BadArgument.broke(format!("event type {other}"))),
    };
    uc.get_data_mut().nt.objects.insert(
        event,
        Object::Event {
            synchronization,
            signaled: state != 0,
        },
    );
    Ok(0)
}

fn event_mut<'u>(uc: &'u mut Uc<'_>, event: u64) -> R<&'u mut bool> {
    match uc.get_data_mut().nt.objects.get_mut(&event) {
        Some(Object::Event { signaled, .. }) => Ok(signaled),
        _ => Err(Rule::BadArgument.broke(format!("{event:#x} is not an initialised event"))),
    }
}

fn ke_set_event(uc: &mut Uc) -> R<u64> {
    let event = arg(uc, 0)?;
    let signaled = event_mut(uc, event)?;
    let previous = *signaled;
    *signaled = true;
    Ok(u64::from(previous))
}

fn ke_clear_event(uc: &mut Uc) -> R<u64> {
    let event = arg(uc, 0)?;
    *event_mut(uc, event)? = false;
    Ok(0)
}

fn ke_initialize_mutex(uc: &mut Uc) -> R<u64> {
    let mutex = arg(uc, 0)?;
    uc.get_data_mut()
        .nt
        .objects
        .insert(mutex, Object::Mutex { owner: None });
    Ok(0)
}

fn ke_release_mutex(uc: &mut Uc) -> R<u64> {
    let mutex = arg(uc, 0)?;
    let thread = uc.get_data().thread;
    match uc.get_data_mut().nt.objects.get_mut(&mutex) {
        Some(Object::Mutex { owner }) => match *owner {
            Some((t, n)) if t == thread => {
                *owner = if n > 1 { Some((t, n - 1)) } else { None };
                Ok(0)
            }
            Some((t, _)) => Err(Rule::Mutex.broke(format!(
                "mutex {mutex:#x} released by thread {thread} but owned by thread {t}"
            ))),
            None => Err(Rule::Mutex.broke(format!("mutex {mutex:#x} released but not owned"))),
        },
        _ => Err(Rule::BadArgument.broke(format!("{mutex:#x} is not an initialised mutex"))),
    }
}

fn ke_wait_for_single_object(uc: &mut Uc) -> R<u64> {
    let (object, timeout) = (arg(uc, 0)?, arg(uc, 4)?);
    // A zero timeout only polls (allowed at DISPATCH_LEVEL); any other
    // wait may block.
    let poll = timeout != 0 && uc.r64(timeout)? == 0;
    need_at_most(uc, if poll { irql::DISPATCH } else { irql::APC })?;
    let thread = uc.get_data().thread;
    loop {
        let ready = match uc.get_data_mut().nt.objects.get_mut(&object) {
            Some(Object::Event {
                synchronization,
                signaled,
            }) => {
                let ready = *signaled;
                if ready && *synchronization {
                    *signaled = false;
                }
                ready
            }
            Some(Object::Mutex { owner }) => match *owner {
                None => {
                    *owner = Some((thread, 1));
                    true
                }
                Some((t, n)) if t == thread => {
                    *owner = Some((t, n + 1));
                    true
                }
                Some(_) => false,
            },
            None => {
                return Err(Rule::BadArgument.broke(format!(
                    "wait on {object:#x}, which is not an initialised object"
                )))
            }
        };
        if ready {
            return Ok(STATUS_SUCCESS);
        }
        if poll {
            return Ok(0x102); // STATUS_TIMEOUT
        }
        // Let the rest of the system run (DPCs, work items, KS workers);
        // if nothing can, nothing will ever signal the object.
        if !run_one(uc)? {
            return Err(Rule::Deadlock.broke(format!(
                "thread {thread} waits for {object:#x}, which nothing left to run can signal: a deadlock"
            )));
        }
    }
}

// --- Timers and DPCs ------------------------------------------------------------------

fn ke_initialize_timer_ex(uc: &mut Uc) -> R<u64> {
    let timer = arg(uc, 0)?;
    uc.get_data_mut().nt.timers.insert(timer, Timer::default());
    Ok(0)
}

fn ke_set_timer(uc: &mut Uc) -> R<u64> {
    let (timer, due, dpc) = (arg(uc, 0)?, arg(uc, 1)? as i64, arg(uc, 2)?);
    let now = uc.get_data().now;
    if dpc != 0 && !uc.get_data().nt.dpcs.contains_key(&dpc) {
        return Err(
            Rule::BadArgument.broke(format!("KeSetTimer with an uninitialised DPC {dpc:#x}"))
        );
    }
    let at = if due < 0 {
        now.saturating_sub(due)
    } else {
        due.max(now)
    };
    let t = uc.get_data_mut().nt.timers.get_mut(&timer).ok_or_else(|| {
        Rule::BadArgument.broke(format!("KeSetTimer on an uninitialised timer {timer:#x}"))
    })?;
    let was_queued = t.due.is_some();
    t.due = Some(at);
    t.dpc = dpc;
    Ok(u64::from(was_queued))
}

fn ke_cancel_timer(uc: &mut Uc) -> R<u64> {
    let timer = arg(uc, 0)?;
    let t = uc.get_data_mut().nt.timers.get_mut(&timer).ok_or_else(|| {
        Rule::BadArgument.broke(format!(
            "KeCancelTimer on an uninitialised timer {timer:#x}"
        ))
    })?;
    Ok(u64::from(t.due.take().is_some()))
}

fn ke_initialize_dpc(uc: &mut Uc) -> R<u64> {
    let (dpc, routine, context) = (arg(uc, 0)?, arg(uc, 1)?, arg(uc, 2)?);
    uc.get_data_mut().nt.dpcs.insert(
        dpc,
        Dpc {
            routine,
            context,
            ..Dpc::default()
        },
    );
    Ok(0)
}

fn ke_flush_queued_dpcs(uc: &mut Uc) -> R<u64> {
    while let Some(dpc) = uc.get_data_mut().nt.dpc_queue.pop_front() {
        run_dpc(uc, dpc)?;
    }
    Ok(0)
}

fn ke_query_performance_counter(uc: &mut Uc) -> R<u64> {
    let frequency = arg(uc, 0)?;
    if frequency != 0 {
        uc.w64(frequency, 10_000_000)?;
    }
    Ok(uc.get_data().now as u64)
}

// --- Work items -------------------------------------------------------------------------

fn io_allocate_work_item(uc: &mut Uc) -> R<u64> {
    let device = arg(uc, 0)?;
    if device == 0 {
        return Err(Rule::BadArgument.broke("IoAllocateWorkItem for a NULL device object"));
    }
    if machine::inject(uc, "IoAllocateWorkItem") {
        return Ok(0);
    }
    new_work_item(uc, device, "IO_WORKITEM")
}

/// A fresh, idle work item for `device`, in model memory named `what`.
pub fn new_work_item(uc: &mut Uc, device: u64, what: &'static str) -> R<u64> {
    let item = alloc(uc, 0x58, 16, Kind::Model(what))?;
    uc.get_data_mut().nt.work_items.insert(
        item,
        WorkItem {
            device,
            ..WorkItem::default()
        },
    );
    Ok(item)
}

fn io_queue_work_item(uc: &mut Uc) -> R<u64> {
    let (item, routine, queue, context) = (arg(uc, 0)?, arg(uc, 1)?, arg(uc, 2)?, arg(uc, 3)?);
    if queue > 2 {
        return Err(Rule::BadArgument.broke(format!("work queue type {queue}")));
    }
    let w = uc
        .get_data_mut()
        .nt
        .work_items
        .get_mut(&item)
        .ok_or_else(|| {
            Rule::BadArgument.broke(format!(
                "IoQueueWorkItem of {item:#x}, which is not a live work item"
            ))
        })?;
    if w.busy {
        return Err(Rule::WorkItemBusy.broke(format!(
            "work item {item:#x} queued while already queued or running"
        )));
    }
    w.busy = true;
    uc.get_data_mut()
        .nt
        .work_queue
        .push_back((item, routine, context));
    Ok(0)
}

fn io_free_work_item(uc: &mut Uc) -> R<u64> {
    let item = arg(uc, 0)?;
    match uc.get_data().nt.work_items.get(&item) {
        None => {
            return Err(Rule::BadArgument.broke(format!(
                "IoFreeWorkItem of {item:#x}, which is not a live work item"
            )))
        }
        Some(w) if w.busy => {
            return Err(Rule::WorkItemBusy
                .broke(format!("work item {item:#x} freed while queued or running")))
        }
        Some(_) => {}
    }
    uc.get_data_mut().nt.work_items.remove(&item);
    machine::free(uc, item)?;
    Ok(0)
}

// --- DMA ----------------------------------------------------------------------------------

fn io_get_dma_adapter(uc: &mut Uc) -> R<u64> {
    let (pdo, description, map_registers) = (arg(uc, 0)?, arg(uc, 1)?, arg(uc, 2)?);
    if pdo == 0 || pdo != uc.get_data().ks.pdo {
        return Err(Rule::BadArgument.broke(format!(
            "IoGetDmaAdapter for {pdo:#x}, which is not the device's PDO"
        )));
    }
    let bytes = uc.rbytes(
        description,
        crate::layout::size::<DeviceDescription>() as usize,
    )?;
    if !uc.get_data().config.dma_adapter || machine::inject(uc, "IoGetDmaAdapter") {
        return Ok(0);
    }
    let operations = alloc(
        uc,
        crate::layout::size::<DmaOperations>(),
        16,
        Kind::Model("DMA_OPERATIONS"),
    )?;
    let put = machine::add_hook(uc, "DMA_OPERATIONS.PutDmaAdapter", put_dma_adapter);
    let allocate = machine::add_hook(
        uc,
        "DMA_OPERATIONS.AllocateCommonBuffer",
        allocate_common_buffer,
    );
    let free = machine::add_hook(uc, "DMA_OPERATIONS.FreeCommonBuffer", free_common_buffer);
    uc.w32(operations + off!(DmaOperations, size), 128)?;
    uc.w64(operations + off!(DmaOperations, put_dma_adapter), put)?;
    uc.w64(
        operations + off!(DmaOperations, allocate_common_buffer),
        allocate,
    )?;
    uc.w64(operations + off!(DmaOperations, free_common_buffer), free)?;
    let adapter = alloc(
        uc,
        crate::layout::size::<DmaAdapter>(),
        16,
        Kind::Model("DMA_ADAPTER"),
    )?;
    uc.w16(adapter + off!(DmaAdapter, version), 1)?;
    uc.w16(adapter + off!(DmaAdapter, size), 16)?;
    uc.w64(adapter + off!(DmaAdapter, dma_operations), operations)?;
    if map_registers != 0 {
        uc.w32(map_registers, 16)?;
    }
    uc.get_data_mut().nt.adapters.insert(
        adapter,
        Adapter {
            description: bytes,
            put: false,
        },
    );
    Ok(adapter)
}

fn live_adapter(uc: &Uc, adapter: u64) -> R<()> {
    match uc.get_data().nt.adapters.get(&adapter) {
        Some(a) if !a.put => Ok(()),
        Some(_) => {
            Err(Rule::DmaAdapter.broke(format!("adapter {adapter:#x} used after PutDmaAdapter")))
        }
        None => Err(Rule::DmaAdapter.broke(format!("{adapter:#x} is not a DMA adapter"))),
    }
}

fn put_dma_adapter(uc: &mut Uc) -> R<u64> {
    let adapter = arg(uc, 0)?;
    live_adapter(uc, adapter)?;
    let outstanding = uc
        .get_data()
        .nt
        .common_buffers
        .values()
        .filter(|b| b.adapter == adapter)
        .count();
    if outstanding > 0 {
        return Err(Rule::DmaAdapter.broke(format!(
            "PutDmaAdapter with {outstanding} common buffer(s) of the adapter still allocated"
        )));
    }
    if let Some(a) = uc.get_data_mut().nt.adapters.get_mut(&adapter) {
        a.put = true;
    }
    Ok(0)
}

fn allocate_common_buffer(uc: &mut Uc) -> R<u64> {
    let (adapter, length, logical, _cached) =
        (arg(uc, 0)?, arg(uc, 1)? as u32, arg(uc, 2)?, arg(uc, 3)?);
    live_adapter(uc, adapter)?;
    if length == 0 || logical == 0 {
        return Err(Rule::BadArgument
            .broke("AllocateCommonBuffer of 0 bytes or without a logical-address pointer"));
    }
    if machine::inject(uc, "AllocateCommonBuffer") {
        return Ok(0);
    }
    let va = alloc(uc, u64::from(length), machine::PAGE, Kind::CommonBuffer)?;
    let nt = &mut uc.get_data_mut().nt;
    let logical_address = LOGICAL_BASE + nt.next_logical;
    nt.next_logical += u64::from(length).div_ceil(machine::PAGE) * machine::PAGE + machine::PAGE;
    nt.common_buffers.insert(
        va,
        CommonBuffer {
            va,
            len: length,
            logical: logical_address,
            adapter,
        },
    );
    nt.common_buffer_log.push(("allocate", va, length));
    uc.w64(logical, logical_address)?;
    Ok(va)
}

fn free_common_buffer(uc: &mut Uc) -> R<u64> {
    let (adapter, length, logical, va) =
        (arg(uc, 0)?, arg(uc, 1)? as u32, arg(uc, 2)?, arg(uc, 3)?);
    live_adapter(uc, adapter)?;
    let Some(b) = uc.get_data().nt.common_buffers.get(&va).cloned() else {
        return Err(Rule::CommonBufferMismatch.broke(format!(
            "FreeCommonBuffer of {va:#x}, which is not a live common buffer"
        )));
    };
    if b.len != length || b.logical != logical || b.adapter != adapter {
        return Err(Rule::CommonBufferMismatch.broke(format!(
            "FreeCommonBuffer({va:#x}, {length} bytes, logical {logical:#x}) of a buffer allocated as {} bytes at logical {:#x}",
            b.len, b.logical
        )));
    }
    machine::free(uc, va)?;
    let nt = &mut uc.get_data_mut().nt;
    nt.common_buffers.remove(&va);
    nt.common_buffer_log.push(("free", va, length));
    Ok(0)
}

fn mm_allocate_contiguous_node_memory(uc: &mut Uc) -> R<u64> {
    let (bytes, low, high, boundary, protect) = (
        arg(uc, 0)?,
        arg(uc, 1)?,
        arg(uc, 2)?,
        arg(uc, 3)?,
        arg(uc, 4)?,
    );
    if protect & 0xFF != PAGE_READWRITE {
        return Err(Rule::BadArgument.broke(format!(
            "contiguous memory with protection {protect:#x}, not PAGE_READWRITE"
        )));
    }
    if bytes == 0 || low > high || boundary != 0 && boundary < bytes {
        return Err(Rule::BadArgument.broke(format!(
            "MmAllocateContiguousNodeMemory({bytes}, {low:#x}, {high:#x}, {boundary:#x})"
        )));
    }
    if machine::inject(uc, "MmAllocateContiguousNodeMemory") {
        return Ok(0);
    }
    let va = alloc(uc, bytes, machine::PAGE, Kind::Contiguous)?;
    let nt = &mut uc.get_data_mut().nt;
    let physical = PHYSICAL_BASE + nt.next_physical;
    nt.next_physical += bytes.div_ceil(machine::PAGE) * machine::PAGE;
    nt.contiguous.insert(va, (bytes, physical));
    nt.contiguous_log.push(("allocate", va, bytes));
    Ok(va)
}

fn mm_free_contiguous_memory(uc: &mut Uc) -> R<u64> {
    let va = arg(uc, 0)?;
    let Some((bytes, _)) = uc.get_data().nt.contiguous.get(&va).copied() else {
        return Err(Rule::CommonBufferMismatch.broke(format!(
            "MmFreeContiguousMemory of {va:#x}, which is not a live contiguous block"
        )));
    };
    machine::free(uc, va)?;
    let nt = &mut uc.get_data_mut().nt;
    nt.contiguous.remove(&va);
    nt.contiguous_log.push(("free", va, bytes));
    Ok(0)
}

fn mm_get_physical_address(uc: &mut Uc) -> R<u64> {
    let va = arg(uc, 0)?;
    let found = uc
        .get_data()
        .nt
        .contiguous
        .range(..=va)
        .next_back()
        .filter(|(start, (bytes, _))| va < **start + *bytes)
        .map(|(start, (_, physical))| physical + (va - start));
    found.ok_or_else(|| {
        Rule::BadArgument.broke(format!(
            "MmGetPhysicalAddress of {va:#x}, outside every contiguous block"
        ))
    })
}

// --- memcpy / memset ----------------------------------------------------------------------

fn memcpy(uc: &mut Uc) -> R<u64> {
    let (dst, src, len) = (arg(uc, 0)?, arg(uc, 1)?, arg(uc, 2)?);
    if len > 0 {
        let bytes = uc.rbytes(src, len as usize)?;
        let (lo, hi) = (src.min(dst), src.max(dst));
        if hi < lo + len {
            return Err(Rule::BadArgument.broke(format!(
                "memcpy of {len} bytes between overlapping {src:#x} and {dst:#x}"
            )));
        }
        uc.wbytes(dst, &bytes)?;
    }
    uc.get_data_mut().nt.memcpy.push(len);
    Ok(dst)
}

fn memset(uc: &mut Uc) -> R<u64> {
    let (dst, value, len) = (arg(uc, 0)?, arg(uc, 1)? as u8, arg(uc, 2)?);
    if len > 0 {
        uc.wbytes(dst, &vec![value; len as usize])?;
    }
    uc.get_data_mut().nt.memset.push(len);
    Ok(dst)
}

// --- The scheduler --------------------------------------------------------------------------

fn run_dpc(uc: &mut Uc, dpc: u64) -> R<()> {
    let (routine, context) = {
        let d = uc.get_data_mut().nt.dpcs.get_mut(&dpc).ok_or_else(|| {
            Rule::BadArgument.broke(format!("queued DPC {dpc:#x} is not initialised"))
        })?;
        d.queued = false;
        d.runs += 1;
        (d.routine, d.context)
    };
    let thread = uc.get_data().thread;
    let now = uc.get_data().now as u64;
    crate::cost::measure(uc, crate::cost::Cost::Dpc, |uc| {
        call(
            uc,
            routine,
            &[dpc, context, now, now >> 32],
            irql::DISPATCH,
            thread,
        )
    })?;
    Ok(())
}

fn run_work_item(uc: &mut Uc, item: u64, routine: u64, context: u64) -> R<()> {
    let device = uc
        .get_data()
        .nt
        .work_items
        .get(&item)
        .map(|w| w.device)
        .ok_or_else(|| Rule::WorkItemBusy.broke(format!("queued work item {item:#x} was freed")))?;
    let thread = uc.get_data_mut().new_thread();
    crate::cost::measure(uc, crate::cost::Cost::WorkItem, |uc| {
        call(uc, routine, &[device, context], irql::PASSIVE, thread)
    })?;
    if let Some(w) = uc.get_data_mut().nt.work_items.get_mut(&item) {
        w.busy = false;
        w.runs += 1;
    }
    Ok(())
}

/// Runs one thing that is ready: a queued DPC, else a queued work item,
/// else a pin's pending processing. Only from PASSIVE_LEVEL. Returns
/// whether something ran.
pub fn run_one(uc: &mut Uc) -> R<bool> {
    if uc.get_data().irql != irql::PASSIVE {
        return Ok(false);
    }
    if let Some(dpc) = uc.get_data_mut().nt.dpc_queue.pop_front() {
        run_dpc(uc, dpc)?;
        return Ok(true);
    }
    if let Some((item, routine, context)) = uc.get_data_mut().nt.work_queue.pop_front() {
        run_work_item(uc, item, routine, context)?;
        return Ok(true);
    }
    ks::run_processing(uc)
}

/// What other processors do while the driver runs at PASSIVE_LEVEL, for
/// three timer periods: each time the earliest queued timer falls due
/// (virtual time moves to its due time), every queued DPC runs at
/// DISPATCH_LEVEL, then every queued work item at PASSIVE_LEVEL, each on a
/// thread of its own. Three periods are enough for every frame in flight
/// (two staging slots) to complete while the interrupted code waits.
/// Returns whether a DPC ran.
pub fn preempt_with_dpc(uc: &mut Uc) -> R<bool> {
    let saved = uc.get_data().thread;
    let mut ran = false;
    for _ in 0..3 {
        let next = next_timer(uc);
        if let Some((due, timer)) = next {
            expire(uc, timer, due);
        }
        let other = uc.get_data_mut().new_thread();
        while let Some(dpc) = uc.get_data_mut().nt.dpc_queue.pop_front() {
            uc.get_data_mut().thread = other;
            let r = run_dpc(uc, dpc);
            uc.get_data_mut().thread = saved;
            r?;
            ran = true;
        }
        while let Some((item, routine, context)) = uc.get_data_mut().nt.work_queue.pop_front() {
            run_work_item(uc, item, routine, context)?;
        }
    }
    Ok(ran)
}

/// The earliest queued timer: (due time, timer).
fn next_timer(uc: &Uc) -> Option<(i64, u64)> {
    uc.get_data()
        .nt
        .timers
        .iter()
        .filter_map(|(a, t)| t.due.map(|d| (d, *a)))
        .min()
}

/// A timer expires at `due`: virtual time moves there, its DPC is queued.
fn expire(uc: &mut Uc, timer: u64, due: i64) {
    let k = uc.get_data_mut();
    k.now = k.now.max(due);
    let Some(t) = k.nt.timers.get_mut(&timer) else {
        return;
    };
    t.due = None;
    t.expirations += 1;
    let dpc = t.dpc;
    if let Some(d) = k.nt.dpcs.get_mut(&dpc) {
        if !d.queued {
            d.queued = true;
            k.nt.dpc_queue.push_back(dpc);
        }
    }
}

/// Runs everything ready now.
pub fn run_ready(uc: &mut Uc) -> R<()> {
    let mut budget = 1_000_000;
    while run_one(uc)? {
        budget -= 1;
        if budget == 0 {
            return Err(Rule::BadArgument
                .broke("a million scheduler steps without virtual time passing: a livelock"));
        }
    }
    Ok(())
}

/// Lets virtual time pass up to `until`: every timer that falls due
/// expires in order (its DPC queued and run), and everything ready runs
/// after each expiry.
pub fn advance_to(uc: &mut Uc, until: i64) -> R<()> {
    run_ready(uc)?;
    loop {
        let next = next_timer(uc);
        match next {
            Some((due, timer)) if due <= until => {
                expire(uc, timer, due);
                run_ready(uc)?;
            }
            _ => break,
        }
    }
    let k = uc.get_data_mut();
    k.now = k.now.max(until);
    run_ready(uc)?;
    match ks::stalled_pins(uc).into_iter().next() {
        Some(stall) => Err(stall),
        None => Ok(()),
    }
}
