//! The VMCS-shadowing field sets nvmx uses for L1 (SDM Vol. 3C 25.6.15,
//! 25.10): which fields L1 may VMREAD/VMWRITE without a VM exit, and their
//! bits in the VMREAD/VMWRITE bitmaps. One list for each direction; the
//! kernel derives the bitmaps and the shadow ↔ vmcs12 sync list from them.

use crate::caps::VmxCaps;
use crate::field::{Field as F, Kind};

/// Fields L1 reads on every exit. Chosen by running the built-in L1's forum
/// workload (a VMware-like exit handler) and counting its VMREADs per field:
/// each of these is read once per L2 exit; everything else is read a few
/// times in all. Exit-information fields can only be shadowed where the CPU
/// lets the shadow VMCS be written (IA32_VMX_MISC bit 29).
pub const READ_FIELDS: &[F] = &[
    F::VM_INSTRUCTION_ERROR,
    F::VM_EXIT_REASON,
    F::EXIT_QUALIFICATION,
    F::VM_EXIT_INSTRUCTION_LEN,
    F::VM_EXIT_INTR_INFO,
    F::IDT_VECTORING_INFO_FIELD,
    F::GUEST_PHYSICAL_ADDRESS,
    F::GUEST_RIP,
    F::GUEST_RSP,
    F::GUEST_RFLAGS,
    F::GUEST_INTERRUPTIBILITY_INFO,
    F::VM_ENTRY_INTR_INFO_FIELD,
];

/// Fields L1 writes on every exit or entry: advancing RIP, interruptibility,
/// event injection, and HOST_RSP (a hypervisor's entry code rewrites it
/// before every VMRESUME).
pub const WRITE_FIELDS: &[F] = &[
    F::GUEST_RIP,
    F::GUEST_RSP,
    F::GUEST_RFLAGS,
    F::GUEST_INTERRUPTIBILITY_INFO,
    F::VM_ENTRY_INTR_INFO_FIELD,
    F::VM_ENTRY_EXCEPTION_ERROR_CODE,
    F::VM_ENTRY_INSTRUCTION_LEN,
    F::HOST_RSP,
];

/// Bit of a field in the VMREAD/VMWRITE bitmaps: encoding bits 14:0 (SDM 25.6.15).
pub fn bitmap_bit(f: F) -> u32 {
    f.encoding() & 0x7FFF
}

/// Every bitmap bit of a field: its full encoding, and for a 64-bit field
/// also the "high" one (encoding + 1), which L1 uses to reach bits 63:32.
pub fn bitmap_bits(f: F) -> impl Iterator<Item = u32> {
    let b = bitmap_bit(f);
    core::iter::once(b).chain((f.width() == crate::field::Width::U64).then_some(b + 1))
}

/// How many emulated VMREADs (or VMWRITEs) of one field make it join the
/// adaptive shadow set ([`Learner`]). A hypervisor writes most of its ~100
/// control and host-state fields once or twice per VMCS (set-up, a vCPU
/// migration) and a dozen fields on every exit; 8 separates the two, so
/// set-up fields stay out (each write-set field costs a VMREAD of the
/// shadow on every pull, at every VMLAUNCH/VMRESUME) while a per-exit field
/// joins within its first 8 exits.
pub const JOIN_AFTER: u8 = 8;

/// A field L0 may let L1 VMREAD from the shadow VMCS: any field the CPU's
/// shadow VMCS has (checked by the kernel when the field joins), but an
/// exit-information field only where L0 can write it there after a
/// reflected exit, IA32_VMX_MISC bit 29 (SDM 25.10, 31.4).
pub fn read_shadowable(f: F, misc29: bool) -> bool {
    misc29 || f.kind() != Kind::ReadOnly
}

/// A field L0 may let L1 VMWRITE in the shadow VMCS: any but the
/// exit-information fields (an emulated VMWRITE of those must fail with
/// error 13 without bit 29, and no hypervisor writes them on its hot path).
/// Unlike KVM, which shadows for writing only fields its prepare_vmcs02
/// copies on every entry (its dirty tracking sees exiting VMWRITEs only),
/// nvmx's pull compares every pulled field with its cached value and marks
/// it for VMCS0-2 and the entry checks, so any control, guest or host field
/// stays coherent.
pub fn write_shadowable(f: F) -> bool {
    f.kind() != Kind::ReadOnly
}

/// The `full` policy's sets: every field L0 may shadow for reading and for
/// writing on a CPU with `caps` (before the kernel drops those its shadow
/// VMCS refuses). KVM's nested code does the same with its own static lists
/// (`vmcs_shadow_fields.h`: the fields its guests use, synced in full at
/// every nested VM entry and exit); here the list is every field, so no L1
/// needs one written for it, and only fields the CPU cannot shadow exit.
pub fn full_sets(caps: &VmxCaps) -> (impl Iterator<Item = F>, impl Iterator<Item = F>) {
    let misc29 = caps.misc & (1 << 29) != 0;
    (
        crate::field::ALL.iter().copied().filter(move |&f| read_shadowable(f, misc29)),
        crate::field::ALL.iter().copied().filter(|&f| write_shadowable(f)),
    )
}

/// Per-field counts of emulated VMREAD/VMWRITEs that decide when a field
/// joins the adaptive shadow set (saturating, one byte each).
#[derive(Clone)]
pub struct Learner {
    reads: [u8; crate::field::COUNT],
    writes: [u8; crate::field::COUNT],
}

impl Default for Learner {
    fn default() -> Self {
        Learner { reads: [0; crate::field::COUNT], writes: [0; crate::field::COUNT] }
    }
}

