//! x86-64 plumbing: CPU instructions, per-core GDT/TSS, the IDT and traps.

pub mod cpu;
pub mod gdt;
pub mod trap;
