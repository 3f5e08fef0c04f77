//! The PC each L1 sees, as device models with no I/O of their own (in the
//! style of rust-vmm's vm-superio): the kernel routes the L1's port I/O, MMIO
//! and MSR exits here and turns what comes back (a vector to inject, an NMI,
//! a power event, bytes for the console) into VMX event injection and shell
//! state. `no_std` + `alloc`, tested on the host with register sequences from
//! the data sheets and the SDM.
//!
//! # The platform
//!
//! | device | where | IRQ / GSI | modelled | not modelled |
//! |---|---|---|---|---|
//! | 8259A pair ([`pic`]) | 0x20/0x21, 0xA0/0xA1, ELCR 0x4D0/0x4D1 | cascade on IR2 | ICW1-4, OCW1-3, EOI/rotation, poll, special mask, AEOI, spurious IR7/15, ELCR edge/level | 8080 mode, buffered mode, special fully nested mode |
//! | 8254 PIT ([`pit`]) | 0x40-0x43, port 0x61 | IRQ0 (GSI 2) | 3 counters, modes 0-5, LSB/MSB/word access, BCD, counter latch, read-back, gate of counter 2 and OUT2 through port 0x61 | counter 1 refresh timing, speaker sound |
//! | CMOS / RTC ([`rtc`]) | 0x70/0x71 (bit 7 of 0x70: NMI mask) | IRQ8 | MC146818 time/date in BCD or binary, 12/24 h, SET, UIP, periodic/alarm/update interrupts and register C flags, century at 0x32, CMOS memory-size bytes | daylight-saving switch, divider chain reset, battery |
//! | 16550A UART ([`uart`]) | COM1 0x3F8-0x3FF | IRQ4 | all registers, DLAB, 16-byte RX FIFO with trigger levels, LSR errors (overrun), THRE / RX / line-status / modem interrupts, loopback, OUT2 gating the IRQ as on a PC | baud-rate timing (transmission is instant), parity/framing errors, break |
//! | ACPI PM block ([`pm`]) | PM1a_EVT 0x600, PM1a_CNT 0x604, PM timer 0x608, reset 0xCF9 | SCI 9 (level, high) | 32-bit PM timer, PM1 status/enable (timer overflow, power button), SCI_EN, S5 via SLP_TYP/SLP_EN, reset register | S1-S4, GPE blocks, SMI_CMD (ACPI is always on) |
//! | ACPI tables ([`acpi`]) | built for any guest-physical base | - | RSDP v2, XSDT, RSDT, FADT (rev. 6), FACS, DSDT (`\_S5`), MADT (LAPIC, IOAPIC, IRQ0->GSI2 and SCI overrides, LINT1 NMI) | HPET, SSDT, MCFG, PCI root bridge in the DSDT |
//! | IOAPIC ([`ioapic`]) | 0xFEC00000 | GSI 0-23 | IOREGSEL/IOWIN, ID, version 0x11 (82093AA, as Bochs), 24 redirection entries, edge/level, polarity, remote IRR cleared by the LAPIC EOI broadcast or an edge/level switch, physical/logical destinations | delivery to other CPUs (one CPU), arbitration ID |
//! | local APIC ([`lapic`]) | 0xFEE00000 (xAPIC), MSRs 0x800-0x83F (x2APIC), IA32_APIC_BASE, IA32_TSC_DEADLINE | vectors 16-255 | IA32_APIC_BASE mode transitions, ID/version/TPR/PPR/EOI/LDR/DFR/SVR, ISR/TMR/IRR, ESR with its errors, ICR (self, all-incl-self, fixed/lowest/NMI; to other CPUs through `take_ipi`, also INIT/SIPI), SELF IPI, LVT timer/LINT0/LINT1/error/thermal/perf/CMCI, timer one-shot, periodic and TSC-deadline | SMI, directed EOI, arbitration, delivery status |
//! | i8042 ([`misc`]) | 0x60/0x64 | IRQ1 (keyboard timeouts only) | controller present with self-test, command byte, output port, pulse-reset 0xFE and output-port reset; bytes for the keyboard time out (status TIMEOUT, IRQ1) | keyboard and mouse (none attached; no aux port) |
//! | misc ([`misc`]) | 0x80 POST, 0x92 port A, PCI 0xCF8/0xCFC, QEMU exit 0xF4, Bochs 0x8900 | - | POST code, fast reset, PCI mechanism #1 with one host bridge (i440FX 8086:1237, as Bochs) and nothing else (all-ones), exit conventions | other PCI devices, MMCONFIG |
//!
//! Every other port reads all-ones and ignores writes, as an empty ISA bus
//! does. Time comes from one source, the L1's TSC, handed in by
//! [`Platform::advance`]: the PIT (1.193182 MHz), the PM timer (3.579545 MHz),
//! the LAPIC timer (bus clock [`Config::lapic_timer_hz`]) and the RTC all
//! derive from it by exact integer scaling, so an L1 calibrating one against
//! another finds the true frequency.
//!
//! # Choices
//!
//! - Power-on state is what a BIOS hands a boot loader: LAPIC enabled in
//!   xAPIC mode but software-disabled, LINT0 ExtINT and LINT1 NMI (virtual
//!   wire, so an L1 that never touches the APIC still gets the 8259's
//!   interrupts), 8259 vector bases 0x08/0x70, everything else at reset.
//! - The LAPIC timer's input clock defaults to the TSC frequency, as on
//!   Bochs (whose APIC timer counts the same ticks as its TSC); CPUID leaf
//!   0x15 may then say crystal = TSC frequency truthfully.
//! - Where the data sheets leave room, Bochs' own devices decide (APIC
//!   version 0x00050014, IOAPIC version 0x11, xAPIC ID read-only, x2APIC
//!   reserved-bit rules, an i440FX host bridge): Bochs bare is the reference
//!   the built-in L1's selftest compares nvmx with.
//! - Bad input gets what the hardware does, never a panic: reserved APIC
//!   registers set ESR bit 7 (xAPIC) or #GP (x2APIC), illegal vectors set
//!   the ESR's illegal-vector bits and go nowhere, MMIO a real APIC refuses
//!   is dropped, PIT mode 1 on counter 0 waits forever for a gate edge.
//!   A test throws random traffic at every register to hold that.
//! - The tables name the firmware "NVMX" (as Bochs' say "BOCHS"); nothing
//!   advertises a hypervisor (the FADT's hypervisor vendor identity is 0).
//!
//! # How the glue drives it
//!
//! One [`Platform`] per L1. On every exit: [`Platform::advance`] with the
//! L1's current TSC, then hand the exit over ([`Platform::io_in`] /
//! [`Platform::io_out`], [`Platform::mmio_read`] / [`Platform::mmio_write`]
//! for addresses [`Platform::is_mmio`] claims, [`Platform::rdmsr`] /
//! [`Platform::wrmsr`], [`Platform::set_cr8`]); then drain
//! [`Platform::poll_event`] and [`Platform::uart_take_tx`], and if the L1 can
//! take an interrupt inject [`Platform::pending_nmi`] /
//! [`Platform::pending_interrupt`] and report it with
//! [`Platform::acknowledge_nmi`] / [`Platform::acknowledge`]. While the L1
//! runs or halts, [`Platform::next_deadline_tsc`] is when it must get an
//! exit again (a VMX-preemption timer or L0 timer) so timer interrupts reach
//! an L1 that busy-waits for them, as Linux's `timer_irq_works` does.
//! [`Platform::summary`] is a one-line view for the shell.
#![cfg_attr(not(test), no_std)]

