//! The `forum` workload: the L1 behaves like the commercial hypervisor of the
//! seed thread (VMware Workstation running Windows). Its L2 causes CPUID, I/O,
//! RDMSR/WRMSR, HLT, VMCALL and EPT-violation exits; the L1 handles each with
//! a burst of VMREADs and VMWRITEs, runs two L2 vCPUs (two VMCSs) switched
//! with VMCLEAR/VMPTRLD, maps L2 memory lazily in its EPT and drops stale
//! translations with INVEPT/INVVPID.
//!
//! L2 runs in 64-bit mode on the L1's own page tables and GDT (a guest kernel
//! sharing its hypervisor's address space is the simplest L2 that still
//! exercises EPT); its guest-physical memory is identity-mapped 4 KiB page by
//! page on EPT violations.

use core::arch::global_asm;
use core::fmt::Write;
use core::sync::atomic::Ordering::Relaxed;

use nvmx_vmx::caps::VmxCaps;
use nvmx_vmx::controls::{adjust_controls, entry, exit, pin, proc1, proc2};
use nvmx_vmx::field::Field as F;

use crate::console::Console;
use crate::vmx::{self, VmFail};
use crate::Args;

/// L2 exits between switches of the current L2 vCPU.
const SWITCH_EVERY: u64 = 64;
/// L2 exits between unmapping the L2 data pages (forcing new EPT violations).
const UNMAP_EVERY: u64 = 1024;
/// Pages of L2 data the L2 touches round-robin.
const DATA_PAGES: usize = 16;

#[repr(C, align(4096))]
struct Page([u8; 4096]);

/// Pages for the VMXON region, two VMCSs and EPT tables.
const POOL_PAGES: usize = 96;
static mut POOL: [Page; POOL_PAGES] = [const { Page([0; 4096]) }; POOL_PAGES];
static mut POOL_NEXT: usize = 0;
#[repr(C, align(4096))]
struct L2Stack([u8; 16384]);
static mut L2_STACKS: [L2Stack; 2] = [const { L2Stack([0; 16384]) }; 2];
static mut L2_DATA: [Page; DATA_PAGES] = [const { Page([0; 4096]) }; DATA_PAGES];

pub fn alloc_page() -> u64 {
    // SAFETY: single-threaded; the pool is this module's alone.
    unsafe {
        let i = POOL_NEXT;
        assert!(i < POOL_PAGES, "L1 page pool exhausted");
        POOL_NEXT += 1;
        let p = &raw mut POOL[i];
        (*p).0.fill(0);
        p as u64
    }
}

use nvmx_vmx::entry::GuestRegs as L2Regs;

global_asm!(
    r#"
    /* The L2 guest: an endless mix of exiting instructions.
       RBX walks the data pages (its start in RSI, their count in RDI). */
    .global l2_entry
l2_entry:
    xor ebx, ebx
3:  xor eax, eax
    cpuid
    mov al, 0x55
    out 0x80, al
    in al, 0x71
    mov ecx, 0x10
    rdmsr
    mov ecx, 0x277
    wrmsr
    hlt
    vmcall
    mov rax, rbx
    and rax, 0xF
    shl rax, 12
    add rax, rsi
    mov byte ptr [rax], 1
    inc rbx
    jmp 3b
    "#
);

unsafe extern "C" {
    static l2_entry: u8;
}

/// One L2 vCPU: its VMCS and registers.
struct L2Vcpu {
    vmcs: u64,
    launched: bool,
    regs: L2Regs,
}

/// The L1's EPT for its L2: identity, 4 KiB pages, filled on demand.
pub struct Ept {
    pub pml4: u64,
}

