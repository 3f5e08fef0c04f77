//! The Linux x86 boot protocol, 32-bit entry (Linux
//! `Documentation/arch/x86/boot.rst`): a bzImage's setup header checked, its
//! protected-mode kernel loaded at 1 MiB, a `boot_params` ("zero page") with
//! the setup header, the e820 map, the command line, the initrd and the
//! ACPI RSDP, and entry at the 32-bit start with ESI = boot_params.

use crate::space::{AddressSpace, Kind};
use crate::{Boot, Entry, GuestMem, LoadError, Placer, u16_at, u32_at, u64_at};

// Offsets in boot_params (arch/x86/include/uapi/asm/bootparam.h).
const ACPI_RSDP_ADDR: u64 = 0x070;
const EXT_RAMDISK_IMAGE: u64 = 0x0C0;
const EXT_RAMDISK_SIZE: u64 = 0x0C4;
const EXT_CMD_LINE_PTR: u64 = 0x0C8;
const E820_ENTRIES: u64 = 0x1E8;
const SETUP_HEADER: usize = 0x1F1;
const E820_TABLE: u64 = 0x2D0;
// Offsets of setup-header fields (in the image and in boot_params alike).
const SETUP_SECTS: usize = 0x1F1;
const BOOT_FLAG: usize = 0x1FE;
const JUMP: usize = 0x200;
const HEADER: usize = 0x202;
const VERSION: usize = 0x206;
const TYPE_OF_LOADER: usize = 0x210;
const LOADFLAGS: usize = 0x211;
const CODE32_START: usize = 0x214;
const RAMDISK_IMAGE: usize = 0x218;
const RAMDISK_SIZE: usize = 0x21C;
const CMD_LINE_PTR: usize = 0x228;
const INITRD_ADDR_MAX: usize = 0x22C;
const CMDLINE_SIZE: usize = 0x238;
const PREF_ADDRESS: usize = 0x258;
const INIT_SIZE: usize = 0x260;

/// Where the protected-mode kernel goes (the 32-bit protocol's 0x100000).
pub const KERNEL_LOAD: u64 = 0x10_0000;
/// __BOOT_CS and __BOOT_DS of the 32-bit boot protocol.
const BOOT_CS: u16 = 0x10;
const BOOT_DS: u16 = 0x18;

/// Is this a bzImage (boot flag, "HdrS")?
pub fn is_bzimage(image: &[u8]) -> bool {
    u16_at(image, BOOT_FLAG) == Some(0xAA55) && image.get(HEADER..HEADER + 4) == Some(b"HdrS")
}

