//! Running an L1: VMCS0-1 set-up, the world switch, and the exit loop.
//!
//! The L1 starts the way GRUB leaves a Multiboot2 kernel (32-bit protected
//! mode, paging off — which needs "unrestricted guest", SDM 26.3.1.1), in a
//! private, contiguous chunk of host memory that EPT0-1 maps at
//! guest-physical 0. Every exit is decoded into [`Exit`], handled by one
//! `match`, and counted per basic exit reason with the TSC cycles L0 spent.

use nvmx_vmx::caps::VmxCaps;
use nvmx_vmx::controls::adjust_controls;
use nvmx_vmx::controls::{entry, exit as exitc, pin, proc1, proc2};
use nvmx_vmx::field::Field as F;

use super::insn::{self, VmFail};
use crate::arch::{cpu, gdt};

pub use nvmx_vmx::entry::GuestRegs;

/// VMREAD of a field L0 knows exists in its own VMCS; a failure here is an
/// L0 bug, reported loudly rather than hidden behind a default value.
#[inline(always)]
pub fn vmread(field: F) -> u64 {
    match insn::vmread(field.encoding()) {
        Ok(v) => v,
        Err(e) => vmx_bug("VMREAD", field, 0, e),
    }
}

/// VMWRITE of a field L0 knows exists in its own VMCS.
#[inline(always)]
pub fn vmwrite(field: F, value: u64) {
    if let Err(e) = insn::vmwrite(field.encoding(), value) {
        vmx_bug("VMWRITE", field, value, e);
    }
}

/// VMREAD with no failure test, for a field the caller knows the current
/// VMCS has (VMREAD's only VMfail cases are no current VMCS and an
/// unsupported field, SDM 32.3): every basic exit-information and
/// guest-state field of VMCS0-1 and VMCS0-2, which setup_vmcs01 and
/// prepare_vmcs02 wrote with checks. The test is 3 instructions of the 5 of
/// [`vmread`], on paths that do dozens (the exit stub's VMREAD/VMWRITE,
/// the load of L1's host state, the exit loop).
#[inline(always)]
pub fn vmread_known(field: F) -> u64 {
    let v: u64;
    // SAFETY: VMX root operation with a current VMCS (callers); VMREAD
    // writes only the output register and the flags.
    unsafe { core::arch::asm!("vmread {}, {}", lateout(reg) v, in(reg) u64::from(field.encoding()), options(nostack)) };
    v
}

/// VMWRITE with no failure test, as [`vmread_known`]: a field the current
/// VMCS has and that is not read-only (VMWRITE checks no value).
#[inline(always)]
pub fn vmwrite_known(field: F, value: u64) {
    // SAFETY: as `vmread_known`; VMWRITE changes only the current VMCS and
    // the flags.
    unsafe { core::arch::asm!("vmwrite {}, {}", in(reg) u64::from(field.encoding()), in(reg) value, options(nostack)) };
}

#[cold]
#[inline(never)]
fn vmx_bug(what: &str, field: F, value: u64, e: insn::VmFail) -> ! {
    panic!("{what} {} (value {value:#x}) failed: {e}", field.name());
}

/// Enters the guest of the current VMCS with `regs`; `Ok` after a VM exit.
/// `fast`: null, or the exit stub's fast path for this entry (the exits it
/// handles resume the guest without returning here).
///
/// # Safety
/// `fast` is null or valid, with every pointer it holds, until this returns
/// (`nvmx_vmx::entry::enter_fast`).
pub unsafe fn enter(regs: &mut GuestRegs, launched: bool, fast: *mut nvmx_vmx::entry::FastExit) -> Result<(), VmFail> {
    // SAFETY: the current VMCS was set up by L0 with HOST_RIP =
    // exit_rip_fast() and a host state equal to this core's
    // (setup_host_state); `fast` as the caller promised.
    let rflags = unsafe { nvmx_vmx::entry::enter_fast(regs, launched, fast) };
    if rflags == 0 {
        Ok(())
    } else if rflags & 1 != 0 {
        Err(VmFail::Invalid)
    } else {
        Err(VmFail::Valid(insn::vmread(F::VM_INSTRUCTION_ERROR.encoding()).unwrap_or(0) as u32))
    }
}

