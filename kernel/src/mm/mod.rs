//! Physical memory: a frame allocator built from GRUB's memory map, the L0
//! heap (for `alloc` and `hashbrown`), and the identity map of all RAM.
//!
//! Physical = virtual everywhere in L0 (identity map), so a frame's address
//! is also a pointer to it.

pub mod frames;
pub mod paging;

use linked_list_allocator::LockedHeap;

use crate::bootinfo::BootInfo;

#[global_allocator]
static HEAP: LockedHeap = LockedHeap::empty();

pub const PAGE_SIZE: u64 = 4096;

/// Heap size: 1/16 of usable RAM, within [4 MiB, 32 MiB].
fn heap_size(usable: u64) -> u64 {
    (usable / 16).clamp(4 << 20, 32 << 20) & !(PAGE_SIZE - 1)
}

unsafe extern "C" {
    static __kernel_start: u8;
    static __kernel_end: u8;
}

/// Kernel image range [start, end).
pub fn kernel_range() -> (u64, u64) {
    (&raw const __kernel_start as u64, &raw const __kernel_end as u64)
}

/// Builds the frame allocator, maps RAM above 4 GiB and creates the heap.
pub fn init(info: &BootInfo) {
    let mut reserved: [(u64, u64); 4 + crate::bootinfo::MAX_MODULES] = [(0, 0); 4 + crate::bootinfo::MAX_MODULES];
    // Low memory (real-mode IVT, BIOS data, EBDA, the AP trampoline, ROMs).
    reserved[0] = (0, 0x10_0000);
    reserved[1] = kernel_range();
    reserved[2] = info.mbi_range;
    if let Some(fb) = info.framebuffer {
        reserved[3] = (fb.addr, fb.addr + u64::from(fb.pitch) * u64::from(fb.height));
    }
    for (slot, m) in reserved[4..].iter_mut().zip(info.modules()) {
        *slot = (m.start, m.end);
    }
    frames::init(info.regions(), &reserved);
    paging::map_all_ram(info.regions());

    let size = heap_size(frames::stats().total_bytes);
    let base = frames::alloc(size / PAGE_SIZE, 1).expect("no memory for the L0 heap");
    // SAFETY: [base, base+size) was just taken from the frame allocator, is
    // identity mapped and used for nothing else.
    unsafe { HEAP.lock().init(base as *mut u8, size as usize) };
}

/// Heap usage: (used, size) in bytes.
pub fn heap_stats() -> (usize, usize) {
    let heap = HEAP.lock();
    (heap.used(), heap.size())
}
