//! SDM 27.3.1 checks on vmcs12's guest-state area ("Checks on the Guest
//! State Area", Intel SDM Vol. 3C 27.3.1.1-27.3.1.5). A failure is a VM-entry
//! failure (exit reason 33 with bit 31 set) with the exit qualification of
//! SDM 27.8, not a VMfail.
//!
//! nvmx's system tests run one L1 bare on Bochs 2.7 and nested under nvmx and
//! compare, so the checks come in the order of Bochs' own guest-state check
//! (RFLAGS, control registers, CS..GS, GDTR/IDTR, LDTR/TR, MSRs, RIP,
//! non-register state) and under its conditions. Where Bochs departs from the
//! SDM, the SDM is followed and a "Bochs:" comment names the difference.
//! Every register-state failure has qualification 0, so their order only
//! changes the text; what L1 sees depends on where the non-zero ones (link
//! pointer 4, NMI into STI blocking 3) sit, and they sit where Bochs has them.
//!
//! The PDPTEs of a PAE guest (qualification 2, SDM 27.3.1.6) are the last
//! check, [`check_pdptes`]: without EPT they come from guest memory at CR3,
//! which the caller reads. Not checked: state for controls nvmx does not
//! offer L1 (entry to SMM, virtual NMIs, load PERF_GLOBAL_CTRL, CET state,
//! PKRS or BNDCFGS), which `check_controls` already rejects.

use crate::regs::{CR0_PE, CR0_WP, CR0_NW, CR0_CD, CR0_PG, CR4_PAE, CR4_PCIDE, CR4_CET, EFER_LME, EFER_LMA};

use crate::controls::{entry, proc1, proc2};
use crate::field::Field as F;

/// Why a vmcs12 guest state fails VM entry: the check's text and the exit
/// qualification of the VM-entry failure (exit reason 33 with bit 31 set):
/// 0 normally, 4 for the VMCS link pointer (SDM 27.8 / 26.8).
/// Also 3 when an NMI is injected into blocking by STI (SDM 27.8).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GuestStateError {
    pub check: &'static str,
    pub qualification: u64,
}


const RF_TF: u64 = 1 << 8;
const RF_IF: u64 = 1 << 9;
const RF_VM: u64 = 1 << 17;
/// RFLAGS bits 63:22, 15, 5 and 3.
const RFLAGS_RESERVED: u64 = 0xFFFF_FFFF_FFC0_8028;
/// IA32_DEBUGCTL bits 0-1 (LBR, BTF) and 15:6 exist; bit 2 (bus-lock
/// detection) only on CPUs Bochs does not model.
pub(crate) const DEBUGCTL_RESERVED: u64 = !0xFFC3;
/// IA32_EFER on Intel: SCE, LME, LMA, NXE.
const EFER_RESERVED: u64 = !0xD01;
/// Segment access-rights bits 11:8 and 31:17 (SDM 25.4.1, table 25-2).
const AR_RESERVED: u64 = !0x1_F0FF;
/// Activity states (SDM 25.4.2) and interruptibility bits (table 25-3).
const ACTIVE: u64 = 0;
const HLT: u64 = 1;
const SHUTDOWN: u64 = 2;
const WAIT_FOR_SIPI: u64 = 3;
const BLOCK_STI: u64 = 1;
const BLOCK_MOV_SS: u64 = 1 << 1;
const BLOCK_SMI: u64 = 1 << 2;

/// The six segment registers in encoding order, and their indices.
const SEGS: [[F; 4]; 6] = [
    [F::GUEST_ES_SELECTOR, F::GUEST_ES_BASE, F::GUEST_ES_LIMIT, F::GUEST_ES_AR_BYTES],
    [F::GUEST_CS_SELECTOR, F::GUEST_CS_BASE, F::GUEST_CS_LIMIT, F::GUEST_CS_AR_BYTES],
    [F::GUEST_SS_SELECTOR, F::GUEST_SS_BASE, F::GUEST_SS_LIMIT, F::GUEST_SS_AR_BYTES],
    [F::GUEST_DS_SELECTOR, F::GUEST_DS_BASE, F::GUEST_DS_LIMIT, F::GUEST_DS_AR_BYTES],
    [F::GUEST_FS_SELECTOR, F::GUEST_FS_BASE, F::GUEST_FS_LIMIT, F::GUEST_FS_AR_BYTES],
    [F::GUEST_GS_SELECTOR, F::GUEST_GS_BASE, F::GUEST_GS_LIMIT, F::GUEST_GS_AR_BYTES],
];
const CS: usize = 1;
const SS: usize = 2;
const FS: usize = 4;

/// One check's text for ES, CS, SS, DS, FS, GS, indexed like [`SEGS`].
macro_rules! each_seg {
    ($what:literal) => {
        [
            concat!("guest ES: ", $what, " (SDM 27.3.1.2)"),
            concat!("guest CS: ", $what, " (SDM 27.3.1.2)"),
            concat!("guest SS: ", $what, " (SDM 27.3.1.2)"),
            concat!("guest DS: ", $what, " (SDM 27.3.1.2)"),
            concat!("guest FS: ", $what, " (SDM 27.3.1.2)"),
            concat!("guest GS: ", $what, " (SDM 27.3.1.2)"),
        ]
    };
}

/// A segment register's vmcs12 fields; access rights as in table 25-2.
#[derive(Clone, Copy)]
struct Seg {
    sel: u64,
    base: u64,
    limit: u64,
    ar: u64,
}

impl Seg {
    fn read(get: &impl Fn(F) -> u64, [sel, base, limit, ar]: [F; 4]) -> Seg {
        Seg { sel: get(sel), base: get(base), limit: get(limit), ar: get(ar) }
    }
    fn typ(self) -> u64 { self.ar & 0xF }
    fn s(self) -> bool { self.ar & (1 << 4) != 0 }
    fn dpl(self) -> u64 { (self.ar >> 5) & 3 }
    fn present(self) -> bool { self.ar & (1 << 7) != 0 }
    fn long(self) -> bool { self.ar & (1 << 13) != 0 }
    fn unusable(self) -> bool { self.ar & (1 << 16) != 0 }
    fn rpl(self) -> u64 { self.sel & 3 }
    fn ti(self) -> bool { self.sel & 4 != 0 }
    /// Limit bits 11:0 not all ones need G=0; limit bits 31:20 set need G=1.
    fn granularity_fits(self) -> bool {
        if self.ar & (1 << 15) != 0 { self.limit & 0xFFF == 0xFFF } else { self.limit & 0xFFF0_0000 == 0 }
    }
}

fn canonical(v: u64) -> bool {
    (v as i64) << 16 >> 16 == v as i64
}

/// What several groups of checks share.
struct Guest {
    entry: u32,
    ia32e: bool,
    unrestricted: bool,
    cr0: u64,
    rflags: u64,
    segs: [Seg; 6],
}

/// `get` reads vmcs12 fields; cr0_fixed/cr4_fixed are (FIXED0, FIXED1) as advertised to L1.
///
/// `l1_misc` is IA32_VMX_MISC as L1 reads it (the activity states offered).
/// `phys_bits` is the CPU's physical-address width (CPUID.80000008H:EAX[7:0];
/// Bochs 2.7 reports 40 on every model). `link_region_ok(p)` answers for a page-aligned VMCS link pointer other
/// than all ones: whether `p` is in L1's memory, is not its VMXON region and
/// starts with the vmcs12 revision id with bit 31 clear (nvmx offers L1 no
/// VMCS shadowing, so no shadow-VMCS indicator).
pub fn check_guest_state(
    get: impl Fn(F) -> u64,
    cr0_fixed: (u64, u64),
    cr4_fixed: (u64, u64),
    phys_bits: u32,
    l1_misc: u64,
    link_region_ok: impl Fn(u64) -> bool,
) -> Result<(), GuestStateError> {
    let entry = get(F::VM_ENTRY_CONTROLS) as u32;
    let proc2 = if get(F::CPU_BASED_VM_EXEC_CONTROL) as u32 & proc1::SECONDARY_CONTROLS != 0 {
        get(F::SECONDARY_VM_EXEC_CONTROL) as u32
    } else {
        0
    };
    let g = Guest {
        entry,
        ia32e: entry & entry::IA32E_MODE_GUEST != 0,
        unrestricted: proc2 & proc2::UNRESTRICTED_GUEST != 0,
        cr0: get(F::GUEST_CR0),
        rflags: get(F::GUEST_RFLAGS),
        segs: SEGS.map(|f| Seg::read(&get, f)),
    };
    let registers = check_rflags(&g)
        .and_then(|()| check_control_regs(&g, &get, cr0_fixed, cr4_fixed, phys_bits))
        .and_then(|()| check_segments(&g))
        .and_then(|()| check_descriptor_tables(&get))
        .and_then(|()| check_ldtr_tr(&g, &get))
        .and_then(|()| check_msrs(&g, &get))
        .and_then(|()| check_rip(&g, &get));
    registers.map_err(|check| GuestStateError { check, qualification: 0 })?;
    check_non_register(&g, &get, l1_misc, link_region_ok)
}

