//! The model's own rules fail when broken: each check the sessions rely on
//! is shown to catch what it is there for (a double free, a wrong tag, an
//! overrun or a use after free at the faulting instruction, a spin lock
//! taken twice or released unheld, paged pool at DISPATCH_LEVEL, a routine
//! returning at another IRQL or holding a lock, an unmodelled import, a
//! missing image, a bug check).

mod common;

use avscap_kernel_emu::machine::{self, call, hook_address, irql, Kind, Mem, PAGE};
use avscap_kernel_emu::session::read_sys_from;
use avscap_kernel_emu::{ks, nt, Config, Driver};
use unicorn_engine::unicorn_const::Prot;

fn driver() -> Driver {
    Driver::load(Config::default()).unwrap_or_else(|e| panic!("{e}"))
}

fn stub(d: &Driver, name: &str) -> u64 {
    hook_address(&d.uc, name).unwrap_or_else(|| panic!("no hook {name}"))
}

/// Code in model memory, executable: returns its address.
fn code(d: &mut Driver, bytes: &[u8]) -> u64 {
    let at = machine::alloc(&mut d.uc, PAGE, PAGE, Kind::Model("test code")).unwrap();
    d.uc.wbytes(at, bytes).unwrap();
    d.uc.mem_protect(at, PAGE, Prot::READ | Prot::EXEC).unwrap();
    at
}

fn expect_failure(r: Result<u64, String>, needle: &str) {
    match r {
        Ok(v) => panic!("expected a failure mentioning {needle:?}, got Ok({v:#x})"),
        Err(e) => assert!(e.contains(needle), "{e:?} does not mention {needle:?}"),
    }
}

const TAG: u64 = 0x7072_6354; // "Tcrp"

#[test]
fn pool_double_free_and_wrong_tag() {
    let mut d = driver();
    let (alloc, free) = (
        stub(&d, "ntoskrnl.exe!ExAllocatePool2"),
        stub(&d, "ntoskrnl.exe!ExFreePoolWithTag"),
    );
    let block = call(&mut d.uc, alloc, &[0x40, 100, TAG], irql::PASSIVE, 1).unwrap();
    assert_eq!(block % 16, 0);
    let mut e = driver();
    let other = call(&mut e.uc, alloc, &[0x40, 100, TAG], irql::PASSIVE, 1).unwrap();
    expect_failure(
        call(&mut e.uc, free, &[other, TAG + 1], irql::PASSIVE, 1),
        "freed with tag",
    );
    call(&mut d.uc, free, &[block, TAG], irql::PASSIVE, 1).unwrap();
    expect_failure(
        call(&mut d.uc, free, &[block, TAG], irql::PASSIVE, 1),
        "not a live pool block",
    );
}

#[test]
fn an_overrun_faults_at_the_instruction() {
    let mut d = driver();
    let alloc = stub(&d, "ntoskrnl.exe!ExAllocatePool2");
    let block = call(&mut d.uc, alloc, &[0x40, 24, TAG], irql::PASSIVE, 1).unwrap();
    // mov byte ptr [rcx+rdx], 0 ; ret
    let poke = code(&mut d, &[0xC6, 0x04, 0x11, 0x00, 0xC3]);
    call(&mut d.uc, poke, &[block, 31], irql::PASSIVE, 1).unwrap(); // inside the 16-byte rounding
    expect_failure(
        call(&mut d.uc, poke, &[block, 32], irql::PASSIVE, 1),
        "past the end of pool block",
    );
}

#[test]
fn a_use_after_free_faults_at_the_instruction() {
    let mut d = driver();
    let (alloc, free) = (
        stub(&d, "ntoskrnl.exe!ExAllocatePool2"),
        stub(&d, "ntoskrnl.exe!ExFreePoolWithTag"),
    );
    let block = call(&mut d.uc, alloc, &[0x40, 64, TAG], irql::PASSIVE, 1).unwrap();
    call(&mut d.uc, free, &[block, TAG], irql::PASSIVE, 1).unwrap();
    let poke = code(&mut d, &[0xC6, 0x04, 0x11, 0x00, 0xC3]);
    expect_failure(
        call(&mut d.uc, poke, &[block, 8], irql::PASSIVE, 1),
        "freed pool block",
    );
}

