//! One L1 per core: its memory, its VMCS0-1, and the loop that runs it and
//! handles its exits. What the shell shows of an L1 (state, console, counters,
//! trace) lives in [`L1Shared`], readable from any core.

mod events;
mod fresh;
pub mod image;
mod mmio;
mod nested;
pub mod platform;
mod shadow;
pub mod smp;
pub mod uart;

use alloc::string::String;
use core::sync::atomic::{AtomicU8, AtomicU64, Ordering};

use log::{info, warn};
use nvmx_vmx::field::Field as F;
use spin::Mutex;

use crate::arch::cpu;
use crate::percpu::{self, MAX_CPUS};
use crate::stats::{CpuStats, Level, Phase, Profiler};
use crate::vmx::run::{self, GuestRegs, vmread, vmread_known, vmwrite, vmwrite_known};
use crate::vmx::{self, insn};
use platform::L1Platform;
use uart::ConsoleRing;

/// What an L1 is doing, as `l1` shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum L1State {
    /// Not started (no VMX, or not yet).
    NotStarted,
    Running,
    /// `cli; hlt` with no NMI to come: halted for good (finished its work).
    Halted,
    /// ACPI S5 (PM1a_CNT SLP_EN with SLP_TYP 5).
    PoweredOff,
    /// Reset (reset register, 0xCF9, i8042 0xFE, port 0x92): restarts.
    Restarting,
    /// An exit convention: QEMU's isa-debug-exit (0xF4) or Bochs' 0x8900
    /// "Shutdown", with its code.
    Exited(u32),
    /// Stopped by L0: why.
    Stopped(String),
}

impl L1State {
    /// The L1 ended its run by itself (halted for good, powered off, exited):
    /// L0 enters it no more until `l1 start|restart`, and keeps its memory
    /// and VMCS0-1 until then — quiescent, for `integrity` and `vmcs 01`.
    pub fn is_quiescent(&self) -> bool {
        matches!(self, L1State::Halted | L1State::PoweredOff | L1State::Exited(_))
    }
}

/// Requests from the shell to an L1's core.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Control {
    None = 0,
    Stop = 1,
    Start = 2,
    Restart = 3,
}

/// One exit in the trace ring.
#[derive(Clone, Copy, Debug, Default)]
pub struct TraceEntry {
    pub tsc: u64,
    pub reason: u32,
    pub qualification: u64,
    pub rip: u64,
    pub level_l2: bool,
    pub cycles: u64,
    /// How an emulated VMX instruction ended when it did not succeed.
    pub note: Option<&'static str>,
}

/// Exits kept in the trace ring.
pub const TRACE_LEN: usize = 64;

/// The trace ring of one core.
pub struct Trace {
    entries: [TraceEntry; TRACE_LEN],
    next: usize,
    count: u64,
}

impl Trace {
    const fn new() -> Self {
        Trace { entries: [TraceEntry { tsc: 0, reason: 0, qualification: 0, rip: 0, level_l2: false, cycles: 0, note: None }; TRACE_LEN], next: 0, count: 0 }
    }
    fn push(&mut self, e: TraceEntry) {
        self.entries[self.next] = e;
        self.next = (self.next + 1) % TRACE_LEN;
        self.count += 1;
    }
    /// The newest `n` entries, oldest first.
    pub fn last(&self, n: usize) -> impl Iterator<Item = &TraceEntry> {
        let kept = (self.count as usize).min(TRACE_LEN);
        let n = n.min(kept);
        (0..n).map(move |i| &self.entries[(self.next + TRACE_LEN - n + i) % TRACE_LEN])
    }
}

/// The part of an L1 that other cores (the shell) read.
pub struct L1Shared {
    pub state: Mutex<L1State>,
    pub console: Mutex<Option<ConsoleRing>>,
    pub stats: CpuStats,
    pub trace: Mutex<Trace>,
    pub control: AtomicU8,
    pub started_tsc: AtomicU64,
    pub last_reason: AtomicU64,
    /// Shadowing wanted by the shell: 0 no change, 1 off, 2 on (the fixed
    /// set), 3 adaptive, 4 full.
    pub shadow_want: AtomicU8,
    /// The shell's last choice (0 none: the command line's), kept for
    /// L1 restarts.
    pub shadow_pref: AtomicU8,
    /// Shadowing state as the core last applied it, and its field count.
    pub shadow_on: core::sync::atomic::AtomicBool,
    pub shadow_fields: core::sync::atomic::AtomicUsize,
    /// The policy (0 fixed set, 1 adaptive, 2 full), and the fields shadowed for VMREAD (words
    /// 0-2) and VMWRITE (3-5) as `FieldSet` words, for `fields` and `shadow`.
    pub shadow_policy: AtomicU8,
    pub shadow_sets: [AtomicU64; 6],
    /// L1 command line set from the shell (`l1 restart <cpu> <args>`),
    /// used instead of the nvmx command line's from the next start on.
    pub args: Mutex<Option<String>>,
    /// The nested VM-entry check that failed last (VMfailValid 7/8 or a
    /// VM-entry failure), for `l1 <cpu>`.
    pub last_check: Mutex<Option<&'static str>>,
    /// Every failed nested VM-entry check by name, with counts (`l1 <cpu>`).
    pub checks: nested::CheckTally,
    /// Entries the CPU refused after nvmx's own checks passed (`l1`, `stats`).
    pub fallbacks: AtomicU64,
    /// L0's own VMREAD/VMWRITEs on VMCS0-2 and the shadow VMCS that failed
    /// other than for a field this CPU lacks (`l1`).
    pub vmx_errors: AtomicU64,
    /// Bytes for the L1's COM1 receiver (`attach`), drained on its core.
    pub rx: Mutex<platform::RxQueue>,
    /// Resets of the L1's machine (reset register, 0xCF9, i8042, port
    /// 0x92), each followed by a fresh start (`l1`).
    pub resets: AtomicU64,
}

impl L1Shared {
    const fn new() -> Self {
        L1Shared {
            state: Mutex::new(L1State::NotStarted),
            console: Mutex::new(None),
            stats: CpuStats::new(),
            trace: Mutex::new(Trace::new()),
            control: AtomicU8::new(0),
            started_tsc: AtomicU64::new(0),
            last_reason: AtomicU64::new(u64::MAX),
            args: Mutex::new(None),
            last_check: Mutex::new(None),
            checks: nested::CheckTally::new(),
            fallbacks: AtomicU64::new(0),
            vmx_errors: AtomicU64::new(0),
            rx: Mutex::new(alloc::collections::VecDeque::new()),
            resets: AtomicU64::new(0),
            shadow_want: AtomicU8::new(0),
            shadow_pref: AtomicU8::new(0),
            shadow_on: core::sync::atomic::AtomicBool::new(false),
            shadow_fields: core::sync::atomic::AtomicUsize::new(0),
            shadow_policy: AtomicU8::new(0),
            shadow_sets: [const { AtomicU64::new(0) }; 6],
        }
    }
    pub fn request(&self, c: Control) {
        self.control.store(c as u8, Ordering::Release);
    }
    fn take_request(&self) -> Control {
        match self.control.swap(0, Ordering::AcqRel) {
            1 => Control::Stop,
            2 => Control::Start,
            3 => Control::Restart,
            _ => Control::None,
        }
    }
}

static L1S: [L1Shared; MAX_CPUS] = [const { L1Shared::new() }; MAX_CPUS];

/// Each core's running vCPU, for the mailbox handler on that same core.
/// Set by `run_forever` before every point where requests are answered
/// (between exits, never while `step` holds the vCPU).
static VCPUS: [core::sync::atomic::AtomicPtr<Vcpu>; MAX_CPUS] =
    [const { core::sync::atomic::AtomicPtr::new(core::ptr::null_mut()) }; MAX_CPUS];

/// Applies a shadowing switch the shell asked for, between two exits.
fn apply_shadow(cpu: usize, v: &mut Vcpu) {
    let shared = &L1S[cpu];
    let want = shared.shadow_want.load(Ordering::Acquire);
    if want == 0 {
        return;
    }
    let policy = match want {
        2 => Some(shadow::Policy::Fixed),
        3 => Some(shadow::Policy::Adaptive),
        4 => Some(shadow::Policy::Full),
        _ => None,
    };
    if let Err(e) = v.set_shadowing(policy) {
        warn!("l1: cpu {cpu}: shadow: {e}");
    }
    publish_shadow(cpu, &v.nested.shadow);
    shared.shadow_on.store(v.nested.shadow.on, Ordering::Release);
    // Cleared only now, so the shell, which waits for 0, reads the new state;
    // a newer request (another value) stays pending.
    let _ = shared.shadow_want.compare_exchange(want, 0, Ordering::AcqRel, Ordering::Acquire);
}

