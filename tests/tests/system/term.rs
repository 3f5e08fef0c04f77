//! What a user sees (issue 14): `make run`'s terminal shows GRUB and nvmx only, log lines from
//! other cores never break the line being typed, `top` redraws its live view in place, and
//! `make plot` draws the counters a run produced.

use crate::common::BOCHS;
use nvmx_tests::{Bochs, Error, Machine, Result, output, paths, slots};
use regex::Regex;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// A terminal as big as needed (no scrolling) that understands what nvmx sends: printable
/// characters, CR, LF, BS, `ESC [ n K`, `ESC [ n J`, `ESC [ n H`. Other escapes are skipped.
struct Term {
    lines: Vec<Vec<char>>,
    row: usize,
    col: usize,
}

impl Term {
    fn render(bytes: &str) -> Term {
        let mut t = Term { lines: vec![Vec::new()], row: 0, col: 0 };
        let mut chars = bytes.chars().peekable();
        while let Some(c) = chars.next() {
            match c {
                '\r' => t.col = 0,
                '\n' => {
                    t.row += 1;
                    if t.lines.len() <= t.row {
                        t.lines.push(Vec::new());
                    }
                }
                '\x08' => t.col = t.col.saturating_sub(1),
                '\x1b' => {
                    if chars.peek() != Some(&'[') {
                        chars.next();
                        continue;
                    }
                    chars.next();
                    let mut param = String::new();
                    let mut fin = ' ';
                    for c in chars.by_ref() {
                        if ('\x40'..='\x7e').contains(&c) {
                            fin = c;
                            break;
                        }
                        param.push(c);
                    }
                    let n: usize = param.split(';').next().and_then(|p| p.parse().ok()).unwrap_or(0);
                    match fin {
                        'K' => t.lines[t.row].truncate(t.col),
                        'J' if n == 2 => t.lines.iter_mut().for_each(Vec::clear),
                        'J' => {
                            t.lines[t.row].truncate(t.col);
                            t.lines.truncate(t.row + 1);
                        }
                        'H' => {
                            t.row = n.max(1) - 1;
                            t.col = 0;
                            while t.lines.len() <= t.row {
                                t.lines.push(Vec::new());
                            }
                        }
                        _ => {}
                    }
                }
                c if !c.is_control() => {
                    let line = &mut t.lines[t.row];
                    while line.len() < t.col {
                        line.push(' ');
                    }
                    if t.col < line.len() {
                        line[t.col] = c;
                    } else {
                        line.push(c);
                    }
                    t.col += 1;
                }
                _ => {}
            }
        }
        t
    }

    fn text(&self) -> Vec<String> {
        self.lines.iter().map(|l| l.iter().collect::<String>().trim_end().to_string()).collect()
    }
}

