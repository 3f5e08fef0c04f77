//! Host tests: hand-made images of each kind loaded into a vector standing in
//! for the L1's memory, and the boot information read back as a kernel would.
extern crate std;
use std::string::String;
use std::vec;
use std::vec::Vec;

use crate::space::{AddressSpace, BIOS_AREA};
use crate::*;

const MIB: u64 = 1 << 20;

fn le32(v: &mut Vec<u8>, x: u32) {
    v.extend_from_slice(&x.to_le_bytes());
}

/// An ELF32 (class 1) or ELF64 image: one PT_LOAD of `code` at paddr
/// `paddr`, vaddr `vaddr`, memsz = filesz + `bss`, with `header` (a
/// Multiboot header) at file offset 0x100.
fn elf(class64: bool, paddr: u64, vaddr: u64, code: &[u8], bss: u64, header: &[u8]) -> Vec<u8> {
    let mut f = vec![0u8; 0x1000];
    f[0..4].copy_from_slice(b"\x7fELF");
    f[4] = if class64 { 2 } else { 1 };
    f[5] = 1;
    f[6] = 1;
    f[0x100..0x100 + header.len()].copy_from_slice(header);
    let off = 0x1000u64;
    if class64 {
        f[18..20].copy_from_slice(&62u16.to_le_bytes());
        f[24..32].copy_from_slice(&(vaddr + 4).to_le_bytes()); // entry 4 bytes into the code
        f[32..40].copy_from_slice(&64u64.to_le_bytes());
        f[54..56].copy_from_slice(&56u16.to_le_bytes());
        f[56..58].copy_from_slice(&1u16.to_le_bytes());
        let ph = 64;
        f[ph..ph + 4].copy_from_slice(&1u32.to_le_bytes());
        f[ph + 8..ph + 16].copy_from_slice(&off.to_le_bytes());
        f[ph + 16..ph + 24].copy_from_slice(&vaddr.to_le_bytes());
        f[ph + 24..ph + 32].copy_from_slice(&paddr.to_le_bytes());
        f[ph + 32..ph + 40].copy_from_slice(&(code.len() as u64).to_le_bytes());
        f[ph + 40..ph + 48].copy_from_slice(&(code.len() as u64 + bss).to_le_bytes());
    } else {
        f[18..20].copy_from_slice(&3u16.to_le_bytes());
        f[24..28].copy_from_slice(&(vaddr as u32 + 4).to_le_bytes());
        f[28..32].copy_from_slice(&52u32.to_le_bytes());
        f[42..44].copy_from_slice(&32u16.to_le_bytes());
        f[44..46].copy_from_slice(&1u16.to_le_bytes());
        let ph = 52;
        for (i, v) in [1u32, off as u32, vaddr as u32, paddr as u32, code.len() as u32, (code.len() as u64 + bss) as u32].iter().enumerate() {
            f[ph + 4 * i..ph + 4 * i + 4].copy_from_slice(&v.to_le_bytes());
        }
    }
    f.extend_from_slice(code);
    f
}

fn mb1_header(flags: u32, aout: Option<[u32; 5]>) -> Vec<u8> {
    let mut h = Vec::new();
    le32(&mut h, multiboot1::HEADER_MAGIC);
    le32(&mut h, flags);
    le32(&mut h, 0u32.wrapping_sub(multiboot1::HEADER_MAGIC.wrapping_add(flags)));
    for v in aout.unwrap_or_default() {
        le32(&mut h, v);
    }
    h
}

fn mb2_header(tags: &[u8]) -> Vec<u8> {
    let len = 16 + tags.len() as u32 + 8;
    let mut h = Vec::new();
    le32(&mut h, multiboot2::HEADER_MAGIC);
    le32(&mut h, 0);
    le32(&mut h, len);
    le32(&mut h, 0u32.wrapping_sub(multiboot2::HEADER_MAGIC.wrapping_add(len)));
    h.extend_from_slice(tags);
    h.extend_from_slice(&[0, 0, 0, 0, 8, 0, 0, 0]); // end tag
    h
}

