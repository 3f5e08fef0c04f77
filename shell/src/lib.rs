//! nvmx's command shell without the I/O: a line editor, the command table and
//! parser, and output formatting.
//!
//! The kernel owns the devices. It feeds input bytes to [`LineEditor`] and
//! writes the echo it gets back, hands each finished line to [`parse`], runs
//! the resulting [`Command`] and prints with the helpers in [`format`]. Keeping
//! the shell pure (`no_std` + `alloc`, no globals) lets every key sequence,
//! command and error message be unit-tested on the host with plain `cargo test`.
#![cfg_attr(not(test), no_std)]


extern crate alloc;

pub mod command;
pub mod editor;
pub mod format;
pub mod integrity;
pub mod report;

pub use command::{COMMANDS, Command, CommandSpec, Context, CpuSel, IntegrityAction, L1Action, ParseError, ShadowMode, VmcsKind, parse};
pub use editor::{Event, LineEditor};
