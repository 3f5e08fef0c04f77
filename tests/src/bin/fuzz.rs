//! `make fuzz`: the differential VMX fuzzer. Runs the built-in L1's
//! `workload=fuzz` with the given arguments bare on Bochs (the reference
//! CPU) and nested under nvmx, and compares what they print: the outcome
//! counts and a hash of every outcome every 500 operations. Prints both and
//! where they part; `SHOW=<op>` then lists the operations around it.
//! Figures and a verdict, not a test (the test is `bochs_hostile_l1_fuzz_*`).
//!
//! Usage: fuzz <l1 args> [<model>]   (the ISO is build/l1-fuzz-run.iso, made
//! by `make fuzz` from the same args)

use std::time::{Duration, Instant};

use nvmx_tests::{Bochs, Result};

fn fuzz_lines(text: &str) -> Vec<String> {
    text.lines().map(|l| l.trim().to_string()).filter(|l| l.starts_with("l1: fuzz")).collect()
}

fn main() -> Result<()> {
    let mut args = std::env::args().skip(1);
    let l1_args = args.next().unwrap_or_else(|| String::from("workload=fuzz seed=1 exits=6000"));
    let model = args.next().unwrap_or_else(|| String::from("corei7_haswell_4770"));
    let limit = Duration::from_secs(1800);

    let bare = {
        let mut b = Bochs::new("fuzz_bare", &model).build_iso("l1-fuzz-run.iso").hard_limit(limit).start()?;
        b.expect("l1: done", limit)?;
        fuzz_lines(&b.serial().transcript())
    };
    let mut m = Bochs::new("fuzz_nested", &model).hard_limit(limit).start()?;
    m.boot_to_prompt(Duration::from_secs(150))?;
    m.command(&format!("l1 restart 0 {l1_args}"), Duration::from_secs(30))?;
    let deadline = Instant::now() + limit;
    let mut console = String::new();
    while Instant::now() < deadline && !console.contains("l1: done") {
        std::thread::sleep(Duration::from_secs(2));
        console = m.command("console 0", Duration::from_secs(30))?;
        let state = m.command("l1 0", Duration::from_secs(30))?;
        if state.contains("stopped") {
            println!("nvmx stopped the L1 — a bug in nvmx:\n{state}");
            break;
        }
    }
    let nested = fuzz_lines(&console);
    println!("$ {l1_args}   (Bochs {model}: bare | nested under nvmx)");
    let width = bare.iter().map(String::len).max().unwrap_or(0);
    for i in 0..bare.len().max(nested.len()) {
        let (a, b) = (bare.get(i).map_or("", String::as_str), nested.get(i).map_or("", String::as_str));
        println!("{a:width$} {} {b}", if a == b { "|" } else { "X" });
    }
    match bare.iter().zip(&nested).position(|(a, b)| a != b) {
        None if bare.len() == nested.len() && !bare.is_empty() => println!("identical"),
        None => println!("one run is incomplete (see above)"),
        Some(i) => println!("they part at line {i}: rerun with SHOW=<an operation 40 or less before it>"),
    }
    Ok(())
}
