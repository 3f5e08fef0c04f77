//! VMX instructions with memory operands under 32-bit and PAE paging, the
//! legacy paging modes an L1 may use (SDM Vol. 3A 4.3, 4.4). The 64-bit
//! workloads cannot reach them, so the 32-bit boot code runs this once,
//! before it enters long mode, when the command line asks for the selftest:
//! VMXON, VMCLEAR, VMPTRLD, VMWRITE, then VMPTRST and VMREAD to memory
//! through a linear window at 1 GiB that the page tables map onto physical
//! 0 (so an operand's linear and physical addresses differ), VMCLEAR and
//! VMXOFF — first with 32-bit paging (4 MiB pages), then with PAE paging
//! (2 MiB pages). Each step sets a bit of the result; the selftest prints
//! them. Under nvmx these operands go through its 32-bit and PAE walks.

use core::arch::global_asm;

global_asm!(
    r#"
    .section .bss
    .balign 4096
l1_pc_vmxon:  .skip 4096
l1_pc_vmcs:   .skip 4096
l1_pc_pd32:   .skip 4096
l1_pc_pd_hi:  .skip 4096
    .balign 32
l1_pc_pdpt:   .skip 32
    .balign 8
l1_pc_ptr:    .skip 8        /* 64-bit operand: a region's physical address */
l1_pc_store:  .skip 16       /* VMPTRST / VMREAD land here, through the window */
    .global l1_pc_result
l1_pc_result: .skip 8        /* bits 0-5: 32-bit paging; 8-13: PAE; bit 31: ran */

    .section .rodata
l1_pc_word:   .ascii "workload=selftest"
l1_pc_word_end:

    .section .text.boot, "ax"
    .code32
    .global l1_paging_check
/* In: EBX = Multiboot2 or Multiboot1 information (l1_magic says which).
   Paging off; clobbers all but EBX/ESP. */
l1_paging_check:
    pushl %ebx
    /* Only for the selftest: find the word in the command line. Multiboot1:
       the string at info+16 when flag 2 is set (spec 0.6.96 3.3). */
    cmpl $0x2badb002, l1_magic
    jne l1_pc_mb2
    testl $4, (%ebx)
    jz 9f
    movl 16(%ebx), %esi
    jmp 3f
l1_pc_mb2:
    /* Multiboot2: the command line tag (type 1). */
    movl (%ebx), %edx
    addl %ebx, %edx              /* EDX = end of the information */
    leal 8(%ebx), %esi
1:  cmpl %edx, %esi
    jae 9f
    cmpl $1, (%esi)
    je 2f
    movl 4(%esi), %eax
    addl $7, %eax
    andl $-8, %eax
    jz 9f
    addl %eax, %esi
    jmp 1b
2:  leal 8(%esi), %esi           /* the string */
3:  cmpb $0, (%esi)
    je 9f
    movl %esi, %edi
    movl $l1_pc_word, %ebp
4:  movb (%ebp), %al
    cmpb %al, (%edi)
    jne 5f
    incl %edi
    incl %ebp
    cmpl $l1_pc_word_end, %ebp
    jne 4b
    jmp 6f
5:  incl %esi
    jmp 3b
6:  /* VT-x there and enabled in IA32_FEATURE_CONTROL (lock it as firmware would)? */
    movl $1, %eax
    cpuid
    testl $(1 << 5), %ecx
    jz 9f
    movl $0x3A, %ecx
    rdmsr
    testl $1, %eax
    jnz 7f
    orl $5, %eax
    wrmsr
    jmp 8f
7:  testl $4, %eax
    jz 9f
8:  movl $0x480, %ecx            /* IA32_VMX_BASIC: the revision id */
    rdmsr
    andl $0x7FFFFFFF, %eax
    movl %eax, l1_pc_vmxon
    movl %eax, l1_pc_vmcs
    orl $(1 << 31), l1_pc_result
    movl %cr4, %eax              /* VMXE, PSE */
    orl $((1 << 13) | (1 << 4)), %eax
    movl %eax, %cr4

    /* 32-bit paging: 4 MiB identity pages for the first GiB, PDE 256
       (linear 1 GiB) onto physical 0. */
    xorl %ecx, %ecx
1:  movl %ecx, %eax
    shll $22, %eax
    orl $0x83, %eax
    movl %eax, l1_pc_pd32(,%ecx,4)
    incl %ecx
    cmpl $256, %ecx
    jne 1b
    movl $0x83, l1_pc_pd32 + 4 * 256
    movl $l1_pc_pd32, %eax
    movl %eax, %cr3
    call l1_pc_paging_on
    call l1_pc_sequence
    movl %eax, %ebx
    call l1_pc_paging_off

    /* PAE paging: PDPTE 0 -> the boot code's 2 MiB identity PD, PDPTE 1
       (linear 1 GiB) -> two 2 MiB pages onto physical 0. */
    movl $l1_pd, %eax
    orl $1, %eax
    movl %eax, l1_pc_pdpt
    movl $l1_pc_pd_hi, %eax
    orl $1, %eax
    movl %eax, l1_pc_pdpt + 8
    movl $0x83, l1_pc_pd_hi
    movl $(0x200000 | 0x83), l1_pc_pd_hi + 8
    movl %cr4, %eax
    andl $~(1 << 4), %eax
    orl $(1 << 5), %eax
    movl %eax, %cr4
    movl $l1_pc_pdpt, %eax
    movl %eax, %cr3
    call l1_pc_paging_on
    call l1_pc_sequence
    shll $8, %eax
    orl %eax, %ebx
    call l1_pc_paging_off
    orl %ebx, l1_pc_result
    movl %cr4, %eax              /* VMXE off again (VMXOFF ran) */
    andl $~(1 << 13), %eax
    movl %eax, %cr4
9:  popl %ebx
    ret

l1_pc_paging_on:
    movl %cr0, %eax
    orl $((1 << 31) | (1 << 5) | 1), %eax
    movl %eax, %cr0
    ret
l1_pc_paging_off:
    movl %cr0, %eax
    andl $~(1 << 31), %eax
    movl %eax, %cr0
    ret

/* The VMX sequence; EAX = a bit per step that succeeded, in order, until
   the first that fails. */
l1_pc_sequence:
    xorl %eax, %eax
    movl $l1_pc_vmxon, l1_pc_ptr
    movl $0, l1_pc_ptr + 4
    vmxon l1_pc_ptr
    jbe 9f
    orl $1, %eax
    movl $l1_pc_vmcs, l1_pc_ptr
    vmclear l1_pc_ptr
    jbe 8f
    vmptrld l1_pc_ptr
    jbe 8f
    orl $2, %eax
    movl $0x0800, %ecx           /* GUEST_ES_SELECTOR */
    movl $0x1234, %edx
    vmwrite %edx, %ecx
    jbe 8f
    orl $4, %eax
    movl $0, l1_pc_store
    movl $0, l1_pc_store + 4
    movl $(l1_pc_store + 0x40000000), %edi
    vmptrst (%edi)
    movl l1_pc_store, %edx
    cmpl $l1_pc_vmcs, %edx
    jne 8f
    cmpl $0, l1_pc_store + 4
    jne 8f
    orl $8, %eax
    movl $0x5a5a5a5a, l1_pc_store + 12  /* outside 64-bit mode VMREAD stores 4 bytes */
    vmread %ecx, 8(%edi)
    jbe 8f
    cmpl $0x1234, l1_pc_store + 8
    jne 8f
    cmpl $0x5a5a5a5a, l1_pc_store + 12
    jne 8f
    orl $16, %eax
8:  vmclear l1_pc_ptr
    vmxoff
    jbe 9f
    orl $32, %eax
9:  ret
    /* Back to 64-bit code for whatever global_asm the compiler puts next. */
    .code64
    .text
    "#,
    options(att_syntax)
);

unsafe extern "C" {
    static l1_pc_result: u64;
}

/// The steps of one run, in the order the bits are set.
pub const STEPS: [&str; 6] = [
    "vmxon",
    "vmclear and vmptrld",
    "vmwrite",
    "vmptrst to memory through the window",
    "vmread to memory through the window (4 bytes, SDM 32.3)",
    "vmclear and vmxoff",
];

/// `None` if the check did not run (not the selftest, or no VMX), else the
/// succeeded steps with 32-bit paging and with PAE paging.
pub fn result() -> Option<(u64, u64)> {
    // SAFETY: written once by the boot code before Rust ran.
    let r = unsafe { l1_pc_result };
    (r & (1 << 31) != 0).then_some((r & 0x3F, (r >> 8) & 0x3F))
}