/// Bits of a present PAE PDPTE that must be 0 (SDM Vol. 3A table 4-8):
/// 2:1, 8:5, and MAXPHYADDR..63.
pub fn pdpte_reserved(phys_bits: u32) -> u64 {
    0x1E6 | !((1u64 << phys_bits.min(63)) - 1)
}

/// The PDPTEs a VM entry loads (SDM 27.3.1.6, the last guest-state check,
/// where Bochs has it too): only for a PAE guest — CR0.PG = 1, CR4.PAE = 1
/// and "IA-32e mode guest" 0. With "enable EPT" they are the four PDPTE
/// fields of the VMCS; without it, the four entries at guest-physical
/// CR3[31:5] (`read`; memory that is not there reads as all ones, as on
/// the bus). A present entry with a reserved bit set fails the entry with
/// qualification 2 ("PDPTE loading"). `Ok(Some(p))`: the PDPTEs a PAE
/// guest starts with; `Ok(None)`: not a PAE guest.
pub fn check_pdptes(
    get: impl Fn(F) -> u64,
    read: impl Fn(u64) -> Option<u64>,
    phys_bits: u32,
) -> Result<Option<[u64; 4]>, GuestStateError> {
    let entry = get(F::VM_ENTRY_CONTROLS) as u32;
    let pae = get(F::GUEST_CR0) & CR0_PG != 0 && get(F::GUEST_CR4) & CR4_PAE != 0 && entry & entry::IA32E_MODE_GUEST == 0;
    if !pae {
        return Ok(None);
    }
    let proc2 = if get(F::CPU_BASED_VM_EXEC_CONTROL) as u32 & proc1::SECONDARY_CONTROLS != 0 {
        get(F::SECONDARY_VM_EXEC_CONTROL) as u32
    } else {
        0
    };
    let pdptes = if proc2 & proc2::ENABLE_EPT != 0 {
        [F::GUEST_PDPTR0, F::GUEST_PDPTR1, F::GUEST_PDPTR2, F::GUEST_PDPTR3].map(&get)
    } else {
        let table = get(F::GUEST_CR3) & 0xFFFF_FFE0;
        [0, 1, 2, 3].map(|n| read(table + 8 * n).unwrap_or(u64::MAX))
    };
    let reserved = pdpte_reserved(phys_bits);
    if pdptes.iter().any(|&e| e & 1 != 0 && e & reserved != 0) {
        return Err(GuestStateError {
            check: "guest PDPTEs: a present PDPTE of a PAE guest has a reserved bit set (SDM 27.3.1.6)",
            qualification: 2,
        });
    }
    Ok(Some(pdptes))
}

/// Guest fields that change on nearly every L2 exit and its handling (L2
/// runs on, L1 advances RIP and sets interruptibility): the fields of which
/// only [`check_rflags`], [`check_rip`] and [`check_non_register`] read
/// anything — apart from RFLAGS.VM, which the segment checks read too.
pub const VOLATILE: crate::field::FieldSet = crate::field::FieldSet::of(&VOLATILE_FIELDS);

/// [`VOLATILE`] as a list, for code that walks it (a reflected exit reads
/// these at once).
pub const VOLATILE_FIELDS: [F; 6] = [
    F::GUEST_RIP,
    F::GUEST_RSP,
    F::GUEST_RFLAGS,
    F::GUEST_INTERRUPTIBILITY_INFO,
    F::GUEST_ACTIVITY_STATE,
    F::GUEST_PENDING_DBG_EXCEPTIONS,
];

/// [`check_guest_state`] for a guest state that passed it with the same
/// controls and every field the same but some of [`VOLATILE`] (and RFLAGS.VM
/// unchanged): only the checks that read those run, in the same order, so
/// the first failure is the one the whole check would report — the others
/// would pass again on the same inputs. A VMRESUME after an L2 exit needs
/// no more (KVM leaves even these to the CPU).
pub fn check_guest_state_volatile(
    get: impl Fn(F) -> u64,
    l1_misc: u64,
    link_region_ok: impl Fn(u64) -> bool,
) -> Result<(), GuestStateError> {
    let entry = get(F::VM_ENTRY_CONTROLS) as u32;
    let g = Guest {
        entry,
        ia32e: entry & entry::IA32E_MODE_GUEST != 0,
        // Read by none of the three checks below, nor the segments but CS
        // (check_rip) and SS (check_non_register).
        unrestricted: false,
        cr0: get(F::GUEST_CR0),
        rflags: get(F::GUEST_RFLAGS),
        segs: {
            let mut segs = [Seg { sel: 0, base: 0, limit: 0, ar: 0 }; 6];
            segs[CS] = Seg::read(&get, SEGS[CS]);
            segs[SS] = Seg::read(&get, SEGS[SS]);
            segs
        },
    };
    check_rflags(&g).and_then(|()| check_rip(&g, &get)).map_err(|check| GuestStateError { check, qualification: 0 })?;
    check_non_register(&g, &get, l1_misc, link_region_ok)
}

/// [`check_guest_state_volatile`] narrowed to what changed: for a guest
/// state that passed the whole check (or this one) and of which only the
/// fields in `changed` — a subset of [`VOLATILE`], RFLAGS.VM unchanged —
/// differ since. Nothing changed that a check reads: it passes; only RIP
/// (and RSP, which no check reads): only [`check_rip`] can fail, and it is
/// then the first failure, the checks before it reading nothing of RIP;
/// anything else: the volatile checks. A VMRESUME after an L2 exit whose
/// handler only advanced RIP (the common case) runs one check.
pub fn check_guest_state_changed(
    get: impl Fn(F) -> u64,
    changed: crate::field::FieldSet,
    l1_misc: u64,
    link_region_ok: impl Fn(u64) -> bool,
) -> Result<(), GuestStateError> {
    const UNREAD: crate::field::FieldSet = crate::field::FieldSet::of(&[F::GUEST_RSP]);
    const RIP: crate::field::FieldSet = crate::field::FieldSet::of(&[F::GUEST_RIP]);
    let read = changed.minus(UNREAD);
    if read.is_empty() {
        return Ok(());
    }
    if read.minus(RIP).is_empty() {
        let entry = get(F::VM_ENTRY_CONTROLS) as u32;
        let ia32e = entry & entry::IA32E_MODE_GUEST != 0;
        let rip = get(F::GUEST_RIP);
        // check_rip without the Guest: CS matters only in IA-32e mode.
        let long = ia32e && Seg { sel: 0, base: 0, limit: 0, ar: get(F::GUEST_CS_AR_BYTES) }.long();
        let fails = if long { !canonical(rip) } else { rip >> 32 != 0 };
        if fails {
            let check = if long {
                "guest RIP: must be canonical in 64-bit mode (SDM 27.3.1.4)"
            } else {
                "guest RIP: bits 63:32 must be 0 outside 64-bit mode (SDM 27.3.1.4)"
            };
            return Err(GuestStateError { check, qualification: 0 });
        }
        return Ok(());
    }
    check_guest_state_volatile(get, l1_misc, link_region_ok)
}

/// SDM 27.3.1.4, RFLAGS (first in Bochs). IF for external-interrupt
/// injection is checked with the other injection rules below.
fn check_rflags(g: &Guest) -> Result<(), &'static str> {
    if g.rflags & RFLAGS_RESERVED != 0 {
        Err("guest RFLAGS: reserved bits 63:22, 15, 5 and 3 must be 0 (SDM 27.3.1.4)")
    } else if g.rflags & 2 == 0 {
        Err("guest RFLAGS: reserved bit 1 must be 1 (SDM 27.3.1.4)")
    } else if g.rflags & RF_VM != 0 && (g.ia32e || g.cr0 & CR0_PE == 0) {
        // Bochs: only the IA-32e half; it takes PE=0 with VM=1 as virtual-8086.
        Err("guest RFLAGS: VM must be 0 in IA-32e mode or with CR0.PE=0 (SDM 27.3.1.4)")
    } else {
        Ok(())
    }
}

