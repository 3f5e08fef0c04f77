//! Emulator launchers and the running [`Machine`].
//!
//! Every machine has a hard wall-clock limit: a watchdog thread kills the emulator when it is
//! reached, and dropping the `Machine` kills it too, so a failing or hanging test cannot leave
//! an emulator behind or hang the run.

use crate::error::tail_lines;
use crate::serial::{Found, Pattern, Serial};
use crate::slots::{self, Slot};
use crate::{Error, Result, paths};
use std::fs::File;
use std::net::{Ipv4Addr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc::{self, RecvTimeoutError, Sender};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Default hard limit for one machine, from start to kill.
pub const DEFAULT_HARD_LIMIT: Duration = Duration::from_secs(240);
/// How long a test may wait for a free emulator slot.
const SLOT_WAIT: Duration = Duration::from_secs(900);

// ---------------------------------------------------------------------------------------------
// QEMU

/// QEMU (TCG) launcher: `Qemu::new("test_name").smp(4).start()`.
#[derive(Debug, Clone)]
pub struct Qemu {
    name: String,
    smp: u32,
    mem_mib: u32,
    uefi: bool,
    hard_limit: Duration,
    extra: Vec<String>,
    iso: Option<PathBuf>,
}

/// The ISO a machine boots: `build/<file>` when one was named (see
/// `build_iso`), else nvmx's ISO. Missing, it is an error, never a skip.
fn resolve_iso(named: &Option<PathBuf>) -> Result<PathBuf> {
    match named {
        Some(p) if p.is_file() => Ok(p.clone()),
        Some(p) => Err(Error::new(format!("{} not found: run `make iso` first", p.display()))),
        None => paths::iso(),
    }
}

impl Qemu {
    /// A BIOS machine with 1 CPU and 256 MiB; `name` names the logs.
    pub fn new(name: &str) -> Self {
        Self {
            name: name.into(),
            smp: 1,
            mem_mib: 256,
            uefi: false,
            hard_limit: DEFAULT_HARD_LIMIT,
            extra: Vec::new(),
            iso: None,
        }
    }
    /// Boots `build/<file>` instead of nvmx's ISO (e.g. `l1-bare.iso`).
    #[must_use]
    pub fn build_iso(mut self, file: &str) -> Self {
        self.iso = Some(paths::workspace().join("build").join(file));
        self
    }
    /// Number of processors (`-smp`).
    #[must_use]
    pub fn smp(mut self, n: u32) -> Self {
        self.smp = n;
        self
    }
    /// Memory in MiB (`-m`).
    #[must_use]
    pub fn mem_mib(mut self, mib: u32) -> Self {
        self.mem_mib = mib;
        self
    }
    /// Boot with OVMF (UEFI) instead of SeaBIOS.
    #[must_use]
    pub fn uefi(mut self, on: bool) -> Self {
        self.uefi = on;
        self
    }
    /// The machine's hard wall-clock limit.
    #[must_use]
    pub fn hard_limit(mut self, d: Duration) -> Self {
        self.hard_limit = d;
        self
    }
    /// Extra QEMU arguments.
    #[must_use]
    pub fn arg(mut self, a: &str) -> Self {
        self.extra.push(a.into());
        self
    }

    /// The command line for serial port `port` (QEMU listens, the harness connects).
    pub fn args(&self, iso: &Path, port: u16) -> Vec<String> {
        let mut a: Vec<String> = vec![
            "-cdrom".into(),
            iso.display().to_string(),
            "-display".into(),
            "none".into(),
            "-monitor".into(),
            "none".into(),
            "-smp".into(),
            self.smp.to_string(),
            "-m".into(),
            format!("{}M", self.mem_mib),
            "-no-reboot".into(),
            "-serial".into(),
            format!("tcp:127.0.0.1:{port},server=on,wait=on"),
            "-device".into(),
            "isa-debug-exit,iobase=0xf4,iosize=0x04".into(),
        ];
        if self.uefi {
            a.push("-bios".into());
            a.push(paths::OVMF.into());
        }
        a.extend(self.extra.iter().cloned());
        a
    }

    /// Starts QEMU and connects to its serial port.
    pub fn start(&self) -> Result<Machine> {
        let iso = resolve_iso(&self.iso)?;
        if self.uefi {
            paths::require_file(paths::OVMF, "OVMF (UEFI firmware)", "ovmf")?;
        }
        let slot = slots::acquire(SLOT_WAIT)?;
        let dir = Machine::prepare_dir(&self.name)?;
        let iso = snapshot_iso(&iso, &dir)?;
        let mut last_err = None;
        // QEMU binds the port itself: another process may take the port we picked between our
        // probe and QEMU's bind. Then QEMU exits at once; pick another port and retry.
        for attempt in 0..5 {
            let port = free_port()?;
            let mut args = self.args(&iso, port);
            // Every CPU reset in a log, so `poweroff` can tell S5 from a triple fault.
            args.extend(["-d".into(), "cpu_reset".into(), "-D".into(), dir.join("qemu.log").display().to_string()]);
            std::fs::write(dir.join("cmdline"), format!("qemu-system-x86_64 {}\n", args.join(" ")))?;
            let mut cmd = Command::new("qemu-system-x86_64");
            cmd.args(&args);
            let child = spawn_logged(cmd, &dir, "qemu-system-x86_64")?;
            let mut proc = Proc::new(child, self.hard_limit);
            match connect(port, &mut proc, Duration::from_secs(20)) {
                Ok(stream) => {
                    let log = dir.join("qemu.log");
                    return Machine::new(self.name.clone(), "QEMU", proc, stream, dir, slot, vec![log]);
                }
                Err(e) => {
                    let stderr = std::fs::read_to_string(dir.join("stderr")).unwrap_or_default();
                    proc.kill();
                    let collision =
                        stderr.contains("Address already in use") || stderr.contains("Failed to bind");
                    last_err = Some(
                        Error::new(format!("QEMU (attempt {}): {}", attempt + 1, e.message()))
                            .with_section("QEMU stderr", &tail_lines(&stderr, 20)),
                    );
                    if !collision {
                        break;
                    }
                }
            }
        }
        Err(last_err.unwrap_or_else(|| Error::new("QEMU did not start")))
    }
}

// ---------------------------------------------------------------------------------------------
// Bochs

/// Bochs launcher: `Bochs::new("test_name", "corei7_haswell_4770").cpus(4).start()`.
#[derive(Debug, Clone)]
pub struct Bochs {
    name: String,
    model: String,
    cpus: u32,
    megs: u32,
    ips: u32,
    hard_limit: Duration,
    iso: Option<PathBuf>,
}

impl Bochs {
    /// A machine of CPU model `model` (see `bochs` docs, e.g. `corei7_ivy_bridge_3770k`),
    /// 1 CPU, 256 MiB, 4M instructions per emulated second.
    pub fn new(name: &str, model: &str) -> Self {
        Self {
            name: name.into(),
            model: model.into(),
            cpus: 1,
            megs: 256,
            ips: 4_000_000,
            hard_limit: DEFAULT_HARD_LIMIT,
            iso: None,
        }
    }
    /// Boots `build/<file>` instead of nvmx's ISO (e.g. `l1-bare.iso`, the
    /// built-in L1 alone); missing, it fails like a missing nvmx ISO.
    #[must_use]
    pub fn build_iso(mut self, file: &str) -> Self {
        self.iso = Some(paths::workspace().join("build").join(file));
        self
    }
    /// Number of processors.
    #[must_use]
    pub fn cpus(mut self, n: u32) -> Self {
        self.cpus = n;
        self
    }
    /// Memory in MiB.
    #[must_use]
    pub fn megs(mut self, megs: u32) -> Self {
        self.megs = megs;
        self
    }
    /// Emulated instructions per second (timer calibration; with `clock: sync=none` it does not
    /// slow the emulation down).
    #[must_use]
    pub fn ips(mut self, ips: u32) -> Self {
        self.ips = ips;
        self
    }
    /// The machine's hard wall-clock limit.
    #[must_use]
    pub fn hard_limit(mut self, d: Duration) -> Self {
        self.hard_limit = d;
        self
    }

    /// The bochsrc for `iso`, Bochs' log at `log`, COM1 connecting to the harness at `port`.
    ///
    /// - `fastboot` skips the BIOS boot menu delay (~3 s);
    /// - `clock: sync=none` + a low `ips`: serial output is not throttled;
    /// - display `rfb` with `timeout=0`: headless, does not wait for a VNC client; each running
    ///   Bochs takes the next free VNC port from 5900, so parallel runs do not collide;
    /// - `error: action=report` logs Bochs' own reasons for VMfail; `panic: action=fatal` ends
    ///   Bochs instead of asking on a terminal that is not there;
    /// - `sound: …dummy`: on a machine without a sound card, Debian's Bochs 2.7 aborts at start
    ///   ("buffer overflow detected" in its ALSA `mixer_thread`); the dummy driver avoids it;
    /// - `reset_on_triple_fault=0`: a triple fault stops instead of rebooting into GRUB again;
    /// - COM1 `socket-client`: the harness listens first, Bochs connects (PLATFORM.md: a
    ///   `socket-server` cannot reuse a port in TIME_WAIT).
    pub fn bochsrc(&self, iso: &Path, log: &Path, port: u16) -> String {
        format!(
            "# generated by nvmx-tests for {name}\n\
             megs: {megs}\n\
             cpu: model={model}, count={cpus}, ips={ips}, reset_on_triple_fault=0\n\
             romimage: file={bios}, options=fastboot\n\
             vgaromimage: file={vgabios}\n\
             ata0-master: type=cdrom, path=\"{iso}\", status=inserted\n\
             boot: cdrom\n\
             clock: sync=none\n\
             display_library: rfb, options=\"timeout=0\"\n\
             mouse: enabled=0\n\
             sound: waveoutdrv=dummy, waveindrv=dummy, midioutdrv=dummy\n\
             speaker: enabled=0\n\
             log: {log}\n\
             error: action=report\n\
             panic: action=fatal\n\
             com1: enabled=1, mode=socket-client, dev=127.0.0.1:{port}\n",
            name = self.name,
            megs = self.megs,
            model = self.model,
            cpus = self.cpus,
            ips = self.ips,
            bios = paths::BOCHS_BIOS,
            vgabios = paths::BOCHS_VGABIOS,
            iso = iso.display(),
            log = log.display(),
        )
    }

    /// Starts Bochs and accepts its serial connection.
    pub fn start(&self) -> Result<Machine> {
        let iso = resolve_iso(&self.iso)?;
        paths::require_file(paths::BOCHS_BIOS, "Bochs BIOS", "bochsbios")?;
        paths::require_file(paths::BOCHS_VGABIOS, "VGA BIOS", "vgabios")?;
        let slot = slots::acquire(SLOT_WAIT)?;
        let dir = Machine::prepare_dir(&self.name)?;
        let iso = snapshot_iso(&iso, &dir)?;
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?;
        let port = listener.local_addr()?.port();
        let log = dir.join("bochs.log");
        std::fs::write(dir.join("bochsrc"), self.bochsrc(&iso, &log, port))?;
        // The internal debugger stops at its prompt before the first instruction: `c`
        // continues. With stdin at /dev/null it never waits for a keyboard.
        std::fs::write(dir.join("cont.rc"), "c\n")?;
        // Starts are serialised until Bochs' VNC display has its port (`bochs_start_lock`); a
        // display that still found none is Bochs' screen, not the machine under test: such a
        // start is retried once, and said so.
        let mut attempt = 0;
        loop {
            attempt += 1;
            let starting = bochs_start_lock()?;
            let mut cmd = Command::new("bochs");
            cmd.args(["-q", "-f", "bochsrc", "-rc", "cont.rc"]).current_dir(&dir);
            let child = spawn_logged(cmd, &dir, "bochs")?;
            let mut proc = Proc::new(child, self.hard_limit);
            let stream = match accept(&listener, &mut proc, Duration::from_secs(30)) {
                Ok(s) => s,
                Err(e) => {
                    proc.kill();
                    // Bochs may die of its display before COM1 has connected.
                    let display = std::fs::read_to_string(&log).unwrap_or_default().contains("RFB could not bind any port");
                    if display && attempt == 1 {
                        drop(starting);
                        eprintln!("{}: Bochs could not open its VNC display (RFB ports 5900-5949); starting it again", self.name);
                        continue;
                    }
                    return Err(with_logs(e, &dir, &[log]));
                }
            };
            let failed = rfb_failed(&log);
            drop(starting);
            if failed && attempt == 1 {
                eprintln!("{}: Bochs could not open its VNC display (RFB ports 5900-5949); starting it again", self.name);
                proc.kill();
                continue;
            }
            return Machine::new(self.name.clone(), "Bochs", proc, stream, dir, slot, vec![log]);
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The running machine

/// An emulator process under a hard limit (watchdog thread + kill on drop).
struct Proc {
    child: Arc<Mutex<Child>>,
    watchdog: Option<(Sender<()>, JoinHandle<()>)>,
    started: Instant,
    deadline: Instant,
    limit: Duration,
}

impl Proc {
    fn new(child: Child, limit: Duration) -> Self {
        let child = Arc::new(Mutex::new(child));
        let (tx, rx) = mpsc::channel::<()>();
        let c = Arc::clone(&child);
        let started = Instant::now();
        let watchdog = std::thread::Builder::new()
            .name("emulator-watchdog".into())
            .spawn(move || {
                if let Err(RecvTimeoutError::Timeout) = rx.recv_timeout(limit) {
                    let mut c = c.lock().unwrap_or_else(|e| e.into_inner());
                    let _ = c.kill();
                    let _ = c.wait();
                }
            })
            .ok()
            .map(|h| (tx, h));
        Self { child, watchdog, started, deadline: started + limit, limit }
    }

    fn pid(&self) -> u32 {
        self.lock().id()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Child> {
        self.child.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn try_wait(&mut self) -> Option<ExitStatus> {
        self.lock().try_wait().ok().flatten()
    }

    fn kill(&mut self) {
        let mut c = self.lock();
        if c.try_wait().ok().flatten().is_none() {
            let _ = c.kill();
        }
        let _ = c.wait();
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill();
        if let Some((tx, h)) = self.watchdog.take() {
            drop(tx); // wakes the watchdog with Disconnected: it leaves without killing
            let _ = h.join();
        }
    }
}

/// One running emulator with a serial session. Killed on drop.
pub struct Machine {
    name: String,
    kind: &'static str,
    // Field order matters for drop: the serial session goes first (it joins its reader after
    // shutting the socket down), then the process is killed, then the slot is released.
    serial: Serial,
    proc: Proc,
    dir: PathBuf,
    logs: Vec<PathBuf>,
    _slot: Slot,
}

impl Machine {
    fn prepare_dir(name: &str) -> Result<PathBuf> {
        let dir = paths::systest_dir().join(paths::sanitize(name));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir)?;
        Ok(dir)
    }

    fn new(
        name: String,
        kind: &'static str,
        proc: Proc,
        stream: TcpStream,
        dir: PathBuf,
        slot: Slot,
        logs: Vec<PathBuf>,
    ) -> Result<Self> {
        let log = paths::systest_dir().join(format!("{}.log", paths::sanitize(&name)));
        let serial = Serial::new(stream, &log, proc.deadline)?;
        eprintln!(
            "[{name}] {kind} pid {} started (hard limit {:?}); serial log {}, files in {}",
            proc.pid(),
            proc.limit,
            log.display(),
            dir.display()
        );
        Ok(Self { name, kind, serial, proc, dir, logs, _slot: slot })
    }

    /// The test name this machine was started for.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// "QEMU" or "Bochs".
    pub fn kind(&self) -> &'static str {
        self.kind
    }

    /// What the emulator itself wrote so far: its stderr, its stdout, then each of its log
    /// files (each only grows, so lengths taken earlier mark what came after).
    pub fn emulator_logs(&self) -> Vec<String> {
        [self.dir.join("stderr"), self.dir.join("stdout")]
            .iter()
            .chain(&self.logs)
            .map(|p| String::from_utf8_lossy(&std::fs::read(p).unwrap_or_default()).into_owned())
            .collect()
    }

    /// Time since the emulator started.
    pub fn elapsed(&self) -> Duration {
        self.proc.started.elapsed()
    }

    /// The serial session (for what `Machine` does not wrap).
    pub fn serial(&mut self) -> &mut Serial {
        &mut self.serial
    }

    /// A report for a failed check: `msg`, the transcript tail, the emulator's log tails.
    pub fn error(&self, msg: &str) -> Error {
        let msg = format!("[{}] {} after {:.1?}: {msg}", self.name, self.kind, self.elapsed());
        self.decorate(self.serial.error(&msg))
    }

    fn decorate(&self, e: Error) -> Error {
        with_logs(e, &self.dir, &self.logs)
    }

    /// `Err(self.error(msg))` unless `cond`.
    pub fn check(&self, cond: bool, msg: impl FnOnce() -> String) -> Result<()> {
        if cond { Ok(()) } else { Err(self.error(&msg())) }
    }

    /// See [`Serial::expect`].
    pub fn expect<P: Pattern>(&mut self, pat: P, timeout: Duration) -> Result<Found> {
        self.serial.expect(pat, timeout).map_err(|e| self.decorate(e))
    }

    /// Waits for the first prompt, lets the line go quiet, and re-synchronises with an empty
    /// command (a stray byte left in the UART by its loopback self-test, PLATFORM.md, then
    /// ends up in that line and not in the first real command).
    pub fn boot_to_prompt(&mut self, timeout: Duration) -> Result<()> {
        self.wait_prompt(timeout)?;
        self.serial.settle(Duration::from_millis(300), Duration::from_secs(5));
        self.serial.send(b"\r").map_err(|e| self.decorate(e))?;
        self.wait_prompt(Duration::from_secs(30))?;
        eprintln!("[{}] prompt after {:.1?}", self.name, self.elapsed());
        Ok(())
    }

    /// See [`Serial::wait_prompt`].
    pub fn wait_prompt(&mut self, timeout: Duration) -> Result<Found> {
        self.serial.wait_prompt(timeout).map_err(|e| self.decorate(e))
    }

    /// See [`Serial::command`].
    pub fn command(&mut self, cmd: &str, timeout: Duration) -> Result<String> {
        let out = self.serial.command(cmd, timeout).map_err(|e| self.decorate(e))?;
        eprintln!("[{}] {:>7.1?} `{cmd}` → {} lines", self.name, self.elapsed(), out.lines().count());
        Ok(out)
    }

    /// See [`Serial::send`].
    pub fn send(&mut self, bytes: &[u8]) -> Result<()> {
        self.serial.send(bytes).map_err(|e| self.decorate(e))
    }

    /// Waits until the emulator process ends by itself (at most `timeout`, never past the hard
    /// limit). Exit codes are not judged: QEMU gives 0 for ACPI S5 and for a triple fault,
    /// Bochs 1 for all of its exits (PLATFORM.md).
    pub fn wait_exit(&mut self, timeout: Duration) -> Result<ExitStatus> {
        let start = Instant::now();
        let deadline = (start + timeout).min(self.proc.deadline);
        loop {
            if let Some(st) = self.proc.try_wait() {
                if Instant::now() >= self.proc.deadline {
                    return Err(self.error("the emulator was killed at the hard time limit"));
                }
                eprintln!(
                    "[{}] {} exited by itself after {:.1?}: {st}",
                    self.name,
                    self.kind,
                    self.elapsed()
                );
                return Ok(st);
            }
            if Instant::now() >= deadline {
                return Err(self
                    .error(&format!("the emulator did not exit by itself within {:.1?}", start.elapsed())));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Helpers

/// Appends the tails of the emulator's stderr/stdout and logs to a report.
fn with_logs(mut e: Error, dir: &Path, logs: &[PathBuf]) -> Error {
    for (file, lines) in [("stderr", 20), ("stdout", 20)] {
        let text = std::fs::read_to_string(dir.join(file)).unwrap_or_default();
        if !text.trim().is_empty() {
            e = e.with_section(
                &format!("emulator {file} ({})", dir.join(file).display()),
                &tail_lines(&text, lines),
            );
        }
    }
    for log in logs {
        let text = String::from_utf8_lossy(&std::fs::read(log).unwrap_or_default()).into_owned();
        if !text.trim().is_empty() {
            let errors = error_lines(&text, 20);
            if !errors.is_empty() {
                e = e.with_section(&format!("error and panic lines of {}", log.display()), &errors);
            }
            e = e.with_section(&format!("tail of {}", log.display()), &tail_lines(&text, 25));
        }
    }
    e
}

/// The error (`e`) and panic (`p`) lines of a Bochs log (`00127897435e[CPU0  ] …`): the first
/// and the last `max / 2` of them.
fn error_lines(log: &str, max: usize) -> String {
    let hits: Vec<&str> = log
        .lines()
        .filter(|l| {
            let rest = l.trim_start_matches(|c: char| c.is_ascii_digit());
            rest.len() < l.len() && (rest.starts_with("e[") || rest.starts_with("p["))
        })
        .collect();
    let mut out = String::new();
    if hits.len() <= max {
        hits.iter().for_each(|l| out.push_str(&format!("{l}\n")));
    } else {
        hits[..max / 2].iter().for_each(|l| out.push_str(&format!("{l}\n")));
        out.push_str(&format!("[… {} more]\n", hits.len() - max));
        hits[hits.len() - max / 2..].iter().for_each(|l| out.push_str(&format!("{l}\n")));
    }
    out
}

/// Copies the ISO into the test's directory and boots the copy: `make iso` may rewrite the
/// original while an emulator is still reading it.
fn snapshot_iso(iso: &Path, dir: &Path) -> Result<PathBuf> {
    let copy = dir.join("nvmx.iso");
    std::fs::copy(iso, &copy)
        .map_err(|e| Error::new(format!("cannot copy {} to {}: {e}", iso.display(), copy.display())))?;
    Ok(copy)
}

/// Spawns `cmd` with stdin from /dev/null and stdout/stderr into `dir`.
fn spawn_logged(mut cmd: Command, dir: &Path, what: &str) -> Result<Child> {
    cmd.stdin(Stdio::null())
        .stdout(File::create(dir.join("stdout"))?)
        .stderr(File::create(dir.join("stderr"))?);
    cmd.spawn().map_err(|e| Error::new(format!("cannot start `{what}`: {e} (is it installed and on PATH?)")))
}

/// Held while one Bochs starts, by every process of this machine: Bochs' VNC display binds
/// the first free port from 5900 (SO_REUSEADDR) and then listens; when two Bochs start at the
/// same moment both can bind 5900, the second's listen fails, and its socket — already bound —
/// fails every later bind, so it gives up on all 50 ports and exits ("RFB could not bind any
/// port", seen in `bochs.log`: one "Could not listen", 49 "Could not bind"). Release it once
/// [`rfb_failed`] has the display's verdict.
pub fn bochs_start_lock() -> Result<File> {
    let f = std::fs::OpenOptions::new().create(true).truncate(false).write(true).open(std::env::temp_dir().join("nvmx-bochs-start.lock"))?;
    f.lock()?;
    Ok(f)
}

/// Whether Bochs' log at `log` says its VNC display found no port, waiting up to 5 s for the
/// display's verdict (it follows COM1's connection at once).
pub fn rfb_failed(log: &Path) -> bool {
    let until = Instant::now() + Duration::from_secs(5);
    while Instant::now() < until {
        let text = std::fs::read_to_string(log).unwrap_or_default();
        if text.contains("RFB could not bind any port") {
            return true;
        }
        if text.contains("listening for connections on port") {
            return false;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    false
}

/// A TCP port on 127.0.0.1 that was free a moment ago.
fn free_port() -> Result<u16> {
    let l = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?;
    Ok(l.local_addr()?.port())
}

/// Connects to a listening emulator, retrying until it listens, exits, or `timeout` passes.
fn connect(port: u16, proc: &mut Proc, timeout: Duration) -> Result<TcpStream> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Ok(s) = TcpStream::connect((Ipv4Addr::LOCALHOST, port)) {
            return Ok(s);
        }
        if let Some(st) = proc.try_wait() {
            return Err(Error::new(format!(
                "the emulator exited ({st}) before its serial port listened on {port}"
            )));
        }
        if Instant::now() >= deadline {
            return Err(Error::new(format!(
                "the emulator's serial port {port} did not listen within {timeout:?}"
            )));
        }
        std::thread::sleep(Duration::from_millis(25));
    }
}

/// Accepts the emulator's serial connection, unless it exits or `timeout` passes first.
fn accept(listener: &TcpListener, proc: &mut Proc, timeout: Duration) -> Result<TcpStream> {
    listener.set_nonblocking(true)?;
    let deadline = Instant::now() + timeout;
    loop {
        match listener.accept() {
            Ok((s, _)) => {
                s.set_nonblocking(false)?;
                return Ok(s);
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(e) => return Err(e.into()),
        }
        if let Some(st) = proc.try_wait() {
            return Err(Error::new(format!("the emulator exited ({st}) before connecting its serial port")));
        }
        if Instant::now() >= deadline {
            return Err(Error::new(format!(
                "the emulator did not connect its serial port within {timeout:?}"
            )));
        }
        std::thread::sleep(Duration::from_millis(25));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bochsrc_has_the_lines_bochs_needs() {
        let rc = Bochs::new("t", "corei7_haswell_4770").cpus(4).megs(128).bochsrc(
            Path::new("/x/nvmx.iso"),
            Path::new("/l/bochs.log"),
            4242,
        );
        for line in [
            "megs: 128\n",
            "cpu: model=corei7_haswell_4770, count=4, ips=4000000, reset_on_triple_fault=0\n",
            "romimage: file=/usr/share/bochs/BIOS-bochs-latest, options=fastboot\n",
            "vgaromimage: file=/usr/share/vgabios/vgabios.bin\n",
            "ata0-master: type=cdrom, path=\"/x/nvmx.iso\", status=inserted\n",
            "boot: cdrom\n",
            "sound: waveoutdrv=dummy, waveindrv=dummy, midioutdrv=dummy\n",
            "display_library: rfb, options=\"timeout=0\"\n",
            "log: /l/bochs.log\n",
            "error: action=report\n",
            "com1: enabled=1, mode=socket-client, dev=127.0.0.1:4242\n",
        ] {
            assert!(rc.contains(line), "missing {line:?} in\n{rc}");
        }
        assert!(rc.contains("clock: sync=none"));
    }

    #[test]
    fn bochs_error_lines_are_picked_from_the_log() {
        let log = "00000000000i[RFB   ] listening\n00127897435e[CPU0  ] interrupt(): bad\n\
                   00127897435p[CPU0  ] >>PANIC<< exception(): 3rd (13)\nplain e[ line\n";
        assert_eq!(
            error_lines(log, 20),
            "00127897435e[CPU0  ] interrupt(): bad\n00127897435p[CPU0  ] >>PANIC<< exception(): 3rd (13)\n"
        );
        let many: String = (0..30).map(|i| format!("{i:011}e[X] {i}\n")).collect();
        let out = error_lines(&many, 4);
        assert_eq!(out.lines().count(), 5, "{out}");
        assert!(out.contains("[… 26 more]"), "{out}");
    }

    #[test]
    fn qemu_args_follow_the_platform_notes() {
        let q = Qemu::new("t").smp(4);
        let a = q.args(Path::new("/x/nvmx.iso"), 5555).join(" ");
        assert!(a.contains("-cdrom /x/nvmx.iso"), "{a}");
        assert!(a.contains("-smp 4"), "{a}");
        assert!(a.contains("-m 256M"), "{a}");
        assert!(a.contains("-no-reboot"), "{a}");
        assert!(a.contains("-serial tcp:127.0.0.1:5555,server=on,wait=on"), "{a}");
        assert!(a.contains("isa-debug-exit,iobase=0xf4,iosize=0x04"), "{a}");
        assert!(!a.contains("-bios"), "{a}");
        let a = q.uefi(true).args(Path::new("/x/nvmx.iso"), 5555).join(" ");
        assert!(a.contains("-bios /usr/share/ovmf/OVMF.fd"), "{a}");
    }

    #[test]
    fn watchdog_kills_at_the_hard_limit() {
        let child = Command::new("sleep").arg("30").spawn().unwrap();
        let t = Instant::now();
        let mut p = Proc::new(child, Duration::from_millis(300));
        while p.try_wait().is_none() {
            assert!(t.elapsed() < Duration::from_secs(10), "not killed");
            std::thread::sleep(Duration::from_millis(20));
        }
        assert!(t.elapsed() >= Duration::from_millis(250));
    }

    #[test]
    fn drop_kills_the_emulator() {
        let child = Command::new("sleep").arg("30").spawn().unwrap();
        let pid = child.id();
        let p = Proc::new(child, Duration::from_secs(60));
        let t = Instant::now();
        drop(p);
        assert!(t.elapsed() < Duration::from_secs(5));
        // Reaped and gone: /proc/<pid> no longer exists (or belongs to a different process).
        let stat = std::fs::read_to_string(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        assert!(!stat.starts_with("sleep"), "still running: {stat}");
    }

    #[test]
    fn accept_notices_an_emulator_that_died() {
        let l = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
        let child = Command::new("true").spawn().unwrap();
        let mut p = Proc::new(child, Duration::from_secs(60));
        let e = accept(&l, &mut p, Duration::from_secs(10)).unwrap_err();
        assert!(e.message().contains("exited"), "{e}");
    }
}
