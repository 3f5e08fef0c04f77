//! The MC146818-compatible CMOS/RTC of a PC: index port 0x70 (bit 7 masks
//! the NMI), data port 0x71, IRQ8. Motorola MC146818A data sheet ("Address
//! Map", "Registers A-D", "Interrupts").
//!
//! Modelled: seconds/minutes/hours/day of week/date/month/year with the
//! century byte at 0x32 (the FADT's CENTURY), BCD or binary (B.DM) and 12 or
//! 24 hour (B.24/12) formats; B.SET freezes the clock so the L1 can set it
//! (the new time counts from when SET is cleared); A.UIP is set during the
//! last 244 us before each update; register C's PF/AF/UF flags with IRQF and
//! the IRQ8 line while an enabled flag is set (read C to clear); D.VRT = 1.
//! The time of day is `epoch_at_tsc0 + TSC / tsc_hz` plus whatever offset the
//! L1 set. CMOS memory 0x0E-0x7F holds the memory-size bytes Bochs' BIOS and
//! QEMU leave there (0x15/0x16, 0x17/0x18 = 0x30/0x31, 0x34/0x35, 0x5B-0x5D).
//! Not modelled: daylight-saving (B.DSE), divider reset (A.DV), SQW output.

use crate::time::{ticks_to_tsc, tsc_to_ticks};

const RTC_HZ: u64 = 32_768;
/// Length of the update-in-progress window before each second (244 us).
const UIP_TICKS: u64 = 8; // 8 / 32768 s = 244 us

const REG_A: usize = 0x0A;
const REG_B: usize = 0x0B;
const REG_C: usize = 0x0C;
const REG_D: usize = 0x0D;
/// The century byte (FADT CENTURY).
pub const CENTURY: u8 = 0x32;

const B_SET: u8 = 0x80;
const B_PIE: u8 = 0x40;
const B_AIE: u8 = 0x20;
const B_UIE: u8 = 0x10;
const B_DM_BINARY: u8 = 0x04;
const B_24H: u8 = 0x02;
const C_IRQF: u8 = 0x80;
const C_PF: u8 = 0x40;
const C_AF: u8 = 0x20;
const C_UF: u8 = 0x10;

/// Broken-down time, binary.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Tm {
    sec: u8,
    min: u8,
    hour: u8,
    wday: u8, // 1 = Sunday
    mday: u8,
    mon: u8,
    year: u16,
}

/// Days since 1970-01-01 of a civil date (Howard Hinnant's algorithm).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (if m <= 2 { yoe + era * 400 + 1 } else { yoe + era * 400 }, m, d)
}

impl Tm {
    fn from_epoch(secs: i64) -> Tm {
        let days = secs.div_euclid(86_400);
        let rem = secs.rem_euclid(86_400);
        let (y, m, d) = civil_from_days(days);
        Tm {
            sec: (rem % 60) as u8,
            min: (rem / 60 % 60) as u8,
            hour: (rem / 3600) as u8,
            // 1970-01-01 was a Thursday (RTC day 5, Sunday = 1).
            wday: ((days + 4).rem_euclid(7) + 1) as u8,
            mday: d as u8,
            mon: m as u8,
            year: y as u16,
        }
    }

    fn to_epoch(self) -> i64 {
        let mon = self.mon.clamp(1, 12) as i64;
        let mday = self.mday.clamp(1, 31) as i64;
        days_from_civil(self.year as i64, mon, mday) * 86_400
            + self.hour.min(23) as i64 * 3600
            + self.min.min(59) as i64 * 60
            + self.sec.min(59) as i64
    }
}

/// The RTC and its CMOS memory.
#[derive(Clone, Debug)]
pub struct Rtc {
    tsc_hz: u64,
    epoch_at_tsc0: u64,
    /// Seconds the L1 moved the clock by.
    offset: i64,
    index: u8,
    nmi_masked: bool,
    /// CMOS bytes; 0x00-0x09 and 0x32 are unused while the clock runs.
    cmos: [u8; 128],
    /// The time while B.SET holds the clock.
    held: Option<Tm>,
    /// 32.768 kHz ticks as of the last `advance`.
    last: u64,
}