/// SDM 27.3.1.1, control and debug registers.
fn check_control_regs(
    g: &Guest,
    get: &impl Fn(F) -> u64,
    (cr0_f0, cr0_f1): (u64, u64),
    (cr4_f0, cr4_f1): (u64, u64),
    phys_bits: u32,
) -> Result<(), &'static str> {
    let (cr0, cr3, cr4) = (g.cr0, get(F::GUEST_CR3), get(F::GUEST_CR4));
    // CD and NW are never checked; PE and PG not with unrestricted guest.
    let exempt = CR0_CD | CR0_NW | if g.unrestricted { CR0_PE | CR0_PG } else { 0 };
    let debug = g.entry & entry::LOAD_DEBUG_CONTROLS != 0;
    if cr0 & cr0_f0 & !exempt != cr0_f0 & !exempt {
        Err("guest CR0: a bit IA32_VMX_CR0_FIXED0 fixes to 1 is 0 (SDM 27.3.1.1)")
    } else if cr0 & !(cr0_f1 | exempt) != 0 {
        Err("guest CR0: a bit IA32_VMX_CR0_FIXED1 fixes to 0 is 1 (SDM 27.3.1.1)")
    } else if cr0 & CR0_PG != 0 && cr0 & CR0_PE == 0 {
        Err("guest CR0: PG=1 requires PE=1 (SDM 27.3.1.1)")
    } else if cr3 >> phys_bits != 0 {
        Err("guest CR3: bits beyond the physical-address width must be 0 (SDM 27.3.1.1)")
    } else if cr4 & cr4_f0 != cr4_f0 {
        Err("guest CR4: a bit IA32_VMX_CR4_FIXED0 fixes to 1 is 0 (SDM 27.3.1.1)")
    } else if cr4 & !cr4_f1 != 0 {
        Err("guest CR4: a bit IA32_VMX_CR4_FIXED1 fixes to 0 is 1 (SDM 27.3.1.1)")
    // Bochs: no PG check (PG is FIXED0 unless unrestricted guest).
    } else if g.ia32e && cr0 & CR0_PG == 0 {
        Err("guest CR0: PG must be 1 for an IA-32e mode guest (SDM 27.3.1.1)")
    } else if g.ia32e && cr4 & CR4_PAE == 0 {
        Err("guest CR4: PAE must be 1 for an IA-32e mode guest (SDM 27.3.1.1)")
    } else if !g.ia32e && cr4 & CR4_PCIDE != 0 {
        Err("guest CR4: PCIDE must be 0 outside IA-32e mode (SDM 27.3.1.1)")
    } else if cr4 & CR4_CET != 0 && cr0 & CR0_WP == 0 {
        Err("guest CR4: CET=1 requires CR0.WP=1 (SDM 27.3.1.1)")
    // Bochs: does not check DEBUGCTL.
    } else if debug && get(F::GUEST_IA32_DEBUGCTL) & DEBUGCTL_RESERVED != 0 {
        Err("guest IA32_DEBUGCTL: reserved bits must be 0 with load debug controls (SDM 27.3.1.1)")
    } else if debug && get(F::GUEST_DR7) >> 32 != 0 {
        Err("guest DR7: bits 63:32 must be 0 with load debug controls (SDM 27.3.1.1)")
    } else {
        Ok(())
    }
}

/// SDM 27.3.1.2 for CS, SS, DS, ES, FS and GS, in the three cases:
/// virtual-8086, unrestricted guest, and protected or 64-bit mode.
fn check_segments(g: &Guest) -> Result<(), &'static str> {
    let v86 = g.rflags & RF_VM != 0;
    let (cs, ss) = (g.segs[CS], g.segs[SS]);
    for (i, &s) in g.segs.iter().enumerate() {
        if v86 {
            if s.base != s.sel << 4 {
                return Err(each_seg!("virtual-8086 base must be the selector times 16")[i]);
            } else if s.limit != 0xFFFF {
                return Err(each_seg!("virtual-8086 limit must be 0xFFFF")[i]);
            } else if s.ar != 0xF3 {
                return Err(each_seg!("virtual-8086 access rights must be 0xF3")[i]);
            }
            continue;
        }
        if i >= FS && !canonical(s.base) {
            return Err(each_seg!("base must be canonical")[i]);
        }
        // Checks below apply to CS and to usable registers.
        // Bochs: also skips them for SS with RPL 0 when CS.L=1 in IA-32e mode.
        if i != CS && s.unusable() {
            continue;
        }
        if i < FS && s.base >> 32 != 0 {
            return Err(each_seg!("base bits 63:32 must be 0")[i]);
        } else if !s.s() {
            return Err(each_seg!("S (bit 4) must be 1")[i]);
        } else if !s.present() {
            return Err(each_seg!("P (bit 7) must be 1")[i]);
        } else if s.ar & AR_RESERVED != 0 {
            return Err(each_seg!("access-rights bits 11:8 and 31:17 are reserved")[i]);
        } else if !s.granularity_fits() {
            return Err(each_seg!("G (bit 15) does not fit the limit")[i]);
        }
        match i {
            CS => check_cs(g, cs, ss)?,
            SS if !matches!(s.typ(), 3 | 7) => return Err("guest SS: type must be 3 or 7 (SDM 27.3.1.2)"),
            SS => {}
            _ if s.typ() & 1 == 0 => return Err(each_seg!("type must be accessed (bit 0 set)")[i]),
            _ if s.typ() & 8 != 0 && s.typ() & 2 == 0 => return Err(each_seg!("a code segment must be readable")[i]),
            // Bochs: types 0-10 only, so a type-11 segment escapes this check.
            _ if !g.unrestricted && s.typ() <= 11 && s.dpl() < s.rpl() => {
                return Err(each_seg!("DPL must not be below the selector's RPL (types 0-11)")[i]);
            }
            _ => {}
        }
    }
    if v86 {
        Ok(())
    } else if !g.unrestricted && ss.rpl() != cs.rpl() {
        Err("guest SS: selector RPL must equal CS's RPL (SDM 27.3.1.2)")
    } else if !g.unrestricted && ss.dpl() != ss.rpl() {
        Err("guest SS: DPL must equal the selector's RPL (SDM 27.3.1.2)")
    } else if g.unrestricted && (g.cr0 & CR0_PE == 0 || cs.typ() == 3) && ss.dpl() != 0 {
        Err("guest SS: DPL must be 0 with CR0.PE=0 or a type-3 CS (SDM 27.3.1.2)")
    } else {
        Ok(())
    }
}

/// CS type, DPL and L/D (SDM 27.3.1.2). Bochs compares CS.DPL with CS.RPL,
/// the wording of older SDMs; the two differ only with unrestricted guest.
fn check_cs(g: &Guest, cs: Seg, ss: Seg) -> Result<(), &'static str> {
    let t = cs.typ();
    if !(matches!(t, 9 | 11 | 13 | 15) || t == 3 && g.unrestricted) {
        Err("guest CS: type must be 9, 11, 13 or 15 (or 3 with unrestricted guest) (SDM 27.3.1.2)")
    } else if t == 3 && cs.dpl() != 0 {
        Err("guest CS: a type-3 CS must have DPL 0 (SDM 27.3.1.2)")
    } else if matches!(t, 9 | 11) && cs.dpl() != ss.dpl() {
        Err("guest CS: non-conforming code needs DPL = SS.DPL (SDM 27.3.1.2)")
    } else if matches!(t, 13 | 15) && cs.dpl() > ss.dpl() {
        Err("guest CS: conforming code needs DPL <= SS.DPL (SDM 27.3.1.2)")
    } else if g.ia32e && cs.long() && cs.ar & (1 << 14) != 0 {
        Err("guest CS: D/B must be 0 when L=1 in IA-32e mode (SDM 27.3.1.2)")
    } else {
        Ok(())
    }
}

/// SDM 27.3.1.3, GDTR and IDTR.
fn check_descriptor_tables(get: &impl Fn(F) -> u64) -> Result<(), &'static str> {
    if !canonical(get(F::GUEST_GDTR_BASE)) {
        Err("guest GDTR: base must be canonical (SDM 27.3.1.3)")
    } else if !canonical(get(F::GUEST_IDTR_BASE)) {
        Err("guest IDTR: base must be canonical (SDM 27.3.1.3)")
    } else if get(F::GUEST_GDTR_LIMIT) >> 16 != 0 {
        Err("guest GDTR: limit bits 31:16 must be 0 (SDM 27.3.1.3)")
    } else if get(F::GUEST_IDTR_LIMIT) >> 16 != 0 {
        Err("guest IDTR: limit bits 31:16 must be 0 (SDM 27.3.1.3)")
    } else {
        Ok(())
    }
}

