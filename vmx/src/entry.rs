//! The world switch into a guest and back (SDM Vol. 3C 27, 28.5): the one
//! assembly stub both nvmx (L0 running L1 or L2) and the built-in L1
//! (running its L2) use. A VM entry loads no general registers and a VM exit
//! saves none, so the stub does, into a [`GuestRegs`].

use core::arch::global_asm;

/// L1's general registers, indexed by the SDM register numbers used in exit
/// qualifications and instruction information (0 RAX, 1 RCX, 2 RDX, 3 RBX,
/// 4 RSP — unused here, RSP lives in the VMCS — 5 RBP, 6 RSI, 7 RDI, 8-15).
#[repr(C)]
#[derive(Default, Clone, Copy, Debug)]
pub struct GuestRegs {
    pub gpr: [u64; 16],
}

global_asm!(
    r#"
    .global vmx_vmentry
    .global vmx_vmexit
/* u64 vmx_vmentry(GuestRegs *regs, u64 launched)
   Returns 0 after a VM exit, or RFLAGS of a failed VMLAUNCH/VMRESUME. */
vmx_vmentry:
    /* 1. Save the caller's callee-saved registers and the GuestRegs pointer. */
    push rbp
    push rbx
    push r12
    push r13
    push r14
    push r15
    push rdi
    /* 2. HOST_RSP = this stack, so the exit lands right here. */
    mov rax, 0x6C14
    vmwrite rax, rsp
    /* 3. Load L1's registers (flags for the launch choice set first). */
    cmp rsi, 0
    mov rax, [rdi + 0]
    mov rcx, [rdi + 8]
    mov rdx, [rdi + 16]
    mov rbx, [rdi + 24]
    mov rbp, [rdi + 40]
    mov rsi, [rdi + 48]
    mov r8,  [rdi + 64]
    mov r9,  [rdi + 72]
    mov r10, [rdi + 80]
    mov r11, [rdi + 88]
    mov r12, [rdi + 96]
    mov r13, [rdi + 104]
    mov r14, [rdi + 112]
    mov r15, [rdi + 120]
    mov rdi, [rdi + 56]
    /* 4. Enter: VMRESUME once launched, else VMLAUNCH. */
    jne 1f
    vmlaunch
    jmp 2f
1:  vmresume
2:  /* 5. Still here: the entry failed (CF or ZF set). Return RFLAGS. */
    pushfq
    pop rax
    add rsp, 8
    pop r15
    pop r14
    pop r13
    pop r12
    pop rbx
    pop rbp
    ret

vmx_vmexit:
    /* HOST_RIP. RSP = HOST_RSP: [rsp] is the GuestRegs pointer. */
    push rdi
    mov rdi, [rsp + 8]
    mov [rdi + 0], rax
    mov [rdi + 8], rcx
    mov [rdi + 16], rdx
    mov [rdi + 24], rbx
    mov [rdi + 40], rbp
    mov [rdi + 48], rsi
    mov [rdi + 64], r8
    mov [rdi + 72], r9
    mov [rdi + 80], r10
    mov [rdi + 88], r11
    mov [rdi + 96], r12
    mov [rdi + 104], r13
    mov [rdi + 112], r14
    mov [rdi + 120], r15
    pop rax
    mov [rdi + 56], rax
    add rsp, 8
    pop r15
    pop r14
    pop r13
    pop r12
    pop rbx
    pop rbp
    xor eax, eax
    ret
    "#
);

/* L0's variant (nvmx): the same switch, with a third argument `ctx`
   (a *FastExit or 0) kept next to the GuestRegs pointer. After an exit
   with ctx != 0 the stub calls ctx->handler(regs, ctx) before anything
   else; a non-zero answer means "handled": the guest's registers are
   loaded again and the VMCS resumed right here (the fast path of
   emulated VMREAD/VMWRITE). Zero: back to the caller as after any exit. */
