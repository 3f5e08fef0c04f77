//! `workload=pio`: what a port read costs this L1, per device, and Linux's
//! two PIT-only TSC calibrations run the way Linux runs them (v6.1
//! `arch/x86/kernel/tsc.c`: `quick_pit_calibrate` with `pit_expect_msb`,
//! and `pit_calibrate_tsc`'s loop on port 0x61), each with Linux's verdict.
//!
//! Bare on Bochs a read is one instruction (Bochs' TSC counts retired
//! instructions); under nvmx it is a VM exit, and the TSC ticks per read
//! are L0's whole path for it (exit, handling, the vCPU loop, entry) plus
//! the loop's own few instructions. The figures are not compared bare vs
//! nested; the calibration verdicts are what Linux would conclude on this
//! PC at this speed (the PIT runs in the L1's time, 1.193182 MHz).

use core::fmt::Write;

use crate::console::Console;
use crate::platform::{find_table, inb, inl, outb, phys, rdtsc, rsdp_scan};

/// The 8254's clock (Linux's PIT_TICK_RATE).
const PIT_TICK_RATE: u64 = 1_193_182;
/// Reads timed per port.
const READS: u64 = 1000;

/// Per-read TSC ticks of `READS` reads with an RDTSC after each, as Linux's
/// loops do: (min, average, max).
fn time(read: impl Fn() -> u32) -> (u64, u64, u64) {
    let (mut min, mut max) = (u64::MAX, 0);
    let t0 = rdtsc();
    let mut prev = t0;
    for _ in 0..READS {
        core::hint::black_box(read());
        let t = rdtsc();
        min = min.min(t - prev);
        max = max.max(t - prev);
        prev = t;
    }
    (min, (prev - t0) / READS, max)
}

/// Gate of PIT counter 2 high, speaker off; counter 2 in mode 0 counting
/// down from `latch` (what both of Linux's calibrations do first).
fn start_counter2(latch: u16) {
    outb(0x61, (inb(0x61) & !0x02) | 0x01);
    outb(0x43, 0xB0);
    outb(0x42, latch as u8);
    outb(0x42, (latch >> 8) as u8);
}

/// Linux's `pit_verify_msb`: the LSB ignored, the MSB compared.
fn pit_verify_msb(val: u8) -> bool {
    inb(0x42);
    inb(0x42) == val
}

/// Linux's `pit_expect_msb`: (more than 5 reads saw `val`, TSC of the last
/// one, TSC from the one before it to after the first mismatch).
fn pit_expect_msb(val: u8) -> (bool, u64, u64) {
    let (mut tsc, mut prev) = (0, 0);
    let mut count = 0;
    while count < 50_000 {
        if !pit_verify_msb(val) {
            break;
        }
        prev = tsc;
        tsc = rdtsc();
        count += 1;
    }
    (count > 5, tsc, rdtsc() - prev)
}

