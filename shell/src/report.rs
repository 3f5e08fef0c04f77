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
}