/// SDM 27.3.1.2 for LDTR (only if usable) and TR (always).
fn check_ldtr_tr(g: &Guest, get: &impl Fn(F) -> u64) -> Result<(), &'static str> {
    let ldtr = Seg::read(get, [F::GUEST_LDTR_SELECTOR, F::GUEST_LDTR_BASE, F::GUEST_LDTR_LIMIT, F::GUEST_LDTR_AR_BYTES]);
    let tr = Seg::read(get, [F::GUEST_TR_SELECTOR, F::GUEST_TR_BASE, F::GUEST_TR_LIMIT, F::GUEST_TR_AR_BYTES]);
    if !ldtr.unusable() {
        check_system_segment(ldtr, 0)?;
        if ldtr.typ() != 2 {
            return Err("guest LDTR: type must be 2 (LDT) (SDM 27.3.1.2)");
        }
    }
    if tr.unusable() {
        return Err("guest TR: must be usable (SDM 27.3.1.2)");
    }
    check_system_segment(tr, 1)?;
    if tr.typ() == 11 || tr.typ() == 3 && !g.ia32e {
        Ok(())
    } else {
        Err("guest TR: type must be 11 (busy TSS), or 3 outside IA-32e mode (SDM 27.3.1.2)")
    }
}

/// What LDTR (`i` = 0) and TR (`i` = 1) share. The SDM checks TR's base
/// even when TR is unusable, but an unusable TR fails anyway.
fn check_system_segment(s: Seg, i: usize) -> Result<(), &'static str> {
    macro_rules! text {
        ($what:literal) => {
            [concat!("guest LDTR: ", $what, " (SDM 27.3.1.2)"), concat!("guest TR: ", $what, " (SDM 27.3.1.2)")][i]
        };
    }
    if s.ti() {
        Err(text!("selector TI must be 0"))
    } else if s.s() {
        Err(text!("S (bit 4) must be 0"))
    } else if !s.present() {
        Err(text!("P (bit 7) must be 1"))
    } else if s.ar & AR_RESERVED != 0 {
        Err(text!("access-rights bits 11:8 and 31:17 are reserved"))
    } else if !s.granularity_fits() {
        Err(text!("G (bit 15) does not fit the limit"))
    } else if !canonical(s.base) {
        Err(text!("base must be canonical"))
    } else {
        Ok(())
    }
}

/// SDM 27.3.1.1, MSRs.
fn check_msrs(g: &Guest, get: &impl Fn(F) -> u64) -> Result<(), &'static str> {
    let pat = get(F::GUEST_IA32_PAT);
    let efer = get(F::GUEST_IA32_EFER);
    let (lme, lma) = (efer & EFER_LME != 0, efer & EFER_LMA != 0);
    let load_pat = g.entry & entry::LOAD_PAT != 0;
    let load_efer = g.entry & entry::LOAD_EFER != 0;
    if !canonical(get(F::GUEST_SYSENTER_ESP)) {
        Err("guest IA32_SYSENTER_ESP: must be canonical (SDM 27.3.1.1)")
    } else if !canonical(get(F::GUEST_SYSENTER_EIP)) {
        Err("guest IA32_SYSENTER_EIP: must be canonical (SDM 27.3.1.1)")
    } else if load_pat && !crate::nested::pat_valid(pat) {
        Err("guest IA32_PAT: every byte must be 0, 1, 4, 5, 6 or 7 with load IA32_PAT (SDM 27.3.1.1)")
    } else if load_efer && efer & EFER_RESERVED != 0 {
        Err("guest IA32_EFER: reserved bits must be 0 with load IA32_EFER (SDM 27.3.1.1)")
    } else if load_efer && lma != g.ia32e {
        Err("guest IA32_EFER: LMA must equal the IA-32e mode guest control (SDM 27.3.1.1)")
    } else if load_efer && g.cr0 & CR0_PG != 0 && lme != lma {
        Err("guest IA32_EFER: LME must equal LMA when CR0.PG=1 (SDM 27.3.1.1)")
    } else {
        Ok(())
    }
}

/// SDM 27.3.1.4, RIP.
fn check_rip(g: &Guest, get: &impl Fn(F) -> u64) -> Result<(), &'static str> {
    let rip = get(F::GUEST_RIP);
    if !(g.ia32e && g.segs[CS].long()) {
        if rip >> 32 != 0 {
            return Err("guest RIP: bits 63:32 must be 0 outside 64-bit mode (SDM 27.3.1.4)");
        }
    } else if !canonical(rip) {
        // Bochs: does not check this; the guest then faults on its first fetch.
        return Err("guest RIP: must be canonical in 64-bit mode (SDM 27.3.1.4)");
    }
    Ok(())
}

/// SDM 27.3.1.5, non-register state: the link pointer first, as in Bochs.
fn check_non_register(
    g: &Guest,
    get: &impl Fn(F) -> u64,
    l1_misc: u64,
    link_region_ok: impl Fn(u64) -> bool,
) -> Result<(), GuestStateError> {
    let err = |check| Err(GuestStateError { check, qualification: 0 });
    let link = get(F::VMCS_LINK_POINTER);
    if link != u64::MAX && (link & 0xFFF != 0 || !link_region_ok(link)) {
        return Err(GuestStateError {
            check: "VMCS link pointer: not all ones, and not an aligned vmcs12 region (SDM 27.3.1.5)",
            qualification: 4,
        });
    }
    let pending = get(F::GUEST_PENDING_DBG_EXCEPTIONS);
    let activity = get(F::GUEST_ACTIVITY_STATE);
    let intr = get(F::GUEST_INTERRUPTIBILITY_INFO);
    let info = get(F::VM_ENTRY_INTR_INFO_FIELD);
    let (injecting, kind, vector) = (info & (1 << 31) != 0, (info >> 8) & 7, info & 0xFF);
    let (nmi, mc, db) = (kind == 2, kind == 3 && vector == 18, kind == 3 && vector == 1);
    // Bit 16 (RTM) counts as reserved: the Bochs models have no RTM.
    // Bochs: checks only bits 31:0.
    if pending & !0x500F != 0 {
        return err("guest pending debug exceptions: bits 11:4, 13 and 63:15 must be 0 (SDM 27.3.1.5)");
    }
    // 0-3 as Bochs accepts; nvmx's IA32_VMX_MISC offers L1 only HLT, which by
    // the SDM would make 2 (shutdown) and 3 (wait-for-SIPI) fail too.
    if activity > WAIT_FOR_SIPI {
        return err("guest activity state: must be 0-3 (SDM 27.3.1.5)");
    } else if activity != ACTIVE && (l1_misc >> (5 + activity)) & 1 == 0 {
        // Bochs: accepts states its IA32_VMX_MISC does not list.
        return err("guest activity state: not one IA32_VMX_MISC bits 8:6 offer (SDM 27.3.1.5)");
    } else if activity == HLT && g.segs[SS].dpl() != 0 {
        return err("guest activity state: HLT requires SS.DPL=0 (SDM 27.3.1.5)");
    }
    // Bit 4 (enclave interruption) needs SGX, which the Bochs models lack.
    if intr & !0xF != 0 {
        return err("guest interruptibility state: bits 31:4 must be 0 (SDM 27.3.1.5)");
    } else if intr & (BLOCK_STI | BLOCK_MOV_SS) != 0 && activity != ACTIVE {
        return err("guest activity state: must be active with blocking by STI or MOV SS (SDM 27.3.1.5)");
    } else if intr & BLOCK_STI != 0 && intr & BLOCK_MOV_SS != 0 {
        return err("guest interruptibility state: blocking by STI and by MOV SS both set (SDM 27.3.1.5)");
    } else if intr & BLOCK_STI != 0 && g.rflags & RF_IF == 0 {
        return err("guest interruptibility state: blocking by STI requires RFLAGS.IF=1 (SDM 27.3.1.5)");
    }
    if injecting {
        if kind == 0 && g.rflags & RF_IF == 0 {
            return err("guest RFLAGS: IF must be 1 to inject an external interrupt (SDM 27.3.1.4)");
        } else if kind == 0 && intr & (BLOCK_STI | BLOCK_MOV_SS) != 0 {
            return err("guest interruptibility state: blocking by STI or MOV SS while injecting an external interrupt (SDM 27.3.1.5)");
        } else if nmi && intr & BLOCK_MOV_SS != 0 {
            return err("guest interruptibility state: blocking by MOV SS while injecting an NMI (SDM 27.3.1.5)");
        } else if nmi && intr & BLOCK_STI != 0 {
            // Optional in the SDM; Bochs makes it, but with qualification 0.
            return Err(GuestStateError {
                check: "guest interruptibility state: blocking by STI while injecting an NMI (SDM 27.3.1.5, 27.8)",
                qualification: 3,
            });
        }
        // Bochs: no HLT rule; in shutdown it accepts any type with vector 18.
        let allowed = match activity {
            HLT => kind == 0 || nmi || db || mc || (kind == 7 && vector == 0),
            SHUTDOWN => nmi || mc,
            WAIT_FOR_SIPI => false,
            _ => true,
        };
        if !allowed {
            return err("guest activity state: blocks the event being injected (SDM 27.3.1.5)");
        }
    }
    if intr & BLOCK_SMI != 0 {
        return err("guest interruptibility state: blocking by SMI outside SMM (SDM 27.3.1.5)");
    }
    // Bochs: no BS check.
    if intr & (BLOCK_STI | BLOCK_MOV_SS) != 0 || activity == HLT {
        let single_step = g.rflags & RF_TF != 0 && get(F::GUEST_IA32_DEBUGCTL) & 2 == 0;
        if single_step != (pending & (1 << 14) != 0) {
            return err("guest pending debug exceptions: BS must be 1 exactly when RFLAGS.TF=1 and DEBUGCTL.BTF=0 (SDM 27.3.1.5)");
        }
    }
    Ok(())
}

