//! What the I/O manager, the PnP manager, the graph and its clients do to
//! the driver, one call at a time: load and `DriverEntry`, Add and Start,
//! filter and pin creation with format negotiation, state changes, frames
//! from a user-mode client or from the driver's own allocator, properties,
//! and teardown (Close, Stop, Remove, unload) with its leak report.

use avscap::portable::video_format::VideoFormat;

use crate::layout::{
    size, KsAllocatorDispatch, KsAllocatorFraming, KsAllocatorFramingEx, KsAutomationTable,
    KsDataFormat, KsDataFormatVideoInfoHeader, KsDevice, KsDeviceDescriptor, KsDeviceDispatch,
    KsDroppedFrames, KsFilter, KsFilterDescriptor, KsFilterDispatch, KsFramingItem, KsPPin, KsPin,
    KsPinDescriptor, KsPinDescriptorEx, KsPinDispatch, KsPropertyItem, KsPropertySet,
    UnicodeString, DEVICE_OBJECT_SIZE, DRIVER_OBJECT_SIZE, IRP_IO_STATUS_INFORMATION, IRP_SIZE,
};
use crate::machine::{self, alloc, call, irql, new_machine, Config, Kind, Mem, Uc, R};
use crate::pe::Image;
use crate::rules::Rule;
use crate::{ks, nt, off};

/// Where the cross-build writes the driver (relative to the repository).
pub const SYS_PATH: &str = "target/cross/package/avscap.sys";

/// The repository root (two levels above this crate).
#[must_use]
pub fn repo_root() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .expect("the repository root exists")
}

/// `STATUS_BUFFER_OVERFLOW`: the intersect handler's answer to a size query.
pub const STATUS_BUFFER_OVERFLOW: u64 = 0x8000_0005;

/// A KS allocator instance created on a pin (the kernel path).
#[derive(Clone, Copy, Debug)]
pub struct Allocator {
    /// The context `InitializeAllocator` returned.
    pub context: u64,
    /// The pin's `KSALLOCATOR_DISPATCH`.
    pub dispatch: u64,
}

/// A machine with avscap.sys loaded.
pub struct Driver {
    /// The emulator.
    pub uc: Uc<'static>,
    /// Imports as bound: `dll!name`.
    pub imports: Vec<String>,
    /// Base relocations applied at load.
    pub relocations: usize,
    /// Allocators created on pins and not yet deleted (KS deletes them
    /// when their handles close, at the latest at unload).
    pub allocators: Vec<Allocator>,
    /// The end-of-test check is off (see [`Driver::disarm`]).
    disarmed: bool,
}

/// The driver's image, or a failure naming the missing file.
pub fn read_sys() -> R<Vec<u8>> {
    read_sys_from(&repo_root().join(SYS_PATH))
}

/// The image at `path`, or a failure that says how to build it.
pub fn read_sys_from(path: &std::path::Path) -> R<Vec<u8>> {
    std::fs::read(path).map_err(|e| {
        format!(
            "{} is missing ({e}): run scripts/cross-build.sh first (the README's test command does)",
            path.display()
        )
    })
}

impl Driver {
    /// Loads avscap.sys into a new machine: sections mapped, relocations
    /// applied, every import bound to its model (an import without one
    /// fails here, naming it).
    pub fn load(config: Config) -> R<Driver> {
        Driver::load_with(config, &read_sys()?, &nt::exports(), &ks::exports())
    }

