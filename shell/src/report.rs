//! The hypervisor reports the shell prints — exit counters and VMCS dumps —
//! as pure functions of the figures, so their layout is host-tested. The
//! kernel gathers the figures (atomics, VMREADs) and calls these.

use alloc::string::String;
use core::fmt::Write;

use crate::format::{Table, hex, percent};

/// One exit reason's counters on one core.
#[derive(Clone, Copy, Debug)]
pub struct StatRow<'a> {
    /// Where the exit came from: `L1`, `L2 (L0)` (handled by L0) or `L2 (to L1)` (reflected).
    pub from: &'a str,
    pub reason: u16,
    pub name: &'a str,
    pub exits: u64,
    /// Exits whose handling succeeded (for VMX instructions: the emulated
    /// instruction succeeded).
    pub completed: u64,
    /// TSC cycles L0 spent on these exits: sum, min, max.
    pub cycles: u64,
    pub min: u64,
    pub max: u64,
}

/// The `stats` report of core `cpu`: rows with exits only, the seed thread's
/// hex count next to the decimal one, totals and L0's share of `elapsed` TSC
/// cycles; or the same rows as CSV.
pub fn stats(cpu: usize, rows: &[StatRow], elapsed: u64, csv: bool) -> String {
    let mut t = Table::new(&["cpu", "from", "vmexit", "name", "times (hex)", "times", "completed", "L0 cycles", "min", "avg", "max"]);
    let (mut exits, mut completed, mut cycles) = (0u64, 0u64, 0u64);
    for r in rows.iter().filter(|r| r.exits > 0) {
        exits += r.exits;
        completed += r.completed;
        cycles += r.cycles;
        t.row(&[
            &alloc::format!("{cpu}"),
            r.from,
            &alloc::format!("{}", r.reason),
            r.name,
            &hex(r.exits),
            &alloc::format!("{}", r.exits),
            &alloc::format!("{}", r.completed),
            &alloc::format!("{}", r.cycles),
            &alloc::format!("{}", r.min),
            &alloc::format!("{}", r.cycles / r.exits),
            &alloc::format!("{}", r.max),
        ]);
    }
    if csv {
        return t.render_csv();
    }
    let mut out = String::new();
    let _ = writeln!(out, "cpu {cpu}:");
    if exits == 0 {
        let _ = writeln!(out, "  no exits counted");
        return out;
    }
    out.push_str(&t.render());
    let _ = writeln!(
        out,
        "total: {exits} exits ({}), {completed} completed, {cycles} L0 cycles; L0 share {} of {elapsed} tsc",
        hex(exits),
        percent(cycles, elapsed.max(1))
    );
    let reflected: u64 = rows.iter().filter(|r| r.from == REFLECTED).map(|r| r.exits).sum();
    if reflected > 0 {
        let _ = writeln!(out, "exit multiplication: {} L0 exits per L2 exit handled by L1", ratio(exits, reflected));
    }
    out
}

/// One VMCS field's emulated VMREAD/VMWRITE exits on one core (`fields`).
#[derive(Clone, Copy, Debug)]
pub struct FieldRow<'a> {
    /// The field's name, or `(not a field)` for operands that name none.
    pub name: &'a str,
    pub encoding: Option<u32>,
    pub reads: u64,
    pub writes: u64,
    pub read_fails: u64,
    pub write_fails: u64,
    /// Shadowed now for VMREAD / VMWRITE (L1's accesses no longer exit).
    pub shadow_read: bool,
    pub shadow_write: bool,
}

