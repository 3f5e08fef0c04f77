//! Loading an L1 the way GRUB would load it — Multiboot1, Multiboot2 or the
//! Linux x86 boot protocol — into a slice that *is* the L1's guest-physical
//! memory (`mem[0]` = guest-physical 0), and the register state to enter it
//! with. Pure: no I/O, no allocation; the kernel hands in the slice, the
//! image, the L1's modules and the ACPI tables, and sets the registers.
//!
//! Every protocol enters in 32-bit protected mode, paging off, flat 4 GiB
//! segments, interrupts off (Multiboot1 spec 3.2, Multiboot2 spec 3.3, Linux
//! `Documentation/arch/x86/boot.rst` "32-bit boot protocol").
#![no_std]

pub mod elf;
pub mod linux;
pub mod multiboot1;
pub mod multiboot2;
pub mod space;

use space::AddressSpace;

/// Which boot protocol an image was loaded with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Protocol {
    Multiboot1,
    Multiboot2,
    Linux,
}

impl Protocol {
    pub const fn name(self) -> &'static str {
        match self {
            Protocol::Multiboot1 => "multiboot1",
            Protocol::Multiboot2 => "multiboot2",
            Protocol::Linux => "linux",
        }
    }
}

/// Which protocol to use for an image that carries several headers.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Prefer {
    /// Linux if it is a bzImage, else Multiboot2 if it has that header, else Multiboot1.
    #[default]
    Auto,
    Multiboot1,
    Multiboot2,
}

/// One of the L1's own modules (a Multiboot module; Linux: the initrd).
#[derive(Clone, Copy, Debug)]
pub struct Module<'a> {
    pub bytes: &'a [u8],
    pub string: &'a str,
}

/// ACPI tables built for guest-physical [`space::BIOS_AREA`]; the RSDP at
/// `rsdp_offset` (16-byte aligned, so the 0xE0000–0xFFFFF scan finds it).
#[derive(Clone, Copy, Debug)]
pub struct Acpi<'a> {
    pub bytes: &'a [u8],
    pub rsdp_offset: usize,
}

/// What to load.
#[derive(Clone, Copy, Debug)]
pub struct Boot<'a> {
    pub image: &'a [u8],
    pub cmdline: &'a str,
    pub modules: &'a [Module<'a>],
    pub acpi: Option<Acpi<'a>>,
    pub prefer: Prefer,
}

/// The register state to enter the L1 with (32-bit protected mode, paging
/// off, flat segments with these selectors, EFLAGS = 2).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Entry {
    pub eip: u32,
    pub eax: u32,
    pub ebx: u32,
    pub esi: u32,
    /// Code selector (Linux wants __BOOT_CS = 0x10; Multiboot does not care).
    pub cs: u16,
    /// Data selector for DS, ES, FS, GS, SS (Linux: __BOOT_DS = 0x18).
    pub ds: u16,
}

/// The outcome of a load.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Loaded {
    pub protocol: Protocol,
    pub entry: Entry,
    /// Guest-physical range the kernel image occupies.
    pub kernel: (u64, u64),
    /// Guest-physical address of the RSDP, when ACPI tables were given.
    pub rsdp: Option<u64>,
}