extern crate alloc;

pub mod acpi;
pub mod ioapic;
pub mod lapic;
pub mod misc;
pub mod pic;
pub mod pit;
pub mod pm;
pub mod rtc;
pub mod time;
pub mod uart;

use alloc::collections::VecDeque;

/// Where the L1's local APIC page sits (IA32_APIC_BASE reset value).
pub const LAPIC_BASE: u64 = 0xFEE0_0000;
/// Where the IOAPIC sits.
pub const IOAPIC_BASE: u64 = 0xFEC0_0000;
/// COM1.
pub const COM1_BASE: u16 = 0x3F8;
/// ISA IRQ of COM1.
pub const COM1_IRQ: u8 = 4;
/// ISA IRQ of the ACPI SCI.
pub const SCI_IRQ: u8 = 9;
/// QEMU's isa-debug-exit port.
pub const QEMU_EXIT_PORT: u16 = 0xF4;
/// Bochs' shutdown port (write the string "Shutdown").
pub const BOCHS_SHUTDOWN_PORT: u16 = 0x8900;

/// What the L1's PC consists of and how its time runs.
#[derive(Clone, Debug)]
pub struct Config {
    /// The L1's TSC frequency in Hz; every device clock derives from it.
    pub tsc_hz: u64,
    /// The local APIC timer's input clock (before the divide register), Hz.
    /// An L1 measures it against the PIT or the TSC; nothing advertises it.
    pub lapic_timer_hz: u64,
    /// Guest RAM in bytes (CMOS memory-size bytes).
    pub ram_bytes: u64,
    /// Seconds since 1970-01-01 00:00:00 UTC at TSC 0 (the RTC's time).
    pub epoch_at_tsc0: u64,
    /// ACPI PM block present (ports 0x600-0x60B and the SCI); the tables
    /// are built by [`Platform::acpi_tables`] regardless.
    pub acpi: bool,
    /// IOAPIC present at [`IOAPIC_BASE`].
    pub ioapic: bool,
    /// Local APIC present (IA32_APIC_BASE, the xAPIC page, x2APIC MSRs).
    pub lapic: bool,
    /// x2APIC mode may be entered (CPUID.1:ECX bit 21 should say the same).
    pub x2apic: bool,
    /// A PCI host bridge (i440FX, as Bochs has) at 00:00.0; otherwise PCI
    /// configuration reads are all-ones everywhere.
    pub pci_host_bridge: bool,
    /// MAXPHYADDR as the L1's CPUID.80000008H reports it: IA32_APIC_BASE
    /// bits at and above it are reserved (#GP).
    pub phys_addr_bits: u8,
    /// Processors of the L1 (local APIC IDs 0..cpus in the MADT); 1 unless
    /// the L1 spans cores (`l1vcpus=2`).
    pub cpus: u8,
}

