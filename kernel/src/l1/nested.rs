//! Nested VMX: L1's VMX instructions emulated, VMCS1-2 kept in L0, L2 run
//! on a merged VMCS0-2, L2 exits reflected to L1. KVM's vocabulary
//! (arch/x86/kvm/vmx/nested.c): `nested_vmx_succeed/fail*`,
//! `prepare_vmcs02`, `nested_vmx_l1_wants_exit`, `sync_vmcs02_to_vmcs12`,
//! `load_vmcs12_host_state`. SDM Vol. 3C chapter 32 gives each
//! instruction's operation; section numbers are cited where implemented.
//!
//! VMCS1-2 ("vmcs12") is nvmx's own format: a 4 KiB region in L1 memory with
//! our revision id, then every field of the one field table at
//! `16 + index * 8`. L0 caches the current vmcs12 on VMPTRLD and writes it
//! back on VMCLEAR and when another one is made current, so L1 writing the
//! region behind L0's back changes nothing (as with a real CPU's VMCS cache).

use alloc::boxed::Box;
use alloc::vec;

use nvmx_vmx::caps::VmxCaps;
use nvmx_vmx::controls::{entry, exit as exitc, pin, proc1, proc2};
use nvmx_vmx::exit::InstructionInfo;
use nvmx_vmx::field::{self, ALL, Access, EncodingError, Field as F, FieldSet, Group, Kind, Width};
use nvmx_vmx::walk::{self, GuestMemory};

use super::shadow::Policy;
use super::{Handled, Vcpu};
use crate::stats::{Phase, Slow};
use crate::vmx::insn;
use crate::vmx::run::{vmread, vmread_known as rd, vmwrite, vmwrite_known as wr};

use nvmx_vmx::nested::VMCS12_REVISION;
/// Offset of field `f` in a vmcs12 region.
const FIELDS_OFFSET: u64 = 16;
const RFLAGS_ARITH: u64 = 0x8D5; // CF PF AF ZF SF OF
const CF: u64 = 1;
/// Basic exit reasons of VM-entry failures (SDM Appendix C).
const EXIT_REASON_INVALID_STATE: u32 = 33;
const EXIT_REASON_MSR_LOADING: u32 = 34;
/// MSR-list entries processed at most: 512 * (IA32_VMX_MISC[27:25] + 1),
/// the recommended maximum nvmx advertises (SDM A.6).
const MAX_MSR_LIST: u64 = 512;
const ZF: u64 = 1 << 6;

/// The nested state of one L1 vCPU.
pub struct Nested {
    /// VMX is exposed to this L1 (CPUID.1:ECX.VMX = 1).
    pub enabled: bool,
    /// Guest-physical address of the VMXON region while in VMX operation.
    vmxon: Option<u64>,
    /// The current vmcs12 and its cached fields.
    current: Option<Vmcs12>,
    /// L2 is running (VMCS0-2 current) rather than L1.
    pub in_l2: bool,
    /// VMCS0-1 and VMCS0-2 (host-physical).
    pub vmcs01: u64,
    vmcs02: u64,
    launched02: bool,
    /// The vmcs12 (guest-physical address) whose guest state VMCS0-2
    /// holds, apart from its `stale02` fields; `None`: rewrite all.
    vmcs02_holds: Option<u64>,
    /// The PDPTEs the entry being prepared loaded from L1's memory at CR3
    /// for a PAE L2 of an L1 without EPT (SDM 27.3.1.6): read once,
    /// checked, and given to VMCS0-2 (which runs L2 with EPT0-1).
    pdptes02: Option<[u64; 4]>,
    /// L1's VPID for the L2 that last ran on VMCS0-2 (see prepare_vmcs02).
    last_vpid12: Option<u64>,
    /// The physical-address width L1 sees: the CPU's (CPUID passes it
    /// through), read once for the VM-entry and INVEPT checks.
    phys_bits: u32,
    /// Shadow EPT0-2 when L1 uses EPT for L2.
    ept02: ShadowEpt,
    /// The VM-entry check that failed last (for `vmcs 12`).
    last_check: Option<&'static str>,
    /// How the VMX instruction just emulated ended, when not VMsucceed
    /// (the error, the check that tripped, the exception): for `trace`.
    pub note: Option<&'static str>,
    /// VMCS shadowing for L1's VMREAD/VMWRITE.
    pub shadow: super::shadow::Shadow,
    /// Frames allocated while running (VMCS0-2).
    owned: crate::mm::frames::Owned,
    /// Fields this CPU's VMCS does not have (VMREAD of the fresh VMCS0-2
    /// gave VMfailValid(12)): the only VMX errors of L0's own VMREADs and
    /// VMWRITEs it may pass over.
    absent: FieldSet,
    /// The last reflected exit left guest fields (`exit_sync`'s lazy set)
    /// in VMCS0-2 that vmcs12's cache does not have yet (KVM's
    /// need_sync_vmcs02_to_vmcs12_rare); `sync_rare` copies them.
    rare_pending: bool,
    /// The guest-field split of the last reflected exit, for its exit controls
    /// and PAE-with-EPT state.
    exit_sync: Option<(u32, bool, nvmx_vmx::nested::ExitSync)>,
    /// The field array of the last vmcs12 that stopped being current, for
    /// the next VMPTRLD (no allocation on L1's VMCS switches).
    spare: Option<Box<[u64]>>,
    /// The EPT pointer VMCS0-2 holds.
    eptp02: u64,
    /// IA32_VMX_MISC as L1 reads it (the activity-state check), computed once.
    l1_misc: u64,
    /// L0's APIC-access page for VMCS0-2 (0 until L1 first asks for
    /// "virtualize APIC accesses"): EPT0-2 maps there what EPT1-2 maps to
    /// vmcs12's APIC-access address, so the CPU sees L2's accesses as APIC
    /// accesses (SDM 29.4.6.1) wherever L1 put its page, in its RAM or not.
    apic02: u64,
    /// Field sets computed once per L1.
    sets: Sets,
    /// The exit being reflected is one L0 makes up (an L1 interrupt or NMI
    /// while L2 runs, `super::events`): no L2 exit saved information for it.
    synthetic: bool,
    /// vmcs12's VMX-preemption timer while L2 runs (its pin control set),
    /// loaded at each emulated VM entry.
    ptimer12: Option<nvmx_vmx::nested::PreemptTimer12>,
    /// The CPU saves VMCS0-2's timer on exit (how much L2 time passed);
    /// without it, the TSC between entry and exit at IA32_VMX_MISC[4:0]'s rate.
    ptimer_saved02: bool,
    ptimer_rate: u32,
    /// TSC when VMCS0-2 was last entered.
    entered02_tsc: u64,
    /// Emulated VMREAD/VMWRITEs per field, for the adaptive shadow set.
    learner: nvmx_vmx::shadow::Learner,
}

/// Field sets derived from the field table once (not on every exit).
struct Sets {
    rebuild: FieldSet,
    guest: FieldSet,
    /// What the VM-entry checks read: all but the exit-information fields.
    checked: FieldSet,
}

impl Sets {
    fn new() -> Sets {
        Sets {
            rebuild: rebuild_on_change(),
            guest: FieldSet::group(Group::GuestState),
            checked: FieldSet([u64::MAX; 3]).minus(FieldSet::group(Group::ExitInfo)),
        }
    }
}

/// A vmcs12 as cached in L0.
struct Vmcs12 {
    gpa: u64,
    fields: Box<[u64]>,
    launched: bool,
    /// Fields changed since VMCS0-2 last got them (KVM's dirty tracking
    /// behind prepare_vmcs02_rare): a VMRESUME rewrites only these.
    stale02: FieldSet,
    /// Fields whose value changed since the VM-entry checks last passed on
    /// this vmcs12 (`checked`): a VMRESUME after an L2 exit re-runs only
    /// the checks that read what changed.
    unchecked: FieldSet,
    /// The environment the checks last passed in; `None`: never, or failed since.
    checked: Option<Checked>,
    /// Fields changed in the cache since the shadow VMCS last got them.
    unshadowed: FieldSet,
    /// The region's shadow-VMCS indicator (revision bit 31) was set at
    /// VMPTRLD: a shadow VMCS, which VM entry refuses (SDM 25.10, 27.1).
    shadow: bool,
}

/// What the last passing VM-entry checks saw besides vmcs12's fields.
#[derive(Clone, Copy, PartialEq, Eq)]
struct Checked {
    l1_long_mode: bool,
    /// RFLAGS.VM, which the segment checks read.
    rflags_vm: bool,
}

impl Vmcs12 {
    fn new(gpa: u64, fields: Box<[u64]>, launched: bool, shadow: bool) -> Vmcs12 {
        let all = FieldSet([u64::MAX; 3]);
        Vmcs12 { gpa, fields, launched, stale02: FieldSet::EMPTY, unchecked: all, checked: None, unshadowed: all, shadow }
    }
    #[inline]
    fn get(&self, f: F) -> u64 {
        self.fields[f.index()]
    }
    /// A change by L1 (VMWRITE) or by L0: VMCS0-2 and the shadow must follow.
    #[inline]
    fn set(&mut self, f: F, v: u64) {
        let slot = &mut self.fields[f.index()];
        if *slot != v {
            *slot = v;
            self.stale02.insert(f);
            self.unchecked.insert(f);
            self.unshadowed.insert(f);
        }
    }
    /// A change L1 made in the shadow VMCS, which therefore holds it already.
    #[inline]
    fn set_from_shadow(&mut self, f: F, v: u64) {
        let slot = &mut self.fields[f.index()];
        if *slot != v {
            *slot = v;
            self.stale02.insert(f);
            self.unchecked.insert(f);
        }
    }
    /// A value read back from VMCS0-2, which therefore holds it already.
    #[inline]
    fn set_from_vmcs02(&mut self, f: F, v: u64) {
        let slot = &mut self.fields[f.index()];
        if *slot != v {
            *slot = v;
            self.unchecked.insert(f);
            self.unshadowed.insert(f);
        }
    }
}

/// Guest fields VMCS0-2 may hold other values of than vmcs12 after an L2
/// exit of a PAE-paging L2 although the exit did not save them for L1: the
/// CPU saves the PDPTEs into VMCS0-2 (L0 runs L2 with EPT, SDM 28.3.4); a
/// VMRESUME writes vmcs12's back. (EFER and PAT, which VMCS0-2's exit
/// controls save too, are rewritten on every entry anyway.)
const MOVED_IN_VMCS02: FieldSet = FieldSet::of(&[F::GUEST_PDPTR0, F::GUEST_PDPTR1, F::GUEST_PDPTR2, F::GUEST_PDPTR3]);

/// The guest fields a reflected exit reads at once.
const EAGER: [F; 6] = nvmx_vmx::guest_state::VOLATILE_FIELDS;

/// Fields whose change makes a VMRESUME rebuild VMCS0-2's controls (KVM's
/// prepare_vmcs02_rare): every control field, and CR0/CR4 (merged with L0's
/// forced bits). Not the event L1 injects: `prepare_vmcs02` copies it on
/// every entry.
fn rebuild_on_change() -> FieldSet {
    FieldSet::group(Group::Controls)
        .union(FieldSet::of(&[F::GUEST_CR0, F::GUEST_CR4]))
        .minus(FieldSet::of(&[F::VM_ENTRY_INTR_INFO_FIELD, F::VM_ENTRY_EXCEPTION_ERROR_CODE, F::VM_ENTRY_INSTRUCTION_LEN]))
}

/// L1 memory as the page walks see it.
struct L1Mem {
    base: u64,
    size: u64,
}

impl GuestMemory for L1Mem {
    fn read_u64(&self, gpa: u64) -> Option<u64> {
        if gpa.checked_add(8)? > self.size {
            return None;
        }
        // SAFETY: inside the L1's memory chunk, identity mapped in L0.
        Some(unsafe { ((self.base + gpa) as *const u64).read_unaligned() })
    }
}

impl L1Mem {
    /// `gpa..gpa + 8 * n` when it lies in L1's memory, as a host address.
    fn range(&self, gpa: u64, n: usize) -> Option<u64> {
        let end = gpa.checked_add(8 * n as u64)?;
        (end <= self.size).then_some(self.base + gpa)
    }
    /// Copies `out.len()` quadwords from L1's memory at `gpa` (a vmcs12's fields).
    fn read_all(&self, gpa: u64, out: &mut [u64]) -> bool {
        let Some(src) = self.range(gpa, out.len()) else { return false };
        // SAFETY: inside the L1's memory chunk (checked above), identity
        // mapped in L0, not overlapping L0's own `out`.
        unsafe { core::ptr::copy_nonoverlapping(src as *const u8, out.as_mut_ptr() as *mut u8, 8 * out.len()) };
        true
    }
    /// Copies `data` into L1's memory at `gpa`.
    fn write_all(&self, gpa: u64, data: &[u64]) -> bool {
        let Some(dst) = self.range(gpa, data.len()) else { return false };
        // SAFETY: as `read_all`.
        unsafe { core::ptr::copy_nonoverlapping(data.as_ptr() as *const u8, dst as *mut u8, 8 * data.len()) };
        true
    }
    fn write_u64(&self, gpa: u64, v: u64) -> bool {
        if gpa.checked_add(8).is_none_or(|e| e > self.size) {
            return false;
        }
        // SAFETY: as `read_u64`.
        unsafe { ((self.base + gpa) as *mut u64).write_unaligned(v) };
        true
    }
    /// Four bytes exactly: another vCPU may write the bytes next to them
    /// at the same time (a two-vCPU L1), so no 8-byte read-modify-write.
    fn write_u32(&self, gpa: u64, v: u32) -> bool {
        if gpa.checked_add(4).is_none_or(|e| e > self.size) {
            return false;
        }
        // SAFETY: as `read_u64`.
        unsafe { ((self.base + gpa) as *mut u32).write_unaligned(v) };
        true
    }
    fn read_u32(&self, gpa: u64) -> Option<u32> {
        if gpa.checked_add(4)? > self.size {
            return None;
        }
        // SAFETY: as `read_u64`.
        Some(unsafe { ((self.base + gpa) as *const u32).read_unaligned() })
    }
}

impl walk::GuestMemoryAtomic for L1Mem {
    /// A locked compare-exchange, as the CPU sets EPT flags (SDM 29.3.5):
    /// another vCPU of L1 may change the entry at the same time.
    fn compare_exchange_u64(&self, gpa: u64, old: u64, new: u64) -> bool {
        if gpa % 8 != 0 || gpa.checked_add(8).is_none_or(|e| e > self.size) {
            return false;
        }
        // SAFETY: an aligned quadword inside the L1's memory chunk,
        // identity mapped in L0; L1 may access it concurrently, hence atomic.
        let q = unsafe { core::sync::atomic::AtomicU64::from_ptr((self.base + gpa) as *mut u64) };
        q.compare_exchange(old, new, core::sync::atomic::Ordering::SeqCst, core::sync::atomic::Ordering::SeqCst).is_ok()
    }
}

/// EPT0-2: L2 guest-physical → host, the composition of L1's EPT1-2 and
/// EPT0-1, filled on EPT violations and dropped on INVEPT (KVM's "shadow
/// EPT"). 4 KiB leaves; the tables come from the frame allocator, at most
/// `MAX_PAGES` before the whole tree is dropped and refilled.
struct ShadowEpt {
    root: u64,
    pages: vec::Vec<u64>,
    /// Filled for an EPT1-2 with accessed/dirty flags on (its leaves
    /// withhold write until L1's dirty flag is set), and run with them on.
    ad: bool,
    /// Filled with vmcs12's APIC-access page (L1-physical) mapped to L0's
    /// `apic02` wherever EPT1-2 maps it; `None`: no APIC-access page.
    apic12: Option<u64>,
}

const MAX_EPT02_PAGES: usize = 512;

impl ShadowEpt {
    fn new() -> Self {
        ShadowEpt { root: 0, pages: vec::Vec::new(), ad: false, apic12: None }
    }
    fn page(&mut self) -> Option<u64> {
        let p = crate::mm::frames::alloc(1, 1)?;
        self.pages.push(p);
        Some(p)
    }
    fn eptp(&mut self) -> Option<u64> {
        if self.root == 0 {
            self.root = self.page()?;
        }
        Some(self.root | 6 | (3 << 3) | if self.ad { walk::EPTP_AD } else { 0 })
    }
    /// EPT0-2 for an EPT1-2 with (`ad`) or without accessed/dirty flags:
    /// with them, EPT0-2 runs with them too, so that the CPU treats L2's
    /// paging-structure accesses as writes (SDM 29.3.5) and they fault to
    /// L0 where EPT1-2's dirty flag is clear, as KVM does for L1's A/D EPT.
    /// A tree filled in the other mode is dropped (its leaves may grant
    /// write without a dirty flag).
    fn set_ad(&mut self, ad: bool) {
        if ad != self.ad {
            self.drop_all();
            let _ = insn::invept(2, 0);
            self.ad = ad;
        }
    }
    /// EPT0-2 for vmcs12's APIC-access page `apic12`: leaves filled for
    /// another one (or none) are dropped.
    fn set_apic12(&mut self, apic12: Option<u64>) {
        if apic12 != self.apic12 {
            self.drop_all();
            let _ = insn::invept(2, 0);
            self.apic12 = apic12;
        }
    }
    fn drop_all(&mut self) {
        for p in self.pages.drain(..) {
            // SAFETY: the pages were allocated by `page` and are no longer
            // reachable once the root is forgotten (INVEPT follows).
            unsafe { crate::mm::frames::free(p, 1) };
        }
        self.root = 0;
    }
    /// Maps L2 `gpa` (4 KiB page) to host `hpa` with `perms`.
    fn map(&mut self, gpa: u64, hpa: u64, perms: u64) -> Option<()> {
        if self.pages.len() + 4 > MAX_EPT02_PAGES {
            self.drop_all();
            let _ = insn::invept(2, 0);
        }
        self.eptp()?;
        let mut table = self.root;
        for shift in [39, 30, 21] {
            // SAFETY: EPT0-2 tables are frames owned by this struct.
            let e = unsafe { &mut *((table + 8 * ((gpa >> shift) & 511)) as *mut u64) };
            if *e & 7 == 0 {
                *e = self.page()? | 7;
            }
            table = *e & !0xFFF;
        }
        // SAFETY: as above; leaf with memory type WB.
        unsafe { *((table + 8 * ((gpa >> 12) & 511)) as *mut u64) = (hpa & !0xFFF) | perms | (6 << 3) };
        Some(())
    }
}

