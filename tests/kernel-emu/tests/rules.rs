//! Every Verifier-style rule fires when broken: for each rule in
//! `Rule::ALL`, the model's hooks are driven in the violating order and the
//! failure must name the rule (an exhaustive `match`, so a new rule cannot
//! be added without its test). Also: the end-of-test check fails a test
//! that leaves something behind, failures name the driver's call site, and
//! the IRQL table covers every import.

mod common;

use avscap_kernel_emu::layout::{size, KsPin, KsPinDispatch, KsReferenceClockVtbl, KsStreamHeader};
use avscap_kernel_emu::machine::{self, call, hook_address, irql, Kind, Mem, PAGE};
use avscap_kernel_emu::rules::{irql_limit, Rule};
use avscap_kernel_emu::session::read_sys_from;
use avscap_kernel_emu::{ks, nt, off, Config, Driver};
use unicorn_engine::unicorn_const::Prot;

const TAG: u64 = 0x7072_6354; // "Tcrp"
const NONPAGED: u64 = 0x40;

fn loaded() -> Driver {
    Driver::load(Config::default()).unwrap_or_else(|e| panic!("{e}"))
}

fn stub(d: &Driver, name: &str) -> u64 {
    hook_address(&d.uc, name).unwrap_or_else(|| panic!("no hook {name}"))
}

/// Calls the hook `name` (`dll!routine`) through the emulator, as driver
/// code would.
fn hook(d: &mut Driver, name: &str, args: &[u64], level: u8) -> Result<u64, String> {
    let f = stub(d, name);
    call(&mut d.uc, f, args, level, 1)
}

fn nt(name: &str) -> String {
    format!("ntoskrnl.exe!{name}")
}

fn ks_(name: &str) -> String {
    format!("ks.sys!{name}")
}

fn model(d: &mut Driver, bytes: u64) -> u64 {
    machine::alloc(&mut d.uc, bytes, 16, Kind::Model("test object")).unwrap()
}

/// Code in model memory, executable: returns its address.
fn code(d: &mut Driver, bytes: &[u8]) -> u64 {
    let at = machine::alloc(&mut d.uc, PAGE, PAGE, Kind::Model("test code")).unwrap();
    d.uc.wbytes(at, bytes).unwrap();
    d.uc.mem_protect(at, PAGE, Prot::READ | Prot::EXEC).unwrap();
    at
}

/// `mov byte ptr [rcx+rdx], 0 ; ret`: a write at `rcx + rdx`.
const POKE: [u8; 5] = [0xC6, 0x04, 0x11, 0x00, 0xC3];

/// Calls `f(rcx)` then `g(rcx)` with the same first argument:
/// push rbx; sub rsp,0x20; mov rbx,rcx; mov rax,F; call rax; mov rcx,rbx;
/// mov rax,G; call rax; add rsp,0x20; pop rbx; ret
fn pair_code(f: u64, g: u64) -> Vec<u8> {
    let mut c = vec![0x53, 0x48, 0x83, 0xEC, 0x20, 0x48, 0x89, 0xCB, 0x48, 0xB8];
    c.extend_from_slice(&f.to_le_bytes());
    c.extend_from_slice(&[0xFF, 0xD0, 0x48, 0x89, 0xD9, 0x48, 0xB8]);
    c.extend_from_slice(&g.to_le_bytes());
    c.extend_from_slice(&[0xFF, 0xD0, 0x48, 0x83, 0xC4, 0x20, 0x5B, 0xC3]);
    c
}

/// Calls `f(rcx)` and returns: sub rsp,0x28; mov rax,F; call rax;
/// add rsp,0x28; ret
fn call_code(f: u64) -> Vec<u8> {
    let mut c = vec![0x48, 0x83, 0xEC, 0x28, 0x48, 0xB8];
    c.extend_from_slice(&f.to_le_bytes());
    c.extend_from_slice(&[0xFF, 0xD0, 0x48, 0x83, 0xC4, 0x28, 0xC3]);
    c
}