/// Builds EPT0-1: guest-physical [0, size) → host [base, base+size) with
/// 2 MiB pages, write-back, RWX; nothing else is mapped (SDM 29.3.2).
pub fn build_ept01(owned: &mut crate::mm::frames::Owned, host_base: u64, size: u64) -> Option<u64> {
    let mut alloc = |p, a| owned.alloc(p, a);
    const RWX: u64 = 0x7;
    const WB_2M: u64 = (6 << 3) | (1 << 7) | RWX; // memory type WB, PS
    let pml4 = alloc(1, 1)?;
    let mut pdpt = 0;
    let mut pd = 0;
    let mut gpa = 0;
    while gpa < size {
        // The IOAPIC and LAPIC pages stay unmapped whatever the RAM size:
        // their accesses must exit to be emulated (EPT violation, SDM 29.3.3).
        if (0xFEC0_0000..0xFF00_0000).contains(&gpa) {
            gpa += 2 << 20;
            continue;
        }
        // SAFETY: the tables are frames just allocated for EPT0-1 and
        // identity mapped; indices are < 512.
        unsafe {
            if gpa % (512 << 30) == 0 {
                pdpt = alloc(1, 1)?;
                *(pml4 as *mut u64).add((gpa >> 39) as usize & 511) = pdpt | RWX;
            }
            if gpa % (1 << 30) == 0 {
                pd = alloc(1, 1)?;
                *(pdpt as *mut u64).add((gpa >> 30) as usize & 511) = pd | RWX;
            }
            *(pd as *mut u64).add((gpa >> 21) as usize & 511) = (host_base + gpa) | WB_2M;
        }
        gpa += 2 << 20;
    }
    // EPTP: WB (6), 4-level walk (3 << 3), SDM 25.6.11.
    Some(pml4 | 6 | (3 << 3))
}

/// The L0 bitmaps of one VMCS0-1.
pub struct Bitmaps {
    pub io_a: u64,
    pub io_b: u64,
    pub msr: u64,
}

/// MSRs L1 may read and write directly: they are either switched by the
/// VMCS (SYSENTER, FS/GS base) or unused by L0 (SYSCALL MSRs, TSC_AUX).
pub const PASSTHROUGH_MSRS: &[u32] = &[
    0x174, 0x175, 0x176, // IA32_SYSENTER_CS/ESP/EIP (guest-state fields)
    0xC000_0081, 0xC000_0082, 0xC000_0083, 0xC000_0084, // STAR, LSTAR, CSTAR, FMASK
    0xC000_0100, 0xC000_0101, 0xC000_0102, // FS_BASE, GS_BASE (guest-state), KERNEL_GS_BASE
    0xC000_0103, // TSC_AUX
];

/// I/O bitmaps with every port trapped (L1 has no real devices), MSR bitmap
/// with everything trapped but [`PASSTHROUGH_MSRS`] (SDM 25.6.4, 25.6.9).
pub fn build_bitmaps(owned: &mut crate::mm::frames::Owned) -> Option<Bitmaps> {
    let mut alloc = |p, a| owned.alloc(p, a);
    let io_a = alloc(1, 1)?;
    let io_b = alloc(1, 1)?;
    let msr = alloc(1, 1)?;
    // SAFETY: three frames just allocated for these bitmaps.
    unsafe {
        core::ptr::write_bytes(io_a as *mut u8, 0xFF, 4096);
        core::ptr::write_bytes(io_b as *mut u8, 0xFF, 4096);
        core::ptr::write_bytes(msr as *mut u8, 0xFF, 4096);
        for &m in PASSTHROUGH_MSRS {
            // Read bitmap low at 0, high at 1024; write bitmaps at 2048/3072.
            let (base, bit) = if m < 0x2000 { (0, m) } else { (1024, m - 0xC000_0000) };
            for off in [base, base + 2048] {
                let byte = (msr as *mut u8).add(off + (bit / 8) as usize);
                *byte &= !(1 << (bit % 8));
            }
        }
    }
    Some(Bitmaps { io_a, io_b, msr })
}

