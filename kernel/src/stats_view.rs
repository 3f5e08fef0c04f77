//! Gathers a core's counters for `stats`; the layout is `nvmx_shell::report`.

use alloc::string::String;
use alloc::vec::Vec;
use core::sync::atomic::Ordering::Relaxed;

use nvmx_shell::report::{self, StatRow};

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
    report::stats(cpu, &rows(stats), now.saturating_sub(stats.since.load(Relaxed)), csv)
}

/// A copy of a core's counters, every reason of every level.
pub fn rows(stats: &CpuStats) -> Vec<StatRow<'static>> {
    let mut rows = Vec::new();
    for level in [Level::L1, Level::L2InL0, Level::L2Reflected] {
        for reason in 0..REASONS {
            let s = &stats.table(level)[reason];
            rows.push(StatRow {
                from: level_name(level),
                reason: reason as u16,
                name: nvmx_vmx::exit::exit_reason_mnemonic(reason as u16),
                exits: s.exits.load(Relaxed),
                completed: s.completed.load(Relaxed),
                cycles: s.cycles.load(Relaxed),
                min: s.min.load(Relaxed),
                max: s.max.load(Relaxed),
            });
        }
    }
    rows
}