/// Linux's `quick_pit_calibrate`: Ok(kHz, MSB steps) or why it gave up
/// (`silent`: Linux's early return, which prints nothing); with d1 + d2 of
/// the first step and the bound Linux holds it to there.
fn quick_pit_calibrate() -> (Result<(u64, u64), (&'static str, u64)>, u64, u64) {
    let mut first = (0, 0);
    let r = quick_pit_calibrate_inner(&mut first);
    (r, first.0, first.1)
}

fn quick_pit_calibrate_inner(first: &mut (u64, u64)) -> Result<(u64, u64), (&'static str, u64)> {
    const MAX_QUICK_PIT_ITERATIONS: u64 = 50 * PIT_TICK_RATE / 1000 / 256;
    start_counter2(0xFFFF);
    pit_verify_msb(0);
    let (ok, tsc, d1) = pit_expect_msb(0xFF);
    if !ok {
        return Err(("no MSB 0xff seen 6 times", 0));
    }
    for i in 1..=MAX_QUICK_PIT_ITERATIONS {
        let (ok, t, d2) = pit_expect_msb(0xFF - i as u8);
        if !ok {
            return Err(("an MSB seen fewer than 6 times: Fast TSC calibration failed", i));
        }
        let delta = t - tsc;
        if i == 1 {
            *first = (d1 + d2, (delta * MAX_QUICK_PIT_ITERATIONS) >> 11);
        }
        if i == 1 && d1 + d2 >= (delta * MAX_QUICK_PIT_ITERATIONS) >> 11 {
            return Err(("error above 500 ppm at the first step (silent)", i));
        }
        if d1 + d2 >= delta >> 11 {
            continue;
        }
        if !pit_verify_msb(0xFE - i as u8) {
            return Err(("the MSB moved during the last check: Fast TSC calibration failed", i));
        }
        return Ok((delta * PIT_TICK_RATE / (i * 256 * 1000), i));
    }
    Err(("error still above 500 ppm after 50 ms: Fast TSC calibration failed", MAX_QUICK_PIT_ITERATIONS))
}

/// Linux's `pit_calibrate_tsc(latch, ms, loopmin)`: (kHz or None, loops,
/// tscmin, tscmax).
fn pit_calibrate_tsc(latch: u16, ms: u64, loopmin: u64) -> (Option<u64>, u64, u64, u64) {
    start_counter2(latch);
    let t1 = rdtsc();
    let (mut tsc, mut t2) = (t1, t1);
    let (mut pitcnt, mut tscmin, mut tscmax) = (0, u64::MAX, 0);
    while inb(0x61) & 0x20 == 0 {
        t2 = rdtsc();
        let delta = t2 - tsc;
        tsc = t2;
        tscmin = tscmin.min(delta);
        tscmax = tscmax.max(delta);
        pitcnt += 1;
    }
    let ok = pitcnt >= loopmin && tscmax <= 10 * tscmin;
    (ok.then(|| (t2 - t1) / ms), pitcnt, tscmin, tscmax)
}

/// The PM timer port from the FADT (0 when there is none).
fn pm_timer_port() -> u16 {
    rsdp_scan().and_then(|r| find_table(r, b"FACP")).map_or(0, |f| phys::<u32>(f + 76) as u16)
}

pub fn run() {
    let mut out = Console;
    // SAFETY: masking interrupts is always safe; Linux calibrates with
    // interrupts off too.
    unsafe { core::arch::asm!("cli", options(nomem, nostack)) };
    let _ = writeln!(out, "l1: pio: TSC ticks per port read, {READS} reads each with an RDTSC after each (min/avg/max)");
    // As when Linux calibrates (tsc_init after the timer's set-up): PIT
    // counter 0 periodic at HZ 250 (mode 2) with IRQ0 unmasked at the
    // 8259A, interrupts off — so IRQ0 is pending for most of the run.
    let imr = inb(0x21);
    outb(0x43, 0x34);
    let hz250 = (PIT_TICK_RATE + 125) / 250;
    outb(0x40, hz250 as u8);
    outb(0x40, (hz250 >> 8) as u8);
    outb(0x21, imr & !1);
    start_counter2(0xFFFF);
    outb(0x70, 0x0A);
    let pm = pm_timer_port();
    let ports: [(&str, u16, bool); 6] = [
        ("pit counter 2", 0x42, false),
        ("nmi sc (pit gate/out2)", 0x61, false),
        ("pic imr", 0x21, false),
        ("com1 lsr", 0x3FD, false),
        ("cmos data", 0x71, false),
        ("pm timer", pm, true),
    ];
    for (name, port, wide) in ports {
        if port == 0 {
            let _ = writeln!(out, "l1: pio read {name}: absent");
            continue;
        }
        let (min, avg, max) = if wide { time(|| inl(port)) } else { time(|| u32::from(inb(port))) };
        let _ = writeln!(out, "l1: pio read {name} port {port:#x}: {min} / {avg} / {max} ticks");
    }
    let (r, d, bound) = quick_pit_calibrate();
    match r {
        Ok((khz, steps)) => {
            let _ = writeln!(out, "l1: pio linux quick_pit_calibrate: ok, {khz} kHz after {steps} MSB steps (step 1: d1+d2 {d}, bound {bound})");
        }
        Err((why, steps)) => {
            let _ = writeln!(out, "l1: pio linux quick_pit_calibrate: failed at MSB step {steps}: {why} (step 1: d1+d2 {d}, bound {bound})");
        }
    }
    // CAL_LATCH, CAL_MS, CAL_PIT_LOOPS: three tries, the lowest result.
    let mut best: Option<u64> = None;
    for i in 0..3 {
        let (khz, loops, min, max) = pit_calibrate_tsc((PIT_TICK_RATE / 100) as u16, 10, 1000);
        let verdict = match khz {
            Some(k) => Verdict("ok,", k),
            None if loops < 1000 => Verdict("failed: fewer than 1000 loops", 0),
            None => Verdict("failed: tscmax > 10 x tscmin", 0),
        };
        let _ = writeln!(out, "l1: pio linux pit_calibrate_tsc try {i}: {loops} loops in 10 ms (>= 1000), tscmin {min} tscmax {max} (<= 10 x tscmin): {}", verdict);
        if let Some(k) = khz {
            best = Some(best.map_or(k, |b| b.min(k)));
        }
    }
    // Counter 0 stopped (mode 0 waiting for a count), IRQ0 as it was.
    outb(0x43, 0x30);
    outb(0x21, imr);
    match best {
        Some(k) => {
            let _ = writeln!(out, "l1: pio linux pit-only calibration: pass ({k} kHz)");
        }
        None => {
            let _ = writeln!(out, "l1: pio linux pit-only calibration: FAIL (Unable to calibrate against PIT)");
        }
    }
}

/// A calibration try's verdict for printing.
struct Verdict(&'static str, u64);

impl core::fmt::Display for Verdict {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        if self.1 != 0 { write!(f, "{} {} kHz", self.0, self.1) } else { f.write_str(self.0) }
    }
}
