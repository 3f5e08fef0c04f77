//! The conformance audit's checks (issue 10 item 6), part of
//! `workload=selftest`: one line each, values in the line where they are
//! the same on every correct CPU, so bare and nested print the same text.
//! Classes: capability MSRs (SDM A.2-A.5), VMX instruction preconditions in
//! the SDM's order (32.3), I/O- and MSR-bitmap edges (26.1.3), CPUID as L1
//! sees it, an EPT1-2 mapping outside RAM (MMIO on a PC), and control bits
//! L1's capability MSRs do not allow (27.2.1.1).

use core::arch::global_asm;
use core::fmt::Write;

use nvmx_vmx::caps::{self, VmxCaps};
use nvmx_vmx::controls::{entry, exit, proc1, proc2};
use nvmx_vmx::field::Field as F;
use nvmx_vmx::nested::{ENTRY_DEFAULT1, EXIT_DEFAULT1, PIN_DEFAULT1, PROC_DEFAULT1};

use crate::boot;
use crate::console::{Console, Text};
use crate::forum::alloc_page;
use crate::selftest::{L2, Tally, Want, alloc_free_name};
use crate::vmx;

global_asm!(
    r#"
    /* L1 code for boot::probe: one VMX instruction on the operand at RDI. */
    .global cf_vmxon_at, cf_vmxon_ss, cf_vmclear_at, cf_vmread_at, cf_invept_at, cf_movss_vmresume
cf_vmxon_at:   vmxon [rdi]
               ret
cf_vmxon_ss:   push rbp
               mov rbp, rdi
               vmxon [rbp]          /* RBP-based: an SS operand */
               pop rbp
               ret
cf_vmclear_at: vmclear [rdi]
               ret
cf_vmread_at:  mov eax, 0x681e      /* GUEST_RIP */
               vmread [rdi], rax
               ret
cf_invept_at:  mov eax, 2           /* all-context */
               invept rax, [rdi]
               ret
    /* VMRESUME right after MOV SS (events blocked by MOV SS): RFLAGS. */
cf_movss_vmresume:
               mov ax, ss
               mov ss, ax
               vmresume
               pushfq
               pop rax
               ret

    /* L2 snippets: RCX = port / MSR / value, RSI = address. */
    .global cf_in8, cf_in16, cf_in32, cf_rdmsr, cf_cpuid, cf_store_load
    .global cf_invlpg, cf_rdpmc, cf_rdtsc, cf_cr3_load, cf_cr3_store, cf_cr8_load, cf_cr8_store
cf_invlpg:     invlpg [rsi]
               vmcall
cf_rdpmc:      rdpmc
               vmcall
cf_rdtsc:      rdtsc
               vmcall
cf_cr3_load:   mov cr3, rcx         /* RCX = L2's own CR3 */
               vmcall
cf_cr3_store:  mov rax, cr3
               vmcall
cf_cr8_load:   xor eax, eax
               mov cr8, rax
               vmcall
cf_cr8_store:  mov rax, cr8
               vmcall
    .global cf_pause_loop
cf_pause_loop: mov ecx, 1000000     /* far longer than any PLE window used */
1:             pause
               dec ecx
               jnz 1b
               vmcall
    .global cf_cr8_write
cf_cr8_write:  mov cr8, rcx
               vmcall
cf_in8:        mov edx, ecx
               in al, dx
               vmcall
cf_in16:       mov edx, ecx
               in ax, dx
               vmcall
cf_in32:       mov edx, ecx
               in eax, dx
               vmcall
cf_rdmsr:      rdmsr
               vmcall
cf_cpuid:      cpuid
               vmcall
cf_store_load: mov qword ptr [rsi], rcx
               mov rax, qword ptr [rsi]
               vmcall
    "#
);

