//! Racing vCPUs on one VMCS1-2 (issue 12, item 3): the built-in L1's
//! `workload=race` on a two-vCPU L1 (`l1vcpus=2`, cores 0 and 1 of Bochs)
//! and bare on Bochs SMP. The AP rewrites the BSP's VM-entry MSR-load list,
//! MSR bitmap and EPT1-2 leaf while the BSP runs VMCLEAR/VMPTRLD/INVEPT/
//! VMLAUNCH/VMRESUME; every outcome must be one the SDM allows for a value
//! the AP wrote (`guest/src/race.rs` classifies them), the AP must really have
//! raced (its writes, at least two outcome classes), nvmx must stop no L1 and
//! `integrity` must find L0 unharmed.

use crate::common::BOCHS;
use nvmx_tests::{Bochs, Machine, Result};
use std::time::Duration;

/// Rounds of the race: the Makefile's RACE_ROUNDS (build/l1-race.iso).
const ROUNDS: u64 = 300;

/// The race lines of a console or transcript (from the workload's first line
/// to `l1: done`), trimmed.
fn race_lines(text: &str) -> Vec<String> {
    let lines: Vec<String> = text.lines().map(|l| l.trim().to_string()).filter(|l| l.starts_with("l1: ")).collect();
    let start = lines.iter().position(|l| l.starts_with("l1: race workload")).unwrap_or(lines.len());
    let end = lines.iter().position(|l| l == "l1: done").map_or(lines.len(), |e| e + 1);
    lines[start..end.max(start)].to_vec()
}

/// The allowed-outcome check, the same bare and nested: the summary says no
/// disallowed outcome in `ROUNDS` rounds, at least two allowed classes were
/// seen, the AP stopped and wrote something; returns the outcome lines.
fn allowed_outcomes(m: &Machine, lines: &[String], what: &str) -> Result<Vec<String>> {
    let all = lines.join("\n");
    m.check(lines.iter().any(|l| l.starts_with("l1: race: AP up")), || format!("{what}: the AP did not come up:\n{all}"))?;
    let writes: u64 = lines
        .iter()
        .find_map(|l| l.strip_prefix("l1: race ap stopped=yes writes="))
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    m.check(writes > 0, || format!("{what}: the AP did not race (no writes, or it did not stop):\n{all}"))?;
    let summary = lines.iter().find(|l| l.starts_with("l1: race summary ")).cloned().unwrap_or_default();
    let classes: u64 = summary.split_whitespace().find_map(|w| w.strip_prefix("classes=")).and_then(|n| n.parse().ok()).unwrap_or(0);
    m.check(
        summary.starts_with(&format!("l1: race summary rounds={ROUNDS} ")) && summary.ends_with(" disallowed=0") && classes >= 2,
        || format!("{what}: outcomes not all allowed, or fewer than 2 classes:\n{all}"),
    )?;
    m.check(!lines.iter().any(|l| l.contains("disallowed:")), || format!("{what}: a disallowed outcome:\n{all}"))?;
    println!("{what}: AP writes {writes}, {summary}");
    let outcomes: Vec<String> = lines.iter().filter(|l| l.starts_with("l1: race outcome ")).cloned().collect();
    for o in &outcomes {
        println!("{what}: {o}");
    }
    Ok(outcomes)
}

