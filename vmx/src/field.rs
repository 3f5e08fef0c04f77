//! The one VMCS field table (SDM Vol. 3C Appendix B, "Field encoding in
//! VMCS"). Every other view of the fields — names for dumps, the dump groups,
//! width and type checks for VMREAD/VMWRITE, a later vmcs12 layout — is
//! derived from the list in [`fields!`] below, so a field is added in one place.
//!
//! Encoding (SDM 25.11.2): bit 0 access type (0 full, 1 high), bits 9:1
//! index, bits 11:10 type, bits 14:13 width; other bits are 0.

/// Width of a field (encoding bits 14:13).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Width {
    U16,
    U64,
    U32,
    Natural,
}

/// Type of a field (encoding bits 11:10).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Control,
    /// VM-exit information and other read-only data.
    ReadOnly,
    Guest,
    Host,
}

/// Dump groups, as Linux's `dump_vmcs()` prints them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Group {
    GuestState,
    HostState,
    Controls,
    ExitInfo,
}

/// Full or high access to a 64-bit field (encoding bit 0).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    Full,
    High,
}

/// Why an encoding names no field.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EncodingError {
    /// Bits 31:15 or 12 set.
    ReservedBits,
    /// A "high" access to a field that is not 64 bits wide.
    HighOfNon64,
    /// No such field.
    Unknown,
}

macro_rules! fields {
    ($($name:ident = $enc:literal,)*) => {
        /// A VMCS field, named as in Linux (`arch/x86/include/asm/vmx.h`).
        #[allow(non_camel_case_types)]
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        pub enum Field {
            $($name,)*
        }

        /// Every field, in table order (`ALL[f as usize] == f`).
        pub static ALL: &[Field] = &[$(Field::$name,)*];

        /// The number of fields in the table.
        pub const COUNT: usize = [$(Field::$name,)*].len();

        /// Full-access encoding → index in [`ALL`] (`u8::MAX`: no field),
        /// keyed by [`lookup_key`]; built at compile time from the table.
        static BY_ENCODING: [u8; 1 << 13] = {
            let encodings = [$($enc,)*];
            assert!(encodings.len() < u8::MAX as usize);
            let mut table = [u8::MAX; 1 << 13];
            let mut i = 0;
            while i < encodings.len() {
                table[lookup_key(encodings[i])] = i as u8;
                i += 1;
            }
            table
        };

        impl Field {
            /// The full-access encoding.
            #[inline]
            pub const fn encoding(self) -> u32 {
                match self {
                    $(Field::$name => $enc,)*
                }
            }
            /// The name used in dumps.
            pub const fn name(self) -> &'static str {
                match self {
                    $(Field::$name => stringify!($name),)*
                }
            }
        }
    };
}