impl Nested {
    pub fn new(enabled: bool, vmcs01: u64, caps: &VmxCaps, owned: &mut crate::mm::frames::Owned) -> Self {
        let shadow = super::shadow::Shadow::new(if enabled { caps } else { &VmxCaps::NONE }, owned);
        Nested {
            enabled,
            vmxon: None,
            current: None,
            in_l2: false,
            vmcs01,
            vmcs02: 0,
            launched02: false,
            vmcs02_holds: None,
            pdptes02: None,
            last_vpid12: None,
            phys_bits: core::arch::x86_64::__cpuid(0x8000_0008).eax & 0xFF,
            ept02: ShadowEpt::new(),
            last_check: None,
            note: None,
            shadow,
            owned: crate::mm::frames::Owned::default(),
            absent: FieldSet::default(),
            rare_pending: false,
            exit_sync: None,
            spare: None,
            eptp02: 0,
            l1_misc: nvmx_vmx::nested::l1_vmx_msr(caps, nvmx_vmx::caps::IA32_VMX_MISC).unwrap_or(0),
            apic02: 0,
            sets: Sets::new(),
            synthetic: false,
            ptimer12: None,
            ptimer_saved02: caps.exit().1 & exitc::SAVE_PREEMPTION_TIMER != 0,
            ptimer_rate: caps.preemption_timer_rate(),
            entered02_tsc: 0,
            learner: nvmx_vmx::shadow::Learner::default(),
        }
    }

    /// A field of the current vmcs12 as L0 caches it (0 without one); the
    /// cache is current while L2 runs (the shadow is pulled at VMLAUNCH/VMRESUME).
    pub fn field12(&self, f: F) -> u64 {
        self.current.as_ref().map_or(0, |c| c.get(f))
    }

    /// VMCS0-2's region, 0 before L1's first VMLAUNCH.
    pub fn vmcs02(&self) -> u64 {
        self.vmcs02
    }

    /// L1 is in VMX operation (after VMXON, before VMXOFF).
    pub fn in_vmx_operation(&self) -> bool {
        self.vmxon.is_some()
    }
}

impl Drop for Nested {
    fn drop(&mut self) {
        self.ept02.drop_all();
    }
}

/// A VMREAD/VMWRITE of L0 on VMCS0-2 (or the shadow VMCS) failed: only
/// VMfailValid(12) for a field this CPU does not have is expected; anything
/// else would leave vmcs12 or VMCS0-2 silently wrong, so it is counted for
/// `l1` and logged.
fn l0_vmx_failed(cpu: usize, absent: &FieldSet, f: F, e: nvmx_vmx::error::VmFail) {
    if e == nvmx_vmx::error::VmFail::Valid(12) && absent.contains(f) {
        return;
    }
    super::shared(cpu).vmx_errors.fetch_add(1, core::sync::atomic::Ordering::Relaxed);
    log::warn!("l1 cpu {cpu}: L0's VMREAD/VMWRITE of {} failed: {e}", f.name());
}

