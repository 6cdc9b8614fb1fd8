/*
 * portcullis PVH boot stub (AT&T syntax, assembled by LLVM through core::arch::global_asm!).
 * Based on the project's PVH prototype recipe: notes, 32-bit entry, identity map of 0-4 GiB
 * in 2 MiB pages, long mode with SSE, then `kmain(start_info_paddr)` on the boot stack.
 *
 * Entry state (Xen docs/misc/pvh.pandoc, same for QEMU's pvh.bin):
 *   32-bit protected mode, paging off, flat 4 GiB CS/DS/ES/SS, IF=0,
 *   cr4 = 0, %ebx = physical address of struct hvm_start_info.
 */

/* ------------------------------------------------------------------------
 * Xen ELF notes.  name = "Xen\0" (namesz 4), 4-byte aligned records.
 * XEN_ELFNOTE_PHYS32_ENTRY is emitted FIRST: QEMU's note walker
 * (get_elf_note_type) stops at the first match and has no cumulative
 * bounds check, so being first is the safest place.
 * Its descriptor is 8 bytes (.quad) like Linux's _ASM_PTR on x86_64:
 * QEMU reads a size_t (8 bytes) for ELFCLASS64 images; Xen's
 * elf_note_numeric() accepts 1/2/4/8-byte descriptors.
 * The section must stay 4-aligned (QEMU aligns namesz to the PT_NOTE p_align).
 * ------------------------------------------------------------------------ */
    .pushsection .note.Xen, "a", @note

    .balign 4
    .long 4                     /* namesz */
    .long 8                     /* descsz */
    .long 18                    /* XEN_ELFNOTE_PHYS32_ENTRY */
    .asciz "Xen"
    .quad pvh_start32

    .balign 4
    .long 4
    .long 3f - 2f
    .long 6                     /* XEN_ELFNOTE_GUEST_OS (informational) */
    .asciz "Xen"
2:  .asciz "portcullis"
3:  .balign 4

    .long 4
    .long 5f - 4f
    .long 7                     /* XEN_ELFNOTE_GUEST_VERSION (informational) */
    .asciz "Xen"
4:  .asciz "0.1.0"
5:  .balign 4

    .long 4
    .long 7f - 6f
    .long 5                     /* XEN_ELFNOTE_XEN_VERSION */
    .asciz "Xen"
6:  .asciz "xen-3.0"
7:  .balign 4

    .popsection

/*
 * Only PHYS32_ENTRY is required: Xen >= 4.11's elf_xen_note_check() returns
 * "Found PVH image" as soon as it is present (4.16+: only for HVM/PVH
 * containers). GUEST_OS/GUEST_VERSION/XEN_VERSION are informational.
 * XEN_ELFNOTE_LOADER "generic" is deliberately NOT emitted: on Xen >= 4.16,
 * LOADER "generic" + XEN_VERSION "xen-3.0" would make the *PV* builder
 * (type="pv") accept this image and enter it as a 64-bit PV kernel; without
 * it, type="pv" is rejected cleanly. (Xen <= 4.10 (libelf before commit
 * 2dd3e22949) lacks the PHYS32_ENTRY short-cut and would need LOADER "generic".)
 */

/* ------------------------------------------------------------------------
 * 32-bit entry
 * ------------------------------------------------------------------------ */
    .pushsection .text.pvh_start32, "ax", @progbits
    .code32
    .globl pvh_start32
    .type pvh_start32, @function
pvh_start32:
    cli
    cld
    movl    %ebx, %esi                  /* keep hvm_start_info paddr in %esi */

    /* zero .bss (boot page tables + boot stack + Rust zero-initialised statics) */
    movl    $__bss_start, %edi
    movl    $__bss_end, %ecx
    subl    %edi, %ecx
    shrl    $2, %ecx
    xorl    %eax, %eax
    rep stosl

    movl    $boot_stack_top, %esp

    /* PML4[0] -> PDPT */
    movl    $boot_pdpt, %eax
    orl     $0x3, %eax                  /* P | RW */
    movl    %eax, boot_pml4

    /* PDPT[0..4] -> PD0..PD4 (5 x 1 GiB) */
    movl    $boot_pd, %eax
    orl     $0x3, %eax
    movl    $boot_pdpt, %edi
    movl    $5, %ecx