fields! {
    // 16-bit control fields
    VIRTUAL_PROCESSOR_ID = 0x0000,
    POSTED_INTR_NV = 0x0002,
    EPTP_INDEX = 0x0004,
    // 16-bit guest-state fields
    GUEST_ES_SELECTOR = 0x0800,
    GUEST_CS_SELECTOR = 0x0802,
    GUEST_SS_SELECTOR = 0x0804,
    GUEST_DS_SELECTOR = 0x0806,
    GUEST_FS_SELECTOR = 0x0808,
    GUEST_GS_SELECTOR = 0x080A,
    GUEST_LDTR_SELECTOR = 0x080C,
    GUEST_TR_SELECTOR = 0x080E,
    GUEST_INTR_STATUS = 0x0810,
    GUEST_PML_INDEX = 0x0812,
    // 16-bit host-state fields
    HOST_ES_SELECTOR = 0x0C00,
    HOST_CS_SELECTOR = 0x0C02,
    HOST_SS_SELECTOR = 0x0C04,
    HOST_DS_SELECTOR = 0x0C06,
    HOST_FS_SELECTOR = 0x0C08,
    HOST_GS_SELECTOR = 0x0C0A,
    HOST_TR_SELECTOR = 0x0C0C,
    // 64-bit control fields
    IO_BITMAP_A = 0x2000,
    IO_BITMAP_B = 0x2002,
    MSR_BITMAP = 0x2004,
    VM_EXIT_MSR_STORE_ADDR = 0x2006,
    VM_EXIT_MSR_LOAD_ADDR = 0x2008,
    VM_ENTRY_MSR_LOAD_ADDR = 0x200A,
    EXECUTIVE_VMCS_POINTER = 0x200C,
    PML_ADDRESS = 0x200E,
    TSC_OFFSET = 0x2010,
    VIRTUAL_APIC_PAGE_ADDR = 0x2012,
    APIC_ACCESS_ADDR = 0x2014,
    POSTED_INTR_DESC_ADDR = 0x2016,
    VM_FUNCTION_CONTROL = 0x2018,
    EPT_POINTER = 0x201A,
    EOI_EXIT_BITMAP0 = 0x201C,
    EOI_EXIT_BITMAP1 = 0x201E,
    EOI_EXIT_BITMAP2 = 0x2020,
    EOI_EXIT_BITMAP3 = 0x2022,
    EPTP_LIST_ADDRESS = 0x2024,
    VMREAD_BITMAP = 0x2026,
    VMWRITE_BITMAP = 0x2028,
    VE_INFORMATION_ADDRESS = 0x202A,
    XSS_EXIT_BITMAP = 0x202C,
    ENCLS_EXITING_BITMAP = 0x202E,
    TSC_MULTIPLIER = 0x2032,
    // 64-bit read-only data field
    GUEST_PHYSICAL_ADDRESS = 0x2400,
    // 64-bit guest-state fields
    VMCS_LINK_POINTER = 0x2800,
    GUEST_IA32_DEBUGCTL = 0x2802,
    GUEST_IA32_PAT = 0x2804,
    GUEST_IA32_EFER = 0x2806,
    GUEST_IA32_PERF_GLOBAL_CTRL = 0x2808,
    GUEST_PDPTR0 = 0x280A,
    GUEST_PDPTR1 = 0x280C,
    GUEST_PDPTR2 = 0x280E,
    GUEST_PDPTR3 = 0x2810,
    GUEST_BNDCFGS = 0x2812,
    // 64-bit host-state fields
    HOST_IA32_PAT = 0x2C00,
    HOST_IA32_EFER = 0x2C02,
    HOST_IA32_PERF_GLOBAL_CTRL = 0x2C04,
    // 32-bit control fields
    PIN_BASED_VM_EXEC_CONTROL = 0x4000,
    CPU_BASED_VM_EXEC_CONTROL = 0x4002,
    EXCEPTION_BITMAP = 0x4004,
    PAGE_FAULT_ERROR_CODE_MASK = 0x4006,
    PAGE_FAULT_ERROR_CODE_MATCH = 0x4008,
    CR3_TARGET_COUNT = 0x400A,
    VM_EXIT_CONTROLS = 0x400C,
    VM_EXIT_MSR_STORE_COUNT = 0x400E,
    VM_EXIT_MSR_LOAD_COUNT = 0x4010,
    VM_ENTRY_CONTROLS = 0x4012,
    VM_ENTRY_MSR_LOAD_COUNT = 0x4014,
    VM_ENTRY_INTR_INFO_FIELD = 0x4016,
    VM_ENTRY_EXCEPTION_ERROR_CODE = 0x4018,
    VM_ENTRY_INSTRUCTION_LEN = 0x401A,
    TPR_THRESHOLD = 0x401C,
    SECONDARY_VM_EXEC_CONTROL = 0x401E,
    PLE_GAP = 0x4020,
    PLE_WINDOW = 0x4022,
    // 32-bit read-only data fields
    VM_INSTRUCTION_ERROR = 0x4400,
    VM_EXIT_REASON = 0x4402,
    VM_EXIT_INTR_INFO = 0x4404,
    VM_EXIT_INTR_ERROR_CODE = 0x4406,
    IDT_VECTORING_INFO_FIELD = 0x4408,
    IDT_VECTORING_ERROR_CODE = 0x440A,
    VM_EXIT_INSTRUCTION_LEN = 0x440C,
    VMX_INSTRUCTION_INFO = 0x440E,
    // 32-bit guest-state fields
    GUEST_ES_LIMIT = 0x4800,
    GUEST_CS_LIMIT = 0x4802,
    GUEST_SS_LIMIT = 0x4804,
    GUEST_DS_LIMIT = 0x4806,
    GUEST_FS_LIMIT = 0x4808,
    GUEST_GS_LIMIT = 0x480A,
    GUEST_LDTR_LIMIT = 0x480C,
    GUEST_TR_LIMIT = 0x480E,
    GUEST_GDTR_LIMIT = 0x4810,
    GUEST_IDTR_LIMIT = 0x4812,
    GUEST_ES_AR_BYTES = 0x4814,
    GUEST_CS_AR_BYTES = 0x4816,
    GUEST_SS_AR_BYTES = 0x4818,
    GUEST_DS_AR_BYTES = 0x481A,
    GUEST_FS_AR_BYTES = 0x481C,
    GUEST_GS_AR_BYTES = 0x481E,
    GUEST_LDTR_AR_BYTES = 0x4820,
    GUEST_TR_AR_BYTES = 0x4822,
    GUEST_INTERRUPTIBILITY_INFO = 0x4824,
    GUEST_ACTIVITY_STATE = 0x4826,
    GUEST_SMBASE = 0x4828,
    GUEST_SYSENTER_CS = 0x482A,
    VMX_PREEMPTION_TIMER_VALUE = 0x482E,
    // 32-bit host-state field
    HOST_IA32_SYSENTER_CS = 0x4C00,
    // Natural-width control fields
    CR0_GUEST_HOST_MASK = 0x6000,
    CR4_GUEST_HOST_MASK = 0x6002,
    CR0_READ_SHADOW = 0x6004,
    CR4_READ_SHADOW = 0x6006,
    CR3_TARGET_VALUE0 = 0x6008,
    CR3_TARGET_VALUE1 = 0x600A,
    CR3_TARGET_VALUE2 = 0x600C,
    CR3_TARGET_VALUE3 = 0x600E,
    // Natural-width read-only data fields
    EXIT_QUALIFICATION = 0x6400,
    EXIT_IO_RCX = 0x6402,
    EXIT_IO_RSI = 0x6404,
    EXIT_IO_RDI = 0x6406,
    EXIT_IO_RIP = 0x6408,
    GUEST_LINEAR_ADDRESS = 0x640A,
    // Natural-width guest-state fields
    GUEST_CR0 = 0x6800,
    GUEST_CR3 = 0x6802,
    GUEST_CR4 = 0x6804,
    GUEST_ES_BASE = 0x6806,
    GUEST_CS_BASE = 0x6808,
    GUEST_SS_BASE = 0x680A,
    GUEST_DS_BASE = 0x680C,
    GUEST_FS_BASE = 0x680E,
    GUEST_GS_BASE = 0x6810,
    GUEST_LDTR_BASE = 0x6812,
    GUEST_TR_BASE = 0x6814,
    GUEST_GDTR_BASE = 0x6816,
    GUEST_IDTR_BASE = 0x6818,
    GUEST_DR7 = 0x681A,
    GUEST_RSP = 0x681C,
    GUEST_RIP = 0x681E,
    GUEST_RFLAGS = 0x6820,
    GUEST_PENDING_DBG_EXCEPTIONS = 0x6822,
    GUEST_SYSENTER_ESP = 0x6824,
    GUEST_SYSENTER_EIP = 0x6826,
    // Natural-width host-state fields
    HOST_CR0 = 0x6C00,
    HOST_CR3 = 0x6C02,
    HOST_CR4 = 0x6C04,
    HOST_FS_BASE = 0x6C06,
    HOST_GS_BASE = 0x6C08,
    HOST_TR_BASE = 0x6C0A,
    HOST_GDTR_BASE = 0x6C0C,
    HOST_IDTR_BASE = 0x6C0E,
    HOST_IA32_SYSENTER_ESP = 0x6C10,
    HOST_IA32_SYSENTER_EIP = 0x6C12,
    HOST_RSP = 0x6C14,
    HOST_RIP = 0x6C16,
}