/// Failed nested VM-entry checks of one L1, by name, with how often each
/// tripped (for `l1 <cpu>`; at most `MAX` names, later ones counted as
/// "other").
pub struct CheckTally(spin::Mutex<vec::Vec<(&'static str, u64)>>);

impl CheckTally {
    const MAX: usize = 48;
    pub const fn new() -> Self {
        CheckTally(spin::Mutex::new(vec::Vec::new()))
    }
    fn record(&self, what: &'static str) {
        let mut v = self.0.lock();
        let what = if v.len() >= Self::MAX && !v.iter().any(|e| e.0 == what) { "other" } else { what };
        match v.iter_mut().find(|e| e.0 == what) {
            Some(e) => e.1 += 1,
            None => v.push((what, 1)),
        }
    }
    pub fn clear(&self) {
        self.0.lock().clear();
    }
    /// (name, count) in the order they first tripped.
    pub fn entries(&self) -> vec::Vec<(&'static str, u64)> {
        self.0.lock().clone()
    }
}

/// Outcome of an emulated VMX instruction for the exit loop.
pub enum Emulated {
    /// Done: RFLAGS set, skip the instruction.
    Done { ok: bool },
    /// An exception instead of the instruction.
    Fault(u8, Option<u32>),
    /// VMLAUNCH/VMRESUME passed the checks: VMCS0-2 is current, enter L2.
    EnterL2,
    /// VMLAUNCH/VMRESUME failed after the checks that VMfail (a VM-entry
    /// failure, SDM 27.8): vmcs12's host state is loaded, L1 resumes there.
    EntryFailed,
    /// L1 broke something L0 cannot recover from.
    Stop(alloc::string::String),
}

impl Vcpu {
    fn l1mem(&self) -> L1Mem {
        L1Mem { base: self.mem_base, size: self.mem_size }
    }

    fn gpr(&self, n: u8) -> u64 {
        if n == 4 { vmread(F::GUEST_RSP) } else { self.regs.gpr[usize::from(n)] }
    }

    fn set_gpr(&mut self, n: u8, v: u64) {
        if n == 4 { vmwrite(F::GUEST_RSP, v) } else { self.regs.gpr[usize::from(n)] = v }
    }

    /// L1 executes in 64-bit mode (IA32_EFER.LMA and CS.L): register
    /// operands are 64 bits wide, VMREAD/VMWRITE memory operands 8 bytes.
    fn l1_long64(&self) -> bool {
        vmread(F::GUEST_IA32_EFER) & (1 << 10) != 0 && vmread(F::GUEST_CS_AR_BYTES) & (1 << 13) != 0
    }

    /// A register operand as wide as L1's mode makes it (SDM 32.3: 32 bits
    /// outside 64-bit mode, the upper half ignored).
    fn gpr_operand(&self, n: u8) -> u64 {
        let v = self.gpr(n);
        if self.l1_long64() { v } else { v & 0xFFFF_FFFF }
    }

    /// The guest-physical address of a VMX instruction's memory operand of
    /// `size` bytes (SDM 28.2.5 for the encoding): the segment and
    /// canonical checks first — #GP(0), or #SS(0) for an SS operand, before
    /// any page walk (`nvmx_vmx::exit::operand_linear`) —, then L1's page
    /// tables in whatever paging mode L1 uses. `Err` = the exception L1
    /// gets: #GP/#SS, or #PF with CR2 set, as the CPU would.
    fn operand_gpa(&self, info: &InstructionInfo, size: u64, write: bool) -> Result<u64, (u8, Option<u32>)> {
        let linear = self.operand_linear(info, size, write)?;
        self.operand_walk(linear, write)
    }

    fn operand_linear(&self, info: &InstructionInfo, size: u64, write: bool) -> Result<u64, (u8, Option<u32>)> {
        let offset = info.offset(vmread(F::EXIT_QUALIFICATION), |r| self.gpr(r));
        let (base, limit, ar) = match info.segment {
            0 => (F::GUEST_ES_BASE, F::GUEST_ES_LIMIT, F::GUEST_ES_AR_BYTES),
            1 => (F::GUEST_CS_BASE, F::GUEST_CS_LIMIT, F::GUEST_CS_AR_BYTES),
            2 => (F::GUEST_SS_BASE, F::GUEST_SS_LIMIT, F::GUEST_SS_AR_BYTES),
            4 => (F::GUEST_FS_BASE, F::GUEST_FS_LIMIT, F::GUEST_FS_AR_BYTES),
            5 => (F::GUEST_GS_BASE, F::GUEST_GS_LIMIT, F::GUEST_GS_AR_BYTES),
            _ => (F::GUEST_DS_BASE, F::GUEST_DS_LIMIT, F::GUEST_DS_AR_BYTES),
        };
        let seg = nvmx_vmx::exit::Segment { base: vmread(base), limit: vmread(limit) as u32, ar: vmread(ar) as u32 };
        nvmx_vmx::exit::operand_linear(seg, info.segment, offset, size, write, self.l1_long64()).map_err(|v| (v, Some(0)))
    }

    /// L1's page walk of an operand's `linear` address (its paging mode).
    fn operand_walk(&self, linear: u64, write: bool) -> Result<u64, (u8, Option<u32>)> {
        let cr0 = vmread(F::GUEST_CR0);
        // The PDPTE registers of a PAE L1 are in VMCS0-1 (L1 runs with EPT).
        let (cr4, efer) = (vmread(F::GUEST_CR4), vmread(F::GUEST_IA32_EFER));
        let pae = cr4 & (1 << 5) != 0 && efer & (1 << 10) == 0;
        let pdptes = if pae {
            [F::GUEST_PDPTR0, F::GUEST_PDPTR1, F::GUEST_PDPTR2, F::GUEST_PDPTR3].map(vmread)
        } else {
            [0; 4]
        };
        let mode = walk::PagingMode::from_regs(cr0, cr4, efer, pdptes);
        let access = walk::Access { write, wp: cr0 & (1 << 16) != 0 };
        walk::linear_to_physical(&self.l1mem(), mode, vmread(F::GUEST_CR3), linear, access).map_err(|e| {
            match e.page_fault_code(access) {
                Some(code) => {
                    // SAFETY: CR2 is L1's (VM entry does not switch it) and
                    // L0 takes no page faults before the entry.
                    unsafe { core::arch::asm!("mov cr2, {}", in(reg) linear) };
                    (14, Some(code))
                }
                None => (13, Some(0)),
            }
        })
    }

    /// Reads the 64-bit memory operand of VMXON/VMCLEAR/VMPTRLD. Outside
    /// L1's RAM it reads all-ones, as memory no device decodes on a PC.
    fn read_operand(&self, info: &InstructionInfo) -> Result<u64, (u8, Option<u32>)> {
        let gpa = self.operand_gpa(info, 8, false)?;
        Ok(self.l1mem().read_u64(gpa).unwrap_or(u64::MAX))
    }

    /// Writes `size` (4 or 8) bytes of `v` to a store operand; outside L1's
    /// RAM the write is dropped, as on a PC.
    fn write_operand(&self, info: &InstructionInfo, size: u64, v: u64) -> Result<(), (u8, Option<u32>)> {
        let gpa = self.operand_gpa(info, size, true)?;
        let mem = self.l1mem();
        // Exactly `size` bytes: an 8-byte read-modify-write for a 4-byte
        // store would write back bytes another vCPU may have changed since.
        if size == 8 {
            mem.write_u64(gpa, v);
        } else {
            mem.write_u32(gpa, v as u32);
        }
        Ok(())
    }

    fn set_rflags(&self, set: u64) {
        let r = vmread(F::GUEST_RFLAGS);
        vmwrite(F::GUEST_RFLAGS, (r & !RFLAGS_ARITH) | set);
    }

    /// VMsucceed (SDM 32.2).
    fn succeed(&mut self) -> Emulated {
        self.set_rflags(0);
        Emulated::Done { ok: true }
    }

    /// VMfailInvalid.
    fn fail_invalid(&mut self) -> Emulated {
        self.nested.note.get_or_insert("VMfailInvalid");
        self.set_rflags(CF);
        Emulated::Done { ok: false }
    }

    /// VMfail(error): VMfailValid with the error number when there is a
    /// current VMCS, else VMfailInvalid.
    fn fail(&mut self, error: u32) -> Emulated {
        let name = nvmx_vmx::error::VmInstructionError::from_u32(error).map(|e| e.name());
        self.nested.note.get_or_insert(name.unwrap_or("VMfailValid"));
        match self.nested.current.as_mut() {
            Some(c) => {
                c.set(F::VM_INSTRUCTION_ERROR, error.into());
                self.set_rflags(ZF);
                Emulated::Done { ok: false }
            }
            None => self.fail_invalid(),
        }
    }

    /// Writes the cached vmcs12 back to L1 memory (VMCLEAR or switch).
    fn flush_current(&mut self) {
        self.sync_rare();
        let mem = self.l1mem();
        if let Some(c) = self.nested.current.take() {
            // A 4 KiB-aligned region inside L1's memory (checked by VMPTRLD).
            mem.write_all(c.gpa + FIELDS_OFFSET, &c.fields);
            mem.write_u64(c.gpa + 8, u64::from(c.launched));
            self.nested.spare = Some(c.fields);
        }
    }

    /// Copies the guest fields the last reflected exit left in VMCS0-2
    /// into vmcs12's cache (KVM's sync_vmcs02_to_vmcs12_rare), before L0
    /// reads or changes them there; VMCS0-2 still holds them, so they do not
    /// make it stale.
    fn sync_rare(&mut self) {
        if !self.nested.rare_pending {
            return;
        }
        self.nested.rare_pending = false;
        let Some((_, _, sets)) = self.nested.exit_sync else { return };
        super::shared(self.cpu).stats.slow(Slow::RareSync);
        let switch = !self.nested.in_l2;
        let phase = self.prof.enter(Phase::Reflect);
        if switch {
            // SAFETY: VMCS0-2 is L0's and holds this vmcs12's L2.
            unsafe { insn::vmptrld(self.nested.vmcs02) }.expect("VMPTRLD of VMCS0-2");
        }
        let (cpu, absent) = (self.cpu, &self.nested.absent);
        let cur = self.nested.current.as_mut().expect("a pending sync has a current vmcs12");
        let crs = FieldSet::of(&[F::GUEST_CR0, F::GUEST_CR4]);
        for f in sets.lazy.minus(crs).iter() {
            match insn::vmread(f.encoding()) {
                Ok(v) => cur.set_from_vmcs02(f, v),
                // vmcs12 keeps a stale value: counted unless the CPU lacks the field.
                Err(e) => l0_vmx_failed(cpu, absent, f, e),
            }
        }
        // L1 sees its own CR0/CR4 bits, not the ones L0 forced.
        for (guest, mask) in [(F::GUEST_CR0, F::CR0_GUEST_HOST_MASK), (F::GUEST_CR4, F::CR4_GUEST_HOST_MASK)] {
            let mask12 = cur.get(mask);
            let v02 = vmread(guest);
            let l1_view = cur.get(guest);
            // Bits L1 owns follow L2; bits only L0 forces keep L1's value.
            let forced = vmread(mask) & !mask12;
            cur.set_from_vmcs02(guest, (v02 & !forced) | (l1_view & forced));
        }
        if switch {
            // SAFETY: VMCS0-1 is L0's.
            unsafe { insn::vmptrld(self.nested.vmcs01) }.expect("VMPTRLD of VMCS0-1");
        }
        self.prof.leave(phase);
    }

    #[inline(never)]
    fn sync_lazy_shadowed(&mut self) {
        if let Some((_, _, sets)) = self.nested.exit_sync {
            if !sets.lazy.intersect(self.nested.shadow.fields()).is_empty() {
                self.sync_rare();
            }
        }
    }

    fn running_vmcs(&self) -> u64 {
        if self.nested.in_l2 { self.nested.vmcs02 } else { self.nested.vmcs01 }
    }

    /// Shadow VMCS → vmcs12 cache (before L0 reads or changes the cache):
    /// the fields L1 can write there, the others it cannot have changed
    /// (KVM's copy_shadow_to_vmcs12).
    pub(super) fn shadow_pull(&mut self) {
        let running = self.running_vmcs();
        if let (true, Some(c)) = (self.nested.shadow.on, self.nested.current.as_mut()) {
            let p = self.prof.enter(Phase::ShadowSync);
            self.nested.shadow.to_vmcs12(running, |f, v| c.set_from_shadow(f, v));
            self.prof.leave(p);
        }
    }

    /// vmcs12 cache → shadow VMCS: the shadowed fields that changed in the
    /// cache since the last push (all of them after `set_shadowing` or a
    /// VMPTRLD), and VMCS0-1's link pointer (when it is current).
    fn shadow_push(&mut self) {
        if !self.nested.shadow.on {
            return;
        }
        let p = self.prof.enter(Phase::ShadowSync);
        let running = self.running_vmcs();
        if let Some(c) = self.nested.current.as_mut() {
            let dirty = core::mem::take(&mut c.unshadowed);
            let failed = self.nested.shadow.from_vmcs12(running, dirty, |f| c.get(f));
            if failed != 0 {
                super::shared(self.cpu).vmx_errors.fetch_add(failed, core::sync::atomic::Ordering::Relaxed);
            }
        }
        if !self.nested.in_l2 {
            self.nested.shadow.link(self.nested.current.is_some());
        }
        self.prof.leave(p);
    }

    /// Switches VMCS shadowing for this L1, live: off (`None`) or on with
    /// a policy (a new policy starts from its own set). `Err` where the CPU
    /// has none.
    pub(super) fn set_shadowing(&mut self, want: Option<Policy>) -> Result<(), &'static str> {
        if !self.nested.shadow.supported() {
            return Err("this CPU has no VMCS shadowing");
        }
        let now = self.nested.shadow.on.then_some(self.nested.shadow.policy);
        if want == now {
            return Ok(());
        }
        // Everything L1 wrote in the shadow goes to the cache first.
        self.shadow_pull();
        // On with a policy: that policy's starting set (adaptive learns afresh).
        if let Some(policy) = want {
            let running = self.running_vmcs();
            self.nested.shadow.reset(policy, crate::vmx::probe().expect("shadowing runs on VMX"), running);
            self.nested.learner.clear();
        }
        let running = self.running_vmcs();
        // SAFETY: VMCS0-1 and the running VMCS are L0's regions.
        unsafe { insn::vmptrld(self.nested.vmcs01) }.expect("VMPTRLD of VMCS0-1");
        self.nested.shadow.set(want.is_some());
        self.nested.shadow.link(self.nested.current.is_some());
        // SAFETY: as above.
        unsafe { insn::vmptrld(running) }.expect("VMPTRLD back");
        if want.is_some() {
            if let Some(c) = self.nested.current.as_mut() {
                c.unshadowed = FieldSet([u64::MAX; 3]);
            }
            self.shadow_push();
        }
        Ok(())
    }

    /// Counts an emulated VMREAD/VMWRITE per field (the `fields` view) and, under the
    /// adaptive policy, lets its field join the shadow set at the
    /// `JOIN_AFTER`th exit (with vmcs12's value copied into the shadow VMCS
    /// first; `shadow_push` after the instruction keeps it current).
    #[inline]
    fn count_field(&mut self, info: &InstructionInfo, fa: Result<(F, Access), u32>, write: bool, r: &Emulated) {
        let ok = matches!(r, Emulated::Done { ok: true });
        let stats = &super::shared(self.cpu).stats;
        let Ok((f, _)) = fa else {
            stats.field(crate::stats::NOT_A_FIELD, self.gpr(info.reg2), write, ok);
            return;
        };
        stats.field(f.index(), 0, write, ok);
        let sh = &self.nested.shadow;
        if sh.on && sh.policy == Policy::Adaptive && self.nested.learner.note(f, write) {
            self.shadow_join(f, write);
        }
    }

    #[inline(never)]
    fn shadow_join(&mut self, f: F, write: bool) {
        let running = self.running_vmcs();
        let Some(c) = self.nested.current.as_ref() else { return };
        if self.nested.shadow.join(f, write, c.get(f), running) {
            log::debug!("l1 cpu {}: {} joins the shadow set for {}", self.cpu, f.name(), if write { "VMWRITE" } else { "VMREAD" });
            super::publish_shadow(self.cpu, &self.nested.shadow);
        }
    }

    /// Emulates an L1 VMX instruction (exit reasons 18-27, 50, 53), with the
    /// shadow VMCS synced around it.
    pub(super) fn emulate_vmx(&mut self, reason: u16) -> Emulated {
        // VMREAD/VMWRITE exit only for fields the shadow does not hold for
        // L1 (or without shadowing): they pull what they need themselves.
        if !matches!(reason, 23 | 25) {
            self.shadow_pull();
        }
        self.nested.note = None;
        let r = self.emulate_vmx_inner(reason);
        if let Emulated::Fault(vector, _) = r {
            self.nested.note = Some(match vector {
                6 => "#UD",
                13 => "#GP(0)",
                14 => "#PF on the memory operand",
                _ => "exception",
            });
        }
        if !matches!(r, Emulated::EnterL2 | Emulated::EntryFailed) {
            self.shadow_push();
        }
        r
    }

    fn emulate_vmx_inner(&mut self, reason: u16) -> Emulated {
        // Faults before anything else, in each instruction's "Operation"
        // order (SDM 32.3). Real mode, virtual-8086 and compatibility mode
        // are #UD the CPU raises itself, before any VM exit (SDM 26.1.1).
        // Not in VMX operation → #UD (VMXON: CR4.VMXE = 0 → #UD); then
        // CPL > 0 → #GP(0).
        if reason != 27 && self.nested.vmxon.is_none() {
            return Emulated::Fault(6, None);
        }
        if reason == 27 && vmread(F::CR4_READ_SHADOW) & (1 << 13) == 0 {
            return Emulated::Fault(6, None);
        }
        if (vmread(F::GUEST_CS_AR_BYTES) >> 5) & 3 != 0 {
            return Emulated::Fault(13, Some(0));
        }
        // VMLAUNCH/VMRESUME (and VMCALL, VMXOFF) have no operand: the
        // instruction information is read only for the others.
        let info = || InstructionInfo::decode(vmread(F::VMX_INSTRUCTION_INFO) as u32);
        match reason {
            // VMCALL in VMX root operation without the dual-monitor treatment
            // of SMM: VMfail(1) (SDM 32.3 "VMCALL").
            18 => self.fail(1),
            27 => self.vmxon(&info()),
            26 => {
                self.flush_current();
                self.nested.vmxon = None;
                self.succeed()
            }
            19 => self.vmclear(&info()),
            21 => self.vmptrld(&info()),
            22 => {
                let ptr = self.nested.current.as_ref().map_or(u64::MAX, |c| c.gpa);
                match self.write_operand(&info(), 8, ptr) {
                    Ok(()) => self.succeed(),
                    Err((v, e)) => Emulated::Fault(v, e),
                }
            }
            23 => self.vmread12(&info()),
            25 => self.vmwrite12(&info()),
            20 | 24 => self.vmlaunch12(reason == 20),
            50 | 53 => self.invalidate(reason, &info()),
            _ => Emulated::Fault(6, None),
        }
    }

    /// L1's view of CR0 and CR4: its own bits where L0 forces a value
    /// (VMCS0-1's guest/host masks), through the read shadows.
    fn l1_cr0_cr4(&self) -> (u64, u64) {
        let view = |guest, mask, shadow| {
            let m = vmread(mask);
            (vmread(guest) & !m) | (vmread(shadow) & m)
        };
        (
            view(F::GUEST_CR0, F::CR0_GUEST_HOST_MASK, F::CR0_READ_SHADOW),
            view(F::GUEST_CR4, F::CR4_GUEST_HOST_MASK, F::CR4_READ_SHADOW),
        )
    }

    /// VMXON (SDM 32.3 "VMXON", in its order; CR4.VMXE and CPL were
    /// checked by the caller): in VMX root → VMfail(15); CR0/CR4 values not
    /// supported in VMX operation (IA32_VMX_CR0/CR4_FIXED0/1) → #GP(0)
    /// (A20M: nvmx's PC never masks A20, IA32_FEATURE_CONTROL is locked with
    /// VMX on); then the operand: 4 KiB aligned within the physical-address
    /// width, else VMfailInvalid; the region's revision id with bit 31
    /// clear, else VMfailInvalid.
    fn vmxon(&mut self, info: &InstructionInfo) -> Emulated {
        if self.nested.vmxon.is_some() {
            return self.fail(15);
        }
        let host = crate::vmx::probe().expect("nested VMX runs on VMX");
        let ((cr0_f0, cr0_f1), (cr4_f0, cr4_f1)) = (host.cr0_fixed(), host.cr4_fixed());
        let (cr0, cr4) = self.l1_cr0_cr4();
        if cr0 & cr0_f0 != cr0_f0 || cr0 & !cr0_f1 != 0 || cr4 & cr4_f0 != cr4_f0 || cr4 & !cr4_f1 != 0 {
            return Emulated::Fault(13, Some(0));
        }
        let ptr = match self.read_operand(info) {
            Ok(p) => p,
            Err((v, e)) => return Emulated::Fault(v, e),
        };
        if ptr & 0xFFF != 0 || ptr >> self.nested.phys_bits != 0 {
            return self.fail_invalid();
        }
        // Outside L1's RAM the revision reads all-ones: a mismatch.
        if self.l1mem().read_u64(ptr).map(|v| v as u32) != Some(VMCS12_REVISION) {
            return self.fail_invalid();
        }
        self.nested.vmxon = Some(ptr);
        self.nested.current = None;
        self.succeed()
    }

    /// VMCLEAR: errors 2 (not 4 KiB aligned, or bits beyond the
    /// physical-address width) and 3 (the VMXON pointer). A region outside
    /// L1's RAM is cleared into nothing: VMsucceed, as on a PC.
    fn vmclear(&mut self, info: &InstructionInfo) -> Emulated {
        let ptr = match self.read_operand(info) {
            Ok(p) => p,
            Err((v, e)) => return Emulated::Fault(v, e),
        };
        if ptr & 0xFFF != 0 || ptr >> self.nested.phys_bits != 0 {
            return self.fail(2);
        }
        if Some(ptr) == self.nested.vmxon {
            return self.fail(3);
        }
        if self.nested.current.as_ref().is_some_and(|c| c.gpa == ptr) {
            if let Some(c) = self.nested.current.as_mut() {
                c.launched = false;
            }
            self.flush_current();
        } else {
            self.l1mem().write_u64(ptr + 8, 0);
        }
        self.succeed()
    }

    /// VMPTRLD: errors 9 (not aligned, or beyond the physical-address
    /// width), 10 (VMXON pointer), 11 (revision id; bit 31, a shadow VMCS,
    /// only where VMCS shadowing is offered to L1 — SDM 32.3 "VMPTRLD"; a
    /// region outside L1's RAM reads all-ones).
    fn vmptrld(&mut self, info: &InstructionInfo) -> Emulated {
        let ptr = match self.read_operand(info) {
            Ok(p) => p,
            Err((v, e)) => return Emulated::Fault(v, e),
        };
        if ptr & 0xFFF != 0 || ptr >> self.nested.phys_bits != 0 {
            return self.fail(9);
        }
        if Some(ptr) == self.nested.vmxon {
            return self.fail(10);
        }
        let mem = self.l1mem();
        let dword = mem.read_u64(ptr).map_or(u32::MAX, |v| v as u32);
        if !nvmx_vmx::shadow12::vmptrld_revision_ok(dword, VMCS12_REVISION, shadowing_offered()) {
            return self.fail(11);
        }
        if self.nested.current.as_ref().is_some_and(|c| c.gpa == ptr) {
            return self.succeed();
        }
        self.flush_current();
        let mut fields = self.nested.spare.take().unwrap_or_else(|| vec![0u64; ALL.len()].into_boxed_slice());
        if !mem.read_all(ptr + FIELDS_OFFSET, &mut fields) {
            // The region's tail lies beyond L1's memory: those fields read as 0.
            for (i, f) in fields.iter_mut().enumerate() {
                *f = mem.read_u64(ptr + FIELDS_OFFSET + 8 * i as u64).unwrap_or(0);
            }
        }
        let launched = mem.read_u64(ptr + 8).unwrap_or(0) & 1 != 0;
        let shadow = dword & nvmx_vmx::shadow12::SHADOW_INDICATOR != 0;
        self.nested.current = Some(Vmcs12::new(ptr, fields, launched, shadow));
        // Read from memory: VMCS0-2 may hold an older copy of this region.
        self.nested.vmcs02_holds = None;
        self.succeed()
    }

    /// Before an emulated VMREAD/VMWRITE of `f` uses the cache: L1's value
    /// from the shadow VMCS (where L1 writes `f` without an exit), and the
    /// rare guest fields from VMCS0-2 (where the last exit left them).
    fn sync_field(&mut self, f: F) {
        if self.nested.shadow.on && self.nested.shadow.writes(f) {
            self.shadow_pull();
        }
        if self.nested.rare_pending && self.nested.exit_sync.is_some_and(|(_, _, s)| s.lazy.contains(f)) {
            self.sync_rare();
        }
    }

    /// The field named by the register operand, or the VMfail error.
    fn field_operand(&self, info: &InstructionInfo) -> Result<(F, Access), u32> {
        let enc = self.gpr_operand(info.reg2);
        if enc > u64::from(u32::MAX) {
            return Err(12);
        }
        match field::decode(enc as u32) {
            Ok(fa) => Ok(fa),
            Err(EncodingError::ReservedBits | EncodingError::HighOfNon64 | EncodingError::Unknown) => Err(12),
        }
    }

    /// The common case of an emulated VMREAD (`write` false) or VMWRITE,
    /// complete: register operands (instruction information bit 10, SDM
    /// 28.2.5), CPL 0, in VMX operation with a current vmcs12, a field of
    /// the table (one lookup, `field::decode`) that is not read-only for
    /// VMWRITE, no sync pending for it (shadow VMCS, lazy guest fields),
    /// shadowing off or the fixed set without this field. The value moves
    /// in the cache as `vmread12_inner`/`vmwrite12_inner` move it, then
    /// VMsucceed, the field counted, RIP past the instruction (KVM's
    /// handle_vmread/handle_vmwrite without kvm_skip_emulated_instruction's
    /// event checks). `false`: nothing was changed, and the general path
    /// (`emulate_vmx`) handles the exit from its start.
    #[inline(always)]
    pub(super) fn vmrw_fast(&mut self, write: bool) -> bool {
        let n = &self.nested;
        if !n.enabled || n.vmxon.is_none() || n.current.is_none() {
            return false;
        }
        // Instruction information (SDM 28.2.5): bit 10 register operand,
        // bits 6:3 reg1 (VMREAD destination, VMWRITE source), 31:28 reg2
        // (the encoding).
        let info = vmread(F::VMX_INSTRUCTION_INFO);
        if info & (1 << 10) == 0 {
            return false;
        }
        let (reg1, reg2) = (((info >> 3) & 0xF) as usize, ((info >> 28) & 0xF) as usize);
        let cs_ar = vmread(F::GUEST_CS_AR_BYTES);
        if (cs_ar >> 5) & 3 != 0 || reg1 == 4 || reg2 == 4 {
            return false;
        }
        // 64-bit mode: EFER.LMA and CS.L (`l1_long64`); else 32-bit operands.
        let width = if cs_ar & (1 << 13) != 0 && vmread(F::GUEST_IA32_EFER) & (1 << 10) != 0 { u64::MAX } else { 0xFFFF_FFFF };
        let enc = self.regs.gpr[reg2] & width;
        let Some(slot) = u32::try_from(enc).ok().and_then(field::slot_of) else {
            return false;
        };
        let enc = enc as u32;
        let sh = &n.shadow;
        let f = ALL[slot];
        if sh.on && (sh.policy != Policy::Fixed || sh.fields().contains(f)) {
            return false;
        }
        if n.rare_pending && n.exit_sync.is_some_and(|(_, _, s)| s.lazy.contains(f)) {
            return false;
        }
        let Some(cur) = self.nested.current.as_mut() else { return false };
        // Width from encoding bits 14:13 (0 16-bit, 1 64-bit, 2 32-bit,
        // 3 natural); bit 0 the "high" half of a 64-bit field.
        let mask = match (enc >> 13) & 3 {
            0 => 0xFFFF,
            2 => 0xFFFF_FFFF,
            _ => u64::MAX,
        };
        if write {
            // Type 1 (bits 11:10): read-only; the general path decides.
            if (enc >> 10) & 3 == 1 {
                return false;
            }
            let value = self.regs.gpr[reg1] & width;
            let new = if enc & 1 != 0 { (cur.fields[slot] & 0xFFFF_FFFF) | (value << 32) } else { value & mask };
            cur.set(f, new);
        } else {
            let raw = cur.fields[slot];
            let value = if enc & 1 != 0 { raw >> 32 } else { raw & mask };
            self.regs.gpr[reg1] = value & width;
        }
        self.nested.note = None;
        super::shared(self.cpu).stats.field(slot, 0, write, true);
        self.nested.shadow.link(true);
        // VMsucceed (arithmetic flags clear), RIP past the instruction, an
        // STI/MOV-SS shadow over.
        vmwrite(F::GUEST_RFLAGS, vmread(F::GUEST_RFLAGS) & !RFLAGS_ARITH);
        vmwrite(F::GUEST_RIP, vmread(F::GUEST_RIP) + vmread(F::VM_EXIT_INSTRUCTION_LEN));
        let intr = vmread(F::GUEST_INTERRUPTIBILITY_INFO);
        if intr & 3 != 0 {
            vmwrite(F::GUEST_INTERRUPTIBILITY_INFO, intr & !3);
        }
        true
    }

    /// The exit stub's fast path for the next entry of VMCS0-1 (`step`,
    /// after a quiet platform check, until TSC `deadline`): `vmrw_fast`'s
    /// conditions that depend on L0's state only, decided here once per
    /// entry — in VMX operation with a current vmcs12, its shadow link
    /// set, and the fields that need a sync first (shadowed, or lazy guest
    /// fields of the last reflection) left to the general path; null when
    /// no VMREAD/VMWRITE may be served so.
    pub(super) fn fast_exit(&mut self, deadline: u64) -> *mut nvmx_vmx::entry::FastExit {
        let n = &mut self.nested;
        let sh = &n.shadow;
        if !n.enabled || n.vmxon.is_none() || n.in_l2 || (sh.on && (sh.policy != Policy::Fixed || !sh.linked_current())) {
            return core::ptr::null_mut();
        }
        let mut deny = if sh.on { sh.fields() } else { FieldSet::EMPTY };
        if n.rare_pending
            && let Some((_, _, s)) = n.exit_sync
        {
            deny = deny.union(s.lazy);
        }
        let Some(cur) = n.current.as_mut() else { return core::ptr::null_mut() };
        let f = &mut self.fast;
        f.fields = cur.fields.as_mut_ptr();
        f.stale02 = &raw mut cur.stale02;
        f.unchecked = &raw mut cur.unchecked;
        f.unshadowed = &raw mut cur.unshadowed;
        f.deny = deny;
        f.deadline = deadline;
        &raw mut self.fast.head
    }

    /// VMREAD (SDM 32.3): VMfailInvalid without a current VMCS, error 12
    /// for unsupported fields; widths and "high" accesses as the SDM says.
    fn vmread12(&mut self, info: &InstructionInfo) -> Emulated {
        let fa = self.field_operand(info);
        let r = self.vmread12_inner(info, fa);
        self.count_field(info, fa, false, &r);
        r
    }

    fn vmread12_inner(&mut self, info: &InstructionInfo, fa: Result<(F, Access), u32>) -> Emulated {
        if self.nested.current.is_none() {
            return self.fail_invalid();
        }
        let (f, access) = match fa {
            Ok(fa) => fa,
            Err(e) => return self.fail(e),
        };
        self.sync_field(f);
        let raw = self.nested.current.as_ref().expect("checked above").get(f);
        let value = match (f.width(), access) {
            (Width::U16, _) => raw & 0xFFFF,
            (Width::U32, _) => raw & 0xFFFF_FFFF,
            (Width::U64, Access::High) => raw >> 32,
            _ => raw,
        };
        let long64 = self.l1_long64();
        if info.is_register {
            // Outside 64-bit mode the destination is 32 bits (SDM 32.3).
            self.set_gpr(info.reg1, if long64 { value } else { value & 0xFFFF_FFFF });
        } else if let Err((v, e)) = self.write_operand(info, if long64 { 8 } else { 4 }, value) {
            return Emulated::Fault(v, e);
        }
        self.succeed()
    }

    /// VMWRITE: error 13 for read-only fields (exit information) unless
    /// IA32_VMX_MISC bit 29 is advertised (it is when the CPU has it).
    fn vmwrite12(&mut self, info: &InstructionInfo) -> Emulated {
        let fa = self.field_operand(info);
        let r = self.vmwrite12_inner(info, fa);
        self.count_field(info, fa, true, &r);
        r
    }

    fn vmwrite12_inner(&mut self, info: &InstructionInfo, fa: Result<(F, Access), u32>) -> Emulated {
        if self.nested.current.is_none() {
            return self.fail_invalid();
        }
        // The source is 32 bits outside 64-bit mode (SDM 32.3).
        let value = if info.is_register {
            self.gpr_operand(info.reg1)
        } else {
            let size = if self.l1_long64() { 8 } else { 4 };
            match self.operand_gpa(info, size, false) {
                Ok(gpa) if size == 8 => self.l1mem().read_u64(gpa).unwrap_or(u64::MAX),
                // The last 4 bytes of RAM read as they are (not all-ones).
                Ok(gpa) => self.l1mem().read_u32(gpa).map_or(0xFFFF_FFFF, u64::from),
                Err((v, e)) => return Emulated::Fault(v, e),
            }
        };
        let (f, access) = match fa {
            Ok(fa) => fa,
            Err(e) => return self.fail(e),
        };
        if f.kind() == Kind::ReadOnly && !crate::vmx::probe().is_some_and(|c| c.misc & (1 << 29) != 0) {
            return self.fail(13);
        }
        self.sync_field(f);
        let cur = self.nested.current.as_mut().expect("checked above");
        let old = cur.get(f);
        let new = match (f.width(), access) {
            (Width::U16, _) => value & 0xFFFF,
            (Width::U32, _) => value & 0xFFFF_FFFF,
            (Width::U64, Access::High) => (old & 0xFFFF_FFFF) | (value << 32),
            _ => value,
        };
        cur.set(f, new);
        self.succeed()
    }

    /// INVEPT / INVVPID: type in the register operand, descriptor in memory;
    /// error 28 for a type not advertised. EPT0-2 is dropped whole (it caches
    /// EPT1-2), VPID-tagged translations by the mapped L0 VPID.
    fn invalidate(&mut self, reason: u16, info: &InstructionInfo) -> Emulated {
        let kind = self.gpr_operand(info.reg2);
        let ok_types = if reason == 50 { [1u64, 2].as_slice() } else { [0u64, 1, 2, 3].as_slice() };
        if !ok_types.contains(&kind) {
            return self.fail(28);
        }
        // The 128-bit descriptor is read whatever the type (SDM 32.3).
        // Segment/canonical checks on all 16 bytes, then each half's walk
        // (the second may lie on another page).
        let linear = match self.operand_linear(info, 16, false) {
            Ok(l) => l,
            Err((v, e)) => return Emulated::Fault(v, e),
        };
        let desc = match (self.operand_walk(linear, false), self.operand_walk(linear.wrapping_add(8), false)) {
            (Ok(lo), Ok(hi)) => [lo, hi].map(|gpa| self.l1mem().read_u64(gpa).unwrap_or(u64::MAX)),
            (Err((v, e)), _) | (_, Err((v, e))) => return Emulated::Fault(v, e),
        };
        let ept_ad = crate::vmx::probe().is_some_and(|c| c.ept_ad());
        if nvmx_vmx::nested::check_invalidation(reason == 50, kind, desc, self.nested.phys_bits, ept_ad).is_err() {
            return self.fail(28);
        }
        if reason == 50 {
            self.nested.ept02.drop_all();
            let _ = insn::invept(2, 0);
        } else {
            let _ = insn::invvpid(2, 0, 0);
        }
        self.succeed()
    }

    /// VMLAUNCH/VMRESUME (SDM 32.3, 27.1-27.2): launch state (errors 4, 5),
    /// control checks (7), host-state checks (8); then prepare_vmcs02.
    fn vmlaunch12(&mut self, launch: bool) -> Emulated {
        let Some(cur) = self.nested.current.as_ref() else { return self.fail_invalid() };
        // SDM 27.1 (25.10): VM entry with a shadow VMCS current fails as
        // without a current VMCS.
        if cur.shadow {
            return self.fail_invalid();
        }
        // SDM 32.3 "VMLAUNCH/VMRESUME": events blocked by MOV SS come
        // before the launch state (error 26, then 4/5).
        if vmread(F::GUEST_INTERRUPTIBILITY_INFO) & 2 != 0 {
            return self.fail(26);
        }
        if launch && cur.launched {
            return self.fail(4);
        }
        if !launch && !cur.launched {
            return self.fail(5);
        }
        let phase = self.prof.enter(Phase::Checks);
        let l1_long_mode = rd(F::GUEST_IA32_EFER) & (1 << 10) != 0;
        let now = Checked { l1_long_mode, rflags_vm: cur.get(F::GUEST_RFLAGS) & (1 << 17) != 0 };
        // The checks passed on this vmcs12 before, and since then only
        // fields of the guest state's volatile part changed (an L2 exit and
        // L1's handling of it): the checks that read nothing of those would
        // pass again, so only the others run (same order, same first failure).
        let changed = cur.unchecked.intersect(self.nested.sets.checked);
        let volatile_only = cur.checked == Some(now) && changed.minus(nvmx_vmx::guest_state::VOLATILE).is_empty();
        let mem = self.l1mem();
        let vmxon = self.nested.vmxon;
        // SDM 27.3.1.5: the link pointer's region holds the revision, with
        // bit 31 set exactly when vmcs12 has "VMCS shadowing" on (read only
        // when the check gets that far: a link pointer other than all ones).
        let shadowing12 = nvmx_vmx::shadow12::shadowing12(|f| cur.get(f));
        let mem = &mem;
        let link_ok = move |p: u64| {
            let link_rev = nvmx_vmx::shadow12::link_revision(VMCS12_REVISION, shadowing12);
            Some(p) != vmxon && mem.read_u64(p).is_some_and(|v| v as u32 == link_rev)
        };
        let l1_misc = self.nested.l1_misc;
        // VTPR lives in L1's memory, where L2 changes it without a VMWRITE:
        // this control check runs on every entry with "use TPR shadow"
        // (outside RAM: all-ones); without it the check reads no VTPR.
        let tpr_shadow = cur.get(F::CPU_BASED_VM_EXEC_CONTROL) as u32 & proc1::USE_TPR_SHADOW != 0;
        let vtpr = if tpr_shadow {
            mem.read_u64(cur.get(F::VIRTUAL_APIC_PAGE_ADDR).wrapping_add(0x80)).map_or(0xFF, |v| v as u8)
        } else {
            0xFF
        };
        let tpr = nvmx_vmx::nested::check_tpr_threshold(|f| cur.get(f), vtpr);
        if volatile_only {
            if let Err(what) = tpr {
                self.prof.leave(phase);
                self.check_failed(what);
                return self.fail(7);
            }
        }
        let guest_ok = if volatile_only {
            // Narrowed further to the volatile fields that changed (mostly
            // RIP alone: one check).
            nvmx_vmx::guest_state::check_guest_state_changed(|f| cur.get(f), changed, l1_misc, link_ok)
        } else {
            // Every check reads vmcs12's whole guest state.
            super::shared(self.cpu).stats.slow(Slow::FullChecks);
            let host = crate::vmx::probe().expect("nested VMX runs on VMX");
            let l1_caps = |msr| nvmx_vmx::nested::l1_vmx_msr(host, msr).unwrap_or(0);
            let env = nvmx_vmx::nested::Env { phys_bits: self.nested.phys_bits, l1_long_mode };
            self.sync_rare();
            let cur = self.nested.current.as_mut().expect("checked above");
            cur.checked = None;
            if let Err(what) = nvmx_vmx::nested::check_controls(|f| cur.get(f), l1_caps, &env).and(tpr) {
                self.prof.leave(phase);
                log::debug!("l1 cpu {}: VMfailValid(7): {what}", self.cpu);
                self.check_failed(what);
                return self.fail(7);
            }
            if let Err(what) = nvmx_vmx::nested::check_host_state(|f| cur.get(f), host.cr0_fixed(), host.cr4_fixed(), &env) {
                self.prof.leave(phase);
                log::debug!("l1 cpu {}: VMfailValid(8): {what}", self.cpu);
                self.check_failed(what);
                return self.fail(8);
            }
            let (cr0_fixed, cr4_fixed) = (host.cr0_fixed(), host.cr4_fixed());
            nvmx_vmx::guest_state::check_guest_state(|f| cur.get(f), cr0_fixed, cr4_fixed, env.phys_bits, l1_misc, link_ok)
        };
        self.prof.leave(phase);
        let cur = self.nested.current.as_mut().expect("checked above");
        if let Err(e) = guest_ok {
            cur.checked = None;
            return self.entry_failure(EXIT_REASON_INVALID_STATE, e.qualification, e.check);
        }
        cur.checked = Some(now);
        cur.unchecked = FieldSet::EMPTY;
        // SDM 27.3.1.6, the last guest-state check (Bochs' order too): the
        // PDPTEs of a PAE L2. With EPT they are vmcs12's fields, checked
        // when L1 changed one (else they passed before or the CPU saved
        // them at an exit, from PDPTE registers it had checked). Without
        // EPT they are in L1's memory at CR3, which L1 (or another vCPU)
        // may rewrite at any time: read on every entry, once — VMCS0-2 gets
        // the copies checked here (fuzz seed 110: L2 ran on vmcs12's stale
        // PDPTE fields and triple-faulted where Bochs refuses the entry).
        let l1_ept = cur.get(F::CPU_BASED_VM_EXEC_CONTROL) as u32 & proc1::SECONDARY_CONTROLS != 0
            && cur.get(F::SECONDARY_VM_EXEC_CONTROL) as u32 & proc2::ENABLE_EPT != 0;
        self.nested.pdptes02 = None;
        if !l1_ept || !volatile_only {
            if !l1_ept {
                // CR0/CR3/CR4 as L2 left them (L2 may load CR3 unseen).
                self.sync_rare();
            }
            let cur = self.nested.current.as_ref().expect("checked above");
            let mem = self.l1mem();
            match nvmx_vmx::guest_state::check_pdptes(|f| cur.get(f), |a| mem.read_u64(a), self.nested.phys_bits) {
                Err(e) => {
                    self.nested.current.as_mut().expect("checked above").checked = None;
                    return self.entry_failure(EXIT_REASON_INVALID_STATE, e.qualification, e.check);
                }
                Ok(p) => self.nested.pdptes02 = p.filter(|_| !l1_ept),
            }
        }
        let phase = self.prof.enter(Phase::Prepare);
        let prepared = self.prepare_vmcs02();
        self.prof.leave(phase);
        if let Err(e) = prepared {
            // L0 could not build VMCS0-2 for a vmcs12 its checks passed
            // (controls this CPU cannot combine, no memory): L1's entry
            // fails as on a CPU refusing its controls (VMfailValid(7)),
            // counted as a fallback — never a stopped L1.
            log::warn!("l1 cpu {}: VMCS0-2 not built ({e}); VMfailValid(7) to L1", self.cpu);
            // SAFETY: VMCS0-1 is L0's; VMCS0-2 may be current after a partial build.
            unsafe { insn::vmptrld(self.nested.vmcs01) }.expect("VMPTRLD of VMCS0-1");
            self.nested.vmcs02_holds = None;
            self.fallback_to_cpu();
            self.check_failed("VMCS0-2 could not be built for controls nvmx's checks passed");
            return self.fail(7);
        }
        // SDM 27.4: the VM-entry MSR-load list, after the guest state.
        let cur = self.nested.current.as_ref().expect("checked above");
        let list = (cur.get(F::VM_ENTRY_MSR_LOAD_ADDR), cur.get(F::VM_ENTRY_MSR_LOAD_COUNT));
        if list.1 != 0 {
            // The list may overwrite guest-state fields of VMCS0-2 (SYSENTER,
            // EFER, PAT): the next entry starts again from vmcs12.
            self.nested.vmcs02_holds = None;
        }
        if let Err(n) = self.load_msr_list(list) {
            return self.entry_failure(EXIT_REASON_MSR_LOADING, n, "VM-entry MSR-load list: entry refused (SDM 27.4)");
        }
        // SDM 27.7.4: the timer starts from vmcs12's value at every entry.
        let cur = self.nested.current.as_ref().expect("checked above");
        self.nested.ptimer12 = (cur.get(F::PIN_BASED_VM_EXEC_CONTROL) as u32 & pin::PREEMPTION_TIMER != 0)
            .then(|| nvmx_vmx::nested::PreemptTimer12::load(cur.get(F::VMX_PREEMPTION_TIMER_VALUE) as u32));
        Emulated::EnterL2
    }

    /// Records the VM-entry check that tripped: `vmcs 12`, `l1`, `trace`.
    fn check_failed(&mut self, what: &'static str) {
        self.nested.last_check = Some(what);
        self.nested.note = Some(what);
        *super::shared(self.cpu).last_check.lock() = Some(what);
        super::shared(self.cpu).checks.record(what);
    }

    /// The CPU refused VMCS0-2 although vmcs12 passed nvmx's checks: a
    /// check nvmx lacks, answered by the CPU instead. Counted (`l1`,
    /// `stats`): the tests require none.
    fn fallback_to_cpu(&self) {
        super::shared(self.cpu).fallbacks.fetch_add(1, core::sync::atomic::Ordering::Relaxed);
    }

    /// A VM-entry failure during or after loading guest state (SDM 27.8):
    /// exit reason with bit 31, the qualification, no guest state saved,
    /// then vmcs12's host state loaded into L1 as on a VM exit.
    fn entry_failure(&mut self, reason: u32, qualification: u64, check: &'static str) -> Emulated {
        log::debug!("l1 cpu {}: VM-entry failure {reason}: {check}", self.cpu);
        self.check_failed(check);
        let cur = self.nested.current.as_mut().expect("entry needs a current vmcs12");
        cur.set(F::VM_EXIT_REASON, u64::from(reason | (1 << 31)));
        cur.set(F::EXIT_QUALIFICATION, qualification);
        cur.set(F::VM_EXIT_INTR_INFO, 0);
        cur.set(F::IDT_VECTORING_INFO_FIELD, 0);
        // Failed before L2 ran: L1's EFER and PAT stay as they are.
        match self.load_vmcs12_host_state(L2Msrs::default()) {
            Ok(()) => Emulated::EntryFailed,
            Err(e) => Emulated::Stop(e),
        }
    }

    /// Processes an MSR-load list of vmcs12 (SDM 27.4 on entry, 28.6 on
    /// exit) with L1's WRMSR semantics, entry by entry: `Err(n)` names the
    /// 1-based entry that failed (the MSRs before it stay loaded).
    fn load_msr_list(&mut self, (addr, count): (u64, u64)) -> Result<(), u64> {
        let mem = self.l1mem();
        for n in 0..count.min(MAX_MSR_LIST) {
            // Read once: checked and loaded from these copies (another vCPU
            // may rewrite the list meanwhile; `bochs_race_*` pin it).
            let (Some(head), Some(value)) = (mem.read_u64(addr + 16 * n), mem.read_u64(addr + 16 * n + 8)) else {
                return Err(n + 1);
            };
            let msr = head as u32;
            // Bits 63:32 reserved; FS/GS base only through the guest-state
            // fields; the x2APIC range never (SDM 27.4).
            let refused = head >> 32 != 0 || (0xC000_0100..=0xC000_0101).contains(&msr) || msr >> 8 == 0x8;
            if refused || !self.l1_wrmsr(msr, value) {
                return Err(n + 1);
            }
        }
        Ok(())
    }

    /// The VM-exit MSR-store list (SDM 28.4): L2's values, read while
    /// VMCS0-2 is current. `Err(n)` = entry n failed (a VMX abort).
    fn store_msr_list(&mut self, (addr, count): (u64, u64)) -> Result<(), u64> {
        let mem = self.l1mem();
        for n in 0..count.min(MAX_MSR_LIST) {
            let Some(head) = mem.read_u64(addr + 16 * n) else { return Err(n + 1) };
            let msr = head as u32;
            if head >> 32 != 0 || msr >> 8 == 0x8 {
                return Err(n + 1);
            }
            match self.l1_rdmsr(msr) {
                Some(v) if mem.write_u64(addr + 16 * n + 8, v) => {}
                _ => return Err(n + 1),
            }
        }
        Ok(())
    }

    /// Builds VMCS0-2: guest state from vmcs12, host state L0's, controls
    /// = what L1 asked merged with what L0 needs, and makes it current.
    fn prepare_vmcs02(&mut self) -> Result<(), &'static str> {
        let cur = self.nested.current.as_ref().expect("checked by the caller");
        let entry12 = cur.get(F::VM_ENTRY_CONTROLS) as u32;
        // Values of L1's own state (VMCS0-1 is current) that vmcs02 may
        // inherit, read only where vmcs12 does not give them.
        let l1_efer = if entry12 & entry::LOAD_EFER == 0 { rd(F::GUEST_IA32_EFER) } else { 0 };
        let l1_pat = if entry12 & entry::LOAD_PAT == 0 { rd(F::GUEST_IA32_PAT) } else { 0 };
        let proc12 = cur.get(F::CPU_BASED_VM_EXEC_CONTROL) as u32;
        let proc2_12 = if proc12 & proc1::SECONDARY_CONTROLS != 0 { cur.get(F::SECONDARY_VM_EXEC_CONTROL) as u32 } else { 0 };
        let l1_ept = proc2_12 & proc2::ENABLE_EPT != 0;
        let eptp01 = if l1_ept { 0 } else { rd(F::EPT_POINTER) };
        let holds = self.nested.vmcs02_holds == Some(cur.gpa);
        // KVM's prepare_vmcs02_rare: VMCS0-2's controls, CR0/CR4 and the
        // whole guest state only when VMCS0-2 holds another vmcs12 or L1
        // changed a control; else only the guest fields that changed.
        let rebuild = !holds || !cur.stale02.intersect(self.nested.sets.rebuild).is_empty();
        if rebuild {
            // Built from the cache, which must have all of it.
            self.sync_rare();
        }
        let fresh = self.nested.vmcs02 == 0;
        if fresh {
            let caps = crate::vmx::probe().ok_or("no VMX")?;
            let page = self.nested.owned.alloc(1, 1).ok_or("no memory for VMCS0-2")?;
            // SAFETY: fresh frame, revision id first (SDM 25.2).
            unsafe { (page as *mut u32).write_volatile(caps.revision_id()) };
            // SAFETY: our VMCS region.
            unsafe { insn::vmclear(page) }.map_err(|_| "VMCLEAR of VMCS0-2 failed")?;
            self.nested.vmcs02 = page;
        }
        let phase = self.prof.enter(Phase::VmcsSwitch);
        // SAFETY: VMCS0-2 is ours and initialised.
        let loaded = unsafe { insn::vmptrld(self.nested.vmcs02) };
        self.prof.leave(phase);
        loaded.map_err(|_| "VMPTRLD of VMCS0-2 failed")?;
        if fresh {
            // Which fields this CPU lacks (VMREAD of a VMCS just cleared).
            for &f in ALL.iter() {
                if insn::vmread(f.encoding()) == Err(nvmx_vmx::error::VmFail::Valid(12)) {
                    self.nested.absent.insert(f);
                }
            }
        }
        let cur = self.nested.current.as_mut().expect("checked by the caller");
        let stale = core::mem::take(&mut cur.stale02);
        let cur = self.nested.current.as_ref().expect("checked by the caller");
        // Guest state: all of it for a vmcs12 VMCS0-2 does not hold yet,
        // else what changed since (CR0/CR4, EFER, PAT and the link pointer
        // are rewritten below in any case). Fields this CPU lacks (PML
        // index, BNDCFGS…) are skipped.
        let (cpu, absent) = (self.cpu, &self.nested.absent);
        let write = |f: &F| {
            if let Err(e) = insn::vmwrite(f.encoding(), cur.get(*f)) {
                l0_vmx_failed(cpu, absent, *f, e);
            }
        };
        // By the set bits, word by word (no iterator adaptors: this runs
        // on every VMRESUME, mostly for RIP alone).
        let guest = if holds { stale.intersect(self.nested.sets.guest) } else { self.nested.sets.guest };
        for (w, &word) in guest.0.iter().enumerate() {
            let mut bits = word;
            while bits != 0 {
                write(&ALL[w * 64 + bits.trailing_zeros() as usize]);
                bits &= bits - 1;
            }
        }
        // VMCS0-2's link pointer stays all ones once written (L0 never
        // shadows through VMCS0-2; an exit does not change it).
        if !holds {
            vmwrite(F::VMCS_LINK_POINTER, u64::MAX);
        }
        // A PAE L2 of an L1 without EPT: the PDPTEs the entry checks loaded
        // from CR3, not vmcs12's fields (which such an entry neither reads
        // nor, at exits, writes: SDM 28.3.4); the next entry rewrites
        // vmcs12's where they matter.
        if let Some(p) = self.nested.pdptes02 {
            for (f, v) in [F::GUEST_PDPTR0, F::GUEST_PDPTR1, F::GUEST_PDPTR2, F::GUEST_PDPTR3].into_iter().zip(p) {
                vmwrite(f, v);
            }
        }
        let cur = self.nested.current.as_mut().expect("checked by the caller");
        if self.nested.pdptes02.is_some() {
            cur.stale02 = cur.stale02.union(MOVED_IN_VMCS02);
        }
        let cur = self.nested.current.as_ref().expect("checked by the caller");
        let ia32e = entry12 & entry::IA32E_MODE_GUEST != 0;
        let efer = if entry12 & entry::LOAD_EFER != 0 {
            cur.get(F::GUEST_IA32_EFER)
        } else if ia32e {
            l1_efer | (1 << 8) | (1 << 10)
        } else {
            l1_efer & !((1 << 8) | (1 << 10))
        };
        vmwrite(F::GUEST_IA32_EFER, efer);
        vmwrite(F::GUEST_IA32_PAT, if entry12 & entry::LOAD_PAT != 0 { cur.get(F::GUEST_IA32_PAT) } else { l1_pat });

        if rebuild {
            super::shared(self.cpu).stats.slow(Slow::Rebuild);
            let caps = crate::vmx::probe().ok_or("no VMX")?;
            self.prepare_vmcs02_rare(caps)?;
        }
        let cur = self.nested.current.as_ref().expect("checked by the caller");
        // The event L1 injects into L2 (SDM 27.6), on every VMLAUNCH/VMRESUME:
        // an exit clears its valid bit in vmcs12, so a stale one never comes
        // back. L0's own injections compose with it before the entry
        // (`super::events`), never over it.
        for f in [F::VM_ENTRY_INTR_INFO_FIELD, F::VM_ENTRY_EXCEPTION_ERROR_CODE, F::VM_ENTRY_INSTRUCTION_LEN] {
            vmwrite(f, cur.get(f));
        }
        // VPID: L2's translations are tagged with one L0 VPID per core
        // (vpid02), apart from L1's. When the L2 that runs next has another
        // VPID in L1's eyes (or none), vpid02's translations belong to
        // another L2: flush them (KVM's nested_vmx_transition_tlb_flush).
        // Without that, two L1 VPIDs sharing vpid02 would see each other's
        // translations, which distinct VPIDs never do on the CPU.
        let vpid12 = if proc2_12 & proc2::ENABLE_VPID != 0 { cur.get(F::VIRTUAL_PROCESSOR_ID) } else { 0 };
        let vpid02 = 0x100 + self.cpu as u16;
        if self.nested.last_vpid12 != Some(vpid12) || vpid12 == 0 {
            let _ = insn::invvpid(1, vpid02, 0);
            self.nested.last_vpid12 = Some(vpid12);
        }
        // EPT0-2: the shadow of EPT1-2 when L1 uses EPT, else L1's own EPT0-1
        // (its root changes when INVEPT drops it).
        if l1_ept {
            self.nested.ept02.set_ad(cur.get(F::EPT_POINTER) & walk::EPTP_AD != 0);
            let apic12 = (proc2_12 & proc2::VIRTUALIZE_APIC_ACCESSES != 0).then(|| cur.get(F::APIC_ACCESS_ADDR) & !0xFFF);
            self.nested.ept02.set_apic12(apic12);
        }
        let eptp02 = if l1_ept { self.nested.ept02.eptp().ok_or("no memory for EPT0-2")? } else { eptp01 };
        if rebuild || eptp02 != self.nested.eptp02 {
            vmwrite(F::VIRTUAL_PROCESSOR_ID, vpid02.into());
            vmwrite(F::EPT_POINTER, eptp02);
            self.nested.eptp02 = eptp02;
        }
        // L0's host state is the same for every entry on this core.
        if fresh {
            crate::vmx::run::setup_host_state();
        }
        self.nested.vmcs02_holds = Some(self.nested.current.as_ref().expect("checked by the caller").gpa);
        Ok(())
    }

    /// The part of prepare_vmcs02 that depends only on vmcs12's controls and
    /// CR0/CR4 (KVM's prepare_vmcs02_rare): VMCS0-2's controls = what L1
    /// asked merged with what L0 needs, CR masks and shadows. VMCS0-2 is current.
    fn prepare_vmcs02_rare(&mut self, caps: &VmxCaps) -> Result<(), &'static str> {
        let (cpu, absent) = (self.cpu, &self.nested.absent);
        let cur = self.nested.current.as_ref().expect("checked by the caller");
        let adj = |want: u32, allowed| nvmx_vmx::controls::adjust_controls(want, allowed);
        let entry12 = cur.get(F::VM_ENTRY_CONTROLS) as u32;
        let pin12 = cur.get(F::PIN_BASED_VM_EXEC_CONTROL) as u32;
        let proc12 = cur.get(F::CPU_BASED_VM_EXEC_CONTROL) as u32;
        let proc2_12 = if proc12 & proc1::SECONDARY_CONTROLS != 0 { cur.get(F::SECONDARY_VM_EXEC_CONTROL) as u32 } else { 0 };
        let pass1 = proc1::INTERRUPT_WINDOW_EXITING | proc1::NMI_WINDOW_EXITING | proc1::USE_TSC_OFFSETTING | proc1::HLT_EXITING
            | proc1::INVLPG_EXITING | proc1::MWAIT_EXITING | proc1::RDPMC_EXITING | proc1::RDTSC_EXITING
            | proc1::CR3_LOAD_EXITING | proc1::CR3_STORE_EXITING | proc1::CR8_LOAD_EXITING | proc1::CR8_STORE_EXITING
            | proc1::MOV_DR_EXITING | proc1::MONITOR_EXITING | proc1::PAUSE_EXITING | proc1::USE_TPR_SHADOW;
        // L0 takes every I/O and MSR access and decides with L1's bitmaps
        // whether L1 wants it (nested_vmx_l1_wants_exit).
        // L1's NMIs that go into L2 (no NMI exiting in vmcs12) need L0's
        // NMI window, hence virtual NMIs on VMCS0-2 where the CPU has them
        // (their blocking bit is then L2's NMI blocking, cleared by L2's IRET
        // as without NMI exiting, SDM 25.3); with NMI exiting, L1's own choice.
        let vnmi = super::platform::L1Platform::extra_pin_controls(caps);
        let l0_nmi = if pin12 & pin::NMI_EXITING == 0 && vnmi != 0 { pin::NMI_EXITING | vnmi } else { 0 };
        let pin02 = adj(pin12 | l0_nmi | pin::EXTERNAL_INTERRUPT_EXITING | pin::PREEMPTION_TIMER, caps.pinbased());
        // Without TPR shadow L2's CR8 is the CPU's TPR, i.e. L1's LAPIC's
        // (emulated by L0): CR8 accesses exit to L0 unless L1 takes them.
        let cr8 = if proc12 & proc1::USE_TPR_SHADOW == 0 { proc1::CR8_LOAD_EXITING | proc1::CR8_STORE_EXITING } else { 0 };
        let proc02 = adj((proc12 & pass1) | cr8 | proc1::UNCONDITIONAL_IO_EXITING | proc1::SECONDARY_CONTROLS, caps.procbased());
        let proc2_02 = adj(
            (proc2_12 & (proc2::ENABLE_VPID | proc2::ENABLE_RDTSCP | proc2::UNRESTRICTED_GUEST | proc2::ENABLE_INVPCID))
                | (proc2_12 & (proc2::VIRTUALIZE_APIC_ACCESSES | proc2::PAUSE_LOOP_EXITING))
                | proc2::ENABLE_EPT,
            caps.procbased2(),
        );
        // Debug controls as L1 asked: DR7/DEBUGCTL saved into vmcs02 (and on
        // to vmcs12 under L1's "save debug controls"), loaded from vmcs12.
        let exit12 = cur.get(F::VM_EXIT_CONTROLS) as u32;
        // The timer saved: how much L2 time passed, for L1's own timer.
        let save_timer = if self.nested.ptimer_saved02 { exitc::SAVE_PREEMPTION_TIMER } else { 0 };
        let exit02 = adj(
            (exit12 & exitc::SAVE_DEBUG_CONTROLS) | exitc::HOST_ADDRESS_SPACE_SIZE | exitc::ACK_INTERRUPT_ON_EXIT
                | exitc::SAVE_EFER | exitc::LOAD_EFER | exitc::SAVE_PAT | exitc::LOAD_PAT | save_timer,
            caps.exit(),
        );
        let entry02 = adj(
            (entry12 & (entry::IA32E_MODE_GUEST | entry::LOAD_DEBUG_CONTROLS)) | entry::LOAD_EFER | entry::LOAD_PAT,
            caps.entry(),
        );
        let (Ok(pin02), Ok(proc02), Ok(proc2_02), Ok(exit02), Ok(entry02)) = (pin02, proc02, proc2_02, exit02, entry02)
        else {
            return Err("VMCS0-2 controls not supported by this CPU");
        };
        vmwrite(F::PIN_BASED_VM_EXEC_CONTROL, pin02.into());
        vmwrite(F::CPU_BASED_VM_EXEC_CONTROL, proc02.into());
        vmwrite(F::SECONDARY_VM_EXEC_CONTROL, proc2_02.into());
        vmwrite(F::VM_EXIT_CONTROLS, exit02.into());
        vmwrite(F::VM_ENTRY_CONTROLS, entry02.into());
        vmwrite(F::VMX_PREEMPTION_TIMER_VALUE, crate::vmx::run::PREEMPT_TICKS);
        // PAUSE-loop exiting (SDM 25.6.13): vmcs12's gap and window as they
        // are; L0 has no PAUSE exiting of its own for L2.
        if proc2_02 & proc2::PAUSE_LOOP_EXITING != 0 {
            vmwrite(F::PLE_GAP, cur.get(F::PLE_GAP));
            vmwrite(F::PLE_WINDOW, cur.get(F::PLE_WINDOW));
        }
        // TPR shadow (SDM 30.1.1): L1's virtual-APIC page is an L1-physical
        // address; VMCS0-2 gets the host page behind it (in L1's RAM, else
        // the entry fails as refused controls), and L1's threshold.
        if proc02 & proc1::USE_TPR_SHADOW != 0 {
            let vapic = cur.get(F::VIRTUAL_APIC_PAGE_ADDR);
            if vapic.checked_add(4096).is_none_or(|end| end > self.mem_size) {
                return Err("virtual-APIC page outside L1's RAM");
            }
            vmwrite(F::VIRTUAL_APIC_PAGE_ADDR, self.mem_base + vapic);
            vmwrite(F::TPR_THRESHOLD, cur.get(F::TPR_THRESHOLD));
        }
        // Virtualize APIC accesses (SDM 29.4): with EPT1-2, L0's own page
        // `apic02`, to which EPT0-2 maps every L2 page that EPT1-2 maps to
        // vmcs12's APIC-access address (`ept02_violation`); without, L2's
        // physical addresses are L1's and EPT0-1 maps the page in L1's RAM.
        if proc2_02 & proc2::VIRTUALIZE_APIC_ACCESSES != 0 {
            let apic12 = cur.get(F::APIC_ACCESS_ADDR);
            let hpa = if proc2_12 & proc2::ENABLE_EPT != 0 {
                if self.nested.apic02 == 0 {
                    self.nested.apic02 = self.nested.owned.alloc(1, 1).ok_or("no memory for the APIC-access page")?;
                }
                self.nested.apic02
            } else if apic12.checked_add(4096).is_some_and(|end| end <= self.mem_size) {
                self.mem_base + apic12
            } else {
                return Err("APIC-access page outside L1's RAM without EPT");
            };
            vmwrite(F::APIC_ACCESS_ADDR, hpa);
        }
        let cur = self.nested.current.as_ref().expect("checked by the caller");
        for f in [
            F::EXCEPTION_BITMAP,
            F::PAGE_FAULT_ERROR_CODE_MASK,
            F::PAGE_FAULT_ERROR_CODE_MATCH,
            F::TSC_OFFSET,
        ] {
            vmwrite(f, cur.get(f));
        }
        // L1's CR3 targets (as many as IA32_VMX_MISC offers it: the CPU's).
        for f in [F::CR3_TARGET_COUNT, F::CR3_TARGET_VALUE0, F::CR3_TARGET_VALUE1, F::CR3_TARGET_VALUE2, F::CR3_TARGET_VALUE3] {
            if let Err(e) = insn::vmwrite(f.encoding(), cur.get(f)) {
                l0_vmx_failed(cpu, absent, f, e);
            }
        }
        vmwrite(F::VM_EXIT_MSR_STORE_COUNT, 0);
        vmwrite(F::VM_EXIT_MSR_LOAD_COUNT, 0);
        vmwrite(F::VM_ENTRY_MSR_LOAD_COUNT, 0);
        // CR0/CR4: L1's masks plus the bits VMX fixes (SDM 25.6.6).
        let (cr0_f0, _) = caps.cr0_fixed();
        let (cr4_f0, _) = caps.cr4_fixed();
        let unrestricted = proc2_02 & proc2::UNRESTRICTED_GUEST != 0;
        let cr0_forced = if unrestricted { cr0_f0 & !(1 | (1 << 31)) } else { cr0_f0 };
        for (mask, shadow, guest, forced) in [
            (F::CR0_GUEST_HOST_MASK, F::CR0_READ_SHADOW, F::GUEST_CR0, cr0_forced),
            (F::CR4_GUEST_HOST_MASK, F::CR4_READ_SHADOW, F::GUEST_CR4, cr4_f0),
        ] {
            let mask12 = cur.get(mask);
            let value = cur.get(guest);
            vmwrite(mask, mask12 | forced);
            vmwrite(shadow, (cur.get(shadow) & mask12) | (value & !mask12));
            vmwrite(guest, value | forced);
        }
        Ok(())
    }

    /// The CPU refused to enter VMCS0-2 with VMfailValid(`error`) after
    /// vmcs12 passed nvmx's checks (a check nvmx lacks): L1's VMLAUNCH/
    /// VMRESUME ends in that VMfailValid, as it would on the CPU.
    pub(super) fn vmcs02_refused(&mut self, error: u32) {
        log::warn!("l1 cpu {}: the CPU refused VMCS0-2 (VMfailValid {error}); passed on to L1", self.cpu);
        // VMCS0-2 (current) still holds what the last exit left there.
        self.sync_rare();
        // SAFETY: VMCS0-1 is ours; L1's VMLAUNCH/VMRESUME exit is its last.
        unsafe { insn::vmptrld(self.nested.vmcs01) }.expect("VMPTRLD of VMCS0-1");
        self.nested.in_l2 = false;
        self.nested.vmcs02_holds = None;
        self.fallback_to_cpu();
        self.check_failed("the CPU's VM-entry checks on VMCS0-2 (VMfailValid; nvmx's own checks passed)");
        vmwrite(F::GUEST_RIP, vmread(F::GUEST_RIP) + vmread(F::VM_EXIT_INSTRUCTION_LEN));
        let _ = self.fail(error);
        self.shadow_push();
    }

    /// The VMX-preemption timer value for the next entry of VMCS0-2: L0's
    /// own need `l0_ticks` (timer ticks) composed with vmcs12's remaining
    /// count when L1 activated the timer (KVM's vmx_start_preemption_timer
    /// for the nested case). The count of L2 time starts now.
    pub(super) fn arm_vmcs02_preemption_timer(&mut self, l0_ticks: u64) {
        let ticks = self.nested.ptimer12.as_mut().map_or(l0_ticks, |t| t.compose(l0_ticks));
        vmwrite(F::VMX_PREEMPTION_TIMER_VALUE, ticks);
        self.nested.entered02_tsc = crate::arch::cpu::rdtsc();
    }

    /// After VMCS0-2 ran: marks the vmcs12 launched once an entry worked.
    pub(super) fn l2_entered(&mut self) {
        self.nested.launched02 = true;
        if let Some(c) = self.nested.current.as_mut() {
            c.launched = true;
        }
    }

    pub(super) fn launched02(&self) -> bool {
        self.nested.launched02
    }

    /// Whether L1 asked for this L2 exit (`nvmx_vmx::nested::l1_wants_exit`).
    fn l1_wants_exit(&self, exit: &nvmx_vmx::nested::L2ExitInfo) -> bool {
        let cur = self.nested.current.as_ref().expect("L2 runs with a current vmcs12");
        let mem = self.l1mem();
        let bit = |bitmap: u64, n: u64| mem.read_u64(bitmap + (n / 64) * 8).is_some_and(|w| w & (1 << (n % 64)) != 0);
        nvmx_vmx::nested::l1_wants_exit(exit, |r| self.gpr(r), |f| cur.get(f), bit)
    }

    /// An exception of L2 that L0 raises on its behalf (SDM 26.2): a VM
    /// exit to L1 (reason 0) when L1's exception bitmap asks for it, else
    /// delivered to L2 through VM-entry event injection.
    fn l2_exception(&mut self, vector: u8, error: Option<u32>) -> Result<bool, alloc::string::String> {
        let info = (1u32 << 31) | (3 << 8) | u32::from(vector) | if error.is_some() { 1 << 11 } else { 0 };
        let exit = nvmx_vmx::nested::L2ExitInfo { reason: 0, qualification: 0, intr_info: info, intr_error: error.unwrap_or(0) };
        if self.l1_wants_exit(&exit) {
            return self.reflect_with(0, 0, Some((info, error.unwrap_or(0)))).map(|()| false);
        }
        if let Some(code) = error {
            vmwrite(F::VM_ENTRY_EXCEPTION_ERROR_CODE, code.into());
        }
        vmwrite(F::VM_ENTRY_INTR_INFO_FIELD, info.into());
        Ok(true)
    }

    /// An L2 control-register access L1 did not ask for: VMCS0-2's CR0/CR4
    /// masks also hold the bits VMX fixes (L0's), so L0 sees writes to bits
    /// L1 does not own (KVM's handle_set_cr0/cr4 in guest mode). The write
    /// happens as the CPU would do it without an exit: the bits L1 owns
    /// keep their value, the others take L2's; clearing a fixed-1 bit or
    /// setting a fixed-0 one is a #GP (SDM 24.8, 26.3).
    fn l2_cr_access(&mut self, q: u64) -> Result<bool, alloc::string::String> {
        let (cr, kind, reg) = (q & 0xF, (q >> 4) & 3, ((q >> 8) & 0xF) as u8);
        let cur = self.nested.current.as_ref().expect("L2 runs with a current vmcs12");
        let caps = crate::vmx::probe().expect("nested VMX runs on VMX");
        let skip = || vmwrite(F::GUEST_RIP, vmread(F::GUEST_RIP) + vmread(F::VM_EXIT_INSTRUCTION_LEN));
        match (kind, cr) {
            (0, 0) | (0, 4) => {
                let (mask, shadow, guest, (_, fixed1)) = if cr == 0 {
                    (F::CR0_GUEST_HOST_MASK, F::CR0_READ_SHADOW, F::GUEST_CR0, caps.cr0_fixed())
                } else {
                    (F::CR4_GUEST_HOST_MASK, F::CR4_READ_SHADOW, F::GUEST_CR4, caps.cr4_fixed())
                };
                let value = self.gpr(reg);
                let mask12 = cur.get(mask);
                let forced = vmread(mask) & !mask12;
                let pg_without_pe = cr == 0 && value & (1 << 31) != 0 && value & 1 == 0;
                if value & forced != forced || value & !fixed1 != 0 || value >> 32 != 0 || pg_without_pe {
                    return self.l2_exception(13, Some(0));
                }
                vmwrite(guest, (vmread(guest) & mask12) | (value & !mask12) | forced);
                vmwrite(shadow, (vmread(shadow) & mask12) | (value & !mask12));
                skip();
                Ok(true)
            }
            (0, 3) => {
                // A CR3-target value (or a CR3-load-exiting control L0 had
                // to keep): the load happens.
                vmwrite(F::GUEST_CR3, self.gpr(reg));
                skip();
                Ok(true)
            }
            (1, 3) => {
                self.set_gpr(reg, vmread(F::GUEST_CR3));
                skip();
                Ok(true)
            }
            // L2's CR8 without TPR shadow: L1's LAPIC TPR (SDM 11.8.6.1).
            (0, 8) if self.gpr(reg) >> 4 != 0 => self.l2_exception(13, Some(0)),
            (0, 8) => {
                let v = self.gpr(reg);
                self.platform.pc.set_cr8(v);
                skip();
                Ok(true)
            }
            (1, 8) => {
                let v = self.platform.pc.cr8();
                self.set_gpr(reg, v);
                skip();
                Ok(true)
            }
            // Nothing else reaches L0 without L1 asking (CLTS and LMSW touch
            // no bit VMX fixes but PE, which LMSW cannot clear).
            _ => self.reflect(28 , q).map(|()| false),
        }
    }

    /// Handles an exit of L2. `Ok(true)` = resume L2, `Ok(false)` = the exit
    /// was reflected and L1 runs next; the level is counted by the caller.
    pub(super) fn l2_exit(&mut self, reason: u32, qualification: u64) -> Result<bool, alloc::string::String> {
        let basic = (reason & 0xFFFF) as u16;
        if reason & (1 << 31) != 0 {
            // The CPU refused VMCS0-2 although vmcs12 passed nvmx's checks:
            // L1 gets the same VM-entry failure (no guest state saved).
            let check = "the CPU's VM-entry checks on VMCS0-2 (nvmx's own checks passed)";
            self.fallback_to_cpu();
            return match self.entry_failure(reason & 0xFFFF, qualification, check) {
                Emulated::Stop(why) => Err(why),
                _ => Ok(false),
            };
        }
        // L1's preemption timer: the L2 time that passed; its exit 52 is
        // L1's only when vmcs12's count ran out, else L0's (L2 resumes
        // with the rest).
        let l1_timer_out = match self.nested.ptimer12.as_mut() {
            Some(t) => {
                let remaining = if self.nested.ptimer_saved02 {
                    vmread(F::VMX_PREEMPTION_TIMER_VALUE)
                } else {
                    let elapsed = crate::arch::cpu::rdtsc().saturating_sub(self.nested.entered02_tsc);
                    t.programmed.saturating_sub(elapsed >> self.nested.ptimer_rate)
                };
                t.exited(remaining, basic)
            }
            None => false,
        };
        match basic {
            1 => {
                // L0's own interrupt (the shell's IPI); L1's are `super::events`'.
                crate::apic::eoi();
                return Ok(true);
            }
            52 if l1_timer_out => return self.reflect(reason, qualification).map(|()| false),
            52 => return Ok(true),
            48 => return self.ept02_violation(reason, qualification),
            _ => {}
        }
        let exit = nvmx_vmx::nested::L2ExitInfo {
            reason: basic,
            qualification,
            intr_info: if basic == 0 { vmread(F::VM_EXIT_INTR_INFO) as u32 } else { 0 },
            intr_error: if basic == 0 { vmread(F::VM_EXIT_INTR_ERROR_CODE) as u32 } else { 0 },
        };
        if matches!(basic, 23 | 25) {
            if let Some(done) = self.handle_l2_vmread_shadowed(basic == 25) {
                return done;
            }
        }
        // Decided once (L1's bitmaps are in its memory).
        if self.l1_wants_exit(&exit) {
            return self.reflect(reason, qualification).map(|()| false);
        }
        if basic == 28 {
            return self.l2_cr_access(qualification);
        }
        if basic == 0 {
            // An exception L1 does not intercept: delivered to L2 as it came
            // (bit 12, NMI unblocking, is not part of an injected event).
            if exit.intr_info & (1 << 11) != 0 {
                vmwrite(F::VM_ENTRY_EXCEPTION_ERROR_CODE, exit.intr_error.into());
            }
            vmwrite(F::VM_ENTRY_INSTRUCTION_LEN, vmread(F::VM_EXIT_INSTRUCTION_LEN));
            vmwrite(F::VM_ENTRY_INTR_INFO_FIELD, u64::from(exit.intr_info & 0x8000_0FFF));
            return Ok(true);
        }
        // L0 handles it for L2 the way it would for L1 (its virtual devices).
        let rip = vmread(F::GUEST_RIP);
        match self.handle(super::decode(reason, qualification)) {
            Handled::Skip => {
                vmwrite(F::GUEST_RIP, rip + vmread(F::VM_EXIT_INSTRUCTION_LEN));
                Ok(true)
            }
            Handled::Resume => Ok(true),
            _ => self.reflect(reason, qualification).map(|()| false),
        }
    }

    /// An EPT violation of L2: fill EPT0-2 from EPT1-2 when L1 maps the
    /// address, else it is L1's violation to handle.
    fn ept02_violation(&mut self, reason: u32, qualification: u64) -> Result<bool, alloc::string::String> {
        let gpa2 = vmread(F::GUEST_PHYSICAL_ADDRESS);
        let cur = self.nested.current.as_ref().expect("L2 runs with a current vmcs12");
        let proc12 = cur.get(F::CPU_BASED_VM_EXEC_CONTROL) as u32;
        let l1_ept = proc12 & proc1::SECONDARY_CONTROLS != 0
            && cur.get(F::SECONDARY_VM_EXEC_CONTROL) as u32 & proc2::ENABLE_EPT != 0;
        if !l1_ept {
            // L2 runs on L1's EPT0-1: its physical addresses are L1's, and
            // outside L1's RAM that is MMIO on L1's PC.
            return self.l2_mmio(gpa2, qualification, None);
        }
        let eptp12 = cur.get(F::EPT_POINTER);
        let access = qualification & 7;
        // With EPT A/D on, EPT0-2 has them on too, so the CPU's bit 1 is
        // already "a write, or an access to L2's paging structures" (SDM
        // 29.3.5 table 28-7), the access that sets the dirty flag.
        let ad = eptp12 & walk::EPTP_AD != 0;
        let write = qualification & 2 != 0;
        let mem = self.l1mem();
        let mut walked = walk::ept_walk(&mem, eptp12, gpa2, self.nested.phys_bits);
        // L1's flags, set as the CPU does after a walk that succeeds: with a
        // compare-exchange of the value walked, and the walk again when
        // another vCPU of L1 changed an entry meanwhile.
        let mut flags_set = !ad;
        for _ in 0..8 {
            match walked {
                Ok(w) if ad && w.translation.permissions & access == access => {
                    if walk::ept_set_accessed_dirty(&mem, &w, write).is_ok() {
                        flags_set = true;
                        break;
                    }
                    walked = walk::ept_walk(&mem, eptp12, gpa2, self.nested.phys_bits);
                }
                _ => {
                    flags_set = true;
                    break;
                }
            }
        }
        if !flags_set {
            // L1 keeps changing the entries: map nothing, L2 retries.
            return Ok(true);
        }
        match walked.map(|w| (w.translation, w)) {
            Ok((t, w)) if t.permissions & access == access => {
                if self.nested.ept02.apic12 == Some(t.address & !0xFFF) && self.nested.apic02 != 0 {
                    // vmcs12's APIC-access page: the CPU's APIC-access
                    // logic on VMCS0-2 (exit 44, TPR virtualization) sees it
                    // as L0's page (SDM 29.4.6.1).
                    let perms = walk::ept02_leaf_permissions(&w, ad, write);
                    self.nested.ept02.map(gpa2 & !0xFFF, self.nested.apic02, perms).ok_or("no memory for EPT0-2")?;
                    let _ = insn::invept(1, vmread(F::EPT_POINTER));
                    return Ok(true);
                }
                if t.address >= self.mem_size {
                    // Outside L1's RAM: MMIO on L1's PC (a device of L1's,
                    // else reads all-ones and writes dropped).
                    return self.l2_mmio(t.address, qualification, Some(eptp12));
                }
                let hpa = self.mem_base + (t.address & !0xFFF);
                // (EPT0-2's mode is `ad` already: prepare_vmcs02 set it.)
                let perms = walk::ept02_leaf_permissions(&w, ad, write);
                self.nested.ept02.map(gpa2 & !0xFFF, hpa, perms).ok_or("no memory for EPT0-2")?;
                let _ = insn::invept(1, vmread(F::EPT_POINTER));
                // An EPT violation is fault-like: the instruction did not
                // complete, so no single-step trap of its own is pending.
                // Bochs 2.7 saves one anyway (BS, bit 14, with RFLAGS.TF=1),
                // and L2 would take a #DB the CPU never raises. Only MOV-SS
                // blocking can carry a trap of the previous instruction.
                let pending = vmread(F::GUEST_PENDING_DBG_EXCEPTIONS);
                if pending & (1 << 14) != 0 && vmread(F::GUEST_INTERRUPTIBILITY_INFO) & 2 == 0 {
                    vmwrite(F::GUEST_PENDING_DBG_EXCEPTIONS, pending & !(1 << 14));
                }
                Ok(true)
            }
            Ok((t, _)) => self.reflect(reason, (qualification & !0x38) | (t.permissions << 3)).map(|()| false),
            // L1's EPT1-2 is misconfigured there: an EPT misconfiguration
            // exit (49, no qualification; the guest-physical address is
            // reported, SDM 28.2.1 and 29.3.3.1).
            Err(Some(walk::WalkError::Reserved)) => self.reflect(49, 0).map(|()| false),
            Err(_) => self.reflect(reason, qualification & !0x38).map(|()| false),
        }
    }

    /// An L2 access to L1-physical `gpa` outside L1's RAM, emulated
    /// against L1's platform (`platform_mmio_l2`), L2 resumed after it.
    fn l2_mmio(&mut self, gpa: u64, qualification: u64, eptp12: Option<u64>) -> Result<bool, alloc::string::String> {
        match self.platform_mmio_l2(gpa, qualification, eptp12, self.nested.phys_bits) {
            Handled::Resume => Ok(true),
            Handled::Stop(why) => Err(alloc::format!("L2: {why}")),
            _ => Ok(true),
        }
    }

    /// Reflects the current L2 exit to L1: sync_vmcs02_to_vmcs12, the
    /// VM-exit MSR-store list, then load_vmcs12_host_state into VMCS0-1
    /// (SDM 28.3-28.6 as L1 expects them). `Err` = a VMX abort (SDM 28.7).
    fn reflect(&mut self, reason: u32, qualification: u64) -> Result<(), alloc::string::String> {
        self.reflect_with(reason, qualification, None)
    }

    /// `reflect`, with the exit's interruption information and error code
    /// given by L0 (an exception L0 raises for L2) instead of VMCS0-2's.
    fn reflect_with(&mut self, reason: u32, qualification: u64, event: Option<(u32, u32)>) -> Result<(), alloc::string::String> {
        let phase = self.prof.enter(Phase::Reflect);
        self.sync_vmcs02_to_vmcs12(reason, qualification);
        // A guest field L1 reads from the shadow cannot wait in VMCS0-2 for
        // `sync_rare`: with one of the lazy fields in the adaptive set (the
        // fixed set has none), all of them come now, VMCS0-2 still current.
        if self.nested.shadow.on && self.nested.shadow.policy != Policy::Fixed {
            self.sync_lazy_shadowed();
        }
        let cur = self.nested.current.as_mut().expect("L2 runs with a current vmcs12");
        if let Some((info, error)) = event {
            cur.set_from_vmcs02(F::VM_EXIT_INTR_INFO, info.into());
            cur.set_from_vmcs02(F::VM_EXIT_INTR_ERROR_CODE, error.into());
        }
        let cur = self.nested.current.as_ref().expect("L2 runs with a current vmcs12");
        let list = (cur.get(F::VM_EXIT_MSR_STORE_ADDR), cur.get(F::VM_EXIT_MSR_STORE_COUNT));
        let exit12 = cur.get(F::VM_EXIT_CONTROLS) as u32;
        if let Err(n) = self.store_msr_list(list) {
            self.prof.leave(phase);
            return Err(alloc::format!("VMX abort: VM-exit MSR-store list entry {n} refused (SDM 28.7)"));
        }
        self.prof.enter(Phase::HostLoad);
        // SDM 28.5.1: an exit without "load IA32_EFER" / "load IA32_PAT"
        // leaves those MSRs as L2 had them (EFER.LME/LMA aside): VMCS0-2,
        // still current, saved L2's (fuzz-long seed 114: L1's PAT came
        // back instead of the 0 its L2 had loaded).
        let from_l2 = L2Msrs {
            efer: (exit12 & exitc::LOAD_EFER == 0).then(|| rd(F::GUEST_IA32_EFER)),
            pat: (exit12 & exitc::LOAD_PAT == 0).then(|| rd(F::GUEST_IA32_PAT)),
        };
        let loaded = self.load_vmcs12_host_state(from_l2);
        self.prof.leave(phase);
        loaded
    }

    /// An exit to L1 that no L2 exit caused: L1's interrupt (reason 1) or
    /// NMI (reason 0) while L2 runs (SDM 26.2, 27.2.2), with exit
    /// interruption information `info`; the rest of the exit information
    /// is cleared (KVM's nested_vmx_vmexit with its own exit_intr_info).
    /// The entry it follows counts as done: a VMLAUNCHed vmcs12 is launched.
    pub(super) fn reflect_synthetic(&mut self, reason: u32, info: u32) -> Result<(), alloc::string::String> {
        if let Some(c) = self.nested.current.as_mut() {
            c.launched = true;
        }
        self.nested.synthetic = true;
        self.reflect_with(reason, 0, Some((info, 0)))
    }

    /// VMCS0-2 → vmcs12: guest state and exit information (SDM 28.2-28.3).
    /// VMCS0-2 holds these values, so they do not make vmcs12 stale for it
    /// (CR0/CR4, EFER, PAT and the controls are recomputed on every entry).
    fn sync_vmcs02_to_vmcs12(&mut self, reason: u32, qualification: u64) {
        let (cpu, absent) = (self.cpu, &self.nested.absent);
        let cur = self.nested.current.as_mut().expect("L2 runs with a current vmcs12");
        // (The shadow was pulled when L1 executed VMLAUNCH/VMRESUME and L1
        // has not run since: the cache is current.)
        let exit12 = cur.get(F::VM_EXIT_CONTROLS) as u32;
        let proc12 = cur.get(F::CPU_BASED_VM_EXEC_CONTROL) as u32;
        let l1_ept = proc12 & proc1::SECONDARY_CONTROLS != 0
            && cur.get(F::SECONDARY_VM_EXEC_CONTROL) as u32 & proc2::ENABLE_EPT != 0;
        let (cr0, cr4, efer) = (vmread(F::GUEST_CR0), vmread(F::GUEST_CR4), vmread(F::GUEST_IA32_EFER));
        let pae_with_ept = l1_ept && cr0 & (1 << 31) != 0 && cr4 & (1 << 5) != 0 && efer & (1 << 10) == 0;
        let sets = match self.nested.exit_sync {
            Some((e, p, sets)) if e == exit12 && p == pae_with_ept => sets,
            _ => {
                let sets = nvmx_vmx::nested::exit_sync(exit12, pae_with_ept);
                self.nested.exit_sync = Some((exit12, pae_with_ept, sets));
                sets
            }
        };
        // The volatile guest fields now; the rest stays in VMCS0-2 until L0
        // needs it (`sync_rare`), which for a VMRESUME of this vmcs12 is never.
        debug_assert_eq!(sets.eager, FieldSet::of(&EAGER));
        for f in EAGER {
            match insn::vmread(f.encoding()) {
                Ok(v) => cur.set_from_vmcs02(f, v),
                // vmcs12 keeps a stale value: counted unless the CPU lacks the field.
                Err(e) => l0_vmx_failed(cpu, absent, f, e),
            }
        }
        self.nested.rare_pending = true;
        // Not saved for L1: vmcs12 keeps its value; VMCS0-2's may have moved
        // with L2 under L0's own exit controls.
        let l2_pae = cr0 & (1 << 31) != 0 && cr4 & (1 << 5) != 0 && efer & (1 << 10) == 0;
        if l2_pae {
            cur.stale02 = cur.stale02.union(sets.unsaved.intersect(MOVED_IN_VMCS02));
        }
        let basic = reason & 0xFFFF;
        for f in [F::VM_EXIT_INTR_INFO, F::IDT_VECTORING_INFO_FIELD, F::VM_EXIT_INSTRUCTION_LEN] {
            cur.set_from_vmcs02(f, vmread(f));
        }
        // The other exit-information fields are written only by the exits
        // that report them (SDM 28.2.2-28.2.5; undefined after the others,
        // where the CPU leaves what it had): VMCS0-2's value after any other
        // exit may be that of an exit L0 handled itself or of another
        // vmcs12's exit (VMCS0-2 serves them all), which L1 never saw there —
        // fuzz seed 107 read a #PF's error code 9 after an EPT violation
        // (bare 0). The interruption error code: exits caused by events.
        if matches!(basic, 0 | 1) {
            cur.set_from_vmcs02(F::VM_EXIT_INTR_ERROR_CODE, vmread(F::VM_EXIT_INTR_ERROR_CODE));
        }
        // The IDT-vectoring error code: exits during event delivery (28.2.4).
        if cur.get(F::IDT_VECTORING_INFO_FIELD) & (1 << 31) != 0 {
            cur.set_from_vmcs02(F::IDT_VECTORING_ERROR_CODE, vmread(F::IDT_VECTORING_ERROR_CODE));
        }
        // The instruction information (28.2.5): INS/OUTS, descriptor-table
        // and VMX instructions, INVEPT/INVVPID/INVPCID, RDRAND/RDSEED,
        // XSAVES/XRSTORS, UMWAIT/TPAUSE.
        let instruction_info = match basic {
            30 => qualification & (1 << 4) != 0,
            19 | 21..=23 | 25 | 27 | 46 | 47 | 50 | 53 | 57 | 58 | 61 | 63 | 64 | 67 | 68 => true,
            _ => false,
        };
        if instruction_info {
            cur.set_from_vmcs02(F::VMX_INSTRUCTION_INFO, vmread(F::VMX_INSTRUCTION_INFO));
        }
        // The guest-linear address (SDM 28.2.1): string I/O, LMSW with a
        // memory operand and EPT violations — every EPT violation (the field
        // is undefined without qualification bit 7, and Bochs writes the
        // access's address then too), including those L0 reflects as
        // misconfigurations of EPT1-2 (49), which the CPU saw as violations.
        // Only there: after any other exit VMCS0-2's may be that of an EPT
        // fill L0 handled itself; and after a misconfiguration or a violation
        // without bit 7 vmcs12 kept an older exit's value (the fuzz, which
        // hashes the field, parted from the bare run within 500 operations).
        let linear = match basic {
            30 => qualification & (1 << 4) != 0,
            28 => qualification & 0x70 == 0x70,
            48 | 49 => true,
            _ => false,
        };
        if linear {
            cur.set_from_vmcs02(F::GUEST_LINEAR_ADDRESS, vmread(F::GUEST_LINEAR_ADDRESS));
        }
        // The guest-physical address is written only by EPT violations and
        // misconfigurations (SDM 28.2.1; undefined otherwise, and the CPU
        // leaves it): VMCS0-2's after any other exit may be that of an EPT
        // violation L0 handled itself (a shadow-EPT fill), which L1 must
        // not see (the fuzz under `shadow full` read it bare ≠ nested).
        if matches!(reason & 0xFFFF, 48 | 49) {
            cur.set_from_vmcs02(F::GUEST_PHYSICAL_ADDRESS, vmread(F::GUEST_PHYSICAL_ADDRESS));
        }
        if core::mem::take(&mut self.nested.synthetic) {
            // No exit of L2 happened: nothing was being delivered (SDM 27.2.4).
            for f in [F::IDT_VECTORING_INFO_FIELD, F::IDT_VECTORING_ERROR_CODE, F::VM_EXIT_INSTRUCTION_LEN, F::VMX_INSTRUCTION_INFO] {
                cur.set_from_vmcs02(f, 0);
            }
        }
        cur.set_from_vmcs02(F::VM_EXIT_REASON, reason.into());
        cur.set_from_vmcs02(F::EXIT_QUALIFICATION, qualification);
        // SDM 28.3.4: vmcs12's own remaining count, not VMCS0-2's.
        if let Some(t) = self.nested.ptimer12.filter(|_| exit12 & exitc::SAVE_PREEMPTION_TIMER != 0) {
            cur.set_from_vmcs02(F::VMX_PREEMPTION_TIMER_VALUE, t.saved().into());
        }
        // Exits clear the valid bit of the entry-interruption field (SDM 28.2.4)
        // and store IA32_EFER.LMA into "IA-32e mode guest" (IA32_VMX_MISC bit 5,
        // advertised as the CPU has it; SDM 28.2, "Recording VM-Exit Information").
        let info = cur.get(F::VM_ENTRY_INTR_INFO_FIELD);
        cur.set_from_vmcs02(F::VM_ENTRY_INTR_INFO_FIELD, info & !(1 << 31));
        let lma = efer & (1 << 10) != 0;
        let e12 = cur.get(F::VM_ENTRY_CONTROLS) & !u64::from(entry::IA32E_MODE_GUEST);
        cur.set_from_vmcs02(F::VM_ENTRY_CONTROLS, e12 | if lma { u64::from(entry::IA32E_MODE_GUEST) } else { 0 });
    }

    /// vmcs12's host state → VMCS0-1's guest state, so L1 resumes as after
    /// a VM exit (SDM 28.5), then the VM-exit MSR-load list (28.6). Makes
    /// VMCS0-1 current. `from_l2`: L2's IA32_EFER / IA32_PAT where the exit
    /// does not load them. `Err` = a VMX abort (SDM 28.7).
    fn load_vmcs12_host_state(&mut self, from_l2: L2Msrs) -> Result<(), alloc::string::String> {
        let cur = self.nested.current.as_ref().expect("exits need a current vmcs12");
        let h = |f: F| cur.get(f);
        let host64 = h(F::VM_EXIT_CONTROLS) as u32 & exitc::HOST_ADDRESS_SPACE_SIZE != 0;
        let exit12 = h(F::VM_EXIT_CONTROLS) as u32;
        let vals = [
            (F::GUEST_RIP, h(F::HOST_RIP)),
            (F::GUEST_RSP, h(F::HOST_RSP)),
            (F::GUEST_CR3, h(F::HOST_CR3)),
            (F::GUEST_CS_SELECTOR, h(F::HOST_CS_SELECTOR)),
            (F::GUEST_SS_SELECTOR, h(F::HOST_SS_SELECTOR)),
            (F::GUEST_DS_SELECTOR, h(F::HOST_DS_SELECTOR)),
            (F::GUEST_ES_SELECTOR, h(F::HOST_ES_SELECTOR)),
            (F::GUEST_FS_SELECTOR, h(F::HOST_FS_SELECTOR)),
            (F::GUEST_GS_SELECTOR, h(F::HOST_GS_SELECTOR)),
            (F::GUEST_TR_SELECTOR, h(F::HOST_TR_SELECTOR)),
            (F::GUEST_FS_BASE, h(F::HOST_FS_BASE)),
            (F::GUEST_GS_BASE, h(F::HOST_GS_BASE)),
            (F::GUEST_TR_BASE, h(F::HOST_TR_BASE)),
            (F::GUEST_GDTR_BASE, h(F::HOST_GDTR_BASE)),
            (F::GUEST_IDTR_BASE, h(F::HOST_IDTR_BASE)),
            (F::GUEST_SYSENTER_CS, h(F::HOST_IA32_SYSENTER_CS)),
            (F::GUEST_SYSENTER_ESP, h(F::HOST_IA32_SYSENTER_ESP)),
            (F::GUEST_SYSENTER_EIP, h(F::HOST_IA32_SYSENTER_EIP)),
            (F::CR4_READ_SHADOW, h(F::HOST_CR4)),
        ];
        let (cr0, cr4) = (h(F::HOST_CR0), h(F::HOST_CR4));
        let efer_l1 = if exit12 & exitc::LOAD_EFER != 0 { Some(h(F::HOST_IA32_EFER)) } else { None };
        let pat_l1 = (exit12 & exitc::LOAD_PAT != 0).then(|| h(F::HOST_IA32_PAT));

        let phase = self.prof.enter(Phase::VmcsSwitch);
        // SAFETY: VMCS0-1 is ours and was current before the L2 entry.
        unsafe { insn::vmptrld(self.nested.vmcs01) }.expect("VMPTRLD of VMCS0-1");
        self.prof.leave(phase);
        self.nested.in_l2 = false;
        // VMCS0-1 is current and has every field written here (setup_vmcs01
        // wrote each, checked): `wr`/`rd` cannot fail.
        // SDM 28.5.1: CR0.CD and NW are not loaded from HOST_CR0; L1 keeps
        // its own (L0 holds them in the read shadow, never in the CPU).
        let off = crate::vmx::run::CR0_ALWAYS_OFF;
        let keep = rd(F::CR0_READ_SHADOW) & off;
        for (f, v) in vals {
            wr(f, v);
        }
        wr(F::CR0_READ_SHADOW, (cr0 & !off) | keep);
        wr(F::GUEST_CR0, crate::vmx::run::l1_cr0_to_cpu(cr0, rd(F::CR0_GUEST_HOST_MASK)));
        wr(F::GUEST_CR4, cr4 | rd(F::CR4_GUEST_HOST_MASK));
        wr(F::GUEST_RFLAGS, 0x2);
        wr(F::GUEST_DR7, 0x400);
        wr(F::GUEST_IA32_DEBUGCTL, 0);
        wr(F::GUEST_INTERRUPTIBILITY_INFO, 0);
        wr(F::GUEST_CS_AR_BYTES, if host64 { 0xA09B } else { 0xC09B });
        wr(F::GUEST_CS_BASE, 0);
        wr(F::GUEST_CS_LIMIT, 0xFFFF_FFFF);
        for (sel, base, limit, ar) in [
            (F::GUEST_SS_SELECTOR, F::GUEST_SS_BASE, F::GUEST_SS_LIMIT, F::GUEST_SS_AR_BYTES),
            (F::GUEST_DS_SELECTOR, F::GUEST_DS_BASE, F::GUEST_DS_LIMIT, F::GUEST_DS_AR_BYTES),
            (F::GUEST_ES_SELECTOR, F::GUEST_ES_BASE, F::GUEST_ES_LIMIT, F::GUEST_ES_AR_BYTES),
            (F::GUEST_FS_SELECTOR, F::GUEST_FS_BASE, F::GUEST_FS_LIMIT, F::GUEST_FS_AR_BYTES),
            (F::GUEST_GS_SELECTOR, F::GUEST_GS_BASE, F::GUEST_GS_LIMIT, F::GUEST_GS_AR_BYTES),
        ] {
            let unusable = rd(sel) == 0 && sel != F::GUEST_SS_SELECTOR;
            wr(ar, if unusable { 1 << 16 } else { 0xC093 });
            wr(limit, 0xFFFF_FFFF);
            if !matches!(base, F::GUEST_FS_BASE | F::GUEST_GS_BASE) {
                wr(base, 0);
            }
        }
        wr(F::GUEST_TR_LIMIT, 0x67);
        wr(F::GUEST_TR_AR_BYTES, 0x8B);
        wr(F::GUEST_GDTR_LIMIT, 0xFFFF);
        wr(F::GUEST_IDTR_LIMIT, 0xFFFF);
        wr(F::GUEST_LDTR_SELECTOR, 0);
        wr(F::GUEST_LDTR_AR_BYTES, 1 << 16);
        let efer = from_l2.efer.unwrap_or_else(|| rd(F::GUEST_IA32_EFER));
        let efer = efer_l1.unwrap_or(if host64 { efer | (1 << 8) | (1 << 10) } else { efer & !((1 << 8) | (1 << 10)) });
        wr(F::GUEST_IA32_EFER, efer);
        if let Some(pat) = pat_l1.or(from_l2.pat) {
            wr(F::GUEST_IA32_PAT, pat);
        }
        let e01 = rd(F::VM_ENTRY_CONTROLS) & !u64::from(entry::IA32E_MODE_GUEST);
        wr(F::VM_ENTRY_CONTROLS, e01 | if host64 { u64::from(entry::IA32E_MODE_GUEST) } else { 0 });
        let list = (h(F::VM_EXIT_MSR_LOAD_ADDR), h(F::VM_EXIT_MSR_LOAD_COUNT));
        if let Err(n) = self.load_msr_list(list) {
            return Err(alloc::format!("VMX abort: VM-exit MSR-load list entry {n} refused (SDM 28.7)"));
        }
        self.shadow_push();
        Ok(())
    }
}


