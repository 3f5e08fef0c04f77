//! The command table and the parser: a finished line becomes a typed
//! [`Command`] or a one-line [`ParseError`]. Adding a command is one
//! [`COMMANDS`] entry, one variant and one arm in [`parse`].

use alloc::string::{String, ToString};
use alloc::vec::Vec;
use core::fmt;

/// One entry of the command table.
#[derive(Debug)]
pub struct CommandSpec {
    pub name: &'static str,
    pub usage: &'static str,
    pub summary: &'static str,
    pub help: &'static str,
}

/// Every command, in the order `help` lists them.
pub static COMMANDS: &[CommandSpec] = &[
    CommandSpec { name: "help", usage: "help [<command>]", summary: "list commands, or explain one", help: "Without an argument lists every command; with one prints its usage and help." },
    CommandSpec { name: "cpus", usage: "cpus", summary: "processors: index, APIC id, state", help: "One line per processor of the MADT: index, APIC id, state (online / failed / offline), then totals." },
    CommandSpec { name: "mem", usage: "mem", summary: "physical frames, L0 heap, memory map", help: "Frame allocator and heap figures and GRUB's memory map." },
    CommandSpec { name: "acpi", usage: "acpi", summary: "ACPI tables, MADT and FADT summary", help: "The ACPI tables found, the MADT (processors, I/O APICs) and FADT power management." },
    CommandSpec { name: "vmx", usage: "vmx", summary: "VT-x capabilities of this CPU", help: "Whether VT-x is usable, and a decode of the IA32_VMX_* capability MSRs." },
    CommandSpec { name: "l1", usage: "l1 [<cpu>] | l1 stop|start|restart <cpu> [<arg>...]", summary: "L1 state per core; stop/start/restart one", help: "Shows each core's L1: state, exits, last exit, uptime. `start`/`restart` may give the L1 a new command line, e.g. `l1 restart 1 crash=triple`." },
    CommandSpec { name: "stats", usage: "stats [<cpu>|all] [reset] [--csv]", summary: "exit counters per exit reason", help: "Per core and exit reason: exits (hex and decimal), completed, L0 cycles (sum, min, avg, max), totals and L0's share of the core. `reset` zeroes them, `--csv` prints CSV." },
    CommandSpec { name: "top", usage: "top [<cpu>|all]", summary: "live exit rates per core and reason", help: "Like kvm_stat: every second, per core the exits per second and L0's share of the core (L1, L2 handled by L0, L2 reflected to L1), then its exit reasons fastest first with level, rate, L0 share and total. Redrawn in place on the serial line and the screen; any key ends it." },
    CommandSpec { name: "trace", usage: "trace [<cpu>] [<n>]", summary: "the last exits of a core", help: "The last n (default 16) exits: TSC, reason, qualification, RIP, level, L0 cycles. Emulated VMREAD/VMWRITEs served in L0's exit stub are counted (stats, fields) but not traced." },
    CommandSpec { name: "console", usage: "console <cpu>", summary: "an L1's console output", help: "The newest output the L1 of that core wrote to its COM1." },
    CommandSpec { name: "attach", usage: "attach <cpu>", summary: "talk to an L1's COM1 (Ctrl-] ends)", help: "Connects this serial line and the keyboard to that core's L1 serial port both ways, like `virsh console`: what you type goes to its receiver, what it sends is printed. Ctrl-] returns to the shell." },
    CommandSpec { name: "vmcs", usage: "vmcs 01|12|02 [<cpu>]", summary: "dump a VMCS of a core, live", help: "Dumps VMCS0-1 (runs L1), VMCS1-2 (what L1 asked) or VMCS0-2 (runs L2), read on that core, grouped like Linux dump_vmcs." },
    CommandSpec { name: "shadow", usage: "shadow [status] | shadow on|off|adaptive|full [<cpu>|all]", summary: "VMCS shadowing per core: show, switch live", help: "Shows, per core, whether the CPU has VMCS shadowing, whether it is on for that L1, its policy and how many fields are shadowed; `on` (the fixed set of 15 fields), `adaptive` (starts empty; a field joins after 8 emulated VMREADs or VMWRITEs of it), `full` (every field the CPU can shadow, from the start) and `off` switch it for a running L1 (default: all cores)." },
    CommandSpec { name: "fields", usage: "fields [<cpu>|all] [--csv]", summary: "VMREAD/VMWRITE exits per VMCS field", help: "Per core, the fields with the most emulated VMREAD/VMWRITE exits (top 16): reads, writes, failures of each (VMfailInvalid, VMfailValid, a fault) and whether the field is shadowed now (r: VMREAD, w: VMWRITE without an exit); operands that name no field are one row. Counted since the L1 started or `stats reset`. `--csv` prints every field with exits as CSV." },
    CommandSpec { name: "bench", usage: "bench [<exits>] [--csv] [--pair <cycles>] [--bare <ticks>]", summary: "forum workload, shadowing off vs on, on every core", help: "Restarts every core's L1 with the forum workload for <exits> L2 exits (default 4000), with VMCS shadowing off, on, and on with L0's phases profiled, and prints per core the VMX-instruction exits side by side in the seed thread's format; then, in instructions (the TSC calibrated against a known loop), L0's path per L2 exit, per reflection and per emulated VMREAD/VMWRITE/VMPTRLD, transitions per L2 exit, a modelled real-hardware figure (instructions + <cycles> per VM exit/entry pair, default 1000) for the bare L1 (--bare: its TSC ticks per L2 exit, measured by make bench) and nested, each with its goal, and where L0's instructions go, phase by phase; --csv adds CSV lines." },
    CommandSpec { name: "integrity", usage: "integrity [snap|check]", summary: "hash L0 and quiescent L1s; compare with a snapshot", help: "Hashes L0's text and read-only data, the whole RAM of every halted (quiescent) L1 and each core's VMCS0-1 host-state fields (read on that core). `snap` keeps them, `check` measures again and names every region that differs or can no longer be measured: after a hostile L1 ran, `unharmed` proves L0 and the other L1s untouched." },
    CommandSpec { name: "log", usage: "log [error|warn|info|debug|trace]", summary: "show or set the log level", help: "Kernel messages at this level and above are printed." },
    CommandSpec { name: "reboot", usage: "reboot", summary: "reset the machine", help: "ACPI reset register, then port 0xCF9, then the keyboard controller." },
    CommandSpec { name: "poweroff", usage: "poweroff", summary: "power off (ACPI S5)", help: "ACPI S5 through the FADT's PM1 control ports and \\_S5; QEMU and Bochs exit." },
];

