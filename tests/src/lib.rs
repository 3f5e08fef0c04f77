//! System-test harness for nvmx.
//!
//! The system tests (in `tests/system/`) boot the real ISO in QEMU (TCG: boot, SMP, ACPI,
//! UEFI, the "no VT-x" path) and in Bochs (the only emulated VT-x we have, see
//! `shared/PLATFORM.md`), then drive the kernel's shell over the emulated COM1, which the
//! harness reaches through a TCP socket.
//!
//! The pieces:
//! - [`emu`]: the QEMU and Bochs launchers and [`emu::Machine`], one running emulator with a
//!   hard wall-clock limit (killed on timeout and on drop: no test can hang);
//! - [`serial`]: the serial session: transcript, `expect`, `command`;
//! - [`output`]: pure parsing of what the shell prints (unit-tested without an emulator);
//! - [`slots`]: a cross-process limit on emulators running at once (the machines have two cores);
//! - [`paths`]: where the ISO, the firmware and the logs are.
//!
//! Everything an emulator sent is kept in `target/systest/<test-name>.log`; the emulator's own
//! files (bochsrc, Bochs log, stdout, stderr) in `target/systest/<test-name>/`. A failed
//! expectation reports the last lines of the transcript and the tail of the emulator's logs.

pub mod emu;
pub mod error;
pub mod fuzz_long;
pub mod output;
pub mod paths;
pub mod serial;
pub mod slots;

pub use emu::{Bochs, Machine, Qemu};
pub use error::{Error, Result};
pub use serial::Pattern;

/// The shell's prompt (no newline after it).
pub const PROMPT: &str = "nvmx> ";
