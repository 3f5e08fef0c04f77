//! The shell's I/O side on the boot core: bytes from COM1 and the PS/2
//! keyboard go into the pure line editor (`nvmx_shell`), finished lines are
//! parsed there, and the commands run here, where the machine is.

use alloc::string::String;
use core::fmt::Write;
use core::sync::atomic::Ordering;

use nvmx_shell::format::Table;
use nvmx_shell::{Command, Context, CpuSel, Event, LineEditor};
use spin::Mutex;

use crate::l1::{self, L1State};
use crate::percpu;

const PROMPT: &str = "nvmx> ";
const HISTORY: usize = 32;

static EDITOR: Mutex<Option<LineEditor>> = Mutex::new(None);

/// Prints the first prompt; input is read by [`poll`].
pub fn start() {
    *EDITOR.lock() = Some(LineEditor::new(HISTORY));
    crate::print!("{PROMPT}");
}

/// Reads what input there is and runs finished lines. Called by the boot
/// core between L1 exits and whenever it has nothing else to do.
pub fn poll() {
    bench_step();
    loop {
        if BENCH.lock().is_some() {
            return; // input waits until the benchmark is done
        }
        let Some(byte) = crate::serial::try_read().or_else(crate::keyboard::try_read) else { return };
        let mut guard = EDITOR.lock();
        let Some(editor) = guard.as_mut() else { return };
        let event = editor.feed(byte, &mut |echo| crate::console::write_bytes(echo));
        drop(guard);
        match event {
            Some(Event::Line(line)) => {
                run(&line);
                if BENCH.lock().is_none() {
                    crate::print!("{PROMPT}");
                }
            }
            Some(Event::Interrupted) => crate::print!("{PROMPT}"),
            None => {}
        }
    }
}

fn run(line: &str) {
    let ctx = Context { ncpus: percpu::count() };
    match nvmx_shell::parse(line, &ctx) {
        Ok(None) => {}
        Ok(Some(cmd)) => {
            let mut out = String::new();
            execute(cmd, &mut out);
            crate::console::write_bytes(out.as_bytes());
        }
        Err(e) => crate::println!("error: {e}"),
    }
}

/// The CPUs a selection names.
fn cpus_of(sel: CpuSel) -> core::ops::Range<usize> {
    match sel {
        CpuSel::One(c) => c..c + 1,
        CpuSel::All => 0..percpu::count(),
    }
}

fn execute(cmd: Command, out: &mut String) {
    let _ = match cmd {
        Command::Help(topic) => {
            out.push_str(&nvmx_shell::format::help(topic.as_deref()));
            Ok(())
        }
        Command::Cpus => cpus(out),
        Command::Mem => mem(out),
        Command::Acpi => crate::firmware::describe(out),
        Command::Vmx => vmx(out),
        Command::Log(level) => log_level(level.as_deref(), out),
        Command::Reboot => {
            crate::println!("rebooting");
            crate::firmware::reboot()
        }
        Command::Poweroff => {
            crate::println!("powering off");
            crate::firmware::power_off()
        }
        Command::Stats { cpus, reset, csv } => stats(cpus, reset, csv, out),
        Command::L1Status(cpu) => l1_status(cpu, out),
        Command::L1Control { action, cpu, args } => l1_control(action, cpu, args, out),
        Command::Console(cpu) => console(cpu, out),
        Command::Vmcs { which, cpu } => vmcs(which, cpu, out),
        Command::Trace { cpu, count } => trace(cpu, count, out),
        Command::Shadow { on, cpus } => shadow(on, cpus, out),
        Command::Bench { exits, csv } => bench_start(exits, csv, out),
        Command::Integrity(action) => crate::integrity::command(action, out),
    };
}

fn cpus(out: &mut String) -> core::fmt::Result {
    let mut t = Table::new(&["cpu", "apic", "state", ""]);
    let (mut online, mut failed) = (0, 0);
    for c in percpu::all() {
        let state = c.state();
        match state {
            percpu::CpuState::Online => online += 1,
            percpu::CpuState::Failed => failed += 1,
            _ => {}
        }
        let apic = c.apic_id.load(Ordering::Relaxed);
        t.row(&[
            &alloc::format!("{}", c.index),
            &alloc::format!("{apic:#04x}"),
            state.name(),
            if c.index == 0 { "(boot)" } else { "" },
        ]);
    }
    out.push_str(&t.render());
    writeln!(out, "total: {online} online, {failed} failed")
}

