//! QEMU (TCG): boot, SMP, ACPI, the shell, UEFI, and the "no VT-x" path (TCG has no VMX).

use crate::common::{self, QEMU_BIOS, QEMU_UEFI};
use nvmx_tests::{Qemu, Result};
use std::time::Duration;

/// BIOS, 4 cores: the whole basic shell contract.
#[test]
fn qemu_bios_4cpu() -> Result<()> {
    let t = QEMU_BIOS;
    let mut m = Qemu::new("qemu_bios_4cpu").smp(4).hard_limit(Duration::from_secs(180)).start()?;
    m.boot_to_prompt(t.boot)?;
    common::cpus_all_online(&mut m, t, 4)?;
    common::vmx_not_available(&mut m, t)?;
    common::unknown_command(&mut m, t)?;
    common::bad_argument(&mut m, t)?;
    common::help_lists_commands(&mut m, t)?;
    common::mem_reports_frames_and_heap(&mut m, t)?;
    common::acpi_lists_madt(&mut m, t, 4)?;
    common::poweroff(&mut m, t)
}

/// UEFI (OVMF), 2 cores.
#[test]
fn qemu_uefi_2cpu() -> Result<()> {
    let t = QEMU_UEFI;
    let mut m = Qemu::new("qemu_uefi_2cpu").uefi(true).smp(2).hard_limit(Duration::from_secs(180)).start()?;
    m.boot_to_prompt(t.boot)?;
    common::cpus_all_online(&mut m, t, 2)?;
    common::vmx_not_available(&mut m, t)?;
    common::unknown_command(&mut m, t)?;
    common::poweroff(&mut m, t)
}

/// BIOS, 16 cores: every AP comes up.
#[test]
fn qemu_bios_16cpu() -> Result<()> {
    let t = QEMU_BIOS;
    let mut m = Qemu::new("qemu_bios_16cpu").smp(16).hard_limit(Duration::from_secs(180)).start()?;
    m.boot_to_prompt(t.boot)?;
    common::cpus_all_online(&mut m, t, 16)?;
    common::poweroff(&mut m, t)
}
