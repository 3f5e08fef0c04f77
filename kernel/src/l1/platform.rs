//! The glue between an L1's exits and its PC (`nvmx-devices`): port I/O,
//! MMIO (EPT violations outside RAM, decoded by [`super::mmio`]), the
//! platform MSRs, time, event injection into L1 and HLT.
//!
//! Time has one source: the TSC the L1 reads (L0 does not offset it), handed
//! to [`nvmx_devices::Platform::advance`] before any decision, so the PIT,
//! the PM timer, the RTC and the LAPIC timer all agree with the L1's RDTSC.
//!
//! Interrupts reach L1 by event injection on the next VM entry of VMCS0-1
//! (SDM 27.6): an NMI when nothing blocks it, else the platform's next
//! vector when RFLAGS.IF = 1 and no STI/MOV-SS shadow blocks it (SDM 26.3.1.5
//! checks exactly these); otherwise L0 asks for an NMI- or interrupt-window
//! exit (SDM 26.7.5/26.7.6) and injects then. An event whose delivery an
//! exit interrupted (IDT-vectoring information, SDM 28.2.4) is re-injected
//! first, so nothing is lost or doubled. While L1 runs an L2 (VMCS0-2
//! current) the same platform is advanced before every entry of VMCS0-2 and
//! its events go to L2 or exit to L1 as vmcs12 asks (`super::events`).

use alloc::collections::VecDeque;
use alloc::string::String;
use core::fmt::Write;

use nvmx_devices::{Event, Platform};
use nvmx_vmx::controls::{pin, proc1};
use nvmx_vmx::field::Field as F;
use nvmx_vmx::walk::{self, GuestMemory};

use super::{Handled, L1S, L1State, Vcpu, mmio};
use crate::arch::cpu;
use crate::vmx::run::{vmread, vmwrite};

/// The L1's TSC frequency as L0 measured it against the PIT at boot: the
/// rate every device clock of every L1 derives from.
pub fn tsc_hz() -> u64 {
    static HZ: spin::Once<u64> = spin::Once::new();
    *HZ.call_once(|| {
        let t0 = cpu::rdtsc();
        crate::time::delay_us(20_000);
        let hz = (cpu::rdtsc() - t0) * 50;
        log::info!("l1 platform: TSC {hz} Hz (measured against the PIT)");
        hz.max(1_000_000)
    })
}

/// Guest activity states (SDM 25.4.2).
const ACTIVE: u64 = 0;
const HLT: u64 = 1;
/// Interruptibility bits (SDM 25.4.2, table 25-3).
const BLOCK_STI: u64 = 1 << 0;
const BLOCK_MOVSS: u64 = 1 << 1;
const BLOCK_NMI: u64 = 1 << 3;
const RFLAGS_IF: u64 = 1 << 9;

/// The per-L1 part of the glue (lives in the vCPU).
pub struct L1Platform {
    pub pc: Platform,
    /// HLT with interrupts enabled: waiting in activity state HLT.
    pub halted: bool,
    /// The window controls as last written to VMCS0-1 (bits 2 and 22).
    windows: u32,
    /// The CPU offers virtual NMIs and NMI-window exiting to L0.
    vnmi: bool,
    /// Preemption-timer rate (TSC ticks = timer ticks << rate, SDM 26.5.1).
    pub timer_rate: u32,
    /// Injections made, for the `l1` view.
    pub injected: u64,
    pub injected_nmis: u64,
    /// While L2 runs: interrupts and NMIs of L1 delivered into L2, and
    /// exits 1 and 0 (NMI) made for L1 (kernel/src/l1/events.rs).
    pub l2_injected: u64,
    pub l2_exits: u64,
    /// TSC before which an entry needs no pass over the PC (0: the next
    /// entry makes one): the last pass found no interrupt or NMI pending
    /// for L1, the PC's next deadline is later, and no exit since may have
    /// touched it (`step` clears it after any exit but an emulated VMX
    /// instruction, CPUID or a reflection; RDMSR/WRMSR clear it). Also at
    /// most [`QUIET_MAX_US`] after the pass, so bytes the shell types at an
    /// attached L1 wait no longer than that.
    pub quiet_until: u64,
    /// TSC before which the last full pass's decisions hold for an exit
    /// that changes nothing on the PC (0: none do): the pass injected
    /// nothing (an injection needs the next exit's pass, for what waits
    /// behind it), L1 is not in HLT, the PC's next deadline is later, and
    /// no exit since may have touched it (cleared with `quiet_until`, by
    /// [`Vcpu::platform_touched`]). Unlike `quiet_until` it holds with an
    /// event pending: the pass asked for the window exit that will bring
    /// it, and nothing but an exit or a deadline changes that.
    pub pass_until: u64,
    /// The exit just handled was a pure port read ([`Vcpu::pio_fast`]):
    /// the next entry needs no pass before `pass_until`.
    pub skip_pass: bool,
    /// [`QUIET_MAX_US`] in TSC ticks.
    quiet_max: u64,
}

