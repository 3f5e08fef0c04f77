//! Page walks L0 does on a guest's behalf, over any memory that can read a
//! guest-physical u64 (a trait, so the walks are tested on the host with a
//! fake memory):
//! * an L1 linear address through L1's page tables, in any paging mode
//!   (SDM Vol. 3A chapter 4: no paging, 32-bit, PAE, 4-level, 5-level), for
//!   the memory operands of L1's VMX instructions;
//! * an L2 guest-physical address through L1's EPT1-2 (SDM Vol. 3C 29.3.2),
//!   to fill the shadow EPT0-2, and the EPT accessed/dirty flags the CPU
//!   would set on that walk (29.3.5).
//!
//! What the linear walk checks, for a supervisor (CPL 0) data access, the
//! only kind a VMX instruction makes:
//! * the P flag of every entry used (PAE: the PDPTE registers too);
//! * for a write with CR0.WP = 1, the R/W flag of every entry that controls
//!   it (SDM 4.6.1; PAE PDPTEs have no R/W). With WP = 0 writes are allowed;
//! * reserved bits that do not depend on MAXPHYADDR or EFER.NXE (SDM 4.3-4.5
//!   tables): PS = 1 in a PML5E or PML4E; bits 20:13 of a PDE that maps a
//!   2 MiB page and bits 29:13 of a PDPTE that maps a 1 GiB page; bit 21 of
//!   a 32-bit PDE that maps a 4 MiB page; PAE PDPTE bits 2:1, 8:5 and 63:52;
//!   PAE PDE/PTE bits 62:52.
//!
//! What it does not check or do: reserved physical-address bits between
//! MAXPHYADDR and bit 51 (and 32-bit PSE-36 bits above MAXPHYADDR); the XD
//! bit (reserved when EFER.NXE = 0; irrelevant to data accesses otherwise);
//! U/S, so neither SMAP nor user-mode rules; protection keys; 1 GiB pages
//! being unsupported by the CPU; canonical addresses (the caller's segment
//! checks); setting accessed and dirty flags; the guest's TLBs (it walks the
//! tables as they are in memory now).

use crate::regs::{CR0_PG, CR4_PSE, CR4_PAE, CR4_LA57, EFER_LMA};

/// Guest-physical memory as a page walk sees it.
pub trait GuestMemory {
    /// The 8 bytes at guest-physical `gpa`, or `None` outside the guest's memory.
    fn read_u64(&self, gpa: u64) -> Option<u64>;
}

/// Bits 51:12 of a 64-bit paging-structure entry (or CR3): the address.
const ADDR: u64 = 0x000F_FFFF_FFFF_F000;
/// Bits 31:12 of a 32-bit paging entry (or CR3).
const ADDR32: u64 = 0xFFFF_F000;

const P: u64 = 1 << 0;
const RW: u64 = 1 << 1;
const PS: u64 = 1 << 7;
/// Reserved bits of a PAE PDPTE: 63:52, 8:5 and 2:1 (SDM table 4-8).
const PAE_PDPTE_RESERVED: u64 = 0xFFF0_0000_0000_01E6;
/// Reserved bits 62:52 of a PAE PDE or PTE (SDM tables 4-9 to 4-11).
const PAE_RESERVED: u64 = 0x7FF0_0000_0000_0000;


/// The paging mode of the guest (SDM Vol. 3A 4.1.1, table 4-1), from CR0.PG,
/// CR4.PAE, CR4.PSE, EFER.LMA and CR4.LA57.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PagingMode {
    /// CR0.PG = 0: linear = physical, 32 bits (IA-32e mode needs paging).
    Off,
    /// 32-bit paging (CR4.PAE = 0); `pse` is CR4.PSE (4 MiB pages, PSE-36).
    Bits32 { pse: bool },
    /// PAE paging (EFER.LMA = 0); `pdptes` are the four PDPTE registers,
    /// which the walk uses instead of reading the PDPT at CR3.
    Pae { pdptes: [u64; 4] },
    /// 4-level paging (EFER.LMA = 1, CR4.LA57 = 0).
    Level4,
    /// 5-level paging (EFER.LMA = 1, CR4.LA57 = 1).
    Level5,
}

impl PagingMode {
    /// Mode from the guest's control registers; `pdptes` are the PDPTE
    /// registers (VMCS GUEST_PDPTR0-3), used for PAE.
    pub fn from_regs(cr0: u64, cr4: u64, efer: u64, pdptes: [u64; 4]) -> Self {
        if cr0 & CR0_PG == 0 {
            Self::Off
        } else if cr4 & CR4_PAE == 0 {
            Self::Bits32 { pse: cr4 & CR4_PSE != 0 }
        } else if efer & EFER_LMA == 0 {
            Self::Pae { pdptes }
        } else if cr4 & CR4_LA57 != 0 {
            Self::Level5
        } else {
            Self::Level4
        }
    }
}

/// The access being translated: a write checks R/W (when CR0.WP = 1;
/// supervisor access, CPL 0 — VMX instructions are CPL 0 only), and the
/// page-fault error code is built from it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Access {
    /// The instruction writes the operand (VMPTRST, VMREAD to memory).
    pub write: bool,
    /// The guest's CR0.WP.
    pub wp: bool,
}

/// Why a linear address has no translation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WalkError {
    /// A paging-structure entry (or PAE PDPTE register) is not present.
    NotPresent,
    /// A write with CR0.WP = 1 through an entry with R/W = 0.
    Protection,
    /// A present entry has a reserved bit set (see the module doc for which).
    Reserved,
    /// A paging structure lies outside the guest's memory.
    BadTable,
}

