//! The AVStream device (`KSDEVICE`): its dispatch trampolines, a borrowed
//! handle for the callbacks, its typed context, and references to that
//! context held by the device's children.

use core::marker::PhantomData;
use core::ops::Deref;
use core::ptr::{null_mut, NonNull};

use wdk_sys::{NTSTATUS, PCM_RESOURCE_LIST, PDEVICE_OBJECT, PIRP, PVOID, STATUS_INVALID_PARAMETER};

use super::super::bindings::{
    KsAcquireDevice, KsAddItemToObjectBag, KsCreateFilterFactory, KsReleaseDevice,
    KSCREATE_ITEM_FREEONSTOP, KSDEVICE, KSDEVICE_DISPATCH, KSFILTER_DESCRIPTOR, PKSDEVICE,
};
use super::nt_result;
use super::pool_box::PoolBox;
use super::static_table::KsTable;

/// The one type the driver keeps in `KSDEVICE.Context`.
///
/// # Safety
/// Exactly one type of the driver implements this trait: every device's
/// `Context` is then null or that type, installed by
/// [`KsDevice::install_context`], which is what lets [`KsDevice::context`]
/// and [`super::KsPin::device_context`] read it back as that type.
pub unsafe trait DeviceContextType: Send + Sync + Sized + 'static {}

