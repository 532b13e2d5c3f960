//! Verifier-style rules: what Driver Verifier and the DDI compliance rules
//! would catch on Windows, checked by the kernel model on every call and,
//! at the end of every test, on the state the driver leaves behind.
//!
//! Every violation is reported as `[rule-name] what happened`, followed by
//! where: the import a hook stands for and the driver's call site
//! (`… called from <function>+0x…`), the faulting instruction, or the
//! routine that returned in the wrong state. [`Rule::ALL`] lists the rules;
//! each has a test that breaks it on purpose (tests/rules.rs).
//!
//! The per-import IRQL table ([`irql_limit`]) is taken from the
//! Requirements section of each routine's DDI reference page. It is
//! checked in one place, before the hook runs, so that a hook cannot forget
//! it; hooks only add the checks that depend on their arguments (paged
//! pool, a zero-timeout wait).

use crate::machine::irql;

/// A rule the driver must not break.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Rule {
    /// A pool block still allocated when the driver is unloaded.
    PoolLeak,
    /// `ExFreePoolWithTag` of an address that was never a pool block.
    PoolUnknownFree,
    /// `ExFreePoolWithTag` of a block already freed.
    PoolDoubleFree,
    /// A block freed with another tag than it was allocated with.
    PoolWrongTag,
    /// Paged pool requested at DISPATCH_LEVEL.
    PagedPoolAtDispatch,
    /// A read or write of freed memory (pool, common buffer, KS object).
    UseAfterFree,
    /// A read or write past the end (or before the start) of a block.
    OutOfBounds,
    /// Any other access to unmapped or protected memory (NULL, a write to
    /// read-only data, a jump to data).
    InvalidAccess,
    /// A routine called above the maximum IRQL its DDI page documents.
    IrqlTooHigh,
    /// A driver routine returned at another IRQL than it was called at.
    IrqlNotRestored,
    /// A driver routine returned holding a spin lock it acquired.
    SpinLockHeldOnReturn,
    /// A spin lock acquired while already held (a deadlock on Windows).
    SpinLockRecursion,
    /// A spin lock released that is not held, or by another thread.
    SpinLockNotHeld,
    /// A spin lock released with the other variant than it was acquired
    /// with (`KeReleaseSpinLock` after `KeAcquireSpinLockAtDpcLevel`, or
    /// `KeReleaseSpinLockFromDpcLevel` after
    /// `KeAcquireSpinLockRaiseToDpc`).
    SpinLockVariant,
    /// A spin lock still held when the test ends.
    SpinLockLeak,
    /// Pool holding a queued timer freed (Verifier: "timer in freed pool").
    TimerInFreedPool,
    /// Pool holding a queued DPC freed.
    DpcInFreedPool,
    /// A timer or DPC still queued when the driver is unloaded.
    TimerLeak,
    /// A work item queued while already queued, or freed while queued.
    WorkItemBusy,
    /// A work item still allocated when the driver is unloaded.
    WorkItemLeak,
    /// A wait that nothing left in the system can satisfy.
    Deadlock,
    /// A stream-pointer clone deleted twice.
    CloneDoubleDelete,
    /// A stream-pointer clone used after it was deleted.
    CloneUseAfterDelete,
    /// A clone still alive when the test ends (or when AVStream flushes
    /// the queue at STOP).
    CloneLeak,
    /// The leading edge unlocked while not locked.
    LeadingEdgeDoubleUnlock,
    /// The leading edge advanced or unlocked while unlocked.
    LeadingEdgeUnlocked,
    /// A frame completed twice.
    FrameCompletedTwice,
    /// A frame completed with `DataUsed` beyond its `FrameExtent`.
    FrameOverfilled,
    /// `FreeCommonBuffer` with another length, logical address or adapter
    /// than the buffer was allocated with, or of no common buffer.
    CommonBufferMismatch,
    /// A common buffer (or contiguous block) not freed at unload.
    CommonBufferLeak,
    /// A DMA adapter not put back at unload, put back with buffers
    /// outstanding, or used after it was put back.
    DmaAdapter,
    /// Process returned `STATUS_PENDING` with frames waiting and nothing
    /// left in the system (no timer, DPC or work item) to restart it.
    ProcessStalled,
    /// Process returned `STATUS_SUCCESS` without moving the leading edge
    /// (AVStream would call it again forever).
    ProcessNoProgress,
    /// A mutex misused: an object bag edited without its object's mutex,
    /// a KMUTEX, the device mutex or a pin's processing mutex released by
    /// a thread that does not own it.
    Mutex,
    /// A reference on the master clock leaked, or the clock used after its
    /// last reference was released.
    ClockReference,
    /// The driver bug-checked the machine (a Rust panic ends there).
    BugCheck,
    /// A call the model refuses for its arguments (a NULL where an object
    /// is required, an object of the wrong kind).
    BadArgument,
}