/// #PF error-code bits (SDM 4.7).
const PF_P: u32 = 1 << 0;
const PF_W: u32 = 1 << 1;
const PF_RSVD: u32 = 1 << 3;

impl WalkError {
    /// The #PF error code (SDM 4.7) for this failure of `access`: P = 1 for
    /// `Protection` and `Reserved`, W/R from the access, RSVD (bit 3) for
    /// `Reserved`; U/S and I/D are 0 (supervisor data access). `BadTable` is
    /// no page fault: `None`, and the caller decides.
    pub fn page_fault_code(self, access: Access) -> Option<u32> {
        let w = if access.write { PF_W } else { 0 };
        match self {
            Self::NotPresent => Some(w),
            Self::Protection => Some(PF_P | w),
            Self::Reserved => Some(PF_P | w | PF_RSVD),
            Self::BadTable => None,
        }
    }
}

/// Translates `linear` for `access` in paging `mode` with the guest's `cr3`
/// (unused when paging is off or PAE, whose PDPTEs are in `mode`): 32-bit
/// paging with 4 KiB and (PSE) 4 MiB pages; PAE with 4 KiB and 2 MiB pages;
/// 4- and 5-level with 4 KiB, 2 MiB and 1 GiB pages. Without paging, and in
/// 32-bit and PAE paging, `linear` is truncated to 32 bits.
pub fn linear_to_physical(mem: &dyn GuestMemory, mode: PagingMode, cr3: u64, linear: u64, access: Access) -> Result<u64, WalkError> {
    match mode {
        PagingMode::Off => Ok(linear & 0xFFFF_FFFF),
        PagingMode::Bits32 { pse } => walk32(mem, cr3, linear & 0xFFFF_FFFF, pse, access),
        PagingMode::Pae { pdptes } => {
            let linear = linear & 0xFFFF_FFFF;
            let pdpte = pdptes[(linear >> 30) as usize];
            if pdpte & P == 0 {
                return Err(WalkError::NotPresent);
            }
            if pdpte & PAE_PDPTE_RESERVED != 0 {
                return Err(WalkError::Reserved);
            }
            walk64(mem, pdpte & ADDR, 2, linear, PAE_RESERVED, access)
        }
        PagingMode::Level4 => walk64(mem, cr3 & ADDR, 4, linear, 0, access),
        PagingMode::Level5 => walk64(mem, cr3 & ADDR, 5, linear, 0, access),
    }
}

/// A write with CR0.WP = 1 needs R/W = 1 in every entry that controls it.
fn check_write(writable: bool, access: Access) -> Result<(), WalkError> {
    if access.write && access.wp && !writable { Err(WalkError::Protection) } else { Ok(()) }
}

/// The 4-byte paging entry at `gpa` (4-aligned), from the aligned u64 that
/// holds it (little-endian).
fn read_u32(mem: &dyn GuestMemory, gpa: u64) -> Result<u64, WalkError> {
    let q = mem.read_u64(gpa & !7).ok_or(WalkError::BadTable)?;
    Ok((q >> (8 * (gpa & 4))) & 0xFFFF_FFFF)
}

/// 32-bit paging (SDM 4.3): a page directory at CR3, 4-byte entries.
fn walk32(mem: &dyn GuestMemory, cr3: u64, linear: u64, pse: bool, access: Access) -> Result<u64, WalkError> {
    let pde = read_u32(mem, (cr3 & ADDR32) + 4 * ((linear >> 22) & 0x3FF))?;
    if pde & P == 0 {
        return Err(WalkError::NotPresent);
    }
    if pse && pde & PS != 0 {
        // 4 MiB page: bits 31:22 are physical bits 31:22, bits 20:13 are
        // physical bits 39:32 (PSE-36), bit 21 is reserved (table 4-4).
        if pde & (1 << 21) != 0 {
            return Err(WalkError::Reserved);
        }
        check_write(pde & RW != 0, access)?;
        let base = (pde & 0xFFC0_0000) | (((pde >> 13) & 0xFF) << 32);
        return Ok(base | (linear & 0x3F_FFFF));
    }
    let pte = read_u32(mem, (pde & ADDR32) + 4 * ((linear >> 12) & 0x3FF))?;
    if pte & P == 0 {
        return Err(WalkError::NotPresent);
    }
    check_write(pde & pte & RW != 0, access)?;
    Ok((pte & ADDR32) | (linear & 0xFFF))
}