/// Bochs haswell × 2, nested forum L1s running forever: a log line while a command is being
/// typed, `top`, then the counters as CSV for `make plot`.
#[test]
fn bochs_term_redraw_top_plot_haswell_2cpu() -> Result<()> {
    let t = BOCHS;
    let name = "bochs_term_redraw_top_plot_haswell_2cpu";
    let mut m = Bochs::new(name, "corei7_haswell_4770").cpus(2).hard_limit(Duration::from_secs(420)).start()?;
    m.boot_to_prompt(t.boot)?;

    // 1. Core 1's L1 restarts and logs a line while `sta` is typed at the prompt: the line
    // goes above, the prompt and `sta` come back below it, and typing goes on.
    // The new L1's first log line normally comes well after the prompt (L0 sets up 32 MiB
    // first); should it beat the prompt, Ctrl-C and try again.
    let start = m.serial().transcript().len();
    let log = Regex::new(r"\r\x1b\[K\[INFO  cpu1\] l1: cpu 1: \d+ MiB at host [^\r\n]*\r\nnvmx> ").expect("regex");
    for attempt in 1..=3 {
        m.send(b"l1 restart 1\r")?;
        m.wait_prompt(t.command)?;
        m.send(b"sta")?;
        match m.expect(&log, Duration::from_secs(30)) {
            Ok(_) => break,
            Err(e) if attempt == 3 => return Err(e),
            Err(_) => {
                m.send(b"\x03")?;
                m.wait_prompt(t.command)?;
            }
        }
    }
    let out = m.command("ts 1", t.command)?;
    m.check(out.starts_with("cpu 1:") && out.contains(" L1 "), || format!("`sta` + `ts 1` did not run `stats 1`:\n{out}"))?;
    let seen = m.serial().transcript()[start..].to_string();
    let screen = Term::render(&seen).text();
    m.check(!screen.iter().any(|l| l.starts_with("nvmx> [")), || {
        format!("a log line landed on the prompt line:\n{}", screen.join("\n"))
    })?;
    let at = screen.iter().rposition(|l| l.starts_with("[INFO  cpu1] l1: cpu 1: ")).unwrap_or(0);
    m.check(screen.get(at + 1).map(String::as_str) == Some("nvmx> stats 1"), || {
        format!("below the log line the terminal should show `nvmx> stats 1`:\n{}", screen.join("\n"))
    })?;

    // 2. `top`: two frames drawn in place, rates > 0 on both running L1s, a key ends it.
    let start = m.serial().transcript().len();
    m.send(b"top\r")?;
    m.expect("nvmx top #1:", t.command)?;
    m.expect("nvmx top #2:", t.command)?;
    m.expect("\x1b[J", t.command)?;
    let frames = m.serial().transcript()[start..].to_string();
    let screen = Term::render(&frames).text();
    let shown: Vec<&String> = screen.iter().filter(|l| !l.is_empty()).collect();
    let dump = || format!("the terminal after two frames:\n{}", screen.join("\n"));
    m.check(shown.first().is_some_and(|l| l.starts_with("nvmx top #2: exits/s over the last")), || {
        format!("frame 2 must be drawn over frame 1 from the top. {}", dump())
    })?;
    m.check(shown.len() <= 23 && shown.iter().all(|l| l.chars().count() <= 80), || format!("more than 23 lines or 80 columns. {}", dump()))?;
    let summary = Regex::new(r"^cpu (\d) running: (\d+) exits/s, L0 share (\d+)\.(\d\d) %$").expect("regex");
    let row = Regex::new(r"^ +(\d)  (L1|L2 \(L0\)|L2 \(to L1\)) +(\d+) (\S+) +(\d+) +\d+\.\d\d % +(\d+)$").expect("regex");
    let mut cores = Vec::new();
    let mut rates: Vec<(usize, u64)> = Vec::new();
    for l in &shown {
        if let Some(c) = summary.captures(l) {
            let rate: u64 = c[2].parse().unwrap_or(0);
            m.check(rate > 0, || format!("cpu {} shows no exits per second. {}", &c[1], dump()))?;
            cores.push(c[1].parse::<usize>().unwrap_or(9));
        } else if let Some(c) = row.captures(l) {
            rates.push((c[1].parse().unwrap_or(9), c[5].parse().unwrap_or(0)));
        }
    }
    m.check(cores == [0, 1], || format!("expected a summary line for cpus 0 and 1. {}", dump()))?;
    for cpu in [0, 1] {
        let r: Vec<u64> = rates.iter().filter(|(c, _)| *c == cpu).map(|(_, r)| *r).collect();
        m.check(!r.is_empty() && r.iter().all(|&x| x > 0), || format!("cpu {cpu}: no reason rows with rates > 0. {}", dump()))?;
        m.check(r.windows(2).all(|w| w[0] >= w[1]), || format!("cpu {cpu}: rows not sorted by rate. {}", dump()))?;
    }
    m.check(shown.iter().any(|l| l.contains("  L1  ")) && shown.iter().any(|l| l.contains("  L2 (to L1)  ")), || {
        format!("L1 and reflected L2 exits must both show, levels apart. {}", dump())
    })?;
    m.send(b"q")?;
    m.wait_prompt(t.command)?;
    let out = m.command("cpus", t.command)?;
    m.check(out.contains("total: 2 online"), || format!("after `top` the shell must work again:\n{out}"))?;

    // 3. The counters as CSV, as `make bench` saves them, then `make plot` on them.
    let dir = paths::systest_dir().join(name);
    let stats = m.command("stats --csv", t.command)?;
    std::fs::write(dir.join("stats.csv"), &stats)?;
    let out = m.command("bench 200 --csv", Duration::from_secs(240))?;
    let bench: Vec<&str> = out.lines().filter(|l| l.starts_with("bench,")).collect();
    m.check(bench.iter().any(|l| l.contains(",off,L1,23,vmread,")), || format!("`bench --csv` gave no VMREAD row:\n{out}"))?;
    std::fs::write(dir.join("bench.csv"), format!("bench,cpu,shadowing,from,reason,name,exits,l0_cycles\n{}\n", bench.join("\n")))?;
    crate::common::poweroff(&mut m, t)?;
    plot(&m, &dir)
}

