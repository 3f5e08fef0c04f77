//! Output formatting: aligned tables (and the same table as CSV), numbers in
//! the seed thread's hex style, byte sizes and percentages in integer
//! arithmetic (the kernel has no floating point).

use alloc::string::String;
use alloc::vec::Vec;
use core::fmt::Write;

/// A table of text cells; numeric-looking columns are right-aligned.
pub struct Table {
    header: Vec<String>,
    rows: Vec<Vec<String>>,
}

fn numeric(cell: &str) -> bool {
    !cell.is_empty() && (cell.starts_with("0x") || cell.chars().all(|c| c.is_ascii_digit() || c == '.' || c == ' ' || c == '%'))
}

impl Table {
    pub fn new(header: &[&str]) -> Table {
        Table { header: header.iter().map(|s| String::from(*s)).collect(), rows: Vec::new() }
    }

    pub fn row(&mut self, cells: &[&str]) {
        self.rows.push(cells.iter().map(|s| String::from(*s)).collect());
    }

    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    /// Columns separated by two spaces, each as wide as its widest cell;
    /// a column whose cells are all numbers is right-aligned.
    pub fn render(&self) -> String {
        let ncols = self.header.len();
        let mut width = alloc::vec![0usize; ncols];
        let mut right = alloc::vec![true; ncols];
        for row in core::iter::once(&self.header).chain(&self.rows) {
            for (i, cell) in row.iter().enumerate().take(ncols) {
                width[i] = width[i].max(cell.chars().count());
            }
        }
        for row in &self.rows {
            for (i, cell) in row.iter().enumerate().take(ncols) {
                if !cell.is_empty() && !numeric(cell) {
                    right[i] = false;
                }
            }
        }
        let mut out = String::new();
        for row in core::iter::once(&self.header).chain(&self.rows) {
            let mut line = String::new();
            for i in 0..ncols {
                let cell = row.get(i).map_or("", String::as_str);
                if i > 0 {
                    line.push_str("  ");
                }
                let pad = width[i] - cell.chars().count();
                if right[i] {
                    line.extend(core::iter::repeat_n(' ', pad));
                    line.push_str(cell);
                } else {
                    line.push_str(cell);
                    line.extend(core::iter::repeat_n(' ', pad));
                }
            }
            out.push_str(line.trim_end());
            out.push('\n');
        }
        out
    }

    /// The same table as CSV (header first; cells with commas or quotes quoted).
    pub fn render_csv(&self) -> String {
        let mut out = String::new();
        for row in core::iter::once(&self.header).chain(&self.rows) {
            let cells: Vec<String> = row
                .iter()
                .map(|c| {
                    if c.contains(',') || c.contains('"') {
                        alloc::format!("\"{}\"", c.replace('"', "\"\""))
                    } else {
                        c.clone()
                    }
                })
                .collect();
            out.push_str(&cells.join(","));
            out.push('\n');
        }
        out
    }
}

/// `0x6812BA3`: hex with uppercase digits, as the seed thread's table has it.
pub fn hex(n: u64) -> String {
    alloc::format!("0x{n:X}")
}

/// `109128611 (0x6812BA3)`.
pub fn dec_hex(n: u64) -> String {
    alloc::format!("{n} ({})", hex(n))
}

/// `4.0 MiB`, `512 KiB`, `123 B` (one decimal from GiB down to KiB).
pub fn bytes(n: u64) -> String {
    const UNITS: [(u64, &str); 3] = [(1 << 30, "GiB"), (1 << 20, "MiB"), (1 << 10, "KiB")];
    for (size, unit) in UNITS {
        if n >= size {
            let tenths = (n * 10 + size / 2) / size;
            return alloc::format!("{}.{} {unit}", tenths / 10, tenths % 10);
        }
    }
    alloc::format!("{n} B")
}

/// `5.03 %`: part/whole with two decimals, rounded half up.
pub fn percent(part: u64, whole: u64) -> String {
    if whole == 0 {
        return String::from("- %");
    }
    let hundredths = ((u128::from(part) * 10_000 + u128::from(whole) / 2) / u128::from(whole)) as u64;
    alloc::format!("{}.{:02} %", hundredths / 100, hundredths % 100)
}

/// `help` and `help <cmd>` text.
pub fn help(topic: Option<&str>) -> String {
    let mut out = String::new();
    match topic.and_then(|t| crate::COMMANDS.iter().find(|c| c.name == t)) {
        Some(spec) => {
            let _ = writeln!(out, "usage: {}", spec.usage);
            let _ = writeln!(out, "{}", spec.help);
        }
        None => {
            let w = crate::COMMANDS.iter().map(|c| c.name.len()).max().unwrap_or(0);
            for c in crate::COMMANDS {
                let _ = writeln!(out, "  {:<w$}  {}", c.name, c.summary);
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_aligns_text_left_numbers_right() {
        let mut t = Table::new(&["reason", "name", "times"]);
        t.row(&["23", "vmread", "109128611"]);
        t.row(&["10", "cpuid", "5"]);
        assert_eq!(t.render(), "reason  name        times\n    23  vmread  109128611\n    10  cpuid           5\n");
    }

    #[test]
    fn csv_quotes_when_needed() {
        let mut t = Table::new(&["a", "b"]);
        t.row(&["1,2", "say \"hi\""]);
        assert_eq!(t.render_csv(), "a,b\n\"1,2\",\"say \"\"hi\"\"\"\n");
    }

    #[test]
    fn numbers() {
        assert_eq!(hex(0x6812BA3), "0x6812BA3");
        assert_eq!(dec_hex(0x6812BA3), "109128611 (0x6812BA3)");
        assert_eq!(bytes(123), "123 B");
        assert_eq!(bytes(512 << 10), "512.0 KiB");
        assert_eq!(bytes(4 << 20), "4.0 MiB");
        assert_eq!(bytes(1536 << 20), "1.5 GiB");
        assert_eq!(percent(5, 100), "5.00 %");
        assert_eq!(percent(1, 3), "33.33 %");
        assert_eq!(percent(2, 3), "66.67 %");
        assert_eq!(percent(1, 0), "- %");
    }

    #[test]
    fn help_lists_and_explains() {
        let all = help(None);
        for c in crate::COMMANDS {
            assert!(all.contains(c.name));
        }
        assert!(help(Some("stats")).starts_with("usage: stats"));
    }
}
