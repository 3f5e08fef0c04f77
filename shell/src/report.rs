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
}

fn sum(rows: &[StatRow], pred: impl Fn(&StatRow) -> bool) -> (u64, u64) {
    rows.iter().filter(|r| pred(r)).fold((0, 0), |(e, c), r| (e + r.exits, c + r.cycles))
}

/// The `bench` report of one core: its VMX-instruction exit counts with
/// shadowing off and on side by side in the seed thread's format, then the
/// derived figures; `csv` adds the same as CSV lines prefixed `bench,`.
pub fn bench(cpu: usize, off: &BenchRun, on: &BenchRun, csv: bool) -> String {
    let mut out = String::new();
    let mut t = Table::new(&["cpu", "shadowing off", "", "", "", "shadowing on", "", "", ""]);
    let vmx_reasons = [19u16, 20, 21, 22, 23, 24, 25, 26, 27, 50, 53];
    let find = |run: &BenchRun, reason: u16| {
        run.rows.iter().find(|r| r.from == "L1" && r.reason == reason).map_or((0, 0), |r| (r.exits, r.cycles))
    };
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
    let figures = |run: &BenchRun| {
        let (all, all_cycles) = sum(run.rows, |_| true);
        let (reflected, reflected_cycles) = sum(run.rows, |r| r.from == REFLECTED);
        let per = |reason: u16| {
            let (e, c) = find(run, reason);
            if e == 0 { String::from("-") } else { alloc::format!("{}", c / e) }
        };
        let per_reflected = |cycles: u64| if reflected == 0 { String::from("-") } else { alloc::format!("{}", cycles / reflected) };
        [
            ratio(all, reflected),
            per_reflected(run.elapsed),
            per_reflected(all_cycles),
            per_reflected(reflected_cycles),
            per(23),
            per(25),
            per(21),
            percent(all_cycles, run.elapsed.max(1)),
        ]
    };
    let (a, b) = (figures(off), figures(on));
    let names = [
        "exit multiplication (L0 exits per L2 exit handled by L1)",
        "core cycles per L2 exit handled by L1 (end to end)",
        "L0 cycles per L2 exit handled by L1 (all L0 work)",
        "L0 cycles per reflected L2 exit (the reflection alone)",
        "L0 cycles per emulated VMREAD",
        "L0 cycles per emulated VMWRITE",
        "L0 cycles per emulated VMPTRLD",
        "L0 share of the core's cycles",
    ];
    let mut f = Table::new(&["cpu", "figure", "shadowing off", "shadowing on"]);
    for (i, name) in names.iter().enumerate() {
        f.row(&[&alloc::format!("{cpu}"), name, &a[i], &b[i]]);
    }
    out.push_str(&f.render());
    if csv {
        for (mode, run) in [("off", off), ("on", on)] {
            for r in run.rows.iter().filter(|r| r.exits > 0) {
                let _ = writeln!(out, "bench,{cpu},{mode},{},{},{},{},{}", r.from, r.reason, r.name, r.exits, r.cycles);
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
        let b = bench(0, &BenchRun { rows: &rows, elapsed: 100_000 }, &BenchRun { rows: &on_rows, elapsed: 50_000 }, true);
        let vmread: alloc::vec::Vec<&str> = b.lines().find(|l| l.contains("vmexit 23 vmread")).unwrap().split_whitespace().collect();
        assert_eq!(vmread.join(" "), "0 vmexit 23 vmread 0x76C times (1900) vmexit 23 vmread 0x0 times (0)");
        assert!(b.contains("21.00") && b.contains("2.00"), "{b}");
        let end_to_end: alloc::vec::Vec<&str> = b.lines().find(|l| l.contains("(end to end)")).unwrap().split_whitespace().collect();
        assert_eq!(end_to_end[end_to_end.len() - 2..], ["1000", "500"], "elapsed / reflected exits, off then on");
        assert!(b.lines().any(|l| l == "bench,0,on,L1,24,vmresume,100,1000"), "{b}");
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
