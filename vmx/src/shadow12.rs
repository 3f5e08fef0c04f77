//! VMCS shadowing as nvmx offers it to L1 (secondary control bit 14), for
//! L1's own L2: the pure decisions, host-tested. L2's VMREAD/VMWRITE always
//! exit to L0 (VMCS0-2 never shadows); L0 then decides with vmcs12 what the
//! CPU would have done in VMX non-root operation (SDM Vol. 3C 32.3
//! "VMREAD"/"VMWRITE", 25.10, 26.1.3): exit to L1, or operate on the shadow
//! VMCS vmcs12's link pointer names (KVM's vocabulary: the "shadow vmcs12").
//! Not to be confused with `crate::shadow`, L0's own use of the CPU's
//! shadowing for L1's VMREAD/VMWRITE.

use crate::controls::{proc1, proc2};
use crate::field::{self, Access, Field as F, Kind, Width};

/// Bit 31 of a VMCS region's first dword: the shadow-VMCS indicator (SDM 25.2).
pub const SHADOW_INDICATOR: u32 = 1 << 31;

/// vmcs12 has "VMCS shadowing" on (with the secondary controls active).
pub fn shadowing12(get: impl Fn(F) -> u64) -> bool {
    get(F::CPU_BASED_VM_EXEC_CONTROL) as u32 & proc1::SECONDARY_CONTROLS != 0
        && get(F::SECONDARY_VM_EXEC_CONTROL) as u32 & proc2::VMCS_SHADOWING != 0
}

/// What VMPTRLD accepts in a region's first dword (SDM 32.3 "VMPTRLD"):
/// the revision, with bit 31 set only where VMCS shadowing is offered.
pub fn vmptrld_revision_ok(dword: u32, revision: u32, shadowing_offered: bool) -> bool {
    let dword = if shadowing_offered { dword & !SHADOW_INDICATOR } else { dword };
    dword == revision
}

/// The first dword the VMCS link pointer's region must hold when it is not
/// all-ones (SDM 27.3.1.5): the revision, with the shadow-VMCS indicator
/// equal to "VMCS shadowing" (Bochs and KVM both require bit 31 clear when
/// shadowing is off).
pub fn link_revision(revision: u32, shadowing: bool) -> u32 {
    revision | if shadowing { SHADOW_INDICATOR } else { 0 }
}

/// SDM 27.2.1.1 with "VMCS shadowing" on: the VMREAD and VMWRITE bitmap
/// addresses 4 KiB aligned within the physical-address width (error 7).
pub fn check_bitmaps(get: impl Fn(F) -> u64, phys_bits: u32) -> Result<(), &'static str> {
    if !shadowing12(&get) {
        return Ok(());
    }
    let bad = |a: u64| a & 0xFFF != 0 || a >> phys_bits != 0;
    if bad(get(F::VMREAD_BITMAP)) {
        return Err("VMREAD bitmap address not 4 KiB aligned or too high (SDM 27.2.1.1)");
    }
    if bad(get(F::VMWRITE_BITMAP)) {
        return Err("VMWRITE bitmap address not 4 KiB aligned or too high (SDM 27.2.1.1)");
    }
    Ok(())
}

/// An L2 VMREAD or VMWRITE that exited to L0, as far as the decision needs it.
#[derive(Clone, Copy, Debug)]
pub struct L2Insn {
    pub write: bool,
    /// The register operand naming the field, as wide as the register (64
    /// bits; the caller passes it whole, the mode decides what counts).
    pub field_operand: u64,
    /// L2 runs in 64-bit mode (IA32_EFER.LMA and CS.L): 64-bit operands.
    pub long64: bool,
    pub cpl: u8,
}

/// What L0 does with an L2 VMREAD/VMWRITE (SDM 32.3, in its order).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum L2Access {
    /// A VM exit to L1 (reason 23/25): shadowing off in vmcs12, an
    /// encoding beyond bit 14, or the field's bit set in L1's bitmap.
    ExitToL1,
    /// #GP(0) in L2 (CPL > 0; the shadow is reached only at CPL 0).
    GeneralProtection,
    /// The link pointer is all-ones: VMfailInvalid.
    FailInvalid,
    /// VMfailValid(error) — written into the current vmcs12, the one
    /// L2 runs on (12: no such field; 13: a read-only field without
    /// IA32_VMX_MISC bit 29).
    Fail(u32),
    /// Operate on the shadow vmcs12's field.
    Shadow(F, Access),
}

