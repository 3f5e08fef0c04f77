//! The IDT and every trap's path into Rust.
//!
//! 256 stubs, 16 bytes apart, push a uniform frame (error code or 0, vector,
//! all general registers) and call [`trap_dispatch`]. A CPU exception that no
//! fixup covers prints a full report on the console and halts *that* core; the
//! others go on. Interrupt vectors (>= 32) go to handlers registered at run time.

use core::arch::global_asm;
use core::sync::atomic::{AtomicUsize, Ordering};
use spin::Once;

use super::gdt::{IST_DOUBLE_FAULT, IST_MACHINE_CHECK, IST_NMI, KERNEL_CS};

/// Registers as the stubs leave them on the stack.
#[repr(C)]
#[derive(Debug)]
pub struct TrapFrame {
    pub r15: u64,
    pub r14: u64,
    pub r13: u64,
    pub r12: u64,
    pub r11: u64,
    pub r10: u64,
    pub r9: u64,
    pub r8: u64,
    pub rbp: u64,
    pub rdi: u64,
    pub rsi: u64,
    pub rdx: u64,
    pub rcx: u64,
    pub rbx: u64,
    pub rax: u64,
    pub vector: u64,
    pub error: u64,
    // Pushed by the CPU (SDM Vol. 3A 7.14.2: 64-bit mode always pushes SS:RSP).
    pub rip: u64,
    pub cs: u64,
    pub rflags: u64,
    pub rsp: u64,
    pub ss: u64,
}

global_asm!(
    r#"
    .section .text
    .balign 16
    .global nvmx_trap_stubs
nvmx_trap_stubs:
    .set vec, 0
    .rept 256
    .balign 16
    /* Vectors with a CPU-pushed error code: #DF #TS #NP #SS #GP #PF #AC #CP #VC #SX */
    .if (vec == 8) || (vec == 10) || (vec == 11) || (vec == 12) || (vec == 13) || (vec == 14) || (vec == 17) || (vec == 21) || (vec == 29) || (vec == 30)
    .else
    pushq $0
    .endif
    pushq $vec
    jmp nvmx_trap_common
    .set vec, vec + 1
    .endr

nvmx_trap_common:
    pushq %rax
    pushq %rbx
    pushq %rcx
    pushq %rdx
    pushq %rsi
    pushq %rdi
    pushq %rbp
    pushq %r8
    pushq %r9
    pushq %r10
    pushq %r11
    pushq %r12
    pushq %r13
    pushq %r14
    pushq %r15
    movq %rsp, %rdi
    cld
    call trap_dispatch
    popq %r15
    popq %r14
    popq %r13
    popq %r12
    popq %r11
    popq %r10
    popq %r9
    popq %r8
    popq %rbp
    popq %rdi
    popq %rsi
    popq %rdx
    popq %rcx
    popq %rbx
    popq %rax
    addq $16, %rsp
    iretq
    "#,
    options(att_syntax)
);

unsafe extern "C" {
    static nvmx_trap_stubs: u8;
}

#[repr(C, align(16))]
struct Idt([u128; 256]);

static IDT: Once<Idt> = Once::new();

/// An interrupt handler for a vector >= 32. It must send the EOI itself.
pub type IrqHandler = fn(&mut TrapFrame);
static IRQ_HANDLERS: [AtomicUsize; 256] = [const { AtomicUsize::new(0) }; 256];

/// Routes `vector` to `handler`.
pub fn set_irq_handler(vector: u8, handler: IrqHandler) {
    IRQ_HANDLERS[usize::from(vector)].store(handler as usize, Ordering::Release);
}

fn gate(handler: u64, ist: u16) -> u128 {
    // SDM Vol. 3A 7.14.1, 64-bit interrupt gate: offset 15:0 | selector |
    // IST | type 0xE, present | offset 31:16 | offset 63:32.
    let lo = (handler & 0xffff)
        | (u64::from(KERNEL_CS) << 16)
        | (u64::from(ist) << 32)
        | (0x8e << 40)
        | ((handler >> 16) & 0xffff) << 48;
    u128::from(lo) | (u128::from(handler >> 32) << 64)
}

