//! Which image an L1 is and how it gets into the L1's memory: the kernel's
//! side of the `nvmx-loader` crate (Multiboot1, Multiboot2, Linux boot
//! protocol; the L1's address space and memory map).
//!
//! GRUB lines name the L1 and its modules in order (README "Your own L1"):
//!
//! ```text
//! multiboot2 /boot/nvmx …            nvmx itself
//! module2 /boot/l1 <L1 command line>  the first module: the L1 image
//! module2 /boot/x <string>            every further module: one of the L1's
//!                                     own modules (Multiboot module list;
//!                                     Linux: the initrd), with its string
//! ```
//!
//! No module: the built-in L1 (guest/). `l1boot=multiboot1|multiboot2`
//! picks the protocol of an image that has both headers (default: Linux for
//! a bzImage, else Multiboot2, else Multiboot1). `l1image<N>=builtin` gives
//! core N the built-in L1 (no modules) even when there is a module L1, so
//! one machine can run, say, Linux on core 1 and the built-in L1 on core 0.

use alloc::string::String;
use alloc::vec::Vec;
use core::fmt::Write;

use nvmx_loader::{Acpi, Boot, Loaded, Module, Prefer, space::AddressSpace};

/// The built-in L1 (guest/ crate), embedded at build time. Empty when the
/// kernel was built without it (build.rs says so).
pub static BUILTIN_L1: &[u8] = include_bytes!(env!("NVMX_L1_ELF"));

/// A GRUB module's bytes and string.
fn module_bytes(m: &crate::bootinfo::Module) -> &'static [u8] {
    // SAFETY: GRUB placed the module in RAM that the frame allocator keeps
    // out of use (mm::init reserves module ranges); all RAM is identity
    // mapped and modules are never written.
    unsafe { core::slice::from_raw_parts(m.start as *const u8, (m.end - m.start) as usize) }
}

/// `l1image<cpu>=`: does core `cpu` run the built-in L1 although there is a
/// module L1? `Err` for a value other than `builtin` or `module`.
fn builtin_on(cpu: usize) -> Result<bool, String> {
    match crate::bootinfo::get().arg(&alloc::format!("l1image{cpu}")) {
        None | Some("module") => Ok(false),
        Some("builtin") => Ok(true),
        Some(v) => Err(alloc::format!("l1image{cpu}={v}: expected builtin or module")),
    }
}

/// The L1 image core `cpu` loads: the first GRUB module when there is one
/// (unless `l1image<cpu>=builtin`), else the built-in L1. With the module's
/// string as default L1 command line.
pub fn l1_image(cpu: usize) -> (&'static [u8], Option<&'static str>) {
    match crate::bootinfo::get().modules().first() {
        Some(m) if !builtin_on(cpu).unwrap_or(false) => (module_bytes(m), Some(m.string())),
        _ => (BUILTIN_L1, None),
    }
}

/// Core `cpu`'s L1's own modules: every GRUB module after the first (none
/// for the built-in L1).
fn l1_modules(cpu: usize) -> Vec<Module<'static>> {
    if l1_image(cpu).1.is_none() {
        return Vec::new();
    }
    let mods = crate::bootinfo::get().modules();
    mods.iter().skip(1).map(|m| Module { bytes: module_bytes(m), string: m.string() }).collect()
}

/// `l1boot=`: which header of a two-headed image to use.
fn prefer() -> Result<Prefer, String> {
    match crate::bootinfo::get().arg("l1boot") {
        None | Some("auto") => Ok(Prefer::Auto),
        Some("multiboot1") => Ok(Prefer::Multiboot1),
        Some("multiboot2") => Ok(Prefer::Multiboot2),
        Some(v) => Err(alloc::format!("l1boot={v}: expected auto, multiboot1 or multiboot2")),
    }
}

/// Loads core `cpu`'s L1 (image, modules, boot information) into `mem`, the
/// L1's zeroed guest-physical memory, with command line `cmdline`.
pub fn load(cpu: usize, mem: &mut [u8], cmdline: &str) -> Result<Loaded, String> {
    builtin_on(cpu)?;
    let space = AddressSpace::new(mem.len() as u64);
    let modules = l1_modules(cpu);
    // The L1 PC's ACPI tables (nvmx-devices), built for the BIOS area where
    // the loader puts them; the boot information points at their RSDP too.
    // A two-vCPU L1 (`l1vcpus=2`) lists both processors in its MADT.
    let cpus = if super::smp::vcpu_index(cpu).is_some() { super::smp::vcpus() as u8 } else { 1 };
    let cfg = nvmx_devices::acpi::AcpiConfig { cpus, ..Default::default() };
    let tables = nvmx_devices::acpi::build(nvmx_loader::space::BIOS_AREA, &cfg);
    let acpi = Some(Acpi { bytes: &tables.bytes, rsdp_offset: tables.rsdp_offset });
    let boot = Boot { image: l1_image(cpu).0, cmdline, modules: &modules, acpi, prefer: prefer()? };
    nvmx_loader::load(mem, &space, &boot).map_err(|e| alloc::format!("{e}"))
}

/// The `l1` view's first lines: which image, which protocol, which modules;
/// then the cores that run the built-in L1 instead (`l1image<N>=builtin`).
pub fn describe() -> String {
    let mut out = String::new();
    let first = crate::bootinfo::get().modules().first();
    let (image, string) = match first {
        Some(m) => (module_bytes(m), Some(m.string())),
        None => (BUILTIN_L1, None),
    };
    let proto = prefer().and_then(|p| nvmx_loader::detect(image, p).map_err(|e| alloc::format!("{e}")));
    let proto = match &proto {
        Ok(p) => p.name(),
        Err(_) => "not loadable",
    };
    let _ = match string {
        Some(s) => writeln!(out, "L1 image: GRUB module ({} bytes, {proto}), module string \"{s}\"", image.len()),
        None => writeln!(out, "L1 image: built-in nvmx-l1 ({} bytes, {proto})", image.len()),
    };
    for (i, m) in crate::bootinfo::get().modules().iter().skip(1).enumerate() {
        let _ = writeln!(out, "L1 module {i}: {} bytes, \"{}\"", m.end - m.start, m.string());
    }
    if first.is_some() {
        for cpu in 0..crate::percpu::count() {
            match builtin_on(cpu) {
                Ok(true) => writeln!(out, "cpu {cpu}: the built-in nvmx-l1 instead (l1image{cpu}=builtin)"),
                Ok(false) => Ok(()),
                Err(e) => writeln!(out, "cpu {cpu}: {e}"),
            }
            .ok();
        }
    }
    out
}