/// The `fields` report of core `cpu`: the `top` fields by exits (reads +
/// writes; ties by name), each with reads, writes, failures and whether it
/// is shadowed now; a summary line first. With `csv`, every field with
/// exits, as CSV. `shadowing` names the core's state (`adaptive, 31 fields`).
pub fn fields(cpu: usize, rows: &[FieldRow], top: usize, shadowing: &str, csv: bool) -> String {
    let mut used: alloc::vec::Vec<&FieldRow> = rows.iter().filter(|r| r.reads + r.writes > 0).collect();
    used.sort_by(|a, b| (b.reads + b.writes).cmp(&(a.reads + a.writes)).then(a.name.cmp(b.name)));
    let mut t = Table::new(&["cpu", "field", "encoding", "vmread", "vmwrite", "vmread failed", "vmwrite failed", "shadowed"]);
    for r in used.iter().take(if csv { usize::MAX } else { top }) {
        let shadowed = match (r.shadow_read, r.shadow_write) {
            (true, true) => "rw",
            (true, false) => "r",
            (false, true) => "w",
            (false, false) => "-",
        };
        t.row(&[
            &alloc::format!("{cpu}"),
            r.name,
            &r.encoding.map_or(String::from("-"), |e| alloc::format!("0x{e:04X}")),
            &alloc::format!("{}", r.reads),
            &alloc::format!("{}", r.writes),
            &alloc::format!("{}", r.read_fails),
            &alloc::format!("{}", r.write_fails),
            shadowed,
        ]);
    }
    if csv {
        return t.render_csv();
    }
    let sum = |f: fn(&FieldRow) -> u64| rows.iter().map(f).sum::<u64>();
    let mut out = String::new();
    let _ = writeln!(
        out,
        "cpu {cpu}: {} VMREAD and {} VMWRITE exits ({} failed) on {} fields; shadowing {shadowing}",
        sum(|r| r.reads),
        sum(|r| r.writes),
        sum(|r| r.read_fails + r.write_fails),
        used.iter().filter(|r| r.encoding.is_some()).count()
    );
    if used.is_empty() {
        return out;
    }
    out.push_str(&t.render());
    if used.len() > top {
        let _ = writeln!(out, "({} more fields with exits: `fields {cpu} --csv` lists all)", used.len() - top);
    }
    out
}

/// The `from` of L2 exits L0 reflected to L1.
pub const REFLECTED: &str = "L2 (to L1)";

/// `a / b` with two decimals (integer arithmetic).
pub fn ratio(a: u64, b: u64) -> String {
    if b == 0 {
        return String::from("-");
    }
    let hundredths = (u128::from(a) * 100 + u128::from(b) / 2) / u128::from(b);
    alloc::format!("{}.{:02}", hundredths / 100, hundredths % 100)
}

/// One side of a benchmark: a core's counters after a run.
pub struct BenchRun<'a> {
    pub rows: &'a [StatRow<'a>],
    /// TSC cycles from the start of the run to its last exit.
    pub elapsed: u64,
    /// L0 cycles from the end of each exit's handling to the next VM entry
    /// (the vCPU loop), which the per-reason cycles leave out.
    pub loop_cycles: u64,
    /// TSC ticks per L2 exit as the L1 measured its own loop (`l1: time`).
    pub l1_ticks: Option<u64>,
}

/// A profiled run: its counters and L0's cycles phase by phase.
pub struct BenchProfile<'a> {
    pub run: BenchRun<'a>,
    /// (phase name, cycles), adding up to the run's L0 cycles.
    pub phases: &'a [(&'a str, u64)],
    /// Phase switches the profile made (each costs a few instructions).
    pub switches: u64,
    /// (slow path name, times it ran).
    pub slow: &'a [(&'a str, u64)],
}

/// How TSC ticks become instructions and modelled cycles.
#[derive(Clone, Copy, Debug)]
pub struct BenchUnits {
    /// TSC ticks per 1000 instructions of a known loop (Bochs: 1000).
    pub ticks_per_kinsn: u64,
    /// Modelled cost of one VM exit/entry pair on real VT-x, in cycles.
    pub pair: u64,
    /// TSC ticks per L2 exit of the same L1 booted bare (its `l1: time`).
    pub bare: Option<u64>,
}

impl BenchUnits {
    /// `ticks` as instructions.
    pub fn insns(&self, ticks: u64) -> u64 {
        (u128::from(ticks) * 1000 / u128::from(self.ticks_per_kinsn.max(1))) as u64
    }
}

/// Goals of issue 13 (forum workload, shadowing on), in instructions.
pub const GOAL_L0_PER_L2_EXIT: u64 = 2000;
pub const GOAL_REFLECTION: u64 = 1000;
pub const GOAL_VMREAD_VMWRITE: u64 = 60;
pub const GOAL_VMPTRLD: u64 = 1500;
/// Modelled nested/bare per L2 exit, in hundredths.
pub const GOAL_RATIO_HUNDREDTHS: u64 = 250;

fn sum(rows: &[StatRow], pred: impl Fn(&StatRow) -> bool) -> (u64, u64) {
    rows.iter().filter(|r| pred(r)).fold((0, 0), |(e, c), r| (e + r.exits, c + r.cycles))
}