impl Config {
    /// A full PC: ACPI, IOAPIC, LAPIC with x2APIC; the LAPIC timer runs at
    /// the TSC frequency.
    pub fn new(tsc_hz: u64, ram_bytes: u64, epoch_at_tsc0: u64) -> Self {
        Config {
            tsc_hz,
            lapic_timer_hz: tsc_hz,
            ram_bytes,
            epoch_at_tsc0,
            acpi: true,
            ioapic: true,
            lapic: true,
            x2apic: true,
            pci_host_bridge: true,
            phys_addr_bits: 36,
            cpus: 1,
        }
    }
}

/// Something the L1 did to its machine as a whole; the glue polls these.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Event {
    /// ACPI S5 (SLP_TYP 5 with SLP_EN in PM1a_CNT): powered off.
    PowerOff,
    /// Reset register / 0xCF9 / i8042 0xFE / port 0x92 bit 0: the machine
    /// resets (the glue reloads the L1 and calls [`Platform::reset`]).
    Reset,
    /// QEMU isa-debug-exit (value written to 0xF4; QEMU itself would exit
    /// with status `value * 2 + 1`) or Bochs' "Shutdown" at 0x8900 (code 0).
    Exit(u32),
}

/// The MSR access raises #GP(0).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Gp;

/// What [`Platform::summary`] reports.
#[derive(Clone, Copy, Debug)]
pub struct Summary {
    /// The LAPIC's mode (`None`: no LAPIC).
    pub apic_mode: Option<lapic::ApicMode>,
    /// SVR bit 8.
    pub apic_sw_enabled: bool,
    /// LVT Timer's mode.
    pub timer_mode: lapic::TimerMode,
    /// LVT Timer (vector, mask bit 16).
    pub lvt_timer: u32,
    /// TPR.
    pub tpr: u8,
    /// Highest vector in IRR.
    pub highest_irr: Option<u8>,
    /// Highest vector in ISR.
    pub highest_isr: Option<u8>,
    /// 8259 masks, slave in the high byte.
    pub pic_imr: u16,
    /// 8259 requests, slave in the high byte.
    pub pic_irr: u16,
    /// PIT counter 0 (mode, reload) if counting.
    pub pit0: Option<(u8, u32)>,
    /// IOAPIC entries unmasked.
    pub ioapic_unmasked: u8,
    /// [`Platform::next_deadline_tsc`].
    pub next_deadline_tsc: Option<u64>,
    /// [`Platform::pending_interrupt`].
    pub pending: Option<u8>,
    /// [`Platform::pending_nmi`].
    pub nmi: bool,
}

