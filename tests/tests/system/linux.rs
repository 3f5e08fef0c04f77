//! Debian's Linux as the L1 of one core, driven through `attach` (issue 9):
//! nvmx on Bochs haswell with 2 cores, Linux with a busybox shell on its
//! ttyS0 on core 1, the built-in L1's forum workload on core 0
//! (`l1image0=builtin`; the shell runs on core 0 between its L1's exits, so
//! polling it does not stall Linux). The test types at Linux's shell and reads real
//! values back: the kernel version, interrupt counts that grow, the
//! clocksource, a clean kernel log; then Linux powers itself off.

use crate::common::BOCHS;
use nvmx_tests::{Bochs, Machine, Result};
use std::time::{Duration, Instant};

/// Linux's shell prompt (`linux/init` with `nvmx.shell=1`).
const PROMPT: &str = "linux# ";

/// What a kernel that is happy with its platform never says.
const BAD: &[&str] = &[
    "TSC calibration failed",
    "APIC timer disabled",
    "IRQ not handled",
    "nobody cared",
    "WARNING:",
    "Call Trace",
    "vmwrite error",
    "VM-entry failure",
    "BUG:",
    "Oops",
    "Kernel panic",
    "Fast TSC calibration failed",
    "timer doesn't work",
    "MP-BIOS bug",
    "Marking TSC unstable",
    "spurious 8259A interrupt",
    "lost interrupt",
    "soft lockup",
];

/// Types `cmd` at Linux's shell (attached) and returns what it printed
/// before the next prompt, without `\r`.
fn sh(m: &mut Machine, cmd: &str, timeout: Duration) -> Result<String> {
    m.send(format!("{cmd}\r").as_bytes())?;
    let echo = regex::Regex::new(&format!("{}\r*\n", regex::escape(cmd))).expect("escaped");
    m.expect(echo, timeout)?;
    match m.expect(PROMPT, timeout) {
        Ok(found) => Ok(found.before.replace('\r', "")),
        Err(e) => {
            // Where Linux stands: nvmx's view of its PC (pending
            // interrupts, timer, HLT), then one more key at its shell —
            // output that only a new interrupt lets out points at a lost
            // UART interrupt, no output at all at a lost timer.
            let mut why = format!("{e}\n--- diagnosis ---\n");
            if m.send(&[0x1D]).is_ok() && m.expect("[detached from cpu 1]", BOCHS.command).is_ok() {
                for c in ["l1 1", "stats 1", "trace 1 30"] {
                    why += &format!("nvmx> {c}\n{}\n", m.command(c, BOCHS.command).unwrap_or_default());
                }
                let _ = m.send(b"attach 1\r");
                let _ = m.expect("Ctrl-] returns to the shell", BOCHS.command);
                let _ = m.send(b"\r");
                match m.expect(PROMPT, Duration::from_secs(60)) {
                    Ok(f) => why += &format!("after one more key Linux printed:\n{}", f.before),
                    Err(_) => why += "after one more key Linux printed no prompt either",
                }
            }
            Err(m.error(&why))
        }
    }
}

/// `/proc/interrupts`: (label, first CPU's count, the rest of the line).
fn interrupts(text: &str) -> Vec<(String, u64, String)> {
    text.lines()
        .filter_map(|l| {
            let (label, rest) = l.trim().split_once(':')?;
            let mut words = rest.split_whitespace();
            let n = words.next()?.parse().ok()?;
            Some((label.to_string(), n, words.collect::<Vec<_>>().join(" ")))
        })
        .collect()
}

/// The count of the first line whose label is `label` or whose description
/// contains every word of `words`.
fn count(table: &[(String, u64, String)], pick: &dyn Fn(&str, &str) -> bool) -> Option<u64> {
    table.iter().find(|(l, _, d)| pick(l, d)).map(|(_, n, _)| *n)
}

