//! The selftest's interrupts part (issue 10): L1's LAPIC timer while its
//! L2 runs — exit 1 with and without "acknowledge interrupt on exit" (SDM
//! 26.2, 27.2.2), delivery through L2's IDT without external-interrupt
//! exiting, events L1 injects (SDM 27.6), interrupt and NMI windows (SDM
//! 26.7.5-26.7.6), virtual-NMI blocking (SDM 25.3, 26.7.6), HLT in L2 woken
//! by an interrupt. Each line prints the values it checks, so the bare and
//! the nested run compare them; nothing here depends on timing.

use core::arch::global_asm;

use nvmx_vmx::caps::VmxCaps;
use nvmx_vmx::controls::{adjust_controls, exit, pin, proc1};
use nvmx_vmx::entry::GuestRegs as L2Regs;
use nvmx_vmx::field::Field as F;

use crate::console::Text;
use crate::forum::Ept;
use crate::platform as pf;
use crate::selftest::{fresh_l2_vmcs, Tally};
use crate::vmx;

/// L1's timer vector, and the vector L1 injects.
const TIMER: u8 = 0x40;
const INJECTED: u8 = 0x50;

// L2 code and L2's interrupt handlers. A handler records the vector, the
// error code (all ones when none), the return RIP and counts, then IRETs.
global_asm!(
    r#"
    .global irq_l2_spin, irq_l2_sti_spin, irq_l2_sti_hlt, irq_l2_vmcall, irq_l2_window
    .global irq_l2_h02, irq_l2_h0d, irq_l2_h40, irq_l2_h50
irq_l2_spin:     mov ecx, 3000000
2:               dec ecx
                 jnz 2b
                 vmcall
irq_l2_sti_spin: sti
                 mov ecx, 3000000
2:               dec ecx
                 jnz 2b
                 cli
                 vmcall
irq_l2_sti_hlt:  sti
                 hlt
                 cli
                 vmcall
irq_l2_vmcall:   vmcall
irq_l2_window:   nop
                 sti
                 nop
                 nop
                 cli
                 vmcall

irq_l2_h02: push 2
            jmp irq_l2_noerr
irq_l2_h40: push 0x40
            jmp irq_l2_noerr
irq_l2_h50: push 0x50
            jmp irq_l2_noerr
irq_l2_h0d: push 0x0d
            jmp irq_l2_err
irq_l2_noerr:
            push rax
            mov rax, [rsp + 8]
            mov [rip + IRQ_L2_VEC], rax
            mov qword ptr [rip + IRQ_L2_ERR], -1
            mov rax, [rsp + 16]
            mov [rip + IRQ_L2_RIP], rax
            inc qword ptr [rip + IRQ_L2_COUNT]
            pop rax
            add rsp, 8
            iretq
irq_l2_err:
            push rax
            mov rax, [rsp + 8]
            mov [rip + IRQ_L2_VEC], rax
            mov rax, [rsp + 16]
            mov [rip + IRQ_L2_ERR], rax
            mov rax, [rsp + 24]
            mov [rip + IRQ_L2_RIP], rax
            inc qword ptr [rip + IRQ_L2_COUNT]
            pop rax
            add rsp, 16
            iretq
    "#
);

unsafe extern "C" {
    static irq_l2_spin: u8;
    static irq_l2_sti_spin: u8;
    static irq_l2_sti_hlt: u8;
    static irq_l2_vmcall: u8;
    static irq_l2_window: u8;
    static irq_l2_h02: u8;
    static irq_l2_h0d: u8;
    static irq_l2_h40: u8;
    static irq_l2_h50: u8;
}

#[unsafe(no_mangle)]
static mut IRQ_L2_VEC: u64 = 0;
#[unsafe(no_mangle)]
static mut IRQ_L2_ERR: u64 = 0;
#[unsafe(no_mangle)]
static mut IRQ_L2_RIP: u64 = 0;
#[unsafe(no_mangle)]
static mut IRQ_L2_COUNT: u64 = 0;

/// What L2's handlers saw: (count, vector, error code, RIP).
fn l2_seen() -> (u64, u64, u64, u64) {
    // SAFETY: written only by L2's handlers, which run on this CPU between
    // L1's VM entry and the exit that returns here.
    unsafe {
        (
            (&raw const IRQ_L2_COUNT).read_volatile(),
            (&raw const IRQ_L2_VEC).read_volatile(),
            (&raw const IRQ_L2_ERR).read_volatile(),
            (&raw const IRQ_L2_RIP).read_volatile(),
        )
    }
}

