//! The 16550A UART at COM1 (0x3F8-0x3FF, IRQ4). National Semiconductor
//! PC16550D data sheet, table II (registers) and table IV (interrupt
//! control).
//!
//! Modelled: RBR/THR, IER, IIR with its priorities (line status, received
//! data / character timeout, THRE, modem status) and FIFO bits, FCR (FIFO
//! enable, clears, RX trigger level), LCR with DLAB and the divisor latch,
//! MCR with loopback (TX comes back as RX; MSR mirrors DTR/RTS/OUT1/OUT2),
//! LSR (data ready, overrun, THRE/TEMT), MSR with delta bits, SCR. The line
//! has no speed: a byte written to THR leaves at once into a queue the glue
//! drains with [`Uart16550::take_tx`], so THR is always empty again and the
//! THRE interrupt re-arms after every byte. Received bytes come from
//! [`Uart16550::receive`] into a 16-byte FIFO (1 byte with FIFOs off); a byte
//! arriving when it is full is lost and sets LSR.OE, as on the chip. IRQ4 is
//! the chip's INTRPT gated by MCR.OUT2, as the PC wires it. A character
//! timeout (IIR 0x0C) is reported at once when fewer bytes than the trigger
//! level wait. Not modelled: parity/framing errors, break, baud timing.

use alloc::collections::VecDeque;

const IER_RDA: u8 = 0x01;
const IER_THRE: u8 = 0x02;
const IER_RLS: u8 = 0x04;
const IER_MS: u8 = 0x08;
const LCR_DLAB: u8 = 0x80;
const MCR_OUT2: u8 = 0x08;
const MCR_LOOP: u8 = 0x10;
const LSR_DR: u8 = 0x01;
const LSR_OE: u8 = 0x02;
const LSR_THRE_TEMT: u8 = 0x60;
/// Bytes of transmitted data kept until the glue drains them.
const TX_QUEUE: usize = 4096;

/// One 16550A.
#[derive(Clone, Debug, Default)]
pub struct Uart16550 {
    ier: u8,
    lcr: u8,
    mcr: u8,
    scr: u8,
    fifo_enabled: bool,
    rx_trigger: usize,
    dll: u8,
    dlm: u8,
    rx: VecDeque<u8>,
    /// LSR error bits (OE) until LSR is read.
    lsr_errors: u8,
    /// THRE interrupt pending (cleared by reading IIR with it as the source
    /// or by writing THR).
    thre_pending: bool,
    /// MSR delta bits (low nibble) until MSR is read.
    msr_delta: u8,
    tx: VecDeque<u8>,
}

impl Uart16550 {
    /// Power-on state (PC16550D "reset" column of table III).
    pub fn new() -> Self {
        Uart16550 { rx_trigger: 1, ..Default::default() }
    }

    /// Bytes the L1 transmitted, oldest first (the glue drains them).
    pub fn take_tx(&mut self) -> Option<u8> {
        self.tx.pop_front()
    }

    fn rx_capacity(&self) -> usize {
        if self.fifo_enabled { 16 } else { 1 }
    }

    /// Room left in the receive FIFO (feed no more than this to avoid
    /// overruns).
    pub fn rx_space(&self) -> usize {
        self.rx_capacity().saturating_sub(self.rx.len())
    }

    /// A byte arrives on the line; false if it was lost (overrun). Ignored
    /// in loopback mode, where the line is disconnected.
    pub fn receive(&mut self, byte: u8) -> bool {
        if self.mcr & MCR_LOOP != 0 {
            return false;
        }
        self.rx_push(byte)
    }

    fn rx_push(&mut self, byte: u8) -> bool {
        if self.rx.len() >= self.rx_capacity() {
            self.lsr_errors |= LSR_OE;
            return false;
        }
        self.rx.push_back(byte);
        true
    }