/// nvmx offers L1 "VMCS shadowing" (secondary bit 14): the CPU has it
/// (`nvmx_vmx::nested::l1_vmx_msr` intersects with the CPU's allowed-1).
fn shadowing_offered() -> bool {
    crate::vmx::probe()
        .and_then(|host| nvmx_vmx::nested::l1_vmx_msr(host, nvmx_vmx::caps::IA32_VMX_PROCBASED_CTLS2))
        .is_some_and(|m| (m >> 32) as u32 & proc2::VMCS_SHADOWING != 0)
}

impl Vcpu {
    /// An L2 VMREAD/VMWRITE (exit 23/25; VMCS0-2 is current and never
    /// shadows) when vmcs12 has "VMCS shadowing" on: what the CPU does in
    /// VMX non-root operation (SDM 32.3, `nvmx_vmx::shadow12`) — the
    /// instruction on the shadow vmcs12 the link pointer names (L1 memory
    /// in nvmx's format; it is not the current vmcs12, whose cache L0
    /// keeps, as VM entry checked it is a shadow VMCS and the current one
    /// is not), VMfail, or #GP(0), with L2's RFLAGS and RIP as after the
    /// instruction. `None`: L1's exit to reflect (vmcs12's bitmaps or
    /// shadowing off), and for now a memory operand (L2's page walk through
    /// EPT1-2 is not emulated: the exit goes to L1, README "limits").
    #[inline(never)]
    fn handle_l2_vmread_shadowed(&mut self, write: bool) -> Option<Result<bool, alloc::string::String>> {
        let cur = self.nested.current.as_ref()?;
        if !nvmx_vmx::shadow12::shadowing12(|f| cur.get(f)) {
            return None;
        }
        let info = InstructionInfo::decode(vmread(F::VMX_INSTRUCTION_INFO) as u32);
        // VMCS0-2 is current: these are L2's mode, CPL and registers.
        let insn = nvmx_vmx::shadow12::L2Insn {
            write,
            field_operand: self.gpr(info.reg2),
            long64: self.l1_long64(),
            cpl: ((vmread(F::GUEST_CS_AR_BYTES) >> 5) & 3) as u8,
        };
        let mem = self.l1mem();
        // A bitmap outside L1's RAM reads all-ones: every bit set.
        let bit = |map: u64, n: u64| mem.read_u64(map + (n / 64) * 8).is_none_or(|w| w & (1 << (n % 64)) != 0);
        let vmwrite_any = crate::vmx::probe().is_some_and(|c| c.misc & (1 << 29) != 0);
        let decision = nvmx_vmx::shadow12::l2_vmread_vmwrite(&insn, |f| cur.get(f), bit, vmwrite_any);
        use nvmx_vmx::shadow12::L2Access;
        if decision == L2Access::ExitToL1 || !info.is_register {
            return None;
        }
        let link = cur.get(F::VMCS_LINK_POINTER);
        self.nested.note = None;
        match decision {
            L2Access::ExitToL1 => return None,
            L2Access::GeneralProtection => return Some(self.l2_exception(13, Some(0))),
            L2Access::FailInvalid => {
                self.fail_invalid();
            }
            L2Access::Fail(error) => {
                self.fail(error);
            }
            L2Access::Shadow(f, access) => {
                let at = link + FIELDS_OFFSET + 8 * f.index() as u64;
                // Outside L1's RAM: reads all-ones, writes dropped (a PC).
                let raw = mem.read_u64(at).unwrap_or(u64::MAX);
                if write {
                    let value = self.gpr_operand(info.reg1);
                    mem.write_u64(at, nvmx_vmx::shadow12::written_value(f, access, raw, value));
                } else {
                    let value = nvmx_vmx::shadow12::read_value(f, access, raw);
                    self.set_gpr(info.reg1, if insn.long64 { value } else { value & 0xFFFF_FFFF });
                }
                self.succeed();
            }
        }
        vmwrite(F::GUEST_RIP, vmread(F::GUEST_RIP) + vmread(F::VM_EXIT_INSTRUCTION_LEN));
        Some(Ok(true))
    }
}

