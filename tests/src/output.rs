//! Pure parsing of what the shell prints. No emulator needed: unit-tested below.
//!
//! The contract these functions read (see the tests in `tests/system/`):
//! - kernel lines end with "\r\n"; the prompt is `nvmx> ` with no newline;
//! - the shell echoes what is typed, so a command's raw output starts with the echoed line;
//! - `cpus`: a header, one line per processor `index 0xapic state [(boot)]`, then
//!   `total: N online, M failed`;
//! - `vmx` on a VMX CPU: `  <key>  <value>` lines (key padded with spaces).

use regex::Regex;
use std::sync::LazyLock;

/// Removes carriage returns, ANSI escape sequences (CSI `ESC [ … final`, and two-byte `ESC x`)
/// and applies backspaces, so the text reads as it would on a terminal line by line.
pub fn clean(raw: &str) -> String {
    let mut out = String::with_capacity(raw.len());
    let mut chars = raw.chars();
    while let Some(c) = chars.next() {
        match c {
            '\r' => {}
            '\x1b' => {
                // CSI: parameters and intermediates, up to a final byte in 0x40..=0x7e. Any
                // other escape is two bytes long.
                if chars.next() == Some('[') {
                    for c in chars.by_ref() {
                        if ('\x40'..='\x7e').contains(&c) {
                            break;
                        }
                    }
                }
            }
            '\x08' | '\x7f' => {
                if out.chars().last().is_some_and(|c| c != '\n') {
                    out.pop();
                }
            }
            c => out.push(c),
        }
    }
    out
}

/// Turns the raw bytes between sending `cmd` and the next prompt into the command's output:
/// cleaned (see [`clean`]), the echoed command line removed, one `\n` after every line.
///
/// The echo is recognised as a first line equal to `cmd` (surrounding blanks ignored). If the
/// kernel did not echo, the output is returned whole.
pub fn command_output(raw: &str, cmd: &str) -> String {
    let text = clean(raw);
    let mut lines: Vec<&str> = text.split('\n').collect();
    // `split` leaves an empty last piece after the final "\n" (or the whole text if the prompt
    // followed a partial line): drop a trailing empty piece only.
    if lines.last() == Some(&"") {
        lines.pop();
    }
    if lines.first().is_some_and(|l| l.trim() == cmd.trim()) {
        lines.remove(0);
    }
    let mut out = String::new();
    for l in lines {
        out.push_str(l);
        out.push('\n');
    }
    out
}

/// The state of a processor in `cpus`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CpuState {
    Online,
    Failed,
    Offline,
}

/// One processor line of `cpus`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CpuLine {
    pub index: u32,
    pub apic_id: u32,
    pub state: CpuState,
    /// The line ends with `(boot)`.
    pub boot: bool,
    /// The line as printed.
    pub line: String,
}

/// What `cpus` printed.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct CpusReport {
    pub cpus: Vec<CpuLine>,
    /// `(online, failed)` from the `total: N online, M failed` line, if present.
    pub total: Option<(u32, u32)>,
    /// Whether the total line is the last non-empty line, as the contract says.
    pub total_is_last: bool,
}

impl CpusReport {
    /// The number of processor lines in the given state.
    pub fn count(&self, state: CpuState) -> usize {
        self.cpus.iter().filter(|c| c.state == state).count()
    }

    /// Whether all APIC ids are distinct.
    pub fn apic_ids_distinct(&self) -> bool {
        let mut ids: Vec<u32> = self.cpus.iter().map(|c| c.apic_id).collect();
        ids.sort_unstable();
        ids.windows(2).all(|w| w[0] != w[1])
    }
}

static CPU_LINE: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"^\s*(\d+)\s+0x([0-9a-f]+)\s+(online|failed|offline)\b").expect("valid regex")
});
static TOTAL_LINE: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"^\s*total:\s*(\d+)\s+online,\s*(\d+)\s+failed\s*$").expect("valid regex"));

/// Parses the output of `cpus` (already split by [`command_output`]).
pub fn parse_cpus(out: &str) -> CpusReport {
    let mut report = CpusReport::default();
    let nonempty: Vec<&str> = out.lines().filter(|l| !l.trim().is_empty()).collect();
    for (i, line) in nonempty.iter().enumerate() {
        if let Some(c) = CPU_LINE.captures(line) {
            let state = match &c[3] {
                "online" => CpuState::Online,
                "failed" => CpuState::Failed,
                _ => CpuState::Offline,
            };
            report.cpus.push(CpuLine {
                index: c[1].parse().unwrap_or(u32::MAX),
                apic_id: u32::from_str_radix(&c[2], 16).unwrap_or(u32::MAX),
                state,
                boot: line.trim_end().ends_with("(boot)"),
                line: (*line).to_string(),
            });
        } else if let Some(c) = TOTAL_LINE.captures(line) {
            report.total = Some((c[1].parse().unwrap_or(u32::MAX), c[2].parse().unwrap_or(u32::MAX)));
            report.total_is_last = i + 1 == nonempty.len();
        }
    }
    report
}