fn mem(out: &mut String) -> core::fmt::Result {
    use nvmx_shell::format::bytes;
    let f = crate::mm::frames::stats();
    let (used, size) = crate::mm::heap_stats();
    let (k0, k1) = crate::mm::kernel_range();
    writeln!(out, "frames: {} usable, {} free, {} allocated, {} free ranges",
        bytes(f.total_bytes), bytes(f.free_bytes), bytes(f.allocated_bytes), f.ranges)?;
    writeln!(out, "heap: {} used of {}", bytes(used as u64), bytes(size as u64))?;
    writeln!(out, "kernel image: {k0:#x}-{k1:#x} ({})", bytes(k1 - k0))?;
    writeln!(out, "memory map:")?;
    for r in crate::bootinfo::get().regions() {
        let kind = match r.kind {
            1 => "usable",
            3 => "ACPI reclaimable",
            4 => "ACPI NVS",
            5 => "bad",
            _ => "reserved",
        };
        writeln!(out, "  {:#014x}-{:#014x} {:>10}  {kind}", r.start, r.end, bytes(r.end - r.start))?;
    }
    Ok(())
}

fn vmx(out: &mut String) -> core::fmt::Result {
    let Some(caps) = crate::vmx::probe() else {
        return writeln!(out, "vmx: VT-x not available: {}", crate::vmx::unavailable_reason());
    };
    for (key, value) in caps.report() {
        writeln!(out, "  {key:<22} {value}")?;
    }
    Ok(())
}

fn log_level(level: Option<&str>, out: &mut String) -> core::fmt::Result {
    match level {
        None => writeln!(out, "log level: {}", log::max_level().as_str().to_ascii_lowercase()),
        Some(name) => match crate::console::parse_level(name) {
            Some(l) => {
                log::set_max_level(l);
                writeln!(out, "log level: {name}")
            }
            None => writeln!(out, "error: log: unknown level '{name}'"),
        },
    }
}

fn stats(sel: CpuSel, reset: bool, csv: bool, out: &mut String) -> core::fmt::Result {
    for cpu in cpus_of(sel) {
        let shared = l1::shared(cpu);
        if reset {
            shared.stats.reset();
            writeln!(out, "cpu {cpu}: counters reset")?;
            continue;
        }
        let now = crate::arch::cpu::rdtsc();
        out.push_str(&crate::stats_view::render(cpu, &shared.stats, now, csv));
        if !csv {
            writeln!(out, "{}", nested_counts(cpu))?;
        }
    }
    Ok(())
}

/// Core `cpu`'s nested-VMX error counters, one line (`l1`, `stats`).
fn nested_counts(cpu: usize) -> String {
    let s = l1::shared(cpu);
    alloc::format!(
        "cpu {cpu}: nested: {} entries refused by the CPU after nvmx's checks passed, {} failed L0 VMREAD/VMWRITEs",
        s.fallbacks.load(Ordering::Relaxed),
        s.vmx_errors.load(Ordering::Relaxed)
    )
}

fn l1_status(sel: Option<usize>, out: &mut String) -> core::fmt::Result {
    let range = sel.map_or(0..percpu::count(), |c| c..c + 1);
    let now = crate::arch::cpu::rdtsc();
    match crate::bootinfo::get().modules().first() {
        Some(m) => writeln!(out, "L1 image: GRUB module ({} bytes), module string \"{}\"", m.end - m.start, m.string())?,
        None => writeln!(out, "L1 image: built-in nvmx-l1 ({} bytes)", l1::image::BUILTIN_L1.len())?,
    }
    for cpu in range {
        let s = l1::shared(cpu);
        let state = s.state.lock().clone();
        let (exits, _) = s.stats.totals();
        let last = s.last_reason.load(Ordering::Relaxed);
        let last = if last == u64::MAX {
            String::from("-")
        } else {
            alloc::format!("{} {}", last & 0xFFFF, nvmx_vmx::exit::exit_reason_name((last & 0xFFFF) as u16))
        };
        let up = now.saturating_sub(s.started_tsc.load(Ordering::Relaxed));
        let state = match state {
            L1State::NotStarted => String::from("not started"),
            L1State::Running => String::from("running"),
            L1State::Halted => String::from("halted"),
            L1State::Stopped(why) => alloc::format!("stopped: {why}"),
        };
        writeln!(out, "cpu {cpu}: {state}; exits {exits}; last exit {last}; uptime {up} tsc")?;
        if let Some(check) = *s.last_check.lock() {
            writeln!(out, "cpu {cpu}: last failed VM-entry check: {check}")?;
        }
        writeln!(out, "{}", nested_counts(cpu))?;
        if sel.is_some() {
            for (check, n) in s.checks.entries() {
                writeln!(out, "cpu {cpu}: failed VM-entry check x{n}: {check}")?;
            }
        }
    }
    Ok(())
}

