//! The pure decisions of nested VMX, host-tested: what L1 is told about
//! VMX (capability MSRs), the VM-entry checks L0 makes on a vmcs12 before
//! VMLAUNCH/VMRESUME, and which L2 exits L1 asked for. vmcs12 is read
//! through a closure, so the kernel passes its cache and the tests a table.

use crate::caps::VmxCaps;
use crate::controls::{entry, exit as exitc, pin, proc1, proc2};
use crate::field::Field as F;
use crate::field::FieldSet;
use crate::regs::{EFER_LMA, EFER_LME};

/// The VMCS revision identifier of nvmx's vmcs12 format, advertised to L1
/// in IA32_VMX_BASIC ("NVMX" with bit 31 clear).
pub const VMCS12_REVISION: u32 = 0x4E56_4D58 & 0x7FFF_FFFF;

/// The controls nvmx emulates for L1, each offered where the CPU has it:
/// pin-based, processor-based, secondary, VM-exit and VM-entry.
// Virtual NMIs and NMI-window exiting run on VMCS0-2's own (the CPU's),
// L1's NMIs reach L2 or exit to L1 by kernel/src/l1/events.rs (issue 10).
pub const L1_PIN: u32 = pin::EXTERNAL_INTERRUPT_EXITING | pin::NMI_EXITING | pin::VIRTUAL_NMIS | pin::PREEMPTION_TIMER;
pub const L1_PROC: u32 = proc1::INTERRUPT_WINDOW_EXITING | proc1::NMI_WINDOW_EXITING | proc1::USE_TSC_OFFSETTING | proc1::HLT_EXITING
    | proc1::INVLPG_EXITING | proc1::MWAIT_EXITING | proc1::RDPMC_EXITING | proc1::RDTSC_EXITING
    | proc1::CR3_LOAD_EXITING | proc1::CR3_STORE_EXITING | proc1::CR8_LOAD_EXITING | proc1::CR8_STORE_EXITING
    | proc1::MOV_DR_EXITING | proc1::UNCONDITIONAL_IO_EXITING | proc1::USE_IO_BITMAPS | proc1::USE_MSR_BITMAPS
    | proc1::MONITOR_EXITING | proc1::PAUSE_EXITING | proc1::SECONDARY_CONTROLS | proc1::USE_TPR_SHADOW;
pub const L1_PROC2: u32 = proc2::ENABLE_EPT | proc2::ENABLE_VPID | proc2::ENABLE_RDTSCP | proc2::UNRESTRICTED_GUEST
    | proc2::ENABLE_INVPCID
    // APIC-access page (SDM 29.4): run by the CPU on VMCS0-2, with L0's
    // own page where EPT0-2 maps L1's (kernel/src/l1/nested.rs).
    | proc2::VIRTUALIZE_APIC_ACCESSES
    // VMCS shadowing for L1's own L2 (`crate::shadow12`): L0 serves L2's
    // VMREAD/VMWRITE from the shadow vmcs12, offered where the CPU has it.
    | proc2::VMCS_SHADOWING
    // PAUSE-loop exiting (kvm_intel's ple_gap): run by the CPU on VMCS0-2
    // with vmcs12's gap and window; every exit 40 of L2 is L1's.
    | proc2::PAUSE_LOOP_EXITING;
// KVM (6.1 setup_vmcs_config) requires CR8 load/store exiting, save and
// load debug controls: without them kvm_intel refuses to load (EIO).
pub const L1_EXIT: u32 = exitc::SAVE_DEBUG_CONTROLS | exitc::HOST_ADDRESS_SPACE_SIZE | exitc::ACK_INTERRUPT_ON_EXIT
    | exitc::SAVE_PAT | exitc::LOAD_PAT | exitc::SAVE_EFER | exitc::LOAD_EFER | exitc::SAVE_PREEMPTION_TIMER;
pub const L1_ENTRY: u32 = entry::LOAD_DEBUG_CONTROLS | entry::IA32E_MODE_GUEST | entry::LOAD_PAT | entry::LOAD_EFER;

/// The default-1 class of each control word (SDM A.2: pin-based bits 1, 2,
/// 4; processor-based 1, 4-6, 8, 13-16, 26; VM-exit 0-8, 10, 11, 13, 14,
/// 16, 17; VM-entry 0-8, 12).
pub const PIN_DEFAULT1: u32 = 0x0000_0016;
pub const PROC_DEFAULT1: u32 = 0x0401_E172;
pub const EXIT_DEFAULT1: u32 = 0x0003_6DFF;
pub const ENTRY_DEFAULT1: u32 = 0x0000_11FF;

/// What L1 reads in the VMX capability MSRs: what nvmx emulates, within what
/// the CPU can run for L2 (SDM Appendix A). `None` for MSRs not advertised.
pub fn l1_vmx_msr(host: &VmxCaps, msr: u32) -> Option<u64> {
    use crate::caps::*;
    // SDM A.2: the default-1 bits (reserved, or controls that were
    // always on before the true MSRs) may always be 1 — nvmx emulates
    // every one of them (a reserved bit does nothing; CR3 load/store
    // exiting, save/load debug controls are offered) — and the plain MSRs
    // report them as must-be-1 whatever the true MSRs allow (A.3.1, A.3.2,
    // A.4, A.5). Secondary controls have no default-1 class (A.3.3).
    let ctl = |(a0, a1): (u32, u32), allowed: u32, default1: u32| {
        let ok = allowed | a0 | default1;
        u64::from(a0 & ok) | (u64::from((a1 | default1) & ok) << 32)
    };
    let plain = |v: u64, default1: u32| v | u64::from(default1);
    let (pin_ok, proc_ok, proc2_ok, exit_ok, entry_ok) = (L1_PIN, L1_PROC, L1_PROC2, L1_EXIT, L1_ENTRY);
    Some(match msr {
        // Revision, 4 KiB regions, WB (6) memory type, true controls (bit 55).
        IA32_VMX_BASIC => u64::from(VMCS12_REVISION) | (4096 << 32) | (6 << 50) | (1 << 55),
        IA32_VMX_TRUE_PINBASED_CTLS => ctl(host.pinbased(), pin_ok, PIN_DEFAULT1),
        IA32_VMX_PINBASED_CTLS => plain(ctl(host.pinbased(), pin_ok, PIN_DEFAULT1), PIN_DEFAULT1),
        IA32_VMX_TRUE_PROCBASED_CTLS => ctl(host.procbased(), proc_ok, PROC_DEFAULT1),
        IA32_VMX_PROCBASED_CTLS => plain(ctl(host.procbased(), proc_ok, PROC_DEFAULT1), PROC_DEFAULT1),
        IA32_VMX_PROCBASED_CTLS2 => ctl(host.procbased2(), proc2_ok, 0),
        IA32_VMX_TRUE_EXIT_CTLS => ctl(host.exit(), exit_ok, EXIT_DEFAULT1),
        IA32_VMX_EXIT_CTLS => plain(ctl(host.exit(), exit_ok, EXIT_DEFAULT1), EXIT_DEFAULT1),
        IA32_VMX_TRUE_ENTRY_CTLS => ctl(host.entry(), entry_ok, ENTRY_DEFAULT1),
        IA32_VMX_ENTRY_CTLS => plain(ctl(host.entry(), entry_ok, ENTRY_DEFAULT1), ENTRY_DEFAULT1),
        // The CPU's preemption-timer rate (bits 4:0, SDM A.6: L1's timer
        // counts at the rate it reads, emulated in TSC terms); exits store
        // EFER.LMA in "IA-32e mode guest" (bit 5: nvmx does, as every CPU
        // with unrestricted guest); activity state HLT; the CPU's number of
        // CR3 targets (bits 24:16); VMWRITE to exit-information fields when
        // the CPU allows it (bit 29).
        IA32_VMX_MISC => host.misc & (0x1F | (1 << 5) | (1 << 6) | (0x1FF << 16) | (1 << 29)),
        IA32_VMX_CR0_FIXED0 => host.cr0_fixed0,
        IA32_VMX_CR0_FIXED1 => host.cr0_fixed1,
        IA32_VMX_CR4_FIXED0 => host.cr4_fixed0,
        IA32_VMX_CR4_FIXED1 => host.cr4_fixed1,
        IA32_VMX_VMCS_ENUM => u64::from(crate::field::highest_index()) << 1,
        // Walk length 4, WB, 2 MiB pages, INVEPT single/all, INVVPID all
        // four types; EPT accessed/dirty flags (bit 21) where the CPU has
        // them (L0 sets them in EPT1-2 while it fills EPT0-2, and needs
        // them in EPT0-2 for L2's paging-structure accesses, SDM 29.3.5).
        IA32_VMX_EPT_VPID_CAP => {
            (1 << 6) | (1 << 14) | (1 << 16) | (1 << 20) | (1 << 25) | (1 << 26) | (1 << 32) | (0xF << 40)
                | (host.ept_vpid & (1 << 21))
        }
        _ => return None,
    })
}

/// SDM 27.2.1.3, the VM-entry interruption-information field when it is
/// valid: reserved bits, a type nvmx offers with a vector that fits it, the
/// deliver-error-code bit exactly for the exceptions that push one (not
/// required with unrestricted guest and CR0.PE=0), an error code of 16 bits
/// and an instruction length of 1-15 for software events.
fn check_event_injection(get: &impl Fn(F) -> u64) -> Result<(), &'static str> {
    let info = get(F::VM_ENTRY_INTR_INFO_FIELD) as u32;
    if info & (1 << 31) == 0 {
        return Ok(());
    }
    let (vector, kind, deliver) = (info & 0xFF, (info >> 8) & 7, info & (1 << 11) != 0);
    let proc = get(F::CPU_BASED_VM_EXEC_CONTROL) as u32;
    let proc2 = if proc & proc1::SECONDARY_CONTROLS != 0 { get(F::SECONDARY_VM_EXEC_CONTROL) as u32 } else { 0 };
    let real_mode = proc2 & proc2::UNRESTRICTED_GUEST != 0 && get(F::GUEST_CR0) & 1 == 0;
    let pushes = kind == 3 && matches!(vector, 8 | 10..=14 | 17);
    if info & 0x7FFF_F000 != 0 {
        Err("VM-entry interruption information: reserved bits 30:12 set")
    } else if matches!(kind, 1 | 7) {
        Err("VM-entry interruption information: reserved event type (1) or other event (7, not offered)")
    } else if kind == 2 && vector != 2 {
        Err("VM-entry interruption information: an NMI must have vector 2")
    } else if kind == 3 && vector > 31 {
        Err("VM-entry interruption information: a hardware exception above vector 31")
    } else if deliver != (pushes && !real_mode) {
        Err("VM-entry interruption information: deliver-error-code does not match the event")
    } else if deliver && get(F::VM_ENTRY_EXCEPTION_ERROR_CODE) & 0xFFFF_8000 != 0 {
        Err("VM-entry exception error code: bits 31:15 must be 0")
    } else if matches!(kind, 4..=6) && !(1..=15).contains(&(get(F::VM_ENTRY_INSTRUCTION_LEN) & 0xFFFF_FFFF)) {
        Err("VM-entry instruction length must be 1-15 for a software event")
    } else {
        Ok(())
    }
}