unsafe extern "C" {
    fn cf_vmxon_at(operand: u64);
    fn cf_vmxon_ss(operand: u64);
    fn cf_vmclear_at(operand: u64);
    fn cf_vmread_at(operand: u64);
    fn cf_invept_at(operand: u64);
    fn cf_movss_vmresume() -> u64;
    static cf_in8: u8;
    static cf_in16: u8;
    static cf_in32: u8;
    static cf_rdmsr: u8;
    static cf_cpuid: u8;
    static cf_store_load: u8;
    static cf_invlpg: u8;
    static cf_rdpmc: u8;
    static cf_rdtsc: u8;
    static cf_cr3_load: u8;
    static cf_cr3_store: u8;
    static cf_cr8_load: u8;
    static cf_cr8_store: u8;
    static cf_cr8_write: u8;
    static cf_pause_loop: u8;
}

extern "C" fn vmxon_at(a: u64) {
    // SAFETY: VMXON with the operand at `a`; the checks expect a fault or
    // a VM-instruction failure, and VMXOFF follows a success.
    unsafe { cf_vmxon_at(a) }
}
extern "C" fn vmxon_ss(a: u64) {
    // SAFETY: as `vmxon_at`, SS-relative.
    unsafe { cf_vmxon_ss(a) }
}
extern "C" fn vmclear_at(a: u64) {
    // SAFETY: outside VMX operation VMCLEAR is #UD before its operand.
    unsafe { cf_vmclear_at(a) }
}
extern "C" fn vmread_at(a: u64) {
    // SAFETY: VMREAD to memory at `a` (a non-canonical address: #GP).
    unsafe { cf_vmread_at(a) }
}
extern "C" fn invept_at(a: u64) {
    // SAFETY: INVEPT all-context with the descriptor at `a`.
    unsafe { cf_invept_at(a) }
}

fn fault_line(t: &mut Tally, name: &str, got: Option<boot::Fault>, vector: u64) {
    let ok = got.is_some_and(|f| f.vector == vector && f.error == 0);
    if !ok {
        match got {
            Some(f) => {
                let _ = writeln!(Console, "l1: selftest {name}: exception {} error {:#x}", f.vector, f.error);
            }
            None => {
                let _ = writeln!(Console, "l1: selftest {name}: no exception");
            }
        }
    }
    t.expect(name, "that exception", ok);
}

fn rdmsr(msr: u32) -> u64 {
    let (lo, hi): (u32, u32);
    // SAFETY: architectural VMX capability MSRs, present with VMX.
    unsafe { core::arch::asm!("rdmsr", in("ecx") msr, out("eax") lo, out("edx") hi) };
    (u64::from(hi) << 32) | u64::from(lo)
}

fn set_cr(n: u8, v: u64) {
    // SAFETY: the callers flip one bit (NE, VMXE, OSXSAVE) and restore it;
    // none of them changes how memory is reached.
    unsafe {
        match n {
            0 => core::arch::asm!("mov cr0, {}", in(reg) v),
            _ => core::arch::asm!("mov cr4, {}", in(reg) v),
        }
    }
}

