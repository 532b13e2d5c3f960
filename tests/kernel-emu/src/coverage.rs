//! Which of the driver's functions executed: a unicorn block hook over the
//! image's executable range sets one bit per executed block start; a
//! function executed when a block started inside it (see
//! [`crate::symbols`] for what a function is, and why inlined code counts
//! as its caller's).
//!
//! Cargo runs each `tests/*.rs` as a process of its own, so the figure is
//! aggregated through files: when `AVSCAP_EMU_COVERAGE_DIR` is set, every
//! [`crate::Driver`] writes the RVAs of the functions it executed to a file
//! of its own in that directory when it is dropped; [`report`] (the
//! `coverage_report` example, run by scripts/test-all.sh) reads them all
//! against the map. Tests may also leave a `cost.txt` (the instruction
//! counts of tests/cost.rs) there for the report to print.

use std::collections::BTreeSet;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use crate::machine::{Kernel, Uc, R};
use crate::pe::{Image, Protection};
use crate::symbols::{subject_path, Symbols};

/// The directory the drivers of a test run write their coverage to.
pub const DIR_ENV: &str = "AVSCAP_EMU_COVERAGE_DIR";
/// The kernel shell must have executed at least this share of its
/// functions (percent).
pub const SHELL_MINIMUM_PERCENT: f64 = 90.0;

/// Executed block starts of one machine.
#[derive(Debug, Default)]
pub struct State {
    /// Address of bit 0.
    start: u64,
    /// One bit per byte of the executable range.
    bits: Vec<u64>,
}

impl State {
    fn hit(&mut self, address: u64) {
        let Some(offset) = address.checked_sub(self.start) else {
            return;
        };
        if let Some(word) = self.bits.get_mut((offset / 64) as usize) {
            *word |= 1 << (offset % 64);
        }
    }

    /// Every executed block start (absolute addresses).
    pub fn blocks(&self) -> impl Iterator<Item = u64> + '_ {
        self.bits.iter().enumerate().flat_map(move |(i, &word)| {
            (0..64)
                .filter(move |b| word & (1 << b) != 0)
                .map(move |b| self.start + 64 * i as u64 + b)
        })
    }
}

/// Installs the block hook over the image's executable sections (called by
/// the loader once the image is mapped).
pub fn install(uc: &mut Uc, image: &Image) -> R<()> {
    let code = image
        .segments
        .iter()
        .filter(|s| s.protection == Protection::ReadExecute && !s.bytes.is_empty());
    let start = code.clone().map(|s| s.rva).min();
    let end = code.map(|s| s.rva + s.bytes.len() as u64).max();
    let (Some(start), Some(end)) = (start, end) else {
        return Err("the image has no executable section".into());
    };
    let (start, end) = (image.base + start, image.base + end);
    let k = uc.get_data_mut();
    k.coverage.start = start;
    k.coverage.bits = vec![0; (end - start).div_ceil(64) as usize];
    uc.add_block_hook(start, end - 1, |uc, address, _size| {
        uc.get_data_mut().coverage.hit(address);
    })
    .map_err(|e| format!("unicorn: {e:?}"))?;
    Ok(())
}

/// RVAs of the functions (entries of [`Symbols::functions`]) the machine
/// executed.
#[must_use]
pub fn executed(k: &Kernel) -> BTreeSet<u64> {
    let Some(symbols) = k.symbols.as_deref() else {
        return BTreeSet::new();
    };
    let base = k.image.0;
    k.coverage
        .blocks()
        .filter_map(|a| symbols.function_at(a - base).map(|f| f.rva))
        .collect()
}

/// Writes the machine's executed functions to a new file in the
/// directory named by [`DIR_ENV`], if it is set. Returns the file.
pub fn save(k: &Kernel) -> R<Option<PathBuf>> {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let Some(dir) = std::env::var_os(DIR_ENV) else {
        return Ok(None);
    };
    let Some(symbols) = k.symbols.as_deref() else {
        return Ok(None);
    };
    let dir = PathBuf::from(dir);
    std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let mut text = format!("timestamp {:08x}\n", symbols.timestamp);
    for rva in executed(k) {
        text.push_str(&format!("{rva:x}\n"));
    }
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let path = dir.join(format!("{}-{n}.cov", std::process::id()));
    std::fs::write(&path, text).map_err(|e| format!("{}: {e}", path.display()))?;
    Ok(Some(path))
}