/// Makes a core's shadow set visible to the shell (after a switch or a join).
pub(crate) fn publish_shadow(cpu: usize, sh: &shadow::Shadow) {
    let shared = &L1S[cpu];
    let (r, w) = sh.sets();
    for (slot, word) in shared.shadow_sets.iter().zip(r.0.iter().chain(w.0.iter())) {
        slot.store(*word, Ordering::Relaxed);
    }
    shared.shadow_fields.store(sh.field_count(), Ordering::Relaxed);
    let policy = match sh.policy {
        shadow::Policy::Fixed => 0,
        shadow::Policy::Adaptive => 1,
        shadow::Policy::Full => 2,
    };
    shared.shadow_policy.store(policy, Ordering::Relaxed);
}

/// The shell runs on the boot core between its L1's exits: it applies that
/// core's switch itself (the other cores do it in their loops).
pub fn apply_shadow_here() {
    let me = percpu::current().index;
    let ptr = VCPUS[me].load(Ordering::Acquire);
    // SAFETY: as in `answer`: this core's own vCPU, between exits.
    if let Some(v) = unsafe { ptr.as_mut() } {
        apply_shadow(me, v);
    } else {
        L1S[me].shadow_want.store(0, Ordering::Release);
    }
}

/// Answers a shell request on this core (the mailbox handler).
pub fn answer(req: crate::mailbox::Request) -> String {
    let me = percpu::current().index;
    let ptr = VCPUS[me].load(Ordering::Acquire);
    // SAFETY: only this core sets or reads its slot, and requests are answered
    // only between exits, when no other reference to the vCPU is live.
    let Some(v) = (unsafe { ptr.as_mut() }) else {
        return alloc::format!("error: cpu {me} runs no L1, so it has no VMCS loaded\n");
    };
    match req {
        crate::mailbox::Request::DumpVmcs(which) => v.dump(which),
        crate::mailbox::Request::Platform => v.platform_view(),
        crate::mailbox::Request::Integrity => v.measure(),
    }
}

impl Vcpu {
    /// `integrity` on this core: the hash of VMCS0-1's host-state fields
    /// (L0's own: what every exit from this L1 loads, SDM 28.5), and, if the
    /// L1 is halted — quiescent: L0 enters it no more until `l1 start|restart`,
    /// and no one else may write its RAM — the hash of its whole RAM.
    fn measure(&mut self) -> String {
        use nvmx_shell::integrity::{Hasher, Item, encode, hash_bytes};
        let cpu = self.cpu;
        let running = if self.nested.in_l2 { self.nested.vmcs02() } else { self.nested.vmcs01 };
        let vmcs01 = self.nested.vmcs01;
        let mut h = Hasher::default();
        let mut n = 0;
        let mut read_all = || {
            for f in nvmx_vmx::field::ALL.iter().filter(|f| f.group() == nvmx_vmx::field::Group::HostState) {
                h.word(u64::from(f.encoding()));
                // A field this CPU lacks hashes as a value no field has.
                h.word(insn::vmread(f.encoding()).unwrap_or(0xDEAD_0000_0000_DEAD));
                n += 1;
            }
        };
        if running == vmcs01 {
            read_all();
        } else {
            // SAFETY: both are L0's VMCS regions on this core; the running one
            // is made current again before the next entry (as `vmcs 01` does).
            unsafe {
                let _ = insn::vmptrld(vmcs01);
                read_all();
                let _ = insn::vmptrld(running);
            }
        }
        // A VMCS0-1 never entered (vCPU 1 of a two-vCPU L1 parked for SIPI)
        // has no HOST_RSP yet (the entry stub writes it): nothing to compare.
        let mut items = alloc::vec::Vec::new();
        if self.launched {
            items.push(Item {
                name: alloc::format!("cpu {cpu} VMCS0-1 host state"),
                hash: h.finish(),
                detail: alloc::format!("{n} fields, read on cpu {cpu}"),
            });
        }
        if L1S[cpu].state.lock().is_quiescent() {
            // SAFETY: the L1's own RAM chunk, identity mapped and owned by this
            // vCPU; the L1 is quiescent, so nothing writes it while it is read.
            let ram = unsafe { core::slice::from_raw_parts(self.mem_base as *const u8, self.mem_size as usize) };
            items.push(Item {
                name: alloc::format!("cpu {cpu} L1 RAM"),
                hash: hash_bytes(ram),
                detail: alloc::format!("quiescent L1, {} MiB at host {:#x}", self.mem_size >> 20, self.mem_base),
            });
        }
        encode(&items)
    }
}

/// The shared state of core `cpu`'s L1.
pub fn shared(cpu: usize) -> &'static L1Shared {
    &L1S[cpu]
}

/// L1 settings from the nvmx command line.
pub struct L1Config {
    /// Guest-physical memory per L1 in bytes (`l1mem=<MiB>`, default 32).
    pub mem_size: u64,
    /// The L1's own command line (`l1args=a,b,c` → "a b c"), per core
    /// overrides with `l1args<N>=...`.
    pub args: String,
    /// Expose VMX to the L1 and emulate it (`nested=on|off`).
    pub nested: bool,
}

impl L1Config {
    pub fn for_cpu(cpu: usize) -> L1Config {
        let info = crate::bootinfo::get();
        let mem_mib = info.arg("l1mem").and_then(|v| v.parse::<u64>().ok()).unwrap_or(32).clamp(4, 4096);
        let key = alloc::format!("l1args{cpu}");
        // A GRUB module L1 gets its module string unless l1args says otherwise.
        let module_args = image::l1_image(cpu).1;
        // Commas stand for spaces in `l1args=` only: a module string is the
        // L1's command line as written (Linux's `console=ttyS0,115200`).
        let from_cmdline = info.arg(&key).or_else(|| info.arg("l1args")).map(|a| a.replace(',', " "));
        let raw = from_cmdline.unwrap_or_else(|| String::from(module_args.unwrap_or("workload=forum exits=0")));
        let args = L1S[cpu].args.lock().clone().unwrap_or(raw);
        let nested = info.arg("nested") != Some("off");
        L1Config { mem_size: (mem_mib << 20).next_multiple_of(2 << 20), args, nested }
    }
}

/// The L0-private side of a running L1 (lives on its core's stack).
struct Vcpu {
    regs: GuestRegs,
    launched: bool,
    /// The L1's PC: devices, time, interrupts.
    platform: L1Platform,
    /// The exit VMCS0-1 holds was just handled (its IDT-vectoring
    /// information is current); cleared once looked at.
    l1_exit_pending: bool,
    cpu: usize,
    mem_base: u64,
    mem_size: u64,
    nested: nested::Nested,
    /// L1's values of MSRs the CPU has but L0 keeps to itself (MTRRs,
    /// MISC_ENABLE, …): L1 reads back what it wrote, the hardware is untouched.
    msrs: hashbrown::HashMap<u32, u64>,
    /// Where L0's cycles go (`bench`'s breakdown; off unless asked).
    prof: Profiler,
    /// TSC when the last exit's handling was counted (0: none yet).
    handled_tsc: u64,
    /// The exit stub's fast path for emulated VMREAD/VMWRITE (`nested::vmrw_exit`).
    fast: nested::FastCtx,
    /// Index in a two-vCPU L1 (`l1vcpus=2`; `smp.rs`), else `None`.
    vcpu_index: Option<usize>,
    /// An AP parked in wait-for-SIPI: L0 does not enter it.
    wait_sipi: bool,
    /// INIT came since the last SIPI (a SIPI counts only after one).
    got_init: bool,
    /// vCPU 0's start this AP belongs to (`smp::generation`).
    generation: u64,
    /// Every frame built for this L1, freed when it is dropped (last field:
    /// dropped after the VMCSs were cleared in `drop`).
    _owned: crate::mm::frames::Owned,
}

impl Drop for Vcpu {
    /// Makes the L1's VMCSs inactive before their frames go back (SDM 25.11.1:
    /// VMCLEAR before a VMCS region is reused).
    fn drop(&mut self) {
        for vmcs in [self.nested.vmcs01, self.nested.vmcs02(), self.nested.shadow.vmcs] {
            if vmcs != 0 {
                // SAFETY: L0's own VMCS regions, about to be freed.
                let _ = unsafe { insn::vmclear(vmcs) };
            }
        }
    }
}