2:  movl    %eax, (%edi)
    addl    $0x1000, %eax
    addl    $8, %edi
    loop    2b

    /* PD0..PD3: 2048 x 2 MiB pages, identity map of [0, 4 GiB) */
    movl    $boot_pd, %edi
    movl    $0x83, %eax                 /* P | RW | PS(2 MiB) */
    movl    $2048, %ecx
3:  movl    %eax, (%edi)                /* high dword already 0 (bss) */
    addl    $0x200000, %eax
    addl    $8, %edi
    loop    3b

    /* PD4: the foreign-mapping window [4 GiB, 5 GiB), identity-mapped like RAM. Nothing
     * is there until a grant map puts a frame at a GFN; only mapped GFNs are touched.
     * %eax wrapped back to 0x83; the high dword carries bit 32 of the address. */
    movl    $512, %ecx
4:  movl    %eax, (%edi)
    movl    $1, 4(%edi)
    addl    $0x200000, %eax
    addl    $8, %edi
    loop    4b

    /* CR4: PAE (5) | OSFXSR (9) | OSXMMEXCPT (10) -- SSE is used by rustc's
     * x86_64-unknown-linux-gnu code (baseline sse2), so it must be on. */
    movl    %cr4, %eax
    orl     $0x620, %eax
    movl    %eax, %cr4

    movl    $boot_pml4, %eax
    movl    %eax, %cr3

    /* EFER.LME */
    movl    $0xC0000080, %ecx
    rdmsr
    orl     $0x100, %eax
    wrmsr

    /* CR0: clear EM (2) and TS (3); set PE (0) MP (1) NE (5) PG (31) */
    movl    %cr0, %eax
    andl    $0xFFFFFFF3, %eax
    orl     $0x80000023, %eax
    movl    %eax, %cr0                  /* now in IA-32e compatibility mode */

    lgdt    boot_gdt_ptr
    ljmp    $0x08, $pvh_start64

/* ------------------------------------------------------------------------
 * 64-bit entry
 * ------------------------------------------------------------------------ */
    .code64
pvh_start64:
    movl    $0x10, %eax
    movl    %eax, %ds
    movl    %eax, %es
    movl    %eax, %ss
    xorl    %eax, %eax
    movl    %eax, %fs
    movl    %eax, %gs

    leaq    boot_stack_top(%rip), %rsp  /* 16-byte aligned */
    xorl    %ebp, %ebp
    fninit                              /* x87 default state; MXCSR is 0x1F80 at reset */

    movl    %esi, %edi                  /* zero-extends: rdi = start_info paddr */
    call    kmain                       /* SysV: rsp+8 is 16-aligned at entry */
4:  cli
    hlt
    jmp     4b
    .size pvh_start32, . - pvh_start32
    .popsection

/* ------------------------------------------------------------------------
 * GDT (in .data: the CPU may write the Accessed bit; we preset it anyway)
 * ------------------------------------------------------------------------ */
    .pushsection .data.boot_gdt, "aw", @progbits
    .balign 16
boot_gdt:
    .quad 0                             /* null */
    .quad 0x00AF9B000000FFFF            /* 0x08: 64-bit code, DPL0, L=1 */
    .quad 0x00CF93000000FFFF            /* 0x10: flat data, DPL0, writable */
boot_gdt_end:
    .balign 8
boot_gdt_ptr:
    .word boot_gdt_end - boot_gdt - 1
    .quad boot_gdt                      /* lgdt in 32-bit mode uses the low 4 bytes */
    .popsection

/* ------------------------------------------------------------------------
 * Page tables and boot stack (zeroed at entry)
 * ------------------------------------------------------------------------ */
    .pushsection .bss.boot, "aw", @nobits
    .balign 4096
boot_pml4:  .skip 4096
boot_pdpt:  .skip 4096
boot_pd:    .skip 4096 * 5
    /* The page below the stack is unmapped by kmain, so an overflow faults. */
    .balign 4096
    .globl boot_stack_guard
boot_stack_guard: .skip 4096
    .globl boot_stack
boot_stack: .skip 128 * 1024
    .globl boot_stack_top
boot_stack_top:
    .popsection
