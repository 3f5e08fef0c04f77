//! `make fuzz`: the differential VMX fuzzer. Runs the built-in L1's
//! `workload=fuzz` with the given arguments bare on Bochs (the reference
//! CPU) and nested under nvmx — at the same time, two emulators, unless
//! `FUZZ_SERIAL=1` — and compares what they print: the outcome counts and a
//! hash of every outcome every 500 operations. Prints both and where they
//! part; `SHOW=<op>` then lists the operations around it. Then where the
//! nested run's time went: operations per second of each run (the nested
//! one from `l1 restart` to `l1: fuzz done`, boot apart), and nvmx's exits
//! and L0 instructions per operation by exit reason (`stats 0 --csv`).
//! Figures and a verdict, not a test (the test is `bochs_hostile_l1_fuzz_*`).
//!
//! Usage: fuzz <l1 args> [<model>]   (the ISO is build/l1-fuzz-run.iso, made
//! by `make fuzz` from the same args)

use std::time::{Duration, Instant};

use nvmx_tests::{Bochs, Result};

fn fuzz_lines(text: &str) -> Vec<String> {
    text.lines().map(|l| l.trim().to_string()).filter(|l| l.starts_with("l1: fuzz")).collect()
}

/// The bare run: (its fuzz lines, seconds from power-on to `l1: done`).
fn bare(model: &str, limit: Duration) -> Result<(Vec<String>, f64)> {
    let t = Instant::now();
    let mut b = Bochs::new("fuzz_bare", model).build_iso("l1-fuzz-run.iso").hard_limit(limit).start()?;
    b.expect("l1: done", limit)?;
    Ok((fuzz_lines(&b.serial().transcript()), t.elapsed().as_secs_f64()))
}

struct Nested {
    lines: Vec<String>,
    boot_secs: f64,
    run_secs: f64,
    stats_csv: String,
}

fn nested(model: &str, l1_args: &str, limit: Duration) -> Result<Nested> {
    let t = Instant::now();
    let mut m = Bochs::new("fuzz_nested", model).hard_limit(limit).start()?;
    m.boot_to_prompt(Duration::from_secs(300))?;
    let boot_secs = t.elapsed().as_secs_f64();
    m.command("stats 0 reset", Duration::from_secs(30))?;
    m.command(&format!("l1 restart 0 {l1_args}"), Duration::from_secs(30))?;
    let started = Instant::now();
    let deadline = started + limit;
    let mut lines: Vec<String> = Vec::new();
    // The console ring keeps the newest 16 KiB, so a long run is read every
    // half minute as well (a half-printed last line waits for the next read).
    let gather = |m: &mut nvmx_tests::Machine, lines: &mut Vec<String>, ended: bool| -> Result<()> {
        nvmx_tests::fuzz_long::merge_console(lines, &m.command("console 0", Duration::from_secs(30))?, ended);
        Ok(())
    };
    // Short waits first (a short run ends in seconds), then every 2 s; the
    // console read while the L1 runs only every ~30 s (reading it takes the
    // shell's time on the L1's core).
    // FUZZ_POKE_MS=n: ask every n ms instead, so that L0's serial
    // interrupts land at many more points of the nested run (a hunt for
    // timing-dependent differences).
    let poke = std::env::var("FUZZ_POKE_MS").ok().and_then(|v| v.parse().ok()).map(Duration::from_millis);
    let mut wait = poke.unwrap_or(Duration::from_millis(250));
    let mut last_read = Instant::now();
    while Instant::now() < deadline {
        std::thread::sleep(wait);
        wait = poke.unwrap_or((wait * 2).min(Duration::from_secs(2)));
        let state = m.command("l1 0", Duration::from_secs(30))?;
        if state.contains("stopped") {
            println!("nvmx stopped the L1 — a bug in nvmx:\n{state}");
            gather(&mut m, &mut lines, true)?;
            break;
        }
        if state.contains("cpu 0: halted") || state.contains("cpu 0: exited") {
            gather(&mut m, &mut lines, true)?;
            if lines.last().map(String::as_str) == Some("l1: fuzz done") {
                break;
            }
        }
        if last_read.elapsed() > Duration::from_secs(30) {
            gather(&mut m, &mut lines, false)?;
            last_read = Instant::now();
        }
    }
    let run_secs = started.elapsed().as_secs_f64();
    let stats_csv = m.command("stats 0 --csv", Duration::from_secs(30))?;
    Ok(Nested { lines, boot_secs, run_secs, stats_csv })
}