/// Outcome of handling one exit.
enum Handled {
    /// Go back to L1 at the same RIP.
    Resume,
    /// The instruction was emulated: advance RIP past it and resume.
    Skip,
    /// An emulated VMX instruction that failed architecturally (VMfail):
    /// advance RIP, resume, but count it as not completed.
    SkipFailed,
    /// VMLAUNCH/VMRESUME emulated: VMCS0-2 is current, run L2.
    EnterL2,
    /// VMLAUNCH/VMRESUME ended in a VM-entry failure: L1 resumes at its
    /// host RIP (already in VMCS0-1); not a completion.
    EntryFailed,
    /// Inject a hardware exception (vector, error code) and resume.
    Inject(u8, Option<u32>),
    /// L1 halted for good.
    Halt,
    /// Stop this L1 with a report.
    Stop(String),
}

/// MSRs the VMCS switches as guest-state fields (SDM 25.4.1): while L0
/// runs, the CPU holds L0's values, the guest's are in the current VMCS.
fn vmcs_msr(msr: u32) -> Option<F> {
    Some(match msr {
        EFER => F::GUEST_IA32_EFER,
        PAT => F::GUEST_IA32_PAT,
        DEBUGCTL => F::GUEST_IA32_DEBUGCTL,
        0x174 => F::GUEST_SYSENTER_CS,
        0x175 => F::GUEST_SYSENTER_ESP,
        0x176 => F::GUEST_SYSENTER_EIP,
        0xC000_0100 => F::GUEST_FS_BASE,
        0xC000_0101 => F::GUEST_GS_BASE,
        _ => return None,
    })
}

/// A decoded VM exit (SDM Appendix C; qualifications in 28.2.1).
enum Exit {
    ExternalInterrupt { vector: u8 },
    TripleFault,
    /// Interrupt window (7) or NMI window (8) open: injection follows.
    Window,
    Cpuid,
    Hlt,
    Io { port: u16, size: u8, input: bool, string: bool },
    Rdmsr,
    Wrmsr,
    CrAccess { cr: u8, access: u8, gpr: u8 },
    EptViolation { gpa: u64, qualification: u64 },
    PreemptionTimer,
    /// A VMX instruction (basic exit reason): emulated, or #UD without nested VMX.
    VmxInstruction(u16),
    Xsetbv,
    /// Instructions that are harmless to complete by skipping (INVD, WBINVD…).
    Skippable,
    EntryFailure { reason: u16, qualification: u64 },
    Unexpected { reason: u16 },
}

fn decode(reason: u32, qualification: u64) -> Exit {
    let basic = (reason & 0xFFFF) as u16;
    if reason & (1 << 31) != 0 {
        return Exit::EntryFailure { reason: basic, qualification };
    }
    match basic {
        1 => Exit::ExternalInterrupt { vector: (vmread(F::VM_EXIT_INTR_INFO) & 0xFF) as u8 },
        2 => Exit::TripleFault,
        7 | 8 => Exit::Window,
        10 => Exit::Cpuid,
        12 => Exit::Hlt,
        13 | 54 => Exit::Skippable,
        18..=27 | 50 | 53 => Exit::VmxInstruction(basic),
        28 => Exit::CrAccess {
            cr: (qualification & 0xF) as u8,
            access: ((qualification >> 4) & 3) as u8,
            gpr: ((qualification >> 8) & 0xF) as u8,
        },
        30 => Exit::Io {
            size: (qualification & 7) as u8 + 1,
            input: qualification & 8 != 0,
            string: qualification & 16 != 0,
            port: (qualification >> 16) as u16,
        },
        31 => Exit::Rdmsr,
        32 => Exit::Wrmsr,
        48 => Exit::EptViolation { gpa: vmread(F::GUEST_PHYSICAL_ADDRESS), qualification },
        52 => Exit::PreemptionTimer,
        55 => Exit::Xsetbv,
        _ => Exit::Unexpected { reason: basic },
    }
}

/// The IA32_FEATURE_CONTROL value L1 reads: locked, as firmware leaves it.
/// Without VMX exposed (until the nested issue lands) VMX stays off in it.
const L1_FEATURE_CONTROL: u64 = 1;
/// With nested VMX: locked, VMX outside SMX enabled.
const L1_FEATURE_CONTROL_VMX: u64 = 5;
const EFER: u32 = 0xC000_0080;
const EFER_LMA: u64 = 1 << 10;
const PAT: u32 = 0x277;
const DEBUGCTL: u32 = 0x1D9;

/// CPUID leaf ("NVMX") with which the built-in L1's timed forum loop opens
/// (ECX 0) and closes (ECX 1) its measurement window; the CPU answers it as
/// any unused leaf, L0 also counts only inside it (`bench`).
const BENCH_WINDOW_LEAF: u32 = 0x4E56_4D58;

impl Vcpu {
    /// The L1 opens (0) or closes (1) its `bench` window: the counters
    /// restart, or stop counting.
    fn bench_window(&mut self, edge: u32) {
        let stats = &L1S[self.cpu].stats;
        if edge == 0 {
            stats.reset();
            self.handled_tsc = 0;
        } else if stats.window_end.load(Ordering::Relaxed) == 0 {
            stats.window_end.store(cpu::rdtsc(), Ordering::Relaxed);
            self.prof.on = false;
        }
    }

    fn handle(&mut self, exit: Exit) -> Handled {
        match exit {
            Exit::ExternalInterrupt { vector } => {
                crate::apic::eoi();
                crate::mailbox::on_ipi(vector);
                Handled::Resume
            }
            Exit::PreemptionTimer | Exit::Window => Handled::Resume,
            Exit::TripleFault => Handled::Stop("triple fault".into()),
            Exit::Cpuid => {
                let (leaf, sub) = (self.regs.gpr[0] as u32, self.regs.gpr[1] as u32);
                if leaf == BENCH_WINDOW_LEAF {
                    self.bench_window(sub);
                }
                let (a, b, c, d) = self.l1_cpuid(leaf, sub);
                self.regs.gpr[0] = a.into();
                self.regs.gpr[3] = b.into();
                self.regs.gpr[1] = c.into();
                self.regs.gpr[2] = d.into();
                Handled::Skip
            }
            Exit::Hlt => self.platform_hlt(),
            Exit::Io { port, size, input, string } => {
                if string {
                    return Handled::Stop(alloc::format!("string I/O to port {port:#x} is not emulated"));
                }
                self.platform_io(port, size, input)
            }
            Exit::Rdmsr => match self.l1_rdmsr(self.regs.gpr[1] as u32) {
                Some(v) => {
                    self.regs.gpr[0] = v & 0xFFFF_FFFF;
                    self.regs.gpr[2] = v >> 32;
                    Handled::Skip
                }
                None => Handled::Inject(13, Some(0)),
            },
            Exit::Wrmsr => {
                let value = (self.regs.gpr[2] << 32) | (self.regs.gpr[0] & 0xFFFF_FFFF);
                if self.l1_wrmsr(self.regs.gpr[1] as u32, value) { Handled::Skip } else { Handled::Inject(13, Some(0)) }
            }
            Exit::CrAccess { cr, access, gpr } => self.cr_access(cr, access, gpr),
            Exit::EptViolation { gpa, qualification } => self.platform_mmio(gpa, qualification),
            Exit::VmxInstruction(_) if !self.nested.enabled => Handled::Inject(6, None),
            Exit::VmxInstruction(reason) => match self.emulate_vmx(reason) {
                nested::Emulated::Done { ok: true } => Handled::Skip,
                nested::Emulated::Done { ok: false } => Handled::SkipFailed,
                nested::Emulated::Fault(v, e) => Handled::Inject(v, e),
                nested::Emulated::EnterL2 => Handled::EnterL2,
                nested::Emulated::EntryFailed => Handled::EntryFailed,
                nested::Emulated::Stop(why) => Handled::Stop(why),
            },
            Exit::Xsetbv => {
                // XCR0 is per core and L0 does not use extended state: let L1 set it.
                let value = (self.regs.gpr[2] << 32) | (self.regs.gpr[0] & 0xFFFF_FFFF);
                if self.regs.gpr[1] == 0 && xcr0_valid(value) {
                    // XSETBV needs CR4.OSXSAVE in L0 too (else #UD in L0: found
                    // by Linux as L1). The CPU has XSAVE (L1 could set
                    // CR4.OSXSAVE); keep it in HOST_CR4 so exits keep it.
                    let cr4 = cpu::read_cr4();
                    if cr4 & CR4_OSXSAVE == 0 {
                        // SAFETY: setting OSXSAVE only enables XSETBV/XGETBV.
                        unsafe { cpu::write_cr4(cr4 | CR4_OSXSAVE) };
                        vmwrite(F::HOST_CR4, cr4 | CR4_OSXSAVE);
                    }
                    // SAFETY: XCR0 checked against CPUID.(0DH,0) and SDM 13.3's
                    // rules (no #GP); CR4.OSXSAVE is set just above.
                    unsafe {
                        core::arch::asm!("xsetbv", in("ecx") 0u32, in("eax") value as u32, in("edx") (value >> 32) as u32)
                    };
                    Handled::Skip
                } else {
                    Handled::Inject(13, Some(0))
                }
            }
            Exit::Skippable => Handled::Skip,
            Exit::EntryFailure { reason, qualification } => {
                Handled::Stop(alloc::format!("VM entry failed: reason {reason}, qualification {qualification:#x}"))
            }
            Exit::Unexpected { reason } => Handled::Stop(alloc::format!(
                "unexpected exit {reason} ({})",
                nvmx_vmx::exit::exit_reason_name(reason)
            )),
        }
    }

