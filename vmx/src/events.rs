//! Where L1's pending interrupts and NMIs go while its L2 runs (KVM's
//! vmx_check_nested_events): a VM exit to L1 when vmcs12 asks for one
//! (SDM 26.2: "external-interrupt exiting", "NMI exiting"), else delivery
//! into L2 by VMCS0-2 event injection (SDM 27.6) when L2 can take the
//! event, else an interrupt- or NMI-window exit of L0's own (SDM 26.7.5,
//! 26.7.6) to inject it when it can. Pure: the kernel passes what VMCS0-2
//! and L1's platform hold, the tests a table.

use crate::controls::pin;

/// Interruptibility-state bits (SDM 25.4.2, table 25-3).
pub const BLOCK_STI: u32 = 1 << 0;
pub const BLOCK_MOVSS: u32 = 1 << 1;
pub const BLOCK_NMI: u32 = 1 << 3;

/// Interruption-information types (SDM 25.8.3, 27.2.2).
pub const TYPE_EXTERNAL: u32 = 0;
pub const TYPE_NMI: u32 = 2;
pub const VALID: u32 = 1 << 31;

/// What L0 knows before an entry of VMCS0-2.
#[derive(Clone, Copy, Debug, Default)]
pub struct L2Events {
    /// vmcs12's pin-based controls.
    pub pin12: u32,
    /// vmcs12's exit control "acknowledge interrupt on exit".
    pub ack_on_exit: bool,
    /// VMCS0-2's VM-entry interruption information is valid already: an
    /// event L1 injects, or one L0 re-injects after an exit that interrupted
    /// its delivery.
    pub injecting: bool,
    /// L2's RFLAGS.IF.
    pub rflags_if: bool,
    /// L2's interruptibility state (VMCS0-2).
    pub interruptibility: u32,
    /// VMCS0-2 runs with virtual NMIs: "blocking by NMI" is L2's NMI
    /// blocking and NMI-window exiting is available to L0.
    pub vnmi02: bool,
    /// L1's platform has an NMI pending.
    pub nmi: bool,
    /// The vector L1's interrupt controller would deliver next (its TPR
    /// and in-service priority already applied), if any.
    pub irq: Option<u8>,
}

/// What to do with the highest-priority pending event.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Action {
    #[default]
    None,
    /// Exit 0 to L1 with interruption information type 2 vector 2 (SDM 27.2.2).
    ExitNmi,
    /// Exit 1 to L1; `ack`: "acknowledge interrupt on exit", so the vector
    /// goes in the exit interruption information and L1's APIC acknowledges
    /// it; else the information is invalid and the interrupt stays pending.
    ExitInterrupt { vector: u8, ack: bool },
    /// Inject an NMI into L2 (type 2, vector 2).
    InjectNmi,
    /// Inject the external interrupt into L2 (type 0).
    InjectInterrupt(u8),
}

/// The decision for one entry of VMCS0-2.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Plan {
    pub action: Action,
    /// L0's own interrupt-window exiting on VMCS0-2.
    pub irq_window: bool,
    /// L0's own NMI-window exiting on VMCS0-2 (only with `vnmi02`).
    pub nmi_window: bool,
    /// Enter with the VMX-preemption timer at 0: the injected event is
    /// delivered, then L2 exits before its first instruction (SDM 26.7.4)
    /// and the exit to L1 the pending event asks for follows (KVM's
    /// block_nested_events with request_immediate_exit).
    pub immediate_exit: bool,
}

/// Priority (SDM 6.9 and KVM's vmx_check_nested_events): an event already
/// being injected into L2 first, then NMIs, then external interrupts. An
/// event that exits to L1 is not held back by L2's RFLAGS.IF or its
/// interrupt shadow (KVM's vmx_interrupt_blocked/vmx_nmi_blocked in guest
/// mode with the exit wanted); one injected into L2 is.
pub fn plan(s: &L2Events) -> Plan {
    let nmi_exit = s.pin12 & pin::NMI_EXITING != 0;
    let intr_exit = s.pin12 & pin::EXTERNAL_INTERRUPT_EXITING != 0;
    let mut p = Plan::default();
    if s.injecting {
        if (s.nmi && nmi_exit) || (s.irq.is_some() && intr_exit) {
            p.immediate_exit = true;
            return p;
        }
        if s.nmi {
            if s.vnmi02 {
                p.nmi_window = true;
            } else {
                p.irq_window = true;
            }
        }
        p.irq_window |= s.irq.is_some();
        return p;
    }
    if s.nmi {
        if nmi_exit {
            p.action = Action::ExitNmi;
            return p;
        }
        if s.interruptibility & (BLOCK_STI | BLOCK_MOVSS | BLOCK_NMI) == 0 {
            p.action = Action::InjectNmi;
            p.irq_window = s.irq.is_some();
            return p;
        }
        if s.vnmi02 && s.interruptibility & BLOCK_NMI != 0 {
            p.nmi_window = true;
        } else {
            p.irq_window = true;
        }
    }
    if let Some(vector) = s.irq {
        if intr_exit {
            p.action = Action::ExitInterrupt { vector, ack: s.ack_on_exit };
        } else if s.rflags_if && s.interruptibility & (BLOCK_STI | BLOCK_MOVSS) == 0 {
            p.action = Action::InjectInterrupt(vector);
        } else {
            p.irq_window = true;
        }
    }
    p
}

/// The exit interruption information of a synthetic exit 1 (SDM 27.2.2):
/// valid, type 0, the vector, with "acknowledge interrupt on exit"; else invalid.
pub fn exit_interrupt_info(vector: u8, ack: bool) -> u32 {
    if ack { VALID | (TYPE_EXTERNAL << 8) | u32::from(vector) } else { 0 }
}

