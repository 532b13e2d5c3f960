//! The emulated x86-64 machine: unicorn, the address-space layout, model
//! memory (every block in a mapping of its own with an unmapped guard page
//! after it; freed blocks unmapped), calls into the driver with the
//! Microsoft x64 calling convention (nestable: host → driver → hook →
//! driver), and the dispatch of the driver's calls to host hooks.

use std::collections::BTreeMap;
use std::panic::{catch_unwind, AssertUnwindSafe};

use unicorn_engine::unicorn_const::{Arch, HookType, MemType, Mode, Prot};
use unicorn_engine::{RegisterX86, Unicorn};

use crate::ks;
use crate::nt;
use crate::rules::{self, Rule};

/// A model failure: a rule the driver broke, a fault, or a bug check. The
/// message says what, where and (for faults) in which block.
pub type R<T> = Result<T, String>;

/// The emulator with the kernel model as its data.
pub type Uc<'a> = Unicorn<'a, Kernel>;

/// A host hook: reads its arguments from the emulated registers and stack,
/// returns the value for RAX.
pub type HookFn = fn(&mut Uc) -> R<u64>;

/// Where the image is mapped (its preferred base is `0x1_8000_0000`, so
/// every base relocation is applied).
pub const IMAGE_BASE: u64 = 0x0000_0001_4000_0000;
/// One 16-byte `ret` stub per hook.
pub const THUNK_BASE: u64 = 0x0000_0000_7000_0000;
const THUNK_SIZE: u64 = 0x1_0000;
const THUNK_STRIDE: u64 = 16;
/// Calls from the host return here (a `hlt` in a page of its own).
pub const RETURN_TRAP: u64 = 0x0000_0000_6fff_f000;
/// The kernel stack (one for all nested calls), with an unmapped page
/// below it.
const STACK_BASE: u64 = 0x0000_0000_6000_0000;
const STACK_SIZE: u64 = 0x10_0000;
const STACK_TOP: u64 = STACK_BASE + STACK_SIZE - 0x100;
/// Model memory grows upwards from here, never reusing an address.
const HEAP_BASE: u64 = 0x0000_0010_0000_0000;
/// Bytes in a page.
pub const PAGE: u64 = 0x1000;
/// A safety net that turns a hang in the driver into a failure (the
/// emulation itself never depends on wall-clock time).
const CALL_TIMEOUT_US: u64 = 120_000_000;

/// IRQL values.
pub mod irql {
    /// `PASSIVE_LEVEL`.
    pub const PASSIVE: u8 = 0;
    /// `APC_LEVEL`.
    pub const APC: u8 = 1;
    /// `DISPATCH_LEVEL`.
    pub const DISPATCH: u8 = 2;
}

/// What a block of model memory is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Kind {
    /// `ExAllocatePool2` by the driver.
    Pool {
        /// The pool tag.
        tag: u32,
    },
    /// An `AllocateCommonBuffer` buffer.
    CommonBuffer,
    /// An `MmAllocateContiguousNodeMemory` block.
    Contiguous,
    /// Memory of the model itself (KS objects, headers, frames, …).
    Model(&'static str),
}

/// One block of model memory.
#[derive(Clone, Debug)]
pub struct Block {
    /// First mapped byte.
    pub map_start: u64,
    /// Mapped bytes (page multiple).
    pub map_len: u64,
    /// The address handed out.
    pub address: u64,
    /// Bytes requested.
    pub size: u64,
    /// What it is.
    pub kind: Kind,
    /// Freed (and unmapped).
    pub freed: bool,
}

/// The model's memory blocks.
#[derive(Default)]
pub struct Memory {
    next: u64,
    /// Blocks by `map_start`.
    pub blocks: BTreeMap<u64, Block>,
}

impl Memory {
    /// The block whose mapping (or guard page) contains `address`.
    #[must_use]
    pub fn block_at(&self, address: u64) -> Option<&Block> {
        self.blocks
            .range(..=address)
            .next_back()
            .map(|(_, b)| b)
            .filter(|b| address < b.map_start + b.map_len + PAGE)
    }

    /// The live block handed out at exactly `address`.
    #[must_use]
    pub fn live_block(&self, address: u64) -> Option<&Block> {
        self.block_at(address)
            .filter(|b| b.address == address && !b.freed)
    }
}