/// `make plot` on the CSV files in `dir`: PNG and SVG for both, real pictures.
fn plot(m: &Machine, dir: &Path) -> Result<()> {
    let out = Command::new("make")
        .args(["-s", "--no-print-directory", "plot"])
        .arg(format!("BENCH_CSV={}", dir.join("bench.csv").display()))
        .arg(format!("STATS_CSV={}", dir.join("stats.csv").display()))
        .arg(format!("PLOT_DIR={}", dir.display()))
        .current_dir(paths::workspace())
        .output()?;
    let said = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    m.check(out.status.success(), || format!("`make plot` failed:\n{said}"))?;
    for stem in ["bench", "stats"] {
        let png = dir.join(format!("{stem}.png"));
        let decoder = png::Decoder::new(std::fs::File::open(&png)?);
        let mut reader = decoder.read_info().map_err(|e| m.error(&format!("{}: not a PNG: {e}", png.display())))?;
        let mut buf = vec![0; reader.output_buffer_size()];
        let info = reader.next_frame(&mut buf).map_err(|e| m.error(&format!("{}: bad PNG data: {e}", png.display())))?;
        m.check(info.color_type == png::ColorType::Rgba || info.color_type == png::ColorType::Rgb, || {
            format!("{}: colour type {:?}, expected RGB(A)", png.display(), info.color_type)
        })?;
        m.check(info.bit_depth == png::BitDepth::Eight, || format!("{}: bit depth {:?}", png.display(), info.bit_depth))?;
        // Bars, not just anti-aliased text and axes: at least two saturated colours covering
        // 500 pixels or more each (a legend swatch is far smaller).
        let mut area: std::collections::BTreeMap<&[u8], usize> = std::collections::BTreeMap::new();
        for p in buf[..info.buffer_size()].chunks(info.color_type.samples()) {
            let (hi, lo) = (p[..3].iter().max().copied().unwrap_or(0), p[..3].iter().min().copied().unwrap_or(0));
            if hi - lo > 60 {
                *area.entry(&p[..3]).or_default() += 1;
            }
        }
        let big = area.values().filter(|&&n| n >= 500).count();
        m.check(info.width >= 400 && info.height >= 300 && big >= 2, || {
            format!("{}: {}x{}, {big} colours with bars' area: no chart", png.display(), info.width, info.height)
        })?;
        let svg = std::fs::read_to_string(dir.join(format!("{stem}.svg")))?;
        let grey = |c: &str| c.len() == 6 && c[0..2] == c[2..4] && c[2..4] == c[4..6];
        let fills = svg
            .match_indices("fill: #")
            .map(|(i, _)| &svg[i + 7..(i + 13).min(svg.len())])
            .filter(|c| !grey(c))
            .count();
        m.check(svg.contains("<svg") && svg.contains("</svg>") && fills > 6, || {
            format!("{stem}.svg: not an SVG chart ({fills} coloured shapes)")
        })?;
    }
    Ok(())
}

/// What a terminal receives from a process running under `script` (a pty), collected by a
/// thread; the process is killed on drop.
struct Pty {
    child: Child,
    seen: Arc<Mutex<Vec<u8>>>,
}

