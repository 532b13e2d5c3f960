//! The driver's functions by name, from the linker map the cross-build
//! writes next to avscap.sys (`target/cross/package/avscap.map`, lld-link's
//! `/MAP`): failure messages name the driver function an address is in
//! (`avscap::kernel::capture_pin::pin_process+0x1c (avscap.sys+0x3e8c)`),
//! and coverage counts functions.
//!
//! The map lists every symbol the linker kept ("Publics by Value" and
//! "Static symbols": `section:offset`, mangled name, `Rva+Base` at the
//! preferred base). Only code symbols are kept here; a function's size runs
//! to the next code symbol (or to the end of its section, from the image's
//! section table). Names are demangled without the `::h…` hash and the
//! `.llvm.N` suffix. Functions the compiler inlined have no symbol: their
//! code is counted as their caller's.
//!
//! The map and the image must come from the same link: the map's
//! `Timestamp is …` line must equal the image's COFF `TimeDateStamp`.

use std::path::{Path, PathBuf};

use crate::machine::{Uc, R};

/// Where the cross-build writes the map (relative to the repository).
pub const MAP_PATH: &str = "target/cross/package/avscap.map";

/// One function of the image.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Function {
    /// Offset of its first byte from the image base.
    pub rva: u64,
    /// Bytes up to the next function (or the end of its section).
    pub size: u64,
    /// [`Function::size`] less the `int3` padding after the code.
    pub code_size: u64,
    /// Demangled name, without hash or `.llvm.` suffix.
    pub name: String,
    /// Other names at the same address (identical code folded by the
    /// linker), demangled.
    pub aliases: Vec<String>,
}

impl Function {
    /// Whether this function belongs to the kernel shell (see
    /// [`is_shell`]), under its name or an alias.
    #[must_use]
    pub fn is_shell(&self) -> bool {
        is_shell(&self.name) || self.aliases.iter().any(|a| is_shell(a))
    }
}

/// The code symbols of one link of avscap.sys.
#[derive(Clone, Debug)]
pub struct Symbols {
    /// The link's timestamp (map header and COFF header agree).
    pub timestamp: u32,
    /// Functions, by ascending RVA, one per address.
    pub functions: Vec<Function>,
}

/// Whether a demangled function name belongs to the kernel shell
/// (`src/kernel/`, the code that only exists in avscap.sys) rather than to
/// the portable core, `core`, `compiler_builtins`, the CRT or an import
/// thunk. The rule, on the name's *subject path*:
///
/// * a plain path (`avscap::kernel::capture_pin::pin_process`, closures
///   `…::{{closure}}` included): the path itself;
/// * a trait or inherent impl item (`<avscap::kernel::boundary::locks::SpinLockGuard<T>
///   as core::ops::drop::Drop>::drop`): the `Self` type's path;
/// * drop glue `core::ptr::drop_in_place<T>`: `T`'s path (so
///   `drop_in_place<avscap::kernel::capture_pin::PinContext>` is shell, and
///   `drop_in_place<avscap::portable::capture_engine::CaptureEngine<avscap::kernel::…>>`
///   is not: a portable type instantiated with a kernel one is portable code);
///
/// is shell when it starts with `avscap::kernel::`. In addition
/// `DriverEntry` (exported unmangled by `avscap::kernel::driver_entry`) is
/// shell.
#[must_use]
pub fn is_shell(name: &str) -> bool {
    name == "DriverEntry" || subject_path(name).starts_with("avscap::kernel::")
}

/// The path a demangled name is about: the `Self` type of an impl item
/// (`<T as Trait>::f`, `<T>::f`), the pointee of drop glue
/// (`core::ptr::drop_in_place<T>`), else the name itself.
#[must_use]
pub fn subject_path(name: &str) -> &str {
    name.strip_prefix("core::ptr::drop_in_place<")
        .or_else(|| name.strip_prefix('<'))
        .unwrap_or(name)
}

/// A demangled symbol name without hash and `.llvm.` suffix (non-Rust
/// names are returned as they are).
#[must_use]
pub fn demangle(mangled: &str) -> String {
    format!("{:#}", rustc_demangle::demangle(mangled))
}

/// A section of the image, from its section table.
struct Section {
    rva: u64,
    virtual_size: u64,
    raw_offset: u64,
    raw_size: u64,
    executable: bool,
}

