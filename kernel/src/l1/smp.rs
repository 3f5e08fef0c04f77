//! A two-vCPU L1 (`l1vcpus=2`): cores 0 and 1 run ONE L1 — vCPU 0 (the BSP,
//! APIC ID 0) on core 0, vCPU 1 (an AP, APIC ID 1) on core 1. They share the
//! L1's RAM and EPT0-1; each has its own VMCS0-1, local APIC, nested-VMX
//! state (VMXON, current vmcs12) and bitmaps, as two CPUs of one machine do.
//!
//! vCPU 1 starts in wait-for-SIPI (SDM 10.4 / 11.6.1): L0 parks it — its core
//! does not enter it — until vCPU 0 sends INIT then SIPI through its ICR,
//! and then builds the real-mode state the SIPI gives an AP (CS = vector <<
//! 8, base vector << 12, IP 0; SDM 10.4.4.1 / 11.6.1), as KVM does for its
//! APs instead of entering VMCS0-1 in activity state "wait-for-SIPI".
//!
//! IPIs between the two go through per-vCPU inboxes: the sender's ICR write
//! (`nvmx_devices::lapic::Ipi`) is routed here to the target's inbox, and the
//! target's core, kicked by a host IPI, moves it into its local APIC before
//! its next entry. Fixed (lowest priority as fixed), NMI, INIT, SIPI; who
//! is reached is `Ipi::reaches` (host-tested in `nvmx-devices`).
//!
//! The RAM and EPT0-1 of the shared L1 are allocated once and never freed:
//! a restart of vCPU 0 reloads the image into the same frames, so vCPU 1,
//! which may still be running on them for a moment, never runs on frames
//! L0 gave to anything else.
//!
//! Not shared (yet): the other devices — each vCPU's port I/O and IOAPIC
//! reach a PC model of its own core (vCPU 1's COM1 output is `console 1`);
//! the race workload's AP does no I/O.

use core::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};

use nvmx_devices::lapic::Ipi;

/// vCPUs of the spanning L1 at most.
pub const MAX_VCPUS: usize = 2;

/// vCPUs of core 0's L1: 2 with `l1vcpus=2` (and a second core online),
/// else 1. Read once.
pub fn vcpus() -> usize {
    static N: spin::Once<usize> = spin::Once::new();
    *N.call_once(|| match crate::bootinfo::get().arg("l1vcpus") {
        Some("2") if crate::percpu::count() >= 2 => 2,
        Some("2") => {
            log::warn!("l1vcpus=2 needs a second core; core 0's L1 gets one vCPU");
            1
        }
        Some("1") | None => 1,
        Some(other) => {
            log::warn!("l1vcpus={other}: only 1 or 2; core 0's L1 gets one vCPU");
            1
        }
    })
}

/// The vCPU index of `cpu` in the spanning L1, if it is part of it.
pub fn vcpu_index(cpu: usize) -> Option<usize> {
    (vcpus() > 1 && cpu < vcpus()).then_some(cpu)
}

/// The shared L1's RAM and EPT0-1, set once by vCPU 0's first start.
pub struct Machine {
    pub mem_base: u64,
    pub mem_size: u64,
    pub eptp: u64,
}

static MACHINE: spin::Once<Machine> = spin::Once::new();
/// Starts of vCPU 0's L1 (each one puts vCPU 1 back into wait-for-SIPI).
static GENERATION: AtomicU64 = AtomicU64::new(0);

/// The shared machine, allocating it on first use (vCPU 0's core only).
pub fn machine_for_bsp(mem_size: u64) -> Result<&'static Machine, alloc::string::String> {
    if let Some(m) = MACHINE.get() {
        return Ok(m);
    }
    let mut keep = crate::mm::frames::Owned::default();
    let mem_base = keep
        .alloc(mem_size / 4096, 512)
        .ok_or_else(|| alloc::format!("no {} MiB of contiguous memory for the L1", mem_size >> 20))?;
    let eptp = crate::vmx::run::build_ept01(&mut keep, mem_base, mem_size).ok_or("no memory for EPT0-1")?;
    // Kept for the machine's lifetime (see the module header): never freed.
    core::mem::forget(keep);
    Ok(MACHINE.call_once(|| Machine { mem_base, mem_size, eptp }))
}

/// The shared machine once vCPU 0 made it.
pub fn machine() -> Option<&'static Machine> {
    MACHINE.get()
}

/// vCPU 0's L1 (re)started: vCPU 1 goes back to wait-for-SIPI.
pub fn bsp_started() {
    for inbox in &INBOX {
        inbox.clear();
    }
    GENERATION.fetch_add(1, Ordering::AcqRel);
    if vcpus() > 1 {
        crate::mailbox::kick(1);
    }
}

