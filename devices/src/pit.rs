//! The 8254 programmable interval timer (ports 0x40-0x43) and the PC's
//! port 0x61 (NMI status and control: counter 2's gate, speaker enable,
//! refresh toggle, OUT2). Intel 8254 data sheet (231164), "Modes" and
//! "Read-Back Command".
//!
//! Counters are time functions, not ticking state: each one remembers the
//! PIT clock at which its count started and computes count and OUT from the
//! current PIT clock ([`crate::time::PIT_HZ`] derived from the TSC). Counter
//! 0's gate is tied high and its OUT drives IRQ0; counter 2's gate is port
//! 0x61 bit 0 and its OUT is readable as port 0x61 bit 5. Counter 1 (DRAM
//! refresh on old PCs) counts but drives nothing.
//!
//! Simplifications: the one-clock load delay after writing a count is not
//! modelled (counting starts at the write); a new count written in modes 2/3
//! takes effect at once rather than at the end of the current period. Mode 1
//! or 5 on counter 0 never triggers (its gate never rises), as on a PC.

use crate::time::{PIT_HZ, ticks_to_tsc, tsc_to_ticks};

#[derive(Clone, Debug)]
struct Counter {
    mode: u8,
    bcd: bool,
    /// Access mode: 1 LSB, 2 MSB, 3 LSB then MSB.
    rw: u8,
    /// The count as loaded (1..=65536 binary, 1..=10000 BCD).
    reload: u32,
    /// PIT clock at which counting (elapsed 0) began; `None` while waiting
    /// for a count or for a gate trigger.
    start: Option<u64>,
    /// Elapsed clocks frozen while the gate is low (modes 0 and 4).
    frozen: Option<u64>,
    gate: bool,
    /// Write flip-flop: the LSB was written, the MSB comes next.
    write_msb_next: bool,
    write_lsb: u8,
    /// Read flip-flop for unlatched LSB-then-MSB reads.
    read_msb_next: bool,
    /// Latched count and the bytes of it still to be read (1 or 2, with
    /// `latch_msb_next` saying which).
    latched: Option<u16>,
    latch_msb_next: bool,
    status: Option<u8>,
    null_count: bool,
    /// Last PIT clock at which rising edges of OUT were reported.
    edges_seen_until: u64,
}

impl Counter {
    fn new(gate: bool) -> Self {
        Counter {
            mode: 0,
            bcd: false,
            rw: 3,
            reload: 0x10000,
            start: None,
            frozen: None,
            gate,
            write_msb_next: false,
            write_lsb: 0,
            read_msb_next: false,
            latched: None,
            latch_msb_next: false,
            status: None,
            null_count: true,
            edges_seen_until: 0,
        }
    }

    fn effective_mode(&self) -> u8 {
        // Modes 6 and 7 are modes 2 and 3.
        if self.mode >= 6 { self.mode - 4 } else { self.mode }
    }

    /// Elapsed clocks since counting began, or `None` if not counting.
    fn elapsed(&self, t: u64) -> Option<u64> {
        let s = self.start?;
        Some(self.frozen.unwrap_or(t.saturating_sub(s)))
    }

    fn count_at(&self, t: u64) -> u32 {
        let n = self.reload as u64;
        let modulus: u64 = if self.bcd { 10_000 } else { 0x10000 };
        let Some(e) = self.elapsed(t) else {
            return (self.reload as u64 % modulus) as u32;
        };
        let c = match self.effective_mode() {
            2 => n - e % n,
            3 => {
                let p = e % n;
                let h1 = n.div_ceil(2);
                if p < h1 { n - 2 * p } else { n - 2 * (p - h1) }
            }
            // Modes 0, 1, 4, 5 wrap after terminal count and keep counting.
            _ => (n + modulus * (e / modulus + 1) - e) % modulus,
        };
        (c % modulus) as u32
    }

    fn out_at(&self, t: u64) -> bool {
        let n = self.reload as u64;
        let Some(e) = self.elapsed(t) else {
            // Mode 0: OUT low once the control word is written; others high.
            return self.effective_mode() != 0;
        };
        match self.effective_mode() {
            0 | 1 => e >= n,
            2 => e % n != n - 1 || !self.gate,
            3 => e % n < n.div_ceil(2) || !self.gate,
            _ => e != n,
        }
    }

    /// The first PIT clock > `after` at which OUT rises, if ever.
    fn next_rising_edge(&self, after: u64) -> Option<u64> {
        let s = self.start?;
        if self.frozen.is_some() {
            return None;
        }
        let n = self.reload as u64;
        match self.effective_mode() {
            0 | 1 => Some(s + n).filter(|&x| x > after),
            4 | 5 => Some(s + n + 1).filter(|&x| x > after),
            _ => {
                if !self.gate {
                    return None;
                }
                // Edges at s + k*n, k >= 1.
                let k = if after < s { 1 } else { (after - s) / n + 1 };
                Some(s + k * n)
            }
        }
    }

