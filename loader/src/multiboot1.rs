//! Multiboot1 (Multiboot Specification 0.6.96): the header in the first
//! 8 KiB, an ELF32/ELF64 image or the a.out-kludge address fields (flag 16),
//! and the information structure (section 3.3) with memory sizes, the
//! command line, the module list, the memory map and the loader's name.

use crate::space::{AddressSpace, Kind};
use crate::{Boot, Entry, GuestMem, LoadError, Placer, Protocol, u32_at};

pub const HEADER_MAGIC: u32 = 0x1BAD_B002;
/// EAX at entry (section 3.2).
pub const BOOTLOADER_MAGIC: u32 = 0x2BAD_B002;
const PAGE_ALIGN: u32 = 1 << 0;
const MEMORY_INFO: u32 = 1 << 1;
const VIDEO_MODE: u32 = 1 << 2;
const AOUT_KLUDGE: u32 = 1 << 16;

/// The header: file offset and its fields.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Header {
    pub offset: usize,
    pub flags: u32,
    /// header_addr, load_addr, load_end_addr, bss_end_addr, entry_addr.
    pub aout: Option<[u32; 5]>,
}

/// The header, if the first 8192 bytes hold one (32-bit aligned, checksum ok).
pub fn find_header(image: &[u8]) -> Option<Result<Header, LoadError>> {
    let limit = image.len().min(8192);
    (0..limit.saturating_sub(11)).step_by(4).find(|&o| u32_at(image, o) == Some(HEADER_MAGIC)).map(|o| {
        let flags = u32_at(image, o + 4).ok_or(LoadError::NoHeader(Protocol::Multiboot1))?;
        let sum = u32_at(image, o + 8).ok_or(LoadError::NoHeader(Protocol::Multiboot1))?;
        if HEADER_MAGIC.wrapping_add(flags).wrapping_add(sum) != 0 {
            return Err(LoadError::BadHeaderChecksum(Protocol::Multiboot1));
        }
        let aout = if flags & AOUT_KLUDGE != 0 {
            let mut f = [0u32; 5];
            for (i, v) in f.iter_mut().enumerate() {
                *v = u32_at(image, o + 12 + 4 * i).ok_or(LoadError::BadAoutKludge("header truncated"))?;
            }
            Some(f)
        } else {
            None
        };
        Ok(Header { offset: o, flags, aout })
    })
}

/// Loads the image by the a.out-kludge fields (section 3.1.3): the file from
/// `header offset - (header_addr - load_addr)` to `load_end_addr` (or the
/// file's end) goes to `load_addr`, then zeros to `bss_end_addr`.
pub(crate) fn load_raw(image: &[u8], h: &Header, f: [u32; 5], mem: &mut GuestMem, space: &AddressSpace) -> Result<(u64, (u64, u64)), LoadError> {
    let [header_addr, load_addr, load_end_addr, bss_end_addr, entry_addr] = f.map(u64::from);
    if load_addr > header_addr {
        return Err(LoadError::BadAoutKludge("load_addr above header_addr"));
    }
    let file_start = (h.offset as u64).checked_sub(header_addr - load_addr).ok_or(LoadError::BadAoutKludge("load_addr before the file's start"))?;
    let file_len = image.len() as u64 - file_start;
    let load_len = if load_end_addr == 0 { file_len } else {
        load_end_addr.checked_sub(load_addr).filter(|&l| l <= file_len).ok_or(LoadError::BadAoutKludge("load_end_addr beyond the file"))?
    };
    let end = if bss_end_addr == 0 { load_addr + load_len } else {
        Some(bss_end_addr).filter(|&e| e >= load_addr + load_len).ok_or(LoadError::BadAoutKludge("bss_end_addr below load_end_addr"))?
    };
    if !space.is_ram(load_addr, end - load_addr) {
        return Err(LoadError::OutsideRam { addr: load_addr, size: end - load_addr });
    }
    if !(load_addr..end).contains(&entry_addr) {
        return Err(LoadError::BadAoutKludge("entry_addr outside the loaded image"));
    }
    let src = &image[file_start as usize..(file_start + load_len) as usize];
    mem.write(load_addr, src).ok_or(LoadError::OutsideRam { addr: load_addr, size: load_len })?;
    mem.fill(load_addr + load_len, end - load_addr - load_len, 0).ok_or(LoadError::OutsideRam { addr: load_addr, size: end - load_addr })?;
    Ok((entry_addr, (load_addr, end)))
}

