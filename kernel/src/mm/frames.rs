//! The physical frame allocator: a sorted list of free page ranges taken from
//! the memory map minus what is in use at boot. First fit with alignment, so
//! large contiguous chunks (an L1's guest-physical memory) come cheaply.

use spin::Mutex;

use super::PAGE_SIZE;
use crate::bootinfo::Region;

const MAX_RANGES: usize = 256;

#[derive(Clone, Copy, Default)]
struct Range {
    start: u64,
    end: u64,
}

struct Frames {
    free: [Range; MAX_RANGES],
    n: usize,
    total: u64,
    allocated: u64,
}

static FRAMES: Mutex<Frames> =
    Mutex::new(Frames { free: [Range { start: 0, end: 0 }; MAX_RANGES], n: 0, total: 0, allocated: 0 });

/// Usage figures for `mem`.
#[derive(Clone, Copy, Debug)]
pub struct FrameStats {
    pub total_bytes: u64,
    pub free_bytes: u64,
    pub allocated_bytes: u64,
    pub ranges: usize,
}

impl Frames {
    fn insert(&mut self, r: Range) {
        if r.start >= r.end || self.n == MAX_RANGES {
            return;
        }
        let pos = self.free[..self.n].iter().position(|x| x.start > r.start).unwrap_or(self.n);
        self.free.copy_within(pos..self.n, pos + 1);
        self.free[pos] = r;
        self.n += 1;
        // Coalesce with neighbours.
        let mut i = 0;
        while i + 1 < self.n {
            if self.free[i].end >= self.free[i + 1].start {
                self.free[i].end = self.free[i].end.max(self.free[i + 1].end);
                self.free.copy_within(i + 2..self.n, i + 1);
                self.n -= 1;
            } else {
                i += 1;
            }
        }
    }

    fn remove(&mut self, cut: (u64, u64)) {
        let (cs, ce) = (cut.0 & !(PAGE_SIZE - 1), cut.1.next_multiple_of(PAGE_SIZE));
        if cs >= ce {
            return;
        }
        let mut i = 0;
        while i < self.n {
            let r = self.free[i];
            if ce <= r.start || cs >= r.end {
                i += 1;
                continue;
            }
            let n = self.n;
            self.free.copy_within(i + 1..n, i);
            self.n -= 1;
            self.insert(Range { start: r.start, end: cs.max(r.start) });
            self.insert(Range { start: ce.min(r.end), end: r.end });
            i = 0;
        }
    }
}

/// Fills the allocator with the available regions minus `reserved`.
pub fn init(regions: &[Region], reserved: &[(u64, u64)]) {
    let mut f = FRAMES.lock();
    for r in regions.iter().filter(|r| r.kind == 1) {
        let start = r.start.next_multiple_of(PAGE_SIZE);
        let end = r.end & !(PAGE_SIZE - 1);
        f.insert(Range { start, end });
    }
    for &cut in reserved.iter().filter(|c| c.0 < c.1) {
        f.remove(cut);
    }
    f.total = f.free[..f.n].iter().map(|r| r.end - r.start).sum();
}

/// Allocates `pages` contiguous zeroed frames aligned to `align_pages` pages.
pub fn alloc(pages: u64, align_pages: u64) -> Option<u64> {
    let align = align_pages.max(1) * PAGE_SIZE;
    let size = pages * PAGE_SIZE;
    let mut f = FRAMES.lock();
    let (i, start) = f.free[..f.n].iter().enumerate().find_map(|(i, r)| {
        let start = r.start.next_multiple_of(align);
        (start + size <= r.end).then_some((i, start))
    })?;
    let r = f.free[i];
    let n = f.n;
    f.free.copy_within(i + 1..n, i);
    f.n -= 1;
    f.insert(Range { start: r.start, end: start });
    f.insert(Range { start: start + size, end: r.end });
    f.allocated += size;
    drop(f);
    // SAFETY: the range was free RAM, identity mapped, now owned by the caller.
    unsafe { core::ptr::write_bytes(start as *mut u8, 0, size as usize) };
    Some(start)
}

/// Returns frames taken with [`alloc`].
///
/// # Safety
/// `[addr, addr + pages*4K)` came from `alloc` and nothing uses it any more.
pub unsafe fn free(addr: u64, pages: u64) {
    let mut f = FRAMES.lock();
    f.allocated -= pages * PAGE_SIZE;
    f.insert(Range { start: addr, end: addr + pages * PAGE_SIZE });
}

/// Current figures.
pub fn stats() -> FrameStats {
    let f = FRAMES.lock();
    FrameStats {
        total_bytes: f.total,
        free_bytes: f.free[..f.n].iter().map(|r| r.end - r.start).sum(),
        allocated_bytes: f.allocated,
        ranges: f.n,
    }
}

/// Frames owned by one user (an L1 and everything built for it), given
/// back together when it is dropped, so restarting an L1 does not leak.
#[derive(Default)]
pub struct Owned(alloc::vec::Vec<(u64, u64)>);

impl Owned {
    /// [`alloc`], remembered for the drop.
    pub fn alloc(&mut self, pages: u64, align_pages: u64) -> Option<u64> {
        let addr = alloc(pages, align_pages)?;
        self.0.push((addr, pages));
        Some(addr)
    }
}

impl Drop for Owned {
    fn drop(&mut self) {
        for &(addr, pages) in &self.0 {
            // SAFETY: allocated by `Owned::alloc`; the owner is gone, and its
            // users (VMCSs, EPT tables) were released before (see l1::Vcpu's drop).
            unsafe { free(addr, pages) };
        }
    }
}
