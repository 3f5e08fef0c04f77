//! The VMX capability MSRs (SDM Vol. 3C Appendix A) and what they say.

use core::fmt;

use crate::controls::proc1;
use crate::controls::proc2;

pub const IA32_FEATURE_CONTROL: u32 = 0x3A;
pub const IA32_VMX_BASIC: u32 = 0x480;
pub const IA32_VMX_PINBASED_CTLS: u32 = 0x481;
pub const IA32_VMX_PROCBASED_CTLS: u32 = 0x482;
pub const IA32_VMX_EXIT_CTLS: u32 = 0x483;
pub const IA32_VMX_ENTRY_CTLS: u32 = 0x484;
pub const IA32_VMX_MISC: u32 = 0x485;
pub const IA32_VMX_CR0_FIXED0: u32 = 0x486;
pub const IA32_VMX_CR0_FIXED1: u32 = 0x487;
pub const IA32_VMX_CR4_FIXED0: u32 = 0x488;
pub const IA32_VMX_CR4_FIXED1: u32 = 0x489;
pub const IA32_VMX_VMCS_ENUM: u32 = 0x48A;
pub const IA32_VMX_PROCBASED_CTLS2: u32 = 0x48B;
pub const IA32_VMX_EPT_VPID_CAP: u32 = 0x48C;
pub const IA32_VMX_TRUE_PINBASED_CTLS: u32 = 0x48D;
pub const IA32_VMX_TRUE_PROCBASED_CTLS: u32 = 0x48E;
pub const IA32_VMX_TRUE_EXIT_CTLS: u32 = 0x48F;
pub const IA32_VMX_TRUE_ENTRY_CTLS: u32 = 0x490;
pub const IA32_VMX_VMFUNC: u32 = 0x491;

/// The raw capability MSRs (0 where an MSR is absent).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct VmxCaps {
    pub basic: u64,
    pub pinbased: u64,
    pub procbased: u64,
    pub exit: u64,
    pub entry: u64,
    pub misc: u64,
    pub cr0_fixed0: u64,
    pub cr0_fixed1: u64,
    pub cr4_fixed0: u64,
    pub cr4_fixed1: u64,
    pub vmcs_enum: u64,
    pub procbased2: u64,
    pub ept_vpid: u64,
    pub vmfunc: u64,
}

/// Allowed-0 (low dword) and allowed-1 (high dword) of a control MSR (A.3).
fn split(msr: u64) -> (u32, u32) {
    (msr as u32, (msr >> 32) as u32)
}

impl VmxCaps {
    /// No capabilities at all (every MSR absent).
    pub const NONE: VmxCaps = VmxCaps {
        basic: 0,
        pinbased: 0,
        procbased: 0,
        exit: 0,
        entry: 0,
        misc: 0,
        cr0_fixed0: 0,
        cr0_fixed1: 0,
        cr4_fixed0: 0,
        cr4_fixed1: 0,
        vmcs_enum: 0,
        procbased2: 0,
        ept_vpid: 0,
        vmfunc: 0,
    };

    /// Reads the MSRs with `rdmsr` (`None` = the MSR faulted). The TRUE_*
    /// MSRs replace the plain ones when IA32_VMX_BASIC bit 55 says they exist
    /// (A.1); secondary controls, EPT/VPID and VMFUNC are read only when the
    /// controls that gate them may be 1 (A.3.3, A.10, A.11).
    pub fn read(mut rdmsr: impl FnMut(u32) -> Option<u64>) -> VmxCaps {
        let mut r = |m| rdmsr(m).unwrap_or(0);
        let basic = r(IA32_VMX_BASIC);
        let true_ctls = basic & (1 << 55) != 0;
        let pick = |r: &mut dyn FnMut(u32) -> u64, plain, tru| if true_ctls { r(tru) } else { r(plain) };
        let pinbased = pick(&mut r, IA32_VMX_PINBASED_CTLS, IA32_VMX_TRUE_PINBASED_CTLS);
        let procbased = pick(&mut r, IA32_VMX_PROCBASED_CTLS, IA32_VMX_TRUE_PROCBASED_CTLS);
        let exit = pick(&mut r, IA32_VMX_EXIT_CTLS, IA32_VMX_TRUE_EXIT_CTLS);
        let entry = pick(&mut r, IA32_VMX_ENTRY_CTLS, IA32_VMX_TRUE_ENTRY_CTLS);
        let has2 = (procbased >> 32) as u32 & proc1::SECONDARY_CONTROLS != 0;
        let procbased2 = if has2 { r(IA32_VMX_PROCBASED_CTLS2) } else { 0 };
        let p2 = (procbased2 >> 32) as u32;
        let ept_vpid =
            if p2 & (proc2::ENABLE_EPT | proc2::ENABLE_VPID) != 0 { r(IA32_VMX_EPT_VPID_CAP) } else { 0 };
        let vmfunc = if p2 & proc2::ENABLE_VMFUNC != 0 { r(IA32_VMX_VMFUNC) } else { 0 };
        VmxCaps {
            basic,
            pinbased,
            procbased,
            exit,
            entry,
            misc: r(IA32_VMX_MISC),
            cr0_fixed0: r(IA32_VMX_CR0_FIXED0),
            cr0_fixed1: r(IA32_VMX_CR0_FIXED1),
            cr4_fixed0: r(IA32_VMX_CR4_FIXED0),
            cr4_fixed1: r(IA32_VMX_CR4_FIXED1),
            vmcs_enum: r(IA32_VMX_VMCS_ENUM),
            procbased2,
            ept_vpid,
            vmfunc,
        }
    }

