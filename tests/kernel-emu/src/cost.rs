//! What the driver's code costs: instructions executed inside avscap.sys
//! per call of `Process` (ks.sys's processing), per DPC and per work item,
//! with the bytes the driver had ntoskrnl's `memcpy` / `memset` move in
//! the same call (those run on the host, so they cost no instruction in
//! the image but are work all the same).
//!
//! Opt-in per machine ([`Driver::count_instructions`]): a unicorn code hook
//! over the image counts every instruction, which slows the emulation
//! down. The scheduler wraps each run in [`measure`]; a run nested in
//! another (a DPC run from inside a wait, say) is counted once, in its own
//! sample: the outer sample is exclusive of it.

use unicorn_engine::UcHookId;

use crate::machine::{Uc, R};
use crate::Driver;

/// What kind of call a sample is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Cost {
    /// The pin's `Process` dispatch, as ks.sys calls it (PASSIVE_LEVEL).
    Process,
    /// A DPC routine (DISPATCH_LEVEL).
    Dpc,
    /// A work item routine (PASSIVE_LEVEL).
    WorkItem,
}

impl Cost {
    /// Every kind, in table order.
    pub const ALL: [Cost; 3] = [Cost::Process, Cost::Dpc, Cost::WorkItem];

    /// The kind as a table label.
    #[must_use]
    pub fn label(self) -> &'static str {
        match self {
            Cost::Process => "Process",
            Cost::Dpc => "DPC",
            Cost::WorkItem => "work item",
        }
    }
}

/// One measured call.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Sample {
    /// What was called.
    pub kind: Cost,
    /// Instructions executed in the image (exclusive of nested samples).
    pub instructions: u64,
    /// Bytes moved by `memcpy` and `memset` (exclusive of nested samples).
    pub bytes: u64,
}

#[derive(Debug)]
struct Open {
    instructions: u64,
    memcpy: usize,
    memset: usize,
    child_instructions: u64,
    child_bytes: u64,
}

/// The counter of one machine.
#[derive(Debug, Default)]
pub struct State {
    hook: Option<UcHookId>,
    /// Instructions executed in the image while counting was on.
    pub instructions: u64,
    stack: Vec<Open>,
    /// Every measured call, in order.
    pub samples: Vec<Sample>,
}

/// Turns instruction counting on or off (a code hook over the image).
pub fn enable(uc: &mut Uc, on: bool) -> R<()> {
    let current = uc.get_data().cost.hook;
    match (on, current) {
        (true, None) => {
            let (base, size) = uc.get_data().image;
            if size == 0 {
                return Err("no image is mapped".into());
            }
            let id = uc
                .add_code_hook(base, base + size - 1, |uc, _address, _size| {
                    uc.get_data_mut().cost.instructions += 1;
                })
                .map_err(|e| format!("unicorn: {e:?}"))?;
            uc.get_data_mut().cost.hook = Some(id);
        }
        (false, Some(id)) => {
            uc.remove_hook(id).map_err(|e| format!("unicorn: {e:?}"))?;
            uc.get_data_mut().cost.hook = None;
        }
        _ => {}
    }
    Ok(())
}

/// Runs `f` (one call into the driver) and, when counting is on, records
/// what it cost as a sample of `kind`.
pub fn measure<T>(uc: &mut Uc, kind: Cost, f: impl FnOnce(&mut Uc) -> R<T>) -> R<T> {
    if uc.get_data().cost.hook.is_none() {
        return f(uc);
    }
    let k = uc.get_data_mut();
    let open = Open {
        instructions: k.cost.instructions,
        memcpy: k.nt.memcpy.len(),
        memset: k.nt.memset.len(),
        child_instructions: 0,
        child_bytes: 0,
    };
    k.cost.stack.push(open);
    let result = f(uc);
    let k = uc.get_data_mut();
    let open = k.cost.stack.pop().expect("the sample opened above");
    let instructions = k.cost.instructions - open.instructions;
    let bytes = k.nt.memcpy[open.memcpy..].iter().sum::<u64>()
        + k.nt.memset[open.memset..].iter().sum::<u64>();
    if let Some(parent) = k.cost.stack.last_mut() {
        parent.child_instructions += instructions;
        parent.child_bytes += bytes;
    }
    k.cost.samples.push(Sample {
        kind,
        instructions: instructions - open.child_instructions,
        bytes: bytes - open.child_bytes,
    });
    result
}

/// Minimum, median and maximum of some samples' values.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Spread {
    /// How many samples.
    pub count: usize,
    /// Smallest.
    pub min: u64,
    /// Median (the upper one of an even count).
    pub median: u64,
    /// Largest.
    pub max: u64,
}

impl Spread {
    /// The spread of `values`, or `None` when there are none.
    #[must_use]
    pub fn of(mut values: Vec<u64>) -> Option<Spread> {
        values.sort_unstable();
        Some(Spread {
            count: values.len(),
            min: *values.first()?,
            median: values[values.len() / 2],
            max: *values.last()?,
        })
    }
}

/// The spreads of one kind's samples: (instructions, bytes moved).
#[must_use]
pub fn spread(samples: &[Sample], kind: Cost) -> Option<(Spread, Spread)> {
    let of = |f: fn(&Sample) -> u64| {
        Spread::of(samples.iter().filter(|s| s.kind == kind).map(f).collect())
    };
    Some((of(|s| s.instructions)?, of(|s| s.bytes)?))
}

impl Driver {
    /// Turns instruction counting on or off for this machine.
    pub fn count_instructions(&mut self, on: bool) -> R<()> {
        enable(&mut self.uc, on)
    }

    /// The samples measured so far, taken.
    pub fn take_cost_samples(&mut self) -> Vec<Sample> {
        std::mem::take(&mut self.uc.get_data_mut().cost.samples)
    }
}
