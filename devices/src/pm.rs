//! The ACPI fixed hardware of the L1's PC (ACPI 6.5 chapter 4.8): the PM1a
//! event block at 0x600 (PM1_STS, PM1_EN), the PM1a control block at 0x604
//! (PM1_CNT) and the 32-bit PM timer at 0x608 (3.579545 MHz from the TSC).
//! The FADT in [`crate::acpi`] points here; the reset register (0xCF9) lives
//! in [`crate::misc`].
//!
//! Modelled: PM timer (TMR_VAL_EXT, 32 bits), TMR_STS when its bit 31
//! toggles, PWRBTN_STS from [`PmBlock::press_power_button`], write-1-to-clear
//! status, the SCI (level, IRQ 9) while an enabled status bit is set,
//! SCI_EN always 1 (SMI_CMD is 0: the machine is always in ACPI mode),
//! SLP_TYP/SLP_EN with SLP_TYP 5 (the DSDT's `\_S5`) powering off. Other
//! sleep types are accepted and ignored (the DSDT offers none). Not
//! modelled: GPE blocks, BM/GBL bits, RTC_STS wake.
//! Accesses of any width are split into byte accesses of the registers.

use crate::time::{PM_TIMER_HZ, ticks_to_tsc, tsc_to_ticks};

/// PM1a_EVT_BLK (status 0x600, enable 0x602).
pub const PM1A_EVT: u16 = 0x600;
/// PM1a_CNT_BLK.
pub const PM1A_CNT: u16 = 0x604;
/// PM_TMR_BLK.
pub const PM_TMR: u16 = 0x608;
/// SLP_TYP value of `\_S5` in the DSDT.
pub const SLP_TYP_S5: u8 = 5;

const TMR_STS: u16 = 1 << 0;
const PWRBTN_STS: u16 = 1 << 8;
const WAK_STS: u16 = 1 << 15;
const SCI_EN: u16 = 1 << 0;
const SLP_EN: u16 = 1 << 13;

/// The PM block.
#[derive(Clone, Debug)]
pub struct PmBlock {
    tsc_hz: u64,
    sts: u16,
    en: u16,
    cnt: u16,
    /// PM timer ticks as of the last `advance`.
    last_ticks: u64,
}

impl PmBlock {
    /// Power-on state (SCI_EN set).
    pub fn new(tsc_hz: u64) -> Self {
        PmBlock { tsc_hz: tsc_hz.max(1), sts: 0, en: 0, cnt: SCI_EN, last_ticks: 0 }
    }

    /// Whether `port` is in the block.
    pub fn claims(port: u16) -> bool {
        (PM1A_EVT..PM_TMR + 4).contains(&port)
    }

    fn ticks(&self, tsc: u64) -> u64 {
        tsc_to_ticks(tsc, self.tsc_hz, PM_TIMER_HZ)
    }

    /// The PM timer value at `tsc`.
    pub fn timer(&self, tsc: u64) -> u32 {
        self.ticks(tsc) as u32
    }

    /// Bring time to `tsc`: TMR_STS when bit 31 of the timer changed.
    pub fn advance(&mut self, tsc: u64) {
        let t = self.ticks(tsc);
        if t >> 31 != self.last_ticks >> 31 {
            self.sts |= TMR_STS;
        }
        self.last_ticks = self.last_ticks.max(t);
    }

    /// TSC of the next TMR_STS event while TMR_EN is set.
    pub fn next_deadline_tsc(&self) -> Option<u64> {
        if self.en & TMR_STS == 0 {
            return None;
        }
        let next = ((self.last_ticks >> 31) + 1) << 31;
        Some(ticks_to_tsc(next, self.tsc_hz, PM_TIMER_HZ))
    }

    /// The power button is pressed (a fixed-feature event: PWRBTN_STS).
    pub fn press_power_button(&mut self) {
        self.sts |= PWRBTN_STS;
    }

    /// SCI level (IRQ 9, level, active high).
    pub fn sci_line(&self) -> bool {
        self.cnt & SCI_EN != 0 && self.sts & self.en & (TMR_STS | PWRBTN_STS) != 0
    }

    fn read8(&self, port: u16, tsc: u64) -> u8 {
        let word = |w: u16, hi: bool| if hi { (w >> 8) as u8 } else { w as u8 };
        match port {
            0x600 | 0x601 => word(self.sts, port & 1 != 0),
            0x602 | 0x603 => word(self.en, port & 1 != 0),
            0x604 | 0x605 => word(self.cnt & !SLP_EN, port & 1 != 0),
            0x608..=0x60B => (self.timer(tsc) >> (8 * (port - PM_TMR))) as u8,
            _ => 0xFF,
        }
    }