    /// The interrupt identification (IIR bits 3:0) of the highest-priority
    /// pending, enabled interrupt; 0x01 if none.
    fn interrupt_id(&self) -> u8 {
        if self.ier & IER_RLS != 0 && self.lsr_errors != 0 {
            0x06
        } else if self.ier & IER_RDA != 0 && !self.rx.is_empty() {
            if self.fifo_enabled && self.rx.len() < self.rx_trigger { 0x0C } else { 0x04 }
        } else if self.ier & IER_THRE != 0 && self.thre_pending {
            0x02
        } else if self.ier & IER_MS != 0 && self.msr_delta != 0 {
            0x00
        } else {
            0x01
        }
    }

    /// The IRQ4 level as a PC wires it: INTRPT gated by MCR.OUT2 (which
    /// loopback disconnects from the pin).
    /// A read of LSR changes nothing now: no error bit for it to clear
    /// (and so no receiver-line-status interrupt to end).
    pub fn lsr_read_is_pure(&self) -> bool {
        self.lsr_errors == 0
    }

    pub fn irq_line(&self) -> bool {
        self.mcr & MCR_OUT2 != 0 && self.mcr & MCR_LOOP == 0 && self.interrupt_id() != 0x01
    }

    fn msr_status(&self) -> u8 {
        if self.mcr & MCR_LOOP != 0 {
            // Loopback: CTS = RTS, DSR = DTR, RI = OUT1, DCD = OUT2.
            let m = self.mcr;
            ((m & 0x02) << 3) | ((m & 0x01) << 5) | ((m & 0x04) << 4) | ((m & 0x08) << 4)
        } else {
            // A connected terminal: CTS, DSR, DCD asserted.
            0xB0
        }
    }

    /// `IN` from register `offset` (0-7).
    pub fn read(&mut self, offset: u16) -> u8 {
        let dlab = self.lcr & LCR_DLAB != 0;
        match offset {
            0 if dlab => self.dll,
            0 => self.rx.pop_front().unwrap_or(0),
            1 if dlab => self.dlm,
            1 => self.ier,
            2 => {
                let id = self.interrupt_id();
                if id == 0x02 {
                    self.thre_pending = false;
                }
                id | if self.fifo_enabled { 0xC0 } else { 0 }
            }
            3 => self.lcr,
            4 => self.mcr,
            5 => {
                let v = LSR_THRE_TEMT | self.lsr_errors | if self.rx.is_empty() { 0 } else { LSR_DR };
                self.lsr_errors = 0;
                v
            }
            6 => {
                let v = self.msr_status() | self.msr_delta;
                self.msr_delta = 0;
                v
            }
            7 => self.scr,
            _ => 0xFF,
        }
    }

