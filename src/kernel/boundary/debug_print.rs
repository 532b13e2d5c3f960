//! The driver's debug output.

use wdk_sys::ntddk::DbgPrint;

/// A debug print (seen in `WinDbg` or `DebugView`).
///
/// IRQL: any (`DbgPrint` with a plain string).
pub fn debug_print(message: &core::ffi::CStr) {
    // SAFETY: the format is a NUL-terminated literal with one `%s`, matched
    // by one NUL-terminated string argument, so DbgPrint reads nothing else.
    unsafe { DbgPrint(c"%s".as_ptr(), message.as_ptr()) };
}
