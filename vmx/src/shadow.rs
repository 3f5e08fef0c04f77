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
    fn the_per_exit_fields_are_shadowed() {
        for f in [F::VM_EXIT_REASON, F::EXIT_QUALIFICATION, F::VM_EXIT_INSTRUCTION_LEN, F::GUEST_RIP] {
            assert!(READ_FIELDS.contains(&f));
        }
        for f in [F::GUEST_RIP, F::GUEST_INTERRUPTIBILITY_INFO, F::HOST_RSP] {
            assert!(WRITE_FIELDS.contains(&f));
        }
    }
}
