//! Basic exit reasons (SDM Vol. 3C Appendix C) and the exit-reason field.

/// The largest basic exit reason named here.
pub const MAX_BASIC_EXIT_REASON: u16 = 79;

/// (SDM name, short mnemonic in the seed thread's style) per basic reason.
const REASONS: [(&str, &str); 80] = [
    ("exception or NMI", "exception_nmi"),
    ("external interrupt", "extint"),
    ("triple fault", "triple_fault"),
    ("INIT signal", "init"),
    ("start-up IPI", "sipi"),
    ("I/O SMI", "io_smi"),
    ("other SMI", "other_smi"),
    ("interrupt window", "intr_window"),
    ("NMI window", "nmi_window"),
    ("task switch", "task_switch"),
    ("CPUID", "cpuid"),
    ("GETSEC", "getsec"),
    ("HLT", "hlt"),
    ("INVD", "invd"),
    ("INVLPG", "invlpg"),
    ("RDPMC", "rdpmc"),
    ("RDTSC", "rdtsc"),
    ("RSM", "rsm"),
    ("VMCALL", "vmcall"),
    ("VMCLEAR", "vmclear"),
    ("VMLAUNCH", "vmlaunch"),
    ("VMPTRLD", "vmptrld"),
    ("VMPTRST", "vmptrst"),
    ("VMREAD", "vmread"),
    ("VMRESUME", "vmresume"),
    ("VMWRITE", "vmwrite"),
    ("VMXOFF", "vmxoff"),
    ("VMXON", "vmxon"),
    ("control-register access", "cr_access"),
    ("MOV DR", "dr_access"),
    ("I/O instruction", "io"),
    ("RDMSR", "rdmsr"),
    ("WRMSR", "wrmsr"),
    ("VM-entry failure: invalid guest state", "invalid_guest_state"),
    ("VM-entry failure: MSR loading", "msr_load_fail"),
    ("reserved", "reserved"),
    ("MWAIT", "mwait"),
    ("monitor trap flag", "mtf"),
    ("reserved", "reserved"),
    ("MONITOR", "monitor"),
    ("PAUSE", "pause"),
    ("VM-entry failure: machine-check event", "mce_during_entry"),
    ("reserved", "reserved"),
    ("TPR below threshold", "tpr_below_threshold"),
    ("APIC access", "apic_access"),
    ("virtualized EOI", "eoi_induced"),
    ("access to GDTR or IDTR", "gdtr_idtr"),
    ("access to LDTR or TR", "ldtr_tr"),
    ("EPT violation", "ept_violation"),
    ("EPT misconfiguration", "ept_misconfig"),
    ("INVEPT", "invept"),
    ("RDTSCP", "rdtscp"),
    ("VMX-preemption timer expired", "preempt_timer"),
    ("INVVPID", "invvpid"),
    ("WBINVD", "wbinvd"),
    ("XSETBV", "xsetbv"),
    ("APIC write", "apic_write"),
    ("RDRAND", "rdrand"),
    ("INVPCID", "invpcid"),
    ("VMFUNC", "vmfunc"),
    ("ENCLS", "encls"),
    ("RDSEED", "rdseed"),
    ("page-modification log full", "pml_full"),
    ("XSAVES", "xsaves"),
    ("XRSTORS", "xrstors"),
    ("PCONFIG", "pconfig"),
    ("SPP-related event", "spp"),
    ("UMWAIT", "umwait"),
    ("TPAUSE", "tpause"),
    ("LOADIWKEY", "loadiwkey"),
    ("ENCLV", "enclv"),
    ("reserved", "reserved"),
    ("ENQCMD PASID translation failure", "enqcmd_pasid"),
    ("ENQCMDS PASID translation failure", "enqcmds_pasid"),
    ("bus lock", "bus_lock"),
    ("instruction timeout", "notify"),
    ("SEAMCALL", "seamcall"),
    ("TDCALL", "tdcall"),
    ("RDMSRLIST", "rdmsrlist"),
    ("WRMSRLIST", "wrmsrlist"),
];

/// The SDM name of basic exit reason `n` ("reserved" for unused numbers).
pub fn exit_reason_name(n: u16) -> &'static str {
    REASONS.get(usize::from(n)).map_or("reserved", |r| r.0)
}

/// The short lowercase name (`vmread`, `cpuid`, …) of basic exit reason `n`.
pub fn exit_reason_mnemonic(n: u16) -> &'static str {
    REASONS.get(usize::from(n)).map_or("reserved", |r| r.1)
}