impl core::fmt::Display for Summary {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self.apic_mode {
            None => write!(f, "apic none")?,
            Some(m) => {
                let mode = match m {
                    lapic::ApicMode::Disabled => "disabled",
                    lapic::ApicMode::XApic => "xapic",
                    lapic::ApicMode::X2Apic => "x2apic",
                };
                let timer = match self.timer_mode {
                    lapic::TimerMode::OneShot => "oneshot",
                    lapic::TimerMode::Periodic => "periodic",
                    lapic::TimerMode::TscDeadline => "tsc-deadline",
                };
                write!(f, "apic {mode}{} tpr={:#x} timer {timer} vec={:#x}{}", if self.apic_sw_enabled { "" } else { "(sw-off)" }, self.tpr, self.lvt_timer & 0xFF, if self.lvt_timer & (1 << 16) != 0 { " masked" } else { "" })?;
                if let Some(v) = self.highest_irr {
                    write!(f, " irr={v:#x}")?;
                }
                if let Some(v) = self.highest_isr {
                    write!(f, " isr={v:#x}")?;
                }
            }
        }
        write!(f, " | pic imr={:#06x} irr={:#06x}", self.pic_imr, self.pic_irr)?;
        if let Some((m, n)) = self.pit0 {
            write!(f, " | pit0 mode {m} count {n}")?;
        }
        write!(f, " | ioapic {} unmasked", self.ioapic_unmasked)?;
        match self.pending {
            Some(v) => write!(f, " | pending {v:#x}")?,
            None => write!(f, " | pending none")?,
        }
        if self.nmi {
            write!(f, " +nmi")?;
        }
        if let Some(d) = self.next_deadline_tsc {
            write!(f, " | next tsc {d}")?;
        }
        Ok(())
    }
}

/// The L1's PC: every device, their interrupt wiring, and the event queue.
///
/// The fields are public so shell views can show device state; change them
/// only through the methods, which keep the interrupt lines consistent.
pub struct Platform {
    cfg: Config,
    now: u64,
    /// 8259A pair.
    pub pic: pic::PicPair,
    /// 8254 and port 0x61.
    pub pit: pit::Pit,
    /// MC146818 CMOS/RTC.
    pub rtc: rtc::Rtc,
    /// COM1.
    pub uart: uart::Uart16550,
    /// ACPI PM1 block, PM timer, reset register.
    pub pm: pm::PmBlock,
    /// The IOAPIC.
    pub ioapic: ioapic::IoApic,
    /// The local APIC.
    pub lapic: lapic::LocalApic,
    /// Keyboard controller, POST port, port A, PCI address register.
    pub misc: misc::Misc,
    events: VecDeque<Event>,
    /// Levels of ISA IRQ lines as last propagated to the PIC and IOAPIC.
    isa_lines: u16,
    /// Lines the glue drives with [`Platform::set_irq`].
    glue_lines: u16,
}

impl Platform {
    /// A PC in the state a BIOS hands to a boot loader.
    pub fn new(cfg: Config) -> Self {
        let mut lapic = lapic::LocalApic::new(cfg.tsc_hz, cfg.lapic_timer_hz, cfg.x2apic);
        lapic.set_phys_addr_bits(cfg.phys_addr_bits);
        Platform {
            now: 0,
            pic: pic::PicPair::new(),
            pit: pit::Pit::new(cfg.tsc_hz),
            rtc: rtc::Rtc::new(cfg.tsc_hz, cfg.epoch_at_tsc0, cfg.ram_bytes),
            uart: uart::Uart16550::new(),
            pm: pm::PmBlock::new(cfg.tsc_hz),
            ioapic: ioapic::IoApic::new(),
            lapic,
            misc: misc::Misc::new(cfg.pci_host_bridge),
            events: VecDeque::new(),
            isa_lines: 0,
            glue_lines: 0,
            cfg,
        }
    }

    /// Back to the power-on state (after [`Event::Reset`]); time keeps its
    /// value.
    pub fn reset(&mut self) {
        let now = self.now;
        *self = Platform::new(self.cfg.clone());
        self.advance(now);
    }

    /// The configuration this PC was built from.
    pub fn config(&self) -> &Config {
        &self.cfg
    }

    /// The L1's TSC as last given to [`Platform::advance`].
    pub fn now(&self) -> u64 {
        self.now
    }

    /// Let time run to the L1's TSC value `now_tsc` (values earlier than the
    /// last one are ignored): timers that expire fire their interrupts. Call
    /// it before handing any exit to the platform and before asking for
    /// pending interrupts.
    pub fn advance(&mut self, now_tsc: u64) {
        if now_tsc < self.now {
            return;
        }
        self.now = now_tsc;
        if self.pit.advance(now_tsc) {
            // Rising edge of counter 0's OUT: one edge whatever number of
            // periods passed (the 8259A's IRR holds one request).
            self.pulse_isa_irq(0);
        }
        self.rtc.advance(now_tsc);
        if self.cfg.acpi {
            self.pm.advance(now_tsc);
        }
        if self.cfg.lapic {
            self.lapic.advance(now_tsc);
        }
        self.sync_lines();
    }