    fn to_bcd(v: u32) -> u16 {
        let mut r = 0u16;
        for i in 0..4 {
            r |= (((v / 10u32.pow(i)) % 10) as u16) << (4 * i);
        }
        r
    }

    fn from_bcd(v: u16) -> u32 {
        (0..4).map(|i| ((v >> (4 * i)) & 0xF).min(9) as u32 * 10u32.pow(i)).sum()
    }

    fn load(&mut self, raw: u16, t: u64) {
        let v = if self.bcd { Self::from_bcd(raw) } else { raw as u32 };
        self.reload = if v == 0 {
            if self.bcd { 10_000 } else { 0x10000 }
        } else {
            v
        };
        self.null_count = false;
        self.frozen = None;
        match self.effective_mode() {
            // Hardware-triggered modes wait for a rising gate edge.
            1 | 5 => self.start = None,
            m => {
                self.start = Some(t);
                if !self.gate && (m == 0 || m == 4) {
                    self.frozen = Some(0);
                }
            }
        }
        self.edges_seen_until = t;
    }

    fn set_gate(&mut self, g: bool, t: u64) {
        if g == self.gate {
            return;
        }
        self.gate = g;
        match self.effective_mode() {
            0 | 4 => {
                if let Some(s) = self.start {
                    if g {
                        if let Some(f) = self.frozen.take() {
                            self.start = Some(t - f);
                        }
                    } else {
                        self.frozen = Some(t.saturating_sub(s));
                    }
                }
            }
            // Rising gate (re)triggers modes 1 and 5 and reloads 2 and 3.
            _ => {
                if g && !self.null_count {
                    self.start = Some(t);
                    self.frozen = None;
                    self.edges_seen_until = t;
                }
            }
        }
    }

    fn display(&self, c: u32) -> u16 {
        if self.bcd { Self::to_bcd(c) } else { c as u16 }
    }

    fn status_byte(&self, t: u64) -> u8 {
        (self.out_at(t) as u8) << 7
            | (self.null_count as u8) << 6
            | self.rw << 4
            | self.mode << 1
            | self.bcd as u8
    }

    fn read(&mut self, t: u64) -> u8 {
        if let Some(s) = self.status.take() {
            return s;
        }
        if let Some(l) = self.latched {
            let byte = match self.rw {
                1 => {
                    self.latched = None;
                    l as u8
                }
                2 => {
                    self.latched = None;
                    (l >> 8) as u8
                }
                _ => {
                    if self.latch_msb_next {
                        self.latched = None;
                        self.latch_msb_next = false;
                        (l >> 8) as u8
                    } else {
                        self.latch_msb_next = true;
                        l as u8
                    }
                }
            };
            return byte;
        }
        let c = self.display(self.count_at(t));
        match self.rw {
            1 => c as u8,
            2 => (c >> 8) as u8,
            _ => {
                self.read_msb_next = !self.read_msb_next;
                if self.read_msb_next { c as u8 } else { (c >> 8) as u8 }
            }
        }
    }

    fn write(&mut self, v: u8, t: u64) {
        match self.rw {
            1 => self.load(v as u16, t),
            2 => self.load((v as u16) << 8, t),
            _ => {
                if self.write_msb_next {
                    self.write_msb_next = false;
                    self.load(u16::from_le_bytes([self.write_lsb, v]), t);
                } else {
                    // Mode 0: writing the first byte stops the count.
                    if self.effective_mode() == 0 {
                        self.start = None;
                    }
                    self.write_lsb = v;
                    self.write_msb_next = true;
                }
            }
        }
    }

    fn latch(&mut self, t: u64) {
        if self.latched.is_none() {
            self.latched = Some(self.display(self.count_at(t)));
            self.latch_msb_next = false;
        }
    }

    fn control(&mut self, rw: u8, mode: u8, bcd: bool) {
        self.rw = rw;
        self.mode = mode;
        self.bcd = bcd;
        self.start = None;
        self.frozen = None;
        self.null_count = true;
        self.write_msb_next = false;
        self.read_msb_next = false;
        self.latched = None;
        self.status = None;
    }
}

/// The 8254 and port 0x61.
#[derive(Clone, Debug)]
pub struct Pit {
    tsc_hz: u64,
    counters: [Counter; 3],
    /// Port 0x61 bits 0-3 as written (gate 2, speaker data, parity/IOCHK
    /// check disables).
    port61: u8,
    /// PIT clock as of the last `advance`.
    now: u64,
}