/// Which CPUs a command applies to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CpuSel {
    One(usize),
    All,
}

/// What `l1` does to a core.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum L1Action {
    Stop,
    Start,
    Restart,
}

/// What `integrity` does with its measurement.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IntegrityAction {
    /// Print it.
    Show,
    /// Keep it as the snapshot.
    Snap,
    /// Compare it with the snapshot.
    Check,
}

/// Which of the three VMCSs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VmcsKind {
    /// VMCS0-1: L0 runs L1.
    V01,
    /// VMCS1-2: what L1 asked for L2.
    V12,
    /// VMCS0-2: L0 runs L2.
    V02,
}

impl fmt::Display for VmcsKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            VmcsKind::V01 => "01",
            VmcsKind::V12 => "12",
            VmcsKind::V02 => "02",
        })
    }
}

/// What `shadow` switches a core to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ShadowMode {
    Off,
    /// The fixed field set.
    On,
    /// The set learnt from the L1's exits.
    Adaptive,
    /// Every field the CPU's shadow VMCS holds, from the start.
    Full,
}

/// A parsed command.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Command {
    Help(Option<String>),
    Cpus,
    Mem,
    Acpi,
    Vmx,
    Log(Option<String>),
    Reboot,
    Poweroff,
    Stats { cpus: CpuSel, reset: bool, csv: bool },
    L1Status(Option<usize>),
    L1Control { action: L1Action, cpu: usize, args: Option<String> },
    Console(usize),
    Attach(usize),
    Vmcs { which: VmcsKind, cpu: usize },
    Trace { cpu: Option<usize>, count: Option<usize> },
    /// `None`: show the status.
    Shadow { mode: Option<ShadowMode>, cpus: CpuSel },
    Fields { cpus: CpuSel, csv: bool },
    /// `pair`: modelled cost of one VM exit/entry pair in cycles; `bare`:
    /// TSC ticks per L2 exit of the same L1 booted bare (`make bench` measures it).
    Bench { exits: u64, csv: bool, pair: u64, bare: Option<u64> },
    Top(CpuSel),
    Integrity(IntegrityAction),
}