/// The longest quiet stretch: 10 ms, so bytes typed at an attached L1 (kept
/// in its `rx` queue meanwhile) reach its UART at least that often. (The
/// shell's requests and `l1` controls are looked at between all exits
/// anyway, in `run_forever`.)
pub const QUIET_MAX_US: u64 = 10_000;

impl L1Platform {
    pub fn new(mem_size: u64, caps: &nvmx_vmx::caps::VmxCaps) -> Self {
        let now = cpu::rdtsc();
        // The RTC's time: nvmx has no wall clock of its own (the host RTC is
        // L0's); 2026-01-01 00:00:00 UTC at the L1's power-on.
        const EPOCH: u64 = 1_767_225_600;
        let hz = tsc_hz();
        let cfg = nvmx_devices::Config::new(hz, mem_size, EPOCH.saturating_sub(now / hz));
        let mut pc = Platform::new(cfg);
        pc.advance(now);
        let vnmi = caps.pinbased().1 & pin::VIRTUAL_NMIS != 0 && caps.procbased().1 & proc1::NMI_WINDOW_EXITING != 0;
        L1Platform {
            pc,
            halted: false,
            windows: 0,
            vnmi,
            timer_rate: caps.preemption_timer_rate(),
            injected: 0,
            injected_nmis: 0,
            l2_injected: 0,
            l2_exits: 0,
            quiet_until: 0,
            pass_until: 0,
            skip_pass: false,
            quiet_max: hz / 1_000_000 * QUIET_MAX_US,
        }
    }

    /// Pin controls L0 adds to VMCS0-1 for this glue: virtual NMIs where the
    /// CPU has them, so L1's IRET unblocks NMIs (SDM 25.3: with "NMI exiting"
    /// alone it would not) and NMI-window exiting is available.
    pub fn extra_pin_controls(caps: &nvmx_vmx::caps::VmxCaps) -> u32 {
        if caps.pinbased().1 & pin::VIRTUAL_NMIS != 0 && caps.procbased().1 & proc1::NMI_WINDOW_EXITING != 0 {
            pin::VIRTUAL_NMIS
        } else {
            0
        }
    }

    fn set_windows(&mut self, want: u32) {
        if want != self.windows {
            let ctl = vmread(F::CPU_BASED_VM_EXEC_CONTROL) as u32;
            let mask = proc1::INTERRUPT_WINDOW_EXITING | proc1::NMI_WINDOW_EXITING;
            vmwrite(F::CPU_BASED_VM_EXEC_CONTROL, ((ctl & !mask) | want).into());
            self.windows = want;
        }
    }
}

/// L1 RAM as the page walks and the instruction fetch see it.
struct Ram {
    base: u64,
    size: u64,
}

impl GuestMemory for Ram {
    fn read_u64(&self, gpa: u64) -> Option<u64> {
        if gpa.checked_add(8)? > self.size {
            return None;
        }
        // SAFETY: inside the L1's memory chunk, identity mapped in L0.
        Some(unsafe { ((self.base + gpa) as *const u64).read_unaligned() })
    }
}