fn find(run: &BenchRun, reason: u16) -> (u64, u64) {
    run.rows.iter().find(|r| r.from == "L1" && r.reason == reason).map_or((0, 0), |r| (r.exits, r.cycles))
}

/// A run's figures per L2 exit handled by L1, in TSC ticks (`None`: no such exit).
struct Figures {
    /// L0 exits (all levels) and L2 exits reflected to L1.
    all: u64,
    reflected: u64,
    /// All of L0's ticks: per-reason handling plus the loop.
    l0: u64,
    reflected_ticks: u64,
}

impl Figures {
    fn of(run: &BenchRun) -> Figures {
        let (all, all_cycles) = sum(run.rows, |_| true);
        let (reflected, reflected_ticks) = sum(run.rows, |r| r.from == REFLECTED);
        Figures { all, reflected, l0: all_cycles + run.loop_cycles, reflected_ticks }
    }
    fn per_l2_exit(&self, ticks: u64) -> Option<u64> {
        (self.reflected != 0).then(|| ticks / self.reflected)
    }
}

fn opt(v: Option<u64>) -> String {
    v.map_or(String::from("-"), |v| alloc::format!("{v}"))
}

fn verdict(goal: &str, met: Option<bool>) -> String {
    match met {
        Some(true) => alloc::format!("{goal} met"),
        Some(false) => alloc::format!("{goal} MISSED"),
        None => alloc::format!("{goal} -"),
    }
}

