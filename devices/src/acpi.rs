//! ACPI tables for the L1. (Stub in this commit.)

use alloc::vec::Vec;

/// Which parts the tables describe.
#[derive(Clone, Debug)]
pub struct AcpiConfig {
    /// IOAPIC ID in the MADT.
    pub ioapic_id: u8,
}

impl Default for AcpiConfig {
    fn default() -> Self {
        AcpiConfig { ioapic_id: 1 }
    }
}

/// Built tables: place `bytes` at the base given to [`build`].
#[derive(Clone, Debug)]
pub struct AcpiTables {
    /// All tables, contiguous.
    pub bytes: Vec<u8>,
    /// Offset of the RSDP in `bytes` (16-byte aligned).
    pub rsdp_offset: usize,
}

/// Build the tables for guest-physical `base`.
pub fn build(_base: u64, _cfg: &AcpiConfig) -> AcpiTables {
    AcpiTables { bytes: Vec::new(), rsdp_offset: 0 }
}
