//! Hypercalls: Xen detection, the hypercall page, and our own wrappers with the x86-64 ABI.
//!
//! Arguments go in `rdi, rsi, rdx, r10, r8` (there is no sixth), the result comes back in
//! `rax`, and a debug hypervisor overwrites every argument register it was declared to take,
//! so all five are clobbered on every call. The `abi_pinned` test runs the real call
//! sequence against a probe that records the registers.

use core::arch::asm;
use core::cell::UnsafeCell;
use core::sync::atomic::{AtomicUsize, Ordering};

use crate::abi::{self, hypercall_nr as nr};
use crate::arch::cpu;

/// A failed hypercall: the negated Xen errno it returned.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct XenError(pub i64);

impl core::fmt::Display for XenError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "Xen error -{}", self.0)
    }
}

/// Result of a hypercall.
pub type XenResult<T> = Result<T, XenError>;

fn check(rc: i64) -> XenResult<i64> {
    if rc < 0 { Err(XenError(-rc)) } else { Ok(rc) }
}

/// The page Xen fills with 32-byte call stubs (`mov $nr,%eax; vmcall|vmmcall; ret`), so we
/// never have to pick between Intel's and AMD's instruction ourselves.
#[repr(C, align(4096))]
struct HypercallPage(UnsafeCell<[u8; 4096]>);

// Safety: written once by Xen during `init`, then only executed.
unsafe impl Sync for HypercallPage {}

static HYPERCALL_PAGE: HypercallPage = HypercallPage(UnsafeCell::new([0; 4096]));
/// Address of the installed page; 0 until `init` succeeded.
static PAGE_BASE: AtomicUsize = AtomicUsize::new(0);

/// What CPUID told us about the hypervisor.
#[derive(Clone, Copy, Debug)]
pub struct XenCpuid {
    /// First leaf of the Xen range (0x40000000 or 0x40000100 with Viridian).
    pub base: u32,
    /// `major << 16 | minor`.
    pub version: u32,
    /// MSR used to install the hypercall page.
    pub msr: u32,
    /// Our domid, when leaf base+4 reports it.
    pub domid: Option<u16>,
}

/// Looks for the "XenVMMXenVMM" signature in the hypervisor CPUID leaves.
pub fn detect() -> Option<XenCpuid> {
    for k in 0..0x100u32 {
        let base = 0x4000_0000 + k * 0x100;
        let (eax, ebx, ecx, edx) = cpu::cpuid(base, 0);
        if (ebx, ecx, edx) == (0x566e_6558, 0x6558_4d4d, 0x4d4d_566e) && eax >= base + 2 {
            let version = cpu::cpuid(base + 1, 0).0;
            let msr = cpu::cpuid(base + 2, 0).1;
            let domid = if eax >= base + 4 {
                let (feat, _, dom, _) = cpu::cpuid(base + 4, 0);
                (feat & (1 << 4) != 0).then_some(dom as u16)
            } else {
                None
            };
            return Some(XenCpuid { base, version, msr, domid });
        }
    }
    None
}

/// Asks Xen to fill the hypercall page. Returns false if Xen did not write it.
pub fn init(xen: &XenCpuid) -> bool {
    let page = HYPERCALL_PAGE.0.get() as *mut u8;
    // Pre-fill with `ret` so a page Xen never wrote is detectable.
    // Safety: the static page is ours and nothing else uses it yet.
    unsafe { core::ptr::write_bytes(page, 0xc3, 4096) };
    // Identity mapping: the virtual address is the guest-physical one. Low 12 bits are 0.
    // Safety: the MSR index comes from Xen's own CPUID leaf.
    unsafe { cpu::wrmsr(xen.msr, page as u64) };
    // Safety: reading our own static after Xen wrote it.
    let first = unsafe { core::ptr::read_volatile(page) };
    if first == 0xc3 {
        return false;
    }
    PAGE_BASE.store(page as usize, Ordering::Release);
    true
}

/// Whether the hypercall page is installed.
pub fn ready() -> bool {
    PAGE_BASE.load(Ordering::Acquire) != 0
}

fn entry(nr: u32) -> usize {
    let base = PAGE_BASE.load(Ordering::Acquire);
    assert!(base != 0, "hypercall before the hypercall page was installed");
    base + nr as usize * 32
}

/// Calls the hypercall stub at `entry` with five arguments.
///
/// The `call` pushes a return address; the linux-gnu target keeps a 128-byte red zone below
/// `rsp`, so we step over it first.
///
/// # Safety
/// `entry` must be a hypercall stub (or the test probe), and pointer arguments must be valid
/// for what the hypercall reads and writes.
#[inline(always)]
pub unsafe fn call5(entry: usize, a1: u64, a2: u64, a3: u64, a4: u64, a5: u64) -> i64 {
    let rc: i64;
    // Safety: per the function contract; all argument registers are declared clobbered.
    unsafe {
        asm!(
            "lea rsp, [rsp - 128]",
            "call {entry}",
            "lea rsp, [rsp + 128]",
            entry = in(reg) entry,
            inlateout("rdi") a1 => _,
            inlateout("rsi") a2 => _,
            inlateout("rdx") a3 => _,
            inlateout("r10") a4 => _,
            inlateout("r8") a5 => _,
            lateout("rax") rc,
        );
    }
    rc
}

