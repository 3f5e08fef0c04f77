//! Cross-core requests from the shell: a per-core slot plus an IPI. Some
//! things can only be done on the core itself — above all reading its VMCS,
//! which VMREAD can only reach where it is current (SDM 25.11.1) — so the
//! shell posts a request, kicks the core with [`IPI_VECTOR`] (an external
//! interrupt exit if it is running an L1, a wake-up from HLT otherwise), and
//! the core answers from its own loop.

use alloc::string::String;
use core::sync::atomic::{AtomicBool, Ordering};

use spin::Mutex;

use crate::percpu::{self, MAX_CPUS};

/// Vector of the shell's kick IPI.
pub const IPI_VECTOR: u8 = 0xF0;

/// What the shell asks of a core.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Request {
    /// Dump VMCS0-1, VMCS1-2 (L0's cache of it) or VMCS0-2, grouped like
    /// Linux `dump_vmcs`.
    DumpVmcs(nvmx_shell::VmcsKind),
    /// The L1's platform as `l1 <cpu>` shows it (APIC mode, timer,
    /// pending interrupts): device state lives on that core.
    Platform,
    /// `integrity`: this core's measured regions (VMCS0-1 host state, the
    /// RAM of a quiescent L1) in `nvmx_shell::integrity::encode` lines.
    Integrity,
}

struct Slot {
    pending: AtomicBool,
    request: Mutex<Option<Request>>,
    answer: Mutex<Option<String>>,
}

static SLOTS: [Slot; MAX_CPUS] = [const {
    Slot { pending: AtomicBool::new(false), request: Mutex::new(None), answer: Mutex::new(None) }
}; MAX_CPUS];

/// How a core answers requests (set by `main`: needs the VMX code).
static HANDLER: spin::Once<fn(Request) -> String> = spin::Once::new();

pub fn set_handler(h: fn(Request) -> String) {
    HANDLER.call_once(|| h);
}

fn kick_irq(_frame: &mut crate::arch::trap::TrapFrame) {
    crate::apic::eoi();
}

/// Installs the kick vector's handler (once, any core).
pub fn init() {
    crate::arch::trap::set_irq_handler(IPI_VECTOR, kick_irq);
    // The boot core's idle wake-up (`l1::wait`) needs only the EOI too.
    crate::arch::trap::set_irq_handler(crate::apic::IDLE_TIMER_VECTOR, kick_irq);
}

/// Called on an external-interrupt exit with `vector`: nothing to do beyond
/// the EOI already sent; the core's loop polls its slot next.
pub fn on_ipi(_vector: u8) {}

/// Wakes `cpu` (HLT or running an L1) so it looks at its slot soon.
pub fn kick(cpu: usize) {
    let apic_id = percpu::cpu(cpu).apic_id.load(Ordering::Relaxed);
    crate::apic::send_ipi(apic_id, crate::apic::Ipi::Fixed(IPI_VECTOR));
}

/// A request waits for core `cpu` (its next [`poll`] answers it).
#[inline]
pub fn pending(cpu: usize) -> bool {
    SLOTS[cpu].pending.load(Ordering::Acquire)
}

/// Answers a pending request for the running core, if any.
pub fn poll() {
    let me = percpu::current().index;
    let slot = &SLOTS[me];
    if !slot.pending.load(Ordering::Acquire) {
        return;
    }
    let request = slot.request.lock().take();
    if let (Some(req), Some(handler)) = (request, HANDLER.get()) {
        *slot.answer.lock() = Some(handler(req));
    }
    slot.pending.store(false, Ordering::Release);
}

/// Runs `req` on `cpu` and returns its answer; `Err` if the core does not
/// answer within `timeout_ms` (halted on an error, for instance).
pub fn call(cpu: usize, req: Request, timeout_ms: u64) -> Result<String, &'static str> {
    let handler = HANDLER.get().ok_or("no mailbox handler")?;
    if cpu == percpu::current().index {
        return Ok(handler(req));
    }
    if percpu::cpu(cpu).state() != percpu::CpuState::Online {
        return Err("that cpu is not online");
    }
    let slot = &SLOTS[cpu];
    *slot.answer.lock() = None;
    *slot.request.lock() = Some(req);
    slot.pending.store(true, Ordering::Release);
    kick(cpu);
    for _ in 0..timeout_ms {
        if !slot.pending.load(Ordering::Acquire) {
            return slot.answer.lock().take().ok_or("no answer");
        }
        crate::time::delay_us(1000);
    }
    slot.pending.store(false, Ordering::Release);
    *slot.request.lock() = None;
    Err("the cpu did not answer")
}
