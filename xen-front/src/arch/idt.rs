//! The IDT: faults run on IST stacks, are reported and crash the domain; the event upcall
//! only counts itself and returns with interrupts off (the loop harvests).
//!
//! Why IST for faults: the host target (`x86_64-unknown-linux-gnu`) lets code use the 128
//! bytes below `rsp` (the red zone) without moving `rsp`, and a fault can happen anywhere; a
//! fault delivered on the same stack would push over them. Maskable interrupts (the upcall,
//! anything spurious) run on the current stack: interrupts are only ever enabled inside
//! `cpu::idle_until_interrupt`, an asm block that may use the stack, so no red zone is live
//! there. (With the upcall on an IST stack too, the harness saw Xen-in-QEMU deliver it again
//! and again on a fresh IST frame under heavy client load, the vCPU never getting past the
//! stub's first instruction.)

use core::arch::{asm, global_asm};
use core::cell::UnsafeCell;
use core::fmt::Write;
use core::ops::Range;
use core::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};

use super::cpu;

/// The vector Xen injects for event-channel upcalls (`HVM_PARAM_CALLBACK_IRQ`, vector type).
pub const UPCALL_VECTOR: u8 = 0xf0;

const IST_STACK_SIZE: usize = 16 * 1024;
/// IST slots (1-based in the gate descriptors).
const IST_FAULT: u8 = 1;
const IST_DOUBLE_FAULT: u8 = 2;
/// Maskable interrupts stay on the current stack (see the module docs).
const NO_IST: u8 = 0;

const KERNEL_CS: u16 = 0x08;
const KERNEL_DS: u16 = 0x10;
const TSS_SEL: u16 = 0x18;

/// Upcalls taken.
#[unsafe(no_mangle)]
static XEN_FRONT_UPCALLS: AtomicU64 = AtomicU64::new(0);
/// Interrupts on vectors nobody asked for.
#[unsafe(no_mangle)]
static XEN_FRONT_SPURIOUS: AtomicU64 = AtomicU64::new(0);

global_asm!(
    ".pushsection .text.xen_front_idt, \"ax\", @progbits",
    // 32 exception stubs, 16 bytes apart: push a dummy error code where the CPU pushes none,
    // push the vector, join the common path.
    ".balign 16",
    ".globl xen_front_fault_stubs",
    "xen_front_fault_stubs:",
    ".irp n, 0,1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16,17,18,19,20,21,22,23,24,25,26,27,28,29,30,31",
    ".balign 16",
    // Vectors 8, 10-14, 17, 21, 29 and 30 come with an error code from the CPU.
    ".if (\\n == 8) || (\\n >= 10 && \\n <= 14) || (\\n == 17) || (\\n == 21) || (\\n == 29) || (\\n == 30)",
    ".else",
    "push 0",
    ".endif",
    "push \\n",
    "jmp xen_front_fault_common",
    ".endr",
    "xen_front_fault_common:",
    "push rax",
    "push rbx",
    "push rcx",
    "push rdx",
    "push rsi",
    "push rdi",
    "push rbp",
    "push r8",
    "push r9",
    "push r10",
    "push r11",
    "push r12",
    "push r13",
    "push r14",
    "push r15",
    "mov rdi, rsp",
    "call xen_front_fault_entry",
    "ud2",
    // The event upcall: count it and return with interrupts off (IF cleared in the saved
    // RFLAGS at [rsp + 16]). Interrupts are only ever on in the idle `sti; hlt`, whose next
    // instruction is `cli` anyway, and the loop's `PendingEvents::harvest` clears
    // `upcall_pending` (Xen re-injects the vector while it is set and IF is on). The stub
    // deliberately does not write the shared_info page itself: in the harness (Xen under
    // QEMU, shadow paging) that write, made while the upcall's delivery was in progress,
    // had Xen deliver the upcall again and again under heavy client load (every sample of
    // the vCPU at the stub's first instruction or at that write, on a fresh IST frame; the
    // poll loop never ran again).
    ".balign 16",
    ".globl xen_front_upcall_stub",
    "xen_front_upcall_stub:",
    "lock inc qword ptr [rip + XEN_FRONT_UPCALLS]",
    "and qword ptr [rsp + 16], ~0x200",
    "iretq",
    ".balign 16",
    ".globl xen_front_spurious_stub",
    "xen_front_spurious_stub:",
    "lock inc qword ptr [rip + XEN_FRONT_SPURIOUS]",
    "and qword ptr [rsp + 16], ~0x200",
    "iretq",
    ".popsection",
);

