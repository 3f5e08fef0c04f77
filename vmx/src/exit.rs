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
