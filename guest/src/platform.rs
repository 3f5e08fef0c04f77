//! The `platform` part of the selftest: the PC this L1 runs on, checked the
//! way an OS meets it — ACPI tables (RSDP by the 0xE0000-0xFFFFF scan and by
//! the Multiboot2 boot information, MADT, FADT), the local APIC (timer in
//! one-shot, periodic and TSC-deadline mode, self-IPI, EOI/ISR/TPR, self-NMI,
//! HLT wake-up), the PIT (channel 2 TSC calibration against the ACPI PM
//! timer), the IOAPIC (PIT and UART interrupts routed through it), the RTC.
//!
//! Run bare on Bochs the answers come from Bochs' PC (its BIOS, PIIX4, HPET,
//! its own ACPI tables); run under nvmx from nvmx's. The two PCs differ in
//! details no OS may rely on (table addresses, OEM ids, processor count,
//! LAPIC version and bus clock, the time of day), so every line states only
//! what the architecture and the data sheets fix: a vector, a mode, an
//! agreement within 1 %, a present/absent — and both runs must print the
//! same lines.

use core::arch::global_asm;
use core::fmt::Write;
use core::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};

use crate::console::Console;

/// Checks passed and failed.
pub struct Tally {
    pub passed: u32,
    pub failed: u32,
}

impl Tally {
    fn check(&mut self, name: &str, ok: bool, detail: core::fmt::Arguments<'_>) {
        if ok {
            self.passed += 1;
            let _ = writeln!(Console, "l1: platform {name}: pass ({detail})");
        } else {
            self.failed += 1;
            let _ = writeln!(Console, "l1: platform {name}: FAIL ({detail})");
        }
    }
}

// ---- port I/O, MSRs, TSC --------------------------------------------------

pub(crate) fn outb(port: u16, v: u8) {
    // SAFETY: the platform ports this test drives; the L1 owns its PC.
    unsafe { core::arch::asm!("out dx, al", in("dx") port, in("al") v, options(nomem, nostack)) };
}
pub(crate) fn inb(port: u16) -> u8 {
    let v: u8;
    // SAFETY: as `outb`.
    unsafe { core::arch::asm!("in al, dx", in("dx") port, out("al") v, options(nomem, nostack)) };
    v
}
fn outw(port: u16, v: u16) {
    // SAFETY: as `outb`.
    unsafe { core::arch::asm!("out dx, ax", in("dx") port, in("ax") v, options(nomem, nostack)) };
}
pub(crate) fn inl(port: u16) -> u32 {
    let v: u32;
    // SAFETY: as `outb`.
    unsafe { core::arch::asm!("in eax, dx", in("dx") port, out("eax") v, options(nomem, nostack)) };
    v
}
pub(crate) fn rdtsc() -> u64 {
    // SAFETY: RDTSC is always allowed at CPL 0.
    unsafe { core::arch::x86_64::_rdtsc() }
}
fn rdmsr(msr: u32) -> u64 {
    let (lo, hi): (u32, u32);
    // SAFETY: only architectural MSRs this CPU has (checked by CPUID first).
    unsafe { core::arch::asm!("rdmsr", in("ecx") msr, out("eax") lo, out("edx") hi, options(nomem, nostack)) };
    (u64::from(hi) << 32) | u64::from(lo)
}
fn wrmsr(msr: u32, v: u64) {
    // SAFETY: as `rdmsr`.
    unsafe { core::arch::asm!("wrmsr", in("ecx") msr, in("eax") v as u32, in("edx") (v >> 32) as u32, options(nostack)) };
}
fn cpuid(leaf: u32) -> core::arch::x86_64::CpuidResult {
    core::arch::x86_64::__cpuid_count(leaf, 0)
}
fn sti() {
    // SAFETY: the IDT installed by `install_idt` handles every vector.
    unsafe { core::arch::asm!("sti", options(nomem, nostack)) };
}
fn cli() {
    // SAFETY: masking interrupts is always safe.
    unsafe { core::arch::asm!("cli", options(nomem, nostack)) };
}
/// STI; NOP; CLI: one window in which a pending interrupt is taken.
fn window() {
    // SAFETY: as `sti`.
    unsafe { core::arch::asm!("sti; nop; nop; cli", options(nomem, nostack)) };
}

// ---- memory: the MMIO windows and physical reads -----------------------------

#[repr(C, align(4096))]
struct Page([u64; 512]);
static mut MMIO_PD: Page = Page([0; 512]);

