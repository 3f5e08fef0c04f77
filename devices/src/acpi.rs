//! The ACPI tables of the L1's PC (ACPI 6.5 chapter 5), built for any
//! guest-physical base so the glue can place them in the BIOS area
//! (0xE0000-0xFFFFF, where the standard RSDP scan finds them) and also pass
//! the RSDP through the boot information.
//!
//! Layout from the base: RSDP v2 (36 bytes), XSDT, RSDT, FADT (revision 6,
//! 276 bytes), FACS (64-byte aligned), DSDT, MADT; each 16-byte aligned, all
//! checksums valid. What they say:
//! - FADT: SCI 9; SMI_CMD 0 (ACPI mode is always on); PM1a_EVT 0x600 (4
//!   bytes), PM1a_CNT 0x604 (2), PM timer 0x608 (4, 32-bit: TMR_VAL_EXT);
//!   reset register 0xCF9 in I/O space, value 6; RTC century at CMOS 0x32;
//!   IAPC_BOOT_ARCH = legacy devices + 8042, no VGA; flags WBINVD, PROC_C1,
//!   SLP_BUTTON (none), TMR_VAL_EXT, RESET_REG_SUP; the power button is the
//!   fixed-feature one; C2/C3 not supported; no hypervisor vendor identity.
//! - MADT: LAPIC at 0xFEE00000, PCAT_COMPAT (8259 pair present); one
//!   enabled processor (UID 0, APIC ID 0); the IOAPIC (ID, 0xFEC00000, GSI
//!   base 0); ISA overrides IRQ0 -> GSI2 (conforming) and IRQ9 -> GSI9
//!   (level, active high); LAPIC NMI on LINT1 for all processors.
//! - DSDT: `Name (\_S5, Package () {5, 5, 0, 0})`, hand-assembled below.
//!
//! rust-vmm's `acpi_tables` crate builds such tables (and AML) from typed
//! structs; for seven fixed tables and one AML object a small byte writer
//! keeps the kernel free of another dependency, and the host tests parse
//! everything back with the `acpi` crate the kernel already uses.

use alloc::vec::Vec;

use crate::pm::{PM_TMR, PM1A_CNT, PM1A_EVT, SLP_TYP_S5};

/// Which parts the tables describe.
#[derive(Clone, Debug)]
pub struct AcpiConfig {
    /// An IOAPIC at [`crate::IOAPIC_BASE`] (MADT entry and ISA overrides).
    pub ioapic: bool,
    /// Its ID in the MADT (the IOAPIC's ID register says the same).
    pub ioapic_id: u8,
    /// Processors: one Processor Local APIC entry each, APIC IDs 0..cpus.
    pub cpus: u8,
}

impl Default for AcpiConfig {
    fn default() -> Self {
        AcpiConfig { ioapic: true, ioapic_id: 1, cpus: 1 }
    }
}

/// Built tables: put `bytes` at the base given to [`build`].
#[derive(Clone, Debug)]
pub struct AcpiTables {
    /// All tables, contiguous.
    pub bytes: Vec<u8>,
    /// Offset of the RSDP in `bytes` (16-byte aligned).
    pub rsdp_offset: usize,
}

const OEM_ID: &[u8; 6] = b"NVMX  ";
const OEM_TABLE_ID: &[u8; 8] = b"NVMXPC  ";

fn checksum(bytes: &[u8]) -> u8 {
    0u8.wrapping_sub(bytes.iter().fold(0u8, |a, &b| a.wrapping_add(b)))
}

/// A system description table: the 36-byte header (5.2.6) then `body`.
fn sdt(signature: &[u8; 4], revision: u8, body: &[u8]) -> Vec<u8> {
    let mut t = Vec::with_capacity(36 + body.len());
    t.extend_from_slice(signature);
    t.extend_from_slice(&((36 + body.len()) as u32).to_le_bytes());
    t.push(revision);
    t.push(0); // checksum, below
    t.extend_from_slice(OEM_ID);
    t.extend_from_slice(OEM_TABLE_ID);
    t.extend_from_slice(&1u32.to_le_bytes()); // OEM revision
    t.extend_from_slice(b"NVMX"); // creator ID
    t.extend_from_slice(&1u32.to_le_bytes()); // creator revision
    t.extend_from_slice(body);
    t[9] = checksum(&t);
    t
}

/// Generic Address Structure (5.2.3.2) for an I/O port.
fn gas_io(port: u16, bit_width: u8, access_size: u8) -> [u8; 12] {
    let mut g = [0u8; 12];
    g[0] = 1; // system I/O space
    g[1] = bit_width;
    g[2] = 0; // bit offset
    g[3] = access_size; // 1 byte, 2 word, 3 dword
    g[4..12].copy_from_slice(&(port as u64).to_le_bytes());
    g
}