    /// Alias of [`Platform::advance`] for callers that only set the clock.
    pub fn set_time(&mut self, now_tsc: u64) {
        self.advance(now_tsc)
    }

    /// The earliest TSC value at which a device will want attention (a timer
    /// expiry), so the glue can sleep an HLTing L1 or arm a timer.
    pub fn next_deadline_tsc(&self) -> Option<u64> {
        let mut d = self.pit.next_deadline_tsc();
        let mut take = |x: Option<u64>| {
            if let Some(x) = x {
                d = Some(d.map_or(x, |d| d.min(x)));
            }
        };
        take(self.rtc.next_deadline_tsc());
        if self.cfg.acpi {
            take(self.pm.next_deadline_tsc());
        }
        if self.cfg.lapic {
            take(self.lapic.next_deadline_tsc());
        }
        d
    }

    /// Drive ISA IRQ `irq` (0-15) high from outside the platform (a line
    /// the glue owns). The line stays high until [`Platform::lower_irq`].
    pub fn raise_irq(&mut self, irq: u8) {
        self.set_irq(irq, true)
    }

    /// Drive ISA IRQ `irq` low.
    pub fn lower_irq(&mut self, irq: u8) {
        self.set_irq(irq, false)
    }

    /// Drive ISA IRQ `irq` to `level`.
    pub fn set_irq(&mut self, irq: u8, level: bool) {
        if irq < 16 {
            if level {
                self.glue_lines |= 1 << irq;
            } else {
                self.glue_lines &= !(1 << irq);
            }
            self.sync_lines();
        }
    }

    /// ISA IRQ to IOAPIC input, per the MADT overrides.
    fn gsi_of(irq: u8) -> u8 {
        if irq == 0 { 2 } else { irq }
    }

    fn drive_isa_irq(&mut self, irq: u8, level: bool) {
        self.pic.set_irq(irq, level);
        // IRQ2 is the cascade; GSI 2 belongs to IRQ0 (the override).
        if self.cfg.ioapic && irq != 2 {
            // The SCI is active-high level on GSI 9 (MADT override); the
            // other ISA lines are active-high edge as the IOAPIC sees them.
            self.ioapic.set_irq(Self::gsi_of(irq), level, &mut self.lapic);
        }
    }

    fn pulse_isa_irq(&mut self, irq: u8) {
        self.drive_isa_irq(irq, true);
        let still = (self.isa_lines | self.glue_lines) & (1 << irq) != 0;
        if !still {
            self.drive_isa_irq(irq, false);
        }
    }

    /// Propagate device interrupt outputs to the PIC and IOAPIC.
    fn sync_lines(&mut self) {
        let mut lines = self.glue_lines;
        if self.uart.irq_line() {
            lines |= 1 << COM1_IRQ;
        }
        if self.rtc.irq_line() {
            lines |= 1 << 8;
        }
        if self.misc.irq1_line() {
            lines |= 1 << 1;
        }
        if self.cfg.acpi && self.pm.sci_line() {
            lines |= 1 << SCI_IRQ;
        }
        let changed = lines ^ self.isa_lines;
        self.isa_lines = lines;
        for irq in 0..16u8 {
            if changed & (1 << irq) != 0 {
                self.drive_isa_irq(irq, lines & (1 << irq) != 0);
            }
        }
    }

    fn lapic_enabled(&self) -> bool {
        self.cfg.lapic && self.lapic.hw_enabled()
    }

    /// Whether the 8259A's INT reaches the CPU: directly when the local
    /// APIC is absent or hardware-disabled (IA32_APIC_BASE.EN = 0), else
    /// through LINT0 programmed as ExtINT (virtual wire, SDM 11.5.1).
    fn pic_connected(&self) -> bool {
        !self.lapic_enabled() || self.lapic.lint0_extint()
    }

    /// The vector the CPU would take next if it could take interrupts: an
    /// ExtINT from the 8259A (which bypasses the APIC's priority), else the
    /// LAPIC's highest IRR vector above its processor priority (SDM 11.8.4).
    pub fn pending_interrupt(&self) -> Option<u8> {
        if self.pic_connected() && self.pic.int_output() {
            return self.pic.pending_vector();
        }
        if self.lapic_enabled() {
            return self.lapic.pending_vector();
        }
        None
    }

