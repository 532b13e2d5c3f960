//! The x64 layouts of the KS and kernel structures the model reads and
//! writes in emulated memory, as `#[repr(C)]` mirrors (pointers are `u64`,
//! `ULONG` is `u32`, enums and `LONG` are `i32`, `BOOLEAN` is `u8`).
//!
//! The model never copies these structs whole; it reads and writes single
//! fields at the offsets `offset_of!` gives (the [`off!`](crate::off) macro). The sizes
//! and offsets are asserted against the brief's Appendix A in this module's
//! tests, so a wrong mirror fails here, and a mirror that disagrees with the
//! driver's real headers makes the driver misbehave in the session tests.

#![allow(missing_docs)] // field names are the C names, documented in ks.h

/// Offset of a field of a mirror struct, as an emulated-address delta.
#[macro_export]
macro_rules! off {
    ($t:ty, $($f:tt).+) => {
        ::core::mem::offset_of!($t, $($f).+) as u64
    };
}

/// Size of a mirror struct, in bytes.
#[must_use]
pub const fn size<T>() -> u64 {
    core::mem::size_of::<T>() as u64
}

#[repr(C)]
#[derive(Clone, Copy, Default, Debug, PartialEq, Eq)]
pub struct Guid {
    pub data1: u32,
    pub data2: u16,
    pub data3: u16,
    pub data4: [u8; 8],
}

/// `KSIDENTIFIER` (= `KSPROPERTY`, `KSPIN_INTERFACE`, `KSPIN_MEDIUM`):
/// a union with a `LONGLONG`, hence 8-aligned.
#[repr(C, align(8))]
#[derive(Clone, Copy, Default)]
pub struct KsIdentifier {
    pub set: Guid,
    pub id: u32,
    pub flags: u32,
}

#[repr(C)]
pub struct KsPriority {
    pub priority_class: u32,
    pub priority_sub_class: u32,
}

#[repr(C)]
pub struct KsDevice {
    pub descriptor: u64,
    pub bag: u64,
    pub context: u64,
    pub functional_device_object: u64,
    pub physical_device_object: u64,
    pub next_device_object: u64,
    pub started: u8,
    pub system_power_state: i32,
    pub device_power_state: i32,
}

#[repr(C)]
pub struct KsFilter {
    pub descriptor: u64,
    pub bag: u64,
    pub context: u64,
}

#[repr(C)]
pub struct KsPin {
    pub descriptor: u64,
    pub bag: u64,
    pub context: u64,
    pub id: u32,
    pub communication: i32,
    pub connection_is_external: u8,
    pub connection_interface: KsIdentifier,
    pub connection_medium: KsIdentifier,
    pub connection_priority: KsPriority,
    pub connection_format: u64,
    pub attribute_list: u64,
    pub stream_header_size: u32,
    pub data_flow: i32,
    pub device_state: i32,
    pub reset_state: i32,
    pub client_state: i32,
}

#[repr(C)]
pub struct KsStreamPointerOffset {
    pub data: u64,
    pub count: u32,
    pub remaining: u32,
}

#[repr(C)]
pub struct KsStreamPointer {
    pub context: u64,
    pub pin: u64,
    pub stream_header: u64,
    pub offset: u64,
    pub offset_in: KsStreamPointerOffset,
    pub offset_out: KsStreamPointerOffset,
}

#[repr(C)]
pub struct KsTime {
    pub time: i64,
    pub numerator: u32,
    pub denominator: u32,
}

#[repr(C)]
pub struct KsStreamHeader {
    pub size: u32,
    pub type_specific_flags: u32,
    pub presentation_time: KsTime,
    pub duration: i64,
    pub frame_extent: u32,
    pub data_used: u32,
    pub data: u64,
    pub options_flags: u32,
    pub reserved: u32,
}

#[repr(C)]
pub struct KsFrameInfo {
    pub extended_header_size: u32,
    pub frame_flags: u32,
    pub picture_number: i64,
    pub drop_count: i64,
    pub h_direct_draw: u64,
    pub h_surface_handle: u64,
    pub direct_draw_rect: [i32; 4],
    /// `lSurfacePitch` in the WDK's ksmedia.h.
    pub reserved1: u32,
    pub reserved2: u32,
    pub reserved3: u32,
    pub reserved4: u32,
}

#[repr(C)]
pub struct KsAllocatorFraming {
    pub options_flags: u32,
    pub pool_type: i32,
    pub frames: u32,
    pub frame_size: u32,
    pub file_alignment: u32,
    pub reserved: u32,
}