/// Checks made outside VMX operation (after the selftest's VMXOFF), then
/// in VMX root on fresh VMCSs; VMXOFF at the end.
pub fn outside_vmx(t: &mut Tally, caps: &VmxCaps) {
    // Class 1 (SDM A.2-A.5): each plain/true pair. The plain MSR reports
    // every default-1 bit as must-be-1; the true one may allow it to be 0;
    // both allow the same 1-settings, and every default-1 bit may be 1.
    let basic = rdmsr(caps::IA32_VMX_BASIC);
    t.value("IA32_VMX_BASIC bit 55 (true controls)", "1", if basic >> 55 & 1 == 1 { "1" } else { "0" }, basic >> 55 & 1 == 1);
    for (name, plain, tru, d1) in [
        ("pin-based", caps::IA32_VMX_PINBASED_CTLS, caps::IA32_VMX_TRUE_PINBASED_CTLS, PIN_DEFAULT1),
        ("processor-based", caps::IA32_VMX_PROCBASED_CTLS, caps::IA32_VMX_TRUE_PROCBASED_CTLS, PROC_DEFAULT1),
        ("VM-exit", caps::IA32_VMX_EXIT_CTLS, caps::IA32_VMX_TRUE_EXIT_CTLS, EXIT_DEFAULT1),
        ("VM-entry", caps::IA32_VMX_ENTRY_CTLS, caps::IA32_VMX_TRUE_ENTRY_CTLS, ENTRY_DEFAULT1),
    ] {
        let (p, tr) = (rdmsr(plain), rdmsr(tru));
        let ok = p as u32 & d1 == d1
            && tr as u32 & !(p as u32) == 0
            && p >> 32 == tr >> 32
            && (tr >> 32) as u32 & d1 == d1;
        if !ok {
            let _ = writeln!(Console, "l1: selftest {name}: plain {p:#x} true {tr:#x}");
        }
        let line = alloc_free_name(name, "plain capability MSR: default-1 bits must-be-1, true MSR within it, same allowed-1");
        t.value(line, "", hex(u64::from(p as u32 & d1)).as_str(), ok);
    }

    // Class 5: CPUID.1 as L1 sees it. OSXSAVE (ECX 27) follows CR4.OSXSAVE
    // (where XSAVE, ECX 26, exists); VMX (ECX 5) set; no hypervisor bit
    // (ECX 31) on nvmx's PC or on the CPU.
    let ecx = || core::arch::x86_64::__cpuid(1).ecx;
    let cr4 = crate::forum::read_cr(4);
    let xsave = ecx() & (1 << 26) != 0;
    set_cr(4, cr4 & !(1 << 18));
    let off = ecx() >> 27 & 1;
    if xsave {
        set_cr(4, cr4 | (1 << 18));
    }
    let on = ecx() >> 27 & 1;
    set_cr(4, cr4);
    let want_on = u32::from(xsave);
    t.expect("cpuid.1 OSXSAVE follows CR4.OSXSAVE (0 with it clear, 1 with it set where XSAVE exists)", "0 then 1", off == 0 && on == want_on);
    let e = ecx();
    t.expect("cpuid.1 VMX bit 1, hypervisor bit 0", "1, 0", e >> 5 & 1 == 1 && e >> 31 == 0);

    // Class 2: preconditions before VMX operation (SDM 32.3 "VMXON",
    // "VMCLEAR"), in the pseudo-code's order.
    let rev = caps.revision_id();
    let region = |r: u32| {
        let p = alloc_page();
        // SAFETY: a fresh page of the L1's pool.
        unsafe { *(p as *mut u32) = r };
        p
    };
    let good = region(rev);
    let operand = alloc_page();
    // SAFETY: a pool page holding the VMXON pointer for the probes.
    unsafe { *(operand as *mut u64) = good };
    fault_line(t, "vmclear outside VMX operation: #UD", boot::probe(vmclear_at, operand), 6);
    set_cr(4, cr4 & !(1 << 13));
    let got = boot::probe(vmxon_at, operand);
    set_cr(4, cr4);
    fault_line(t, "vmxon with CR4.VMXE=0: #UD", got, 6);
    let cr0 = crate::forum::read_cr(0);
    set_cr(0, cr0 & !(1 << 5));
    let got = boot::probe(vmxon_at, operand);
    set_cr(0, cr0);
    fault_line(t, "vmxon with CR0.NE=0 (IA32_VMX_CR0_FIXED0): #GP(0)", got, 13);
    // Canonicality before any page walk: 1 << 47 is neither canonical nor mapped.
    fault_line(t, "vmxon with a non-canonical operand: #GP(0), not #PF", boot::probe(vmxon_at, 1 << 47), 13);
    fault_line(t, "vmxon with a non-canonical SS operand (RBP base): #SS(0)", boot::probe(vmxon_ss, 1 << 47), 12);
    t.check("vmxon of a region with revision bit 31 set", Want::FailInvalid, vmx::try_op("vmxon", region(rev | (1 << 31))));
    t.check("vmxon of a region beyond the physical-address width", Want::FailInvalid, vmx::try_op("vmxon", 1 << 52));
    if vmx::try_op("vmxon", good).is_err() {
        t.value("vmxon for the precondition checks", "VMsucceed", "a failure", false);
        return;
    }
    // In VMX root, with a current VMCS so that VMfail is VMfailValid.
    let a = region(rev);
    let _ = vmx::try_op("vmclear", a);
    let _ = vmx::try_op("vmptrld", a);
    t.check("vmclear of an address beyond the physical-address width", Want::FailValid(2), vmx::try_op("vmclear", 1 << 52));
    t.check("vmptrld of an address beyond the physical-address width", Want::FailValid(9), vmx::try_op("vmptrld", 1 << 52));
    // SDM 32.3 "VMLAUNCH/VMRESUME": blocking by MOV SS (26) before the
    // launch state (5 for a clear VMCS).
    // SAFETY: VMRESUME of a clear VMCS cannot enter a guest; it fails.
    let rflags = unsafe { cf_movss_vmresume() };
    let error = if rflags & 0x40 != 0 { vmx::try_vmread(F::VM_INSTRUCTION_ERROR.encoding()).unwrap_or(0) } else { 0 };
    t.value("vmresume of a clear VMCS right after MOV SS: VMfailValid(26) before (5)", "26", dec(error).as_str(), error == 26);
    fault_line(t, "vmread to a non-canonical memory operand: #GP(0)", boot::probe(vmread_at, 1 << 47), 13);
    fault_line(t, "invept with a non-canonical descriptor: #GP(0)", boot::probe(invept_at, 1 << 47), 13);
    // Revision bit 31 marks a shadow VMCS: VMPTRLD takes it only where
    // VMCS shadowing is offered (SDM 32.3 "VMPTRLD"), else error 11.
    let shadow_ok = caps.procbased2().1 & proc2::VMCS_SHADOWING != 0;
    let got = vmx::try_op("vmptrld", region(rev | (1 << 31)));
    let ok = got.is_ok() == shadow_ok && (shadow_ok || got == Err(vmx::VmFail::Valid(11)));
    t.expect("vmptrld of a region with revision bit 31: VMfailValid(11) unless VMCS shadowing is offered", "as advertised", ok);
    let _ = vmx::vmxoff();
}