impl Pit {
    /// Power-on state: counters unprogrammed, counter 2's gate low.
    pub fn new(tsc_hz: u64) -> Self {
        Pit {
            tsc_hz,
            counters: [Counter::new(true), Counter::new(true), Counter::new(false)],
            port61: 0,
            now: 0,
        }
    }

    fn clock(&self, tsc: u64) -> u64 {
        tsc_to_ticks(tsc, self.tsc_hz, PIT_HZ)
    }

    /// Bring time to `tsc`; true if counter 0's OUT rose since the last call.
    pub fn advance(&mut self, tsc: u64) -> bool {
        let t = self.clock(tsc);
        self.now = self.now.max(t);
        let c0 = &mut self.counters[0];
        let fired = matches!(c0.next_rising_edge(c0.edges_seen_until), Some(e) if e <= t);
        c0.edges_seen_until = c0.edges_seen_until.max(t);
        fired
    }

    /// TSC of counter 0's next rising OUT edge (IRQ0), if one will come.
    pub fn next_deadline_tsc(&self) -> Option<u64> {
        let c0 = &self.counters[0];
        let e = c0.next_rising_edge(c0.edges_seen_until)?;
        Some(ticks_to_tsc(e, self.tsc_hz, PIT_HZ))
    }

    /// Counter `i`'s programmed mode and reload value (for views).
    pub fn counter_state(&self, i: usize) -> (u8, u32, bool) {
        let c = &self.counters[i % 3];
        (c.mode, c.reload, c.start.is_some())
    }

    /// An `IN` from 0x40-0x43 or 0x61 at TSC `tsc`.
    pub fn read(&mut self, port: u16, tsc: u64) -> u8 {
        let t = self.clock(tsc);
        match port {
            0x40..=0x42 => self.counters[(port - 0x40) as usize].read(t),
            0x61 => {
                // Bit 4 toggles with every DRAM refresh request (15.085 us =
                // 18 PIT clocks); bit 5 is OUT2.
                let refresh = ((t / 18) & 1) as u8;
                let out2 = self.counters[2].out_at(t) as u8;
                (self.port61 & 0x0F) | refresh << 4 | out2 << 5
            }
            // The control register is write-only; reads float.
            _ => 0xFF,
        }
    }