/// How the model is configured for one test.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Config {
    /// `IoGetDmaAdapter` grants an adapter (else it returns NULL and the
    /// driver falls back to contiguous memory).
    pub dma_adapter: bool,
    /// `KsPinGetReferenceClockInterface` returns a master clock.
    pub clock: bool,
    /// Fault injection: the failable call with this index (0-based, in the
    /// order the driver makes them) fails; `None`: none fails.
    pub fail_call: Option<u64>,
    /// Interleaving: at the import-call boundary with this index (0-based,
    /// counting only calls the driver makes at PASSIVE_LEVEL with no spin
    /// lock held), a DPC runs first, as another processor would run it:
    /// the next timer falls due at once and every queued DPC runs.
    pub interleave_at: Option<u64>,
    /// Unicorn's early stop, provoked at every import: each stub's hook
    /// stops the emulation once before its routine runs and once after it
    /// returned, and the call resumes ([`Kernel::early_stops`] counts them).
    /// A run must be the same as without.
    pub early_stops: bool,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            dma_adapter: true,
            clock: true,
            fail_call: None,
            interleave_at: None,
            early_stops: false,
        }
    }
}

/// A failable call the driver made (an allocation, an adapter, a common
/// buffer, contiguous memory, `_KsEdit`, a bag item, a filter factory, a
/// clone, a work item, the clock, `KsInitializeDriver`).
#[derive(Clone, Debug)]
pub struct FaultPoint {
    /// The import (or callback) called.
    pub call: &'static str,
    /// Its call site in the driver.
    pub site: String,
    /// This call was made to fail.
    pub failed: bool,
}

/// Decides whether this failable call fails (it is the one
/// `Config::fail_call` names) and records it.
pub fn inject(uc: &mut Uc, call: &'static str) -> bool {
    let site = uc.get_data().describe(return_address(uc));
    let k = uc.get_data_mut();
    let index = k.fault_points.len() as u64;
    let failed = k.config.fail_call == Some(index);
    k.fault_points.push(FaultPoint { call, site, failed });
    failed
}

/// A registered hook.
pub struct Hook {
    /// `dll!name` for imports, a descriptive name for callbacks.
    pub name: String,
    /// The model.
    pub f: HookFn,
    /// The routine's documented IRQL (checked before the model runs).
    pub limit: rules::Limit,
    /// A call to it is an interleaving boundary (not `memcpy`/`memset`).
    pub boundary: bool,
}

/// Everything the model knows: the data of the unicorn instance.
pub struct Kernel {
    /// Test configuration.
    pub config: Config,
    /// Model memory.
    pub memory: Memory,
    /// Hooks by thunk index.
    pub hooks: Vec<Hook>,
    /// The loaded image: base and size.
    pub image: (u64, u64),
    /// IRQL of the running code.
    pub irql: u8,
    /// Thread the running code is on (1: the PnP / I/O request thread;
    /// work items and KS workers get threads of their own).
    pub thread: u32,
    next_thread: u32,
    /// Nesting depth of calls into the driver.
    pub depth: u32,
    /// Early stops provoked so far ([`Config::early_stops`]).
    pub early_stops: u64,
    /// A stop was provoked at the stub about to run: the next hook (the
    /// resumed stub) runs its routine.
    early_stop_pending: bool,
    /// When the outermost call into the driver started (the wall-clock
    /// limit covers it and every call nested in it).
    pub started: std::time::Instant,
    /// The first failure; once set every call fails.
    pub failure: Option<String>,
    /// `DbgPrint` output.
    pub log: Vec<String>,
    /// Virtual time, 100 ns units (also the QPC value: 10 MHz).
    pub now: i64,
    /// The ntoskrnl model.
    pub nt: nt::State,
    /// The ks.sys model.
    pub ks: ks::State,
    /// Every failable call so far, in order.
    pub fault_points: Vec<FaultPoint>,
    /// Import-call boundaries at PASSIVE_LEVEL with no spin lock held so
    /// far (the places `Config::interleave_at` counts).
    pub boundaries: u64,
    /// Where the interleaved DPC ran (the import about to be called and its
    /// call site), if it ran.
    pub interleaved: Option<String>,
    /// The driver's functions by name (from the linker map), once loaded.
    pub symbols: Option<std::sync::Arc<crate::symbols::Symbols>>,
    /// Executed blocks of the image.
    pub coverage: crate::coverage::State,
    /// Instruction counting.
    pub cost: crate::cost::State,
}

