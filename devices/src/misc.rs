//! i8042 keyboard controller (no keyboard), POST port 0x80, system control
//! port A 0x92, PCI configuration ports with no device, reset control 0xCF9,
//! Bochs' shutdown port. (Stub in this commit.)

/// A machine-level effect of a write.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MiscEvent {
    /// The machine resets.
    Reset,
    /// Bochs' "Shutdown" string was written to 0x8900.
    BochsShutdown,
}

/// The small devices.
#[derive(Clone, Debug, Default)]
pub struct Misc {
    post: u8,
    pci_address: u32,
}

impl Misc {
    /// Power-on state.
    pub fn new() -> Self {
        Self::default()
    }
    /// Ports these devices decode with accesses wider than a byte (PCI
    /// CONFIG_ADDRESS / CONFIG_DATA).
    pub fn claims_wide(port: u16, size: u8) -> bool {
        (port == 0xCF8 && size == 4) || ((0xCFC..=0xCFF).contains(&port) && size > 1)
    }
    /// Wide `IN`.
    pub fn read_wide(&mut self, port: u16, _size: u8) -> u32 {
        if port == 0xCF8 { self.pci_address } else { u32::MAX }
    }
    /// Wide `OUT`; true if it resets the machine.
    pub fn write_wide(&mut self, port: u16, _size: u8, value: u32) -> bool {
        if port == 0xCF8 {
            self.pci_address = value & 0x80FF_FFFC;
        }
        false
    }
    /// Byte `IN`.
    pub fn read(&mut self, port: u16) -> u8 {
        match port {
            0x80 => self.post,
            _ => 0xFF,
        }
    }
    /// Byte `OUT`.
    pub fn write(&mut self, port: u16, v: u8) -> Option<MiscEvent> {
        if port == 0x80 {
            self.post = v;
        }
        None
    }
}
