//! The local APIC of the L1's one CPU, in xAPIC mode (the 4 KiB page at
//! IA32_APIC_BASE, 0xFEE00000 after reset) and x2APIC mode (MSRs
//! 0x800-0x83F), with IA32_APIC_BASE's mode transitions and the timer in
//! one-shot, periodic and TSC-deadline modes. Intel SDM Vol. 3A chapter 11
//! ("Advanced Programmable Interrupt Controller"), section numbers below.
//!
//! Modelled: ID (read-only), version (0x00050014 as Bochs reports), TPR/PPR/APR, EOI (with the
//! EOI of a level-triggered vector handed back for the IOAPIC broadcast),
//! LDR/DFR (flat and cluster), SVR with software disable forcing the LVT
//! masks, ISR/TMR/IRR, ESR (errors latched by a write, error LVT), ICR
//! (fixed, lowest priority, NMI; destination self by shorthand, physical or
//! logical ID, broadcast; illegal vectors set "send illegal vector"),
//! x2APIC SELF IPI, LVT CMCI/timer/thermal/perf/LINT0/LINT1/error, the timer
//! with its divide register. Reserved registers: xAPIC accesses set ESR bit
//! 7 ("illegal register address", 11.5.3) and read 0; x2APIC accesses #GP
//! (11.12.1.2), as do x2APIC writes to read-only registers, reads of
//! write-only ones and set reserved bits. xAPIC MMIO that is not a 32-bit
//! store to a 16-byte aligned register is dropped (11.4.1: "should be
//! accessed using 128-bit aligned 32-bit loads or stores"); narrower loads
//! read the bytes of the register. IPIs to other CPUs (fixed, lowest
//! priority as fixed, NMI, INIT, SIPI) leave through `take_ipi` for the glue
//! that knows the other CPUs (a two-vCPU L1). Not modelled: SMI, arbitration,
//! delivery status (always idle), EOI-broadcast suppression, remote read,
//! thermal/performance/CMCI sources (nothing raises them).
//!
//! Reset state (11.4.7.1 plus what a BIOS leaves for a boot loader, as KVM
//! also models it): IA32_APIC_BASE = 0xFEE00900 (BSP, enabled, xAPIC),
//! SVR = 0xFF (software-disabled), LINT0 = ExtINT and LINT1 = NMI unmasked
//! (virtual wire mode, so the 8259A reaches the CPU), other LVTs masked.

use crate::Gp;
use crate::time::{ticks_to_tsc, tsc_to_ticks};

/// IA32_APIC_BASE.
pub const MSR_APIC_BASE: u32 = 0x1B;
/// IA32_TSC_DEADLINE.
pub const MSR_TSC_DEADLINE: u32 = 0x6E0;
/// First x2APIC MSR (register offset >> 4 is added).
pub const MSR_X2APIC_FIRST: u32 = 0x800;

const BASE_BSP: u64 = 1 << 8;
const BASE_EXTD: u64 = 1 << 10;
const BASE_EN: u64 = 1 << 11;

// Register offsets in the xAPIC page (Table 11-1).
const REG_ID: u32 = 0x020;
const REG_VERSION: u32 = 0x030;
const REG_TPR: u32 = 0x080;
const REG_APR: u32 = 0x090;
const REG_PPR: u32 = 0x0A0;
const REG_EOI: u32 = 0x0B0;
const REG_RRD: u32 = 0x0C0;
const REG_LDR: u32 = 0x0D0;
const REG_DFR: u32 = 0x0E0;
const REG_SVR: u32 = 0x0F0;
const REG_ISR: u32 = 0x100;
const REG_TMR: u32 = 0x180;
const REG_IRR: u32 = 0x200;
const REG_ESR: u32 = 0x280;
const REG_LVT_CMCI: u32 = 0x2F0;
const REG_ICR_LO: u32 = 0x300;
const REG_ICR_HI: u32 = 0x310;
const REG_LVT_TIMER: u32 = 0x320;
const REG_LVT_THERMAL: u32 = 0x330;
const REG_LVT_PERF: u32 = 0x340;
const REG_LVT_LINT0: u32 = 0x350;
const REG_LVT_LINT1: u32 = 0x360;
const REG_LVT_ERROR: u32 = 0x370;
const REG_TIMER_INITIAL: u32 = 0x380;
const REG_TIMER_CURRENT: u32 = 0x390;
const REG_TIMER_DIVIDE: u32 = 0x3E0;
const REG_SELF_IPI: u32 = 0x3F0; // x2APIC only

/// Version register: version 0x14 (integrated xAPIC), max LVT entry 5 -
/// what Bochs' CPUs report, so the L1 sees the same APIC bare and nested.
/// The CMCI LVT (0x2F0) still exists, as on Bochs.
const VERSION: u32 = 0x0005_0014;

const LVT_MASKED: u32 = 1 << 16;
const SVR_ENABLE: u32 = 1 << 8;

// ESR bits (11.5.3, Figure 11-9).
/// ESR: send illegal vector.
pub const ESR_SEND_ILLEGAL_VECTOR: u32 = 1 << 5;
/// ESR: receive illegal vector.
pub const ESR_RECV_ILLEGAL_VECTOR: u32 = 1 << 6;
/// ESR: illegal register address.
pub const ESR_ILLEGAL_REGISTER: u32 = 1 << 7;

/// The mode IA32_APIC_BASE puts the local APIC in (11.12.5).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ApicMode {
    /// EN = 0.
    Disabled,
    /// EN = 1, EXTD = 0: the MMIO page.
    XApic,
    /// EN = 1, EXTD = 1: the MSRs.
    X2Apic,
}

/// The timer mode of LVT Timer bits 18:17 (11.5.4).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TimerMode {
    /// 00.
    OneShot,
    /// 01.
    Periodic,
    /// 10.
    TscDeadline,
}

/// The local APIC.
#[derive(Clone, Debug)]
pub struct LocalApic {
    tsc_hz: u64,
    timer_hz: u64,
    x2apic_allowed: bool,
    /// Valid bits of the base address (MAXPHYADDR).
    base_mask: u64,
    apic_base: u64,
    /// xAPIC ID (bits 31:24 of the ID register; writable in xAPIC mode).
    xapic_id: u8,
    tpr: u8,
    ldr: u32,
    dfr: u32,
    svr: u32,
    isr: [u32; 8],
    tmr: [u32; 8],
    irr: [u32; 8],
    /// ESR as last latched by a write.
    esr: u32,
    /// Errors seen since the last ESR write.
    esr_pending: u32,
    icr: u64,
    /// LVT registers: CMCI, timer, thermal, perf, LINT0, LINT1, error.
    lvt: [u32; 7],
    timer_initial: u32,
    timer_divide: u32,
    /// TSC at which the current count was loaded.
    timer_start: u64,
    /// Periods already fired (one-shot: 0 or 1).
    timer_fired: u64,
    timer_running: bool,
    tsc_deadline: u64,
    nmi: bool,
    /// The TSC as of the last `advance`.
    now: u64,
    /// An IPI the ICR sent to other CPUs, for the glue to deliver
    /// (multi-CPU L1s; taken by [`LocalApic::take_ipi`]).
    outgoing: Option<Ipi>,
}