impl Kernel {
    /// A fresh thread id (a work item or worker run).
    pub fn new_thread(&mut self) -> u32 {
        self.next_thread += 1;
        self.next_thread
    }

    /// Describes an address for a failure message (in the image:
    /// `function+0xoff (avscap.sys+0xrva)`).
    #[must_use]
    pub fn describe(&self, address: u64) -> String {
        let (base, size) = self.image;
        if address >= base && address < base + size {
            return match &self.symbols {
                Some(symbols) => symbols.describe_rva(address - base),
                None => format!("avscap.sys+{:#x}", address - base),
            };
        }
        if (THUNK_BASE..THUNK_BASE + THUNK_SIZE).contains(&address) {
            let i = ((address - THUNK_BASE) / THUNK_STRIDE) as usize;
            if let Some(h) = self.hooks.get(i) {
                return format!("hook {}", h.name);
            }
        }
        if (RETURN_TRAP..RETURN_TRAP + PAGE).contains(&address) {
            return "the model's own call (or a tail call from the driver routine it called)"
                .into();
        }
        if (STACK_BASE - PAGE..STACK_BASE).contains(&address) {
            return "below the kernel stack (stack overflow)".into();
        }
        if let Some(b) = self.memory.block_at(address) {
            let what = match &b.kind {
                Kind::Pool { tag } => format!("pool block tag {:?}", tag_str(*tag)),
                Kind::CommonBuffer => "common buffer".into(),
                Kind::Contiguous => "contiguous block".into(),
                Kind::Model(s) => format!("model {s}"),
            };
            let state = if b.freed { "freed " } else { "" };
            let end = b.address + b.size;
            return if address >= end {
                format!(
                    "{} bytes past the end of {state}{what} of {} bytes at {:#x}",
                    address - end,
                    b.size,
                    b.address
                )
            } else if address < b.address {
                format!(
                    "{} bytes before {state}{what} of {} bytes at {:#x}",
                    b.address - address,
                    b.size,
                    b.address
                )
            } else {
                format!(
                    "offset {:#x} in {state}{what} of {} bytes at {:#x}",
                    address - b.address,
                    b.size,
                    b.address
                )
            };
        }
        "unmapped".into()
    }
}

/// A pool tag as text.
#[must_use]
pub fn tag_str(tag: u32) -> String {
    String::from_utf8_lossy(&tag.to_le_bytes()).into_owned()
}

/// Records a failure (the first one wins) and stops the emulation.
pub fn fail(uc: &mut Uc, message: String) {
    let k = uc.get_data_mut();
    if k.failure.is_none() {
        k.failure = Some(message);
    }
    let _ = uc.emu_stop();
}

/// Unicorn now and then ended an emulation early, with no failure recorded
/// and well inside the limit: milliseconds into a call, at an import's
/// stub whose hook had run but whose `ret` had not (about one run in six of
/// the fault sweep, with the previous driver too). Since the hooks return
/// to the caller themselves ([`return_from_stub`]) none has been seen in
/// 90 runs; should one still come, the stop leaves the CPU state whole, so
/// the call resumes where it stopped until it returns, fails or the
/// wall-clock limit has passed: the limit stays the only way a routine
/// ends without returning. Resuming at a stub is safe because a call
/// stopped at a stub has not run its hook yet. `Config::early_stops`
/// provokes such stops at every import, to test this.
///
/// A nested call resumes without a timeout of its own (see [`call`]); the
/// outermost call's limit still bounds it.
fn resume_early_stop(
    uc: &mut Uc,
    nested: bool,
    mut result: Result<(), unicorn_engine::unicorn_const::uc_error>,
) -> Result<(), unicorn_engine::unicorn_const::uc_error> {
    let limit = std::time::Duration::from_micros(CALL_TIMEOUT_US);
    let started = uc.get_data().started;
    for _ in 0..1000 {
        let rip = uc.reg_read(RegisterX86::RIP).unwrap_or(RETURN_TRAP);
        let remaining = limit.saturating_sub(started.elapsed());
        if result.is_err()
            || uc.get_data().failure.is_some()
            || rip == RETURN_TRAP
            || remaining.is_zero()
        {
            break;
        }
        let timeout = if nested {
            0
        } else {
            u64::try_from(remaining.as_micros()).unwrap_or(1).max(1)
        };
        result = uc.emu_start(rip, RETURN_TRAP, timeout, 0);
    }
    result
}

