//! Pages that another domain may read or write at any moment.
//!
//! A [`SharedPage`] never hands out a Rust reference to its bytes: the peer can change them
//! between any two instructions, so every access is an atomic load or store (plain `mov`s on
//! x86, but without the data-race undefined behaviour a `&[u8]` would carry). Callers copy
//! what they need out of the page *once* and look only at their copy.

use core::cell::UnsafeCell;
use core::ptr::NonNull;
use core::sync::atomic::{AtomicU8, AtomicU16, AtomicU32, AtomicU64, Ordering, fence};

/// Size of a Xen page.
pub const PAGE_SIZE: usize = 4096;

/// Backing storage for one page that will be shared: page-aligned, interior-mutable.
///
/// The appliance keeps these in `.bss`; the simulated Xen leaks them from the heap.
#[repr(C, align(4096))]
pub struct PageCell(UnsafeCell<[u8; PAGE_SIZE]>);

// Safety: every access to the cell's bytes goes through `SharedPage`, which only uses atomic
// operations, so concurrent use from several threads (or domains) is not a data race.
unsafe impl Sync for PageCell {}

impl PageCell {
    /// A zeroed page.
    pub const fn new() -> Self {
        PageCell(UnsafeCell::new([0; PAGE_SIZE]))
    }

    /// The address of the page's first byte (its guest-physical address in the appliance,
    /// where memory is identity-mapped).
    pub fn addr(&self) -> usize {
        self.0.get() as usize
    }
}

impl core::fmt::Debug for PageCell {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        // Never the bytes: a shared page may be changing under us.
        write!(f, "PageCell@{:#x}", self.addr())
    }
}

impl Default for PageCell {
    fn default() -> Self {
        Self::new()
    }
}

/// A view of one 4 KiB page shared with another domain. Copyable: it is only an address.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SharedPage {
    base: NonNull<u8>,
}

// Safety: the view only performs atomic accesses on the page it names.
unsafe impl Send for SharedPage {}
// Safety: as above.
unsafe impl Sync for SharedPage {}

impl SharedPage {
    /// A view of a page we own for the program's lifetime.
    pub fn from_static(cell: &'static PageCell) -> Self {
        SharedPage { base: NonNull::new(cell.0.get().cast()).expect("static is non-null") }
    }

    /// A view of the page at `addr` (e.g. a Xen special page or a foreign mapping).
    ///
    /// # Safety
    /// `addr` must be 4096-aligned and the 4096 bytes there must stay mapped, readable and
    /// writable for as long as any copy of the returned view is used, and must not be accessed
    /// through Rust references meanwhile.
    pub unsafe fn from_addr(addr: usize) -> Self {
        assert!(addr != 0 && addr.is_multiple_of(PAGE_SIZE), "shared page must be page-aligned");
        // Safety: non-zero checked just above.
        SharedPage { base: unsafe { NonNull::new_unchecked(addr as *mut u8) } }
    }

    /// Address of the page.
    pub fn addr(&self) -> usize {
        self.base.as_ptr() as usize
    }

    fn ptr(&self, off: usize, size: usize) -> *mut u8 {
        assert!(off.is_multiple_of(size), "unaligned shared-page access");
        assert!(off + size <= PAGE_SIZE, "shared-page access past the page");
        // Safety: `off + size <= PAGE_SIZE`, so the result stays within the page.
        unsafe { self.base.as_ptr().add(off) }
    }

    /// Reads the byte at `off`.
    pub fn read_u8(&self, off: usize) -> u8 {
        // Safety: in bounds (checked by `ptr`), the page outlives the view, access is atomic.
        unsafe { AtomicU8::from_ptr(self.ptr(off, 1)) }.load(Ordering::Relaxed)
    }

    /// Writes the byte at `off`.
    pub fn write_u8(&self, off: usize, v: u8) {
        // Safety: as in `read_u8`.
        unsafe { AtomicU8::from_ptr(self.ptr(off, 1)) }.store(v, Ordering::Relaxed)
    }

    /// Reads the little-endian `u16` at `off` (2-aligned).
    pub fn read_u16(&self, off: usize) -> u16 {
        // Safety: in bounds and aligned (checked by `ptr`), atomic access.
        unsafe { AtomicU16::from_ptr(self.ptr(off, 2).cast()) }.load(Ordering::Relaxed)
    }

    /// Writes the `u16` at `off` (2-aligned).
    pub fn write_u16(&self, off: usize, v: u16) {
        // Safety: as in `read_u16`.
        unsafe { AtomicU16::from_ptr(self.ptr(off, 2).cast()) }.store(v, Ordering::Relaxed)
    }

    /// Reads the `u32` at `off` (4-aligned).
    pub fn read_u32(&self, off: usize) -> u32 {
        // Safety: in bounds and aligned (checked by `ptr`), atomic access.
        unsafe { AtomicU32::from_ptr(self.ptr(off, 4).cast()) }.load(Ordering::Relaxed)
    }

