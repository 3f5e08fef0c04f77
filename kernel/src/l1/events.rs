//! L1's interrupts and NMIs while its L2 runs (issue 10, KVM's
//! vmx_check_nested_events and nested_vmx_vmexit(EXIT_REASON_EXTERNAL_INTERRUPT)).
//!
//! Before every entry of VMCS0-2 L0 advances L1's PC as it does before an
//! entry of VMCS0-1, then asks [`nvmx_vmx::events::plan`] where its pending
//! event goes:
//! - an exit to L1 when vmcs12 asks for one: reason 1 for an interrupt with
//!   "external-interrupt exiting" (SDM 26.2), the vector in the exit
//!   interruption information and acknowledged in L1's APIC under
//!   "acknowledge interrupt on exit" (SDM 27.2.2), else left pending; reason
//!   0 with type 2 vector 2 for an NMI with "NMI exiting";
//! - else into L2 by VMCS0-2's event injection (SDM 27.6) when L2 can take
//!   it, or L0's own interrupt/NMI window on VMCS0-2 (SDM 26.7.5-26.7.6),
//!   which reaches L1 only if vmcs12 asks for that window too;
//! - after an event already being injected (L1's, or one L0 re-injects):
//!   that event first, then an immediate exit (preemption timer 0, SDM
//!   26.7.4) to take the exit L1 asked for right after its delivery.
//!
//! An L2 exit that L0 handles itself and that interrupted an event's
//! delivery (IDT-vectoring information, SDM 28.2.4) has that event
//! re-injected on the next entry of VMCS0-2 ([`Vcpu::l2_reinject`]).
//!
//! The VMX-preemption timer of VMCS0-2 is bounded by L1's next device
//! deadline ([`Vcpu::l2_timer_ticks`]) so L1's timer fires on time while L2
//! runs, also with L2 halted (HLT without HLT exiting leaves VMCS0-2 in
//! activity state HLT; an injected event wakes it).

use nvmx_vmx::controls::{exit as exitc, pin, proc1};
use nvmx_vmx::events::{self, Action, L2Events};
use nvmx_vmx::field::Field as F;

use super::{L1State, Vcpu};
use crate::arch::cpu;
use crate::vmx::run::{self, vmread, vmwrite};

/// Guest activity states (SDM 25.4.2).
const ACTIVE: u64 = 0;
const HLT: u64 = 1;

/// What follows the event check before an entry of VMCS0-2.
pub(super) enum L2Next {
    /// Enter VMCS0-2.
    Enter,
    /// An exit to L1 was made up (`reason`): L1 runs next.
    Exited { reason: u32 },
    /// L1's machine ended (power-off, reset, exit convention) or L0 stops it.
    End(L1State),
}

