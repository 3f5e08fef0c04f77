//! The `race` workload (issue 12, item 3): two CPUs of one L1 race on what a
//! VM entry reads from memory. The BSP brings the AP up with INIT-SIPI-SIPI
//! (a real-mode trampoline to long mode at 0x8000); the AP then rewrites, in
//! a tight loop, what the BSP's next entry reads — the value of the VM-entry
//! MSR-load list's one entry (IA32_SYSENTER_EIP: a canonical value, or a
//! non-canonical one an entry must refuse, SDM 27.4), the MSR bitmap's read
//! bit for that MSR, the I/O bitmap's bit for port 0x80, the revision
//! identifier of the region the VMCS link pointer names (right, or wrong:
//! SDM 27.3.1.5) and the EPT1-2 leaf of L2's code page (valid, or
//! write-only = misconfigured, SDM 29.3.3.1) — while the BSP runs VMCLEAR,
//! VMPTRLD, INVEPT, VMLAUNCH and VMRESUME in a loop. L2 writes port 0x80,
//! reads the MSR and executes VMCALL.
//!
//! Every outcome is classified; the allowed ones are what the SDM gives for
//! one of the values the AP wrote at the time:
//! - entry failure 33 with qualification 4 (the link region's revision was wrong),
//! - exit 30 (OUT to port 0x80; its I/O bitmap bit was set),
//! - entry failure 34 (MSR loading) with qualification 1 (the bad value),
//! - exit 31 (RDMSR of 0x176; the bitmap bit was set), guest SYSENTER_EIP good,
//! - exit 18 (VMCALL; the bit was clear) with L2 having read the good value,
//! - exit 49 (EPT misconfiguration of the code page; the leaf was bad).
//!
//! Anything else — an entry that succeeded but left L2 a value an entry must
//! refuse, a VMfail, another exit — is counted as disallowed and printed.
//! Start and stop are fixed IPIs between the two local APICs, polled in IRR
//! with interrupts off (no handlers needed): AP → BSP 0x42 "up" and 0x43
//! "stopped"; BSP → AP 0x40 "start" and 0x41 "stop".

use core::arch::global_asm;
use core::fmt::Write;
use core::sync::atomic::{AtomicU64, Ordering};

use nvmx_vmx::caps::VmxCaps;
use nvmx_vmx::controls::proc1;
use nvmx_vmx::field::Field as F;

use crate::console::Console;
use crate::forum::{self, Ept};
use crate::platform::{IRR, SVR, lapic_read, lapic_write};
use crate::vmx::{self, VmFail};

/// Where the trampoline runs (SIPI vector 0x08).
const TRAMP: u64 = 0x8000;
const V_UP: u8 = 0x42;
const V_STOPPED: u8 = 0x43;
const V_START: u8 = 0x40;
const V_STOP: u8 = 0x41;
/// IA32_SYSENTER_EIP: written by the MSR-load list, read by L2.
const MSR: u32 = 0x176;
const GOOD: u64 = 0xFFFF_8000_0000_1000;
/// Non-canonical: WRMSR would #GP, so an entry loading it fails (SDM 27.4).
const BAD: u64 = 0x0000_8000_0000_0000;