    /// Writes the `u32` at `off` (4-aligned).
    pub fn write_u32(&self, off: usize, v: u32) {
        // Safety: as in `read_u32`.
        unsafe { AtomicU32::from_ptr(self.ptr(off, 4).cast()) }.store(v, Ordering::Relaxed)
    }

    /// Reads the `u64` at `off` (8-aligned).
    pub fn read_u64(&self, off: usize) -> u64 {
        // Safety: in bounds and aligned (checked by `ptr`), atomic access.
        unsafe { AtomicU64::from_ptr(self.ptr(off, 8).cast()) }.load(Ordering::Relaxed)
    }

    /// Writes the `u64` at `off` (8-aligned).
    pub fn write_u64(&self, off: usize, v: u64) {
        // Safety: as in `read_u64`.
        unsafe { AtomicU64::from_ptr(self.ptr(off, 8).cast()) }.store(v, Ordering::Relaxed)
    }

    /// The `u8` at `off` as an atomic, for read-modify-write on flags both sides change
    /// (notify bytes, event bits).
    pub fn atomic_u8(&self, off: usize) -> &AtomicU8 {
        // Safety: in bounds; an atomic reference to shared memory is sound because every
        // access to it is atomic; the page outlives `self`.
        unsafe { AtomicU8::from_ptr(self.ptr(off, 1)) }
    }

    /// The `u16` at `off` as an atomic (grant-entry flags are compare-exchanged).
    pub fn atomic_u16(&self, off: usize) -> &AtomicU16 {
        // Safety: as in `atomic_u8`.
        unsafe { AtomicU16::from_ptr(self.ptr(off, 2).cast()) }
    }

    /// The `u32` at `off` as an atomic.
    pub fn atomic_u32(&self, off: usize) -> &AtomicU32 {
        // Safety: as in `atomic_u8`.
        unsafe { AtomicU32::from_ptr(self.ptr(off, 4).cast()) }
    }

    /// The `u64` at `off` as an atomic (event-channel bitmaps).
    pub fn atomic_u64(&self, off: usize) -> &AtomicU64 {
        // Safety: as in `atomic_u8`.
        unsafe { AtomicU64::from_ptr(self.ptr(off, 8).cast()) }
    }

    /// Copies `dst.len()` bytes starting at `off` out of the page.
    pub fn copy_out(&self, off: usize, dst: &mut [u8]) {
        assert!(off <= PAGE_SIZE && dst.len() <= PAGE_SIZE - off, "copy past the page");
        for (i, b) in dst.iter_mut().enumerate() {
            *b = self.read_u8(off + i);
        }
    }

    /// Copies `src` into the page starting at `off`.
    pub fn copy_in(&self, off: usize, src: &[u8]) {
        assert!(off <= PAGE_SIZE && src.len() <= PAGE_SIZE - off, "copy past the page");
        for (i, &b) in src.iter().enumerate() {
            self.write_u8(off + i, b);
        }
    }

    /// Fills `len` bytes at `off` with `v`.
    pub fn fill(&self, off: usize, len: usize, v: u8) {
        assert!(off <= PAGE_SIZE && len <= PAGE_SIZE - off, "fill past the page");
        for i in 0..len {
            self.write_u8(off + i, v);
        }
    }
}

/// Orders our earlier loads from shared memory before later ones (consumer side: read the
/// producer index, `read_barrier()`, then read the slots).
#[inline(always)]
pub fn read_barrier() {
    fence(Ordering::Acquire);
}

/// Orders our earlier stores to shared memory before later ones (producer side: fill the
/// slots, `write_barrier()`, then publish the index).
#[inline(always)]
pub fn write_barrier() {
    fence(Ordering::Release);
}

/// Full barrier: orders earlier stores before later loads (publish an index, `full_barrier()`,
/// then check whether the peer wants a notification).
#[inline(always)]
pub fn full_barrier() {
    fence(Ordering::SeqCst);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn page() -> SharedPage {
        SharedPage::from_static(Box::leak(Box::new(PageCell::new())))
    }

    #[test]
    fn little_endian_fields_and_copies() {
        let p = page();
        p.write_u32(2048, 0x1122_3344);
        assert_eq!(p.read_u8(2048), 0x44);
        assert_eq!(p.read_u16(2050), 0x1122);
        p.copy_in(4090, b"abcdef");
        let mut out = [0u8; 6];
        p.copy_out(4090, &mut out);
        assert_eq!(&out, b"abcdef");
        p.fill(0, 16, 0xa5);
        assert_eq!(p.read_u64(8), 0xa5a5_a5a5_a5a5_a5a5);
        assert!(p.atomic_u16(0).compare_exchange(0xa5a5, 0, Ordering::SeqCst, Ordering::SeqCst).is_ok());
    }

    #[test]
    #[should_panic(expected = "past the page")]
    fn access_past_the_page_is_refused() {
        page().read_u32(4096);
    }

    #[test]
    #[should_panic(expected = "past the page")]
    fn copy_past_the_page_is_refused() {
        page().copy_out(4095, &mut [0u8; 2]);
    }
}
