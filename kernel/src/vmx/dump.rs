//! `vmcs 01`: the current VMCS field by field, grouped like Linux's
//! `dump_vmcs()` (guest state, host state, controls, exit information).
//! Field names and groups come from the one field table in `nvmx_vmx`.

use alloc::string::String;
use core::fmt::Write;

use nvmx_vmx::field::{ALL, Group};

/// Dumps the VMCS current on this core, titled `title`.
pub fn dump_current(title: &str) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "{title} at {:#x}", super::insn::vmptrst());
    for (group, heading) in [
        (Group::GuestState, "*** Guest State ***"),
        (Group::HostState, "*** Host State ***"),
        (Group::Controls, "*** Control State ***"),
        (Group::ExitInfo, "*** Exit Information ***"),
    ] {
        let _ = writeln!(out, "{heading}");
        for f in ALL.iter().filter(|f| f.group() == group) {
            // Fields this CPU does not implement fail with VMfailValid(12):
            // they are listed as such rather than shown as zero.
            match super::insn::vmread(f.encoding()) {
                Ok(v) => {
                    let _ = writeln!(out, "  {:<36} {:#06x}  {v:#018x}", f.name(), f.encoding());
                }
                Err(_) => {
                    let _ = writeln!(out, "  {:<36} {:#06x}  (not supported by this CPU)", f.name(), f.encoding());
                }
            }
        }
    }
    out
}
