//! `top`: the live view of exit rates, like Linux's `kvm_stat`. It runs from
//! the shell's poll loop on the boot core, which also runs that core's L1, so
//! it never blocks: each poll checks whether a second has passed, and if so
//! takes a copy of every shown core's counters and draws a frame
//! (`nvmx_shell::report::top`) over the previous one.

use alloc::string::String;
use alloc::vec::Vec;
use core::sync::atomic::{AtomicU64, Ordering};

use nvmx_shell::report::{StatRow, TopCore};
use spin::Mutex;

use crate::l1::{self, L1State};

/// A running view.
struct Top {
    cpus: core::ops::Range<usize>,
    /// Frames drawn so far.
    frame: u64,
    /// TSC and counters at the last frame.
    last_tsc: u64,
    last: Vec<Vec<StatRow<'static>>>,
}

static TOP: Mutex<Option<Top>> = Mutex::new(None);

/// TSC ticks per second, measured once against the PIT.
static TSC_HZ: AtomicU64 = AtomicU64::new(0);

/// TSC ticks per (emulated, in Bochs) second. Bochs' TSC counts
/// instructions and its PIT runs on the same virtual clock, so the ratio
/// holds there as on hardware with an invariant TSC.
fn tsc_hz() -> u64 {
    let hz = TSC_HZ.load(Ordering::Relaxed);
    if hz != 0 {
        return hz;
    }
    let t0 = crate::arch::cpu::rdtsc();
    crate::time::delay_us(20_000);
    let hz = (crate::arch::cpu::rdtsc() - t0).saturating_mul(50).max(1);
    TSC_HZ.store(hz, Ordering::Relaxed);
    hz
}

fn snapshot(cpus: core::ops::Range<usize>) -> Vec<Vec<StatRow<'static>>> {
    cpus.map(|cpu| crate::stats_view::rows(&l1::shared(cpu).stats)).collect()
}

/// Starts the view: clears the terminal and says what comes; the first
/// frame follows a second later.
pub fn start(cpus: core::ops::Range<usize>, out: &mut String) {
    tsc_hz(); // calibrated before the first interval starts
    let last = snapshot(cpus.clone());
    *TOP.lock() = Some(Top { cpus, frame: 0, last_tsc: crate::arch::cpu::rdtsc(), last });
    out.push_str("\x1b[H\x1b[2Jnvmx top: measuring the first second; any key ends it\x1b[K\n");
}

/// True while the view runs (the shell then gives keys to [`stop`]).
pub fn active() -> bool {
    TOP.lock().is_some()
}

/// Ends the view; the shell prints its prompt below the last frame.
pub fn stop() {
    *TOP.lock() = None;
}

/// Draws a frame when a second has passed since the last one.
pub fn step() {
    let mut guard = TOP.lock();
    let Some(top) = guard.as_mut() else { return };
    let hz = tsc_hz();
    let now_tsc = crate::arch::cpu::rdtsc();
    let elapsed = now_tsc.saturating_sub(top.last_tsc);
    if elapsed < hz {
        return;
    }
    let now = snapshot(top.cpus.clone());
    let states: Vec<String> = top
        .cpus
        .clone()
        .map(|cpu| match &*l1::shared(cpu).state.lock() {
            L1State::NotStarted => String::from("not started"),
            L1State::Running => String::from("running"),
            L1State::Halted => String::from("halted"),
            L1State::PoweredOff => String::from("powered off"),
            L1State::Restarting => String::from("restarting"),
            L1State::Exited(_) => String::from("exited"),
            L1State::Stopped(_) => String::from("stopped"),
        })
        .collect();
    let cores: Vec<TopCore> = top
        .cpus
        .clone()
        .enumerate()
        .map(|(i, cpu)| TopCore { cpu, state: &states[i], prev: &top.last[i], now: &now[i] })
        .collect();
    top.frame += 1;
    let mut text = String::from("\x1b[H");
    text.push_str(&nvmx_shell::report::top(top.frame, &cores, elapsed, hz));
    drop(cores);
    top.last = now;
    top.last_tsc = now_tsc;
    drop(guard);
    crate::console::exclusive(|_| crate::console::write_bytes(text.as_bytes()));
}
