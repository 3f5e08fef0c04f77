//! From GRUB to Rust: the Multiboot2 header, the 32-bit entry that switches to
//! long mode on an identity map, and the real-mode trampoline that brings the
//! application processors up the same way.
//!
//! Multiboot2 spec 1.0, section 3.3: GRUB enters `_start` in 32-bit protected
//! mode, paging off, EAX = 0x36d76289, EBX = physical address of the boot
//! information. Nothing else about the machine state can be relied on (no
//! stack, GDT contents unknown, interrupts may be masked or not).
//!
//! The early map covers the first 4 GiB with 2 MiB pages (QEMU's default CPU
//! has no 1 GiB pages); `mm::paging` extends it to all RAM once Rust runs.

use core::arch::global_asm;

/// Where the AP trampoline is copied: a page below 1 MiB (a SIPI vector names
/// a 4 KiB page in the first megabyte).
pub const AP_TRAMPOLINE: u64 = 0x8000;

// Offsets of the trampoline's parameter block (filled by the BSP for each AP).
pub const AP_PARAM_CR3: u64 = 0xF00;
pub const AP_PARAM_STACK: u64 = 0xF08;
pub const AP_PARAM_ENTRY: u64 = 0xF10;
pub const AP_PARAM_ARG: u64 = 0xF18;