fn uc_err(e: unicorn_engine::unicorn_const::uc_error) -> String {
    format!("unicorn: {e:?}")
}

/// A new machine with the stack, the thunk page and the fault hooks.
pub fn new_machine(config: Config) -> R<Uc<'static>> {
    let kernel = Kernel {
        config,
        memory: Memory {
            next: HEAP_BASE,
            blocks: BTreeMap::new(),
        },
        hooks: Vec::new(),
        image: (0, 0),
        irql: irql::PASSIVE,
        thread: 1,
        next_thread: 1,
        depth: 0,
        early_stops: 0,
        early_stop_pending: false,
        started: std::time::Instant::now(),
        failure: None,
        log: Vec::new(),
        now: 1_000_000_000,
        nt: nt::State::default(),
        ks: ks::State::default(),
        fault_points: Vec::new(),
        boundaries: 0,
        interleaved: None,
        symbols: None,
        coverage: crate::coverage::State::default(),
        cost: crate::cost::State::default(),
    };
    let mut uc = Unicorn::new_with_data(Arch::X86, Mode::MODE_64, kernel).map_err(uc_err)?;
    uc.mem_map(STACK_BASE, STACK_SIZE, Prot::READ | Prot::WRITE)
        .map_err(uc_err)?;
    uc.mem_map(THUNK_BASE, THUNK_SIZE, Prot::READ | Prot::EXEC)
        .map_err(uc_err)?;
    uc.mem_write(THUNK_BASE, &vec![0xC3; THUNK_SIZE as usize])
        .map_err(uc_err)?;
    uc.mem_map(RETURN_TRAP, PAGE, Prot::READ | Prot::EXEC)
        .map_err(uc_err)?;
    uc.mem_write(RETURN_TRAP, &[0xF4; PAGE as usize])
        .map_err(uc_err)?;
    uc.add_code_hook(THUNK_BASE, THUNK_BASE + THUNK_SIZE - 1, on_thunk)
        .map_err(uc_err)?;
    uc.add_mem_hook(HookType::MEM_INVALID, 1, 0, on_bad_access)
        .map_err(uc_err)?;
    uc.add_insn_invalid_hook(|uc| {
        let rip = uc.reg_read(RegisterX86::RIP).unwrap_or(0);
        let at = uc.get_data().describe(rip);
        fail(
            uc,
            format!("invalid instruction at {rip:#x} ({at}): a Rust abort, `unreachable` or ud2"),
        );
        false
    })
    .map_err(uc_err)?;
    uc.add_intr_hook(|uc, number| {
        let rip = uc.reg_read(RegisterX86::RIP).unwrap_or(0);
        let at = uc.get_data().describe(rip);
        fail(uc, format!("interrupt {number} raised at {rip:#x} ({at})"));
    })
    .map_err(uc_err)?;
    Ok(uc)
}

fn on_thunk(uc: &mut Uc, address: u64, _size: u32) {
    if provoke_early_stop(uc) {
        return;
    }
    let index = ((address - THUNK_BASE) / THUNK_STRIDE) as usize;
    let Some((f, limit)) = uc.get_data().hooks.get(index).map(|h| (h.f, h.limit)) else {
        fail(uc, format!("call to an unbound stub at {address:#x}"));
        return;
    };
    // The name and the call site are only needed for a failure message:
    // not built per call. At the stub, [RSP] is the return address into
    // the caller.
    let context = |uc: &Uc| {
        let k = uc.get_data();
        let site = k.describe(return_address(uc));
        format!("{} called from {site}", k.hooks[index].name)
    };
    if let Err(message) = limit.check(uc.get_data().irql) {
        let message = format!("{}: {message}", context(uc));
        fail(uc, message);
        return;
    }
    if let Err(message) = boundary(uc, index, &context) {
        let message = format!("{} (a DPC interleaved before it): {message}", context(uc));
        fail(uc, message);
        return;
    }
    match catch_unwind(AssertUnwindSafe(|| f(uc))) {
        Ok(Ok(value)) => {
            if uc.get_data().failure.is_some() {
                let _ = uc.emu_stop();
            } else if let Err(e) = return_from_stub(uc, value) {
                let message = format!("{}: {e}", context(uc));
                fail(uc, message);
            } else if uc.get_data().config.early_stops {
                uc.get_data_mut().early_stops += 1;
                let _ = uc.emu_stop();
            }
        }
        Ok(Err(message)) => {
            let message = format!("{}: {message}", context(uc));
            fail(uc, message);
        }
        Err(panic) => {
            let text = panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| (*s).to_string()))
                .unwrap_or_default();
            let message = format!("{}: the model panicked: {text}", context(uc));
            fail(uc, message);
        }
    }
}

