//! The harness's error: a human-readable report, printed as is when a test fails.

use std::fmt;

/// A failed step, with everything needed to understand it from a CI log: what was expected,
/// the tail of the serial transcript, the tail of the emulator's own logs.
pub struct Error {
    msg: String,
}

/// Result alias used by the harness and the tests.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// An error with the given report.
    pub fn new(msg: impl Into<String>) -> Self {
        Self { msg: msg.into() }
    }

    /// Appends a section (e.g. a log tail) to the report.
    #[must_use]
    pub fn with_section(mut self, title: &str, body: &str) -> Self {
        if !self.msg.ends_with('\n') {
            self.msg.push('\n');
        }
        self.msg.push_str(&format!("----- {title} -----\n"));
        self.msg.push_str(body);
        if !body.ends_with('\n') {
            self.msg.push('\n');
        }
        self
    }

    /// The report text.
    pub fn message(&self) -> &str {
        &self.msg
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.msg)
    }
}

// A test returning `Err(e)` prints `e` with `{:?}`: print the report itself, newlines intact,
// not a struct dump.
impl fmt::Debug for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("\n")?;
        f.write_str(&self.msg)
    }
}

impl std::error::Error for Error {}

impl From<std::io::Error> for Error {
    fn from(e: std::io::Error) -> Self {
        Self::new(format!("I/O error: {e}"))
    }
}

/// The last `n` lines of `text` (all of it if shorter).
pub fn tail_lines(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    let start = lines.len().saturating_sub(n);
    let mut out = String::new();
    if start > 0 {
        out.push_str(&format!("[… {start} earlier lines]\n"));
    }
    for l in &lines[start..] {
        out.push_str(l);
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tail_keeps_last_lines_and_says_how_many_were_cut() {
        let t = "a\nb\nc\nd\n";
        assert_eq!(tail_lines(t, 2), "[… 2 earlier lines]\nc\nd\n");
        assert_eq!(tail_lines(t, 10), "a\nb\nc\nd\n");
        assert_eq!(tail_lines("", 3), "");
    }

    #[test]
    fn debug_prints_the_report_not_a_struct() {
        let e = Error::new("boom").with_section("log", "x\ny");
        assert_eq!(format!("{e:?}"), "\nboom\n----- log -----\nx\ny\n");
    }
}
