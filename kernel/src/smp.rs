//! Starting the application processors (SDM Vol. 3A 10.4.4, "MP initialization
//! example"): for each enabled processor of the MADT, INIT, de-assert, wait
//! 10 ms, then two start-up IPIs 200 µs apart pointing at the real-mode
//! trampoline in `boot.rs`. APs come up one at a time because they share the
//! trampoline's parameter block. An AP that does not report in within the
//! time limit is marked failed and reported; the others go on.

use core::sync::atomic::Ordering;

use log::{info, warn};

use crate::apic::{self, Ipi};
use crate::boot;
use crate::mm::frames;
use crate::percpu::{self, CpuState};

/// Stack of each AP (in pages).
const AP_STACK_PAGES: u64 = 64;
/// How long an AP has to report in after its SIPIs.
const AP_TIMEOUT_MS: u64 = 200;

/// What happens on an AP once it is up (set by `main`).
static AP_WORK: spin::Once<fn(&'static percpu::PerCpu) -> !> = spin::Once::new();

/// Starts every enabled processor in `apic_ids` other than the boot core.
/// Returns how many came up.
pub fn start_aps(apic_ids: &[u32], work: fn(&'static percpu::PerCpu) -> !) -> usize {
    AP_WORK.call_once(|| work);
    let bsp = apic::id();
    let others = apic_ids.iter().copied().filter(|&id| id != bsp);
    let n = 1 + others.clone().count().min(percpu::MAX_CPUS - 1);
    percpu::set_count(n);

    let tramp = boot::ap_trampoline();
    assert!(tramp.len() <= boot::AP_PARAM_CR3 as usize, "AP trampoline overlaps its parameters");
    // SAFETY: 0x8000 is in the low megabyte, which the frame allocator never
    // hands out; the boot information was copied before (bootinfo::init).
    unsafe {
        core::ptr::copy_nonoverlapping(tramp.as_ptr(), boot::AP_TRAMPOLINE as *mut u8, tramp.len());
        param(boot::AP_PARAM_CR3).write_volatile(crate::arch::cpu::read_cr3());
        param(boot::AP_PARAM_ENTRY).write_volatile(ap_entry as *const () as u64);
    }

    let mut online = 1;
    for (index, apic_id) in (1..n).zip(others) {
        let cpu = percpu::cpu(index);
        cpu.apic_id.store(apic_id, Ordering::Release);
        let Some(stack) = frames::alloc(AP_STACK_PAGES, 1) else {
            warn!("smp: no memory for cpu {index}'s stack");
            cpu.set_state(CpuState::Failed);
            continue;
        };
        // SAFETY: the parameter block lies in the trampoline page we own; no
        // AP is reading it (the previous one has reported in or timed out).
        unsafe {
            param(boot::AP_PARAM_STACK).write_volatile(stack + AP_STACK_PAGES * 4096);
            param(boot::AP_PARAM_ARG).write_volatile(index as u64);
        }
        cpu.set_state(CpuState::Starting);
        apic::send_ipi(apic_id, Ipi::Init);
        crate::time::delay_us(200);
        apic::send_ipi(apic_id, Ipi::InitDeassert);
        crate::time::delay_us(10_000);
        let page = (boot::AP_TRAMPOLINE >> 12) as u8;
        for _ in 0..2 {
            apic::send_ipi(apic_id, Ipi::Startup(page));
            crate::time::delay_us(200);
            if cpu.state() == CpuState::Online {
                break;
            }
        }
        let mut waited = 0;
        while cpu.state() == CpuState::Starting && waited < AP_TIMEOUT_MS {
            crate::time::delay_us(1000);
            waited += 1;
        }
        if cpu.state() == CpuState::Online {
            online += 1;
        } else {
            warn!("smp: cpu {index} (apic id {apic_id:#x}) did not come up");
            cpu.set_state(CpuState::Failed);
        }
    }
    info!("smp: {online} of {n} cpus online");
    online
}

fn param(offset: u64) -> *mut u64 {
    (boot::AP_TRAMPOLINE + offset) as *mut u64
}

/// Rust entry of an AP, called by the trampoline on its own stack.
extern "C" fn ap_entry(index: u64) -> ! {
    apic::init_this_cpu();
    let cpu = percpu::init_this_cpu(index as usize, apic::id());
    cpu.set_state(CpuState::Online);
    match AP_WORK.get() {
        Some(work) => work(cpu),
        None => crate::arch::cpu::halt_forever(),
    }
}
