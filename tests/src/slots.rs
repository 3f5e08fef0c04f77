//! A limit on emulators running at once, across threads *and* processes (cargo runs the tests
//! of one binary in parallel threads; nextest or two `cargo test` runs use processes).
//!
//! The machines have two cores and an emulator keeps one busy, so by default at most two run at
//! once (`NVMX_TEST_JOBS` changes it). A slot is an exclusive `flock` on
//! `target/systest/slots/slot-K.lock`; the kernel drops it if the process dies.

use crate::{Error, Result, paths};
use std::fs::{File, OpenOptions};
use std::time::{Duration, Instant};

/// A held slot: released on drop.
#[derive(Debug)]
pub struct Slot {
    _file: File,
    /// Which slot (0-based).
    pub index: usize,
}

/// The number of slots: `$NVMX_TEST_JOBS`, else 2 (never more than the cores, never 0).
pub fn slot_count() -> usize {
    let cores = std::thread::available_parallelism().map_or(2, usize::from);
    std::env::var("NVMX_TEST_JOBS").ok().and_then(|v| v.parse().ok()).unwrap_or_else(|| cores.min(2)).max(1)
}

/// Waits (at most `timeout`) for a free slot.
pub fn acquire(timeout: Duration) -> Result<Slot> {
    let dir = paths::systest_dir().join("slots");
    std::fs::create_dir_all(&dir)?;
    let n = slot_count();
    let deadline = Instant::now() + timeout;
    loop {
        for index in 0..n {
            let file = OpenOptions::new()
                .create(true)
                .truncate(false)
                .write(true)
                .open(dir.join(format!("slot-{index}.lock")))?;
            if file.try_lock().is_ok() {
                return Ok(Slot { _file: file, index });
            }
        }
        if Instant::now() >= deadline {
            return Err(Error::new(format!(
                "no emulator slot free after {timeout:?} ({n} slots in {}): \
                 another test run holds them?",
                dir.display()
            )));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}
