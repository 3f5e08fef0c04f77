//! Wall-clock delays from the PIT (8254 channel 2, polled through port 0x61),
//! which runs at a fixed 1.193182 MHz on PCs, QEMU and Bochs alike. The TSC
//! is no clock in Bochs (it counts instructions), so real waits use this.

use crate::arch::cpu::{inb, outb};

const PIT_HZ: u64 = 1_193_182;
const PIT_CH2: u16 = 0x42;
const PIT_CMD: u16 = 0x43;
const PORT_B: u16 = 0x61;

/// Busy-waits at least `us` microseconds.
pub fn delay_us(mut us: u64) {
    while us > 0 {
        // One shot is at most 65535 ticks (~54.9 ms).
        let chunk = us.min(50_000);
        let ticks = (chunk * PIT_HZ / 1_000_000).clamp(1, 0xFFFF) as u16;
        // Gate on (bit 0), speaker off (bit 1).
        outb(PORT_B, (inb(PORT_B) & !0x02) | 0x01);
        // Channel 2, lobyte/hibyte, mode 0 (interrupt on terminal count), binary.
        outb(PIT_CMD, 0b1011_0000);
        outb(PIT_CH2, ticks as u8);
        outb(PIT_CH2, (ticks >> 8) as u8);
        // OUT2 (port 0x61 bit 5) goes high at terminal count.
        while inb(PORT_B) & 0x20 == 0 {
            core::hint::spin_loop();
        }
        us -= chunk;
    }
}
