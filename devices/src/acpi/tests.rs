//! The tables parsed back the way an OS does, with the `acpi` crate (the
//! kernel's), and the DSDT run by its AML interpreter against the real PM
//! block of a [`Platform`].

use super::*;
use crate::{Config, Event, Platform};
use ::acpi::aml::Interpreter;
use ::acpi::aml::namespace::AmlName;
use ::acpi::aml::object::Object;
use ::acpi::platform::interrupt::{InterruptModel, Polarity, TriggerMode};
use ::acpi::platform::AcpiPlatform;
use ::acpi::registers::Pm1ControlBit;
use ::acpi::sdt::fadt::Fadt;
use ::acpi::{Handle, Handler, PciAddress, PhysicalMapping};
use core::ptr::NonNull;
use core::str::FromStr;
use std::cell::RefCell;
use std::rc::Rc;

const BASE: u64 = 0xE0000;

/// Guest memory holding the tables, and the PC whose ports the AML and the
/// fixed registers reach.
#[derive(Clone)]
struct Guest {
    mem: Rc<Vec<u8>>,
    pc: Rc<RefCell<Platform>>,
}

impl Guest {
    fn new() -> Guest {
        let pc = Platform::new(Config::new(50_000_000, 256 << 20, 0));
        let t = pc.acpi_tables(BASE);
        Guest { mem: Rc::new(t.bytes), pc: Rc::new(RefCell::new(pc)) }
    }
}

impl Handler for Guest {
    unsafe fn map_physical_region<T>(&self, physical_address: usize, size: usize) -> PhysicalMapping<Self, T> {
        let off = physical_address - BASE as usize;
        assert!(off + size <= self.mem.len(), "mapping {physical_address:#x}+{size:#x} outside the tables");
        PhysicalMapping {
            physical_start: physical_address,
            // SAFETY: `off + size` is inside `mem`, which outlives the mapping
            // (the handler holds an Rc to it); the acpi crate only reads.
            virtual_start: NonNull::new(unsafe { self.mem.as_ptr().add(off) } as *mut T).unwrap(),
            region_length: size,
            mapped_length: size,
            handler: self.clone(),
        }
    }
    fn unmap_physical_region<T>(_region: &PhysicalMapping<Self, T>) {}
    fn read_u8(&self, _a: usize) -> u8 { unreachable!("the DSDT's AML does no memory or PCI access") }
    fn read_u16(&self, _a: usize) -> u16 { unreachable!("the DSDT's AML does no memory or PCI access") }
    fn read_u32(&self, _a: usize) -> u32 { unreachable!("the DSDT's AML does no memory or PCI access") }
    fn read_u64(&self, _a: usize) -> u64 { unreachable!("the DSDT's AML does no memory or PCI access") }
    fn write_u8(&self, _a: usize, _v: u8) { unreachable!("the DSDT's AML does no memory or PCI access") }
    fn write_u16(&self, _a: usize, _v: u16) { unreachable!("the DSDT's AML does no memory or PCI access") }
    fn write_u32(&self, _a: usize, _v: u32) { unreachable!("the DSDT's AML does no memory or PCI access") }
    fn write_u64(&self, _a: usize, _v: u64) { unreachable!("the DSDT's AML does no memory or PCI access") }
    fn read_io_u8(&self, port: u16) -> u8 { self.pc.borrow_mut().io_in(port, 1) as u8 }
    fn read_io_u16(&self, port: u16) -> u16 { self.pc.borrow_mut().io_in(port, 2) as u16 }
    fn read_io_u32(&self, port: u16) -> u32 { self.pc.borrow_mut().io_in(port, 4) }
    fn write_io_u8(&self, port: u16, v: u8) { self.pc.borrow_mut().io_out(port, 1, v as u32) }
    fn write_io_u16(&self, port: u16, v: u16) { self.pc.borrow_mut().io_out(port, 2, v as u32) }
    fn write_io_u32(&self, port: u16, v: u32) { self.pc.borrow_mut().io_out(port, 4, v) }
    fn read_pci_u8(&self, _a: PciAddress, _o: u16) -> u8 { 0xFF }
    fn read_pci_u16(&self, _a: PciAddress, _o: u16) -> u16 { 0xFFFF }
    fn read_pci_u32(&self, _a: PciAddress, _o: u16) -> u32 { 0xFFFF_FFFF }
    fn write_pci_u8(&self, _a: PciAddress, _o: u16, _v: u8) {}
    fn write_pci_u16(&self, _a: PciAddress, _o: u16, _v: u16) {}
    fn write_pci_u32(&self, _a: PciAddress, _o: u16, _v: u32) {}
    fn nanos_since_boot(&self) -> u64 { 0 }
    fn stall(&self, _us: u64) {}
    fn sleep(&self, _ms: u64) {}
    fn create_mutex(&self) -> Handle { Handle(0) }
    fn acquire(&self, _m: Handle, _t: u16) -> Result<(), ::acpi::aml::AmlError> { Ok(()) }
    fn release(&self, _m: Handle) {}
}

