//! `make bench-turtles`: issue 13's figures for nvmx as its own L1 (item 4).
//! Boots `build/turtles.iso` (Bochs haswell, one core: the outer nvmx is
//! L0, the inner nvmx L1, the built-in L1's forum L2, its guest L3) once per
//! shadowing setting — outer on / inner on, outer on / inner off, outer off
//! / inner on — resets both nvmx's counters, lets the forum run for a window
//! and reads both `stats`: per L3 (innermost) exit the instructions end to
//! end, the outer L0's instructions (its rows' cycles and its vCPU loop),
//! the inner nvmx's exits, the outer L0's exits and transitions (the CPU's
//! VM exits and entries: only L0 runs VMX on the CPU), and the modelled
//! real-hardware cost = instructions + T × VM exit/entry pairs against the
//! same forum L1 bare (`build/l1-bench.iso`: instructions + T per L2 exit).
//! Bochs' TSC counts retired instructions, and both nvmx's read the same TSC
//! (L0 does not offset it). The two windows are not the same instants (the
//! inner `stats reset` is typed over `attach` after the outer one), so the
//! outer figures are taken as rates over the outer window and scaled by the
//! inner window's TSC per L3 exit. CSV in `build/bench-turtles.csv`.
//! Figures, not a pass/fail test.
//!
//! Usage: bench_turtles [<window seconds>] [<cycles per VM exit/entry pair>] [<bare ticks per L2 exit>]
//! (defaults 20, 1000; the bare figure given, its run is skipped)

use std::time::{Duration, Instant};

use nvmx_tests::{Bochs, Machine, Result};

const MODEL: &str = "corei7_haswell_4770";
const CMD: Duration = Duration::from_secs(60);

/// `stats` rows: (level, reason, times).
fn rows(out: &str) -> Vec<(String, u32, u64)> {
    let mut v = Vec::new();
    for line in out.lines() {
        let tok: Vec<&str> = line.split_whitespace().collect();
        if tok.len() < 6 || tok[0].parse::<u32>().is_err() {
            continue;
        }
        let (level, rest) = match tok[1..] {
            ["L1", ..] => ("L1", &tok[2..]),
            ["L2", "(L0)", ..] => ("L2 (L0)", &tok[3..]),
            ["L2", "(to", "L1)", ..] => ("L2 (to L1)", &tok[4..]),
            _ => continue,
        };
        if let (Some(Ok(reason)), Some(Ok(times))) = (rest.first().map(|s| s.parse()), rest.get(3).map(|s| s.parse())) {
            v.push((level.to_string(), reason, times));
        }
    }
    v
}

/// From `stats`' total line: (exits, L0 cycles, tsc elapsed); and the vCPU
/// loop's cycles from the line after it.
fn totals(out: &str) -> Option<(u64, u64, u64, u64)> {
    let line = out.lines().find(|l| l.trim_start().starts_with("total: "))?;
    let num = |after: &str, s: &str| -> Option<u64> { s.split(after).nth(1)?.split_whitespace().next()?.parse().ok() };
    let exits = num("total: ", line)?;
    let cycles = line.split("completed, ").nth(1)?.split_whitespace().next()?.parse().ok()?;
    let tsc = line.split(" of ").nth(1)?.split_whitespace().next()?.parse().ok()?;
    let lp = out.lines().find_map(|l| num("vCPU loop: ", l)).unwrap_or(0);
    Some((exits, cycles, tsc, lp))
}

/// The inner nvmx's `stats` over the attached line.
fn inner_stats(m: &mut Machine) -> Result<String> {
    m.send(b"stats\r")?;
    let f = m.expect("(not in the rows above)", CMD)?;
    m.expect("nvmx> ", CMD)?;
    Ok(f.before)
}

fn attach(m: &mut Machine) -> Result<()> {
    m.send(b"attach 0\r")?;
    m.expect("Ctrl-] returns to the shell", CMD)?;
    m.send(b"\r")?;
    m.expect("nvmx> ", CMD).map(|_| ())
}

fn detach(m: &mut Machine) -> Result<()> {
    m.send(&[0x1D])?;
    m.expect("[detached from cpu 0]", CMD)?;
    m.expect("nvmx> ", CMD).map(|_| ())
}

/// One configuration's figures per L3 exit.
struct Figures {
    l3: u64,
    end_to_end: f64,
    outer_l0: f64,
    outer_exits: f64,
    inner_exits: f64,
    inner_vmrw: f64,
}