/// What the VM-entry checks need to know of the CPU and of L1 beyond vmcs12.
#[derive(Clone, Copy, Debug)]
pub struct Env {
    /// The physical-address width L1 sees (CPUID.80000008H:EAX[7:0]):
    /// addresses in vmcs12 must fit in it.
    pub phys_bits: u32,
    /// L1 executes VMLAUNCH/VMRESUME in IA-32e mode (its EFER.LMA).
    pub l1_long_mode: bool,
}

/// SDM 27.2.1.1 checks on vmcs12's controls against what nvmx advertises
/// (error 7).
pub fn check_controls(get: impl Fn(F) -> u64, l1_caps: impl Fn(u32) -> u64, env: &Env) -> Result<(), &'static str> {
    let beyond = |a: u64| a >> env.phys_bits != 0;
    use crate::caps::*;
    for (f, msr) in [
        (F::PIN_BASED_VM_EXEC_CONTROL, IA32_VMX_TRUE_PINBASED_CTLS),
        (F::CPU_BASED_VM_EXEC_CONTROL, IA32_VMX_TRUE_PROCBASED_CTLS),
        (F::VM_EXIT_CONTROLS, IA32_VMX_TRUE_EXIT_CTLS),
        (F::VM_ENTRY_CONTROLS, IA32_VMX_TRUE_ENTRY_CTLS),
    ] {
        let caps = l1_caps(msr);
        let (a0, a1) = (caps as u32, (caps >> 32) as u32);
        let v = get(f) as u32;
        if v & a0 != a0 {
            return Err(match f {
                F::PIN_BASED_VM_EXEC_CONTROL => "pin-based controls: a must-be-1 bit is 0",
                F::CPU_BASED_VM_EXEC_CONTROL => "processor-based controls: a must-be-1 bit is 0",
                F::VM_EXIT_CONTROLS => "VM-exit controls: a must-be-1 bit is 0",
                _ => "VM-entry controls: a must-be-1 bit is 0",
            });
        }
        if v & !a1 != 0 {
            return Err(match f {
                F::PIN_BASED_VM_EXEC_CONTROL => "pin-based controls: a bit set that is not allowed",
                F::CPU_BASED_VM_EXEC_CONTROL => "processor-based controls: a bit set that is not allowed",
                F::VM_EXIT_CONTROLS => "VM-exit controls: a bit set that is not allowed",
                _ => "VM-entry controls: a bit set that is not allowed",
            });
        }
    }
    let proc = get(F::CPU_BASED_VM_EXEC_CONTROL) as u32;
    // SDM 27.2.1.1: virtual NMIs need NMI exiting, NMI-window exiting
    // needs virtual NMIs.
    let pin12 = get(F::PIN_BASED_VM_EXEC_CONTROL) as u32;
    if pin12 & pin::VIRTUAL_NMIS != 0 && pin12 & pin::NMI_EXITING == 0 {
        return Err("virtual NMIs without NMI exiting (SDM 27.2.1.1)");
    }
    if proc & proc1::NMI_WINDOW_EXITING != 0 && pin12 & pin::VIRTUAL_NMIS == 0 {
        return Err("NMI-window exiting without virtual NMIs (SDM 27.2.1.1)");
    }
    // SDM 27.2.1.1: bitmaps 4 KiB aligned within the physical-address
    // width (addresses beyond L1's memory are caught when L0 reads them).
    let (io_a, io_b, msr) = (get(F::IO_BITMAP_A), get(F::IO_BITMAP_B), get(F::MSR_BITMAP));
    if proc & proc1::USE_IO_BITMAPS != 0 && ((io_a | io_b) & 0xFFF != 0 || beyond(io_a) || beyond(io_b)) {
        return Err("I/O bitmap address not 4 KiB aligned or too high");
    }
    if proc & proc1::USE_MSR_BITMAPS != 0 && (msr & 0xFFF != 0 || beyond(msr)) {
        return Err("MSR bitmap address not 4 KiB aligned or too high");
    }
    // SDM 27.2.1.1, "use TPR shadow" (no virtual-interrupt delivery is
    // offered): the virtual-APIC page 4 KiB aligned within the width, TPR
    // threshold bits 31:4 clear. The threshold against VTPR reads memory:
    // `check_tpr_threshold`.
    if proc & proc1::USE_TPR_SHADOW != 0 {
        let vapic = get(F::VIRTUAL_APIC_PAGE_ADDR);
        if vapic & 0xFFF != 0 || beyond(vapic) {
            return Err("virtual-APIC address not 4 KiB aligned or too high (SDM 27.2.1.1)");
        }
        if get(F::TPR_THRESHOLD) & 0xFFFF_FFF0 != 0 {
            return Err("TPR threshold: bits 31:4 must be 0 (SDM 27.2.1.1)");
        }
    }
    // SDM 27.2.1.2-27.2.1.3: MSR lists 16-byte aligned, inside the
    // physical-address space, when their count is not zero.
    for (addr, count, what) in [
        (F::VM_EXIT_MSR_STORE_ADDR, F::VM_EXIT_MSR_STORE_COUNT, "VM-exit MSR-store address misaligned or too high"),
        (F::VM_EXIT_MSR_LOAD_ADDR, F::VM_EXIT_MSR_LOAD_COUNT, "VM-exit MSR-load address misaligned or too high"),
        (F::VM_ENTRY_MSR_LOAD_ADDR, F::VM_ENTRY_MSR_LOAD_COUNT, "VM-entry MSR-load address misaligned or too high"),
    ] {
        let (a, n) = (get(addr), get(count) & 0xFFFF_FFFF);
        if n != 0 && (a & 0xF != 0 || beyond(a) || beyond(a + n * 16 - 1)) {
            return Err(what);
        }
    }
    // SDM 27.2.1.1: "save VMX-preemption timer value" only with the timer active.
    if get(F::VM_EXIT_CONTROLS) as u32 & exitc::SAVE_PREEMPTION_TIMER != 0
        && get(F::PIN_BASED_VM_EXEC_CONTROL) as u32 & pin::PREEMPTION_TIMER == 0
    {
        return Err("save VMX-preemption timer value without the timer activated");
    }
    // SDM 27.2.1.1: no more CR3 targets than IA32_VMX_MISC[24:16] offers.
    if get(F::CR3_TARGET_COUNT) & 0xFFFF_FFFF > (l1_caps(IA32_VMX_MISC) >> 16) & 0x1FF {
        return Err("CR3-target count above what IA32_VMX_MISC offers");
    }
    check_event_injection(&get)?;
    if proc & proc1::SECONDARY_CONTROLS != 0 {
        let caps = l1_caps(IA32_VMX_PROCBASED_CTLS2);
        let v = get(F::SECONDARY_VM_EXEC_CONTROL) as u32;
        if v & !((caps >> 32) as u32) != 0 {
            return Err("secondary controls: a bit set that is not allowed");
        }
        let ad = l1_caps(IA32_VMX_EPT_VPID_CAP) & (1 << 21) != 0;
        if v & proc2::ENABLE_EPT != 0 && !eptp_valid(get(F::EPT_POINTER), env.phys_bits, ad) {
            return Err("EPT pointer: not WB with walk length 4, or reserved bits set");
        }
        if v & proc2::ENABLE_VPID != 0 && get(F::VIRTUAL_PROCESSOR_ID) == 0 {
            return Err("VPID enabled with VPID 0");
        }
        if v & proc2::UNRESTRICTED_GUEST != 0 && v & proc2::ENABLE_EPT == 0 {
            return Err("unrestricted guest without EPT");
        }
        // SDM 27.2.1.1: with "virtualize APIC accesses", the APIC-access
        // address 4 KiB aligned within the physical-address width.
        let apic = get(F::APIC_ACCESS_ADDR);
        if v & proc2::VIRTUALIZE_APIC_ACCESSES != 0 && (apic & 0xFFF != 0 || beyond(apic)) {
            return Err("APIC-access address not 4 KiB aligned or too high (SDM 27.2.1.1)");
        }
        crate::shadow12::check_bitmaps(&get, env.phys_bits)?;
    }
    Ok(())
}

/// SDM 27.2.1.1: with "use TPR shadow" (and neither APIC-access
/// virtualization nor virtual-interrupt delivery, not offered), TPR
/// threshold bits 3:0 must not exceed bits 7:4 of VTPR, the byte at offset
/// 0x80 of the virtual-APIC page (`vtpr`). Error 7, like the other control
/// checks; run on every entry, because L2 changes VTPR without a VMWRITE.
pub fn check_tpr_threshold(get: impl Fn(F) -> u64, vtpr: u8) -> Result<(), &'static str> {
    let proc = get(F::CPU_BASED_VM_EXEC_CONTROL) as u32;
    if proc & proc1::USE_TPR_SHADOW != 0 && get(F::TPR_THRESHOLD) & 0xF > u64::from(vtpr >> 4) {
        return Err("TPR threshold above VTPR bits 7:4 (SDM 27.2.1.1)");
    }
    Ok(())
}