/// With [`Config::early_stops`]: stops the emulation at a stub before its
/// hook runs, every other time the stub is reached (the resumed call comes
/// back to the same stub, and runs it). True when it stopped.
fn provoke_early_stop(uc: &mut Uc) -> bool {
    let k = uc.get_data_mut();
    if !k.config.early_stops || k.failure.is_some() {
        return false;
    }
    k.early_stop_pending = !k.early_stop_pending;
    if !k.early_stop_pending {
        return false;
    }
    k.early_stops += 1;
    let _ = uc.emu_stop();
    true
}

/// Returns from an import's stub to its caller, as the stub's `ret` would:
/// `value` in RAX, the return address popped into RIP. Done in the hook, not
/// left to the `ret`, so that the hook's work and the return are one step:
/// an emulation that unicorn stops early is never left at a stub whose
/// hook already ran, where resuming would run the hook a second time (a
/// second allocation, leaking the first; a second free).
fn return_from_stub(uc: &mut Uc, value: u64) -> R<()> {
    let rsp = uc.reg_read(RegisterX86::RSP).map_err(uc_err)?;
    let to = uc.r64(rsp)?;
    uc.reg_write(RegisterX86::RAX, value).map_err(uc_err)?;
    uc.reg_write(RegisterX86::RSP, rsp + 8).map_err(uc_err)?;
    uc.reg_write(RegisterX86::RIP, to).map_err(uc_err)
}

/// An import-call boundary: counted when the driver calls a kernel routine
/// at PASSIVE_LEVEL with no spin lock held; at the configured one, a DPC
/// runs first. `memcpy` and `memset` are not counted: they are the C
/// runtime's, linked as imports, and touch no shared state of the kernel.
fn boundary(uc: &mut Uc, index: usize, context: &dyn Fn(&Uc) -> String) -> R<()> {
    let k = uc.get_data_mut();
    if k.irql != irql::PASSIVE
        || k.depth == 0
        || !k.hooks[index].boundary
        || k.nt.spin_locks_held_by(k.thread) > 0
    {
        return Ok(());
    }
    let index = k.boundaries;
    k.boundaries += 1;
    if k.config.interleave_at != Some(index) {
        return Ok(());
    }
    let here = context(uc);
    if nt::preempt_with_dpc(uc)? {
        uc.get_data_mut().interleaved = Some(here);
    }
    Ok(())
}

fn on_bad_access(uc: &mut Uc, kind: MemType, address: u64, size: usize, _value: i64) -> bool {
    let rip = uc.reg_read(RegisterX86::RIP).unwrap_or(0);
    let k = uc.get_data();
    let rule = match k.memory.block_at(address) {
        Some(b) if b.freed => Rule::UseAfterFree,
        Some(_) => Rule::OutOfBounds,
        None => Rule::InvalidAccess,
    };
    let message = rule.broke(format!(
        "{kind:?} of {size} bytes at {address:#x} ({}) by the instruction at {rip:#x} ({})",
        k.describe(address),
        k.describe(rip)
    ));
    fail(uc, message);
    false
}

/// Registers a hook; returns the address of its stub.
pub fn add_hook(uc: &mut Uc, name: &str, f: HookFn) -> u64 {
    let k = uc.get_data_mut();
    let index = k.hooks.len() as u64;
    assert!(index < THUNK_SIZE / THUNK_STRIDE, "too many hooks");
    k.hooks.push(Hook {
        name: name.to_string(),
        f,
        limit: rules::irql_limit(name).unwrap_or(rules::Limit::Any),
        boundary: !name.ends_with("!memcpy") && !name.ends_with("!memset"),
    });
    THUNK_BASE + index * THUNK_STRIDE
}