impl Vcpu {
    /// Before every entry of VMCS0-2 (VMCS0-2 current).
    pub(super) fn l2_before_entry(&mut self) -> L2Next {
        // What the last pass before an entry of VMCS0-1 decided is not
        // L2's (`pio_fast` is for L1's exits): L1's next needs a pass.
        self.platform.pass_until = 0;
        // The PC needs no pass while quiet (see `L1Platform::quiet_until`):
        // then nothing is pending for L1.
        let quiet = self.platform_quiet(cpu::rdtsc());
        if quiet.is_none() {
            let p = self.prof.enter(crate::stats::Phase::Platform);
            if let Some(end) = self.platform_advance() {
                return L2Next::End(end);
            }
            self.prof.leave(p);
        }
        let proc12 = self.nested.field12(F::CPU_BASED_VM_EXEC_CONTROL) as u32;
        // Quiet: no NMI and no interrupt pending for L1, and `events::plan`
        // without either is empty whatever L2's state (host-tested), so
        // that state is not read.
        let mut pending = false;
        let plan = if quiet.is_some() {
            events::Plan::default()
        } else {
            let pin12 = self.nested.field12(F::PIN_BASED_VM_EXEC_CONTROL) as u32;
            let exit12 = self.nested.field12(F::VM_EXIT_CONTROLS) as u32;
            let pc = &self.platform.pc;
            let s = L2Events {
                pin12,
                ack_on_exit: exit12 & exitc::ACK_INTERRUPT_ON_EXIT != 0,
                injecting: vmread(F::VM_ENTRY_INTR_INFO_FIELD) as u32 & events::VALID != 0,
                rflags_if: vmread(F::GUEST_RFLAGS) & (1 << 9) != 0,
                interruptibility: vmread(F::GUEST_INTERRUPTIBILITY_INFO) as u32,
                vnmi02: vmread(F::PIN_BASED_VM_EXEC_CONTROL) as u32 & pin::VIRTUAL_NMIS != 0,
                nmi: pc.pending_nmi(),
                irq: pc.pending_interrupt(),
            };
            pending = s.nmi || s.irq.is_some();
            events::plan(&s)
        };
        match plan.action {
            Action::None => {}
            Action::ExitNmi => {
                self.platform.pc.acknowledge_nmi();
                return self.exit_to_l1(0, events::NMI_EXIT_INFO);
            }
            Action::ExitInterrupt { vector, ack } => {
                if ack {
                    self.platform.pc.acknowledge(vector);
                }
                return self.exit_to_l1(1, events::exit_interrupt_info(vector, ack));
            }
            Action::InjectNmi => {
                vmwrite(F::VM_ENTRY_INTR_INFO_FIELD, u64::from(events::VALID | (events::TYPE_NMI << 8) | 2));
                self.platform.pc.acknowledge_nmi();
                self.platform.l2_injected += 1;
                self.wake_l2();
            }
            Action::InjectInterrupt(vector) => {
                vmwrite(F::VM_ENTRY_INTR_INFO_FIELD, u64::from(events::VALID | u32::from(vector)));
                self.platform.pc.acknowledge(vector);
                self.platform.l2_injected += 1;
                self.wake_l2();
            }
        }
        // The windows: L1's (vmcs12) and L0's own; an exit of a window L1
        // did not ask for is L0's (`l1_wants_exit` reads vmcs12 only).
        let mask = proc1::INTERRUPT_WINDOW_EXITING | proc1::NMI_WINDOW_EXITING;
        let mut want = proc12 & mask;
        if plan.irq_window {
            want |= proc1::INTERRUPT_WINDOW_EXITING;
        }
        if plan.nmi_window {
            want |= proc1::NMI_WINDOW_EXITING;
        }
        let ctl = vmread(F::CPU_BASED_VM_EXEC_CONTROL) as u32;
        if ctl & mask != want {
            vmwrite(F::CPU_BASED_VM_EXEC_CONTROL, ((ctl & !mask) | want).into());
        }
        // L0's need (0: exit at once) composed with vmcs12's own timer.
        let ticks = match quiet {
            _ if plan.immediate_exit => 0,
            Some(ticks) => ticks,
            None => {
                let (ticks, now, deadline) = self.l2_timer_ticks();
                self.platform.quiet_until = if pending { 0 } else { self.quiet_bound(now, deadline) };
                ticks
            }
        };
        self.arm_vmcs02_preemption_timer(ticks);
        L2Next::Enter
    }

    /// The VMX-preemption timer value for an entry of VMCS0-2: L0's polling
    /// bound, or less, so L1's next device deadline (its LAPIC timer, the
    /// PIT…) is acted on when it falls due while L2 runs (rounded up: an
    /// exit before the deadline finds nothing due and costs a second one).
    /// Also returns the TSC it was computed at and the deadline.
    pub(super) fn l2_timer_ticks(&self) -> (u64, u64, Option<u64>) {
        let cap = run::PREEMPT_TICKS;
        let deadline = self.platform.pc.next_deadline_tsc();
        let now = cpu::rdtsc();
        let ticks = match deadline {
            Some(d) => d.saturating_sub(now).div_ceil(1 << self.platform.timer_rate).clamp(1, cap),
            None => cap,
        };
        (ticks, now, deadline)
    }

    /// After an L2 exit L0 handled itself (L2 resumes): an event whose
    /// delivery the exit interrupted is injected again as it was (SDM
    /// 28.2.4, 27.6.1.1; KVM's vmx_complete_interrupts), unless L0 injects
    /// something for this exit already.
    pub(super) fn l2_reinject(&mut self) {
        let Some(info) = events::reinjection(vmread(F::IDT_VECTORING_INFO_FIELD) as u32) else { return };
        if vmread(F::VM_ENTRY_INTR_INFO_FIELD) as u32 & events::VALID != 0 {
            return;
        }
        if info & (1 << 11) != 0 {
            vmwrite(F::VM_ENTRY_EXCEPTION_ERROR_CODE, vmread(F::IDT_VECTORING_ERROR_CODE));
        }
        if events::needs_length(info) {
            vmwrite(F::VM_ENTRY_INSTRUCTION_LEN, vmread(F::VM_EXIT_INSTRUCTION_LEN));
        }
        vmwrite(F::VM_ENTRY_INTR_INFO_FIELD, info.into());
    }

    /// An event goes into a halted L2: it leaves HLT with the delivery
    /// (SDM 25.4.2; as `wake` for L1).
    fn wake_l2(&mut self) {
        if vmread(F::GUEST_ACTIVITY_STATE) == HLT {
            vmwrite(F::GUEST_ACTIVITY_STATE, ACTIVE);
        }
    }

    /// The made-up exit to L1 (reason 0 or 1, SDM 27.2.2).
    fn exit_to_l1(&mut self, reason: u32, info: u32) -> L2Next {
        self.platform.l2_exits += 1;
        match self.reflect_synthetic(reason, info) {
            Ok(()) => L2Next::Exited { reason },
            Err(why) => L2Next::End(L1State::Stopped(why)),
        }
    }
}