    /// RDMSR as L1 (or, on behalf of L1, its L2) sees it: `None` = #GP.
    /// EFER, PAT and DEBUGCTL come from the current VMCS (VMCS0-1 for L1,
    /// VMCS0-2 while an L2 exit is handled), which switches them.
    pub(super) fn l1_rdmsr(&mut self, msr: u32) -> Option<u64> {
        // IA32_APIC_BASE, x2APIC, TSC_DEADLINE: the L1's own local APIC,
        // never the host's (issue 9).
        self.platform_touched();
        self.platform.pc.advance(cpu::rdtsc());
        if let Some(r) = self.platform.pc.rdmsr(msr) {
            return r.ok();
        }
        if let Some(f) = vmcs_msr(msr) {
            return Some(vmread(f));
        }
        match msr {
            0x3A => Some(if self.nested.enabled { L1_FEATURE_CONTROL_VMX } else { L1_FEATURE_CONTROL }),
            // Without nested VMX the capability MSRs do not exist (#GP).
            0x480..=0x492 if self.nested.enabled => {
                vmx::probe().and_then(|caps| nvmx_vmx::nested::l1_vmx_msr(caps, msr))
            }
            0x480..=0x492 => None,
            _ => cpu::rdmsr_safe(msr).map(|hw| self.msrs.get(&msr).copied().unwrap_or(hw)),
        }
    }

    /// WRMSR as L1 sees it (also the VM-entry/exit MSR-load lists of a
    /// nested entry, as KVM does): `false` = #GP. MSRs the bitmap passes
    /// through go to the CPU; the others L0 keeps from the hardware: L1's
    /// value is kept for L1's reads, only for an MSR that exists (a missing
    /// one faults, as on the CPU). The CPU's checks of the value itself
    /// (reserved bits) are not repeated.
    pub(super) fn l1_wrmsr(&mut self, msr: u32, value: u64) -> bool {
        self.platform_touched();
        self.platform.pc.advance(cpu::rdtsc());
        if let Some(r) = self.platform.pc.wrmsr(msr, value) {
            return r.is_ok();
        }
        if let Some(f) = vmcs_msr(msr) {
            // Values the CPU refuses fault here, not at the next VM entry.
            let paging = vmread(F::GUEST_CR0) & (1 << 31) != 0;
            if nvmx_vmx::nested::wrmsr_value_faults(msr, value, vmread(f), paging) {
                return false;
            }
            let value = match msr {
                // LMA is the CPU's to set (SDM 10.8.5); keep the current one.
                EFER => (value & !EFER_LMA) | (vmread(f) & EFER_LMA),
                // Addresses must be canonical (WRMSR #GPs otherwise).
                0x175 | 0x176 | 0xC000_0100 | 0xC000_0101 if (value as i64) << 16 >> 16 != value as i64 => {
                    return false;
                }
                _ => value,
            };
            vmwrite(f, value);
            return true;
        }
        match msr {
            // Locked: writing it faults on real hardware too.
            0x3A => false,
            // SAFETY: these MSRs are L1's alone (never used by L0); a bad
            // value faults and is reported as such.
            m if run::PASSTHROUGH_MSRS.contains(&m) => unsafe { cpu::wrmsr_safe(m, value) },
            _ if cpu::rdmsr_safe(msr).is_none() => false,
            // L0 owns time: TSC and TSC_ADJUST writes are dropped.
            0x10 | 0x3B => true,
            _ => {
                log::debug!("l1 cpu {}: WRMSR {msr:#x} = {value:#x} kept for L1", self.cpu);
                self.msrs.insert(msr, value);
                true
            }
        }
    }

    /// CPUID as a real CPU of the L1's platform: the host's model, features
    /// and caches, but one logical processor whose local APIC is the
    /// emulated one. The project's law is "everything must look as if it
    /// ran on real hardware", so there is no hypervisor bit (CPUID.1:ECX[31])
    /// and no hypervisor leaf: leaves 0x40000000-0x4FFFFFFF answer like any
    /// unsupported leaf above the basic range on Intel CPUs, with the
    /// highest basic leaf's data (SDM Vol. 2A, CPUID, "INPUT EAX = 0"
    /// notes) — also when nvmx itself runs under a hypervisor.
    fn l1_cpuid(&mut self, leaf: u32, sub: u32) -> (u32, u32, u32, u32) {
        let max_basic = cpu::cpuid(0, 0).0;
        let leaf_in = if (0x4000_0000..0x5000_0000).contains(&leaf) { max_basic } else { leaf };
        let (mut a, mut b, mut c, mut d) = cpu::cpuid(leaf_in, sub);
        match leaf_in {
            1 => {
                if !self.nested.enabled {
                    c &= !(1 << 5); // VMX hidden from L1 (nested=off), as on a CPU without VT-x
                }
                // EBX[31:24] initial APIC ID, [23:16] logical processors:
                // 0 and 1 alone, or this vCPU's of a two-vCPU L1 (smp.rs).
                let (id, n) = self.vcpu_index.map_or((0, 1), |i| (i as u32, smp::vcpus() as u32));
                b = (b & 0xFFFF) | (n << 16) | (id << 24);
                // x2APIC (21) and TSC-deadline (24) are emulated; no
                // hypervisor bit (31); OSXSAVE (27) follows L1's CR4.
                let x2apic = self.platform.pc.config().x2apic;
                c = (c & !((1 << 21) | (1 << 24) | (1 << 31) | (1 << 27))) | (u32::from(x2apic) << 21) | (1 << 24);
                // L1's CR4: the guest CR4 where L0 forces nothing, the read
                // shadow where it does (OSXSAVE is not masked: the shadow's
                // copy of it is stale — found by the conformance selftest).
                let mask = vmread(F::CR4_GUEST_HOST_MASK);
                let cr4 = (vmread(F::GUEST_CR4) & !mask) | (vmread(F::CR4_READ_SHADOW) & mask);
                if cr4 & (1 << 18) != 0 && c & (1 << 26) != 0 {
                    c |= 1 << 27;
                }
                // EDX[9]: the APIC is there while IA32_APIC_BASE enables it
                // (SDM 11.4.3: clearing EN hides it from CPUID).
                let apic_on = self.platform.pc.rdmsr(0x1B).and_then(|r| r.ok()).is_some_and(|v| v & (1 << 11) != 0);
                d = (d & !(1 << 9)) | (u32::from(apic_on) << 9);
            }
            // Deterministic cache parameters: one core, one thread per cache.
            4 => a &= 0x3FFF,
            // x2APIC topology: one thread, one core, x2APIC ID (0, or this
            // vCPU's of a two-vCPU L1).
            0xB | 0x1F => {
                if c & 0xFF00 != 0 {
                    b = 1;
                }
                d = self.vcpu_index.unwrap_or(0) as u32;
            }
            _ => {}
        }
        (a, b, c, d)
    }

