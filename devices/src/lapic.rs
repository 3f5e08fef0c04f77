//! Local APIC: xAPIC and x2APIC, IA32_APIC_BASE, timer. (Stub in this commit.)

use crate::Gp;

/// The local APIC of the L1's one CPU.
#[derive(Clone, Debug)]
pub struct LocalApic {
    apic_base: u64,
    tpr: u8,
    nmi: bool,
}

impl LocalApic {
    /// Reset state with a BIOS' virtual wire: enabled in xAPIC mode at
    /// 0xFEE00000, software-disabled (SVR 0xFF), LINT0 ExtINT, LINT1 NMI.
    pub fn new(_tsc_hz: u64, _timer_hz: u64, _x2apic_allowed: bool) -> Self {
        LocalApic { apic_base: crate::LAPIC_BASE | 0x900, tpr: 0, nmi: false }
    }
    /// Whether IA32_APIC_BASE.EN is set.
    pub fn hw_enabled(&self) -> bool {
        self.apic_base & 0x800 != 0
    }
    /// Whether LINT0 passes the 8259A's INT (unmasked ExtINT).
    pub fn lint0_extint(&self) -> bool {
        true
    }
    /// Highest IRR vector above the processor priority.
    pub fn pending_vector(&self) -> Option<u8> {
        None
    }
    /// INTA: IRR to ISR.
    pub fn acknowledge(&mut self, _vector: u8) {}
    /// Accept a fixed interrupt from the IOAPIC/ICR/LVT (edge or level).
    pub fn accept_fixed(&mut self, _vector: u8, _level: bool) {}
    /// Accept an NMI.
    pub fn accept_nmi(&mut self) {
        self.nmi = true
    }
    /// An NMI waits.
    pub fn nmi_pending(&self) -> bool {
        self.nmi
    }
    /// The NMI was injected.
    pub fn acknowledge_nmi(&mut self) {
        self.nmi = false
    }
    /// Bring time to `tsc`: an expired timer sets its vector in IRR.
    pub fn advance(&mut self, _tsc: u64) {}
    /// TSC of the next timer expiry.
    pub fn next_deadline_tsc(&self) -> Option<u64> {
        None
    }
    /// TPR.
    pub fn tpr(&self) -> u8 {
        self.tpr
    }
    /// Set TPR.
    pub fn set_tpr(&mut self, v: u8) {
        self.tpr = v
    }
    /// Whether `gpa` is in the xAPIC page (xAPIC mode only).
    pub fn xapic_page_contains(&self, gpa: u64) -> bool {
        self.apic_base & 0xC00 == 0x800 && gpa & !0xFFF == self.apic_base & !0xFFF
    }
    /// MMIO read at `offset` within the page.
    pub fn mmio_read(&mut self, _offset: u64, _size: u8) -> u64 {
        0
    }
    /// MMIO write; returns the vector whose EOI was level-triggered.
    pub fn mmio_write(&mut self, _offset: u64, _size: u8, _value: u64) -> Option<u8> {
        None
    }
    /// MSRs handled here.
    pub fn claims_msr(msr: u32) -> bool {
        msr == 0x1B || msr == 0x6E0 || (0x800..=0x8FF).contains(&msr)
    }
    /// RDMSR.
    pub fn rdmsr(&mut self, msr: u32, _tsc: u64) -> Result<u64, Gp> {
        match msr {
            0x1B => Ok(self.apic_base),
            _ => Err(Gp),
        }
    }
    /// WRMSR; Ok(Some(vector)) when an x2APIC EOI was level-triggered.
    pub fn wrmsr(&mut self, _msr: u32, _value: u64, _tsc: u64) -> Result<Option<u8>, Gp> {
        Err(Gp)
    }
}
