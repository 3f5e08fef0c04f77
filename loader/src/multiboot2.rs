//! Multiboot2 (Multiboot2 Specification 2.0): the header in the first
//! 32 KiB (section 3.1), an ELF image or the address tag, and the boot
//! information (3.6) with the command line, the loader name, the modules,
//! basic memory information, the memory map and the ACPI RSDP (old and new).

use crate::space::{AddressSpace, Kind};
use crate::{Boot, Entry, GuestMem, LoadError, Placer, Protocol, u16_at, u32_at};

pub const HEADER_MAGIC: u32 = 0xE852_50D6;
/// EAX at entry (3.2).
pub const BOOTLOADER_MAGIC: u32 = 0x36D7_6289;

/// Information tags this loader provides (3.6): an information request for
/// any other, not marked optional, is refused as GRUB refuses it.
const PROVIDED: [u32; 7] = [1, 2, 3, 4, 6, 14, 15];

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Header {
    pub offset: usize,
    pub length: usize,
}

/// The header, if the first 32768 bytes hold one (64-bit aligned, i386, checksum ok).
pub fn find_header(image: &[u8]) -> Option<Result<Header, LoadError>> {
    let limit = image.len().min(32768);
    (0..limit.saturating_sub(15)).step_by(8).find(|&o| u32_at(image, o) == Some(HEADER_MAGIC)).map(|o| {
        let arch = u32_at(image, o + 4).unwrap_or(u32::MAX);
        let len = u32_at(image, o + 8).unwrap_or(0);
        let sum = u32_at(image, o + 12).unwrap_or(0);
        if HEADER_MAGIC.wrapping_add(arch).wrapping_add(len).wrapping_add(sum) != 0 {
            return Err(LoadError::BadHeaderChecksum(Protocol::Multiboot2));
        }
        if arch != 0 {
            return Err(LoadError::UnsupportedRequest(Protocol::Multiboot2, arch));
        }
        if (len as usize) < 16 || o + len as usize > image.len() {
            return Err(LoadError::NoHeader(Protocol::Multiboot2));
        }
        Ok(Header { offset: o, length: len as usize })
    })
}

/// Header tags the loader acts on.
#[derive(Default)]
struct Requests {
    address: Option<[u32; 4]>,
    entry: Option<u32>,
}

fn header_tags(image: &[u8], h: &Header) -> Result<Requests, LoadError> {
    let mut r = Requests::default();
    let mut o = h.offset + 16;
    let end = h.offset + h.length;
    let bad = LoadError::NoHeader(Protocol::Multiboot2);
    while o + 8 <= end {
        let ty = u16_at(image, o).ok_or(bad)?;
        let optional = u16_at(image, o + 2).ok_or(bad)? & 1 != 0;
        let size = u32_at(image, o + 4).ok_or(bad)? as usize;
        if ty == 0 {
            break;
        }
        if size < 8 || o + size > end {
            return Err(bad);
        }
        match ty {
            1 => {
                // Information request: every type asked for must be one we give.
                for i in (8..size).step_by(4) {
                    let want = u32_at(image, o + i).ok_or(bad)?;
                    if !optional && !PROVIDED.contains(&want) {
                        return Err(LoadError::UnsupportedRequest(Protocol::Multiboot2, want));
                    }
                }
            }
            2 if size >= 24 => {
                let f = |i: usize| u32_at(image, o + 8 + 4 * i).ok_or(bad);
                r.address = Some([f(0)?, f(1)?, f(2)?, f(3)?]);
            }
            3 if size >= 12 => r.entry = Some(u32_at(image, o + 8).ok_or(bad)?),
            // Console flags, framebuffer, module alignment (modules are page
            // aligned anyway), relocatable: the L1 gets no framebuffer and is
            // loaded where it was linked.
            4 | 5 | 6 | 10 => {}
            _ if optional => {}
            _ => return Err(LoadError::UnsupportedRequest(Protocol::Multiboot2, ty.into())),
        }
        o += size.next_multiple_of(8);
    }
    Ok(r)
}

/// Writes tags into guest memory, or only counts their size (`base` None).
struct Tags<'m, 'a> {
    mem: &'m mut GuestMem<'a>,
    base: Option<u64>,
    pos: u64,
}