    /// VMCS revision identifier (basic bits 30:0).
    pub fn revision_id(&self) -> u32 {
        self.basic as u32 & 0x7FFF_FFFF
    }
    /// VMXON/VMCS region size in bytes (basic bits 44:32).
    pub fn vmcs_size(&self) -> u32 {
        ((self.basic >> 32) & 0x1FFF) as u32
    }
    pub fn true_controls(&self) -> bool {
        self.basic & (1 << 55) != 0
    }
    pub fn pinbased(&self) -> (u32, u32) {
        split(self.pinbased)
    }
    pub fn procbased(&self) -> (u32, u32) {
        split(self.procbased)
    }
    pub fn procbased2(&self) -> (u32, u32) {
        split(self.procbased2)
    }
    pub fn exit(&self) -> (u32, u32) {
        split(self.exit)
    }
    pub fn entry(&self) -> (u32, u32) {
        split(self.entry)
    }
    /// (fixed0, fixed1): bits that must be 1 / may be 1 in CR0 (A.7).
    pub fn cr0_fixed(&self) -> (u64, u64) {
        (self.cr0_fixed0, self.cr0_fixed1)
    }
    /// (fixed0, fixed1) for CR4 (A.8).
    pub fn cr4_fixed(&self) -> (u64, u64) {
        (self.cr4_fixed0, self.cr4_fixed1)
    }
    fn may2(&self, bit: u32) -> bool {
        self.procbased2().1 & bit != 0
    }
    pub fn ept(&self) -> bool {
        self.may2(proc2::ENABLE_EPT)
    }
    pub fn vpid(&self) -> bool {
        self.may2(proc2::ENABLE_VPID)
    }
    pub fn unrestricted_guest(&self) -> bool {
        self.may2(proc2::UNRESTRICTED_GUEST)
    }
    pub fn vmcs_shadowing(&self) -> bool {
        self.may2(proc2::VMCS_SHADOWING)
    }
    pub fn preemption_timer(&self) -> bool {
        self.pinbased().1 & crate::controls::pin::PREEMPTION_TIMER != 0
    }
    /// The timer counts down every 2^rate TSC ticks (MISC bits 4:0, A.6).
    pub fn preemption_timer_rate(&self) -> u32 {
        (self.misc & 0x1F) as u32
    }
    pub fn ept_ad(&self) -> bool {
        self.ept_vpid & (1 << 21) != 0
    }
    pub fn ept_2m_pages(&self) -> bool {
        self.ept_vpid & (1 << 16) != 0
    }
    pub fn ept_1g_pages(&self) -> bool {
        self.ept_vpid & (1 << 17) != 0
    }
    pub fn ept_wb(&self) -> bool {
        self.ept_vpid & (1 << 14) != 0
    }
    pub fn ept_walk4(&self) -> bool {
        self.ept_vpid & (1 << 6) != 0
    }
    pub fn invept(&self) -> bool {
        self.ept_vpid & (1 << 20) != 0
    }
    pub fn invept_single(&self) -> bool {
        self.ept_vpid & (1 << 25) != 0
    }
    pub fn invept_all(&self) -> bool {
        self.ept_vpid & (1 << 26) != 0
    }
    pub fn invvpid(&self) -> bool {
        self.ept_vpid & (1 << 32) != 0
    }
    /// INVVPID types 0-3 supported (bits 40-43, A.10).
    pub fn invvpid_type(&self, t: u32) -> bool {
        t < 4 && self.ept_vpid & (1 << (40 + t)) != 0
    }
    pub fn vmfunc(&self) -> bool {
        self.may2(proc2::ENABLE_VMFUNC)
    }
    /// Highest field index (VMCS_ENUM bits 9:1).
    pub fn vmcs_enum_max_index(&self) -> u32 {
        ((self.vmcs_enum >> 1) & 0x1FF) as u32
    }