impl Field {
    /// Width from encoding bits 14:13.
    #[inline]
    pub const fn width(self) -> Width {
        match (self.encoding() >> 13) & 3 {
            0 => Width::U16,
            1 => Width::U64,
            2 => Width::U32,
            _ => Width::Natural,
        }
    }

    /// Type from encoding bits 11:10.
    #[inline]
    pub const fn kind(self) -> Kind {
        match (self.encoding() >> 10) & 3 {
            0 => Kind::Control,
            1 => Kind::ReadOnly,
            2 => Kind::Guest,
            _ => Kind::Host,
        }
    }

    /// The dump group (the type, named as `dump_vmcs` does).
    #[inline]
    pub const fn group(self) -> Group {
        match self.kind() {
            Kind::Control => Group::Controls,
            Kind::ReadOnly => Group::ExitInfo,
            Kind::Guest => Group::GuestState,
            Kind::Host => Group::HostState,
        }
    }

    /// Position in [`ALL`]: a dense index for per-field storage (a vmcs12
    /// can keep field `f` at byte offset `f.index() * 8`).
    /// (The enum's variants are declared in table order.)
    #[inline]
    pub const fn index(self) -> usize {
        self as usize
    }

    /// The field with full-access encoding `enc`, by table lookup: L0
    /// decodes every VMREAD/VMWRITE operand of L1 with it.
    pub fn from_encoding(enc: u32) -> Option<Field> {
        if enc & !0x6FFE != 0 {
            return None;
        }
        match BY_ENCODING[lookup_key(enc)] {
            u8::MAX => None,
            i => Some(ALL[usize::from(i)]),
        }
    }
}

