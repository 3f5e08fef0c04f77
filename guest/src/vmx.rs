//! The L1's own use of VT-x: the checks a hypervisor makes before VMXON
//! (SDM Vol. 3C 24.6-24.7), and the VMX instructions wrapped so that every
//! one is counted and its outcome checked (SDM 32.2: CF = VMfailInvalid,
//! ZF = VMfailValid with the error in VM_INSTRUCTION_ERROR).

use core::arch::asm;
use core::sync::atomic::{AtomicU64, Ordering::Relaxed};

use nvmx_vmx::caps::VmxCaps;
use nvmx_vmx::field::Field;

/// The VMX instructions the L1 counts, in report order.
#[derive(Clone, Copy)]
pub enum Insn {
    Vmxon,
    Vmclear,
    Vmptrld,
    Vmptrst,
    Vmread,
    Vmwrite,
    Vmlaunch,
    Vmresume,
    Vmxoff,
    Invept,
    Invvpid,
}

pub const INSN_NAMES: [&str; 11] =
    ["vmxon", "vmclear", "vmptrld", "vmptrst", "vmread", "vmwrite", "vmlaunch", "vmresume", "vmxoff", "invept", "invvpid"];

/// How often the L1 executed each instruction.
pub static INSN_COUNT: [AtomicU64; 11] = [const { AtomicU64::new(0) }; 11];
/// VMX instructions that did not succeed.
pub static FAILURES: AtomicU64 = AtomicU64::new(0);

fn count(i: Insn) {
    INSN_COUNT[i as usize].fetch_add(1, Relaxed);
}

/// VMREADs and VMWRITEs executed per field (slot = index in the field
/// table; the last slot: operands that name no field), whatever their
/// outcome: what nvmx's `fields` must count where it emulates them.
pub static FIELD_READS: [AtomicU64; nvmx_vmx::field::COUNT + 1] = [const { AtomicU64::new(0) }; nvmx_vmx::field::COUNT + 1];
pub static FIELD_WRITES: [AtomicU64; nvmx_vmx::field::COUNT + 1] = [const { AtomicU64::new(0) }; nvmx_vmx::field::COUNT + 1];

/// Per-field counting is on (the fuzz turns it on; the forum, whose L1
/// instructions `bench` measures bare and nested, leaves it off).
pub static COUNT_FIELDS: core::sync::atomic::AtomicBool = core::sync::atomic::AtomicBool::new(false);

#[inline(always)]
fn count_field(enc: u64, write: bool) {
    if COUNT_FIELDS.load(Relaxed) {
        count_field_slow(enc, write);
    }
}

#[inline(never)]
fn count_field_slow(enc: u64, write: bool) {
    let slot = u32::try_from(enc)
        .ok()
        .and_then(|e| nvmx_vmx::field::decode(e).ok())
        .map_or(nvmx_vmx::field::COUNT, |(f, _)| f.index());
    (if write { &FIELD_WRITES } else { &FIELD_READS })[slot].fetch_add(1, Relaxed);
}

pub use nvmx_vmx::error::VmFail;

fn outcome(rflags: u64) -> Result<(), VmFail> {
    let r = VmFail::from_rflags(rflags, || {
        count_field(Field::VM_INSTRUCTION_ERROR.encoding().into(), false);
        let err: u64;
        // SAFETY: ZF = 1 means a current VMCS holds the error number.
        unsafe { asm!("vmread {}, {}", out(reg) err, in(reg) u64::from(Field::VM_INSTRUCTION_ERROR.encoding())) };
        err as u32
    });
    if r.is_err() {
        FAILURES.fetch_add(1, Relaxed);
    }
    r
}

fn rdmsr(msr: u32) -> u64 {
    let (lo, hi): (u32, u32);
    // SAFETY: only architectural VMX MSRs are read, after CPUID said VMX exists.
    unsafe { asm!("rdmsr", in("ecx") msr, out("eax") lo, out("edx") hi) };
    (u64::from(hi) << 32) | u64::from(lo)
}

