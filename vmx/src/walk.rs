//! Page walks L0 does on a guest's behalf, over any memory that can read a
//! guest-physical u64 (a trait, so the walks are tested on the host with a
//! fake memory):
//! * an L1 linear address through L1's 4-level page tables (SDM Vol. 3A
//!   4.5), for the memory operands of L1's VMX instructions;
//! * an L2 guest-physical address through L1's EPT1-2 (SDM Vol. 3C 29.3.2),
//!   to fill the shadow EPT0-2.

/// Guest-physical memory as a page walk sees it.
pub trait GuestMemory {
    /// The 8 bytes at guest-physical `gpa`, or `None` outside the guest's memory.
    fn read_u64(&self, gpa: u64) -> Option<u64>;
}

const ADDR: u64 = 0x000F_FFFF_FFFF_F000;

/// Why a linear address has no translation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WalkError {
    /// A paging-structure entry is not present (a #PF on hardware).
    NotPresent,
    /// A paging structure lies outside the guest's memory.
    BadTable,
}

/// Translates `linear` through the 4-level page tables at `cr3` (4 KiB,
/// 2 MiB and 1 GiB pages). With paging off (`paging == false`) linear =
/// physical.
pub fn linear_to_physical(mem: &dyn GuestMemory, cr3: u64, paging: bool, linear: u64) -> Result<u64, WalkError> {
    if !paging {
        return Ok(linear);
    }
    let mut table = cr3 & ADDR;
    for level in (1..=4).rev() {
        let shift = 12 + 9 * (level - 1);
        let e = mem.read_u64(table + 8 * ((linear >> shift) & 511)).ok_or(WalkError::BadTable)?;
        if e & 1 == 0 {
            return Err(WalkError::NotPresent);
        }
        if level == 1 || (level <= 3 && e & 0x80 != 0) {
            let page = 1u64 << shift;
            return Ok((e & ADDR & !(page - 1)) | (linear & (page - 1)));
        }
        table = e & ADDR;
    }
    unreachable!("level 1 always returns")
}

/// An EPT translation: the guest-physical address one level down and the
/// read/write/execute permissions of the whole walk (bits 0-2).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EptTranslation {
    pub address: u64,
    pub permissions: u64,
}

/// Walks the EPT whose pointer is `eptp` for `gpa`. `Err(permissions)`
/// when an entry is not present (permissions so far: for the
/// qualification's bits 3-5, which are 0 then, SDM 28.2.1 table 28-7).
pub fn ept_translate(mem: &dyn GuestMemory, eptp: u64, gpa: u64) -> Result<EptTranslation, Option<WalkError>> {
    let mut table = eptp & ADDR;
    let mut perms = 7;
    for level in (1..=4).rev() {
        let shift = 12 + 9 * (level - 1);
        let e = mem.read_u64(table + 8 * ((gpa >> shift) & 511)).ok_or(Some(WalkError::BadTable))?;
        if e & 7 == 0 {
            return Err(None);
        }
        perms &= e & 7;
        if level == 1 || (level <= 3 && e & 0x80 != 0) {
            let page = 1u64 << shift;
            return Ok(EptTranslation { address: (e & ADDR & !(page - 1)) | (gpa & (page - 1)), permissions: perms });
        }
        table = e & ADDR;
    }
    unreachable!("level 1 always returns")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    struct Fake(HashMap<u64, u64>, u64);
    impl GuestMemory for Fake {
        fn read_u64(&self, gpa: u64) -> Option<u64> {
            (gpa < self.1).then(|| self.0.get(&gpa).copied().unwrap_or(0))
        }
    }

    #[test]
    fn linear_walk_4k_2m_and_not_present() {
        let mut m = Fake(HashMap::new(), 1 << 30);
        // CR3 = 0x1000: PML4[0] -> 0x2000, PDPT[0] -> 0x3000, PD[0] 2 MiB page at 0,
        // PD[1] -> PT 0x4000, PT[5] -> 0x9000.
        m.0.insert(0x1000, 0x2003);
        m.0.insert(0x2000, 0x3003);
        m.0.insert(0x3000, 0x83);
        m.0.insert(0x3008, 0x4003);
        m.0.insert(0x4000 + 5 * 8, 0x9003);
        assert_eq!(linear_to_physical(&m, 0x1000, true, 0x12345), Ok(0x12345));
        assert_eq!(linear_to_physical(&m, 0x1000, true, 0x20_5123), Ok(0x9123));
        assert_eq!(linear_to_physical(&m, 0x1000, true, 0x20_6000), Err(WalkError::NotPresent));
        assert_eq!(linear_to_physical(&m, 0x1000, false, 0xdead), Ok(0xdead));
        assert_eq!(linear_to_physical(&m, 1 << 31, true, 0), Err(WalkError::BadTable));
    }

    #[test]
    fn ept_walk_permissions_and_holes() {
        let mut m = Fake(HashMap::new(), 1 << 30);
        m.0.insert(0x1000, 0x2007);
        m.0.insert(0x2000, 0x3007);
        m.0.insert(0x3000, 0x4003); // PD[0]: read/write only
        m.0.insert(0x4000 + 8 * 0x10, 0x7_7000 | 7);
        let t = ept_translate(&m, 0x1000 | 0x1E, 0x10_123).unwrap();
        assert_eq!(t, EptTranslation { address: 0x7_7123, permissions: 3 });
        assert_eq!(ept_translate(&m, 0x1000, 0x11_000), Err(None));
        assert_eq!(ept_translate(&m, 1 << 31, 0), Err(Some(WalkError::BadTable)));
    }
}