#[repr(C)]
pub struct KsFramingRange {
    pub min_frame_size: u32,
    pub max_frame_size: u32,
    pub stepping: u32,
}

#[repr(C)]
pub struct KsFramingRangeWeighted {
    pub range: KsFramingRange,
    pub in_place_weight: u32,
    pub not_in_place_weight: u32,
}

#[repr(C)]
pub struct KsCompression {
    pub ratio_numerator: u32,
    pub ratio_denominator: u32,
    pub ratio_constant_margin: u32,
}

#[repr(C)]
pub struct KsFramingItem {
    pub memory_type: Guid,
    pub bus_type: Guid,
    pub memory_flags: u32,
    pub bus_flags: u32,
    pub flags: u32,
    pub frames: u32,
    pub file_alignment: u32,
    pub memory_type_weight: u32,
    pub physical_range: KsFramingRange,
    pub framing_range: KsFramingRangeWeighted,
}

#[repr(C)]
pub struct KsAllocatorFramingEx {
    pub count_items: u32,
    pub pin_flags: u32,
    pub output_compression: KsCompression,
    pub pin_weight: u32,
    pub framing_item: [KsFramingItem; 1],
}

/// `KSSTREAMALLOCATOR_STATUS`.
#[repr(C)]
pub struct KsStreamAllocatorStatus {
    pub framing: KsAllocatorFraming,
    pub allocated_frames: u32,
    pub reserved: u32,
}

/// `KSSTREAMALLOCATOR_FUNCTIONTABLE`.
#[repr(C)]
pub struct KsStreamAllocatorFunctionTable {
    pub allocate_frame: u64,
    pub free_frame: u64,
}

#[repr(C)]
pub struct KsAllocatorDispatch {
    pub initialize_allocator: u64,
    pub delete_allocator: u64,
    pub allocate: u64,
    pub free: u64,
}

#[repr(C)]
pub struct KsPinDescriptor {
    pub interfaces_count: u32,
    pub interfaces: u64,
    pub mediums_count: u32,
    pub mediums: u64,
    pub data_ranges_count: u32,
    pub data_ranges: u64,
    pub data_flow: i32,
    pub communication: i32,
    pub category: u64,
    pub name: u64,
    pub constrained_data_ranges_count: u32,
    pub constrained_data_ranges: u64,
}

#[repr(C)]
pub struct KsPinDescriptorEx {
    pub dispatch: u64,
    pub automation_table: u64,
    pub pin_descriptor: KsPinDescriptor,
    pub flags: u32,
    pub instances_possible: u32,
    pub instances_necessary: u32,
    pub allocator_framing: u64,
    pub intersect_handler: u64,
}

#[repr(C)]
pub struct KsPinDispatch {
    pub create: u64,
    pub close: u64,
    pub process: u64,
    pub reset: u64,
    pub set_data_format: u64,
    pub set_device_state: u64,
    pub connect: u64,
    pub disconnect: u64,
    pub clock: u64,
    pub allocator: u64,
}

#[repr(C)]
pub struct KsFilterDispatch {
    pub create: u64,
    pub close: u64,
    pub process: u64,
    pub reset: u64,
}

#[repr(C)]
pub struct KsFilterDescriptor {
    pub dispatch: u64,
    pub automation_table: u64,
    pub version: u32,
    pub flags: u32,
    pub reference_guid: u64,
    pub pin_descriptors_count: u32,
    pub pin_descriptor_size: u32,
    pub pin_descriptors: u64,
    pub categories_count: u32,
    pub categories: u64,
    pub node_descriptors_count: u32,
    pub node_descriptor_size: u32,
    pub node_descriptors: u64,
    pub connections_count: u32,
    pub connections: u64,
    pub component_id: u64,
}

#[repr(C)]
pub struct KsDeviceDescriptor {
    pub dispatch: u64,
    pub filter_descriptors_count: u32,
    pub filter_descriptors: u64,
    pub version: u32,
    pub flags: u32,
}

#[repr(C)]
pub struct KsDeviceDispatch {
    pub add: u64,
    pub start: u64,
    pub post_start: u64,
    pub query_stop: u64,
    pub cancel_stop: u64,
    pub stop: u64,
    pub query_remove: u64,
    pub cancel_remove: u64,
    pub remove: u64,
    pub query_capabilities: u64,
    pub surprise_removal: u64,
    pub query_power: u64,
    pub set_power: u64,
    pub query_interface: u64,
}