/// Maps the fourth GiB's top (IOAPIC 0xFEC00000, LAPIC 0xFEE00000) with
/// 2 MiB uncached pages into the boot code's page tables (which map only the
/// first GiB).
pub(crate) fn map_mmio() {
    // SAFETY: the boot code's PML4/PDPT are identity mapped in the first GiB;
    // this adds PDPT entry 3 (the fourth GiB) pointing at a PD of our own.
    unsafe {
        let cr3: u64;
        core::arch::asm!("mov {}, cr3", out(reg) cr3);
        let pml4 = (cr3 & !0xFFF) as *const u64;
        let pdpt = (pml4.read() & 0x000F_FFFF_FFFF_F000) as *mut u64;
        let pd = &raw mut MMIO_PD;
        for (i, e) in (*pd).0.iter_mut().enumerate() {
            // P | RW | PWT | PCD | PS: uncached, as MMIO must be.
            *e = (0xC000_0000 + ((i as u64) << 21)) | 0x9B;
        }
        pdpt.add(3).write_volatile(pd as u64 | 3);
        core::arch::asm!("mov cr3, {}", in(reg) cr3);
    }
}

pub(crate) fn phys<T: Copy>(addr: u64) -> T {
    // SAFETY: callers read firmware tables in the identity-mapped first GiB.
    unsafe { (addr as *const T).read_unaligned() }
}

// ---- local APIC (xAPIC MMIO) and IOAPIC ------------------------------------------------

const LAPIC: u64 = 0xFEE0_0000;
const IOAPIC: u64 = 0xFEC0_0000;
const ID: u64 = 0x20;
const VER: u64 = 0x30;
pub(crate) const TPR: u64 = 0x80;
pub(crate) const EOI: u64 = 0xB0;
pub(crate) const SVR: u64 = 0xF0;
pub(crate) const ISR: u64 = 0x100;
pub(crate) const IRR: u64 = 0x200;
const ESR: u64 = 0x280;
const ICR_LO: u64 = 0x300;
const ICR_HI: u64 = 0x310;
pub(crate) const LVT_TIMER: u64 = 0x320;
pub(crate) const LVT_LINT0: u64 = 0x350;
pub(crate) const LVT_LINT1: u64 = 0x360;
pub(crate) const LVT_ERROR: u64 = 0x370;
pub(crate) const TIMER_INIT: u64 = 0x380;
pub(crate) const TIMER_CUR: u64 = 0x390;
pub(crate) const TIMER_DIV: u64 = 0x3E0;

pub(crate) fn lapic_read(off: u64) -> u32 {
    // SAFETY: the xAPIC page, mapped uncached by `map_mmio`; 32-bit aligned
    // accesses as the SDM requires (11.4.1).
    unsafe { ((LAPIC + off) as *const u32).read_volatile() }
}
pub(crate) fn lapic_write(off: u64, v: u32) {
    // SAFETY: as `lapic_read`.
    unsafe { ((LAPIC + off) as *mut u32).write_volatile(v) }
}
pub(crate) fn eoi() {
    lapic_write(EOI, 0);
}
pub(crate) fn vector_bit(base: u64, v: u8) -> bool {
    lapic_read(base + 0x10 * u64::from(v / 32)) & (1 << (v % 32)) != 0
}
fn ioapic_write(reg: u32, v: u32) {
    // SAFETY: IOREGSEL at +0, IOWIN at +0x10 (82093AA data sheet 3.1).
    unsafe {
        (IOAPIC as *mut u32).write_volatile(reg);
        ((IOAPIC + 0x10) as *mut u32).write_volatile(v);
    }
}
fn ioapic_read(reg: u32) -> u32 {
    // SAFETY: as `ioapic_write`.
    unsafe {
        (IOAPIC as *mut u32).write_volatile(reg);
        ((IOAPIC + 0x10) as *const u32).read_volatile()
    }
}
/// Redirection entry of `gsi`: `vector`, fixed, physical destination
/// `dest`, edge/high, masked or not (82093AA 3.2.4).
fn ioapic_route(gsi: u32, vector: u8, dest: u8, masked: bool) {
    ioapic_write(0x11 + 2 * gsi, u32::from(dest) << 24);
    ioapic_write(0x10 + 2 * gsi, u32::from(vector) | if masked { 1 << 16 } else { 0 });
}

// ---- interrupt handlers -------------------------------------------------------------