    /// Loads `data` with the given models of ntoskrnl's and ks.sys's
    /// exports (a test can leave one out to see the load refused).
    pub fn load_with(
        config: Config,
        data: &[u8],
        nt_exports: &[(&'static str, machine::HookFn)],
        ks_exports: &[(&'static str, machine::HookFn)],
    ) -> R<Driver> {
        let (driver, status) = Driver::load_status(config, data, nt_exports, ks_exports)?;
        if status != 0 {
            return Err(format!("DriverEntry returned {status:#x}"));
        }
        Ok(driver)
    }

    /// Loads `data` and runs `DriverEntry`: the machine and the status
    /// `DriverEntry` returned (on failure the I/O manager unloads the
    /// driver without calling any other routine of it).
    pub fn load_status(
        config: Config,
        data: &[u8],
        nt_exports: &[(&'static str, machine::HookFn)],
        ks_exports: &[(&'static str, machine::HookFn)],
    ) -> R<(Driver, u32)> {
        let mut image = Image::load(data, machine::IMAGE_BASE)?;
        let mut uc = new_machine(config)?;
        let mut imports = Vec::new();
        let mut missing = Vec::new();
        for import in image.imports.clone() {
            let table = match import.dll.to_ascii_lowercase().as_str() {
                "ntoskrnl.exe" => nt_exports,
                "ks.sys" => ks_exports,
                _ => {
                    missing.push(format!("{}!{}", import.dll, import.name));
                    continue;
                }
            };
            match table.iter().find(|(n, _)| *n == import.name) {
                Some((name, f)) => {
                    let stub = machine::add_hook(&mut uc, &format!("{}!{name}", import.dll), *f);
                    image.bind(&import, stub)?;
                    imports.push(format!("{}!{}", import.dll, import.name));
                }
                None => missing.push(format!("{}!{}", import.dll, import.name)),
            }
        }
        if !missing.is_empty() {
            return Err(format!(
                "imports without a model: {} (the import list is the contract: model them first)",
                missing.join(", ")
            ));
        }
        machine::map_image(&mut uc, &image)?;
        let symbols = crate::symbols::Symbols::load_default(data)?;
        uc.get_data_mut().symbols = Some(std::sync::Arc::new(symbols));
        crate::coverage::install(&mut uc, &image)?;
        let mut driver = Driver {
            uc,
            imports,
            relocations: image.relocations,
            allocators: Vec::new(),
            disarmed: false,
        };
        let status = driver.entry(image.entry)?;
        Ok((driver, status))
    }

    fn entry(&mut self, entry: u64) -> R<u32> {
        let uc = &mut self.uc;
        let driver_object = alloc(uc, DRIVER_OBJECT_SIZE, 16, Kind::Model("DRIVER_OBJECT"))?;
        let name: Vec<u8> = "\\Registry\\Machine\\System\\CurrentControlSet\\Services\\avscap"
            .encode_utf16()
            .flat_map(u16::to_le_bytes)
            .collect();
        let buffer = alloc(uc, name.len() as u64 + 2, 16, Kind::Model("registry path"))?;
        uc.wbytes(buffer, &name)?;
        let path = alloc(
            uc,
            size::<UnicodeString>(),
            16,
            Kind::Model("UNICODE_STRING"),
        )?;
        uc.w16(path + off!(UnicodeString, length), name.len() as u16)?;
        uc.w16(
            path + off!(UnicodeString, maximum_length),
            name.len() as u16 + 2,
        )?;
        uc.w64(path + off!(UnicodeString, buffer), buffer)?;
        uc.get_data_mut().ks.driver_object = driver_object;
        let status = call(uc, entry, &[driver_object, path], irql::PASSIVE, 1)? as u32;
        if status == 0 && uc.get_data().ks.device_descriptor.is_none() {
            return Err("DriverEntry did not call KsInitializeDriver with a descriptor".into());
        }
        Ok(status)
    }

    /// Loads the driver and brings its device up (Add, Start).
    pub fn boot(config: Config) -> R<Driver> {
        let mut d = Driver::load(config)?;
        d.add_device()?;
        let status = d.start_device()?;
        if status != 0 {
            return Err(format!("device Start returned {status:#x}"));
        }
        Ok(d)
    }

    /// The device dispatch routine at `offset` in `KSDEVICE_DISPATCH`.
    fn device_routine(&self, offset: u64) -> R<u64> {
        let descriptor = self
            .uc
            .get_data()
            .ks
            .device_descriptor
            .ok_or("no device descriptor")?;
        let dispatch = self
            .uc
            .r64(descriptor + off!(KsDeviceDescriptor, dispatch))?;
        self.uc.r64(dispatch + offset)
    }

    /// The PnP manager's `AddDevice`: AVStream creates the FDO and the
    /// `KSDEVICE`, then calls the driver's Add.
    pub fn add_device(&mut self) -> R<()> {
        match self.try_add_device()? {
            0 => Ok(()),
            status => Err(format!("device Add returned {status:#x}")),
        }
    }

    /// `AddDevice` returning the driver's status: on failure AVStream
    /// empties the device's bag and deletes the device again.
    pub fn try_add_device(&mut self) -> R<u32> {
        let add = self.device_routine(off!(KsDeviceDispatch, add))?;
        let uc = &mut self.uc;
        let pdo = alloc(uc, DEVICE_OBJECT_SIZE, 16, Kind::Model("PDO"))?;
        let fdo = alloc(uc, DEVICE_OBJECT_SIZE, 16, Kind::Model("FDO"))?;
        let device = alloc(uc, size::<KsDevice>(), 16, Kind::Model("KSDEVICE"))?;
        let bag = ks::new_bag(uc, ks::BagOwner::Device);
        let descriptor = uc.get_data().ks.device_descriptor.unwrap_or(0);
        uc.w64(device + off!(KsDevice, descriptor), descriptor)?;
        uc.w64(device + off!(KsDevice, bag), bag)?;
        uc.w64(device + off!(KsDevice, functional_device_object), fdo)?;
        uc.w64(device + off!(KsDevice, physical_device_object), pdo)?;
        uc.w64(device + off!(KsDevice, next_device_object), pdo)?;
        {
            let ks = &mut uc.get_data_mut().ks;
            ks.device = device;
            ks.fdo = fdo;
            ks.pdo = pdo;
        }
        if add != 0 {
            let status = call(uc, add, &[device], irql::PASSIVE, 1)? as u32;
            if status != 0 {
                ks::free_bag(uc, bag)?;
                machine::free(uc, device)?;
                uc.get_data_mut().ks.device = 0;
                return Ok(status);
            }
        }
        Ok(0)
    }

    /// `IRP_MN_START_DEVICE` (no resources: a root-enumerated device).
    pub fn start_device(&mut self) -> R<u32> {
        let start = self.device_routine(off!(KsDeviceDispatch, start))?;
        let irp = self.irp(0)?;
        let uc = &mut self.uc;
        let device = uc.get_data().ks.device;
        let status = call(uc, start, &[device, irp, 0, 0], irql::PASSIVE, 1)? as u32;
        if status == 0 {
            uc.w8(device + off!(KsDevice, started), 1)?;
        }
        Ok(status)
    }

    /// `IRP_MN_STOP_DEVICE`.
    pub fn stop_device(&mut self) -> R<()> {
        self.device_irp_void(off!(KsDeviceDispatch, stop))?;
        let device = self.uc.get_data().ks.device;
        self.uc.w8(device + off!(KsDevice, started), 0)
    }

    /// `IRP_MN_SURPRISE_REMOVAL`.
    pub fn surprise_removal(&mut self) -> R<()> {
        self.device_irp_void(off!(KsDeviceDispatch, surprise_removal))
    }

    /// `IRP_MN_REMOVE_DEVICE`: the driver's Remove, then AVStream empties the
    /// device's bag and deletes the device.
    pub fn remove_device(&mut self) -> R<()> {
        self.device_irp_void(off!(KsDeviceDispatch, remove))?;
        let uc = &mut self.uc;
        let device = uc.get_data().ks.device;
        let bag = uc.r64(device + off!(KsDevice, bag))?;
        ks::free_bag(uc, bag)?;
        machine::free(uc, device)?;
        uc.get_data_mut().ks.device = 0;
        Ok(())
    }

    fn device_irp_void(&mut self, offset: u64) -> R<()> {
        let routine = self.device_routine(offset)?;
        let irp = self.irp(0)?;
        let device = self.uc.get_data().ks.device;
        if routine != 0 {
            call(&mut self.uc, routine, &[device, irp], irql::PASSIVE, 1)?;
        }
        Ok(())
    }

    /// A zeroed IRP for `object`.
    pub fn irp(&mut self, object: u64) -> R<u64> {
        let irp = alloc(&mut self.uc, IRP_SIZE, 16, Kind::Model("IRP"))?;
        self.uc.get_data_mut().ks.irps.insert(irp, object);
        Ok(irp)
    }

    /// The filter descriptor registered at Start.
    pub fn filter_descriptor(&self) -> R<u64> {
        self.uc
            .get_data()
            .ks
            .factories
            .first()
            .map(|f| f.0)
            .ok_or_else(|| "no filter factory was created".into())
    }

    /// The (static) pin descriptor of the filter's only pin.
    pub fn pin_descriptor(&self) -> R<u64> {
        let filter = self.filter_descriptor()?;
        self.uc
            .r64(filter + off!(KsFilterDescriptor, pin_descriptors))
    }

    /// Creates a filter from the factory (its Create, if any, runs).
    pub fn create_filter(&mut self) -> R<u64> {
        self.try_create_filter()?
            .map_err(|status| format!("filter Create returned {status:#x}"))
    }

    /// Creates a filter; its Create's failure status, after which AVStream
    /// empties the filter's bag and deletes it.
    pub fn try_create_filter(&mut self) -> R<Result<u64, u32>> {
        let descriptor = self.filter_descriptor()?;
        let uc = &mut self.uc;
        let filter = alloc(uc, size::<KsFilter>(), 16, Kind::Model("KSFILTER"))?;
        let bag = ks::new_bag(uc, ks::BagOwner::FilterOrPin);
        uc.w64(filter + off!(KsFilter, descriptor), descriptor)?;
        uc.w64(filter + off!(KsFilter, bag), bag)?;
        uc.get_data_mut().ks.filters.insert(filter, bag);
        let dispatch = uc.r64(descriptor + off!(KsFilterDescriptor, dispatch))?;
        let create = if dispatch == 0 { 0 } else { uc.r64(dispatch)? };
        if create != 0 {
            let irp = self.irp(filter)?;
            let status =
                self.controlled(|uc| call(uc, create, &[filter, irp], irql::PASSIVE, 1))? as u32;
            if status != 0 {
                self.uc.get_data_mut().ks.filters.remove(&filter);
                self.controlled(|uc| ks::free_bag(uc, bag).map(|()| 0))?;
                machine::free(&mut self.uc, filter)?;
                return Ok(Err(status));
            }
        }
        Ok(Ok(filter))
    }

    /// Runs `f` with the filter control mutex held by thread 1 (as AVStream
    /// holds it around pin creation, state changes and format changes).
    pub fn controlled(&mut self, f: impl FnOnce(&mut Uc) -> R<u64>) -> R<u64> {
        self.uc.get_data_mut().ks.control_mutex = Some(1);
        let r = f(&mut self.uc);
        self.uc.get_data_mut().ks.control_mutex = None;
        r
    }

    /// The client's `KS_DATARANGE_VIDEO` for exactly `format`, in model
    /// memory (what a graph proposes for intersection).
    pub fn client_range(&mut self, format: &VideoFormat) -> R<u64> {
        let bytes = crate::oracle::data_range_bytes(format);
        let range = alloc(
            &mut self.uc,
            bytes.len() as u64,
            16,
            Kind::Model("client data range"),
        )?;
        self.uc.wbytes(range, &bytes)?;
        Ok(range)
    }

    /// `KsPinDataIntersectionEx`'s work: the driver's intersect handler is
    /// called for each of the pin's ranges whose GUIDs match the client's,
    /// first with a size query, then with a buffer. Returns the format the
    /// handler wrote (the bytes) and the range it matched.
    pub fn intersect(&mut self, filter: u64, client_range: u64) -> R<Option<(Vec<u8>, u64)>> {
        let descriptor = self.pin_descriptor()?;
        let handler = self
            .uc
            .r64(descriptor + off!(KsPinDescriptorEx, intersect_handler))?;
        let pd = descriptor + off!(KsPinDescriptorEx, pin_descriptor);
        let count = self.uc.r32(pd + off!(KsPinDescriptor, data_ranges_count))?;
        let ranges = self.uc.r64(pd + off!(KsPinDescriptor, data_ranges))?;
        let client_sub = self
            .uc
            .rbytes(client_range + off!(KsDataFormat, sub_format), 16)?;
        let irp = self.irp(filter)?;
        let request = alloc(&mut self.uc, size::<KsPPin>(), 16, Kind::Model("KSP_PIN"))?;
        let data_size = alloc(&mut self.uc, 4, 16, Kind::Model("ULONG"))?;
        let buffer_len = size::<KsDataFormatVideoInfoHeader>();
        let buffer = alloc(
            &mut self.uc,
            buffer_len,
            16,
            Kind::Model("intersection buffer"),
        )?;
        for i in 0..u64::from(count) {
            let ours = self.uc.r64(ranges + 8 * i)?;
            if self.uc.rbytes(ours + off!(KsDataFormat, sub_format), 16)? != client_sub {
                continue;
            }
            let uc = &mut self.uc;
            uc.w32(data_size, 0)?;
            let status = call(
                uc,
                handler,
                &[0, irp, request, client_range, ours, 0, 0, data_size],
                irql::PASSIVE,
                1,
            )?;
            if status != STATUS_BUFFER_OVERFLOW {
                continue; // no match with this range
            }
            let needed = uc.r32(data_size)?;
            if u64::from(needed) != buffer_len {
                return Err(format!(
                    "size query answered {needed} bytes, expected {buffer_len}"
                ));
            }
            let status = call(
                uc,
                handler,
                &[
                    0,
                    irp,
                    request,
                    client_range,
                    ours,
                    needed.into(),
                    buffer,
                    data_size,
                ],
                irql::PASSIVE,
                1,
            )?;
            if status != 0 {
                return Err(format!("intersection with a buffer returned {status:#x}"));
            }
            let written = uc.r32(data_size)?;
            return Ok(Some((uc.rbytes(buffer, written as usize)?, ours)));
        }
        Ok(None)
    }

    /// Connects the capture pin with `format`: intersection, then the pin
    /// object with that connection format, `SetDataFormat` (no old format)
    /// and Create. Returns the pin, or the status Create (or `SetDataFormat`)
    /// failed with.
    pub fn connect(&mut self, filter: u64, format: &VideoFormat) -> R<Result<u64, u32>> {
        let client = self.client_range(format)?;
        let (bytes, range) = self
            .intersect(filter, client)?
            .ok_or("the pin's intersect handler matched none of its ranges")?;
        self.create_pin(filter, &bytes, range)
    }

    /// Creates a pin with a given connection format (bytes) and matched range.
    pub fn create_pin(&mut self, filter: u64, format: &[u8], range: u64) -> R<Result<u64, u32>> {
        let descriptor = self.pin_descriptor()?;
        let uc = &mut self.uc;
        let pin = alloc(uc, size::<KsPin>(), 16, Kind::Model("KSPIN"))?;
        let bag = ks::new_bag(uc, ks::BagOwner::FilterOrPin);
        let connection = alloc(
            uc,
            format.len() as u64,
            16,
            Kind::Model("connection format"),
        )?;
        uc.wbytes(connection, format)?;
        let leading = alloc(uc, 64, 16, Kind::Model("leading edge"))?;
        let filter_context = uc.r64(filter + off!(KsFilter, context))?;
        uc.w64(pin + off!(KsPin, descriptor), descriptor)?;
        uc.w64(pin + off!(KsPin, bag), bag)?;
        uc.w64(pin + off!(KsPin, context), filter_context)?;
        uc.w32(pin + off!(KsPin, communication), 2)?;
        uc.w64(pin + off!(KsPin, connection_format), connection)?;
        uc.w32(
            pin + off!(KsPin, stream_header_size),
            size::<crate::layout::KsStreamHeader>() as u32,
        )?;
        uc.w32(pin + off!(KsPin, data_flow), 2)?;
        uc.get_data_mut().ks.pins.insert(
            pin,
            ks::Pin {
                address: pin,
                filter,
                bag,
                leading: ks::Leading {
                    address: leading,
                    ..ks::Leading::default()
                },
                ..ks::Pin::default()
            },
        );
        let set_format = ks::dispatch_routine(uc, pin, off!(KsPinDispatch, set_data_format))?;
        let create = ks::dispatch_routine(uc, pin, off!(KsPinDispatch, create))?;
        let irp = self.irp(pin)?;
        let status = self.controlled(|uc| {
            if set_format != 0 {
                let s = call(uc, set_format, &[pin, 0, 0, range, 0], irql::PASSIVE, 1)?;
                if s != 0 {
                    return Ok(s);
                }
            }
            call(uc, create, &[pin, irp], irql::PASSIVE, 1)
        })? as u32;
        if status != 0 {
            // AVStream deletes the pin object again.
            ks::free_bag(&mut self.uc, bag)?;
            self.uc.get_data_mut().ks.pins.remove(&pin);
            machine::free(&mut self.uc, pin)?;
            return Ok(Err(status));
        }
        self.uc
            .get_data_mut()
            .ks
            .pins
            .get_mut(&pin)
            .unwrap()
            .created = true;
        Ok(Ok(pin))
    }

    /// The pin's state.
    #[must_use]
    pub fn state(&self, pin: u64) -> u32 {
        self.uc.get_data().ks.pins.get(&pin).map_or(0, |p| p.state)
    }

    /// One state transition (`SetDeviceState(to, from)` under the filter
    /// control mutex). On success `DeviceState` changes; reaching RUN with
    /// frames queued triggers processing; reaching STOP flushes the queue.
    /// Returns the driver's status.
    pub fn step_state(&mut self, pin: u64, to: u32) -> R<u32> {
        let from = self.state(pin);
        if from.abs_diff(to) != 1 {
            return Err(format!(
                "the model steps one state at a time ({from} -> {to})"
            ));
        }
        let routine = ks::dispatch_routine(&self.uc, pin, off!(KsPinDispatch, set_device_state))?;
        let status = self.controlled(|uc| {
            call(
                uc,
                routine,
                &[pin, u64::from(to), u64::from(from)],
                irql::PASSIVE,
                1,
            )
        })? as u32;
        if status == 0x103 {
            return Err("SetDeviceState returned STATUS_PENDING".into());
        }
        if status != 0 {
            return Ok(status);
        }
        self.uc.w32(pin + off!(KsPin, device_state), to)?;
        let p = self.uc.get_data_mut().ks.pins.get_mut(&pin).unwrap();
        p.state = to;
        if (to == ks::state::RUN || to == ks::state::PAUSE) && p.leading.frame.is_some() {
            p.attempt = true;
        }
        if to == ks::state::STOP {
            ks::flush_queue(&mut self.uc, pin)?;
        }
        nt::run_ready(&mut self.uc)?;
        Ok(0)
    }

    /// Steps the pin to `to` one state at a time; fails on a refusal.
    pub fn set_state(&mut self, pin: u64, to: u32) -> R<()> {
        while self.state(pin) != to {
            let from = self.state(pin);
            let next = if to > from { from + 1 } else { from - 1 };
            let status = self.step_state(pin, next)?;
            if status != 0 {
                return Err(format!(
                    "SetDeviceState({next}, {from}) returned {status:#x}"
                ));
            }
        }
        Ok(())
    }

    /// Closes the pin: the driver's Close, then AVStream cancels what is
    /// still queued, empties the pin's bag and deletes the pin object.
    pub fn close_pin(&mut self, pin: u64) -> R<()> {
        let close = ks::dispatch_routine(&self.uc, pin, off!(KsPinDispatch, close))?;
        let irp = self.irp(pin)?;
        if close != 0 {
            self.controlled(|uc| call(uc, close, &[pin, irp], irql::PASSIVE, 1))?;
        }
        nt::run_ready(&mut self.uc)?;
        ks::flush_queue(&mut self.uc, pin)?;
        let bag = self.uc.get_data().ks.pins[&pin].bag;
        self.controlled(|uc| ks::free_bag(uc, bag).map(|()| 0))?;
        let p = self.uc.get_data_mut().ks.pins.get_mut(&pin).unwrap();
        p.created = false;
        let leading = p.leading.address;
        machine::free(&mut self.uc, leading)?;
        let connection = self.uc.r64(pin + off!(KsPin, connection_format))?;
        machine::free(&mut self.uc, connection)?;
        machine::free(&mut self.uc, pin)?;
        Ok(())
    }

    /// Lets virtual time pass by `duration` (100 ns units).
    pub fn advance(&mut self, duration: i64) -> R<()> {
        let until = self.uc.get_data().now + duration;
        nt::advance_to(&mut self.uc, until)
    }

    /// A user-mode client's frame of `extent` bytes queued on the pin.
    pub fn queue_user_frame(&mut self, pin: u64, extent: u32, pitch: i32) -> R<u64> {
        let data = alloc(
            &mut self.uc,
            u64::from(extent),
            16,
            Kind::Model("user frame"),
        )?;
        let id = ks::queue_frame(&mut self.uc, pin, data, extent, ks::Origin::User, pitch)?;
        nt::run_ready(&mut self.uc)?;
        Ok(id)
    }

    /// One of the driver's allocator frames queued on the pin.
    pub fn queue_allocator_frame(&mut self, pin: u64, data: u64, extent: u32) -> R<u64> {
        let id = ks::queue_frame(&mut self.uc, pin, data, extent, ks::Origin::Allocator, 0)?;
        nt::run_ready(&mut self.uc)?;
        Ok(id)
    }

    /// Completed frames of a pin, taken.
    pub fn take_completed(&mut self, pin: u64) -> Vec<ks::Completed> {
        self.uc
            .get_data_mut()
            .ks
            .pins
            .get_mut(&pin)
            .map(|p| std::mem::take(&mut p.completed))
            .unwrap_or_default()
    }

    /// The pin's `KSALLOCATOR_FRAMING_EX`, as `KSPROPERTY_CONNECTION_ALLOCATORFRAMING_EX`
    /// answers it: from the pin's (edited) descriptor.
    pub fn allocator_framing_ex(&self, pin: u64) -> R<Vec<u8>> {
        let descriptor = self.uc.r64(pin + off!(KsPin, descriptor))?;
        let framing = self
            .uc
            .r64(descriptor + off!(KsPinDescriptorEx, allocator_framing))?;
        if framing == 0 {
            return Err("the pin has no AllocatorFraming".into());
        }
        self.uc
            .rbytes(framing, size::<KsAllocatorFramingEx>() as usize)
    }

    /// Creates an allocator on the pin with a legacy `KSALLOCATOR_FRAMING`
    /// (`InitializeAllocator` at PASSIVE_LEVEL). Returns the allocator or
    /// the driver's failure status.
    pub fn create_allocator(
        &mut self,
        pin: u64,
        framing: &LegacyFraming,
    ) -> R<Result<Allocator, u32>> {
        let dispatch = ks::dispatch_routine(&self.uc, pin, off!(KsPinDispatch, allocator))?;
        if dispatch == 0 {
            return Err("the pin has no KSALLOCATOR_DISPATCH".into());
        }
        let initialize = self
            .uc
            .r64(dispatch + off!(KsAllocatorDispatch, initialize_allocator))?;
        let uc = &mut self.uc;
        let f = alloc(
            uc,
            size::<KsAllocatorFraming>(),
            16,
            Kind::Model("KSALLOCATOR_FRAMING"),
        )?;
        uc.wbytes(f, &framing.to_bytes())?;
        let out = alloc(uc, 8, 16, Kind::Model("allocator context out"))?;
        let status = call(uc, initialize, &[pin, f, out], irql::PASSIVE, 1)? as u32;
        if status != 0 {
            return Ok(Err(status));
        }
        let context = uc.r64(out)?;
        let allocator = Allocator { context, dispatch };
        self.allocators.push(allocator);
        Ok(Ok(allocator))
    }

    /// The allocator's `Allocate` at DISPATCH_LEVEL: a frame or 0.
    pub fn allocate(&mut self, a: Allocator) -> R<u64> {
        let f = self
            .uc
            .r64(a.dispatch + off!(KsAllocatorDispatch, allocate))?;
        call(&mut self.uc, f, &[a.context], irql::DISPATCH, 1)
    }

    /// The allocator's `Free` at DISPATCH_LEVEL.
    pub fn free(&mut self, a: Allocator, frame: u64) -> R<()> {
        let f = self.uc.r64(a.dispatch + off!(KsAllocatorDispatch, free))?;
        call(&mut self.uc, f, &[a.context, frame], irql::DISPATCH, 1).map(|_| ())
    }

    /// `DeleteAllocator` at PASSIVE_LEVEL.
    pub fn delete_allocator(&mut self, a: Allocator) -> R<()> {
        self.allocators.retain(|x| x.context != a.context);
        let f = self
            .uc
            .r64(a.dispatch + off!(KsAllocatorDispatch, delete_allocator))?;
        call(&mut self.uc, f, &[a.context], irql::PASSIVE, 1).map(|_| ())
    }

    /// `KSPROPERTY_DROPPEDFRAMES_CURRENT` through the pin's automation
    /// table: (`PictureNumber`, `DropCount`, `AverageFrameSize`).
    pub fn dropped_frames(&mut self, pin: u64) -> R<(i64, i64, u32)> {
        let set_id =
            crate::oracle::guid_bytes(avscap::portable::guid::PROPSETID_VIDCAP_DROPPEDFRAMES);
        let descriptor = self.uc.r64(pin + off!(KsPin, descriptor))?;
        let table = self
            .uc
            .r64(descriptor + off!(KsPinDescriptorEx, automation_table))?;
        let uc = &self.uc;
        let sets = uc.r32(table + off!(KsAutomationTable, property_sets_count))?;
        let sets_at = uc.r64(table + off!(KsAutomationTable, property_sets))?;
        let item_size = uc.r32(table + off!(KsAutomationTable, property_item_size))?;
        if u64::from(item_size) != size::<KsPropertyItem>() {
            return Err(format!("PropertyItemSize {item_size}"));
        }
        let mut handler = None;
        for s in 0..u64::from(sets) {
            let set = sets_at + s * size::<KsPropertySet>();
            if uc.rbytes(uc.r64(set + off!(KsPropertySet, set))?, 16)? != set_id {
                continue;
            }
            let count = uc.r32(set + off!(KsPropertySet, properties_count))?;
            let items = uc.r64(set + off!(KsPropertySet, property_item))?;
            for i in 0..u64::from(count) {
                let item = items + i * size::<KsPropertyItem>();
                if uc.r32(item + off!(KsPropertyItem, property_id))? == 0 {
                    let min_property = uc.r32(item + off!(KsPropertyItem, min_property))?;
                    let min_data = uc.r32(item + off!(KsPropertyItem, min_data))?;
                    if u64::from(min_property.max(min_data)) > size::<KsDroppedFrames>() {
                        return Err("the property's minimum sizes exceed the structure".into());
                    }
                    handler = Some(uc.r64(item + off!(KsPropertyItem, get_property_handler))?);
                }
            }
        }
        let handler = handler
            .filter(|h| *h != 0)
            .ok_or("no KSPROPERTY_DROPPEDFRAMES_CURRENT get handler")?;
        let irp = self.irp(pin)?;
        let uc = &mut self.uc;
        let request = alloc(
            uc,
            size::<KsDroppedFrames>(),
            16,
            Kind::Model("property request"),
        )?;
        uc.wbytes(request, &set_id)?;
        let data = alloc(
            uc,
            size::<KsDroppedFrames>(),
            16,
            Kind::Model("property data"),
        )?;
        let status = call(uc, handler, &[irp, request, data], irql::PASSIVE, 1)? as u32;
        if status != 0 {
            return Err(format!("the dropped-frames handler returned {status:#x}"));
        }
        let information = uc.r64(irp + IRP_IO_STATUS_INFORMATION)?;
        if information != size::<KsDroppedFrames>() {
            return Err(format!("IoStatus.Information {information}"));
        }
        Ok((
            uc.ri64(data + off!(KsDroppedFrames, picture_number))?,
            uc.ri64(data + off!(KsDroppedFrames, drop_count))?,
            uc.r32(data + off!(KsDroppedFrames, average_frame_size))?,
        ))
    }

    /// Proposes a new connection format to a created pin (`SetDataFormat`
    /// with the old one), as a format change does. On refusal the old
    /// format is restored. Returns the driver's status.
    pub fn change_format(&mut self, pin: u64, format: &VideoFormat) -> R<u32> {
        let client = self.client_range(format)?;
        let filter = self.uc.get_data().ks.pins[&pin].filter;
        let (bytes, range) = self
            .intersect(filter, client)?
            .ok_or("no range matched the new format")?;
        let old = self.uc.r64(pin + off!(KsPin, connection_format))?;
        let new = alloc(
            &mut self.uc,
            bytes.len() as u64,
            16,
            Kind::Model("connection format"),
        )?;
        self.uc.wbytes(new, &bytes)?;
        self.uc.w64(pin + off!(KsPin, connection_format), new)?;
        let routine = ks::dispatch_routine(&self.uc, pin, off!(KsPinDispatch, set_data_format))?;
        let status = self
            .controlled(|uc| call(uc, routine, &[pin, old, 0, range, 0], irql::PASSIVE, 1))?
            as u32;
        let keep = if status == 0 { new } else { old };
        let drop = if status == 0 { old } else { new };
        self.uc.w64(pin + off!(KsPin, connection_format), keep)?;
        machine::free(&mut self.uc, drop)?;
        Ok(status)
    }

    /// Everything the driver still holds or left behind, one line each,
    /// each naming the rule it breaks (empty when the teardown was clean).
    #[must_use]
    pub fn leaks(&self) -> Vec<String> {
        let k = self.uc.get_data();
        let mut out = Vec::new();
        for (address, block) in &k.nt.pool {
            out.push(Rule::PoolLeak.broke(format!(
                "pool block {address:#x} of {} bytes, tag {:?}, allocated by {}, never freed",
                block.size,
                machine::tag_str(block.tag),
                k.describe(block.site)
            )));
        }
        for b in k.nt.common_buffers.values() {
            out.push(Rule::CommonBufferLeak.broke(format!(
                "common buffer {:#x} of {} bytes never freed",
                b.va, b.len
            )));
        }
        for (va, (bytes, _)) in &k.nt.contiguous {
            out.push(Rule::CommonBufferLeak.broke(format!(
                "contiguous block {va:#x} of {bytes} bytes never freed"
            )));
        }
        for (a, adapter) in &k.nt.adapters {
            if !adapter.put {
                out.push(Rule::DmaAdapter.broke(format!("DMA adapter {a:#x} never put back")));
            }
        }
        for (c, rec) in &k.ks.clones {
            out.push(Rule::CloneLeak.broke(format!(
                "stream pointer clone {c:#x} (frame {}) never deleted",
                rec.frame
            )));
        }
        for lock in k.nt.spin_locks.keys() {
            out.push(Rule::SpinLockLeak.broke(format!("spin lock {lock:#x} still held")));
        }
        for (t, timer) in &k.nt.timers {
            if timer.due.is_some() {
                out.push(Rule::TimerLeak.broke(format!("timer {t:#x} still queued")));
            }
        }
        if !k.nt.dpc_queue.is_empty() {
            out.push(
                Rule::TimerLeak.broke(format!("{} DPC(s) still queued", k.nt.dpc_queue.len())),
            );
        }
        for (w, item) in &k.nt.work_items {
            out.push(Rule::WorkItemLeak.broke(format!(
                "work item {w:#x} never freed{}",
                if item.busy { " (still queued)" } else { "" }
            )));
        }
        if k.ks.clock.references != 0 {
            out.push(Rule::ClockReference.broke(format!(
                "{} reference(s) on the master clock never released",
                k.ks.clock.references
            )));
        }
        if k.ks.device_mutex.is_some() {
            out.push(Rule::Mutex.broke("the device mutex is still held"));
        }
        out.extend(crate::allocator_object::leaks(k));
        out
    }

    /// Closes a filter: the driver's filter Close (if any), then AVStream
    /// empties the filter's bag and deletes the object.
    pub fn close_filter(&mut self, filter: u64) -> R<()> {
        let descriptor = self.filter_descriptor()?;
        let dispatch = self
            .uc
            .r64(descriptor + off!(KsFilterDescriptor, dispatch))?;
        let close = if dispatch == 0 {
            0
        } else {
            self.uc.r64(dispatch + off!(KsFilterDispatch, close))?
        };
        if close != 0 {
            let irp = self.irp(filter)?;
            self.controlled(|uc| call(uc, close, &[filter, irp], irql::PASSIVE, 1))?;
        }
        let bag = self
            .uc
            .get_data_mut()
            .ks
            .filters
            .remove(&filter)
            .ok_or_else(|| format!("{filter:#x} is not an open filter"))?;
        self.controlled(|uc| ks::free_bag(uc, bag).map(|()| 0))?;
        machine::free(&mut self.uc, filter)?;
        Ok(())
    }

    /// What the system does when a test's last handle closes and the
    /// driver is unloaded: every pin still open is stopped and closed,
    /// every allocator deleted, every filter closed, the device stopped
    /// and removed. Then every rule about what a driver may leave behind
    /// is checked. Returns the violations (empty when all is clean).
    pub fn unload(&mut self) -> R<Vec<String>> {
        let mut out = ks::stalled_pins(&self.uc);
        let pins: Vec<u64> = self
            .uc
            .get_data()
            .ks
            .pins
            .values()
            .filter(|p| p.created)
            .map(|p| p.address)
            .collect();
        for pin in pins {
            while self.state(pin) != ks::state::STOP {
                let from = self.state(pin);
                let status = self.step_state(pin, from - 1)?;
                if status != 0 {
                    out.push(Rule::BadArgument.broke(format!(
                        "the pin refused the step from state {from} down to {} with {status:#x}: a graph could never stop it",
                        from - 1
                    )));
                    break;
                }
            }
            self.take_completed(pin);
            self.close_pin(pin)?;
        }
        for a in std::mem::take(&mut self.allocators) {
            self.delete_allocator(a)?;
        }
        let filters: Vec<u64> = self.uc.get_data().ks.filters.keys().copied().collect();
        for filter in filters {
            self.close_filter(filter)?;
        }
        let device = self.uc.get_data().ks.device;
        if device != 0 {
            if self.uc.r8(device + off!(KsDevice, started))? != 0 {
                self.stop_device()?;
            }
            self.remove_device()?;
        }
        nt::run_ready(&mut self.uc)?;
        out.extend(self.leaks());
        Ok(out)
    }

    /// Turns the end-of-test check off, for a test that leaves the driver
    /// in a broken state on purpose (a rule's own test).
    pub fn disarm(&mut self) {
        self.disarmed = true;
    }

    /// The `DbgPrint` log, one line per print.
    #[must_use]
    pub fn log(&self) -> String {
        self.uc.get_data().log.join("")
    }
}

/// The end-of-test check: when a test drops its driver, the driver is
/// unloaded as the system would unload it ([`Driver::unload`]) and every
/// rule about what it leaves behind is checked; a violation fails the test
/// with the rule's name. Skipped when the test is already failing, when
/// the model recorded a failure the test has seen (every failure reaches
/// the test as an `Err`), and for disarmed drivers.
impl Drop for Driver {
    fn drop(&mut self) {
        let skip =
            self.disarmed || std::thread::panicking() || self.uc.get_data().failure.is_some();
        let verdict = (!skip).then(|| self.unload());
        // Coverage includes the unload, and is kept even when the check fails.
        self.save_coverage();
        match verdict {
            Some(Ok(violations)) if !violations.is_empty() => panic!(
                "the driver broke {} rule(s) at the end of the test:\n{}\n--- DbgPrint ---\n{}",
                violations.len(),
                violations.join("\n"),
                self.log()
            ),
            Some(Err(e)) => panic!(
                "unloading the driver at the end of the test failed: {e}\n--- DbgPrint ---\n{}",
                self.log()
            ),
            _ => {}
        }
    }
}

/// A legacy `KSALLOCATOR_FRAMING`, as an allocator create request carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LegacyFraming {
    /// `OptionsFlags` / `RequirementsFlags`.
    pub options_flags: u32,
    /// `PoolType` (0: `NonPagedPool`).
    pub pool_type: u32,
    /// `Frames`.
    pub frames: u32,
    /// `FrameSize`.
    pub frame_size: u32,
    /// `FileAlignment`.
    pub file_alignment: u32,
}

impl LegacyFraming {
    /// The framing as a `KSALLOCATOR_FRAMING`'s bytes (`Reserved` 0), as an
    /// allocator create request carries it.
    #[must_use]
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut b = vec![0u8; size::<KsAllocatorFraming>() as usize];
        let mut put = |at: u64, v: u32| {
            b[at as usize..at as usize + 4].copy_from_slice(&v.to_le_bytes());
        };
        put(off!(KsAllocatorFraming, options_flags), self.options_flags);
        put(off!(KsAllocatorFraming, pool_type), self.pool_type);
        put(off!(KsAllocatorFraming, frames), self.frames);
        put(off!(KsAllocatorFraming, frame_size), self.frame_size);
        put(
            off!(KsAllocatorFraming, file_alignment),
            self.file_alignment,
        );
        b
    }

    /// The framing a graph derives from the pin's `KSALLOCATOR_FRAMING_EX`
    /// (first item: its frames, the top of its framing range, its
    /// alignment; non-paged system memory).
    #[must_use]
    pub fn from_ex(ex: &[u8]) -> LegacyFraming {
        let item = off!(KsAllocatorFramingEx, framing_item) as usize;
        let u32_at = |o: u64| {
            u32::from_le_bytes(
                ex[item + o as usize..item + o as usize + 4]
                    .try_into()
                    .unwrap(),
            )
        };
        LegacyFraming {
            options_flags: avscap::portable::framing::OPTIONF_SYSTEM_MEMORY,
            pool_type: 0,
            frames: u32_at(off!(KsFramingItem, frames)),
            frame_size: u32_at(off!(KsFramingItem, framing_range.range.max_frame_size)),
            file_alignment: u32_at(off!(KsFramingItem, file_alignment)),
        }
    }
}