/// What the parser needs to know of the machine.
#[derive(Clone, Copy, Debug)]
pub struct Context {
    pub ncpus: usize,
}

/// Why a line is not a command. `Display` gives one line without "error: ".
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ParseError {
    UnknownCommand(String),
    UnexpectedArgument { cmd: &'static str, arg: String },
    MissingArgument { cmd: &'static str, what: &'static str },
    BadNumber { cmd: &'static str, arg: String },
    NoSuchCpu { cmd: &'static str, cpu: usize, ncpus: usize },
    BadChoice { cmd: &'static str, arg: String, choices: &'static str },
    NoSuchHelpTopic(String),
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ParseError::UnknownCommand(c) => write!(f, "unknown command '{c}' (try 'help')"),
            ParseError::UnexpectedArgument { cmd, arg } => write!(f, "{cmd}: unexpected argument '{arg}'"),
            ParseError::MissingArgument { cmd, what } => write!(f, "{cmd}: missing {what}"),
            ParseError::BadNumber { cmd, arg } => write!(f, "{cmd}: '{arg}' is not a number"),
            ParseError::NoSuchCpu { cmd, cpu, ncpus } => {
                write!(f, "{cmd}: cpu {cpu} does not exist (0-{})", ncpus.saturating_sub(1))
            }
            ParseError::BadChoice { cmd, arg, choices } => write!(f, "{cmd}: unknown {arg} ({choices})"),
            ParseError::NoSuchHelpTopic(t) => write!(f, "help: no command '{t}'"),
        }
    }
}

/// A decimal or 0x-hex number.
pub fn parse_number(s: &str) -> Option<u64> {
    let (digits, radix) = match s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
        Some(hex) => (hex, 16),
        None => (s, 10),
    };
    // `from_str_radix` also takes a leading '+': `stats +1`, `0x+5` are typos, not numbers.
    if !digits.bytes().all(|b| char::from(b).is_digit(radix)) {
        return None;
    }
    u64::from_str_radix(digits, radix).ok()
}

fn is_number(s: &str) -> bool {
    parse_number(s).is_some()
}

fn cpu_arg(cmd: &'static str, s: &str, ctx: &Context) -> Result<usize, ParseError> {
    let n = parse_number(s).ok_or_else(|| ParseError::BadNumber { cmd, arg: s.to_string() })?;
    let cpu = usize::try_from(n).unwrap_or(usize::MAX);
    if cpu >= ctx.ncpus {
        return Err(ParseError::NoSuchCpu { cmd, cpu, ncpus: ctx.ncpus });
    }
    Ok(cpu)
}

fn no_more(cmd: &'static str, rest: &[&str]) -> Result<(), ParseError> {
    match rest.first() {
        Some(arg) => Err(ParseError::UnexpectedArgument { cmd, arg: arg.to_string() }),
        None => Ok(()),
    }
}

