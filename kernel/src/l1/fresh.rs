//! A core's state that an L1 owns directly but no VMCS switches: the SYSCALL
//! MSRs, KERNEL_GS_BASE and TSC_AUX (passed through, `run::PASSTHROUGH_MSRS`),
//! CR2, DR0-DR3 and DR6 (no MOV-DR exiting), XCR0 (L1's XSETBV runs on the
//! CPU) and the x87/SSE/AVX registers. An L1 that `l1 restart` re-creates on
//! a core would otherwise start with what the previous L1 (or its L2, through
//! a VM-entry MSR-load list) left there — a fresh boot does not: the second
//! fuzz run on a core read KERNEL_GS_BASE 0x1000 through its VM-exit
//! MSR-store list where the bare run reads 0.
//!
//! So before the first L1 runs on a core, that state is captured as the boot
//! left it (L0 itself uses none of it: no SYSCALL, soft-float), and every
//! later L1 on the core starts with it again.

use alloc::alloc::{alloc_zeroed, Layout};
use core::arch::asm;

use crate::arch::cpu;
use crate::percpu::MAX_CPUS;

/// STAR, LSTAR, CSTAR, FMASK, KERNEL_GS_BASE, TSC_AUX (the passed-through
/// MSRs that are not VMCS guest-state fields).
const MSRS: [u32; 6] = [0xC000_0081, 0xC000_0082, 0xC000_0083, 0xC000_0084, 0xC000_0102, 0xC000_0103];

const CR0_EM: u64 = 1 << 2;
const CR0_TS: u64 = 1 << 3;
const CR4_OSFXSR: u64 = 1 << 9;
const CR4_OSXSAVE: u64 = 1 << 18;

struct CoreState {
    /// `None`: the CPU does not have that MSR (RDMSR faulted).
    msrs: [Option<u64>; MSRS.len()],
    cr2: u64,
    dr: [u64; 4],
    dr6: u64,
    /// XCR0 and the XSAVE components it may enable (CPUID.(0DH,0):EDX:EAX),
    /// where the CPU has XSAVE.
    xsave: Option<(u64, u64)>,
    /// The register file: an XSAVE area of every component (64-byte
    /// aligned), or an FXSAVE area (x87, SSE).
    area: *mut u8,
}

// SAFETY: `area` is this core's own buffer, only used on the core.
unsafe impl Send for CoreState {}
// SAFETY: as above.
unsafe impl Sync for CoreState {}

static BOOT: [spin::Once<CoreState>; MAX_CPUS] = [const { spin::Once::new() }; MAX_CPUS];

/// Puts the calling core's L1-owned state back to what it was before any L1
/// ran on it (captured the first time). Called on core `cpu` when an L1 (or
/// a vCPU of one) is created there, before it is entered.
pub fn reset_core(cpu: usize) {
    let state = BOOT[cpu].call_once(capture);
    restore(state);
}

/// XSAVE where CPUID.1:ECX.XSAVE (bit 26) says so: (XCR0-supported mask, area size).
fn xsave_layout() -> Option<(u64, usize)> {
    if core::arch::x86_64::__cpuid(1).ecx & (1 << 26) == 0 {
        return None;
    }
    let l = core::arch::x86_64::__cpuid_count(0xD, 0);
    Some((u64::from(l.edx) << 32 | u64::from(l.eax), l.ecx as usize))
}

/// Runs `f` with the register file reachable from L0: CR0.TS/EM clear (no
/// #NM), CR4.OSFXSR set (FXSAVE covers XMM) and, with XSAVE, CR4.OSXSAVE set
/// and XCR0 = every component; then puts CR0, CR4 and XCR0 back as given.
fn with_fpu<T>(xsave: Option<u64>, f: impl FnOnce() -> T) -> T {
    let (cr0, cr4) = (cpu::read_cr0(), cpu::read_cr4());
    let extra = CR4_OSFXSR | if xsave.is_some() { CR4_OSXSAVE } else { 0 };
    // SAFETY: TS/EM clear and OSFXSR/OSXSAVE set only make the FPU usable
    // from L0; L0 runs soft-float and nothing else uses it meanwhile.
    unsafe {
        cpu::write_cr0(cr0 & !(CR0_TS | CR0_EM));
        cpu::write_cr4(cr4 | extra);
    }
    let old_xcr0 = xsave.map(|all| {
        let old = xgetbv0();
        // SAFETY: `all` is CPUID's XCR0-supported mask (SDM 13.3), x87 included.
        unsafe { xsetbv0(all) };
        old
    });
    let r = f();
    if let Some(old) = old_xcr0 {
        // SAFETY: the value XCR0 held before.
        unsafe { xsetbv0(old) };
    }
    // SAFETY: the values CR0 and CR4 held before.
    unsafe {
        cpu::write_cr4(cr4);
        cpu::write_cr0(cr0);
    }
    r
}