impl Ram {
    fn read_u8(&self, gpa: u64) -> Option<u8> {
        if gpa >= self.size {
            return None;
        }
        // SAFETY: as `read_u64`.
        Some(unsafe { ((self.base + gpa) as *const u8).read() })
    }
}

/// L2-physical memory: through EPT1-2 when L1 uses EPT, into L1's RAM.
struct L2Ram {
    ram: Ram,
    eptp12: Option<u64>,
    phys_bits: u32,
}

impl L2Ram {
    fn l1_address(&self, gpa2: u64) -> Option<u64> {
        match self.eptp12 {
            Some(eptp) => walk::ept_translate(&self.ram, eptp, gpa2, self.phys_bits).ok().map(|t| t.address),
            None => Some(gpa2),
        }
    }
    fn read_u8(&self, gpa2: u64) -> Option<u8> {
        self.ram.read_u8(self.l1_address(gpa2)?)
    }
}

impl GuestMemory for L2Ram {
    fn read_u64(&self, gpa2: u64) -> Option<u64> {
        // Paging-structure entries are 8-byte aligned: one page.
        self.ram.read_u64(self.l1_address(gpa2)?)
    }
}

impl Vcpu {
    fn gpr_any(&self, n: usize) -> u64 {
        if n == 4 { vmread(F::GUEST_RSP) } else { self.regs.gpr[n] }
    }

    fn set_gpr_any(&mut self, n: usize, v: u64) {
        if n == 4 { vmwrite(F::GUEST_RSP, v) } else { self.regs.gpr[n] = v }
    }

    /// IN/OUT (not string forms) to the platform.
    pub(super) fn platform_io(&mut self, port: u16, size: u8, input: bool) -> Handled {
        let now = cpu::rdtsc();
        self.platform.pc.advance(now);
        let mask = mmio::mask(size);
        if input {
            let v = u64::from(self.platform.pc.io_in(port, size)) & mask;
            self.regs.gpr[0] = (self.regs.gpr[0] & !mask) | v;
        } else {
            self.platform.pc.io_out(port, size, (self.regs.gpr[0] & mask) as u32);
        }
        Handled::Skip
    }

    /// An EPT violation outside L1 RAM: MMIO. A device decodes it, or
    /// nothing does (reads all-ones, writes dropped, as on a PC).
    pub(super) fn platform_mmio(&mut self, gpa: u64, qualification: u64) -> Handled {
        let ram = Ram { base: self.mem_base, size: self.mem_size };
        self.platform_mmio_through(gpa, qualification, &ram, &|pa| ram.read_u8(pa))
    }

    /// An access of L2 to L1-physical `gpa` outside L1's RAM (EPT1-2 maps
    /// it there, or L2 runs without EPT1-2): the same MMIO against L1's
    /// platform, the instruction fetched through L2's paging (VMCS0-2 is
    /// current) and L2-physical addresses through EPT1-2 (`eptp12`).
    pub(super) fn platform_mmio_l2(&mut self, gpa: u64, qualification: u64, eptp12: Option<u64>, phys_bits: u32) -> Handled {
        let l2 = L2Ram { ram: Ram { base: self.mem_base, size: self.mem_size }, eptp12, phys_bits };
        self.platform_mmio_through(gpa, qualification, &l2, &|pa| l2.read_u8(pa))
    }

