//! VMCS shadowing for this L1's L2 (SDM 25.10, 27.2.1.1, 27.3.1.5, 32.3
//! "VMREAD"/"VMWRITE" in VMX non-root operation), part of
//! `workload=selftest`: L1 prepares a shadow VMCS (revision | bit 31),
//! links it with VMREAD/VMWRITE bitmaps, and its L2 (64-bit, CPL 0) reads
//! and writes fields there without exits, exits where a bitmap bit is set,
//! and fails as the SDM says; values in the lines, so bare and nested
//! print the same text. Where the CPU (or nvmx) offers no shadowing, one
//! line says so.

use core::arch::global_asm;

use nvmx_vmx::caps::VmxCaps;
use nvmx_vmx::controls::{proc1, proc2};
use nvmx_vmx::field::Field as F;

use crate::conformance::hex;
use crate::forum::alloc_page;
use crate::selftest::{L2, Tally, Want};
use crate::vmx;

global_asm!(
    r#"
    /* L2: RCX = field, RSI = value; the VMCALL exit saves RFLAGS. */
    .global sh_vmread, sh_vmwrite, sh_vmlaunch
sh_vmread:   vmread rax, rcx
             vmcall
sh_vmwrite:  vmwrite rcx, rsi
             vmcall
    /* L1: VMLAUNCH of the current VMCS, returning RFLAGS when it fails. */
sh_vmlaunch: vmlaunch
             pushfq
             pop rax
             ret
    "#
);

unsafe extern "C" {
    static sh_vmread: u8;
    static sh_vmwrite: u8;
    fn sh_vmlaunch() -> u64;
}

const CF: u64 = 1;
const ZF: u64 = 1 << 6;
/// The arithmetic flags VMsucceed/VMfail set or clear (SDM 32.2).
const ARITH: u64 = 0x8D5;

/// What L2's VMREAD/VMWRITE ended with, from its RFLAGS after the VMCALL
/// exit (the current VMCS holds the error of a VMfailValid).
fn l2_outcome(rflags: u64) -> Want {
    match rflags & ARITH {
        0 => Want::Succeed,
        CF => Want::FailInvalid,
        ZF => Want::FailValid(vmx::try_vmread(F::VM_INSTRUCTION_ERROR.encoding()).unwrap_or(0) as u32),
        _ => Want::FailValid(0xFFFF),
    }
}

fn outcome_name(w: Want) -> &'static str {
    match w {
        Want::Succeed => "VMsucceed",
        Want::FailInvalid => "VMfailInvalid",
        Want::FailValid(12) => "VMfailValid(12)",
        Want::FailValid(13) => "VMfailValid(13)",
        Want::FailValid(_) => "VMfailValid(other)",
    }
}

fn set_bit(page: u64, n: u32) {
    // SAFETY: a page of the L1's pool, n < 0x8000 (a 4 KiB bitmap).
    unsafe { *((page + u64::from(n >> 3)) as *mut u8) |= 1 << (n & 7) };
}

