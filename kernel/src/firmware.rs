//! ACPI: the firmware tables nvmx reads, and ACPI power-off and reset.
//!
//! Follows the ACPI Specification 6.5 (sections cited as "ACPI §x.y"). nvmx
//! never runs AML: it reads
//! - the RSDT/XSDT (ACPI §5.2.7, §5.2.8) GRUB found, and every table it lists;
//! - the MADT (ACPI §5.2.12): local APIC and local x2APIC entries, I/O APICs;
//! - the FADT (ACPI §5.2.9): PM1 control ports, SMI command, reset register, DSDT;
//! - `\_S5` (ACPI §7.4.2.6) by decoding its `Name` from the DSDT/SSDT bytes.
//!
//! The `acpi` crate provides the typed MADT/FADT views and MADT entry parsing.
//! It trusts the lengths and pointers it is given (a zero-length MADT entry
//! makes its iterator spin forever; its RSDT/XSDT walk dereferences unaligned
//! 64-bit XSDT entries, which debug builds trap as misaligned), so this file
//! walks the root table itself and checks every table (mapped, length,
//! checksum) and every MADT entry length before the crate looks at it.
//!
//! Memory is identity mapped (physical == virtual for all RAM and the low
//! 4 GiB), so the crate's `Handler` maps by returning the physical address.

use alloc::{format, string::String, vec::Vec};
use core::{mem::size_of, ptr::NonNull};

use acpi::{
    Handle, Handler, PciAddress, PhysicalMapping,
    address::{AddressSpace, GenericAddress},
    aml::AmlError,
    sdt::{
        SdtHeader,
        fadt::Fadt,
        madt::{Madt, MadtEntry},
    },
};
use log::{info, warn};
use spin::Once;
use x86_64::instructions::port::{Port, PortRead, PortWrite};

use crate::bootinfo::AcpiRoot;

/// One processor from the MADT (ACPI §5.2.12.2 Processor Local APIC,
/// §5.2.12.12 Processor Local x2APIC).
#[derive(Clone, Copy, Debug)]
pub struct Processor {
    /// Local APIC id (8-bit xAPIC id, or 32-bit x2APIC id).
    pub apic_id: u32,
    /// ACPI processor UID (matches `_UID` / `Processor` objects in AML).
    pub uid: u32,
    /// Flags bit 0: usable now.
    pub enabled: bool,
    /// Flags bit 1 (ACPI 6.3+): disabled but may be enabled at run time.
    pub online_capable: bool,
    /// Came from a local x2APIC entry (type 9) rather than a local APIC entry (type 0).
    pub x2apic: bool,
}

/// An I/O APIC (ACPI §5.2.12.3).
#[derive(Clone, Copy, Debug)]
pub struct IoApic {
    pub id: u8,
    pub address: u32,
    /// First global system interrupt this I/O APIC serves.
    pub gsi_base: u32,
}

/// A system description table (ACPI §5.2.6 header).
#[derive(Clone, Copy, Debug)]
pub struct Table {
    pub signature: [u8; 4],
    pub address: u64,
    pub length: u32,
    pub revision: u8,
    pub oem_id: [u8; 6],
    /// All `length` bytes sum to 0 mod 256. Tables that fail are listed but not used.
    pub checksum_ok: bool,
}

/// `SLP_TYPa`/`SLP_TYPb`, the values for PM1a_CNT/PM1b_CNT bits 12:10 of a sleep state.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SleepType {
    pub a: u8,
    pub b: u8,
}

/// Address space of the FADT reset register (ACPI §5.2.3.2 Generic Address Structure).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RegisterSpace {
    Memory,
    Io,
    /// Segment 0, bus 0; `address` is device << 32 | function << 16 | offset.
    PciConfig,
}

/// FADT `RESET_REG` and `RESET_VALUE` (ACPI §5.2.9, §4.8.3.6 Reset Register).
#[derive(Clone, Copy, Debug)]
pub struct ResetRegister {
    pub space: RegisterSpace,
    pub address: u64,
    pub value: u8,
}

/// What nvmx keeps of the ACPI tables.
#[derive(Debug)]
pub struct AcpiInfo {
    /// The RSDT or XSDT everything was found through.
    pub root: AcpiRoot,
    /// The root table, every table it lists, then the DSDT.
    pub tables: Vec<Table>,
    /// MADT processors in table order (one per APIC id).
    pub processors: Vec<Processor>,
    /// The first enabled processor entry: ACPI §5.2.12 asks firmware to list the
    /// boot processor first (the `acpi` crate uses the same rule).
    pub bsp_apic_id: Option<u32>,
    /// Local APIC base (MADT field, or the type-5 address override).
    pub local_apic_address: u64,
    pub io_apics: Vec<IoApic>,
    /// FADT `SCI_INT` (ISA IRQ / GSI of the SCI).
    pub sci_irq: Option<u16>,
    /// PM1a/PM1b control register ports (FADT, ACPI §4.8.3.2.1).
    pub pm1a_cnt: Option<u16>,
    pub pm1b_cnt: Option<u16>,
    /// FADT `SMI_CMD` port and `ACPI_ENABLE` value (legacy → ACPI mode switch, ACPI §5.2.9).
    pub smi_cmd: Option<u16>,
    pub acpi_enable: u8,
    /// `\_S5` from the DSDT (or an SSDT).
    pub s5: Option<SleepType>,
    /// Present when the FADT says `RESET_REG_SUP` (flags bit 10).
    pub reset: Option<ResetRegister>,
    /// Things that were wrong but not fatal (also logged at boot).
    pub warnings: Vec<String>,
}

