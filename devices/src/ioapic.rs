//! 82093AA-style IOAPIC at 0xFEC00000. (Stub in this commit.)

use crate::lapic::LocalApic;

/// The IOAPIC.
#[derive(Clone, Debug)]
pub struct IoApic {
    ioregsel: u8,
}

impl Default for IoApic {
    fn default() -> Self {
        Self::new()
    }
}

impl IoApic {
    /// Reset state: every pin masked.
    pub fn new() -> Self {
        IoApic { ioregsel: 0 }
    }
    /// Drive input pin `pin` (GSI) to `level` (before polarity inversion).
    pub fn set_irq(&mut self, _pin: u8, _level: bool, _lapic: &mut LocalApic) {}
    /// EOI of `vector` from the LAPIC broadcast or the EOI register.
    pub fn eoi(&mut self, _vector: u8, _lapic: &mut LocalApic) {}
    /// MMIO read at `offset` within the page.
    pub fn mmio_read(&mut self, offset: u64, _size: u8) -> u64 {
        if offset == 0 { self.ioregsel as u64 } else { 0 }
    }
    /// MMIO write at `offset` within the page.
    pub fn mmio_write(&mut self, offset: u64, _size: u8, value: u64, _lapic: &mut LocalApic) {
        if offset == 0 {
            self.ioregsel = value as u8;
        }
    }
}