fn xgetbv0() -> u64 {
    let (lo, hi): (u32, u32);
    // SAFETY: CR4.OSXSAVE is set by the caller; reads XCR0.
    unsafe { asm!("xgetbv", in("ecx") 0u32, out("eax") lo, out("edx") hi, options(nomem, nostack)) };
    u64::from(hi) << 32 | u64::from(lo)
}

/// # Safety
/// CR4.OSXSAVE set and `v` a valid XCR0 (SDM 13.3).
unsafe fn xsetbv0(v: u64) {
    // SAFETY: forwarded to the caller.
    unsafe { asm!("xsetbv", in("ecx") 0u32, in("eax") v as u32, in("edx") (v >> 32) as u32, options(nomem, nostack)) };
}

fn capture() -> CoreState {
    let layout = xsave_layout();
    let size = layout.map_or(512, |(_, s)| s.max(576));
    // SAFETY: a non-zero size with a power-of-two alignment.
    let area = unsafe { alloc_zeroed(Layout::from_size_align(size, 64).expect("XSAVE area layout")) };
    assert!(!area.is_null(), "no memory for the core's register file");
    let xsave = layout.map(|(all, _)| {
        let cr4 = cpu::read_cr4();
        // SAFETY: only makes XGETBV usable; put back at once.
        unsafe { cpu::write_cr4(cr4 | CR4_OSXSAVE) };
        let xcr0 = xgetbv0();
        // SAFETY: CR4 as it was.
        unsafe { cpu::write_cr4(cr4) };
        (xcr0, all)
    });
    with_fpu(xsave.map(|x| x.1), || match xsave {
        // SAFETY: `area` holds `size` bytes, 64-byte aligned; RFBM = every
        // component XCR0 now enables (SDM 13.7).
        Some(_) => unsafe { asm!("xsave64 [{}]", in(reg) area, in("eax") u32::MAX, in("edx") u32::MAX, options(nostack)) },
        // SAFETY: 512 bytes, 16-byte aligned (SDM FXSAVE).
        None => unsafe { asm!("fxsave64 [{}]", in(reg) area, options(nostack)) },
    });
    let (dr, dr6, cr2): ([u64; 4], u64, u64);
    // SAFETY: reading debug registers and CR2 has no side effects.
    unsafe {
        let (d0, d1, d2, d3, d6, c2): (u64, u64, u64, u64, u64, u64);
        asm!("mov {}, dr0", "mov {}, dr1", "mov {}, dr2", "mov {}, dr3", "mov {}, dr6", "mov {}, cr2",
            out(reg) d0, out(reg) d1, out(reg) d2, out(reg) d3, out(reg) d6, out(reg) c2, options(nomem, nostack));
        dr = [d0, d1, d2, d3];
        dr6 = d6;
        cr2 = c2;
    }
    CoreState { msrs: MSRS.map(cpu::rdmsr_safe), cr2, dr, dr6, xsave, area }
}

fn restore(s: &CoreState) {
    for (&msr, v) in MSRS.iter().zip(s.msrs) {
        if let Some(v) = v {
            // SAFETY: the value this MSR held at boot; L0 does not use it.
            let _ = unsafe { cpu::wrmsr_safe(msr, v) };
        }
    }
    // SAFETY: the boot values; L0 uses neither CR2 (its page faults are
    // fatal) nor breakpoints (DR7 is the VMCS's).
    unsafe {
        asm!("mov dr0, {}", "mov dr1, {}", "mov dr2, {}", "mov dr3, {}", "mov dr6, {}", "mov cr2, {}",
            in(reg) s.dr[0], in(reg) s.dr[1], in(reg) s.dr[2], in(reg) s.dr[3], in(reg) s.dr6, in(reg) s.cr2, options(nomem, nostack));
    }
    with_fpu(s.xsave.map(|x| x.1), || match s.xsave {
        // SAFETY: the area `capture` saved with the same XCR0 and RFBM.
        Some(_) => unsafe { asm!("xrstor64 [{}]", in(reg) s.area, in("eax") u32::MAX, in("edx") u32::MAX, options(nostack)) },
        // SAFETY: the area `capture` saved.
        None => unsafe { asm!("fxrstor64 [{}]", in(reg) s.area, options(nostack)) },
    });
    if let Some((xcr0, _)) = s.xsave {
        // XCR0 as at boot (with_fpu put back the previous L1's).
        let cr4 = cpu::read_cr4();
        // SAFETY: XCR0's boot value; OSXSAVE only for the XSETBV, as it was after.
        unsafe {
            cpu::write_cr4(cr4 | CR4_OSXSAVE);
            xsetbv0(xcr0);
            cpu::write_cr4(cr4);
        }
    }
}
