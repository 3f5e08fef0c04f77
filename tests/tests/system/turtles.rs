//! Turtles: nvmx as its own L1 (`make turtles`, `build/turtles*.iso`). The
//! outer nvmx runs the inner nvmx's kernel as the L1 of its one core; the
//! inner nvmx finds its ACPI tables and its one CPU, enters VMX root and runs
//! its own L1 (the built-in L1 as its GRUB module, forum workload), whose L2
//! is L3 of the machine.

use std::time::{Duration, Instant};

use nvmx_tests::{Bochs, Result};

use crate::common::BOCHS;

fn turtles(name: &str, model: &str, iso: &str) -> Result<()> {
    let t = BOCHS;
    let mut m = Bochs::new(name, model).build_iso(iso).cpus(1).megs(512).hard_limit(Duration::from_secs(420)).start()?;
    m.boot_to_prompt(t.boot)?;
    // The inner nvmx's L1 runs as the outer nvmx's L2: its exits reach the
    // outer `stats` as L2 rows. (`console 0` is of no use here: its output
    // ends at the inner nvmx's first prompt, which the harness takes for
    // the outer one.)
    let deadline = Instant::now() + Duration::from_secs(200);
    let mut out = String::new();
    while Instant::now() < deadline && !out.contains(" L2 ") {
        std::thread::sleep(Duration::from_secs(3));
        out = m.command("stats 0", t.command)?;
    }
    m.check(out.contains(" L2 "), || format!("the inner nvmx's L1 never ran:\n{out}"))?;
    eprintln!("[{name}] outer stats:\n{out}");
    m.send(b"attach 0\r")?;
    m.expect("Ctrl-] returns to the shell", t.command)?;
    for i in 0..2 {
        m.send(b"stats\r")?;
        let f = m.expect("L0 share", t.command)?;
        eprintln!("[{name}] inner stats {i}: {f:?}");
        std::thread::sleep(Duration::from_secs(5));
    }
    m.send(&[0x1D])?;
    m.expect("[detached from cpu 0]", t.command)?;
    m.expect("nvmx> ", t.command)?;
    let out = m.command("stats 0", t.command)?;
    eprintln!("[{name}] outer stats:\n{out}");
    crate::common::poweroff(&mut m, t)
}

#[test]
fn bochs_turtles_haswell() -> Result<()> {
    turtles("bochs_turtles_haswell", "corei7_haswell_4770", "turtles.iso")
}
