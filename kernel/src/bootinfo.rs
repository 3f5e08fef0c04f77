//! What nvmx keeps of GRUB's Multiboot2 information.
//!
//! The information structure can sit anywhere GRUB chose (under UEFI it was
//! seen at 0x2000, where the AP trampoline goes), so everything needed later is
//! copied into fixed-size statics before any low memory is touched.

use spin::Once;

/// Most memory-map entries we keep (QEMU/Bochs give < 10, real UEFI boxes < 100).
pub const MAX_REGIONS: usize = 128;
/// Most GRUB modules kept.
pub const MAX_MODULES: usize = 8;
/// Command lines and module strings are kept whole up to 4 KiB (what GRUB
/// passes at least); longer ones are cut there.
const CMDLINE_LEN: usize = 4096;

/// One memory-map entry.
#[derive(Clone, Copy, Debug, Default)]
pub struct Region {
    pub start: u64,
    pub end: u64,
    /// Multiboot2 type: 1 available, 3 ACPI reclaimable, 4 NVS, 5 bad, else reserved.
    pub kind: u32,
}

/// A framebuffer as GRUB handed it over.
#[derive(Clone, Copy, Debug)]
pub struct Framebuffer {
    pub addr: u64,
    pub pitch: u32,
    pub width: u32,
    pub height: u32,
    pub bpp: u8,
    /// EGA text mode (width/height in characters) rather than pixels.
    pub text: bool,
    /// Bit positions of red, green, blue (RGB framebuffers).
    pub rgb_shift: (u8, u8, u8),
}

/// A GRUB module (an external L1 image, for instance).
#[derive(Clone, Copy, Debug)]
pub struct Module {
    pub start: u64,
    pub end: u64,
    /// The module's string (GRUB: what follows the file name on the
    /// `module2` line), kept up to CMDLINE_LEN bytes.
    string: [u8; CMDLINE_LEN],
    string_len: usize,
}

impl Default for Module {
    fn default() -> Self {
        Module { start: 0, end: 0, string: [0; CMDLINE_LEN], string_len: 0 }
    }
}

impl Module {
    pub fn string(&self) -> &str {
        core::str::from_utf8(&self.string[..self.string_len]).unwrap_or("")
    }
}

/// ACPI root pointer as found in the Multiboot2 RSDP tags.
#[derive(Clone, Copy, Debug)]
pub enum AcpiRoot {
    /// ACPI 1.0: physical address of the RSDT.
    Rsdt(u64),
    /// ACPI 2.0+: physical address of the XSDT.
    Xsdt(u64),
}

/// The kept boot information.
pub struct BootInfo {
    regions: [Region; MAX_REGIONS],
    nregions: usize,
    cmdline: [u8; CMDLINE_LEN],
    cmdline_len: usize,
    modules: [Module; MAX_MODULES],
    nmodules: usize,
    pub framebuffer: Option<Framebuffer>,
    pub acpi: Option<AcpiRoot>,
    /// Physical range of the original information structure.
    pub mbi_range: (u64, u64),
    pub uefi: bool,
}

impl BootInfo {
    pub fn regions(&self) -> &[Region] {
        &self.regions[..self.nregions]
    }
    pub fn cmdline(&self) -> &str {
        core::str::from_utf8(&self.cmdline[..self.cmdline_len]).unwrap_or("")
    }
    pub fn modules(&self) -> &[Module] {
        &self.modules[..self.nmodules]
    }
    /// The value of `key=value` on the kernel command line.
    pub fn arg(&self, key: &str) -> Option<&str> {
        self.cmdline().split_ascii_whitespace().find_map(|w| {
            let (k, v) = w.split_once('=')?;
            (k == key).then_some(v)
        })
    }
}

static BOOT_INFO: Once<BootInfo> = Once::new();

/// The boot information (after [`init`]).
pub fn get() -> &'static BootInfo {
    BOOT_INFO.get().expect("boot info read before bootinfo::init")
}

/// Multiboot2's magic value in EAX at entry.
pub const MULTIBOOT2_MAGIC: u32 = 0x36d7_6289;

/// Copies what nvmx needs out of the Multiboot2 information at `addr`.
///
/// # Safety
/// `addr` must be the address GRUB passed in EBX, still intact and identity mapped.
pub unsafe fn init(addr: u64) -> Result<&'static BootInfo, &'static str> {
    use multiboot2::{BootInformation, BootInformationHeader, FramebufferType};
    // SAFETY: the caller guarantees `addr` is GRUB's intact MBI.
    let mbi = unsafe { BootInformation::load(addr as *const BootInformationHeader) }
        .map_err(|_| "malformed Multiboot2 information")?;

    let mut info = BootInfo {
        regions: [Region::default(); MAX_REGIONS],
        nregions: 0,
        cmdline: [0; CMDLINE_LEN],
        cmdline_len: 0,
        modules: [Module::default(); MAX_MODULES],
        nmodules: 0,
        framebuffer: None,
        acpi: None,
        mbi_range: (mbi.start_address() as u64, mbi.end_address() as u64),
        uefi: mbi.efi_sdt64_tag().is_some() || mbi.efi_sdt32_tag().is_some(),
    };

    let mmap = mbi.memory_map_tag().ok_or("GRUB gave no memory map")?;
    for area in mmap.memory_areas().iter().take(MAX_REGIONS) {
        info.regions[info.nregions] = Region {
            start: area.start_address(),
            end: area.end_address(),
            kind: u32::from(area.typ()),
        };
        info.nregions += 1;
    }

    if let Some(Ok(cmd)) = mbi.command_line_tag().map(|t| t.cmdline()) {
        let n = cmd.len().min(CMDLINE_LEN);
        info.cmdline[..n].copy_from_slice(&cmd.as_bytes()[..n]);
        info.cmdline_len = n;
    }

    for m in mbi.module_tags().take(MAX_MODULES) {
        let mut module = Module { start: m.start_address().into(), end: m.end_address().into(), ..Module::default() };
        if let Ok(text) = m.cmdline() {
            module.string_len = text.len().min(module.string.len());
            module.string[..module.string_len].copy_from_slice(&text.as_bytes()[..module.string_len]);
        }
        info.modules[info.nmodules] = module;
        info.nmodules += 1;
    }

    if let Some(Ok(fb)) = mbi.framebuffer_tag() {
        let (text, rgb_shift) = match fb.buffer_type() {
            Ok(FramebufferType::Text) => (true, (0, 0, 0)),
            Ok(FramebufferType::RGB { red, green, blue }) => {
                (false, (red.position, green.position, blue.position))
            }
            _ => (false, (16, 8, 0)),
        };
        if !matches!(fb.buffer_type(), Ok(FramebufferType::Indexed { .. })) {
            info.framebuffer = Some(Framebuffer {
                addr: fb.address(),
                pitch: fb.pitch(),
                width: fb.width(),
                height: fb.height(),
                bpp: fb.bpp(),
                text,
                rgb_shift,
            });
        }
    }

    info.acpi = if let Some(v2) = mbi.rsdp_v2_tag() {
        Some(AcpiRoot::Xsdt(v2.xsdt_address() as u64))
    } else {
        mbi.rsdp_v1_tag().map(|v1| AcpiRoot::Rsdt(v1.rsdt_address() as u64))
    };

    Ok(BOOT_INFO.call_once(|| info))
}
