//! Thin wrappers over privileged instructions. MSR accesses have `_safe`
//! variants that turn a #GP into `None` (see the fixups in `trap`), so probing
//! an MSR the CPU lacks cannot take the kernel down.

use core::arch::{asm, global_asm};

/// CPUID leaf/subleaf → (eax, ebx, ecx, edx).
pub fn cpuid(leaf: u32, subleaf: u32) -> (u32, u32, u32, u32) {
    // `__cpuid_count` is safe: CPUID exists on every x86-64 CPU.
    let r = core::arch::x86_64::__cpuid_count(leaf, subleaf);
    (r.eax, r.ebx, r.ecx, r.edx)
}

/// The 12-byte vendor string (e.g. `GenuineIntel`).
pub fn vendor() -> [u8; 12] {
    let (_, b, c, d) = cpuid(0, 0);
    let mut v = [0u8; 12];
    v[0..4].copy_from_slice(&b.to_le_bytes());
    v[4..8].copy_from_slice(&d.to_le_bytes());
    v[8..12].copy_from_slice(&c.to_le_bytes());
    v
}

/// Time-stamp counter. In Bochs it counts retired instructions exactly.
#[inline(always)]
pub fn rdtsc() -> u64 {
    // SAFETY: RDTSC has no side effects; CR4.TSD is clear in L0.
    unsafe { core::arch::x86_64::_rdtsc() }
}

global_asm!(
    r#"
    .global nvmx_rdmsr_safe
    .global nvmx_rdmsr_insn
    .global nvmx_wrmsr_safe
    .global nvmx_wrmsr_insn
    .global nvmx_msr_fixup
/* u64 nvmx_rdmsr_safe(u32 msr, u64 *out) -> 0 ok, 1 #GP */
nvmx_rdmsr_safe:
    movl %edi, %ecx
nvmx_rdmsr_insn:
    rdmsr
    shlq $32, %rdx
    movl %eax, %eax
    orq %rdx, %rax
    movq %rax, (%rsi)
    xorl %eax, %eax
    ret
/* u64 nvmx_wrmsr_safe(u32 msr, u64 value) -> 0 ok, 1 #GP */
nvmx_wrmsr_safe:
    movl %edi, %ecx
    movl %esi, %eax
    movq %rsi, %rdx
    shrq $32, %rdx
nvmx_wrmsr_insn:
    wrmsr
    xorl %eax, %eax
    ret
nvmx_msr_fixup:
    movl $1, %eax
    ret
    "#,
    options(att_syntax)
);

unsafe extern "C" {
    fn nvmx_rdmsr_safe(msr: u32, out: *mut u64) -> u64;
    fn nvmx_wrmsr_safe(msr: u32, value: u64) -> u64;
    static nvmx_rdmsr_insn: u8;
    static nvmx_wrmsr_insn: u8;
    static nvmx_msr_fixup: u8;
}

/// (faulting instruction, where to continue) pairs the #GP handler honours.
pub fn msr_fixups() -> [(u64, u64); 2] {
    let fix = &raw const nvmx_msr_fixup as u64;
    [(&raw const nvmx_rdmsr_insn as u64, fix), (&raw const nvmx_wrmsr_insn as u64, fix)]
}

/// RDMSR that returns `None` instead of faulting on a missing MSR.
pub fn rdmsr_safe(msr: u32) -> Option<u64> {
    let mut value = 0;
    // SAFETY: a #GP at the RDMSR is caught by the trap fixup; no other effect.
    let failed = unsafe { nvmx_rdmsr_safe(msr, &mut value) };
    (failed == 0).then_some(value)
}

/// WRMSR that returns `false` instead of faulting.
///
/// # Safety
/// Writing an MSR can change anything about the CPU; the caller knows this MSR.
pub unsafe fn wrmsr_safe(msr: u32, value: u64) -> bool {
    // SAFETY: forwarded to the caller; a #GP is caught by the fixup.
    unsafe { nvmx_wrmsr_safe(msr, value) == 0 }
}

/// RDMSR of an MSR known to exist.
pub fn rdmsr(msr: u32) -> u64 {
    rdmsr_safe(msr).unwrap_or_else(|| panic!("rdmsr({msr:#x}) faulted"))
}

/// WRMSR of an MSR known to exist.
///
/// # Safety
/// As [`wrmsr_safe`].
pub unsafe fn wrmsr(msr: u32, value: u64) {
    // SAFETY: forwarded to the caller.
    if !unsafe { wrmsr_safe(msr, value) } {
        panic!("wrmsr({msr:#x}, {value:#x}) faulted");
    }
}

pub fn read_cr0() -> u64 {
    let v;
    // SAFETY: reading CR0 has no side effects.
    unsafe { asm!("mov {}, cr0", out(reg) v, options(nomem, nostack)) };
    v
}
pub fn read_cr2() -> u64 {
    let v;
    // SAFETY: reading CR2 has no side effects.
    unsafe { asm!("mov {}, cr2", out(reg) v, options(nomem, nostack)) };
    v
}
pub fn read_cr3() -> u64 {
    let v;
    // SAFETY: reading CR3 has no side effects.
    unsafe { asm!("mov {}, cr3", out(reg) v, options(nomem, nostack)) };
    v
}
pub fn read_cr4() -> u64 {
    let v;
    // SAFETY: reading CR4 has no side effects.
    unsafe { asm!("mov {}, cr4", out(reg) v, options(nomem, nostack)) };
    v
}
/// # Safety
/// CR0 controls paging and protection; the caller keeps the kernel mapped.
pub unsafe fn write_cr0(v: u64) {
    // SAFETY: forwarded to the caller.
    unsafe { asm!("mov cr0, {}", in(reg) v, options(nostack)) };
}
/// # Safety
/// As [`write_cr0`].
pub unsafe fn write_cr4(v: u64) {
    // SAFETY: forwarded to the caller.
    unsafe { asm!("mov cr4, {}", in(reg) v, options(nostack)) };
}

/// Stops this core for good (interrupts off).
pub fn halt_forever() -> ! {
    loop {
        x86_64::instructions::interrupts::disable();
        x86_64::instructions::hlt();
    }
}

/// Port I/O helpers.
pub fn outb(port: u16, v: u8) {
    // SAFETY: callers use ports of devices L0 owns (PIC, PIT, ACPI, QEMU/Bochs exits).
    unsafe { x86_64::instructions::port::Port::new(port).write(v) }
}
pub fn inb(port: u16) -> u8 {
    // SAFETY: as outb.
    unsafe { x86_64::instructions::port::Port::new(port).read() }
}