static COUNT: [AtomicU32; 256] = [const { AtomicU32::new(0) }; 256];
static LAST_TSC: [AtomicU64; 256] = [const { AtomicU64::new(0) }; 256];
/// Handlers send the EOI themselves (else the test does, to look at ISR).
static AUTO_EOI: AtomicBool = AtomicBool::new(true);
/// Vector 0x41's handler accumulates PIT channel 2 ticks (periodic check).
static PIT_TRACK: AtomicBool = AtomicBool::new(false);
static PIT_PREV: AtomicU32 = AtomicU32::new(0);
static PIT_ACC: AtomicU64 = AtomicU64::new(0);
/// ISR bit of the vector as its handler saw it (bit 0 of the last entry).
static ISR_SEEN: AtomicBool = AtomicBool::new(false);

#[unsafe(no_mangle)]
extern "C" fn pt_irq(vector: u64) {
    let v = (vector & 0xFF) as u8;
    LAST_TSC[usize::from(v)].store(rdtsc(), Ordering::SeqCst);
    COUNT[usize::from(v)].fetch_add(1, Ordering::SeqCst);
    if v == 0x41 && PIT_TRACK.load(Ordering::SeqCst) {
        let now = pit2_read();
        let prev = PIT_PREV.swap(u32::from(now), Ordering::SeqCst) as u16;
        PIT_ACC.fetch_add(u64::from(prev.wrapping_sub(now)), Ordering::SeqCst);
    }
    if v >= 32 {
        if AUTO_EOI.load(Ordering::SeqCst) {
            eoi();
        } else {
            ISR_SEEN.store(vector_bit(ISR, v), Ordering::SeqCst);
        }
    }
}

global_asm!(
    r#"
    .section .text
    .balign 16
    .global pt_stubs
pt_stubs:
    .set vec, 0
    .rept 256
    .balign 16
    pushq $vec
    jmp pt_common
    .set vec, vec + 1
    .endr
pt_common:
    pushq %rax
    pushq %rcx
    pushq %rdx
    pushq %rsi
    pushq %rdi
    pushq %r8
    pushq %r9
    pushq %r10
    pushq %r11
    movq 72(%rsp), %rdi
    subq $8, %rsp
    cld
    call pt_irq
    addq $8, %rsp
    popq %r11
    popq %r10
    popq %r9
    popq %r8
    popq %rdi
    popq %rsi
    popq %rdx
    popq %rcx
    popq %rax
    addq $8, %rsp
    iretq
    "#,
    options(att_syntax)
);

unsafe extern "C" {
    static pt_stubs: u8;
}

#[repr(C, align(16))]
struct Idt([u128; 256]);
static mut IDT: Idt = Idt([0; 256]);

/// An IDT with the boot code's exception gates (0-31 but NMI) and counting
/// handlers for the NMI and vectors 32-255; returns the old IDTR.
pub(crate) fn install_idt() -> [u8; 10] {
    let mut old = [0u8; 10];
    // SAFETY: single-threaded; the new IDT is a static that outlives its use.
    unsafe {
        core::arch::asm!("sidt [{}]", in(reg) old.as_mut_ptr());
        let old_base = u64::from_le_bytes(old[2..10].try_into().unwrap_or([0; 8]));
        let idt = &mut *(&raw mut IDT);
        let stubs = &raw const pt_stubs as u64;
        for (v, e) in idt.0.iter_mut().enumerate() {
            if v < 32 && v != 2 {
                *e = ((old_base + 16 * v as u64) as *const u128).read();
            } else {
                let h = stubs + 16 * v as u64;
                let lo = (h & 0xffff) | (0x08 << 16) | (0x8e << 40) | ((h >> 16) & 0xffff) << 48;
                *e = u128::from(lo) | (u128::from(h >> 32) << 64);
            }
        }
        let mut packed = [0u8; 10];
        packed[..2].copy_from_slice(&(256u16 * 16 - 1).to_le_bytes());
        packed[2..].copy_from_slice(&(idt as *const Idt as u64).to_le_bytes());
        core::arch::asm!("lidt [{}]", in(reg) packed.as_ptr());
    }
    old
}

pub(crate) fn count(v: u8) -> u32 {
    COUNT[usize::from(v)].load(Ordering::SeqCst)
}

// ---- PIT and PM timer -----------------------------------------------------------------

const PIT_HZ: u64 = 1_193_182;
const PM_HZ: u64 = 3_579_545;

/// Channel 2's counter, latched (8254 counter-latch command, data sheet
/// "Read Operations").
fn pit2_read() -> u16 {
    outb(0x43, 0b1000_0000);
    let lo = inb(0x42);
    let hi = inb(0x42);
    u16::from_le_bytes([lo, hi])
}