fn r32(m: &[u8], a: u64) -> u32 {
    u32::from_le_bytes(m[a as usize..a as usize + 4].try_into().unwrap())
}
fn r64(m: &[u8], a: u64) -> u64 {
    u64::from_le_bytes(m[a as usize..a as usize + 8].try_into().unwrap())
}
fn cstr(m: &[u8], a: u64) -> String {
    let s = &m[a as usize..];
    String::from_utf8(s[..s.iter().position(|&b| b == 0).unwrap()].to_vec()).unwrap()
}

/// A long command line (GRUB passes at least 4 KiB whole).
fn long_cmdline() -> String {
    (0..900).map(|i| std::format!("opt{i} ")).collect::<String>()
}

/// Fake ACPI tables: an "RSD PTR " at offset 0x40 of 0x200 bytes.
fn acpi_blob() -> Vec<u8> {
    let mut t = vec![0xAAu8; 0x200];
    t[0x40..0x48].copy_from_slice(b"RSD PTR ");
    t[0x40 + 15] = 2; // revision
    t
}

/// (base, len, type) triples as a loader's map must show them.
fn expected_map(s: &AddressSpace) -> Vec<(u64, u64, u32)> {
    s.regions().iter().map(|r| (r.base, r.len, r.kind as u32)).collect()
}

#[test]
fn multiboot1_elf32_with_modules_map_and_long_cmdline() {
    let code = [0x90u8; 64];
    let img = elf(false, 0x20_0000, 0xC020_0000, &code, 0x3000, &mb1_header(3, None));
    let space = AddressSpace::new(64 * MIB);
    let mut mem = vec![0x55u8; space.ram() as usize];
    let cmd = long_cmdline();
    assert!(cmd.len() > 4096);
    let mods = [Module { bytes: b"first module", string: "one a=b" }, Module { bytes: &[7u8; 5000], string: &cmd }];
    let acpi = acpi_blob();
    let boot = Boot { image: &img, cmdline: &cmd, modules: &mods, acpi: Some(Acpi { bytes: &acpi, rsdp_offset: 0x40 }), prefer: Prefer::Auto };
    let l = load(&mut mem, &space, &boot).unwrap();
    assert_eq!(l.protocol, Protocol::Multiboot1);
    assert_eq!(l.entry.eax, 0x2BAD_B002);
    assert_eq!(l.entry.eip, 0x20_0004, "entry translated from its virtual address to the physical one");
    assert_eq!(l.kernel, (0x20_0000, 0x20_0000 + 64 + 0x3000));
    assert_eq!(&mem[0x20_0000..0x20_0040], &code[..]);
    assert!(mem[0x20_0040..0x20_3040].iter().all(|&b| b == 0), "bss zeroed");
    assert_eq!(l.rsdp, Some(BIOS_AREA + 0x40));
    assert_eq!(&mem[0xE_0040..0xE_0048], b"RSD PTR ");
    let mbi = u64::from(l.entry.ebx);
    let flags = r32(&mem, mbi);
    assert_eq!(flags, 1 | 4 | 8 | 64 | 512);
    assert_eq!((r32(&mem, mbi + 4), r32(&mem, mbi + 8)), (639, 63 * 1024));
    assert_eq!(cstr(&mem, r32(&mem, mbi + 16).into()), cmd, "command line whole");
    assert_eq!(r32(&mem, mbi + 20), 2);
    let list = u64::from(r32(&mem, mbi + 24));
    for (i, m) in mods.iter().enumerate() {
        let e = list + 16 * i as u64;
        let (s, end) = (u64::from(r32(&mem, e)), u64::from(r32(&mem, e + 4)));
        assert_eq!(s % 4096, 0, "modules page aligned");
        assert!(s >= l.kernel.1, "modules after the kernel");
        assert_eq!(&mem[s as usize..end as usize], m.bytes);
        assert_eq!(cstr(&mem, r32(&mem, e + 8).into()), m.string);
    }
    let (len, addr) = (r32(&mem, mbi + 44), u64::from(r32(&mem, mbi + 48)));
    let mut got = Vec::new();
    let mut p = addr;
    while p < addr + u64::from(len) {
        got.push((r64(&mem, p + 4), r64(&mem, p + 12), r32(&mem, p + 20)));
        p += u64::from(r32(&mem, p)) + 4;
    }
    assert_eq!(got, expected_map(&space));
    assert_eq!(cstr(&mem, r32(&mem, mbi + 64).into()), "nvmx");
}