/// Whether VT-x can be used, and its capabilities.
pub fn probe() -> Result<VmxCaps, &'static str> {
    let ecx = core::arch::x86_64::__cpuid(1).ecx;
    if ecx & (1 << 5) == 0 {
        return Err("CPUID.1:ECX.VMX[bit 5] = 0");
    }
    let fc = rdmsr(0x3A);
    if fc & 1 == 0 {
        // Unlocked: enable VMX outside SMX and lock, as firmware would.
        // SAFETY: IA32_FEATURE_CONTROL exists when CPUID reports VMX.
        unsafe { asm!("wrmsr", in("ecx") 0x3Au32, in("eax") (fc | 5) as u32, in("edx") (fc >> 32) as u32) };
    } else if fc & 4 == 0 {
        return Err("IA32_FEATURE_CONTROL locked with VMX disabled");
    }
    Ok(VmxCaps::read(|m| Some(rdmsr(m))))
}

macro_rules! vmx_op {
    ($insn:literal, $ptr:expr) => {{
        let rflags: u64;
        let p: u64 = $ptr;
        // SAFETY: the operand is a 4 KiB region owned by the L1 for this
        // purpose; the outcome is checked by the caller.
        unsafe { asm!(concat!($insn, " [{}]; pushfq; pop {}"), in(reg) &p, lateout(reg) rflags) };
        outcome(rflags)
    }};
}

pub fn vmxon(region: u64) -> Result<(), VmFail> {
    count(Insn::Vmxon);
    vmx_op!("vmxon", region)
}
pub fn vmclear(vmcs: u64) -> Result<(), VmFail> {
    count(Insn::Vmclear);
    vmx_op!("vmclear", vmcs)
}
pub fn vmptrld(vmcs: u64) -> Result<(), VmFail> {
    count(Insn::Vmptrld);
    vmx_op!("vmptrld", vmcs)
}

pub fn vmptrst() -> u64 {
    count(Insn::Vmptrst);
    let mut p: u64 = 0;
    // SAFETY: stores the current-VMCS pointer into `p`.
    unsafe { asm!("vmptrst [{}]", in(reg) &mut p) };
    p
}

pub fn vmxoff() -> Result<(), VmFail> {
    count(Insn::Vmxoff);
    let rflags: u64;
    // SAFETY: leaves VMX operation; the L1 does not use VMX afterwards.
    unsafe { asm!("vmxoff; pushfq; pop {}", lateout(reg) rflags) };
    outcome(rflags)
}

pub fn vmread(f: Field) -> u64 {
    count(Insn::Vmread);
    let v: u64;
    let rflags: u64;
    // SAFETY: reads the current VMCS.
    unsafe { asm!("vmread {}, {}; pushfq; pop {}", lateout(reg) v, in(reg) u64::from(f.encoding()), lateout(reg) rflags) };
    match outcome(rflags) {
        Ok(()) => v,
        Err(e) => {
            report("VMREAD", f.name(), e);
            0
        }
    }
}

pub fn vmwrite(f: Field, v: u64) {
    count(Insn::Vmwrite);
    let rflags: u64;
    // SAFETY: writes the current VMCS.
    unsafe { asm!("vmwrite {}, {}; pushfq; pop {}", in(reg) u64::from(f.encoding()), in(reg) v, lateout(reg) rflags) };
    if let Err(e) = outcome(rflags) {
        report("VMWRITE", f.name(), e);
    }
}

pub fn invept_single(eptp: u64) -> Result<(), VmFail> {
    count(Insn::Invept);
    let desc = [eptp, 0u64];
    let rflags: u64;
    // SAFETY: drops cached EPT translations only.
    unsafe { asm!("invept {}, [{}]; pushfq; pop {}", in(reg) 1u64, in(reg) &desc, lateout(reg) rflags) };
    outcome(rflags)
}