    /// An `OUT` to 0x40-0x43 or 0x61 at TSC `tsc`.
    pub fn write(&mut self, port: u16, v: u8, tsc: u64) {
        let t = self.clock(tsc);
        match port {
            0x40..=0x42 => self.counters[(port - 0x40) as usize].write(v, t),
            0x43 => {
                let sc = v >> 6;
                if sc == 3 {
                    // Read-back: bit 5 = !COUNT, bit 4 = !STATUS, bits 3-1
                    // select counters 2..0.
                    for i in 0..3 {
                        if v & (2 << i) != 0 {
                            let c = &mut self.counters[i];
                            if v & 0x10 == 0 && c.status.is_none() {
                                c.status = Some(c.status_byte(t));
                            }
                            if v & 0x20 == 0 {
                                c.latch(t);
                            }
                        }
                    }
                    return;
                }
                let c = &mut self.counters[sc as usize];
                let rw = (v >> 4) & 3;
                if rw == 0 {
                    c.latch(t);
                } else {
                    c.control(rw, (v >> 1) & 7, v & 1 != 0);
                }
            }
            0x61 => {
                self.port61 = v & 0x0F;
                self.counters[2].set_gate(v & 1 != 0, t);
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HZ: u64 = 50_000_000;

    fn tsc(pit_clocks: u64) -> u64 {
        ticks_to_tsc(pit_clocks, HZ, PIT_HZ)
    }

    #[test]
    fn channel2_calibration_like_linux() {
        // Linux pit_calibrate_tsc: gate high, speaker off, mode 0 with a
        // 20 ms count, then polls OUT2 in port 0x61.
        let mut p = Pit::new(HZ);
        let v61 = p.read(0x61, 0);
        p.write(0x61, (v61 & !0x02) | 0x01, 0);
        p.write(0x43, 0xB0, 0); // counter 2, LSB+MSB, mode 0, binary
        let latch = (PIT_HZ / 50) as u16;
        p.write(0x42, latch as u8, 100);
        p.write(0x42, (latch >> 8) as u8, 100);
        let t0 = 100;
        assert_eq!(p.read(0x61, t0) & 0x20, 0, "OUT2 low while counting");
        let t_end = t0 + tsc(latch as u64);
        assert_eq!(p.read(0x61, t_end - 1000) & 0x20, 0);
        assert_ne!(p.read(0x61, t_end + 100) & 0x20, 0, "OUT2 high at terminal count");
        // The TSC frequency Linux would compute from this: exact to 0.01 %.
        let measured = (t_end - t0) as u128 * PIT_HZ as u128 / latch as u128;
        assert!((measured as i64 - HZ as i64).abs() < (HZ / 10_000) as i64);
    }

    #[test]
    fn quick_calibrate_msb_decrements() {
        // Linux quick_pit_calibrate: mode 0, count 0xFFFF, reads LSB then
        // MSB repeatedly and watches the MSB fall by one every 256 clocks.
        let mut p = Pit::new(HZ);
        p.write(0x61, 0x01, 0);
        p.write(0x43, 0xB0, 0);
        p.write(0x42, 0xFF, 0);
        p.write(0x42, 0xFF, 0);
        for k in 0..10u64 {
            let t = tsc(k * 256 + 10);
            let _lsb = p.read(0x42, t);
            let msb = p.read(0x42, t);
            assert_eq!(msb as u64, 0xFF - k);
        }
    }

    #[test]
    fn gate_low_freezes_mode0() {
        let mut p = Pit::new(HZ);
        p.write(0x61, 0x01, 0);
        p.write(0x43, 0xB4, 0); // counter 2 mode 2? no: 0xB4 = ctr2 LSB/MSB mode 2
        p.write(0x43, 0xB0, 0); // mode 0
        p.write(0x42, 0x00, 0);
        p.write(0x42, 0x10, 0); // 0x1000
        p.write(0x61, 0x00, tsc(0x100)); // gate low after 256 clocks
        p.write(0x43, 0x80, tsc(0x900)); // latch counter 2
        let lo = p.read(0x42, tsc(0x900));
        let hi = p.read(0x42, tsc(0x900));
        assert_eq!(u16::from_le_bytes([lo, hi]), 0x0F00);
    }

    #[test]
    fn channel0_rate_generator_period() {
        let mut p = Pit::new(HZ);
        p.write(0x43, 0x34, 0); // counter 0, LSB/MSB, mode 2 (Linux periodic)
        let n = 11932u64; // 100 Hz
        p.write(0x40, n as u8, 0);
        p.write(0x40, (n >> 8) as u8, 0);
        assert_eq!(p.next_deadline_tsc(), Some(tsc(n)));
        assert!(!p.advance(tsc(n) - 1));
        assert!(p.advance(tsc(n)));
        assert!(!p.advance(tsc(n) + 5));
        assert_eq!(p.next_deadline_tsc(), Some(tsc(2 * n)));
        // Many periods missed: one edge reported, next one in the future.
        assert!(p.advance(tsc(10 * n + 3)));
        assert_eq!(p.next_deadline_tsc(), Some(tsc(11 * n)));
    }

    #[test]
    fn channel0_oneshot_modes() {
        let mut p = Pit::new(HZ);
        p.write(0x43, 0x38, 0); // mode 4 (Linux oneshot)
        p.write(0x40, 100, 0);
        p.write(0x40, 0, 0);
        assert_eq!(p.next_deadline_tsc(), Some(tsc(101)));
        assert!(p.advance(tsc(101)));
        assert_eq!(p.next_deadline_tsc(), None);
        p.write(0x43, 0x30, tsc(200)); // mode 0
        p.write(0x40, 50, tsc(200));
        p.write(0x40, 0, tsc(200));
        assert!(!p.advance(tsc(249)));
        assert!(p.advance(tsc(250)));
        assert!(!p.advance(tsc(100_000)), "mode 0 fires once");
    }

    #[test]
    fn mode1_on_channel0_never_fires() {
        // Bad input: mode 1 needs a gate trigger; counter 0's gate is tied
        // high, so nothing happens, as on a PC.
        let mut p = Pit::new(HZ);
        p.write(0x43, 0x32, 0);
        p.write(0x40, 10, 0);
        p.write(0x40, 0, 0);
        assert_eq!(p.next_deadline_tsc(), None);
        assert!(!p.advance(tsc(1_000_000)));
    }

    #[test]
    fn readback_status_and_bcd() {
        let mut p = Pit::new(HZ);
        p.write(0x43, 0x31, 0); // counter 0, LSB/MSB, mode 0, BCD
        p.write(0x40, 0x00, 0);
        p.write(0x40, 0x10, 0); // 1000 decimal
        p.write(0x43, 0xC2, tsc(1)); // read-back count+status of counter 0
        let st = p.read(0x40, tsc(1));
        assert_eq!(st & 0x3F, 0x31, "status: rw=3, mode 0, BCD");
        assert_eq!(st & 0x40, 0, "count loaded: null count clear");
        assert_eq!(st & 0x80, 0, "OUT low in mode 0 before terminal count");
        let lo = p.read(0x40, tsc(500));
        let hi = p.read(0x40, tsc(500));
        assert_eq!(u16::from_le_bytes([lo, hi]), 0x0999, "latched BCD 999");
    }
}