    /// The glue injected `vector` (as returned by
    /// [`Platform::pending_interrupt`]): run the INTA cycle of the 8259A or
    /// move the vector from the LAPIC's IRR to its ISR.
    pub fn acknowledge(&mut self, vector: u8) {
        if self.pic_connected() && self.pic.int_output() {
            self.pic.inta();
        } else if self.lapic_enabled() {
            self.lapic.acknowledge(vector);
        }
        self.sync_lines();
    }

    /// An NMI is waiting (self-NMI by ICR, an LVT or IOAPIC entry with NMI
    /// delivery).
    pub fn pending_nmi(&self) -> bool {
        self.lapic.nmi_pending()
    }

    /// The glue injected the pending NMI.
    pub fn acknowledge_nmi(&mut self) {
        self.lapic.acknowledge_nmi()
    }

    /// A byte arrives on COM1's line (the console attach); false if the
    /// receive FIFO was full and the byte was lost (overrun), as on the chip.
    /// Feed no more than `self.uart.rx_space()` bytes to lose none.
    pub fn uart_receive(&mut self, byte: u8) -> bool {
        let ok = self.uart.receive(byte);
        self.sync_lines();
        ok
    }

    /// The next byte the L1 sent on COM1, oldest first.
    pub fn uart_take_tx(&mut self) -> Option<u8> {
        self.uart.take_tx()
    }

    /// Press the ACPI fixed-feature power button (an orderly shutdown
    /// request to an ACPI OS: PWRBTN_STS and the SCI if enabled).
    pub fn press_power_button(&mut self) {
        if self.cfg.acpi {
            self.pm.press_power_button();
            self.sync_lines();
        }
    }

    /// The next power/reset/exit event, oldest first.
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    fn push_event(&mut self, e: Event) {
        if self.events.len() < 16 {
            self.events.push_back(e);
        }
    }

    /// An `IN` of `size` bytes (1, 2 or 4) from `port`. Ports nothing
    /// decodes read all-ones. Byte-wide devices see wider accesses as
    /// consecutive byte accesses, as the ISA bus splits them.
    pub fn io_in(&mut self, port: u16, size: u8) -> u32 {
        let size = match size {
            1 | 2 | 4 => size,
            _ => 1,
        };
        let v = if self.cfg.acpi && pm::PmBlock::claims(port) {
            self.pm.read(port, size, self.now)
        } else if misc::Misc::claims_wide(port, size) {
            self.misc.read_wide(port, size)
        } else {
            let mut v = 0u32;
            for i in 0..size as u16 {
                v |= (self.in8(port.wrapping_add(i)) as u32) << (8 * i);
            }
            v
        };
        self.sync_lines();
        v
    }

    /// An `IN` that can change no interrupt line, no deadline and no event
    /// (`None` for any other access): a byte of a PIT counter (0x40-0x42; a
    /// read moves only that counter's read flip-flop, latch or status),
    /// port 0x61 and the 32-bit PM timer — the reads OSes spin on to
    /// calibrate their clocks —, COM1's LSR while it has no error bit to
    /// clear (what a serial console polls before each byte) and the i8042's
    /// status register. Only valid while `now_tsc` is before
    /// [`Platform::next_deadline_tsc`] as of the last [`Platform::advance`]:
    /// then advancing would fire nothing, so only the clock is set. The
    /// glue uses it to answer these reads without a pass over the PC.
    pub fn io_in_pure(&mut self, port: u16, size: u8, now_tsc: u64) -> Option<u32> {
        let now = now_tsc.max(self.now);
        let v = match (port, size) {
            (0x40..=0x42 | 0x61, 1) => u32::from(self.pit.read(port, now)),
            (pm::PM_TMR, 4) if self.cfg.acpi => self.pm.read(port, 4, now),
            (0x3FD, 1) if self.uart.lsr_read_is_pure() => u32::from(self.uart.read(5)),
            (0x64, 1) => u32::from(self.misc.kbc_status()),
            _ => return None,
        };
        self.now = now;
        Some(v)
    }

    fn in8(&mut self, port: u16) -> u8 {
        match port {
            _ if pic::PicPair::claims(port) => self.pic.read(port),
            0x40..=0x43 | 0x61 => self.pit.read(port, self.now),
            0x70 | 0x71 => self.rtc.read(port, self.now),
            COM1_BASE..=0x3FF => self.uart.read(port - COM1_BASE),
            _ => self.misc.read(port),
        }
    }