/// The `bench` report of one core: its VMX-instruction exit counts with
/// shadowing off and on side by side in the seed thread's format; L0's path
/// lengths in instructions with the goals; the modelled real-hardware cost
/// of an L2 exit bare and nested; where L0's instructions go (`prof`).
/// `csv` adds the counters as lines `bench,…` and the figures as `benchfig,…`.
pub fn bench(cpu: usize, off: &BenchRun, on: &BenchRun, prof: Option<&BenchProfile>, units: &BenchUnits, csv: bool) -> String {
    let mut out = String::new();
    let mut t = Table::new(&["cpu", "shadowing off", "", "", "", "shadowing on", "", "", ""]);
    let vmx_reasons = [19u16, 20, 21, 22, 23, 24, 25, 26, 27, 50, 53];
    for &reason in &vmx_reasons {
        let name = off.rows.iter().chain(on.rows).find(|r| r.reason == reason).map_or("?", |r| r.name);
        let (a, _) = find(off, reason);
        let (b, _) = find(on, reason);
        t.row(&[
            &alloc::format!("{cpu}"),
            &alloc::format!("vmexit {reason} {name}"),
            &hex(a),
            "times",
            &alloc::format!("({a})"),
            &alloc::format!("vmexit {reason} {name}"),
            &hex(b),
            "times",
            &alloc::format!("({b})"),
        ]);
    }
    out.push_str(&t.render());

    let i = |ticks: u64| units.insns(ticks);
    let (fo, fn_) = (Figures::of(off), Figures::of(on));
    let per_insn = |run: &BenchRun, reason: u16| {
        let (e, c) = find(run, reason);
        (e != 0).then(|| i(c) / e)
    };
    // (name, off, on, goal, value judged): the goal is judged on the
    // shadowing-on figure, or the off one where "on" has none (VMREAD).
    let mut rows: alloc::vec::Vec<(&str, String, String, String)> = alloc::vec::Vec::new();
    let goal_row = |name: &'static str, a: Option<u64>, b: Option<u64>, goal: u64| {
        let judged = b.or(a);
        (name, opt(a), opt(b), verdict(&alloc::format!("<= {goal}"), judged.map(|v| v <= goal)))
    };
    rows.push(("exit multiplication (L0 exits per L2 exit handled by L1)", ratio(fo.all, fo.reflected), ratio(fn_.all, fn_.reflected), String::new()));
    rows.push(("transitions (VM exits + entries) per L2 exit; bare: 2", ratio(2 * fo.all, fo.reflected), ratio(2 * fn_.all, fn_.reflected), String::new()));
    rows.push((
        "instructions per L2 exit, end to end (L2, L1 and L0)",
        opt(fo.per_l2_exit(i(off.elapsed))),
        opt(fn_.per_l2_exit(i(on.elapsed))),
        String::new(),
    ));
    rows.push(goal_row("L0 instructions per L2 exit handled by L1 (all L0 work)", fo.per_l2_exit(i(fo.l0)), fn_.per_l2_exit(i(fn_.l0)), GOAL_L0_PER_L2_EXIT));
    rows.push((
        "  of which between exits (vCPU loop, entry)",
        opt(fo.per_l2_exit(i(off.loop_cycles))),
        opt(fn_.per_l2_exit(i(on.loop_cycles))),
        String::new(),
    ));
    rows.push(goal_row("L0 instructions per reflected L2 exit (the reflection)", fo.per_l2_exit(i(fo.reflected_ticks)), fn_.per_l2_exit(i(fn_.reflected_ticks)), GOAL_REFLECTION));
    rows.push(goal_row("L0 instructions per emulated VMREAD", per_insn(off, 23), per_insn(on, 23), GOAL_VMREAD_VMWRITE));
    rows.push(goal_row("L0 instructions per emulated VMWRITE", per_insn(off, 25), per_insn(on, 25), GOAL_VMREAD_VMWRITE));
    rows.push(goal_row("L0 instructions per emulated VMPTRLD (switching vmcs12)", per_insn(off, 21), per_insn(on, 21), GOAL_VMPTRLD));
    rows.push(("L0 share of the core's instructions", percent(fo.l0, off.elapsed.max(1)), percent(fn_.l0, on.elapsed.max(1)), String::new()));
    let mut f = Table::new(&["cpu", "figure (TSC calibrated to instructions)", "shadowing off", "shadowing on", "goal (shadowing on)"]);
    for (name, a, b, g) in &rows {
        f.row(&[&alloc::format!("{cpu}"), name, a, b, g]);
    }
    out.push_str(&f.render());

    // Modelled real hardware: instructions at one cycle each plus T cycles
    // per VM exit/entry pair. L1 and L2 run the same instructions bare and
    // nested, so nested = bare + L0's instructions, with L0's pairs.
    let bare_insns = units.bare.map(i);
    let l0 = fn_.per_l2_exit(i(fn_.l0));
    let nested_insns = bare_insns.zip(l0).map(|(b, l)| b + l);
    let pairs_h = if fn_.reflected == 0 { None } else { Some(fn_.all * 100 / fn_.reflected) };
    let bare_model = bare_insns.map(|b| b + units.pair);
    let nested_model = nested_insns.zip(pairs_h).map(|(n, p)| n + units.pair * p / 100);
    let ratio_h = bare_model.zip(nested_model).map(|(b, n)| n * 100 / b.max(1));
    let mut m = Table::new(&["cpu", &alloc::format!("modelled per L2 exit (T = {} cycles per VM exit/entry pair)", units.pair), "bare", "nested (shadowing on)", "goal"]);
    let hundredths = |h: u64| alloc::format!("{}.{:02}", h / 100, h % 100);
    m.row(&[&alloc::format!("{cpu}"), "instructions (L2 + L1; nested also L0)", &opt(bare_insns), &opt(nested_insns), ""]);
    m.row(&[&alloc::format!("{cpu}"), "VM exit/entry pairs", "1.00", &pairs_h.map_or(String::from("-"), hundredths), ""]);
    m.row(&[&alloc::format!("{cpu}"), "modelled cycles (instructions + T x pairs)", &opt(bare_model), &opt(nested_model), ""]);
    m.row(&[
        &alloc::format!("{cpu}"),
        "nested / bare",
        "",
        &ratio_h.map_or(String::from("-"), hundredths),
        &verdict("<= 2.50", ratio_h.map(|r| r <= GOAL_RATIO_HUNDREDTHS)),
    ]);
    if let (Some(bare), Some(nested), Some(l0), Some(p)) = (units.bare, on.l1_ticks, fn_.per_l2_exit(fn_.l0), pairs_h) {
        // What Bochs charges a transition: the L1's own nested timing minus
        // its bare one minus L0's path, per pair.
        let residual = nested as i64 - bare as i64 - l0 as i64;
        m.row(&[
            &alloc::format!("{cpu}"),
            "Bochs TSC ticks per VM exit/entry pair (L1-timed nested - bare - L0, per pair)",
            "",
            &alloc::format!("{}", residual * 100 / p.max(1) as i64),
            "",
        ]);
    }
    out.push_str(&m.render());

    if let Some(p) = prof {
        let fp = Figures::of(&p.run);
        let total: u64 = p.phases.iter().map(|(_, c)| c).sum();
        let mut b = Table::new(&["cpu", "L0 phase (shadowing on, profiled run)", "instructions per L2 exit", "share"]);
        for (name, c) in p.phases {
            b.row(&[&alloc::format!("{cpu}"), name, &opt(fp.per_l2_exit(i(*c))), &percent(*c, total.max(1))]);
        }
        b.row(&[&alloc::format!("{cpu}"), "total (profiled; the profile's own switches included)", &opt(fp.per_l2_exit(i(total))), ""]);
        b.row(&[&alloc::format!("{cpu}"), "phase switches per L2 exit", &opt(fp.per_l2_exit(p.switches)), ""]);
        for (name, n) in p.slow {
            b.row(&[&alloc::format!("{cpu}"), &alloc::format!("slow path: {name}, per 100 L2 exits"), &opt(fp.per_l2_exit(n * 100)), ""]);
        }
        out.push_str(&b.render());
    }

    if csv {
        for (mode, run) in [("off", off), ("on", on)] {
            for r in run.rows.iter().filter(|r| r.exits > 0) {
                let _ = writeln!(out, "bench,{cpu},{mode},{},{},{},{},{}", r.from, r.reason, r.name, r.exits, r.cycles);
            }
        }
        for (name, a, b, g) in &rows {
            let _ = writeln!(out, "benchfig,{cpu},{name},{a},{b},{g}");
        }
        let _ = writeln!(out, "benchfig,{cpu},modelled bare cycles per L2 exit,{},,", opt(bare_model));
        let _ = writeln!(out, "benchfig,{cpu},modelled nested cycles per L2 exit,,{},", opt(nested_model));
        let _ = writeln!(out, "benchfig,{cpu},modelled nested / bare,,{},", ratio_h.map_or(String::from("-"), hundredths));
        if let Some(p) = prof {
            let fp = Figures::of(&p.run);
            for (name, c) in p.phases {
                let _ = writeln!(out, "benchfig,{cpu},phase {name},,{},", opt(fp.per_l2_exit(i(*c))));
            }
        }
    }
    out
}