    fn platform_mmio_through(&mut self, gpa: u64, qualification: u64, mem: &dyn GuestMemory, read_u8: &dyn Fn(u64) -> Option<u8>) -> Handled {
        if qualification & 4 != 0 {
            return Handled::Stop(alloc::format!("instruction fetch from guest-physical {gpa:#x}, outside RAM"));
        }
        let cr0 = vmread(F::GUEST_CR0);
        let (cr4, efer) = (vmread(F::GUEST_CR4), vmread(F::GUEST_IA32_EFER));
        let pae = cr4 & (1 << 5) != 0 && efer & (1 << 10) == 0;
        let pdptes = if pae { [F::GUEST_PDPTR0, F::GUEST_PDPTR1, F::GUEST_PDPTR2, F::GUEST_PDPTR3].map(vmread) } else { [0; 4] };
        let mode = walk::PagingMode::from_regs(cr0, cr4, efer, pdptes);
        let rip = vmread(F::GUEST_RIP);
        let linear = vmread(F::GUEST_CS_BASE).wrapping_add(rip);
        let (bytes, n) = mmio::fetch(mem, read_u8, mode, vmread(F::GUEST_CR3), linear);
        let bits = mmio::bitness(vmread(F::GUEST_CS_AR_BYTES), efer & (1 << 10) != 0, cr0 & 1 != 0);
        let (access, len) = match mmio::decode(&bytes[..n], bits, |r| self.gpr_any(r)) {
            Ok(x) => x,
            Err(why) => return Handled::Stop(alloc::format!("{why} at guest-physical {gpa:#x}")),
        };
        self.platform.pc.advance(cpu::rdtsc());
        match access {
            mmio::Access::Read { size, dest } => {
                let v = self.platform.pc.mmio_read(gpa, size).unwrap_or(u64::MAX);
                let old = self.gpr_any(dest.reg);
                self.set_gpr_any(dest.reg, mmio::merge(old, dest, size, v));
            }
            mmio::Access::Write { size, value } => {
                // A write no device decodes is dropped, as on a PC.
                let _ = self.platform.pc.mmio_write(gpa, size, value);
            }
            mmio::Access::Compare { size, other, test, mem_first } => {
                let v = self.platform.pc.mmio_read(gpa, size).unwrap_or(u64::MAX);
                let (a, b) = if mem_first { (v, other) } else { (other, v) };
                vmwrite(F::GUEST_RFLAGS, mmio::compare_flags(vmread(F::GUEST_RFLAGS), a, b, size, test));
            }
        }
        vmwrite(F::GUEST_RIP, rip.wrapping_add(len as u64));
        // The access completed: an STI/MOV-SS shadow it sat in is over.
        let intr = vmread(F::GUEST_INTERRUPTIBILITY_INFO);
        if intr & 3 != 0 {
            vmwrite(F::GUEST_INTERRUPTIBILITY_INFO, intr & !3);
        }
        Handled::Resume
    }

    /// HLT: with interrupts enabled L1 sleeps until its next interrupt (in
    /// activity state HLT, SDM 25.4.2); with interrupts disabled and no NMI
    /// to come it is halted for good.
    pub(super) fn platform_hlt(&mut self) -> Handled {
        let rflags = vmread(F::GUEST_RFLAGS);
        self.platform.pc.advance(cpu::rdtsc());
        if rflags & RFLAGS_IF == 0 && !self.platform.pc.pending_nmi() {
            return Handled::Halt;
        }
        self.platform.halted = true;
        Handled::Skip
    }

    /// Between an L1 exit and the next entry of VMCS0-1: let time run,
    /// move console bytes both ways, act on power events and inject what
    /// is pending. `Some` when the L1's machine ends (power-off, reset,
    /// exit convention).
    pub(super) fn platform_before_entry(&mut self, after_exit: bool) -> Option<L1State> {
        if let Some(end) = self.platform_advance() {
            return Some(end);
        }
        self.inject_pending(after_exit);
        None
    }

    /// Time, console bytes both ways and power events of the L1's PC,
    /// before any entry (of VMCS0-1 or, while L2 runs, VMCS0-2).
    pub(super) fn platform_advance(&mut self) -> Option<L1State> {
        let shared = &L1S[self.cpu];
        shared.stats.slow(crate::stats::Slow::PlatformPass);
        // Bytes the shell typed at an attached L1.
        {
            let mut rx = shared.rx.lock();
            while !rx.is_empty() && self.platform.pc.uart.rx_space() > 0 {
                let b = rx.pop_front().unwrap_or(0);
                self.platform.pc.uart_receive(b);
            }
        }
        let now = cpu::rdtsc();
        self.platform.pc.advance(now);
        // Bytes the L1 sent.
        if let Some(ring) = shared.console.lock().as_mut() {
            while let Some(b) = self.platform.pc.uart_take_tx() {
                ring.push(b);
            }
        }
        if let Some(e) = self.platform.pc.poll_event() {
            return Some(match e {
                Event::PowerOff => L1State::PoweredOff,
                Event::Reset => L1State::Restarting,
                Event::Exit(code) => L1State::Exited(code),
            });
        }
        None
    }