    /// An `OUT` of `size` bytes (1, 2 or 4) of `value` to `port`.
    pub fn io_out(&mut self, port: u16, size: u8, value: u32) {
        let size = match size {
            1 | 2 | 4 => size,
            _ => 1,
        };
        if self.cfg.acpi && pm::PmBlock::claims(port) {
            if self.pm.write(port, size, value, self.now) {
                self.push_event(Event::PowerOff);
            }
        } else if port == QEMU_EXIT_PORT {
            let mask = if size == 4 { u32::MAX } else { (1u32 << (8 * size as u32)) - 1 };
            self.push_event(Event::Exit(value & mask));
        } else if misc::Misc::claims_wide(port, size) {
            if self.misc.write_wide(port, size, value) {
                self.push_event(Event::Reset);
            }
        } else {
            for i in 0..size as u16 {
                self.out8(port.wrapping_add(i), (value >> (8 * i)) as u8);
            }
        }
        self.sync_lines();
    }

    fn out8(&mut self, port: u16, v: u8) {
        match port {
            _ if pic::PicPair::claims(port) => self.pic.write(port, v),
            0x40..=0x43 | 0x61 => self.pit.write(port, v, self.now),
            0x70 | 0x71 => self.rtc.write(port, v, self.now),
            COM1_BASE..=0x3FF => self.uart.write(port - COM1_BASE, v),
            _ => match self.misc.write(port, v) {
                Some(misc::MiscEvent::Reset) => self.push_event(Event::Reset),
                Some(misc::MiscEvent::BochsShutdown) => self.push_event(Event::Exit(0)),
                None => {}
            },
        }
    }

    /// Whether `gpa` belongs to a device page (the xAPIC page while the
    /// LAPIC is in xAPIC mode, the IOAPIC).
    pub fn is_mmio(&self, gpa: u64) -> bool {
        (self.cfg.lapic && self.lapic.xapic_page_contains(gpa))
            || (self.cfg.ioapic && (IOAPIC_BASE..IOAPIC_BASE + 0x1000).contains(&gpa))
    }

    /// A read of `size` bytes at `gpa`; `None` if no device decodes it.
    pub fn mmio_read(&mut self, gpa: u64, size: u8) -> Option<u64> {
        if self.cfg.lapic && self.lapic.xapic_page_contains(gpa) {
            let v = self.lapic.mmio_read(gpa & 0xFFF, size);
            self.sync_lines();
            return Some(v);
        }
        if self.cfg.ioapic && (IOAPIC_BASE..IOAPIC_BASE + 0x1000).contains(&gpa) {
            return Some(self.ioapic.mmio_read(gpa - IOAPIC_BASE, size));
        }
        None
    }

    /// A write of `size` bytes at `gpa`; `false` if no device decodes it.
    pub fn mmio_write(&mut self, gpa: u64, size: u8, value: u64) -> bool {
        if self.cfg.lapic && self.lapic.xapic_page_contains(gpa) {
            let eoi = self.lapic.mmio_write(gpa & 0xFFF, size, value);
            self.after_lapic_write(eoi);
            return true;
        }
        if self.cfg.ioapic && (IOAPIC_BASE..IOAPIC_BASE + 0x1000).contains(&gpa) {
            self.ioapic.mmio_write(gpa - IOAPIC_BASE, size, value, &mut self.lapic);
            return true;
        }
        false
    }

    fn after_lapic_write(&mut self, eoi: Option<u8>) {
        // A level-triggered vector's EOI is broadcast to the IOAPIC
        // (SDM 11.8.5), which clears Remote IRR and re-delivers a line that
        // is still asserted.
        if let Some(vector) = eoi {
            if self.cfg.ioapic {
                self.ioapic.eoi(vector, &mut self.lapic);
            }
        }
        // The timer may have been (re)armed relative to now.
        self.lapic.advance(self.now);
    }

    /// RDMSR of a platform MSR: `None` if the MSR is not the platform's
    /// (IA32_APIC_BASE 0x1B, x2APIC 0x800-0x8FF, IA32_TSC_DEADLINE 0x6E0).
    pub fn rdmsr(&mut self, msr: u32) -> Option<Result<u64, Gp>> {
        if !lapic::LocalApic::claims_msr(msr) {
            return None;
        }
        if !self.cfg.lapic {
            return Some(Err(Gp));
        }
        Some(self.lapic.rdmsr(msr, self.now))
    }

