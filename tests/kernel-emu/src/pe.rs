//! Loading avscap.sys as the Windows loader would: the headers and every
//! section mapped at a base of our choosing (not the preferred one, so the
//! base relocations matter), `DIR64` relocations applied, and every import
//! bound to an address the caller chooses (a host hook).

use object::pe::{
    IMAGE_REL_BASED_ABSOLUTE, IMAGE_REL_BASED_DIR64, IMAGE_SCN_MEM_EXECUTE, IMAGE_SCN_MEM_WRITE,
};
use object::read::pe::{ImageNtHeaders, ImageThunkData, PeFile64};
use object::LittleEndian as LE;

/// Memory protection of a mapped range.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Protection {
    /// Read only (headers, `.rdata`, `.pdata`, `.reloc`).
    Read,
    /// Read and write (`.data`, `.bss`).
    ReadWrite,
    /// Read and execute (`.text`).
    ReadExecute,
}

/// One page-aligned range of the image, with its bytes.
#[derive(Debug)]
pub struct Segment {
    /// Section name (`headers` for the PE headers).
    pub name: String,
    /// Offset from the image base.
    pub rva: u64,
    /// Bytes to map (the section's virtual size, page-rounded, zero-filled
    /// past its raw data).
    pub bytes: Vec<u8>,
    /// How the section is mapped.
    pub protection: Protection,
}

/// One imported routine.
#[derive(Clone, Debug)]
pub struct Import {
    /// `ntoskrnl.exe`, `ks.sys`, … as the import directory names it.
    pub dll: String,
    /// The routine's name.
    pub name: String,
    /// RVA of its IAT slot.
    pub iat_rva: u64,
}

/// A PE image laid out for a base address, imports still unbound.
#[derive(Debug)]
pub struct Image {
    /// Where the image is laid out.
    pub base: u64,
    /// The preferred base in the optional header.
    pub preferred_base: u64,
    /// `SizeOfImage`, page-rounded.
    pub size: u64,
    /// Address of the entry point (`DriverEntry`).
    pub entry: u64,
    /// Headers and sections.
    pub segments: Vec<Segment>,
    /// Every imported routine.
    pub imports: Vec<Import>,
    /// How many `DIR64` relocations were applied.
    pub relocations: usize,
}

const PAGE: u64 = 0x1000;

fn page_round(n: u64) -> u64 {
    n.div_ceil(PAGE) * PAGE
}