    /// MOV to/from CR0/CR4 on bits L0 owns (SDM 28.1.3: only masked bits
    /// that differ from the read shadow exit).
    fn cr_access(&mut self, cr: u8, access: u8, gpr: u8) -> Handled {
        let value = if gpr == 4 { vmread(F::GUEST_RSP) } else { self.regs.gpr[usize::from(gpr)] };
        match (cr, access) {
            (0, 0) => {
                let forced = vmread(F::CR0_GUEST_HOST_MASK);
                vmwrite(F::CR0_READ_SHADOW, value);
                vmwrite(F::GUEST_CR0, run::l1_cr0_to_cpu(value, forced));
                // Entering/leaving long mode: EFER.LMA follows CR0.PG with EFER.LME,
                // and the VM-entry "IA-32e mode guest" control must match.
                let efer = vmread(F::GUEST_IA32_EFER);
                let lma = efer & (1 << 8) != 0 && value & (1 << 31) != 0;
                let efer = if lma { efer | (1 << 10) } else { efer & !(1 << 10) };
                vmwrite(F::GUEST_IA32_EFER, efer);
                let entry = vmread(F::VM_ENTRY_CONTROLS);
                let ia32e = nvmx_vmx::controls::entry::IA32E_MODE_GUEST as u64;
                vmwrite(F::VM_ENTRY_CONTROLS, if lma { entry | ia32e } else { entry & !ia32e });
                Handled::Skip
            }
            (4, 0) => {
                if value & (1 << 13) != 0 && !self.nested.enabled {
                    // CR4.VMXE with CPUID.VMX = 0 is a reserved bit: #GP.
                    return Handled::Inject(13, Some(0));
                }
                let forced = vmread(F::CR4_GUEST_HOST_MASK);
                vmwrite(F::CR4_READ_SHADOW, value);
                vmwrite(F::GUEST_CR4, value | forced);
                Handled::Skip
            }
            // CR8 = TPR bits 7:4 of the L1's LAPIC (SDM 11.8.6.1); bits
            // 63:4 of a MOV to CR8 are reserved (#GP(0)).
            (8, 0) if value >> 4 != 0 => Handled::Inject(13, Some(0)),
            (8, 0) => {
                self.platform.pc.set_cr8(value);
                Handled::Skip
            }
            (8, 1) => {
                let v = self.platform.pc.cr8();
                if gpr == 4 { vmwrite(F::GUEST_RSP, v) } else { self.regs.gpr[usize::from(gpr)] = v }
                Handled::Skip
            }
            _ => Handled::Stop(alloc::format!("unexpected CR{cr} access type {access}")),
        }
    }
}

/// Sets up and starts this core's L1; returns it ready to enter.
fn create(cpu: usize, caps: &nvmx_vmx::caps::VmxCaps) -> Result<Vcpu, String> {
    let vcpu_index = smp::vcpu_index(cpu);
    if vcpu_index.is_some_and(|i| i > 0) {
        return create_ap(cpu, caps);
    }
    // The core's L1-owned registers as a fresh boot has them (not what the
    // previous L1 left).
    fresh::reset_core(cpu);
    let mut cfg = L1Config::for_cpu(cpu);
    let mut owned = crate::mm::frames::Owned::default();
    let (mem_base, shared_eptp) = if vcpu_index.is_some() {
        // vCPU 0 of a two-vCPU L1: the machine's RAM and EPT0-1 outlive
        // this start (smp.rs); a restart loads into the same RAM, zeroed.
        let m = smp::machine_for_bsp(cfg.mem_size)?;
        cfg.mem_size = m.mem_size;
        // SAFETY: the machine's RAM, identity mapped, this L1's alone.
        unsafe { core::ptr::write_bytes(m.mem_base as *mut u8, 0, m.mem_size as usize) };
        (m.mem_base, Some(m.eptp))
    } else {
        let base = owned
            .alloc(cfg.mem_size / 4096, 512)
            .ok_or_else(|| alloc::format!("no {} MiB of contiguous memory for the L1", cfg.mem_size >> 20))?;
        (base, None)
    };
    // SAFETY: the chunk was just allocated for this L1 and is identity mapped.
    let mem = unsafe { core::slice::from_raw_parts_mut(mem_base as *mut u8, cfg.mem_size as usize) };
    let loaded = image::load(cpu, mem, &cfg.args)?;
    let entry = u64::from(loaded.entry.eip);

    let eptp = match shared_eptp {
        Some(e) => e,
        None => run::build_ept01(&mut owned, mem_base, cfg.mem_size).ok_or("no memory for EPT0-1")?,
    };
    let maps = run::build_bitmaps(&mut owned).ok_or("no memory for the bitmaps")?;
    let vmcs = owned.alloc(1, 1).ok_or("no memory for VMCS0-1")?;
    // A restarted L1 reuses this core's VPID and possibly frames of its
    // predecessor: drop whatever translations the CPU still caches for them.
    let _ = insn::invept(2, 0);
    let _ = insn::invvpid(2, 0, 0);
    // SAFETY: fresh frame; the revision id goes in its first dword (SDM 25.2).
    unsafe { (vmcs as *mut u32).write_volatile(caps.revision_id()) };
    // SAFETY: the VMCS region is ours and initialised.
    unsafe { insn::vmclear(vmcs).and_then(|()| insn::vmptrld(vmcs)) }.map_err(|e| alloc::format!("VMCS0-1: {e}"))?;
    run::setup_vmcs01(caps, eptp, &maps, entry, (cpu + 1) as u16)?;
    // The protocol's flat selectors (Linux: __BOOT_CS/__BOOT_DS), same descriptors.
    vmwrite(F::GUEST_CS_SELECTOR, loaded.entry.cs.into());
    for f in [F::GUEST_DS_SELECTOR, F::GUEST_ES_SELECTOR, F::GUEST_FS_SELECTOR, F::GUEST_GS_SELECTOR, F::GUEST_SS_SELECTOR] {
        vmwrite(f, loaded.entry.ds.into());
    }

    let mut regs = GuestRegs::default();
    regs.gpr[0] = loaded.entry.eax.into(); // Multiboot magic
    regs.gpr[3] = loaded.entry.ebx.into(); // Multiboot information
    regs.gpr[6] = loaded.entry.esi.into(); // Linux: boot_params
    *L1S[cpu].console.lock() = Some(ConsoleRing::new());
    L1S[cpu].stats.reset();
    L1S[cpu].started_tsc.store(cpu::rdtsc(), Ordering::Relaxed);
    *L1S[cpu].last_check.lock() = None;
    L1S[cpu].checks.clear();
    L1S[cpu].fallbacks.store(0, Ordering::Relaxed);
    L1S[cpu].vmx_errors.store(0, Ordering::Relaxed);
    let nested = nested::Nested::new(cfg.nested, vmcs, caps, &mut owned);
    publish_shadow(cpu, &nested.shadow);
    // Shadowing from the start where the CPU has it, unless `shadow=off` or
    // the shell switched it off for this core; `shadow=adaptive|full` (or the
    // shell's `shadow adaptive|full`) starts with that policy.
    let want = match L1S[cpu].shadow_pref.load(Ordering::Acquire) {
        0 => match crate::bootinfo::get().arg("shadow") {
            Some("off") => 1,
            Some("adaptive") => 3,
            Some("full") => 4,
            _ => 2,
        },
        pref => pref,
    };
    L1S[cpu].shadow_on.store(false, Ordering::Relaxed);
    if want != 1 && nested.shadow.supported() {
        L1S[cpu].shadow_want.store(want, Ordering::Release);
    }
    *L1S[cpu].state.lock() = L1State::Running;
    info!(
        "l1: cpu {cpu}: {} MiB at host {mem_base:#x}, {} entry {entry:#x}, args '{}'",
        cfg.mem_size >> 20,
        loaded.protocol.name(),
        cfg.args
    );
    let mut platform = L1Platform::new(cfg.mem_size, caps);
    if vcpu_index.is_some() {
        smp::bsp_started();
    }
    platform.pc.set_apic_id(0, true);
    Ok(Vcpu {
        regs,
        launched: false,
        platform,
        l1_exit_pending: false,
        cpu,
        mem_base,
        mem_size: cfg.mem_size,
        nested,
        msrs: hashbrown::HashMap::new(),
        prof: Profiler::new(&L1S[cpu].stats),
        handled_tsc: 0,
        fast: nested::FastCtx::new(cpu, caps.preemption_timer_rate()),
        vcpu_index,
        wait_sipi: false,
        got_init: false,
        generation: smp::generation(),
        _owned: owned,
    })
}