/// The DSDT's AML (ACPI 6.5 chapter 20), one object:
/// `Name (\_S5, Package () {5, 5, 0, 0})` - SLP_TYPa, SLP_TYPb, reserved.
fn dsdt_aml() -> [u8; 15] {
    [
        0x08, // NameOp
        b'\\', b'_', b'S', b'5', b'_', // RootChar, NameSeg "_S5_"
        0x12, // PackageOp
        0x08, // PkgLength: 8 bytes from here to the end of the package
        0x04, // NumElements
        0x0A, SLP_TYP_S5, // BytePrefix 5: SLP_TYPa
        0x0A, SLP_TYP_S5, // BytePrefix 5: SLP_TYPb (no PM1b block)
        0x00, 0x00, // ZeroOp, ZeroOp: reserved elements
    ]
}

fn dsdt() -> Vec<u8> {
    // Revision 2: integers are 64 bits.
    sdt(b"DSDT", 2, &dsdt_aml())
}

fn facs() -> Vec<u8> {
    let mut f = alloc::vec![0u8; 64];
    f[0..4].copy_from_slice(b"FACS");
    f[4..8].copy_from_slice(&64u32.to_le_bytes());
    f[32] = 2; // version
    f
}

fn fadt(facs: u64, dsdt: u64) -> Vec<u8> {
    // The body starts at table offset 36; `at(o)` is table offset o.
    let mut b = alloc::vec![0u8; 276 - 36];
    let at = |o: usize| o - 36;
    b[at(36)..at(40)].copy_from_slice(&(facs as u32).to_le_bytes()); // FIRMWARE_CTRL
    b[at(40)..at(44)].copy_from_slice(&(dsdt as u32).to_le_bytes()); // DSDT
    b[at(45)] = 0; // preferred PM profile: unspecified
    b[at(46)..at(48)].copy_from_slice(&(crate::SCI_IRQ as u16).to_le_bytes());
    // SMI_CMD (48), ACPI_ENABLE/DISABLE: 0, hardware is always in ACPI mode.
    b[at(56)..at(60)].copy_from_slice(&(PM1A_EVT as u32).to_le_bytes());
    b[at(64)..at(68)].copy_from_slice(&(PM1A_CNT as u32).to_le_bytes());
    b[at(76)..at(80)].copy_from_slice(&(PM_TMR as u32).to_le_bytes());
    b[at(88)] = 4; // PM1_EVT_LEN
    b[at(89)] = 2; // PM1_CNT_LEN
    b[at(91)] = 4; // PM_TMR_LEN
    b[at(96)..at(98)].copy_from_slice(&101u16.to_le_bytes()); // P_LVL2_LAT: no C2
    b[at(98)..at(100)].copy_from_slice(&1001u16.to_le_bytes()); // P_LVL3_LAT: no C3
    b[at(108)] = crate::rtc::CENTURY;
    // IAPC_BOOT_ARCH: LEGACY_DEVICES, 8042, VGA not present.
    b[at(109)..at(111)].copy_from_slice(&0b0111u16.to_le_bytes());
    // Flags: WBINVD (0), PROC_C1 (2), SLP_BUTTON (5), TMR_VAL_EXT (8),
    // RESET_REG_SUP (10).
    let flags: u32 = 1 | 1 << 2 | 1 << 5 | 1 << 8 | 1 << 10;
    b[at(112)..at(116)].copy_from_slice(&flags.to_le_bytes());
    b[at(116)..at(128)].copy_from_slice(&gas_io(0xCF9, 8, 1)); // RESET_REG
    b[at(128)] = 0x06; // RESET_VALUE: hard reset + RST_CPU
    b[at(131)] = 5; // FADT minor version (6.5)
    b[at(140)..at(148)].copy_from_slice(&dsdt.to_le_bytes()); // X_DSDT
    b[at(148)..at(160)].copy_from_slice(&gas_io(PM1A_EVT, 32, 2));
    b[at(172)..at(184)].copy_from_slice(&gas_io(PM1A_CNT, 16, 2));
    b[at(208)..at(220)].copy_from_slice(&gas_io(PM_TMR, 32, 3));
    sdt(b"FACP", 6, &b)
}

