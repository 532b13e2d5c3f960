//! Static KS tables (descriptors, dispatch tables, data ranges) and the
//! all-zero starting value they are built from.

use super::super::bindings::{
    KSALLOCATOR_FRAMING_EX, KSDATAFORMAT, KSDEVICE_DESCRIPTOR, KSFILTER_DESCRIPTOR,
    KSPIN_DESCRIPTOR_EX, KSPROPERTY_ITEM, KS_BITMAPINFOHEADER, KS_DATARANGE_VIDEO,
    KS_VIDEOINFOHEADER, KS_VIDEO_STREAM_CONFIG_CAPS,
};

/// A descriptor or dispatch table that ks.sys reads for as long as the
/// driver is loaded.
///
/// KS tables hold raw pointers to each other, and raw pointers are not
/// `Sync`, so a plain `static` of such a table does not compile. This wrapper
/// is `Sync` because the tables are immutable: they are built at compile time
/// and neither the driver nor ks.sys ever writes to them (ks.sys takes them
/// as pointers to `const`; per-instance changes go through `_KsEdit`, which
/// copies first: [`super::KsPin::edit_allocator_framing`]).
#[repr(transparent)]
pub struct KsTable<T>(pub(crate) T);

// SAFETY: `Sync` means `&KsTable<T>` may be used from several threads at
// once. Through a shared reference the wrapped `T` can only be read, and
// `T: Copy` rules out interior mutability (`UnsafeCell`, hence `Cell`,
// atomics and locks, is not `Copy`), so concurrent users can only perform
// concurrent reads, which do not race. The raw pointers inside are just
// values here; dereferencing one is `unsafe` and is justified where it
// happens (ks.sys only reads these tables).
unsafe impl<T: Copy> Sync for KsTable<T> {}

/// A C type for which all-zero bytes are a valid value.
///
/// # Safety
/// Every field of the type is an integer, a GUID, a raw pointer, an
/// `Option` of a function pointer, or another `Zeroable` type, arrays and
/// unions of such: all-zero bytes are a valid value of each (0, null,
/// `None`).
pub unsafe trait Zeroable: Copy {}

// SAFETY (all of the impls below): KS structures of integers, GUIDs, RECTs,
// SIZEs, raw pointers and optional callbacks, checked against the headers by
// the layout assertions in bindings.rs; all-zero is the value C code gets
// from `RtlZeroMemory` and means "none" for every member.
// SAFETY: see above.
unsafe impl Zeroable for KSDEVICE_DESCRIPTOR {}
// SAFETY: see above.
unsafe impl Zeroable for KSFILTER_DESCRIPTOR {}
// SAFETY: see above.
unsafe impl Zeroable for KSPIN_DESCRIPTOR_EX {}
// SAFETY: see above.
unsafe impl Zeroable for KSPROPERTY_ITEM {}
// SAFETY: see above.
unsafe impl Zeroable for KSALLOCATOR_FRAMING_EX {}
// SAFETY: see above.
unsafe impl Zeroable for KSDATAFORMAT {}
// SAFETY: see above.
unsafe impl Zeroable for KS_VIDEOINFOHEADER {}
// SAFETY: see above.
unsafe impl Zeroable for KS_BITMAPINFOHEADER {}
// SAFETY: see above.
unsafe impl Zeroable for KS_DATARANGE_VIDEO {}
// SAFETY: see above.
unsafe impl Zeroable for KS_VIDEO_STREAM_CONFIG_CAPS {}
// SAFETY: an array of zeroable values is zeroable.
unsafe impl<T: Zeroable, const N: usize> Zeroable for [T; N] {}

/// The all-zero value of a C type: the starting point of every static
/// table, so that members a header version may append stay zero.
///
/// IRQL: any (usable in `const` context).
#[must_use]
pub const fn zeroed<T: Zeroable>() -> T {
    // SAFETY: `T: Zeroable` promises that all-zero bytes are a valid `T`.
    unsafe { core::mem::zeroed() }
}
