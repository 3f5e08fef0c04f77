//! COM1 output by raw port I/O: poll the line-status register's "transmit
//! holding register empty" bit, then write the byte (PC16550D data sheet).

use core::fmt;

const COM1: u16 = 0x3F8;

fn outb(port: u16, v: u8) {
    // SAFETY: COM1's registers; the L1 owns its (real or virtual) COM1.
    unsafe { core::arch::asm!("out dx, al", in("dx") port, in("al") v, options(nomem, nostack)) };
}

fn inb(port: u16) -> u8 {
    let v: u8;
    // SAFETY: as `outb`.
    unsafe { core::arch::asm!("in al, dx", in("dx") port, out("al") v, options(nomem, nostack)) };
    v
}

/// 115200 8N1, FIFOs on, interrupts off.
pub fn init() {
    outb(COM1 + 1, 0x00);
    outb(COM1 + 3, 0x80);
    outb(COM1, 0x01);
    outb(COM1 + 1, 0x00);
    outb(COM1 + 3, 0x03);
    outb(COM1 + 2, 0xC7);
}

fn put(b: u8) {
    while inb(COM1 + 5) & 0x20 == 0 {
        core::hint::spin_loop();
    }
    outb(COM1, b);
}

/// The console as a `fmt::Write`; "\n" becomes "\r\n".
pub struct Console;

impl fmt::Write for Console {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        for b in s.bytes() {
            if b == b'\n' {
                put(b'\r');
            }
            put(b);
        }
        Ok(())
    }
}

/// Text built with `write!` in a fixed buffer (the L1 has no allocator);
/// what does not fit is cut off.
pub struct Text<const N: usize> {
    buf: [u8; N],
    len: usize,
}

impl<const N: usize> Text<N> {
    pub const fn new() -> Self {
        Text { buf: [0; N], len: 0 }
    }

    pub fn as_str(&self) -> &str {
        core::str::from_utf8(&self.buf[..self.len]).unwrap_or("?")
    }

    /// `args` formatted into a new text.
    pub fn of(args: fmt::Arguments<'_>) -> Self {
        let mut t = Self::new();
        let _ = fmt::Write::write_fmt(&mut t, args);
        t
    }
}

impl<const N: usize> fmt::Write for Text<N> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        let n = s.len().min(N - self.len);
        self.buf[self.len..self.len + n].copy_from_slice(&s.as_bytes()[..n]);
        self.len += n;
        Ok(())
    }
}

/// `workload=echo`: reads lines from COM1's receiver (LSR bit 0, data
/// ready) and answers each with `l1: echo got '<line>'`; the line `exit`
/// ends it. Under nvmx the bytes come from the shell's `attach`.
pub fn echo() {
    use fmt::Write;
    let _ = writeln!(Console, "l1: echo ready");
    let mut line = [0u8; 128];
    let mut n = 0;
    loop {
        while inb(COM1 + 5) & 1 == 0 {
            core::hint::spin_loop();
        }
        match inb(COM1) {
            b'\r' | b'\n' => {
                let text = core::str::from_utf8(&line[..n]).unwrap_or("?");
                let _ = writeln!(Console, "\nl1: echo got '{text}'");
                if text == "exit" {
                    return;
                }
                n = 0;
            }
            b if n < line.len() => {
                put(b);
                line[n] = b;
                n += 1;
            }
            _ => {}
        }
    }
}
