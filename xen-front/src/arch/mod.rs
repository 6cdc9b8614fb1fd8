//! x86-64 machine support for the PVH appliance: CPU instructions, the fault-reporting IDT on
//! IST stacks, and the stack guard page.

pub mod cpu;
pub mod idt;
pub mod paging;