impl Ept {
    pub fn eptp(&self) -> u64 {
        self.pml4 | 6 | (3 << 3)
    }
    fn entry(table: u64, index: u64) -> *mut u64 {
        (table + 8 * (index & 511)) as *mut u64
    }
    /// Maps the 4 KiB page at `gpa` to itself, read/write/execute, WB.
    pub fn map(&mut self, gpa: u64) {
        self.map_to(gpa, gpa);
    }
    /// Maps the 4 KiB page at `gpa` to L1 page `to`, read/write/execute, WB.
    pub fn map_to(&mut self, gpa: u64, to: u64) {
        self.set_leaf(gpa, (to & !0xFFF) | 7 | (6 << 3));
    }
    /// Sets the leaf entry of the 4 KiB page at `gpa` as it is (any
    /// permissions and memory type, for the conformance checks).
    pub fn set_leaf(&mut self, gpa: u64, leaf: u64) {
        let mut table = self.pml4;
        for shift in [39, 30, 21] {
            let e = Self::entry(table, gpa >> shift);
            // SAFETY: EPT tables are pool pages owned by this struct.
            unsafe {
                if *e & 7 == 0 {
                    *e = alloc_page() | 7;
                }
                table = *e & !0xFFF;
            }
        }
        // SAFETY: as above.
        unsafe { *Self::entry(table, gpa >> 12) = leaf };
    }
    /// Removes the mapping of the page at `gpa` (if any).
    fn unmap(&mut self, gpa: u64) {
        let mut table = self.pml4;
        for shift in [39, 30, 21] {
            // SAFETY: as in `map`.
            let e = unsafe { *Self::entry(table, gpa >> shift) };
            if e & 7 == 0 {
                return;
            }
            table = e & !0xFFF;
        }
        // SAFETY: as in `map`.
        unsafe { *Self::entry(table, gpa >> 12) = 0 };
    }
}

pub fn read_cr(n: u8) -> u64 {
    let v: u64;
    // SAFETY: reading control registers has no side effects.
    unsafe {
        match n {
            0 => core::arch::asm!("mov {}, cr0", out(reg) v),
            3 => core::arch::asm!("mov {}, cr3", out(reg) v),
            _ => core::arch::asm!("mov {}, cr4", out(reg) v),
        }
    }
    v
}

fn must(what: &str, r: Result<(), VmFail>) -> Result<(), ()> {
    r.map_err(|e| vmx::report(what, "", e))
}

/// VMLAUNCH (or VMRESUME) of the current VMCS with scratch L2 registers:
/// `Ok` if an L2 ran and exited, else the failure. For conformance checks.
pub fn try_enter(launch: bool) -> Result<(), VmFail> {
    let mut regs = L2Regs::default();
    vmx::vmwrite(F::HOST_RIP, nvmx_vmx::entry::exit_rip());
    vmx::count_entry(launch);
    // SAFETY: HOST_RIP is the exit stub and the host state the L1's own.
    let rflags = unsafe { nvmx_vmx::entry::enter(&mut regs, !launch) };
    if rflags == 0 {
        Ok(())
    } else if rflags & 1 != 0 {
        Err(VmFail::Invalid)
    } else {
        Err(VmFail::Valid(vmx::try_vmread(F::VM_INSTRUCTION_ERROR.encoding()).unwrap_or(0) as u32))
    }
}

