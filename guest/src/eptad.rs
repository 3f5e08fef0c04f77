//! Part of `workload=selftest`: EPT accessed and dirty flags (SDM 29.3.5,
//! EPTP bit 6, IA32_VMX_EPT_VPID_CAP bit 21). An L2 reads one page and
//! writes another under an EPT with A/D on; L1 prints the flags of every
//! EPT level used (the values are in the line, so bare and nested print
//! the same text), clears them, INVEPTs, and looks again after the L2
//! touched the pages once more. Where the capability is absent every line
//! says "not offered", so the count is the same on every model.

use core::fmt::Write;

use nvmx_vmx::caps::VmxCaps;
use nvmx_vmx::field::Field as F;

use crate::console::Text;
use crate::forum::{alloc_page, Ept};
use crate::selftest::{fresh_l2_vmcs, L2, Tally, Want};
use crate::vmx;

const A: u64 = 1 << 8;
const D: u64 = 1 << 9;
const EPTP_AD: u64 = 1 << 6;
/// The L2's VPID here (no other check uses it).
const VPID: u16 = 11;

/// The checks, in order (each prints one line).
const CHECKS: [&str; 6] = [
    "ept a/d: l2 reads page R and writes page W: flags of PML4E PDPTE PDE PTE",
    "ept a/d: the EPT leaf of the l2's top page table (l2 paging-structure accesses are writes)",
    "ept a/d: l2 reads page W2 (A only), then writes it (A and D)",
    "ept a/d: invept single-context with EPTP bit 6",
    "ept a/d: flags cleared, invept, l2 reads R and writes W again: flags of PML4E PDPTE PDE PTE",
    "ept a/d: vmresume with EPTP bits 6 and 7 set: VMfailValid(7)",
];

/// Without the capability: the same count of lines, and bit 6 refused.
const NOT_OFFERED: [&str; 5] = [
    "ept a/d: l2 reads and writes: not offered",
    "ept a/d: l2 paging-structure accesses: not offered",
    "ept a/d: read then write: not offered",
    "ept a/d: invept single-context with EPTP bit 6: not offered",
    "ept a/d: flags cleared, invept: not offered",
];

/// A check line's value.
type Buf = Text<96>;

/// "-", "A", "D" or "AD" for an entry's flags.
fn flags(e: u64) -> &'static str {
    match (e & A != 0, e & D != 0) {
        (false, false) => "-",
        (true, false) => "A",
        (false, true) => "D",
        (true, true) => "AD",
    }
}

/// The four EPT entries (PML4E, PDPTE, PDE, PTE) that map `gpa` in `ept`,
/// as pointers (null where a level is missing).
fn path(ept: &Ept, gpa: u64) -> [*mut u64; 4] {
    let mut out = [core::ptr::null_mut(); 4];
    let mut table = ept.pml4;
    for (i, shift) in [39, 30, 21, 12].into_iter().enumerate() {
        let e = (table + 8 * ((gpa >> shift) & 511)) as *mut u64;
        out[i] = e;
        // SAFETY: EPT tables are L1 pool pages, identity mapped.
        let v = unsafe { e.read_volatile() };
        if v & 7 == 0 {
            break;
        }
        table = v & 0x000F_FFFF_FFFF_F000;
    }
    out
}

/// The flags of every level of `gpa`'s path, "A A A AD"-style.
fn path_flags(out: &mut Buf, ept: &Ept, gpa: u64) {
    for (i, e) in path(ept, gpa).into_iter().enumerate() {
        let v = if e.is_null() {
            0
        } else {
            // SAFETY: as in `path`.
            unsafe { e.read_volatile() }
        };
        let _ = write!(out, "{}{}", if i == 0 { "" } else { " " }, flags(v));
    }
}

fn clear_flags(ept: &Ept, gpa: u64) {
    for e in path(ept, gpa) {
        if !e.is_null() {
            // SAFETY: as in `path`; the L2 does not run meanwhile.
            unsafe { e.write_volatile(e.read_volatile() & !(A | D)) };
        }
    }
}