fn race(name: &str, model: &str) -> Result<()> {
    // Bare on Bochs SMP: the same workload on the real (emulated) APICs.
    {
        let mut b = Bochs::new(&format!("{name}_bare"), model)
            .build_iso("l1-race.iso")
            .cpus(2)
            .hard_limit(Duration::from_secs(120))
            .start()?;
        b.expect("l1: done", Duration::from_secs(100))?;
        let lines = race_lines(&b.serial().transcript());
        allowed_outcomes(&b, &lines, "bare")?;
    }
    let t = BOCHS;
    let mut m = Bochs::new(name, model).build_iso("nvmx-race.iso").cpus(2).hard_limit(Duration::from_secs(300)).start()?;
    m.boot_to_prompt(t.boot)?;
    // The two-vCPU L1 as booted (echo on vCPU 0, vCPU 1 parked for SIPI).
    let mut l1 = String::new();
    for _ in 0..10 {
        l1 = m.command("l1 1", t.command)?;
        if l1.contains("vCPU 1 of 2 of cpu 0's L1, APIC ID 1; waiting for SIPI") {
            break;
        }
        std::thread::sleep(Duration::from_secs(1));
    }
    m.check(l1.contains("vCPU 1 of 2 of cpu 0's L1, APIC ID 1; waiting for SIPI"), || format!("`l1 1` on a two-vCPU L1:\n{l1}"))?;
    // Before the race: L0's text and rodata and core 0's VMCS0-1 host state
    // (core 1's VMCS0-1, never entered while parked, is not measured yet).
    let snap = m.command("integrity snap", Duration::from_secs(60))?;
    m.check(
        snap.contains("integrity: snapshot of 3 items kept") && snap.contains("cpu 0 VMCS0-1 host state"),
        || format!("`integrity snap` (L0 and cpu 0's host state):\n{snap}"),
    )?;
    let lines = race_lines(&run_race(&mut m, "")?);
    allowed_outcomes(&m, &lines, "nested")?;
    let l1 = m.command("l1 1", t.command)?;
    m.check(l1.contains("vCPU 1 of 2 of cpu 0's L1, APIC ID 1; started"), || format!("`l1 1` after the race:\n{l1}"))?;
    let ipis: u64 = l1
        .lines()
        .find_map(|l| l.split_once(" IPIs received from the other vCPU"))
        .and_then(|(head, _)| head.rsplit(' ').next()?.parse().ok())
        .unwrap_or(0);
    // INIT, SIPI (one or two), start, stop.
    m.check(ipis >= 4, || format!("vCPU 1 received {ipis} IPIs, expected INIT, SIPI, start and stop:\n{l1}"))?;
    // L0 unharmed; the race L1's RAM is new (quiescent now), measured twice
    // to show the AP wrote no more once it ended.
    let check = m.command("integrity check", Duration::from_secs(60))?;
    m.check(check.contains("integrity: unharmed: 3 of 3 items equal (3 new)"), || format!("`integrity check` after the race:\n{check}"))?;
    m.command("integrity snap", Duration::from_secs(60))?;
    std::thread::sleep(Duration::from_secs(2));
    let check = m.command("integrity check", Duration::from_secs(60))?;
    m.check(check.contains("integrity: unharmed: 6 of 6 items equal"), || format!("`integrity check` of the ended race L1:\n{check}"))?;
    // The current VMCS region scribbled over too (nested only: undefined by
    // the SDM, harmless under nvmx, which acts on its copy): the same
    // allowed outcomes; L0 and both host states unharmed, only the race
    // L1's RAM (seen from both cores) differs.
    let lines = race_lines(&run_race(&mut m, " scribble")?);
    m.check(lines.first().is_some_and(|l| l.ends_with("the current VMCS region scribbled")), || format!("not the scribbling run:\n{}", lines.join("\n")))?;
    allowed_outcomes(&m, &lines, "nested, VMCS region scribbled")?;
    let check = m.command("integrity check", Duration::from_secs(60))?;
    let differs: Vec<&str> = check.lines().filter(|l| l.starts_with("integrity: DIFFERS")).collect();
    m.check(
        check.contains("integrity: HARMED: 2 differ, 0 gone, 4 equal of 6 items") && differs.iter().all(|l| l.contains(" L1 RAM ")),
        || format!("`integrity check` after the scribbling run must name the race L1's RAM alone:\n{check}"),
    )?;
    crate::common::poweroff(&mut m, t)
}

/// `l1 restart 0 workload=race exits=ROUNDS<extra>` on the two-vCPU L1,
/// until both vCPUs ended by themselves (never stopped by L0); its console.
fn run_race(m: &mut Machine, extra: &str) -> Result<String> {
    let t = BOCHS;
    m.command(&format!("l1 restart 0 workload=race exits={ROUNDS}{extra}"), t.command)?;
    let deadline = std::time::Instant::now() + Duration::from_secs(150);
    loop {
        std::thread::sleep(Duration::from_secs(2));
        let console = m.command("console 0", t.command)?;
        let state = m.command("l1", t.command)?;
        m.check(!state.contains("stopped"), || format!("nvmx stopped a vCPU of the race L1:\n{state}\n{console}"))?;
        // vCPU 0 ends with Bochs' 0x8900 "Shutdown" (exited) or `cli; hlt`;
        // vCPU 1 halts for good by itself once stopped (or ends with vCPU 0).
        let ended = |cpu: usize| ["halted for good", "exited (code 0)"].iter().any(|e| state.contains(&format!("cpu {cpu}: {e}")));
        if console.contains("l1: done") && ended(0) && ended(1) {
            return Ok(console);
        }
        m.check(std::time::Instant::now() < deadline, || format!("the race L1 did not end:\n{state}\n{console}"))?;
    }
}

#[test]
fn bochs_race_haswell_2cpu() -> Result<()> {
    race("bochs_race_haswell_2cpu", "corei7_haswell_4770")
}

#[test]
fn bochs_race_ivy_2cpu() -> Result<()> {
    race("bochs_race_ivy_2cpu", "corei7_ivy_bridge_3770k")
}
