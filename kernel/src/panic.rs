//! The panic handler: report the core and message on the serial line (lock
//! free, the panicking code may hold the console lock) and halt this core.

use core::fmt::{self, Write};

/// Lock-free writer straight to COM1, for fatal paths only.
pub struct PanicWriter;
impl Write for PanicWriter {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        crate::serial::write_unlocked(s.as_bytes());
        Ok(())
    }
}

#[panic_handler]
fn panic(info: &core::panic::PanicInfo) -> ! {
    x86_64::instructions::interrupts::disable();
    let cpu = crate::percpu::try_current_index().unwrap_or(usize::MAX);
    let _ = writeln!(PanicWriter, "\n!!! cpu {cpu}: kernel panic: {info}");
    crate::percpu::mark_current_failed();
    let _ = writeln!(PanicWriter, "!!! cpu {cpu} halted");
    crate::arch::cpu::halt_forever()
}