fn l1_control(action: nvmx_shell::L1Action, cpu: usize, args: Option<String>, out: &mut String) -> core::fmt::Result {
    use nvmx_shell::L1Action;
    if let Some(args) = args {
        *l1::shared(cpu).args.lock() = Some(args);
    }
    let req = match action {
        L1Action::Stop => l1::Control::Stop,
        L1Action::Start => l1::Control::Start,
        L1Action::Restart => l1::Control::Restart,
    };
    l1::shared(cpu).request(req);
    if cpu != percpu::current().index {
        crate::mailbox::kick(cpu);
    }
    writeln!(out, "cpu {cpu}: {action:?} requested")
}

fn console(cpu: usize, out: &mut String) -> core::fmt::Result {
    let guard = l1::shared(cpu).console.lock();
    let Some(ring) = guard.as_ref() else {
        return writeln!(out, "cpu {cpu}: no L1 console (L1 never started)");
    };
    let (a, b) = ring.contents();
    out.push_str(&String::from_utf8_lossy(a));
    out.push_str(&String::from_utf8_lossy(b));
    if !out.ends_with('\n') {
        out.push('\n');
    }
    Ok(())
}

fn vmcs(which: nvmx_shell::VmcsKind, cpu: usize, out: &mut String) -> core::fmt::Result {
    match crate::mailbox::call(cpu, crate::mailbox::Request::DumpVmcs(which), 2000) {
        Ok(text) => {
            out.push_str(&text);
            Ok(())
        }
        Err(e) => writeln!(out, "error: vmcs {which}: cpu {cpu}: {e}"),
    }
}

fn trace(sel: Option<usize>, count: Option<usize>, out: &mut String) -> core::fmt::Result {
    let n = count.unwrap_or(16).min(l1::TRACE_LEN);
    let range = sel.map_or(0..percpu::count(), |c| c..c + 1);
    for cpu in range {
        writeln!(out, "cpu {cpu}: last {n} exits")?;
        let mut t = Table::new(&["tsc", "reason", "name", "qualification", "rip", "level", "cycles", "outcome"]);
        for e in l1::shared(cpu).trace.lock().last(n) {
            t.row(&[
                &alloc::format!("{}", e.tsc),
                &alloc::format!("{:#x}", e.reason),
                nvmx_vmx::exit::exit_reason_name((e.reason & 0xFFFF) as u16),
                &alloc::format!("{:#x}", e.qualification),
                &alloc::format!("{:#x}", e.rip),
                if e.level_l2 { "L2" } else { "L1" },
                &alloc::format!("{}", e.cycles),
                e.note.unwrap_or(""),
            ]);
        }
        out.push_str(&t.render());
    }
    Ok(())
}

fn shadow(on: Option<bool>, sel: CpuSel, out: &mut String) -> core::fmt::Result {
    let supported = crate::vmx::probe().is_some_and(|c| c.vmcs_shadowing());
    if let Some(on) = on {
        if !supported {
            let why = match crate::vmx::probe() {
                Some(_) => "this CPU has no VMCS shadowing (IA32_VMX_PROCBASED_CTLS2: secondary control bit 14 may not be 1)",
                None => "VT-x is not available here",
            };
            return writeln!(out, "error: shadow: {why}; nothing changed");
        }
        for cpu in cpus_of(sel) {
            let s = l1::shared(cpu);
            s.shadow_want.store(if on { 2 } else { 1 }, Ordering::Release);
            s.shadow_pref.store(if on { 2 } else { 1 }, Ordering::Release);
            if cpu != percpu::current().index {
                crate::mailbox::kick(cpu);
            }
        }
        // The cores switch between two exits; wait for them (bounded: a
        // nested exit in Bochs takes tens of thousands of instructions).
        for _ in 0..5000 {
            if cpus_of(sel).all(|c| l1::shared(c).shadow_want.load(Ordering::Acquire) == 0) {
                break;
            }
            l1::apply_shadow_here();
            crate::time::delay_us(1000);
        }
    }
    for cpu in cpus_of(sel) {
        let s = l1::shared(cpu);
        let running = *s.state.lock() == L1State::Running;
        let state = if !supported {
            "off (not supported by this CPU)"
        } else if s.shadow_want.load(Ordering::Acquire) != 0 {
            "switch pending (the core has not reached an exit yet)"
        } else if !running {
            "off (no L1 running)"
        } else if s.shadow_on.load(Ordering::Acquire) {
            "on"
        } else {
            "off"
        };
        writeln!(
            out,
            "cpu {cpu}: vmcs shadowing {state}; supported {}; {} fields shadowed",
            if supported { "yes" } else { "no" },
            s.shadow_fields.load(Ordering::Relaxed)
        )?;
    }
    Ok(())
}

