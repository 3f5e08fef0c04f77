//! VMCS shadowing (SDM Vol. 3C 25.10, 26.3? 24.10 "VMCS types"): with the
//! "VMCS shadowing" control on in VMCS0-1 and a shadow VMCS linked to it,
//! L1's VMREAD/VMWRITE of the fields whose bits are clear in the VMREAD /
//! VMWRITE bitmaps go to the shadow VMCS without a VM exit.
//!
//! L0's cached vmcs12 stays the reference copy; the shadow VMCS holds the
//! shadowed fields while L1 runs. They are synced exactly where L0 needs the
//! cache or changes it: shadow → vmcs12 before L0 emulates any VMX
//! instruction, reflects an L2 exit or dumps vmcs12; vmcs12 → shadow after
//! it, and when shadowing is switched on. Switched off, the shadow is copied
//! back first, so no L1 write is lost.

use nvmx_vmx::caps::VmxCaps;
use nvmx_vmx::controls::proc2;
use nvmx_vmx::field::{Field as F, FieldSet};

use crate::vmx::insn;
use crate::vmx::run::{vmread, vmwrite};

use nvmx_vmx::shadow::{bitmap_bit, field_sets};

/// A core's shadow VMCS and bitmaps.
pub struct Shadow {
    /// The shadow VMCS (host-physical), 0 where the CPU has no shadowing.
    pub vmcs: u64,
    read_bitmap: u64,
    write_bitmap: u64,
    /// Shadowing is on in VMCS0-1.
    pub on: bool,
    /// Fields synced cache → shadow (the union of the read and write sets).
    fields: FieldSet,
    /// Fields synced shadow → cache: those L1 can write in the shadow.
    writes: FieldSet,
    /// The same two sets as lists (iterated on every sync).
    field_list: alloc::vec::Vec<F>,
    write_list: alloc::vec::Vec<F>,
    /// What VMCS0-1's link pointer was last set to (`None`: not yet).
    linked: core::cell::Cell<Option<bool>>,
}

impl Shadow {
    /// Allocates the shadow VMCS and bitmaps when the CPU has shadowing.
    pub fn new(caps: &VmxCaps, owned: &mut crate::mm::frames::Owned) -> Shadow {
        let mut s = Shadow {
            vmcs: 0,
            read_bitmap: 0,
            write_bitmap: 0,
            on: false,
            fields: FieldSet::EMPTY,
            writes: FieldSet::EMPTY,
            linked: core::cell::Cell::new(None),
            field_list: alloc::vec::Vec::new(),
            write_list: alloc::vec::Vec::new(),
        };
        if !caps.vmcs_shadowing() {
            return s;
        }
        let mut alloc = || owned.alloc(1, 1);
        let (Some(vmcs), Some(rb), Some(wb)) = (alloc(), alloc(), alloc()) else { return s };
        let (reads, writes) = field_sets(caps);
        // SAFETY: three fresh frames: the shadow VMCS (revision id with the
        // shadow-VMCS indicator, bit 31, SDM 25.2) and the two bitmaps.
        unsafe {
            (vmcs as *mut u32).write_volatile(caps.revision_id() | (1 << 31));
            core::ptr::write_bytes(rb as *mut u8, 0xFF, 4096);
            core::ptr::write_bytes(wb as *mut u8, 0xFF, 4096);
            for (bitmap, f) in reads.map(|f| (rb, f)).chain(writes.map(|f| (wb, f))) {
                let bit = bitmap_bit(f);
                *((bitmap + u64::from(bit / 8)) as *mut u8) &= !(1 << (bit % 8));
                s.fields.insert(f);
                if bitmap == wb {
                    s.writes.insert(f);
                }
            }
            if insn::vmclear(vmcs).is_err() {
                return s;
            }
            s.field_list = s.fields.iter().collect();
            s.write_list = s.writes.iter().collect();
        }
        s.vmcs = vmcs;
        s.read_bitmap = rb;
        s.write_bitmap = wb;
        s
    }

    pub fn supported(&self) -> bool {
        self.vmcs != 0
    }

    pub fn field_count(&self) -> usize {
        self.fields.iter().count()
    }

    /// L1 writes `f` in the shadow VMCS without a VM exit.
    pub fn writes(&self, f: F) -> bool {
        self.writes.contains(f)
    }

    /// Turns shadowing on or off in VMCS0-1, which must be current. The
    /// caller syncs the fields.
    pub fn set(&mut self, on: bool) {
        let p2 = vmread(F::SECONDARY_VM_EXEC_CONTROL);
        if on {
            vmwrite(F::VMREAD_BITMAP, self.read_bitmap);
            vmwrite(F::VMWRITE_BITMAP, self.write_bitmap);
            vmwrite(F::SECONDARY_VM_EXEC_CONTROL, p2 | u64::from(proc2::VMCS_SHADOWING));
        } else {
            vmwrite(F::SECONDARY_VM_EXEC_CONTROL, p2 & !u64::from(proc2::VMCS_SHADOWING));
            vmwrite(F::VMCS_LINK_POINTER, u64::MAX);
        }
        self.linked.set(None);
        self.on = on;
    }

    /// Points VMCS0-1 (current) at the shadow when L1 has a current vmcs12,
    /// else at nothing: L1's VMREAD/VMWRITE then fail as without a VMCS.
    pub fn link(&self, has_current: bool) {
        if self.on && self.linked.get() != Some(has_current) {
            vmwrite(F::VMCS_LINK_POINTER, if has_current { self.vmcs } else { u64::MAX });
            self.linked.set(Some(has_current));
        }
    }

    /// Copies the fields L1 can write out of the shadow VMCS; `running` is
    /// made current again afterwards.
    pub fn to_vmcs12(&self, running: u64, mut set: impl FnMut(F, u64)) {
        crate::l1::shared(crate::percpu::current().index).stats.slow(crate::stats::Slow::ShadowLoad);
        // SAFETY: the shadow VMCS and `running` are L0's VMCS regions.
        unsafe { insn::vmptrld(self.vmcs) }.expect("VMPTRLD of the shadow VMCS");
        for &f in &self.write_list {
            set(f, vmread(f));
        }
        // SAFETY: as above.
        unsafe { insn::vmptrld(running) }.expect("VMPTRLD back after the shadow");
    }

    /// Copies the shadowed fields among `which` (those that changed) into
    /// the shadow VMCS; returns how many VMWRITEs failed (none should:
    /// read-only fields are in the set only where the CPU allows writing
    /// them), for the caller to count.
    pub fn from_vmcs12(&self, running: u64, which: FieldSet, get: impl Fn(F) -> u64) -> u64 {
        let which = which.intersect(self.fields);
        if which.is_empty() {
            return 0;
        }
        crate::l1::shared(crate::percpu::current().index).stats.slow(crate::stats::Slow::ShadowLoad);
        // SAFETY: as in `to_vmcs12`.
        unsafe { insn::vmptrld(self.vmcs) }.expect("VMPTRLD of the shadow VMCS");
        let mut failed = 0;
        for &f in self.field_list.iter().filter(|&&f| which.contains(f)) {
            if let Err(e) = insn::vmwrite(f.encoding(), get(f)) {
                log::warn!("VMWRITE of {} to the shadow VMCS failed: {e}", f.name());
                failed += 1;
            }
        }
        // SAFETY: as above.
        unsafe { insn::vmptrld(running) }.expect("VMPTRLD back after the shadow");
        failed
    }
}