/// `l1` until `want` appears (at most `secs`).
fn poll_l1(m: &mut Machine, want: &str, secs: u64) -> Result<String> {
    let deadline = Instant::now() + Duration::from_secs(secs);
    let mut out = String::new();
    while Instant::now() < deadline {
        out = m.command("l1", BOCHS.command)?;
        if out.contains(want) {
            break;
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    Ok(out)
}

fn build_file(name: &str) -> String {
    let path = nvmx_tests::paths::workspace().join("build/linux").join(name);
    std::fs::read_to_string(&path).map(|s| s.trim().to_string()).unwrap_or_default()
}

/// The test: `full` is the full PC (ACPI, LAPIC, IOAPIC), else the smallest
/// PC (`acpi=off noapic nolapic …`).
fn linux_attach(name: &str, iso: &str, full: bool) -> Result<()> {
    let t = BOCHS;
    let release = build_file("release");
    let version = build_file("version");
    let started = Instant::now();
    let mut m = Bochs::new(name, "corei7_haswell_4770")
        .cpus(2)
        .build_iso(iso)
        .megs(768)
        // The smallest PC calibrates the TSC against the PIT only: Linux's
        // loop allows ~2000 instructions per read of port 0x61 at 200M ips
        // (L0's pure-read path takes ~490 since issue 13; the general port
        // path ~2100 failed it: "Unable to calibrate against PIT").
        .ips(std::env::var("NVMX_LINUX_IPS").ok().and_then(|v| v.parse().ok()).unwrap_or(200_000_000))
        .hard_limit(Duration::from_secs(1200))
        .start()?;
    m.check(!release.is_empty() && !version.is_empty(), || "build/linux/{release,version} missing: run `make linux`".into())?;
    m.boot_to_prompt(Duration::from_secs(300))?;
    let out = m.command("l1", t.command)?;
    m.check(out.contains("linux)") && out.contains("L1 module 0: ") && out.contains("cpu 0: the built-in nvmx-l1 instead"), || {
        format!("`l1` does not show Linux, its initrd and the built-in L1 on core 0:\n{out}")
    })?;

    // Linux boots on core 1 while core 0's forum runs: wait for its shell.
    let deadline = Instant::now() + Duration::from_secs(900);
    let mut console = String::new();
    while Instant::now() < deadline {
        console = m.command("console 1", t.command)?;
        if console.contains(PROMPT) || console.contains("Kernel panic") || !m.command("l1", t.command)?.contains("cpu 1: running") {
            break;
        }
        std::thread::sleep(Duration::from_secs(5));
    }
    let boot_wall = started.elapsed();
    m.check(console.contains(PROMPT), || format!("Linux's shell did not come up on core 1 (`console 1`):\n{console}"))?;
    let up = console.lines().find(|l| l.contains("init: up at")).unwrap_or("").trim().to_string();
    println!("[{boot_wall:>5.0?}] {up}");
    for bad in BAD {
        m.check(!console.contains(bad), || format!("Linux's console says `{bad}`:\n{console}"))?;
    }

    // Where Linux's core spends L0's time (in the log, for the record).
    let stats = m.command("stats 1", t.command)?;
    println!("{stats}");

    m.send(b"attach 1\r")?;
    m.expect("Ctrl-] returns to the shell", t.command)?;
    m.send(b"\r")?;
    m.expect(PROMPT, t.command)?;

    let uname = sh(&mut m, "uname -a", t.command)?;
    m.check(uname.contains(&format!("Linux (none) {release} #1 SMP")) && uname.contains(&format!("Debian {version} ")) && uname.contains("x86_64"), || {
        format!("`uname -a` is not Debian's {version} ({release}):\n{uname}")
    })?;

    // The whole kernel log: nothing about the platform.
    let dmesg = sh(&mut m, "dmesg", Duration::from_secs(120))?;
    let dir = nvmx_tests::paths::systest_dir().join(nvmx_tests::paths::sanitize(name));
    let _ = std::fs::create_dir_all(&dir);
    let _ = std::fs::write(dir.join("dmesg.txt"), &dmesg);
    m.check(dmesg.contains("Linux version") && dmesg.contains("Run /init as init process"), || format!("`dmesg` incomplete:\n{dmesg}"))?;
    for bad in BAD {
        m.check(!dmesg.contains(bad), || {
            let lines: Vec<&str> = dmesg.lines().filter(|l| l.contains(bad)).collect();
            format!("the kernel log says `{bad}`:\n{}", lines.join("\n"))
        })?;
    }
    // Two reads of /proc/interrupts, a second of guest time apart (with core
    // 0 spinning once its forum ended, Bochs needs ~80-170 s of wall time
    // for two idle guest seconds on a loaded machine: 200M instructions of
    // core 0 each): the
    // timer and the UART's interrupts must have grown, through the IOAPIC
    // and the LAPIC timer on the full PC, through the 8259 on the small one.
    let first = sh(&mut m, "cat /proc/interrupts", t.command)?;
    let slept = Instant::now();
    let _ = sh(&mut m, "sleep 1", Duration::from_secs(300))?;
    println!("[{:>5.0?}] `sleep 1` took {:.1?} of wall time", started.elapsed(), slept.elapsed());
    let second = sh(&mut m, "cat /proc/interrupts", t.command)?;
    let (a, b) = (interrupts(&first), interrupts(&second));
    let grew = |what: &str, pick: &dyn Fn(&str, &str) -> bool| -> Result<()> {
        let (x, y) = (count(&a, pick), count(&b, pick));
        m.check(matches!((x, y), (Some(x), Some(y)) if y > x), || {
            format!("/proc/interrupts: {what} did not grow ({x:?} → {y:?}):\n{first}\n---\n{second}")
        })
    };
    if full {
        grew("LOC (the LAPIC timer)", &|l, _| l == "LOC")?;
        grew("IO-APIC … ttyS0", &|_, d| d.contains("IO-APIC") && d.contains("4-edge") && d.ends_with("ttyS0"))?;
        let timer = count(&a, &|_, d| d.contains("IO-APIC") && d.ends_with("timer"));
        m.check(timer.is_some_and(|n| n > 0), || format!("/proc/interrupts: no IO-APIC timer line with interrupts (the PIT checked through the IOAPIC):\n{first}"))?;
    } else {
        grew("XT-PIC timer", &|_, d| d.contains("XT-PIC") && d.ends_with("timer"))?;
        grew("XT-PIC ttyS0", &|_, d| d.contains("XT-PIC") && d.ends_with("ttyS0"))?;
        let loc = count(&b, &|l, _| l == "LOC").unwrap_or(0);
        m.check(loc == 0, || format!("nolapic, yet LOC counts {loc}:\n{second}"))?;
    }

    // The clocksource: TSC, calibrated against the platform's timers.
    let cs = sh(&mut m, "dmesg | grep -i clocksource", t.command)?;
    m.check(cs.contains("clocksource: Switched to clocksource tsc\n") || cs.trim_end().ends_with("clocksource: Switched to clocksource tsc"), || {
        format!("the kernel did not end on the TSC clocksource:\n{cs}")
    })?;
    if full {
        m.check(cs.contains("clocksource: acpi_pm: mask: 0xffffff"), || format!("no ACPI PM timer clocksource:\n{cs}"))?;
    }

    // TSC calibration: the PIT's and the reference timer's agree.
    let tsc = |what: &str| -> Option<f64> {
        let l = dmesg.lines().find(|l| l.contains(what))?;
        let mhz = l.split(what).nth(1)?.split_whitespace().next()?;
        mhz.parse().ok()
    };
    let detected = tsc("tsc: Detected ");
    m.check(detected.is_some_and(|f| f > 1.0), || format!("no `tsc: Detected … MHz` line:\n{dmesg}"))?;
    if full {
        let refined = tsc("Refined TSC clocksource calibration: ");
        m.check(
            matches!((detected, refined), (Some(d), Some(r)) if ((r - d) / d).abs() < 0.01),
            || format!("TSC: detected {detected:?} MHz, refined against the PM timer {refined:?} MHz (must agree within 1 %)"),
        )?;
    }

    // Power off from inside Linux; back to nvmx's shell.
    m.send(b"poweroff -f\r")?;
    let mark = Instant::now();
    while mark.elapsed() < Duration::from_secs(5) {
        std::thread::sleep(Duration::from_millis(200));
    }
    m.send(&[0x1D])?;
    m.expect("[detached from cpu 1]", t.command)?;
    m.expect("nvmx> ", t.command)?;
    // Without ACPI a PC cannot switch itself off: Linux turns power-off into
    // halt (kernel/reboot.c) and ends in `cli; hlt`.
    let want = if full { "cpu 1: powered off" } else { "cpu 1: halted for good" };
    let out = poll_l1(&mut m, want, 60)?;
    m.check(out.contains(want), || format!("after `poweroff -f` `l1` does not say `{want}`:\n{out}"))?;
    // Core 0's built-in L1 ran its forum workload to its end meanwhile.
    let out = poll_l1(&mut m, "cpu 0: exited (code 0)", 300)?;
    m.check(out.contains("cpu 0: exited (code 0)"), || format!("core 0's forum L1 did not end (`l1`):\n{out}"))?;
    let c0 = m.command("console 0", t.command)?;
    m.check(c0.contains("l1: summary exits=2000 failures=0"), || format!("core 0's forum did not end clean:\n{c0}"))?;
    let out = m.command("cpus", t.command)?;
    m.check(out.contains("total: 2 online"), || format!("`cpus` after Linux's power-off:\n{out}"))?;
    println!("[{:>5.0?}] done (Linux's shell after {boot_wall:.0?})", started.elapsed());
    crate::common::poweroff(&mut m, t)
}

#[test]
fn bochs_linux_attach_haswell_2cpu() -> Result<()> {
    linux_attach("bochs_linux_attach_haswell_2cpu", "linux/shell.iso", true)
}

#[test]
fn bochs_linux_attach_smallpc_haswell_2cpu() -> Result<()> {
    linux_attach("bochs_linux_attach_smallpc_haswell_2cpu", "linux/shell-smallpc.iso", false)
}