fn l2_reset() {
    // SAFETY: as `l2_seen`; L2 does not run now.
    unsafe {
        (&raw mut IRQ_L2_COUNT).write_volatile(0);
        (&raw mut IRQ_L2_VEC).write_volatile(0);
        (&raw mut IRQ_L2_ERR).write_volatile(0);
        (&raw mut IRQ_L2_RIP).write_volatile(0);
    }
}

#[repr(C, align(16))]
struct Idt([u128; 256]);
static mut L2_IDT: Idt = Idt([0; 256]);

fn addr(s: &u8) -> u64 {
    s as *const u8 as u64
}

/// L2's IDT: interrupt gates (CS 0x08) for the NMI, #GP and the two vectors.
fn l2_idt() -> u64 {
    // SAFETY: single-threaded; the table is static and only read by L2.
    unsafe {
        let idt = &mut *(&raw mut L2_IDT);
        for (v, h) in [(2usize, addr(&irq_l2_h02)), (13, addr(&irq_l2_h0d)), (0x40, addr(&irq_l2_h40)), (0x50, addr(&irq_l2_h50))] {
            let lo = (h & 0xffff) | (0x08 << 16) | (0x8e << 40) | ((h >> 16) & 0xffff) << 48;
            idt.0[v] = u128::from(lo) | (u128::from(h >> 32) << 64);
        }
        idt as *const Idt as u64
    }
}

fn check(t: &mut Tally, name: &str, ok: bool, values: core::fmt::Arguments<'_>) {
    t.value(name, "the values named", Text::<120>::of(values).as_str(), ok);
}

/// What one L2 run ended with.
#[derive(Clone, Copy)]
struct Exit {
    reason: u64,
    info: u64,
    rip: u64,
}

/// L2 on the current VMCS; L1's EPT maps pages on demand, and an event
/// whose delivery such an EPT violation interrupted is injected again
/// (SDM 28.2.4: IDT-vectoring information).
struct L2 {
    ept: Ept,
    launched: bool,
    /// Events L1 re-injected after its EPT violations.
    reinjected: u32,
}

impl L2 {
    fn run(&mut self) -> Option<Exit> {
        let mut regs = L2Regs::default();
        loop {
            vmx::count_entry(!self.launched);
            // SAFETY: the current VMCS is set up with HOST_RIP = exit_rip().
            if unsafe { nvmx_vmx::entry::enter(&mut regs, self.launched) } != 0 {
                return None;
            }
            let reason = vmx::vmread(F::VM_EXIT_REASON);
            if reason & (1 << 31) == 0 {
                self.launched = true;
            }
            if reason == 48 {
                self.ept.map(vmx::vmread(F::GUEST_PHYSICAL_ADDRESS));
                let _ = vmx::invept_single(self.ept.eptp());
                let idt = vmx::vmread(F::IDT_VECTORING_INFO_FIELD);
                if idt & (1 << 31) != 0 {
                    if idt & (1 << 11) != 0 {
                        vmx::vmwrite(F::VM_ENTRY_EXCEPTION_ERROR_CODE, vmx::vmread(F::IDT_VECTORING_ERROR_CODE));
                    }
                    vmx::vmwrite(F::VM_ENTRY_INSTRUCTION_LEN, vmx::vmread(F::VM_EXIT_INSTRUCTION_LEN));
                    vmx::vmwrite(F::VM_ENTRY_INTR_INFO_FIELD, idt & 0x8000_0FFF);
                    self.reinjected += 1;
                }
                continue;
            }
            return Some(Exit { reason, info: vmx::vmread(F::VM_EXIT_INTR_INFO), rip: vmx::vmread(F::GUEST_RIP) });
        }
    }
}

/// The controls of one check (each adjusted to what the CPU, or nvmx,
/// offers), L2's start, RFLAGS and interruptibility; no event injected.
struct Setup {
    pin: u32,
    proc: u32,
    exit: u32,
}