    /// Returns true when the write powers the machine off.
    fn write8(&mut self, port: u16, v: u8) -> bool {
        let shift = 8 * (port & 1);
        let bits = (v as u16) << shift;
        let mask = 0xFFu16 << shift;
        match port {
            0x600 | 0x601 => self.sts &= !bits, // write 1 to clear
            0x602 | 0x603 => self.en = (self.en & !mask) | (bits & 0x0721),
            0x604 | 0x605 => {
                // SCI_EN stays set; GBL_RLS and SLP_EN are write-only.
                self.cnt = ((self.cnt & !mask) | (bits & 0x1C02)) | SCI_EN;
                if bits & SLP_EN != 0 {
                    let slp_typ = ((self.cnt >> 10) & 7) as u8;
                    if slp_typ == SLP_TYP_S5 {
                        return true;
                    }
                    // An unsupported sleep state: the machine stays awake
                    // and reports the wake at once.
                    self.sts |= WAK_STS;
                }
            }
            _ => {}
        }
        false
    }

    /// `IN` of `size` bytes at TSC `tsc`.
    pub fn read(&mut self, port: u16, size: u8, tsc: u64) -> u32 {
        self.advance(tsc);
        if port == PM_TMR && size == 4 {
            return self.timer(tsc);
        }
        (0..size as u16).fold(0, |acc, i| acc | (self.read8(port + i, tsc) as u32) << (8 * i))
    }

    /// `OUT` of `size` bytes; true when the write powers the machine off (S5).
    pub fn write(&mut self, port: u16, size: u8, value: u32, tsc: u64) -> bool {
        self.advance(tsc);
        let mut off = false;
        for i in 0..size as u16 {
            off |= self.write8(port + i, (value >> (8 * i)) as u8);
        }
        off
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HZ: u64 = 50_000_000;

    #[test]
    fn pm_timer_runs_at_3_579545_mhz() {
        let mut pm = PmBlock::new(HZ);
        let a = pm.read(PM_TMR, 4, 1_000_000);
        let b = pm.read(PM_TMR, 4, 1_000_000 + HZ);
        assert_eq!(b.wrapping_sub(a) as u64, PM_TIMER_HZ);
        // Byte reads compose the same value.
        let lo = pm.read(PM_TMR, 2, HZ);
        let hi = pm.read(PM_TMR + 2, 2, HZ);
        assert_eq!(lo | hi << 16, pm.read(PM_TMR, 4, HZ));
    }

    #[test]
    fn s5_powers_off_and_other_sleep_types_do_not() {
        let mut pm = PmBlock::new(HZ);
        assert_eq!(pm.read(PM1A_CNT, 2, 0) & 1, 1, "SCI_EN set: always ACPI mode");
        assert!(!pm.write(PM1A_CNT, 2, 5 << 10 | 1, 0), "SLP_TYP alone does nothing");
        assert!(!pm.write(PM1A_CNT, 2, 3 << 10 | SLP_EN as u32, 0), "S3 is not offered");
        assert_ne!(pm.read(PM1A_EVT, 2, 0) & WAK_STS as u32, 0);
        assert!(pm.write(PM1A_CNT, 2, 5 << 10 | SLP_EN as u32, 0));
        assert_eq!(pm.read(PM1A_CNT, 2, 0) & SLP_EN as u32, 0, "SLP_EN reads 0");
    }

    #[test]
    fn power_button_sci_and_write_one_to_clear() {
        let mut pm = PmBlock::new(HZ);
        pm.press_power_button();
        assert!(!pm.sci_line(), "not enabled");
        pm.write(PM1A_EVT + 2, 2, PWRBTN_STS as u32, 0);
        assert!(pm.sci_line());
        pm.write(PM1A_EVT, 2, 0, 0);
        assert!(pm.sci_line(), "writing 0 clears nothing");
        pm.write(PM1A_EVT, 2, PWRBTN_STS as u32, 0);
        assert!(!pm.sci_line());
    }

    #[test]
    fn timer_overflow_status() {
        let mut pm = PmBlock::new(HZ);
        pm.write(PM1A_EVT + 2, 2, TMR_STS as u32, 0);
        let d = pm.next_deadline_tsc().unwrap();
        assert_eq!(tsc_to_ticks(d, HZ, PM_TIMER_HZ), 1 << 31);
        pm.advance(d - 100);
        assert!(!pm.sci_line());
        pm.advance(d);
        assert!(pm.sci_line());
    }
}