/// Loads a bzImage with at most one initrd module; builds boot_params.
pub fn load(mem: &mut GuestMem, space: &AddressSpace, boot: &Boot, rsdp: Option<u64>) -> Result<(Entry, (u64, u64)), LoadError> {
    let img = boot.image;
    let version = u16_at(img, VERSION).unwrap_or(0);
    // 2.10 brings pref_address/init_size, which say how much RAM the kernel needs.
    if version < 0x020A {
        return Err(LoadError::LinuxTooOld(version));
    }
    if img.get(LOADFLAGS).is_none_or(|f| f & 1 == 0) {
        return Err(LoadError::LinuxNotBzImage);
    }
    let setup_sects = match img[SETUP_SECTS] {
        0 => 4,
        n => usize::from(n),
    };
    let pm_offset = (setup_sects + 1) * 512;
    let pm = img.get(pm_offset..).filter(|p| !p.is_empty()).ok_or(LoadError::LinuxNotBzImage)?;
    let hdr_end = HEADER + usize::from(img[JUMP + 1]);
    let header = img.get(SETUP_HEADER..hdr_end).ok_or(LoadError::LinuxNotBzImage)?;
    let cmdline_max = u32_at(img, CMDLINE_SIZE).unwrap_or(255) as usize;
    if boot.cmdline.len() > cmdline_max {
        return Err(LoadError::CmdlineTooLong { len: boot.cmdline.len(), max: cmdline_max });
    }
    if boot.modules.len() > 1 {
        return Err(LoadError::LinuxModules(boot.modules.len()));
    }
    // The kernel decompresses itself to pref_address (nokaslr) and needs
    // init_size bytes from there; it starts at 1 MiB.
    let pref = u64_at(img, PREF_ADDRESS).unwrap_or(KERNEL_LOAD).max(KERNEL_LOAD);
    let init_size = u64::from(u32_at(img, INIT_SIZE).unwrap_or(0));
    let kernel_end = (pref + init_size).max(KERNEL_LOAD + pm.len() as u64);
    if !space.is_ram(KERNEL_LOAD, kernel_end - KERNEL_LOAD) {
        return Err(LoadError::LinuxNeedsRam { need: kernel_end, have: space.ram_top() });
    }
    mem.write(KERNEL_LOAD, pm).ok_or(LoadError::OutsideRam { addr: KERNEL_LOAD, size: pm.len() as u64 })?;
    let kernel = (KERNEL_LOAD, kernel_end);
    let mut place = Placer::new(space, kernel);

    let zp = place.alloc(0x1000, 0x1000, true, "boot_params")?;
    let err = LoadError::NoRoom("boot_params");
    mem.fill(zp, 0x1000, 0).ok_or(err)?;
    mem.write(zp + SETUP_HEADER as u64, header).ok_or(err)?;
    let w8 = |mem: &mut GuestMem, off: usize, v: u8| mem.write(zp + off as u64, &[v]).ok_or(err);
    let w32 = |mem: &mut GuestMem, off: u64, v: u32| mem.write_u32(zp + off, v).ok_or(err);
    w8(mem, TYPE_OF_LOADER, 0xFF)?; // "undefined" boot loader
    // LOADED_HIGH as the image says; no KEEP_SEGMENTS, no QUIET_FLAG, no CAN_USE_HEAP (32-bit entry).
    w8(mem, LOADFLAGS, img[LOADFLAGS] & 1)?;
    w32(mem, CODE32_START as u64, KERNEL_LOAD as u32)?;

    // Command line, whole (checked against cmdline_size above).
    let cmd = place.string(mem, boot.cmdline, "the command line")?;
    w32(mem, CMD_LINE_PTR as u64, cmd as u32)?;
    w32(mem, EXT_CMD_LINE_PTR, (cmd >> 32) as u32)?;

    // The initrd: as high as the kernel allows (initrd_addr_max), page aligned, as GRUB does.
    if let Some(m) = boot.modules.first() {
        let size = m.bytes.len() as u64;
        let max = u64::from(u32_at(img, INITRD_ADDR_MAX).unwrap_or(0x37FF_FFFF)) + 1;
        let top = max.min(space.ram_top());
        let at = top.checked_sub(size).map(|a| a & !0xFFF).filter(|&a| a >= kernel_end.max(place_high_floor(&place)));
        let at = at.ok_or(LoadError::NoRoom("the initrd"))?;
        mem.write(at, m.bytes).ok_or(LoadError::NoRoom("the initrd"))?;
        w32(mem, RAMDISK_IMAGE as u64, at as u32)?;
        w32(mem, RAMDISK_SIZE as u64, size as u32)?;
        w32(mem, EXT_RAMDISK_IMAGE, (at >> 32) as u32)?;
        w32(mem, EXT_RAMDISK_SIZE, (size >> 32) as u32)?;
    }

    // e820 (struct boot_e820_entry: addr u64, size u64, type u32; packed).
    let regions = space.regions();
    for (i, r) in regions.iter().enumerate() {
        let e = zp + E820_TABLE + 20 * i as u64;
        let t = if r.kind == Kind::Ram { 1 } else { 2 };
        mem.write_u64(e, r.base).and(mem.write_u64(e + 8, r.len)).and(mem.write_u32(e + 16, t)).ok_or(err)?;
    }
    w8(mem, E820_ENTRIES as usize, regions.len() as u8)?;
    if let Some(r) = rsdp {
        mem.write_u64(zp + ACPI_RSDP_ADDR, r).ok_or(err)?;
    }
    Ok((Entry { eip: KERNEL_LOAD as u32, eax: 0, ebx: 0, esi: zp as u32, cs: BOOT_CS, ds: BOOT_DS }, kernel))
}

/// The lowest address the initrd may take: above what the placer handed out in high RAM.
fn place_high_floor(p: &Placer) -> u64 {
    p.high.0
}
