//! Page-table edits on the boot identity map (0–4 GiB in 2 MiB pages).
//!
//! So far only one: the page below the boot stack is unmapped, so a stack overflow faults
//! (and is reported) instead of silently overwriting whatever `.bss` lies below.

use core::cell::UnsafeCell;

use super::cpu;

const PRESENT: u64 = 1 << 0;
const WRITABLE: u64 = 1 << 1;
const HUGE: u64 = 1 << 7;
const ADDR_MASK: u64 = 0x000f_ffff_ffff_f000;

#[repr(C, align(4096))]
struct PageTable(UnsafeCell<[u64; 512]>);
// Safety: edited only by `unmap_guard_page` during single-threaded boot.
unsafe impl Sync for PageTable {}

/// The 4 KiB table that replaces the 2 MiB mapping around the guard page.
static GUARD_PT: PageTable = PageTable(UnsafeCell::new([0; 512]));

/// Why the guard page could not be set up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GuardError {
    /// The address is not page-aligned.
    Unaligned,
    /// Some level of the walk was not present.
    NotMapped,
    /// The 2 MiB region was already split (a second guard page is not supported).
    AlreadySplit,
}

/// Unmaps the 4 KiB page at `guard` (inside the boot identity map).
///
/// # Safety
/// Nothing may use the page at `guard` afterwards; call once during boot with interrupts
/// disabled, while the boot page tables (identity-mapped) are live.
pub unsafe fn unmap_guard_page(guard: usize) -> Result<(), GuardError> {
    if !guard.is_multiple_of(4096) {
        return Err(GuardError::Unaligned);
    }
    let va = guard as u64;
    let pml4 = (cpu::cr3() & ADDR_MASK) as *mut u64;
    // Safety: the boot tables are identity-mapped and the indices are < 512.
    unsafe {
        let pml4e = pml4.add(((va >> 39) & 511) as usize).read_volatile();
        if pml4e & PRESENT == 0 {
            return Err(GuardError::NotMapped);
        }
        let pdpt = (pml4e & ADDR_MASK) as *mut u64;
        let pdpte = pdpt.add(((va >> 30) & 511) as usize).read_volatile();
        if pdpte & PRESENT == 0 || pdpte & HUGE != 0 {
            return Err(GuardError::NotMapped);
        }
        let pd = (pdpte & ADDR_MASK) as *mut u64;
        let pde_ptr = pd.add(((va >> 21) & 511) as usize);
        let pde = pde_ptr.read_volatile();
        if pde & PRESENT == 0 {
            return Err(GuardError::NotMapped);
        }
        if pde & HUGE == 0 {
            return Err(GuardError::AlreadySplit);
        }
        // Same 2 MiB, same attributes, in 4 KiB pages, minus the guard.
        let base = pde & ADDR_MASK & !0x1f_ffff;
        let pt = &mut *GUARD_PT.0.get();
        for (i, e) in pt.iter_mut().enumerate() {
            *e = (base + i as u64 * 4096) | PRESENT | WRITABLE;
        }
        pt[((va >> 12) & 511) as usize] = 0;
        pde_ptr.write_volatile(GUARD_PT.0.get() as u64 | PRESENT | WRITABLE);
        cpu::write_cr3(cpu::cr3());
    }
    Ok(())
}