/// A pin object of the model's own (not the driver's) whose Process is
/// `process` (code in model memory), in RUN, with its leading edge.
fn fake_pin(d: &mut Driver, process: &[u8]) -> u64 {
    // The driver cannot close a pin it never created: no end-of-test
    // unload for this machine.
    d.disarm();
    let process = code(d, process);
    let dispatch = model(d, size::<KsPinDispatch>());
    d.uc.w64(dispatch + off!(KsPinDispatch, process), process)
        .unwrap();
    let descriptor = model(d, 0x100);
    d.uc.w64(descriptor, dispatch).unwrap(); // KSPIN_DESCRIPTOR_EX.Dispatch
    let pin = model(d, size::<KsPin>());
    d.uc.w64(pin + off!(KsPin, descriptor), descriptor).unwrap();
    d.uc.w32(
        pin + off!(KsPin, stream_header_size),
        size::<KsStreamHeader>() as u32,
    )
    .unwrap();
    let leading = model(d, 64);
    d.uc.get_data_mut().ks.pins.insert(
        pin,
        ks::Pin {
            address: pin,
            state: ks::state::RUN,
            created: true,
            leading: ks::Leading {
                address: leading,
                ..ks::Leading::default()
            },
            ..ks::Pin::default()
        },
    );
    pin
}

/// A fake pin (Process returns `STATUS_PENDING`) with one frame queued:
/// returns (pin, frame id).
fn pin_with_frame(d: &mut Driver) -> (u64, u64) {
    // mov eax, 0x103 ; ret
    let pin = fake_pin(d, &[0xB8, 0x03, 0x01, 0x00, 0x00, 0xC3]);
    let data = model(d, 4096);
    let id = ks::queue_frame(&mut d.uc, pin, data, 4096, ks::Origin::User, 0).unwrap();
    d.uc.get_data_mut().ks.pins.get_mut(&pin).unwrap().attempt = false;
    (pin, id)
}

/// The leading edge of a fake pin with a frame, locked.
fn locked_leading_edge(d: &mut Driver) -> (u64, u64) {
    let (pin, _) = pin_with_frame(d);
    let sp = hook(
        d,
        &ks_("KsPinGetLeadingEdgeStreamPointer"),
        &[pin, 1],
        irql::DISPATCH,
    )
    .unwrap();
    assert_ne!(sp, 0);
    (pin, sp)
}

fn clone_of(d: &mut Driver, sp: u64) -> u64 {
    let out = model(d, 8);
    let status = hook(
        d,
        &ks_("KsStreamPointerClone"),
        &[sp, 0, 0, out],
        irql::DISPATCH,
    )
    .unwrap();
    assert_eq!(status, 0);
    d.uc.r64(out).unwrap()
}

fn free_pool(d: &mut Driver, block: u64, level: u8) -> Result<u64, String> {
    hook(d, &nt("ExFreePoolWithTag"), &[block, TAG], level)
}

fn delete(d: &mut Driver, clone: u64) -> Result<u64, String> {
    hook(d, &ks_("KsStreamPointerDelete"), &[clone], irql::DISPATCH)
}

fn pool(d: &mut Driver, bytes: u64) -> u64 {
    hook(
        d,
        &nt("ExAllocatePool2"),
        &[NONPAGED, bytes, TAG],
        irql::PASSIVE,
    )
    .unwrap()
}

/// The violations `unload` reports (or its failure); the end-of-test check
/// is then off (it would report them a second time).
fn at_unload(d: &mut Driver) -> String {
    d.disarm();
    match d.unload() {
        Ok(v) => v.join("\n"),
        Err(e) => e,
    }
}

fn booted() -> Driver {
    common::boot(Config::default())
}