fn sum(b: &[u8]) -> u8 {
    b.iter().fold(0u8, |a, &x| a.wrapping_add(x))
}

fn u32_at(b: &[u8], o: usize) -> u32 {
    u32::from_le_bytes(b[o..o + 4].try_into().unwrap())
}

#[test]
fn rsdp_found_by_the_bios_area_scan_and_checksums_hold() {
    let t = build(BASE, &AcpiConfig::default());
    // The standard scan: "RSD PTR " on a 16-byte boundary, 20-byte checksum.
    let found = (0..t.bytes.len())
        .step_by(16)
        .find(|&o| &t.bytes[o..o + 8] == b"RSD PTR " && sum(&t.bytes[o..o + 20]) == 0)
        .expect("RSDP found by scanning");
    assert_eq!(found, t.rsdp_offset);
    let rsdp = &t.bytes[found..found + 36];
    assert_eq!(rsdp, t.rsdp());
    assert_eq!(rsdp[15], 2, "revision 2");
    assert_eq!(sum(rsdp), 0, "extended checksum");
    // Every table the XSDT and RSDT list has a valid checksum, and both list
    // the same tables.
    let xsdt = (u64::from_le_bytes(rsdp[24..32].try_into().unwrap()) - BASE) as usize;
    let rsdt = (u32_at(rsdp, 16) as u64 - BASE) as usize;
    let xlen = u32_at(&t.bytes, xsdt + 4) as usize;
    let rlen = u32_at(&t.bytes, rsdt + 4) as usize;
    assert_eq!(sum(&t.bytes[xsdt..xsdt + xlen]), 0);
    assert_eq!(sum(&t.bytes[rsdt..rsdt + rlen]), 0);
    let mut sigs = Vec::new();
    for i in 0..(xlen - 36) / 8 {
        let a = u64::from_le_bytes(t.bytes[xsdt + 36 + 8 * i..xsdt + 44 + 8 * i].try_into().unwrap());
        assert_eq!(a as u32, u32_at(&t.bytes, rsdt + 36 + 4 * i));
        let o = (a - BASE) as usize;
        let len = u32_at(&t.bytes, o + 4) as usize;
        assert_eq!(sum(&t.bytes[o..o + len]), 0, "checksum of {:?}", core::str::from_utf8(&t.bytes[o..o + 4]));
        sigs.push(t.bytes[o..o + 4].to_vec());
    }
    assert_eq!(sigs, [b"FACP".to_vec(), b"APIC".to_vec()]);
}