global_asm!(
    r#"
    .section .text
    .balign 16
    .global race_tramp_start, race_tramp_end, race_tramp_cr3, race_tramp_rsp, race_tramp_entry
    .set RT, 0x8000
    .code16
race_tramp_start:
    cli
    cld
    movw %cs, %ax
    movw %ax, %ds
    lgdtl (race_tramp_gdtr - race_tramp_start)
    movl %cr0, %eax
    andl $0x9FFFFFFF, %eax
    orl $1, %eax
    movl %eax, %cr0
    ljmpl $0x18, $(RT + race_tramp_pm - race_tramp_start)
    .code32
race_tramp_pm:
    movw $0x10, %ax
    movw %ax, %ds
    movw %ax, %es
    movw %ax, %ss
    movl %cr4, %eax
    orl $(1 << 5), %eax
    movl %eax, %cr4
    movl (RT + race_tramp_cr3 - race_tramp_start), %eax
    movl %eax, %cr3
    movl $0xC0000080, %ecx
    rdmsr
    orl $(1 << 8), %eax
    wrmsr
    movl %cr0, %eax
    orl $((1 << 31) | (1 << 5)), %eax
    movl %eax, %cr0
    ljmpl $0x08, $(RT + race_tramp_lm - race_tramp_start)
    .code64
race_tramp_lm:
    movq (RT + race_tramp_rsp - race_tramp_start), %rsp
    movq (RT + race_tramp_entry - race_tramp_start), %rax
    jmp *%rax
    .balign 8
race_tramp_gdt:
    /* 0x08 64-bit code and 0x10 data as the L1's own GDT (its IDT's
       gates name 0x08), 0x18 32-bit code for the way there. */
    .quad 0
    .quad 0x00209a0000000000
    .quad 0x00cf92000000ffff
    .quad 0x00cf9a000000ffff
race_tramp_gdtr:
    .short 31
    .long RT + race_tramp_gdt - race_tramp_start
    .balign 8
race_tramp_cr3: .quad 0
race_tramp_rsp: .quad 0
race_tramp_entry: .quad 0
race_tramp_end:

    /* L2: write POST port 0x80, read the MSR the list loaded, report with
       VMCALL; alone on its page. */
    .balign 4096
    .global race_l2_entry
race_l2_entry:
    xor %eax, %eax
    outb %al, $0x80
    mov $0x176, %ecx
    rdmsr
    vmcall
    jmp race_l2_entry
    .balign 4096
    "#,
    options(att_syntax)
);

unsafe extern "C" {
    static race_tramp_start: u8;
    static race_tramp_end: u8;
    static race_tramp_cr3: u8;
    static race_tramp_rsp: u8;
    static race_tramp_entry: u8;
    static race_l2_entry: u8;
}

#[repr(C, align(4096))]
struct Page([u8; 4096]);
static mut AP_STACK: [Page; 4] = [const { Page([0; 4096]) }; 4];
static mut MSR_LIST: Page = Page([0; 4096]);
static mut MSR_BITMAP: Page = Page([0; 4096]);
static mut IO_BITMAP_A: Page = Page([0; 4096]);
static mut IO_BITMAP_B: Page = Page([0; 4096]);
/// The VMCS link pointer's target: its revision identifier raced.
static mut LINK: Page = Page([0; 4096]);

/// What the AP races on: host-physical = L1-physical addresses (identity).
static T_LIST_VALUE: AtomicU64 = AtomicU64::new(0);
static T_BITMAP_BYTE: AtomicU64 = AtomicU64::new(0);
static T_EPT_LEAF: AtomicU64 = AtomicU64::new(0);
static T_LEAF_GOOD: AtomicU64 = AtomicU64::new(0);
static T_IO_BYTE: AtomicU64 = AtomicU64::new(0);
static T_LINK_REV: AtomicU64 = AtomicU64::new(0);
/// `scribble`: the current VMCS region too (0: not).
static T_REGION: AtomicU64 = AtomicU64::new(0);
static REVISION: AtomicU64 = AtomicU64::new(0);
/// The AP's writes (set when it stops).
static AP_WRITES: AtomicU64 = AtomicU64::new(0);

fn irr(v: u8) -> bool {
    lapic_read(IRR + 0x10 * u64::from(v / 32)) & (1 << (v % 32)) != 0
}

/// Fixed IPI, physical destination `apic_id` (SDM 11.6.1).
fn ipi(apic_id: u32, low: u32) {
    lapic_write(0x310, apic_id << 24);
    lapic_write(0x300, low);
}

fn spin(n: u64) {
    for _ in 0..n {
        core::hint::spin_loop();
    }
}

/// Waits for `v` in IRR (interrupts off: it stays there), at most `n` polls.
fn wait_irr(v: u8, n: u64) -> bool {
    for _ in 0..n {
        if irr(v) {
            return true;
        }
        spin(100);
    }
    false
}