/// The stub address of the hook named `name` (`dll!routine` for imports).
#[must_use]
pub fn hook_address(uc: &Uc, name: &str) -> Option<u64> {
    uc.get_data()
        .hooks
        .iter()
        .position(|h| h.name == name)
        .map(|i| THUNK_BASE + i as u64 * THUNK_STRIDE)
}

/// Allocates model memory: `size` bytes (at least one), zeroed, `align`ed
/// (16 or a page), in a mapping of its own that ends as close after the
/// block as the alignment allows, followed by an unmapped guard page.
pub fn alloc(uc: &mut Uc, size: u64, align: u64, kind: Kind) -> R<u64> {
    let size_nz = size.max(1);
    let map_len = size_nz.div_ceil(PAGE) * PAGE;
    let k = uc.get_data_mut();
    let map_start = k.memory.next;
    k.memory.next = map_start + map_len + PAGE;
    let address = if align >= PAGE {
        map_start
    } else {
        let a = align.max(16);
        map_start + map_len - size_nz.div_ceil(a) * a
    };
    k.memory.blocks.insert(
        map_start,
        Block {
            map_start,
            map_len,
            address,
            size,
            kind,
            freed: false,
        },
    );
    uc.mem_map(map_start, map_len, Prot::READ | Prot::WRITE)
        .map_err(uc_err)?;
    Ok(address)
}

/// Frees a live block handed out at `address` (its mapping goes, so a
/// later access faults). Returns the block.
pub fn free(uc: &mut Uc, address: u64) -> R<Block> {
    let block = uc
        .get_data()
        .memory
        .live_block(address)
        .cloned()
        .ok_or_else(|| {
            format!(
                "free of {address:#x}, which is not a live block ({})",
                uc.get_data().describe(address)
            )
        })?;
    uc.mem_unmap(block.map_start, block.map_len)
        .map_err(uc_err)?;
    if let Some(b) = uc.get_data_mut().memory.blocks.get_mut(&block.map_start) {
        b.freed = true;
    }
    Ok(block)
}

/// Maps the image: each segment with its protection.
pub fn map_image(uc: &mut Uc, image: &crate::pe::Image) -> R<()> {
    uc.mem_map(image.base, image.size, Prot::READ)
        .map_err(uc_err)?;
    for seg in &image.segments {
        let prot = match seg.protection {
            crate::pe::Protection::Read => Prot::READ,
            crate::pe::Protection::ReadWrite => Prot::READ | Prot::WRITE,
            crate::pe::Protection::ReadExecute => Prot::READ | Prot::EXEC,
        };
        uc.mem_write(image.base + seg.rva, &seg.bytes)
            .map_err(uc_err)?;
        let len = (seg.bytes.len() as u64).div_ceil(PAGE) * PAGE;
        if len > 0 {
            uc.mem_protect(image.base + seg.rva, len, prot)
                .map_err(uc_err)?;
        }
    }
    uc.get_data_mut().image = (image.base, image.size);
    Ok(())
}

/// Reads argument `i` (0-based) of the routine a hook stands for: RCX, RDX,
/// R8, R9, then the stack above the shadow space.
pub fn arg(uc: &Uc, i: usize) -> R<u64> {
    let reg = match i {
        0 => RegisterX86::RCX,
        1 => RegisterX86::RDX,
        2 => RegisterX86::R8,
        3 => RegisterX86::R9,
        _ => {
            let rsp = uc.reg_read(RegisterX86::RSP).map_err(uc_err)?;
            return uc.r64(rsp + 8 + 8 * i as u64);
        }
    };
    uc.reg_read(reg).map_err(uc_err)
}

/// Inside a hook: the address its caller returns to (at the stub, before
/// its `ret`, `[RSP]` holds it). 0 if it cannot be read.
#[must_use]
pub fn return_address(uc: &Uc) -> u64 {
    uc.reg_read(RegisterX86::RSP)
        .ok()
        .and_then(|rsp| uc.r64(rsp).ok())
        .unwrap_or(0)
}