/// Why an image could not be loaded: one line each, for the shell and log.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LoadError {
    NoImage,
    /// No bzImage setup header, Multiboot2 header or Multiboot1 header.
    UnknownFormat,
    /// The preferred protocol's header is not in the image.
    NoHeader(Protocol),
    BadHeaderChecksum(Protocol),
    /// Multiboot1 flag bits 0-15 (or a Multiboot2 tag) the loader must understand and does not.
    UnsupportedRequest(Protocol, u32),
    NotElf,
    BadElf(&'static str),
    /// A segment (or the a.out-kludge range) outside the L1's RAM.
    OutsideRam { addr: u64, size: u64 },
    BadAoutKludge(&'static str),
    /// Linux: setup header too old or not a bzImage.
    LinuxTooOld(u16),
    LinuxNotBzImage,
    /// Linux needs more RAM than the L1 has.
    LinuxNeedsRam { need: u64, have: u64 },
    /// A command line longer than the kernel accepts (never truncated).
    CmdlineTooLong { len: usize, max: usize },
    /// Linux takes one initrd.
    LinuxModules(usize),
    /// No room in the L1's RAM for a module / the initrd / boot information.
    NoRoom(&'static str),
    /// The ACPI tables do not fit the BIOS area or the RSDP is misplaced.
    BadAcpi,
}

impl core::fmt::Display for LoadError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match *self {
            LoadError::NoImage => write!(f, "no L1 image (nvmx was built without guest/ and GRUB loaded no module)"),
            LoadError::UnknownFormat => {
                write!(f, "L1 image is neither a Linux bzImage nor a Multiboot2 or Multiboot1 kernel")
            }
            LoadError::NoHeader(p) => write!(f, "L1 image has no {} header", p.name()),
            LoadError::BadHeaderChecksum(p) => write!(f, "L1 image's {} header has a bad checksum", p.name()),
            LoadError::UnsupportedRequest(p, v) => write!(f, "L1 image's {} header asks for {v:#x}, which nvmx cannot give", p.name()),
            LoadError::NotElf => write!(f, "L1 image is not an x86 ELF (and has no a.out-kludge addresses)"),
            LoadError::BadElf(why) => write!(f, "L1 image: malformed ELF: {why}"),
            LoadError::OutsideRam { addr, size } => {
                write!(f, "L1 segment {addr:#x}+{size:#x} lies outside the L1's RAM")
            }
            LoadError::BadAoutKludge(why) => write!(f, "L1 image: bad Multiboot a.out-kludge addresses: {why}"),
            LoadError::LinuxTooOld(v) => {
                write!(f, "L1 image: Linux boot protocol {}.{:02} is too old (2.10 or later needed)", v >> 8, v & 0xff)
            }
            LoadError::LinuxNotBzImage => write!(f, "L1 image: a Linux zImage, not a bzImage (not loaded high)"),
            LoadError::LinuxNeedsRam { need, have } => {
                write!(f, "L1 image: Linux needs {} MiB of RAM to decompress itself, the L1 has {} MiB (l1mem=)", need.div_ceil(1 << 20), have >> 20)
            }
            LoadError::CmdlineTooLong { len, max } => {
                write!(f, "L1 command line is {len} bytes, the L1 kernel accepts at most {max}")
            }
            LoadError::LinuxModules(n) => write!(f, "Linux takes one initrd module, {n} given"),
            LoadError::NoRoom(what) => write!(f, "no room in the L1's RAM for {what} (l1mem=)"),
            LoadError::BadAcpi => write!(f, "ACPI tables do not fit 0xE0000-0xFFFFF"),
        }
    }
}

/// The guest's memory, with bounds-checked writes by guest-physical address.
pub struct GuestMem<'a> {
    mem: &'a mut [u8],
}

impl<'a> GuestMem<'a> {
    pub fn new(mem: &'a mut [u8]) -> GuestMem<'a> {
        GuestMem { mem }
    }

    pub fn len(&self) -> u64 {
        self.mem.len() as u64
    }

    pub fn is_empty(&self) -> bool {
        self.mem.is_empty()
    }

    fn range(&mut self, gpa: u64, len: u64) -> Option<&mut [u8]> {
        let end = gpa.checked_add(len)?;
        if end > self.mem.len() as u64 {
            return None;
        }
        Some(&mut self.mem[gpa as usize..end as usize])
    }

    pub fn write(&mut self, gpa: u64, bytes: &[u8]) -> Option<()> {
        self.range(gpa, bytes.len() as u64)?.copy_from_slice(bytes);
        Some(())
    }

    pub fn fill(&mut self, gpa: u64, len: u64, v: u8) -> Option<()> {
        self.range(gpa, len)?.fill(v);
        Some(())
    }

    pub fn write_u16(&mut self, gpa: u64, v: u16) -> Option<()> {
        self.write(gpa, &v.to_le_bytes())
    }
    pub fn write_u32(&mut self, gpa: u64, v: u32) -> Option<()> {
        self.write(gpa, &v.to_le_bytes())
    }
    pub fn write_u64(&mut self, gpa: u64, v: u64) -> Option<()> {
        self.write(gpa, &v.to_le_bytes())
    }
    pub fn read(&self, gpa: u64, len: usize) -> Option<&[u8]> {
        let end = gpa.checked_add(len as u64)?;
        self.mem.get(gpa as usize..end as usize)
    }
}

pub(crate) fn u16_at(b: &[u8], off: usize) -> Option<u16> {
    Some(u16::from_le_bytes(b.get(off..off.checked_add(2)?)?.try_into().ok()?))
}
pub(crate) fn u32_at(b: &[u8], off: usize) -> Option<u32> {
    Some(u32::from_le_bytes(b.get(off..off.checked_add(4)?)?.try_into().ok()?))
}
pub(crate) fn u64_at(b: &[u8], off: usize) -> Option<u64> {
    Some(u64::from_le_bytes(b.get(off..off.checked_add(8)?)?.try_into().ok()?))
}

/// Places boot information, strings and modules in the L1's RAM without
/// touching the kernel image: first low RAM from 64 KiB (where GRUB-loaded
/// kernels do not live), then high RAM after the kernel.
pub(crate) struct Placer {
    low: (u64, u64),
    high: (u64, u64),
    kernel: (u64, u64),
}

/// Boot information starts here in low RAM.
pub const BOOT_INFO: u64 = 0x1_0000;

impl Placer {
    pub(crate) fn new(space: &AddressSpace, kernel: (u64, u64)) -> Placer {
        let high_start = kernel.1.max(space::HIGH_RAM).next_multiple_of(0x1000);
        Placer { low: (BOOT_INFO, space::LOW_RAM_END & !0xFFF), high: (high_start, space.ram_top()), kernel }
    }