    /// The `vmx` shell command's lines, in a fixed order.
    pub fn report(&self) -> [(&'static str, Value); 16] {
        use Value::*;
        let invept = if self.invept() {
            Words([(self.invept_single(), "single-context"), (self.invept_all(), "all-context"), (false, ""), (false, "")])
        } else {
            YesNo(false)
        };
        let invvpid = if self.invvpid() {
            Words([
                (self.invvpid_type(0), "individual-address"),
                (self.invvpid_type(1), "single-context"),
                (self.invvpid_type(2), "all-context"),
                (self.invvpid_type(3), "single-context-retaining-globals"),
            ])
        } else {
            YesNo(false)
        };
        [
            ("vmcs revision id", Hex(self.revision_id().into())),
            ("vmcs region size", Dec(self.vmcs_size().into())),
            ("true controls", YesNo(self.true_controls())),
            ("ept", YesNo(self.ept())),
            ("vpid", YesNo(self.vpid())),
            ("unrestricted guest", YesNo(self.unrestricted_guest())),
            ("vmcs shadowing", YesNo(self.vmcs_shadowing())),
            ("preemption timer", Timer(self.preemption_timer(), self.preemption_timer_rate())),
            ("ept a/d bits", YesNo(self.ept_ad())),
            ("ept 1g pages", YesNo(self.ept_1g_pages())),
            ("invept", invept),
            ("invvpid", invvpid),
            ("vmfunc", YesNo(self.vmfunc())),
            ("cr0 fixed0/fixed1", HexPair(self.cr0_fixed0, self.cr0_fixed1)),
            ("cr4 fixed0/fixed1", HexPair(self.cr4_fixed0, self.cr4_fixed1)),
            ("vmcs enum max index", Hex(self.vmcs_enum_max_index().into())),
        ]
    }
}

/// A value of the `vmx` report, printable without allocation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Value {
    YesNo(bool),
    Hex(u64),
    Dec(u64),
    HexPair(u64, u64),
    /// Preemption timer: present, rate.
    Timer(bool, u32),
    /// `yes, ` and the names whose flag is set, space-separated.
    Words([(bool, &'static str); 4]),
}

impl fmt::Display for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Value::YesNo(b) => f.write_str(if b { "yes" } else { "no" }),
            Value::Hex(v) => write!(f, "{v:#x}"),
            Value::Dec(v) => write!(f, "{v}"),
            Value::HexPair(a, b) => write!(f, "{a:#x}/{b:#x}"),
            Value::Timer(false, _) => f.write_str("no"),
            Value::Timer(true, rate) => write!(f, "yes, tick = TSC/{}", 1u64 << rate),
            Value::Words(words) => {
                f.write_str("yes")?;
                let mut sep = ", ";
                for (on, w) in words {
                    if on {
                        f.write_str(sep)?;
                        f.write_str(w)?;
                        sep = " ";
                    }
                }
                Ok(())
            }
        }
    }
}

