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

/// Where L0's time goes while it handles exits, for `bench`'s breakdown.
/// Each cycle is charged to exactly one phase (the innermost one running),
/// so the phases add up to L0's whole path.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Phase {
    /// Reading the exit, decoding it, dispatching, emulating the VMX
    /// instruction itself: everything not in a more specific phase.
    Decode = 0,
    /// The VM-entry checks of a nested VMLAUNCH/VMRESUME (controls, host
    /// state, guest state).
    Checks,
    /// prepare_vmcs02 (VMCS0-2 from vmcs12, controls merged).
    Prepare,
    /// Shadow VMCS ↔ vmcs12 cache.
    ShadowSync,
    /// sync_vmcs02_to_vmcs12 of a reflected exit.
    Reflect,
    /// load_vmcs12_host_state into VMCS0-1.
    HostLoad,
    /// VMPTRLD of L0's own VMCSs (VMCS0-1, VMCS0-2, the shadow VMCS).
    VmcsSwitch,
    /// Counting the exit (these counters, the trace ring).
    Record,
    /// The L1's PC before an entry: time advanced, console bytes moved,
    /// power events polled, interrupts and NMIs injected into L1.
    Platform,
    /// The L2 event check before an entry of VMCS0-2 (L1's interrupts and
    /// NMIs while L2 runs: into L2, or an exit to L1).
    Events,
    /// Between the end of one exit's handling and the next VM entry: the
    /// vCPU loop, the shell's poll on the boot core, mailbox, entry set-up.
    Loop,
}

/// Number of [`Phase`]s.
pub const PHASES: usize = 11;
/// The phases' names in `bench`, by their number.
pub const PHASE_NAMES: [&str; PHASES] =
    ["decode+emulate", "checks", "prepare_vmcs02", "shadow sync", "sync to vmcs12", "host-state load", "VMCS switches", "counting", "platform", "L2 event check", "loop+entry"];

/// Slow paths L0 takes on nested entries and exits, counted for `bench`
/// (how often the fast paths were left, and why the figures are what they are).
#[derive(Clone, Copy, Debug)]
#[repr(u8)]
pub enum Slow {
    /// A nested VM entry ran every check (not only the volatile ones).
    FullChecks = 0,
    /// prepare_vmcs02 rebuilt VMCS0-2's controls (prepare_vmcs02_rare).
    Rebuild,
    /// The rare guest fields were copied from VMCS0-2 to vmcs12.
    RareSync,
    /// The shadow VMCS was loaded to copy fields into or out of it.
    ShadowLoad,
    /// A full pass over the L1's PC before an entry (not quiet).
    PlatformPass,
}

/// Number of [`Slow`] paths.
pub const SLOWS: usize = 5;
/// Their names in `bench`.
pub const SLOW_NAMES: [&str; SLOWS] = ["entries with every check", "prepare_vmcs02_rare", "rare guest-field syncs", "shadow VMCS loads", "full platform passes"];

/// Slots of [`FieldCounts`]: one per field of the field table, in its order,
/// and a last one for operands that name no field.
pub const FIELD_SLOTS: usize = nvmx_vmx::field::COUNT + 1;
/// The slot of operands that name no field (VMfailValid(12) or VMfailInvalid).
pub const NOT_A_FIELD: usize = nvmx_vmx::field::COUNT;

/// Emulated VMREAD/VMWRITE exits per field and how many did not succeed
/// (VMfailInvalid, VMfailValid, a fault on the memory operand): the seed
/// thread's "VMREAD to non-existing field" diagnosis. Only the core itself
/// counts (load + store, no locked instruction); the shell reads.
pub struct FieldCounts {
    pub reads: [AtomicU64; FIELD_SLOTS],
    pub writes: [AtomicU64; FIELD_SLOTS],
    pub read_fails: [AtomicU64; FIELD_SLOTS],
    pub write_fails: [AtomicU64; FIELD_SLOTS],
    /// The last operand that named no field (its value), for the diagnosis.
    pub last_not_a_field: AtomicU64,
}

#[inline(always)]
fn bump(c: &AtomicU64) {
    c.store(c.load(Relaxed) + 1, Relaxed);
}

impl FieldCounts {
    const fn new() -> Self {
        FieldCounts {
            reads: [const { AtomicU64::new(0) }; FIELD_SLOTS],
            writes: [const { AtomicU64::new(0) }; FIELD_SLOTS],
            read_fails: [const { AtomicU64::new(0) }; FIELD_SLOTS],
            write_fails: [const { AtomicU64::new(0) }; FIELD_SLOTS],
            last_not_a_field: AtomicU64::new(0),
        }
    }

    fn reset(&self) {
        for t in [&self.reads, &self.writes, &self.read_fails, &self.write_fails] {
            t.iter().for_each(|c| c.store(0, Relaxed));
        }
        self.last_not_a_field.store(0, Relaxed);
    }
}

/// One core's counters.
pub struct CpuStats {
    pub l1: [ReasonStats; REASONS],
    pub l2_l0: [ReasonStats; REASONS],
    pub l2_reflected: [ReasonStats; REASONS],
    /// TSC when counting (re)started.
    pub since: AtomicU64,
    /// L0 cycles between the end of an exit's handling (its count) and the
    /// next VM entry: the part of L0's path the per-reason cycles miss.
    pub loop_cycles: AtomicU64,
    /// L0 cycles per [`Phase`] (only while profiling: `profile`).
    pub phases: [AtomicU64; PHASES],
    /// Phase switches counted while profiling (what the profile costs).
    pub phase_switches: AtomicU64,
    /// Profile the next L1 run of this core (set by `bench`).
    pub profile: core::sync::atomic::AtomicBool,
    /// The L1 closed its measurement window (`bench`): nothing more is
    /// counted until the next reset; TSC of the close.
    pub window_end: AtomicU64,
    /// How often each [`Slow`] path ran.
    pub slow: [AtomicU64; SLOWS],
    /// Emulated VMREAD/VMWRITE exits per field.
    pub fields: FieldCounts,
}