impl Pty {
    fn spawn(cmd: &str, log: PathBuf) -> Result<Pty> {
        let mut child = Command::new("script")
            .args(["-q", "-e", "-f", "-c", cmd, "/dev/null"])
            .current_dir(paths::workspace())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| Error::new(format!("cannot start `script` (util-linux): {e}")))?;
        let seen = Arc::new(Mutex::new(Vec::new()));
        let mut stdout = child.stdout.take().expect("piped");
        let sink = Arc::clone(&seen);
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = stdout.read(&mut buf) {
                if n == 0 {
                    break;
                }
                sink.lock().unwrap_or_else(|e| e.into_inner()).extend_from_slice(&buf[..n]);
                let _ = std::fs::write(&log, &*sink.lock().unwrap_or_else(|e| e.into_inner()));
            }
        });
        Ok(Pty { child, seen })
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.seen.lock().unwrap_or_else(|e| e.into_inner())).into_owned()
    }

    /// Waits until `pat` shows; the text up to the end of the match.
    fn expect(&mut self, pat: &str, timeout: Duration) -> Result<String> {
        let deadline = Instant::now() + timeout;
        let mut ended = None;
        loop {
            let text = self.text();
            if let Some(i) = text.find(pat) {
                return Ok(text[..i + pat.len()].to_string());
            }
            // The command ended: what it printed is all there will be (a moment for the reader).
            if let Some(st) = ended {
                return Err(Error::new(format!("`{pat}` never reached the terminal: the command ended ({st}); it shows:\n{text}")));
            }
            if let Some(st) = self.child.try_wait()? {
                std::thread::sleep(Duration::from_millis(500));
                ended = Some(st);
                continue;
            }
            if Instant::now() > deadline {
                return Err(Error::new(format!("`{pat}` did not reach the terminal in {timeout:?}; it shows:\n{text}")));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn send(&mut self, bytes: &[u8]) -> Result<()> {
        let stdin = self.child.stdin.as_mut().expect("piped");
        for b in bytes {
            stdin.write_all(std::slice::from_ref(b))?;
            stdin.flush()?;
            std::thread::sleep(Duration::from_millis(5));
        }
        Ok(())
    }
}

impl Drop for Pty {
    fn drop(&mut self) {
        // SIGHUP from the closing pty ends make and Bochs too.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `make run-bochs` on a terminal (a pty): until the prompt only make's one line, GRUB and
/// nvmx reach it — none of Bochs' own messages; `poweroff` ends with one line saying so.
#[test]
fn bochs_make_run_clean_terminal() -> Result<()> {
    let name = "bochs_make_run_clean_terminal";
    let dir = paths::systest_dir().join(name);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir)?;
    let iso = paths::iso()?;
    std::fs::copy(&iso, dir.join("nvmx.iso"))?;
    let _slot = slots::acquire(Duration::from_secs(900))?;
    let cmd = format!(
        "make -s --no-print-directory run-bochs-only ISO={} RUN_DIR={}",
        dir.join("nvmx.iso").display(),
        dir.display()
    );
    let fail = |msg: String, text: &str| Error::new(msg).with_section("terminal", &output::clean(text));
    // Bochs' VNC display once found none of its 50 ports free at start-up (cause not found; no
    // listener was left on them afterwards). That is Bochs' screen, not the terminal under test:
    // such a start is retried once, and said so; any other failure counts.
    let mut attempt = 0;
    let (mut pty, before) = loop {
        attempt += 1;
        let _ = std::fs::remove_file(dir.join("bochs.log"));
        // Not while another Bochs opens its display (`bochs_start_lock`).
        let starting = nvmx_tests::emu::bochs_start_lock()?;
        let mut pty = Pty::spawn(&cmd, dir.join("terminal.log"))?;
        nvmx_tests::emu::rfb_failed(&dir.join("bochs.log"));
        drop(starting);
        match pty.expect("nvmx> ", Duration::from_secs(180)) {
            Ok(before) => break (pty, before),
            Err(e) => {
                let chatter = std::fs::read_to_string(dir.join("bochs-run.log")).unwrap_or_default();
                let _ = pty.child.kill();
                let _ = pty.child.wait();
                if attempt == 1 && chatter.contains("RFB could not bind any port") {
                    eprintln!("{name}: Bochs could not open its VNC display (RFB ports 5900-5949 taken); starting it again");
                    continue;
                }
                return Err(e);
            }
        }
    };
    let allowed = [
        r"^Bochs corei7_haswell_4770, 2 cores; screen on VNC :5900; Bochs' own messages in \S+/bochs-run\.log$",
        r"^ *Booting `nvmx'$",
        r"^nvmx \d+\.\d+\.\d+ booting$",
        r"^\[(INFO |WARN |ERROR|DEBUG|TRACE) cpu\d+\] ",
        r"^nvmx> ?$",
    ]
    .map(|p| Regex::new(p).expect("regex"));
    let clean = output::clean(&before);
    for line in clean.lines().map(str::trim_end).filter(|l| !l.trim().is_empty()) {
        if !allowed.iter().any(|re| re.is_match(line)) {
            return Err(fail(format!("the terminal showed a line that is neither GRUB's nor nvmx's: {line:?}"), &before));
        }
    }
    if !clean.contains("Booting `nvmx'") || !clean.contains(" booting") {
        return Err(fail("GRUB's and nvmx's first lines are missing".into(), &before));
    }
    let chatter = std::fs::read_to_string(dir.join("bochs-run.log")).unwrap_or_default();
    if !chatter.contains("Bochs") {
        return Err(fail(format!("bochs-run.log has none of Bochs' messages:\n{chatter}"), &before));
    }
    // Let the L1s' start-up lines come, then power off.
    std::thread::sleep(Duration::from_secs(3));
    pty.send(b"poweroff\r")?;
    let deadline = Instant::now() + Duration::from_secs(60);
    while pty.child.try_wait()?.is_none() {
        if Instant::now() > deadline {
            return Err(fail("`make run-bochs` did not end after poweroff".into(), &pty.text()));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let status = pty.child.wait()?;
    let text = pty.text();
    let clean = output::clean(&text);
    let after: Vec<&str> = clean.split("powering off").nth(1).unwrap_or("").lines().map(str::trim).filter(|l| !l.is_empty()).collect();
    if !status.success() || after != ["Bochs has stopped: the machine powered off"] {
        return Err(fail(format!("after `powering off` expected one line and success; got {after:?}, {status}"), &text));
    }
    Ok(())
}