/// An interprocessor message to other local APICs (SDM 11.6.1): what the
/// ICR said, for the glue that knows the other CPUs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ipi {
    /// Delivery mode: 0 fixed, 1 lowest priority, 4 NMI, 5 INIT, 6 start-up.
    pub mode: u8,
    pub vector: u8,
    /// Destination field (8 bits in xAPIC, 32 in x2APIC mode).
    pub dest: u32,
    pub logical: bool,
    /// INIT level de-assert (mode 5, level 0, trigger level): no effect on
    /// the targets' state in P6 and later (11.6.1).
    pub deassert: bool,
    /// 0 the destination field, 2 all including self, 3 all excluding self.
    pub shorthand: u8,
}

impl Ipi {
    /// Whether this IPI, sent by the APIC with ID `from`, reaches the
    /// *other* APIC with ID `to` (SDM 11.6.2): the all-shorthands, the
    /// broadcast ID, a physical ID, or a logical flat destination with one
    /// bit per APIC ID (LDR = 1 << ID, as Linux and the built-in L1 set it;
    /// x2APIC: cluster 0, bit ID). Clusters in xAPIC mode are not modelled.
    pub fn reaches(&self, from: u8, to: u8, x2apic: bool) -> bool {
        if from == to || to >= 16 {
            return false;
        }
        match self.shorthand {
            2 | 3 => true,
            0 => {
                let broadcast = if x2apic { self.dest == u32::MAX } else { self.dest & 0xFF == 0xFF };
                if broadcast {
                    true
                } else if self.logical {
                    let bits = if x2apic { self.dest >> 16 == 0 && self.dest & (1 << to) != 0 } else { self.dest & 0xFF & (1 << to) != 0 };
                    bits && !(to >= 8 && !x2apic)
                } else {
                    self.dest == u32::from(to)
                }
            }
            _ => false,
        }
    }
}

const LVT_TIMER: usize = 1;
const LVT_LINT0: usize = 4;
const LVT_LINT1: usize = 5;
const LVT_ERROR: usize = 6;

fn lvt_index(reg: u32) -> Option<usize> {
    match reg {
        REG_LVT_CMCI => Some(0),
        REG_LVT_TIMER => Some(LVT_TIMER),
        REG_LVT_THERMAL => Some(2),
        REG_LVT_PERF => Some(3),
        REG_LVT_LINT0 => Some(LVT_LINT0),
        REG_LVT_LINT1 => Some(LVT_LINT1),
        REG_LVT_ERROR => Some(LVT_ERROR),
        _ => None,
    }
}

/// Writable bits of each LVT register (Figure 11-8).
const LVT_WRITABLE: [u32; 7] = [
    0x0001_07FF, // CMCI: vector, delivery mode, mask
    0x0007_00FF, // timer: vector, mask, timer mode
    0x0001_07FF, // thermal
    0x0001_07FF, // perf
    0x0001_A7FF, // LINT0: vector, mode, polarity, trigger, mask
    0x0001_A7FF, // LINT1
    0x0001_00FF, // error: vector, mask
];

impl LocalApic {
    /// Reset state with a BIOS' virtual wire (see the module header).
    /// `timer_hz` is the timer's input clock before the divider.
    pub fn new(tsc_hz: u64, timer_hz: u64, x2apic_allowed: bool) -> Self {
        let mut a = LocalApic {
            tsc_hz: tsc_hz.max(1),
            timer_hz: timer_hz.max(1),
            x2apic_allowed,
            base_mask: ((1u64 << 36) - 1) & !0xFFF,
            apic_base: crate::LAPIC_BASE | BASE_BSP | BASE_EN,
            xapic_id: 0,
            tpr: 0,
            ldr: 0,
            dfr: 0,
            svr: 0,
            isr: [0; 8],
            tmr: [0; 8],
            irr: [0; 8],
            esr: 0,
            esr_pending: 0,
            icr: 0,
            lvt: [0; 7],
            timer_initial: 0,
            timer_divide: 0,
            timer_start: 0,
            timer_fired: 0,
            timer_running: false,
            tsc_deadline: 0,
            nmi: false,
            now: 0,
            outgoing: None,
        };
        a.reset_registers();
        a.lvt[LVT_LINT0] = 0x700; // ExtINT
        a.lvt[LVT_LINT1] = 0x400; // NMI
        a
    }

    /// The physical-address width for IA32_APIC_BASE's reserved-bit check
    /// (CPUID.80000008H:EAX bits 7:0); 36 unless told.
    pub fn set_phys_addr_bits(&mut self, bits: u8) {
        self.base_mask = ((1u64 << bits.clamp(32, 52)) - 1) & !0xFFF;
    }

    /// This APIC's initial ID, and whether it is the bootstrap processor's
    /// (IA32_APIC_BASE bit 8): a second CPU of a multi-CPU L1.
    pub fn set_id(&mut self, id: u8, bsp: bool) {
        self.xapic_id = id;
        self.apic_base = (self.apic_base & !BASE_BSP) | if bsp { BASE_BSP } else { 0 };
    }

    /// This APIC's ID (the initial one; xAPIC writes to it are ignored).
    pub fn id(&self) -> u8 {
        self.xapic_id
    }

    /// INIT received (11.4.7.3): the registers go back to their power-up
    /// state, IA32_APIC_BASE and the ID stay.
    pub fn init_received(&mut self) {
        self.reset_registers();
        self.nmi = false;
        self.lvt[LVT_LINT0] = 0x700;
        self.lvt[LVT_LINT1] = 0x400;
    }

    /// The IPI to other CPUs the last ICR write sent, if any.
    pub fn take_ipi(&mut self) -> Option<Ipi> {
        self.outgoing.take()
    }

    /// Power-up register state (11.4.7.1), IA32_APIC_BASE untouched.
    fn reset_registers(&mut self) {
        self.tpr = 0;
        self.ldr = 0;
        self.dfr = 0xFFFF_FFFF;
        self.svr = 0xFF;
        self.isr = [0; 8];
        self.tmr = [0; 8];
        self.irr = [0; 8];
        self.esr = 0;
        self.esr_pending = 0;
        self.icr = 0;
        self.lvt = [LVT_MASKED; 7];
        self.timer_initial = 0;
        self.timer_divide = 0;
        self.timer_running = false;
        self.tsc_deadline = 0;
    }

    /// The current mode.
    pub fn mode(&self) -> ApicMode {
        match (self.apic_base & BASE_EN != 0, self.apic_base & BASE_EXTD != 0) {
            (false, _) => ApicMode::Disabled,
            (true, false) => ApicMode::XApic,
            (true, true) => ApicMode::X2Apic,
        }
    }

    /// IA32_APIC_BASE.
    pub fn apic_base(&self) -> u64 {
        self.apic_base
    }

    /// Whether IA32_APIC_BASE.EN is set.
    pub fn hw_enabled(&self) -> bool {
        self.apic_base & BASE_EN != 0
    }

