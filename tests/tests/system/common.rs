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

/// `mem`: lines with `frames` and `heap`, each with a number.
pub fn mem_reports_frames_and_heap(m: &mut Machine, t: Timeouts) -> Result<()> {
    let out = m.command("mem", t.command)?;
    for word in ["frames", "heap"] {
        let ok = out.lines().any(|l| l.contains(word) && l.chars().any(|c| c.is_ascii_digit()));
        m.check(ok, || format!("`mem`: no line with `{word}` and a number:\n{out}"))?;
    }
    Ok(())
}

/// `acpi`: lists the MADT and a MADT summary with the number of processors.
pub fn acpi_lists_madt(m: &mut Machine, t: Timeouts, cpus: usize) -> Result<()> {
    let out = m.command("acpi", t.command)?;
    m.check(out.contains("MADT"), || format!("`acpi` does not mention MADT:\n{out}"))?;
    // The summary states the processor count: some line naming processors (or CPUs/APICs)
    // carries the number.
    let n = cpus.to_string();
    let summary = out.lines().any(|l| {
        let low = l.to_ascii_lowercase();
        (low.contains("processor") || low.contains("cpu") || low.contains("apic"))
            && l.split(|c: char| !c.is_ascii_digit()).any(|w| w == n)
    });
    m.check(summary, || format!("`acpi`: no MADT summary line with {cpus} processors:\n{out}"))
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

/// `poweroff`: a line containing `powering off`, then the emulator exits by itself.
pub fn poweroff(m: &mut Machine, t: Timeouts) -> Result<()> {
    m.send(b"poweroff\r")?;
    m.expect("powering off", t.command)?;
    m.wait_exit(t.exit)?;
    Ok(())
}
