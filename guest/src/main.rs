//! nvmx-l1: the built-in L1 guest hypervisor.
//!
//! A small Multiboot2 (and Multiboot1) kernel that GRUB can boot bare (then it uses the CPU's
//! VT-x directly) and that nvmx loads as L1 the way GRUB would. The same image
//! and arguments give the same output lines bare and nested, which is how
//! nvmx's nested VMX is checked. Its console is COM1, driven by raw port I/O
//! (under nvmx that COM1 is a virtual 16550).
//!
//! Arguments (the Multiboot command line): `workload=forum|selftest|platform|pio|echo|fuzz|race|plain`,
//! `exits=N` (0 = run forever; fuzz: operations; race: rounds), `seed=N` (fuzz),
//! `crash=triple|memory`, `novmx`.

#![no_std]
#![no_main]

mod apicaccess;
mod boot;
mod conformance;
mod console;
mod eptad;
mod forum;
mod fuzz;
mod irqtest;
mod paging_check;
mod pio;
mod platform;
mod ptimer;
mod race;
mod selftest;
mod shadow12;
mod vmx;

use core::fmt::Write;

use console::Console;

/// The parsed command line.
pub struct Args {
    pub workload: &'static str,
    pub exits: u64,
    /// `crash=triple`: triple-fault at once; `crash=memory`: write to
    /// physical memory the L1 was not given (1 GiB - 4 KiB).
    pub crash: Option<&'static str>,
    pub novmx: bool,
    /// `seed=N` and `show=N` (print operations N..N+39) for `workload=fuzz`.
    pub seed: u64,
    pub show: Option<u64>,
    /// `time`: the forum workload also prints the TSC ticks its L2-exit
    /// loop took (for `make bench`; left out otherwise, so that bare and
    /// nested runs print the same lines).
    pub time: bool,
    /// `reset=cf9|kbd|92`: reset the machine at once through the PCI reset
    /// control register, the keyboard controller or port 0x92's fast reset.
    pub reset: Option<&'static str>,
    /// `scribble`: the race workload's AP also writes over the current
    /// VMCS region (nested only: the SDM leaves it undefined).
    pub scribble: bool,
}

fn parse_args(cmdline: &'static str) -> Args {
    let mut a = Args { workload: "forum", exits: 20_000, crash: None, novmx: false, seed: 1, show: None, time: false, reset: None, scribble: false };
    for w in cmdline.split_ascii_whitespace() {
        match w.split_once('=') {
            Some(("workload", v)) => a.workload = v,
            Some(("exits", v)) => a.exits = v.parse().unwrap_or(a.exits),
            Some(("seed", v)) => a.seed = v.parse().unwrap_or(a.seed),
            Some(("show", v)) => a.show = v.parse().ok(),
            Some(("crash", v @ ("triple" | "memory"))) => a.crash = Some(v),
            Some(("reset", v @ ("cf9" | "kbd" | "92"))) => a.reset = Some(v),
            None if w == "novmx" => a.novmx = true,
            None if w == "time" => a.time = true,
            None if w == "scribble" => a.scribble = true,
            _ => {}
        }
    }
    a
}

/// The Multiboot2 command line (tag type 1), or "".
fn cmdline(mbi: u64) -> &'static str {
    // SAFETY: the loader (GRUB or nvmx) put a valid Multiboot2 information
    // structure at `mbi`: total size, reserved, then 8-byte aligned tags.
    unsafe {
        let total = *(mbi as *const u32) as u64;
        let mut tag = mbi + 8;
        while tag < mbi + total {
            let typ = *(tag as *const u32);
            let size = *((tag + 4) as *const u32) as u64;
            if typ == 0 || size < 8 {
                break;
            }
            if typ == 1 {
                let bytes = core::slice::from_raw_parts((tag + 8) as *const u8, (size - 8) as usize);
                let len = bytes.iter().position(|&b| b == 0).unwrap_or(bytes.len());
                return core::str::from_utf8(&bytes[..len]).unwrap_or("");
            }
            tag += size.next_multiple_of(8);
        }
    }
    ""
}

/// The Multiboot1 command line (information flag 2, pointer at +16), or "".
fn cmdline_mb1(mbi: u64) -> &'static str {
    // SAFETY: the loader put a Multiboot1 information structure at `mbi`
    // (spec 0.6.96 3.3); its cmdline field, when flagged, points to a
    // NUL-terminated string in the first GiB, which is identity mapped.
    unsafe {
        if *(mbi as *const u32) & (1 << 2) == 0 {
            return "";
        }
        let p = *((mbi + 16) as *const u32) as *const u8;
        let mut len = 0;
        while *p.add(len) != 0 {
            len += 1;
        }
        core::str::from_utf8(core::slice::from_raw_parts(p, len)).unwrap_or("")
    }
}

