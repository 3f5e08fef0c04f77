//! `workload=selftest`: VMX conformance checks, one line each, ending in
//! `N passed, M failed`. Each check states what the SDM (Vol. 3C ch. 32,
//! "VMX instruction reference", and 27.1-27.2 for VM-entry checks) says the
//! instruction must do. Run bare, the CPU answers; run under nvmx, nvmx
//! must answer the same, line for line.

use core::fmt::Write;

use nvmx_vmx::caps::VmxCaps;
use nvmx_vmx::field::Field as F;

use crate::console::Console;
use crate::forum::{alloc_page, try_enter};
use crate::vmx::{self, VmFail};

/// What a check expects.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Want {
    Succeed,
    FailInvalid,
    FailValid(u32),
}

fn got(r: Result<(), VmFail>) -> Want {
    match r {
        Ok(()) => Want::Succeed,
        Err(VmFail::Invalid) => Want::FailInvalid,
        Err(VmFail::Valid(n)) => Want::FailValid(n),
    }
}

fn show(w: Want) -> &'static str {
    match w {
        Want::Succeed => "VMsucceed",
        Want::FailInvalid => "VMfailInvalid",
        Want::FailValid(2) => "VMfailValid(2)",
        Want::FailValid(3) => "VMfailValid(3)",
        Want::FailValid(5) => "VMfailValid(5)",
        Want::FailValid(7) => "VMfailValid(7)",
        Want::FailValid(8) => "VMfailValid(8)",
        Want::FailValid(9) => "VMfailValid(9)",
        Want::FailValid(10) => "VMfailValid(10)",
        Want::FailValid(11) => "VMfailValid(11)",
        Want::FailValid(12) => "VMfailValid(12)",
        Want::FailValid(13) => "VMfailValid(13)",
        Want::FailValid(15) => "VMfailValid(15)",
        Want::FailValid(28) => "VMfailValid(28)",
        Want::FailValid(_) => "VMfailValid(other)",
    }
}

struct Tally {
    passed: u32,
    failed: u32,
}

impl Tally {
    fn check(&mut self, name: &str, want: Want, r: Result<(), VmFail>) {
        let g = got(r);
        self.value(name, show(want), show(g), g == want);
    }
    fn value(&mut self, name: &str, want: &str, got: &str, ok: bool) {
        if ok {
            self.passed += 1;
            let _ = writeln!(Console, "l1: selftest {name}: pass ({got})");
        } else {
            self.failed += 1;
            let _ = writeln!(Console, "l1: selftest {name}: FAIL (expected {want}, got {got})");
        }
    }
    fn equal(&mut self, name: &str, want: u64, got: Result<u64, VmFail>) {
        match got {
            Ok(v) if v == want => self.value(name, "", "value as expected", true),
            Ok(_) => self.value(name, "the written value", "another value", false),
            Err(e) => self.value(name, "a value", show(self::got(Err(e))), false),
        }
    }
}