fn prepare(caps: &VmxCaps, s: &Setup, rip: u64, rflags: u64, interruptibility: u64) -> bool {
    let base_proc = proc1::UNCONDITIONAL_IO_EXITING | proc1::SECONDARY_CONTROLS;
    let (Ok(p), Ok(c), Ok(e)) = (
        adjust_controls(s.pin, caps.pinbased()),
        adjust_controls(base_proc | s.proc, caps.procbased()),
        adjust_controls(exit::HOST_ADDRESS_SPACE_SIZE | s.exit, caps.exit()),
    ) else {
        return false;
    };
    vmx::vmwrite(F::PIN_BASED_VM_EXEC_CONTROL, p.into());
    vmx::vmwrite(F::CPU_BASED_VM_EXEC_CONTROL, c.into());
    vmx::vmwrite(F::VM_EXIT_CONTROLS, e.into());
    vmx::vmwrite(F::GUEST_RIP, rip);
    vmx::vmwrite(F::GUEST_RFLAGS, rflags);
    vmx::vmwrite(F::GUEST_INTERRUPTIBILITY_INFO, interruptibility);
    vmx::vmwrite(F::GUEST_ACTIVITY_STATE, 0);
    vmx::vmwrite(F::VM_ENTRY_INTR_INFO_FIELD, 0);
    l2_reset();
    true
}

/// L1's LAPIC: enabled, LINT0/LINT1/error masked, TPR 0, timer divide 1;
/// the 8259s masked. Returns the timer count that lasts about 20000 TSC
/// ticks (measured: the timer's rate differs bare and nested).
fn lapic_setup() -> u32 {
    pf::outb(0x21, 0xFF);
    pf::outb(0xA1, 0xFF);
    pf::lapic_write(pf::SVR, 0x1FF);
    pf::lapic_write(pf::LVT_LINT0, 1 << 16);
    pf::lapic_write(pf::LVT_LINT1, 1 << 16);
    pf::lapic_write(pf::LVT_ERROR, 1 << 16);
    pf::lapic_write(pf::TPR, 0);
    pf::lapic_write(pf::TIMER_DIV, 0xB);
    pf::lapic_write(pf::LVT_TIMER, (1 << 16) | u32::from(TIMER));
    pf::lapic_write(pf::TIMER_INIT, u32::MAX);
    let t0 = pf::rdtsc();
    while pf::rdtsc() - t0 < 100_000 {
        core::hint::spin_loop();
    }
    let elapsed = u32::MAX - pf::lapic_read(pf::TIMER_CUR);
    pf::lapic_write(pf::TIMER_INIT, 0);
    (elapsed / 5).max(16)
}

/// One-shot timer interrupt at `TIMER` after `count`.
fn arm(count: u32) {
    pf::lapic_write(pf::LVT_TIMER, u32::from(TIMER));
    pf::lapic_write(pf::TIMER_INIT, count);
}

fn disarm() {
    pf::lapic_write(pf::TIMER_INIT, 0);
    pf::lapic_write(pf::LVT_TIMER, (1 << 16) | u32::from(TIMER));
}

/// The L1's own IF window: `sti; nop; cli` (SDM 6.8.3: one instruction
/// after STI, then a pending interrupt is taken through L1's IDT).
fn l1_window() {
    // SAFETY: L1's IDT (`platform::install_idt`) handles every vector.
    unsafe { core::arch::asm!("sti", "nop", "nop", "cli", options(nomem, nostack)) };
}

fn reason_name(e: &Option<Exit>) -> (u64, u64, u64) {
    e.map_or((u64::MAX, 0, 0), |e| (e.reason, e.info, e.rip))
}

