//! MC146818 CMOS/RTC at 0x70 (index; bit 7 masks NMI) / 0x71 (data).
//! (Stub in this commit: the full model follows.)

/// The RTC and its CMOS memory.
#[derive(Clone, Debug)]
pub struct Rtc {
    index: u8,
    nmi_masked: bool,
    cmos: [u8; 128],
}

impl Rtc {
    /// Time of day from `epoch_at_tsc0` seconds at TSC 0; CMOS memory-size
    /// bytes from `ram_bytes`.
    pub fn new(_tsc_hz: u64, _epoch_at_tsc0: u64, _ram_bytes: u64) -> Self {
        Rtc { index: 0, nmi_masked: false, cmos: [0; 128] }
    }
    /// Bring time to `tsc` (latches periodic/alarm/update flags).
    pub fn advance(&mut self, _tsc: u64) {}
    /// TSC of the next interrupt-flag event while one is enabled.
    pub fn next_deadline_tsc(&self) -> Option<u64> {
        None
    }
    /// IRQ8 level.
    pub fn irq_line(&self) -> bool {
        false
    }
    /// Whether port 0x70 bit 7 masks NMIs.
    pub fn nmi_masked(&self) -> bool {
        self.nmi_masked
    }
    /// `IN` from 0x70/0x71.
    pub fn read(&mut self, port: u16, _tsc: u64) -> u8 {
        if port == 0x71 { self.cmos[self.index as usize & 0x7F] } else { 0xFF }
    }
    /// `OUT` to 0x70/0x71.
    pub fn write(&mut self, port: u16, v: u8, _tsc: u64) {
        if port == 0x70 {
            self.index = v & 0x7F;
            self.nmi_masked = v & 0x80 != 0;
        } else {
            self.cmos[self.index as usize] = v;
        }
    }
}