/// Executed / total functions of one group.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Figure {
    /// Functions executed.
    pub executed: usize,
    /// Functions in the map.
    pub total: usize,
}

impl Figure {
    /// Executed share in percent (100 for an empty group).
    #[must_use]
    pub fn percent(&self) -> f64 {
        if self.total == 0 {
            100.0
        } else {
            100.0 * self.executed as f64 / self.total as f64
        }
    }
}

impl fmt::Display for Figure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} of {} functions executed ({:.1}%)",
            self.executed,
            self.total,
            self.percent()
        )
    }
}

/// The aggregated coverage of a test run.
#[derive(Clone, Debug, Default)]
pub struct Report {
    /// Coverage files read (one per driver).
    pub runs: usize,
    /// The kernel shell ([`crate::symbols::is_shell`]).
    pub shell: Figure,
    /// The portable core as linked into the image (`avscap::portable::…`,
    /// drop glue and impls of its types).
    pub portable: Figure,
    /// Every function of the image (with `core`, `compiler_builtins`, the
    /// CRT's handlers and the import thunks).
    pub image: Figure,
    /// Shell functions never executed, by name.
    pub shell_never: Vec<String>,
    /// Portable-core functions never executed, by name.
    pub portable_never: Vec<String>,
}

fn is_portable(name: &str) -> bool {
    subject_path(name).starts_with("avscap::portable::")
}

/// Aggregates the coverage files in `dir` (written for the image of
/// `symbols`; a file of another link is a failure).
pub fn report(dir: &Path, symbols: &Symbols) -> R<Report> {
    let mut executed = BTreeSet::new();
    let mut runs = 0;
    let entries = std::fs::read_dir(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let mut paths: Vec<PathBuf> = entries
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "cov"))
        .collect();
    paths.sort();
    let expected = format!("timestamp {:08x}", symbols.timestamp);
    for path in paths {
        let text =
            std::fs::read_to_string(&path).map_err(|e| format!("{}: {e}", path.display()))?;
        let mut lines = text.lines();
        if lines.next() != Some(expected.as_str()) {
            return Err(format!(
                "{} was written for another build of avscap.sys (clear the directory)",
                path.display()
            ));
        }
        for line in lines {
            let rva = u64::from_str_radix(line, 16)
                .map_err(|e| format!("{}: {line:?}: {e}", path.display()))?;
            executed.insert(rva);
        }
        runs += 1;
    }
    let mut r = Report {
        runs,
        ..Report::default()
    };
    for f in &symbols.functions {
        let hit = executed.contains(&f.rva);
        let count = |figure: &mut Figure| {
            figure.total += 1;
            figure.executed += usize::from(hit);
        };
        count(&mut r.image);
        if f.is_shell() {
            count(&mut r.shell);
            if !hit {
                r.shell_never.push(f.name.clone());
            }
        } else if is_portable(&f.name) {
            count(&mut r.portable);
            if !hit {
                r.portable_never.push(f.name.clone());
            }
        }
    }
    Ok(r)
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "coverage of avscap.sys over {} emulated driver(s), by function (the linker map's; inlined functions count as their callers):",
            self.runs
        )?;
        writeln!(f, "  kernel shell:  {}", self.shell)?;
        writeln!(f, "  portable core: {}", self.portable)?;
        writeln!(f, "  whole image:   {}", self.image)?;
        writeln!(f, "kernel-shell functions never executed:")?;
        if self.shell_never.is_empty() {
            writeln!(f, "  (none)")?;
        }
        for name in &self.shell_never {
            writeln!(f, "  {name}")?;
        }
        writeln!(f, "portable-core functions never executed:")?;
        if self.portable_never.is_empty() {
            writeln!(f, "  (none)")?;
        }
        for name in &self.portable_never {
            writeln!(f, "  {name}")?;
        }
        Ok(())
    }
}

impl crate::Driver {
    /// Writes the functions this machine executed to the directory named
    /// by [`DIR_ENV`], if it is set (a failure to write is reported on
    /// stderr: the report then misses this driver's share).
    pub fn save_coverage(&self) {
        if let Err(e) = save(self.uc.get_data()) {
            eprintln!("coverage of this driver not saved: {e}");
        }
    }
}
