//! `DriverEntry`: hands the driver object to AVStream.
//!
//! AVStream (ks.sys) owns the driver object from here on: `KsInitializeDriver`
//! fills in the IRP dispatch table, `AddDevice` and `DriverUnload` itself, so
//! nothing here may set them afterwards. Everything the driver does later
//! happens through the dispatch tables of [`DEVICE_DESCRIPTOR`].

use wdk_sys::{DRIVER_OBJECT, NTSTATUS, PCUNICODE_STRING};

use super::bindings::{KsInitializeDriver, KSDEVICE_DESCRIPTOR};
use super::boundary::{zeroed, KsTable};
use super::device::DEVICE_DISPATCH;

/// The device descriptor given to `KsInitializeDriver`: the dispatch table
/// above, no static filter descriptors (the filter factory is created at
/// Plug and Play start, as in avshws), version 0.
///
/// Built field by field from an all-zero value so that the code does not
/// depend on members a header version may append (the current WDK appends
/// `Flags`, read only when `Version` is `KSDEVICE_DESCRIPTOR_VERSION_2`).
static DEVICE_DESCRIPTOR: KsTable<KSDEVICE_DESCRIPTOR> = KsTable({
    let mut descriptor: KSDEVICE_DESCRIPTOR = zeroed();
    descriptor.Dispatch = &raw const DEVICE_DISPATCH.0;
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