/// Checks with an L2 on the selftest's VMCS (its controls as `l2_checks`
/// left them).
pub fn with_l2(t: &mut Tally, caps: &VmxCaps, l2: &mut L2) {
    let rip = |s: &u8| s as *const u8 as u64;
    // Class 1: every default-1 bit set (reserved ones, CR3 load/store
    // exiting, save/load debug controls) — VMLAUNCH/VMRESUME succeeds.
    let fields = [
        (F::PIN_BASED_VM_EXEC_CONTROL, PIN_DEFAULT1),
        (F::CPU_BASED_VM_EXEC_CONTROL, PROC_DEFAULT1),
        (F::VM_EXIT_CONTROLS, EXIT_DEFAULT1),
        (F::VM_ENTRY_CONTROLS, ENTRY_DEFAULT1),
    ];
    let saved = fields.map(|(f, _)| vmx::vmread(f));
    for (f, d1) in fields {
        vmx::vmwrite(f, vmx::vmread(f) | u64::from(d1));
    }
    // SAFETY (every `rip(&cf_…)`): addresses of the L2 snippets above.
    let e = l2.run(unsafe { rip(&cf_cpuid) }, 0, 0);
    for ((f, _), v) in fields.iter().zip(saved) {
        vmx::vmwrite(*f, v);
    }
    t.expect("vmresume with every default-1 control bit set: L2 runs (exit 10)", "exit 10", e.is_some_and(|e| e.reason == 10));

    // Class 4 (SDM 26.1.3): I/O bitmaps at the edges. Only port 0x8001
    // (bitmap B bit 1) is set; "use I/O bitmaps" overrides unconditional
    // I/O exiting. Accesses that do not exit read all-ones (no device).
    let (io_a, io_b) = (alloc_page(), alloc_page());
    // SAFETY: a fresh pool page: bit 1 of bitmap B.
    unsafe { *(io_b as *mut u8) = 2 };
    let proc = vmx::vmread(F::CPU_BASED_VM_EXEC_CONTROL);
    vmx::vmwrite(F::IO_BITMAP_A, io_a);
    vmx::vmwrite(F::IO_BITMAP_B, io_b);
    vmx::vmwrite(F::CPU_BASED_VM_EXEC_CONTROL, proc | u64::from(proc1::USE_IO_BITMAPS | proc1::UNCONDITIONAL_IO_EXITING));
    // SAFETY: as above.
    let (in8, in16, in32) = unsafe { (rip(&cf_in8), rip(&cf_in16), rip(&cf_in32)) };
    for (name, snippet, port, exits, value) in [
        ("l2 in ax at 0x7fff (ports 0x7fff-0x8000, bitmaps A and B clear): no exit, all-ones", in16, 0x7FFF, false, 0xFFFF),
        ("l2 in eax at 0x7ffe (reaches 0x8001, set in B): exit 30", in32, 0x7FFE, true, 0),
        ("l2 in ax at 0x8000 (touches 0x8001): exit 30", in16, 0x8000, true, 0),
        ("l2 in al at 0xffff (clear, no wrap): no exit, all-ones", in8, 0xFFFF, false, 0xFF),
        ("l2 in ax at 0xffff (wraps past 0xffff): exit 30 whatever the bitmaps", in16, 0xFFFF, true, 0),
        ("l2 in eax at 0xfffd (wraps): exit 30", in32, 0xFFFD, true, 0),
    ] {
        let e = l2.run(snippet, port, 0);
        let ok = match e {
            Some(e) if exits => e.reason == 30 && e.qualification >> 16 == port,
            Some(e) => e.reason == 18 && e.rax == value,
            None => false,
        };
        t.expect(name, "", ok);
    }
    vmx::vmwrite(F::CPU_BASED_VM_EXEC_CONTROL, proc);

    // MSR bitmaps: reads of 0-0x1FFF and 0xC0000000-0xC0001FFF by their
    // bit, every other MSR always exits.
    let msr_map = alloc_page();
    // SAFETY: a fresh pool page: read bit for MSR 0x1FFF (low read bitmap).
    unsafe { *((msr_map + 0x3FF) as *mut u8) = 0x80 };
    vmx::vmwrite(F::MSR_BITMAP, msr_map);
    vmx::vmwrite(F::CPU_BASED_VM_EXEC_CONTROL, proc | u64::from(proc1::USE_MSR_BITMAPS));
    // SAFETY: as above.
    let rd = unsafe { rip(&cf_rdmsr) };
    // Without "load IA32_EFER" L2 runs with L1's EFER (LMA/LME by the
    // IA-32e mode guest control, set here as in L1).
    let efer = rdmsr(0xC000_0080);
    for (name, msr, exits) in [
        ("l2 rdmsr 0x1fff, its bit set: exit 31", 0x1FFF, true),
        ("l2 rdmsr 0x2000, beyond the low range: exit 31", 0x2000, true),
        ("l2 rdmsr 0xc0002000, beyond the high range: exit 31", 0xC000_2000, true),
        ("l2 rdmsr 0x40000000: exit 31", 0x4000_0000, true),
        ("l2 rdmsr IA32_EFER, its bit clear: no exit, L2's EFER (= L1's)", 0xC000_0080, false),
    ] {
        let e = l2.run(rd, msr, 0);
        let ok = match e {
            Some(e) if exits => e.reason == 31,
            Some(e) => e.reason == 18 && e.rax & 0xFFFF_FFFF == efer & 0xFFFF_FFFF,
            None => false,
        };
        t.expect(name, "", ok);
    }
    vmx::vmwrite(F::CPU_BASED_VM_EXEC_CONTROL, proc);

    // Class 6: an L2 page L1's EPT maps to physical memory the L1 does not
    // have (1 GiB - 4 KiB, as `crash=memory`): MMIO on a PC, the write is
    // dropped and the read is all-ones; L1 goes on.
    let l2_page = alloc_page();
    l2.ept.map_to(l2_page, 0x3FFF_F000);
    let _ = vmx::invept_single(l2.ept.eptp());
    // SAFETY: as above.
    let e = l2.run(unsafe { rip(&cf_store_load) }, 0x5A, l2_page + 8);
    t.expect("l2 writes and reads an EPT1-2 page outside L1's RAM: all-ones", "0xffffffffffffffff", e.is_some_and(|e| e.reason == 18 && e.rax == u64::MAX));
    l2.ept.map_to(l2_page, l2_page);
    let _ = vmx::invept_single(l2.ept.eptp());

    // Item 5: the processor-based controls Linux's kvm_intel requires,
    // each making its exit with the SDM's qualification (26.1.3, 28.2.1).
    // SAFETY: as above.
    let snippets = unsafe { [rip(&cf_invlpg), rip(&cf_rdpmc), rip(&cf_rdtsc), rip(&cf_cr3_load), rip(&cf_cr3_store), rip(&cf_cr8_load), rip(&cf_cr8_store)] };
    for (name, snippet, control, reason, qualification) in [
        ("l2 invlpg with INVLPG exiting: exit 14, the linear address", snippets[0], proc1::INVLPG_EXITING, 14, Some(0x1234_5000)),
        ("l2 rdpmc with RDPMC exiting: exit 15", snippets[1], proc1::RDPMC_EXITING, 15, None),
        ("l2 rdtsc with RDTSC exiting: exit 16", snippets[2], proc1::RDTSC_EXITING, 16, None),
        ("l2 mov to cr3 with CR3-load exiting: exit 28, qualification 0x103", snippets[3], proc1::CR3_LOAD_EXITING, 28, Some(0x103)),
        ("l2 mov from cr3 with CR3-store exiting: exit 28, qualification 0x13", snippets[4], proc1::CR3_STORE_EXITING, 28, Some(0x13)),
        ("l2 mov to cr8 with CR8-load exiting: exit 28, qualification 0x8", snippets[5], proc1::CR8_LOAD_EXITING, 28, Some(0x8)),
        ("l2 mov from cr8 with CR8-store exiting: exit 28, qualification 0x18", snippets[6], proc1::CR8_STORE_EXITING, 28, Some(0x18)),
    ] {
        vmx::vmwrite(F::CPU_BASED_VM_EXEC_CONTROL, proc | u64::from(control));
        let e = l2.run(snippet, vmx::vmread(F::GUEST_CR3), 0x1234_5000);
        vmx::vmwrite(F::CPU_BASED_VM_EXEC_CONTROL, proc);
        let ok = e.as_ref().is_some_and(|e| e.reason == reason && qualification.is_none_or(|q| e.qualification == q));
        if !ok {
            if let Some(e) = e {
                let _ = writeln!(Console, "l1: selftest {name}: exit {:#x} qualification {:#x}", e.reason, e.qualification);
            }
        }
        t.expect(name, "", ok);
    }

    // PAUSE-loop exiting (kvm_intel's ple_gap/ple_window; SDM 26.1.3,
    // 25.6.13): PAUSEs at CPL 0 less than PLE_GAP apart for longer than
    // PLE_WINDOW make exit 40 (qualification 0) before the loop ends. A
    // short window: nested, L0's own exits (its timer) take time the L2
    // sees as gaps between PAUSEs, which restart the loop's count — with
    // KVM's window of 4096 the nested loop never ran that long between
    // two L0 exits on Bochs (bare it did).
    let name = "l2 PAUSE loop with PAUSE-loop exiting (gap 128, window 256): exit 40";
    if caps.procbased2().1 & proc2::PAUSE_LOOP_EXITING != 0 {
        let proc2_old = vmx::vmread(F::SECONDARY_VM_EXEC_CONTROL);
        vmx::vmwrite(F::CPU_BASED_VM_EXEC_CONTROL, proc | u64::from(proc1::SECONDARY_CONTROLS));
        vmx::vmwrite(F::SECONDARY_VM_EXEC_CONTROL, proc2_old | u64::from(proc2::PAUSE_LOOP_EXITING));
        vmx::vmwrite(F::PLE_GAP, 128);
        vmx::vmwrite(F::PLE_WINDOW, 256);
        // SAFETY: as above.
        let e = l2.run(unsafe { rip(&cf_pause_loop) }, 0, 0);
        vmx::vmwrite(F::SECONDARY_VM_EXEC_CONTROL, proc2_old);
        vmx::vmwrite(F::CPU_BASED_VM_EXEC_CONTROL, proc);
        let ok = e.as_ref().is_some_and(|e| e.reason == 40 && e.qualification == 0);
        if let (false, Some(e)) = (ok, e) {
            let _ = writeln!(Console, "l1: selftest {name}: exit {:#x} qualification {:#x}", e.reason, e.qualification);
        }
        t.expect(name, "", ok);
    } else {
        t.expect(name, "not offered", true);
    }

    // Without TPR shadow or CR8 exiting L2's MOV to CR8 sets the CPU's
    // TPR, the one L1 reads through its own CR8 (SDM 11.8.6.1, 30.1).
    // SAFETY: as above.
    let e = l2.run(unsafe { rip(&cf_cr8_write) }, 7, 0);
    let cr8 = read_cr8();
    // SAFETY: back to TPR 0 (the L1 takes no interrupts here anyway).
    unsafe { core::arch::asm!("mov cr8, {}", in(reg) 0u64) };
    t.expect("l2 mov to cr8 (7) without TPR shadow or CR8 exiting: L1's CR8 reads 7", "7", e.is_some_and(|e| e.reason == 18) && cr8 == 7);

    // Class 8: a control bit the L1's capability MSRs do not allow is
    // VMfailValid(7) (SDM 27.2.1.1), one per control word nvmx checks by
    // name: monitor trap flag, load IA32_PERF_GLOBAL_CTRL on exit and on
    // entry (never offered by nvmx; Bochs may offer them bare).
    let words = [F::CPU_BASED_VM_EXEC_CONTROL, F::VM_EXIT_CONTROLS, F::VM_ENTRY_CONTROLS];
    let allowed1 = [caps.procbased().1, caps.exit().1, caps.entry().1];
    for (i, bit, name) in [
        (0, proc1::MONITOR_TRAP_FLAG, "monitor trap flag"),
        (1, exit::LOAD_PERF_GLOBAL_CTRL, "VM-exit load IA32_PERF_GLOBAL_CTRL"),
        (2, entry::LOAD_PERF_GLOBAL_CTRL, "VM-entry load IA32_PERF_GLOBAL_CTRL"),
    ] {
        let old = vmx::vmread(words[i]);
        vmx::vmwrite(words[i], old | u64::from(bit));
        // SAFETY: as above.
        let r = l2.run(unsafe { rip(&cf_cpuid) }, 0, 0);
        let error = if r.is_none() { vmx::try_vmread(F::VM_INSTRUCTION_ERROR.encoding()).unwrap_or(0) } else { 0 };
        vmx::vmwrite(words[i], old);
        let offered = allowed1[i] & bit != 0;
        let ok = if offered { error != 7 } else { r.is_none() && error == 7 };
        if !ok {
            let _ = writeln!(Console, "l1: selftest {name}: offered {offered}, VM-instruction error {error}");
        }
        t.expect(alloc_free_name(name, "VMfailValid(7) exactly where not advertised"), "as advertised", ok);
    }
}