    /// Event injection for the next VM entry of VMCS0-1 (SDM 27.6).
    fn inject_pending(&mut self, after_exit: bool) {
        // 1. An event the exit interrupted goes first, as it was (SDM 28.2.4,
        //    "IDT-vectoring information"; 27.6.1.1 for its re-injection).
        if after_exit {
            let idt = vmread(F::IDT_VECTORING_INFO_FIELD);
            if idt & (1 << 31) != 0 && vmread(F::VM_ENTRY_INTR_INFO_FIELD) & (1 << 31) == 0 {
                if idt & (1 << 11) != 0 {
                    vmwrite(F::VM_ENTRY_EXCEPTION_ERROR_CODE, vmread(F::IDT_VECTORING_ERROR_CODE));
                }
                // Software interrupts and exceptions need their length.
                if matches!((idt >> 8) & 7, 4..=6) {
                    vmwrite(F::VM_ENTRY_INSTRUCTION_LEN, vmread(F::VM_EXIT_INSTRUCTION_LEN));
                }
                vmwrite(F::VM_ENTRY_INTR_INFO_FIELD, idt & 0x8000_0FFF);
            }
        }
        let pc = &self.platform.pc;
        let nmi = pc.pending_nmi();
        let irq = pc.pending_interrupt();
        if vmread(F::VM_ENTRY_INTR_INFO_FIELD) & (1 << 31) != 0 {
            // Something is injected already: ask to come back right after.
            let mut want = 0;
            if nmi && self.platform.vnmi {
                want |= proc1::NMI_WINDOW_EXITING;
            }
            if irq.is_some() || (nmi && !self.platform.vnmi) {
                want |= proc1::INTERRUPT_WINDOW_EXITING;
            }
            self.platform.set_windows(want);
            self.prepare_sleep(nmi || irq.is_some());
            return;
        }
        let intr = vmread(F::GUEST_INTERRUPTIBILITY_INFO);
        let rflags = vmread(F::GUEST_RFLAGS);
        let mut want = 0;
        if nmi {
            if intr & (BLOCK_STI | BLOCK_MOVSS | BLOCK_NMI) == 0 {
                // Type 2 (NMI), vector 2 (SDM 25.8.3).
                vmwrite(F::VM_ENTRY_INTR_INFO_FIELD, (1 << 31) | (2 << 8) | 2);
                self.platform.pc.acknowledge_nmi();
                self.platform.injected_nmis += 1;
                self.wake();
                // An interrupt behind it waits for the next window.
                if irq.is_some() {
                    want |= proc1::INTERRUPT_WINDOW_EXITING;
                }
                self.platform.set_windows(want);
                self.prepare_sleep(true);
                return;
            }
            want |= if self.platform.vnmi && intr & BLOCK_NMI != 0 {
                proc1::NMI_WINDOW_EXITING
            } else {
                proc1::INTERRUPT_WINDOW_EXITING
            };
        }
        if let Some(vector) = irq {
            if rflags & RFLAGS_IF != 0 && intr & (BLOCK_STI | BLOCK_MOVSS) == 0 {
                // Type 0 (external interrupt), SDM 25.8.3.
                vmwrite(F::VM_ENTRY_INTR_INFO_FIELD, (1 << 31) | u64::from(vector));
                self.platform.pc.acknowledge(vector);
                self.platform.injected += 1;
                self.wake();
            } else {
                want |= proc1::INTERRUPT_WINDOW_EXITING;
            }
        }
        self.platform.set_windows(want);
        self.prepare_sleep(nmi || irq.is_some());
    }

    /// An interrupt ends HLT (SDM 25.4.2: the injected event is delivered
    /// and the processor is active afterwards).
    fn wake(&mut self) {
        if self.platform.halted {
            self.platform.halted = false;
            vmwrite(F::GUEST_ACTIVITY_STATE, ACTIVE);
        }
    }