/// Rust entry, from `boot.rs` in long mode.
#[unsafe(no_mangle)]
extern "C" fn l1_main(magic: u32, mbi: u32) -> ! {
    console::init();
    let mut out = Console;
    let line = match magic {
        0x36d7_6289 => cmdline(mbi.into()),
        0x2bad_b002 => cmdline_mb1(mbi.into()),
        _ => "",
    };
    let _ = writeln!(out, "nvmx-l1 {}: {}", env!("CARGO_PKG_VERSION"), line);
    boot::init_idt();
    let args = parse_args(line);
    match args.crash {
        Some("triple") => {
            let _ = writeln!(out, "l1: crash=triple: loading an empty IDT and raising #BP");
            boot::triple_fault();
        }
        Some(_) => {
            let _ = writeln!(out, "l1: crash=memory: writing to physical 0x3ffff000");
            // SAFETY: the point is to touch memory this L1 may not have;
            // the address is identity-mapped by the L1's 1 GiB page tables.
            unsafe { core::ptr::write_volatile(0x3FFF_F000 as *mut u64, 0x5A) };
            // SAFETY: as above; a PC answers all-ones where nothing decodes.
            let back = unsafe { core::ptr::read_volatile(0x3FFF_F000 as *const u64) };
            let _ = writeln!(out, "l1: the write went through (no hypervisor stopped it); reads back {back:#x}");
        }
        None => {}
    }
    if let Some(how) = args.reset {
        let _ = writeln!(out, "l1: resetting the machine through {how}");
        boot::reset(how);
        let _ = writeln!(out, "l1: the reset through {how} did nothing");
        boot::halt()
    }
    if args.workload == "echo" {
        console::echo();
        let _ = writeln!(out, "l1: done");
        boot::power_off_emulator();
        boot::halt()
    }
    if args.workload == "platform" {
        // The PC, not VMX: runs on any x86-64 PC, bare or as an L1; ends
        // with an ACPI S5 power-off.
        platform::run(if magic == 0x36d7_6289 { mbi.into() } else { 0 });
        let _ = writeln!(out, "l1: done");
        platform::power_off_s5();
        boot::power_off_emulator();
        boot::halt()
    }
    if args.workload == "pio" {
        // Port reads and Linux's PIT calibrations, no VMX needed.
        pio::run();
        let _ = writeln!(out, "l1: done");
        boot::power_off_emulator();
        boot::halt()
    }
    let vmx = if args.novmx { Err("novmx on the command line") } else { vmx::probe() };
    match (args.workload, vmx) {
        ("forum", Ok(caps)) => forum::run(&caps, &args),
        ("selftest", Ok(caps)) => selftest::run(&caps),
        ("fuzz", Ok(caps)) => fuzz::run(&caps, args.seed, args.exits, args.show),
        ("race", Ok(caps)) => race::run(&caps, args.exits, args.scribble),
        (_, Err(reason)) => {
            let _ = writeln!(out, "l1: no VMX: {reason}");
            plain(&args);
        }
        _ => plain(&args),
    }
    let _ = writeln!(out, "l1: done");
    boot::power_off_emulator();
    boot::halt()
}

/// The non-VMX workload: the exits a plain OS kernel causes under a
/// hypervisor (CPUID, port I/O, RDMSR), in a deterministic count.
fn plain(args: &Args) {
    let mut out = Console;
    let _ = writeln!(out, "l1: plain workload, {} rounds", args.exits);
    let (mut cpuid, mut io, mut msr) = (0u64, 0u64, 0u64);
    let mut round = 0u64;
    while args.exits == 0 || round < args.exits {
        core::hint::black_box(core::arch::x86_64::__cpuid(0));
        cpuid += 1;
        // SAFETY: port 0x80 is the POST diagnostic port; writing it is harmless.
        unsafe { core::arch::asm!("out 0x80, al", in("al") round as u8) };
        io += 1;
        // SAFETY: IA32_TIME_STAMP_COUNTER exists on every x86-64 CPU.
        unsafe { core::arch::asm!("rdmsr", in("ecx") 0x10u32, out("eax") _, out("edx") _) };
        msr += 1;
        round += 1;
        if args.exits != 0 && round % (args.exits / 4).max(1) == 0 {
            let _ = writeln!(out, "l1: plain {round}/{}", args.exits);
        }
    }
    let _ = writeln!(out, "l1: summary plain cpuid={cpuid} io={io} rdmsr={msr}");
}

#[panic_handler]
fn panic(info: &core::panic::PanicInfo) -> ! {
    let _ = writeln!(Console, "l1: panic: {info}");
    boot::halt()
}