pub fn invvpid_single(vpid: u16) -> Result<(), VmFail> {
    count(Insn::Invvpid);
    let desc = [u64::from(vpid), 0u64];
    let rflags: u64;
    // SAFETY: drops cached linear translations only.
    unsafe { asm!("invvpid {}, [{}]; pushfq; pop {}", in(reg) 1u64, in(reg) &desc, lateout(reg) rflags) };
    outcome(rflags)
}

/// Prints a failed instruction.
pub fn report(insn: &str, what: &str, e: VmFail) {
    use core::fmt::Write;
    let _ = writeln!(crate::console::Console, "l1: {insn} {what} failed: {e}");
}

/// Counts what the entry asm executes: a VMWRITE of HOST_RSP, then
/// VMLAUNCH or VMRESUME.
pub fn count_entry(launch: bool) {
    count(Insn::Vmwrite);
    count(if launch { Insn::Vmlaunch } else { Insn::Vmresume });
}

/// `vmread`, `vmwrite` and `count_entry` with the per-field count (the
/// fuzz's; the forum's path, which `bench` measures, has none).
pub fn vmread_counted(f: Field) -> u64 {
    count_field(f.encoding().into(), false);
    vmread(f)
}
pub fn vmwrite_counted(f: Field, v: u64) {
    count_field(f.encoding().into(), true);
    vmwrite(f, v)
}
pub fn count_entry_counted(launch: bool) {
    count_field(Field::HOST_RSP.encoding().into(), true);
    count_entry(launch)
}

/// VMREAD returning the architectural outcome instead of reporting it.
pub fn try_vmread(enc: u32) -> Result<u64, VmFail> {
    count(Insn::Vmread);
    count_field(enc.into(), false);
    let v: u64;
    let rflags: u64;
    // SAFETY: reads the current VMCS (or fails architecturally).
    unsafe { asm!("vmread {}, {}; pushfq; pop {}", lateout(reg) v, in(reg) u64::from(enc), lateout(reg) rflags) };
    outcome_quiet(rflags).map(|()| v)
}

/// VMWRITE returning the architectural outcome.
pub fn try_vmwrite(enc: u32, v: u64) -> Result<(), VmFail> {
    count(Insn::Vmwrite);
    count_field(enc.into(), true);
    let rflags: u64;
    // SAFETY: writes the current VMCS (or fails architecturally).
    unsafe { asm!("vmwrite {}, {}; pushfq; pop {}", in(reg) u64::from(enc), in(reg) v, lateout(reg) rflags) };
    outcome_quiet(rflags)
}

/// INVEPT / INVVPID of any type, for the conformance checks.
pub fn try_invalidate(invept: bool, kind: u64, desc: [u64; 2]) -> Result<(), VmFail> {
    count(if invept { Insn::Invept } else { Insn::Invvpid });
    let rflags: u64;
    // SAFETY: invalidation only drops cached translations (or fails).
    unsafe {
        if invept {
            asm!("invept {}, [{}]; pushfq; pop {}", in(reg) kind, in(reg) &desc, lateout(reg) rflags);
        } else {
            asm!("invvpid {}, [{}]; pushfq; pop {}", in(reg) kind, in(reg) &desc, lateout(reg) rflags);
        }
    }
    outcome_quiet(rflags)
}

/// `outcome` for checks that expect failures: not counted as failures.
fn outcome_quiet(rflags: u64) -> Result<(), VmFail> {
    let r = outcome(rflags);
    if r.is_err() {
        FAILURES.fetch_sub(1, Relaxed);
    }
    r
}

/// VMXON/VMCLEAR/VMPTRLD whose failure is expected by a check.
pub fn try_op(which: &str, ptr: u64) -> Result<(), VmFail> {
    let r = match which {
        "vmxon" => vmxon(ptr),
        "vmclear" => vmclear(ptr),
        _ => vmptrld(ptr),
    };
    if r.is_err() {
        FAILURES.fetch_sub(1, Relaxed);
    }
    r
}
