//! `vmcs 01`: the current VMCS field by field, grouped like Linux's
//! `dump_vmcs()`. Field names and groups come from the one field table in
//! `nvmx_vmx`; the layout is `nvmx_shell::report::vmcs_dump`.

use alloc::string::String;
use alloc::vec::Vec;

use nvmx_shell::report::{DumpField, vmcs_dump};
use nvmx_vmx::field::{ALL, Group};

/// Dumps the VMCS current on this core, titled `title`. Fields this CPU does
/// not implement (VMfailValid(12)) are listed as such rather than as zero.
pub fn dump_current(title: &str) -> String {
    let title = alloc::format!("{title} at {:#x}", super::insn::vmptrst());
    dump_with(&title, |f| super::insn::vmread(f.encoding()).ok())
}

/// Dumps every field of the table with `value`, grouped.
pub fn dump_with(title: &str, value: impl Fn(nvmx_vmx::field::Field) -> Option<u64>) -> String {
    let groups = [
        (Group::GuestState, "Guest State"),
        (Group::HostState, "Host State"),
        (Group::Controls, "Control State"),
        (Group::ExitInfo, "Exit Information"),
    ];
    let fields: Vec<Vec<DumpField>> = groups
        .iter()
        .map(|(g, _)| {
            ALL.iter()
                .filter(|f| f.group() == *g)
                .map(|f| (f.name(), f.encoding(), value(*f)))
                .collect()
        })
        .collect();
    let named: Vec<(&str, &[DumpField])> = groups.iter().zip(&fields).map(|((_, h), f)| (*h, f.as_slice())).collect();
    vmcs_dump(title, &named)
}