impl CpuStats {
    pub const fn new() -> Self {
        CpuStats {
            l1: [const { ReasonStats::new() }; REASONS],
            l2_l0: [const { ReasonStats::new() }; REASONS],
            l2_reflected: [const { ReasonStats::new() }; REASONS],
            since: AtomicU64::new(0),
            loop_cycles: AtomicU64::new(0),
            phases: [const { AtomicU64::new(0) }; PHASES],
            phase_switches: AtomicU64::new(0),
            profile: core::sync::atomic::AtomicBool::new(false),
            window_end: AtomicU64::new(0),
            slow: [const { AtomicU64::new(0) }; SLOWS],
            fields: FieldCounts::new(),
        }
    }

    pub fn table(&self, level: Level) -> &[ReasonStats; REASONS] {
        match level {
            Level::L1 => &self.l1,
            Level::L2InL0 => &self.l2_l0,
            Level::L2Reflected => &self.l2_reflected,
        }
    }

    /// Counts one run of a slow path.
    #[inline]
    pub fn slow(&self, which: Slow) {
        // Inside the window only, as the exits (the L1's final printing
        // after it takes slow paths of its own).
        if self.window_end.load(Relaxed) != 0 {
            return;
        }
        bump(&self.slow[which as usize]);
    }

    /// Counts one exit of `reason` that took `cycles` in L0.
    pub fn record(&self, level: Level, reason: u16, completed: bool, cycles: u64) {
        if self.window_end.load(Relaxed) != 0 {
            return;
        }
        let Some(s) = self.table(level).get(usize::from(reason)) else { return };
        s.exits.fetch_add(1, Relaxed);
        if completed {
            s.completed.fetch_add(1, Relaxed);
        }
        s.cycles.fetch_add(cycles, Relaxed);
        // Only this core writes its counters (a reset aside): compare first
        // instead of a compare-exchange loop on every exit.
        if cycles < s.min.load(Relaxed) {
            s.min.store(cycles, Relaxed);
        }
        if cycles > s.max.load(Relaxed) {
            s.max.store(cycles, Relaxed);
        }
    }

    /// Counts one emulated VMREAD (`write` false) or VMWRITE of field slot
    /// `slot` (`NOT_A_FIELD` with the operand `enc`), `ok` if it succeeded.
    #[inline]
    pub fn field(&self, slot: usize, enc: u64, write: bool, ok: bool) {
        if self.window_end.load(Relaxed) != 0 {
            return;
        }
        let f = &self.fields;
        bump(if write { &f.writes[slot] } else { &f.reads[slot] });
        if !ok {
            bump(if write { &f.write_fails[slot] } else { &f.read_fails[slot] });
        }
        if slot == NOT_A_FIELD {
            f.last_not_a_field.store(enc, Relaxed);
        }
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
        self.loop_cycles.store(0, Relaxed);
        for p in &self.phases {
            p.store(0, Relaxed);
        }
        self.phase_switches.store(0, Relaxed);
        self.window_end.store(0, Relaxed);
        for c in &self.slow {
            c.store(0, Relaxed);
        }
        self.fields.reset();
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

/// A core's phase profiler: charges the TSC cycles since the last switch to
/// the phase that ran, then runs `to`. Off (one load and branch per switch)
/// unless `bench` asked for a profiled run. Lives with the vCPU on its core.
pub struct Profiler {
    pub on: bool,
    cur: core::cell::Cell<Phase>,
    mark: core::cell::Cell<u64>,
    stats: &'static CpuStats,
}

impl Profiler {
    pub fn new(stats: &'static CpuStats) -> Self {
        Profiler { on: stats.profile.load(Relaxed), cur: core::cell::Cell::new(Phase::Loop), mark: core::cell::Cell::new(0), stats }
    }

    /// Switches to phase `to`; returns the phase that ran, for [`Profiler::leave`].
    #[inline(always)]
    pub fn enter(&self, to: Phase) -> Phase {
        if !self.on {
            return to;
        }
        self.switch(to)
    }

    /// Back to `prev` (what [`Profiler::enter`] returned).
    #[inline(always)]
    pub fn leave(&self, prev: Phase) {
        if self.on {
            self.switch(prev);
        }
    }

    /// A VM exit just happened at TSC `now`: from here on it is `Decode`.
    #[inline(always)]
    pub fn exited(&self, now: u64) {
        if self.on {
            self.cur.set(Phase::Decode);
            self.mark.set(now);
        }
    }

    /// The next VM entry is about to happen: charge what ran since (the
    /// first entry has nothing before it to charge).
    #[inline(always)]
    pub fn entering(&self) {
        if self.on && self.mark.get() != 0 {
            self.switch(Phase::Loop);
        }
    }

    #[inline(never)]
    fn switch(&self, to: Phase) -> Phase {
        let now = crate::arch::cpu::rdtsc();
        let prev = self.cur.replace(to);
        // Nothing to charge before the first exit.
        if self.mark.get() != 0 {
            self.stats.phases[prev as usize].fetch_add(now - self.mark.get(), Relaxed);
        }
        self.stats.phase_switches.fetch_add(1, Relaxed);
        self.mark.set(now);
        prev
    }
}
