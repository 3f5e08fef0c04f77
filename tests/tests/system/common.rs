//! Checks shared by the QEMU and Bochs tests: each one states a clause of the shell's output
//! contract and reports the transcript when it does not hold.

use nvmx_tests::output::{self, CpuState};
use nvmx_tests::{Machine, Result};
use std::time::Duration;

/// Per-step timeouts for one kind of machine.
#[derive(Clone, Copy)]
pub struct Timeouts {
    /// Power-on to the first prompt (firmware + GRUB + kernel + AP start).
    pub boot: Duration,
    /// One shell command.
    pub command: Duration,
    /// `poweroff` to the emulator process gone.
    pub exit: Duration,
}

pub const QEMU_BIOS: Timeouts = Timeouts {
    boot: Duration::from_secs(60),
    command: Duration::from_secs(20),
    exit: Duration::from_secs(20),
};

pub const QEMU_UEFI: Timeouts = Timeouts {
    boot: Duration::from_secs(90),
    command: Duration::from_secs(20),
    exit: Duration::from_secs(20),
};

pub const BOCHS: Timeouts = Timeouts {
    boot: Duration::from_secs(150),
    command: Duration::from_secs(60),
    exit: Duration::from_secs(60),
};

/// The lines of an output, without blank lines.
fn lines(out: &str) -> Vec<&str> {
    out.lines().filter(|l| !l.trim().is_empty()).collect()
}

/// `cpus`: `n` processor lines, all online, distinct APIC ids, exactly one `(boot)`, and the
/// last line `total: n online, 0 failed`.
pub fn cpus_all_online(m: &mut Machine, t: Timeouts, n: usize) -> Result<()> {
    let out = m.command("cpus", t.command)?;
    let r = output::parse_cpus(&out);
    let show = || format!("`cpus` printed:\n{out}");
    m.check(r.cpus.len() == n, || format!("expected {n} processor lines, got {}. {}", r.cpus.len(), show()))?;
    m.check(r.count(CpuState::Online) == n, || format!("expected all {n} processors online. {}", show()))?;
    let indices: Vec<u32> = r.cpus.iter().map(|c| c.index).collect();
    let expected: Vec<u32> = (0..).take(n).collect();
    m.check(indices == expected, || {
        format!("expected indices 0..{n} in order, got {indices:?}. {}", show())
    })?;
    m.check(r.apic_ids_distinct(), || format!("APIC ids are not distinct. {}", show()))?;
    let boots = r.cpus.iter().filter(|c| c.boot).count();
    m.check(boots == 1, || {
        format!("expected exactly one line ending with `(boot)`, got {boots}. {}", show())
    })?;
    m.check(r.total == Some((n as u32, 0)), || {
        format!("expected a line `total: {n} online, 0 failed`, got {:?}. {}", r.total, show())
    })?;
    m.check(r.total_is_last, || format!("the total line is not the last line. {}", show()))?;
    // A header line comes first (anything that is not a processor line).
    let first = lines(&out).first().copied().unwrap_or("");
    m.check(
        !first.is_empty() && output::parse_cpus(first).cpus.is_empty() && !first.contains("total:"),
        || format!("expected a header line before the processor lines. {}", show()),
    )?;
    Ok(())
}

/// An unknown command: exactly one line `error: unknown command 'cpuz' (try 'help')`, then the
/// prompt (which `command` already waited for).
pub fn unknown_command(m: &mut Machine, t: Timeouts) -> Result<()> {
    let out = m.command("cpuz", t.command)?;
    let l = lines(&out);
    m.check(l == ["error: unknown command 'cpuz' (try 'help')"], || {
        format!("expected exactly the line `error: unknown command 'cpuz' (try 'help')`, got:\n{out}")
    })
}

/// A bad argument: one line starting `error: `, then the prompt.
pub fn bad_argument(m: &mut Machine, t: Timeouts) -> Result<()> {
    let out = m.command("cpus x", t.command)?;
    let l = lines(&out);
    m.check(l.len() == 1 && l[0].starts_with("error: "), || {
        format!("expected one line starting `error: ` for `cpus x`, got:\n{out}")
    })
}

/// `help` lists at least `cpus`, `vmx`, `poweroff` (as words).
pub fn help_lists_commands(m: &mut Machine, t: Timeouts) -> Result<()> {
    let out = m.command("help", t.command)?;
    for cmd in ["cpus", "vmx", "mem", "acpi", "poweroff"] {
        let listed =
            out.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == '-')).any(|w| w == cmd);
        m.check(listed, || format!("`help` does not list `{cmd}`:\n{out}"))?;
    }
    Ok(())
}