/// Access-rights values (SDM 25.4.1, table 25-2).
/// CR0 bits L0 never lets into the CPU's CR0 while an L1 runs: CD (30)
/// and NW (29), which a VM exit does not restore (SDM 28.5.1).
pub const CR0_ALWAYS_OFF: u64 = (1 << 30) | (1 << 29);

/// The CPU's CR0 for L1's `value`: the VMX-fixed bits set, CD and NW clear.
pub fn l1_cr0_to_cpu(value: u64, forced: u64) -> u64 {
    (value | (forced & !CR0_ALWAYS_OFF)) & !CR0_ALWAYS_OFF
}

const AR_CODE32: u64 = 0xC09B; // present, code exec/read accessed, D=1, G=1
const AR_DATA32: u64 = 0xC093; // present, data read/write accessed, D=1, G=1
const AR_TSS_BUSY32: u64 = 0x8B;
const AR_UNUSABLE: u64 = 1 << 16;

/// Preemption-timer value: the L1 returns to L0 at least every this many
/// timer ticks (TSC >> rate), so the shell stays responsive on the boot core
/// and mailbox requests are seen on the others.
pub const PREEMPT_TICKS: u64 = 1 << 12;

/// Initialises the current VMCS as VMCS0-1 for an L1 entered like a
/// Multiboot2 kernel at `entry`.
pub fn setup_vmcs01(caps: &VmxCaps, eptp01: u64, maps: &Bitmaps, entry: u64, vpid: u16) -> Result<(), &'static str> {
    // --- Controls (SDM 25.6-25.8), adjusted to what the CPU allows (A.3). ---
    let pin_ctl = adjust_controls(
        pin::EXTERNAL_INTERRUPT_EXITING
            | pin::NMI_EXITING
            | pin::PREEMPTION_TIMER
            | crate::l1::platform::L1Platform::extra_pin_controls(caps),
        caps.pinbased(),
    )
    .map_err(|_| "pin-based controls not supported")?;
    let proc_ctl = adjust_controls(
        // CR8 is the L1's LAPIC TPR (SDM 11.8.6.1), emulated: without
        // CR8 exiting a MOV to CR8 would set the host's TPR.
        proc1::HLT_EXITING | proc1::USE_IO_BITMAPS | proc1::USE_MSR_BITMAPS | proc1::SECONDARY_CONTROLS
            | proc1::CR8_LOAD_EXITING | proc1::CR8_STORE_EXITING,
        caps.procbased(),
    )
    .map_err(|_| "processor-based controls not supported")?;
    let mut want2 = proc2::ENABLE_EPT | proc2::ENABLE_VPID | proc2::UNRESTRICTED_GUEST;
    // Instructions L1 would #UD on without these, although the CPU has them.
    for opt in [proc2::ENABLE_RDTSCP, proc2::ENABLE_INVPCID, proc2::ENABLE_XSAVES] {
        if caps.procbased2().1 & opt != 0 {
            want2 |= opt;
        }
    }
    let proc2_ctl = adjust_controls(want2, caps.procbased2()).map_err(|_| "EPT/VPID/unrestricted guest not supported")?;
    let exit_ctl = adjust_controls(
        exitc::HOST_ADDRESS_SPACE_SIZE | exitc::ACK_INTERRUPT_ON_EXIT | exitc::SAVE_EFER | exitc::LOAD_EFER
            | exitc::SAVE_PAT | exitc::LOAD_PAT,
        caps.exit(),
    )
    .map_err(|_| "VM-exit controls not supported")?;
    let entry_ctl =
        adjust_controls(entry::LOAD_EFER | entry::LOAD_PAT, caps.entry()).map_err(|_| "VM-entry controls not supported")?;

    vmwrite(F::PIN_BASED_VM_EXEC_CONTROL, pin_ctl.into());
    vmwrite(F::CPU_BASED_VM_EXEC_CONTROL, proc_ctl.into());
    vmwrite(F::SECONDARY_VM_EXEC_CONTROL, proc2_ctl.into());
    vmwrite(F::VM_EXIT_CONTROLS, exit_ctl.into());
    vmwrite(F::VM_ENTRY_CONTROLS, entry_ctl.into());
    vmwrite(F::EXCEPTION_BITMAP, 0);
    vmwrite(F::IO_BITMAP_A, maps.io_a);
    vmwrite(F::IO_BITMAP_B, maps.io_b);
    vmwrite(F::MSR_BITMAP, maps.msr);
    vmwrite(F::EPT_POINTER, eptp01);
    vmwrite(F::VIRTUAL_PROCESSOR_ID, vpid.into());
    vmwrite(F::VMCS_LINK_POINTER, u64::MAX);
    vmwrite(F::VM_EXIT_MSR_STORE_COUNT, 0);
    vmwrite(F::VM_EXIT_MSR_LOAD_COUNT, 0);
    vmwrite(F::VM_ENTRY_MSR_LOAD_COUNT, 0);
    vmwrite(F::VM_ENTRY_INTR_INFO_FIELD, 0);
    vmwrite(F::VMX_PREEMPTION_TIMER_VALUE, PREEMPT_TICKS);

    // CR0/CR4: L1 owns every bit but those the CPU fixes for VMX; those are
    // masked and read from the shadows, so L1 sees the values it wrote (CR4.VMXE
    // clear) — SDM 25.6.6.
    let (cr0_f0, _) = caps.cr0_fixed();
    let (cr4_f0, _) = caps.cr4_fixed();
    // With unrestricted guest PE and PG may be 0 (SDM 26.3.1.1). CD and NW
    // are L0's too, and always 0 in the CPU's CR0 while L1 runs: a VM exit
    // does not load them from HOST_CR0 (SDM 28.5.1), so an L1's CR0.CD
    // would stay set in L0 (KVM's KVM_VM_CR0_ALWAYS_OFF). L1 reads its own
    // value from the read shadow.
    let cr0_forced = cr0_f0 & !(1 | (1 << 31));
    // PE | ET as GRUB leaves it, CD and NW as the firmware left them on this
    // core (GRUB does not touch them; Bochs' BIOS leaves both set).
    let cr0_l1 = 0x11 | (cpu::read_cr0() & CR0_ALWAYS_OFF);
    vmwrite(F::CR0_GUEST_HOST_MASK, cr0_forced | CR0_ALWAYS_OFF);
    vmwrite(F::CR0_READ_SHADOW, cr0_l1);
    vmwrite(F::GUEST_CR0, l1_cr0_to_cpu(cr0_l1, cr0_forced));
    vmwrite(F::CR4_GUEST_HOST_MASK, cr4_f0);
    vmwrite(F::CR4_READ_SHADOW, 0);
    vmwrite(F::GUEST_CR4, cr4_f0);
    vmwrite(F::GUEST_CR3, 0);
    vmwrite(F::GUEST_DR7, 0x400);
    vmwrite(F::GUEST_RFLAGS, 0x2);
    vmwrite(F::GUEST_RIP, entry);
    vmwrite(F::GUEST_RSP, 0);

    // Flat 32-bit segments as GRUB leaves them (Multiboot2 spec 3.3).
    for (sel, base, limit, ar, value, ar_val) in [
        (F::GUEST_CS_SELECTOR, F::GUEST_CS_BASE, F::GUEST_CS_LIMIT, F::GUEST_CS_AR_BYTES, 0x08u64, AR_CODE32),
        (F::GUEST_DS_SELECTOR, F::GUEST_DS_BASE, F::GUEST_DS_LIMIT, F::GUEST_DS_AR_BYTES, 0x10, AR_DATA32),
        (F::GUEST_ES_SELECTOR, F::GUEST_ES_BASE, F::GUEST_ES_LIMIT, F::GUEST_ES_AR_BYTES, 0x10, AR_DATA32),
        (F::GUEST_FS_SELECTOR, F::GUEST_FS_BASE, F::GUEST_FS_LIMIT, F::GUEST_FS_AR_BYTES, 0x10, AR_DATA32),
        (F::GUEST_GS_SELECTOR, F::GUEST_GS_BASE, F::GUEST_GS_LIMIT, F::GUEST_GS_AR_BYTES, 0x10, AR_DATA32),
        (F::GUEST_SS_SELECTOR, F::GUEST_SS_BASE, F::GUEST_SS_LIMIT, F::GUEST_SS_AR_BYTES, 0x10, AR_DATA32),
    ] {
        vmwrite(sel, value);
        vmwrite(base, 0);
        vmwrite(limit, 0xFFFF_FFFF);
        vmwrite(ar, ar_val);
    }
    vmwrite(F::GUEST_TR_SELECTOR, 0);
    vmwrite(F::GUEST_TR_BASE, 0);
    vmwrite(F::GUEST_TR_LIMIT, 0xFF);
    vmwrite(F::GUEST_TR_AR_BYTES, AR_TSS_BUSY32);
    vmwrite(F::GUEST_LDTR_SELECTOR, 0);
    vmwrite(F::GUEST_LDTR_BASE, 0);
    vmwrite(F::GUEST_LDTR_LIMIT, 0);
    vmwrite(F::GUEST_LDTR_AR_BYTES, AR_UNUSABLE);
    vmwrite(F::GUEST_GDTR_BASE, 0);
    vmwrite(F::GUEST_GDTR_LIMIT, 0);
    vmwrite(F::GUEST_IDTR_BASE, 0);
    vmwrite(F::GUEST_IDTR_LIMIT, 0);
    vmwrite(F::GUEST_IA32_EFER, 0);
    vmwrite(F::GUEST_IA32_PAT, 0x0007_0406_0007_0406);
    vmwrite(F::GUEST_IA32_DEBUGCTL, 0);
    vmwrite(F::GUEST_SYSENTER_CS, 0);
    vmwrite(F::GUEST_SYSENTER_ESP, 0);
    vmwrite(F::GUEST_SYSENTER_EIP, 0);
    vmwrite(F::GUEST_ACTIVITY_STATE, 0);
    vmwrite(F::GUEST_INTERRUPTIBILITY_INFO, 0);
    vmwrite(F::GUEST_PENDING_DBG_EXCEPTIONS, 0);

    setup_host_state();
    Ok(())
}

