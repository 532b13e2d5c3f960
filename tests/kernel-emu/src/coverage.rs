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
use std::fmt::{self, Write as _};
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

/// Executed blocks of one machine.
#[derive(Debug, Default)]
pub struct State {
    /// Address of bit 0.
    start: u64,
    /// Block starts: one bit per byte of the executable range.
    bits: Vec<u64>,
    /// Bytes of executed blocks (a block's bytes are set when it first
    /// runs): one bit per byte of the executable range.
    covered: Vec<u64>,
}

fn test_and_set(bits: &mut [u64], offset: u64) -> bool {
    bits.get_mut((offset / 64) as usize).is_some_and(|word| {
        let was = *word & (1 << (offset % 64)) != 0;
        *word |= 1 << (offset % 64);
        was
    })
}

impl State {
    fn hit(&mut self, address: u64, size: u32) {
        let Some(offset) = address.checked_sub(self.start) else {
            return;
        };
        if !test_and_set(&mut self.bits, offset) {
            for o in offset..offset + u64::from(size) {
                test_and_set(&mut self.covered, o);
            }
        }
    }

    /// Runs of executed bytes: (absolute address, length).
    #[must_use]
    pub fn covered(&self) -> Vec<(u64, u64)> {
        let mut runs: Vec<(u64, u64)> = Vec::new();
        for (i, &word) in self.covered.iter().enumerate() {
            for b in (0..64).filter(|b| word & (1 << b) != 0) {
                let address = self.start + 64 * i as u64 + b;
                match runs.last_mut() {
                    Some((at, len)) if *at + *len == address => *len += 1,
                    _ => runs.push((address, 1)),
                }
            }
        }
        runs
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
    k.coverage.covered = k.coverage.bits.clone();
    uc.add_block_hook(start, end - 1, |uc, address, size| {
        uc.get_data_mut().coverage.hit(address, size);
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
        let _ = writeln!(text, "f {rva:x}");
    }
    for (address, len) in k.coverage.covered() {
        let _ = writeln!(text, "b {:x} {len:x}", address - k.image.0);
    }
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let path = dir.join(format!("{}-{n}.cov", std::process::id()));
    std::fs::write(&path, text).map_err(|e| format!("{}: {e}", path.display()))?;
    Ok(Some(path))
}

/// Executed / total of one group (functions or bytes).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Figure {
    /// Executed.
    pub executed: u64,
    /// In the image.
    pub total: u64,
}

impl Figure {
    /// Executed share in percent (100 for an empty group).
    #[must_use]
    #[allow(clippy::cast_precision_loss)] // well below 2^52
    pub fn percent(&self) -> f64 {
        if self.total == 0 {
            100.0
        } else {
            100.0 * self.executed as f64 / self.total as f64
        }
    }

    fn add(&mut self, executed: u64, total: u64) {
        self.executed += executed;
        self.total += total;
    }
}

impl fmt::Display for Figure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} of {} ({:.1}%)",
            self.executed,
            self.total,
            self.percent()
        )
    }
}

/// One function's executed code bytes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Partial {
    /// The function.
    pub name: String,
    /// Its code bytes in executed blocks / its code bytes (padding excluded).
    pub bytes: Figure,
}

/// The aggregated coverage of a test run.
#[derive(Clone, Debug, Default)]
pub struct Report {
    /// Coverage files read (one per driver).
    pub runs: usize,
    /// Functions of the kernel shell ([`crate::symbols::is_shell`]).
    pub shell: Figure,
    /// Code bytes of the kernel shell in executed blocks.
    pub shell_bytes: Figure,
    /// Functions of the portable core as linked into the image
    /// (`avscap::portable::…`, drop glue and impls of its types).
    pub portable: Figure,
    /// Every function of the image (with `core`, `compiler_builtins`, the
    /// CRT's handlers and the import thunks).
    pub image: Figure,
    /// Shell functions never executed, by name.
    pub shell_never: Vec<String>,
    /// Shell functions executed in part, most unexecuted bytes first.
    pub shell_partial: Vec<Partial>,
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
    let end = symbols.functions.last().map_or(0, |f| f.rva + f.size);
    let mut covered = vec![false; end as usize];
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
            let bad = || format!("{}: bad line {line:?}", path.display());
            let fields: Vec<u64> = line
                .split_whitespace()
                .skip(1)
                .map(|h| u64::from_str_radix(h, 16).map_err(|_| bad()))
                .collect::<R<_>>()?;
            match (line.split_whitespace().next(), fields.as_slice()) {
                (Some("f"), [rva]) => {
                    executed.insert(*rva);
                }
                (Some("b"), [rva, len]) => {
                    let from = (*rva as usize).min(covered.len());
                    let to = ((rva + len) as usize).min(covered.len());
                    covered[from..to].fill(true);
                }
                _ => return Err(bad()),
            }
        }
        runs += 1;
    }
    let mut r = Report {
        runs,
        ..Report::default()
    };
    for f in &symbols.functions {
        let hit = executed.contains(&f.rva);
        r.image.add(u64::from(hit), 1);
        if f.is_shell() {
            r.shell.add(u64::from(hit), 1);
            let from = f.rva as usize;
            let bytes = covered[from..from + f.code_size as usize]
                .iter()
                .filter(|b| **b)
                .count() as u64;
            r.shell_bytes.add(bytes, f.code_size);
            if !hit {
                r.shell_never.push(f.name.clone());
            } else if bytes < f.code_size {
                r.shell_partial.push(Partial {
                    name: f.name.clone(),
                    bytes: Figure {
                        executed: bytes,
                        total: f.code_size,
                    },
                });
            }
        } else if is_portable(&f.name) {
            r.portable.add(u64::from(hit), 1);
            if !hit {
                r.portable_never.push(f.name.clone());
            }
        }
    }
    r.shell_partial
        .sort_by_key(|p| std::cmp::Reverse(p.bytes.total - p.bytes.executed));
    Ok(r)
}

/// How many of the partly executed shell functions the report lists.
const PARTIAL_LISTED: usize = 12;

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "coverage of avscap.sys over {} emulated driver(s) (functions are the linker map's: inlined ones count as their callers)",
            self.runs
        )?;
        writeln!(f, "  kernel shell:  {} functions executed", self.shell)?;
        writeln!(
            f,
            "  kernel shell:  {} code bytes in executed blocks",
            self.shell_bytes
        )?;
        writeln!(f, "  portable core: {} functions executed", self.portable)?;
        writeln!(f, "  whole image:   {} functions executed", self.image)?;
        writeln!(f, "kernel-shell functions never executed:")?;
        if self.shell_never.is_empty() {
            writeln!(f, "  (none)")?;
        }
        for name in &self.shell_never {
            writeln!(f, "  {name}")?;
        }
        writeln!(
            f,
            "kernel-shell functions with code never executed (most first, {} of {}):",
            self.shell_partial.len().min(PARTIAL_LISTED),
            self.shell_partial.len()
        )?;
        for p in self.shell_partial.iter().take(PARTIAL_LISTED) {
            writeln!(
                f,
                "  {:>5} bytes unexecuted: {} ({} bytes executed)",
                p.bytes.total - p.bytes.executed,
                p.name,
                p.bytes
            )?;
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