impl Learner {
    /// Counts one emulated access; true from the [`JOIN_AFTER`]th access
    /// of its direction on: the field should join now (a field that could
    /// not join then, e.g. with no current VMCS, tries again next time).
    #[inline]
    pub fn note(&mut self, f: F, write: bool) -> bool {
        let c = if write { &mut self.writes[f.index()] } else { &mut self.reads[f.index()] };
        *c = c.saturating_add(1);
        *c >= JOIN_AFTER
    }

    /// Forgets every count (a new policy starts learning afresh).
    pub fn clear(&mut self) {
        *self = Learner::default();
    }
}

/// The fields a CPU with `caps` can shadow for reading and for writing.
pub fn field_sets(caps: &VmxCaps) -> (impl Iterator<Item = F>, impl Iterator<Item = F>) {
    let misc29 = caps.misc & (1 << 29) != 0;
    (
        READ_FIELDS.iter().copied().filter(move |f| misc29 || f.kind() != Kind::ReadOnly),
        WRITE_FIELDS.iter().copied(),
    )
}


#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bitmap_bits_are_the_low_15_encoding_bits() {
        assert_eq!(bitmap_bit(F::GUEST_RIP), 0x681E);
        assert_eq!(bitmap_bit(F::VM_EXIT_REASON), 0x4402);
        assert!(READ_FIELDS.iter().chain(WRITE_FIELDS).all(|f| bitmap_bit(*f) < 0x8000));
    }

    #[test]
    fn write_set_has_no_read_only_field_and_sets_follow_misc29() {
        assert!(WRITE_FIELDS.iter().all(|f| f.kind() != Kind::ReadOnly));
        let with = VmxCaps { misc: 1 << 29, ..VmxCaps::NONE };
        let (r, w) = field_sets(&with);
        assert_eq!((r.count(), w.count()), (READ_FIELDS.len(), WRITE_FIELDS.len()));
        // Without bit 29 the exit-information fields cannot be put in a
        // shadow VMCS: only guest-state and control fields stay readable.
        let (r, _) = field_sets(&VmxCaps::NONE);
        let r: std::vec::Vec<F> = r.collect();
        assert!(r.iter().all(|f| f.kind() != Kind::ReadOnly));
        assert!(r.contains(&F::GUEST_RIP) && !r.contains(&F::VM_EXIT_REASON));
    }

    #[test]
    fn high_halves_of_64_bit_fields_share_the_bitmap_treatment() {
        assert_eq!(bitmap_bits(F::GUEST_PHYSICAL_ADDRESS).collect::<std::vec::Vec<_>>(), [0x2400, 0x2401]);
        assert_eq!(bitmap_bits(F::GUEST_RIP).collect::<std::vec::Vec<_>>(), [0x681E]);
        assert_eq!(bitmap_bits(F::VM_EXIT_REASON).collect::<std::vec::Vec<_>>(), [0x4402]);
    }

    #[test]
    fn learner_joins_at_the_threshold_per_direction() {
        let mut l = Learner::default();
        for i in 1..=300u32 {
            assert_eq!(l.note(F::GUEST_CR3, false), i >= u32::from(JOIN_AFTER), "read {i}");
        }
        // Writes are counted apart from reads.
        for i in 1..=u32::from(JOIN_AFTER) {
            assert_eq!(l.note(F::GUEST_CR3, true), i == u32::from(JOIN_AFTER));
        }
        l.clear();
        assert!(!l.note(F::GUEST_CR3, false));
    }

    #[test]
    fn shadowable_follows_sdm_and_misc29() {
        assert!(read_shadowable(F::GUEST_CR3, false) && write_shadowable(F::GUEST_CR3));
        assert!(read_shadowable(F::CPU_BASED_VM_EXEC_CONTROL, false) && write_shadowable(F::HOST_RIP));
        assert!(!read_shadowable(F::VM_EXIT_REASON, false) && read_shadowable(F::VM_EXIT_REASON, true));
        assert!(!write_shadowable(F::EXIT_QUALIFICATION));
    }

    #[test]
    fn full_sets_are_every_shadowable_field() {
        let all = crate::field::ALL.len();
        let ro = crate::field::ALL.iter().filter(|f| f.kind() == Kind::ReadOnly).count();
        assert!(ro > 0 && ro < all);
        // With bit 29 every field is readable from the shadow; without it the
        // exit-information fields are not. Never a read-only field for writing.
        let (r, w) = full_sets(&VmxCaps { misc: 1 << 29, ..VmxCaps::NONE });
        assert_eq!((r.count(), w.count()), (all, all - ro));
        let (r, w) = full_sets(&VmxCaps::NONE);
        let (r, w): (std::vec::Vec<F>, std::vec::Vec<F>) = (r.collect(), w.collect());
        assert_eq!((r.len(), w.len()), (all - ro, all - ro));
        assert!(r.contains(&F::GUEST_CR0) && !r.contains(&F::VM_EXIT_REASON) && !w.contains(&F::EXIT_QUALIFICATION));
        // A superset of the fixed set's fields.
        let (r29, _) = full_sets(&VmxCaps { misc: 1 << 29, ..VmxCaps::NONE });
        let r29: std::vec::Vec<F> = r29.collect();
        assert!(READ_FIELDS.iter().all(|f| r29.contains(f)) && WRITE_FIELDS.iter().all(|f| w.contains(f)));
    }

    #[test]
    fn the_per_exit_fields_are_shadowed() {
        for f in [F::VM_EXIT_REASON, F::EXIT_QUALIFICATION, F::VM_EXIT_INSTRUCTION_LEN, F::GUEST_RIP] {
            assert!(READ_FIELDS.contains(&f));
        }
        for f in [F::GUEST_RIP, F::GUEST_INTERRUPTIBILITY_INFO, F::HOST_RSP] {
            assert!(WRITE_FIELDS.contains(&f));
        }
    }
}
