//! Part of `workload=selftest`: the APIC-access page (SDM 29.4, 24.6.2;
//! secondary control bit 0, "virtualize APIC accesses"). An L2 touches
//! the page L1 names in APIC_ACCESS_ADDR (through L1's EPT): exit 44 with
//! the page offset and access type in the qualification (SDM 28.2.1 table
//! 28-6 "APIC-access"); with TPR shadow and no APIC-register virtualization
//! (never offered by nvmx) a 32-bit read or write of offset 0x80 goes to
//! VTPR, the virtual-APIC page's, without an exit (29.4.2-29.4.3); a
//! misaligned address fails the entry (VMfailValid(7), 27.2.1.1). Lines
//! carry their values, the same bare and nested; where the control is not
//! offered each line says so.

use core::arch::global_asm;

use nvmx_vmx::caps::VmxCaps;
use nvmx_vmx::controls::{proc1, proc2};
use nvmx_vmx::field::Field as F;

use crate::console::Text;
use crate::forum::alloc_page;
use crate::selftest::{fresh_l2_vmcs, L2, L2Exit, Tally, Want};
use crate::vmx;

global_asm!(
    r#"
    /* 32-bit accesses at RSI (RCX = the value written), then VMCALL. */
    .global aa_load32, aa_store32
aa_load32:  mov eax, dword ptr [rsi]
            vmcall
aa_store32: mov dword ptr [rsi], ecx
            vmcall
    "#
);

unsafe extern "C" {
    static aa_load32: u8;
    static aa_store32: u8;
}

/// The L2's VPID here (no other check uses it).
const VPID: u16 = 12;

const CHECKS: [&str; 6] = [
    "apic access: l2 reads offset 0x20 of the APIC-access page: exit 44, offset 0x20, linear read (type 0)",
    "apic access: l2 writes a byte at offset 0x300: exit 44, offset 0x300, linear write (type 1)",
    "apic access: l2 reads offset 0x80 (TPR) without TPR shadow: exit 44",
    "apic access: l2 reads offset 0x80 with TPR shadow: VTPR (0x50), no exit",
    "apic access: l2 writes 0x30 at offset 0x80 with TPR shadow: VTPR 0x30, no exit",
    "apic access: vmresume with a misaligned APIC-access address: VMfailValid(7)",
];

/// What an L2 run ended with, as the check lines print it.
fn outcome(e: &Option<L2Exit>, extra: u64) -> Text<64> {
    match e {
        Some(e) if e.reason == 44 => Text::of(format_args!("exit 44 qualification {:#x}", e.qualification)),
        Some(e) => Text::of(format_args!("exit {} value {:#x}", e.reason, extra)),
        None => Text::of(format_args!("VMfail")),
    }
}

/// Runs the checks on the fresh VMCS `vmcs` (a page with the revision id).
pub fn run(t: &mut Tally, caps: &VmxCaps, vmcs: u64) {
    if caps.procbased2().1 & proc2::VIRTUALIZE_APIC_ACCESSES == 0 {
        for name in CHECKS {
            t.value(name, "", "not offered", true);
        }
        return;
    }
    let Some(ept) = fresh_l2_vmcs(t, caps, vmcs, VPID, &CHECKS) else { return };
    // The APIC-access page: an L1 page the L2's EPT maps at its own
    // address (the L2 runs on L1's identity page tables).
    let page = alloc_page();
    let proc2_12 = vmx::vmread(F::SECONDARY_VM_EXEC_CONTROL);
    vmx::vmwrite(F::SECONDARY_VM_EXEC_CONTROL, proc2_12 | u64::from(proc2::VIRTUALIZE_APIC_ACCESSES));
    vmx::vmwrite(F::APIC_ACCESS_ADDR, page);
    let _ = vmx::invvpid_single(VPID);
    let mut l2 = L2::new(ept, alloc_page());
    let rip = |s: &u8| s as *const u8 as u64;
    // SAFETY: addresses of L2 snippets, only taken.
    let (load, store, load32, store32) =
        unsafe { (rip(&crate::selftest::st_load), rip(&crate::selftest::st_store), rip(&aa_load32), rip(&aa_store32)) };

    let e = l2.run(load, 0, page + 0x20);
    let got = outcome(&e, 0);
    t.value(CHECKS[0], "exit 44 qualification 0x20", got.as_str(), got.as_str() == "exit 44 qualification 0x20");
    let e = l2.run(store, 0, page + 0x300);
    let got = outcome(&e, 0);
    t.value(CHECKS[1], "exit 44 qualification 0x1300", got.as_str(), got.as_str() == "exit 44 qualification 0x1300");
    let e = l2.run(load32, 0, page + 0x80);
    let got = outcome(&e, 0);
    t.value(CHECKS[2], "exit 44 qualification 0x80", got.as_str(), got.as_str() == "exit 44 qualification 0x80");

    if caps.procbased().1 & proc1::USE_TPR_SHADOW == 0 {
        for name in &CHECKS[3..5] {
            t.value(name, "", "TPR shadow not offered", true);
        }
    } else {
        let vapic = alloc_page();
        let vtpr = (vapic + 0x80) as *mut u32;
        // SAFETY: a fresh pool page: the L2's virtual-APIC page.
        unsafe { vtpr.write_volatile(0x50) };
        let proc = vmx::vmread(F::CPU_BASED_VM_EXEC_CONTROL);
        vmx::vmwrite(F::CPU_BASED_VM_EXEC_CONTROL, proc | u64::from(proc1::USE_TPR_SHADOW));
        vmx::vmwrite(F::VIRTUAL_APIC_PAGE_ADDR, vapic);
        vmx::vmwrite(F::TPR_THRESHOLD, 0);
        let e = l2.run(load32, 0, page + 0x80);
        let got = outcome(&e, e.as_ref().map_or(0, |e| e.rax & 0xFFFF_FFFF));
        t.value(CHECKS[3], "exit 18 value 0x50", got.as_str(), got.as_str() == "exit 18 value 0x50");
        let e = l2.run(store32, 0x30, page + 0x80);
        // SAFETY: VTPR of the page above, written by the L2 through the CPU.
        let now = u64::from(unsafe { vtpr.read_volatile() });
        let got = outcome(&e, now);
        t.value(CHECKS[4], "exit 18 value 0x30", got.as_str(), got.as_str() == "exit 18 value 0x30");
        vmx::vmwrite(F::CPU_BASED_VM_EXEC_CONTROL, proc);
    }

    vmx::vmwrite(F::APIC_ACCESS_ADDR, page | 0x800);
    t.check(CHECKS[5], Want::FailValid(7), crate::forum::try_enter(false));
    vmx::vmwrite(F::APIC_ACCESS_ADDR, page);
}
