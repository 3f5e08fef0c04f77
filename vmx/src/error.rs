//! VM-instruction error numbers (SDM Vol. 3C 32.4, table 32-1).

/// The outcome of a failed VMX instruction (SDM 32.2, "Conventions").
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VmFail {
    /// CF = 1: no current VMCS, or the operand was rejected before one mattered.
    Invalid,
    /// ZF = 1: the VM-instruction error number from the current VMCS.
    Valid(u32),
}

impl VmFail {
    /// The outcome encoded in RFLAGS after a VMX instruction; `error` reads
    /// VM_INSTRUCTION_ERROR (only called for VMfailValid).
    pub fn from_rflags(rflags: u64, error: impl FnOnce() -> u32) -> Result<(), VmFail> {
        if rflags & 1 != 0 {
            Err(VmFail::Invalid)
        } else if rflags & (1 << 6) != 0 {
            Err(VmFail::Valid(error()))
        } else {
            Ok(())
        }
    }
}

impl core::fmt::Display for VmFail {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            VmFail::Invalid => write!(f, "VMfailInvalid"),
            VmFail::Valid(n) => {
                write!(f, "VMfailValid({n}: {})", VmInstructionError::from_u32(*n).map_or("?", |e| e.name()))
            }
        }
    }
}

/// An error number VMfailValid writes into VM_INSTRUCTION_ERROR.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct VmInstructionError(u32);

const NAMES: [&str; 29] = [
    "",
    "VMCALL executed in VMX root operation",
    "VMCLEAR with invalid physical address",
    "VMCLEAR with VMXON pointer",
    "VMLAUNCH with non-clear VMCS",
    "VMRESUME with non-launched VMCS",
    "VMRESUME after VMXOFF",
    "VM entry with invalid control field(s)",
    "VM entry with invalid host-state field(s)",
    "VMPTRLD with invalid physical address",
    "VMPTRLD with VMXON pointer",
    "VMPTRLD with incorrect VMCS revision identifier",
    "VMREAD/VMWRITE from/to unsupported VMCS component",
    "VMWRITE to read-only VMCS component",
    "reserved",
    "VMXON executed in VMX root operation",
    "VM entry with invalid executive-VMCS pointer",
    "VM entry with non-launched executive VMCS",
    "VM entry with executive-VMCS pointer not VMXON pointer",
    "VMCALL with non-clear VMCS",
    "VMCALL with invalid VM-exit control fields",
    "reserved",
    "VMCALL with incorrect MSEG revision identifier",
    "VMXOFF under dual-monitor treatment of SMIs and SMM",
    "VMCALL with invalid SMM-monitor features",
    "VM entry with invalid VM-execution control fields in executive VMCS",
    "VM entry with events blocked by MOV SS",
    "reserved",
    "Invalid operand to INVEPT/INVVPID",
];

impl VmInstructionError {
    pub const VMCLEAR_INVALID_ADDRESS: Self = Self(2);
    pub const VMCLEAR_VMXON_POINTER: Self = Self(3);
    pub const VMLAUNCH_NONCLEAR_VMCS: Self = Self(4);
    pub const VMRESUME_NONLAUNCHED_VMCS: Self = Self(5);
    pub const ENTRY_INVALID_CONTROL_FIELD: Self = Self(7);
    pub const ENTRY_INVALID_HOST_STATE_FIELD: Self = Self(8);
    pub const VMPTRLD_INVALID_ADDRESS: Self = Self(9);
    pub const VMPTRLD_VMXON_POINTER: Self = Self(10);
    pub const VMPTRLD_INCORRECT_REVISION_ID: Self = Self(11);
    pub const UNSUPPORTED_VMCS_COMPONENT: Self = Self(12);
    pub const VMWRITE_READ_ONLY_COMPONENT: Self = Self(13);
    pub const VMXON_IN_VMX_ROOT: Self = Self(15);
    pub const INVALID_INVEPT_INVVPID_OPERAND: Self = Self(28);

    /// The error with number `n`, if the SDM defines it (1-28, not 14/21/27).
    pub fn from_u32(n: u32) -> Option<Self> {
        match n {
            1..=28 if !matches!(n, 14 | 21 | 27) => Some(Self(n)),
            _ => None,
        }
    }
    pub const fn number(self) -> u32 {
        self.0
    }
    pub fn name(self) -> &'static str {
        NAMES[self.0 as usize]
    }
}

impl core::fmt::Display for VmInstructionError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "{} ({})", self.0, self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_and_names() {
        assert_eq!(VmInstructionError::from_u32(12).unwrap().name(), "VMREAD/VMWRITE from/to unsupported VMCS component");
        assert_eq!(VmInstructionError::VMPTRLD_VMXON_POINTER.number(), 10);
        assert_eq!(VmInstructionError::from_u32(28).unwrap().name(), "Invalid operand to INVEPT/INVVPID");
        for bad in [0, 14, 21, 27, 29] {
            assert!(VmInstructionError::from_u32(bad).is_none());
        }
        assert_eq!(alloc_free_format(VmInstructionError::from_u32(7).unwrap()), "7 (VM entry with invalid control field(s))");
    }

    fn alloc_free_format(e: VmInstructionError) -> String {
        format!("{e}")
    }

    #[test]
    fn vmfail_from_rflags() {
        assert_eq!(VmFail::from_rflags(0x2, || unreachable!()), Ok(()));
        assert_eq!(VmFail::from_rflags(0x3, || unreachable!()), Err(VmFail::Invalid));
        assert_eq!(VmFail::from_rflags(0x42, || 12), Err(VmFail::Valid(12)));
        assert_eq!(format!("{}", VmFail::Valid(12)), "VMfailValid(12: VMREAD/VMWRITE from/to unsupported VMCS component)");
    }
}