/// SDM 27.2.2-27.2.4 checks on vmcs12's host state (error 8), the ones L0
/// relies on when it loads that state into L1.
pub fn check_host_state(
    get: impl Fn(F) -> u64,
    (cr0_f0, cr0_f1): (u64, u64),
    (cr4_f0, cr4_f1): (u64, u64),
    env: &Env,
) -> Result<(), &'static str> {
    let cr0 = get(F::HOST_CR0);
    let cr4 = get(F::HOST_CR4);
    let exit = get(F::VM_EXIT_CONTROLS) as u32;
    let host64 = u64::from(exit & exitc::HOST_ADDRESS_SPACE_SIZE != 0);
    let efer_lm = get(F::HOST_IA32_EFER) & (EFER_LMA | EFER_LME);
    let canonical = |v: u64| (v as i64) << 16 >> 16 == v as i64;
    let selectors = [F::HOST_CS_SELECTOR, F::HOST_SS_SELECTOR, F::HOST_DS_SELECTOR, F::HOST_ES_SELECTOR, F::HOST_FS_SELECTOR, F::HOST_GS_SELECTOR, F::HOST_TR_SELECTOR];
    let addresses = [F::HOST_RIP, F::HOST_FS_BASE, F::HOST_GS_BASE, F::HOST_GDTR_BASE, F::HOST_IDTR_BASE, F::HOST_TR_BASE];
    let ia32e_guest = get(F::VM_ENTRY_CONTROLS) as u32 & crate::controls::entry::IA32E_MODE_GUEST != 0;
    let rip = get(F::HOST_RIP);
    if env.l1_long_mode && host64 == 0 {
        Err("host address-space size must be 1 when L1 runs in IA-32e mode (SDM 27.2.4)")
    } else if !env.l1_long_mode && (host64 == 1 || ia32e_guest) {
        Err("host address-space size and IA-32e mode guest must be 0 outside IA-32e mode (SDM 27.2.4)")
    } else if cr0 & cr0_f0 != cr0_f0 || cr0 & !cr0_f1 != 0 {
        Err("host CR0: VMX fixed bits (SDM 27.2.2)")
    } else if cr4 & cr4_f0 != cr4_f0 || cr4 & !cr4_f1 != 0 {
        Err("host CR4: VMX fixed bits (SDM 27.2.2)")
    } else if get(F::HOST_CR3) >> env.phys_bits != 0 {
        Err("host CR3: bits beyond the physical-address width (SDM 27.2.2)")
    } else if get(F::HOST_CS_SELECTOR) & 0xFFF8 == 0 || get(F::HOST_TR_SELECTOR) & 0xFFF8 == 0 {
        Err("host CS or TR selector is null (SDM 27.2.3)")
    } else if host64 == 0 && get(F::HOST_SS_SELECTOR) & 0xFFF8 == 0 {
        Err("host SS selector is null with a 32-bit host (SDM 27.2.3)")
    } else if selectors.iter().any(|f| get(*f) & 7 != 0) {
        Err("host selector with RPL or TI set (SDM 27.2.3)")
    } else if !addresses.iter().all(|f| canonical(get(*f))) {
        Err("host RIP or base address not canonical (SDM 27.2.3-27.2.4)")
    } else if host64 == 1 && cr4 & (1 << 5) == 0 {
        Err("host CR4.PAE must be 1 with a 64-bit host (SDM 27.2.4)")
    } else if host64 == 0 && (rip >> 32 != 0 || cr4 & (1 << 17) != 0) {
        Err("host RIP bits 63:32 and CR4.PCIDE must be 0 with a 32-bit host (SDM 27.2.4)")
    } else if exit & exitc::LOAD_PAT != 0 && !pat_valid(get(F::HOST_IA32_PAT)) {
        Err("host IA32_PAT: a memory type that is not 0, 1, 4, 5, 6 or 7 (SDM 27.2.2)")
    } else if exit & exitc::LOAD_EFER != 0 && get(F::HOST_IA32_EFER) & !EFER_ALLOWED != 0 {
        Err("host IA32_EFER: reserved bits set (SDM 27.2.2)")
    } else if exit & exitc::LOAD_EFER != 0 && efer_lm != host64 * (EFER_LMA | EFER_LME) {
        Err("host IA32_EFER: LMA and LME must equal the host address-space size (SDM 27.2.2)")
    } else {
        Ok(())
    }
}

/// An EPT pointer nvmx accepts (SDM 25.6.11): WB, walk length 4,
/// accessed/dirty flags (bit 6) only when offered (`ad`, IA32_VMX_EPT_VPID_CAP
/// bit 21), bits 11:7 and above the physical-address width clear.
pub fn eptp_valid(eptp: u64, phys_bits: u32, ad: bool) -> bool {
    let low = eptp & 0xFFF;
    (low == 0x1E || (ad && low == 0x5E)) && eptp >> phys_bits == 0
}

/// Bits of IA32_EFER software may set: SCE, LME, LMA, NXE (SDM Vol. 3A 2.2.1).
const EFER_ALLOWED: u64 = 0xD01;

/// Every byte of a PAT value is a valid memory type (SDM Vol. 3A 12.12.2).
pub fn pat_valid(pat: u64) -> bool {
    pat.to_le_bytes().iter().all(|b| matches!(b, 0 | 1 | 4 | 5 | 6 | 7))
}

/// Whether WRMSR of `value` faults (#GP) for the MSRs whose values L0
/// keeps in VMCS0-1 rather than in the CPU: IA32_EFER reserved bits, or LME
/// changed while CR0.PG = 1 (`paging`; SDM Vol. 3A 2.2.1, 10.8.5); an
/// IA32_PAT entry that is no memory type (12.12.2); IA32_DEBUGCTL reserved
/// bits (19.4.1). `old` is the MSR's current value. Without this a value
/// the CPU would refuse reaches the guest-state area and the next VM entry
/// fails instead of the WRMSR.
pub fn wrmsr_value_faults(msr: u32, value: u64, old: u64, paging: bool) -> bool {
    match msr {
        0xC000_0080 => value & !EFER_ALLOWED != 0 || (paging && (value ^ old) & EFER_LME != 0),
        0x277 => !pat_valid(value),
        0x1D9 => value & crate::guest_state::DEBUGCTL_RESERVED != 0,
        _ => false,
    }
}

/// The operand checks of INVEPT and INVVPID (SDM 32.3 "INVEPT" and
/// "INVVPID", each "Operation"), for the types nvmx advertises: `Err(())`
/// is VMfailValid(28). `desc` is the 128-bit descriptor; `ept_ad`: EPT
/// accessed/dirty flags are offered (an EPTP may have bit 6).
pub fn check_invalidation(invept: bool, kind: u64, desc: [u64; 2], phys_bits: u32, ept_ad: bool) -> Result<(), ()> {
    let canonical = |v: u64| (v as i64) << 16 >> 16 == v as i64;
    if invept {
        // Single-context needs a valid EPTP.
        match kind {
            1 if eptp_valid(desc[0], phys_bits, ept_ad) => Ok(()),
            2 => Ok(()),
            _ => Err(()),
        }
    } else {
        let vpid = desc[0];
        match kind {
            _ if vpid >> 16 != 0 => Err(()),
            0 if vpid == 0 || !canonical(desc[1]) => Err(()),
            1 | 3 if vpid == 0 => Err(()),
            0..=3 => Ok(()),
            _ => Err(()),
        }
    }
}

/// Whether a VM exit saves guest-state field `f` into the VMCS (SDM 28.3):
/// most of them always, DR7/DEBUGCTL, PAT and EFER only under their "save"
/// exit controls (`exit` is vmcs12's), the PDPTEs only for a PAE guest with
/// EPT (`pae_with_ept`), and never the VMCS link pointer or the fields of
/// features nvmx does not offer (PERF_GLOBAL_CTRL, BNDCFGS, SMBASE,
/// interrupt status, PML index). The preemption-timer value is not copied
/// from VMCS0-2 (which holds L0's composed value): L0 stores vmcs12's own
/// remaining count under "save VMX-preemption timer value".
pub fn saved_on_exit(f: F, exit: u32, pae_with_ept: bool) -> bool {
    use crate::field::Group;
    match f {
        F::GUEST_DR7 | F::GUEST_IA32_DEBUGCTL => exit & exitc::SAVE_DEBUG_CONTROLS != 0,
        F::GUEST_IA32_PAT => exit & exitc::SAVE_PAT != 0,
        F::GUEST_IA32_EFER => exit & exitc::SAVE_EFER != 0,
        F::GUEST_PDPTR0 | F::GUEST_PDPTR1 | F::GUEST_PDPTR2 | F::GUEST_PDPTR3 => pae_with_ept,
        F::VMCS_LINK_POINTER
        | F::VMX_PREEMPTION_TIMER_VALUE
        | F::GUEST_IA32_PERF_GLOBAL_CTRL
        | F::GUEST_BNDCFGS
        | F::GUEST_SMBASE
        | F::GUEST_INTR_STATUS
        | F::GUEST_PML_INDEX => false,
        _ => f.group() == Group::GuestState,
    }
}

/// L1's VMX-preemption timer while L2 runs (SDM 26.5.1, 27.7.4, 28.3.4;
/// KVM's nested preemption-timer emulation), in timer ticks at the rate L1
/// reads in IA32_VMX_MISC[4:0] (the CPU's). L0 runs VMCS0-2 with the
/// smaller of its own need and what is left of vmcs12's count; the count
/// goes down by the L2 time that passed — what VMCS0-2's own "save
/// VMX-preemption timer value" reports, so L0's handling of exits L1 never
/// sees does not count (to L1 that time does not exist; on the CPU the
/// timer counts only in VMX non-root operation).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PreemptTimer12 {
    /// Timer ticks of L2 time left.
    pub left: u64,
    /// What VMCS0-2's timer was set to at the last entry.
    pub programmed: u64,
    /// The CPU's timer was set from vmcs12's count at the last entry (not
    /// from L0's smaller need): its exit 52 is L1's.
    pub armed: bool,
}

impl PreemptTimer12 {
    /// Loaded from vmcs12's value field at an emulated VM entry.
    pub fn load(value: u32) -> Self {
        PreemptTimer12 { left: u64::from(value), programmed: 0, armed: false }
    }

    /// The value for VMCS0-2 at this entry: vmcs12's remaining count or
    /// L0's `l0_ticks`, whichever is smaller (equal: L1's).
    pub fn compose(&mut self, l0_ticks: u64) -> u64 {
        self.armed = self.left <= l0_ticks;
        self.programmed = self.left.min(l0_ticks);
        self.programmed
    }

    /// After VMCS0-2 exited with `reason` and its timer left at
    /// `remaining` (what the CPU saved): whether the exit is L1's timer
    /// running out (then nothing is left).
    pub fn exited(&mut self, remaining: u64, reason: u16) -> bool {
        if reason == 52 && self.armed {
            self.left = 0;
            return true;
        }
        self.left = self.left.saturating_sub(self.programmed.saturating_sub(remaining));
        false
    }

    /// What "save VMX-preemption timer value" stores in vmcs12 (SDM 28.3.4).
    pub fn saved(&self) -> u32 {
        self.left.min(u64::from(u32::MAX)) as u32
    }
}

/// What the CPU reported for an L2 exit, as far as the reflection
/// decision needs it.
#[derive(Clone, Copy, Debug, Default)]
pub struct L2ExitInfo {
    /// Basic exit reason.
    pub reason: u16,
    pub qualification: u64,
    /// VM-exit interruption information and error code (reason 0).
    pub intr_info: u32,
    pub intr_error: u32,
}

