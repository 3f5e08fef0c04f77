//! Pure Intel VMX knowledge for nvmx, with no hardware access: the one VMCS
//! field table, exit reasons and qualifications, VM-instruction error numbers,
//! control bits and capability-MSR decoding. `no_std`, tested on the host.
//! Follows the Intel SDM Vol. 3C (VMX chapters and appendices A-C).
#![cfg_attr(not(test), no_std)]

pub mod caps;
pub mod controls;
#[cfg(target_arch = "x86_64")]
pub mod entry;
pub mod error;
pub mod events;
pub mod exit;
pub mod field;
pub mod guest_state;
pub mod nested;
pub mod regs;
pub mod shadow;
pub mod shadow12;
pub mod walk;
