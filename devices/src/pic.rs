//! The cascaded 8259A pair of a PC: master at 0x20/0x21 (IRQ 0-7), slave at
//! 0xA0/0xA1 (IRQ 8-15) on the master's IR2, and the PIIX/ICH edge/level
//! control registers (ELCR) at 0x4D0/0x4D1.
//!
//! Modelled (Intel 8259A data sheet, "Programming the 8259A"): ICW1-ICW4
//! initialisation (vector base, single/cascade, AEOI), OCW1 masks, OCW2
//! non-specific/specific EOI and the rotation commands, OCW3 IRR/ISR read
//! select, poll command and special mask mode; fully nested priority with
//! rotation; the INTA cycle including the cascade and spurious IRQ 7/15.
//! Edge lines latch on a rising edge, level lines (ELCR) follow the input.
//! Not modelled: 8080/8085 call mode (ICW4 uPM=0 acts as 8086 mode), buffered
//! mode, special fully nested mode (accepted and ignored), LTIM of ICW1 (the
//! PC chipsets ignore it too: the ELCR decides).

/// One 8259A.
#[derive(Clone, Debug)]
pub struct Pic {
    irr: u8,
    isr: u8,
    imr: u8,
    /// Input line levels last seen (for edge detection).
    lines: u8,
    elcr: u8,
    elcr_mask: u8,
    vector_base: u8,
    /// Next initialisation word expected: 0 = none (operational), 2, 3, 4.
    icw_step: u8,
    icw4_needed: bool,
    single: bool,
    auto_eoi: bool,
    rotate_on_aeoi: bool,
    read_isr: bool,
    poll: bool,
    special_mask: bool,
    /// The IR with the highest priority (rotation moves it).
    priority_base: u8,
}

impl Pic {
    fn new(is_master: bool) -> Self {
        Pic {
            irr: 0,
            isr: 0,
            imr: 0,
            lines: 0,
            elcr: 0,
            // IRQ 0, 1, 2 (master) and 8, 13 (slave) are always edge-triggered.
            elcr_mask: if is_master { 0xF8 } else { 0xDE },
            vector_base: if is_master { 0x08 } else { 0x70 },
            icw_step: 0,
            icw4_needed: false,
            single: false,
            auto_eoi: false,
            rotate_on_aeoi: false,
            read_isr: false,
            poll: false,
            special_mask: false,
            priority_base: 0,
        }
    }

    /// Highest-priority set bit of `bits` as an IR number, honouring rotation.
    fn highest(&self, bits: u8) -> Option<u8> {
        (0..8).map(|i| (self.priority_base + i) & 7).find(|&ir| bits & (1 << ir) != 0)
    }

    /// Priority rank (0 = highest) of IR `ir`.
    fn rank(&self, ir: u8) -> u8 {
        ir.wrapping_sub(self.priority_base) & 7
    }

    /// The IR this chip would present on INT, if any (requests not blocked by
    /// an in-service IR of equal or higher priority).
    pub fn pending(&self) -> Option<u8> {
        let ir = self.highest(self.irr & !self.imr)?;
        // In special mask mode, masked in-service IRs do not block others.
        let in_service = if self.special_mask { self.isr & !self.imr } else { self.isr };
        match self.highest(in_service) {
            Some(s) if self.rank(s) <= self.rank(ir) => None,
            _ => Some(ir),
        }
    }

    fn set_line(&mut self, ir: u8, level: bool) {
        let bit = 1u8 << ir;
        if self.elcr & bit != 0 {
            if level {
                self.irr |= bit;
            } else {
                self.irr &= !bit;
            }
        } else if level && self.lines & bit == 0 {
            self.irr |= bit;
        }
        if level {
            self.lines |= bit;
        } else {
            self.lines &= !bit;
        }
    }

    /// INTA for IR `ir`: IRR to ISR (unless AEOI).
    fn ack(&mut self, ir: u8) {
        let bit = 1u8 << ir;
        if self.elcr & bit == 0 {
            self.irr &= !bit;
        }
        if self.auto_eoi {
            if self.rotate_on_aeoi {
                self.priority_base = (ir + 1) & 7;
            }
        } else {
            self.isr |= bit;
        }
    }