/// One core in a `top` frame: its counters at the last frame and now.
pub struct TopCore<'a> {
    pub cpu: usize,
    /// The L1's state (`running`, `halted`, `stopped: …`).
    pub state: &'a str,
    pub prev: &'a [StatRow<'a>],
    pub now: &'a [StatRow<'a>],
}

/// Lines of a `top` frame, at most: fits a 25-line screen with the cursor
/// line below it.
pub const TOP_LINES: usize = 23;
/// Columns of a `top` frame, at most.
pub const TOP_COLS: usize = 80;

/// Erase to the end of the line: every `top` line ends with it, so a frame
/// drawn over the previous one leaves nothing of it behind.
const EL: &str = "\x1b[K";

/// A `top` frame (kvm_stat-like): per core, the exits of the last `elapsed`
/// TSC cycles (`tsc_hz` cycles a second) per second and L0's share of the
/// core, split by level; then that core's exit reasons by rate, fastest
/// first, with the level they came from and their running totals. Drawn in
/// place: the caller sends `ESC [ H` (and `ESC [ 2 J` the first time)
/// before it; every line ends with `ESC [ K` and the frame with `ESC [ J`
/// (erase below). At most [`TOP_LINES`] lines of at most [`TOP_COLS`]
/// columns: with many cores, fewer reasons per core.
pub fn top(frame: u64, cores: &[TopCore], elapsed: u64, tsc_hz: u64) -> String {
    let elapsed = elapsed.max(1);
    let rate = |d: u64| (u128::from(d) * u128::from(tsc_hz) / u128::from(elapsed)) as u64;
    let mut lines: alloc::vec::Vec<String> = alloc::vec::Vec::new();
    let ms = (u128::from(elapsed) * 1000 / u128::from(tsc_hz.max(1))) as u64;
    lines.push(alloc::format!("nvmx top #{frame}: exits/s over the last {}.{} s; any key ends it", ms / 1000, ms % 1000 / 100));
    lines.push(alloc::format!("{:>3}  {:<10} {:>6} {:<19} {:>10} {:>8} {:>13}", "cpu", "from", "vmexit", "name", "exits/s", "L0 share", "total"));
    // Two summary lines a core (all levels, then each level) while they fit;
    // with many cores one, and `top <cpu>` shows a core's levels.
    let summary = if 2 + 2 * cores.len() <= TOP_LINES { 2 } else { 1 };
    let per_core = (TOP_LINES - 2).saturating_sub(summary * cores.len()) / cores.len().max(1);
    for core in cores {
        // (level, reason, name, exits in the interval, cycles in the interval, total)
        let mut rows: alloc::vec::Vec<(&str, u16, &str, u64, u64, u64)> = core
            .now
            .iter()
            .map(|r| {
                let before = core.prev.iter().find(|p| p.from == r.from && p.reason == r.reason);
                // Counters reset (`stats reset`, a restarted L1) since the last frame: count from 0.
                let (e0, c0) = before.filter(|p| p.exits <= r.exits).map_or((0, 0), |p| (p.exits, p.cycles));
                (r.from, r.reason, r.name, r.exits - e0, r.cycles.saturating_sub(c0), r.exits)
            })
            .filter(|r| r.3 > 0)
            .collect();
        rows.sort_by(|a, b| b.3.cmp(&a.3).then(a.1.cmp(&b.1)));
        let level = |from: &str| rows.iter().filter(|r| r.0 == from).map(|r| r.3).sum::<u64>();
        let (exits, cycles) = rows.iter().fold((0, 0), |(e, c), r| (e + r.3, c + r.4));
        lines.push(alloc::format!(
            "cpu {} {}: {} exits/s, L0 share {}",
            core.cpu,
            // `stopped: <why>` is for `l1`; here the word is enough.
            core.state.split(':').next().unwrap_or(""),
            rate(exits),
            percent(cycles, elapsed),
        ));
        if summary == 2 {
            lines.push(alloc::format!(
                "      from L1 {}/s, from L2 handled by L0 {}/s, from L2 reflected to L1 {}/s",
                rate(level("L1")),
                rate(level("L2 (L0)")),
                rate(level(REFLECTED)),
            ));
        }
        for r in rows.iter().take(per_core) {
            let name = r.2.get(..r.2.len().min(19)).unwrap_or(r.2);
            lines.push(alloc::format!(
                "{:>3}  {:<10} {:>6} {:<19} {:>10} {:>8} {:>13}",
                core.cpu, r.0, r.1, name, rate(r.3), percent(r.4, elapsed), r.5
            ));
        }
    }
    let mut out = String::new();
    for mut line in lines.into_iter().take(TOP_LINES) {
        line.truncate(TOP_COLS);
        out.push_str(&line);
        out.push_str(EL);
        out.push('\n');
    }
    out.push_str("\x1b[J");
    out
}