/// Fills the current VMCS for an L2 vCPU that starts at `rip` (SDM 25.3-25.8).
/// (Its VMREAD/VMWRITEs go through the counted wrappers: the fuzz sets up
/// its VMCSs here too, and it is off the forum's measured path.)
pub fn setup_vmcs(caps: &VmxCaps, ept: &Ept, vpid: u16, stack_top: u64, rip: u64) -> Result<(), ()> {
    let ctl = |want, allowed| adjust_controls(want, allowed).map_err(|bits| {
        let _ = writeln!(Console, "l1: control bits {bits:#x} not supported");
    });
    vmx::vmwrite_counted(F::PIN_BASED_VM_EXEC_CONTROL, ctl(pin::NMI_EXITING, caps.pinbased())?.into());
    vmx::vmwrite_counted(
        F::CPU_BASED_VM_EXEC_CONTROL,
        ctl(proc1::HLT_EXITING | proc1::UNCONDITIONAL_IO_EXITING | proc1::SECONDARY_CONTROLS, caps.procbased())?.into(),
    );
    vmx::vmwrite_counted(F::SECONDARY_VM_EXEC_CONTROL, ctl(proc2::ENABLE_EPT | proc2::ENABLE_VPID, caps.procbased2())?.into());
    vmx::vmwrite_counted(F::VM_EXIT_CONTROLS, ctl(exit::HOST_ADDRESS_SPACE_SIZE, caps.exit())?.into());
    vmx::vmwrite_counted(F::VM_ENTRY_CONTROLS, ctl(entry::IA32E_MODE_GUEST, caps.entry())?.into());
    vmx::vmwrite_counted(F::EXCEPTION_BITMAP, 0);
    vmx::vmwrite_counted(F::CR3_TARGET_COUNT, 0);
    vmx::vmwrite_counted(F::VM_EXIT_MSR_STORE_COUNT, 0);
    vmx::vmwrite_counted(F::VM_EXIT_MSR_LOAD_COUNT, 0);
    vmx::vmwrite_counted(F::VM_ENTRY_MSR_LOAD_COUNT, 0);
    vmx::vmwrite_counted(F::VM_ENTRY_INTR_INFO_FIELD, 0);
    vmx::vmwrite_counted(F::EPT_POINTER, ept.eptp());
    vmx::vmwrite_counted(F::VIRTUAL_PROCESSOR_ID, vpid.into());
    vmx::vmwrite_counted(F::VMCS_LINK_POINTER, u64::MAX);
    vmx::vmwrite_counted(F::CR0_GUEST_HOST_MASK, 0);
    vmx::vmwrite_counted(F::CR4_GUEST_HOST_MASK, 0);

    // Guest: 64-bit, the L1's own address space and descriptor tables.
    let (cr0, cr3, cr4) = (read_cr(0), read_cr(3), read_cr(4));
    vmx::vmwrite_counted(F::GUEST_CR0, cr0);
    vmx::vmwrite_counted(F::GUEST_CR3, cr3);
    vmx::vmwrite_counted(F::GUEST_CR4, cr4);
    vmx::vmwrite_counted(F::CR0_READ_SHADOW, cr0);
    vmx::vmwrite_counted(F::CR4_READ_SHADOW, cr4);
    for (sel, base, limit, ar, s, a) in [
        (F::GUEST_CS_SELECTOR, F::GUEST_CS_BASE, F::GUEST_CS_LIMIT, F::GUEST_CS_AR_BYTES, 0x08, 0xA09B),
        (F::GUEST_SS_SELECTOR, F::GUEST_SS_BASE, F::GUEST_SS_LIMIT, F::GUEST_SS_AR_BYTES, 0x10, 0xC093),
        (F::GUEST_DS_SELECTOR, F::GUEST_DS_BASE, F::GUEST_DS_LIMIT, F::GUEST_DS_AR_BYTES, 0x10, 0xC093),
        (F::GUEST_ES_SELECTOR, F::GUEST_ES_BASE, F::GUEST_ES_LIMIT, F::GUEST_ES_AR_BYTES, 0x10, 0xC093),
        (F::GUEST_FS_SELECTOR, F::GUEST_FS_BASE, F::GUEST_FS_LIMIT, F::GUEST_FS_AR_BYTES, 0x10, 0xC093),
        (F::GUEST_GS_SELECTOR, F::GUEST_GS_BASE, F::GUEST_GS_LIMIT, F::GUEST_GS_AR_BYTES, 0x10, 0xC093),
    ] {
        vmx::vmwrite_counted(sel, s);
        vmx::vmwrite_counted(base, 0);
        vmx::vmwrite_counted(limit, 0xFFFF_FFFF);
        vmx::vmwrite_counted(ar, a);
    }
    vmx::vmwrite_counted(F::GUEST_TR_SELECTOR, 0x18);
    vmx::vmwrite_counted(F::GUEST_TR_BASE, crate::boot::tss_base());
    vmx::vmwrite_counted(F::GUEST_TR_LIMIT, 103);
    vmx::vmwrite_counted(F::GUEST_TR_AR_BYTES, 0x8B);
    vmx::vmwrite_counted(F::GUEST_LDTR_SELECTOR, 0);
    vmx::vmwrite_counted(F::GUEST_LDTR_AR_BYTES, 1 << 16);
    vmx::vmwrite_counted(F::GUEST_GDTR_BASE, crate::boot::gdt_base());
    vmx::vmwrite_counted(F::GUEST_GDTR_LIMIT, 39);
    vmx::vmwrite_counted(F::GUEST_IDTR_BASE, crate::boot::idt_base());
    vmx::vmwrite_counted(F::GUEST_IDTR_LIMIT, 32 * 16 - 1);
    vmx::vmwrite_counted(F::GUEST_DR7, 0x400);
    vmx::vmwrite_counted(F::GUEST_RFLAGS, 0x2);
    vmx::vmwrite_counted(F::GUEST_RSP, stack_top);
    vmx::vmwrite_counted(F::GUEST_RIP, rip);
    vmx::vmwrite_counted(F::GUEST_IA32_DEBUGCTL, 0);
    vmx::vmwrite_counted(F::GUEST_SYSENTER_CS, 0);
    vmx::vmwrite_counted(F::GUEST_SYSENTER_ESP, 0);
    vmx::vmwrite_counted(F::GUEST_SYSENTER_EIP, 0);
    vmx::vmwrite_counted(F::GUEST_ACTIVITY_STATE, 0);
    vmx::vmwrite_counted(F::GUEST_INTERRUPTIBILITY_INFO, 0);
    vmx::vmwrite_counted(F::GUEST_PENDING_DBG_EXCEPTIONS, 0);

    // Host: the L1 itself (SDM 25.5).
    vmx::vmwrite_counted(F::HOST_CR0, cr0);
    vmx::vmwrite_counted(F::HOST_CR3, cr3);
    vmx::vmwrite_counted(F::HOST_CR4, cr4);
    vmx::vmwrite_counted(F::HOST_CS_SELECTOR, 0x08);
    for f in [F::HOST_SS_SELECTOR, F::HOST_DS_SELECTOR, F::HOST_ES_SELECTOR, F::HOST_FS_SELECTOR, F::HOST_GS_SELECTOR] {
        vmx::vmwrite_counted(f, 0x10);
    }
    vmx::vmwrite_counted(F::HOST_TR_SELECTOR, 0x18);
    vmx::vmwrite_counted(F::HOST_FS_BASE, 0);
    vmx::vmwrite_counted(F::HOST_GS_BASE, 0);
    vmx::vmwrite_counted(F::HOST_TR_BASE, crate::boot::tss_base());
    vmx::vmwrite_counted(F::HOST_GDTR_BASE, crate::boot::gdt_base());
    vmx::vmwrite_counted(F::HOST_IDTR_BASE, crate::boot::idt_base());
    vmx::vmwrite_counted(F::HOST_IA32_SYSENTER_CS, 0);
    vmx::vmwrite_counted(F::HOST_IA32_SYSENTER_ESP, 0);
    vmx::vmwrite_counted(F::HOST_IA32_SYSENTER_EIP, 0);
    vmx::vmwrite_counted(F::HOST_RIP, nvmx_vmx::entry::exit_rip());
    Ok(())
}