/// vCPU 1 of a two-vCPU L1 on core `cpu`: its own VMCS0-1, bitmaps and local
/// APIC (ID 1, not the BSP) on the machine vCPU 0 made; parked in
/// wait-for-SIPI (smp.rs).
fn create_ap(cpu: usize, caps: &nvmx_vmx::caps::VmxCaps) -> Result<Vcpu, String> {
    let m = smp::machine().ok_or("vCPU 0 has not started the L1 yet")?;
    fresh::reset_core(cpu);
    let cfg = L1Config::for_cpu(cpu);
    let mut owned = crate::mm::frames::Owned::default();
    let maps = run::build_bitmaps(&mut owned).ok_or("no memory for the bitmaps")?;
    let vmcs = owned.alloc(1, 1).ok_or("no memory for VMCS0-1")?;
    let _ = insn::invept(2, 0);
    let _ = insn::invvpid(2, 0, 0);
    // SAFETY: fresh frame; the revision id goes in its first dword (SDM 25.2).
    unsafe { (vmcs as *mut u32).write_volatile(caps.revision_id()) };
    // SAFETY: the VMCS region is ours and initialised.
    unsafe { insn::vmclear(vmcs).and_then(|()| insn::vmptrld(vmcs)) }.map_err(|e| alloc::format!("VMCS0-1: {e}"))?;
    run::setup_vmcs01(caps, m.eptp, &maps, 0, (cpu + 1) as u16)?;
    *L1S[cpu].console.lock() = Some(ConsoleRing::new());
    L1S[cpu].stats.reset();
    L1S[cpu].started_tsc.store(cpu::rdtsc(), Ordering::Relaxed);
    *L1S[cpu].last_check.lock() = None;
    L1S[cpu].checks.clear();
    L1S[cpu].fallbacks.store(0, Ordering::Relaxed);
    L1S[cpu].vmx_errors.store(0, Ordering::Relaxed);
    let nested = nested::Nested::new(cfg.nested, vmcs, caps, &mut owned);
    publish_shadow(cpu, &nested.shadow);
    L1S[cpu].shadow_on.store(false, Ordering::Relaxed);
    *L1S[cpu].state.lock() = L1State::Running;
    info!("l1: cpu {cpu}: vCPU 1 of cpu 0's L1 (APIC ID 1), waiting for SIPI");
    let mut platform = L1Platform::new(m.mem_size, caps);
    platform.pc.set_apic_id(1, false);
    Ok(Vcpu {
        regs: GuestRegs::default(),
        launched: false,
        platform,
        l1_exit_pending: false,
        cpu,
        mem_base: m.mem_base,
        mem_size: m.mem_size,
        nested,
        msrs: hashbrown::HashMap::new(),
        prof: Profiler::new(&L1S[cpu].stats),
        handled_tsc: 0,
        fast: nested::FastCtx::new(cpu, caps.preemption_timer_rate()),
        vcpu_index: Some(1),
        wait_sipi: true,
        got_init: false,
        generation: smp::generation(),
        _owned: owned,
    })
}

impl Vcpu {
    /// Moves IPIs both ways between this vCPU and the other of a two-vCPU
    /// L1 (before every entry, and while parked): what its ICR sent goes to
    /// the other's inbox, what came goes into its local APIC; INIT parks an
    /// AP in wait-for-SIPI, a SIPI after it starts the AP.
    fn smp_exchange(&mut self) {
        let Some(me) = self.vcpu_index else { return };
        let x2 = self.platform.pc.apic_mode() == Some(nvmx_devices::lapic::ApicMode::X2Apic);
        while let Some(ipi) = self.platform.pc.take_ipi() {
            smp::route(me, ipi, x2);
        }
        let arrived = smp::drain(me, &mut self.platform.pc);
        if arrived.interrupt {
            // Ends a quiet stretch (`platform_quiet`): the IPI is delivered
            // at this entry, not when the stretch would have ended.
            self.platform_touched();
        }
        // INIT is blocked in VMX root operation (SDM 24.8) and the BSP is
        // not reset by it here (not modelled).
        if arrived.init && me > 0 && !self.nested.in_vmx_operation() {
            self.platform.pc.init_received();
            self.wait_sipi = true;
            self.got_init = true;
        }
        if let (Some(vector), true, true) = (arrived.sipi, self.wait_sipi, self.got_init) {
            self.start_at_sipi(vector);
        }
        smp::inbox(me).parked.store(self.wait_sipi, Ordering::Relaxed);
    }

    /// The state a start-up IPI gives an AP (SDM 10.4.4.1, 11.6.1; reset
    /// values of table 10-1): real mode, CS = vector << 8 with base vector <<
    /// 12, IP 0, flags 2, no paging, segments with limit 0xFFFF.
    fn start_at_sipi(&mut self, vector: u8) {
        let caps = vmx::probe().expect("an L1 runs on VMX");
        let (cr0_f0, _) = caps.cr0_fixed();
        let (cr4_f0, _) = caps.cr4_fixed();
        let cr0 = 0x6000_0010; // CD | NW | ET
        vmwrite(F::CR0_READ_SHADOW, cr0);
        vmwrite(F::GUEST_CR0, run::l1_cr0_to_cpu(cr0, cr0_f0 & !(1 | (1 << 31))));
        vmwrite(F::CR4_READ_SHADOW, 0);
        vmwrite(F::GUEST_CR4, cr4_f0);
        vmwrite(F::GUEST_CR3, 0);
        vmwrite(F::GUEST_IA32_EFER, 0);
        let entry = vmread(F::VM_ENTRY_CONTROLS) & !u64::from(nvmx_vmx::controls::entry::IA32E_MODE_GUEST);
        vmwrite(F::VM_ENTRY_CONTROLS, entry);
        for (sel, base, limit, ar) in [
            (F::GUEST_CS_SELECTOR, F::GUEST_CS_BASE, F::GUEST_CS_LIMIT, F::GUEST_CS_AR_BYTES),
            (F::GUEST_DS_SELECTOR, F::GUEST_DS_BASE, F::GUEST_DS_LIMIT, F::GUEST_DS_AR_BYTES),
            (F::GUEST_ES_SELECTOR, F::GUEST_ES_BASE, F::GUEST_ES_LIMIT, F::GUEST_ES_AR_BYTES),
            (F::GUEST_FS_SELECTOR, F::GUEST_FS_BASE, F::GUEST_FS_LIMIT, F::GUEST_FS_AR_BYTES),
            (F::GUEST_GS_SELECTOR, F::GUEST_GS_BASE, F::GUEST_GS_LIMIT, F::GUEST_GS_AR_BYTES),
            (F::GUEST_SS_SELECTOR, F::GUEST_SS_BASE, F::GUEST_SS_LIMIT, F::GUEST_SS_AR_BYTES),
        ] {
            let cs = sel == F::GUEST_CS_SELECTOR;
            vmwrite(sel, if cs { u64::from(vector) << 8 } else { 0 });
            vmwrite(base, if cs { u64::from(vector) << 12 } else { 0 });
            vmwrite(limit, 0xFFFF);
            vmwrite(ar, if cs { 0x9B } else { 0x93 });
        }
        vmwrite(F::GUEST_TR_SELECTOR, 0);
        vmwrite(F::GUEST_TR_BASE, 0);
        vmwrite(F::GUEST_TR_LIMIT, 0xFFFF);
        vmwrite(F::GUEST_TR_AR_BYTES, 0x8B);
        vmwrite(F::GUEST_GDTR_BASE, 0);
        vmwrite(F::GUEST_GDTR_LIMIT, 0xFFFF);
        vmwrite(F::GUEST_IDTR_BASE, 0);
        vmwrite(F::GUEST_IDTR_LIMIT, 0xFFFF);
        vmwrite(F::GUEST_RIP, 0);
        vmwrite(F::GUEST_RSP, 0);
        vmwrite(F::GUEST_RFLAGS, 2);
        vmwrite(F::GUEST_DR7, 0x400);
        vmwrite(F::GUEST_ACTIVITY_STATE, 0);
        vmwrite(F::GUEST_INTERRUPTIBILITY_INFO, 0);
        vmwrite(F::VM_ENTRY_INTR_INFO_FIELD, 0);
        self.regs = GuestRegs::default();
        // EDX after reset holds the processor signature (table 10-1).
        self.regs.gpr[2] = u64::from(cpu::cpuid(1, 0).0);
        self.platform.halted = false;
        self.wait_sipi = false;
        self.got_init = false;
        info!("l1: cpu {}: vCPU {} started by SIPI at {:#x}", self.cpu, self.vcpu_index.unwrap_or(0), u64::from(vector) << 12);
    }
}

