//! Multiboot2 or Multiboot1 entry → long mode on an identity map of the first GiB (2 MiB
//! pages), a GDT with a TSS (VM entries need a non-null host TR, SDM
//! 27.2.3), and an IDT that reports any exception on COM1 and halts.

use core::arch::global_asm;
use core::fmt::Write;

global_asm!(
    r#"
    .section .multiboot2, "a"
    .balign 8
l1_mb2:
    .long 0xe85250d6
    .long 0
    .long l1_mb2_end - l1_mb2
    .long -(0xe85250d6 + (l1_mb2_end - l1_mb2))
    .short 0, 0
    .long 8
l1_mb2_end:
    /* Multiboot1 header too (spec 0.6.96 3.1): the same ELF loads with
       either protocol (nvmx: l1boot=multiboot1; GRUB: `multiboot`). Flags:
       bit 1, memory information wanted. */
    .balign 4
l1_mb1:
    .long 0x1badb002
    .long 0x00000002
    .long -(0x1badb002 + 0x00000002)

    .section .bss
    .balign 4096
l1_pml4: .skip 4096
l1_pdpt: .skip 4096
    .global l1_pd
l1_pd:   .skip 4096
    .global l1_tss
l1_tss:  .skip 104
    .balign 16
l1_stack: .skip 64 * 1024
l1_stack_top:

    .section .data
    .balign 16
    .global l1_gdt
l1_gdt:
    .quad 0
    .quad 0x00209a0000000000        /* 0x08: 64-bit code */
    .quad 0x0000920000000000        /* 0x10: data */
    .quad 0, 0                      /* 0x18: TSS, filled in by init_idt */
l1_gdt_end:
l1_gdt_ptr:
    .short l1_gdt_end - l1_gdt - 1
    .quad l1_gdt
    .global l1_magic
l1_magic: .long 0
l1_info:  .long 0

    .section .text.boot, "ax"
    .code32
    .global _start
_start:
    cli
    cld
    movl %eax, l1_magic
    movl %ebx, l1_info
    movl $l1_stack_top, %esp
    call l1_pd_build
    call l1_paging_check
    movl $l1_pdpt, %eax
    orl $3, %eax
    movl %eax, l1_pml4
    movl $l1_pd, %eax
    orl $3, %eax
    movl %eax, l1_pdpt
    movl %cr4, %eax
    orl $(1 << 5), %eax
    movl %eax, %cr4
    movl $l1_pml4, %eax
    movl %eax, %cr3
    movl $0xC0000080, %ecx
    rdmsr
    orl $(1 << 8), %eax
    wrmsr
    movl %cr0, %eax
    orl $((1 << 31) | (1 << 5) | 1), %eax
    movl %eax, %cr0
    lgdt l1_gdt_ptr
    ljmp $0x08, $l1_long

/* The identity PD of the first GiB, 2 MiB pages (also PAE's). */
l1_pd_build:
    xorl %ecx, %ecx
1:  movl %ecx, %eax
    shll $21, %eax
    orl $0x83, %eax
    movl %eax, l1_pd(,%ecx,8)
    movl $0, l1_pd + 4(,%ecx,8)
    incl %ecx
    cmpl $512, %ecx
    jne 1b
    ret

    .code64
l1_long:
    movw $0x10, %ax
    movw %ax, %ds
    movw %ax, %es
    movw %ax, %ss
    movw %ax, %fs
    movw %ax, %gs
    movabsq $l1_stack_top, %rsp
    movl l1_magic, %edi
    movl l1_info, %esi
    call l1_main
2:  cli
    hlt
    jmp 2b

    /* Exception stubs, 16 bytes apart: vector in RDI, faulting RIP in RSI. */
    .section .text
    .balign 16
    .global l1_trap_stubs
l1_trap_stubs:
    .set vec, 0
    .rept 32
    .balign 16
    xorl %edx, %edx
    .if (vec == 8) || (vec == 10) || (vec == 11) || (vec == 12) || (vec == 13) || (vec == 14) || (vec == 17)
    popq %rdx
    .endif
    movl $vec, %edi
    jmp l1_trap_common
    .set vec, vec + 1
    .endr
l1_trap_common:
    /* Inside l1_probe: record the fault and return 1 from the probe. */
    movq l1_probe_rsp, %rax
    testq %rax, %rax
    jz 1f
    movq %rdi, l1_probe_vector
    movq %rdx, l1_probe_error
    movq %cr2, %rcx
    movq %rcx, l1_probe_cr2
    movq %rax, %rsp
    movl $1, %eax
    jmp l1_probe_out
1:  movq (%rsp), %rsi
    andq $-16, %rsp
    call l1_trap

    /* u64 l1_probe(fn(u64), u64 arg): calls fn(arg); 0 if it returned,
       1 if it faulted (vector, error code, CR2 in l1_probe_*). */
    .global l1_probe
l1_probe:
    pushq %rbx
    pushq %rbp
    pushq %r12
    pushq %r13
    pushq %r14
    pushq %r15
    movq %rsp, l1_probe_rsp
    movq %rdi, %rax
    movq %rsi, %rdi
    call *%rax
    xorl %eax, %eax
l1_probe_out:
    movq $0, l1_probe_rsp
    popq %r15
    popq %r14
    popq %r13
    popq %r12
    popq %rbp
    popq %rbx
    ret

    .section .data
    .balign 8
l1_probe_rsp: .quad 0
    .global l1_probe_vector, l1_probe_error, l1_probe_cr2
l1_probe_vector: .quad 0
l1_probe_error: .quad 0
l1_probe_cr2: .quad 0
    .section .text
    "#,
    options(att_syntax)
);