/// Runs the workload; prints its counters.
pub fn run(caps: &VmxCaps, args: &Args) {
    let mut out = Console;
    let total = if args.exits == 0 { u64::MAX } else { args.exits };
    let _ = writeln!(out, "l1: forum workload, {} L2 exits, 2 L2 vcpus", args.exits);
    let mut exits = [0u64; 80];
    let mut ticks = 0;
    if start(caps, total, &mut exits, args.time.then_some(&mut ticks)).is_err() {
        let _ = writeln!(out, "l1: forum workload aborted");
    }
    for (i, name) in vmx::INSN_NAMES.iter().enumerate() {
        let _ = writeln!(out, "l1: insn {name} {}", vmx::INSN_COUNT[i].load(Relaxed));
    }
    let mut sum = 0;
    for (reason, &n) in exits.iter().enumerate() {
        if n != 0 {
            sum += n;
            let _ = writeln!(out, "l1: exit {reason} {} {n}", nvmx_vmx::exit::exit_reason_mnemonic(reason as u16));
        }
    }
    let _ = writeln!(out, "l1: summary exits={sum} failures={}", vmx::FAILURES.load(Relaxed));
    if args.time && sum != 0 {
        // The L1's whole path per L2 exit (its handler, its VMX
        // instructions, L2's instructions; under nvmx also L0's work) in TSC ticks.
        let _ = writeln!(out, "l1: time {ticks} tsc ticks for {sum} L2 exits, {} per L2 exit", ticks / sum);
    }
}

