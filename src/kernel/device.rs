//! The AVStream device: PnP dispatch (Add, Start, Stop, Remove,
//! `SurpriseRemoval`) and the filter factory.
//!
//! The device holds no frame memory: Start only acquires the DMA adapter;
//! each allocator instance and each stream takes common buffers of its own
//! when it needs them and gives them back when it ends. Allocators deleted
//! while their frames are still out are parked and freed at PnP stop or
//! remove, before the adapter goes back (`DeviceContext::release_resources`).
//!
//! All device callbacks run at PASSIVE_LEVEL (AVStream calls them from PnP
//! IRP dispatch or its own worker).

use wdk_sys::{NTSTATUS, STATUS_INSUFFICIENT_RESOURCES, STATUS_SUCCESS};

use super::bindings::KSDEVICE_DISPATCH;
use super::boundary::{device_dispatch, DeviceDispatch, KsDevice, KsTable, PoolBox};
use super::device_context::DeviceContext;
use super::filter::FILTER_DESCRIPTOR;
use crate::portable::filter_identity::{
    filter_reference_string_utf16, FILTER_REFERENCE_STRING_UTF16_LEN,
};

/// The device dispatch table (brief §4.2).
pub static DEVICE_DISPATCH: KsTable<KSDEVICE_DISPATCH> =
    KsTable(device_dispatch::<DeviceContext>());

/// The filter factory's reference string (the core's, as NUL-terminated
/// UTF-16); the INF's `AddInterface` lines use the same.
static REFERENCE_STRING: [u16; FILTER_REFERENCE_STRING_UTF16_LEN] = filter_reference_string_utf16();

impl DeviceDispatch for DeviceContext {
    /// `AVStrMiniDeviceAdd`: creates the device context.
    fn add(device: &KsDevice<'_>) -> NTSTATUS {
        let Some(context) = Self::try_new().and_then(PoolBox::try_new) else {
            return STATUS_INSUFFICIENT_RESOURCES;
        };
        match device.install_context(context) {
            Ok(()) => STATUS_SUCCESS,
            Err(status) => status,
        }
    }

    /// `AVStrMiniDeviceStart`: acquires the DMA adapter (no frame memory)
    /// and creates the filter factory.
    fn start(device: &KsDevice<'_>) -> NTSTATUS {
        if device.is_started() {
            return STATUS_SUCCESS; // PnP may send a second start; nothing to redo
        }
        let Some(context) = device.context::<Self>() else {
            return STATUS_INSUFFICIENT_RESOURCES;
        };
        context.dma.start(device);
        match device.create_filter_factory(&FILTER_DESCRIPTOR, &REFERENCE_STRING) {
            Ok(()) => STATUS_SUCCESS,
            Err(status) => {
                context.dma.stop();
                status
            }
        }
    }

    /// `AVStrMiniDeviceStop`: PnP stop.
    fn stop(device: &KsDevice<'_>) {
        if let Some(context) = device.context::<Self>() {
            context.release_resources();
        }
    }

    /// `AVStrMiniDeviceRemove`: the last handle is closed (pins and
    /// allocators included); whatever a stop left is released.
    fn remove(device: &KsDevice<'_>) {
        if let Some(context) = device.context::<Self>() {
            context.release_resources();
        }
    }

    /// `AVStrMiniDeviceSurpriseRemoval`: the hardware is gone. A running
    /// stream stops now (its frames complete empty) and none may start
    /// again; handles close later, and Remove follows them.
    fn surprise_removal(device: &KsDevice<'_>) {
        if let Some(context) = device.context::<Self>() {
            context.surprise_removed();
        }
    }
}