#[test]
fn multiboot1_elf64_and_aout_kludge() {
    let space = AddressSpace::new(16 * MIB);
    // ELF64 as GRUB accepts it: segments by physical address.
    let img = elf(true, 0x10_0000, 0xFFFF_FFFF_8010_0000, &[1, 2, 3, 4, 5, 6], 0, &mb1_header(0, None));
    let mut mem = vec![0u8; space.ram() as usize];
    let boot = Boot { image: &img, cmdline: "x", modules: &[], acpi: None, prefer: Prefer::Auto };
    let l = load(&mut mem, &space, &boot).unwrap();
    assert_eq!((l.protocol, l.entry.eip), (Protocol::Multiboot1, 0x10_0004));
    assert_eq!(r32(&mem, l.entry.ebx.into()) & 8, 0, "no modules flag without modules");
    // a.out kludge: a flat binary whose header says where it goes. The
    // header sits at file offset 0x20 and header_addr 0x10_0020.
    let mut flat = vec![0xCCu8; 0x20];
    flat.extend(mb1_header(1 << 16, Some([0x10_0020, 0x10_0000, 0x10_0080, 0x10_2000, 0x10_0040])));
    flat.resize(0x100, 0xEE);
    let mut mem = vec![0x55u8; space.ram() as usize];
    let boot = Boot { image: &flat, cmdline: "", modules: &[], acpi: None, prefer: Prefer::Auto };
    let l = load(&mut mem, &space, &boot).unwrap();
    assert_eq!(l.entry.eip, 0x10_0040);
    assert_eq!(l.kernel, (0x10_0000, 0x10_2000));
    assert_eq!(&mem[0x10_0000..0x10_0080], &flat[..0x80], "load_end_addr honoured");
    assert!(mem[0x10_0080..0x10_2000].iter().all(|&b| b == 0), "bss zeroed up to bss_end_addr");
    assert_eq!(mem[0x10_2000], 0x55);
    // Broken kludge fields: a clear error.
    let mut bad = vec![0u8; 0x20];
    bad.extend(mb1_header(1 << 16, Some([0x10_0020, 0x10_0000, 0x20_0000, 0, 0x10_0040])));
    let boot = Boot { image: &bad, cmdline: "", modules: &[], acpi: None, prefer: Prefer::Auto };
    assert!(matches!(load(&mut mem, &space, &boot), Err(LoadError::BadAoutKludge(_))));
}

#[test]
fn multiboot1_refuses_what_it_cannot_do() {
    let space = AddressSpace::new(16 * MIB);
    let mut mem = vec![0u8; space.ram() as usize];
    let img = elf(false, 0x10_0000, 0x10_0000, &[0; 8], 0, &mb1_header(1 << 5, None));
    let boot = Boot { image: &img, cmdline: "", modules: &[], acpi: None, prefer: Prefer::Auto };
    assert_eq!(load(&mut mem, &space, &boot), Err(LoadError::UnsupportedRequest(Protocol::Multiboot1, 1 << 5)));
    let mut h = mb1_header(0, None);
    h[8] ^= 1;
    let img = elf(false, 0x10_0000, 0x10_0000, &[0; 8], 0, &h);
    let boot = Boot { image: &img, cmdline: "", modules: &[], acpi: None, prefer: Prefer::Auto };
    assert_eq!(load(&mut mem, &space, &boot), Err(LoadError::BadHeaderChecksum(Protocol::Multiboot1)));
    // A segment beyond the L1's RAM.
    let img = elf(false, 0x200_0000, 0x200_0000, &[0; 8], 0, &mb1_header(0, None));
    let boot = Boot { image: &img, cmdline: "", modules: &[], acpi: None, prefer: Prefer::Auto };
    assert_eq!(load(&mut mem, &space, &boot), Err(LoadError::OutsideRam { addr: 0x200_0000, size: 8 }));
    assert_eq!(detect(b"garbage", Prefer::Auto), Err(LoadError::UnknownFormat));
}