/// Fails unless the running code is at `level` or below (the routine's
/// documented IRQL).
pub fn need_at_most(uc: &Uc, level: u8) -> R<()> {
    let now = uc.get_data().irql;
    if now > level {
        return Err(Rule::IrqlTooHigh.broke(format!(
            "called at IRQL {now}; the routine requires IRQL <= {level}"
        )));
    }
    Ok(())
}

/// Fails unless the running code is at exactly `level`.
pub fn need_exactly(uc: &Uc, level: u8) -> R<()> {
    let now = uc.get_data().irql;
    if now != level {
        return Err(Rule::IrqlTooHigh.broke(format!(
            "called at IRQL {now}; the routine requires IRQL {level}"
        )));
    }
    Ok(())
}

/// Calls `function` in the driver with `args` at `irql` on `thread`, and
/// returns RAX. Nestable: from a hook, the caller's registers are saved and
/// restored around the call, and the callee's frame goes below the caller's
/// stack pointer. Fails when the callee faults, breaks a model rule, or
/// returns at another IRQL than it was called at.
pub fn call(uc: &mut Uc, function: u64, args: &[u64], level: u8, thread: u32) -> R<u64> {
    if let Some(f) = uc.get_data().failure.clone() {
        return Err(f);
    }
    if function == 0 {
        return Err("call through a NULL routine pointer".into());
    }
    let nested = uc.get_data().depth > 0;
    let saved = if nested {
        Some(uc.context_init().map_err(uc_err)?)
    } else {
        None
    };
    let current = if nested {
        uc.reg_read(RegisterX86::RSP).map_err(uc_err)?
    } else {
        STACK_TOP
    };
    let slots = args.len().max(4) as u64;
    let base = (current - 0x80 - 8 * slots) & !0xF;
    let entry_rsp = base - 8;
    if entry_rsp < STACK_BASE + 0x2000 {
        return Err("the emulated kernel stack is exhausted (calls nested too deeply)".into());
    }
    uc.w64(entry_rsp, RETURN_TRAP)?;
    for (i, a) in args.iter().enumerate() {
        uc.w64(entry_rsp + 8 + 8 * i as u64, *a)?;
    }
    let regs = [
        RegisterX86::RCX,
        RegisterX86::RDX,
        RegisterX86::R8,
        RegisterX86::R9,
    ];
    for (i, reg) in regs.iter().enumerate() {
        uc.reg_write(*reg, args.get(i).copied().unwrap_or(0))
            .map_err(uc_err)?;
    }
    uc.reg_write(RegisterX86::RSP, entry_rsp).map_err(uc_err)?;
    let (old_irql, old_thread, locks_before) = {
        let k = uc.get_data_mut();
        let old = (k.irql, k.thread, k.nt.spin_locks_held_by(thread));
        k.irql = level;
        k.thread = thread;
        k.depth += 1;
        old
    };
    // Only the outermost call has the wall-clock safety net: unicorn keeps
    // one timeout thread per instance, so a nested `emu_start` with a
    // timeout replaces the outer one's (the outer call then joins a thread
    // twice: qemu aborts or hangs), and it waits for its own timer thread,
    // which only ends early when the outermost emulation is done (a nested
    // call would stall for the whole limit). The outer limit still covers
    // the nested calls.
    let timeout = if nested { 0 } else { CALL_TIMEOUT_US };
    if !nested {
        uc.get_data_mut().started = std::time::Instant::now();
    }
    let result = uc.emu_start(function, RETURN_TRAP, timeout, 0);
    let result = resume_early_stop(uc, nested, result);
    let rip = uc.reg_read(RegisterX86::RIP).unwrap_or(0);
    let rax = uc.reg_read(RegisterX86::RAX).unwrap_or(0);
    let (end_irql, locks_after) = {
        let k = uc.get_data_mut();
        k.depth -= 1;
        let end = (k.irql, k.nt.spin_locks_held_by(thread));
        k.irql = old_irql;
        k.thread = old_thread;
        end
    };
    if let Some(ctx) = saved {
        uc.context_restore(&ctx).map_err(uc_err)?;
    }
    if let Some(f) = uc.get_data().failure.clone() {
        return Err(f);
    }
    let at = uc.get_data().describe(rip);
    result.map_err(|e| format!("emulation stopped ({e:?}) at {rip:#x} ({at})"))?;
    if rip != RETURN_TRAP {
        return Err(format!(
            "the routine at {} did not return within the time limit (at {rip:#x}, {at})",
            uc.get_data().describe(function)
        ));
    }
    if end_irql != level {
        let message = Rule::IrqlNotRestored.broke(format!(
            "{} returned at IRQL {end_irql}, but was called at IRQL {level}",
            uc.get_data().describe(function)
        ));
        fail(uc, message.clone());
        return Err(message);
    }
    if locks_after != locks_before {
        let message = Rule::SpinLockHeldOnReturn.broke(format!(
            "{} returned holding {} spin lock(s) it acquired",
            uc.get_data().describe(function),
            locks_after.saturating_sub(locks_before)
        ));
        fail(uc, message.clone());
        return Err(message);
    }
    Ok(rax)
}

