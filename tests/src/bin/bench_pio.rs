//! `make bench-pio`: L0's port-I/O path per device (issue 13). Boots the
//! built-in L1's `workload=pio` bare on Bochs haswell (`build/l1-pio.iso`)
//! and as core 1's L1 under nvmx (core 0's L1 stopped), both at the same
//! instructions per second (default 200M, where Linux's PIT-only TSC
//! calibration allows ~2000 instructions per read of port 0x61), and prints
//! per port the L1's TSC ticks per read bare and nested — Bochs' TSC counts
//! retired instructions, so nested minus bare is L0's path per read: the
//! exit, its handling, the vCPU loop and the entry — with Linux's
//! calibration verdicts of both runs; CSV in `build/bench-pio.csv`.
//! Figures, not a pass/fail test (`bochs_pio_linux_calibration_haswell_2cpu`
//! is the test).
//!
//! Usage: bench_pio [<ips>]

use std::time::{Duration, Instant};

use nvmx_tests::{Bochs, Result};

/// `l1: pio …` lines of a transcript.
fn pio_lines(text: &str) -> Vec<String> {
    text.lines().map(str::trim).filter(|l| l.starts_with("l1: pio")).map(String::from).collect()
}

/// (port name, min, avg, max) of the `l1: pio read` lines.
fn reads(lines: &[String]) -> Vec<(String, u64, u64, u64)> {
    lines
        .iter()
        .filter_map(|l| {
            let rest = l.strip_prefix("l1: pio read ")?;
            let (name, figs) = rest.rsplit_once(": ")?;
            // The port number differs between the PCs (Bochs' PM timer).
            let name = name.split(" port ").next()?;
            let n: Vec<u64> = figs.trim_end_matches(" ticks").split(" / ").filter_map(|x| x.parse().ok()).collect();
            (n.len() == 3).then(|| (name.to_string(), n[0], n[1], n[2]))
        })
        .collect()
}

fn main() -> Result<()> {
    let ips: u32 = std::env::args().nth(1).and_then(|a| a.parse().ok()).unwrap_or(200_000_000);
    let model = "corei7_haswell_4770";
    let bare = {
        let mut b = Bochs::new("bench_pio_bare", model).build_iso("l1-pio.iso").ips(ips).hard_limit(Duration::from_secs(600)).start()?;
        b.expect("l1: done", Duration::from_secs(580))?;
        pio_lines(&b.serial().transcript())
    };
    let mut m = Bochs::new("bench_pio", model).cpus(2).ips(ips).hard_limit(Duration::from_secs(900)).start()?;
    m.boot_to_prompt(Duration::from_secs(150))?;
    m.command("l1 stop 0", Duration::from_secs(30))?;
    m.command("l1 restart 1 workload=pio", Duration::from_secs(30))?;
    let deadline = Instant::now() + Duration::from_secs(800);
    let mut console = String::new();
    while Instant::now() < deadline && !console.contains("l1: done") {
        std::thread::sleep(Duration::from_secs(3));
        console = m.command("console 1", Duration::from_secs(60))?;
    }
    let nested = pio_lines(&console);
    if !console.contains("l1: done") {
        return Err(nvmx_tests::Error::new(&format!("the nested pio workload did not finish:\n{console}")));
    }
    let stats = m.command("stats 1", Duration::from_secs(60))?;
    println!("Bochs {model} at {ips} instructions per second; L1 TSC ticks (= instructions) per port read, 1000 reads each (min / avg / max)");
    println!("{:<24} {:>20} {:>20} {:>12}", "port", "bare", "nested", "L0 per read");
    let mut csv = String::from("port,bare_min,bare_avg,bare_max,nested_min,nested_avg,nested_max,l0_per_read\n");
    let (b, n) = (reads(&bare), reads(&nested));
    for (name, bmin, bavg, bmax) in &b {
        let Some((_, nmin, navg, nmax)) = n.iter().find(|x| &x.0 == name) else { continue };
        let l0 = navg.saturating_sub(*bavg);
        println!("{name:<24} {:>20} {:>20} {l0:>12}", format!("{bmin} / {bavg} / {bmax}"), format!("{nmin} / {navg} / {nmax}"));
        csv.push_str(&format!("{name},{bmin},{bavg},{bmax},{nmin},{navg},{nmax},{l0}\n"));
    }
    println!("budget: Linux's pit_calibrate_tsc needs 1000 loops of `in al, 0x61` + RDTSC in 10 ms = {} instructions each at this speed", ips / 100 / 1000);
    for (what, lines) in [("bare", &bare), ("nested", &nested)] {
        for l in lines.iter().filter(|l| l.starts_with("l1: pio linux")) {
            println!("{what:>6}: {}", l.trim_start_matches("l1: pio "));
        }
    }
    println!("nvmx `stats 1` after the nested run:\n{stats}");
    let path = nvmx_tests::paths::workspace().join("build/bench-pio.csv");
    std::fs::write(&path, csv)?;
    println!("CSV: {}", path.display());
    m.send(b"poweroff\r")?;
    m.wait_exit(Duration::from_secs(60)).map(|_| ())
}