/// Raw hypercall `nr` through the page.
///
/// # Safety
/// As for [`call5`]: the arguments must be what hypercall `nr` expects.
#[inline(always)]
pub unsafe fn hypercall(nr: u32, a1: u64, a2: u64, a3: u64, a4: u64, a5: u64) -> i64 {
    // Safety: forwarded contract; `entry` points into the installed page.
    unsafe { call5(entry(nr), a1, a2, a3, a4, a5) }
}

fn ptr<T>(v: &T) -> u64 {
    v as *const T as u64
}

fn ptr_mut<T>(v: &mut T) -> u64 {
    v as *mut T as u64
}

/// `xen_version(XENVER_version)`: `(major, minor)`.
pub fn xen_version() -> (u16, u16) {
    // Safety: XENVER_version takes no buffer.
    let v = unsafe { hypercall(nr::XEN_VERSION, abi::xenver::VERSION, 0, 0, 0, 0) };
    ((v >> 16) as u16, v as u16)
}

/// `xen_version(XENVER_extraversion)`: e.g. ".5" (up to 16 bytes, NUL-padded).
pub fn xen_extraversion(buf: &mut [u8; 16]) -> XenResult<usize> {
    // Safety: Xen writes exactly 16 bytes into the buffer.
    check(unsafe { hypercall(nr::XEN_VERSION, abi::xenver::EXTRAVERSION, ptr_mut(buf), 0, 0, 0) })?;
    Ok(buf.iter().position(|&b| b == 0).unwrap_or(16))
}

/// Feature submap 0 (`XENFEAT_*` bits).
pub fn xen_features() -> u32 {
    let mut info = [0u32; 2]; // { submap_idx, submap }
    // Safety: `xen_feature_info` is two u32s.
    let rc = unsafe { hypercall(nr::XEN_VERSION, abi::xenver::GET_FEATURES, ptr_mut(&mut info), 0, 0, 0) };
    if rc < 0 { 0 } else { info[1] }
}

/// `memory_op(XENMEM_add_to_physmap)`: puts a Xen-owned frame at guest frame `gpfn`.
/// Whatever RAM was at `gpfn` is given back to Xen.
pub fn add_to_physmap(space: u32, idx: u64, gpfn: u64) -> XenResult<()> {
    let xatp = abi::AddToPhysmap { domid: abi::DOMID_SELF, size: 0, space, idx, gpfn };
    // Safety: the structure lives on our stack for the duration of the call.
    check(unsafe { hypercall(nr::MEMORY_OP, abi::xenmem::ADD_TO_PHYSMAP, ptr(&xatp), 0, 0, 0) }).map(drop)
}

/// `hvm_op(HVMOP_get_param)`.
pub fn hvm_get_param(index: u32) -> XenResult<u64> {
    let mut p = abi::HvmParam { domid: abi::DOMID_SELF, pad: 0, index, value: 0 };
    // Safety: Xen reads and writes the structure on our stack.
    check(unsafe { hypercall(nr::HVM_OP, abi::hvmop::GET_PARAM, ptr_mut(&mut p), 0, 0, 0) })?;
    Ok(p.value)
}

/// `hvm_op(HVMOP_set_param)`.
pub fn hvm_set_param(index: u32, value: u64) -> XenResult<()> {
    let p = abi::HvmParam { domid: abi::DOMID_SELF, pad: 0, index, value };
    // Safety: Xen reads the structure on our stack.
    check(unsafe { hypercall(nr::HVM_OP, abi::hvmop::SET_PARAM, ptr(&p), 0, 0, 0) }).map(drop)
}

/// `event_channel_op(cmd, arg)` with a structure Xen reads and may write.
pub fn event_channel_op<T>(cmd: u64, arg: &mut T) -> XenResult<()> {
    // Safety: `arg` is one of the `abi::Evtchn*` structures matching `cmd` (callers in
    // `evtchn` pair them), valid for the call.
    check(unsafe { hypercall(nr::EVENT_CHANNEL_OP, cmd, ptr_mut(arg), 0, 0, 0) }).map(drop)
}

/// `grant_table_op(cmd, ops, count)`.
pub fn grant_table_op<T>(cmd: u64, ops: &mut [T]) -> XenResult<()> {
    // Safety: `ops` are the `gnttab_*` structures matching `cmd`, valid for the call.
    check(unsafe { hypercall(nr::GRANT_TABLE_OP, cmd, ops.as_mut_ptr() as u64, ops.len() as u64, 0, 0) }).map(drop)
}

