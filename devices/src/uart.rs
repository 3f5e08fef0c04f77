//! 16550A UART at COM1. (Stub in this commit: the full model follows.)

use alloc::collections::VecDeque;

/// One 16550A.
#[derive(Clone, Debug, Default)]
pub struct Uart16550 {
    tx: VecDeque<u8>,
    scr: u8,
}

impl Uart16550 {
    /// Power-on state.
    pub fn new() -> Self {
        Self::default()
    }
    /// Bytes the L1 transmitted, oldest first (the glue drains them).
    pub fn take_tx(&mut self) -> Option<u8> {
        self.tx.pop_front()
    }
    /// Room left in the receive FIFO.
    pub fn rx_space(&self) -> usize {
        0
    }
    /// A byte arrives on the line; false if it was lost (overrun).
    pub fn receive(&mut self, _byte: u8) -> bool {
        false
    }
    /// The IRQ4 level as a PC wires it (gated by MCR OUT2).
    pub fn irq_line(&self) -> bool {
        false
    }
    /// `IN` from register `offset` (0-7).
    pub fn read(&mut self, offset: u16) -> u8 {
        match offset {
            5 => 0x60,
            6 => 0xB0,
            7 => self.scr,
            _ => 0,
        }
    }
    /// `OUT` to register `offset` (0-7).
    pub fn write(&mut self, offset: u16, v: u8) {
        match offset {
            0 => self.tx.push_back(v),
            7 => self.scr = v,
            _ => {}
        }
    }
}