impl Section {
    /// The file bytes of `rva..end` (within this section's raw data).
    fn bytes<'a>(&self, sys: &'a [u8], rva: u64, end: u64) -> &'a [u8] {
        let raw_end = self.rva + self.raw_size.min(self.virtual_size);
        let (from, to) = (rva.min(raw_end), end.min(raw_end));
        let start = (self.raw_offset + from - self.rva) as usize;
        let stop = (self.raw_offset + to - self.rva) as usize;
        sys.get(start..stop.max(start)).unwrap_or(&[])
    }
}

/// The image's COFF timestamp and its sections (the map numbers them from 1).
fn image_sections(sys: &[u8]) -> R<(u32, Vec<Section>)> {
    let u16_at = |o: usize| -> R<u16> {
        sys.get(o..o + 2)
            .map(|b| u16::from_le_bytes([b[0], b[1]]))
            .ok_or_else(|| "avscap.sys is truncated".to_string())
    };
    let u32_at = |o: usize| -> R<u32> {
        sys.get(o..o + 4)
            .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .ok_or_else(|| "avscap.sys is truncated".to_string())
    };
    let pe = u32_at(0x3c)? as usize;
    if sys.get(pe..pe + 4) != Some(b"PE\0\0".as_slice()) {
        return Err("avscap.sys is not a PE image".into());
    }
    let count = usize::from(u16_at(pe + 6)?);
    let timestamp = u32_at(pe + 8)?;
    let optional = usize::from(u16_at(pe + 20)?);
    let table = pe + 24 + optional;
    let mut sections = Vec::with_capacity(count);
    for i in 0..count {
        let h = table + 40 * i;
        let virtual_size = u64::from(u32_at(h + 8)?);
        let rva = u64::from(u32_at(h + 12)?);
        let raw_size = u64::from(u32_at(h + 16)?);
        let raw_offset = u64::from(u32_at(h + 20)?);
        let characteristics = u32_at(h + 36)?;
        sections.push(Section {
            rva,
            virtual_size,
            raw_offset,
            raw_size,
            executable: characteristics & 0x2000_0000 != 0,
        });
    }
    Ok((timestamp, sections))
}

fn hex(s: &str) -> Option<u64> {
    u64::from_str_radix(s, 16).ok()
}

impl Symbols {
    /// Parses a linker map of the image `sys` (its section table sizes the
    /// last function of each section).
    pub fn parse(map: &str, sys: &[u8]) -> R<Symbols> {
        let (timestamp, sections) = image_sections(sys)?;
        let mut map_timestamp = None;
        let mut preferred = None;
        // (rva, mangled name) of every symbol in an executable section.
        let mut raw: Vec<(u64, usize, String)> = Vec::new();
        for line in map.lines() {
            let line = line.trim();
            if let Some(rest) = line.strip_prefix("Timestamp is ") {
                map_timestamp = rest.split_whitespace().next().and_then(hex);
                continue;
            }
            if let Some(rest) = line.strip_prefix("Preferred load address is ") {
                preferred = hex(rest.trim());
                continue;
            }
            let mut tokens = line.split_whitespace();
            let (Some(at), Some(name), Some(rva_base)) =
                (tokens.next(), tokens.next(), tokens.next())
            else {
                continue;
            };
            let Some((section, _offset)) = at.split_once(':') else {
                continue;
            };
            let (Some(section), Some(rva_base)) = (hex(section), hex(rva_base)) else {
                continue;
            };
            if section == 0 || section > sections.len() as u64 {
                continue;
            }
            if !sections[section as usize - 1].executable {
                continue; // data
            }
            let preferred = preferred.ok_or("the map has no preferred load address line")?;
            let rva = rva_base
                .checked_sub(preferred)
                .ok_or_else(|| format!("symbol {name} below the preferred base"))?;
            raw.push((rva, section as usize - 1, name.to_string()));
        }
        let map_timestamp = map_timestamp.ok_or("the map has no `Timestamp is` line")?;
        if map_timestamp != u64::from(timestamp) {
            return Err(format!(
                "avscap.map (timestamp {map_timestamp:#x}) is not the map of this avscap.sys \
                 (timestamp {timestamp:#x}): rerun scripts/cross-build.sh"
            ));
        }
        if raw.is_empty() {
            return Err("the map lists no code symbol".into());
        }
        raw.sort_by_key(|(rva, _, _)| *rva);
        let mut functions: Vec<(Function, usize)> = Vec::new();
        for (rva, section, mangled) in raw {
            let name = demangle(&mangled);
            match functions.last_mut() {
                Some((f, _)) if f.rva == rva => {
                    // Folded code, or a symbol listed twice: one function.
                    if f.name != name && !f.aliases.contains(&name) {
                        if f.name.starts_with(".weak.") {
                            f.aliases.push(std::mem::replace(&mut f.name, name));
                        } else {
                            f.aliases.push(name);
                        }
                    }
                }
                _ => functions.push((
                    Function {
                        rva,
                        size: 0,
                        code_size: 0,
                        name,
                        aliases: Vec::new(),
                    },
                    section,
                )),
            }
        }
        let ends: Vec<u64> = (0..functions.len())
            .map(|i| {
                let (f, section) = &functions[i];
                let section_end = sections[*section].rva + sections[*section].virtual_size;
                functions
                    .get(i + 1)
                    .filter(|(next, s)| s == section && next.rva <= section_end)
                    .map_or(section_end, |(next, _)| next.rva)
                    .max(f.rva)
            })
            .collect();
        let functions = functions
            .into_iter()
            .zip(ends)
            .map(|((mut f, section), end)| {
                f.size = end - f.rva;
                let bytes = sections[section].bytes(sys, f.rva, end);
                let padding = bytes.iter().rev().take_while(|b| **b == 0xCC).count();
                f.code_size = f.size - (padding as u64).min(f.size);
                f
            })
            .collect();
        Ok(Symbols {
            timestamp,
            functions,
        })
    }

