//! ACPI PM1a event/control blocks, PM timer. (Stub in this commit.)

/// PM1a_EVT_BLK (status 0x600, enable 0x602).
pub const PM1A_EVT: u16 = 0x600;
/// PM1a_CNT_BLK.
pub const PM1A_CNT: u16 = 0x604;
/// PM_TMR_BLK.
pub const PM_TMR: u16 = 0x608;
/// SLP_TYP value of `\_S5` in the DSDT.
pub const SLP_TYP_S5: u8 = 5;

/// The PM block.
#[derive(Clone, Debug)]
pub struct PmBlock {
    tsc_hz: u64,
}

impl PmBlock {
    /// Power-on state (SCI_EN set: ACPI mode is always on, SMI_CMD is 0).
    pub fn new(tsc_hz: u64) -> Self {
        PmBlock { tsc_hz }
    }
    /// Whether `port` is in the block.
    pub fn claims(port: u16) -> bool {
        (PM1A_EVT..PM_TMR + 4).contains(&port)
    }
    /// Bring time to `tsc`.
    pub fn advance(&mut self, _tsc: u64) {}
    /// TSC of the next timer-overflow status event while enabled.
    pub fn next_deadline_tsc(&self) -> Option<u64> {
        None
    }
    /// SCI level.
    pub fn sci_line(&self) -> bool {
        false
    }
    /// `IN` of `size` bytes.
    pub fn read(&mut self, port: u16, _size: u8, tsc: u64) -> u32 {
        if port == PM_TMR {
            crate::time::tsc_to_ticks(tsc, self.tsc_hz, crate::time::PM_TIMER_HZ) as u32
        } else {
            0
        }
    }
    /// `OUT` of `size` bytes; true when the write powers the machine off (S5).
    pub fn write(&mut self, _port: u16, _size: u8, _value: u32, _tsc: u64) -> bool {
        false
    }
}