static INFO: Once<AcpiInfo> = Once::new();
static INIT_ERROR: Once<&'static str> = Once::new();

/// Reads the ACPI tables GRUB pointed at (once) and keeps what nvmx needs.
///
/// `Err` when there is no usable root table (no RSDP tag, unreadable, wrong
/// signature, bad checksum). A missing or broken MADT/FADT/`\_S5` is not an
/// error: the fields stay empty and a warning says why.
pub fn init(root: Option<AcpiRoot>) -> Result<&'static AcpiInfo, &'static str> {
    INFO.try_call_once(|| {
        let info = root.ok_or("no ACPI tables (GRUB found no RSDP)").and_then(discover);
        info.inspect_err(|e| {
            INIT_ERROR.call_once(|| e);
        })
    })
}

/// The ACPI information, if [`init`] succeeded.
pub fn get() -> Option<&'static AcpiInfo> {
    INFO.get()
}

// ---------------------------------------------------------------------------
// Discovery
// ---------------------------------------------------------------------------

/// Size of the common table header (ACPI §5.2.6).
const HEADER_LEN: usize = size_of::<SdtHeader>();
const _: () = assert!(HEADER_LEN == 36);

fn discover(root: AcpiRoot) -> Result<AcpiInfo, &'static str> {
    let mut warnings = Vec::new();
    let (root_addr, entry_size, want) = match root {
        AcpiRoot::Rsdt(a) => (a, 4, *b"RSDT"),
        AcpiRoot::Xsdt(a) => (a, 8, *b"XSDT"),
    };
    let root_table = probe(root_addr).map_err(|_| "ACPI root table (RSDT/XSDT) is not readable")?;
    if root_table.signature != want {
        return Err("ACPI root table has the wrong signature");
    }
    if !root_table.checksum_ok {
        return Err("ACPI root table (RSDT/XSDT) checksum is bad");
    }

    // ACPI §5.2.7/§5.2.8: after the header, an array of 32-bit (RSDT) or
    // 64-bit (XSDT) physical addresses. XSDT entries start at offset 36, so
    // they are usually not 8-byte aligned: read them unaligned.
    let mut tables = Vec::from([root_table]);
    let body = &table_bytes(&root_table)[HEADER_LEN..];
    for chunk in body.chunks_exact(entry_size) {
        let addr = match entry_size {
            4 => u64::from(u32::from_le_bytes([chunk[0], chunk[1], chunk[2], chunk[3]])),
            _ => u64::from_le_bytes(chunk.try_into().unwrap_or([0; 8])),
        };
        match probe(addr) {
            Ok(t) => tables.push(t),
            Err(e) => warnings.push(format!("table @{addr:#x} skipped: {e}")),
        }
    }

    let mut info = AcpiInfo {
        root,
        tables,
        processors: Vec::new(),
        bsp_apic_id: None,
        local_apic_address: 0,
        io_apics: Vec::new(),
        sci_irq: None,
        pm1a_cnt: None,
        pm1b_cnt: None,
        smi_cmd: None,
        acpi_enable: 0,
        s5: None,
        reset: None,
        warnings,
    };
    for t in info.tables.iter().filter(|t| !t.checksum_ok) {
        let sig = sig_str(&t.signature);
        info.warnings.push(format!("{sig} @{:#x}: bad checksum, ignored", t.address));
    }

    match find(&info.tables, b"APIC") {
        Some(madt) => read_madt(&madt, &mut info),
        None => info.warnings.push("no valid MADT: processors and I/O APICs unknown".into()),
    }
    match find(&info.tables, b"FACP") {
        Some(fadt) => read_fadt(&fadt, &mut info),
        None => info.warnings.push("no valid FADT: no ACPI power-off or reset register".into()),
    }
    read_s5(&mut info);

    for w in &info.warnings {
        warn!("acpi: {w}");
    }
    info!(
        "acpi: {} tables, {}/{} processors enabled, {} I/O APIC(s), S5 {:?}",
        info.tables.len(),
        info.processors.iter().filter(|p| p.enabled).count(),
        info.processors.len(),
        info.io_apics.len(),
        info.s5
    );
    Ok(info)
}

/// The first table with `signature` whose checksum is good.
fn find(tables: &[Table], signature: &[u8; 4]) -> Option<Table> {
    tables.iter().find(|t| t.signature == *signature && t.checksum_ok).copied()
}

/// Whether `[addr, addr + len)` is identity mapped: under 4 GiB, or inside a
/// region of the firmware memory map (which the kernel maps in full).
fn mapped(addr: u64, len: u64) -> bool {
    let Some(end) = addr.checked_add(len) else { return false };
    if addr == 0 {
        return false;
    }
    end <= 1 << 32
        || crate::bootinfo::get().regions().iter().any(|r| r.start <= addr && end <= r.end)
}