    /// A halted L1 with nothing to inject enters in activity state HLT with
    /// the VMX-preemption timer set to its next deadline: the core really
    /// sleeps in HLT until then (or until an L0 interrupt, the shell's IPI).
    /// The boot core wakes at least every `PREEMPT_TICKS` to poll the shell.
    ///
    /// A running L1 gets the same bound, so a device deadline (its LAPIC
    /// timer, the PIT) is acted on when it falls due, not only at L1's next
    /// exit of its own.
    ///
    /// With nothing `pending` for a running L1, the entries until the
    /// deadline (or `PREEMPT_TICKS`) after pure exits skip the pass
    /// ([`Vcpu::platform_quiet`]).
    fn prepare_sleep(&mut self, pending: bool) {
        if self.platform.halted && vmread(F::VM_ENTRY_INTR_INFO_FIELD) & (1 << 31) != 0 {
            self.wake();
        }
        let cap = if self.cpu == 0 || !self.platform.halted { crate::vmx::run::PREEMPT_TICKS } else { u64::from(u32::MAX) };
        if self.platform.halted {
            vmwrite(F::GUEST_ACTIVITY_STATE, HLT);
        }
        let deadline = self.platform.pc.next_deadline_tsc();
        let now = cpu::rdtsc();
        let ticks = match deadline {
            // Rounded up: an exit before the deadline would find nothing due
            // and cost a second one.
            Some(d) => d.saturating_sub(now).div_ceil(1 << self.platform.timer_rate).clamp(1, cap),
            None => cap,
        };
        vmwrite(F::VMX_PREEMPTION_TIMER_VALUE, ticks);
        let bound = self.quiet_bound(now, deadline);
        self.platform.quiet_until = if pending || self.platform.halted { 0 } else { bound };
        let injecting = vmread(F::VM_ENTRY_INTR_INFO_FIELD) & (1 << 31) != 0;
        self.platform.pass_until = if injecting || self.platform.halted { 0 } else { bound };
    }

    /// An exit that may have changed the L1's PC (a device access, an MSR,
    /// an IPI, the shell's view): the next entry makes a full pass.
    pub(super) fn platform_touched(&mut self) {
        self.platform.quiet_until = 0;
        self.platform.pass_until = 0;
    }

    /// Exit 30 of L1 answered without a pass over its PC, when it is a
    /// read that changes nothing there ([`nvmx_devices::Platform::io_in_pure`]:
    /// the PIT's counters, port 0x61, the PM timer) and the last pass still
    /// holds (`pass_until`): the value, RIP past the instruction, and the
    /// next entry renews only the timer bound. Linux's PIT-only TSC
    /// calibration spins on port 0x61 with ~2000 instructions per read at
    /// Bochs' 200M a second; a full pass before each entry costs ~1000 of
    /// them. `false`: nothing was changed, the exit goes the general way.
    pub(super) fn pio_fast(&mut self, rip: u64) -> bool {
        let q = vmread(F::EXIT_QUALIFICATION);
        // IN (bit 3), not a string instruction (bit 4): SDM table 28-5.
        if q & 0x18 != 0x08 {
            return false;
        }
        let now = cpu::rdtsc();
        if now >= self.platform.pass_until {
            return false;
        }
        let size = (q & 7) as u8 + 1;
        let Some(v) = self.platform.pc.io_in_pure((q >> 16) as u16, size, now) else { return false };
        let mask = mmio::mask(size);
        self.regs.gpr[0] = (self.regs.gpr[0] & !mask) | (u64::from(v) & mask);
        vmwrite(F::GUEST_RIP, rip + vmread(F::VM_EXIT_INSTRUCTION_LEN));
        // The IN completed: an STI/MOV-SS shadow it sat in is over.
        let intr = vmread(F::GUEST_INTERRUPTIBILITY_INFO);
        if intr & 3 != 0 {
            vmwrite(F::GUEST_INTERRUPTIBILITY_INFO, intr & !3);
        }
        self.platform.skip_pass = true;
        true
    }