    /// WRMSR of a platform MSR: `None` if the MSR is not the platform's.
    pub fn wrmsr(&mut self, msr: u32, value: u64) -> Option<Result<(), Gp>> {
        if !lapic::LocalApic::claims_msr(msr) {
            return None;
        }
        if !self.cfg.lapic {
            return Some(Err(Gp));
        }
        let r = self.lapic.wrmsr(msr, value, self.now);
        match r {
            Ok(eoi) => {
                self.after_lapic_write(eoi);
                Some(Ok(()))
            }
            Err(gp) => Some(Err(gp)),
        }
    }

    /// This CPU's local APIC ID and whether it is the BSP (a multi-CPU L1).
    pub fn set_apic_id(&mut self, id: u8, bsp: bool) {
        self.lapic.set_id(id, bsp);
    }

    /// The local APIC's mode (`None`: no LAPIC).
    pub fn apic_mode(&self) -> Option<lapic::ApicMode> {
        self.cfg.lapic.then(|| self.lapic.mode())
    }

    /// An IPI the L1 sent to other CPUs through its ICR, if any.
    pub fn take_ipi(&mut self) -> Option<lapic::Ipi> {
        self.lapic.take_ipi()
    }

    /// Whether an IPI with this destination reaches this CPU's local APIC
    /// (SDM 11.6.2; shorthands are the sender's to resolve).
    pub fn ipi_reaches(&self, dest: u32, logical: bool) -> bool {
        self.cfg.lapic && self.lapic.matches_destination(dest, logical)
    }

    /// A fixed IPI from another CPU arrives (edge triggered).
    pub fn accept_ipi(&mut self, vector: u8) {
        if self.cfg.lapic {
            self.lapic.accept_fixed(vector, false);
        }
    }

    /// An NMI IPI from another CPU arrives.
    pub fn accept_nmi_ipi(&mut self) {
        if self.cfg.lapic {
            self.lapic.accept_nmi();
        }
    }

    /// INIT from another CPU: the local APIC's registers reset (the CPU
    /// itself waits for SIPI, the glue's part).
    pub fn init_received(&mut self) {
        self.lapic.init_received();
    }

    /// CR8 as the L1 reads it (TPR bits 7:4, SDM 11.8.6.1).
    pub fn cr8(&self) -> u64 {
        (self.lapic.tpr() >> 4) as u64
    }

    /// MOV to CR8: TPR bits 7:4 = value bits 3:0, TPR bits 3:0 = 0.
    pub fn set_cr8(&mut self, value: u64) {
        self.lapic.set_tpr(((value & 0xF) << 4) as u8);
    }

    /// A snapshot of what matters for a shell view of this PC.
    pub fn summary(&self) -> Summary {
        let (pit_mode, pit_reload, pit_running) = self.pit.counter_state(0);
        Summary {
            apic_mode: if self.cfg.lapic { Some(self.lapic.mode()) } else { None },
            apic_sw_enabled: self.lapic.sw_enabled(),
            timer_mode: self.lapic.timer_mode(),
            lvt_timer: self.lapic.lvt_timer(),
            tpr: self.lapic.tpr(),
            highest_irr: self.lapic.highest_irr(),
            highest_isr: self.lapic.highest_isr(),
            pic_imr: u16::from(self.pic.master.imr()) | u16::from(self.pic.slave.imr()) << 8,
            pic_irr: u16::from(self.pic.master.irr()) | u16::from(self.pic.slave.irr()) << 8,
            pit0: pit_running.then_some((pit_mode, pit_reload)),
            ioapic_unmasked: (0..ioapic::PINS).filter(|&i| self.ioapic.entry(i) & (1 << 16) == 0).count() as u8,
            next_deadline_tsc: self.next_deadline_tsc(),
            pending: self.pending_interrupt(),
            nmi: self.pending_nmi(),
        }
    }

    /// The ACPI tables of this PC placed at guest-physical `base_gpa`
    /// (64-byte aligned, below 4 GiB; the BIOS area 0xE0000-0xFFFFF makes
    /// the RSDP findable by the standard scan).
    pub fn acpi_tables(&self, base_gpa: u64) -> acpi::AcpiTables {
        acpi::build(base_gpa, &acpi::AcpiConfig { ioapic: self.cfg.ioapic, cpus: self.cfg.cpus, ..Default::default() })
    }
}

#[cfg(test)]
mod tests;