/// The 32-bit exit-reason field (SDM 25.9.1).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ExitReason(pub u32);

impl ExitReason {
    pub const fn basic(self) -> u16 {
        self.0 as u16
    }
    /// Bit 31: the VM entry failed.
    pub const fn entry_failure(self) -> bool {
        self.0 & (1 << 31) != 0
    }
    /// Bit 29: the exit came from VMX root operation (SMM monitor only).
    pub const fn from_vmx_root(self) -> bool {
        self.0 & (1 << 29) != 0
    }
    /// Bit 27: the exit happened in enclave mode.
    pub const fn enclave(self) -> bool {
        self.0 & (1 << 27) != 0
    }
}

/// Exit qualification of an I/O instruction (SDM 28.2.1, table 28-5).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IoQualification {
    pub size: u8,
    pub input: bool,
    pub string: bool,
    pub rep: bool,
    pub immediate: bool,
    pub port: u16,
}

impl IoQualification {
    pub const fn decode(q: u64) -> Self {
        IoQualification {
            size: (q & 7) as u8 + 1,
            input: q & 8 != 0,
            string: q & 16 != 0,
            rep: q & 32 != 0,
            immediate: q & 64 != 0,
            port: (q >> 16) as u16,
        }
    }
}

/// Exit qualification of a control-register access (SDM 28.2.1, table 28-3).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CrQualification {
    pub cr: u8,
    /// 0 MOV to CR, 1 MOV from CR, 2 CLTS, 3 LMSW.
    pub access: u8,
    pub gpr: u8,
    pub lmsw_source: u16,
}

impl CrQualification {
    pub const fn decode(q: u64) -> Self {
        CrQualification {
            cr: (q & 0xF) as u8,
            access: ((q >> 4) & 3) as u8,
            gpr: ((q >> 8) & 0xF) as u8,
            lmsw_source: (q >> 16) as u16,
        }
    }
}

/// Exit qualification of an EPT violation (SDM 28.2.1, table 28-7).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EptViolation {
    pub read: bool,
    pub write: bool,
    pub fetch: bool,
    pub readable: bool,
    pub writable: bool,
    pub executable: bool,
    pub linear_valid: bool,
}

impl EptViolation {
    pub const fn decode(q: u64) -> Self {
        EptViolation {
            read: q & 1 != 0,
            write: q & 2 != 0,
            fetch: q & 4 != 0,
            readable: q & 8 != 0,
            writable: q & 16 != 0,
            executable: q & 32 != 0,
            linear_valid: q & 128 != 0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_from_the_sdm_table() {
        assert_eq!(exit_reason_name(10), "CPUID");
        assert_eq!(exit_reason_mnemonic(23), "vmread");
        assert_eq!(exit_reason_mnemonic(25), "vmwrite");
        assert_eq!(exit_reason_mnemonic(50), "invept");
        assert_eq!(exit_reason_mnemonic(53), "invvpid");
        assert_eq!(exit_reason_name(48), "EPT violation");
        assert_eq!(exit_reason_name(79), "WRMSRLIST");
        for unused in [35, 38, 42, 71, 80, 500] {
            assert_eq!(exit_reason_name(unused), "reserved");
        }
        for n in 0..=MAX_BASIC_EXIT_REASON {
            assert!(!exit_reason_name(n).is_empty());
        }
    }

    #[test]
    fn exit_reason_bits() {
        let r = ExitReason(0x8000_0021);
        assert!(r.entry_failure());
        assert_eq!(r.basic(), 33);
        assert!(!ExitReason(10).entry_failure());
    }

    #[test]
    fn qualifications() {
        // OUT DX, AL to 0x3F8: size 1, output, port in bits 31:16.
        let io = IoQualification::decode(0x03F8_0000);
        assert_eq!((io.size, io.input, io.port), (1, false, 0x3F8));
        let io = IoQualification::decode(0x0080_0049);
        assert_eq!((io.size, io.input, io.immediate, io.port), (2, true, true, 0x80));
        // MOV CR4, RCX.
        let cr = CrQualification::decode(0x104);
        assert_eq!((cr.cr, cr.access, cr.gpr), (4, 0, 1));
        let ept = EptViolation::decode(0x82);
        assert!(ept.write && !ept.read && ept.linear_valid && !ept.readable);
    }
}

/// The VM-exit instruction-information field of VMX instructions (SDM 28.2.5,
/// tables 28-12 and 28-14): where the memory or register operand is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct InstructionInfo {
    /// Index scale: 1 << scaling.
    pub scaling: u8,
    /// 0 16-bit, 1 32-bit, 2 64-bit.
    pub address_size: u8,
    /// The operand is a register (`reg1`), not memory.
    pub is_register: bool,
    /// VMREAD/VMWRITE register operand (bits 6:3).
    pub reg1: u8,
    /// Segment register: 0 ES, 1 CS, 2 SS, 3 DS, 4 FS, 5 GS.
    pub segment: u8,
    pub index: Option<u8>,
    pub base: Option<u8>,
    /// VMREAD/VMWRITE: register with the field encoding; INVEPT/INVVPID: the type.
    pub reg2: u8,
}

impl InstructionInfo {
    pub const fn decode(v: u32) -> Self {
        InstructionInfo {
            scaling: (v & 3) as u8,
            address_size: ((v >> 7) & 7) as u8,
            is_register: v & (1 << 10) != 0,
            reg1: ((v >> 3) & 0xF) as u8,
            segment: ((v >> 15) & 7) as u8,
            index: if v & (1 << 22) == 0 { Some(((v >> 18) & 0xF) as u8) } else { None },
            base: if v & (1 << 27) == 0 { Some(((v >> 23) & 0xF) as u8) } else { None },
            reg2: ((v >> 28) & 0xF) as u8,
        }
    }