impl Rtc {
    /// Time of day `epoch_at_tsc0` seconds (Unix time) at TSC 0; CMOS
    /// memory-size bytes from `ram_bytes`.
    pub fn new(tsc_hz: u64, epoch_at_tsc0: u64, ram_bytes: u64) -> Self {
        let mut cmos = [0u8; 128];
        cmos[REG_A] = 0x26; // 32.768 kHz time base, 1024 Hz periodic rate
        cmos[REG_B] = B_24H; // BCD, 24 hour
        cmos[REG_D] = 0x80; // valid RAM and time
        cmos[0x10] = 0x00; // no floppy
        cmos[0x14] = 0x02; // equipment: FPU present, EGA/VGA
        cmos[0x15] = 0x80; // 640 KiB base memory
        cmos[0x16] = 0x02;
        let ext_kib = (ram_bytes.saturating_sub(1 << 20) >> 10).min(0xFC00) as u16;
        cmos[0x17..0x19].copy_from_slice(&ext_kib.to_le_bytes());
        cmos[0x30..0x32].copy_from_slice(&ext_kib.to_le_bytes());
        let below_4g = ram_bytes.min(0xE000_0000);
        let above_16m = (below_4g.saturating_sub(16 << 20) >> 16).min(0xFFFF) as u16;
        cmos[0x34..0x36].copy_from_slice(&above_16m.to_le_bytes());
        let above_4g = (ram_bytes - below_4g) >> 16;
        cmos[0x5B] = above_4g as u8;
        cmos[0x5C] = (above_4g >> 8) as u8;
        cmos[0x5D] = (above_4g >> 16) as u8;
        // Standard checksum over 0x10-0x2D at 0x2E (MSB) / 0x2F.
        let sum: u16 = cmos[0x10..0x2E].iter().map(|&b| b as u16).sum();
        cmos[0x2E] = (sum >> 8) as u8;
        cmos[0x2F] = sum as u8;
        Rtc { tsc_hz, epoch_at_tsc0, offset: 0, index: 0, nmi_masked: false, cmos, held: None, last: 0 }
    }

    fn ticks(&self, tsc: u64) -> u64 {
        tsc_to_ticks(tsc, self.tsc_hz, RTC_HZ)
    }

    fn now_tm(&self, tsc: u64) -> Tm {
        if let Some(h) = self.held {
            return h;
        }
        let secs = self.epoch_at_tsc0 as i64 + (tsc / self.tsc_hz.max(1)) as i64 + self.offset;
        Tm::from_epoch(secs)
    }

    /// Unix time the L1 would read now (for views).
    pub fn unix_time(&self, tsc: u64) -> i64 {
        self.now_tm(tsc).to_epoch()
    }

    fn periodic_ticks(&self) -> Option<u64> {
        match self.cmos[REG_A] & 0x0F {
            0 => None,
            1 => Some(128),
            2 => Some(256),
            r => Some(1 << (r - 1)),
        }
    }

    /// Bring time to `tsc`: set PF, UF and AF for the events that happened.
    pub fn advance(&mut self, tsc: u64) {
        let now = self.ticks(tsc);
        if now <= self.last {
            return;
        }
        let last = self.last;
        self.last = now;
        if let Some(p) = self.periodic_ticks() {
            if now / p > last / p {
                self.cmos[REG_C] |= C_PF;
            }
        }
        if self.held.is_none() && now / RTC_HZ > last / RTC_HZ {
            self.cmos[REG_C] |= C_UF;
            let tm = self.now_tm(tsc);
            let m = |alarm: u8, v: u8| alarm & 0xC0 == 0xC0 || self.from_reg(alarm, false) == v;
            let hour_alarm = self.hour_from_reg(self.cmos[5]);
            if m(self.cmos[1], tm.sec)
                && m(self.cmos[3], tm.min)
                && (self.cmos[5] & 0xC0 == 0xC0 || hour_alarm == tm.hour)
            {
                self.cmos[REG_C] |= C_AF;
            }
        }
        self.update_irqf();
    }

    fn update_irqf(&mut self) {
        let c = self.cmos[REG_C];
        let enabled = c & self.cmos[REG_B] & (C_PF | C_AF | C_UF) != 0;
        self.cmos[REG_C] = if enabled { c | C_IRQF } else { c & !C_IRQF };
    }

    /// TSC of the next flag event whose interrupt is enabled.
    pub fn next_deadline_tsc(&self) -> Option<u64> {
        let b = self.cmos[REG_B];
        let mut next: Option<u64> = None;
        if b & B_PIE != 0 {
            if let Some(p) = self.periodic_ticks() {
                next = Some((self.last / p + 1) * p);
            }
        }
        if b & (B_UIE | B_AIE) != 0 && self.held.is_none() {
            let s = (self.last / RTC_HZ + 1) * RTC_HZ;
            next = Some(next.map_or(s, |n| n.min(s)));
        }
        next.map(|t| ticks_to_tsc(t, self.tsc_hz, RTC_HZ))
    }

    /// IRQ8 level: IRQF.
    pub fn irq_line(&self) -> bool {
        self.cmos[REG_C] & C_IRQF != 0
    }

    /// Whether port 0x70 bit 7 masks NMIs.
    pub fn nmi_masked(&self) -> bool {
        self.nmi_masked
    }

    fn binary(&self) -> bool {
        self.cmos[REG_B] & B_DM_BINARY != 0
    }

