//! What a freestanding binary needs from us: the panic handler, the `mem*` functions the
//! compiler emits calls to, and the unused unwinding personality symbol.

use core::arch::asm;
use core::fmt::Write;
use core::panic::PanicInfo;

#[panic_handler]
fn panic(info: &PanicInfo<'_>) -> ! {
    let mut line = xen_front::console::LineBuffer::default();
    let _ = write!(line, "PANIC: {}", info);
    xen_front::console::write_fault_text(line.as_str());
    xen_front::console::write_fault_text("\r\n");
    crate::crash()
}

/// Never called (panic=abort). The prebuilt libcore of the linux-gnu target references it
/// from its unwind tables, so unoptimised builds fail to link without it.
#[unsafe(no_mangle)]
pub extern "C" fn rust_eh_personality() {}

// The prebuilt compiler_builtins of the linux-gnu target does not export mem* (libc does
// there). `rep movsb/stosb` cannot be turned back into calls to themselves by LLVM.

/// # Safety
/// C `memcpy` contract: `n` bytes valid at both, not overlapping.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn memcpy(dst: *mut u8, src: *const u8, n: usize) -> *mut u8 {
    // Safety: per the C contract the caller upholds.
    unsafe {
        asm!("rep movsb", inout("rcx") n => _, inout("rdi") dst => _, inout("rsi") src => _,
             options(nostack, preserves_flags));
    }
    dst
}

/// # Safety
/// C `memmove` contract: `n` bytes valid at both (may overlap).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn memmove(dst: *mut u8, src: *const u8, n: usize) -> *mut u8 {
    if (dst as usize).wrapping_sub(src as usize) >= n {
        // No harmful overlap: forward copy.
        // Safety: per the C contract.
        unsafe { memcpy(dst, src, n) }
    } else {
        // dst inside [src, src+n): copy backwards, then restore the direction flag.
        // Safety: per the C contract; the pointers stay within the two ranges.
        unsafe {
            asm!("std", "rep movsb", "cld",
                 inout("rcx") n => _,
                 inout("rdi") dst.add(n).wrapping_sub(1) => _,
                 inout("rsi") src.add(n).wrapping_sub(1) => _,
                 options(nostack));
        }
        dst
    }
}

/// # Safety
/// C `memset` contract: `n` bytes valid at `dst`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn memset(dst: *mut u8, c: i32, n: usize) -> *mut u8 {
    // Safety: per the C contract.
    unsafe {
        asm!("rep stosb", inout("rcx") n => _, inout("rdi") dst => _, in("al") c as u8,
             options(nostack, preserves_flags));
    }
    dst
}

/// # Safety
/// C `memcmp` contract: `n` bytes valid at both.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn memcmp(a: *const u8, b: *const u8, n: usize) -> i32 {
    let mut i = 0;
    while i < n {
        // Safety: i < n, within both ranges per the contract. Volatile keeps LLVM from
        // turning this loop into a call to memcmp itself.
        let (x, y) = unsafe { (core::ptr::read_volatile(a.add(i)), core::ptr::read_volatile(b.add(i))) };
        if x != y {
            return i32::from(x) - i32::from(y);
        }
        i += 1;
    }
    0
}

/// # Safety
/// As for `memcmp`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn bcmp(a: *const u8, b: *const u8, n: usize) -> i32 {
    // Safety: same contract.
    unsafe { memcmp(a, b, n) }
}