/// Breaks `rule` and returns the failure text.
#[allow(clippy::too_many_lines)]
fn break_rule(rule: Rule) -> String {
    let mut d = loaded();
    let failure = match rule {
        Rule::PoolLeak => {
            pool(&mut d, 100);
            at_unload(&mut d)
        }
        Rule::PoolUnknownFree => {
            let foreign = model(&mut d, 64);
            free_pool(&mut d, foreign, irql::PASSIVE).unwrap_err()
        }
        Rule::PoolDoubleFree => {
            let block = pool(&mut d, 64);
            free_pool(&mut d, block, irql::PASSIVE).unwrap();
            free_pool(&mut d, block, irql::PASSIVE).unwrap_err()
        }
        Rule::PoolWrongTag => {
            let block = pool(&mut d, 64);
            hook(
                &mut d,
                &nt("ExFreePoolWithTag"),
                &[block, TAG + 1],
                irql::PASSIVE,
            )
            .unwrap_err()
        }
        Rule::PagedPoolAtDispatch => hook(
            &mut d,
            &nt("ExAllocatePool2"),
            &[0x100, 64, TAG],
            irql::DISPATCH,
        )
        .unwrap_err(),
        Rule::UseAfterFree => {
            let block = pool(&mut d, 64);
            free_pool(&mut d, block, irql::PASSIVE).unwrap();
            let poke = code(&mut d, &POKE);
            call(&mut d.uc, poke, &[block, 8], irql::PASSIVE, 1).unwrap_err()
        }
        Rule::OutOfBounds => {
            let block = pool(&mut d, 24);
            let poke = code(&mut d, &POKE);
            // Inside the 16-byte rounding is allowed; the next byte faults.
            call(&mut d.uc, poke, &[block, 31], irql::PASSIVE, 1).unwrap();
            call(&mut d.uc, poke, &[block, 32], irql::PASSIVE, 1).unwrap_err()
        }
        Rule::InvalidAccess => {
            let poke = code(&mut d, &POKE);
            call(&mut d.uc, poke, &[0, 0x10], irql::PASSIVE, 1).unwrap_err()
        }
        Rule::IrqlTooHigh => {
            hook(&mut d, &nt("KeFlushQueuedDpcs"), &[], irql::DISPATCH).unwrap_err()
        }
        Rule::IrqlNotRestored => {
            let lock = model(&mut d, 8);
            let raise = stub(&d, &nt("KeAcquireSpinLockRaiseToDpc"));
            let leaky = code(&mut d, &call_code(raise));
            call(&mut d.uc, leaky, &[lock], irql::PASSIVE, 1).unwrap_err()
        }
        Rule::SpinLockHeldOnReturn => {
            let lock = model(&mut d, 8);
            let at_dpc = stub(&d, &nt("KeAcquireSpinLockAtDpcLevel"));
            let leaky = code(&mut d, &call_code(at_dpc));
            call(&mut d.uc, leaky, &[lock], irql::DISPATCH, 1).unwrap_err()
        }
        Rule::SpinLockRecursion => {
            let lock = model(&mut d, 8);
            let at_dpc = stub(&d, &nt("KeAcquireSpinLockAtDpcLevel"));
            let twice = code(&mut d, &pair_code(at_dpc, at_dpc));
            call(&mut d.uc, twice, &[lock], irql::DISPATCH, 1).unwrap_err()
        }
        Rule::SpinLockNotHeld => {
            let lock = model(&mut d, 8);
            hook(
                &mut d,
                &nt("KeReleaseSpinLockFromDpcLevel"),
                &[lock],
                irql::DISPATCH,
            )
            .unwrap_err()
        }
        Rule::SpinLockVariant => {
            let lock = model(&mut d, 8);
            let raise = stub(&d, &nt("KeAcquireSpinLockRaiseToDpc"));
            let from_dpc = stub(&d, &nt("KeReleaseSpinLockFromDpcLevel"));
            let mixed = code(&mut d, &pair_code(raise, from_dpc));
            call(&mut d.uc, mixed, &[lock], irql::PASSIVE, 1).unwrap_err()
        }
        Rule::SpinLockLeak => {
            let lock = model(&mut d, 8);
            d.uc.get_data_mut().nt.spin_locks.insert(
                lock,
                nt::Holder {
                    thread: 1,
                    raised: false,
                },
            );
            at_unload(&mut d)
        }
        Rule::TimerInFreedPool => {
            let block = pool(&mut d, 128);
            hook(
                &mut d,
                &nt("KeInitializeTimerEx"),
                &[block, 0],
                irql::PASSIVE,
            )
            .unwrap();
            hook(
                &mut d,
                &nt("KeSetTimer"),
                &[block, (-10_000i64) as u64, 0],
                irql::PASSIVE,
            )
            .unwrap();
            free_pool(&mut d, block, irql::PASSIVE).unwrap_err()
        }
        Rule::DpcInFreedPool => {
            let block = pool(&mut d, 128);
            let routine = code(&mut d, &[0xC3]);
            hook(
                &mut d,
                &nt("KeInitializeDpc"),
                &[block, routine, 0],
                irql::PASSIVE,
            )
            .unwrap();
            // Queued (as a timer's expiry or KeInsertQueueDpc on another
            // processor would leave it), not yet run.
            let k = d.uc.get_data_mut();
            k.nt.dpcs.get_mut(&block).unwrap().queued = true;
            k.nt.dpc_queue.push_back(block);
            free_pool(&mut d, block, irql::DISPATCH).unwrap_err()
        }
        Rule::TimerLeak => {
            let timer = model(&mut d, 64);
            hook(
                &mut d,
                &nt("KeInitializeTimerEx"),
                &[timer, 0],
                irql::PASSIVE,
            )
            .unwrap();
            hook(
                &mut d,
                &nt("KeSetTimer"),
                &[timer, (-10_000i64) as u64, 0],
                irql::PASSIVE,
            )
            .unwrap();
            at_unload(&mut d)
        }
        Rule::WorkItemBusy => {
            let device = model(&mut d, 64);
            let item = hook(&mut d, &nt("IoAllocateWorkItem"), &[device], irql::PASSIVE).unwrap();
            let routine = code(&mut d, &[0xC3]);
            hook(
                &mut d,
                &nt("IoQueueWorkItem"),
                &[item, routine, 1, 0],
                irql::DISPATCH,
            )
            .unwrap();
            hook(
                &mut d,
                &nt("IoQueueWorkItem"),
                &[item, routine, 1, 0],
                irql::DISPATCH,
            )
            .unwrap_err()
        }
        Rule::WorkItemLeak => {
            let device = model(&mut d, 64);
            hook(&mut d, &nt("IoAllocateWorkItem"), &[device], irql::PASSIVE).unwrap();
            at_unload(&mut d)
        }
        Rule::Deadlock => {
            let event = model(&mut d, 32);
            hook(
                &mut d,
                &nt("KeInitializeEvent"),
                &[event, 0, 0],
                irql::PASSIVE,
            )
            .unwrap();
            hook(
                &mut d,
                &nt("KeWaitForSingleObject"),
                &[event, 0, 0, 0, 0],
                irql::PASSIVE,
            )
            .unwrap_err()
        }
        Rule::CloneDoubleDelete => {
            let (_, sp) = locked_leading_edge(&mut d);
            let clone = clone_of(&mut d, sp);
            delete(&mut d, clone).unwrap();
            delete(&mut d, clone).unwrap_err()
        }
        Rule::CloneUseAfterDelete => {
            let (_, sp) = locked_leading_edge(&mut d);
            let clone = clone_of(&mut d, sp);
            delete(&mut d, clone).unwrap();
            hook(
                &mut d,
                &ks_("KsStreamPointerSetStatusCode"),
                &[clone, 0xC000_0001],
                irql::DISPATCH,
            )
            .unwrap_err()
        }
        Rule::CloneLeak => {
            let (pin, sp) = locked_leading_edge(&mut d);
            clone_of(&mut d, sp);
            // AVStream cancels the queue at STOP: the clone keeps it waiting.
            ks::flush_queue(&mut d.uc, pin).unwrap_err()
        }
        Rule::LeadingEdgeDoubleUnlock => {
            let (_, sp) = locked_leading_edge(&mut d);
            hook(
                &mut d,
                &ks_("KsStreamPointerUnlock"),
                &[sp, 0],
                irql::DISPATCH,
            )
            .unwrap();
            hook(
                &mut d,
                &ks_("KsStreamPointerUnlock"),
                &[sp, 0],
                irql::DISPATCH,
            )
            .unwrap_err()
        }
        Rule::LeadingEdgeUnlocked => {
            let (_, sp) = locked_leading_edge(&mut d);
            hook(
                &mut d,
                &ks_("KsStreamPointerUnlock"),
                &[sp, 0],
                irql::DISPATCH,
            )
            .unwrap();
            hook(
                &mut d,
                &ks_("KsStreamPointerAdvanceOffsets"),
                &[sp, 0, 16, 0],
                irql::DISPATCH,
            )
            .unwrap_err()
        }
        Rule::FrameCompletedTwice => {
            let (pin, id) = pin_with_frame(&mut d);
            ks::complete_frame(&mut d.uc, pin, id, false).unwrap();
            ks::complete_frame(&mut d.uc, pin, id, false).unwrap_err()
        }
        Rule::FrameOverfilled => {
            let (pin, id) = pin_with_frame(&mut d);
            let header = d.uc.get_data().ks.pins[&pin].frames[0].header;
            d.uc.w32(header + off!(KsStreamHeader, data_used), 4097)
                .unwrap();
            ks::complete_frame(&mut d.uc, pin, id, false).unwrap_err()
        }
        Rule::CommonBufferMismatch => {
            let mut d = booted();
            let adapter = *d.uc.get_data().nt.adapters.keys().next().unwrap();
            let logical = model(&mut d, 8);
            let va = hook(
                &mut d,
                "DMA_OPERATIONS.AllocateCommonBuffer",
                &[adapter, 4096, logical, 1],
                irql::PASSIVE,
            )
            .unwrap();
            let bus = d.uc.r64(logical).unwrap();
            hook(
                &mut d,
                "DMA_OPERATIONS.FreeCommonBuffer",
                &[adapter, 8192, bus, va, 1],
                irql::PASSIVE,
            )
            .unwrap_err()
        }
        Rule::CommonBufferLeak => {
            hook(
                &mut d,
                &nt("MmAllocateContiguousNodeMemory"),
                &[8192, 0, u64::MAX, 0, 0x04, 0xFFFF_FFFF],
                irql::PASSIVE,
            )
            .unwrap();
            at_unload(&mut d)
        }
        Rule::DmaAdapter => {
            let mut d = booted();
            let adapter = *d.uc.get_data().nt.adapters.keys().next().unwrap();
            let logical = model(&mut d, 8);
            hook(
                &mut d,
                "DMA_OPERATIONS.AllocateCommonBuffer",
                &[adapter, 4096, logical, 1],
                irql::PASSIVE,
            )
            .unwrap();
            hook(
                &mut d,
                "DMA_OPERATIONS.PutDmaAdapter",
                &[adapter],
                irql::PASSIVE,
            )
            .unwrap_err()
        }
        Rule::ProcessStalled => {
            let (pin, _) = pin_with_frame(&mut d);
            d.uc.get_data_mut().ks.pins.get_mut(&pin).unwrap().attempt = true;
            // Process runs, returns STATUS_PENDING, and nothing is queued
            // that could ever call KsPinAttemptProcessing.
            d.advance(10_000).unwrap_err()
        }
        Rule::ProcessNoProgress => {
            // xor eax, eax ; ret: STATUS_SUCCESS, the leading edge not moved.
            let pin = fake_pin(&mut d, &[0x31, 0xC0, 0xC3]);
            let data = model(&mut d, 4096);
            ks::queue_frame(&mut d.uc, pin, data, 4096, ks::Origin::User, 0).unwrap();
            nt::run_ready(&mut d.uc).unwrap_err()
        }
        Rule::Mutex => {
            let d2 = &mut booted();
            let device = d2.uc.get_data().ks.device;
            hook(d2, &ks_("KsReleaseDevice"), &[device], irql::PASSIVE).unwrap_err()
        }
        Rule::ClockReference => {
            let (pin, _) = pin_with_frame(&mut d);
            let out = model(&mut d, 8);
            let status = hook(
                &mut d,
                &ks_("KsPinGetReferenceClockInterface"),
                &[pin, out],
                irql::PASSIVE,
            )
            .unwrap();
            assert_eq!(status, 0);
            let interface = d.uc.r64(out).unwrap();
            let vtbl = d.uc.r64(interface).unwrap();
            let release =
                d.uc.r64(vtbl + off!(KsReferenceClockVtbl, release))
                    .unwrap();
            call(&mut d.uc, release, &[interface], irql::PASSIVE, 1).unwrap();
            call(&mut d.uc, release, &[interface], irql::PASSIVE, 1).unwrap_err()
        }
        Rule::BugCheck => {
            hook(&mut d, &nt("KeBugCheckEx"), &[0xE2, 1, 2, 3], irql::PASSIVE).unwrap_err()
        }
        Rule::BadArgument => {
            hook(&mut d, &nt("IoAllocateWorkItem"), &[0], irql::PASSIVE).unwrap_err()
        }
    };
    failure
}

