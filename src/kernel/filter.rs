//! The capture filter: one output pin, registered under the capture, video
//! and video-camera categories (the INF adds one interface per category,
//! reference string "GLOBAL", friendly name "avscap Source").
//!
//! The filter is pin-centric (no filter Process), so its dispatch table is
//! empty: every callback that does work is the pin's.

use wdk_sys::GUID;

use super::bindings::{
    KSFILTER_DESCRIPTOR, KSFILTER_DISPATCH, KSNODE_DESCRIPTOR, KSPIN_DESCRIPTOR_EX,
};
use super::boundary::{zeroed, KsTable};
use super::capture_pin::CAPTURE_PIN_DESCRIPTOR;
use super::ks_format::{to_guid, ulong_size_of};
use crate::portable::filter_identity::FILTER_CATEGORIES;
use crate::portable::guid::KSNAME_FILTER;

/// `KSFILTER_DESCRIPTOR_VERSION`, `((ULONG)-1)` in ks.h (a cast bindgen
/// does not evaluate, so it is not among the generated constants).
const KSFILTER_DESCRIPTOR_VERSION: u32 = u32::MAX;

static FILTER_DISPATCH: KSFILTER_DISPATCH = KSFILTER_DISPATCH {
    Create: None,
    Close: None,
    Process: None,
    Reset: None,
};

/// The filter's categories, in the order AVStream registers interfaces.
static CATEGORIES: [GUID; 3] = [
    to_guid(FILTER_CATEGORIES[0]),
    to_guid(FILTER_CATEGORIES[1]),
    to_guid(FILTER_CATEGORIES[2]),
];

static REFERENCE_GUID: GUID = to_guid(KSNAME_FILTER);

/// The pins: one capture pin.
static PIN_DESCRIPTORS: KsTable<[KSPIN_DESCRIPTOR_EX; 1]> = KsTable([CAPTURE_PIN_DESCRIPTOR.0]);

/// The filter descriptor handed to `KsCreateFilterFactory` at device start.
pub static FILTER_DESCRIPTOR: KsTable<KSFILTER_DESCRIPTOR> = KsTable({
    // No nodes, no connections, no component id.
    let mut d: KSFILTER_DESCRIPTOR = zeroed();
    d.Dispatch = &raw const FILTER_DISPATCH;
    d.AutomationTable = core::ptr::null();
    d.Version = KSFILTER_DESCRIPTOR_VERSION;
    d.Flags = 0;
    d.ReferenceGuid = &raw const REFERENCE_GUID;
    d.PinDescriptorsCount = 1;
    d.PinDescriptorSize = ulong_size_of::<KSPIN_DESCRIPTOR_EX>();
    d.PinDescriptors = PIN_DESCRIPTORS.0.as_ptr();
    #[expect(clippy::cast_possible_truncation, reason = "three categories")]
    {
        d.CategoriesCount = FILTER_CATEGORIES.len() as u32;
    }
    d.Categories = CATEGORIES.as_ptr();
    d.NodeDescriptorsCount = 0;
    d.NodeDescriptorSize = ulong_size_of::<KSNODE_DESCRIPTOR>();
    d
});