/// The AP in long mode (from the trampoline): enable its LAPIC, say "up",
/// wait for "start", race until "stop", report the count, halt for good.
#[unsafe(no_mangle)]
extern "C" fn race_ap_main() -> ! {
    // The BSP's IDT: an exception here is reported, not a triple fault.
    let idtr: [u16; 5] = {
        let b = crate::boot::idt_base();
        [32 * 16 - 1, b as u16, (b >> 16) as u16, (b >> 32) as u16, (b >> 48) as u16]
    };
    // SAFETY: the IDT the BSP built; the descriptor lives on this stack.
    unsafe { core::arch::asm!("lidt [{}]", in(reg) idtr.as_ptr()) };
    lapic_write(SVR, 0x1FF);
    ipi(0, u32::from(V_UP));
    while !irr(V_START) {
        spin(100);
    }
    let list = T_LIST_VALUE.load(Ordering::Relaxed) as *mut u64;
    let byte = T_BITMAP_BYTE.load(Ordering::Relaxed) as *mut u8;
    let leaf = T_EPT_LEAF.load(Ordering::Relaxed) as *mut u64;
    let good = T_LEAF_GOOD.load(Ordering::Relaxed);
    let io = T_IO_BYTE.load(Ordering::Relaxed) as *mut u8;
    let link = T_LINK_REV.load(Ordering::Relaxed) as *mut u32;
    let revision = REVISION.load(Ordering::Relaxed) as u32;
    let region = T_REGION.load(Ordering::Relaxed) as *mut u64;
    // Write-only (R=0, W=1): an EPT misconfiguration (SDM 29.3.3.1).
    let bad = (good & !7) | 2;
    let mut writes = 0u64;
    let mut i = 0u64;
    loop {
        for _ in 0..64 {
            i = i.wrapping_add(0x9E37_79B9_7F4A_7C15);
            // SAFETY: the BSP's MSR list, MSR bitmap and EPT1-2 leaf, all in
            // this L1's memory; racing on them is the point (aligned stores).
            unsafe {
                list.write_volatile(if i >> 63 != 0 { BAD } else { GOOD });
                byte.write_volatile(if i >> 62 & 1 != 0 { 0x40 } else { 0 });
                leaf.write_volatile(if i >> 61 & 1 != 0 { bad } else { good });
                io.write_volatile(if i >> 60 & 1 != 0 { 1 } else { 0 });
                // A wrong revision identifier 1 in 8 times (the others would hide the rest).
                link.write_volatile(if i >> 57 & 7 == 0 { revision ^ 1 } else { revision });
                if !region.is_null() {
                    // Any quadword of the current VMCS region but the first
                    // (revision identifier and abort indicator), any value.
                    region.add(1 + ((i >> 20) % 511) as usize).write_volatile(i);
                    writes += 1;
                }
            }
            writes += 5;
        }
        if irr(V_STOP) {
            break;
        }
    }
    // SAFETY: as above; quiescent, valid values at the end.
    unsafe {
        list.write_volatile(GOOD);
        byte.write_volatile(0);
        leaf.write_volatile(good);
        io.write_volatile(0);
        link.write_volatile(revision);
    }
    AP_WRITES.store(writes, Ordering::Release);
    ipi(0, u32::from(V_STOPPED));
    crate::boot::halt()
}