    /// The operand's offset (before the segment base): base + index * scale
    /// + displacement, truncated to the address size. `reg` reads a GPR.
    pub fn offset(&self, displacement: u64, reg: impl Fn(u8) -> u64) -> u64 {
        let mut a = displacement;
        if let Some(b) = self.base {
            a = a.wrapping_add(reg(b));
        }
        if let Some(i) = self.index {
            a = a.wrapping_add(reg(i) << self.scaling);
        }
        match self.address_size {
            0 => a & 0xFFFF,
            1 => a & 0xFFFF_FFFF,
            _ => a,
        }
    }
}

/// A segment register as the VMCS holds it (base, limit, access rights).
#[derive(Clone, Copy, Debug, Default)]
pub struct Segment {
    pub base: u64,
    pub limit: u32,
    pub ar: u32,
}

/// The linear address of a VMX instruction's memory operand of `size`
/// bytes at `offset` in segment `seg` (number `seg_reg`: 2 = SS), with the
/// checks the SDM makes before any page walk (Vol. 3C 32.3, each
/// instruction's "Protected Mode" and "64-Bit Mode Exceptions"; Vol. 3A
/// 5.3, 3.4.5.1): in 64-bit mode the ES/CS/SS/DS bases count as 0 and the
/// whole operand must be canonical; elsewhere the segment must be usable,
/// readable (writable for a store) and the operand within its limit
/// (expand-down segments: above it). `Err(vector)`: #SS(0) (12) for an SS
/// operand, else #GP(0) (13).
pub fn operand_linear(seg: Segment, seg_reg: u8, offset: u64, size: u64, write: bool, long64: bool) -> Result<u64, u8> {
    let fault = if seg_reg == 2 { 12 } else { 13 };
    if long64 {
        let base = if seg_reg >= 4 { seg.base } else { 0 };
        let first = base.wrapping_add(offset);
        let last = first.wrapping_add(size - 1);
        let canonical = |v: u64| (v as i64) << 16 >> 16 == v as i64;
        return if canonical(first) && canonical(last) { Ok(first) } else { Err(fault) };
    }
    let (ty, unusable) = (seg.ar & 0xF, seg.ar & (1 << 16) != 0);
    let code = ty & 8 != 0;
    let bad_type = if code { write || ty & 2 == 0 } else { write && ty & 2 == 0 };
    if unusable || bad_type {
        return Err(fault);
    }
    let last = offset.wrapping_add(size - 1);
    let (limit, top) = (u64::from(seg.limit), if seg.ar & (1 << 14) != 0 { 0xFFFF_FFFF } else { 0xFFFF });
    let outside = if !code && ty & 4 != 0 {
        // Expand-down: offsets above the limit, up to 0xFFFF or 0xFFFFFFFF (D/B).
        offset <= limit || last > top || last < offset
    } else {
        last > limit || last < offset
    };
    if outside {
        return Err(fault);
    }
    Ok(seg.base.wrapping_add(offset) & 0xFFFF_FFFF)
}

#[cfg(test)]
mod operand_tests {
    use super::*;

    const FLAT_DATA: Segment = Segment { base: 0, limit: 0xFFFF_FFFF, ar: 0xC093 };