    fn eoi(&mut self, ir: u8, rotate: bool) {
        self.isr &= !(1 << ir);
        if rotate {
            self.priority_base = (ir + 1) & 7;
        }
    }

    fn write_command(&mut self, v: u8) {
        if v & 0x10 != 0 {
            // ICW1: "the edge sense circuit is reset", IMR cleared, IR7
            // lowest priority, special mask mode cleared, IRR selected.
            self.icw4_needed = v & 1 != 0;
            self.single = v & 2 != 0;
            self.imr = 0;
            self.isr = 0;
            self.irr = self.lines & self.elcr;
            self.lines &= self.elcr;
            self.priority_base = 0;
            self.special_mask = false;
            self.read_isr = false;
            self.poll = false;
            self.auto_eoi = false;
            self.rotate_on_aeoi = false;
            self.icw_step = 2;
        } else if v & 0x08 != 0 {
            // OCW3.
            if v & 0x02 != 0 {
                self.read_isr = v & 0x01 != 0;
            }
            self.poll = v & 0x04 != 0;
            if v & 0x40 != 0 {
                self.special_mask = v & 0x20 != 0;
            }
        } else {
            // OCW2: R SL EOI in bits 7:5, level in 2:0.
            let level = v & 7;
            match v >> 5 {
                0b001 => {
                    if let Some(ir) = self.highest(self.isr) {
                        self.eoi(ir, false)
                    }
                }
                0b101 => {
                    if let Some(ir) = self.highest(self.isr) {
                        self.eoi(ir, true)
                    }
                }
                0b011 => self.eoi(level, false),
                0b111 => self.eoi(level, true),
                0b100 => self.rotate_on_aeoi = true,
                0b000 => self.rotate_on_aeoi = false,
                0b110 => self.priority_base = (level + 1) & 7,
                _ => {} // 010: no operation
            }
        }
    }

    fn write_data(&mut self, v: u8) {
        match self.icw_step {
            2 => {
                self.vector_base = v & 0xF8;
                self.icw_step = if self.single {
                    if self.icw4_needed { 4 } else { 0 }
                } else {
                    3
                };
            }
            3 => self.icw_step = if self.icw4_needed { 4 } else { 0 },
            4 => {
                self.auto_eoi = v & 0x02 != 0;
                self.icw_step = 0;
            }
            _ => self.imr = v,
        }
    }

    fn read(&mut self, data_port: bool) -> u8 {
        if self.poll {
            self.poll = false;
            return match self.pending() {
                Some(ir) => {
                    self.ack(ir);
                    0x80 | ir
                }
                None => 0,
            };
        }
        if data_port {
            self.imr
        } else if self.read_isr {
            self.isr
        } else {
            self.irr
        }
    }

    /// Interrupt mask register (OCW1).
    pub fn imr(&self) -> u8 {
        self.imr
    }
    /// Interrupt request register.
    pub fn irr(&self) -> u8 {
        self.irr
    }
    /// In-service register.
    pub fn isr(&self) -> u8 {
        self.isr
    }
    /// Vector of IR0 (ICW2).
    pub fn vector_base(&self) -> u8 {
        self.vector_base
    }
}

/// The master/slave pair with its ELCR, as the PC wires it.
#[derive(Clone, Debug)]
pub struct PicPair {
    /// IRQ 0-7.
    pub master: Pic,
    /// IRQ 8-15, cascaded on the master's IR2.
    pub slave: Pic,
}

impl Default for PicPair {
    fn default() -> Self {
        Self::new()
    }
}

impl PicPair {
    /// Power-on state (vector bases 0x08 and 0x70 as a BIOS leaves them).
    pub fn new() -> Self {
        PicPair { master: Pic::new(true), slave: Pic::new(false) }
    }

    /// Drive ISA IRQ line `irq` (0-15) to `level`.
    pub fn set_irq(&mut self, irq: u8, level: bool) {
        match irq {
            0..=7 => self.master.set_line(irq, level),
            8..=15 => self.slave.set_line(irq - 8, level),
            _ => return,
        }
        self.update_cascade();
    }