    /// The end of a quiet stretch that starts at `now`: the PC's next
    /// `deadline`, at most [`QUIET_MAX_US`] away.
    pub(super) fn quiet_bound(&self, now: u64, deadline: Option<u64>) -> u64 {
        let cap = now.saturating_add(self.platform.quiet_max);
        deadline.map_or(cap, |d| d.min(cap))
    }

    /// Before an entry after a pure exit: `Some(timer ticks)` to the end of
    /// the quiet stretch when the PC needs no pass now (nothing pending,
    /// nothing due: KVM enters without KVM_REQ_EVENT in the same case).
    /// After a pure port read ([`Vcpu::pio_fast`]) the last pass's own
    /// bound (`pass_until`) applies instead.
    #[inline(always)]
    pub(super) fn platform_quiet(&mut self, now: u64) -> Option<u64> {
        let until = if core::mem::take(&mut self.platform.skip_pass) { self.platform.pass_until } else { self.platform.quiet_until };
        // The timer stays bounded by PREEMPT_TICKS (the boot core's shell).
        (now < until).then(|| (until - now).div_ceil(1 << self.platform.timer_rate).clamp(1, crate::vmx::run::PREEMPT_TICKS))
    }

    /// The `l1 <cpu>` view of this L1's PC (answered on its core).
    pub(super) fn platform_view(&mut self) -> String {
        self.platform_touched();
        let pc = &mut self.platform.pc;
        pc.advance(cpu::rdtsc());
        let base = pc.lapic.apic_base();
        let mode = match (base >> 10) & 3 {
            3 => "x2APIC",
            2 => "xAPIC",
            _ => "disabled",
        };
        // The timer registers (LVT timer, initial and current count, divide:
        // SDM 11.5.4), read without the side effects of an L1 read.
        let reg = |off: u32| -> u64 { pc.lapic.peek(off).map_or(0, u64::from) };
        let (lvt, init, cur, div) = (reg(0x320), reg(0x380), reg(0x390), reg(0x3E0));
        let timer = match (lvt >> 17) & 3 {
            0 => "one-shot",
            1 => "periodic",
            2 => "TSC-deadline",
            _ => "reserved",
        };
        let pending = match pc.pending_interrupt() {
            Some(v) => alloc::format!("vector {v:#x}"),
            None => String::from("none"),
        };
        let mut s = String::new();
        let _ = writeln!(
            s,
            "cpu {}: platform: TSC {} Hz; LAPIC {mode} (IA32_APIC_BASE {base:#x}); timer {timer}{} vector {:#x}, initial {init:#x}, current {cur:#x}, divide {div:#x}",
            self.cpu,
            pc.config().tsc_hz,
            if lvt & (1 << 16) != 0 { " (masked)" } else { "" },
            lvt & 0xFF,
        );
        let _ = writeln!(
            s,
            "cpu {}: interrupts: pending {pending}{}; injected {} interrupts, {} NMIs; while L2 ran: {} into L2, {} exits to L1; L1 {}",
            self.cpu,
            if pc.pending_nmi() { ", NMI" } else { "" },
            self.platform.injected,
            self.platform.injected_nmis,
            self.platform.l2_injected,
            self.platform.l2_exits,
            if self.platform.halted { "in HLT (waiting for an interrupt)" } else { "active" },
        );
        let _ = writeln!(s, "cpu {}: devices: {}", self.cpu, pc.summary());
        s
    }
}

/// What the shell typed at an attached L1, waiting for its UART.
pub type RxQueue = VecDeque<u8>;

/// Queues `bytes` for core `cpu`'s L1 COM1 and wakes that core.
pub fn send_to_l1(cpu: usize, bytes: &[u8]) {
    {
        let mut rx = L1S[cpu].rx.lock();
        for &b in bytes {
            if rx.len() < 4096 {
                rx.push_back(b);
            }
        }
    }
    if cpu != crate::percpu::current().index {
        crate::mailbox::kick(cpu);
    }
}