    #[test]
    fn long_mode_canonical_and_bases() {
        let ds = Segment { base: 0x1000, ..FLAT_DATA };
        assert_eq!(operand_linear(ds, 3, 0x2000, 8, false, true), Ok(0x2000), "DS base ignored in 64-bit mode");
        let fs = Segment { base: 0x1000, ..FLAT_DATA };
        assert_eq!(operand_linear(fs, 4, 0x2000, 8, false, true), Ok(0x3000), "FS base counts");
        assert_eq!(operand_linear(ds, 3, 1 << 63, 8, false, true), Err(13), "non-canonical: #GP(0)");
        assert_eq!(operand_linear(ds, 2, 1 << 63, 8, false, true), Err(12), "non-canonical SS operand: #SS(0)");
        assert_eq!(operand_linear(ds, 3, 0x7FFF_FFFF_FFF8, 16, false, true), Err(13), "the last byte crosses into non-canonical");
        assert_eq!(operand_linear(ds, 3, 0x7FFF_FFFF_FFF8, 8, false, true), Ok(0x7FFF_FFFF_FFF8));
        assert_eq!(operand_linear(ds, 3, 0xFFFF_8000_0000_0000, 8, true, true), Ok(0xFFFF_8000_0000_0000));
    }

    #[test]
    fn protected_mode_limits_and_types() {
        let small = Segment { base: 0x10_0000, limit: 0xFFF, ar: 0x4093 };
        assert_eq!(operand_linear(small, 3, 0xFF8, 8, false, false), Ok(0x10_0FF8));
        assert_eq!(operand_linear(small, 3, 0xFF9, 8, false, false), Err(13), "past the limit");
        assert_eq!(operand_linear(small, 2, 0xFF9, 8, false, false), Err(12), "past SS's limit: #SS(0)");
        let ro = Segment { ar: 0x4091, ..small };
        assert_eq!(operand_linear(ro, 3, 0, 8, false, false), Ok(0x10_0000), "read from a read-only segment");
        assert_eq!(operand_linear(ro, 3, 0, 8, true, false), Err(13), "write to a read-only segment");
        let xo = Segment { ar: 0x4099, ..small };
        assert_eq!(operand_linear(xo, 3, 0, 8, false, false), Err(13), "read from an execute-only code segment");
        let unusable = Segment { ar: 0x1_0000, ..small };
        assert_eq!(operand_linear(unusable, 0, 0, 8, false, false), Err(13), "unusable (null) segment");
        let down = Segment { base: 0, limit: 0xFFF, ar: 0x4097 };
        assert_eq!(operand_linear(down, 2, 0x1000, 8, true, false), Ok(0x1000), "expand-down: above the limit");
        assert_eq!(operand_linear(down, 2, 0xFF8, 8, true, false), Err(12), "expand-down: at or below the limit");
        assert_eq!(operand_linear(FLAT_DATA, 3, 0xFFFF_FFFC, 8, false, false), Err(13), "wraps past 4 GiB");
        let wrap = Segment { base: 0xFFFF_F000, ..FLAT_DATA };
        assert_eq!(operand_linear(wrap, 3, 0x2000, 8, false, false), Ok(0x1000), "linear addresses wrap at 4 GiB");
    }
}

#[cfg(test)]
mod insn_info_tests {
    use super::*;

    #[test]
    fn memory_and_register_forms() {
        // vmptrld [rax]: 64-bit address, DS, no index, base RAX.
        let i = InstructionInfo::decode((2 << 7) | (3 << 15) | (1 << 22));
        assert_eq!((i.is_register, i.base, i.index, i.segment), (false, Some(0), None, 3));
        assert_eq!(i.offset(0x10, |r| if r == 0 { 0x1000 } else { 0 }), 0x1010);
        // vmread rbx, rcx: register form, reg1 = RBX (3), reg2 = RCX (1).
        let i = InstructionInfo::decode((1 << 10) | (3 << 3) | (1 << 28) | (1 << 22) | (1 << 27));
        assert_eq!((i.is_register, i.reg1, i.reg2), (true, 3, 1));
        // [rsi + rdi*8 - 8], 32-bit address size wraps.
        let i = InstructionInfo::decode(3 | (1 << 7) | (7 << 18) | (6 << 23));
        assert_eq!(i.offset(u64::MAX - 7, |r| [0, 0, 0, 0, 0, 0, 0x100, 2][r as usize]), 0x100 + 16 - 8);
    }
}
