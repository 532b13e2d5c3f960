//! The performance counter (QPC), the timeline frames are stamped on.

use core::ptr::null_mut;

use wdk_sys::ntddk::KeQueryPerformanceCounter;
use wdk_sys::LARGE_INTEGER;

/// The performance counter now, and its frequency (counts per second).
///
/// IRQL: any.
pub fn performance_counter() -> (i64, i64) {
    let mut frequency = LARGE_INTEGER { QuadPart: 0 };
    // SAFETY: KeQueryPerformanceCounter may be called at any IRQL; the out
    // pointer is a local.
    let counter = unsafe { KeQueryPerformanceCounter(&raw mut frequency) };
    // SAFETY: LARGE_INTEGER's QuadPart covers all 8 bytes, all initialised.
    let counter = unsafe { counter.QuadPart };
    // SAFETY: as above.
    let frequency = unsafe { frequency.QuadPart };
    (counter, frequency)
}

/// The performance counter now.
///
/// IRQL: any.
pub fn performance_count() -> i64 {
    // SAFETY: KeQueryPerformanceCounter may be called at any IRQL; no
    // frequency is asked for.
    let counter = unsafe { KeQueryPerformanceCounter(null_mut()) };
    // SAFETY: LARGE_INTEGER's QuadPart covers all 8 bytes, all initialised.
    unsafe { counter.QuadPart }
}