/// Host state = this core's L0 (SDM 25.5, checked by 27.2.2-27.2.4).
pub fn setup_host_state() {
    let tables = crate::percpu::current().tables.get().expect("per-CPU tables before VMX");
    let gdtr = x86_64::instructions::tables::sgdt();
    let idtr = x86_64::instructions::tables::sidt();
    vmwrite(F::HOST_CR0, cpu::read_cr0());
    vmwrite(F::HOST_CR3, cpu::read_cr3());
    vmwrite(F::HOST_CR4, cpu::read_cr4());
    vmwrite(F::HOST_CS_SELECTOR, gdt::KERNEL_CS.into());
    for f in [F::HOST_SS_SELECTOR, F::HOST_DS_SELECTOR, F::HOST_ES_SELECTOR] {
        vmwrite(f, gdt::KERNEL_DS.into());
    }
    vmwrite(F::HOST_FS_SELECTOR, 0);
    vmwrite(F::HOST_GS_SELECTOR, 0);
    vmwrite(F::HOST_TR_SELECTOR, gdt::KERNEL_TR.into());
    vmwrite(F::HOST_FS_BASE, cpu::rdmsr(0xC000_0100));
    vmwrite(F::HOST_GS_BASE, cpu::rdmsr(0xC000_0101));
    vmwrite(F::HOST_TR_BASE, tables.tss as *const _ as u64);
    vmwrite(F::HOST_GDTR_BASE, gdtr.base.as_u64());
    vmwrite(F::HOST_IDTR_BASE, idtr.base.as_u64());
    vmwrite(F::HOST_IA32_SYSENTER_CS, 0);
    vmwrite(F::HOST_IA32_SYSENTER_ESP, 0);
    vmwrite(F::HOST_IA32_SYSENTER_EIP, 0);
    vmwrite(F::HOST_IA32_EFER, cpu::rdmsr(0xC000_0080));
    vmwrite(F::HOST_IA32_PAT, cpu::rdmsr(0x277));
    vmwrite(F::HOST_RIP, nvmx_vmx::entry::exit_rip_fast());
}
