//! ACPI (placeholder: being written).
use alloc::vec::Vec;

#[derive(Clone, Copy, Debug)]
pub struct Processor {
    pub apic_id: u32,
    pub enabled: bool,
}

pub struct AcpiInfo {
    pub processors: Vec<Processor>,
}

pub fn init(_root: Option<crate::bootinfo::AcpiRoot>) -> Result<&'static AcpiInfo, &'static str> {
    Err("not written yet")
}
pub fn get() -> Option<&'static AcpiInfo> {
    None
}
pub fn describe(_w: &mut dyn core::fmt::Write) -> core::fmt::Result {
    Ok(())
}
pub fn power_off() -> ! {
    crate::arch::cpu::halt_forever()
}
pub fn reboot() -> ! {
    crate::arch::cpu::halt_forever()
}
