//! nvmx — L0 of a nested VT-x hypervisor. GRUB enters `boot.rs`; Rust starts
//! in [`kernel_main`] on the boot core and in `smp::ap_main` on the others.

#![no_std]
#![no_main]

extern crate alloc;

mod apic;
mod arch;
mod boot;
mod bootinfo;
mod console;
mod l1;
mod mailbox;
mod firmware;
mod integrity;
mod keyboard;
mod mm;
mod panic;
mod percpu;
mod screen;
mod shell;
mod serial;
mod smp;
mod stats;
mod stats_view;
mod time;
mod top;
mod vmx;

use log::{error, info, warn};

/// nvmx's version, printed at boot.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// Rust entry on the boot core (from `boot.rs`, long mode, identity map).
#[unsafe(no_mangle)]
extern "C" fn kernel_main(magic: u32, mbi: u32) -> ! {
    serial::init();
    println!("nvmx {VERSION} booting");
    if magic != bootinfo::MULTIBOOT2_MAGIC {
        println!("nvmx: not started by a Multiboot2 loader (magic {magic:#x}); halting");
        arch::cpu::halt_forever();
    }
    // SAFETY: EBX from GRUB, nothing has touched low memory yet.
    let info = match unsafe { bootinfo::init(u64::from(mbi)) } {
        Ok(info) => info,
        Err(e) => {
            println!("nvmx: {e}; halting");
            arch::cpu::halt_forever();
        }
    };
    let level = info.arg("log").and_then(console::parse_level).unwrap_or(log::LevelFilter::Info);
    console::init_log(level);
    console::CPU_ID_FN.call_once(|| || percpu::try_current_index().unwrap_or(0));
    mm::init(info);
    screen::init(info.framebuffer);
    // The legacy PICs stay masked: nvmx polls its devices, and the local
    // APIC carries the only interrupt it uses (the shell's IPI).
    arch::cpu::outb(0x21, 0xFF);
    arch::cpu::outb(0xA1, 0xFF);
    apic::init_this_cpu();
    let bsp = percpu::init_this_cpu(0, apic::id());
    bsp.set_state(percpu::CpuState::Online);
    info!("command line: '{}'", info.cmdline());
    match info.framebuffer {
        Some(fb) if fb.text => info!("screen: VGA text {}x{} at {:#x}", fb.width, fb.height, fb.addr),
        Some(fb) => info!("screen: framebuffer {}x{}x{} at {:#x}", fb.width, fb.height, fb.bpp, fb.addr),
        None => info!("screen: none reported (VGA text assumed under BIOS)"),
    }
    let f = mm::frames::stats();
    info!("memory: {} MiB usable, heap {} KiB", f.total_bytes >> 20, mm::heap_stats().1 >> 10);
    let apic_ids: alloc::vec::Vec<u32> = match firmware::init(info.acpi) {
        Ok(acpi) => acpi.processors.iter().filter(|p| p.enabled).map(|p| p.apic_id).collect(),
        Err(e) => {
            error!("acpi: {e}; running on the boot core only");
            alloc::vec![bsp.apic_id.load(core::sync::atomic::Ordering::Relaxed)]
        }
    };
    mailbox::init();
    mailbox::set_handler(l1::answer);
    match vmx::probe() {
        Some(_) => info!("vmx: VT-x usable; starting one L1 per core"),
        None => warn!("vmx: VT-x not available: {}; no L1 will run", vmx::unavailable_reason()),
    }
    smp::start_aps(&apic_ids, ap_main);
    shell::start();
    l1::run_forever(0, shell::poll)
}

/// An AP's life once up: run its L1.
fn ap_main(cpu: &'static percpu::PerCpu) -> ! {
    l1::run_forever(cpu.index, || {})
}