/// Loads the (shared) IDT on this core; built on first use.
pub fn init_this_cpu() {
    let idt = IDT.call_once(|| {
        let base = &raw const nvmx_trap_stubs as u64;
        let mut idt = Idt([0; 256]);
        for (v, entry) in idt.0.iter_mut().enumerate() {
            let ist = match v {
                2 => IST_NMI,
                8 => IST_DOUBLE_FAULT,
                18 => IST_MACHINE_CHECK,
                _ => 0,
            };
            *entry = gate(base + 16 * v as u64, ist);
        }
        idt
    });
    let ptr = x86_64::structures::DescriptorTablePointer {
        limit: (core::mem::size_of::<Idt>() - 1) as u16,
        base: x86_64::VirtAddr::from_ptr(idt),
    };
    // SAFETY: the IDT is a 'static with valid gates to our stubs.
    unsafe { x86_64::instructions::tables::lidt(&ptr) };
}

/// SDM Vol. 3A Table 7-1 mnemonics.
pub fn exception_name(vector: u64) -> &'static str {
    const NAMES: [&str; 32] = [
        "#DE divide error", "#DB debug", "NMI", "#BP breakpoint", "#OF overflow",
        "#BR bound range", "#UD invalid opcode", "#NM device not available",
        "#DF double fault", "coprocessor segment overrun", "#TS invalid TSS",
        "#NP segment not present", "#SS stack fault", "#GP general protection",
        "#PF page fault", "reserved", "#MF x87 error", "#AC alignment check",
        "#MC machine check", "#XM SIMD error", "#VE virtualization", "#CP control protection",
        "reserved", "reserved", "reserved", "reserved", "reserved", "reserved",
        "#HV hypervisor injection", "#VC VMM communication", "#SX security", "reserved",
    ];
    NAMES.get(vector as usize).copied().unwrap_or("interrupt")
}

#[unsafe(no_mangle)]
extern "C" fn trap_dispatch(frame: &mut TrapFrame) {
    if frame.vector >= 32 {
        let h = IRQ_HANDLERS[frame.vector as usize].load(Ordering::Acquire);
        if h != 0 {
            // SAFETY: only `set_irq_handler` stores here, always an IrqHandler.
            let handler: IrqHandler = unsafe { core::mem::transmute::<usize, IrqHandler>(h) };
            handler(frame);
        } else {
            crate::apic::eoi();
        }
        return;
    }
    if frame.vector == 13 {
        if let Some(&(_, fixup)) = super::cpu::msr_fixups().iter().find(|(at, _)| *at == frame.rip) {
            frame.rip = fixup;
            return;
        }
    }
    report_exception(frame);
    super::cpu::halt_forever();
}

fn report_exception(f: &TrapFrame) {
    use core::fmt::Write;
    let cpu = crate::percpu::try_current_index().unwrap_or(usize::MAX);
    let mut w = crate::panic::PanicWriter;
    let _ = write!(
        w,
        "\n!!! cpu {cpu}: exception {} ({}) error {:#x}\n\
         rip {:#018x} cs {:#x} rflags {:#x} rsp {:#018x} ss {:#x} cr2 {:#018x}\n\
         rax {:#018x} rbx {:#018x} rcx {:#018x} rdx {:#018x}\n\
         rsi {:#018x} rdi {:#018x} rbp {:#018x} r8  {:#018x}\n\
         r9  {:#018x} r10 {:#018x} r11 {:#018x} r12 {:#018x}\n\
         r13 {:#018x} r14 {:#018x} r15 {:#018x} cr3 {:#018x}\n\
         !!! cpu {cpu} halted; other cores go on\n",
        f.vector, exception_name(f.vector), f.error,
        f.rip, f.cs, f.rflags, f.rsp, f.ss, super::cpu::read_cr2(),
        f.rax, f.rbx, f.rcx, f.rdx, f.rsi, f.rdi, f.rbp, f.r8,
        f.r9, f.r10, f.r11, f.r12, f.r13, f.r14, f.r15, super::cpu::read_cr3(),
    );
    crate::percpu::mark_current_failed();
}