/// Reads and checks the header of the table at `addr` (ACPI §5.2.6).
fn probe(addr: u64) -> Result<Table, &'static str> {
    if !mapped(addr, HEADER_LEN as u64) {
        return Err("address not mapped");
    }
    // SAFETY: the 36 header bytes are identity mapped (checked above) and sit
    // in firmware-reserved memory that nothing in L0 writes; SdtHeader is
    // `repr(C, packed)` plain data, so any bytes are a valid value.
    let header = unsafe { core::ptr::read_unaligned(addr as *const SdtHeader) };
    let length = header.length;
    if (length as usize) < HEADER_LEN {
        return Err("length shorter than a table header");
    }
    if !mapped(addr, u64::from(length)) {
        return Err("table runs past mapped memory");
    }
    // SAFETY: as above; the signature is the first 4 bytes of the header.
    let signature = unsafe { core::ptr::read_unaligned(addr as *const [u8; 4]) };
    let mut t = Table {
        signature,
        address: addr,
        length,
        revision: header.revision,
        oem_id: header.oem_id,
        checksum_ok: false,
    };
    t.checksum_ok = checksum(table_bytes(&t)) == 0;
    Ok(t)
}

/// The bytes of a table [`probe`] accepted.
fn table_bytes(t: &Table) -> &'static [u8] {
    // SAFETY: `probe` checked that all `length` bytes are identity mapped;
    // firmware tables live in reserved / ACPI memory the frame allocator
    // never hands out, so they stay unchanged for the kernel's lifetime.
    unsafe { core::slice::from_raw_parts(t.address as *const u8, t.length as usize) }
}

/// ACPI §5.2.6: "the entire table, including the checksum field, must add to zero".
fn checksum(bytes: &[u8]) -> u8 {
    bytes.iter().fold(0u8, |s, &b| s.wrapping_add(b))
}

fn sig_str(s: &[u8; 4]) -> &str {
    core::str::from_utf8(s).unwrap_or("????")
}

// ---------------------------------------------------------------------------
// MADT (ACPI §5.2.12)
// ---------------------------------------------------------------------------

/// Smallest valid length of each MADT entry type the crate decodes (ACPI
/// §5.2.12.2–5.2.12.20); 2 (just the header) for types it skips.
fn madt_entry_min_len(kind: u8) -> usize {
    match kind {
        0 => 8,            // Processor Local APIC
        1 => 12,           // I/O APIC
        2 => 10,           // Interrupt Source Override
        3 => 8,            // NMI Source
        4 => 6,            // Local APIC NMI
        5 => 12,           // Local APIC Address Override
        6 => 16,           // I/O SAPIC
        7 => 17,           // Local SAPIC
        8 => 16,           // Platform Interrupt Sources
        9 => 16,           // Processor Local x2APIC
        0xa => 12,         // Local x2APIC NMI
        0xb => 80,         // GICC (ACPI 6.0 size)
        0xc => 24,         // GICD
        0xd => 24,         // GIC MSI Frame
        0xe => 16,         // GICR
        0xf => 20,         // GIC ITS
        0x10 => 16,        // Multiprocessor Wakeup
        _ => 2,
    }
}

fn read_madt(t: &Table, info: &mut AcpiInfo) {
    let bytes = table_bytes(t);
    if bytes.len() < size_of::<Madt>() {
        info.warnings.push("MADT shorter than its fixed part".into());
        return;
    }
    // Walk the entries once by hand: the crate's iterator loops forever on a
    // zero-length entry and reads past short ones.
    let mut off = size_of::<Madt>();
    while off < bytes.len() {
        let kind = bytes[off];
        let len = bytes.get(off + 1).map_or(0, |&l| usize::from(l));
        if len < madt_entry_min_len(kind).max(2) || off + len > bytes.len() {
            info.warnings.push(format!("MADT entry type {kind} at offset {off} is malformed"));
            return;
        }
        off += len;
    }

    // SAFETY: `t` is a checksummed MADT whose bytes are identity mapped
    // (probe) and whose entries were all checked to lie inside the table.
    let madt = unsafe { IdentityMap.map_physical_region::<Madt>(t.address as usize, t.length as usize) };
    info.local_apic_address = u64::from(madt.get().local_apic_address);
    for entry in madt.get().entries() {
        match entry {
            MadtEntry::LocalApic(e) => {
                let flags = e.flags;
                add_processor(info, u32::from(e.apic_id), u32::from(e.processor_id), flags, false);
            }
            MadtEntry::LocalX2Apic(e) => {
                let (id, uid, flags) = (e.x2apic_id, e.processor_uid, e.flags);
                add_processor(info, id, uid, flags, true);
            }
            MadtEntry::IoApic(e) => info.io_apics.push(IoApic {
                id: e.io_apic_id,
                address: e.io_apic_address,
                gsi_base: e.global_system_interrupt_base,
            }),
            MadtEntry::LocalApicAddressOverride(e) => info.local_apic_address = e.local_apic_address,
            _ => {}
        }
    }

    if info.processors.is_empty() {
        info.warnings.push("MADT lists no processors".into());
    }
    if info.io_apics.is_empty() {
        info.warnings.push("MADT lists no I/O APIC".into());
    }
    info.bsp_apic_id = info.processors.iter().find(|p| p.enabled).map(|p| p.apic_id);
    let running = crate::apic::id();
    if info.bsp_apic_id.is_some_and(|b| b != running) {
        info.warnings.push(format!(
            "MADT lists APIC id {:?} first but the boot core is {running}",
            info.bsp_apic_id
        ));
    }
}