#[repr(C)]
pub struct KsAutomationTable {
    pub property_sets_count: u32,
    pub property_item_size: u32,
    pub property_sets: u64,
    pub method_sets_count: u32,
    pub method_item_size: u32,
    pub method_sets: u64,
    pub event_sets_count: u32,
    pub event_item_size: u32,
    pub event_sets: u64,
}

#[repr(C)]
pub struct KsPropertySet {
    pub set: u64,
    pub properties_count: u32,
    pub property_item: u64,
    pub fast_io_count: u32,
    pub fast_io_table: u64,
}

#[repr(C)]
pub struct KsPropertyItem {
    pub property_id: u32,
    pub get_property_handler: u64,
    pub min_property: u32,
    pub min_data: u32,
    pub set_property_handler: u64,
    pub values: u64,
    pub relations_count: u32,
    pub relations: u64,
    pub support_handler: u64,
    pub serialized_size: u32,
}

/// `KSPROPERTY_DROPPEDFRAMES_CURRENT_S`.
#[repr(C)]
pub struct KsDroppedFrames {
    pub property: KsIdentifier,
    pub picture_number: i64,
    pub drop_count: i64,
    pub average_frame_size: u32,
}

#[repr(C, align(8))]
pub struct KsDataFormat {
    pub format_size: u32,
    pub flags: u32,
    pub sample_size: u32,
    pub reserved: u32,
    pub major_format: Guid,
    pub sub_format: Guid,
    pub specifier: Guid,
}

#[repr(C)]
pub struct KsBitmapInfoHeader {
    pub bi_size: u32,
    pub bi_width: i32,
    pub bi_height: i32,
    pub bi_planes: u16,
    pub bi_bit_count: u16,
    pub bi_compression: u32,
    pub bi_size_image: u32,
    pub bi_x_pels_per_meter: i32,
    pub bi_y_pels_per_meter: i32,
    pub bi_clr_used: u32,
    pub bi_clr_important: u32,
}

#[repr(C)]
pub struct Rect {
    pub left: i32,
    pub top: i32,
    pub right: i32,
    pub bottom: i32,
}

#[repr(C)]
pub struct KsVideoInfoHeader {
    pub rc_source: Rect,
    pub rc_target: Rect,
    pub dw_bit_rate: u32,
    pub dw_bit_error_rate: u32,
    pub avg_time_per_frame: i64,
    pub bmi_header: KsBitmapInfoHeader,
}

#[repr(C)]
pub struct Size {
    pub cx: i32,
    pub cy: i32,
}

#[repr(C)]
pub struct KsVideoStreamConfigCaps {
    pub guid: Guid,
    pub video_standard: u32,
    pub input_size: Size,
    pub min_cropping_size: Size,
    pub max_cropping_size: Size,
    pub crop_granularity_x: i32,
    pub crop_granularity_y: i32,
    pub crop_align_x: i32,
    pub crop_align_y: i32,
    pub min_output_size: Size,
    pub max_output_size: Size,
    pub output_granularity_x: i32,
    pub output_granularity_y: i32,
    pub stretch_taps_x: i32,
    pub stretch_taps_y: i32,
    pub shrink_taps_x: i32,
    pub shrink_taps_y: i32,
    pub min_frame_interval: i64,
    pub max_frame_interval: i64,
    pub min_bits_per_second: i32,
    pub max_bits_per_second: i32,
}

#[repr(C)]
pub struct KsDataRangeVideo {
    pub data_range: KsDataFormat,
    pub b_fixed_size_samples: i32,
    pub b_temporal_compression: i32,
    pub stream_description_flags: u32,
    pub memory_allocation_flags: u32,
    pub config_caps: KsVideoStreamConfigCaps,
    pub video_info_header: KsVideoInfoHeader,
}

#[repr(C)]
pub struct KsDataFormatVideoInfoHeader {
    pub data_format: KsDataFormat,
    pub video_info_header: KsVideoInfoHeader,
}

/// `KSP_PIN`: a property request naming a pin.
#[repr(C)]
pub struct KsPPin {
    pub property: KsIdentifier,
    pub pin_id: u32,
    pub reserved: u32,
}

// --- wdm.h types (offsets measured by compiling mingw-w64's wdm.h) ---------