impl Vcpu {
    /// `vmcs 01|12|02` on this core: VMCS0-1 and VMCS0-2 read with VMREAD
    /// (made current for the dump, then the running one again), VMCS1-2
    /// from L0's cache of it.
    pub(super) fn dump(&mut self, which: nvmx_shell::VmcsKind) -> alloc::string::String {
        use nvmx_shell::VmcsKind;
        let cpu = self.cpu;
        let running = if self.nested.in_l2 { self.nested.vmcs02 } else { self.nested.vmcs01 };
        let target = match which {
            VmcsKind::V01 => self.nested.vmcs01,
            VmcsKind::V02 if self.nested.vmcs02 != 0 => self.nested.vmcs02,
            VmcsKind::V02 => return alloc::format!("error: cpu {cpu}: no VMCS0-2 yet (L1 has not launched an L2)\n"),
            VmcsKind::V12 => {
                self.shadow_pull();
                self.sync_rare();
                let Some(c) = self.nested.current.as_ref() else {
                    return alloc::format!("error: cpu {cpu}: L1 has no current VMCS1-2\n");
                };
                let title = alloc::format!(
                    "VMCS1-2 of cpu {cpu} at L1 guest-physical {:#x} ({}; L0's cached copy){}",
                    c.gpa,
                    if c.launched { "launched" } else { "clear" },
                    self.nested.last_check.map_or(alloc::string::String::new(), |w| alloc::format!("\nlast failed VM-entry check: {w}"))
                );
                return crate::vmx::dump::dump_with(&title, |f| Some(c.get(f)));
            }
        };
        let title = alloc::format!("VMCS0-{} of cpu {cpu}", if which == VmcsKind::V01 { 1 } else { 2 });
        if target == running {
            return crate::vmx::dump::dump_current(&title);
        }
        // SAFETY: both are L0's VMCS regions; the running one is made current again.
        unsafe {
            let _ = insn::vmptrld(target);
            let text = crate::vmx::dump::dump_current(&title);
            let _ = insn::vmptrld(running);
            text
        }
    }
}