/// Parses one line; `Ok(None)` for a blank line.
pub fn parse(line: &str, ctx: &Context) -> Result<Option<Command>, ParseError> {
    let words: Vec<&str> = line.split_whitespace().collect();
    let Some((&name, args)) = words.split_first() else { return Ok(None) };
    let cmd = match name {
        "help" => match args {
            [] => Command::Help(None),
            [topic] if COMMANDS.iter().any(|c| c.name == *topic) => Command::Help(Some(topic.to_string())),
            [topic] => return Err(ParseError::NoSuchHelpTopic(topic.to_string())),
            [_, rest @ ..] => return no_more("help", rest).map(|()| None),
        },
        "cpus" | "mem" | "acpi" | "vmx" | "reboot" | "poweroff" => {
            let spec = COMMANDS.iter().find(|c| c.name == name).expect("in the table");
            no_more(spec.name, args)?;
            match name {
                "cpus" => Command::Cpus,
                "mem" => Command::Mem,
                "acpi" => Command::Acpi,
                "vmx" => Command::Vmx,
                "reboot" => Command::Reboot,
                _ => Command::Poweroff,
            }
        }
        "log" => match args {
            [] => Command::Log(None),
            [level] if matches!(*level, "error" | "warn" | "info" | "debug" | "trace") => {
                Command::Log(Some(level.to_string()))
            }
            [level] => {
                return Err(ParseError::BadChoice {
                    cmd: "log",
                    arg: alloc::format!("level '{level}'"),
                    choices: "error|warn|info|debug|trace",
                });
            }
            [_, rest @ ..] => return no_more("log", rest).map(|()| None),
        },
        "stats" => {
            let (mut cpus, mut reset, mut csv) = (CpuSel::All, false, false);
            for (i, &a) in args.iter().enumerate() {
                match a {
                    "all" if i == 0 => cpus = CpuSel::All,
                    "reset" if !reset => reset = true,
                    "--csv" if !csv => csv = true,
                    n if i == 0 && is_number(n) => cpus = CpuSel::One(cpu_arg("stats", n, ctx)?),
                    other => return Err(ParseError::UnexpectedArgument { cmd: "stats", arg: other.to_string() }),
                }
            }
            Command::Stats { cpus, reset, csv }
        }
        "l1" => match args {
            [] => Command::L1Status(None),
            [action, rest @ ..] if matches!(*action, "stop" | "start" | "restart") => {
                let action = match *action {
                    "stop" => L1Action::Stop,
                    "start" => L1Action::Start,
                    _ => L1Action::Restart,
                };
                let [cpu, extra @ ..] = rest else {
                    return Err(ParseError::MissingArgument { cmd: "l1", what: "cpu" });
                };
                let cpu = cpu_arg("l1", cpu, ctx)?;
                if action == L1Action::Stop {
                    no_more("l1", extra)?;
                }
                let args = (!extra.is_empty()).then(|| extra.join(" "));
                Command::L1Control { action, cpu, args }
            }
            [cpu] if is_number(cpu) => Command::L1Status(Some(cpu_arg("l1", cpu, ctx)?)),
            [other, ..] => {
                return Err(ParseError::BadChoice {
                    cmd: "l1",
                    arg: alloc::format!("argument '{other}'"),
                    choices: "<cpu>|stop|start|restart",
                });
            }
        },
        "console" => match args {
            [] => return Err(ParseError::MissingArgument { cmd: "console", what: "cpu" }),
            [cpu, rest @ ..] => {
                no_more("console", rest)?;
                Command::Console(cpu_arg("console", cpu, ctx)?)
            }
        },
        "attach" => match args {
            [] => return Err(ParseError::MissingArgument { cmd: "attach", what: "cpu" }),
            [cpu, rest @ ..] => {
                no_more("attach", rest)?;
                Command::Attach(cpu_arg("attach", cpu, ctx)?)
            }
        },
        "vmcs" => {
            let [which, rest @ ..] = args else {
                return Err(ParseError::MissingArgument { cmd: "vmcs", what: "01|12|02" });
            };
            let which = match *which {
                "01" => VmcsKind::V01,
                "12" => VmcsKind::V12,
                "02" => VmcsKind::V02,
                other => {
                    return Err(ParseError::BadChoice {
                        cmd: "vmcs",
                        arg: alloc::format!("vmcs '{other}'"),
                        choices: "01|12|02",
                    });
                }
            };
            let cpu = match rest {
                [] => 0,
                [cpu, more @ ..] => {
                    no_more("vmcs", more)?;
                    cpu_arg("vmcs", cpu, ctx)?
                }
            };
            Command::Vmcs { which, cpu }
        }
        "trace" => {
            let mut cpu = None;
            let mut count = None;
            for (i, &a) in args.iter().enumerate() {
                match i {
                    0 => cpu = Some(cpu_arg("trace", a, ctx)?),
                    1 => {
                        let n = parse_number(a).ok_or_else(|| ParseError::BadNumber { cmd: "trace", arg: a.to_string() })?;
                        count = Some(usize::try_from(n).unwrap_or(usize::MAX));
                    }
                    _ => return Err(ParseError::UnexpectedArgument { cmd: "trace", arg: a.to_string() }),
                }
            }
            Command::Trace { cpu, count }
        }
        "bench" => {
            let (mut exits, mut csv, mut pair, mut bare) = (4000, false, 1000, None);
            let number = |n: Option<&&str>, what: &'static str| {
                let n = n.ok_or(ParseError::MissingArgument { cmd: "bench", what })?;
                parse_number(n).filter(|&v| v > 0).ok_or_else(|| ParseError::BadNumber { cmd: "bench", arg: n.to_string() })
            };
            let mut i = 0;
            while let Some(&a) = args.get(i) {
                match a {
                    "--csv" if !csv => csv = true,
                    "--pair" => {
                        pair = number(args.get(i + 1), "<cycles> after --pair")?;
                        i += 1;
                    }
                    "--bare" => {
                        bare = Some(number(args.get(i + 1), "<ticks> after --bare")?);
                        i += 1;
                    }
                    n if i == 0 && is_number(n) => {
                        exits = parse_number(n).filter(|&n| n > 0).ok_or_else(|| ParseError::BadNumber { cmd: "bench", arg: n.to_string() })?;
                    }
                    other => return Err(ParseError::UnexpectedArgument { cmd: "bench", arg: other.to_string() }),
                }
                i += 1;
            }
            Command::Bench { exits, csv, pair, bare }
        }
        "top" => match args {
            [] | ["all"] => Command::Top(CpuSel::All),
            [cpu] => Command::Top(CpuSel::One(cpu_arg("top", cpu, ctx)?)),
            [_, rest @ ..] => return no_more("top", rest).map(|()| None),
        },
        "integrity" => match args {
            [] => Command::Integrity(IntegrityAction::Show),
            ["snap", rest @ ..] => no_more("integrity", rest).map(|()| Command::Integrity(IntegrityAction::Snap))?,
            ["check", rest @ ..] => no_more("integrity", rest).map(|()| Command::Integrity(IntegrityAction::Check))?,
            [other, ..] => {
                return Err(ParseError::BadChoice {
                    cmd: "integrity",
                    arg: alloc::format!("argument '{other}'"),
                    choices: "snap|check",
                });
            }
        },
        "shadow" => {
            let (mode, rest) = match args {
                [] => (None, args),
                ["status", rest @ ..] => (None, rest),
                ["on", rest @ ..] => (Some(ShadowMode::On), rest),
                ["off", rest @ ..] => (Some(ShadowMode::Off), rest),
                ["adaptive", rest @ ..] => (Some(ShadowMode::Adaptive), rest),
                ["full", rest @ ..] => (Some(ShadowMode::Full), rest),
                [other, ..] if !is_number(other) && *other != "all" => {
                    return Err(ParseError::BadChoice {
                        cmd: "shadow",
                        arg: alloc::format!("argument '{other}'"),
                        choices: "status|on|off|adaptive|full",
                    });
                }
                _ => (None, args),
            };
            let cpus = match rest {
                [] | ["all"] => CpuSel::All,
                [cpu] => CpuSel::One(cpu_arg("shadow", cpu, ctx)?),
                [_, extra, ..] => return Err(ParseError::UnexpectedArgument { cmd: "shadow", arg: extra.to_string() }),
            };
            Command::Shadow { mode, cpus }
        }
        "fields" => {
            let (mut cpus, mut csv) = (CpuSel::All, false);
            for (i, &a) in args.iter().enumerate() {
                match a {
                    "all" if i == 0 => cpus = CpuSel::All,
                    "--csv" if !csv => csv = true,
                    n if i == 0 && is_number(n) => cpus = CpuSel::One(cpu_arg("fields", n, ctx)?),
                    other => return Err(ParseError::UnexpectedArgument { cmd: "fields", arg: other.to_string() }),
                }
            }
            Command::Fields { cpus, csv }
        }
        other => return Err(ParseError::UnknownCommand(other.to_string())),
    };
    Ok(Some(cmd))
}

