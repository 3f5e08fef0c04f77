//! `make bench`: boots nvmx in Bochs `corei7_haswell_4770` (the model with
//! VMCS shadowing), runs the shell's `bench` command and prints its report;
//! the CSV lines go to `build/bench.csv`, and `stats --csv` after it to
//! `build/stats.csv` (both for `make plot`). Figures, not a pass/fail test.
//!
//! Usage: bench [<exits>] [<cpus>]   (defaults 4000, 2)

use std::time::Duration;

use nvmx_tests::{Bochs, Result};

fn main() -> Result<()> {
    let mut args = std::env::args().skip(1);
    let exits: u64 = args.next().and_then(|a| a.parse().ok()).unwrap_or(4000);
    let cpus: u32 = args.next().and_then(|a| a.parse().ok()).unwrap_or(2);
    let mut m = Bochs::new("bench", "corei7_haswell_4770").cpus(cpus).hard_limit(Duration::from_secs(1800)).start()?;
    m.boot_to_prompt(Duration::from_secs(150))?;
    let cmd = format!("bench {exits} --csv");
    let out = m.command(&cmd, Duration::from_secs(1700))?;
    let (csv, report): (Vec<&str>, Vec<&str>) = out.lines().partition(|l| l.starts_with("bench,"));
    println!("$ {cmd}   (Bochs corei7_haswell_4770, {cpus} cores; TSC = retired instructions)");
    for line in report.iter().filter(|l| !l.starts_with('[')) {
        println!("{line}");
    }
    let path = nvmx_tests::paths::workspace().join("build").join("bench.csv");
    let mut text = String::from("bench,cpu,shadowing,from,reason,name,exits,l0_cycles\n");
    for l in &csv {
        text.push_str(l);
        text.push('\n');
    }
    std::fs::write(&path, text)?;
    // The counters of the last (shadowing on) run, per core and level, for `make plot`.
    let stats = m.command("stats --csv", Duration::from_secs(60))?;
    let stats_path = nvmx_tests::paths::workspace().join("build").join("stats.csv");
    std::fs::write(&stats_path, stats)?;
    println!("CSV: {} and {} (`make plot` draws them)", path.display(), stats_path.display());
    Ok(())
}