/// Loads a Multiboot1 kernel with its modules and builds its information.
pub fn load(mem: &mut GuestMem, space: &AddressSpace, boot: &Boot) -> Result<(Entry, (u64, u64)), LoadError> {
    let h = find_header(boot.image).ok_or(LoadError::NoHeader(Protocol::Multiboot1))??;
    // Bits 0-15 are requirements: a loader that does not know one must refuse (3.1.2).
    let unknown = h.flags & 0xFFFF & !(PAGE_ALIGN | MEMORY_INFO | VIDEO_MODE);
    if unknown != 0 {
        return Err(LoadError::UnsupportedRequest(Protocol::Multiboot1, unknown));
    }
    let (entry, kernel) = match h.aout {
        Some(f) => load_raw(boot.image, &h, f, mem, space)?,
        None => crate::elf::load(boot.image, mem, space)?,
    };
    let mut place = Placer::new(space, kernel);

    // The information structure (3.3): 116 bytes up to the framebuffer fields.
    const MBI_LEN: u64 = 116;
    let mbi = place.alloc(MBI_LEN, 8, true, "the Multiboot information")?;
    mem.fill(mbi, MBI_LEN, 0).ok_or(LoadError::NoRoom("the Multiboot information"))?;
    let mut flags = 0u32;
    let (lower, upper) = space.mem_lower_upper_kib();
    let w32 = |mem: &mut GuestMem, off: u64, v: u32| mem.write_u32(mbi + off, v).ok_or(LoadError::NoRoom("the Multiboot information"));
    w32(mem, 4, lower)?;
    w32(mem, 8, upper)?;
    flags |= 1 << 0; // mem_lower/mem_upper
    let cmdline = place.string(mem, boot.cmdline, "the command line")?;
    w32(mem, 16, cmdline as u32)?;
    flags |= 1 << 2;

    // Modules (3.3 "mods"): page aligned after the kernel, as GRUB puts them.
    if !boot.modules.is_empty() {
        let list = place.alloc(16 * boot.modules.len() as u64, 4, true, "the module list")?;
        for (i, m) in boot.modules.iter().enumerate() {
            let at = place.alloc(m.bytes.len() as u64, 0x1000, false, "a module")?;
            mem.write(at, m.bytes).ok_or(LoadError::NoRoom("a module"))?;
            let s = place.string(mem, m.string, "a module string")?;
            let e = list + 16 * i as u64;
            for (off, v) in [(0, at as u32), (4, (at + m.bytes.len() as u64) as u32), (8, s as u32), (12, 0)] {
                mem.write_u32(e + off, v).ok_or(LoadError::NoRoom("the module list"))?;
            }
        }
        w32(mem, 20, boot.modules.len() as u32)?;
        w32(mem, 24, list as u32)?;
        flags |= 1 << 3;
    }

    // Memory map (3.3 "mmap"): size (20, not counting itself), base, length, type.
    let regions = space.regions();
    let map = place.alloc(24 * regions.len() as u64, 4, true, "the memory map")?;
    for (i, r) in regions.iter().enumerate() {
        let e = map + 24 * i as u64;
        let ok = mem.write_u32(e, 20).and(mem.write_u64(e + 4, r.base)).and(mem.write_u64(e + 12, r.len));
        ok.and(mem.write_u32(e + 20, if r.kind == Kind::Ram { 1 } else { 2 })).ok_or(LoadError::NoRoom("the memory map"))?;
    }
    w32(mem, 44, 24 * regions.len() as u32)?;
    w32(mem, 48, map as u32)?;
    flags |= 1 << 6;
    let name = place.string(mem, "nvmx", "the loader name")?;
    w32(mem, 64, name as u32)?;
    flags |= 1 << 9;
    w32(mem, 0, flags)?;
    Ok((Entry { eip: entry as u32, eax: BOOTLOADER_MAGIC, ebx: mbi as u32, esi: 0, cs: 0x08, ds: 0x10 }, kernel))
}