/// A `bench` in progress: the boot core runs its own L1 between shell polls,
/// so the benchmark advances from `poll` instead of blocking the shell.
struct Bench {
    exits: u64,
    csv: bool,
    /// false: the shadowing-off run; true: the shadowing-on run.
    shadowed: bool,
    /// Each core's L1 start time when its current run was requested.
    started: alloc::vec::Vec<u64>,
    off: alloc::vec::Vec<(alloc::vec::Vec<nvmx_shell::report::StatRow<'static>>, u64)>,
}

static BENCH: Mutex<Option<Bench>> = Mutex::new(None);

fn bench_start(exits: u64, csv: bool, out: &mut String) -> core::fmt::Result {
    if !crate::vmx::probe().is_some_and(|c| c.vmcs_shadowing()) {
        return writeln!(out, "error: bench: needs VT-x with VMCS shadowing (e.g. Bochs corei7_haswell_4770)");
    }
    let started = restart_all(exits, false);
    *BENCH.lock() = Some(Bench { exits, csv, shadowed: false, started, off: alloc::vec::Vec::new() });
    writeln!(out, "bench: forum workload, {exits} L2 exits on each of {} cores, shadowing off then on…", percpu::count())
}

/// Restarts every core's L1 with the forum workload and shadowing `on`;
/// returns their start times before the restart.
fn restart_all(exits: u64, on: bool) -> alloc::vec::Vec<u64> {
    (0..percpu::count())
        .map(|cpu| {
            let s = l1::shared(cpu);
            let before = s.started_tsc.load(Ordering::Acquire);
            s.shadow_pref.store(if on { 2 } else { 1 }, Ordering::Release);
            *s.args.lock() = Some(alloc::format!("workload=forum exits={exits}"));
            s.request(l1::Control::Restart);
            if cpu != percpu::current().index {
                crate::mailbox::kick(cpu);
            }
            before
        })
        .collect()
}

/// Advances a running benchmark: when every core's L1 has finished its run,
/// takes its counters; after both runs prints the report.
fn bench_step() {
    let mut guard = BENCH.lock();
    let Some(b) = guard.as_mut() else { return };
    let done = (0..percpu::count()).all(|cpu| {
        let s = l1::shared(cpu);
        s.started_tsc.load(Ordering::Acquire) != b.started[cpu] && *s.state.lock() != L1State::Running
    });
    if !done {
        return;
    }
    let snaps: alloc::vec::Vec<_> = (0..percpu::count())
        .map(|cpu| {
            let s = l1::shared(cpu);
            let last = s.trace.lock().last(1).next().map_or(0, |e| e.tsc + e.cycles);
            (crate::stats_view::rows(&s.stats), last.saturating_sub(s.stats.since.load(Ordering::Relaxed)))
        })
        .collect();
    if !b.shadowed {
        b.off = snaps;
        b.shadowed = true;
        b.started = restart_all(b.exits, true);
        return;
    }
    let mut out = String::new();
    for (cpu, (off, on)) in b.off.iter().zip(&snaps).enumerate() {
        use nvmx_shell::report::{BenchRun, bench};
        out.push_str(&bench(cpu, &BenchRun { rows: &off.0, elapsed: off.1 }, &BenchRun { rows: &on.0, elapsed: on.1 }, b.csv));
    }
    *guard = None;
    drop(guard);
    crate::console::write_bytes(out.as_bytes());
    crate::print!("{PROMPT}");
}