/// Why VMX cannot be used, or `None` when it can (SDM 24.6-24.7). A
/// FEATURE_CONTROL that is still unlocked counts as usable: the kernel locks
/// it with VMX enabled itself.
pub fn vmx_unavailable_reason(cpuid_1_ecx: u32, vendor: &[u8; 12], feature_control: Option<u64>) -> Option<&'static str> {
    if vendor != b"GenuineIntel" {
        if cpuid_1_ecx & (1 << 5) == 0 {
            return Some(match vendor {
                b"AuthenticAMD" => "AMD CPU (AMD-V is not VT-x); CPUID.1:ECX.VMX[bit 5] = 0",
                _ => "not an Intel CPU; CPUID.1:ECX.VMX[bit 5] = 0",
            });
        }
    }
    if cpuid_1_ecx & (1 << 5) == 0 {
        return Some("CPUID.1:ECX.VMX[bit 5] = 0 (VT-x absent or disabled by the firmware or hypervisor)");
    }
    match feature_control {
        None => Some("IA32_FEATURE_CONTROL cannot be read"),
        Some(v) if v & 1 != 0 && v & (1 << 2) == 0 => {
            Some("IA32_FEATURE_CONTROL is locked with VMX outside SMX disabled (enable VT-x in the firmware setup)")
        }
        Some(_) => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Bochs-like MSR values: revision 0x2B, true controls, EPT/VPID/UG,
    /// shadowing only when `haswell`.
    fn bochs(haswell: bool) -> impl FnMut(u32) -> Option<u64> {
        move |msr| {
            let p2_allowed1: u64 = 0x1 | 0x2 | 0x8 | 0x20 | 0x80 | if haswell { 0x4000 | 0x2000 } else { 0 };
            Some(match msr {
                IA32_VMX_BASIC => 0x2B | (0x1000 << 32) | (1 << 55) | (6 << 50),
                IA32_VMX_TRUE_PINBASED_CTLS => 0x16 | (0x7F << 32),
                IA32_VMX_TRUE_PROCBASED_CTLS => 0x0401_E172 | (0xFFF9_FFFE << 32),
                IA32_VMX_PROCBASED_CTLS2 => p2_allowed1 << 32,
                IA32_VMX_MISC => 5,
                IA32_VMX_EPT_VPID_CAP => {
                    (1 << 6) | (1 << 14) | (1 << 16) | (1 << 20) | (1 << 25) | (1 << 26) | (1 << 32) | (0xF << 40)
                        | if haswell { (1 << 17) | (1 << 21) } else { 0 }
                }
                IA32_VMX_VMCS_ENUM => 0x19 << 1,
                _ => 0,
            })
        }
    }

    #[test]
    fn decodes_bochs_models() {
        let ivy = VmxCaps::read(bochs(false));
        assert_eq!(ivy.revision_id(), 0x2B);
        assert_eq!(ivy.vmcs_size(), 0x1000);
        assert!(ivy.true_controls() && ivy.ept() && ivy.vpid() && ivy.unrestricted_guest());
        assert!(!ivy.vmcs_shadowing() && !ivy.ept_ad() && !ivy.ept_1g_pages());
        assert!(ivy.preemption_timer());
        assert_eq!(ivy.preemption_timer_rate(), 5);
        let hsw = VmxCaps::read(bochs(true));
        assert!(hsw.vmcs_shadowing() && hsw.ept_ad() && hsw.ept_1g_pages() && hsw.vmfunc());
    }

    #[test]
    fn report_keys_and_values() {
        let hsw = VmxCaps::read(bochs(true));
        let r = hsw.report();
        let get = |k: &str| format!("{}", r.iter().find(|(key, _)| *key == k).unwrap().1);
        assert_eq!(get("vmcs revision id"), "0x2b");
        assert_eq!(get("vmcs shadowing"), "yes");
        assert_eq!(get("preemption timer"), "yes, tick = TSC/32");
        assert_eq!(get("invept"), "yes, single-context all-context");
        assert_eq!(get("invvpid"), "yes, individual-address single-context all-context single-context-retaining-globals");
        assert_eq!(get("vmcs enum max index"), "0x19");
        let ivy = VmxCaps::read(bochs(false));
        assert_eq!(format!("{}", ivy.report()[6].1), "no");
    }

    #[test]
    fn missing_msrs_mean_absent_features() {
        let none = VmxCaps::read(|_| None);
        assert!(!none.ept() && !none.vmcs_shadowing() && none.revision_id() == 0);
    }

    #[test]
    fn unavailable_reasons() {
        assert!(vmx_unavailable_reason(0, b"AuthenticAMD", None).unwrap().contains("AMD"));
        assert!(vmx_unavailable_reason(0, b"GenuineIntel", Some(5)).unwrap().contains("CPUID"));
        assert!(vmx_unavailable_reason(1 << 5, b"GenuineIntel", Some(1)).unwrap().contains("locked"));
        assert_eq!(vmx_unavailable_reason(1 << 5, b"GenuineIntel", Some(5)), None);
        assert_eq!(vmx_unavailable_reason(1 << 5, b"GenuineIntel", Some(0)), None);
    }
}
