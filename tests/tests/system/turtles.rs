//! Turtles: nvmx as its own L1 (`make turtles`, `build/turtles.iso`). The
//! outer nvmx runs its own kernel as the L1 of its one core; the inner nvmx
//! finds its ACPI tables and its one CPU, enters VMX root and runs its L1
//! (the built-in L1, its GRUB module, forum workload), whose L2 is the
//! machine's L3. `attach 0` gives the inner nvmx's shell.

use std::time::{Duration, Instant};

use nvmx_tests::{Bochs, Machine, Result};

use crate::common::{Timeouts, BOCHS};

/// One row of `stats`: level ("L1", "L2 (L0)", "L2 (to L1)"), exit reason, times.
fn rows(out: &str) -> Vec<(String, u32, u64)> {
    let mut v = Vec::new();
    for line in out.lines() {
        let tok: Vec<&str> = line.split_whitespace().collect();
        if tok.len() < 6 || tok[0].parse::<u32>().is_err() {
            continue;
        }
        let (level, rest) = match tok[1..] {
            ["L1", ..] => ("L1".to_string(), &tok[2..]),
            ["L2", "(L0)", ..] => ("L2 (L0)".to_string(), &tok[3..]),
            ["L2", "(to", "L1)", ..] => ("L2 (to L1)".to_string(), &tok[4..]),
            _ => continue,
        };
        // reason, name, times (hex), times
        if let (Some(Ok(reason)), Some(Ok(times))) = (rest.first().map(|s| s.parse()), rest.get(3).map(|s| s.parse())) {
            v.push((level, reason, times));
        }
    }
    v
}

fn total(rows: &[(String, u32, u64)], level: impl Fn(&str) -> bool) -> u64 {
    rows.iter().filter(|r| level(&r.0)).map(|r| r.2).sum()
}

/// The inner nvmx's `stats` over the attached line (its own table).
fn inner_stats(m: &mut Machine, t: Timeouts) -> Result<String> {
    m.send(b"stats\r")?;
    let f = m.expect("failed L0 VMREAD/VMWRITEs", t.command)?;
    m.expect("nvmx> ", t.command)?;
    Ok(f.before)
}

