//! `DriverEntry`: hands the driver object to AVStream.
//!
//! AVStream (ks.sys) owns the driver object from here on: `KsInitializeDriver`
//! fills in the IRP dispatch table, `AddDevice` and `DriverUnload` itself, so
//! nothing here may set them afterwards. Everything the driver does later
//! happens through the dispatch tables of [`DEVICE_DESCRIPTOR`].

use wdk_sys::{DRIVER_OBJECT, NTSTATUS, PCUNICODE_STRING};

use super::bindings::{KsInitializeDriver, KSDEVICE_DESCRIPTOR};
use super::device::DEVICE_DISPATCH;

/// A descriptor or dispatch table that ks.sys reads for as long as the
/// driver is loaded.
///
/// KS tables hold raw pointers to each other, and raw pointers are not
/// `Sync`, so a plain `static` of such a table does not compile. This wrapper
/// is `Sync` because the tables are immutable: they are built at compile time
/// and neither the driver nor ks.sys ever writes to them (ks.sys takes them
/// as pointers to `const`; per-instance changes go through `_KsEdit`, which
/// copies first).
#[repr(transparent)]
pub(crate) struct KsTable<T>(pub(crate) T);

// SAFETY: `Sync` means `&KsTable<T>` may be used from several threads at
// once. Through a shared reference the wrapped `T` can only be read, and
// `T: Copy` rules out interior mutability (`UnsafeCell`, hence `Cell`,
// atomics and locks, is not `Copy`), so concurrent users can only perform
// concurrent reads, which do not race. The raw pointers inside are just
// values here; dereferencing one is `unsafe` and is justified where it
// happens (ks.sys only reads these tables).
unsafe impl<T: Copy> Sync for KsTable<T> {}

/// The device descriptor given to `KsInitializeDriver`: the dispatch table
/// above, no static filter descriptors (the filter factory is created at
/// Plug and Play start, as in avshws), version 0.
///
/// Built field by field from an all-zero value so that the code does not
/// depend on members a header version may append (the current WDK appends
/// `Flags`, read only when `Version` is `KSDEVICE_DESCRIPTOR_VERSION_2`).
static DEVICE_DESCRIPTOR: KsTable<KSDEVICE_DESCRIPTOR> = KsTable({
    // SAFETY: KSDEVICE_DESCRIPTOR is a C struct of pointers and integers, for
    // all of which all-zero bytes are a valid value (null, 0).
    let mut descriptor: KSDEVICE_DESCRIPTOR = unsafe { core::mem::zeroed() };
    descriptor.Dispatch = &raw const DEVICE_DISPATCH;
    descriptor.FilterDescriptorsCount = 0;
    descriptor.FilterDescriptors = core::ptr::null();
    descriptor.Version = 0;
    descriptor
});

/// The driver's entry point, called once by the I/O manager when the driver
/// is loaded.
///
/// IRQL: PASSIVE_LEVEL (as for every `DriverEntry`; `KsInitializeDriver`
/// requires PASSIVE_LEVEL too).
///
/// Returns `KsInitializeDriver`'s status: on failure the I/O manager unloads
/// the driver without calling any of its other routines.
#[unsafe(export_name = "DriverEntry")]
extern "system" fn driver_entry(
    driver: &mut DRIVER_OBJECT,
    registry_path: PCUNICODE_STRING,
) -> NTSTATUS {
    // SAFETY: `driver` is the driver object the I/O manager created for this
    // load and passes exclusively to DriverEntry, so a unique pointer to it
    // is valid for the call; `registry_path` is the I/O manager's own
    // counted string for the driver's service key, valid during DriverEntry
    // (KsInitializeDriver copies what it keeps). `DEVICE_DESCRIPTOR` and the
    // dispatch table it points to are immutable statics, so they outlive
    // every use ks.sys makes of them. We are at PASSIVE_LEVEL, as
    // KsInitializeDriver requires.
    //
    // `cast_mut`: mingw-w64's prototype takes `PUNICODE_STRING`, the WDK's
    // `PCUNICODE_STRING`; a `*mut` argument is accepted by both, and ks.sys
    // only reads the string.
    unsafe {
        KsInitializeDriver(
            driver,
            registry_path.cast_mut(),
            &raw const DEVICE_DESCRIPTOR.0,
        )
    }
}