    fn to_reg(&self, v: u8) -> u8 {
        if self.binary() { v } else { (v / 10) << 4 | v % 10 }
    }

    fn from_reg(&self, r: u8, _hour: bool) -> u8 {
        if self.binary() { r } else { (r >> 4) * 10 + (r & 0xF) }
    }

    fn hour_to_reg(&self, h: u8) -> u8 {
        if self.cmos[REG_B] & B_24H != 0 {
            return self.to_reg(h);
        }
        let pm = h >= 12;
        let h12 = match h % 12 {
            0 => 12,
            x => x,
        };
        self.to_reg(h12) | if pm { 0x80 } else { 0 }
    }

    fn hour_from_reg(&self, r: u8) -> u8 {
        if self.cmos[REG_B] & B_24H != 0 {
            return self.from_reg(r, true);
        }
        let h12 = self.from_reg(r & 0x7F, true) % 12;
        if r & 0x80 != 0 { h12 + 12 } else { h12 }
    }

    /// `IN` from 0x70/0x71.
    pub fn read(&mut self, port: u16, tsc: u64) -> u8 {
        if port == 0x70 {
            // The index register is write-only on most chipsets.
            return 0xFF;
        }
        self.advance(tsc);
        let tm = self.now_tm(tsc);
        let i = self.index as usize;
        match i {
            0x00 => self.to_reg(tm.sec),
            0x02 => self.to_reg(tm.min),
            0x04 => self.hour_to_reg(tm.hour),
            0x06 => tm.wday,
            0x07 => self.to_reg(tm.mday),
            0x08 => self.to_reg(tm.mon),
            0x09 => self.to_reg((tm.year % 100) as u8),
            0x32 => self.to_reg((tm.year / 100) as u8),
            REG_A => {
                let in_window = self.held.is_none()
                    && self.ticks(tsc) % RTC_HZ >= RTC_HZ - UIP_TICKS;
                (self.cmos[REG_A] & 0x7F) | if in_window { 0x80 } else { 0 }
            }
            REG_C => {
                let v = self.cmos[REG_C];
                self.cmos[REG_C] = 0;
                v
            }
            _ => self.cmos[i],
        }
    }

    /// `OUT` to 0x70/0x71.
    pub fn write(&mut self, port: u16, v: u8, tsc: u64) {
        if port == 0x70 {
            self.index = v & 0x7F;
            self.nmi_masked = v & 0x80 != 0;
            return;
        }
        self.advance(tsc);
        let i = self.index as usize;
        let time_reg = matches!(i, 0x00 | 0x02 | 0x04 | 0x06 | 0x07 | 0x08 | 0x09 | 0x32);
        if time_reg {
            let mut tm = self.now_tm(tsc);
            match i {
                0x00 => tm.sec = self.from_reg(v, false),
                0x02 => tm.min = self.from_reg(v, false),
                0x04 => tm.hour = self.hour_from_reg(v),
                0x06 => tm.wday = v,
                0x07 => tm.mday = self.from_reg(v, false),
                0x08 => tm.mon = self.from_reg(v, false),
                0x09 => tm.year = tm.year / 100 * 100 + self.from_reg(v, false) as u16 % 100,
                _ => tm.year = self.from_reg(v, false) as u16 * 100 + tm.year % 100,
            }
            if self.held.is_some() {
                self.held = Some(tm);
            } else {
                self.set_clock(tm, tsc);
            }
            return;
        }
        match i {
            REG_A => self.cmos[REG_A] = v & 0x7F,
            REG_B => {
                let was_set = self.cmos[REG_B] & B_SET != 0;
                let set = v & B_SET != 0;
                if set && !was_set {
                    self.held = Some(self.now_tm(tsc));
                } else if !set && was_set {
                    if let Some(tm) = self.held.take() {
                        self.set_clock(tm, tsc);
                    }
                }
                // SET clears UIE (MC146818A: "SET ... UIE is cleared").
                self.cmos[REG_B] = if set { v & !B_UIE } else { v };
                self.update_irqf();
            }
            REG_C | REG_D => {} // read-only
            _ => self.cmos[i] = v,
        }
    }