#[cfg(test)]
mod tests {
    use super::*;

    const CTX: Context = Context { ncpus: 4 };

    fn ok(line: &str) -> Command {
        parse(line, &CTX).unwrap().unwrap()
    }
    fn err(line: &str) -> String {
        parse(line, &CTX).unwrap_err().to_string()
    }

    #[test]
    fn blank_lines_are_nothing() {
        assert_eq!(parse("", &CTX), Ok(None));
        assert_eq!(parse("   \t ", &CTX), Ok(None));
    }

    #[test]
    fn simple_commands() {
        assert_eq!(ok("cpus"), Command::Cpus);
        assert_eq!(ok("  mem  "), Command::Mem);
        assert_eq!(ok("acpi"), Command::Acpi);
        assert_eq!(ok("vmx"), Command::Vmx);
        assert_eq!(ok("reboot"), Command::Reboot);
        assert_eq!(ok("poweroff"), Command::Poweroff);
        assert_eq!(ok("help"), Command::Help(None));
        assert_eq!(ok("help stats"), Command::Help(Some("stats".into())));
        assert_eq!(ok("log"), Command::Log(None));
        assert_eq!(ok("log debug"), Command::Log(Some("debug".into())));
    }

    #[test]
    fn errors_name_the_problem() {
        assert_eq!(err("cpuz"), "unknown command 'cpuz' (try 'help')");
        assert_eq!(err("CPUS"), "unknown command 'CPUS' (try 'help')");
        assert_eq!(err("cpus x"), "cpus: unexpected argument 'x'");
        assert_eq!(err("log loud"), "log: unknown level 'loud' (error|warn|info|debug|trace)");
        assert_eq!(err("stats 9"), "stats: cpu 9 does not exist (0-3)");
        assert_eq!(err("help foo"), "help: no command 'foo'");
        assert_eq!(err("console"), "console: missing cpu");
        assert_eq!(err("attach"), "attach: missing cpu");
        assert_eq!(ok("attach 1"), Command::Attach(1));
        assert_eq!(err("attach 1 2"), "attach: unexpected argument '2'");
        assert_eq!(err("console x"), "console: 'x' is not a number");
        assert_eq!(err("vmcs 03"), "vmcs: unknown vmcs '03' (01|12|02)");
        assert_eq!(err("l1 stop"), "l1: missing cpu");
        assert_eq!(err("l1 stop 1 extra"), "l1: unexpected argument 'extra'");
        assert_eq!(err("trace 0 5 6"), "trace: unexpected argument '6'");
        assert_eq!(err("stats reset reset"), "stats: unexpected argument 'reset'");
    }

