//! The small parts of the PC: the i8042 keyboard controller with nothing
//! attached (0x60/0x64), the POST port 0x80, system control port A (0x92),
//! the reset control register 0xCF9, PCI configuration mechanism #1 with no
//! device behind it (0xCF8/0xCFC-0xCFF) and Bochs' shutdown port 0x8900.
//!
//! i8042 (IBM PC/AT technical reference, "Keyboard controller"): status
//! with the system flag, command byte (0x20/0x60), self-test 0xAA -> 0x55,
//! interface tests 0xAB -> 0x00 and 0xA9 -> 0x02 (no mouse: clock line
//! stuck), keyboard/aux enable and disable, output port read/write (0xD0/
//! 0xD1; bit 0 low resets), pulse commands 0xF0-0xFF (0xFE resets). A byte
//! written for the keyboard finds none attached: the controller answers
//! 0xFF with the status TIMEOUT bit set and raises IRQ1 if the command byte
//! enables it, so a driver's keyboard probe fails at once instead of
//! waiting out its own timeout. There is no auxiliary (mouse) port. PCI: CONFIG_ADDRESS keeps its enable/bus/device/
//! function/register bits; every CONFIG_DATA read is all-ones ("no device"),
//! writes are dropped. 0xCF9: a 0->1 edge of RST_CPU (bit 2) resets.

use alloc::collections::VecDeque;

/// A machine-level effect of a write.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MiscEvent {
    /// The machine resets.
    Reset,
    /// Bochs' "Shutdown" string was written to 0x8900.
    BochsShutdown,
}

const BOCHS_SHUTDOWN: &[u8] = b"Shutdown";

/// The small devices.
#[derive(Clone, Debug)]
pub struct Misc {
    post: u8,
    port92: u8,
    cf9: u8,
    pci_address: u32,
    /// Configuration space of the host bridge at 00:00.0, if present.
    host_bridge: Option<[u8; 256]>,
    kbc_ccb: u8,
    kbc_out: VecDeque<u8>,
    /// The controller command whose data byte comes next (0x60, 0xD1, ...).
    kbc_pending: Option<u8>,
    kbc_last_was_command: bool,
    /// The byte in the output buffer came from the keyboard port (a
    /// timeout), not from a controller command.
    kbc_timeout: bool,
    bochs_matched: usize,
}

impl Default for Misc {
    fn default() -> Self {
        Self::new(true)
    }
}

/// The i440FX host bridge's configuration header (PCI 3.0 type 0 header).
fn host_bridge_config() -> [u8; 256] {
    let mut c = [0u8; 256];
    c[0x00..0x02].copy_from_slice(&0x8086u16.to_le_bytes()); // vendor: Intel
    c[0x02..0x04].copy_from_slice(&0x1237u16.to_le_bytes()); // 82441FX PMC
    c[0x04..0x06].copy_from_slice(&0x0006u16.to_le_bytes()); // command: memory, bus master
    c[0x06..0x08].copy_from_slice(&0x0280u16.to_le_bytes()); // status: fast back-to-back, medium DEVSEL
    c[0x08] = 0x02; // revision
    c[0x0B] = 0x06; // class: bridge
    c[0x0A] = 0x00; // subclass: host bridge
    c
}

impl Misc {
    /// Power-on state (as a BIOS leaves the i8042: command byte 0x45),
    /// with or without the PCI host bridge.
    pub fn new(host_bridge: bool) -> Self {
        Misc {
            post: 0,
            port92: 0x02, // A20 on
            cf9: 0,
            pci_address: 0,
            host_bridge: host_bridge.then(host_bridge_config),
            kbc_ccb: 0x45,
            kbc_out: VecDeque::new(),
            kbc_pending: None,
            kbc_last_was_command: false,
            kbc_timeout: false,
            bochs_matched: 0,
        }
    }

    /// The last POST code written to port 0x80.
    pub fn post_code(&self) -> u8 {
        self.post
    }

    /// Ports these devices decode as PCI configuration accesses: the dword
    /// CONFIG_ADDRESS at 0xCF8 and CONFIG_DATA 0xCFC-0xCFF of any width.
    /// (Byte accesses to 0xCF8-0xCFB are other registers: 0xCF9 is reset
    /// control.)
    pub fn claims_wide(port: u16, size: u8) -> bool {
        (port == 0xCF8 && size == 4) || (0xCFC..=0xCFF).contains(&port)
    }

    /// The configuration space `CONFIG_ADDRESS` selects, if a device is
    /// there: (config bytes, register offset).
    fn pci_target(&mut self) -> Option<(&mut [u8; 256], usize)> {
        let a = self.pci_address;
        // Enable bit, bus 0, device 0, function 0.
        if a & 0x8000_0000 == 0 || a & 0x00FF_FF00 != 0 {
            return None;
        }
        let reg = (a & 0xFC) as usize;
        self.host_bridge.as_mut().map(|c| (c, reg))
    }