/// Runs this core's L1 forever (also handling shell requests); `idle` is
/// called between exits and while no L1 runs — the boot core polls the
/// shell there.
pub fn run_forever(cpu: usize, idle: fn()) -> ! {
    let shared = &L1S[cpu];
    let Some(caps) = vmx::probe() else {
        *shared.state.lock() = L1State::Stopped(alloc::format!("no VMX: {}", vmx::unavailable_reason()));
        loop {
            idle();
            crate::mailbox::poll();
            wait(cpu);
        }
    };
    if let Err(e) = vmx::vmxon_this_cpu(caps) {
        warn!("vmx: cpu {cpu}: {e}");
        *shared.state.lock() = L1State::Stopped(e.into());
    }
    let mut vcpu: Option<Vcpu> = None;
    // A halted L1 keeps its memory and VMCS0-1 (quiescent, for `integrity`
    // and `vmcs 01`) until it is stopped or started again.
    let mut halted = false;
    let mut want_running = vmx::enabled();
    let mut ap_generation = 0;
    // `idle` (the boot core's shell poll) runs after every wait, and between
    // exits once per PREEMPT_TICKS of the VMX-preemption timer: as often as
    // an L1 that makes no exits is interrupted for it, not on every exit.
    let poll_every = run::PREEMPT_TICKS << caps.preemption_timer_rate();
    let mut next_poll = 0;
    let mut waited = true;
    loop {
        VCPUS[cpu].store(vcpu.as_mut().map_or(core::ptr::null_mut(), |v| v as *mut Vcpu), Ordering::Release);
        let now = cpu::rdtsc();
        if waited || now >= next_poll {
            idle();
            next_poll = now + poll_every;
        }
        waited = true;
        crate::mailbox::poll();
        match shared.take_request() {
            Control::Stop => {
                if vcpu.take().is_some() && !halted {
                    *shared.state.lock() = L1State::Stopped("stopped from the shell".into());
                }
                halted = false;
                want_running = false;
            }
            Control::Start | Control::Restart => {
                vcpu = None;
                halted = false;
                want_running = vmx::enabled();
            }
            Control::None => {}
        }
        let ap = smp::vcpu_index(cpu).is_some_and(|i| i > 0);
        if ap {
            // vCPU 1 of a two-vCPU L1 follows vCPU 0's machine: parked until
            // it exists, back to wait-for-SIPI when it starts again, and
            // ended with it when it ends (halted, powered off, stopped).
            if smp::machine().is_none() {
                wait(cpu);
                continue;
            }
            let generation = smp::generation();
            if vcpu.as_ref().is_some_and(|v| v.generation != generation) || (vcpu.is_none() && generation != ap_generation) {
                ap_generation = generation;
                vcpu = None;
                halted = false;
                want_running = vmx::enabled();
            }
            let bsp = L1S[0].state.lock().clone();
            if let (Some(_), false, false) = (vcpu.as_ref(), halted, bsp == L1State::Running) {
                halted = true;
                *shared.state.lock() = match bsp {
                    s if s.is_quiescent() => s,
                    L1State::Stopped(why) => L1State::Stopped(alloc::format!("with vCPU 0: {why}")),
                    other => other,
                };
            }
        }
        if want_running && vcpu.is_none() {
            want_running = false;
            match create(cpu, caps) {
                Ok(v) => vcpu = Some(v),
                Err(e) => {
                    warn!("l1: cpu {cpu}: {e}");
                    *shared.state.lock() = L1State::Stopped(e);
                }
            }
        }
        VCPUS[cpu].store(vcpu.as_mut().map_or(core::ptr::null_mut(), |v| v as *mut Vcpu), Ordering::Release);
        let Some(v) = vcpu.as_mut() else {
            wait(cpu);
            continue;
        };
        apply_shadow(cpu, v);
        if halted {
            wait(cpu);
            continue;
        }
        v.smp_exchange();
        if v.wait_sipi {
            wait(cpu);
            continue;
        }
        waited = false;
        let mut result = step(v);
        // KVM's EXIT_FASTPATH_REENTER_GUEST: after an exit that ends
        // nothing (a pure port read, a nested VM entry or reflection, any
        // handled exit) the vCPU enters again at once unless something asks
        // for this loop — a shell request, a control, a shadowing switch,
        // on the boot core its shell poll (`idle`, due every `poll_every`
        // as above) — and never for a vCPU of a two-vCPU L1 (IPIs come by
        // `smp_exchange`). The loop above does nothing else for a running
        // one-vCPU L1 (`idle` of the other cores does nothing). Linux's PIT
        // calibration spins on port reads; a nested L1 makes two L0 exits
        // per L2 exit.
        while result.is_none() && v.vcpu_index.is_none() && !exit_requested(cpu) && (cpu != 0 || cpu::rdtsc() < next_poll) {
            result = step(v);
        }
        v.smp_exchange();
        match result {
            None => {}
            Some(end) if end.is_quiescent() => {
                *shared.state.lock() = end;
                halted = true;
            }
            Some(stop) => {
                // A reset restarts the L1 (its machine), like `l1 restart`.
                if stop == L1State::Restarting {
                    shared.resets.fetch_add(1, Ordering::Relaxed);
                    want_running = vmx::enabled();
                }
                *shared.state.lock() = stop;
                vcpu = None;
            }
        }
    }
}

/// Something asks for the vCPU loop of core `cpu` (KVM's
/// kvm_vcpu_exit_request): a shell request in its mailbox, `l1
/// stop|start|restart`, a shadowing switch.
fn exit_requested(cpu: usize) -> bool {
    let shared = &L1S[cpu];
    crate::mailbox::pending(cpu) || shared.control.load(Ordering::Relaxed) != 0 || shared.shadow_want.load(Ordering::Relaxed) != 0
}

/// LAPIC timer ticks the idle boot core sleeps between two polls of the
/// shell: ~1 ms on a 100 MHz APIC clock, about as long on Bochs at 50-200 M
/// instructions per second — well inside the time a 16-byte UART FIFO
/// fills at 115200 baud.
const IDLE_POLL_TICKS: u32 = 100_000;

/// Waits for something to do: every core sleeps in HLT until an interrupt —
/// the shell's kick IPI, or on the boot core (which reads the serial line
/// and keyboard by polling) its LAPIC timer soon after. Idle cores cost
/// nothing: 16 spinning cores would starve QEMU's TCG, and one spinning
/// core keeps Bochs from skipping the time all its CPUs are halted (an L1
/// Linux's idle seconds cost 200 M emulated instructions each).
fn wait(cpu: usize) {
    if cpu == 0 {
        crate::apic::arm_oneshot(crate::apic::IDLE_TIMER_VECTOR, IDLE_POLL_TICKS);
    }
    x86_64::instructions::interrupts::enable_and_hlt();
    x86_64::instructions::interrupts::disable();
    if cpu == 0 {
        // Not left pending to end the next guest entry early.
        crate::apic::disarm_timer();
    }
}