/// `IRP`: only `IoStatus` is used (the driver writes `Information`).
pub const IRP_SIZE: u64 = 208;
/// `IRP.IoStatus.Status`.
pub const IRP_IO_STATUS: u64 = 48;
/// `IRP.IoStatus.Information`.
pub const IRP_IO_STATUS_INFORMATION: u64 = 56;
/// `DRIVER_OBJECT`.
pub const DRIVER_OBJECT_SIZE: u64 = 336;
/// `DEVICE_OBJECT`.
pub const DEVICE_OBJECT_SIZE: u64 = 328;

#[repr(C)]
pub struct DmaAdapter {
    pub version: u16,
    pub size: u16,
    pub dma_operations: u64,
}

/// `DMA_OPERATIONS` (version 1 part; the table is 128 bytes in mingw-w64).
#[repr(C)]
pub struct DmaOperations {
    pub size: u32,
    pub put_dma_adapter: u64,
    pub allocate_common_buffer: u64,
    pub free_common_buffer: u64,
    pub rest: [u64; 12],
}

#[repr(C)]
pub struct DeviceDescription {
    pub version: u32,
    pub master: u8,
    pub scatter_gather: u8,
    pub demand_mode: u8,
    pub auto_initialize: u8,
    pub dma32_bit_addresses: u8,
    pub ignore_count: u8,
    pub reserved1: u8,
    pub dma64_bit_addresses: u8,
    pub bus_number: u32,
    pub dma_channel: u32,
    pub interface_type: i32,
    pub dma_width: i32,
    pub dma_speed: i32,
    pub maximum_length: u32,
    pub dma_port: u32,
}

/// `IKsReferenceClockVtbl`: `IUnknown`, then the clock's methods.
#[repr(C)]
pub struct KsReferenceClockVtbl {
    pub query_interface: u64,
    pub add_ref: u64,
    pub release: u64,
    pub get_time: u64,
    pub get_physical_time: u64,
    pub get_correlated_time: u64,
    pub get_correlated_physical_time: u64,
    pub get_resolution: u64,
    pub get_state: u64,
}

/// `UNICODE_STRING`.
#[repr(C)]
pub struct UnicodeString {
    pub length: u16,
    pub maximum_length: u16,
    pub buffer: u64,
}

#[cfg(test)]
mod tests {
    //! Appendix A of the brief, line by line (`x86_64`).
    use super::*;
    use core::mem::{align_of, offset_of, size_of};

    #[test]
    fn allocator_structures() {
        assert_eq!(size_of::<KsAllocatorDispatch>(), 32);
        assert_eq!(offset_of!(KsAllocatorDispatch, free), 24);
        assert_eq!(
            (
                size_of::<KsAllocatorFraming>(),
                align_of::<KsAllocatorFraming>()
            ),
            (24, 4)
        );
        assert_eq!(offset_of!(KsAllocatorFraming, frames), 8);
        assert_eq!(offset_of!(KsAllocatorFraming, file_alignment), 16);
        assert_eq!(size_of::<KsFramingRange>(), 12);
        assert_eq!(size_of::<KsFramingRangeWeighted>(), 20);
        assert_eq!(size_of::<KsCompression>(), 12);
        assert_eq!(
            (size_of::<KsFramingItem>(), align_of::<KsFramingItem>()),
            (88, 4)
        );
        assert_eq!(offset_of!(KsFramingItem, memory_flags), 32);
        assert_eq!(offset_of!(KsFramingItem, flags), 40);
        assert_eq!(offset_of!(KsFramingItem, frames), 44);
        assert_eq!(offset_of!(KsFramingItem, file_alignment), 48);
        assert_eq!(offset_of!(KsFramingItem, physical_range), 56);
        assert_eq!(offset_of!(KsFramingItem, framing_range), 68);
        assert_eq!(size_of::<KsAllocatorFramingEx>(), 112);
        assert_eq!(offset_of!(KsAllocatorFramingEx, pin_weight), 20);
        assert_eq!(offset_of!(KsAllocatorFramingEx, framing_item), 24);
        assert_eq!(size_of::<KsStreamAllocatorStatus>(), 32);
        assert_eq!(offset_of!(KsStreamAllocatorStatus, allocated_frames), 24);
        assert_eq!(size_of::<KsStreamAllocatorFunctionTable>(), 16);
        assert_eq!(offset_of!(KsStreamAllocatorFunctionTable, free_frame), 8);
    }