/// The interrupt checks on the fresh VMCS `vmcs` (selftest registration).
pub fn run(t: &mut Tally, caps: &VmxCaps, vmcs: u64) {
    let Some(ept) = fresh_l2_vmcs(t, caps, vmcs, 6, &["irq: l2 vmcs setup"]) else { return };
    let mut l2 = L2 { ept, launched: false, reinjected: 0 };
    vmx::vmwrite(F::GUEST_IDTR_BASE, l2_idt());
    vmx::vmwrite(F::GUEST_IDTR_LIMIT, 256 * 16 - 1);
    pf::map_mmio();
    let old_idt = pf::install_idt();
    // Exits load L1's IDTR from the host state (SDM 28.5.2): the new IDT.
    let mut idtr = [0u8; 10];
    // SAFETY: SIDT stores 10 bytes into the buffer.
    unsafe { core::arch::asm!("sidt [{}]", in(reg) idtr.as_mut_ptr()) };
    vmx::vmwrite(F::HOST_IDTR_BASE, u64::from_le_bytes(idtr[2..10].try_into().unwrap_or([0; 8])));
    let count = lapic_setup();
    // SAFETY (all `addr(&irq_l2_…)`): addresses of the L2 snippets above.
    let (spin, sti_spin, sti_hlt, vmcall, window) =
        unsafe { (addr(&irq_l2_spin), addr(&irq_l2_sti_spin), addr(&irq_l2_sti_hlt), addr(&irq_l2_vmcall), addr(&irq_l2_window)) };
    let ext = pin::EXTERNAL_INTERRUPT_EXITING | pin::NMI_EXITING;
    let plain = Setup { pin: pin::NMI_EXITING, proc: proc1::HLT_EXITING, exit: 0 };

    // 1. Events L1 injects (SDM 27.6), first on a fresh EPT: their delivery
    //    meets L1's EPT violations (IDT, stack, handler), which L1 answers
    //    by injecting the event again from the IDT-vectoring information.
    if prepare(caps, &plain, vmcall, 0x202, 0) {
        vmx::vmwrite(F::VM_ENTRY_INTR_INFO_FIELD, (1 << 31) | u64::from(INJECTED));
        let (reason, _, _) = reason_name(&l2.run());
        let (n, vec, err, rip) = l2_seen();
        check(t, "irq: interrupt 0x50 injected by L1 arrives in L2 (its IDT, RIP of the entry), then vmcall (18)",
            reason == 18 && n == 1 && vec == 0x50 && err == u64::MAX && rip == vmcall,
            format_args!("exit {reason}, L2 handler count {n} vector {vec:#x} rip at entry {}", rip == vmcall));
        check(t, "irq: an event whose delivery met L1's EPT violations, injected again by L1, is delivered once",
            l2.reinjected > 0 && n == 1, format_args!("re-injected {}, delivered {n}", l2.reinjected > 0));
    }
    if prepare(caps, &plain, vmcall, 0x2, 0) {
        // #GP (type 3, vector 13) with error code 0x18.
        vmx::vmwrite(F::VM_ENTRY_EXCEPTION_ERROR_CODE, 0x18);
        vmx::vmwrite(F::VM_ENTRY_INTR_INFO_FIELD, (1 << 31) | (1 << 11) | (3 << 8) | 13);
        let (reason, _, _) = reason_name(&l2.run());
        let (n, vec, err, rip) = l2_seen();
        check(t, "irq: #GP with error code 0x18 injected by L1 arrives in L2, then vmcall (18)",
            reason == 18 && n == 1 && vec == 13 && err == 0x18 && rip == vmcall,
            format_args!("exit {reason}, L2 handler count {n} vector {vec} error code {err:#x} rip at entry {}", rip == vmcall));
    }

    // 2. L1's timer while L2 runs, with external-interrupt exiting.
    for ack in [true, false] {
        let s = Setup { pin: ext, proc: proc1::HLT_EXITING, exit: if ack { exit::ACK_INTERRUPT_ON_EXIT } else { 0 } };
        // L2 runs with IF = 1: external-interrupt exiting makes IF not
        // matter (SDM 26.2), but Bochs 2.7 keeps an interrupt masked when
        // the entry loads IF = 0 (README, Bochs departures).
        if !prepare(caps, &s, spin, 0x202, 0) {
            t.value("irq: external-interrupt exiting", "offered", "not offered", false);
            continue;
        }
        let before = pf::count(TIMER);
        arm(count);
        let (reason, info, _) = reason_name(&l2.run());
        disarm();
        let (isr, irr) = (pf::vector_bit(pf::ISR, TIMER), pf::vector_bit(pf::IRR, TIMER));
        if ack {
            check(t, "irq: L1's timer while L2 runs, acknowledge on exit: exit 1, info 0x80000040, in service in L1's APIC",
                reason == 1 && info & 0x8000_07FF == 0x8000_0040 && isr && !irr,
                format_args!("exit {reason}, info {:#x}, isr {isr} irr {irr}", info & 0x8000_07FF));
            pf::eoi();
            l1_window();
            check(t, "irq: after an acknowledged exit L1's IDT takes nothing", pf::count(TIMER) == before,
                format_args!("L1 handler count +{}", pf::count(TIMER) - before));
        } else {
            check(t, "irq: L1's timer while L2 runs, no acknowledge: exit 1, info invalid, pending in L1's APIC",
                reason == 1 && info & (1 << 31) == 0 && irr && !isr,
                format_args!("exit {reason}, info valid {}, isr {isr} irr {irr}", info >> 31 & 1));
            l1_window();
            check(t, "irq: after it L1 takes the interrupt through its own IDT when it sets IF", pf::count(TIMER) == before + 1,
                format_args!("L1 handler count +{}", pf::count(TIMER) - before));
        }
    }

    // 3. Without external-interrupt exiting L1's timer goes into L2.
    if prepare(caps, &plain, sti_spin, 0x2, 0) {
        arm(count);
        let (reason, _, _) = reason_name(&l2.run());
        disarm();
        let (n, vec, _, _) = l2_seen();
        let isr = pf::vector_bit(pf::ISR, TIMER);
        check(t, "irq: L1's timer without external-interrupt exiting is delivered through L2's IDT, then vmcall (18)",
            reason == 18 && n == 1 && vec == 0x40 && isr,
            format_args!("exit {reason}, L2 handler count {n} vector {vec:#x}, in service in L1's APIC {isr}"));
        pf::eoi();
    }
    // HLT in L2 without HLT exiting: the interrupt wakes it.
    let no_hlt_exit = Setup { pin: pin::NMI_EXITING, proc: 0, exit: 0 };
    if prepare(caps, &no_hlt_exit, sti_hlt, 0x2, 0) {
        arm(count);
        let (reason, _, rip) = reason_name(&l2.run());
        disarm();
        let (n, vec, _, _) = l2_seen();
        check(t, "irq: HLT in L2 (no HLT exiting) is woken by L1's timer through L2's IDT, then vmcall (18)",
            reason == 18 && n == 1 && vec == 0x40 && rip == sti_hlt + 3,
            format_args!("exit {reason}, L2 handler count {n} vector {vec:#x}, rip +{}", rip.wrapping_sub(sti_hlt)));
        pf::eoi();
    }

    // 4. Windows (SDM 26.7.5, 26.7.6) and virtual NMIs (SDM 25.3).
    let iw = Setup { pin: pin::NMI_EXITING, proc: proc1::HLT_EXITING | proc1::INTERRUPT_WINDOW_EXITING, exit: 0 };
    if prepare(caps, &iw, window, 0x2, 0) {
        let (reason, _, rip) = reason_name(&l2.run());
        check(t, "irq: interrupt-window exiting: exit 7 after STI and the instruction it shadows",
            reason == 7 && rip == window + 3, format_args!("exit {reason} at rip +{}", rip.wrapping_sub(window)));
    }
    let vnmi = pin::NMI_EXITING | pin::VIRTUAL_NMIS;
    let nw = Setup { pin: vnmi, proc: proc1::HLT_EXITING | proc1::NMI_WINDOW_EXITING, exit: 0 };
    if prepare(caps, &nw, vmcall, 0x2, 0) {
        let (reason, _, rip) = reason_name(&l2.run());
        check(t, "irq: NMI-window exiting without virtual-NMI blocking: exit 8 before L2's first instruction",
            reason == 8 && rip == vmcall, format_args!("exit {reason} at rip +{}", rip.wrapping_sub(vmcall)));
        prepare(caps, &nw, vmcall, 0x2, 1 << 3);
        let (reason, _, _) = reason_name(&l2.run());
        let intr = vmx::vmread(F::GUEST_INTERRUPTIBILITY_INFO);
        check(t, "irq: virtual-NMI blocking holds the NMI window closed: vmcall (18), still blocked",
            reason == 18 && intr & (1 << 3) != 0, format_args!("exit {reason}, blocking by NMI {}", intr >> 3 & 1));
        prepare(caps, &nw, vmcall, 0x2, 0);
        vmx::vmwrite(F::VM_ENTRY_INTR_INFO_FIELD, (1 << 31) | (2 << 8) | 2);
        let (reason, _, rip) = reason_name(&l2.run());
        let (n, vec, _, _) = l2_seen();
        let intr = vmx::vmread(F::GUEST_INTERRUPTIBILITY_INFO);
        check(t, "irq: an NMI injected with virtual NMIs blocks the window until L2's IRET: handler ran, then exit 8",
            reason == 8 && n == 1 && vec == 2 && rip == vmcall && intr & (1 << 3) == 0,
            format_args!("exit {reason} at rip +{}, L2 NMI handler count {n}, blocking by NMI {}", rip.wrapping_sub(vmcall), intr >> 3 & 1));
    } else {
        t.value("irq: virtual NMIs and NMI-window exiting", "offered", "not offered", false);
    }

    disarm();
    vmx::vmwrite(F::HOST_IDTR_BASE, u64::from_le_bytes(old_idt[2..10].try_into().unwrap_or([0; 8])));
    // SAFETY: the IDT `install_idt` replaced, restored as it was.
    unsafe { core::arch::asm!("lidt [{}]", in(reg) old_idt.as_ptr()) };
}