fn run(name: &str, outer_shadow: bool, inner_shadow: bool, window: u64) -> Result<Figures> {
    let mut m = Bochs::new(name, MODEL).build_iso("turtles.iso").cpus(1).megs(512).hard_limit(Duration::from_secs(600)).start()?;
    m.boot_to_prompt(Duration::from_secs(150))?;
    if !outer_shadow {
        m.command("shadow off all", CMD)?;
    }
    let deadline = Instant::now() + Duration::from_secs(200);
    let mut out = String::new();
    while Instant::now() < deadline && !out.contains(" L2 ") {
        std::thread::sleep(Duration::from_secs(3));
        out = m.command("stats 0", CMD)?;
    }
    if !out.contains(" L2 ") {
        return Err(nvmx_tests::Error::new(format!("{name}: the inner nvmx's L1 never ran:\n{out}")));
    }
    if !inner_shadow {
        attach(&mut m)?;
        m.send(b"shadow off\r")?;
        m.expect("nvmx> ", CMD)?;
        detach(&mut m)?;
    }
    m.command("stats 0 reset", CMD)?;
    attach(&mut m)?;
    m.send(b"stats reset\r")?;
    m.expect("nvmx> ", CMD)?;
    std::thread::sleep(Duration::from_secs(window));
    let inner = inner_stats(&mut m)?;
    detach(&mut m)?;
    let outer = m.command("stats 0", CMD)?;
    let (Some((ie, _, it, _)), Some((oe, oc, ot, ol))) = (totals(&inner), totals(&outer)) else {
        return Err(nvmx_tests::Error::new(format!("{name}: no totals in\n{inner}\n{outer}")));
    };
    let ir = rows(&inner);
    let l3: u64 = ir.iter().filter(|r| r.0.starts_with("L2")).map(|r| r.2).sum();
    if l3 == 0 || ot == 0 {
        return Err(nvmx_tests::Error::new(format!("{name}: no L3 exits in the window:\n{inner}")));
    }
    let tsc_per_l3 = it as f64 / l3 as f64;
    let rate = |n: u64| n as f64 / ot as f64 * tsc_per_l3;
    let inner_vmrw: u64 = ir.iter().filter(|r| r.0 == "L1" && matches!(r.1, 23 | 25)).map(|r| r.2).sum();
    println!("[{name}] inner `stats`:\n{inner}\n[{name}] outer `stats 0`:\n{outer}");
    m.send(b"poweroff\r")?;
    let _ = m.wait_exit(Duration::from_secs(60));
    Ok(Figures {
        l3,
        end_to_end: tsc_per_l3,
        outer_l0: rate(oc + ol),
        outer_exits: rate(oe),
        inner_exits: ie as f64 / l3 as f64,
        inner_vmrw: inner_vmrw as f64 / l3 as f64,
    })
}

fn main() -> Result<()> {
    let mut args = std::env::args().skip(1);
    let window: u64 = args.next().and_then(|a| a.parse().ok()).unwrap_or(20);
    let pair: f64 = args.next().and_then(|a| a.parse().ok()).unwrap_or(1000.0);
    let given: Option<u64> = args.next().and_then(|a| a.parse().ok());
    let bare = match given {
        Some(b) => b,
        None => {
            let mut b = Bochs::new("bench_turtles_bare", MODEL).build_iso("l1-bench.iso").hard_limit(Duration::from_secs(600)).start()?;
            b.expect("l1: done", Duration::from_secs(580))?;
            let text = b.serial().transcript();
            let line = text.lines().find(|l| l.contains("l1: time ")).map(str::trim).map(String::from);
            line.and_then(|l| l.rsplit(", ").next().and_then(|w| w.split_whitespace().next()).and_then(|n| n.parse::<u64>().ok()))
                .ok_or_else(|| nvmx_tests::Error::new("the bare L1 printed no `l1: time` line (build/l1-bench.iso: make bench-turtles builds it)"))?
        }
    };
    let configs = [("outer on, inner on", true, true), ("outer on, inner off", true, false), ("outer off, inner on", false, true)];
    let mut results = Vec::new();
    for (i, (label, o, inn)) in configs.iter().enumerate() {
        let f = run(&format!("bench_turtles_{i}"), *o, *inn, window)?;
        results.push((label, f));
    }
    let bare_model = bare as f64 + pair;
    println!();
    println!("Bochs {MODEL}, 1 core: outer nvmx (L0), inner nvmx (L1), the forum L1 (L2), its guest (L3); {window} s windows; T = {pair} cycles per VM exit/entry pair");
    println!("bare reference: the same forum L1 alone, {bare} instructions + 1 pair per L2 exit = {bare_model:.0} modelled");
    println!(
        "{:<22} {:>9} {:>13} {:>13} {:>12} {:>14} {:>12} {:>11} {:>14} {:>10}",
        "VMCS shadowing", "L3 exits", "instr/L3 exit", "L0 instr/L3", "L0 exits/L3", "transitions/L3", "inner exits", "inner vmrw", "modelled/L3", "vs bare"
    );
    let mut csv = String::from("shadowing,l3_exits,instructions_per_l3_exit,outer_l0_instructions_per_l3_exit,outer_l0_exits_per_l3_exit,transitions_per_l3_exit,inner_exits_per_l3_exit,inner_vmread_vmwrite_exits_per_l3_exit,modelled_cycles_per_l3_exit,modelled_vs_bare,pair_cycles,bare_instructions_per_l2_exit\n");
    for (label, f) in &results {
        let modelled = f.end_to_end + pair * f.outer_exits;
        println!(
            "{:<22} {:>9} {:>13.0} {:>13.0} {:>12.1} {:>14.1} {:>12.1} {:>11.2} {:>14.0} {:>10.1}",
            label, f.l3, f.end_to_end, f.outer_l0, f.outer_exits, 2.0 * f.outer_exits, f.inner_exits, f.inner_vmrw, modelled, modelled / bare_model
        );
        csv.push_str(&format!(
            "{label},{},{:.0},{:.0},{:.2},{:.2},{:.2},{:.3},{:.0},{:.2},{pair},{bare}\n",
            f.l3, f.end_to_end, f.outer_l0, f.outer_exits, 2.0 * f.outer_exits, f.inner_exits, f.inner_vmrw, modelled, modelled / bare_model
        ));
    }
    let path = nvmx_tests::paths::workspace().join("build/bench-turtles.csv");
    std::fs::write(&path, csv)?;
    println!("CSV: {}", path.display());
    Ok(())
}