    /// Reads the map at `map` for the image `sys`; a missing map is a
    /// failure that says how to make it.
    pub fn load(map: &Path, sys: &[u8]) -> R<Symbols> {
        let text = std::fs::read_to_string(map).map_err(|e| {
            format!(
                "{} is missing ({e}): rerun scripts/cross-build.sh (it writes the linker map \
                 next to avscap.sys)",
                map.display()
            )
        })?;
        Symbols::parse(&text, sys).map_err(|e| format!("{}: {e}", map.display()))
    }

    /// The map of the image the harness runs ([`MAP_PATH`]).
    pub fn load_default(sys: &[u8]) -> R<Symbols> {
        Symbols::load(&default_map_path(), sys)
    }

    /// The function containing `rva`.
    #[must_use]
    pub fn function_at(&self, rva: u64) -> Option<&Function> {
        let i = self.functions.partition_point(|f| f.rva <= rva);
        let f = self.functions.get(i.checked_sub(1)?)?;
        (rva < f.rva + f.size.max(1)).then_some(f)
    }

    /// The index in [`Symbols::functions`] of the function starting at `rva`.
    #[must_use]
    pub fn index_of(&self, rva: u64) -> Option<usize> {
        self.functions.binary_search_by_key(&rva, |f| f.rva).ok()
    }

    /// `name+0xoff (avscap.sys+0xrva)`, or `avscap.sys+0xrva` outside every
    /// function.
    #[must_use]
    pub fn describe_rva(&self, rva: u64) -> String {
        match self.function_at(rva) {
            Some(f) => format!("{}+{:#x} (avscap.sys+{rva:#x})", f.name, rva - f.rva),
            None => format!("avscap.sys+{rva:#x}"),
        }
    }
}

/// [`MAP_PATH`] under the repository root.
#[must_use]
pub fn default_map_path() -> PathBuf {
    crate::session::repo_root().join(MAP_PATH)
}

/// Inside a hook (a thunk the driver called): the driver's call site, as
/// the return address at `[RSP]` described (`function+0xoff (avscap.sys+0x…)`;
/// the offset is that of the instruction after the call). A routine that
/// ends in a jump to an import (a tail call) leaves its own caller's return
/// address there: outside the image, that is said instead.
#[must_use]
pub fn caller_site(uc: &Uc) -> String {
    let k = uc.get_data();
    let (base, size) = k.image;
    match crate::machine::return_address(uc) {
        0 => "unknown call site ([RSP] unreadable)".into(),
        ret if ret >= base && ret < base + size => k.describe(ret),
        ret => {
            format!("a tail call in avscap.sys (the return address {ret:#x} is outside the image)")
        }
    }
}
