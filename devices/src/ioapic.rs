//! The IOAPIC at 0xFEC00000 with 24 inputs (GSI 0-23). Intel 82093AA data
//! sheet (registers, redirection table).
//!
//! Modelled: IOREGSEL (0x00) / IOWIN (0x10) indirect access, ID (bits
//! 27:24, writable), version 0x00170011 (the 82093AA's, as Bochs reports;
//! so there is no EOI register and software clears Remote IRR with the LAPIC
//! EOI broadcast or by switching the entry to edge, as Linux does),
//! arbitration ID, 24 redirection entries (vector, delivery mode, logical or
//! physical destination, polarity, trigger, mask; delivery status and
//! remote IRR read-only). Edge entries deliver on an asserting edge seen
//! while unmasked (an edge while masked is lost, as on the chip); level
//! entries deliver while asserted and Remote IRR is clear, Remote IRR is
//! cleared by the LAPIC's EOI broadcast or the EOI register, and a line
//! still asserted then delivers again. Fixed and lowest-priority messages
//! go to the one local APIC if the destination selects it; NMI delivery
//! raises an NMI. Not modelled: ExtINT, SMI and INIT delivery modes (the
//! message is dropped), other CPUs.

use crate::lapic::{ApicMode, LocalApic};

/// Number of redirection entries.
pub const PINS: usize = 24;
const VERSION: u32 = 0x0017_0011;
const RTE_MASKED: u64 = 1 << 16;
const RTE_LEVEL: u64 = 1 << 15;
const RTE_REMOTE_IRR: u64 = 1 << 14;
const RTE_ACTIVE_LOW: u64 = 1 << 13;
/// Bits software may write (delivery status and remote IRR are read-only).
const RTE_WRITABLE: u64 = 0xFF00_0000_0001_AFFF;

/// The IOAPIC.
#[derive(Clone, Debug)]
pub struct IoApic {
    ioregsel: u8,
    id: u8,
    rte: [u64; PINS],
    /// Raw input levels (active-high as the devices drive them).
    lines: u32,
}

impl Default for IoApic {
    fn default() -> Self {
        Self::new()
    }
}

impl IoApic {
    /// Reset state: ID 1 (what the MADT says), every entry masked.
    pub fn new() -> Self {
        IoApic { ioregsel: 0, id: 1, rte: [RTE_MASKED; PINS], lines: 0 }
    }

    /// Redirection entry `pin` (for views).
    pub fn entry(&self, pin: usize) -> u64 {
        self.rte[pin % PINS]
    }

    fn asserted(&self, pin: usize) -> bool {
        let raw = self.lines & (1 << pin) != 0;
        raw != (self.rte[pin] & RTE_ACTIVE_LOW != 0)
    }

    fn deliver(&mut self, pin: usize, lapic: &mut LocalApic) {
        let e = self.rte[pin];
        if e & RTE_MASKED != 0 {
            return;
        }
        let level = e & RTE_LEVEL != 0;
        if level {
            if e & RTE_REMOTE_IRR != 0 {
                return;
            }
            self.rte[pin] |= RTE_REMOTE_IRR;
        }
        let logical = e & (1 << 11) != 0;
        let mut dest = (e >> 56) as u32;
        if dest == 0xFF && lapic.mode() == ApicMode::X2Apic {
            dest = 0xFFFF_FFFF; // an xAPIC-format broadcast
        }
        if !lapic.matches_destination(dest, logical) {
            // Nobody accepts it; Remote IRR would never be cleared.
            self.rte[pin] &= !RTE_REMOTE_IRR;
            return;
        }
        match (e >> 8) & 7 {
            0 | 1 => lapic.accept_fixed(e as u8, level),
            4 => lapic.accept_nmi(),
            _ => {}
        }
    }