unsafe extern "C" {
    static xen_front_fault_stubs: u8;
    static xen_front_upcall_stub: u8;
    static xen_front_spurious_stub: u8;
}

/// Registers saved by the fault path, lowest address first.
#[repr(C)]
#[derive(Debug)]
pub struct FaultFrame {
    /// General-purpose registers as pushed by the common stub.
    pub r15: u64,
    #[allow(missing_docs)]
    pub r14: u64,
    #[allow(missing_docs)]
    pub r13: u64,
    #[allow(missing_docs)]
    pub r12: u64,
    #[allow(missing_docs)]
    pub r11: u64,
    #[allow(missing_docs)]
    pub r10: u64,
    #[allow(missing_docs)]
    pub r9: u64,
    #[allow(missing_docs)]
    pub r8: u64,
    #[allow(missing_docs)]
    pub rbp: u64,
    #[allow(missing_docs)]
    pub rdi: u64,
    #[allow(missing_docs)]
    pub rsi: u64,
    #[allow(missing_docs)]
    pub rdx: u64,
    #[allow(missing_docs)]
    pub rcx: u64,
    #[allow(missing_docs)]
    pub rbx: u64,
    #[allow(missing_docs)]
    pub rax: u64,
    /// Exception vector.
    pub vector: u64,
    /// CPU error code (0 where the exception has none).
    pub error: u64,
    /// Faulting instruction.
    pub rip: u64,
    /// Code segment.
    pub cs: u64,
    /// Flags.
    pub rflags: u64,
    /// Stack pointer at the fault.
    pub rsp: u64,
    /// Stack segment.
    pub ss: u64,
}

#[repr(C, align(16))]
struct IstStack(UnsafeCell<[u8; IST_STACK_SIZE]>);
// Safety: only the CPU uses these stacks, on exception entry.
unsafe impl Sync for IstStack {}

static IST_STACKS: [IstStack; 2] = [const { IstStack(UnsafeCell::new([0; IST_STACK_SIZE])) }; 2];

#[repr(C, align(16))]
struct Tables {
    gdt: [u64; 5],
    tss: [u8; 104],
    idt: [[u64; 2]; 256],
}
struct TablesCell(UnsafeCell<Tables>);
// Safety: written once by `init` before interrupts are enabled, then only read by the CPU.
unsafe impl Sync for TablesCell {}

static TABLES: TablesCell = TablesCell(UnsafeCell::new(Tables { gdt: [0; 5], tss: [0; 104], idt: [[0; 2]; 256] }));

/// Stacks a fault report may dump from (the main stack and the IST stacks).
static MAIN_STACK: [AtomicUsize; 2] = [AtomicUsize::new(0), AtomicUsize::new(0)];

fn gate(handler: usize, ist: u8) -> [u64; 2] {
    let h = handler as u64;
    let lo = (h & 0xffff)
        | (u64::from(KERNEL_CS) << 16)
        | (u64::from(ist) << 32)
        | (0x8e << 40) // present, DPL 0, 64-bit interrupt gate (IF cleared on entry)
        | ((h >> 16) & 0xffff) << 48;
    [lo, h >> 32]
}

