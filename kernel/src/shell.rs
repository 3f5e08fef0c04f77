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
    prompt();
}

/// Prints the prompt and tells the console it is shown, so that log lines
/// from now on are printed above it and it is drawn again below them.
fn prompt() {
    crate::console::exclusive(|input| {
        crate::console::write_bytes(PROMPT.as_bytes());
        input.show(PROMPT, "", 0);
    });
}

/// The shell's own output, never cut by a log line.
fn write(text: &str) {
    crate::console::exclusive(|_| crate::console::write_bytes(text.as_bytes()));
}

/// Reads what input there is and runs finished lines. Called by the boot
/// core between L1 exits and whenever it has nothing else to do.
pub fn poll() {
    bench_step();
    crate::top::step();
    if attached_poll() {
        return;
    }
    loop {
        if BENCH.lock().is_some() {
            return; // input waits until the benchmark is done
        }
        let Some(byte) = crate::serial::try_read().or_else(crate::keyboard::try_read) else { return };
        if crate::top::active() {
            // Any key ends the live view; the key itself is not input.
            crate::top::stop();
            prompt();
            continue;
        }
        let mut guard = EDITOR.lock();
        let Some(editor) = guard.as_mut() else { return };
        // Echo and the console's copy of the line change together, so a log
        // line in between redraws what the terminal really shows.
        let event = crate::console::exclusive(|input| {
            let event = editor.feed(byte, &mut |echo| crate::console::write_bytes(echo));
            match event {
                None => input.show(PROMPT, editor.line(), editor.cursor()),
                Some(_) => input.hide(),
            }
            event
        });
        drop(guard);
        match event {
            Some(Event::Line(line)) => {
                run(&line);
                // `attach` took the line: what follows is the L1's input
                // (even bytes already waiting), and the L1 draws its prompt.
                if ATTACHED.lock().is_some() {
                    return;
                }
                if BENCH.lock().is_none() && !crate::top::active() {
                    prompt();
                }
            }
            Some(Event::Interrupted) => prompt(),
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
            write(&out);
        }
        Err(e) => write(&alloc::format!("error: {e}\n")),
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
        Command::Attach(cpu) => attach(cpu, out),
        Command::Vmcs { which, cpu } => vmcs(which, cpu, out),
        Command::Trace { cpu, count } => trace(cpu, count, out),
        Command::Shadow { mode, cpus } => shadow(mode, cpus, out),
        Command::Fields { cpus, csv } => fields(cpus, csv, out),
        Command::Bench { exits, csv, pair, bare } => bench_start(exits, csv, pair, bare, out),
        Command::Top(sel) => {
            crate::top::start(cpus_of(sel), out);
            Ok(())
        }
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
            // `make bench-turtles` adds it to the rows' cycles for all of L0's work.
            writeln!(
                out,
                "cpu {cpu}: vCPU loop: {} L0 cycles between an exit's handling and the next entry (not in the rows above)",
                shared.stats.loop_cycles.load(Ordering::Relaxed)
            )?;
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
    out.push_str(&l1::image::describe());
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
            L1State::Halted => String::from("halted for good"),
            L1State::PoweredOff => String::from("powered off"),
            L1State::Restarting => String::from("restarting"),
            L1State::Exited(code) => alloc::format!("exited (code {code})"),
            L1State::Stopped(why) => alloc::format!("stopped: {why}"),
        };
        let resets = match s.resets.load(Ordering::Relaxed) {
            0 => String::new(),
            n => alloc::format!("; machine reset {n} times"),
        };
        writeln!(out, "cpu {cpu}: {state}; exits {exits}; last exit {last}; uptime {up} tsc{resets}")?;
        if let Some(check) = *s.last_check.lock() {
            writeln!(out, "cpu {cpu}: last failed VM-entry check: {check}")?;
        }
        writeln!(out, "{}", nested_counts(cpu))?;
        if sel.is_some() {
            for (check, n) in s.checks.entries() {
                writeln!(out, "cpu {cpu}: failed VM-entry check x{n}: {check}")?;
            }
            if let Some(line) = l1::smp::describe(cpu) {
                writeln!(out, "{line}")?;
            }
        }
        // One core asked by number: its platform too, read on that core.
        if sel.is_some() && *s.state.lock() == L1State::Running {
            match crate::mailbox::call(cpu, crate::mailbox::Request::Platform, 2000) {
                Ok(text) => out.push_str(&text),
                Err(e) => writeln!(out, "cpu {cpu}: platform: {e}")?,
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

fn shadow(mode: Option<nvmx_shell::ShadowMode>, sel: CpuSel, out: &mut String) -> core::fmt::Result {
    use nvmx_shell::ShadowMode;
    let supported = crate::vmx::probe().is_some_and(|c| c.vmcs_shadowing());
    if let Some(mode) = mode {
        if !supported {
            let why = match crate::vmx::probe() {
                Some(_) => "this CPU has no VMCS shadowing (IA32_VMX_PROCBASED_CTLS2: secondary control bit 14 may not be 1)",
                None => "VT-x is not available here",
            };
            return writeln!(out, "error: shadow: {why}; nothing changed");
        }
        for cpu in cpus_of(sel) {
            let s = l1::shared(cpu);
            let want = match mode {
                ShadowMode::Off => 1,
                ShadowMode::On => 2,
                ShadowMode::Adaptive => 3,
                ShadowMode::Full => 4,
            };
            s.shadow_want.store(want, Ordering::Release);
            s.shadow_pref.store(want, Ordering::Release);
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
            match s.shadow_policy.load(Ordering::Relaxed) {
                1 => "on (adaptive)",
                2 => "on (full)",
                _ => "on (fixed set)",
            }
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

/// `fields`: per core, the VMCS fields with the most emulated VMREAD/VMWRITE
/// exits (read from the core's counters, which only it writes).
fn fields(sel: CpuSel, csv: bool, out: &mut String) -> core::fmt::Result {
    use nvmx_shell::report::FieldRow;
    use nvmx_vmx::field::ALL;
    for (n, cpu) in cpus_of(sel).enumerate() {
        let s = l1::shared(cpu);
        let c = &s.stats.fields;
        let set = |i: usize, f: nvmx_vmx::field::Field| s.shadow_sets[i + f.index() / 64].load(Ordering::Relaxed) & (1 << (f.index() % 64)) != 0;
        let on = s.shadow_on.load(Ordering::Acquire);
        let get = |t: &[core::sync::atomic::AtomicU64], i: usize| t[i].load(Ordering::Relaxed);
        let not_a_field = alloc::format!("(not a field, last {:#x})", c.last_not_a_field.load(Ordering::Relaxed));
        let rows: alloc::vec::Vec<FieldRow> = ALL
            .iter()
            .map(|&f| (f.name(), Some(f.encoding()), f.index(), on && set(0, f), on && set(3, f)))
            .chain(core::iter::once((not_a_field.as_str(), None, crate::stats::NOT_A_FIELD, false, false)))
            .map(|(name, encoding, i, r, w)| FieldRow {
                name,
                encoding,
                reads: get(&c.reads, i),
                writes: get(&c.writes, i),
                read_fails: get(&c.read_fails, i),
                write_fails: get(&c.write_fails, i),
                shadow_read: r,
                shadow_write: w,
            })
            .collect();
        let state = if !on {
            String::from("off")
        } else {
            alloc::format!(
                "{}, {} fields",
                match s.shadow_policy.load(Ordering::Relaxed) {
                    1 => "adaptive",
                    2 => "full",
                    _ => "fixed set",
                },
                s.shadow_fields.load(Ordering::Relaxed)
            )
        };
        let text = nvmx_shell::report::fields(cpu, &rows, 16, &state, csv);
        // One CSV header for all cores.
        out.push_str(if csv && n > 0 { text.split_once('\n').map_or("", |(_, rest)| rest) } else { &text });
    }
    Ok(())
}

/// A `bench` in progress: the boot core runs its own L1 between shell polls,
/// so the benchmark advances from `poll` instead of blocking the shell.
/// Three runs: shadowing off, on, and on with L0's phases profiled.
struct Bench {
    exits: u64,
    csv: bool,
    units: nvmx_shell::report::BenchUnits,
    /// Runs finished so far (0..3).
    stage: usize,
    /// Each core's L1 start time when its current run was requested.
    started: alloc::vec::Vec<u64>,
    /// Per finished run, per core: its counters.
    runs: alloc::vec::Vec<alloc::vec::Vec<Snapshot>>,
}

/// One core's counters after a bench run.
struct Snapshot {
    rows: alloc::vec::Vec<nvmx_shell::report::StatRow<'static>>,
    elapsed: u64,
    loop_cycles: u64,
    l1_ticks: Option<u64>,
    phases: [u64; crate::stats::PHASES],
    switches: u64,
    slow: [u64; crate::stats::SLOWS],
}

static BENCH: Mutex<Option<Bench>> = Mutex::new(None);

/// TSC ticks per 1000 instructions, from a loop of known length: Bochs
/// counts instructions (the figure says how many ticks each), real CPUs
/// count time.
fn calibrate() -> u64 {
    const ITERATIONS: u64 = 200_000;
    let t0 = crate::arch::cpu::rdtsc();
    // SAFETY: a register-only countdown loop, 2 instructions per iteration.
    unsafe { core::arch::asm!("2: dec {n}", "jnz 2b", n = inout(reg) ITERATIONS => _, options(nomem, nostack)) };
    let ticks = crate::arch::cpu::rdtsc() - t0;
    (ticks * 1000 / (2 * ITERATIONS)).max(1)
}

fn bench_start(exits: u64, csv: bool, pair: u64, bare: Option<u64>, out: &mut String) -> core::fmt::Result {
    if !crate::vmx::probe().is_some_and(|c| c.vmcs_shadowing()) {
        return writeln!(out, "error: bench: needs VT-x with VMCS shadowing (e.g. Bochs corei7_haswell_4770)");
    }
    let units = nvmx_shell::report::BenchUnits { ticks_per_kinsn: calibrate(), pair, bare };
    let started = restart_all(exits, false, false);
    *BENCH.lock() = Some(Bench { exits, csv, units, stage: 0, started, runs: alloc::vec::Vec::new() });
    writeln!(
        out,
        "bench: forum workload, {exits} L2 exits on each of {} cores: shadowing off, on, on profiled; TSC ticks per instruction {}.{:03} (calibrated)",
        percpu::count(),
        units.ticks_per_kinsn / 1000,
        units.ticks_per_kinsn % 1000
    )
}

/// Restarts every core's L1 with the forum workload, shadowing `on` (with
/// the command line's policy: `shadow=adaptive|full`, else the fixed set),
/// L0's phases profiled or not; returns their start times before the restart.
fn restart_all(exits: u64, on: bool, profile: bool) -> alloc::vec::Vec<u64> {
    let policy = match crate::bootinfo::get().arg("shadow") {
        Some("adaptive") => 3,
        Some("full") => 4,
        _ => 2,
    };
    (0..percpu::count())
        .map(|cpu| {
            let s = l1::shared(cpu);
            let before = s.started_tsc.load(Ordering::Acquire);
            s.shadow_pref.store(if on { policy } else { 1 }, Ordering::Release);
            s.stats.profile.store(profile, Ordering::Release);
            *s.args.lock() = Some(alloc::format!("workload=forum exits={exits} time"));
            s.request(l1::Control::Restart);
            if cpu != percpu::current().index {
                crate::mailbox::kick(cpu);
            }
            before
        })
        .collect()
}

/// The L1's own timing line, `l1: time … , <n> per L2 exit`, from its console.
fn l1_ticks(cpu: usize) -> Option<u64> {
    let guard = l1::shared(cpu).console.lock();
    let (a, b) = guard.as_ref()?.contents();
    let text: String = String::from_utf8_lossy(a).into_owned() + &String::from_utf8_lossy(b);
    let line = text.lines().rev().find(|l| l.starts_with("l1: time "))?;
    line.rsplit(", ").next()?.split_whitespace().next()?.parse().ok()
}

/// Advances a running benchmark: when every core's L1 has finished its run,
/// takes its counters; after the last run prints the report.
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
    let snaps: alloc::vec::Vec<Snapshot> = (0..percpu::count())
        .map(|cpu| {
            let s = l1::shared(cpu);
            // The L1's window when it closed one, else the whole run.
            let end = match s.stats.window_end.load(Ordering::Relaxed) {
                0 => s.trace.lock().last(1).next().map_or(0, |e| e.tsc + e.cycles),
                end => end,
            };
            Snapshot {
                rows: crate::stats_view::rows(&s.stats),
                elapsed: end.saturating_sub(s.stats.since.load(Ordering::Relaxed)),
                loop_cycles: s.stats.loop_cycles.load(Ordering::Relaxed),
                l1_ticks: l1_ticks(cpu),
                phases: core::array::from_fn(|p| s.stats.phases[p].load(Ordering::Relaxed)),
                switches: s.stats.phase_switches.load(Ordering::Relaxed),
                slow: core::array::from_fn(|p| s.stats.slow[p].load(Ordering::Relaxed)),
            }
        })
        .collect();
    b.runs.push(snaps);
    b.stage += 1;
    if b.stage < 3 {
        b.started = restart_all(b.exits, true, b.stage == 2);
        return;
    }
    for cpu in 0..percpu::count() {
        l1::shared(cpu).stats.profile.store(false, Ordering::Release);
    }
    fn run(s: &Snapshot) -> nvmx_shell::report::BenchRun<'_> {
        nvmx_shell::report::BenchRun { rows: &s.rows, elapsed: s.elapsed, loop_cycles: s.loop_cycles, l1_ticks: s.l1_ticks }
    }
    let mut out = String::new();
    for cpu in 0..percpu::count() {
        use nvmx_shell::report::{BenchProfile, bench};
        let (off, on, prof) = (&b.runs[0][cpu], &b.runs[1][cpu], &b.runs[2][cpu]);
        let phases: alloc::vec::Vec<(&str, u64)> = crate::stats::PHASE_NAMES.iter().copied().zip(prof.phases).collect();
        let slow: alloc::vec::Vec<(&str, u64)> = crate::stats::SLOW_NAMES.iter().copied().zip(prof.slow).collect();
        let profile = BenchProfile { run: run(prof), phases: &phases, switches: prof.switches, slow: &slow };
        out.push_str(&bench(cpu, &run(off), &run(on), Some(&profile), &b.units, b.csv));
    }
    *guard = None;
    drop(guard);
    write(&out);
    prompt();
}

/// The L1 whose COM1 the shell's serial line is attached to, and how far
/// its output has been printed.
static ATTACHED: Mutex<Option<(usize, u64)>> = Mutex::new(None);

/// Ctrl-]: the escape that ends `attach` (as in telnet and `virsh console`).
const ATTACH_ESCAPE: u8 = 0x1D;

fn attach(cpu: usize, out: &mut String) -> core::fmt::Result {
    let pos = match l1::shared(cpu).console.lock().as_ref() {
        Some(ring) => ring.total(),
        None => return writeln!(out, "error: attach: cpu {cpu} has no L1 (never started)"),
    };
    *ATTACHED.lock() = Some((cpu, pos));
    writeln!(out, "attached to cpu {cpu}'s L1 COM1; Ctrl-] returns to the shell")
}

/// While attached: input goes to the L1's receiver, its output comes here.
/// `true` while attached (the line editor is bypassed).
fn attached_poll() -> bool {
    let Some((cpu, pos)) = *ATTACHED.lock() else { return false };
    let mut bytes = alloc::vec::Vec::new();
    let pos = match l1::shared(cpu).console.lock().as_ref() {
        Some(ring) => ring.since(pos, &mut bytes),
        None => pos,
    };
    if !bytes.is_empty() {
        crate::console::write_bytes(&bytes);
    }
    let mut input = alloc::vec::Vec::new();
    let mut detach = false;
    while let Some(b) = crate::serial::try_read().or_else(crate::keyboard::try_read) {
        if b == ATTACH_ESCAPE {
            detach = true;
            break;
        }
        input.push(b);
    }
    if !input.is_empty() {
        l1::platform::send_to_l1(cpu, &input);
    }
    if detach {
        *ATTACHED.lock() = None;
        crate::print!("\n[detached from cpu {cpu}]\n{PROMPT}");
        return false;
    }
    *ATTACHED.lock() = Some((cpu, pos));
    true
}
