//! Per-core exit counters, the seed thread's two numbers per exit reason —
//! exits, and exits completed successfully — plus the TSC cycles L0 spent
//! handling them (sum, min, max). Atomics, so the shell can read another
//! core's counters while that core keeps counting.

use core::sync::atomic::{AtomicU64, Ordering::Relaxed};

/// Basic exit reasons counted (0..=79, SDM Appendix C).
pub const REASONS: usize = 80;

/// Counters of one exit reason.
pub struct ReasonStats {
    pub exits: AtomicU64,
    pub completed: AtomicU64,
    pub cycles: AtomicU64,
    pub min: AtomicU64,
    pub max: AtomicU64,
}

impl ReasonStats {
    const fn new() -> Self {
        ReasonStats {
            exits: AtomicU64::new(0),
            completed: AtomicU64::new(0),
            cycles: AtomicU64::new(0),
            min: AtomicU64::new(u64::MAX),
            max: AtomicU64::new(0),
        }
    }
}

/// Which level an exit came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Level {
    /// L1 itself exited.
    L1,
    /// L2 exited and L0 handled it.
    L2InL0,
    /// L2 exited and L0 reflected it to L1.
    L2Reflected,
}

/// One core's counters.
pub struct CpuStats {
    pub l1: [ReasonStats; REASONS],
    pub l2_l0: [ReasonStats; REASONS],
    pub l2_reflected: [ReasonStats; REASONS],
    /// TSC when counting (re)started.
    pub since: AtomicU64,
}

impl CpuStats {
    pub const fn new() -> Self {
        CpuStats {
            l1: [const { ReasonStats::new() }; REASONS],
            l2_l0: [const { ReasonStats::new() }; REASONS],
            l2_reflected: [const { ReasonStats::new() }; REASONS],
            since: AtomicU64::new(0),
        }
    }

    pub fn table(&self, level: Level) -> &[ReasonStats; REASONS] {
        match level {
            Level::L1 => &self.l1,
            Level::L2InL0 => &self.l2_l0,
            Level::L2Reflected => &self.l2_reflected,
        }
    }

    /// Counts one exit of `reason` that took `cycles` in L0.
    pub fn record(&self, level: Level, reason: u16, completed: bool, cycles: u64) {
        let Some(s) = self.table(level).get(usize::from(reason)) else { return };
        s.exits.fetch_add(1, Relaxed);
        if completed {
            s.completed.fetch_add(1, Relaxed);
        }
        s.cycles.fetch_add(cycles, Relaxed);
        s.min.fetch_min(cycles, Relaxed);
        s.max.fetch_max(cycles, Relaxed);
    }

    /// Zeroes everything and restarts the clock.
    pub fn reset(&self) {
        for table in [&self.l1, &self.l2_l0, &self.l2_reflected] {
            for s in table {
                s.exits.store(0, Relaxed);
                s.completed.store(0, Relaxed);
                s.cycles.store(0, Relaxed);
                s.min.store(u64::MAX, Relaxed);
                s.max.store(0, Relaxed);
            }
        }
        self.since.store(crate::arch::cpu::rdtsc(), Relaxed);
    }

    /// Sum of exits and L0 cycles over all reasons and levels.
    pub fn totals(&self) -> (u64, u64) {
        let mut exits = 0;
        let mut cycles = 0;
        for table in [&self.l1, &self.l2_l0, &self.l2_reflected] {
            for s in table {
                exits += s.exits.load(Relaxed);
                cycles += s.cycles.load(Relaxed);
            }
        }
        (exits, cycles)
    }
}

impl Default for CpuStats {
    fn default() -> Self {
        Self::new()
    }
}