    /// The slave's INT output drives the master's IR2. It is treated as a
    /// level input, so a slave request that goes away (a level line dropped)
    /// withdraws the cascade request instead of leaving a spurious IRQ 15.
    fn update_cascade(&mut self) {
        if self.slave.pending().is_some() {
            self.master.irr |= 1 << 2;
        } else {
            self.master.irr &= !(1 << 2);
        }
    }

    /// Whether the master's INT output is asserted.
    pub fn int_output(&self) -> bool {
        self.master.pending().is_some()
    }

    /// The vector the next INTA cycle would return, without performing it.
    pub fn pending_vector(&self) -> Option<u8> {
        let ir = self.master.pending()?;
        if ir == 2 && !self.master.single {
            let sir = self.slave.pending().unwrap_or(7);
            return Some(self.slave.vector_base | sir);
        }
        Some(self.master.vector_base | ir)
    }

    /// The INTA cycle: returns the vector and moves IRR to ISR. With nothing
    /// pending the 8259A answers IR7 of the chip asked (a spurious interrupt,
    /// ISR untouched).
    pub fn inta(&mut self) -> u8 {
        let vector = match self.master.pending() {
            None => self.master.vector_base | 7,
            Some(2) if !self.master.single => {
                self.master.ack(2);
                match self.slave.pending() {
                    Some(sir) => {
                        self.slave.ack(sir);
                        self.slave.vector_base | sir
                    }
                    None => self.slave.vector_base | 7,
                }
            }
            Some(ir) => {
                self.master.ack(ir);
                self.master.vector_base | ir
            }
        };
        self.update_cascade();
        vector
    }

    /// Whether this pair claims I/O port `port`.
    pub fn claims(port: u16) -> bool {
        matches!(port, 0x20 | 0x21 | 0xA0 | 0xA1 | 0x4D0 | 0x4D1)
    }

    /// An `IN` of one byte.
    pub fn read(&mut self, port: u16) -> u8 {
        let v = match port {
            0x20 | 0x21 => self.master.read(port & 1 != 0),
            0xA0 | 0xA1 => self.slave.read(port & 1 != 0),
            0x4D0 => self.master.elcr,
            0x4D1 => self.slave.elcr,
            _ => 0xFF,
        };
        self.update_cascade();
        v
    }