    /// Whether SVR bit 8 (APIC software enable) is set.
    pub fn sw_enabled(&self) -> bool {
        self.svr & SVR_ENABLE != 0
    }

    /// Whether LINT0 passes the 8259A's INT: unmasked with ExtINT delivery.
    pub fn lint0_extint(&self) -> bool {
        let l = self.lvt[LVT_LINT0];
        l & LVT_MASKED == 0 && (l >> 8) & 7 == 0b111
    }

    /// The timer's mode as LVT Timer says.
    pub fn timer_mode(&self) -> TimerMode {
        match (self.lvt[LVT_TIMER] >> 17) & 3 {
            1 => TimerMode::Periodic,
            2 => TimerMode::TscDeadline,
            _ => TimerMode::OneShot,
        }
    }

    /// LVT Timer (for views).
    pub fn lvt_timer(&self) -> u32 {
        self.lvt[LVT_TIMER]
    }

    fn bit(arr: &[u32; 8], v: u8) -> bool {
        arr[(v >> 5) as usize] & (1 << (v & 31)) != 0
    }

    fn set_bit(arr: &mut [u32; 8], v: u8, on: bool) {
        let w = &mut arr[(v >> 5) as usize];
        if on {
            *w |= 1 << (v & 31);
        } else {
            *w &= !(1 << (v & 31));
        }
    }

    fn highest(arr: &[u32; 8]) -> Option<u8> {
        (0..8).rev().find(|&i| arr[i] != 0).map(|i| (i as u32 * 32 + 31 - arr[i].leading_zeros()) as u8)
    }

    /// Highest vector in IRR (for views).
    pub fn highest_irr(&self) -> Option<u8> {
        Self::highest(&self.irr)
    }

    /// Highest vector in ISR (for views).
    pub fn highest_isr(&self) -> Option<u8> {
        Self::highest(&self.isr)
    }

    /// PPR (11.8.3.1): TPR if its class is at least ISRV's, else ISRV bits 7:4.
    pub fn ppr(&self) -> u8 {
        let isrv = Self::highest(&self.isr).unwrap_or(0);
        if self.tpr >> 4 >= isrv >> 4 { self.tpr } else { isrv & 0xF0 }
    }

    /// The highest IRR vector whose priority class is above PPR's (11.8.4).
    pub fn pending_vector(&self) -> Option<u8> {
        let v = Self::highest(&self.irr)?;
        (v >> 4 > self.ppr() >> 4).then_some(v)
    }

    /// INTA: `vector` moves from IRR to ISR.
    pub fn acknowledge(&mut self, vector: u8) {
        if Self::bit(&self.irr, vector) {
            Self::set_bit(&mut self.irr, vector, false);
            Self::set_bit(&mut self.isr, vector, true);
        }
    }

    fn error(&mut self, bits: u32) {
        let new = bits & !self.esr_pending;
        self.esr_pending |= bits;
        let lvt = self.lvt[LVT_ERROR];
        if new != 0 && lvt & LVT_MASKED == 0 {
            let v = lvt as u8;
            if v >= 16 {
                self.set_irr(v, false);
            } else {
                // An illegal error vector only records that too.
                self.esr_pending |= ESR_RECV_ILLEGAL_VECTOR;
            }
        }
    }

    fn set_irr(&mut self, vector: u8, level: bool) {
        Self::set_bit(&mut self.irr, vector, true);
        Self::set_bit(&mut self.tmr, vector, level);
    }

    /// Accept a fixed (or lowest-priority) interrupt from the IOAPIC, an
    /// IPI or an LVT: IRR (and TMR for level). Dropped while the APIC is
    /// disabled; vectors 0-15 set "receive illegal vector" (11.5.2).
    pub fn accept_fixed(&mut self, vector: u8, level: bool) {
        if !self.hw_enabled() || !self.sw_enabled() {
            return;
        }
        if vector < 16 {
            self.error(ESR_RECV_ILLEGAL_VECTOR);
            return;
        }
        self.set_irr(vector, level);
    }

    /// Accept an NMI (NMIs are taken even when software-disabled).
    pub fn accept_nmi(&mut self) {
        if self.hw_enabled() {
            self.nmi = true;
        }
    }

    /// An NMI waits.
    pub fn nmi_pending(&self) -> bool {
        self.nmi
    }

    /// The NMI was injected.
    pub fn acknowledge_nmi(&mut self) {
        self.nmi = false
    }

    /// Whether a message with destination `dest` (8 bits in xAPIC, 32 in
    /// x2APIC) and destination mode `logical` selects this APIC (11.6.2).
    pub fn matches_destination(&self, dest: u32, logical: bool) -> bool {
        if self.mode() == ApicMode::X2Apic {
            if dest == 0xFFFF_FFFF {
                return true;
            }
            if !logical {
                return dest == self.xapic_id as u32;
            }
            let ldr = self.x2apic_ldr();
            return dest >> 16 == ldr >> 16 && dest & ldr & 0xFFFF != 0;
        }
        let dest = dest & 0xFF;
        if dest == 0xFF {
            return true;
        }
        if !logical {
            return dest as u8 == self.xapic_id;
        }
        let logical_id = (self.ldr >> 24) as u8;
        if self.dfr >> 28 == 0xF {
            dest as u8 & logical_id != 0 // flat
        } else {
            // Cluster: high nibble is the cluster, low nibble a bit mask.
            dest >> 4 == (logical_id >> 4) as u32 && dest as u8 & logical_id & 0xF != 0
        }
    }

    fn x2apic_ldr(&self) -> u32 {
        // 11.12.10.2: cluster ID = x2APIC ID[19:4], bit (x2APIC ID[3:0]).
        let id = self.xapic_id as u32;
        ((id >> 4) << 16) | (1 << (id & 0xF))
    }

    // ---- timer (11.5.4) ----

    fn divisor(&self) -> u64 {
        let d = self.timer_divide;
        let v = ((d & 8) >> 1) | (d & 3);
        1 << ((v + 1) & 7)
    }

    /// TSC at which `counts` counts have elapsed since the load.
    fn tsc_after_counts(&self, counts: u64) -> u64 {
        self.timer_start.saturating_add(ticks_to_tsc(counts.saturating_mul(self.divisor()), self.tsc_hz, self.timer_hz))
    }

    fn counts_elapsed(&self, tsc: u64) -> u64 {
        tsc_to_ticks(tsc.saturating_sub(self.timer_start), self.tsc_hz, self.timer_hz) / self.divisor()
    }

    fn current_count(&self) -> u32 {
        if !self.timer_running || self.timer_mode() == TimerMode::TscDeadline {
            return 0;
        }
        let n = self.timer_initial as u64;
        let e = self.counts_elapsed(self.now);
        match self.timer_mode() {
            TimerMode::Periodic => (n - e % n) as u32,
            _ => n.saturating_sub(e) as u32,
        }
    }

    fn fire_timer(&mut self) {
        let lvt = self.lvt[LVT_TIMER];
        if lvt & LVT_MASKED == 0 {
            self.accept_fixed(lvt as u8, false);
        }
    }

