//! Thin wrappers over single privileged or special x86-64 instructions.

use core::arch::asm;

/// `cpuid` leaf/subleaf → `(eax, ebx, ecx, edx)`.
pub fn cpuid(leaf: u32, sub: u32) -> (u32, u32, u32, u32) {
    let r = core::arch::x86_64::__cpuid_count(leaf, sub);
    (r.eax, r.ebx, r.ecx, r.edx)
}

/// Writes a model-specific register.
///
/// # Safety
/// The MSR and value must be valid for this CPU (a bad one faults).
pub unsafe fn wrmsr(msr: u32, value: u64) {
    // Safety: per contract.
    unsafe {
        asm!("wrmsr", in("ecx") msr, in("eax") value as u32, in("edx") (value >> 32) as u32,
             options(nostack, preserves_flags));
    }
}

/// Reads the time-stamp counter.
pub fn rdtsc() -> u64 {
    // Safety: rdtsc has no side effects.
    unsafe { core::arch::x86_64::_rdtsc() }
}

/// One 64-bit value from RDSEED, if the CPU has it and it succeeded.
pub fn rdseed() -> Option<u64> {
    if cpuid(7, 0).1 & (1 << 18) == 0 {
        return None;
    }
    let (v, ok): (u64, u8);
    // Safety: CPUID says the instruction exists.
    unsafe { asm!("rdseed {v}", "setc {ok}", v = out(reg) v, ok = out(reg_byte) ok, options(nomem, nostack)) };
    (ok == 1).then_some(v)
}

/// One 64-bit value from RDRAND, if the CPU has it and it succeeded.
pub fn rdrand() -> Option<u64> {
    if cpuid(1, 0).2 & (1 << 30) == 0 {
        return None;
    }
    let (v, ok): (u64, u8);
    // Safety: CPUID says the instruction exists.
    unsafe { asm!("rdrand {v}", "setc {ok}", v = out(reg) v, ok = out(reg_byte) ok, options(nomem, nostack)) };
    (ok == 1).then_some(v)
}

/// Writes a byte to an I/O port.
///
/// # Safety
/// The port must be one whose side effects the caller intends (here: Xen's 0xE9 debug port).
pub unsafe fn outb(port: u16, v: u8) {
    // Safety: per contract.
    unsafe { asm!("out dx, al", in("dx") port, in("al") v, options(nomem, nostack, preserves_flags)) }
}

/// Reads CR2 (the faulting address of the last page fault).
pub fn cr2() -> u64 {
    let v;
    // Safety: reading CR2 has no side effects (CPL 0).
    unsafe { asm!("mov {}, cr2", out(reg) v, options(nomem, nostack, preserves_flags)) };
    v
}

/// Reads CR3 (the page-table root).
pub fn cr3() -> u64 {
    let v;
    // Safety: reading CR3 has no side effects (CPL 0).
    unsafe { asm!("mov {}, cr3", out(reg) v, options(nomem, nostack, preserves_flags)) };
    v
}

/// Reloads CR3, flushing all non-global TLB entries.
///
/// # Safety
/// `root` must be a valid PML4 that maps the running code, data and stack.
pub unsafe fn write_cr3(root: u64) {
    // Safety: per contract.
    unsafe { asm!("mov cr3, {}", in(reg) root, options(nostack, preserves_flags)) };
}

/// The idle instruction pair: enable interrupts, halt until one arrives, disable them again.
///
/// `sti` takes effect after the next instruction, so an upcall already pending is taken
/// *during* `hlt` and cannot be lost between the check and the halt. Never `cli; hlt`: Xen
/// treats that as the vCPU going down and powers the domain off.
pub fn idle_until_interrupt() {
    // Safety: interrupts are taken only between `sti` and `cli`, on the current stack (see
    // `idt`); without `nostack` the compiler keeps nothing live in the red zone across this
    // block, so the interrupt frame pushed below `rsp` overwrites nothing.
    unsafe { asm!("sti", "hlt", "cli", options(nomem)) };
}

/// Halts forever with interrupts off: the last resort after a failed shutdown. On Xen this
/// takes the vCPU (and so the domain) down.
pub fn halt_forever() -> ! {
    loop {
        // Safety: stops the CPU; nothing runs afterwards.
        unsafe { asm!("cli", "hlt", options(nomem, nostack)) };
    }
}