/// Walks Multiboot2 tags: (type, payload).
fn mb2_tags(mem: &[u8], mbi: u64) -> Vec<(u32, Vec<u8>)> {
    let total = u64::from(r32(mem, mbi));
    let mut p = mbi + 8;
    let mut out = Vec::new();
    while p < mbi + total {
        let (ty, size) = (r32(mem, p), u64::from(r32(mem, p + 4)));
        out.push((ty, mem[(p + 8) as usize..(p + size) as usize].to_vec()));
        if ty == 0 {
            break;
        }
        p += size.next_multiple_of(8);
    }
    out
}

#[test]
fn multiboot2_and_multiboot1_headers_in_one_image_give_the_same_memory() {
    // The built-in L1 carries both headers; a run picks one.
    let mut both = mb2_header(&[]);
    both.extend(mb1_header(2, None));
    let img = elf(true, 0x10_0000, 0x10_0000, &[0xF4; 16], 0x100, &both);
    let space = AddressSpace::new(32 * MIB);
    let cmd = long_cmdline();
    let acpi = acpi_blob();
    let mods = [Module { bytes: b"module bytes", string: "mod string" }];
    let mut mem2 = vec![0u8; space.ram() as usize];
    let boot = Boot { image: &img, cmdline: &cmd, modules: &mods, acpi: Some(Acpi { bytes: &acpi, rsdp_offset: 0x40 }), prefer: Prefer::Auto };
    let l2 = load(&mut mem2, &space, &boot).unwrap();
    assert_eq!((l2.protocol, l2.entry.eax), (Protocol::Multiboot2, 0x36D7_6289));
    let tags = mb2_tags(&mem2, l2.entry.ebx.into());
    let get = |t: u32| tags.iter().find(|(ty, _)| *ty == t).map(|(_, p)| p.clone()).unwrap();
    assert_eq!(&get(1)[..cmd.len()], cmd.as_bytes(), "command line whole");
    assert_eq!(get(2), b"nvmx\0");
    let m = get(3);
    let (s, e) = (u32::from_le_bytes(m[0..4].try_into().unwrap()), u32::from_le_bytes(m[4..8].try_into().unwrap()));
    assert_eq!(&mem2[s as usize..e as usize], b"module bytes");
    assert_eq!(&m[8..], b"mod string\0");
    assert_eq!(get(4), [639u32.to_le_bytes(), (31 * 1024u32).to_le_bytes()].concat());
    let map = get(6);
    let entries: Vec<_> = map[8..].chunks(24).map(|c| (r64(c, 0), r64(c, 8), r32(c, 16))).collect();
    assert_eq!(entries, expected_map(&space));
    assert_eq!(&get(14)[..8], b"RSD PTR ");
    assert_eq!(get(15).len(), 36);
    assert_eq!(tags.last().unwrap().0, 0);

    let mut mem1 = vec![0u8; space.ram() as usize];
    let l1 = load(&mut mem1, &space, &Boot { prefer: Prefer::Multiboot1, ..boot }).unwrap();
    assert_eq!((l1.protocol, l1.entry.eax, l1.entry.eip), (Protocol::Multiboot1, 0x2BAD_B002, l2.entry.eip));
    assert_eq!(mem1[0x10_0000..0x10_0200], mem2[0x10_0000..0x10_0200], "the kernel image is the same");
    assert_eq!(detect(&img, Prefer::Multiboot2), Ok(Protocol::Multiboot2));
    let only1 = elf(true, 0x10_0000, 0x10_0000, &[0; 4], 0, &mb1_header(0, None));
    assert_eq!(detect(&only1, Prefer::Multiboot2), Err(LoadError::NoHeader(Protocol::Multiboot2)));
}