    /// `OUT` to register `offset` (0-7).
    pub fn write(&mut self, offset: u16, v: u8) {
        let dlab = self.lcr & LCR_DLAB != 0;
        match offset {
            0 if dlab => self.dll = v,
            0 => {
                if self.mcr & MCR_LOOP != 0 {
                    self.rx_push(v);
                } else {
                    if self.tx.len() >= TX_QUEUE {
                        self.tx.pop_front();
                    }
                    self.tx.push_back(v);
                }
                // The byte leaves at once: THR is empty again.
                self.thre_pending = true;
            }
            1 if dlab => self.dlm = v,
            1 => {
                // Enabling the THRE interrupt while THR is empty raises it
                // at once (the 16550 behaviour Linux's startup checks).
                if v & IER_THRE != 0 && self.ier & IER_THRE == 0 {
                    self.thre_pending = true;
                }
                self.ier = v & 0x0F;
            }
            2 => {
                let enable = v & 0x01 != 0;
                if enable != self.fifo_enabled || v & 0x02 != 0 {
                    self.rx.clear();
                }
                self.fifo_enabled = enable;
                self.rx_trigger = [1, 4, 8, 14][(v >> 6) as usize];
            }
            3 => self.lcr = v,
            4 => {
                let before = self.msr_status();
                self.mcr = v & 0x1F;
                let after = self.msr_status();
                // Delta bits: DCTS, DDSR, TERI (trailing edge of RI), DDCD.
                let changed = before ^ after;
                let mut delta = 0;
                if changed & 0x10 != 0 {
                    delta |= 0x01;
                }
                if changed & 0x20 != 0 {
                    delta |= 0x02;
                }
                if before & 0x40 != 0 && after & 0x40 == 0 {
                    delta |= 0x04;
                }
                if changed & 0x80 != 0 {
                    delta |= 0x08;
                }
                self.msr_delta |= delta;
            }
            7 => self.scr = v,
            _ => {} // LSR and MSR are read-only (factory test writes ignored)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transmit_and_thre_interrupt() {
        let mut u = Uart16550::new();
        u.write(4, MCR_OUT2 | 0x03);
        assert!(!u.irq_line());
        u.write(1, IER_THRE);
        assert!(u.irq_line(), "enabling ETBEI with THR empty interrupts at once");
        assert_eq!(u.read(2), 0x02);
        assert!(!u.irq_line(), "reading IIR with THRE as source clears it");
        assert_eq!(u.read(2), 0x01);
        u.write(0, b'A');
        assert_eq!(u.take_tx(), Some(b'A'));
        assert!(u.irq_line(), "THR empty again after the byte left");
        u.write(4, 0x03); // OUT2 off: the PC's IRQ gate closes
        assert!(!u.irq_line());
        assert_eq!(u.read(5) & LSR_THRE_TEMT, LSR_THRE_TEMT);
    }

    #[test]
    fn receive_fifo_trigger_timeout_and_overrun() {
        let mut u = Uart16550::new();
        u.write(2, 0xC7); // FIFO on, clear both, trigger 14
        u.write(4, MCR_OUT2);
        u.write(1, IER_RDA | IER_RLS);
        assert!(!u.irq_line());
        assert!(u.receive(b'x'));
        assert_eq!(u.read(2), 0xCC, "below trigger: character timeout, FIFO bits set");
        for i in 0..13 {
            assert!(u.receive(i));
        }
        assert_eq!(u.read(2), 0xC4, "at trigger level: received data available");
        assert_eq!(u.rx_space(), 2);
        assert!(u.receive(1) && u.receive(2));
        assert!(!u.receive(3), "17th byte overruns");
        assert_eq!(u.read(2), 0xC6, "line status has the highest priority");
        assert_eq!(u.read(5), LSR_THRE_TEMT | LSR_OE | LSR_DR);
        assert_eq!(u.read(5) & LSR_OE, 0, "reading LSR clears OE");
        assert_eq!(u.read(0), b'x');
        for _ in 0..15 {
            u.read(0);
        }
        assert_eq!(u.read(5) & LSR_DR, 0);
        assert!(!u.irq_line());
    }

    #[test]
    fn loopback_as_linux_autoconfig_checks_it() {
        let mut u = Uart16550::new();
        // serial8250 autoconfig: MCR = LOOP | OUT2 | RTS, expect MSR & 0xF0 == 0x90.
        u.write(4, MCR_LOOP | 0x0A);
        assert_eq!(u.read(6) & 0xF0, 0x90);
        u.write(0, 0x55);
        assert_eq!(u.take_tx(), None, "loopback keeps TX off the line");
        assert_eq!(u.read(5) & LSR_DR, LSR_DR);
        assert_eq!(u.read(0), 0x55);
        assert!(!u.receive(1), "the line is disconnected in loopback");
    }

    #[test]
    fn divisor_latch_and_scratch() {
        let mut u = Uart16550::new();
        u.write(3, 0x83);
        u.write(0, 0x01);
        u.write(1, 0x00);
        u.write(3, 0x03);
        assert_eq!(u.read(1), 0, "IER untouched by the divisor writes");
        u.write(3, 0x83);
        assert_eq!((u.read(0), u.read(1)), (1, 0));
        u.write(7, 0x5A);
        assert_eq!(u.read(7), 0x5A);
    }

    #[test]
    fn modem_status_delta_interrupt() {
        let mut u = Uart16550::new();
        u.write(4, MCR_LOOP);
        u.read(6); // entering loopback dropped CTS/DSR/DCD: clear those deltas
        u.write(1, IER_MS);
        u.write(4, MCR_LOOP | 0x01); // DTR -> DSR changes
        assert_eq!(u.read(2) & 0x0F, 0x00, "modem status interrupt");
        assert_eq!(u.read(6), 0x20 | 0x02);
        assert_eq!(u.read(2) & 0x0F, 0x01);
    }
}