impl Rule {
    /// Every rule.
    pub const ALL: [Rule; 37] = [
        Rule::PoolLeak,
        Rule::PoolUnknownFree,
        Rule::PoolDoubleFree,
        Rule::PoolWrongTag,
        Rule::PagedPoolAtDispatch,
        Rule::UseAfterFree,
        Rule::OutOfBounds,
        Rule::InvalidAccess,
        Rule::IrqlTooHigh,
        Rule::IrqlNotRestored,
        Rule::SpinLockHeldOnReturn,
        Rule::SpinLockRecursion,
        Rule::SpinLockNotHeld,
        Rule::SpinLockVariant,
        Rule::SpinLockLeak,
        Rule::TimerInFreedPool,
        Rule::DpcInFreedPool,
        Rule::TimerLeak,
        Rule::WorkItemBusy,
        Rule::WorkItemLeak,
        Rule::Deadlock,
        Rule::CloneDoubleDelete,
        Rule::CloneUseAfterDelete,
        Rule::CloneLeak,
        Rule::LeadingEdgeDoubleUnlock,
        Rule::LeadingEdgeUnlocked,
        Rule::FrameCompletedTwice,
        Rule::FrameOverfilled,
        Rule::CommonBufferMismatch,
        Rule::CommonBufferLeak,
        Rule::DmaAdapter,
        Rule::ProcessStalled,
        Rule::ProcessNoProgress,
        Rule::Mutex,
        Rule::ClockReference,
        Rule::BugCheck,
        Rule::BadArgument,
    ];

    /// The rule's name, as it appears in brackets in a failure.
    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            Rule::PoolLeak => "pool-leak",
            Rule::PoolUnknownFree => "pool-free-unknown",
            Rule::PoolDoubleFree => "pool-double-free",
            Rule::PoolWrongTag => "pool-wrong-tag",
            Rule::PagedPoolAtDispatch => "paged-pool-at-dispatch",
            Rule::UseAfterFree => "use-after-free",
            Rule::OutOfBounds => "out-of-bounds",
            Rule::InvalidAccess => "invalid-access",
            Rule::IrqlTooHigh => "irql-too-high",
            Rule::IrqlNotRestored => "irql-not-restored",
            Rule::SpinLockHeldOnReturn => "spinlock-held-on-return",
            Rule::SpinLockRecursion => "spinlock-recursion",
            Rule::SpinLockNotHeld => "spinlock-not-held",
            Rule::SpinLockVariant => "spinlock-variant",
            Rule::SpinLockLeak => "spinlock-leak",
            Rule::TimerInFreedPool => "timer-in-freed-pool",
            Rule::DpcInFreedPool => "dpc-in-freed-pool",
            Rule::TimerLeak => "timer-leak",
            Rule::WorkItemBusy => "work-item-busy",
            Rule::WorkItemLeak => "work-item-leak",
            Rule::Deadlock => "deadlock",
            Rule::CloneDoubleDelete => "clone-double-delete",
            Rule::CloneUseAfterDelete => "clone-use-after-delete",
            Rule::CloneLeak => "clone-leak",
            Rule::LeadingEdgeDoubleUnlock => "leading-edge-double-unlock",
            Rule::LeadingEdgeUnlocked => "leading-edge-unlocked",
            Rule::FrameCompletedTwice => "frame-completed-twice",
            Rule::FrameOverfilled => "frame-overfilled",
            Rule::CommonBufferMismatch => "common-buffer-mismatch",
            Rule::CommonBufferLeak => "common-buffer-leak",
            Rule::DmaAdapter => "dma-adapter",
            Rule::ProcessStalled => "process-stalled",
            Rule::ProcessNoProgress => "process-no-progress",
            Rule::Mutex => "mutex-misuse",
            Rule::ClockReference => "clock-reference",
            Rule::BugCheck => "bug-check",
            Rule::BadArgument => "bad-argument",
        }
    }

    /// The failure text: `[name] message`.
    #[must_use]
    pub fn broke(self, message: impl std::fmt::Display) -> String {
        format!("[{}] {message}", self.name())
    }
}

/// The IRQL a routine may be called at.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Limit {
    /// Any IRQL.
    Any,
    /// At this level or below.
    AtMost(u8),
    /// Exactly this level.
    Exactly(u8),
}

impl Limit {
    /// Checks `now` against the limit: the failure names the rule.
    pub fn check(self, now: u8) -> Result<(), String> {
        match self {
            Limit::AtMost(level) if now > level => Err(Rule::IrqlTooHigh.broke(format!(
                "called at IRQL {now}; the routine requires IRQL <= {level}"
            ))),
            Limit::Exactly(level) if now != level => Err(Rule::IrqlTooHigh.broke(format!(
                "called at IRQL {now}; the routine requires IRQL {level}"
            ))),
            _ => Ok(()),
        }
    }
}