/// Adds a MADT processor; a second entry for the same APIC id (firmware may
/// describe a CPU by both a type-0 and a type-9 entry) is dropped.
fn add_processor(info: &mut AcpiInfo, apic_id: u32, uid: u32, flags: u32, x2apic: bool) {
    if info.processors.iter().any(|p| p.apic_id == apic_id) {
        return;
    }
    // ACPI §5.2.12.2 Table 5.23 (Local APIC flags): bit 0 Enabled, bit 1 Online Capable.
    // An x2APIC id of 0xffffffff marks an unused entry.
    if x2apic && apic_id == u32::MAX {
        return;
    }
    info.processors.push(Processor {
        apic_id,
        uid,
        enabled: flags & 1 != 0,
        online_capable: flags & 2 != 0,
        x2apic,
    });
}

// ---------------------------------------------------------------------------
// FADT (ACPI §5.2.9)
// ---------------------------------------------------------------------------

/// A GAS that must be an I/O port (PM1x_CNT on every non-hardware-reduced PC).
fn io_port(gas: GenericAddress, what: &str, warnings: &mut Vec<String>) -> Option<u16> {
    if gas.address == 0 {
        return None;
    }
    match (gas.address_space, u16::try_from(gas.address)) {
        (AddressSpace::SystemIo, Ok(port)) => Some(port),
        _ => {
            warnings.push(format!("{what} is not an I/O port ({:?} {:#x})", gas.address_space, gas.address));
            None
        }
    }
}

fn read_fadt(t: &Table, info: &mut AcpiInfo) {
    // The crate's `Fadt` is the full ACPI 6 layout; fields past an older
    // table's end are only read when the revision says they exist, but the
    // whole struct must be mapped.
    if (t.length as usize) < 116 || !mapped(t.address, size_of::<Fadt>() as u64) {
        info.warnings.push("FADT too short or not mapped".into());
        return;
    }
    // SAFETY: a checksummed FADT, identity mapped for at least size_of::<Fadt>().
    let fadt = unsafe { IdentityMap.map_physical_region::<Fadt>(t.address as usize, t.length as usize) };
    info.sci_irq = Some(fadt.sci_interrupt);
    let smi = fadt.smi_cmd_port;
    info.smi_cmd = u16::try_from(smi).ok().filter(|&p| p != 0);
    info.acpi_enable = fadt.acpi_enable;

    match fadt.pm1a_control_block() {
        Ok(gas) => info.pm1a_cnt = io_port(gas, "PM1a_CNT", &mut info.warnings),
        Err(e) => info.warnings.push(format!("PM1a_CNT unreadable: {e:?}")),
    }
    match fadt.pm1b_control_block() {
        Ok(Some(gas)) => info.pm1b_cnt = io_port(gas, "PM1b_CNT", &mut info.warnings),
        Ok(None) => {}
        Err(e) => info.warnings.push(format!("PM1b_CNT unreadable: {e:?}")),
    }
    if info.pm1a_cnt.is_none() {
        info.warnings.push("FADT gives no PM1a_CNT port: no ACPI S5".into());
    }

    // RESET_REG (offset 116) exists from FADT revision 2 (ACPI 2.0) on, and is
    // only meaningful with flags bit 10 RESET_REG_SUP (ACPI §5.2.9 Table 5.10).
    let flags = fadt.flags;
    if t.revision >= 2 && t.length >= 129 && flags.supports_system_reset_via_fadt() {
        match fadt.reset_register() {
            Ok(gas) if gas.address != 0 => {
                let space = match gas.address_space {
                    AddressSpace::SystemMemory => Some(RegisterSpace::Memory),
                    AddressSpace::SystemIo => Some(RegisterSpace::Io),
                    AddressSpace::PciConfigSpace => Some(RegisterSpace::PciConfig),
                    _ => None,
                };
                match space {
                    Some(space) => {
                        info.reset = Some(ResetRegister { space, address: gas.address, value: fadt.reset_value });
                    }
                    None => info.warnings.push(format!("reset register in {:?} space", gas.address_space)),
                }
            }
            Ok(_) => {}
            Err(e) => info.warnings.push(format!("reset register unreadable: {e:?}")),
        }
    }

    match fadt.dsdt_address() {
        Ok(addr) => match probe(addr as u64) {
            Ok(d) if d.signature == *b"DSDT" => info.tables.push(d),
            Ok(_) => info.warnings.push(format!("FADT's DSDT @{addr:#x} has another signature")),
            Err(e) => info.warnings.push(format!("DSDT @{addr:#x}: {e}")),
        },
        Err(e) => info.warnings.push(format!("FADT has no DSDT: {e:?}")),
    }
}

// ---------------------------------------------------------------------------
// \_S5 (ACPI §7.4.2.6) from AML bytes (ACPI §20.2)
// ---------------------------------------------------------------------------

fn read_s5(info: &mut AcpiInfo) {
    // Usually in the DSDT; some firmware puts it in an SSDT.
    let candidates = info
        .tables
        .iter()
        .filter(|t| t.checksum_ok && (t.signature == *b"DSDT" || t.signature == *b"SSDT"));
    let mut sorted: Vec<&Table> = candidates.collect();
    sorted.sort_by_key(|t| t.signature != *b"DSDT");
    info.s5 = sorted.iter().find_map(|t| decode_s5(&table_bytes(t)[HEADER_LEN..]));
    if info.s5.is_none() && info.pm1a_cnt.is_some() {
        info.warnings.push("no \\_S5 package found in the DSDT/SSDTs: no ACPI S5".into());
    }
}