/// The device callbacks the driver implements (on its context type); the
/// trampolines of [`device_dispatch`] call them.
///
/// IRQL: all PASSIVE_LEVEL (AVStream calls them from PnP IRP dispatch or
/// its own worker).
pub trait DeviceDispatch: DeviceContextType {
    /// `AVStrMiniDeviceAdd`: make the context and install it.
    fn add(device: &KsDevice<'_>) -> NTSTATUS;
    /// `AVStrMiniDeviceStart`. Never `STATUS_PENDING`.
    fn start(device: &KsDevice<'_>) -> NTSTATUS;
    /// `AVStrMiniDeviceStop`.
    fn stop(device: &KsDevice<'_>);
    /// `AVStrMiniDeviceRemove`.
    fn remove(device: &KsDevice<'_>);
    /// `AVStrMiniDeviceSurpriseRemoval`.
    fn surprise_removal(device: &KsDevice<'_>);
}

/// The device dispatch table of `D` (brief §4.2): Add, Start, Stop, Remove
/// and `SurpriseRemoval`; the rest is AVStream's default.
pub const fn device_dispatch<D: DeviceDispatch>() -> KSDEVICE_DISPATCH {
    KSDEVICE_DISPATCH {
        Add: Some(add::<D>),
        Start: Some(start::<D>),
        PostStart: None,
        QueryStop: None,
        CancelStop: None,
        Stop: Some(stop::<D>),
        QueryRemove: None,
        CancelRemove: None,
        Remove: Some(remove::<D>),
        QueryCapabilities: None,
        SurpriseRemoval: Some(surprise_removal::<D>),
        QueryPower: None,
        SetPower: None,
        QueryInterface: None,
    }
}

/// A device of this driver, borrowed for one device callback.
///
/// Invariant: `raw` is a live `KSDEVICE` of this driver for `'a`, and the
/// code holding the handle runs at PASSIVE_LEVEL.
pub struct KsDevice<'a> {
    raw: NonNull<KSDEVICE>,
    _callback: PhantomData<&'a KSDEVICE>,
}

impl KsDevice<'_> {
    /// The handle for a device callback.
    ///
    /// # Safety
    /// `device` is null or the live device AVStream passed to a callback at
    /// PASSIVE_LEVEL, which the handle does not outlive.
    pub(super) unsafe fn from_raw(device: PKSDEVICE) -> Option<Self> {
        NonNull::new(device).map(|raw| Self {
            raw,
            _callback: PhantomData,
        })
    }

    /// Whether the device has started (PnP may send a second start).
    ///
    /// IRQL: PASSIVE_LEVEL.
    pub(crate) fn is_started(&self) -> bool {
        // SAFETY: a live device (type invariant); a plain read.
        unsafe { (*self.raw.as_ptr()).Started != 0 }
    }

    /// The device's context, once [`Self::install_context`] has run.
    ///
    /// IRQL: any.
    pub(crate) fn context<D: DeviceContextType>(&self) -> Option<&D> {
        // SAFETY: a live device (type invariant).
        let context = unsafe { (*self.raw.as_ptr()).Context };
        // SAFETY: Context is null or the `D` `install_context` set
        // (`DeviceContextType`'s contract), which the device's bag owns
        // until the device goes, after this callback.
        unsafe { context.cast::<D>().as_ref() }
    }

    /// Installs the device's context: the device's object bag owns it from
    /// here on (AVStream frees it with the device) and `Context` points at
    /// it.
    ///
    /// IRQL: PASSIVE_LEVEL (device Add).
    ///
    /// # Errors
    /// `KsAddItemToObjectBag`'s failure; the context is freed then.
    pub(crate) fn install_context<D: DeviceContextType>(
        &self,
        context: PoolBox<D>,
    ) -> Result<(), NTSTATUS> {
        let device = self.raw.as_ptr();
        let raw = context.into_raw();
        // SAFETY: a live device.
        let bag = unsafe { (*device).Bag };
        let status = self.with_device_mutex(|| {
            // SAFETY: the bag is edited under the device mutex, as
            // KsAddItemToObjectBag requires; on success the bag owns `raw`
            // and frees it once with `free_bagged::<D>`, made for exactly
            // this pointer type.
            unsafe { KsAddItemToObjectBag(bag, raw.cast(), Some(free_bagged::<D>)) }
        });
        if status < 0 {
            // SAFETY: the bag did not take the pointer; we still own it.
            drop(unsafe { PoolBox::from_raw(raw) });
            return Err(status);
        }
        // SAFETY: a live device; Context is the minidriver's to set from
        // Add on, and nothing reads it concurrently during Add.
        unsafe { (*device).Context = raw.cast() };
        Ok(())
    }

    /// The device's physical device object (for its DMA adapter).
    ///
    /// IRQL: any.
    pub(super) fn physical_device_object(&self) -> PDEVICE_OBJECT {
        // SAFETY: a live device (type invariant).
        unsafe { (*self.raw.as_ptr()).PhysicalDeviceObject }
    }

    /// Creates a filter factory for `descriptor` under the device mutex,
    /// its interfaces registered with `reference_string` (NUL-terminated
    /// UTF-16); the factory is freed at PnP stop.
    ///
    /// IRQL: PASSIVE_LEVEL.
    ///
    /// # Errors
    /// `KsCreateFilterFactory`'s status; `STATUS_INVALID_PARAMETER` for a
    /// reference string without a terminating NUL.
    pub(crate) fn create_filter_factory(
        &self,
        descriptor: &'static KsTable<KSFILTER_DESCRIPTOR>,
        reference_string: &'static [u16],
    ) -> Result<(), NTSTATUS> {
        if reference_string.last() != Some(&0) {
            return Err(STATUS_INVALID_PARAMETER);
        }
        // SAFETY: a live device.
        let fdo = unsafe { (*self.raw.as_ptr()).FunctionalDeviceObject };
        nt_result(self.with_device_mutex(|| {
            // SAFETY: the FDO of a live device, at PASSIVE_LEVEL, under the
            // device mutex. The descriptor is an immutable static. The
            // reference string is a NUL-terminated UTF-16 static that ks.sys
            // only reads (the parameter is `PWSTR` only for historical
            // reasons).
            unsafe {
                KsCreateFilterFactory(
                    fdo,
                    &raw const descriptor.0,
                    reference_string.as_ptr().cast_mut(),
                    null_mut(),
                    KSCREATE_ITEM_FREEONSTOP,
                    None,
                    None,
                    null_mut(),
                )
            }
        }))
    }

    /// Runs `f` holding the device mutex (`KsAcquireDevice` /
    /// `KsReleaseDevice`).
    ///
    /// IRQL: PASSIVE_LEVEL.
    fn with_device_mutex<R>(&self, f: impl FnOnce() -> R) -> R {
        // SAFETY: a live device at PASSIVE_LEVEL (type invariant).
        unsafe { KsAcquireDevice(self.raw.as_ptr()) };
        let result = f();
        // SAFETY: taken just above, by this thread.
        unsafe { KsReleaseDevice(self.raw.as_ptr()) };
        result
    }
}

/// A reference to (a part of) a device's context, held by the device's
/// children: pin and allocator contexts.
///
/// Invariant: points into the context of a live device. A device's context
/// lives until AVStream empties its bag at removal, after every pin and
/// allocator of the device is gone; `DeviceRef`s are made only from a pin
/// of the device ([`super::KsPin::device_context`]) and kept only in the
/// contexts of its pins and allocators, which are freed first.
pub struct DeviceRef<T>(NonNull<T>);

impl<T> Clone for DeviceRef<T> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<T> Copy for DeviceRef<T> {}

// SAFETY: a DeviceRef gives only `&T`; sending or sharing it is sharing
// `&T`, which needs `T: Sync`.
unsafe impl<T: Sync> Send for DeviceRef<T> {}
// SAFETY: as above.
unsafe impl<T: Sync> Sync for DeviceRef<T> {}

impl<T> DeviceRef<T> {
    /// A reference into the device context of a live device.
    ///
    /// # Safety
    /// `context` is (a part of) the context of a live device, and the value
    /// is kept only as the type invariant says.
    pub(super) const unsafe fn new(context: &T) -> Self {
        Self(NonNull::from_ref(context))
    }

    /// A reference to a part of the same context (a field of it).
    ///
    /// IRQL: any.
    pub(crate) fn project<U>(self, part: impl FnOnce(&T) -> &U) -> DeviceRef<U> {
        DeviceRef(NonNull::from_ref(part(self.get())))
    }

    /// The referenced context, for as long as `self` is borrowed.
    ///
    /// IRQL: any.
    const fn get(&self) -> &T {
        // SAFETY: the device context outlives every holder (type invariant).
        unsafe { self.0.as_ref() }
    }
}

impl<T> Deref for DeviceRef<T> {
    type Target = T;
    fn deref(&self) -> &T {
        self.get()
    }
}

/// Frees a device context when AVStream empties the device's object bag.
///
/// IRQL: PASSIVE_LEVEL (object-bag cleanup at device removal).
unsafe extern "C" fn free_bagged<D>(context: PVOID) {
    // SAFETY: `context` is the pointer `install_context` bagged, made by
    // PoolBox::into_raw for a `D` and owned by the bag alone; the bag frees
    // it once.
    drop(unsafe { PoolBox::from_raw(context.cast::<D>()) });
}

/// `AVStrMiniDeviceAdd`. IRQL: PASSIVE_LEVEL.
unsafe extern "C" fn add<D: DeviceDispatch>(device: PKSDEVICE) -> NTSTATUS {
    // SAFETY: AVStream passes a live device of this driver at PASSIVE_LEVEL.
    let Some(device) = (unsafe { KsDevice::from_raw(device) }) else {
        return STATUS_INVALID_PARAMETER;
    };
    D::add(&device)
}

/// `AVStrMiniDeviceStart`. IRQL: PASSIVE_LEVEL.
unsafe extern "C" fn start<D: DeviceDispatch>(
    device: PKSDEVICE,
    _irp: PIRP,
    _translated: PCM_RESOURCE_LIST,
    _untranslated: PCM_RESOURCE_LIST,
) -> NTSTATUS {
    // SAFETY: as in `add`.
    let Some(device) = (unsafe { KsDevice::from_raw(device) }) else {
        return STATUS_INVALID_PARAMETER;
    };
    D::start(&device)
}

/// `AVStrMiniDeviceStop`. IRQL: PASSIVE_LEVEL.
unsafe extern "C" fn stop<D: DeviceDispatch>(device: PKSDEVICE, _irp: PIRP) {
    // SAFETY: as in `add`.
    if let Some(device) = unsafe { KsDevice::from_raw(device) } {
        D::stop(&device);
    }
}

/// `AVStrMiniDeviceRemove`. IRQL: PASSIVE_LEVEL.
unsafe extern "C" fn remove<D: DeviceDispatch>(device: PKSDEVICE, _irp: PIRP) {
    // SAFETY: as in `add`.
    if let Some(device) = unsafe { KsDevice::from_raw(device) } {
        D::remove(&device);
    }
}

/// `AVStrMiniDeviceSurpriseRemoval`. IRQL: PASSIVE_LEVEL.
unsafe extern "C" fn surprise_removal<D: DeviceDispatch>(device: PKSDEVICE, _irp: PIRP) {
    // SAFETY: as in `add`.
    if let Some(device) = unsafe { KsDevice::from_raw(device) } {
        D::surprise_removal(&device);
    }
}