/// The decision for `insn` with vmcs12 `get`; `bitmap_bit(gpa, n)` reads bit
/// `n` of L1's page at `gpa` (outside RAM: all-ones, set); `vmwrite_any` is
/// IA32_VMX_MISC bit 29 as L1 reads it.
pub fn l2_vmread_vmwrite(insn: &L2Insn, get: impl Fn(F) -> u64, bitmap_bit: impl Fn(u64, u64) -> bool, vmwrite_any: bool) -> L2Access {
    if !shadowing12(&get) {
        return L2Access::ExitToL1;
    }
    // Outside 64-bit mode the operand is the register's low 32 bits.
    let enc = if insn.long64 { insn.field_operand } else { insn.field_operand & 0xFFFF_FFFF };
    // SDM 32.3: bits 63:15 (31:15) set, or the bitmap bit of bits 14:0 set → exit.
    if enc >> 15 != 0 {
        return L2Access::ExitToL1;
    }
    let bitmap = get(if insn.write { F::VMWRITE_BITMAP } else { F::VMREAD_BITMAP });
    if bitmap_bit(bitmap, enc) {
        return L2Access::ExitToL1;
    }
    if insn.cpl != 0 {
        return L2Access::GeneralProtection;
    }
    if get(F::VMCS_LINK_POINTER) == u64::MAX {
        return L2Access::FailInvalid;
    }
    let Ok((f, access)) = field::decode(enc as u32) else { return L2Access::Fail(12) };
    if insn.write && f.kind() == Kind::ReadOnly && !vmwrite_any {
        return L2Access::Fail(13);
    }
    L2Access::Shadow(f, access)
}

/// The value VMREAD returns for a field holding `raw` (SDM 25.11.2: the
/// field's width, the high half of a 64-bit field for a "high" access).
pub fn read_value(f: F, access: Access, raw: u64) -> u64 {
    match (f.width(), access) {
        (Width::U16, _) => raw & 0xFFFF,
        (Width::U32, _) => raw & 0xFFFF_FFFF,
        (Width::U64, Access::High) => raw >> 32,
        _ => raw,
    }
}