    #[test]
    fn descriptors_and_dispatch_tables() {
        assert_eq!(size_of::<KsPinDescriptor>(), 88);
        assert_eq!(offset_of!(KsPinDescriptor, data_ranges), 40);
        assert_eq!(offset_of!(KsPinDescriptor, data_flow), 48);
        assert_eq!(offset_of!(KsPinDescriptor, communication), 52);
        assert_eq!(offset_of!(KsPinDescriptor, category), 56);
        assert_eq!(offset_of!(KsPinDescriptor, name), 64);
        assert_eq!(
            offset_of!(KsPinDescriptor, constrained_data_ranges_count),
            72
        );
        assert_eq!(size_of::<KsPinDescriptorEx>(), 136);
        assert_eq!(offset_of!(KsPinDescriptorEx, pin_descriptor), 16);
        assert_eq!(offset_of!(KsPinDescriptorEx, flags), 104);
        assert_eq!(offset_of!(KsPinDescriptorEx, instances_possible), 108);
        assert_eq!(offset_of!(KsPinDescriptorEx, instances_necessary), 112);
        assert_eq!(offset_of!(KsPinDescriptorEx, allocator_framing), 120);
        assert_eq!(offset_of!(KsPinDescriptorEx, intersect_handler), 128);
        assert_eq!(size_of::<KsPinDispatch>(), 80);
        assert_eq!(offset_of!(KsPinDispatch, allocator), 72);
        assert_eq!(size_of::<KsFilterDispatch>(), 32);
        assert_eq!(size_of::<KsFilterDescriptor>(), 104);
        assert_eq!(offset_of!(KsFilterDescriptor, pin_descriptors), 40);
        assert_eq!(offset_of!(KsFilterDescriptor, categories), 56);
        assert_eq!(offset_of!(KsFilterDescriptor, component_id), 96);
        assert_eq!(size_of::<KsDeviceDispatch>(), 112);
        assert_eq!(size_of::<KsDeviceDescriptor>(), 32);
        assert_eq!(offset_of!(KsDeviceDescriptor, version), 24);
        assert_eq!(size_of::<KsAutomationTable>(), 48);
        assert_eq!(size_of::<KsPropertySet>(), 40);
        assert_eq!(size_of::<KsPropertyItem>(), 72);
        assert_eq!(size_of::<KsIdentifier>(), 24);
        assert_eq!(align_of::<KsIdentifier>(), 8);
        assert_eq!(size_of::<KsPriority>(), 8);
    }

    #[test]
    fn objects() {
        assert_eq!(size_of::<KsDevice>(), 64);
        assert_eq!(offset_of!(KsDevice, functional_device_object), 24);
        assert_eq!(offset_of!(KsDevice, physical_device_object), 32);
        assert_eq!(offset_of!(KsDevice, started), 48);
        assert_eq!(offset_of!(KsDevice, system_power_state), 52);
        assert_eq!(offset_of!(KsDevice, device_power_state), 56);
        assert_eq!(size_of::<KsFilter>(), 24);
        assert_eq!(size_of::<KsPin>(), 136);
        assert_eq!(offset_of!(KsPin, context), 16);
        assert_eq!(offset_of!(KsPin, id), 24);
        assert_eq!(offset_of!(KsPin, connection_interface), 40);
        assert_eq!(offset_of!(KsPin, connection_medium), 64);
        assert_eq!(offset_of!(KsPin, connection_priority), 88);
        assert_eq!(offset_of!(KsPin, connection_format), 96);
        assert_eq!(offset_of!(KsPin, stream_header_size), 112);
        assert_eq!(offset_of!(KsPin, data_flow), 116);
        assert_eq!(offset_of!(KsPin, device_state), 120);
        assert_eq!(offset_of!(KsPin, reset_state), 124);
        assert_eq!(offset_of!(KsPin, client_state), 128);
    }