/// `shadow`: the outer nvmx's own shadowing (`shadow off all` when false);
/// `inner_shadow`: the inner nvmx's (`shadow off` on its shell when false).
/// Where the CPU has shadowing (haswell) the outer nvmx offers it to the
/// inner one, which then shadows its L1's VMREAD/VMWRITE: the outer nvmx
/// serves those (its L2's) from the inner's shadow VMCS (`L2 (L0)` rows of
/// reasons 23/25), and the inner nvmx sees almost none of them.
fn turtles(name: &str, model: &str, shadow: bool, inner_shadow: bool) -> Result<()> {
    let t = BOCHS;
    let mut m = Bochs::new(name, model).build_iso("turtles.iso").cpus(1).megs(512).hard_limit(Duration::from_secs(360)).start()?;
    m.boot_to_prompt(t.boot)?;
    if !shadow {
        m.command("shadow off all", t.command)?;
    }
    // The inner nvmx's L1 runs as the outer nvmx's L2: its exits reach the
    // outer `stats` as L2 rows. (`console 0` is of no use here: its output
    // ends at the inner nvmx's first prompt, which the harness takes for
    // the outer one.)
    let deadline = Instant::now() + Duration::from_secs(150);
    let mut out = String::new();
    while Instant::now() < deadline && !out.contains(" L2 ") {
        std::thread::sleep(Duration::from_secs(3));
        out = m.command("stats 0", t.command)?;
    }
    m.check(out.contains(" L2 "), || format!("the inner nvmx's L1 never ran:\n{out}"))?;
    m.command("stats 0 reset", t.command)?;
    m.send(b"attach 0\r")?;
    m.expect("Ctrl-] returns to the shell", t.command)?;
    // The inner nvmx's own prompt and counters.
    m.send(b"\r")?;
    m.expect("nvmx> ", t.command)?;
    let offered = model.contains("haswell");
    m.send(b"shadow\r")?;
    let f = m.expect("nvmx> ", t.command)?;
    let want = if offered { "cpu 0: vmcs shadowing on" } else { "not supported by this CPU" };
    m.check(f.before.contains(want), || format!("inner `shadow`: expected `{want}`:\n{}", f.before))?;
    if !inner_shadow {
        m.send(b"shadow off\r")?;
        let f = m.expect("nvmx> ", t.command)?;
        m.check(f.before.contains("cpu 0: vmcs shadowing off"), || format!("inner `shadow off`:\n{}", f.before))?;
        // The outer counters start again from here.
        m.send(&[0x1D])?;
        m.expect("[detached from cpu 0]", t.command)?;
        m.expect("nvmx> ", t.command)?;
        m.command("stats 0 reset", t.command)?;
        m.send(b"attach 0\r")?;
        m.expect("Ctrl-] returns to the shell", t.command)?;
        m.send(b"\r")?;
        m.expect("nvmx> ", t.command)?;
    }
    m.send(b"stats reset\r")?;
    m.expect("nvmx> ", t.command)?;
    std::thread::sleep(Duration::from_secs(10));
    let first = rows(&inner_stats(&mut m, t)?);
    std::thread::sleep(Duration::from_secs(10));
    let inner = inner_stats(&mut m, t)?;
    let second = rows(&inner);
    let l3 = |r: &[(String, u32, u64)]| total(r, |l| l.starts_with("L2"));
    let all = |r: &[(String, u32, u64)]| total(r, |_| true);
    m.check(l3(&first) > 0 && l3(&second) > l3(&first) && all(&second) > all(&first), || {
        format!("the inner nvmx's counters do not show L3 running and growing:\n{inner}")
    })?;
    // (`inner` ends just before "failed L0 VMREAD/VMWRITEs".)
    m.check(inner.trim_end().ends_with("0 entries refused by the CPU after nvmx's checks passed, 0"), || {
        format!("inner nvmx: refused entries or failed VMREAD/VMWRITEs:\n{inner}")
    })?;
    m.send(b"l1\r")?;
    let f = m.expect("nvmx> ", t.command)?;
    m.check(f.before.contains("cpu 0: running"), || format!("inner `l1`: its L1 is not running:\n{}", f.before))?;
    m.send(&[0x1D])?;
    m.expect("[detached from cpu 0]", t.command)?;
    m.expect("nvmx> ", t.command)?;
    let out = m.command("stats 0", t.command)?;
    let outer = rows(&out);
    // The outer nvmx sees the inner nvmx as L1 (its VMX instructions,
    // emulated) and the inner's L1 and L3 as L2.
    let vmx_of_inner = outer.iter().filter(|r| r.0 == "L1" && (23..=25).contains(&r.1)).map(|r| r.2).sum::<u64>();
    m.check(vmx_of_inner > 0 && total(&outer, |l| l.starts_with("L2")) > 0, || format!("outer `stats 0`:\n{out}"))?;
    m.check(out.contains("0 entries refused by the CPU after nvmx's checks passed, 0 failed L0 VMREAD/VMWRITEs"), || {
        format!("outer nvmx: refused entries or failed VMREAD/VMWRITEs:\n{out}")
    })?;
    // Both counted since about the same moment (the resets above).
    let per_l3 = |n: u64| n as f64 / l3(&second) as f64;
    // The inner nvmx's L1's VMREAD/VMWRITE exits, and the outer nvmx's
    // L2 VMREAD/VMWRITEs it served from the inner's shadow VMCS.
    let vmrw = |r: &[(String, u32, u64)], level: &str| r.iter().filter(|x| x.0 == level && matches!(x.1, 23 | 25)).map(|x| x.2).sum::<u64>();
    let inner_vmrw = vmrw(&second, "L1") - vmrw(&first, "L1");
    let l3_window = l3(&second) - l3(&first);
    let served = vmrw(&outer, "L2 (L0)");
    eprintln!(
        "[{name}] inner nvmx's L1: {inner_vmrw} VMREAD/VMWRITE exits in {l3_window} L3 exits; outer nvmx served {served} L2 VMREAD/VMWRITEs from the shadow vmcs12"
    );
    if offered && inner_shadow {
        m.check(inner_vmrw * 20 <= l3_window && served > l3(&second), || {
            format!("inner shadowing: {inner_vmrw} inner VMREAD/VMWRITE exits for {l3_window} L3 exits, {served} served by the outer nvmx\n{inner}\n{out}")
        })?;
    } else {
        m.check(inner_vmrw >= l3_window && served == 0, || {
            format!("no inner shadowing: {inner_vmrw} inner VMREAD/VMWRITE exits for {l3_window} L3 exits, {served} served by the outer nvmx\n{inner}\n{out}")
        })?;
    }
    // The inner nvmx's VMX instructions (VMCALL..VMXON, INVEPT, INVVPID).
    let vmx_insn = |r: &(String, u32, u64)| r.0 == "L1" && matches!(r.1, 18..=27 | 50 | 53);
    eprintln!(
        "[{name}] exit multiplication: {} L3 exits; per L3 exit {:.1} inner nvmx exits ({:.1} from its L1), {:.1} outer nvmx exits ({:.1} from the inner nvmx, {:.1} of them its VMX instructions; {:.1} from L2/L3)",
        l3(&second),
        per_l3(all(&second)),
        per_l3(total(&second, |l| l == "L1")),
        per_l3(all(&outer)),
        per_l3(total(&outer, |l| l == "L1")),
        per_l3(outer.iter().filter(|r| vmx_insn(r)).map(|r| r.2).sum()),
        per_l3(total(&outer, |l| l.starts_with("L2"))),
    );
    crate::common::poweroff(&mut m, t)
}

#[test]
fn bochs_turtles_haswell() -> Result<()> {
    turtles("bochs_turtles_haswell", "corei7_haswell_4770", true, true)
}

#[test]
fn bochs_turtles_haswell_inner_noshadow() -> Result<()> {
    turtles("bochs_turtles_haswell_inner_noshadow", "corei7_haswell_4770", true, false)
}

#[test]
fn bochs_turtles_haswell_noshadow() -> Result<()> {
    turtles("bochs_turtles_haswell_noshadow", "corei7_haswell_4770", false, true)
}

#[test]
fn bochs_turtles_ivy() -> Result<()> {
    turtles("bochs_turtles_ivy", "corei7_ivy_bridge_3770k", true, true)
}