/// How sync_vmcs02_to_vmcs12 treats vmcs12's guest fields on a reflected
/// exit with vmcs12's exit controls `exit` (SDM 28.3).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ExitSync {
    /// Saved on exit, read at once: [`crate::guest_state::VOLATILE`], what
    /// L1 reads on nearly every exit and the next VMRESUME checks.
    pub eager: FieldSet,
    /// Saved on exit, left in VMCS0-2 until L0 needs vmcs12's copy (an
    /// emulated VMREAD/VMWRITE, VMCLEAR, VMPTRLD, a full entry check, a
    /// dump) — KVM's sync_vmcs02_to_vmcs12_rare.
    pub lazy: FieldSet,
    /// Not saved: vmcs12 keeps its value, VMCS0-2 gets it again on entry.
    pub unsaved: FieldSet,
}

/// The three sets for exit controls `exit` and `pae_with_ept` (see [`saved_on_exit`]).
pub fn exit_sync(exit: u32, pae_with_ept: bool) -> ExitSync {
    let (mut saved, mut unsaved) = (FieldSet::EMPTY, FieldSet::EMPTY);
    for &f in crate::field::ALL.iter().filter(|f| f.group() == crate::field::Group::GuestState) {
        if saved_on_exit(f, exit, pae_with_ept) {
            saved.insert(f);
        } else {
            unsaved.insert(f);
        }
    }
    let eager = crate::guest_state::VOLATILE;
    ExitSync { eager, lazy: saved.minus(eager), unsaved }
}

/// Whether L1 asked for an L2 exit (KVM's nested_vmx_l1_wants_exit and
/// nested_vmx_exit_handled_cr; SDM 26.1-26.2 for what each control makes
/// exit), decided from vmcs12 alone for every reason: L0 may see exits L1
/// never asked for (VMCS0-2's CR0/CR4 masks carry the VMX-fixed bits, its
/// controls L0's own), and those must not reach L1. `gpr(n)` reads L2's
/// general-purpose register n (RCX for RDMSR/WRMSR, the source of MOV to
/// CR); `bitmap_bit(gpa, n)` reads bit `n` of L1's bitmap at `gpa`.
pub fn l1_wants_exit(
    exit: &L2ExitInfo,
    gpr: impl Fn(u8) -> u64,
    get: impl Fn(F) -> u64,
    bitmap_bit: impl Fn(u64, u64) -> bool,
) -> bool {
    let pin12 = get(F::PIN_BASED_VM_EXEC_CONTROL) as u32;
    let proc12 = get(F::CPU_BASED_VM_EXEC_CONTROL) as u32;
    let proc2_12 = if proc12 & proc1::SECONDARY_CONTROLS != 0 { get(F::SECONDARY_VM_EXEC_CONTROL) as u32 } else { 0 };
    let qualification = exit.qualification;
    match exit.reason {
        // SDM 26.2: NMIs by "NMI exiting"; exceptions by the exception
        // bitmap, #PF also by the error-code mask/match (26.2, "Exceptions").
        0 => {
            let (vector, kind) = (exit.intr_info & 0xFF, (exit.intr_info >> 8) & 7);
            if kind == 2 {
                return pin12 & pin::NMI_EXITING != 0;
            }
            let bit = get(F::EXCEPTION_BITMAP) >> vector.min(31) & 1 != 0;
            if vector == 14 {
                let (mask, want) = (get(F::PAGE_FAULT_ERROR_CODE_MASK) as u32, get(F::PAGE_FAULT_ERROR_CODE_MATCH) as u32);
                bit == (exit.intr_error & mask == want)
            } else {
                bit
            }
        }
        1 => pin12 & pin::EXTERNAL_INTERRUPT_EXITING != 0,
        7 => proc12 & proc1::INTERRUPT_WINDOW_EXITING != 0,
        8 => proc12 & proc1::NMI_WINDOW_EXITING != 0,
        12 => proc12 & proc1::HLT_EXITING != 0,
        14 => proc12 & proc1::INVLPG_EXITING != 0,
        15 => proc12 & proc1::RDPMC_EXITING != 0,
        16 => proc12 & proc1::RDTSC_EXITING != 0,
        28 => cr_access_wanted(qualification, &gpr, &get, proc12),
        29 => proc12 & proc1::MOV_DR_EXITING != 0,
        30 => {
            if proc12 & proc1::USE_IO_BITMAPS != 0 {
                let io = crate::exit::IoQualification::decode(qualification);
                (0..u64::from(io.size)).any(|i| {
                    // A port range that wraps past 0xFFFF always exits (SDM 26.1.3).
                    let port = u64::from(io.port) + i;
                    port > 0xFFFF || {
                        let map = if port < 0x8000 { get(F::IO_BITMAP_A) } else { get(F::IO_BITMAP_B) };
                        bitmap_bit(map, port & 0x7FFF)
                    }
                })
            } else {
                proc12 & proc1::UNCONDITIONAL_IO_EXITING != 0
            }
        }
        31 | 32 => {
            if proc12 & proc1::USE_MSR_BITMAPS == 0 {
                return true;
            }
            let msr = gpr(1) as u32;
            let base = get(F::MSR_BITMAP) + if exit.reason == 32 { 2048 } else { 0 };
            match msr {
                0..=0x1FFF => bitmap_bit(base, u64::from(msr)),
                0xC000_0000..=0xC000_1FFF => bitmap_bit(base + 1024, u64::from(msr - 0xC000_0000)),
                _ => true,
            }
        }
        36 => proc12 & proc1::MWAIT_EXITING != 0,
        37 => proc12 & proc1::MONITOR_TRAP_FLAG != 0,
        39 => proc12 & proc1::MONITOR_EXITING != 0,
        40 => proc12 & proc1::PAUSE_EXITING != 0 || proc2_12 & proc2::PAUSE_LOOP_EXITING != 0,
        43 => proc12 & proc1::USE_TPR_SHADOW != 0,
        44 => proc2_12 & proc2::VIRTUALIZE_APIC_ACCESSES != 0,
        46 | 47 => proc2_12 & proc2::DESCRIPTOR_TABLE_EXITING != 0,
        // RDTSCP exits with "RDTSC exiting" when it is enabled at all.
        51 => proc12 & proc1::RDTSC_EXITING != 0 && proc2_12 & proc2::ENABLE_RDTSCP != 0,
        // SDM 26.5.1: only with vmcs12's timer active; whether vmcs12's
        // count (not L0's) ran out is the caller's to say.
        52 => pin12 & pin::PREEMPTION_TIMER != 0,
        54 => proc2_12 & proc2::WBINVD_EXITING != 0,
        57 => proc2_12 & proc2::RDRAND_EXITING != 0,
        // INVPCID exits with "INVLPG exiting" when it is enabled at all.
        58 => proc12 & proc1::INVLPG_EXITING != 0 && proc2_12 & proc2::ENABLE_INVPCID != 0,
        61 => proc2_12 & proc2::RDSEED_EXITING != 0,
        62 => proc2_12 & proc2::ENABLE_PML != 0,
        63 | 64 => proc2_12 & proc2::ENABLE_XSAVES != 0,
        // Unconditional exits (triple fault, INIT, SIPI, task switch,
        // CPUID, GETSEC, INVD, VMX instructions, XSETBV, VMFUNC, ...).
        _ => true,
    }
}

