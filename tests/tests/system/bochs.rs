//! Bochs: the reference VT-x (PLATFORM.md). Ivy Bridge has no VMCS shadowing, Haswell has it.

use crate::common::{self, BOCHS};
use nvmx_tests::{Bochs, Result};
use std::time::Duration;

/// `corei7_ivy_bridge_3770k` × 2: VMX without VMCS shadowing.
#[test]
fn bochs_ivy_2cpu() -> Result<()> {
    let t = BOCHS;
    let mut m = Bochs::new("bochs_ivy_2cpu", "corei7_ivy_bridge_3770k")
        .cpus(2)
        .hard_limit(Duration::from_secs(240))
        .start()?;
    m.boot_to_prompt(t.boot)?;
    common::cpus_all_online(&mut m, t, 2)?;
    common::vmx_capabilities(&mut m, t, false)?;
    // No VMCS shadowing on Ivy Bridge: `shadow on` says why, nothing changes.
    let out = m.command("shadow on", t.command)?;
    m.check(out.starts_with("error: shadow: this CPU has no VMCS shadowing") && out.lines().count() == 1, || {
        format!("`shadow on` on ivy:\n{out}")
    })?;
    let out = m.command("shadow adaptive 1", t.command)?;
    m.check(out.starts_with("error: shadow: this CPU has no VMCS shadowing") && out.lines().count() == 1, || {
        format!("`shadow adaptive` on ivy:\n{out}")
    })?;
    let out = m.command("shadow", t.command)?;
    let lines: Vec<&str> = out.lines().filter(|l| !l.trim().is_empty()).collect();
    m.check(lines.len() == 2 && lines.iter().all(|l| l.contains("off (not supported by this CPU)")), || {
        format!("`shadow` on ivy: expected one `off (not supported by this CPU)` line per core:\n{out}")
    })?;
    common::poweroff(&mut m, t)
}

/// `corei7_haswell_4770` × 4: VMX with VMCS shadowing.
#[test]
fn bochs_haswell_4cpu() -> Result<()> {
    let t = BOCHS;
    let mut m = Bochs::new("bochs_haswell_4cpu", "corei7_haswell_4770")
        .cpus(4)
        .hard_limit(Duration::from_secs(240))
        .start()?;
    m.boot_to_prompt(t.boot)?;
    common::cpus_all_online(&mut m, t, 4)?;
    common::vmx_capabilities(&mut m, t, true)?;
    common::poweroff(&mut m, t)
}