/// VMXON (SDM 24.7): CR0/CR4 fixed bits, CR4.VMXE, a region with the
/// revision id. Returns the VMXON region.
pub fn enter_vmx_operation(caps: &VmxCaps) -> Result<u64, ()> {
    let (cr0_f0, cr0_f1) = caps.cr0_fixed();
    let (cr4_f0, cr4_f1) = caps.cr4_fixed();
    // SAFETY: the fixed bits are what VMX operation requires of CR0/CR4.
    unsafe {
        core::arch::asm!("mov cr0, {}", in(reg) (read_cr(0) | cr0_f0) & cr0_f1);
        core::arch::asm!("mov cr4, {}", in(reg) (read_cr(4) | cr4_f0 | (1 << 13)) & cr4_f1);
    }
    let region = alloc_page();
    // SAFETY: pool pages; the revision id goes in the first dword (SDM 25.2).
    unsafe { *(region as *mut u32) = caps.revision_id() };
    must("VMXON", vmx::vmxon(region))?;
    Ok(region)
}

/// CPUID leaf ("NVMX") the timed forum loop executes at its start (ECX 0)
/// and end (ECX 1): nvmx counts L0's work for `bench` only in between, the
/// window the L1 times. On a CPU it is an unused leaf like any other.
const BENCH_WINDOW_LEAF: u32 = 0x4E56_4D58;

fn bench_window(edge: u32) {
    let _ = core::arch::x86_64::__cpuid_count(BENCH_WINDOW_LEAF, edge);
}

/// `ticks`: time the L2-exit loop (the `time` argument).
fn start(caps: &VmxCaps, total: u64, exits: &mut [u64; 80], mut ticks: Option<&mut u64>) -> Result<(), ()> {
    enter_vmx_operation(caps)?;
    let rev = caps.revision_id();

    let mut ept = Ept { pml4: alloc_page() };
    let (stacks, data) = (&raw mut L2_STACKS as u64, &raw mut L2_DATA as u64);
    let mut vcpus: [L2Vcpu; 2] = core::array::from_fn(|_| {
        let vmcs = alloc_page();
        // SAFETY: a pool page; revision id first.
        unsafe { *(vmcs as *mut u32) = rev };
        let mut regs = L2Regs::default();
        regs.gpr[6] = data; // RSI: the data pages
        L2Vcpu { vmcs, launched: false, regs }
    });
    for (i, v) in vcpus.iter().enumerate() {
        must("VMCLEAR", vmx::vmclear(v.vmcs))?;
        must("VMPTRLD", vmx::vmptrld(v.vmcs))?;
        setup_vmcs(caps, &ept, i as u16 + 1, stacks + 16384 * (i as u64 + 1), &raw const l2_entry as u64)?;
    }
    if vmx::vmptrst() != vcpus[1].vmcs {
        let _ = writeln!(Console, "l1: VMPTRST does not name the VMCS just loaded");
    }

    let mut cur = 1;
    let mut n = 0u64;
    if ticks.is_some() {
        bench_window(0);
    }
    // SAFETY: RDTSC has no side effects.
    let t0 = unsafe { core::arch::x86_64::_rdtsc() };
    while n < total {
        if n % SWITCH_EVERY == 0 && n != 0 {
            // Switch vCPUs the way a hypervisor migrates a VMCS: VMCLEAR
            // (launch state becomes clear), VMPTRLD the other one.
            must("VMCLEAR", vmx::vmclear(vcpus[cur].vmcs))?;
            vcpus[cur].launched = false;
            cur ^= 1;
            must("VMPTRLD", vmx::vmptrld(vcpus[cur].vmcs))?;
        }
        if n % UNMAP_EVERY == 0 && n != 0 {
            for p in 0..DATA_PAGES as u64 {
                ept.unmap(data + p * 4096);
            }
            must("INVEPT", vmx::invept_single(ept.eptp()))?;
            must("INVVPID", vmx::invvpid_single(1))?;
            must("INVVPID", vmx::invvpid_single(2))?;
        }
        let v = &mut vcpus[cur];
        vmx::count_entry(!v.launched);
        // SAFETY: the current VMCS is fully set up with HOST_RIP = exit_rip().
        let rflags = unsafe { nvmx_vmx::entry::enter(&mut v.regs, v.launched) };
        if rflags != 0 {
            let e = if rflags & 1 != 0 { VmFail::Invalid } else { VmFail::Valid(vmx::vmread(F::VM_INSTRUCTION_ERROR) as u32) };
            vmx::FAILURES.fetch_add(1, Relaxed);
            vmx::report(if v.launched { "VMRESUME" } else { "VMLAUNCH" }, "", e);
            return Err(());
        }
        v.launched = true;
        n += 1;
        if total != u64::MAX && n % (total / 4).max(1) == 0 {
            let _ = writeln!(Console, "l1: progress {n}/{total} L2 exits");
        }
        handle_exit(v, &mut ept, exits)?;
    }
    if let Some(t) = ticks.as_deref_mut() {
        // SAFETY: as above.
        *t = unsafe { core::arch::x86_64::_rdtsc() } - t0;
        bench_window(1);
    }
    for v in &vcpus {
        must("VMCLEAR", vmx::vmclear(v.vmcs))?;
    }
    must("VMXOFF", vmx::vmxoff())
}