/// Reads and writes of emulated memory, failing with a description of the
/// address.
pub trait Mem {
    /// Reads `len` bytes.
    fn rbytes(&self, address: u64, len: usize) -> R<Vec<u8>>;
    /// Writes bytes.
    fn wbytes(&mut self, address: u64, bytes: &[u8]) -> R<()>;

    /// Reads a `u8`.
    fn r8(&self, address: u64) -> R<u8> {
        Ok(self.rbytes(address, 1)?[0])
    }
    /// Reads a `u16`.
    fn r16(&self, address: u64) -> R<u16> {
        Ok(u16::from_le_bytes(
            self.rbytes(address, 2)?.try_into().unwrap(),
        ))
    }
    /// Reads a `u32`.
    fn r32(&self, address: u64) -> R<u32> {
        Ok(u32::from_le_bytes(
            self.rbytes(address, 4)?.try_into().unwrap(),
        ))
    }
    /// Reads a `u64`.
    fn r64(&self, address: u64) -> R<u64> {
        Ok(u64::from_le_bytes(
            self.rbytes(address, 8)?.try_into().unwrap(),
        ))
    }
    /// Reads an `i64`.
    fn ri64(&self, address: u64) -> R<i64> {
        Ok(self.r64(address)? as i64)
    }
    /// Writes a `u8`.
    fn w8(&mut self, address: u64, v: u8) -> R<()> {
        self.wbytes(address, &[v])
    }
    /// Writes a `u16`.
    fn w16(&mut self, address: u64, v: u16) -> R<()> {
        self.wbytes(address, &v.to_le_bytes())
    }
    /// Writes a `u32`.
    fn w32(&mut self, address: u64, v: u32) -> R<()> {
        self.wbytes(address, &v.to_le_bytes())
    }
    /// Writes a `u64`.
    fn w64(&mut self, address: u64, v: u64) -> R<()> {
        self.wbytes(address, &v.to_le_bytes())
    }
    /// Reads a NUL-terminated byte string (at most 4096 bytes).
    fn cstr(&self, address: u64) -> R<String> {
        let mut out = Vec::new();
        for i in 0..4096 {
            let b = self.r8(address + i)?;
            if b == 0 {
                break;
            }
            out.push(b);
        }
        Ok(String::from_utf8_lossy(&out).into_owned())
    }
    /// Reads a NUL-terminated UTF-16 string (at most 1024 units).
    fn wstr(&self, address: u64) -> R<String> {
        let mut out = Vec::new();
        for i in 0..1024 {
            let u = self.r16(address + 2 * i)?;
            if u == 0 {
                break;
            }
            out.push(u);
        }
        Ok(String::from_utf16_lossy(&out))
    }
}

impl Mem for Uc<'_> {
    fn rbytes(&self, address: u64, len: usize) -> R<Vec<u8>> {
        self.mem_read_as_vec(address, len).map_err(|e| {
            format!(
                "the model could not read {len} bytes at {address:#x} ({}): {e:?}",
                self.get_data().describe(address)
            )
        })
    }

    fn wbytes(&mut self, address: u64, bytes: &[u8]) -> R<()> {
        self.mem_write(address, bytes).map_err(|e| {
            format!(
                "the model could not write {} bytes at {address:#x} ({}): {e:?}",
                bytes.len(),
                self.get_data().describe(address)
            )
        })
    }
}