/// INIT-SIPI-SIPI to APIC ID 1 with the trampoline at 0x8000.
fn start_ap() -> bool {
    // SAFETY: the trampoline's bytes go to 0x8000, free low memory of this
    // L1 (below the boot information at 0x10000, above the real-mode IVT
    // and BIOS data); its three slots are filled there.
    unsafe {
        let start = &raw const race_tramp_start as u64;
        let len = &raw const race_tramp_end as u64 - start;
        core::ptr::copy_nonoverlapping(start as *const u8, TRAMP as *mut u8, len as usize);
        let slot = |s: *const u8| (TRAMP + (s as u64 - start)) as *mut u64;
        slot(&raw const race_tramp_cr3).write_volatile(forum::read_cr(3));
        let stack_top = (&raw mut AP_STACK) as u64 + 4 * 4096;
        slot(&raw const race_tramp_rsp).write_volatile(stack_top);
        slot(&raw const race_tramp_entry).write_volatile(race_ap_main as *const () as u64);
    }
    // SDM 10.4.4.1 / 8.4.4.1: INIT, 10 ms, SIPI, 200 us, SIPI.
    ipi(1, 0x4500);
    spin(200_000);
    ipi(1, 0x4600 | (TRAMP >> 12) as u32);
    spin(20_000);
    if irr(V_UP) {
        return true;
    }
    ipi(1, 0x4600 | (TRAMP >> 12) as u32);
    wait_irr(V_UP, 200_000)
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Outcome {
    LinkRefused,
    IoExit,
    MsrLoadRefused,
    RdmsrExit,
    L2ReadGood,
    EptMisconfig,
    Disallowed,
}

const NAMES: [&str; 7] = ["entry-failure-33-q4-link", "exit-30-io", "entry-failure-34-q1", "exit-31-rdmsr", "exit-18-l2-read-good", "exit-49-ept-misconfig", "disallowed"];

/// One entry and what came of it; `launched` tells VMRESUME from VMLAUNCH.
fn enter(regs: &mut nvmx_vmx::entry::GuestRegs, launch: bool, shown: &mut u32) -> (Outcome, bool) {
    vmx::count_entry(launch);
    // SAFETY: HOST_RIP is the exit stub and the host state the L1's own.
    let rflags = unsafe { nvmx_vmx::entry::enter(regs, !launch) };
    let mut disallowed = |what: core::fmt::Arguments| {
        if *shown < 8 {
            *shown += 1;
            let _ = writeln!(Console, "l1: race disallowed: {what}");
        }
        (Outcome::Disallowed, false)
    };
    if rflags != 0 {
        let e = if rflags & 1 != 0 { VmFail::Invalid } else { VmFail::Valid(vmx::vmread(F::VM_INSTRUCTION_ERROR) as u32) };
        return disallowed(format_args!("{} failed: {e:?}", if launch { "VMLAUNCH" } else { "VMRESUME" }));
    }
    let reason = vmx::vmread(F::VM_EXIT_REASON);
    let qual = vmx::vmread(F::EXIT_QUALIFICATION);
    let sysenter = vmx::vmread(F::GUEST_SYSENTER_EIP);
    match reason {
        // The link pointer's region had a wrong revision (SDM 27.3.1.5, 27.8).
        r if r == (1 << 31) | 33 && qual == 4 => (Outcome::LinkRefused, false),
        // OUT imm8 to port 0x80 (size 1, immediate operand: SDM table 28-5)
        // while its I/O bitmap bit was set.
        30 if qual == 0x80_0040 => (Outcome::IoExit, false),
        r if r == (1 << 31) | 34 && qual == 1 => (Outcome::MsrLoadRefused, false),
        31 if regs.gpr[1] as u32 == MSR && sysenter == GOOD => (Outcome::RdmsrExit, false),
        18 => {
            let read = (regs.gpr[2] << 32) | (regs.gpr[0] & 0xFFFF_FFFF);
            if read == GOOD && sysenter == GOOD {
                // Past the VMCALL, back to the loop: VMRESUME next.
                let rip = vmx::vmread(F::GUEST_RIP);
                vmx::vmwrite(F::GUEST_RIP, rip + vmx::vmread(F::VM_EXIT_INSTRUCTION_LEN));
                (Outcome::L2ReadGood, true)
            } else {
                disallowed(format_args!("L2 ran and read {read:#x} (guest SYSENTER_EIP {sysenter:#x})"))
            }
        }
        49 => (Outcome::EptMisconfig, false),
        _ => disallowed(format_args!("exit reason {reason:#x} qualification {qual:#x}, SYSENTER_EIP {sysenter:#x}")),
    }
}

/// Runs the workload: `iterations` rounds of VMCLEAR, VMPTRLD, INVEPT,
/// VMLAUNCH (and VMRESUME after an L2 that ran).
///
/// With `scribble` the AP also writes random quadwords all over the current
/// VMCS region, which stays current the whole run (one VMPTRLD; VMLAUNCH
/// until an entry succeeds, then VMRESUME). The SDM leaves the result
/// undefined (25.11.1: software must not touch an active VMCS's region), so
/// this runs only nested, where nvmx acts on its copy from VMPTRLD: the
/// outcomes must still be the allowed ones above.
pub fn run(caps: &VmxCaps, iterations: u64, scribble: bool) {
    let mut out = Console;
    let iterations = if iterations == 0 { 2000 } else { iterations };
    let what = if scribble { ", the current VMCS region scribbled" } else { "" };
    let _ = writeln!(out, "l1: race workload, {iterations} rounds, 2 cpus{what}");
    crate::platform::map_mmio();
    lapic_write(SVR, 0x1FF);
    if !start_ap() {
        let _ = writeln!(out, "l1: race: the AP did not come up (no IPI {V_UP:#x})");
        return;
    }
    let _ = writeln!(out, "l1: race: AP up (INIT-SIPI-SIPI, IPI {V_UP:#x} back)");
    if vmx_setup(caps).is_err() {
        let _ = writeln!(out, "l1: race: VMX setup failed");
        return;
    }
    let vmcs = VMCS.load(Ordering::Relaxed);
    let eptp = EPTP.load(Ordering::Relaxed);
    if scribble {
        T_REGION.store(vmcs, Ordering::Relaxed);
    }
    ipi(1, u32::from(V_START));
    let mut counts = [0u64; 7];
    let mut shown = 0;
    let mut regs = nvmx_vmx::entry::GuestRegs::default();
    let mut launched = false;
    for _ in 0..iterations {
        let switch = if scribble { Ok(()) } else { vmx::vmclear(vmcs).and_then(|()| vmx::vmptrld(vmcs)) };
        if let Err(e) = switch.and_then(|()| vmx::invept_single(eptp)) {
            let _ = writeln!(out, "l1: race disallowed: VMCLEAR/VMPTRLD/INVEPT failed: {e:?}");
            counts[Outcome::Disallowed as usize] += 1;
            continue;
        }
        vmx::vmwrite(F::GUEST_RIP, &raw const race_l2_entry as u64);
        let (o, ran) = enter(&mut regs, !(scribble && launched), &mut shown);
        counts[o as usize] += 1;
        // A VM exit (not an entry failure) leaves the VMCS launched (SDM 26.1).
        launched |= matches!(o, Outcome::IoExit | Outcome::RdmsrExit | Outcome::L2ReadGood | Outcome::EptMisconfig);
        if ran {
            let (o, _) = enter(&mut regs, false, &mut shown);
            counts[o as usize] += 1;
        }
    }
    if scribble {
        // Back to memory from nvmx's copy: the region is whole again.
        let _ = vmx::vmclear(vmcs);
    }
    ipi(1, u32::from(V_STOP));
    let stopped = wait_irr(V_STOPPED, 1_000_000);
    let writes = AP_WRITES.load(Ordering::Acquire);
    let _ = writeln!(out, "l1: race ap stopped={} writes={writes}", if stopped { "yes" } else { "no" });
    let mut classes = 0;
    for (n, name) in counts.iter().zip(NAMES) {
        if *n != 0 {
            let _ = writeln!(out, "l1: race outcome {name} {n}");
            if name != "disallowed" {
                classes += 1;
            }
        }
    }
    let _ = writeln!(out, "l1: race summary rounds={iterations} classes={classes} disallowed={}", counts[Outcome::Disallowed as usize]);
}

static VMCS: AtomicU64 = AtomicU64::new(0);
static EPTP: AtomicU64 = AtomicU64::new(0);

/// VMXON, a VMCS for L2 (forum's setup), the MSR bitmap and the entry
/// MSR-load list, EPT1-2 identity for the first 16 MiB.
fn vmx_setup(caps: &VmxCaps) -> Result<(), ()> {
    forum::enter_vmx_operation(caps)?;
    let mut ept = Ept { pml4: forum::alloc_page() };
    for page in 0..4096u64 {
        ept.map(page << 12);
    }
    let code = &raw const race_l2_entry as u64;
    let leaf = ept_leaf(&ept, code);
    T_EPT_LEAF.store(leaf as u64, Ordering::Relaxed);
    // SAFETY: the leaf was just written by `map`.
    T_LEAF_GOOD.store(unsafe { *leaf }, Ordering::Relaxed);
    let vmcs = forum::alloc_page();
    // SAFETY: a fresh pool page; the revision id goes first (SDM 25.2).
    unsafe { (vmcs as *mut u32).write(caps.revision_id()) };
    vmx::vmclear(vmcs).map_err(|_| ())?;
    vmx::vmptrld(vmcs).map_err(|_| ())?;
    forum::setup_vmcs(caps, &ept, 7, 0, code)?;
    let proc = vmx::vmread(F::CPU_BASED_VM_EXEC_CONTROL) as u32;
    if caps.procbased().1 & proc1::USE_MSR_BITMAPS == 0 {
        let _ = writeln!(Console, "l1: race: no MSR bitmaps");
        return Err(());
    }
    if caps.procbased().1 & proc1::USE_IO_BITMAPS == 0 {
        let _ = writeln!(Console, "l1: race: no I/O bitmaps");
        return Err(());
    }
    let proc = (proc & !proc1::UNCONDITIONAL_IO_EXITING) | proc1::USE_MSR_BITMAPS | proc1::USE_IO_BITMAPS;
    vmx::vmwrite(F::CPU_BASED_VM_EXEC_CONTROL, u64::from(proc));
    let (io_a, io_b, link) = (&raw mut IO_BITMAP_A as u64, &raw mut IO_BITMAP_B as u64, &raw mut LINK as u64);
    vmx::vmwrite(F::IO_BITMAP_A, io_a);
    vmx::vmwrite(F::IO_BITMAP_B, io_b);
    REVISION.store(u64::from(caps.revision_id()), Ordering::Relaxed);
    // SAFETY: this module's page: a region with the right revision to start.
    unsafe { (link as *mut u32).write_volatile(caps.revision_id()) };
    vmx::vmwrite(F::VMCS_LINK_POINTER, link);
    T_IO_BYTE.store(io_a + 0x80 / 8, Ordering::Relaxed);
    T_LINK_REV.store(link, Ordering::Relaxed);
    let (list, bitmap) = (&raw mut MSR_LIST as u64, &raw mut MSR_BITMAP as u64);
    // SAFETY: this module's pages; one list entry: index, reserved, value.
    unsafe {
        (list as *mut u64).write_volatile(u64::from(MSR));
        ((list + 8) as *mut u64).write_volatile(GOOD);
    }
    vmx::vmwrite(F::MSR_BITMAP, bitmap);
    vmx::vmwrite(F::VM_ENTRY_MSR_LOAD_ADDR, list);
    vmx::vmwrite(F::VM_ENTRY_MSR_LOAD_COUNT, 1);
    T_LIST_VALUE.store(list + 8, Ordering::Relaxed);
    T_BITMAP_BYTE.store(bitmap + u64::from(MSR / 8), Ordering::Relaxed);
    VMCS.store(vmcs, Ordering::Relaxed);
    EPTP.store(ept.eptp(), Ordering::Relaxed);
    Ok(())
}

/// The EPT1-2 leaf entry of the 4 KiB page at `gpa` (mapped before).
fn ept_leaf(ept: &Ept, gpa: u64) -> *mut u64 {
    let mut table = ept.pml4;
    for shift in [39, 30, 21] {
        // SAFETY: the EPT tables are the forum pool's pages, mapped by `map`.
        table = unsafe { *((table + 8 * ((gpa >> shift) & 511)) as *const u64) } & !0xFFF;
    }
    (table + 8 * ((gpa >> 12) & 511)) as *mut u64
}