/// The field's new contents after VMWRITE of `value` over `old`.
pub fn written_value(f: F, access: Access, old: u64, value: u64) -> u64 {
    match (f.width(), access) {
        (Width::U16, _) => value & 0xFFFF,
        (Width::U32, _) => value & 0xFFFF_FFFF,
        (Width::U64, Access::High) => (old & 0xFFFF_FFFF) | (value << 32),
        _ => value,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    const READ_MAP: u64 = 0x10_0000;
    const WRITE_MAP: u64 = 0x10_1000;

    fn vmcs12(shadowing: bool) -> HashMap<F, u64> {
        let mut v = HashMap::new();
        v.insert(F::CPU_BASED_VM_EXEC_CONTROL, u64::from(proc1::SECONDARY_CONTROLS));
        v.insert(F::SECONDARY_VM_EXEC_CONTROL, if shadowing { u64::from(proc2::VMCS_SHADOWING | proc2::ENABLE_EPT) } else { 0 });
        v.insert(F::VMREAD_BITMAP, READ_MAP);
        v.insert(F::VMWRITE_BITMAP, WRITE_MAP);
        v.insert(F::VMCS_LINK_POINTER, 0x20_0000);
        v
    }

    fn decide(v: &HashMap<F, u64>, write: bool, operand: u64, long64: bool, cpl: u8, set: &[(u64, u64)], any: bool) -> L2Access {
        let insn = L2Insn { write, field_operand: operand, long64, cpl };
        let get = |f| v.get(&f).copied().unwrap_or(0);
        l2_vmread_vmwrite(&insn, get, |map, n| set.contains(&(map, n)), any)
    }

    #[test]
    fn exits_to_l1_without_shadowing_or_by_the_bitmaps() {
        let rip = u64::from(F::GUEST_RIP.encoding());
        let off = vmcs12(false);
        assert_eq!(decide(&off, false, rip, true, 0, &[], false), L2Access::ExitToL1, "shadowing off in vmcs12");
        let mut no_secondary = vmcs12(true);
        no_secondary.insert(F::CPU_BASED_VM_EXEC_CONTROL, 0);
        assert_eq!(decide(&no_secondary, false, rip, true, 0, &[], false), L2Access::ExitToL1, "secondary controls off");
        let on = vmcs12(true);
        assert_eq!(decide(&on, false, rip, true, 0, &[], false), L2Access::Shadow(F::GUEST_RIP, Access::Full));
        assert_eq!(decide(&on, false, rip, true, 0, &[(READ_MAP, rip)], false), L2Access::ExitToL1, "VMREAD bitmap bit");
        assert_eq!(decide(&on, false, rip, true, 0, &[(WRITE_MAP, rip)], false), L2Access::Shadow(F::GUEST_RIP, Access::Full), "the other bitmap");
        assert_eq!(decide(&on, true, rip, true, 0, &[(WRITE_MAP, rip)], false), L2Access::ExitToL1, "VMWRITE bitmap bit");
        // Bits 63:15 of the operand: an exit, even for a bit the bitmap cannot name.
        assert_eq!(decide(&on, false, rip | 1 << 32, true, 0, &[], false), L2Access::ExitToL1);
        assert_eq!(decide(&on, false, 0x8000, true, 0, &[], false), L2Access::ExitToL1);
        // Outside 64-bit mode only the low 32 bits count.
        assert_eq!(decide(&on, false, rip | 1 << 32, false, 0, &[], false), L2Access::Shadow(F::GUEST_RIP, Access::Full));
    }

    #[test]
    fn cpl_link_pointer_and_field_failures_in_the_sdm_order() {
        let rip = u64::from(F::GUEST_RIP.encoding());
        let mut on = vmcs12(true);
        assert_eq!(decide(&on, false, rip, true, 3, &[], false), L2Access::GeneralProtection);
        // The bitmap comes before CPL: an exit to L1 whatever L2's CPL.
        assert_eq!(decide(&on, false, rip, true, 3, &[(READ_MAP, rip)], false), L2Access::ExitToL1);
        assert_eq!(decide(&on, false, 0x7FFF, true, 0, &[], false), L2Access::Fail(12), "no such field");
        let reason = u64::from(F::VM_EXIT_REASON.encoding());
        assert_eq!(decide(&on, true, reason, true, 0, &[], false), L2Access::Fail(13), "read-only without MISC bit 29");
        assert_eq!(decide(&on, true, reason, true, 0, &[], true), L2Access::Shadow(F::VM_EXIT_REASON, Access::Full));
        assert_eq!(decide(&on, false, reason, true, 0, &[], false), L2Access::Shadow(F::VM_EXIT_REASON, Access::Full));
        let link_high = u64::from(F::VMCS_LINK_POINTER.encoding()) | 1;
        assert_eq!(decide(&on, false, link_high, true, 0, &[], false), L2Access::Shadow(F::VMCS_LINK_POINTER, Access::High));
        on.insert(F::VMCS_LINK_POINTER, u64::MAX);
        assert_eq!(decide(&on, false, rip, true, 0, &[], false), L2Access::FailInvalid, "link pointer all-ones");
        assert_eq!(decide(&on, false, 0x7FFF, true, 0, &[], false), L2Access::FailInvalid, "before the field check");
    }

    #[test]
    fn revisions_and_bitmap_checks() {
        let rev = 0x4E56_4D58 & 0x7FFF_FFFF;
        assert!(vmptrld_revision_ok(rev, rev, false) && vmptrld_revision_ok(rev, rev, true));
        assert!(!vmptrld_revision_ok(rev | SHADOW_INDICATOR, rev, false), "bit 31 without shadowing offered: error 11");
        assert!(vmptrld_revision_ok(rev | SHADOW_INDICATOR, rev, true));
        assert!(!vmptrld_revision_ok(rev ^ 1, rev, true));
        assert_eq!(link_revision(rev, true), rev | SHADOW_INDICATOR);
        assert_eq!(link_revision(rev, false), rev);
        let mut v = vmcs12(true);
        fn get(v: &HashMap<F, u64>) -> impl Fn(F) -> u64 + '_ {
            move |f| v.get(&f).copied().unwrap_or(0)
        }
        assert_eq!(check_bitmaps(get(&v), 39), Ok(()));
        v.insert(F::VMREAD_BITMAP, READ_MAP | 0x800);
        assert!(check_bitmaps(get(&v), 39).unwrap_err().contains("VMREAD"));
        v.insert(F::VMREAD_BITMAP, READ_MAP);
        v.insert(F::VMWRITE_BITMAP, 1 << 39);
        assert!(check_bitmaps(get(&v), 39).unwrap_err().contains("VMWRITE"));
        let off = { let mut o = v.clone(); o.insert(F::SECONDARY_VM_EXEC_CONTROL, 0); o };
        assert_eq!(check_bitmaps(get(&off), 39), Ok(()), "only checked with shadowing on");
    }

    #[test]
    fn widths() {
        assert_eq!(read_value(F::GUEST_ES_SELECTOR, Access::Full, 0x1_2345), 0x2345);
        assert_eq!(read_value(F::VMCS_LINK_POINTER, Access::High, 0x1234_5678_9ABC_DEF0), 0x1234_5678);
        assert_eq!(written_value(F::VMCS_LINK_POINTER, Access::High, 0x1111_2222_3333_4444, 0xAB), 0xAB_3333_4444);
        assert_eq!(written_value(F::EXCEPTION_BITMAP, Access::Full, 0, u64::MAX), 0xFFFF_FFFF);
    }
}