    /// Bring time to `tsc`: an expired timer sets its vector in IRR (one
    /// interrupt however many periods passed; IRR holds one).
    pub fn advance(&mut self, tsc: u64) {
        self.now = self.now.max(tsc);
        match self.timer_mode() {
            TimerMode::TscDeadline => {
                if self.tsc_deadline != 0 && self.now >= self.tsc_deadline {
                    self.tsc_deadline = 0;
                    self.fire_timer();
                }
            }
            mode => {
                if !self.timer_running {
                    return;
                }
                let n = self.timer_initial as u64;
                let periods = self.counts_elapsed(self.now) / n;
                if periods > self.timer_fired {
                    if mode == TimerMode::OneShot {
                        self.timer_running = false;
                    }
                    self.timer_fired = periods;
                    self.fire_timer();
                }
            }
        }
    }

    /// TSC of the next timer expiry.
    pub fn next_deadline_tsc(&self) -> Option<u64> {
        if !self.hw_enabled() {
            return None;
        }
        match self.timer_mode() {
            TimerMode::TscDeadline => (self.tsc_deadline != 0).then_some(self.tsc_deadline),
            _ if self.timer_running => {
                Some(self.tsc_after_counts((self.timer_fired + 1) * self.timer_initial as u64))
            }
            _ => None,
        }
    }

    /// TPR.
    pub fn tpr(&self) -> u8 {
        self.tpr
    }

    /// Set TPR (MOV to CR8 or a TPR write).
    pub fn set_tpr(&mut self, v: u8) {
        self.tpr = v
    }

    // ---- registers ----

    /// Read register `reg` (offset in the xAPIC page); `None` if it is not
    /// an implemented, readable register in the current mode.
    fn read_reg(&self, reg: u32) -> Option<u32> {
        let x2 = self.mode() == ApicMode::X2Apic;
        Some(match reg {
            REG_ID => {
                if x2 { self.xapic_id as u32 } else { (self.xapic_id as u32) << 24 }
            }
            REG_VERSION => VERSION,
            REG_TPR => self.tpr as u32,
            REG_APR if !x2 => 0,
            REG_PPR => self.ppr() as u32,
            REG_EOI if !x2 => 0,
            REG_RRD if !x2 => 0,
            REG_LDR => {
                if x2 { self.x2apic_ldr() } else { self.ldr }
            }
            REG_DFR if !x2 => self.dfr,
            REG_SVR => self.svr,
            0x100..=0x170 => self.isr[((reg - REG_ISR) >> 4) as usize],
            0x180..=0x1F0 => self.tmr[((reg - REG_TMR) >> 4) as usize],
            0x200..=0x270 => self.irr[((reg - REG_IRR) >> 4) as usize],
            REG_ESR => self.esr,
            REG_ICR_LO => self.icr as u32,
            REG_ICR_HI if !x2 => (self.icr >> 32) as u32,
            REG_TIMER_INITIAL => self.timer_initial,
            REG_TIMER_CURRENT => self.current_count(),
            REG_TIMER_DIVIDE => self.timer_divide,
            _ => self.lvt[lvt_index(reg)?],
        })
    }

    /// Write register `reg`; `Err` if the register is not writable in this
    /// mode (xAPIC: ESR illegal register; x2APIC: #GP). Returns the vector
    /// of a level-triggered EOI.
    fn write_reg(&mut self, reg: u32, v: u32) -> Result<Option<u8>, ()> {
        let x2 = self.mode() == ApicMode::X2Apic;
        match reg {
            // The xAPIC ID is read-only here (writability is model specific,
            // 11.4.6; Bochs' APIC ignores the write too).
            REG_ID if !x2 => {}
            REG_TPR => self.tpr = v as u8,
            REG_EOI => return Ok(self.eoi()),
            REG_LDR if !x2 => self.ldr = v & 0xFF00_0000,
            REG_DFR if !x2 => self.dfr = v | 0x0FFF_FFFF,
            REG_SVR => {
                self.svr = v & 0x3FF;
                if v & SVR_ENABLE == 0 {
                    // 11.4.7.2: software disable masks every LVT entry.
                    for l in self.lvt.iter_mut() {
                        *l |= LVT_MASKED;
                    }
                }
            }
            REG_ESR => {
                // 11.5.3: a write latches the errors seen since the last one.
                self.esr = self.esr_pending;
                self.esr_pending = 0;
            }
            REG_ICR_LO => {
                self.icr = (self.icr & !0xFFFF_FFFF) | (v & 0x000C_CFFF) as u64;
                self.send_ipi();
            }
            REG_ICR_HI if !x2 => self.icr = (self.icr & 0xFFFF_FFFF) | ((v & 0xFF00_0000) as u64) << 32,
            REG_TIMER_INITIAL => {
                if self.timer_mode() != TimerMode::TscDeadline {
                    self.timer_initial = v;
                    self.timer_start = self.now;
                    self.timer_fired = 0;
                    self.timer_running = v != 0;
                }
            }
            REG_TIMER_DIVIDE => {
                // Keep the current count running with the new divisor.
                let current = self.current_count();
                self.timer_divide = v & 0xB;
                if self.timer_running {
                    let elapsed_counts = self.timer_initial.saturating_sub(current) as u64;
                    let back = ticks_to_tsc(elapsed_counts * self.divisor(), self.tsc_hz, self.timer_hz);
                    self.timer_start = self.now.saturating_sub(back);
                }
            }
            REG_SELF_IPI if x2 => {
                // 11.5.3: an illegal vector written to SELF IPI is both sent
                // and received illegally.
                if (v as u8) < 16 {
                    self.error(ESR_SEND_ILLEGAL_VECTOR | ESR_RECV_ILLEGAL_VECTOR);
                } else {
                    self.accept_fixed(v as u8, false);
                }
            }
            _ => {
                let i = lvt_index(reg).ok_or(())?;
                let mut val = v & LVT_WRITABLE[i];
                if !self.sw_enabled() {
                    val |= LVT_MASKED;
                }
                if i == LVT_TIMER {
                    let old_mode = self.timer_mode();
                    let was_deadline = old_mode == TimerMode::TscDeadline;
                    if self.timer_running && !was_deadline {
                        // Count the current period from its own start, so a
                        // periodic timer turned one-shot ends this period.
                        self.advance(self.now);
                        let base = self.tsc_after_counts(self.timer_fired * self.timer_initial as u64);
                        self.timer_start = base;
                        self.timer_fired = 0;
                    }
                    self.lvt[i] = val;
                    if (self.timer_mode() == TimerMode::TscDeadline) != was_deadline {
                        // 11.5.4.1: moving into or out of TSC-deadline mode
                        // disarms the timer. One-shot <-> periodic keeps
                        // counting.
                        self.timer_running = false;
                        self.timer_initial = 0;
                        self.tsc_deadline = 0;
                    }
                } else {
                    self.lvt[i] = val;
                }
            }
        }
        Ok(None)
    }

    fn eoi(&mut self) -> Option<u8> {
        let v = Self::highest(&self.isr)?;
        Self::set_bit(&mut self.isr, v, false);
        Self::bit(&self.tmr, v).then_some(v)
    }