/// Parses `  <key>  <value>` lines: the key is everything up to the first run of two or more
/// spaces (keys may contain single spaces, e.g. `vmcs revision id`), the value the rest.
/// Lines without such a separator are ignored.
pub fn parse_key_values(out: &str) -> Vec<(String, String)> {
    out.lines()
        .filter_map(|line| {
            let line = line.trim();
            let sep = line.find("  ")?;
            let key = line[..sep].trim();
            let value = line[sep..].trim();
            (!key.is_empty()).then(|| (key.to_string(), value.to_string()))
        })
        .collect()
}

/// The value of `key` in [`parse_key_values`] output.
pub fn value_of<'a>(kv: &'a [(String, String)], key: &str) -> Option<&'a str> {
    kv.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
}

/// A contract boolean: `yes`, or `yes, …` / `yes (…)`; `no` likewise. `None` if neither.
pub fn yes_no(value: &str) -> Option<bool> {
    let v = value.trim();
    let word = v.split(|c: char| c == ',' || c.is_whitespace()).next().unwrap_or("");
    match word {
        "yes" => Some(true),
        "no" => Some(false),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clean_drops_cr_escapes_and_applies_backspace() {
        assert_eq!(clean("ab\r\ncd\r\n"), "ab\ncd\n");
        assert_eq!(clean("\x1b[2K\x1b[1;32mok\x1b[0m"), "ok");
        assert_eq!(clean("cpuz\x08\x08s\n"), "cps\n");
        assert_eq!(clean("\n\x08x"), "\nx");
    }

    #[test]
    fn command_output_strips_echo() {
        let raw = "cpus\r\n  cpu  apic  state\r\n  0  0x0  online (boot)\r\ntotal: 1 online, 0 failed\r\n";
        assert_eq!(
            command_output(raw, "cpus"),
            "  cpu  apic  state\n  0  0x0  online (boot)\ntotal: 1 online, 0 failed\n"
        );
    }

    #[test]
    fn command_output_without_echo_keeps_everything() {
        assert_eq!(command_output("hello\r\n", "cpus"), "hello\n");
        assert_eq!(command_output("", "cpus"), "");
        assert_eq!(command_output("cpus\r\n", "cpus"), "");
    }

    #[test]
    fn command_output_keeps_a_partial_last_line() {
        assert_eq!(command_output("x\r\nerror: y", "x"), "error: y\n");
    }

    #[test]
    fn command_output_of_unknown_command() {
        let raw = "cpuz\r\nerror: unknown command 'cpuz' (try 'help')\r\n";
        assert_eq!(command_output(raw, "cpuz"), "error: unknown command 'cpuz' (try 'help')\n");
    }

    const CPUS4: &str = "\
 cpu  apic id  state
   0  0x0      online  (boot)
   1  0x1      online
   2  0x2      online
   3  0x3      failed
total: 3 online, 1 failed
";

    #[test]
    fn parse_cpus_reads_lines_and_total() {
        let r = parse_cpus(CPUS4);
        assert_eq!(r.cpus.len(), 4);
        assert_eq!(r.count(CpuState::Online), 3);
        assert_eq!(r.count(CpuState::Failed), 1);
        assert_eq!(r.total, Some((3, 1)));
        assert!(r.total_is_last);
        assert!(r.cpus[0].boot && !r.cpus[1].boot);
        assert_eq!(r.cpus[2].apic_id, 2);
        assert!(r.apic_ids_distinct());
    }

    #[test]
    fn parse_cpus_hex_apic_ids_and_duplicates() {
        let r = parse_cpus("x\n 0 0x1f online (boot)\n 1 0x1f online\n");
        assert_eq!(r.cpus[0].apic_id, 0x1f);
        assert!(!r.apic_ids_distinct());
        assert_eq!(r.total, None);
    }

    #[test]
    fn parse_cpus_total_not_last_is_noticed() {
        let r = parse_cpus(" 0 0x0 online (boot)\ntotal: 1 online, 0 failed\nextra\n");
        assert_eq!(r.total, Some((1, 0)));
        assert!(!r.total_is_last);
    }

    #[test]
    fn key_values_split_on_double_space() {
        let out = "  vmcs revision id    0x2b\n  ept                 yes, 4-level\n  vmcs shadowing      no\nheader\n";
        let kv = parse_key_values(out);
        assert_eq!(value_of(&kv, "vmcs revision id"), Some("0x2b"));
        assert_eq!(value_of(&kv, "ept"), Some("yes, 4-level"));
        assert_eq!(value_of(&kv, "vmcs shadowing"), Some("no"));
        assert_eq!(value_of(&kv, "header"), None);
    }

    #[test]
    fn yes_no_accepts_details_after_the_word() {
        assert_eq!(yes_no("yes"), Some(true));
        assert_eq!(yes_no("yes, 1 GiB pages"), Some(true));
        assert_eq!(yes_no("yes (on)"), Some(true));
        assert_eq!(yes_no("no"), Some(false));
        assert_eq!(yes_no("nope"), None);
        assert_eq!(yes_no(""), None);
    }
}