    /// An `OUT` of one byte.
    pub fn write(&mut self, port: u16, v: u8) {
        match port {
            0x20 => self.master.write_command(v),
            0x21 => self.master.write_data(v),
            0xA0 => self.slave.write_command(v),
            0xA1 => self.slave.write_data(v),
            0x4D0 => self.master.elcr = v & self.master.elcr_mask,
            0x4D1 => self.slave.elcr = v & self.slave.elcr_mask,
            _ => {}
        }
        self.update_cascade();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The init sequence Linux's `init_8259A` and every BIOS use.
    fn init(p: &mut PicPair, master_base: u8, slave_base: u8) {
        p.write(0x20, 0x11); // ICW1: edge, cascade, ICW4 needed
        p.write(0x21, master_base); // ICW2
        p.write(0x21, 0x04); // ICW3: slave on IR2
        p.write(0x21, 0x01); // ICW4: 8086 mode, normal EOI
        p.write(0xA0, 0x11);
        p.write(0xA1, slave_base);
        p.write(0xA1, 0x02); // ICW3: slave id 2
        p.write(0xA1, 0x01);
    }

    #[test]
    fn init_mask_and_deliver_with_eoi() {
        let mut p = PicPair::new();
        init(&mut p, 0x20, 0x28);
        p.write(0x21, 0xFE); // only IRQ0
        p.write(0xA1, 0xFF);
        assert_eq!(p.read(0x21), 0xFE);
        p.set_irq(1, true);
        assert_eq!(p.pending_vector(), None, "masked IRQ1 must not interrupt");
        p.set_irq(0, true);
        assert_eq!(p.pending_vector(), Some(0x20));
        assert_eq!(p.inta(), 0x20);
        assert_eq!(p.pending_vector(), None);
        p.write(0x20, 0x0B); // OCW3: read ISR
        assert_eq!(p.read(0x20), 0x01);
        // Edge: another tick while in service stays latched in IRR.
        p.set_irq(0, false);
        p.set_irq(0, true);
        assert_eq!(p.pending_vector(), None, "IR0 in service blocks IR0");
        p.write(0x20, 0x20); // non-specific EOI
        assert_eq!(p.read(0x20), 0x00);
        assert_eq!(p.inta(), 0x20);
    }

    #[test]
    fn priority_nesting_and_specific_eoi() {
        let mut p = PicPair::new();
        init(&mut p, 0x20, 0x28);
        p.set_irq(4, true);
        assert_eq!(p.inta(), 0x24);
        p.set_irq(3, true);
        assert_eq!(p.pending_vector(), Some(0x23), "higher priority IR3 nests over IR4");
        assert_eq!(p.inta(), 0x23);
        p.set_irq(5, true);
        assert_eq!(p.pending_vector(), None);
        p.write(0x20, 0x60 | 4); // specific EOI for IR4 leaves IR3 in service
        p.write(0x20, 0x0B);
        assert_eq!(p.read(0x20), 0x08);
        assert_eq!(p.pending_vector(), None, "IR3 in service still blocks IR5");
        p.write(0x20, 0x20);
        assert_eq!(p.inta(), 0x25);
    }

    #[test]
    fn cascade_through_slave() {
        let mut p = PicPair::new();
        init(&mut p, 0x08, 0x70);
        p.set_irq(8, true); // RTC
        assert_eq!(p.pending_vector(), Some(0x70));
        assert_eq!(p.inta(), 0x70);
        p.write(0xA0, 0x0B);
        p.write(0x20, 0x0B);
        assert_eq!(p.read(0xA0), 0x01);
        assert_eq!(p.read(0x20), 0x04, "master has the cascade IR2 in service");
        // Slave masked: nothing reaches the master.
        p.write(0xA1, 0x02);
        p.set_irq(9, true);
        assert_eq!(p.pending_vector(), None);
    }

    #[test]
    fn level_lines_follow_input_and_elcr_mask() {
        let mut p = PicPair::new();
        init(&mut p, 0x20, 0x28);
        p.write(0x4D0, 0xFF);
        assert_eq!(p.read(0x4D0), 0xF8, "IRQ0-2 cannot be level-triggered");
        p.write(0x4D1, 0x02); // IRQ9 level (SCI)
        p.set_irq(9, true);
        assert_eq!(p.inta(), 0x29);
        p.write(0xA0, 0x20);
        p.write(0x20, 0x20);
        assert_eq!(p.pending_vector(), Some(0x29), "still-asserted level line requests again");
        p.set_irq(9, false);
        assert_eq!(p.pending_vector(), None);
    }

    #[test]
    fn spurious_and_poll() {
        let mut p = PicPair::new();
        init(&mut p, 0x20, 0x28);
        assert_eq!(p.inta(), 0x27, "INTA with nothing pending is IR7");
        p.write(0x20, 0x0B);
        assert_eq!(p.read(0x20), 0, "spurious IR7 is not put in service");
        p.set_irq(6, true);
        p.write(0x20, 0x0C); // OCW3 poll
        assert_eq!(p.read(0x20), 0x86);
        p.write(0x20, 0x0C);
        assert_eq!(p.read(0x20), 0x00);
    }

    #[test]
    fn auto_eoi_and_rotation() {
        let mut p = PicPair::new();
        p.write(0x20, 0x13); // single, ICW4
        p.write(0x21, 0x40);
        p.write(0x21, 0x03); // AEOI
        p.set_irq(3, true);
        assert_eq!(p.inta(), 0x43);
        p.write(0x20, 0x0B);
        assert_eq!(p.read(0x20), 0, "AEOI leaves ISR clear");
        // Set priority: IR3 lowest, so IR4 is now highest.
        p.write(0x20, 0xC3);
        p.set_irq(1, true);
        p.set_irq(4, true);
        assert_eq!(p.inta(), 0x44);
    }
}