    /// Send the IPI the ICR describes (11.6.1): to this CPU directly, to
    /// the others through [`LocalApic::take_ipi`] (the glue knows them).
    fn send_ipi(&mut self) {
        let lo = self.icr as u32;
        let vector = lo as u8;
        let mode = ((lo >> 8) & 7) as u8;
        let logical = lo & (1 << 11) != 0;
        let level_assert = lo & (1 << 14) != 0;
        let trigger_level = lo & (1 << 15) != 0;
        let shorthand = ((lo >> 18) & 3) as u8;
        let dest = if self.mode() == ApicMode::X2Apic {
            (self.icr >> 32) as u32
        } else {
            (self.icr >> 56) as u32
        };
        let to_self = match shorthand {
            0 => self.matches_destination(dest, logical),
            1 | 2 => true,
            _ => false,
        };
        // Others: a destination that is not only this APIC, or a shorthand
        // naming all (11.6.1); self-only (1) never leaves.
        let broadcast = if self.mode() == ApicMode::X2Apic { dest == 0xFFFF_FFFF } else { dest & 0xFF == 0xFF };
        let to_others = match shorthand {
            0 => logical || broadcast || !to_self,
            2 | 3 => true,
            _ => false,
        };
        if matches!(mode, 0 | 1) && vector < 16 {
            self.error(ESR_SEND_ILLEGAL_VECTOR);
            return;
        }
        match mode {
            // Fixed and lowest priority.
            0 | 1 if to_self => self.accept_fixed(vector, false),
            // NMI.
            4 if to_self => self.accept_nmi(),
            // SMI, reserved: not modelled; INIT/SIPI to self do nothing here.
            _ => {}
        }
        if to_others && matches!(mode, 0 | 1 | 4 | 5 | 6) {
            let deassert = mode == 5 && !level_assert && trigger_level;
            self.outgoing = Some(Ipi { mode, vector, dest, logical, deassert, shorthand });
        }
    }

    /// The value of register `reg` (its xAPIC page offset, e.g. 0x320 for
    /// LVT Timer) as the current mode reads it, without the side effects an
    /// L1's access has (no ESR error for unimplemented ones): for views.
    pub fn peek(&self, reg: u32) -> Option<u32> {
        self.read_reg(reg & 0xFF0)
    }

    // ---- xAPIC MMIO ----

    /// Whether `gpa` is in the xAPIC page (decoded in xAPIC mode only).
    pub fn xapic_page_contains(&self, gpa: u64) -> bool {
        self.mode() == ApicMode::XApic && gpa & !0xFFF == self.apic_base & self.base_mask
    }

    fn implemented(&self, reg: u32) -> bool {
        self.read_reg(reg).is_some() || matches!(reg, REG_EOI | REG_RRD | REG_APR)
    }

    /// MMIO read at `offset` (0-0xFFF) of `size` bytes. Bytes outside the
    /// 32-bit register read 0; unimplemented registers set ESR bit 7.
    pub fn mmio_read(&mut self, offset: u64, size: u8) -> u64 {
        let reg = (offset & 0xFF0) as u32;
        let byte = (offset & 0xF) as u32;
        let Some(v) = self.read_reg(reg) else {
            self.error(ESR_ILLEGAL_REGISTER);
            return 0;
        };
        if byte >= 4 {
            return 0;
        }
        let v = (v as u64) >> (8 * byte);
        match size {
            1 => v & 0xFF,
            2 => v & 0xFFFF,
            _ => v & 0xFFFF_FFFF,
        }
    }

    /// MMIO write; returns the vector whose EOI was level-triggered. Writes
    /// that are not 32-bit stores to a register's offset are dropped.
    pub fn mmio_write(&mut self, offset: u64, size: u8, value: u64) -> Option<u8> {
        let reg = (offset & 0xFF0) as u32;
        if size != 4 || offset & 0xF != 0 {
            return None;
        }
        if !self.implemented(reg) {
            self.error(ESR_ILLEGAL_REGISTER);
            return None;
        }
        // Writes to read-only registers are ignored.
        self.write_reg(reg, value as u32).unwrap_or(None)
    }

    // ---- MSRs ----

    /// MSRs handled here.
    pub fn claims_msr(msr: u32) -> bool {
        msr == MSR_APIC_BASE || msr == MSR_TSC_DEADLINE || (0x800..=0x8FF).contains(&msr)
    }

    /// RDMSR at TSC `tsc`.
    pub fn rdmsr(&mut self, msr: u32, tsc: u64) -> Result<u64, Gp> {
        self.now = self.now.max(tsc);
        match msr {
            MSR_APIC_BASE => Ok(self.apic_base),
            MSR_TSC_DEADLINE => {
                Ok(if self.timer_mode() == TimerMode::TscDeadline { self.tsc_deadline } else { 0 })
            }
            _ => {
                if self.mode() != ApicMode::X2Apic {
                    return Err(Gp);
                }
                let reg = (msr - MSR_X2APIC_FIRST) << 4;
                if reg == REG_ICR_LO {
                    return Ok(self.icr);
                }
                if reg == REG_EOI || reg == REG_SELF_IPI || reg > REG_SELF_IPI {
                    return Err(Gp);
                }
                self.read_reg(reg).map(|v| v as u64).ok_or(Gp)
            }
        }
    }

    /// Which x2APIC registers are writable, and the bits that may be set
    /// without #GP (11.12.1.2: the upper 32 bits of every register but the
    /// ICR are reserved; TPR bits 31:8, SVR bits beyond 8 (no focus
    /// checking, no EOI-broadcast suppression) and any nonzero EOI or ESR
    /// write #GP). Other registers ignore their reserved bits, as Bochs'
    /// and KVM's x2APIC do.
    fn x2apic_writable(reg: u32) -> Option<u64> {
        Some(match reg {
            REG_TPR => 0xFF,
            REG_EOI | REG_ESR => 0,
            REG_SVR => 0x1FF,
            REG_ICR_LO => u64::MAX,
            REG_TIMER_INITIAL | REG_TIMER_DIVIDE | REG_SELF_IPI => 0xFFFF_FFFF,
            _ => {
                lvt_index(reg)?;
                0xFFFF_FFFF
            }
        })
    }

    /// WRMSR at TSC `tsc`; `Ok(Some(vector))` when an x2APIC EOI was of a
    /// level-triggered vector (for the IOAPIC).
    pub fn wrmsr(&mut self, msr: u32, value: u64, tsc: u64) -> Result<Option<u8>, Gp> {
        self.now = self.now.max(tsc);
        match msr {
            MSR_APIC_BASE => self.write_apic_base(value).map(|()| None),
            MSR_TSC_DEADLINE => {
                if self.timer_mode() == TimerMode::TscDeadline && self.hw_enabled() {
                    self.tsc_deadline = value;
                }
                Ok(None)
            }
            _ => {
                if self.mode() != ApicMode::X2Apic {
                    return Err(Gp);
                }
                let reg = (msr - MSR_X2APIC_FIRST) << 4;
                let allowed = Self::x2apic_writable(reg).ok_or(Gp)?;
                if value & !allowed != 0 {
                    return Err(Gp);
                }
                if reg == REG_ICR_LO {
                    self.icr = value & 0xFFFF_FFFF_000C_CFFF;
                    self.send_ipi();
                    return Ok(None);
                }
                self.write_reg(reg, value as u32).map_err(|()| Gp)
            }
        }
    }