    /// Room for `len` bytes aligned to `align` (a power of two), in low RAM
    /// when `low_ok`, else (or when low RAM is full) in high RAM.
    pub(crate) fn alloc(&mut self, len: u64, align: u64, low_ok: bool, what: &'static str) -> Result<u64, LoadError> {
        let areas: [&mut (u64, u64); 2] = [&mut self.low, &mut self.high];
        for (i, area) in areas.into_iter().enumerate() {
            if i == 0 && !low_ok {
                continue;
            }
            let mut at = area.0.next_multiple_of(align);
            // Skip over the kernel image if the area holds it.
            if at < self.kernel.1 && at.saturating_add(len) > self.kernel.0 {
                at = self.kernel.1.next_multiple_of(align);
            }
            if let Some(end) = at.checked_add(len).filter(|&e| e <= area.1) {
                area.0 = end;
                return Ok(at);
            }
        }
        Err(LoadError::NoRoom(what))
    }

    /// Writes `bytes` + NUL and returns its address.
    pub(crate) fn string(&mut self, mem: &mut GuestMem, s: &str, what: &'static str) -> Result<u64, LoadError> {
        let at = self.alloc(s.len() as u64 + 1, 1, true, what)?;
        mem.write(at, s.as_bytes()).ok_or(LoadError::NoRoom(what))?;
        mem.write(at + s.len() as u64, &[0]).ok_or(LoadError::NoRoom(what))?;
        Ok(at)
    }
}

/// Copies the ACPI tables to the BIOS area; returns the RSDP's address.
fn place_acpi(mem: &mut GuestMem, acpi: Option<Acpi>) -> Result<Option<u64>, LoadError> {
    let Some(a) = acpi else { return Ok(None) };
    let room = space::HIGH_RAM - space::BIOS_AREA;
    if a.bytes.len() as u64 > room || a.rsdp_offset % 16 != 0 || a.rsdp_offset + 36 > a.bytes.len() {
        return Err(LoadError::BadAcpi);
    }
    mem.write(space::BIOS_AREA, a.bytes).ok_or(LoadError::BadAcpi)?;
    Ok(Some(space::BIOS_AREA + a.rsdp_offset as u64))
}

/// Which protocol `image` will be loaded with.
pub fn detect(image: &[u8], prefer: Prefer) -> Result<Protocol, LoadError> {
    if image.is_empty() {
        return Err(LoadError::NoImage);
    }
    match prefer {
        Prefer::Multiboot1 => {
            multiboot1::find_header(image).ok_or(LoadError::NoHeader(Protocol::Multiboot1))??;
            Ok(Protocol::Multiboot1)
        }
        Prefer::Multiboot2 => {
            multiboot2::find_header(image).ok_or(LoadError::NoHeader(Protocol::Multiboot2))??;
            Ok(Protocol::Multiboot2)
        }
        Prefer::Auto if linux::is_bzimage(image) => Ok(Protocol::Linux),
        Prefer::Auto if multiboot2::find_header(image).is_some() => Ok(Protocol::Multiboot2),
        Prefer::Auto if multiboot1::find_header(image).is_some() => Ok(Protocol::Multiboot1),
        Prefer::Auto => Err(LoadError::UnknownFormat),
    }
}

/// Loads `boot` into `mem` (the L1's memory, `space` describes it): the
/// kernel, its modules, the ACPI tables, the boot information; returns how
/// to enter it. Memory the loader does not write keeps its contents (the
/// caller hands in zeroed memory).
pub fn load(mem: &mut [u8], space: &AddressSpace, boot: &Boot) -> Result<Loaded, LoadError> {
    let protocol = detect(boot.image, boot.prefer)?;
    let mut mem = GuestMem::new(mem);
    let rsdp = place_acpi(&mut mem, boot.acpi)?;
    let rsdp_bytes = rsdp.and_then(|a| boot.acpi.map(|t| &t.bytes[(a - space::BIOS_AREA) as usize..]));
    match protocol {
        Protocol::Multiboot1 => multiboot1::load(&mut mem, space, boot),
        Protocol::Multiboot2 => multiboot2::load(&mut mem, space, boot, rsdp_bytes),
        Protocol::Linux => linux::load(&mut mem, space, boot, rsdp),
    }
    .map(|(entry, kernel)| Loaded { protocol, entry, kernel, rsdp })
}

#[cfg(test)]
mod tests;
