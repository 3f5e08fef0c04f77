//! The L1's PC (issue 9): the built-in L1's `workload=platform` checks run
//! bare on Bochs (Bochs' own PC: its BIOS, ACPI tables, PIIX4, LAPIC,
//! IOAPIC) and as L1 under nvmx (nvmx's devices), and must print the same
//! lines. The checks print only what the architecture and data sheets fix
//! (vectors, modes, agreement within 1 %, presence), never addresses, OEM
//! strings, processor counts or the time of day, where the two PCs may
//! legitimately differ.

use crate::common::BOCHS;
use nvmx_tests::{Bochs, Result};
use std::time::Duration;

/// The `l1: platform …` lines of a transcript, in order.
fn platform_lines(text: &str) -> Vec<String> {
    text.lines().map(|l| l.trim().to_string()).filter(|l| l.starts_with("l1: platform")).collect()
}

fn differential(name: &str, model: &str) -> Result<()> {
    let bare = {
        let mut b = Bochs::new(&format!("{name}_bare"), model).build_iso("l1-platform.iso").hard_limit(Duration::from_secs(180)).start()?;
        b.expect("l1: done", Duration::from_secs(150))?;
        platform_lines(&b.serial().transcript())
    };
    let t = BOCHS;
    let mut m = Bochs::new(name, model).cpus(1).hard_limit(Duration::from_secs(400)).start()?;
    m.boot_to_prompt(t.boot)?;
    m.command("l1 restart 0 workload=platform", t.command)?;
    let deadline = std::time::Instant::now() + Duration::from_secs(300);
    let mut console = String::new();
    while std::time::Instant::now() < deadline {
        console = m.command("console 0", t.command)?;
        if console.contains("l1: done") || console.contains("l1: exception") {
            break;
        }
        std::thread::sleep(Duration::from_secs(2));
    }
    let nested = platform_lines(&console);
    m.check(bare.iter().any(|l| l.ends_with(" passed, 0 failed")), || format!("platform failures bare:\n{}", bare.join("\n")))?;
    m.check(nested == bare, || {
        let first = bare.iter().zip(&nested).position(|(a, b)| a != b).unwrap_or(bare.len().min(nested.len()));
        format!(
            "nested output differs from bare at line {first}: bare {:?}, nested {:?}\nbare:\n{}\nnested:\n{}",
            bare.get(first), nested.get(first), bare.join("\n"), nested.join("\n")
        )
    })?;
    // The L1 ended with ACPI S5: nvmx shows it powered off, the shell lives on.
    let out = m.command("l1 0", t.command)?;
    m.check(out.contains("cpu 0: powered off"), || format!("`l1 0` after S5:\n{out}"))?;
    crate::common::poweroff(&mut m, t)
}

#[test]
fn bochs_platform_differential_haswell() -> Result<()> {
    differential("bochs_platform_differential_haswell", "corei7_haswell_4770")
}

#[test]
fn bochs_platform_differential_ivy() -> Result<()> {
    differential("bochs_platform_differential_ivy", "corei7_ivy_bridge_3770k")
}
