//! The virtual 16550 an L1 sees at COM1 (0x3F8-0x3FF), and the ring buffer
//! its output goes to. Enough of the chip for polled output and for the usual
//! presence checks (scratch register, divisor latch, loopback-free LSR):
//! the transmitter is always empty, the receiver never has data.
//! Register layout: PC16550D data sheet, table II.

/// COM1's I/O base as the L1 sees it.
pub const COM1_BASE: u16 = 0x3F8;
/// Bytes of console output kept per L1 (the newest).
pub const CONSOLE_BYTES: usize = 16 * 1024;

/// Register state of one virtual 16550.
#[derive(Default)]
pub struct Uart16550 {
    ier: u8,
    lcr: u8,
    mcr: u8,
    scr: u8,
    fcr: u8,
    dll: u8,
    dlm: u8,
}

/// The newest `CONSOLE_BYTES` bytes an L1 wrote.
pub struct ConsoleRing {
    buf: alloc::boxed::Box<[u8]>,
    /// Total bytes ever written; the ring holds the last min(total, len).
    total: u64,
}

impl ConsoleRing {
    pub fn new() -> Self {
        ConsoleRing { buf: alloc::vec![0; CONSOLE_BYTES].into_boxed_slice(), total: 0 }
    }
    pub fn push(&mut self, byte: u8) {
        let len = self.buf.len() as u64;
        self.buf[(self.total % len) as usize] = byte;
        self.total += 1;
    }
    /// The kept bytes, oldest first, as (older part, newer part).
    pub fn contents(&self) -> (&[u8], &[u8]) {
        let len = self.buf.len() as u64;
        if self.total <= len {
            (&self.buf[..self.total as usize], &[])
        } else {
            let head = (self.total % len) as usize;
            (&self.buf[head..], &self.buf[..head])
        }
    }
}

impl Default for ConsoleRing {
    fn default() -> Self {
        Self::new()
    }
}

const LCR_DLAB: u8 = 0x80;

impl Uart16550 {
    /// An L1 `IN` from `COM1_BASE + offset`.
    pub fn read(&mut self, offset: u16) -> u8 {
        let dlab = self.lcr & LCR_DLAB != 0;
        match offset {
            0 if dlab => self.dll,
            0 => 0, // RBR: nothing received
            1 if dlab => self.dlm,
            1 => self.ier,
            // IIR: no interrupt pending; FIFOs enabled bits mirror FCR bit 0.
            2 => 0x01 | if self.fcr & 1 != 0 { 0xC0 } else { 0 },
            3 => self.lcr,
            4 => self.mcr,
            // LSR: transmitter holding register and shift register empty.
            5 => 0x60,
            // MSR: CTS, DSR, DCD asserted (a connected terminal).
            6 => 0xB0,
            7 => self.scr,
            _ => 0xFF,
        }
    }

    /// An L1 `OUT` to `COM1_BASE + offset`; a transmitted byte goes to `console`.
    pub fn write(&mut self, offset: u16, value: u8, console: &mut ConsoleRing) {
        let dlab = self.lcr & LCR_DLAB != 0;
        match offset {
            0 if dlab => self.dll = value,
            0 => console.push(value),
            1 if dlab => self.dlm = value,
            1 => self.ier = value & 0x0F,
            2 => self.fcr = value,
            3 => self.lcr = value,
            4 => self.mcr = value,
            7 => self.scr = value,
            _ => {}
        }
    }
}
