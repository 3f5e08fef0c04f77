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
//!
//! Which fields: the fixed set (`Policy::Fixed`), or under
//! `Policy::Adaptive` a set that starts empty and grows at run time: a
//! field joins, per direction, at its `JOIN_AFTER`th emulated access, its
//! vmcs12 value written into the shadow VMCS first ([`Shadow::join`]).

use nvmx_vmx::caps::VmxCaps;
use nvmx_vmx::controls::proc2;
use nvmx_vmx::field::{ALL, Field as F, FieldSet};

use crate::vmx::insn;
use crate::vmx::run::{vmread, vmwrite};

use nvmx_vmx::shadow::{bitmap_bits, field_sets, full_sets, read_shadowable, write_shadowable};

/// Which fields the shadow VMCS holds for L1.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Policy {
    /// The built-in L1's 15 fields (`nvmx_vmx::shadow::READ_FIELDS`/`WRITE_FIELDS`).
    Fixed,
    /// Starts empty; a field joins after `JOIN_AFTER` emulated accesses.
    Adaptive,
    /// Every field the CPU's shadow VMCS holds, from the start
    /// (`nvmx_vmx::shadow::full_sets`, KVM's approach with a complete list).
    Full,
}

/// A core's shadow VMCS and bitmaps.
pub struct Shadow {
    /// The shadow VMCS (host-physical), 0 where the CPU has no shadowing.
    pub vmcs: u64,
    read_bitmap: u64,
    write_bitmap: u64,
    /// Shadowing is on in VMCS0-1.
    pub on: bool,
    pub policy: Policy,
    /// L1 reads these from the shadow without an exit.
    reads: FieldSet,
    /// Fields synced cache → shadow (the union of the read and write sets).
    fields: FieldSet,
    /// Fields synced shadow → cache: those L1 can write in the shadow.
    writes: FieldSet,
    /// Fields whose VMWRITE into the shadow VMCS failed: never shadowed.
    absent: FieldSet,
    /// The same two sets as lists (iterated on every sync); room for every
    /// field is reserved up front, so a field joining never allocates.
    field_list: alloc::vec::Vec<F>,
    write_list: alloc::vec::Vec<F>,
    /// IA32_VMX_MISC bit 29: exit-information fields can be written in a
    /// shadow VMCS (so shadowed for reading).
    misc29: bool,
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
            policy: Policy::Fixed,
            reads: FieldSet::EMPTY,
            fields: FieldSet::EMPTY,
            writes: FieldSet::EMPTY,
            absent: FieldSet::EMPTY,
            linked: core::cell::Cell::new(None),
            field_list: alloc::vec::Vec::new(),
            write_list: alloc::vec::Vec::new(),
            misc29: caps.misc & (1 << 29) != 0,
        };
        if !caps.vmcs_shadowing() {
            return s;
        }
        let mut alloc = || owned.alloc(1, 1);
        let (Some(vmcs), Some(rb), Some(wb)) = (alloc(), alloc(), alloc()) else { return s };
        // SAFETY: a fresh frame: the shadow VMCS (revision id with the
        // shadow-VMCS indicator, bit 31, SDM 25.2).
        unsafe {
            (vmcs as *mut u32).write_volatile(caps.revision_id() | (1 << 31));
            if insn::vmclear(vmcs).is_err() {
                return s;
            }
        }
        s.field_list.reserve_exact(nvmx_vmx::field::COUNT);
        s.write_list.reserve_exact(nvmx_vmx::field::COUNT);
        s.vmcs = vmcs;
        s.read_bitmap = rb;
        s.write_bitmap = wb;
        s.reset(Policy::Fixed, caps, 0);
        s
    }

    /// Sets the shadowed fields to `policy`'s starting set: the bitmaps
    /// exit for everything else. The caller pulls before and pushes after
    /// when shadowing is on. `running` (current again afterwards) is only
    /// needed by `Full`, which tries each field in the shadow VMCS.
    pub fn reset(&mut self, policy: Policy, caps: &VmxCaps, running: u64) {
        // SAFETY: the two bitmap frames are this struct's.
        unsafe {
            core::ptr::write_bytes(self.read_bitmap as *mut u8, 0xFF, 4096);
            core::ptr::write_bytes(self.write_bitmap as *mut u8, 0xFF, 4096);
        }
        self.policy = policy;
        (self.reads, self.writes, self.fields) = (FieldSet::EMPTY, FieldSet::EMPTY, FieldSet::EMPTY);
        self.field_list.clear();
        self.write_list.clear();
        match policy {
            Policy::Fixed => {
                let (reads, writes) = field_sets(caps);
                reads.for_each(|f| self.add(f, false));
                writes.for_each(|f| self.add(f, true));
            }
            Policy::Full => {
                // Which fields this CPU's shadow VMCS has: a VMWRITE of each
                // (its value comes with the caller's push); the ones it
                // refuses (VMfail 12, SDM 31.3 VMWRITE) keep exiting.
                // SAFETY: the shadow VMCS is this struct's, `running` L0's.
                unsafe { insn::vmptrld(self.vmcs) }.expect("VMPTRLD of the shadow VMCS");
                for &f in nvmx_vmx::field::ALL {
                    if !self.absent.contains(f) && (read_shadowable(f, self.misc29) || write_shadowable(f)) && insn::vmwrite(f.encoding(), 0).is_err() {
                        self.absent.insert(f);
                    }
                }
                // SAFETY: as above.
                unsafe { insn::vmptrld(running) }.expect("VMPTRLD back after the shadow");
                let (reads, writes) = full_sets(caps);
                let absent = self.absent;
                reads.filter(|&f| !absent.contains(f)).for_each(|f| self.add(f, false));
                writes.filter(|&f| !absent.contains(f)).for_each(|f| self.add(f, true));
            }
            Policy::Adaptive => {}
        }
    }

    /// Clears `f`'s bits in one bitmap and adds it to the sets.
    fn add(&mut self, f: F, write: bool) {
        let bitmap = if write { self.write_bitmap } else { self.read_bitmap };
        for bit in bitmap_bits(f) {
            // SAFETY: a bit inside this struct's 4 KiB bitmap frame (bit < 0x8000).
            unsafe { *((bitmap + u64::from(bit / 8)) as *mut u8) &= !(1 << (bit % 8)) };
        }
        if write {
            self.writes.insert(f);
            self.write_list.push(f);
        } else {
            self.reads.insert(f);
        }
        if !self.fields.contains(f) {
            self.fields.insert(f);
            self.field_list.push(f);
        }
    }

    /// The adaptive policy lets `f` join for reading or writing once L1
    /// has used it `JOIN_AFTER` times: first the shadow VMCS gets vmcs12's
    /// current value (`value`), so L1's next access without an exit sees
    /// what an emulated one would; then the bitmap bits clear. `running`
    /// is current again afterwards. A field the shadow VMCS refuses (the
    /// CPU lacks it) never joins. True when it joined.
    pub fn join(&mut self, f: F, write: bool, value: u64, running: u64) -> bool {
        let allowed = if write { write_shadowable(f) } else { read_shadowable(f, self.misc29) };
        let set = if write { self.writes } else { self.reads };
        if !allowed || set.contains(f) || self.absent.contains(f) || self.vmcs == 0 {
            return false;
        }
        if !self.fields.contains(f) {
            // SAFETY: the shadow VMCS and `running` are L0's VMCS regions.
            unsafe { insn::vmptrld(self.vmcs) }.expect("VMPTRLD of the shadow VMCS");
            let ok = insn::vmwrite(f.encoding(), value).is_ok();
            // SAFETY: as above.
            unsafe { insn::vmptrld(running) }.expect("VMPTRLD back after the shadow");
            if !ok {
                self.absent.insert(f);
                return false;
            }
        }
        self.add(f, write);
        true
    }

    pub fn supported(&self) -> bool {
        self.vmcs != 0
    }

    pub fn field_count(&self) -> usize {
        self.field_list.len()
    }

    /// The fields L1 reads and writes without an exit (for the shell).
    pub fn sets(&self) -> (FieldSet, FieldSet) {
        (self.reads, self.writes)
    }

    /// Every field the shadow VMCS holds.
    pub fn fields(&self) -> FieldSet {
        self.fields
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

    /// VMCS0-1's link pointer is the shadow VMCS (L1 has a current vmcs12).
    pub fn linked_current(&self) -> bool {
        self.linked.get() == Some(true)
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
        // The set bits of `which` (already cut to the shadowed fields), word
        // by word, not a filter over every shadowed field: a push after a
        // reflection writes the few exit fields that changed.
        for (w, &word) in which.0.iter().enumerate() {
            let mut bits = word;
            while bits != 0 {
                let f = ALL[w * 64 + bits.trailing_zeros() as usize];
                bits &= bits - 1;
                if let Err(e) = insn::vmwrite(f.encoding(), get(f)) {
                    log::warn!("VMWRITE of {} to the shadow VMCS failed: {e}", f.name());
                    failed += 1;
                }
            }
        }
        // SAFETY: as above.
        unsafe { insn::vmptrld(running) }.expect("VMPTRLD back after the shadow");
        failed
    }
}
