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
/// Serialises whole `print!` calls so lines from several cores don't
/// interleave, and knows what the shell's input line shows.
static OUTPUT: Mutex<InputLine> = Mutex::new(InputLine::NONE);

/// Longest prompt + line kept for redrawing (`nvmx_shell::editor::MAX_LINE`
/// plus the prompt).
const INPUT_MAX: usize = nvmx_shell::editor::MAX_LINE + 16;

/// The shell's prompt and partial line as the terminal shows them, so that
/// asynchronous output (a log line from another core) can clear them first
/// and draw them again below itself (`nvmx_shell::editor::CLEAR_LINE`).
/// A copy: the editor itself is the shell's, behind its own lock.
pub struct InputLine {
    shown: bool,
    prompt_len: usize,
    text: [u8; INPUT_MAX],
    len: usize,
    cursor: usize,
}

impl InputLine {
    const NONE: InputLine = InputLine { shown: false, prompt_len: 0, text: [0; INPUT_MAX], len: 0, cursor: 0 };

    /// The prompt and `line` (cursor at `cursor`) are on the terminal now.
    pub fn show(&mut self, prompt: &str, line: &str, cursor: usize) {
        let p = prompt.len().min(16);
        let n = line.len().min(INPUT_MAX - p);
        self.text[..p].copy_from_slice(&prompt.as_bytes()[..p]);
        self.text[p..p + n].copy_from_slice(&line.as_bytes()[..n]);
        (self.shown, self.prompt_len, self.len, self.cursor) = (true, p, p + n, cursor.min(n));
    }

    /// No prompt on the terminal (a command is running).
    pub fn hide(&mut self) {
        self.shown = false;
    }

    fn redraw(&self) {
        let line = core::str::from_utf8(&self.text[self.prompt_len..self.len]).unwrap_or("");
        write_bytes(&self.text[..self.prompt_len]);
        nvmx_shell::editor::redraw(line, self.cursor, &mut |b| write_bytes(b));
    }
}

/// Runs `f` with the console to itself: for the shell, whose prompt, echo
/// and command output must not be cut by a log line, and which records in
/// the [`InputLine`] what its prompt shows. `f` writes with [`write_bytes`].
pub fn exclusive<R>(f: impl FnOnce(&mut InputLine) -> R) -> R {
    f(&mut OUTPUT.lock())
}

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

/// Remembers whether the last byte written ended a line.
struct Tracked(bool);
impl Write for Tracked {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        if let Some(&last) = s.as_bytes().last() {
            self.0 = last == b'\n';
        }
        Out.write_str(s)
    }
}

/// Output not from the shell (log lines, boot messages): when the shell's
/// prompt is on the terminal, it is erased first and drawn again after the
/// output, with the partial line and the cursor where they were.
#[doc(hidden)]
pub fn _print(args: fmt::Arguments) {
    let input = OUTPUT.lock();
    if input.shown {
        write_bytes(nvmx_shell::editor::CLEAR_LINE);
    }
    let mut out = Tracked(true);
    let _ = out.write_fmt(args);
    if input.shown {
        if !out.0 {
            write_bytes(b"\n");
        }
        input.redraw();
    }
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
