//! The L1's physical address space, described once; every loader turns it
//! into its own memory map (e820, Multiboot1 mmap, Multiboot2 mmap tag).
//!
//! A PC's layout (as SeaBIOS/Bochs' BIOS show it):
//!
//! | range                     | what                                            |
//! |---------------------------|-------------------------------------------------|
//! | 0 – 0x9FC00               | low RAM (IVT, BDA, boot information)            |
//! | 0x9FC00 – 0xA0000         | EBDA, reserved                                  |
//! | 0xA0000 – 0xE0000         | legacy VGA / option-ROM hole (not in the map)   |
//! | 0xE0000 – 0x100000        | BIOS area, reserved: the ACPI tables, RSDP first|
//! | 0x100000 – top of RAM     | RAM (below the 3 GiB PCI hole)                  |
//! | 0xFEC00000 + 4 KiB        | IOAPIC, reserved                                |
//! | 0xFEE00000 + 4 KiB        | local APIC, reserved                            |

/// What a range is, in e820 terms (ACPI 6.5 table 15.1, Multiboot's types agree).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// Usable RAM (e820 type 1).
    Ram = 1,
    /// Reserved: firmware, MMIO (e820 type 2).
    Reserved = 2,
}

/// One range of the map.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Region {
    pub base: u64,
    pub len: u64,
    pub kind: Kind,
}

impl Region {
    pub const fn end(&self) -> u64 {
        self.base + self.len
    }
}

/// End of low RAM: the EBDA's 1 KiB follows (BDA word 0x40E points there on a PC).
pub const LOW_RAM_END: u64 = 0x9_FC00;
/// Start of the BIOS area; the ACPI tables go here, RSDP first, so that the
/// standard scan of 0xE0000–0xFFFFF finds it (ACPI 6.5 5.2.5.1).
pub const BIOS_AREA: u64 = 0xE_0000;
/// RAM above 1 MiB starts here.
pub const HIGH_RAM: u64 = 0x10_0000;
/// Where RAM must stop: the PCI hole below 4 GiB (MMIO windows live there).
pub const PCI_HOLE: u64 = 0xC000_0000;
/// The IOAPIC's MMIO window.
pub const IOAPIC_BASE: u64 = 0xFEC0_0000;
/// The local APIC's MMIO window (IA32_APIC_BASE's reset value, SDM 11.4.4).
pub const LAPIC_BASE: u64 = 0xFEE0_0000;

/// An L1's physical address space: `ram` bytes of memory at guest-physical 0.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AddressSpace {
    ram: u64,
}

impl AddressSpace {
    /// `ram` bytes of guest memory (at least 2 MiB; RAM beyond the PCI hole
    /// is not shown to the L1).
    pub const fn new(ram: u64) -> AddressSpace {
        AddressSpace { ram }
    }

    /// The size of the guest-memory slice.
    pub const fn ram(&self) -> u64 {
        self.ram
    }

    /// Top of the RAM the L1 may use (exclusive).
    pub const fn ram_top(&self) -> u64 {
        if self.ram < PCI_HOLE { self.ram } else { PCI_HOLE }
    }

    /// The map, in address order, the same for every loader.
    pub fn regions(&self) -> [Region; 6] {
        [
            Region { base: 0, len: LOW_RAM_END, kind: Kind::Ram },
            Region { base: LOW_RAM_END, len: 0xA_0000 - LOW_RAM_END, kind: Kind::Reserved },
            Region { base: BIOS_AREA, len: HIGH_RAM - BIOS_AREA, kind: Kind::Reserved },
            Region { base: HIGH_RAM, len: self.ram_top() - HIGH_RAM, kind: Kind::Ram },
            Region { base: IOAPIC_BASE, len: 0x1000, kind: Kind::Reserved },
            Region { base: LAPIC_BASE, len: 0x1000, kind: Kind::Reserved },
        ]
    }

    /// KiB of RAM below 1 MiB and above 1 MiB up to the first hole, as
    /// Multiboot's mem_lower/mem_upper count them.
    pub fn mem_lower_upper_kib(&self) -> (u32, u32) {
        ((LOW_RAM_END / 1024) as u32, ((self.ram_top() - HIGH_RAM) / 1024) as u32)
    }

    /// Is [base, base+len) usable RAM?
    pub fn is_ram(&self, base: u64, len: u64) -> bool {
        let Some(end) = base.checked_add(len) else { return false };
        self.regions().iter().any(|r| r.kind == Kind::Ram && r.base <= base && end <= r.end())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn map_is_ordered_and_disjoint() {
        let s = AddressSpace::new(256 << 20);
        let r = s.regions();
        for w in r.windows(2) {
            assert!(w[0].end() <= w[1].base, "{:?} overlaps {:?}", w[0], w[1]);
        }
        assert_eq!(r[3], Region { base: 0x10_0000, len: (256 << 20) - 0x10_0000, kind: Kind::Ram });
        assert_eq!(s.mem_lower_upper_kib(), (639, 256 * 1024 - 1024));
    }

    #[test]
    fn ram_stops_at_the_pci_hole() {
        let s = AddressSpace::new(4 << 30);
        assert_eq!(s.ram_top(), PCI_HOLE);
        assert!(s.is_ram(0x10_0000, 0x1000));
        assert!(!s.is_ram(BIOS_AREA, 0x10));
        assert!(!s.is_ram(LOW_RAM_END - 8, 16));
        assert!(!s.is_ram(u64::MAX, 2));
    }
}