/// A dense key for an encoding with bit 0, 12 and 31:15 clear: width,
/// type and index bits (13 bits).
const fn lookup_key(enc: u32) -> usize {
    ((((enc >> 13) & 3) << 11) | (((enc >> 10) & 3) << 9) | ((enc >> 1) & 0x1FF)) as usize
}

/// Decodes a VMREAD/VMWRITE operand into a field and access type (SDM 25.11.2).
pub fn decode(enc: u32) -> Result<(Field, Access), EncodingError> {
    if enc & !0x6FFF != 0 {
        return Err(EncodingError::ReservedBits);
    }
    let field = Field::from_encoding(enc & !1).ok_or(EncodingError::Unknown)?;
    if enc & 1 == 0 {
        Ok((field, Access::Full))
    } else if field.width() == Width::U64 {
        Ok((field, Access::High))
    } else {
        Err(EncodingError::HighOfNon64)
    }
}

/// The slot ([`Field::index`]) of the field a VMREAD/VMWRITE operand names,
/// with one lookup in the table built at compile time and no [`Field`]
/// made: `Some` exactly where [`decode`] answers `Ok` (L0's fast path for
/// emulated VMREAD/VMWRITE; width, type and "high" access are encoding bits).
#[inline(always)]
pub fn slot_of(enc: u32) -> Option<usize> {
    // "High" access (bit 0) exists only for 64-bit fields (bits 14:13 = 1).
    if enc & !0x6FFF != 0 || (enc & 1 != 0 && (enc >> 13) & 3 != 1) {
        return None;
    }
    match BY_ENCODING[lookup_key(enc & !1)] {
        u8::MAX => None,
        i => Some(usize::from(i)),
    }
}

/// The highest index (encoding bits 9:1) of any field, as IA32_VMX_VMCS_ENUM reports it.
pub fn highest_index() -> u32 {
    ALL.iter().map(|f| (f.encoding() >> 1) & 0x1FF).max().unwrap_or(0)
}