    fn set_clock(&mut self, tm: Tm, tsc: u64) {
        let base = self.epoch_at_tsc0 as i64 + (tsc / self.tsc_hz.max(1)) as i64;
        self.offset = tm.to_epoch() - base;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HZ: u64 = 1_000_000;
    // 2026-11-30 21:05:09 UTC, a Monday.
    const T0: u64 = 1_796_072_709;

    fn rd(r: &mut Rtc, i: u8, tsc: u64) -> u8 {
        r.write(0x70, i, tsc);
        r.read(0x71, tsc)
    }

    fn wr(r: &mut Rtc, i: u8, v: u8, tsc: u64) {
        r.write(0x70, i, tsc);
        r.write(0x71, v, tsc);
    }

    #[test]
    fn reads_bcd_time_and_date() {
        let mut r = Rtc::new(HZ, T0, 512 << 20);
        assert_eq!(rd(&mut r, 0, 0), 0x09);
        assert_eq!(rd(&mut r, 2, 0), 0x05);
        assert_eq!(rd(&mut r, 4, 0), 0x21);
        assert_eq!(rd(&mut r, 6, 0), 2, "Monday");
        assert_eq!(rd(&mut r, 7, 0), 0x30);
        assert_eq!(rd(&mut r, 8, 0), 0x11);
        assert_eq!(rd(&mut r, 9, 0), 0x26);
        assert_eq!(rd(&mut r, 0x32, 0), 0x20);
        assert_eq!(rd(&mut r, 0x0D, 0), 0x80);
        // 51 seconds later the minute rolls over.
        assert_eq!(rd(&mut r, 0, 51 * HZ), 0x00);
        assert_eq!(rd(&mut r, 2, 51 * HZ), 0x06);
    }

    #[test]
    fn binary_and_12_hour() {
        let mut r = Rtc::new(HZ, T0, 512 << 20);
        wr(&mut r, 0x0B, B_DM_BINARY, 0); // binary, 12 hour
        assert_eq!(rd(&mut r, 4, 0), 0x80 | 9, "21h is 9 PM");
        assert_eq!(rd(&mut r, 0, 0), 9);
    }

    #[test]
    fn set_the_clock() {
        let mut r = Rtc::new(HZ, T0, 512 << 20);
        wr(&mut r, 0x0B, B_SET | B_24H, 0);
        wr(&mut r, 4, 0x07, 0);
        wr(&mut r, 2, 0x30, 0);
        wr(&mut r, 0, 0x00, 0);
        // Held while SET: time does not run.
        assert_eq!(rd(&mut r, 0, 5 * HZ), 0x00);
        wr(&mut r, 0x0B, B_24H, 10 * HZ);
        assert_eq!(rd(&mut r, 4, 13 * HZ), 0x07);
        assert_eq!(rd(&mut r, 2, 13 * HZ), 0x30);
        assert_eq!(rd(&mut r, 0, 13 * HZ), 0x03);
        assert_eq!(rd(&mut r, 7, 13 * HZ), 0x30, "date kept");
    }

    #[test]
    fn uip_before_each_update() {
        let mut r = Rtc::new(HZ, T0, 512 << 20);
        assert_eq!(rd(&mut r, 0x0A, HZ / 2) & 0x80, 0);
        assert_ne!(rd(&mut r, 0x0A, HZ - 100) & 0x80, 0, "UIP in the last 244 us");
        assert_eq!(rd(&mut r, 0x0A, HZ + 100) & 0x80, 0);
    }

    #[test]
    fn periodic_interrupt_and_register_c() {
        let mut r = Rtc::new(HZ, T0, 512 << 20);
        wr(&mut r, 0x0A, 0x26, 0); // 1024 Hz
        wr(&mut r, 0x0B, B_24H | B_PIE, 0);
        assert!(!r.irq_line());
        let d = r.next_deadline_tsc().unwrap();
        assert_eq!(d, ticks_to_tsc(32, HZ, RTC_HZ), "1024 Hz = every 32 ticks of 32 kHz");
        r.advance(d);
        assert!(r.irq_line());
        assert_eq!(rd(&mut r, 0x0C, d), C_IRQF | C_PF);
        assert!(!r.irq_line(), "reading C clears IRQF");
        assert_eq!(rd(&mut r, 0x0C, d), 0);
        // Update-ended interrupt each second.
        wr(&mut r, 0x0B, B_24H | B_UIE, d);
        r.advance(HZ);
        assert_eq!(rd(&mut r, 0x0C, HZ) & (C_IRQF | C_UF), C_IRQF | C_UF);
    }

    #[test]
    fn nmi_mask_bit_and_memory_size() {
        let mut r = Rtc::new(HZ, T0, 512 << 20);
        r.write(0x70, 0x80 | 0x15, 0);
        assert!(r.nmi_masked());
        assert_eq!(r.read(0x71, 0), 0x80);
        assert_eq!(rd(&mut r, 0x34, 0) as u16 | (rd(&mut r, 0x35, 0) as u16) << 8, (496 << 20 >> 16) as u16);
        assert!(!r.nmi_masked());
    }

    #[test]
    fn epoch_round_trip() {
        for s in [0i64, 951_782_400, 1_796_072_709, 4_102_444_800] {
            assert_eq!(Tm::from_epoch(s).to_epoch(), s);
        }
        let tm = Tm::from_epoch(951_782_400); // 2000-02-29
        assert_eq!((tm.year, tm.mon, tm.mday, tm.wday), (2000, 2, 29, 3));
    }
}
