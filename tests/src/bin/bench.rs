//! `make bench`: boots the built-in L1 bare in Bochs `corei7_haswell_4770`
//! (the model with VMCS shadowing; `build/l1-bench.iso`, forum workload with
//! `time`) for its TSC ticks per L2 exit, then nvmx on the same model, runs
//! the shell's `bench` command with that bare figure and prints its report;
//! the CSV lines go to `build/bench.csv` (counters) and
//! `build/bench-figures.csv` (figures), and `stats --csv` after it to
//! `build/stats.csv` (`make plot` draws bench.csv and stats.csv).
//! Figures, not a pass/fail test.
//!
//! Usage: bench [<exits>] [<cpus>] [<cycles per VM exit/entry pair>] [<bare ticks per L2 exit>]
//! (defaults 4000, 2, 1000; the bare figure given, the bare run is skipped —
//! for quick iterations on L0 that leave the L1 unchanged)

use std::time::Duration;

use nvmx_tests::{Bochs, Result};

fn main() -> Result<()> {
    let mut args = std::env::args().skip(1);
    let exits: u64 = args.next().and_then(|a| a.parse().ok()).unwrap_or(4000);
    let cpus: u32 = args.next().and_then(|a| a.parse().ok()).unwrap_or(2);
    let pair: u64 = args.next().and_then(|a| a.parse().ok()).unwrap_or(1000);
    let given: Option<u64> = args.next().and_then(|a| a.parse().ok());
    let model = "corei7_haswell_4770";

    // The same L1, bare: its own timing of its L2-exit loop.
    let bare = if given.is_some() {
        given
    } else {
        let mut b = Bochs::new("bench_bare", model).build_iso("l1-bench.iso").hard_limit(Duration::from_secs(600)).start()?;
        b.expect("l1: done", Duration::from_secs(580))?;
        let text = b.serial().transcript();
        let line = text.lines().find(|l| l.contains("l1: time ")).map(str::trim).map(String::from);
        line.and_then(|l| l.rsplit(", ").next().and_then(|w| w.split_whitespace().next()).and_then(|n| n.parse::<u64>().ok()))
    };
    let Some(bare) = bare else {
        return Err(nvmx_tests::Error::new("the bare L1 printed no `l1: time` line (build/l1-bench.iso: make bench builds it)"));
    };

    let mut m = Bochs::new("bench", model).cpus(cpus).hard_limit(Duration::from_secs(1800)).start()?;
    m.boot_to_prompt(Duration::from_secs(150))?;
    let cmd = format!("bench {exits} --csv --pair {pair} --bare {bare}");
    let out = m.command(&cmd, Duration::from_secs(1700))?;
    let (csv, report): (Vec<&str>, Vec<&str>) = out.lines().partition(|l| l.starts_with("bench,") || l.starts_with("benchfig,"));
    println!("$ {cmd}   (Bochs {model}, {cpus} cores; the bare L1 alone on the same model: {bare} TSC ticks per L2 exit)");
    for line in report.iter().filter(|l| !l.starts_with('[')) {
        println!("{line}");
    }
    let build = nvmx_tests::paths::workspace().join("build");
    let mut counters = String::from("bench,cpu,shadowing,from,reason,name,exits,l0_cycles\n");
    let mut figures = String::from("benchfig,cpu,figure,shadowing off,shadowing on,goal\n");
    for l in &csv {
        let file = if l.starts_with("benchfig,") { &mut figures } else { &mut counters };
        file.push_str(l);
        file.push('\n');
    }
    std::fs::write(build.join("bench.csv"), counters)?;
    std::fs::write(build.join("bench-figures.csv"), figures)?;
    // The counters of the last run, per core and level, for `make plot`.
    let stats = m.command("stats --csv", Duration::from_secs(60))?;
    std::fs::write(build.join("stats.csv"), stats)?;
    println!("CSV: {}, bench-figures.csv and stats.csv (`make plot` draws them)", build.join("bench.csv").display());
    Ok(())
}
