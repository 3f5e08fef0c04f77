//! L0's VMX root operation: per-core VMXON, the VMCS0-1 that runs each
//! core's L1, and the exit handling. SDM Vol. 3C chapters 25-29 (VMX
//! operation, VMCS, VM entries, VM exits), revision 086 (2024).

pub mod dump;
pub mod insn;
pub mod run;

use core::sync::atomic::{AtomicBool, Ordering};

use nvmx_vmx::caps::VmxCaps;
use spin::Once;

use crate::arch::cpu;

/// The host's VMX capabilities, read once on the boot core.
static CAPS: Once<Option<VmxCaps>> = Once::new();
/// Why VMX cannot be used here (for `vmx` and the boot log), when it can't.
static UNAVAILABLE: Once<&'static str> = Once::new();
static ENABLED: AtomicBool = AtomicBool::new(false);

const IA32_FEATURE_CONTROL: u32 = 0x3A;
const FEATURE_CONTROL_LOCK: u64 = 1 << 0;
const FEATURE_CONTROL_VMX_OUTSIDE_SMX: u64 = 1 << 2;
const CR4_VMXE: u64 = 1 << 13;

/// Probes VT-x on the boot core: CPUID, IA32_FEATURE_CONTROL (locked with VMX
/// on if the firmware left it unlocked, SDM 24.7), the capability MSRs.
pub fn probe() -> Option<&'static VmxCaps> {
    CAPS.call_once(|| {
        let (_, _, ecx, _) = cpu::cpuid(1, 0);
        let mut fc = cpu::rdmsr_safe(IA32_FEATURE_CONTROL);
        if let Some(v) = fc.filter(|v| v & FEATURE_CONTROL_LOCK == 0 && ecx & (1 << 5) != 0) {
            let locked = v | FEATURE_CONTROL_LOCK | FEATURE_CONTROL_VMX_OUTSIDE_SMX;
            // SAFETY: the firmware left the MSR unlocked; enabling VMX outside
            // SMX and locking it is what an OS is expected to do (SDM 24.7).
            if unsafe { cpu::wrmsr_safe(IA32_FEATURE_CONTROL, locked) } {
                fc = Some(locked);
            }
        }
        if let Some(reason) = nvmx_vmx::caps::vmx_unavailable_reason(ecx, &cpu::vendor(), fc) {
            UNAVAILABLE.call_once(|| reason);
            return None;
        }
        Some(VmxCaps::read(cpu::rdmsr_safe))
    })
    .as_ref()
}

/// Why VT-x is not usable (after `probe` returned `None`).
pub fn unavailable_reason() -> &'static str {
    UNAVAILABLE.get().copied().unwrap_or("not probed")
}

/// Whether cores are in VMX operation.
pub fn enabled() -> bool {
    ENABLED.load(Ordering::Acquire)
}

/// Enters VMX root operation on this core (SDM 24.7 "Enabling and entering
/// VMX operation"): CR0/CR4 fixed bits, CR4.VMXE, VMXON with a region that
/// carries the revision id. Returns the VMXON region's address.
pub fn vmxon_this_cpu(caps: &VmxCaps) -> Result<u64, &'static str> {
    let region = crate::mm::frames::alloc(1, 1).ok_or("no memory for the VMXON region")?;
    // SAFETY: the frame was just allocated for this purpose.
    unsafe { (region as *mut u32).write_volatile(caps.revision_id()) };
    let (cr0_fixed0, cr0_fixed1) = caps.cr0_fixed();
    let (cr4_fixed0, cr4_fixed1) = caps.cr4_fixed();
    // SAFETY: setting the bits the CPU requires for VMX (NE, VMXE …) and
    // clearing the ones it forbids does not change how L0 itself runs.
    unsafe {
        cpu::write_cr0((cpu::read_cr0() | cr0_fixed0) & cr0_fixed1);
        cpu::write_cr4((cpu::read_cr4() | cr4_fixed0 | CR4_VMXE) & cr4_fixed1);
    }
    // SAFETY: CR4.VMXE is set, the region is ours, aligned and initialised.
    unsafe { insn::vmxon(region) }.map_err(|_| "VMXON failed")?;
    ENABLED.store(true, Ordering::Release);
    Ok(region)
}
