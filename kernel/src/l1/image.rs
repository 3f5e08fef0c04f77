//! Loading an L1 the way GRUB loads a Multiboot2 kernel: its ELF PT_LOAD
//! segments copied to their physical addresses (here: L1 guest-physical
//! addresses inside the L1's memory), and a Multiboot2 information structure
//! describing only what the L1 has — its own memory and its command line.
//! See Multiboot2 spec 1.0 sections 3.1 (image format) and 3.6 (boot info).

use alloc::vec::Vec;

/// The built-in L1 (guest/ crate), embedded at build time. Empty when the
/// kernel was built without it (build.rs says so).
pub static BUILTIN_L1: &[u8] = include_bytes!(env!("NVMX_L1_ELF"));

/// The L1 image every core loads: the first GRUB module when there is
/// one (`module2 /boot/l1 args…`: any Multiboot2 ELF64 kernel, such as a
/// hypervisor of your own), else the built-in L1. With the module's string
/// as default L1 command line.
pub fn l1_image() -> (&'static [u8], Option<&'static str>) {
    match crate::bootinfo::get().modules().first() {
        Some(m) => {
            // SAFETY: GRUB placed the module in RAM that the frame allocator
            // keeps out of use (mm::init reserves module ranges); all RAM is
            // identity mapped and the module is never written.
            let bytes = unsafe { core::slice::from_raw_parts(m.start as *const u8, (m.end - m.start) as usize) };
            (bytes, Some(m.string()))
        }
        None => (BUILTIN_L1, None),
    }
}

/// Why an image could not be loaded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LoadError {
    NoImage,
    NotElf64,
    BadProgramHeader,
    SegmentOutsideMemory { addr: u64, size: u64 },
}

impl core::fmt::Display for LoadError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            LoadError::NoImage => write!(f, "no L1 image (nvmx was built without guest/ and GRUB loaded no module)"),
            LoadError::NotElf64 => write!(f, "L1 image is not an x86-64 ELF"),
            LoadError::BadProgramHeader => write!(f, "L1 image has a malformed program header"),
            LoadError::SegmentOutsideMemory { addr, size } => {
                write!(f, "L1 segment {addr:#x}+{size:#x} lies outside the L1's memory")
            }
        }
    }
}

fn u16_at(b: &[u8], off: usize) -> Option<u16> {
    Some(u16::from_le_bytes(b.get(off..off + 2)?.try_into().ok()?))
}
fn u32_at(b: &[u8], off: usize) -> Option<u32> {
    Some(u32::from_le_bytes(b.get(off..off + 4)?.try_into().ok()?))
}
fn u64_at(b: &[u8], off: usize) -> Option<u64> {
    Some(u64::from_le_bytes(b.get(off..off + 8)?.try_into().ok()?))
}

/// Copies the PT_LOAD segments of `elf` into `mem` (which is the L1's
/// guest-physical memory, guest-physical 0 at `mem[0]`) and returns the entry.
pub fn load_elf(elf: &[u8], mem: &mut [u8]) -> Result<u64, LoadError> {
    if elf.is_empty() {
        return Err(LoadError::NoImage);
    }
    // ELF64 little-endian x86-64 (e_ident, e_machine = 62).
    if elf.get(0..4) != Some(b"\x7fELF") || elf.get(4) != Some(&2) || u16_at(elf, 18) != Some(62) {
        return Err(LoadError::NotElf64);
    }
    let entry = u64_at(elf, 24).ok_or(LoadError::NotElf64)?;
    let phoff = u64_at(elf, 32).ok_or(LoadError::NotElf64)? as usize;
    let phentsize = usize::from(u16_at(elf, 54).ok_or(LoadError::NotElf64)?);
    let phnum = usize::from(u16_at(elf, 56).ok_or(LoadError::NotElf64)?);
    for i in 0..phnum {
        let ph = phoff + i * phentsize;
        if u32_at(elf, ph).ok_or(LoadError::BadProgramHeader)? != 1 {
            continue; // not PT_LOAD
        }
        let offset = u64_at(elf, ph + 8).ok_or(LoadError::BadProgramHeader)? as usize;
        let paddr = u64_at(elf, ph + 24).ok_or(LoadError::BadProgramHeader)?;
        let filesz = u64_at(elf, ph + 32).ok_or(LoadError::BadProgramHeader)? as usize;
        let memsz = u64_at(elf, ph + 40).ok_or(LoadError::BadProgramHeader)?;
        let end = paddr.checked_add(memsz).filter(|&e| e <= mem.len() as u64);
        if end.is_none() || filesz as u64 > memsz {
            return Err(LoadError::SegmentOutsideMemory { addr: paddr, size: memsz });
        }
        let src = elf.get(offset..offset + filesz).ok_or(LoadError::BadProgramHeader)?;
        let dst = &mut mem[paddr as usize..(paddr + memsz) as usize];
        dst[..filesz].copy_from_slice(src);
        dst[filesz..].fill(0);
    }
    Ok(entry)
}

/// Builds the Multiboot2 information for an L1 with `mem_size` bytes of
/// guest-physical memory: a memory map (low 640 KiB and [1 MiB, end) usable,
/// as a PC would show it), basic memory info, the command line and the boot
/// loader name. No host address appears in it.
pub fn multiboot_info(mem_size: u64, cmdline: &str) -> Vec<u8> {
    use multiboot2::{
        BasicMemoryInfoTag, BootLoaderNameTag, Builder, CommandLineTag, MaybeDynSized, MemoryArea, MemoryAreaType,
        MemoryMapTag,
    };
    let areas = [
        MemoryArea::new(0, 0xA_0000, MemoryAreaType::Available),
        MemoryArea::new(0xA_0000, 0x6_0000, MemoryAreaType::Reserved),
        MemoryArea::new(0x10_0000, mem_size - 0x10_0000, MemoryAreaType::Available),
    ];
    Builder::new()
        .cmdline(CommandLineTag::new(cmdline))
        .bootloader(BootLoaderNameTag::new("nvmx"))
        .meminfo(BasicMemoryInfoTag::new(640, ((mem_size - 0x10_0000) / 1024) as u32))
        .mmap(MemoryMapTag::new(&areas))
        .build()
        .as_bytes()
        .to_vec()
}
