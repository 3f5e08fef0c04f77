//! The serial session: a TCP stream to the emulator's COM1.
//!
//! A reader thread appends every received byte to the transcript (and to the test's log file);
//! `expect` searches the transcript from a cursor that only moves forward, so each expectation
//! consumes what it matched and the next one looks after it.

use crate::error::tail_lines;
use crate::{Error, PROMPT, Result, output};
use regex::bytes::Regex;
use std::fs::File;
use std::io::{Read, Write};
use std::net::{Shutdown, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// How many transcript lines a failure report shows.
pub const REPORT_LINES: usize = 60;

/// Something `expect` can look for: a literal (`&str`, `String`) or a regex (`regex::Regex`).
pub trait Pattern {
    /// The pattern as a byte regex (literals escaped).
    fn to_regex(&self) -> Regex;
    /// How to show it in a report.
    fn describe(&self) -> String;
}

impl Pattern for &str {
    fn to_regex(&self) -> Regex {
        Regex::new(&regex::escape(self)).expect("an escaped literal is a valid regex")
    }
    fn describe(&self) -> String {
        format!("{self:?}")
    }
}

impl Pattern for String {
    fn to_regex(&self) -> Regex {
        self.as_str().to_regex()
    }
    fn describe(&self) -> String {
        self.as_str().describe()
    }
}

impl Pattern for regex::Regex {
    fn to_regex(&self) -> Regex {
        Regex::new(self.as_str()).expect("a valid regex is a valid byte regex")
    }
    fn describe(&self) -> String {
        format!("/{}/", self.as_str())
    }
}

impl Pattern for &regex::Regex {
    fn to_regex(&self) -> Regex {
        (*self).to_regex()
    }
    fn describe(&self) -> String {
        (*self).describe()
    }
}

/// What `expect` matched.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Found {
    /// The whole match.
    pub text: String,
    /// Capture groups 1.. (`None` where a group did not take part).
    pub groups: Vec<Option<String>>,
    /// Everything between the previous cursor and the start of the match.
    pub before: String,
}

impl Found {
    /// Group `i` (1-based, like regex captures), or "" if it did not take part.
    pub fn group(&self, i: usize) -> &str {
        i.checked_sub(1).and_then(|i| self.groups.get(i)).and_then(|g| g.as_deref()).unwrap_or("")
    }
}

#[derive(Default)]
struct Transcript {
    data: Vec<u8>,
    /// The emulator closed the connection (or reading failed).
    closed: Option<String>,
}

type Shared = Arc<(Mutex<Transcript>, Condvar)>;

/// A serial session. See the module documentation.
pub struct Serial {
    stream: TcpStream,
    shared: Shared,
    cursor: usize,
    reader: Option<JoinHandle<()>>,
    log_path: PathBuf,
    /// No wait goes past this instant (the machine's hard limit).
    deadline: Instant,
    /// Delay between two bytes sent, so the kernel's UART FIFO cannot overrun.
    pace: Duration,
    /// Output that ends every expectation at once (a kernel panic): no point waiting for a
    /// prompt that cannot come.
    fatal: Vec<Regex>,
}

/// What the kernel prints when it gives up (`kernel/src/panic.rs`, `main.rs`).
pub const FATAL_PATTERNS: &[&str] = &[r"!!! cpu \d+: kernel panic[^\r\n]*", r"nvmx: [^\r\n]*; halting"];