    #[test]
    fn fields_forms() {
        assert_eq!(ok("fields"), Command::Fields { cpus: CpuSel::All, csv: false });
        assert_eq!(ok("fields all"), Command::Fields { cpus: CpuSel::All, csv: false });
        assert_eq!(ok("fields 1"), Command::Fields { cpus: CpuSel::One(1), csv: false });
        assert_eq!(ok("fields 0x2 --csv"), Command::Fields { cpus: CpuSel::One(2), csv: true });
        assert_eq!(ok("fields --csv"), Command::Fields { cpus: CpuSel::All, csv: true });
        assert_eq!(err("fields 9"), "fields: cpu 9 does not exist (0-3)");
        assert_eq!(err("fields 1 2"), "fields: unexpected argument '2'");
        assert_eq!(err("fields --csv --csv"), "fields: unexpected argument '--csv'");
        assert_eq!(err("fields top"), "fields: unexpected argument 'top'");
        assert!(COMMANDS.iter().any(|c| c.name == "fields"));
    }

    #[test]
    fn stats_forms() {
        assert_eq!(ok("stats"), Command::Stats { cpus: CpuSel::All, reset: false, csv: false });
        assert_eq!(ok("stats 2"), Command::Stats { cpus: CpuSel::One(2), reset: false, csv: false });
        assert_eq!(ok("stats all reset"), Command::Stats { cpus: CpuSel::All, reset: true, csv: false });
        assert_eq!(ok("stats 0x1 --csv"), Command::Stats { cpus: CpuSel::One(1), reset: false, csv: true });
    }