    #[test]
    fn streaming_structures() {
        assert_eq!(size_of::<KsStreamPointerOffset>(), 16);
        assert_eq!(offset_of!(KsStreamPointerOffset, count), 8);
        assert_eq!(offset_of!(KsStreamPointerOffset, remaining), 12);
        assert_eq!(size_of::<KsStreamPointer>(), 64);
        assert_eq!(offset_of!(KsStreamPointer, stream_header), 16);
        assert_eq!(offset_of!(KsStreamPointer, offset), 24);
        assert_eq!(offset_of!(KsStreamPointer, offset_in), 32);
        assert_eq!(offset_of!(KsStreamPointer, offset_out), 48);
        assert_eq!(size_of::<KsTime>(), 16);
        assert_eq!(size_of::<KsStreamHeader>(), 56);
        assert_eq!(offset_of!(KsStreamHeader, presentation_time), 8);
        assert_eq!(offset_of!(KsStreamHeader, duration), 24);
        assert_eq!(offset_of!(KsStreamHeader, frame_extent), 32);
        assert_eq!(offset_of!(KsStreamHeader, data_used), 36);
        assert_eq!(offset_of!(KsStreamHeader, data), 40);
        assert_eq!(offset_of!(KsStreamHeader, options_flags), 48);
        assert_eq!(size_of::<KsFrameInfo>(), 72);
        assert_eq!(offset_of!(KsFrameInfo, picture_number), 8);
        assert_eq!(offset_of!(KsFrameInfo, drop_count), 16);
        assert_eq!(offset_of!(KsFrameInfo, direct_draw_rect), 40);
        assert_eq!(offset_of!(KsFrameInfo, reserved1), 56);
        assert_eq!(offset_of!(KsFrameInfo, reserved3), 64);
        assert_eq!(size_of::<KsDroppedFrames>(), 48);
        assert_eq!(offset_of!(KsDroppedFrames, picture_number), 24);
        assert_eq!(offset_of!(KsDroppedFrames, average_frame_size), 40);
    }

    #[test]
    fn formats() {
        assert_eq!(
            (size_of::<KsDataFormat>(), align_of::<KsDataFormat>()),
            (64, 8)
        );
        assert_eq!(offset_of!(KsDataFormat, major_format), 16);
        assert_eq!(offset_of!(KsDataFormat, sub_format), 32);
        assert_eq!(offset_of!(KsDataFormat, specifier), 48);
        assert_eq!(
            (
                size_of::<KsBitmapInfoHeader>(),
                align_of::<KsBitmapInfoHeader>()
            ),
            (40, 4)
        );
        assert_eq!(offset_of!(KsBitmapInfoHeader, bi_planes), 12);
        assert_eq!(offset_of!(KsBitmapInfoHeader, bi_bit_count), 14);
        assert_eq!(offset_of!(KsBitmapInfoHeader, bi_compression), 16);
        assert_eq!(offset_of!(KsBitmapInfoHeader, bi_size_image), 20);
        assert_eq!(size_of::<KsVideoInfoHeader>(), 88);
        assert_eq!(offset_of!(KsVideoInfoHeader, avg_time_per_frame), 40);
        assert_eq!(offset_of!(KsVideoInfoHeader, bmi_header), 48);
        assert_eq!(size_of::<KsVideoStreamConfigCaps>(), 128);
        assert_eq!(offset_of!(KsVideoStreamConfigCaps, min_frame_interval), 104);
        assert_eq!(size_of::<KsDataRangeVideo>(), 296);
        assert_eq!(offset_of!(KsDataRangeVideo, b_fixed_size_samples), 64);
        assert_eq!(offset_of!(KsDataRangeVideo, config_caps), 80);
        assert_eq!(offset_of!(KsDataRangeVideo, video_info_header), 208);
        assert_eq!(size_of::<KsDataFormatVideoInfoHeader>(), 152);
        assert_eq!(
            offset_of!(KsDataFormatVideoInfoHeader, video_info_header),
            64
        );
    }

    #[test]
    fn wdm_structures() {
        assert_eq!(size_of::<DmaAdapter>(), 16);
        assert_eq!(offset_of!(DmaAdapter, dma_operations), 8);
        assert_eq!(size_of::<DmaOperations>(), 128);
        assert_eq!(offset_of!(DmaOperations, put_dma_adapter), 8);
        assert_eq!(offset_of!(DmaOperations, allocate_common_buffer), 16);
        assert_eq!(offset_of!(DmaOperations, free_common_buffer), 24);
        assert_eq!(size_of::<DeviceDescription>(), 40);
        assert_eq!(offset_of!(DeviceDescription, dma64_bit_addresses), 11);
        assert_eq!(offset_of!(DeviceDescription, interface_type), 20);
        assert_eq!(offset_of!(DeviceDescription, maximum_length), 32);
        assert_eq!(offset_of!(KsReferenceClockVtbl, release), 16);
        assert_eq!(offset_of!(KsReferenceClockVtbl, get_time), 24);
        assert_eq!(size_of::<UnicodeString>(), 16);
    }
}
