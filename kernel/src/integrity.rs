//! `integrity [snap|check]`: measures what a hostile L1 must not touch — L0's
//! text and read-only data (linker symbols), and per core (through the
//! mailbox, on that core) VMCS0-1's host state and the RAM of a quiescent (halted, powered-off or exited) L1 —
//! and compares with a snapshot. Hashing and comparing are
//! `nvmx_shell::integrity` (host-tested).

use alloc::string::String;
use alloc::vec::Vec;
use core::fmt::Write;

use nvmx_shell::IntegrityAction;
use nvmx_shell::integrity::{Item, compare, decode, hash_bytes};
use spin::Mutex;

use crate::percpu;

static SNAPSHOT: Mutex<Option<Vec<Item>>> = Mutex::new(None);

unsafe extern "C" {
    static __text_start: u8;
    static __text_end: u8;
    static __rodata_start: u8;
    static __rodata_end: u8;
}

fn region(name: &str, start: *const u8, end: *const u8) -> Item {
    let len = end as usize - start as usize;
    // SAFETY: [start, end) is a section of the loaded kernel image (linker.ld),
    // identity mapped and never freed; it is only read.
    let bytes = unsafe { core::slice::from_raw_parts(start, len) };
    Item { name: name.into(), hash: hash_bytes(bytes), detail: alloc::format!("{len} bytes at {:#x}", start as usize) }
}

/// Everything measurable now; lines of cores that could not answer go to `out`.
fn measure(out: &mut String) -> Vec<Item> {
    let mut items = alloc::vec![
        region("L0 text", &raw const __text_start, &raw const __text_end),
        region("L0 rodata", &raw const __rodata_start, &raw const __rodata_end),
    ];
    for cpu in 0..percpu::count() {
        // Hashing a 32 MiB L1 takes a while in an emulator: a generous limit.
        match crate::mailbox::call(cpu, crate::mailbox::Request::Integrity, 30_000) {
            Ok(text) => {
                let (mut got, other) = decode(&text);
                items.append(&mut got);
                for line in other {
                    let _ = writeln!(out, "integrity: cpu {cpu}: {}", line.trim_start_matches("error: "));
                }
            }
            Err(e) => {
                let _ = writeln!(out, "integrity: cpu {cpu}: {e}");
            }
        }
    }
    items
}

pub fn command(action: IntegrityAction, out: &mut String) -> core::fmt::Result {
    if action == IntegrityAction::Check && SNAPSHOT.lock().is_none() {
        return writeln!(out, "error: integrity: no snapshot (run `integrity snap` first)");
    }
    let items = measure(out);
    match action {
        IntegrityAction::Show | IntegrityAction::Snap => {
            for i in &items {
                writeln!(out, "integrity: {:016x} {} ({})", i.hash, i.name, i.detail)?;
            }
            if action == IntegrityAction::Snap {
                writeln!(out, "integrity: snapshot of {} items kept", items.len())?;
                *SNAPSHOT.lock() = Some(items);
            }
        }
        IntegrityAction::Check => {
            let guard = SNAPSHOT.lock();
            let before = guard.as_deref().unwrap_or_default();
            out.push_str(&compare(before, &items).text);
        }
    }
    Ok(())
}