    /// Drive input `pin` (GSI) to `level` (the device's active-high level;
    /// the entry's polarity decides whether that is asserted).
    pub fn set_irq(&mut self, pin: u8, level: bool, lapic: &mut LocalApic) {
        let pin = pin as usize;
        if pin >= PINS {
            return;
        }
        let was = self.asserted(pin);
        if level {
            self.lines |= 1 << pin;
        } else {
            self.lines &= !(1 << pin);
        }
        let now = self.asserted(pin);
        let is_level = self.rte[pin] & RTE_LEVEL != 0;
        if now && (is_level || !was) {
            self.deliver(pin, lapic);
        }
    }

    /// EOI of `vector` (LAPIC broadcast or the EOI register): clear Remote
    /// IRR of the level entries with that vector; deliver again if still
    /// asserted.
    pub fn eoi(&mut self, vector: u8, lapic: &mut LocalApic) {
        for pin in 0..PINS {
            let e = self.rte[pin];
            if e & RTE_LEVEL != 0 && e & RTE_REMOTE_IRR != 0 && e as u8 == vector {
                self.rte[pin] &= !RTE_REMOTE_IRR;
                if self.asserted(pin) {
                    self.deliver(pin, lapic);
                }
            }
        }
    }

    fn read_reg(&self, index: u8) -> u32 {
        match index {
            0x00 => (self.id as u32) << 24,
            0x01 => VERSION,
            0x02 => (self.id as u32) << 24,
            0x10..=0x3F => {
                let e = self.rte[((index - 0x10) / 2) as usize];
                if index & 1 == 0 { e as u32 } else { (e >> 32) as u32 }
            }
            _ => 0,
        }
    }

    fn write_reg(&mut self, index: u8, v: u32, lapic: &mut LocalApic) {
        match index {
            0x00 => self.id = ((v >> 24) & 0x0F) as u8,
            0x10..=0x3F => {
                let pin = ((index - 0x10) / 2) as usize;
                let old = self.rte[pin];
                let new = if index & 1 == 0 {
                    (old & !0xFFFF_FFFF) | v as u64
                } else {
                    (old & 0xFFFF_FFFF) | (v as u64) << 32
                };
                self.rte[pin] = (new & RTE_WRITABLE) | (old & RTE_REMOTE_IRR);
                if self.rte[pin] & RTE_LEVEL == 0 {
                    self.rte[pin] &= !RTE_REMOTE_IRR;
                }
                // A level line that is asserted when unmasked delivers.
                if self.rte[pin] & RTE_LEVEL != 0 && self.asserted(pin) {
                    self.deliver(pin, lapic);
                }
            }
            _ => {} // version and arbitration are read-only
        }
    }

    /// MMIO read at `offset` within the page.
    pub fn mmio_read(&mut self, offset: u64, size: u8) -> u64 {
        let v = match offset & 0xFF {
            0x00 => self.ioregsel as u32,
            0x10 => self.read_reg(self.ioregsel),
            _ => 0,
        };
        let v = v as u64;
        match size {
            1 => v & 0xFF,
            2 => v & 0xFFFF,
            _ => v,
        }
    }