/// AML opcodes used by [`decode_s5`] (ACPI §20.3 AML Byte Stream Byte Values).
mod aml_op {
    pub const ZERO: u8 = 0x00;
    pub const ONE: u8 = 0x01;
    pub const NAME: u8 = 0x08;
    pub const BYTE_PREFIX: u8 = 0x0a;
    pub const WORD_PREFIX: u8 = 0x0b;
    pub const DWORD_PREFIX: u8 = 0x0c;
    pub const QWORD_PREFIX: u8 = 0x0e;
    pub const PACKAGE: u8 = 0x12;
    pub const ROOT_CHAR: u8 = b'\\';
}

/// Finds `Name (_S5, Package () { SLP_TYPa, SLP_TYPb, ... })` in an AML byte
/// stream (a DSDT or SSDT without its 36-byte header) and returns the two
/// sleep-type values.
///
/// ACPI §7.4.2 (`\_Sx` System States) and §7.4.2.6 (`\_S5` Soft Off): the
/// package's element 0 is the value for PM1a_CNT.SLP_TYP, element 1 for
/// PM1b_CNT.SLP_TYP; the register field is 3 bits (ACPI §4.8.3.2.1), so a
/// value above 7 is rejected. A one-element package is the old form that packs
/// SLP_TYPa in bits 7:0 and SLP_TYPb in bits 15:8 of one integer (as ACPICA
/// accepts it).
///
/// AML encoding (ACPI §20.2.5.1 `DefName := NameOp NameString DataRefObject`,
/// §20.2.5.4 `DefPackage := PackageOp PkgLength NumElements PackageElementList`,
/// §20.2.4 `PkgLength`, §20.2.3 `ComputationalData`):
/// `08 [5C] 5F 53 35 5F 12 <PkgLength> <NumElements> <elements>`, each element
/// `0A bb` (BytePrefix), `0B/0C/0E` + 2/4/8 bytes, or `00`/`01` (ZeroOp/OneOp).
/// Scanning bytes (rather than interpreting AML) finds the name wherever it is
/// declared, including inside `If` blocks; a `Method (_S5)` is not supported.
pub fn decode_s5(aml: &[u8]) -> Option<SleepType> {
    let mut from = 0;
    while let Some(pos) = aml.get(from..)?.windows(4).position(|w| w == b"_S5_") {
        let at = from + pos;
        from = at + 1;
        let named = match at {
            1.. if aml[at - 1] == aml_op::NAME => true,
            2.. => aml[at - 1] == aml_op::ROOT_CHAR && aml[at - 2] == aml_op::NAME,
            _ => false,
        };
        if !named {
            continue;
        }
        if let Some(s5) = decode_sleep_package(aml.get(at + 4..)?) {
            return Some(s5);
        }
    }
    None
}

/// Decodes `PackageOp PkgLength NumElements Element0 Element1 ...` into a [`SleepType`].
fn decode_sleep_package(b: &[u8]) -> Option<SleepType> {
    if *b.first()? != aml_op::PACKAGE {
        return None;
    }
    // §20.2.4: bits 7:6 of the lead byte = number of extra length bytes.
    let lead = *b.get(1)?;
    let extra = usize::from(lead >> 6);
    let pkg_len = if extra == 0 {
        usize::from(lead & 0x3f)
    } else {
        let mut n = usize::from(lead & 0x0f);
        for i in 0..extra {
            n |= usize::from(*b.get(2 + i)?) << (4 + 8 * i);
        }
        n
    };
    // PkgLength counts itself and everything after it, not the PackageOp.
    let body = b.get(1..1 + pkg_len)?.get(1 + extra..)?;
    let (&count, mut rest) = body.split_first()?;
    let mut values = [0u64; 2];
    for v in values.iter_mut().take(usize::from(count).min(2)) {
        let (value, used) = decode_integer(rest)?;
        *v = value;
        rest = &rest[used..];
    }
    let (a, b) = match count {
        0 => return None,
        1 => (values[0] & 0xff, (values[0] >> 8) & 0xff),
        _ => (values[0], values[1]),
    };
    (a <= 7 && b <= 7).then_some(SleepType { a: a as u8, b: b as u8 })
}

/// One integer package element: `(value, bytes used)`.
fn decode_integer(b: &[u8]) -> Option<(u64, usize)> {
    let le = |n: usize| -> Option<(u64, usize)> {
        let bytes = b.get(1..1 + n)?;
        Some((bytes.iter().rev().fold(0u64, |v, &x| v << 8 | u64::from(x)), 1 + n))
    };
    match *b.first()? {
        aml_op::ZERO => Some((0, 1)),
        aml_op::ONE => Some((1, 1)),
        aml_op::BYTE_PREFIX => le(1),
        aml_op::WORD_PREFIX => le(2),
        aml_op::DWORD_PREFIX => le(4),
        aml_op::QWORD_PREFIX => le(8),
        _ => None,
    }
}

// ---------------------------------------------------------------------------
// Shell output
// ---------------------------------------------------------------------------