/// The context of the exit stub's fast path (`nvmx_vmx::entry::enter_fast`)
/// for one entry of VMCS0-1: set by [`Vcpu::fast_exit`] before the entry,
/// read by [`vmrw_exit`] after each exit of it.
#[repr(C)]
pub(super) struct FastCtx {
    head: nvmx_vmx::entry::FastExit,
    /// The current vmcs12's cache and its three dirty sets (`Vmcs12::set`).
    fields: *mut u64,
    stale02: *mut FieldSet,
    unchecked: *mut FieldSet,
    unshadowed: *mut FieldSet,
    /// Fields left to the general path (a sync pending for them).
    deny: FieldSet,
    /// TSC by which the general path runs again: the quiet stretch's end,
    /// at most PREEMPT_TICKS of the timer after the entry (the shell, the
    /// mailbox and the L1's PC are looked at as often as without exits).
    deadline: u64,
    timer_rate: u32,
    stats: &'static crate::stats::CpuStats,
    last_reason: &'static core::sync::atomic::AtomicU64,
}

impl FastCtx {
    pub(super) fn new(cpu: usize, timer_rate: u32) -> FastCtx {
        let shared = super::shared(cpu);
        FastCtx {
            head: nvmx_vmx::entry::FastExit { handler: vmrw_exit },
            fields: core::ptr::null_mut(),
            stale02: core::ptr::null_mut(),
            unchecked: core::ptr::null_mut(),
            unshadowed: core::ptr::null_mut(),
            deny: FieldSet::EMPTY,
            deadline: 0,
            timer_rate,
            stats: &shared.stats,
            last_reason: &shared.last_reason,
        }
    }
}