    /// MMIO write at `offset` within the page.
    pub fn mmio_write(&mut self, offset: u64, _size: u8, value: u64, lapic: &mut LocalApic) {
        match offset & 0xFF {
            0x00 => self.ioregsel = value as u8,
            0x10 => self.write_reg(self.ioregsel, value as u32, lapic),
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn setup() -> (IoApic, LocalApic) {
        let mut l = LocalApic::new(1_000_000, 1_000_000, true);
        l.mmio_write(0xF0, 4, 0x1FF);
        (IoApic::new(), l)
    }

    fn write_rte(io: &mut IoApic, l: &mut LocalApic, pin: u8, v: u64) {
        io.mmio_write(0, 4, (0x10 + 2 * pin + 1) as u64, l);
        io.mmio_write(0x10, 4, v >> 32, l);
        io.mmio_write(0, 4, (0x10 + 2 * pin) as u64, l);
        io.mmio_write(0x10, 4, v & 0xFFFF_FFFF, l);
    }

    #[test]
    fn id_version_and_reset_masks() {
        let (mut io, mut l) = setup();
        io.mmio_write(0, 4, 1, &mut l);
        assert_eq!(io.mmio_read(0x10, 4), 0x0017_0011);
        io.mmio_write(0, 4, 0, &mut l);
        assert_eq!(io.mmio_read(0x10, 4), 1 << 24);
        io.mmio_write(0, 4, 0x10, &mut l);
        assert_eq!(io.mmio_read(0x10, 4), RTE_MASKED);
        io.set_irq(2, true, &mut l);
        assert_eq!(l.highest_irr(), None, "masked at reset");
    }

    #[test]
    fn edge_routing_of_the_pit() {
        let (mut io, mut l) = setup();
        write_rte(&mut io, &mut l, 2, 0x30); // GSI2 -> vector 0x30, physical dest 0
        io.set_irq(2, true, &mut l);
        io.set_irq(2, false, &mut l);
        assert_eq!(l.pending_vector(), Some(0x30));
        l.acknowledge(0x30);
        io.set_irq(2, true, &mut l);
        assert_eq!(l.highest_irr(), Some(0x30), "next edge while in service goes to IRR");
        // Destination 1 does not exist: nothing delivered.
        let (mut io, mut l) = setup();
        write_rte(&mut io, &mut l, 2, 0x30 | 1 << 56);
        io.set_irq(2, true, &mut l);
        assert_eq!(l.highest_irr(), None);
    }

    #[test]
    fn level_remote_irr_and_eoi() {
        let (mut io, mut l) = setup();
        write_rte(&mut io, &mut l, 9, 0x49 | RTE_LEVEL);
        io.set_irq(9, true, &mut l);
        assert_eq!(l.pending_vector(), Some(0x49));
        io.mmio_write(0, 4, 0x10 + 18, &mut l);
        assert_ne!(io.mmio_read(0x10, 4) & RTE_REMOTE_IRR, 0);
        l.acknowledge(0x49);
        // The LAPIC EOI of a level vector comes back to the IOAPIC.
        assert_eq!(l.mmio_write(0xB0, 4, 0), Some(0x49));
        io.eoi(0x49, &mut l);
        assert_eq!(l.pending_vector(), Some(0x49), "still asserted: delivered again");
        l.acknowledge(0x49);
        io.set_irq(9, false, &mut l);
        l.mmio_write(0xB0, 4, 0);
        assert_eq!(l.highest_irr(), None);
        io.mmio_write(0, 4, 0x10 + 18, &mut l);
        assert_ne!(io.mmio_read(0x10, 4) & RTE_REMOTE_IRR, 0, "no broadcast reached it");
        // Linux's EOI for an IOAPIC without EOI register: edge, then level.
        io.mmio_write(0x10, 4, 0x49, &mut l);
        io.mmio_write(0x10, 4, 0x49 | RTE_LEVEL, &mut l);
        assert_eq!(io.mmio_read(0x10, 4) & RTE_REMOTE_IRR, 0);
    }

    #[test]
    fn polarity_logical_and_nmi() {
        let (mut io, mut l) = setup();
        // Active-low edge: the device driving low asserts it.
        write_rte(&mut io, &mut l, 5, 0x55 | RTE_ACTIVE_LOW);
        io.set_irq(5, true, &mut l);
        assert_eq!(l.highest_irr(), None);
        io.set_irq(5, false, &mut l);
        assert_eq!(l.highest_irr(), Some(0x55));
        // Logical flat destination: LDR bit 0.
        l.mmio_write(0xD0, 4, 1 << 24);
        write_rte(&mut io, &mut l, 4, 0x44 | 1 << 11 | 1 << 56);
        io.set_irq(4, true, &mut l);
        assert!(l.highest_irr() == Some(0x55) && LocalApicIrr::has(&l, 0x44));
        write_rte(&mut io, &mut l, 7, 4 << 8);
        io.set_irq(7, true, &mut l);
        assert!(l.nmi_pending());
    }

    struct LocalApicIrr;
    impl LocalApicIrr {
        fn has(l: &LocalApic, v: u8) -> bool {
            let mut l = l.clone();
            l.mmio_write(0x80, 4, 0);
            l.mmio_read(0x200 + ((v as u64 >> 5) << 4), 4) & (1 << (v & 31)) != 0
        }
    }
}