/// Loads a GDT with a TSS carrying the IST stacks, and an IDT in which every fault uses one.
///
/// `main_stack` is the boot stack's range, used to bound the stack dump of a fault report.
///
/// # Safety
/// Call once, early, with interrupts disabled, before anything relies on the old GDT.
pub unsafe fn init(main_stack: Range<usize>) {
    MAIN_STACK[0].store(main_stack.start, Ordering::Relaxed);
    MAIN_STACK[1].store(main_stack.end, Ordering::Relaxed);
    // Safety: single-threaded early boot; nothing else touches the tables yet.
    let t = unsafe { &mut *TABLES.0.get() };
    let tss_addr = t.tss.as_ptr() as u64;
    t.gdt = [
        0,
        0x00af_9b00_0000_ffff, // 64-bit code
        0x00cf_9300_0000_ffff, // flat data
        // 64-bit available TSS (type 9), limit 103.
        103 | ((tss_addr & 0xff_ffff) << 16) | (0x89 << 40) | (((tss_addr >> 24) & 0xff) << 56),
        tss_addr >> 32,
    ];
    for (i, stack) in IST_STACKS.iter().enumerate() {
        let top = stack.0.get() as u64 + IST_STACK_SIZE as u64;
        let off = 36 + 8 * i; // ist1 is at byte 36
        t.tss[off..off + 8].copy_from_slice(&top.to_le_bytes());
    }
    t.tss[102..104].copy_from_slice(&104u16.to_le_bytes()); // no I/O permission bitmap

    // Taking the address of the stubs (code symbols), never reading through them.
    let (faults, upcall, spurious) = (
        &raw const xen_front_fault_stubs as usize,
        &raw const xen_front_upcall_stub as usize,
        &raw const xen_front_spurious_stub as usize,
    );
    for (v, entry) in t.idt.iter_mut().enumerate() {
        *entry = match v {
            2 | 8 | 18 => gate(faults + v * 16, IST_DOUBLE_FAULT), // NMI, #DF, #MC
            0..=31 => gate(faults + v * 16, IST_FAULT),
            v if v == UPCALL_VECTOR as usize => gate(upcall, NO_IST),
            _ => gate(spurious, NO_IST),
        };
    }

    let gdt_ptr = DescriptorPointer { limit: (5 * 8 - 1) as u16, base: t.gdt.as_ptr() as u64 };
    let idt_ptr = DescriptorPointer { limit: (256 * 16 - 1) as u16, base: t.idt.as_ptr() as u64 };
    // Safety: the tables are fully written, static, and describe the flat segments we run
    // in; the far return reloads CS with the same 64-bit code segment.
    unsafe {
        asm!(
            "lgdt [{gdt}]",
            "push {cs}",
            "lea {tmp}, [rip + 2f]",
            "push {tmp}",
            "retfq",
            "2:",
            "mov ds, {ds:x}",
            "mov es, {ds:x}",
            "mov ss, {ds:x}",
            "ltr {tss:x}",
            "lidt [{idt}]",
            gdt = in(reg) &gdt_ptr,
            idt = in(reg) &idt_ptr,
            cs = in(reg) u64::from(KERNEL_CS),
            ds = in(reg) KERNEL_DS,
            tss = in(reg) TSS_SEL,
            tmp = out(reg) _,
        );
    }
}

#[repr(C, packed)]
struct DescriptorPointer {
    limit: u16,
    base: u64,
}

/// Upcalls taken since boot.
pub fn upcalls() -> u64 {
    XEN_FRONT_UPCALLS.load(Ordering::Relaxed)
}

/// Interrupts on unexpected vectors since boot.
pub fn spurious_interrupts() -> u64 {
    XEN_FRONT_SPURIOUS.load(Ordering::Relaxed)
}

/// Where fault reports go, and how the domain dies afterwards. Set by the appliance once the
/// console works; before that the report goes to Xen's debug port only.
pub struct FaultSink {
    /// Writes report text; must not take locks another context may hold.
    pub write: fn(&str),
    /// Ends the domain (shutdown with reason crash).
    pub crash: fn() -> !,
}

static FAULT_SINK: spin::Once<FaultSink> = spin::Once::new();
static IN_FAULT: AtomicBool = AtomicBool::new(false);

/// Installs the fault report sink (once).
pub fn set_fault_sink(sink: FaultSink) {
    FAULT_SINK.call_once(|| sink);
}

const EXCEPTION_NAMES: [&str; 32] = [
    "#DE divide error",
    "#DB debug",
    "NMI",
    "#BP breakpoint",
    "#OF overflow",
    "#BR bound range",
    "#UD invalid opcode",
    "#NM device not available",
    "#DF double fault",
    "coprocessor overrun",
    "#TS invalid TSS",
    "#NP segment not present",
    "#SS stack fault",
    "#GP general protection",
    "#PF page fault",
    "reserved 15",
    "#MF x87 error",
    "#AC alignment check",
    "#MC machine check",
    "#XM SIMD error",
    "#VE virtualization",
    "#CP control protection",
    "reserved 22",
    "reserved 23",
    "reserved 24",
    "reserved 25",
    "reserved 26",
    "reserved 27",
    "#HV hypervisor injection",
    "#VC VMM communication",
    "#SX security",
    "reserved 31",
];

