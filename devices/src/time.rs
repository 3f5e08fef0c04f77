//! One time source: the L1's TSC. Every device clock (PIT 1.193182 MHz, ACPI PM
//! timer 3.579545 MHz, the local APIC timer's bus clock, the RTC's seconds) is
//! derived from it by exact integer scaling, so an L1 that calibrates one clock
//! against another finds the true ratio.

/// The 8254's input clock (PC: 14.31818 MHz / 12).
pub const PIT_HZ: u64 = 1_193_182;
/// The ACPI PM timer's clock (ACPI 6.5, 4.8.2.1: 3.579545 MHz).
pub const PM_TIMER_HZ: u64 = 3_579_545;

/// Whole ticks of a `hz` clock elapsed at TSC value `tsc` (rounded down).
pub fn tsc_to_ticks(tsc: u64, tsc_hz: u64, hz: u64) -> u64 {
    let t = tsc as u128 * hz as u128 / tsc_hz.max(1) as u128;
    t.min(u64::MAX as u128) as u64
}

/// The first TSC value at which `ticks` ticks of a `hz` clock have elapsed
/// (rounded up, so `tsc_to_ticks(ticks_to_tsc(n)) >= n`).
pub fn ticks_to_tsc(ticks: u64, tsc_hz: u64, hz: u64) -> u64 {
    let hz = hz.max(1) as u128;
    let t = (ticks as u128 * tsc_hz as u128).div_ceil(hz);
    t.min(u64::MAX as u128) as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_never_early() {
        for tsc_hz in [50_000_000u64, 2_400_000_000, 1_000_000] {
            for n in [0u64, 1, 17, 65_536, 1_193_181, 123_456_789] {
                let tsc = ticks_to_tsc(n, tsc_hz, PIT_HZ);
                assert!(tsc_to_ticks(tsc, tsc_hz, PIT_HZ) >= n);
                if tsc > 0 {
                    assert!(tsc_to_ticks(tsc - 1, tsc_hz, PIT_HZ) < n);
                }
            }
        }
    }

    #[test]
    fn one_second_is_one_second() {
        assert_eq!(tsc_to_ticks(50_000_000, 50_000_000, PIT_HZ), PIT_HZ);
        assert_eq!(tsc_to_ticks(50_000_000, 50_000_000, PM_TIMER_HZ), PM_TIMER_HZ);
    }
}