impl Serial {
    /// Starts a session on `stream`, logging received bytes to `log_path` (truncated).
    pub fn new(stream: TcpStream, log_path: &Path, deadline: Instant) -> Result<Self> {
        if let Some(dir) = log_path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let mut log = File::create(log_path)?;
        let shared: Shared = Arc::default();
        let mut rd = stream.try_clone()?;
        let sh = Arc::clone(&shared);
        let reader = std::thread::Builder::new().name("serial-reader".into()).spawn(move || {
            let mut buf = [0u8; 4096];
            let why = loop {
                match rd.read(&mut buf) {
                    Ok(0) => break "the emulator closed the serial connection".to_string(),
                    Ok(n) => {
                        let _ = log.write_all(&buf[..n]);
                        let _ = log.flush();
                        let (m, cv) = &*sh;
                        m.lock().unwrap_or_else(|e| e.into_inner()).data.extend_from_slice(&buf[..n]);
                        cv.notify_all();
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                    Err(e) => break format!("reading the serial connection failed: {e}"),
                }
            };
            let (m, cv) = &*sh;
            m.lock().unwrap_or_else(|e| e.into_inner()).closed = Some(why);
            cv.notify_all();
        })?;
        let _ = stream.set_nodelay(true);
        let pace = std::env::var("NVMX_SERIAL_PACE_MS")
            .ok()
            .and_then(|v| v.parse().ok())
            .map_or(Duration::from_millis(2), Duration::from_millis);
        Ok(Self {
            stream,
            shared,
            cursor: 0,
            reader: Some(reader),
            log_path: log_path.to_path_buf(),
            deadline,
            pace,
            fatal: FATAL_PATTERNS.iter().map(|p| Regex::new(p).expect("valid regex")).collect(),
        })
    }

    /// The whole transcript so far (lossy UTF-8).
    pub fn transcript(&self) -> String {
        let t = self.lock();
        String::from_utf8_lossy(&t.data).into_owned()
    }

    /// What arrived after the cursor (not consumed by an expectation yet).
    pub fn unread(&self) -> String {
        let t = self.lock();
        String::from_utf8_lossy(&t.data[self.cursor.min(t.data.len())..]).into_owned()
    }

    /// Where the transcript is logged.
    pub fn log_path(&self) -> &Path {
        &self.log_path
    }

    /// A report: `msg`, then the last lines of the transcript.
    pub fn error(&self, msg: &str) -> Error {
        let text = output::clean(&self.transcript());
        Error::new(msg.to_string()).with_section(
            &format!("last {REPORT_LINES} lines of the serial transcript ({})", self.log_path.display()),
            &tail_lines(&text, REPORT_LINES),
        )
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Transcript> {
        self.shared.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Also fail every expectation at once when `pat` shows up anywhere in the transcript.
    pub fn fail_fast_on<P: Pattern>(&mut self, pat: P) {
        self.fatal.push(pat.to_regex());
    }

    /// Waits until `pat` appears after the cursor, at most `timeout` (and never past the
    /// machine's hard limit); moves the cursor past the match.
    pub fn expect<P: Pattern>(&mut self, pat: P, timeout: Duration) -> Result<Found> {
        let re = pat.to_regex();
        let start = Instant::now();
        let deadline = (start + timeout).min(self.deadline);
        let (m, cv) = &*self.shared;
        let mut t = m.lock().unwrap_or_else(|e| e.into_inner());
        loop {
            let from = self.cursor.min(t.data.len());
            if let Some(f) = self.fatal.iter().find_map(|f| f.find(&t.data)) {
                let line = String::from_utf8_lossy(f.as_bytes()).into_owned();
                drop(t);
                return Err(self.error(&format!(
                    "expected {} on the serial line, but the kernel reported a fatal error: {line:?}",
                    pat.describe()
                )));
            }
            if let Some(c) = re.captures(&t.data[from..]) {
                let whole = c.get(0).expect("group 0 always matches");
                let found = Found {
                    text: String::from_utf8_lossy(whole.as_bytes()).into_owned(),
                    groups: (1..c.len())
                        .map(|i| c.get(i).map(|g| String::from_utf8_lossy(g.as_bytes()).into_owned()))
                        .collect(),
                    before: String::from_utf8_lossy(&t.data[from..from + whole.start()]).into_owned(),
                };
                self.cursor = from + whole.end();
                return Ok(found);
            }
            let why = if let Some(closed) = &t.closed {
                closed.clone()
            } else {
                let now = Instant::now();
                if now >= deadline {
                    if deadline == self.deadline {
                        "the machine's hard time limit was reached".to_string()
                    } else {
                        format!("timed out after {timeout:?}")
                    }
                } else {
                    t = cv.wait_timeout(t, deadline - now).unwrap_or_else(|e| e.into_inner()).0;
                    continue;
                }
            };
            drop(t);
            return Err(self.error(&format!(
                "expected {} on the serial line, but {why} (waited {:.1?}).",
                pat.describe(),
                start.elapsed()
            )));
        }
    }

    /// Waits for the prompt `nvmx> `.
    pub fn wait_prompt(&mut self, timeout: Duration) -> Result<Found> {
        self.expect(PROMPT, timeout)
    }

    /// Waits until nothing arrived for `quiet` (at most `timeout`), then consumes everything.
    pub fn settle(&mut self, quiet: Duration, timeout: Duration) {
        let deadline = (Instant::now() + timeout).min(self.deadline);
        let mut len = self.lock().data.len();
        let mut since = Instant::now();
        while Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
            let now_len = self.lock().data.len();
            if now_len != len {
                len = now_len;
                since = Instant::now();
            } else if since.elapsed() >= quiet {
                break;
            }
        }
        let len = self.lock().data.len();
        self.cursor = len;
    }

    /// Sends raw bytes, paced (see `NVMX_SERIAL_PACE_MS`, default 2 ms a byte).
    pub fn send(&mut self, bytes: &[u8]) -> Result<()> {
        let res = if self.pace.is_zero() {
            self.stream.write_all(bytes).and_then(|()| self.stream.flush())
        } else {
            bytes.iter().try_for_each(|b| {
                self.stream.write_all(std::slice::from_ref(b))?;
                self.stream.flush()?;
                std::thread::sleep(self.pace);
                Ok(())
            })
        };
        res.map_err(|e| self.error(&format!("sending {:?} failed: {e}", String::from_utf8_lossy(bytes))))
    }

    /// Sends `cmd` + `\r`, collects everything up to the next prompt and returns the command's
    /// output: without the echoed command line, without `\r` and escape sequences.
    ///
    /// Call it when the cursor is just after a prompt (after `wait_prompt` or another command).
    ///
    /// A log line from another core while the command is typed is printed above the prompt,
    /// which is then drawn again with the partial line (a line editor's redraw): the prompt
    /// that ends the command is the first one after the echoed line's end, `cmd` + line end.
    pub fn command(&mut self, cmd: &str, timeout: Duration) -> Result<String> {
        self.send(format!("{cmd}\r").as_bytes())?;
        // The editor's CRLF becomes CR CR LF on COM1 (the UART path turns LF into CRLF).
        let echo = regex::Regex::new(&format!("{}\r*\n", regex::escape(cmd))).expect("escaped");
        self.expect(echo, timeout).map_err(|e| Error::new(format!("command `{cmd}` was not echoed:\n{}", e.message())))?;
        let found = self.expect(PROMPT, timeout).map_err(|e| {
            Error::new(format!("command `{cmd}` did not give the prompt back:\n{}", e.message()))
        })?;
        Ok(output::command_output(&found.before, cmd))
    }

    /// Waits until the emulator closes the connection (at most `timeout`). True if it did.
    pub fn wait_closed(&self, timeout: Duration) -> bool {
        let deadline = (Instant::now() + timeout).min(self.deadline);
        let (m, cv) = &*self.shared;
        let mut t = m.lock().unwrap_or_else(|e| e.into_inner());
        while t.closed.is_none() {
            let now = Instant::now();
            if now >= deadline {
                return false;
            }
            t = cv.wait_timeout(t, deadline - now).unwrap_or_else(|e| e.into_inner()).0;
        }
        true
    }
}

impl Drop for Serial {
    fn drop(&mut self) {
        let _ = self.stream.shutdown(Shutdown::Both);
        if let Some(r) = self.reader.take() {
            let _ = r.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::BufRead;
    use std::net::TcpListener;

    fn log(name: &str) -> PathBuf {
        crate::paths::systest_dir().join("unit").join(format!("{name}.log"))
    }

    /// A fake kernel: prints a banner, a stray byte, the prompt, then answers lines like the
    /// shell does (echo, output, prompt).
    fn fake_kernel(listener: TcpListener) -> JoinHandle<()> {
        std::thread::spawn(move || {
            let (s, _) = listener.accept().unwrap();
            let mut w = s.try_clone().unwrap();
            w.write_all(b"nvmx booting\r\n\xae\x1b[0mnvmx> ").unwrap();
            let mut r = std::io::BufReader::new(s);
            let mut line = Vec::new();
            loop {
                line.clear();
                if r.read_until(b'\r', &mut line).unwrap() == 0 {
                    return;
                }
                let cmd = String::from_utf8_lossy(&line[..line.len() - 1]).into_owned();
                let answer = match cmd.as_str() {
                    "" => String::new(),
                    "cpus" => {
                        "  cpu  apic  state\r\n    0  0x0   online  (boot)\r\ntotal: 1 online, 0 failed\r\n"
                            .into()
                    }
                    "poweroff" => {
                        w.write_all(b"poweroff\r\npowering off\r\n").unwrap();
                        return;
                    }
                    other => format!("error: unknown command '{other}' (try 'help')\r\n"),
                };
                w.write_all(format!("{cmd}\r\n{answer}nvmx> ").as_bytes()).unwrap();
            }
        })
    }

    fn session(name: &str, limit: Duration) -> (Serial, JoinHandle<()>) {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        let k = fake_kernel(l);
        let s = TcpStream::connect(("127.0.0.1", port)).unwrap();
        (Serial::new(s, &log(name), Instant::now() + limit).unwrap(), k)
    }

    #[test]
    fn commands_return_their_output_without_echo() {
        let (mut s, k) = session("commands", Duration::from_secs(20));
        s.wait_prompt(Duration::from_secs(5)).unwrap();
        assert_eq!(s.command("", Duration::from_secs(5)).unwrap(), "");
        let out = s.command("cpus", Duration::from_secs(5)).unwrap();
        assert_eq!(out, "  cpu  apic  state\n    0  0x0   online  (boot)\ntotal: 1 online, 0 failed\n");
        let out = s.command("cpuz", Duration::from_secs(5)).unwrap();
        assert_eq!(out, "error: unknown command 'cpuz' (try 'help')\n");
        s.send(b"poweroff\r").unwrap();
        s.expect("powering off", Duration::from_secs(5)).unwrap();
        assert!(s.wait_closed(Duration::from_secs(5)));
        k.join().unwrap();
        let logged = std::fs::read(s.log_path()).unwrap();
        assert!(logged.starts_with(b"nvmx booting\r\n"));
    }

    #[test]
    fn expect_regex_captures_and_moves_the_cursor() {
        let (mut s, _k) = session("regex", Duration::from_secs(20));
        s.wait_prompt(Duration::from_secs(5)).unwrap();
        s.send(b"cpus\r").unwrap();
        let re = regex::Regex::new(r"total: (\d+) online, (\d+) failed").unwrap();
        let f = s.expect(&re, Duration::from_secs(5)).unwrap();
        assert_eq!((f.group(1), f.group(2), f.group(3)), ("1", "0", ""));
        assert!(f.before.contains("(boot)"));
        // Consumed: the same text is not found again.
        let e = s.expect(&re, Duration::from_millis(200)).unwrap_err();
        assert!(e.message().contains("timed out"), "{e}");
    }

    #[test]
    fn failed_expectation_reports_the_transcript_tail() {
        let (mut s, _k) = session("report", Duration::from_secs(20));
        let e = s.expect("never printed", Duration::from_millis(300)).unwrap_err();
        let m = e.message();
        assert!(m.contains("\"never printed\""), "{m}");
        assert!(m.contains("last 60 lines"), "{m}");
        assert!(m.contains("nvmx booting"), "{m}");
    }

    #[test]
    fn the_hard_limit_caps_every_wait() {
        let (mut s, _k) = session("limit", Duration::from_millis(300));
        let t = Instant::now();
        let e = s.expect("never printed", Duration::from_secs(30)).unwrap_err();
        assert!(t.elapsed() < Duration::from_secs(5));
        assert!(e.message().contains("hard time limit"), "{e}");
    }

    #[test]
    fn a_kernel_panic_fails_fast() {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        let k = std::thread::spawn(move || {
            let (mut s, _) = l.accept().unwrap();
            s.write_all(b"boot\r\n\n!!! cpu 1: kernel panic: oops at x.rs:1\r\n").unwrap();
            std::thread::sleep(Duration::from_millis(500));
        });
        let st = TcpStream::connect(("127.0.0.1", port)).unwrap();
        let mut s = Serial::new(st, &log("panic"), Instant::now() + Duration::from_secs(30)).unwrap();
        let t = Instant::now();
        let e = s.wait_prompt(Duration::from_secs(20)).unwrap_err();
        assert!(t.elapsed() < Duration::from_secs(2));
        assert!(e.message().contains("fatal error: \"!!! cpu 1: kernel panic: oops at x.rs:1\""), "{e}");
        k.join().unwrap();
    }

    #[test]
    fn a_closed_connection_fails_fast() {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        let k = std::thread::spawn(move || {
            let (mut s, _) = l.accept().unwrap();
            s.write_all(b"bye\r\n").unwrap();
        });
        let st = TcpStream::connect(("127.0.0.1", port)).unwrap();
        let mut s = Serial::new(st, &log("closed"), Instant::now() + Duration::from_secs(30)).unwrap();
        k.join().unwrap();
        let t = Instant::now();
        let e = s.wait_prompt(Duration::from_secs(20)).unwrap_err();
        assert!(t.elapsed() < Duration::from_secs(5));
        assert!(e.message().contains("closed the serial connection"), "{e}");
    }
}