#[test]
fn multiboot2_information_requests() {
    let space = AddressSpace::new(16 * MIB);
    let mut mem = vec![0u8; space.ram() as usize];
    // Required request for the framebuffer info (8): refused like GRUB without video.
    let mut req = vec![];
    for v in [1u16, 0] {
        req.extend_from_slice(&v.to_le_bytes());
    }
    le32(&mut req, 16);
    le32(&mut req, 6);
    le32(&mut req, 8);
    let img = elf(true, 0x10_0000, 0x10_0000, &[0; 4], 0, &mb2_header(&req));
    let boot = Boot { image: &img, cmdline: "", modules: &[], acpi: None, prefer: Prefer::Auto };
    assert_eq!(load(&mut mem, &space, &boot), Err(LoadError::UnsupportedRequest(Protocol::Multiboot2, 8)));
    req[2] = 1; // optional: fine
    let img = elf(true, 0x10_0000, 0x10_0000, &[0; 4], 0, &mb2_header(&req));
    let boot = Boot { image: &img, cmdline: "", modules: &[], acpi: None, prefer: Prefer::Auto };
    assert!(load(&mut mem, &space, &boot).is_ok());
}

/// A bzImage skeleton: 4 setup sectors, protocol 2.15, the protected-mode part `pm`.
fn bzimage(pm: &[u8], cmdline_size: u32, init_size: u32) -> Vec<u8> {
    let mut f = vec![0u8; 5 * 512];
    f[0x1F1] = 4;
    f[0x1FE..0x200].copy_from_slice(&0xAA55u16.to_le_bytes());
    f[0x200] = 0xEB;
    f[0x201] = 0x6A; // header ends at 0x26C
    f[0x202..0x206].copy_from_slice(b"HdrS");
    f[0x206..0x208].copy_from_slice(&0x020Fu16.to_le_bytes());
    f[0x211] = 1; // LOADED_HIGH
    f[0x214..0x218].copy_from_slice(&0x10_0000u32.to_le_bytes());
    f[0x22C..0x230].copy_from_slice(&0x37FF_FFFFu32.to_le_bytes());
    f[0x234] = 1;
    f[0x238..0x23C].copy_from_slice(&cmdline_size.to_le_bytes());
    f[0x258..0x260].copy_from_slice(&0x100_0000u64.to_le_bytes());
    f[0x260..0x264].copy_from_slice(&init_size.to_le_bytes());
    f.extend_from_slice(pm);
    f
}

#[test]
fn linux_bzimage_boot_params() {
    let pm: Vec<u8> = (0..10000u32).map(|i| i as u8).collect();
    let img = bzimage(&pm, 8192, 8 << 20);
    let space = AddressSpace::new(64 * MIB);
    let mut mem = vec![0x55u8; space.ram() as usize];
    let cmd = long_cmdline();
    let initrd = vec![0x42u8; 300_000];
    let acpi = acpi_blob();
    let mods = [Module { bytes: &initrd, string: "initrd" }];
    let boot = Boot { image: &img, cmdline: &cmd, modules: &mods, acpi: Some(Acpi { bytes: &acpi, rsdp_offset: 0x40 }), prefer: Prefer::Auto };
    let l = load(&mut mem, &space, &boot).unwrap();
    assert_eq!(l.protocol, Protocol::Linux);
    assert_eq!((l.entry.eip, l.entry.cs, l.entry.ds), (0x10_0000, 0x10, 0x18));
    assert_eq!(&mem[0x10_0000..0x10_0000 + pm.len()], &pm[..]);
    let zp = u64::from(l.entry.esi);
    assert_eq!(zp % 4096, 0);
    assert_eq!(&mem[(zp + 0x202) as usize..(zp + 0x206) as usize], b"HdrS", "setup header copied");
    assert_eq!(mem[(zp + 0x210) as usize], 0xFF);
    assert_eq!(cstr(&mem, u64::from(r32(&mem, zp + 0x228))), cmd);
    let (rd, rs) = (u64::from(r32(&mem, zp + 0x218)), u64::from(r32(&mem, zp + 0x21C)));
    assert_eq!(rs, initrd.len() as u64);
    assert_eq!(rd % 4096, 0);
    assert!(rd >= 0x100_0000 + (8 << 20), "initrd above the decompressed kernel");
    assert!(rd + rs <= 64 * MIB && rd + rs + 4096 > 64 * MIB, "initrd at the top of RAM");
    assert_eq!(&mem[rd as usize..(rd + rs) as usize], &initrd[..]);
    let n = u64::from(mem[(zp + 0x1E8) as usize]);
    let e820: Vec<_> = (0..n).map(|i| zp + 0x2D0 + 20 * i).map(|e| (r64(&mem, e), r64(&mem, e + 8), r32(&mem, e + 16))).collect();
    assert_eq!(e820, expected_map(&space));
    assert_eq!(r64(&mem, zp + 0x70), BIOS_AREA + 0x40, "acpi_rsdp_addr");
}

