//! The identity map. `boot.rs` maps 0..4 GiB with 2 MiB pages; here every RAM
//! region above that is added the same way, so all of RAM is reachable by its
//! physical address.

use super::frames;

const PRESENT_WRITABLE: u64 = 0x3;
const HUGE: u64 = 0x80;
const TWO_MIB: u64 = 2 << 20;
const ADDR_MASK: u64 = 0x000f_ffff_ffff_f000;

fn table(entry: &mut u64) -> &'static mut [u64; 512] {
    if *entry & 1 == 0 {
        let frame = frames::alloc(1, 1).expect("no memory for page tables");
        *entry = frame | PRESENT_WRITABLE;
    }
    // SAFETY: the entry points at a page-table page (4 KiB, identity mapped)
    // owned by the kernel's page tables.
    unsafe { &mut *((*entry & ADDR_MASK) as *mut [u64; 512]) }
}

/// Identity-maps [start, end) with 2 MiB pages where not mapped yet.
pub fn map_identity(start: u64, end: u64) {
    let pml4_addr = crate::arch::cpu::read_cr3() & ADDR_MASK;
    // SAFETY: CR3 names the live PML4, identity mapped.
    let pml4 = unsafe { &mut *(pml4_addr as *mut [u64; 512]) };
    let mut addr = start & !(TWO_MIB - 1);
    while addr < end {
        let pdpt = table(&mut pml4[(addr >> 39) as usize & 511]);
        let pd = table(&mut pdpt[(addr >> 30) as usize & 511]);
        let e = &mut pd[(addr >> 21) as usize & 511];
        if *e & 1 == 0 {
            *e = addr | PRESENT_WRITABLE | HUGE;
        }
        addr += TWO_MIB;
    }
    x86_64::instructions::tlb::flush_all();
}

/// Maps every region of the memory map that lies above the boot map's 4 GiB.
pub fn map_all_ram(regions: &[crate::bootinfo::Region]) {
    const FOUR_GIB: u64 = 4 << 30;
    for r in regions.iter().filter(|r| r.end > FOUR_GIB) {
        map_identity(r.start.max(FOUR_GIB), r.end);
    }
}
