//! The local APIC, in x2APIC mode when the CPU has it (MSR access, 32-bit
//! ids), else xAPIC (MMIO at the IA32_APIC_BASE address). SDM Vol. 3A ch. 12.

use core::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use crate::arch::cpu::{cpuid, rdmsr, wrmsr};

const IA32_APIC_BASE: u32 = 0x1B;
const APIC_BASE_ENABLE: u64 = 1 << 11;
const APIC_BASE_X2APIC: u64 = 1 << 10;
const X2APIC_MSR_BASE: u32 = 0x800;

// Register offsets (xAPIC MMIO offset; x2APIC MSR = 0x800 + offset/16).
const REG_ID: u32 = 0x20;
const REG_EOI: u32 = 0xB0;
const REG_SVR: u32 = 0xF0;
const REG_ICR_LOW: u32 = 0x300;
const REG_ICR_HIGH: u32 = 0x310;
const REG_LVT_TIMER: u32 = 0x320;
const REG_TIMER_INITIAL: u32 = 0x380;
const REG_TIMER_DIVIDE: u32 = 0x3E0;

/// The idle wake-up timer's vector (below the kick IPI's 0xF0).
pub const IDLE_TIMER_VECTOR: u8 = 0xEF;

/// Spurious-interrupt vector (also enables the APIC via SVR bit 8).
pub const SPURIOUS_VECTOR: u8 = 0xFF;

static X2APIC: AtomicBool = AtomicBool::new(false);
static MMIO_BASE: AtomicU64 = AtomicU64::new(0xFEE0_0000);

/// Whether the CPU supports x2APIC (CPUID.1:ECX[21]).
pub fn has_x2apic() -> bool {
    cpuid(1, 0).2 & (1 << 21) != 0
}

fn read(reg: u32) -> u32 {
    if X2APIC.load(Ordering::Relaxed) {
        rdmsr(X2APIC_MSR_BASE + reg / 16) as u32
    } else {
        let addr = MMIO_BASE.load(Ordering::Relaxed) + u64::from(reg);
        // SAFETY: the APIC page is identity mapped (below 4 GiB) and `reg` is
        // an architectural register offset.
        unsafe { core::ptr::read_volatile(addr as *const u32) }
    }
}

fn write(reg: u32, value: u32) {
    if X2APIC.load(Ordering::Relaxed) {
        // SAFETY: x2APIC registers are MSRs 0x800-0x8FF; writing them only
        // affects the local APIC.
        unsafe { wrmsr(X2APIC_MSR_BASE + reg / 16, u64::from(value)) };
    } else {
        let addr = MMIO_BASE.load(Ordering::Relaxed) + u64::from(reg);
        // SAFETY: as in `read`.
        unsafe { core::ptr::write_volatile(addr as *mut u32, value) };
    }
}

/// Enables this core's local APIC (x2APIC mode if available).
pub fn init_this_cpu() {
    let mut base = rdmsr(IA32_APIC_BASE);
    base |= APIC_BASE_ENABLE;
    if has_x2apic() {
        base |= APIC_BASE_X2APIC;
        X2APIC.store(true, Ordering::Relaxed);
    } else {
        MMIO_BASE.store(base & 0xF_FFFF_F000, Ordering::Relaxed);
    }
    // SAFETY: enabling the local APIC (and x2APIC mode, which the CPU has).
    unsafe { wrmsr(IA32_APIC_BASE, base) };
    write(REG_SVR, 0x100 | u32::from(SPURIOUS_VECTOR));
}

/// This core's APIC id.
pub fn id() -> u32 {
    if X2APIC.load(Ordering::Relaxed) { read(REG_ID) } else { read(REG_ID) >> 24 }
}

/// End of interrupt.
pub fn eoi() {
    write(REG_EOI, 0);
}

/// Arms this core's LAPIC timer to interrupt once, with `vector`, after
/// `count` timer ticks at divide-by-1 (SDM Vol. 3A 12.5.4: one-shot mode is
/// LVT timer bits 18:17 = 0; writing the initial count starts it).
pub fn arm_oneshot(vector: u8, count: u32) {
    write(REG_TIMER_DIVIDE, 0b1011);
    write(REG_LVT_TIMER, u32::from(vector));
    write(REG_TIMER_INITIAL, count);
}

/// Stops this core's LAPIC timer (an initial count of 0 stops it).
pub fn disarm_timer() {
    write(REG_TIMER_INITIAL, 0);
}

/// Interrupt-command-register delivery modes used here.
#[derive(Clone, Copy)]
pub enum Ipi {
    Fixed(u8),
    Init,
    InitDeassert,
    Startup(u8),
}

/// Sends an IPI to the core with APIC id `dest` and waits for delivery.
pub fn send_ipi(dest: u32, ipi: Ipi) {
    // SDM Vol. 3A 12.6.1: delivery mode bits 10:8, level bit 14, trigger bit 15.
    let low = match ipi {
        Ipi::Fixed(v) => u32::from(v) | (1 << 14),
        Ipi::Init => 0x500 | (1 << 14),
        Ipi::InitDeassert => 0x500 | (1 << 15),
        Ipi::Startup(page) => 0x600 | u32::from(page) | (1 << 14),
    };
    if X2APIC.load(Ordering::Relaxed) {
        // SAFETY: x2APIC ICR is one 64-bit MSR (0x830); sending an IPI is what we want.
        unsafe { wrmsr(X2APIC_MSR_BASE + REG_ICR_LOW / 16, (u64::from(dest) << 32) | u64::from(low)) };
    } else {
        write(REG_ICR_HIGH, dest << 24);
        write(REG_ICR_LOW, low);
        // Delivery status (bit 12) clears when the IPI has been sent.
        while read(REG_ICR_LOW) & (1 << 12) != 0 {
            core::hint::spin_loop();
        }
    }
}