unsafe extern "C" {
    static l1_trap_stubs: u8;
    static mut l1_gdt: [u64; 5];
    static l1_tss: u8;
}

#[unsafe(no_mangle)]
extern "C" fn l1_trap(vector: u64, rip: u64) -> ! {
    let _ = writeln!(crate::console::Console, "l1: exception {vector} at rip {rip:#x}; halting");
    halt()
}

unsafe extern "C" {
    fn l1_probe(f: extern "C" fn(u64), arg: u64) -> u64;
    static l1_probe_vector: u64;
    static l1_probe_error: u64;
    static l1_probe_cr2: u64;
}

/// An exception caught by [`probe`]: vector, error code (0 if none), CR2.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Fault {
    pub vector: u64,
    pub error: u64,
    pub cr2: u64,
}

/// Calls `f(arg)`; an exception in it returns here instead of halting.
/// `f` must leave nothing half-done that matters if it is cut short.
pub fn probe(f: extern "C" fn(u64), arg: u64) -> Option<Fault> {
    // SAFETY: l1_probe saves the callee-saved registers and the stack
    // pointer; the trap path restores them and returns 1.
    let faulted = unsafe { l1_probe(f, arg) } != 0;
    // SAFETY: written by the trap path before it returned 1.
    faulted.then(|| unsafe { Fault { vector: l1_probe_vector, error: l1_probe_error, cr2: l1_probe_cr2 } })
}

#[repr(C, align(16))]
struct Idt([u128; 32]);
static mut IDT: Idt = Idt([0; 32]);

/// Installs the IDT and the TSS.
pub fn init_idt() {
    let base = &raw const l1_trap_stubs as u64;
    let tss = &raw const l1_tss as u64;
    // SAFETY: single-threaded start-up code; IDT and GDT are this image's statics.
    unsafe {
        let idt = &mut *(&raw mut IDT);
        for (v, e) in idt.0.iter_mut().enumerate() {
            let h = base + 16 * v as u64;
            let lo = (h & 0xffff) | (0x08 << 16) | (0x8e << 40) | ((h >> 16) & 0xffff) << 48;
            *e = u128::from(lo) | (u128::from(h >> 32) << 64);
        }
        let mut packed = [0u8; 10];
        packed[..2].copy_from_slice(&(32u16 * 16 - 1).to_le_bytes());
        packed[2..].copy_from_slice(&(idt as *const Idt as u64).to_le_bytes());
        core::arch::asm!("lidt [{}]", in(reg) packed.as_ptr());
        // 64-bit available TSS descriptor, limit 103 (SDM Vol. 3A 9.2.3).
        let gdt = &mut *(&raw mut l1_gdt);
        gdt[3] = 103 | ((tss & 0xFF_FFFF) << 16) | (0x89 << 40) | ((tss >> 24) & 0xFF) << 56;
        gdt[4] = tss >> 32;
        core::arch::asm!("ltr {0:x}", in(reg) 0x18u16);
    }
}

/// Address of the TSS (host TR base for VMCS host state).
pub fn tss_base() -> u64 {
    &raw const l1_tss as u64
}

/// Address of the GDT (host GDTR base).
pub fn gdt_base() -> u64 {
    &raw const l1_gdt as u64
}

/// Address of the IDT (host IDTR base).
pub fn idt_base() -> u64 {
    &raw const IDT as u64
}

/// Stops for good. Under nvmx a HLT with interrupts off ends the L1.
pub fn halt() -> ! {
    loop {
        // SAFETY: stopping the CPU is the intent.
        unsafe { core::arch::asm!("cli; hlt") };
    }
}

/// Ends a bare run in an emulator: Bochs' shutdown port (0x8900, the string
/// "Shutdown") and QEMU's isa-debug-exit (0xf4). On real hardware and under
/// nvmx (where the L1 has no such devices) nothing happens and the caller halts.
pub fn power_off_emulator() {
    for b in *b"Shutdown" {
        // SAFETY: writes to emulator-only debug ports.
        unsafe { core::arch::asm!("out dx, al", in("dx") 0x8900u16, in("al") b) };
    }
    // SAFETY: as above.
    unsafe { core::arch::asm!("out dx, al", in("dx") 0xf4u16, in("al") 0u8) };
}

/// Loads an empty IDT and raises #BP: #BP, #DF and #GP cannot be delivered,
/// so the CPU shuts down (a triple fault).
pub fn triple_fault() -> ! {
    let empty: [u8; 10] = [0; 10];
    // SAFETY: the point is to crash this L1.
    unsafe { core::arch::asm!("lidt [{}]; int3", in(reg) empty.as_ptr()) };
    halt()
}

/// Resets the machine the way a PC's firmware and OSes do: `cf9` writes the
/// PCI reset control register (hard reset select, then reset CPU: 0x02,
/// 0x06), `kbd` pulses the reset line through the 8042's command 0xFE, `92`
/// sets port 0x92's fast-reset bit (keeping A20 on). Returns only if the
/// machine did not reset.
pub fn reset(how: &str) {
    let out = |port: u16, v: u8| {
        // SAFETY: the point is to reset this machine; these ports are the
        // PC's reset controls.
        unsafe { core::arch::asm!("out dx, al", in("dx") port, in("al") v) };
    };
    match how {
        "cf9" => {
            out(0xCF9, 0x02);
            out(0xCF9, 0x06);
        }
        "kbd" => out(0x64, 0xFE),
        _ => out(0x92, 0x03),
    }
    // A reset takes effect at once; give a slow one time before reporting.
    for _ in 0..1_000_000 {
        core::hint::spin_loop();
    }
}