fn madt(cfg: &AcpiConfig) -> Vec<u8> {
    let mut b = Vec::new();
    b.extend_from_slice(&(crate::LAPIC_BASE as u32).to_le_bytes());
    b.extend_from_slice(&1u32.to_le_bytes()); // PCAT_COMPAT: dual 8259 present
    // Processor Local APIC (5.2.12.2): UID n, APIC ID n, enabled.
    for n in 0..cfg.cpus.max(1) {
        b.extend_from_slice(&[0, 8, n, n]);
        b.extend_from_slice(&1u32.to_le_bytes());
    }
    if cfg.ioapic {
        // I/O APIC (5.2.12.3).
        b.extend_from_slice(&[1, 12, cfg.ioapic_id, 0]);
        b.extend_from_slice(&(crate::IOAPIC_BASE as u32).to_le_bytes());
        b.extend_from_slice(&0u32.to_le_bytes()); // GSI base
        // Interrupt Source Overrides (5.2.12.5): bus 0 (ISA), source, GSI, flags.
        b.extend_from_slice(&[2, 10, 0, 0]);
        b.extend_from_slice(&2u32.to_le_bytes());
        b.extend_from_slice(&0u16.to_le_bytes()); // conforms to the bus
        b.extend_from_slice(&[2, 10, 0, crate::SCI_IRQ]);
        b.extend_from_slice(&(crate::SCI_IRQ as u32).to_le_bytes());
        b.extend_from_slice(&0x000Du16.to_le_bytes()); // active high (01), level (11)
    }
    // Local APIC NMI (5.2.12.7): all processors, conforming, LINT1.
    b.extend_from_slice(&[4, 6, 0xFF, 0, 0, 1]);
    sdt(b"APIC", 5, &b)
}

fn align(v: &mut Vec<u8>, a: usize) {
    while v.len() % a != 0 {
        v.push(0);
    }
}

impl AcpiTables {
    /// The 36-byte RSDP (for a Multiboot2 ACPI-new tag, which carries a
    /// copy of it).
    pub fn rsdp(&self) -> &[u8] {
        &self.bytes[self.rsdp_offset..self.rsdp_offset + 36]
    }
}

/// Build the tables for guest-physical `base` (16-byte aligned; below
/// 4 GiB so the 32-bit pointers hold).
pub fn build(base: u64, cfg: &AcpiConfig) -> AcpiTables {
    let dsdt_t = dsdt();
    let facs_t = facs();
    let madt_t = madt(cfg);
    // Offsets: RSDP 0, XSDT 0x30, RSDT, FADT, FACS, DSDT, MADT.
    let xsdt_off = 0x30usize;
    let xsdt_len = 36 + 2 * 8;
    let rsdt_off = (xsdt_off + xsdt_len).next_multiple_of(16);
    let rsdt_len = 36 + 2 * 4;
    let fadt_off = (rsdt_off + rsdt_len).next_multiple_of(16);
    let facs_off = (fadt_off + 276).next_multiple_of(64);
    let dsdt_off = (facs_off + 64).next_multiple_of(16);
    let madt_off = (dsdt_off + dsdt_t.len()).next_multiple_of(16);
    let addr = |off: usize| base + off as u64;

    let fadt_t = fadt(addr(facs_off), addr(dsdt_off));
    let mut xsdt_body = Vec::new();
    xsdt_body.extend_from_slice(&addr(fadt_off).to_le_bytes());
    xsdt_body.extend_from_slice(&addr(madt_off).to_le_bytes());
    let xsdt_t = sdt(b"XSDT", 1, &xsdt_body);
    let mut rsdt_body = Vec::new();
    rsdt_body.extend_from_slice(&(addr(fadt_off) as u32).to_le_bytes());
    rsdt_body.extend_from_slice(&(addr(madt_off) as u32).to_le_bytes());
    let rsdt_t = sdt(b"RSDT", 1, &rsdt_body);

    // RSDP (5.2.5.3).
    let mut rsdp = Vec::with_capacity(36);
    rsdp.extend_from_slice(b"RSD PTR ");
    rsdp.push(0); // checksum of the first 20 bytes
    rsdp.extend_from_slice(OEM_ID);
    rsdp.push(2); // revision: ACPI 2.0+
    rsdp.extend_from_slice(&(addr(rsdt_off) as u32).to_le_bytes());
    rsdp.extend_from_slice(&36u32.to_le_bytes());
    rsdp.extend_from_slice(&addr(xsdt_off).to_le_bytes());
    rsdp.push(0); // extended checksum
    rsdp.extend_from_slice(&[0; 3]);
    rsdp[8] = checksum(&rsdp[..20]);
    rsdp[32] = checksum(&rsdp);

    let mut bytes = rsdp;
    for (off, t) in [
        (xsdt_off, &xsdt_t),
        (rsdt_off, &rsdt_t),
        (fadt_off, &fadt_t),
        (facs_off, &facs_t),
        (dsdt_off, &dsdt_t),
        (madt_off, &madt_t),
    ] {
        align(&mut bytes, 16);
        bytes.resize(off, 0);
        bytes.extend_from_slice(t);
    }
    align(&mut bytes, 16);
    AcpiTables { bytes, rsdp_offset: 0 }
}

#[cfg(test)]
mod tests;
