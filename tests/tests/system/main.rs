//! System tests: boot the real ISO (`$NVMX_ISO`, default `build/nvmx.iso`; `make iso` builds
//! it) in QEMU and Bochs and check what the shell answers over the serial line.
//!
//! Each test owns one emulator with a hard wall-clock limit. At most two emulators run at once
//! (see `nvmx_tests::slots`). Bochs tests come first in name order, so the two slowest runs
//! start first. Transcripts: `target/systest/<test>.log`.

mod bochs;
mod common;
mod l1;
mod linux;
mod loaders;
mod platform;
mod qemu;
mod race;
mod term;
mod turtles;