#[test]
fn every_rule_fires_with_its_name() {
    let mut names = std::collections::BTreeSet::new();
    for rule in Rule::ALL {
        assert!(names.insert(rule.name()), "{} named twice", rule.name());
        let failure = break_rule(rule);
        let tag = format!("[{}]", rule.name());
        assert!(
            failure.contains(&tag),
            "breaking {rule:?} gave a failure without {tag}: {failure}"
        );
    }
}

#[test]
fn a_hook_failure_names_the_import_and_its_call_site() {
    let mut d = loaded();
    let flush = stub(&d, &nt("KeFlushQueuedDpcs"));
    let caller = code(&mut d, &call_code(flush));
    let failure = call(&mut d.uc, caller, &[], irql::DISPATCH, 1).unwrap_err();
    // The call instruction ends 16 bytes into the code: that is the site.
    let site = d.uc.get_data().describe(caller + 16);
    assert!(
        failure.contains(&format!(
            "ntoskrnl.exe!KeFlushQueuedDpcs called from {site}"
        )),
        "{failure}"
    );
    assert!(failure.contains("[irql-too-high]"), "{failure}");
}

#[test]
fn a_leak_report_names_where_the_block_was_allocated() {
    let mut d = loaded();
    let allocate = stub(&d, &nt("ExAllocatePool2"));
    // sub rsp,0x28; mov rax,F; call rax; ... with rcx,rdx,r8 passed through.
    let caller = code(&mut d, &call_code(allocate));
    call(&mut d.uc, caller, &[NONPAGED, 64, TAG], irql::PASSIVE, 1).unwrap();
    let site = d.uc.get_data().describe(caller + 16);
    let report = at_unload(&mut d);
    assert!(report.contains("[pool-leak]"), "{report}");
    assert!(report.contains(&format!("allocated by {site}")), "{report}");
}

