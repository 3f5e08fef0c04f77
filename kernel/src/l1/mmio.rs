//! Instruction fetch for MMIO emulation: the bytes at CS:RIP through the
//! L1's own paging (decoding is `nvmx_mmio`, host-tested).

use nvmx_vmx::walk::{self, GuestMemory};

pub use nvmx_mmio::*;

/// Reads up to 15 instruction bytes at `linear` through the L1's paging
/// (`mode`, `cr3`) from its memory; stops early at a page that is not
/// present or outside RAM (the decoder then sees fewer bytes).
pub fn fetch(mem: &dyn GuestMemory, read_byte: impl Fn(u64) -> Option<u8>, mode: walk::PagingMode, cr3: u64, linear: u64) -> ([u8; 15], usize) {
    let mut bytes = [0u8; 15];
    let mut n = 0;
    let access = walk::Access { write: false, wp: false };
    while n < 15 {
        let la = linear.wrapping_add(n as u64);
        let Ok(pa) = walk::linear_to_physical(mem, mode, cr3, la, access) else { break };
        // The rest of this page in one go.
        let in_page = (4096 - (pa & 0xFFF)) as usize;
        let mut ok = true;
        for i in 0..in_page.min(15 - n) {
            match read_byte(pa + i as u64) {
                Some(b) => bytes[n + i] = b,
                None => {
                    ok = false;
                    break;
                }
            }
        }
        if !ok {
            break;
        }
        n += in_page.min(15 - n);
    }
    (bytes, n)
}