/// SDM 26.1.3 for a control-register access of L2 (exit qualification:
/// SDM 28.2.1 table 28-3): MOV to CR0/CR4 when a bit L1 owns (its
/// guest/host mask) differs from its read shadow; CLTS when L1 owns TS with
/// a shadow TS of 1; LMSW on bits 3:0 likewise (PE only from 0 to 1); MOV
/// to/from CR3 and CR8 by their exiting controls (a MOV to CR3 of one of
/// the first CR3-target-count target values does not exit).
fn cr_access_wanted(q: u64, gpr: &impl Fn(u8) -> u64, get: &impl Fn(F) -> u64, proc12: u32) -> bool {
    let (cr, kind, reg) = (q & 0xF, (q >> 4) & 3, ((q >> 8) & 0xF) as u8);
    let owned = |mask: F, shadow: F, value: u64| (value ^ get(shadow)) & get(mask) != 0;
    match (kind, cr) {
        (0, 0) => owned(F::CR0_GUEST_HOST_MASK, F::CR0_READ_SHADOW, gpr(reg)),
        (0, 4) => owned(F::CR4_GUEST_HOST_MASK, F::CR4_READ_SHADOW, gpr(reg)),
        (0, 3) => {
            let value = gpr(reg);
            let count = (get(F::CR3_TARGET_COUNT) & 0xFFFF_FFFF).min(4);
            let targets = [F::CR3_TARGET_VALUE0, F::CR3_TARGET_VALUE1, F::CR3_TARGET_VALUE2, F::CR3_TARGET_VALUE3];
            proc12 & proc1::CR3_LOAD_EXITING != 0 && !targets[..count as usize].iter().any(|t| get(*t) == value)
        }
        (0, 8) => proc12 & proc1::CR8_LOAD_EXITING != 0,
        (1, 3) => proc12 & proc1::CR3_STORE_EXITING != 0,
        (1, 8) => proc12 & proc1::CR8_STORE_EXITING != 0,
        // CLTS.
        (2, _) => get(F::CR0_GUEST_HOST_MASK) & get(F::CR0_READ_SHADOW) & 8 != 0,
        // LMSW: the source operand is in bits 31:16.
        (3, _) => {
            let (mask, shadow, src) = (get(F::CR0_GUEST_HOST_MASK), get(F::CR0_READ_SHADOW), q >> 16);
            (mask & 0xE & (shadow ^ src) != 0) || (mask & 1 != 0 && src & 1 != 0 && shadow & 1 == 0)
        }
        // MOV from CR0/CR4 never exits; other encodings do not exist.
        _ => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn host() -> VmxCaps {
        VmxCaps {
            basic: 0x2B | (1 << 55),
            pinbased: 0x16 | (0x7F << 32),
            procbased: 0x0401_E172 | (0xFFF9_FFFE << 32),
            exit: 0x36DFF | (0x3FFFFF << 32),
            entry: 0x11FF | (0xFFFF << 32),
            procbased2: 0xFFFF << 32,
            cr0_fixed0: 0x8000_0021,
            cr0_fixed1: 0xFFFF_FFFF,
            cr4_fixed0: 0x2000,
            cr4_fixed1: 0x3F_FFFF,
            ..VmxCaps::NONE
        }
    }

    /// A vmcs12 with every must-be-1 control bit and a valid 64-bit host state.
    fn good() -> HashMap<F, u64> {
        let h = host();
        let caps = |m| l1_vmx_msr(&h, m).unwrap() as u32 as u64;
        use crate::caps::*;
        HashMap::from([
            (F::PIN_BASED_VM_EXEC_CONTROL, caps(IA32_VMX_TRUE_PINBASED_CTLS)),
            (F::CPU_BASED_VM_EXEC_CONTROL, caps(IA32_VMX_TRUE_PROCBASED_CTLS)),
            (F::VM_EXIT_CONTROLS, caps(IA32_VMX_TRUE_EXIT_CTLS) | u64::from(exitc::HOST_ADDRESS_SPACE_SIZE)),
            (F::VM_ENTRY_CONTROLS, caps(IA32_VMX_TRUE_ENTRY_CTLS)),
            (F::HOST_CR0, 0x8000_0031),
            (F::HOST_CR4, 0x2020),
            (F::HOST_CS_SELECTOR, 0x08),
            (F::HOST_TR_SELECTOR, 0x18),
            (F::HOST_SS_SELECTOR, 0x10),
            (F::HOST_RIP, 0x10_1000),
        ])
    }

    const ENV: Env = Env { phys_bits: 40, l1_long_mode: true };

    fn checks(v: &HashMap<F, u64>) -> (Result<(), &'static str>, Result<(), &'static str>) {
        let h = host();
        let get = |f| v.get(&f).copied().unwrap_or(0);
        (
            check_controls(get, |m| l1_vmx_msr(&h, m).unwrap_or(0), &ENV),
            check_host_state(get, h.cr0_fixed(), h.cr4_fixed(), &ENV),
        )
    }

    #[test]
    fn advertised_capabilities() {
        let h = host();
        let basic = l1_vmx_msr(&h, crate::caps::IA32_VMX_BASIC).unwrap();
        assert_eq!(basic as u32, VMCS12_REVISION);
        assert_ne!(basic & (1 << 55), 0, "true controls");
        let p2 = l1_vmx_msr(&h, crate::caps::IA32_VMX_PROCBASED_CTLS2).unwrap() >> 32;
        assert_ne!(p2 as u32 & proc2::ENABLE_EPT, 0);
        assert_ne!(p2 as u32 & proc2::VMCS_SHADOWING, 0, "shadowing is offered where the CPU has it");
        let ivy = VmxCaps { procbased2: u64::from(0xFFFF & !proc2::VMCS_SHADOWING) << 32, ..h };
        let p2 = l1_vmx_msr(&ivy, crate::caps::IA32_VMX_PROCBASED_CTLS2).unwrap() >> 32;
        assert_eq!(p2 as u32 & proc2::VMCS_SHADOWING, 0, "and only there");
        assert_eq!(l1_vmx_msr(&h, crate::caps::IA32_VMX_VMFUNC), None);
    }

    /// EPT accessed/dirty flags: offered exactly when the CPU has them
    /// (bit 21), and an EPTP with bit 6 accepted exactly then.
    #[test]
    fn ept_ad_offered_with_the_cpu() {
        use crate::caps::IA32_VMX_EPT_VPID_CAP;
        let without = host();
        let with = VmxCaps { ept_vpid: 1 << 21, ..host() };
        assert_eq!(l1_vmx_msr(&without, IA32_VMX_EPT_VPID_CAP).unwrap() & (1 << 21), 0);
        assert_ne!(l1_vmx_msr(&with, IA32_VMX_EPT_VPID_CAP).unwrap() & (1 << 21), 0);
        let mut v = good();
        *v.get_mut(&F::CPU_BASED_VM_EXEC_CONTROL).unwrap() |= u64::from(proc1::SECONDARY_CONTROLS);
        v.insert(F::SECONDARY_VM_EXEC_CONTROL, u64::from(proc2::ENABLE_EPT));
        let c = |h: &VmxCaps, eptp: u64| {
            let mut v = v.clone();
            v.insert(F::EPT_POINTER, eptp);
            check_controls(|f| v.get(&f).copied().unwrap_or(0), |m| l1_vmx_msr(h, m).unwrap_or(0), &ENV)
        };
        assert_eq!(c(&with, 0x5000 | 0x1E), Ok(()));
        assert_eq!(c(&with, 0x5000 | 0x5E), Ok(()));
        assert!(c(&without, 0x5000 | 0x5E).is_err(), "bit 6 not offered");
        assert!(c(&with, 0x5000 | 0xDE).is_err(), "bit 7 reserved");
        assert!(eptp_valid(0x5000 | 0x5E, 40, true) && !eptp_valid(0x5000 | 0x5E, 40, false));
    }

    /// Virtualize APIC accesses: offered where the CPU has it, and the
    /// APIC-access address checked only with the control set.
    #[test]
    fn apic_access_address_checks() {
        let h = host();
        let p2 = (l1_vmx_msr(&h, crate::caps::IA32_VMX_PROCBASED_CTLS2).unwrap() >> 32) as u32;
        assert_ne!(p2 & proc2::VIRTUALIZE_APIC_ACCESSES, 0);
        let none = VmxCaps { procbased2: 0xFFFE << 32, ..host() };
        let p2 = (l1_vmx_msr(&none, crate::caps::IA32_VMX_PROCBASED_CTLS2).unwrap() >> 32) as u32;
        assert_eq!(p2 & proc2::VIRTUALIZE_APIC_ACCESSES, 0, "not offered without the CPU's");
        let mut v = good();
        *v.get_mut(&F::CPU_BASED_VM_EXEC_CONTROL).unwrap() |= u64::from(proc1::SECONDARY_CONTROLS);
        v.insert(F::SECONDARY_VM_EXEC_CONTROL, u64::from(proc2::VIRTUALIZE_APIC_ACCESSES));
        let c = |apic: u64, v: &HashMap<F, u64>| {
            let mut v = v.clone();
            v.insert(F::APIC_ACCESS_ADDR, apic);
            check_controls(|f| v.get(&f).copied().unwrap_or(0), |m| l1_vmx_msr(&h, m).unwrap_or(0), &ENV)
        };
        let bad = Err("APIC-access address not 4 KiB aligned or too high (SDM 27.2.1.1)");
        assert_eq!(c(0xFEE0_0000, &v), Ok(()));
        assert_eq!(c(0xFEE0_0800, &v), bad);
        assert_eq!(c(1 << 40, &v), bad, "beyond a width of 40");
        v.insert(F::SECONDARY_VM_EXEC_CONTROL, 0);
        assert_eq!(c(0xFEE0_0800, &v), Ok(()), "not checked without the control");
    }

    #[test]
    fn each_entry_check_trips_on_its_own() {
        assert_eq!(checks(&good()), (Ok(()), Ok(())));
        let mut v = good();
        v.insert(F::PIN_BASED_VM_EXEC_CONTROL, 0);
        assert_eq!(checks(&v).0, Err("pin-based controls: a must-be-1 bit is 0"));
        let mut v = good();
        *v.get_mut(&F::PIN_BASED_VM_EXEC_CONTROL).unwrap() |= u64::from(pin::POSTED_INTERRUPTS);
        assert_eq!(checks(&v).0, Err("pin-based controls: a bit set that is not allowed"));
        let mut v = good();
        *v.get_mut(&F::CPU_BASED_VM_EXEC_CONTROL).unwrap() |= u64::from(proc1::SECONDARY_CONTROLS);
        v.insert(F::SECONDARY_VM_EXEC_CONTROL, u64::from(proc2::ENABLE_EPT));
        v.insert(F::EPT_POINTER, 0x1000 | 0x18);
        assert_eq!(checks(&v).0, Err("EPT pointer: not WB with walk length 4, or reserved bits set"));
        v.insert(F::EPT_POINTER, 0x1000 | 0x1E);
        assert_eq!(checks(&v).0, Ok(()));
        v.insert(F::SECONDARY_VM_EXEC_CONTROL, u64::from(proc2::ENABLE_VPID));
        assert_eq!(checks(&v).0, Err("VPID enabled with VPID 0"));
        let mut v = good();
        *v.get_mut(&F::PIN_BASED_VM_EXEC_CONTROL).unwrap() |= u64::from(pin::VIRTUAL_NMIS);
        assert_eq!(checks(&v).0, Err("virtual NMIs without NMI exiting (SDM 27.2.1.1)"));
        *v.get_mut(&F::PIN_BASED_VM_EXEC_CONTROL).unwrap() |= u64::from(pin::NMI_EXITING);
        assert_eq!(checks(&v).0, Ok(()));
        *v.get_mut(&F::CPU_BASED_VM_EXEC_CONTROL).unwrap() |= u64::from(proc1::NMI_WINDOW_EXITING);
        assert_eq!(checks(&v).0, Ok(()));
        *v.get_mut(&F::PIN_BASED_VM_EXEC_CONTROL).unwrap() &= !u64::from(pin::VIRTUAL_NMIS);
        assert_eq!(checks(&v).0, Err("NMI-window exiting without virtual NMIs (SDM 27.2.1.1)"));
        let mut v = good();
        v.insert(F::VM_ENTRY_MSR_LOAD_COUNT, 1);
        v.insert(F::VM_ENTRY_MSR_LOAD_ADDR, 0x5008);
        assert_eq!(checks(&v).0, Err("VM-entry MSR-load address misaligned or too high"));
        v.insert(F::VM_ENTRY_MSR_LOAD_ADDR, 0x5010);
        assert_eq!(checks(&v).0, Ok(()));
        v.insert(F::VM_EXIT_MSR_STORE_COUNT, 2);
        v.insert(F::VM_EXIT_MSR_STORE_ADDR, (1 << 52) - 16);
        assert_eq!(checks(&v).0, Err("VM-exit MSR-store address misaligned or too high"));
        v.insert(F::VM_EXIT_MSR_STORE_COUNT, 0);
        assert_eq!(checks(&v).0, Ok(()), "a count of 0 makes the address irrelevant");
        let mut v = good();
        v.insert(F::VM_ENTRY_INTR_INFO_FIELD, (1 << 31) | (3 << 8) | (1 << 11) | 13);
        v.insert(F::GUEST_CR0, 0x8000_0031);
        assert_eq!(checks(&v).0, Ok(()), "#GP with its error code");
        v.insert(F::VM_ENTRY_INTR_INFO_FIELD, (1 << 31) | (3 << 8) | 13);
        assert_eq!(checks(&v).0, Err("VM-entry interruption information: deliver-error-code does not match the event"));
        v.insert(F::VM_ENTRY_INTR_INFO_FIELD, (1 << 31) | (2 << 8) | 3);
        assert_eq!(checks(&v).0, Err("VM-entry interruption information: an NMI must have vector 2"));
        v.insert(F::VM_ENTRY_INTR_INFO_FIELD, u64::from(u32::MAX));
        assert_eq!(checks(&v).0, Err("VM-entry interruption information: reserved bits 30:12 set"));
        v.insert(F::VM_ENTRY_INTR_INFO_FIELD, (1 << 31) | (4 << 8) | 0x80);
        assert_eq!(checks(&v).0, Err("VM-entry instruction length must be 1-15 for a software event"));
        v.insert(F::VM_ENTRY_INSTRUCTION_LEN, 2);
        assert_eq!(checks(&v).0, Ok(()));
        v.insert(F::CR3_TARGET_COUNT, 5);
        assert_eq!(checks(&v).0, Err("CR3-target count above what IA32_VMX_MISC offers"));
        let mut v = good();
        *v.get_mut(&F::CPU_BASED_VM_EXEC_CONTROL).unwrap() |= u64::from(proc1::USE_MSR_BITMAPS);
        v.insert(F::MSR_BITMAP, 0x7800);
        assert_eq!(checks(&v).0, Err("MSR bitmap address not 4 KiB aligned or too high"));
        v.insert(F::MSR_BITMAP, 1 << 40);
        assert_eq!(checks(&v).0, Err("MSR bitmap address not 4 KiB aligned or too high"));
        let mut v = good();
        v.insert(F::HOST_CR0, 0);
        assert_eq!(checks(&v).1, Err("host CR0: VMX fixed bits (SDM 27.2.2)"));
        let mut v = good();
        v.insert(F::HOST_CR4, 0);
        assert_eq!(checks(&v).1, Err("host CR4: VMX fixed bits (SDM 27.2.2)"));
        let mut v = good();
        v.insert(F::HOST_TR_SELECTOR, 0);
        assert_eq!(checks(&v).1, Err("host CS or TR selector is null (SDM 27.2.3)"));
        let mut v = good();
        v.insert(F::HOST_SS_SELECTOR, 0x13);
        assert_eq!(checks(&v).1, Err("host selector with RPL or TI set (SDM 27.2.3)"));
        let mut v = good();
        *v.get_mut(&F::VM_EXIT_CONTROLS).unwrap() |= u64::from(exitc::LOAD_EFER | exitc::LOAD_PAT);
        v.insert(F::HOST_IA32_PAT, 0x0007_0406_0007_0406);
        v.insert(F::HOST_IA32_EFER, 0xD01);
        assert_eq!(checks(&v).1, Ok(()));
        v.insert(F::HOST_IA32_EFER, 0x401);
        assert_eq!(checks(&v).1, Err("host IA32_EFER: LMA and LME must equal the host address-space size (SDM 27.2.2)"));
        v.insert(F::HOST_IA32_EFER, 0xD01 | (1 << 2));
        assert_eq!(checks(&v).1, Err("host IA32_EFER: reserved bits set (SDM 27.2.2)"));
        v.insert(F::HOST_IA32_PAT, 0x0007_0406_0007_0402);
        assert_eq!(checks(&v).1, Err("host IA32_PAT: a memory type that is not 0, 1, 4, 5, 6 or 7 (SDM 27.2.2)"));
        let mut v = good();
        v.insert(F::HOST_CR3, 1 << 40);
        assert_eq!(checks(&v).1, Err("host CR3: bits beyond the physical-address width (SDM 27.2.2)"));
        let mut v = good();
        *v.get_mut(&F::VM_EXIT_CONTROLS).unwrap() &= !u64::from(exitc::HOST_ADDRESS_SPACE_SIZE);
        assert_eq!(checks(&v).1, Err("host address-space size must be 1 when L1 runs in IA-32e mode (SDM 27.2.4)"));
        let h = host();
        let get = |f| v.get(&f).copied().unwrap_or(0);
        let legacy = Env { phys_bits: 40, l1_long_mode: false };
        assert_eq!(check_host_state(get, h.cr0_fixed(), h.cr4_fixed(), &legacy), Ok(()), "a 32-bit L1 with a 32-bit host");
        let mut v = good();
        v.insert(F::HOST_CR4, 0x2000);
        assert_eq!(checks(&v).1, Err("host CR4.PAE must be 1 with a 64-bit host (SDM 27.2.4)"));
        let mut v = good();
        v.insert(F::HOST_RIP, 0x8000_0000_0000_0000);
        assert_eq!(checks(&v).1, Err("host RIP or base address not canonical (SDM 27.2.3-27.2.4)"));
    }

    #[test]
    fn what_an_exit_saves() {
        assert!(saved_on_exit(F::GUEST_RIP, 0, false));
        assert!(saved_on_exit(F::GUEST_INTERRUPTIBILITY_INFO, 0, false));
        assert!(!saved_on_exit(F::GUEST_IA32_EFER, 0, false));
        assert!(saved_on_exit(F::GUEST_IA32_EFER, exitc::SAVE_EFER, false));
        assert!(!saved_on_exit(F::GUEST_IA32_PAT, exitc::SAVE_EFER, false));
        assert!(!saved_on_exit(F::GUEST_DR7, 0, false));
        assert!(!saved_on_exit(F::VMCS_LINK_POINTER, u32::MAX, true));
        assert!(!saved_on_exit(F::VMX_PREEMPTION_TIMER_VALUE, u32::MAX, true));
        assert!(saved_on_exit(F::GUEST_PDPTR2, 0, true) && !saved_on_exit(F::GUEST_PDPTR2, 0, false));
        assert!(!saved_on_exit(F::HOST_RIP, u32::MAX, true), "not guest state");
    }

    #[test]
    fn invept_and_invvpid_operands() {
        assert_eq!(check_invalidation(true, 1, [0x5000 | 0x1E, 0], 40, false), Ok(()));
        assert_eq!(check_invalidation(true, 1, [0x5000 | 0x18, 0], 40, false), Err(()), "UC is not advertised");
        assert_eq!(check_invalidation(true, 1, [0x5000 | 0x5E, 0], 40, false), Err(()), "accessed/dirty flags not advertised");
        assert_eq!(check_invalidation(true, 1, [0x5000 | 0x5E, 0], 40, true), Ok(()), "accessed/dirty flags advertised");
        assert_eq!(check_invalidation(true, 1, [0x5000 | 0xDE, 0], 40, true), Err(()), "bit 7 stays reserved");
        assert_eq!(check_invalidation(true, 2, [0, 0], 40, false), Ok(()), "all-context ignores the descriptor");
        assert_eq!(check_invalidation(true, 3, [0x1E, 0], 40, false), Err(()));
        assert_eq!(check_invalidation(false, 0, [5, 0x7FFF_FFFF_F000], 40, false), Ok(()));
        assert_eq!(check_invalidation(false, 0, [5, 0x8000_0000_0000], 40, false), Err(()), "not canonical");
        assert_eq!(check_invalidation(false, 0, [0, 0], 40, false), Err(()), "VPID 0");
        assert_eq!(check_invalidation(false, 1, [0, 0], 40, false), Err(()));
        assert_eq!(check_invalidation(false, 3, [0, 0], 40, false), Err(()));
        assert_eq!(check_invalidation(false, 2, [0, 0], 40, false), Ok(()));
        assert_eq!(check_invalidation(false, 2, [1 << 16, 0], 40, false), Err(()), "descriptor bits 63:16");
        assert_eq!(check_invalidation(false, 4, [1, 0], 40, false), Err(()));
    }

    #[test]
    fn wrmsr_values_that_fault() {
        let (efer, pat, debugctl) = (0xC000_0080, 0x277, 0x1D9);
        assert!(!wrmsr_value_faults(efer, 0xD01, 0xD01, true));
        assert!(wrmsr_value_faults(efer, 0xD01 | (1 << 2), 0xD01, true), "EFER bit 2 is reserved");
        assert!(wrmsr_value_faults(efer, 0xC01, 0xD01, true), "LME cleared with paging on");
        assert!(!wrmsr_value_faults(efer, 0x101, 0x001, false), "LME set with paging off");
        assert!(!wrmsr_value_faults(pat, 0x0007_0406_0007_0406, 0, true));
        assert!(wrmsr_value_faults(pat, 0x0007_0406_0007_0402, 0, true), "memory type 2");
        assert!(wrmsr_value_faults(pat, 0x0807_0406_0007_0406, 0, true), "memory type 8");
        assert!(!wrmsr_value_faults(debugctl, 0x3, 0, true), "LBR and BTF");
        assert!(wrmsr_value_faults(debugctl, 1 << 4, 0, true), "DEBUGCTL bit 4 is reserved");
        assert!(!wrmsr_value_faults(0x10, u64::MAX, 0, true), "other MSRs are not judged here");
    }

    #[test]
    fn preemption_timer_composes_with_l0s_need() {
        let mut t = PreemptTimer12::load(100);
        // L0 needs an exit sooner: its value, and its exit 52 is not L1's.
        assert_eq!(t.compose(40), 40);
        assert!(!t.exited(0, 52));
        assert_eq!(t.saved(), 60);
        // L1's count is the smaller: its exit 52 is L1's, nothing left.
        assert_eq!(t.compose(4096), 60);
        assert!(t.exited(0, 52));
        assert_eq!(t.saved(), 0);
        // Another exit meanwhile only takes the L2 time that passed.
        let mut t = PreemptTimer12::load(10);
        t.compose(4096);
        assert!(!t.exited(7, 10));
        assert_eq!(t.saved(), 7);
        assert_eq!(t.compose(4096), 7);
        // Equal needs: the exit is L1's.
        let mut t = PreemptTimer12::load(4096);
        t.compose(4096);
        assert!(t.exited(0, 52));
        // Zero: VMCS0-2 gets 0 and exits at once (SDM 26.7.4).
        let mut t = PreemptTimer12::load(0);
        assert_eq!(t.compose(4096), 0);
        assert!(t.exited(0, 52));
    }

    #[test]
    fn save_preemption_timer_needs_the_timer() {
        let h = VmxCaps { exit: 0x36DFF | (0x7FFFFF << 32), ..host() };
        let save = u64::from(exitc::SAVE_PREEMPTION_TIMER);
        let mut v = HashMap::from([
            (F::PIN_BASED_VM_EXEC_CONTROL, 0x16),
            (F::CPU_BASED_VM_EXEC_CONTROL, 0x0401_E172),
            (F::VM_EXIT_CONTROLS, 0x36DFF | save),
            (F::VM_ENTRY_CONTROLS, 0x11FF),
        ]);
        let check = |v: &HashMap<F, u64>| {
            check_controls(|f| v.get(&f).copied().unwrap_or(0), |m| l1_vmx_msr(&h, m).unwrap_or(0), &ENV)
        };
        assert_eq!(check(&v), Err("save VMX-preemption timer value without the timer activated"));
        v.insert(F::PIN_BASED_VM_EXEC_CONTROL, 0x16 | u64::from(pin::PREEMPTION_TIMER));
        assert_eq!(check(&v), Ok(()));
        assert_eq!(l1_vmx_msr(&h, crate::caps::IA32_VMX_MISC).map(|m| m & 0x1F), Some(h.misc & 0x1F));
    }

    fn ex(reason: u16, qualification: u64) -> L2ExitInfo {
        L2ExitInfo { reason, qualification, ..L2ExitInfo::default() }
    }

    #[test]
    fn reflection_follows_l1s_controls_and_bitmaps() {
        let io_port_80 = 0x0080_0000; // OUT to port 0x80, size 1
        let v = HashMap::from([(F::CPU_BASED_VM_EXEC_CONTROL, u64::from(proc1::HLT_EXITING))]);
        let get = |f| v.get(&f).copied().unwrap_or(0);
        let none = |_, _| false;
        let rcx = |msr: u64| move |n: u8| if n == 1 { msr } else { 0 };
        assert!(l1_wants_exit(&ex(10, 0), rcx(0), get, none), "CPUID always exits to L1");
        assert!(l1_wants_exit(&ex(12, 0), rcx(0), get, none), "HLT exiting on");
        assert!(!l1_wants_exit(&ex(30, io_port_80), rcx(0), get, none), "no I/O exiting");
        assert!(l1_wants_exit(&ex(31, 0), rcx(0x10), get, none), "no MSR bitmaps: every RDMSR exits");
        assert!(!l1_wants_exit(&ex(52, 0), rcx(0), get, none), "L1's preemption timer is not active");
        assert!(!l1_wants_exit(&ex(1, 0), rcx(0), get, none), "no external-interrupt exiting");
        for (reason, what) in [(7, "interrupt window"), (8, "NMI window"), (14, "INVLPG"), (15, "RDPMC"), (16, "RDTSC"), (29, "MOV DR"), (36, "MWAIT"), (37, "MTF"), (39, "MONITOR"), (40, "PAUSE"), (43, "TPR below threshold"), (44, "APIC access"), (46, "GDTR/IDTR"), (47, "LDTR/TR"), (51, "RDTSCP"), (54, "WBINVD"), (57, "RDRAND"), (58, "INVPCID"), (61, "RDSEED"), (62, "PML full"), (63, "XSAVES")] {
            assert!(!l1_wants_exit(&ex(reason, 0), rcx(0), get, none), "{what} ({reason}) without its control");
        }
        for (reason, what) in [(2, "triple fault"), (9, "task switch"), (13, "INVD"), (18, "VMCALL"), (55, "XSETBV"), (59, "VMFUNC")] {
            assert!(l1_wants_exit(&ex(reason, 0), rcx(0), get, none), "{what} ({reason}) always exits");
        }
        let v = HashMap::from([
            (F::CPU_BASED_VM_EXEC_CONTROL, u64::from(proc1::USE_IO_BITMAPS | proc1::USE_MSR_BITMAPS | proc1::MOV_DR_EXITING | proc1::RDTSC_EXITING | proc1::SECONDARY_CONTROLS)),
            (F::SECONDARY_VM_EXEC_CONTROL, u64::from(proc2::ENABLE_RDTSCP)),
            (F::IO_BITMAP_A, 0x5000),
            (F::MSR_BITMAP, 0x7000),
        ]);
        let get = |f| v.get(&f).copied().unwrap_or(0);
        let bits = |map: u64, n: u64| (map, n) == (0x5000, 0x80) || (map, n) == (0x7000 + 2048 + 1024, 0x80);
        assert!(l1_wants_exit(&ex(30, io_port_80), rcx(0), get, bits), "port 0x80 set in bitmap A");
        assert!(!l1_wants_exit(&ex(30, 0x0081_0000), rcx(0), get, bits), "port 0x81 clear");
        assert!(l1_wants_exit(&ex(30, 0xFFFF_0001), rcx(0), get, bits), "a 2-byte access at 0xFFFF wraps: exits");
        assert!(l1_wants_exit(&ex(32, 0), rcx(0xC000_0080), get, bits), "WRMSR EFER set in the high write bitmap");
        assert!(!l1_wants_exit(&ex(31, 0), rcx(0xC000_0080), get, bits), "RDMSR EFER clear");
        assert!(l1_wants_exit(&ex(31, 0), rcx(0x4000_0000), get, bits), "MSRs outside both ranges always exit");
        assert!(l1_wants_exit(&ex(29, 0), rcx(0), get, bits), "MOV DR exiting");
        assert!(l1_wants_exit(&ex(51, 0), rcx(0), get, bits), "RDTSCP with RDTSC exiting");
    }

    /// SDM 26.1.3 at the edges: every port an access touches is looked up,
    /// in bitmap A (0-0x7FFF) or B (0x8000-0xFFFF); an access past 0xFFFF
    /// always exits; "use I/O bitmaps" overrides unconditional I/O exiting.
    /// MSR bitmaps cover 0-0x1FFF and 0xC0000000-0xC0001FFF, nothing else.
    #[test]
    fn io_and_msr_bitmap_edges() {
        // Qualification: size - 1 in bits 2:0, IN in bit 3, port in 31:16.
        let io = |port: u64, size: u64| (port << 16) | (size - 1);
        let rcx = |msr: u64| move |n: u8| if n == 1 { msr } else { 0 };
        let with = |proc: u32| {
            HashMap::from([
                (F::CPU_BASED_VM_EXEC_CONTROL, u64::from(proc)),
                (F::IO_BITMAP_A, 0xA000),
                (F::IO_BITMAP_B, 0xB000),
                (F::MSR_BITMAP, 0x7000),
            ])
        };
        let v = with(proc1::USE_IO_BITMAPS | proc1::UNCONDITIONAL_IO_EXITING | proc1::USE_MSR_BITMAPS);
        let get = |f| v.get(&f).copied().unwrap_or(0);
        // Set: port 0x81 (A), port 0x8001 (B bit 1); MSR 0x1FFF read, 0xC0001FFF write.
        let bits = |map: u64, n: u64| {
            matches!((map, n), (0xA000, 0x81) | (0xB000, 1) | (0x7000, 0x1FFF)) || (map, n) == (0x7000 + 2048 + 1024, 0x1FFF)
        };
        let wants = |q: u64| l1_wants_exit(&ex(30, q), rcx(0), get, bits);
        assert!(!wants(io(0x80, 1)), "port 0x80 clear");
        assert!(wants(io(0x80, 2)), "a word at 0x80 touches 0x81, which is set");
        assert!(!wants(io(0x7E, 2)), "a word at 0x7E touches 0x7E-0x7F, clear");
        assert!(!wants(io(0x7FFE, 2)), "0x7FFE-0x7FFF in A, clear");
        assert!(!wants(io(0x7FFF, 2)), "0x7FFF-0x8000 spans A and B, both clear");
        assert!(wants(io(0x7FFE, 4)), "a dword at 0x7FFE reaches 0x8001 in B, set");
        assert!(wants(io(0x8000, 2)), "a word at 0x8000 touches 0x8001");
        assert!(!wants(io(0xFFFE, 2)), "0xFFFE-0xFFFF, clear, no wrap");
        assert!(wants(io(0xFFFF, 2)), "0xFFFF-0x10000 wraps: always exits");
        assert!(wants(io(0xFFFD, 4)), "a dword at 0xFFFD wraps");
        assert!(!wants(io(0xFFFF, 1)), "a byte at 0xFFFF does not wrap");
        // Unconditional I/O exiting alone: every access exits; neither: none.
        let v2 = with(proc1::UNCONDITIONAL_IO_EXITING);
        assert!(l1_wants_exit(&ex(30, io(0x80, 1)), rcx(0), |f| v2.get(&f).copied().unwrap_or(0), bits));
        let v3 = with(0);
        assert!(!l1_wants_exit(&ex(30, io(0xFFFF, 4)), rcx(0), |f| v3.get(&f).copied().unwrap_or(0), bits));
        // MSR ranges.
        let rd = |msr: u64| l1_wants_exit(&ex(31, 0), rcx(msr), get, bits);
        let wr = |msr: u64| l1_wants_exit(&ex(32, 0), rcx(msr), get, bits);
        assert!(rd(0x1FFF) && !rd(0x1FFE) && !rd(0));
        assert!(rd(0x2000) && rd(0xBFFF_FFFF) && rd(0xC000_2000) && rd(0xFFFF_FFFF), "outside both ranges: always");
        assert!(!rd(0xC000_1FFF) && wr(0xC000_1FFF) && !wr(0xC000_0000) && !wr(0x1FFF));
        assert!(wr(0x2000) && wr(0xC000_2000), "writes outside both ranges: always");
        // RCX bits 63:32 are ignored (the MSR is ECX).
        assert!(rd(0x1_0000_1FFF) && !rd(0x1_0000_1FFE));
    }

    #[test]
    fn tpr_shadow_checks() {
        let h = host();
        let caps = |m| l1_vmx_msr(&h, m).unwrap_or(0);
        let env = Env { phys_bits: 39, l1_long_mode: true };
        let mut v = good();
        *v.get_mut(&F::CPU_BASED_VM_EXEC_CONTROL).unwrap() |= u64::from(proc1::USE_TPR_SHADOW);
        v.insert(F::VIRTUAL_APIC_PAGE_ADDR, 0x5000);
        v.insert(F::TPR_THRESHOLD, 4);
        let c = |v: &HashMap<F, u64>| check_controls(|f| v.get(&f).copied().unwrap_or(0), caps, &env);
        assert_eq!(c(&v), Ok(()));
        let t = |v: &HashMap<F, u64>, vtpr| check_tpr_threshold(|f| v.get(&f).copied().unwrap_or(0), vtpr);
        assert_eq!(t(&v, 0x40), Ok(()));
        assert_eq!(t(&v, 0x4F), Ok(()));
        assert!(t(&v, 0x3F).is_err(), "threshold 4 above VTPR[7:4] = 3");
        v.insert(F::TPR_THRESHOLD, 0x14);
        assert!(c(&v).is_err(), "threshold bits 31:4");
        v.insert(F::TPR_THRESHOLD, 4);
        v.insert(F::VIRTUAL_APIC_PAGE_ADDR, 0x5800);
        assert!(c(&v).is_err(), "misaligned virtual-APIC page");
        v.insert(F::VIRTUAL_APIC_PAGE_ADDR, 1 << 40);
        assert!(c(&v).is_err(), "beyond the physical-address width");
        // Without the control nothing of it is checked.
        *v.get_mut(&F::CPU_BASED_VM_EXEC_CONTROL).unwrap() &= !u64::from(proc1::USE_TPR_SHADOW);
        assert_eq!(c(&v), Ok(()));
        assert_eq!(t(&v, 0), Ok(()));
    }

    /// SDM A.2-A.5: the plain MSRs report every default-1 bit as must-be-1;
    /// the true MSRs may allow it to be 0, and it may always be 1.
    #[test]
    fn plain_and_true_capability_msrs() {
        use crate::caps::*;
        let mut h = host();
        // A CPU whose true MSRs let default-1 bits be 0 (as Bochs' do).
        h.pinbased = 0x0 | (0x7F << 32);
        h.procbased = 0x0400_6172 | (0xFFF9_FFFE << 32);
        h.exit = 0x36DFB | (0x3FFFFF << 32);
        h.entry = 0x11FB | (0xFFFF << 32);
        for (plain, tru, d1) in [
            (IA32_VMX_PINBASED_CTLS, IA32_VMX_TRUE_PINBASED_CTLS, PIN_DEFAULT1),
            (IA32_VMX_PROCBASED_CTLS, IA32_VMX_TRUE_PROCBASED_CTLS, PROC_DEFAULT1),
            (IA32_VMX_EXIT_CTLS, IA32_VMX_TRUE_EXIT_CTLS, EXIT_DEFAULT1),
            (IA32_VMX_ENTRY_CTLS, IA32_VMX_TRUE_ENTRY_CTLS, ENTRY_DEFAULT1),
        ] {
            let (p, t) = (l1_vmx_msr(&h, plain).unwrap(), l1_vmx_msr(&h, tru).unwrap());
            assert_eq!(p as u32 & d1, d1, "{plain:#x}: default-1 bits are must-be-1");
            assert_eq!(p as u32, t as u32 | d1, "{plain:#x}: otherwise the true must-be-1 bits");
            assert_eq!((t >> 32) as u32 & d1, d1, "{tru:#x}: default-1 bits may be 1");
            assert_eq!(p >> 32, t >> 32, "{plain:#x}: the same allowed-1 bits");
            assert_eq!(t as u32 & !(p as u32), 0, "true must-be-1 within plain");
        }
        // The true MSRs let the debug controls and CR3 exiting be 0 here.
        let t = |m| l1_vmx_msr(&h, m).unwrap() as u32;
        assert_eq!(t(IA32_VMX_TRUE_PROCBASED_CTLS) & proc1::CR3_LOAD_EXITING, 0);
        assert_eq!(t(IA32_VMX_TRUE_EXIT_CTLS) & exitc::SAVE_DEBUG_CONTROLS, 0);
        assert_eq!(t(IA32_VMX_TRUE_ENTRY_CTLS) & entry::LOAD_DEBUG_CONTROLS, 0);
        // A vmcs12 with every default-1 bit set passes the control checks.
        let mut v = good();
        for (f, d1) in [
            (F::PIN_BASED_VM_EXEC_CONTROL, PIN_DEFAULT1),
            (F::CPU_BASED_VM_EXEC_CONTROL, PROC_DEFAULT1),
            (F::VM_EXIT_CONTROLS, EXIT_DEFAULT1),
            (F::VM_ENTRY_CONTROLS, ENTRY_DEFAULT1),
        ] {
            *v.get_mut(&f).unwrap() |= u64::from(d1);
        }
        let env = Env { phys_bits: 39, l1_long_mode: true };
        let caps = |m| l1_vmx_msr(&h, m).unwrap_or(0);
        assert_eq!(check_controls(|f| v.get(&f).copied().unwrap_or(0), caps, &env), Ok(()));
    }

    /// KVM's nested_vmx_exit_handled_cr: only bits L1 owns decide.
    #[test]
    fn cr_access_reflection() {
        let (mov_to_cr0_rax, mov_to_cr4_rbx, clts) = (0x000, 0x304, 0x20);
        let lmsw = |src: u64| 0x30 | (src << 16);
        let none = |_, _| false;
        let v = HashMap::from([
            (F::CR0_GUEST_HOST_MASK, 0x8), // L1 owns CR0.TS
            (F::CR0_READ_SHADOW, 0x8),
            (F::CR4_GUEST_HOST_MASK, 0x4), // and CR4.TSD
            (F::CR4_READ_SHADOW, 0x0),
        ]);
        let get = |f| v.get(&f).copied().unwrap_or(0);
        let regs = |rax: u64, rbx: u64| move |n: u8| match n { 0 => rax, 3 => rbx, _ => 0 };
        assert!(!l1_wants_exit(&ex(28, mov_to_cr0_rax), regs(0x8 | 0x20, 0), get, none), "CR0.NE is not L1's (VMX fixes it: L0's exit)");
        assert!(!l1_wants_exit(&ex(28, mov_to_cr0_rax), regs(0x8 | 0x2, 0), get, none), "CR0.MP is not L1's");
        assert!(l1_wants_exit(&ex(28, mov_to_cr0_rax), regs(0, 0), get, none), "CR0.TS is L1's and differs from its shadow");
        assert!(!l1_wants_exit(&ex(28, mov_to_cr4_rbx), regs(0, 0x2000), get, none), "CR4.VMXE is not L1's");
        assert!(l1_wants_exit(&ex(28, mov_to_cr4_rbx), regs(0, 0x4), get, none), "CR4.TSD is L1's");
        assert!(l1_wants_exit(&ex(28, clts), regs(0, 0), get, none), "CLTS: L1 owns TS, shadow TS = 1");
        assert!(!l1_wants_exit(&ex(28, lmsw(0x8)), regs(0, 0), get, none), "LMSW keeping TS");
        assert!(l1_wants_exit(&ex(28, lmsw(0)), regs(0, 0), get, none), "LMSW clearing TS");
        assert!(!l1_wants_exit(&ex(28, 0x13), regs(0, 0), get, none), "MOV from CR3 without CR3-store exiting");
        assert!(!l1_wants_exit(&ex(28, 0x03), regs(0, 0), get, none), "MOV to CR3 without CR3-load exiting");
        let v = HashMap::from([
            (F::CPU_BASED_VM_EXEC_CONTROL, u64::from(proc1::CR3_LOAD_EXITING | proc1::CR3_STORE_EXITING)),
            (F::CR0_GUEST_HOST_MASK, 0x1), // PE
            (F::CR3_TARGET_COUNT, 1),
            (F::CR3_TARGET_VALUE0, 0x5000),
            (F::CR3_TARGET_VALUE1, 0x6000),
        ]);
        let get = |f| v.get(&f).copied().unwrap_or(0);
        assert!(l1_wants_exit(&ex(28, 0x13), regs(0, 0), get, none), "MOV from CR3 with CR3-store exiting");
        assert!(!l1_wants_exit(&ex(28, 0x03), regs(0x5000, 0), get, none), "MOV to CR3 of target 0");
        assert!(l1_wants_exit(&ex(28, 0x03), regs(0x6000, 0), get, none), "target 1 is beyond the count");
        assert!(l1_wants_exit(&ex(28, lmsw(1)), regs(0, 0), get, none), "LMSW setting PE over a shadow PE of 0");
        assert!(!l1_wants_exit(&ex(28, 0x8), regs(0, 0), get, none), "MOV to CR8 without CR8-load exiting");
    }

    /// SDM 26.2: the exception bitmap, with #PF's error-code mask and match.
    #[test]
    fn exception_reflection() {
        let none = |_, _| false;
        let pf = |err: u32| L2ExitInfo { reason: 0, intr_info: 0x8000_0B0E, intr_error: err, ..L2ExitInfo::default() };
        let ud = L2ExitInfo { reason: 0, intr_info: 0x8000_0306, ..L2ExitInfo::default() };
        let nmi = L2ExitInfo { reason: 0, intr_info: 0x8000_0202, ..L2ExitInfo::default() };
        let r = |_: u8| 0;
        let v = HashMap::from([(F::EXCEPTION_BITMAP, 1u64 << 14), (F::PAGE_FAULT_ERROR_CODE_MASK, 2), (F::PAGE_FAULT_ERROR_CODE_MATCH, 2)]);
        let get = |f| v.get(&f).copied().unwrap_or(0);
        assert!(l1_wants_exit(&pf(3), r, get, none), "bit 14 set, error code matches: exits");
        assert!(!l1_wants_exit(&pf(1), r, get, none), "bit 14 set, no match: no exit");
        assert!(!l1_wants_exit(&ud, r, get, none), "#UD not in the bitmap");
        assert!(!l1_wants_exit(&nmi, r, get, none), "NMI without NMI exiting");
        let v = HashMap::from([(F::EXCEPTION_BITMAP, 1u64 << 6), (F::PAGE_FAULT_ERROR_CODE_MASK, 2), (F::PAGE_FAULT_ERROR_CODE_MATCH, 2), (F::PIN_BASED_VM_EXEC_CONTROL, u64::from(pin::NMI_EXITING))]);
        let get = |f| v.get(&f).copied().unwrap_or(0);
        assert!(!l1_wants_exit(&pf(3), r, get, none), "bit 14 clear, match: no exit");
        assert!(l1_wants_exit(&pf(1), r, get, none), "bit 14 clear, no match: exits");
        assert!(l1_wants_exit(&ud, r, get, none), "#UD in the bitmap");
        assert!(l1_wants_exit(&nmi, r, get, none), "NMI exiting");
    }

    #[test]
    fn exit_sync_splits_the_guest_state() {
        let all = exit_sync(exitc::SAVE_EFER, false);
        let guest = FieldSet::group(crate::field::Group::GuestState);
        assert_eq!(all.eager.union(all.lazy).union(all.unsaved), guest);
        assert!(all.eager.intersect(all.lazy).is_empty() && all.lazy.intersect(all.unsaved).is_empty());
        assert!(all.eager.contains(F::GUEST_RIP) && all.lazy.contains(F::GUEST_CS_AR_BYTES));
        assert!(all.lazy.contains(F::GUEST_IA32_EFER) && all.unsaved.contains(F::GUEST_IA32_PAT));
        assert!(all.unsaved.contains(F::VMCS_LINK_POINTER) && all.unsaved.contains(F::GUEST_PDPTR0));
        assert!(exit_sync(0, true).lazy.contains(F::GUEST_PDPTR0));
        assert!(exit_sync(0, false).unsaved.contains(F::GUEST_IA32_EFER));
    }
}