/// One entry into L1 and the handling of the exit that ends it. `Some` when
/// the L1 ends (halted or stopped).
fn step(v: &mut Vcpu) -> Option<L1State> {
    // Bochs 2.7 may save "blocking by SMI" on exit, which then fails the next
    // entry; L0 never runs a guest in SMM, so the bit is always clear (PLATFORM.md).
    // The fields read and written below without a failure test exist in
    // every VMCS0-1 and VMCS0-2 (run::vmread_known).
    let intr = vmread_known(F::GUEST_INTERRUPTIBILITY_INFO);
    if intr & 4 != 0 {
        vmwrite_known(F::GUEST_INTERRUPTIBILITY_INFO, intr & !4);
    }
    let in_l2 = v.nested.in_l2;
    let mut fast = core::ptr::null_mut();
    if !in_l2 {
        vmwrite_known(F::VMX_PREEMPTION_TIMER_VALUE, run::PREEMPT_TICKS);
        // Time, console, power events, interrupts for L1 (VMCS0-1 current).
        let after_exit = core::mem::take(&mut v.l1_exit_pending);
        let now = cpu::rdtsc();
        if let Some(ticks) = v.platform_quiet(now) {
            // Nothing pending, nothing due, and the last exit touched no
            // device: only the timer bound is renewed, and until it runs
            // out the exit stub may serve L1's VMREAD/VMWRITEs itself.
            vmwrite_known(F::VMX_PREEMPTION_TIMER_VALUE, ticks);
            fast = v.fast_exit(v.platform.quiet_until.min(now + (ticks << v.platform.timer_rate)));
        } else {
            let p = v.prof.enter(Phase::Platform);
            if let Some(end) = v.platform_before_entry(after_exit) {
                return Some(end);
            }
            v.prof.leave(p);
        }
    } else {
        // L1's PC while L2 runs: its interrupts and NMIs go to L2 or exit
        // to L1 (VMCS0-2 current).
        let p = v.prof.enter(Phase::Events);
        let next = v.l2_before_entry();
        v.prof.leave(p);
        match next {
            events::L2Next::Enter => {}
            events::L2Next::Exited { reason } => {
                let start = cpu::rdtsc();
                let rip = vmread_known(F::GUEST_RIP);
                record(v, Level::L2Reflected, reason, 0, rip, true, start);
                return None;
            }
            events::L2Next::End(end) => return Some(end),
        }
    }
    let launched = if in_l2 { v.launched02() } else { v.launched };
    v.prof.entering();
    let stats = &L1S[v.cpu].stats;
    if v.handled_tsc != 0 && stats.window_end.load(Ordering::Relaxed) == 0 {
        stats.loop_cycles.fetch_add(cpu::rdtsc() - v.handled_tsc, Ordering::Relaxed);
    }
    // SAFETY: `fast` is null or points into `v` (its FastCtx, set up just
    // now for this entry with pointers into the current vmcs12), which
    // nothing else touches until `enter` returns.
    if let Err(e) = unsafe { run::enter(&mut v.regs, launched, fast) } {
        if let (true, nvmx_vmx::error::VmFail::Valid(n)) = (in_l2, e) {
            // A VMCS0-2 the CPU refuses although vmcs12 passed nvmx's checks:
            // L1's VMLAUNCH/VMRESUME fails the same way, L1 goes on.
            v.vmcs02_refused(n);
            return None;
        }
        let which = if in_l2 { "VMCS0-2" } else { "VMCS0-1" };
        return Some(L1State::Stopped(alloc::format!("VM entry of {which} failed: {e}")));
    }
    let start = cpu::rdtsc();
    v.prof.exited(start);
    let reason = vmread_known(F::VM_EXIT_REASON) as u32;
    if !in_l2 && matches!(reason, 23 | 25) {
        // RIP before the fast path moves it, for the trace.
        let rip = vmread_known(F::GUEST_RIP);
        if v.vmrw_fast(reason == 25) {
            v.launched = true;
            v.l1_exit_pending = true;
            record(v, Level::L1, reason, 0, rip, true, start);
            return None;
        }
    }
    if !in_l2 && reason == 30 {
        // A pure port read (the PIT, port 0x61, the PM timer): no pass.
        let rip = vmread_known(F::GUEST_RIP);
        if v.pio_fast(rip) {
            v.launched = true;
            v.l1_exit_pending = true;
            record(v, Level::L1, reason, 0, rip, true, start);
            return None;
        }
    }
    let qualification = vmread_known(F::EXIT_QUALIFICATION);
    let rip = vmread_known(F::GUEST_RIP);
    if in_l2 {
        if reason & (1 << 31) == 0 {
            v.l2_entered();
        }
        let (level, result) = match v.l2_exit(reason, qualification) {
            Ok(true) => {
                // Handled in L0 (L2's MMIO to L1's devices among them).
                v.platform_touched();
                v.l2_reinject();
                (Level::L2InL0, None)
            }
            Ok(false) => (Level::L2Reflected, None),
            Err(why) => {
                report_stop(v.cpu, &why, reason, qualification, rip);
                (Level::L2InL0, Some(L1State::Stopped(why)))
            }
        };
        record(v, level, reason, qualification, rip, result.is_none(), start);
        return result;
    }
    v.launched = true;
    v.l1_exit_pending = true;
    // Only these exits leave the L1's PC untouched (RDMSR/WRMSR of L1's MSRs
    // from VM-entry/exit MSR lists clear it themselves).
    if !matches!(reason, 10 | 18..=27 | 50 | 53) {
        v.platform_touched();
    }
    let handled = v.handle(decode(reason, qualification));
    let (result, completed) = match handled {
        Handled::Resume => (None, true),
        Handled::EntryFailed => (None, false),
        Handled::Skip | Handled::SkipFailed => {
            vmwrite_known(F::GUEST_RIP, rip + vmread_known(F::VM_EXIT_INSTRUCTION_LEN));
            // The instruction completed, so an STI or MOV-SS shadow it sat in
            // is over (SDM 26.3.1.5 forbids HLT activity with one pending).
            let intr = vmread_known(F::GUEST_INTERRUPTIBILITY_INFO);
            if intr & 3 != 0 {
                vmwrite_known(F::GUEST_INTERRUPTIBILITY_INFO, intr & !3);
            }
            (None, matches!(handled, Handled::Skip))
        }
        Handled::EnterL2 => {
            v.nested.in_l2 = true;
            // VMCS0-2 is current now: VMCS0-1's exit information is not
            // looked at again until a fresh L1 exit.
            v.l1_exit_pending = false;
            (None, true)
        }
        Handled::Inject(vector, error) => {
            // SDM 25.8.3: valid | type 3 (hardware exception) | vector.
            let mut info = (1u64 << 31) | (3 << 8) | u64::from(vector);
            if let Some(code) = error {
                info |= 1 << 11;
                vmwrite(F::VM_ENTRY_EXCEPTION_ERROR_CODE, code.into());
            }
            vmwrite(F::VM_ENTRY_INTR_INFO_FIELD, info);
            (None, false)
        }
        Handled::Halt => (Some(L1State::Halted), true),
        Handled::Stop(why) => {
            report_stop(v.cpu, &why, reason, qualification, rip);
            (Some(L1State::Stopped(why)), false)
        }
    };
    record(v, Level::L1, reason, qualification, rip, completed, start);
    result
}

/// Counts an exit handled since `start` (TSC) and puts it in the trace.
fn record(v: &mut Vcpu, level: Level, reason: u32, qualification: u64, rip: u64, completed: bool, start: u64) {
    v.prof.enter(Phase::Record);
    let cpu = v.cpu;
    let note = v.nested.note.take();
    let shared = &L1S[cpu];
    let now = cpu::rdtsc();
    let cycles = now - start;
    // From here to the next entry the cycles count as the loop's.
    v.handled_tsc = now;
    shared.stats.record(level, (reason & 0xFFFF) as u16, completed, cycles);
    shared.last_reason.store(u64::from(reason), Ordering::Relaxed);
    let level_l2 = level != Level::L1;
    shared.trace.lock().push(TraceEntry { tsc: start, reason, qualification, rip, level_l2, cycles, note });
    v.prof.enter(Phase::Loop);
}

/// A stopped L1's report: on its console and in the log.
fn report_stop(cpu: usize, why: &str, reason: u32, qualification: u64, rip: u64) {
    warn!(
        "l1: cpu {cpu} stopped: {why} (exit reason {reason:#x} {}, qualification {qualification:#x}, rip {rip:#x})",
        nvmx_vmx::exit::exit_reason_name((reason & 0xFFFF) as u16)
    );
    if let Some(ring) = L1S[cpu].console.lock().as_mut() {
        for b in alloc::format!("\n[nvmx: L1 stopped: {why}; exit reason {reason:#x}, rip {rip:#x}]\n").bytes() {
            ring.push(b);
        }
    }
}


const CR4_OSXSAVE: u64 = 1 << 18;

/// Would XSETBV of XCR0 = `v` succeed (SDM 13.3)? x87 set, only bits
/// CPUID.(EAX=0DH,ECX=0) reports, AVX needs SSE, AVX-512 state all or none
/// and with AVX, MPX bits both or neither.
fn xcr0_valid(v: u64) -> bool {
    let (a, _, _, d) = cpu::cpuid(0xD, 0);
    let supported = u64::from(a) | u64::from(d) << 32;
    let avx512 = v & 0xE0;
    v & 1 != 0
        && v & !supported == 0
        && (v & 4 == 0 || v & 2 != 0)
        && (avx512 == 0 || (avx512 == 0xE0 && v & 4 != 0))
        && (v >> 3 & 1) == (v >> 4 & 1)
}