/// TPR shadow (SDM 30.1.1-30.1.2, 27.2.1.1, 26.1.1 exit 43): L2's CR8
/// reads and writes go to VTPR (offset 0x80 of the virtual-APIC page, an
/// L1 page), a write below the TPR threshold is a trap-like exit 43, and
/// the entry checks refuse a threshold above VTPR[7:4], threshold bits
/// 31:4 and a misaligned page (VMfailValid(7)).
pub fn tpr_shadow(t: &mut Tally, caps: &VmxCaps, l2: &mut L2) {
    if caps.procbased().1 & proc1::USE_TPR_SHADOW == 0 {
        t.value("TPR shadow offered", "offered", "not offered", false);
        return;
    }
    let rip = |s: &u8| s as *const u8 as u64;
    let vapic = alloc_page();
    let vtpr = (vapic + 0x80) as *mut u32;
    // SAFETY: a fresh pool page: the L2's virtual-APIC page.
    unsafe { vtpr.write_volatile(0x50) };
    let proc = vmx::vmread(F::CPU_BASED_VM_EXEC_CONTROL);
    let no_cr8 = !u64::from(proc1::CR8_LOAD_EXITING | proc1::CR8_STORE_EXITING);
    vmx::vmwrite(F::CPU_BASED_VM_EXEC_CONTROL, (proc & no_cr8) | u64::from(proc1::USE_TPR_SHADOW));
    vmx::vmwrite(F::VIRTUAL_APIC_PAGE_ADDR, vapic);
    vmx::vmwrite(F::TPR_THRESHOLD, 4);
    // SAFETY: VTPR of the page above, written by the L2 through the CPU.
    let read = || unsafe { vtpr.read_volatile() };
    // SAFETY (both): addresses of the L2 snippets above.
    let (store, write) = unsafe { (rip(&cf_cr8_store), rip(&cf_cr8_write)) };
    let e = l2.run(store, 0, 0);
    t.expect("l2 mov from cr8 with TPR shadow: VTPR[7:4] (5), no exit", "5", e.is_some_and(|e| e.reason == 18 && e.rax == 5));
    let e = l2.run(write, 6, 0);
    t.expect("l2 mov to cr8 (6) with TPR shadow: VTPR 0x60, no exit", "0x60", e.is_some_and(|e| e.reason == 18) && read() == 0x60);
    let e = l2.run(write, 3, 0);
    let ok = e.is_some_and(|e| e.reason == 43 && e.qualification == 0) && read() == 0x30 && vmx::vmread(F::GUEST_RIP) == write + 4;
    t.expect("l2 mov to cr8 (3) below TPR threshold 4: exit 43 after the write, VTPR 0x30", "exit 43", ok);
    let e = l2.run(write, 3, 0);
    let error = if e.is_none() { vmx::try_vmread(F::VM_INSTRUCTION_ERROR.encoding()).unwrap_or(0) } else { 0 };
    t.value("vmresume with TPR threshold 4 above VTPR[7:4] = 3: VMfailValid(7)", "7", dec(error).as_str(), error == 7);
    vmx::vmwrite(F::TPR_THRESHOLD, 0x13);
    let e = l2.run(write, 3, 0);
    let error = if e.is_none() { vmx::try_vmread(F::VM_INSTRUCTION_ERROR.encoding()).unwrap_or(0) } else { 0 };
    t.value("vmresume with TPR threshold bits 31:4 set: VMfailValid(7)", "7", dec(error).as_str(), error == 7);
    vmx::vmwrite(F::TPR_THRESHOLD, 0);
    vmx::vmwrite(F::VIRTUAL_APIC_PAGE_ADDR, vapic | 0x800);
    let e = l2.run(write, 3, 0);
    let error = if e.is_none() { vmx::try_vmread(F::VM_INSTRUCTION_ERROR.encoding()).unwrap_or(0) } else { 0 };
    t.value("vmresume with a misaligned virtual-APIC page: VMfailValid(7)", "7", dec(error).as_str(), error == 7);
    vmx::vmwrite(F::VIRTUAL_APIC_PAGE_ADDR, vapic);
    vmx::vmwrite(F::CPU_BASED_VM_EXEC_CONTROL, proc);
}

fn read_cr8() -> u64 {
    let v: u64;
    // SAFETY: reading CR8 has no side effect.
    unsafe { core::arch::asm!("mov {}, cr8", out(reg) v) };
    v
}

/// `v` in hexadecimal, for a check line.
pub(crate) fn hex(v: u64) -> Text<24> {
    Text::of(format_args!("{v:#x}"))
}

/// `v` in decimal, for a check line.
pub(crate) fn dec(v: u64) -> Text<24> {
    Text::of(format_args!("{v}"))
}