/// Runs the checks on the fresh VMCS `vmcs` (a page with the revision id).
pub fn run(t: &mut Tally, caps: &VmxCaps, vmcs: u64) {
    let Some(ept) = fresh_l2_vmcs(t, caps, vmcs, VPID, &CHECKS) else { return };
    let eptp = ept.eptp() | EPTP_AD;
    if !caps.ept_ad() {
        for name in NOT_OFFERED {
            t.value(name, "", "as the capability says", true);
        }
        // SDM 27.2.1.1: bit 6 is reserved where bit 21 is clear.
        vmx::vmwrite(F::EPT_POINTER, eptp);
        t.check("ept a/d: vmlaunch with EPTP bit 6, not offered: VMfailValid(7)", Want::FailValid(7), crate::forum::try_enter(true));
        return;
    }
    vmx::vmwrite(F::EPT_POINTER, eptp);
    // No translation of this VPID from earlier checks may hide a walk.
    let _ = vmx::invvpid_single(VPID);
    let mut l2 = L2::new(ept, alloc_page());
    let (r, w, w2) = (alloc_page(), alloc_page(), alloc_page());
    // SAFETY: fresh pool pages, identity mapped.
    unsafe { (r as *mut u64).write_volatile(0x1234) };
    let rip = |s: &u8| s as *const u8 as u64;
    // SAFETY: addresses of the selftest's L2 snippets, only taken.
    let (load, store) = unsafe { (rip(&crate::selftest::st_load), rip(&crate::selftest::st_store)) };
    let touch = |l2: &mut L2, load_at: u64, store_at: u64| {
        let a = l2.run(load, 0, load_at).is_some_and(|e| e.reason == 18 && e.rax == 0x1234);
        let b = l2.run(store, 0, store_at).is_some_and(|e| e.reason == 18);
        a && b
    };

    // 1: A in every level of both paths, D only in W's leaf.
    let ran = touch(&mut l2, r, w);
    let mut got = Buf::new();
    let _ = write!(got, "R ");
    path_flags(&mut got, &l2.ept, r);
    let _ = write!(got, ", W ");
    path_flags(&mut got, &l2.ept, w);
    let want = "R A A A A, W A A A AD";
    t.value(CHECKS[0], want, got.as_str(), ran && got.as_str() == want);

    // 2: the L2 walks its page tables (L1's, at CR3) through the EPT: with
    // A/D on those reads count as writes, so the top table's leaf is dirty.
    let cr3 = crate::forum::read_cr(3) & 0x000F_FFFF_FFFF_F000;
    // SAFETY: as in `path`.
    let leaf = unsafe { path(&l2.ept, cr3)[3].as_ref().map_or(0, |e| *e) };
    t.value(CHECKS[1], "AD", flags(leaf), flags(leaf) == "AD");

    // 3: a read leaves D clear, the first write sets it (under nvmx: EPT0-2
    // maps the page read-only until L0 sets D). INVVPID only between, so
    // no linear translation from the read serves the write.
    let a = l2.run(load, 0, w2).is_some_and(|e| e.reason == 18);
    let mut got = Buf::new();
    let _ = write!(got, "after the read {}", flags(unsafe_leaf(&l2.ept, w2)));
    let _ = vmx::invvpid_single(VPID);
    let b = l2.run(store, 0, w2).is_some_and(|e| e.reason == 18);
    let _ = write!(got, ", after the write {}", flags(unsafe_leaf(&l2.ept, w2)));
    let want = "after the read A, after the write AD";
    t.value(CHECKS[2], want, got.as_str(), a && b && got.as_str() == want);

    // 4: INVEPT accepts an EPTP with bit 6 (SDM 32.3 "INVEPT": a valid EPTP).
    t.check(CHECKS[3], Want::Succeed, vmx::try_invalidate(true, 1, [eptp, 0]));

    // 5: cleared flags come back after INVEPT and new accesses.
    for p in [r, w] {
        clear_flags(&l2.ept, p);
    }
    let _ = vmx::try_invalidate(true, 1, [eptp, 0]);
    let ran = touch(&mut l2, r, w);
    let mut got = Buf::new();
    let _ = write!(got, "R ");
    path_flags(&mut got, &l2.ept, r);
    let _ = write!(got, ", W ");
    path_flags(&mut got, &l2.ept, w);
    let want = "R A A A A, W A A A AD";
    t.value(CHECKS[4], want, got.as_str(), ran && got.as_str() == want);

    // 6: bit 6 is allowed, bit 7 still reserved (SDM 27.2.1.1).
    vmx::vmwrite(F::EPT_POINTER, eptp | (1 << 7));
    t.check(CHECKS[5], Want::FailValid(7), crate::forum::try_enter(false));
    vmx::vmwrite(F::EPT_POINTER, eptp);
}

/// The leaf's value for `gpa` (0 if unmapped).
fn unsafe_leaf(ept: &Ept, gpa: u64) -> u64 {
    let e = path(ept, gpa)[3];
    if e.is_null() {
        0
    } else {
        // SAFETY: as in `path`.
        unsafe { e.read_volatile() }
    }
}