    /// `IN` from 0xCF8 (dword) or CONFIG_DATA.
    pub fn read_wide(&mut self, port: u16, size: u8) -> u32 {
        if port == 0xCF8 {
            return self.pci_address;
        }
        let ones = if size >= 4 { u32::MAX } else { (1u32 << (8 * size)) - 1 };
        let off = (port - 0xCFC) as usize;
        match self.pci_target() {
            Some((c, reg)) => {
                let mut v = 0u32;
                for i in 0..size as usize {
                    // Bytes beyond the dword float.
                    let b = if off + i < 4 { c[reg + off + i] } else { 0xFF };
                    v |= (b as u32) << (8 * i);
                }
                v
            }
            None => ones,
        }
    }

    /// `OUT` to 0xCF8 (dword) or CONFIG_DATA; never resets (false).
    pub fn write_wide(&mut self, port: u16, size: u8, value: u32) -> bool {
        if port == 0xCF8 {
            self.pci_address = value & 0x80FF_FFFC;
            return false;
        }
        let off = (port - 0xCFC) as usize;
        if let Some((c, reg)) = self.pci_target() {
            for i in 0..size as usize {
                if off + i >= 4 {
                    break;
                }
                let at = reg + off + i;
                let b = (value >> (8 * i)) as u8;
                match at {
                    0x04 => c[at] = b & 0x47, // I/O, memory, master, parity
                    0x05 => c[at] = b & 0x01, // SERR enable
                    0x0D => c[at] = b,        // latency timer
                    _ => {}                   // read-only (status W1C not modelled)
                }
            }
        }
        false
    }

    /// The i8042's status register (port 0x64); reading it changes nothing.
    pub fn kbc_status(&self) -> u8 {
        let obf = !self.kbc_out.is_empty() as u8;
        // SYS flag (bit 2) from the command byte; bit 4: keyboard not inhibited.
        obf | (self.kbc_ccb & 0x04)
            | (self.kbc_last_was_command as u8) << 3
            | 0x10
            | (self.kbc_timeout && obf != 0) as u8 * 0x40
    }

    /// IRQ1: keyboard-port data waits and the command byte enables the
    /// keyboard interrupt.
    pub fn irq1_line(&self) -> bool {
        self.kbc_timeout && !self.kbc_out.is_empty() && self.kbc_ccb & 0x01 != 0
    }

    /// Byte `IN`.
    pub fn read(&mut self, port: u16) -> u8 {
        match port {
            0x60 => {
                let v = self.kbc_out.pop_front().unwrap_or(0);
                if self.kbc_out.is_empty() {
                    self.kbc_timeout = false;
                }
                v
            }
            0x64 => self.kbc_status(),
            0x80 => self.post,
            0x92 => self.port92,
            0xCF9 => self.cf9,
            _ => 0xFF,
        }
    }

    fn kbc_reply(&mut self, b: u8) {
        self.kbc_timeout = false;
        if self.kbc_out.len() < 16 {
            self.kbc_out.push_back(b);
        }
    }

    fn kbc_command(&mut self, c: u8) -> Option<MiscEvent> {
        match c {
            0x20 => self.kbc_reply(self.kbc_ccb),
            0x60 | 0xD1 | 0xD2 | 0xD3 | 0xD4 => self.kbc_pending = Some(c),
            0xA7 => self.kbc_ccb |= 0x20,
            0xA8 => self.kbc_ccb &= !0x20,
            0xA9 => self.kbc_reply(0x02),
            0xAA => self.kbc_reply(0x55),
            0xAB => self.kbc_reply(0x00),
            0xAD => self.kbc_ccb |= 0x10,
            0xAE => self.kbc_ccb &= !0x10,
            0xC0 => self.kbc_reply(0xFF),
            0xD0 => self.kbc_reply(0x03 | (self.port92 & 0x02)),
            // Pulse output lines for 6 us; bit 0 low pulses reset.
            0xF0..=0xFF if c & 1 == 0 => return Some(MiscEvent::Reset),
            _ => {}
        }
        None
    }