/// One field of a VMCS dump: name, encoding, value (`None`: the CPU does not
/// implement it).
pub type DumpField<'a> = (&'a str, u32, Option<u64>);

/// A VMCS dump: `title`, then each group under its heading, one field a line.
pub fn vmcs_dump<'a>(title: &str, groups: &[(&str, &[DumpField<'a>])]) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "{title}");
    for (heading, fields) in groups {
        let _ = writeln!(out, "*** {heading} ***");
        for (name, enc, value) in fields.iter() {
            match value {
                Some(v) => {
                    let _ = writeln!(out, "  {name:<36} {enc:#06x}  {v:#018x}");
                }
                None => {
                    let _ = writeln!(out, "  {name:<36} {enc:#06x}  (not supported by this CPU)");
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(reason: u16, name: &'static str, exits: u64, completed: u64) -> StatRow<'static> {
        StatRow { from: "L1", reason, name, exits, completed, cycles: exits * 10, min: 8, max: 30 }
    }

    #[test]
    fn stats_table_in_the_threads_style() {
        let rows = [row(23, "vmread", 0x6812BA3, 0x6812BA0), row(10, "cpuid", 0, 0), row(10, "cpuid", 4, 4)];
        let out = stats(1, &rows, 20_000_000_000, false);
        assert!(out.starts_with("cpu 1:\n"));
        let vmread = out.lines().find(|l| l.contains("vmread")).unwrap();
        assert!(vmread.contains("0x6812BA3") && vmread.contains("109128611") && vmread.contains("109128608"), "{vmread}");
        assert_eq!(out.lines().filter(|l| l.contains("cpuid")).count(), 1, "zero rows are left out:\n{out}");
        let total = out.lines().last().unwrap();
        assert_eq!(total, "total: 109128615 exits (0x6812BA7), 109128612 completed, 1091286150 L0 cycles; L0 share 5.46 % of 20000000000 tsc");
    }

    #[test]
    fn exit_multiplication_and_bench() {
        let mut reflected = row(10, "cpuid", 100, 100);
        reflected.from = REFLECTED;
        let rows = [row(23, "vmread", 1900, 1900), row(24, "vmresume", 100, 100), reflected];
        let out = stats(0, &rows, 1_000_000, false);
        assert!(out.contains("exit multiplication: 21.00 L0 exits per L2 exit handled by L1"), "{out}");
        let on_rows = [row(24, "vmresume", 100, 100), reflected];
        let units = BenchUnits { ticks_per_kinsn: 1000, pair: 1000, bare: Some(300) };
        let run = |rows, elapsed| BenchRun { rows, elapsed, loop_cycles: 0, l1_ticks: None };
        let b = bench(0, &run(&rows, 100_000), &run(&on_rows, 50_000), None, &units, true);
        let vmread: alloc::vec::Vec<&str> = b.lines().find(|l| l.contains("vmexit 23 vmread")).unwrap().split_whitespace().collect();
        assert_eq!(vmread.join(" "), "0 vmexit 23 vmread 0x76C times (1900) vmexit 23 vmread 0x0 times (0)");
        assert!(b.contains("21.00") && b.contains("2.00"), "{b}");
        let end_to_end: alloc::vec::Vec<&str> = b.lines().find(|l| l.contains("end to end")).unwrap().split_whitespace().collect();
        assert_eq!(end_to_end[end_to_end.len() - 2..], ["1000", "500"], "elapsed / reflected exits, off then on");
        assert!(b.lines().any(|l| l == "bench,0,on,L1,24,vmresume,100,1000"), "{b}");
        // On: 200 L0 exits for 100 L2 exits, 2000 L0 ticks = 20 per L2 exit;
        // bare 300 + T 1000 = 1300; nested 320 + 2 x 1000 = 2320: 1.78.
        let model: alloc::vec::Vec<&str> = b.lines().find(|l| l.contains("nested / bare")).unwrap().split_whitespace().collect();
        assert_eq!(model[model.len() - 4..], ["1.78", "<=", "2.50", "met"][..], "{b}");
        assert!(b.contains("<= 2.50 met"), "{b}");
        let l0: alloc::vec::Vec<&str> = b.lines().find(|l| l.contains("(all L0 work)")).unwrap().split_whitespace().collect();
        assert_eq!(l0[l0.len() - 5..], ["210", "20", "<=", "2000", "met"], "{b}");
        assert_eq!(ratio(1, 3), "0.33");
    }

    #[test]
    fn stats_csv_and_empty() {
        let csv = stats(0, &[row(10, "cpuid", 3, 2)], 100, true);
        assert_eq!(csv, "cpu,from,vmexit,name,times (hex),times,completed,L0 cycles,min,avg,max\n0,L1,10,cpuid,0x3,3,2,30,8,10,30\n");
        assert_eq!(stats(2, &[], 100, false), "cpu 2:\n  no exits counted\n");
    }

    #[test]
    fn top_rates_shares_sorting_and_fit() {
        let mut reflected = row(10, "cpuid", 150, 150);
        reflected.from = REFLECTED;
        let prev = [row(23, "vmread", 1000, 1000), row(24, "vmresume", 100, 100), reflected];
        reflected.exits = 250;
        reflected.cycles = 2500;
        // 1 s at 100000 tsc/s: vmread +500 (5000 cycles), vmresume +0, cpuid +100, hlt new +20.
        let now = [row(23, "vmread", 1500, 1500), row(24, "vmresume", 100, 100), reflected, row(12, "hlt", 20, 20)];
        let cores = [TopCore { cpu: 1, state: "running", prev: &prev, now: &now }];
        let out = top(2, &cores, 100_000, 100_000);
        let lines: alloc::vec::Vec<&str> = out.lines().map(|l| l.trim_end_matches("\x1b[K")).collect();
        assert_eq!(lines[0], "nvmx top #2: exits/s over the last 1.0 s; any key ends it");
        // 620 exits, 6200 cycles of 100000.
        assert_eq!(lines[2], "cpu 1 running: 620 exits/s, L0 share 6.20 %");
        assert_eq!(lines[3], "      from L1 520/s, from L2 handled by L0 0/s, from L2 reflected to L1 100/s");
        let order: alloc::vec::Vec<&str> = lines[4..7].iter().map(|l| l[23..42].trim()).collect();
        assert_eq!(order, ["vmread", "cpuid", "hlt"], "fastest first, idle vmresume left out:\n{out}");
        assert_eq!(lines[5].split_whitespace().collect::<alloc::vec::Vec<_>>(), ["1", "L2", "(to", "L1)", "10", "cpuid", "100", "1.00", "%", "250"]);
        assert!(out.ends_with("\x1b[K\n\x1b[J") && out.lines().count() == 7 + 1, "seven lines, then erase below: {out:?}");

        // 16 busy cores: still at most 23 lines of at most 80 columns, one summary each.
        let many: alloc::vec::Vec<TopCore> = (0..16).map(|cpu| TopCore { cpu, state: "stopped: triple fault", prev: &[], now: &now }).collect();
        let out = top(1, &many, 3, 1_000_000_000);
        assert!(out.lines().count() <= TOP_LINES, "{out}");
        assert!(out.lines().all(|l| l.trim_end_matches("\x1b[K").len() <= TOP_COLS), "{out}");
        assert_eq!(out.lines().filter(|l| l.starts_with("cpu ") && l.contains(" stopped: ")).count(), 16);
        // Counters reset since the last frame (vmread, cpuid) count from zero, never underflow.
        let cores = [TopCore { cpu: 0, state: "running", prev: &now, now: &prev }];
        assert!(top(3, &cores, 1000, 1000).contains("cpu 0 running: 1150 exits/s"));
    }

    #[test]
    fn vmcs_dump_groups_and_unsupported_fields() {
        let guest: [DumpField; 2] = [("GUEST_RIP", 0x681E, Some(0x101000)), ("GUEST_PML_INDEX", 0x0812, None)];
        let host: [DumpField; 1] = [("HOST_RIP", 0x6C16, Some(0x10_2000))];
        let out = vmcs_dump("VMCS0-1 of cpu 0", &[("Guest State", &guest), ("Host State", &host)]);
        let lines: alloc::vec::Vec<&str> = out.lines().collect();
        assert_eq!(lines[0], "VMCS0-1 of cpu 0");
        assert_eq!(lines[1], "*** Guest State ***");
        assert_eq!(lines[2], "  GUEST_RIP                            0x681e  0x0000000000101000");
        assert!(lines[3].ends_with("(not supported by this CPU)"));
        assert_eq!(lines[4], "*** Host State ***");
    }

    #[test]
    fn fields_report_sorts_by_exits_and_marks_shadowed() {
        let row = |name, encoding, reads, writes, fails, r, w| FieldRow {
            name,
            encoding,
            reads,
            writes,
            read_fails: fails,
            write_fails: 0,
            shadow_read: r,
            shadow_write: w,
        };
        let rows = [
            row("GUEST_CR3", Some(0x6802), 3, 9, 0, true, true),
            row("VM_EXIT_REASON", Some(0x4402), 40, 0, 0, true, false),
            row("HOST_RIP", Some(0x6C16), 0, 0, 0, false, false),
            row("(not a field)", None, 2, 1, 2, false, false),
            row("TSC_OFFSET", Some(0x2010), 0, 12, 0, false, true),
        ];
        let out = fields(1, &rows, 3, "adaptive, 3 fields", false);
        let lines: std::vec::Vec<&str> = out.lines().collect();
        assert_eq!(lines[0], "cpu 1: 45 VMREAD and 22 VMWRITE exits (2 failed) on 3 fields; shadowing adaptive, 3 fields");
        assert!(lines[2].contains("VM_EXIT_REASON") && lines[2].contains("0x4402") && lines[2].trim_end().ends_with(" r"), "{out}");
        assert!(lines[3].contains("GUEST_CR3") && lines[3].trim_end().ends_with("rw"), "{out}");
        assert!(lines[4].contains("TSC_OFFSET") && lines[4].trim_end().ends_with(" w"), "{out}");
        assert_eq!(lines[5], "(1 more fields with exits: `fields 1 --csv` lists all)");
        assert!(!out.contains("HOST_RIP"));
        let csv = fields(1, &rows, 3, "", true);
        assert_eq!(csv.lines().count(), 5, "{csv}");
        assert!(csv.lines().any(|l| l == "1,(not a field),-,2,1,2,0,-"), "{csv}");
        assert!(fields(0, &[], 16, "off", false).starts_with("cpu 0: 0 VMREAD and 0 VMWRITE exits (0 failed) on 0 fields"));
    }
}