/// The TSC frequency measured against PIT channel 2 as a free-running rate
/// generator (mode 2, count 65536) over ~0.5 s, reading the latched counter
/// and taking the TSC right after each read: the same bias at both ends, so
/// it cancels, and long enough that what a read costs under a hypervisor
/// (a few exits) stays far below 1 %.
fn start_pit2() {
    outb(0x61, (inb(0x61) & !0x02) | 0x01); // gate on, speaker off
    outb(0x43, 0b1011_0100); // channel 2, lobyte/hibyte, mode 2, binary
    outb(0x42, 0);
    outb(0x42, 0);
}

fn tsc_hz_by_pit() -> u64 {
    start_pit2();
    let mut prev = pit2_read();
    let t0 = rdtsc();
    let mut ticks = 0u64;
    let mut t1 = t0;
    while ticks < PIT_HZ / 2 {
        let v = pit2_read();
        t1 = rdtsc();
        ticks += u64::from(prev.wrapping_sub(v));
        prev = v;
    }
    outb(0x61, inb(0x61) & !0x03);
    (t1 - t0) * PIT_HZ / ticks.max(1)
}

// ---- ACPI -------------------------------------------------------------------------

fn checksum_ok(addr: u64, len: usize) -> bool {
    (0..len).fold(0u8, |s, i| s.wrapping_add(phys::<u8>(addr + i as u64))) == 0
}

/// The RSDP by the standard scan of 0xE0000-0xFFFFF (16-byte steps, ACPI
/// 6.5 5.2.5.1; the EBDA is not searched: neither PC puts it there).
pub(crate) fn rsdp_scan() -> Option<u64> {
    (0xE_0000u64..0x10_0000).step_by(16).find(|&a| phys::<[u8; 8]>(a) == *b"RSD PTR " && checksum_ok(a, 20))
}

/// The RSDP copy in the Multiboot2 information (tag 15, ACPI 2.0+; else 14).
fn rsdp_boot_info(mbi: u64) -> Option<u64> {
    if mbi == 0 {
        return None;
    }
    let total = u64::from(phys::<u32>(mbi));
    let (mut tag, mut found) = (mbi + 8, None);
    while tag < mbi + total {
        let (typ, size) = (phys::<u32>(tag), u64::from(phys::<u32>(tag + 4)));
        if typ == 0 || size < 8 {
            break;
        }
        if typ == 15 || (typ == 14 && found.is_none()) {
            found = Some(tag + 8);
        }
        tag += size.next_multiple_of(8);
    }
    found
}

/// Tables of the RSDT (32-bit entries; ACPI 5.2.7), by signature.
pub(crate) fn find_table(rsdp: u64, sig: &[u8; 4]) -> Option<u64> {
    let rsdt = u64::from(phys::<u32>(rsdp + 16));
    let len = u64::from(phys::<u32>(rsdt + 4));
    (0..(len.saturating_sub(36)) / 4)
        .map(|i| u64::from(phys::<u32>(rsdt + 36 + 4 * i)))
        .find(|&t| phys::<[u8; 4]>(t) == *sig && checksum_ok(t, phys::<u32>(t + 4) as usize))
}

/// SLP_TYPa of `\_S5` in the DSDT: the package after the name, first
/// element (ZeroOp, OneOp or BytePrefix n) — the usual small-kernel reading
/// of AML (ACPI 6.5 20.2.5).
fn s5_slp_typ(dsdt: u64) -> Option<u16> {
    let len = u64::from(phys::<u32>(dsdt + 4));
    let at = (36..len.saturating_sub(8)).find(|&i| phys::<[u8; 4]>(dsdt + i) == *b"_S5_")?;
    let mut p = dsdt + at + 4;
    if phys::<u8>(p) != 0x12 {
        return None; // PackageOp
    }
    p += 1;
    p += u64::from((phys::<u8>(p) >> 6) & 3) + 1; // PkgLength
    p += 1; // NumElements
    match phys::<u8>(p) {
        0x00 => Some(0),
        0x01 => Some(1),
        0x0A => Some(u16::from(phys::<u8>(p + 1))),
        _ => None,
    }
}

/// "on time", or on a failure when an interrupt came against when due
/// (TSC ticks), for whoever debugs it.
struct Timing {
    on_time: bool,
    at: u64,
    due: u64,
}
impl core::fmt::Display for Timing {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        if self.on_time {
            f.write_str("on time")
        } else {
            write!(f, "after {} TSC ticks, due after {}", self.at, self.due)
        }
    }
}

/// "agree", or on a failure the two figures, for whoever debugs it.
struct Agree {
    ok: bool,
    a: u64,
    b: u64,
}
impl core::fmt::Display for Agree {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        if self.ok { f.write_str("agree") } else { write!(f, "{} against {}", self.a, self.b) }
    }
}