/// `mem`: `frames: <usable> usable, <free> free, <allocated> allocated, <n> free ranges` with
/// free + allocated = usable (to the rounding of the units) and usable > 0, and
/// `heap: <used> used of <size>` with used <= size and size > 0.
pub fn mem_reports_frames_and_heap(m: &mut Machine, t: Timeouts) -> Result<()> {
    let out = m.command("mem", t.command)?;
    let size = r"(\d+(?:\.\d)?) (B|KiB|MiB|GiB)";
    let frames = regex::Regex::new(&format!(r"^frames: {size} usable, {size} free, {size} allocated, (\d+) free ranges$")).expect("valid regex");
    let heap = regex::Regex::new(&format!(r"^heap: {size} used of {size}$")).expect("valid regex");
    let bytes = |c: &regex::Captures, i: usize| {
        let unit = match &c[i + 1] { "GiB" => 1u64 << 30, "MiB" => 1 << 20, "KiB" => 1 << 10, _ => 1 };
        (c[i].parse::<f64>().unwrap_or(-1.0) * unit as f64) as i64
    };
    let f = out.lines().find_map(|l| frames.captures(l.trim()));
    let ok = f.as_ref().is_some_and(|c| {
        let (usable, free, allocated) = (bytes(c, 1), bytes(c, 3), bytes(c, 5));
        // Each figure is rounded to a tenth of its unit.
        usable > 0 && (free + allocated - usable).abs() <= usable / 100 + (1 << 20)
    });
    m.check(ok, || format!("`mem`: no consistent `frames: … usable, … free, … allocated, … free ranges` line:\n{out}"))?;
    let h = out.lines().find_map(|l| heap.captures(l.trim()));
    m.check(h.as_ref().is_some_and(|c| bytes(c, 3) > 0 && bytes(c, 1) <= bytes(c, 3)), || {
        format!("`mem`: no `heap: <used> used of <size>` line with used <= size:\n{out}")
    })
}

/// `acpi`: lists the MADT and a MADT summary with the number of processors.
pub fn acpi_lists_madt(m: &mut Machine, t: Timeouts, cpus: usize) -> Result<()> {
    let out = m.command("acpi", t.command)?;
    m.check(out.contains("MADT"), || format!("`acpi` does not mention MADT:\n{out}"))?;
    // The summary states the processor count: some line naming processors (or CPUs/APICs)
    // carries the number.
    // `MADT: <enabled>/<listed> processors enabled, …`: both exactly the machine's count.
    let want = format!("MADT: {cpus}/{cpus} processors enabled,");
    let summary = out.lines().any(|l| l.trim().starts_with(&want));
    m.check(summary, || format!("`acpi`: no line starting `{want}`:\n{out}"))
}

/// `vmx` without VT-x: one line `vmx: VT-x not available: <reason>`.
pub fn vmx_not_available(m: &mut Machine, t: Timeouts) -> Result<()> {
    let out = m.command("vmx", t.command)?;
    let l = lines(&out);
    let reason = l.first().and_then(|l| l.strip_prefix("vmx: VT-x not available: ")).unwrap_or("");
    m.check(l.len() == 1 && !reason.trim().is_empty(), || {
        format!("expected one line `vmx: VT-x not available: <reason>`, got:\n{out}")
    })
}

/// `vmx` on a Bochs VMX CPU: revision 0x2b, the features every Bochs model with VMX has, and
/// VMCS shadowing as given.
pub fn vmx_capabilities(m: &mut Machine, t: Timeouts, shadowing: bool) -> Result<()> {
    let out = m.command("vmx", t.command)?;
    let kv = output::parse_key_values(&out);
    let rev = output::value_of(&kv, "vmcs revision id");
    m.check(rev == Some("0x2b"), || {
        format!("`vmx`: expected `vmcs revision id  0x2b`, got {rev:?}:\n{out}")
    })?;
    let mut want: Vec<(&str, bool)> =
        vec![("ept", true), ("vpid", true), ("unrestricted guest", true), ("preemption timer", true)];
    want.push(("vmcs shadowing", shadowing));
    for (key, expected) in want {
        let v = output::value_of(&kv, key);
        let got = v.and_then(output::yes_no);
        m.check(got == Some(expected), || {
            let e = if expected { "yes" } else { "no" };
            format!("`vmx`: expected `{key}` {e}, got {v:?}:\n{out}")
        })?;
    }
    // Present with a yes/no value (their values differ between models, PLATFORM.md).
    for key in ["ept a/d bits", "invept", "invvpid", "true controls"] {
        let v = output::value_of(&kv, key);
        m.check(v.and_then(output::yes_no).is_some(), || {
            format!("`vmx`: expected key `{key}` with a yes/no value, got {v:?}:\n{out}")
        })?;
    }
    Ok(())
}

/// `poweroff`: a line containing `powering off`, then the emulator exits by itself, and its
/// own logs say it was the ACPI power-off (S5) and nothing else: Bochs reports the S5 write as
/// the reason it ends (a triple fault or a panic would be named instead); QEMU, run with
/// `-d cpu_reset`, logs "Triple fault" (and resets) there, none of which may follow the command.
pub fn poweroff(m: &mut Machine, t: Timeouts) -> Result<()> {
    let mark: Vec<usize> = m.emulator_logs().iter().map(String::len).collect();
    m.send(b"poweroff\r")?;
    m.expect("powering off", t.command)?;
    m.wait_exit(t.exit)?;
    let after: String = m
        .emulator_logs()
        .iter()
        .enumerate()
        .map(|(i, text)| text.get(mark.get(i).copied().unwrap_or(0)..).unwrap_or(""))
        .collect::<Vec<_>>()
        .join("\n");
    let tail = || after.lines().rev().take(15).collect::<Vec<_>>().into_iter().rev().collect::<Vec<_>>().join("\n");
    if m.kind() == "Bochs" {
        m.check(after.contains(BOCHS_POWER_OFF) && !after.to_ascii_lowercase().contains("triple fault"), || {
            format!("Bochs did not end by the ACPI power-off (`{BOCHS_POWER_OFF}`):\n{}", tail())
        })
    } else {
        m.check(!after.contains("CPU Reset") && !after.contains("Triple fault"), || {
            format!("QEMU logged a triple fault or a CPU reset after `poweroff`:\n{}", tail())
        })
    }
}

/// What Bochs 2.7 prints when the guest writes S5 to the ACPI PM1a control register.
const BOCHS_POWER_OFF: &str = "ACPI control: soft power off";