/// Runs the checks; prints the tally.
pub fn run(caps: &VmxCaps) {
    let mut t = Tally { passed: 0, failed: 0 };
    let rev = caps.revision_id();
    let page = |revision: u32| {
        let p = alloc_page();
        // SAFETY: a fresh page of the L1's pool.
        unsafe { *(p as *mut u32) = revision };
        p
    };
    let (cr0_f0, cr0_f1) = caps.cr0_fixed();
    let (cr4_f0, cr4_f1) = caps.cr4_fixed();
    // SAFETY: the bits VMX operation requires (SDM 24.8).
    unsafe {
        let (cr0, cr4): (u64, u64);
        core::arch::asm!("mov {}, cr0", out(reg) cr0);
        core::arch::asm!("mov {}, cr4", out(reg) cr4);
        core::arch::asm!("mov cr0, {}", in(reg) (cr0 | cr0_f0) & cr0_f1);
        core::arch::asm!("mov cr4, {}", in(reg) (cr4 | cr4_f0 | (1 << 13)) & cr4_f1);
    }
    let vmxon = page(rev);
    let a = page(rev);
    let b = page(rev);
    let bad = page(rev ^ 0x1234);

    t.check("vmxon", Want::Succeed, vmx::try_op("vmxon", vmxon));
    t.check("vmxon in VMX root, no current VMCS", Want::FailInvalid, vmx::try_op("vmxon", vmxon));
    t.check("vmread without a current VMCS", Want::FailInvalid, vmx::try_vmread(F::GUEST_RIP.encoding()).map(|_| ()));
    t.check("vmclear", Want::Succeed, vmx::try_op("vmclear", a));
    t.check("vmptrld", Want::Succeed, vmx::try_op("vmptrld", a));
    t.value("vmptrst names it", "A", "the loaded VMCS", vmx::vmptrst() == a);
    t.check("vmxon in VMX root", Want::FailValid(15), vmx::try_op("vmxon", vmxon));
    t.check("vmptrld unaligned", Want::FailValid(9), vmx::try_op("vmptrld", b | 0x800));
    t.check("vmptrld of the VMXON region", Want::FailValid(10), vmx::try_op("vmptrld", vmxon));
    t.check("vmptrld with a wrong revision id", Want::FailValid(11), vmx::try_op("vmptrld", bad));
    t.check("vmclear unaligned", Want::FailValid(2), vmx::try_op("vmclear", b | 0x10));
    t.check("vmclear of the VMXON region", Want::FailValid(3), vmx::try_op("vmclear", vmxon));
    t.check("vmread of an unsupported field", Want::FailValid(12), vmx::try_vmread(0x6830).map(|_| ()));
    t.check("vmread of a high part of a natural field", Want::FailValid(12), vmx::try_vmread(0x681F).map(|_| ()));
    // Allowed only where IA32_VMX_MISC bit 29 says so (SDM A.6).
    let ro = if caps.misc & (1 << 29) != 0 { Want::Succeed } else { Want::FailValid(13) };
    t.check("vmwrite of a read-only field", ro, vmx::try_vmwrite(F::VM_EXIT_REASON.encoding(), 1));
    t.check("vmwrite of a 16-bit field", Want::Succeed, vmx::try_vmwrite(F::GUEST_ES_SELECTOR.encoding(), 0x1_2345));
    t.equal("16-bit field keeps 16 bits", 0x2345, vmx::try_vmread(F::GUEST_ES_SELECTOR.encoding()));
    t.check("vmwrite of a 32-bit field", Want::Succeed, vmx::try_vmwrite(F::GUEST_ES_LIMIT.encoding(), 0x1_2345_6789));
    t.equal("32-bit field keeps 32 bits", 0x2345_6789, vmx::try_vmread(F::GUEST_ES_LIMIT.encoding()));
    t.check("vmwrite of a 64-bit field", Want::Succeed, vmx::try_vmwrite(F::TSC_OFFSET.encoding(), 0x1111_2222_3333_4444));
    t.check("vmwrite of its high part", Want::Succeed, vmx::try_vmwrite(F::TSC_OFFSET.encoding() | 1, 0xAAAA));
    t.equal("full read after a high write", 0x0000_AAAA_3333_4444, vmx::try_vmread(F::TSC_OFFSET.encoding()));
    t.equal("high read", 0xAAAA, vmx::try_vmread(F::TSC_OFFSET.encoding() | 1));
    t.check("vmresume of a clear VMCS", Want::FailValid(5), try_enter(false));
    t.check("vmlaunch with invalid controls", Want::FailValid(7), try_enter(true));

    // Valid controls (every must-be-1 bit, nothing else), a broken host state.
    for (f, (allowed0, _)) in [
        (F::PIN_BASED_VM_EXEC_CONTROL, caps.pinbased()),
        (F::CPU_BASED_VM_EXEC_CONTROL, caps.procbased()),
        (F::VM_EXIT_CONTROLS, caps.exit()),
        (F::VM_ENTRY_CONTROLS, caps.entry()),
    ] {
        let _ = vmx::try_vmwrite(f.encoding(), allowed0.into());
    }
    let _ = vmx::try_vmwrite(F::CR3_TARGET_COUNT.encoding(), 0);
    let _ = vmx::try_vmwrite(F::HOST_CR0.encoding(), 0);
    t.check("vmlaunch with an invalid host state", Want::FailValid(8), try_enter(true));

    let desc = [0u64, 0];
    t.check("invept with an unsupported type", Want::FailValid(28), vmx::try_invalidate(true, 3, desc));
    t.check("invvpid with an unsupported type", Want::FailValid(28), vmx::try_invalidate(false, 4, desc));
    t.check("invept all-context", Want::Succeed, vmx::try_invalidate(true, 2, desc));
    t.check("invvpid all-context", Want::Succeed, vmx::try_invalidate(false, 2, desc));
    t.check("vmclear of the current VMCS", Want::Succeed, vmx::try_op("vmclear", a));
    t.check("vmread after it", Want::FailInvalid, vmx::try_vmread(F::GUEST_RIP.encoding()).map(|_| ()));
    t.value("vmptrst after it", "no current VMCS", "all ones", vmx::vmptrst() == u64::MAX);
    t.check("vmxoff", Want::Succeed, vmx::vmxoff());
    let _ = writeln!(Console, "l1: selftest {} passed, {} failed", t.passed, t.failed);
}