global_asm!(
    r#"
    .set MB2_MAGIC, 0xe85250d6
    .set MB2_ARCH_I386, 0

    .section .multiboot2, "a"
    .balign 8
mb2_header:
    .long MB2_MAGIC
    .long MB2_ARCH_I386
    .long mb2_header_end - mb2_header
    .long -(MB2_MAGIC + MB2_ARCH_I386 + (mb2_header_end - mb2_header))

    /* Framebuffer request (type 5, optional, any mode, 32 bpp preferred).
       UEFI needs it: without it GRUB reports no framebuffer. But with it
       GRUB's multiboot2 loader refuses VGA text mode and switches BIOS
       machines to VBE graphics (an 8-bit mode that crashes GRUB in Bochs), so
       grub/mkiso.sh also installs a BIOS copy of the kernel in which this tag
       is turned into an ignored optional tag (type 0x8005). */
    .balign 8
    .short 5, 1
    .long 20
    .long 0, 0, 32

    /* Page-align modules (type 6): external L1 images are loaded from them. */
    .balign 8
    .short 6, 0
    .long 8

    .balign 8
    .short 0, 0
    .long 8
mb2_header_end:

    .section .bss
    .balign 4096
boot_pml4:   .skip 4096
boot_pdpt:   .skip 4096
boot_pd:     .skip 4096 * 4
    .global boot_stack_bottom
boot_stack_bottom:
    .skip 256 * 1024
boot_stack_top:

    .section .data
    .global boot_mb_magic
    .global boot_mb_info
boot_mb_magic: .long 0
boot_mb_info:  .long 0

    .balign 16
boot_gdt:
    .quad 0
    .quad 0x00209a0000000000        /* 0x08: 64-bit code */
    .quad 0x0000920000000000        /* 0x10: data */
boot_gdt_end:
boot_gdt_ptr:
    .short boot_gdt_end - boot_gdt - 1
    .quad boot_gdt

    .section .text.boot, "ax"
    .code32
    .global _start
_start:
    cli
    cld
    movl %eax, boot_mb_magic
    movl %ebx, boot_mb_info
    movl $boot_stack_top, %esp

    /* 1. Identity map 0..4 GiB: PML4[0] -> PDPT, PDPT[0..3] -> PD0..PD3,
          each PD entry a 2 MiB page (present | writable | PS). */
    movl $boot_pdpt, %eax
    orl $0x3, %eax
    movl %eax, boot_pml4
    movl $0, boot_pml4 + 4

    xorl %ecx, %ecx
1:  movl %ecx, %eax
    shll $12, %eax
    addl $boot_pd, %eax
    orl $0x3, %eax
    movl %eax, boot_pdpt(,%ecx,8)
    movl $0, boot_pdpt + 4(,%ecx,8)
    incl %ecx
    cmpl $4, %ecx
    jne 1b

    xorl %ecx, %ecx
2:  movl %ecx, %eax
    shll $21, %eax
    orl $0x83, %eax
    movl %eax, boot_pd(,%ecx,8)
    movl %ecx, %eax
    shrl $11, %eax
    movl %eax, boot_pd + 4(,%ecx,8)
    incl %ecx
    cmpl $2048, %ecx
    jne 2b

    /* 2. CR4.PAE, CR3, EFER.LME, then CR0.PG|WP|PE: long mode (SDM Vol. 3A 10.8.5). */
    movl %cr4, %eax
    orl $(1 << 5), %eax
    movl %eax, %cr4
    movl $boot_pml4, %eax
    movl %eax, %cr3
    movl $0xC0000080, %ecx
    rdmsr
    orl $(1 << 8), %eax
    wrmsr
    movl %cr0, %eax
    orl $((1 << 31) | (1 << 16) | 1), %eax
    movl %eax, %cr0

    /* 3. A 64-bit code segment, and jump into it. */
    lgdt boot_gdt_ptr
    ljmp $0x08, $boot_long_mode

    .code64
boot_long_mode:
    movw $0x10, %ax
    movw %ax, %ds
    movw %ax, %es
    movw %ax, %ss
    xorw %ax, %ax
    movw %ax, %fs
    movw %ax, %gs
    movabsq $boot_stack_top, %rsp
    xorl %ebp, %ebp
    movl boot_mb_magic, %edi
    movl boot_mb_info, %esi
    call kernel_main
3:  cli
    hlt
    jmp 3b

    /* ---------------------------------------------------------------------
       AP trampoline: copied to AP_TRAMPOLINE (0x8000) and entered by the
       start-up IPI in real mode at 0800:0000. Real mode -> protected mode ->
       long mode with the BSP's CR3, then a call into Rust with the stack and
       argument the BSP left in the parameter block at offset 0xF00.
       Addresses are written as 0x8000 + offset because the code runs at its
       copy, not where it was linked. */
    .section .rodata
    .balign 4096
    .global ap_trampoline_start
    .global ap_trampoline_end
ap_trampoline_start:
    .code16
    cli
    cld
    xorw %ax, %ax
    movw %ax, %ds
    lgdtl 0x8000 + (ap_gdt_ptr - ap_trampoline_start)
    movl %cr0, %eax
    orl $1, %eax
    movl %eax, %cr0
    ljmpl $0x08, $(0x8000 + (ap_protected - ap_trampoline_start))

    .code32
ap_protected:
    movw $0x10, %ax
    movw %ax, %ds
    movw %ax, %es
    movw %ax, %ss
    movl %cr4, %eax
    orl $(1 << 5), %eax
    movl %eax, %cr4
    movl 0x8000 + 0xF00, %eax
    movl %eax, %cr3
    movl $0xC0000080, %ecx
    rdmsr
    orl $(1 << 8), %eax
    wrmsr
    movl %cr0, %eax
    orl $((1 << 31) | (1 << 16) | 1), %eax
    movl %eax, %cr0
    ljmp $0x18, $(0x8000 + (ap_long - ap_trampoline_start))

    .code64
ap_long:
    movw $0x10, %ax
    movw %ax, %ds
    movw %ax, %es
    movw %ax, %ss
    xorw %ax, %ax
    movw %ax, %fs
    movw %ax, %gs
    movq 0x8000 + 0xF08, %rsp
    movq 0x8000 + 0xF18, %rdi
    movq 0x8000 + 0xF10, %rax
    xorl %ebp, %ebp
    call *%rax
4:  cli
    hlt
    jmp 4b

    .balign 16
ap_gdt:
    .quad 0
    .quad 0x00cf9a000000ffff        /* 0x08: 32-bit code */
    .quad 0x00cf92000000ffff        /* 0x10: data */
    .quad 0x00209a0000000000        /* 0x18: 64-bit code */
ap_gdt_end:
ap_gdt_ptr:
    .short ap_gdt_end - ap_gdt - 1
    .long 0x8000 + (ap_gdt - ap_trampoline_start)
ap_trampoline_end:
    "#,
    options(att_syntax)
);

unsafe extern "C" {
    static ap_trampoline_start: u8;
    static ap_trampoline_end: u8;
}

/// The trampoline's bytes, to be copied to [`AP_TRAMPOLINE`].
pub fn ap_trampoline() -> &'static [u8] {
    // SAFETY: both symbols are defined above in .rodata, in that order, and
    // the bytes between them are immutable code/data.
    unsafe {
        let start = &raw const ap_trampoline_start;
        let end = &raw const ap_trampoline_end;
        core::slice::from_raw_parts(start, end as usize - start as usize)
    }
}