    /// Byte `OUT`.
    pub fn write(&mut self, port: u16, v: u8) -> Option<MiscEvent> {
        match port {
            0x60 => {
                self.kbc_last_was_command = false;
                match self.kbc_pending.take() {
                    Some(0x60) => self.kbc_ccb = v,
                    Some(0xD1) => {
                        self.port92 = (self.port92 & !0x02) | (v & 0x02);
                        if v & 1 == 0 {
                            return Some(MiscEvent::Reset);
                        }
                    }
                    // Write keyboard output buffer: echo as if from the keyboard.
                    Some(0xD2) => self.kbc_reply(v),
                    // For the mouse: there is no auxiliary port.
                    Some(_) => {}
                    // For the keyboard: nothing attached, the controller
                    // times out (unless the keyboard interface is disabled).
                    None => {
                        if self.kbc_ccb & 0x10 == 0 {
                            self.kbc_out.clear();
                            self.kbc_out.push_back(0xFF);
                            self.kbc_timeout = true;
                        }
                    }
                }
            }
            0x64 => {
                self.kbc_last_was_command = true;
                return self.kbc_command(v);
            }
            0x80 => self.post = v,
            0x92 => {
                let old = self.port92;
                self.port92 = v & 0x03;
                if v & 1 != 0 && old & 1 == 0 {
                    return Some(MiscEvent::Reset);
                }
            }
            0xCF9 => {
                let old = self.cf9;
                self.cf9 = v & 0x0E;
                if v & 0x04 != 0 && old & 0x04 == 0 {
                    self.cf9 = 0;
                    return Some(MiscEvent::Reset);
                }
            }
            0x8900 => {
                if v == BOCHS_SHUTDOWN[self.bochs_matched] {
                    self.bochs_matched += 1;
                    if self.bochs_matched == BOCHS_SHUTDOWN.len() {
                        self.bochs_matched = 0;
                        return Some(MiscEvent::BochsShutdown);
                    }
                } else {
                    self.bochs_matched = (v == b'S') as usize;
                }
            }
            _ => {}
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn i8042_present_without_keyboard() {
        let mut m = Misc::new(true);
        assert_eq!(m.read(0x64) & 0x04, 0x04, "system flag set after POST");
        m.write(0x64, 0xAA);
        assert_eq!(m.read(0x64) & 1, 1);
        assert_eq!(m.read(0x60), 0x55);
        assert_eq!(m.read(0x64) & 1, 0);
        m.write(0x64, 0x60);
        m.write(0x60, 0x47);
        m.write(0x64, 0x20);
        assert_eq!(m.read(0x60), 0x47);
        assert!(!m.irq1_line());
        m.write(0x60, 0xF2); // keyboard GET ID: the controller times out
        assert_eq!(m.read(0x64) & 0x41, 0x41, "OBF with TIMEOUT");
        assert!(m.irq1_line(), "command byte 0x47 enables IRQ1");
        assert_eq!(m.read(0x60), 0xFF);
        assert!(!m.irq1_line());
        assert_eq!(m.read(0x64) & 0x41, 0);
        m.write(0x64, 0xA9);
        assert_eq!(m.read(0x60), 0x02, "no mouse");
    }

    #[test]
    fn resets() {
        let mut m = Misc::new(true);
        assert_eq!(m.write(0x64, 0xFE), Some(MiscEvent::Reset));
        assert_eq!(m.write(0xCF9, 0x02), None, "hard reset select alone");
        assert_eq!(m.write(0xCF9, 0x06), Some(MiscEvent::Reset));
        assert_eq!(m.write(0x92, 0x03), Some(MiscEvent::Reset));
        m.write(0x64, 0xD1);
        assert_eq!(m.write(0x60, 0xFE), Some(MiscEvent::Reset));
    }

    #[test]
    fn pci_host_bridge_only_and_post() {
        let mut m = Misc::new(true);
        m.write_wide(0xCF8, 4, 0x8000_0000);
        assert_eq!(m.read_wide(0xCF8, 4), 0x8000_0000, "mechanism #1 detectable");
        assert_eq!(m.read_wide(0xCFC, 4), 0x1237_8086);
        // Linux pci_sanity_check: class word at 0x0A.
        m.write_wide(0xCF8, 4, 0x8000_0008);
        assert_eq!(m.read_wide(0xCFE, 2), 0x0600);
        assert_eq!(m.read_wide(0xCFF, 1), 0x06);
        // Latency timer writable, vendor ID not.
        m.write_wide(0xCF8, 4, 0x8000_000C);
        m.write_wide(0xCFD, 1, 0x40);
        assert_eq!(m.read_wide(0xCFC, 4), 0x0000_4000);
        m.write_wide(0xCF8, 4, 0x8000_0000);
        m.write_wide(0xCFC, 4, 0);
        assert_eq!(m.read_wide(0xCFC, 2), 0x8086);
        // Device 1, bus 1, and accesses without the enable bit: nothing.
        for a in [0x8000_0800u32, 0x8001_0000, 0x0000_0000] {
            m.write_wide(0xCF8, 4, a);
            assert_eq!(m.read_wide(0xCFC, 4), 0xFFFF_FFFF, "{a:#x}");
            assert_eq!(m.read_wide(0xCFE, 1), 0xFF);
        }
        let mut bare = Misc::new(false);
        bare.write_wide(0xCF8, 4, 0x8000_0000);
        assert_eq!(bare.read_wide(0xCFC, 4), 0xFFFF_FFFF, "no device at all");
        m.write(0x80, 0x42);
        assert_eq!(m.read(0x80), 0x42);
    }

    #[test]
    fn bochs_shutdown_string() {
        let mut m = Misc::new(true);
        for &b in b"ShutShutdow" {
            assert_eq!(m.write(0x8900, b), None);
        }
        assert_eq!(m.write(0x8900, b'n'), Some(MiscEvent::BochsShutdown));
    }
}
