//! Rendering a core's counters for `stats`: only reasons that occurred, in
//! the seed thread's spirit (`vmexit 23 vmread 0x6812BA3 times`) with decimal
//! and hex, completions, L0 cycles, totals and L0's share of the core.

use alloc::string::String;
use core::fmt::Write;
use core::sync::atomic::Ordering::Relaxed;

use nvmx_shell::format::{Table, hex, percent};

use crate::stats::{CpuStats, Level, REASONS};

fn level_name(level: Level) -> &'static str {
    match level {
        Level::L1 => "L1",
        Level::L2InL0 => "L2 (L0)",
        Level::L2Reflected => "L2 (to L1)",
    }
}

/// The `stats` output of one core; `now` is the current TSC.
pub fn render(cpu: usize, stats: &CpuStats, now: u64, csv: bool) -> String {
    let mut t = Table::new(&["cpu", "from", "vmexit", "name", "times (hex)", "times", "completed", "L0 cycles", "min", "avg", "max"]);
    let (mut exits_total, mut completed_total, mut cycles_total) = (0u64, 0u64, 0u64);
    for level in [Level::L1, Level::L2InL0, Level::L2Reflected] {
        for reason in 0..REASONS {
            let s = &stats.table(level)[reason];
            let exits = s.exits.load(Relaxed);
            if exits == 0 {
                continue;
            }
            let completed = s.completed.load(Relaxed);
            let cycles = s.cycles.load(Relaxed);
            exits_total += exits;
            completed_total += completed;
            cycles_total += cycles;
            t.row(&[
                &alloc::format!("{cpu}"),
                level_name(level),
                &alloc::format!("{reason}"),
                nvmx_vmx::exit::exit_reason_mnemonic(reason as u16),
                &hex(exits),
                &alloc::format!("{exits}"),
                &alloc::format!("{completed}"),
                &alloc::format!("{cycles}"),
                &alloc::format!("{}", s.min.load(Relaxed)),
                &alloc::format!("{}", cycles / exits),
                &alloc::format!("{}", s.max.load(Relaxed)),
            ]);
        }
    }
    if csv {
        return t.render_csv();
    }
    let elapsed = now.saturating_sub(stats.since.load(Relaxed)).max(1);
    let mut out = String::new();
    let _ = writeln!(out, "cpu {cpu}:");
    if exits_total == 0 {
        let _ = writeln!(out, "  no exits counted");
        return out;
    }
    out.push_str(&t.render());
    let _ = writeln!(
        out,
        "total: {exits_total} exits ({}), {completed_total} completed, {cycles_total} L0 cycles; \
         L0 share {} of {elapsed} tsc",
        hex(exits_total),
        percent(cycles_total, elapsed)
    );
    out
}
