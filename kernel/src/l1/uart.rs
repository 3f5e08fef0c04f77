//! The ring buffer an L1's COM1 output goes to (the 16550 itself is
//! `nvmx_devices::uart`, part of the L1's platform).

/// Bytes of console output kept per L1 (the newest).
pub const CONSOLE_BYTES: usize = 32 * 1024;

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
    /// Bytes ever written (a position in the output stream).
    pub fn total(&self) -> u64 {
        self.total
    }
    /// Appends the bytes written since position `from` that the ring still
    /// holds to `out`; returns the new position.
    pub fn since(&self, from: u64, out: &mut alloc::vec::Vec<u8>) -> u64 {
        let len = self.buf.len() as u64;
        let start = from.max(self.total.saturating_sub(len));
        for pos in start..self.total {
            out.push(self.buf[(pos % len) as usize]);
        }
        self.total
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

