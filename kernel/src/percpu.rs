//! Per-CPU blocks. GS base points at the running core's block, so
//! `current()` is one load; blocks are indexed 0..n in MADT order with the
//! boot core at 0.

use core::sync::atomic::{AtomicU8, AtomicU32, AtomicUsize, Ordering};
use spin::Once;

use crate::arch::gdt::CpuTables;

/// The most cores nvmx drives.
pub const MAX_CPUS: usize = 64;
const IA32_GS_BASE: u32 = 0xC000_0101;

/// Life cycle of a core as the shell shows it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum CpuState {
    /// Listed in the MADT, not started (yet).
    Offline = 0,
    /// INIT-SIPI-SIPI sent, not reported in.
    Starting = 1,
    /// Running nvmx code.
    Online = 2,
    /// Did not come up, or halted on a fatal error.
    Failed = 3,
}

impl CpuState {
    pub fn name(self) -> &'static str {
        match self {
            CpuState::Offline => "offline",
            CpuState::Starting => "starting",
            CpuState::Online => "online",
            CpuState::Failed => "failed",
        }
    }
}

/// One core's block.
#[repr(C)]
pub struct PerCpu {
    /// Address of this block; must stay first (read as gs:0).
    self_ptr: AtomicUsize,
    pub index: usize,
    pub apic_id: AtomicU32,
    state: AtomicU8,
    pub tables: Once<CpuTables>,
}

impl PerCpu {
    const fn new(index: usize) -> Self {
        PerCpu {
            self_ptr: AtomicUsize::new(0),
            index,
            apic_id: AtomicU32::new(u32::MAX),
            state: AtomicU8::new(CpuState::Offline as u8),
            tables: Once::new(),
        }
    }
    pub fn state(&self) -> CpuState {
        match self.state.load(Ordering::Acquire) {
            1 => CpuState::Starting,
            2 => CpuState::Online,
            3 => CpuState::Failed,
            _ => CpuState::Offline,
        }
    }
    pub fn set_state(&self, s: CpuState) {
        self.state.store(s as u8, Ordering::Release);
    }
}

static CPUS: [PerCpu; MAX_CPUS] = {
    let mut cpus = [const { PerCpu::new(0) }; MAX_CPUS];
    let mut i = 0;
    while i < MAX_CPUS {
        cpus[i].index = i;
        i += 1;
    }
    cpus
};
static NCPUS: AtomicUsize = AtomicUsize::new(1);

/// Number of cores nvmx knows of (from the MADT).
pub fn count() -> usize {
    NCPUS.load(Ordering::Acquire)
}
pub fn set_count(n: usize) {
    NCPUS.store(n.clamp(1, MAX_CPUS), Ordering::Release);
}

/// Block of core `index`.
pub fn cpu(index: usize) -> &'static PerCpu {
    &CPUS[index]
}

/// All known cores' blocks.
pub fn all() -> &'static [PerCpu] {
    &CPUS[..count()]
}

/// Makes `index` the running core's block (GS base) and loads its GDT, TSS, IDT.
pub fn init_this_cpu(index: usize, apic_id: u32) -> &'static PerCpu {
    let cpu = &CPUS[index];
    cpu.self_ptr.store(cpu as *const PerCpu as usize, Ordering::Release);
    cpu.apic_id.store(apic_id, Ordering::Release);
    // SAFETY: GS base is L0's per-CPU pointer and nothing else uses GS.
    unsafe { crate::arch::cpu::wrmsr(IA32_GS_BASE, cpu as *const PerCpu as u64) };
    cpu.tables.call_once(crate::arch::gdt::init_this_cpu);
    crate::arch::trap::init_this_cpu();
    cpu
}

/// The running core's block.
pub fn current() -> &'static PerCpu {
    let ptr: usize;
    // SAFETY: after `init_this_cpu` gs:0 holds this core's block address.
    unsafe { core::arch::asm!("mov {}, gs:[0]", out(reg) ptr, options(nostack, readonly, preserves_flags)) };
    // SAFETY: the pointer is to an element of the static CPUS array.
    unsafe { &*(ptr as *const PerCpu) }
}

/// The running core's index, or `None` before its block is set up. Slow
/// (RDMSR); for reports and log lines.
pub fn try_current_index() -> Option<usize> {
    let base = crate::arch::cpu::rdmsr_safe(IA32_GS_BASE)? as usize;
    let first = CPUS.as_ptr() as usize;
    let off = base.checked_sub(first)?;
    (off % core::mem::size_of::<PerCpu>() == 0 && off / core::mem::size_of::<PerCpu>() < MAX_CPUS)
        .then(|| off / core::mem::size_of::<PerCpu>())
}

/// Marks the running core failed (fatal exception or panic).
pub fn mark_current_failed() {
    if let Some(i) = try_current_index() {
        CPUS[i].set_state(CpuState::Failed);
    }
}
