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
//! Emulated: MOV (load, store, store of an immediate), MOVZX, MOVSX, MOVSXD,
//! and CMP/TEST with a memory operand (compilers fold a volatile load into
//! them), of 1, 2, 4 or 8 bytes — what compilers emit for `volatile`
//! register accesses and what Linux, test kernels and nvmx's own L1 use for
//! the APIC. Not emulated: read-modify-write forms (ADD/OR/AND/XCHG to MMIO),
//! string moves, SSE/AVX accesses. Anything else touching MMIO stops the L1 with a
//! report naming the instruction (a PC would have done *something*; nvmx
//! says clearly what it does not emulate instead of guessing).

#![cfg_attr(not(test), no_std)]

extern crate alloc;

use alloc::format;
use alloc::string::String;

use iced_x86::{Decoder, DecoderOptions, MemorySize, Mnemonic, OpKind, Register};

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
    /// CMP or TEST with a memory operand: a read that only sets RFLAGS.
    /// `mem_first`: the memory operand is the left one (`cmp [m], x`).
    Compare { size: u8, other: u64, test: bool, mem_first: bool },
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
        // Compilers fold a volatile load into CMP/TEST (`cmp dword ptr [m], 0`).
        m @ (Mnemonic::Cmp | Mnemonic::Test) => {
            let mem_first = op(0) == OpKind::Memory;
            let other_op = if mem_first { 1 } else { 0 };
            if op(1 - other_op) != OpKind::Memory {
                return Err(format!("MMIO by {m:?} without a memory operand"));
            }
            let other = match op(other_op) {
                OpKind::Register => {
                    let r = insn.op_register(other_op);
                    let Some((n, _, high8)) = gpr_of(r) else {
                        return Err(format!("MMIO {m:?} with {r:?} is not emulated"));
                    };
                    let v = gpr(n);
                    if high8 { v >> 8 } else { v }
                }
                _ => insn.immediate(other_op),
            };
            Access::Compare { size: mem_size, other: other & mask(mem_size), test: m == Mnemonic::Test, mem_first }
        }
        m => return Err(format!("MMIO by {m:?} is not emulated")),
    };
    match access {
        Access::Read { size: 1 | 2 | 4 | 8, .. }
        | Access::Write { size: 1 | 2 | 4 | 8, .. }
        | Access::Compare { size: 1 | 2 | 4 | 8, .. } => Ok((access, insn.len())),
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

/// RFLAGS after CMP (`a - b`) or TEST (`a & b`) of `size`-byte operands:
/// CF, PF, AF, ZF, SF and OF as the SDM defines them for SUB and AND (Vol. 2,
/// CMP and TEST; AF is undefined after TEST, cleared here); other bits kept.
pub fn compare_flags(rflags: u64, a: u64, b: u64, size: u8, test: bool) -> u64 {
    const CF: u64 = 1;
    const PF: u64 = 1 << 2;
    const AF: u64 = 1 << 4;
    const ZF: u64 = 1 << 6;
    const SF: u64 = 1 << 7;
    const OF: u64 = 1 << 11;
    let m = mask(size);
    let msb = 1u64 << (8 * u32::from(size) - 1);
    let (a, b) = (a & m, b & m);
    let res = if test { a & b } else { a.wrapping_sub(b) & m };
    let mut f = rflags & !(CF | PF | AF | ZF | SF | OF);
    if !test {
        if a < b {
            f |= CF;
        }
        if (a ^ b) & (a ^ res) & msb != 0 {
            f |= OF;
        }
        if (a ^ b ^ res) & 0x10 != 0 {
            f |= AF;
        }
    }
    if res == 0 {
        f |= ZF;
    }
    if res & msb != 0 {
        f |= SF;
    }
    if (res as u8).count_ones() % 2 == 0 {
        f |= PF;
    }
    f
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

#[cfg(test)]
mod tests {
    use super::*;

    const REGS: [u64; 16] = [0x1111_2222_3333_4444, 0xAB00, 2, 0x1234, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 0xFFFF_FFFF_8000_0001];

    fn dec(bytes: &[u8], bits: u32) -> (Access, usize) {
        decode(bytes, bits, |r| REGS[r]).expect("decodes")
    }

    #[test]
    fn loads_name_their_register_and_width() {
        // mov eax, [rdi+0xf0]
        assert_eq!(dec(&[0x8B, 0x87, 0xF0, 0, 0, 0], 64), (Access::Read { size: 4, dest: Dest { reg: 0, high8: false, width: 4, sign: false } }, 6));
        // mov r15, [rax]
        assert_eq!(dec(&[0x4C, 0x8B, 0x38], 64).0, Access::Read { size: 8, dest: Dest { reg: 15, high8: false, width: 8, sign: false } });
        // mov ah, [rbx]
        assert_eq!(dec(&[0x8A, 0x23], 64).0, Access::Read { size: 1, dest: Dest { reg: 0, high8: true, width: 1, sign: false } });
        // movzx ecx, word [rsi]
        assert_eq!(dec(&[0x0F, 0xB7, 0x0E], 64).0, Access::Read { size: 2, dest: Dest { reg: 1, high8: false, width: 4, sign: false } });
        // movsx rdx, byte [rsi]
        assert_eq!(dec(&[0x48, 0x0F, 0xBE, 0x16], 64).0, Access::Read { size: 1, dest: Dest { reg: 2, high8: false, width: 8, sign: true } });
        // 32-bit code: mov eax, [0xfee00030]
        assert_eq!(dec(&[0xA1, 0x30, 0x00, 0xE0, 0xFE], 32), (Access::Read { size: 4, dest: Dest { reg: 0, high8: false, width: 4, sign: false } }, 5));
    }

    #[test]
    fn stores_take_the_register_or_immediate() {
        // mov [rdi], ecx (ECX = 0xAB00)
        assert_eq!(dec(&[0x89, 0x0F], 64), (Access::Write { size: 4, value: 0xAB00 }, 2));
        // mov [rdi], ch
        assert_eq!(dec(&[0x88, 0x2F], 64).0, Access::Write { size: 1, value: 0xAB });
        // mov dword [rdi+0xb0], 0
        assert_eq!(dec(&[0xC7, 0x87, 0xB0, 0, 0, 0, 0, 0, 0, 0], 64), (Access::Write { size: 4, value: 0 }, 10));
        // mov qword [rax], -1 (imm32 sign-extended)
        assert_eq!(dec(&[0x48, 0xC7, 0x00, 0xFF, 0xFF, 0xFF, 0xFF], 64).0, Access::Write { size: 8, value: u64::MAX });
        // mov [rax], r15 (upper bits kept for a qword store)
        assert_eq!(dec(&[0x4C, 0x89, 0x38], 64).0, Access::Write { size: 8, value: 0xFFFF_FFFF_8000_0001 });
    }

    #[test]
    fn compare_and_test_read_only() {
        // cmp dword [rax+0x390], 0
        assert_eq!(dec(&[0x83, 0xB8, 0x90, 0x03, 0, 0, 0x00], 64).0, Access::Compare { size: 4, other: 0, test: false, mem_first: true });
        // test [rax], ecx
        assert_eq!(dec(&[0x85, 0x08], 64).0, Access::Compare { size: 4, other: 0xAB00, test: true, mem_first: true });
    }

    #[test]
    fn what_is_not_emulated_is_named() {
        // add [rax], ecx
        assert_eq!(decode(&[0x01, 0x08], 64, |r| REGS[r]), Err(String::from("MMIO by Add is not emulated")));
        // movdqa xmm0, [rax]
        assert!(decode(&[0x66, 0x0F, 0x6F, 0x00], 64, |r| REGS[r]).is_err());
        // truncated instruction
        assert!(decode(&[0x8B], 64, |r| REGS[r]).is_err());
    }

    #[test]
    fn merge_follows_destination_width() {
        let old = 0x1111_2222_3333_4444;
        let d = |width, high8, sign| Dest { reg: 0, high8, width, sign };
        assert_eq!(merge(old, d(4, false, false), 4, 0xDEAD_BEEF), 0xDEAD_BEEF);
        assert_eq!(merge(old, d(2, false, false), 2, 0xBEEF), 0x1111_2222_3333_BEEF);
        assert_eq!(merge(old, d(1, true, false), 1, 0xEF), 0x1111_2222_3333_EF44);
        assert_eq!(merge(old, d(1, false, false), 1, 0xEF), 0x1111_2222_3333_44EF);
        assert_eq!(merge(old, d(8, false, true), 1, 0x80), 0xFFFF_FFFF_FFFF_FF80);
        assert_eq!(merge(old, d(4, false, true), 2, 0x8000), 0xFFFF_8000);
        assert_eq!(merge(old, d(8, false, false), 4, u64::MAX), 0xFFFF_FFFF);
    }

    #[test]
    fn flags_as_cmp_and_test() {
        const CF: u64 = 1;
        const PF: u64 = 4;
        const AF: u64 = 16;
        const ZF: u64 = 64;
        const SF: u64 = 128;
        const OF: u64 = 2048;
        let all = CF | PF | AF | ZF | SF | OF;
        assert_eq!(compare_flags(0x202, 5, 5, 4, false) & all, ZF | PF);
        assert_eq!(compare_flags(0x202, 0, 1, 4, false) & all, CF | SF | PF | AF);
        assert_eq!(compare_flags(0x202, 0x8000_0000, 1, 4, false) & all, OF | AF | PF);
        assert_eq!(compare_flags(0x202 | all, 0xF0, 0x0F, 1, true) & all, ZF | PF);
        assert_eq!(compare_flags(0x202, 0x80, 0x80, 1, true) & all, SF);
        assert_eq!(compare_flags(0x202, 1, 0, 4, false) & 0x202, 0x202);
    }

    #[test]
    fn bitness_from_segment() {
        assert_eq!(bitness(0xA09B, true, true), 64);
        assert_eq!(bitness(0xC09B, false, true), 32);
        assert_eq!(bitness(0x9B, false, true), 16);
        assert_eq!(bitness(0xC09B, true, false), 16);
    }
}
