//! The selftest's VMX-preemption timer lines (SDM 26.5.1 "VMX-preemption
//! timer", 27.7.4 loading it at entry, 28.3.4 saving it at exit, A.6 its
//! rate in IA32_VMX_MISC[4:0]): an L2 that spins counting its own
//! instructions exits with reason 52 after about `value << rate` TSC ticks
//! of its own work. Bochs' TSC counts retired instructions, so "work" is
//! the L2's instruction count; the bounds are loose (2 %) so that the line
//! is the same bare and under nvmx, whose own timer exits of L2 pause
//! L1's count but cost a few L0 instructions of TSC each.

use core::arch::global_asm;
use core::fmt::Write;

use nvmx_vmx::caps::VmxCaps;
use nvmx_vmx::controls::{exit as exitc, pin};
use nvmx_vmx::field::Field as F;

use crate::console::Console;
use crate::selftest::{Tally, L2};
use crate::vmx;

global_asm!(
    r#"
    .global pt_spin, pt_loop
/* Two instructions per RAX count, forever: only an exit ends it. */
pt_spin:   inc rax
           jmp pt_spin
/* RCX iterations of one instruction each, then an exit (CPUID). */
pt_loop:   loop pt_loop
           cpuid
    "#
);

unsafe extern "C" {
    static pt_spin: u8;
    static pt_loop: u8;
}

/// `got` within 2 % (and 4 ticks) of `want`.
fn close(got: u64, want: u64) -> bool {
    got.abs_diff(want) <= want / 50 + 4
}

/// The preemption-timer lines, on `l2`'s VMCS (current); its controls are
/// left as they were.
pub(crate) fn checks(t: &mut Tally, caps: &VmxCaps, l2: &mut L2) {
    let offered = caps.preemption_timer() && caps.exit().1 & exitc::SAVE_PREEMPTION_TIMER != 0;
    t.expect("l2 preemption timer: activate and save controls offered", "offered", offered);
    if !offered {
        return;
    }
    let rate = caps.preemption_timer_rate();
    let (pin0, exit0) = (vmx::vmread(F::PIN_BASED_VM_EXEC_CONTROL), vmx::vmread(F::VM_EXIT_CONTROLS));
    let timer = |value: u64, save: bool| {
        vmx::vmwrite(F::PIN_BASED_VM_EXEC_CONTROL, pin0 | u64::from(pin::PREEMPTION_TIMER));
        let save = if save { u64::from(exitc::SAVE_PREEMPTION_TIMER) } else { 0 };
        vmx::vmwrite(F::VM_EXIT_CONTROLS, (exit0 & !u64::from(exitc::SAVE_PREEMPTION_TIMER)) | save);
        vmx::vmwrite(F::VMX_PREEMPTION_TIMER_VALUE, value);
    };
    let value = || vmx::vmread(F::VMX_PREEMPTION_TIMER_VALUE);
    // SDM 27.2.1.1: "save VMX-preemption timer value" needs the timer active.
    vmx::vmwrite(F::VM_EXIT_CONTROLS, exit0 | u64::from(exitc::SAVE_PREEMPTION_TIMER));
    // SAFETY: the snippet's address, only taken.
    let r = l2.run(unsafe { &pt_loop as *const u8 as u64 }, 1, 0);
    let error = if r.is_none() { vmx::try_vmread(F::VM_INSTRUCTION_ERROR.encoding()).unwrap_or(0) } else { 0 };
    vmx::vmwrite(F::VM_EXIT_CONTROLS, exit0);
    t.expect("l2 preemption timer: save without activate is VMfailValid(7)", "VMfailValid(7)", error == 7);
    // SAFETY (all): the snippets' addresses, only taken.
    let (spin, lp) = unsafe { (&pt_spin as *const u8 as u64, &pt_loop as *const u8 as u64) };
    let line = |t: &mut Tally, name: &str, ok: bool, detail: core::fmt::Arguments| {
        if !ok {
            let _ = writeln!(Console, "l1: selftest {name}: {detail}");
        }
        t.expect(name, "as the SDM says", ok);
    };

    // The count, at its rate, in L2 work; the value untouched without save.
    for v in [100u64, 5000] {
        timer(v, false);
        let e = l2.run(spin, 0, 0);
        let (reason, work) = e.as_ref().map_or((u64::MAX, 0), |e| (e.reason, (e.rax * 2) >> rate));
        let name = if v == 100 {
            "l2 preemption timer 100: exit 52 after about 100 ticks of L2 work, the value kept without save"
        } else {
            "l2 preemption timer 5000 (beyond L0's own 4096): exit 52 after about 5000 ticks of L2 work"
        };
        line(t, name, reason == 52 && close(work, v) && value() == v, format_args!("exit {reason:#x}, {work} ticks of work, value {}", value()));
    }

    // Zero: the exit comes before the L2's first instruction (SDM 26.7.4 ff).
    timer(0, true);
    let e = l2.run(spin, 0, 0);
    let (reason, rax) = e.as_ref().map_or((u64::MAX, u64::MAX), |e| (e.reason, e.rax));
    line(t, "l2 preemption timer 0: exit 52 before the L2's first instruction", reason == 52 && rax == 0 && value() == 0, format_args!("exit {reason:#x}, rax {rax}, value {}", value()));

    // Save: an exit at once stores about the whole count; resumed from the
    // stored count the timer runs out after the rest and stores 0.
    timer(1000, true);
    let e = l2.run(lp, 1, 0);
    let reason = e.as_ref().map_or(u64::MAX, |e| e.reason);
    let saved = value();
    line(t, "l2 preemption timer 1000 with save: exit 10 at once, about 1000 saved", reason == 10 && saved <= 1000 && saved >= 990, format_args!("exit {reason:#x}, saved {saved}"));
    let e = l2.run(spin, 0, 0);
    let (reason, work) = e.as_ref().map_or((u64::MAX, 0), |e| (e.reason, (e.rax * 2) >> rate));
    line(t, "l2 preemption timer resumed from the saved count: exit 52 after the rest, 0 saved", reason == 52 && close(work, saved) && value() == 0, format_args!("exit {reason:#x}, {work} ticks of work, saved {}", value()));

    // A long L2 run (past L0's own timer on every core) that ends in an exit
    // of its own: L1's count went down by the L2's work only.
    let n = 5000u64 << rate;
    timer(6000, true);
    let e = l2.run(lp, n, 0);
    let reason = e.as_ref().map_or(u64::MAX, |e| e.reason);
    let want = 1000;
    line(t, "l2 preemption timer 6000 with save, a loop of 5000 ticks: exit 10, about 1000 saved", reason == 10 && close(value(), want), format_args!("exit {reason:#x}, saved {}, about {want} expected", value()));

    // Without the pin control no exit 52 ever reaches L1.
    vmx::vmwrite(F::PIN_BASED_VM_EXEC_CONTROL, pin0);
    vmx::vmwrite(F::VM_EXIT_CONTROLS, exit0);
    let e = l2.run(lp, n, 0);
    let reason = e.as_ref().map_or(u64::MAX, |e| e.reason);
    line(t, "l2 without the preemption timer, a loop of 5000 ticks: exit 10", reason == 10, format_args!("exit {reason:#x}"));
}