/// The documented IRQL of every import and callback the driver calls, by
/// routine name, from the Requirements section of its DDI page.
pub const IRQL_TABLE: &[(&str, Limit)] = {
    use irql::{APC, DISPATCH, PASSIVE};
    use Limit::{Any, AtMost, Exactly};
    &[
        // ntoskrnl.exe
        ("DbgPrint", Any),
        ("ExAllocatePool2", AtMost(DISPATCH)), // paged pool: the hook holds it to APC
        ("ExFreePoolWithTag", AtMost(DISPATCH)),
        ("IoAllocateWorkItem", AtMost(DISPATCH)),
        ("IoFreeWorkItem", AtMost(DISPATCH)),
        ("IoGetDmaAdapter", Exactly(PASSIVE)),
        ("IoQueueWorkItem", AtMost(DISPATCH)),
        ("KeAcquireSpinLockAtDpcLevel", Exactly(DISPATCH)),
        ("KeAcquireSpinLockRaiseToDpc", AtMost(DISPATCH)),
        ("KeBugCheckEx", Any),
        ("KeCancelTimer", AtMost(DISPATCH)),
        ("KeClearEvent", AtMost(DISPATCH)),
        ("KeFlushQueuedDpcs", Exactly(PASSIVE)),
        ("KeInitializeDpc", Any),
        ("KeInitializeEvent", Any),
        ("KeInitializeMutex", Any),
        ("KeInitializeTimerEx", AtMost(DISPATCH)),
        ("KeQueryPerformanceCounter", Any),
        ("KeReleaseMutex", AtMost(DISPATCH)),
        ("KeReleaseSpinLock", Exactly(DISPATCH)),
        ("KeReleaseSpinLockFromDpcLevel", Exactly(DISPATCH)),
        ("KeSetEvent", AtMost(DISPATCH)),
        ("KeSetTimer", AtMost(DISPATCH)),
        // A zero-timeout wait may run at DISPATCH_LEVEL; the hook holds any
        // other wait to APC_LEVEL.
        ("KeWaitForSingleObject", AtMost(DISPATCH)),
        ("MmAllocateContiguousNodeMemory", AtMost(DISPATCH)),
        ("MmFreeContiguousMemory", Exactly(PASSIVE)),
        ("MmGetPhysicalAddress", AtMost(DISPATCH)),
        ("memcpy", Any),
        ("memset", Any),
        // DMA_OPERATIONS of the adapter.
        ("AllocateCommonBuffer", Exactly(PASSIVE)),
        ("FreeCommonBuffer", Exactly(PASSIVE)),
        ("PutDmaAdapter", AtMost(DISPATCH)),
        // ks.sys: creation, bags, mutexes and the clock at PASSIVE_LEVEL;
        // stream pointers and processing control up to DISPATCH_LEVEL.
        ("KsAcquireDevice", Exactly(PASSIVE)),
        ("KsAddItemToObjectBag", Exactly(PASSIVE)),
        ("KsCreateFilterFactory", Exactly(PASSIVE)),
        ("KsGetDevice", AtMost(DISPATCH)),
        ("KsGetPinFromIrp", AtMost(DISPATCH)),
        ("KsInitializeDriver", Exactly(PASSIVE)),
        ("KsPinAcquireProcessingMutex", Exactly(PASSIVE)),
        ("KsPinAttemptProcessing", AtMost(DISPATCH)),
        ("KsPinGetLeadingEdgeStreamPointer", AtMost(DISPATCH)),
        ("KsPinGetReferenceClockInterface", Exactly(PASSIVE)),
        ("KsPinReleaseProcessingMutex", Exactly(PASSIVE)),
        ("KsReleaseDevice", Exactly(PASSIVE)),
        ("KsStreamPointerAdvance", AtMost(DISPATCH)),
        ("KsStreamPointerAdvanceOffsets", AtMost(DISPATCH)),
        ("KsStreamPointerClone", AtMost(DISPATCH)),
        ("KsStreamPointerDelete", AtMost(DISPATCH)),
        ("KsStreamPointerSetStatusCode", AtMost(DISPATCH)),
        ("KsStreamPointerUnlock", AtMost(DISPATCH)),
        ("_KsEdit", Exactly(PASSIVE)),
        // IKsReferenceClock.
        ("AddRef", Any),
        ("Release", Any),
        ("GetTime", AtMost(DISPATCH)),
        ("GetPhysicalTime", AtMost(DISPATCH)),
        ("QueryInterface", AtMost(APC)),
    ]
};

/// The documented IRQL of an import or callback the driver calls, by the
/// hook's name (`ntoskrnl.exe!…`, `ks.sys!…`, `DMA_OPERATIONS.…`,
/// `IKsReferenceClock.…`). `None` for a name the table does not know
/// (model-internal stubs).
#[must_use]
pub fn irql_limit(hook: &str) -> Option<Limit> {
    let routine = hook.rsplit(['!', '.']).next().unwrap_or(hook);
    IRQL_TABLE
        .iter()
        .find(|(name, _)| *name == routine)
        .map(|(_, limit)| *limit)
}