/// The shell's `acpi` command: one line per table, then MADT and FADT summaries.
pub fn describe(w: &mut dyn core::fmt::Write) -> core::fmt::Result {
    let Some(info) = get() else {
        let why = INIT_ERROR.get().copied().unwrap_or("not read yet");
        return writeln!(w, "ACPI: not available: {why}");
    };
    let (kind, addr) = match info.root {
        AcpiRoot::Rsdt(a) => ("RSDT (ACPI 1.0)", a),
        AcpiRoot::Xsdt(a) => ("XSDT (ACPI 2.0+)", a),
    };
    writeln!(w, "ACPI: root {kind} @{addr:#x}, {} tables", info.tables.len())?;
    for t in &info.tables {
        let oem = core::str::from_utf8(&t.oem_id).unwrap_or("?").trim_end_matches([' ', '\0']);
        writeln!(
            w,
            "  {}  rev {}  len {}  @{:#x}  OEM {}{}",
            sig_str(&t.signature),
            t.revision,
            t.length,
            t.address,
            oem,
            if t.checksum_ok { "" } else { "  BAD CHECKSUM" }
        )?;
    }

    let enabled = info.processors.iter().filter(|p| p.enabled).count();
    let x2 = info.processors.iter().filter(|p| p.x2apic).count();
    write!(w, "MADT: {enabled}/{} processors enabled, APIC id/ACPI uid", info.processors.len())?;
    for p in &info.processors {
        let state = match (p.enabled, p.online_capable) {
            (true, _) => "",
            (false, true) => "(off, online-capable)",
            (false, false) => "(off)",
        };
        write!(w, " {}/{}{state}", p.apic_id, p.uid)?;
    }
    match info.bsp_apic_id {
        Some(b) => write!(w, " (BSP {b})")?,
        None => write!(w, " (BSP ?)")?,
    }
    write!(w, ", {x2} x2APIC entries, LAPIC @{:#x}, I/O APICs:", info.local_apic_address)?;
    if info.io_apics.is_empty() {
        write!(w, " none")?;
    }
    for io in &info.io_apics {
        write!(w, " id {} @{:#x} GSI {}", io.id, io.address, io.gsi_base)?;
    }
    writeln!(w)?;

    write!(w, "FADT: PM1a_CNT ")?;
    match info.pm1a_cnt {
        Some(p) => write!(w, "{p:#x}")?,
        None => write!(w, "none")?,
    }
    if let Some(p) = info.pm1b_cnt {
        write!(w, ", PM1b_CNT {p:#x}")?;
    }
    match info.s5 {
        Some(s) => write!(w, ", S5 SLP_TYPa {} SLP_TYPb {}", s.a, s.b)?,
        None => write!(w, ", S5 unknown")?,
    }
    match info.reset {
        Some(r) => write!(w, ", reset {:#x} -> {:?} {:#x}", r.value, r.space, r.address)?,
        None => write!(w, ", no reset register")?,
    }
    if let Some(irq) = info.sci_irq {
        write!(w, ", SCI {irq}")?;
    }
    writeln!(w)?;
    for warning in &info.warnings {
        writeln!(w, "warning: {warning}")?;
    }
    Ok(())
}

// ---------------------------------------------------------------------------
// Power off and reset
// ---------------------------------------------------------------------------

/// PM1 control register bits (ACPI §4.8.3.2.1, Table 4.13).
const SCI_EN: u16 = 1 << 0;
const SLP_TYP_SHIFT: u16 = 10;
const SLP_TYP_MASK: u16 = 0b111 << SLP_TYP_SHIFT;
const SLP_EN: u16 = 1 << 13;

/// Bochs (and QEMU before 2.0) power off when "Shutdown" is written here.
const BOCHS_SHUTDOWN_PORT: u16 = 0x8900;
/// QEMU `-device isa-debug-exit,iobase=0xf4`.
const QEMU_DEBUG_EXIT_PORT: u16 = 0xf4;
/// Intel PIIX/ICH Reset Control Register: bit 1 SYS_RST, bit 2 RST_CPU.
const RESET_CONTROL_PORT: u16 = 0xcf9;
/// 8042 keyboard controller command/status port; command 0xFE pulses the reset line.
const KBC_PORT: u16 = 0x64;

fn inw(port: u16) -> u16 {
    // SAFETY: only called on PM1x_CNT ports taken from the FADT, which
    // belong to the ACPI PM block; reading them has no side effects.
    unsafe { u16::read_from_port(port) }
}

fn out<T: PortWrite>(port: u16, value: T) {
    // SAFETY: only used by power_off/reboot on the ACPI PM registers from the
    // FADT and the well-known PC power/reset ports above; the machine is being
    // turned off or reset, so no driver state can be disturbed.
    unsafe { Port::<T>::new(port).write(value) }
}

/// Turns the machine off: ACPI S5, then the Bochs and QEMU exit ports, then halts.
/// Prints nothing.
pub fn power_off() -> ! {
    x86_64::instructions::interrupts::disable();
    if let Some(info) = get() {
        acpi_s5(info);
    }
    for &b in b"Shutdown" {
        out(BOCHS_SHUTDOWN_PORT, b);
    }
    out(QEMU_DEBUG_EXIT_PORT, 0u32);
    crate::arch::cpu::halt_forever()
}

/// Enters S5 through PM1a/PM1b_CNT (ACPI §16.1.7 "Transitioning from the
/// Working to the Sleeping State", §7.4.2.6). Returns if the machine is still on.
fn acpi_s5(info: &AcpiInfo) {
    let (Some(pm1a), Some(s5)) = (info.pm1a_cnt, info.s5) else { return };
    enter_acpi_mode(info, pm1a);
    // Like ACPICA: first write SLP_TYPx, then SLP_TYPx with SLP_EN, to both
    // registers; keep the other bits (SCI_EN) as they are.
    let regs = [(Some(pm1a), s5.a), (info.pm1b_cnt, s5.b)];
    for &(port, typ) in &regs {
        if let Some(port) = port {
            let v = (inw(port) & !(SLP_TYP_MASK | SLP_EN)) | (u16::from(typ) << SLP_TYP_SHIFT);
            out(port, v);
        }
    }
    for &(port, typ) in &regs {
        if let Some(port) = port {
            let v = (inw(port) & !(SLP_TYP_MASK | SLP_EN)) | (u16::from(typ) << SLP_TYP_SHIFT);
            out(port, v | SLP_EN);
        }
    }
    // Real chipsets take a few milliseconds to drop power.
    crate::time::delay_us(100_000);
}

