//! The linker map names the driver's functions: the entry point and the
//! dispatch routines the driver registers are the starts of functions of
//! the kernel shell, a fault inside the driver and a hook's call site are
//! described by function, a map of another link is refused, and coverage
//! records what ran.

mod common;

use avscap_kernel_emu::layout::KsPinDispatch;
use avscap_kernel_emu::machine::{self, call, irql, Mem, Uc, R};
use avscap_kernel_emu::pe::Image;
use avscap_kernel_emu::session::read_sys;
use avscap_kernel_emu::symbols::{caller_site, is_shell, Symbols};
use avscap_kernel_emu::{coverage, ks, nt, off, Config, Driver};
use common::boot;

/// `name+0x0 (avscap.sys+0x…)` → `name`, when the offset is 0.
fn function_start(description: &str) -> Option<&str> {
    let (name, rest) = description.split_once("+0x0 (avscap.sys+0x")?;
    rest.ends_with(')').then_some(name)
}

/// The Process routine of the pin's (static) dispatch table.
fn process_routine(d: &Driver) -> u64 {
    let descriptor = d.pin_descriptor().unwrap();
    let dispatch = d.uc.r64(descriptor).unwrap();
    d.uc.r64(dispatch + off!(KsPinDispatch, process)).unwrap()
}

#[test]
fn the_map_names_every_function_once() {
    let sys = read_sys().unwrap();
    let symbols = Symbols::load_default(&sys).unwrap_or_else(|e| panic!("{e}"));
    let image = Image::load(&sys, machine::IMAGE_BASE).unwrap();
    assert!(
        symbols.functions.len() > 20,
        "{} functions",
        symbols.functions.len()
    );
    for pair in symbols.functions.windows(2) {
        assert!(
            pair[0].rva + pair[0].size <= pair[1].rva,
            "{pair:?} overlap"
        );
    }
    for f in &symbols.functions {
        assert!(f.size > 0 && f.rva + f.size <= image.size, "{f:?}");
        assert!(!f.name.is_empty() && !f.name.contains(".llvm."), "{f:?}");
        let hashed = f
            .name
            .rsplit_once("::h")
            .is_some_and(|(_, h)| h.len() == 16 && h.chars().all(|c| c.is_ascii_hexdigit()));
        assert!(!hashed, "{f:?} kept its hash");
    }
    let shell = symbols.functions.iter().filter(|f| f.is_shell()).count();
    assert!(shell > 10, "only {shell} kernel-shell functions");
}

#[test]
fn the_entry_point_and_the_process_routine_start_shell_functions() {
    let d = boot(Config::default());
    let entry = Image::load(&read_sys().unwrap(), machine::IMAGE_BASE)
        .unwrap()
        .entry;
    let k = d.uc.get_data();
    let described = k.describe(entry);
    assert_eq!(
        function_start(&described),
        Some("DriverEntry"),
        "{described}"
    );
    let described = k.describe(process_routine(&d));
    let name = function_start(&described).unwrap_or_else(|| panic!("{described}"));
    assert!(is_shell(name), "{described}");
}

#[test]
fn a_fault_in_the_driver_names_its_function() {
    let mut d = boot(Config::default());
    let process = process_routine(&d);
    // A KSPIN pointer into the unmapped first page.
    let err = call(&mut d.uc, process, &[0x10], irql::PASSIVE, 2).unwrap_err();
    println!("{err}");
    let (_, by) = err
        .split_once("by the instruction at ")
        .unwrap_or_else(|| panic!("{err}"));
    // A plain path, or a trait method of a shell type (`<avscap::kernel::…
    // as …>::process`).
    assert!(
        by.contains(" (avscap::kernel::") || by.contains(" (<avscap::kernel::"),
        "{err}"
    );
    assert!(by.contains(" (avscap.sys+0x"), "{err}");
}

fn refuse_with_call_site(uc: &mut Uc) -> R<u64> {
    Err(format!("called from {}", caller_site(uc)))
}

#[test]
fn a_hook_names_its_call_site() {
    // The driver's first pool allocation (its result is used: no tail call).
    let nt: Vec<_> = nt::exports()
        .into_iter()
        .map(|(n, f)| {
            if n == "ExAllocatePool2" {
                (n, refuse_with_call_site as machine::HookFn)
            } else {
                (n, f)
            }
        })
        .collect();
    let mut d = Driver::load_with(Config::default(), &read_sys().unwrap(), &nt, &ks::exports())
        .unwrap_or_else(|e| panic!("{e}"));
    let err = d
        .add_device()
        .and_then(|()| d.start_device().map(|_| ()))
        .expect_err("refused");
    println!("{err}");
    let (_, site) = err
        .split_once("ntoskrnl.exe!ExAllocatePool2 called from ")
        .unwrap_or_else(|| panic!("{err}"));
    let (name, rest) = site.split_once("+0x").unwrap_or_else(|| panic!("{err}"));
    assert!(is_shell(name), "{err}");
    assert!(rest.contains(" (avscap.sys+0x"), "{err}");
}

#[test]
fn a_map_of_another_link_is_refused() {
    let sys = read_sys().unwrap();
    let map = std::fs::read_to_string(avscap_kernel_emu::symbols::default_map_path()).unwrap();
    assert!(Symbols::parse(&map, &sys).is_ok());
    let mut other = sys.clone();
    let pe = u32::from_le_bytes(other[0x3c..0x40].try_into().unwrap()) as usize;
    other[pe + 8] ^= 1; // the COFF TimeDateStamp
    let err = Symbols::parse(&map, &other).unwrap_err();
    assert!(err.contains("rerun scripts/cross-build.sh"), "{err}");
    let err = Symbols::load(std::path::Path::new("/nonexistent/avscap.map"), &sys).unwrap_err();
    assert!(err.contains("scripts/cross-build.sh"), "{err}");
}

#[test]
fn coverage_records_what_ran() {
    let mut d = Driver::load(Config::default()).unwrap();
    let entry = Image::load(&read_sys().unwrap(), machine::IMAGE_BASE)
        .unwrap()
        .entry;
    let base = machine::IMAGE_BASE;
    let ran = coverage::executed(d.uc.get_data());
    assert!(ran.contains(&(entry - base)), "DriverEntry not recorded");
    d.add_device().unwrap();
    assert_eq!(d.start_device().unwrap(), 0);
    let process = process_routine(&d);
    assert!(!coverage::executed(d.uc.get_data()).contains(&(process - base)));
}

#[test]
fn the_shell_rule() {
    for shell in [
        "DriverEntry",
        "avscap::kernel::capture_pin::pin_process",
        "avscap::kernel::hardware::Hardware::run::{{closure}}",
        "<avscap::kernel::boundary::locks::SpinLockGuard<T> as core::ops::drop::Drop>::drop",
        "<avscap::kernel::capture_pin::PinContext as avscap::kernel::boundary::ks_pin::PinDispatch>::process",
        "core::ptr::drop_in_place<avscap::kernel::capture_pin::PinContext>",
    ] {
        assert!(is_shell(shell), "{shell}");
    }
    for not in [
        "avscap::portable::image::synthesize",
        "core::ptr::drop_in_place<avscap::portable::capture_engine::CaptureEngine<avscap::kernel::boundary::stream_pointer::StreamClone,8_usize>>",
        "<avscap::portable::frame_pool::FramePool as core::ops::drop::Drop>::drop",
        "KsPinAttemptProcessing",
        "core::fmt::Formatter::pad_integral",
        "memcpy",
    ] {
        assert!(!is_shell(not), "{not}");
    }
}