pub fn generation() -> u64 {
    GENERATION.load(Ordering::Acquire)
}

/// What is waiting for one vCPU's local APIC.
pub struct Inbox {
    fixed: [AtomicU32; 8],
    nmi: AtomicBool,
    init: AtomicBool,
    /// 0x100 | vector of the last SIPI.
    sipi: AtomicU32,
    /// IPIs delivered to this vCPU (`l1 <cpu>`).
    pub received: AtomicU64,
    /// The vCPU waits for SIPI (`l1 <cpu>`).
    pub parked: AtomicBool,
}

impl Inbox {
    const fn new() -> Self {
        Inbox {
            fixed: [const { AtomicU32::new(0) }; 8],
            nmi: AtomicBool::new(false),
            init: AtomicBool::new(false),
            sipi: AtomicU32::new(0),
            received: AtomicU64::new(0),
            parked: AtomicBool::new(false),
        }
    }
    fn clear(&self) {
        for w in &self.fixed {
            w.store(0, Ordering::Relaxed);
        }
        self.nmi.store(false, Ordering::Relaxed);
        self.init.store(false, Ordering::Relaxed);
        self.sipi.store(0, Ordering::Relaxed);
    }
}

static INBOX: [Inbox; MAX_VCPUS] = [const { Inbox::new() }; MAX_VCPUS];

pub fn inbox(vcpu: usize) -> &'static Inbox {
    &INBOX[vcpu]
}

/// Routes an IPI vCPU `from` sent to the other vCPUs and wakes their cores.
pub fn route(from: usize, ipi: Ipi, x2apic: bool) {
    for to in 0..vcpus() {
        if !ipi.reaches(from as u8, to as u8, x2apic) {
            continue;
        }
        let inbox = &INBOX[to];
        match ipi.mode {
            0 | 1 => {
                inbox.fixed[usize::from(ipi.vector >> 5)].fetch_or(1 << (ipi.vector & 31), Ordering::AcqRel);
            }
            4 => inbox.nmi.store(true, Ordering::Release),
            5 if ipi.deassert => continue,
            5 => inbox.init.store(true, Ordering::Release),
            6 => inbox.sipi.store(0x100 | u32::from(ipi.vector), Ordering::Release),
            _ => continue,
        }
        inbox.received.fetch_add(1, Ordering::Relaxed);
        crate::mailbox::kick(to);
    }
}

/// What the inbox of `vcpu` held for the CPU itself (not its LAPIC).
pub struct Arrived {
    pub init: bool,
    /// The SIPI's vector, if one came.
    pub sipi: Option<u8>,
    /// A fixed IPI or an NMI went into the local APIC: the PC needs a pass
    /// before the next entry (it may have an interrupt to deliver now).
    pub interrupt: bool,
}

/// Moves `vcpu`'s fixed IPIs and NMI into its local APIC; returns INIT and
/// SIPI for the vCPU loop.
pub fn drain(vcpu: usize, pc: &mut nvmx_devices::Platform) -> Arrived {
    let inbox = &INBOX[vcpu];
    let mut interrupt = false;
    for (i, w) in inbox.fixed.iter().enumerate() {
        if w.load(Ordering::Relaxed) == 0 {
            continue;
        }
        let mut bits = w.swap(0, Ordering::AcqRel);
        while bits != 0 {
            let b = bits.trailing_zeros();
            bits &= bits - 1;
            pc.accept_ipi((i as u32 * 32 + b) as u8);
            interrupt = true;
        }
    }
    if inbox.nmi.swap(false, Ordering::AcqRel) {
        pc.accept_nmi_ipi();
        interrupt = true;
    }
    let init = inbox.init.swap(false, Ordering::AcqRel);
    let sipi = inbox.sipi.swap(0, Ordering::AcqRel);
    Arrived { init, sipi: (sipi & 0x100 != 0).then_some(sipi as u8), interrupt }
}

/// The `l1 <cpu>` line of a vCPU of the two-vCPU L1, readable from any core.
pub fn describe(cpu: usize) -> Option<alloc::string::String> {
    let i = vcpu_index(cpu)?;
    let inbox = &INBOX[i];
    Some(alloc::format!(
        "cpu {cpu}: vCPU {i} of {} of cpu 0's L1, APIC ID {i}; {}; {} IPIs received from the other vCPU",
        vcpus(),
        if inbox.parked.load(Ordering::Relaxed) { "waiting for SIPI" } else { "started" },
        inbox.received.load(Ordering::Relaxed),
    ))
}