/// `set_timer_op(deadline)`: one-shot `VIRQ_TIMER` at Xen system time `deadline_ns`
/// (0 cancels).
pub fn set_timer_op(deadline_ns: u64) -> XenResult<()> {
    // Safety: takes a value, no memory.
    check(unsafe { hypercall(nr::SET_TIMER_OP, deadline_ns, 0, 0, 0, 0) }).map(drop)
}

/// `sched_op(SCHEDOP_shutdown)` through an explicit entry (see [`shutdown`]).
///
/// # Safety
/// `entry` must be the sched_op stub of the hypercall page, or a test probe.
pub unsafe fn shutdown_via(entry: usize, reason: abi::ShutdownReason) -> i64 {
    // The argument is a *pointer* to `sched_shutdown` (xen-sys passes the reason by value,
    // which makes Xen read guest address 0..5).
    let arg = abi::SchedShutdown { reason: reason as u32 };
    // Safety: per contract; `arg` outlives the call.
    unsafe { call5(entry, abi::schedop::SHUTDOWN, ptr(&arg), 0, 0, 0) }
}

/// Shuts the domain down. Returns only if Xen refused.
pub fn shutdown(reason: abi::ShutdownReason) -> XenError {
    // Safety: the entry is the sched_op stub of the installed page.
    XenError(-unsafe { shutdown_via(entry(nr::SCHED_OP), reason) })
}

/// Gives up the CPU once.
pub fn sched_yield() {
    // Safety: SCHEDOP_yield takes no argument.
    unsafe { hypercall(nr::SCHED_OP, abi::schedop::YIELD, 0, 0, 0, 0) };
}

#[cfg(test)]
mod tests {
    use super::*;
    use core::sync::atomic::AtomicU64;

    // A stand-in for a hypercall stub: records the argument registers (and what `rsi`
    // points at), then clobbers them all like a debug hypervisor does.
    #[unsafe(no_mangle)]
    static ABI_PROBE_REGS: [AtomicU64; 7] = [const { AtomicU64::new(0) }; 7];

    core::arch::global_asm!(
        ".pushsection .text.abi_probe_stub, \"ax\", @progbits",
        ".globl abi_probe_stub",
        "abi_probe_stub:",
        "mov [rip + ABI_PROBE_REGS], rdi",
        "mov [rip + ABI_PROBE_REGS + 8], rsi",
        "mov [rip + ABI_PROBE_REGS + 16], rdx",
        "mov [rip + ABI_PROBE_REGS + 24], r10",
        "mov [rip + ABI_PROBE_REGS + 32], r8",
        "mov [rip + ABI_PROBE_REGS + 40], r9",
        "mov eax, [rsi]",
        "mov [rip + ABI_PROBE_REGS + 48], rax",
        "movabs rdi, 0xdeadbeefdeadf00d",
        "mov rsi, rdi",
        "mov rdx, rdi",
        "mov r10, rdi",
        "mov r8, rdi",
        "mov eax, 42",
        "ret",
        ".popsection",
    );

    unsafe extern "C" {
        fn abi_probe_stub();
    }

    // The probe records into one static: run the probing tests one at a time.
    static PROBE: std::sync::Mutex<()> = std::sync::Mutex::new(());

    fn regs() -> [u64; 7] {
        core::array::from_fn(|i| ABI_PROBE_REGS[i].load(Ordering::SeqCst))
    }

    #[test]
    fn abi_pinned_arguments_in_rdi_rsi_rdx_r10_r8() {
        let _probe = PROBE.lock().unwrap();
        let word = 7u32;
        let live = core::hint::black_box(0x1234_5678u64);
        // Safety: the probe reads 4 bytes at rsi, which points at `word`.
        let rc = unsafe { call5(abi_probe_stub as *const () as usize, 1, &word as *const u32 as u64, 3, 4, 5) };
        assert_eq!(rc, 42);
        let r = regs();
        assert_eq!(r[0], 1, "arg1 in rdi");
        assert_eq!(r[2], 3, "arg3 in rdx");
        assert_eq!(r[3], 4, "arg4 in r10");
        assert_eq!(r[4], 5, "arg5 in r8 (xen-sys wrongly uses r9)");
        // Values live across the call survive the clobbers.
        assert_eq!(core::hint::black_box(live), 0x1234_5678);
    }

    #[test]
    fn abi_pinned_shutdown_reason_passed_by_pointer() {
        let _probe = PROBE.lock().unwrap();
        // Safety: the probe only reads the 4-byte structure rsi points at.
        let rc = unsafe { shutdown_via(abi_probe_stub as *const () as usize, abi::ShutdownReason::Crash) };
        assert_eq!(rc, 42);
        let r = regs();
        assert_eq!(r[0], abi::schedop::SHUTDOWN);
        assert!(r[1] > 4096, "rsi is a pointer, not the reason by value");
        assert_eq!(r[6], 3, "the pointed-to reason is SHUTDOWN_crash");
    }
}