impl Tags<'_, '_> {
    fn tag(&mut self, ty: u32, parts: &[&[u8]]) -> Result<(), LoadError> {
        let size = 8 + parts.iter().map(|p| p.len() as u64).sum::<u64>();
        if let Some(b) = self.base {
            let at = b + self.pos;
            let err = LoadError::NoRoom("the Multiboot2 information");
            self.mem.write_u32(at, ty).ok_or(err)?;
            self.mem.write_u32(at + 4, size as u32).ok_or(err)?;
            let mut p = at + 8;
            for part in parts {
                self.mem.write(p, part).ok_or(err)?;
                p += part.len() as u64;
            }
        }
        self.pos += size.next_multiple_of(8);
        Ok(())
    }
}

/// Loads a Multiboot2 kernel with its modules and builds its information.
pub fn load(mem: &mut GuestMem, space: &AddressSpace, boot: &Boot, rsdp: Option<&[u8]>) -> Result<(Entry, (u64, u64)), LoadError> {
    let h = find_header(boot.image).ok_or(LoadError::NoHeader(Protocol::Multiboot2))??;
    let req = header_tags(boot.image, &h)?;
    let (mut entry, kernel) = match req.address {
        Some([header_addr, load_addr, load_end_addr, bss_end_addr]) => {
            let entry = req.entry.ok_or(LoadError::BadAoutKludge("address tag without entry address tag"))?;
            let image_header = crate::multiboot1::Header { offset: h.offset, flags: 0, aout: None };
            let f = [header_addr, load_addr, load_end_addr, bss_end_addr, entry];
            crate::multiboot1::load_raw(boot.image, &image_header, f, mem, space)?
        }
        None => crate::elf::load(boot.image, mem, space)?,
    };
    if let Some(e) = req.entry {
        entry = e.into();
    }
    let mut place = Placer::new(space, kernel);

    // Modules first (high RAM, page aligned): their addresses go in the tags.
    let mut mods = [(0u64, 0u64); 64];
    if boot.modules.len() > mods.len() {
        return Err(LoadError::NoRoom("more than 64 modules"));
    }
    for (i, m) in boot.modules.iter().enumerate() {
        let at = place.alloc(m.bytes.len() as u64, 0x1000, false, "a module")?;
        mem.write(at, m.bytes).ok_or(LoadError::NoRoom("a module"))?;
        mods[i] = (at, at + m.bytes.len() as u64);
    }
    let (lower, upper) = space.mem_lower_upper_kib();
    let regions = space.regions();
    let mut map = [0u8; 24 * 6];
    for (i, r) in regions.iter().enumerate() {
        let e = &mut map[24 * i..24 * i + 24];
        e[0..8].copy_from_slice(&r.base.to_le_bytes());
        e[8..16].copy_from_slice(&r.len.to_le_bytes());
        e[16..20].copy_from_slice(&(if r.kind == Kind::Ram { 1u32 } else { 2 }).to_le_bytes());
    }
    let write = |tags: &mut Tags| -> Result<(), LoadError> {
        tags.tag(1, &[boot.cmdline.as_bytes(), &[0]])?;
        tags.tag(2, &[b"nvmx\0"])?;
        for (m, &(s, e)) in boot.modules.iter().zip(mods.iter()) {
            tags.tag(3, &[&(s as u32).to_le_bytes(), &(e as u32).to_le_bytes(), m.string.as_bytes(), &[0]])?;
        }
        tags.tag(4, &[&lower.to_le_bytes(), &upper.to_le_bytes()])?;
        tags.tag(6, &[&24u32.to_le_bytes(), &0u32.to_le_bytes(), &map[..24 * regions.len()]])?;
        if let Some(r) = rsdp {
            tags.tag(14, &[&r[..20]])?; // ACPI 1.0 RSDP
            tags.tag(15, &[&r[..36]])?; // ACPI 2.0+ RSDP
        }
        tags.tag(0, &[])
    };
    let mut count = Tags { mem, base: None, pos: 8 };
    write(&mut count)?;
    let total = count.pos;
    let mbi = place.alloc(total, 8, true, "the Multiboot2 information")?;
    let mut tags = Tags { mem, base: Some(mbi), pos: 8 };
    write(&mut tags)?;
    let err = LoadError::NoRoom("the Multiboot2 information");
    tags.mem.write_u32(mbi, total as u32).ok_or(err)?;
    tags.mem.write_u32(mbi + 4, 0).ok_or(err)?;
    Ok((Entry { eip: entry as u32, eax: BOOTLOADER_MAGIC, ebx: mbi as u32, esi: 0, cs: 0x08, ds: 0x10 }, kernel))
}