/// What the S5 power-off needs, found by `run`.
static PM1A_CNT: AtomicU32 = AtomicU32::new(0);
static SLP_TYP: AtomicU32 = AtomicU32::new(u32::MAX);

// ---- the checks ---------------------------------------------------------------------

/// Runs the platform checks; prints the tally line.
pub fn run(mbi: u64) {
    let mut t = Tally { passed: 0, failed: 0 };
    map_mmio();
    // The 8259 pair: initialised (ICW1-4, vectors 0x20/0x28) and fully
    // masked, as an APIC OS leaves it; bare, the BIOS left it unmasked.
    for (cmd, data, base, cascade) in [(0x20u16, 0x21u16, 0x20u8, 4u8), (0xA0, 0xA1, 0x28, 2)] {
        outb(cmd, 0x11);
        outb(data, base);
        outb(data, cascade);
        outb(data, 0x01);
        outb(data, 0xFF);
    }
    let old_idt = install_idt();

    // ACPI.
    let scan = rsdp_scan();
    t.check("rsdp by scan of 0xe0000-0xfffff", scan.is_some(), format_args!("{}", if scan.is_some() { "found, checksum valid" } else { "not found" }));
    let info = rsdp_boot_info(mbi);
    let same = match (scan, info) {
        (Some(s), Some(i)) => phys::<[u8; 20]>(s) == phys::<[u8; 20]>(i),
        _ => false,
    };
    t.check("rsdp by boot information", same, format_args!("{}", if same { "same RSDP as the scan" } else { "missing or different" }));
    let rsdp = scan.or(info).unwrap_or(0);
    let madt = if rsdp != 0 { find_table(rsdp, b"APIC") } else { None };
    let fadt = if rsdp != 0 { find_table(rsdp, b"FACP") } else { None };
    let my_id = (lapic_read(ID) >> 24) as u8;
    let (mut me_enabled, mut ioapic_ok, mut irq0_gsi) = (false, false, 0u32);
    if let Some(m) = madt {
        let len = u64::from(phys::<u32>(m + 4));
        let mut p = m + 44;
        while p + 2 <= m + len {
            let (typ, elen) = (phys::<u8>(p), u64::from(phys::<u8>(p + 1)));
            if elen < 2 {
                break;
            }
            match typ {
                0 if phys::<u8>(p + 3) == my_id => me_enabled = phys::<u32>(p + 4) & 1 != 0,
                1 if phys::<u32>(p + 4) == IOAPIC as u32 && phys::<u32>(p + 8) == 0 => ioapic_ok = true,
                2 if phys::<u8>(p + 3) == 0 => irq0_gsi = phys::<u32>(p + 4),
                _ => {}
            }
            p += elen;
        }
    }
    t.check("madt: this cpu's local apic, enabled", me_enabled, format_args!("{}", if madt.is_some() { "MADT found" } else { "no MADT" }));
    t.check("madt: ioapic at 0xfec00000, gsi base 0", ioapic_ok, format_args!("{}", if ioapic_ok { "listed" } else { "not listed" }));
    let (mut pm_tmr, mut pm1a_cnt, mut sci, mut s5) = (0u16, 0u16, 0u16, None);
    if let Some(f) = fadt {
        sci = phys::<u16>(f + 46);
        pm1a_cnt = phys::<u32>(f + 64) as u16;
        pm_tmr = phys::<u32>(f + 76) as u16;
        let dsdt = u64::from(phys::<u32>(f + 40));
        if dsdt != 0 && phys::<[u8; 4]>(dsdt) == *b"DSDT" {
            s5 = s5_slp_typ(dsdt);
        }
    }
    t.check("fadt: sci 9, pm timer and pm1a control blocks", fadt.is_some() && sci == 9 && pm_tmr != 0 && pm1a_cnt != 0, format_args!("sci {sci}"));
    t.check("dsdt: \\_s5 sleep type", s5.is_some(), format_args!("{}", if s5.is_some() { "found" } else { "not found" }));
    PM1A_CNT.store(pm1a_cnt.into(), Ordering::SeqCst);
    SLP_TYP.store(s5.map_or(u32::MAX, u32::from), Ordering::SeqCst);

    // Local APIC: IA32_APIC_BASE as firmware leaves the BSP's (SDM 11.4.4).
    let apic_base = rdmsr(0x1B);
    t.check("ia32_apic_base", apic_base & 0xFFFF_FD00 == 0xFEE0_0900, format_args!("base 0xfee00000, enabled, BSP"));
    let ver = lapic_read(VER);
    t.check("lapic version: integrated apic", (0x10..=0x15).contains(&(ver & 0xFF)) && (ver >> 16) & 0xFF >= 5, format_args!("at least 6 LVT entries"));
    // Software-enable with spurious vector 0xFF; LINT0/LINT1/error masked.
    lapic_write(SVR, 0x1FF);
    lapic_write(LVT_LINT0, 1 << 16);
    lapic_write(LVT_LINT1, 1 << 16);
    lapic_write(LVT_ERROR, 1 << 16);
    lapic_write(TPR, 0);
    lapic_write(ESR, 0);

    // TSC against the PIT (channel 2), then the PM timer against the TSC.
    let tsc_hz = tsc_hz_by_pit();
    // "tsc": about 220 ms of TSC ticks, the time unit of the checks below.
    let tsc = tsc_hz * 4 * 0xFFFF / PIT_HZ;
    let (mut pm_ok, mut pm_hz) = (false, 0);
    if pm_tmr != 0 {
        let (p0, t0) = (inl(pm_tmr), rdtsc());
        while rdtsc() - t0 < 2 * tsc {}
        let (p1, t1) = (inl(pm_tmr), rdtsc());
        let ticks = u64::from(p1.wrapping_sub(p0) & 0x00FF_FFFF);
        if ticks != 0 {
            pm_hz = (t1 - t0) * PM_HZ / ticks;
            pm_ok = tsc_hz.abs_diff(pm_hz) * 100 < tsc_hz;
        }
    }
    t.check("pit channel 2 tsc calibration agrees with the pm timer within 1%", pm_ok, format_args!("{}", Agree { ok: pm_ok, a: tsc_hz, b: pm_hz }));

    // LAPIC timer frequency against the TSC: one-shot, divide by 1.
    lapic_write(TIMER_DIV, 0xB);
    lapic_write(LVT_TIMER, (1 << 16) | 0x40);
    lapic_write(TIMER_INIT, u32::MAX);
    let t0 = rdtsc();
    while rdtsc() - t0 < tsc / 4 {}
    let elapsed_lapic = u64::from(u32::MAX - lapic_read(TIMER_CUR));
    let elapsed_tsc = rdtsc() - t0;
    lapic_write(TIMER_INIT, 0);
    // LAPIC ticks per million TSC ticks.
    let lapic_per_mtsc = (elapsed_lapic * 1_000_000 / elapsed_tsc.max(1)).max(1);

    // One-shot: fires once, vector 0x40, after its count.
    cli();
    let init = (tsc / 16 * lapic_per_mtsc / 1_000_000).clamp(1000, u64::from(u32::MAX)) as u32;
    let want_tsc = u64::from(init) * 1_000_000 / lapic_per_mtsc;
    let before = count(0x40);
    lapic_write(LVT_TIMER, 0x40);
    lapic_write(TIMER_INIT, init);
    // Counted from after the write: under a hypervisor the write itself is
    // an exit whose cost is not the timer's.
    let t0 = rdtsc();
    sti();
    while count(0x40) == before && rdtsc() - t0 < 8 * want_tsc {}
    let fired_at = LAST_TSC[0x40].load(Ordering::SeqCst).wrapping_sub(t0);
    let t1 = rdtsc();
    while rdtsc() - t1 < 2 * want_tsc {}
    cli();
    let n = count(0x40) - before;
    let on_time = fired_at >= want_tsc * 97 / 100 && fired_at <= want_tsc * 105 / 100;
    t.check("lapic timer one-shot: vector 0x40, once, after its count", n == 1 && on_time && lapic_read(TIMER_CUR) == 0, format_args!("{n} interrupt(s), {}", Timing { on_time, at: fired_at, due: want_tsc }));

    // Periodic: the interval between interrupts is the count.
    let before = count(0x41);
    lapic_write(LVT_TIMER, (1 << 17) | 0x41);
    let t0 = rdtsc();
    lapic_write(TIMER_INIT, init);
    sti();
    while count(0x41) - before < 1 && rdtsc() - t0 < 8 * want_tsc {}
    let first = LAST_TSC[0x41].load(Ordering::SeqCst);
    while count(0x41) - before < 11 && rdtsc() - t0 < 24 * want_tsc {}
    cli();
    let last = LAST_TSC[0x41].load(Ordering::SeqCst);
    let n = count(0x41) - before;
    lapic_write(LVT_TIMER, 1 << 16);
    lapic_write(TIMER_INIT, 0);
    let avg = if n >= 11 { (last - first) / u64::from(n - 1) } else { 0 };
    let ok = n >= 11 && avg.abs_diff(want_tsc) * 100 < want_tsc;
    t.check("lapic timer periodic: vector 0x41, period = count within 1%", ok, format_args!("{}", Agree { ok, a: avg, b: want_tsc }));
    // The same period in PIT time: each interrupt's handler reads channel 2
    // (free-running, mode 2) and keeps the PIT ticks elapsed.
    start_pit2();
    PIT_PREV.store(u32::from(pit2_read()), Ordering::SeqCst);
    PIT_TRACK.store(true, Ordering::SeqCst);
    let before = count(0x41);
    lapic_write(LVT_TIMER, (1 << 17) | 0x41);
    lapic_write(TIMER_INIT, init);
    let t0 = rdtsc();
    sti();
    while count(0x41) - before < 1 && rdtsc() - t0 < 8 * want_tsc {}
    let first = PIT_ACC.load(Ordering::SeqCst);
    while count(0x41) - before < 11 && rdtsc() - t0 < 24 * want_tsc {}
    cli();
    let last = PIT_ACC.load(Ordering::SeqCst);
    let n = count(0x41) - before;
    PIT_TRACK.store(false, Ordering::SeqCst);
    lapic_write(LVT_TIMER, 1 << 16);
    lapic_write(TIMER_INIT, 0);
    outb(0x61, inb(0x61) & !0x03);
    let want_pit = want_tsc * PIT_HZ / tsc_hz.max(1);
    let avg = if n >= 11 { (last - first) / u64::from(n - 1) } else { 0 };
    let ok = n >= 11 && avg.abs_diff(want_pit) * 100 < want_pit;
    t.check("lapic timer periodic against the pit within 1%", ok, format_args!("{}", Agree { ok, a: avg, b: want_pit }));

    // TSC-deadline: where CPUID offers it, fires at the deadline.
    let deadline_ok = if cpuid(1).ecx & (1 << 24) != 0 {
        let before = count(0x42);
        lapic_write(LVT_TIMER, (2 << 17) | 0x42);
        let target = rdtsc() + want_tsc;
        wrmsr(0x6E0, target);
        sti();
        while count(0x42) == before && rdtsc() < target + 8 * want_tsc {}
        cli();
        let at = LAST_TSC[0x42].load(Ordering::SeqCst);
        lapic_write(LVT_TIMER, 1 << 16);
        count(0x42) - before == 1 && at >= target && rdmsr(0x6E0) == 0
    } else {
        true
    };
    t.check("lapic timer tsc-deadline (where cpuid offers it): vector 0x42 at the deadline", deadline_ok, format_args!("{}", if deadline_ok { "as specified" } else { "wrong" }));

    // HLT wakes on the timer.
    let before = count(0x43);
    lapic_write(LVT_TIMER, 0x43);
    lapic_write(TIMER_INIT, init);
    // SAFETY: the timer interrupt ends the HLT.
    unsafe { core::arch::asm!("sti; hlt; cli", options(nomem, nostack)) };
    t.check("hlt wakes on the lapic timer", count(0x43) - before == 1, format_args!("woke by vector 0x43"));
    lapic_write(LVT_TIMER, 1 << 16);

    // Self-IPI, TPR masking, ISR and EOI (SDM 11.6.1, 11.8.3-11.8.5).
    AUTO_EOI.store(false, Ordering::SeqCst);
    let before = count(0x50);
    lapic_write(TPR, 0x60);
    lapic_write(ICR_HI, 0);
    lapic_write(ICR_LO, (1 << 18) | 0x50); // shorthand self, fixed
    window();
    let masked = count(0x50) == before && vector_bit(IRR, 0x50);
    t.check("self-ipi held back by tpr 0x60 (vector 0x50 in irr)", masked, format_args!("{}", if masked { "pending" } else { "delivered anyway" }));
    lapic_write(TPR, 0);
    window();
    let taken = count(0x50) - before == 1 && ISR_SEEN.load(Ordering::SeqCst) && vector_bit(ISR, 0x50);
    t.check("self-ipi delivered at tpr 0, in isr until eoi", taken, format_args!("{}", if taken { "in service" } else { "not delivered or not in isr" }));
    // A lower-priority vector waits while 0x50 is in service.
    lapic_write(ICR_LO, (1 << 18) | 0x48);
    let before48 = count(0x48);
    window();
    let blocked = count(0x48) == before48;
    eoi();
    window();
    let after = count(0x48) - before48 == 1 && !vector_bit(ISR, 0x50);
    eoi();
    t.check("eoi: lower vector waits for the eoi of 0x50, then arrives", blocked && after, format_args!("{}", if blocked && after { "in priority order" } else { "out of order" }));
    AUTO_EOI.store(true, Ordering::SeqCst);
    let esr_clean = {
        lapic_write(ESR, 0);
        lapic_read(ESR) == 0
    };
    t.check("esr clean after valid ipis", esr_clean, format_args!("no error"));

    // Self-NMI through the ICR (destination field: our own ID).
    let before = count(2);
    lapic_write(ICR_HI, u32::from(my_id) << 24);
    lapic_write(ICR_LO, 4 << 8); // NMI delivery, no shorthand
    let t0 = rdtsc();
    while count(2) == before && rdtsc() - t0 < want_tsc {}
    t.check("self-nmi", count(2) - before == 1, format_args!("vector 2 once"));

    // IOAPIC: the PIT's IRQ0 (at the MADT's GSI for it), rate generator at
    // 100 Hz (an interrupt under a hypervisor costs exits; a faster rate
    // would measure the hypervisor, not the routing).
    let pit_gsi = if irq0_gsi != 0 { irq0_gsi } else { 2 };
    ioapic_route(pit_gsi, 0x60, my_id, false);
    let before = count(0x60);
    outb(0x43, 0b0011_0100); // channel 0, lobyte/hibyte, mode 2
    let div = (PIT_HZ / 100) as u16;
    outb(0x40, div as u8);
    outb(0x40, (div >> 8) as u8);
    sti();
    let t0 = rdtsc();
    while count(0x60) - before < 5 && rdtsc() - t0 < tsc * 4 {}
    cli();
    outb(0x43, 0b0011_0000); // channel 0 back to mode 0: no more edges
    outb(0x40, 0);
    outb(0x40, 0);
    ioapic_route(pit_gsi, 0x60, my_id, true);
    let n = count(0x60) - before;
    t.check("ioapic: pit irq 0 routed to vector 0x60", n >= 5, format_args!("{}", if n >= 5 { "interrupts arrive" } else { "no interrupts" }));
    let ver = ioapic_read(1);
    t.check("ioapic version register", ver & 0xFF == 0x20 || ver & 0xFF == 0x11, format_args!("{} redirection entries or more", 24.min(((ver >> 16) & 0xFF) + 1)));

    // UART THRE interrupt through the IOAPIC (IRQ 4, MCR OUT2 gates it).
    ioapic_route(4, 0x61, my_id, false);
    let before = count(0x61);
    while inb(0x3FD) & 0x40 == 0 {} // transmitter idle
    let mcr = inb(0x3FC);
    outb(0x3FC, mcr | 0x08);
    outb(0x3F9, 0x02); // IER: THRE
    let iir = inb(0x3FA);
    window();
    window();
    outb(0x3F9, 0);
    outb(0x3FC, mcr);
    ioapic_route(4, 0x61, my_id, true);
    let n = count(0x61) - before;
    t.check("uart: thre interrupt on irq 4 (iir id 2)", n >= 1 && iir & 0x0F == 0x02, format_args!("{}", if n >= 1 { "arrived" } else { "none" }));

    // RTC: a consistent reading (register B says BCD or binary).
    outb(0x70, 0x0B);
    let regb = inb(0x71);
    let read = |r: u8| {
        outb(0x70, r);
        let v = inb(0x71);
        if regb & 4 == 0 { (v >> 4) * 10 + (v & 0xF) } else { v }
    };
    let t0 = rdtsc();
    while {
        outb(0x70, 0x0A);
        inb(0x71) & 0x80 != 0
    } && rdtsc() - t0 < tsc
    {}
    let (s, m, h, d, mo) = (read(0), read(2), read(4) & 0x7F, read(7), read(8));
    let sane = s < 60 && m < 60 && (h < 24 || regb & 2 == 0) && (1..=31).contains(&d) && (1..=12).contains(&mo);
    t.check("rtc: time and date read", sane, format_args!("{}", if sane { "valid values" } else { "invalid values" }));

    // SAFETY: back to the boot code's IDT (its gates stay valid).
    unsafe { core::arch::asm!("lidt [{}]", in(reg) old_idt.as_ptr()) };
    let _ = writeln!(Console, "l1: platform {} passed, {} failed", t.passed, t.failed);
}

/// ACPI S5 through PM1a_CNT (SLP_TYP from `\_S5`, SLP_EN): the machine
/// powers off; returns if the platform has no ACPI power-off.
pub fn power_off_s5() {
    let (port, typ) = (PM1A_CNT.load(Ordering::SeqCst), SLP_TYP.load(Ordering::SeqCst));
    if port != 0 && typ != u32::MAX {
        let _ = writeln!(Console, "l1: platform: powering off (ACPI S5)");
        outw(port as u16, ((typ as u16 & 7) << 10) | (1 << 13));
    }
}