#[test]
fn the_end_of_test_check_fails_a_test_that_leaves_a_block_behind() {
    let outcome = std::panic::catch_unwind(|| {
        let mut d = loaded();
        pool(&mut d, 100);
        drop(d);
    });
    let panic = outcome.expect_err("dropping a driver with a leaked block must fail the test");
    let text = panic.downcast_ref::<String>().cloned().unwrap_or_default();
    assert!(text.contains("[pool-leak]"), "{text}");
    // A clean driver drops without a word.
    drop(loaded());
}

#[test]
fn every_import_has_a_documented_irql() {
    let d = loaded();
    for import in &d.imports {
        assert!(
            irql_limit(import).is_some(),
            "{import} has no entry in the IRQL table"
        );
    }
    for name in [
        "DMA_OPERATIONS.AllocateCommonBuffer",
        "DMA_OPERATIONS.FreeCommonBuffer",
        "DMA_OPERATIONS.PutDmaAdapter",
        "IKsReferenceClock.GetTime",
        "IKsReferenceClock.AddRef",
        "IKsReferenceClock.Release",
    ] {
        assert!(irql_limit(name).is_some(), "{name} has no entry");
    }
}

#[test]
fn an_import_without_a_model_fails_the_load_naming_it() {
    let data = avscap_kernel_emu::session::read_sys().unwrap();
    let nt: Vec<_> = nt::exports()
        .into_iter()
        .filter(|(n, _)| *n != "KeSetTimer")
        .collect();
    let err = Driver::load_with(Config::default(), &data, &nt, &ks::exports())
        .err()
        .expect("refused");
    assert!(err.contains("ntoskrnl.exe!KeSetTimer"), "{err}");
}

#[test]
fn a_missing_image_is_a_failure_that_says_how_to_build_it() {
    let err = read_sys_from(std::path::Path::new("/nonexistent/avscap.sys")).unwrap_err();
    assert!(err.contains("scripts/cross-build.sh"), "{err}");
}