/// ACPI §4.8.2.1 / §16.3.1: in legacy mode (SCI_EN clear) OSPM writes
/// ACPI_ENABLE to SMI_CMD and waits for SCI_EN. nvmx does it only on the way
/// out, since it does not handle SCIs. Bounded to 300 ms.
fn enter_acpi_mode(info: &AcpiInfo, pm1a: u16) {
    let Some(smi_cmd) = info.smi_cmd else { return };
    if inw(pm1a) & SCI_EN != 0 || info.acpi_enable == 0 {
        return;
    }
    out(smi_cmd, info.acpi_enable);
    for _ in 0..300 {
        if inw(pm1a) & SCI_EN != 0 {
            return;
        }
        crate::time::delay_us(1000);
    }
}

/// Resets the machine: FADT reset register, port 0xCF9, the 8042, then a
/// triple fault.
pub fn reboot() -> ! {
    x86_64::instructions::interrupts::disable();
    if let Some(r) = get().and_then(|i| i.reset) {
        write_reset_register(r);
        crate::time::delay_us(50_000);
    }
    // SYS_RST then SYS_RST | RST_CPU: a hard reset on PIIX/ICH and QEMU.
    out(RESET_CONTROL_PORT, 0x02u8);
    crate::time::delay_us(50);
    out(RESET_CONTROL_PORT, 0x06u8);
    crate::time::delay_us(50_000);
    // 8042: wait (bounded) for the input buffer to drain, then pulse reset.
    for _ in 0..100_000 {
        if crate::arch::cpu::inb(KBC_PORT) & 0x02 == 0 {
            break;
        }
        core::hint::spin_loop();
    }
    out(KBC_PORT, 0xfeu8);
    crate::time::delay_us(50_000);
    triple_fault()
}

/// ACPI §4.8.3.6: writing RESET_VALUE to RESET_REG resets the system.
fn write_reset_register(r: ResetRegister) {
    match r.space {
        RegisterSpace::Io => {
            if let Ok(port) = u16::try_from(r.address) {
                out(port, r.value);
            }
        }
        RegisterSpace::Memory => {
            if mapped(r.address, 1) {
                // SAFETY: the FADT names this byte as the reset register, and
                // it is identity mapped; the machine is being reset.
                unsafe { core::ptr::write_volatile(r.address as *mut u8, r.value) };
            }
        }
        RegisterSpace::PciConfig => {
            // ACPI §5.2.3.2: segment 0, bus 0; device in bits 47:32,
            // function in 31:16, offset in 15:0.
            let dev = ((r.address >> 32) & 0x1f) as u8;
            let func = ((r.address >> 16) & 0x7) as u8;
            let off = (r.address & 0xff) as u16;
            pci_write(PciAddress::new(0, 0, dev, func), off, 1, u32::from(r.value));
        }
    }
}

/// An IDT with limit 0 makes the next exception a #GP, then #DF, then a
/// triple fault: the CPU shuts down and the board resets it.
fn triple_fault() -> ! {
    let empty = x86_64::structures::DescriptorTablePointer { limit: 0, base: x86_64::VirtAddr::zero() };
    // SAFETY: interrupts are off and we want the next exception to be
    // fatal: that is the point. `empty` outlives the LIDT.
    unsafe {
        x86_64::instructions::tables::lidt(&empty);
        core::arch::asm!("int3", options(nomem, nostack));
    }
    crate::arch::cpu::halt_forever()
}

// ---------------------------------------------------------------------------
// The `acpi` crate's Handler
// ---------------------------------------------------------------------------

/// PCI configuration mechanism #1 (ports 0xCF8/0xCFC): segment 0 only,
/// offsets below 256. Returns all-ones (no device) for anything else.
fn pci_read(addr: PciAddress, offset: u16, size: u32) -> u32 {
    let Some(cfg) = pci_cfg_address(addr, offset) else { return u32::MAX };
    out(0xcf8, cfg);
    let port = 0xcfc + (offset & 3);
    // SAFETY: 0xCF8/0xCFC are the PCI configuration ports; reading the data
    // port only returns the selected configuration register.
    unsafe {
        match size {
            1 => u32::from(u8::read_from_port(port)),
            2 => u32::from(u16::read_from_port(port)),
            _ => u32::read_from_port(0xcfc),
        }
    }
}

fn pci_write(addr: PciAddress, offset: u16, size: u32, value: u32) {
    let Some(cfg) = pci_cfg_address(addr, offset) else { return };
    out(0xcf8, cfg);
    let port = 0xcfc + (offset & 3);
    match size {
        1 => out(port, value as u8),
        2 => out(port, value as u16),
        _ => out(0xcfcu16, value),
    }
}