/// Handles one L2 exit with the VMREAD/VMWRITE burst of a real hypervisor.
fn handle_exit(v: &mut L2Vcpu, ept: &mut Ept, exits: &mut [u64; 80]) -> Result<(), ()> {
    let reason = vmx::vmread(F::VM_EXIT_REASON) as u32;
    let qual = vmx::vmread(F::EXIT_QUALIFICATION);
    let len = vmx::vmread(F::VM_EXIT_INSTRUCTION_LEN);
    let rip = vmx::vmread(F::GUEST_RIP);
    let _rsp = vmx::vmread(F::GUEST_RSP);
    let _rflags = vmx::vmread(F::GUEST_RFLAGS);
    let intr = vmx::vmread(F::GUEST_INTERRUPTIBILITY_INFO);
    let idt_vectoring = vmx::vmread(F::IDT_VECTORING_INFO_FIELD);
    let _intr_info = vmx::vmread(F::VM_EXIT_INTR_INFO);
    let basic = (reason & 0xFFFF) as usize;
    if let Some(c) = exits.get_mut(basic) {
        *c += 1;
    }
    if idt_vectoring & (1 << 31) != 0 {
        let _ = writeln!(Console, "l1: L2 exit during event delivery ({idt_vectoring:#x})");
    }
    let skip = match basic {
        10 => {
            // CPUID: a fixed, hypervisor-chosen answer.
            v.regs.gpr[0] = 0xD;
            v.regs.gpr[3] = 0x756e_6547;
            v.regs.gpr[1] = 0x6c65_746e;
            v.regs.gpr[2] = 0x4965_6e69;
            true
        }
        30 => {
            if qual & 8 != 0 {
                v.regs.gpr[0] |= 0xFF; // IN from a port with no device
            }
            true
        }
        31 => {
            v.regs.gpr[0] = 0;
            v.regs.gpr[2] = 0;
            true
        }
        32 | 12 | 18 => true,
        48 => {
            ept.map(vmx::vmread(F::GUEST_PHYSICAL_ADDRESS));
            must("INVEPT", vmx::invept_single(ept.eptp()))?;
            false
        }
        _ => {
            let _ = writeln!(Console, "l1: unexpected L2 exit {reason:#x} qualification {qual:#x} rip {rip:#x}");
            vmx::FAILURES.fetch_add(1, Relaxed);
            return Err(());
        }
    };
    if skip {
        vmx::vmwrite(F::GUEST_RIP, rip + len);
    }
    // No STI/MOV-SS blocking survives the skipped instruction; also clears
    // the blocking-by-SMI bit Bochs 2.7 may save by mistake (PLATFORM.md).
    vmx::vmwrite(F::GUEST_INTERRUPTIBILITY_INFO, intr & !0x7);
    vmx::vmwrite(F::VM_ENTRY_INTR_INFO_FIELD, 0);
    Ok(())
}