global_asm!(
    r#"
    .global vmx_vmentry_fast
    .global vmx_vmexit_fast
/* u64 vmx_vmentry_fast(GuestRegs *regs, u64 launched, FastExit *ctx) */
vmx_vmentry_fast:
    push rbp
    push rbx
    push r12
    push r13
    push r14
    push r15
    push rdx
    push rdi
    /* HOST_RSP: [rsp] = regs, [rsp + 8] = ctx; rsp = 8 (mod 16). */
    mov rax, 0x6C14
    vmwrite rax, rsp
    cmp rsi, 0
    mov rax, [rdi + 0]
    mov rcx, [rdi + 8]
    mov rdx, [rdi + 16]
    mov rbx, [rdi + 24]
    mov rbp, [rdi + 40]
    mov rsi, [rdi + 48]
    mov r8,  [rdi + 64]
    mov r9,  [rdi + 72]
    mov r10, [rdi + 80]
    mov r11, [rdi + 88]
    mov r12, [rdi + 96]
    mov r13, [rdi + 104]
    mov r14, [rdi + 112]
    mov r15, [rdi + 120]
    mov rdi, [rdi + 56]
    jne 1f
    vmlaunch
    jmp .Lnvmx_entry_failed
1:  vmresume
.Lnvmx_entry_failed:
    /* VMLAUNCH/VMRESUME fell through (CF or ZF set): return RFLAGS. */
    pushfq
    pop rax
    add rsp, 16
    pop r15
    pop r14
    pop r13
    pop r12
    pop rbx
    pop rbp
    ret

vmx_vmexit_fast:
    push rdi
    mov rdi, [rsp + 8]
    mov [rdi + 0], rax
    mov [rdi + 8], rcx
    mov [rdi + 16], rdx
    mov [rdi + 24], rbx
    mov [rdi + 40], rbp
    mov [rdi + 48], rsi
    mov [rdi + 64], r8
    mov [rdi + 72], r9
    mov [rdi + 80], r10
    mov [rdi + 88], r11
    mov [rdi + 96], r12
    mov [rdi + 104], r13
    mov [rdi + 112], r14
    mov [rdi + 120], r15
    pop rax
    mov [rdi + 56], rax
    mov rsi, [rsp + 8]
    test rsi, rsi
    jz 3f
    /* rsp = 8 (mod 16) here: aligned for the call as the ABI wants. */
    sub rsp, 8
    call [rsi]
    add rsp, 8
    test rax, rax
    jz 3f
    /* Handled: the guest's registers (as the handler left them) back in,
       and the same VMCS resumed. */
    mov rdi, [rsp]
    mov rax, [rdi + 0]
    mov rcx, [rdi + 8]
    mov rdx, [rdi + 16]
    mov rbx, [rdi + 24]
    mov rbp, [rdi + 40]
    mov rsi, [rdi + 48]
    mov r8,  [rdi + 64]
    mov r9,  [rdi + 72]
    mov r10, [rdi + 80]
    mov r11, [rdi + 88]
    mov r12, [rdi + 96]
    mov r13, [rdi + 104]
    mov r14, [rdi + 112]
    mov r15, [rdi + 120]
    mov rdi, [rdi + 56]
    vmresume
    jmp .Lnvmx_entry_failed
3:  add rsp, 16
    pop r15
    pop r14
    pop r13
    pop r12
    pop rbx
    pop rbp
    xor eax, eax
    ret
    "#
);

/// The head of the context [`enter_fast`] hands its exit stub: after a VM
/// exit the stub calls `handler(regs, ctx)` at once; non-zero means the
/// exit was handled completely and the guest is resumed without returning
/// to the caller. The handler's owner embeds this as the first field of a
/// `#[repr(C)]` struct with whatever else it needs.
#[repr(C)]
pub struct FastExit {
    pub handler: unsafe extern "C" fn(regs: *mut GuestRegs, ctx: *mut FastExit) -> u64,
}

unsafe extern "C" {
    fn vmx_vmentry(regs: *mut GuestRegs, launched: u64) -> u64;
    static vmx_vmexit: u8;
    fn vmx_vmentry_fast(regs: *mut GuestRegs, launched: u64, ctx: *mut FastExit) -> u64;
    static vmx_vmexit_fast: u8;
}

/// The address to put in HOST_RIP: where a VM exit lands.
pub fn exit_rip() -> u64 {
    &raw const vmx_vmexit as u64
}

/// Enters the guest of the current VMCS with `regs` (VMRESUME once
/// `launched`, else VMLAUNCH). Returns 0 after a VM exit (with `regs` holding
/// the guest's registers), or RFLAGS of a failed entry (CF: VMfailInvalid,
/// ZF: VMfailValid).
///
/// # Safety
/// The current VMCS must have HOST_RIP = [`exit_rip`] and a host state that
/// is this code's (CR3, segments, …); the stub writes HOST_RSP itself.
pub unsafe fn enter(regs: &mut GuestRegs, launched: bool) -> u64 {
    // SAFETY: forwarded to the caller; the stub preserves every register the
    // Rust ABI expects preserved.
    unsafe { vmx_vmentry(regs, u64::from(launched)) }
}


/// HOST_RIP for a VMCS entered with [`enter_fast`].
pub fn exit_rip_fast() -> u64 {
    &raw const vmx_vmexit_fast as u64
}

/// [`enter`] for L0: as it, and after each VM exit, if `ctx` is not null,
/// `ctx.handler` runs first and may resume the guest itself (see
/// [`FastExit`]); returns only for exits it leaves to the caller.
///
/// # Safety
/// As [`enter`], with HOST_RIP = [`exit_rip_fast`]; `ctx` is null or points
/// to a [`FastExit`] (at the head of its owner's struct) that stays valid,
/// with every pointer the handler uses, until this returns. The handler
/// runs with the guest's registers in `regs` and may change them.
pub unsafe fn enter_fast(regs: &mut GuestRegs, launched: bool, ctx: *mut FastExit) -> u64 {
    // SAFETY: forwarded to the caller; the stub preserves every register the
    // Rust ABI expects preserved and calls the handler with an aligned stack.
    unsafe { vmx_vmentry_fast(regs, u64::from(launched), ctx) }
}
