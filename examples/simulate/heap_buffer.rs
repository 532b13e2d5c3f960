//! A heap stand-in for one common buffer: `len` bytes starting on a page,
//! with a made-up logical address that is page aligned alike, and the
//! bytes at an address a pool over it hands out.
//!
//! Depends on nothing of the simulator, so the benches include it too
//! (`#[path = "../examples/simulate/heap_buffer.rs"] mod heap_buffer;`).

use avscap::portable::frame_pool::Region;
use avscap::portable::framing::PAGE_SIZE;

/// `len` zeroed bytes from a page boundary.
pub struct HeapBuffer {
    bytes: Vec<u8>,
    offset: usize,
    len: usize,
}

impl HeapBuffer {
    /// A buffer of `len` bytes (a plan's `bytes()`).
    ///
    /// # Panics
    /// If the heap cannot hold it ([`HeapBuffer::try_new`] says so instead).
    #[must_use]
    #[allow(dead_code)] // the benches' constructor; the simulator uses try_new
    pub fn new(len: usize) -> Self {
        Self::try_new(len).unwrap_or_else(|| panic!("no memory for a buffer of {len} bytes"))
    }

    /// A buffer of `len` bytes, or `None` when the heap cannot hold it
    /// (`len` plus a page overflows, or the allocation fails).
    #[must_use]
    pub fn try_new(len: usize) -> Option<Self> {
        let page = PAGE_SIZE as usize;
        let total = len.checked_add(page)?;
        let mut bytes = Vec::new();
        bytes.try_reserve_exact(total).ok()?;
        bytes.resize(total, 0);
        let offset = (page - bytes.as_ptr() as usize % page) % page;
        Some(Self { bytes, offset, len })
    }

    /// The region a pool carves: this buffer's first byte and length.
    #[must_use]
    pub fn region(&self) -> Region {
        let base = self.bytes.as_ptr() as usize + self.offset;
        Region {
            virtual_base: base,
            logical_base: 0x8000_0000,
            len: self.len,
        }
    }

    /// Where the bytes at `address` (an address inside this buffer) lie.
    fn range(&self, address: usize, len: usize) -> Option<std::ops::Range<usize>> {
        let start = address.checked_sub(self.region().virtual_base)? + self.offset;
        Some(start..start.checked_add(len)?)
    }

    /// The bytes at `address`.
    #[must_use]
    pub fn get(&self, address: usize, len: usize) -> Option<&[u8]> {
        self.bytes.get(self.range(address, len)?)
    }

    /// The bytes at `address`, writable.
    pub fn at(&mut self, address: usize, len: usize) -> Option<&mut [u8]> {
        let range = self.range(address, len)?;
        self.bytes.get_mut(range)
    }
}