impl Image {
    /// Parses `data` and lays it out at `base`.
    ///
    /// # Errors
    /// A message naming what is malformed or unsupported.
    #[allow(clippy::too_many_lines)] // one pass over the PE, in the loader's order
    pub fn load(data: &[u8], base: u64) -> Result<Image, String> {
        let pe = PeFile64::parse(data).map_err(|e| format!("not a PE32+ image: {e}"))?;
        let nt = pe.nt_headers();
        let optional = nt.optional_header();
        let preferred_base = optional.image_base.get(LE);
        let size = page_round(u64::from(optional.size_of_image.get(LE)));
        let headers = u64::from(optional.size_of_headers.get(LE));
        let mut flat = vec![0u8; size as usize];
        let head = (headers as usize).min(data.len());
        flat[..head].copy_from_slice(&data[..head]);
        let mut segments_spec = vec![(
            "headers".to_string(),
            0u64,
            page_round(headers),
            Protection::Read,
        )];
        for section in pe.section_table().iter() {
            let name = String::from_utf8_lossy(section.raw_name())
                .trim_end_matches('\0')
                .to_string();
            let va = u64::from(section.virtual_address.get(LE));
            let vsize = u64::from(section.virtual_size.get(LE));
            let raw = section
                .pe_data(data)
                .map_err(|e| format!("section {name}: {e}"))?;
            let copy = raw.len().min(vsize as usize);
            let end = va as usize + copy;
            if end > flat.len() {
                return Err(format!("section {name} lies outside SizeOfImage"));
            }
            flat[va as usize..end].copy_from_slice(&raw[..copy]);
            let chars = section.characteristics.get(LE);
            let protection = if chars & IMAGE_SCN_MEM_EXECUTE != 0 {
                Protection::ReadExecute
            } else if chars & IMAGE_SCN_MEM_WRITE != 0 {
                Protection::ReadWrite
            } else {
                Protection::Read
            };
            segments_spec.push((name, va, page_round(vsize), protection));
        }

        // Base relocations.
        let delta = base.wrapping_sub(preferred_base);
        let sections = pe.section_table();
        let mut relocations = 0;
        if let Some(mut blocks) = pe
            .data_directories()
            .relocation_blocks(data, &sections)
            .map_err(|e| format!("relocations: {e}"))?
        {
            while let Some(block) = blocks.next().map_err(|e| format!("relocations: {e}"))? {
                for reloc in block {
                    match reloc.typ {
                        IMAGE_REL_BASED_DIR64 => {
                            let at = reloc.virtual_address as usize;
                            let slot = flat.get_mut(at..at + 8).ok_or_else(|| {
                                format!("relocation at {at:#x} outside the image")
                            })?;
                            let value = u64::from_le_bytes(slot.try_into().unwrap());
                            slot.copy_from_slice(&value.wrapping_add(delta).to_le_bytes());
                            relocations += 1;
                        }
                        IMAGE_REL_BASED_ABSOLUTE => {}
                        other => return Err(format!("unsupported relocation type {other}")),
                    }
                }
            }
        }

        // Imports.
        let mut imports = Vec::new();
        if let Some(table) = pe.import_table().map_err(|e| format!("imports: {e}"))? {
            let mut descriptors = table.descriptors().map_err(|e| format!("imports: {e}"))?;
            while let Some(desc) = descriptors.next().map_err(|e| format!("imports: {e}"))? {
                let dll = String::from_utf8_lossy(
                    table
                        .name(desc.name.get(LE))
                        .map_err(|e| format!("imports: {e}"))?,
                )
                .to_string();
                let lookup = match desc.original_first_thunk.get(LE) {
                    0 => desc.first_thunk.get(LE),
                    rva => rva,
                };
                let mut thunks = table.thunks(lookup).map_err(|e| format!("imports: {e}"))?;
                let mut iat_rva = u64::from(desc.first_thunk.get(LE));
                while let Some(thunk) = thunks
                    .next::<object::pe::ImageNtHeaders64>()
                    .map_err(|e| format!("imports: {e}"))?
                {
                    if thunk.is_ordinal() {
                        return Err(format!("{dll}: import by ordinal {}", thunk.ordinal()));
                    }
                    let (_hint, name) = table
                        .hint_name(thunk.address())
                        .map_err(|e| format!("imports: {e}"))?;
                    imports.push(Import {
                        dll: dll.clone(),
                        name: String::from_utf8_lossy(name).to_string(),
                        iat_rva,
                    });
                    iat_rva += 8;
                }
            }
        }

        let entry = base + u64::from(optional.address_of_entry_point.get(LE));
        let segments = segments_spec
            .into_iter()
            .map(|(name, rva, len, protection)| Segment {
                bytes: flat[rva as usize..(rva + len).min(size) as usize].to_vec(),
                name,
                rva,
                protection,
            })
            .collect();
        Ok(Image {
            base,
            preferred_base,
            size,
            entry,
            segments,
            imports,
            relocations,
        })
    }

    /// Writes `address` into the IAT slot of `import` (in the segment that
    /// holds it).
    pub fn bind(&mut self, import: &Import, address: u64) -> Result<(), String> {
        let seg = self
            .segments
            .iter_mut()
            .filter(|s| s.rva <= import.iat_rva)
            .max_by_key(|s| s.rva)
            .ok_or("IAT slot outside every section")?;
        let at = (import.iat_rva - seg.rva) as usize;
        seg.bytes
            .get_mut(at..at + 8)
            .ok_or_else(|| format!("IAT slot of {} outside its section", import.name))?
            .copy_from_slice(&address.to_le_bytes());
        Ok(())
    }
}
