//! COM1 at 115200 baud 8N1 through `uart_16550`: the console GRUB also uses.

use spin::Mutex;
use uart_16550::backend::PioBackend;
use uart_16550::{BaudRate, Config, Uart16550};

/// I/O base of COM1.
pub const COM1_PORT: u16 = 0x3f8;

static COM1: Mutex<Option<Uart16550<PioBackend>>> = Mutex::new(None);

/// Programs COM1. Until then output is dropped.
pub fn init() {
    // SAFETY: 0x3f8..0x400 is the PC's COM1, which L0 alone drives.
    let Ok(mut uart) = (unsafe { Uart16550::new_port(COM1_PORT) }) else { return };
    let config = Config { baud_rate: BaudRate::Baud115200, ..Config::DEFAULT };
    if uart.init(config).is_ok() {
        // Bochs' loopback self-test can leave a stray byte behind: drain it.
        while uart.try_receive_byte().is_ok() {}
        *COM1.lock() = Some(uart);
    }
}

/// Writes bytes, turning "\n" into "\r\n". Spins while the FIFO is full.
pub fn write(bytes: &[u8]) {
    let mut guard = COM1.lock();
    let Some(uart) = guard.as_mut() else { return };
    for &b in bytes {
        if b == b'\n' {
            send(uart, b'\r');
        }
        send(uart, b);
    }
}

fn send(uart: &mut Uart16550<PioBackend>, byte: u8) {
    while uart.try_send_byte(byte).is_err() {
        core::hint::spin_loop();
    }
}

/// One received byte, if any.
pub fn try_read() -> Option<u8> {
    COM1.lock().as_mut()?.try_receive_byte().ok()
}

/// Raw output for the panic path: bypasses the lock (which the panicking
/// context may hold).
pub fn write_unlocked(bytes: &[u8]) {
    use x86_64::instructions::port::Port;
    for &b in bytes {
        for &c in if b == b'\n' { &b"\r\n"[..] } else { core::slice::from_ref(&b) } {
            let mut lsr: Port<u8> = Port::new(COM1_PORT + 5);
            let mut data: Port<u8> = Port::new(COM1_PORT);
            // SAFETY: COM1 registers; at worst interleaves with another writer.
            unsafe {
                while lsr.read() & 0x20 == 0 {}
                data.write(c);
            }
        }
    }
}