/// An emulated VMREAD/VMWRITE of L1 served in the exit stub (the fast
/// path of [`Vcpu::vmrw_fast`], same conditions and effects, with what
/// depends only on L0's state decided before the entry by
/// [`Vcpu::fast_exit`]): exits 23/25 with register operands (SDM 28.2.5),
/// CPL 0, a field of the table found by one lookup (`field::slot_of`) that
/// needs no sync and, for VMWRITE, is not read-only; the value moved in the
/// vmcs12 cache (dirty sets as `Vmcs12::set`), VMsucceed (SDM 32.2), RIP
/// past the instruction, an STI/MOV-SS shadow over, the exit counted as
/// `step`'s `record` counts it (not put in the trace ring), the preemption
/// timer renewed to the deadline. 0: nothing was changed, the exit goes
/// the general way (from `step`'s start, `vmrw_fast` included).
///
/// # Safety
/// Called by the exit stub only, on the core of the L1 whose VMCS0-1 is
/// current, with `ctx` from [`Vcpu::fast_exit`] for this entry: its
/// pointers are the current vmcs12's, which nothing else touches while
/// the stub runs (the vCPU's owner waits in `run::enter`).
unsafe extern "C" fn vmrw_exit(regs: *mut super::GuestRegs, ctx: *mut nvmx_vmx::entry::FastExit) -> u64 {
    let start = crate::arch::cpu::rdtsc();
    // SAFETY: `ctx` is the head of the FastCtx `fast_exit` returned
    // (repr(C), first field), valid for this entry.
    let c = unsafe { &*(ctx as *const FastCtx) };
    if start >= c.deadline {
        return 0;
    }
    let reason = rd(F::VM_EXIT_REASON);
    let write = match reason {
        23 => false,
        25 => true,
        _ => return 0,
    };
    // Instruction information (SDM 28.2.5): bit 10 register operand,
    // bits 6:3 reg1 (VMREAD destination, VMWRITE source), 31:28 reg2 (the
    // encoding).
    let info = rd(F::VMX_INSTRUCTION_INFO);
    let (reg1, reg2) = (((info >> 3) & 0xF) as usize, ((info >> 28) & 0xF) as usize);
    let cs_ar = rd(F::GUEST_CS_AR_BYTES);
    // RSP lives in VMCS0-1, not in `regs`: as VMWRITE's source (the
    // L1's own entry stub writes HOST_RSP so) it is read from there; as
    // VMREAD's destination or as the encoding the general path serves it.
    if info & (1 << 10) == 0 || (cs_ar >> 5) & 3 != 0 || (reg1 == 4 && !write) || reg2 == 4 {
        return 0;
    }
    // SAFETY: the GuestRegs the stub just filled; nothing else holds it.
    let regs = unsafe { &mut (*regs).gpr };
    // 64-bit mode: EFER.LMA and CS.L (`l1_long64`); else 32-bit operands.
    let width = if cs_ar & (1 << 13) != 0 && rd(F::GUEST_IA32_EFER) & (1 << 10) != 0 { u64::MAX } else { 0xFFFF_FFFF };
    let enc = regs[reg2] & width;
    let Some(slot) = u32::try_from(enc).ok().and_then(field::slot_of) else {
        return 0;
    };
    let (word, bit) = (slot / 64, 1u64 << (slot % 64));
    if c.deny.0[word] & bit != 0 {
        return 0;
    }
    let enc = enc as u32;
    // Width from encoding bits 14:13 (0 16-bit, 1 64-bit, 2 32-bit,
    // 3 natural); bit 0 the "high" half of a 64-bit field.
    let mask = match (enc >> 13) & 3 {
        0 => 0xFFFF,
        2 => 0xFFFF_FFFF,
        _ => u64::MAX,
    };
    // SAFETY: `fields` is the current vmcs12's cache (one u64 per field of
    // the table, `slot` < its length) and the sets its own, valid for this
    // entry (`fast_exit`), touched by nothing else meanwhile.
    unsafe {
        let cached = c.fields.add(slot);
        if write {
            // Type 1 (bits 11:10): read-only; the general path decides.
            if (enc >> 10) & 3 == 1 {
                return 0;
            }
            let value = if reg1 == 4 { rd(F::GUEST_RSP) } else { regs[reg1] } & width;
            let new = if enc & 1 != 0 { (*cached & 0xFFFF_FFFF) | (value << 32) } else { value & mask };
            if *cached != new {
                *cached = new;
                (*c.stale02).0[word] |= bit;
                (*c.unchecked).0[word] |= bit;
                (*c.unshadowed).0[word] |= bit;
            }
        } else {
            let raw = *cached;
            regs[reg1] = if enc & 1 != 0 { raw >> 32 } else { raw & mask } & width;
        }
    }
    if c.stats.window_end.load(core::sync::atomic::Ordering::Relaxed) == 0 {
        let counts = if write { &c.stats.fields.writes } else { &c.stats.fields.reads };
        let n = &counts[slot];
        n.store(n.load(core::sync::atomic::Ordering::Relaxed) + 1, core::sync::atomic::Ordering::Relaxed);
    }
    // VMsucceed (arithmetic flags clear), RIP past the instruction, an
    // STI/MOV-SS shadow over (and Bochs' "blocking by SMI", which `step`
    // clears before every entry).
    wr(F::GUEST_RFLAGS, rd(F::GUEST_RFLAGS) & !RFLAGS_ARITH);
    wr(F::GUEST_RIP, rd(F::GUEST_RIP) + rd(F::VM_EXIT_INSTRUCTION_LEN));
    let intr = rd(F::GUEST_INTERRUPTIBILITY_INFO);
    if intr & 7 != 0 {
        wr(F::GUEST_INTERRUPTIBILITY_INFO, intr & !7);
    }
    // The timer bound `step` set, renewed to what is left of it.
    let now = crate::arch::cpu::rdtsc();
    wr(F::VMX_PREEMPTION_TIMER_VALUE, (c.deadline.saturating_sub(now) >> c.timer_rate) + 1);
    c.stats.record(crate::stats::Level::L1, reason as u16, true, now - start);
    c.last_reason.store(reason, core::sync::atomic::Ordering::Relaxed);
    1
}

/// L2's IA32_EFER and IA32_PAT at a VM exit that does not load them from
/// vmcs12's host state (`None`: loaded, or L2 never ran).
#[derive(Clone, Copy, Default)]
struct L2Msrs {
    efer: Option<u64>,
    pat: Option<u64>,
}