/// `l1: fuzz workload, seed S, N operations` → N.
fn ops_of(lines: &[String]) -> u64 {
    lines.first().and_then(|l| l.split(", ").nth(2)).and_then(|w| w.split_whitespace().next()).and_then(|n| n.parse().ok()).unwrap_or(0)
}

fn main() -> Result<()> {
    let mut args = std::env::args().skip(1);
    let l1_args = args.next().unwrap_or_else(|| String::from("workload=fuzz seed=1 exits=6000"));
    let model = args.next().unwrap_or_else(|| String::from("corei7_haswell_4770"));
    let limit = Duration::from_secs(1800);
    let serial = std::env::var("FUZZ_SERIAL").is_ok_and(|v| v == "1");

    let wall = Instant::now();
    let (bare, nested) = if serial {
        (bare(&model, limit), nested(&model, &l1_args, limit))
    } else {
        std::thread::scope(|s| {
            let b = s.spawn(|| bare(&model, limit));
            let n = nested(&model, &l1_args, limit);
            (b.join().unwrap_or_else(|_| Err(nvmx_tests::Error::new("the bare run's thread panicked"))), n)
        })
    };
    let wall = wall.elapsed().as_secs_f64();
    let (bare, bare_secs) = bare?;
    let n = nested?;
    println!("$ {l1_args}   (Bochs {model}: bare | nested under nvmx)");
    let width = bare.iter().map(String::len).max().unwrap_or(0);
    for i in 0..bare.len().max(n.lines.len()) {
        let (a, b) = (bare.get(i).map_or("", String::as_str), n.lines.get(i).map_or("", String::as_str));
        println!("{a:width$} {} {b}", if a == b { "|" } else { "X" });
    }
    match bare.iter().zip(&n.lines).position(|(a, b)| a != b) {
        None if bare.len() == n.lines.len() && !bare.is_empty() => println!("identical"),
        None => println!("one run is incomplete (see above)"),
        Some(i) => println!("they part at line {i}: rerun with SHOW=<an operation 40 or less before it>"),
    }
    // Where the time went.
    let ops = ops_of(&bare).max(1);
    println!(
        "time: bare {bare_secs:.1} s from power-on ({:.0} op/s); nested {:.1} s boot + {:.1} s run ({:.0} op/s); {wall:.1} s wall{}",
        ops as f64 / bare_secs,
        n.boot_secs,
        n.run_secs,
        ops as f64 / n.run_secs,
        if serial { " (one emulator at a time)" } else { " (both at once)" }
    );
    let mut rows: Vec<(u64, u64, String)> = n
        .stats_csv
        .lines()
        .map(|l| l.trim().split(',').map(str::to_string).collect::<Vec<_>>())
        .filter(|c| c.len() > 7 && c[0] == "0")
        .filter_map(|c| Some((c[5].parse().ok()?, c[7].parse().ok()?, format!("{} {} {}", c[1], c[2], c[3]))))
        .collect();
    rows.sort_by(|a, b| b.1.cmp(&a.1));
    let (exits, cycles) = (rows.iter().map(|r| r.0).sum::<u64>(), rows.iter().map(|r| r.1).sum::<u64>());
    println!(
        "nvmx on core 0 during the nested run: {:.1} L0 exits and {:.0} L0 instructions per operation; by L0 instructions:",
        exits as f64 / ops as f64,
        cycles as f64 / ops as f64
    );
    for (count, cyc, what) in rows.iter().take(8) {
        println!("  {what:<40} {:>7.2} exits/op {:>7.0} L0 instr/op", *count as f64 / ops as f64, *cyc as f64 / ops as f64);
    }
    Ok(())
}