fn emit(args: core::fmt::Arguments<'_>) {
    let mut line = crate::console::LineBuffer::default();
    let _ = line.write_fmt(args);
    let text = line.as_str();
    match FAULT_SINK.get() {
        Some(sink) => (sink.write)(text),
        None => debug_port_write(text),
    }
}

/// Writes to Xen's HVM debug port 0xE9 (`xl dmesg` with `guest_loglvl=all`).
pub fn debug_port_write(s: &str) {
    for b in s.bytes() {
        // Safety: port 0xE9 is Xen's debug console; writing has no other effect.
        unsafe { cpu::outb(0xe9, b) };
    }
}

/// The bounds of the stack that `rsp` lies in, if it is one we know.
fn known_stack(rsp: usize) -> Option<Range<usize>> {
    let main = MAIN_STACK[0].load(Ordering::Relaxed)..MAIN_STACK[1].load(Ordering::Relaxed);
    core::iter::once(main)
        .chain(IST_STACKS.iter().map(|s| {
            let b = s.0.get() as usize;
            b..b + IST_STACK_SIZE
        }))
        .find(|r| r.contains(&rsp))
}

/// Entered from the common fault stub on the fault IST stack. Never returns.
#[unsafe(no_mangle)]
extern "C" fn xen_front_fault_entry(frame: &FaultFrame) -> ! {
    if IN_FAULT.swap(true, Ordering::SeqCst) {
        // A fault while reporting a fault: say nothing more, just die.
        match FAULT_SINK.get() {
            Some(sink) => (sink.crash)(),
            None => cpu::halt_forever(),
        }
    }
    let name = EXCEPTION_NAMES.get(frame.vector as usize).copied().unwrap_or("?");
    emit(format_args!(
        "FATAL: exception {} ({}) error={:#x} rip={:#x} cr2={:#x}\n",
        name,
        frame.vector,
        frame.error,
        frame.rip,
        cpu::cr2()
    ));
    emit(format_args!(
        "  rsp={:#x} rbp={:#x} rflags={:#x} cs={:#x} ss={:#x}\n",
        frame.rsp, frame.rbp, frame.rflags, frame.cs, frame.ss
    ));
    emit(format_args!(
        "  rax={:#x} rbx={:#x} rcx={:#x} rdx={:#x} rsi={:#x} rdi={:#x}\n",
        frame.rax, frame.rbx, frame.rcx, frame.rdx, frame.rsi, frame.rdi
    ));
    emit(format_args!(
        "  r8={:#x} r9={:#x} r10={:#x} r11={:#x} r12={:#x} r13={:#x} r14={:#x} r15={:#x}\n",
        frame.r8, frame.r9, frame.r10, frame.r11, frame.r12, frame.r13, frame.r14, frame.r15
    ));
    let rsp = frame.rsp as usize;
    match known_stack(rsp) {
        Some(stack) => {
            let end = stack.end.min(rsp + 16 * 8);
            let mut addr = rsp & !7;
            while addr + 8 <= end {
                // Safety: `addr` lies inside a stack we own and that is mapped.
                let word = unsafe { core::ptr::read_volatile(addr as *const u64) };
                emit(format_args!("  stack {:#x}: {:#018x}\n", addr, word));
                addr += 8;
            }
        }
        None => emit(format_args!("  stack dump skipped: rsp outside known stacks (guard page hit?)\n")),
    }
    emit(format_args!("FATAL: shutting down with reason crash\n"));
    match FAULT_SINK.get() {
        Some(sink) => (sink.crash)(),
        None => cpu::halt_forever(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gates_encode_handler_selector_ist_and_type() {
        let [lo, hi] = gate(0xffff_8000_1234_5678, 3);
        assert_eq!(lo & 0xffff, 0x5678);
        assert_eq!((lo >> 16) & 0xffff, 0x08);
        assert_eq!((lo >> 32) & 0x7, 3);
        assert_eq!((lo >> 40) & 0xff, 0x8e);
        assert_eq!(lo >> 48, 0x1234);
        assert_eq!(hi, 0xffff_8000);
    }

    #[test]
    fn frame_layout_matches_the_push_order() {
        assert_eq!(core::mem::offset_of!(FaultFrame, rax), 14 * 8);
        assert_eq!(core::mem::offset_of!(FaultFrame, vector), 15 * 8);
        assert_eq!(core::mem::offset_of!(FaultFrame, rip), 17 * 8);
        assert_eq!(core::mem::size_of::<FaultFrame>(), 22 * 8);
    }
}