    #[test]
    fn l1_vmcs_trace_console_forms() {
        assert_eq!(ok("l1"), Command::L1Status(None));
        assert_eq!(ok("l1 3"), Command::L1Status(Some(3)));
        assert_eq!(ok("l1 stop 1"), Command::L1Control { action: L1Action::Stop, cpu: 1, args: None });
        assert_eq!(
            ok("l1 restart 1 crash=triple workload=plain"),
            Command::L1Control { action: L1Action::Restart, cpu: 1, args: Some("crash=triple workload=plain".into()) }
        );
        assert_eq!(ok("vmcs 01"), Command::Vmcs { which: VmcsKind::V01, cpu: 0 });
        assert_eq!(ok("vmcs 02 3"), Command::Vmcs { which: VmcsKind::V02, cpu: 3 });
        assert_eq!(ok("trace"), Command::Trace { cpu: None, count: None });
        assert_eq!(ok("trace 1 32"), Command::Trace { cpu: Some(1), count: Some(32) });
        assert_eq!(ok("console 2"), Command::Console(2));
        assert_eq!(ok("bench"), Command::Bench { exits: 4000, csv: false, pair: 1000, bare: None });
        assert_eq!(ok("bench 100 --csv"), Command::Bench { exits: 100, csv: true, pair: 1000, bare: None });
        assert_eq!(ok("bench 100 --pair 700 --bare 0x100"), Command::Bench { exits: 100, csv: false, pair: 700, bare: Some(256) });
        assert_eq!(ok("integrity"), Command::Integrity(IntegrityAction::Show));
        assert_eq!(ok("integrity snap"), Command::Integrity(IntegrityAction::Snap));
        assert_eq!(ok("integrity check"), Command::Integrity(IntegrityAction::Check));
        assert_eq!(err("integrity verify"), "integrity: unknown argument 'verify' (snap|check)");
        assert_eq!(err("integrity snap 1"), "integrity: unexpected argument '1'");
        assert_eq!(err("bench 0"), "bench: '0' is not a number");
        assert_eq!(err("bench --pair 0"), "bench: '0' is not a number");
        assert_eq!(err("bench --bare"), "bench: missing <ticks> after --bare");
        assert_eq!(ok("shadow"), Command::Shadow { mode: None, cpus: CpuSel::All });
        assert_eq!(ok("shadow status 1"), Command::Shadow { mode: None, cpus: CpuSel::One(1) });
        assert_eq!(ok("shadow on"), Command::Shadow { mode: Some(ShadowMode::On), cpus: CpuSel::All });
        assert_eq!(ok("shadow off 3"), Command::Shadow { mode: Some(ShadowMode::Off), cpus: CpuSel::One(3) });
        assert_eq!(ok("shadow adaptive all"), Command::Shadow { mode: Some(ShadowMode::Adaptive), cpus: CpuSel::All });
        assert_eq!(ok("shadow adaptive 2"), Command::Shadow { mode: Some(ShadowMode::Adaptive), cpus: CpuSel::One(2) });
        assert_eq!(ok("shadow full 1"), Command::Shadow { mode: Some(ShadowMode::Full), cpus: CpuSel::One(1) });
        assert_eq!(err("shadow maybe"), "shadow: unknown argument 'maybe' (status|on|off|adaptive|full)");
        assert_eq!(err("shadow adaptive 1 2"), "shadow: unexpected argument '2'");
        assert_eq!(err("shadow on 7"), "shadow: cpu 7 does not exist (0-3)");
        assert_eq!(ok("top"), Command::Top(CpuSel::All));
        assert_eq!(ok("top 2"), Command::Top(CpuSel::One(2)));
        assert_eq!(err("top 4"), "top: cpu 4 does not exist (0-3)");
        assert_eq!(err("top fast"), "top: 'fast' is not a number");
        assert_eq!(err("top 1 2"), "top: unexpected argument '2'");
    }

    #[test]
    fn numbers_are_decimal_or_0x_hex_only() {
        assert_eq!(parse_number("109128611"), Some(109_128_611));
        assert_eq!(parse_number("0x6812BA3"), Some(0x0681_2BA3));
        assert_eq!(parse_number("0X6812ba3"), Some(0x0681_2BA3));
        assert_eq!(parse_number("18446744073709551615"), Some(u64::MAX));
        for bad in ["", "+1", "-1", "0x", "0x+5", "0xg", "12a", "1_000", "18446744073709551616"] {
            assert_eq!(parse_number(bad), None, "{bad:?}");
        }
        assert_eq!(err("console +1"), "console: '+1' is not a number");
    }

    #[test]
    fn every_table_entry_parses() {
        for spec in COMMANDS {
            let line = match spec.name {
                "console" => "console 0",
                "attach" => "attach 0",
                "vmcs" => "vmcs 01",
                n => n,
            };
            assert!(parse(line, &CTX).unwrap().is_some(), "{}", spec.name);
        }
    }
}