#[test]
fn linux_bad_input() {
    let space = AddressSpace::new(16 * MIB);
    let mut mem = vec![0u8; space.ram() as usize];
    // The kernel's own limit on the command line: refused, never cut.
    let img = bzimage(&[0; 512], 2048, 1 << 20);
    let cmd = long_cmdline();
    assert!(cmd.len() > 4096);
    let boot = Boot { image: &img, cmdline: &cmd, modules: &[], acpi: None, prefer: Prefer::Auto };
    assert_eq!(load(&mut mem, &space, &boot), Err(LoadError::CmdlineTooLong { len: cmd.len(), max: 2048 }));
    // Not enough RAM for init_size at pref_address.
    let img = bzimage(&[0; 512], 2048, 32 << 20);
    let boot = Boot { image: &img, cmdline: "", modules: &[], acpi: None, prefer: Prefer::Auto };
    assert!(matches!(load(&mut mem, &space, &boot), Err(LoadError::LinuxNeedsRam { .. })));
    // Two initrds.
    let img = bzimage(&[0; 512], 2048, 1 << 20);
    let m = Module { bytes: b"x", string: "" };
    let boot = Boot { image: &img, cmdline: "", modules: &[m, m], acpi: None, prefer: Prefer::Auto };
    assert_eq!(load(&mut mem, &space, &boot), Err(LoadError::LinuxModules(2)));
    // Old protocol.
    let mut old = bzimage(&[0; 512], 2048, 1 << 20);
    old[0x206] = 0x04;
    old[0x207] = 0x02;
    let boot = Boot { image: &old, cmdline: "", modules: &[], acpi: None, prefer: Prefer::Auto };
    assert_eq!(load(&mut mem, &space, &boot), Err(LoadError::LinuxTooOld(0x0204)));
    // An initrd too large for the RAM above the kernel.
    let space = AddressSpace::new(32 * MIB);
    let mut mem = vec![0u8; space.ram() as usize];
    let img = bzimage(&[0; 512], 2048, 1 << 20);
    let big = vec![0u8; 15 << 20 | 1 << 19];
    let boot = Boot { image: &img, cmdline: "", modules: &[Module { bytes: &big, string: "" }], acpi: None, prefer: Prefer::Auto };
    assert_eq!(load(&mut mem, &space, &boot), Err(LoadError::NoRoom("the initrd")));
}

/// The real Debian kernel, when `make linux` has fetched it.
#[test]
fn linux_real_debian_kernel_when_built() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../build/linux/vmlinuz");
    let Ok(img) = std::fs::read(path) else {
        std::println!("skipped: {path} not built (make linux)");
        return;
    };
    let space = AddressSpace::new(128 * MIB);
    let mut mem = vec![0u8; space.ram() as usize];
    let boot = Boot { image: &img, cmdline: "console=ttyS0", modules: &[Module { bytes: &[1; 4096], string: "" }], acpi: None, prefer: Prefer::Auto };
    let l = load(&mut mem, &space, &boot).unwrap();
    assert_eq!(l.protocol, Protocol::Linux);
    let zp = u64::from(l.entry.esi);
    assert!(r32(&mem, zp + 0x238) >= 2047, "cmdline_size");
}