#[test]
fn spin_lock_rules() {
    let mut d = driver();
    let acquire = stub(&d, "ntoskrnl.exe!KeAcquireSpinLockAtDpcLevel");
    let release = stub(&d, "ntoskrnl.exe!KeReleaseSpinLockFromDpcLevel");
    let lock = machine::alloc(&mut d.uc, 8, 16, Kind::Model("lock")).unwrap();
    expect_failure(
        call(&mut d.uc, acquire, &[lock], irql::PASSIVE, 1),
        "requires IRQL 2",
    );
    let mut d = driver();
    let lock = machine::alloc(&mut d.uc, 8, 16, Kind::Model("lock")).unwrap();
    expect_failure(
        call(&mut d.uc, release, &[lock], irql::DISPATCH, 1),
        "released but not held",
    );
    // acquire ; acquire again (same lock) ; ret
    let mut d = driver();
    let lock = machine::alloc(&mut d.uc, 8, 16, Kind::Model("lock")).unwrap();
    let twice = code(&mut d, &twice_code(acquire));
    expect_failure(
        call(&mut d.uc, twice, &[lock], irql::DISPATCH, 1),
        "already held",
    );
}

/// push rbx; sub rsp,0x20; mov rbx,rcx; mov rax,F; call rax; mov rcx,rbx;
/// mov rax,F; call rax; add rsp,0x20; pop rbx; ret
fn twice_code(f: u64) -> Vec<u8> {
    let mut c = vec![0x53, 0x48, 0x83, 0xEC, 0x20, 0x48, 0x89, 0xCB, 0x48, 0xB8];
    c.extend_from_slice(&f.to_le_bytes());
    c.extend_from_slice(&[0xFF, 0xD0, 0x48, 0x89, 0xD9, 0x48, 0xB8]);
    c.extend_from_slice(&f.to_le_bytes());
    c.extend_from_slice(&[0xFF, 0xD0, 0x48, 0x83, 0xC4, 0x20, 0x5B, 0xC3]);
    c
}

/// sub rsp,0x28; mov rax,F; call rax; add rsp,0x28; ret
fn call_code(f: u64) -> Vec<u8> {
    let mut c = vec![0x48, 0x83, 0xEC, 0x28, 0x48, 0xB8];
    c.extend_from_slice(&f.to_le_bytes());
    c.extend_from_slice(&[0xFF, 0xD0, 0x48, 0x83, 0xC4, 0x28, 0xC3]);
    c
}

#[test]
fn returning_at_another_irql_or_holding_a_lock_fails() {
    let mut d = driver();
    let raise = stub(&d, "ntoskrnl.exe!KeAcquireSpinLockRaiseToDpc");
    let lock = machine::alloc(&mut d.uc, 8, 16, Kind::Model("lock")).unwrap();
    let leaky = code(&mut d, &call_code(raise));
    expect_failure(
        call(&mut d.uc, leaky, &[lock], irql::PASSIVE, 1),
        "returned at IRQL 2",
    );
    let mut d = driver();
    let at_dpc = stub(&d, "ntoskrnl.exe!KeAcquireSpinLockAtDpcLevel");
    let lock = machine::alloc(&mut d.uc, 8, 16, Kind::Model("lock")).unwrap();
    let leaky = code(&mut d, &call_code(at_dpc));
    expect_failure(
        call(&mut d.uc, leaky, &[lock], irql::DISPATCH, 1),
        "holding 1 spin lock",
    );
}

#[test]
fn paged_pool_at_dispatch_level_fails() {
    let mut d = driver();
    let alloc = stub(&d, "ntoskrnl.exe!ExAllocatePool2");
    expect_failure(
        call(&mut d.uc, alloc, &[0x100, 64, TAG], irql::DISPATCH, 1),
        "paged pool",
    );
}

#[test]
fn a_bug_check_fails_with_its_code() {
    let mut d = driver();
    let bugcheck = stub(&d, "ntoskrnl.exe!KeBugCheckEx");
    let r = call(&mut d.uc, bugcheck, &[0xE2, 1, 2, 3], irql::PASSIVE, 1);
    expect_failure(r, "KeBugCheckEx(0xe2, 0x1, 0x2, 0x3");
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