fn pci_cfg_address(addr: PciAddress, offset: u16) -> Option<u32> {
    (addr.segment() == 0 && offset < 256).then(|| {
        1 << 31
            | u32::from(addr.bus()) << 16
            | u32::from(addr.device() & 0x1f) << 11
            | u32::from(addr.function() & 0x7) << 8
            | u32::from(offset & 0xfc)
    })
}

/// TSC ticks per microsecond, measured once against the PIT. (In Bochs the
/// TSC counts instructions, so this is "instructions per PIT microsecond".)
fn tsc_per_us() -> u64 {
    static RATE: Once<u64> = Once::new();
    *RATE.call_once(|| {
        let t0 = crate::arch::cpu::rdtsc();
        crate::time::delay_us(10_000);
        ((crate::arch::cpu::rdtsc() - t0) / 10_000).max(1)
    })
}

/// The `acpi` crate's view of the machine: identity-mapped memory, x86 port
/// I/O, PCI mechanism #1, PIT delays. nvmx runs no AML, so the mutex hooks
/// only need to be correct for one caller at a time.
#[derive(Clone, Copy, Debug)]
struct IdentityMap;

impl Handler for IdentityMap {
    unsafe fn map_physical_region<T>(&self, physical_address: usize, size: usize) -> PhysicalMapping<Self, T> {
        // Callers in this file only pass addresses `probe` accepted (never 0).
        let virtual_start = NonNull::new(physical_address as *mut T).unwrap_or(NonNull::dangling());
        PhysicalMapping {
            physical_start: physical_address,
            virtual_start,
            region_length: size,
            mapped_length: size,
            handler: *self,
        }
    }

    fn unmap_physical_region<T>(_region: &PhysicalMapping<Self, T>) {}

    // The memory accessors are for AML OperationRegions and GAS registers;
    // addresses come from firmware tables and are identity mapped.
    fn read_u8(&self, address: usize) -> u8 {
        // SAFETY: see above.
        unsafe { core::ptr::read_volatile(address as *const u8) }
    }
    fn read_u16(&self, address: usize) -> u16 {
        // SAFETY: see above; unaligned registers are read unaligned.
        unsafe { core::ptr::read_unaligned(address as *const u16) }
    }
    fn read_u32(&self, address: usize) -> u32 {
        // SAFETY: see above.
        unsafe { core::ptr::read_unaligned(address as *const u32) }
    }
    fn read_u64(&self, address: usize) -> u64 {
        // SAFETY: see above.
        unsafe { core::ptr::read_unaligned(address as *const u64) }
    }
    fn write_u8(&self, address: usize, value: u8) {
        // SAFETY: see above.
        unsafe { core::ptr::write_volatile(address as *mut u8, value) }
    }
    fn write_u16(&self, address: usize, value: u16) {
        // SAFETY: see above.
        unsafe { core::ptr::write_unaligned(address as *mut u16, value) }
    }
    fn write_u32(&self, address: usize, value: u32) {
        // SAFETY: see above.
        unsafe { core::ptr::write_unaligned(address as *mut u32, value) }
    }
    fn write_u64(&self, address: usize, value: u64) {
        // SAFETY: see above.
        unsafe { core::ptr::write_unaligned(address as *mut u64, value) }
    }

    fn read_io_u8(&self, port: u16) -> u8 {
        // SAFETY: ports named by firmware tables (ACPI fixed hardware / AML).
        unsafe { u8::read_from_port(port) }
    }
    fn read_io_u16(&self, port: u16) -> u16 {
        // SAFETY: as read_io_u8.
        unsafe { u16::read_from_port(port) }
    }
    fn read_io_u32(&self, port: u16) -> u32 {
        // SAFETY: as read_io_u8.
        unsafe { u32::read_from_port(port) }
    }
    fn write_io_u8(&self, port: u16, value: u8) {
        out(port, value);
    }
    fn write_io_u16(&self, port: u16, value: u16) {
        out(port, value);
    }
    fn write_io_u32(&self, port: u16, value: u32) {
        out(port, value);
    }

    fn read_pci_u8(&self, address: PciAddress, offset: u16) -> u8 {
        pci_read(address, offset, 1) as u8
    }
    fn read_pci_u16(&self, address: PciAddress, offset: u16) -> u16 {
        pci_read(address, offset, 2) as u16
    }
    fn read_pci_u32(&self, address: PciAddress, offset: u16) -> u32 {
        pci_read(address, offset, 4)
    }
    fn write_pci_u8(&self, address: PciAddress, offset: u16, value: u8) {
        pci_write(address, offset, 1, value.into());
    }
    fn write_pci_u16(&self, address: PciAddress, offset: u16, value: u16) {
        pci_write(address, offset, 2, value.into());
    }
    fn write_pci_u32(&self, address: PciAddress, offset: u16, value: u32) {
        pci_write(address, offset, 4, value);
    }

    fn nanos_since_boot(&self) -> u64 {
        crate::arch::cpu::rdtsc() / tsc_per_us() * 1000
    }
    fn stall(&self, microseconds: u64) {
        crate::time::delay_us(microseconds);
    }
    fn sleep(&self, milliseconds: u64) {
        crate::time::delay_us(milliseconds.saturating_mul(1000));
    }

    // No AML runs concurrently (none runs at all today): a mutex is a no-op.
    fn create_mutex(&self) -> Handle {
        Handle(0)
    }
    fn acquire(&self, _mutex: Handle, _timeout: u16) -> Result<(), AmlError> {
        Ok(())
    }
    fn release(&self, _mutex: Handle) {}
}