/// PAE, 4-level and 5-level paging (SDM 4.4, 4.5): 8-byte entries, 9 index
/// bits a level, starting at level `top` (2 for PAE's page directory, 4 or 5)
/// with the table at `table`; `reserved` are bits that must be 0 in every
/// entry.
fn walk64(mem: &dyn GuestMemory, mut table: u64, top: u32, linear: u64, reserved: u64, access: Access) -> Result<u64, WalkError> {
    let mut writable = true;
    for level in (1..=top).rev() {
        let shift = 12 + 9 * (level - 1);
        let e = mem.read_u64(table + 8 * ((linear >> shift) & 511)).ok_or(WalkError::BadTable)?;
        if e & P == 0 {
            return Err(WalkError::NotPresent);
        }
        if e & reserved != 0 || (level >= 4 && e & PS != 0) {
            return Err(WalkError::Reserved);
        }
        writable &= e & RW != 0;
        // Bit 7 of a PTE is PAT, not PS.
        if level == 1 || e & PS != 0 {
            let page = 1u64 << shift;
            // A 2 MiB or 1 GiB page: bit 12 is PAT, bits shift-1:13 reserved
            // (none for a 4 KiB page).
            if e & (page - 1) & !0x1FFF != 0 {
                return Err(WalkError::Reserved);
            }
            check_write(writable, access)?;
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

/// An EPT walk that succeeded: its translation and the entries it used,
/// top level first (`entries[..levels]`, each as (guest-physical address
/// of the entry, value read)); the last one is the leaf. What setting the
/// accessed and dirty flags needs (`ept_set_accessed_dirty`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EptWalk {
    pub translation: EptTranslation,
    pub entries: [(u64, u64); 4],
    pub levels: usize,
}

impl EptWalk {
    /// The leaf entry's value as the walk read it.
    pub fn leaf(&self) -> u64 {
        self.entries[self.levels - 1].1
    }
}

/// EPT accessed flag (bit 8) and dirty flag (bit 9, leaves only), SDM
/// 29.3.5 "Accessed and Dirty Flags for EPT"; meaningful when bit 6 of the
/// EPT pointer is 1.
pub const EPT_ACCESSED: u64 = 1 << 8;
pub const EPT_DIRTY: u64 = 1 << 9;
/// EPTP bit 6: accessed and dirty flags enabled.
pub const EPTP_AD: u64 = 1 << 6;

/// Walks the EPT whose pointer is `eptp` for `gpa`. `Err(None)` when an
/// entry is not present (an EPT violation; the qualification's permission
/// bits 3-5 are 0 then, SDM 28.2.1 table 28-7); `Err(Some(Reserved))` for an
/// EPT misconfiguration (SDM 29.3.3.1) as nvmx's advertised EPT defines it:
/// write without read, execute-only (not offered), reserved bits (among
/// them bits 51:`phys_bits` of every entry, SDM 29.3.3.1: they are not part
/// of the address), a leaf memory type of 2, 3 or 7, or a 1 GiB page (not
/// offered).
pub fn ept_translate(mem: &dyn GuestMemory, eptp: u64, gpa: u64, phys_bits: u32) -> Result<EptTranslation, Option<WalkError>> {
    ept_walk(mem, eptp, gpa, phys_bits).map(|w| w.translation)
}

/// `ept_translate`, keeping the entries the walk used.
pub fn ept_walk(mem: &dyn GuestMemory, eptp: u64, gpa: u64, phys_bits: u32) -> Result<EptWalk, Option<WalkError>> {
    let misconfig = Err(Some(WalkError::Reserved));
    // Bits 51:MAXPHYADDR of an entry (an empty range at a width of 52).
    let above_width = ADDR & !((1u64 << phys_bits.min(52)) - 1);
    let mut table = eptp & ADDR;
    let mut perms = 7;
    let mut entries = [(0, 0); 4];
    for level in (1..=4).rev() {
        let shift = 12 + 9 * (level - 1);
        let at = table + 8 * ((gpa >> shift) & 511);
        let e = mem.read_u64(at).ok_or(Some(WalkError::BadTable))?;
        let used = 4 - level as usize;
        entries[used] = (at, e);
        if e & 7 == 0 {
            return Err(None);
        }
        if e & 1 == 0 {
            return misconfig; // write-only, write+execute or execute-only
        }
        if e & above_width != 0 {
            return misconfig;
        }
        perms &= e & 7;
        let leaf = level == 1 || (level == 2 && e & 0x80 != 0);
        if level >= 3 && e & 0x80 != 0 {
            return misconfig; // PS in a PML4E, or a 1 GiB page
        }
        if leaf {
            let page = 1u64 << shift;
            if matches!((e >> 3) & 7, 2 | 3 | 7) || (e & ADDR & (page - 1)) != 0 {
                return misconfig;
            }
            let translation = EptTranslation { address: (e & ADDR & !(page - 1)) | (gpa & (page - 1)), permissions: perms };
            return Ok(EptWalk { translation, entries, levels: used + 1 });
        }
        if e & 0x78 != 0 {
            return misconfig; // bits 6:3 of a non-leaf entry
        }
        table = e & ADDR;
    }
    unreachable!("level 1 always returns")
}

/// Guest-physical memory whose quadwords can be changed atomically, as the
/// CPU changes paging-structure entries (a locked operation, SDM 29.3.5).
pub trait GuestMemoryAtomic: GuestMemory {
    /// Replaces the u64 at `gpa` with `new` if it still holds `old`:
    /// `false` if it holds something else (or lies outside the memory).
    fn compare_exchange_u64(&self, gpa: u64, old: u64, new: u64) -> bool;
}

/// What the CPU does after a successful EPT walk with accessed and dirty
/// flags enabled (SDM 29.3.5; Bochs' update_ept_access_dirty): the accessed
/// flag in every entry used, and for a `write` the dirty flag in the leaf
/// (guest paging-structure accesses count as writes: the caller passes
/// them as such). Each entry is changed only if it still holds what the walk
/// read; `Err(())` if one changed meanwhile (another vCPU of L1 edited its
/// EPT): walk again. Entries that already have their flags are not written.
pub fn ept_set_accessed_dirty(mem: &dyn GuestMemoryAtomic, walk: &EptWalk, write: bool) -> Result<(), ()> {
    for (i, &(at, e)) in walk.entries[..walk.levels].iter().enumerate() {
        let want = if write && i + 1 == walk.levels { EPT_ACCESSED | EPT_DIRTY } else { EPT_ACCESSED };
        if e & want != want && !mem.compare_exchange_u64(at, e, e | want) {
            return Err(());
        }
    }
    Ok(())
}

/// The permissions of EPT0-2's leaf for a page EPT1-2 maps with `walk`
/// (after `ept_set_accessed_dirty`, for an access that was a write when
/// `write`): the walk's own, but with accessed/dirty flags on (`ad`) and
/// the leaf's dirty flag still clear, without write, so that the first
/// write faults to L0, which sets the flag and grants it (KVM's shadow EPT
/// does the same with its dirty-bit tracking).
pub fn ept02_leaf_permissions(walk: &EptWalk, ad: bool, write: bool) -> u64 {
    let dirty = write || walk.leaf() & EPT_DIRTY != 0;
    if ad && !dirty { walk.translation.permissions & !2 } else { walk.translation.permissions }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    #[derive(Clone)]
    struct Fake(HashMap<u64, u64>, u64);
    impl GuestMemory for Fake {
        fn read_u64(&self, gpa: u64) -> Option<u64> {
            (gpa < self.1).then(|| self.0.get(&gpa).copied().unwrap_or(0))
        }
    }
    impl Fake {
        fn new() -> Self {
            Fake(HashMap::new(), 1 << 30)
        }
        fn put(&mut self, gpa: u64, v: u64) {
            self.0.insert(gpa, v);
        }
        /// A 4-byte entry, in the half of its aligned u64.
        fn put32(&mut self, gpa: u64, v: u32) {
            let sh = 8 * (gpa & 4);
            let q = self.0.entry(gpa & !7).or_insert(0);
            *q = (*q & !(0xFFFF_FFFF << sh)) | (u64::from(v) << sh);
        }
        /// Clears `bits` in the u64 at `gpa`.
        fn clear(&self, gpa: u64, bits: u64) -> Self {
            let mut m = self.clone();
            *m.0.get_mut(&gpa).unwrap() &= !bits;
            m
        }
        fn set(&self, gpa: u64, bits: u64) -> Self {
            let mut m = self.clone();
            *m.0.entry(gpa).or_insert(0) |= bits;
            m
        }
    }

    const READ: Access = Access { write: false, wp: true };
    const WRITE: Access = Access { write: true, wp: true };
    const WRITE_NO_WP: Access = Access { write: true, wp: false };

    /// Tables at 0x1000, 0x2000, ..., one per level, entry 0 of each
    /// pointing at the next (present, writable), the last mapping 0x9000:
    /// linear 0x123 -> 0x9123.
    fn chain(levels: u64) -> Fake {
        let mut m = Fake::new();
        for l in 1..levels {
            m.put(0x1000 * l, 0x1000 * (l + 1) | 3);
        }
        m.put(0x1000 * levels, 0x9003);
        m
    }

    /// The 32-bit twin of `chain(2)`: PD at 0x1000, PT at 0x2000.
    fn chain32() -> Fake {
        let mut m = Fake::new();
        m.put32(0x1000, 0x2003);
        m.put32(0x2000, 0x9003);
        m
    }

    const PG: u64 = 1 << 31;

    #[test]
    fn from_regs_every_mode() {
        let pd = [0x1001, 0x2001, 0, 0x3001];
        assert_eq!(PagingMode::from_regs(0x11, 0, 0, pd), PagingMode::Off);
        // PG = 0 wins over everything else.
        assert_eq!(PagingMode::from_regs(0x11, CR4_PAE | CR4_PSE | CR4_LA57, EFER_LMA, pd), PagingMode::Off);
        assert_eq!(PagingMode::from_regs(PG | 0x11, 0, 0, pd), PagingMode::Bits32 { pse: false });
        assert_eq!(PagingMode::from_regs(PG | 0x1_0011, CR4_PSE | (1 << 13), 0, pd), PagingMode::Bits32 { pse: true });
        // PAE: PSE is ignored, EFER.LME without LMA is still PAE.
        assert_eq!(PagingMode::from_regs(PG | 0x11, CR4_PAE | CR4_PSE, 1 << 8, pd), PagingMode::Pae { pdptes: pd });
        assert_eq!(PagingMode::from_regs(PG | 0x11, CR4_PAE | (1 << 13), (1 << 8) | EFER_LMA | (1 << 11), pd), PagingMode::Level4);
        assert_eq!(PagingMode::from_regs(PG | 0x11, CR4_PAE | CR4_LA57, (1 << 8) | EFER_LMA, pd), PagingMode::Level5);
    }

    #[test]
    fn off_is_identity_in_32_bits() {
        let m = Fake(HashMap::new(), 0); // no memory read at all
        assert_eq!(linear_to_physical(&m, PagingMode::Off, 0x1000, 0xdead, READ), Ok(0xdead));
        assert_eq!(linear_to_physical(&m, PagingMode::Off, 0x1000, 0x1_2345_6789, WRITE), Ok(0x2345_6789));
    }

    #[test]
    fn bits32_4k() {
        let mut m = Fake::new();
        // PD at 0x1000: PDE 0 (low half of its u64) -> PT 0x3000, PDE 1
        // (high half) -> PT 0x2000.
        m.put32(0x1000, 0x3003);
        m.put32(0x1004, 0x2003);
        m.put32(0x3000, 0x7003);
        m.put32(0x2000 + 5 * 4, 0x9003); // high half
        m.put32(0x2000 + 4 * 4, 0xA003); // low half
        let mode = PagingMode::Bits32 { pse: false };
        assert_eq!(linear_to_physical(&m, mode, 0x1018, 0x456, READ), Ok(0x7456));
        assert_eq!(linear_to_physical(&m, mode, 0x1018, 0x40_5123, READ), Ok(0x9123));
        assert_eq!(linear_to_physical(&m, mode, 0x1018, 0x40_4123, WRITE), Ok(0xA123));
        // The linear address is 32 bits.
        assert_eq!(linear_to_physical(&m, mode, 0x1018, 0xFFFF_FFFF_0040_5123, READ), Ok(0x9123));
    }

    #[test]
    fn bits32_4m_with_pse() {
        let mut m = Fake::new();
        // PDE 3: a 4 MiB page at 0x140_0000 with PSE-36 bits 39:32 = 0x12.
        let pde = 0x0140_0083 | (0x12 << 13);
        m.put32(0x1000 + 3 * 4, pde);
        let pse = PagingMode::Bits32 { pse: true };
        assert_eq!(linear_to_physical(&m, pse, 0x1000, 0xC1_2345, READ), Ok(0x12_0141_2345));
        // Without CR4.PSE, PS is ignored: the PDE points at a page table.
        m.put32((pde & 0xFFFF_F000) as u64 + 0x12 * 4, 0x5_5003);
        assert_eq!(linear_to_physical(&m, PagingMode::Bits32 { pse: false }, 0x1000, 0xC1_2345, READ), Ok(0x5_5345));
        // Bit 21 of a 4 MiB PDE is reserved.
        m.put32(0x1000 + 4 * 4, 0x0020_0083);
        assert_eq!(linear_to_physical(&m, pse, 0x1000, 0x100_0000, READ), Err(WalkError::Reserved));
    }

    #[test]
    fn pae_4k_and_2m_via_pdptes() {
        let mut m = Fake::new();
        let mode = PagingMode::Pae { pdptes: [0, 0x1001, 0, 0x2001] };
        // PDPTE 1 -> PD 0x1000, PD[1] -> PT 0x3000, PT[5] -> 0x9000.
        m.put(0x1008, 0x3003);
        m.put(0x3000 + 5 * 8, 0x9003);
        // PDPTE 3 -> PD 0x2000, PD[3]: 2 MiB page at 0x1_2340_0000 (PAT bit 12 set).
        m.put(0x2000 + 3 * 8, 0x1_2340_0000 | 0x1000 | 0x83);
        // CR3 is not used (the PDPTEs come from the registers).
        let cr3 = 1 << 31;
        assert_eq!(linear_to_physical(&m, mode, cr3, 0x4020_5123, READ), Ok(0x9123));
        assert_eq!(linear_to_physical(&m, mode, cr3, 0xC060_1234, WRITE), Ok(0x1_2340_1234));
        assert_eq!(linear_to_physical(&m, mode, cr3, 0xFFFF_FFFF_C060_1234, READ), Ok(0x1_2340_1234));
    }

    #[test]
    fn level4_4k_2m_1g() {
        let mut m = Fake::new();
        // CR3 = 0x1000: PML4[0] and PML4[511] -> 0x2000, PDPT[0] -> 0x3000,
        // PDPT[1]: 1 GiB page at 0x8_0000_0000, PD[0]: 2 MiB page at 0,
        // PD[1] -> PT 0x4000, PT[5] -> 0x9000 (bit 7, PAT in a PTE, set).
        m.put(0x1000, 0x2003);
        m.put(0x1000 + 511 * 8, 0x2003);
        m.put(0x2000, 0x3003);
        m.put(0x2008, 0x8_0000_0000 | 0x1000 | 0x83);
        m.put(0x3000, 0x83);
        m.put(0x3008, 0x4003);
        m.put(0x4000 + 5 * 8, 0x9083);
        let l4 = PagingMode::Level4;
        // CR3 with a PCID in bits 11:0.
        assert_eq!(linear_to_physical(&m, l4, 0x1005, 0x12345, READ), Ok(0x12345));
        assert_eq!(linear_to_physical(&m, l4, 0x1005, 0x20_5123, WRITE), Ok(0x9123));
        assert_eq!(linear_to_physical(&m, l4, 0x1005, 0x4123_4567, READ), Ok(0x8_0123_4567));
        assert_eq!(linear_to_physical(&m, l4, 0x1005, 0xFFFF_FF80_0020_5123, READ), Ok(0x9123));
        // Bits 62:52 and XD are not reserved here.
        let m = m.set(0x4000 + 5 * 8, 0xFFF0_0000_0000_0000);
        assert_eq!(linear_to_physical(&m, l4, 0x1000, 0x20_5123, READ), Ok(0x9123));
    }

    #[test]
    fn level5() {
        let mut m = chain(5);
        // PML5[1] -> PML4 0x2000 too; PDPT (0x3000)[1]: 1 GiB page at 0x4000_0000.
        m.put(0x1008, 0x2003);
        m.put(0x3008, 0x4000_0083);
        let l5 = PagingMode::Level5;
        assert_eq!(linear_to_physical(&m, l5, 0x1000, 0x123, READ), Ok(0x9123));
        assert_eq!(linear_to_physical(&m, l5, 0x1000, 0x1_0000_0000_0123, READ), Ok(0x9123));
        assert_eq!(linear_to_physical(&m, l5, 0x1000, 0xFE01_0000_4000_0123, WRITE), Ok(0x4000_0123));
        // 4-level ignores bit 48: PML4 at 0x1000 index 0 is PML5[0] here, so
        // the same tables read one level short.
        assert_eq!(linear_to_physical(&m, PagingMode::Level4, 0x1000, 0x1_0000_0000_0123, READ), Ok(0x5123));
    }

    #[test]
    fn not_present_at_each_level() {
        for (mode, levels) in [(PagingMode::Level5, 5), (PagingMode::Level4, 4)] {
            let m = chain(levels);
            assert_eq!(linear_to_physical(&m, mode, 0x1000, 0x123, READ), Ok(0x9123));
            for l in 1..=levels {
                let m = m.clear(0x1000 * l, 1);
                assert_eq!(linear_to_physical(&m, mode, 0x1000, 0x123, READ), Err(WalkError::NotPresent), "{mode:?} level {l}");
            }
        }
        // PAE: the PDPTE register, PDE, PTE.
        let m = chain(2);
        let pae = PagingMode::Pae { pdptes: [0x1001, 0, 0, 0] };
        assert_eq!(linear_to_physical(&m, pae, 0, 0x123, READ), Ok(0x9123));
        assert_eq!(linear_to_physical(&m, PagingMode::Pae { pdptes: [0x1000, 0x1001, 0x1001, 0x1001] }, 0, 0x123, READ), Err(WalkError::NotPresent));
        assert_eq!(linear_to_physical(&m.clear(0x1000, 1), pae, 0, 0x123, READ), Err(WalkError::NotPresent));
        assert_eq!(linear_to_physical(&m.clear(0x2000, 1), pae, 0, 0x123, READ), Err(WalkError::NotPresent));
        // 32-bit: PDE, PTE.
        let m = chain32();
        let b32 = PagingMode::Bits32 { pse: true };
        assert_eq!(linear_to_physical(&m, b32, 0x1000, 0x123, READ), Ok(0x9123));
        assert_eq!(linear_to_physical(&m.clear(0x1000, 1), b32, 0x1000, 0x123, READ), Err(WalkError::NotPresent));
        assert_eq!(linear_to_physical(&m.clear(0x2000, 1), b32, 0x1000, 0x123, READ), Err(WalkError::NotPresent));
    }

    #[test]
    fn write_to_read_only() {
        let cases: [(PagingMode, Fake, &[u64]); 4] = [
            (PagingMode::Level5, chain(5), &[0x1000, 0x2000, 0x3000, 0x4000, 0x5000]),
            (PagingMode::Level4, chain(4), &[0x1000, 0x2000, 0x3000, 0x4000]),
            (PagingMode::Pae { pdptes: [0x1001, 0, 0, 0] }, chain(2), &[0x1000, 0x2000]),
            (PagingMode::Bits32 { pse: false }, chain32(), &[0x1000, 0x2000]),
        ];
        for (mode, m, entries) in cases {
            assert_eq!(linear_to_physical(&m, mode, 0x1000, 0x123, WRITE), Ok(0x9123));
            for &e in entries {
                let m = m.clear(e, RW);
                assert_eq!(linear_to_physical(&m, mode, 0x1000, 0x123, WRITE), Err(WalkError::Protection), "{mode:?} {e:#x}");
                assert_eq!(linear_to_physical(&m, mode, 0x1000, 0x123, WRITE_NO_WP), Ok(0x9123));
                assert_eq!(linear_to_physical(&m, mode, 0x1000, 0x123, READ), Ok(0x9123));
            }
        }
        // Large pages: 4 MiB (32-bit), 2 MiB (PAE), 1 GiB (4-level).
        let mut m = Fake::new();
        m.put32(0x1000, 0x40_0081);
        let b32 = PagingMode::Bits32 { pse: true };
        assert_eq!(linear_to_physical(&m, b32, 0x1000, 0x123, WRITE), Err(WalkError::Protection));
        assert_eq!(linear_to_physical(&m, b32, 0x1000, 0x123, WRITE_NO_WP), Ok(0x40_0123));
        let mut m = Fake::new();
        m.put(0x1000, 0x20_0081);
        let pae = PagingMode::Pae { pdptes: [0x1001, 0, 0, 0] };
        assert_eq!(linear_to_physical(&m, pae, 0, 0x123, WRITE), Err(WalkError::Protection));
        assert_eq!(linear_to_physical(&m, pae, 0, 0x123, WRITE_NO_WP), Ok(0x20_0123));
        let mut m = Fake::new();
        m.put(0x1000, 0x2003);
        m.put(0x2000, 0x4000_0081);
        assert_eq!(linear_to_physical(&m, PagingMode::Level4, 0x1000, 0x123, WRITE), Err(WalkError::Protection));
        assert_eq!(linear_to_physical(&m, PagingMode::Level4, 0x1000, 0x123, READ), Ok(0x4000_0123));
        // Paging off: nothing to protect.
        assert_eq!(linear_to_physical(&m, PagingMode::Off, 0, 0x123, WRITE), Ok(0x123));
    }

    #[test]
    fn reserved_bits() {
        let r = Err(WalkError::Reserved);
        // PS in a PML5E or PML4E, found before a missing lower level.
        let l4 = PagingMode::Level4;
        let l5 = PagingMode::Level5;
        assert_eq!(linear_to_physical(&chain(4).set(0x1000, PS).clear(0x2000, 1), l4, 0x1000, 0x123, READ), r);
        assert_eq!(linear_to_physical(&chain(5).set(0x1000, PS), l5, 0x1000, 0x123, READ), r);
        assert_eq!(linear_to_physical(&chain(5).set(0x2000, PS), l5, 0x1000, 0x123, READ), r);
        // Bits 20:13 of a 2 MiB PDE, 29:13 of a 1 GiB PDPTE; bit 12 is PAT.
        let mut m = Fake::new();
        m.put(0x1000, 0x2003);
        m.put(0x2000, 0x4000_1083); // 1 GiB
        m.put(0x2008, 0x3003);
        m.put(0x3000, 0x20_1083); // 2 MiB
        assert_eq!(linear_to_physical(&m, l4, 0x1000, 0x123, READ), Ok(0x4000_0123));
        assert_eq!(linear_to_physical(&m, l4, 0x1000, 0x4000_0123, READ), Ok(0x20_0123));
        assert_eq!(linear_to_physical(&m.set(0x2000, 1 << 29), l4, 0x1000, 0x123, READ), r);
        assert_eq!(linear_to_physical(&m.set(0x2000, 1 << 13), l4, 0x1000, 0x123, READ), r);
        assert_eq!(linear_to_physical(&m.set(0x3000, 1 << 20), l4, 0x1000, 0x4000_0123, WRITE), r);
        assert_eq!(linear_to_physical(&m.set(0x3000, 1 << 13), l4, 0x1000, 0x4000_0123, READ), r);
        // PAE: PDPTE bits 2:1, 8:5, 63:52; PDE/PTE bits 62:52 (not XD).
        let m = chain(2);
        for bit in [1, 2, 5, 8, 52, 63] {
            let pae = PagingMode::Pae { pdptes: [0x1001 | (1 << bit), 0, 0, 0] };
            assert_eq!(linear_to_physical(&m, pae, 0, 0x123, READ), r, "PDPTE bit {bit}");
        }
        let pae = PagingMode::Pae { pdptes: [0x1001, 0, 0, 0] };
        assert_eq!(linear_to_physical(&m.set(0x1000, 1 << 52), pae, 0, 0x123, READ), r);
        assert_eq!(linear_to_physical(&m.set(0x2000, 1 << 62), pae, 0, 0x123, READ), r);
        assert_eq!(linear_to_physical(&m.set(0x2000, 1 << 63), pae, 0, 0x123, READ), Ok(0x9123));
    }

    #[test]
    fn bad_tables() {
        let b = Err(WalkError::BadTable);
        let m = chain(4);
        assert_eq!(linear_to_physical(&m, PagingMode::Level4, 1 << 31, 0, READ), b);
        assert_eq!(linear_to_physical(&m, PagingMode::Level5, 1 << 31, 0, READ), b);
        assert_eq!(linear_to_physical(&m, PagingMode::Bits32 { pse: true }, 1 << 31, 0, READ), b);
        assert_eq!(linear_to_physical(&m, PagingMode::Pae { pdptes: [(1 << 31) | 1, 0, 0, 0] }, 0, 0, READ), b);
        assert_eq!(linear_to_physical(&m.set(0x3000, 1 << 31), PagingMode::Level4, 0x1000, 0, READ), b);
    }

    #[test]
    fn page_fault_codes() {
        use WalkError::*;
        assert_eq!(NotPresent.page_fault_code(READ), Some(0));
        assert_eq!(NotPresent.page_fault_code(WRITE), Some(2));
        assert_eq!(Protection.page_fault_code(WRITE), Some(3));
        assert_eq!(Protection.page_fault_code(WRITE_NO_WP), Some(3));
        assert_eq!(Protection.page_fault_code(READ), Some(1));
        assert_eq!(Reserved.page_fault_code(READ), Some(9));
        assert_eq!(Reserved.page_fault_code(WRITE), Some(0xB));
        assert_eq!(BadTable.page_fault_code(WRITE), None);
        // From a walk: a write to a read-only page.
        let m = chain(4).clear(0x4000, RW);
        let e = linear_to_physical(&m, PagingMode::Level4, 0x1000, 0x123, WRITE).unwrap_err();
        assert_eq!(e.page_fault_code(WRITE), Some(3));
    }

    #[test]
    fn ept_walk_permissions_and_holes() {
        let mut m = Fake(HashMap::new(), 1 << 30);
        m.0.insert(0x1000, 0x2007);
        m.0.insert(0x2000, 0x3007);
        m.0.insert(0x3000, 0x4003); // PD[0]: read/write only
        m.0.insert(0x4000 + 8 * 0x10, 0x7_7000 | 7);
        let t = ept_translate(&m, 0x1000 | 0x1E, 0x10_123, 39).unwrap();
        assert_eq!(t, EptTranslation { address: 0x7_7123, permissions: 3 });
        assert_eq!(ept_translate(&m, 0x1000, 0x11_000, 39), Err(None));
        assert_eq!(ept_translate(&m, 1 << 31, 0, 39), Err(Some(WalkError::BadTable)));
        // Misconfigurations (SDM 29.3.3.1).
        let mis = Err(Some(WalkError::Reserved));
        let mut bad = m.clone();
        bad.0.insert(0x4000 + 8 * 0x10, 0x7_7000 | 2 | (6 << 3));
        assert_eq!(ept_translate(&bad, 0x1000, 0x10_123, 39), mis, "write-only");
        bad.0.insert(0x4000 + 8 * 0x10, 0x7_7000 | 4 | (6 << 3));
        assert_eq!(ept_translate(&bad, 0x1000, 0x10_123, 39), mis, "execute-only is not offered");
        bad.0.insert(0x4000 + 8 * 0x10, 0x7_7000 | 7 | (2 << 3));
        assert_eq!(ept_translate(&bad, 0x1000, 0x10_123, 39), mis, "memory type 2");
        let mut bad = m.clone();
        bad.0.insert(0x2000, 0x3007 | 0x80);
        assert_eq!(ept_translate(&bad, 0x1000, 0x10_123, 39), mis, "1 GiB page");
        let mut bad = m.clone();
        bad.0.insert(0x1000, 0x2007 | 0x8);
        assert_eq!(ept_translate(&bad, 0x1000, 0x10_123, 39), mis, "bit 3 of a PML4E");
        // Bits 51:MAXPHYADDR are reserved, in a leaf and in a table entry,
        // not address bits: the walk must not follow them.
        for (gpa_of_entry, entry) in [(0x4000 + 8 * 0x10, 0x7_7007 | (1 << 39)), (0x2000, 0x3007 | (1 << 45))] {
            let mut bad = m.clone();
            bad.0.insert(gpa_of_entry, entry);
            assert_eq!(ept_translate(&bad, 0x1000, 0x10_123, 39), mis, "bit above MAXPHYADDR in {entry:#x}");
            assert_ne!(ept_translate(&bad, 0x1000, 0x10_123, 52), mis, "at a width of 52 nothing is above it");
        }
        let mut bad = m.clone();
        bad.0.insert(0x4000 + 8 * 0x10, 0x7_7007 | (1 << 38));
        assert!(ept_translate(&bad, 0x1000, 0x10_123, 39).is_ok(), "bit 38 is below a width of 39");
    }

    /// A memory whose entries the A/D update writes (and a test changes
    /// behind the walk's back).
    struct Shared(std::cell::RefCell<HashMap<u64, u64>>);
    impl GuestMemory for Shared {
        fn read_u64(&self, gpa: u64) -> Option<u64> {
            (gpa < 1 << 30).then(|| self.0.borrow().get(&gpa).copied().unwrap_or(0))
        }
    }
    impl GuestMemoryAtomic for Shared {
        fn compare_exchange_u64(&self, gpa: u64, old: u64, new: u64) -> bool {
            let mut m = self.0.borrow_mut();
            let e = m.entry(gpa).or_insert(0);
            if *e != old {
                return false;
            }
            *e = new;
            true
        }
    }
    impl Shared {
        fn get(&self, gpa: u64) -> u64 {
            self.read_u64(gpa).unwrap()
        }
    }

    /// EPT at 0x1000 → 0x2000 → 0x3000 → PT 0x4000; PT[0x10] maps 0x7_7000
    /// (read/write/execute, WB); PD[1] is a 2 MiB page at 0x60_0000.
    fn ept_ad_tables() -> Shared {
        let mut m = HashMap::new();
        m.insert(0x1000, 0x2007);
        m.insert(0x2000, 0x3007);
        m.insert(0x3000, 0x4007);
        m.insert(0x3008, 0x60_0000 | 0x80 | 7 | (6 << 3));
        m.insert(0x4000 + 8 * 0x10, 0x7_7000 | 7 | (6 << 3));
        Shared(std::cell::RefCell::new(m))
    }

    #[test]
    fn ept_walk_lists_the_entries_used() {
        let m = ept_ad_tables();
        let w = ept_walk(&m, 0x1000 | 0x5E, 0x10_123, 39).unwrap();
        assert_eq!(w.levels, 4);
        assert_eq!(w.translation, EptTranslation { address: 0x7_7123, permissions: 7 });
        assert_eq!(w.entries.map(|e| e.0), [0x1000, 0x2000, 0x3000, 0x4080]);
        assert_eq!(w.leaf(), 0x7_7037);
        let w = ept_walk(&m, 0x1000 | 0x5E, 0x20_0456, 39).unwrap();
        assert_eq!((w.levels, w.translation.address), (3, 0x60_0456), "a 2 MiB leaf is the PDE");
        assert_eq!(w.entries[2].0, 0x3008);
    }

    #[test]
    fn ept_accessed_and_dirty_flags() {
        let m = ept_ad_tables();
        let (a, d) = (EPT_ACCESSED, EPT_DIRTY);
        // A read: A in all four entries, no D anywhere.
        let w = ept_walk(&m, 0x1000 | 0x5E, 0x10_123, 39).unwrap();
        assert_eq!(ept_set_accessed_dirty(&m, &w, false), Ok(()));
        assert_eq!([0x1000, 0x2000, 0x3000, 0x4080].map(|g| m.get(g) & (a | d)), [a, a, a, a]);
        // EPT0-2 maps it without write while D is clear.
        assert_eq!(ept02_leaf_permissions(&w, true, false), 5);
        assert_eq!(ept02_leaf_permissions(&w, false, false), 7, "without A/D nothing is withheld");
        // The write: D in the leaf only, and write granted.
        let w = ept_walk(&m, 0x1000 | 0x5E, 0x10_123, 39).unwrap();
        assert_eq!(ept_set_accessed_dirty(&m, &w, true), Ok(()));
        assert_eq!([0x1000, 0x2000, 0x3000, 0x4080].map(|g| m.get(g) & (a | d)), [a, a, a, a | d]);
        assert_eq!(ept02_leaf_permissions(&w, true, true), 7);
        // Once D is in memory, a read maps it writable too.
        let w = ept_walk(&m, 0x1000 | 0x5E, 0x10_123, 39).unwrap();
        assert_eq!(ept02_leaf_permissions(&w, true, false), 7);
        // A write through the 2 MiB page: D in the PDE, the PML4E/PDPTE only A.
        let w = ept_walk(&m, 0x1000 | 0x5E, 0x3F_F000, 39).unwrap();
        assert_eq!(ept_set_accessed_dirty(&m, &w, true), Ok(()));
        assert_eq!(m.get(0x3008) & (a | d), a | d);
        assert_eq!(m.get(0x3000) & d, 0, "the other PDE is untouched");
        // A read-only leaf stays read-only whatever D says.
        m.0.borrow_mut().insert(0x4000 + 8 * 0x11, 0x7_8000 | 1 | (6 << 3) | d);
        let w = ept_walk(&m, 0x1000 | 0x5E, 0x11_000, 39).unwrap();
        assert_eq!(ept02_leaf_permissions(&w, true, false), 1);
    }

    #[test]
    fn ept_flags_not_written_over_a_changed_entry() {
        let m = ept_ad_tables();
        let w = ept_walk(&m, 0x1000 | 0x5E, 0x10_123, 39).unwrap();
        // Another vCPU of L1 unmaps the page between the walk and the update.
        m.0.borrow_mut().insert(0x4080, 0);
        assert_eq!(ept_set_accessed_dirty(&m, &w, true), Err(()));
        assert_eq!(m.get(0x4080), 0, "the new value stays");
        // Walking again sees the hole.
        assert_eq!(ept_walk(&m, 0x1000 | 0x5E, 0x10_123, 39), Err(None));
    }
}