/// The exit interruption information of an NMI exit (reason 0): valid,
/// type 2, vector 2 (SDM 27.2.2).
pub const NMI_EXIT_INFO: u32 = VALID | (TYPE_NMI << 8) | 2;

/// The VM-entry interruption information that re-injects the event whose
/// delivery an exit interrupted (SDM 28.2.4 IDT-vectoring information,
/// 27.6.1.1): valid, type, vector and deliver-error-code as saved; bit 12
/// (undefined there) and the reserved bits cleared. `None` if nothing was
/// being delivered.
pub fn reinjection(idt_vectoring: u32) -> Option<u32> {
    (idt_vectoring & VALID != 0).then_some(idt_vectoring & 0x8000_0FFF)
}

/// Software interrupts, privileged and software exceptions (types 4-6)
/// need their instruction length when (re-)injected (SDM 27.6.1.3).
pub fn needs_length(info: u32) -> bool {
    matches!((info >> 8) & 7, 4..=6)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn base() -> L2Events {
        L2Events { rflags_if: true, vnmi02: true, ..Default::default() }
    }

    #[test]
    fn nothing_pending_plans_nothing_whatever_l2_state() {
        // L0 skips reading L2's state when nothing is pending for L1
        // (l1/events.rs, quiet entries): the plan must not depend on it.
        for bits in 0..64u32 {
            let s = L2Events {
                pin12: if bits & 1 != 0 { pin::EXTERNAL_INTERRUPT_EXITING | pin::NMI_EXITING } else { 0 },
                ack_on_exit: bits & 2 != 0,
                injecting: bits & 4 != 0,
                rflags_if: bits & 8 != 0,
                interruptibility: if bits & 16 != 0 { BLOCK_STI | BLOCK_MOVSS | BLOCK_NMI } else { 0 },
                vnmi02: bits & 32 != 0,
                nmi: false,
                irq: None,
            };
            assert_eq!(plan(&s), Plan::default(), "{bits:#b}");
        }
    }

    #[test]
    fn interrupt_exits_to_l1_with_external_interrupt_exiting() {
        let mut s = base();
        s.pin12 = pin::EXTERNAL_INTERRUPT_EXITING;
        s.irq = Some(0x40);
        s.ack_on_exit = true;
        assert_eq!(plan(&s).action, Action::ExitInterrupt { vector: 0x40, ack: true });
        // Neither RFLAGS.IF nor the shadow hold back an exit.
        s.rflags_if = false;
        s.interruptibility = BLOCK_STI;
        s.ack_on_exit = false;
        assert_eq!(plan(&s).action, Action::ExitInterrupt { vector: 0x40, ack: false });
        assert_eq!(exit_interrupt_info(0x40, true), 0x8000_0040);
        assert_eq!(exit_interrupt_info(0x40, false), 0);
    }

    #[test]
    fn interrupt_goes_into_l2_without_exiting() {
        let mut s = base();
        s.irq = Some(0x41);
        assert_eq!(plan(&s), Plan { action: Action::InjectInterrupt(0x41), ..Default::default() });
        s.rflags_if = false;
        assert_eq!(plan(&s), Plan { irq_window: true, ..Default::default() });
        s.rflags_if = true;
        s.interruptibility = BLOCK_MOVSS;
        assert_eq!(plan(&s), Plan { irq_window: true, ..Default::default() });
    }

    #[test]
    fn an_event_being_injected_goes_first() {
        let mut s = base();
        s.injecting = true;
        s.irq = Some(0x40);
        assert_eq!(plan(&s), Plan { irq_window: true, ..Default::default() });
        s.pin12 = pin::EXTERNAL_INTERRUPT_EXITING;
        assert_eq!(plan(&s), Plan { immediate_exit: true, ..Default::default() });
        s.pin12 = 0;
        s.irq = None;
        s.nmi = true;
        assert_eq!(plan(&s), Plan { nmi_window: true, ..Default::default() });
        s.vnmi02 = false;
        assert_eq!(plan(&s), Plan { irq_window: true, ..Default::default() });
        s.pin12 = pin::NMI_EXITING;
        assert_eq!(plan(&s), Plan { immediate_exit: true, ..Default::default() });
    }

    #[test]
    fn nmis_before_interrupts() {
        let mut s = base();
        s.nmi = true;
        s.irq = Some(0x40);
        s.pin12 = pin::NMI_EXITING | pin::EXTERNAL_INTERRUPT_EXITING;
        assert_eq!(plan(&s).action, Action::ExitNmi);
        s.pin12 = 0;
        assert_eq!(plan(&s), Plan { action: Action::InjectNmi, irq_window: true, ..Default::default() });
        // Blocked by NMI: L0 waits for L2's IRET (NMI window); the interrupt
        // may still go in meanwhile.
        s.interruptibility = BLOCK_NMI;
        assert_eq!(plan(&s), Plan { action: Action::InjectInterrupt(0x40), nmi_window: true, ..Default::default() });
        s.pin12 = pin::EXTERNAL_INTERRUPT_EXITING;
        assert_eq!(plan(&s), Plan { action: Action::ExitInterrupt { vector: 0x40, ack: false }, nmi_window: true, ..Default::default() });
    }

    #[test]
    fn reinjection_keeps_the_event() {
        assert_eq!(reinjection(0), None);
        assert_eq!(reinjection(0x8000_1B0E), Some(0x8000_0B0E));
        assert!(needs_length(0x8000_0480));
        assert!(!needs_length(0x8000_0030));
    }
}
