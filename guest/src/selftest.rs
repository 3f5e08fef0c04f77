//! `workload=selftest`: VMX conformance checks, one line each, ending in
//! `N passed, M failed`. Each check states what the SDM (Vol. 3C ch. 32,
//! "VMX instruction reference", and 27.1-27.2 for VM-entry checks) says the
//! instruction must do. Run bare, the CPU answers; run under nvmx, nvmx
//! must answer the same, line for line.

use core::arch::global_asm;
use core::fmt::Write;

use nvmx_vmx::caps::VmxCaps;
use nvmx_vmx::field::Field as F;
use nvmx_vmx::controls::{entry, exit as exitc, proc2};

use crate::boot;
use crate::console::Console;
use crate::forum::{alloc_page, read_cr, setup_vmcs, try_enter, Ept};
use nvmx_vmx::entry::GuestRegs as L2Regs;
use crate::vmx::{self, VmFail};

/// What a check expects.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Want {
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
        Want::FailValid(4) => "VMfailValid(4)",
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

pub(crate) struct Tally {
    passed: u32,
    failed: u32,
}

impl Tally {
    pub(crate) fn check(&mut self, name: &str, want: Want, r: Result<(), VmFail>) {
        let g = got(r);
        self.value(name, show(want), show(g), g == want);
    }
    pub(crate) fn value(&mut self, name: &str, want: &str, got: &str, ok: bool) {
        if ok {
            self.passed += 1;
            let _ = writeln!(Console, "l1: selftest {name}: pass ({got})");
        } else {
            self.failed += 1;
            let _ = writeln!(Console, "l1: selftest {name}: FAIL (expected {want}, got {got})");
        }
    }
    /// A check whose outcome is a yes/no against `want`.
    pub(crate) fn expect(&mut self, name: &str, want: &str, ok: bool) {
        self.value(name, want, if ok { "as expected" } else { "something else" }, ok);
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
    // From the boot code: the same instructions under 32-bit and PAE paging.
    match crate::paging_check::result() {
        Some((bits32, pae)) => {
            for (mode, bits) in [("32-bit paging", bits32), ("PAE paging", pae)] {
                for (i, step) in crate::paging_check::STEPS.iter().enumerate() {
                    t.expect(&alloc_free_name(mode, step), "success", bits & (1 << i) != 0);
                }
            }
        }
        None => t.expect("32-bit and PAE paging checks ran at boot", "they ran", false),
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
    t.check("invept single-context with a walk length of 2", Want::FailValid(28), vmx::try_invalidate(true, 1, [0x5000 | 6 | (1 << 3), 0]));
    t.check("invvpid single-context for VPID 0", Want::FailValid(28), vmx::try_invalidate(false, 1, [0, 0]));
    t.check("invvpid with descriptor bits 63:16 set", Want::FailValid(28), vmx::try_invalidate(false, 2, [1 << 16, 0]));
    t.check("invvpid individual-address, non-canonical", Want::FailValid(28), vmx::try_invalidate(false, 0, [1, 1 << 63]));
    t.check("invvpid individual-address", Want::Succeed, vmx::try_invalidate(false, 0, [1, 0x1000]));
    t.check("invept all-context", Want::Succeed, vmx::try_invalidate(true, 2, desc));
    t.check("invvpid all-context", Want::Succeed, vmx::try_invalidate(false, 2, desc));
    l2_checks(&mut t, caps, page(rev));
    crate::irqtest::run(&mut t, caps, page(rev));
    crate::eptad::run(&mut t, caps, page(rev));
    crate::apicaccess::run(&mut t, caps, page(rev));
    t.check("vmptrld back", Want::Succeed, vmx::try_op("vmptrld", a));
    t.check("vmclear of the current VMCS", Want::Succeed, vmx::try_op("vmclear", a));
    t.check("vmread after it", Want::FailInvalid, vmx::try_vmread(F::GUEST_RIP.encoding()).map(|_| ()));
    t.value("vmptrst after it", "no current VMCS", "all ones", vmx::vmptrst() == u64::MAX);
    t.check("vmxoff", Want::Succeed, vmx::vmxoff());
    crate::conformance::outside_vmx(&mut t, caps);
    let _ = writeln!(Console, "l1: selftest {} passed, {} failed", t.passed, t.failed);
}

// L2 code for the checks below: each snippet starts with the instruction
// whose exit is checked; loads and stores end in VMCALL.
global_asm!(
    r#"
    .global st_cpuid, st_hlt, st_out, st_rdmsr, st_wrmsr, st_vmcall, st_ud2, st_load, st_store
    .global st_cr4_tsd, st_cr4_vmxe, st_cr0_mp, st_dr7
st_cpuid:  cpuid
st_hlt:    hlt
st_out:    out 0x80, al
st_rdmsr:  rdmsr
st_wrmsr:  wrmsr
st_vmcall: vmcall
st_ud2:    ud2
st_load:   mov rax, [rsi]
           vmcall
st_store:  mov byte ptr [rsi], 1
           vmcall
st_cr4_tsd:  mov rax, cr4
             btc rax, 2
             mov cr4, rax
             vmcall
st_cr4_vmxe: mov rax, cr4
             btr rax, 13
             mov cr4, rax
             vmcall
st_cr0_mp:   mov rax, cr0
             btc rax, 1
             mov cr0, rax
             vmcall
st_dr7:      mov rax, dr7
             vmcall

    /* For the operand-fault checks (L1 code, called through boot::probe). */
    .global st_vmptrld_at, st_vmptrst_at
st_vmptrld_at: vmptrld [rdi]
               ret
st_vmptrst_at: vmptrst [rdi]
               ret
    "#
);

unsafe extern "C" {
    static st_cpuid: u8;
    static st_hlt: u8;
    static st_out: u8;
    static st_rdmsr: u8;
    static st_wrmsr: u8;
    static st_vmcall: u8;
    static st_ud2: u8;
    pub(crate) static st_load: u8;
    pub(crate) static st_store: u8;
    static st_cr4_tsd: u8;
    static st_cr4_vmxe: u8;
    static st_cr0_mp: u8;
    static st_dr7: u8;
    fn st_vmptrld_at(operand: u64);
    fn st_vmptrst_at(operand: u64);
}

/// What an L2 exit left in the VMCS.
pub(crate) struct L2Exit {
    pub(crate) reason: u64,
    pub(crate) qualification: u64,
    intr_info: u64,
    len: u64,
    gpa: u64,
    pub(crate) rax: u64,
}

/// One L2 vCPU on the current VMCS; its EPT maps pages on demand except
/// the `hole`.
pub(crate) struct L2 {
    pub(crate) ept: Ept,
    launched: bool,
    hole: u64,
}

impl L2 {
    /// An L2 on `ept` that has not run yet; EPT violations at `hole` are
    /// returned, all others mapped (identity) and the L2 resumed.
    pub(crate) fn new(ept: Ept, hole: u64) -> Self {
        L2 { ept, launched: false, hole }
    }
    /// Runs the L2 at `rip` with RCX/RSI = `rcx`/`rsi` until an exit other
    /// than an EPT violation L1 fills. `None` if VMLAUNCH/VMRESUME failed.
    pub(crate) fn run(&mut self, rip: u64, rcx: u64, rsi: u64) -> Option<L2Exit> {
        let mut regs = L2Regs::default();
        regs.gpr[1] = rcx;
        regs.gpr[6] = rsi;
        vmx::vmwrite(F::GUEST_RIP, rip);
        loop {
            vmx::vmwrite(F::GUEST_INTERRUPTIBILITY_INFO, 0);
            vmx::count_entry(!self.launched);
            // SAFETY: the current VMCS is set up with HOST_RIP = exit_rip().
            if unsafe { nvmx_vmx::entry::enter(&mut regs, self.launched) } != 0 {
                return None;
            }
            let e = L2Exit {
                reason: vmx::vmread(F::VM_EXIT_REASON),
                qualification: vmx::vmread(F::EXIT_QUALIFICATION),
                intr_info: vmx::vmread(F::VM_EXIT_INTR_INFO),
                len: vmx::vmread(F::VM_EXIT_INSTRUCTION_LEN),
                gpa: vmx::vmread(F::GUEST_PHYSICAL_ADDRESS),
                rax: regs.gpr[0],
            };
            if e.reason & (1 << 31) != 0 {
                return Some(e); // a VM-entry failure: the launch state is unchanged
            }
            self.launched = true;
            if e.reason == 48 && e.gpa & !0xFFF != self.hole {
                self.ept.map(e.gpa);
                let _ = vmx::invept_single(self.ept.eptp());
                continue;
            }
            return Some(e);
        }
    }
}

fn page_with(value: u64) -> u64 {
    let p = alloc_page();
    // SAFETY: a fresh page of the L1's pool.
    unsafe { *(p as *mut u64) = value };
    p
}

/// Makes the fresh VMCS `vmcs` current and fills it for an L2 with VPID
/// `vpid` on a new, empty EPT and its own stack page, which it returns;
/// where the controls cannot be set (the L1 says which bits), each check of
/// `names` fails and None.
pub fn fresh_l2_vmcs(t: &mut Tally, caps: &VmxCaps, vmcs: u64, vpid: u16, names: &[&str]) -> Option<Ept> {
    let _ = vmx::try_op("vmclear", vmcs);
    let _ = vmx::try_op("vmptrld", vmcs);
    let ept = Ept { pml4: alloc_page() };
    let stack = alloc_page() + 4096;
    if setup_vmcs(caps, &ept, vpid, stack, 0).is_err() {
        for name in names {
            t.value(name, "controls", "unsupported controls", false);
        }
        return None;
    }
    Some(ept)
}

/// Checks with an L2 running (SDM 26.1-26.2 exits, 27.3 guest-state
/// checks, 27.4/28.4/28.6 MSR lists, 29.4.3 INVEPT, 29.4.1 INVVPID), on the
/// fresh VMCS `vmcs`.
fn l2_checks(t: &mut Tally, caps: &VmxCaps, vmcs: u64) {
    let Some(ept) = fresh_l2_vmcs(t, caps, vmcs, 5, &["l2 vmcs setup"]) else { return };
    let hole = alloc_page();
    let mut l2 = L2 { ept, launched: false, hole };
    // HLT and I/O exit by the forum's controls; every MSR access exits
    // without MSR bitmaps; #UD exits through the exception bitmap.
    vmx::vmwrite(F::EXCEPTION_BITMAP, 1 << 6);
    let rip = |s: &u8| s as *const u8 as u64;
    let exit_is = |t: &mut Tally, name: &str, e: Option<L2Exit>, reason: u64, extra: &dyn Fn(&L2Exit) -> bool| {
        match e {
            Some(e) if e.reason == reason && extra(&e) => t.expect(name, "", true),
            Some(e) => {
                let _ = writeln!(Console, "l1: selftest {name}: exit {:#x} qualification {:#x} info {:#x} len {}", e.reason, e.qualification, e.intr_info, e.len);
                t.value(name, "another exit", "", false)
            }
            None => t.value(name, "an L2 exit", "VMfail", false),
        }
    };
    // SAFETY (all `rip(&st_…)`): addresses of the L2 snippets above, only taken.
    unsafe {
        exit_is(t, "l2 cpuid exits (reason 10, length 2)", l2.run(rip(&st_cpuid), 0, 0), 10, &|e| e.len == 2);
        // RIP alone changed since the last entry (a VMRESUME after an exit:
        // nvmx's narrowed checks run check_rip only): in compatibility mode
        // (IA-32e guest, CS.L=0) bits 63:32 must be 0 (SDM 27.3.1.4).
        let cs_ar = vmx::vmread(F::GUEST_CS_AR_BYTES);
        vmx::vmwrite(F::GUEST_CS_AR_BYTES, 0xC09B);
        exit_is(t, "l2 cpuid in compatibility mode exits (10)", l2.run(rip(&st_cpuid), 0, 0), 10, &|e| e.len == 2);
        exit_is(t, "vmresume with only RIP changed, bits 63:32 set in compatibility mode: entry fails (33)", l2.run(rip(&st_cpuid) | (1 << 32), 0, 0), 0x8000_0021, &|e| e.qualification == 0);
        vmx::vmwrite(F::GUEST_CS_AR_BYTES, cs_ar);
        t.check("vmlaunch of a launched VMCS", Want::FailValid(4), crate::forum::try_enter(true));
        exit_is(t, "l2 hlt exits (12)", l2.run(rip(&st_hlt), 0, 0), 12, &|e| e.len == 1);
        exit_is(t, "l2 out 0x80 exits (30, port/size/immediate)", l2.run(rip(&st_out), 0, 0), 30, &|e| e.qualification == 0x0080_0040);
        exit_is(t, "l2 rdmsr exits (31)", l2.run(rip(&st_rdmsr), 0x10, 0), 31, &|e| e.len == 2);
        exit_is(t, "l2 wrmsr exits (32)", l2.run(rip(&st_wrmsr), 0x277, 0), 32, &|e| e.len == 2);
        exit_is(t, "l2 vmcall exits (18)", l2.run(rip(&st_vmcall), 0, 0), 18, &|e| e.len == 3);
        exit_is(t, "l2 #UD exits by the exception bitmap (0, info 0x80000306)", l2.run(rip(&st_ud2), 0, 0), 0, &|e| {
            e.intr_info & 0x8000_07FF == 0x8000_0306
        });
        // EPT violation: a write to a page L1's EPT does not map.
        exit_is(t, "l2 write to an unmapped page: EPT violation (48)", l2.run(rip(&st_store), 0, hole + 8), 48, &|e| {
            e.gpa == hole + 8 && e.qualification & 0x3F == 0x2 && e.qualification & 0x80 != 0
        });
        // EPT misconfigurations (SDM 29.3.3.1): a write-only entry, then a
        // leaf with memory type 2 (reserved): exit 49 with the address.
        // Bits 51:MAXPHYADDR of an entry are reserved (SDM 29.3.3.1), not
        // part of the address.
        let maxphyaddr = core::arch::x86_64::__cpuid(0x8000_0008).eax & 0xFF;
        for (name, leaf) in [
            ("l2 read through a write-only EPT entry: EPT misconfiguration (49)", hole | 2 | (6 << 3)),
            ("l2 read through an EPT leaf with memory type 2: EPT misconfiguration (49)", hole | 7 | (2 << 3)),
            ("l2 read through an EPT leaf with bit MAXPHYADDR set: EPT misconfiguration (49)", hole | 7 | (6 << 3) | (1 << maxphyaddr)),
        ] {
            l2.ept.set_leaf(hole, leaf);
            let _ = vmx::invept_single(l2.ept.eptp());
            exit_is(t, name, l2.run(rip(&st_load), 0, hole + 16), 49, &|e| e.gpa == hole + 16);
        }
        // INVEPT: remap the page behind `hole`, invalidate, L2 sees the new page.
        let (old, new) = (page_with(0x1111), page_with(0x2222));
        l2.ept.map_to(hole, old);
        let _ = vmx::invept_single(l2.ept.eptp());
        exit_is(t, "l2 reads the page L1's EPT maps", l2.run(rip(&st_load), 0, hole), 18, &|e| e.rax == 0x1111);
        l2.ept.map_to(hole, new);
        t.check("invept single-context", Want::Succeed, vmx::try_invalidate(true, 1, [l2.ept.eptp(), 0]));
        exit_is(t, "after invept l2 reads the remapped page", l2.run(rip(&st_load), 0, hole), 18, &|e| e.rax == 0x2222);
        // INVVPID: L2 runs on L1's page tables; change a 4 KiB translation
        // L2 has used, invalidate its VPID, L2 sees the new page.
        let linear = invvpid_window(old);
        exit_is(t, "l2 reads through a 4 KiB mapping", l2.run(rip(&st_load), 0, linear), 18, &|e| e.rax == 0x1111);
        set_window(new);
        t.check("invvpid single-context", Want::Succeed, vmx::try_invalidate(false, 1, [5, 0]));
        exit_is(t, "after invvpid l2 reads the new page", l2.run(rip(&st_load), 0, linear), 18, &|e| e.rax == 0x2222);

        // Control-register accesses (SDM 26.1.3): only the bits L1 owns
        // (its CR0/CR4 guest/host masks) decide. Clearing CR4.VMXE, which
        // VMX fixes to 1, is the CPU's #GP (SDM 24.8) when L1 does not own
        // it: L1 sees it only through its exception bitmap (reason 0).
        let (cr0, cr4) = (vmx::vmread(F::GUEST_CR0), vmx::vmread(F::GUEST_CR4));
        vmx::vmwrite(F::EXCEPTION_BITMAP, (1 << 6) | (1 << 13));
        exit_is(t, "l2 mov to cr4 toggling TSD, a bit L1 does not own: no exit", l2.run(rip(&st_cr4_tsd), 0, 0), 18, &|_| {
            vmx::vmread(F::GUEST_CR4) == cr4 ^ 4
        });
        vmx::vmwrite(F::GUEST_CR4, cr4);
        vmx::vmwrite(F::CR4_GUEST_HOST_MASK, 4);
        exit_is(t, "l2 mov to cr4 toggling TSD, a bit L1 owns: CR-access exit (28, qualification 4, length 3)", l2.run(rip(&st_cr4_tsd), 0, 0), 28, &|e| {
            e.qualification == 4 && e.len == 3
        });
        vmx::vmwrite(F::CR4_GUEST_HOST_MASK, 0);
        exit_is(t, "l2 mov to cr4 clearing VMXE, not L1's: #GP by the exception bitmap (0, info 0x80000b0d)", l2.run(rip(&st_cr4_vmxe), 0, 0), 0, &|e| {
            e.intr_info & 0x8000_0FFF == 0x8000_0B0D && vmx::vmread(F::VM_EXIT_INTR_ERROR_CODE) == 0
        });
        vmx::vmwrite(F::CR4_GUEST_HOST_MASK, 1 << 13);
        exit_is(t, "l2 mov to cr4 clearing VMXE, L1's bit: CR-access exit (28)", l2.run(rip(&st_cr4_vmxe), 0, 0), 28, &|e| e.qualification == 4);
        vmx::vmwrite(F::CR4_GUEST_HOST_MASK, 0);
        exit_is(t, "l2 mov to cr0 toggling MP, a bit L1 does not own: no exit", l2.run(rip(&st_cr0_mp), 0, 0), 18, &|_| {
            vmx::vmread(F::GUEST_CR0) == cr0 ^ 2
        });
        vmx::vmwrite(F::GUEST_CR0, cr0);
        vmx::vmwrite(F::CR0_GUEST_HOST_MASK, 2);
        exit_is(t, "l2 mov to cr0 toggling MP, a bit L1 owns: CR-access exit (28, qualification 0)", l2.run(rip(&st_cr0_mp), 0, 0), 28, &|e| e.qualification == 0);
        vmx::vmwrite(F::CR0_GUEST_HOST_MASK, 0);
        vmx::vmwrite(F::GUEST_CR0, cr0);
        vmx::vmwrite(F::EXCEPTION_BITMAP, 1 << 6);
        // MOV DR by "MOV-DR exiting" (SDM 26.1.3), clear then set.
        let proc = vmx::vmread(F::CPU_BASED_VM_EXEC_CONTROL);
        exit_is(t, "l2 mov from dr7 without MOV-DR exiting: no exit", l2.run(rip(&st_dr7), 0, 0), 18, &|e| e.rax == 0x400);
        vmx::vmwrite(F::CPU_BASED_VM_EXEC_CONTROL, proc | u64::from(nvmx_vmx::controls::proc1::MOV_DR_EXITING));
        exit_is(t, "l2 mov from dr7 with MOV-DR exiting: exit (29, qualification 0x17)", l2.run(rip(&st_dr7), 0, 0), 29, &|e| e.qualification == 0x17);
        vmx::vmwrite(F::CPU_BASED_VM_EXEC_CONTROL, proc);
        // #PF by the exception bitmap with the error-code mask and match
        // (SDM 26.2): bit 14 clear, so a #PF exits when (code & mask) != match.
        let absent = linear + 0x1000;
        vmx::vmwrite(F::PAGE_FAULT_ERROR_CODE_MASK, 1);
        vmx::vmwrite(F::PAGE_FAULT_ERROR_CODE_MATCH, 1);
        exit_is(t, "l2 #PF (not present) with bit 14 clear and mask/match 1/1: exit (0, vector 14, CR2 in the qualification)", l2.run(rip(&st_load), 0, absent), 0, &|e| {
            e.intr_info & 0x8000_0FFF == 0x8000_0B0E && e.qualification == absent
        });
        vmx::vmwrite(F::PAGE_FAULT_ERROR_CODE_MASK, 0);
        vmx::vmwrite(F::PAGE_FAULT_ERROR_CODE_MATCH, 0);
    }
    unoffered_controls(t, caps, &mut l2);
    crate::ptimer::checks(t, caps, &mut l2);
    crate::conformance::with_l2(t, caps, &mut l2);
    crate::conformance::tpr_shadow(t, caps, &mut l2);
    crate::shadow12::checks(t, caps, &mut l2);
    operand_faults(t, 1 << 39, vmcs);

    // VM-entry failures on guest state (SDM 27.3.1, exit reason 33 | bit 31).
    let failure = |t: &mut Tally, name: &str, l2: &mut L2, reason: u64, qualification: u64| {
        // SAFETY: as above.
        let e = l2.run(unsafe { rip(&st_cpuid) }, 0, 0);
        match e {
            Some(e) if e.reason == reason | (1 << 31) && e.qualification == qualification => {
                t.expect(name, "", true)
            }
            Some(e) => {
                let _ = writeln!(Console, "l1: selftest {name}: exit {:#x} qualification {:#x}", e.reason, e.qualification);
                t.value(name, "a VM-entry failure", "another exit", false)
            }
            None => t.value(name, "a VM-entry failure", "VMfail", false),
        }
    };
    vmx::vmwrite(F::GUEST_RFLAGS, 0);
    failure(t, "entry with RFLAGS bit 1 clear fails (33, qualification 0)", &mut l2, 33, 0);
    vmx::vmwrite(F::GUEST_RFLAGS, 2);
    vmx::vmwrite(F::GUEST_ACTIVITY_STATE, 5);
    failure(t, "entry with activity state 5 fails (33)", &mut l2, 33, 0);
    vmx::vmwrite(F::GUEST_ACTIVITY_STATE, 0);
    vmx::vmwrite(F::VMCS_LINK_POINTER, 0x1001);
    failure(t, "entry with a misaligned VMCS link pointer fails (33, qualification 4)", &mut l2, 33, 4);
    vmx::vmwrite(F::VMCS_LINK_POINTER, u64::MAX);
    let cr0 = vmx::vmread(F::GUEST_CR0);
    vmx::vmwrite(F::GUEST_CR0, cr0 & !(1 << 31));
    failure(t, "entry of a 64-bit guest with CR0.PG clear fails (33)", &mut l2, 33, 0);
    vmx::vmwrite(F::GUEST_CR0, cr0);
    // One field broken at a time (SDM 27.3.1): each is one of nvmx's own
    // checks, named in `l1 <cpu>` (the system test asserts the names).
    for (name, f, bad) in [
        ("entry with guest CR4.VMXE clear fails (33)", F::GUEST_CR4, vmx::vmread(F::GUEST_CR4) & !(1 << 13)),
        ("entry with an unusable TR fails (33)", F::GUEST_TR_AR_BYTES, 0x8B | (1 << 16)),
        ("entry with a non-canonical GDTR base fails (33)", F::GUEST_GDTR_BASE, 1 << 63),
        ("entry with an IDTR limit above 0xffff fails (33)", F::GUEST_IDTR_LIMIT, 0x1_0000),
        ("entry with a 64-bit CS that has D set fails (33)", F::GUEST_CS_AR_BYTES, 0xE09B),
    ] {
        let old = vmx::vmread(f);
        vmx::vmwrite(f, bad);
        failure(t, name, &mut l2, 33, 0);
        vmx::vmwrite(f, old);
    }
    // A PAE L2 (CR0.PG = CR4.PAE = 1, "IA-32e mode guest" 0) whose present
    // PDPTE has reserved bit 1 set (SDM 27.3.1.6; fuzz seed 110): with EPT
    // the VMCS's PDPTE field, without EPT the entry at CR3 in L1 memory.
    let (entry12, proc2_12, cr3) = (vmx::vmread(F::VM_ENTRY_CONTROLS), vmx::vmread(F::SECONDARY_VM_EXEC_CONTROL), vmx::vmread(F::GUEST_CR3));
    vmx::vmwrite(F::VM_ENTRY_CONTROLS, entry12 & !u64::from(entry::IA32E_MODE_GUEST));
    vmx::vmwrite(F::GUEST_PDPTR2, 0x3003);
    failure(t, "entry of a PAE L2 with EPT, PDPTE 2 with reserved bit 1 fails (33, qualification 2)", &mut l2, 33, 2);
    vmx::vmwrite(F::GUEST_PDPTR2, 0);
    let pdpt = alloc_page();
    // SAFETY: a fresh pool page: PDPTE 3 present with reserved bit 1.
    unsafe { *((pdpt + 24) as *mut u64) = 0x3003 };
    vmx::vmwrite(F::SECONDARY_VM_EXEC_CONTROL, proc2_12 & !u64::from(proc2::ENABLE_EPT));
    vmx::vmwrite(F::GUEST_CR3, pdpt);
    failure(t, "entry of a PAE L2 without EPT, PDPTE 3 at CR3 with reserved bit 1 fails (33, qualification 2)", &mut l2, 33, 2);
    vmx::vmwrite(F::GUEST_CR3, cr3);
    vmx::vmwrite(F::SECONDARY_VM_EXEC_CONTROL, proc2_12);
    vmx::vmwrite(F::VM_ENTRY_CONTROLS, entry12);

    // MSR lists (SDM 27.4, 28.4, 28.6): entry MSR-load, exit MSR-store and
    // exit MSR-load of IA32_KERNEL_GS_BASE, then two refused entries.
    const KERNEL_GS_BASE: u64 = 0xC000_0102;
    // An MSR a hypervisor keeps from its guest (IA32_MTRR_DEF_TYPE): what
    // L1 writes it reads back, as on the CPU (SDM Vol. 3A 12.11.2.1; FE,
    // bit 10, toggled).
    let def_type = rdmsr(0x2FF);
    wrmsr(0x2FF, def_type ^ (1 << 10));
    t.expect("wrmsr IA32_MTRR_DEF_TYPE reads back", "the written value", rdmsr(0x2FF) == def_type ^ (1 << 10));
    wrmsr(0x2FF, def_type);
    // Values the CPU refuses are a #GP of the WRMSR, and the MSR keeps its
    // value (SDM Vol. 3A 12.12.2 PAT, 2.2.1 and 10.8.5 EFER).
    let gp = |f: Option<boot::Fault>| f.is_some_and(|f| (f.vector, f.error) == (13, 0));
    let (pat, efer) = (rdmsr(0x277), rdmsr(0xC000_0080));
    let got = boot::probe(wrmsr_pat, 0x0007_0406_0007_0402);
    t.expect("wrmsr IA32_PAT with memory type 2: #GP(0), PAT unchanged", "#GP(0)", gp(got) && rdmsr(0x277) == pat);
    let got = boot::probe(wrmsr_efer, efer | (1 << 2));
    t.expect("wrmsr IA32_EFER with reserved bit 2: #GP(0), EFER unchanged", "#GP(0)", gp(got) && rdmsr(0xC000_0080) == efer);
    let got = boot::probe(wrmsr_efer, efer & !(1 << 8));
    t.expect("wrmsr IA32_EFER clearing LME with paging on: #GP(0)", "#GP(0)", gp(got) && rdmsr(0xC000_0080) == efer);
    let (entry_list, store_list, exit_list) = (alloc_page(), alloc_page(), alloc_page());
    let list = |p: u64, entries: &[(u64, u64)]| {
        for (i, (head, value)) in entries.iter().enumerate() {
            // SAFETY: pool pages, 16-byte entries (SDM 25.7.2).
            unsafe {
                *((p + 16 * i as u64) as *mut u64) = *head;
                *((p + 16 * i as u64 + 8) as *mut u64) = *value;
            }
        }
    };
    list(entry_list, &[(KERNEL_GS_BASE, 0x2222_0000)]);
    list(store_list, &[(KERNEL_GS_BASE, 0)]);
    list(exit_list, &[(KERNEL_GS_BASE, 0x3333_0000)]);
    wrmsr(KERNEL_GS_BASE as u32, 0x1111_0000);
    for (f, v) in [
        (F::VM_ENTRY_MSR_LOAD_ADDR, entry_list),
        (F::VM_ENTRY_MSR_LOAD_COUNT, 1),
        (F::VM_EXIT_MSR_STORE_ADDR, store_list),
        (F::VM_EXIT_MSR_STORE_COUNT, 1),
        (F::VM_EXIT_MSR_LOAD_ADDR, exit_list),
        (F::VM_EXIT_MSR_LOAD_COUNT, 1),
    ] {
        vmx::vmwrite(f, v);
    }
    // SAFETY: as above.
    exit_is(t, "l2 runs with MSR lists", l2.run(unsafe { rip(&st_cpuid) }, 0, 0), 10, &|_| true);
    // SAFETY: the store list's first value, written by the exit.
    let stored = unsafe { *((store_list + 8) as *const u64) };
    t.expect("exit MSR-store saw the entry MSR-load value", "0x22220000", stored == 0x2222_0000);
    t.expect("exit MSR-load set L1's value", "0x33330000", rdmsr(KERNEL_GS_BASE as u32) == 0x3333_0000);
    vmx::vmwrite(F::VM_EXIT_MSR_STORE_COUNT, 0);
    vmx::vmwrite(F::VM_EXIT_MSR_LOAD_COUNT, 0);
    list(entry_list, &[(0x277, 0x0007_0406_0007_0402)]);
    failure(t, "entry MSR-load of an invalid IA32_PAT fails (34, qualification 1)", &mut l2, 34, 1);
    list(entry_list, &[(0xC000_0100, 0)]);
    failure(t, "entry MSR-load of IA32_FS_BASE fails (34, qualification 1)", &mut l2, 34, 1);
    list(entry_list, &[(KERNEL_GS_BASE, 0x4444_0000), (KERNEL_GS_BASE | (1 << 32), 0)]);
    vmx::vmwrite(F::VM_ENTRY_MSR_LOAD_COUNT, 2);
    failure(t, "entry MSR-load entry 2 with reserved bits fails (34, qualification 2)", &mut l2, 34, 2);
    t.expect("the entries before the failing one were loaded", "0x44440000", rdmsr(KERNEL_GS_BASE as u32) == 0x4444_0000);
    vmx::vmwrite(F::VM_ENTRY_MSR_LOAD_ADDR, entry_list | 8);
    t.check("vmresume with a misaligned MSR-load address", Want::FailValid(7), crate::forum::try_enter(false));
    vmx::vmwrite(F::VM_ENTRY_MSR_LOAD_COUNT, 0);
    // An exit without "load IA32_PAT" / "load IA32_EFER" leaves those MSRs
    // as L2 had them, EFER.LME/LMA aside (SDM 28.5.1; fuzz-long seed 114).
    let (pat, efer) = (rdmsr(0x277), rdmsr(0xC000_0080));
    let (entry12, exit12) = (vmx::vmread(F::VM_ENTRY_CONTROLS), vmx::vmread(F::VM_EXIT_CONTROLS));
    let load = entry::LOAD_PAT | entry::LOAD_EFER;
    let (pat2, efer2) = (0x0006_0606_0006_0406, efer ^ (1 << 11));
    let names = ["an exit without load IA32_PAT leaves L2's PAT in L1", "an exit without load IA32_EFER leaves L2's EFER.NXE in L1"];
    if caps.entry().1 & load == load {
        vmx::vmwrite(F::VM_ENTRY_CONTROLS, entry12 | u64::from(load));
        vmx::vmwrite(F::VM_EXIT_CONTROLS, exit12 & !u64::from(exitc::LOAD_PAT | exitc::LOAD_EFER));
        vmx::vmwrite(F::GUEST_IA32_PAT, pat2);
        vmx::vmwrite(F::GUEST_IA32_EFER, efer2);
        // SAFETY: as above.
        let e = l2.run(unsafe { rip(&st_cpuid) }, 0, 0);
        let (pat_after, efer_after) = (rdmsr(0x277), rdmsr(0xC000_0080));
        wrmsr(0x277, pat);
        wrmsr(0xC000_0080, efer);
        vmx::vmwrite(F::VM_ENTRY_CONTROLS, entry12);
        vmx::vmwrite(F::VM_EXIT_CONTROLS, exit12);
        exit_is(t, "l2 runs with its own IA32_PAT and IA32_EFER loaded", e, 10, &|_| true);
        t.expect(names[0], "0x6060600060406", pat_after == pat2);
        t.expect(names[1], "EFER with NXE toggled", efer_after == efer2);
    } else {
        for name in names {
            t.value(name, "controls", "load IA32_PAT/IA32_EFER not offered", false);
        }
    }
    t.check("vmclear of the L2's VMCS", Want::Succeed, vmx::try_op("vmclear", vmcs));
}

/// A VMX instruction's memory operand is accessed like any other (SDM 32.3,
/// each instruction's "Operation"): a not-present page or a write to a
/// read-only one with CR0.WP=1 is a #PF with CR2 = the operand's address.
/// Uses the 4 KiB window at `linear` (`invvpid_window`); `vmcs` is current.
fn operand_faults(t: &mut Tally, linear: u64, vmcs: u64) {
    let fault_is = |t: &mut Tally, name: &str, got: Option<boot::Fault>, want: boot::Fault| {
        if got != Some(want) {
            if let Some(f) = got {
                let _ = writeln!(Console, "l1: selftest {name}: exception {} error {:#x} cr2 {:#x}", f.vector, f.error, f.cr2);
            }
        }
        t.expect(name, "that exception", got == Some(want));
    };
    let absent = linear + 0x1000;
    fault_is(t, "vmptrld of an operand on a not-present page: #PF(0), CR2", boot::probe(vmptrld_at, absent), boot::Fault {
        vector: 14,
        error: 0,
        cr2: absent,
    });
    let target = alloc_page();
    // SAFETY: PT entry 2 of the window, never used before: read-only page.
    unsafe { *((WINDOW_PTE + 16) as *mut u64) = target | 1 };
    let read_only = linear + 0x2000;
    let cr0 = read_cr(0);
    // SAFETY: CR0.WP only changes how supervisor writes to read-only pages fault.
    unsafe { core::arch::asm!("mov cr0, {}", in(reg) cr0 | (1 << 16)) };
    let got = boot::probe(vmptrst_at, read_only);
    // SAFETY: as above, back to the L1's own CR0.
    unsafe { core::arch::asm!("mov cr0, {}", in(reg) cr0) };
    fault_is(t, "vmptrst to a read-only page with CR0.WP=1: #PF(3), CR2", got, boot::Fault { vector: 14, error: 3, cr2: read_only });
    let got = boot::probe(vmptrst_at, read_only);
    // SAFETY: `target` is a pool page, the one the window maps.
    let stored = unsafe { *(target as *const u64) };
    t.expect("vmptrst to a read-only page with CR0.WP=0 stores", "the VMCS pointer stored", got.is_none() && stored == vmcs);
}

extern "C" fn wrmsr_pat(value: u64) {
    wrmsr(0x277, value);
}

extern "C" fn wrmsr_efer(value: u64) {
    wrmsr(0xC000_0080, value);
}

/// Controls the CPU may have but the L1 reads as not allowed (its
/// capability MSRs, SDM A.3-A.5): asking for one is VMfailValid(7) (SDM
/// 27.2.1.1). Bare, Bochs offers most of them and the entry must not fail
/// with 7 because of it; nested, nvmx does not offer them and it must. The
/// line is the same either way, so the differential compares them.
fn unoffered_controls(t: &mut Tally, caps: &VmxCaps, l2: &mut L2) {
    use nvmx_vmx::controls::{entry, exit, pin, proc1, proc2};
    let fields = [F::PIN_BASED_VM_EXEC_CONTROL, F::CPU_BASED_VM_EXEC_CONTROL, F::SECONDARY_VM_EXEC_CONTROL, F::VM_EXIT_CONTROLS, F::VM_ENTRY_CONTROLS];
    let allowed1 = [caps.pinbased().1, caps.procbased().1, caps.procbased2().1, caps.exit().1, caps.entry().1];
    for (i, bit, name) in [
        (0, pin::PREEMPTION_TIMER, "the VMX-preemption timer"),
        (0, pin::VIRTUAL_NMIS, "virtual NMIs"),
        (1, proc1::CR8_LOAD_EXITING, "CR8-load exiting"),
        (1, proc1::CR8_STORE_EXITING, "CR8-store exiting"),
        (2, proc2::VIRTUALIZE_APIC_ACCESSES, "APIC-access virtualization"),
        (2, proc2::DESCRIPTOR_TABLE_EXITING, "descriptor-table exiting"),
        (2, proc2::WBINVD_EXITING, "WBINVD exiting"),
        (2, proc2::ENABLE_VMFUNC, "VM functions"),
        (2, proc2::VMCS_SHADOWING, "VMCS shadowing"),
        (3, exit::SAVE_DEBUG_CONTROLS, "save debug controls"),
        (4, entry::LOAD_DEBUG_CONTROLS, "load debug controls"),
    ] {
        let old = vmx::vmread(fields[i]);
        vmx::vmwrite(fields[i], old | u64::from(bit));
        // SAFETY: the L2 snippet above.
        let r = l2.run(unsafe { &st_cpuid as *const u8 as u64 }, 0, 0);
        let error = if r.is_none() { vmx::try_vmread(F::VM_INSTRUCTION_ERROR.encoding()).unwrap_or(0) } else { 0 };
        vmx::vmwrite(fields[i], old);
        let offered = allowed1[i] & bit != 0;
        let ok = if offered { error != 7 } else { r.is_none() && error == 7 };
        if !ok {
            let _ = writeln!(Console, "l1: selftest {name}: offered {offered}, VM-instruction error {error}");
        }
        t.expect(&alloc_free_name(name, "VMfailValid(7) exactly where not advertised"), "as advertised", ok);
    }
}

extern "C" fn vmptrld_at(operand: u64) {
    // SAFETY: VMPTRLD of the pointer stored at `operand`; the check
    // expects a fault before anything is loaded.
    unsafe { st_vmptrld_at(operand) }
}

extern "C" fn vmptrst_at(operand: u64) {
    // SAFETY: VMPTRST stores 8 bytes at `operand` (or faults).
    unsafe { st_vmptrst_at(operand) }
}

/// Linear address 512 GiB (PML4 entry 1, unused by the L1's identity map)
/// mapped with a 4 KiB page to `page`, for the INVVPID check.
fn invvpid_window(page: u64) -> u64 {
    let (pdpt, pd, pt) = (alloc_page(), alloc_page(), alloc_page());
    // SAFETY: fresh pool pages become paging structures under PML4[1],
    // which the L1 does not use otherwise.
    unsafe {
        *(pdpt as *mut u64) = pd | 3;
        *(pd as *mut u64) = pt | 3;
        *(pt as *mut u64) = page | 3;
        WINDOW_PTE = pt;
        *((read_cr(3) & !0xFFF) as *mut u64).add(1) = pdpt | 3;
    }
    1 << 39
}

static mut WINDOW_PTE: u64 = 0;

/// Points the INVVPID window at `page` (L1 itself never touched it, so
/// only the L2's VPID-tagged translation can be stale).
fn set_window(page: u64) {
    // SAFETY: the page-table entry created by `invvpid_window`.
    unsafe { *(WINDOW_PTE as *mut u64) = page | 3 };
}

fn rdmsr(msr: u32) -> u64 {
    let (lo, hi): (u32, u32);
    // SAFETY: IA32_KERNEL_GS_BASE exists on every 64-bit CPU, the MTRRs on
    // every CPU with VT-x.
    unsafe { core::arch::asm!("rdmsr", in("ecx") msr, out("eax") lo, out("edx") hi) };
    (u64::from(hi) << 32) | u64::from(lo)
}

fn wrmsr(msr: u32, v: u64) {
    // SAFETY: as `rdmsr`; the L1 does not use KERNEL_GS_BASE (no SWAPGS),
    // and toggling MTRR fixed ranges changes no memory it uses.
    unsafe { core::arch::asm!("wrmsr", in("ecx") msr, in("eax") v as u32, in("edx") (v >> 32) as u32) };
}

/// "`mode`: `step`" in a fixed buffer (the L1 has no allocator).
pub(crate) fn alloc_free_name(mode: &str, step: &str) -> &'static str {
    static mut BUF: [u8; 96] = [0; 96];
    // SAFETY: single-threaded; the name is printed before the next call.
    let buf = unsafe { &mut *(&raw mut BUF) };
    let mut n = 0;
    for b in mode.bytes().chain(*b": ").chain(step.bytes()).take(buf.len()) {
        buf[n] = b;
        n += 1;
    }
    core::str::from_utf8(&buf[..n]).unwrap_or("?")
}
