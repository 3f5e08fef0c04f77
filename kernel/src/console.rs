//! Kernel output: `print!`/`println!` go to COM1 and, once a screen driver has
//! registered itself, to the screen. Kernel messages go through the `log`
//! facade with a level settable from the command line (`log=debug`) and the
//! shell (`log debug`).

use core::fmt::{self, Write};
use core::sync::atomic::{AtomicUsize, Ordering};
use log::{Level, LevelFilter, Log, Metadata, Record};
use spin::{Mutex, Once};

/// A second output (the screen), registered by its driver.
static SCREEN: Once<fn(&[u8])> = Once::new();
/// Serialises whole `print!` calls so lines from several cores don't interleave.
static OUTPUT: Mutex<()> = Mutex::new(());

/// Adds the screen as an output.
pub fn set_screen(sink: fn(&[u8])) {
    SCREEN.call_once(|| sink);
}

/// Writes raw bytes to every output.
pub fn write_bytes(bytes: &[u8]) {
    crate::serial::write(bytes);
    if let Some(screen) = SCREEN.get() {
        screen(bytes);
    }
}

struct Out;
impl Write for Out {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        write_bytes(s.as_bytes());
        Ok(())
    }
}

#[doc(hidden)]
pub fn _print(args: fmt::Arguments) {
    let _guard = OUTPUT.lock();
    let _ = Out.write_fmt(args);
}

/// Prints to the console (serial + screen).
#[macro_export]
macro_rules! print {
    ($($arg:tt)*) => ($crate::console::_print(format_args!($($arg)*)));
}

/// Prints a line to the console (serial + screen).
#[macro_export]
macro_rules! println {
    () => ($crate::print!("\n"));
    ($($arg:tt)*) => ($crate::console::_print(format_args!("{}\n", format_args!($($arg)*))));
}

struct Logger;
static LOGGER: Logger = Logger;
/// Current CPU index for log lines, set by `percpu` once it exists.
pub static CPU_ID_FN: Once<fn() -> usize> = Once::new();
static LOG_LINES: AtomicUsize = AtomicUsize::new(0);

impl Log for Logger {
    fn enabled(&self, metadata: &Metadata) -> bool {
        metadata.level() <= log::max_level()
    }
    fn log(&self, record: &Record) {
        if !self.enabled(record.metadata()) {
            return;
        }
        LOG_LINES.fetch_add(1, Ordering::Relaxed);
        let cpu = CPU_ID_FN.get().map_or(0, |f| f());
        let tag = match record.level() {
            Level::Error => "ERROR",
            Level::Warn => "WARN ",
            Level::Info => "INFO ",
            Level::Debug => "DEBUG",
            Level::Trace => "TRACE",
        };
        crate::println!("[{tag} cpu{cpu}] {}", record.args());
    }
    fn flush(&self) {}
}

/// Parses a level name as used on the command line and in the shell.
pub fn parse_level(name: &str) -> Option<LevelFilter> {
    Some(match name {
        "off" => LevelFilter::Off,
        "error" => LevelFilter::Error,
        "warn" => LevelFilter::Warn,
        "info" => LevelFilter::Info,
        "debug" => LevelFilter::Debug,
        "trace" => LevelFilter::Trace,
        _ => return None,
    })
}

/// Installs the logger at `level`.
pub fn init_log(level: LevelFilter) {
    let _ = log::set_logger(&LOGGER);
    log::set_max_level(level);
}
