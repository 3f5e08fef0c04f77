//! ELF32 and ELF64 images as GRUB's Multiboot loaders take them: every
//! PT_LOAD segment copied to its *physical* address (p_paddr), the rest of
//! its memory size zeroed; the entry point translated from the virtual to
//! the physical address of the segment holding it (GRUB's
//! `multiboot_elfxx.c` does so, for kernels linked higher than loaded).

use crate::space::AddressSpace;
use crate::{GuestMem, LoadError, u16_at, u32_at, u64_at};

/// A segment: file offset, physical and virtual address, file and memory size.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Segment {
    offset: u64,
    paddr: u64,
    vaddr: u64,
    filesz: u64,
    memsz: u64,
}

/// Calls `f` for each PT_LOAD segment; returns the ELF entry (virtual).
fn segments(elf: &[u8], mut f: impl FnMut(Segment) -> Result<(), LoadError>) -> Result<u64, LoadError> {
    if elf.get(0..4) != Some(b"\x7fELF") || elf.get(5) != Some(&1) {
        return Err(LoadError::NotElf);
    }
    let class64 = match (elf.get(4), u16_at(elf, 18)) {
        (Some(1), Some(3)) => false, // ELFCLASS32, EM_386
        (Some(2), Some(62)) => true, // ELFCLASS64, EM_X86_64
        _ => return Err(LoadError::NotElf),
    };
    let bad = LoadError::BadElf("truncated program header");
    let (entry, phoff, phentsize, phnum) = if class64 {
        (u64_at(elf, 24), u64_at(elf, 32), u16_at(elf, 54), u16_at(elf, 56))
    } else {
        (u32_at(elf, 24).map(u64::from), u32_at(elf, 28).map(u64::from), u16_at(elf, 42), u16_at(elf, 44))
    };
    let (Some(entry), Some(phoff), Some(phentsize), Some(phnum)) = (entry, phoff, phentsize, phnum) else {
        return Err(LoadError::BadElf("truncated ELF header"));
    };
    let min_ent = if class64 { 56 } else { 32 };
    if phnum > 0 && usize::from(phentsize) < min_ent {
        return Err(LoadError::BadElf("program header entries too small"));
    }
    for i in 0..u64::from(phnum) {
        let ph = usize::try_from(phoff + i * u64::from(phentsize)).map_err(|_| bad)?;
        if u32_at(elf, ph).ok_or(bad)? != 1 {
            continue; // not PT_LOAD
        }
        let seg = if class64 {
            Segment {
                offset: u64_at(elf, ph + 8).ok_or(bad)?,
                vaddr: u64_at(elf, ph + 16).ok_or(bad)?,
                paddr: u64_at(elf, ph + 24).ok_or(bad)?,
                filesz: u64_at(elf, ph + 32).ok_or(bad)?,
                memsz: u64_at(elf, ph + 40).ok_or(bad)?,
            }
        } else {
            Segment {
                offset: u32_at(elf, ph + 4).ok_or(bad)?.into(),
                vaddr: u32_at(elf, ph + 8).ok_or(bad)?.into(),
                paddr: u32_at(elf, ph + 12).ok_or(bad)?.into(),
                filesz: u32_at(elf, ph + 16).ok_or(bad)?.into(),
                memsz: u32_at(elf, ph + 20).ok_or(bad)?.into(),
            }
        };
        f(seg)?;
    }
    Ok(entry)
}

/// Loads the PT_LOAD segments into `mem`; returns the physical entry point
/// and the range the image occupies.
pub fn load(elf: &[u8], mem: &mut GuestMem, space: &AddressSpace) -> Result<(u64, (u64, u64)), LoadError> {
    let mut range = (u64::MAX, 0u64);
    let mut phys_entry = None;
    let entry = segments(elf, |s| {
        if s.filesz > s.memsz {
            return Err(LoadError::BadElf("segment file size exceeds its memory size"));
        }
        if s.memsz == 0 {
            return Ok(());
        }
        if !space.is_ram(s.paddr, s.memsz) {
            return Err(LoadError::OutsideRam { addr: s.paddr, size: s.memsz });
        }
        let src = usize::try_from(s.offset)
            .ok()
            .and_then(|o| elf.get(o..o.checked_add(usize::try_from(s.filesz).ok()?)?))
            .ok_or(LoadError::BadElf("segment beyond the end of the file"))?;
        mem.write(s.paddr, src).ok_or(LoadError::OutsideRam { addr: s.paddr, size: s.memsz })?;
        mem.fill(s.paddr + s.filesz, s.memsz - s.filesz, 0).ok_or(LoadError::OutsideRam { addr: s.paddr, size: s.memsz })?;
        range = (range.0.min(s.paddr), range.1.max(s.paddr + s.memsz));
        Ok(())
    })?;
    // The entry's physical address: through the segment whose virtual range holds it.
    segments(elf, |s| {
        if phys_entry.is_none() && s.vaddr <= entry && entry < s.vaddr.saturating_add(s.memsz) {
            phys_entry = Some(entry - s.vaddr + s.paddr);
        }
        Ok(())
    })?;
    if range.1 == 0 {
        return Err(LoadError::BadElf("no loadable segment"));
    }
    let entry = phys_entry.unwrap_or(entry);
    if entry >= 1 << 32 {
        return Err(LoadError::BadElf("entry point above 4 GiB"));
    }
    Ok((entry, range))
}
