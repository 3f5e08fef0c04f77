//! MMIO by instruction emulation: an L1 access to a guest-physical address
//! EPT0-1 does not map (the local APIC page, the IOAPIC, or nothing at all)
//! ends in an EPT violation (SDM 29.3.3.2). Neither Bochs model offers nvmx
//! APIC-register virtualization, so L0 does what the CPU would have done:
//! it fetches the instruction at CS:RIP through L1's own paging, decodes it
//! with `iced-x86` (decoder only, `no_std`: a maintained, table-driven
//! decoder covering every encoding, so an odd prefix or REX form is decoded
//! right rather than guessed; ~0.5 MB of code in the kernel, built once),
//! performs the access on the device, writes a load's result to its
//! register and advances RIP past the instruction.
//!
//! Emulated: MOV (load, store, store of an immediate), MOVZX, MOVSX, MOVSXD
//! with a memory operand of 1, 2, 4 or 8 bytes — what compilers emit for
//! `volatile` register accesses and what Linux, test kernels and nvmx's own
//! L1 use for the APIC. Anything else touching MMIO stops the L1 with a
//! report naming the instruction (a PC would have done *something*; nvmx
//! says clearly what it does not emulate instead of guessing).

use alloc::format;
use alloc::string::String;

use iced_x86::{Decoder, DecoderOptions, MemorySize, Mnemonic, OpKind, Register};
use nvmx_vmx::walk::{self, GuestMemory};

/// Where a load's value goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Dest {
    /// GPR number in encoding order (0 = RAX … 4 = RSP … 15 = R15).
    pub reg: usize,
    /// AH, CH, DH or BH: bits 15:8 of register `reg`.
    pub high8: bool,
    /// Destination width in bytes (1, 2, 4, 8).
    pub width: u8,
    /// MOVSX/MOVSXD: sign-extend the loaded value to `width`.
    pub sign: bool,
}

/// One decoded MMIO access.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    Read { size: u8, dest: Dest },
    Write { size: u8, value: u64 },
}

/// Decodes the instruction in `bytes` (at most 15, from CS:RIP) for a
/// `bitness`-bit code segment; `gpr(n)` reads a register for a store.
/// Returns the access and the instruction length.
pub fn decode(bytes: &[u8], bitness: u32, gpr: impl Fn(usize) -> u64) -> Result<(Access, usize), String> {
    let mut decoder = Decoder::new(bitness, bytes, DecoderOptions::NONE);
    let insn = decoder.decode();
    if insn.is_invalid() {
        return Err(format!("MMIO by an undecodable instruction ({:02x?})", &bytes[..bytes.len().min(8)]));
    }
    let mem_size = match insn.memory_size() {
        MemorySize::UInt8 | MemorySize::Int8 => 1,
        MemorySize::UInt16 | MemorySize::Int16 => 2,
        MemorySize::UInt32 | MemorySize::Int32 => 4,
        MemorySize::UInt64 | MemorySize::Int64 => 8,
        _ => 0,
    };
    let reg_dest = |r: Register, sign: bool| -> Option<Dest> {
        let (reg, width, high8) = gpr_of(r)?;
        Some(Dest { reg, high8, width, sign })
    };
    let op = |i| insn.op_kind(i);
    let access = match insn.mnemonic() {
        Mnemonic::Mov if op(0) == OpKind::Memory && op(1) == OpKind::Register => {
            let r = insn.op_register(1);
            let Some(d) = reg_dest(r, false) else {
                return Err(format!("MMIO store from {r:?} is not emulated"));
            };
            let mut v = gpr(d.reg);
            if d.high8 {
                v >>= 8;
            }
            Access::Write { size: mem_size, value: v & mask(mem_size) }
        }
        Mnemonic::Mov if op(0) == OpKind::Memory => {
            // C6/C7: the immediate, sign-extended to the operand size.
            Access::Write { size: mem_size, value: insn.immediate(1) & mask(mem_size) }
        }
        Mnemonic::Mov | Mnemonic::Movzx | Mnemonic::Movsx | Mnemonic::Movsxd
            if op(0) == OpKind::Register && op(1) == OpKind::Memory =>
        {
            let r = insn.op_register(0);
            let sign = matches!(insn.mnemonic(), Mnemonic::Movsx | Mnemonic::Movsxd);
            let Some(dest) = reg_dest(r, sign) else {
                return Err(format!("MMIO load into {r:?} is not emulated"));
            };
            Access::Read { size: mem_size, dest }
        }
        m => return Err(format!("MMIO by {m:?} is not emulated")),
    };
    match access {
        Access::Read { size: 1 | 2 | 4 | 8, .. } | Access::Write { size: 1 | 2 | 4 | 8, .. } => Ok((access, insn.len())),
        _ => Err(format!("MMIO access of {mem_size} bytes is not emulated")),
    }
}

/// A general-purpose register as (number in encoding order, width in
/// bytes, AH/CH/DH/BH), from iced's register order (AL…R15L, AX…R15W,
/// EAX…R15D, RAX…R15: 16 each, the byte registers with AH-BH at 4-7 and
/// SPL-DIL at 8-11) — iced's own register-info tables are behind its large
/// `instr_info` feature, which nvmx does not need otherwise.
fn gpr_of(r: Register) -> Option<(usize, u8, bool)> {
    let n = r as usize;
    let (al, ax, eax, rax) = (Register::AL as usize, Register::AX as usize, Register::EAX as usize, Register::RAX as usize);
    if (al..al + 20).contains(&n) {
        let i = n - al;
        return Some(match i {
            0..=3 => (i, 1, false),
            4..=7 => (i - 4, 1, true),
            8..=11 => (i - 4, 1, false),
            _ => (i - 4, 1, false),
        });
    }
    for (base, width) in [(ax, 2u8), (eax, 4), (rax, 8)] {
        if (base..base + 16).contains(&n) {
            return Some((n - base, width, false));
        }
    }
    None
}

/// All-ones of `size` bytes.
pub fn mask(size: u8) -> u64 {
    if size >= 8 { u64::MAX } else { (1u64 << (8 * u32::from(size))) - 1 }
}

/// The new value of the destination register after a load of `value`
/// (`size` bytes) into `dest`, whose old value is `old` (SDM Vol. 1 3.4.1.1:
/// 32-bit destinations zero-extend, 8- and 16-bit ones keep the rest).
pub fn merge(old: u64, dest: Dest, size: u8, value: u64) -> u64 {
    let mut v = value & mask(size);
    if dest.sign && size < dest.width {
        let shift = 64 - 8 * u32::from(size);
        v = (((v << shift) as i64) >> shift) as u64;
    }
    match dest.width {
        1 if dest.high8 => (old & !0xFF00) | ((v & 0xFF) << 8),
        1 => (old & !0xFF) | (v & 0xFF),
        2 => (old & !0xFFFF) | (v & 0xFFFF),
        4 => v & 0xFFFF_FFFF,
        _ => v,
    }
}

/// The code-segment size in bits from its access rights and the L1's mode
/// (SDM 3.4.5: L = bit 13 in IA-32e mode, D = bit 14; real mode is 16-bit).
pub fn bitness(cs_ar: u64, efer_lma: bool, cr0_pe: bool) -> u32 {
    if !cr0_pe {
        16
    } else if efer_lma && cs_ar & (1 << 13) != 0 {
        64
    } else if cs_ar & (1 << 14) != 0 {
        32
    } else {
        16
    }
}

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