/// The checks, with `l2` on the current (ordinary) VMCS.
pub fn checks(t: &mut Tally, caps: &VmxCaps, l2: &mut L2) {
    let offered = caps.procbased2().1 & proc2::VMCS_SHADOWING != 0;
    if !offered {
        // The one line where it is not offered; VMPTRLD of a shadow VMCS
        // then fails (the conformance part's revision-bit-31 line).
        t.expect("vmcs shadowing for the L2: not offered (secondary bit 14 allowed-0)", "not offered", true);
        return;
    }
    let rip = |s: &u8| s as *const u8 as u64;
    // SAFETY: addresses of the L2 snippets above.
    let (read, write) = unsafe { (rip(&sh_vmread), rip(&sh_vmwrite)) };
    let ordinary = vmx::vmptrst();
    let rev = caps.revision_id();

    // L1 prepares the shadow VMCS: revision | bit 31, VMCLEAR, VMPTRLD,
    // VMWRITEs, VMPTRLD back (SDM 25.10, 25.11.3).
    let shadow = alloc_page();
    // SAFETY: a fresh pool page: the region's revision dword.
    unsafe { *(shadow as *mut u32) = rev | (1 << 31) };
    t.check("shadow vmcs: vmclear", Want::Succeed, vmx::try_op("vmclear", shadow));
    t.check("shadow vmcs: vmptrld of a region with bit 31", Want::Succeed, vmx::try_op("vmptrld", shadow));
    let writes = [
        (F::GUEST_RIP, 0x1234_5678u64),
        (F::GUEST_CS_SELECTOR, 0x10),
        (F::EXCEPTION_BITMAP, 0xABCD),
        (F::TSC_OFFSET, 0x1122_3344_5566_7788),
        (F::GUEST_RSP, 0x7000),
    ];
    let ok = writes.iter().all(|&(f, v)| vmx::try_vmwrite(f.encoding(), v).is_ok());
    t.expect("shadow vmcs: l1 vmwrites 5 fields into it", "VMsucceed", ok);
    // SDM 27.1: VM entry with a shadow VMCS current fails like one without
    // (VMfailInvalid, what nvmx does). Bochs 2.7 lacks that check and
    // fails this one on its clear controls (VMfailValid(7)): the line
    // says only that nothing was entered, the same text on both.
    // SAFETY: VMLAUNCH of the shadow VMCS; it fails (the rest of the
    // region is clear too), so it returns here with RFLAGS.
    let rflags = unsafe { sh_vmlaunch() };
    let failed = matches!(rflags & ARITH, CF | ZF);
    t.expect("vmlaunch with a shadow VMCS current fails (SDM 27.1: VMfailInvalid)", "fails", failed);
    t.check("shadow vmcs: vmptrld of the ordinary VMCS back", Want::Succeed, vmx::try_op("vmptrld", ordinary));

    // vmcs12: shadowing on, bitmaps (VMREAD exits for GUEST_RSP, VMWRITE
    // for GUEST_CS_SELECTOR), the link pointer.
    let (read_map, write_map) = (alloc_page(), alloc_page());
    set_bit(read_map, F::GUEST_RSP.encoding());
    set_bit(write_map, F::GUEST_CS_SELECTOR.encoding());
    let proc = vmx::vmread(F::CPU_BASED_VM_EXEC_CONTROL);
    let proc2_old = vmx::vmread(F::SECONDARY_VM_EXEC_CONTROL);
    vmx::vmwrite(F::CPU_BASED_VM_EXEC_CONTROL, proc | u64::from(proc1::SECONDARY_CONTROLS));
    vmx::vmwrite(F::SECONDARY_VM_EXEC_CONTROL, proc2_old | u64::from(proc2::VMCS_SHADOWING));
    vmx::vmwrite(F::VMREAD_BITMAP, read_map);
    vmx::vmwrite(F::VMWRITE_BITMAP, write_map);
    vmx::vmwrite(F::VMCS_LINK_POINTER, shadow);

    // L2 VMREADs: bitmap bit clear → the shadow's value, no exit.
    for (name, f, want) in [
        ("l2 vmread guest RIP with shadowing: the shadow's value, no exit", F::GUEST_RIP.encoding(), 0x1234_5678),
        ("l2 vmread guest CS selector (16 bits) from the shadow", F::GUEST_CS_SELECTOR.encoding(), 0x10),
        ("l2 vmread TSC offset high (0x2011) from the shadow", F::TSC_OFFSET.encoding() | 1, 0x1122_3344),
    ] {
        let e = l2.run(read, u64::from(f), 0);
        let (value, outcome) = match &e {
            Some(e) if e.reason == 18 => (e.rax, l2_outcome(vmx::vmread(F::GUEST_RFLAGS))),
            _ => (u64::MAX, Want::FailValid(0xFFFF)),
        };
        t.value(name, "", hex(value).as_str(), value == want && outcome == Want::Succeed);
    }
    // An L2 VMWRITE to the shadow, read back by L2, later by L1.
    let e = l2.run(write, u64::from(F::EXCEPTION_BITMAP.encoding()), 0x5A5A);
    let ok = e.is_some_and(|e| e.reason == 18) && l2_outcome(vmx::vmread(F::GUEST_RFLAGS)) == Want::Succeed;
    t.expect("l2 vmwrite exception bitmap = 0x5a5a into the shadow: VMsucceed, no exit", "exit 18 only", ok);
    // Bitmap bits set: exits to L1 with the instruction's information.
    let e = l2.run(read, u64::from(F::GUEST_RSP.encoding()), 0);
    let info = vmx::vmread(F::VMX_INSTRUCTION_INFO);
    // (The exit qualification of a register operand is undefined, SDM 28.2.1.)
    let ok = e.is_some_and(|e| e.reason == 23) && vmx::vmread(F::GUEST_RIP) == read;
    t.value("l2 vmread guest RSP (VMREAD bitmap bit set): exit 23, instruction information", "", hex(info).as_str(), ok);
    let e = l2.run(write, u64::from(F::GUEST_CS_SELECTOR.encoding()), 0x18);
    let info = vmx::vmread(F::VMX_INSTRUCTION_INFO);
    let ok = e.is_some_and(|e| e.reason == 25) && vmx::vmread(F::GUEST_RIP) == write;
    t.value("l2 vmwrite guest CS selector (VMWRITE bitmap bit set): exit 25, instruction information", "", hex(info).as_str(), ok);
    // An encoding beyond bit 14 always exits (the bitmaps name 15 bits).
    let e = l2.run(read, 1 << 32 | u64::from(F::GUEST_RIP.encoding()), 0);
    t.expect("l2 vmread with operand bit 32 set: exit 23", "exit 23", e.is_some_and(|e| e.reason == 23));
    // No such field (bit 12 set), bitmap clear: VMfailValid(12) in the
    // current VMCS, L1's ordinary one.
    let e = l2.run(read, 0x1000, 0);
    let got = if e.is_some_and(|e| e.reason == 18) { l2_outcome(vmx::vmread(F::GUEST_RFLAGS)) } else { Want::FailValid(0xFFFF) };
    t.value("l2 vmread of encoding 0x1000 with shadowing: VMfailValid(12)", "", outcome_name(got), got == Want::FailValid(12));
    // A read-only field: VMfailValid(13) unless IA32_VMX_MISC bit 29.
    let e = l2.run(write, u64::from(F::VM_EXIT_REASON.encoding()), 0x33);
    let got = if e.is_some_and(|e| e.reason == 18) { l2_outcome(vmx::vmread(F::GUEST_RFLAGS)) } else { Want::FailValid(0xFFFF) };
    let any = caps.misc & (1 << 29) != 0;
    let want = if any { Want::Succeed } else { Want::FailValid(13) };
    t.value("l2 vmwrite of the exit reason into the shadow: VMsucceed with IA32_VMX_MISC bit 29, else VMfailValid(13)", "", outcome_name(got), got == want);
    // Link pointer all-ones: VMfailInvalid.
    vmx::vmwrite(F::VMCS_LINK_POINTER, u64::MAX);
    let e = l2.run(read, u64::from(F::GUEST_RIP.encoding()), 0);
    let got = if e.is_some_and(|e| e.reason == 18) { l2_outcome(vmx::vmread(F::GUEST_RFLAGS)) } else { Want::FailValid(0xFFFF) };
    t.value("l2 vmread with the link pointer all-ones: VMfailInvalid", "", outcome_name(got), got == Want::FailInvalid);

    // VM-entry checks (SDM 27.2.1.1, 27.3.1.5).
    vmx::vmwrite(F::VMCS_LINK_POINTER, ordinary);
    let e = l2.run(read, 0, 0);
    let ok = e.is_some_and(|e| e.reason == 33 | 1 << 31 && e.qualification == 4);
    t.expect("vmresume with shadowing and a link pointer to an ordinary VMCS: entry failure 33, qualification 4", "33/4", ok);
    vmx::vmwrite(F::VMCS_LINK_POINTER, shadow);
    vmx::vmwrite(F::VMREAD_BITMAP, read_map | 0x800);
    let e = l2.run(read, 0, 0);
    let error = if e.is_none() { vmx::try_vmread(F::VM_INSTRUCTION_ERROR.encoding()).unwrap_or(0) } else { 0 };
    t.value("vmresume with a misaligned VMREAD bitmap: VMfailValid(7)", "7", hex(error).as_str(), error == 7);
    vmx::vmwrite(F::VMREAD_BITMAP, read_map);
    vmx::vmwrite(F::SECONDARY_VM_EXEC_CONTROL, proc2_old);
    let e = l2.run(read, 0, 0);
    let ok = e.is_some_and(|e| e.reason == 33 | 1 << 31 && e.qualification == 4);
    t.expect("vmresume without shadowing and a link pointer to a shadow VMCS: entry failure 33, qualification 4", "33/4", ok);
    vmx::vmwrite(F::VMCS_LINK_POINTER, u64::MAX);
    vmx::vmwrite(F::CPU_BASED_VM_EXEC_CONTROL, proc);

    // L1 reads what L2 wrote, and what it did not touch, in the shadow.
    let _ = vmx::try_op("vmptrld", shadow);
    let exc = vmx::try_vmread(F::EXCEPTION_BITMAP.encoding()).unwrap_or(u64::MAX);
    let sel = vmx::try_vmread(F::GUEST_CS_SELECTOR.encoding()).unwrap_or(u64::MAX);
    let reason = vmx::try_vmread(F::VM_EXIT_REASON.encoding()).unwrap_or(u64::MAX);
    let _ = vmx::try_op("vmptrld", ordinary);
    t.value("l1 vmreads the shadow: exception bitmap as L2 wrote it", "", hex(exc).as_str(), exc == 0x5A5A);
    t.value("l1 vmreads the shadow: guest CS selector unchanged (L2's write exited)", "", hex(sel).as_str(), sel == 0x10);
    let want = if any { 0x33 } else { 0 };
    t.value("l1 vmreads the shadow: exit reason as L2's vmwrite left it", "", hex(reason).as_str(), reason == want);
}