    /// IA32_APIC_BASE write with the transitions of 11.12.5 (Figure 11-28).
    fn write_apic_base(&mut self, value: u64) -> Result<(), Gp> {
        let reserved = !(self.base_mask | BASE_BSP | BASE_EXTD | BASE_EN);
        if value & reserved != 0 {
            return Err(Gp);
        }
        let en = value & BASE_EN != 0;
        let extd = value & BASE_EXTD != 0;
        if extd && !self.x2apic_allowed {
            return Err(Gp);
        }
        let new = match (en, extd) {
            (false, false) => ApicMode::Disabled,
            (true, false) => ApicMode::XApic,
            (true, true) => ApicMode::X2Apic,
            (false, true) => return Err(Gp), // invalid state
        };
        let old = self.mode();
        match (old, new) {
            (ApicMode::X2Apic, ApicMode::XApic) | (ApicMode::Disabled, ApicMode::X2Apic) => return Err(Gp),
            _ => {}
        }
        // BSP is read-only.
        self.apic_base = (value & !BASE_BSP) | (self.apic_base & BASE_BSP);
        if new == ApicMode::Disabled && old != ApicMode::Disabled {
            // 11.4.3: disabling the APIC this way loses its state; it comes
            // back in its power-up state (LVTs masked, software-disabled).
            self.reset_registers();
            self.nmi = false;
        }
        if new == ApicMode::X2Apic && old == ApicMode::XApic {
            // 11.12.5.1: the DFR/LDR of xAPIC mode do not carry over.
            self.ldr = self.x2apic_ldr();
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HZ: u64 = 50_000_000;

    fn apic() -> LocalApic {
        let mut a = LocalApic::new(HZ, HZ, true);
        a.mmio_write(0xF0, 4, 0x1FF); // software enable, spurious 0xFF
        a
    }

    #[test]
    fn reset_state_and_version() {
        let mut a = LocalApic::new(HZ, HZ, true);
        assert_eq!(a.rdmsr(MSR_APIC_BASE, 0), Ok(0xFEE0_0900));
        assert_eq!(a.mmio_read(0x30, 4), 0x0005_0014);
        assert_eq!(a.peek(0x3A0), None, "peek names unimplemented registers");
        a.mmio_write(0x280, 4, 0);
        assert_eq!(a.peek(0x280), Some(0), "and leaves no ESR error behind");
        assert_eq!(a.mmio_read(0xF0, 4), 0xFF);
        assert_eq!(a.mmio_read(0xE0, 4), 0xFFFF_FFFF);
        assert!(a.lint0_extint(), "virtual wire: LINT0 is ExtINT");
        assert_eq!(a.mmio_read(0x320, 4), LVT_MASKED as u64);
        assert!(a.xapic_page_contains(0xFEE0_00F0));
    }

    #[test]
    fn tpr_ppr_isr_eoi_priority() {
        let mut a = apic();
        a.accept_fixed(0x41, false);
        a.accept_fixed(0x52, false);
        assert_eq!(a.pending_vector(), Some(0x52));
        a.acknowledge(0x52);
        assert_eq!(a.mmio_read(0xA0, 4), 0x50, "PPR = ISRV class");
        assert_eq!(a.pending_vector(), None, "0x41 is below the in-service class");
        assert_eq!(a.mmio_read(0x100 + 0x20, 4), 1 << (0x52 - 64), "ISR bit of 0x52");
        a.mmio_write(0xB0, 4, 0);
        assert_eq!(a.pending_vector(), Some(0x41));
        a.mmio_write(0x80, 4, 0x40); // TPR class 4 masks class 4
        assert_eq!(a.pending_vector(), None);
        a.mmio_write(0x80, 4, 0x3F);
        assert_eq!(a.pending_vector(), Some(0x41));
        assert_eq!(a.mmio_read(0xA0, 4), 0x3F, "PPR = TPR");
    }

    #[test]
    fn self_ipi_nmi_and_illegal_vector() {
        let mut a = apic();
        a.mmio_write(0x300, 4, 0x0004_0000 | 0x66); // shorthand self, fixed
        assert_eq!(a.pending_vector(), Some(0x66));
        assert_eq!(a.mmio_read(0x300, 4) & (1 << 12), 0, "delivery status idle");
        a.mmio_write(0x300, 4, 0x0004_0400); // self NMI
        assert!(a.nmi_pending());
        // Fixed IPI with vector 3: send illegal vector, nothing delivered.
        a.mmio_write(0x370, 4, 0xEE); // error LVT unmasked, vector 0xEE
        a.mmio_write(0x300, 4, 0x0004_0003);
        a.mmio_write(0x280, 4, 0);
        assert_eq!(a.mmio_read(0x280, 4), ESR_SEND_ILLEGAL_VECTOR as u64);
        assert_eq!(a.highest_irr(), Some(0xEE), "error interrupt raised");
        a.mmio_write(0x280, 4, 0);
        assert_eq!(a.mmio_read(0x280, 4), 0, "next write latches no new errors");
        // Physical destination 0 is this APIC, 1 is nobody.
        a.mmio_write(0x310, 4, 1 << 24);
        a.mmio_write(0x300, 4, 0x77);
        assert!(!LocalApic::bit(&a.irr, 0x77));
        a.mmio_write(0x310, 4, 0);
        a.mmio_write(0x300, 4, 0x77);
        assert!(LocalApic::bit(&a.irr, 0x77));
    }

    #[test]
    fn reserved_registers_and_bad_widths() {
        let mut a = apic();
        a.mmio_write(0x3A0, 4, 5); // reserved offset
        a.mmio_write(0x280, 4, 0);
        assert_eq!(a.mmio_read(0x280, 4), ESR_ILLEGAL_REGISTER as u64);
        a.mmio_write(0x80, 1, 0x50); // byte store: dropped
        a.mmio_write(0x84, 4, 0x50); // misaligned: dropped
        assert_eq!(a.tpr(), 0);
        a.mmio_write(0x80, 4, 0x12345678);
        assert_eq!(a.mmio_read(0x80, 1), 0x78);
        assert_eq!(a.mmio_read(0x30, 2), 0x0014);
        assert_eq!(a.mmio_read(0x34, 4), 0);
        a.mmio_write(0x30, 4, 0); // read-only version: ignored
        assert_eq!(a.mmio_read(0x30, 4), VERSION as u64);
        a.mmio_write(0x20, 4, 5 << 24); // the ID is read-only
        assert_eq!(a.mmio_read(0x20, 4), 0);
    }

    #[test]
    fn software_disable_masks_lvts() {
        let mut a = apic();
        a.mmio_write(0x320, 4, 0x30);
        assert_eq!(a.mmio_read(0x320, 4), 0x30);
        a.mmio_write(0xF0, 4, 0xFF);
        assert_eq!(a.mmio_read(0x320, 4), 0x30 | LVT_MASKED as u64);
        a.mmio_write(0x320, 4, 0x30);
        assert_eq!(a.mmio_read(0x320, 4) & LVT_MASKED as u64, LVT_MASKED as u64, "cannot unmask while disabled");
        a.accept_fixed(0x40, false);
        assert_eq!(a.highest_irr(), None, "fixed interrupts dropped while software-disabled");
    }

    #[test]
    fn timer_one_shot_and_current_count() {
        let mut a = apic();
        a.mmio_write(0x3E0, 4, 0x3); // divide by 16
        a.mmio_write(0x320, 4, 0x40);
        a.advance(1000);
        a.mmio_write(0x380, 4, 1000); // 16000 TSC ticks
        a.advance(1000 + 8000);
        assert_eq!(a.mmio_read(0x390, 4), 500);
        assert_eq!(a.next_deadline_tsc(), Some(17_000));
        a.advance(16_999);
        assert_eq!(a.highest_irr(), None);
        a.advance(17_000);
        assert_eq!(a.pending_vector(), Some(0x40));
        assert_eq!(a.mmio_read(0x390, 4), 0);
        assert_eq!(a.next_deadline_tsc(), None, "one-shot stops");
    }

    #[test]
    fn timer_periodic_period_and_divider() {
        let mut a = apic();
        a.mmio_write(0x3E0, 4, 0xB); // divide by 1
        a.mmio_write(0x320, 4, 0x2_0000 | 0x41);
        a.mmio_write(0x380, 4, 5000);
        for k in 1..=3u64 {
            assert_eq!(a.next_deadline_tsc(), Some(5000 * k));
            a.advance(5000 * k);
            assert_eq!(a.pending_vector(), Some(0x41));
            a.acknowledge(0x41);
            a.mmio_write(0xB0, 4, 0);
        }
        a.advance(15_000 + 1234);
        assert_eq!(a.mmio_read(0x390, 4), 5000 - 1234);
        // Periodic -> one-shot keeps the count running.
        a.mmio_write(0x320, 4, 0x41);
        assert_eq!(a.mmio_read(0x390, 4), 5000 - 1234);
        a.mmio_write(0x320, 4, 0x2_0000 | 0x41);
        // Masked: counts on, no interrupt.
        a.mmio_write(0x320, 4, 0x3_0000 | 0x41);
        a.advance(30_000);
        assert_eq!(a.highest_irr(), None);
        assert!(a.next_deadline_tsc().is_some());
    }

    #[test]
    fn tsc_deadline_mode() {
        let mut a = apic();
        a.wrmsr(MSR_TSC_DEADLINE, 5000, 0).unwrap();
        assert_eq!(a.rdmsr(MSR_TSC_DEADLINE, 0), Ok(0), "ignored outside deadline mode");
        a.mmio_write(0x320, 4, 0x4_0000 | 0x42);
        assert_eq!(a.timer_mode(), TimerMode::TscDeadline);
        a.mmio_write(0x380, 4, 100); // initial count ignored in this mode
        assert_eq!(a.mmio_read(0x380, 4), 0);
        a.wrmsr(MSR_TSC_DEADLINE, 5000, 10).unwrap();
        assert_eq!(a.next_deadline_tsc(), Some(5000));
        a.advance(4999);
        assert_eq!(a.highest_irr(), None);
        a.advance(5000);
        assert_eq!(a.pending_vector(), Some(0x42));
        assert_eq!(a.rdmsr(MSR_TSC_DEADLINE, 5000), Ok(0), "disarmed after firing");
        // Back to one-shot: the mode change disarms.
        a.wrmsr(MSR_TSC_DEADLINE, 9000, 5000).unwrap();
        a.mmio_write(0x320, 4, 0x42);
        assert_eq!(a.next_deadline_tsc(), None);
    }

    #[test]
    fn apic_base_transitions() {
        let mut a = apic();
        assert_eq!(a.wrmsr(0x808, 0, 0), Err(Gp), "x2APIC MSRs #GP in xAPIC mode");
        assert_eq!(a.wrmsr(MSR_APIC_BASE, 0xFEE0_0000 | BASE_EXTD, 0), Err(Gp), "EN=0 EXTD=1 invalid");
        assert_eq!(a.wrmsr(MSR_APIC_BASE, 0xFEE0_0000 | BASE_EN | BASE_EXTD | 1, 0), Err(Gp), "reserved bit");
        a.wrmsr(MSR_APIC_BASE, 0xFEE0_0000 | BASE_EN | BASE_EXTD, 0).unwrap();
        assert_eq!(a.mode(), ApicMode::X2Apic);
        assert!(!a.xapic_page_contains(0xFEE0_0000), "no MMIO in x2APIC mode");
        assert_eq!(a.rdmsr(0x80F, 0), Ok(0x1FF), "state kept xAPIC -> x2APIC");
        assert_eq!(a.wrmsr(MSR_APIC_BASE, 0xFEE0_0000 | BASE_EN, 0), Err(Gp), "x2APIC -> xAPIC is #GP");
        a.wrmsr(MSR_APIC_BASE, 0xFEE0_0000, 0).unwrap();
        assert_eq!(a.mode(), ApicMode::Disabled);
        assert_eq!(a.wrmsr(MSR_APIC_BASE, 0xFEE0_0000 | BASE_EN | BASE_EXTD, 0), Err(Gp), "disabled -> x2APIC is #GP");
        a.wrmsr(MSR_APIC_BASE, 0xFEE0_0000 | BASE_EN, 0).unwrap();
        assert_eq!(a.mmio_read(0xF0, 4), 0xFF, "back from disabled in the reset state");
        assert_eq!(a.mmio_read(0x350, 4), LVT_MASKED as u64);
        // Relocation moves the page.
        a.wrmsr(MSR_APIC_BASE, 0xFED0_0000 | BASE_EN, 0).unwrap();
        assert!(a.xapic_page_contains(0xFED0_0020) && !a.xapic_page_contains(0xFEE0_0020));
        let mut no_x2 = LocalApic::new(HZ, HZ, false);
        assert_eq!(no_x2.wrmsr(MSR_APIC_BASE, 0xFEE0_0000 | BASE_EN | BASE_EXTD, 0), Err(Gp));
    }

    #[test]
    fn ipis_to_other_cpus_leave_through_take_ipi() {
        let mut a = apic();
        a.set_id(1, false);
        assert_eq!(a.mmio_read(0x20, 4), 1 << 24, "xAPIC ID");
        assert_eq!(a.apic_base() & BASE_BSP, 0, "not the BSP");
        a.mmio_write(0xF0, 4, 0x1FF);
        // Physical destination 0, fixed vector 0x40: another CPU's.
        a.mmio_write(0x310, 4, 0);
        a.mmio_write(0x300, 4, 0x40);
        assert_eq!(a.take_ipi(), Some(Ipi { mode: 0, vector: 0x40, dest: 0, logical: false, deassert: false, shorthand: 0 }));
        assert_eq!(a.highest_irr(), None, "not for this CPU");
        assert_eq!(a.take_ipi(), None, "taken once");
        // To itself by its own ID: stays here.
        a.mmio_write(0x310, 4, 1 << 24);
        a.mmio_write(0x300, 4, 0x41);
        assert_eq!(a.take_ipi(), None);
        assert_eq!(a.highest_irr(), Some(0x41));
        // INIT assert, INIT de-assert (level, trigger level) and SIPI 0x08 to CPU 0.
        a.mmio_write(0x310, 4, 0);
        a.mmio_write(0x300, 4, 0xC500);
        assert_eq!(a.take_ipi().map(|i| (i.mode, i.deassert)), Some((5, false)));
        a.mmio_write(0x300, 4, 0x8500);
        assert_eq!(a.take_ipi().map(|i| (i.mode, i.deassert)), Some((5, true)));
        a.mmio_write(0x300, 4, 0x608);
        assert_eq!(a.take_ipi().map(|i| (i.mode, i.vector)), Some((6, 8)));
        // All excluding self: leaves, not accepted here; all including self: both.
        a.mmio_write(0x300, 4, (3 << 18) | 0x50);
        assert_eq!(a.take_ipi().map(|i| i.shorthand), Some(3));
        assert_eq!(a.highest_irr(), Some(0x41));
        a.mmio_write(0x300, 4, (2 << 18) | 0x60);
        assert_eq!(a.take_ipi().map(|i| i.shorthand), Some(2));
        assert_eq!(a.highest_irr(), Some(0x60));
        // Self shorthand never leaves; an illegal vector is not sent.
        a.mmio_write(0x300, 4, (1 << 18) | 0x70);
        a.mmio_write(0x300, 4, 0x05);
        assert_eq!(a.take_ipi(), None);
        // NMI to another CPU.
        a.mmio_write(0x300, 4, 0x400);
        assert_eq!(a.take_ipi().map(|i| i.mode), Some(4));
        assert!(!a.nmi_pending());
        // INIT received: registers back to power-up, ID kept.
        a.init_received();
        assert_eq!(a.highest_irr(), None);
        assert_eq!(a.mmio_read(0xF0, 4), 0xFF);
        assert_eq!(a.id(), 1);
        // x2APIC: the ID and the derived LDR (11.12.10.2).
        a.wrmsr(MSR_APIC_BASE, 0xFEE0_0000 | BASE_EN | BASE_EXTD, 0).unwrap();
        assert_eq!(a.rdmsr(0x802, 0), Ok(1));
        assert_eq!(a.rdmsr(0x80D, 0), Ok(2));
        assert!(a.matches_destination(1, false) && !a.matches_destination(0, false));
    }

    #[test]
    fn ipi_destinations_between_two_cpus() {
        let ipi = |dest, logical, shorthand| Ipi { mode: 0, vector: 0x40, dest, logical, deassert: false, shorthand };
        assert!(ipi(1, false, 0).reaches(0, 1, false), "physical ID 1");
        assert!(!ipi(1, false, 0).reaches(1, 0, false), "physical ID 1 is not CPU 0");
        assert!(!ipi(0, false, 0).reaches(0, 0, false), "never to the sender itself");
        assert!(ipi(0xFF, false, 0).reaches(0, 1, false), "xAPIC broadcast");
        assert!(!ipi(0xFF, false, 0).reaches(0, 1, true), "0xFF is an ID in x2APIC mode");
        assert!(ipi(u32::MAX, false, 0).reaches(0, 1, true), "x2APIC broadcast");
        assert!(ipi(0b10, true, 0).reaches(0, 1, false) && !ipi(0b01, true, 0).reaches(0, 1, false), "logical flat: bit per ID");
        assert!(ipi(0b10, true, 0).reaches(0, 1, true) && !ipi(0x1_0002, true, 0).reaches(0, 1, true), "x2APIC logical: cluster 0");
        assert!(ipi(0, false, 3).reaches(0, 1, false) && ipi(0, false, 2).reaches(1, 0, false), "all-excluding and all-including self");
        assert!(!ipi(1, false, 1).reaches(0, 1, false), "self shorthand");
    }

    #[test]
    fn x2apic_msr_rules() {
        let mut a = apic();
        a.wrmsr(MSR_APIC_BASE, 0xFEE0_0000 | BASE_EN | BASE_EXTD, 0).unwrap();
        assert_eq!(a.rdmsr(0x802, 0), Ok(0), "x2APIC ID");
        assert_eq!(a.rdmsr(0x80D, 0), Ok(1), "LDR derived from the ID");
        assert_eq!(a.rdmsr(0x80B, 0), Err(Gp), "EOI is write-only");
        assert_eq!(a.rdmsr(0x83F, 0), Err(Gp), "SELF IPI is write-only");
        assert_eq!(a.rdmsr(0x80E, 0), Err(Gp), "no DFR in x2APIC mode");
        assert_eq!(a.rdmsr(0x831, 0), Err(Gp), "no ICR high half in x2APIC mode");
        assert_eq!(a.rdmsr(0x809, 0), Err(Gp), "APR does not exist");
        assert_eq!(a.wrmsr(0x802, 1, 0), Err(Gp), "ID is read-only");
        assert_eq!(a.wrmsr(0x80B, 1, 0), Err(Gp), "EOI must be written with 0");
        assert_eq!(a.wrmsr(0x808, 0x100, 0), Err(Gp), "TPR reserved bits");
        assert_eq!(a.wrmsr(0x80F, 0x3FF, 0), Err(Gp), "no focus checking bit");
        assert_eq!(a.wrmsr(0x832, 1 << 32, 0), Err(Gp), "upper half reserved");
        a.wrmsr(0x835, 0xFFFF_FFFF, 0).unwrap(); // LINT0: reserved bits ignored
        assert_eq!(a.rdmsr(0x835, 0), Ok(0x1_A7FF));
        assert_eq!(a.wrmsr(0x840, 0, 0), Err(Gp));
        a.wrmsr(0x83F, 0x55, 0).unwrap();
        assert_eq!(a.pending_vector(), Some(0x55));
        a.acknowledge(0x55);
        a.wrmsr(0x80B, 0, 0).unwrap();
        assert_eq!(a.highest_isr(), None);
        // 64-bit ICR: destination 0 physical, fixed vector 0x66.
        a.wrmsr(0x830, 0x0000_0000_0000_0066, 0).unwrap();
        assert_eq!(a.pending_vector(), Some(0x66));
        a.wrmsr(0x83F, 0x05, 0).unwrap();
        a.wrmsr(0x828, 0, 0).unwrap();
        assert_eq!(a.rdmsr(0x828, 0), Ok((ESR_SEND_ILLEGAL_VECTOR | ESR_RECV_ILLEGAL_VECTOR) as u64));
        a.wrmsr(0x830, 0x0000_0001_0000_0067, 0).unwrap();
        assert!(!LocalApic::bit(&a.irr, 0x67), "x2APIC ID 1 does not exist");
        assert_eq!(a.rdmsr(0x830, 0), Ok(0x0000_0001_0000_0067));
    }
}