#[test]
fn madt_and_fadt_as_an_os_reads_them() {
    let g = Guest::new();
    // SAFETY: BASE is where Guest's memory holds the RSDP (offset 0).
    let tables = unsafe { ::acpi::AcpiTables::from_rsdp(g.clone(), BASE as usize) }.unwrap();
    assert_eq!(tables.rsdp_revision, 2);
    {
        let fadt = tables.find_table::<Fadt>().expect("FADT");
        assert_eq!({ fadt.sci_interrupt }, 9);
        assert_eq!(fadt.pm1a_event_block().unwrap().address, 0x600);
        assert_eq!(fadt.pm1a_control_block().unwrap().address, 0x604);
        let reset = fadt.reset_register().unwrap();
        assert_eq!((reset.address, { fadt.reset_value }), (0xCF9, 6));
        assert!({ fadt.flags }.supports_system_reset_via_fadt());
        assert_eq!({ fadt.century }, 0x32);
        assert!(!{ fadt.flags }.power_button_is_control_method(), "fixed-feature power button");
    }
    let platform = AcpiPlatform::new(tables, g.clone()).unwrap();
    assert_eq!(platform.sci_interrupt, 9);
    let pm = platform.pm_timer.as_ref().expect("PM timer");
    assert_eq!(pm.base.address, 0x608);
    assert!(pm.supports_32bit);
    let InterruptModel::Apic(apic) = &platform.interrupt_model else { panic!("APIC model") };
    assert_eq!(apic.local_apic_address, 0xFEE0_0000);
    assert!(apic.also_has_legacy_pics);
    assert_eq!(apic.io_apics.len(), 1);
    assert_eq!((apic.io_apics[0].id, apic.io_apics[0].address, apic.io_apics[0].global_system_interrupt_base), (1, 0xFEC0_0000, 0));
    let isos: Vec<_> = apic.interrupt_source_overrides.iter().map(|o| (o.isa_source, o.global_system_interrupt)).collect();
    assert_eq!(isos, [(0, 2), (9, 9)]);
    let sci = apic.interrupt_source_overrides[1];
    assert!(matches!(sci.polarity, Polarity::ActiveHigh) && matches!(sci.trigger_mode, TriggerMode::Level));
    assert_eq!(apic.local_apic_nmi_lines.len(), 1);
    let cpus = platform.processor_info.as_ref().unwrap();
    assert_eq!(cpus.boot_processor.local_apic_id, 0);
    assert!(cpus.application_processors.is_empty());
}

#[test]
fn s5_from_the_dsdt_powers_the_platform_off() {
    let g = Guest::new();
    // SAFETY: as above.
    let tables = unsafe { ::acpi::AcpiTables::from_rsdp(g.clone(), BASE as usize) }.unwrap();
    let platform = AcpiPlatform::new(tables, g.clone()).unwrap();
    let aml = Interpreter::new_from_platform(&platform).expect("DSDT loads");
    let s5 = aml.evaluate(AmlName::from_str("\\_S5").unwrap(), vec![]).expect("\\_S5 exists");
    let Object::Package(elems) = &*s5 else { panic!("\\_S5 is a package") };
    let ints: Vec<u64> = elems.iter().map(|e| if let Object::Integer(i) = **e { i } else { u64::MAX }).collect();
    assert_eq!(ints, [5, 5, 0, 0]);
    // What ACPICA's AcpiEnterSleepState(5) does: SLP_TYPa, then SLP_EN.
    let cnt = &platform.registers.pm1_control_registers;
    assert!(cnt.read_bit(Pm1ControlBit::SciEnable).unwrap(), "always in ACPI mode");
    cnt.set_sleep_typ(ints[0] as u8).unwrap();
    assert_eq!(g.pc.borrow_mut().poll_event(), None);
    cnt.set_bit(Pm1ControlBit::SleepEnable, true).unwrap();
    assert_eq!(g.pc.borrow_mut().poll_event(), Some(Event::PowerOff));
}

#[test]
fn without_ioapic_the_madt_says_so() {
    let t = build(BASE, &AcpiConfig { ioapic: false, ioapic_id: 1, cpus: 1 });
    let text = &t.bytes;
    let madt = text.windows(4).position(|w| w == b"APIC").unwrap();
    let len = u32_at(text, madt + 4) as usize;
    assert_eq!(len, 44 + 8 + 6, "LAPIC and LINT1 NMI only");
    assert_eq!(sum(&text[madt..madt + len]), 0);
}

#[test]
fn a_two_cpu_madt_lists_both_local_apics() {
    let t = build(BASE, &AcpiConfig { ioapic: false, ioapic_id: 1, cpus: 2 });
    let text = &t.bytes;
    let madt = text.windows(4).position(|w| w == b"APIC").unwrap();
    let len = u32_at(text, madt + 4) as usize;
    assert_eq!(len, 44 + 2 * 8 + 6, "two LAPICs and LINT1 NMI");
    assert_eq!(sum(&text[madt..madt + len]), 0);
    // Processor Local APIC entries: type 0, length 8, UID, APIC ID, enabled.
    assert_eq!(&text[madt + 44..madt + 52], &[0, 8, 0, 0, 1, 0, 0, 0]);
    assert_eq!(&text[madt + 52..madt + 60], &[0, 8, 1, 1, 1, 0, 0, 0]);
}