/// A set of fields, one bit per position in the field table: what changed
/// since VMCS0-2, the checks or the shadow VMCS last saw a vmcs12 (KVM's
/// dirty tracking), in a few words and without allocation.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FieldSet(pub [u64; 3]);

const _: () = assert!(COUNT <= 3 * 64, "FieldSet holds every field");

impl FieldSet {
    pub const EMPTY: FieldSet = FieldSet([0; 3]);

    /// The set of `fields`.
    pub const fn of(fields: &[Field]) -> FieldSet {
        let mut s = FieldSet::EMPTY;
        let mut i = 0;
        while i < fields.len() {
            let n = fields[i].index();
            s.0[n / 64] |= 1 << (n % 64);
            i += 1;
        }
        s
    }
    /// Every field of `group`.
    pub fn group(group: Group) -> FieldSet {
        let mut s = FieldSet::EMPTY;
        ALL.iter().filter(|f| f.group() == group).for_each(|&f| s.insert(f));
        s
    }
    #[inline]
    pub fn insert(&mut self, f: Field) {
        self.0[f.index() / 64] |= 1 << (f.index() % 64);
    }
    #[inline]
    pub fn contains(&self, f: Field) -> bool {
        self.0[f.index() / 64] & (1 << (f.index() % 64)) != 0
    }
    /// One OR of the words: comparing the array with `[0; 3]` compiles to
    /// a call of `memcmp` (a byte loop in `no_std`, ~60 instructions), and
    /// this test runs several times on every nested entry and exit.
    #[inline]
    pub fn is_empty(&self) -> bool {
        self.0[0] | self.0[1] | self.0[2] == 0
    }
    #[inline]
    pub fn union(self, o: FieldSet) -> FieldSet {
        FieldSet([self.0[0] | o.0[0], self.0[1] | o.0[1], self.0[2] | o.0[2]])
    }
    #[inline]
    pub fn intersect(self, o: FieldSet) -> FieldSet {
        FieldSet([self.0[0] & o.0[0], self.0[1] & o.0[1], self.0[2] & o.0[2]])
    }
    #[inline]
    pub fn minus(self, o: FieldSet) -> FieldSet {
        FieldSet([self.0[0] & !o.0[0], self.0[1] & !o.0[1], self.0[2] & !o.0[2]])
    }
    /// The fields in table order.
    pub fn iter(self) -> impl Iterator<Item = Field> {
        (0..3).flat_map(move |w| {
            let mut bits = self.0[w];
            core::iter::from_fn(move || {
                (bits != 0).then(|| {
                    let i = bits.trailing_zeros() as usize;
                    bits &= bits - 1;
                    ALL[w * 64 + i]
                })
            })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn well_known_encodings() {
        assert_eq!(Field::GUEST_RIP.encoding(), 0x681E);
        assert_eq!(Field::VM_EXIT_REASON.encoding(), 0x4402);
        assert_eq!(Field::VMCS_LINK_POINTER.encoding(), 0x2800);
        assert_eq!(Field::EPT_POINTER.encoding(), 0x201A);
        assert_eq!(Field::VIRTUAL_PROCESSOR_ID.encoding(), 0x0000);
        assert_eq!(Field::SECONDARY_VM_EXEC_CONTROL.encoding(), 0x401E);
        assert_eq!(Field::VMREAD_BITMAP.encoding(), 0x2026);
        assert_eq!(Field::VMWRITE_BITMAP.encoding(), 0x2028);
        assert_eq!(Field::HOST_RSP.encoding(), 0x6C14);
    }

    #[test]
    fn encodings_are_unique_full_and_reserved_bits_clear() {
        for (i, a) in ALL.iter().enumerate() {
            assert_eq!(a.encoding() & 1, 0, "{} is not a full encoding", a.name());
            assert_eq!(a.encoding() & !0x6FFF, 0, "{} has reserved bits", a.name());
            for b in &ALL[i + 1..] {
                assert_ne!(a.encoding(), b.encoding(), "{} and {}", a.name(), b.name());
            }
        }
    }

    #[test]
    fn widths_and_groups_follow_the_encoding() {
        assert_eq!(Field::GUEST_RIP.width(), Width::Natural);
        assert_eq!(Field::GUEST_RIP.group(), Group::GuestState);
        assert_eq!(Field::EPT_POINTER.width(), Width::U64);
        assert_eq!(Field::VM_EXIT_REASON.kind(), Kind::ReadOnly);
        assert_eq!(Field::HOST_CS_SELECTOR.width(), Width::U16);
        assert_eq!(Field::HOST_CS_SELECTOR.group(), Group::HostState);
        assert_eq!(Field::PIN_BASED_VM_EXEC_CONTROL.width(), Width::U32);
    }

    #[test]
    fn decode_full_high_and_errors() {
        assert_eq!(decode(0x201A), Ok((Field::EPT_POINTER, Access::Full)));
        assert_eq!(decode(0x201B), Ok((Field::EPT_POINTER, Access::High)));
        assert_eq!(decode(0x681F), Err(EncodingError::HighOfNon64));
        assert_eq!(decode(0x8000), Err(EncodingError::ReservedBits));
        assert_eq!(decode(0x1000), Err(EncodingError::ReservedBits));
        assert_eq!(decode(0x6830), Err(EncodingError::Unknown));
    }

    #[test]
    fn from_encoding_finds_every_field_and_nothing_else() {
        for &f in ALL {
            assert_eq!(Field::from_encoding(f.encoding()), Some(f));
        }
        let known = |e: u32| ALL.iter().any(|f| f.encoding() == e);
        for e in (0..0x8000u32).step_by(2).filter(|e| !known(*e)) {
            assert_eq!(Field::from_encoding(e), None, "{e:#x}");
        }
        assert_eq!(Field::from_encoding(Field::TSC_OFFSET.encoding() | 1), None, "high access is not a full encoding");
        assert_eq!(Field::from_encoding(0x1_6800), None);
    }

    #[test]
    fn index_is_dense_and_highest_index() {
        for (i, f) in ALL.iter().enumerate() {
            assert_eq!(f.index(), i);
        }
        // TSC_MULTIPLIER (0x2032) has index 0x19, the largest in the table.
        assert_eq!(highest_index(), 0x19);
    }

    #[test]
    fn slot_of_agrees_with_decode() {
        // Every encoding with bits 31:15 clear and a few beyond: `slot_of`
        // finds the field `decode` finds, and fails where it fails.
        for enc in (0..0x8000u32).chain([0x8000, 0x1_0000, 0x8000_0000, u32::MAX]) {
            match decode(enc) {
                Ok((f, _)) => assert_eq!(slot_of(enc), Some(f.index()), "{enc:#x}"),
                Err(_) => assert_eq!(slot_of(enc), None, "{enc:#x}"),
            }
        }
    }

    #[test]
    fn field_sets() {
        let a = FieldSet::of(&[Field::GUEST_RIP, Field::HOST_RIP, Field::VM_EXIT_REASON]);
        assert!(a.contains(Field::GUEST_RIP) && a.contains(Field::HOST_RIP) && !a.contains(Field::GUEST_RSP));
        let guest = FieldSet::group(Group::GuestState);
        assert_eq!(a.intersect(guest).iter().collect::<std::vec::Vec<_>>(), [Field::GUEST_RIP]);
        assert_eq!(a.minus(guest).iter().count(), 2);
        assert!(a.minus(a).is_empty() && !a.is_empty());
        assert_eq!(FieldSet::group(Group::HostState).union(guest).iter().count(), ALL.iter().filter(|f| matches!(f.kind(), Kind::Host | Kind::Guest)).count());
        // iter() is in table order and covers every word.
        let all = ALL.iter().fold(FieldSet::EMPTY, |mut s, &f| {
            s.insert(f);
            s
        });
        assert!(all.iter().eq(ALL.iter().copied()));
    }
}
