//! The VMX instructions as thin wrappers (SDM Vol. 3C ch. 32, "VMX
//! instruction reference"). Each reports the architectural outcome:
//! VMsucceed, VMfailInvalid (CF = 1) or VMfailValid (ZF = 1, error number in
//! the current VMCS's VM-instruction error field).

use core::arch::asm;

pub use nvmx_vmx::error::VmFail;

/// VM_INSTRUCTION_ERROR encoding (read-only data field, SDM Appendix B.3.3).
const VM_INSTRUCTION_ERROR: u32 = 0x4400;

/// Turns RFLAGS after a VMX instruction into its outcome.
fn outcome(rflags: u64) -> Result<(), VmFail> {
    // SAFETY: ZF = 1 means there is a current VMCS holding the error.
    VmFail::from_rflags(rflags, || unsafe { vmread_raw(VM_INSTRUCTION_ERROR) }.unwrap_or(0) as u32)
}

/// VMXON with the physical address of a prepared VMXON region.
///
/// # Safety
/// CR4.VMXE is set, the region is 4 KiB aligned with the revision id written,
/// and stays allocated while the core is in VMX operation.
pub unsafe fn vmxon(region: u64) -> Result<(), VmFail> {
    let rflags: u64;
    // SAFETY: forwarded to the caller.
    unsafe { asm!("vmxon [{}]; pushfq; pop {}", in(reg) &region, lateout(reg) rflags) };
    outcome(rflags)
}

/// VMCLEAR of the VMCS at physical address `vmcs`.
///
/// # Safety
/// `vmcs` is a VMCS region owned by L0.
pub unsafe fn vmclear(vmcs: u64) -> Result<(), VmFail> {
    let rflags: u64;
    // SAFETY: forwarded to the caller.
    unsafe { asm!("vmclear [{}]; pushfq; pop {}", in(reg) &vmcs, lateout(reg) rflags) };
    outcome(rflags)
}

/// VMPTRLD: makes `vmcs` current on this core.
///
/// # Safety
/// `vmcs` is a VMCS region owned by L0 with the right revision id.
pub unsafe fn vmptrld(vmcs: u64) -> Result<(), VmFail> {
    let rflags: u64;
    // SAFETY: forwarded to the caller.
    unsafe { asm!("vmptrld [{}]; pushfq; pop {}", in(reg) &vmcs, lateout(reg) rflags) };
    outcome(rflags)
}

/// VMPTRST: the current-VMCS pointer.
pub fn vmptrst() -> u64 {
    let mut ptr: u64 = 0;
    // SAFETY: VMPTRST only stores 8 bytes to the given location; outside VMX
    // root it would #UD, and callers are in VMX root.
    unsafe { asm!("vmptrst [{}]", in(reg) &mut ptr) };
    ptr
}

/// VMREAD without interpreting failure beyond the flags.
///
/// # Safety
/// The core is in VMX root operation.
unsafe fn vmread_raw(field: u32) -> Result<u64, ()> {
    let value: u64;
    let rflags: u64;
    // SAFETY: forwarded to the caller.
    unsafe {
        asm!("vmread {}, {}; pushfq; pop {}", lateout(reg) value, in(reg) u64::from(field), lateout(reg) rflags)
    };
    if rflags & 0x41 != 0 { Err(()) } else { Ok(value) }
}

/// VMREAD of `field` from the current VMCS. Inlined with the failure test
/// on the flags (SETBE: CF or ZF) and the error read only on failure: L0
/// does a few dozen of these per nested exit.
#[inline(always)]
pub fn vmread(field: u32) -> Result<u64, VmFail> {
    let value: u64;
    let failed: u8;
    // SAFETY: callers are in VMX root with a current VMCS; a bad field gives
    // VMfailValid(12), reported, not a fault.
    unsafe {
        asm!("vmread {v}, {f}", "setbe {r}", v = lateout(reg) value, f = in(reg) u64::from(field), r = lateout(reg_byte) failed, options(nostack))
    };
    if failed == 0 { Ok(value) } else { Err(failure()) }
}

/// VMWRITE of `field` in the current VMCS (inlined as `vmread`).
#[inline(always)]
pub fn vmwrite(field: u32, value: u64) -> Result<(), VmFail> {
    let failed: u8;
    // SAFETY: as `vmread`; a VMWRITE only changes the current VMCS, which L0 owns.
    unsafe {
        asm!("vmwrite {f}, {v}", "setbe {r}", f = in(reg) u64::from(field), v = in(reg) value, r = lateout(reg_byte) failed, options(nostack))
    };
    if failed == 0 { Ok(()) } else { Err(failure()) }
}

/// How a VMREAD/VMWRITE failed: with a current VMCS it is VMfailValid and
/// the error is in VM_INSTRUCTION_ERROR; without one that VMREAD fails too,
/// and it was VMfailInvalid (SDM 31.2).
#[cold]
#[inline(never)]
fn failure() -> VmFail {
    // SAFETY: in VMX root (the failed instruction did not #UD).
    match unsafe { vmread_raw(VM_INSTRUCTION_ERROR) } {
        Ok(error) => VmFail::Valid(error as u32),
        Err(()) => VmFail::Invalid,
    }
}

/// INVEPT of `kind` (1 single-context, 2 all-context) for `eptp`.
pub fn invept(kind: u64, eptp: u64) -> Result<(), VmFail> {
    let desc: [u64; 2] = [eptp, 0];
    let rflags: u64;
    // SAFETY: INVEPT only drops cached translations; callers are in VMX root.
    unsafe { asm!("invept {}, [{}]; pushfq; pop {}", in(reg) kind, in(reg) &desc, lateout(reg) rflags) };
    outcome(rflags)
}

/// INVVPID of `kind` (0 address, 1 single, 2 all, 3 single keeping globals).
pub fn invvpid(kind: u64, vpid: u16, addr: u64) -> Result<(), VmFail> {
    let desc: [u64; 2] = [u64::from(vpid), addr];
    let rflags: u64;
    // SAFETY: INVVPID only drops cached translations; callers are in VMX root.
    unsafe { asm!("invvpid {}, [{}]; pushfq; pop {}", in(reg) kind, in(reg) &desc, lateout(reg) rflags) };
    outcome(rflags)
}