/// Whether the SDM's segment checks fail on SS (the ones Bochs skips for
/// SS with RPL 0 under a 64-bit CS).
fn ss_check_fails(_get: &impl Fn(F) -> u64, entry: u32, ia32e: bool, unrestricted: bool, cr0: u64, rflags: u64, segs: [Seg; 6]) -> bool {
    let g = Guest { entry, ia32e, unrestricted, cr0, rflags, segs };
    check_segments(&g).is_err_and(|e| e.starts_with("guest SS"))
}

/// Where Bochs 2.7's VM-entry checks depart from the SDM (each "Bochs:" note
/// in this file): `Some(what)` when the guest state in `get` is one on which
/// the two may answer differently, so that a run on Bochs is no reference
/// for it. The fuzz L1 asks this before every VM entry and leaves out exactly
/// those entries, nothing else.
pub fn bochs_departure(get: impl Fn(F) -> u64) -> Option<&'static str> {
    let entry = get(F::VM_ENTRY_CONTROLS) as u32;
    let proc2 = if get(F::CPU_BASED_VM_EXEC_CONTROL) as u32 & proc1::SECONDARY_CONTROLS != 0 {
        get(F::SECONDARY_VM_EXEC_CONTROL) as u32
    } else {
        0
    };
    let ia32e = entry & entry::IA32E_MODE_GUEST != 0;
    let unrestricted = proc2 & proc2::UNRESTRICTED_GUEST != 0;
    let (cr0, rflags) = (get(F::GUEST_CR0), get(F::GUEST_RFLAGS));
    let segs = SEGS.map(|f| Seg::read(&get, f));
    let (cs, ss) = (segs[CS], segs[SS]);
    let (intr, activity, pending) =
        (get(F::GUEST_INTERRUPTIBILITY_INFO), get(F::GUEST_ACTIVITY_STATE) & 0xFFFF_FFFF, get(F::GUEST_PENDING_DBG_EXCEPTIONS));
    let info = get(F::VM_ENTRY_INTR_INFO_FIELD) & 0xFFFF_FFFF;
    let injecting_nmi = info & (1 << 31) != 0 && (info >> 8) & 7 == 2;
    let single_step = rflags & RF_TF != 0 && get(F::GUEST_IA32_DEBUGCTL) & 2 == 0;
    if rflags & RF_VM != 0 && cr0 & CR0_PE == 0 {
        Some("RFLAGS.VM with CR0.PE=0 (Bochs: virtual-8086)")
    } else if ia32e && unrestricted && cr0 & CR0_PG == 0 {
        Some("IA-32e mode guest with CR0.PG=0 (Bochs: no PG check)")
    } else if entry & entry::LOAD_DEBUG_CONTROLS != 0 && get(F::GUEST_IA32_DEBUGCTL) & DEBUGCTL_RESERVED != 0 {
        Some("reserved DEBUGCTL bits (Bochs: not checked)")
    } else if ia32e && cs.long() && ss.rpl() == 0 && !ss.unusable() && ss_check_fails(&get, entry, ia32e, unrestricted, cr0, rflags, segs) {
        Some("a bad SS with RPL 0 under a 64-bit CS (Bochs: SS checks skipped)")
    } else if !unrestricted && segs.iter().any(|s| !s.unusable() && s.typ() == 11 && s.dpl() < s.rpl()) {
        Some("a type-11 segment with DPL < RPL (Bochs: types 0-10 only)")
    } else if unrestricted && (cs.dpl() == cs.rpl()) != (cs.dpl() == ss.dpl()) {
        Some("CS.DPL against CS.RPL or SS.DPL with unrestricted guest (Bochs: CS.RPL)")
    } else if ia32e && cs.long() && !canonical(get(F::GUEST_RIP)) {
        Some("a non-canonical RIP in 64-bit mode (Bochs: not checked)")
    } else if pending >> 32 != 0 {
        Some("pending debug exceptions bits 63:32 (Bochs: bits 31:0 only)")
    } else if matches!(activity, SHUTDOWN | WAIT_FOR_SIPI) {
        Some("activity state shutdown or wait-for-SIPI (Bochs: not as IA32_VMX_MISC lists)")
    } else if activity == HLT && info & (1 << 31) != 0 {
        Some("event injection into HLT (Bochs: no HLT rule)")
    } else if injecting_nmi && intr & BLOCK_STI != 0 {
        Some("NMI injection with STI blocking (Bochs: qualification 0, not 3)")
    } else if (intr & (BLOCK_STI | BLOCK_MOV_SS) != 0 || activity == HLT) && single_step != (pending & (1 << 14) != 0) {
        Some("BS against RFLAGS.TF with STI/MOV-SS blocking or HLT (Bochs: no BS check)")
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    const CR0_FIXED: (u64, u64) = (0x8000_0021, 0xFFFF_FFFF);
    const CR4_FIXED: (u64, u64) = (0x2000, 0x3F_FFFF);

    #[test]
    fn pdptes_of_a_pae_guest() {
        let mem: HashMap<u64, u64> = HashMap::from([(0x5000, 0x7001), (0x5008, 0), (0x5010, 0x1E6), (0x5018, 0x8001), (0x5020, 0x9005), (0x5028, 0), (0x5030, 0), (0x5038, 0)]);
        let read = |a: u64| mem.get(&a).copied();
        let mut v = good_64bit();
        // A 64-bit guest, a guest without paging or without PAE: nothing loaded.
        assert_eq!(check_pdptes(|f| *v.get(&f).unwrap_or(&0), read, 39), Ok(None));
        v.insert(F::VM_ENTRY_CONTROLS, 0);
        v.insert(F::GUEST_CR3, 0x5000 | 0x18);
        v.insert(F::GUEST_CR4, 0x2000);
        assert_eq!(check_pdptes(|f| *v.get(&f).unwrap_or(&0), read, 39), Ok(None));
        v.insert(F::GUEST_CR4, 0x2020);
        v.insert(F::GUEST_CR0, 0x31);
        assert_eq!(check_pdptes(|f| *v.get(&f).unwrap_or(&0), read, 39), Ok(None));
        v.insert(F::GUEST_CR0, 0x8000_0031);
        // With EPT: the VMCS fields (not present with reserved bits: fine).
        v.extend([(F::GUEST_PDPTR0, 0x1001), (F::GUEST_PDPTR1, 0x1E6), (F::GUEST_PDPTR2, 0), (F::GUEST_PDPTR3, 0x2001)]);
        assert_eq!(check_pdptes(|f| *v.get(&f).unwrap_or(&0), read, 39), Ok(Some([0x1001, 0x1E6, 0, 0x2001])));
        for bit in [1, 2, 5, 6, 7, 8, 39, 51, 52, 63] {
            v.insert(F::GUEST_PDPTR3, 0x2001 | 1 << bit);
            let e = check_pdptes(|f| *v.get(&f).unwrap_or(&0), read, 39).unwrap_err();
            assert_eq!(e.qualification, 2, "bit {bit}");
        }
        // Bits 3, 4 (PWT, PCD), 11:9 and below MAXPHYADDR are allowed.
        v.insert(F::GUEST_PDPTR3, 0x7F_FFFF_FE19);
        assert!(check_pdptes(|f| *v.get(&f).unwrap_or(&0), read, 39).is_ok());
        // Without EPT: the entries at CR3[31:5] (CR3 bits 4:3 ignored), not the fields.
        v.insert(F::SECONDARY_VM_EXEC_CONTROL, 0);
        assert_eq!(check_pdptes(|f| *v.get(&f).unwrap_or(&0), read, 39), Ok(Some([0x7001, 0, 0x1E6, 0x8001])));
        v.insert(F::SECONDARY_VM_EXEC_CONTROL, u64::from(proc2::ENABLE_EPT));
        v.insert(F::CPU_BASED_VM_EXEC_CONTROL, 0);
        assert_eq!(check_pdptes(|f| *v.get(&f).unwrap_or(&0), read, 39), Ok(Some([0x7001, 0, 0x1E6, 0x8001])));
        // A present entry with bit 2 set in memory; memory that is not there.
        v.insert(F::GUEST_CR3, 0x5020);
        assert_eq!(check_pdptes(|f| *v.get(&f).unwrap_or(&0), read, 39).unwrap_err().qualification, 2);
        v.insert(F::GUEST_CR3, 0x5000);
        let mem2: HashMap<u64, u64> = HashMap::from([(0x5000, 0x7005)]);
        assert!(check_pdptes(|f| *v.get(&f).unwrap_or(&0), |a| mem2.get(&a).copied(), 39).is_err());
        assert!(check_pdptes(|f| *v.get(&f).unwrap_or(&0), |a| Some(mem2.get(&a).copied().unwrap_or(0)), 39).is_err());
        let mem3: HashMap<u64, u64> = HashMap::from([(0x5000, 0x7001)]);
        assert!(check_pdptes(|f| *v.get(&f).unwrap_or(&0), |a| Some(mem3.get(&a).copied().unwrap_or(0)), 39).is_ok());
        assert!(check_pdptes(|f| *v.get(&f).unwrap_or(&0), |_| None, 39).is_err());
    }

    /// The 64-bit guest state the built-in L1 gives its L2 (guest/src/forum.rs
    /// `setup_vmcs`), with typical CR values and load IA32_EFER.
    fn good_64bit() -> HashMap<F, u64> {
        let mut v = HashMap::from([
            (F::VM_ENTRY_CONTROLS, u64::from(entry::IA32E_MODE_GUEST | entry::LOAD_EFER)),
            (F::CPU_BASED_VM_EXEC_CONTROL, u64::from(proc1::SECONDARY_CONTROLS)),
            (F::SECONDARY_VM_EXEC_CONTROL, u64::from(proc2::ENABLE_EPT | proc2::ENABLE_VPID)),
            (F::GUEST_CR0, 0x8001_0031),
            (F::GUEST_CR3, 0x10_0000),
            (F::GUEST_CR4, 0x2020),
            (F::GUEST_IA32_EFER, EFER_LME | EFER_LMA),
            (F::GUEST_CS_SELECTOR, 0x08),
            (F::GUEST_CS_LIMIT, 0xFFFF_FFFF),
            (F::GUEST_CS_AR_BYTES, 0xA09B),
            (F::GUEST_TR_SELECTOR, 0x18),
            (F::GUEST_TR_BASE, 0x10_2000),
            (F::GUEST_TR_LIMIT, 103),
            (F::GUEST_TR_AR_BYTES, 0x8B),
            (F::GUEST_LDTR_AR_BYTES, 1 << 16),
            (F::GUEST_GDTR_BASE, 0x10_3000),
            (F::GUEST_GDTR_LIMIT, 39),
            (F::GUEST_IDTR_BASE, 0x10_4000),
            (F::GUEST_IDTR_LIMIT, 32 * 16 - 1),
            (F::GUEST_DR7, 0x400),
            (F::GUEST_RFLAGS, 0x2),
            (F::GUEST_RIP, 0x10_1000),
            (F::VMCS_LINK_POINTER, u64::MAX),
        ]);
        for [sel, _, limit, ar] in [SEGS[0], SEGS[2], SEGS[3], SEGS[4], SEGS[5]] {
            v.extend([(sel, 0x10), (limit, 0xFFFF_FFFF), (ar, 0xC093)]);
        }
        v
    }

    /// Unrestricted guest at the reset vector: real mode, paging off.
    fn good_real_mode() -> HashMap<F, u64> {
        let mut v = HashMap::from([
            (F::CPU_BASED_VM_EXEC_CONTROL, u64::from(proc1::SECONDARY_CONTROLS)),
            (F::SECONDARY_VM_EXEC_CONTROL, u64::from(proc2::ENABLE_EPT | proc2::UNRESTRICTED_GUEST)),
            (F::GUEST_CR0, 0x30),
            (F::GUEST_CR4, 0x2000),
            (F::GUEST_TR_LIMIT, 0xFFFF),
            (F::GUEST_TR_AR_BYTES, 0x8B),
            (F::GUEST_LDTR_AR_BYTES, 1 << 16),
            (F::GUEST_GDTR_LIMIT, 0xFFFF),
            (F::GUEST_IDTR_LIMIT, 0x3FF),
            (F::GUEST_RFLAGS, 0x2),
            (F::GUEST_RIP, 0xFFF0),
            (F::VMCS_LINK_POINTER, u64::MAX),
        ]);
        for [_, _, limit, ar] in SEGS {
            v.extend([(limit, 0xFFFF), (ar, 0x93)]);
        }
        v.extend([(F::GUEST_CS_SELECTOR, 0xF000), (F::GUEST_CS_BASE, 0xF_0000), (F::GUEST_CS_AR_BYTES, 0x9B)]);
        v
    }

    fn check(v: &HashMap<F, u64>) -> Result<(), GuestStateError> {
        // A fake L1 with one valid vmcs12 region at 0x30_0000.
        check_guest_state(|f| v.get(&f).copied().unwrap_or(0), CR0_FIXED, CR4_FIXED, 40, 0x1C0, |p| p == 0x30_0000)
    }

    /// `base` with `changes` applied fails `check` with qualification 0.
    fn fails(base: fn() -> HashMap<F, u64>, changes: &[(F, u64)], check_text: &'static str) {
        let mut v = base();
        v.extend(changes.iter().copied());
        assert_eq!(check(&v), Err(GuestStateError { check: check_text, qualification: 0 }), "{changes:x?}");
    }

    #[test]
    fn the_built_in_l1s_guest_and_a_real_mode_guest_pass() {
        assert_eq!(check(&good_64bit()), Ok(()));
        assert_eq!(check(&good_real_mode()), Ok(()));
    }

    #[test]
    fn rflags() {
        fails(good_64bit, &[(F::GUEST_RFLAGS, 0)], "guest RFLAGS: reserved bit 1 must be 1 (SDM 27.3.1.4)");
        fails(good_64bit, &[(F::GUEST_RFLAGS, 0x8002)], "guest RFLAGS: reserved bits 63:22, 15, 5 and 3 must be 0 (SDM 27.3.1.4)");
        fails(good_64bit, &[(F::GUEST_RFLAGS, RF_VM | 2)], "guest RFLAGS: VM must be 0 in IA-32e mode or with CR0.PE=0 (SDM 27.3.1.4)");
        fails(good_real_mode, &[(F::GUEST_RFLAGS, RF_VM | 2)], "guest RFLAGS: VM must be 0 in IA-32e mode or with CR0.PE=0 (SDM 27.3.1.4)");
    }

    #[test]
    fn control_registers() {
        fails(good_64bit, &[(F::GUEST_CR0, 0x8001_0011)], "guest CR0: a bit IA32_VMX_CR0_FIXED0 fixes to 1 is 0 (SDM 27.3.1.1)");
        fails(good_64bit, &[(F::GUEST_CR0, 0x1_8001_0031)], "guest CR0: a bit IA32_VMX_CR0_FIXED1 fixes to 0 is 1 (SDM 27.3.1.1)");
        fails(good_real_mode, &[(F::GUEST_CR0, 0x8000_0030)], "guest CR0: PG=1 requires PE=1 (SDM 27.3.1.1)");
        fails(good_64bit, &[(F::GUEST_CR3, 1 << 40)], "guest CR3: bits beyond the physical-address width must be 0 (SDM 27.3.1.1)");
        fails(good_64bit, &[(F::GUEST_CR4, 0x20)], "guest CR4: a bit IA32_VMX_CR4_FIXED0 fixes to 1 is 0 (SDM 27.3.1.1)");
        fails(good_64bit, &[(F::GUEST_CR4, 0x40_2020)], "guest CR4: a bit IA32_VMX_CR4_FIXED1 fixes to 0 is 1 (SDM 27.3.1.1)");
        fails(good_64bit, &[(F::GUEST_CR4, 0x2000)], "guest CR4: PAE must be 1 for an IA-32e mode guest (SDM 27.3.1.1)");
        fails(good_real_mode, &[(F::GUEST_CR4, 0x2_2000)], "guest CR4: PCIDE must be 0 outside IA-32e mode (SDM 27.3.1.1)");
        let debug = u64::from(entry::IA32E_MODE_GUEST | entry::LOAD_EFER | entry::LOAD_DEBUG_CONTROLS);
        fails(good_64bit, &[(F::VM_ENTRY_CONTROLS, debug), (F::GUEST_IA32_DEBUGCTL, 1 << 3)], "guest IA32_DEBUGCTL: reserved bits must be 0 with load debug controls (SDM 27.3.1.1)");
        fails(good_64bit, &[(F::VM_ENTRY_CONTROLS, debug), (F::GUEST_DR7, 1 << 32 | 0x400)], "guest DR7: bits 63:32 must be 0 with load debug controls (SDM 27.3.1.1)");
        // Unrestricted guest lifts PE and PG from FIXED0, not IA-32e's need for PG.
        let mut v = good_real_mode();
        v.extend([(F::VM_ENTRY_CONTROLS, u64::from(entry::IA32E_MODE_GUEST)), (F::GUEST_CR0, 0x31), (F::GUEST_CR4, 0x2020)]);
        assert_eq!(check(&v).unwrap_err().check, "guest CR0: PG must be 1 for an IA-32e mode guest (SDM 27.3.1.1)");
        let v = HashMap::from([(F::GUEST_CR0, 0x8000_0031), (F::GUEST_CR4, 0x80_2020), (F::GUEST_RFLAGS, 2)]);
        let r = check_guest_state(|f| v.get(&f).copied().unwrap_or(0), CR0_FIXED, (0x2000, 0xFF_FFFF), 40, 0x1C0, |_| false);
        assert_eq!(r.unwrap_err().check, "guest CR4: CET=1 requires CR0.WP=1 (SDM 27.3.1.1)");
    }

    #[test]
    fn segments() {
        fails(good_64bit, &[(F::GUEST_SS_SELECTOR, 0x13)], "guest SS: selector RPL must equal CS's RPL (SDM 27.3.1.2)");
        fails(good_64bit, &[(F::GUEST_CS_AR_BYTES, 0xE09B)], "guest CS: D/B must be 0 when L=1 in IA-32e mode (SDM 27.3.1.2)");
        fails(good_64bit, &[(F::GUEST_CS_AR_BYTES, 0xA093)], "guest CS: type must be 9, 11, 13 or 15 (or 3 with unrestricted guest) (SDM 27.3.1.2)");
        fails(good_64bit, &[(F::GUEST_CS_AR_BYTES, 0xA0FB)], "guest CS: non-conforming code needs DPL = SS.DPL (SDM 27.3.1.2)");
        fails(good_64bit, &[(F::GUEST_DS_AR_BYTES, 0xC013)], "guest DS: P (bit 7) must be 1 (SDM 27.3.1.2)");
        fails(good_64bit, &[(F::GUEST_ES_AR_BYTES, 0xC193)], "guest ES: access-rights bits 11:8 and 31:17 are reserved (SDM 27.3.1.2)");
        fails(good_64bit, &[(F::GUEST_GS_LIMIT, 0xFFFF_F000)], "guest GS: G (bit 15) does not fit the limit (SDM 27.3.1.2)");
        fails(good_64bit, &[(F::GUEST_FS_BASE, 1 << 47)], "guest FS: base must be canonical (SDM 27.3.1.2)");
        fails(good_64bit, &[(F::GUEST_DS_BASE, 1 << 32)], "guest DS: base bits 63:32 must be 0 (SDM 27.3.1.2)");
        // A type-11 data register with DPL 0 < RPL 3 (Bochs lets it pass).
        fails(good_64bit, &[(F::GUEST_DS_SELECTOR, 0x13), (F::GUEST_DS_AR_BYTES, 0xC09B)], "guest DS: DPL must not be below the selector's RPL (types 0-11) (SDM 27.3.1.2)");
        fails(good_real_mode, &[(F::GUEST_SS_AR_BYTES, 0xF3), (F::GUEST_CS_AR_BYTES, 0xFB)], "guest SS: DPL must be 0 with CR0.PE=0 or a type-3 CS (SDM 27.3.1.2)");
        // Unusable data registers are skipped, except for the FS/GS base.
        let mut v = good_64bit();
        v.extend([(F::GUEST_DS_AR_BYTES, 1 << 16), (F::GUEST_DS_BASE, 1 << 40), (F::GUEST_SS_AR_BYTES, 1 << 16)]);
        assert_eq!(check(&v), Ok(()));
        fails(good_64bit, &[(F::GUEST_GS_AR_BYTES, 1 << 16), (F::GUEST_GS_BASE, 1 << 63)], "guest GS: base must be canonical (SDM 27.3.1.2)");
        fails(good_64bit, &[(F::GUEST_TR_AR_BYTES, 0x83)], "guest TR: type must be 11 (busy TSS), or 3 outside IA-32e mode (SDM 27.3.1.2)");
        fails(good_64bit, &[(F::GUEST_TR_AR_BYTES, 1 << 16 | 0x8B)], "guest TR: must be usable (SDM 27.3.1.2)");
        fails(good_64bit, &[(F::GUEST_LDTR_AR_BYTES, 0x82), (F::GUEST_LDTR_SELECTOR, 0x24)], "guest LDTR: selector TI must be 0 (SDM 27.3.1.2)");
        fails(good_64bit, &[(F::GUEST_LDTR_AR_BYTES, 0x80)], "guest LDTR: type must be 2 (LDT) (SDM 27.3.1.2)");
    }

    #[test]
    fn virtual_8086_segments() {
        let mut v = good_64bit();
        v.extend([(F::VM_ENTRY_CONTROLS, 0), (F::GUEST_CR0, 0x8000_0031), (F::GUEST_CR4, 0x2000)]);
        v.extend([(F::GUEST_RFLAGS, RF_VM | 2), (F::GUEST_RIP, 0x100)]);
        for [sel, base, limit, ar] in SEGS {
            v.extend([(sel, 0x1234), (base, 0x12340), (limit, 0xFFFF), (ar, 0xF3)]);
        }
        assert_eq!(check(&v), Ok(()));
        v.insert(F::GUEST_SS_BASE, 0);
        assert_eq!(check(&v).unwrap_err().check, "guest SS: virtual-8086 base must be the selector times 16 (SDM 27.3.1.2)");
    }

    #[test]
    fn descriptor_tables_msrs_and_rip() {
        fails(good_64bit, &[(F::GUEST_GDTR_LIMIT, 0x1_0000)], "guest GDTR: limit bits 31:16 must be 0 (SDM 27.3.1.3)");
        fails(good_64bit, &[(F::GUEST_IDTR_BASE, 0x8000_0000_0000)], "guest IDTR: base must be canonical (SDM 27.3.1.3)");
        fails(good_64bit, &[(F::GUEST_SYSENTER_EIP, 1 << 50)], "guest IA32_SYSENTER_EIP: must be canonical (SDM 27.3.1.1)");
        let pat = u64::from(entry::IA32E_MODE_GUEST | entry::LOAD_PAT);
        fails(good_64bit, &[(F::VM_ENTRY_CONTROLS, pat), (F::GUEST_IA32_PAT, 0x0007_0406_0002_0106)], "guest IA32_PAT: every byte must be 0, 1, 4, 5, 6 or 7 with load IA32_PAT (SDM 27.3.1.1)");
        fails(good_64bit, &[(F::GUEST_IA32_EFER, EFER_LME)], "guest IA32_EFER: LMA must equal the IA-32e mode guest control (SDM 27.3.1.1)");
        fails(good_64bit, &[(F::GUEST_IA32_EFER, EFER_LMA)], "guest IA32_EFER: LME must equal LMA when CR0.PG=1 (SDM 27.3.1.1)");
        fails(good_64bit, &[(F::GUEST_IA32_EFER, EFER_LME | EFER_LMA | 1 << 12)], "guest IA32_EFER: reserved bits must be 0 with load IA32_EFER (SDM 27.3.1.1)");
        fails(good_64bit, &[(F::GUEST_RIP, 0x8000_0000_0000)], "guest RIP: must be canonical in 64-bit mode (SDM 27.3.1.4)");
        // Compatibility mode (CS.L=0, D=1): RIP is 32 bits.
        fails(good_64bit, &[(F::GUEST_CS_AR_BYTES, 0xC09B), (F::GUEST_RIP, 1 << 32)], "guest RIP: bits 63:32 must be 0 outside 64-bit mode (SDM 27.3.1.4)");
    }

    #[test]
    fn non_register_state() {
        fails(good_64bit, &[(F::GUEST_ACTIVITY_STATE, 4)], "guest activity state: must be 0-3 (SDM 27.3.1.5)");
        let mut v = good_64bit();
        v.insert(F::GUEST_ACTIVITY_STATE, 2);
        let hlt_only = check_guest_state(|f| v.get(&f).copied().unwrap_or(0), CR0_FIXED, CR4_FIXED, 40, 1 << 6, |_| false);
        assert_eq!(hlt_only.unwrap_err().check, "guest activity state: not one IA32_VMX_MISC bits 8:6 offer (SDM 27.3.1.5)");
        fails(good_64bit, &[(F::GUEST_PENDING_DBG_EXCEPTIONS, 1 << 13)], "guest pending debug exceptions: bits 11:4, 13 and 63:15 must be 0 (SDM 27.3.1.5)");
        fails(good_64bit, &[(F::GUEST_INTERRUPTIBILITY_INFO, 1)], "guest interruptibility state: blocking by STI requires RFLAGS.IF=1 (SDM 27.3.1.5)");
        fails(good_64bit, &[(F::GUEST_INTERRUPTIBILITY_INFO, 3), (F::GUEST_RFLAGS, 0x202)], "guest interruptibility state: blocking by STI and by MOV SS both set (SDM 27.3.1.5)");
        fails(good_64bit, &[(F::GUEST_INTERRUPTIBILITY_INFO, 2), (F::GUEST_ACTIVITY_STATE, 1)], "guest activity state: must be active with blocking by STI or MOV SS (SDM 27.3.1.5)");
        fails(good_64bit, &[(F::GUEST_INTERRUPTIBILITY_INFO, 1 << 5)], "guest interruptibility state: bits 31:4 must be 0 (SDM 27.3.1.5)");
        fails(good_64bit, &[(F::GUEST_INTERRUPTIBILITY_INFO, 1 << 2)], "guest interruptibility state: blocking by SMI outside SMM (SDM 27.3.1.5)");
        let ext_int = (1 << 31) | 0x20;
        fails(good_64bit, &[(F::VM_ENTRY_INTR_INFO_FIELD, ext_int)], "guest RFLAGS: IF must be 1 to inject an external interrupt (SDM 27.3.1.4)");
        fails(good_64bit, &[(F::VM_ENTRY_INTR_INFO_FIELD, (1 << 31) | (3 << 8) | 13), (F::GUEST_ACTIVITY_STATE, 1)], "guest activity state: blocks the event being injected (SDM 27.3.1.5)");
        // Blocking by STI with TF=1 is a pending single step: BS must say so.
        fails(good_64bit, &[(F::GUEST_INTERRUPTIBILITY_INFO, 1), (F::GUEST_RFLAGS, 0x302)], "guest pending debug exceptions: BS must be 1 exactly when RFLAGS.TF=1 and DEBUGCTL.BTF=0 (SDM 27.3.1.5)");
        let mut v = good_64bit();
        v.extend([(F::GUEST_INTERRUPTIBILITY_INFO, 1), (F::GUEST_RFLAGS, 0x302), (F::GUEST_PENDING_DBG_EXCEPTIONS, 1 << 14)]);
        assert_eq!(check(&v), Ok(()));
        // NMI into STI blocking: qualification 3.
        v.extend([(F::VM_ENTRY_INTR_INFO_FIELD, (1 << 31) | (2 << 8) | 2), (F::GUEST_PENDING_DBG_EXCEPTIONS, 1 << 14)]);
        assert_eq!(check(&v).unwrap_err().qualification, 3);
    }

    #[test]
    fn link_pointer_fails_with_qualification_4_after_register_checks() {
        let link = "VMCS link pointer: not all ones, and not an aligned vmcs12 region (SDM 27.3.1.5)";
        let mut v = good_64bit();
        v.insert(F::VMCS_LINK_POINTER, 0x30_0000);
        assert_eq!(check(&v), Ok(()), "a valid region is accepted");
        v.insert(F::VMCS_LINK_POINTER, 0x30_0010);
        assert_eq!(check(&v), Err(GuestStateError { check: link, qualification: 4 }), "misaligned");
        v.insert(F::VMCS_LINK_POINTER, 0x20_0000);
        assert_eq!(check(&v), Err(GuestStateError { check: link, qualification: 4 }));
        // Wins over non-register failures, loses to register-state ones.
        v.insert(F::GUEST_ACTIVITY_STATE, 7);
        assert_eq!(check(&v).unwrap_err().qualification, 4);
        v.insert(F::GUEST_RIP, 1 << 60);
        assert_eq!(check(&v).unwrap_err().qualification, 0);
    }
    #[test]
    fn bochs_departures_are_flagged() {
        let v = good_64bit();
        assert_eq!(bochs_departure(|f| v.get(&f).copied().unwrap_or(0)), None, "the good state departs nowhere");
        for (changes, what) in [
            (vec![(F::GUEST_RIP, 0x8000_0000_0000_0000)], "non-canonical RIP"),
            (vec![(F::GUEST_PENDING_DBG_EXCEPTIONS, 1 << 40)], "pending bits 63:32"),
            (vec![(F::GUEST_ACTIVITY_STATE, 3)], "wait-for-SIPI"),
            (vec![(F::GUEST_INTERRUPTIBILITY_INFO, 1), (F::GUEST_RFLAGS, 0x102)], "BS"),
            (vec![(F::GUEST_INTERRUPTIBILITY_INFO, 1), (F::VM_ENTRY_INTR_INFO_FIELD, 0x8000_0202)], "NMI into STI blocking"),
        ] {
            let mut v = good_64bit();
            v.extend(changes);
            assert!(bochs_departure(|f| v.get(&f).copied().unwrap_or(0)).is_some(), "{what}");
        }
    }

    #[test]
    fn the_volatile_check_agrees_with_the_whole_one() {
        // Every failure reachable by changing only volatile fields (with
        // RFLAGS.VM unchanged) is reported alike by both.
        let cases: &[&[(F, u64)]] = &[
            &[(F::GUEST_RFLAGS, 0x8002)],
            &[(F::GUEST_RFLAGS, 0)],
            &[(F::GUEST_RIP, 0x8000_0000_0000)],
            &[(F::GUEST_INTERRUPTIBILITY_INFO, 1)],
            &[(F::GUEST_INTERRUPTIBILITY_INFO, 3), (F::GUEST_RFLAGS, 0x202)],
            &[(F::GUEST_ACTIVITY_STATE, 4)],
            &[(F::GUEST_PENDING_DBG_EXCEPTIONS, 1 << 13)],
            &[(F::GUEST_INTERRUPTIBILITY_INFO, 1), (F::GUEST_RFLAGS, 0x302)],
            &[(F::GUEST_RIP, 0x10_2000), (F::GUEST_RSP, 0x1234), (F::GUEST_RFLAGS, 0x246)],
        ];
        for changes in cases {
            let mut v = good_64bit();
            v.extend(changes.iter().copied());
            for (f, _) in changes.iter() {
                assert!(VOLATILE.contains(*f));
            }
            let get = |f: F| v.get(&f).copied().unwrap_or(0);
            let whole = check_guest_state(get, CR0_FIXED, CR4_FIXED, 40, 0x1C0, |p| p == 0x30_0000);
            let volatile = check_guest_state_volatile(get, 0x1C0, |p| p == 0x30_0000);
            assert_eq!(whole, volatile, "{changes:?}");
            let mut changed = crate::field::FieldSet::EMPTY;
            changes.iter().for_each(|(f, _)| changed.insert(*f));
            let narrowed = check_guest_state_changed(get, changed, 0x1C0, |p| p == 0x30_0000);
            assert_eq!(whole, narrowed, "{changes:?}");
        }
    }

    #[test]
    fn the_changed_check_runs_the_rip_check_alone() {
        // 64-bit, 32-bit (IA-32e mode guest with a 32-bit CS: compatibility
        // mode) and legacy guests, RIP alone changed (and RSP).
        let rips = [0x10_2000u64, 0x8000_0000_0000, 0xFFFF_8000_0000_0000, 1 << 32, 0xFFFF_FFFF];
        for rip in rips {
            for (cs_ar, ia32e) in [(0xA09Bu64, true), (0xC09B, true), (0xC09B, false)] {
                let mut v = good_64bit();
                v.insert(F::GUEST_CS_AR_BYTES, cs_ar);
                if !ia32e {
                    let e = v[&F::VM_ENTRY_CONTROLS] & !u64::from(entry::IA32E_MODE_GUEST);
                    v.insert(F::VM_ENTRY_CONTROLS, e);
                }
                let get = |f: F| v.get(&f).copied().unwrap_or(0);
                // The state before RIP changed must pass.
                if check_guest_state(get, CR0_FIXED, CR4_FIXED, 40, 0x1C0, |p| p == 0x30_0000).is_err() {
                    continue;
                }
                let mut after = v.clone();
                after.insert(F::GUEST_RIP, rip);
                after.insert(F::GUEST_RSP, rip ^ 0x55);
                let get = |f: F| after.get(&f).copied().unwrap_or(0);
                let whole = check_guest_state(get, CR0_FIXED, CR4_FIXED, 40, 0x1C0, |p| p == 0x30_0000);
                let changed = crate::field::FieldSet::of(&[F::GUEST_RIP, F::GUEST_RSP]);
                assert_eq!(whole, check_guest_state_changed(get, changed, 0x1C0, |p| p == 0x30_0000), "{rip:#x} {cs_ar:#x} {ia32e}");
                let rsp_only = crate::field::FieldSet::of(&[F::GUEST_RSP]);
                assert_eq!(Ok(()), check_guest_state_changed(get, rsp_only, 0x1C0, |p| p == 0x30_0000));
            }
        }
    }
}
